/* test_gpu_probe.cu -- the CUDA kernels one at a time on host data, for
 * tests/test_gpu.c and the kernel benchmarks (`smolbot bench --kernels` in
 * the bench build): each gpu_test_* (declared in src/model/cuda/gpu.h)
 * uploads its inputs, launches through the backend's own launch.cuh, and
 * copies the result back. Not part of the product binary.
 *
 * Compiled by nvcc for the GPU tests and the bench build, and as C++
 * against emu.h (SMOLBOT_GPU_EMU) for test_gpu_on_emu. The backend's
 * kernels are static (or templates), so this file's copies and gpu.cu's
 * live side by side.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/launch.cuh"
#include "model/cuda/gpu.h"

template <int T> __global__ void k_dequant(const uint8_t *W, int n, float *out) {
    const int k = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (k < n) deq8<T>(W, k, out + k);
}

/* Device scratch for one test call: every pointer is freed by t_free. */
typedef struct tbufs {
    void *p[16];
    int n;
} tbufs;

static void *t_up(tbufs *b, const void *h, size_t bytes) {
    void *d = NULL;
    if (b->n == (int)(sizeof b->p / sizeof b->p[0])) return NULL; /* T_NEED reports it */
    if (cudaMalloc(&d, bytes ? bytes : 16) != cudaSuccess) return NULL;
    b->p[b->n++] = d;
    if (h && cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) != cudaSuccess) return NULL;
    if (!h) cudaMemset(d, 0, bytes ? bytes : 16);
    return d;
}
static void t_free(tbufs *b) {
    for (int i = 0; i < b->n; i++) cudaFree(b->p[i]);
    b->n = 0;
}
static int t_finish(tbufs *b, void *host, const void *dev, size_t bytes, char *msg, size_t msg_len) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e == cudaSuccess && host) e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
    t_free(b);
    if (e != cudaSuccess) { set_msg(msg, msg_len, "CUDA: %s", cudaGetErrorString(e)); return -1; }
    return 0;
}
/* gpu_test_timing: after its one checked launch, a test entry launches
 * its kernels g_reps more times between two events (bench --kernels) */
static int g_reps;
static double g_ms;
extern "C" void gpu_test_timing(int reps) { g_reps = reps > 0 ? reps : 0, g_ms = 0.0; }
extern "C" double gpu_test_last_ms(void) { return g_ms; }
#define T_LAUNCH(stmt)                                                        \
    do {                                                                      \
        stmt;                                                                 \
        cudaEvent_t e0_, e1_;                                                 \
        float ms_ = 0.0f;                                                     \
        if (g_reps && cudaEventCreate(&e0_) == cudaSuccess) {                 \
            if (cudaEventCreate(&e1_) == cudaSuccess) {                       \
                cudaEventRecord(e0_, 0);                                      \
                for (int r_ = 0; r_ < g_reps; r_++) { stmt; }                 \
                cudaEventRecord(e1_, 0);                                      \
                cudaEventSynchronize(e1_);                                    \
                cudaEventElapsedTime(&ms_, e0_, e1_);                         \
                g_ms = ms_ / g_reps;                                          \
                cudaEventDestroy(e1_);                                        \
            }                                                                 \
            cudaEventDestroy(e0_);                                            \
        }                                                                     \
    } while (0)
#define T_NEED(ptr)                                                           \
    if (!(ptr)) {                                                             \
        t_free(&b);                                                           \
        set_msg(msg, msg_len, "CUDA: allocation or copy failed");             \
        return -1;                                                            \
    }

extern "C" int gpu_test_quant(const float *x, int n, int rows, int8_t *q, float *d, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    if (n % 256) { set_msg(msg, msg_len, "n %% 256 != 0"); return -1; }
    float *dx = (float *)t_up(&b, x, (size_t)n * rows * 4);
    int8_t *dq = (int8_t *)t_up(&b, NULL, (size_t)n * rows);
    float *dd = (float *)t_up(&b, NULL, (size_t)(n / 256) * rows * 4);
    T_NEED(dx && dq && dd);
    quant(0, dx, n, n, rows, dq, dd);
    if (cudaDeviceSynchronize() != cudaSuccess || cudaMemcpy(d, dd, (size_t)(n / 256) * rows * 4, cudaMemcpyDeviceToHost) != cudaSuccess) {
        t_free(&b);
        set_msg(msg, msg_len, "CUDA: quant");
        return -1;
    }
    return t_finish(&b, q, dq, (size_t)n * rows, msg, msg_len);
}

extern "C" int gpu_test_dequant(int type, const void *w, int64_t n, float *out, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    if (!gq_block(type) || n % gq_block(type)) { set_msg(msg, msg_len, "type %d unsupported", type); return -1; }
    const uint8_t *dw = (const uint8_t *)t_up(&b, w, kern_row_size(type, n));
    float *d = (float *)t_up(&b, NULL, (size_t)n * 4);
    T_NEED(dw && d);
    const int threads = (int)(n / 8);
    GQ_DISPATCH(type, (launch_plain(k_dequant<T>, (threads + 255) / 256, 256, 0, 0, dw, (int)n, d)));
    return t_finish(&b, out, d, (size_t)n * 4, msg, msg_len);
}

extern "C" int gpu_test_rmsnorm(const float *x, const float *w, int n, int rows, float eps, float *out, char *msg,
                                size_t msg_len) {
    tbufs b = {{0}, 0};
    float *dx = (float *)t_up(&b, x, (size_t)n * rows * 4), *dw = (float *)t_up(&b, w, (size_t)n * 4);
    T_NEED(dx && dw);
    float *dout = (float *)t_up(&b, NULL, (size_t)n * rows * 4);
    T_NEED(dout);
    launch_plain(k_rmsnorm, rows, 256, 0, 0, (const float *)dx, (const float *)dw, dout, n, eps, (int8_t *)NULL, (float *)NULL);
    return t_finish(&b, out, dout, (size_t)n * rows * 4, msg, msg_len);
}

extern "C" int gpu_test_silu_mul(const float *g, const float *u, int n, float *out, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    float *dg = (float *)t_up(&b, g, (size_t)n * 4), *du = (float *)t_up(&b, u, (size_t)n * 4);
    T_NEED(dg && du);
    launch_plain(k_silu_mul, (n + 255) / 256, 256, 0, 0, dg, du, n);
    return t_finish(&b, out, dg, (size_t)n * 4, msg, msg_len);
}

extern "C" int gpu_test_rope(float *x, int n_heads, int head_dim, int pos, float theta, char *msg, size_t msg_len) {
    /* k_rope_store on a cache of pos + 1 rows: x plays q, one dummy KV head. */
    tbufs b = {{0}, 0};
    float *dq = (float *)t_up(&b, x, (size_t)n_heads * head_dim * 4);
    float *dk = (float *)t_up(&b, NULL, (size_t)head_dim * 4);
    __half *kc = (__half *)t_up(&b, NULL, (size_t)(pos + 1) * head_dim * 2);
    __half *vc = (__half *)t_up(&b, NULL, (size_t)(pos + 1) * head_dim * 2);
    int *dp = (int *)t_up(&b, &pos, sizeof pos);
    T_NEED(dq && dk && kc && vc && dp);
    launch_plain(k_rope_store, 1, 256, 0, 0, dq, dk, dk, kc, vc, dp, n_heads, 1, head_dim, powf(theta, -2.0f / (float)head_dim), 1);
    return t_finish(&b, x, dq, (size_t)n_heads * head_dim * 4, msg, msg_len);
}


/* the K-quant rows of x as the model quantizes them, or NULL */
static int up_q8k(tbufs *b, int type, const float *dx, int n_in, int n_tok, int8_t **xq, float **xd) {
    *xq = NULL, *xd = NULL;
    if (!gq_is_k(type)) return 0;
    *xq = (int8_t *)t_up(b, NULL, (size_t)n_tok * n_in);
    *xd = (float *)t_up(b, NULL, (size_t)n_tok * (n_in / 256) * 4 + 4);
    if (!*xq || !*xd) return -1;
    quant(0, dx, n_in, n_in, n_tok, *xq, *xd);
    return 0;
}

extern "C" int gpu_test_matmul(int type, const void *w, int64_t n_out, int64_t n_in, const float *x, int n_tok, float *y,
                               int path, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    const int blk = gq_block(type);
    const int ok = blk && n_in % blk == 0 && path >= GPU_MM_MODEL && path <= GPU_MM_GEMM16 &&
                   (path != GPU_MM_MMQ || (gq_is_k(type) && n_tok >= MMA_MIN_TOK)) &&
                   (path != GPU_MM_DEC || gq_is_k(type)) && (path < GPU_MM_DQ16 || gq_is_quant(type));
    if (!ok) { set_msg(msg, msg_len, "type %d, n_in %lld: no path %d", type, (long long)n_in, path); return -1; }
    const size_t rb = kern_row_size(type, n_in);
    const uint8_t *dw = (const uint8_t *)t_up(&b, w, rb * n_out);
    float *dx = (float *)t_up(&b, x, (size_t)n_tok * n_in * 4), *dy = (float *)t_up(&b, NULL, (size_t)n_tok * n_out * 4);
    int8_t *xq;
    float *xd;
    T_NEED(dw && dx && dy && !up_q8k(&b, type, dx, (int)n_in, n_tok, &xq, &xd));
    const dmat m = {dw, type, (int)n_in, (int)n_out, rb};
    dq16_buf dq;
    dq.w = (__half *)t_up(&b, NULL, (size_t)n_out * n_in * 2), dq.x = (__half *)t_up(&b, NULL, (size_t)n_tok * n_in * 2);
    dq.wcap = (size_t)n_out * n_in, dq.xcap = (size_t)n_tok * n_in;
    T_NEED(dq.w && dq.x && smem_limits(64) == cudaSuccess);
    const int ni = (int)n_in, no = (int)n_out;
    if (path == GPU_MM_MODEL) T_LAUNCH(matmul(0, &m, dx, ni, xq, xd, n_tok, dy, no, 0, &dq));
    else if (path == GPU_MM_MMQ) T_LAUNCH(matmul_mmq(0, &m, xq, xd, n_tok, dy, no, 0));
    else if (path == GPU_MM_DQ16) T_LAUNCH(matmul_dq16(0, &m, dx, ni, xq, xd, n_tok, dy, no, 0, &dq));
    else if (path == GPU_MM_GEMM16) {
        matmul_dq16(0, &m, dx, ni, xq, xd, n_tok, dy, no, 0, &dq); /* fills the scratch */
        T_LAUNCH(gemm16(0, &dq, no, n_tok, ni, dy, no, 0));
    } else if (path == GPU_MM_DEC) {
        for (int t = 0; t < n_tok; t++)
            dec_single(0, &m, dx + (size_t)t * ni, xq + (size_t)t * ni, xd + (size_t)t * (ni / 256), dy + (size_t)t * no, MV_STORE);
    } else
        for (int t0 = 0; t0 < n_tok; t0 += MV_NT)
            GQ_DISPATCH(type, (launch_plain(k_mv<T>, (no + MV_ROWS - 1) / MV_ROWS, MV_ROWS * 32, 0, 0, dw, rb, ni, no,
                                            (const float *)dx + (size_t)t0 * ni, ni, n_tok - t0 < MV_NT ? n_tok - t0 : MV_NT,
                                            dy + (size_t)t0 * no, no, 0)));
    return t_finish(&b, y, dy, (size_t)n_tok * n_out * 4, msg, msg_len);
}

extern "C" int gpu_test_attention(const float *q, const uint16_t *k, const uint16_t *v, int n_head, int n_kv, int hd,
                                  int n_tok, int pos0, float *out, int8_t *oq, float *od, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    const int group = n_head / n_kv, qdim = n_head * hd, kvdim = n_kv * hd, n_pos = pos0 + n_tok;
    if (n_kv < 1 || !attn_ok(hd, group) || n_tok < 1) { set_msg(msg, msg_len, "attention shape unsupported"); return -1; }
    float *dq = (float *)t_up(&b, q, (size_t)n_tok * qdim * 4);
    __half *kc = (__half *)t_up(&b, k, (size_t)n_pos * kvdim * 2), *vc = (__half *)t_up(&b, v, (size_t)n_pos * kvdim * 2);
    float *dout = (float *)t_up(&b, NULL, (size_t)n_tok * qdim * 4);
    float *part = (float *)t_up(&b, NULL, (size_t)n_head * ATT_DEC_SPLITS * (hd + 2) * 4);
    int *dp = (int *)t_up(&b, &pos0, sizeof pos0);
    unsigned *cnt = (unsigned *)t_up(&b, NULL, (size_t)n_kv * sizeof(unsigned));
    int8_t *dxq = (int8_t *)t_up(&b, NULL, (size_t)qdim);
    float *dxd = (float *)t_up(&b, NULL, (size_t)(qdim / 256 + 1) * 4);
    T_NEED(dq && kc && vc && dout && part && dp && cnt && dxq && dxd && smem_limits(hd) == cudaSuccess);
    const float scale = 1.0f / sqrtf((float)hd);
    if (n_tok > 1) {
        T_LAUNCH(launch_attn(0, dq, kc, vc, dp, n_tok, n_head, n_kv, hd, scale, dout));
        return t_finish(&b, out, dout, (size_t)n_tok * qdim * 4, msg, msg_len);
    }
    /* twice: the second run finds the counters the first one left (zero) */
    int fq = launch_attn_dec(0, dq, kc, vc, dp, n_head, n_kv, hd, scale, part, cnt, dout, oq ? dxq : NULL, dxd);
    T_LAUNCH(fq = launch_attn_dec(0, dq, kc, vc, dp, n_head, n_kv, hd, scale, part, cnt, dout, oq ? dxq : NULL, dxd));
    if (oq && !fq) quant(0, dout, qdim, qdim, 1, dxq, dxd);
    T_NEED(!oq || (cudaMemcpy(oq, dxq, (size_t)qdim, cudaMemcpyDeviceToHost) == cudaSuccess &&
                   cudaMemcpy(od, dxd, (size_t)(qdim / 256) * 4, cudaMemcpyDeviceToHost) == cudaSuccess));
    return t_finish(&b, out, dout, (size_t)qdim * 4, msg, msg_len);
}

extern "C" int gpu_test_topk(const float *x, int n, int k, int32_t *ids, float *vals, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    if (k < 1 || k > TOPK_MAX || k > n) { set_msg(msg, msg_len, "top-k of %d out of 1..%d", k, TOPK_MAX); return -1; }
    float *dx = (float *)t_up(&b, x, (size_t)n * 4);
    float *tv = (float *)t_up(&b, NULL, TOPK_BLOCKS * TOPK_MAX * 4), *fv = (float *)t_up(&b, NULL, TOPK_MAX * 4);
    int *ti = (int *)t_up(&b, NULL, TOPK_BLOCKS * TOPK_MAX * 4), *fi = (int *)t_up(&b, NULL, TOPK_MAX * 4);
    T_NEED(dx && tv && fv && ti && fi && topk(0, dx, n, k, tv, ti, fv, fi) == cudaSuccess);
    T_NEED(cudaMemcpy(vals, fv, (size_t)k * 4, cudaMemcpyDeviceToHost) == cudaSuccess);
    return t_finish(&b, ids, fi, (size_t)k * 4, msg, msg_len);
}
