/* launch.cuh -- how the backend launches its kernels: grids, blocks and
 * shared memory for a shape, the jobs of the fused decode kernel, and the
 * choice of kernel for a product. Host code, shared by gpu.cu and the
 * tests (the probes and the emulation), so all run the kernels exactly as
 * configured here.
 */
#ifndef LAUNCH_CUH
#define LAUNCH_CUH

#include <string.h>

#include "model/cuda/attn.cuh"
#include "model/cuda/dec.cuh"
#include "model/cuda/gemm16.cuh"
#include "model/cuda/mmq.cuh"
#include "model/cuda/mv.cuh"

typedef struct dmat {
    const uint8_t *d; /* device */
    int type;
    int n_in, n_out;
    size_t rb; /* bytes per row */
} dmat;

typedef struct dlayer {
    float *attn_norm, *ffn_norm;
    dmat wq, wk, wv, wo, gate, up, down;
} dlayer;

/* Warps per row for a decode product: split rows until about 4k warps
 * share the matrix (splitting further costs more in block reductions than
 * it gains in parallelism), keeping at least four super-blocks per warp
 * (one step of mv_part_q). */
static inline int pick_wpr(int rows, int n_in, int max) {
    const int nsb = (n_in + 255) / 256;
    int w = 1;
    while (w < max && rows * w < 4096 && nsb >= 8 * w) w *= 2;
    return w;
}

static inline mv_seg seg_of(const dmat *w, float *y, int blk0) {
    mv_seg s = {w->d, w->rb, w->type, w->n_out, blk0, y};
    return s;
}

/* The job y = W x (MV_STORE) or y += W x (MV_ACC). */
static inline mv_job job_single(const dmat *w, const float *x, const int8_t *xq, const float *xd, float *y, int mode) {
    mv_job j;
    memset(&j, 0, sizeof j);
    j.nseg = 1, j.n_in = w->n_in, j.mode = mode, j.x = x, j.xq = xq, j.xd = xd;
    j.wpr = pick_wpr(w->n_out, w->n_in, 8);
    j.s[0] = seg_of(w, y, 0);
    return j;
}

static inline void launch_single(cudaStream_t st, const mv_job &j) {
    const int R = 8 / j.wpr;
    launch(k_dec, (j.s[0].n_out + R - 1) / R, 256, 0, st, j);
}

static inline void dec_single(cudaStream_t st, const dmat *w, const float *x, const int8_t *xq, const float *xd, float *y,
                       int mode) {
    launch_single(st, job_single(w, x, xq, xd, y, mode));
}

/* y += W x, then the last block writes ny = rmsnorm(y) * nw and its Q8_K
 * (nxq, nxd) for the next product (see mv_job). */
static inline void dec_acc_norm(cudaStream_t st, const dmat *w, const float *x, const int8_t *xq, const float *xd, float *y,
                         const float *nw, float eps, float *ny, int8_t *nxq, float *nxd, unsigned *counter) {
    mv_job j = job_single(w, x, xq, xd, y, MV_ACC);
    j.early = 1;
    j.nw = nw, j.eps = eps, j.ny = ny, j.nxq = nxq, j.nxd = nxd, j.counter = counter;
    launch_single(st, j);
}

/* q = rope(Wq x); cache[pos] = rope(Wk x), Wv x (see k_dec). */
static inline void dec_qkv(cudaStream_t st, const dlayer *L, const float *x, const int8_t *xq, const float *xd, float *q,
                    __half *kc, __half *vc, const int *d_pos, float theta_scale, int rope, int hd) {
    mv_job j;
    memset(&j, 0, sizeof j);
    j.early = 1;
    j.nseg = 3, j.n_in = L->wq.n_in, j.mode = MV_QKV, j.x = x, j.xq = xq, j.xd = xd;
    j.wpr = pick_wpr(L->wq.n_out + L->wk.n_out + L->wv.n_out, j.n_in, 4);
    const int R = 8 / j.wpr; /* even, and divides head_dim: pairs stay in a block */
    const int b1 = L->wq.n_out / R, b2 = b1 + L->wk.n_out / R, nb = b2 + L->wv.n_out / R;
    j.s[0] = seg_of(&L->wq, q, 0), j.s[1] = seg_of(&L->wk, NULL, b1), j.s[2] = seg_of(&L->wv, NULL, b2);
    j.kc = kc, j.vc = vc, j.d_pos = d_pos, j.theta_scale = theta_scale, j.rope = rope, j.hd = hd;
    launch(k_dec, nb, 256, 0, st, j);
}

/* out = silu(Wgate x) * (Wup x): a warp per gate/up row pair (k_dec_glu2)
 * where one warp per row is the split anyway, else k_dec. */
static inline void dec_glu(cudaStream_t st, const dlayer *L, const float *x, const int8_t *xq, const float *xd, float *out) {
    mv_job j;
    memset(&j, 0, sizeof j);
    j.early = 1;
    j.nseg = 1, j.n_in = L->gate.n_in, j.mode = MV_GLU, j.x = x, j.xq = xq, j.xd = xd;
    j.wpr = pick_wpr(2 * L->gate.n_out, j.n_in, 4);
    const int glu2 = j.wpr == 1, R = glu2 ? 8 : 4 / j.wpr;
    j.s[0] = seg_of(&L->gate, out, 0), j.s[1] = seg_of(&L->up, NULL, 1 << 30);
    launch(glu2 ? k_dec_glu2 : k_dec, (L->gate.n_out + R - 1) / R, 256, 0, st, j);
}

/* rows x n of x (stride ldx) -> Q8_K in xq/xd (row stride n) */
static inline void quant(cudaStream_t st, const float *x, int n, int ldx, int rows, int8_t *xq, float *xd) {
    if (n % 256) return; /* only K-quant products read it, and their rows are whole super-blocks */
    dim3 grid((n / 256 + 7) / 8, rows);
    launch(k_quant, grid, 256, 0, st, x, n, ldx, xq, xd);
}

/* The dynamic shared memory the attention kernels and k_gemm16's 128-row
 * tiles take above the 48 KiB default. Once per model (and per probe). */
static inline cudaError_t smem_limits(int hd) {
    cudaError_t e = cudaFuncSetAttribute(hd == 128 ? k_attn_dmma<128> : k_attn_dmma<64>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dmma_smem(hd));
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(hd == 128 ? k_fa<128> : k_fa<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)fa_smem(hd));
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(k_gemm16<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)gemm16_smem(128));
    return e;
}

/* Prefill attention of n_tok > 1 tokens (k_fa; attn_ok). */
static inline void launch_attn(cudaStream_t st, const float *q, const __half *kc, const __half *vc, const int *d_pos, int n_tok,
                        int n_head, int n_kv, int hd, float scale, float *out) {
    const int group = n_head / n_kv;
    const dim3 grid(n_kv, (n_tok + fa_tokens(group) - 1) / fa_tokens(group));
    launch_plain(hd == 128 ? k_fa<128> : k_fa<64>, grid, FA_WARPS * 32, fa_smem(hd), st, q, kc, vc, d_pos, n_tok, n_head,
                 n_kv, scale, out);
}

/* One token's attention (k_attn_dmma; attn_ok): part holds ATT_DEC_SPLITS
 * partials per head, counter n_kv zeros (left zero). The Q8_K of the output
 * too when the group's heads are whole super-blocks (xq set); returns
 * whether it made it, else the caller quantizes. */
static inline int launch_attn_dec(cudaStream_t st, const float *q, const __half *kc, const __half *vc, const int *d_pos,
                           int n_head, int n_kv, int hd, float scale, float *part, unsigned *counter, float *out,
                           int8_t *xq, float *xd) {
    const int group = n_head / n_kv, fq = xq && (group * hd) % 256 == 0;
    launch(hd == 128 ? k_attn_dmma<128> : k_attn_dmma<64>, dim3(n_kv, ATT_DEC_SPLITS), DM_WARPS * 32, dmma_smem(hd), st, q,
           kc, vc, d_pos, n_head, n_kv, scale, ATT_DMMA_MIN, 1, part, counter, out, fq ? xq : (int8_t *)NULL, xd);
    return fq;
}

/* Scratch of the f16 GEMM path (one per stream that runs products): the
 * dequantized matrix (wcap halves) and the activations in f16 (xcap). */
typedef struct dq16_buf {
    __half *w, *x;
    size_t wcap, xcap;
} dq16_buf;

/* y[N][M] (+)= dq->x[N][K] dq->w[M][K]^T: k_gemm16 with 128-row tiles
 * where they still give a block per SM of 132, else 64 */
static inline void gemm16(cudaStream_t st, const dq16_buf *dq, int M, int N, int K, float *y, int ldy, int acc) {
    const int bm = ((M + 127) / 128) * ((N + GM_BN - 1) / GM_BN) >= 132 ? 128 : 64;
    launch_plain(bm == 128 ? k_gemm16<128> : k_gemm16<64>, dim3((M + bm - 1) / bm, (N + GM_BN - 1) / GM_BN), 256,
                 gemm16_smem(bm), st, dq->w, dq->x, M, N, K, y, ldy, acc);
}

/* W dequantized to f16, x rounded to f16 (from its Q8_K xq/xd for K-quant
 * weights, where given), one f16 GEMM */
static inline void matmul_dq16(cudaStream_t st, const dmat *w, const float *x, int ldx, const int8_t *xq, const float *xd,
                        int n_tok, float *y, int ldy, int acc, const dq16_buf *dq) {
    const size_t nw = (size_t)w->n_out * w->n_in, nx = (size_t)n_tok * w->n_in;
    GQ_DISPATCH(w->type, (launch_plain(k_dq16<T>, (unsigned)((nw / 8 + 255) / 256), 256, 0, st, w->d, w->rb, w->n_in,
                                       w->n_out, dq->w)));
    if (gq_is_k(w->type) && xq) launch_plain(k_q2h, (unsigned)((nx / 8 + 255) / 256), 256, 0, st, xq, xd, w->n_in, n_tok, dq->x);
    else launch_plain(k_f2h, (unsigned)((nx / 8 + 255) / 256), 256, 0, st, x, ldx, w->n_in, n_tok, dq->x);
    gemm16(st, dq, w->n_out, n_tok, w->n_in, y, ldy, acc);
}

/* k_mmq with the widest token tile that still gives two blocks per SM */
static inline void matmul_mmq(cudaStream_t st, const dmat *w, const int8_t *xq, const float *xd, int n_tok, float *y, int ldy,
                       int acc) {
    const int rb = (w->n_out + MM_R - 1) / MM_R;
    const int bn = rb * ((n_tok + 127) / 128) >= 264 ? 128 : rb * ((n_tok + 63) / 64) >= 264 ? 64 : 32;
    const dim3 grid(rb, (n_tok + bn - 1) / bn);
#define MQ(TT) \
    (bn == 128 ? launch_plain(k_mmq<TT, 128>, grid, 256, 0, st, w->d, w->rb, w->n_in, w->n_out, xq, xd, n_tok, y, ldy, acc) \
     : bn == 64 ? launch_plain(k_mmq<TT, 64>, grid, 256, 0, st, w->d, w->rb, w->n_in, w->n_out, xq, xd, n_tok, y, ldy, acc) \
                : launch_plain(k_mmq<TT, 32>, grid, 256, 0, st, w->d, w->rb, w->n_in, w->n_out, xq, xd, n_tok, y, ldy, acc))
    if (w->type == KERN_Q4_K) MQ(KERN_Q4_K);
    else if (w->type == KERN_Q5_K) MQ(KERN_Q5_K);
    else MQ(KERN_Q6_K);
#undef MQ
}

/* y = x W^T for n_tok rows. x: f32 rows (ldx); xq/xd: the same rows as
 * Q8_K (k_quant / k_rmsnorm), read with K-quant weights. dq: the f16
 * GEMM's scratch, or NULL (the head: its matrix does not fit).
 *   - K-quant weights: >= DQ16_MIN_TOK tokens matmul_dq16, >= MMA_MIN_TOK
 *     k_mmq, fewer k_dec a token at a time
 *   - other quantized types, >= MMA_MIN_TOK tokens: matmul_dq16
 *   - otherwise k_mv on f32 activations */
static inline void matmul(cudaStream_t st, const dmat *w, const float *x, int ldx, const int8_t *xq, const float *xd,
                          int n_tok, float *y, int ldy, int acc, const dq16_buf *dq) {
    const int kq = gq_is_k(w->type);
    if (dq && n_tok >= (kq ? DQ16_MIN_TOK : MMA_MIN_TOK) && gq_is_quant(w->type) &&
        (size_t)w->n_out * w->n_in <= dq->wcap && (size_t)n_tok * w->n_in <= dq->xcap)
        return matmul_dq16(st, w, x, ldx, xq, xd, n_tok, y, ldy, acc, dq);
    if (n_tok >= MMA_MIN_TOK && kq) return matmul_mmq(st, w, xq, xd, n_tok, y, ldy, acc);
    if (kq) {
        for (int t = 0; t < n_tok; t++)
            dec_single(st, w, x + (size_t)t * ldx, xq + (size_t)t * w->n_in, xd + (size_t)t * (w->n_in / 256),
                       y + (size_t)t * ldy, acc ? MV_ACC : MV_STORE);
        return;
    }
    for (int t0 = 0; t0 < n_tok; t0 += MV_NT) {
        const int nt = n_tok - t0 < MV_NT ? n_tok - t0 : MV_NT;
        const int blocks = (w->n_out + MV_ROWS - 1) / MV_ROWS;
        GQ_DISPATCH(w->type, (launch_plain(k_mv<T>, blocks, MV_ROWS * 32, 0, st, w->d, w->rb, w->n_in, w->n_out,
                                           x + (size_t)t0 * ldx, ldx, nt, y + (size_t)t0 * ldy, ldy, acc)));
    }
}

/* The k (<= TOPK_MAX) best of n values at d_vals, in descending order
 * (ties: lower id first), into fv/fi: each of TOPK_BLOCKS blocks keeps the
 * k best of its chunk (tv/ti, TOPK_BLOCKS * TOPK_MAX), one block merges. */
static inline cudaError_t topk(cudaStream_t st, const float *d_vals, int n, int k, float *tv, int *ti, float *fv, int *fi) {
    const int chunk = (n + TOPK_BLOCKS - 1) / TOPK_BLOCKS;
    const size_t sm1 = (size_t)chunk * 8, sm2 = (size_t)TOPK_BLOCKS * k * 8;
    if (sm1 > 200 * 1024) return cudaErrorInvalidValue;
    cudaError_t e = cudaFuncSetAttribute(k_topk, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(sm1 > sm2 ? sm1 : sm2));
    if (e != cudaSuccess) return e;
    launch_plain(k_topk, TOPK_BLOCKS, 256, sm1, st, d_vals, (const int *)NULL, n, chunk, k, tv, ti);
    launch_plain(k_topk, 1, 256, sm2, st, (const float *)tv, (const int *)ti, TOPK_BLOCKS * k, TOPK_BLOCKS * k, k, fv, fi);
    return cudaGetLastError();
}

#endif
