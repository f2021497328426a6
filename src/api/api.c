/* api.c -- the api object, the dispatcher and what the route files share:
 * the stream bridge (bridge.c), OpenAI- and Ollama-shaped errors, latency
 * histograms.
 * (Prompts are src/prompt's.)
 */
#include "api/api_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>


const double api_ttft_bounds[API_HIST_BUCKETS] = {50, 100, 250, 500, 1000, 2000, 4000, 8000, 15000, 30000, 60000, 120000};
const double api_toks_bounds[API_HIST_BUCKETS] = {1, 2, 4, 6, 8, 10, 15, 20, 30, 50, 100, 200};

void api_hist_add(api *a, api_hist *h, const double *bounds, double v) {
    pthread_mutex_lock(&a->mu);
    int b = 0;
    while (b < API_HIST_BUCKETS && v > bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->n++;
    pthread_mutex_unlock(&a->mu);
}

/* The bridge's report of a finished generation: the latency histograms. */
static void on_done(void *ctx, const engine_stats *st) {
    api *a = ctx;
    if (st->ttft_ms > 0) api_hist_add(a, &a->ttft_ms, api_ttft_bounds, st->ttft_ms);
    if (st->decode_tok_s > 0) api_hist_add(a, &a->tok_s, api_toks_bounds, st->decode_tok_s);
}

/* The bridge gives a job's hold on a registry engine back here. */
static void on_release(void *ctx, engine *e, double keep_alive_s) {
    api *a = ctx;
    registry_release(a->cfg.reg, e, keep_alive_s);
}

static int stopping_wait(void *ctx) { return bridge_stopping(((api *)ctx)->br); }

int api_model_get(api *a, const api_rq *q, const char *name, api_model *m) {
    memset(m, 0, sizeof *m);
    m->keep_alive_s = REGISTRY_KEEP_DEFAULT;
    if (!a->cfg.reg) {
        if (api_not_ready(a, q)) return -1;
        m->eng = a->eng;
        snprintf(m->name, sizeof m->name, "%.127s", a->model_name);
        return 0;
    }
    if (bridge_stopping(a->br)) return api_bad(q, 503, "shutting_down", NULL, "the server is shutting down");
    char def[128];
    if (!name || !*name) {
        if (registry_default(a->cfg.reg, def, sizeof def))
            return api_bad(q, 503, "no_model", NULL, "no model can be served: put a .gguf file in the models directory");
        name = def;
    }
    core_err err = {0};
    int rc = registry_acquire(a->cfg.reg, name, stopping_wait, a, &m->eng, &m->load_ms, &err);
    if (rc == CORE_ENOTFOUND) {
        if (q->ollama) return api_bad(q, 404, NULL, NULL, "model \"%.200s\" not found, try pulling it first", name);
        return api_bad(q, 404, "model_not_found", "model", "the model '%.200s' does not exist", name);
    }
    if (rc == CORE_ECANCEL) return api_bad(q, 503, "shutting_down", NULL, "%s", err.msg);
    if (rc) return api_bad(q, q->ollama ? 500 : 400, "model_unsupported", "model", "%s", err.msg);
    m->held = 1;
    /* the name without Ollama's ":latest", as the registry spells it */
    int i = registry_find(a->cfg.reg, name);
    registry_model rm;
    if (i >= 0 && registry_get(a->cfg.reg, (size_t)i, &rm) == 0) snprintf(m->name, sizeof m->name, "%s", rm.name);
    else snprintf(m->name, sizeof m->name, "%s", name);
    return 0;
}

void api_model_put(api *a, api_model *m) {
    if (m->held) registry_release(a->cfg.reg, m->eng, m->keep_alive_s);
    m->held = 0;
}

int api_model_unloaded(api *a, const char *name, char *out, size_t cap) {
    if (!a->cfg.reg) return 0;
    char def[128];
    if (!name || !*name) {
        if (registry_default(a->cfg.reg, def, sizeof def)) return 0;
        name = def;
    }
    int i = registry_find(a->cfg.reg, name);
    registry_model rm;
    if (i < 0 || registry_get(a->cfg.reg, (size_t)i, &rm) || !rm.supported || rm.loaded) return 0;
    snprintf(out, cap, "%s", rm.name);
    return 1;
}

int api_loader_spawn(api *a, void *(*fn)(void *), void *arg) {
    pthread_t t;
    pthread_attr_t at;
    if (pthread_attr_init(&at)) return CORE_ENOMEM;
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    atomic_fetch_add(&a->loaders, 1);
    int rc = pthread_create(&t, &at, fn, arg);
    pthread_attr_destroy(&at);
    if (!rc) return 0;
    atomic_fetch_sub(&a->loaders, 1);
    return CORE_ENOMEM;
}

void api_loader_done(api *a) { atomic_fetch_sub(&a->loaders, 1); }

int api_model_start(api *a, api_model *m, const engine_request *er, bridge_job_opts *bo, bridge_job **out,
                    core_err *err) {
    bo->eng = m->eng;
    bo->keep_alive_s = m->keep_alive_s;
    bo->hold_engine = 0;
    if (m->held) { /* the job's own hold, given back when the engine is done with it */
        if (registry_hold(a->cfg.reg, m->eng) == 0) bo->hold_engine = 1;
    }
    int rc = bridge_start(a->br, er, bo, out, err);
    if (rc && bo->hold_engine) registry_release(a->cfg.reg, m->eng, m->keep_alive_s);
    return rc;
}

int api_new(api **out, engine *eng, store *st, const api_config *cfg, core_err *err) {
    *out = NULL;
    api *a = calloc(1, sizeof *a);
    if (!a) return core_errf(err, CORE_ENOMEM, "out of memory");
    if (cfg) a->cfg = *cfg;
    if (a->cfg.max_messages <= 0) a->cfg.max_messages = 1000;
    if (a->cfg.max_streams <= 0) a->cfg.max_streams = 32;
    a->eng = eng;
    a->st = st;
    a->t_start = core_now_s();
    pthread_mutex_init(&a->mu, NULL);
    if (cfg && cfg->model_name && *cfg->model_name) {
        snprintf(a->model_name, sizeof a->model_name, "%s", cfg->model_name);
    } else {
        const char *p = engine_model_path(eng), *slash = strrchr(p, '/');
        snprintf(a->model_name, sizeof a->model_name, "%s", slash ? slash + 1 : (*p ? p : "none"));
        char *dot = strstr(a->model_name, ".gguf");
        if (dot) *dot = 0;
    }
    int rc = api_auth_new(&a->auth, err);
    if (rc) {
        pthread_mutex_destroy(&a->mu);
        free(a);
        return rc;
    }
    rc = bridge_new(&a->br, eng, on_done, a, err);
    if (!rc && a->cfg.reg) bridge_set_release(a->br, on_release, a);
    if (!rc) rc = api_ui_init(a, err);
    if (rc) {
        api_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

void api_free(api *a) {
    if (!a) return;
    /* streams waiting for a load give up once stopping (about a second) */
    for (int i = 0; i < 1000 && atomic_load(&a->loaders); i++) nanosleep(&(struct timespec){0, 10000000}, NULL);
    bridge_free(a->br); /* first: running answers end and are saved */
    api_ui_free(a);
    api_auth_free(a->auth);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void api_shutdown(api *a) { bridge_shutdown(a->br); }
void api_drain(api *a) { atomic_store(&a->draining, 1); }

static _Thread_local api_err_capture *capture;
void api_capture_errors(api_err_capture *c) { capture = c; }

int api_error(http_req *r, int status, const char *type, const char *code, const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", msg, "type", type, "param",
                          param ? json_string(param) : json_null(), "code", code ? json_string(code) : json_null());
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!r) { /* api_parse_request: formatted, not sent (a capture keeps it) */
        if (capture) {
            *capture = (api_err_capture){.set = 1, .status = status};
            snprintf(capture->type, sizeof capture->type, "%s", type);
            snprintf(capture->code, sizeof capture->code, "%s", code ? code : "");
            snprintf(capture->msg, sizeof capture->msg, "%s", msg);
        }
        free(body);
        return 0;
    }
    if (!body) return http_respond_text(r, status, msg);
    return http_respond_take(r, status, "application/json", body, strlen(body));
}

int api_error_ollama(http_req *r, int status, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s}", "error", msg);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body) return http_respond_text(r, status, msg);
    return http_respond_take(r, status, "application/json", body, strlen(body));
}

json_t *api_json_loadb(const char *body, size_t len, json_error_t *je) {
    return json_loadb(body, len, JSON_REJECT_DUPLICATES, je);
}

/* 1 if a form body carries a NUL, raw or as %00: C strings would cut the
 * text there and store less than was sent. */
static int form_has_nul(const char *b, size_t n) {
    if (memchr(b, 0, n)) return 1;
    for (size_t i = 0; i + 2 < n; i++)
        if (b[i] == '%' && b[i + 1] == '0' && b[i + 2] == '0') return 1;
    return 0;
}

/* Checks every request body passes before any route sees it. Returns 1
 * when it answered. */
static int body_refused(http_req *r) {
    const char *m = http_req_method(r), *p = http_req_path(r);
    if (strcmp(m, "POST") && strcmp(m, "PUT") && strcmp(m, "PATCH")) return 0;
    int json = http_req_type_is(r, "application/json");
    if (strncmp(p, "/ui/", 4)) {
        /* The API takes JSON only. A page on another site can post
         * text/plain or a form without asking (no CORS preflight), but not
         * application/json: so this also keeps other sites from using it. */
        if (json) return 0;
        if (!strncmp(p, "/api/", 5)) /* Ollama's routes answer in Ollama's shape */
            api_error_ollama(r, 415, "send the body as JSON with 'Content-Type: application/json'");
        else
            api_error(r, 415, "invalid_request_error", "unsupported_media_type", NULL,
                  "send the body as JSON with 'Content-Type: application/json'");
        return 1;
    }
    size_t n;
    const char *b = http_req_body(r, &n);
    if (!json && form_has_nul(b, n)) {
        http_respond_text(r, 400, "form fields must not contain NUL characters (%00)");
        return 1;
    }
    return 0;
}

int api_handle(void *ctx, http_req *req, core_err *err) {
    api *a = ctx;
    pthread_mutex_lock(&a->mu);
    a->http_requests++;
    pthread_mutex_unlock(&a->mu);
    if (body_refused(req)) return 0;
    if (api_openai_route(a, req, err)) return 0;
    if (api_ollama_route(a, req, err)) return 0;
    if (api_ui_route(a, req, err)) return 0;
    return api_error(req, 404, "not_found_error", "not_found", NULL, "no route for %s %s", http_req_method(req),
                     http_req_path(req));
}
