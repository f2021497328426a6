// cluster.mjs -- speed through nginx with 1, 2 and 3 replicas on one
// PostgreSQL history (scripts/cluster.sh), release binary:
//
//   node bench/cluster.mjs MODEL [USERS=6] [TOKENS=64]
//
// For each replica count: USERS concurrent streaming chats (distinct
// "user" fields, so nginx spreads them), TOKENS tokens each, after one
// warm-up request per user; prints the median TTFT, the median per-stream
// decode tok/s and the aggregate tok/s.  Each replica runs one thread:
// on a machine with fewer cores than replicas the replicas share them.
// Loopback only; every cluster is stopped, also on failure.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = process.argv[2];
const USERS = Number(process.argv[3] || 6), TOKENS = Number(process.argv[4] || 64);
if (!MODEL) { console.error('usage: node bench/cluster.mjs MODEL [USERS] [TOKENS]'); process.exit(2); }
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };

async function stream(url, user) {
  const t0 = performance.now();
  const res = await fetch(url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', user, stream: true, max_tokens: TOKENS, temperature: 0, ignore_eos: true,
      stream_options: { include_usage: true }, messages: [{ role: 'user', content: `Tell ${user} a story.` }] }),
  });
  let first = 0, buf = '', n = 0;
  const dec = new TextDecoder();
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    if (!first && /"content":"[^"]/.test(buf)) first = performance.now();
    const m = /"completion_tokens":(\d+)/.exec(buf);
    if (m) n = Number(m[1]);
  }
  const t1 = performance.now();
  return { ttft: (first || t1) - t0, tps: n > 1 ? (n - 1) / ((t1 - (first || t0)) / 1000) : 0, n, wall: t1 - t0 };
}

const rows = [];
for (const n of [1, 2, 3]) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'smolbot-bench-cluster-'));
  try {
    const r = spawnSync('bash', ['scripts/cluster.sh', 'start', String(n), '-m', MODEL, '--dir', dir, '--',
      '--parallel', String(USERS), '--kv-budget', '512'], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    const url = readFileSync(path.join(dir, 'url'), 'utf8').trim();
    const users = Array.from({ length: USERS }, (_, i) => `bench-${i}`);
    await Promise.all(users.map((u) => stream(url, u)));
    const t0 = performance.now();
    const res = await Promise.all(users.map((u) => stream(url, u)));
    const wall = (performance.now() - t0) / 1000;
    const total = res.reduce((s, x) => s + x.n, 0);
    rows.push({ replicas: n, ttft_ms: med(res.map((x) => x.ttft)).toFixed(0), stream_tok_s: med(res.map((x) => x.tps)).toFixed(1),
      aggregate_tok_s: (total / wall).toFixed(1) });
  } finally {
    spawnSync('bash', ['scripts/cluster.sh', 'stop', '--dir', dir], { cwd: ROOT });
    rmSync(dir, { recursive: true, force: true });
  }
}
console.log(`${USERS} concurrent streams of ${TOKENS} tokens through nginx (${path.basename(MODEL)}):`);
console.table(rows);
