/* avx512.c -- AVX-512 (F, BW, VL, VNNI) twins of the hot kernels.
 *
 * Installed over the AVX2 table (kern_init installs avx2 first), so only
 * what gains from 512-bit registers or VNNI is here:
 *   - K-quant x Q8_K dots and tiles. The weight block is unpacked by the
 *     AVX2 code into the shared `kunp` form (unsigned bytes + 16-bit
 *     scales), then held in registers -- 4 zmm of weights, 4 zmm of
 *     scales -- while up to KERN_TILE_C tokens go by. Per 64 weights and
 *     token: vpmaddubsw (u8 x i8 -> pairs of i16, no saturation possible:
 *     2*63*127 < 32767) and vpdpwssd (i16 x scale, accumulate to i32).
 *     Integers stay exact; one fmadd per block and token scales them.
 *   - Q8_0 x Q8_0: |x| (u8) x sign(y, x) (i8) with vpdpbusd on 256 bits.
 *   - F32 and F16 dots with masked tails.
 * The scalar twins are in ref.c; tests compare each against them.
 */
#include <immintrin.h>
#include <string.h>

#include "kern_impl.h"

#define T5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

T5 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- K-quants ---- */

typedef void (*unpack_fn)(const void *b, kunp *u);

T5 static inline void ktile(int64_t n, const void *w, size_t bw, size_t bsz, unpack_fn unpack, int nr, const void *a,
                            size_t ba, int nc, float *yout, int64_t ldy) {
    _Alignas(64) kunp u;
    const int64_t nb = n / QK_K;
    for (int r = 0; r < nr; r++) {
        const char *x = (const char *)w + r * bw;
        __m512 acc[KERN_TILE_C];
        __m256 accm[KERN_TILE_C];
        for (int c = 0; c < KERN_TILE_C; c++) acc[c] = _mm512_setzero_ps(), accm[c] = _mm256_setzero_ps();
        for (int64_t i = 0; i < nb; i++) {
            unpack(x + i * bsz, &u);
            __m512i W[4], S[4];
            for (int k = 0; k < 4; k++) {
                W[k] = _mm512_load_si512((const void *)(u.q + 64 * k));
                S[k] = _mm512_load_si512((const void *)(u.sc + 32 * k));
            }
            const __m256i MN = _mm256_loadu_si256((const __m256i *)u.mn);
            for (int c = 0; c < nc; c++) {
                const kern_block_q8_K *y = (const kern_block_q8_K *)((const char *)a + c * ba) + i;
                __m512i isum = _mm512_setzero_si512();
                for (int k = 0; k < 4; k++)
                    isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(W[k], _mm512_loadu_si512(y->qs + 64 * k)), S[k]);
                const __m256i msum = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), MN);
                if (u.fold) {
                    isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(msum));
                } else {
                    accm[c] = _mm256_fmadd_ps(_mm256_set1_ps(u.dm * y->d), _mm256_cvtepi32_ps(msum), accm[c]);
                }
                acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(u.d * y->d), _mm512_cvtepi32_ps(isum), acc[c]);
            }
        }
        for (int c = 0; c < nc; c++) yout[c * ldy + r] = _mm512_reduce_add_ps(acc[c]) + hsum8(accm[c]);
    }
}

#define KQ5(T)                                                                                                 \
    static void unpack_##T(const void *b, kunp *u) { kern_avx2_unpack_##T(b, u); }                           \
    T5 static void tile_##T(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc,     \
                            float *y, int64_t ldy) {                                                          \
        ktile(n, w, bw, sizeof(kern_block_##T), unpack_##T, nr, a, ba, nc, y, ldy);                          \
    }
KQ5(q4_K)
KQ5(q5_K)
KQ5(q6_K)

/* ---- Q8_0 ---- */

T5 static void dot_q8_0(int64_t n, float *s, const void *w, const void *a) {
    const kern_block_q8_0 *x = w, *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK8_0; i++) {
        const __m256i qx = _mm256_loadu_si256((const __m256i *)x[i].qs);
        const __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(qx), _mm256_sign_epi8(qy, qx));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(core_f16_to_f32(x[i].d) * core_f16_to_f32(y[i].d)), _mm256_cvtepi32_ps(p), acc);
    }
    *s = hsum8(acc);
}

T5 static void tile_q8_0(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc, float *y,
                         int64_t ldy) {
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++) dot_q8_0(n, &y[c * ldy + r], (const char *)w + r * bw, (const char *)a + c * ba);
}

/* ---- float dots (masked tails) ---- */

T5 static void dot_f32(int64_t n, float *s, const void *w, const void *a) {
    const float *x = w, *y = a;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 4; k++)
            acc[k] = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16 * k), _mm512_loadu_ps(y + i + 16 * k), acc[k]);
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        acc[0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i), acc[0]);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

T5 static void dot_f16(int64_t n, float *s, const void *w, const void *a) {
    const kern_f16 *x = w, *y = a;
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
#define LH(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 4; k++) acc[k] = _mm512_fmadd_ps(LH(x + i + 16 * k), LH(y + i + 16 * k), acc[k]);
#undef LH
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        acc[0] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)),
                                 _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, y + i)), acc[0]);
    }
    *s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

#define LOOP_TILE(name, dot)                                                                                   \
    T5 static void name(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc, float *y, \
                        int64_t ldy) {                                                                         \
        for (int c = 0; c < nc; c++)                                                                           \
            for (int r = 0; r < nr; r++) dot(n, &y[c * ldy + r], (const char *)w + r * bw, (const char *)a + c * ba); \
    }
LOOP_TILE(tile_f32, dot_f32)
LOOP_TILE(tile_f16, dot_f16)

void kern_avx512_install(kern_impl *t) {
    t->isa = "avx512";
    /* K-quants: the 512-bit tile pays a store-forwarding stall reloading the
     * block that the AVX2 code unpacked (two 32-byte stores, one 64-byte
     * load), which only many tokens amortise: matrix-vector products and
     * single dots keep the AVX2 kernels (measured 6.1 vs 4.7 GB/s). */
    t->traits[KERN_Q8_0].vec_dot = dot_q8_0;
    t->traits[KERN_F32].vec_dot = dot_f32;
    t->traits[KERN_F16].vec_dot = dot_f16;
    t->tile[KERN_Q4_K] = tile_q4_K;
    t->tile[KERN_Q5_K] = tile_q5_K;
    t->tile[KERN_Q6_K] = tile_q6_K;
    t->tile[KERN_Q8_0] = tile_q8_0;
    t->tile[KERN_F32] = tile_f32;
    t->tile[KERN_F16] = tile_f16;
    t->tile1[KERN_Q8_0] = tile_q8_0;
    t->tile1[KERN_F32] = tile_f32;
    t->tile1[KERN_F16] = tile_f16;
}
