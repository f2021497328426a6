// ui_import.test.mjs -- importing conversations from the page: smolbot's
// JSON export, ChatGPT's conversations.json and Open WebUI's chat export
// (mapped to smolbot's shape by the server), and files it cannot read,
// which get the reason and change nothing. Headless Chromium against
// `smolbot serve` with the tiny random-weight model.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { why, serve, launch, cleanup, open, noSanitizerReports, MODEL } from './ui_util.mjs';

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

async function importFile(page, name, data) {
  await page.setInputFiles('#import-file', { name, mimeType: 'application/json', buffer: Buffer.from(typeof data === 'string' ? data : JSON.stringify(data)) });
}
const convCount = (page) => page.evaluate(async () => (await (await fetch('/ui/conversations')).text()).match(/class="conv[ "]/g)?.length || 0);
const branchText = (page) => page.locator('#messages .msg .text, #messages .msg .md').allTextContents().then((a) => a.map((s) => s.trim()));
const toastHas = (page, re) => page.waitForFunction((s) => !document.getElementById('toast').hidden &&
  new RegExp(s).test(document.getElementById('toast').textContent), re.source);

const gptNode = (id, parent, role, text, t, children = []) => ({
  id, parent, children,
  message: role ? { id, author: { role }, create_time: t, content: { content_type: 'text', parts: [text] } } : null,
});

const CHATGPT = [
  {
    title: 'Paris trip', create_time: 1700000000, current_node: 'a2',
    mapping: {
      root: gptNode('root', null, null, '', 0, ['sys']),
      sys: gptNode('sys', 'root', 'system', '', 1, ['u1']),
      u1: gptNode('u1', 'sys', 'user', 'Plan a day in Paris', 2, ['a1', 'a2']),
      a1: gptNode('a1', 'u1', 'assistant', 'Louvre first.', 3),
      a2: gptNode('a2', 'u1', 'assistant', 'Start at the Eiffel Tower.', 4),
    },
  },
  {
    title: 'Second one', current_node: 'y',
    mapping: { x: gptNode('x', null, 'user', 'hello', 1, ['y']), y: gptNode('y', 'x', 'assistant', 'hi there', 2) },
  },
];

const OPENWEBUI = [{
  id: 'c1', title: 'From Open WebUI',
  chat: {
    title: 'From Open WebUI',
    history: {
      currentId: 'm2',
      messages: {
        m1: { id: 'm1', parentId: null, childrenIds: ['m2'], role: 'user', content: 'What is 2+2?', timestamp: 1 },
        m2: { id: 'm2', parentId: 'm1', childrenIds: [], role: 'assistant', content: 'It is 4.', timestamp: 2 },
      },
    },
  },
}];

test('the Import button reads smolbot, ChatGPT and Open WebUI exports', { skip: why || false }, async () => {
  const { ctx, page, errors } = await open(browser, base);
  assert.ok(await page.isVisible('#sidebar [data-action="import"]'));
  await importFile(page, 'mine.json', {
    format: 'smolbot-conversation', version: 1, conversation: { title: 'Mine', current_leaf: 2 },
    messages: [{ id: 1, parent: null, role: 'user', content: 'q' }, { id: 2, parent: 1, role: 'assistant', content: 'a' }],
  });
  await toastHas(page, /Imported Mine: 2 messages/);
  await page.waitForSelector('#messages[data-title="Mine"] .msg.assistant');
  await page.waitForSelector('#conv-list .conv-open:has-text("Mine")');

  await importFile(page, 'conversations.json', CHATGPT);
  await toastHas(page, /Imported Paris trip: 3 messages \(and 1 more conversations\)/);
  await page.waitForSelector('#messages[data-title="Paris trip"] .msg.assistant');
  assert.deepEqual(await branchText(page), ['Plan a day in Paris', 'Start at the Eiffel Tower.']);
  assert.equal(await page.locator('#messages .msg.assistant .ver-pos').textContent(), '2/2', 'the other answer is a version');
  await page.waitForSelector('#conv-list .conv-open:has-text("Second one")');

  await importFile(page, 'openwebui.json', OPENWEBUI);
  await page.waitForSelector('#messages[data-title="From Open WebUI"] .msg.assistant');
  assert.deepEqual(await branchText(page), ['What is 2+2?', 'It is 4.']);
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('a file it cannot read gets the reason and changes nothing', { skip: why || false }, async () => {
  const { ctx, page } = await open(browser, base);
  const before = await convCount(page);
  await importFile(page, 'notjson.json', '{"format": oops');
  await toastHas(page, /Import failed: not a JSON conversation export/);
  await importFile(page, 'other.json', { hello: 'world' });
  await toastHas(page, /Import failed: the file is not a conversation export smolbot reads/);
  // the second of two is broken: the first is not kept either
  const broken = [CHATGPT[1], { title: 'empty', mapping: { x: gptNode('x', null, 'system', '', 1) } }];
  await importFile(page, 'two.json', broken);
  await toastHas(page, /Import failed: .*no messages with text/);
  await importFile(page, 'bad-smolbot.json', { format: 'smolbot-conversation', version: 1, conversation: { title: 't' },
    messages: [{ id: 1, parent: 7, role: 'user', content: 'orphan' }] });
  await toastHas(page, /Import failed: /);
  assert.equal(await convCount(page), before);
  await ctx.close();
});

test('the servers reported no sanitizer errors', { skip: why || false }, () => noSanitizerReports());
