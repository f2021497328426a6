/* api_int.h -- what the route files of src/api share (not a public header). */
#ifndef API_INT_H
#define API_INT_H

#include <pthread.h>
#include <stdint.h>

#include <jansson.h>

#include "api/api.h"
#include "api/bridge.h"

#define API_HIST_BUCKETS 12

typedef struct api_hist {
    uint64_t counts[API_HIST_BUCKETS + 1]; /* cumulative at export; last = +Inf */
    double sum;
    uint64_t n;
} api_hist;

struct api {
    api_config cfg;
    engine *eng;
    store *st;
    char model_name[256];
    double t_start;
    pthread_mutex_t mu; /* guards the counters below */
    int streams;        /* open streaming responses of the OpenAI and Ollama routes */
    uint64_t http_requests;
    uint64_t http_errors;
    api_hist ttft_ms;   /* time to first token */
    api_hist tok_s;     /* decode tokens/s per request */
    void *ui;           /* ui.c's private state (api_ui_init) */
    struct api_auth *auth; /* the page's sign-in sessions (auth.c) */
    bridge *br;         /* every generation goes through it (bridge.h) */
};

/* Bucket bounds shared by the histograms (api.c). */
extern const double api_ttft_bounds[API_HIST_BUCKETS];
extern const double api_toks_bounds[API_HIST_BUCKETS];
void api_hist_add(api *a, api_hist *h, const double *bounds, double v);

/* Parse a request body: jansson with duplicate keys refused (parsers
 * disagree on which one wins, so a checker and a user of the same body
 * could see different values). NULL with je filled on error. */
json_t *api_json_loadb(const char *body, size_t len, json_error_t *je);

/* Send an OpenAI-shaped error: {"error":{"message","type","param","code"}}. */
int api_error(http_req *r, int status, const char *type, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Send an Ollama-shaped error: {"error": msg}. */
int api_error_ollama(http_req *r, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* auth.c: the page's sign-in (sessions, rate limit, sign-out). */
typedef struct api_auth api_auth;
int api_auth_new(api_auth **out, core_err *err);
void api_auth_free(api_auth *u);
/* 1 if the request may use the page: no key configured, a live session
 * cookie, or the Bearer key. Any thread. */
int api_auth_signed_in(api *a, http_req *r);
/* /ui/login, /ui/logout, and the sign-in wall in front of the page: 1 if
 * it answered (the route was its own, or the request is not signed in). */
int api_auth_route(api *a, http_req *r);

/* Routes: return 1 if the path was theirs (a response was made), 0 if not. */
int api_openai_route(api *a, http_req *r, core_err *err);
int api_ui_route(api *a, http_req *r, core_err *err);
int api_ollama_route(api *a, http_req *r, core_err *err); /* every /api/ path */
int api_ui_init(api *a, core_err *err);
void api_ui_free(api *a);

#endif
