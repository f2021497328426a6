// hardening.test.mjs -- what a web page or a greedy client on the same
// machine could do to `smolbot serve` without an API key: DNS rebinding
// (a foreign Host), connection exhaustion (slowloris), cross-origin JSON,
// and the small input checks of the page's routes.
//
// One sanitized server (build/san/smolbot) on the tiny model, no API key, a
// history database in a temp dir. Every server listens on 127.0.0.1 and is
// stopped at the end; it must end cleanly with nothing from the sanitizers.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MODEL, SAN_BIN, startServer, stopAll, rawRequest, sleep } from './serve_util.mjs';

const SKIP = !existsSync(MODEL) ? `model absent: ${MODEL}` : !SAN_BIN ? 'no smolbot binary: run make' : false;
if (SKIP) console.log(`# SKIP hardening tests: ${SKIP}`);
let srv, dir;

const get = (p, host) => rawRequest(srv.port, [`GET ${p} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`]);
const statusOf = (res) => Number((/^HTTP\/1\.1 (\d+)/.exec(res.data) || [])[1]);

describe('hardening', { skip: SKIP }, () => {
  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'smolbot-hard-'));
    srv = await startServer(SAN_BIN, ['-m', MODEL, '--db', path.join(dir, 'h.db'), '--ctx', '512', '--kv-budget', '64',
      '-t', '2', '--allow-host', 'chat.example.org']);
  });
  after(async () => {
    const ends = await stopAll();
    for (const e of ends) {
      assert.doesNotMatch(e.err, /Sanitizer|runtime error/, e.err);
      assert.deepEqual(e.end, { code: 0, signal: null }, e.err);
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test('DNS rebinding: a foreign Host gets 421, never the history or the model', async () => {
    const conv = await fetch(srv.url + '/ui/conversations', { method: 'POST', headers: { 'HX-Request': 'true' } });
    assert.equal(conv.status, 200);
    for (const p of ['/', '/ui/conversations', '/v1/models', '/health']) {
      const res = await get(p, `evil.example:${srv.port}`);
      assert.equal(statusOf(res), 421, `${p}: ${res.data.slice(0, 300)}`);
      assert.match(res.data, /--allow-host/);
      assert.doesNotMatch(res.data, /data-conv=/);
    }
    const post = await rawRequest(srv.port, [`POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n` +
      `Content-Length: 58\r\nConnection: close\r\n\r\n{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}`]);
    assert.equal(statusOf(post), 421);
    for (const h of [`127.0.0.1:${srv.port}`, `localhost:${srv.port}`, 'chat.example.org', `CHAT.example.org:443`, `[::1]:${srv.port}`]) {
      const res = await get('/ui/conversations', h);
      assert.equal(statusOf(res), 200, `${h}: ${res.data.slice(0, 200)}`);
    }
  });

  // 500 slow clients (a header line every 2 s) must not keep a normal
  // request out: the pool sheds the oldest connection that has not sent a
  // complete request, and the header deadline closes the rest.
  test('a normal request is answered within a second while 500 slow connections are open', async () => {
    const socks = [];
    let closedByServer = 0;
    try {
      for (let i = 0; i < 500; i++) {
        const s = net.connect(srv.port, '127.0.0.1');
        s.on('error', () => {});
        s.on('close', () => { closedByServer++; });
        s.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n');
        socks.push(s);
        if (i % 50 === 49) await sleep(20);
      }
      await sleep(1000);
      const drip = setInterval(() => { for (const s of socks) if (!s.destroyed) s.write('X-a: b\r\n'); }, 2000);
      try {
        const times = [];
        for (let k = 0; k < 3; k++) {
          const t0 = Date.now();
          const r = await fetch(srv.url + '/health', { signal: AbortSignal.timeout(5000) });
          assert.equal(r.status, 200);
          await r.text();
          times.push(Date.now() - t0);
          await sleep(200);
        }
        console.log(`# /health with 500 slow connections open: ${times.join(', ')} ms (${closedByServer} shed so far)`);
        assert.ok(Math.max(...times) < 1000, `answered in ${times} ms`);
      } finally {
        clearInterval(drip);
      }
    } finally {
      for (const s of socks) s.destroy();
    }
    await sleep(200);
  });
});
