// auth.test.mjs -- with --api-key the web page needs the key too.
//
// A server with a key serves a sign-in form at / (assets stay public), its
// /ui routes answer 401 until the form is posted with the right key, which
// sets an HttpOnly SameSite=Strict session cookie (not the key itself);
// Bearer works as well. A server without a key needs nothing.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
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
