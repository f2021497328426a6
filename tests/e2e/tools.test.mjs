// tools.test.mjs -- tool calling and structured output over loopback HTTP,
// with the official openai client, against the tiny random model.
//
// The tiny model's weights are random, so what it writes is noise: that is
// the point here. Constrained output must still be valid every time: tool
// calls name a given function and their arguments validate against its
// schema (ajv), json_schema answers parse and validate, at temperature 1.0.
// A two-step agent loop runs both streaming and not; a streamed call's
// argument fragments must equal the non-stream arguments for the same seed.
// The sanitized server runs the loops and the refusals, the release one
// the bulk runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { SAN_BIN, REL_BIN, MODEL, WEATHER, startServer, stopAll } from './serve_util.mjs';

const SKIP = !existsSync(MODEL) ? `model absent: ${MODEL}` : !SAN_BIN ? 'no smolbot binary: run make' : false;
let srv, client, fast, Ajv;

const SEARCH = {
  type: 'function',
  function: {
    name: 'web_search',
    description: 'Search the web',
    parameters: {
      type: 'object',
      properties: { query: { type: 'string', minLength: 1, maxLength: 16 }, safe: { type: 'boolean' } },
      required: ['query', 'safe'],
    },
  },
};
const TOOLS = [WEATHER, SEARCH];
const NO_THINK = { chat_template_kwargs: { enable_thinking: false } };
// room for whole calls: the schemas bound every string and number, but a
// random model may spend three tokens on a character
const CALL_TOKENS = 400;

before(async () => {
  if (SKIP) return;
  srv = await startServer(SAN_BIN, ['-m', MODEL, '--no-db', '--ctx', '1024']);
  const { default: OpenAI } = await import('openai');
  client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  // the bulk validity runs (70 requests) on the release build: the same
  // code, seconds instead of a minute; the sanitized server takes the rest
  const rel = REL_BIN === SAN_BIN ? srv : await startServer(REL_BIN, ['-m', MODEL, '--no-db', '--ctx', '1024']);
  fast = new OpenAI({ baseURL: rel.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  ({ default: Ajv } = await import('ajv'));
});

after(async () => {
  for (const { end, err } of await stopAll()) {
    assert.doesNotMatch(err, /Sanitizer|runtime error/, err);
    assert.deepEqual(end, { code: 0, signal: null }, err);
  }
});

const validator = (schema) => new Ajv({ strict: false }).compile(schema);
const toolSchema = (name) => TOOLS.find((t) => t.function.name === name).function.parameters;

function checkCalls(msg, allowed) {
  assert.ok(Array.isArray(msg.tool_calls) && msg.tool_calls.length >= 1, JSON.stringify(msg));
  for (const c of msg.tool_calls) {
    assert.equal(c.type, 'function');
    assert.match(c.id, /^call_/);
    assert.ok(allowed.includes(c.function.name), c.function.name);
    const args = JSON.parse(c.function.arguments);
    const v = validator(toolSchema(c.function.name));
    assert.ok(v(args), `${c.function.arguments}: ${JSON.stringify(v.errors)}`);
  }
  assert.ok(!(msg.content || '').includes('<tool_call>'), msg.content);
}

test('agent loop: required tool call, tool result, answer (non-stream)', { skip: SKIP }, async () => {
  const messages = [{ role: 'user', content: 'What is the weather in Paris?' }];
  const r1 = await client.chat.completions.create({
    model: 'x', messages, tools: TOOLS, tool_choice: 'required', temperature: 1.0, seed: 7, max_tokens: CALL_TOKENS, ...NO_THINK,
  });
  assert.equal(r1.choices[0].finish_reason, 'tool_calls');
  const msg = r1.choices[0].message;
  checkCalls(msg, ['get_weather', 'web_search']);
  messages.push(msg);
  for (const c of msg.tool_calls) messages.push({ role: 'tool', tool_call_id: c.id, content: '{"temp": 18, "unit": "celsius"}' });
  const r2 = await client.chat.completions.create({ model: 'x', messages, tools: TOOLS, temperature: 0, max_tokens: 8, ...NO_THINK });
  assert.ok(['stop', 'length', 'tool_calls'].includes(r2.choices[0].finish_reason));
  assert.ok(r2.usage.prompt_tokens > r1.usage.prompt_tokens); // the call and its result are in the prompt
});

test('agent loop streaming; streamed arguments equal the non-stream ones', { skip: SKIP }, async () => {
  const req = {
    model: 'x', messages: [{ role: 'user', content: 'Search for cats' }], tools: TOOLS, tool_choice: 'required',
    temperature: 1.0, seed: 11, max_tokens: CALL_TOKENS, parallel_tool_calls: false, ...NO_THINK,
  };
  // both from the same cache state (a first request leaves the prompt cached): a cold prompt
  // reads its last token in a prefill tile, a cached one alone, and at temperature 1 a random
  // model's samples part on such last-bit differences
  await client.chat.completions.create(req);
  const whole = await client.chat.completions.create(req);
  const stream = await client.chat.completions.create({ ...req, stream: true });
  const calls = [];
  let content = '', finish = null;
  for await (const ch of stream) {
    const d = ch.choices[0]?.delta || {};
    if (d.content) content += d.content;
    for (const tc of d.tool_calls || []) {
      if (!calls[tc.index]) {
        assert.ok(tc.id && tc.function.name, 'the first chunk of a call has its id and name');
        calls[tc.index] = { id: tc.id, name: tc.function.name, arguments: '' };
      }
      calls[tc.index].arguments += tc.function?.arguments || '';
    }
    if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
  }
  assert.equal(finish, 'tool_calls');
  assert.ok(!content.includes('<tool_call'), content);
  const wc = whole.choices[0].message.tool_calls;
  assert.equal(calls.length, wc.length);
  for (let i = 0; i < wc.length; i++) {
    assert.equal(calls[i].name, wc[i].function.name);
    assert.equal(calls[i].arguments, wc[i].function.arguments);
  }
  // second step, streamed, with the tool result in the history
  const messages = [...req.messages, { role: 'assistant', content: null, tool_calls: wc },
    ...wc.map((c) => ({ role: 'tool', tool_call_id: c.id, content: 'no results' }))];
  const s2 = await client.chat.completions.create({ ...req, messages, tool_choice: 'none', stream: true, max_tokens: 8 });
  let n = 0;
  for await (const ch of s2) n += ch.choices.length ? 1 : 0;
  assert.ok(n >= 1);
});

test('tool_choice named: 20 requests, every call names it and validates', { skip: SKIP }, async () => {
  const reqs = [];
  for (let i = 0; i < 20; i++) {
    reqs.push(fast.chat.completions.create({
      model: 'x', messages: [{ role: 'user', content: `Weather ${i}?` }], tools: TOOLS,
      tool_choice: { type: 'function', function: { name: 'get_weather' } }, temperature: 1.0, seed: 100 + i,
      max_tokens: CALL_TOKENS, ...NO_THINK,
    }));
  }
  let ok = 0;
  for (const r of await Promise.all(reqs)) {
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    checkCalls(r.choices[0].message, ['get_weather']);
    assert.equal(r.choices[0].message.tool_calls.length, 1);
    ok++;
  }
  console.log(`# named tool_choice: ${ok} of 20 valid`);
});

const SCHEMAS = [
  { type: 'object', properties: { name: { type: 'string', maxLength: 10 }, age: { type: 'integer' } }, required: ['name', 'age'], additionalProperties: false },
  { type: 'object', properties: { user: { type: 'object', properties: { id: { type: 'integer' }, tags: { type: 'array', items: { type: 'string', maxLength: 5 }, maxItems: 3 } }, required: ['id', 'tags'] } }, required: ['user'] },
  { type: 'array', items: { enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 4 },
  { type: 'object', properties: { ok: { type: 'boolean' }, score: { type: 'number' }, level: { enum: [1, 2, 3] }, note: { type: ['string', 'null'], maxLength: 6 } }, required: ['ok', 'score', 'level', 'note'] },
  { type: 'object', properties: { code: { type: 'string', pattern: '^[A-Z0-9]{3,4}$' }, items: { type: 'array', items: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] }, minItems: 1, maxItems: 2 } }, required: ['code', 'items'] },
];

test('response_format json_schema: 50 requests at temperature 1.0 all validate', { skip: SKIP }, async () => {
  const reqs = [];
  for (let i = 0; i < 50; i++) {
    const schema = SCHEMAS[i % SCHEMAS.length];
    reqs.push(fast.chat.completions.create({
      model: 'x', messages: [{ role: 'user', content: `Answer ${i} in JSON.` }], temperature: 1.0, seed: i, max_tokens: 200,
      response_format: { type: 'json_schema', json_schema: { name: `s${i % SCHEMAS.length}`, schema, strict: true } }, ...NO_THINK,
    }).then((r) => ({ r, schema })));
  }
  let valid = 0;
  for (const { r, schema } of await Promise.all(reqs)) {
    assert.equal(r.choices[0].finish_reason, 'stop', r.choices[0].message.content);
    const v = validator(schema);
    const out = JSON.parse(r.choices[0].message.content);
    assert.ok(v(out), `${r.choices[0].message.content}: ${JSON.stringify(v.errors)}`);
    valid++;
  }
  console.log(`# json_schema: ${valid} of 50 valid`);
});

test('response_format json_object gives an object; thinking first when on', { skip: SKIP }, async () => {
  const r = await client.chat.completions.create({
    model: 'x', messages: [{ role: 'user', content: 'JSON please' }], temperature: 1.0, seed: 3, max_tokens: 40,
    response_format: { type: 'json_object' }, ...NO_THINK,
  });
  if (r.choices[0].finish_reason === 'stop') {
    const o = JSON.parse(r.choices[0].message.content);
    assert.equal(typeof o, 'object');
    assert.ok(!Array.isArray(o) && o !== null);
  } else {
    assert.match(r.choices[0].message.content, /^\{/); // cut by max_tokens, but an object so far
  }
});

test('refusals: 400 in OpenAI shape, naming the field', { skip: SKIP }, async () => {
  const post = async (body) => {
    const res = await fetch(srv.url + '/v1/chat/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 4, ...body }),
    });
    return { status: res.status, json: await res.json() };
  };
  const cases = [
    [{ tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice'],
    [{ tool_choice: 'required' }, 'tool_choice'],
    [{ tool_choice: 'sometimes', tools: TOOLS }, 'tool_choice'],
    [{ response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'integer', minimum: 3 } } } }, 'response_format.json_schema.schema'],
    [{ response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'string', format: 'email' } } } }, 'response_format.json_schema.schema'],
    [{ response_format: { type: 'yaml' } }, 'response_format'],
    [{ tools: TOOLS, tool_choice: 'required', response_format: { type: 'json_object' } }, 'response_format'],
    [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { $ref: '#/x' } } } } }], tool_choice: 'required' }, 'tools'],
    [{ tools: [{ type: 'function', function: { name: 'bad name!' } }] }, 'tools[0].function.name'],
    [{ tools: [{ type: 'retrieval' }] }, 'tools[0]'],
    [{ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: 'not json' } }] }] }, 'messages[1].tool_calls[0].function.arguments'],
  ];
  for (const [body, param] of cases) {
    const { status, json } = await post(body);
    assert.equal(status, 400, JSON.stringify(body));
    assert.equal(json.error.param, param, JSON.stringify(json));
    assert.equal(json.error.type, 'invalid_request_error');
    assert.ok(json.error.message.length > 10);
  }
  // the unsupported keyword is named in the message
  const { json } = await post({ response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: 'integer', minimum: 3 } } } });
  assert.match(json.error.message, /minimum/);
});

test('logprobs: top sums to at most 1, chosen listed, greedy is the best; stream equals non-stream', { skip: SKIP }, async () => {
  const base = { model: 'x', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 12, logprobs: true, top_logprobs: 5, ...NO_THINK };
  const same = (a, b) => a.token === b.token && JSON.stringify(a.bytes) === JSON.stringify(b.bytes);
  for (const temperature of [0, 1.0]) {
    const r = await client.chat.completions.create({ ...base, temperature, seed: 9 });
    const content = r.choices[0].logprobs.content;
    assert.ok(content.length >= 1 && content.length <= 12);
    for (const t of content) {
      assert.ok(t.top_logprobs.length <= 5 && t.top_logprobs.length >= 1);
      const sum = t.top_logprobs.reduce((s, x) => s + Math.exp(x.logprob), 0);
      assert.ok(sum <= 1 + 1e-6, `sum ${sum}`);
      assert.ok(t.logprob <= 0);
      for (let i = 1; i < t.top_logprobs.length; i++) assert.ok(t.top_logprobs[i - 1].logprob >= t.top_logprobs[i].logprob);
      const last = t.top_logprobs[t.top_logprobs.length - 1].logprob;
      if (t.logprob > last) assert.ok(t.top_logprobs.some((x) => same(x, t)), 'the chosen token is in its top k');
      if (temperature === 0) {
        assert.ok(same(t.top_logprobs[0], t), 'greedy picks the most likely token');
        assert.equal(t.logprob, t.top_logprobs[0].logprob);
      }
      assert.deepEqual([...Buffer.from(t.bytes)].length, t.bytes.length);
    }
    // the same seed streamed: the same tokens and values. The second request
    // reuses the first one's cached prompt, so its logits come from another
    // prefill split and may differ in the last printed digit.
    const s = await client.chat.completions.create({ ...base, temperature, seed: 9, stream: true });
    const got = [];
    for await (const ch of s) for (const t of ch.choices[0]?.logprobs?.content || []) got.push(t);
    assert.deepEqual(got.map((t) => t.token), content.map((t) => t.token));
    got.forEach((t, i) => assert.ok(Math.abs(t.logprob - content[i].logprob) <= 1e-4, `${t.logprob} vs ${content[i].logprob}`));
  }
  // top_logprobs without logprobs, or above 20: 400 naming the field
  for (const body of [{ top_logprobs: 3 }, { logprobs: true, top_logprobs: 21 }]) {
    const res = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...base, logprobs: undefined, top_logprobs: undefined, ...body }) });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.param, 'top_logprobs');
  }
});

test('/v1/completions: raw prompt or token ids, echo, stream equals non-stream, suffix refused', { skip: SKIP }, async () => {
  const post = async (body) => {
    const res = await fetch(srv.url + '/v1/completions', {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    return { status: res.status, json: await res.json().catch(() => null) };
  };
  const r = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  const text = r.choices[0].text;
  const e = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 8, temperature: 0, echo: true });
  assert.equal(e.choices[0].text, 'Once upon a time' + text);
  // token ids: the same prompt tokenized by the server
  const tk = await (await fetch(srv.url + '/tokenize', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ content: 'Once upon a time' }) })).json();
  const byIds = await client.completions.create({ model: 'x', prompt: tk.tokens, max_tokens: 8, temperature: 0 });
  assert.equal(byIds.choices[0].text, text);
  assert.equal(byIds.usage.prompt_tokens, tk.tokens.length);
  const s = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 8, temperature: 0, stream: true });
  let streamed = '', finish = null;
  for await (const ch of s) {
    streamed += ch.choices[0]?.text || '';
    if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
  }
  assert.equal(streamed, text);
  assert.equal(finish, r.choices[0].finish_reason);
  // a grammar works here too
  const j = await client.completions.create({ model: 'x', prompt: 'JSON:', max_tokens: 60, temperature: 1.0, seed: 4,
    response_format: { type: 'json_schema', json_schema: { name: 'a', schema: SCHEMAS[2] } } });
  assert.ok(validator(SCHEMAS[2])(JSON.parse(j.choices[0].text)), j.choices[0].text);
  for (const [body, param] of [[{ prompt: 'a', suffix: 'b' }, 'suffix'], [{ prompt: 'a', logprobs: 3 }, 'logprobs'],
    [{ prompt: ['a', 'b'] }, 'prompt'], [{ prompt: '' }, 'prompt'], [{ prompt: [1, -2] }, 'prompt'],
    [{ prompt: 'a', tools: TOOLS }, 'tools'], [{ prompt: 'a', n: 2 }, 'n']]) {
    const { status, json } = await post({ model: 'x', max_tokens: 2, ...body });
    assert.equal(status, 400, JSON.stringify(body));
    assert.equal(json.error.param, param, JSON.stringify(json));
  }
});

test('/apply-template renders tools and tool calls like the chat route', { skip: SKIP }, async () => {
  const messages = [{ role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
    { role: 'tool', tool_call_id: 'c1', content: '{"temp": 18}' }];
  const res = await fetch(srv.url + '/apply-template', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages, tools: [WEATHER], chat_template_kwargs: { enable_thinking: false } }) });
  const { prompt } = await res.json();
  assert.ok(prompt.includes("<tools>\n{'type': 'function', 'function': {'name': 'get_weather', 'description': 'Get the current weather for a city', 'parameters': {'type': 'object', 'properties': {'city': {'type': 'string', 'maxLength': 12}"), prompt);
  assert.ok(prompt.includes('<|im_start|>assistant\n<think>\n\n</think>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n{"temp": 18}<|im_end|>\n'), prompt);
});

test('n: several choices of one prompt, a seed each, streamed or not; limits', { skip: SKIP }, async () => {
  const messages = [{ role: 'system', content: 'You are a helpful assistant who answers briefly.' },
    { role: 'user', content: 'Tell me about the sea, its ships and the storms they met.' }];
  const base = { model: 'x', messages, max_tokens: 8, temperature: 1.0, seed: 21, ...NO_THINK };
  const one = await client.chat.completions.create(base);
  const r = await client.chat.completions.create({ ...base, n: 3 });
  assert.equal(r.choices.length, 3);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  // Choice 0 draws with the request's seed. Compared on the first token:
  // later ones come from decode steps of 1 row here and 3 rows there,
  // whose last float bits differ, and at temperature 1 the random model's
  // near-flat distribution turns any bit into another draw.
  const first = { ...base, max_tokens: 1, logprobs: true };
  const one1 = await client.chat.completions.create(first);
  const r1 = await client.chat.completions.create({ ...first, n: 3 });
  assert.equal(r1.choices[0].logprobs.content[0].token, one1.choices[0].logprobs.content[0].token, 'choice 0 has the request seed');
  assert.ok(new Set(r.choices.map((c) => c.message.content)).size > 1, 'each choice has a seed of its own');
  assert.equal(r.usage.prompt_tokens, 3 * one.usage.prompt_tokens); // the engine's work: n prompts
  // the same request again: the same choices, their prompts from the idle caches
  const again = await client.chat.completions.create({ ...base, n: 3 });
  assert.deepEqual(again.choices.map((c) => c.message.content), r.choices.map((c) => c.message.content));
  const cached = again.usage.prompt_tokens_details.cached_tokens;
  assert.ok(cached > again.usage.prompt_tokens / 2, `cached ${cached} of ${again.usage.prompt_tokens}`);
  console.log(`# n=3: cached ${r.usage.prompt_tokens_details.cached_tokens} then ${cached} of ${r.usage.prompt_tokens} prompt tokens`);
  // streamed: each chunk names its choice; the texts join into the same choices, one usage at the end
  const s = await client.chat.completions.create({ ...base, n: 3, stream: true, stream_options: { include_usage: true } });
  const texts = ['', '', ''], finishes = [null, null, null];
  let usage = null;
  for await (const ch of s) {
    if (ch.usage) { assert.equal(usage, null, 'one usage chunk'); usage = ch.usage; }
    for (const c of ch.choices) {
      texts[c.index] += c.delta?.content || '';
      if (c.finish_reason) { assert.equal(finishes[c.index], null); finishes[c.index] = c.finish_reason; }
    }
  }
  assert.deepEqual(texts, r.choices.map((c) => c.message.content));
  assert.deepEqual(finishes, r.choices.map((c) => c.finish_reason));
  assert.equal(usage.prompt_tokens, r.usage.prompt_tokens);
  assert.equal(usage.completion_tokens, r.usage.completion_tokens);
  // tools: every choice's calls are parsed
  const t = await client.chat.completions.create({ ...base, n: 2, tools: TOOLS, tool_choice: 'required', max_tokens: CALL_TOKENS });
  for (const c of t.choices) checkCalls(c.message, ['get_weather', 'web_search']);
  const post = async (body) => {
    const res = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, json: await res.json() };
  };
  for (const body of [{ ...base, n: 9 }, { ...base, n: 0 }, { ...base, n: 'two' }]) {
    const { status, json } = await post(body);
    assert.equal(status, 400, JSON.stringify(body));
    assert.equal(json.error.param, 'n', JSON.stringify(json));
  }
});
