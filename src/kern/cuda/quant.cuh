/* quant.cuh -- device-side dequantization of the GGUF block formats.
 *
 * One primitive serves every kernel: deq8<T>(row, k, out) writes the 8
 * consecutive values k..k+7 (k a multiple of 8) of a weight row of type T
 * as floats. A warp reading a row lane by lane (lane i takes k = 8i, 8i+256,
 * ...) covers one 256-value K-quant super-block per step, so the matrix-
 * vector kernel, the tensor-core tile loader and the embedding lookup all
 * share it. The arithmetic mirrors the scalar reference (src/kern/ref.c)
 * operation for operation -- d*sc first, then *q, then -dmin*m -- with
 * __fmul_rn/__fsub_rn so nvcc cannot contract them into FMAs: dequantized
 * values are bit-identical to kern_ref_dequant_*.
 *
 * Block layouts (bytes, see kern.h):
 *   Q8_0  34: d f16 | qs[32] int8
 *   Q4_0  18: d f16 | qs[16] (low nibbles: values 0..15, high: 16..31)
 *   Q4_K 144: d f16 | dmin f16 | scales[12] | qs[128]
 *   Q5_K 176: d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
 *   Q6_K 210: ql[128] | qh[64] | scales[16] int8 | d f16
 * Rows start at multiples of 16 bytes for Q4_K/Q5_K (144, 176 = 16 * k)
 * and of 2 bytes otherwise, so only Q4_K/Q5_K quants use 8-byte loads.
 */
#ifndef QUANT_CUH
#define QUANT_CUH

#ifdef SMOLBOT_GPU_EMU
#include "emu.h" /* the CPU emulation (see kernels.cuh) */
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif
#include <stdint.h>

enum { GT_F32 = 0, GT_F16 = 1, GT_Q4_0 = 2, GT_Q8_0 = 8, GT_Q4_K = 12, GT_Q5_K = 13, GT_Q6_K = 14, GT_BF16 = 30 };

__device__ __forceinline__ float gq_h2f(const uint8_t *p) {
    return __half2float(__ushort_as_half((unsigned short)(p[0] | (p[1] << 8))));
}

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

/* d * scale and dmin * min of sub-block j; q: the 12 scale bytes (4-byte aligned) */
__device__ __forceinline__ void gq_k_scale(const uint8_t *q, int j, float d, float dmin, float *dl, float *ml) {
    const uint32_t *w = (const uint32_t *)q;
    int sc, m;
    gq_sm(w[0], w[1], w[2], j, &sc, &m);
    *dl = __fmul_rn(d, (float)sc);
    *ml = __fmul_rn(dmin, (float)m);
}

__device__ __forceinline__ void gq_bytes8(const uint8_t *p, uint8_t *b) {
    uint2 u = *(const uint2 *)p; /* callers guarantee 8-byte alignment */
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(u.x >> (8 * i)), b[4 + i] = (uint8_t)(u.y >> (8 * i));
}

template <int T> __device__ __forceinline__ void deq8(const uint8_t *row, int k, float *o) {
    if (T == GT_F32) {
        const float4 *p = (const float4 *)(row + (size_t)k * 4);
        float4 a = p[0], b = p[1];
        o[0] = a.x, o[1] = a.y, o[2] = a.z, o[3] = a.w, o[4] = b.x, o[5] = b.y, o[6] = b.z, o[7] = b.w;
    } else if (T == GT_F16 || T == GT_BF16) {
        uint4 u = *(const uint4 *)(row + (size_t)k * 2);
        unsigned w[4] = {u.x, u.y, u.z, u.w};
        for (int i = 0; i < 4; i++) {
            unsigned short lo = (unsigned short)(w[i] & 0xffff), hi = (unsigned short)(w[i] >> 16);
            if (T == GT_F16) {
                o[2 * i] = __half2float(__ushort_as_half(lo));
                o[2 * i + 1] = __half2float(__ushort_as_half(hi));
            } else {
                o[2 * i] = __uint_as_float((unsigned)lo << 16);
                o[2 * i + 1] = __uint_as_float((unsigned)hi << 16);
            }
        }
    } else if (T == GT_Q8_0) {
        const uint8_t *b = row + (size_t)(k >> 5) * 34;
        const float d = gq_h2f(b);
        const int8_t *q = (const int8_t *)(b + 2 + (k & 31));
        for (int i = 0; i < 8; i++) o[i] = __fmul_rn((float)q[i], d);
    } else if (T == GT_Q4_0) {
        const uint8_t *b = row + (size_t)(k >> 5) * 18;
        const float d = gq_h2f(b);
        const int off = k & 31;
        const uint8_t *q = b + 2 + (off & 15);
        for (int i = 0; i < 8; i++) o[i] = __fmul_rn((float)(((off < 16) ? (q[i] & 0xF) : (q[i] >> 4)) - 8), d);
    } else if (T == GT_Q4_K || T == GT_Q5_K) {
        const int bs = T == GT_Q4_K ? 144 : 176;
        const uint8_t *b = row + (size_t)(k >> 8) * bs;
        const int j = k & 255, c = j >> 6, hi = (j >> 5) & 1, l0 = j & 31;
        float dl, ml;
        gq_k_scale(b + 4, 2 * c + hi, gq_h2f(b), gq_h2f(b + 2), &dl, &ml);
        uint8_t q[8];
        gq_bytes8(b + (T == GT_Q4_K ? 16 : 48) + 32 * c + l0, q);
        if (T == GT_Q4_K) {
            for (int i = 0; i < 8; i++) o[i] = __fsub_rn(__fmul_rn(dl, (float)(hi ? q[i] >> 4 : q[i] & 0xF)), ml);
        } else {
            const uint8_t *qh = b + 16 + l0;
            const int u = hi ? (2 << (2 * c)) : (1 << (2 * c));
            for (int i = 0; i < 8; i++) {
                int v = (hi ? q[i] >> 4 : q[i] & 0xF) + ((qh[i] & u) ? 16 : 0);
                o[i] = __fsub_rn(__fmul_rn(dl, (float)v), ml);
            }
        }
    } else if (T == GT_Q6_K) {
        const uint8_t *b = row + (size_t)(k >> 8) * 210;
        const int j = k & 255, h = j >> 7, r = j & 127, qu = r >> 5, l0 = r & 31;
        const uint8_t *ql = b + h * 64 + (qu & 1) * 32 + l0, *qh = b + 128 + h * 32 + l0;
        const float ds = __fmul_rn(gq_h2f(b + 208), (float)(int8_t)b[192 + h * 8 + (l0 >> 4) + 2 * qu]);
        const int nsh = (qu >> 1) * 4, hsh = 2 * qu;
        for (int i = 0; i < 8; i++) {
            int v = (int)(((ql[i] >> nsh) & 0xF) | (((qh[i] >> hsh) & 3) << 4)) - 32;
            o[i] = __fmul_rn(ds, (float)v);
        }
    }
}

/* Bytes of one row of n values. 0 for a type we do not handle. */
static inline size_t gq_row_bytes(int type, int64_t n) {
    switch (type) {
    case GT_F32: return (size_t)n * 4;
    case GT_F16: case GT_BF16: return (size_t)n * 2;
    case GT_Q8_0: return (size_t)(n / 32) * 34;
    case GT_Q4_0: return (size_t)(n / 32) * 18;
    case GT_Q4_K: return (size_t)(n / 256) * 144;
    case GT_Q5_K: return (size_t)(n / 256) * 176;
    case GT_Q6_K: return (size_t)(n / 256) * 210;
    }
    return 0;
}

static inline int gq_block(int type) {
    switch (type) {
    case GT_F32: case GT_F16: case GT_BF16: return 8; /* deq8 granularity */
    case GT_Q8_0: case GT_Q4_0: return 32;
    case GT_Q4_K: case GT_Q5_K: case GT_Q6_K: return 256;
    }
    return 0;
}

static inline int gq_is_quant(int type) { return type != GT_F32 && type != GT_F16 && type != GT_BF16; }

/* Call FN<T>(args) for the runtime type `type` (a compile-time T inside). */
#define GQ_DISPATCH(type, CALL)                                     \
    switch (type) {                                                 \
    case GT_F32: { constexpr int T = GT_F32; CALL; } break;         \
    case GT_F16: { constexpr int T = GT_F16; CALL; } break;         \
    case GT_BF16: { constexpr int T = GT_BF16; CALL; } break;       \
    case GT_Q8_0: { constexpr int T = GT_Q8_0; CALL; } break;       \
    case GT_Q4_0: { constexpr int T = GT_Q4_0; CALL; } break;       \
    case GT_Q4_K: { constexpr int T = GT_Q4_K; CALL; } break;       \
    case GT_Q5_K: { constexpr int T = GT_Q5_K; CALL; } break;       \
    case GT_Q6_K: { constexpr int T = GT_Q6_K; CALL; } break;       \
    default: break;                                                 \
    }

#endif
