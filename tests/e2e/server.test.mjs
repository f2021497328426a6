// server.test.mjs -- `smolbot serve` end to end, over real loopback HTTP,
// against the tiny random model (../shared/models/smollm3-tiny-q4_k_m.gguf).
//
// Servers are started with --port 0 (the OS picks a free port; we read it
// from the "listening on http://127.0.0.1:PORT" line), --no-db, on
// 127.0.0.1, and are always stopped in after() (SIGTERM, then SIGKILL). The
// sanitized binary (build/san/smolbot) is used when it exists so ASan and
// UBSan watch the server too; SMOLBOT_BIN overrides. The tiny model's text
// is random: tests compare text between requests (same seed, greedy), never
// with expected words.
//
// Three servers: `main` (generation, streaming, disconnects, the openai
// client, SIGTERM at the end), `tight` (an API key and small limits:
// queue, slots, streams, messages, body, context, max_tokens) and a
// no-model one. Everything skips with a message when the model is absent.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as util from './serve_util.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MODEL = path.resolve(ROOT, '../shared/models/smollm3-tiny-q4_k_m.gguf');
const BIN = process.env.SMOLBOT_BIN || ['build/san/smolbot', 'build/smolbot'].map((p) => path.join(ROOT, p)).find(existsSync);
const SKIP = !existsSync(MODEL) ? `model absent: ${MODEL}` : !BIN ? 'no smolbot binary: run make' : false;
if (SKIP) console.log(`# SKIP server tests: ${SKIP}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Start/stop as the other suites do (serve_util.mjs), with this suite's binary.
const startServer = (args, opts) => util.startServer(BIN, args, opts);

// Every server is stopped; each must exit 0 on SIGTERM with nothing from the sanitizers.
after(async () => {
  for (const { end, err } of await util.stopAll()) {
    assert.doesNotMatch(err, /Sanitizer|runtime error/, err);
    assert.deepEqual(end, { code: 0, signal: null }, err);
  }
});

async function post(s, p, body, headers = {}) {
  const r = await fetch(s.url + p, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

async function get(s, p, headers = {}) {
  const r = await fetch(s.url + p, { headers });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

// POST a streaming completion and read its events. Each event's bytes must
// decode as UTF-8 on their own (no event splits a character). onEvent(text)
// returning false aborts the request (the socket is closed).
async function stream(s, body, { headers = {}, onEvent } = {}) {
  const ac = new AbortController();
  const res = await fetch(s.url + '/v1/chat/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ ...body, stream: true }),
    signal: ac.signal,
  });
  const out = { status: res.status, headers: res.headers, events: [], aborted: false };
  if (!res.headers.get('content-type')?.startsWith('text/event-stream')) {
    out.json = await res.json();
    return out;
  }
  const dec = new TextDecoder('utf-8', { fatal: true });
  const reader = res.body.getReader();
  let buf = Buffer.alloc(0);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf = Buffer.concat([buf, value]);
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = dec.decode(buf.subarray(0, i));
        buf = buf.subarray(i + 2);
        out.events.push(ev);
        if (onEvent && onEvent(ev) === false) {
          out.aborted = true;
          out.abortedAt = Date.now();
          ac.abort();
          return out;
        }
      }
    }
  } catch (e) {
    if (!out.aborted) throw e;
  }
  out.rest = buf.toString();
  return out;
}

// data: payloads of an event list (comments dropped), parsed, [DONE] kept as a string.
const datas = (events) => events.filter((e) => e.startsWith('data: ')).map((e) => {
  const d = e.slice(6);
  return d === '[DONE]' ? d : JSON.parse(d);
});

function joined(events) {
  let content = '', reasoning = '', finish = null, usage = null, role = null;
  for (const d of datas(events)) {
    if (d === '[DONE]' || d.error) continue;
    if (d.usage) usage = d.usage;
    for (const c of d.choices) {
      if (c.delta.role) role = c.delta.role;
      if (c.delta.content) content += c.delta.content;
      if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { content, reasoning, finish, usage, role };
}

async function waitIdle(s, ms, headers = {}) {
  const t0 = Date.now();
  for (;;) {
    const p = (await get(s, '/props', headers)).json;
    if (p.active === 0 && p.queued === 0 && p.streams === 0) return Date.now() - t0;
    if (Date.now() - t0 > ms) return -1;
    await sleep(20);
  }
}

const hello = (text) => [{ role: 'user', content: text }];

describe('smolbot serve', { skip: SKIP }, () => {
  let main;
  before(async () => { main = await startServer(['-m', MODEL, '--no-db', '--batch', '8', '--ctx', '2048']); });

  test('health, models, props, metrics, 404 and 405 in shape', async () => {
    const h = await get(main, '/health');
    assert.equal(h.status, 200);
    assert.equal(h.json.status, 'ok');
    const m = await get(main, '/v1/models');
    assert.equal(m.json.object, 'list');
    assert.equal(m.json.data[0].id, 'smollm3-tiny-q4_k_m');
    const p = await get(main, '/props');
    assert.equal(p.json.n_ctx, 2048);
    assert.equal(p.json.state, 'ready');
    assert.equal(p.json.total_slots, 8); // --parallel defaults to 8
    const met = await get(main, '/metrics');
    assert.match(met.headers.get('content-type'), /^text\/plain/);
    for (const n of ['smolbot_requests_total', 'smolbot_prompt_tokens_total', 'smolbot_generated_tokens_total',
      'smolbot_cached_tokens_total', 'smolbot_queue_depth', 'smolbot_active_streams', 'smolbot_kv_bytes',
      'smolbot_ttft_seconds_bucket{le="+Inf"}', 'smolbot_decode_tokens_per_second_count', 'smolbot_uptime_seconds'])
      assert.ok(met.text.includes(n), n);
    const nf = await get(main, '/v1/nothing');
    assert.equal(nf.status, 404);
    assert.equal(typeof nf.json.error.message, 'string');
    assert.ok('param' in nf.json.error && 'code' in nf.json.error && 'type' in nf.json.error);
    assert.equal((await get(main, '/v1/chat/completions')).status, 405);
  });

  test('tokenize, detokenize, apply-template', async () => {
    const t = await post(main, '/tokenize', { content: 'Hello world, ça va? 🙂' });
    assert.equal(t.status, 200);
    assert.ok(t.json.tokens.length > 3);
    const d = await post(main, '/detokenize', { tokens: t.json.tokens });
    assert.equal(d.json.content, 'Hello world, ça va? 🙂');
    const p = await post(main, '/tokenize', { content: 'ab', with_pieces: true });
    assert.equal(typeof p.json.tokens[0].id, 'number');
    assert.equal(p.json.tokens.map((x) => x.piece).join(''), 'ab');
    const a = await post(main, '/apply-template', { messages: hello('Hi'), chat_template_kwargs: { enable_thinking: false } });
    assert.match(a.json.prompt, /<\|im_start\|>user\nHi<\|im_end\|>/);
    assert.match(a.json.prompt, /\/no_think/);
    assert.equal((await post(main, '/detokenize', { tokens: [-1] })).status, 400);
  });

  test('stream and non-stream give the same text, byte for byte; stream framing', async () => {
    const body = { messages: hello('Write a haiku about the sea.'), max_tokens: 8, temperature: 0, seed: 42 };
    const ns = await post(main, '/v1/chat/completions', body);
    assert.equal(ns.status, 200, ns.text);
    const msg = ns.json.choices[0].message;
    assert.equal(msg.role, 'assistant');
    assert.equal(ns.json.object, 'chat.completion');
    assert.match(ns.json.id, /^chatcmpl-[0-9a-f]+$/);
    assert.ok(['stop', 'length'].includes(ns.json.choices[0].finish_reason));
    assert.equal(ns.json.usage.total_tokens, ns.json.usage.prompt_tokens + ns.json.usage.completion_tokens);
    assert.equal(typeof ns.json.usage.prompt_tokens_details.cached_tokens, 'number');

    const st = await stream(main, { ...body, stream_options: { include_usage: true } });
    assert.equal(st.status, 200);
    assert.equal(st.headers.get('cache-control'), 'no-cache');
    const ds = datas(st.events);
    assert.equal(ds.at(-1), '[DONE]');
    assert.equal(st.rest, '');
    assert.equal(ds[0].choices[0].delta.role, 'assistant');
    const j = joined(st.events);
    assert.equal(j.content, msg.content ?? '');
    assert.equal(j.reasoning, msg.reasoning_content ?? '');
    assert.equal(j.finish, ns.json.choices[0].finish_reason);
    // the usage chunk comes after the finish chunk, with empty choices
    const u = ds.at(-2);
    assert.deepEqual(u.choices, []);
    assert.equal(u.usage.completion_tokens, ns.json.usage.completion_tokens);
    assert.equal(u.usage.prompt_tokens, ns.json.usage.prompt_tokens);
    for (const d of ds.slice(0, -1)) assert.equal(d.id, ds[0].id);
  });

  test('reasoning_effort none: no reasoning_content', async () => {
    const r = await post(main, '/v1/chat/completions', { messages: hello('Hi'), max_tokens: 4, reasoning_effort: 'none', seed: 1 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.choices[0].message.reasoning_content, undefined);
  });

  test('two concurrent streams both complete', async () => {
    const b = (seed) => ({ messages: hello(`Count to ten, run ${seed}.`), max_tokens: 6, seed, ignore_eos: true });
    const [x, y] = await Promise.all([stream(main, b(1)), stream(main, b(2))]);
    for (const s of [x, y]) {
      assert.equal(datas(s.events).at(-1), '[DONE]');
      assert.equal(joined(s.events).finish, 'length');
    }
    assert.ok((await waitIdle(main, 2000)) >= 0);
  });

  test('a second turn reuses the cache: cached_tokens', async () => {
    const m1 = hello(`Tell me about cats, please ${Date.now()}.`);
    const r1 = await post(main, '/v1/chat/completions', { messages: m1, max_tokens: 4, seed: 5 });
    assert.equal(r1.status, 200, r1.text);
    const m2 = [...m1, { role: 'assistant', content: r1.json.choices[0].message.content }, { role: 'user', content: 'And dogs?' }];
    const r2 = await post(main, '/v1/chat/completions', { messages: m2, max_tokens: 4, seed: 5 });
    assert.equal(r2.status, 200, r2.text);
    const cached = r2.json.usage.prompt_tokens_details.cached_tokens;
    console.log(`# turn 1: ${r1.json.usage.prompt_tokens} prompt tokens; turn 2: ${r2.json.usage.prompt_tokens}, ${cached} cached`);
    assert.ok(cached >= r1.json.usage.prompt_tokens * 0.8, `cached ${cached} of turn-1 prompt ${r1.json.usage.prompt_tokens}`);
  });

  test('a client that disconnects mid-decode frees its slot within a second', async () => {
    const before = (await get(main, '/metrics')).text.match(/smolbot_cancelled_total (\d+)/)[1];
    const st = await stream(main, { messages: hello('Go on forever.'), max_tokens: 500, ignore_eos: true, seed: 3 }, {
      onEvent: (e) => !(e.startsWith('data: ') && e.includes('"content"')),
    });
    assert.ok(st.aborted);
    const ms = await waitIdle(main, 1000);
    assert.ok(ms >= 0, 'slot still busy 1 s after the client left');
    console.log(`# mid-decode disconnect: slot free ${Date.now() - st.abortedAt} ms after the abort`);
    const after = (await get(main, '/metrics')).text.match(/smolbot_cancelled_total (\d+)/)[1];
    assert.equal(Number(after), Number(before) + 1);
  });

  test('a client that disconnects mid-prefill frees its slot within a second', async () => {
    // A long fresh prompt, prefilled in chunks of 8: we leave as soon as the headers arrive.
    const words = Array.from({ length: 200 }, (_, i) => `w${i}x${Date.now() % 9973}`).join(' ');
    let sawContent = false;
    const st = await stream(main, { messages: hello(words), max_tokens: 4, seed: 3 }, {
      onEvent: (e) => { if (e.includes('"content"')) sawContent = true; return false; },
    });
    assert.ok(st.aborted && !sawContent, JSON.stringify(st.json ?? st.events));
    const ms = await waitIdle(main, 1000);
    assert.ok(ms >= 0, 'slot still busy 1 s after the client left');
    console.log(`# mid-prefill disconnect: slot free ${Date.now() - st.abortedAt} ms after the abort`);
  });

  test('the official openai client reads a stream (and a plain completion)', async () => {
    const { default: OpenAI } = await import('openai');
    const client = new OpenAI({ baseURL: main.url + '/v1', apiKey: 'unused', maxRetries: 0 });
    const body = { model: 'smollm3-tiny-q4_k_m', messages: hello('Name three colors.'), max_tokens: 6, temperature: 0, seed: 9 };
    const s = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
    let text = '', finish = null, usage = null;
    for await (const chunk of s) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.delta?.content ?? '';
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    const plain = await client.chat.completions.create(body);
    assert.equal(text, plain.choices[0].message.content);
    assert.equal(finish, plain.choices[0].finish_reason);
    assert.equal(usage.completion_tokens, plain.usage.completion_tokens);
    // errors come back as the client's typed errors
    await assert.rejects(client.chat.completions.create({ ...body, temperature: 'hot' }), (e) => e.status === 400 && e.param === 'temperature');
  });

  test('invalid requests are 400s with the field named, never a crash', async () => {
    const cases = [
      ['{"messages": [', null],
      ['[1,2]', null],
      [Buffer.from([0x7b, 0x22, 0x6d, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), null], // {"m":"\xff\xfe"}
      [{ messages: 'hi' }, 'messages'],
      [{ messages: [] }, 'messages'],
      [{ messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role'],
      [{ messages: [{ role: 'user', content: 5 }] }, 'messages[0].content'],
      [{ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }, 'messages[0].content'],
      [{ messages: hello('x'), temperature: 'hot' }, 'temperature'],
      [{ messages: hello('x'), temperature: 3 }, 'temperature'],
      [{ messages: hello('x'), top_p: 1.5 }, 'top_p'],
      [{ messages: hello('x'), top_k: -1 }, 'top_k'],
      [{ messages: hello('x'), max_tokens: 0 }, 'max_tokens'],
      [{ messages: hello('x'), max_completion_tokens: 'a' }, 'max_completion_tokens'],
      [{ messages: hello('x'), n: 9 }, 'n'],
      [{ messages: hello('x'), stop: Array(9).fill('a') }, 'stop'],
      [{ messages: hello('x'), stop: [''] }, 'stop'],
      [{ messages: hello('x'), seed: 1.5 }, 'seed'],
      [{ messages: hello('x'), stream: 'yes' }, 'stream'],
      [{ messages: hello('x'), presence_penalty: 9 }, 'presence_penalty'],
      [{ messages: hello('x'), reasoning_effort: 'max' }, 'reasoning_effort'],
      [{ messages: hello('x'), chat_template_kwargs: { enable_thinking: 'no' } }, 'chat_template_kwargs.enable_thinking'],
      [{ messages: [{ role: 'user', content: 'a' }, { role: 'system', content: 'late' }] }, 'messages'],
    ];
    for (const [body, param] of cases) {
      const r = await post(main, '/v1/chat/completions', body);
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.json.error.type, 'invalid_request_error');
      if (param) assert.equal(r.json.error.param, param, r.text);
    }
    assert.equal((await get(main, '/health')).status, 200);
  });

  test('SIGTERM: open streams end with an error event and [DONE], exit 0', async () => {
    let first = true;
    const p = stream(main, { messages: hello('Keep talking.'), max_tokens: 500, ignore_eos: true, seed: 4 }, {
      onEvent: (e) => {
        if (first && e.includes('"content"')) { first = false; main.proc.kill('SIGTERM'); }
        return true;
      },
    });
    const st = await p;
    const ds = datas(st.events);
    assert.equal(ds.at(-1), '[DONE]');
    assert.equal(ds.at(-2).error.code, 'shutting_down');
    const e = await main.exited;
    assert.deepEqual(e, { code: 0, signal: null }, main.err);
  });
});

describe('limits and the API key', { skip: SKIP }, () => {
  let s;
  const key = 'sk-test-123';
  const auth = { authorization: `Bearer ${key}` };
  before(async () => {
    s = await startServer(['-m', MODEL, '--no-db', '--api-key', key, '--parallel', '1', '--queue', '1', '--max-streams', '2',
      '--max-messages', '4', '--max-tokens', '400', '--max-body', '8192', '--ctx', '512']);
  });

  test('API key: required everywhere but /health', async () => {
    assert.equal((await get(s, '/health')).status, 200);
    const no = await get(s, '/v1/models');
    assert.equal(no.status, 401);
    assert.equal(no.json.error.code, 'invalid_api_key');
    assert.equal((await get(s, '/v1/models', { authorization: 'Bearer wrong' })).status, 401);
    assert.equal((await get(s, '/metrics')).status, 401);
    assert.equal((await post(s, '/v1/chat/completions', { messages: hello('x') })).status, 401);
    assert.equal((await get(s, '/v1/models', auth)).status, 200);
  });

  test('body size, message count, context, max_tokens', async () => {
    const big = await post(s, '/v1/chat/completions', { messages: hello('x'.repeat(10000)) }, auth);
    assert.equal(big.status, 413);
    const many = await post(s, '/v1/chat/completions', { messages: Array(5).fill({ role: 'user', content: 'x' }) }, auth);
    assert.equal(many.status, 400);
    assert.equal(many.json.error.code, 'too_many_messages');
    const words = Array.from({ length: 600 }, (_, i) => `z${i}`).join(' ');
    const long = await post(s, '/v1/chat/completions', { messages: hello(words) }, auth);
    assert.equal(long.status, 400);
    assert.equal(long.json.error.code, 'context_length_exceeded');
    const mt = await post(s, '/v1/chat/completions', { messages: hello('x'), max_tokens: 401 }, auth);
    assert.equal(mt.status, 400);
    assert.equal(mt.json.error.param, 'max_tokens');
    // a prompt of ~480 tokens (counted with /apply-template + /tokenize) fits; with 64 more it does not
    const count = async (k) => {
      const msgs = hello('y' + ' y'.repeat(k - 1));
      const p = (await post(s, '/apply-template', { messages: msgs }, auth)).json.prompt;
      return [msgs, (await post(s, '/tokenize', { content: p }, auth)).json.tokens.length];
    };
    let [msgs, n] = await count(100);
    [msgs, n] = await count(100 + 480 - n);
    assert.ok(n > 448 && n < 512, `prompt of ${n} tokens`);
    const fit = await post(s, '/v1/chat/completions', { messages: msgs, max_tokens: 64 }, auth);
    assert.equal(fit.status, 400, 'prompt + max_tokens over the context');
    assert.equal(fit.json.error.code, 'context_length_exceeded');
  });

  test('queue full and too many streams: 429 with Retry-After, nothing lost', async () => {
    // A holds the only slot until we let it go (its client leaves); B waits in the only queue place.
    // A may run 256 tokens (seconds even for the tiny model) so that it is still running when C and D ask.
    const body = (seed, n) => ({ messages: hello(`Talk ${seed}.`), max_tokens: n, ignore_eos: true, seed });
    let releaseA = false;
    const a = stream(s, body(1, 256), { headers: auth, onEvent: () => !releaseA });
    for (let t0 = Date.now(); (await get(s, '/props', auth)).json.active < 1; await sleep(20))
      assert.ok(Date.now() - t0 < 60000, 'A never started');
    const b = stream(s, body(2, 3), { headers: auth });
    for (let t0 = Date.now(); (await get(s, '/props', auth)).json.queued < 1; await sleep(20))
      assert.ok(Date.now() - t0 < 10000, 'B never queued');
    const c = await post(s, '/v1/chat/completions', body(3, 3), auth);
    assert.equal(c.status, 429, c.text);
    assert.equal(c.json.error.code, 'queue_full');
    assert.equal(c.headers.get('retry-after'), '1');
    const d = await stream(s, body(4, 3), { headers: auth });
    assert.equal(d.status, 429);
    assert.equal(d.json.error.code, 'too_many_streams');
    // B, queued, hears ": ping" comments (after 1 s of silence) while it waits
    await sleep(1300);
    // A's client leaves (cancelled at its next event); B then runs to the end
    releaseA = true;
    assert.ok((await a).aborted);
    const rb = await b;
    assert.equal(joined(rb.events).finish, 'length');
    assert.equal(datas(rb.events).at(-1), '[DONE]');
    assert.ok(rb.events.includes(': ping'), 'no ping while queued');
    assert.ok((await waitIdle(s, 2000, auth)) >= 0);
  });
});

describe('command line', { skip: !BIN && 'no smolbot binary: run make' }, () => {
  test('serve --help is 0, an unknown option is 2', async () => {
    const { spawnSync } = await import('node:child_process');
    const h = spawnSync(BIN, ['serve', '--help'], { encoding: 'utf8' });
    assert.equal(h.status, 0);
    assert.match(h.stdout, /--api-key/);
    assert.equal(spawnSync(BIN, ['serve', '--bogus'], { encoding: 'utf8' }).status, 2);
    assert.equal(spawnSync(BIN, ['serve', '--port', '70000'], { encoding: 'utf8' }).status, 2);
  });
});

describe('no model', { skip: SKIP }, () => {
  test('no model found: /health 200 no_model, completions 503; HOST, PORT, SMOLBOT_API_KEY from the environment', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'smolbot-nomodel-'));
    try {
      const s = await startServer(['--no-db'], {
        cwd: dir, fromEnv: true, env: { HOME: dir, SMOLBOT_MODELS: dir, XDG_DATA_HOME: dir, SMOLBOT_API_KEY: 'k1' },
      });
      assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const h = await get(s, '/health');
      assert.equal(h.status, 200);
      assert.equal(h.json.status, 'no_model');
      assert.equal((await post(s, '/v1/chat/completions', { messages: hello('x') })).status, 401);
      const c = await post(s, '/v1/chat/completions', { messages: hello('x') }, { authorization: 'Bearer k1' });
      assert.equal(c.status, 503);
      assert.equal(c.json.error.code, 'no_model');
      assert.deepEqual(await s.stop(), { code: 0, signal: null });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
