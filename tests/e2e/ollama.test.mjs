// ollama.test.mjs -- Ollama's API (/api/*) end to end, over real loopback
// HTTP, with the official `ollama` npm client (new Ollama({host})) and raw
// fetch for what a client library hides (status codes, NDJSON framing,
// disconnects).
//
// Two servers on the tiny random model: `open` (no key) and `keyed` (an
// API key). The model's text is random: tests compare text between requests
// (same seed, greedy), never with expected words. Skips with a message when
// the model or the binary is absent.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Ollama } from 'ollama';
import * as util from './serve_util.mjs';
import { WEATHER } from './serve_util.mjs';

const BIN = process.env.SMOLBOT_BIN || util.SAN_BIN;
const SKIP = !existsSync(util.MODEL) ? `model absent: ${util.MODEL}` : !BIN ? 'no smolbot binary: run make' : false;
if (SKIP) console.log(`# SKIP ollama tests: ${SKIP}`);

const NAME = 'smollm3-tiny-q4_k_m'; // the file name: the served model's name
const KEY = 'sk-ollama-test';

after(async () => {
  for (const { end, err } of await util.stopAll()) {
    assert.doesNotMatch(err, /Sanitizer|runtime error/, err);
    assert.deepEqual(end, { code: 0, signal: null }, err);
  }
});

async function req(s, method, p, body, headers = {}) {
  const r = await fetch(s.url + p, {
    method,
    headers: { 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

async function idle(s, ms) {
  const t0 = Date.now();
  for (;;) {
    const p = (await req(s, 'GET', '/props')).json;
    if (p.active === 0 && p.queued === 0 && p.streams === 0) return Date.now() - t0;
    if (Date.now() - t0 > ms) return -1;
    await util.sleep(20);
  }
}

const greedy = { temperature: 0, seed: 7, num_predict: 12 };
const SCHEMAS = [
  { type: 'object', properties: { name: { type: 'string', maxLength: 10 }, age: { type: 'integer' } }, required: ['name', 'age'], additionalProperties: false },
  { type: 'array', items: { enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 4 },
  { type: 'object', properties: { ok: { type: 'boolean' }, level: { enum: [1, 2, 3] }, note: { type: ['string', 'null'], maxLength: 6 } }, required: ['ok', 'level', 'note'] },
];
const hello = [{ role: 'user', content: 'Say hello.' }];

describe('ollama api', { skip: SKIP }, () => {
  let open, keyed, ol;
  before(async () => {
    [open, keyed] = await Promise.all([
      util.startServer(BIN, ['-m', util.MODEL, '--no-db', '--batch', '8', '--ctx', '1024']),
      util.startServer(BIN, ['-m', util.MODEL, '--no-db', '--ctx', '512', '--api-key', KEY]),
    ]);
    ol = new Ollama({ host: open.url });
  });

  test('version, list, show and ps describe the served model', async () => {
    assert.match((await ol.version()).version, /^\d+\.\d+\.\d+$/);
    const { models } = await ol.list();
    assert.equal(models.length, 1);
    assert.equal(models[0].name, `${NAME}:latest`);
    assert.equal(models[0].details.format, 'gguf');
    assert.equal(models[0].details.quantization_level, 'Q4_K_M');
    assert.ok(models[0].size > 0 && !Number.isNaN(Date.parse(models[0].modified_at)));
    for (const model of [NAME, `${NAME}:latest`]) {
      const sh = await ol.show({ model });
      assert.ok(sh.capabilities.includes('completion') && sh.capabilities.includes('thinking'));
      assert.equal(sh.details.family, sh.model_info['general.architecture']);
      assert.match(sh.parameters, /temperature/);
    }
    const ps = await ol.ps();
    assert.equal(ps.models.length, 1);
    assert.equal(ps.models[0].context_length, 1024);
    assert.ok(ps.models[0].expires_at);
  });

  test('chat: non-stream equals the concatenated stream; done carries the figures', async () => {
    const one = await ol.chat({ model: NAME, messages: hello, think: false, options: greedy });
    assert.equal(one.done, true);
    assert.equal(one.message.role, 'assistant');
    assert.ok(one.message.content.length > 0);
    assert.ok(['stop', 'length'].includes(one.done_reason));
    for (const k of ['total_duration', 'load_duration', 'prompt_eval_count', 'prompt_eval_duration', 'eval_count', 'eval_duration'])
      assert.ok(Number.isInteger(one[k]) && one[k] >= 0, `${k}: ${one[k]}`);
    assert.ok(one.eval_count > 0 && one.eval_count <= 12 && one.prompt_eval_count > 3);
    assert.ok(one.total_duration >= one.eval_duration && one.total_duration > 1e5, 'nanoseconds');
    assert.ok(!Number.isNaN(Date.parse(one.created_at)));

    let text = '', n = 0, last;
    for await (const part of await ol.chat({ model: `${NAME}:latest`, messages: hello, think: false, options: greedy, stream: true })) {
      n++;
      last = part;
      if (!part.done) text += part.message.content;
    }
    assert.ok(n >= 2, `${n} lines`);
    assert.equal(last.done, true);
    assert.equal(last.message.content, '');
    assert.equal(text, one.message.content);
    assert.equal(last.eval_count, one.eval_count);
  });

  test('chat: think puts the reasoning in message.thinking', async () => {
    const r = await ol.chat({ model: NAME, messages: hello, think: true, options: { ...greedy, num_predict: 40 } });
    assert.equal(r.done, true);
    // random text: the answer may never leave the think block, but nothing of it is lost
    assert.ok((r.message.thinking ?? '').length + r.message.content.length > 0);
    let thinking = '';
    for await (const part of await ol.chat({ model: NAME, messages: hello, think: true, options: { ...greedy, num_predict: 40 }, stream: true }))
      thinking += part.message.thinking ?? '';
    assert.equal(thinking, r.message.thinking ?? '');
  });

  test('generate: stream and not agree; raw skips the template', async () => {
    const one = await ol.generate({ model: NAME, prompt: 'Once upon a time', system: 'Be brief.', think: false, options: greedy });
    assert.equal(one.done, true);
    assert.ok(one.response.length > 0);
    let text = '';
    for await (const part of await ol.generate({ model: NAME, prompt: 'Once upon a time', system: 'Be brief.', think: false, options: greedy, stream: true }))
      text += part.response;
    assert.equal(text, one.response);
    const raw = await ol.generate({ model: NAME, prompt: 'Once upon a time', raw: true, options: greedy });
    assert.ok(raw.prompt_eval_count < one.prompt_eval_count, `raw ${raw.prompt_eval_count} vs templated ${one.prompt_eval_count}`);
    const load = await ol.generate({ model: NAME, prompt: '' });
    assert.equal(load.done_reason, 'load');
  });

  test('NDJSON framing: one JSON object per line, application/x-ndjson', async () => {
    const r = await req(open, 'POST', '/api/chat', { model: NAME, messages: hello, think: false, options: greedy });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /application\/x-ndjson/);
    const lines = r.text.split('\n');
    assert.equal(lines.pop(), '', 'ends with a newline');
    for (const l of lines) JSON.parse(l);
    assert.equal(JSON.parse(lines.at(-1)).done, true);
  });

  test('options: stop and num_predict are honoured, seed repeats', async () => {
    const a = await ol.generate({ model: NAME, prompt: 'Count', options: { temperature: 1, seed: 11, num_predict: 8 } });
    const b = await ol.generate({ model: NAME, prompt: 'Count', options: { temperature: 1, seed: 11, num_predict: 8 } });
    assert.equal(a.response, b.response);
    assert.ok(a.eval_count <= 8);
    assert.equal(a.done_reason, a.eval_count === 8 ? 'length' : 'stop');
    const long = await ol.generate({ model: NAME, prompt: 'Count', think: false, options: { ...greedy, num_predict: 30 } });
    const cut = long.response.slice(3, 6).trim();
    if (cut.length) {
      const s = await ol.generate({ model: NAME, prompt: 'Count', think: false, options: { ...greedy, num_predict: 30, stop: [cut] } });
      assert.ok(!s.response.includes(cut), `stop ${JSON.stringify(cut)} in ${JSON.stringify(s.response)}`);
      assert.equal(s.done_reason, 'stop');
    }
  });

  test('errors are {"error"} with Ollama\'s status codes', async () => {
    await assert.rejects(ol.chat({ model: 'llama3', messages: hello }), (e) =>
      e.status_code === 404 && e.error === 'model "llama3" not found, try pulling it first');
    await assert.rejects(ol.show({ model: 'nope:7b' }), (e) => e.status_code === 404);
    const bad = await req(open, 'POST', '/api/chat', '{"model":');
    assert.equal(bad.status, 400);
    assert.equal(typeof bad.json.error, 'string');
    assert.equal((await req(open, 'POST', '/api/chat', { messages: hello })).json.error, 'model is required');
    for (const [field, body] of [
      ['format', { format: 'yaml' }],
      ['format', { format: { type: 'object', properties: { a: { $ref: '#/x' } } } }],
      ['format', { format: 'json', tools: [WEATHER] }],
      ['tools', { tools: [{ type: 'function', function: { name: 'bad name' } }] }],
      ['tools', { tools: [{ function: { name: 'f' } }] }],
      ['tool_calls', { messages: [{ role: 'user', content: 'x', tool_calls: [{ function: { name: 'f', arguments: {} } }] }] }],
      ['arguments', { messages: [{ role: 'assistant', content: '', tool_calls: [{ function: { name: 'f', arguments: [1] } }] }] }],
      ['images', { messages: [{ role: 'user', content: 'x', images: ['aGk='] }] }],
      ['temperature', { options: { temperature: 'hot' } }],
      ['num_predict', { options: { num_predict: 1e9 } }],
    ]) {
      const r = await req(open, 'POST', '/api/chat', { model: NAME, messages: hello, ...body });
      assert.equal(r.status, 400, `${field}: ${r.text}`);
      assert.ok(r.json.error.includes(field), r.json.error);
    }
    const gtools = await req(open, 'POST', '/api/generate', { model: NAME, prompt: 'x', tools: [WEATHER] });
    assert.equal(gtools.status, 400);
    assert.match(gtools.json.error, /tools/);
    const suffix = await req(open, 'POST', '/api/generate', { model: NAME, prompt: 'x', suffix: 'y' });
    assert.equal(suffix.status, 400);
    assert.match(suffix.json.error, /suffix/);
    const form = await req(open, 'POST', '/api/chat', 'x=1', { 'content-type': 'application/x-www-form-urlencoded' });
    assert.equal(form.status, 415);
    assert.equal(typeof form.json.error, 'string');
    assert.equal((await req(open, 'GET', '/api/chat')).status, 405);
    assert.equal((await req(open, 'GET', '/api/nothing')).status, 404);
    const emb = await req(open, 'POST', '/api/embed', { model: NAME, input: 'x' });
    assert.equal(emb.status, 501);
    assert.match(emb.json.error, /embed/);
    // delete: refused without a key; the loaded model stays with one
    const del = await req(open, 'DELETE', '/api/delete', { model: NAME });
    assert.equal(del.status, 403);
    assert.match(del.json.error, /API key/);
    await assert.rejects(ol.pull({ model: 'llama3' }), (e) => e.status_code === 501);
    assert.equal((await ol.pull({ model: NAME })).status, 'success');
  });

  test('the API key: 401 without it, everything with it', async () => {
    const anon = new Ollama({ host: keyed.url });
    await assert.rejects(anon.list(), (e) => e.status_code === 401);
    await assert.rejects(anon.chat({ model: NAME, messages: hello }), (e) => e.status_code === 401);
    const auth = { Authorization: `Bearer ${KEY}` };
    const ol2 = new Ollama({ host: keyed.url, headers: auth });
    assert.equal((await ol2.list()).models[0].name, `${NAME}:latest`);
    const r = await ol2.chat({ model: NAME, messages: hello, think: false, options: greedy });
    assert.equal(r.done, true);
    const del = await req(keyed, 'DELETE', '/api/delete', { model: NAME }, auth);
    assert.equal(del.status, 409);
    assert.match(del.json.error, /loaded/);
    assert.equal((await req(keyed, 'DELETE', '/api/delete', { model: 'other' }, auth)).status, 404);
  });

  test('a client that leaves mid-stream frees its slot', async () => {
    const metric = async () => Number((await req(open, 'GET', '/metrics')).text.match(/smolbot_cancelled_total (\d+)/)[1]);
    const before = await metric();
    const it = await ol.chat({ model: NAME, messages: [{ role: 'user', content: 'Go on forever.' }], think: false,
      options: { seed: 3, num_predict: 800 }, stream: true });
    let lines = 0;
    for await (const part of it) {
      assert.equal(part.done, false, 'the generation ended before the client left');
      if (++lines === 2) { it.abort(); break; } // the socket closes
    }
    const t0 = Date.now();
    const ms = await idle(open, 2000);
    assert.ok(ms >= 0, 'slot still busy 2 s after the client left');
    console.log(`# ollama stream: slot free ${Date.now() - t0} ms after the client left`);
    assert.equal(await metric(), before + 1);
  });

  test('SIGTERM mid-stream ends it with an error line and a clean exit', async () => {
    const res = await fetch(keyed.url + '/api/generate', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: NAME, prompt: 'Go on forever.', think: false, options: { seed: 3, num_predict: 400 } }),
    });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let text = '';
    while (!text.includes('\n')) text += dec.decode((await reader.read()).value, { stream: true });
    const stopped = keyed.stop();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
    }
    const lines = text.trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.at(-1), { error: 'the server is shutting down' });
    assert.deepEqual(await stopped, { code: 0, signal: null });
  });

  test('format: a schema constrains chat (10 at temperature 1, ajv), "json" gives an object', async () => {
    const { default: Ajv } = await import('ajv');
    const ajv = new Ajv({ strict: false });
    const runs = [];
    for (let i = 0; i < 10; i++) {
      const schema = SCHEMAS[i % SCHEMAS.length];
      runs.push(ol.chat({ model: NAME, messages: [{ role: 'user', content: `Answer ${i} in JSON.` }], think: false,
        format: schema, options: { temperature: 1, seed: 40 + i, num_predict: 200 } }).then((r) => ({ r, schema })));
    }
    for (const { r, schema } of await Promise.all(runs)) {
      assert.equal(r.done_reason, 'stop', r.message.content);
      const v = ajv.compile(schema);
      assert.ok(v(JSON.parse(r.message.content)), `${r.message.content}: ${JSON.stringify(v.errors)}`);
    }
    // streamed: the lines join into the same valid answer
    let text = '';
    for await (const part of await ol.chat({ model: NAME, messages: hello, think: false, format: SCHEMAS[0],
      options: { temperature: 1, seed: 40, num_predict: 200 }, stream: true })) text += part.message.content;
    assert.ok(ajv.compile(SCHEMAS[0])(JSON.parse(text)), text);
    const g = await ol.generate({ model: NAME, prompt: 'JSON please', think: false, format: 'json',
      options: { temperature: 1, seed: 5, num_predict: 200 } });
    if (g.done_reason === 'stop') {
      const o = JSON.parse(g.response);
      assert.ok(typeof o === 'object' && o !== null && !Array.isArray(o), g.response);
    } else {
      assert.match(g.response, /^\s*\{/); // cut by num_predict, but an object so far
    }
  });

  test('tools: calls come back with object arguments (stream and not); the tool turn answers', async () => {
    const { default: Ajv } = await import('ajv');
    const valid = new Ajv({ strict: false }).compile(WEATHER.function.parameters);
    const check = (msg) => {
      assert.ok(Array.isArray(msg.tool_calls) && msg.tool_calls.length >= 1, JSON.stringify(msg));
      for (const c of msg.tool_calls) {
        assert.equal(c.function.name, 'get_weather');
        assert.equal(typeof c.function.arguments, 'object', 'Ollama gives arguments as an object');
        assert.ok(valid(c.function.arguments), `${JSON.stringify(c.function.arguments)}: ${JSON.stringify(valid.errors)}`);
      }
      assert.ok(!msg.content.includes('<tool_call>'), msg.content);
    };
    const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
    // tool_choice (an OpenAI field, an extension here): the random model never calls on its own.
    // num_predict leaves room for a whole call: the schema bounds every string and number, but
    // a random model may spend three tokens on a character
    const base = { model: NAME, messages, tools: [WEATHER], tool_choice: 'required', think: false,
      options: { temperature: 1, seed: 7, num_predict: 400 } };
    // the two compared requests must start from the same cache state: a cold prompt reads its
    // last token in a prefill tile, a cached one alone, and at temperature 1 a random model's
    // samples part on such last-bit differences; a first request leaves the prompt cached
    await ol.chat(base);
    const r1 = await ol.chat(base);
    check(r1.message);
    // streamed with the same seed: the same calls, each in a line of its own once whole
    const streamed = [];
    let content = '';
    for await (const part of await ol.chat({ ...base, stream: true })) {
      if (part.message.tool_calls) streamed.push(...part.message.tool_calls);
      content += part.message.content;
    }
    assert.deepEqual(streamed, r1.message.tool_calls);
    assert.equal(content, r1.message.content);
    // auto (Ollama's way): whatever comes back is text or valid calls
    const auto = await ol.chat({ ...base, tool_choice: undefined });
    if (auto.message.tool_calls) check(auto.message);
    // the second turn: the calls and their results in the history
    messages.push(r1.message);
    for (const c of r1.message.tool_calls)
      messages.push({ role: 'tool', tool_name: c.function.name, content: '{"temp": 18, "unit": "celsius"}' });
    const r2 = await ol.chat({ model: NAME, messages, tools: [WEATHER], think: false, options: { temperature: 0, num_predict: 8 } });
    assert.equal(r2.done, true);
    assert.ok(['stop', 'length'].includes(r2.done_reason));
    assert.ok(r2.prompt_eval_count > r1.prompt_eval_count, 'the call and its result are in the prompt');
  });

  test('the openai client still works beside it', async () => {
    const { default: OpenAI } = await import('openai');
    const oa = new OpenAI({ baseURL: open.url + '/v1', apiKey: 'none' });
    const r = await oa.chat.completions.create({ model: NAME, messages: hello, max_tokens: 4, temperature: 0 });
    assert.equal(r.choices[0].message.role, 'assistant');
  });
});
