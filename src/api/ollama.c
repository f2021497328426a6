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
 * -> the template's reasoning mode, reasoning in "thinking". Refused with a
 * 400 that names the field, never ignored: format (no constrained decoding
 * here), tools and tool_calls, images, suffix, template, context. keep_alive
 * is accepted: the one model stays loaded whatever it says.
 */
#include "api/api_int.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

#include "prompt/prompt.h"
#include "tok/tok.h"

/* The Ollama release whose API shapes these routes follow; clients gate
 * features on it (thinking, for one, needs 0.9). */
#define OLLAMA_COMPAT_VERSION "0.12.0"
#define MAX_STOP_LEN 64 /* SAMPLE_STOP_LEN */
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
    if (r) api_error_ollama(r, status, "%s", msg);
    return -1;
}

static int send_json(http_req *r, int status, json_t *o) {
    char *body = o ? json_dumps(o, JSON_COMPACT | REAL_FMT) : NULL;
    json_decref(o);
    if (!body) return ol_err(r, 500, "out of memory"), 0;
    return http_respond_take(r, status, "application/json", body, strlen(body));
}

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

static uint64_t random_seed(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) v = core_now_ns() * 0x9E3779B97F4A7C15ull;
    return v;
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

/* body as a JSON object, or NULL after answering 400. */
static json_t *parse_json(http_req *r, const char *body, size_t len) {
    json_error_t je;
    json_t *root = api_json_loadb(body, len, &je);
    if (!root) {
        ol_err(r, 400, "invalid JSON in the request body: %s (line %d, column %d)", je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        ol_err(r, 400, "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

static json_t *parse_body(http_req *r) {
    size_t len;
    const char *body = http_req_body(r, &len);
    return parse_json(r, body, len);
}

/* 503 unless the model is ready and the server is not stopping; 0 when ready. */
static int not_ready(api *a, http_req *r) {
    int st = engine_state(a->eng);
    if (st == ENGINE_READY && !bridge_stopping(a->br)) return 0;
    if (bridge_stopping(a->br) || st == ENGINE_STOPPING) return ol_err(r, 503, "the server is shutting down"), 1;
    if (st == ENGINE_LOADING) {
        http_req_add_header(r, "Retry-After", "1");
        return ol_err(r, 503, "the model is loading: try again shortly"), 1;
    }
    if (st == ENGINE_NO_MODEL) return ol_err(r, 503, "no model is loaded: %s", engine_state_message(a->eng)), 1;
    return ol_err(r, 503, "the model failed to load: %s", engine_state_message(a->eng)), 1;
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
    chat_msg *msgs;        /* /api/chat's messages, or generate's [system,] user */
    size_t n_msgs;
    const char *prompt;    /* /api/generate */
    size_t prompt_len;
} ol_req;

static int opt_num(http_req *r, json_t *o, const char *key, double lo, double hi, double *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 1;
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(d) || d < lo || d > hi) return ol_err(r, 400, "option \"%s\" must be a number from %g to %g", key, lo, hi);
    *out = d;
    return 0;
}

static int opt_int(http_req *r, json_t *o, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 1;
    /* Go decodes 40.0 into an int field too; clients written in JS send those */
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi)
        return ol_err(r, 400, "option \"%s\" must be an integer from %lld to %lld", key, lo, hi);
    *out = (long long)d;
    return 0;
}

/* options: the sampling settings Ollama documents. Unknown keys are
 * skipped, as Ollama does (clients send the whole Modelfile set; the
 * runner's, such as num_thread, are the server's here). */
static int parse_options(api *a, http_req *r, json_t *root, ol_req *q) {
    sample_params_default(&q->sp);
    q->sp.seed = random_seed();
    json_t *o = json_object_get(root, "options");
    if (!o || json_is_null(o)) return 0;
    if (!json_is_object(o)) return ol_err(r, 400, "\"options\" must be an object");
    double d;
    long long ll;
    int rc;
    if ((rc = opt_num(r, o, "temperature", 0, 100, &d)) < 0) return -1;
    if (!rc) q->sp.temperature = (float)d;
    if ((rc = opt_num(r, o, "top_p", 0, 1, &d)) < 0) return -1;
    if (!rc) q->sp.top_p = (float)d;
    if ((rc = opt_num(r, o, "min_p", 0, 1, &d)) < 0) return -1;
    if (!rc) q->sp.min_p = (float)d;
    if ((rc = opt_int(r, o, "top_k", 0, 1000000, &ll)) < 0) return -1;
    if (!rc) q->sp.top_k = (int)ll;
    if ((rc = opt_num(r, o, "repeat_penalty", 0, 10, &d)) < 0) return -1;
    if (!rc) q->sp.repeat_penalty = (float)d;
    if ((rc = opt_num(r, o, "presence_penalty", -2, 2, &d)) < 0) return -1;
    if (!rc) q->sp.presence_penalty = (float)d;
    if ((rc = opt_num(r, o, "frequency_penalty", -2, 2, &d)) < 0) return -1;
    if (!rc) q->sp.frequency_penalty = (float)d;
    if ((rc = opt_int(r, o, "repeat_last_n", -1, 1 << 20, &ll)) < 0) return -1;
    if (!rc) q->sp.penalty_last_n = ll < 0 ? (a->eng ? engine_ctx_size(a->eng) : 4096) : (int)ll; /* -1: num_ctx */
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return ol_err(r, 400, "option \"seed\" must be an integer");
        if (json_integer_value(seed) >= 0) q->sp.seed = (uint64_t)json_integer_value(seed); /* < 0: random */
    }
    if ((rc = opt_int(r, o, "num_predict", -2, 1ll << 40, &ll)) < 0) return -1;
    if (!rc && ll > 0) {
        long long cap = a->cfg.max_tokens > 0 ? a->cfg.max_tokens : (a->eng ? engine_ctx_size(a->eng) : 4096);
        if (ll > cap) return ol_err(r, 400, "option \"num_predict\" is %lld; this server allows at most %lld", ll, cap);
        q->num_predict = (int)ll;
    } else if (!rc && ll == 0) {
        return ol_err(r, 400, "option \"num_predict\" must be positive, -1 or -2");
    }
    if ((rc = opt_int(r, o, "num_ctx", 1, 1ll << 30, &ll)) < 0) return -1;
    if (!rc) q->num_ctx = (int)ll;
    json_t *stop = json_object_get(o, "stop");
    if (stop && !json_is_null(stop)) {
        size_t n = json_is_array(stop) ? json_array_size(stop) : 1;
        if (n > SAMPLE_STOP_MAX) return ol_err(r, 400, "option \"stop\": at most %d stop strings", SAMPLE_STOP_MAX);
        for (size_t i = 0; i < n; i++) {
            json_t *s = json_is_array(stop) ? json_array_get(stop, i) : stop;
            if (!json_is_string(s) || !json_string_length(s) || json_string_length(s) > MAX_STOP_LEN)
                return ol_err(r, 400, "option \"stop\" must be a string or an array of strings of 1 to %d bytes",
                              MAX_STOP_LEN);
            q->stops[q->n_stops++] = json_string_value(s);
        }
    }
    core_err err = {0};
    if (sample_params_check(&q->sp, &err)) return ol_err(r, 400, "%s", err.msg);
    return 0;
}

/* The fields both routes share, then each route's own. chat: 1 /api/chat. */
static int parse_request(api *a, http_req *r, json_t *root, int chat, ol_req *q) {
    static const char *const refused[][2] = {
        {"format", "\"format\" is not supported: this server has no constrained decoding"},
        {"tools", "\"tools\" are not supported by this server"},
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
    if (parse_options(a, r, root, q)) return -1;

    if (chat) {
        json_t *arr = json_object_get(root, "messages");
        if (arr && !json_is_null(arr) && !json_is_array(arr)) return ol_err(r, 400, "\"messages\" must be an array");
        size_t n = json_array_size(arr);
        if (n > (size_t)a->cfg.max_messages)
            return ol_err(r, 400, "%zu messages; at most %d are allowed", n, a->cfg.max_messages);
        if (n && !(q->msgs = calloc(n, sizeof *q->msgs))) return ol_err(r, 500, "out of memory");
        q->n_msgs = n;
        for (size_t i = 0; i < n; i++) {
            json_t *m = json_array_get(arr, i);
            if (!json_is_object(m)) return ol_err(r, 400, "messages[%zu] must be an object", i);
            json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
            const char *rs = json_is_string(role) ? json_string_value(role) : "";
            if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
                return ol_err(r, 400, "messages[%zu].role must be system, user, assistant or tool", i);
            if (content && !json_is_null(content) && !json_is_string(content))
                return ol_err(r, 400, "messages[%zu].content must be a string", i);
            if (given(json_object_get(m, "images")))
                return ol_err(r, 400, "messages[%zu].images: images are not supported: the model reads text only", i);
            if (given(json_object_get(m, "tool_calls")))
                return ol_err(r, 400, "messages[%zu].tool_calls: tools are not supported by this server", i);
            q->msgs[i].role = rs;
            q->msgs[i].content = json_is_string(content) ? json_string_value(content) : "";
            q->msgs[i].content_len = json_is_string(content) ? json_string_length(content) : 0;
        }
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
    if (!(q->msgs = calloc(2, sizeof *q->msgs))) return ol_err(r, 500, "out of memory");
    if (given(sys))
        q->msgs[q->n_msgs++] = (chat_msg){"system", json_string_value(sys), json_string_length(sys)};
    q->msgs[q->n_msgs++] = (chat_msg){"user", q->prompt, q->prompt_len};
    return 0;
}

int api_ollama_parse_request(const api_config *cfg, int chat, const char *body, size_t len) {
    api x = {0};
    x.cfg = *cfg;
    if (x.cfg.max_messages <= 0) x.cfg.max_messages = 1000;
    if (x.cfg.max_tokens <= 0) x.cfg.max_tokens = 4096; /* no engine to ask */
    json_t *root = parse_json(NULL, body, len);
    if (!root) return 1;
    ol_req q = {0};
    int refused = parse_request(&x, NULL, root, chat, &q) != 0;
    free(q.msgs);
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

/* A line or object's frame: {"model","created_at", message|response, "done"}. */
static json_t *frame(const char *model, int chat, const char *text, size_t len, const char *reas, size_t rlen,
                     int done) {
    char ts[48];
    now_rfc3339(ts, sizeof ts);
    json_t *o = json_pack("{s:s, s:s}", "model", model, "created_at", ts);
    if (!o) return NULL;
    int bad = 0;
    if (chat) {
        json_t *m = json_pack("{s:s, s:s%}", "role", "assistant", "content", text, len);
        if (m && rlen) bad |= json_object_set_new(m, "thinking", json_stringn(reas, rlen));
        bad |= json_object_set_new(o, "message", m);
    } else {
        bad |= json_object_set_new(o, "response", json_stringn(text, len));
        if (rlen) bad |= json_object_set_new(o, "thinking", json_stringn(reas, rlen));
    }
    bad |= json_object_set_new(o, "done", json_boolean(done));
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
} ol_stream;

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

static int ol_deliver(void *ctx, const bridge_out *o) {
    ol_stream *x = ctx;
    int rc = 0;
    size_t tl = o->answer_end - o->answer_from, rl = o->reasoning_end - o->reasoning_from;
    if (tl || rl)
        rc = send_line(x, frame(x->model, x->chat, o->answer + o->answer_from, tl, o->reasoning + o->reasoning_from,
                                rl, 0));
    if (rc || !o->end) return rc != 0;
    if (!strcmp(o->finish, "error")) {
        send_line(x, json_pack("{s:s}", "error", o->err_msg[0] ? o->err_msg : "generation failed"));
    } else if (!strcmp(o->finish, "cancelled")) {
        if (!http_stream_gone(x->s))
            send_line(x, json_pack("{s:s}", "error",
                                   o->stopping ? "the server is shutting down" : "the request was cancelled"));
    } else {
        json_t *f = frame(x->model, x->chat, "", 0, NULL, 0, 1);
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
        pthread_mutex_lock(&x->a->mu);
        x->a->streams--;
        pthread_mutex_unlock(&x->a->mu);
    }
    core_buf_free(&x->out);
    free(x);
}

static const bridge_listener_ops ol_ops = {ol_deliver, ol_gone, ol_drop};

static int submit_error(api *a, http_req *r, int rc, const char *msg) {
    if (rc == CORE_EFULL) {
        http_req_add_header(r, "Retry-After", "1");
        return ol_err(r, 429, "%s", msg), 0;
    }
    if (rc == CORE_ERANGE || rc == CORE_EINVAL) return ol_err(r, 400, "%s", msg), 0;
    if (rc == CORE_EUNSUP) return not_ready(a, r) ? 0 : (ol_err(r, 503, "%s", msg), 0);
    return ol_err(r, 500, "%s", msg), 0;
}

static int respond_result(api *a, http_req *r, bridge_job *j, const char *model, int chat, uint64_t t0) {
    const char *text, *reas, *finish, *emsg;
    size_t tl, rl;
    const engine_stats *st;
    int ecode;
    bridge_result(j, &text, &tl, &reas, &rl, &st, &finish, &ecode, &emsg);
    if (ecode) return ol_err(r, ecode == CORE_ERANGE ? 400 : 500, "%s", emsg[0] ? emsg : "generation failed"), 0;
    if (!strcmp(finish, "cancelled"))
        return ol_err(r, 503, "%s", bridge_stopping(a->br) ? "the server is shutting down" : "the request was cancelled"), 0;
    json_t *o = frame(model, chat, text, tl, reas, rl, 1);
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
        json_t *o = frame(model, chat, "", 0, NULL, 0, 1);
        if (o) json_object_set_new(o, "done_reason", json_string("load"));
        send_json(r, 200, o);
        goto out;
    }
    const tok *tk = engine_tok(a->eng);
    if (!tk) { submit_error(a, r, CORE_EUNSUP, "the model is not loaded"); goto out; }
    engine_request er = {0};
    int rc;
    if (q.raw) { /* the caller's own template: its control tokens are meant */
        rc = tok_encode(tk, q.prompt, q.prompt_len, 1, &raw_ids, &raw_n, &raw_cap, &err);
        er.prompt = raw_ids;
        er.n_prompt = raw_n;
        er.thinking = 0; /* the text comes back as generated, unsplit */
    } else {
        prompt_opts po = {.thinking = q.thinking};
        rc = prompt_build(tk, q.msgs, q.n_msgs, &po, &p, &err);
        er.prompt = p.ids;
        er.n_prompt = p.n_ids;
        er.n_shared = p.n_shared;
        er.thinking = p.thinking;
    }
    if (rc) { submit_error(a, r, rc, err.msg); goto out; }
    int n_ctx = engine_ctx_size(a->eng);
    if (q.num_ctx > 0 && q.num_ctx < n_ctx) n_ctx = q.num_ctx;
    if (bridge_max_tokens(n_ctx, er.n_prompt, q.num_predict, a->cfg.max_tokens, 0, &er.max_tokens, &err)) {
        ol_err(r, 400, "%s", err.msg);
        goto out;
    }
    er.sampling = q.sp;
    er.stops = q.stops;
    er.n_stops = q.n_stops;
    if (q.stream) {
        pthread_mutex_lock(&a->mu);
        counted = a->streams < a->cfg.max_streams;
        if (counted) a->streams++;
        pthread_mutex_unlock(&a->mu);
        if (!counted) {
            http_req_add_header(r, "Retry-After", "1");
            ol_err(r, 429, "too many concurrent streams (at most %d): try again shortly", a->cfg.max_streams);
            goto out;
        }
        if (!(x = calloc(1, sizeof *x))) {
            ol_err(r, 500, "out of memory");
            goto out;
        }
        x->a = a;
        x->chat = chat;
        x->t0_ns = t0;
        snprintf(x->model, sizeof x->model, "%s", model);
    }
    bridge_job_opts bo = {0}; /* grace 0: cancelled as soon as its client is gone */
    if ((rc = bridge_start(a->br, &er, &bo, &j, &err))) {
        if (rc == CORE_EUNSUP && bridge_stopping(a->br)) ol_err(r, 503, "the server is shutting down");
        else submit_error(a, r, rc, err.msg);
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
        respond_result(a, r, j, model, chat, t0);
    }
out:
    if (j) bridge_release(j);
    if (x) {
        core_buf_free(&x->out);
        free(x);
    }
    if (counted) {
        pthread_mutex_lock(&a->mu);
        a->streams--;
        pthread_mutex_unlock(&a->mu);
    }
    free(raw_ids);
    prompt_free(&p);
    free(q.msgs);
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
