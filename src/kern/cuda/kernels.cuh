/* kernels.cuh -- the device code of the CUDA backend (issue 12): every
 * kernel and device function of gpu.cu, whose file comment tells the
 * design; gpu.cu holds the host side (upload, launches, graphs, tests).
 *
 * The same text compiles two ways:
 *   - by nvcc, for the GPU (gpu.cu includes it);
 *   - as plain C++ with SMOLBOT_GPU_EMU defined, on the CPU: emu.h gives
 *     the CUDA vocabulary (threads, barriers, shuffles, half floats, and
 *     mma.sync / ldmatrix / cp.async with the PTX ISA's fragment layouts),
 *     so tests/test_gpu_emu.cpp runs the kernels' own code against the
 *     scalar references on machines without a GPU -- CI included. The
 *     few inline-asm helpers have an emulated twin here, nothing else
 *     differs. The emulation checks arithmetic and indexing, not speed,
 *     memory ordering or races.
 */
#ifndef KERNELS_CUH
#define KERNELS_CUH

#ifdef SMOLBOT_GPU_EMU
#include "emu.h"
#else
#include <cuda_runtime.h>
#include <mma.h>
using namespace nvcuda;
#endif
#include <math.h>
#include <stdint.h>

#include "quant.cuh"

/* dynamic shared memory of a kernel launch, as an array of T */
#ifdef SMOLBOT_GPU_EMU
#define DYN_SMEM(T, name) T *name = (T *)emu_dyn_smem()
#else
#define DYN_SMEM(T, name) extern __shared__ __align__(16) T name[]
#endif

#define MV_ROWS 8      /* rows (warps) per k_mv block */
#define MV_NT 8        /* tokens per k_mv pass */
#define MMA_MIN_TOK 9  /* tensor-core prefill (k_mmq, k_mm) from this many tokens on */
#define ATT_TILE 32    /* positions per K/V tile (one per lane) */
#define ATT_PPW 8      /* (token, head) pairs per warp, at most */
#define ATT_DPL 8      /* head dims per lane, at most (head_dim <= 256) */
#define ATT_PAIRS 32   /* pairs per block, at most: more blocks for prefill */
#define ATT_SPLIT 32   /* positions per decode split: one tile per block */
#define TOPK_MAX 64
#define TOPK_BLOCKS 64

/* ---- kernels ---------------------------------------------------------- */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* y[t*ldy + row] (+)= dot(W row, x[t*ldx ..]) for t < nt <= MV_NT. */
template <int T>
__global__ void __launch_bounds__(MV_ROWS * 32)
    k_mv(const uint8_t *W, size_t rb, int n_in, int n_out, const float *x, int ldx, int nt, float *y, int ldy,
         int acc) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * MV_ROWS + warp;
    if (row >= n_out) return;
    const uint8_t *wr = W + (size_t)row * rb;
    float s[MV_NT];
#pragma unroll
    for (int t = 0; t < MV_NT; t++) s[t] = 0.0f;
    for (int k = lane * 8; k < n_in; k += 256) {
        float w[8];
        deq8<T>(wr, k, w);
#pragma unroll
        for (int t = 0; t < MV_NT; t++) {
            if (t < nt) {
                const float4 *xp = (const float4 *)(x + (size_t)t * ldx + k);
                const float4 a = __ldg(xp), b = __ldg(xp + 1);
                s[t] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z +
                        w[7] * b.w;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < MV_NT; t++) {
        if (t < nt) {
            const float v = warp_sum(s[t]);
            if (lane == 0) {
                float *yp = y + (size_t)t * ldy + row;
                *yp = acc ? *yp + v : v;
            }
        }
    }
}

/* the K-quants: products with them read Q8_K activations */
static __host__ __device__ __forceinline__ bool gq_is_k(int t) { return t == GT_Q4_K || t == GT_Q5_K || t == GT_Q6_K; }

/* ---- decode: fused matrix-vector jobs ---------------------------------- *
 * One token: every product is a pass over the weights, so the step is
 * bound by memory bandwidth and by the number of kernel boundaries (each a
 * few microseconds even inside a graph). k_dec therefore does a "job":
 * up to three matrices that read the same input (Wq, Wk, Wv), and what
 * follows them in the forward pass:
 *   MV_STORE / MV_ACC  y = W x, or y += W x (the residual add of Wo, down)
 *   MV_QKV   q = Wq x rotated (RoPE, unless a NoPE layer); k = Wk x rotated
 *            and v = Wv x rounded to f16 straight into the cache row at *d_pos
 *   MV_GLU   out = silu(Wgate x) * (Wup x)
 * A block is 8 warps; a row is split over wpr warps (1..8, chosen from the
 * row length and count so that short matrices still fill the GPU) and the
 * block owns 8 / wpr rows ("virtual rows": GLU pairs gate row r with up
 * row r in one block, QKV keeps the two rows of a RoPE pair together).
 * Lane i of a warp takes values 8i..8i+7 of each 256-value super-block, as
 * in k_mv; K-quants use dl * sum(q x) - ml * sum(x) (same value, fewer
 * operations than dequantizing each weight). */
enum { MV_STORE = 0, MV_ACC = 1, MV_QKV = 2, MV_GLU = 3 };
#define MV_SEGS 3

typedef struct mv_seg {
    const uint8_t *W;
    size_t rb;
    int type, n_out, blk0; /* blk0: first block of this segment */
    float *y;              /* MV_STORE/ACC/GLU: output rows; MV_QKV: q (seg 0), unused for k, v */
} mv_seg;

typedef struct mv_job {
    mv_seg s[MV_SEGS];
    int nseg, n_in, wpr, mode;
    const float *x;   /* the input in f32 (weights that are not K-quants) */
    const int8_t *xq; /* ... and as Q8_K (K-quant weights): values, */
    const float *xd;  /* one scale per 256 (k_quant) */
    /* MV_QKV */
    __half *kc, *vc;
    const int *d_pos;
    float theta_scale;
    int rope, hd;
    /* MV_ACC: when nw is set, the last block to finish also normalizes the
     * whole updated y (the residual) into ny and nxq/nxd for the next
     * product -- one kernel boundary less per norm */
    const float *nw;
    float eps;
    float *ny;
    int8_t *nxq;
    float *nxd;
    unsigned *counter;
    /* in the decode graph: let the next kernel start now (gdc_launch) and
     * ask L2 for this block's rows before waiting for the previous one */
    int early;
    /* MV_GLU with one warp per row (wpr 1), no fused Q8_K: k_dec_glu2, each
     * warp does gate row r and up row r at once (SMOLBOT_GPU_GLU2) */
    int glu2;
    /* each block first quantizes x (n_in f32) to Q8_K in its shared memory
     * (n_in + n_in / 64 bytes of it) and reads that instead of xq, xd: k_quant's
     * work inside the product, one kernel boundary less (SMOLBOT_GPU_QIN) */
    int qin;
    /* with qin: x is the residual, and each block quantizes rmsnorm(x) *
     * qnw (eps), as the last block of the product before would have
     * (rms_row, the same values): no serial tail there (SMOLBOT_GPU_NIN) */
    const float *qnw;
    /* 3: k_dec<3>, three steps of loads per iteration (SMOLBOT_GPU_DU3,
     * for down's long rows); else k_dec<2> */
    int unroll;
} mv_job;

/* ---- K-quant weights x Q8_K activations (decode) ----------------------
 * The activations are quantized once per product input, exactly as the CPU
 * does (k_quant mirrors kern_ref_quantize_q8_K: int8 values, one f32 scale
 * per 256), so the products see the same rounding as the reference and as
 * llama.cpp. A super-block's 256 values are read by 16 lanes, 16 values
 * each, as integer dot products of 4 (dp4a): for Q4_K/Q5_K
 *   sum = xd * (d * sum_j sc_j (q . a)_j - dmin * sum_j m_j (1 . a)_j)
 * and for Q6_K  sum = xd * d * sum_j sc_j ((q . a)_j - 32 (1 . a)_j). */
__device__ __forceinline__ uint32_t ld_u32_2(const uint8_t *p) { /* 2-byte aligned */
    const uint16_t *h = (const uint16_t *)p;
    return (uint32_t)h[0] | ((uint32_t)h[1] << 16);
}

/* Q6_K read another way in decode (SMOLBOT_GPU_Q6B; the host gives such
 * segments this pseudo type): see kq_sb */
#define GT_Q6_KB 1014

/* 16 bytes at p, a 2-byte aligned address, as four words: five aligned
 * word loads funnel-shifted by p's misalignment (no 2-byte loads; the
 * fifth is not needed when p is aligned, and stays inside the row) */
__device__ __forceinline__ void ld_16_2(const uint8_t *p, uint32_t *w) {
    const uint32_t *a = (const uint32_t *)((uintptr_t)p & ~(uintptr_t)3);
    const unsigned sh = ((unsigned)(uintptr_t)p & 3) * 8;
    const uint32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4];
    w[0] = __funnelshift_r(a0, a1, sh), w[1] = __funnelshift_r(a1, a2, sh);
    w[2] = __funnelshift_r(a2, a3, sh), w[3] = __funnelshift_r(a3, a4, sh);
}

/* lane li (0..7) of a super-block at blk, activations a[256], scale ad:
 * 32 values per lane, so the block's header (d, dmin, scales) is read and
 * decoded once per 32 values -- the decode kernel is bound by issued
 * instructions as much as by memory. */
template <int T> __device__ __forceinline__ float kq_sb(const uint8_t *blk, const int8_t *a, float ad, int li) {
    const int ones = 0x01010101;
    if (T == GT_Q4_K || T == GT_Q5_K) {
        const int c = li >> 1, l0 = (li & 1) * 16;
        const uint32_t dd = *(const uint32_t *)blk;
        const float d = __half2float(__ushort_as_half((unsigned short)(dd & 0xFFFF)));
        const float dmin = __half2float(__ushort_as_half((unsigned short)(dd >> 16)));
        /* this lane's sub-blocks: 2c (low nibbles) and 2c + 1 (high) */
        const uint32_t s0 = *(const uint32_t *)(blk + 4), s1 = *(const uint32_t *)(blk + 8), s2 = *(const uint32_t *)(blk + 12);
        int sc[2], m[2];
        gq_sm2(s0, s1, s2, c, sc, m);
        const uint4 u = *(const uint4 *)(blk + (T == GT_Q4_K ? 16 : 48) + 32 * c + l0);
        const uint32_t uw[4] = {u.x, u.y, u.z, u.w};
        uint32_t hw[4] = {0, 0, 0, 0};
        if (T == GT_Q5_K) {
            const uint4 h = *(const uint4 *)(blk + 16 + l0);
            hw[0] = h.x, hw[1] = h.y, hw[2] = h.z, hw[3] = h.w;
        }
        const int4 al = *(const int4 *)(a + 64 * c + l0), ah = *(const int4 *)(a + 64 * c + 32 + l0);
        const int alw[4] = {al.x, al.y, al.z, al.w}, ahw[4] = {ah.x, ah.y, ah.z, ah.w};
        int sl = 0, sh = 0, ml = 0, mh = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t lo = uw[i] & 0x0F0F0F0Fu, hi = (uw[i] >> 4) & 0x0F0F0F0Fu;
            if (T == GT_Q5_K) {
                lo |= ((hw[i] >> (2 * c)) & 0x01010101u) << 4;
                hi |= ((hw[i] >> (2 * c + 1)) & 0x01010101u) << 4;
            }
            sl = __dp4a((int)lo, alw[i], sl), sh = __dp4a((int)hi, ahw[i], sh);
            ml = __dp4a(ones, alw[i], ml), mh = __dp4a(ones, ahw[i], mh);
        }
        return ad * (d * (float)(sc[0] * sl + sc[1] * sh) - dmin * (float)(m[0] * ml + m[1] * mh));
    } else if (T == GT_Q6_KB) {
        /* Q6_K with 16 contiguous ql bytes per lane: ql byte j of half h
         * holds value j (low nibble) and 64 + j (high), their top bits in
         * qh byte j % 32 (bits 0-1 / 4-5 for j < 32, 2-3 / 6-7 above), and
         * 16 values share a scale: 10 word loads and 2 scale bytes per lane
         * where GT_Q6_K takes 12 2-byte loads and 4 scale bytes */
        const int h = li >> 2, l1 = (li & 3) * 16, sl = (l1 >> 5) * 2;
        uint32_t q[4], hh[4];
        ld_16_2(blk + h * 64 + l1, q);
        ld_16_2(blk + 128 + h * 32 + (l1 & 31), hh);
        const int sc_lo = ((const int8_t *)blk)[192 + h * 8 + (l1 >> 4)], sc_hi = ((const int8_t *)blk)[196 + h * 8 + (l1 >> 4)];
        const float d = __half2float(__ushort_as_half(*(const unsigned short *)(blk + 208)));
        const int4 al = *(const int4 *)(a + h * 128 + l1), ah = *(const int4 *)(a + h * 128 + 64 + l1);
        const int alw[4] = {al.x, al.y, al.z, al.w}, ahw[4] = {ah.x, ah.y, ah.z, ah.w};
        int dl = 0, dh = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t lo = (q[i] & 0x0F0F0F0Fu) | (((hh[i] >> sl) & 0x03030303u) << 4);
            const uint32_t hi = ((q[i] >> 4) & 0x0F0F0F0Fu) | (((hh[i] >> (sl + 4)) & 0x03030303u) << 4);
            dl = __dp4a((int)__vsub4(lo, 0x20202020u), alw[i], dl);
            dh = __dp4a((int)__vsub4(hi, 0x20202020u), ahw[i], dh);
        }
        return ad * d * (float)(sc_lo * dl + sc_hi * dh);
    } else { /* GT_Q6_K: values l0..l0+7 of each of the four 32-value quarters of half h */
        const int h = li >> 2, l0 = (li & 3) * 8;
        const uint16_t *pa = (const uint16_t *)(blk + h * 64 + l0), *pb = (const uint16_t *)(blk + h * 64 + 32 + l0);
        const uint16_t *ph = (const uint16_t *)(blk + 128 + h * 32 + l0);
        const uint32_t qa0 = pa[0] | ((uint32_t)pa[1] << 16), qa1 = pa[2] | ((uint32_t)pa[3] << 16);
        const uint32_t qb0 = pb[0] | ((uint32_t)pb[1] << 16), qb1 = pb[2] | ((uint32_t)pb[3] << 16);
        const uint32_t qh0 = ph[0] | ((uint32_t)ph[1] << 16), qh1 = ph[2] | ((uint32_t)ph[3] << 16);
        const int8_t *sc = (const int8_t *)(blk + 192 + h * 8 + (l0 >> 4));
        const float d = __half2float(__ushort_as_half(*(const unsigned short *)(blk + 208)));
        int sum = 0;
#pragma unroll
        for (int qu = 0; qu < 4; qu++) {
            const uint32_t w0 = (qu & 1) ? qb0 : qa0, w1 = (qu & 1) ? qb1 : qa1;
            const int ns = 4 * (qu >> 1);
            const uint32_t q0 = __vsub4(((w0 >> ns) & 0x0F0F0F0Fu) | (((qh0 >> (2 * qu)) & 0x03030303u) << 4), 0x20202020u);
            const uint32_t q1 = __vsub4(((w1 >> ns) & 0x0F0F0F0Fu) | (((qh1 >> (2 * qu)) & 0x03030303u) << 4), 0x20202020u);
            const int2 av = *(const int2 *)(a + h * 128 + qu * 32 + l0);
            sum += (int)sc[2 * qu] * __dp4a((int)q0, av.x, __dp4a((int)q1, av.y, 0));
        }
        return ad * d * (float)sum;
    }
}

/* Partial dot over the super-blocks of this (warp part, lane group): four
 * super-blocks per warp step (8 lanes each), U steps per iteration so
 * that each warp keeps 4 U blocks of loads in flight: U = 2, or 3 for a
 * long row (down's 43 super-blocks over two warps: two rounds of loads,
 * not three; SMOLBOT_GPU_DU3). */
template <int T, int U = 2> __device__ __forceinline__ float mv_part_q(const uint8_t *wr, int n_in, const int8_t *xq,
                                                                       const float *xd, int lane, int part, int wpr) {
    const int BS = T == GT_Q4_K ? 144 : T == GT_Q5_K ? 176 : 210;
    const int nsb = n_in >> 8, li = lane & 7, step = 4 * wpr;
    float s = 0.0f;
    int sb = part * 4 + (lane >> 3);
#define KQ(o) kq_sb<T>(wr + (size_t)(sb + (o)) * BS, xq + (size_t)(sb + (o)) * 256, xd[sb + (o)], li)
    for (; sb + (U - 1) * step < nsb; sb += U * step) {
        float a[U];
#pragma unroll
        for (int u = 0; u < U; u++) a[u] = KQ(u * step);
        float t = a[0];
#pragma unroll
        for (int u = 1; u < U; u++) t += a[u];
        s += t;
    }
    for (; sb < nsb; sb += step) s += KQ(0);
#undef KQ
    return s;
}

/* Q8_K quantization of rows of n values (n % 256 == 0), one warp per
 * super-block; mirrors kern_ref_quantize_q8_K: max is the first value of
 * largest magnitude, iscale = -127 / max, q = min(127, rint(iscale * x)),
 * d = 1 / iscale (all zero when the block is). */
__device__ __forceinline__ void quant_vals(const float *v, int8_t *q, float *d, int lane) {
    float amax = 0.0f, mx = 0.0f;
    int idx = 1 << 30;
#pragma unroll
    for (int i = 0; i < 8; i++)
        if (fabsf(v[i]) > amax) amax = fabsf(v[i]), mx = v[i], idx = lane * 8 + i;
    for (int o = 16; o > 0; o >>= 1) {
        const float oa = __shfl_xor_sync(0xffffffffu, amax, o), om = __shfl_xor_sync(0xffffffffu, mx, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (oa > amax || (oa == amax && oi < idx)) amax = oa, mx = om, idx = oi;
    }
    uint32_t w[2] = {0, 0};
    if (amax != 0.0f) {
        const float iscale = -127.f / mx;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int qi = min(127, __float2int_rn(__fmul_rn(iscale, v[i])));
            w[i >> 2] |= (uint32_t)(qi & 0xFF) << (8 * (i & 3));
        }
        if (lane == 0) *d = 1.0f / iscale;
    } else if (lane == 0) *d = 0.0f;
    *(uint2 *)(q + lane * 8) = make_uint2(w[0], w[1]);
}
/* lane's 8 values of the super-block at x; CG: x is global memory other
 * blocks have just written, read around L1 */
template <bool CG = false> __device__ __forceinline__ void quant_sb(const float *x, int8_t *q, float *d, int lane) {
    const float4 *p = (const float4 *)(x + lane * 8);
    const float4 a = CG ? __ldcg(p) : p[0], b = CG ? __ldcg(p + 1) : p[1];
    const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    quant_vals(v, q, d, lane);
}

/* Programmatic dependent launch (sm_90): kernels of the decode graph are
 * launched with programmatic stream serialization, so a kernel's blocks are
 * scheduled while its predecessor drains; each waits here before reading
 * what the predecessor wrote. A no-op for ordinary launches. */
__device__ __forceinline__ void gdc_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Let the next kernel's blocks be scheduled now rather than as this grid's
 * blocks exit (SMOLBOT_GPU_EARLY): they wait in gdc_wait until this grid
 * has finished and its writes are visible, but can fetch their weights
 * into L2 first. They only launch once every block of this grid has run
 * this, so they never take the place of one of ours. */
__device__ __forceinline__ void gdc_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Ask L2 for the 128-byte line at p (a hint: nothing waits for it; a
 * no-op on the emulation). */
__device__ __forceinline__ void l2_line(const void *p) {
#if defined(__CUDA_ARCH__)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void)p;
#endif
}

/* the read-only bytes [p, p + n), a line per thread */
__device__ __forceinline__ void l2_prefetch(const void *p, size_t n) {
    const char *e = (const char *)p + n;
    for (const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)127) + threadIdx.x * 128; c < e; c += blockDim.x * 128)
        l2_line(c);
}

/* rows x n (row stride ldx) -> xq [rows][n], xd [rows][n / 256]; grid
 * (ceil(n / 2048), rows), 8 warps. */
__global__ void k_quant(const float *x, int n, int ldx, int8_t *xq, float *xd) {
    gdc_wait();
    const int sb = blockIdx.x * 8 + (threadIdx.x >> 5), nsb = n >> 8, r = blockIdx.y;
    if (sb >= nsb) return;
    quant_sb(x + (size_t)r * ldx + sb * 256, xq + (size_t)r * n + sb * 256, xd + (size_t)r * nsb + sb, threadIdx.x & 31);
}

#define MM_R 64  /* weight rows per block (k_mm, k_mmq) */
#define MM_K 64  /* K per step */
#define MM_LD (MM_K + 8)

#ifndef SMOLBOT_GPU_EMU /* wmma has no emulation: k_mm is tested on a GPU only */
/* Prefill product on tensor cores (k_mm): C[t][r] = sum_k X[t][k] W[r][k]
 * for a tile of 64 weight rows x BN tokens (BN = 64 or 128) per block of 8
 * warps, each warp 32 rows x BN/4 tokens of 16x16x16 wmma fragments (f16
 * operands, f32 accumulation), K in steps of 64. Weights are dequantized
 * (bit-exact values, rounded to f16) and activations converted while the
 * tensor cores work on the previous step: the next step's raw bytes are
 * loaded into registers before the products and only unpacked into shared
 * memory after them. K-quant weights take the Q8_K-quantized activations
 * (as the CPU and llama.cpp do: the same rounding of x), other types f32. */

/* 16 weights k..k+15 (k % 16 == 0) of a row: raw bytes, then values. */
struct wraw {
    uint4 q;        /* quants (Q4_K/Q5_K: 16 bytes of qs; Q6_K: 16 bytes of ql) */
    uint4 h;        /* Q5_K: qh bytes; Q6_K: 16 bytes of qh */
    uint32_t s[3];  /* K-quant scale bytes (Q6_K: s[0] = the int8 scale) */
    uint32_t dd;    /* d | dmin << 16 (f16 bits) */
    float f[16];    /* other types: the values themselves */
};

template <int T> __device__ __forceinline__ void w_load(const uint8_t *row, int k, int n_in, wraw &r) {
    if (T == GT_Q4_K || T == GT_Q5_K) {
        const uint8_t *b = row + (size_t)(k >> 8) * (T == GT_Q4_K ? 144 : 176);
        const int j = k & 255, c = j >> 6, l0 = j & 31;
        r.dd = *(const uint32_t *)b;
        r.s[0] = *(const uint32_t *)(b + 4), r.s[1] = *(const uint32_t *)(b + 8), r.s[2] = *(const uint32_t *)(b + 12);
        r.q = *(const uint4 *)(b + (T == GT_Q4_K ? 16 : 48) + 32 * c + l0);
        if (T == GT_Q5_K) r.h = *(const uint4 *)(b + 16 + l0);
    } else if (T == GT_Q6_K) {
        const uint8_t *b = row + (size_t)(k >> 8) * 210;
        const int j = k & 255, h = j >> 7, rr = j & 127, qu = rr >> 5, l0 = rr & 31;
        const uint16_t *ql = (const uint16_t *)(b + h * 64 + (qu & 1) * 32 + l0), *qh = (const uint16_t *)(b + 128 + h * 32 + l0);
        r.q = make_uint4(ql[0] | (ql[1] << 16), ql[2] | (ql[3] << 16), ql[4] | (ql[5] << 16), ql[6] | (ql[7] << 16));
        r.h = make_uint4(qh[0] | (qh[1] << 16), qh[2] | (qh[3] << 16), qh[4] | (qh[5] << 16), qh[6] | (qh[7] << 16));
        r.s[0] = (uint32_t)b[192 + h * 8 + (l0 >> 4) + 2 * qu];
        r.dd = *(const uint16_t *)(b + 208);
    } else { /* rows of 32-blocks may end inside a step: zeros past n_in */
        if (k < n_in) deq8<T>(row, k, r.f);
        else for (int i = 0; i < 8; i++) r.f[i] = 0.0f;
        if (k + 8 < n_in) deq8<T>(row, k + 8, r.f + 8);
        else for (int i = 8; i < 16; i++) r.f[i] = 0.0f;
    }
}

template <int T> __device__ __forceinline__ void w_unpack(const wraw &r, int k, __half *out) {
    float v[16];
    if (T == GT_Q4_K || T == GT_Q5_K) {
        const int j = k & 255, c = j >> 6, hi = (j >> 5) & 1, sj = 2 * c + hi;
        int sc, m;
        gq_sm(r.s[0], r.s[1], r.s[2], sj, &sc, &m);
        const float d = __half2float(__ushort_as_half((unsigned short)(r.dd & 0xFFFF)));
        const float dmin = __half2float(__ushort_as_half((unsigned short)(r.dd >> 16)));
        const float dl = __fmul_rn(d, (float)sc), ml = __fmul_rn(dmin, (float)m);
        const uint32_t qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w}, hw[4] = {r.h.x, r.h.y, r.h.z, r.h.w};
#pragma unroll
        for (int i = 0; i < 16; i++) {
            int q = (qw[i >> 2] >> (8 * (i & 3) + 4 * hi)) & 0xF;
            if (T == GT_Q5_K) q += ((hw[i >> 2] >> (8 * (i & 3))) >> sj & 1) << 4;
            v[i] = __fsub_rn(__fmul_rn(dl, (float)q), ml);
        }
    } else if (T == GT_Q6_K) {
        const int j = k & 255, qu = (j & 127) >> 5;
        const float ds = __fmul_rn(__half2float(__ushort_as_half((unsigned short)r.dd)), (float)(int8_t)r.s[0]);
        const uint32_t qw[4] = {r.q.x, r.q.y, r.q.z, r.q.w}, hw[4] = {r.h.x, r.h.y, r.h.z, r.h.w};
#pragma unroll
        for (int i = 0; i < 16; i++) {
            const int lo = (qw[i >> 2] >> (8 * (i & 3) + 4 * (qu >> 1))) & 0xF;
            const int hh = (hw[i >> 2] >> (8 * (i & 3) + 2 * qu)) & 3;
            v[i] = __fmul_rn(ds, (float)((lo | (hh << 4)) - 32));
        }
    } else {
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = r.f[i];
    }
#pragma unroll
    for (int i = 0; i < 16; i += 2) *(__half2 *)(out + i) = __floats2half2_rn(v[i], v[i + 1]);
}

template <int T, int BN>
__global__ void __launch_bounds__(256)
    k_mm(const uint8_t *W, size_t rb, int n_in, int n_out, const float *x, int ldx, const int8_t *xq, const float *xd,
         int n_tok, float *y, int ldy, int acc) {
    constexpr int FN = BN / 64;                      /* token fragments per warp */
    constexpr int SM_AB = (MM_R + BN) * MM_LD * 2;   /* bytes of the operand tiles */
    constexpr int SM_C = BN * (MM_R + 4) * 4;        /* bytes of the staged result */
    __shared__ __align__(32) unsigned char sm[SM_AB > SM_C ? SM_AB : SM_C];
    __half *Ws = (__half *)sm, *Xs = Ws + MM_R * MM_LD;
    const int tid = threadIdx.x, warp = tid >> 5;
    const int row0 = blockIdx.x * MM_R, tok0 = blockIdx.y * BN;
    const int wr = (warp & 1) * 32, wt = (warp >> 1) * (BN / 4);
    const bool q8 = gq_is_k(T) && xq;
    /* loader roles: weights: row tid/4, 16 values at (tid%4)*16; activations:
     * BN tokens x 64 values = BN*4 chunks of 16, (BN*4)/256 per thread */
    const int lr = tid >> 2, lk = (tid & 3) * 16;
    const bool wrow_ok = row0 + lr < n_out;
    const uint8_t *wrow = W + (size_t)(wrow_ok ? row0 + lr : 0) * rb;
    constexpr int XC = BN * 4 / 256;
    wraw wr_;
    float xr[XC][16];

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[2][FN];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < FN; j++) wmma::fill_fragment(c[i][j], 0.0f);

    auto load = [&](int k0) {
        if (wrow_ok) w_load<T>(wrow, k0 + lk, n_in, wr_);
#pragma unroll
        for (int u = 0; u < XC; u++) {
            const int ch = tid + u * 256, t = ch >> 2, kk = k0 + (ch & 3) * 16;
            if (tok0 + t < n_tok && kk < n_in) {
                if (q8) {
                    const int4 qv = *(const int4 *)(xq + (size_t)(tok0 + t) * n_in + kk);
                    const float d = xd[(size_t)(tok0 + t) * (n_in >> 8) + (kk >> 8)];
                    const int w4[4] = {qv.x, qv.y, qv.z, qv.w};
#pragma unroll
                    for (int i = 0; i < 16; i++) xr[u][i] = __fmul_rn((float)(int8_t)(w4[i >> 2] >> (8 * (i & 3))), d);
                } else {
                    const float4 *p = (const float4 *)(x + (size_t)(tok0 + t) * ldx + kk);
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float4 f = p[i];
                        xr[u][4 * i] = f.x, xr[u][4 * i + 1] = f.y, xr[u][4 * i + 2] = f.z, xr[u][4 * i + 3] = f.w;
                    }
                }
            } else {
#pragma unroll
                for (int i = 0; i < 16; i++) xr[u][i] = 0.0f;
            }
        }
    };
    auto store = [&](int k0) {
        if (wrow_ok) w_unpack<T>(wr_, k0 + lk, Ws + lr * MM_LD + lk);
        else
#pragma unroll
            for (int i = 0; i < 16; i++) Ws[lr * MM_LD + lk + i] = __float2half_rn(0.0f);
#pragma unroll
        for (int u = 0; u < XC; u++) {
            const int ch = tid + u * 256, t = ch >> 2, kk = (ch & 3) * 16;
#pragma unroll
            for (int i = 0; i < 16; i += 2) *(__half2 *)(Xs + t * MM_LD + kk + i) = __floats2half2_rn(xr[u][i], xr[u][i + 1]);
        }
    };

    load(0);
    store(0);
    __syncthreads();
    for (int k0 = 0; k0 < n_in; k0 += MM_K) {
        const bool more = k0 + MM_K < n_in;
        if (more) load(k0 + MM_K);
#pragma unroll
        for (int kk = 0; kk < MM_K; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[FN];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
            for (int j = 0; j < FN; j++) wmma::load_matrix_sync(a[j], Xs + (wt + 16 * j) * MM_LD + kk, MM_LD);
#pragma unroll
            for (int i = 0; i < 2; i++) wmma::load_matrix_sync(b[i], Ws + (wr + 16 * i) * MM_LD + kk, MM_LD);
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < FN; j++) wmma::mma_sync(c[i][j], a[j], b[i], c[i][j]);
        }
        __syncthreads();
        if (more) {
            store(k0 + MM_K);
            __syncthreads();
        }
    }
    /* c[i][j]: tokens wt + 16j.., rows wr + 16i.. */
    if (tok0 + BN <= n_tok && row0 + MM_R <= n_out) {
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < FN; j++) {
                float *yp = y + (size_t)(tok0 + wt + 16 * j) * ldy + row0 + wr + 16 * i;
                if (acc) {
                    wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
                    wmma::load_matrix_sync(o, yp, ldy, wmma::mem_row_major);
                    for (int e = 0; e < o.num_elements; e++) c[i][j].x[e] += o.x[e];
                }
                wmma::store_matrix_sync(yp, c[i][j], ldy, wmma::mem_row_major);
            }
        return;
    }
    float *Cs = (float *)sm; /* [BN][MM_R + 4]; the operand tiles are done */
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < FN; j++)
            wmma::store_matrix_sync(Cs + (wt + 16 * j) * (MM_R + 4) + wr + 16 * i, c[i][j], MM_R + 4, wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < BN * MM_R; e += 256) {
        const int t = e / MM_R, r = e % MM_R;
        if (tok0 + t < n_tok && row0 + r < n_out) {
            float *yp = y + (size_t)(tok0 + t) * ldy + row0 + r;
            *yp = acc ? *yp + Cs[t * (MM_R + 4) + r] : Cs[t * (MM_R + 4) + r];
        }
    }
}
#endif

/* ---- prefill: K-quant weights x Q8_K activations on int8 tensor cores ----
 * k_mmq is llama.cpp's MMQ idea written for our layouts: the products are
 * exact integer dot products, like the CPU's (the results match its
 * rounding, not just its tolerance), and unpacking a Q4_K nibble pair to
 * int8 is one AND: no f16 conversion of either operand.
 *
 * Tile: 64 weight rows x BN tokens per block of 8 warps; a warp owns 32
 * rows (two m16 tiles) x BN/4 tokens (n8 tiles). K moves in steps of 64
 * (inside one 256-value super-block). Per step the weights are unpacked to
 * int8 in shared memory with their per-sub-block factors (Q4_K/Q5_K:
 * d*sc and dmin*m per 32 values; Q6_K: d*sc per 16, quants already minus
 * 32), the activations copied as they are with their sums per 32 and
 * their Q8_K scale. mma.sync m16n8k32 (m16n8k16 for Q6_K's 16-value
 * scales) gives int32 sums per sub-block, folded into f32 accumulators:
 *   acc += xd * (d*sc * (q . a) - dmin*m * sum(a))
 * The next step's bytes are loaded into registers before the products and
 * unpacked into the other shared-memory stage after them.
 *
 * Fragment layouts (PTX ISA, s8; g = lane / 4, t = lane % 4):
 *   A 16x32 row: a0 = A[g][4t..], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]
 *   B 32x8 col:  b0 = B[4t..][g], b1 = B[16+4t..][g]      (m16n8k16: a0, a1, b0 only)
 *   C 16x8:      c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1] */
#define MQ_LD 80 /* bytes per shared row of 64 int8: 20 words, conflict-free fragment loads */

#ifdef SMOLBOT_GPU_EMU
__device__ __forceinline__ void mma_k32(int *c, const int *a, int b0, int b1) { emu_mma_s8(c, a, b0, b1, 32); }
__device__ __forceinline__ void mma_k16(int *c, const int *a, int b0) { emu_mma_s8(c, a, b0, 0, 16); }
#else
__device__ __forceinline__ void mma_k32(int *c, const int *a, int b0, int b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_k16(int *c, const int *a, int b0) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b0));
}
#endif

/* the raw bytes one thread loads for one step: its row's 8 + 8 values */
struct mq_raw {
    uint2 q0, q1, h; /* Q4_K/Q5_K: q0 = 8 qs bytes, h = 8 qh bytes; Q6_K: q0/q1 = ql, h = qh */
    uint32_t dd, s[3];
};

template <int T> __device__ __forceinline__ void mq_load(const uint8_t *row, int k0, int q, mq_raw &r) {
    if (T == GT_Q4_K || T == GT_Q5_K) {
        const uint8_t *b = row + (size_t)(k0 >> 8) * (T == GT_Q4_K ? 144 : 176);
        const int c = (k0 & 255) >> 6;
        r.dd = *(const uint32_t *)b;
        r.s[0] = *(const uint32_t *)(b + 4), r.s[1] = *(const uint32_t *)(b + 8), r.s[2] = *(const uint32_t *)(b + 12);
        r.q0 = *(const uint2 *)(b + (T == GT_Q4_K ? 16 : 48) + 32 * c + 8 * q);
        if (T == GT_Q5_K) r.h = *(const uint2 *)(b + 16 + 8 * q);
    } else { /* Q6_K: 2-byte aligned blocks */
        const uint8_t *b = row + (size_t)(k0 >> 8) * 210;
        const int h = (k0 & 255) >> 7;
        const uint16_t *a0 = (const uint16_t *)(b + h * 64 + 8 * q), *a1 = (const uint16_t *)(b + h * 64 + 32 + 8 * q);
        const uint16_t *hh = (const uint16_t *)(b + 128 + h * 32 + 8 * q);
        r.q0 = make_uint2(a0[0] | (a0[1] << 16), a0[2] | (a0[3] << 16));
        r.q1 = make_uint2(a1[0] | (a1[1] << 16), a1[2] | (a1[3] << 16));
        r.h = make_uint2(hh[0] | (hh[1] << 16), hh[2] | (hh[3] << 16));
        r.dd = *(const uint16_t *)(b + 208);
        /* the four 16-value scales of this step: bytes 192 + h*8 + (k%128)/16 .. +4 */
        const uint8_t *sc = b + 192 + h * 8 + ((k0 & 127) >> 4);
        r.s[0] = sc[0] | (sc[1] << 8) | (sc[2] << 16) | ((uint32_t)sc[3] << 24);
    }
}

/* unpack into shared row w (64 int8) and its factors fs/fm (per sub-block);
 * IF (integer fold): fs holds the integer scales (int bits) and dr[0] the
 * super-block's d */
template <int T, int IF = 0>
__device__ __forceinline__ void mq_store(const mq_raw &r, int k0, int q, int8_t *w, float *fs, float *fm, float *dr) {
    if (T == GT_Q4_K || T == GT_Q5_K) {
        const int c = (k0 & 255) >> 6;
        uint2 lo = make_uint2(r.q0.x & 0x0F0F0F0Fu, r.q0.y & 0x0F0F0F0Fu);
        uint2 hi = make_uint2((r.q0.x >> 4) & 0x0F0F0F0Fu, (r.q0.y >> 4) & 0x0F0F0F0Fu);
        if (T == GT_Q5_K) {
            lo.x |= ((r.h.x >> (2 * c)) & 0x01010101u) << 4, lo.y |= ((r.h.y >> (2 * c)) & 0x01010101u) << 4;
            hi.x |= ((r.h.x >> (2 * c + 1)) & 0x01010101u) << 4, hi.y |= ((r.h.y >> (2 * c + 1)) & 0x01010101u) << 4;
        }
        *(uint2 *)(w + 8 * q) = lo;
        *(uint2 *)(w + 32 + 8 * q) = hi;
        if (q < 2) { /* thread q computes sub-block 2c + q's factors */
            const int j = 2 * c + q;
            int sc, m;
            gq_sm(r.s[0], r.s[1], r.s[2], j, &sc, &m);
            const float d = __half2float(__ushort_as_half((unsigned short)(r.dd & 0xFFFF)));
            const float dmin = __half2float(__ushort_as_half((unsigned short)(r.dd >> 16)));
            fs[q] = IF ? __int_as_float(sc) : d * (float)sc;
            fm[q] = dmin * (float)m;
            if (IF && q == 0) dr[0] = d;
        }
    } else {
        const int qu0 = (k0 & 127) >> 5, ns = 4 * (qu0 >> 1); /* values 0..31: qu0 (ql low 32), 32..63: qu0 + 1 (ql high 32) */
        uint2 a, b;
        a.x = ((r.q0.x >> ns) & 0x0F0F0F0Fu) | (((r.h.x >> (2 * qu0)) & 0x03030303u) << 4);
        a.y = ((r.q0.y >> ns) & 0x0F0F0F0Fu) | (((r.h.y >> (2 * qu0)) & 0x03030303u) << 4);
        b.x = ((r.q1.x >> ns) & 0x0F0F0F0Fu) | (((r.h.x >> (2 * qu0 + 2)) & 0x03030303u) << 4);
        b.y = ((r.q1.y >> ns) & 0x0F0F0F0Fu) | (((r.h.y >> (2 * qu0 + 2)) & 0x03030303u) << 4);
        *(uint2 *)(w + 8 * q) = make_uint2(__vsub4(a.x, 0x20202020u), __vsub4(a.y, 0x20202020u));
        *(uint2 *)(w + 32 + 8 * q) = make_uint2(__vsub4(b.x, 0x20202020u), __vsub4(b.y, 0x20202020u));
        /* sub-blocks of 16: 0, 1 -> scales 2*qu0 + {0, 1}; 2, 3 -> 2*(qu0+1) + {0, 1}:
         * bytes (k%128)/16 + {0, 1, 2, 3} of this half's 8 scales */
        const float d = __half2float(__ushort_as_half((unsigned short)r.dd));
        const int sc = (int8_t)(r.s[0] >> (8 * q));
        if (IF) {
            fs[q] = __int_as_float(sc);
            if (q == 0) dr[0] = d;
        } else fs[q] = d * (float)sc;
        (void)fm;
    }
}

/* MB: blocks per SM the compiler must allow (registers <= 65536 / (256 MB)):
 * 1 lets it take ~170 registers, 2 (SMOLBOT_GPU_MMQ2) caps them at 128 for
 * twice the warps to hide the loads' latency behind (a few bytes of spill
 * in two of the variants, says ptxas) */
template <int T, int BN, int IF, int MB = 1>
__global__ void __launch_bounds__(256, MB)
    k_mmq(const uint8_t *W, size_t rb, int n_in, int n_out, const int8_t *xq, const float *xd, int n_tok, float *y,
          int ldy, int acc) {
    constexpr int NT = BN / 32;                 /* n8 tiles per warp (BN / 4 tokens) */
    constexpr int NS = T == GT_Q6_K ? 4 : 2;    /* sub-blocks per step of 64 */
    __shared__ __align__(16) int8_t Wt[2][64 * MQ_LD];
    __shared__ __align__(16) int8_t Xt[2][BN * MQ_LD];
    __shared__ float Fs[2][64][4], Fm[2][64][2], Xs[2][BN][2], Xd[2][BN], Dr[2][64];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int row0 = blockIdx.x * 64, tok0 = blockIdx.y * BN;
    const int wm = (warp & 1) * 32, wn = (warp >> 1) * (BN / 4);
    /* loader roles: weights: row lr, quarter lq; activations: 16-byte chunks tid + 256u */
    const int lr = tid >> 2, lq = tid & 3;
    const bool wok = row0 + lr < n_out;
    const uint8_t *wrow = W + (size_t)(wok ? row0 + lr : 0) * rb;
    constexpr int XC = BN * 4 >= 256 ? BN * 4 / 256 : 1; /* BN = 32: half the threads load */
    mq_raw raw;
    int4 xr[XC];
    float xdr[XC];
    auto load = [&](int k0) {
        if (wok) mq_load<T>(wrow, k0, lq, raw);
#pragma unroll
        for (int u = 0; u < XC; u++) {
            const int ch = tid + u * 256, tt = tok0 + (ch >> 2);
            if (ch < BN * 4 && tt < n_tok) {
                xr[u] = *(const int4 *)(xq + (size_t)tt * n_in + k0 + (ch & 3) * 16);
                xdr[u] = xd[(size_t)tt * (n_in >> 8) + (k0 >> 8)];
            } else xr[u] = make_int4(0, 0, 0, 0), xdr[u] = 0.0f;
        }
    };
    auto store = [&](int k0, int s) {
        int8_t *w = Wt[s] + lr * MQ_LD;
        if (wok) mq_store<T, IF>(raw, k0, lq, w, Fs[s][lr], Fm[s][lr], &Dr[s][lr]);
        else { /* zeros: float 0 and int 0 have the same bits */
            *(uint2 *)(w + 8 * lq) = make_uint2(0, 0), *(uint2 *)(w + 32 + 8 * lq) = make_uint2(0, 0);
            Fs[s][lr][lq] = 0.0f;
            if (lq < 2) Fm[s][lr][lq] = 0.0f;
            if (lq == 0) Dr[s][lr] = 0.0f;
        }
#pragma unroll
        for (int u = 0; u < XC; u++) {
            const int ch = tid + u * 256, tt = ch >> 2, part = ch & 3;
            if (BN * 4 < 256 && ch >= BN * 4) continue; /* warp-uniform: whole warps idle */
            *(int4 *)(Xt[s] + tt * MQ_LD + part * 16) = xr[u];
            /* sum per 32: this chunk's 16 plus the neighbour's (lanes tid ^ 1) */
            int sum = __dp4a(xr[u].x, 0x01010101, __dp4a(xr[u].y, 0x01010101, __dp4a(xr[u].z, 0x01010101, __dp4a(xr[u].w, 0x01010101, 0))));
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            /* IF: the mins' term needs sum * xd only */
            if (!(part & 1)) Xs[s][tt][part >> 1] = IF ? (float)sum * xdr[u] : (float)sum;
            if (part == 0) Xd[s][tt] = xdr[u];
        }
    };

    float ac[2][NT][4];
    /* IF: the super-block's integer sum_j sc_j (q . a)_j, folded into ac
     * once per 256 values as the CPU does; the mins' term goes straight
     * into ac, dmin m_j * xd sum(a)_j, one FFMA per sub-block */
    int ai[2][NT][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) ac[i][j][e] = 0.0f, ai[i][j][e] = 0;

    load(0);
    store(0, 0);
    __syncthreads();
    int s = 0;
    for (int k0 = 0; k0 < n_in; k0 += 64) {
        const bool more = k0 + 64 < n_in;
        if (more) load(k0 + 64);
        const int8_t *Ws = Wt[s], *Xs_ = Xt[s];
#pragma unroll
        for (int sb = 0; sb < NS; sb++) {
            constexpr int KS = 64 / NS; /* 32 or 16 */
            int c[2][NT][4];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0;
            const int kk = sb * KS;
            int a[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int8_t *r0 = Ws + (wm + 16 * i + g) * MQ_LD + kk + 4 * t4, *r1 = r0 + 8 * MQ_LD;
                a[i][0] = *(const int *)r0, a[i][1] = *(const int *)r1;
                if (KS == 32) a[i][2] = *(const int *)(r0 + 16), a[i][3] = *(const int *)(r1 + 16);
            }
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int8_t *bp = Xs_ + (wn + 8 * j + g) * MQ_LD + kk + 4 * t4;
                const int b0 = *(const int *)bp;
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    if (KS == 32) mma_k32(c[i][j], a[i], b0, *(const int *)(bp + 16));
                    else mma_k16(c[i][j], a[i], b0);
                }
            }
            /* fold: rows wm + 16i + g (+8), tokens wn + 8j + 2*t4 (+1) */
            if (IF) {
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int ra = wm + 16 * i + g, rb2 = ra + 8;
                    const int sa = __float_as_int(Fs[s][ra][sb]), sb2 = __float_as_int(Fs[s][rb2][sb]);
                    const float ma = NS == 2 ? Fm[s][ra][sb] : 0.0f, mb = NS == 2 ? Fm[s][rb2][sb] : 0.0f;
#pragma unroll
                    for (int j = 0; j < NT; j++) {
                        const int ta = wn + 8 * j + 2 * t4;
                        ai[i][j][0] += sa * c[i][j][0], ai[i][j][1] += sa * c[i][j][1];
                        ai[i][j][2] += sb2 * c[i][j][2], ai[i][j][3] += sb2 * c[i][j][3];
                        if (NS == 2) {
                            const float x0 = Xs[s][ta][sb], x1 = Xs[s][ta + 1][sb];
                            ac[i][j][0] -= ma * x0, ac[i][j][1] -= ma * x1;
                            ac[i][j][2] -= mb * x0, ac[i][j][3] -= mb * x1;
                        }
                    }
                }
            } else
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int ra = wm + 16 * i + g, rb2 = ra + 8;
                const float sa = Fs[s][ra][sb], sb2 = Fs[s][rb2][sb];
                const float ma = NS == 2 ? Fm[s][ra][sb] : 0.0f, mb = NS == 2 ? Fm[s][rb2][sb] : 0.0f;
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const int ta = wn + 8 * j + 2 * t4;
                    const float d0 = Xd[s][ta], d1 = Xd[s][ta + 1];
                    if (NS == 2) {
                        const float x0 = Xs[s][ta][sb], x1 = Xs[s][ta + 1][sb];
                        ac[i][j][0] += d0 * (sa * (float)c[i][j][0] - ma * x0);
                        ac[i][j][1] += d1 * (sa * (float)c[i][j][1] - ma * x1);
                        ac[i][j][2] += d0 * (sb2 * (float)c[i][j][2] - mb * x0);
                        ac[i][j][3] += d1 * (sb2 * (float)c[i][j][3] - mb * x1);
                    } else {
                        ac[i][j][0] += d0 * sa * (float)c[i][j][0];
                        ac[i][j][1] += d1 * sa * (float)c[i][j][1];
                        ac[i][j][2] += d0 * sb2 * (float)c[i][j][2];
                        ac[i][j][3] += d1 * sb2 * (float)c[i][j][3];
                    }
                }
            }
        }
        if (IF && ((k0 + 64) & 255) == 0) { /* the super-block ends: fold its integer sums */
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int ra = wm + 16 * i + g, rb2 = ra + 8;
                const float da = Dr[s][ra], db = Dr[s][rb2];
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const int ta = wn + 8 * j + 2 * t4;
                    const float d0 = Xd[s][ta], d1 = Xd[s][ta + 1];
                    ac[i][j][0] += d0 * da * (float)ai[i][j][0], ac[i][j][1] += d1 * da * (float)ai[i][j][1];
                    ac[i][j][2] += d0 * db * (float)ai[i][j][2], ac[i][j][3] += d1 * db * (float)ai[i][j][3];
#pragma unroll
                    for (int e = 0; e < 4; e++) ai[i][j][e] = 0;
                }
            }
        }
        if (more) store(k0 + 64, s ^ 1);
        __syncthreads();
        s ^= 1;
    }
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = row0 + wm + 16 * i + g + (e >= 2 ? 8 : 0), tt = tok0 + wn + 8 * j + 2 * t4 + (e & 1);
                if (r < n_out && tt < n_tok) {
                    float *yp = y + (size_t)tt * ldy + r;
                    *yp = acc ? *yp + ac[i][j][e] : ac[i][j][e];
                }
            }
}

/* One row of RMSNorm by one block: o = x / sqrt(mean(x^2) + eps) * w
 * (unless o is NULL: SMOLBOT_GPU_NIN, a block's own copy of the next
 * product's input) and (xq != NULL, n % 256 == 0) the Q8_K of the same
 * values (o must not alias x: the Q8_K reads x again). x is read around
 * L1 (__ldcg): the fused callers read values other blocks have just
 * written. */
__device__ void rms_row(const float *x, const float *w, float *o, int n, float eps, int8_t *xq, float *xd) {
    __shared__ float part[32];
    if (n == 8 * (int)blockDim.x) { /* one value octet per thread, kept in registers: one trip to memory */
        const int i0 = threadIdx.x * 8, lane = threadIdx.x & 31;
        const float4 a = __ldcg((const float4 *)(x + i0)), b = __ldcg((const float4 *)(x + i0 + 4));
        const float4 wa = *(const float4 *)(w + i0), wb = *(const float4 *)(w + i0 + 4);
        float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        const float wv[8] = {wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w};
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) s += v[i] * v[i];
        s = warp_sum(s);
        if (lane == 0) part[threadIdx.x >> 5] = s;
        __syncthreads();
        s = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.0f;
        s = warp_sum(s);
        const float scale = 1.0f / sqrtf(s / (float)n + eps);
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = __fmul_rn(__fmul_rn(v[i], scale), wv[i]);
        if (o) {
            *(float4 *)(o + i0) = make_float4(v[0], v[1], v[2], v[3]);
            *(float4 *)(o + i0 + 4) = make_float4(v[4], v[5], v[6], v[7]);
        }
        /* warp w's 256 values are super-block w */
        if (xq) quant_vals(v, xq + (threadIdx.x >> 5) * 256, xd + (threadIdx.x >> 5), lane);
        return;
    }
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = __ldcg(x + i);
        s += v * v;
    }
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        s = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        s = warp_sum(s);
        if (threadIdx.x == 0) part[0] = s;
    }
    __syncthreads();
    const float scale = 1.0f / sqrtf(part[0] / (float)n + eps);
    if (o)
        for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = __fmul_rn(__fmul_rn(__ldcg(x + i), scale), w[i]);
    if (!xq) return;
    /* each warp's super-blocks from x, the same products as o's: no trip
     * through o and no barrier */
    const int lane = threadIdx.x & 31;
    for (int sb = threadIdx.x >> 5; sb < n >> 8; sb += blockDim.x >> 5) {
        const int i0 = sb * 256 + lane * 8;
        float v[8];
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = __fmul_rn(__fmul_rn(__ldcg(x + i0 + i), scale), w[i0 + i]);
        quant_vals(v, xq + sb * 256, xd + sb, lane);
    }
}

/* mv_part_q for two rows of the same type at once (gate and up): twice
 * the loads in flight per warp, each row's sum in mv_part_q's order.
 * Written out beside mv_part_q on purpose: one template for one and two
 * rows took k_dec from 48 to 60 registers (one block per SM fewer). */
template <int T> __device__ __forceinline__ float2 mv_part_q2(const uint8_t *w0, const uint8_t *w1, int n_in,
                                                              const int8_t *xq, const float *xd, int lane) {
    const int BS = T == GT_Q4_K ? 144 : T == GT_Q5_K ? 176 : 210;
    const int nsb = n_in >> 8, li = lane & 7, step = 4;
    float s0 = 0.0f, s1 = 0.0f;
    int sb = lane >> 3;
#define KQ(w, o) kq_sb<T>(w + (size_t)(sb + (o)) * BS, xq + (size_t)(sb + (o)) * 256, xd[sb + (o)], li)
    for (; sb + step < nsb; sb += 2 * step) {
        const float a0 = KQ(w0, 0), b0 = KQ(w0, step), a1 = KQ(w1, 0), b1 = KQ(w1, step);
        s0 += a0 + b0, s1 += a1 + b1;
    }
    if (sb < nsb) s0 += KQ(w0, 0), s1 += KQ(w1, 0);
#undef KQ
    return make_float2(s0, s1);
}

/* Partial dot of one weight row with f32 x over super-blocks part, part +
 * wpr, ...: the weights that are not K-quants (K-quants always take Q8_K
 * activations in k_dec; with SMOLBOT_GPU_Q8=0 decode runs enqueue_step). */
template <int T> __device__ __forceinline__ float mv_part(const uint8_t *wr, int n_in, const float *x, int lane, int part,
                                                          int wpr) {
    float s = 0.0f;
    for (int k = part * 256 + lane * 8; k < n_in; k += wpr * 256) {
        const float4 a = __ldg((const float4 *)(x + k)), b = __ldg((const float4 *)(x + k) + 1);
        const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        float w[8];
        deq8<T>(wr, k, w);
#pragma unroll
        for (int i = 0; i < 8; i++) s += w[i] * xv[i];
    }
    return s;
}

template <int U = 2>
__device__ __forceinline__ float mv_part_any(int type, const uint8_t *wr, int n_in, const float *x, const int8_t *xq,
                                             const float *xd, int lane, int part, int wpr) {
    switch (type) {
    case GT_Q4_K: return mv_part_q<GT_Q4_K, U>(wr, n_in, xq, xd, lane, part, wpr);
    case GT_Q6_K: return mv_part_q<GT_Q6_K, U>(wr, n_in, xq, xd, lane, part, wpr);
    case GT_Q6_KB: return mv_part_q<GT_Q6_KB, U>(wr, n_in, xq, xd, lane, part, wpr);
    case GT_Q5_K: return mv_part_q<GT_Q5_K, U>(wr, n_in, xq, xd, lane, part, wpr);
    case GT_Q8_0: return mv_part<GT_Q8_0>(wr, n_in, x, lane, part, wpr);
    case GT_Q4_0: return mv_part<GT_Q4_0>(wr, n_in, x, lane, part, wpr);
    case GT_F16: return mv_part<GT_F16>(wr, n_in, x, lane, part, wpr);
    case GT_BF16: return mv_part<GT_BF16>(wr, n_in, x, lane, part, wpr);
    default: return mv_part<GT_F32>(wr, n_in, x, lane, part, wpr);
    }
}

/* Rotate the pair v[0], v[1] -- pair i of a head -- to position pos: the
 * angle as ggml's cache computes it (pos times theta_scale^i by repeated
 * multiplication), the rotation without FMA contraction. */
__device__ __forceinline__ void rope_pair(float *v, int i, int pos, float theta_scale) {
    float t = (float)pos;
    for (int j = 0; j < i; j++) t *= theta_scale;
    const float c = cosf(t), s = sinf(t);
    const float x0 = v[0], x1 = v[1];
    v[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    v[1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

/* j.early: start the next kernel, and ask L2 for this block's rows while
 * the previous kernel finishes (measured on an H200: decode 512 -> 539
 * tok/s at depth 0, 475 -> 491 at 2048) */
__device__ __forceinline__ void dec_early(const mv_job &j, const mv_seg &s, int r0, int R) {
    if (!j.early) return;
    gdc_launch();
    const int rows = min(R, s.n_out - r0);
    if (rows <= 0) return;
    l2_prefetch(s.W + (size_t)r0 * s.rb, (size_t)rows * s.rb);
    if (j.mode == MV_GLU) l2_prefetch(j.s[1].W + (size_t)r0 * j.s[1].rb, (size_t)rows * j.s[1].rb);
}

/* j.qin: the block's own Q8_K of the product's input (of rmsnorm(x) *
 * qnw, or of x) into its shared memory sm; every thread of the block */
__device__ __forceinline__ void dec_qin(const mv_job &j, unsigned char *sm) {
    int8_t *q = (int8_t *)sm;
    float *d = (float *)(sm + j.n_in);
    if (j.qnw) rms_row(j.x, j.qnw, NULL, j.n_in, j.eps, q, d);
    else
        for (int sb = threadIdx.x >> 5; sb < j.n_in >> 8; sb += blockDim.x >> 5)
            quant_sb<true>(j.x + sb * 256, q + sb * 256, d + sb, threadIdx.x & 31);
    __syncthreads();
}

/* MV_GLU with j.glu2 (dec_glu): warp w of block b does gate and up row
 * 8 b + w, reduced in the warp. Its own kernel: the two rows' loads in
 * flight take 80 registers, which inside k_dec cost every product
 * occupancy (decode 512 -> 466 tok/s on an H200). */
template <bool QIN> __global__ void __launch_bounds__(256) k_dec_glu2(const mv_job j) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, row = blockIdx.x * 8 + warp;
    const mv_seg &s = j.s[0], &u = j.s[1];
    dec_early(j, s, blockIdx.x * 8, 8);
    gdc_wait();
    const int8_t *xq = j.xq;
    const float *xd = j.xd;
    if (QIN) { /* j.qin: its own instance, for the registers of the default one */
        DYN_SMEM(unsigned char, glu_sm);
        dec_qin(j, glu_sm);
        xq = (const int8_t *)glu_sm, xd = (const float *)(glu_sm + j.n_in);
    }
    if (row >= s.n_out) return;
    const uint8_t *wg = s.W + (size_t)row * s.rb, *wu = u.W + (size_t)row * u.rb;
    float2 v;
    if (s.type == u.type && s.type == GT_Q4_K) v = mv_part_q2<GT_Q4_K>(wg, wu, j.n_in, xq, xd, lane);
    else if (s.type == u.type && s.type == GT_Q6_K) v = mv_part_q2<GT_Q6_K>(wg, wu, j.n_in, xq, xd, lane);
    else if (s.type == u.type && s.type == GT_Q6_KB) v = mv_part_q2<GT_Q6_KB>(wg, wu, j.n_in, xq, xd, lane);
    else if (s.type == u.type && s.type == GT_Q5_K) v = mv_part_q2<GT_Q5_K>(wg, wu, j.n_in, xq, xd, lane);
    else
        v = make_float2(mv_part_any(s.type, wg, j.n_in, j.x, xq, xd, lane, 0, 1),
                        mv_part_any(u.type, wu, j.n_in, j.x, xq, xd, lane, 0, 1));
    const float g = warp_sum(v.x), up = warp_sum(v.y);
    if (lane == 0) s.y[row] = g / (1.0f + expf(-g)) * up;
}

/* U: mv_part_q's steps per iteration (k_dec<3>: j.unroll 3, SMOLBOT_GPU_DU3) */
template <int U> __global__ void __launch_bounds__(256) k_dec(const mv_job j) {
    __shared__ float red[8], val[8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int vrows = 8 / j.wpr, vr = warp / j.wpr, part = warp % j.wpr;
    /* segments are copied field by field with constant indices: indexing the
     * kernel parameter with a runtime value would copy it to local memory */
    const int si = j.nseg > 2 && (int)blockIdx.x >= j.s[2].blk0 ? 2 : j.nseg > 1 && (int)blockIdx.x >= j.s[1].blk0 ? 1 : 0;
    const mv_seg s = si == 0 ? j.s[0] : si == 1 ? j.s[1] : j.s[2];
    /* GLU: virtual rows [0, R) are gate rows, [R, 2R) the same up rows */
    const int R = j.mode == MV_GLU ? vrows / 2 : vrows;
    const int r0 = ((int)blockIdx.x - s.blk0) * R;
    dec_early(j, s, r0, R);
    gdc_wait();
    const int8_t *xq = j.xq;
    const float *xd = j.xd;
    if (j.qin) { /* as k_quant (quant_sb) or the norm (rms_row) would, into shared memory */
        DYN_SMEM(unsigned char, qin_sm);
        dec_qin(j, qin_sm);
        xq = (const int8_t *)qin_sm, xd = (const float *)(qin_sm + j.n_in);
    }
    const mv_seg sg = j.mode == MV_GLU && vr >= R ? j.s[1] : s;
    const int row = r0 + (vr < R ? vr : vr - R);
    float v = 0.0f;
    if (row < sg.n_out) v = mv_part_any<U>(sg.type, sg.W + (size_t)row * sg.rb, j.n_in, j.x, xq, xd, lane, part, j.wpr);
    v = warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if ((int)threadIdx.x < vrows) {
        float t = 0.0f;
        for (int p = 0; p < j.wpr; p++) t += red[threadIdx.x * j.wpr + p];
        val[threadIdx.x] = t;
    }
    __syncthreads();
    const int t = threadIdx.x, r = r0 + t;
    if (j.mode != MV_QKV) {
        if (t < R && r < s.n_out) {
            if (j.mode == MV_STORE) s.y[r] = val[t];
            else if (j.mode == MV_ACC) s.y[r] += val[t];
            else {
                const float g = val[t];
                s.y[r] = g / (1.0f + expf(-g)) * val[R + t];
            }
        }
        if (j.mode == MV_GLU && j.nxq) { /* the Q8_K of the output, a super-block by its last block */
            __shared__ int lastq;
            const int sb = r0 / 256; /* R divides 256: a block's rows are in one super-block */
            __threadfence();
            __syncthreads();
            if (threadIdx.x == 0) lastq = atomicAdd(j.counter + sb, 1u) == 256u / R - 1;
            __syncthreads();
            if (!lastq) return;
            __threadfence();
            if (threadIdx.x == 0) j.counter[sb] = 0; /* ready for the next layer */
            if (threadIdx.x < 32) quant_sb<true>(s.y + sb * 256, j.nxq + sb * 256, j.nxd + sb, threadIdx.x);
            return;
        }
        if (!j.nw) return;
        __shared__ int last;
        __threadfence(); /* our rows of y are visible to whichever block is last */
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(j.counter, 1u) == gridDim.x - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        rms_row(s.y, j.nw, j.ny, s.n_out, j.eps, j.nxq, j.nxd);
        if (threadIdx.x == 0) *j.counter = 0; /* ready for the next kernel */
        return;
    }
    if (t >= R || r >= s.n_out) return;
    { /* MV_QKV: rows r, r + 1 of a RoPE pair are done by the even thread */
        const int pos = *j.d_pos;
        if (si < 2 && j.rope) {
            if (t & 1) return;
            float pv[2] = {val[t], val[t + 1]};
            rope_pair(pv, (r % j.hd) >> 1, pos, j.theta_scale);
            if (si == 0) s.y[r] = pv[0], s.y[r + 1] = pv[1];
            else {
                const size_t kvdim = (size_t)j.s[1].n_out;
                j.kc[(size_t)pos * kvdim + r] = __float2half_rn(pv[0]);
                j.kc[(size_t)pos * kvdim + r + 1] = __float2half_rn(pv[1]);
            }
        } else if (si == 0) s.y[r] = val[t];
        else {
            const size_t kvdim = (size_t)j.s[1].n_out;
            (si == 1 ? j.kc : j.vc)[(size_t)pos * kvdim + r] = __float2half_rn(val[t]);
        }
    }
}

template <int T> __global__ void k_dequant(const uint8_t *W, int n, float *out) {
    const int k = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (k < n) deq8<T>(W, k, out + k);
}

/* x[t] = dequantized row tok[t] of the embedding; one block per token. */
template <int T> __global__ void k_embed(const uint8_t *W, size_t rb, int n, const int *tok, float *x) {
    gdc_wait();
    const uint8_t *row = W + (size_t)tok[blockIdx.x] * rb;
    for (int k = threadIdx.x * 8; k < n; k += blockDim.x * 8) deq8<T>(row, k, x + (size_t)blockIdx.x * n + k);
}

/* out[row] = x[row] / sqrt(mean(x[row]^2) + eps) * w; one block per row. */
/* out[row] = x[row] / sqrt(mean(x[row]^2) + eps) * w (and its Q8_K); one
 * block per row (rms_row). */
__global__ void k_rmsnorm(const float *x, const float *w, float *out, int n, float eps, int8_t *xq, float *xd) {
    gdc_wait();
    const int nsb = n >> 8;
    rms_row(x + (size_t)blockIdx.x * n, w, out + (size_t)blockIdx.x * n, n, eps, xq ? xq + (size_t)blockIdx.x * n : NULL,
            xd + (size_t)blockIdx.x * nsb);
}

__global__ void k_silu_mul(float *g, const float *u, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* k_silu_mul and then k_quant in one pass (SMOLBOT_GPU_SQ): row blockIdx.y
 * of n values (n % 256 == 0), a warp per super-block, each lane its 8
 * values; g gets silu(g) * u, xq/xd its Q8_K in k_quant's layout -- the
 * same values to the last bit, without reading g back */
__global__ void k_silu_quant(float *g, const float *u, int n, int8_t *xq, float *xd) {
    const int sb = blockIdx.x * 8 + (threadIdx.x >> 5), nsb = n >> 8, r = blockIdx.y, lane = threadIdx.x & 31;
    if (sb >= nsb) return;
    float4 *gp = (float4 *)(g + (size_t)r * n + sb * 256 + lane * 8);
    const float4 *up = (const float4 *)(u + (size_t)r * n + sb * 256 + lane * 8);
    const float4 g0 = gp[0], g1 = gp[1], u0 = up[0], u1 = up[1];
    const float gv[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w}, uv[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
    float v[8];
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = gv[i] / (1.0f + expf(-gv[i])) * uv[i];
    gp[0] = make_float4(v[0], v[1], v[2], v[3]), gp[1] = make_float4(v[4], v[5], v[6], v[7]);
    quant_vals(v, xq + (size_t)r * n + sb * 256, xd + (size_t)r * nsb + sb, lane);
}

/* Token blockIdx.x at position *d_pos + blockIdx.x: rotate q and k (unless
 * rope == 0) and store k, v into the layer's cache rows as f16. */
__global__ void k_rope_store(float *q, float *k, const float *v, __half *kc, __half *vc, const int *d_pos, int n_head,
                             int n_kv, int hd, float theta_scale, int rope) {
    const int t = blockIdx.x, pos = *d_pos + t, half = hd / 2;
    const int qdim = n_head * hd, kvdim = n_kv * hd;
    if (rope) {
        for (int p = threadIdx.x; p < (n_head + n_kv) * half; p += blockDim.x) {
            const int h = p / half, i = p % half;
            float *base = h < n_head ? q + (size_t)t * qdim + h * hd : k + (size_t)t * kvdim + (h - n_head) * hd;
            rope_pair(base + 2 * i, i, pos, theta_scale);
        }
        __syncthreads();
    }
    for (int e = threadIdx.x; e < kvdim; e += blockDim.x) {
        kc[(size_t)pos * kvdim + e] = __float2half_rn(k[(size_t)t * kvdim + e]);
        vc[(size_t)pos * kvdim + e] = __float2half_rn(v[(size_t)t * kvdim + e]);
    }
}

static size_t attn_smem(int hd, int pairs) { return ((size_t)ATT_TILE * (hd + 4) + (size_t)ATT_TILE * hd + (size_t)pairs * hd) * 4; }

/* See the file comment. split == 0: prefill, block (kvh, token tile of qt),
 * out = normalized attention. split > 0: decode of one token at *d_pos,
 * block (kvh, split index), part[(head * nsplit + s) * (hd + 2)] = acc[hd],
 * max, sum. */
__global__ void k_attn(const float *q, const __half *kc, const __half *vc, const int *d_pos, int n_tok, int n_head,
                       int n_kv, int hd, int qt, int split, int nsplit, float scale, float *out, float *part) {
    gdc_wait();
    DYN_SMEM(float, sm);
    const int group = n_head / n_kv, kvdim = n_kv * hd, qdim = n_head * hd;
    const int kvh = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    const int pos0 = *d_pos, dpl = hd / 32;
    int t0, ntq, begin, end;
    if (split) {
        t0 = 0, ntq = 1;
        begin = blockIdx.y * split;
        end = min(begin + split, pos0 + 1);
    } else {
        t0 = blockIdx.y * qt;
        ntq = min(qt, n_tok - t0);
        begin = 0;
        end = pos0 + t0 + ntq;
    }
    const int pairs = ntq * group;
    /* K rows padded by 4 floats: lane j's float4 reads of row j hit distinct banks */
    float *Ks = sm, *Vs = Ks + ATT_TILE * (hd + 4), *Qs = Vs + ATT_TILE * hd;
    for (int e = threadIdx.x; e < pairs * hd; e += blockDim.x) {
        const int pi = e / hd, d = e % hd, tl = pi / group, g = pi % group;
        Qs[e] = q[(size_t)(t0 + tl) * qdim + (kvh * group + g) * hd + d];
    }
    float m[ATT_PPW], l[ATT_PPW], acc[ATT_PPW][ATT_DPL];
#pragma unroll
    for (int s = 0; s < ATT_PPW; s++) {
        m[s] = -INFINITY, l[s] = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) acc[s][i] = 0.0f;
    }
    for (int p0 = begin; p0 < end; p0 += ATT_TILE) {
        __syncthreads();
        /* 8 halves (16 bytes) per load: rows are kvdim * 2 bytes apart, a multiple of 16 */
        for (int e = threadIdx.x; e < ATT_TILE * hd / 8; e += blockDim.x) {
            const int j = e / (hd / 8), d = (e % (hd / 8)) * 8, p = p0 + j;
            uint4 ku = make_uint4(0, 0, 0, 0), vu = ku;
            if (p < end) {
                ku = *(const uint4 *)(kc + (size_t)p * kvdim + kvh * hd + d);
                vu = *(const uint4 *)(vc + (size_t)p * kvdim + kvh * hd + d);
            }
            const __half *kh = (const __half *)&ku, *vh = (const __half *)&vu;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                Ks[j * (hd + 4) + d + i] = __half2float(kh[i]);
                Vs[j * hd + d + i] = __half2float(vh[i]);
            }
        }
        __syncthreads();
#pragma unroll
        for (int s = 0; s < ATT_PPW; s++) {
            const int pi = warp + s * nw;
            if (pi < pairs) {
                const int qpos = split ? pos0 : pos0 + t0 + pi / group;
                const int p = p0 + lane;
                float sc = -INFINITY;
                if (p < end && p <= qpos) {
                    /* four partial sums: a 4-deep chain instead of hd-deep */
                    const float4 *qv = (const float4 *)(Qs + pi * hd), *kr = (const float4 *)(Ks + lane * (hd + 4));
                    float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
                    for (int i = 0; i < hd / 4; i++) {
                        const float4 a = qv[i], b = kr[i];
                        d0 += a.x * b.x, d1 += a.y * b.y, d2 += a.z * b.z, d3 += a.w * b.w;
                    }
                    sc = ((d0 + d1) + (d2 + d3)) * scale;
                }
                const float mt = warp_max(sc);
                if (mt != -INFINITY) {
                    const float mn = fmaxf(m[s], mt);
                    const float r = expf(m[s] - mn);
                    const float pe = sc == -INFINITY ? 0.0f : expf(sc - mn);
                    l[s] = l[s] * r + warp_sum(pe);
#pragma unroll
                    for (int i = 0; i < ATT_DPL; i++) acc[s][i] *= r;
                    for (int j = 0; j < ATT_TILE; j++) {
                        const float pj = __shfl_sync(0xffffffffu, pe, j);
#pragma unroll
                        for (int i = 0; i < ATT_DPL; i++)
                            if (i < dpl) acc[s][i] += pj * Vs[j * hd + lane + 32 * i];
                    }
                    m[s] = mn;
                }
            }
        }
    }
#pragma unroll
    for (int s = 0; s < ATT_PPW; s++) {
        const int pi = warp + s * nw;
        if (pi < pairs) {
            const int tl = pi / group, head = kvh * group + pi % group;
            if (split) {
                float *pp = part + ((size_t)head * nsplit + blockIdx.y) * (hd + 2);
#pragma unroll
                for (int i = 0; i < ATT_DPL; i++)
                    if (i < dpl) pp[lane + 32 * i] = acc[s][i];
                if (lane == 0) pp[hd] = m[s], pp[hd + 1] = l[s];
            } else {
                float *o = out + (size_t)(t0 + tl) * qdim + head * hd;
#pragma unroll
                for (int i = 0; i < ATT_DPL; i++)
                    if (i < dpl) o[lane + 32 * i] = acc[s][i] / l[s];
            }
        }
    }
}

/* Merge the decode splits: one block per query head, hd threads (a
 * multiple of 32). The splits' maxima and weights are reduced by the whole
 * block (there are up to n_ctx / 32 of them), then thread d sums its
 * dimension. w: dynamic shared memory of nsplit floats. */
__global__ void k_attn_combine(const float *part, const int *d_pos, int hd, int split, int nsplit, float *out) {
    gdc_wait();
    DYN_SMEM(float, w);
    __shared__ float red[32];
    const int head = blockIdx.x, d = threadIdx.x, nt = blockDim.x;
    const int ns = min(nsplit, *d_pos / split + 1);
    const float *pp = part + (size_t)head * nsplit * (hd + 2);
    float M = -INFINITY;
    for (int s = d; s < ns; s += nt)
        if (pp[s * (hd + 2) + hd + 1] > 0.0f) M = fmaxf(M, pp[s * (hd + 2) + hd]);
    M = warp_max(M);
    if ((d & 31) == 0) red[d >> 5] = M;
    __syncthreads();
    M = red[0];
    for (int i = 1; i < nt / 32; i++) M = fmaxf(M, red[i]);
    __syncthreads();
    float den = 0.0f;
    for (int s = d; s < ns; s += nt) {
        const float l = pp[s * (hd + 2) + hd + 1];
        const float e = l > 0.0f ? expf(pp[s * (hd + 2) + hd] - M) : 0.0f;
        w[s] = e;
        den += e * l;
    }
    den = warp_sum(den);
    if ((d & 31) == 0) red[d >> 5] = den;
    __syncthreads();
    den = 0.0f;
    for (int i = 0; i < nt / 32; i++) den += red[i];
    float num = 0.0f;
    for (int s = 0; s < ns; s++) num += w[s] * pp[s * (hd + 2) + d];
    if (d < hd) out[(size_t)head * hd + d] = num / den;
}


/* ---- decode attention in one kernel (SMOLBOT_GPU_DATT=1) ----------------
 * One token at depth n = *d_pos + 1 reads the layer's whole K/V cache (16.8
 * MB at 8192 positions for the 3B shape), so the kernel must keep the
 * memory busy and end in one step. k_attn's decode split (32 positions per
 * block) sizes its grid by n_ctx, and k_attn_combine then walks every split
 * serially in one block per head; at 8192 positions that took half of the
 * decode step on an H200. k_attn_dec instead:
 *   - grid (n_kv, ATT_DEC_SPLITS), fixed, so one CUDA graph serves every
 *     depth: split s of KV head h takes the positions [s c, s c + c) with
 *     c = att_dec_chunk(n) (at least minc, a multiple of 32); splits past n
 *     only count themselves done;
 *   - one warp per query head of the group, so each K/V tile of 32
 *     positions is read once for the group: f16 into shared memory by
 *     cp.async, the next tile in flight while this one is used;
 *   - lane j scores position j of the tile (q pre-scaled in shared memory,
 *     f32 sums), online softmax per warp, lane l accumulates the dimension
 *     pairs 2l + 64i of V;
 *   - the last block of a KV head to finish (a counter, as in k_dec's
 *     norm) merges the partials of its group's heads, writes the f32 output
 *     and, when oq is set (the group's heads are whole 256-value
 *     super-blocks), its Q8_K for Wo: no combine or quant kernel follows.
 * Shapes: group <= 8 (one warp each), head_dim % 64 == 0, <= 256. */
#define ATT_DEC_SPLITS 64      /* blocks per KV head (SMOLBOT_GPU_DSPLITS: 8..ATT_DEC_MAX_SPLITS) */
#define ATT_DEC_MAX_SPLITS 256
#define ATT_DEC_MIN 32         /* positions per split, at least (SMOLBOT_GPU_DMIN: 32, 64, 128 or 256) */

static size_t attn_dec_smem(int hd, int group) {
    return (size_t)2 * 32 * (hd + 8) * 2 + (size_t)2 * 32 * hd * 2 + (size_t)group * hd * 4;
}
static bool attn_dec_ok(int hd, int group) { return group >= 1 && group <= 8 && hd % 64 == 0 && hd <= 256; }

__device__ __forceinline__ int att_dec_chunk(int n, int splits, int minc) {
    const int c = ((n + splits - 1) / splits + 31) & ~31;
    return c > minc ? c : minc;
}

/* 16 bytes global -> shared, asynchronously; bytes 0 writes zeros */
#ifdef SMOLBOT_GPU_EMU
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) { emu_cp_async16(dst, src, bytes); }
__device__ __forceinline__ void cp_async_commit() {}
template <int N> __device__ __forceinline__ void cp_async_wait() {}
#else
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
#endif

/* Tile of positions p0..p0+rows-1 of one KV head (column off of the cache
 * rows) into shared memory, one cp.async group, by threads tid of nthr
 * (the block, or one warp): K rows padded by 8 halves (row j's 16-byte
 * pieces fall in distinct banks for 8 consecutive rows), V rows vld halves
 * apart; rows at or past end are zeros. */
__device__ __forceinline__ void att_tile_load(__half *Kb, __half *Vb, const __half *kc, const __half *vc, int p0, int end,
                                              int kvdim, int off, int hd, int rows, int vld, int tid, int nthr) {
    const int cpr = hd / 8;
    for (int c = tid; c < rows * cpr; c += nthr) {
        const int j = c / cpr, d = (c % cpr) * 8, p = p0 + j, ok = p < end ? 16 : 0;
        const size_t gofs = (size_t)(ok ? p : p0) * kvdim + off + d;
        cp_async16(Kb + j * (hd + 8) + d, kc + gofs, ok);
        cp_async16(Vb + j * vld + d, vc + gofs, ok);
    }
    cp_async_commit();
}

/* The merge by the last block of a KV head, one warp per head: the ns
 * partials pp[s * (hd + 2)] (acc[hd], m, l; every one has l >= 1) weighed
 * by exp(m - M) -- each lane weighs its own splits into ws (shared, ns
 * floats), then the partial outputs are summed with U splits' loads in
 * flight (one split at a time, the merge was a chain of L2 round trips
 * that cost more than the scores at 8192). Lane i sums the dimension pairs
 * d0 + 2i + 64k, k < np (np <= NP: the whole head from d0 = 0, or a 64-value
 * half of it when two warps share the head); the result goes to out and
 * to ob (shared memory, for att_out_q8), both indexed from dimension 0.
 * ML1 (SMOLBOT_GPU_MW): every split's (m, l) in one round of loads (ns <=
 * ATT_DEC_MAX_SPLITS). Whatever U and ML1, the same sums in the same order. */
template <int U, int NP, bool ML1>
__device__ __forceinline__ void att_merge(const float *pp, int ns, int hd, int np, int d0, float *ws, float *out, float *ob,
                                          int lane) {
    constexpr int NL = ATT_DEC_MAX_SPLITS / 32;
    float M = -INFINITY, den = 0.0f;
    if (ML1) {
        float2 ml[NL];
#pragma unroll
        for (int k = 0; k < NL; k++) {
            const int s = lane + 32 * k;
            ml[k] = s < ns ? __ldcg((const float2 *)(pp + (size_t)s * (hd + 2) + hd)) : make_float2(-INFINITY, 0.0f);
            M = fmaxf(M, ml[k].x);
        }
        M = warp_max(M);
#pragma unroll
        for (int k = 0; k < NL; k++)
            if (lane + 32 * k < ns) {
                const float w = expf(ml[k].x - M);
                ws[lane + 32 * k] = w;
                den += w * ml[k].y;
            }
    } else {
        for (int s = lane; s < ns; s += 32) M = fmaxf(M, __ldcg(pp + (size_t)s * (hd + 2) + hd));
        M = warp_max(M);
        for (int s = lane; s < ns; s += 32) {
            const float *ps = pp + (size_t)s * (hd + 2);
            const float w = expf(__ldcg(ps + hd) - M);
            ws[s] = w;
            den += w * __ldcg(ps + hd + 1);
        }
    }
    den = warp_sum(den);
    __syncwarp();
    const int d = d0 + 2 * lane;
    float2 o[NP];
#pragma unroll
    for (int i = 0; i < NP; i++) o[i] = make_float2(0.0f, 0.0f);
    for (int s0 = 0; s0 < ns; s0 += U) {
        float2 a[U][NP];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int i = 0; i < NP; i++)
                a[u][i] = s0 + u < ns && i < np ? __ldcg((const float2 *)(pp + (size_t)(s0 + u) * (hd + 2) + d + 64 * i))
                                                : make_float2(0.0f, 0.0f);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const float w = s0 + u < ns ? ws[s0 + u] : 0.0f;
#pragma unroll
            for (int i = 0; i < NP; i++) o[i].x += w * a[u][i].x, o[i].y += w * a[u][i].y;
        }
    }
#pragma unroll
    for (int i = 0; i < NP; i++)
        if (i < np) {
            const float2 r = make_float2(o[i].x / den, o[i].y / den);
            *(float2 *)(out + d + 64 * i) = r;
            *(float2 *)(ob + d + 64 * i) = r;
        }
}

/* one warp per head: eight splits in flight, or (ML1, SMOLBOT_GPU_MW)
 * sixteen, every (m, l) in one round */
template <bool ML1 = false>
__device__ __forceinline__ void att_merge_head(const float *pp, int ns, int hd, float *ws, float *out, float *ob, int lane) {
    att_merge<ML1 ? 16 : 8, 4, ML1>(pp, ns, hd, hd / 64, 0, ws, out, ob, lane);
}

/* The Q8_K of a group's n outputs ob (shared memory; n % 256 == 0) into
 * oq/od at value base, a super-block per warp (nw warps). */
__device__ __forceinline__ void att_out_q8(const float *ob, int base, int n, int8_t *oq, float *od, int warp, int nw, int lane) {
    for (int sb = warp; sb < n / 256; sb += nw) quant_sb(ob + sb * 256, oq + base + sb * 256, od + base / 256 + sb, lane);
}

__global__ void __launch_bounds__(256) k_attn_dec(const float *q, const __half *kc, const __half *vc, const int *d_pos,
                                                   int n_head, int n_kv, int hd, float scale, int minc, int early,
                                                   float *part, unsigned *counter, float *out, int8_t *oq, float *od) {
    if (early) gdc_launch();
    gdc_wait();
    DYN_SMEM(unsigned char, att_sm);
    __shared__ int last;
    const int group = n_head / n_kv, kvdim = n_kv * hd, kvh = blockIdx.x, S = gridDim.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, np = hd / 64, head = kvh * group + warp;
    const int n = *d_pos + 1, chunk = att_dec_chunk(n, S, minc);
    const int begin = blockIdx.y * chunk, end = min(begin + chunk, n);
    __half *Kt = (__half *)att_sm, *Vt = Kt + 2 * 32 * (hd + 8);
    float *Qs = (float *)(Vt + 2 * 32 * hd);
    if (begin < end) {
        att_tile_load(Kt, Vt, kc, vc, begin, end, kvdim, kvh * hd, hd, 32, hd, threadIdx.x, blockDim.x);
        for (int e = threadIdx.x; e < group * hd; e += blockDim.x) Qs[e] = q[(size_t)kvh * group * hd + e] * scale;
        float m = -INFINITY, l = 0.0f;
        float2 acc[4];
#pragma unroll
        for (int i = 0; i < 4; i++) acc[i] = make_float2(0.0f, 0.0f);
        int buf = 0;
        for (int p0 = begin; p0 < end; p0 += 32, buf ^= 1) {
            if (p0 + 32 < end) {
                att_tile_load(Kt + (buf ^ 1) * 32 * (hd + 8), Vt + (buf ^ 1) * 32 * hd, kc, vc, p0 + 32, end, kvdim,
                              kvh * hd, hd, 32, hd, threadIdx.x, blockDim.x);
                cp_async_wait<1>();
            } else cp_async_wait<0>();
            __syncthreads();
            const __half *Kb = Kt + buf * 32 * (hd + 8), *Vb = Vt + buf * 32 * hd;
            const uint4 *kr = (const uint4 *)(Kb + lane * (hd + 8));
            const float4 *qv = (const float4 *)(Qs + warp * hd);
            float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
            for (int i = 0; i < hd / 8; i++) {
                const uint4 u = kr[i];
                const float2 k0 = __half22float2(*(const __half2 *)&u.x), k1 = __half22float2(*(const __half2 *)&u.y);
                const float2 k2 = __half22float2(*(const __half2 *)&u.z), k3 = __half22float2(*(const __half2 *)&u.w);
                const float4 a = qv[2 * i], b = qv[2 * i + 1];
                d0 += a.x * k0.x + a.y * k0.y, d1 += a.z * k1.x + a.w * k1.y;
                d2 += b.x * k2.x + b.y * k2.y, d3 += b.z * k3.x + b.w * k3.y;
            }
            /* lane 0's position is below end, so the tile maximum is finite */
            const float sc = p0 + lane < end ? (d0 + d1) + (d2 + d3) : -INFINITY;
            const float mn = fmaxf(m, warp_max(sc)), r = expf(m - mn), pe = expf(sc - mn);
            l = l * r + pe; /* this lane's share; summed over the warp at the end */
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (i < np) acc[i].x *= r, acc[i].y *= r;
            const __half2 *vr = (const __half2 *)Vb + lane;
#pragma unroll 8
            for (int j = 0; j < 32; j++) {
                const float pj = __shfl_sync(0xffffffffu, pe, j);
#pragma unroll
                for (int i = 0; i < 4; i++)
                    if (i < np) {
                        const float2 v = __half22float2(vr[j * (hd / 2) + 32 * i]);
                        acc[i].x += pj * v.x, acc[i].y += pj * v.y;
                    }
            }
            m = mn;
            __syncthreads(); /* everyone is done with buf before it is loaded again */
        }
        l = warp_sum(l);
        float *pp = part + ((size_t)head * S + blockIdx.y) * (hd + 2);
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (i < np) *(float2 *)(pp + 2 * lane + 64 * i) = acc[i];
        if (lane == 0) pp[hd] = m, pp[hd + 1] = l;
    }
    __threadfence(); /* our partials are visible to whichever block is last */
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter + kvh, 1u) == (unsigned)S - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    if (threadIdx.x == 0) counter[kvh] = 0; /* ready for the next layer */
    att_merge_head(part + (size_t)head * S * (hd + 2), (n + chunk - 1) / chunk, hd, (float *)att_sm + warp * S, out + (size_t)head * hd,
                   Qs + warp * hd, lane); /* the K tiles and q are no longer needed: S <= ATT_DEC_MAX_SPLITS */
    if (!oq) return;
    __syncthreads();
    att_out_q8(Qs, kvh * group * hd, group * hd, oq, od, warp, group, lane);
}

/* ---- prefill attention on tensor cores (default; SMOLBOT_GPU_FA=0: k_attn)
 * k_attn scores and sums on CUDA cores, one (token, head) pair per warp;
 * at 2048 tokens a layer's causal attention is 4.4 GFLOP (k_attn: 4 ms a
 * layer on an H200, k_fa 0.12 ms). k_fa is flash attention on f16 tensor
 * cores (mma.sync m16n8k16, f32 accumulation), as llama.cpp's CUDA build
 * does it, but with q and P each in two f16 parts (x = hi + lo, two
 * products): f16 alone doubled the golden tests' logit error on the tiny
 * Q4_K_M model; K and V are f16 in the cache anyway. So:
 *   - block (KV head, tile of 16 * 4 / group tokens), 4 warps; warp w takes
 *     query head w % group of its KV head and 16 tokens (w / group), so the
 *     group's heads share every K/V tile;
 *   - K/V tiles of FA_KEYS positions, double-buffered in shared memory by
 *     cp.async (rows padded by 8 halves: the 8 row addresses of an ldmatrix
 *     fall in distinct banks); keys past the block's last query are zeros
 *     and masked;
 *   - per tile: S = Q K^T (Q pre-scaled, held as f16 A fragments for the
 *     whole loop; K by ldmatrix), causal mask, online softmax per row (a
 *     row lives in a quad of lanes), P's two parts used as the A fragments
 *     of O += P V directly (V by ldmatrix.trans);
 *   - a warp skips the products of tiles wholly after its last query.
 * Fragment layouts (PTX ISA, f16 m16n8k16; g = lane / 4, t = lane % 4):
 *   A: a0 = A[g][2t..], a1 = A[g+8][2t..], a2 = A[g][8+2t..], a3 = A[g+8][8+2t..]
 *   B: b0 = B[2t..][g], b1 = B[8+2t..][g];  C: c0,c1 = C[g][2t..], c2,c3 = C[g+8][2t..]
 * Shapes: head_dim 64 or 128, group 1, 2 or 4. */
#define FA_KEYS 64
#define FA_WARPS 4

static size_t fa_smem(int hd) { return (size_t)2 * 2 * FA_KEYS * (hd + 8) * sizeof(__half); }
static bool fa_ok(int hd, int group) { return (hd == 64 || hd == 128) && (group == 1 || group == 2 || group == 4); }
static int fa_tokens(int group) { return 16 * (FA_WARPS / group); }

#ifdef SMOLBOT_GPU_EMU
__device__ __forceinline__ void ldsm_x4(unsigned *r, const __half *p) { emu_ldsm_x4(r, p, 0); }
__device__ __forceinline__ void ldsm_x4_t(unsigned *r, const __half *p) { emu_ldsm_x4(r, p, 1); }
__device__ __forceinline__ void mma_f16(float *c, const unsigned *a, unsigned b0, unsigned b1) { emu_mma_f16(c, a, b0, b1); }
#else
__device__ __forceinline__ void ldsm_x4(unsigned *r, const __half *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned *r, const __half *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
}
__device__ __forceinline__ void mma_f16(float *c, const unsigned *a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif
/* lo in the low half: the element of the lower column index */
__device__ __forceinline__ unsigned pack_h2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *(const unsigned *)&h;
}
/* the pair (a, b) as two f16 pairs, hi + lo = (a, b) to about 2^-22 */
__device__ __forceinline__ void split_h2(float a, float b, unsigned *hi, unsigned *lo) {
    *hi = pack_h2(a, b);
    const float2 h = __half22float2(*(const __half2 *)hi);
    *lo = pack_h2(a - h.x, b - h.y);
}

/* S += A K^T for a tile of 8 NJ keys: K's rows (keys) in shared memory,
 * LD halves apart, A as KS k-step fragments over the head dims; with TWO,
 * A2 (q's second part) after A on the same K fragments */
template <int NJ, int KS, bool TWO>
__device__ __forceinline__ void tile_qk(float (*sc)[4], const unsigned (*a)[4], const unsigned (*a2)[4], const __half *Kb,
                                        int LD, int lane) {
    const int mi = lane >> 3;
#pragma unroll
    for (int k = 0; k < KS; k++)
#pragma unroll
        for (int j = 0; j < NJ; j += 2) {
            unsigned b[4]; /* keys 8j.. (+8 for matrices 2, 3), dims 16k.. (+8 for 1, 3) */
            ldsm_x4(b, Kb + (8 * j + (mi >> 1) * 8 + (lane & 7)) * LD + 16 * k + (mi & 1) * 8);
            mma_f16(sc[j], a[k], b[0], b[1]);
            mma_f16(sc[j + 1], a[k], b[2], b[3]);
            if (TWO) {
                mma_f16(sc[j], a2[k], b[0], b[1]);
                mma_f16(sc[j + 1], a2[k], b[2], b[3]);
            }
        }
}

/* O += P V for 16 NS keys: P as NS k-step fragments over the keys (with
 * TWO, P2 after P: P's second part), V's rows (keys) in shared memory read
 * transposed, O as DT n8 tiles of the head dims */
template <int NS, int DT, bool TWO>
__device__ __forceinline__ void tile_pv(float (*o)[4], const unsigned (*p)[4], const unsigned (*p2)[4], const __half *Vb,
                                        int LD, int lane) {
    const int mi = lane >> 3;
#pragma unroll
    for (int s = 0; s < NS; s++)
#pragma unroll
        for (int d = 0; d < DT; d += 2) {
            unsigned b[4]; /* transposed: keys 16s.. (+8 for matrices 1, 3), dims 8d.. (+8 for 2, 3) */
            ldsm_x4_t(b, Vb + (16 * s + (mi & 1) * 8 + (lane & 7)) * LD + 8 * d + (mi >> 1) * 8);
            mma_f16(o[d], p[s], b[0], b[1]);
            mma_f16(o[d + 1], p[s], b[2], b[3]);
            if (TWO) {
                mma_f16(o[d], p2[s], b[0], b[1]);
                mma_f16(o[d + 1], p2[s], b[2], b[3]);
            }
        }
}

template <int HD>
__global__ void __launch_bounds__(FA_WARPS * 32) k_fa(const float *q, const __half *kc, const __half *vc, const int *d_pos,
                                                       int n_tok, int n_head, int n_kv, float scale, float *out) {
    DYN_SMEM(unsigned char, fa_sm);
    constexpr int LD = HD + 8, KS = HD / 16, DT = HD / 8; /* row stride; k-steps over dims; n8 tiles of dims */
    const int group = n_head / n_kv, kvdim = n_kv * HD, qdim = n_head * HD, tq = FA_WARPS / group * 16;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int kvh = blockIdx.x, head = kvh * group + warp % group;
    const int t0 = blockIdx.y * tq + (warp / group) * 16, pos0 = *d_pos;
    const int kend = pos0 + min((int)blockIdx.y * tq + tq, n_tok);       /* keys the block needs */
    const int wmax = pos0 + min(t0 + 15, n_tok - 1);                      /* the warp's last query position */
    const int qpa = pos0 + min(t0 + g, n_tok - 1), qpb = pos0 + min(t0 + g + 8, n_tok - 1); /* rows g, g + 8 */
    __half *Ks = (__half *)fa_sm, *Vs = Ks + 2 * FA_KEYS * LD;
    att_tile_load(Ks, Vs, kc, vc, 0, kend, kvdim, kvh * HD, HD, FA_KEYS, LD, threadIdx.x, blockDim.x);
    /* q as two f16 parts, q = hi + lo (rows past n_tok repeat the last
     * token: computed, never written): f16 q alone costs scores an error of
     * 2^-11 of their size, which doubled the golden tests' logit error */
    unsigned qa[KS][4], ql[KS][4];
    {
        const float *r0 = q + (size_t)(qpa - pos0) * qdim + head * HD, *r1 = q + (size_t)(qpb - pos0) * qdim + head * HD;
#pragma unroll
        for (int k = 0; k < KS; k++) {
            const float2 x0 = *(const float2 *)(r0 + 16 * k + 2 * t), x1 = *(const float2 *)(r1 + 16 * k + 2 * t);
            const float2 x2 = *(const float2 *)(r0 + 16 * k + 8 + 2 * t), x3 = *(const float2 *)(r1 + 16 * k + 8 + 2 * t);
            const float2 xs[4] = {x0, x1, x2, x3};
#pragma unroll
            for (int r = 0; r < 4; r++) split_h2(xs[r].x * scale, xs[r].y * scale, &qa[k][r], &ql[k][r]);
        }
    }
    float o[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const int ntiles = (kend + FA_KEYS - 1) / FA_KEYS;
    for (int it = 0; it < ntiles; it++) {
        const int kb = it * FA_KEYS, buf = it & 1;
        if (it + 1 < ntiles) {
            att_tile_load(Ks + (buf ^ 1) * FA_KEYS * LD, Vs + (buf ^ 1) * FA_KEYS * LD, kc, vc, kb + FA_KEYS, kend, kvdim,
                          kvh * HD, HD, FA_KEYS, LD, threadIdx.x, blockDim.x);
            cp_async_wait<1>();
        } else cp_async_wait<0>();
        __syncthreads();
        if (kb <= wmax) { /* warp-uniform; tile 0 always runs, so m0, m1 are finite after it */
            const __half *Kb = Ks + buf * FA_KEYS * LD, *Vb = Vs + buf * FA_KEYS * LD;
            float sc[FA_KEYS / 8][4];
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
            tile_qk<FA_KEYS / 8, KS, true>(sc, qa, ql, Kb, LD, lane);
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = kb + 8 * j + 2 * t + (e & 1);
                    if (key > (e < 2 ? qpa : qpb)) sc[j][e] = -INFINITY;
                    if (e < 2) mx0 = fmaxf(mx0, sc[j][e]);
                    else mx1 = fmaxf(mx1, sc[j][e]);
                }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)), mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)), mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1), r0 = expf(m0 - n0), r1 = expf(m1 - n1);
            m0 = n0, m1 = n1, l0 *= r0, l1 *= r1;
#pragma unroll
            for (int d = 0; d < DT; d++) o[d][0] *= r0, o[d][1] *= r0, o[d][2] *= r1, o[d][3] *= r1;
            /* P as A fragments (keys 16s.. are n8 tiles 2s, 2s + 1), in two f16
             * parts like q: P = hi + lo to about 2^-22 */
            unsigned pa[FA_KEYS / 16][4], pl[FA_KEYS / 16][4];
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++) {
                const float p0 = expf(sc[j][0] - n0), p1 = expf(sc[j][1] - n0);
                const float p2 = expf(sc[j][2] - n1), p3 = expf(sc[j][3] - n1);
                const int s = j >> 1, e = (j & 1) * 2;
                split_h2(p0, p1, &pa[s][e], &pl[s][e]);
                split_h2(p2, p3, &pa[s][e + 1], &pl[s][e + 1]);
                l0 += p0 + p1, l1 += p2 + p3;
            }
            tile_pv<FA_KEYS / 16, DT, true>(o, pa, pl, Vb, LD, lane);
        }
        __syncthreads(); /* the buffer is loaded again next iteration */
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1), l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1), l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const int ta = t0 + g, tb = ta + 8;
#pragma unroll
    for (int d = 0; d < DT; d++) {
        if (ta < n_tok) *(float2 *)(out + (size_t)ta * qdim + head * HD + 8 * d + 2 * t) = make_float2(o[d][0] / l0, o[d][1] / l0);
        if (tb < n_tok) *(float2 *)(out + (size_t)tb * qdim + head * HD + 8 * d + 2 * t) = make_float2(o[d][2] / l1, o[d][3] / l1);
    }
}

/* ---- prefill on f16 tensor cores over a dequantized matrix (SMOLBOT_GPU_DQ16)
 * llama.cpp's path for long prompts: the weight matrix is dequantized to
 * f16 once per chunk (k_dq16; a scratch matrix, never kept), the chunk's
 * activations rounded to f16 (k_f2h; k_q2h from their Q8_K for K-quants,
 * as the CPU sees them), and one plain f16 GEMM runs on the
 * tensor cores -- where k_mm and k_mmq unpack every weight tile in every
 * block of tokens, and spend their time on that and on the loads' latency.
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
#define GM_BN 128
#define GM_BK 32
#define GM_ST 3
#define GM_LD (GM_BK + 8)
#define DQ16_MIN_TOK 256 /* tokens from which a product takes this path (SMOLBOT_GPU_DQMIN) */

static size_t gemm16_smem(int bm) { return (size_t)GM_ST * (bm + GM_BN) * GM_LD * sizeof(__half); }

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
__global__ void k_f2h(const float *x, int ldx, int n, int rows, __half *out) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (i >= (size_t)n * rows) return;
    const int t = (int)(i / (size_t)n), k = (int)(i % (size_t)n);
    const float4 a = *(const float4 *)(x + (size_t)t * ldx + k), b = *(const float4 *)(x + (size_t)t * ldx + k + 4);
    const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    st_h8(out + i, v);
}

/* out[t][k] = xq[t][k] * xd[t][k / 256] as f16: Q8_K activations (rows of
 * n, k_quant's layout), so that K-quant weights see the activations the
 * CPU's products see, as k_mm does; 8 values a thread */
__global__ void k_q2h(const int8_t *xq, const float *xd, int n, int rows, __half *out) {
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
    /* c[i][j]: rows wm + 16i + g (+8: e >= 2), tokens wn + 8j + 2t + (e & 1) */
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = m0 + wm + 16 * i + g + (e >= 2 ? 8 : 0), tt = n0 + wn + 8 * j + 2 * t + (e & 1);
                if (r < M && tt < N) {
                    float *yp = y + (size_t)tt * ldy + r;
                    *yp = acc ? *yp + c[i][j][e] : c[i][j][e];
                }
            }
}

/* ---- decode attention on tensor cores (SMOLBOT_GPU_DMMA) ---------------
 * k_attn_dec scores and sums on CUDA cores: per 32 positions each warp
 * (one query head) runs about a thousand instructions of shared-memory
 * loads, conversions and FMAs, so at 8192 positions it moved K and V at
 * 0.7 TB/s where the H200 reads 4. k_attn_dmma does the same split-K on
 * f16 tensor cores, k_fa's way, with the group's heads as the rows of one
 * m16n8k16 tile: row h is head h's q (pre-scaled) rounded to f16, row 8 + h
 * what that rounding left (q = hi + lo, as in k_fa), so one mma gives both
 * parts' scores (summed after), and P's two parts in the same rows feed
 * O += P V the same way -- 64 mma per 32 positions for every head of the
 * group, where k_fa spends 128 on 16 rows of one head:
 *   - block (KV head, split of the positions, as k_attn_dec), W warps
 *     (DM_WARPS, or DM_WARPS8); warp w takes the split's 32-position
 *     tiles w, w + W, .. into its own shared buffer (cp.async, a warp
 *     barrier only);
 *   - the warps' (m, l, o) are merged in shared memory; a split that holds
 *     the whole context (n <= chunk: by default up to ATT_DMMA_MIN
 *     positions) writes the output and its Q8_K at once, else its partial,
 *     and the last of the splits with positions merges (att_merge);
 *     splits past the context leave at once, uncounted.
 * Shapes: head_dim 64 or 128, group <= 8. */
/* Ask L2 for K and V rows [begin, end) of one head (hd values at off in
 * rows of kvdim), a line per thread and step (SMOLBOT_GPU_APF):
 * k_attn_dmma's blocks are scheduled while QKV drains, and these rows do
 * not depend on it -- the new position's may still be written, which a
 * prefetch into L2, where writes land, cannot disturb. */
__device__ __forceinline__ void att_l2_prefetch(const __half *kc, const __half *vc, int begin, int end, int kvdim, int off,
                                                int hd) {
    const int lines = hd / 64; /* 64 halves a line */
    for (int i = threadIdx.x; i < (end - begin) * lines; i += blockDim.x) {
        const size_t e = (size_t)(begin + i / lines) * kvdim + off + (i % lines) * 64;
        l2_line(kc + e), l2_line(vc + e);
    }
}

#define DM_WARPS 4
#define DM_TILE 32
#define ATT_DMMA_MIN 128 /* positions per split, at least (one tile per warp) */
/* SMOLBOT_GPU_DW8 (opt-in, not yet measured on a GPU): blocks of eight
 * warps, half the splits (at 8192, 128 blocks, one per SM: every K/V tile
 * still requested at once), and the merge half as long -- 32 partials a
 * head, each summed by two warps of 64 dimensions with all 32 splits'
 * loads in flight (att_merge<32, 1>): two dependent rounds, not ten */
#define DM_WARPS8 8
#define ATT_DW8_SPLITS 32
#define ATT_DW8_MIN 256

static size_t dmma_smem(int hd, int w) { return (size_t)w * 2 * DM_TILE * (hd + 8) * sizeof(__half); }
static bool dmma_ok(int hd, int group) { return (hd == 64 || hd == 128) && group >= 1 && group <= 8; }

template <int HD, int W>
__global__ void __launch_bounds__(W * 32)
    k_attn_dmma(const float *q, const __half *kc, const __half *vc, const int *d_pos, int n_head, int n_kv, float scale,
                int minc, int early, float *part, unsigned *counter, float *out, int8_t *oq, float *od) {
    if (early & 1) gdc_launch();
    constexpr int LD = HD + 8, KS = HD / 16, DT = HD / 8, NJ = DM_TILE / 8;
    const int group = n_head / n_kv, kvdim = n_kv * HD, kvh = blockIdx.x, S = gridDim.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    /* d_pos is set before the graph runs (no kernel writes it): read before the wait */
    const int n = *d_pos + 1, chunk = att_dec_chunk(n, S, minc), ns = (n + chunk - 1) / chunk;
    const int begin = blockIdx.y * chunk, end = min(begin + chunk, n);
    if (early & 2) att_l2_prefetch(kc, vc, begin, end, kvdim, kvh * HD, HD); /* the split's K and V rows */
    gdc_wait();
    DYN_SMEM(unsigned char, dm_sm);
    __shared__ int last;
    if (begin >= end) return;
    __half *Kw = (__half *)dm_sm + (size_t)warp * 2 * DM_TILE * LD, *Vw = Kw + DM_TILE * LD;
    unsigned qa[KS][4]; /* A fragments: a0, a2 row g (hi), a1, a3 row g + 8 (lo); zero past the group */
    {
        const float *qr = q + ((size_t)kvh * group + (g < group ? g : 0)) * HD;
#pragma unroll
        for (int k = 0; k < KS; k++) {
            float2 x0 = *(const float2 *)(qr + 16 * k + 2 * t), x1 = *(const float2 *)(qr + 16 * k + 8 + 2 * t);
            if (g >= group) x0 = x1 = make_float2(0.0f, 0.0f);
            split_h2(x0.x * scale, x0.y * scale, &qa[k][0], &qa[k][1]);
            split_h2(x1.x * scale, x1.y * scale, &qa[k][2], &qa[k][3]);
        }
    }
    float o[DT][4]; /* c0, c1: row g (hi), c2, c3: row g + 8 (lo) of dims 8d + 2t.. */
#pragma unroll
    for (int d = 0; d < DT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int p0 = begin + warp * DM_TILE; p0 < end; p0 += W * DM_TILE) {
        att_tile_load(Kw, Vw, kc, vc, p0, end, kvdim, kvh * HD, HD, DM_TILE, LD, lane, 32);
        cp_async_wait<0>();
        __syncwarp();
        float sc[NJ][4];
#pragma unroll
        for (int j = 0; j < NJ; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
        tile_qk<NJ, KS, false>(sc, qa, qa, Kw, LD, lane);
        /* head g's score of key 8j + 2t + e: its hi row plus its lo row;
         * keys at or past end (zeros in the buffer) are masked */
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float v = sc[j][e] + sc[j][e + 2];
                sc[j][e] = p0 + 8 * j + 2 * t + e < end ? v : -INFINITY;
                mx = fmaxf(mx, sc[j][e]);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1)), mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float nm = fmaxf(m, mx), r = expf(m - nm); /* key p0 is below end: nm is finite */
        m = nm, l *= r;
#pragma unroll
        for (int d = 0; d < DT; d++) o[d][0] *= r, o[d][1] *= r, o[d][2] *= r, o[d][3] *= r;
        unsigned pa[DM_TILE / 16][4]; /* P as A fragments: keys 16s.. are n8 tiles 2s, 2s + 1; hi row g, lo row g + 8 */
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            const float p0v = expf(sc[j][0] - nm), p1v = expf(sc[j][1] - nm);
            l += p0v + p1v;
            split_h2(p0v, p1v, &pa[j >> 1][(j & 1) * 2], &pa[j >> 1][(j & 1) * 2 + 1]);
        }
        tile_pv<DM_TILE / 16, DT, false>(o, pa, pa, Vw, LD, lane);
        __syncwarp(); /* the buffer is loaded again next tile */
    }
    l += __shfl_xor_sync(0xffffffffu, l, 1), l += __shfl_xor_sync(0xffffffffu, l, 2);
    __syncthreads(); /* every warp is done with its tiles: the buffers become the merge's */
    float *wst = (float *)dm_sm;                        /* [W][group][HD + 2]: each warp's acc, m, l */
    float *ob = wst + (size_t)W * group * (HD + 2);     /* [group][HD]: the output, for its Q8_K */
    if (g < group) { /* a warp without tiles stores m = -inf, l = 0, acc = 0 */
        float *w = wst + ((size_t)warp * group + g) * (HD + 2);
#pragma unroll
        for (int d = 0; d < DT; d++) *(float2 *)(w + 8 * d + 2 * t) = make_float2(o[d][0] + o[d][2], o[d][1] + o[d][3]);
        if (t == 0) w[HD] = m, w[HD + 1] = l;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < group * HD / 2; e += blockDim.x) {
        const int h = e / (HD / 2), d = 2 * (e % (HD / 2)), head = kvh * group + h;
        float M = -INFINITY, L = 0.0f;
        for (int w = 0; w < W; w++) M = fmaxf(M, wst[((size_t)w * group + h) * (HD + 2) + HD]); /* warp 0's is finite */
        float2 acc = make_float2(0.0f, 0.0f);
        for (int w = 0; w < W; w++) {
            const float *ws = wst + ((size_t)w * group + h) * (HD + 2), c = expf(ws[HD] - M);
            acc.x += c * ws[d], acc.y += c * ws[d + 1], L += c * ws[HD + 1];
        }
        if (ns == 1) { /* the whole context: the output itself */
            const float2 r = make_float2(acc.x / L, acc.y / L);
            *(float2 *)(out + (size_t)head * HD + d) = r;
            *(float2 *)(ob + h * HD + d) = r;
        } else {
            float *pp = part + ((size_t)head * S + blockIdx.y) * (HD + 2);
            *(float2 *)(pp + d) = acc;
            if (d == 0) pp[HD] = M, pp[HD + 1] = L;
        }
    }
    if (ns > 1) {
        __threadfence(); /* our partials are visible to whichever block is last */
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(counter + kvh, 1u) == (unsigned)ns - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        if (threadIdx.x == 0) counter[kvh] = 0; /* ready for the next layer */
        /* the merge weights in wst (S floats a head, or a warp when two
         * share a head): our own partial went to global memory above, so
         * it is free, and holds them (S <= ATT_DEC_MAX_SPLITS < W (HD + 2) / 2) */
        if (HD == 128 && W >= 2 * group) { /* two warps a head, 64 dimensions each */
            const int h = warp >> 1;
            if (h < group)
                att_merge<32, 1, true>(part + (size_t)(kvh * group + h) * S * (HD + 2), ns, HD, 1, 64 * (warp & 1),
                                       wst + warp * S, out + (size_t)(kvh * group + h) * HD, ob + h * HD, lane);
        } else
            for (int h = warp; h < group; h += W) {
                const float *pp = part + (size_t)(kvh * group + h) * S * (HD + 2);
                float *o = out + (size_t)(kvh * group + h) * HD;
                if (early & 4) att_merge_head<true>(pp, ns, HD, wst + h * S, o, ob + h * HD, lane);
                else att_merge_head(pp, ns, HD, wst + h * S, o, ob + h * HD, lane);
            }
    }
    if (!oq) return;
    __syncthreads();
    att_out_q8(ob, kvh * group * HD, group * HD, oq, od, warp, W, lane);
}

/* Stage of top-k: block b keeps the k best of vals[b*chunk .. +chunk)
 * (ids[] or the index itself), writing out_v/out_i[b*k + r] in descending
 * order; ties go to the lower id; used entries are marked id -1. */
__global__ void k_topk(const float *vals, const int *ids, int n, int chunk, int k, float *out_v, int *out_i) {
    DYN_SMEM(float, tsm);
    float *sv = tsm;
    int *si = (int *)(tsm + chunk);
    __shared__ float rv[32];
    __shared__ int ri[32], rl[32];
    const int base = blockIdx.x * chunk, cnt = max(0, min(chunk, n - base));
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
        sv[i] = vals[base + i];
        si[i] = ids ? ids[base + i] : base + i;
    }
    __syncthreads();
    for (int r = 0; r < k; r++) {
        float bv = -INFINITY;
        int bi = -1, bl = -1;
        for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
            const int id = si[i];
            if (id < 0) continue;
            const float v = sv[i];
            if (bi < 0 || v > bv || (v == bv && id < bi)) bv = v, bi = id, bl = i;
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o), ol = __shfl_xor_sync(0xffffffffu, bl, o);
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi, bl = ol;
        }
        if ((threadIdx.x & 31) == 0) rv[threadIdx.x >> 5] = bv, ri[threadIdx.x >> 5] = bi, rl[threadIdx.x >> 5] = bl;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < (int)blockDim.x / 32; w++)
                if (ri[w] >= 0 && (ri[0] < 0 || rv[w] > rv[0] || (rv[w] == rv[0] && ri[w] < ri[0])))
                    rv[0] = rv[w], ri[0] = ri[w], rl[0] = rl[w];
            out_v[blockIdx.x * k + r] = rv[0];
            out_i[blockIdx.x * k + r] = ri[0];
            if (rl[0] >= 0) si[rl[0]] = -1;
        }
        __syncthreads();
    }
}

__global__ void k_fill(__half *k, __half *v, int n_layer, int n_ctx, int kvdim, int from, int to) {
    const size_t per = (size_t)(to - from) * kvdim, total = per * n_layer;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        const size_t il = e / per, r = e % per;
        const size_t idx = (il * n_ctx + from) * kvdim + r;
        uint32_t h = (uint32_t)(e * 2654435761u) ^ 0x9e3779b9u;
        h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12;
        k[idx] = __float2half_rn(((float)(h & 0xffff) / 65536.0f - 0.5f) * 0.2f);
        v[idx] = __float2half_rn(((float)(h >> 16) / 65536.0f - 0.5f) * 0.2f);
    }
}

#endif
