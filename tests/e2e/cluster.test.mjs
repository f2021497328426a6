// cluster.test.mjs -- three replicas on one PostgreSQL history behind nginx
// (scripts/cluster.sh, deploy/nginx.conf), with the tiny model:
//   - 12 users, two turns each: a conversation sticks to its replica, so
//     the second turn reuses the first one's KV cache;
//   - SIGKILL of the replica streaming a page's answer: the partial answer
//     is in the history, marked interrupted, and the next turn works on
//     another replica; nothing lost or duplicated;
//   - SIGTERM of a replica: its stream finishes, /health says draining,
//     new conversations go to the others, then it exits;
//   - PostgreSQL stopped and started under load: 503s while it is down,
//     work again after, every acknowledged write still there.
// Skipped, saying why, when the model, nginx or PostgreSQL is missing.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, MODEL, REL_BIN, sleep } from './serve_util.mjs';

const DIR = mkdtempSync(path.join(os.tmpdir(), 'smolbot-cluster-'));
let skip = false;
let URL_ = '';
if (!existsSync(MODEL)) skip = `no test model at ${MODEL}`;
else if (!REL_BIN) skip = 'smolbot is not built';
else {
  const r = spawnSync('bash', ['scripts/cluster.sh', 'start', '3', '-m', MODEL, '--dir', DIR, '--bin', REL_BIN, '--',
    '--kv-budget', '256', '--ctx', '4096', '--parallel', '12', '--drain-timeout', '30'], { cwd: ROOT, encoding: 'utf8', timeout: 180000 });
  if (r.status === 77) skip = `cannot start the cluster here: ${r.stderr.trim()}`;
  else if (r.status !== 0) throw new Error(`cluster.sh start failed (${r.status}): ${r.stderr}`);
  else URL_ = readFileSync(path.join(DIR, 'url'), 'utf8').trim();
}
if (skip) console.log(`# cluster tests skipped: ${skip}`);

function stopCluster() {
  if (!existsSync(DIR)) return;
  spawnSync('bash', ['scripts/cluster.sh', 'stop', '--dir', DIR], { cwd: ROOT, timeout: 60000 });
  rmSync(DIR, { recursive: true, force: true });
}
after(stopCluster);
process.on('exit', stopCluster);

const replicas = () => readFileSync(path.join(DIR, 'replicas'), 'utf8').trim().split('\n')
  .map((l) => l.split(' ').map(Number)).map(([port, pid]) => ({ port, pid }));
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };
// $upstream_addr lists every replica tried; the last one answered
const answeredBy = (res) => Number((res.headers.get('x-upstream') || '').split(',').pop().trim().split(':').pop());

async function chat(user, messages, max_tokens = 8) {
  const res = await fetch(URL_ + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', user, messages, max_tokens, temperature: 0 }),
  });
  const json = await res.json();
  return { res, json, port: answeredBy(res) };
}

const ui = (p, form) => fetch(URL_ + p, {
  method: 'POST', headers: { 'HX-Request': 'true', 'content-type': 'application/x-www-form-urlencoded' },
  body: form ? new URLSearchParams(form).toString() : '',
});
async function newConv() {
  const res = await ui('/ui/conversations');
  const html = await res.text();
  return { res, html, id: (/data-conv="([0-9a-f]{16})"/.exec(html) || [])[1] };
}
async function exportConv(id) {
  const res = await fetch(`${URL_}/ui/c/${id}/export?fmt=json`);
  return { res, json: res.status === 200 ? await res.json() : null };
}

test('12 users, two turns each: the second turn reuses its replica\'s cache', { skip }, async () => {
  const words = 'river stone lantern meadow copper violet harbor winter'.split(' ');
  const users = Array.from({ length: 12 }, (_, i) => `user-${i}`);
  const first = users.map((u, i) => `${u} asks: ${Array.from({ length: 40 }, (_, k) => words[(i * 7 + k * 3) % 8]).join(' ')}?`);
  const t1 = await Promise.all(users.map((u, i) => chat(u, [{ role: 'user', content: first[i] }])));
  for (const r of t1) assert.equal(r.res.status, 200);
  const t2 = await Promise.all(users.map((u, i) => chat(u, [
    { role: 'user', content: first[i] },
    { role: 'assistant', content: t1[i].json.choices[0].message.content },
    { role: 'user', content: 'And then?' }])));
  for (let i = 0; i < users.length; i++) {
    assert.equal(t2[i].res.status, 200);
    assert.equal(t2[i].port, t1[i].port, `${users[i]} moved between replicas`);
    const cached = t2[i].json.usage.prompt_tokens_details.cached_tokens;
    // the whole first prompt, not just the chat template's common start
    assert.ok(cached >= t1[i].json.usage.prompt_tokens - 1, `${users[i]}: ${cached} cached of a first prompt of ${t1[i].json.usage.prompt_tokens}`);
  }
  assert.ok(new Set(t1.map((r) => r.port)).size >= 2, 'the users all went to one replica');
});

test('SIGKILL of the replica streaming an answer: the conversation goes on elsewhere', { skip }, async () => {
  const { id } = await newConv();
  assert.ok(id);
  // greedy: the tiny model's answer is then a fixed ~3,200 tokens, seconds
  // long; a sampled one may end within the first second, before the kill
  const sent = await ui(`/ui/c/${id}/messages`, { text: 'Tell me a long story about a lighthouse.', max_tokens: '3800', thinking: '0', temperature: '0' });
  assert.equal(sent.status, 200);
  const victim = answeredBy(sent);
  const streamUrl = (/sse-connect="([^"]+)"/.exec(await sent.text()) || [])[1];
  assert.ok(streamUrl);
  const ac = new AbortController();
  let streamed = '';
  const reading = fetch(URL_ + streamUrl, { signal: ac.signal }).then(async (r) => {
    const dec = new TextDecoder();
    for await (const chunk of r.body) streamed += dec.decode(chunk, { stream: true });
  }).catch(() => {});
  // until the partial answer is in the history (saved every second)
  let saved = '';
  for (let t0 = Date.now(); Date.now() - t0 < 15000 && !saved; await sleep(50)) {
    const { json } = await exportConv(id);
    saved = json?.messages?.[1]?.content || '';
  }
  assert.ok(saved.length > 0, 'no partial answer saved');
  const v = replicas().find((r) => r.port === victim);
  process.kill(v.pid, 'SIGKILL');
  assert.doesNotMatch(streamed, /event: done/, 'the answer ended before the kill');
  for (let t0 = Date.now(); alive(v.pid) && Date.now() - t0 < 5000;) await sleep(50);
  ac.abort();
  await reading;
  // another replica answers for it: the partial answer kept, interrupted
  const ex = await exportConv(id);
  assert.equal(ex.res.status, 200);
  assert.notEqual(answeredBy(ex.res), victim);
  const a = ex.json.messages[1];
  assert.equal(a.status, 'partial');
  assert.equal(a.finish_reason, 'interrupted');
  assert.ok(a.content.startsWith(saved), 'the saved text was lost');
  // the page reconnecting to its stream is told it ended, and stops
  const again = await fetch(URL_ + streamUrl);
  assert.equal(again.status, 200);
  const evs = await again.text();
  assert.match(evs, /event: error\ndata: This answer was interrupted/);
  assert.match(evs, /event: done/);
  // the next turn works there
  const next = await ui(`/ui/c/${id}/messages`, { text: 'Go on.', max_tokens: '8', thinking: '0' });
  assert.equal(next.status, 200);
  assert.notEqual(answeredBy(next), victim);
  const su = (/sse-connect="([^"]+)"/.exec(await next.text()) || [])[1];
  const body = await (await fetch(URL_ + su)).text();
  assert.match(body, /event: done/);
  const end = await exportConv(id);
  const msgs = end.json.messages;
  assert.deepEqual(msgs.map((m) => m.role), ['user', 'assistant', 'user', 'assistant']);
  assert.equal(new Set(msgs.map((m) => m.id)).size, 4);
  assert.equal(msgs[3].status, 'done');
  assert.equal(msgs[2].parent, msgs[1].id);
});

test('SIGTERM drains a replica: its stream finishes, new conversations go elsewhere', { skip }, async () => {
  const live = replicas().filter((r) => alive(r.pid));
  assert.ok(live.length >= 2);
  const res = await fetch(URL_ + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'x', user: 'drain-me', stream: true, max_tokens: 600, temperature: 0, messages: [{ role: 'user', content: 'Count slowly.' }] }),
  });
  assert.equal(res.status, 200);
  const port = answeredBy(res);
  const r = live.find((x) => x.port === port);
  const reading = (async () => {
    let text = '';
    const dec = new TextDecoder();
    for await (const chunk of res.body) text += dec.decode(chunk, { stream: true });
    return text;
  })();
  process.kill(r.pid, 'SIGTERM');
  let health = null;
  for (let t0 = Date.now(); Date.now() - t0 < 5000; await sleep(50)) {
    const h = await fetch(`http://127.0.0.1:${port}/health`).catch(() => null);
    if (h && h.status === 503) { health = await h.json(); break; }
  }
  assert.equal(health?.status, 'draining');
  // new conversations: answered, by another replica
  const fresh = await Promise.all([0, 1, 2, 3, 4, 5].map((i) => chat(`new-${i}`, [{ role: 'user', content: `hello ${i}` }], 4)));
  for (const f of fresh) {
    assert.equal(f.res.status, 200);
    assert.notEqual(f.port, port);
  }
  const text = await reading;
  assert.match(text, /data: \[DONE\]/);
  assert.match(text, /"finish_reason":"(length|stop)"/);
  assert.doesNotMatch(text, /"error"/);
  for (let t0 = Date.now(); alive(r.pid) && Date.now() - t0 < 15000;) await sleep(100);
  assert.ok(!alive(r.pid), 'the drained replica did not exit');
});

test('PostgreSQL restarted under load: 503 while down, no acknowledged write lost', { skip }, async () => {
  const acked = [];
  const statuses = [];
  let stop = false;
  const load = (async () => {
    while (!stop) {
      const c = await newConv().catch(() => null);
      if (c) statuses.push(c.res.status);
      if (c && c.res.status === 200) {
        const s = await ui(`/ui/c/${c.id}/messages`, { text: `note ${acked.length}`, max_tokens: '2', thinking: '0' });
        statuses.push(s.status);
        const body = await s.text();
        if (s.status === 200) acked.push({ id: c.id, text: `note ${acked.length}` });
        else assert.match(body, /unavailable|draining/i);
      } else if (c) {
        assert.match(c.html, /unavailable/i);
      }
      await sleep(50);
    }
  })();
  await sleep(1000);
  const pgdir = path.join(DIR, 'pg');
  assert.equal(spawnSync('bash', ['tests/pg_util.sh', 'stop', pgdir], { cwd: ROOT }).status, 0);
  await sleep(1500);
  const down = statuses.length;
  assert.equal(spawnSync('bash', ['tests/pg_util.sh', 'up', pgdir], { cwd: ROOT }).status, 0);
  const up = statuses.length;
  for (let t0 = Date.now(); !statuses.slice(up).includes(200) && Date.now() - t0 < 15000;) await sleep(100);
  await sleep(1000);
  stop = true;
  await load;
  assert.ok(statuses.every((s) => s === 200 || s === 503), `statuses: ${[...new Set(statuses)]}`);
  assert.ok(statuses.slice(0, down).includes(503), 'no 503 while the database was down');
  assert.equal(statuses.at(-1), 200, 'not working again after the database came back');
  assert.ok(acked.length > 0);
  for (const a of acked) {
    const { res, json } = await exportConv(a.id);
    assert.equal(res.status, 200);
    assert.equal(json.messages[0].content, a.text);
  }
});
