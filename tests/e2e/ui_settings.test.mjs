// ui_settings.test.mjs -- every sampler in Settings reaches the model, per
// conversation, with defaults for new chats that /reset goes back to.
// Against `smolbot serve` with the tiny random-weight model in headless
// Chromium: a fixed seed gives the same answer twice, a repeat penalty
// changes a greedy answer, each conversation shows its own values.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { why, serve, launch, cleanup, open, newChat, command, lastAnswer, done, noSanitizerReports, MODEL } from './ui_util.mjs';

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

const VALUES = { '#max-tokens': '12', '#top-k': '0', '#repeat-penalty': '1', '#presence-penalty': '0', '#frequency-penalty': '0', '#seed': '' };

/* Open Settings, set fields (id -> value; ranges through their input event), close. */
async function settings(page, vals) {
  await page.click('[data-action="settings"]');
  for (const [sel, v] of Object.entries(vals)) {
    if (await page.getAttribute(sel, 'type') === 'range') {
      await page.$eval(sel, (e, x) => { e.value = x; e.dispatchEvent(new Event('input', { bubbles: true })); }, v);
    } else await page.fill(sel, v);
  }
  await page.click('#settings .dialog-foot button');
}

async function answer(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  await page.waitForSelector('#messages .msg.assistant.streaming');
  await done(page);
  return (await lastAnswer(page).locator('.md').textContent()) + (await lastAnswer(page).locator('.think-body').textContent());
}

async function readSettings(page) {
  await page.click('[data-action="settings"]');
  const v = {};
  for (const s of ['#temp-range', '#top-p', '#top-k', '#min-p', '#repeat-penalty', '#presence-penalty', '#frequency-penalty', '#seed', '#max-tokens', '#system-prompt'])
    v[s] = await page.inputValue(s);
  await page.click('#settings .dialog-foot button');
  return v;
}

test('a seed repeats an answer; each penalty reaches the sampler', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  const outs = [];
  for (const seed of ['7', '7', '8']) {
    await newChat(page);
    await settings(page, { ...VALUES, '#temp-range': '1.2', '#seed': seed });
    outs.push(await answer(page, 'Tell me anything.'));
  }
  assert.equal(outs[0], outs[1], 'the same seed, the same answer');
  assert.notEqual(outs[0], outs[2], 'another seed, another answer');
  // one seed, without penalties and with each one: each penalty moves the
  // distribution, so the same draws pick other tokens (greedy answers
  // change only where a +2 on the seen tokens overtakes the random model's
  // top token, which is luck). The penalties are negative: the random
  // model never repeats itself, so seen tokens must win.
  const seeded = [];
  for (const p of [{}, { '#repeat-penalty': '0.5' }, { '#presence-penalty': '-2' }, { '#frequency-penalty': '-2' }]) {
    await newChat(page);
    await settings(page, { ...VALUES, '#temp-range': '1', '#seed': '5', '#max-tokens': '24', ...p });
    seeded.push(await answer(page, 'Repeat after me: la la la la la la la la'));
  }
  for (let i = 1; i < seeded.length; i++) assert.notEqual(seeded[i], seeded[0], 'penalty ' + i + ' changed the seeded answer');
  await ctx.close();
});

test('settings belong to the conversation; new chats take the defaults; /reset restores them', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  const A = { '#temp-range': '1.1', '#top-p': '0.8', '#top-k': '5', '#min-p': '0.05', '#repeat-penalty': '1.3',
    '#presence-penalty': '0.5', '#frequency-penalty': '-0.5', '#seed': '42', '#max-tokens': '6', '#system-prompt': 'Be terse.' };
  await settings(page, A);
  await answer(page, 'first chat');
  const a = await page.getAttribute('#messages', 'data-conv');
  // defaults for new chats
  await newChat(page);
  await settings(page, { '#temp-range': '0.3', '#top-k': '7', '#repeat-penalty': '1.1', '#max-tokens': '4' });
  await page.click('[data-action="settings"]');
  await page.click('#save-defaults');
  await page.click('#settings .dialog-foot button');
  await answer(page, 'second chat');
  await newChat(page);
  let v = await readSettings(page);
  assert.equal(v['#temp-range'], '0.3');
  assert.equal(v['#top-k'], '7');
  assert.equal(v['#repeat-penalty'], '1.1');
  // back to the first: its own values, over a reload too
  await page.click(`#conv-${a} .conv-open`);
  await page.waitForSelector(`#messages[data-conv="${a}"]`);
  await page.reload();
  await page.waitForSelector(`#messages[data-conv="${a}"] .msg.user`);
  v = await readSettings(page);
  for (const [k, want] of Object.entries(A)) assert.equal(v[k], want, k);
  // /reset: the defaults (the system prompt stays)
  await command(page, '/reset');
  await page.waitForFunction(() => /back to the defaults/.test(document.getElementById('toast').textContent));
  v = await readSettings(page);
  assert.equal(v['#temp-range'], '0.3');
  assert.equal(v['#top-k'], '7');
  assert.equal(v['#repeat-penalty'], '1.1');
  assert.equal(v['#seed'], '');
  assert.equal(v['#max-tokens'], '4');
  assert.equal(v['#system-prompt'], 'Be terse.');
  await page.reload();
  await page.waitForSelector(`#messages[data-conv="${a}"] .msg.user`);
  v = await readSettings(page);
  assert.equal(v['#temp-range'], '0.3', 'the server has the reset values');
  assert.equal(v['#max-tokens'], '4');
  await ctx.close();
});

test('the servers reported no sanitizer errors', { skip: why || false }, () => noSanitizerReports());
