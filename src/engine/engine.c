/* engine.c -- the inference thread: queue, conversations, prefix reuse,
 * batched decoding. See engine.h for the contract.
 *
 * Data:
 *   queue   FIFO of submitted jobs not yet started (bounded by max_queue)
 *   active  up to max_active jobs, each PREFILL or DECODE
 *   convs   conversations with a KV cache and the exact tokens in it
 *   sys     the shared system block (the request says how many leading
 *           ids it is): tokens + a small KV cache of them
 *
 * One loop iteration: admit jobs from the queue (a job waits while its
 * conversation is busy with another job), then one step: a token for
 * every decoding job and a prompt chunk of the prefilling ones, in one
 * pass through the weights (model_forward_seqs), the chunk sized so the
 * running streams keep their pace. Only this thread touches models, caches and samplers; the mutex
 * guards the queue, the job lists' membership and the counters, and is
 * never held while the model runs or a callback is called.
 *
 * Per token the work is: the constraint's mask (when the request has a
 * grammar), the draw, tok_stream (bytes -> whole characters), the think
 * parser (reasoning vs answer), stop strings (on the answer), then one
 * callback. The buffers for that live in the job and are reused.
 */
#include "engine/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/chat.h"
#include "gguf/gguf.h"
#include "kern/kern.h"

#define CONV_ID_MAX 64
#define DEC_WINDOW 4 /* decode-only steps the mixed steps measure against (dec_ref) */

typedef struct conv {
    char id[CONV_ID_MAX];
    int anon;
    model_kv *kv;
    int32_t *toks; /* exactly the tokens in kv, in order */
    int n_toks;
    int busy;      /* a job runs on it */
    int forget;    /* drop when the job ends */
    double last_used;
    struct conv *next;
} conv;

enum { JOB_QUEUED = 0, JOB_PREFILL, JOB_DECODE, JOB_DONE };

typedef struct job {
    uint64_t id;
    engine_request r;
    int32_t *prompt;
    char conv_id[CONV_ID_MAX];
    char *stop_text[SAMPLE_STOP_MAX];
    atomic_int cancel;
    int state;
    conv *cv;
    int n_cached;   /* prompt tokens reused from the cache */
    int n_fed;      /* prompt tokens in the cache so far */
    int32_t next_tok;
    int n_gen, n_reason_tok;
    int in_reasoning;
    int admitted;
    double t_submit, t_start, t_first, t_prefill_end;
    sampler *smp;
    sample_matcher *mt; /* constrained output; NULL: free */
    sample_logprob lp, top[SAMPLE_TOP_MAX]; /* the last draw's, when the request asks */
    int n_top;
    sample_stop stop;
    chat_think think;
    tok_stream ts;
    core_buf txt, reas, ans, emit;
    struct job *next;
} job;

struct engine {
    engine_config cfg;
    char model_path[4096];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the engine thread */
    pthread_cond_t state_cv; /* wakes engine_wait_ready */
    atomic_int state;
    char state_msg[512];
    int stop;
    gguf *g;
    model *m;
    tok *tk;
    int n_ctx;
    job *queue_head, *queue_tail;
    int n_queued;
    job *active[64];
    int n_active;
    int n_running; /* admitted and not finished (what metrics call active) */
    conv *convs;
    int n_anon;
    uint64_t next_id;
    /* shared system block */
    model_kv *sys_kv;
    int32_t *sys_toks;
    int n_sys;
    /* constrained decoding: the vocabulary's bytes, built on first use */
    pthread_mutex_t vocab_mu;
    sample_vocab *vocab;
    int32_t tool_call, tool_call_end; /* control tokens shown as text, like the think tags */
    /* batched step scratch */
    float *batch_logits; /* max_active * n_vocab */
    double dec_t[DEC_WINDOW]; /* the last decode-only steps' times (dec_ref), of dec_rows rows each */
    int dec_seen, dec_rows;   /* such steps since dec_rows last changed */
    double mix_chunk;    /* prefill rows beside decode rows (prefill_budget); unrounded, since a
                            state rounded down each step sank to the floor */
    int n_mixed;         /* mixed steps since the last decode-only one */
    engine_metrics met;
    double t_start;
};

/* ---- helpers ------------------------------------------------------------ */

static void set_state(engine *e, int st, const char *msg) {
    pthread_mutex_lock(&e->mu);
    atomic_store(&e->state, st);
    snprintf(e->state_msg, sizeof e->state_msg, "%s", msg ? msg : "");
    pthread_cond_broadcast(&e->state_cv);
    pthread_mutex_unlock(&e->mu);
}

static int emit(job *j, engine_event *ev) {
    ev->req_id = j->id;
    if (j->r.cb && j->r.cb(j->r.ctx, ev)) atomic_store(&j->cancel, 1);
    return atomic_load(&j->cancel);
}

static void job_free(job *j) {
    if (!j) return;
    free(j->prompt);
    for (int i = 0; i < SAMPLE_STOP_MAX; i++) free(j->stop_text[i]);
    sample_free(j->smp);
    sample_matcher_free(j->mt);
    core_buf_free(&j->txt);
    core_buf_free(&j->reas);
    core_buf_free(&j->ans);
    core_buf_free(&j->emit);
    free(j);
}

static int lcp(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

static uint64_t kv_held(const engine *e) {
    uint64_t b = e->sys_kv ? model_kv_bytes(e->sys_kv) : 0;
    for (const conv *c = e->convs; c; c = c->next)
        if (c->kv) b += model_kv_bytes(c->kv);
    return b;
}

static void conv_unlink_free(engine *e, conv *victim) {
    for (conv **pp = &e->convs; *pp; pp = &(*pp)->next)
        if (*pp == victim) { *pp = victim->next; break; }
    model_kv_free(victim->kv);
    free(victim->toks);
    free(victim);
}

/* Evict least recently used idle caches (never `keep`) until `need` more
 * bytes fit. */
static void make_room(engine *e, uint64_t need, const conv *keep) {
    while (kv_held(e) + need > e->cfg.kv_budget) {
        conv *lru = NULL;
        for (conv *c = e->convs; c; c = c->next)
            if (!c->busy && c->kv && c != keep && (!lru || c->last_used < lru->last_used)) lru = c;
        if (!lru) return; /* all busy: max_active bounds the overshoot */
        LOG_DEBUG("engine: evicting cache of conversation %s", lru->id);
        conv_unlink_free(e, lru);
    }
}

static conv *conv_find(engine *e, const char *id) {
    for (conv *c = e->convs; c; c = c->next)
        if (!c->anon && !strcmp(c->id, id)) return c;
    return NULL;
}

static int conv_ensure_kv(engine *e, conv *c, const conv *keep, core_err *err) {
    if (c->kv) return 0;
    make_room(e, model_kv_size(e->m, e->n_ctx, e->cfg.kv_type), keep);
    int rc = model_kv_new(&c->kv, e->m, e->n_ctx, e->cfg.kv_type, err);
    if (rc) return rc;
    free(c->toks);
    c->toks = malloc((size_t)model_kv_ctx(c->kv) * sizeof *c->toks);
    c->n_toks = 0;
    if (!c->toks) return core_errf(err, CORE_ENOMEM, "out of memory");
    return 0;
}

static conv *conv_add(engine *e, const char *id, core_err *err) {
    conv *c = calloc(1, sizeof *c);
    if (!c) { core_errf(err, CORE_ENOMEM, "out of memory"); return NULL; }
    if (id && id[0]) snprintf(c->id, sizeof c->id, "%s", id);
    else { c->anon = 1; snprintf(c->id, sizeof c->id, "anon-%d", ++e->n_anon); }
    c->next = e->convs;
    e->convs = c;
    return c;
}

/* Where a new prompt's reusable prefix comes from: a cache (idle or busy:
 * between steps its first n_toks positions are fixed, so they can be
 * copied) or the shared system block (from == NULL, len == n_sys). */
typedef struct prefix_src {
    conv *from;
    int len;
    int pinned; /* from was idle and is held busy for the copy */
} prefix_src;

/* The longest prefix of prompt[0..cap) that any cache or the system block holds. */
static prefix_src best_prefix(engine *e, const int32_t *prompt, int n, int cap) {
    prefix_src s = {NULL, 0, 0};
    if (e->n_sys > 0 && e->n_sys <= cap && e->n_sys <= n && !memcmp(e->sys_toks, prompt, (size_t)e->n_sys * 4))
        s.len = e->n_sys;
    for (conv *x = e->convs; x; x = x->next) {
        if (!x->kv) continue;
        int l = CORE_MIN(lcp(x->toks, x->n_toks, prompt, n), cap);
        if (l > s.len) s = (prefix_src){x, l, 0};
    }
    return s;
}

/* The cache a job runs on, and in *src the prefix it starts from.
 *
 * A named conversation runs on its own cache. An anonymous request is
 * placed by what it would destroy: it runs in place on an idle anonymous
 * cache only when that cache's reusable prefix is the longest on offer
 * and what it overwrites is small beside what it reuses (a regenerate, a
 * conversation that went on); an empty cache is taken first; otherwise it
 * gets a fresh cache (least recently used idle caches make room under the
 * budget) and the longest prefix on offer -- the system block, or part of
 * another cache -- is copied into it. So a short request that shares only
 * the system block with a long cached prompt leaves that prompt whole. */
static conv *conv_for_job(engine *e, job *j, prefix_src *src, core_err *err) {
    const int n = (int)j->r.n_prompt, cap = n - 1; /* at least one token runs: its logits start generation */
    *src = best_prefix(e, j->prompt, n, cap);
    conv *c = NULL;
    if (j->conv_id[0]) {
        c = conv_find(e, j->conv_id);
        if (!c && !(c = conv_add(e, j->conv_id, err))) return NULL;
    } else {
        conv *in_place = NULL, *empty = NULL;
        int best = -1;
        for (conv *x = e->convs; x; x = x->next) {
            if (!x->anon || x->busy || !x->kv) continue;
            if (x->n_toks == 0) { empty = x; continue; }
            int l = CORE_MIN(lcp(x->toks, x->n_toks, j->prompt, n), cap);
            if (l > 0 && (x->n_toks - l) * 8 <= l && l > best) { best = l; in_place = x; }
        }
        if (in_place && best >= src->len) c = in_place;
        else if (empty) c = empty;
        else if (!(c = conv_add(e, NULL, err))) return NULL;
    }
    c->busy = 1;
    if (conv_ensure_kv(e, c, src->from, err)) { c->busy = 0; return NULL; }
    /* pin an idle source until its prefix is copied (engine_forget waits) */
    src->pinned = src->from && src->from != c && !src->from->busy;
    if (src->pinned) src->from->busy = 1;
    return c;
}

static void remember_system_block(engine *e, const conv *c, int n_block) {
    if (n_block <= 0 || n_block > c->n_toks) return;
    if (e->n_sys == n_block && !memcmp(e->sys_toks, c->toks, (size_t)n_block * sizeof(int32_t))) return;
    model_kv_free(e->sys_kv);
    free(e->sys_toks);
    e->sys_kv = NULL;
    e->n_sys = 0;
    e->sys_toks = malloc((size_t)n_block * sizeof(int32_t));
    if (!e->sys_toks || model_kv_new(&e->sys_kv, e->m, n_block, e->cfg.kv_type, NULL) ||
        model_kv_copy_prefix(e->sys_kv, c->kv, n_block, NULL)) {
        model_kv_free(e->sys_kv);
        e->sys_kv = NULL;
        return;
    }
    memcpy(e->sys_toks, c->toks, (size_t)n_block * sizeof(int32_t));
    e->n_sys = n_block;
}

/* ---- job lifecycle ------------------------------------------------------ */

static void finish(engine *e, job *j, const char *reason, int code, const char *msg) {
    if (j->state == JOB_DONE) return;
    /* release what the decoders still hold */
    core_buf_clear(&j->txt);
    tok_stream_flush(&j->ts, &j->txt, 0);
    core_buf_clear(&j->reas);
    core_buf_clear(&j->ans);
    if (j->txt.len) chat_think_push(&j->think, j->txt.data, j->txt.len, &j->reas, &j->ans);
    chat_think_finish(&j->think, &j->reas, &j->ans);
    core_buf_clear(&j->emit);
    if (!j->stop.done) {
        if (j->ans.len) sample_stop_push(&j->stop, j->ans.data, j->ans.len, &j->emit);
        if (!j->stop.done) sample_stop_flush(&j->stop, &j->emit);
    }
    if (j->emit.len || j->reas.len) {
        engine_event ev = {.type = ENGINE_EV_TEXT, .text = j->emit.data, .text_len = j->emit.len,
                           .reasoning = j->reas.data, .reasoning_len = j->reas.len, .token = -1};
        emit(j, &ev);
    }
    double now = core_now_s();
    engine_stats st = {0};
    st.prompt_tokens = (int)j->r.n_prompt;
    st.cached_tokens = j->n_cached;
    st.gen_tokens = j->n_gen;
    st.reasoning_tokens = j->n_reason_tok;
    st.queue_ms = j->t_start > 0 ? (j->t_start - j->t_submit) * 1e3 : (now - j->t_submit) * 1e3;
    st.ttft_ms = j->t_first > 0 ? (j->t_first - j->t_submit) * 1e3 : 0;
    st.prefill_ms = j->t_prefill_end > 0 ? (j->t_prefill_end - j->t_start) * 1e3 : 0;
    st.decode_ms = j->t_prefill_end > 0 ? (now - j->t_prefill_end) * 1e3 : 0;
    int n_pre = (int)j->r.n_prompt - j->n_cached;
    st.prefill_tok_s = st.prefill_ms > 0 ? n_pre / (st.prefill_ms / 1e3) : 0;
    st.decode_tok_s = st.decode_ms > 0 && j->n_gen > 1 ? (j->n_gen - 1) / (st.decode_ms / 1e3) : 0;
    st.finish_reason = reason;
    st.ctx_used = j->cv ? j->cv->n_toks : 0;
    st.ctx_size = e->n_ctx;
    j->state = JOB_DONE;
    pthread_mutex_lock(&e->mu);
    e->met.requests++;
    e->met.prompt_tokens += j->r.n_prompt;
    e->met.cached_tokens += (uint64_t)j->n_cached;
    e->met.gen_tokens += (uint64_t)j->n_gen;
    if (!strcmp(reason, "cancelled")) e->met.cancelled++;
    if (code) e->met.errors++;
    if (j->admitted) e->n_running--;
    if (st.decode_tok_s > 0) e->met.last_decode_tok_s = st.decode_tok_s;
    if (st.ttft_ms > 0) e->met.last_ttft_ms = st.ttft_ms;
    if (j->cv) {
        j->cv->busy = 0;
        j->cv->last_used = now;
        if (j->cv->forget) conv_unlink_free(e, j->cv);
        j->cv = NULL;
    }
    pthread_mutex_unlock(&e->mu);
    /* counters first, then the event: whoever waits on DONE sees them */
    if (code) {
        engine_event ev = {.type = ENGINE_EV_ERROR, .stats = &st, .code = code, .error = msg};
        emit(j, &ev);
    } else {
        engine_event ev = {.type = ENGINE_EV_DONE, .stats = &st};
        emit(j, &ev);
    }
}

/* Start a job: find its cache and the longest prefix on offer (see
 * conv_for_job), copied in when it lives elsewhere. */
static void start(engine *e, job *j) {
    core_err err = {0};
    j->t_start = core_now_s();
    prefix_src src;
    pthread_mutex_lock(&e->mu);
    conv *c = conv_for_job(e, j, &src, &err);
    pthread_mutex_unlock(&e->mu);
    if (!c) { finish(e, j, "error", err.code ? err.code : CORE_ENOMEM, err.msg); return; }
    j->cv = c;
    int n = (int)j->r.n_prompt;
    int keep = CORE_MIN(lcp(c->toks, c->n_toks, j->prompt, n), n - 1);
    if (src.len > keep && src.from != c) {
        const model_kv *from = src.from ? src.from->kv : e->sys_kv;
        const int32_t *ftoks = src.from ? src.from->toks : e->sys_toks;
        if (model_kv_copy_prefix(c->kv, from, src.len, NULL) == 0) {
            memcpy(c->toks, ftoks, (size_t)src.len * sizeof(int32_t));
            keep = src.len;
        } else {
            keep = 0; /* the copy failed part way: rebuild by prefill */
        }
    }
    if (src.pinned) {
        pthread_mutex_lock(&e->mu);
        src.from->busy = 0;
        if (src.from->forget) conv_unlink_free(e, src.from);
        make_room(e, 0, NULL); /* the source may have stayed only for the copy */
        pthread_mutex_unlock(&e->mu);
    }
    if (n > model_kv_ctx(c->kv)) {
        finish(e, j, "error", CORE_ERANGE, "the prompt does not fit the context");
        return;
    }
    model_kv_truncate(c->kv, keep);
    c->n_toks = keep;
    j->n_cached = keep;
    j->n_fed = keep;
    j->state = JOB_PREFILL;
}

/* A sampled token: text out, stop conditions, or queue it for the next step. */
static void on_token(engine *e, job *j, int32_t id) {
    const tok_special *sp = tok_specials(e->tk);
    if (id < 0) { finish(e, j, "stop", 0, NULL); return; }
    if (j->n_gen == 0) j->t_first = core_now_s();
    j->n_gen++;
    if (!j->r.ignore_eos && tok_is_stop(e->tk, id)) { finish(e, j, "stop", 0, NULL); return; }

    core_buf_clear(&j->txt);
    core_buf_clear(&j->reas);
    core_buf_clear(&j->ans);
    core_buf_clear(&j->emit);
    if (j->r.thinking && (id == sp->think || id == sp->think_end)) {
        /* The think tags are control tokens: hidden by the detokenizer, so
         * hand their text to the think parser ourselves. */
        tok_stream_flush(&j->ts, &j->txt, 1);
        core_buf_puts(&j->txt, id == sp->think ? "<think>" : "</think>");
        j->in_reasoning = id == sp->think;
    } else if (id >= 0 && (id == e->tool_call || id == e->tool_call_end)) {
        /* the same for the tool-call tags: callers parse them out of the text */
        tok_stream_flush(&j->ts, &j->txt, 1);
        core_buf_puts(&j->txt, id == e->tool_call ? "<tool_call>" : "</tool_call>");
        if (j->in_reasoning) j->n_reason_tok++;
    } else {
        tok_stream_push(&j->ts, id, &j->txt);
        if (j->in_reasoning) j->n_reason_tok++;
    }
    if (j->txt.len) chat_think_push(&j->think, j->txt.data, j->txt.len, &j->reas, &j->ans);
    int stopped = j->ans.len ? sample_stop_push(&j->stop, j->ans.data, j->ans.len, &j->emit) : 0;
    /* one TEXT event per token, even when its bytes are still held back,
     * so callers can count and record ids */
    engine_event ev = {.type = ENGINE_EV_TEXT, .text = j->emit.data, .text_len = j->emit.len,
                       .reasoning = j->reas.data, .reasoning_len = j->reas.len, .token = id,
                       .has_logprob = j->r.logprobs, .logprob = j->lp.logprob, .top = j->top, .n_top = j->n_top};
    if (emit(j, &ev)) { finish(e, j, "cancelled", 0, NULL); return; }
    if (stopped) { finish(e, j, "stop", 0, NULL); return; }
    if (atomic_load(&j->cancel)) { finish(e, j, "cancelled", 0, NULL); return; }
    if ((j->r.max_tokens > 0 && j->n_gen >= j->r.max_tokens) || j->cv->n_toks >= model_kv_ctx(j->cv->kv)) {
        finish(e, j, "length", 0, NULL);
        return;
    }
    j->next_tok = id;
    j->state = JOB_DECODE;
}

/* The next id, or -1 when a constraint allows none (the output ends). */
static int32_t pick(job *j, float *logits) {
    if (j->mt && sample_matcher_mask(j->mt, logits) == 0) return -1;
    int32_t id = j->r.logprobs ? sample_next_lp(j->smp, logits, j->cv->toks, (size_t)j->cv->n_toks, j->r.top_logprobs,
                                                &j->lp, j->top, &j->n_top)
                               : sample_next(j->smp, logits, j->cv->toks, (size_t)j->cv->n_toks);
    if (j->mt && sample_matcher_accept(j->mt, id)) return -1; /* cannot happen after the mask */
    return id;
}

/* Prefill rows a step may add beside n_dec decode rows. Alone, a whole
 * chunk (prefill runs as fast as it can). Beside running streams the chunk
 * is sized so the step takes about STEP_SLACK times a decode-only step,
 * which bounds the streams' gap. What the prompt gets of such a step is
 * what is left after the pass through the weights (paid once per step,
 * whatever the chunk) and the decode rows' own arithmetic, so small chunks
 * are dear. On a noisy host single steps run up to about 1.4 times the
 * target, so 2 keeps the largest gap near 3x the normal one. The chunk may
 * go down to CHUNK_MIN rows, since deep in a long prompt each row's
 * attention makes a row dearer; a higher floor would overrule the target
 * where decoding is fast beside what the cores compute. Multiplicative
 * control on the measured step times adapts to the model, the threads,
 * the depth and the load. */
#define STEP_SLACK 2.0
#define CHUNK_MIN 4

#define PROBE_EVERY 8 /* mixed steps between decode-only ones */

/* Prompts that came in together (each before any of the decoding streams
 * had its first token: a burst of users, or one client's parallel
 * requests) are read in whole chunks, as if alone, and the streams of the
 * burst that already started go along in the same steps. Small chunks
 * would keep the first stream's gaps short at the price of every other
 * newcomer's first token and of the burst's throughput; the streams'
 * users have just waited as long themselves. A prompt that arrives once
 * a stream runs gets the small chunks. */
static int burst(engine *e, int n_dec, job *const *dec) {
    const job *p = NULL;
    for (int i = 0; i < e->n_active && !p; i++)
        if (e->active[i]->state == JOB_PREFILL) p = e->active[i];
    if (!p) return 0;
    for (int i = 0; i < n_dec; i++)
        if (dec[i]->t_first < p->t_submit) return 0;
    return 1;
}

static int prefill_budget(engine *e, int n_dec, int whole) {
    const int rows = model_step_rows(e->m) - n_dec;
    if (n_dec == 0 || whole || rows <= CHUNK_MIN) return rows;
    /* the reference goes stale while every step is mixed (the host's load
     * changes): now and then a decode-only step measures it again */
    if (e->n_mixed >= PROBE_EVERY) return 0;
    return CORE_MAX(CHUNK_MIN, CORE_MIN(rows, (int)lround(e->mix_chunk)));
}

/* The reference for the mixed steps is the least of the last DEC_WINDOW
 * decode-only steps of as many rows (0: none yet), not their average: on
 * a loaded host single steps run slow at random, an average carries that
 * into every target after it, and the steps then ran 2.5x the streams'
 * typical gap where 2x was meant. */
static double dec_ref(const engine *e) {
    const int n = CORE_MIN(e->dec_seen, DEC_WINDOW);
    double t = n ? e->dec_t[0] : 0;
    for (int i = 1; i < n; i++) t = CORE_MIN(t, e->dec_t[i]);
    return t;
}

static void dec_learn(engine *e, int n_dec, double t) {
    if (n_dec != e->dec_rows) e->dec_seen = 0, e->dec_rows = n_dec;
    e->dec_t[e->dec_seen % DEC_WINDOW] = t;
    if (++e->dec_seen == 2 * DEC_WINDOW) e->dec_seen = DEC_WINDOW; /* full: count on modulo the window */
}

/* Learn from one step: t seconds for n_dec decode rows and n_pre prefill rows. */
static void step_learn(engine *e, int n_dec, int n_pre, double t) {
    if (!(t > 0)) return;
    if (n_dec > 0 && n_pre == 0) {
        dec_learn(e, n_dec, t);
        e->n_mixed = 0;
    } else if (n_dec > 0) {
        e->n_mixed++;
        if (n_dec != e->dec_rows) e->n_mixed = PROBE_EVERY; /* a stream came or went: measure again */
        const double ref = dec_ref(e);
        if (ref > 0 && n_pre >= CHUNK_MIN) {
            /* geometric smoothing, the same both ways: on a loaded host single
             * steps run slow at random, and an asymmetric rule drifts down */
            double want = exp(0.7 * log(e->mix_chunk) + 0.3 * log(n_pre * (STEP_SLACK * ref) / t));
            e->mix_chunk = CORE_MAX(CHUNK_MIN, CORE_MIN(want, (double)model_step_rows(e->m)));
        }
    }
}

/* One step: a token for every decoding job, and the next prompt chunk of
 * prefilling jobs (oldest first) in the rows left, all in one pass through
 * the weights. */
static void step(engine *e) {
    model_kv *kvs[64];
    const int32_t *tp[64];
    int nt[64];
    job *js[64];
    int n = 0, n_dec = 0, n_pre = 0;
    for (int i = 0; i < e->n_active; i++) {
        job *j = e->active[i];
        if (j->state != JOB_DECODE) continue;
        if (atomic_load(&j->cancel)) { finish(e, j, "cancelled", 0, NULL); continue; }
        js[n] = j, kvs[n] = j->cv->kv, tp[n] = &j->next_tok, nt[n] = 1;
        n++;
    }
    n_dec = n;
    const int whole = n_dec && burst(e, n_dec, js);
    int budget = prefill_budget(e, n_dec, whole), last_chunk = 0;
    for (int i = 0; i < e->n_active && budget > 0; i++) {
        job *j = e->active[i];
        if (j->state != JOB_PREFILL) continue;
        if (atomic_load(&j->cancel)) { finish(e, j, "cancelled", 0, NULL); continue; }
        int chunk = CORE_MIN(budget, (int)j->r.n_prompt - j->n_fed);
        js[n] = j, kvs[n] = j->cv->kv, tp[n] = j->prompt + j->n_fed, nt[n] = chunk;
        last_chunk |= j->n_fed + chunk == (int)j->r.n_prompt;
        n++;
        budget -= chunk;
        n_pre += chunk;
    }
    if (!n) return;
    core_err err = {0};
    const size_t nv = (size_t)engine_model_config(e)->n_vocab;
    /* alone and mid-prompt, skip the head (a read of the whole output matrix) */
    float *logits = n_dec || last_chunk ? e->batch_logits : NULL;
    const double t0 = core_now_s();
    int rc = model_forward_seqs(e->m, kvs, tp, nt, n, logits, &err);
    const double dt = core_now_s() - t0;
    if (!whole) step_learn(e, n_dec, n_pre, dt); /* a whole chunk says nothing of small ones */
    if (n_pre)
        LOG_DEBUG("engine: step of %d decode + %d prompt rows: %.0f ms (decode alone %.0f ms, next chunk %.1f)", n_dec,
                  n_pre, dt * 1e3, dec_ref(e) * 1e3, e->mix_chunk);
    for (int i = 0; i < n; i++) {
        job *j = js[i];
        if (rc) { finish(e, j, "error", rc, err.msg); continue; }
        float *lg = e->batch_logits + (size_t)i * nv;
        if (i < n_dec) {
            j->cv->toks[j->cv->n_toks++] = j->next_tok;
            on_token(e, j, pick(j, lg));
            continue;
        }
        const int total = (int)j->r.n_prompt;
        memcpy(j->cv->toks + j->n_fed, j->prompt + j->n_fed, (size_t)nt[i] * sizeof(int32_t));
        j->n_fed += nt[i];
        j->cv->n_toks = j->n_fed;
        engine_event ev = {.type = ENGINE_EV_PREFILL, .prefill_done = j->n_fed, .prefill_total = total};
        if (emit(j, &ev)) { finish(e, j, "cancelled", 0, NULL); continue; }
        if (j->n_fed < total) continue;
        j->t_prefill_end = core_now_s();
        pthread_mutex_lock(&e->mu);
        remember_system_block(e, j->cv, (int)j->r.n_shared);
        pthread_mutex_unlock(&e->mu);
        on_token(e, j, pick(j, lg));
    }
}

/* ---- the thread ---------------------------------------------------------- */

static int load(engine *e) {
    core_err err = {0};
    if (!e->model_path[0]) {
        set_state(e, ENGINE_NO_MODEL, "no model file: run 'smolbot pull' or give -m PATH");
        return -1;
    }
    double t0 = core_now_s();
    model_opts mo = {e->cfg.n_threads, e->cfg.n_batch, e->cfg.gpu};
    if (gguf_open(&e->g, e->model_path, &err) || model_load(&e->m, e->g, &mo, &err) || tok_load(&e->tk, e->g, &err)) {
        set_state(e, ENGINE_FAILED, err.msg);
        LOG_ERROR("engine: %s", err.msg);
        return -1;
    }
    e->tool_call = tok_find(e->tk, "<tool_call>");
    e->tool_call_end = tok_find(e->tk, "</tool_call>");
    if (e->tool_call >= 0 && !tok_is_control(e->tk, e->tool_call)) e->tool_call = -1; /* plain text already */
    if (e->tool_call_end >= 0 && !tok_is_control(e->tk, e->tool_call_end)) e->tool_call_end = -1;
    const model_config *c = model_get_config(e->m);
    e->n_ctx = CORE_MIN(e->cfg.n_ctx, c->n_ctx_train);
    e->batch_logits = malloc((size_t)e->cfg.max_active * (size_t)c->n_vocab * sizeof(float));
    if (!e->batch_logits) { set_state(e, ENGINE_FAILED, "out of memory"); return -1; }
    /* Warm up: one token through every weight pages the file in now, not
     * on the first user's request. */
    model_kv *kv = NULL;
    if (model_kv_new(&kv, e->m, 8, e->cfg.kv_type, &err) == 0) {
        int32_t t = tok_specials(e->tk)->im_start >= 0 ? tok_specials(e->tk)->im_start : 0;
        model_forward(e->m, kv, &t, 1, e->batch_logits, 0, NULL, &err);
        model_kv_free(kv);
    }
    LOG_INFO("engine: model %s ready in %.1f s (%d layers, ctx %d, %d threads, %s kernels)", e->model_path,
             core_now_s() - t0, c->n_layer, e->n_ctx, model_threads(e->m), kern_isa());
    set_state(e, ENGINE_READY, NULL);
    return 0;
}

/* Under the lock: move jobs from the queue to the active set (FIFO; a job
 * waits while its conversation is busy), pull out cancelled queued jobs
 * into *dead, and note queue positions that changed into notes[]. */
typedef struct note { job *j; int pos; } note;

static int admit(engine *e, job **dead, note *notes, int max_notes) {
    job **pp = &e->queue_head, *prev = NULL;
    int n_notes = 0, pos = 0;
    while (*pp) {
        job *j = *pp;
        int take = 0, busy = 0;
        if (atomic_load(&j->cancel)) take = 2;
        else if (e->n_active < e->cfg.max_active) {
            if (j->conv_id[0]) {
                conv *c = conv_find(e, j->conv_id);
                busy = c && c->busy;
                for (int i = 0; i < e->n_active && !busy; i++) busy = !strcmp(e->active[i]->conv_id, j->conv_id);
            }
            take = !busy;
        }
        if (!take) {
            pos++;
            if (j->n_fed != -pos && n_notes < max_notes) { /* n_fed holds -position while queued */
                j->n_fed = -pos;
                notes[n_notes++] = (note){j, pos};
            }
            prev = j;
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (e->queue_tail == j) e->queue_tail = prev;
        e->n_queued--;
        j->n_fed = 0;
        if (take == 2) { j->next = *dead; *dead = j; continue; }
        j->next = NULL;
        j->admitted = 1;
        e->n_running++;
        e->active[e->n_active++] = j;
    }
    return n_notes;
}

/* The model file changed under the mapping (see gguf_mapping_ok): what the
 * weights give from now on is garbage, so every admitted job ends with the
 * reason, and the engine turns FAILED, which refuses new requests and is
 * what /health reports.  Checked once per turn of the loop, before the
 * step: a job whose step read a changed page is failed before its next
 * one (a check after the step too would only repeat the next turn's). */
static int model_file_changed(engine *e) {
    if (!e->g || engine_state(e) != ENGINE_READY) return engine_state(e) == ENGINE_FAILED && e->g;
    core_err err = {0};
    if (gguf_mapping_ok(e->g, &err) == 0) return 0;
    char msg[sizeof e->state_msg];
    snprintf(msg, sizeof msg, "the model file changed on disk: %.400s; restart the server to load it", err.msg);
    LOG_ERROR("engine: %s", msg);
    set_state(e, ENGINE_FAILED, msg);
    return 1;
}

static void fail_active(engine *e) {
    for (int i = 0; i < e->n_active; i++) finish(e, e->active[i], "error", CORE_EIO, e->state_msg);
}

static void *engine_main(void *arg) {
    engine *e = arg;
    load(e);
    note notes[16];
    pthread_mutex_lock(&e->mu);
    for (;;) {
        job *dead = NULL;
        int n_notes = admit(e, &dead, notes, 16);
        if (e->stop) break;
        if (e->n_active == 0 && !dead && !n_notes) {
            pthread_cond_wait(&e->cv, &e->mu);
            continue;
        }
        pthread_mutex_unlock(&e->mu);

        for (int i = 0; i < n_notes; i++) {
            engine_event ev = {.type = ENGINE_EV_QUEUED, .queue_pos = notes[i].pos};
            emit(notes[i].j, &ev); /* a cancel here is seen on the next admit */
        }
        while (dead) {
            job *n = dead->next;
            finish(e, dead, "cancelled", 0, NULL);
            job_free(dead);
            dead = n;
        }
        if (model_file_changed(e)) {
            fail_active(e);
        } else {
            for (int i = 0; i < e->n_active; i++)
                if (e->active[i]->state == JOB_QUEUED) start(e, e->active[i]);
            step(e);
        }

        pthread_mutex_lock(&e->mu);
        int k = 0;
        for (int i = 0; i < e->n_active; i++) {
            if (e->active[i]->state == JOB_DONE) job_free(e->active[i]);
            else e->active[k++] = e->active[i];
        }
        e->n_active = k;
    }
    /* stopping: everything still here ends as cancelled */
    job *q = e->queue_head;
    e->queue_head = e->queue_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->n_active; i++) { finish(e, e->active[i], "cancelled", 0, NULL); job_free(e->active[i]); }
    e->n_active = 0;
    while (q) {
        job *n = q->next;
        finish(e, q, "cancelled", 0, NULL);
        job_free(q);
        q = n;
    }
    return NULL;
}

/* ---- public -------------------------------------------------------------- */

int engine_new(engine **out, const engine_config *cfg, core_err *err) {
    *out = NULL;
    engine *e = calloc(1, sizeof *e);
    if (!e) return core_errf(err, CORE_ENOMEM, "out of memory");
    e->cfg = *cfg;
    if (e->cfg.n_ctx <= 0) e->cfg.n_ctx = 4096;
    if (e->cfg.kv_budget == 0) e->cfg.kv_budget = 2ull << 30;
    if (e->cfg.max_queue <= 0) e->cfg.max_queue = 64;
    if (e->cfg.max_active <= 0) e->cfg.max_active = 4;
    if (e->cfg.max_active > 64) e->cfg.max_active = 64;
    if (e->cfg.n_batch <= 0) e->cfg.n_batch = 256;
    if (e->cfg.max_active > e->cfg.n_batch) e->cfg.max_active = e->cfg.n_batch;
    snprintf(e->model_path, sizeof e->model_path, "%s", cfg->model_path ? cfg->model_path : "");
    e->cfg.model_path = e->model_path;
    e->t_start = core_now_s();
    e->mix_chunk = 2 * CHUNK_MIN; /* grows from small: a first step too long is a visible stall */
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->vocab_mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->state_cv, NULL);
    atomic_store(&e->state, ENGINE_LOADING);
    if (pthread_create(&e->thread, NULL, engine_main, e)) {
        free(e);
        return core_errf(err, CORE_ENOMEM, "cannot start the engine thread");
    }
    *out = e;
    return 0;
}

void engine_free(engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    for (job *j = e->queue_head; j; j = j->next) atomic_store(&j->cancel, 1);
    for (int i = 0; i < e->n_active; i++) atomic_store(&e->active[i]->cancel, 1);
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    while (e->convs) conv_unlink_free(e, e->convs);
    model_kv_free(e->sys_kv);
    free(e->sys_toks);
    free(e->batch_logits);
    sample_vocab_free(e->vocab);
    tok_free(e->tk);
    model_free(e->m);
    gguf_close(e->g);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->vocab_mu);
    pthread_cond_destroy(&e->cv);
    pthread_cond_destroy(&e->state_cv);
    free(e);
}

int engine_state(const engine *e) { return atomic_load(&((engine *)e)->state); }
const char *engine_state_message(const engine *e) { return e->state_msg; }

int engine_wait_ready(engine *e, double timeout_s) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double end = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + timeout_s;
    ts.tv_sec = (time_t)end;
    ts.tv_nsec = (long)((end - (double)ts.tv_sec) * 1e9);
    pthread_mutex_lock(&e->mu);
    while (atomic_load(&e->state) == ENGINE_LOADING)
        if (pthread_cond_timedwait(&e->state_cv, &e->mu, &ts)) break;
    int st = atomic_load(&e->state);
    pthread_mutex_unlock(&e->mu);
    return st;
}

const tok *engine_tok(const engine *e) { return engine_state(e) == ENGINE_READY ? e->tk : NULL; }
const model_config *engine_model_config(const engine *e) { return e->m ? model_get_config(e->m) : NULL; }
const char *engine_model_path(const engine *e) { return e->model_path; }
int engine_ctx_size(const engine *e) { return e->n_ctx; }
int engine_threads(const engine *e) { return e->m ? model_threads(e->m) : 0; }

int engine_submit(engine *e, const engine_request *r, uint64_t *req_id, core_err *err) {
    if (engine_state(e) != ENGINE_READY)
        return core_errf(err, CORE_EUNSUP, "the model is not loaded (%s)",
                         engine_state(e) == ENGINE_LOADING ? "loading" : e->state_msg);
    if (!r->prompt || r->n_prompt == 0) return core_errf(err, CORE_EINVAL, "empty prompt");
    if (r->conv_id && strlen(r->conv_id) >= CONV_ID_MAX) return core_errf(err, CORE_EINVAL, "conversation id too long");
    if (r->n_stops > SAMPLE_STOP_MAX) return core_errf(err, CORE_EINVAL, "at most %d stop strings", SAMPLE_STOP_MAX);
    if (r->max_tokens < 0) return core_errf(err, CORE_EINVAL, "max_tokens must be positive");
    if (r->n_shared > r->n_prompt) return core_errf(err, CORE_EINVAL, "the shared block is longer than the prompt");
    if ((int64_t)r->n_prompt + 1 > e->n_ctx)
        return core_errf(err, CORE_ERANGE, "the prompt has %zu tokens; the context holds %d", r->n_prompt, e->n_ctx);
    int rc = sample_params_check(&r->sampling, err);
    if (rc) return rc;
    const int32_t nv = engine_model_config(e)->n_vocab;
    for (size_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= nv) return core_errf(err, CORE_EINVAL, "token id %d out of range", r->prompt[i]);

    job *j = calloc(1, sizeof *j);
    if (!j) return core_errf(err, CORE_ENOMEM, "out of memory");
    j->r = *r;
    j->prompt = malloc(r->n_prompt * sizeof *j->prompt);
    j->smp = sample_new(&r->sampling, nv);
    if (!j->prompt || !j->smp) { job_free(j); return core_errf(err, CORE_ENOMEM, "out of memory"); }
    memcpy(j->prompt, r->prompt, r->n_prompt * sizeof *j->prompt);
    j->r.prompt = j->prompt;
    if (r->conv_id) snprintf(j->conv_id, sizeof j->conv_id, "%s", r->conv_id);
    for (size_t i = 0; i < r->n_stops; i++) j->stop_text[i] = strdup(r->stops[i] ? r->stops[i] : "");
    if ((rc = sample_stop_init(&j->stop, (const char *const *)j->stop_text, r->n_stops, err))) { job_free(j); return rc; }
    if (r->grammar) {
        pthread_mutex_lock(&e->vocab_mu);
        if (!e->vocab) rc = sample_vocab_new(e->tk, &e->vocab, err);
        pthread_mutex_unlock(&e->vocab_mu);
        if (!rc) rc = sample_matcher_new(r->grammar, e->vocab, r->grammar_lazy, r->thinking, &j->mt, err);
        if (rc) { job_free(j); return rc; }
    }
    j->r.grammar = NULL; /* the matcher holds the reference */
    j->r.stops = NULL;
    chat_think_init(&j->think, !r->thinking);
    tok_stream_init(&j->ts, e->tk, 0);
    j->t_submit = core_now_s();

    pthread_mutex_lock(&e->mu);
    if (e->n_queued >= e->cfg.max_queue || e->stop) {
        pthread_mutex_unlock(&e->mu);
        job_free(j);
        return core_errf(err, CORE_EFULL, "the queue is full (%d waiting): try again shortly", e->cfg.max_queue);
    }
    j->id = ++e->next_id;
    if (e->queue_tail) e->queue_tail->next = j;
    else e->queue_head = j;
    e->queue_tail = j;
    e->n_queued++;
    uint64_t id = j->id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (req_id) *req_id = id;
    return 0;
}

int engine_cancel(engine *e, uint64_t req_id) {
    int found = 0;
    pthread_mutex_lock(&e->mu);
    for (job *j = e->queue_head; j; j = j->next)
        if (j->id == req_id) { atomic_store(&j->cancel, 1); found = 1; }
    for (int i = 0; i < e->n_active; i++)
        if (e->active[i]->id == req_id) { atomic_store(&e->active[i]->cancel, 1); found = 1; }
    /* a cancelled queued job is finished by the engine thread */
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return found ? 0 : CORE_ENOTFOUND;
}

void engine_forget(engine *e, const char *conv_id) {
    pthread_mutex_lock(&e->mu);
    conv *c = conv_find(e, conv_id);
    if (c) {
        if (c->busy) c->forget = 1;
        else conv_unlink_free(e, c);
    }
    pthread_mutex_unlock(&e->mu);
}

void engine_get_metrics(engine *e, engine_metrics *m) {
    pthread_mutex_lock(&e->mu);
    *m = e->met;
    m->state = atomic_load(&e->state);
    m->queued = e->n_queued;
    m->active = e->n_running;
    m->conversations = 0;
    for (conv *c = e->convs; c; c = c->next) m->conversations += c->kv != NULL;
    m->kv_bytes = kv_held(e);
    m->kv_budget = e->cfg.kv_budget;
    m->uptime_s = core_now_s() - e->t_start;
    pthread_mutex_unlock(&e->mu);
}
