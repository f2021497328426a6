// server.mjs -- `make bench-server`: serving speed through the HTTP API on
// the 3B-shaped model, smolbot alone or side by side with llama-server
// (`make bench-server LLAMA_SERVER=/path/to/llama-server`).
//
//   node bench/server.mjs MODEL [--llama-server PATH] [--tokens N] [--threads N]
//                              [--only one,c4,c8,long,cache]
//
// Scenarios, each run on one server, then the next server:
//   1 stream      TTFT and decode tok/s as the client sees them;
//   4, 8 streams  concurrent streams of N tokens: aggregate tok/s (tokens over
//                 wall time), per-stream tok/s, p50/p95 inter-token gap;
//   long prompt   three streams decode when a ~2,000-token prompt arrives:
//                 the streams' largest gap between two tokens while it is
//                 read over their median gap (these streams ask for logprobs,
//                 which say when a chunk carries two tokens), and the
//                 newcomer's TTFT, busy and alone;
//   cache         interleaved clients: A (a ~1,700-token prompt), A, B, A,
//                 three concurrent short ones, A -- cached_tokens of A's
//                 repeats (how much of A the server kept).
// One table at the end, with smolbot / llama-server ratios when both ran.
// Both servers get the same threads and 8 parallel sequences. Every prompt
// that must not hit a cache carries its own text, so the two servers'
// prefix caches see the same requests. Loopback only; servers start on free
// ports and are always stopped.
import { spawn } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def; };
const MODEL = args[0];
const LLAMA = opt('--llama-server', '');
const N = Number(opt('--tokens', '64'));
const THREADS = Number(opt('--threads', String(os.availableParallelism ? os.availableParallelism() : os.cpus().length)));
const PARALLEL = 8;
const ONLY = new Set(opt('--only', 'one,c4,c8,long,cache').split(','));
if (!MODEL) { console.error('usage: node bench/server.mjs MODEL [--llama-server PATH] [--tokens N] [--threads N]'); process.exit(2); }

const children = new Set();
const stopAll = () => { for (const p of children) { try { p.kill('SIGTERM'); } catch {} } };
process.on('exit', stopAll);
process.on('SIGINT', () => { stopAll(); process.exit(130); });
setTimeout(() => { console.error('bench-server: timeout'); stopAll(); process.exit(1); }, 60 * 60 * 1000).unref();

const freePort = () => new Promise((res, rej) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
  s.on('error', rej);
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Start one server; resolves to { name, url, stop } once /health says ready.
async function startServer(kind) {
  let proc, url;
  if (kind === 'smolbot') {
    proc = spawn(path.join(ROOT, 'build/smolbot'), ['serve', '-m', MODEL, '--port', '0', '--host', '127.0.0.1', '--no-db',
      '--parallel', String(PARALLEL), '-t', String(THREADS)], { stdio: ['ignore', 'pipe', 'inherit'] });
    url = await new Promise((res, rej) => {
      let out = '';
      proc.stdout.on('data', (d) => { out += d; const m = out.match(/listening on (http:\/\/\S+)/); if (m) res(m[1]); });
      proc.on('exit', (c) => rej(new Error('smolbot exited ' + c)));
    });
  } else {
    const port = await freePort();
    // one 4096-position context per sequence, like smolbot's default
    proc = spawn(LLAMA, ['-m', MODEL, '--host', '127.0.0.1', '--port', String(port), '-np', String(PARALLEL),
      '-c', String(4096 * PARALLEL), '-t', String(THREADS), '--cont-batching'], { stdio: ['ignore', 'ignore', 'inherit'] });
    proc.on('exit', (c) => { if (children.has(proc)) console.error(`llama-server exited ${c}`); });
    url = `http://127.0.0.1:${port}`;
  }
  children.add(proc);
  for (let i = 0; ; i++) {
    const r = await fetch(url + '/health').catch(() => null);
    if (r && r.status === 200) break;
    if (i > 1200) throw new Error(kind + ': not ready after 10 minutes');
    await sleep(500);
  }
  const stop = async () => {
    children.delete(proc);
    proc.kill('SIGTERM');
    await new Promise((r) => { if (proc.exitCode !== null) r(); else proc.on('exit', r); });
  };
  return { name: kind, url, stop };
}

// Deterministic filler text: about 1.3 tokens a word.
function filler(seed, words) {
  const vocab = ['harbour', 'tide', 'keeper', 'lantern', 'storm', 'granite', 'gull', 'rope', 'signal', 'night', 'shore',
    'vessel', 'current', 'beacon', 'fog', 'north', 'island', 'reef', 'chart', 'anchor', 'winter', 'salt', 'cliff', 'wave'];
  let x = seed >>> 0, out = [];
  for (let i = 0; i < words; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out.push(vocab[(x >>> 8) % vocab.length] + ((x >>> 20) % 7 === 0 ? '.' : ''));
  }
  return out.join(' ');
}

// One streamed chat completion; times of every content chunk.
async function stream(srv, content, maxTokens, seed, prog = {}, logprobs = false) {
  const t0 = performance.now();
  const r = await fetch(srv.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content }], max_tokens: maxTokens, stream: true, seed,
      temperature: 0.7, ignore_eos: true, cache_prompt: true, stream_options: { include_usage: true },
      chat_template_kwargs: { enable_thinking: false }, ...(logprobs ? { logprobs: true } : {}) }),
  });
  if (r.status !== 200) throw new Error(`${srv.name}: HTTP ${r.status}: ${await r.text()}`);
  const dec = new TextDecoder();
  const times = [], ntok = []; // ntok: tokens in each content chunk, where logprobs say
  let buf = '', usage = null, timings = null;
  for await (const chunk of r.body) {
    buf += dec.decode(chunk, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k); buf = buf.slice(k + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const o = JSON.parse(ev.slice(6));
      if (o.usage) usage = o.usage;
      if (o.timings) timings = o.timings;
      const d = o.choices && o.choices[0] && o.choices[0].delta;
      if (d && (d.content || d.reasoning_content)) { times.push(performance.now()); ntok.push(0); prog.n = times.length; }
      // a token whose bytes were held back (a partial UTF-8 character, a
      // possible stop string) goes out with the next one: its logprobs,
      // in the same event or the one after, say the chunk holds two
      const lp = o.choices && o.choices[0] && o.choices[0].logprobs && o.choices[0].logprobs.content;
      if (lp && ntok.length) ntok[ntok.length - 1] += lp.length;
    }
  }
  const t1 = performance.now();
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  const tokGaps = gaps.map((g, i) => g / Math.max(1, ntok[i + 1])); // per token, where logprobs came
  const cached = usage && usage.prompt_tokens_details ? usage.prompt_tokens_details.cached_tokens
    : timings && timings.cache_n !== undefined ? timings.cache_n : NaN;
  return { t0, t1, times, gaps, tokGaps, n: times.length, ttft: times.length ? times[0] - t0 : NaN,
    decode: times.length > 1 ? (times.length - 1) / ((times[times.length - 1] - times[0]) / 1000) : NaN,
    prompt: usage ? usage.prompt_tokens : NaN, cached };
}

const pct = (xs, p) => { if (!xs.length) return NaN; const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
const f = (x, d = 1) => Number.isFinite(x) ? x.toFixed(d) : '-';

async function concurrent(srv, k, tag) {
  const t0 = performance.now();
  const rs = await Promise.all(Array.from({ length: k }, (_, i) =>
    stream(srv, `${tag} question ${i}: ${filler(1000 + i, 12)}. Tell me a long story about the sea.`, N, i)));
  const secs = (performance.now() - t0) / 1000;
  const tokens = rs.reduce((a, s) => a + s.n, 0);
  const gaps = rs.flatMap((s) => s.gaps);
  return { agg: tokens / secs, per: rs.reduce((a, s) => a + s.decode, 0) / k, p50: pct(gaps, 0.5), p95: pct(gaps, 0.95),
    ttft: pct(rs.map((s) => s.ttft), 0.5) };
}

// Three streams decode; once each has a few tokens a long prompt arrives.
async function longPrompt(srv) {
  const longText = (s) => `Summarise this log in one line. ${filler(s, 1500)}`;
  const prog = [{ n: 0 }, { n: 0 }, { n: 0 }];
  const runs = [0, 1, 2].map((i) => stream(srv, `Stream ${i}: ${filler(3000 + i, 10)}. Tell me about the sea.`,
    Math.max(N, 48) * 3, i, prog[i], true));
  let arrive = 0, busy;
  const probe = (async () => {
    // the long prompt comes once every stream has a few gaps behind it
    while (prog.some((p) => p.n < 6)) await sleep(20);
    arrive = performance.now();
    busy = await stream(srv, longText(7), 8, 7);
  })();
  const rs = await Promise.all(runs);
  await probe;
  const firstTok = arrive + busy.ttft;
  let before = [], during = [];
  for (const s of rs)
    s.times.slice(1).forEach((t, i) => {
      const g = s.tokGaps[i];
      if (t <= arrive) before.push(g);
      else if (s.times[i] < firstTok) during.push(g);
    });
  const alone = await stream(srv, longText(8), 8, 8);
  const med = pct(before.length >= 3 ? before : rs.flatMap((s) => s.tokGaps), 0.5);
  return { med, maxDuring: Math.max(...during, 0), ratio: Math.max(...during, 0) / med, ttftBusy: busy.ttft,
    ttftAlone: alone.ttft, prompt: busy.prompt, streamsBefore: before.length };
}

// Interleaved clients: how much of A the server keeps.
async function cacheScenario(srv) {
  const A = `Answer from this text. ${filler(42, 1300)}`;
  const short = (i) => `Short question ${i}: what is a tide?`;
  const a1 = await stream(srv, A, 4, 1);
  const a2 = await stream(srv, A, 4, 1);
  await stream(srv, short(0), 4, 2);
  const a3 = await stream(srv, A, 4, 1);
  await Promise.all([1, 2, 3].map((i) => stream(srv, short(i), 4, 2 + i)));
  const a4 = await stream(srv, A, 4, 1);
  return { prompt: a1.prompt, cached: [a2.cached, a3.cached, a4.cached], ttftCold: a1.ttft, ttftWarm: a4.ttft };
}

async function runAll(kind) {
  console.log(`== ${kind}`);
  const srv = await startServer(kind);
  const r = {};
  try {
    await stream(srv, 'Warm up: say hello.', 4, 0);
    if (ONLY.has('one')) {
      const one = await stream(srv, `One stream: ${filler(5, 12)}. Tell me a long story about the sea.`, N, 1);
      r.one = { ttft: one.ttft, decode: one.decode, p50: pct(one.gaps, 0.5) };
      console.log(`  1 stream: TTFT ${f(one.ttft, 0)} ms, ${f(one.decode, 2)} tok/s`);
    }
    if (ONLY.has('c4')) {
      r.c4 = await concurrent(srv, 4, 'Four');
      console.log(`  4 streams: ${f(r.c4.agg, 2)} tok/s aggregate, ${f(r.c4.per, 2)} per stream, gap p50 ${f(r.c4.p50, 0)} p95 ${f(r.c4.p95, 0)} ms`);
    }
    if (ONLY.has('c8')) {
      r.c8 = await concurrent(srv, 8, 'Eight');
      console.log(`  8 streams: ${f(r.c8.agg, 2)} tok/s aggregate, ${f(r.c8.per, 2)} per stream, gap p50 ${f(r.c8.p50, 0)} p95 ${f(r.c8.p95, 0)} ms`);
    }
    if (ONLY.has('long')) {
      r.lp = await longPrompt(srv);
      console.log(`  long prompt (${r.lp.prompt} tokens) beside 3 streams: largest gap ${f(r.lp.maxDuring, 0)} ms = ${f(r.lp.ratio, 1)}x the median ${f(r.lp.med, 0)} ms; TTFT busy ${f(r.lp.ttftBusy, 0)} ms, alone ${f(r.lp.ttftAlone, 0)} ms`);
    }
    if (ONLY.has('cache')) {
      r.cache = await cacheScenario(srv);
      console.log(`  cache: A ${r.cache.prompt} tokens; A's repeats cached ${r.cache.cached.join(', ')}; TTFT cold ${f(r.cache.ttftCold, 0)} ms, last repeat ${f(r.cache.ttftWarm, 0)} ms`);
    }
  } finally {
    await srv.stop();
  }
  return r;
}

const res = { smolbot: await runAll('smolbot') };
if (LLAMA) res.llama = await runAll('llama-server');

// the table: one row per figure, a column per server, and the ratio
const rows = [
  ['1 stream: TTFT ms', (r) => r.one.ttft, 0, 'lower'],
  ['1 stream: decode tok/s', (r) => r.one.decode, 2, 'higher'],
  ['4 streams: aggregate tok/s', (r) => r.c4.agg, 2, 'higher'],
  ['4 streams: per-stream tok/s', (r) => r.c4.per, 2, 'higher'],
  ['4 streams: gap p50 ms', (r) => r.c4.p50, 0, 'lower'],
  ['4 streams: gap p95 ms', (r) => r.c4.p95, 0, 'lower'],
  ['8 streams: aggregate tok/s', (r) => r.c8.agg, 2, 'higher'],
  ['8 streams: per-stream tok/s', (r) => r.c8.per, 2, 'higher'],
  ['8 streams: gap p50 ms', (r) => r.c8.p50, 0, 'lower'],
  ['8 streams: gap p95 ms', (r) => r.c8.p95, 0, 'lower'],
  ['long prompt: largest gap / median', (r) => r.lp.ratio, 1, 'lower'],
  ['long prompt: newcomer TTFT busy ms', (r) => r.lp.ttftBusy, 0, 'lower'],
  ['long prompt: newcomer TTFT alone ms', (r) => r.lp.ttftAlone, 0, 'lower'],
  ['long prompt: TTFT busy / alone', (r) => r.lp.ttftBusy / r.lp.ttftAlone, 2, 'lower'],
  ['cache: A repeats, min cached / (A - 1)', (r) => Math.min(...r.cache.cached) / (r.cache.prompt - 1), 2, 'higher'],
  ['cache: A TTFT warm ms', (r) => r.cache.ttftWarm, 0, 'lower'],
];
const head = ['figure', 'smolbot'].concat(res.llama ? ['llama-server', 'ratio'] : []);
const val = (get, r) => { try { return get(r); } catch { return NaN; } };
const lines = rows.filter(([, get]) => Number.isFinite(val(get, res.smolbot))).map(([name, get, d, better]) => {
  const a = val(get, res.smolbot), row = [name, f(a, d)];
  if (res.llama) {
    const b = val(get, res.llama);
    row.push(f(b, d), f(a / b, 2) + (better === 'higher' ? ' (>1 better)' : ' (<1 better)'));
  }
  return row;
});
console.log(`\n${N} tokens a stream, ${THREADS} threads, ${PARALLEL} parallel sequences`);
console.log('| ' + head.join(' | ') + ' |');
console.log('|' + head.map(() => '---').join('|') + '|');
for (const l of lines) console.log('| ' + l.join(' | ') + ' |');
stopAll();
process.exit(0);
