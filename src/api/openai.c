/* openai.c -- the OpenAI-compatible API, health, props and metrics.
 *
 * Routes (everything else returns 0 so ui.c gets it):
 *   GET  /health                 200 {"status":"ok"} | 503 loading/failed/stopping
 *                                | 200 {"status":"no_model"} (see below)
 *   GET  /metrics                Prometheus text (smolbot_* names)
 *   GET  /props                  llama.cpp-like server properties
 *   GET  /v1/models              the one model
 *   POST /v1/chat/completions    stream and non-stream
 *   POST /tokenize, /detokenize, /apply-template   (llama.cpp's shapes)
 * Every route but /health needs the API key when one is configured.
 *
 * No-model mode answers /health with 200 {"status":"no_model","message"}:
 * the process is healthy and serving the page (which says what to do), so
 * `make run` and container health checks do not restart it in a loop;
 * generation routes answer 503 (code "no_model") instead.
 *
 * A completion is a job (oai_job) shared by three parties: the handler
 * thread that parsed it, the engine thread that calls on_event() with its
 * text, and the watcher thread below. It is reference counted: the handler
 * holds one reference, the engine one from submit until DONE/ERROR.
 *   non-stream  on_event collects reasoning and answer; DONE wakes the
 *               handler (condvar), which builds the response.
 *   stream      the handler answers with an SSE stream right after submit
 *               (headers go out at once) and returns; on_event writes one
 *               chunk per TEXT event and the tail on DONE/ERROR, then
 *               closes the stream. http_stream_event never blocks, so the
 *               engine thread is never held up by a slow client.
 * The job's mutex is held by the handler across engine_submit and the
 * attachment of the stream, so no event can race ahead of the stream; it
 * is recursive in case an engine ever reports from inside submit.
 *
 * A client that goes away is noticed by the http module (pings, EOF peek);
 * the next write fails and on_event returns 1, which cancels the request.
 * While a job is queued the engine calls nothing, so a watcher thread
 * checks every open stream each WATCH_MS and cancels the ones that are
 * gone: a slot is freed within a second however the client left.
 *
 * Streamed chunks are formatted by hand into the job's buffer (a fixed
 * prefix + the escaped delta), not through jansson: one small append per
 * token. The engine hands out whole UTF-8 characters only, so no chunk ever
 * splits one, and the concatenated deltas are exactly the non-stream text
 * (both are the same engine events).
 *
 * Lock order: registry mutex -> job mutex -> engine's mutex. The engine
 * never holds its mutex while calling on_event, and on_event takes the
 * registry mutex only after releasing the job's.
 */
#include "api_int.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <jansson.h>

#include "tok/tok.h"

#define WATCH_MS 100
#define MAX_STOP_LEN 64         /* SAMPLE_STOP_LEN */
#define DEFAULT_MAX_TOKENS 4096 /* when the request gives none (also capped by the context) */
#define REAL_FMT JSON_REAL_PRECISION(6)

/* ---- the job -------------------------------------------------------------- */

typedef struct oai_job {
    api *a;
    pthread_mutex_t mu; /* recursive; guards every field below */
    pthread_cond_t cv;
    int refs;
    int stream;
    http_stream *s;     /* stream mode: attached after submit, NULL once closed */
    int include_usage;
    uint64_t req_id;    /* 0 until submitted */
    int done;           /* DONE or ERROR seen */
    int cancel_sent;
    core_buf content, reasoning; /* non-stream */
    core_buf chunk;     /* stream: scratch for one event */
    core_buf prefix;    /* stream: '{"id":...,"choices":[{"index":0,"delta":' */
    engine_stats st;
    char finish[16];
    int err_code;
    char err_msg[256];
    char id[48];
    long long created;
    struct oai_job *next; /* registry */
} oai_job;

typedef struct oai_state {
    pthread_mutex_t mu; /* registry */
    pthread_cond_t cv;
    oai_job *jobs;
    atomic_int stopping; /* api_shutdown called; read without the mutex (see is_stopping) */
    int quit;           /* watcher: exit */
    int watcher_on;
    pthread_t watcher;
} oai_state;

static oai_job *job_new(api *a, int stream) {
    oai_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutexattr_t at;
    pthread_mutexattr_init(&at);
    pthread_mutexattr_settype(&at, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&j->mu, &at);
    pthread_mutexattr_destroy(&at);
    pthread_cond_init(&j->cv, NULL);
    j->a = a;
    j->refs = 1; /* the handler's; the engine's is added at submit */
    j->stream = stream;
    return j;
}

static void job_unref(oai_job *j) {
    pthread_mutex_lock(&j->mu);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last) return;
    core_buf_free(&j->content);
    core_buf_free(&j->reasoning);
    core_buf_free(&j->chunk);
    core_buf_free(&j->prefix);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static int reg_add(api *a, oai_job *j) {
    oai_state *o = a->oai;
    pthread_mutex_lock(&o->mu);
    int stopping = atomic_load(&o->stopping);
    if (!stopping) {
        j->next = o->jobs;
        o->jobs = j;
    }
    pthread_mutex_unlock(&o->mu);
    return stopping ? -1 : 0;
}

static void reg_del(api *a, oai_job *j) {
    oai_state *o = a->oai;
    pthread_mutex_lock(&o->mu);
    for (oai_job **pp = &o->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    pthread_mutex_unlock(&o->mu);
}

/* Lock-free: on_event asks while holding a job's mutex, and the registry
 * mutex comes before job mutexes in the lock order. */
static int is_stopping(api *a) {
    oai_state *o = a->oai;
    return atomic_load(&o->stopping);
}

/* Cancel the requests of every registered job matching `pred` (gone
 * streams, or all). engine_cancel is called outside our locks. */
static void cancel_where(api *a, int all) {
    oai_state *o = a->oai;
    uint64_t ids[256];
    int n = 0;
    pthread_mutex_lock(&o->mu);
    for (oai_job *j = o->jobs; j && n < 256; j = j->next) {
        pthread_mutex_lock(&j->mu);
        if (j->req_id && !j->cancel_sent && !j->done && (all || (j->s && http_stream_gone(j->s)))) {
            ids[n++] = j->req_id;
            j->cancel_sent = 1;
        }
        pthread_mutex_unlock(&j->mu);
    }
    pthread_mutex_unlock(&o->mu);
    for (int i = 0; i < n; i++) engine_cancel(a->eng, ids[i]);
}

static void *watcher_main(void *arg) {
    api *a = arg;
    oai_state *o = a->oai;
    pthread_mutex_lock(&o->mu);
    while (!o->quit) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += WATCH_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&o->cv, &o->mu, &ts);
        if (o->quit) break;
        pthread_mutex_unlock(&o->mu);
        cancel_where(a, 0);
        pthread_mutex_lock(&o->mu);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

int api_openai_init(api *a, core_err *err) {
    oai_state *o = calloc(1, sizeof *o);
    if (!o) return core_errf(err, CORE_ENOMEM, "out of memory");
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    a->oai = o;
    if (pthread_create(&o->watcher, NULL, watcher_main, a) == 0) o->watcher_on = 1;
    else LOG_WARN("api: no watcher thread: queued streams are cancelled only when they start");
    return 0;
}

void api_openai_free(api *a) {
    oai_state *o = a->oai;
    if (!o) return;
    pthread_mutex_lock(&o->mu);
    o->quit = 1;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    if (o->watcher_on) pthread_join(o->watcher, NULL);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o);
    a->oai = NULL;
}

void api_shutdown(api *a) {
    oai_state *o = a->oai;
    if (!o) return;
    pthread_mutex_lock(&o->mu);
    atomic_store(&o->stopping, 1);
    pthread_mutex_unlock(&o->mu);
    cancel_where(a, 1);
}

/* ---- small helpers ---------------------------------------------------------- */

static uint64_t random_u64(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
        static _Atomic uint64_t ctr; /* fallback only: mixed with the clock */
        v = core_now_ns() ^ (++ctr * 0x9E3779B97F4A7C15ull);
    }
    return v;
}

/* Append s[0..n) as the inside of a JSON string (no quotes). s is valid UTF-8. */
static int json_esc(core_buf *b, const char *s, size_t n) {
    if (core_buf_reserve(b, n + 16)) return CORE_ENOMEM;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (i > start && core_buf_append(b, s + start, i - start)) return CORE_ENOMEM;
        start = i + 1;
        int rc;
        switch (c) {
        case '"': rc = core_buf_puts(b, "\\\""); break;
        case '\\': rc = core_buf_puts(b, "\\\\"); break;
        case '\n': rc = core_buf_puts(b, "\\n"); break;
        case '\r': rc = core_buf_puts(b, "\\r"); break;
        case '\t': rc = core_buf_puts(b, "\\t"); break;
        default: rc = core_buf_printf(b, "\\u%04x", c); break;
        }
        if (rc) return CORE_ENOMEM;
    }
    return n > start ? core_buf_append(b, s + start, n - start) : 0;
}

/* Copy bytes into out as valid UTF-8, each bad byte becoming U+FFFD. */
static int utf8_fix(const char *s, size_t n, core_buf *out) {
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        int k = core_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (k > 0) {
            if (core_buf_append(out, s + i, (size_t)k)) return CORE_ENOMEM;
            i += (size_t)k;
        } else {
            if (core_buf_puts(out, "\xEF\xBF\xBD")) return CORE_ENOMEM;
            i++;
        }
    }
    return 0;
}

static int send_json(http_req *r, int status, json_t *o) {
    char *body = o ? json_dumps(o, JSON_COMPACT | REAL_FMT) : NULL;
    json_decref(o);
    if (!body) return api_error(r, 500, "server_error", NULL, NULL, "out of memory");
    return http_respond_take(r, status, "application/json", body, strlen(body));
}

static int bad(http_req *r, const char *param, const char *fmt, const char *detail) {
    return api_error(r, 400, "invalid_request_error", "invalid_value", param, fmt, detail);
}

/* 503 for every state but READY; 0 when ready. */
static int not_ready(api *a, http_req *r) {
    int st = engine_state(a->eng);
    if (st == ENGINE_READY && !is_stopping(a)) return 0;
    if (st == ENGINE_LOADING) http_req_add_header(r, "Retry-After", "1");
    if (is_stopping(a) || st == ENGINE_STOPPING)
        api_error(r, 503, "unavailable_error", "shutting_down", NULL, "the server is shutting down");
    else if (st == ENGINE_LOADING)
        api_error(r, 503, "unavailable_error", "model_loading", NULL, "the model is loading: try again shortly");
    else if (st == ENGINE_NO_MODEL)
        api_error(r, 503, "unavailable_error", "no_model", NULL, "no model is loaded: %s", engine_state_message(a->eng));
    else
        api_error(r, 503, "unavailable_error", "model_failed", NULL, "the model failed to load: %s",
                  engine_state_message(a->eng));
    return 1;
}

/* body[0..len) as a JSON object, or NULL after answering 400. */
static json_t *parse_json(http_req *r, const char *body, size_t len) {
    json_error_t je;
    json_t *root = api_json_loadb(body, len, &je);
    if (!root) {
        char msg[300];
        snprintf(msg, sizeof msg, "invalid JSON in the request body: %s (line %d, column %d)", je.text, je.line,
                 je.column);
        api_error(r, 400, "invalid_request_error", "invalid_json", NULL, "%s", msg);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        api_error(r, 400, "invalid_request_error", "invalid_json", NULL, "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

static json_t *parse_body(http_req *r) {
    size_t len;
    const char *body = http_req_body(r, &len);
    return parse_json(r, body, len);
}

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

/* Messages of a request, with joined content parts kept alive in bufs. */
typedef struct msgs {
    chat_msg *v;
    core_buf *bufs;
    size_t n;
} msgs;

static void msgs_free(msgs *m) {
    if (m->bufs)
        for (size_t i = 0; i < m->n; i++) core_buf_free(&m->bufs[i]);
    free(m->bufs);
    free(m->v);
    *m = (msgs){0};
}

/* Parse "messages". 0, or -1 after answering 400. */
static int parse_messages(api *a, http_req *r, json_t *root, msgs *m) {
    json_t *arr = json_object_get(root, "messages");
    if (!json_is_array(arr)) return bad(r, "messages", "%s", "'messages' must be an array of messages"), -1;
    size_t n = json_array_size(arr);
    if (n == 0) return bad(r, "messages", "%s", "'messages' must not be empty"), -1;
    if (n > (size_t)a->cfg.max_messages) {
        api_error(r, 400, "invalid_request_error", "too_many_messages", "messages",
                  "%zu messages; at most %d are allowed", n, a->cfg.max_messages);
        return -1;
    }
    m->v = calloc(n, sizeof *m->v);
    m->bufs = calloc(n, sizeof *m->bufs);
    m->n = n;
    if (!m->v || !m->bufs) return api_error(r, 500, "server_error", NULL, NULL, "out of memory"), -1;
    for (size_t i = 0; i < n; i++) {
        char param[64];
        json_t *msg = json_array_get(arr, i);
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(msg)) return bad(r, param, "%s", "each message must be an object"), -1;
        json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_is_string(role)) return bad(r, param, "%s", "'role' must be a string"), -1;
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system"; /* OpenAI's newer name for it */
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return bad(r, param, "unknown role '%.40s' (system, user, assistant or tool)", rs), -1;
        m->v[i].role = rs;
        snprintf(param, sizeof param, "messages[%zu].content", i);
        if (json_is_string(content)) {
            m->v[i].content = json_string_value(content);
            m->v[i].content_len = json_string_length(content);
        } else if (json_is_array(content)) {
            core_buf *b = &m->bufs[i];
            size_t k;
            json_t *part;
            json_array_foreach(content, k, part) {
                json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
                if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") ||
                    !json_is_string(text))
                    return bad(r, param, "%s", "content parts must be {\"type\":\"text\",\"text\":\"...\"}"), -1;
                if ((k > 0 && core_buf_puts(b, "\n")) ||
                    core_buf_append(b, json_string_value(text), json_string_length(text)))
                    return api_error(r, 500, "server_error", NULL, NULL, "out of memory"), -1;
            }
            m->v[i].content = b->data ? b->data : "";
            m->v[i].content_len = b->len;
        } else if (json_is_null(content) || !content) {
            if (strcmp(rs, "assistant")) return bad(r, param, "%s", "'content' must be a string or an array of text parts"), -1;
            m->v[i].content = "";
        } else {
            return bad(r, param, "%s", "'content' must be a string or an array of text parts"), -1;
        }
    }
    return 0;
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

/* Optional number field in [lo, hi]. 1 absent, 0 set, -1 answered 400. */
static int get_num(http_req *r, json_t *root, const char *key, double lo, double hi, double *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 1;
    if (!json_is_number(v)) return bad(r, key, "'%s' must be a number", key), -1;
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi) {
        api_error(r, 400, "invalid_request_error", "invalid_value", key, "'%s' must be between %g and %g", key, lo, hi);
        return -1;
    }
    *out = d;
    return 0;
}

static int get_int(http_req *r, json_t *root, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 1;
    if (!json_is_integer(v)) return bad(r, key, "'%s' must be an integer", key), -1;
    long long d = json_integer_value(v);
    if (d < lo || d > hi) {
        api_error(r, 400, "invalid_request_error", "invalid_value", key, "'%s' must be between %lld and %lld", key, lo,
                  hi);
        return -1;
    }
    *out = d;
    return 0;
}

static int get_bool(http_req *r, json_t *root, const char *key, int *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 1;
    if (!json_is_boolean(v)) return bad(r, key, "'%s' must be a boolean", key), -1;
    *out = json_is_true(v);
    return 0;
}

typedef struct chat_req {
    sample_params sp;
    int max_tokens;     /* 0: not given */
    const char *stops[SAMPLE_STOP_MAX];
    size_t n_stops;
    int stream, include_usage, thinking, ignore_eos;
} chat_req;

/* Every field but messages. 0, or -1 after answering 400. */
static int parse_fields(api *a, http_req *r, json_t *root, chat_req *q) {
    double d;
    long long ll;
    int rc, b;
    sample_params_default(&q->sp);
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model) && !json_is_string(model)) return bad(r, "model", "%s", "'model' must be a string"), -1;
    if ((rc = get_num(r, root, "temperature", 0, 2, &d)) < 0) return -1;
    if (!rc) q->sp.temperature = (float)d;
    if ((rc = get_num(r, root, "top_p", 0, 1, &d)) < 0) return -1;
    if (!rc) q->sp.top_p = (float)d;
    if ((rc = get_num(r, root, "min_p", 0, 1, &d)) < 0) return -1;
    if (!rc) q->sp.min_p = (float)d;
    if ((rc = get_int(r, root, "top_k", 0, 1000000, &ll)) < 0) return -1;
    if (!rc) q->sp.top_k = (int)ll;
    if ((rc = get_num(r, root, "presence_penalty", -2, 2, &d)) < 0) return -1;
    if (!rc) q->sp.presence_penalty = (float)d;
    if ((rc = get_num(r, root, "frequency_penalty", -2, 2, &d)) < 0) return -1;
    if (!rc) q->sp.frequency_penalty = (float)d;
    if ((rc = get_num(r, root, "repeat_penalty", 0, 10, &d)) < 0) return -1;
    if (!rc) q->sp.repeat_penalty = (float)d;
    q->sp.seed = random_u64();
    json_t *seed = json_object_get(root, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return bad(r, "seed", "%s", "'seed' must be an integer"), -1;
        q->sp.seed = (uint64_t)json_integer_value(seed);
    }
    long long cap = a->cfg.max_tokens > 0 ? a->cfg.max_tokens : engine_ctx_size(a->eng);
    const char *mt_key = json_object_get(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((rc = get_int(r, root, mt_key, 1, 1ll << 40, &ll)) < 0) return -1;
    if (!rc) {
        if (ll > cap) {
            api_error(r, 400, "invalid_request_error", "invalid_value", mt_key,
                      "'%s' is %lld; this server allows at most %lld", mt_key, ll, cap);
            return -1;
        }
        q->max_tokens = (int)ll;
    }
    json_t *nn = json_object_get(root, "n");
    if (nn && !json_is_null(nn) && !(json_is_integer(nn) && json_integer_value(nn) == 1))
        return api_error(r, 400, "invalid_request_error", "unsupported_parameter", "n", "only n=1 is supported"), -1;
    json_t *stop = json_object_get(root, "stop");
    if (stop && !json_is_null(stop)) {
        json_t *one[1] = {stop};
        json_t **v = one;
        size_t n = 1;
        if (json_is_array(stop)) {
            n = json_array_size(stop);
            if (n > SAMPLE_STOP_MAX) {
                api_error(r, 400, "invalid_request_error", "invalid_value", "stop", "at most %d stop strings", SAMPLE_STOP_MAX);
                return -1;
            }
            v = NULL;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *s = v ? v[i] : json_array_get(stop, i);
            if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > MAX_STOP_LEN) {
                api_error(r, 400, "invalid_request_error", "invalid_value", "stop",
                          "'stop' must be a string or an array of strings of 1 to %d bytes", MAX_STOP_LEN);
                return -1;
            }
            q->stops[q->n_stops++] = json_string_value(s);
        }
    }
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
    json_t *tools = json_object_get(root, "tools");
    if (tools && !json_is_null(tools) && !(json_is_array(tools) && json_array_size(tools) == 0))
        return api_error(r, 400, "invalid_request_error", "unsupported_parameter", "tools", "tools are not supported"), -1;
    json_t *lp = json_object_get(root, "logprobs");
    if (json_is_true(lp))
        return api_error(r, 400, "invalid_request_error", "unsupported_parameter", "logprobs", "logprobs are not supported"), -1;
    if (parse_thinking(r, root, &q->thinking)) return -1;
    core_err err = {0};
    if (sample_params_check(&q->sp, &err)) return bad(r, NULL, "%s", err.msg), -1;
    return 0;
}

/* The request parsers without a server (fuzz_api): with r == NULL,
 * api_error formats its answer and drops it. Same code as the routes. */
int api_parse_request(api *a, int which, const char *body, size_t len) {
    json_t *root = parse_json(NULL, body, len);
    if (!root) return 1;
    msgs m = {0};
    chat_req q = {0};
    int thinking = 1, add_gen = 1, refused;
    if (which == API_PARSE_CHAT)
        refused = parse_fields(a, NULL, root, &q) || parse_messages(a, NULL, root, &m);
    else
        refused = parse_messages(a, NULL, root, &m) || parse_thinking(NULL, root, &thinking) ||
                  get_bool(NULL, root, "add_generation_prompt", &add_gen) < 0;
    msgs_free(&m);
    json_decref(root);
    return refused ? 1 : 0;
}

/* ---- engine events ------------------------------------------------------------- */

static int chunk_start(oai_job *j) {
    core_buf_clear(&j->chunk);
    return core_buf_append(&j->chunk, j->prefix.data, j->prefix.len);
}

/* Send one chunk whose delta is {"KEY":"text"} (key NULL: {}), with finish. */
static int send_delta(oai_job *j, const char *key, const char *text, size_t len, const char *finish) {
    int rc = chunk_start(j);
    if (!rc && key) {
        rc = core_buf_printf(&j->chunk, "{\"%s\":\"", key);
        if (!rc) rc = json_esc(&j->chunk, text, len);
        if (!rc) rc = core_buf_puts(&j->chunk, "\"}");
    } else if (!rc) {
        rc = core_buf_puts(&j->chunk, "{}");
    }
    if (!rc) rc = core_buf_puts(&j->chunk, ",\"logprobs\":null,\"finish_reason\":");
    if (!rc) rc = finish ? core_buf_printf(&j->chunk, "\"%s\"}]}", finish) : core_buf_puts(&j->chunk, "null}]}");
    if (rc) return rc;
    return http_stream_event(j->s, NULL, NULL, j->chunk.data, j->chunk.len);
}

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

static int send_error_event(oai_job *j, const char *type, const char *code, const char *msg) {
    json_t *o = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type", type, "param", "code", code);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    int rc = s ? http_stream_event(j->s, NULL, NULL, s, strlen(s)) : CORE_ENOMEM;
    free(s);
    return rc;
}

static void stream_tail(oai_job *j, const engine_event *ev) {
    api *a = j->a;
    if (ev->type == ENGINE_EV_ERROR) {
        send_error_event(j, ev->code == CORE_ERANGE ? "invalid_request_error" : "server_error",
                         ev->code == CORE_ERANGE ? "context_length_exceeded" : "internal_error",
                         ev->error ? ev->error : "generation failed");
    } else if (!strcmp(j->finish, "cancelled")) {
        if (!http_stream_gone(j->s))
            send_error_event(j, "server_error", is_stopping(a) ? "shutting_down" : "cancelled",
                             is_stopping(a) ? "the server is shutting down" : "the request was cancelled");
    } else {
        send_delta(j, NULL, NULL, 0, j->finish);
        if (j->include_usage) {
            json_t *u = json_pack("{s:s, s:s, s:I, s:s, s:[], s:o, s:o}", "id", j->id, "object", "chat.completion.chunk",
                                  "created", (json_int_t)j->created, "model", a->model_name, "choices", "usage",
                                  usage_json(&j->st), "timings", timings_json(&j->st));
            char *s = u ? json_dumps(u, JSON_COMPACT | REAL_FMT) : NULL;
            json_decref(u);
            if (s) http_stream_event(j->s, NULL, NULL, s, strlen(s));
            free(s);
        }
    }
    http_stream_event(j->s, NULL, NULL, "[DONE]", 6);
    http_stream_close(j->s);
    j->s = NULL;
    pthread_mutex_lock(&a->mu);
    a->streams--;
    pthread_mutex_unlock(&a->mu);
}

static int on_event(void *ctx, const engine_event *ev) {
    oai_job *j = ctx;
    api *a = j->a;
    int cancel = 0, final = ev->type == ENGINE_EV_DONE || ev->type == ENGINE_EV_ERROR;
    pthread_mutex_lock(&j->mu);
    if (final) {
        if (ev->stats) j->st = *ev->stats;
        snprintf(j->finish, sizeof j->finish, "%s",
                 ev->type == ENGINE_EV_ERROR ? "error" : (ev->stats && ev->stats->finish_reason ? ev->stats->finish_reason : "stop"));
        if (ev->type == ENGINE_EV_ERROR) {
            j->err_code = ev->code ? ev->code : CORE_EIO;
            snprintf(j->err_msg, sizeof j->err_msg, "%s", ev->error ? ev->error : "generation failed");
        }
    }
    if (j->stream) {
        if (!j->s) {
            cancel = 1; /* never attached (or already closed) */
        } else if (ev->type == ENGINE_EV_TEXT) {
            int rc = 0;
            if (ev->reasoning_len) rc = send_delta(j, "reasoning_content", ev->reasoning, ev->reasoning_len, NULL);
            if (!rc && ev->text_len) rc = send_delta(j, "content", ev->text, ev->text_len, NULL);
            cancel = rc != 0;
        } else if (ev->type == ENGINE_EV_QUEUED || ev->type == ENGINE_EV_PREFILL) {
            cancel = http_stream_gone(j->s);
        } else if (final) {
            stream_tail(j, ev);
        }
    } else if (ev->type == ENGINE_EV_TEXT) {
        if (core_buf_append(&j->reasoning, ev->reasoning ? ev->reasoning : "", ev->reasoning_len) ||
            core_buf_append(&j->content, ev->text ? ev->text : "", ev->text_len))
            cancel = 1;
    }
    if (final) {
        j->done = 1;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    if (final) {
        if (ev->stats && ev->stats->gen_tokens > 0) {
            if (ev->stats->ttft_ms > 0) api_hist_add(a, &a->ttft_ms, api_ttft_bounds, ev->stats->ttft_ms);
            if (ev->stats->decode_tok_s > 0) api_hist_add(a, &a->tok_s, api_toks_bounds, ev->stats->decode_tok_s);
        }
        reg_del(a, j);
        job_unref(j); /* the engine's reference */
    }
    return cancel;
}

/* ---- /v1/chat/completions --------------------------------------------------------- */

static int submit_error(api *a, http_req *r, int rc, const char *msg) {
    if (rc == CORE_EFULL) {
        http_req_add_header(r, "Retry-After", "1");
        return api_error(r, 429, "rate_limit_error", "queue_full", NULL, "%s", msg);
    }
    if (rc == CORE_ERANGE)
        return api_error(r, 400, "invalid_request_error", "context_length_exceeded", "messages", "%s", msg);
    if (rc == CORE_EUNSUP) return not_ready(a, r) ? 0 : api_error(r, 503, "unavailable_error", NULL, NULL, "%s", msg);
    if (rc == CORE_EINVAL) return api_error(r, 400, "invalid_request_error", "invalid_value", NULL, "%s", msg);
    return api_error(r, 500, "server_error", NULL, NULL, "%s", msg);
}

static int respond_message(api *a, http_req *r, oai_job *j) {
    if (j->err_code) {
        if (j->err_code == CORE_ERANGE)
            return api_error(r, 400, "invalid_request_error", "context_length_exceeded", "messages", "%s", j->err_msg);
        return api_error(r, 500, "server_error", "internal_error", NULL, "%s", j->err_msg);
    }
    if (!strcmp(j->finish, "cancelled"))
        return api_error(r, 503, "unavailable_error", is_stopping(a) ? "shutting_down" : "cancelled", NULL, "%s",
                         is_stopping(a) ? "the server is shutting down" : "the request was cancelled");
    json_t *msg = json_pack("{s:s, s:s%}", "role", "assistant", "content", j->content.data ? j->content.data : "",
                            j->content.len);
    if (msg && j->reasoning.len)
        json_object_set_new(msg, "reasoning_content", json_stringn(j->reasoning.data, j->reasoning.len));
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:[{s:i, s:o, s:n, s:s}], s:o, s:o}", "id", j->id, "object",
                          "chat.completion", "created", (json_int_t)j->created, "model", a->model_name,
                          "system_fingerprint", "smolbot", "choices", "index", 0, "message", msg, "logprobs",
                          "finish_reason", j->finish, "usage", usage_json(&j->st), "timings", timings_json(&j->st));
    return send_json(r, 200, o);
}

static int chat_completions(api *a, http_req *r) {
    if (strcmp(http_req_method(r), "POST"))
        return api_error(r, 405, "invalid_request_error", "method_not_allowed", NULL, "use POST");
    if (not_ready(a, r)) return 0;
    json_t *root = parse_body(r);
    if (!root) return 0;
    msgs m = {0};
    chat_req q = {0};
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int mode = 1;
    oai_job *j = NULL;
    core_err err = {0};
    if (parse_fields(a, r, root, &q) || parse_messages(a, r, root, &m)) goto out;
    int rc = api_build_prompt(a, m.v, m.n, q.thinking, NULL, 1, &ids, &n_ids, &mode, NULL, &err);
    if (rc == CORE_EINVAL) { api_error(r, 400, "invalid_request_error", "invalid_value", "messages", "%s", err.msg); goto out; }
    if (rc) { submit_error(a, r, rc, err.msg); goto out; }
    int ctx = engine_ctx_size(a->eng);
    if ((long long)n_ids + 1 > ctx || (q.max_tokens && (long long)n_ids + q.max_tokens > ctx)) {
        api_error(r, 400, "invalid_request_error", "context_length_exceeded", "messages",
                  "this model's context holds %d tokens; the messages take %zu and max_tokens asks for %d more", ctx,
                  n_ids, q.max_tokens ? q.max_tokens : 1);
        goto out;
    }
    if (!q.max_tokens) {
        long long cap = a->cfg.max_tokens > 0 ? a->cfg.max_tokens : DEFAULT_MAX_TOKENS;
        q.max_tokens = (int)CORE_MIN(cap, (long long)ctx - (long long)n_ids);
    }
    if (q.stream) {
        pthread_mutex_lock(&a->mu);
        int over = a->streams >= a->cfg.max_streams;
        if (!over) a->streams++;
        pthread_mutex_unlock(&a->mu);
        if (over) {
            http_req_add_header(r, "Retry-After", "1");
            api_error(r, 429, "rate_limit_error", "too_many_streams", NULL,
                      "too many concurrent streams (at most %d): try again shortly", a->cfg.max_streams);
            goto out;
        }
    }
    j = job_new(a, q.stream);
    if (!j) { api_error(r, 500, "server_error", NULL, NULL, "out of memory"); goto unstream; }
    j->include_usage = q.include_usage;
    j->created = (long long)time(NULL);
    snprintf(j->id, sizeof j->id, "chatcmpl-%016llx%08llx", (unsigned long long)random_u64(),
             (unsigned long long)(random_u64() & 0xffffffffu));
    if (q.stream &&
        (core_buf_printf(&j->prefix, "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":\"",
                         j->id, j->created) ||
         json_esc(&j->prefix, a->model_name, strlen(a->model_name)) ||
         core_buf_puts(&j->prefix, "\",\"system_fingerprint\":\"smolbot\",\"choices\":[{\"index\":0,\"delta\":"))) {
        api_error(r, 500, "server_error", NULL, NULL, "out of memory");
        goto unstream_job;
    }
    if (reg_add(a, j)) {
        api_error(r, 503, "unavailable_error", "shutting_down", NULL, "the server is shutting down");
        goto unstream_job;
    }
    engine_request er = {0};
    er.prompt = ids;
    er.n_prompt = n_ids;
    er.sampling = q.sp;
    er.max_tokens = q.max_tokens;
    er.stops = q.stops;
    er.n_stops = q.n_stops;
    er.thinking = mode;
    er.ignore_eos = q.ignore_eos;
    er.cb = on_event;
    er.ctx = j;
    pthread_mutex_lock(&j->mu);
    uint64_t rid = 0;
    j->refs++; /* the engine's, given back by on_event at DONE/ERROR */
    rc = engine_submit(a->eng, &er, &rid, &err);
    if (rc) {
        j->refs--; /* the engine never took it */
        pthread_mutex_unlock(&j->mu);
        reg_del(a, j);
        submit_error(a, r, rc, err.msg);
        goto unstream_job;
    }
    j->req_id = rid;
    if (q.stream) {
        j->s = http_respond_stream(r, 200, "text/event-stream", NULL, &err);
        if (!j->s || send_delta(j, "role", "assistant", 9, NULL) != 0) {
            /* no stream (or already gone): on_event sees it and cancels */
            if (!j->s) {
                pthread_mutex_lock(&a->mu);
                a->streams--;
                pthread_mutex_unlock(&a->mu);
            }
            j->cancel_sent = 1;
            engine_cancel(a->eng, rid);
        }
        pthread_mutex_unlock(&j->mu);
    } else {
        while (!j->done) pthread_cond_wait(&j->cv, &j->mu);
        pthread_mutex_unlock(&j->mu);
        respond_message(a, r, j);
    }
    if (is_stopping(a)) engine_cancel(a->eng, rid); /* raced with api_shutdown's sweep */
    job_unref(j);
    goto out;

unstream_job:
    job_unref(j);
unstream:
    if (q.stream) {
        pthread_mutex_lock(&a->mu);
        a->streams--;
        pthread_mutex_unlock(&a->mu);
    }
out:
    free(ids);
    msgs_free(&m);
    json_decref(root);
    return 0;
}

/* ---- the small routes ------------------------------------------------------------ */

static int health(api *a, http_req *r) {
    int st = engine_state(a->eng);
    if (is_stopping(a)) st = ENGINE_STOPPING;
    json_t *o;
    int status = 503;
    if (st == ENGINE_READY) {
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

static int models(api *a, http_req *r) {
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
        "max_tokens", a->cfg.max_tokens > 0 ? a->cfg.max_tokens : DEFAULT_MAX_TOKENS, "api_key_required",
        a->cfg.api_key && *a->cfg.api_key);
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
    M("model_ready", "gauge", "1 when the model is loaded and serving.", "%d", m.state == ENGINE_READY);
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
    if (!json_is_string(content)) {
        bad(r, "content", "%s", "'content' must be a string");
        goto out;
    }
    if (get_bool(r, root, "parse_special", &parse_special) < 0 || get_bool(r, root, "with_pieces", &with_pieces) < 0)
        goto out;
    const tok *tk = engine_tok(a->eng);
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
    json_decref(root);
    return 0;
}

static int detokenize(api *a, http_req *r) {
    if (not_ready(a, r)) return 0;
    json_t *root = parse_body(r);
    if (!root) return 0;
    json_t *arr = json_object_get(root, "tokens");
    const tok *tk = engine_tok(a->eng);
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
    if (!rc) rc = utf8_fix(text.data ? text.data : "", text.len, &fixed);
    free(ids);
    core_buf_free(&text);
    if (rc) api_error(r, 500, "server_error", NULL, NULL, "cannot decode the tokens");
    else send_json(r, 200, json_pack("{s:s%}", "content", fixed.data ? fixed.data : "", fixed.len));
    core_buf_free(&fixed);
out:
    json_decref(root);
    return 0;
}

static int apply_template(api *a, http_req *r) {
    json_t *root = parse_body(r);
    if (!root) return 0;
    msgs m = {0};
    int thinking = 1, add_gen = 1;
    core_buf text = {0};
    core_err err = {0};
    if (parse_messages(a, r, root, &m) || parse_thinking(r, root, &thinking) ||
        get_bool(r, root, "add_generation_prompt", &add_gen) < 0)
        goto out;
    chat_opts o;
    chat_opts_default(&o);
    o.enable_thinking = thinking;
    o.add_generation_prompt = add_gen;
    if (chat_render(m.v, m.n, &o, &text, &err)) {
        api_error(r, 400, "invalid_request_error", "invalid_value", "messages", "%s", err.msg);
        goto out;
    }
    /* contents came from jansson (valid UTF-8, no NUL): so is the render */
    send_json(r, 200, json_pack("{s:s%}", "prompt", text.data ? text.data : "", text.len));
out:
    core_buf_free(&text);
    msgs_free(&m);
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
