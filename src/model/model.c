/* model.c -- SmolLM3, Llama 3.x, Qwen2.5 and Qwen3 models: config,
 * weights, KV caches, and the public API of the forward pass.
 *
 * The story: model_load() reads general.architecture, looks it up in a
 * small table of families (what sets each apart: RoPE layout, q/k norms,
 * q/k/v biases, NoPE layers), reads the hyperparameters and checks them
 * (head counts divide, head_dim, RoPE covers the head, RoPE scaling), and
 * refuses what we do not run with a message naming it,
 * then finds every tensor by name and checks its type and shape, keeping a
 * pointer into the mapping. Nothing is copied. It then picks the backend
 * the forward pass runs on, once (model_int.h): CUDA when asked or
 * available (cuda.c), else the CPU (cpu.c). Every entry point below checks
 * its arguments here, so a backend only does the arithmetic.
 */
#include "model/model_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* What sets a family apart; everything else is the same forward pass.
 * Tensor and key names follow llama.cpp's converter. */
typedef struct family {
    const char *arch;
    int nope_every; /* every n-th layer skips RoPE (SmolLM3's rule, not stored in the file); 0: none */
    int rope_neox;  /* rotate halves instead of adjacent pairs */
    int qk_norm;    /* attn_q_norm / attn_k_norm required */
    int qkv_bias;   /* attn_{q,k,v}.bias required */
} family;

static const family families[] = {
    {"smollm3", 4, 0, 0, 0},
    {"llama", 0, 0, 0, 0},
    {"qwen2", 0, 1, 0, 1},
    {"qwen3", 0, 1, 1, 0},
};

static int read_config(const gguf *g, model_config *c, core_err *err) {
    gguf_str arch;
    memset(c, 0, sizeof *c);
    if (gguf_get_str(g, "general.architecture", &arch, err))
        return core_errf(err, CORE_EFORMAT, "%s: no general.architecture key", gguf_name(g));
    const family *fam = NULL;
    for (size_t i = 0; i < CORE_ARRAY_LEN(families); i++)
        if (arch.len == strlen(families[i].arch) && !memcmp(arch.ptr, families[i].arch, arch.len)) fam = &families[i];
    if (!fam)
        return core_errf(err, CORE_EUNSUP, "%s: architecture '%.*s' is not supported (smollm3, llama, qwen2, qwen3 are)",
                         gguf_name(g), (int)CORE_MIN(arch.len, 64), arch.ptr);
    snprintf(c->arch, sizeof c->arch, "%s", fam->arch);
    c->rope_neox = fam->rope_neox, c->qk_norm = fam->qk_norm, c->qkv_bias = fam->qkv_bias;

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
    /* mixtures of experts share the arch name in llama.cpp (llama) */
    if (get_u32_key(g, c->arch, "expert_count", &v, 0, err) == 0 && v > 0)
        return core_errf(err, CORE_EUNSUP, "%s: mixture of experts (%s.expert_count %u) is not supported", gguf_name(g),
                         c->arch, v);
    if (c->n_layer < 1 || c->n_layer > MODEL_MAX_LAYERS)
        return core_errf(err, CORE_ERANGE, "%s: block_count %d out of range 1..%d", gguf_name(g), c->n_layer, MODEL_MAX_LAYERS);
    if (c->n_embd < 1 || c->n_embd > 65536 || c->n_ff < 1 || c->n_ff > 1 << 20)
        return core_errf(err, CORE_ERANGE, "%s: embedding_length %d / feed_forward_length %d out of range",
                         gguf_name(g), c->n_embd, c->n_ff);
    if (c->n_head < 1 || c->n_head > 1024 || c->n_head_kv < 1 || c->n_head % c->n_head_kv)
        return core_errf(err, CORE_EFORMAT, "%s: head_count %d is not a multiple of head_count_kv %d",
                         gguf_name(g), c->n_head, c->n_head_kv);
    /* head_dim is key_length when the file says (qwen3: not n_embd/n_head) */
    if (get_u32_key(g, c->arch, "attention.key_length", &v, 0, err) == 0) {
        c->head_dim = v > 1024 ? 0 : (int)v;
    } else {
        if (c->n_embd % c->n_head)
            return core_errf(err, CORE_EFORMAT, "%s: embedding_length %d not divisible by head_count %d",
                             gguf_name(g), c->n_embd, c->n_head);
        c->head_dim = c->n_embd / c->n_head;
    }
    if (c->head_dim < 2 || c->head_dim > 512 || c->head_dim % 2)
        return core_errf(err, CORE_EUNSUP, "%s: head_dim %d unsupported (even, 2..512)", gguf_name(g), c->head_dim);
    if (get_u32_key(g, c->arch, "attention.value_length", &v, 0, err) == 0 && (int)v != c->head_dim)
        return core_errf(err, CORE_EUNSUP, "%s: value_length %u differs from key_length %d", gguf_name(g), v, c->head_dim);
    if (get_u32_key(g, c->arch, "rope.dimension_count", &v, 0, err) == 0 && (int)v != c->head_dim)
        return core_errf(err, CORE_EUNSUP, "%s: rope.dimension_count %u must equal head_dim %d (partial RoPE unsupported)",
                         gguf_name(g), v, c->head_dim);
    if (c->n_ctx_train < 1) return core_errf(err, CORE_ERANGE, "%s: context_length %d", gguf_name(g), c->n_ctx_train);
    if ((rc = get_f32_key(g, c->arch, "rope.freq_base", &c->rope_theta, 10000.0f, err))) return rc;
    if ((rc = get_f32_key(g, c->arch, "attention.layer_norm_rms_epsilon", &c->eps, 1e-5f, err))) return rc;
    if (!(c->rope_theta > 0) || !(c->eps > 0) || c->eps > 1)
        return core_errf(err, CORE_ERANGE, "%s: rope.freq_base %g / rms epsilon %g out of range", gguf_name(g),
                         c->rope_theta, c->eps);
    /* RoPE scaling: none, or linear (positions divided by the factor);
     * Llama 3's is the rope_freqs.weight tensor, bound in model_load. */
    c->rope_freq_scale = 1.0f;
    char key[128];
    gguf_str st;
    snprintf(key, sizeof key, "%s.rope.scaling.type", c->arch);
    if (gguf_get_str(g, key, &st, NULL) == 0 && !(st.len == 4 && !memcmp(st.ptr, "none", 4))) {
        float f;
        if (!(st.len == 6 && !memcmp(st.ptr, "linear", 6)))
            return core_errf(err, CORE_EUNSUP, "%s: RoPE scaling '%.*s' is not supported (none, linear are)",
                             gguf_name(g), (int)CORE_MIN(st.len, 32), st.ptr);
        if ((rc = get_f32_key(g, c->arch, "rope.scaling.factor", &f, 1.0f, err))) return rc;
        if (!(f >= 1.0f && f <= 1024.0f))
            return core_errf(err, CORE_ERANGE, "%s: rope.scaling.factor %g out of range", gguf_name(g), f);
        c->rope_freq_scale = 1.0f / f;
    }
    for (int il = 0; il < c->n_layer; il++) c->nope[il] = fam->nope_every && (il + 1) % fam->nope_every == 0;
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

/* An F32 vector of n values (biases, norms of head size, RoPE factors). */
static int bind_vec(const gguf *g, const char *name, int64_t n, const float **out, core_err *err) {
    return bind_norm(g, name, n, out, err);
}

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
    if (gguf_find_tensor(g, "rope_freqs.weight")) {
        if ((rc = bind_vec(g, "rope_freqs.weight", c->head_dim / 2, &m->rope_freqs, err))) goto fail;
        c->rope_freqs = 1;
        for (int i = 0; i < c->head_dim / 2; i++)
            if (!(m->rope_freqs[i] > 0) || m->rope_freqs[i] > 1e6f) {
                rc = core_errf(err, CORE_EFORMAT, "%s: rope_freqs.weight[%d] = %g is not a positive factor",
                               gguf_name(g), i, m->rope_freqs[i]);
                goto fail;
            }
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
#define V(field, suffix, n)                                                   \
    snprintf(name, sizeof name, "blk.%d." suffix, il);                        \
    if ((rc = bind_vec(g, name, n, &L->field, err))) goto fail;
        N(attn_norm, "attn_norm");
        T(wq, "attn_q", c->n_embd, q_dim);
        T(wk, "attn_k", c->n_embd, kv_dim);
        T(wv, "attn_v", c->n_embd, kv_dim);
        T(wo, "attn_output", q_dim, c->n_embd);
        if (c->qkv_bias) {
            V(bq, "attn_q.bias", q_dim);
            V(bk, "attn_k.bias", kv_dim);
            V(bv, "attn_v.bias", kv_dim);
        }
        if (c->qk_norm) {
            V(q_norm, "attn_q_norm.weight", hd);
            V(k_norm, "attn_k_norm.weight", hd);
        }
        /* a bias or norm this family does not have would be silently
         * ignored: refuse the file instead of computing something else */
        static const char *const extra[] = {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias",
                                            "attn_q_norm.weight", "attn_k_norm.weight", "ffn_gate.bias",
                                            "ffn_up.bias", "ffn_down.bias", "attn_post_norm.weight"};
        for (size_t i = 0; i < CORE_ARRAY_LEN(extra); i++) {
            int want = (c->qkv_bias && i < 3) || (c->qk_norm && (i == 4 || i == 5));
            snprintf(name, sizeof name, "blk.%d.%s", il, extra[i]);
            if (!want && gguf_find_tensor(g, name)) {
                rc = core_errf(err, CORE_EUNSUP, "%s: tensor %s is not part of the %s architecture we run",
                               gguf_name(g), name, c->arch);
                goto fail;
            }
        }
        N(ffn_norm, "ffn_norm");
        T(gate, "ffn_gate", c->n_embd, c->n_ff);
        T(up, "ffn_up", c->n_embd, c->n_ff);
        T(down, "ffn_down", c->n_ff, c->n_embd);
#undef T
#undef N
#undef V
    }

    int nt = opts && opts->n_threads > 0 ? opts->n_threads : core_ncpu();
    m->n_batch = opts && opts->n_batch > 0 ? opts->n_batch : 256;
    m->pool = kern_pool_new(nt);
    if (!m->pool) { rc = core_errf(err, CORE_ENOMEM, "cannot start %d threads", nt); goto fail; }
    if ((rc = model_cuda_new(m, opts ? opts->gpu : MODEL_GPU_OFF, err))) goto fail;
    if (!m->be && (rc = model_cpu_new(m, err))) goto fail;
    *out = m;
    return 0;
fail:
    model_free(m);
    return rc;
}

void model_free(model *m) {
    if (!m) return;
    if (m->be) m->be->free(m);
    kern_pool_free(m->pool);
    free(m->layers);
    free(m);
}

const model_config *model_get_config(const model *m) { return &m->cfg; }

int model_set_rope_layer(model *m, int il, int use_rope) {
    if (il < 0 || il >= m->cfg.n_layer) return CORE_ERANGE;
    m->cfg.nope[il] = !use_rope;
    return 0;
}
int model_threads(const model *m) { return kern_pool_threads(m->pool); }
const char *model_device(const model *m) { return m->be->device(m); }
int model_prefill_chunk(const model *m) { return m->be->prefill_chunk(m); }
kern_pool *model_pool(model *m) { return m->pool; }

uint64_t model_mat_bytes(const mat *w) { return (uint64_t)kern_row_size(w->type, w->n_in) * (uint64_t)w->n_out; }

uint64_t model_weight_bytes(const model *m) {
    uint64_t b = model_mat_bytes(&m->output) + kern_row_size(m->tok_embd.type, m->tok_embd.n_in);
    for (int il = 0; il < m->cfg.n_layer; il++) {
        const layer *L = &m->layers[il];
        b += model_mat_bytes(&L->wq) + model_mat_bytes(&L->wk) + model_mat_bytes(&L->wv) + model_mat_bytes(&L->wo) +
             model_mat_bytes(&L->gate) + model_mat_bytes(&L->up) + model_mat_bytes(&L->down) + 2 * (uint64_t)m->cfg.n_embd * 4;
    }
    return b;
}

/* ---- KV cache --------------------------------------------------------- */

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
    int rc = m->be->kv_new(kv, err);
    if (rc) {
        model_kv_free(kv);
        return rc;
    }
    *out = kv;
    return 0;
}

void model_kv_free(model_kv *kv) {
    if (!kv) return;
    kv->m->be->kv_free(kv);
    free(kv);
}

int model_kv_ctx(const model_kv *kv) { return kv->n_ctx; }
int model_kv_len(const model_kv *kv) { return kv->len; }
void model_kv_truncate(model_kv *kv, int n) {
    if (n >= 0 && n < kv->len) kv->len = n;
}

uint64_t model_kv_size(const model *m, int n_ctx, int kv_type) { return m->be->kv_size(m, n_ctx, kv_type); }
uint64_t model_kv_bytes(const model_kv *kv) { return model_kv_size(kv->m, kv->n_ctx, kv->type); }

int model_kv_copy_prefix(model_kv *dst, const model_kv *src, int n, core_err *err) {
    if (dst->m != src->m || dst->type != src->type)
        return core_errf(err, CORE_EINVAL, "KV caches of different models or types");
    if (n < 0 || n > src->len || n > dst->n_ctx)
        return core_errf(err, CORE_ERANGE, "cannot copy %d positions (source has %d, room for %d)", n, src->len, dst->n_ctx);
    int rc = src->m->be->kv_copy(dst, src, n, err);
    if (!rc) dst->len = n;
    return rc;
}

int model_kv_fill_synthetic(model_kv *kv, int n, core_err *err) {
    if (n < kv->len || n > kv->n_ctx) return core_errf(err, CORE_ERANGE, "cannot fill to %d (len %d, ctx %d)", n, kv->len, kv->n_ctx);
    int rc = kv->m->be->kv_fill(kv, n, err);
    if (!rc) kv->len = n;
    return rc;
}

/* ---- forward ---------------------------------------------------------- */

static int check_tokens(const model *m, const int32_t *tokens, int n, core_err *err) {
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.n_vocab)
            return core_errf(err, CORE_ERANGE, "token id %d out of range 0..%d", tokens[i], m->cfg.n_vocab - 1);
    return 0;
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
    int rc = check_forward(m, kv, tokens, n, err);
    return rc ? rc : m->be->forward(m, kv, tokens, n, logits, all_logits, cancel, err);
}

int model_decode_topk(model *m, model_kv *kv, int32_t tok, int k, int32_t *ids, float *vals, core_err *err) {
    if (k < 1 || k > 64 || k > m->cfg.n_vocab) return core_errf(err, CORE_EINVAL, "top-k of %d (1..64)", k);
    int rc = check_forward(m, kv, &tok, 1, err);
    return rc ? rc : m->be->decode_topk(m, kv, tok, k, ids, vals, err);
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
    }
    return m->be->decode_batch(m, kvs, tokens, n_seq, logits, err);
}

int model_step_rows(const model *m) { return m->be->forward_seqs ? m->n_batch : model_prefill_chunk(m); }

int model_forward_seqs(model *m, model_kv *const *kvs, const int32_t *const *tokens, const int *n_tok, int n_seq,
                       float *logits, core_err *err) {
    if (n_seq <= 0 || n_seq > m->n_batch)
        return core_errf(err, CORE_EINVAL, "step of %d sequences (1..%d)", n_seq, m->n_batch);
    int64_t rows = 0;
    for (int s = 0; s < n_seq; s++) {
        int rc = check_forward(m, kvs[s], tokens[s], n_tok[s], err);
        if (rc) return rc;
        for (int q = 0; q < s; q++)
            if (kvs[q] == kvs[s]) return core_errf(err, CORE_EINVAL, "one KV cache twice in a step");
        rows += n_tok[s];
    }
    if (rows > model_step_rows(m)) return core_errf(err, CORE_EINVAL, "step of %lld tokens (at most %d)", (long long)rows, model_step_rows(m));
    if (m->be->forward_seqs) return m->be->forward_seqs(m, kvs, tokens, n_tok, n_seq, logits, err);
    const size_t nv = (size_t)m->cfg.n_vocab;
    int k = 0;
    int32_t one[64];
    while (k < n_seq && k < 64 && n_tok[k] == 1) one[k] = tokens[k][0], k++;
    int rc = k ? m->be->decode_batch(m, kvs, one, k, logits, err) : 0;
    for (int s = k; s < n_seq && !rc; s++)
        rc = m->be->forward(m, kvs[s], tokens[s], n_tok[s], logits ? logits + (size_t)s * nv : NULL, 0, NULL, err);
    return rc;
}
