// load.mjs -- load, soak and fault runs against `smolbot serve`.
// Loopback only; every run is bounded in count and in time.
//
//   node tests/load/load.mjs [load] [soak] [faults] [valgrind] [--streams N] [--soak N] [--bin PATH] [--json FILE]
//
//   load    N (50) concurrent streaming chats (max_tokens 8): each one must
//           complete ([DONE]) or be refused with 429; none may hang (60 s
//           cap each). The server's VmRSS and fd count are taken before
//           after two warm-up rounds of the same load and 3 s after.
//   soak    N (2000) sequential short chats (max_tokens 2, alternating
//           stream and non-stream): RSS and fds before/after.
//   faults  SIGKILL mid-stream, restart on the same --db: the store passes
//           PRAGMA integrity_check and the answer is marked interrupted;
//           disk full (RLIMIT_FSIZE on the server, via `prlimit`): the chat
//           still answers, the failure is reported (logged), nothing stored
//           before is lost.
//   valgrind  a short chat session under memcheck: no errors, no leaks.
// The release binary (build/smolbot) is the default. Prints a table and,
// with --json, writes the figures for tests/reliability.sh. Exit 1 when a
// check fails. tests/e2e/load.test.mjs imports runLoad for the short version.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODEL, REL_BIN, startServer, stopAll, procStats, sleep } from '../e2e/serve_util.mjs';

const pct = (xs, p) => { if (!xs.length) return NaN; const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };

// One chat request; resolves { status, ms, done, text } (never rejects: errors become status 0).
export async function chat(url, { stream = true, max_tokens = 8, content = 'Tell me a story.', timeoutMs = 60000, headers = {} } = {}) {
  const t0 = performance.now();
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const r = await fetch(url + '/v1/chat/completions', {
      method: 'POST', signal: ac.signal,
      headers: { 'Content-Type': 'application/json', ...headers },
      body: JSON.stringify({ messages: [{ role: 'user', content }], max_tokens, stream, chat_template_kwargs: { enable_thinking: false } }),
    });
    const text = await r.text();
    const done = r.status === 200 && (!stream || text.includes('data: [DONE]'));
    return { status: r.status, ms: performance.now() - t0, done, text, hung: false };
  } catch (e) {
    return { status: 0, ms: performance.now() - t0, done: false, text: String(e), hung: ac.signal.aborted };
  } finally {
    clearTimeout(timer);
  }
}

async function settle(pid, ms) { await sleep(ms); return procStats(pid); }

// n concurrent streaming chats. Returns the row of the table.
// The baseline is taken after two warm-up rounds of the same load: the first
// rounds grow what is kept by design (connection threads' malloc arenas, the
// engine's idle KV caches, kept for prefix reuse up to --kv-budget: the load
// server gets 128 MiB so that plateau comes early). A leak shows as growth
// from the third round on, which is what the bound checks; the
// cold figure is reported beside it.
export async function runLoad(srv, n, { max_tokens = 8, warm = 2 } = {}) {
  await chat(srv.url, { max_tokens: 2 });
  const cold = await settle(srv.pid, 300);
  const round = () => Promise.all(Array.from({ length: n }, (_, i) => chat(srv.url, { max_tokens, content: `Request ${i}: say something.` })));
  for (let i = 0; i < warm; i++) await round();
  const before = await settle(srv.pid, 1000);
  const t0 = Date.now();
  const res = await round();
  const wall = Date.now() - t0;
  const after = await settle(srv.pid, 3000);
  const ok = res.filter((r) => r.done), refused = res.filter((r) => r.status === 429);
  const bad = res.filter((r) => !r.done && r.status !== 429);
  return { name: `load ${n} streams`, requests: n, ok: ok.length, refused: refused.length, failures: bad.length,
    hung: res.filter((r) => r.hung).length, p50: pct(ok.map((r) => r.ms), 0.5), p99: pct(ok.map((r) => r.ms), 0.99),
    cold, before, after, wall, bad: bad.slice(0, 3).map((r) => `${r.status} ${r.text.slice(0, 200)}`) };
}

export async function runSoak(srv, n, { max_tokens = 2, log = () => {} } = {}) {
  await chat(srv.url, { max_tokens: 2 });
  const before = await settle(srv.pid, 300);
  const lat = [], bad = [];
  let mid = null;
  const t0 = Date.now();
  for (let i = 0; i < n; i++) {
    const r = await chat(srv.url, { stream: i % 2 === 0, max_tokens, content: `soak ${i}`, timeoutMs: 30000 });
    if (r.done) lat.push(r.ms); else bad.push(`${r.status} ${r.text.slice(0, 200)}`);
    if (i === Math.floor(n / 10)) mid = procStats(srv.pid); // after the allocator has warmed up
    if (i % 500 === 499) log(`  soak ${i + 1}/${n}: ${JSON.stringify(procStats(srv.pid))}`);
  }
  const after = await settle(srv.pid, 1000);
  return { name: `soak ${n} sequential`, requests: n, ok: lat.length, refused: 0, failures: bad.length, hung: 0,
    p50: pct(lat, 0.5), p99: pct(lat, 0.99), before, mid, after, wall: Date.now() - t0, bad: bad.slice(0, 3) };
}

const HX = { 'HX-Request': 'true' };
const form = (o) => ({ method: 'POST', headers: { ...HX, 'Content-Type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(o).toString() });
const sqlite = (db, sql) => execFileSync('sqlite3', [db, sql]).toString().trim();

// SIGKILL while an answer streams through the UI routes, then restart.
export async function faultKill(bin, dir) {
  const db = path.join(dir, 'kill.db');
  const args = ['-m', MODEL, '--db', db, '--ctx', '2048', '-t', '2'];
  let s = await startServer(bin, args);
  const id = /data-conv="([0-9a-f]+)"/.exec(await (await fetch(s.url + '/ui/conversations', { method: 'POST', headers: HX })).text())[1];
  // a first exchange that completes: it must survive
  let r = await fetch(`${s.url}/ui/c/${id}/messages`, form({ text: 'first question', max_tokens: '4' }));
  if (r.status !== 200) throw new Error(`send: ${r.status} ${await r.text()}`);
  for (let i = 0; i < 100 && sqlite(db, "SELECT count(*) FROM messages WHERE status=1") !== '0'; i++) await sleep(100);
  r = await fetch(`${s.url}/ui/c/${id}/messages`, form({ text: 'second question, long answer please', max_tokens: '1500' }));
  if (r.status !== 200) throw new Error(`send 2: ${r.status}`);
  // kill as soon as the streaming answer has been saved with some text (the
  // page saves every 1 s): a fixed sleep raced a fast build to the answer's end
  const saved = "SELECT count(*) FROM messages WHERE status=1 AND length(content) > 0";
  for (let i = 0; i < 200 && sqlite(db, saved) !== '1'; i++) await sleep(50);
  const streamingBefore = sqlite(db, 'SELECT count(*) FROM messages WHERE status=1');
  process.kill(s.pid, 'SIGKILL');
  await s.exited;
  const integrity1 = sqlite(db, 'PRAGMA integrity_check;');
  s = await startServer(bin, args);
  const page = await (await fetch(`${s.url}/ui/c/${id}`)).text();
  const exp = JSON.parse(await (await fetch(`${s.url}/ui/c/${id}/export?fmt=json`)).text());
  await s.stop();
  const integrity2 = sqlite(db, 'PRAGMA integrity_check;');
  const msgs = exp.messages;
  const last = msgs[msgs.length - 1];
  const checks = {
    'answer was streaming at the kill': streamingBefore === '1',
    'integrity_check after SIGKILL': integrity1 === 'ok',
    'integrity_check after restart': integrity2 === 'ok',
    'all 4 messages kept': msgs.length === 4,
    'first answer done': msgs[1]?.status === 'done',
    'killed answer marked partial/interrupted': last?.status === 'partial' && last?.finish_reason === 'interrupted',
    'killed answer kept its text': (last?.content || '').length > 0,
    'page marks it interrupted': /interrupted/.test(page),
  };
  return { name: 'fault: SIGKILL mid-stream', checks };
}

// Disk full: the server's file size limit is set (prlimit --fsize) once a
// first exchange is stored, so the database can no longer grow.
export async function faultDiskFull(bin, dir) {
  const db = path.join(dir, 'full.db');
  const args = ['-m', MODEL, '--db', db, '--ctx', '2048', '-t', '2'];
  const s = await startServer(bin, args);
  const id = /data-conv="([0-9a-f]+)"/.exec(await (await fetch(s.url + '/ui/conversations', { method: 'POST', headers: HX })).text())[1];
  let r = await fetch(`${s.url}/ui/c/${id}/messages`, form({ text: 'stored before the disk filled', max_tokens: '4' }));
  for (let i = 0; i < 100 && sqlite(db, "SELECT count(*) FROM messages WHERE status=1") !== '0'; i++) await sleep(100);
  const countBefore = sqlite(db, 'SELECT count(*) FROM messages');
  // WAL or journal files may grow too: a limit at the current size of the largest stops all growth
  execFileSync('sqlite3', [db, 'PRAGMA wal_checkpoint(TRUNCATE);']);
  const size = Number(execFileSync('stat', ['-c', '%s', db]).toString());
  execFileSync('prlimit', ['--pid', String(s.pid), `--fsize=${size}`]);
  // fill: big user messages until the store refuses
  const big = 'x'.repeat(200000);
  let refused = null;
  for (let i = 0; i < 20 && !refused; i++) {
    r = await fetch(`${s.url}/ui/c/${id}/messages`, form({ text: big + i, max_tokens: '2' }));
    if (r.status !== 200 && r.status !== 409) refused = { status: r.status, text: (await r.text()).slice(0, 200) };
    else for (let k = 0; k < 50 && sqlite(db, "SELECT count(*) FROM messages WHERE status=1") !== '0'; k++) await sleep(100);
  }
  // the API (no store) still streams
  const c = await chat(s.url, { max_tokens: 4 });
  const health = (await fetch(s.url + '/health')).status;
  const end = await s.stop();
  const countAfter = Number(sqlite(db, 'SELECT count(*) FROM messages'));
  const checks = {
    'store refused the write with a 5xx': !!refused && refused.status >= 500,
    'error reported in the log': /disk|full|SQLITE|I\/O|write|store/i.test(s.err),
    'API chat still streams': c.done,
    'server healthy': health === 200,
    'clean exit': end.code === 0,
    'integrity_check': sqlite(db, 'PRAGMA integrity_check;') === 'ok',
    'nothing stored before was lost': countAfter >= Number(countBefore),
  };
  return { name: 'fault: disk full', checks, refused };
}

// A short chat session under valgrind memcheck (release binary, built with
// -g): API non-stream and stream, tokenize, a UI answer stored in a db, then
// SIGTERM. Passes when memcheck reports no errors (invalid reads/writes,
// uninitialised jumps) and nothing definitely or indirectly lost.
export async function runValgrind(bin, dir) {
  const log = path.join(dir, 'vg.log');
  const s = await startServer(bin, ['-m', MODEL, '--db', path.join(dir, 'vg.db'), '--ctx', '256', '--kv-budget', '32', '-t', '2', '--parallel', '2'],
    { wrap: ['valgrind', '--tool=memcheck', '--leak-check=full', '--show-leak-kinds=definite,indirect', '--track-origins=no', `--log-file=${log}`] });
  const res = [];
  res.push(await chat(s.url, { stream: false, max_tokens: 3, timeoutMs: 300000 }));
  res.push(await chat(s.url, { stream: true, max_tokens: 3, timeoutMs: 300000 }));
  await Promise.all([chat(s.url, { max_tokens: 2, timeoutMs: 300000 }), chat(s.url, { stream: false, max_tokens: 2, timeoutMs: 300000 })]).then((x) => res.push(...x));
  const tk = await fetch(s.url + '/tokenize', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ content: 'hello <|im_end|>', with_pieces: true }) });
  const id = /data-conv="([0-9a-f]+)"/.exec(await (await fetch(s.url + '/ui/conversations', { method: 'POST', headers: HX })).text())[1];
  const ui = await fetch(`${s.url}/ui/c/${id}/messages`, form({ text: 'hi', max_tokens: '3' }));
  await sleep(8000);
  const end = await s.stop();
  const text = (await import('node:fs')).readFileSync(log, 'utf8');
  const num = (re) => Number((re.exec(text)?.[1] || '0').replace(/,/g, ''));
  const errors = num(/ERROR SUMMARY: ([\d,]+) errors/);
  const definite = num(/definitely lost: ([\d,]+) bytes/), indirect = num(/indirectly lost: ([\d,]+) bytes/);
  const invalid = (text.match(/Invalid (read|write)/g) || []).length;
  const checks = {
    'requests answered': res.every((r) => r.done) && tk.status === 200 && ui.status === 200,
    'clean exit': end.code === 0,
    'definitely lost 0': definite === 0,
    'indirectly lost 0': indirect === 0,
    'no invalid reads/writes': invalid === 0,
    'ERROR SUMMARY 0': errors === 0,
  };
  return { name: 'valgrind memcheck', checks, summary: { errors, definite, indirect, invalid, possibly: num(/possibly lost: ([\d,]+) bytes/) },
    tail: checks['ERROR SUMMARY 0'] ? '' : text.slice(0, 4000) };
}

const fmtKiB = (k) => `${(k / 1024).toFixed(1)} MiB`;
export function printTable(rows, fuzz = []) {
  const L = [];
  L.push('| run | requests | ok | 429 | failures | p50 ms | p99 ms | RSS before | RSS after | fds before | fds after |');
  L.push('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of rows.filter((x) => x.requests))
    L.push(`| ${r.name} | ${r.requests} | ${r.ok} | ${r.refused} | ${r.failures} | ${r.p50.toFixed(0)} | ${r.p99.toFixed(0)} | ${fmtKiB(r.before.rssKiB)} | ${fmtKiB(r.after.rssKiB)} | ${r.before.fds} | ${r.after.fds} |`);
  for (const r of rows.filter((x) => x.checks))
    for (const [k, v] of Object.entries(r.checks)) L.push(`| ${r.name}: ${k} | | | | ${v ? 0 : 1} | | | | | | |`);
  for (const r of rows.filter((x) => x.cold)) L.push(`| ${r.name}: cold RSS before the warm-up rounds | | | | | | | ${fmtKiB(r.cold.rssKiB)} | | ${r.cold.fds} | |`);
  for (const r of rows.filter((x) => x.mid)) L.push(`| ${r.name}: RSS at 10% (allocator warm) | | | | | | | ${fmtKiB(r.mid.rssKiB)} | | ${r.mid.fds} | |`);
  for (const f of fuzz) L.push(`| fuzz ${f.name} (${f.secs} s) | ${f.execs} execs | | | ${f.rc ? 1 : 0} | | | cov ${f.cov} | | | |`);
  return L.join('\n');
}

// Bounds: RSS within 16 MiB of the baseline; fds within 8.
export function verdict(r) {
  if (r.checks) return Object.values(r.checks).every(Boolean);
  const base = r.mid && r.name.startsWith('soak') ? r.mid : r.before;
  const rssOk = r.after.rssKiB <= base.rssKiB + 16 * 1024;
  return r.failures === 0 && r.hung === 0 && rssOk && r.after.fds <= r.before.fds + 8;
}

async function main() {
  const argv = process.argv.slice(2);
  const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
  const bin = path.resolve(opt('--bin', REL_BIN || ''));
  const what = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1].startsWith('--')));
  const runs = what.length ? what : ['load', 'soak', 'faults', 'valgrind'];
  if (!existsSync(MODEL) || !existsSync(bin)) { console.log(`SKIP: model or binary absent (${MODEL}, ${bin})`); return; }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'smolbot-load-'));
  const rows = [];
  const deadline = setTimeout(() => { console.error('load.mjs: over the 40 minute bound'); process.exit(1); }, 40 * 60 * 1000);
  try {
    if (runs.includes('load') || runs.includes('soak')) {
      const srv = await startServer(bin, ['-m', MODEL, '--no-db', '--ctx', '1024', '--kv-budget', '128', '-t', '2']);
      if (runs.includes('load')) { rows.push(await runLoad(srv, Number(opt('--streams', 50)))); console.log(JSON.stringify(rows.at(-1))); }
      if (runs.includes('soak')) { rows.push(await runSoak(srv, Number(opt('--soak', 2000)), { log: console.log })); console.log(JSON.stringify(rows.at(-1))); }
    }
    if (runs.includes('valgrind')) { rows.push(await runValgrind(bin, dir)); console.log(JSON.stringify(rows.at(-1))); }
    if (runs.includes('faults')) {
      rows.push(await faultKill(bin, dir)); console.log(JSON.stringify(rows.at(-1)));
      rows.push(await faultDiskFull(bin, dir)); console.log(JSON.stringify(rows.at(-1)));
    }
  } finally {
    const ends = await stopAll();
    for (const e of ends) if (/Sanitizer|runtime error/.test(e.err)) rows.push({ name: 'sanitizer', checks: { 'no sanitizer report': false } });
    clearTimeout(deadline);
    rmSync(dir, { recursive: true, force: true });
  }
  const jsonOut = opt('--json', null);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(rows));
  else console.log(printTable(rows));
  const failed = rows.filter((r) => !verdict(r));
  for (const r of failed) console.log(`FAIL ${r.name}: ${JSON.stringify(r.checks || r.bad || r)}`);
  process.exitCode = failed.length ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();
