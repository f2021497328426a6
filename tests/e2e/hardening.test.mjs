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

  test('JSON routes take application/json only (a cross-site form or text/plain post is refused)', async () => {
    const body = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
    for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', null]) {
      const r = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', body: ct === null ? new Uint8Array(Buffer.from(body)) : body,
        headers: { Origin: 'http://evil.example', ...(ct ? { 'Content-Type': ct } : {}) } });
      assert.equal(r.status, 415, String(ct));
      assert.equal((await r.json()).error.code, 'unsupported_media_type');
    }
    const ok = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', body, headers: { 'Content-Type': 'application/json; charset=utf-8' } });
    assert.equal(ok.status, 200);
  });

  test('duplicate JSON keys: 400', async () => {
    for (const body of ['{"messages":[{"role":"user","content":"a"}],"max_tokens":1,"max_tokens":2}',
      '{"messages":[{"role":"user","role":"system","content":"a"}],"max_tokens":1}']) {
      const r = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', body, headers: { 'Content-Type': 'application/json' } });
      const j = await r.json();
      assert.equal(r.status, 400, JSON.stringify(j));
      assert.match(j.error.message, /duplicate/);
    }
  });

  test('a NUL in form text: 400, nothing stored', async () => {
    const conv = await (await fetch(srv.url + '/ui/conversations', { method: 'POST', headers: { 'HX-Request': 'true' } })).text();
    const id = /data-conv="([0-9a-f]+)"/.exec(conv)[1];
    for (const body of ['text=a%00b', 'text=ok&temperature=0%00', 'title=x%00y']) {
      const p = body.startsWith('title') ? 'rename' : 'messages';
      const r = await fetch(`${srv.url}/ui/c/${id}/${p}`, { method: 'POST', body,
        headers: { 'HX-Request': 'true', 'Content-Type': 'application/x-www-form-urlencoded' } });
      assert.equal(r.status, 400, body);
      assert.match(await r.text(), /NUL/);
    }
    const page = await (await fetch(`${srv.url}/ui/c/${id}`)).text();
    assert.doesNotMatch(page, /class="msg /, 'no message was stored');
  });

  test('3,000 query arguments: 414 with a message, not a dropped connection', async () => {
    const q = Array.from({ length: 3000 }, (_, i) => `a${i}=${i}`).join('&');
    const res = await get('/ui/conversations?' + q, '127.0.0.1');
    assert.equal(statusOf(res), 414, res.data.slice(0, 200));
    assert.match(res.data, /too many query arguments \(3000; at most 100\)/);
  });

  test('continuing an answer that no longer fits: 413, the answer stays as it was', async () => {
    const exp = { format: 'smolbot-conversation', version: 1, conversation: { title: 'long', current_leaf: 2 },
      messages: [{ id: 1, parent: null, role: 'user', content: 'hi', status: 'done' },
        { id: 2, parent: 1, role: 'assistant', content: 'word '.repeat(700).trim(), status: 'done', finish_reason: 'stop' }] };
    const imp = await fetch(srv.url + '/ui/import', { method: 'POST', body: JSON.stringify(exp),
      headers: { 'HX-Request': 'true', 'Content-Type': 'application/json' } });
    assert.equal(imp.status, 200);
    const id = /data-conv="([0-9a-f]+)"/.exec(await imp.text())[1];
    const before = await (await fetch(`${srv.url}/ui/c/${id}/export?fmt=json`)).json();
    const r = await fetch(`${srv.url}/ui/c/${id}/continue`, { method: 'POST', body: '',
      headers: { 'HX-Request': 'true', 'Content-Type': 'application/x-www-form-urlencoded' } });
    assert.equal(r.status, 413);
    assert.match(await r.text(), /no longer fits/);
    await sleep(500); /* a wrongly registered answer would be finished (relabelled) by now */
    const after = await (await fetch(`${srv.url}/ui/c/${id}/export?fmt=json`)).json();
    assert.deepEqual(after.messages, before.messages);
    assert.equal(after.messages[1].status, 'done');
    assert.doesNotMatch(await (await fetch(`${srv.url}/ui/c/${id}`)).text(), /incomplete|interrupted|stopped/);
  });

  test('Stop ends the quote of its own conversation only', async () => {
    const mk = async () => /data-conv="([0-9a-f]+)"/.exec(await (await fetch(srv.url + '/ui/conversations',
      { method: 'POST', headers: { 'HX-Request': 'true' } })).text())[1];
    const a = await mk(), b = await mk();
    const qa = fetch(`${srv.url}/ui/quote?conv=${a}`).then((r) => r.text());
    const qb = fetch(`${srv.url}/ui/quote?conv=${b}`).then((r) => r.text());
    const qn = fetch(`${srv.url}/ui/quote`).then((r) => r.text());
    await sleep(400);
    const stop = await fetch(`${srv.url}/ui/c/${a}/stop`, { method: 'POST', headers: { 'HX-Request': 'true' } });
    assert.equal(stop.status, 204);
    const [ta, tb, tn] = await Promise.all([qa, qb, qn]);
    assert.match(ta, /event: done/);
    assert.doesNotMatch(ta, /full of grace and truth/, 'stopped early');
    for (const t of [tb, tn]) assert.match(t, /full of grace and truth/, 'the other quotes ran to the end');
  });

  test('import answers a summary, and refuses an import too large to take at once', async () => {
    const big = (n, pad) => ({ format: 'smolbot-conversation', version: 1, conversation: { title: `n${n}` },
      messages: Array.from({ length: n }, (_, i) => ({ id: i + 1, parent: i ? i : null, role: i % 2 ? 'assistant' : 'user',
        content: 'm' + 'x'.repeat(pad), status: 'done' })) });
    const post = (exp) => fetch(srv.url + '/ui/import', { method: 'POST', body: JSON.stringify(exp),
      headers: { 'HX-Request': 'true', 'Content-Type': 'application/json' } });
    let t0 = Date.now();
    const r = await post(big(2000, 40));
    const html = await r.text();
    assert.equal(r.status, 200, html);
    console.log(`# import of 2,000 messages: ${html.length} bytes of answer in ${Date.now() - t0} ms`);
    assert.ok(html.length < 1024, `a summary, not the conversation: ${html.length} bytes`);
    assert.match(html, /data-conv="[0-9a-f]{16}"/);
    assert.match(html, /2000 messages/);
    assert.equal(r.headers.get('hx-trigger'), 'smolbot:convs');
    t0 = Date.now();
    const huge = await post(big(100000, 0)); /* about 6 MB */
    const msg = await huge.text();
    console.log(`# import of 100,000 messages: ${huge.status} in ${Date.now() - t0} ms`);
    assert.equal(huge.status, 413, msg);
    assert.match(msg, /too many messages to import \(100000; at most 10000\)/);
    await fetch(srv.url + '/health');
  });

  // 500 slow clients (a header line every 2 s) must not keep a normal
  // request out: the pool sheds the oldest connection that has not sent a
  // complete request, and the header deadline closes the rest.
  test('a normal request is answered within a second while 500 slow connections are open', async () => {
    const socks = [];
    let closedByServer = 0, stopping = false, reopened = 0;
    /* like a real attacker, reopen what the server closes (bounded), so a
     * slot freed by anyone else is taken again at once */
    const open = (i) => {
      const s = net.connect(srv.port, '127.0.0.1');
      s.on('error', () => {});
      s.on('close', () => {
        if (stopping) return;
        closedByServer++;
        if (reopened++ < 3000) setTimeout(() => { if (!stopping) open(i); }, 10);
      });
      s.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n');
      socks[i] = s;
    };
    try {
      for (let i = 0; i < 500; i++) {
        open(i);
        if (i % 50 === 49) await sleep(20);
      }
      await sleep(1000);
      const drip = setInterval(() => { for (const s of socks) if (!s.destroyed) s.write('X-a: b\r\n'); }, 2000);
      try {
        const times = [];
        for (let k = 0; k < 3; k++) {
          /* a new connection each time (fetch would reuse an idle keep-alive one) */
          const res = await rawRequest(srv.port, ['GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'], { timeoutMs: 5000 });
          assert.equal(statusOf(res), 200, `try ${k}: ${JSON.stringify(res).slice(0, 200)}`);
          times.push(res.ms);
          await sleep(200);
        }
        console.log(`# /health with 500 slow connections open: ${times.join(', ')} ms (${closedByServer} shed so far)`);
        assert.ok(Math.max(...times) < 1000, `answered in ${times} ms`);
      } finally {
        clearInterval(drip);
      }
    } finally {
      stopping = true;
      for (const s of socks) s.destroy();
    }
    await sleep(200);
  });
});
