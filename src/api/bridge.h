/* bridge.h -- the one stream bridge between the engine and every client
 * (private to src/api).
 *
 * A job is one generation. The bridge submits it to the engine and keeps
 * what comes back as a log: the answer and the reasoning appended to two
 * buffers, and per engine TEXT event the end offsets in both (its sequence
 * number is the log position, an id a client resumes from). Listeners are
 * clients reading a job: each has a position in the log and is handed the
 * part after it, then follows live. A late or reloaded client replays from
 * anywhere (its position is an SSE Last-Event-ID or 0). The framing (the
 * OpenAI chunks, the page's HTML fragments, NDJSON) is the listener's; the
 * bridge knows bytes and statistics only.
 *
 * One thread per bridge delivers to every listener (at most every tick_ms
 * the listener asked for, so the page gets ~30 swaps a second however
 * fast the tokens come, while the API's chunks go out as soon as they
 * come), asks listeners whether their client is gone (every WATCH_MS, so a
 * queued request of a client that left is cancelled too), cancels a job
 * when its last listener has been gone for the job's grace period, saves
 * partial results through the owner's hook every save_s, and the final
 * one before the end reaches any listener (a page that reloads right after
 * "done" sees the finished message). A finished job stays keep_s seconds
 * for late readers.
 *
 * Holds: bridge_start returns the job with one hold, the caller's; a held
 * job is never cancelled for want of listeners and never freed. Give it
 * back with bridge_release once listeners are attached (or after
 * bridge_wait). Jobs are freed by the bridge thread only, after the engine
 * reported DONE/ERROR, so the engine callback never sees freed memory.
 *
 * Locking: one mutex per bridge; listener callbacks run under it and must
 * not block (http_stream_event does not); owner hooks run without it.
 */
#ifndef API_BRIDGE_H
#define API_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "engine/engine.h"

typedef struct bridge bridge;
typedef struct bridge_job bridge_job;

/* One generated token with its log-probability and the most likely ids
 * (engine_event's, for requests with engine_request.logprobs). */
typedef struct bridge_lp {
    int32_t id;
    float logprob;
    int n_top;
    sample_logprob top[SAMPLE_TOP_MAX];
} bridge_lp;

/* What a listener is handed: the log from its position on. */
typedef struct bridge_out {
    const char *answer;        /* the whole answer so far ... */
    size_t answer_from, answer_end; /* ... this delivery is answer[answer_from..answer_end) */
    const char *reasoning;
    size_t reasoning_from, reasoning_end;
    int reasoning_events;      /* TEXT events that carried reasoning so far (~ its tokens) */
    const bridge_lp *lp;       /* tokens with logprobs (requests that asked): this delivery's */
    size_t lp_from, lp_end;    /* are lp[lp_from..lp_end) */
    uint64_t seq;              /* log position after this delivery */
    double elapsed_s;          /* since the job started */
    int end;                   /* the last delivery; the fields below are final */
    const engine_stats *st;    /* end: the engine's figures (zeros for a job without engine) */
    const char *finish;        /* end: "stop" | "length" | "cancelled" | "error" */
    int err_code;              /* end, "error": CORE_E* */
    const char *err_msg;
    const char *save_err;      /* end: "" or why the owner's final save failed */
    int stopping;              /* the server is shutting down (bridge_shutdown) */
} bridge_out;

typedef struct bridge_listener_ops {
    /* New log entries (or the end). Nonzero: the client is gone, drop the
     * listener. Bridge thread, bridge lock held: must not block. */
    int (*deliver)(void *ctx, const bridge_out *o);
    /* 1 when the client went away (polled). NULL: never. Lock held. */
    int (*gone)(void *ctx);
    /* The listener leaves (after its end, when gone, or at bridge_free):
     * release ctx. Lock held. */
    void (*drop)(void *ctx);
} bridge_listener_ops;

/* The job's owner: hooks on the bridge thread without the lock. Any may be NULL. */
typedef struct bridge_owner {
    /* Every tick while the job runs: a job without engine feeds itself here
     * (bridge_push, bridge_finish). */
    void (*tick)(void *ctx, bridge_job *j, double now);
    /* The text so far (final 0, every save_s while it grows) and the result
     * (final 1, before the end is delivered). st: zeros until final.
     * Returns 0, or nonzero with err: a failed final save reaches the
     * listeners as bridge_out.save_err. */
    int (*save)(void *ctx, const char *answer, size_t answer_len, const char *reasoning, size_t reasoning_len,
                const engine_stats *st, const char *finish, int final, core_err *err);
    void (*free)(void *ctx); /* the job is freed */
    void *ctx;
} bridge_owner;

typedef struct bridge_job_opts {
    int64_t key;          /* the owner's id for bridge_find (e.g. a stored message); 0: none */
    const char *tag;      /* and a label (e.g. a conversation id), at most 47 bytes; NULL: "" */
    double grace_s;       /* no listener and no hold this long: cancel (0: at once) */
    double keep_s;        /* a finished job stays this long for late listeners */
    double save_s;        /* partial saves every save_s (0: none) */
    const char *prefix;   /* answer text already there (continuing), logged as entry 1 */
    size_t prefix_len;
    const char *prefix_reasoning;
    size_t prefix_reasoning_len;
    bridge_owner owner;
    engine *eng;          /* the engine to run on (NULL: the bridge's) */
    int hold_engine;      /* 1: the caller's hold on eng passes to the job once submitted, and
                             goes back through the release hook when the engine is done with it */
    double keep_alive_s;  /* handed to the release hook */
} bridge_job_opts;

/* Called once per finished engine job that generated tokens (the routes'
 * metrics), on the bridge thread without its lock. */
typedef void (*bridge_done_fn)(void *ctx, const engine_stats *st);

/* A bridge on eng (borrowed, any order of freeing; the default of jobs
 * that name none); done may be NULL. */
int bridge_new(bridge **out, engine *eng, bridge_done_fn done, void *done_ctx, core_err *err);
/* Where holds of jobs with hold_engine go back (the model registry); set
 * before the first job. Called on the bridge thread, without its lock. */
typedef void (*bridge_release_fn)(void *ctx, engine *e, double keep_alive_s);
void bridge_set_release(bridge *b, bridge_release_fn fn, void *ctx);
/* Cancel every job, wait (up to 10 s) for the engine to end them and for
 * their final saves, stop the thread, free all. NULL ok. */
void bridge_free(bridge *b);
/* From now on bridge_start refuses (CORE_EUNSUP) and every job is cancelled
 * (listeners are told: bridge_out.stopping). Returns once every job has
 * ended and its end reached its listeners, or after 2 s, so a server that
 * stops next still sends them. Any thread but the bridge's; idempotent. */
void bridge_shutdown(bridge *b);
int bridge_stopping(bridge *b);

/* The one max_tokens rule, for every route: the context must leave at
 * least one position after the prompt (else CORE_ERANGE); asked > 0 is
 * capped by the server's max_tokens (cfg_cap, 0: none), then must fit the
 * room (strict: else CORE_ERANGE, "context_length_exceeded"; not strict: it
 * is cut to the room); asked == 0 means cfg_cap (0: BRIDGE_DEFAULT_MAX_TOKENS)
 * cut to the room. */
#define BRIDGE_DEFAULT_MAX_TOKENS 4096
int bridge_max_tokens(int n_ctx, size_t n_prompt, int asked, int cfg_cap, int strict, int *out, core_err *err);

/* Submit r (its cb/ctx are the bridge's) as a new job, held by the caller.
 * r NULL: a job without engine (fed by owner.tick). On error nothing is
 * kept (owner.free is not called) and the engine's code is returned
 * (CORE_EFULL, CORE_ERANGE, CORE_EUNSUP, CORE_EINVAL...). */
int bridge_start(bridge *b, const engine_request *r, const bridge_job_opts *o, bridge_job **out, core_err *err);
/* Attach a listener from log position `from` (0: all; past the end: the
 * end only). tick_ms: at most one delivery per tick (0: as events come).
 * The first delivery happens on the bridge thread. Returns 0, or
 * CORE_ENOMEM (ops.drop is called). */
int bridge_listen(bridge_job *j, const bridge_listener_ops *ops, void *ctx, uint64_t from, int tick_ms);
/* Give back bridge_start's (or bridge_find's) hold. */
void bridge_release(bridge_job *j);
/* Block until the job ended and its result was saved; then the result
 * fields can be read (bridge_result) until bridge_release. */
void bridge_wait(bridge_job *j);
/* After bridge_wait: the tokens with logprobs (n 0 unless asked). */
void bridge_result_lp(bridge_job *j, const bridge_lp **lp, size_t *n);
/* After bridge_wait: the answer, reasoning, figures, finish and error. */
void bridge_result(bridge_job *j, const char **answer, size_t *answer_len, const char **reasoning,
                   size_t *reasoning_len, const engine_stats **st, const char **finish, int *err_code,
                   const char **err_msg);
/* Stop a job (Stop button, a conversation deleted). */
void bridge_cancel(bridge_job *j);
/* For jobs without engine: append text; end with a finish reason. */
void bridge_push(bridge_job *j, const char *answer, size_t len);
void bridge_finish(bridge_job *j, const char *finish);
int bridge_cancelled(bridge_job *j);

/* The job with this key (and this tag unless NULL), held (bridge_release
 * it), or NULL. */
bridge_job *bridge_find(bridge *b, int64_t key, const char *tag);
/* Cancel every running job with this tag (NULL: all). */
void bridge_cancel_tag(bridge *b, const char *tag);
/* Running jobs (not yet ended), and those of them with tag (NULL: any key > 0). */
int bridge_running(bridge *b, const char *tag, int *with_key);
/* 1 while the job has not ended. */
int bridge_live(bridge_job *j);

#endif
