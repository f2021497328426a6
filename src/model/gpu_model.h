/* gpu_model.h -- internal to src/model: model.c's door to the CUDA backend
 * (issue 12). model.c calls these at a handful of marked places; all the
 * CUDA knowledge stays in gpu_model.c and src/kern/cuda/.
 *
 * In a build without CUDA every function is still defined: model_gpu_new()
 * returns CORE_EUNSUP "built without CUDA" (MODEL_GPU_ON) or 0 with *out
 * NULL (MODEL_GPU_AUTO, MODEL_GPU_OFF), so the model stays on the CPU.
 */
#ifndef GPU_MODEL_H
#define GPU_MODEL_H

#include "model.h"

typedef struct model_gpu model_gpu;

/* mode: MODEL_GPU_OFF | AUTO | ON. c must outlive the result (its nope[]
 * flags are read at every forward). *out NULL means "run on the CPU". */
int model_gpu_new(model_gpu **out, const gguf *g, const model_config *c, int mode, int n_batch, core_err *err);
void model_gpu_free(model_gpu *mg);
const char *model_gpu_device(const model_gpu *mg); /* "NVIDIA H100 ..., sm_90, 79 GiB" */
int model_gpu_batch(const model_gpu *mg);          /* tokens per device prefill chunk; 0 for NULL */

/* A device KV cache (opaque) of n_ctx positions. */
int model_gpu_kv_new(model_gpu *mg, int n_ctx, void **out, core_err *err);
void model_gpu_kv_free(void *kv);
int model_gpu_kv_copy(void *dst, const void *src, int n, core_err *err);
int model_gpu_kv_fill(void *kv, int from, int to, core_err *err);

/* model_forward on the device: tokens at *len.., *len advances by the
 * tokens processed (also on cancel: CORE_ECANCEL). */
int model_gpu_forward(model_gpu *mg, void *kv, int *len, const int32_t *tokens, int n, float *logits, int all_logits,
                      const volatile int *cancel, core_err *err);

/* One decode step that keeps the logits on the device and returns their
 * top k (model_decode_topk). */
int model_gpu_decode_topk(model_gpu *mg, void *kv, int *len, int32_t tok, int k, int32_t *ids, float *vals,
                          core_err *err);

#endif
