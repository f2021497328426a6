// registry.test.mjs -- several models on one server (`serve --models-dir`),
// end to end over loopback HTTP: the official `ollama` client (list, show,
// chat streaming and not, generate, ps, keep_alive), the `openai` client
// choosing each model by name, a second model answering while the first
// streams, a memory budget that fits one model at a time (alternating
// requests load and unload them, a model with a running stream is never
// unloaded), a stream whose model is loading (chat or legacy completion:
// ": ping"s first, a client leaving mid-load gives its hold back), and
// the page in headless Chromium (the picker, /model NAME, the label
// naming the model under each answer).
//
// The models directory is temporary: links to ../shared's tiny models, one
// written by `smolbot gen-model`, and a file that is not a GGUF (listed as
// unsupported, never fatal). Skips with a message without ../shared.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import * as util from './serve_util.mjs';

const BIN = process.env.SMOLBOT_BIN || util.SAN_BIN;
const SHARED = path.resolve(util.ROOT, '../shared/models');
const FILES = ['smollm3-tiny-q4_k_m', 'smollm3-tiny-f32', 'llama-tiny', 'qwen3-tiny'];
const SKIP = !BIN ? 'no smolbot binary: run make'
  : FILES.some((f) => !existsSync(path.join(SHARED, f + '.gguf'))) ? `tiny models absent in ${SHARED}` : false;
if (SKIP) console.log(`# SKIP registry tests: ${SKIP}`);
const CHROME = '/usr/bin/chromium';
const ART = path.join(util.ROOT, 'tests/e2e/artifacts');

const tmp = SKIP ? null : mkdtempSync(path.join(os.tmpdir(), 'smolbot-registry-'));
const greedy = { temperature: 0, seed: 7, num_predict: 8 };
const hello = [{ role: 'user', content: 'Say hello.' }];

after(async () => {
  for (const { end, err } of await util.stopAll()) {
    assert.doesNotMatch(err, /Sanitizer|runtime error/, err);
    assert.deepEqual(end, { code: 0, signal: null }, err);
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/* dir with links to the given shared files, plus extra(dir). */
function modelsDir(name, files, extra) {
  const d = path.join(tmp, name);
  mkdirSync(d);
  for (const f of files) symlinkSync(path.join(SHARED, f + '.gguf'), path.join(d, f + '.gguf'));
  if (extra) extra(d);
  return d;
}

async function req(s, method, p, body) {
  const r = await fetch(s.url + p, {
    method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* NDJSON or text */ }
  return { status: r.status, text, json };
}

const loadedNames = async (ol) => (await ol.ps()).models.map((m) => m.name.replace(/:latest$/, '')).sort();

describe('several models', { skip: SKIP }, () => {
  let s, ol, oa, dir;
  before(async () => {
    dir = modelsDir('all', FILES, (d) => {
      const g = spawnSync(BIN, ['gen-model', '--preset', 'tiny', '--quant', 'q8_0', '--seed', '3', '--vocab-from',
        path.join(SHARED, 'smollm3-tiny-q4_k_m.gguf'), '-o', path.join(d, 'gen-tiny.gguf')], { encoding: 'utf8' });
      assert.equal(g.status, 0, g.stderr);
      writeFileSync(path.join(d, 'broken.gguf'), 'this is not a model file');
    });
    s = await util.startServer(BIN, ['--models-dir', dir, '--no-db', '--ctx', '512', '--alias', 'tiny=smollm3-tiny-q4_k_m',
      '--keep-alive', '5m']);
    ol = new Ollama({ host: s.url });
    oa = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none' });
  });

  test('the banner lists every model; the unsupported one with its reason', async () => {
    for (let i = 0; i < 100 && !/database/.test(s.out); i++) await util.sleep(50);
    assert.match(s.out, /smolbot ready \(7 models, loaded on demand\)/);
    assert.match(s.out, /broken\s+unsupported: .*not a GGUF/);
    assert.match(s.out, /tiny\s+= smollm3-tiny-q4_k_m/);
  });

  test('/v1/models: every name, its context, quant and whether it is loaded', async () => {
    const r = await req(s, 'GET', '/v1/models');
    assert.equal(r.status, 200);
    const ids = r.json.data.map((m) => m.id);
    assert.deepEqual(ids, ['broken', 'gen-tiny', 'llama-tiny', 'qwen3-tiny', 'smollm3-tiny-f32', 'smollm3-tiny-q4_k_m', 'tiny']);
    for (const m of r.json.data) {
      assert.equal(m.owned_by, 'smolbot');
      assert.equal(m.meta.loaded, false);
      assert.ok(m.meta.n_ctx > 0);
    }
    const broken = r.json.data.find((m) => m.id === 'broken');
    assert.equal(broken.meta.supported, false);
    assert.match(broken.meta.reason, /not a GGUF/);
    assert.equal(r.json.data.find((m) => m.id === 'smollm3-tiny-f32').meta.quant, 'F32');
    assert.equal(r.json.data.find((m) => m.id === 'tiny').meta.alias_of, 'smollm3-tiny-q4_k_m');
  });

  test('ollama list() and show(): without loading anything', async () => {
    const names = (await ol.list()).models.map((m) => m.name);
    assert.ok(names.includes('gen-tiny:latest') && names.includes('qwen3-tiny:latest'), names.join());
    assert.ok(!names.includes('broken:latest'));
    const sh = await ol.show({ model: 'smollm3-tiny-f32' });
    assert.equal(sh.details.quantization_level, 'F32');
    assert.equal(sh.model_info['general.architecture'], 'smollm3');
    const q = await ol.show({ model: 'qwen3-tiny:latest' });
    assert.equal(q.details.family, 'qwen3');
    assert.deepEqual(await loadedNames(ol), []);
    const miss = await req(s, 'POST', '/api/show', { model: 'nope' });
    assert.equal(miss.status, 404);
    assert.match(miss.json.error, /not found/);
  });

  test('chat() loads on demand: load_duration real the first time, 0 after; durations in ns', async () => {
    const a = await ol.chat({ model: 'gen-tiny', messages: hello, options: greedy, stream: false });
    assert.equal(a.done, true);
    assert.ok(a.load_duration > 1e6, `load_duration ${a.load_duration}`);
    assert.ok(a.total_duration >= a.load_duration);
    assert.ok(a.eval_count > 0 && a.eval_duration > 0 && a.prompt_eval_count > 0 && a.prompt_eval_duration > 0);
    const b = await ol.chat({ model: 'gen-tiny', messages: hello, options: greedy, stream: false });
    assert.equal(b.load_duration, 0);
    assert.equal(b.message.content, a.message.content); /* greedy, same model */
    assert.deepEqual(await loadedNames(ol), ['gen-tiny']);
  });

  test('chat() streaming and generate() on other models; ps() lists them with expires_at', async () => {
    let text = '', last = null;
    for await (const part of await ol.chat({ model: 'llama-tiny', messages: hello, options: greedy, stream: true })) {
      text += part.message.content;
      last = part;
    }
    assert.equal(last.done, true);
    assert.ok(last.load_duration > 0 && last.eval_count > 0);
    const g = await ol.generate({ model: 'qwen3-tiny', prompt: 'Once upon a time', options: greedy, stream: false, think: false });
    assert.equal(g.done, true);
    assert.ok(g.response.length > 0);
    const ps = await ol.ps();
    const names = ps.models.map((m) => m.name);
    for (const n of ['gen-tiny:latest', 'llama-tiny:latest', 'qwen3-tiny:latest']) assert.ok(names.includes(n), names.join());
    for (const m of ps.models) {
      assert.ok(m.size > 0);
      const left = new Date(m.expires_at).getTime() - Date.now();
      assert.ok(left > 200e3 && left <= 300e3 + 2e3, `expires in ${left} ms`);
    }
    assert.equal((await req(s, 'GET', '/api/version')).json.version.split('.').length, 3);
  });

  test('a second model answers while the first streams', async () => {
    const stream = await ol.chat({ model: 'qwen3-tiny', messages: hello, options: { ...greedy, num_predict: 120 }, stream: true, think: false });
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next(); /* streaming now */
    assert.equal(first.done, false);
    const other = await ol.chat({ model: 'smollm3-tiny-f32', messages: hello, options: greedy, stream: false });
    assert.equal(other.done, true);
    assert.ok(other.eval_count > 0);
    let last = first.value, parts = 1;
    for (let r = await it.next(); !r.done; r = await it.next()) { last = r.value; parts++; }
    assert.equal(last.done, true);
    assert.ok(parts > 2);
  });

  test('the openai client chooses each model by name', async () => {
    for (const model of ['gen-tiny', 'llama-tiny', 'qwen3-tiny', 'smollm3-tiny-f32', 'smollm3-tiny-q4_k_m', 'tiny']) {
      const c = await oa.chat.completions.create({ model, messages: hello, max_tokens: 4, temperature: 0 });
      assert.equal(c.model, model);
      assert.ok(c.usage.completion_tokens > 0, model);
    }
    let chunks = 0, model = null;
    for await (const ch of await oa.chat.completions.create({ model: 'llama-tiny', messages: hello, max_tokens: 4, stream: true })) {
      chunks++;
      model = ch.model;
    }
    assert.ok(chunks > 1);
    assert.equal(model, 'llama-tiny');
    await assert.rejects(oa.chat.completions.create({ model: 'nope', messages: hello, max_tokens: 2 }),
      (e) => e.status === 404 && e.code === 'model_not_found');
  });

  test('the alias and its file share one engine: ps lists it once, both names are loaded', async () => {
    const names = (await ol.ps()).models.map((m) => m.name);
    assert.ok(names.includes('smollm3-tiny-q4_k_m:latest') && !names.includes('tiny:latest'), names.join());
    const data = (await req(s, 'GET', '/v1/models')).json.data;
    assert.equal(data.find((m) => m.id === 'tiny').meta.loaded, true);
    assert.equal(data.find((m) => m.id === 'tiny').meta.mem_bytes, data.find((m) => m.id === 'smollm3-tiny-q4_k_m').meta.mem_bytes);
  });

  test('keep_alive 0 unloads after the request; a load-only request with keep_alive 0 unloads now', async () => {
    await ol.generate({ model: 'llama-tiny', prompt: 'hi', options: greedy, keep_alive: 0, stream: false });
    let gone = false;
    for (let i = 0; i < 50 && !gone; i++) {
      gone = !(await loadedNames(ol)).includes('llama-tiny');
      if (!gone) await util.sleep(100);
    }
    assert.ok(gone, 'llama-tiny still loaded');
    const u = await req(s, 'POST', '/api/generate', { model: 'gen-tiny', keep_alive: 0 });
    assert.equal(u.json.done_reason, 'unload');
    assert.ok(!(await loadedNames(ol)).includes('gen-tiny'));
    const bad = await req(s, 'POST', '/api/generate', { model: 'gen-tiny', keep_alive: '5 minutes' });
    assert.equal(bad.status, 400);
    const k = await req(s, 'POST', '/api/generate', { model: 'gen-tiny', keep_alive: '1h30m' });
    assert.equal(k.json.done_reason, 'load');
    const left = new Date((await ol.ps()).models.find((m) => m.name === 'gen-tiny:latest').expires_at).getTime() - Date.now();
    assert.ok(left > 5300e3 && left <= 5400e3 + 2e3, `expires in ${left} ms`);
  });

  test('errors: unknown model 404, unsupported file refused with the reason, the server goes on', async () => {
    const a = await req(s, 'POST', '/api/chat', { model: 'nope', messages: hello });
    assert.equal(a.status, 404);
    assert.match(a.json.error, /model "nope" not found/);
    const b = await req(s, 'POST', '/api/chat', { model: 'broken', messages: hello, stream: false });
    assert.equal(b.status, 500);
    assert.match(b.json.error, /cannot be served: .*not a GGUF/);
    const c = await req(s, 'POST', '/v1/chat/completions', { model: 'broken', messages: hello });
    assert.equal(c.status, 400);
    assert.equal((await req(s, 'GET', '/health')).status, 200);
  });
});

describe('a budget that fits one model', { skip: SKIP }, () => {
  let s, ol;
  before(async () => {
    /* q4 (~35 MiB) and gen (~44 MiB): 60 MiB holds either, not both */
    const dir = modelsDir('budget', ['smollm3-tiny-q4_k_m'], (d) => {
      const g = spawnSync(BIN, ['gen-model', '--preset', 'tiny', '--quant', 'q8_0', '--seed', '5', '--vocab-from',
        path.join(SHARED, 'smollm3-tiny-q4_k_m.gguf'), '-o', path.join(d, 'gen.gguf')], { encoding: 'utf8' });
      assert.equal(g.status, 0, g.stderr);
    });
    s = await util.startServer(BIN, ['--models-dir', dir, '--no-db', '--ctx', '1024', '--kv-budget', '8', '--mem-budget', '60']);
    ol = new Ollama({ host: s.url });
  });

  test('alternating requests load and unload them; every answer completes', async () => {
    let prev = null;
    for (const model of ['gen', 'smollm3-tiny-q4_k_m', 'gen', 'smollm3-tiny-q4_k_m']) {
      const r = await ol.chat({ model, messages: hello, options: greedy, stream: false });
      assert.equal(r.done, true);
      assert.ok(r.eval_count > 0);
      assert.ok(r.load_duration > 0, `${model} was loaded again`);
      assert.deepEqual(await loadedNames(ol), [model]);
      if (prev) assert.notEqual(prev, model);
      prev = model;
    }
  });

  test('a model with a running stream is not unloaded: the other waits, both complete', async () => {
    const stream = await ol.chat({ model: 'gen', messages: hello, options: { ...greedy, num_predict: 150 }, stream: true });
    const it = stream[Symbol.asyncIterator]();
    assert.equal((await it.next()).done, false);
    const t0 = Date.now();
    const other = ol.chat({ model: 'smollm3-tiny-q4_k_m', messages: hello, options: greedy, stream: false });
    await util.sleep(300);
    assert.deepEqual(await loadedNames(ol), ['gen']); /* still streaming: not unloaded for the other */
    let last = null;
    for (let r = await it.next(); !r.done; r = await it.next()) last = r.value;
    assert.equal(last.done, true);
    assert.equal(last.done_reason, 'length');
    assert.equal(last.eval_count, 150);
    const o = await other;
    assert.equal(o.done, true);
    assert.ok(o.load_duration > 0 && o.total_duration / 1e6 <= Date.now() - t0 + 50);
    assert.deepEqual(await loadedNames(ol), ['smollm3-tiny-q4_k_m']);
  });
});

/* A 3B-shaped file takes seconds to load (its weights are repacked), so a
 * stream naming it while it is not loaded sees the wait. The benchmarks'
 * cached file when there is one, else written here (~2 GB, ~10 s). */
const BIG_CACHED = path.join(os.homedir(), '.cache/smolbot/bench/smollm3-3b-q4_k_m-random.gguf');

/* The SSE text of a raw streaming chat (or route's completion); onText sees it as it grows. */
async function rawStream(s, body, { signal, onText, route = '/v1/chat/completions' } = {}) {
  const r = await fetch(s.url + route, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }), signal,
  });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /text\/event-stream/);
  const dec = new TextDecoder();
  let text = '';
  for await (const chunk of r.body) {
    text += dec.decode(chunk, { stream: true });
    if (onText && onText(text)) break;
  }
  return text;
}

describe('a request while its model loads', { skip: SKIP }, () => {
  let s, ol, oa;
  before(async () => {
    const dir = modelsDir('loading', ['smollm3-tiny-q4_k_m'], (d) => {
      if (existsSync(BIG_CACHED)) return symlinkSync(BIG_CACHED, path.join(d, 'big.gguf'));
      const g = spawnSync(BIN, ['gen-model', '--preset', '3b', '--quant', 'q4_k_m', '--vocab-from',
        path.join(SHARED, 'smollm3-tiny-q4_k_m.gguf'), '-o', path.join(d, 'big.gguf')], { encoding: 'utf8' });
      assert.equal(g.status, 0, g.stderr);
    });
    /* 1000 MB: the big file alone is over it (it loads anyway), so each load unloads the other.
     * Prompt chunks of 8 rows: a stream left during big's prompt is cancelled at the next
     * chunk (under the sanitizers a 3B row takes about a second), not after the whole prompt. */
    s = await util.startServer(BIN, ['--models-dir', dir, '--no-db', '--ctx', '256', '--mem-budget', '1000', '--batch', '8']);
    ol = new Ollama({ host: s.url });
    oa = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none' });
  });
  const tiny = 'smollm3-tiny-q4_k_m';
  const short = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1, temperature: 0 };
  const loadTiny = async () => {
    const r = await ol.chat({ model: tiny, messages: hello, options: { ...greedy, num_predict: 1 }, stream: false });
    assert.equal(r.done, true);
    assert.deepEqual(await loadedNames(ol), [tiny]);
  };

  /* Each stream is left after its first chunk (the role, sent before the
   * prompt is read): the load is what is under test, and a 3B prefill
   * under the sanitizers would take minutes. */
  /* A stream for big (not loaded) to its first chunk, then left: it must
   * start at once and carry ": ping"s before that chunk. The chunk's text. */
  async function pingsThenFirstChunk(body, route) {
    await loadTiny();
    const ac = new AbortController();
    const t0 = Date.now();
    let tFirst = 0, text = '';
    await assert.rejects(rawStream(s, { model: 'big', ...body }, {
      route, signal: ac.signal,
      onText: (t) => {
        if (!tFirst) tFirst = Date.now();
        text = t;
        if (/^data: /m.test(t)) ac.abort();
      },
    }));
    const firstData = text.search(/^data: /m);
    assert.ok(firstData > 0, text);
    assert.match(text.slice(0, firstData), /^: ping$/m, `no ping before the first chunk after ${Date.now() - t0} ms`);
    assert.ok(tFirst - t0 < 1000, `the response started after ${tFirst - t0} ms`);
    return text.slice(firstData);
  }

  test('the stream starts at once and carries ": ping"s until the model is loaded', { timeout: 300000 }, async () => {
    assert.match(await pingsThenFirstChunk(short), /"model":"big".*"role":"assistant"/);
  });

  test('the openai client parses such a stream', { timeout: 300000 }, async () => {
    await loadTiny();
    const stream = await oa.chat.completions.create({ model: 'big', ...short, stream: true });
    for await (const c of stream) {
      assert.equal(c.model, 'big');
      assert.equal(c.choices[0].delta.role, 'assistant');
      break; /* leaving cancels the rest */
    }
  });

  test('an Ollama stream whose model loads is NDJSON only', { timeout: 300000 }, async () => {
    assert.deepEqual(await loadedNames(ol), ['big']);
    const r = await fetch(s.url + '/api/chat', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: tiny, messages: hello, options: { ...greedy, num_predict: 2 } }),
    });
    const lines = (await r.text()).split('\n').filter(Boolean);
    for (const line of lines) JSON.parse(line);
    assert.equal(JSON.parse(lines.at(-1)).done, true);
    assert.deepEqual(await loadedNames(ol), [tiny]);
  });

  test('a client that leaves during the load gives its hold back: the model can be unloaded', { timeout: 300000 }, async () => {
    await loadTiny();
    const ac = new AbortController();
    let text = '';
    const st = rawStream(s, { model: 'big', ...short }, { signal: ac.signal, onText: (t) => { text = t; } });
    /* tiny unloaded: the load of big has begun (it may first wait for tiny's last job to let go) */
    for (let i = 0; i < 600 && (await loadedNames(ol)).includes(tiny); i++) await util.sleep(50);
    ac.abort();
    await assert.rejects(st);
    assert.doesNotMatch(text, /^data: /m, 'the load ended before the client left');
    /* the load goes on (not wasted) and ends with no hold: loading tiny unloads it again */
    let names = [];
    for (let i = 0; i < 600; i++) {
      names = await loadedNames(ol);
      if (names.includes('big')) break;
      await util.sleep(100);
    }
    assert.ok(names.includes('big'), `big never finished loading: ${names}`);
    await loadTiny();
    assert.equal((await ol.ps()).models.length, 1);
  });

  test('/v1/completions streams the same way: ": ping"s during the load, then the answer', { timeout: 300000 }, async () => {
    /* echo: the prompt's chunk goes out before any 3B decoding, right after the load */
    const first = await pingsThenFirstChunk({ prompt: 'Hi', max_tokens: 1, echo: true, temperature: 0 }, '/v1/completions');
    assert.match(first, /"object":"text_completion".*"model":"big".*"text":"Hi"/);
    /* tiny was unloaded for big: its completion waits for that load to end and for its own, then completes */
    const full = await rawStream(s, { model: tiny, prompt: 'Hello', max_tokens: 4, temperature: 0 }, { route: '/v1/completions' });
    assert.doesNotMatch(full, /"error"/, full);
    const chunks = full.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6));
    assert.equal(chunks.at(-1), '[DONE]');
    const last = JSON.parse(chunks.at(-2));
    assert.equal(last.model, tiny);
    assert.equal(last.choices[0].finish_reason, 'length');
    assert.ok(chunks.slice(0, -2).map((c) => JSON.parse(c).choices[0].text).join('').length > 0, full);
  });
});

describe('/api/pull into the models directory', { skip: SKIP }, () => {
  let s, ol, hf;
  before(async () => {
    /* tests/pull_server.mjs: a Hugging Face look-alike serving the tiny model */
    hf = spawn('node', [path.join(util.ROOT, 'tests/pull_server.mjs'), path.join(SHARED, 'smollm3-tiny-q4_k_m.gguf'),
      path.join(tmp, 'hf.log')], { stdio: ['ignore', 'pipe', 'inherit'] });
    const port = await new Promise((res) => hf.stdout.once('data', (d) => res(String(d).trim().split('\n')[0])));
    const dir = modelsDir('pull', ['qwen3-tiny']);
    s = await util.startServer(BIN, ['--models-dir', dir, '--no-db', '--ctx', '512'],
      { env: { HF_ENDPOINT: `http://127.0.0.1:${port}`, HF_TOKEN: '' } });
    ol = new Ollama({ host: s.url });
  });
  after(() => { if (hf) hf.kill(); });

  test('pull() streams progress, the new file is listed and answers', async () => {
    const statuses = [];
    let sawBytes = false;
    for await (const p of await ol.pull({ model: 'test/tiny/tiny.gguf', stream: true })) {
      statuses.push(p.status);
      if (p.total > 0 && p.completed === p.total) sawBytes = true;
    }
    assert.equal(statuses[0], 'pulling manifest');
    assert.equal(statuses.at(-1), 'success');
    assert.ok(sawBytes, statuses.join());
    assert.ok((await ol.list()).models.some((m) => m.name === 'tiny:latest'));
    const r = await ol.chat({ model: 'tiny', messages: hello, options: greedy, stream: false });
    assert.ok(r.eval_count > 0);
    const again = await ol.pull({ model: 'tiny', stream: false });
    assert.equal(again.status, 'success');
  });

  test('a failed pull is an error with the reason; delete needs the API key', async () => {
    await assert.rejects(ol.pull({ model: 'test/tiny/missing-x.gguf', stream: false }), (e) => /HTTP 404/.test(e.message));
    const d = await fetch(s.url + '/api/delete', { method: 'DELETE', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'tiny' }) });
    assert.equal(d.status, 403);
  });
});

describe('/api/delete with an API key', { skip: SKIP }, () => {
  let s, ol, dir;
  before(async () => {
    dir = modelsDir('delete', ['qwen3-tiny', 'llama-tiny']);
    s = await util.startServer(BIN, ['--models-dir', dir, '--no-db', '--ctx', '512', '--alias', 'short=qwen3-tiny'],
      { env: { SMOLBOT_API_KEY: 'sk-delete' } });
    ol = new Ollama({ host: s.url, headers: { Authorization: 'Bearer sk-delete' } });
  });

  test('an alias goes alone; a model goes with its file, loaded or not; unknown names are 404', async () => {
    const names = async () => (await ol.list()).models.map((m) => m.name.replace(/:latest$/, '')).sort();
    assert.deepEqual(await names(), ['llama-tiny', 'qwen3-tiny', 'short']);
    await ol.delete({ model: 'short' });
    assert.deepEqual(await names(), ['llama-tiny', 'qwen3-tiny']);
    assert.ok(existsSync(path.join(dir, 'qwen3-tiny.gguf')));
    const r = await ol.chat({ model: 'llama-tiny', messages: hello, options: greedy, stream: false });
    assert.ok(r.eval_count > 0);
    await ol.delete({ model: 'llama-tiny' });
    assert.deepEqual(await names(), ['qwen3-tiny']);
    assert.ok(!existsSync(path.join(dir, 'llama-tiny.gguf')), 'the link in the models directory is removed');
    assert.ok(existsSync(path.join(SHARED, 'llama-tiny.gguf')), 'never the file it points at');
    await assert.rejects(ol.chat({ model: 'llama-tiny', messages: hello, stream: false }), /not found/);
    await assert.rejects(ol.delete({ model: 'llama-tiny' }), /not found/);
  });
});

let chromium = null;
try { ({ chromium } = await import('playwright-core')); } catch { /* skipped below */ }
const UI_SKIP = SKIP || (!chromium ? 'playwright-core not installed' : !existsSync(CHROME) ? 'no /usr/bin/chromium' : false);

describe('the page with several models', { skip: UI_SKIP }, () => {
  let s, browser;
  before(async () => {
    mkdirSync(ART, { recursive: true });
    const dir = modelsDir('ui', ['smollm3-tiny-q4_k_m', 'qwen3-tiny', 'llama-tiny']);
    s = await util.startServer(BIN, ['--models-dir', dir, '--db', path.join(tmp, 'ui.sqlite'), '--ctx', '512'],
      { env: { ASAN_OPTIONS: 'detect_leaks=0' } });
    browser = await chromium.launch({ executablePath: CHROME, headless: true, args: ['--no-sandbox', '--disable-gpu'] });
  });
  after(async () => { if (browser) await browser.close().catch(() => {}); });

  test('pick a model, send, the answer streams and names its model; /model NAME switches', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, reducedMotion: 'reduce' });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(s.url + '/');
    await page.waitForSelector('#model-pick:not([hidden]) option', { state: 'attached' });
    const opts = await page.$$eval('#model-pick option', (os) => os.map((o) => o.textContent));
    assert.equal(opts.length, 3);
    assert.match(opts.find((o) => o.startsWith('qwen3-tiny')), /qwen3-tiny · F16 · \d+ MB · not loaded/);
    await page.selectOption('#model-pick', 'qwen3-tiny');
    await page.click('[data-action="settings"]');
    await page.fill('#max-tokens', '12');
    await page.click('#settings .dialog-foot button');
    await page.fill('#input', 'Hello there');
    await page.press('#input', 'Enter');
    await page.waitForSelector('#messages .msg.assistant:not(.streaming) .msg-model', { timeout: 60000 });
    assert.equal(await page.textContent('#messages .msg.assistant .msg-model'), 'qwen3-tiny');
    await page.screenshot({ path: path.join(ART, 'registry-picker.png') });

    await page.fill('#input', '/model llama-tiny');
    await page.press('#input', 'Enter');
    await page.waitForSelector('#toast:not([hidden])');
    assert.match(await page.textContent('#toast'), /llama-tiny/);
    assert.equal(await page.inputValue('#model-pick'), 'llama-tiny');
    await page.fill('#input', 'And again');
    await page.press('#input', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#messages .msg.assistant:not(.streaming) .msg-model').length === 2,
      null, { timeout: 60000 });
    const labels = await page.$$eval('#messages .msg.assistant .msg-model', (es) => es.map((e) => e.textContent));
    assert.deepEqual(labels, ['qwen3-tiny', 'llama-tiny']);
    /* a reload keeps the labels (stored per message) and the conversation's model */
    await page.reload();
    await page.waitForSelector('#messages .msg.assistant .msg-model');
    assert.deepEqual(await page.$$eval('#messages .msg.assistant .msg-model', (es) => es.map((e) => e.textContent)),
      ['qwen3-tiny', 'llama-tiny']);
    await page.waitForFunction(() => document.getElementById('model-pick').value === 'llama-tiny');
    await page.fill('#input', '/status');
    await page.press('#input', 'Enter');
    await page.waitForFunction(() => /Loaded models:[\s\S]*llama-tiny \(\d+ MiB\)/.test(document.getElementById('toast').textContent));
    await page.screenshot({ path: path.join(ART, 'registry-status.png') });
    assert.deepEqual(errors, []);
    await ctx.close();
  });
});
