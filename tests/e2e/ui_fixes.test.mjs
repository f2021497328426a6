// ui_fixes.test.mjs -- the chat page's behaviour at its edges, in a real
// headless Chromium against `smolbot serve` with the tiny random-weight
// model: /help in view, chatting without a database, /reset and /clear
// doing what they say, the stats line after a reload, Enter while an answer
// streams, /temp's argument, the header on a phone, an import that names
// no current branch.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  why, serve, launch, cleanup, open, newChat, setMaxTokens, send, command, lastAnswer, done, importConv,
  noSanitizerReports, MODEL, ART, MOBILE,
} from './ui_util.mjs';

let browser, base, baseNoDb;

before(async () => {
  if (why) return;
  [base, baseNoDb] = await Promise.all([serve(['-m', MODEL]), serve(['-m', MODEL, '--no-db'])]);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  cleanup();
});

const toastText = (page) => page.textContent('#toast');
const waitToast = (page, re) => page.waitForFunction((s) => new RegExp(s).test(document.getElementById('toast').textContent) &&
  !document.getElementById('toast').hidden, re.source);

test('/help opens at its top, title and first commands in view', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await command(page, '/help');
  await page.waitForSelector('#help[open]');
  const vh = 800;
  const title = await page.locator('#help-title').boundingBox();
  assert.ok(title.y >= 0 && title.y + title.height <= vh, 'title in view: ' + JSON.stringify(title));
  const first = await page.locator('#help-list dt').first().boundingBox();
  assert.ok(first.y >= 0 && first.y + first.height <= vh, 'first command in view: ' + JSON.stringify(first));
  assert.equal(await page.locator('#help-list dt').first().textContent(), '/new');
  // the keys are listed too
  assert.match(await page.textContent('#help-list'), /Ctrl\/⌘\+K/);
  const close = await page.locator('#help .dialog-foot button').boundingBox();
  assert.ok(close.y + close.height <= vh, 'Close in view');
  await page.screenshot({ path: join(ART, 'help-1280.png') });
  await ctx.close();
});

test('without a database the page chats in memory and says so', { skip: why || false }, async () => {
  const { ctx, page, errors } = await open(browser, baseNoDb);
  await page.waitForSelector('#conv-list .history-off');
  assert.match(await page.textContent('#conv-list .history-off'), /memory.*lost when the server stops/);
  await setMaxTokens(page, 8);
  await send(page, 'Hello without history');
  await done(page);
  assert.match(await lastAnswer(page).locator('.stats').textContent(), /8 tokens/);
  await page.waitForSelector('#conv-list .conv .conv-open:has-text("Hello without history")');
  // the quote ends where the passage ends: no stray bit of its first line
  await command(page, '/quote');
  await page.waitForSelector('#messages .msg.assistant.streaming');
  await done(page, 30000);
  const a = lastAnswer(page);
  assert.match(await a.locator('.md').textContent(), /full of grace and truth\.\s*$/);
  assert.equal((await a.locator('.tail').textContent()).trim(), '');
  assert.doesNotMatch(await a.textContent(), /\*\*In/);
  // a reload brings the chat back from memory
  await page.reload();
  await page.waitForSelector('#messages .msg.user:has-text("Hello without history")');
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('/quote before any conversation loaded leaves no stray text', { skip: why || false }, async () => {
  // the #messages placeholder (hx-swap="outerHTML") is still there: the
  // quote's own swaps must not inherit it
  const { ctx, page } = await open(browser, base);
  await page.evaluate(() => {
    const m = document.getElementById('messages');
    const p = document.createElement('div');
    p.id = 'messages'; p.className = 'messages'; p.setAttribute('hx-swap', 'outerHTML'); p.dataset.conv = m.dataset.conv;
    m.replaceWith(p);
  });
  await command(page, '/quote');
  await page.waitForSelector('#messages .msg.assistant.streaming');
  await done(page, 30000);
  const text = await lastAnswer(page).textContent();
  assert.match(text, /full of grace and truth\./);
  assert.doesNotMatch(text, /\*\*In/);
  await ctx.close();
});

test('/reset brings the temperature back to the default, for real', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await command(page, '/temp 1.5');
  await setMaxTokens(page, 4);
  await send(page, 'hot');
  await done(page);
  await page.reload();
  await page.waitForSelector('#messages .msg.user');
  assert.equal(await page.inputValue('#temperature'), '1.5', 'the conversation keeps its temperature');
  await command(page, '/reset');
  await waitToast(page, /back to the defaults/);
  assert.equal(await page.inputValue('#temperature'), '0.6');
  await page.reload();
  await page.waitForSelector('#messages .msg.user');
  assert.equal(await page.inputValue('#temperature'), '0.6', 'the server reset it too');
  await ctx.close();
});

test('/clear offers undo; without undo the old chat goes', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await setMaxTokens(page, 4);
  await send(page, 'keep me');
  await done(page);
  const old = await page.getAttribute('#messages', 'data-conv');
  await command(page, '/clear');
  await page.waitForFunction((o) => document.getElementById('messages').dataset.conv !== o, old);
  assert.equal(await page.locator('#messages .msg').count(), 0);
  await page.waitForSelector('#toast:not([hidden]) .toast-action');
  assert.match(await toastText(page), /cleared/i);
  await page.click('#toast .toast-action');
  await page.waitForSelector(`#messages[data-conv="${old}"] .msg.user:has-text("keep me")`);
  // again, and let the undo time pass: the old conversation is deleted
  await command(page, '/clear');
  await page.waitForFunction((o) => document.getElementById('messages').dataset.conv !== o, old);
  await page.waitForSelector('#toast:not([hidden]) .toast-action');
  await page.waitForSelector('#toast', { state: 'hidden', timeout: 15000 });
  await page.waitForFunction(async (o) => (await fetch('/ui/c/' + o)).status === 404, old, { timeout: 5000, polling: 200 });
  await ctx.close();
});

test('the stats line keeps TTFT and the length limit over a reload', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await setMaxTokens(page, 6);
  await send(page, 'Say a lot.');
  await done(page);
  const live = await lastAnswer(page).locator('.stats').textContent();
  assert.match(live, /TTFT \d+ ms/);
  assert.match(live, /length limit/);
  await page.reload();
  await page.waitForSelector('#messages .msg.assistant');
  const again = await lastAnswer(page).locator('.stats').textContent();
  assert.match(again, /TTFT \d+ ms/);
  assert.match(again, /6 tokens · length limit/);
  await ctx.close();
});

test('Enter while an answer streams queues the message', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await setMaxTokens(page, 100000);
  await send(page, 'A long answer, please.');
  await page.fill('#input', 'and then this');
  await page.press('#input', 'Enter');
  await waitToast(page, /Queued/);
  assert.equal(await page.inputValue('#input'), 'and then this');
  await page.click('#stop');
  await page.waitForSelector('#messages .msg.user:has-text("and then this")', { timeout: 15000 });
  await page.click('#stop').catch(() => {});
  await ctx.close();
});

test('/temp takes one number from 0 to 2, nothing after it', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await command(page, '/temp 0.4 please');
  await waitToast(page, /one number from 0 to 2/);
  assert.equal(await page.inputValue('#temperature'), '0.6');
  await command(page, '/temp 3');
  await waitToast(page, /one number from 0 to 2/);
  await command(page, '/temp 0.4');
  await waitToast(page, /set to 0.4/);
  assert.equal(await page.inputValue('#temperature'), '0.4');
  await ctx.close();
});

test('on a phone the model name and the Thinking label show in full', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base, { viewport: MOBILE, touch: true });
  const name = page.locator('#model-name');
  assert.match(await name.textContent(), /smollm3-tiny/);
  const cut = await name.evaluate((e) => e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1);
  assert.equal(cut, false, 'the model name is not cut');
  assert.ok(await page.isVisible('.top .switch-label'), 'the Thinking switch has a visible label');
  const w = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(w <= 390, 'no horizontal scroll (' + w + ')');
  await page.screenshot({ path: join(ART, 'mobile-header.png') });
  // Settings: "Think before answering" is a switch like the header's
  await page.click('[data-action="settings"]');
  const knob = page.locator('#settings .switch .knob');
  assert.ok(await knob.isVisible());
  assert.equal(await page.locator('#thinking-2').evaluate((e) => getComputedStyle(e).opacity), '0');
  const before = await page.isChecked('#thinking-2');
  await knob.click();
  assert.equal(await page.isChecked('#thinking-2'), !before);
  assert.equal(await page.isChecked('#thinking'), !before);
  await ctx.close();
});

test('an import without current_leaf opens its newest branch', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await importConv(page, {
    format: 'smolbot-conversation', version: 1,
    conversation: { title: 'From another tool' },
    messages: [
      { id: 1, parent: null, role: 'user', content: 'first question' },
      { id: 2, parent: 1, role: 'assistant', content: 'old answer' },
      { id: 3, parent: 1, role: 'assistant', content: 'newer answer' },
    ],
  });
  await page.waitForSelector('#messages .msg.user:has-text("first question")');
  assert.equal(await lastAnswer(page).locator('.md').textContent(), 'newer answer\n');
  await ctx.close();
});

test('the servers reported no sanitizer errors', { skip: why || false }, () => noSanitizerReports());
