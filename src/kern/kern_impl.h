/* kern_impl.h -- private to src/kern (and tests/test_kern.c): the
 * dispatch table that kern_init fills, the scalar reference kernels, and
 * the install hooks of the ISA files.
 *
 * Dispatch. One table (kern_impl) holds, per type, the traits seen by
 * callers plus a "tile" kernel used by kern_matmul, and the f32 ops.
 * kern_init starts from the scalar table and lets each ISA file that this
 * CPU supports overwrite the entries it has (avx2 first, then avx512), so
 * an ISA file never needs to implement everything.
 *
 * Tile kernel. tile(n, w, bw, nr, a, ba, nc, y, ldy) computes
 *     y[c*ldy + r] = dot(row r of w, row c of a)  for r < nr, c < nc
 * where rows of w are bw bytes apart and rows of a (already quantized to
 * the vec_dot type) ba bytes apart. nr <= KERN_TILE_R, nc <= tile_c[type]
 * (KERN_TILE_C, or up to KERN_TILE_CMAX where an ISA's tile holds more
 * tokens in registers).
 * A SIMD tile unpacks each weight block once and uses it for nc tokens:
 * that is what makes prefill arithmetic-bound instead of memory-bound.
 *
 * Wide tile. tile_wide[type] (NULL where an ISA has none) has the same
 * contract with nr <= KERN_WIDE_R and nc <= KERN_WIDE_C; kern_matmul uses
 * it from wide_min[type] (>= 2) tokens on. It may repack the weight rows
 * into a layout of its own per call, which only pays off over several
 * tokens (see avx512.c, "Wide tiles").
 *
 * Prepared activations. Where prep[type] is set, the wide tile reads the
 * activations in a layout of its own: kern_matmul first rewrites the
 * quantized rows, by groups of KERN_PREP_T tokens (the last one short),
 * with prep[type], (n / QK_K) * prep_block[type] bytes a group, and the
 * tile gets the group of its first token as `a` and the group's size as
 * `ba` (its first token is a multiple of KERN_WIDE_C, so of KERN_PREP_T).
 * A layout made once per matmul is what a tile that wants its activations
 * transposed can afford.
 *
 * Permuted activations. Where perm[type] is set, tile1 and tile read each
 * quantized row with the bytes of every block in an order of their own:
 * kern_matmul permutes the rows in place (same size) with perm[type]
 * before it runs them, and the tests do the same before calling a tile
 * directly. vec_dot still takes the rows as quantized.
 */
#ifndef KERN_IMPL_H
#define KERN_IMPL_H

#include <math.h>

#include "kern/kern.h"

#define KERN_TILE_R 4
#define KERN_TILE_C 8     /* tokens per tile call, by default */
#define KERN_TILE_CMAX 16 /* ... and at most (kern_impl.tile_c) */
#define KERN_WIDE_R 16    /* rows per wide tile call */
#define KERN_WIDE_C 256   /* tokens per wide tile call, at most */

typedef void (*kern_tile_fn)(int64_t n, const void *w, size_t bw, int nr, const void *a, size_t ba, int nc,
                             float *y, int64_t ldy);

/* One group of nt <= KERN_PREP_T activation rows (the vec_dot type, ba
 * bytes apart, n values each) into a wide tile's own layout at out. */
typedef void (*kern_prep_fn)(const void *a, size_t ba, int nt, int64_t n, void *out);
#define KERN_PREP_T 16

typedef struct kern_impl {
    const char *isa;
    kern_traits traits[KERN_TYPE_MAX];
    kern_tile_fn tile[KERN_TYPE_MAX];  /* n_tok > 1 */
    kern_tile_fn tile1[KERN_TYPE_MAX]; /* n_tok == 1 (matrix-vector), may differ: see avx512.c */
    int tile_c[KERN_TYPE_MAX];         /* nc limit of tile[] (KERN_TILE_C unless an ISA says more) */
    kern_tile_fn tile_wide[KERN_TYPE_MAX]; /* if not NULL, n_tok >= wide_min[type]: see "Wide tile" */
    int wide_min[KERN_TYPE_MAX];
    kern_prep_fn prep[KERN_TYPE_MAX];      /* if not NULL, tile_wide's activations: see "Prepared" */
    size_t prep_block[KERN_TYPE_MAX];      /* bytes of a prepared group per QK_K values */
    /* if not NULL, tile1's and tile's activations: see "Permuted" */
    void (*perm[KERN_TYPE_MAX])(void *a, size_t ba, int64_t n_tok, int64_t n);
    void (*rmsnorm)(float *out, const float *x, const float *w, int64_t n, float eps);
    void (*silu_mul)(float *out, const float *g, const float *u, int64_t n);
    void (*softmax)(float *x, int64_t n);
    void (*f16_to_f32)(const kern_f16 *src, float *dst, int64_t n);
    void (*f32_to_f16)(const float *src, kern_f16 *dst, int64_t n);
    void (*attn)(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                 float scale, float *m, float *l, float *acc);
} kern_impl;

/* The table in use (set by kern_init; read-only afterwards). */
extern kern_impl kern_cur;

/* ---- scalar reference (ref.c) ---- */
void kern_ref_install(kern_impl *t);

void kern_ref_dequant_f32(const void *src, float *dst, int64_t n);
void kern_ref_dequant_f16(const void *src, float *dst, int64_t n);
void kern_ref_dequant_bf16(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q4_0(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q4_1(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q5_0(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q5_1(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q8_0(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q4_K(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q5_K(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q6_K(const void *src, float *dst, int64_t n);
void kern_ref_dequant_q8_K(const void *src, float *dst, int64_t n);

void kern_ref_from_f32(const float *src, void *dst, int64_t n);
void kern_ref_from_f16(const float *src, void *dst, int64_t n);
void kern_ref_from_bf16(const float *src, void *dst, int64_t n);
void kern_ref_quantize_q8_0(const float *src, void *dst, int64_t n);
void kern_ref_quantize_q8_K(const float *src, void *dst, int64_t n);

void kern_ref_dot_f32(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_f16(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_bf16(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_q4_0(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_q4_1(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_q5_0(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_q5_1(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_q8_0(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_q4_K(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_q5_K(int64_t n, float *s, const void *w, const void *a);
void kern_ref_dot_q6_K(int64_t n, float *s, const void *w, const void *a);

/* Unpack the 6-bit scales and mins of a Q4_K/Q5_K block. */
void kern_ref_k_scales(const uint8_t *scales, uint8_t sc[8], uint8_t m[8]);

void kern_ref_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);
void kern_ref_silu_mul(float *out, const float *g, const float *u, int64_t n);
void kern_ref_softmax(float *x, int64_t n);
void kern_ref_f16_to_f32(const kern_f16 *src, float *dst, int64_t n);
void kern_ref_f32_to_f16(const float *src, kern_f16 *dst, int64_t n);
void kern_ref_attn(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                   float scale, float *m, float *l, float *acc);

#define KERN_ATTN_BLOCK 32 /* positions per online-softmax step (scores kept on the stack) */
static_assert(KERN_ATTN_BLOCK == KERN_KV_TILE, "an 8-bit KV tile is one online-softmax block");

/* The 8-bit KV tile layout of kern.h: the values follow the scales. */
static inline size_t kern_kv_q8_qoff(int hd) { return (size_t)(hd / 32) * KERN_KV_TILE * sizeof(kern_f16); }
static inline size_t kern_kv_q8_kidx(int j, int i) { return ((size_t)(i / 4) * KERN_KV_TILE + (size_t)j) * 4 + (size_t)(i % 4); }
static inline size_t kern_kv_q8_vidx(int hd, int j, int i) { return ((size_t)(j / 2) * (size_t)hd + (size_t)i) * 2 + (size_t)(j % 2); }
/* The K and V tiles holding positions p0.. (p0 % KERN_KV_TILE == 0) of
 * kern_attn's k and v, tiles `stride` bytes apart: scales and values. */
typedef struct kern_kv_q8_tiles {
    const char *kt, *vt;
    const kern_f16 *kd, *vd;
    const uint8_t *kq;
    const int8_t *vq;
} kern_kv_q8_tiles;
static inline kern_kv_q8_tiles kern_kv_q8_tiles_at(const void *k, const void *v, size_t stride, int p0, int hd) {
    kern_kv_q8_tiles t;
    t.kt = (const char *)k + (size_t)(p0 / KERN_KV_TILE) * stride;
    t.vt = (const char *)v + (size_t)(p0 / KERN_KV_TILE) * stride;
    t.kd = (const kern_f16 *)t.kt, t.vd = (const kern_f16 *)t.vt;
    t.kq = (const uint8_t *)t.kt + kern_kv_q8_qoff(hd);
    t.vq = (const int8_t *)t.vt + kern_kv_q8_qoff(hd);
    return t;
}
/* A tile is a little over a 4 KiB page, and the hardware prefetchers stop
 * at page boundaries: the SIMD kernels ask for the next tile's K and V
 * while they work on this one. */
static inline void kern_kv_q8_prefetch_next(const kern_kv_q8_tiles *t, size_t stride, int hd) {
    for (size_t o = 0, tb = kern_kv_q8_tile_bytes(hd); o < tb; o += 64)
        __builtin_prefetch(t->kt + stride + o, 0, 3), __builtin_prefetch(t->vt + stride + o, 0, 3);
}
/* A softmax weight times its V scale, t, in units of r (32767 over the
 * largest t of the tile): an int16 */
static inline int32_t kern_kv_q8_weight(float t, float r) { return (int32_t)rintf(fminf(t * r, 32767.0f)); }
/* Each query head as Q8_0: values qq[g*hd + i], scales qd[g*hd/32 + b], block sums qsum[g*hd/32 + b]. */
void kern_kv_q8_quant_q(const float *q, int ng, int hd, int8_t *qq, float *qd, int32_t *qsum);

/* The weight stream of the matrix-vector and register tiles, prefetched
 * KERN_PF_AHEAD bytes ahead: every line of the block there. The hardware
 * prefetchers stop at each 4 KB page and keep few streams, so lines left
 * to them arrive late; 16 KB is the latency of DRAM times a core's share
 * of the bandwidth on the hosts measured, with room (2-4 KB was enough on
 * a Xeon, and 20% short on a Zen 5; docs/performance.md has the figures). */
#define KERN_PF_AHEAD 16384
#define KERN_PF_BLOCK(p)                               \
    for (int o_ = 0; o_ < (int)sizeof(*(p)); o_ += 64) \
    __builtin_prefetch((const char *)(p) + KERN_PF_AHEAD + o_, 0, 3)

/* ggml's round-to-nearest (ties to even) through the float mantissa. */
static inline int kern_nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    __builtin_memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* ---- ISA files: overwrite the entries they implement ---- */

/* A K-quant block unpacked for integer dots (see avx2.c): 256 unsigned
 * weights, the 16-bit scale of each pair of maddubs lanes, the factor of
 * each Q8_K bsum, and the float factors. Shared by avx2.c and avx512.c. */
typedef struct kunp {
    uint8_t q[QK_K];       /* weights as unsigned bytes, natural order */
    int16_t sc[128];       /* per 32 weights k: scale of group 2k x 8, of group 2k+1 x 8 */
    int16_t mn[QK_K / 16]; /* factor of bsums[g] */
    float d, dm;           /* x.d for isum; -x.dmin for msum (Q4_K/Q5_K) */
    int fold;              /* Q6_K: isum -= msum (mins are 32*scale) */
} kunp;
void kern_avx2_unpack_q4_K(const kern_block_q4_K *b, kunp *u); /* need AVX2 */
void kern_avx2_unpack_q5_K(const kern_block_q5_K *b, kunp *u);
void kern_avx2_unpack_q6_K(const kern_block_q6_K *b, kunp *u);
void kern_avx2_install(kern_impl *t);
void kern_avx512_install(kern_impl *t);
void kern_amx_install(kern_impl *t); /* over avx512: the Q4_K wide tile on AMX */

#endif
