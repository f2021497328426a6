// llama_tools.test.mjs -- Llama 3.x tool calls end to end: Llama writes a
// call as a bare JSON object ({"name": ..., "parameters": {...}}), not in
// <tool_call> tags, so tool_choice required / a named function constrain
// the random-weights tiny Llama file to that form, and the answer comes
// back as OpenAI tool_calls (official openai client, whole and streamed)
// and as Ollama's message.tool_calls (official ollama client). A follow-up
// turn with the call and its tool result renders through the file's own
// template and answers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ROOT, SAN_BIN, WEATHER, startServer, stopAll } from './serve_util.mjs';

const MODEL = path.resolve(ROOT, '../shared/models/llama-tiny.gguf');
const SKIP = !existsSync(MODEL) ? 'no ../shared/models/llama-tiny.gguf' : !SAN_BIN ? 'no smolbot binary: run make' : false;
const NOW = { type: 'function', function: { name: 'now', description: 'The time', parameters: { type: 'object', properties: {}, additionalProperties: false } } };
let srv, client, ol, olModel;

before(async () => {
  if (SKIP) return;
  srv = await startServer(SAN_BIN, ['-m', MODEL, '--no-db', '--ctx', '1024']);
  const { default: OpenAI } = await import('openai');
  client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  const { Ollama } = await import('ollama');
  ol = new Ollama({ host: srv.url });
  olModel = (await ol.list()).models[0].name; // the served file's name
});

after(async () => {
  if (SKIP) return;
  for (const { end, err } of await stopAll()) {
    assert.equal(end.code, 0, err);
    assert.doesNotMatch(err, /AddressSanitizer|runtime error|LeakSanitizer/);
  }
});

// get_weather's arguments as its schema says: city (<= 12 chars) required, unit an enum, days an integer, nothing else.
function checkWeather(args) {
  assert.equal(typeof args, 'object');
  assert.equal(typeof args.city, 'string');
  assert.ok(args.city.length <= 12, args.city);
  if ('unit' in args) assert.ok(['celsius', 'fahrenheit'].includes(args.unit), args.unit);
  if ('days' in args) assert.ok(Number.isInteger(args.days), String(args.days));
  for (const k of Object.keys(args)) assert.ok(['city', 'unit', 'days'].includes(k), k);
}

const ASK = [{ role: 'user', content: 'Weather in Paris?' }];

test('required: a bare JSON call becomes tool_calls', { skip: SKIP }, async () => {
  for (const seed of [1, 2, 3]) {
    const r = await client.chat.completions.create({
      model: 'x', messages: ASK, tools: [WEATHER, NOW], tool_choice: 'required', max_tokens: 96, seed, logprobs: true,
    });
    const c = r.choices[0];
    // what the model wrote: Llama's bare form, no tags
    const raw = c.logprobs.content.map((t) => t.token).join('');
    assert.match(raw, /^\{"name": "(get_weather|now)", "parameters": \{/, raw);
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
    assert.equal(c.message.tool_calls.length, 1);
    const tc = c.message.tool_calls[0];
    assert.match(tc.id, /^call_/);
    assert.equal(tc.type, 'function');
    assert.ok(['get_weather', 'now'].includes(tc.function.name), tc.function.name);
    const args = JSON.parse(tc.function.arguments);
    if (tc.function.name === 'get_weather') checkWeather(args);
    else assert.deepEqual(args, {});
    assert.ok(!c.message.content, JSON.stringify(c.message.content)); // the call is not content too
  }
});

test('a named function, streamed: tool_calls deltas', { skip: SKIP }, async () => {
  const stream = await client.chat.completions.create({
    model: 'x', messages: ASK, tools: [WEATHER, NOW], max_tokens: 96, stream: true,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  let name = '', args = '', finish = null, content = '';
  for await (const ch of stream) {
    const d = ch.choices[0]?.delta ?? {};
    if (d.content) content += d.content;
    for (const t of d.tool_calls ?? []) {
      assert.equal(t.index, 0);
      if (t.function?.name) name += t.function.name;
      if (t.function?.arguments) args += t.function.arguments;
    }
    if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
  }
  assert.equal(name, 'get_weather');
  checkWeather(JSON.parse(args));
  assert.equal(finish, 'tool_calls');
  assert.equal(content, '');
});

test('auto: free text stays content unless it is a call', { skip: SKIP }, async () => {
  const r = await client.chat.completions.create({ model: 'x', messages: ASK, tools: [WEATHER], max_tokens: 12, seed: 5 });
  const c = r.choices[0];
  if (c.message.tool_calls?.length) checkWeather(JSON.parse(c.message.tool_calls[0].function.arguments));
  else {
    assert.equal(typeof c.message.content, 'string');
    assert.notEqual(c.finish_reason, 'tool_calls');
  }
});

test('a follow-up turn with the call and the tool result answers', { skip: SKIP }, async () => {
  const first = await client.chat.completions.create({
    model: 'x', messages: ASK, tools: [WEATHER], tool_choice: 'required', max_tokens: 96,
  });
  const msg = first.choices[0].message;
  assert.equal(msg.tool_calls.length, 1);
  const messages = [...ASK, msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: '{"temp": 21}' }];
  const r = await client.chat.completions.create({ model: 'x', messages, tools: [WEATHER], tool_choice: 'none', max_tokens: 4 });
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(!r.choices[0].message.tool_calls?.length);
  assert.ok(r.usage.prompt_tokens > first.usage.prompt_tokens, `${r.usage.prompt_tokens}`);
});

test('ollama: a required call comes back as message.tool_calls', { skip: SKIP }, async () => {
  // tool_choice is an extension of this server's /api/chat; the client passes the field through
  const r = await ol.chat({ model: olModel, messages: ASK, tools: [WEATHER], tool_choice: 'required', options: { num_predict: 96 } });
  const calls = r.message.tool_calls;
  assert.ok(Array.isArray(calls) && calls.length === 1, JSON.stringify(r.message));
  assert.equal(calls[0].function.name, 'get_weather');
  checkWeather(calls[0].function.arguments); // an object, as Ollama's
  assert.equal(r.message.content, '');
  // streamed: the call arrives in one chunk
  const s = await ol.chat({ model: olModel, messages: ASK, tools: [WEATHER], tool_choice: 'required', stream: true, options: { num_predict: 96 } });
  const got = [];
  for await (const ch of s) for (const t of ch.message.tool_calls ?? []) got.push(t);
  assert.equal(got.length, 1);
  checkWeather(got[0].function.arguments);
});
