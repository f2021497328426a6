// ui_util.mjs -- what the browser suites of the chat page share: start
// `smolbot serve` (sanitized build, tiny model) on a free port, a headless
// Chromium (Debian's, driven by playwright-core), and a few page helpers.
// Each suite skips, with the reason, when one of these is missing.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const root = join(here, '..', '..');
export const BIN = join(root, 'build', 'san', 'smolbot');
export const MODEL = join(root, '..', 'shared', 'models', 'smollm3-tiny-q4_k_m.gguf');
export const ART = join(here, 'artifacts');
const CHROME = '/usr/bin/chromium';

let chromium = null;
try { ({ chromium } = await import('playwright-core')); } catch { /* skipped below */ }
export const why = !chromium ? 'playwright-core not installed (cd tests/e2e && npm ci)'
  : !existsSync(CHROME) ? 'no /usr/bin/chromium (apt-get install chromium)'
  : !existsSync(BIN) ? 'build/san/smolbot not built'
  : !existsSync(MODEL) ? 'tiny model not in ../shared/models' : null;

const procs = [];
export const logs = []; /* stderr of each server, checked for sanitizer reports at the end */
const dirs = [];

/* Start `smolbot serve ARGS` on a free port with its own database (unless
 * args has --no-db); resolves with its URL. noModel: started where the
 * lookup rule finds nothing (no-model mode). */
export function serve(args, noModel = false) {
  const dir = mkdtempSync(join(tmpdir(), 'smolbot-ui-'));
  dirs.push(dir);
  const env = { ...process.env, ASAN_OPTIONS: 'detect_leaks=0' };
  if (noModel) { delete env.MODEL_PATH; env.SMOLBOT_MODELS = dir; }
  const db = args.includes('--no-db') ? [] : ['--db', join(dir, 'db.sqlite')];
  const p = spawn(BIN, ['serve', ...args, '--port', '0', ...db], {
    cwd: noModel ? dir : root, env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.push(p);
  let out = '', err = '';
  const log = { text: '' };
  logs.push(log);
  p.stderr.on('data', (d) => { err += d; log.text += d; });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('serve did not start:\n' + out + err)), 60000);
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[^\s]+)/.exec(out);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    p.on('exit', (c) => { clearTimeout(t); reject(new Error('serve exited ' + c + ':\n' + out + err)); });
  });
}

export async function launch() {
  mkdirSync(ART, { recursive: true });
  return chromium.launch({
    executablePath: CHROME, headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
}

export function cleanup() {
  for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

export const DESKTOP = { width: 1280, height: 800 };
export const MOBILE = { width: 390, height: 844 };

/* A page on base, loaded, with its conversation shown. */
export async function open(browser, base, opts = {}) {
  const ctx = await browser.newContext({ viewport: opts.viewport || DESKTOP, colorScheme: opts.scheme || 'light',
    reducedMotion: 'reduce', hasTouch: !!opts.touch, isMobile: !!opts.touch,
    bypassCSP: !!opts.bypassCSP /* axe-core goes in as an inline script */ });
  const page = await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource|EventSource/.test(m.text())) errors.push(m.text()); });
  await page.goto(base + '/');
  await page.waitForSelector('#messages[data-conv]', { state: 'attached' });
  await page.waitForFunction(() => document.getElementById('status-badge').dataset.state !== 'loading');
  return { ctx, page, errors };
}

export async function newChat(page) {
  const old = await page.getAttribute('#messages', 'data-conv');
  await page.click('#new-chat');
  await page.waitForFunction((o) => document.getElementById('messages').dataset.conv !== o, old);
}

export async function setMaxTokens(page, n) {
  await page.click('[data-action="settings"]');
  await page.fill('#max-tokens', String(n));
  await page.click('#settings .dialog-foot button');
}

/* Send a message and wait for its answer to be shown: streaming, or already
 * done (a short answer on a loaded host can end between two of Playwright's
 * polls, so waiting for the streaming class alone may wait forever). */
export async function send(page, text) {
  const before = await page.locator('#messages .msg.assistant').count();
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  await page.waitForFunction((n) => document.querySelectorAll('#messages .msg.assistant').length > n, before);
}

/* Type a whole command line and run it with Enter (the palette closed first). */
export async function command(page, line) {
  await page.fill('#input', line);
  await page.press('#input', 'Enter');
}

export const lastAnswer = (page) => page.locator('#messages .msg.assistant').last();
/* Every answer shown has finished. */
export const done = (page, timeout = 60000) => page.waitForFunction(() => document.querySelector('#messages .msg.assistant') &&
  !document.querySelector('#messages .msg.streaming'), null, { timeout });

/* POST an export to the real /ui/import route; {status, text}. */
export async function postImport(page, body) {
  return page.evaluate(async (b) => {
    const r = await fetch('/ui/import', { method: 'POST', headers: { 'HX-Request': 'true', 'Content-Type': 'application/json' }, body: b });
    return { status: r.status, text: await r.text() };
  }, typeof body === 'string' ? body : JSON.stringify(body));
}

/* Import and open a conversation; its id. */
export async function importConv(page, exp) {
  const res = await postImport(page, exp);
  assert.equal(res.status, 200, res.text);
  const id = /data-conv="([0-9a-f]{16})"/.exec(res.text)[1];
  await page.evaluate((i) => localStorage.setItem('smolbot.conv', i), id);
  await page.reload();
  await page.waitForSelector(`#messages[data-conv="${id}"]`, { state: 'attached' });
  await page.waitForSelector('#conv-list .conv');
  return id;
}

export function noSanitizerReports() {
  for (const l of logs) assert.doesNotMatch(l.text, /AddressSanitizer|LeakSanitizer|runtime error:/, l.text.slice(-3000));
}
