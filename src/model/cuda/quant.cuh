/* quant.cuh -- the GGUF block formats on the device, in kern.h's block
 * structs (the same static_assert-pinned layouts the CPU kernels use):
 *
 *   Q8_0  34: d f16 | qs[32] int8
 *   Q4_0  18: d f16 | qs[16] (low nibbles: values 0..15, high: 16..31)
 *   Q4_K 144: d f16 | dmin f16 | scales[12] | qs[128]
 *   Q5_K 176: d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
 *   Q6_K 210: ql[128] | qh[64] | scales[16] int8 | d f16
 *
 * deq8<T>(row, k, out) writes the 8 values k..k+7 (k % 8 == 0) of a row of
 * type T as floats: a warp reading lane i at k = 8i, 8i + 256, ... covers a
 * K-quant super-block per step. It mirrors kern_ref_dequant_* operation for
 * operation (d*sc, then *q, then -dmin*m) through __fmul_rn/__fsub_rn, so
 * nvcc cannot contract them into FMAs: the values are bit-identical.
 *
 * Activations of K-quant products are quantized to Q8_K first (quant_vals),
 * exactly as kern_ref_quantize_q8_K does, so GPU products see the CPU's
 * rounding. Rows start at multiples of 16 bytes for Q4_K/Q5_K and of 2
 * otherwise, so only Q4_K/Q5_K quants take 8-byte loads.
 */
#ifndef QUANT_CUH
#define QUANT_CUH

#include "model/cuda/common.cuh"
extern "C" {
#include "kern/kern.h"
}

typedef kern_block_q8_0 bq8_0;
typedef kern_block_q4_0 bq4_0;
typedef kern_block_q4_K bq4_K;
typedef kern_block_q5_K bq5_K;
typedef kern_block_q6_K bq6_K;

__device__ __forceinline__ float gq_h2f(kern_f16 h) { return __half2float(__ushort_as_half(h)); }

/* the K-quants: products with them read Q8_K activations */
static __host__ __device__ __forceinline__ bool gq_is_k(int t) { return t == KERN_Q4_K || t == KERN_Q5_K || t == KERN_Q6_K; }
static inline int gq_is_quant(int type) { return type != KERN_F32 && type != KERN_F16 && type != KERN_BF16; }

/* The 6-bit scales and mins of a Q4_K/Q5_K block, from its 12 scale bytes
 * as three little-endian words: ggml's get_scale_min_k4 without branches.
 * Scale j is byte j of (u[0], u[1]), min j byte j of (u[2], u[3]). Every
 * kernel that reads K-quant scales goes through here. */
__host__ __device__ __forceinline__ void gq_sm_words(uint32_t s0, uint32_t s1, uint32_t s2, uint32_t *u) {
    u[0] = s0 & 0x3f3f3f3fu;
    u[1] = (s2 & 0x0f0f0f0fu) | (((s0 >> 6) & 0x03030303u) << 4);
    u[2] = s1 & 0x3f3f3f3fu;
    u[3] = ((s2 >> 4) & 0x0f0f0f0fu) | (((s1 >> 6) & 0x03030303u) << 4);
}

/* scale and min of sub-block j (0..7) */
__host__ __device__ __forceinline__ void gq_sm(uint32_t s0, uint32_t s1, uint32_t s2, int j, int *sc, int *m) {
    uint32_t u[4];
    gq_sm_words(s0, s1, s2, u);
    const int sh = 8 * (j & 3);
    *sc = (int)(((j < 4 ? u[0] : u[1]) >> sh) & 0xFFu);
    *m = (int)(((j < 4 ? u[2] : u[3]) >> sh) & 0xFFu);
}

/* ... of the pair 2c, 2c + 1 (c = 0..3): one word select for both */
__host__ __device__ __forceinline__ void gq_sm2(uint32_t s0, uint32_t s1, uint32_t s2, int c, int *sc, int *m) {
    uint32_t u[4];
    gq_sm_words(s0, s1, s2, u);
    const uint32_t sw = c < 2 ? u[0] : u[1], mw = c < 2 ? u[2] : u[3];
    const int sh = 16 * (c & 1);
    sc[0] = (int)((sw >> sh) & 0xFFu), sc[1] = (int)((sw >> (sh + 8)) & 0xFFu);
    m[0] = (int)((mw >> sh) & 0xFFu), m[1] = (int)((mw >> (sh + 8)) & 0xFFu);
}

/* the three scale words of a Q4_K/Q5_K block (4-byte aligned) */
__device__ __forceinline__ void gq_words(const uint8_t *scales, uint32_t *s) {
    const uint32_t *w = (const uint32_t *)scales;
    s[0] = w[0], s[1] = w[1], s[2] = w[2];
}

__device__ __forceinline__ void gq_bytes8(const uint8_t *p, uint8_t *b) {
    uint2 u = *(const uint2 *)p; /* callers guarantee 8-byte alignment */
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(u.x >> (8 * i)), b[4 + i] = (uint8_t)(u.y >> (8 * i));
}

/* a Q4_K/Q5_K block's d * scale and dmin * min of sub-block j */
template <class B> __device__ __forceinline__ void gq_k_scale(const B *b, int j, float *dl, float *ml) {
    uint32_t s[3];
    int sc, m;
    gq_words(b->scales, s);
    gq_sm(s[0], s[1], s[2], j, &sc, &m);
    *dl = __fmul_rn(gq_h2f(b->d), (float)sc);
    *ml = __fmul_rn(gq_h2f(b->dmin), (float)m);
}

template <int T> __device__ __forceinline__ void deq8(const uint8_t *row, int k, float *o) {
    if (T == KERN_F32) {
        const float4 *p = (const float4 *)(row + (size_t)k * 4);
        float4 a = p[0], b = p[1];
        o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
    } else if (T == KERN_F16 || T == KERN_BF16) {
        uint4 u = *(const uint4 *)(row + (size_t)k * 2);
        unsigned w[4] = {u.x, u.y, u.z, u.w};
        for (int i = 0; i < 4; i++) {
            unsigned short lo = (unsigned short)(w[i] & 0xffff), hi = (unsigned short)(w[i] >> 16);
            if (T == KERN_F16) {
                o[2 * i] = __half2float(__ushort_as_half(lo));
                o[2 * i + 1] = __half2float(__ushort_as_half(hi));
            } else {
                o[2 * i] = __uint_as_float((unsigned)lo << 16);
                o[2 * i + 1] = __uint_as_float((unsigned)hi << 16);
            }
        }
    } else if (T == KERN_Q8_0) {
        const bq8_0 *b = (const bq8_0 *)row + (k >> 5);
        const float d = gq_h2f(b->d);
        const int8_t *q = b->qs + (k & 31);
        for (int i = 0; i < 8; i++) o[i] = __fmul_rn((float)q[i], d);
    } else if (T == KERN_Q4_0) {
        const bq4_0 *b = (const bq4_0 *)row + (k >> 5);
        const float d = gq_h2f(b->d);
        const int off = k & 31;
        const uint8_t *q = b->qs + (off & 15);
        for (int i = 0; i < 8; i++) o[i] = __fmul_rn((float)(((off < 16) ? (q[i] & 0xF) : (q[i] >> 4)) - 8), d);
    } else if (T == KERN_Q4_K || T == KERN_Q5_K) {
        typedef typename std::conditional<T == KERN_Q4_K, bq4_K, bq5_K>::type B;
        const B *b = (const B *)row + (k >> 8);
        const int j = k & 255, c = j >> 6, hi = (j >> 5) & 1, l0 = j & 31;
        float dl, ml;
        gq_k_scale(b, 2 * c + hi, &dl, &ml);
        uint8_t q[8];
        gq_bytes8(b->qs + 32 * c + l0, q);
        if (T == KERN_Q4_K) {
            for (int i = 0; i < 8; i++) o[i] = __fsub_rn(__fmul_rn(dl, (float)(hi ? q[i] >> 4 : q[i] & 0xF)), ml);
        } else {
            const uint8_t *qh = ((const bq5_K *)b)->qh + l0;
            const int u = hi ? (2 << (2 * c)) : (1 << (2 * c));
            for (int i = 0; i < 8; i++) {
                int v = (hi ? q[i] >> 4 : q[i] & 0xF) + ((qh[i] & u) ? 16 : 0);
                o[i] = __fsub_rn(__fmul_rn(dl, (float)v), ml);
            }
        }
    } else if (T == KERN_Q6_K) {
        const bq6_K *b = (const bq6_K *)row + (k >> 8);
        const int j = k & 255, h = j >> 7, r = j & 127, qu = r >> 5, l0 = r & 31;
        const uint8_t *ql = b->ql + h * 64 + (qu & 1) * 32 + l0, *qh = b->qh + h * 32 + l0;
        const float ds = __fmul_rn(gq_h2f(b->d), (float)b->scales[h * 8 + (l0 >> 4) + 2 * qu]);
        const int nsh = (qu >> 1) * 4, hsh = 2 * qu;
        for (int i = 0; i < 8; i++) {
            int v = (int)(((ql[i] >> nsh) & 0xF) | (((qh[i] >> hsh) & 3) << 4)) - 32;
            o[i] = __fmul_rn(ds, (float)v);
        }
    }
}

/* Values per block a row must be a multiple of (deq8's 8 for the float
 * types); 0 for a type without CUDA kernels. */
static inline int gq_block(int type) {
    switch (type) {
    case KERN_F32: case KERN_F16: case KERN_BF16: return 8;
    case KERN_Q8_0: case KERN_Q4_0: return 32;
    case KERN_Q4_K: case KERN_Q5_K: case KERN_Q6_K: return 256;
    }
    return 0;
}

/* Call FN<T>(args) for the runtime type `type` (a compile-time T inside). */
#define GQ_DISPATCH(type, CALL)                                     \
    switch (type) {                                                 \
    case KERN_F32: { constexpr int T = KERN_F32; CALL; } break;     \
    case KERN_F16: { constexpr int T = KERN_F16; CALL; } break;     \
    case KERN_BF16: { constexpr int T = KERN_BF16; CALL; } break;   \
    case KERN_Q8_0: { constexpr int T = KERN_Q8_0; CALL; } break;   \
    case KERN_Q4_0: { constexpr int T = KERN_Q4_0; CALL; } break;   \
    case KERN_Q4_K: { constexpr int T = KERN_Q4_K; CALL; } break;   \
    case KERN_Q5_K: { constexpr int T = KERN_Q5_K; CALL; } break;   \
    case KERN_Q6_K: { constexpr int T = KERN_Q6_K; CALL; } break;   \
    default: break;                                                 \
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
/* lane's 8 values of the super-block at x */
__device__ __forceinline__ void quant_sb(const float *x, int8_t *q, float *d, int lane) {
    const float4 *p = (const float4 *)(x + lane * 8);
    const float4 a = p[0], b = p[1];
    const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    quant_vals(v, q, d, lane);
}

/* rows x n (row stride ldx) -> xq [rows][n], xd [rows][n / 256]; grid
 * (ceil(n / 2048), rows), 8 warps. */
static __global__ void k_quant(const float *x, int n, int ldx, int8_t *xq, float *xd) {
    gdc_wait();
    const int sb = blockIdx.x * 8 + (threadIdx.x >> 5), nsb = n >> 8, r = blockIdx.y;
    if (sb >= nsb) return;
    quant_sb(x + (size_t)r * ldx + sb * 256, xq + (size_t)r * n + sb * 256, xd + (size_t)r * nsb + sb, threadIdx.x & 31);
}

#endif
