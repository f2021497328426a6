// ui_versions.test.mjs -- answer and question versions on the chat page:
// regenerate and edit keep the earlier versions as siblings, "< 2/3 >"
// switches between them, the conversation goes on from the branch shown,
// and export has the tree or the shown branch. Headless Chromium against
// `smolbot serve` with the tiny random-weight model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { why, serve, launch, cleanup, open, newChat, setMaxTokens, send, done, command, lastAnswer, noSanitizerReports, MODEL } from './ui_util.mjs';

let browser, base;

before(async () => {
  if (why) return;
  base = await serve(['-m', MODEL]);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  cleanup();
});

const ids = (page, sel) => page.locator(sel).evaluateAll((els) => els.map((e) => +e.dataset.msg));

async function exportJson(page, branch) {
  return page.evaluate(async (b) => {
    const conv = document.getElementById('messages').dataset.conv;
    return (await fetch(`/ui/c/${conv}/export?fmt=json${b ? '&branch=1' : ''}`)).json();
  }, branch);
}

test('regenerate keeps the old answer; < 1/2 > switches; the chat goes on from the branch shown', { skip: why || false }, async () => {
  const { ctx, page, errors } = await open(browser, base);
  await newChat(page);
  await setMaxTokens(page, 4);
  await send(page, 'q1');
  await done(page);
  const [a1] = await ids(page, '#messages .msg.assistant');
  await command(page, '/regenerate');
  await page.waitForSelector('#messages .msg.assistant.streaming');
  await done(page);
  const [a2] = await ids(page, '#messages .msg.assistant');
  assert.notEqual(a1, a2);
  assert.equal(await lastAnswer(page).locator('.ver-pos').textContent(), '2/2');
  assert.ok(await lastAnswer(page).locator('[data-switch="1"]').isDisabled());
  // back to the first answer
  await lastAnswer(page).locator('[data-switch="-1"]').click();
  await page.waitForSelector(`#m-${a1} .ver-pos:has-text("1/2")`);
  assert.deepEqual(await ids(page, '#messages .msg.assistant'), [a1]);
  // the conversation goes on from there, over a reload too
  await send(page, 'q2');
  await done(page);
  await page.reload();
  await page.waitForSelector('#messages .msg.user:has-text("q2")');
  const branch = await ids(page, '#messages .msg');
  assert.equal(branch.length, 4);
  assert.equal(branch[1], a1);
  // the other version: its own (shorter) branch
  await page.locator(`#m-${a1} [data-switch="1"]`).click();
  await page.waitForSelector(`#m-${a2} .ver-pos:has-text("2/2")`);
  assert.equal(await page.locator('#messages .msg').count(), 2);
  // and back: the newest branch below the first answer, q2 included
  await page.locator(`#m-${a2} [data-switch="-1"]`).click();
  await page.waitForSelector('#messages .msg.user:has-text("q2")');
  // export: every version, or the branch shown
  const all = await exportJson(page, false), shown = await exportJson(page, true);
  assert.equal(all.messages.length, 5);
  assert.deepEqual(shown.messages.map((m) => m.id), branch);
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('editing a question keeps the old one as a version', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await setMaxTokens(page, 3);
  await send(page, 'original question');
  await done(page);
  const user = page.locator('#messages .msg.user').last();
  await user.hover();
  await user.locator('[data-action="edit"]').click();
  await page.fill('.msg.user.editing .edit-box', 'edited question');
  await page.click('.msg.user.editing [data-edit="save"]');
  await page.waitForSelector('#messages .msg.user:has-text("edited question")');
  await done(page);
  assert.equal(await page.locator('#messages .msg.user .ver-pos').textContent(), '2/2');
  await page.locator('#messages .msg.user [data-switch="-1"]').click();
  await page.waitForSelector('#messages .msg.user:has-text("original question") .ver-pos:has-text("1/2")');
  assert.equal(await page.locator('#messages .msg.assistant').count(), 1, 'its own answer came back with it');
  await ctx.close();
});

test('the servers reported no sanitizer errors', { skip: why || false }, () => noSanitizerReports());
