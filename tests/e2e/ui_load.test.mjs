// ui_load.test.mjs -- the page sending to a model that is not loaded, in a
// real headless Chromium against `smolbot serve --models-dir`: the POST
// returns at once, the new answer's bubble says "Loading MODEL… N s" (the
// stream's "loading" events) and the picker says "loading" while the
// model waits, then the answer streams in its place; a model whose file
// went bad after the start ends in the bubble with its name and reason.
//
// The wait is made real and cheap with a memory budget that fits one tiny
// model: while an API stream keeps the first model busy, the second cannot
// load (the registry waits for the busy one to go idle), so the page sits
// in the loading state as long as the test wants; leaving that stream lets
// the load go on; Stop during the wait ends it. Screenshots (light, dark, failed) go to
// tests/e2e/artifacts/ to be looked at. Skips without ../shared's models.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { serve, launch, cleanup, logs, open, newChat, setMaxTokens, ART, MODEL, why } from './ui_util.mjs';

const SHARED = dirname(MODEL);
const BUSY = 'smollm3-tiny-q4_k_m', WAITS = 'qwen3-tiny', DOOMED = 'doomed';
const skip = why || (!existsSync(join(SHARED, WAITS + '.gguf')) ? `${WAITS} not in ${SHARED}` : false);
if (skip) console.log(`# SKIP ui_load: ${skip}`);

let browser, base, dir;

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'smolbot-uiload-'));
  for (const f of [BUSY, WAITS]) symlinkSync(join(SHARED, f + '.gguf'), join(dir, f + '.gguf'));
  copyFileSync(join(SHARED, 'llama-tiny.gguf'), join(dir, DOOMED + '.gguf')); /* probes fine at the start */
  /* 40 MB: either tiny model fits, not both (36 + 17 MB files) */
  base = await serve(['--models-dir', dir, '--ctx', '2048', '--mem-budget', '40', '--keep-alive', '5m']);
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/* An API stream on model that runs until aborted; resolves once it generates. */
async function keepBusy(model = BUSY) {
  const ac = new AbortController();
  const r = await fetch(base + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal: ac.signal,
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1500, ignore_eos: true,
      temperature: 0, stream: true }),
  });
  assert.equal(r.status, 200);
  const it = r.body[Symbol.asyncIterator]();
  let text = '';
  while (!/"(reasoning_)?content":"/.test(text)) {
    const c = await it.next();
    assert.ok(!c.done, `the busy stream ended: ${text}`);
    text += new TextDecoder().decode(c.value);
  }
  return () => { ac.abort(); it.return().catch(() => {}); };
}

const pickerText = (page, name) => page.$eval(`#model-pick option[value="${name}"]`, (o) => o.textContent);

test('a model that must load: "Loading…" in the bubble, then the answer', { skip, timeout: 120000 }, async () => {
  const release = await keepBusy();
  const { ctx, page, errors } = await open(browser, base);
  await page.waitForSelector('#model-pick:not([hidden]) option', { state: 'attached' });
  assert.match(await pickerText(page, WAITS), /not loaded/);
  await page.selectOption('#model-pick', WAITS);
  await setMaxTokens(page, 12);
  const t0 = Date.now();
  await page.fill('#input', 'Hello there');
  await page.press('#input', 'Enter');
  const loading = page.locator('#messages .msg.assistant.streaming .loading');
  await loading.filter({ hasText: 'Loading' }).waitFor();
  assert.ok(Date.now() - t0 < 5000, `the answer's article came after ${Date.now() - t0} ms`);
  assert.match(await loading.textContent(), new RegExp(`^Loading ${WAITS}…`));
  /* repeated with the seconds while the model waits; the picker says so */
  await page.waitForFunction(() => /… [2-9] s$/.test(document.querySelector('.msg.assistant .loading').textContent));
  await page.waitForFunction((n) => /· loading$/.test(document.querySelector(`#model-pick option[value="${n}"]`).textContent), WAITS);
  assert.equal(await page.locator('#toast:not([hidden])').count(), 0, 'no toast: the bubble says it');
  await page.screenshot({ path: join(ART, 'ui-load-light.png') });
  await page.evaluate(() => { document.documentElement.dataset.theme = 'dark'; });
  await page.screenshot({ path: join(ART, 'ui-load-dark.png') });
  await page.evaluate(() => { document.documentElement.dataset.theme = 'light'; });

  release(); /* BUSY goes idle: it is unloaded, WAITS loads and answers */
  await page.waitForSelector('#messages .msg.assistant:not(.streaming) .msg-model', { timeout: 120000 });
  const art = page.locator('#messages .msg.assistant').last();
  assert.equal(await art.locator('.loading').textContent(), '');
  assert.ok((await art.locator('.md').textContent()).trim().length > 0, 'the answer streamed');
  assert.equal(await art.locator('.msg-model').textContent(), WAITS);
  assert.match(await art.locator('.stats').textContent(), /tokens/);
  await page.waitForFunction((n) => /· loaded$/.test(document.querySelector(`#model-pick option[value="${n}"]`).textContent), WAITS);
  await page.screenshot({ path: join(ART, 'ui-load-done.png') });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('a load that fails ends in the bubble with the model and the reason', { skip, timeout: 120000 }, async () => {
  /* the file changes after it was probed: the load itself fails */
  writeFileSync(join(dir, 'bad.tmp'), 'this is not a model file any more');
  renameSync(join(dir, 'bad.tmp'), join(dir, DOOMED + '.gguf'));
  const { ctx, page, errors } = await open(browser, base, { scheme: 'dark' });
  await newChat(page);
  await page.waitForSelector('#model-pick:not([hidden]) option', { state: 'attached' });
  await page.selectOption('#model-pick', DOOMED);
  await page.fill('#input', 'Hello');
  await page.press('#input', 'Enter');
  await page.waitForSelector('#messages .msg.assistant:not(.streaming) .err:not(:empty)', { timeout: 60000 });
  const art = page.locator('#messages .msg.assistant').last();
  assert.match(await art.locator('.err').textContent(), new RegExp(`${DOOMED}.*failed to load: .+`));
  assert.equal(await art.locator('.loading').textContent(), '');
  assert.match(await art.locator('.stats').textContent(), /error/);
  /* the picker says it cannot be served now; the badge is not fooled by the error event */
  await page.waitForFunction((n) => /· unsupported$/.test(document.querySelector(`#model-pick option[value="${n}"]`).textContent), DOOMED);
  assert.equal(await page.getAttribute('#status-badge', 'data-state'), 'ready');
  await page.screenshot({ path: join(ART, 'ui-load-failed.png') });
  /* an "error" event is also EventSource's onerror: htmx logs it (every failed answer does) */
  errors.splice(0, errors.length, ...errors.filter((e) => e !== '[object MessageEvent]'));
  /* the conversation is not left busy: the next message goes to a working model */
  await page.selectOption('#model-pick', WAITS);
  await setMaxTokens(page, 4);
  await page.fill('#input', 'Again');
  await page.press('#input', 'Enter');
  await page.waitForFunction(() => document.querySelectorAll('#messages .msg.assistant:not(.streaming) .msg-model').length === 2,
    null, { timeout: 60000 });
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('Stop during the wait ends the answer and the wait', { skip, timeout: 120000 }, async () => {
  const release = await keepBusy(WAITS); /* now BUSY is the one that cannot load */
  const { ctx, page, errors } = await open(browser, base);
  await newChat(page);
  await page.waitForSelector('#model-pick:not([hidden]) option', { state: 'attached' });
  await page.selectOption('#model-pick', BUSY);
  await page.fill('#input', 'Hello');
  await page.press('#input', 'Enter');
  await page.locator('#messages .msg.assistant.streaming .loading').filter({ hasText: `Loading ${BUSY}` }).waitFor();
  await page.click('#stop');
  await page.waitForSelector('#messages .msg.assistant:not(.streaming)', { timeout: 30000 });
  const art = page.locator('#messages .msg.assistant').last();
  assert.equal(await art.locator('.loading').textContent(), '');
  assert.match(await art.locator('.stats').textContent(), /stopped/);
  await page.waitForFunction((n) => /· not loaded$/.test(document.querySelector(`#model-pick option[value="${n}"]`).textContent), BUSY);
  release();
  /* stored as stopped: a reload shows it so */
  await page.reload();
  await page.waitForSelector('#messages .msg.assistant .stats');
  assert.match(await page.locator('#messages .msg.assistant').last().locator('.stats').textContent(), /stopped/);
  assert.deepEqual(errors, []);
  await ctx.close();
});

test('no sanitizer reports', { skip }, () => {
  for (const l of logs) assert.doesNotMatch(l.text, /AddressSanitizer|LeakSanitizer|runtime error:/, l.text.slice(-3000));
});
