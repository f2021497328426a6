/* gpu_model.c -- the model's CUDA backend glue (issue 12).
 *
 * The story: model_load() binds and checks every tensor, then asks
 * model_gpu_new() for a device copy. We look the same tensors up by name
 * (their shapes and types were checked by model.c), describe them to
 * gpu_model_new() (src/kern/cuda/gpu.h), which uploads them once, and from
 * then on model_forward() and friends hand their work to gpu_forward().
 *
 * One object file for both builds: the gpu_* functions are declared weak,
 * so in the default build (no CUDA objects linked) they resolve to NULL and
 * we answer "built without CUDA"; `make CUDA=1` links the CUDA objects and
 * they become real. No #ifdef, and switching builds never leaves a stale
 * object behind.
 */
#include "gpu_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern/cuda/gpu.h"

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

struct model_gpu {
    gpu_model *gm;
    int n_vocab;
    char device[160];
};

static int built_with_cuda(void) { return gpu_model_new != NULL; }

static int tensor(const gguf *g, const char *name, gpu_mat *out, core_err *err) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t || !t->data) return core_errf(err, CORE_ENOTFOUND, "%s: missing tensor %s", gguf_name(g), name);
    out->data = t->data;
    out->type = (int)t->type;
    out->n_in = (int64_t)t->ne[0];
    out->n_out = (int64_t)t->ne[1];
    return 0;
}

int model_gpu_new(model_gpu **out, const gguf *g, const model_config *c, int mode, int n_batch, core_err *err) {
    *out = NULL;
    if (mode == MODEL_GPU_OFF) return 0;
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
    gpu_layer_desc *L = calloc((size_t)c->n_layer, sizeof *L);
    model_gpu *mg = calloc(1, sizeof *mg);
    int rc = 0;
    if (!L || !mg) { rc = core_errf(err, CORE_ENOMEM, "out of memory"); goto done; }
    gpu_model_desc d = {0};
    d.n_layer = c->n_layer, d.n_embd = c->n_embd, d.n_ff = c->n_ff, d.n_head = c->n_head;
    d.n_head_kv = c->n_head_kv, d.head_dim = c->head_dim, d.n_vocab = c->n_vocab, d.n_batch = n_batch;
    d.rope_theta = c->rope_theta, d.eps = c->eps, d.nope = c->nope, d.layers = L;
    gpu_mat nm;
    if ((rc = tensor(g, "token_embd.weight", &d.tok_embd, err))) goto done;
    if ((rc = tensor(g, "output_norm.weight", &nm, err))) goto done;
    d.out_norm = nm.data;
    d.output = d.tok_embd;
    if (gguf_find_tensor(g, "output.weight") && (rc = tensor(g, "output.weight", &d.output, err))) goto done;
    for (int il = 0; il < c->n_layer; il++) {
        char name[96];
#define T(field, suffix)                                                   \
    snprintf(name, sizeof name, "blk.%d." suffix ".weight", il);           \
    if ((rc = tensor(g, name, &L[il].field, err))) goto done;
        T(wq, "attn_q") T(wk, "attn_k") T(wv, "attn_v") T(wo, "attn_output");
        T(gate, "ffn_gate") T(up, "ffn_up") T(down, "ffn_down");
        gpu_mat an, fn;
        snprintf(name, sizeof name, "blk.%d.attn_norm.weight", il);
        if ((rc = tensor(g, name, &an, err))) goto done;
        snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", il);
        if ((rc = tensor(g, name, &fn, err))) goto done;
        L[il].attn_norm = an.data;
        L[il].ffn_norm = fn.data;
#undef T
    }
    double t0 = core_now_s();
    if (gpu_model_new(&mg->gm, &d, msg, sizeof msg)) {
        if (mode == MODEL_GPU_ON) { rc = core_errf(err, CORE_EUNSUP, "gpu: %s", msg); goto done; }
        LOG_WARN("gpu: %s; running on the CPU", msg);
        goto done; /* rc 0, *out NULL */
    }
    mg->n_vocab = c->n_vocab;
    gpu_describe(mg->device, sizeof mg->device);
    LOG_INFO("gpu: %s: %.2f GB of weights uploaded in %.2f s", mg->device, (double)gpu_model_bytes(mg->gm) / 1e9,
             core_now_s() - t0);
    *out = mg;
    mg = NULL;
done:
    if (mg) model_gpu_free(mg);
    free(L);
    return rc;
}

void model_gpu_free(model_gpu *mg) {
    if (!mg) return;
    if (mg->gm) gpu_model_free(mg->gm);
    free(mg);
}

const char *model_gpu_device(const model_gpu *mg) { return mg ? mg->device : "cpu"; }
int model_gpu_batch(const model_gpu *mg) { return mg ? gpu_model_batch(mg->gm) : 0; }

typedef struct kv_box {
    model_gpu *mg;
    gpu_kv *kv;
} kv_box;

int model_gpu_kv_new(model_gpu *mg, int n_ctx, void **out, core_err *err) {
    char msg[256] = "";
    kv_box *b = calloc(1, sizeof *b);
    if (!b) return core_errf(err, CORE_ENOMEM, "out of memory");
    b->mg = mg;
    if (gpu_kv_new(mg->gm, n_ctx, &b->kv, msg, sizeof msg)) {
        free(b);
        return core_errf(err, CORE_ENOMEM, "gpu KV cache of %d positions: %s", n_ctx, msg);
    }
    *out = b;
    return 0;
}

void model_gpu_kv_free(void *kv) {
    kv_box *b = kv;
    if (!b) return;
    gpu_kv_free(b->kv);
    free(b);
}

int model_gpu_kv_copy(void *dst, const void *src, int n, core_err *err) {
    char msg[256] = "";
    if (gpu_kv_copy_prefix(((kv_box *)dst)->kv, ((const kv_box *)src)->kv, n, msg, sizeof msg))
        return core_errf(err, CORE_EIO, "gpu: %s", msg);
    return 0;
}

int model_gpu_kv_fill(void *kv, int from, int to, core_err *err) {
    char msg[256] = "";
    if (gpu_kv_fill_synthetic(((kv_box *)kv)->kv, from, to, msg, sizeof msg))
        return core_errf(err, CORE_EIO, "gpu: %s", msg);
    return 0;
}

/* gpu_forward with logits_mode (0 none, 1 last row, 2 every row); the
 * logits of mode 1 stay on the device when logits is NULL. */
static int forward(model_gpu *mg, void *kv, int *len, const int32_t *tokens, int n, int mode, float *logits,
                   const volatile int *cancel, core_err *err) {
    char msg[256] = "";
    int done = 0;
    int rc = gpu_forward(mg->gm, ((kv_box *)kv)->kv, *len, tokens, n, mode, logits, cancel, &done, msg, sizeof msg);
    *len += done;
    if (rc == -2) return core_errf(err, CORE_ECANCEL, "cancelled");
    if (rc) return core_errf(err, CORE_EIO, "gpu: %s", msg);
    return 0;
}

int model_gpu_forward(model_gpu *mg, void *kv, int *len, const int32_t *tokens, int n, float *logits, int all_logits,
                      const volatile int *cancel, core_err *err) {
    return forward(mg, kv, len, tokens, n, !logits ? 0 : all_logits ? 2 : 1, logits, cancel, err);
}

int model_gpu_decode_topk(model_gpu *mg, void *kv, int *len, int32_t tok, int k, int32_t *ids, float *vals,
                          core_err *err) {
    char msg[256] = "";
    int rc = forward(mg, kv, len, &tok, 1, 1, NULL, NULL, err);
    if (rc) return rc;
    if (gpu_sample_topk(mg->gm, k, ids, vals, msg, sizeof msg)) return core_errf(err, CORE_EIO, "gpu: %s", msg);
    return 0;
}
