// faults.test.mjs -- the server against its files changing under it.
//
// The model file truncated while the server uses it (a plain `cp` over the
// file truncates it first): the server must stay up, fail the requests
// that hit the change with a clear error ("the model file changed on
// disk"), say so on /health, refuse new requests, and end cleanly on
// SIGTERM with nothing from the sanitizers. Each server runs on a copy of
// the tiny model in a temp dir.
//
// The history on a full or read-only file system (a small tmpfs: root
// only, as in CI; skipped otherwise): writes answer 507 "the disk is full",
// a failed import is not a 400, deleting works, an answer whose save failed
// says so, and on a read-only remount the server starts with the history
// readable and a "read-only" banner instead of "History is off".
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, truncateSync, chmodSync, unlinkSync,
  writeSync } from 'node:fs';
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

// ---- the disk -------------------------------------------------------------

let fsDir = null;
function mountSmallFs() {
  if (SKIP || process.getuid?.() !== 0) return null;
  const d = path.join(dir, 'fs');
  mkdirSync(d, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', d], { stdio: 'ignore' });
  } catch {
    return null;
  }
  return d;
}
const FS_SKIP = SKIP || ((fsDir = mountSmallFs()) ? false : 'cannot mount a tmpfs (needs root)');
if (FS_SKIP && !SKIP) console.log(`# SKIP disk tests: ${FS_SKIP}`);

function fillFs(name) {
  const fd = openSync(path.join(fsDir, name), 'a');
  const zeros = Buffer.alloc(65536);
  for (let chunk = zeros.length; chunk >= 512; chunk >>= 1) {
    for (;;) {
      try { writeSync(fd, zeros, 0, chunk); } catch { break; }
    }
  }
  closeSync(fd);
}
const HX = { 'HX-Request': 'true' };
function exportOf(n, size) {
  const messages = [];
  for (let i = 1; i <= n; i++)
    messages.push({ id: i, parent: i > 1 ? i - 1 : null, role: i % 2 ? 'user' : 'assistant', content: `m${i} ` + 'x'.repeat(size) });
  return JSON.stringify({ format: 'smolbot-conversation', version: 1, conversation: { title: 'filler' }, messages });
}
const importConv = (srv, body) => fetch(srv.url + '/ui/import', { method: 'POST', headers: { ...HX, 'Content-Type': 'application/json' }, body });

after(async () => {
  await stopAll();
  if (fsDir) try { execFileSync('umount', ['-l', fsDir], { stdio: 'ignore' }); } catch { /* already gone */ }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('history on a full or read-only disk', { skip: FS_SKIP, timeout: 180000 }, () => {

  test('full disk: 507 with the reason, import not a 400, delete frees room, unsaved answer says so', async (t) => {
    const db = path.join(fsDir, 'h.db');
    const srv = await startServer(SAN_BIN, ['-m', modelCopy('disk.gguf'), '--db', db]);
    const first = await importConv(srv, exportOf(100, 8000));
    assert.equal(first.status, 200);
    const id = (await first.text()).match(/data-conv="([0-9a-f]{16})"/)[1];
    // a conversation with an answer on its way, started while there is room
    const chatId = (await (await importConv(srv, exportOf(1, 10))).text()).match(/data-conv="([0-9a-f]{16})"/)[1];
    fillFs('fill1');
    let r, body, tries = 0;
    do { // the WAL file may still hold a write or two
      r = await importConv(srv, exportOf(20, 8000));
      body = await r.text();
    } while (r.status === 200 && ++tries < 40);
    assert.equal(r.status, 507, body);
    assert.match(body, /disk is full/);
    const list = await fetch(srv.url + '/ui/conversations', { headers: HX });
    assert.equal(list.status, 200);
    assert.match(await list.text(), new RegExp(id));
    const del = await fetch(srv.url + `/ui/c/${id}`, { method: 'DELETE', headers: HX });
    assert.equal(del.status, 200, await del.text());
    // room again for a question; the disk fills while its answer streams
    const send = await fetch(srv.url + `/ui/c/${chatId}/messages`, {
      method: 'POST', headers: { ...HX, 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'text=tell+me+a+long+story&max_tokens=300',
    });
    const page = await send.text();
    if (send.status === 200) {
      const stream = page.match(/sse-connect="([^"]+)"/)[1];
      fillFs('fill3');
      const sse = await (await fetch(srv.url + stream, { headers: HX })).text();
      assert.match(sse, /event: done/);
      assert.match(sse, /not saved/);
      t.diagnostic('the answer ended with "not saved"');
    } else {
      assert.equal(send.status, 507, page); // no room even for the question: said as much
      t.diagnostic('no room for the question: 507');
    }
    const e = await srv.stop();
    assert.equal(e.code, 0, `clean exit: ${srv.err}`);
    assert.doesNotMatch(srv.err, /Sanitizer|runtime error/);
    for (const f of ['fill1', 'fill2', 'fill3']) try { unlinkSync(path.join(fsDir, f)); } catch { /* not made */ }
  });

  test('read-only file system: the history is readable, with a banner', async () => {
    const db = path.join(fsDir, 'h.db');
    await stopAll(); // nothing may hold a file open for writing on it
    execFileSync('mount', ['-o', 'remount,ro', fsDir]);
    const srv = await startServer(SAN_BIN, ['-m', modelCopy('ro.gguf'), '--db', db]);
    const list = await (await fetch(srv.url + '/ui/conversations', { headers: HX })).text();
    assert.match(list, /History is read-only/, srv.err);
    assert.match(list, /data-conv="[0-9a-f]{16}"/);
    assert.doesNotMatch(list, /History is off/);
    const r = await importConv(srv, exportOf(1, 10));
    assert.equal(r.status, 503);
    assert.match(await r.text(), /read-only/);
    const e = await srv.stop();
    assert.equal(e.code, 0, `clean exit: ${srv.err}`);
  });
});
