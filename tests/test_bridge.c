/* test_bridge.c -- the stream bridge of src/api (its private interface,
 * bridge.h): the max_tokens rule, replay to late listeners and from a log
 * position, the final save before the end, cancel when the last listener
 * leaves (not while held), and the same with the engine on the tiny model
 * (a job's engine hold goes back before its end is heard).
 */
#include <pthread.h>

#include "t.h"
#include "api/bridge.h"
#include "engine/engine.h"
#include "kern/kern.h"
#include "prompt/prompt.h"

/* ---- a listener that records what it is handed ---------------------------- */

typedef struct rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    core_buf answer, reasoning;
    int deliveries, ended, dropped, gone, stopping;
    uint64_t last_seq;
    size_t first_from;
    char finish[16];
    char save_err[64];
    int saved_at_end; /* the owner's final save had happened when the end came */
    int released_at_end; /* ... and the job's engine hold had gone back */
} rec;

typedef struct owner {
    pthread_mutex_t mu;
    int partial, final, freed;
    int fail_final; /* the final save fails (a full disk) */
    char finish[16];
    core_buf answer;
} owner;

static owner g_own; /* the owner of the job under test */
static int g_released; /* engine holds given back through the release hook */

static void rec_init(rec *r) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->first_from = (size_t)-1;
}

static void rec_free(rec *r) {
    core_buf_free(&r->answer);
    core_buf_free(&r->reasoning);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static int rec_deliver(void *ctx, const bridge_out *o) {
    rec *r = ctx;
    pthread_mutex_lock(&r->mu);
    if (r->first_from == (size_t)-1) r->first_from = o->answer_from;
    core_buf_append(&r->answer, o->answer + o->answer_from, o->answer_end - o->answer_from);
    core_buf_append(&r->reasoning, o->reasoning + o->reasoning_from, o->reasoning_end - o->reasoning_from);
    r->deliveries++;
    r->last_seq = o->seq;
    if (o->end) {
        r->ended = 1;
        r->stopping = o->stopping;
        snprintf(r->finish, sizeof r->finish, "%s", o->finish);
        snprintf(r->save_err, sizeof r->save_err, "%s", o->save_err);
        pthread_mutex_lock(&g_own.mu);
        r->saved_at_end = g_own.final;
        r->released_at_end = __atomic_load_n(&g_released, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&g_own.mu);
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static int rec_gone(void *ctx) {
    rec *r = ctx;
    pthread_mutex_lock(&r->mu);
    int g = r->gone;
    pthread_mutex_unlock(&r->mu);
    return g;
}

static void rec_drop(void *ctx) {
    rec *r = ctx;
    pthread_mutex_lock(&r->mu);
    r->dropped = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static const bridge_listener_ops rec_ops = {rec_deliver, rec_gone, rec_drop};

/* Wait (up to 20 s) until field >= v. */
#define REC_WAIT(r, cond)                                                            \
    do {                                                                             \
        double t_end_ = core_now_s() + 20;                                           \
        pthread_mutex_lock(&(r)->mu);                                                \
        while (!(cond) && core_now_s() < t_end_) {                                   \
            pthread_mutex_unlock(&(r)->mu);                                          \
            struct timespec ts_ = {0, 5 * 1000000L};                                 \
            nanosleep(&ts_, NULL);                                                   \
            pthread_mutex_lock(&(r)->mu);                                            \
        }                                                                            \
        pthread_mutex_unlock(&(r)->mu);                                              \
        CHECK_MSG(cond, "timed out waiting for %s", #cond);                          \
    } while (0)

static int own_save(void *ctx, const char *answer, size_t answer_len, const char *reasoning, size_t reasoning_len,
                    const engine_stats *st, const char *finish, int final, core_err *err) {
    owner *o = ctx;
    pthread_mutex_lock(&o->mu);
    int fail = final && o->fail_final;
    if (final) {
        o->final++;
        snprintf(o->finish, sizeof o->finish, "%s", finish);
        core_buf_clear(&o->answer);
        core_buf_append(&o->answer, answer, answer_len);
    } else {
        o->partial++;
    }
    pthread_mutex_unlock(&o->mu);
    return fail ? core_errf(err, CORE_EIO, "disk full") : 0;
}

static void own_free(void *ctx) {
    owner *o = ctx;
    pthread_mutex_lock(&o->mu);
    o->freed++;
    pthread_mutex_unlock(&o->mu);
}

static void own_reset(void) {
    core_buf_free(&g_own.answer);
    pthread_mutex_destroy(&g_own.mu);
    memset(&g_own, 0, sizeof g_own);
    pthread_mutex_init(&g_own.mu, NULL);
}

static int own_get(int *field) {
    pthread_mutex_lock(&g_own.mu);
    int v = *field;
    pthread_mutex_unlock(&g_own.mu);
    return v;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Slow on purpose (a registry takes its lock, may unload a model): a
 * hold given back after the end was announced shows as a missing count. */
static void on_release(void *ctx, engine *e, double keep_alive_s) {
    (void)ctx, (void)e, (void)keep_alive_s;
    sleep_ms(30);
    __atomic_add_fetch(&g_released, 1, __ATOMIC_SEQ_CST);
}

static bridge_job_opts opts(int64_t key, const char *tag, double grace, double keep) {
    bridge_job_opts o = {0};
    o.key = key;
    o.tag = tag;
    o.grace_s = grace;
    o.keep_s = keep;
    o.owner = (bridge_owner){NULL, own_save, own_free, &g_own};
    return o;
}

/* ---- the rule --------------------------------------------------------------- */

static void test_max_tokens_rule(void) {
    int out = -1;
    core_err err = {0};
    /* nothing asked: the server's cap (default 4096) cut to the room */
    CHECK(bridge_max_tokens(100, 40, 0, 0, 1, &out, &err) == 0 && out == 60);
    CHECK(bridge_max_tokens(10000, 40, 0, 0, 1, &out, &err) == 0 && out == BRIDGE_DEFAULT_MAX_TOKENS);
    CHECK(bridge_max_tokens(10000, 40, 0, 512, 0, &out, &err) == 0 && out == 512);
    /* asked: what fits is granted */
    CHECK(bridge_max_tokens(100, 40, 60, 0, 1, &out, &err) == 0 && out == 60);
    /* more than the room: refused when strict (the API), cut otherwise (the page) */
    CHECK_EQ_INT(bridge_max_tokens(100, 40, 61, 0, 1, &out, &err), CORE_ERANGE);
    CHECK(strstr(err.msg, "max_tokens asks for 61") != NULL);
    CHECK(bridge_max_tokens(100, 40, 61, 0, 0, &out, &err) == 0 && out == 60);
    /* the server's cap applies first */
    CHECK(bridge_max_tokens(10000, 40, 600, 500, 0, &out, &err) == 0 && out == 500);
    CHECK(bridge_max_tokens(100, 40, 600, 500, 0, &out, &err) == 0 && out == 60);
    /* a prompt that leaves no position: refused either way */
    CHECK_EQ_INT(bridge_max_tokens(100, 100, 0, 0, 0, &out, &err), CORE_ERANGE);
    CHECK_EQ_INT(bridge_max_tokens(100, 120, 5, 0, 1, &out, &err), CORE_ERANGE);
    CHECK(bridge_max_tokens(100, 99, 0, 0, 1, &out, &err) == 0 && out == 1);
}

/* ---- replay ------------------------------------------------------------------ */

static void test_replay(void) {
    own_reset();
    bridge *b = NULL;
    core_err err = {0};
    CHECK(bridge_new(&b, NULL, NULL, NULL, &err) == 0);
    bridge_job_opts o = opts(7, "conv", 60, 60);
    o.prefix = "Hello ";
    o.prefix_len = 6;
    o.prefix_reasoning = "hmm";
    o.prefix_reasoning_len = 3;
    bridge_job *j = NULL;
    CHECK(bridge_start(b, NULL, &o, &j, &err) == 0);
    rec a, late, mid, past;
    rec_init(&a);
    rec_init(&late);
    rec_init(&mid);
    rec_init(&past);
    CHECK(bridge_listen(j, &rec_ops, &a, 0, 0) == 0);
    REC_WAIT(&a, a.answer.len == 6);
    bridge_push(j, "world", 5);
    REC_WAIT(&a, a.answer.len == 11);
    CHECK_EQ_STR(a.reasoning.data, "hmm");
    bridge_push(j, "!", 1);
    bridge_finish(j, "stop");
    REC_WAIT(&a, a.ended);
    CHECK_EQ_STR(a.answer.data, "Hello world!");
    CHECK_EQ_STR(a.finish, "stop");
    CHECK_EQ_INT((int)a.last_seq, 3);
    CHECK(a.saved_at_end); /* the store is final before anyone sees the end */
    CHECK_EQ_STR(a.save_err, "");
    CHECK_EQ_INT(own_get(&g_own.final), 1);
    REC_WAIT(&a, a.dropped); /* after its end a listener leaves */
    /* a late listener (a reloaded page) gets it all in one delivery, then the end */
    CHECK(bridge_listen(j, &rec_ops, &late, 0, 33) == 0);
    REC_WAIT(&late, late.dropped);
    CHECK_EQ_STR(late.answer.data, "Hello world!");
    CHECK_EQ_STR(late.reasoning.data, "hmm");
    CHECK_EQ_INT(late.deliveries, 1);
    CHECK(late.ended);
    /* from a log position (Last-Event-ID 2): only what came after */
    CHECK(bridge_listen(j, &rec_ops, &mid, 2, 0) == 0);
    REC_WAIT(&mid, mid.dropped);
    CHECK_EQ_STR(mid.answer.data, "!");
    CHECK_EQ_INT((int)mid.first_from, 11);
    CHECK_EQ_INT((int)mid.reasoning.len, 0);
    /* past the end: the end only */
    CHECK(bridge_listen(j, &rec_ops, &past, 99, 0) == 0);
    REC_WAIT(&past, past.dropped);
    CHECK_EQ_INT((int)past.answer.len, 0);
    CHECK(past.ended);
    /* found by key and tag while kept */
    bridge_job *f = bridge_find(b, 7, "conv");
    CHECK(f == j);
    if (f) {
        CHECK(!bridge_live(f));
        bridge_release(f);
    }
    CHECK(bridge_find(b, 7, "other") == NULL);
    CHECK(bridge_find(b, 8, NULL) == NULL);
    CHECK_EQ_INT(own_get(&g_own.final), 1);
    bridge_release(j);
    bridge_free(b);
    CHECK_EQ_INT(own_get(&g_own.freed), 1);
    rec_free(&a);
    rec_free(&late);
    rec_free(&mid);
    rec_free(&past);
}

/* ---- a final save that fails reaches the listeners -------------------------- */

static void test_unsaved(void) {
    own_reset();
    g_own.fail_final = 1;
    bridge *b = NULL;
    core_err err = {0};
    CHECK(bridge_new(&b, NULL, NULL, NULL, &err) == 0);
    bridge_job_opts o = opts(3, "c", 60, 0);
    bridge_job *j = NULL;
    CHECK(bridge_start(b, NULL, &o, &j, &err) == 0);
    rec a;
    rec_init(&a);
    CHECK(bridge_listen(j, &rec_ops, &a, 0, 0) == 0);
    bridge_push(j, "lost", 4);
    bridge_finish(j, "stop");
    REC_WAIT(&a, a.ended);
    CHECK_EQ_STR(a.finish, "stop");
    CHECK_EQ_STR(a.save_err, "disk full");
    bridge_release(j);
    bridge_free(b);
    rec_free(&a);
}

/* ---- cancel when the last listener leaves -------------------------------- */

static void test_cancel_last_listener(void) {
    own_reset();
    bridge *b = NULL;
    core_err err = {0};
    CHECK(bridge_new(&b, NULL, NULL, NULL, &err) == 0);
    bridge_job_opts o = opts(1, "c", 0, 0);
    bridge_job *j = NULL;
    CHECK(bridge_start(b, NULL, &o, &j, &err) == 0);
    rec x, y;
    rec_init(&x);
    rec_init(&y);
    CHECK(bridge_listen(j, &rec_ops, &x, 0, 0) == 0);
    CHECK(bridge_listen(j, &rec_ops, &y, 0, 0) == 0);
    bridge_release(j); /* from here only the listeners keep it going */
    bridge_push(j, "x", 1);
    REC_WAIT(&x, x.answer.len == 1);
    REC_WAIT(&y, y.answer.len == 1);
    /* one of two leaves: the job goes on */
    pthread_mutex_lock(&x.mu);
    x.gone = 1;
    pthread_mutex_unlock(&x.mu);
    REC_WAIT(&x, x.dropped);
    sleep_ms(250);
    bridge_job *f = bridge_find(b, 1, NULL);
    CHECK(f != NULL);
    if (f) {
        CHECK(!bridge_cancelled(f) && bridge_live(f));
        bridge_release(f);
    }
    CHECK(!x.ended);
    /* the last one leaves: cancelled, saved as such, freed (keep 0) */
    pthread_mutex_lock(&y.mu);
    y.gone = 1;
    pthread_mutex_unlock(&y.mu);
    REC_WAIT(&y, y.dropped);
    REC_WAIT(&g_own, g_own.freed == 1);
    CHECK_EQ_STR(g_own.finish, "cancelled");
    CHECK_EQ_STR(g_own.answer.data, "x");
    CHECK(!y.ended); /* a gone client is not written to */
    CHECK(bridge_find(b, 1, NULL) == NULL);

    /* a held job is not cancelled for want of listeners; released, it is */
    own_reset();
    CHECK(bridge_start(b, NULL, &o, &j, &err) == 0);
    sleep_ms(250);
    CHECK(!bridge_cancelled(j));
    bridge_release(j);
    REC_WAIT(&g_own, g_own.freed == 1);
    CHECK_EQ_STR(g_own.finish, "cancelled");

    /* shutdown cancels running jobs and returns once their ends went out
     * (a server stops its streams right after); nothing starts any more */
    own_reset();
    rec z;
    rec_init(&z);
    CHECK(bridge_start(b, NULL, &o, &j, &err) == 0);
    CHECK(bridge_listen(j, &rec_ops, &z, 0, 33) == 0);
    bridge_push(j, "y", 1);
    bridge_shutdown(b);
    CHECK(bridge_cancelled(j));
    pthread_mutex_lock(&z.mu);
    CHECK(z.ended && z.dropped && z.stopping);
    CHECK_EQ_STR(z.finish, "cancelled");
    pthread_mutex_unlock(&z.mu);
    rec_free(&z);
    bridge_job *k = NULL;
    CHECK_EQ_INT(bridge_start(b, NULL, &o, &k, &err), CORE_EUNSUP);
    bridge_release(j);
    bridge_free(b);
    CHECK_EQ_INT(own_get(&g_own.freed), 1);
    rec_free(&x);
    rec_free(&y);
}

/* ---- with the engine ---------------------------------------------------------- */

static int g_done;
static void on_done(void *ctx, const engine_stats *st) {
    (void)ctx;
    if (st->gen_tokens > 0) __atomic_add_fetch(&g_done, 1, __ATOMIC_SEQ_CST);
}

static void test_engine_jobs(void) {
    const char *path = t_shared("models/smollm3-tiny-q4_k_m.gguf");
    if (!path) T_SKIP("../shared/models/smollm3-tiny-q4_k_m.gguf absent");
    kern_init(NULL);
    engine_config c = {0};
    c.model_path = path;
    c.n_ctx = 512;
    engine *e = NULL;
    core_err err = {0};
    CHECK(engine_new(&e, &c, &err) == 0);
    if (!e || engine_wait_ready(e, 60) != ENGINE_READY) T_SKIP("engine not ready");
    chat_msg m[1] = {{"user", "Tell me a long story.", 21}};
    prompt p;
    prompt_opts po = {.thinking = 0, .date = "26 November 2026"};
    CHECK(prompt_build(engine_tok(e), m, 1, &po, &p, &err) == 0);
    bridge *b = NULL;
    CHECK(bridge_new(&b, e, on_done, NULL, &err) == 0);
    engine_request rq = {0};
    rq.prompt = p.ids;
    rq.n_prompt = p.n_ids;
    rq.n_shared = p.n_shared;
    sample_params_default(&rq.sampling);
    rq.sampling.temperature = 0;
    rq.ignore_eos = 1;

    bridge_set_release(b, on_release, NULL);

    /* the non-stream way: hold, wait, read the result; the job's engine
     * hold is back before the wait ends (a client with its answer finds
     * the model idle) */
    own_reset();
    rq.max_tokens = 8;
    bridge_job_opts o = opts(0, NULL, 0, 0);
    o.hold_engine = 1;
    bridge_job *j = NULL;
    CHECK(bridge_start(b, &rq, &o, &j, &err) == 0);
    bridge_wait(j);
    CHECK_EQ_INT(__atomic_load_n(&g_released, __ATOMIC_SEQ_CST), 1);
    const char *text, *finish, *emsg;
    size_t tl;
    const engine_stats *st;
    int ecode;
    bridge_result(j, &text, &tl, NULL, NULL, &st, &finish, &ecode, &emsg);
    CHECK_EQ_STR(finish, "length");
    CHECK_EQ_INT(st->gen_tokens, 8);
    CHECK_EQ_INT(ecode, 0);
    CHECK(tl == g_own.answer.len && !memcmp(text, g_own.answer.data, tl));
    bridge_release(j);
    REC_WAIT(&g_own, g_own.freed == 1);
    CHECK_EQ_INT(__atomic_load_n(&g_done, __ATOMIC_SEQ_CST), 1);

    /* a listener to the end: the hold is back when it hears the end */
    own_reset();
    rec y;
    rec_init(&y);
    CHECK(bridge_start(b, &rq, &o, &j, &err) == 0);
    CHECK(bridge_listen(j, &rec_ops, &y, 0, 0) == 0);
    bridge_release(j);
    REC_WAIT(&y, y.ended);
    CHECK_EQ_INT(y.released_at_end, 2);
    REC_WAIT(&g_own, g_own.freed == 1);
    rec_free(&y);

    /* a listener that leaves mid-decode cancels the engine request */
    own_reset();
    rq.max_tokens = 400;
    rec x;
    rec_init(&x);
    CHECK(bridge_start(b, &rq, &o, &j, &err) == 0);
    CHECK(bridge_listen(j, &rec_ops, &x, 0, 0) == 0);
    bridge_release(j);
    REC_WAIT(&x, x.deliveries >= 3);
    pthread_mutex_lock(&x.mu);
    x.gone = 1;
    pthread_mutex_unlock(&x.mu);
    REC_WAIT(&g_own, g_own.freed == 1);
    CHECK_EQ_STR(g_own.finish, "cancelled");
    engine_metrics em;
    engine_get_metrics(e, &em);
    CHECK_EQ_INT((int)em.cancelled, 1);
    CHECK(em.gen_tokens < 8 + 8 + 400);
    CHECK_EQ_INT(__atomic_load_n(&g_released, __ATOMIC_SEQ_CST), 3);

    /* refused by the engine: nothing kept, the owner is not called */
    own_reset();
    rq.max_tokens = 1;
    rq.n_shared = rq.n_prompt + 1;
    CHECK_EQ_INT(bridge_start(b, &rq, &o, &j, &err), CORE_EINVAL);
    CHECK_EQ_INT(own_get(&g_own.freed), 0);

    bridge_free(b);
    engine_free(e);
    prompt_free(&p);
    rec_free(&x);
}

int main(void) {
    pthread_mutex_init(&g_own.mu, NULL);
    T_RUN(test_max_tokens_rule);
    T_RUN(test_replay);
    T_RUN(test_unsaved);
    T_RUN(test_cancel_last_listener);
    T_RUN(test_engine_jobs);
    own_reset();
    pthread_mutex_destroy(&g_own.mu);
    return t_done();
}
