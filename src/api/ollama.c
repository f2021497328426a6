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
 *   DELETE /api/delete                only with the API key (else 403): forgets a name and
 *                                     deletes its file from the models directory; 409 while
 *                                     it serves, and for the one model of `serve -m`
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

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* Ollama's keep_alive: a number of seconds, or a Go duration string
 * ("5m", "1h30m", "300ms", "-1"; a bare number is seconds). < 0: forever.
 * 1 absent, 0 set, -1 after answering 400. */
static int parse_keep_alive(http_req *r, json_t *root, double *out) {
    json_t *v = json_object_get(root, "keep_alive");
    if (!v || json_is_null(v)) return 1;
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (!s || !*s) return ol_err(r, 400, "\"keep_alive\" must be a duration (\"5m\") or a number of seconds");
    double sign = 1, total = 0;
    if (*s == '-') { sign = -1; s++; }
    else if (*s == '+') s++;
    int any = 0;
    while (*s) {
        char *end;
        double n = strtod(s, &end);
        if (end == s || n < 0) return ol_err(r, 400, "\"keep_alive\": bad duration \"%.100s\"", json_string_value(v));
        s = end;
        double unit = 1;
        if (!strncmp(s, "ms", 2)) { unit = 1e-3; s += 2; }
        else if (!strncmp(s, "us", 2) || !strncmp(s, "\u00b5s", 3)) { unit = 1e-6; s += *s == 'u' ? 2 : 3; }
        else if (!strncmp(s, "ns", 2)) { unit = 1e-9; s += 2; }
        else if (*s == 'h') { unit = 3600; s++; }
        else if (*s == 'm') { unit = 60; s++; }
        else if (*s == 's') { s++; }
        else if (*s) return ol_err(r, 400, "\"keep_alive\": bad duration \"%.100s\"", json_string_value(v));
        total += n * unit;
        any = 1;
    }
    if (!any) return ol_err(r, 400, "\"keep_alive\": bad duration \"%.100s\"", json_string_value(v));
    *out = sign * total;
    return 0;
}

/* The request's model (its keep_alive with it): the served one, or a
 * registry's loaded on demand. 0, or -1 after answering. */
static int ol_model(api *a, http_req *r, json_t *root, const char **name, api_model *am) {
    double keep = REGISTRY_KEEP_DEFAULT;
    if (parse_keep_alive(r, root, &keep) < 0) return -1;
    if (!a->cfg.reg) {
        if (check_model(a, r, root, name) || not_ready(a, r)) return -1;
        return api_model_get(a, &(api_rq){r, 1}, *name, am);
    }
    json_t *m = json_object_get(root, "model");
    if (!m || json_is_null(m)) m = json_object_get(root, "name");
    if (!json_is_string(m) || !json_string_length(m)) return ol_err(r, 400, "model is required");
    *name = json_string_value(m);
    if (api_model_get(a, &(api_rq){r, 1}, *name, am)) return -1;
    am->keep_alive_s = keep;
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
static int parse_options(api *a, engine *eng, http_req *r, json_t *root, ol_req *q) {
    if (!eng) eng = a->eng;
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
    if (!rc) q->sp.penalty_last_n = ll < 0 ? (eng ? engine_ctx_size(eng) : 4096) : (int)ll; /* -1: num_ctx */
    if ((rc = api_get_int(&rq, o, "num_predict", -2, 1ll << 40, &ll)) < 0) return -1;
    if (!rc && ll > 0) {
        long long cap = a->cfg.max_tokens > 0 ? a->cfg.max_tokens : (eng ? engine_ctx_size(eng) : 4096);
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
static int parse_grammar(engine *eng, http_req *r, json_t *root, int chat, ol_req *q) {
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
        return api_tools_build(&rq, tools, choice, named, parallel, api_calls_form(eng), &q->t);
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
static int parse_request(api *a, engine *eng, http_req *r, json_t *root, int chat, ol_req *q) {
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
    if (parse_options(a, eng, r, root, q) || parse_grammar(eng, r, root, chat, q)) return -1;

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
    int refused = parse_request(&x, NULL, NULL, root, chat, &q) != 0;
    ol_req_free(&q);
    json_decref(root);
    return refused;
}

/* ---- responses ------------------------------------------------------------------ */

/* The durations and counts of the final object, in nanoseconds. The prompt
 * count is the whole prompt (cached ids included): clients read it as the
 * context used. load_duration: how long the request waited for its model
 * to load (0 when it was loaded already). */
static int add_stats(json_t *o, const engine_stats *st, uint64_t t0_ns, double load_ms) {
    return json_object_set_new(o, "total_duration", json_integer((json_int_t)(core_now_ns() - t0_ns))) ||
           json_object_set_new(o, "load_duration", json_integer((json_int_t)(load_ms * 1e6))) ||
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
    double load_ms;
    char model[300];   /* the name the client asked for, echoed as Ollama does */
    core_buf out;      /* one serialized line, reused */
    int parse_calls;   /* 0, or API_CALLS_*: tool calls in that form become message.tool_calls */
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
        if (f && (json_object_set_new(f, "done_reason", json_string(o->finish)) || add_stats(f, o->st, x->t0_ns, x->load_ms))) {
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
                          uint64_t t0, double load_ms) {
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
        if (!calls || api_split_calls(text, tl, 1, parse_calls, &content, calls)) {
            json_decref(calls);
            core_buf_free(&content);
            return ol_err(r, 500, "out of memory"), 0;
        }
        text = content.data ? content.data : "";
        tl = content.len;
    }
    json_t *o = frame(model, chat, text, tl, reas, rl, calls, 1);
    core_buf_free(&content);
    if (o && (json_object_set_new(o, "done_reason", json_string(finish)) || add_stats(o, st, t0, load_ms))) {
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
    api_model am = {0};
    if (ol_model(a, r, root, &model, &am) || parse_request(a, am.eng, r, root, chat, &q)) goto out;
    if (chat ? q.n_msgs == 0 : q.prompt_len == 0) {
        /* Ollama's "load the model" request (keep_alive 0: "unload it"): nothing to generate */
        int unload = a->cfg.reg && am.keep_alive_s == 0;
        api_model_put(a, &am);
        if (unload) registry_unload(a->cfg.reg, model);
        json_t *o = frame(model, chat, "", 0, NULL, 0, NULL, 1);
        if (o) json_object_set_new(o, "done_reason", json_string(unload ? "unload" : "load"));
        if (o && !unload) json_object_set_new(o, "load_duration", json_integer((json_int_t)(am.load_ms * 1e6)));
        send_json(r, 200, o);
        goto out;
    }
    const tok *tk = engine_tok(am.eng);
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
    int n_ctx = engine_ctx_size(am.eng);
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
        x->load_ms = am.load_ms;
        x->parse_calls = q.t.on;
        api_calls_stream_init(&x->cs, 1, q.t.on, send_text, send_call, x);
        snprintf(x->model, sizeof x->model, "%s", model);
    }
    bridge_job_opts bo = {0}; /* grace 0: cancelled as soon as its client is gone */
    if ((rc = api_model_start(a, &am, &er, &bo, &j, &err))) {
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
        respond_result(a, r, j, model, chat, q.t.on, t0, am.load_ms);
    }
out:
    api_model_put(a, &am);
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

/* A registry's name as /api/tags and /api/ps list it. */
static json_t *reg_entry(const registry_model *m, int running) {
    char name[160], when[48], ps[32] = "unknown";
    snprintf(name, sizeof name, "%s%s", m->name, strchr(m->name, ':') ? "" : ":latest");
    if (m->supported) param_size(&m->cfg, ps, sizeof ps);
    json_t *det = json_pack("{s:s, s:s, s:s, s:[s], s:s, s:s}", "parent_model", "", "format", "gguf", "family", m->arch,
                            "families", m->arch, "parameter_size", ps, "quantization_level", m->quant);
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o}", "name", name, "model", name, "size", (json_int_t)m->file_size,
                          "digest", "", "details", det);
    if (!o) return NULL;
    if (running) {
        json_object_set_new(o, "size", json_integer((json_int_t)m->mem_bytes));
        json_object_set_new(o, "size_vram", json_integer(0));
        struct timespec ts = {0};
        if (m->expires_at < 0) {
            json_object_set_new(o, "expires_at", json_string("2318-01-01T00:00:00Z")); /* kept: never expires */
        } else {
            ts.tv_sec = (time_t)m->expires_at;
            ts.tv_nsec = (long)((m->expires_at - (double)ts.tv_sec) * 1e9);
            rfc3339(when, sizeof when, &ts);
            json_object_set_new(o, "expires_at", json_string(when));
        }
        json_object_set_new(o, "context_length", json_integer(m->n_ctx));
    } else {
        struct timespec mt = {(time_t)m->mtime_s, (long)m->mtime_ns};
        rfc3339(when, sizeof when, &mt);
        json_object_set_new(o, "modified_at", json_string(when));
    }
    return o;
}

static int list_models(api *a, http_req *r, int running) {
    json_t *arr = json_array(), *e;
    if (a->cfg.reg) {
        registry_model m;
        for (size_t i = 0; registry_get(a->cfg.reg, i, &m) == 0; i++)
            /* ps: one line per loaded file, under its own name (its aliases share it) */
            if (m.supported && (!running || (m.loaded && m.primary)) && (e = reg_entry(&m, running)))
                json_array_append_new(arr, e);
    } else if ((e = model_entry(a, running))) {
        json_array_append_new(arr, e);
    }
    return send_json(r, 200, json_pack("{s:o}", "models", arr));
}

/* /api/show's model_info: the shape keys as the GGUF names them. */
static json_t *model_info(const model_config *c) {
    json_t *info = json_pack("{s:s}", "general.architecture", c->arch);
    char key[64];
#define INFO(suffix, v) (snprintf(key, sizeof key, "%s." suffix, c->arch), json_object_set_new(info, key, json_integer(v)))
    INFO("context_length", c->n_ctx_train);
    INFO("embedding_length", c->n_embd);
    INFO("block_count", c->n_layer);
    INFO("feed_forward_length", c->n_ff);
    INFO("attention.head_count", c->n_head);
    INFO("attention.head_count_kv", c->n_head_kv);
    INFO("vocab_size", c->n_vocab);
#undef INFO
    return info;
}

/* /api/show's parameters: the sampler defaults and the context. */
static void show_params(char *out, size_t cap, int n_ctx) {
    sample_params sp;
    sample_params_default(&sp);
    snprintf(out, cap, "temperature %g\ntop_p %g\ntop_k %d\nmin_p %g\nnum_ctx %d", (double)sp.temperature,
             (double)sp.top_p, sp.top_k, (double)sp.min_p, n_ctx);
}

/* /api/show of a registry's name: from its probe, without loading it. */
static int show_registry(api *a, http_req *r, json_t *root) {
    json_t *m = json_object_get(root, "model");
    if (!m || json_is_null(m)) m = json_object_get(root, "name");
    if (!json_is_string(m) || !json_string_length(m)) return ol_err(r, 400, "model is required");
    const char *name = json_string_value(m);
    registry_model rm;
    int i = registry_find(a->cfg.reg, name);
    if (i < 0 || registry_get(a->cfg.reg, (size_t)i, &rm))
        return ol_err(r, 404, "model \"%.200s\" not found, try pulling it first", name);
    if (!rm.supported) return ol_err(r, 400, "model \"%.200s\" cannot be served: %s", name, rm.reason);
    const model_config *c = &rm.cfg;
    char params[256], modelfile[1200], when[48], ps[32];
    show_params(params, sizeof params, rm.n_ctx);
    snprintf(modelfile, sizeof modelfile, "# served by smolbot\nFROM %.1000s\n", rm.path);
    param_size(c, ps, sizeof ps);
    json_t *info = model_info(c);
    struct timespec mt = {(time_t)rm.mtime_s, (long)rm.mtime_ns};
    rfc3339(when, sizeof when, &mt);
    json_t *det = json_pack("{s:s, s:s, s:s, s:[s], s:s, s:s}", "parent_model", "", "format", "gguf", "family", rm.arch,
                            "families", rm.arch, "parameter_size", ps, "quantization_level", rm.quant);
    return send_json(r, 200, json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:[s, s, s], s:s}", "license", "", "modelfile",
                                       modelfile, "parameters", params, "template", "", "details", det, "model_info",
                                       info, "capabilities", "completion", "thinking", "tools", "modified_at", when));
}

static int tags(api *a, http_req *r) { return list_models(a, r, 0); }
static int ps(api *a, http_req *r) { return list_models(a, r, 1); }

static int show(api *a, http_req *r) {
    json_t *root = parse_body(r);
    if (!root) return 0;
    if (a->cfg.reg) {
        show_registry(a, r, root);
        goto out;
    }
    if (check_model(a, r, root, NULL) || not_ready(a, r)) goto out;
    const model_config *c = engine_model_config(a->eng);
    char params[256], modelfile[1200], when[48];
    show_params(params, sizeof params, engine_ctx_size(a->eng));
    snprintf(modelfile, sizeof modelfile, "# served by smolbot\nFROM %.1000s\n", engine_model_path(a->eng));
    json_t *info = model_info(c);
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

/* ---- /api/pull with several models: `smolbot pull` as a child ---------------------
 *
 * The pull code is the command's (src/app, above this module): the server
 * runs its own binary (api_config.pull_exe) as `pull NAME -o DIR/` and
 * turns what it prints into Ollama's progress lines. The child is a
 * bridge job without engine: its tick reads the child's stderr ("pull:
 * 42%  15.3/36.6 MB ...") and stdout (sha256sum's line: the file written),
 * and when the child ends, adds the file to the registry and ends with
 * {"status":"success"} or {"error": the child's last line}. A client that
 * leaves cancels it: the child is stopped, its .part kept for a resume. */

typedef struct pull_job {
    api *a;
    pid_t pid;
    int err_fd, out_fd;
    core_buf err_line, out;
    char last[512];     /* the child's last stderr line */
    char name[256];
    int ended;
} pull_job;

static void pull_push(bridge_job *j, json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    size_t n = s ? strlen(s) : 0;
    char *line = s ? realloc(s, n + 2) : NULL;
    if (!line) {
        free(s);
        return;
    }
    line[n] = '\n'; /* one push: the line and its end together */
    bridge_push(j, line, n + 1);
    free(line);
}

/* One stderr line of the child as a progress line. */
static void pull_line(pull_job *p, bridge_job *j, const char *l) {
    double pct, have, total;
    if (sscanf(l, "pull: %lf%% %lf/%lf MB", &pct, &have, &total) == 3)
        pull_push(j, json_pack("{s:s, s:s, s:I, s:I}", "status", "pulling model", "digest", "", "total",
                               (json_int_t)(total * 1e6), "completed", (json_int_t)(have * 1e6)));
    else if (*l && strncmp(l, "   ", 3)) /* a message (the error, at the end); not the "   -> FILE" line */
        snprintf(p->last, sizeof p->last, "%s", l);
}

static void pull_drain(pull_job *p, bridge_job *j) {
    char buf[4096];
    ssize_t n;
    while (p->err_fd >= 0 && (n = read(p->err_fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' || buf[i] == '\r') {
                if (p->err_line.len) {
                    core_buf_append(&p->err_line, "", 1);
                    pull_line(p, j, p->err_line.data);
                }
                p->err_line.len = 0;
            } else if (p->err_line.len < 4096) {
                core_buf_append(&p->err_line, buf + i, 1);
            }
        }
    }
    while (p->out_fd >= 0 && (n = read(p->out_fd, buf, sizeof buf)) > 0 && p->out.len < 8192)
        core_buf_append(&p->out, buf, (size_t)n);
}

static void pull_tick(void *ctx, bridge_job *j, double now) {
    (void)now;
    pull_job *p = ctx;
    if (p->ended) return;
    pull_drain(p, j);
    int status;
    pid_t w = waitpid(p->pid, &status, WNOHANG);
    if (w == 0) return;
    pull_drain(p, j);
    p->ended = 1;
    p->pid = -1;
    /* stdout: "SHA256  PATH" of the file written */
    core_buf_append(&p->out, "", 1);
    const char *path = p->out.data ? strstr(p->out.data, "  ") : NULL;
    char file[2048] = "";
    if (path) {
        snprintf(file, sizeof file, "%s", path + 2);
        file[strcspn(file, "\n")] = 0;
    }
    if (w < 0 || !WIFEXITED(status) || WEXITSTATUS(status) || !file[0]) {
        pull_push(j, json_pack("{s:s}", "error", p->last[0] ? p->last : "the pull failed"));
        bridge_finish(j, "error");
        return;
    }
    pull_push(j, json_pack("{s:s}", "status", "verifying sha256 digest"));
    core_err err = {0};
    int rc = registry_add_file(p->a->cfg.reg, NULL, file, 0, &err);
    if (rc && registry_find(p->a->cfg.reg, p->name) < 0) {
        char nm[128];
        registry_name_of(file, nm, sizeof nm);
        if (registry_find(p->a->cfg.reg, nm) < 0) { /* a name already taken by another file */
            pull_push(j, json_pack("{s:s}", "error", err.msg));
            bridge_finish(j, "error");
            return;
        }
    }
    pull_push(j, json_pack("{s:s}", "status", "writing manifest"));
    pull_push(j, json_pack("{s:s}", "status", "success"));
    bridge_finish(j, "stop");
}

static void pull_free(void *ctx) {
    pull_job *p = ctx;
    if (p->pid > 0) { /* cancelled: stop the child (its .part stays for a resume) */
        kill(p->pid, SIGTERM);
        waitpid(p->pid, NULL, 0);
    }
    if (p->err_fd >= 0) close(p->err_fd);
    if (p->out_fd >= 0) close(p->out_fd);
    core_buf_free(&p->err_line);
    core_buf_free(&p->out);
    free(p);
}

/* Start `pull_exe pull NAME -o DIR/`. 0 or -1. */
static int pull_spawn(api *a, const char *name, pull_job *p) {
    int ep[2] = {-1, -1}, op[2] = {-1, -1};
    if (pipe2(ep, O_CLOEXEC) || pipe2(op, O_CLOEXEC)) goto fail;
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/", a->cfg.models_dir);
    char *argv[] = {(char *)a->cfg.pull_exe, "pull", (char *)name, "-o", dir, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, op[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
    extern char **environ;
    int rc = posix_spawn(&p->pid, a->cfg.pull_exe, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) goto fail;
    close(ep[1]);
    close(op[1]);
    p->err_fd = ep[0];
    p->out_fd = op[0];
    fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
    fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (ep[i] >= 0) close(ep[i]);
        if (op[i] >= 0) close(op[i]);
    }
    return -1;
}

/* NDJSON: the job's lines as they come. */
typedef struct pull_stream {
    api *a;
    http_stream *s;
} pull_stream;

static int pull_deliver(void *ctx, const bridge_out *o) {
    pull_stream *x = ctx;
    if (o->answer_end > o->answer_from &&
        http_stream_write(x->s, o->answer + o->answer_from, o->answer_end - o->answer_from))
        return 1;
    return 0;
}
static int pull_gone(void *ctx) { return http_stream_gone(((pull_stream *)ctx)->s); }
static void pull_drop(void *ctx) {
    pull_stream *x = ctx;
    http_stream_close(x->s);
    api_stream_give(x->a);
    free(x);
}
static const bridge_listener_ops pull_ops = {pull_deliver, pull_gone, pull_drop};

static int pull_registry(api *a, http_req *r, json_t *root, const char *name) {
    int stream = 1;
    if (api_get_bool(&(api_rq){r, 1}, root, "stream", &stream) < 0) return 0;
    if (registry_find(a->cfg.reg, name) >= 0) { /* here already */
        if (stream) {
            static const char line[] = "{\"status\":\"success\"}\n";
            return http_respond(r, 200, "application/x-ndjson", line, sizeof line - 1);
        }
        return send_json(r, 200, json_pack("{s:s}", "status", "success"));
    }
    if (!a->cfg.pull_exe || !a->cfg.models_dir)
        return ol_err(r, 501, "pulling through the API is not enabled on this server: run `smolbot pull`"), 0;
    if (stream && api_stream_take(a, &(api_rq){r, 1})) return 0;
    pull_job *p = calloc(1, sizeof *p);
    pull_stream *x = stream ? calloc(1, sizeof *x) : NULL;
    if (!p || (stream && !x)) {
        free(p);
        free(x);
        if (stream) api_stream_give(a);
        return ol_err(r, 500, "out of memory"), 0;
    }
    p->a = a;
    p->err_fd = p->out_fd = -1;
    snprintf(p->name, sizeof p->name, "%s", name);
    if (pull_spawn(a, name, p)) {
        free(p);
        free(x);
        if (stream) api_stream_give(a);
        return ol_err(r, 500, "cannot start the pull"), 0;
    }
    bridge_job_opts bo = {0};
    bo.grace_s = stream ? 0 : 3600; /* a stream's client that leaves stops it */
    bo.owner = (bridge_owner){pull_tick, NULL, pull_free, p};
    bridge_job *j = NULL;
    core_err err = {0};
    if (bridge_start(a->br, NULL, &bo, &j, &err)) {
        pull_free(p);
        free(x);
        if (stream) api_stream_give(a);
        return ol_err(r, 503, "%s", err.msg), 0;
    }
    pull_push(j, json_pack("{s:s}", "status", "pulling manifest"));
    if (stream) {
        x->a = a;
        x->s = http_respond_stream(r, 200, "application/x-ndjson", NULL, &err);
        if (!x->s) {
            free(x);
            api_stream_give(a);
            bridge_cancel(j);
        } else {
            bridge_listen(j, &pull_ops, x, 0, 0);
        }
    } else {
        bridge_wait(j);
        const char *text, *finish, *emsg;
        size_t tl;
        int ecode;
        const engine_stats *st;
        bridge_result(j, &text, &tl, NULL, NULL, &st, &finish, &ecode, &emsg);
        /* the last line says it: success or the error */
        const char *last = text;
        for (size_t i = 0; i + 1 < tl; i++)
            if (text[i] == '\n') last = text + i + 1;
        json_error_t je;
        json_t *o = last ? json_loadb(last, text + tl - last, 0, &je) : NULL;
        send_json(r, json_object_get(o, "error") ? 500 : 200, o ? o : json_pack("{s:s}", "error", "the pull failed"));
    }
    bridge_release(j);
    return 0;
}

/* Pulling is `smolbot pull` (src/app, above this module). With one model:
 * the served model is already here, so its pull succeeds at once; any
 * other is refused. With several: see pull_registry. */
static int pull(api *a, http_req *r) {
    json_t *root = parse_body(r);
    if (!root) return 0;
    json_t *m = json_object_get(root, "model");
    if (!m || json_is_null(m)) m = json_object_get(root, "name");
    const char *name = json_is_string(m) ? json_string_value(m) : "";
    if (a->cfg.reg && *name) {
        pull_registry(a, r, root, name);
        json_decref(root);
        return 0;
    }
    int have = a->cfg.reg ? *name && registry_find(a->cfg.reg, name) >= 0 : is_served(a->model_name, name);
    if (!*name) ol_err(r, 400, "model is required");
    else if (!have)
        ol_err(r, 501, "pulling \"%.200s\" through the API is not supported: run `smolbot pull` on the server and "
                       "restart it with the model", name);
    else send_json(r, 200, json_pack("{s:s}", "status", "success"));
    json_decref(root);
    return 0;
}

/* Deleting needs the API key (a keyless server is open to anything that
 * reaches it). With several models, the name goes from the registry, and
 * a file inside the models directory is removed from the disk (one named
 * elsewhere, by --alias NAME=PATH, is only forgotten). The one model of
 * `serve -m` stays. */
static int inside_models_dir(const api *a, const char *path) {
    char dir[PATH_MAX], parent[PATH_MAX], in[1024];
    snprintf(in, sizeof in, "%s", path);
    char *slash = strrchr(in, '/');
    if (slash) *slash = 0; /* the entry's folder: a link is removed, never its target */
    return a->cfg.models_dir && realpath(a->cfg.models_dir, dir) && realpath(slash ? in : ".", parent) &&
           !strcmp(dir, parent);
}

static int delete_model(api *a, http_req *r) {
    if (!a->cfg.api_key || !*a->cfg.api_key)
        return ol_err(r, 403, "deleting models is refused on a server without an API key (--api-key)"), 0;
    json_t *root = parse_body(r);
    if (!root) return 0;
    const char *name;
    if (a->cfg.reg) {
        json_t *m = json_object_get(root, "model");
        if (!m || json_is_null(m)) m = json_object_get(root, "name");
        name = json_is_string(m) ? json_string_value(m) : "";
        char path[1024];
        core_err err = {0};
        int rc = *name ? registry_remove(a->cfg.reg, name, path, sizeof path, &err) : CORE_EINVAL;
        if (!*name) ol_err(r, 400, "model is required");
        else if (rc) ol_err(r, rc == CORE_ENOTFOUND ? 404 : 409, "%s", err.msg);
        else if (*path && inside_models_dir(a, path) && unlink(path))
            ol_err(r, 500, "model \"%.200s\" is gone from the list, but its file could not be removed: %s", name,
                   strerror(errno));
        else {
            LOG_INFO("ollama: deleted model %s%s%s", name, *path ? " " : "", path);
            http_respond(r, 200, NULL, "", 0);
        }
    } else if (!check_model(a, r, root, &name))
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
