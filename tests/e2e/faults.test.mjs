// faults.test.mjs -- the server against its files changing under it.
//
// The model file truncated while the server uses it (a plain `cp` over the
// file truncates it first): the server must stay up, fail the requests
// that hit the change with a clear error ("the model file changed on
// disk"), say so on /health, refuse new requests, and end cleanly on
// SIGTERM with nothing from the sanitizers. Each server runs on a copy of
// the tiny model in a temp dir.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync, truncateSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MODEL, SAN_BIN, startServer, stopAll } from './serve_util.mjs';

const SKIP = !existsSync(MODEL) ? `model absent: ${MODEL}` : !SAN_BIN ? 'no smolbot binary: run make' : false;
if (SKIP) console.log(`# SKIP fault tests: ${SKIP}`);
const JSONH = { 'Content-Type': 'application/json' };
const dir = SKIP ? null : mkdtempSync(path.join(os.tmpdir(), 'smolbot-faults-'));

function modelCopy(name) {
  const p = path.join(dir, name);
  copyFileSync(MODEL, p);
  chmodSync(p, 0o644);
  return p;
}
const chat = (srv, body) =>
  fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: JSONH, body: JSON.stringify(body) });

async function expectChanged(srv) {
  const h = await fetch(srv.url + '/health');
  const j = await h.json();
  assert.equal(h.status, 503, JSON.stringify(j));
  assert.match(j.message, /model file changed on disk/);
  const r = await chat(srv, { messages: [{ role: 'user', content: 'and now?' }], max_tokens: 8 });
  assert.ok(r.status >= 500, `a new request is refused, got ${r.status}`);
  assert.match(JSON.stringify(await r.json()), /model file changed on disk/);
  assert.equal(srv.proc.exitCode, null, 'the server is still running');
}

describe('model file changed on disk', { skip: SKIP }, () => {
  after(async () => {
    const ends = await stopAll();
    for (const e of ends) assert.doesNotMatch(e.err, /Sanitizer|runtime error|SIGBUS/);
    rmSync(dir, { recursive: true, force: true });
  });

  test('truncated between requests: the next request fails clearly, /health says why', async () => {
    const m = modelCopy('between.gguf');
    const srv = await startServer(SAN_BIN, ['-m', m, '--no-db']);
    const ok = await chat(srv, { messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 });
    assert.equal(ok.status, 200);
    await ok.json();
    truncateSync(m, 4096);
    const r = await chat(srv, { messages: [{ role: 'user', content: 'hello again' }], max_tokens: 8 });
    const j = await r.json();
    // 500 when the engine took the request before it noticed, else 503
    assert.ok(r.status === 500 || r.status === 503, JSON.stringify(j));
    assert.match(j.error.message, /model file changed on disk: .* is now 4096 bytes/);
    await expectChanged(srv);
    const e = await srv.stop();
    assert.equal(e.code, 0, `clean exit after SIGTERM: ${JSON.stringify(e)}; stderr: ${srv.err}`);
    assert.doesNotMatch(srv.err, /Sanitizer|runtime error/);
  });

  test('truncated during a stream: the stream ends with the error, no SIGBUS', async () => {
    const m = modelCopy('during.gguf');
    const srv = await startServer(SAN_BIN, ['-m', m, '--no-db']);
    const r = await chat(srv, { messages: [{ role: 'user', content: 'tell me a long story' }], max_tokens: 3000, stream: true,
                               temperature: 1.5 });
    assert.equal(r.status, 200);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let text = '', cut = false;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
      if (!cut && (text.match(/^data: /gm) || []).length >= 3) {
        truncateSync(m, 4096); // every weight page is now past the end of the file
        cut = true;
      }
    }
    assert.ok(cut, 'the stream was still running when the file was cut');
    if (!/"finish_reason":"(stop|length)"/.test(text)) assert.match(text, /model file changed on disk/);
    await expectChanged(srv);
    const e = await srv.stop();
    assert.equal(e.code, 0, `clean exit after SIGTERM: ${JSON.stringify(e)}; stderr: ${srv.err}`);
    assert.doesNotMatch(srv.err, /Sanitizer|runtime error/);
  });
});
