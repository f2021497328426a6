/* openai.c -- the OpenAI-compatible API, health, props and metrics.
 *
 * Routes (everything else returns 0 so ui.c gets it):
 *   GET  /health                 200 {"status":"ok"} | 503 loading/failed/stopping/draining
 *                                | 200 {"status":"no_model"} (see below)
 *   GET  /metrics                Prometheus text (smolbot_* names)
 *   GET  /props                  llama.cpp-like server properties
 *   GET  /v1/models              the one model
 *   POST /v1/chat/completions    stream and non-stream; tools, response_format, logprobs, n
 *   POST /v1/completions         the legacy raw-prompt route, stream and non-stream
 *   POST /tokenize, /detokenize, /apply-template   (llama.cpp's shapes)
 * Every route but /health needs the API key when one is configured.
 *
 * No-model mode answers /health with 200 {"status":"no_model","message"}:
 * the process is healthy and serving the page (which says what to do), so
 * `make run` and container health checks do not restart it in a loop;
 * generation routes answer 503 (code "no_model") instead.
 *
 * A completion is a job of the stream bridge (bridge.h), which submits it,
 * keeps its log and cancels it when its client leaves. The two framings
 * here read a job:
 *   non-stream  the handler waits for the end (bridge_wait) and builds the
 *               response from the result.
 *   stream      the handler answers with an SSE stream right after submit
 *               (headers go out at once), sends the role chunk, attaches
 *               the stream as a listener and returns; the bridge thread
 *               hands it each new piece of text (one chunk per piece, as
 *               it comes) and the end (the finish chunk, usage, [DONE]).
 *               A stream that is gone or a write that fails drops the
 *               listener, and with no listener left the job is cancelled
 *               at once (grace 0), queued or running. A stream for a
 *               registry model that is not loaded (chat or legacy
 *               completion) answers before the load: a loader thread
 *               waits for it (the stream's ": ping"s go out meanwhile; a
 *               client that leaves ends the wait), then runs the request
 *               onto the open stream.
 * n > 1 choices are n jobs of the same prompt (a seed each), answered
 * together: non-stream once all have ended; streamed, a listener per
 * choice on the one SSE stream (oai_group), chunks naming their index, the
 * usage and [DONE] after the last.
 * Chunks are one jansson object per stream whose delta and finish_reason
 * change, serialized into a reused buffer (json_dumpb). The engine hands
 * out whole UTF-8 characters only, so no chunk ever splits one, and the
 * concatenated deltas are exactly the non-stream text (both are the same
 * log).
 */
#include "api/api_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "prompt/prompt.h"
#include "tok/tok.h"

#define REAL_FMT JSON_REAL_PRECISION(6)
#define MAX_CHOICES 8 /* n: each choice is a sequence of its own in the engine */

static int is_stopping(api *a) { return bridge_stopping(a->br); }

/* ---- small helpers ---------------------------------------------------------- */

static int send_json(http_req *r, int status, json_t *o) { return api_send_json(&(api_rq){r, 0}, status, o); }

static int bad(http_req *r, const char *param, const char *fmt, const char *detail) {
    return api_error(r, 400, "invalid_request_error", "invalid_value", param, fmt, detail);
}

/* 503 for every state but READY; 0 when ready. */
static int not_ready(api *a, http_req *r) { return api_not_ready(a, &(api_rq){r, 0}); }

static json_t *parse_body(http_req *r) { return api_parse_json(&(api_rq){r, 0}, NULL, 0); }

static const char *state_name(int st) {
    switch (st) {
    case ENGINE_LOADING: return "loading";
    case ENGINE_READY: return "ready";
    case ENGINE_NO_MODEL: return "no_model";
    case ENGINE_FAILED: return "failed";
    default: return "stopping";
    }
}

/* ---- messages ------------------------------------------------------------ */

/* Parse "messages" (a non-empty array). 0, or -1 after answering 400. */
static int parse_messages(api *a, http_req *r, json_t *root, api_msgs *m) {
    json_t *arr = json_object_get(root, "messages");
    if (json_is_array(arr) && !json_array_size(arr)) return bad(r, "messages", "%s", "'messages' must not be empty"), -1;
    return api_parse_messages(&(api_rq){r, 0}, arr, a->cfg.max_messages, m);
}

/* Thinking toggle from chat_template_kwargs.enable_thinking and
 * reasoning_effort ("none" = /no_think). Default: on (the template's). */
static int parse_thinking(http_req *r, json_t *root, int *thinking) {
    *thinking = 1;
    json_t *kw = json_object_get(root, "chat_template_kwargs");
    if (kw && !json_is_null(kw)) {
        if (!json_is_object(kw)) return bad(r, "chat_template_kwargs", "%s", "'chat_template_kwargs' must be an object"), -1;
        json_t *et = json_object_get(kw, "enable_thinking");
        if (et && !json_is_null(et)) {
            if (!json_is_boolean(et))
                return bad(r, "chat_template_kwargs.enable_thinking", "%s", "'enable_thinking' must be a boolean"), -1;
            *thinking = json_is_true(et);
        }
    }
    json_t *re = json_object_get(root, "reasoning_effort");
    if (re && !json_is_null(re)) {
        const char *v = json_is_string(re) ? json_string_value(re) : "";
        if (!strcmp(v, "none")) *thinking = 0;
        else if (!strcmp(v, "minimal") || !strcmp(v, "low") || !strcmp(v, "medium") || !strcmp(v, "high")) *thinking = 1;
        else return bad(r, "reasoning_effort", "%s", "'reasoning_effort' must be none, minimal, low, medium or high"), -1;
    }
    return 0;
}

/* ---- request fields ---------------------------------------------------------- */

static int get_bool(http_req *r, json_t *root, const char *key, int *out) {
    return api_get_bool(&(api_rq){r, 0}, root, key, out);
}


typedef struct chat_req {
    sample_params sp;
    int max_tokens;     /* 0: not given */
    const char *stops[SAMPLE_STOP_MAX];
    size_t n_stops;
    int stream, include_usage, thinking, ignore_eos;
    int tool_choice;    /* API_TC_*: API_TC_NONE also when there are no tools */
    int parallel;       /* parallel_tool_calls */
    api_tools t;        /* the prompt's tool list and the output's grammar */
    int logprobs, top_logprobs;
    int n;              /* choices: 1..MAX_CHOICES */
    api_model am;       /* the model it runs on (api_model_put at the end) */
} chat_req;

static void chat_req_free(chat_req *q) { api_tools_free(&q->t); }

/* tools, tool_choice, parallel_tool_calls and response_format: the prompt's
 * tool list and the output's grammar. 0, or -1 after answering 400. */
static int parse_tools(http_req *r, json_t *root, chat_req *q) {
    const api_rq rq = {r, 0};
    json_t *tools = json_object_get(root, "tools"), *tc = json_object_get(root, "tool_choice");
    size_t nt;
    if (api_tools_check(&rq, tools, &nt)) return -1;
    const char *named = NULL;
    if (api_tool_choice(&rq, tc, nt, &q->tool_choice, &named)) return -1;
    q->parallel = 1;
    if (api_get_bool(&rq, root, "parallel_tool_calls", &q->parallel) < 0) return -1;

    /* response_format */
    json_t *rf = json_object_get(root, "response_format");
    const char *rft = NULL;
    json_t *schema = NULL;
    if (rf && !json_is_null(rf)) {
        rft = json_string_value(json_object_get(rf, "type"));
        if (!json_is_object(rf) || !rft || (strcmp(rft, "text") && strcmp(rft, "json_object") && strcmp(rft, "json_schema")))
            return bad(r, "response_format", "%s", "'response_format.type' must be text, json_object or json_schema"), -1;
        if (!strcmp(rft, "text")) rft = NULL;
        else if (!strcmp(rft, "json_schema")) {
            json_t *js = json_object_get(rf, "json_schema");
            schema = json_object_get(js, "schema");
            if (!json_is_object(js) || (schema && !json_is_object(schema) && !json_is_boolean(schema)))
                return bad(r, "response_format.json_schema", "%s", "'json_schema' must be {\"name\", \"schema\": {...}, \"strict\"}"), -1;
        }
    }
    if (rft && q->tool_choice != API_TC_NONE)
        return bad(r, "response_format", "%s", "a JSON 'response_format' cannot be combined with tool calls: "
                                               "use tool_choice 'none', or describe the answer as a tool"), -1;

    if (q->tool_choice != API_TC_NONE) {
        if (api_tools_build(&rq, tools, q->tool_choice, named, q->parallel, api_calls_form(q->am.eng), &q->t))
            return -1;
    } else if (rft) {
        json_t *any = strcmp(rft, "json_object") ? schema : json_pack("{s:s}", "type", "object");
        int rc = api_schema_grammar(&rq, any, "response_format.json_schema.schema", &q->t);
        if (any != schema) json_decref(any);
        if (rc) return -1;
    }
    return 0;
}

/* Every field but messages. 0, or -1 after answering 400. */
static int parse_fields(api *a, http_req *r, json_t *root, chat_req *q) {
    long long ll;
    int rc, b;
    sample_params_default(&q->sp);
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) return bad(r, "model", "%s", "'model' must be a string"), -1;
    const api_rq rq = {r, 0};
    if (api_parse_sampling(&rq, root, 2, &q->sp)) return -1;
    long long cap = a->cfg.max_tokens > 0 ? a->cfg.max_tokens : engine_ctx_size(q->am.eng ? q->am.eng : a->eng);
    const char *mt_key = json_object_get(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((rc = api_get_int(&rq, root, mt_key, 1, 1ll << 40, &ll)) < 0) return -1;
    if (!rc) {
        if (ll > cap) {
            api_error(r, 400, "invalid_request_error", "invalid_value", mt_key,
                      "'%s' is %lld; this server allows at most %lld", mt_key, ll, cap);
            return -1;
        }
        q->max_tokens = (int)ll;
    }
    q->n = 1;
    if ((rc = api_get_int(&rq, root, "n", 1, 1ll << 40, &ll)) < 0) return -1;
    if (!rc && ll > MAX_CHOICES)
        return api_bad(&rq, 400, "invalid_value", "n", "'n' is %lld; at most %d choices per request", ll, MAX_CHOICES);
    if (!rc) q->n = (int)ll;
    if (api_parse_stops(&rq, json_object_get(root, "stop"), q->stops, &q->n_stops)) return -1;
    q->stream = 0;
    if (get_bool(r, root, "stream", &q->stream) < 0) return -1;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return bad(r, "stream_options", "%s", "'stream_options' must be an object"), -1;
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_null(iu) && !json_is_boolean(iu))
            return bad(r, "stream_options.include_usage", "%s", "'include_usage' must be a boolean"), -1;
        q->include_usage = json_is_true(iu);
    }
    if ((rc = get_bool(r, root, "ignore_eos", &b)) < 0) return -1; /* llama.cpp extension */
    if (!rc) q->ignore_eos = b;
    if (get_bool(r, root, "logprobs", &q->logprobs) < 0) return -1;
    if ((rc = api_get_int(&rq, root, "top_logprobs", 0, SAMPLE_TOP_MAX, &ll)) < 0) return -1;
    if (!rc) {
        if (!q->logprobs) return bad(r, "top_logprobs", "%s", "'top_logprobs' needs 'logprobs': true"), -1;
        q->top_logprobs = (int)ll;
    }
    if (parse_thinking(r, root, &q->thinking)) return -1;
    core_err err = {0};
    if (sample_params_check(&q->sp, &err)) return bad(r, NULL, "%s", err.msg), -1;
    return parse_tools(r, root, q);
}

/* The request's "model": the engine it runs on (q->am). 0, or -1 after answering. */
static int request_model(api *a, http_req *r, json_t *root, chat_req *q) {
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) return bad(r, "model", "%s", "'model' must be a string"), -1;
    return api_model_get(a, &(api_rq){r, 0}, json_is_string(model) ? json_string_value(model) : NULL, &q->am);
}

/* The request parsers without a server (fuzz_api): with r == NULL,
 * api_error formats its answer and drops it. Same code as the routes. */
int api_parse_request(const api_config *cfg, int which, const char *body, size_t len) {
    api x, *a = &x;
    api_parse_only(&x, cfg);
    json_t *root = api_parse_json(&(api_rq){NULL, 0}, body, len);
    if (!root) return 1;
    api_msgs m = {0};
    chat_req q = {0};
    int thinking = 1, add_gen = 1, refused;
    if (which == API_PARSE_CHAT)
        refused = parse_fields(a, NULL, root, &q) || parse_messages(a, NULL, root, &m);
    else
        refused = parse_messages(a, NULL, root, &m) || parse_thinking(NULL, root, &thinking) ||
                  get_bool(NULL, root, "add_generation_prompt", &add_gen) < 0 || parse_tools(NULL, root, &q);
    api_msgs_free(&m);
    chat_req_free(&q);
    json_decref(root);
    return refused ? 1 : 0;
}

/* ---- logprobs ------------------------------------------------------------------ */

/* {"token", "logprob", "bytes"} of one id: the token's text (a partial
 * UTF-8 character shows as U+FFFD in token, whole in bytes). */
static json_t *lp_entry(const tok *tk, int32_t id, float logprob) {
    core_buf raw = {0}, txt = {0};
    json_t *o = NULL, *bytes = json_array();
    if (!bytes || tok_decode(tk, &id, 1, 1, &raw) || core_utf8_sanitize(raw.data ? raw.data : "", raw.len, &txt)) goto out;
    for (size_t i = 0; i < raw.len; i++) json_array_append_new(bytes, json_integer((unsigned char)raw.data[i]));
    /* -inf is not JSON: OpenAI writes -9999 for "no chance" */
    o = json_pack("{s:s%, s:f, s:O}", "token", txt.data ? txt.data : "", txt.len, "logprob",
                  isfinite(logprob) ? (double)logprob : -9999.0, "bytes", bytes);
out:
    json_decref(bytes);
    core_buf_free(&raw);
    core_buf_free(&txt);
    return o;
}

/* logprobs.content for lp[0..n): each token with its top_logprobs. */
static json_t *lp_content(const tok *tk, const bridge_lp *lp, size_t n) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *e = lp_entry(tk, lp[i].id, lp[i].logprob), *top = json_array();
        for (int k = 0; top && k < lp[i].n_top; k++) json_array_append_new(top, lp_entry(tk, lp[i].top[k].id, lp[i].top[k].logprob));
        if (!e || !top || json_object_set_new(e, "top_logprobs", top) || json_array_append_new(arr, e)) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

/* ---- the stream framing (a bridge listener) -------------------------------- */

/* The choices of one streamed request (n > 1): one SSE stream, one
 * listener per choice. Listeners run on the bridge thread, one at a time,
 * so the counts need no lock of their own. */
typedef struct oai_group {
    int refs;          /* listeners not yet dropped: the last closes the stream */
    int running;       /* choices not yet ended: the last sends usage and [DONE] */
    int failed;        /* a choice ended in an error or was cancelled: no usage */
    engine_stats sum;  /* usage over the choices */
    engine_stats st0;  /* choice 0's, for timings */
} oai_group;

typedef struct oai_stream {
    api *a;
    http_stream *s;
    oai_group *g;      /* n > 1: the request's choices; NULL: the one */
    int index;
    json_t *chunk;     /* {"id",...,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":null}]} */
    json_t *choice;    /* chunk.choices[0] (borrowed) */
    json_t *delta;     /* choice.delta (borrowed) */
    core_buf out;      /* one serialized event, reused */
    int include_usage;
    int parse_calls;   /* 0, or API_CALLS_*: tool calls in that form become delta.tool_calls */
    api_calls_stream cs;
    const tok *tk;     /* logprobs: the token texts; NULL: not asked */
    int legacy;        /* /v1/completions */
    char model[128];   /* the name the chunks carry */
} oai_stream;

static int send_content(void *ctx, const char *text, size_t len);
static int send_call(void *ctx, json_t *tc, int i);

/* legacy: /v1/completions' chunks ({"object": "text_completion", choices[0].text}). */
static oai_stream *oai_stream_new(api *a, const char *model, const char *id, long long created, int include_usage,
                                  int parse_calls, int legacy) {
    oai_stream *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->a = a;
    snprintf(x->model, sizeof x->model, "%s", model);
    x->include_usage = include_usage;
    x->parse_calls = parse_calls;
    x->legacy = legacy;
    api_calls_stream_init(&x->cs, 0, parse_calls, send_content, send_call, x);
    if (legacy)
        x->chunk = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[{s:i, s:s, s:n, s:n}]}", "id", id, "object",
                             "text_completion", "created", (json_int_t)created, "model", model,
                             "system_fingerprint", "smolbot", "choices", "index", 0, "text", "", "logprobs",
                             "finish_reason");
    else
        x->chunk = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[{s:i, s:{}, s:n, s:n}]}", "id", id, "object",
                             "chat.completion.chunk", "created", (json_int_t)created, "model", model,
                             "system_fingerprint", "smolbot", "choices", "index", 0, "delta", "logprobs",
                             "finish_reason");
    if (x->chunk) {
        x->choice = json_array_get(json_object_get(x->chunk, "choices"), 0);
        x->delta = json_object_get(x->choice, "delta");
    }
    if (!x->choice || (!legacy && !x->delta)) {
        json_decref(x->chunk);
        free(x);
        return NULL;
    }
    return x;
}

/* Serialize o into x->out (no allocation once the buffer is big enough) and send it. */
static int send_obj(oai_stream *x, const json_t *o) {
    size_t n = json_dumpb(o, x->out.data, x->out.data ? x->out.cap : 0, JSON_COMPACT | REAL_FMT);
    if (n == 0) return CORE_ENOMEM;
    if (!x->out.data || n > x->out.cap) {
        if (core_buf_reserve(&x->out, n)) return CORE_ENOMEM;
        n = json_dumpb(o, x->out.data, x->out.cap, JSON_COMPACT | REAL_FMT);
        if (n == 0 || n > x->out.cap) return CORE_ENOMEM;
    }
    return http_stream_event(x->s, NULL, NULL, x->out.data, n);
}

/* One chunk whose delta is {"KEY":"text"} (key NULL: {}), with finish. */
static int send_delta(oai_stream *x, const char *key, const char *text, size_t len, const char *finish) {
    if (x->legacy) { /* text only: no role, no reasoning (the prompt is raw) */
        if (json_object_set_new(x->choice, "text", json_stringn(key ? text : "", key ? len : 0)) ||
            json_object_set_new(x->choice, "finish_reason", finish ? json_string(finish) : json_null()))
            return CORE_ENOMEM;
        return send_obj(x, x->chunk);
    }
    json_object_clear(x->delta);
    if (key && json_object_set_new(x->delta, key, json_stringn(text, len))) return CORE_ENOMEM;
    if (json_object_set_new(x->choice, "finish_reason", finish ? json_string(finish) : json_null())) return CORE_ENOMEM;
    return send_obj(x, x->chunk);
}

static int send_content(void *ctx, const char *text, size_t len) { return send_delta(ctx, "content", text, len, NULL); }

static json_t *usage_json(const engine_stats *st) {
    return json_pack("{s:i, s:i, s:i, s:{s:i}, s:{s:i}}", "prompt_tokens", st->prompt_tokens, "completion_tokens",
                     st->gen_tokens, "total_tokens", st->prompt_tokens + st->gen_tokens, "prompt_tokens_details",
                     "cached_tokens", st->cached_tokens, "completion_tokens_details", "reasoning_tokens",
                     st->reasoning_tokens);
}

static json_t *timings_json(const engine_stats *st) {
    return json_pack("{s:i, s:f, s:f, s:i, s:f, s:f, s:f, s:f}", "prompt_n", st->prompt_tokens - st->cached_tokens,
                     "prompt_ms", st->prefill_ms, "prompt_per_second", st->prefill_tok_s, "predicted_n", st->gen_tokens,
                     "predicted_ms", st->decode_ms, "predicted_per_second", st->decode_tok_s, "ttft_ms", st->ttft_ms,
                     "queue_ms", st->queue_ms);
}

static int send_error_event(oai_stream *x, const char *type, const char *code, const char *msg) {
    json_t *o = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type", type, "param", "code", code);
    int rc = o ? send_obj(x, o) : CORE_ENOMEM;
    json_decref(o);
    return rc;
}

/* A finished tool call: its chunks (index, id, type and name with empty
 * arguments; then the arguments). tc taken. */
static int send_call(void *ctx, json_t *tc, int i) {
    oai_stream *x = ctx;
    int rc = 0;
    json_t *f = json_object_get(tc, "function");
    json_t *first = json_pack("[{s:i, s:O, s:s, s:{s:O, s:s}}]", "index", i, "id", json_object_get(tc, "id"),
                              "type", "function", "function", "name", json_object_get(f, "name"), "arguments", "");
    json_t *second = json_pack("[{s:i, s:{s:O}}]", "index", i, "function", "arguments",
                               json_object_get(f, "arguments"));
    if (!first || !second) rc = CORE_ENOMEM;
    json_t *parts[2] = {first, second};
    for (int k = 0; k < 2 && !rc; k++) {
        json_object_clear(x->delta);
        if (json_object_set(x->delta, "tool_calls", parts[k]) ||
            json_object_set_new(x->choice, "finish_reason", json_null()))
            rc = CORE_ENOMEM;
        else
            rc = send_obj(x, x->chunk);
    }
    json_decref(first);
    json_decref(second);
    json_decref(tc);
    return rc;
}

/* The end: the finish chunk (+ usage) or an error event, then [DONE]. */
static void stream_tail(oai_stream *x, const bridge_out *o) {
    int ok = 0;
    if (!strcmp(o->finish, "error")) {
        send_error_event(x, o->err_code == CORE_ERANGE ? "invalid_request_error" : "server_error",
                         o->err_code == CORE_ERANGE ? "context_length_exceeded" : "internal_error",
                         o->err_msg[0] ? o->err_msg : "generation failed");
    } else if (!strcmp(o->finish, "cancelled")) {
        if (!http_stream_gone(x->s))
            send_error_event(x, "server_error", o->stopping ? "shutting_down" : "cancelled",
                             o->stopping ? "the server is shutting down" : "the request was cancelled");
    } else {
        const char *finish = o->finish;
        if (x->parse_calls) {
            api_calls_stream_finish(&x->cs);
            if (x->cs.n_calls && !strcmp(finish, "stop")) finish = "tool_calls";
        }
        send_delta(x, NULL, NULL, 0, finish);
        ok = 1;
    }
    const engine_stats *st = o->st, *st0 = o->st;
    oai_group *g = x->g;
    if (g) { /* the end of the request is the end of its last choice */
        g->failed |= !ok;
        g->sum.prompt_tokens += o->st->prompt_tokens;
        g->sum.cached_tokens += o->st->cached_tokens;
        g->sum.gen_tokens += o->st->gen_tokens;
        g->sum.reasoning_tokens += o->st->reasoning_tokens;
        if (!x->index) g->st0 = *o->st;
        if (--g->running) return;
        ok = !g->failed;
        st = &g->sum;
        st0 = &g->st0;
    }
    if (ok && x->include_usage) {
        json_t *u = json_pack("{s:O, s:O, s:O, s:s, s:[], s:o, s:o}", "id", json_object_get(x->chunk, "id"), "object",
                              json_object_get(x->chunk, "object"), "created", json_object_get(x->chunk, "created"), "model",
                              x->model, "choices", "usage", usage_json(st), "timings", timings_json(st0));
        if (u) send_obj(x, u);
        json_decref(u);
    }
    http_stream_event(x->s, NULL, NULL, "[DONE]", 6);
}

static int oai_deliver(void *ctx, const bridge_out *o) {
    oai_stream *x = ctx;
    int rc = 0;
    if (o->reasoning_end > o->reasoning_from)
        rc = send_delta(x, "reasoning_content", o->reasoning + o->reasoning_from, o->reasoning_end - o->reasoning_from,
                        NULL);
    if (!rc && o->answer_end > o->answer_from) {
        if (!x->parse_calls) {
            rc = send_delta(x, "content", o->answer + o->answer_from, o->answer_end - o->answer_from, NULL);
        } else {
            rc = api_calls_stream_push(&x->cs, o->answer + o->answer_from, o->answer_end - o->answer_from);
        }
    }
    if (!rc && x->tk && o->lp_end > o->lp_from) { /* this delivery's tokens, in a chunk of their own */
        json_t *c = lp_content(x->tk, o->lp + o->lp_from, o->lp_end - o->lp_from);
        json_object_clear(x->delta);
        if (!c || json_object_set_new(x->choice, "logprobs", json_pack("{s:o, s:n}", "content", c, "refusal")) ||
            json_object_set_new(x->choice, "finish_reason", json_null()))
            rc = CORE_ENOMEM;
        else
            rc = send_obj(x, x->chunk);
        json_object_set_new(x->choice, "logprobs", json_null());
    }
    if (o->end) stream_tail(x, o);
    return rc != 0;
}

static int oai_gone(void *ctx) { return http_stream_gone(((oai_stream *)ctx)->s); }

static void oai_stream_free(oai_stream *x) {
    if (!x) return;
    json_decref(x->chunk);
    core_buf_free(&x->out);
    api_calls_stream_free(&x->cs);
    free(x);
}

/* The stream ends (its bytes still go out) and the route's count drops. */
static void oai_drop(void *ctx) {
    oai_stream *x = ctx;
    if (x->g) { /* the stream is the group's: its last listener closes it */
        if (--x->g->refs) x->s = NULL;
        else free(x->g);
    }
    if (x->s) {
        http_stream_close(x->s);
        api_stream_give(x->a);
    }
    oai_stream_free(x);
}

static const bridge_listener_ops oai_ops = {oai_deliver, oai_gone, oai_drop};

/* ---- /v1/chat/completions --------------------------------------------------------- */

static int submit_error(api *a, http_req *r, int rc, const char *msg) {
    return api_submit_error(a, &(api_rq){r, 0}, rc, "messages", msg);
}

/* Choice i of a finished job: {"index", "message", "logprobs", "finish_reason"}. */
static json_t *choice_json(const tok *tk, bridge_job *j, int i, int parse_calls, int logprobs) {
    const char *text, *reas, *finish, *emsg;
    size_t tl, rl;
    const engine_stats *st;
    int ecode;
    bridge_result(j, &text, &tl, &reas, &rl, &st, &finish, &ecode, &emsg);
    json_t *msg, *calls = NULL;
    if (parse_calls) {
        core_buf content = {0};
        calls = json_array();
        if (!calls || api_split_calls(text, tl, 0, parse_calls, &content, calls)) {
            json_decref(calls);
            core_buf_free(&content);
            return NULL;
        }
        size_t cl = content.len;
        msg = json_pack("{s:s, s:s%}", "role", "assistant", "content", content.data ? content.data : "", cl);
        if (msg && json_array_size(calls)) {
            if (!cl) json_object_set_new(msg, "content", json_null());
            json_object_set(msg, "tool_calls", calls);
            if (!strcmp(finish, "stop")) finish = "tool_calls";
        }
        json_decref(calls);
        core_buf_free(&content);
    } else {
        msg = json_pack("{s:s, s:s%}", "role", "assistant", "content", text, tl);
    }
    if (msg && rl) json_object_set_new(msg, "reasoning_content", json_stringn(reas, rl));
    json_t *lpj = json_null();
    if (logprobs) {
        const bridge_lp *lp;
        size_t n;
        bridge_result_lp(j, &lp, &n);
        json_t *c = lp_content(tk, lp, n);
        lpj = c ? json_pack("{s:o, s:n}", "content", c, "refusal") : NULL;
    }
    return json_pack("{s:i, s:o, s:o, s:s}", "index", i, "message", msg, "logprobs", lpj, "finish_reason", finish);
}

/* The answer of n finished jobs (the choices). usage adds up what the
 * engine did for all of them (n prompts, the cached part of each, every
 * choice's tokens); timings are the first choice's. */
static int respond_message(api *a, const api_model *am, http_req *r, bridge_job **jobs, int n, const char *id,
                           long long created, int parse_calls, int logprobs) {
    engine_stats sum = {0};
    const engine_stats *st0 = NULL;
    for (int i = 0; i < n; i++) {
        const char *finish, *emsg;
        const engine_stats *st;
        int ecode;
        bridge_result(jobs[i], NULL, NULL, NULL, NULL, &st, &finish, &ecode, &emsg);
        if (api_result_failed(a, &(api_rq){r, 0}, ecode, emsg, finish, "messages")) return 0;
        if (!i) st0 = st;
        sum.prompt_tokens += st->prompt_tokens;
        sum.cached_tokens += st->cached_tokens;
        sum.gen_tokens += st->gen_tokens;
        sum.reasoning_tokens += st->reasoning_tokens;
    }
    json_t *choices = json_array();
    for (int i = 0; choices && i < n; i++)
        if (json_array_append_new(choices, choice_json(engine_tok(am->eng), jobs[i], i, parse_calls, logprobs))) {
            json_decref(choices);
            choices = NULL;
        }
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:o, s:o, s:o}", "id", id, "object", "chat.completion", "created",
                          (json_int_t)created, "model", am->name, "system_fingerprint", "smolbot", "choices",
                          choices, "usage", usage_json(&sum), "timings", timings_json(st0));
    return send_json(r, 200, o);
}

/* er's fields that come from the request's settings. */
static void request_settings(const chat_req *q, engine_request *er) {
    er->sampling = q->sp;
    er->max_tokens = q->max_tokens;
    er->stops = q->stops;
    er->n_stops = q->n_stops;
    er->ignore_eos = q->ignore_eos;
    er->grammar = q->t.grammar;
    er->grammar_lazy = q->t.lazy;
    er->logprobs = q->logprobs;
    er->top_logprobs = q->top_logprobs;
}

/* A started completion: its id ("chatcmpl-...", "cmpl-..."), its time and,
 * for a stream, the framing (for the caller to send its first chunk and
 * hand to bridge_listen). */
/* A started completion: its id ("chatcmpl-...", "cmpl-..."), its time, a
 * job per choice and, for a stream, each choice's framing (for the caller
 * to send its first chunk and hand to bridge_listen). */
typedef struct oai_job {
    char id[48];
    long long created;
    int n;
    bridge_job *j[MAX_CHOICES];
    oai_stream *x[MAX_CHOICES];
} oai_job;

/* Cut max_tokens to the room, name the completion and submit er q->n
 * times: choice i with the request seed plus i times the golden ratio
 * (choice 0 keeps it), the same prompt (an idle cache with it is reused, so
 * is the shared system block). For a stream, open it. 0, or -1 after
 * answering (param: the prompt's field for a context overflow). */
static int start(api *a, http_req *r, chat_req *q, engine_request *er, const char *param, const char *prefix,
                 int parse_calls, int legacy, oai_job *oj, http_stream **pre) {
    const api_rq rq = {r, 0};
    core_err err = {0};
    oai_group *g = NULL;
    memset(oj, 0, sizeof *oj);
    if (bridge_max_tokens(engine_ctx_size(q->am.eng), er->n_prompt, q->max_tokens, a->cfg.max_tokens, 1, &q->max_tokens, &err))
        return api_bad(&rq, 400, "context_length_exceeded", param, "%s", err.msg);
    er->max_tokens = q->max_tokens;
    oj->created = (long long)time(NULL);
    snprintf(oj->id, sizeof oj->id, "%s%016llx%08llx", prefix, (unsigned long long)api_random_u64(),
             (unsigned long long)(api_random_u64() & 0xffffffffu));
    if (q->stream && api_stream_take(a, &rq)) return -1;
    if (q->stream && q->n > 1 && !(g = calloc(1, sizeof *g))) {
        api_oom(&rq);
        goto fail;
    }
    for (int i = 0; i < q->n; i++) {
        oai_stream *x = NULL;
        if (q->stream &&
            !(x = oj->x[i] = oai_stream_new(a, q->am.name, oj->id, oj->created, q->include_usage, parse_calls, legacy))) {
            api_oom(&rq);
            goto fail;
        }
        if (x && json_object_set_new(x->choice, "index", json_integer(i))) {
            api_oom(&rq);
            goto fail;
        }
        if (x) x->index = i;
        bridge_job_opts bo = {0}; /* grace 0: cancelled as soon as its client is gone; nothing kept after */
        er->sampling.seed = q->sp.seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
        int rc = api_model_start(a, &q->am, er, &bo, &oj->j[i], &err);
        if (rc) {
            api_submit_error(a, &rq, rc, param, err.msg);
            goto fail;
        }
        oj->n = i + 1;
    }
    if (q->stream) {
        http_stream *s = pre && *pre ? *pre : http_respond_stream(r, 200, "text/event-stream", NULL, &err);
        if (!s) goto fail; /* no response could be made: nobody to stream to */
        if (pre) *pre = NULL; /* the listeners' now */
        if (g) *g = (oai_group){.refs = q->n, .running = q->n};
        for (int i = 0; i < q->n; i++) {
            oj->x[i]->s = s;
            oj->x[i]->g = g;
        }
    }
    return 0;
fail:
    for (int i = 0; i < MAX_CHOICES; i++) {
        if (i < oj->n) {
            bridge_cancel(oj->j[i]);
            bridge_release(oj->j[i]);
        }
        oai_stream_free(oj->x[i]);
    }
    free(g);
    if (q->stream) api_stream_give(a);
    return -1;
}

/* The chat of root on q->am's engine (held; given back here). r NULL: a
 * stream already started (*pre, taken when the listeners have it) and
 * errors go to the thread's capture. */
static void chat_run(api *a, http_req *r, json_t *root, chat_req *q, http_stream **pre) {
    api_msgs m = {0};
    prompt p = {0};
    core_err err = {0};
    if (parse_fields(a, r, root, q) || parse_messages(a, r, root, &m)) goto out;
    const tok *tk = engine_tok(q->am.eng);
    if (!tk) { submit_error(a, r, CORE_EUNSUP, "the model is not loaded"); goto out; }
    prompt_opts po = {.thinking = q->thinking, .xml_tools = q->t.repr.len ? q->t.repr.data : NULL,
                        .tools_json = q->t.json.len ? q->t.json.data : NULL, .calls = m.calls};
    int rc = prompt_build(tk, m.v, m.n, &po, &p, &err);
    if (rc == CORE_EINVAL) { api_error(r, 400, "invalid_request_error", "invalid_value", "messages", "%s", err.msg); goto out; }
    if (rc) { submit_error(a, r, rc, err.msg); goto out; }
    engine_request er = {0};
    er.prompt = p.ids;
    er.n_prompt = p.n_ids;
    er.n_shared = p.n_shared;
    er.thinking = p.thinking;
    request_settings(q, &er);
    oai_job oj;
    if (start(a, r, q, &er, "messages", "chatcmpl-", q->t.on, 0, &oj, pre)) goto out;
    if (q->stream) {
        for (int i = 0; i < oj.n; i++) { /* all before any listener: one writer at a time */
            if (q->logprobs) oj.x[i]->tk = tk;
            send_delta(oj.x[i], "role", "assistant", 9, NULL); /* a failure shows as gone */
        }
        for (int i = 0; i < oj.n; i++) bridge_listen(oj.j[i], &oai_ops, oj.x[i], 0, 0); /* the listener's now */
    } else {
        for (int i = 0; i < oj.n; i++) bridge_wait(oj.j[i]);
        respond_message(a, &q->am, r, oj.j, oj.n, oj.id, oj.created, q->t.on, q->logprobs);
    }
    for (int i = 0; i < oj.n; i++) bridge_release(oj.j[i]);
out:
    api_model_put(a, &q->am);
    prompt_free(&p);
    api_msgs_free(&m);
}

/* A streaming request whose model is not loaded: the SSE stream starts at
 * once and this thread waits for the load (the stream's ": ping"s go out
 * meanwhile, and a client that leaves ends the wait), then runs the request
 * onto it. A failure after the stream started is an error event, then
 * [DONE]: the status line went out already. */
typedef void (*oai_run_fn)(api *a, http_req *r, json_t *root, chat_req *q, http_stream **pre);
typedef struct chat_loader {
    api *a;
    json_t *root;
    http_stream *s;
    oai_run_fn run; /* chat_run or completion_run */
    char name[128];
} chat_loader;

/* An error as the last event of a stream that started (its status line
 * went out), then [DONE], and the end. */
static void stream_fail(http_stream *s, const char *msg, const char *type, const char *code) {
    json_t *o = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type", type, "param", "code", code);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (body) http_stream_event(s, NULL, NULL, body, strlen(body));
    http_stream_event(s, NULL, NULL, "[DONE]", 6);
    free(body);
    json_decref(o);
    http_stream_close(s);
}

static int loader_wait(void *ctx) {
    chat_loader *l = ctx;
    return http_stream_gone(l->s) || bridge_stopping(l->a->br);
}

static void *loader_main(void *arg) {
    chat_loader *l = arg;
    api *a = l->a;
    api_err_capture cap = {0};
    core_err err = {0};
    chat_req q = {0};
    q.am.keep_alive_s = REGISTRY_KEEP_DEFAULT;
    api_capture_errors(&cap);
    /* a ping at once, then one a second: a load from the page cache may take
     * less than the interval, and the client should still see the wait */
    http_stream_comment(l->s, "ping");
    int rc = registry_acquire(a->cfg.reg, l->name, loader_wait, l, &q.am.eng, &q.am.load_ms, &err);
    if (!rc) {
        q.am.held = 1;
        snprintf(q.am.name, sizeof q.am.name, "%s", l->name);
        l->run(a, NULL, l->root, &q, &l->s); /* gives the hold back */
    } else if (rc == CORE_ECANCEL) {
        cap = (api_err_capture){.set = 1, .status = 503};
        snprintf(cap.type, sizeof cap.type, "unavailable_error");
        snprintf(cap.code, sizeof cap.code, "%s", bridge_stopping(a->br) ? "shutting_down" : "cancelled");
        snprintf(cap.msg, sizeof cap.msg, "%s", err.msg);
    } else {
        cap = (api_err_capture){.set = 1, .status = 400};
        snprintf(cap.type, sizeof cap.type, "invalid_request_error");
        snprintf(cap.code, sizeof cap.code, "model_unsupported");
        snprintf(cap.msg, sizeof cap.msg, "the model '%s' could not be loaded: %s", l->name, err.msg);
    }
    api_capture_errors(NULL);
    if (l->s) /* nothing streamed: the error instead */
        stream_fail(l->s, cap.set ? cap.msg : "the request could not be started", cap.set ? cap.type : "server_error",
                    cap.set && cap.code[0] ? cap.code : "internal_error");
    chat_req_free(&q);
    json_decref(l->root);
    free(l);
    api_loader_done(a); /* the last touch of a: api_free may go on */
    return NULL;
}

/* 1 when the request root should wait for its model on a loader thread:
 * a stream, a registry, a model it knows and can run that is not loaded. */
static int needs_loader(api *a, json_t *root, char *name, size_t cap) {
    if (!a->cfg.reg || !json_is_true(json_object_get(root, "stream"))) return 0;
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) return 0; /* a 400 from the handler */
    return api_model_unloaded(a, json_string_value(model), name, cap);
}

/* Parse the body of r and run it: on a loader thread (the stream answers
 * at once) when its model must load first, else here. */
static int run_request(api *a, http_req *r, oai_run_fn run) {
    if (strcmp(http_req_method(r), "POST"))
        return api_error(r, 405, "invalid_request_error", "method_not_allowed", NULL, "use POST");
    if (not_ready(a, r)) return 0;
    json_t *root = parse_body(r);
    if (!root) return 0;
    chat_req q = {0};
    chat_loader *l = NULL;
    char name[128];
    if (!bridge_stopping(a->br) && needs_loader(a, root, name, sizeof name) && (l = calloc(1, sizeof *l))) {
        core_err err = {0};
        *l = (chat_loader){.a = a, .root = root, .run = run};
        snprintf(l->name, sizeof l->name, "%s", name);
        if (!(l->s = http_respond_stream(r, 200, "text/event-stream", NULL, &err))) {
            free(l);
            json_decref(root);
            return 0;
        }
        if (!api_loader_spawn(a, loader_main, l)) return 0;
        stream_fail(l->s, "out of threads", "server_error", "internal_error");
        free(l);
        json_decref(root);
        return 0;
    }
    if (!request_model(a, r, root, &q)) run(a, r, root, &q, NULL);
    chat_req_free(&q);
    json_decref(root);
    return 0;
}

static int chat_completions(api *a, http_req *r) { return run_request(a, r, chat_run); }

/* ---- /v1/completions (legacy) ------------------------------------------------------ */

/* "prompt": a string (special tokens parsed, as llama.cpp does), an array
 * of one string, or an array of token ids. 0, or -1 after answering 400. */
static int parse_prompt(http_req *r, const tok *tk, json_t *root, int32_t **ids, size_t *n) {
    json_t *p = json_object_get(root, "prompt");
    size_t cap = 0;
    core_err err = {0};
    *n = 0;
    if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0))) p = json_array_get(p, 0);
    if (json_is_string(p)) {
        if (!json_string_length(p)) return bad(r, "prompt", "%s", "'prompt' must not be empty"), -1;
        if (tok_encode(tk, json_string_value(p), json_string_length(p), 1, ids, n, &cap, &err))
            return bad(r, "prompt", "%s", err.msg), -1;
        return 0;
    }
    if (!json_is_array(p) || !json_array_size(p))
        return bad(r, "prompt", "%s", "'prompt' must be a string or a non-empty array of token ids (one prompt per request)"), -1;
    size_t k = json_array_size(p);
    if (!(*ids = malloc(k * sizeof **ids))) return api_error(r, 500, "server_error", NULL, NULL, "out of memory"), -1;
    for (size_t i = 0; i < k; i++) {
        json_t *v = json_array_get(p, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= tok_n_vocab(tk))
            return api_error(r, 400, "invalid_request_error", "invalid_value", "prompt",
                             "'prompt' must be a string or an array of token ids (0..%d; one prompt per request)",
                             tok_n_vocab(tk) - 1), -1;
        (*ids)[i] = (int32_t)json_integer_value(v);
    }
    *n = k;
    return 0;
}

/* The completion of root on q->am's engine (held; given back here); r
 * NULL and *pre as for chat_run. */
static void completion_run(api *a, http_req *r, json_t *root, chat_req *q, http_stream **pre) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    core_buf echo_text = {0};
    oai_stream *x;
    bridge_job *j;
    int echo = 0;
    static const char *const chat_only[] = {"tools", "tool_choice", "parallel_tool_calls", "messages"};
    for (size_t i = 0; i < sizeof chat_only / sizeof chat_only[0]; i++) {
        json_t *v = json_object_get(root, chat_only[i]);
        if (v && !json_is_null(v)) {
            api_error(r, 400, "invalid_request_error", "unsupported_parameter", chat_only[i],
                      "'%s' belongs to /v1/chat/completions", chat_only[i]);
            goto out;
        }
    }
    json_t *suffix = json_object_get(root, "suffix"), *lp = json_object_get(root, "logprobs");
    if (suffix && !json_is_null(suffix)) {
        api_error(r, 400, "invalid_request_error", "unsupported_parameter", "suffix", "'suffix' (fill in the middle) is not supported");
        goto out;
    }
    if (lp && !json_is_null(lp) && !json_is_false(lp) && !(json_is_integer(lp) && json_integer_value(lp) == 0)) {
        api_error(r, 400, "invalid_request_error", "unsupported_parameter", "logprobs",
                  "'logprobs' on /v1/completions is not supported: use /v1/chat/completions");
        goto out;
    }
    json_object_del(root, "logprobs"); /* the chat parser reads a boolean there */
    if (parse_fields(a, r, root, q) || get_bool(r, root, "echo", &echo) < 0) goto out;
    if (q->n != 1) {
        api_error(r, 400, "invalid_request_error", "unsupported_parameter", "n", "'n' above 1 is supported on /v1/chat/completions only");
        goto out;
    }
    const tok *tk = engine_tok(q->am.eng);
    if (!tk) { submit_error(a, r, CORE_EUNSUP, "the model is not loaded"); goto out; }
    if (parse_prompt(r, tk, root, &ids, &n_ids)) goto out;
    if (echo && tok_decode(tk, ids, n_ids, 1, &echo_text)) { api_error(r, 500, "server_error", NULL, NULL, "out of memory"); goto out; }
    engine_request er = {0};
    er.prompt = ids;
    er.n_prompt = n_ids;
    er.thinking = 0; /* a raw prompt: everything generated is text */
    request_settings(q, &er);
    oai_job oj;
    if (start(a, r, q, &er, "prompt", "cmpl-", 0, 1, &oj, pre)) goto out;
    j = oj.j[0];
    if ((x = oj.x[0])) {
        if (echo && echo_text.len) {
            core_buf fixed = {0};
            if (!core_utf8_sanitize(echo_text.data, echo_text.len, &fixed)) send_delta(x, "text", fixed.data, fixed.len, NULL);
            core_buf_free(&fixed);
        }
        bridge_listen(j, &oai_ops, x, 0, 0);
    } else {
        bridge_wait(j);
        size_t tl;
        int ecode;
        const engine_stats *st;
        const char *text, *finish, *emsg;
        bridge_result(j, &text, &tl, NULL, NULL, &st, &finish, &ecode, &emsg);
        if (!api_result_failed(a, &(api_rq){r, 0}, ecode, emsg, finish, "prompt")) {
            core_buf all = {0};
            if (echo && echo_text.len) core_utf8_sanitize(echo_text.data, echo_text.len, &all);
            core_buf_append(&all, text, tl);
            json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[{s:s%, s:i, s:n, s:s}], s:o, s:o}", "id", oj.id, "object",
                                  "text_completion", "created", (json_int_t)oj.created, "model", q->am.name,
                                  "system_fingerprint", "smolbot", "choices", "text", all.data ? all.data : "", all.len,
                                  "index", 0, "logprobs", "finish_reason", finish, "usage", usage_json(st), "timings",
                                  timings_json(st));
            core_buf_free(&all);
            send_json(r, 200, o);
        }
    }
    bridge_release(j);
out:
    api_model_put(a, &q->am);
    free(ids);
    core_buf_free(&echo_text);
}

static int completions(api *a, http_req *r) { return run_request(a, r, completion_run); }

/* ---- the small routes ------------------------------------------------------------ */

static int health(api *a, http_req *r) {
    int st = a->cfg.reg ? ENGINE_READY : engine_state(a->eng); /* a registry loads on demand */
    if (is_stopping(a)) st = ENGINE_STOPPING;
    json_t *o;
    int status = 503;
    if (st == ENGINE_READY && atomic_load(&a->draining)) {
        o = json_pack("{s:s, s:s}", "status", "draining", "message", "finishing running streams, taking no new ones");
    } else if (st == ENGINE_READY) {
        status = 200;
        o = json_pack("{s:s}", "status", "ok");
    } else if (st == ENGINE_NO_MODEL) {
        status = 200; /* healthy, just idle: see the file header */
        o = json_pack("{s:s, s:s}", "status", "no_model", "message", engine_state_message(a->eng));
    } else if (st == ENGINE_LOADING) {
        o = json_pack("{s:s, s:{s:i, s:s, s:s}}", "status", "loading", "error", "code", 503, "message", "Loading model",
                      "type", "unavailable_error");
    } else {
        o = json_pack("{s:s, s:s}", "status", st == ENGINE_FAILED ? "error" : "stopping", "message",
                      st == ENGINE_FAILED ? engine_state_message(a->eng) : "shutting down");
    }
    return send_json(r, status, o);
}

/* Every name of the registry: loaded or not, and why not when it cannot run. */
static json_t *registry_models(api *a) {
    json_t *data = json_array();
    registry_model m;
    for (size_t i = 0; data && registry_get(a->cfg.reg, i, &m) == 0; i++) {
        json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:{s:i, s:i, s:i, s:s, s:s, s:I, s:b, s:b, s:I}}", "id", m.name,
                              "object", "model", "created", (json_int_t)m.mtime_s, "owned_by", "smolbot", "meta",
                              "n_ctx", m.n_ctx, "n_ctx_train", m.cfg.n_ctx_train, "n_vocab", m.cfg.n_vocab, "arch",
                              m.arch, "quant", m.quant, "size", (json_int_t)m.file_size, "loaded", m.loaded,
                              "supported", m.supported, "mem_bytes", (json_int_t)m.mem_bytes);
        json_t *meta = json_object_get(o, "meta");
        if (meta && !m.supported) json_object_set_new(meta, "reason", json_string(m.reason));
        if (meta && m.target[0]) json_object_set_new(meta, "alias_of", json_string(m.target));
        if (!o || json_array_append_new(data, o)) {
            json_decref(data);
            data = NULL;
        }
    }
    return data;
}

static int models(api *a, http_req *r) {
    if (a->cfg.reg) return send_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "data", registry_models(a)));
    json_t *data = json_array();
    if (engine_state(a->eng) == ENGINE_READY) {
        const model_config *c = engine_model_config(a->eng);
        json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s, s:{s:i, s:i, s:i}}", "id", a->model_name, "object",
                                              "model", "created", (json_int_t)(time(NULL) - (time_t)(core_now_s() - a->t_start)),
                                              "owned_by", "smolbot", "meta", "n_ctx", engine_ctx_size(a->eng),
                                              "n_ctx_train", c ? c->n_ctx_train : 0, "n_vocab", c ? c->n_vocab : 0));
    }
    return send_json(r, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static int props(api *a, http_req *r) {
    engine_metrics m;
    engine_get_metrics(a->eng, &m);
    sample_params sp;
    sample_params_default(&sp);
    pthread_mutex_lock(&a->mu);
    int streams = a->streams;
    pthread_mutex_unlock(&a->mu);
    json_t *o = json_pack(
        "{s:s, s:s, s:i, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:I, s:I, s:{s:i, s:{s:f, s:f, s:i, s:f, s:i}}, s:b}",
        "model_path", engine_model_path(a->eng), "model", a->model_name, "n_ctx", engine_ctx_size(a->eng), "state",
        state_name(m.state), "build_info", "smolbot (C11)", "total_slots", a->cfg.slots, "active", m.active, "queued",
        m.queued, "streams", streams, "conversations", m.conversations, "kv_bytes", (json_int_t)m.kv_bytes,
        "kv_budget", (json_int_t)m.kv_budget, "default_generation_settings", "n_ctx", engine_ctx_size(a->eng), "params",
        "temperature", (double)sp.temperature, "top_p", (double)sp.top_p, "top_k", sp.top_k, "min_p", (double)sp.min_p,
        "max_tokens", a->cfg.max_tokens > 0 ? a->cfg.max_tokens : BRIDGE_DEFAULT_MAX_TOKENS, "api_key_required",
        a->cfg.api_key && *a->cfg.api_key);
    if (o && a->cfg.reg) { /* several models: the list says which are loaded */
        json_object_set_new(o, "state", json_string("ready"));
        json_object_set_new(o, "models", registry_models(a));
    }
    return send_json(r, 200, o);
}

static void hist_out(core_buf *b, const char *name, const char *help, const api_hist *h, const double *bounds,
                     double scale) {
    core_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < API_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        core_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i] * scale, (unsigned long long)cum);
    }
    cum += h->counts[API_HIST_BUCKETS];
    core_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, (unsigned long long)cum, name,
                    h->sum * scale, name, (unsigned long long)h->n);
}

static int metrics(api *a, http_req *r) {
    engine_metrics m;
    engine_get_metrics(a->eng, &m);
    pthread_mutex_lock(&a->mu);
    api_hist ttft = a->ttft_ms, toks = a->tok_s;
    int streams = a->streams;
    uint64_t http_n = a->http_requests;
    pthread_mutex_unlock(&a->mu);
    core_buf b = {0};
#define M(name, type, help, fmt, v) core_buf_printf(&b, "# HELP smolbot_" name " " help "\n# TYPE smolbot_" name " " type "\nsmolbot_" name " " fmt "\n", v)
    M("requests_total", "counter", "Generation requests finished.", "%llu", (unsigned long long)m.requests);
    M("http_requests_total", "counter", "HTTP requests received.", "%llu", (unsigned long long)http_n);
    M("prompt_tokens_total", "counter", "Prompt tokens of finished requests.", "%llu", (unsigned long long)m.prompt_tokens);
    M("cached_tokens_total", "counter", "Prompt tokens reused from a KV cache (not prefilled).", "%llu",
      (unsigned long long)m.cached_tokens);
    M("generated_tokens_total", "counter", "Tokens generated.", "%llu", (unsigned long long)m.gen_tokens);
    M("cancelled_total", "counter", "Requests cancelled (client gone, shutdown).", "%llu", (unsigned long long)m.cancelled);
    M("errors_total", "counter", "Requests that ended in an error.", "%llu", (unsigned long long)m.errors);
    M("queue_depth", "gauge", "Requests waiting for a slot.", "%d", m.queued);
    M("active_requests", "gauge", "Requests prefilling or decoding.", "%d", m.active);
    M("active_streams", "gauge", "Open streaming responses.", "%d", streams);
    M("conversations", "gauge", "KV caches held.", "%d", m.conversations);
    M("kv_bytes", "gauge", "Bytes of KV caches held.", "%llu", (unsigned long long)m.kv_bytes);
    M("kv_budget_bytes", "gauge", "Byte budget for KV caches.", "%llu", (unsigned long long)m.kv_budget);
    M("model_ready", "gauge", "1 when the model is loaded and serving.", "%d", m.state == ENGINE_READY || a->cfg.reg);
    M("uptime_seconds", "gauge", "Seconds since the server started.", "%.3f", core_now_s() - a->t_start);
#undef M
    hist_out(&b, "smolbot_ttft_seconds", "Time from request to first token.", &ttft, api_ttft_bounds, 1e-3);
    hist_out(&b, "smolbot_decode_tokens_per_second", "Decode speed per request.", &toks, api_toks_bounds, 1);
    if (!b.data) return api_error(r, 500, "server_error", NULL, NULL, "out of memory");
    return http_respond_take(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
}

static int tokenize(api *a, http_req *r) {
    if (not_ready(a, r)) return 0;
    json_t *root = parse_body(r);
    if (!root) return 0;
    json_t *content = json_object_get(root, "content");
    int parse_special = 1, with_pieces = 0;
    chat_req q = {0}; /* its model only */
    if (!json_is_string(content)) {
        bad(r, "content", "%s", "'content' must be a string");
        goto out;
    }
    if (get_bool(r, root, "parse_special", &parse_special) < 0 || get_bool(r, root, "with_pieces", &with_pieces) < 0 ||
        request_model(a, r, root, &q))
        goto out;
    const tok *tk = engine_tok(q.am.eng);
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    core_err err = {0};
    if (tok_encode(tk, json_string_value(content), json_string_length(content), parse_special, &ids, &n, &cap, &err)) {
        api_error(r, 400, "invalid_request_error", "invalid_value", "content", "%s", err.msg);
        goto out;
    }
    json_t *arr = json_array();
    core_buf piece = {0};
    for (size_t i = 0; i < n; i++) {
        if (!with_pieces) {
            json_array_append_new(arr, json_integer(ids[i]));
            continue;
        }
        core_buf_clear(&piece);
        tok_decode(tk, &ids[i], 1, 1, &piece);
        json_t *p;
        if (core_utf8_valid(piece.data ? piece.data : "", piece.len)) {
            p = json_stringn(piece.data ? piece.data : "", piece.len);
        } else { /* part of a character: bytes, as llama.cpp does */
            p = json_array();
            for (size_t k = 0; k < piece.len; k++) json_array_append_new(p, json_integer((unsigned char)piece.data[k]));
        }
        json_array_append_new(arr, json_pack("{s:i, s:o}", "id", ids[i], "piece", p));
    }
    core_buf_free(&piece);
    free(ids);
    send_json(r, 200, json_pack("{s:o}", "tokens", arr));
out:
    api_model_put(a, &q.am);
    json_decref(root);
    return 0;
}

static int detokenize(api *a, http_req *r) {
    if (not_ready(a, r)) return 0;
    json_t *root = parse_body(r);
    if (!root) return 0;
    json_t *arr = json_object_get(root, "tokens");
    chat_req q = {0}; /* its model only */
    if (request_model(a, r, root, &q)) goto out;
    const tok *tk = engine_tok(q.am.eng);
    int32_t nv = tok_n_vocab(tk);
    if (!json_is_array(arr)) {
        bad(r, "tokens", "%s", "'tokens' must be an array of token ids");
        goto out;
    }
    size_t n = json_array_size(arr), i;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        api_error(r, 500, "server_error", NULL, NULL, "out of memory");
        goto out;
    }
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= nv) {
            free(ids);
            api_error(r, 400, "invalid_request_error", "invalid_value", "tokens", "tokens[%zu] is not a token id (0..%d)",
                      i, nv - 1);
            goto out;
        }
        ids[i] = (int32_t)json_integer_value(v);
    }
    core_buf text = {0}, fixed = {0};
    int rc = tok_decode(tk, ids, n, 1, &text);
    if (!rc) rc = core_utf8_sanitize(text.data, text.len, &fixed);
    free(ids);
    core_buf_free(&text);
    if (rc) api_error(r, 500, "server_error", NULL, NULL, "cannot decode the tokens");
    else send_json(r, 200, json_pack("{s:s%}", "content", fixed.data ? fixed.data : "", fixed.len));
    core_buf_free(&fixed);
out:
    api_model_put(a, &q.am);
    json_decref(root);
    return 0;
}

static int apply_template(api *a, http_req *r) {
    json_t *root = parse_body(r);
    if (!root) return 0;
    api_msgs m = {0};
    chat_req q = {0};
    int thinking = 1, add_gen = 1;
    core_buf text = {0};
    core_err err = {0};
    if (parse_messages(a, r, root, &m) || parse_thinking(r, root, &thinking) ||
        get_bool(r, root, "add_generation_prompt", &add_gen) < 0 || parse_tools(r, root, &q))
        goto out;
    chat_opts o;
    chat_opts_default(&o);
    o.enable_thinking = thinking;
    o.add_generation_prompt = add_gen;
    o.xml_tools = q.t.repr.len ? q.t.repr.data : NULL; /* the prompt the chat route would build */
    o.calls = m.calls;
    if (chat_render(m.v, m.n, &o, &text, &err)) {
        api_error(r, 400, "invalid_request_error", "invalid_value", "messages", "%s", err.msg);
        goto out;
    }
    /* contents came from jansson (valid UTF-8, no NUL): so is the render */
    send_json(r, 200, json_pack("{s:s%}", "prompt", text.data ? text.data : "", text.len));
out:
    core_buf_free(&text);
    chat_req_free(&q);
    api_msgs_free(&m);
    json_decref(root);
    return 0;
}

/* ---- dispatch ---------------------------------------------------------------------- */

typedef struct route {
    const char *path;
    const char *method; /* NULL: any */
    int (*fn)(api *, http_req *);
} route;

static const route routes[] = {
    {"/health", "GET", health},
    {"/metrics", "GET", metrics},
    {"/props", "GET", props},
    {"/v1/models", "GET", models},
    {"/models", "GET", models},
    {"/v1/chat/completions", NULL, chat_completions},
    {"/chat/completions", NULL, chat_completions},
    {"/v1/completions", NULL, completions},
    {"/completions", NULL, completions},
    {"/tokenize", "POST", tokenize},
    {"/detokenize", "POST", detokenize},
    {"/apply-template", "POST", apply_template},
};

int api_openai_route(api *a, http_req *r, core_err *err) {
    const char *path = http_req_path(r), *method = http_req_method(r);
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(path, routes[i].path)) rt = &routes[i];
    if (!rt) {
        if (!strncmp(path, "/v1/", 4)) /* ours, whatever it is: OpenAI-shaped 404 */
            return api_error(r, 404, "invalid_request_error", "unknown_url", NULL, "unknown URL: %s %s", method, path),
                   1;
        return 0;
    }
    int head = !strcmp(method, "HEAD");
    if (rt->method && strcmp(method, rt->method) && !(head && !strcmp(rt->method, "GET"))) {
        api_error(r, 405, "invalid_request_error", "method_not_allowed", NULL, "use %s for %s", rt->method, path);
        return 1;
    }
    if (rt->fn != health && !http_check_bearer(r, a->cfg.api_key)) {
        http_req_add_header(r, "WWW-Authenticate", "Bearer");
        api_error(r, 401, "invalid_request_error", "invalid_api_key", NULL,
                  "missing or invalid API key: send 'Authorization: Bearer KEY'");
        return 1;
    }
    rt->fn(a, r);
    return 1;
}
