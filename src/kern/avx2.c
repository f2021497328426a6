/* avx2.c -- AVX2 + FMA + F16C twins of the kernels.
 *
 * Every function carries __attribute__((target(...))) so the file builds
 * in the default portable build; kern_init installs these entries only
 * when __builtin_cpu_supports says the CPU has the features. The scalar
 * twin of each function is in ref.c (same name with _ref_ in place of
 * _avx2_) and tests/test_kern.c checks one against the other.
 *
 * K-quants (Q4_K, Q5_K, Q6_K) share one scheme: a weight block is first
 * unpacked to 256 unsigned bytes (0..63) plus one 16-bit scale per 16
 * weights and one 16-bit "min" factor per 16 weights, then the dot with a
 * Q8_K block is
 *     isum = sum_g scale[g] * dot_u8_i8(w[16g..], y[16g..])   (maddubs + madd)
 *     msum = sum_g min[g] * y.bsums[g]                         (madd)
 *     s   += x.d*y.d*isum + dmin_f*y.d*msum
 * where for Q4_K/Q5_K min[g] = m[g/2], dmin_f = -dmin, and for Q6_K (its
 * values are stored +32) min[g] = 32*scale[g], folded into isum as an
 * integer. The integers are exact (|isum| < 2^31), as in ggml; only the
 * float accumulation order differs from the scalar reference.
 * The unpacked block goes to a small stack buffer that the tile kernel
 * reuses for up to KERN_TILE_C tokens: that is the reuse that makes
 * prefill arithmetic-bound. maddubs saturates at +-32767: the largest
 * pair here is 2*63*127 = 16002.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kern/kern_impl.h"

#define T2 __attribute__((target("avx2,fma,f16c")))

T2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

T2 static inline int hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* ---- activation quantization ---- */

T2 static void quantize_q8_K(const float *x, void *dst, int64_t n) {
    kern_block_q8_K *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK_K; i++, x += QK_K) {
        __m256 am = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) am = _mm256_max_ps(am, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* the first element of largest magnitude gives the sign, as in ggml */
        const __m256 amv = _mm256_set1_ps(amax);
        float max = 0.0f;
        for (int j = 0; j < QK_K; j += 8) {
            const int mk = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(x + j)), amv, _CMP_EQ_OQ));
            if (mk) {
                max = x[j + __builtin_ctz((unsigned)mk)];
                break;
            }
        }
        const float iscale = -127.f / max;
        const __m256 is = _mm256_set1_ps(iscale);
        const __m256i c127 = _mm256_set1_epi32(127);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; k++)
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(is, _mm256_loadu_ps(x + j + 8 * k))), c127);
            /* bsums: 16 values = two vectors of 8 */
            y[i].bsums[j / 16] = (int16_t)hsum8i(_mm256_add_epi32(q[0], q[1]));
            y[i].bsums[j / 16 + 1] = (int16_t)hsum8i(_mm256_add_epi32(q[2], q[3]));
            __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
            __m256i p8 = _mm256_packs_epi16(p16a, p16b);
            p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(y[i].qs + j), p8);
        }
        y[i].d = 1.0f / iscale;
    }
}

T2 static void quantize_q8_0(const float *x, void *dst, int64_t n) {
    kern_block_q8_0 *y = dst;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK8_0; i++, x += QK8_0) {
        __m256 v[4], am = _mm256_setzero_ps();
        for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            am = _mm256_max_ps(am, _mm256_andnot_ps(sign, v[k]));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps(am, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        y[i].d = core_f32_to_f16(amax / 127.f);
        const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.f / amax : 0.0f);
        __m256i q[4];
        for (int k = 0; k < 4; k++) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id));
        __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, p8);
    }
}

T2 static void from_f16(const float *src, void *dst, int64_t n) {
    kern_f16 *d = dst;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = core_f32_to_f16(src[i]);
}

/* ---- K-quant unpacking ---- */


/* ggml's unpacking of the 12 scale bytes of Q4_K/Q5_K: out[0..7] = 6-bit
 * scales, out[8..15] = 6-bit mins (same as kern_ref_k_scales). */
static inline void k_scales(const uint8_t *q, uint8_t out[16]) {
    uint32_t u[4];
    memcpy(u, q, 12);
    const uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
    u[3] = ((u[2] >> 4) & m2) | (((u[1] >> 6) & m3) << 4);
    const uint32_t aux = u[1] & m1;
    u[1] = (u[2] & m2) | (((u[0] >> 6) & m3) << 4);
    u[2] = aux;
    u[0] &= m1;
    memcpy(out, u, 16);
}

/* Q4_K/Q5_K: one scale per 32 weights (both 16-groups of a chunk), mins per 32 */
T2 static inline void k_scales_store(const uint8_t *scales, kunp *u) {
    _Alignas(16) uint8_t sm[16];
    k_scales(scales, sm);
    for (int k = 0; k < 8; k++) _mm256_store_si256((__m256i *)(u->sc + 16 * k), _mm256_set1_epi16(sm[k]));
    const __m128i m = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)(sm + 8)));
    _mm_storeu_si128((__m128i *)u->mn, _mm_unpacklo_epi16(m, m));
    _mm_storeu_si128((__m128i *)(u->mn + 8), _mm_unpackhi_epi16(m, m));
}

T2 void kern_avx2_unpack_q4_K(const kern_block_q4_K *b, kunp *u) {
    k_scales_store(b->scales, u);
    const __m256i lo = _mm256_set1_epi8(0xF);
    for (int c = 0; c < 4; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));
        _mm256_store_si256((__m256i *)(u->q + 64 * c), _mm256_and_si256(q, lo));
        _mm256_store_si256((__m256i *)(u->q + 64 * c + 32), _mm256_and_si256(_mm256_srli_epi16(q, 4), lo));
    }
    u->d = core_f16_to_f32(b->d);
    u->dm = -core_f16_to_f32(b->dmin);
    u->fold = 0;
}

T2 void kern_avx2_unpack_q5_K(const kern_block_q5_K *b, kunp *u) {
    k_scales_store(b->scales, u);
    const __m256i lo = _mm256_set1_epi8(0xF), one = _mm256_set1_epi8(1);
    const __m256i qh = _mm256_loadu_si256((const __m256i *)b->qh);
    for (int c = 0; c < 4; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));
        /* bit 2c / 2c+1 of each qh byte, moved to bit 4 */
        const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
        const __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
        _mm256_store_si256((__m256i *)(u->q + 64 * c), _mm256_or_si256(_mm256_and_si256(q, lo), h1));
        _mm256_store_si256((__m256i *)(u->q + 64 * c + 32),
                           _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), lo), h2));
    }
    u->d = core_f16_to_f32(b->d);
    u->dm = -core_f16_to_f32(b->dmin);
    u->fold = 0;
}

T2 void kern_avx2_unpack_q6_K(const kern_block_q6_K *b, kunp *u) {
    /* one scale per 16 weights: chunk k gets (s[2k] x 8, s[2k+1] x 8) */
    const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    const __m256i pat = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3,
                                         2, 3, 2, 3, 2, 3);
    for (int k = 0; k < 8; k++)
        _mm256_store_si256((__m256i *)(u->sc + 16 * k),
                           _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(s16, _mm256_set1_epi32(k)), pat));
    _mm256_storeu_si256((__m256i *)u->mn, _mm256_slli_epi16(s16, 5));
    const __m256i lo = _mm256_set1_epi8(0xF), three = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        const __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        const __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        uint8_t *o = u->q + 128 * h;
#define Q6H(s) _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, s), three), 4)
        _mm256_store_si256((__m256i *)(o + 0), _mm256_or_si256(_mm256_and_si256(l0, lo), Q6H(0)));
        _mm256_store_si256((__m256i *)(o + 32), _mm256_or_si256(_mm256_and_si256(l1, lo), Q6H(2)));
        _mm256_store_si256((__m256i *)(o + 64), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), lo), Q6H(4)));
        _mm256_store_si256((__m256i *)(o + 96), _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), lo), Q6H(6)));
#undef Q6H
    }
    u->d = core_f16_to_f32(b->d);
    u->dm = 0;
    u->fold = 1;
}

/* acc += (u . y) for one unpacked block and one Q8_K block (vector partials) */
T2 static inline void kdot(const kunp *u, const kern_block_q8_K *y, __m256 *acc, __m256 *accm) {
    __m256i isum = _mm256_setzero_si256();
    for (int k = 0; k < 8; k++) {
        const __m256i w = _mm256_load_si256((const __m256i *)(u->q + 32 * k));
        const __m256i a = _mm256_loadu_si256((const __m256i *)(y->qs + 32 * k));
        const __m256i s = _mm256_load_si256((const __m256i *)(u->sc + 16 * k));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), s));
    }
    const __m256i msum =
        _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), _mm256_loadu_si256((const __m256i *)u->mn));
    if (u->fold) {
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(u->d * y->d), _mm256_cvtepi32_ps(_mm256_sub_epi32(isum, msum)), *acc);
    } else {
        *acc = _mm256_fmadd_ps(_mm256_set1_ps(u->d * y->d), _mm256_cvtepi32_ps(isum), *acc);
        *accm = _mm256_fmadd_ps(_mm256_set1_ps(u->dm * y->d), _mm256_cvtepi32_ps(msum), *accm);
    }
}

#define KQ_KERNELS(T, BT)                                                                                     \
    T2 static void tile_##T(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc,    \
                            float *yout, int64_t ldy) {                                                      \
        _Alignas(32) kunp u;                                                                                  \
        const int64_t nb = n / QK_K;                                                                         \
        for (int r = 0; r < nr; r++) {                                                                       \
            const BT *x = (const BT *)((const char *)w + r * bw);                                            \
            __m256 acc[KERN_TILE_C], accm[KERN_TILE_C];                                                      \
            for (int c = 0; c < nc; c++) acc[c] = accm[c] = _mm256_setzero_ps();                             \
            for (int64_t i = 0; i < nb; i++) {                                                               \
                KERN_PF_BLOCK(&x[i]);                                                                        \
                kern_avx2_unpack_##T(&x[i], &u);                                                                       \
                for (int c = 0; c < nc; c++)                                                                 \
                    kdot(&u, (const kern_block_q8_K *)((const char *)a + c * ba) + i, &acc[c], &accm[c]);    \
            }                                                                                                \
            for (int c = 0; c < nc; c++) yout[c * ldy + r] = hsum8(acc[c]) + hsum8(accm[c]);                 \
        }                                                                                                    \
    }                                                                                                        \
    T2 static void dot_##T(int64_t n, float *s, const void *w, const void *a) { tile_##T(n, w, 0, 1, a, 0, 1, s, 1); }

KQ_KERNELS(q4_K, kern_block_q4_K)
KQ_KERNELS(q5_K, kern_block_q5_K)
KQ_KERNELS(q6_K, kern_block_q6_K)

/* ---- Q8_0 and Q4_0 x Q8_0: sign trick, |x| (u8) * sign(y, x) (i8) ---- */

T2 static inline __m256i dot32_i8(__m256i x, __m256i y) {
    const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

T2 static void dot_q8_0(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q8_0 *x = w, *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m256i p = dot32_i8(_mm256_loadu_si256((const __m256i *)x[i].qs), _mm256_loadu_si256((const __m256i *)y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(core_f16_to_f32(x[i].d) * core_f16_to_f32(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    *s = hsum8(acc);
}

T2 static void dot_q4_0(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q4_0 *x = w;
    const kern_block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    const __m256i lo = _mm256_set1_epi8(0xF), eight = _mm256_set1_epi8(8);
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m128i q = _mm_loadu_si128((const __m128i *)x[i].qs);
        __m256i qx = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
        qx = _mm256_sub_epi8(_mm256_and_si256(qx, lo), eight);
        const __m256i p = dot32_i8(qx, _mm256_loadu_si256((const __m256i *)y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(core_f16_to_f32(x[i].d) * core_f16_to_f32(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    *s = hsum8(acc);
}

/* ---- Q4_1, Q5_0, Q5_1 x Q8_0 ---- */

/* 32 bytes holding value j's nibble at byte j: low nibbles first. */
T2 static inline __m256i nibbles32(const uint8_t *qs) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m256i b = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0xF));
}

/* 16 at byte j where bit j of the little-endian qh is set, else 0. */
T2 static inline __m256i high_bits32(const uint8_t qh[4]) {
    uint32_t h;
    memcpy(&h, qh, 4);
    /* byte j takes byte j/8 of h, then keeps its bit j%8 */
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)h), pick), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(b, bit), _mm256_set1_epi8(16));
}

/* unsigned x (0..31) times signed y, summed per 32-bit lane */
T2 static inline __m256i dot32_u8(__m256i x, __m256i y) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1));
}

T2 static void dot_q5_0(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q5_0 *x = w;
    const kern_block_q8_0 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m256i qx = _mm256_sub_epi8(_mm256_or_si256(nibbles32(x[i].qs), high_bits32(x[i].qh)), _mm256_set1_epi8(16));
        const __m256i p = dot32_i8(qx, _mm256_loadu_si256((const __m256i *)y[i].qs));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(core_f16_to_f32(x[i].d) * core_f16_to_f32(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    *s = hsum8(acc);
}

/* Q4_1 / Q5_1: d_x d_y sum(q_x q_y) + m_x d_y sum(q_y), as the reference. */
#define DOT_MIN_KERNEL(T, B, QX)                                                                               \
    T2 static void dot_##T(int64_t n, float *s, const void *w, const void *a) {                              \
        const B *x = w;                                                                                        \
        const kern_block_q8_0 *y = a;                                                                          \
        __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();                                          \
        const __m256i one = _mm256_set1_epi8(1);                                                               \
        for (int64_t i = 0; i < n / QK8_0; i++) {                                                              \
            const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);                                   \
            const float dy = core_f16_to_f32(y[i].d);                                                          \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(core_f16_to_f32(x[i].d) * dy), _mm256_cvtepi32_ps(dot32_u8(QX, qy)), acc); \
            accm = _mm256_fmadd_ps(_mm256_set1_ps(core_f16_to_f32(x[i].m) * dy), _mm256_cvtepi32_ps(dot32_u8(one, qy)), accm); \
        }                                                                                                      \
        *s = hsum8(acc) + hsum8(accm);                                                                         \
    }
DOT_MIN_KERNEL(q4_1, kern_block_q4_1, nibbles32(x[i].qs))
DOT_MIN_KERNEL(q5_1, kern_block_q5_1, _mm256_or_si256(nibbles32(x[i].qs), high_bits32(x[i].qh)))

/* ---- float dots ---- */

T2 static void dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const float *x = w, *y = a;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++)
            acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * k), _mm256_loadu_ps(y + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), acc[0]);
    float sum = hsum8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) sum += x[i] * y[i];
    *s = sum;
}

T2 static void dot_f16(int64_t n, float *s, const void *w, const void *a) {
    const kern_f16 *x = w, *y = a;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
#define LH(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) acc[k] = _mm256_fmadd_ps(LH(x + i + 8 * k), LH(y + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(LH(x + i), LH(y + i), acc[0]);
#undef LH
    float sum = hsum8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) sum += core_f16_to_f32(x[i]) * core_f16_to_f32(y[i]);
    *s = sum;
}

T2 static void dot_bf16(int64_t n, float *s, const void *w, const void *a) {
    const uint16_t *x = w, *y = a;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
#define LB(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p))), 16))
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 2; k++) acc[k] = _mm256_fmadd_ps(LB(x + i + 8 * k), LB(y + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(LB(x + i), LB(y + i), acc[0]);
#undef LB
    float sum = hsum8(_mm256_add_ps(acc[0], acc[1]));
    for (; i < n; i++) sum += core_bf16_to_f32(x[i]) * core_bf16_to_f32(y[i]);
    *s = sum;
}

/* Tiles for types without a block-reuse kernel: plain loops over the dot. */
#define LOOP_TILE(name, dot)                                                                                   \
    T2 static void name(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc, float *y, \
                        int64_t ldy) {                                                                         \
        for (int c = 0; c < nc; c++)                                                                           \
            for (int r = 0; r < nr; r++) dot(n, &y[c * ldy + r], (const char *)w + r * bw, (const char *)a + c * ba); \
    }
LOOP_TILE(tile_q8_0, dot_q8_0)
LOOP_TILE(tile_q4_0, dot_q4_0)
LOOP_TILE(tile_q4_1, dot_q4_1)
LOOP_TILE(tile_q5_0, dot_q5_0)
LOOP_TILE(tile_q5_1, dot_q5_1)
LOOP_TILE(tile_f32, dot_f32)
LOOP_TILE(tile_f16, dot_f16)
LOOP_TILE(tile_bf16, dot_bf16)

/* ---- f32 ops ---- */

/* exp(x) for x in float range: n = round(x/ln2), r = x - n ln2 (two-part
 * ln2), degree-6 Taylor/minimax-ish polynomial, scale by 2^n. About 2 ulp.
 * Below -87.3 the result is 0 (the scalar expf gives denormals there). */
T2 static inline __m256 exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(x, hi);
    x = _mm256_max_ps(x, lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n in two steps so that n = 128 (x near 88.7) does not overflow the exponent */
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i e1 = _mm256_srai_epi32(ni, 1), e2 = _mm256_sub_epi32(ni, e1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e1, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e2, _mm256_set1_epi32(127)), 23));
    return _mm256_andnot_ps(under, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2));
}

T2 static void rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    double sum = hsum8(acc);
    for (; i < n; i++) sum += (double)(x[i] * x[i]);
    const float scale = 1.0f / sqrtf((float)(sum / (double)n) + eps);
    const __m256 sv = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

T2 static void silu_mul(float *out, const float *g, const float *u, int64_t n) {
    int64_t i = 0;
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(g + i);
        const __m256 e = exp8(_mm256_xor_ps(v, sign));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

T2 static void softmax(float *x, int64_t n) {
    if (n <= 0) return;
    float max = -INFINITY;
    int64_t i = 0;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    max = _mm_cvtss_f32(m4);
    for (; i < n; i++) max = fmaxf(max, x[i]);
    const __m256 mb = _mm256_set1_ps(max);
    __m256 acc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mb));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    double sum = hsum8(acc);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += (double)x[i];
    }
    const float inv = (float)(1.0 / sum);
    const __m256 iv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), iv));
    for (; i < n; i++) x[i] *= inv;
}

/* ---- attention over the 8-bit KV cache (layout and arithmetic: kern.h) ----
 *
 * The AVX-512 kernel (avx512.c) uses vpdpbusd and vpdpwssd; generic AVX2
 * machines (Haswell, Zen 2) have neither, so each becomes two or three
 * plain AVX2 instructions with the same exact integer result. Per tile of
 * 32 positions and group of 4 query heads:
 *   - scores: per 8 positions and 32-value block, 8 loads of 32 bytes of K
 *     (8 positions x 4 values), each made signed once (xor 0x80 = minus
 *     128) and shared by the 4 heads. Per head, the sign trick of dot32_i8
 *     with the query's 4 bytes broadcast:
 *         vpmaddubsw(|q|, sign(k, q)) -> int16 pairs, vpmaddwd(., 1) -> int32
 *     so int32 lanes are positions, with no horizontal sums; a block ends
 *     in one convert and one fmadd by qd_b * kd_b (8 positions' K scales
 *     in one ymm), as in kern_ref_attn. maddubs saturates at +-32767: a
 *     pair here is at most 2 * 127 * 128 = 32512 (|q| <= 127 as Q8_0
 *     rounds; k >= -128 even in an unwritten position), so it never does.
 *     (Keeping K unsigned, +128, would pair 255 * 127 twice: 64770.)
 *   - softmax: 8 scores at a time with exp8, positions >= np masked to
 *     -inf (an unwritten position may hold any bytes, NaN scales too);
 *   - V: the weights folded with the V scales to int16 (8 at a time, the
 *     V scales of absent positions masked to 0 so their weights are 0),
 *     then per 16 values of V, the 2 positions' int8 pairs widened once
 *     (vpmovsxbw) for the 4 heads and one vpmaddwd per head and 8 values
 *     against the broadcast (w_j, w_j+1) int16 pair.
 * Integer sums and the float steps after them are those of the reference,
 * so scores match it bit for bit; only exp8 (about 2 ulp, which may move
 * an int16 weight by one) and the order of the l sums differ. */
T2 static inline float hmax8(__m256 v) {
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}

/* One online-softmax step over the scores s[g][0..np) of a tile
 * (kern_ref_attn's ref_softmax_step): s becomes the weights, exactly 0
 * from np on whatever was there. valid[c]: lanes of positions 8c.. < np. */
T2 static inline void softmax_step8(float s[][KERN_ATTN_BLOCK], int ng, int hd, const __m256 valid[4], float *m,
                                    float *l, float *acc) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (int g = 0; g < ng; g++) {
        __m256 x[4], mv = _mm256_set1_ps(m[g]);
        for (int c = 0; c < 4; c++) {
            x[c] = _mm256_blendv_ps(ninf, _mm256_load_ps(s[g] + 8 * c), valid[c]);
            mv = _mm256_max_ps(mv, x[c]);
        }
        const float bm = hmax8(mv);
        if (bm != m[g]) { /* the max grew: rescale what we have */
            const float r = expf(m[g] - bm);
            l[g] *= r;
            const __m256 rv = _mm256_set1_ps(r);
            float *ag = acc + (size_t)g * hd;
            for (int i = 0; i < hd; i += 8) _mm256_storeu_ps(ag + i, _mm256_mul_ps(_mm256_loadu_ps(ag + i), rv));
            m[g] = bm;
        }
        const __m256 bv = _mm256_set1_ps(bm);
        __m256 sum = _mm256_setzero_ps();
        for (int c = 0; c < 4; c++) {
            const __m256 e = exp8(_mm256_sub_ps(x[c], bv)); /* exp8(-inf) = 0 */
            _mm256_store_ps(s[g] + 8 * c, e);
            sum = _mm256_add_ps(sum, e);
        }
        l[g] += hsum8(sum);
    }
}

/* valid[c]: all-ones lanes for positions 8c.. of a tile that are < np */
T2 static inline void tile_valid(int np, __m256 valid[4]) {
    for (int c = 0; c < 4; c++)
        valid[c] = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
            _mm256_set1_epi32(np), _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 * c))));
}

T2 static void attn_q8(const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                       float scale, float *m, float *l, float *acc) {
    enum { MG = KERN_ATTN_MAX_G + 3, MB = KERN_ATTN_MAX_HD / 32 };
    /* int32 views: the query's Q8_0 bytes (and their magnitudes) 4 at a
     * time, and the int16 V weights 2 at a time, each one broadcast */
    _Alignas(32) int32_t qq[MG * KERN_ATTN_MAX_HD / 4], qa[MG * KERN_ATTN_MAX_HD / 4];
    _Alignas(32) int32_t w[MG][MB][KERN_KV_TILE / 2];
    _Alignas(32) float s[MG][KERN_ATTN_BLOCK], dummy[KERN_ATTN_MAX_HD];
    float qd[MG * MB], sig[MG][MB] = {{0}}; /* sig: tmax / 32767 of kern.h */
    int32_t qsum[MG * MB];                  /* not needed here: K is made signed */
    assert(ng >= 1 && ng <= KERN_ATTN_MAX_G && hd % 32 == 0 && hd <= KERN_ATTN_MAX_HD);
    const int nb = hd / 32, ng4 = (ng + 3) & ~3, hd4 = hd / 4;
    kern_kv_q8_quant_q(q, ng, hd, (int8_t *)qq, qd, qsum);
    if (ng4 != ng) { /* absent heads of the last group of 4: zero queries, zero weights */
        memset(qq + (size_t)ng * hd4, 0, (size_t)(ng4 - ng) * hd);
        for (int i = ng * nb; i < ng4 * nb; i++) qd[i] = 0;
        memset(w[ng], 0, sizeof w[0] * (size_t)(ng4 - ng));
        memset(dummy, 0, sizeof(float) * (size_t)hd);
    }
    for (int i = 0; i < ng4 * hd4; i += 8)
        _mm256_store_si256((__m256i *)(qa + i), _mm256_abs_epi8(_mm256_load_si256((const __m256i *)(qq + i))));
    const __m256i ones = _mm256_set1_epi16(1), bias = _mm256_set1_epi8((char)0x80);
    for (int p0 = 0; p0 < n; p0 += KERN_KV_TILE) {
        const int np = n - p0 < KERN_KV_TILE ? n - p0 : KERN_KV_TILE;
        const kern_kv_q8_tiles tl = kern_kv_q8_tiles_at(k, v, stride, p0, hd);
        if (p0 + KERN_KV_TILE < n) kern_kv_q8_prefetch_next(&tl, stride, hd);
        __m256 valid[4];
        tile_valid(np, valid);
        for (int h = 0; 8 * h < np; h++)
            for (int g = 0; g < ng4; g += 4) {
                __m256 f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
                for (int b = 0; b < nb; b++) {
                    const int32_t *q0 = qq + (size_t)g * hd4 + 8 * b, *a0p = qa + (size_t)g * hd4 + 8 * b;
                    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
                    const uint8_t *kb = tl.kq + kern_kv_q8_kidx(8 * h, 32 * b);
#define QDOT(a, e)                                                                                                 \
    a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi32(a0p[(e) * hd4 + i]),          \
                                                                   _mm256_sign_epi8(kx, _mm256_set1_epi32(q0[(e) * hd4 + i]))), \
                                              ones))
#pragma GCC unroll 8
                    for (int i = 0; i < 8; i++) {
                        const __m256i kx = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(kb + (size_t)i * 4 * KERN_KV_TILE)), bias);
                        QDOT(a0, 0);
                        QDOT(a1, 1);
                        QDOT(a2, 2);
                        QDOT(a3, 3);
                    }
#undef QDOT
                    const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(tl.kd + b * KERN_KV_TILE + 8 * h)));
                    const int o = g * nb + b;
                    f0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a0), _mm256_mul_ps(_mm256_set1_ps(qd[o]), d), f0);
                    f1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a1), _mm256_mul_ps(_mm256_set1_ps(qd[o + nb]), d), f1);
                    f2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a2), _mm256_mul_ps(_mm256_set1_ps(qd[o + 2 * nb]), d), f2);
                    f3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a3), _mm256_mul_ps(_mm256_set1_ps(qd[o + 3 * nb]), d), f3);
                }
                const __m256 sc = _mm256_set1_ps(scale);
                _mm256_store_ps(s[g] + 8 * h, _mm256_mul_ps(f0, sc)), _mm256_store_ps(s[g + 1] + 8 * h, _mm256_mul_ps(f1, sc));
                _mm256_store_ps(s[g + 2] + 8 * h, _mm256_mul_ps(f2, sc)), _mm256_store_ps(s[g + 3] + 8 * h, _mm256_mul_ps(f3, sc));
            }
        softmax_step8(s, ng, hd, valid, m, l, acc);
        const __m256 lim = _mm256_set1_ps(32767.0f);
        for (int b = 0; b < nb; b++) {
            __m256 d[4];
            for (int c = 0; c < 4; c++)
                d[c] = _mm256_and_ps(valid[c], _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(tl.vd + b * KERN_KV_TILE + 8 * c))));
            for (int g = 0; g < ng; g++) {
                __m256 t[4];
                for (int c = 0; c < 4; c++) t[c] = _mm256_mul_ps(_mm256_load_ps(s[g] + 8 * c), d[c]);
                const float tmax = hmax8(_mm256_max_ps(_mm256_max_ps(t[0], t[1]), _mm256_max_ps(t[2], t[3])));
                const __m256 r = _mm256_set1_ps(tmax > 0 ? 32767.0f / tmax : 0);
                sig[g][b] = tmax / 32767.0f;
                __m256i wi[4];
                for (int c = 0; c < 4; c++) wi[c] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_mul_ps(t[c], r), lim));
                /* packs works per 128-bit lane: the permute puts the 16 int16 back in position order */
                _mm256_store_si256((__m256i *)w[g][b], _mm256_permute4x64_epi64(_mm256_packs_epi32(wi[0], wi[1]), 0xd8));
                _mm256_store_si256((__m256i *)(w[g][b] + 8), _mm256_permute4x64_epi64(_mm256_packs_epi32(wi[2], wi[3]), 0xd8));
            }
        }
        /* per 16 values of V: 4 heads x 2 halves of int32 sums in registers,
         * each V pair widened once for the 4 heads */
        for (int g0 = 0; g0 < ng; g0 += 4) {
            float *ap[4];
            for (int g = 0; g < 4; g++) ap[g] = g0 + g < ng ? acc + (size_t)(g0 + g) * hd : dummy;
            for (int b = 0; b < nb; b++)
                for (int c = 0; c < 2; c++) {
                    const int32_t *w0 = w[g0][b], *w1 = w[g0 + 1][b], *w2 = w[g0 + 2][b], *w3 = w[g0 + 3][b];
                    __m256i a00 = _mm256_setzero_si256(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
                    const int8_t *vp = tl.vq + kern_kv_q8_vidx(hd, 0, 32 * b + 16 * c);
                    for (int j = 0; j < (np + 1) / 2; j++, vp += 2 * (size_t)hd) {
                        const __m256i x0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)vp));
                        const __m256i x1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(vp + 16)));
                        __m256i wv = _mm256_set1_epi32(w0[j]);
                        a00 = _mm256_add_epi32(a00, _mm256_madd_epi16(x0, wv)), a01 = _mm256_add_epi32(a01, _mm256_madd_epi16(x1, wv));
                        wv = _mm256_set1_epi32(w1[j]);
                        a10 = _mm256_add_epi32(a10, _mm256_madd_epi16(x0, wv)), a11 = _mm256_add_epi32(a11, _mm256_madd_epi16(x1, wv));
                        wv = _mm256_set1_epi32(w2[j]);
                        a20 = _mm256_add_epi32(a20, _mm256_madd_epi16(x0, wv)), a21 = _mm256_add_epi32(a21, _mm256_madd_epi16(x1, wv));
                        wv = _mm256_set1_epi32(w3[j]);
                        a30 = _mm256_add_epi32(a30, _mm256_madd_epi16(x0, wv)), a31 = _mm256_add_epi32(a31, _mm256_madd_epi16(x1, wv));
                    }
                    const __m256i ia[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
                    for (int e = 0; e < 4; e++) {
                        const __m256 sg = _mm256_set1_ps(sig[g0 + e][b]);
                        float *o = ap[e] + 32 * b + 16 * c;
                        _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[e][0]), sg, _mm256_loadu_ps(o)));
                        _mm256_storeu_ps(o + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia[e][1]), sg, _mm256_loadu_ps(o + 8)));
                    }
                }
        }
    }
}

/* Attention over n positions of one KV head; the scalar twin is
 * kern_ref_attn, same blocking. Scores: each K row is converted to f32 once
 * (F16C) and dotted with the ng query rows. Softmax: softmax_step8, as
 * for the 8-bit cache. V: dims outer, positions inner, so 4 heads'
 * accumulators stay in registers while each 8-value piece of a V row is
 * converted once for all of them. */
#define ATT_PF 8 /* positions of K prefetched ahead */

T2 static void attn(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                    float scale, float *m, float *l, float *acc) {
    if (kv_type == KERN_KV_Q8 && hd % 32 == 0) {
        attn_q8(q, ng, hd, k, v, stride, n, scale, m, l, acc);
        return;
    }
    if ((hd & 7) || (kv_type != KERN_F16 && kv_type != KERN_F32)) {
        kern_ref_attn(kv_type, q, ng, hd, k, v, stride, n, scale, m, l, acc);
        return;
    }
    assert(ng >= 1 && ng <= KERN_ATTN_MAX_G && hd <= KERN_ATTN_MAX_HD);
    _Alignas(32) float s[KERN_ATTN_MAX_G + 1][KERN_ATTN_BLOCK];
    _Alignas(32) float row[KERN_ATTN_MAX_HD];
    _Alignas(32) float dummy[KERN_ATTN_MAX_HD];
    const int f16 = kv_type == KERN_F16;
    const size_t rowb = (size_t)hd * (f16 ? 2 : 4);
    for (int j = 0; j < KERN_ATTN_BLOCK; j++) s[KERN_ATTN_MAX_G][j] = 0; /* weights of absent heads */
    if (ng % 4) memset(dummy, 0, sizeof(float) * (size_t)hd);
    for (int p0 = 0; p0 < n; p0 += KERN_ATTN_BLOCK) {
        const int np = n - p0 < KERN_ATTN_BLOCK ? n - p0 : KERN_ATTN_BLOCK;
        for (int j = 0; j < np; j++) {
            const char *kr = (const char *)k + (size_t)(p0 + j) * stride;
            const float *kf = (const float *)kr;
            /* The rows of one head are short (256 bytes at hd 128) and a KV
             * row apart: prefetch K a few positions ahead and this block's V
             * rows now, or the loop waits on memory at every position. */
            const char *vr = (const char *)v + (size_t)(p0 + j) * stride;
            for (size_t b = 0; b < rowb; b += 64) _mm_prefetch(vr + b, _MM_HINT_T0);
            if (p0 + j + ATT_PF < n)
                for (size_t b = 0; b < rowb; b += 64) _mm_prefetch(kr + ATT_PF * stride + b, _MM_HINT_T0);
            if (f16) {
                for (int i = 0; i < hd; i += 8)
                    _mm256_store_ps(row + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(kr + 2 * i))));
                kf = row;
            }
            for (int g = 0; g < ng; g++) {
                const float *qg = q + (size_t)g * hd;
                __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
                int i = 0;
                for (; i + 16 <= hd; i += 16) {
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), _mm256_loadu_ps(kf + i), a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i + 8), _mm256_loadu_ps(kf + i + 8), a1);
                }
                if (i < hd) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), _mm256_loadu_ps(kf + i), a0);
                s[g][j] = hsum8(_mm256_add_ps(a0, a1)) * scale;
            }
        }
        __m256 valid[4];
        tile_valid(np, valid);
        softmax_step8(s, ng, hd, valid, m, l, acc);
        for (int g0 = 0; g0 < ng; g0 += 4) {
            const float *w[4];
            float *ap[4];
            for (int g = 0; g < 4; g++) {
                w[g] = g0 + g < ng ? s[g0 + g] : s[KERN_ATTN_MAX_G];
                ap[g] = g0 + g < ng ? acc + (size_t)(g0 + g) * hd : dummy;
            }
            for (int i = 0; i < hd; i += 8) {
                __m256 a0 = _mm256_loadu_ps(ap[0] + i), a1 = _mm256_loadu_ps(ap[1] + i);
                __m256 a2 = _mm256_loadu_ps(ap[2] + i), a3 = _mm256_loadu_ps(ap[3] + i);
                const char *vr = (const char *)v + (size_t)p0 * stride + (f16 ? 2 : 4) * (size_t)i;
                for (int j = 0; j < np; j++, vr += stride) {
                    const __m256 x = f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)vr))
                                         : _mm256_loadu_ps((const float *)vr);
                    a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(&w[0][j]), x, a0);
                    a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(&w[1][j]), x, a1);
                    a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(&w[2][j]), x, a2);
                    a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(&w[3][j]), x, a3);
                }
                _mm256_storeu_ps(ap[0] + i, a0), _mm256_storeu_ps(ap[1] + i, a1);
                _mm256_storeu_ps(ap[2] + i, a2), _mm256_storeu_ps(ap[3] + i, a3);
            }
        }
    }
}

T2 static void f16_to_f32(const kern_f16 *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = core_f16_to_f32(src[i]);
}

T2 static void f32_to_f16(const float *src, kern_f16 *dst, int64_t n) { from_f16(src, dst, n); }

void kern_avx2_install(kern_impl *t) {
    t->isa = "avx2";
    t->traits[KERN_Q8_K].from_float = quantize_q8_K;
    t->traits[KERN_Q8_0].from_float = quantize_q8_0;
    t->traits[KERN_F16].from_float = from_f16;
    t->traits[KERN_Q4_K].vec_dot = dot_q4_K;
    t->traits[KERN_Q5_K].vec_dot = dot_q5_K;
    t->traits[KERN_Q6_K].vec_dot = dot_q6_K;
    t->traits[KERN_Q8_0].vec_dot = dot_q8_0;
    t->traits[KERN_Q4_0].vec_dot = dot_q4_0;
    t->traits[KERN_Q4_1].vec_dot = dot_q4_1;
    t->traits[KERN_Q5_0].vec_dot = dot_q5_0;
    t->traits[KERN_Q5_1].vec_dot = dot_q5_1;
    t->traits[KERN_F32].vec_dot = dot_f32;
    t->traits[KERN_F16].vec_dot = dot_f16;
    t->traits[KERN_BF16].vec_dot = dot_bf16;
    t->tile[KERN_Q4_K] = tile_q4_K;
    t->tile[KERN_Q5_K] = tile_q5_K;
    t->tile[KERN_Q6_K] = tile_q6_K;
    t->tile[KERN_Q8_0] = tile_q8_0;
    t->tile[KERN_Q4_0] = tile_q4_0;
    t->tile[KERN_Q4_1] = tile_q4_1;
    t->tile[KERN_Q5_0] = tile_q5_0;
    t->tile[KERN_Q5_1] = tile_q5_1;
    t->tile[KERN_F32] = tile_f32;
    t->tile[KERN_F16] = tile_f16;
    t->tile[KERN_BF16] = tile_bf16;
    for (int i = 0; i < KERN_TYPE_MAX; i++) t->tile1[i] = t->tile[i];
    t->rmsnorm = rmsnorm;
    t->silu_mul = silu_mul;
    t->softmax = softmax;
    t->f16_to_f32 = f16_to_f32;
    t->f32_to_f16 = f32_to_f16;
    t->attn = attn;
}
