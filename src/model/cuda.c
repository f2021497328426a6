/* cuda.c -- the forward pass on an NVIDIA GPU: model_int.h's backend
 * interface over src/model/cuda/'s C API (gpu.h).
 *
 * model_cuda_new() looks the bound tensors up (their shapes and types were
 * checked by model.c), describes them to gpu_model_new(), which uploads
 * them once, and from then on the model's calls go to gpu_forward() and
 * friends. KV caches live on the device (f16, whatever type is asked).
 *
 * One object file for both builds: the gpu_* functions are declared weak,
 * so in the default build (no CUDA objects linked) they resolve to NULL and
 * we answer "built without CUDA"; `make CUDA=1` links the CUDA objects and
 * they become real. No #ifdef, and switching builds never leaves a stale
 * object behind.
 */
#include "model/model_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/gpu.h"

#pragma weak gpu_available
#pragma weak gpu_describe
#pragma weak gpu_model_new
#pragma weak gpu_model_free
#pragma weak gpu_model_bytes
#pragma weak gpu_kv_new
#pragma weak gpu_kv_free
#pragma weak gpu_kv_copy_prefix
#pragma weak gpu_kv_fill_synthetic
#pragma weak gpu_forward
#pragma weak gpu_sample_topk
#pragma weak gpu_model_batch

typedef struct cuda_state {
    gpu_model *gm;
    char device[160];
} cuda_state;

#define GM(m) (((cuda_state *)(m)->be_state)->gm)
#define DEV(kv) ((gpu_kv *)(kv)->dev)

static int built_with_cuda(void) { return gpu_model_new != NULL; }

static gpu_mat gmat(const mat *w) {
    gpu_mat g = {w->data, w->type, w->n_in, w->n_out};
    return g;
}

static const char *device(const model *m) { return ((const cuda_state *)m->be_state)->device; }
static int prefill_chunk(const model *m) { return gpu_model_batch(GM(m)); }

static void state_free(model *m) {
    cuda_state *cs = m->be_state;
    if (!cs) return;
    if (cs->gm) gpu_model_free(cs->gm);
    free(cs);
    m->be_state = NULL;
}

static uint64_t kv_size(const model *m, int n_ctx, int kv_type) {
    (void)kv_type; /* the device cache is f16 */
    const model_config *c = &m->cfg;
    return 2ull * (uint64_t)c->n_layer * (uint64_t)n_ctx * (uint64_t)c->n_head_kv * (uint64_t)c->head_dim * 2;
}

static int kv_new(model_kv *kv, core_err *err) {
    char msg[256] = "";
    gpu_kv *d = NULL;
    if (gpu_kv_new(GM(kv->m), kv->n_ctx, &d, msg, sizeof msg))
        return core_errf(err, CORE_ENOMEM, "gpu KV cache of %d positions: %s", kv->n_ctx, msg);
    kv->dev = d;
    return 0;
}

static void kv_free(model_kv *kv) { gpu_kv_free(DEV(kv)); }

static int kv_copy(model_kv *dst, const model_kv *src, int n, core_err *err) {
    char msg[256] = "";
    if (gpu_kv_copy_prefix(DEV(dst), DEV(src), n, msg, sizeof msg)) return core_errf(err, CORE_EIO, "gpu: %s", msg);
    return 0;
}

static int kv_fill(model_kv *kv, int n, core_err *err) {
    char msg[256] = "";
    if (gpu_kv_fill_synthetic(DEV(kv), kv->len, n, msg, sizeof msg)) return core_errf(err, CORE_EIO, "gpu: %s", msg);
    return 0;
}

/* gpu_forward with logits_mode (0 none, 1 last row, 2 every row); the
 * logits of mode 1 stay on the device when logits is NULL. */
static int run(model *m, model_kv *kv, const int32_t *tokens, int n, int mode, float *logits, const volatile int *cancel,
               core_err *err) {
    char msg[256] = "";
    int done = 0;
    int rc = gpu_forward(GM(m), DEV(kv), kv->len, tokens, n, mode, logits, cancel, &done, msg, sizeof msg);
    kv->len += done;
    if (rc == -2) return core_errf(err, CORE_ECANCEL, "cancelled");
    if (rc) return core_errf(err, CORE_EIO, "gpu: %s", msg);
    return 0;
}

static int forward(model *m, model_kv *kv, const int32_t *tokens, int n, float *logits, int all_logits,
                   const volatile int *cancel, core_err *err) {
    return run(m, kv, tokens, n, !logits ? 0 : all_logits ? 2 : 1, logits, cancel, err);
}

static int decode_topk(model *m, model_kv *kv, int32_t tok, int k, int32_t *ids, float *vals, core_err *err) {
    char msg[256] = "";
    int rc = run(m, kv, &tok, 1, 1, NULL, NULL, err);
    if (rc) return rc;
    if (gpu_sample_topk(GM(m), k, ids, vals, msg, sizeof msg)) return core_errf(err, CORE_EIO, "gpu: %s", msg);
    return 0;
}

/* one decode per sequence: there is no batched decode kernel */
static int decode_batch(model *m, model_kv *const *kvs, const int32_t *tokens, int n_seq, float *logits,
                        core_err *err) {
    for (int r = 0; r < n_seq; r++) {
        int rc = forward(m, kvs[r], tokens + r, 1, logits ? logits + (size_t)r * m->cfg.n_vocab : NULL, 0, NULL, err);
        if (rc) return rc;
    }
    return 0;
}

static const model_backend cuda_backend = {
    device, prefill_chunk, state_free, kv_size, kv_new, kv_free, kv_copy, kv_fill, forward, decode_topk, decode_batch,
    NULL, /* mixed steps: model.c's split into decode_batch and forward */
};

/* The device, or 0 with the reason logged: auto falls back to the CPU. */
static int device_ready(int mode, core_err *err) {
    char msg[256] = "";
    if (!built_with_cuda()) {
        if (mode == MODEL_GPU_ON) return core_errf(err, CORE_EUNSUP, "built without CUDA (rebuild with make CUDA=1)");
        LOG_DEBUG("gpu: built without CUDA; running on the CPU");
        return 0;
    }
    if (!gpu_available(msg, sizeof msg)) {
        if (mode == MODEL_GPU_ON) return core_errf(err, CORE_EUNSUP, "%s", msg);
        LOG_INFO("gpu: %s; running on the CPU", msg);
        return 0;
    }
    return 1;
}

int model_cuda_new(model *m, int mode, core_err *err) {
    if (mode == MODEL_GPU_OFF) return 0;
    /* The device kernels do the plain pass only (adjacent-pair RoPE without
     * scaling, no biases, no q/k norms): other families run on the CPU
     * under auto, and are refused when the GPU is demanded. */
    const model_config *fc = &m->cfg;
    if (fc->rope_neox || fc->rope_freqs || fc->rope_freq_scale != 1.0f || fc->qk_norm || fc->qkv_bias) {
        if (mode == MODEL_GPU_AUTO) return 0;
        return core_errf(err, CORE_EUNSUP, "the CUDA backend does not run %s models (%s); use --gpu off or auto",
                         fc->arch, fc->rope_neox ? "NEOX RoPE" : fc->rope_freqs ? "RoPE frequency factors" :
                                   fc->qk_norm ? "q/k norms" : fc->qkv_bias ? "q/k/v biases" : "scaled RoPE");
    }
    int rc = device_ready(mode, err);
    if (rc <= 0) return rc;
    const model_config *c = &m->cfg;
    gpu_layer_desc *L = calloc((size_t)c->n_layer, sizeof *L);
    cuda_state *cs = calloc(1, sizeof *cs);
    if (!L || !cs) { free(L), free(cs); return core_errf(err, CORE_ENOMEM, "out of memory"); }
    gpu_model_desc d = {0};
    d.n_layer = c->n_layer, d.n_embd = c->n_embd, d.n_ff = c->n_ff, d.n_head = c->n_head;
    d.n_head_kv = c->n_head_kv, d.head_dim = c->head_dim, d.n_vocab = c->n_vocab, d.n_batch = m->n_batch;
    d.rope_theta = c->rope_theta, d.eps = c->eps, d.nope = c->nope, d.layers = L;
    d.tok_embd = gmat(&m->tok_embd), d.output = gmat(&m->output), d.out_norm = m->out_norm;
    for (int il = 0; il < c->n_layer; il++) {
        const layer *s = &m->layers[il];
        L[il] = (gpu_layer_desc){s->attn_norm, s->ffn_norm, gmat(&s->wq), gmat(&s->wk), gmat(&s->wv), gmat(&s->wo),
                                 gmat(&s->gate), gmat(&s->up), gmat(&s->down)};
    }
    char msg[256] = "";
    const double t0 = core_now_s();
    if (gpu_model_new(&cs->gm, &d, msg, sizeof msg)) {
        free(L), free(cs);
        if (mode == MODEL_GPU_ON) return core_errf(err, CORE_EUNSUP, "gpu: %s", msg);
        LOG_WARN("gpu: %s; running on the CPU", msg);
        return 0;
    }
    free(L);
    gpu_describe(cs->device, sizeof cs->device);
    LOG_INFO("gpu: %s: %.2f GB of weights uploaded in %.2f s", cs->device, (double)gpu_model_bytes(cs->gm) / 1e9,
             core_now_s() - t0);
    m->be = &cuda_backend, m->be_state = cs;
    return 0;
}
