// ui_keys.test.mjs -- the chat page's keys, in headless Chromium against
// `smolbot serve` with the tiny random-weight model: Esc stops an answer,
// Ctrl+K searches, Ctrl+Shift+O starts a chat, Up edits the last message,
// ? lists the keys, and the slash palette opens only at the start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { why, serve, launch, cleanup, open, newChat, setMaxTokens, send, done, noSanitizerReports, MODEL, MOBILE } from './ui_util.mjs';

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

test('Esc stops a running answer', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await setMaxTokens(page, 100000);
  await send(page, 'A long one.');
  await page.waitForTimeout(300);
  await page.keyboard.press('Escape');
  await done(page, 10000);
  assert.match(await page.locator('#messages .msg.assistant .stats').last().textContent(), /stopped/);
  await ctx.close();
});

test('Ctrl+K searches, Ctrl+Shift+O starts a chat, ? lists the keys', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await page.focus('#input');
  await page.keyboard.press('Control+k');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'conv-search');
  await page.keyboard.press('Meta+k'); // macOS
  assert.equal(await page.evaluate(() => document.activeElement.id), 'conv-search');
  const old = await page.getAttribute('#messages', 'data-conv');
  await page.keyboard.press('Control+Shift+O');
  await page.waitForFunction((o) => document.getElementById('messages').dataset.conv !== o, old);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'input');
  // "?" in the text box is a character; outside it, the list of keys
  await page.keyboard.type('?');
  assert.equal(await page.inputValue('#input'), '?');
  assert.ok(await page.isHidden('#help'));
  await page.fill('#input', '');
  await page.click('#chat');
  await page.keyboard.press('?');
  await page.waitForSelector('#help[open]');
  const keys = await page.textContent('#help-list');
  for (const k of ['Esc', 'Ctrl/⌘+K', 'Ctrl/⌘+Shift+O', '↑ in an empty box', '/help']) assert.ok(keys.includes(k), k);
  await page.keyboard.press('Escape');
  await ctx.close();
  // on a phone Ctrl+K opens the drawer to reach the search
  const m = await open(browser, base, { viewport: MOBILE });
  await m.page.keyboard.press('Control+k');
  assert.ok(await m.page.evaluate(() => document.body.classList.contains('drawer-open')));
  assert.equal(await m.page.evaluate(() => document.activeElement.id), 'conv-search');
  await m.ctx.close();
});

test('Up in an empty box edits the last message', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await newChat(page);
  await setMaxTokens(page, 3);
  await send(page, 'first words');
  await done(page);
  await page.focus('#input');
  await page.keyboard.type('x');
  await page.keyboard.press('ArrowUp'); // not empty: the caret moves, nothing else
  assert.equal(await page.locator('.msg.editing').count(), 0);
  await page.fill('#input', '');
  await page.keyboard.press('ArrowUp');
  await page.waitForSelector('.msg.user.editing .edit-box');
  assert.equal(await page.inputValue('.msg.user.editing .edit-box'), 'first words');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'edit-box');
  await page.keyboard.press('Escape');
  assert.equal(await page.locator('.msg.editing').count(), 0);
  await ctx.close();
});

test('the palette opens only when / starts the message', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  await page.focus('#input');
  await page.keyboard.type('see /etc/hosts and a/b');
  assert.ok(await page.isHidden('#palette'));
  await page.fill('#input', '');
  await page.keyboard.type('hello /he');
  assert.ok(await page.isHidden('#palette'));
  await page.fill('#input', '');
  await page.keyboard.type('/he');
  await page.waitForSelector('#palette:not([hidden])');
  // a typed line that is not a command at the start is sent as text
  await page.keyboard.press('Escape');
  await ctx.close();
});

test('the servers reported no sanitizer errors', { skip: why || false }, () => noSanitizerReports());
