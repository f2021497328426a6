// auth.test.mjs -- with --api-key the web page needs the key too.
//
// A server with a key serves a sign-in form at / (assets stay public), its
// /ui routes answer 401 until the form is posted with the right key, which
// sets an HttpOnly SameSite=Strict session cookie (not the key itself);
// Bearer works as well. A server without a key needs nothing.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { MODEL, SAN_BIN, startServer, stopAll } from './serve_util.mjs';

const why = !existsSync(MODEL) ? `model absent: ${MODEL}` : !SAN_BIN ? 'no smolbot binary' : false;
after(async () => { await stopAll(); });

test('the page and its routes need the API key', { skip: why }, async () => {
  const s = await startServer(SAN_BIN, ['-m', MODEL, '--no-db', '--api-key', 'k3y-s3cret']);
  const page = await fetch(s.url + '/');
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /action="\/ui\/login"/);
  assert.doesNotMatch(html, /htmx/);
  assert.equal((await fetch(s.url + '/app.css')).status, 200);
  assert.equal((await fetch(s.url + '/ui/status')).status, 401);
  assert.equal((await fetch(s.url + '/ui/conversations')).status, 401);

  const post = (key) => fetch(s.url + '/ui/login', { method: 'POST', redirect: 'manual',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'key=' + encodeURIComponent(key) });
  for (const wrong of ['', 'k3y-s3cre', 'k3y-s3crex', 'K3Y-S3CRET']) {
    const r = await post(wrong);
    assert.equal(r.status, 401, `key ${JSON.stringify(wrong)}`);
    assert.equal(r.headers.get('set-cookie'), null);
  }
  const ok = await post('k3y-s3cret');
  assert.equal(ok.status, 303);
  const cookie = ok.headers.get('set-cookie');
  assert.match(cookie, /^smolbot_session=[0-9a-f]{32}; HttpOnly; SameSite=Strict; Path=\//);
  assert.doesNotMatch(cookie, /k3y/);
  const session = cookie.split(';')[0];
  const st = await fetch(s.url + '/ui/status', { headers: { Cookie: session } });
  assert.equal(st.status, 200);
  assert.equal((await fetch(s.url + '/', { headers: { Cookie: session } })).status, 200);
  assert.match(await (await fetch(s.url + '/', { headers: { Cookie: session } })).text(), /htmx/);
  assert.equal((await fetch(s.url + '/ui/status', { headers: { Cookie: 'smolbot_session=' + '0'.repeat(32) } })).status, 401);
  assert.equal((await fetch(s.url + '/ui/status', { headers: { Authorization: 'Bearer k3y-s3cret' } })).status, 200);
  /* the API itself still wants the bearer key, not the cookie */
  assert.equal((await fetch(s.url + '/v1/models', { headers: { Cookie: session } })).status, 401);
});

test('without a key the page is open (loopback default)', { skip: why }, async () => {
  const s = await startServer(SAN_BIN, ['-m', MODEL, '--no-db']);
  assert.equal((await fetch(s.url + '/ui/status')).status, 200);
  assert.match(await (await fetch(s.url + '/')).text(), /htmx/);
});

// A POST to /ui/login or /ui/logout from source address `from` (loopback
// holds all of 127/8: each address is a separate client for the back-off).
function post(s, p, body, { from = '127.0.0.1', headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: s.port, path: p, method: 'POST', localAddress: from,
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', 'Content-Length': Buffer.byteLength(body), ...headers } },
    (res) => { res.resume(); res.on('end', () => resolve(res)); });
    req.on('error', reject);
    req.end(body);
  });
}
const sid = (res) => (res.headers['set-cookie'] || [''])[0].split(';')[0];

test('one session per sign-in; sign-out ends only that one', { skip: why }, async () => {
  const s = await startServer(SAN_BIN, ['-m', MODEL, '--no-db', '--api-key', 'k3y-s3cret']);
  const a = await post(s, '/ui/login', 'key=k3y-s3cret'), b = await post(s, '/ui/login', 'key=k3y-s3cret');
  assert.equal(a.statusCode, 303);
  assert.match(a.headers['set-cookie'][0], /; Max-Age=\d+/);
  assert.notEqual(sid(a), sid(b), 'each browser its own session');
  const st = (c) => fetch(s.url + '/ui/status', { headers: { Cookie: c } }).then((r) => r.status);
  assert.equal(await st(sid(a)), 200);
  assert.equal(await st(sid(b)), 200);
  const out = await post(s, '/ui/logout', '', { headers: { Cookie: sid(a), Origin: s.url } });
  assert.equal(out.statusCode, 303);
  assert.match(out.headers['set-cookie'][0], /^smolbot_session=; .*Max-Age=0/);
  assert.equal(await st(sid(a)), 401, 'signed out');
  assert.equal(await st(sid(b)), 200, 'the other browser stays signed in');
  /* the page carries a sign-out button */
  assert.match(await (await fetch(s.url + '/', { headers: { Cookie: sid(b) } })).text(), /action="\/ui\/logout"/);
});

test('sign-in: same origin only, rate limited per client and overall', { skip: why }, async () => {
  const s = await startServer(SAN_BIN, ['-m', MODEL, '--no-db', '--api-key', 'k3y-s3cret']);
  for (const h of [{ Origin: 'http://evil.example' }, { Origin: 'null' }, { 'Sec-Fetch-Site': 'cross-site' }]) {
    const r = await post(s, '/ui/login', 'key=k3y-s3cret', { headers: h });
    assert.equal(r.statusCode, 403, JSON.stringify(h));
    assert.equal(r.headers['set-cookie'], undefined);
  }
  assert.equal((await post(s, '/ui/login', 'key=k3y-s3cret', { headers: { Origin: s.url, 'Sec-Fetch-Site': 'same-origin' } })).statusCode, 303);
  /* guessing: a few wrong keys are answered, then 429 with Retry-After, even for the right key */
  const codes = [];
  const t0 = Date.now();
  for (let i = 0; i < 40; i++) codes.push((await post(s, '/ui/login', 'key=guess' + i, { from: '127.0.0.3' })).statusCode);
  const answered = codes.filter((c) => c === 401).length;
  console.log(`# 40 guesses in ${Date.now() - t0} ms: ${answered} answered 401, ${codes.filter((c) => c === 429).length} refused 429`);
  assert.ok(answered >= 5 && answered <= 7, codes.join(' '));
  const locked = await post(s, '/ui/login', 'key=k3y-s3cret', { from: '127.0.0.3' });
  assert.equal(locked.statusCode, 429);
  assert.ok(Number(locked.headers['retry-after']) >= 1, 'Retry-After');
  assert.equal(locked.headers['set-cookie'], undefined);
  /* another client is not locked out by the first */
  assert.equal((await post(s, '/ui/login', 'key=k3y-s3cret', { from: '127.0.0.4' })).statusCode, 303);
  /* many addresses together hit the overall limit */
  const spread = [];
  for (let i = 0; i < 40; i++) spread.push((await post(s, '/ui/login', 'key=x', { from: `127.0.1.${i + 1}` })).statusCode);
  assert.ok(spread.includes(429), spread.join(' '));
  assert.ok(spread.filter((c) => c === 401).length <= 20, spread.join(' '));
});

test('the key from a file or the environment, not only argv', { skip: why }, async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'smolbot-key-'));
  try {
    const f = path.join(dir, 'key');
    writeFileSync(f, 'f1le-k3y\n', { mode: 0o600 });
    const s = await startServer(SAN_BIN, ['-m', MODEL, '--no-db', '--api-key-file', f]);
    const bearer = (k) => fetch(s.url + '/v1/models', { headers: { Authorization: 'Bearer ' + k } }).then((r) => r.status);
    assert.equal(await bearer('f1le-k3y'), 200);
    assert.equal(await bearer('f1le-k3'), 401);
    assert.doesNotMatch(readFileSync(`/proc/${s.pid}/cmdline`, 'utf8'), /f1le-k3y/);
    const e = await startServer(SAN_BIN, ['-m', MODEL, '--no-db'], { env: { SMOLBOT_API_KEY: 'env-k3y' } });
    assert.equal(await fetch(e.url + '/v1/models').then((r) => r.status), 401);
    assert.equal(await fetch(e.url + '/v1/models', { headers: { Authorization: 'Bearer env-k3y' } }).then((r) => r.status), 200);
    writeFileSync(f, '\n');
    for (const bad of [f, path.join(dir, 'none')]) {
      const r = spawnSync(SAN_BIN, ['serve', '--port', '0', '--no-db', '--api-key-file', bad], { encoding: 'utf8', timeout: 60000 });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /api-key-file/);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
