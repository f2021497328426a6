/* ref.c -- the scalar reference kernels: the oracle every SIMD twin is
 * tested against, and the fallback on CPUs without AVX2.
 *
 * Numerics follow ggml (the CPU backend of llama.cpp) so that our numbers
 * track llama.cpp's:
 *   - Q8_K activations: ggml's quantize_row_q8_K_ref. `max` is the value of
 *     largest magnitude (first one wins), iscale = -127/max, q =
 *     nearest_int(iscale*x) clamped to 127, d = 1/iscale, bsums = sums of
 *     16 quants. (The x86 build of ggml uses this scalar code too.)
 *   - Q8_0 activations: d = amax/127 stored as f16, q = round(x * 127/amax)
 *     with ties to even -- what ggml's AVX2 quantize_row_q8_0 does (the
 *     portable ggml reference multiplies by 1/d and uses roundf; the two
 *     differ only on exact ties and in the last bit of the multiplier, and
 *     llama.cpp on an x86 server runs the AVX2 code).
 *   - K-quant dot products accumulate exact integers per block (scale x
 *     sub-block dot, mins through bsums), then add d*y.d*isum and subtract
 *     dmin*y.d*msum in float.
 *   - F16 weights multiply F16 activations, BF16 weights BF16 activations
 *     (ggml's vec_dot_type for those types); float sums in double like
 *     ggml's scalar ggml_vec_dot_*.
 *   - rmsnorm, softmax: sums in double, as ggml.
 * Blocks are read through the packed structs of kern.h; nothing here
 * assumes alignment beyond that of the structs (2 bytes for the f16 ones).
 */
#include <math.h>
#include <string.h>

#include "kern/kern_impl.h"

static inline float h2f(kern_f16 h) { return core_f16_to_f32(h); }

/* ---- dequantization ---- */

void kern_ref_dequant_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }

void kern_ref_dequant_f16(const void *src, float *dst, int64_t n) {
    const kern_f16 *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = h2f(s[i]);
}

void kern_ref_dequant_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = core_bf16_to_f32(s[i]);
}

void kern_ref_dequant_q4_0(const void *src, float *dst, int64_t n) {
    const kern_block_q4_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, dst += QK4_0) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = ((b[i].qs[j] & 0xF) - 8) * d;
            dst[j + QK4_0 / 2] = ((b[i].qs[j] >> 4) - 8) * d;
        }
    }
}

/* The 5th bit of value j of a Q5 block, already in place (0 or 16). */
static inline int q5_high(const uint8_t qh[4], int j) {
    const uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
    return (int)((h >> j) & 1) << 4;
}

void kern_ref_dequant_q4_1(const void *src, float *dst, int64_t n) {
    const kern_block_q4_1 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, dst += QK4_0) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = (b[i].qs[j] & 0xF) * d + m;
            dst[j + QK4_0 / 2] = (b[i].qs[j] >> 4) * d + m;
        }
    }
}

void kern_ref_dequant_q5_0(const void *src, float *dst, int64_t n) {
    const kern_block_q5_0 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, dst += QK4_0) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = (((b[i].qs[j] & 0xF) | q5_high(b[i].qh, j)) - 16) * d;
            dst[j + QK4_0 / 2] = (((b[i].qs[j] >> 4) | q5_high(b[i].qh, j + 16)) - 16) * d;
        }
    }
}

void kern_ref_dequant_q5_1(const void *src, float *dst, int64_t n) {
    const kern_block_q5_1 *b = src;
    for (int64_t i = 0; i < n / QK4_0; i++, dst += QK4_0) {
        const float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < QK4_0 / 2; j++) {
            dst[j] = ((b[i].qs[j] & 0xF) | q5_high(b[i].qh, j)) * d + m;
            dst[j + QK4_0 / 2] = ((b[i].qs[j] >> 4) | q5_high(b[i].qh, j + 16)) * d + m;
        }
    }
}

void kern_ref_dequant_q8_0(const void *src, float *dst, int64_t n) {
    const kern_block_q8_0 *b = src;
    for (int64_t i = 0; i < n / QK8_0; i++, dst += QK8_0) {
        const float d = h2f(b[i].d);
        for (int j = 0; j < QK8_0; j++) dst[j] = b[i].qs[j] * d;
    }
}

void kern_ref_k_scales(const uint8_t *q, uint8_t sc[8], uint8_t m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = q[j] & 63;
        m[j] = q[j + 4] & 63;
    }
    for (int j = 4; j < 8; j++) {
        sc[j] = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m[j] = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void kern_ref_dequant_q4_K(const void *src, float *dst, int64_t n) {
    const kern_block_q4_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        uint8_t sc[8], m[8];
        kern_ref_k_scales(b[i].scales, sc, m);
        const uint8_t *q = b[i].qs;
        for (int c = 0; c < 4; c++, q += 32) {
            const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
            const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
            for (int l = 0; l < 32; l++) *dst++ = d1 * (q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * (q[l] >> 4) - m2;
        }
    }
}

void kern_ref_dequant_q5_K(const void *src, float *dst, int64_t n) {
    const kern_block_q5_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        uint8_t sc[8], m[8];
        kern_ref_k_scales(b[i].scales, sc, m);
        const uint8_t *q = b[i].qs, *qh = b[i].qh;
        for (int c = 0; c < 4; c++, q += 32) {
            const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
            const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
            const uint8_t u1 = (uint8_t)(1u << (2 * c)), u2 = (uint8_t)(2u << (2 * c));
            for (int l = 0; l < 32; l++) *dst++ = d1 * ((q[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *dst++ = d2 * ((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

void kern_ref_dequant_q6_K(const void *src, float *dst, int64_t n) {
    const kern_block_q6_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++) {
        const float d = h2f(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, dst += 128) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                dst[l] = d * sc[is] * q1;
                dst[l + 32] = d * sc[is + 2] * q2;
                dst[l + 64] = d * sc[is + 4] * q3;
                dst[l + 96] = d * sc[is + 6] * q4;
            }
        }
    }
}

void kern_ref_dequant_q8_K(const void *src, float *dst, int64_t n) {
    const kern_block_q8_K *b = src;
    for (int64_t i = 0; i < n / QK_K; i++)
        for (int j = 0; j < QK_K; j++) *dst++ = b[i].d * b[i].qs[j];
}

/* ---- activation quantization (from_float) ---- */

void kern_ref_from_f32(const float *src, void *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }

void kern_ref_from_f16(const float *src, void *dst, int64_t n) {
    kern_f16 *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = core_f32_to_f16(src[i]);
}

void kern_ref_from_bf16(const float *src, void *dst, int64_t n) {
    uint16_t *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = core_f32_to_bf16(src[i]);
}

void kern_ref_quantize_q8_0(const float *x, void *dst, int64_t n) {
    kern_block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        float amax = 0.0f;
        for (int j = 0; j < QK8_0; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.f;
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        y[i].d = core_f32_to_f16(d);
        for (int j = 0; j < QK8_0; j++) y[i].qs[j] = (int8_t)kern_nearest_int(x[j] * id);
    }
}

void kern_ref_quantize_q8_K(const float *x, void *dst, int64_t n) {
    kern_block_q8_K *y = dst;
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < QK_K; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < QK_K; j++) {
            const int v = kern_nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[j * 16 + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}

/* ---- dot products: *s = dot(weight row, activation row) ---- */

void kern_ref_dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const float *x = w, *y = a;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * y[i]);
    *s = (float)sum;
}

void kern_ref_dot_f16(int64_t n, float *s, const void *w, const void *a) {
    const kern_f16 *x = w, *y = a;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(h2f(x[i]) * h2f(y[i]));
    *s = (float)sum;
}

void kern_ref_dot_bf16(int64_t n, float *s, const void *w, const void *a) {
    const uint16_t *x = w, *y = a;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(core_bf16_to_f32(x[i]) * core_bf16_to_f32(y[i]));
    *s = (float)sum;
}

void kern_ref_dot_q4_0(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q4_0 *x = w;
    const kern_block_q8_0 *y = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += ((x[i].qs[j] & 0xF) - 8) * y[i].qs[j];
            isum += ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + QK4_0 / 2];
        }
        sum += isum * (h2f(x[i].d) * h2f(y[i].d));
    }
    *s = sum;
}

/* Q4_1 and Q5_1 against Q8_0 activations: d_w d_a sum(q_w q_a) + m_w d_a
 * sum(q_a). llama.cpp uses Q8_1 there, the same values plus that sum
 * pre-multiplied and rounded to f16; summing it here is as exact. */
void kern_ref_dot_q4_1(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q4_1 *x = w;
    const kern_block_q8_0 *y = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0, ysum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += (x[i].qs[j] & 0xF) * y[i].qs[j] + (x[i].qs[j] >> 4) * y[i].qs[j + QK4_0 / 2];
            ysum += y[i].qs[j] + y[i].qs[j + QK4_0 / 2];
        }
        const float dy = h2f(y[i].d);
        sum += isum * (h2f(x[i].d) * dy) + h2f(x[i].m) * (dy * ysum);
    }
    *s = sum;
}

void kern_ref_dot_q5_0(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q5_0 *x = w;
    const kern_block_q8_0 *y = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += (((x[i].qs[j] & 0xF) | q5_high(x[i].qh, j)) - 16) * y[i].qs[j];
            isum += (((x[i].qs[j] >> 4) | q5_high(x[i].qh, j + 16)) - 16) * y[i].qs[j + QK4_0 / 2];
        }
        sum += isum * (h2f(x[i].d) * h2f(y[i].d));
    }
    *s = sum;
}

void kern_ref_dot_q5_1(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q5_1 *x = w;
    const kern_block_q8_0 *y = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0, ysum = 0;
        for (int j = 0; j < QK4_0 / 2; j++) {
            isum += ((x[i].qs[j] & 0xF) | q5_high(x[i].qh, j)) * y[i].qs[j];
            isum += ((x[i].qs[j] >> 4) | q5_high(x[i].qh, j + 16)) * y[i].qs[j + QK4_0 / 2];
            ysum += y[i].qs[j] + y[i].qs[j + QK4_0 / 2];
        }
        const float dy = h2f(y[i].d);
        sum += isum * (h2f(x[i].d) * dy) + h2f(x[i].m) * (dy * ysum);
    }
    *s = sum;
}

void kern_ref_dot_q8_0(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q8_0 *x = w, *y = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; i++) {
        int isum = 0;
        for (int j = 0; j < QK8_0; j++) isum += x[i].qs[j] * y[i].qs[j];
        sum += isum * (h2f(x[i].d) * h2f(y[i].d));
    }
    *s = sum;
}

void kern_ref_dot_q4_K(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q4_K *x = w;
    const kern_block_q8_K *y = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], m[8];
        kern_ref_k_scales(x[i].scales, sc, m);
        int msum = 0;
        for (int j = 0; j < QK_K / 16; j++) msum += y[i].bsums[j] * m[j / 2];
        const uint8_t *q = x[i].qs;
        const int8_t *q8 = y[i].qs;
        int isum = 0;
        for (int c = 0; c < 4; c++, q += 32, q8 += 64) {
            int d1 = 0, d2 = 0;
            for (int l = 0; l < 32; l++) {
                d1 += (q[l] & 0xF) * q8[l];
                d2 += (q[l] >> 4) * q8[l + 32];
            }
            isum += sc[2 * c] * d1 + sc[2 * c + 1] * d2;
        }
        sum += h2f(x[i].d) * y[i].d * (float)isum - h2f(x[i].dmin) * y[i].d * (float)msum;
    }
    *s = sum;
}

void kern_ref_dot_q5_K(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q5_K *x = w;
    const kern_block_q8_K *y = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        uint8_t sc[8], m[8];
        kern_ref_k_scales(x[i].scales, sc, m);
        int msum = 0;
        for (int j = 0; j < QK_K / 16; j++) msum += y[i].bsums[j] * m[j / 2];
        const uint8_t *q = x[i].qs, *qh = x[i].qh;
        const int8_t *q8 = y[i].qs;
        int isum = 0;
        for (int c = 0; c < 4; c++, q += 32, q8 += 64) {
            const uint8_t u1 = (uint8_t)(1u << (2 * c)), u2 = (uint8_t)(2u << (2 * c));
            int d1 = 0, d2 = 0;
            for (int l = 0; l < 32; l++) {
                d1 += ((q[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) * q8[l];
                d2 += ((q[l] >> 4) + (qh[l] & u2 ? 16 : 0)) * q8[l + 32];
            }
            isum += sc[2 * c] * d1 + sc[2 * c + 1] * d2;
        }
        sum += h2f(x[i].d) * y[i].d * (float)isum - h2f(x[i].dmin) * y[i].d * (float)msum;
    }
    *s = sum;
}

void kern_ref_dot_q6_K(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q6_K *x = w;
    const kern_block_q8_K *y = a;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        int8_t v[QK_K];
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        for (int h = 0; h < 2; h++, ql += 64, qh += 32) {
            int8_t *o = v + 128 * h;
            for (int l = 0; l < 32; l++) {
                o[l] = (int8_t)((int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
                o[l + 32] = (int8_t)((int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                o[l + 64] = (int8_t)((int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                o[l + 96] = (int8_t)((int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        int isum = 0;
        for (int j = 0; j < QK_K / 16; j++) {
            int d = 0;
            for (int l = 0; l < 16; l++) d += v[16 * j + l] * y[i].qs[16 * j + l];
            isum += x[i].scales[j] * d;
        }
        sum += h2f(x[i].d) * y[i].d * (float)isum;
    }
    *s = sum;
}

/* ---- tiles: the generic nr x nc loop over vec_dot ---- */

#define REF_TILE(name, dot)                                                                                  \
    static void name(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc, float *y, \
                     int64_t ldy) {                                                                          \
        for (int c = 0; c < nc; c++)                                                                         \
            for (int r = 0; r < nr; r++)                                                                     \
                dot(n, &y[c * ldy + r], (const char *)w + r * bw, (const char *)a + c * ba);                 \
    }
REF_TILE(tile_f32, kern_ref_dot_f32)
REF_TILE(tile_f16, kern_ref_dot_f16)
REF_TILE(tile_bf16, kern_ref_dot_bf16)
REF_TILE(tile_q4_0, kern_ref_dot_q4_0)
REF_TILE(tile_q4_1, kern_ref_dot_q4_1)
REF_TILE(tile_q5_0, kern_ref_dot_q5_0)
REF_TILE(tile_q5_1, kern_ref_dot_q5_1)
REF_TILE(tile_q8_0, kern_ref_dot_q8_0)
REF_TILE(tile_q4_K, kern_ref_dot_q4_K)
REF_TILE(tile_q5_K, kern_ref_dot_q5_K)
REF_TILE(tile_q6_K, kern_ref_dot_q6_K)

/* ---- f32 ops ---- */

void kern_ref_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)(x[i] * x[i]);
    const float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    for (int64_t i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

void kern_ref_silu_mul(float *out, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void kern_ref_softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = fmaxf(max, x[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void kern_ref_f16_to_f32(const kern_f16 *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = h2f(src[i]);
}

void kern_ref_f32_to_f16(const float *src, kern_f16 *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = core_f32_to_f16(src[i]);
}

/* One online-softmax step over the scores s[g][0..np) of a block: the
 * running max and sum grow, the accumulators are rescaled if the max did,
 * and s becomes the weights exp(score - max), all <= 1. */
static void ref_softmax_step(float s[][KERN_ATTN_BLOCK], int ng, int hd, int np, float *m, float *l, float *acc) {
    for (int g = 0; g < ng; g++) {
        float bm = m[g];
        for (int j = 0; j < np; j++) bm = fmaxf(bm, s[g][j]);
        const float r = expf(m[g] - bm);
        l[g] *= r;
        for (int i = 0; i < hd; i++) acc[g * hd + i] *= r;
        for (int j = 0; j < np; j++) {
            s[g][j] = expf(s[g][j] - bm);
            l[g] += s[g][j];
        }
        m[g] = bm;
    }
}

/* ---- the 8-bit KV cache: tile layout (kern.h) ---- */

size_t kern_kv_q8_tile_bytes(int hd) { return kern_kv_q8_qoff(hd) + (size_t)KERN_KV_TILE * (size_t)hd; }

/* Quantizes with the current ISA's Q8_0 (bit-identical to the reference,
 * test_kern checks): prefill stores every position of every layer. */
void kern_kv_q8_store(void *tile, int j, const float *x, int hd, int is_v) {
    kern_f16 *d = tile;
    uint8_t *q = (uint8_t *)tile + kern_kv_q8_qoff(hd);
    kern_block_q8_0 blk[KERN_ATTN_MAX_HD / 32];
    assert(j >= 0 && j < KERN_KV_TILE && hd % 32 == 0 && hd <= KERN_ATTN_MAX_HD);
    kern_get_traits(KERN_Q8_0)->from_float(x, blk, hd);
    for (int b = 0; b < hd / 32; b++) {
        d[b * KERN_KV_TILE + j] = blk[b].d;
        for (int i = 32 * b; i < 32 * b + 32; i++) {
            const int8_t v = blk[b].qs[i - 32 * b];
            if (is_v) q[kern_kv_q8_vidx(hd, j, i)] = (uint8_t)v;
            else q[kern_kv_q8_kidx(j, i)] = (uint8_t)(v + 128);
        }
    }
}

void kern_kv_q8_load(const void *tile, int j, float *x, int hd, int is_v) {
    const kern_f16 *d = tile;
    const uint8_t *q = (const uint8_t *)tile + kern_kv_q8_qoff(hd);
    for (int i = 0; i < hd; i++) {
        const int v = is_v ? (int8_t)q[kern_kv_q8_vidx(hd, j, i)] : q[kern_kv_q8_kidx(j, i)] - 128;
        x[i] = h2f(d[i / 32 * KERN_KV_TILE + j]) * (float)v;
    }
}

/* The current ISA's Q8_0, bit-identical to the reference: this runs once
 * per attention call, hundreds of times per token. */
void kern_kv_q8_quant_q(const float *q, int ng, int hd, int8_t *qq, float *qd, int32_t *qsum) {
    kern_block_q8_0 blk[KERN_ATTN_MAX_HD / 32];
    for (int g = 0; g < ng; g++) {
        kern_get_traits(KERN_Q8_0)->from_float(q + (size_t)g * hd, blk, hd);
        for (int b = 0; b < hd / 32; b++) {
            int32_t sum = 0;
            for (int i = 0; i < 32; i++) sum += blk[b].qs[i];
            memcpy(qq + (size_t)g * hd + 32 * b, blk[b].qs, 32);
            qd[g * (hd / 32) + b] = h2f(blk[b].d);
            qsum[g * (hd / 32) + b] = sum;
        }
    }
}

/* The 8-bit cache: integer dots, in the order of kern.h's description. */
static void ref_attn_kv_q8(const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                           float scale, float *m, float *l, float *acc) {
    int8_t qq[KERN_ATTN_MAX_G * KERN_ATTN_MAX_HD];
    float qd[KERN_ATTN_MAX_G * KERN_ATTN_MAX_HD / 32], s[KERN_ATTN_MAX_G][KERN_ATTN_BLOCK];
    int32_t qsum[KERN_ATTN_MAX_G * KERN_ATTN_MAX_HD / 32];
    const int nb = hd / 32;
    kern_kv_q8_quant_q(q, ng, hd, qq, qd, qsum);
    for (int p0 = 0; p0 < n; p0 += KERN_KV_TILE) {
        const int np = n - p0 < KERN_KV_TILE ? n - p0 : KERN_KV_TILE;
        const kern_kv_q8_tiles tl = kern_kv_q8_tiles_at(k, v, stride, p0, hd);
        for (int j = 0; j < np; j++)
            for (int g = 0; g < ng; g++) {
                float d = 0;
                for (int b = 0; b < nb; b++) {
                    int32_t is = 0;
                    for (int i = 32 * b; i < 32 * b + 32; i++) is += qq[g * hd + i] * (tl.kq[kern_kv_q8_kidx(j, i)] - 128);
                    d = fmaf((float)is, qd[g * nb + b] * h2f(tl.kd[b * KERN_KV_TILE + j]), d);
                }
                s[g][j] = d * scale;
            }
        ref_softmax_step(s, ng, hd, np, m, l, acc);
        for (int b = 0; b < nb; b++)
            for (int g = 0; g < ng; g++) {
                float t[KERN_KV_TILE], tmax = 0;
                int32_t w[KERN_KV_TILE];
                for (int j = 0; j < np; j++) t[j] = s[g][j] * h2f(tl.vd[b * KERN_KV_TILE + j]), tmax = fmaxf(tmax, t[j]);
                const float r = tmax > 0 ? 32767.0f / tmax : 0, sig = tmax / 32767.0f;
                for (int j = 0; j < np; j++) w[j] = kern_kv_q8_weight(t[j], r);
                for (int i = 32 * b; i < 32 * b + 32; i++) {
                    int32_t is = 0;
                    for (int j = 0; j < np; j++) is += w[j] * tl.vq[kern_kv_q8_vidx(hd, j, i)];
                    acc[g * hd + i] = fmaf((float)is, sig, acc[g * hd + i]);
                }
            }
    }
}

/* Attention over n positions of one KV head (see kern_attn in kern.h):
 * blocks of KERN_ATTN_BLOCK positions; per block the scores of all ng
 * heads, then one online-softmax rescale per head, then the V rows. */
void kern_ref_attn(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                   float scale, float *m, float *l, float *acc) {
    float s[KERN_ATTN_MAX_G][KERN_ATTN_BLOCK], row[KERN_ATTN_MAX_HD];
    assert(ng >= 1 && ng <= KERN_ATTN_MAX_G && hd >= 1 && hd <= KERN_ATTN_MAX_HD);
    assert(kv_type == KERN_F16 || kv_type == KERN_F32 || (kv_type == KERN_KV_Q8 && hd % 32 == 0));
    if (kv_type == KERN_KV_Q8) {
        ref_attn_kv_q8(q, ng, hd, k, v, stride, n, scale, m, l, acc);
        return;
    }
    for (int p0 = 0; p0 < n; p0 += KERN_ATTN_BLOCK) {
        const int np = n - p0 < KERN_ATTN_BLOCK ? n - p0 : KERN_ATTN_BLOCK;
        for (int j = 0; j < np; j++) {
            const char *kr = (const char *)k + (size_t)(p0 + j) * stride;
            if (kv_type == KERN_F16) kern_ref_f16_to_f32((const kern_f16 *)kr, row, hd);
            else memcpy(row, kr, (size_t)hd * sizeof(float));
            for (int g = 0; g < ng; g++) {
                float d = 0;
                for (int i = 0; i < hd; i++) d += q[g * hd + i] * row[i];
                s[g][j] = d * scale;
            }
        }
        ref_softmax_step(s, ng, hd, np, m, l, acc);
        for (int j = 0; j < np; j++) {
            const char *vr = (const char *)v + (size_t)(p0 + j) * stride;
            if (kv_type == KERN_F16) kern_ref_f16_to_f32((const kern_f16 *)vr, row, hd);
            else memcpy(row, vr, (size_t)hd * sizeof(float));
            for (int g = 0; g < ng; g++)
                for (int i = 0; i < hd; i++) acc[g * hd + i] += s[g][j] * row[i];
        }
    }
}

/* ---- the scalar table ---- */

void kern_ref_install(kern_impl *t) {
    memset(t, 0, sizeof *t);
    t->isa = "scalar";
    t->traits[KERN_F32] = (kern_traits){"F32", 1, 4, kern_ref_dequant_f32, kern_ref_from_f32, kern_ref_dot_f32, KERN_F32};
    t->traits[KERN_F16] = (kern_traits){"F16", 1, 2, kern_ref_dequant_f16, kern_ref_from_f16, kern_ref_dot_f16, KERN_F16};
    t->traits[KERN_BF16] =
        (kern_traits){"BF16", 1, 2, kern_ref_dequant_bf16, kern_ref_from_bf16, kern_ref_dot_bf16, KERN_BF16};
    t->traits[KERN_Q4_0] = (kern_traits){"Q4_0", QK4_0, sizeof(kern_block_q4_0), kern_ref_dequant_q4_0, NULL,
                                         kern_ref_dot_q4_0, KERN_Q8_0};
    t->traits[KERN_Q4_1] = (kern_traits){"Q4_1", QK4_0, sizeof(kern_block_q4_1), kern_ref_dequant_q4_1, NULL,
                                         kern_ref_dot_q4_1, KERN_Q8_0};
    t->traits[KERN_Q5_0] = (kern_traits){"Q5_0", QK4_0, sizeof(kern_block_q5_0), kern_ref_dequant_q5_0, NULL,
                                         kern_ref_dot_q5_0, KERN_Q8_0};
    t->traits[KERN_Q5_1] = (kern_traits){"Q5_1", QK4_0, sizeof(kern_block_q5_1), kern_ref_dequant_q5_1, NULL,
                                         kern_ref_dot_q5_1, KERN_Q8_0};
    t->traits[KERN_Q8_0] = (kern_traits){"Q8_0", QK8_0, sizeof(kern_block_q8_0), kern_ref_dequant_q8_0,
                                         kern_ref_quantize_q8_0, kern_ref_dot_q8_0, KERN_Q8_0};
    t->traits[KERN_Q4_K] = (kern_traits){"Q4_K", QK_K, sizeof(kern_block_q4_K), kern_ref_dequant_q4_K, NULL,
                                         kern_ref_dot_q4_K, KERN_Q8_K};
    t->traits[KERN_Q5_K] = (kern_traits){"Q5_K", QK_K, sizeof(kern_block_q5_K), kern_ref_dequant_q5_K, NULL,
                                         kern_ref_dot_q5_K, KERN_Q8_K};
    t->traits[KERN_Q6_K] = (kern_traits){"Q6_K", QK_K, sizeof(kern_block_q6_K), kern_ref_dequant_q6_K, NULL,
                                         kern_ref_dot_q6_K, KERN_Q8_K};
    t->traits[KERN_Q8_K] = (kern_traits){"Q8_K", QK_K, sizeof(kern_block_q8_K), kern_ref_dequant_q8_K,
                                         kern_ref_quantize_q8_K, NULL, KERN_Q8_K};
    t->tile[KERN_F32] = tile_f32;
    t->tile[KERN_F16] = tile_f16;
    t->tile[KERN_BF16] = tile_bf16;
    t->tile[KERN_Q4_0] = tile_q4_0;
    t->tile[KERN_Q4_1] = tile_q4_1;
    t->tile[KERN_Q5_0] = tile_q5_0;
    t->tile[KERN_Q5_1] = tile_q5_1;
    t->tile[KERN_Q8_0] = tile_q8_0;
    t->tile[KERN_Q4_K] = tile_q4_K;
    t->tile[KERN_Q5_K] = tile_q5_K;
    t->tile[KERN_Q6_K] = tile_q6_K;
    for (int i = 0; i < KERN_TYPE_MAX; i++) t->tile1[i] = t->tile[i], t->tile_c[i] = KERN_TILE_C;
    t->rmsnorm = kern_ref_rmsnorm;
    t->silu_mul = kern_ref_silu_mul;
    t->softmax = kern_ref_softmax;
    t->f16_to_f32 = kern_ref_f16_to_f32;
    t->f32_to_f16 = kern_ref_f32_to_f16;
    t->attn = kern_ref_attn;
}
