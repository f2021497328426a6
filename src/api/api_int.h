/* api_int.h -- what the route files of src/api share (not a public header). */
#ifndef API_INT_H
#define API_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <jansson.h>

#include "api/api.h"
#include "api/bridge.h"
#include "chat/chat.h"
#include "sample/sample.h"

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
    atomic_int draining; /* api_drain: new generations get 503, running ones finish */
    atomic_int loaders;  /* streams waiting for their model's load on a thread of their own */
};

/* A request answered without an http_req (r NULL) has its errors dropped,
 * except on a thread that set a capture: the last one lands there. A
 * stream that had to start before its model loaded (openai.c) sends it as
 * an event, the status line being gone already. */
typedef struct api_err_capture {
    int set, status;
    char type[32], code[48], msg[1024];
} api_err_capture;
void api_capture_errors(api_err_capture *c); /* NULL: stop capturing */

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

typedef struct api_rq api_rq;
/* The model a request runs on. Without a registry: the one engine,
 * whatever name was asked. With one: name (NULL or "": the default)
 * acquired from it, held until api_model_put; each job started with
 * api_model_start holds it too, until the engine is done with the job. */
typedef struct api_model {
    engine *eng;
    char name[128];       /* the name answers carry */
    int held;
    double load_ms;       /* this request waited that long for a load */
    double keep_alive_s;  /* REGISTRY_KEEP_DEFAULT unless the request says */
} api_model;
/* 0, or -1 after answering (404 unknown model, 400 unsupported, 503 not ready / stopping). */
int api_model_get(api *a, const api_rq *q, const char *name, api_model *m);
void api_model_put(api *a, api_model *m);
/* With a registry: 1 when name (NULL or "": the default) is a model it
 * knows and can run that is not loaded (a request for it waits for the
 * load), its own spelling in out; else 0. */
int api_model_unloaded(api *a, const char *name, char *out, size_t cap);
/* A detached thread fn(arg) that waits for a load, counted in a->loaders
 * (api_free waits for them): fn ends with api_loader_done(a) as its last
 * touch of a. 0, or CORE_ENOMEM (no thread; nothing counted). */
int api_loader_spawn(api *a, void *(*fn)(void *), void *arg);
void api_loader_done(api *a);
/* bridge_start on m's engine (bo's engine fields are set here). */
int api_model_start(api *a, api_model *m, const engine_request *er, bridge_job_opts *bo, bridge_job **out,
                    core_err *err);

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

/* ---- req.c: request parsing the OpenAI and Ollama routes share ---- */

/* A request and the shape of its answers. r NULL (the fuzzer): answers are
 * formatted and dropped. ollama: {"error": "..."}; else OpenAI's. */
struct api_rq {
    http_req *r;
    int ollama;
};

/* Answer status with an error in the request's shape (code and param
 * OpenAI's; Ollama's message names param). Returns -1. */
int api_bad(const api_rq *q, int status, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
int api_oom(const api_rq *q); /* 500 "out of memory"; -1 */
uint64_t api_random_u64(void); /* getrandom, the clock as fallback; any thread */
/* body[0..len) (body NULL: the request's) as a JSON object; NULL after a 400. */
json_t *api_parse_json(const api_rq *q, const char *body, size_t len);
/* An api with nothing but cfg (and its defaults where cfg leaves them 0),
 * for the request parsers run without a server (fuzzing). */
void api_parse_only(api *x, const api_config *cfg);
/* 503 unless the model is ready and the server is not stopping: 1 answered, 0 ready. */
int api_not_ready(api *a, const api_rq *q);
/* A bridge_start / prompt_build failure rc with its message (param: the
 * prompt's field for a context overflow). -1. */
int api_submit_error(api *a, const api_rq *q, int rc, const char *param, const char *msg);
/* 1 after answering when a finished job failed or was cancelled, else 0. */
int api_result_failed(api *a, const api_rq *q, int ecode, const char *emsg, const char *finish, const char *param);
/* One more open stream (0), or 429 when max_streams are open (-1); give it back with api_stream_give. */
int api_stream_take(api *a, const api_rq *q);
void api_stream_give(api *a);

/* Optional fields of object o: 1 absent, 0 set, -1 answered 400. Ollama's
 * integers may be written 40.0 (Go accepts them). */
int api_get_num(const api_rq *q, json_t *o, const char *key, double lo, double hi, double *out);
int api_get_int(const api_rq *q, json_t *o, const char *key, long long lo, long long hi, long long *out);
int api_get_bool(const api_rq *q, json_t *o, const char *key, int *out);
/* temperature (0..max_temp), top_p, min_p, top_k, the penalties and seed
 * (random when absent; Ollama's < 0 too) of o into sp (defaults kept). */
int api_parse_sampling(const api_rq *q, json_t *o, double max_temp, sample_params *sp);
/* "stop": a string or an array of them, appended to stops (borrowed from stop). */
int api_parse_stops(const api_rq *q, json_t *stop, const char **stops, size_t *n_stops);

/* Messages, with joined content parts kept in bufs and an assistant's
 * tool_calls in calls (arguments malloc'd); the rest borrowed from the JSON. */
typedef struct api_msgs {
    chat_msg *v;
    core_buf *bufs;
    chat_msg_calls *calls;
    size_t n;
} api_msgs;
/* arr must be an array of at most max_messages (it may be empty). */
int api_parse_messages(const api_rq *q, json_t *arr, int max_messages, api_msgs *m);
void api_msgs_free(api_msgs *m);

/* The tools as the prompt lists them and the output's grammar. */
/* How a model writes tool calls: SmolLM3 and Qwen in <tool_call> tags,
 * Llama 3.x as a bare JSON object (prompt_calls_json). */
enum { API_CALLS_TAGS = 1, API_CALLS_JSON = 2 };
/* The form of the model eng runs (NULL: tags, as the fuzzer parses). */
int api_calls_form(engine *eng);

typedef struct api_tools {
    int on;                  /* 0, or API_CALLS_*: tool calls are parsed out of the answer in that form */
    int lazy;                /* the grammar applies from "<tool_call>" on (tool_choice auto) */
    core_buf repr;           /* chat_tools_repr of the tools (empty: none) */
    core_buf json;           /* the tools as JSON text, for files' own templates (empty: none) */
    sample_grammar *grammar; /* the output's constraint, or NULL */
} api_tools;
void api_tools_free(api_tools *t);
/* Validate "tools" (absent or null: none); *n_tools their count. */
int api_tools_check(const api_rq *q, json_t *tools, size_t *n_tools);
/* "tool_choice" (absent: auto with tools): *choice API_TC_*, *named the
 * function's name for API_TC_NAMED (borrowed from tc). */
enum { API_TC_NONE = 0, API_TC_AUTO, API_TC_REQUIRED, API_TC_NAMED };
int api_tool_choice(const api_rq *q, json_t *tc, size_t n_tools, int *choice, const char **named);
/* After api_tools_check and api_tool_choice (not API_TC_NONE): the prompt's
 * list and the calls' grammar, of one tool (named) or any (parallel:
 * several calls), for calls in form (API_CALLS_*; JSON's grammar is one
 * bare object, and with tool_choice auto there is none: free text). */
int api_tools_build(const api_rq *q, json_t *tools, int choice, const char *named, int parallel, int form,
                    api_tools *t);
/* A JSON schema (NULL: any JSON value) as t->grammar; param names it in errors. */
int api_schema_grammar(const api_rq *q, json_t *schema, const char *param, api_tools *t);
/* A call's JSON (a <tool_call> body, or Llama's bare object: "parameters"
 * for "arguments", an optional "type": "function", arguments as an object
 * or as a string holding one) as OpenAI's {"id","type","function":{"name",
 * "arguments": text}} or Ollama's {"function":{"name","arguments": object}};
 * NULL when it is not a call. */
json_t *api_tool_call(const char *body, size_t len, int ollama);
/* text split into content and calls (appended), calls written in form
 * (API_CALLS_*); 0 or CORE_ENOMEM. */
int api_split_calls(const char *text, size_t len, int ollama, int form, core_buf *content, json_t *calls);
int api_all_space(const char *s, size_t n);

/* A stream's answer split as it comes: content goes to text, each whole
 * tool call (api_tool_call's shape; taken; i counts from 0) to call.
 * Whitespace-only content waits for what follows, and is dropped after
 * the last call. Callbacks return 0 or an error that push returns. */
typedef int (*api_text_fn)(void *ctx, const char *text, size_t len);
typedef int (*api_call_fn)(void *ctx, json_t *call, int i);
typedef struct api_calls_stream {
    chat_calls cp;
    core_buf cbuf;  /* content of the current push */
    core_buf ws;    /* whitespace-only content held back */
    int n_calls, ollama;
    api_text_fn text;
    api_call_fn call;
    void *ctx;
} api_calls_stream;
void api_calls_stream_init(api_calls_stream *s, int ollama, int form, api_text_fn text, api_call_fn call,
                           void *ctx);
int api_calls_stream_push(api_calls_stream *s, const char *text, size_t len);
int api_calls_stream_finish(api_calls_stream *s); /* at the end: what is held back */
void api_calls_stream_free(api_calls_stream *s);
/* Send o (taken) as the JSON body; a 500 in the dialect's shape when it cannot. 0. */
int api_send_json(const api_rq *q, int status, json_t *o);

#endif
