/* api.h -- the routes: the OpenAI-compatible API, Ollama's API, the web page and its
 * HTMX fragments, health and metrics. Glue between http (requests,
 * streams), engine (generation), chat (the prompt format), store (history)
 * and md (answers rendered as safe HTML).
 *
 * api_handle() is the http handler; it dispatches by path:
 *   /health, /metrics, /props, /v1/..., /tokenize, /detokenize,
 *   /apply-template                         -> openai.c
 *   /, /index.html, static assets, /ui/...  -> ui.c
 * Every generation of either goes through one stream bridge (bridge.h):
 * submit, replay log, listeners, cancel, the max_tokens rule.
 */
#ifndef API_H
#define API_H

#include <stddef.h>

#include "core/core.h"
#include "engine/engine.h"
#include "http/http.h"
#include "registry/registry.h"
#include "store/store.h"

typedef struct api_config {
    const char *api_key;    /* NULL/"": no key required */
    const char *model_name; /* shown in /v1/models and the page; NULL: from the file name */
    int max_messages;       /* per request (0: 1000) */
    int max_tokens;         /* cap on max_tokens (0: the context size) */
    int max_streams;        /* concurrent streaming responses (0: 32) */
    int slots;              /* the engine's max_active, reported by /props */
    registry *reg;          /* several models by name, loaded on demand (borrowed; NULL:
                               the engine given to api_new is the one model) */
    const char *pull_exe;   /* with reg: Ollama's /api/pull runs `pull_exe pull NAME -o
                               models_dir/` and adds the file (NULL: refused) */
    const char *models_dir;
} api_config;

typedef struct api api;

/* eng and st are borrowed and must outlive the api; st may be NULL (no
 * history: the UI says so). With cfg->reg, eng only answers for the
 * server's state (a no-model engine will do): requests run on the
 * registry's engines. */
int api_new(api **out, engine *eng, store *st, const api_config *cfg, core_err *err);
void api_free(api *a);
/* The http handler (ctx = the api). */
int api_handle(void *ctx, http_req *req, core_err *err);
/* Before stopping the server: new requests get 503, every request in
 * flight is cancelled (streams end with an error event and [DONE],
 * waiting handlers answer 503), so http_server_stop does not wait for
 * long generations. Any thread; idempotent. */
void api_shutdown(api *a);
/* Drain (SIGTERM behind a proxy): /health answers 503 "draining" and new
 * generations 503 (a proxy retries them on another replica), while those
 * already running finish.  Any thread; idempotent. */
void api_drain(api *a);

/* Parse a request body as the route would, without a server or an engine
 * (fuzzing): which = API_PARSE_CHAT (/v1/chat/completions) or
 * API_PARSE_TEMPLATE (/apply-template); cfg gives max_messages and
 * max_tokens (0: 1000 and 4096). Returns 0 accepted, 1 refused (the 4xx is
 * formatted and dropped). Any thread. */
enum { API_PARSE_CHAT = 0, API_PARSE_TEMPLATE = 1 };
int api_parse_request(const api_config *cfg, int which, const char *body, size_t len);
/* The same for Ollama's /api/chat (chat 1) and /api/generate (chat 0). */
int api_ollama_parse_request(const api_config *cfg, int chat, const char *body, size_t len);

#endif
