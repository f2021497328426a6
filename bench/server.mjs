// server.mjs -- `make bench-server`: speed through the server, on the
// 3B-shaped model, with the release binary.
//
//   1 stream of 64 tokens: TTFT and decode tok/s as the client sees them
//   (compare with `smolbot bench` decode at depth 0);
//   4 concurrent streams of 64 tokens: aggregate tok/s (the engine decodes
//   active sequences together in one batched pass).
// Loopback only; the server is started on a free port and always stopped.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = process.argv[2];
const BIN = path.join(ROOT, 'build/smolbot');
const N = 64;

const proc = spawn(BIN, ['serve', '-m', MODEL, '--port', '0', '--host', '127.0.0.1', '--no-db', '--parallel', '4'],
  { stdio: ['ignore', 'pipe', 'inherit'] });
const stop = () => { try { proc.kill('SIGTERM'); } catch {} };
process.on('exit', stop);
setTimeout(() => { console.error('bench-server: timeout'); stop(); process.exit(1); }, 15 * 60 * 1000).unref();

const url = await new Promise((res, rej) => {
  let out = '';
  proc.stdout.on('data', (d) => { out += d; const m = out.match(/listening on (http:\/\/\S+)/); if (m) res(m[1]); });
  proc.on('exit', (c) => rej(new Error('server exited ' + c)));
});
for (;;) { // wait for the model
  const r = await fetch(url + '/health').catch(() => null);
  if (r && r.status === 200) break;
  await new Promise((r) => setTimeout(r, 500));
}

async function stream(i) {
  const t0 = performance.now();
  const r = await fetch(url + '/v1/chat/completions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: `Question number ${i}: tell me a long story about the sea.` }],
      max_tokens: N, stream: true, seed: i, ignore_eos: true, chat_template_kwargs: { enable_thinking: false } }),
  });
  const dec = new TextDecoder();
  let first = 0, n = 0, buf = '';
  for await (const chunk of r.body) {
    buf += dec.decode(chunk, { stream: true });
    let k;
    while ((k = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, k); buf = buf.slice(k + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      const o = JSON.parse(ev.slice(6));
      const d = o.choices && o.choices[0] && o.choices[0].delta;
      if (d && (d.content || d.reasoning_content)) { if (!first) first = performance.now(); n++; }
    }
  }
  const t1 = performance.now();
  return { ttft: first - t0, n, decode: (n - 1) / ((t1 - first) / 1000), total: t1 - t0 };
}

await stream(0); // warm the caches (system block)
const one = await stream(1);
console.log(`1 stream:  TTFT ${one.ttft.toFixed(0)} ms, ${one.n} chunks, decode ${one.decode.toFixed(2)} tok/s`);
const t0 = performance.now();
const many = await Promise.all([2, 3, 4, 5].map(stream));
const secs = (performance.now() - t0) / 1000;
const tokens = many.reduce((a, s) => a + s.n, 0);
console.log(`4 streams: ${tokens} chunks in ${secs.toFixed(1)} s = ${(tokens / secs).toFixed(2)} tok/s aggregate; ` +
  `per stream ${many.map((s) => s.decode.toFixed(2)).join(', ')} tok/s; TTFT ${many.map((s) => s.ttft.toFixed(0)).join(', ')} ms`);
stop();
process.exit(0);
