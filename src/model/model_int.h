/* model_int.h -- internal to src/model: the model and KV cache objects and
 * the backend interface the forward pass sits behind.
 *
 * model.c reads the config, binds the weights (views into the mapping)
 * and owns the public API: it checks every call's arguments, then hands
 * the work to the backend chosen once at load -- cpu.c (src/kern's
 * kernels on the thread pool) or cuda.c (src/model/cuda/, the same
 * forward pass on an NVIDIA GPU). A backend keeps its run state in
 * m->be_state and a cache's storage in the model_kv (the CPU's arrays, or
 * kv->dev for a device cache).
 */
#ifndef MODEL_INT_H
#define MODEL_INT_H

#include "model/model.h"

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
    const float *bq, *bk, *bv; /* [n_head * hd], [n_kv * hd] x2, or NULL (qkv_bias) */
    const float *q_norm;    /* [hd] or NULL (qk_norm) */
    const float *k_norm;    /* [hd] or NULL */
    mat wo;                 /* [n_head * hd] -> [n_embd] */
    const float *ffn_norm;  /* [n_embd] */
    mat gate;               /* [n_embd] -> [n_ff] */
    mat up;                 /* [n_embd] -> [n_ff] */
    mat down;               /* [n_ff] -> [n_embd] */
} layer;

/* What a backend does; arguments are checked by model.c before any call.
 * Caches: kv_new fills the storage of a model_kv whose m, n_ctx and type
 * are set; forward and decode_topk append to kv and advance kv->len by the
 * tokens processed (also on cancel, CORE_ECANCEL). */
typedef struct model_backend {
    const char *(*device)(const model *m);
    int (*prefill_chunk)(const model *m); /* tokens per model_forward call that run best */
    void (*free)(model *m);               /* the backend's state */
    uint64_t (*kv_size)(const model *m, int n_ctx, int kv_type);
    int (*kv_new)(model_kv *kv, core_err *err);
    void (*kv_free)(model_kv *kv);
    int (*kv_copy)(model_kv *dst, const model_kv *src, int n, core_err *err);
    int (*kv_fill)(model_kv *kv, int n, core_err *err); /* synthetic positions len..n */
    int (*forward)(model *m, model_kv *kv, const int32_t *tokens, int n, float *logits, int all_logits,
                   const volatile int *cancel, core_err *err);
    int (*decode_topk)(model *m, model_kv *kv, int32_t tok, int k, int32_t *ids, float *vals, core_err *err);
    int (*decode_batch)(model *m, model_kv *const *kvs, const int32_t *tokens, int n_seq, float *logits,
                        core_err *err);
    /* NULL: model.c splits a mixed step into decode_batch and forward calls */
    int (*forward_seqs)(model *m, model_kv *const *kvs, const int32_t *const *tokens, const int *n_tok, int n_seq,
                        float *logits, core_err *err);
} model_backend;

struct model {
    model_config cfg;
    const gguf *g;
    mat tok_embd;          /* [n_embd] x n_vocab rows */
    mat output;            /* the head: tok_embd when tied */
    const float *out_norm; /* [n_embd] */
    const float *rope_freqs; /* [hd / 2] divisors of each RoPE frequency, or NULL */
    layer *layers;         /* [n_layer] */
    kern_pool *pool;
    int n_batch;           /* rows per CPU forward chunk; the batched decode's limit */
    const model_backend *be;
    void *be_state;
};

struct model_kv {
    const model *m;
    int n_ctx;
    int len;
    int type;          /* MODEL_KV_F16 | MODEL_KV_F32 | MODEL_KV_Q8 */
    /* the CPU backend's storage */
    size_t step;       /* bytes of one head's K (or V) row at one position; 8-bit: of one tile */
    size_t head_bytes; /* bytes of one head's run of n_ctx positions */
    int64_t kv_dim;    /* n_kv * hd */
    int n_kv, hd;
    void *k;           /* [n_layer][n_kv][n_ctx] rows (or tiles): each head's positions in a run */
    void *v;           /* same */
    void *dev;         /* the CUDA backend's device cache */
};

/* The backends. model_cpu_new: the CPU's run state for m->n_batch rows.
 * model_cuda_new: mode MODEL_GPU_*; 0 with m->be unset means "run on the
 * CPU" (auto without a device), an error for MODEL_GPU_ON without one. */
int model_cpu_new(model *m, core_err *err);
int model_cuda_new(model *m, int mode, core_err *err);
uint64_t model_mat_bytes(const mat *w);

#endif
