/* avx512.c -- AVX-512 (F, BW, VL, VNNI) twins of the hot kernels, and
 * on CPUs with AMX the Q4_K prefill tile on its tile unit.
 *
 * Installed over the AVX2 table (kern_init installs avx2 first), so only
 * what gains from 512-bit registers or VNNI is here:
 *   - Q4_K, Q5_K and Q6_K x Q8_K, matrix-vector and tiles: the weight
 *     block is unpacked straight into registers and kept there while up
 *     to KERN_TILE_CMAX tokens go by (details at "K-quants unpacked in
 *     registers" below; Q4_K reads its activations permuted);
 *   - Q4_K and Q6_K wide tiles (prefill and mixed steps, kern_impl.h
 *     "Wide tile"): 16 rows repacked into the lanes of zmm, vpdpbusd
 *     against each token's activations broadcast 4 bytes at a time, scales
 *     and offsets applied per 16 weights (details at "Wide tiles");
 *   - Q8_0 x Q8_0: |x| (u8) x sign(y, x) (i8) with vpdpbusd on 256 bits.
 *   - F32 and F16 dots with masked tails;
 *   - attention over f16 KV rows, 16 lanes throughout, and over the 8-bit
 *     KV tiles with vpdpbusd (scores) and vpdpwssd (V) (kern_attn);
 *   - AMX (kern_amx_install, over this table): Q4_K x Q8_K from 9 tokens
 *     with tdpbusd, the activations prepared once per matmul (details at
 *     "Q4_K wide tile on AMX").
 * The scalar twins are in ref.c; tests compare each against them.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kern/kern_impl.h"

#define T5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

T5 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- K-quants unpacked in registers (matrix-vector and tiles) ----
 *
 * The AVX2 kernels store the unpacked block and reload it; these never
 * leave registers. Per 64 weights and token: one vpmaddubsw
 * (u8 weights x s8 activations -> i16 pairs, exact: 2*63*127 < 32767) and
 * one vpdpwssd against a vector whose int32 lanes hold the sub-block scale
 * in both 16-bit halves, so the pair sum is scaled and accumulated exactly
 * into int32. The block's integer sums then take the float steps that
 * every family shares ("One float order" below).
 *
 * Q5_K (Q4_K's layout with a fifth bit), 32 bytes of qs = 64 weights:
 * low nibbles are sub-block 2c, high nibbles 2c+1; [q & 15 | q >> 4 & 15]
 * is a zmm in natural order that meets 64 contiguous activation bytes.
 * Mins: sum_j m[j] * (bsums[2j] + bsums[2j+1]) by one vpmaddwd with each
 * min in both 16-bit halves. Q4_K's 4-bit weights leave room for a
 * cheaper sum over activations in an order of their own ("Q4_K on
 * permuted activations").
 * Q6_K, half h (128 weights): L = ql[64h..+64), H = [qh[32h..+32) |
 * qh >> 2]; weights 0..63 = L & 15 | (H & 3) << 4, weights 64..127 =
 * L >> 4 & 15 | (H >> 4 & 3) << 4 (byte-wise, via 16-bit shifts whose
 * spill-over bits are masked off). Values are stored +32: the 32 * sum
 * scale[g] * bsums[g] correction is taken off the integer sum.
 * The integer sums equal the reference's exactly; only float order differs.
 */

#define UNROLL_4 _Pragma("GCC unroll 4")
#define UNROLL _Pragma("GCC unroll 16")
#define AI __attribute__((always_inline))
#define SEL_AC_B 0xE4 /* vpternlog: C ? A : B, bit-wise */

/* A zero accumulator by the xor idiom, which the renamer handles without
 * an execution port (the compiler would copy one zero register instead). */
T5 static inline __m512i zero_acc(void) {
    __m512i z;
    __asm__ volatile("vpxord %0, %0, %0" : "=v"(z)); /* volatile: not merged into one zero and copied */
    return z;
}

/* 8 scales then 8 mins (6 bits each) of a Q4_K/Q5_K block, in an xmm:
 * with u0..u2 the 12 bytes as dwords, [u0 & m1, (u2 & m2) | (u0 >> 6 &
 * m3) << 4, u1 & m1, (u2 >> 4 & m2) | (u1 >> 6 & m3) << 4]. Reads 16 bytes
 * (the block goes on after its scales). */
T5 static inline __m128i k_sm(const uint8_t *q) {
    const __m128i v = _mm_loadu_si128((const __m128i *)q);
    const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)); /* u0 u2 u1 u2 */
    const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)); /* u0 u0 u1 u1 */
    const __m128i lo = _mm_and_si128(a, _mm_set1_epi32(0x3f3f3f3f));
    const __m128i hi = _mm_or_si128(_mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)), _mm_set1_epi32(0x0f0f0f0f)),
                                    _mm_and_si128(_mm_srli_epi32(b, 2), _mm_set1_epi32(0x30303030)));
    return _mm_blend_epi32(lo, hi, 0xA);
}

/* A Q4_K/Q5_K block's d and dmin as floats, by one conversion. */
T5 static inline AI void kq_ddmin(kern_f16 d, kern_f16 dmin, float *fd, float *fdmin) {
    const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)d | (uint32_t)dmin << 16)));
    *fd = _mm_cvtss_f32(dd);
    *fdmin = _mm_cvtss_f32(_mm_movehdup_ps(dd));
}

/* One Q5_K row block unpacked: weights, scales, mins, d and dmin. */
typedef struct {
    __m512i w[4], s[4];
    __m256i mn;
    float d, dmin;
} q5reg;

/* Q5_K: Q4_K's layout plus a fifth bit per weight in qh, bit 2c of byte
 * l for weight l of sub-block 2c and bit 2c+1 for weight l of 2c+1. With
 * H = [qh | qh >> 1], chunk c's bits sit at bit 2c of each byte: moved to
 * bit 4 by 16-bit shifts (the bits a shift carries across bytes are masked
 * off). Weights reach 31, so q5_part's vpmaddubsw stays exact. */
T5 static inline AI void q5_unpack(const kern_block_q5_K *b, q5reg *u) {
    /* scales in lanes 0-7, mins in 8-15, each in both 16-bit halves */
    __m512i sc = _mm512_cvtepu8_epi32(k_sm(b->scales));
    sc = _mm512_or_si512(sc, _mm512_slli_epi32(sc, 16));
    const __m512i m4 = _mm512_set1_epi8(0x0F), m10 = _mm512_set1_epi8(0x10);
    const __m256i h = _mm256_loadu_si256((const __m256i *)b->qh);
    const __m512i H = _mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_srli_epi16(h, 1), 1);
    UNROLL_4 for (int c = 0; c < 4; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * c));
        const __m512i lo = _mm512_inserti64x4(_mm512_castsi256_si512(q), _mm256_srli_epi16(q, 4), 1);
        const __m512i hi = _mm512_and_si512(c < 3 ? _mm512_slli_epi16(H, 4 - 2 * c) : _mm512_srli_epi16(H, 2), m10);
        u->w[c] = _mm512_ternarylogic_epi32(lo, hi, m4, SEL_AC_B);
        const __m512i idx = _mm512_set_epi32(2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1, 2 * c + 1,
                                             2 * c + 1, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c, 2 * c);
        u->s[c] = _mm512_permutexvar_epi32(idx, sc);
    }
    u->mn = _mm512_extracti64x4_epi64(sc, 1);
    kq_ddmin(b->d, b->dmin, &u->d, &u->dmin);
}

typedef struct {
    __m512i w[4], s[4];
    __m256i mn; /* 32 * scale, i16 */
    float d;
} q6reg;

T5 static inline void q6_unpack(const kern_block_q6_K *b, q6reg *u) {
    const __m128i s8 = _mm_loadu_si128((const __m128i *)b->scales);
    __m512i sc = _mm512_cvtepi8_epi32(s8);
    sc = _mm512_or_si512(_mm512_slli_epi32(sc, 16), _mm512_and_si512(sc, _mm512_set1_epi32(0xFFFF)));
    const __m512i m4 = _mm512_set1_epi8(0x0F), m6 = _mm512_set1_epi8(0x3F), m30 = _mm512_set1_epi8(0x30);
    UNROLL_4 for (int h = 0; h < 2; h++) {
        const __m512i L = _mm512_loadu_si512(b->ql + 64 * h);
        const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        const __m512i H = _mm512_inserti64x4(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2), 1);
        u->w[2 * h] = _mm512_and_si512(_mm512_ternarylogic_epi32(L, _mm512_slli_epi16(H, 4), m4, SEL_AC_B), m6);
        u->w[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(L, 4), _mm512_and_si512(H, m30), m4, SEL_AC_B);
    }
    UNROLL_4 for (int c = 0; c < 4; c++) {
        const int g = 4 * c;
        const __m512i idx = _mm512_set_epi32(g + 3, g + 3, g + 3, g + 3, g + 2, g + 2, g + 2, g + 2, g + 1, g + 1, g + 1,
                                             g + 1, g, g, g, g);
        u->s[c] = _mm512_permutexvar_epi32(idx, sc);
    }
    u->mn = _mm256_slli_epi16(_mm256_cvtepi8_epi16(s8), 5);
    u->d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(b->d)));
}

/* ---- One float order for every kernel family ----
 *
 * A token's result must not depend on the kernel that computed it: a
 * stream alone decodes through the matrix-vector kernel, beside a few
 * others through the register tiles, and beside many or beside a prompt
 * through the wide tile below, which holds 16 rows in the lanes and so
 * has each block's exact integer sums per row. So every family reduces a
 * block against a token to those integer sums, S (the scaled weights' sum)
 * and M (the mins' sum; for Q6_K the -32 offset, taken off S), and applies
 * the same float steps, block after block:
 *   Q4_K, Q5_K: f = S * d; f = f - M * dmin (fused); acc = acc + f * y.d (fused)
 *   Q6_K:       acc = acc + S * (d * y.d) (fused)
 * Integer sums are exact in any order, so the register kernels add their
 * lanes up by a tree, four tokens a block (tiles of 4+ tokens) or four
 * blocks a token (matrix-vector, tiles of 2-3) at a time. The AMX tile
 * (Q4_K, 9+ tokens) takes the same steps. */

/* One block against one token: the S part in lanes 0-7, the M part in
 * lanes 8-15 (the tree adds each half up). Q4_K/Q5_K and Q6_K alike: the
 * weights against the activations, scaled per sub-block, and the mins
 * (Q6_K: 32 * scale) against the sub-block sums. */
T5 static inline AI __m512i kq_fold(__m512i isum, __m256i mn, const kern_block_q8_K *y) {
    const __m256i msum = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), mn);
    const __m256i s8 = _mm256_add_epi32(_mm512_castsi512_si256(isum), _mm512_extracti64x4_epi64(isum, 1));
    return _mm512_inserti64x4(_mm512_castsi256_si512(s8), msum, 1);
}
T5 static inline AI __m512i kq_part(const __m512i *w, const __m512i *s, __m256i mn, const kern_block_q8_K *y) {
    __m512i isum = _mm512_setzero_si512();
    UNROLL_4 for (int c = 0; c < 4; c++)
        isum = _mm512_dpwssd_epi32(isum, _mm512_maddubs_epi16(w[c], _mm512_loadu_si512(y->qs + 64 * c)), s[c]);
    return kq_fold(isum, mn, y);
}
T5 static inline AI __m512i q5_part(const q5reg *u, const kern_block_q8_K *y) { return kq_part(u->w, u->s, u->mn, y); }
T5 static inline AI __m512i q6_part(const q6reg *u, const kern_block_q8_K *y) { return kq_part(u->w, u->s, u->mn, y); }

/* Q4_K on permuted activations. Lane L of chunk c (0..3) holds weights
 * 32j + 16h + 4c .. +3 of sub-block j = L/2, half h = L%2, so a lane
 * stays in one half sub-block over the block's four chunks: vpdpbusd
 * (u8 weights x s8 activations, 4 products a lane) sums its 16 weights,
 * |P| <= 16*15*128 fits int16, and one vpdpwssd against (scale_j, 0)
 * scales the whole block: 4 + 1 VNNI a block and token where Q5_K's and
 * Q6_K's wider weights take 4 vpmaddubsw + 4 vpdpwssd. The weights' bytes
 * for lane L sit at 32(L/4) + 16h + 4c, nibble (L/2)%2; the activations
 * are put in the same order once per product (q4_perm). */
typedef struct {
    __m512i w[4], s;
    __m256i mn;
    float d, dmin;
} q4preg;

/* dword 16c + L of a permuted block = dword 8(L/2) + 4(L%2) + c of its qs */
static inline int q4_perm_src(int c, int l) { return 8 * (l / 2) + 4 * (l % 2) + c; }

T5 static void q4_perm(void *a, size_t ba, int64_t n_tok, int64_t n) {
    for (int64_t t = 0; t < n_tok; t++) {
        kern_block_q8_K *y = (kern_block_q8_K *)((char *)a + t * ba);
        for (int64_t i = 0; i < n / QK_K; i++) {
            uint32_t q[64], o[64];
            memcpy(q, y[i].qs, sizeof q);
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 16; l++) o[16 * c + l] = q[q4_perm_src(c, l)];
            memcpy(y[i].qs, o, sizeof o);
        }
    }
}

T5 static inline AI void q4p_unpack(const kern_block_q4_K *b, q4preg *u) {
    const __m512i sm = _mm512_cvtepu8_epi32(k_sm(b->scales)); /* scales in lanes 0-7, mins in 8-15 */
    u->s = _mm512_permutexvar_epi32(_mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0), sm);
    u->mn = _mm512_extracti64x4_epi64(_mm512_or_si512(sm, _mm512_slli_epi32(sm, 16)), 1);
    const __m512i w0 = _mm512_loadu_si512(b->qs), w1 = _mm512_loadu_si512(b->qs + 64);
    const __m512i sh = _mm512_set_epi32(4, 4, 0, 0, 4, 4, 0, 0, 4, 4, 0, 0, 4, 4, 0, 0);
    const __m512i idx0 = _mm512_set_epi32(28, 24, 28, 24, 20, 16, 20, 16, 12, 8, 12, 8, 4, 0, 4, 0);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    UNROLL_4 for (int c = 0; c < 4; c++) {
        const __m512i v = _mm512_permutex2var_epi32(w0, _mm512_add_epi32(idx0, _mm512_set1_epi32(c)), w1);
        u->w[c] = _mm512_and_si512(_mm512_srlv_epi32(v, sh), m4);
    }
    kq_ddmin(b->d, b->dmin, &u->d, &u->dmin);
}

T5 static inline AI __m512i q4p_part(const q4preg *u, const kern_block_q8_K *y) {
    __m512i p = zero_acc();
    UNROLL_4 for (int c = 0; c < 4; c++) p = _mm512_dpbusd_epi32(p, u->w[c], _mm512_loadu_si512(y->qs + 64 * c));
    return kq_fold(_mm512_dpwssd_epi32(_mm512_setzero_si512(), p, u->s), u->mn, y);
}

/* Four parts added up: lane k holds part k's lanes 0-7 summed, lane 8 + k
 * its lanes 8-15. */
T5 static inline __m512i sum4(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
    const __m512i x = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    return _mm512_add_epi32(x, _mm512_shuffle_i32x4(x, x, 0xB1));
}

/* The float steps for four blocks or tokens at once, lane by lane: Q4_K's
 * f (then added into acc by the caller), Q6_K's S and d * y.d. */
T5 static inline __m128 q4_f4(__m512i s, __m128 d, __m128 dmin) {
    const __m512 v = _mm512_cvtepi32_ps(s);
    return _mm_fnmadd_ps(_mm512_extractf32x4_ps(v, 2), dmin, _mm_mul_ps(_mm512_castps512_ps128(v), d));
}
T5 static inline __m128 q6_s4(__m512i s) {
    return _mm_cvtepi32_ps(_mm_sub_epi32(_mm512_castsi512_si128(s), _mm512_extracti32x4_epi32(s, 2)));
}

/* y.d of up to four tokens (k of them) at block i */
T5 static inline AI __m128 yd4(const char *a, size_t ba, int64_t i, int k) {
    float v[4];
    UNROLL for (int t = 0; t < 4; t++) v[t] = t < k ? ((const kern_block_q8_K *)(a + t * ba))[i].d : 0.f;
    return _mm_loadu_ps(v);
}

/* The float steps for tokens t0..t0+k (k <= 4) at block u, lane t for
 * token t; their four parts summed in s. Macros, since Q4_K's and Q5_K's
 * unpacked blocks are two types with the same d and dmin. */
#define STEPS4_Q45(s, u, yd, acc) \
    (*(acc) = _mm_fmadd_ps(q4_f4(s, _mm_set1_ps((u)->d), _mm_set1_ps((u)->dmin)), yd, *(acc)))
#define STEPS4_Q6(s, u, yd, acc) (*(acc) = _mm_fmadd_ps(q6_s4(s), _mm_mul_ps(_mm_set1_ps((u)->d), yd), *(acc)))

/* Tokens t0..t0+k (k <= 4) of one row block into their lanes of acc. */
#define TOK4(NAME, REG, PART, STEPS)                                                                            \
    T5 static inline AI void NAME(const REG *u, const char *a, size_t ba, int64_t i, int k, __m128 *acc) {    \
        __m512i p[4];                                                                                          \
        UNROLL for (int t = 0; t < 4; t++)                                                                     \
            p[t] = t < k ? PART(u, (const kern_block_q8_K *)(a + t * ba) + i) : _mm512_setzero_si512();        \
        STEPS(sum4(p[0], p[1], p[2], p[3]), u, yd4(a, ba, i, k), acc);                                       \
    }
TOK4(q4p_tok4, q4preg, q4p_part, STEPS4_Q45)
TOK4(q5_tok4, q5reg, q5_part, STEPS4_Q45)
TOK4(q6_tok4, q6reg, q6_part, STEPS4_Q6)

/* d and dmin of K (1..4) consecutive Q4_K/Q5_K blocks (both start with
 * them), lane t for block t; Q6_K's d */
T5 static inline AI void d4_q45(const void *x, size_t bs, int K, __m128 *d, __m128 *dm) {
    uint32_t v[4] = {0, 0, 0, 0};
    UNROLL for (int t = 0; t < 4; t++)
        if (t < K) memcpy(&v[t], (const char *)x + t * bs, 4);
    const __m256 h = _mm256_cvtph_ps(_mm_setr_epi32((int)v[0], (int)v[1], (int)v[2], (int)v[3]));
    const __m128 lo = _mm256_castps256_ps128(h), hi = _mm256_extractf128_ps(h, 1);
    *d = _mm_shuffle_ps(lo, hi, 0x88);
    *dm = _mm_shuffle_ps(lo, hi, 0xDD);
}
T5 static inline AI void d4_q6(const void *x, size_t bs, int K, __m128 *d, __m128 *dm) {
    uint16_t v[4] = {0, 0, 0, 0};
    UNROLL for (int t = 0; t < 4; t++)
        if (t < K) memcpy(&v[t], (const char *)x + t * bs + offsetof(kern_block_q6_K, d), 2);
    *d = _mm_cvtph_ps(_mm_setr_epi16((short)v[0], (short)v[1], (short)v[2], (short)v[3], 0, 0, 0, 0));
    *dm = _mm_setzero_ps();
}

/* Lane t of v, t a constant */
#define LANE0(v) (v)
#define LANE1(v) _mm_movehdup_ps(v)
#define LANE2(v) _mm_movehl_ps((v), (v))
#define LANE3(v) _mm_shuffle_ps((v), (v), 3)

/* The float steps for blocks 0..K-1 of one token, in block order. */
T5 static inline AI void chain_q4(__m512i s, __m128 d, __m128 dm, const kern_block_q8_K *y, int K, __m128 *acc) {
    const __m128 f = q4_f4(s, d, dm);
    *acc = _mm_fmadd_ss(LANE0(f), _mm_set_ss(y[0].d), *acc);
    if (K > 1) *acc = _mm_fmadd_ss(LANE1(f), _mm_set_ss(y[1].d), *acc);
    if (K > 2) *acc = _mm_fmadd_ss(LANE2(f), _mm_set_ss(y[2].d), *acc);
    if (K > 3) *acc = _mm_fmadd_ss(LANE3(f), _mm_set_ss(y[3].d), *acc);
}
T5 static inline AI void chain_q6(__m512i s, __m128 d, __m128 dm, const kern_block_q8_K *y, int K, __m128 *acc) {
    (void)dm;
    const __m128 v = q6_s4(s);
    *acc = _mm_fmadd_ss(LANE0(v), _mm_mul_ss(LANE0(d), _mm_set_ss(y[0].d)), *acc);
    if (K > 1) *acc = _mm_fmadd_ss(LANE1(v), _mm_mul_ss(LANE1(d), _mm_set_ss(y[1].d)), *acc);
    if (K > 2) *acc = _mm_fmadd_ss(LANE2(v), _mm_mul_ss(LANE2(d), _mm_set_ss(y[2].d)), *acc);
    if (K > 3) *acc = _mm_fmadd_ss(LANE3(v), _mm_mul_ss(LANE3(d), _mm_set_ss(y[3].d)), *acc);
}

/* Matrix-vector and tiles of 2-3 tokens: K (1..4) blocks of a row a time,
 * each unpacked once for the NT tokens, then one tree per token over the
 * K blocks. Rows go one at a time, so the weights stream in address
 * order (two rows interleaved are two streams, which lost 15-20% of
 * decode speed on Zen 5 against the hardware prefetchers), with a
 * software prefetch ahead of the row. */
#define MV_KERNEL(T, REG, UNPACK, PART, BT, D4, CHAIN)                                                          \
    T5 static inline AI void mv4_##T(const BT *x, const char *a, size_t ba, int64_t i, const int NT, const int K, \
                                     __m128 *acc) {                                                            \
        __m512i p[3][4];                                                                                       \
        UNROLL for (int b = 0; b < 4; b++) {                                                                   \
            UNROLL for (int t = 0; t < NT; t++) p[t][b] = _mm512_setzero_si512();                              \
            if (b >= K) continue;                                                                              \
            REG u;                                                                                             \
            KERN_PF_BLOCK(&x[b]);                                                                              \
            UNPACK(&x[b], &u);                                                                                 \
            UNROLL for (int t = 0; t < NT; t++) p[t][b] = PART(&u, (const kern_block_q8_K *)(a + t * ba) + i + b); \
        }                                                                                                      \
        __m128 d, dm;                                                                                          \
        D4(x, sizeof(BT), K, &d, &dm);                                                                         \
        UNROLL for (int t = 0; t < NT; t++)                                                                    \
            CHAIN(sum4(p[t][0], p[t][1], p[t][2], p[t][3]), d, dm, (const kern_block_q8_K *)(a + t * ba) + i, K, &acc[t]); \
    }                                                                                                          \
    T5 static inline AI void mv_##T##_nt(int64_t nb, const char *w, size_t bw, int nr, const char *a, size_t ba,  \
                                         const int NT, float *yout, int64_t ldy) {                             \
        for (int r = 0; r < nr; r++) {                                                                         \
            const BT *x = (const void *)(w + r * bw);                                                           \
            __m128 acc[3] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};                            \
            int64_t i = 0;                                                                                     \
            for (; i + 4 <= nb; i += 4) mv4_##T(x + i, a, ba, i, NT, 4, acc);                                  \
            switch (nb - i) {                                                                                  \
            case 3: mv4_##T(x + i, a, ba, i, NT, 3, acc); break;                                               \
            case 2: mv4_##T(x + i, a, ba, i, NT, 2, acc); break;                                               \
            case 1: mv4_##T(x + i, a, ba, i, NT, 1, acc); break;                                               \
            }                                                                                                  \
            UNROLL for (int t = 0; t < NT; t++) yout[t * ldy + r] = _mm_cvtss_f32(acc[t]);                     \
        }                                                                                                      \
    }                                                                                                          \
    T5 static void mv_##T(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc,       \
                          float *yout, int64_t ldy) {                                                          \
        (void)nc;                                                                                              \
        mv_##T##_nt(n / QK_K, w, bw, nr, a, ba, 1, yout, ldy);                                                 \
    }
MV_KERNEL(q4_K, q4preg, q4p_unpack, q4p_part, kern_block_q4_K, d4_q45, chain_q4)
MV_KERNEL(q5_K, q5reg, q5_unpack, q5_part, kern_block_q5_K, d4_q45, chain_q4)
MV_KERNEL(q6_K, q6reg, q6_unpack, q6_part, kern_block_q6_K, d4_q6, chain_q6)

/* Tiles of 4+ tokens: each row block is unpacked once into registers and
 * used for up to KERN_TILE_CMAX tokens, four at a time through the tree
 * (one xmm accumulator per four tokens); 2-3 tokens go through the
 * matrix-vector body above. The token count must be a compile-time
 * constant for the accumulators to live in registers (a runtime count
 * puts them on the stack and the unpacked block with them), so there is
 * one body per count 4..8 and 16: a tile of 5-7 tokens must not be cut
 * into smaller groups, since each group re-reads the
 * weights and a batch of a few decoding conversations (n_tok 2..8) is
 * memory-bound like a single one -- it only stays that cheap if every
 * weight block is read once. Rows go one at a time and the weight stream
 * is prefetched, like the matrix-vector kernels'. */
#define RT_KERNEL(T, REG, UNPACK, TOK4, BT)                                                                     \
    T5 static inline AI void rt_##T##_nc(int64_t nb, const char *w, size_t bw, int nr, const char *a, size_t ba, \
                                         const int NC, float *yout, int64_t ldy) {                              \
        for (int r = 0; r < nr; r++) {                                                                          \
            const BT *x = (const void *)(w + r * bw);                                                           \
            __m128 acc[(NC + 3) / 4];                                                                           \
            UNROLL for (int g = 0; g < (NC + 3) / 4; g++) acc[g] = _mm_setzero_ps();                           \
            for (int64_t i = 0; i < nb; i++) {                                                                  \
                REG u;                                                                                          \
                KERN_PF_BLOCK(&x[i]);                                                                           \
                UNPACK(&x[i], &u);                                                                              \
                UNROLL for (int g = 0; g < (NC + 3) / 4; g++)                                                   \
                    TOK4(&u, a + 4 * g * ba, ba, i, CORE_MIN(4, NC - 4 * g), &acc[g]);                          \
            }                                                                                                   \
            UNROLL for (int g = 0; g < (NC + 3) / 4; g++) {                                                     \
                float v[4];                                                                                     \
                _mm_storeu_ps(v, acc[g]);                                                                       \
                UNROLL for (int t = 0; t < 4; t++) if (4 * g + t < NC) yout[(4 * g + t) * ldy + r] = v[t];     \
            }                                                                                                   \
        }                                                                                                       \
    }                                                                                                           \
    T5 static void rt_##T(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc,          \
                          float *yout, int64_t ldy) {                                                           \
        const int64_t nb = n / QK_K;                                                                           \
        const char *ac = a;                                                                                     \
        while (nc > 0) {                                                                                        \
            const int g = nc >= 16 ? 16 : nc > 8 ? 8 : nc;                                                      \
            switch (g) {                                                                                        \
            case 16: rt_##T##_nc(nb, w, bw, nr, ac, ba, 16, yout, ldy); break;                                  \
            case 8: rt_##T##_nc(nb, w, bw, nr, ac, ba, 8, yout, ldy); break;                                    \
            case 7: rt_##T##_nc(nb, w, bw, nr, ac, ba, 7, yout, ldy); break;                                    \
            case 6: rt_##T##_nc(nb, w, bw, nr, ac, ba, 6, yout, ldy); break;                                    \
            case 5: rt_##T##_nc(nb, w, bw, nr, ac, ba, 5, yout, ldy); break;                                    \
            case 4: rt_##T##_nc(nb, w, bw, nr, ac, ba, 4, yout, ldy); break;                                    \
            case 3: mv_##T##_nt(nb, w, bw, nr, ac, ba, 3, yout, ldy); break;                                    \
            case 2: mv_##T##_nt(nb, w, bw, nr, ac, ba, 2, yout, ldy); break;                                    \
            default: mv_##T(n, w, bw, nr, ac, ba, 1, yout, ldy); break;                                         \
            }                                                                                                   \
            nc -= g, ac += g * ba, yout += g * ldy;                                                             \
        }                                                                                                       \
    }

RT_KERNEL(q4_K, q4preg, q4p_unpack, q4p_tok4, kern_block_q4_K)
RT_KERNEL(q5_K, q5reg, q5_unpack, q5_tok4, kern_block_q5_K)
RT_KERNEL(q6_K, q6reg, q6_unpack, q6_tok4, kern_block_q6_K)

/* vec_dot takes the activations as quantized: four blocks at a time
 * permuted into a copy, in the matrix-vector kernel's order of sums. */
T5 static void dot_q4_K(int64_t n, float *s, const void *w, const void *a) {
    const int64_t nb = n / QK_K;
    __m128 acc = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i += 4) {
        const int k = (int)CORE_MIN(4, nb - i);
        kern_block_q8_K y[4];
        memcpy(y, (const kern_block_q8_K *)a + i, (size_t)k * sizeof *y);
        q4_perm(y, sizeof *y, 1, k * QK_K);
        mv4_q4_K((const kern_block_q4_K *)w + i, (const char *)y, 0, 0, 1, k, &acc);
    }
    *s = _mm_cvtss_f32(acc);
}
T5 static void dot_q5_K(int64_t n, float *s, const void *w, const void *a) { mv_q5_K(n, w, 0, 1, a, 0, 1, s, 1); }
T5 static void dot_q6_K(int64_t n, float *s, const void *w, const void *a) { mv_q6_K(n, w, 0, 1, a, 0, 1, s, 1); }

/* ---- Wide tiles (prefill): 16 rows in the lanes, vpdpbusd ----
 *
 * The tiles above pay, per 64 weights and token, a vpmaddubsw and a
 * vpdpwssd plus a float epilogue per block and token. Here one zmm holds
 * 4 consecutive weights of 16 rows (lane r = row r), so one vpdpbusd
 * (u8 weights x s8 activations, 4 products summed per int32 lane) does 64
 * multiply-adds with the 4 activation bytes of one token broadcast from
 * memory ({1to16}): no unpacking per token, no horizontal sum at the end
 * (the 16 lanes are 16 outputs, stored with one masked store).
 *
 * Per call (16 rows x up to KERN_WIDE_C tokens), K goes by slabs: the 16
 * rows' blocks of a slab are repacked into a stack buffer (16-row loads
 * and a dword transpose), then every token runs over the slab, 8 tokens
 * at a time so that each weight vector loaded from L1 serves 8 vpdpbusd
 * (the rest of the tokens in one pass of their own count). Each slab
 * carries on the sums in y (the first one starts them), block after
 * block, so a token's result does not depend on the slab size or on the
 * tokens beside it. A slab is WIDE_SLAB blocks, but one up to WIDE_SLAB1
 * tokens: with the next slab's prefetched rows and the activations, 4
 * repacked blocks overflow L1, which only many tokens a slab pay back
 * (docs/performance.md). The repack costs about as much as a few tokens:
 * below wide_min (batched decode) the register tiles above, which read
 * each block once for all of them, are faster.
 *
 * Q4_K: per 16 weights (half a sub-block) P = sum q * a, |P| <= 16*15*128
 * fits int16, so one vpdpwssd against (scale, 0) per lane adds scale * P
 * into an exact int32 sum (the 32-bit lane's high half is P's sign, times
 * 0). Mins: sum_j m_j * (bsums[2j] + bsums[2j+1]) by one vpdpwssd per j
 * with (m_j, m_j) per lane and the two bsums broadcast as one dword. Per
 * block and token: y += y.d * (d * isum - dmin * msum).
 * Q6_K: weights stay unsigned (q, 0..63); per sub-block of 16 P = sum q*a
 * (up to 16*63*128, past int16) times scale_j by vpmulld into an exact
 * int32 sum; the -32 offset is -32 sum_j scale_j * bsums[j] (vpdpwssd
 * with scale pairs, the bsums pair broadcast). Per block and token:
 * y += cvt(isum) * (d * y.d).
 * These are the float steps of the register kernels ("One float order"),
 * so a token gets the same bits from either; only the float order
 * differs from ref.c.
 * Rows past nr repeat row nr-1 (valid memory); their lanes are not stored.
 */
#define WIDE_SLAB 4   /* blocks per repack from WIDE_SLAB1 + 1 tokens: 4 x 5 KB */
#define WIDE_SLAB1 32 /* up to this many tokens, one block per repack */
#define WIDE_T 8      /* tokens per pass over a slab */

T5 static inline __m512i bcast32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* vindex of the gathers: byte offset of row min(r, nr-1) */
T5 static inline __m512i wide_rows(size_t bw, int nr) {
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    return _mm512_mullo_epi32(_mm512_min_epi32(iota, _mm512_set1_epi32(nr - 1)), _mm512_set1_epi32((int)bw));
}
#define GATHER(vi, p) _mm512_i32gather_epi32((vi), (const void *)(p), 1)

/* v[m] lane r = dword m of the 64 bytes at row r + off: 16 loads and a
 * 16 x 16 dword transpose (64 shuffles), about a third of the time of the
 * 16 gathers it replaces. Rows past nr repeat row nr-1, as wide_rows. */
T5 static inline AI void wide_load_t(const char *x, size_t bw, int nr, size_t off, __m512i v[16]) {
    __m512i t[16], u[16];
    UNROLL for (int r = 0; r < 16; r++) t[r] = _mm512_loadu_si512((const void *)(x + (size_t)(r < nr ? r : nr - 1) * bw + off));
    UNROLL for (int i = 0; i < 8; i++) {
        u[2 * i] = _mm512_unpacklo_epi32(t[2 * i], t[2 * i + 1]);
        u[2 * i + 1] = _mm512_unpackhi_epi32(t[2 * i], t[2 * i + 1]);
    }
    /* t[4j + k]: 128-bit chunk L holds dword 4L + k of rows 4j..4j+3 */
    UNROLL for (int j = 0; j < 4; j++) {
        t[4 * j] = _mm512_unpacklo_epi64(u[4 * j], u[4 * j + 2]);
        t[4 * j + 1] = _mm512_unpackhi_epi64(u[4 * j], u[4 * j + 2]);
        t[4 * j + 2] = _mm512_unpacklo_epi64(u[4 * j + 1], u[4 * j + 3]);
        t[4 * j + 3] = _mm512_unpackhi_epi64(u[4 * j + 1], u[4 * j + 3]);
    }
    /* then a 4 x 4 transpose of 128-bit chunks for each k */
    UNROLL for (int k = 0; k < 4; k++) {
        const __m512i v0 = _mm512_shuffle_i32x4(t[k], t[4 + k], 0x44), v1 = _mm512_shuffle_i32x4(t[k], t[4 + k], 0xEE);
        const __m512i v2 = _mm512_shuffle_i32x4(t[8 + k], t[12 + k], 0x44), v3 = _mm512_shuffle_i32x4(t[8 + k], t[12 + k], 0xEE);
        v[k] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        v[4 + k] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
        v[8 + k] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        v[12 + k] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
    }
}

/* One Q4_K block of 16 rows: w[g] = weights 4g..4g+3 of each row */
typedef struct {
    __m512i w[64], sc[8], mn[8];
    __m512 d, dm;
} wq4;

/* h[k] lane r = dword k of the 16 bytes at x in row r (rows past nr
 * repeat row nr-1): 16 loads of 128 bits and a 4 x 4 dword transpose
 * inside each 128-bit lane, in place of 4 gathers (docs/performance.md).
 * Register i holds row 4L + i in lane L, so the transpose leaves the rows
 * in order. */
T5 static inline AI void wide_head_t(const char *x, size_t bw, int nr, __m512i h[4]) {
    __m512i t[4];
    UNROLL for (int i = 0; i < 4; i++) {
        const char *r[4];
        for (int l = 0; l < 4; l++) r[l] = x + (size_t)CORE_MIN(4 * l + i, nr - 1) * bw;
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)r[0]));
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)r[1]), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)r[2]), 2);
        t[i] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)r[3]), 3);
    }
    const __m512i u0 = _mm512_unpacklo_epi32(t[0], t[1]), u1 = _mm512_unpackhi_epi32(t[0], t[1]);
    const __m512i u2 = _mm512_unpacklo_epi32(t[2], t[3]), u3 = _mm512_unpackhi_epi32(t[2], t[3]);
    h[0] = _mm512_unpacklo_epi64(u0, u2), h[1] = _mm512_unpackhi_epi64(u0, u2);
    h[2] = _mm512_unpacklo_epi64(u1, u3), h[3] = _mm512_unpackhi_epi64(u1, u3);
}

/* d, dmin and the 6-bit scales and mins (k_sm) of a Q4_K block of 16
 * rows: lane r of s03 holds row r's scales 0-3 as bytes, s47 scales 4-7,
 * n03 and n47 the mins. */
T5 static inline AI void wide_scales_q4(const char *x, size_t bw, int nr, __m512 *d, __m512 *dm, __m512i *s03,
                                        __m512i *s47, __m512i *n03, __m512i *n47) {
    __m512i h[4];
    wide_head_t(x, bw, nr, h);
    const __m512i dd = h[0];
    *d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
    *dm = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
    const __m512i u0 = h[1], u1 = h[2], u2 = h[3];
    const __m512i m1 = _mm512_set1_epi32(0x3f3f3f3f), m2 = _mm512_set1_epi32(0x0f0f0f0f), m3 = _mm512_set1_epi32(0x03030303);
    *s03 = _mm512_and_si512(u0, m1), *n03 = _mm512_and_si512(u1, m1);
    *s47 = _mm512_or_si512(_mm512_and_si512(u2, m2), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), m3), 4));
    *n47 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), m2),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), m3), 4));
}

T5 static void wide_pack_q4(const char *x, size_t bw, int nr, __m512i vi, wq4 *p) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    /* qs dword 8c+m: low nibbles are weights 64c+4m.., high ones 64c+32+4m.. */
    for (int h = 0; h < 2; h++) {
        __m512i g[16];
        wide_load_t(x, bw, nr, 16 + 64 * (size_t)h, g);
        UNROLL for (int q = 0; q < 16; q++) {
            const int c = 2 * h + q / 8, m = q % 8;
            p->w[16 * c + m] = _mm512_and_si512(g[q], m4);
            p->w[16 * c + 8 + m] = _mm512_and_si512(_mm512_srli_epi32(g[q], 4), m4);
        }
    }
    __m512i s03, s47, n03, n47;
    wide_scales_q4(x, bw, nr, &p->d, &p->dm, &s03, &s47, &n03, &n47);
    const __m512i ff = _mm512_set1_epi32(0xFF);
    UNROLL for (int j = 0; j < 4; j++) {
        p->sc[j] = _mm512_and_si512(_mm512_srli_epi32(s03, 8 * j), ff);
        p->sc[4 + j] = _mm512_and_si512(_mm512_srli_epi32(s47, 8 * j), ff);
        const __m512i a = _mm512_and_si512(_mm512_srli_epi32(n03, 8 * j), ff);
        const __m512i b = _mm512_and_si512(_mm512_srli_epi32(n47, 8 * j), ff);
        p->mn[j] = _mm512_or_si512(a, _mm512_slli_epi32(a, 16));
        p->mn[4 + j] = _mm512_or_si512(b, _mm512_slli_epi32(b, 16));
    }
}

/* tokens t0..t0+T over blocks i0..i0+S of the slab p */
T5 static inline AI void wide_run_q4(const wq4 *p, int S, const char *a, size_t ba, int64_t i0, const int T, float *y,
                                     int64_t ldy, __mmask16 mk, int first) {
    __m512 acc[WIDE_T];
    UNROLL for (int t = 0; t < T; t++) acc[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk, y + t * ldy);
    for (int b = 0; b < S; b++) {
        const kern_block_q8_K *yb[WIDE_T];
        UNROLL for (int t = 0; t < T; t++) yb[t] = (const kern_block_q8_K *)(a + t * ba) + i0 + b;
        __m512i is[WIDE_T], P[WIDE_T];
        UNROLL for (int t = 0; t < T; t++) is[t] = _mm512_setzero_si512();
        for (int j = 0; j < 8; j++) {
            const __m512i sc = p[b].sc[j];
            UNROLL for (int h = 0; h < 2; h++) {
                UNROLL for (int t = 0; t < T; t++) P[t] = zero_acc();
                UNROLL for (int q = 0; q < 4; q++) {
                    const int g = 8 * j + 4 * h + q;
                    const __m512i wv = p[b].w[g];
                    UNROLL for (int t = 0; t < T; t++) P[t] = _mm512_dpbusd_epi32(P[t], wv, bcast32(yb[t]->qs + 4 * g));
                }
                UNROLL for (int t = 0; t < T; t++) is[t] = _mm512_dpwssd_epi32(is[t], P[t], sc);
            }
        }
        UNROLL for (int t = 0; t < T; t++) P[t] = _mm512_setzero_si512();
        UNROLL for (int j = 0; j < 8; j++) {
            const __m512i mn = p[b].mn[j];
            UNROLL for (int t = 0; t < T; t++) P[t] = _mm512_dpwssd_epi32(P[t], mn, bcast32(yb[t]->bsums + 2 * j));
        }
        UNROLL for (int t = 0; t < T; t++) {
            __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(is[t]), p[b].d);
            f = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(P[t]), p[b].dm, f);
            acc[t] = _mm512_fmadd_ps(f, _mm512_set1_ps(yb[t]->d), acc[t]);
        }
    }
    UNROLL for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + t * ldy, mk, acc[t]);
}

/* One Q6_K block of 16 rows: w[g] = weights 4g..4g+3 (q, unsigned), sc[j]
 * = scale_j, sp[k] = (scale_2k, scale_2k+1) as int16 pairs, d */
typedef struct {
    __m512i w[64], sc[16], sp[8];
    __m512 d;
} wq6;

T5 static void wide_pack_q6(const char *x, size_t bw, int nr, __m512i vi, wq6 *p) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    /* weight k = 128h + 64l + 4m + e (m < 16): ql[64h + 4m + e] nibble l,
     * qh[32h + 4(m & 7) + e] bits 2(2l + m/8) */
    __m512i qh[16];
    wide_load_t(x, bw, nr, 128, qh);
    for (int h = 0; h < 2; h++) {
        __m512i ql[16];
        wide_load_t(x, bw, nr, 64 * (size_t)h, ql);
        UNROLL for (int m = 0; m < 16; m++) {
            const __m512i hv = qh[8 * h + (m & 7)];
            /* the 2 high bits sit at bit 2(m/8) (l = 0) and 2(m/8) + 4 (l = 1)
             * of each byte; move them to bits 4-5 (spill-over is masked off) */
            const __m512i h0 = m < 8 ? _mm512_slli_epi32(hv, 4) : _mm512_slli_epi32(hv, 2);
            const __m512i h1 = m < 8 ? hv : _mm512_srli_epi32(hv, 2);
            p->w[32 * h + m] = _mm512_ternarylogic_epi32(ql[m], _mm512_and_si512(h0, m30), m4, SEL_AC_B);
            p->w[32 * h + 16 + m] = _mm512_ternarylogic_epi32(_mm512_srli_epi32(ql[m], 4), _mm512_and_si512(h1, m30), m4, SEL_AC_B);
        }
    }
    p->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(GATHER(vi, x + 206), 16)));
    __m512i s[4];
    wide_head_t(x + 192, bw, nr, s);
    UNROLL for (int k = 0; k < 4; k++)
        UNROLL for (int e = 0; e < 4; e++) p->sc[4 * k + e] = _mm512_srai_epi32(_mm512_slli_epi32(s[k], 24 - 8 * e), 24);
    UNROLL for (int k = 0; k < 8; k++)
        p->sp[k] = _mm512_or_si512(_mm512_and_si512(p->sc[2 * k], _mm512_set1_epi32(0xFFFF)), _mm512_slli_epi32(p->sc[2 * k + 1], 16));
}

T5 static inline AI void wide_run_q6(const wq6 *p, int S, const char *a, size_t ba, int64_t i0, const int T, float *y,
                                     int64_t ldy, __mmask16 mk, int first) {
    __m512 acc[WIDE_T];
    UNROLL for (int t = 0; t < T; t++) acc[t] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk, y + t * ldy);
    for (int b = 0; b < S; b++) {
        const kern_block_q8_K *yb[WIDE_T];
        UNROLL for (int t = 0; t < T; t++) yb[t] = (const kern_block_q8_K *)(a + t * ba) + i0 + b;
        __m512i is[WIDE_T], P[WIDE_T];
        UNROLL for (int t = 0; t < T; t++) is[t] = _mm512_setzero_si512();
        for (int j = 0; j < 16; j++) {
            UNROLL for (int t = 0; t < T; t++) P[t] = zero_acc();
            UNROLL for (int q = 0; q < 4; q++) {
                const int g = 4 * j + q;
                const __m512i wv = p[b].w[g];
                UNROLL for (int t = 0; t < T; t++) P[t] = _mm512_dpbusd_epi32(P[t], wv, bcast32(yb[t]->qs + 4 * g));
            }
            const __m512i sc = p[b].sc[j];
            UNROLL for (int t = 0; t < T; t++) is[t] = _mm512_add_epi32(is[t], _mm512_mullo_epi32(P[t], sc));
        }
        UNROLL for (int t = 0; t < T; t++) P[t] = _mm512_setzero_si512();
        UNROLL for (int k = 0; k < 8; k++) {
            const __m512i sp = p[b].sp[k];
            UNROLL for (int t = 0; t < T; t++) P[t] = _mm512_dpwssd_epi32(P[t], sp, bcast32(yb[t]->bsums + 2 * k));
        }
        UNROLL for (int t = 0; t < T; t++) {
            const __m512i S = _mm512_sub_epi32(is[t], _mm512_slli_epi32(P[t], 5));
            const __m512 dy = _mm512_mul_ps(p[b].d, _mm512_set1_ps(yb[t]->d));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(S), dy, acc[t]);
        }
    }
    UNROLL for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + t * ldy, mk, acc[t]);
}

/* The next slab's bytes of each row, asked for while this slab is packed
 * and run (after the last slab, the first one of the 16 rows below, which
 * the caller's next call reads; prefetches never fault, so rows past the
 * matrix cost nothing): 16 row streams are more than the hardware
 * prefetchers follow, and without this the loads of the repack waited for
 * memory. */
T5 static inline void wide_prefetch(const char *x, size_t bw, int64_t bytes) {
    for (int r = 0; r < KERN_WIDE_R; r++)
        for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(x + (size_t)r * bw + o, _MM_HINT_T0);
}

#define WIDE_KERNEL(T, PT, BT)                                                                                  \
    T5 static void wide_##T(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc,       \
                            float *y, int64_t ldy) {                                                          \
        const int64_t nb = n / QK_K;                                                                           \
        const __mmask16 mk = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);                      \
        const __m512i vi = wide_rows(bw, nr);                                                                  \
        _Alignas(64) PT buf[WIDE_SLAB];                                                                        \
        const int slab = nc <= WIDE_SLAB1 ? 1 : WIDE_SLAB;                                                     \
        for (int64_t i0 = 0; i0 < nb; i0 += slab) {                                                            \
            const int S = (int)CORE_MIN(slab, nb - i0);                                                        \
            if (i0 + S < nb)                                                                                   \
                wide_prefetch((const char *)w + (i0 + S) * sizeof(BT), bw, CORE_MIN(slab, nb - i0 - S) * sizeof(BT));   \
            else /* the next call's: the 16 rows below, from their start */                                     \
                wide_prefetch((const char *)w + KERN_WIDE_R * bw, bw, CORE_MIN(slab, nb) * sizeof(BT));        \
            for (int b = 0; b < S; b++) wide_pack_##T((const char *)w + (i0 + b) * sizeof(BT), bw, nr, vi, &buf[b]);  \
            for (int t0 = 0; t0 < nc;) { /* 8 tokens a pass, the rest in one */                               \
                const int tn = CORE_MIN(WIDE_T, nc - t0);                                                      \
                const char *at = (const char *)a + t0 * ba;                                                    \
                float *yt = y + t0 * ldy;                                                                      \
                switch (tn) { /* a constant count each: 7 as 4 + 2 + 1 loaded every weight thrice */            \
                case 8: wide_run_##T(buf, S, at, ba, i0, 8, yt, ldy, mk, i0 == 0); break;                      \
                case 7: wide_run_##T(buf, S, at, ba, i0, 7, yt, ldy, mk, i0 == 0); break;                      \
                case 6: wide_run_##T(buf, S, at, ba, i0, 6, yt, ldy, mk, i0 == 0); break;                      \
                case 5: wide_run_##T(buf, S, at, ba, i0, 5, yt, ldy, mk, i0 == 0); break;                      \
                case 4: wide_run_##T(buf, S, at, ba, i0, 4, yt, ldy, mk, i0 == 0); break;                      \
                case 3: wide_run_##T(buf, S, at, ba, i0, 3, yt, ldy, mk, i0 == 0); break;                      \
                case 2: wide_run_##T(buf, S, at, ba, i0, 2, yt, ldy, mk, i0 == 0); break;                      \
                default: wide_run_##T(buf, S, at, ba, i0, 1, yt, ldy, mk, i0 == 0); break;                     \
                }                                                                                              \
                t0 += tn;                                                                                      \
            }                                                                                                  \
        }                                                                                                      \
    }
WIDE_KERNEL(q4, wq4, kern_block_q4_K)
WIDE_KERNEL(q6, wq6, kern_block_q6_K)

/* ---- Q4_K wide tile on AMX (Sapphire Rapids on) ----
 *
 * tdpbusd multiplies a tile of 16 rows x 64 u8 (A) by one of 64 x 16 s8
 * held as 16 rows of 4-byte groups (B), into 16 x 16 int32 (C): 16K
 * multiply-adds an instruction. A is 16 weight rows as they lie (64
 * weights of a row, unpacked from nibbles); B is 16 tokens' activations,
 * which kern_matmul prepares once per call in that layout (amx_prep_q8_K)
 * with, per block, each token's scale and its sub-block sums. C[r][t] is
 * then the sum for weight row r and token t.
 *
 * The sub-block scales stay exact integers: a scale sc (6 bits) is
 * 8 sh + sl (3 bits each), and q * sl, q * sh <= 15 * 7 fit a byte, so with
 * A1 = q * sl and A2 = q * sh the block's sum over all its sub-blocks is
 * C1 + 8 C2, two C tiles accumulating over the 256 values of a block. A
 * vpmullw makes the byte products: q0 + 256 q1 times a 16-bit sl is
 * q0 sl + 256 q1 sl without a carry between the bytes. The mins' sum
 * M = sum m_j * (token's sub-block sum j) is exact too (vpdpwssd on pairs
 * of sub-blocks), so per block, row and token the float epilogue is the
 * other kernels' ("One float order" above): f = S d, f -= M dmin,
 * acc += f y.d, over the 16 tokens of a zmm; a token's outputs are the
 * same bits whichever kernel read it and beside whichever tokens.
 *
 * Tiles: A1, A2 in tmm0/1, B in tmm2, C1, C2 in tmm4/5, all 16 rows of
 * 64 bytes; a short group is padded (its columns past the tokens are not
 * stored). The tile state is released at the end of each call. */
#define TA __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))

#ifdef KERN_AMX_EMU
#include "kern/amx_emu.h" /* tests on CPUs without AMX */
#else
/* not _tile_loadconfig, whose operand in gcc 12 is the first 8 bytes only */
#define AMX_LOADCFG(cfg) __asm__ volatile("ldtilecfg %0" : : "m"(*(cfg)))
#endif

/* A prepared block: B tiles of the 4 chunks of 64 values, then the 16
 * tokens' scales, then their 8 sub-block sums as int16 pairs (sub-blocks
 * 2k and 2k+1 in dword k: |sum| <= 32 * 127). */
typedef struct {
    uint8_t b[4][16][64];
    float d[16];
    int32_t bs[4][16];
} amx_pblock;
static_assert(sizeof(amx_pblock) % 64 == 0, "prepared blocks stay 64-byte aligned");

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;
static_assert(sizeof(amx_cfg) == 64, "AMX tile configuration");

TA static void amx_prep_q8_K(const void *a, size_t ba, int nt, int64_t n, void *out) {
    const int64_t nb = n / QK_K;
    amx_pblock *o = out;
    for (int64_t i = 0; i < nb; i++, o++) {
        const char *x = (const char *)a + i * sizeof(kern_block_q8_K);
        for (int m = 0; m < 4; m++) {
            __m512i v[16];
            wide_load_t(x, ba, nt, offsetof(kern_block_q8_K, qs) + 64 * (size_t)m, v);
            for (int q = 0; q < 16; q++) _mm512_store_si512((void *)o->b[m][q], v[q]);
        }
        memset(o->d, 0, sizeof o->d); /* tokens past nt: nothing */
        memset(o->bs, 0, sizeof o->bs);
        for (int t = 0; t < nt; t++) {
            const kern_block_q8_K *y = (const kern_block_q8_K *)(x + (size_t)t * ba);
            o->d[t] = y->d;
            for (int k = 0; k < 4; k++) {
                const int lo = y->bsums[4 * k] + y->bsums[4 * k + 1], hi = y->bsums[4 * k + 2] + y->bsums[4 * k + 3];
                o->bs[k][t] = (int32_t)((uint32_t)(uint16_t)lo | (uint32_t)hi << 16);
            }
        }
    }
}

/* One block of 16 weight rows: A1/A2 per chunk, the rows' d and dmin,
 * and their mins m_j as int16 pairs like the tokens' sums (mn[k][r] =
 * m_2k + m_2k+1 << 16). Rows past nr repeat row nr-1. */
typedef struct {
    uint8_t a1[4][16][64], a2[4][16][64];
    float d[16], dmin[16];
    int32_t mn[4][16];
} amx_wblock;

TA static void amx_unpack_q4(const char *w, size_t bw, int nr, int64_t i, amx_wblock *u) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const char *x = w + i * sizeof(kern_block_q4_K);
    __m512 d, dmin;
    __m512i s03, s47, n03, n47;
    wide_scales_q4(x, bw, nr, &d, &dmin, &s03, &s47, &n03, &n47);
    _mm512_store_ps(u->d, d);
    _mm512_store_ps(u->dmin, dmin);
    /* bytes 2k and 2k+1 of a dword (m_2k, m_2k+1) to its two words */
    const __m512i b0 = _mm512_set1_epi32(0xFF), b1 = _mm512_set1_epi32(0xFF00);
    UNROLL for (int k = 0; k < 2; k++) {
        const __m512i a = _mm512_srli_epi32(n03, 16 * k), b = _mm512_srli_epi32(n47, 16 * k);
        _mm512_store_si512((void *)u->mn[k], _mm512_or_si512(_mm512_and_si512(a, b0), _mm512_slli_epi32(_mm512_and_si512(a, b1), 8)));
        _mm512_store_si512((void *)u->mn[2 + k], _mm512_or_si512(_mm512_and_si512(b, b0), _mm512_slli_epi32(_mm512_and_si512(b, b1), 8)));
    }
    /* row r's 8 scales as bytes: dword r of s03, then of s47 */
    _Alignas(64) uint32_t lo[16], hi[16];
    _mm512_store_si512((void *)lo, s03);
    _mm512_store_si512((void *)hi, s47);
    for (int r = 0; r < 16; r++) {
        const kern_block_q4_K *b = (const kern_block_q4_K *)(w + (size_t)(r < nr ? r : nr - 1) * bw) + i;
        const __m512i S = _mm512_castsi128_si512(_mm_cvtsi64_si128((long long)((uint64_t)hi[r] << 32 | lo[r])));
        const __m512i SL = _mm512_and_si512(S, _mm512_set1_epi8(7));
        const __m512i SH = _mm512_and_si512(_mm512_srli_epi16(S, 3), _mm512_set1_epi8(7));
        UNROLL for (int m = 0; m < 4; m++) {
            const __m256i X = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * m));
            const __m512i Q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(X, m4)),
                                                 _mm256_and_si256(_mm256_srli_epi16(X, 4), m4), 1);
            /* chunk m's multipliers: sub-block 2m's scale in the low 256 bits,
             * 2m+1's in the high, one per 16-bit word (odd bytes zeroed) */
            const __m512i I = _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16((short)(2 * m)), _mm512_set1_epi16((short)(2 * m + 1)));
            _mm512_store_si512((void *)u->a1[m][r], _mm512_mullo_epi16(Q, _mm512_maskz_permutexvar_epi8(0x5555555555555555ull, I, SL)));
            _mm512_store_si512((void *)u->a2[m][r], _mm512_mullo_epi16(Q, _mm512_maskz_permutexvar_epi8(0x5555555555555555ull, I, SH)));
        }
    }
}

TA static void amx_q4(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc, float *y,
                      int64_t ldy) {
    const int64_t nb = n / QK_K;
    const int ng = (nc + 15) / 16;
    _Alignas(64) amx_wblock u;
    _Alignas(64) int32_t c[2][16][16];
    _Alignas(64) float acc[KERN_WIDE_C / 16][16][16];
    /* tmm0-2 and tmm4-5, 16 rows of 64 bytes */
    static const _Alignas(64) amx_cfg cfg = {.palette = 1, .colsb = {64, 64, 64, 0, 64, 64}, .rows = {16, 16, 16, 0, 16, 16}};
    AMX_LOADCFG(&cfg);
    memset(acc, 0, sizeof(float) * 256 * (size_t)ng);
    for (int64_t i = 0; i < nb; i++) {
        if (i + 1 < nb) wide_prefetch((const char *)w + (i + 1) * sizeof(kern_block_q4_K), bw, sizeof(kern_block_q4_K));
        amx_unpack_q4(w, bw, nr, i, &u);
        for (int g = 0; g < ng; g++) {
            const amx_pblock *p = (const amx_pblock *)((const char *)a + g * ba) + i;
            _tile_zero(4);
            _tile_zero(5);
            for (int m = 0; m < 4; m++) {
                _tile_loadd(0, u.a1[m], 64);
                _tile_loadd(1, u.a2[m], 64);
                _tile_loadd(2, p->b[m], 64);
                _tile_dpbusd(4, 0, 2);
                _tile_dpbusd(5, 1, 2);
            }
            _tile_stored(4, c[0], 64);
            _tile_stored(5, c[1], 64);
            __m512i bs[4];
            UNROLL for (int k = 0; k < 4; k++) bs[k] = _mm512_load_si512((const void *)p->bs[k]);
            const __m512 yd = _mm512_load_ps(p->d);
            for (int r = 0; r < nr; r++) {
                const __m512i is = _mm512_add_epi32(_mm512_load_si512((const void *)c[0][r]),
                                                    _mm512_slli_epi32(_mm512_load_si512((const void *)c[1][r]), 3));
                __m512i M = _mm512_setzero_si512();
                UNROLL for (int k = 0; k < 4; k++) M = _mm512_dpwssd_epi32(M, _mm512_set1_epi32(u.mn[k][r]), bs[k]);
                __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(u.d[r]));
                f = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(M), _mm512_set1_ps(u.dmin[r]), f);
                _mm512_store_ps(acc[g][r], _mm512_fmadd_ps(f, yd, _mm512_load_ps(acc[g][r])));
            }
        }
    }
    _tile_release();
    const __mmask16 mk = nr >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nr) - 1);
    for (int g = 0; g < ng; g++) { /* acc[g] is rows x tokens, y tokens x rows */
        __m512i v[16];
        wide_load_t((const char *)acc[g], 64, 16, 0, v);
        for (int t = 0; t < 16 && 16 * g + t < nc; t++) _mm512_mask_storeu_ps(y + (16 * g + t) * ldy, mk, _mm512_castsi512_ps(v[t]));
    }
}

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

/* ---- attention over f16 KV (decode at depth) ----
 *
 * The AVX2 kernel (avx2.c) spends most of its time on 8-wide work: a
 * horizontal sum per (head, position) score, and per V row 16 conversions
 * and 64 fmadds at hd 128. Here, for f16 rows with hd a multiple of 16 (up
 * to 256), per block of KERN_ATTN_BLOCK positions:
 *   - scores: the K row is converted once into hd/16 zmm and kept there;
 *     4 query heads' products (q read from L1) are reduced together by a
 *     transpose-and-add tree, 4 scores from about 9 shuffles and adds;
 *   - softmax: 16 scores per step (exp16, the exp8 of avx2.c widened);
 *   - V: 32 dims outer (16 for a last odd chunk), positions inner, 4
 *     heads' accumulators in registers, each weight broadcast once for
 *     both chunks (pv_step).
 * Same blocking and same online-softmax order as kern_ref_attn; only float
 * order differs. Other shapes (f32 rows, odd hd) keep the AVX2 kernel. */
typedef void (*attn_fn)(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride,
                        int n, float scale, float *m, float *l, float *acc);
static attn_fn attn_prev; /* the AVX2 kernel, set by kern_avx512_install */

#define ATT_PF 8 /* positions of K prefetched ahead */

T5 static inline __m512 exp16(__m512 x) {
    const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500E-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    /* 2^n in two steps so that n = 128 (x near 88.7) does not overflow the exponent */
    const __m512i ni = _mm512_cvtps_epi32(n);
    const __m512i e1 = _mm512_srai_epi32(ni, 1), e2 = _mm512_sub_epi32(ni, e1);
    const __m512 s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e1, _mm512_set1_epi32(127)), 23));
    const __m512 s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e2, _mm512_set1_epi32(127)), 23));
    return _mm512_maskz_mul_ps((__mmask16)~under, _mm512_mul_ps(p, s1), s2);
}

/* [sum a0, sum a1, sum a2, sum a3] */
T5 static inline __m128 hsum4x16(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1)); /* a0 a0 a1 a1 per lane */
    const __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    const __m512 t = _mm512_add_ps(_mm512_shuffle_ps(t0, t1, 0x44), _mm512_shuffle_ps(t0, t1, 0xEE)); /* a0 a1 a2 a3 */
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(t), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* 16 values of an f16 KV row from value i on (i % 16 == 0) */
T5 static inline AI __m512 f16x16(const char *row, int i) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * (size_t)i)));
}

/* One online-softmax step over the scores s[g][0..np) (kern_ref_attn's
 * ref_softmax_step): s becomes the weights, exactly 0 past np. */
T5 static inline AI void softmax_step(float s[][KERN_ATTN_BLOCK], int ng, int hd, int np, float *m, float *l,
                                      float *acc) {
    const __mmask16 tail = np >= 16 ? (__mmask16)((np >= 32 ? 0xffffu : (1u << (np - 16)) - 1)) : 0;
    const __mmask16 head = np >= 16 ? 0xffff : (__mmask16)((1u << np) - 1);
    for (int g = 0; g < ng; g++) {
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        const __m512 x0 = _mm512_mask_loadu_ps(ninf, head, s[g]), x1 = _mm512_mask_loadu_ps(ninf, tail, s[g] + 16);
        const float bm = fmaxf(m[g], _mm512_reduce_max_ps(_mm512_max_ps(x0, x1)));
        if (bm != m[g]) { /* the max grew: rescale what we have */
            const float r = expf(m[g] - bm);
            l[g] *= r;
            const __m512 rv = _mm512_set1_ps(r);
            float *ag = acc + (size_t)g * hd;
            for (int i = 0; i < hd; i += 16) _mm512_storeu_ps(ag + i, _mm512_mul_ps(_mm512_loadu_ps(ag + i), rv));
            m[g] = bm;
        }
        const __m512 bv = _mm512_set1_ps(bm);
        const __m512 e0 = exp16(_mm512_sub_ps(x0, bv)), e1 = exp16(_mm512_sub_ps(x1, bv));
        _mm512_store_ps(s[g], e0), _mm512_store_ps(s[g] + 16, e1);
        l[g] += _mm512_reduce_add_ps(_mm512_add_ps(e0, e1));
    }
}

/* acc[g][i .. i + 16C) += sum_j w[g][j] v_j over np V rows, for 4 heads:
 * 4C independent sums (two 16-value chunks keep 8 fmadds in flight
 * where 4 waited on each other); each sum's order is the same either
 * way. */
T5 static inline AI void pv_step(float *const ap[4], const float *const w[4], const char *vr, size_t stride, int np,
                                 int i, const int C) {
    __m512 a[2][4];
    UNROLL for (int c = 0; c < C; c++)
        UNROLL for (int g = 0; g < 4; g++) a[c][g] = _mm512_loadu_ps(ap[g] + i + 16 * c);
    for (int j = 0; j < np; j++, vr += stride) {
        __m512 x[2];
        UNROLL for (int c = 0; c < C; c++) x[c] = f16x16(vr, i + 16 * c);
        UNROLL for (int g = 0; g < 4; g++) {
            const __m512 wg = _mm512_set1_ps(w[g][j]);
            UNROLL for (int c = 0; c < C; c++) a[c][g] = _mm512_fmadd_ps(wg, x[c], a[c][g]);
        }
    }
    UNROLL for (int c = 0; c < C; c++)
        UNROLL for (int g = 0; g < 4; g++) _mm512_storeu_ps(ap[g] + i + 16 * c, a[c][g]);
}

T5 static void attn_f16(const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                        float scale, float *m, float *l, float *acc) {
    assert(ng >= 1 && ng <= KERN_ATTN_MAX_G);
    _Alignas(64) float s[KERN_ATTN_MAX_G + 4][KERN_ATTN_BLOCK]; /* rows ng.. are scratch for absent heads */
    _Alignas(64) float zq[256], dummy[256];
    const int nc = hd / 16, ng4 = (ng + 3) & ~3;
    const size_t rowb = (size_t)hd * 2;
    const float *qh[KERN_ATTN_MAX_G + 4];
    for (int g = 0; g < ng4; g++) qh[g] = g < ng ? q + (size_t)g * hd : zq;
    if (ng4 != ng) memset(zq, 0, sizeof(float) * (size_t)hd), memset(dummy, 0, sizeof(float) * (size_t)hd);
    for (int p0 = 0; p0 < n; p0 += KERN_ATTN_BLOCK) {
        const int np = n - p0 < KERN_ATTN_BLOCK ? n - p0 : KERN_ATTN_BLOCK;
        for (int j = 0; j < np; j++) {
            const char *kr = (const char *)k + (size_t)(p0 + j) * stride;
            const char *vr = (const char *)v + (size_t)(p0 + j) * stride;
            for (size_t b = 0; b < rowb; b += 64) _mm_prefetch(vr + b, _MM_HINT_T0);
            if (p0 + j + ATT_PF < n)
                for (size_t b = 0; b < rowb; b += 64) _mm_prefetch(kr + ATT_PF * stride + b, _MM_HINT_T0);
            __m512 kz[16];
            for (int c = 0; c < nc; c++) kz[c] = f16x16(kr, 16 * c);
            for (int g = 0; g < ng4; g += 4) {
                __m512 a0 = _mm512_mul_ps(_mm512_loadu_ps(qh[g]), kz[0]), a1 = _mm512_mul_ps(_mm512_loadu_ps(qh[g + 1]), kz[0]);
                __m512 a2 = _mm512_mul_ps(_mm512_loadu_ps(qh[g + 2]), kz[0]), a3 = _mm512_mul_ps(_mm512_loadu_ps(qh[g + 3]), kz[0]);
                for (int c = 1; c < nc; c++) {
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qh[g] + 16 * c), kz[c], a0);
                    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(qh[g + 1] + 16 * c), kz[c], a1);
                    a2 = _mm512_fmadd_ps(_mm512_loadu_ps(qh[g + 2] + 16 * c), kz[c], a2);
                    a3 = _mm512_fmadd_ps(_mm512_loadu_ps(qh[g + 3] + 16 * c), kz[c], a3);
                }
                _Alignas(16) float sc[4];
                _mm_store_ps(sc, _mm_mul_ps(hsum4x16(a0, a1, a2, a3), _mm_set1_ps(scale)));
                for (int e = 0; e < 4; e++) s[g + e][j] = sc[e];
            }
        }
        softmax_step(s, ng, hd, np, m, l, acc);
        for (int g0 = 0; g0 < ng; g0 += 4) {
            float *ap[4];
            for (int g = 0; g < 4; g++) ap[g] = g0 + g < ng ? acc + (size_t)(g0 + g) * hd : dummy;
            const float *w[4] = {s[g0], s[g0 + 1], s[g0 + 2], s[g0 + 3]};
            const char *vb = (const char *)v + (size_t)p0 * stride;
            int i = 0;
            for (; i + 32 <= hd; i += 32) pv_step(ap, w, vb, stride, np, i, 2);
            if (i < hd) pv_step(ap, w, vb, stride, np, i, 1);
        }
    }
}

/* ---- attention over the 8-bit KV cache (layout and arithmetic: kern.h) ----
 *
 * Per tile of 32 positions and group of 4 query heads:
 *   - scores: per 16 positions and 32-value block, 8 vpdpbusd per head,
 *     each 64-byte K load shared by the 4 heads; int32 lanes are
 *     positions, so a block ends in one convert and one fmadd by
 *     qd_b * kd_b (16 positions' K scales in one zmm);
 *   - softmax: as for f16;
 *   - V: the weights folded with the V scales to int16 (16 at a time),
 *     then per 16 values of V, 2 positions per vpdpwssd for each head.
 * About 40 instructions a position for 4 heads where the float path
 * spends about 150 widening and multiplying int8. */
/* acc + the int8/int16 dot of x with a broadcast 4-byte word at w. gcc 12
 * copies the accumulator of the vpdp* builtins twice per use in a loop
 * (measured: 16 vmovdqa around 8 vpdpwssd) and does not fold the broadcast;
 * this keeps acc in place and reads w as {1to16}. */
T5 static inline AI __m512i dpbusd_bc(__m512i acc, __m512i x, const int32_t *w) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*w));
    return acc; /* acc += sum of 4 (u8 x_i * s8 w_i) per lane */
}
T5 static inline AI __m512i dpwssd_bc(__m512i acc, __m512i x, const int32_t *w) {
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(x), "m"(*w));
    return acc; /* acc += sum of 2 (s16 x_i * s16 w_i) per lane */
}

T5 static void attn_q8(const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                       float scale, float *m, float *l, float *acc) {
    enum { MG = KERN_ATTN_MAX_G + 3, MB = KERN_ATTN_MAX_HD / 32 };
    /* int32 views, so that each broadcast folds into its vpdp* as {1to16}: the
     * query's Q8_0 bytes 4 at a time, and the int16 V weights 2 at a time */
    _Alignas(64) int32_t qq[MG * KERN_ATTN_MAX_HD / 4];
    _Alignas(64) int32_t w[KERN_ATTN_MAX_G + 4][MB][KERN_KV_TILE / 2];
    _Alignas(64) float s[KERN_ATTN_MAX_G + 4][KERN_ATTN_BLOCK], dummy[KERN_ATTN_MAX_HD];
    float qd[MG * MB], sig[KERN_ATTN_MAX_G + 4][MB] = {{0}}; /* sig: tmax / 32767 of kern.h */
    int32_t qsum[MG * MB];
    const int nb = hd / 32, ng4 = (ng + 3) & ~3, hd4 = hd / 4;
    kern_kv_q8_quant_q(q, ng, hd, (int8_t *)qq, qd, qsum);
    if (ng4 != ng) { /* absent heads of the last group of 4: zero queries, zero weights */
        memset(qq + (size_t)ng * hd4, 0, (size_t)(ng4 - ng) * hd);
        for (int i = ng * nb; i < ng4 * nb; i++) qd[i] = 0, qsum[i] = 0;
        memset(w[ng], 0, sizeof w[0] * (size_t)(ng4 - ng));
        memset(dummy, 0, sizeof(float) * (size_t)hd);
    }
    for (int p0 = 0; p0 < n; p0 += KERN_KV_TILE) {
        const int np = n - p0 < KERN_KV_TILE ? n - p0 : KERN_KV_TILE;
        const kern_kv_q8_tiles tl = kern_kv_q8_tiles_at(k, v, stride, p0, hd);
        if (p0 + KERN_KV_TILE < n) kern_kv_q8_prefetch_next(&tl, stride, hd);
        for (int h = 0; 16 * h < np; h++)
            for (int g = 0; g < ng4; g += 4) {
                __m512 f0 = _mm512_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;
                for (int b = 0; b < nb; b++) {
                    const int32_t *q0 = qq + (size_t)g * hd4 + 8 * b;
                    const int o = g * nb + b;
                    __m512i a0 = _mm512_set1_epi32(-128 * qsum[o]), a1 = _mm512_set1_epi32(-128 * qsum[o + nb]);
                    __m512i a2 = _mm512_set1_epi32(-128 * qsum[o + 2 * nb]), a3 = _mm512_set1_epi32(-128 * qsum[o + 3 * nb]);
                    const uint8_t *kb = tl.kq + kern_kv_q8_kidx(16 * h, 32 * b);
#pragma GCC unroll 8
                    for (int i = 0; i < 8; i++) {
                        const __m512i kz = _mm512_loadu_si512(kb + (size_t)i * 4 * KERN_KV_TILE);
                        a0 = dpbusd_bc(a0, kz, q0 + i), a1 = dpbusd_bc(a1, kz, q0 + hd4 + i);
                        a2 = dpbusd_bc(a2, kz, q0 + 2 * hd4 + i), a3 = dpbusd_bc(a3, kz, q0 + 3 * hd4 + i);
                    }
                    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(tl.kd + b * KERN_KV_TILE + 16 * h)));
                    f0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a0), _mm512_mul_ps(_mm512_set1_ps(qd[o]), d), f0);
                    f1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a1), _mm512_mul_ps(_mm512_set1_ps(qd[o + nb]), d), f1);
                    f2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a2), _mm512_mul_ps(_mm512_set1_ps(qd[o + 2 * nb]), d), f2);
                    f3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a3), _mm512_mul_ps(_mm512_set1_ps(qd[o + 3 * nb]), d), f3);
                }
                const __m512 sc = _mm512_set1_ps(scale);
                _mm512_store_ps(s[g] + 16 * h, _mm512_mul_ps(f0, sc)), _mm512_store_ps(s[g + 1] + 16 * h, _mm512_mul_ps(f1, sc));
                _mm512_store_ps(s[g + 2] + 16 * h, _mm512_mul_ps(f2, sc)), _mm512_store_ps(s[g + 3] + 16 * h, _mm512_mul_ps(f3, sc));
            }
        softmax_step(s, ng, hd, np, m, l, acc);
        const __mmask16 head = np >= 16 ? 0xffff : (__mmask16)((1u << np) - 1);
        const __mmask16 tail = np >= 16 ? (__mmask16)((np >= 32 ? 0xffffu : (1u << (np - 16)) - 1)) : 0;
        for (int b = 0; b < nb; b++) {
            const __m512 d0 = _mm512_maskz_cvtph_ps(head, _mm256_loadu_si256((const __m256i *)(tl.vd + b * KERN_KV_TILE)));
            const __m512 d1 = _mm512_maskz_cvtph_ps(tail, _mm256_loadu_si256((const __m256i *)(tl.vd + b * KERN_KV_TILE + 16)));
            const __m512 lim = _mm512_set1_ps(32767.0f);
            for (int g = 0; g < ng; g++) {
                const __m512 t0 = _mm512_mul_ps(_mm512_load_ps(s[g]), d0), t1 = _mm512_mul_ps(_mm512_load_ps(s[g] + 16), d1);
                const float tmax = _mm512_reduce_max_ps(_mm512_max_ps(t0, t1));
                const __m512 r = _mm512_set1_ps(tmax > 0 ? 32767.0f / tmax : 0);
                sig[g][b] = tmax / 32767.0f;
                const __m512i i0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(t0, r), lim));
                const __m512i i1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(t1, r), lim));
                _mm256_store_si256((__m256i *)w[g][b], _mm512_cvtepi32_epi16(i0));
                _mm256_store_si256((__m256i *)(w[g][b] + 8), _mm512_cvtepi32_epi16(i1));
            }
        }
        /* per 32-value block: 4 heads x 2 halves of int32 sums in registers,
         * each V pair widened once for the 4 heads */
        for (int g0 = 0; g0 < ng; g0 += 4) {
            float *ap[4];
            for (int g = 0; g < 4; g++) ap[g] = g0 + g < ng ? acc + (size_t)(g0 + g) * hd : dummy;
            for (int b = 0; b < nb; b++) {
                const int32_t *w0 = w[g0][b], *w1 = w[g0 + 1][b], *w2 = w[g0 + 2][b], *w3 = w[g0 + 3][b];
                __m512i a00 = _mm512_setzero_si512(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
                const int8_t *vp = tl.vq + (size_t)b * 64;
                for (int j = 0; j < (np + 1) / 2; j++, vp += 2 * (size_t)hd) {
                    const __m512i x0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)vp));
                    const __m512i x1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(vp + 32)));
                    a00 = dpwssd_bc(a00, x0, w0 + j), a01 = dpwssd_bc(a01, x1, w0 + j);
                    a10 = dpwssd_bc(a10, x0, w1 + j), a11 = dpwssd_bc(a11, x1, w1 + j);
                    a20 = dpwssd_bc(a20, x0, w2 + j), a21 = dpwssd_bc(a21, x1, w2 + j);
                    a30 = dpwssd_bc(a30, x0, w3 + j), a31 = dpwssd_bc(a31, x1, w3 + j);
                }
                const __m512i ia[4][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
                for (int e = 0; e < 4; e++) {
                    const __m512 sg = _mm512_set1_ps(sig[g0 + e][b]);
                    float *o = ap[e] + 32 * b;
                    _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[e][0]), sg, _mm512_loadu_ps(o)));
                    _mm512_storeu_ps(o + 16, _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia[e][1]), sg, _mm512_loadu_ps(o + 16)));
                }
            }
        }
    }
}

T5 static void attn16(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                      float scale, float *m, float *l, float *acc) {
    if (kv_type == KERN_KV_Q8 && hd % 32 == 0) attn_q8(q, ng, hd, k, v, stride, n, scale, m, l, acc);
    else if (kv_type == KERN_F16 && hd % 16 == 0 && hd <= 256) attn_f16(q, ng, hd, k, v, stride, n, scale, m, l, acc);
    else attn_prev(kv_type, q, ng, hd, k, v, stride, n, scale, m, l, acc);
}

void kern_avx512_install(kern_impl *t) {
    t->isa = "avx512";
    /* K-quants: one kernel family for every token count below the wide
     * tiles, so a token's sums do not depend on the batch */
    t->traits[KERN_Q8_0].vec_dot = dot_q8_0;
    t->traits[KERN_Q4_K].vec_dot = dot_q4_K;
    t->traits[KERN_Q5_K].vec_dot = dot_q5_K;
    t->traits[KERN_Q6_K].vec_dot = dot_q6_K;
    t->tile1[KERN_Q4_K] = mv_q4_K;
    t->perm[KERN_Q4_K] = q4_perm;
    t->tile1[KERN_Q5_K] = mv_q5_K;
    t->tile1[KERN_Q6_K] = mv_q6_K;
    t->traits[KERN_F32].vec_dot = dot_f32;
    t->traits[KERN_F16].vec_dot = dot_f16;
    t->tile[KERN_Q4_K] = rt_q4_K;
    t->tile[KERN_Q5_K] = rt_q5_K;
    t->tile[KERN_Q6_K] = rt_q6_K;
    t->tile_c[KERN_Q4_K] = t->tile_c[KERN_Q5_K] = t->tile_c[KERN_Q6_K] = KERN_TILE_CMAX;
    /* wide tiles from the token count where they beat the register tiles
     * (one 11008 x 2048 product streamed from memory, two threads): Q4_K
     * from 5 tokens (13-27% ahead at 5-8, even at 4), Q6_K from 8 (6%
     * ahead; 10-30% behind at 4-6) */
    t->tile_wide[KERN_Q4_K] = wide_q4;
    t->tile_wide[KERN_Q6_K] = wide_q6;
    t->wide_min[KERN_Q4_K] = 5;
    t->wide_min[KERN_Q6_K] = 8;
    t->tile[KERN_Q8_0] = tile_q8_0;
    t->tile[KERN_F32] = tile_f32;
    t->tile[KERN_F16] = tile_f16;
    t->tile1[KERN_Q8_0] = tile_q8_0;
    t->tile1[KERN_F32] = tile_f32;
    t->tile1[KERN_F16] = tile_f16;
    attn_prev = t->attn;
    t->attn = attn16;
}

void kern_amx_install(kern_impl *t) {
    t->isa = "amx";
    /* from 9 tokens, as measured against the AVX-512 wide tile (with its
     * old slab of 4 blocks): even with it from 9 to 12 (`smolbot bench -p
     * N`), 15-25% ahead from 16; below 9 the register tiles, as then */
    t->tile_wide[KERN_Q4_K] = amx_q4;
    t->wide_min[KERN_Q4_K] = 9;
    t->prep[KERN_Q4_K] = amx_prep_q8_K;
    t->prep_block[KERN_Q4_K] = sizeof(amx_pblock);
}
