/* cpu.c -- the forward pass on the CPU: src/kern's kernels on the thread
 * pool, behind model_int.h's backend interface.
 *
 * Run state for a chunk of n_batch rows and the matmul activation buffer
 * are allocated once (model_cpu_new); a forward never allocates. The pass
 * follows SmolLM3's definition (../shared/docs/smollm3.md) line by line:
 *
 *   h = embed(token)
 *   for each layer: x = rmsnorm(h) * attn_norm
 *                   q, k, v = Wq x, Wk x, Wv x
 *                   rope(q, k) unless the layer is NoPE   (adjacent pairs)
 *                   a = softmax(q K^T / sqrt(hd)) V       (GQA, causal)
 *                   h += Wo a
 *                   x = rmsnorm(h) * ffn_norm
 *                   h += Wdown (silu(Wgate x) * Wup x)
 *   logits = output . (rmsnorm(h) * output_norm)   (output = token_embd when tied)
 *
 * Prefill runs the same code on B tokens at once: every matrix product is a
 * matrix-matrix product (kern_matmul reuses each weight block for all B
 * tokens). Attention for B tokens is split over (token, KV head) pairs on
 * the thread pool -- and, for a few rows with long contexts, over windows
 * of positions too (split-K, partial softmax states merged after, the
 * same way whatever the batch); each pair serves its query heads
 * together so each K/V row is read once
 * (kern_attn: SIMD over f16 rows, or integer dots over the 8-bit cache's
 * tiles), with an online softmax over blocks of positions so no score
 * buffer grows with the context.
 */
#include "model/model_int.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* run state for B <= n_batch rows (row-major, token-major) */
typedef struct cpu_run {
    float *x;        /* [B, n_embd] residual stream */
    float *xb;       /* [B, n_embd] normed input / product output */
    float *q;        /* [B, n_head * hd] */
    float *k;        /* [B, n_kv * hd] */
    float *v;        /* [B, n_kv * hd] */
    float *att;      /* [B, n_head * hd] attention output */
    float *hb;       /* [B, n_ff] */
    float *hb2;      /* [B, n_ff] */
    float *att_tmp;  /* [n_threads][2 * att_tmp_floats + att_q_floats] two attention states and query heads per thread */
    float *att_part; /* [att_part_n][att_tmp_floats] the windows' states of a per-window run */
    int att_part_n;
    size_t att_tmp_floats, att_q_floats;
    int att_g;     /* rows per attention group (attend) */
    int *grp_row;  /* [B] first row of each group */
    int *grp_n;    /* [B] rows of each group */
    void *work;      /* activation quantization for kern_matmul */
    model_kv **row_kv; /* [B] the cache each row belongs to */
    int *row_pos;      /* [B] the position of each row */
    float *logits1;    /* [n_vocab] decode_topk's logits */
    int32_t *row_tok;  /* [B] a mixed step's tokens, sequence after sequence */
    int *row_out;      /* [B] the rows a mixed step wants logits of */
} cpu_run;

#define RUN(m) ((cpu_run *)(m)->be_state)

/* ---- KV cache --------------------------------------------------------- */

/* Each head's K (or V) at one position is a row of f16 or f32 values, or
 * for the 8-bit cache a slot of a tile of KERN_KV_TILE positions (kern.h:
 * Q8_0 values laid out for integer dot products, 8.5 bits a value, so at
 * long contexts the cache reads are a sixth of the weights' instead of a
 * third).
 *
 * Layout: head-major, [layer][KV head][position]. Attention streams one
 * head's positions (kern_attn walks rows or tiles `step` bytes apart), so
 * each head is one contiguous run and the prefetchers see a plain
 * sequence. step: bytes of a row, or of a tile. */
static size_t kv_step(int kv_type, int hd) {
    if (kv_type == MODEL_KV_Q8) return kern_kv_q8_tile_bytes(hd);
    return (size_t)hd * (kv_type == MODEL_KV_F32 ? 4u : 2u);
}
/* Rows or tiles holding n positions */
static size_t kv_steps(int kv_type, int n) {
    return kv_type == MODEL_KV_Q8 ? (size_t)(n + KERN_KV_TILE - 1) / KERN_KV_TILE : (size_t)n;
}

/* The row of KV head h at position p of layer il; 8-bit: the tile holding p. */
static inline char *kv_at(const model_kv *kv, void *base, int il, int h, int p) {
    const size_t head = ((size_t)il * (size_t)kv->n_kv + (size_t)h) * kv->head_bytes;
    const size_t at = kv->type == MODEL_KV_Q8 ? (size_t)(p / KERN_KV_TILE) : (size_t)p;
    return (char *)base + head + at * kv->step;
}
static int kv_kern_type(const model_kv *kv) {
    return kv->type == MODEL_KV_F16 ? KERN_F16 : kv->type == MODEL_KV_Q8 ? KERN_KV_Q8 : KERN_F32;
}

/* Store one position's K or V (kv_dim floats, head after head) at p. */
static void kv_store(const model_kv *kv, void *base, int il, int p, const float *src) {
    for (int h = 0; h < kv->n_kv; h++) {
        char *dst = kv_at(kv, base, il, h, p);
        const float *x = src + (size_t)h * kv->hd;
        if (kv->type == MODEL_KV_F16) kern_f32_to_f16(x, (kern_f16 *)dst, kv->hd);
        else if (kv->type == MODEL_KV_Q8) kern_kv_q8_store(dst, p % KERN_KV_TILE, x, kv->hd, base == kv->v);
        else memcpy(dst, x, (size_t)kv->hd * sizeof(float));
    }
}

static int kv_new(model_kv *kv, core_err *err) {
    const model_config *c = &kv->m->cfg;
    kv->kv_dim = (int64_t)c->n_head_kv * c->head_dim;
    kv->n_kv = c->n_head_kv, kv->hd = c->head_dim;
    kv->step = kv_step(kv->type, c->head_dim);
    kv->head_bytes = kv_steps(kv->type, kv->n_ctx) * kv->step;
    size_t bytes = (size_t)c->n_layer * (size_t)c->n_head_kv * kv->head_bytes;
    kv->k = core_alloc_aligned(bytes, 64);
    kv->v = core_alloc_aligned(bytes, 64);
    if (!kv->k || !kv->v)
        return core_errf(err, CORE_ENOMEM, "cannot allocate a KV cache of %d positions (%.0f MiB)", kv->n_ctx,
                         2.0 * (double)bytes / (1 << 20));
    return 0;
}

static void kv_free(model_kv *kv) {
    core_free_aligned(kv->k);
    core_free_aligned(kv->v);
}

static uint64_t kv_size(const model *m, int n_ctx, int kv_type) {
    const model_config *c = &m->cfg;
    return 2ull * (uint64_t)c->n_layer * (uint64_t)c->n_head_kv * kv_steps(kv_type, n_ctx) * kv_step(kv_type, c->head_dim);
}

static int kv_copy(model_kv *dst, const model_kv *src, int n, core_err *err) {
    (void)err;
    const size_t run = kv_steps(src->type, n) * src->step;
    for (int il = 0; il < src->m->cfg.n_layer; il++)
        for (int h = 0; h < src->n_kv; h++) {
            memcpy(kv_at(dst, dst->k, il, h, 0), kv_at(src, src->k, il, h, 0), run);
            memcpy(kv_at(dst, dst->v, il, h, 0), kv_at(src, src->v, il, h, 0), run);
        }
    return 0;
}

static int kv_fill(model_kv *kv, int n, core_err *err) {
    float *rk = malloc(2 * (size_t)kv->kv_dim * sizeof(float)), *rv = rk + kv->kv_dim;
    if (!rk) return core_errf(err, CORE_ENOMEM, "out of memory");
    uint32_t x = 2463534242u;
    for (int il = 0; il < kv->m->cfg.n_layer; il++)
        for (int p = kv->len; p < n; p++) {
            for (int64_t i = 0; i < kv->kv_dim; i++) {
                float a[2];
                for (int j = 0; j < 2; j++) {
                    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
                    a[j] = ((float)(x & 0xffff) / 65536.0f - 0.5f) * 0.2f;
                }
                rk[i] = a[0], rv[i] = a[1];
            }
            kv_store(kv, kv->k, il, p, rk);
            kv_store(kv, kv->v, il, p, rv);
        }
    free(rk);
    return 0;
}

/* ---- attention -------------------------------------------------------- */

/* A row at position p attends over positions 0..p in windows of ATT_SPAN
 * positions (from 0, ATT_SPAN, 2 ATT_SPAN, ...): each window is an online
 * softmax from a fresh state, and the windows are folded left to right
 * (kern_attn_merge). Where the windows fall depends on p alone, so a
 * row's arithmetic is the same whatever rows share its step: a stream
 * alone or batched, a prompt in one chunk or many, any thread count.
 *
 * A row group is up to att_g consecutive rows of one prompt chunk (att_g *
 * group <= KERN_ATTN_MAX_G query heads): the positions before the group,
 * down to a KV tile, are read once for all of them (kern_attn takes the
 * group's heads together), then each row goes on alone over the few
 * positions after. kern_attn continued at a tile and a head taken with
 * others change no bit (test_kern), so this sharing changes nothing
 * either.
 *
 * Work items go through an atomic counter. With few (group, KV head)
 * pairs (decode) an item is one window, so both cores share even one long
 * context; it leaves its state in RUN(m)->att_part and the caller folds
 * them after the run. With many (prefill), or windows beyond att_part, an
 * item is a pair, whose thread folds the windows in its own scratch. */
typedef struct att_task {
    model *m;
    int il;
    int items;      /* windows or pairs */
    int per_window; /* items are windows (states in att_part), else pairs */
    _Atomic int next;
} att_task;

#define ATT_SPAN 256 /* positions per window (a multiple of KERN_KV_TILE) */

/* The attention output of group gi's rows for KV head kvh from its state
 * (sum, acc): acc / sum. */
static void att_out(const model *m, int gi, int kvh, const float *sum, const float *acc) {
    const cpu_run *r = RUN(m);
    const model_config *c = &m->cfg;
    const int hd = c->head_dim, group = c->n_head / c->n_head_kv;
    for (int i = 0; i < r->grp_n[gi]; i++) {
        float *out = r->att + (int64_t)(r->grp_row[gi] + i) * c->n_head * hd + (int64_t)kvh * group * hd;
        for (int g = 0; g < group; g++)
            for (int j = 0; j < hd; j++) out[g * hd + j] = acc[(i * group + g) * hd + j] / sum[i * group + g];
    }
}

/* Positions every row of group gi sees through the shared call. */
static int att_shared(const cpu_run *r, int gi) {
    return (r->row_pos[r->grp_row[gi]] + 1) & ~(KERN_KV_TILE - 1);
}

/* Windows of group gi: those of its last row. */
static int att_windows(const cpu_run *r, int gi) {
    return r->row_pos[r->grp_row[gi] + r->grp_n[gi] - 1] / ATT_SPAN + 1;
}

/* Window w of group gi for KV head kvh into the state st (max, sum, acc
 * of the group's G query heads q): the window's shared positions for all
 * of them, then each row's own positions in it. A row whose positions end
 * before the window keeps an empty state, which the fold skips. */
static void att_window(const model *m, int il, int gi, int kvh, int w, const float *q, float *st) {
    const cpu_run *r = RUN(m);
    const model_config *c = &m->cfg;
    const int hd = c->head_dim, group = c->n_head / c->n_head_kv;
    const int t0 = r->grp_row[gi], G = r->grp_n[gi] * group, n = att_shared(r, gi);
    const model_kv *kv = r->row_kv[t0];
    const float scale = 1.0f / sqrtf((float)hd);
    float *mx = st, *sum = mx + G, *acc = sum + G;
    for (int g = 0; g < G; g++) mx[g] = -INFINITY, sum[g] = 0;
    memset(acc, 0, sizeof(float) * (size_t)(G * hd));
    const int lo = w * ATT_SPAN, end = lo + ATT_SPAN, hi = CORE_MIN(end, n);
    if (hi > lo)
        kern_attn(kv_kern_type(kv), q, G, hd, kv_at(kv, kv->k, il, kvh, lo), kv_at(kv, kv->v, il, kvh, lo), kv->step,
                  hi - lo, scale, mx, sum, acc);
    for (int i = 0; i < r->grp_n[gi]; i++) { /* row i's own positions from n, in this window */
        const int a = CORE_MAX(lo, n), b = CORE_MIN(end, r->row_pos[t0 + i] + 1), g0 = i * group;
        if (b > a)
            kern_attn(kv_kern_type(kv), q + (size_t)g0 * hd, group, hd, kv_at(kv, kv->k, il, kvh, a),
                      kv_at(kv, kv->v, il, kvh, a), kv->step, b - a, scale, mx + g0, sum + g0, acc + (size_t)g0 * hd);
    }
}

/* Fold state s1 (a later window) into s0, G query heads. */
static void att_fold(int G, int hd, float *s0, const float *s1) {
    kern_attn_merge(G, hd, s0, s0 + G, s0 + 2 * G, s1, s1 + G, s1 + 2 * G);
}

/* Item it of a per-window run: its group, KV head and window. */
static void att_item(const cpu_run *r, int nkv, int it, int *gi, int *kvh, int *w) {
    int g = 0, nw = att_windows(r, 0);
    while (it >= nkv * nw) it -= nkv * nw, nw = att_windows(r, ++g);
    *gi = g, *kvh = it / nw, *w = it % nw;
}

static void attend_task(void *ctx, int ith, int nth) {
    (void)nth;
    att_task *t = ctx;
    const model *m = t->m;
    const cpu_run *r = RUN(m);
    const model_config *c = &m->cfg;
    const int hd = c->head_dim, nkv = c->n_head_kv, group = c->n_head / nkv;
    const int64_t q_dim = (int64_t)c->n_head * hd;
    float *own = r->att_tmp + (size_t)ith * (2 * r->att_tmp_floats + r->att_q_floats);
    float *win = own + r->att_tmp_floats, *qg = win + r->att_tmp_floats;
    for (;;) {
        const int it = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (it >= t->items) break;
        int gi = it / nkv, kvh = it % nkv, w = 0;
        if (t->per_window) att_item(r, nkv, it, &gi, &kvh, &w);
        const int t0 = r->grp_row[gi], R = r->grp_n[gi], G = R * group;
        /* the group's query heads side by side (one row's already are) */
        const float *q = r->q + t0 * q_dim + (int64_t)kvh * group * hd;
        if (R > 1) {
            for (int i = 0; i < R; i++) memcpy(qg + (size_t)i * group * hd, q + i * q_dim, sizeof(float) * (size_t)(group * hd));
            q = qg;
        }
        if (t->per_window) {
            att_window(m, t->il, gi, kvh, w, q, r->att_part + (size_t)it * r->att_tmp_floats);
            continue;
        }
        att_window(m, t->il, gi, kvh, 0, q, own);
        for (int wi = 1; wi < att_windows(r, gi); wi++) {
            att_window(m, t->il, gi, kvh, wi, q, win);
            att_fold(G, hd, own, win);
        }
        att_out(m, gi, kvh, own + G, own + 2 * G);
    }
}

/* Rows into groups: up to att_g consecutive positions of one cache. */
static int att_groups(cpu_run *r, int B) {
    int ng = 0;
    for (int t = 0; t < B; t++) {
        const int f = ng ? r->grp_row[ng - 1] : 0, len = ng ? r->grp_n[ng - 1] : 0;
        if (ng && len < r->att_g && r->row_kv[t] == r->row_kv[f] && r->row_pos[t] == r->row_pos[f] + len)
            r->grp_n[ng - 1]++;
        else
            r->grp_row[ng] = t, r->grp_n[ng] = 1, ng++;
    }
    return ng;
}

/* Attention of the B rows for layer il: outputs in RUN(m)->att. Items are
 * windows while the pairs are fewer than 8 per thread (enough items for
 * the counter to balance the threads) and their states fit att_part. */
static void attend(model *m, int il, int B) {
    const model_config *c = &m->cfg;
    cpu_run *r = RUN(m);
    const int hd = c->head_dim, nkv = c->n_head_kv, group = c->n_head / nkv;
    const int nth = kern_pool_threads(m->pool), n_grp = att_groups(r, B);
    int windows = 0;
    for (int g = 0; g < n_grp; g++) windows += nkv * att_windows(r, g);
    att_task at = {.m = m, .il = il};
    at.per_window = n_grp * nkv < 8 * nth && windows > n_grp * nkv && windows <= r->att_part_n;
    at.items = at.per_window ? windows : n_grp * nkv;
    atomic_init(&at.next, 0);
    kern_pool_run(m->pool, attend_task, &at);
    if (!at.per_window) return;
    float *s = r->att_part;
    for (int gi = 0; gi < n_grp; gi++) {
        const int nw = att_windows(r, gi), G = r->grp_n[gi] * group;
        for (int kvh = 0; kvh < nkv; kvh++, s += (size_t)nw * r->att_tmp_floats) {
            for (int w = 1; w < nw; w++) att_fold(G, hd, s, s + (size_t)w * r->att_tmp_floats);
            att_out(m, gi, kvh, s + G, s + 2 * G);
        }
    }
}

/* ---- forward ---------------------------------------------------------- */

static void matmul(model *m, const mat *w, const float *x, int B, float *y) {
    kern_matmul(m->pool, w->type, w->data, w->n_out, w->n_in, x, B, y, w->n_out, RUN(m)->work);
}

static void embed(const model *m, int32_t tok, float *out) {
    const kern_traits *tr = kern_get_traits(m->tok_embd.type);
    size_t row = kern_row_size(m->tok_embd.type, m->tok_embd.n_in);
    tr->dequant_row((const char *)m->tok_embd.data + (size_t)tok * row, out, m->tok_embd.n_in);
}

/* RoPE on the n_heads heads of x at position pos. The plain form (adjacent
 * pairs, no scaling: SmolLM3, most llama files) is kern_rope; the others
 * follow ggml's rope cache: angle pos * theta^(-2i/hd), divided by the
 * file's factor for frequency i (Llama 3), times the linear scale, and
 * NEOX pairs x[i] with x[i + hd/2] (Qwen). */
static void rope(const model *m, float *x, int n_heads, int pos) {
    const model_config *c = &m->cfg;
    const int hd = c->head_dim, half = hd / 2;
    if (!c->rope_neox && !m->rope_freqs && c->rope_freq_scale == 1.0f) {
        kern_rope(x, n_heads, hd, pos, c->rope_theta);
        return;
    }
    float cs[512], sn[512]; /* head_dim <= 512 (checked at load) */
    const float theta_scale = powf(c->rope_theta, -2.0f / (float)hd);
    float t = (float)pos;
    for (int i = 0; i < half; i++) {
        const float a = c->rope_freq_scale * (m->rope_freqs ? t / m->rope_freqs[i] : t);
        cs[i] = cosf(a);
        sn[i] = sinf(a);
        t *= theta_scale;
    }
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (int64_t)h * hd;
        for (int i = 0; i < half; i++) {
            const int i0 = c->rope_neox ? i : 2 * i, i1 = c->rope_neox ? i + half : 2 * i + 1;
            const float x0 = v[i0], x1 = v[i1];
            v[i0] = x0 * cs[i] - x1 * sn[i];
            v[i1] = x0 * sn[i] + x1 * cs[i];
        }
    }
}

/* B rows through all layers; row r is token tokens[r] at position
 * RUN(m)->row_pos[r] of cache RUN(m)->row_kv[r] (prefill: one cache, consecutive
 * positions; batched decode: one row per conversation). Leaves the final
 * hidden states (before output_norm) in RUN(m)->x. */
static void forward_rows(model *m, const int32_t *tokens, int B) {
    const model_config *c = &m->cfg;
    const int64_t E = c->n_embd, hd = c->head_dim;
    const int64_t q_dim = (int64_t)c->n_head * hd, kv_dim = (int64_t)c->n_head_kv * hd, F = c->n_ff;

    for (int t = 0; t < B; t++) embed(m, tokens[t], RUN(m)->x + t * E);

    for (int il = 0; il < c->n_layer; il++) {
        const layer *L = &m->layers[il];

        /* attention block */
        for (int t = 0; t < B; t++) kern_rmsnorm(RUN(m)->xb + t * E, RUN(m)->x + t * E, L->attn_norm, E, c->eps);
        matmul(m, &L->wq, RUN(m)->xb, B, RUN(m)->q);
        matmul(m, &L->wk, RUN(m)->xb, B, RUN(m)->k);
        matmul(m, &L->wv, RUN(m)->xb, B, RUN(m)->v);
        for (int t = 0; t < B; t++) {
            model_kv *kv = RUN(m)->row_kv[t];
            float *q = RUN(m)->q + t * q_dim, *k = RUN(m)->k + t * kv_dim, *v = RUN(m)->v + t * kv_dim;
            if (L->bq) {
                for (int64_t i = 0; i < q_dim; i++) q[i] += L->bq[i];
                for (int64_t i = 0; i < kv_dim; i++) k[i] += L->bk[i], v[i] += L->bv[i];
            }
            if (L->q_norm) {
                for (int h = 0; h < c->n_head; h++) kern_rmsnorm(q + h * hd, q + h * hd, L->q_norm, hd, c->eps);
                for (int h = 0; h < c->n_head_kv; h++) kern_rmsnorm(k + h * hd, k + h * hd, L->k_norm, hd, c->eps);
            }
            if (!c->nope[il]) {
                rope(m, q, c->n_head, RUN(m)->row_pos[t]);
                rope(m, k, c->n_head_kv, RUN(m)->row_pos[t]);
            }
            kv_store(kv, kv->k, il, RUN(m)->row_pos[t], RUN(m)->k + t * kv_dim);
            kv_store(kv, kv->v, il, RUN(m)->row_pos[t], RUN(m)->v + t * kv_dim);
        }
        attend(m, il, B);
        matmul(m, &L->wo, RUN(m)->att, B, RUN(m)->xb);
        for (int64_t i = 0; i < B * E; i++) RUN(m)->x[i] += RUN(m)->xb[i];

        /* feed-forward block */
        for (int t = 0; t < B; t++) kern_rmsnorm(RUN(m)->xb + t * E, RUN(m)->x + t * E, L->ffn_norm, E, c->eps);
        matmul(m, &L->gate, RUN(m)->xb, B, RUN(m)->hb);
        matmul(m, &L->up, RUN(m)->xb, B, RUN(m)->hb2);
        kern_silu_mul(RUN(m)->hb, RUN(m)->hb, RUN(m)->hb2, (int64_t)B * F);
        matmul(m, &L->down, RUN(m)->hb, B, RUN(m)->xb);
        for (int64_t i = 0; i < B * E; i++) RUN(m)->x[i] += RUN(m)->xb[i];
    }
}

/* logits for rows [r0, r0+n) of the last forward_rows into out */
static void head(model *m, int r0, int n, float *out) {
    const int64_t E = m->cfg.n_embd;
    for (int t = 0; t < n; t++) kern_rmsnorm(RUN(m)->xb + t * E, RUN(m)->x + (int64_t)(r0 + t) * E, m->out_norm, E, m->cfg.eps);
    matmul(m, &m->output, RUN(m)->xb, n, out);
}

/* logits for the given rows of the last forward_rows, gathered so the
 * head's weights are read once for all of them */
static void head_rows(model *m, const int *rows, int n, float *out) {
    const int64_t E = m->cfg.n_embd;
    for (int t = 0; t < n; t++)
        kern_rmsnorm(RUN(m)->xb + t * E, RUN(m)->x + (int64_t)rows[t] * E, m->out_norm, E, m->cfg.eps);
    matmul(m, &m->output, RUN(m)->xb, n, out);
}

static int forward(model *m, model_kv *kv, const int32_t *tokens, int n, float *logits, int all_logits,
                   const volatile int *cancel, core_err *err) {
    cpu_run *r = RUN(m);
    for (int done = 0; done < n;) {
        if (cancel && *cancel) return core_errf(err, CORE_ECANCEL, "cancelled");
        int B = CORE_MIN(m->n_batch, n - done);
        for (int t = 0; t < B; t++) { r->row_kv[t] = kv; r->row_pos[t] = kv->len + t; }
        forward_rows(m, tokens + done, B);
        kv->len += B;
        if (logits && all_logits) head(m, 0, B, logits + (size_t)done * m->cfg.n_vocab);
        else if (logits && done + B == n) head(m, B - 1, 1, logits);
        done += B;
    }
    return 0;
}

static int decode_topk(model *m, model_kv *kv, int32_t tok, int k, int32_t *ids, float *vals, core_err *err) {
    float *lg = RUN(m)->logits1;
    int rc = forward(m, kv, &tok, 1, lg, 0, NULL, err);
    if (rc) return rc;
    /* insertion into a sorted list of k: one pass, O(n) for small k */
    int have = 0;
    for (int i = 0; i < m->cfg.n_vocab; i++) {
        const float v = lg[i];
        if (have == k && !(v > vals[k - 1])) continue;
        int at = have < k ? have++ : k - 1;
        while (at > 0 && v > vals[at - 1]) { vals[at] = vals[at - 1]; ids[at] = ids[at - 1]; at--; }
        vals[at] = v;
        ids[at] = i;
    }
    return 0;
}

static int decode_batch(model *m, model_kv *const *kvs, const int32_t *tokens, int n_seq, float *logits,
                        core_err *err) {
    (void)err;
    cpu_run *r = RUN(m);
    for (int i = 0; i < n_seq; i++) r->row_kv[i] = kvs[i], r->row_pos[i] = kvs[i]->len;
    forward_rows(m, tokens, n_seq);
    for (int i = 0; i < n_seq; i++) kvs[i]->len++;
    if (logits) head(m, 0, n_seq, logits);
    return 0;
}

/* A mixed step: every sequence's rows through the layers together (rows
 * carry their own cache and position, so decode rows and a prefill chunk
 * mix freely; a chunk's rows store their K and V before attention, which
 * stops each row at its own position). */
static int forward_seqs(model *m, model_kv *const *kvs, const int32_t *const *tokens, const int *n_tok, int n_seq,
                        float *logits, core_err *err) {
    (void)err;
    cpu_run *r = RUN(m);
    int B = 0;
    for (int s = 0; s < n_seq; s++) {
        for (int t = 0; t < n_tok[s]; t++, B++) {
            r->row_kv[B] = kvs[s];
            r->row_pos[B] = kvs[s]->len + t;
            r->row_tok[B] = tokens[s][t];
        }
        r->row_out[s] = B - 1;
    }
    forward_rows(m, r->row_tok, B);
    for (int s = 0; s < n_seq; s++) kvs[s]->len += n_tok[s];
    if (logits) head_rows(m, r->row_out, n_seq, logits);
    return 0;
}

/* ---- run state -------------------------------------------------------- */

static const char *device(const model *m) { (void)m; return "cpu"; }
static int prefill_chunk(const model *m) { return m->n_batch; }

static void run_free(model *m) {
    cpu_run *r = RUN(m);
    if (!r) return;
    free(r->x); free(r->xb); free(r->q); free(r->k); free(r->v);
    free(r->att); free(r->hb); free(r->hb2); core_free_aligned(r->att_tmp); core_free_aligned(r->att_part);
    free(r->row_kv); free(r->row_pos); free(r->logits1); free(r->row_tok); free(r->row_out);
    free(r->grp_row); free(r->grp_n);
    core_free_aligned(r->work);
    free(r);
    m->be_state = NULL;
}

static const model_backend cpu_backend = {
    device, prefill_chunk, run_free, kv_size, kv_new, kv_free, kv_copy, kv_fill, forward, decode_topk, decode_batch,
    forward_seqs,
};

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

int model_cpu_new(model *m, core_err *err) {
    const model_config *c = &m->cfg;
    cpu_run *r = calloc(1, sizeof *r);
    if (!r) return core_errf(err, CORE_ENOMEM, "out of memory");
    m->be = &cpu_backend, m->be_state = r;
    const int nt = kern_pool_threads(m->pool);
    const int64_t hd = c->head_dim, q_dim = (int64_t)c->n_head * hd, kv_dim = (int64_t)c->n_head_kv * hd;
    const size_t B = (size_t)m->n_batch;
    r->x = malloc(B * c->n_embd * sizeof(float));
    r->xb = malloc(B * c->n_embd * sizeof(float));
    r->q = malloc(B * q_dim * sizeof(float));
    r->k = malloc(B * kv_dim * sizeof(float));
    r->v = malloc(B * kv_dim * sizeof(float));
    r->att = malloc(B * q_dim * sizeof(float));
    r->hb = malloc(B * c->n_ff * sizeof(float));
    r->hb2 = malloc(B * c->n_ff * sizeof(float));
    const int group = c->n_head / c->n_head_kv;
    /* online-softmax states (max, sum, acc of each query head of a row
     * group): two per thread (the fold and a window) with the group's
     * query heads, and one per window of a per-window run (64 per thread:
     * SmolLM3's 4 KV heads of a lone row have 16 windows each at 4,096
     * positions; a longer context runs by pairs, see attend()). Whole
     * cache lines each: threads update neighbouring states at every block
     * of positions. */
    r->att_g = CORE_MAX(1, KERN_ATTN_MAX_G / group);
    const size_t gh = (size_t)r->att_g * group;
    r->att_tmp_floats = (gh * hd + 2 * gh + 15) / 16 * 16;
    r->att_q_floats = gh * hd;
    r->att_tmp = core_alloc_aligned((size_t)nt * (2 * r->att_tmp_floats + r->att_q_floats) * sizeof(float), 64);
    r->grp_row = calloc(B, sizeof *r->grp_row);
    r->grp_n = calloc(B, sizeof *r->grp_n);
    r->att_part_n = 64 * nt;
    r->att_part = core_alloc_aligned((size_t)r->att_part_n * r->att_tmp_floats * sizeof(float), 64);
    r->row_kv = calloc(B, sizeof *r->row_kv);
    r->row_pos = calloc(B, sizeof *r->row_pos);
    r->logits1 = malloc((size_t)c->n_vocab * sizeof(float));
    r->row_tok = calloc(B, sizeof *r->row_tok);
    r->row_out = calloc(B, sizeof *r->row_out);
    size_t ws = kern_matmul_work_size(m->output.type, m->output.n_in, (int64_t)B);
    for (int il = 0; il < c->n_layer; il++) {
        const layer *L = &m->layers[il];
        const mat *ms[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < CORE_ARRAY_LEN(ms); i++)
            ws = max_sz(ws, kern_matmul_work_size(ms[i]->type, ms[i]->n_in, (int64_t)B));
    }
    r->work = core_alloc_aligned(ws ? ws : 64, 64);
    if (!r->x || !r->xb || !r->q || !r->k || !r->v || !r->att || !r->hb || !r->hb2 || !r->att_tmp || !r->att_part ||
        !r->work || !r->row_kv || !r->row_pos || !r->logits1 || !r->row_tok || !r->row_out || !r->grp_row || !r->grp_n)
        return core_errf(err, CORE_ENOMEM, "out of memory for run state (batch %d)", m->n_batch);
    return 0;
}
