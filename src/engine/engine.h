/* engine.h -- one inference thread that owns the model and every KV cache.
 *
 * Callers (HTTP threads, the terminal chat) submit requests: a prompt that is
 * already tokenized, sampling parameters and a callback. The engine thread
 * runs them and reports through the callback: queued (with position),
 * prefill progress, text (answer and reasoning, always whole UTF-8
 * characters), done (with stats), or error. The callback runs on the engine
 * thread and must not block; returning nonzero cancels the request (that is
 * how a closed client stops its generation).
 *
 * Conversations are addressed by id and keep their KV cache and the tokens
 * in it between turns: a new turn's prompt is compared token by token with
 * what is cached and only the part after the longest common prefix is
 * prefilled. Requests without an id are placed by value: they run in
 * place on an idle anonymous cache only when it offers the longest prefix
 * and what they would overwrite is small beside it (a regenerate, a
 * conversation that went on); otherwise they get a fresh cache into which
 * the longest prefix any cache holds is copied. The system block that
 * starts every new conversation (its length in ids comes with the
 * request: the engine knows no template text) is kept once and copied the
 * same way, so a short request never destroys a long cached prompt to
 * save a shared system block. Caches count against a byte budget; the
 * least recently used idle one is evicted when it is exceeded (it is
 * rebuilt by prefill, or copied from another, on its next turn).
 *
 * Scheduling: all sequences that are decoding advance together, one token
 * each, in one batched forward pass (weights read once for all). A new
 * prompt is prefilled in chunks that ride in the same pass as the decode
 * tokens; beside running streams a chunk is sized so one step takes about
 * 2.8 decode steps, so a long prompt does not freeze the other
 * streams. Cancellation is checked between chunks and at every token.
 */
#ifndef ENGINE_H
#define ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "model/model.h"
#include "sample/sample.h"
#include "tok/tok.h"

typedef struct engine engine;

typedef struct engine_config {
    const char *model_path; /* NULL or "": no-model mode (the engine says so) */
    int n_threads;          /* 0: all cores */
    int n_ctx;              /* positions per conversation (0: 4096, at most the model's) */
    int kv_type;            /* MODEL_KV_F16 (default) or MODEL_KV_F32 */
    uint64_t kv_budget;     /* bytes for all caches (0: 2 GiB) */
    int max_queue;          /* waiting requests before submit refuses (0: 64) */
    int max_active;         /* sequences generating at once (0: 4) */
    int n_batch;            /* prefill chunk (0: 256) */
    int gpu;                /* MODEL_GPU_* (0: CPU), see model_opts */
} engine_config;

enum engine_state { ENGINE_LOADING = 0, ENGINE_READY, ENGINE_NO_MODEL, ENGINE_FAILED, ENGINE_STOPPING };

enum engine_ev { ENGINE_EV_QUEUED = 0, ENGINE_EV_PREFILL, ENGINE_EV_TEXT, ENGINE_EV_DONE, ENGINE_EV_ERROR };

typedef struct engine_stats {
    int prompt_tokens;  /* tokens of the prompt */
    int cached_tokens;  /* of those, reused from the cache (not prefilled) */
    int gen_tokens;     /* tokens generated (including a final stop token) */
    int reasoning_tokens;
    double queue_ms;    /* submit -> start */
    double ttft_ms;     /* submit -> first token */
    double prefill_ms;
    double decode_ms;
    double prefill_tok_s;
    double decode_tok_s;
    const char *finish_reason; /* "stop" | "length" | "cancelled" | "error" */
    int ctx_used;       /* positions in the cache after this turn */
    int ctx_size;
} engine_stats;

typedef struct engine_event {
    int type;               /* ENGINE_EV_* */
    uint64_t req_id;
    int queue_pos;          /* QUEUED: 1 = next */
    int prefill_done;       /* PREFILL */
    int prefill_total;
    const char *text;       /* TEXT: answer bytes (valid UTF-8) */
    size_t text_len;
    const char *reasoning;  /* TEXT: reasoning bytes (valid UTF-8) */
    size_t reasoning_len;
    int32_t token;          /* TEXT: the id just generated (-1 for a final flush) */
    int has_logprob;        /* TEXT: the request asked for logprobs (below are set) */
    float logprob;          /* TEXT: log-probability of token (sample_next_lp) */
    const sample_logprob *top; /* TEXT: the n_top most likely ids, best first */
    int n_top;
    const engine_stats *stats; /* DONE, ERROR */
    int code;               /* ERROR: CORE_E* */
    const char *error;      /* ERROR: message */
} engine_event;

/* Return nonzero to cancel the request. Runs on the engine thread (or in
 * engine_submit's caller for QUEUED and early errors). */
typedef int (*engine_event_fn)(void *ctx, const engine_event *ev);

typedef struct engine_request {
    const char *conv_id;       /* NULL: anonymous */
    const int32_t *prompt;     /* copied at submit */
    size_t n_prompt;
    size_t n_shared;           /* prompt[0..n_shared): the system block, shared by new
                                  conversations (prompt_build's n_shared); 0: none */
    sample_params sampling;
    int max_tokens;            /* 0: until the context is full */
    const char *const *stops;  /* stop strings (copied), at most SAMPLE_STOP_MAX */
    size_t n_stops;
    int thinking;              /* 1: output may hold <think>..</think>; 0: answer only */
    int ignore_eos;
    /* Constrained output (NULL: free text). The engine takes its own
     * reference at submit; the caller keeps and frees its own. lazy: free
     * text until the model writes "<tool_call>" (tool-call grammars). */
    sample_grammar *grammar;
    int grammar_lazy;
    int logprobs;              /* 1: TEXT events carry logprob and top */
    int top_logprobs;          /* 0..SAMPLE_TOP_MAX */
    engine_event_fn cb;
    void *ctx;
} engine_request;

typedef struct engine_metrics {
    int state;
    int queued;
    int active;
    int conversations;     /* caches held */
    uint64_t kv_bytes;     /* bytes of caches held */
    uint64_t kv_budget;
    uint64_t requests;     /* finished */
    uint64_t prompt_tokens;
    uint64_t cached_tokens;
    uint64_t gen_tokens;
    uint64_t cancelled;
    uint64_t errors;
    double last_decode_tok_s;
    double last_ttft_ms;
    double uptime_s;
} engine_metrics;

/* Start the engine thread; the model loads in the background (state
 * LOADING, then READY, NO_MODEL or FAILED). */
int engine_new(engine **out, const engine_config *cfg, core_err *err);
/* Cancel everything, stop the thread, free all. */
void engine_free(engine *e);
int engine_state(const engine *e);
/* Why the engine is NO_MODEL or FAILED ("" otherwise). */
const char *engine_state_message(const engine *e);
/* Wait until the state is not LOADING (or timeout_s passes). Returns the state. */
int engine_wait_ready(engine *e, double timeout_s);
/* Tokenizer and config once READY (NULL before). Immutable: any thread. */
const tok *engine_tok(const engine *e);
const model_config *engine_model_config(const engine *e);
const char *engine_model_path(const engine *e);
int engine_ctx_size(const engine *e);
int engine_threads(const engine *e);

/* Queue a request. Returns 0 and sets *req_id, or CORE_EFULL (queue full:
 * try later), CORE_ERANGE (prompt + max_tokens cannot fit the context:
 * context_length_exceeded), CORE_EINVAL, CORE_EUNSUP (not READY). */
int engine_submit(engine *e, const engine_request *r, uint64_t *req_id, core_err *err);
/* Cancel a queued or running request (any thread). 0 or CORE_ENOTFOUND. */
int engine_cancel(engine *e, uint64_t req_id);
/* Drop a conversation's cache (/reset, delete). Safe while it runs: the
 * cache goes when its request ends. */
void engine_forget(engine *e, const char *conv_id);
void engine_get_metrics(engine *e, engine_metrics *m);

#endif
