/* gpu.h -- the CUDA backend's C API, behind src/model/cuda.c.
 *
 * Built only with `make CUDA=1` (nvcc compiles the .cu files here); the
 * default build has none of these symbols, and its C callers declare them
 * weak, so one object file serves both builds: a function that reads NULL
 * means "built without CUDA".
 *
 *   - gpu_model_new() uploads every weight once, quantized as in the file
 *     (Q4_K, Q5_K, Q6_K, Q4_0, Q8_0, F16, BF16, F32 rows in kern.h's block
 *     layouts) with the f32 norms; host pointers are only read during it.
 *   - gpu_kv: f16 K and V on the device, [n_layer][n_ctx][n_kv * head_dim].
 *   - gpu_forward(): n tokens at positions pos..; one token replays a CUDA
 *     graph per cache, more run chunks of prefill.
 *   - the logits of the last forward stay on the device: gpu_sample_topk()
 *     returns the k best without copying n_vocab floats back.
 *
 * Errors: 0 or -1 with a message in msg (msg_len bytes, NUL-terminated, may
 * be NULL). A gpu_model is used by one thread at a time (it owns a stream
 * and scratch buffers).
 */
#ifndef GPU_H
#define GPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpu_mat {
    const void *data; /* host: n_out rows of n_in values of `type` (kern_type ids) */
    int type;
    int64_t n_in, n_out;
} gpu_mat;

typedef struct gpu_layer_desc {
    const float *attn_norm, *ffn_norm; /* [n_embd] */
    gpu_mat wq, wk, wv, wo, gate, up, down;
} gpu_layer_desc;

typedef struct gpu_model_desc {
    int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab;
    int n_batch; /* tokens per prefill chunk */
    float rope_theta, eps;
    const uint8_t *nope; /* [n_layer]: 1 = layer skips RoPE; read at every forward */
    gpu_mat tok_embd, output; /* output may share tok_embd's data (tied head: uploaded once) */
    const float *out_norm;
    const gpu_layer_desc *layers; /* [n_layer] */
} gpu_model_desc;

typedef struct gpu_model gpu_model;
typedef struct gpu_kv gpu_kv;

/* 1 when a CUDA device can be used; 0 with the reason in msg ("no CUDA
 * device", driver missing, ...). */
int gpu_available(char *msg, size_t msg_len);
/* Device name and memory, for logs ("NVIDIA H100 80GB HBM3, 79 GiB"). */
void gpu_describe(char *buf, size_t len);

int gpu_model_new(gpu_model **out, const gpu_model_desc *d, char *msg, size_t msg_len);
void gpu_model_free(gpu_model *g); /* NULL: no-op */
uint64_t gpu_model_bytes(const gpu_model *g); /* device bytes of the weights */
/* Tokens per prefill chunk: d->n_batch, or more where the tensor-core
 * products want it. */
int gpu_model_batch(const gpu_model *g);

int gpu_kv_new(gpu_model *g, int n_ctx, gpu_kv **out, char *msg, size_t msg_len);
void gpu_kv_free(gpu_kv *kv);
/* Copy positions [0, n) of src to dst (same model). */
int gpu_kv_copy_prefix(gpu_kv *dst, const gpu_kv *src, int n, char *msg, size_t msg_len);
/* Fill positions [from, to) with deterministic values in +-0.1 (benchmarks). */
int gpu_kv_fill_synthetic(gpu_kv *kv, int from, int to, char *msg, size_t msg_len);

/* Run tokens[0..n) at positions pos.. of kv (pos + n <= n_ctx; the caller
 * keeps the length). logits_mode: 0 none, 1 last row, 2 every row. logits:
 * host, n_vocab (mode 1) or n * n_vocab (mode 2) floats, or NULL to keep
 * them on the device only (for gpu_sample_topk). cancel, if not NULL, is
 * polled between prefill chunks; *done gets the tokens processed. */
int gpu_forward(gpu_model *g, gpu_kv *kv, int pos, const int32_t *tokens, int n, int logits_mode, float *logits,
                const volatile int *cancel, int *done, char *msg, size_t msg_len);
/* The k (1..64) largest logits of the last row of the last forward, in
 * descending order (ties: lower id first). */
int gpu_sample_topk(gpu_model *g, int k, int32_t *ids, float *vals, char *msg, size_t msg_len);

/* ---- probes: single kernels on host data (allocate, run, free) ----
 * Defined in tests/test_gpu_probe.cu, linked into the GPU tests and the
 * bench build (make CUDA=1 build/smolbot-bench), never into the product;
 * callers declare them weak. */

/* Y[t*n_out + o] = dot(W row o, X row t) as the model's matmul() runs it
 * (GPU_MM_MODEL: the tensor-core and f16 GEMM paths by token count), or on
 * one path: GPU_MM_MV (k_mv, f32 x), GPU_MM_DEC (k_dec a token at a
 * time), GPU_MM_MMQ (k_mmq, >= 9 tokens), GPU_MM_DQ16 (the f16 GEMM over
 * the dequantized matrix), GPU_MM_GEMM16 (the same, timed without the
 * conversions). K-quant weights see X quantized to Q8_K, as in the model. */
enum { GPU_MM_MODEL = 0, GPU_MM_MV = 1, GPU_MM_DEC = 2, GPU_MM_MMQ = 3, GPU_MM_DQ16 = 4, GPU_MM_GEMM16 = 5 };
int gpu_test_matmul(int type, const void *w, int64_t n_out, int64_t n_in, const float *x, int n_tok, float *y,
                    int path, char *msg, size_t msg_len);
/* rows x n (n % 256 == 0) quantized to Q8_K: q [rows][n], d [rows][n / 256] */
int gpu_test_quant(const float *x, int n, int rows, int8_t *q, float *d, char *msg, size_t msg_len);
int gpu_test_dequant(int type, const void *w, int64_t n, float *out, char *msg, size_t msg_len);
int gpu_test_rmsnorm(const float *x, const float *w, int n, int rows, float eps, float *out, char *msg,
                     size_t msg_len);
int gpu_test_silu_mul(const float *g, const float *u, int n, float *out, char *msg, size_t msg_len);
/* x: [n_heads][head_dim], rotated in place at position pos. */
int gpu_test_rope(float *x, int n_heads, int head_dim, int pos, float theta, char *msg, size_t msg_len);
/* q: [n_tok][n_head*hd] (token t at position pos0 + t); k, v: f16 bits,
 * [pos0 + n_tok][n_kv*hd]; out: [n_tok][n_head*hd]. n_tok > 1: k_fa; one
 * token: k_attn_dmma, run twice in a row (oq/od, when not NULL, get the
 * Q8_K of the output, n_head*hd % 256 == 0). head_dim 64/128, group 1/2/4. */
int gpu_test_attention(const float *q, const uint16_t *k, const uint16_t *v, int n_head, int n_kv, int hd, int n_tok,
                       int pos0, float *out, int8_t *oq, float *od, char *msg, size_t msg_len);
int gpu_test_topk(const float *x, int n, int k, int32_t *ids, float *vals, char *msg, size_t msg_len);
/* Timing for `smolbot bench --kernels`: with reps > 0, each
 * gpu_test_matmul / gpu_test_attention call also runs its kernels reps
 * more times, and gpu_test_last_ms() is the mean per run; 0 turns it off. */
void gpu_test_timing(int reps);
double gpu_test_last_ms(void);

#ifdef __cplusplus
}
#endif

#endif
