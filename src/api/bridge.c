/* bridge.c -- the stream bridge: jobs, their log, listeners, one thread.
 * See bridge.h for the contract.
 *
 * A job's life: bridge_start (held, in the list) -> engine events append to
 * the log (engine thread, a short hold of the mutex) -> the thread
 * delivers, saves, watches listeners -> DONE/ERROR: ended -> the owner's
 * final save (saved) -> the end to every listener -> kept keep_s -> freed
 * by the thread once nobody holds it and the engine is done with it.
 *
 * The log is append-only: answer and reasoning bytes in two buffers and one
 * mark (their lengths) per entry, so a listener's position is an index and
 * any suffix of the log is two byte ranges. Entries are TEXT events with
 * bytes in them (the engine's empty ones, for held-back bytes, are not
 * logged); growth is amortized doubling, no allocation per token.
 *
 * Lock order: bridge mutex -> engine mutex (engine_cancel) and -> the
 * listeners' own (the OpenAI route's stream counter). The engine calls on_engine
 * without its own mutex held, so that order is never reversed.
 */
#include "api/bridge.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


#define WATCH_MS 100   /* listeners' clients checked this often; the pace of an idle thread */
#define TICK_MS 33     /* owners that feed themselves are called this often */
#define FREE_WAIT_S 10 /* bridge_free waits this long for running jobs to end */
#define SHUTDOWN_WAIT_S 2 /* bridge_shutdown waits this long for the ends to go out */

typedef struct mark {
    size_t a, r; /* answer and reasoning lengths after the entry */
    size_t l;    /* tokens with logprobs after the entry */
} mark;

typedef struct listener {
    bridge_listener_ops ops;
    void *ctx;
    uint64_t pos;  /* entries delivered */
    int tick_ms;
    double t_last; /* last delivery */
} listener;

struct bridge_job {
    bridge *b;
    struct bridge_job *next;
    int64_t key;
    char tag[48];
    bridge_owner own;
    double grace_s, keep_s, save_s;
    int engine_job;   /* submitted: freed only after the engine's DONE/ERROR */
    int engine_done;
    engine *eng;      /* the engine it runs on */
    int eng_hold;     /* the caller's hold on eng, given back at the end (bridge_set_release) */
    double keep_alive_s;
    uint64_t req_id;
    int has_req, cancel_asked;
    int holds;
    int starting;     /* in the list, not yet submitted: the thread leaves it alone */
    /* the log */
    core_buf answer, reasoning;
    mark *marks;
    size_t n_marks, cap_marks;
    bridge_lp *lp;  /* tokens with logprobs, when the request asked */
    size_t n_lp, cap_lp;
    int reasoning_events;
    /* the end */
    int ended, saved;
    engine_stats st;
    char finish[16];
    int err_code;
    char err_msg[256];
    char save_err[512]; /* the final save's failure, for the listeners */
    double t_start, t_end, t_alone, t_saved;
    size_t saved_len;
    listener *ls;
    int n_ls, cap_ls;
};

struct bridge {
    engine *eng;
    bridge_release_fn release;
    void *release_ctx;
    bridge_done_fn done;
    void *done_ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* wakes the thread */
    pthread_cond_t done_cv; /* a job was saved (bridge_wait, bridge_free) */
    pthread_t thr;
    int thr_on, quit;
    atomic_int stopping;
    bridge_job *jobs;
};

/* ---- the rule ------------------------------------------------------------ */

int bridge_max_tokens(int n_ctx, size_t n_prompt, int asked, int cfg_cap, int strict, int *out, core_err *err) {
    long long room = (long long)n_ctx - (long long)n_prompt;
    if (room < 1)
        return core_errf(err, CORE_ERANGE, "this model's context holds %d tokens; the messages take %zu", n_ctx,
                         n_prompt);
    if (asked > 0) {
        if (cfg_cap > 0 && asked > cfg_cap) asked = cfg_cap;
        if (asked > room) {
            if (strict)
                return core_errf(err, CORE_ERANGE,
                                 "this model's context holds %d tokens; the messages take %zu and max_tokens asks "
                                 "for %d more",
                                 n_ctx, n_prompt, asked);
            asked = (int)room;
        }
        *out = asked;
        return 0;
    }
    long long cap = cfg_cap > 0 ? cfg_cap : BRIDGE_DEFAULT_MAX_TOKENS;
    *out = (int)(cap < room ? cap : room);
    return 0;
}

/* ---- the log (caller holds the mutex) ------------------------------------ */

static int log_append(bridge_job *j, const char *a, size_t na, const char *r, size_t nr) {
    if (!na && !nr) return 0;
    if (j->n_marks == j->cap_marks) {
        size_t cap = j->cap_marks ? 2 * j->cap_marks : 256;
        mark *m = realloc(j->marks, cap * sizeof *m);
        if (!m) return CORE_ENOMEM;
        j->marks = m;
        j->cap_marks = cap;
    }
    if ((na && core_buf_append(&j->answer, a, na)) || (nr && core_buf_append(&j->reasoning, r, nr)))
        return CORE_ENOMEM;
    if (nr) j->reasoning_events++;
    j->marks[j->n_marks++] = (mark){j->answer.len, j->reasoning.len, j->n_lp};
    return 0;
}

/* A token's logprobs, kept until a text entry (or the end) covers it. */
static int lp_append(bridge_job *j, const engine_event *ev) {
    if (j->n_lp == j->cap_lp) {
        size_t cap = j->cap_lp ? 2 * j->cap_lp : 64;
        bridge_lp *v = realloc(j->lp, cap * sizeof *v);
        if (!v) return CORE_ENOMEM;
        j->lp = v;
        j->cap_lp = cap;
    }
    bridge_lp *x = &j->lp[j->n_lp++];
    x->id = ev->token;
    x->logprob = ev->logprob;
    x->n_top = ev->n_top < 0 ? 0 : ev->n_top > SAMPLE_TOP_MAX ? SAMPLE_TOP_MAX : ev->n_top;
    memcpy(x->top, ev->top, (size_t)x->n_top * sizeof x->top[0]);
    return 0;
}

static void end_job(bridge_job *j, const char *finish) {
    if (j->ended) return;
    j->ended = 1;
    j->t_end = core_now_s();
    snprintf(j->finish, sizeof j->finish, "%s", finish);
}

/* ---- engine callback (engine thread) ------------------------------------- */

static int on_engine(void *ctx, const engine_event *ev) {
    bridge_job *j = ctx; /* lives until engine_done is seen by the thread */
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    switch (ev->type) {
    case ENGINE_EV_TEXT:
        if (ev->has_logprob && ev->token >= 0 && lp_append(j, ev)) j->cancel_asked = 1;
        if (log_append(j, ev->text, ev->text_len, ev->reasoning, ev->reasoning_len)) j->cancel_asked = 1;
        else if (ev->text_len || ev->reasoning_len) pthread_cond_signal(&b->cv);
        break;
    case ENGINE_EV_DONE:
    case ENGINE_EV_ERROR:
        if (ev->stats) j->st = *ev->stats;
        j->st.finish_reason = NULL; /* points into the engine; j->finish is ours */
        if (ev->type == ENGINE_EV_ERROR) {
            j->err_code = ev->code ? ev->code : CORE_EIO;
            snprintf(j->err_msg, sizeof j->err_msg, "%s", ev->error ? ev->error : "generation failed");
        }
        end_job(j, ev->type == ENGINE_EV_ERROR ? "error"
                   : ev->stats && ev->stats->finish_reason ? ev->stats->finish_reason : "stop");
        j->engine_done = 1;
        pthread_cond_signal(&b->cv);
        break;
    default:
        break;
    }
    int cancel = j->cancel_asked;
    pthread_mutex_unlock(&b->mu);
    return cancel;
}

/* ---- listeners (caller holds the mutex) ----------------------------------- */

static void drop_listener(bridge_job *j, int i) {
    listener l = j->ls[i];
    j->ls[i] = j->ls[--j->n_ls];
    if (l.ops.drop) l.ops.drop(l.ctx);
    pthread_cond_broadcast(&j->b->done_cv); /* bridge_shutdown waits for the last ends */
}

/* Hand listener i what it has not seen. Returns 1 when it was dropped. */
static int deliver(bridge *b, bridge_job *j, int i, double now) {
    listener *l = &j->ls[i];
    int end = j->saved;
    if (l->pos > j->n_marks) l->pos = j->n_marks;
    if (l->pos == j->n_marks && !end) return 0;
    const mark *from = l->pos ? &j->marks[l->pos - 1] : NULL, *to = j->n_marks ? &j->marks[j->n_marks - 1] : NULL;
    bridge_out o = {0};
    o.answer = j->answer.data ? j->answer.data : "";
    o.answer_from = from ? from->a : 0;
    o.answer_end = to ? to->a : 0;
    o.reasoning = j->reasoning.data ? j->reasoning.data : "";
    o.reasoning_from = from ? from->r : 0;
    o.reasoning_end = to ? to->r : 0;
    o.reasoning_events = j->reasoning_events;
    o.lp = j->lp;
    o.lp_from = from ? from->l : 0;
    o.lp_end = end ? j->n_lp : to ? to->l : 0;
    if (o.lp_from > o.lp_end) o.lp_from = o.lp_end; /* an end delivery after the last one */
    o.seq = j->n_marks;
    o.elapsed_s = (j->ended ? j->t_end : now) - j->t_start;
    o.end = end;
    o.st = &j->st;
    o.finish = j->finish;
    o.err_code = j->err_code;
    o.err_msg = j->err_msg;
    o.save_err = j->save_err;
    o.stopping = atomic_load(&b->stopping);
    int gone = l->ops.deliver(l->ctx, &o);
    l->pos = j->n_marks;
    l->t_last = now;
    if (gone || end) {
        drop_listener(j, i);
        return 1;
    }
    return 0;
}

/* ---- the thread ----------------------------------------------------------- */

static void job_free(bridge_job *j) {
    if (j->eng_hold && j->b->release) j->b->release(j->b->release_ctx, j->eng, j->keep_alive_s);
    while (j->n_ls) drop_listener(j, j->n_ls - 1);
    free(j->ls);
    if (j->own.free) j->own.free(j->own.ctx);
    core_buf_free(&j->answer);
    core_buf_free(&j->reasoning);
    free(j->marks);
    free(j->lp);
    free(j);
}

static void cancel_locked(bridge *b, bridge_job *j) {
    if (j->ended || j->cancel_asked) return;
    j->cancel_asked = 1;
    if (j->has_req) engine_cancel(j->eng, j->req_id); /* its DONE comes from the engine thread */
    else if (!j->engine_job) end_job(j, "cancelled");
    pthread_cond_signal(&b->cv);
}

/* One pass over job j. Called with the mutex held; may drop and retake it
 * around owner hooks (only this thread frees jobs, so j stays valid).
 * Returns 1 when j may be freed; lowers *next to when it wants a look. */
static int job_pass(bridge *b, bridge_job *j, double now, double *next) {
    if (j->starting) return 0;
    if (!j->ended && j->own.tick) {
        pthread_mutex_unlock(&b->mu);
        j->own.tick(j->own.ctx, j, now);
        pthread_mutex_lock(&b->mu);
        if (!j->ended && now + TICK_MS / 1e3 < *next) *next = now + TICK_MS / 1e3;
    }
    /* saves: partial every save_s while it grows, the final one before the end goes out */
    if (!j->ended && j->own.save && j->save_s > 0 && j->answer.len + j->reasoning.len != j->saved_len) {
        if (now - j->t_saved >= j->save_s) {
            core_buf a = {0}, r = {0}; /* a snapshot: the engine thread appends meanwhile */
            int bad = core_buf_append(&a, j->answer.data ? j->answer.data : "", j->answer.len) ||
                      core_buf_append(&r, j->reasoning.data ? j->reasoning.data : "", j->reasoning.len);
            j->t_saved = now;
            j->saved_len = j->answer.len + j->reasoning.len;
            if (!bad) {
                engine_stats none = {0};
                pthread_mutex_unlock(&b->mu);
                core_err serr = {0}; /* a partial save may fail: the final one says so */
                j->own.save(j->own.ctx, a.data, a.len, r.data, r.len, &none, "", 0, &serr);
                pthread_mutex_lock(&b->mu);
            }
            core_buf_free(&a);
            core_buf_free(&r);
        } else if (j->t_saved + j->save_s < *next) {
            *next = j->t_saved + j->save_s;
        }
    }
    /* the engine is done with it: the hold goes back before anyone hears of
     * the end (bridge_wait, the last delivery), so a client that has its
     * answer finds the model idle (its keep-alive running, unloadable) */
    if (j->eng_hold && j->engine_done && b->release) {
        j->eng_hold = 0;
        pthread_mutex_unlock(&b->mu);
        b->release(b->release_ctx, j->eng, j->keep_alive_s);
        pthread_mutex_lock(&b->mu);
    }
    if (j->ended && !j->saved) {
        /* the engine is done with the log (and a fed job's pushes stop at its end) */
        pthread_mutex_unlock(&b->mu);
        core_err serr = {0};
        if (j->own.save &&
            j->own.save(j->own.ctx, j->answer.data ? j->answer.data : "", j->answer.len,
                        j->reasoning.data ? j->reasoning.data : "", j->reasoning.len, &j->st, j->finish, 1, &serr))
            snprintf(j->save_err, sizeof j->save_err, "%s", serr.msg[0] ? serr.msg : "the store refused it");
        if (j->engine_job && j->st.gen_tokens > 0 && b->done) b->done(b->done_ctx, &j->st);
        pthread_mutex_lock(&b->mu);
        j->saved = 1;
        pthread_cond_broadcast(&b->done_cv);
    }
    /* listeners: gone ones leave, the others get what is new */
    for (int i = 0; i < j->n_ls;) {
        listener *l = &j->ls[i];
        if (l->ops.gone && l->ops.gone(l->ctx)) {
            drop_listener(j, i);
            continue;
        }
        if (!j->saved && l->tick_ms > 0 && now - l->t_last < l->tick_ms / 1e3) {
            double t = l->t_last + l->tick_ms / 1e3;
            if (l->pos < j->n_marks && t < *next) *next = t;
            i++;
            continue;
        }
        if (!deliver(b, j, i, now)) i++;
    }
    /* nobody reads and nobody holds: cancel after the grace period */
    if (!j->ended) {
        if (j->n_ls || j->holds) {
            j->t_alone = 0;
        } else {
            if (j->t_alone == 0) j->t_alone = now;
            if (now - j->t_alone >= j->grace_s) cancel_locked(b, j);
            else if (j->t_alone + j->grace_s < *next) *next = j->t_alone + j->grace_s;
        }
        return 0;
    }
    if (!j->saved || j->n_ls || j->holds || (j->engine_job && !j->engine_done)) return 0;
    if (now - j->t_end >= j->keep_s) return 1;
    if (j->t_end + j->keep_s < *next) *next = j->t_end + j->keep_s;
    return 0;
}

static void *bridge_main(void *arg) {
    bridge *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->quit) {
        double now = core_now_s(), next = now + WATCH_MS / 1e3;
        for (bridge_job **pp = &b->jobs; *pp;) {
            bridge_job *j = *pp;
            if (job_pass(b, j, now, &next)) {
                /* re-find the link: jobs may have been added at the head meanwhile */
                pp = &b->jobs;
                while (*pp != j) pp = &(*pp)->next;
                *pp = j->next;
                pthread_mutex_unlock(&b->mu);
                if (j->own.free) j->own.free(j->own.ctx);
                j->own.free = NULL;
                pthread_mutex_lock(&b->mu);
                job_free(j);
                continue;
            }
            pp = &j->next;
        }
        if (b->quit) break;
        double wait = next - core_now_s();
        if (wait <= 0) continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = (long long)ts.tv_nsec + (long long)(wait * 1e9);
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&b->cv, &b->mu, &ts);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ---- public ---------------------------------------------------------------- */

void bridge_set_release(bridge *b, bridge_release_fn fn, void *ctx) {
    b->release = fn;
    b->release_ctx = ctx;
}

int bridge_new(bridge **out, engine *eng, bridge_done_fn done, void *done_ctx, core_err *err) {
    *out = NULL;
    bridge *b = calloc(1, sizeof *b);
    if (!b) return core_errf(err, CORE_ENOMEM, "out of memory");
    b->eng = eng;
    b->done = done;
    b->done_ctx = done_ctx;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    pthread_cond_init(&b->done_cv, NULL);
    if (pthread_create(&b->thr, NULL, bridge_main, b)) {
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->cv);
        pthread_cond_destroy(&b->done_cv);
        free(b);
        return core_errf(err, CORE_EIO, "cannot start the stream thread");
    }
    b->thr_on = 1;
    *out = b;
    return 0;
}

/* Wait on done_cv until pending() is 0 or `secs` pass. Mutex held. */
static void wait_until_done(bridge *b, int (*pending)(bridge *), double secs) {
    double t0 = core_now_s();
    while (pending(b) && core_now_s() - t0 < secs) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&b->done_cv, &b->mu, &ts);
    }
}

/* Jobs whose end has not reached every listener yet. */
static int ends_pending(bridge *b) {
    for (bridge_job *j = b->jobs; j; j = j->next)
        if (!j->saved || j->n_ls) return 1;
    return 0;
}

/* Jobs the engine (or their own tick) has yet to end and save. */
static int saves_pending(bridge *b) {
    for (bridge_job *j = b->jobs; j; j = j->next)
        if (!j->saved && (j->engine_job || j->own.tick)) return 1;
    return 0;
}

void bridge_shutdown(bridge *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    atomic_store(&b->stopping, 1);
    for (bridge_job *j = b->jobs; j; j = j->next) cancel_locked(b, j);
    /* the streams' last events (an error, [DONE]) are written before the
     * server stops its streams: give the engine and this thread a moment */
    wait_until_done(b, ends_pending, SHUTDOWN_WAIT_S);
    pthread_mutex_unlock(&b->mu);
}

int bridge_stopping(bridge *b) { return atomic_load(&b->stopping); }

void bridge_free(bridge *b) {
    if (!b) return;
    bridge_shutdown(b);
    pthread_mutex_lock(&b->mu);
    wait_until_done(b, saves_pending, FREE_WAIT_S); /* the final saves store partial text */
    b->quit = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (b->thr_on) pthread_join(b->thr, NULL);
    while (b->jobs) {
        bridge_job *j = b->jobs;
        b->jobs = j->next;
        if (j->engine_job && !j->engine_done)
            core_log(1, "bridge: a job never ended; leaking it rather than freeing memory the engine may use");
        else job_free(j);
    }
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    pthread_cond_destroy(&b->done_cv);
    free(b);
}

int bridge_start(bridge *b, const engine_request *r, const bridge_job_opts *o, bridge_job **out, core_err *err) {
    *out = NULL;
    if (atomic_load(&b->stopping)) return core_errf(err, CORE_EUNSUP, "the server is shutting down");
    bridge_job *j = calloc(1, sizeof *j);
    if (!j) return core_errf(err, CORE_ENOMEM, "out of memory");
    j->b = b;
    j->key = o->key;
    snprintf(j->tag, sizeof j->tag, "%s", o->tag ? o->tag : "");
    j->own = o->owner;
    j->grace_s = o->grace_s;
    j->keep_s = o->keep_s;
    j->save_s = o->save_s;
    j->holds = 1;
    j->engine_job = r != NULL;
    j->eng = o->eng ? o->eng : b->eng;
    j->keep_alive_s = o->keep_alive_s;
    j->starting = 1;
    j->t_start = j->t_saved = core_now_s();
    if (log_append(j, o->prefix, o->prefix ? o->prefix_len : 0, o->prefix_reasoning,
                   o->prefix_reasoning ? o->prefix_reasoning_len : 0)) {
        j->own.free = NULL;
        job_free(j);
        return core_errf(err, CORE_ENOMEM, "out of memory");
    }
    pthread_mutex_lock(&b->mu);
    j->next = b->jobs;
    b->jobs = j;
    pthread_mutex_unlock(&b->mu);
    if (r) {
        engine_request q = *r;
        q.cb = on_engine;
        q.ctx = j;
        uint64_t id = 0;
        int rc = engine_submit(j->eng, &q, &id, err); /* without our mutex: the engine may call back */
        pthread_mutex_lock(&b->mu);
        if (rc) { /* never reached the engine: nothing else knows j */
            for (bridge_job **pp = &b->jobs; *pp; pp = &(*pp)->next)
                if (*pp == j) {
                    *pp = j->next;
                    break;
                }
            pthread_mutex_unlock(&b->mu);
            j->own.free = NULL;
            job_free(j);
            return rc;
        }
        j->req_id = id;
        j->has_req = 1;
        j->eng_hold = o->hold_engine; /* ours from now on */
        j->starting = 0;
        if (j->cancel_asked || atomic_load(&b->stopping)) {
            j->cancel_asked = 0;
            cancel_locked(b, j); /* raced with bridge_cancel or bridge_shutdown */
        }
        pthread_mutex_unlock(&b->mu);
    }
    pthread_mutex_lock(&b->mu);
    j->starting = 0;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    *out = j;
    return 0;
}

int bridge_listen(bridge_job *j, const bridge_listener_ops *ops, void *ctx, uint64_t from, int tick_ms) {
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    if (j->n_ls == j->cap_ls) {
        int cap = j->cap_ls ? 2 * j->cap_ls : 4;
        listener *l = realloc(j->ls, (size_t)cap * sizeof *l);
        if (!l) {
            if (ops->drop) ops->drop(ctx);
            pthread_mutex_unlock(&b->mu);
            return CORE_ENOMEM;
        }
        j->ls = l;
        j->cap_ls = cap;
    }
    j->ls[j->n_ls++] = (listener){*ops, ctx, from, tick_ms, 0};
    j->t_alone = 0;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

void bridge_release(bridge_job *j) {
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    j->holds--;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void bridge_wait(bridge_job *j) {
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    while (!j->saved) pthread_cond_wait(&b->done_cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

void bridge_result_lp(bridge_job *j, const bridge_lp **lp, size_t *n) {
    *lp = j->lp;
    *n = j->n_lp;
}

void bridge_result(bridge_job *j, const char **answer, size_t *answer_len, const char **reasoning,
                   size_t *reasoning_len, const engine_stats **st, const char **finish, int *err_code,
                   const char **err_msg) {
    /* final after bridge_wait: nothing writes them any more */
    if (answer) *answer = j->answer.data ? j->answer.data : "";
    if (answer_len) *answer_len = j->answer.len;
    if (reasoning) *reasoning = j->reasoning.data ? j->reasoning.data : "";
    if (reasoning_len) *reasoning_len = j->reasoning.len;
    if (st) *st = &j->st;
    if (finish) *finish = j->finish;
    if (err_code) *err_code = j->err_code;
    if (err_msg) *err_msg = j->err_msg;
}

void bridge_cancel(bridge_job *j) {
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    cancel_locked(b, j);
    pthread_mutex_unlock(&b->mu);
}

void bridge_push(bridge_job *j, const char *answer, size_t len) {
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    if (!j->ended && !log_append(j, answer, len, NULL, 0)) pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

void bridge_finish(bridge_job *j, const char *finish) {
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    end_job(j, finish);
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

int bridge_cancelled(bridge_job *j) {
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    int c = j->cancel_asked;
    pthread_mutex_unlock(&b->mu);
    return c;
}

bridge_job *bridge_find(bridge *b, int64_t key, const char *tag) {
    pthread_mutex_lock(&b->mu);
    bridge_job *j = b->jobs;
    while (j && (j->starting || j->key != key || (tag && strcmp(j->tag, tag)))) j = j->next;
    if (j) j->holds++;
    pthread_mutex_unlock(&b->mu);
    return j;
}

void bridge_cancel_tag(bridge *b, const char *tag) {
    pthread_mutex_lock(&b->mu);
    for (bridge_job *j = b->jobs; j; j = j->next)
        if (!tag || !strcmp(j->tag, tag)) cancel_locked(b, j);
    pthread_mutex_unlock(&b->mu);
}

int bridge_running(bridge *b, const char *tag, int *with_key) {
    int n = 0, k = 0;
    pthread_mutex_lock(&b->mu);
    for (bridge_job *j = b->jobs; j; j = j->next)
        if (!j->saved && (!tag || !strcmp(j->tag, tag))) {
            n++;
            k += j->key > 0;
        }
    pthread_mutex_unlock(&b->mu);
    if (with_key) *with_key = k;
    return n;
}

int bridge_live(bridge_job *j) {
    bridge *b = j->b;
    pthread_mutex_lock(&b->mu);
    int live = !j->saved;
    pthread_mutex_unlock(&b->mu);
    return live;
}
