/* ollama.c -- Ollama's API for the one model the server has loaded, so
 * clients that speak only Ollama (Open WebUI, editor plugins, scripts on
 * the `ollama` libraries) can use the server.
 *
 * Routes (every /api/ path is ours; the API key rule is the OpenAI routes'):
 *   POST   /api/chat, /api/generate   NDJSON stream (default) or one object
 *   GET    /api/tags, /api/ps         the served model
 *   POST   /api/show                  its details, parameters, capabilities
 *   GET    /api/version               the Ollama API version these shapes follow
 *   POST   /api/pull                  the served model: "success"; others refused
 *   DELETE /api/delete                refused (403 without a key; 409 for the
 *                                     served model, which cannot go while loaded)
 *   embed, embeddings, create, copy, push, blobs: 501; other /api/ paths 404
 * Errors are Ollama's: {"error":"..."} with the status code; a request
 * naming another model gets 404 "model \"x\" not found, try pulling it first".
 * The served model answers to api.model_name with or without ":latest".
 *
 * A generation is a bridge job like the OpenAI route's: the stream is one
 * more listener kind (an NDJSON line per piece of text, then the final line
 * with done, done_reason and the durations in nanoseconds), cancelled with
 * grace 0 when its client leaves; non-stream waits for the job's end.
 * Ollama's fields map to ours: options.num_predict -> max_tokens (-1, -2:
 * the server's default cut to the room), options.num_ctx -> a smaller
 * context for this request only (never larger than the loaded one), think
 * -> the template's reasoning mode, reasoning in "thinking". format and
 * tools go through the OpenAI route's machinery (req.c): format "json" is
 * any JSON object, format {schema} constrains the answer by the schema
 * (unsupported schema features: a 400 naming them); tools on /api/chat are
 * OpenAI's shape, listed in the prompt, and the model's calls come back in
 * message.tool_calls with the arguments as an object (stream: a line of
 * their own once a call is whole). History takes role "tool" messages
 * (tool_name is accepted; the template knows the call by its order) and
 * an assistant's tool_calls. Refused with a 400 that names the field, never
 * ignored: images, suffix, template, context. keep_alive is accepted: the
 * one model stays loaded whatever it says.
 */
#include "api/api_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "prompt/prompt.h"
#include "tok/tok.h"

/* The Ollama release whose API shapes these routes follow; clients gate
 * features on it (thinking, for one, needs 0.9). */
#define OLLAMA_COMPAT_VERSION "0.12.0"
#define REAL_FMT JSON_REAL_PRECISION(6)

/* ---- helpers ------------------------------------------------------------------ */

/* {"error": msg} with status. r NULL (the fuzzer): formatted and dropped.
 * Returns -1 so parsers can `return ol_err(...)`. */
static int ol_err(http_req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ol_err(http_req *r, int status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return api_bad(&(api_rq){r, 1}, status, NULL, NULL, "%s", msg);
}

static int send_json(http_req *r, int status, json_t *o) { return api_send_json(&(api_rq){r, 1}, status, o); }
static int not_ready(api *a, http_req *r) { return api_not_ready(a, &(api_rq){r, 1}); }
static json_t *parse_body(http_req *r) { return api_parse_json(&(api_rq){r, 1}, NULL, 0); }

/* RFC 3339 UTC with nanoseconds, as Go writes time.Time ("...T08:52:19.385406455Z"). */
static void rfc3339(char *buf, size_t cap, const struct timespec *ts) {
    struct tm tm;
    gmtime_r(&ts->tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%09ldZ", (long)ts->tv_nsec);
}

static void now_rfc3339(char *buf, size_t cap) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rfc3339(buf, cap, &ts);
}

/* The name clients see: Ollama names always carry a tag. */
static void listed_name(const api *a, char *buf, size_t cap) {
    snprintf(buf, cap, "%s%s", a->model_name, strchr(a->model_name, ':') ? "" : ":latest");
}

/* 1 if name is the served model, with or without ":latest" on either side. */
static int is_served(const char *served, const char *name) {
    size_t ls = strlen(served), ln = strlen(name);
    if (ls > 7 && !strcmp(served + ls - 7, ":latest")) ls -= 7;
    if (ln > 7 && !strcmp(name + ln - 7, ":latest")) ln -= 7;
    return ls == ln && !memcmp(served, name, ls);
}

/* The request's model: 0 when it is the served one, else -1 after
 * answering (400 missing, 404 another). key: "model" (or legacy "name"). */
static int check_model(api *a, http_req *r, json_t *root, const char **out) {
    json_t *m = json_object_get(root, "model");
    if (!m || json_is_null(m)) m = json_object_get(root, "name");
    if (!json_is_string(m) || !json_string_length(m)) return ol_err(r, 400, "model is required");
    const char *name = json_string_value(m);
    if (out) *out = name;
    if (!is_served(a->model_name, name)) return ol_err(r, 404, "model \"%.200s\" not found, try pulling it first", name);
    return 0;
}

/* A field that is present and means something (not null, "" or []; an
 * object always does: format {} is a schema). */
static int given(const json_t *v) {
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) return json_string_length(v) > 0;
    if (json_is_array(v)) return json_array_size(v) > 0;
    return 1;
}

/* ---- the request -------------------------------------------------------------- */

typedef struct ol_req {
    sample_params sp;
    int num_predict;       /* 0: the server's default */
    int num_ctx;           /* 0: the loaded context */
    const char *stops[SAMPLE_STOP_MAX];
    size_t n_stops;
    int stream, thinking, raw;
    api_msgs m;            /* /api/chat's messages */
    chat_msg gen[2];       /* /api/generate's [system,] user */
    const chat_msg *msgs;  /* m.v or gen */
    size_t n_msgs;
    const char *prompt;    /* /api/generate */
    size_t prompt_len;
    api_tools t;           /* tools (the prompt's list, calls parsed) or format: the grammar */
} ol_req;

static void ol_req_free(ol_req *q) {
    api_msgs_free(&q->m);
    api_tools_free(&q->t);
}

/* options: the sampling settings Ollama documents. Unknown keys are
 * skipped, as Ollama does (clients send the whole Modelfile set; the
 * runner's, such as num_thread, are the server's here). */
static int parse_options(api *a, http_req *r, json_t *root, ol_req *q) {
    const api_rq rq = {r, 1};
    sample_params_default(&q->sp);
    q->sp.seed = api_random_u64();
    json_t *o = json_object_get(root, "options");
    if (!o || json_is_null(o)) return 0;
    if (!json_is_object(o)) return ol_err(r, 400, "\"options\" must be an object");
    long long ll;
    int rc;
    if (api_parse_sampling(&rq, o, 100, &q->sp)) return -1;
    if ((rc = api_get_int(&rq, o, "repeat_last_n", -1, 1 << 20, &ll)) < 0) return -1;
    if (!rc) q->sp.penalty_last_n = ll < 0 ? (a->eng ? engine_ctx_size(a->eng) : 4096) : (int)ll; /* -1: num_ctx */
    if ((rc = api_get_int(&rq, o, "num_predict", -2, 1ll << 40, &ll)) < 0) return -1;
    if (!rc && ll > 0) {
        long long cap = a->cfg.max_tokens > 0 ? a->cfg.max_tokens : (a->eng ? engine_ctx_size(a->eng) : 4096);
        if (ll > cap) return ol_err(r, 400, "option \"num_predict\" is %lld; this server allows at most %lld", ll, cap);
        q->num_predict = (int)ll;
    } else if (!rc && ll == 0) {
        return ol_err(r, 400, "option \"num_predict\" must be positive, -1 or -2");
    }
    if ((rc = api_get_int(&rq, o, "num_ctx", 1, 1ll << 30, &ll)) < 0) return -1;
    if (!rc) q->num_ctx = (int)ll;
    if (api_parse_stops(&rq, json_object_get(o, "stop"), q->stops, &q->n_stops)) return -1;
    core_err err = {0};
    if (sample_params_check(&q->sp, &err)) return ol_err(r, 400, "%s", err.msg);
    return 0;
}

/* format ("json": any JSON object, as OpenAI's json_object; an object: a
 * JSON schema) and /api/chat's tools: the output's grammar. tool_choice
 * and parallel_tool_calls are OpenAI's, an extension here (Ollama's own
 * are auto, parallel). */
static int parse_grammar(http_req *r, json_t *root, int chat, ol_req *q) {
    const api_rq rq = {r, 1};
    json_t *format = json_object_get(root, "format"), *tools = json_object_get(root, "tools");
    size_t nt = 0;
    int choice = API_TC_NONE, parallel = 1;
    const char *named = NULL;
    if (given(tools) && !chat) return ol_err(r, 400, "\"tools\" belong to /api/chat");
    if (chat && (api_tools_check(&rq, tools, &nt) || api_tool_choice(&rq, json_object_get(root, "tool_choice"), nt, &choice, &named) ||
                 api_get_bool(&rq, root, "parallel_tool_calls", &parallel) < 0))
        return -1;
    if (nt && choice != API_TC_NONE) {
        if (given(format)) return ol_err(r, 400, "\"format\" cannot be combined with \"tools\": describe the answer as a tool");
        return api_tools_build(&rq, tools, choice, named, parallel, &q->t);
    }
    if (!given(format)) return 0;
    if (json_is_string(format) && !strcmp(json_string_value(format), "json")) {
        json_t *obj = json_pack("{s:s}", "type", "object");
        int rc = obj ? api_schema_grammar(&rq, obj, "format", &q->t) : api_oom(&rq);
        json_decref(obj);
        return rc;
    }
    if (!json_is_object(format)) return ol_err(r, 400, "\"format\" must be \"json\" or a JSON schema object");
    return api_schema_grammar(&rq, format, "format", &q->t);
}

/* The fields both routes share, then each route's own. chat: 1 /api/chat. */
static int parse_request(api *a, http_req *r, json_t *root, int chat, ol_req *q) {
    static const char *const refused[][2] = {
        {"images", "\"images\" are not supported: the model reads text only"},
        {"suffix", "\"suffix\" (fill-in-the-middle) is not supported by this model"},
        {"template", "\"template\" is not supported: the model's own chat format is used"},
        {"context", "\"context\" is not supported: send the conversation to /api/chat instead"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (given(json_object_get(root, refused[i][0]))) return ol_err(r, 400, "%s", refused[i][1]);
    json_t *v = json_object_get(root, "stream");
    q->stream = 1; /* Ollama's default */
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v)) return ol_err(r, 400, "\"stream\" must be a boolean");
        q->stream = json_is_true(v);
    }
    v = json_object_get(root, "think");
    q->thinking = 1; /* the template's default */
    if (json_is_boolean(v)) {
        q->thinking = json_is_true(v);
    } else if (json_is_string(v)) { /* gpt-oss's levels: any of them thinks */
        const char *s = json_string_value(v);
        if (strcmp(s, "high") && strcmp(s, "medium") && strcmp(s, "low"))
            return ol_err(r, 400, "\"think\" must be true, false, \"high\", \"medium\" or \"low\"");
    } else if (v && !json_is_null(v)) {
        return ol_err(r, 400, "\"think\" must be a boolean");
    }
    v = json_object_get(root, "keep_alive");
    if (v && !json_is_null(v) && !json_is_string(v) && !json_is_number(v))
        return ol_err(r, 400, "\"keep_alive\" must be a duration (\"5m\") or a number of seconds");
    if (parse_options(a, r, root, q) || parse_grammar(r, root, chat, q)) return -1;

    if (chat) {
        json_t *arr = json_object_get(root, "messages");
        if (!arr || json_is_null(arr)) return 0; /* the "load the model" request */
        if (api_parse_messages(&(api_rq){r, 1}, arr, a->cfg.max_messages, &q->m)) return -1;
        q->msgs = q->m.v;
        q->n_msgs = q->m.n;
        return 0;
    }
    json_t *p = json_object_get(root, "prompt"), *sys = json_object_get(root, "system");
    if (p && !json_is_null(p) && !json_is_string(p)) return ol_err(r, 400, "\"prompt\" must be a string");
    if (sys && !json_is_null(sys) && !json_is_string(sys)) return ol_err(r, 400, "\"system\" must be a string");
    v = json_object_get(root, "raw");
    if (v && !json_is_null(v) && !json_is_boolean(v)) return ol_err(r, 400, "\"raw\" must be a boolean");
    q->raw = json_is_true(v);
    q->prompt = json_is_string(p) ? json_string_value(p) : "";
    q->prompt_len = json_is_string(p) ? json_string_length(p) : 0;
    if (q->raw && given(sys)) return ol_err(r, 400, "\"system\" cannot be used with \"raw\": the prompt is sent as is");
    if (given(sys))
        q->gen[q->n_msgs++] = (chat_msg){"system", json_string_value(sys), json_string_length(sys)};
    q->gen[q->n_msgs++] = (chat_msg){"user", q->prompt, q->prompt_len};
    q->msgs = q->gen;
    return 0;
}

int api_ollama_parse_request(const api_config *cfg, int chat, const char *body, size_t len) {
    api x;
    api_parse_only(&x, cfg);
    json_t *root = api_parse_json(&(api_rq){NULL, 1}, body, len);
    if (!root) return 1;
    ol_req q = {0};
    int refused = parse_request(&x, NULL, root, chat, &q) != 0;
    ol_req_free(&q);
    json_decref(root);
    return refused;
}

/* ---- responses ------------------------------------------------------------------ */

/* The durations and counts of the final object, in nanoseconds. The prompt
 * count is the whole prompt (cached ids included): clients read it as the
 * context used. The model is always resident, so load_duration is 0. */
static int add_stats(json_t *o, const engine_stats *st, uint64_t t0_ns) {
    return json_object_set_new(o, "total_duration", json_integer((json_int_t)(core_now_ns() - t0_ns))) ||
           json_object_set_new(o, "load_duration", json_integer(0)) ||
           json_object_set_new(o, "prompt_eval_count", json_integer(st->prompt_tokens)) ||
           json_object_set_new(o, "prompt_eval_duration", json_integer((json_int_t)(st->prefill_ms * 1e6))) ||
           json_object_set_new(o, "eval_count", json_integer(st->gen_tokens)) ||
           json_object_set_new(o, "eval_duration", json_integer((json_int_t)(st->decode_ms * 1e6)));
}

/* A line or object's frame: {"model","created_at", message|response, "done"};
 * calls (taken; NULL or empty: none) go in message.tool_calls. */
static json_t *frame(const char *model, int chat, const char *text, size_t len, const char *reas, size_t rlen,
                     json_t *calls, int done) {
    char ts[48];
    now_rfc3339(ts, sizeof ts);
    json_t *o = json_pack("{s:s, s:s}", "model", model, "created_at", ts);
    int bad = !o;
    if (o && chat) {
        json_t *m = json_pack("{s:s, s:s%}", "role", "assistant", "content", text, len);
        if (m && rlen) bad |= json_object_set_new(m, "thinking", json_stringn(reas, rlen));
        if (m && json_array_size(calls)) bad |= json_object_set(m, "tool_calls", calls);
        bad |= json_object_set_new(o, "message", m);
    } else if (o) {
        bad |= json_object_set_new(o, "response", json_stringn(text, len));
        if (rlen) bad |= json_object_set_new(o, "thinking", json_stringn(reas, rlen));
    }
    json_decref(calls);
    if (o) bad |= json_object_set_new(o, "done", json_boolean(done));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

typedef struct ol_stream {
    api *a;
    http_stream *s;
    int chat;
    uint64_t t0_ns;
    char model[300];   /* the name the client asked for, echoed as Ollama does */
    core_buf out;      /* one serialized line, reused */
    int parse_calls;   /* tools are on: <tool_call> blocks become message.tool_calls */
    api_calls_stream cs;
} ol_stream;

static void ol_stream_free(ol_stream *x) {
    if (!x) return;
    core_buf_free(&x->out);
    api_calls_stream_free(&x->cs);
    free(x);
}

static int send_line(ol_stream *x, json_t *o) {
    if (!o) return CORE_ENOMEM;
    size_t n = json_dumpb(o, x->out.data, x->out.data ? x->out.cap : 0, JSON_COMPACT | REAL_FMT);
    if (n && (!x->out.data || n + 1 > x->out.cap)) {
        if (core_buf_reserve(&x->out, n + 1)) n = 0;
        else n = json_dumpb(o, x->out.data, x->out.cap, JSON_COMPACT | REAL_FMT);
    }
    json_decref(o);
    if (!n || n + 1 > x->out.cap) return CORE_ENOMEM;
    x->out.data[n] = '\n';
    return http_stream_write(x->s, x->out.data, n + 1);
}

static int send_text(void *ctx, const char *text, size_t len) {
    ol_stream *x = ctx;
    return send_line(x, frame(x->model, x->chat, text, len, NULL, 0, NULL, 0));
}

/* A whole tool call: a line whose message has it (Ollama sends each call
 * once it is whole). */
static int send_call(void *ctx, json_t *tc, int i) {
    ol_stream *x = ctx;
    json_t *calls = json_array();
    if (!calls || json_array_append_new(calls, tc)) {
        if (!calls) json_decref(tc);
        json_decref(calls);
        return CORE_ENOMEM;
    }
    return send_line(x, frame(x->model, 1, "", 0, NULL, 0, calls, 0));
}

static int ol_deliver(void *ctx, const bridge_out *o) {
    ol_stream *x = ctx;
    int rc = 0;
    size_t tl = o->answer_end - o->answer_from, rl = o->reasoning_end - o->reasoning_from;
    if (rl || (tl && !x->parse_calls))
        rc = send_line(x, frame(x->model, x->chat, o->answer + o->answer_from, x->parse_calls ? 0 : tl,
                                o->reasoning + o->reasoning_from, rl, NULL, 0));
    if (!rc && tl && x->parse_calls) rc = api_calls_stream_push(&x->cs, o->answer + o->answer_from, tl);
    if (rc || !o->end) return rc != 0;
    if (!strcmp(o->finish, "error")) {
        send_line(x, json_pack("{s:s}", "error", o->err_msg[0] ? o->err_msg : "generation failed"));
    } else if (!strcmp(o->finish, "cancelled")) {
        if (!http_stream_gone(x->s))
            send_line(x, json_pack("{s:s}", "error",
                                   o->stopping ? "the server is shutting down" : "the request was cancelled"));
    } else {
        if (x->parse_calls) api_calls_stream_finish(&x->cs);
        json_t *f = frame(x->model, x->chat, "", 0, NULL, 0, NULL, 1);
        if (f && (json_object_set_new(f, "done_reason", json_string(o->finish)) || add_stats(f, o->st, x->t0_ns))) {
            json_decref(f);
            f = NULL;
        }
        send_line(x, f);
    }
    return 0;
}

static int ol_gone(void *ctx) { return http_stream_gone(((ol_stream *)ctx)->s); }

static void ol_drop(void *ctx) {
    ol_stream *x = ctx;
    if (x->s) {
        http_stream_close(x->s);
        api_stream_give(x->a);
    }
    ol_stream_free(x);
}

static const bridge_listener_ops ol_ops = {ol_deliver, ol_gone, ol_drop};

static int respond_result(api *a, http_req *r, bridge_job *j, const char *model, int chat, int parse_calls,
                          uint64_t t0) {
    const char *text, *reas, *finish, *emsg;
    size_t tl, rl;
    const engine_stats *st;
    int ecode;
    bridge_result(j, &text, &tl, &reas, &rl, &st, &finish, &ecode, &emsg);
    if (api_result_failed(a, &(api_rq){r, 1}, ecode, emsg, finish, NULL)) return 0;
    core_buf content = {0};
    json_t *calls = NULL;
    if (parse_calls) {
        calls = json_array();
        if (!calls || api_split_calls(text, tl, 1, &content, calls)) {
            json_decref(calls);
            core_buf_free(&content);
            return ol_err(r, 500, "out of memory"), 0;
        }
        text = content.data ? content.data : "";
        tl = content.len;
    }
    json_t *o = frame(model, chat, text, tl, reas, rl, calls, 1);
    core_buf_free(&content);
    if (o && (json_object_set_new(o, "done_reason", json_string(finish)) || add_stats(o, st, t0))) {
        json_decref(o);
        o = NULL;
    }
    return send_json(r, 200, o);
}

/* /api/chat (chat 1) and /api/generate (chat 0). */
static int generate(api *a, http_req *r, int chat) {
    uint64_t t0 = core_now_ns();
    json_t *root = parse_body(r);
    if (!root) return 0;
    const api_rq rq = {r, 1};
    ol_req q = {0};
    prompt p = {0};
    int32_t *raw_ids = NULL;
    size_t raw_n = 0, raw_cap = 0;
    ol_stream *x = NULL;
    bridge_job *j = NULL;
    core_err err = {0};
    const char *model;
    int counted = 0;
    if (check_model(a, r, root, &model) || not_ready(a, r) || parse_request(a, r, root, chat, &q)) goto out;
    if (chat ? q.n_msgs == 0 : q.prompt_len == 0) {
        /* Ollama's "load the model" request: nothing to generate */
        json_t *o = frame(model, chat, "", 0, NULL, 0, NULL, 1);
        if (o) json_object_set_new(o, "done_reason", json_string("load"));
        send_json(r, 200, o);
        goto out;
    }
    const tok *tk = engine_tok(a->eng);
    if (!tk) { api_submit_error(a, &rq, CORE_EUNSUP, NULL, "the model is not loaded"); goto out; }
    engine_request er = {0};
    int rc;
    if (q.raw) { /* the caller's own template: its control tokens are meant */
        rc = tok_encode(tk, q.prompt, q.prompt_len, 1, &raw_ids, &raw_n, &raw_cap, &err);
        er.prompt = raw_ids;
        er.n_prompt = raw_n;
        er.thinking = 0; /* the text comes back as generated, unsplit */
    } else {
        prompt_opts po = {.thinking = q.thinking, .xml_tools = q.t.repr.len ? q.t.repr.data : NULL,
                        .tools_json = q.t.json.len ? q.t.json.data : NULL, .calls = q.m.calls};
        rc = prompt_build(tk, q.msgs, q.n_msgs, &po, &p, &err);
        er.prompt = p.ids;
        er.n_prompt = p.n_ids;
        er.n_shared = p.n_shared;
        er.thinking = p.thinking;
    }
    if (rc) { api_submit_error(a, &rq, rc, NULL, err.msg); goto out; }
    int n_ctx = engine_ctx_size(a->eng);
    if (q.num_ctx > 0 && q.num_ctx < n_ctx) n_ctx = q.num_ctx;
    if (bridge_max_tokens(n_ctx, er.n_prompt, q.num_predict, a->cfg.max_tokens, 0, &er.max_tokens, &err)) {
        ol_err(r, 400, "%s", err.msg);
        goto out;
    }
    er.sampling = q.sp;
    er.stops = q.stops;
    er.n_stops = q.n_stops;
    er.grammar = q.t.grammar;
    er.grammar_lazy = q.t.lazy; /* tool_choice auto: free text until "<tool_call>" */
    if (q.stream) {
        if (api_stream_take(a, &rq)) goto out;
        counted = 1;
        if (!(x = calloc(1, sizeof *x))) {
            ol_err(r, 500, "out of memory");
            goto out;
        }
        x->a = a;
        x->chat = chat;
        x->t0_ns = t0;
        x->parse_calls = q.t.on;
        api_calls_stream_init(&x->cs, 1, send_text, send_call, x);
        snprintf(x->model, sizeof x->model, "%s", model);
    }
    bridge_job_opts bo = {0}; /* grace 0: cancelled as soon as its client is gone */
    if ((rc = bridge_start(a->br, &er, &bo, &j, &err))) {
        api_submit_error(a, &rq, rc, NULL, err.msg);
        goto out;
    }
    if (q.stream) {
        static const http_header hdrs[] = {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}, {NULL, NULL}};
        x->s = http_respond_stream(r, 200, "application/x-ndjson", hdrs, &err);
        if (!x->s) {
            bridge_cancel(j); /* no response could be made: nobody to stream to */
            goto out;
        }
        bridge_listen(j, &ol_ops, x, 0, 0); /* drops x itself on failure */
        x = NULL;
        counted = 0; /* the listener's drop gives the count back */
    } else {
        bridge_wait(j);
        respond_result(a, r, j, model, chat, q.t.on, t0);
    }
out:
    if (j) bridge_release(j);
    ol_stream_free(x);
    if (counted) api_stream_give(a);
    free(raw_ids);
    prompt_free(&p);
    ol_req_free(&q);
    json_decref(root);
    return 0;
}

static int chat_route(api *a, http_req *r) { return generate(a, r, 1); }
static int generate_route(api *a, http_req *r) { return generate(a, r, 0); }

/* ---- the model's description ------------------------------------------------------ */

/* "Q4_K_M" from a file name that carries a llama.cpp quant tag, else "unknown". */
static void quant_of(const char *path, char *buf, size_t cap) {
    static const char *const tags[] = {"q4_k_m", "q4_k_s", "q5_k_m", "q5_k_s", "q6_k", "q8_0", "q4_0",
                                       "q4_1",   "q5_0",   "q5_1",   "q2_k",   "q3_k_m", "bf16", "f16", "f32"};
    snprintf(buf, cap, "unknown");
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        size_t n = strlen(tags[i]);
        for (const char *s = base; *s; s++)
            if (!strncasecmp(s, tags[i], n)) {
                snprintf(buf, cap, "%s", tags[i]);
                for (char *c = buf; *c; c++) *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
                return;
            }
    }
}

/* Parameters counted from the config (embedding once, attention, MLP; norms
 * left out), as Ollama's "3.1B" / "135M". */
static void param_size(const model_config *c, char *buf, size_t cap) {
    double emb = (double)c->n_vocab * c->n_embd;
    double attn = (double)c->n_embd * c->head_dim * (2.0 * c->n_head + 2.0 * c->n_head_kv);
    double mlp = 3.0 * c->n_embd * c->n_ff;
    double n = emb + c->n_layer * (attn + mlp);
    if (n >= 1e9) snprintf(buf, cap, "%.1fB", n / 1e9);
    else if (n >= 1e6) snprintf(buf, cap, "%.0fM", n / 1e6);
    else snprintf(buf, cap, "%.0fK", n / 1e3);
}

static json_t *details(api *a) {
    const model_config *c = engine_model_config(a->eng);
    char q[16], ps[32] = "unknown";
    quant_of(engine_model_path(a->eng), q, sizeof q);
    if (c) param_size(c, ps, sizeof ps);
    const char *fam = c ? c->arch : "unknown";
    return json_pack("{s:s, s:s, s:s, s:[s], s:s, s:s}", "parent_model", "", "format", "gguf", "family", fam,
                     "families", fam, "parameter_size", ps, "quantization_level", q);
}

/* The served model as /api/tags and /api/ps list it; NULL when none is ready. */
static json_t *model_entry(api *a, int running) {
    if (engine_state(a->eng) != ENGINE_READY) return NULL;
    char name[300], when[48];
    listed_name(a, name, sizeof name);
    struct stat sb;
    json_int_t size = 0;
    struct timespec mt = {0};
    if (!stat(engine_model_path(a->eng), &sb)) {
        size = (json_int_t)sb.st_size;
        mt = sb.st_mtim;
    }
    /* no digest: the file is not hashed at start, and a made-up one would lie */
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o}", "name", name, "model", name, "size", size, "digest", "",
                          "details", details(a));
    if (!o) return NULL;
    if (running) {
        engine_metrics m;
        engine_get_metrics(a->eng, &m);
        json_object_set_new(o, "size", json_integer(size + (json_int_t)m.kv_bytes));
        json_object_set_new(o, "size_vram", json_integer(0));
        json_object_set_new(o, "expires_at", json_string("2318-01-01T00:00:00Z")); /* resident: never expires */
        json_object_set_new(o, "context_length", json_integer(engine_ctx_size(a->eng)));
    } else {
        rfc3339(when, sizeof when, &mt);
        json_object_set_new(o, "modified_at", json_string(when));
    }
    return o;
}

static int list_models(api *a, http_req *r, int running) {
    json_t *arr = json_array(), *e = model_entry(a, running);
    if (e) json_array_append_new(arr, e);
    return send_json(r, 200, json_pack("{s:o}", "models", arr));
}

static int tags(api *a, http_req *r) { return list_models(a, r, 0); }
static int ps(api *a, http_req *r) { return list_models(a, r, 1); }

static int show(api *a, http_req *r) {
    json_t *root = parse_body(r);
    if (!root) return 0;
    if (check_model(a, r, root, NULL) || not_ready(a, r)) goto out;
    const model_config *c = engine_model_config(a->eng);
    sample_params sp;
    sample_params_default(&sp);
    char params[256], modelfile[1200], key[64], when[48];
    snprintf(params, sizeof params, "temperature %g\ntop_p %g\ntop_k %d\nmin_p %g\nnum_ctx %d", (double)sp.temperature,
             (double)sp.top_p, sp.top_k, (double)sp.min_p, engine_ctx_size(a->eng));
    snprintf(modelfile, sizeof modelfile, "# served by smolbot\nFROM %.1000s\n", engine_model_path(a->eng));
    json_t *info = json_pack("{s:s}", "general.architecture", c->arch);
#define INFO(suffix, v) (snprintf(key, sizeof key, "%s." suffix, c->arch), json_object_set_new(info, key, json_integer(v)))
    INFO("context_length", c->n_ctx_train);
    INFO("embedding_length", c->n_embd);
    INFO("block_count", c->n_layer);
    INFO("feed_forward_length", c->n_ff);
    INFO("attention.head_count", c->n_head);
    INFO("attention.head_count_kv", c->n_head_kv);
    INFO("vocab_size", c->n_vocab);
#undef INFO
    struct stat sb;
    struct timespec mt = {0};
    if (!stat(engine_model_path(a->eng), &sb)) mt = sb.st_mtim;
    rfc3339(when, sizeof when, &mt);
    send_json(r, 200, json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:[s, s], s:s}", "license", "", "modelfile", modelfile,
                                "parameters", params, "template", "", "details", details(a), "model_info", info,
                                "capabilities", "completion", "thinking", "modified_at", when));
out:
    json_decref(root);
    return 0;
}

static int version(api *a, http_req *r) {
    (void)a;
    return send_json(r, 200, json_pack("{s:s}", "version", OLLAMA_COMPAT_VERSION));
}

/* Pulling is `smolbot pull` (src/app, above this module): the served model
 * is already here, so its pull succeeds at once; any other is refused. */
static int pull(api *a, http_req *r) {
    json_t *root = parse_body(r);
    if (!root) return 0;
    json_t *m = json_object_get(root, "model");
    if (!m || json_is_null(m)) m = json_object_get(root, "name");
    const char *name = json_is_string(m) ? json_string_value(m) : "";
    if (!*name) ol_err(r, 400, "model is required");
    else if (!is_served(a->model_name, name))
        ol_err(r, 501, "pulling \"%.200s\" through the API is not supported: run `smolbot pull` on the server and "
                       "restart it with the model", name);
    else send_json(r, 200, json_pack("{s:s}", "status", "success"));
    json_decref(root);
    return 0;
}

/* Deleting needs the API key (a keyless server is open to anything that
 * reaches it); the only model known here is the one loaded, which stays. */
static int delete_model(api *a, http_req *r) {
    if (!a->cfg.api_key || !*a->cfg.api_key)
        return ol_err(r, 403, "deleting models is refused on a server without an API key (--api-key)"), 0;
    json_t *root = parse_body(r);
    if (!root) return 0;
    const char *name;
    if (!check_model(a, r, root, &name))
        ol_err(r, 409, "model \"%.200s\" is loaded and serving: stop the server to delete its file", name);
    json_decref(root);
    return 0;
}

/* ---- dispatch -------------------------------------------------------------------- */

typedef struct route {
    const char *path;
    const char *method;
    int (*fn)(api *, http_req *);
} route;

static const route routes[] = {
    {"/api/chat", "POST", chat_route},     {"/api/generate", "POST", generate_route}, {"/api/tags", "GET", tags},
    {"/api/ps", "GET", ps},                {"/api/show", "POST", show},              {"/api/version", "GET", version},
    {"/api/pull", "POST", pull},           {"/api/delete", "DELETE", delete_model},
};

int api_ollama_route(api *a, http_req *r, core_err *err) {
    (void)err;
    const char *path = http_req_path(r), *method = http_req_method(r);
    if (strncmp(path, "/api/", 5)) return 0;
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(path, routes[i].path)) rt = &routes[i];
    if (!http_check_bearer(r, a->cfg.api_key)) {
        http_req_add_header(r, "WWW-Authenticate", "Bearer");
        ol_err(r, 401, "missing or invalid API key: send 'Authorization: Bearer KEY'");
        return 1;
    }
    if (!rt) {
        static const char *const later[] = {"/api/embed", "/api/embeddings", "/api/create", "/api/copy", "/api/push",
                                            "/api/blobs"};
        for (size_t i = 0; i < sizeof later / sizeof later[0]; i++)
            if (!strncmp(path, later[i], strlen(later[i]))) {
                ol_err(r, 501, "%s is not supported by this server", later[i]);
                return 1;
            }
        ol_err(r, 404, "no route for %s %s on this server", method, path);
        return 1;
    }
    int head = !strcmp(method, "HEAD") && !strcmp(rt->method, "GET");
    if (strcmp(method, rt->method) && !head) {
        http_req_add_header(r, "Allow", rt->method);
        ol_err(r, 405, "use %s for %s", rt->method, path);
        return 1;
    }
    rt->fn(a, r);
    return 1;
}
