// slow.mjs -- `make reliability`: slow clients against the release server.
//
// SLOW (default 2,000) connections from eight loopback addresses
// (127.0.0.2-9) trickle a header line or a body byte every 2 s and reopen
// whatever the server closes, for SLOW_SECONDS (default 60). Meanwhile a client
// on 127.0.0.1 sends GET /health on a new connection every 250 ms. Passes
// when every probe is answered 200 within a second; prints the probe
// latencies, how many slow connections the server closed, and its
// descriptors and RSS before and after (a leak would show there).
// Loopback only; the server is always stopped.
import net from 'node:net';
import { REL_BIN, startServer, stopAll, rawRequest, procStats, sleep } from '../e2e/serve_util.mjs';

const N = Number(process.env.SLOW || 2000), SECONDS = Number(process.env.SLOW_SECONDS || 60);
const srv = await startServer(REL_BIN, ['--no-db']);
const before = procStats(srv.pid);
let stopping = false, closed = 0;
const socks = [];
function open(i) {
  const s = net.connect({ port: srv.port, host: '127.0.0.1', localAddress: `127.0.0.${2 + (i % 8)}` });
  s.on('error', () => {});
  s.on('close', () => { if (!stopping) { closed++; setTimeout(() => { if (!stopping) open(i); }, 250); } });
  s.write(i % 2 ? 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n'
    : 'POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{');
  socks[i] = s;
}
for (let i = 0; i < N; i++) { open(i); if (i % 100 === 99) await sleep(10); }
const drip = setInterval(() => { socks.forEach((s, i) => { if (!s.destroyed) s.write(i % 2 ? 'X-a: b\r\n' : ' '); }); }, 2000);
const ms = [];
let bad = 0;
const end = Date.now() + SECONDS * 1000;
while (Date.now() < end) {
  const r = await rawRequest(srv.port, ['GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'], { timeoutMs: 5000 });
  if (!/^HTTP\/1\.1 200/.test(r.data) || r.ms >= 1000) bad++;
  ms.push(r.ms);
  await sleep(250);
}
const during = procStats(srv.pid);
stopping = true;
clearInterval(drip);
for (const s of socks) s.destroy();
await sleep(1500);
const after = procStats(srv.pid);
const ends = await stopAll();
ms.sort((a, b) => a - b);
const q = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
console.log(`slow clients: ${N} for ${SECONDS} s; /health probes ${ms.length}: p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, ` +
  `max ${ms[ms.length - 1]} ms, ${bad} failed or >= 1 s; closed by the server ${closed}; ` +
  `fds ${before.fds} -> ${during.fds} -> ${after.fds}, RSS ${before.rssKiB} -> ${during.rssKiB} -> ${after.rssKiB} KiB`);
const clean = ends.every((e) => e.end.code === 0);
if (bad || !clean || after.fds > before.fds + 16) { console.log('slow clients: FAILED'); process.exit(1); }
