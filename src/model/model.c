/* model.c -- SmolLM3 forward pass on the CPU.
 *
 * The story: model_load() reads the hyperparameters from the GGUF, checks
 * them (head counts divide, head_dim, RoPE covers the head, the NoPE rule),
 * then finds every tensor by name and checks its type and shape, keeping a
 * pointer into the mapping. Nothing is copied. Run state for a chunk of
 * n_batch tokens and the matmul activation buffer are allocated once here;
 * model_forward() never allocates.
 *
 * The forward pass follows docs/smollm3.md line by line:
 *
 *   h = embed(token)
 *   for each layer: x = rmsnorm(h) * attn_norm
 *                   q, k, v = Wq x, Wk x, Wv x
 *                   rope(q, k) unless the layer is NoPE   (adjacent pairs)
 *                   a = softmax(q K^T / sqrt(hd)) V       (GQA, causal)
 *                   h += Wo a
 *                   x = rmsnorm(h) * ffn_norm
 *                   h += Wdown (silu(Wgate x) * Wup x)
 *   logits = token_embd . (rmsnorm(h) * output_norm)       (tied head)
 *
 * Prefill runs the same code on B tokens at once: every matrix product is a
 * matrix-matrix product (kern_matmul reuses each weight block for all B
 * tokens). Attention for B tokens is split over (token, KV head) pairs on
 * the thread pool -- and, for a few rows with long contexts, over ranges
 * of positions too (split-K, partial softmax states merged after); each
 * pair serves its query heads together so each K/V row is read once
 * (kern_attn: SIMD over f16 rows, or integer dots over the 8-bit cache's
 * tiles), with an online softmax over blocks of positions so no score
 * buffer grows with the context.
 */
#include "model.h"
#include "gpu_model.h" /* GPU (issue 12): the CUDA hooks below are marked GPU */

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mat {
    const void *data; /* view into the mapping */
    int type;
    int64_t n_in;  /* row length (ne0) */
    int64_t n_out; /* rows (ne1) */
} mat;

typedef struct layer {
    const float *attn_norm; /* [n_embd] */
    mat wq;                 /* [n_embd] -> [n_head * hd] */
    mat wk;                 /* [n_embd] -> [n_kv * hd] */
    mat wv;                 /* [n_embd] -> [n_kv * hd] */
    mat wo;                 /* [n_head * hd] -> [n_embd] */
    const float *ffn_norm;  /* [n_embd] */
    mat gate;               /* [n_embd] -> [n_ff] */
    mat up;                 /* [n_embd] -> [n_ff] */
    mat down;               /* [n_ff] -> [n_embd] */
} layer;

struct model {
    model_config cfg;
    const gguf *g;
    mat tok_embd;            /* [n_embd] x n_vocab rows */
    mat output;              /* the head: tok_embd when tied */
    const float *out_norm;   /* [n_embd] */
    layer *layers;           /* [n_layer] */
    kern_pool *pool;
    int n_batch;
    /* run state for B <= n_batch tokens (row-major, token-major) */
    float *x;        /* [B, n_embd] residual stream */
    float *xb;       /* [B, n_embd] normed input / product output */
    float *q;        /* [B, n_head * hd] */
    float *k;        /* [B, n_kv * hd] */
    float *v;        /* [B, n_kv * hd] */
    float *att;      /* [B, n_head * hd] attention output */
    float *hb;       /* [B, n_ff] */
    float *hb2;      /* [B, n_ff] */
    float *att_tmp;  /* [n_threads][att_tmp_floats] attention state per thread */
    float *att_part; /* [16 * n_threads][att_tmp_floats] split-K partial states */
    size_t att_tmp_floats;
    void *work;      /* activation quantization for kern_matmul */
    size_t work_size;
    model_kv **row_kv; /* [B] the cache each row belongs to */
    int *row_pos;      /* [B] the position of each row */
    float *logits1;    /* [n_vocab] model_decode_topk's logits on the CPU */
    model_gpu *gpu;    /* GPU: non-NULL when the forward runs on CUDA */
};

struct model_kv {
    const model *m;
    int n_ctx;
    int len;
    int type;          /* MODEL_KV_F16 | MODEL_KV_F32 | MODEL_KV_Q8 */
    size_t step;       /* bytes of one head's K (or V) row at one position; 8-bit: of one tile */
    size_t head_bytes; /* bytes of one head's run of n_ctx positions */
    int64_t kv_dim;    /* n_kv * hd */
    int n_kv, hd;
    void *k;           /* [n_layer][n_kv][n_ctx] rows (or tiles): each head's positions in a run */
    void *v;           /* same */
    void *gpu;         /* GPU: the device cache (k and v are NULL then) */
};

/* ---- loading ---------------------------------------------------------- */

static int get_u32_key(const gguf *g, const char *arch, const char *suffix, uint32_t *out, int required,
                       core_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_u32(g, key, out, err);
    if (rc == CORE_ENOTFOUND && !required) return CORE_ENOTFOUND;
    if (rc) return core_errf(err, rc, "%s: %s", gguf_name(g), err ? err->msg : "missing key");
    return 0;
}

static int get_f32_key(const gguf *g, const char *arch, const char *suffix, float *out, float dflt,
                       core_err *err) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    int rc = gguf_get_f32(g, key, out, err);
    if (rc == CORE_ENOTFOUND) { *out = dflt; return 0; }
    if (rc) return core_errf(err, rc, "%s: %s", gguf_name(g), err ? err->msg : "bad key");
    return 0;
}

static int read_config(const gguf *g, model_config *c, core_err *err) {
    gguf_str arch;
    memset(c, 0, sizeof *c);
    if (gguf_get_str(g, "general.architecture", &arch, err))
        return core_errf(err, CORE_EFORMAT, "%s: no general.architecture key", gguf_name(g));
    if (arch.len >= sizeof c->arch) return core_errf(err, CORE_EUNSUP, "%s: architecture name too long", gguf_name(g));
    memcpy(c->arch, arch.ptr, arch.len);
    c->arch[arch.len] = 0;
    int smollm3 = !strcmp(c->arch, "smollm3");
    if (!smollm3 && strcmp(c->arch, "llama"))
        return core_errf(err, CORE_EUNSUP, "%s: architecture '%s' is not supported (want smollm3)", gguf_name(g), c->arch);

    uint32_t v;
    int rc;
#define REQ(suffix, field)                                                  \
    if ((rc = get_u32_key(g, c->arch, suffix, &v, 1, err))) return rc;    \
    c->field = (int)v;
    REQ("block_count", n_layer);
    REQ("embedding_length", n_embd);
    REQ("feed_forward_length", n_ff);
    REQ("attention.head_count", n_head);
    REQ("context_length", n_ctx_train);
#undef REQ
    c->n_head_kv = c->n_head;
    if (get_u32_key(g, c->arch, "attention.head_count_kv", &v, 0, err) == 0) c->n_head_kv = (int)v;
    if (c->n_layer < 1 || c->n_layer > MODEL_MAX_LAYERS)
        return core_errf(err, CORE_ERANGE, "%s: block_count %d out of range 1..%d", gguf_name(g), c->n_layer, MODEL_MAX_LAYERS);
    if (c->n_embd < 1 || c->n_embd > 65536 || c->n_ff < 1 || c->n_ff > 1 << 20)
        return core_errf(err, CORE_ERANGE, "%s: embedding_length %d / feed_forward_length %d out of range",
                         gguf_name(g), c->n_embd, c->n_ff);
    if (c->n_head < 1 || c->n_head_kv < 1 || c->n_head % c->n_head_kv)
        return core_errf(err, CORE_EFORMAT, "%s: head_count %d is not a multiple of head_count_kv %d",
                         gguf_name(g), c->n_head, c->n_head_kv);
    if (c->n_embd % c->n_head)
        return core_errf(err, CORE_EFORMAT, "%s: embedding_length %d not divisible by head_count %d",
                         gguf_name(g), c->n_embd, c->n_head);
    c->head_dim = c->n_embd / c->n_head;
    if (get_u32_key(g, c->arch, "attention.key_length", &v, 0, err) == 0 && (int)v != c->head_dim)
        return core_errf(err, CORE_EUNSUP, "%s: key_length %u differs from embedding/heads %d", gguf_name(g), v, c->head_dim);
    if (c->head_dim % 2) return core_errf(err, CORE_EFORMAT, "%s: head_dim %d is odd", gguf_name(g), c->head_dim);
    if (get_u32_key(g, c->arch, "rope.dimension_count", &v, 0, err) == 0 && (int)v != c->head_dim)
        return core_errf(err, CORE_EUNSUP, "%s: rope.dimension_count %u must equal head_dim %d (partial RoPE unsupported)",
                         gguf_name(g), v, c->head_dim);
    if (c->n_ctx_train < 1) return core_errf(err, CORE_ERANGE, "%s: context_length %d", gguf_name(g), c->n_ctx_train);
    if ((rc = get_f32_key(g, c->arch, "rope.freq_base", &c->rope_theta, 10000.0f, err))) return rc;
    if ((rc = get_f32_key(g, c->arch, "attention.layer_norm_rms_epsilon", &c->eps, 1e-5f, err))) return rc;
    if (!(c->rope_theta > 0) || !(c->eps > 0) || c->eps > 1)
        return core_errf(err, CORE_ERANGE, "%s: rope.freq_base %g / rms epsilon %g out of range", gguf_name(g),
                         c->rope_theta, c->eps);
    /* The NoPE rule is not stored in the file: SmolLM3 skips RoPE on every
     * 4th layer (3, 7, 11, ...). Plain llama files rotate every layer. */
    for (int il = 0; il < c->n_layer; il++) c->nope[il] = smollm3 && (il + 1) % 4 == 0;
    return 0;
}

/* Find a tensor, check its type is one we can multiply and its shape. */
static int bind(const gguf *g, const char *name, int64_t ne0, int64_t ne1, int need_f32, mat *out, core_err *err) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t) return core_errf(err, CORE_ENOTFOUND, "%s: missing tensor %s", gguf_name(g), name);
    if ((int64_t)t->ne[0] != ne0 || (int64_t)t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return core_errf(err, CORE_EFORMAT, "%s: tensor %s has shape [%llu, %llu, %llu, %llu], want [%lld, %lld]",
                         gguf_name(g), name, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                         (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], (long long)ne0, (long long)ne1);
    if (need_f32 && t->type != KERN_F32)
        return core_errf(err, CORE_EUNSUP, "%s: tensor %s has type %s, want F32", gguf_name(g), name,
                         gguf_type_name(t->type) ? gguf_type_name(t->type) : "unknown");
    const kern_traits *tr = kern_get_traits((int)t->type);
    if (!t->data || !tr || !tr->vec_dot || !tr->dequant_row)
        return core_errf(err, CORE_EUNSUP, "%s: tensor %s has unsupported type %s (%u)", gguf_name(g), name,
                         gguf_type_name(t->type) ? gguf_type_name(t->type) : "unknown", t->type);
    if (ne0 % tr->blck)
        return core_errf(err, CORE_EFORMAT, "%s: tensor %s row of %lld is not a multiple of the %s block",
                         gguf_name(g), name, (long long)ne0, tr->name);
    out->data = t->data;
    out->type = (int)t->type;
    out->n_in = ne0;
    out->n_out = ne1;
    return 0;
}

static int bind_norm(const gguf *g, const char *name, int64_t n, const float **out, core_err *err) {
    mat m;
    int rc = bind(g, name, n, 1, 1, &m, err);
    if (rc) return rc;
    *out = m.data;
    return 0;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

int model_load(model **out, const gguf *g, const model_opts *opts, core_err *err) {
    *out = NULL;
    model *m = calloc(1, sizeof *m);
    if (!m) return core_errf(err, CORE_ENOMEM, "out of memory");
    int rc = read_config(g, &m->cfg, err);
    if (rc) goto fail;
    model_config *c = &m->cfg;
    m->g = g;

    /* The vocabulary size is the embedding's row count. */
    const gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    if (!te) { rc = core_errf(err, CORE_ENOTFOUND, "%s: missing tensor token_embd.weight", gguf_name(g)); goto fail; }
    if (te->ne[1] < 1 || te->ne[1] > (1u << 24)) {
        rc = core_errf(err, CORE_EFORMAT, "%s: token_embd.weight has %llu rows", gguf_name(g), (unsigned long long)te->ne[1]);
        goto fail;
    }
    c->n_vocab = (int)te->ne[1];
    if ((rc = bind(g, "token_embd.weight", c->n_embd, c->n_vocab, 0, &m->tok_embd, err))) goto fail;
    if ((rc = bind_norm(g, "output_norm.weight", c->n_embd, &m->out_norm, err))) goto fail;
    if (gguf_find_tensor(g, "output.weight")) {
        if ((rc = bind(g, "output.weight", c->n_embd, c->n_vocab, 0, &m->output, err))) goto fail;
    } else {
        m->output = m->tok_embd; /* tied head */
    }

    int64_t hd = c->head_dim, q_dim = (int64_t)c->n_head * hd, kv_dim = (int64_t)c->n_head_kv * hd;
    m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
    if (!m->layers) { rc = core_errf(err, CORE_ENOMEM, "out of memory"); goto fail; }
    for (int il = 0; il < c->n_layer; il++) {
        layer *L = &m->layers[il];
        char name[96];
#define T(field, suffix, ne0, ne1)                                            \
    snprintf(name, sizeof name, "blk.%d." suffix ".weight", il);              \
    if ((rc = bind(g, name, ne0, ne1, 0, &L->field, err))) goto fail;
#define N(field, suffix)                                                      \
    snprintf(name, sizeof name, "blk.%d." suffix ".weight", il);              \
    if ((rc = bind_norm(g, name, c->n_embd, &L->field, err))) goto fail;
        N(attn_norm, "attn_norm");
        T(wq, "attn_q", c->n_embd, q_dim);
        T(wk, "attn_k", c->n_embd, kv_dim);
        T(wv, "attn_v", c->n_embd, kv_dim);
        T(wo, "attn_output", q_dim, c->n_embd);
        N(ffn_norm, "ffn_norm");
        T(gate, "ffn_gate", c->n_embd, c->n_ff);
        T(up, "ffn_up", c->n_embd, c->n_ff);
        T(down, "ffn_down", c->n_ff, c->n_embd);
#undef T
#undef N
    }

    int nt = opts && opts->n_threads > 0 ? opts->n_threads : core_ncpu();
    m->n_batch = opts && opts->n_batch > 0 ? opts->n_batch : 256;
    m->pool = kern_pool_new(nt);
    if (!m->pool) { rc = core_errf(err, CORE_ENOMEM, "cannot start %d threads", nt); goto fail; }

    size_t B = (size_t)m->n_batch;
    m->x = malloc(B * c->n_embd * sizeof(float));
    m->xb = malloc(B * c->n_embd * sizeof(float));
    m->q = malloc(B * q_dim * sizeof(float));
    m->k = malloc(B * kv_dim * sizeof(float));
    m->v = malloc(B * kv_dim * sizeof(float));
    m->att = malloc(B * q_dim * sizeof(float));
    m->hb = malloc(B * c->n_ff * sizeof(float));
    m->hb2 = malloc(B * c->n_ff * sizeof(float));
    int group = c->n_head / c->n_head_kv;
    /* one online-softmax state (max, sum, acc of each query head of a
     * group): per thread, and per split-K item (fewer than 16 per thread,
     * see attend()). Whole cache lines each: threads update neighbouring
     * states at every block of positions. */
    m->att_tmp_floats = ((size_t)(group * hd + 2 * group) + 15) / 16 * 16;
    m->att_tmp = core_alloc_aligned((size_t)nt * m->att_tmp_floats * sizeof(float), 64);
    m->att_part = core_alloc_aligned((size_t)16 * nt * m->att_tmp_floats * sizeof(float), 64);
    m->row_kv = calloc(B, sizeof *m->row_kv);
    m->row_pos = calloc(B, sizeof *m->row_pos);
    m->logits1 = malloc((size_t)c->n_vocab * sizeof(float));
    size_t ws = 0;
    for (int il = 0; il < c->n_layer; il++) {
        layer *L = &m->layers[il];
        const mat *ms[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < CORE_ARRAY_LEN(ms); i++)
            ws = max_sz(ws, kern_matmul_work_size(ms[i]->type, ms[i]->n_in, (int64_t)B));
    }
    ws = max_sz(ws, kern_matmul_work_size(m->output.type, m->output.n_in, (int64_t)B));
    m->work_size = ws;
    m->work = core_alloc_aligned(ws ? ws : 64, 64);
    if (!m->x || !m->xb || !m->q || !m->k || !m->v || !m->att || !m->hb || !m->hb2 || !m->att_tmp || !m->att_part || !m->work || !m->row_kv || !m->row_pos || !m->logits1) {
        rc = core_errf(err, CORE_ENOMEM, "out of memory for run state (batch %d)", m->n_batch);
        goto fail;
    }
    /* GPU */
    if ((rc = model_gpu_new(&m->gpu, g, &m->cfg, opts ? opts->gpu : MODEL_GPU_OFF, m->n_batch, err))) goto fail;
    *out = m;
    return 0;
fail:
    model_free(m);
    return rc;
}

void model_free(model *m) {
    if (!m) return;
    model_gpu_free(m->gpu); /* GPU */
    kern_pool_free(m->pool);
    free(m->layers);
    free(m->x); free(m->xb); free(m->q); free(m->k); free(m->v);
    free(m->att); free(m->hb); free(m->hb2); core_free_aligned(m->att_tmp); core_free_aligned(m->att_part);
    free(m->row_kv); free(m->row_pos); free(m->logits1);
    core_free_aligned(m->work);
    free(m);
}

const model_config *model_get_config(const model *m) { return &m->cfg; }

int model_set_rope_layer(model *m, int il, int use_rope) {
    if (il < 0 || il >= m->cfg.n_layer) return CORE_ERANGE;
    m->cfg.nope[il] = !use_rope;
    return 0;
}
int model_threads(const model *m) { return kern_pool_threads(m->pool); }
const char *model_device(const model *m) { return model_gpu_device(m->gpu); } /* GPU */
int model_prefill_chunk(const model *m) { return m->gpu ? model_gpu_batch(m->gpu) : m->n_batch; } /* GPU */
kern_pool *model_pool(model *m) { return m->pool; }

static uint64_t mat_bytes(const mat *w) { return (uint64_t)kern_row_size(w->type, w->n_in) * (uint64_t)w->n_out; }

uint64_t model_weight_bytes(const model *m) {
    uint64_t b = mat_bytes(&m->output) + kern_row_size(m->tok_embd.type, m->tok_embd.n_in);
    for (int il = 0; il < m->cfg.n_layer; il++) {
        const layer *L = &m->layers[il];
        b += mat_bytes(&L->wq) + mat_bytes(&L->wk) + mat_bytes(&L->wv) + mat_bytes(&L->wo) + mat_bytes(&L->gate) +
             mat_bytes(&L->up) + mat_bytes(&L->down) + 2 * (uint64_t)m->cfg.n_embd * 4;
    }
    return b;
}

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

int model_kv_new(model_kv **out, const model *m, int n_ctx, int kv_type, core_err *err) {
    *out = NULL;
    const model_config *c = &m->cfg;
    if (n_ctx <= 0) n_ctx = 4096;
    if (n_ctx > c->n_ctx_train) n_ctx = c->n_ctx_train;
    if (kv_type != MODEL_KV_F16 && kv_type != MODEL_KV_F32 && kv_type != MODEL_KV_Q8)
        return core_errf(err, CORE_EINVAL, "unknown KV cache type %d", kv_type);
    if (kv_type == MODEL_KV_Q8 && c->head_dim % 32)
        return core_errf(err, CORE_EUNSUP, "an 8-bit KV cache needs head_dim %% 32 == 0 (it is %d)", c->head_dim);
    model_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return core_errf(err, CORE_ENOMEM, "out of memory");
    kv->m = m;
    kv->n_ctx = n_ctx;
    kv->type = kv_type;
    kv->kv_dim = (int64_t)c->n_head_kv * c->head_dim;
    kv->n_kv = c->n_head_kv, kv->hd = c->head_dim;
    kv->step = kv_step(kv_type, c->head_dim);
    kv->head_bytes = kv_steps(kv_type, n_ctx) * kv->step;
    if (m->gpu) { /* GPU */
        int rc = model_gpu_kv_new(m->gpu, n_ctx, &kv->gpu, err);
        if (rc) { free(kv); return rc; }
        *out = kv;
        return 0;
    }
    size_t bytes = (size_t)c->n_layer * (size_t)c->n_head_kv * kv->head_bytes;
    kv->k = core_alloc_aligned(bytes, 64);
    kv->v = core_alloc_aligned(bytes, 64);
    if (!kv->k || !kv->v) {
        model_kv_free(kv);
        return core_errf(err, CORE_ENOMEM, "cannot allocate a KV cache of %d positions (%.0f MiB)", n_ctx,
                         2.0 * (double)bytes / (1 << 20));
    }
    *out = kv;
    return 0;
}

void model_kv_free(model_kv *kv) {
    if (!kv) return;
    model_gpu_kv_free(kv->gpu); /* GPU */
    core_free_aligned(kv->k);
    core_free_aligned(kv->v);
    free(kv);
}

int model_kv_ctx(const model_kv *kv) { return kv->n_ctx; }
int model_kv_len(const model_kv *kv) { return kv->len; }
void model_kv_truncate(model_kv *kv, int n) {
    if (n >= 0 && n < kv->len) kv->len = n;
}

uint64_t model_kv_size(const model *m, int n_ctx, int kv_type) {
    const model_config *c = &m->cfg;
    if (m->gpu) kv_type = MODEL_KV_F16; /* GPU: the device cache is f16 */
    return 2ull * (uint64_t)c->n_layer * (uint64_t)c->n_head_kv * kv_steps(kv_type, n_ctx) * kv_step(kv_type, c->head_dim);
}

uint64_t model_kv_bytes(const model_kv *kv) { return model_kv_size(kv->m, kv->n_ctx, kv->type); }

int model_kv_copy_prefix(model_kv *dst, const model_kv *src, int n, core_err *err) {
    if (dst->m != src->m || dst->type != src->type)
        return core_errf(err, CORE_EINVAL, "KV caches of different models or types");
    if (n < 0 || n > src->len || n > dst->n_ctx)
        return core_errf(err, CORE_ERANGE, "cannot copy %d positions (source has %d, room for %d)", n, src->len, dst->n_ctx);
    if (src->gpu) { /* GPU */
        int rc = model_gpu_kv_copy(dst->gpu, src->gpu, n, err);
        if (!rc) dst->len = n;
        return rc;
    }
    const size_t run = kv_steps(src->type, n) * src->step;
    for (int il = 0; il < src->m->cfg.n_layer; il++)
        for (int h = 0; h < src->n_kv; h++) {
            memcpy(kv_at(dst, dst->k, il, h, 0), kv_at(src, src->k, il, h, 0), run);
            memcpy(kv_at(dst, dst->v, il, h, 0), kv_at(src, src->v, il, h, 0), run);
        }
    dst->len = n;
    return 0;
}

int model_kv_fill_synthetic(model_kv *kv, int n, core_err *err) {
    if (n < kv->len || n > kv->n_ctx) return core_errf(err, CORE_ERANGE, "cannot fill to %d (len %d, ctx %d)", n, kv->len, kv->n_ctx);
    if (kv->gpu) { /* GPU */
        int rc = model_gpu_kv_fill(kv->gpu, kv->len, n, err);
        if (!rc) kv->len = n;
        return rc;
    }
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
    kv->len = n;
    return 0;
}

/* ---- attention -------------------------------------------------------- */

/* Work items are (row, KV head, position range) triples handed out through
 * an atomic counter. With few rows (decode) each pair's positions are cut
 * into nsplit ranges (split-K) so both cores share even one long context;
 * each range leaves its online-softmax state in m->att_part and the caller
 * merges them after the run. With many rows (prefill) nsplit is 1 and a
 * thread finishes its pair in its own scratch. */
typedef struct att_task {
    model *m;
    int il;
    int B;
    int nsplit;
    _Atomic int next;
} att_task;

#define ATT_SPLIT_MIN 256 /* positions per split-K range, at least */

/* The attention output of a group of query heads: acc / sum. */
static void att_out(float *out, const float *acc, const float *sum, int group, int hd) {
    for (int g = 0; g < group; g++)
        for (int i = 0; i < hd; i++) out[g * hd + i] = acc[g * hd + i] / sum[g];
}

static void attend_task(void *ctx, int ith, int nth) {
    (void)nth;
    att_task *t = ctx;
    const model *m = t->m;
    const model_config *c = &m->cfg;
    const int hd = c->head_dim, nkv = c->n_head_kv, group = c->n_head / nkv, ns = t->nsplit;
    const int64_t q_dim = (int64_t)c->n_head * hd;
    const float scale = 1.0f / sqrtf((float)hd);
    const int items = t->B * nkv * ns;
    for (;;) {
        const int it = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed);
        if (it >= items) break;
        const int tok = it / (nkv * ns), kvh = it / ns % nkv, sp = it % ns;
        const model_kv *kv = m->row_kv[tok];
        const int n = m->row_pos[tok] + 1;
        /* ranges start on a tile (the 8-bit cache is read a tile at a time) */
        const int lo = (int)((int64_t)n * sp / ns) & ~(KERN_KV_TILE - 1);
        const int hi = sp == ns - 1 ? n : (int)((int64_t)n * (sp + 1) / ns) & ~(KERN_KV_TILE - 1);
        float *st = ns == 1 ? m->att_tmp + (size_t)ith * m->att_tmp_floats : m->att_part + (size_t)it * m->att_tmp_floats;
        float *mx = st, *sum = mx + group, *acc = sum + group; /* state: max, sum, acc */
        for (int g = 0; g < group; g++) mx[g] = -INFINITY, sum[g] = 0;
        memset(acc, 0, sizeof(float) * (size_t)(group * hd));
        kern_attn(kv_kern_type(kv), m->q + tok * q_dim + (int64_t)kvh * group * hd, group, hd,
                  kv_at(kv, kv->k, t->il, kvh, lo), kv_at(kv, kv->v, t->il, kvh, lo), kv->step, hi - lo, scale, mx, sum,
                  acc);
        if (ns == 1) att_out(m->att + tok * q_dim + (int64_t)kvh * group * hd, acc, sum, group, hd);
    }
}

/* Attention of the B rows for layer il: outputs in m->att. */
static void attend(model *m, int il, int B) {
    const model_config *c = &m->cfg;
    const int hd = c->head_dim, nkv = c->n_head_kv, group = c->n_head / nkv;
    const int nth = kern_pool_threads(m->pool), pairs = B * nkv;
    int maxn = 0;
    for (int t = 0; t < B; t++) maxn = CORE_MAX(maxn, m->row_pos[t] + 1);
    /* enough items for the counter to balance the threads (8 per thread),
     * but ranges of at least ATT_SPLIT_MIN positions */
    int ns = 1;
    if (pairs < 8 * nth) ns = CORE_MAX(1, CORE_MIN((8 * nth + pairs - 1) / pairs, maxn / ATT_SPLIT_MIN));
    att_task at = {.m = m, .il = il, .B = B, .nsplit = ns};
    atomic_init(&at.next, 0);
    kern_pool_run(m->pool, attend_task, &at);
    if (ns == 1) return;
    const int64_t q_dim = (int64_t)c->n_head * hd;
    for (int p = 0; p < pairs; p++) {
        float *s0 = m->att_part + (size_t)p * ns * m->att_tmp_floats;
        for (int sp = 1; sp < ns; sp++) {
            const float *s1 = s0 + (size_t)sp * m->att_tmp_floats;
            kern_attn_merge(group, hd, s0, s0 + group, s0 + 2 * group, s1, s1 + group, s1 + 2 * group);
        }
        att_out(m->att + (int64_t)(p / nkv) * q_dim + (int64_t)(p % nkv) * group * hd, s0 + 2 * group, s0 + group, group, hd);
    }
}

/* ---- forward ---------------------------------------------------------- */

static void matmul(model *m, const mat *w, const float *x, int B, float *y) {
    kern_matmul(m->pool, w->type, w->data, w->n_out, w->n_in, x, B, y, w->n_out, m->work);
}

static void embed(const model *m, int32_t tok, float *out) {
    const kern_traits *tr = kern_get_traits(m->tok_embd.type);
    size_t row = kern_row_size(m->tok_embd.type, m->tok_embd.n_in);
    tr->dequant_row((const char *)m->tok_embd.data + (size_t)tok * row, out, m->tok_embd.n_in);
}

/* B rows through all layers; row r is token tokens[r] at position
 * m->row_pos[r] of cache m->row_kv[r] (prefill: one cache, consecutive
 * positions; batched decode: one row per conversation). Leaves the final
 * hidden states (before output_norm) in m->x. */
static void forward_rows(model *m, const int32_t *tokens, int B) {
    const model_config *c = &m->cfg;
    const int64_t E = c->n_embd, hd = c->head_dim;
    const int64_t q_dim = (int64_t)c->n_head * hd, kv_dim = (int64_t)c->n_head_kv * hd, F = c->n_ff;

    for (int t = 0; t < B; t++) embed(m, tokens[t], m->x + t * E);

    for (int il = 0; il < c->n_layer; il++) {
        const layer *L = &m->layers[il];

        /* attention block */
        for (int t = 0; t < B; t++) kern_rmsnorm(m->xb + t * E, m->x + t * E, L->attn_norm, E, c->eps);
        matmul(m, &L->wq, m->xb, B, m->q);
        matmul(m, &L->wk, m->xb, B, m->k);
        matmul(m, &L->wv, m->xb, B, m->v);
        for (int t = 0; t < B; t++) {
            model_kv *kv = m->row_kv[t];
            if (!c->nope[il]) {
                kern_rope(m->q + t * q_dim, c->n_head, hd, m->row_pos[t], c->rope_theta);
                kern_rope(m->k + t * kv_dim, c->n_head_kv, hd, m->row_pos[t], c->rope_theta);
            }
            kv_store(kv, kv->k, il, m->row_pos[t], m->k + t * kv_dim);
            kv_store(kv, kv->v, il, m->row_pos[t], m->v + t * kv_dim);
        }
        attend(m, il, B);
        matmul(m, &L->wo, m->att, B, m->xb);
        for (int64_t i = 0; i < B * E; i++) m->x[i] += m->xb[i];

        /* feed-forward block */
        for (int t = 0; t < B; t++) kern_rmsnorm(m->xb + t * E, m->x + t * E, L->ffn_norm, E, c->eps);
        matmul(m, &L->gate, m->xb, B, m->hb);
        matmul(m, &L->up, m->xb, B, m->hb2);
        kern_silu_mul(m->hb, m->hb, m->hb2, (int64_t)B * F);
        matmul(m, &L->down, m->hb, B, m->xb);
        for (int64_t i = 0; i < B * E; i++) m->x[i] += m->xb[i];
    }
}

static int check_tokens(const model *m, const int32_t *tokens, int n, core_err *err) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.n_vocab)
            return core_errf(err, CORE_ERANGE, "token id %d out of range 0..%d", tokens[i], m->cfg.n_vocab - 1);
    return 0;
}

/* logits for rows [r0, r0+n) of the last forward_rows into out */
static void head(model *m, int r0, int n, float *out) {
    const int64_t E = m->cfg.n_embd;
    for (int t = 0; t < n; t++) kern_rmsnorm(m->xb + t * E, m->x + (int64_t)(r0 + t) * E, m->out_norm, E, m->cfg.eps);
    matmul(m, &m->output, m->xb, n, out);
}

/* What every forward checks before it runs n tokens on kv. */
static int check_forward(const model *m, const model_kv *kv, const int32_t *tokens, int n, core_err *err) {
    if (n <= 0) return core_errf(err, CORE_EINVAL, "no tokens to run");
    if (kv->m != m) return core_errf(err, CORE_EINVAL, "KV cache belongs to another model");
    if (n > kv->n_ctx - kv->len)
        return core_errf(err, CORE_EFULL, "%d tokens do not fit: context %d, %d used", n, kv->n_ctx, kv->len);
    return check_tokens(m, tokens, n, err);
}

int model_forward(model *m, model_kv *kv, const int32_t *tokens, int n, float *logits, int all_logits,
                  const volatile int *cancel, core_err *err) {
    const model_config *c = &m->cfg;
    int rc = check_forward(m, kv, tokens, n, err);
    if (rc) return rc;
    if (kv->gpu) return model_gpu_forward(m->gpu, kv->gpu, &kv->len, tokens, n, logits, all_logits, cancel, err); /* GPU */

    for (int done = 0; done < n;) {
        if (cancel && *cancel) return core_errf(err, CORE_ECANCEL, "cancelled");
        int B = CORE_MIN(m->n_batch, n - done);
        for (int t = 0; t < B; t++) { m->row_kv[t] = kv; m->row_pos[t] = kv->len + t; }
        forward_rows(m, tokens + done, B);
        kv->len += B;
        if (logits && all_logits) head(m, 0, B, logits + (size_t)done * c->n_vocab);
        else if (logits && done + B == n) head(m, B - 1, 1, logits);
        done += B;
    }
    return 0;
}

int model_decode_topk(model *m, model_kv *kv, int32_t tok, int k, int32_t *ids, float *vals, core_err *err) {
    if (k < 1 || k > 64 || k > m->cfg.n_vocab) return core_errf(err, CORE_EINVAL, "top-k of %d (1..64)", k);
    if (kv->gpu) { /* GPU */
        int rc = check_forward(m, kv, &tok, 1, err);
        return rc ? rc : model_gpu_decode_topk(m->gpu, kv->gpu, &kv->len, tok, k, ids, vals, err);
    }
    int rc = model_forward(m, kv, &tok, 1, m->logits1, 0, NULL, err);
    if (rc) return rc;
    /* insertion into a sorted list of k: one pass, O(n) for small k */
    int have = 0;
    for (int i = 0; i < m->cfg.n_vocab; i++) {
        const float v = m->logits1[i];
        if (have == k && !(v > vals[k - 1])) continue;
        int at = have < k ? have++ : k - 1;
        while (at > 0 && v > vals[at - 1]) { vals[at] = vals[at - 1]; ids[at] = ids[at - 1]; at--; }
        vals[at] = v;
        ids[at] = i;
    }
    return 0;
}

int model_decode_batch(model *m, model_kv *const *kvs, const int32_t *tokens, int n_seq, float *logits,
                       core_err *err) {
    if (n_seq <= 0 || n_seq > m->n_batch)
        return core_errf(err, CORE_EINVAL, "batch of %d sequences (1..%d)", n_seq, m->n_batch);
    int rc = check_tokens(m, tokens, n_seq, err);
    if (rc) return rc;
    for (int r = 0; r < n_seq; r++) {
        if (kvs[r]->m != m) return core_errf(err, CORE_EINVAL, "KV cache belongs to another model");
        if (kvs[r]->len >= kvs[r]->n_ctx)
            return core_errf(err, CORE_EFULL, "sequence %d: context of %d is full", r, kvs[r]->n_ctx);
        for (int q = 0; q < r; q++)
            if (kvs[q] == kvs[r]) return core_errf(err, CORE_EINVAL, "one KV cache twice in a batch");
        m->row_kv[r] = kvs[r];
        m->row_pos[r] = kvs[r]->len;
    }
    if (m->gpu) { /* GPU: one decode per sequence (no batched kernel yet) */
        for (int r = 0; r < n_seq; r++)
            if ((rc = model_forward(m, kvs[r], tokens + r, 1, logits ? logits + (size_t)r * m->cfg.n_vocab : NULL, 0, NULL, err)))
                return rc;
        return 0;
    }
    forward_rows(m, tokens, n_seq);
    for (int r = 0; r < n_seq; r++) kvs[r]->len++;
    if (logits) head(m, 0, n_seq, logits);
    return 0;
}
