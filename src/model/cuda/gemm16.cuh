/* gemm16.cuh -- prefill products of DQ16_MIN_TOK tokens and more, on
 * llama.cpp's path for long prompts: the weight matrix is dequantized to
 * f16 once per chunk (k_dq16; a scratch matrix, never kept), the chunk's
 * activations rounded to f16 (k_f2h; k_q2h from their Q8_K for K-quants,
 * as the CPU sees them), and one plain f16 GEMM runs on the
 * tensor cores -- where k_mmq unpacks every weight tile in every block of
 * tokens, and spends its time on that and on the loads' latency. Products
 * of other quantized types (Q8_0, Q4_0) take this path from MMA_MIN_TOK
 * tokens on.
 * k_gemm16: y[N][M] (+)= X[N][K] W[M][K]^T (both K-contiguous), f32 sums.
 *   - block: BM weight rows x GM_BN tokens, 8 warps as 2 (rows) x 4
 *     (tokens), each BM/2 rows x 32 tokens: BM/32 m16 tiles x 4 n8 tiles,
 *     16 or 32 mma per 16 of K for 6 or 8 ldmatrix;
 *   - K in steps of GM_BK through GM_ST shared-memory stages filled by
 *     cp.async (rows padded to 80 bytes: ldmatrix's 8 row addresses fall
 *     in distinct banks), so the loads of two steps are in flight while
 *     one is multiplied;
 *   - rows, tokens or K past the ends are zeros in shared memory, and not
 *     written. K % 8 == 0.
 * Fragments as in k_fa: A (weights, M x K row) by ldmatrix, B (tokens,
 * N x K, i.e. K x N column) by ldmatrix of the token rows. */

#ifndef GEMM16_CUH
#define GEMM16_CUH

#include "model/cuda/quant.cuh"

#define GM_BN 128
#define GM_BK 32
#define GM_ST 3
#define GM_LD (GM_BK + 8)
#define DQ16_MIN_TOK 256 /* tokens from which a product takes this path */

static inline size_t gemm16_smem(int bm) { return (size_t)GM_ST * (bm + GM_BN) * GM_LD * sizeof(__half); }

/* 8 values as f16 at out (16-byte aligned) */
__device__ __forceinline__ void st_h8(__half *out, const float *v) {
    uint4 u;
    u.x = pack_h2(v[0], v[1]), u.y = pack_h2(v[2], v[3]), u.z = pack_h2(v[4], v[5]), u.w = pack_h2(v[6], v[7]);
    *(uint4 *)out = u;
}

/* out[r][k] = the dequantized W (f16), 8 values a thread */
template <int T> __global__ void k_dq16(const uint8_t *W, size_t rb, int n_in, int n_out, __half *out) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8, n = (size_t)n_in * n_out;
    if (i >= n) return;
    const int r = (int)(i / (size_t)n_in), k = (int)(i % (size_t)n_in);
    float v[8];
    deq8<T>(W + (size_t)r * rb, k, v);
    st_h8(out + i, v);
}

/* out[t][k] = x[t][k] as f16 (x's rows ldx apart), 8 values a thread */
static __global__ void k_f2h(const float *x, int ldx, int n, int rows, __half *out) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= (size_t)n * rows) return;
    const int t = (int)(i / (size_t)n), k = (int)(i % (size_t)n);
    const float4 a = *(const float4 *)(x + (size_t)t * ldx + k), b = *(const float4 *)(x + (size_t)t * ldx + k + 4);
    const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    st_h8(out + i, v);
}

/* out[t][k] = xq[t][k] * xd[t][k / 256] as f16: Q8_K activations (rows of
 * n, k_quant's layout), so that K-quant weights see the activations the
 * CPU's products see; 8 values a thread */
static __global__ void k_q2h(const int8_t *xq, const float *xd, int n, int rows, __half *out) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= (size_t)n * rows) return;
    const int t = (int)(i / (size_t)n), k = (int)(i % (size_t)n);
    const float d = xd[(size_t)t * (n >> 8) + (k >> 8)];
    const uint2 q = *(const uint2 *)(xq + i);
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = __fmul_rn((float)(int8_t)((j < 4 ? q.x : q.y) >> (8 * (j & 3))), d);
    st_h8(out + i, v);
}

/* rows r0.. of a K-contiguous f16 matrix (n rows, K columns), columns
 * k0..k0+GM_BK, into a stage: nr rows of GM_LD halves; 16-byte pieces,
 * zeros past the ends */
__device__ __forceinline__ void gm_load(__half *st, const __half *m, int r0, int nr, int n, int K, int k0) {
    for (int c = threadIdx.x; c < nr * (GM_BK / 8); c += blockDim.x) {
        const int r = c / (GM_BK / 8), k = k0 + (c % (GM_BK / 8)) * 8;
        const bool ok = r0 + r < n && k < K;
        cp_async16(st + r * GM_LD + (c % (GM_BK / 8)) * 8, m + (ok ? (size_t)(r0 + r) * K + k : 0), ok ? 16 : 0);
    }
}

template <int BM>
__global__ void __launch_bounds__(256, 2)
    k_gemm16(const __half *W, const __half *X, int M, int N, int K, float *y, int ldy, int acc) {
    constexpr int MI = BM / 32; /* m16 tiles per warp */
    DYN_SMEM(__half, gsm);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * GM_BN, wm = (warp & 1) * (BM / 2), wn = (warp >> 1) * 32;
    float c[MI][4][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0.0f;
    const int nk = (K + GM_BK - 1) / GM_BK;
    auto stage_a = [&](int s) { return gsm + (size_t)s * (BM + GM_BN) * GM_LD; };
#pragma unroll
    for (int s = 0; s < GM_ST - 1; s++) {
        if (s < nk) {
            gm_load(stage_a(s), W, m0, BM, M, K, s * GM_BK);
            gm_load(stage_a(s) + BM * GM_LD, X, n0, GM_BN, N, K, s * GM_BK);
        }
        cp_async_commit();
    }
    for (int kt = 0; kt < nk; kt++) {
        cp_async_wait<GM_ST - 2>(); /* step kt's group has landed */
        __syncthreads();            /* for every thread; and step kt - 1's stage is free */
        const int nx = kt + GM_ST - 1;
        if (nx < nk) {
            gm_load(stage_a(nx % GM_ST), W, m0, BM, M, K, nx * GM_BK);
            gm_load(stage_a(nx % GM_ST) + BM * GM_LD, X, n0, GM_BN, N, K, nx * GM_BK);
        }
        cp_async_commit(); /* an empty group past the end keeps the count */
        const __half *As = stage_a(kt % GM_ST), *Bs = As + BM * GM_LD;
#pragma unroll
        for (int kk = 0; kk < GM_BK; kk += 16) {
            unsigned a[MI][4], b[2][4];
#pragma unroll
            for (int i = 0; i < MI; i++) /* rows 16i + lane % 16, k + (lane / 16) * 8: a0..a3 */
                ldsm_x4(a[i], As + (wm + 16 * i + (lane & 15)) * GM_LD + kk + (lane >> 4) * 8);
#pragma unroll
            for (int jj = 0; jj < 2; jj++) /* tokens 16jj.. (+8 for matrices 2, 3), k (+8 for 1, 3) */
                ldsm_x4(b[jj], Bs + (wn + 16 * jj + ((lane >> 3) >> 1) * 8 + (lane & 7)) * GM_LD + kk + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int jj = 0; jj < 2; jj++) {
                    mma_f16(c[i][2 * jj], a[i], b[jj][0], b[jj][1]);
                    mma_f16(c[i][2 * jj + 1], a[i], b[jj][2], b[jj][3]);
                }
        }
    }
    cp_async_wait<0>();
    mma_store<MI, 4>(c, y, ldy, m0 + wm, n0 + wn, M, N, g, t, acc);
}

#endif
