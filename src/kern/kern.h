/* kern.h -- compute kernels: quant blocks, dequantization, dot products,
 * matrix products, the small f32 ops of a transformer, and a thread pool.
 *
 * Shape of the module (after ggml): each tensor type has a traits entry
 * {block size, bytes, dequant_row, vec_dot, vec_dot_type, from_float}.
 * A weight row of type T is multiplied with an activation row that was
 * quantized ONCE per product to T's vec_dot_type (Q8_K for K-quants, Q8_0
 * for Q8_0, F32 for float weights): integer dot products, like llama.cpp,
 * so our numbers track its numbers.
 *
 * ISAs. Every kernel has a scalar reference (kern_ref_*), always built,
 * which is the oracle in tests. AVX2 and AVX-512 twins live in their own
 * files and are chosen once at start (kern_init) from CPU features; the
 * table set there is the only mutable global of the module.
 *
 * kern never sees a file: it works on pointers given by the caller.
 */
#ifndef KERN_H
#define KERN_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* Type ids: the ggml ids, as stored in GGUF. */
enum kern_type {
    KERN_F32 = 0,
    KERN_F16 = 1,
    KERN_Q4_0 = 2,
    KERN_Q4_1 = 3,
    KERN_Q5_0 = 6,
    KERN_Q5_1 = 7,
    KERN_Q8_0 = 8,
    KERN_Q4_K = 12,
    KERN_Q5_K = 13,
    KERN_Q6_K = 14,
    KERN_Q8_K = 15,
    KERN_BF16 = 30,
    KERN_TYPE_MAX = 31
};

#define QK8_0 32
#define QK4_0 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef uint16_t kern_f16; /* IEEE binary16 bits */

typedef struct {
    kern_f16 d;
    int8_t qs[QK8_0];
} kern_block_q8_0;
static_assert(sizeof(kern_block_q8_0) == 34, "q8_0 block");

typedef struct {
    kern_f16 d;
    uint8_t qs[QK4_0 / 2];
} kern_block_q4_0;
static_assert(sizeof(kern_block_q4_0) == 18, "q4_0 block");

/* The other legacy 32-wide blocks. Real Q4_K_M / Q5_K_M files use Q5_0 and
 * Q5_1 for the tensors whose rows are not a multiple of 256 (Qwen2.5 0.5B's
 * 896-wide ones). x = q * d (q5_0: q - 16) or q * d + m; a 5-bit value's
 * high bit j is bit j of qh (read as a little-endian uint32). */
typedef struct {
    kern_f16 d;
    kern_f16 m;
    uint8_t qs[QK4_0 / 2];
} kern_block_q4_1;
static_assert(sizeof(kern_block_q4_1) == 20, "q4_1 block");

typedef struct {
    kern_f16 d;
    uint8_t qh[4];
    uint8_t qs[QK4_0 / 2];
} kern_block_q5_0;
static_assert(sizeof(kern_block_q5_0) == 22, "q5_0 block");

typedef struct {
    kern_f16 d;
    kern_f16 m;
    uint8_t qh[4];
    uint8_t qs[QK4_0 / 2];
} kern_block_q5_1;
static_assert(sizeof(kern_block_q5_1) == 24, "q5_1 block");

typedef struct {
    kern_f16 d;
    kern_f16 dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} kern_block_q4_K;
static_assert(sizeof(kern_block_q4_K) == 144, "q4_K block");

typedef struct {
    kern_f16 d;
    kern_f16 dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} kern_block_q5_K;
static_assert(sizeof(kern_block_q5_K) == 176, "q5_K block");

typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    kern_f16 d;
} kern_block_q6_K;
static_assert(sizeof(kern_block_q6_K) == 210, "q6_K block");

typedef struct {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} kern_block_q8_K;
static_assert(sizeof(kern_block_q8_K) == 292, "q8_K block");

/* Dequantize n values (n a multiple of the block size). */
typedef void (*kern_dequant_fn)(const void *src, float *dst, int64_t n);
/* Quantize n floats to this type (activation side). */
typedef void (*kern_from_float_fn)(const float *src, void *dst, int64_t n);
/* *s = dot(w[0..n), a[0..n)) where w is a row of this type and a is a row
 * of vec_dot_type. */
typedef void (*kern_vec_dot_fn)(int64_t n, float *s, const void *w, const void *a);

typedef struct kern_traits {
    const char *name;
    int64_t blck;          /* weights per block */
    size_t bytes;          /* bytes per block */
    kern_dequant_fn dequant_row;
    kern_from_float_fn from_float; /* NULL if this type is never an activation type */
    kern_vec_dot_fn vec_dot;       /* NULL if not usable as a weight type */
    int vec_dot_type;              /* activation type for vec_dot */
} kern_traits;

/* Pick the best ISA for this CPU (or force one: "scalar", "avx2",
 * "avx512", "amx"; NULL = auto, also read from env SMOLBOT_ISA). Call once at
 * start, before any thread uses the kernels. Returns 0 or CORE_EUNSUP if a
 * forced ISA is not available here. */
int kern_init(const char *isa);
const char *kern_isa(void); /* "scalar" | "avx2" | "avx512" | "amx" */

/* Current (fastest chosen) traits, and the scalar reference traits. NULL
 * for a type we do not support. */
const kern_traits *kern_get_traits(int type);
const kern_traits *kern_ref_traits(int type);
/* Bytes of a row of n values of this type (n must be a multiple of blck). */
size_t kern_row_size(int type, int64_t n);

/* ---- thread pool ------------------------------------------------------ */

/* A fixed set of worker threads created once. kern_pool_run() calls
 * fn(ctx, ith, nth) on every thread (the caller is thread 0) and returns
 * when all have finished. Not reentrant: one run at a time per pool. */
typedef struct kern_pool kern_pool;
typedef void (*kern_task_fn)(void *ctx, int ith, int nth);
kern_pool *kern_pool_new(int n_threads);
void kern_pool_free(kern_pool *p);
int kern_pool_threads(const kern_pool *p);
void kern_pool_run(kern_pool *p, kern_task_fn fn, void *ctx);

/* ---- matrix products -------------------------------------------------- */

/* Y = X . W^T: W is n_out rows of n_in values of type wtype (a view into
 * the mapping); X is n_tok rows of n_in floats; Y is n_tok rows of n_out
 * floats (Y[t*ldy + o]). X is quantized once to the vec_dot type into
 * `work`, which must hold kern_matmul_work_size(wtype, n_in, n_tok) bytes.
 * n_tok == 1 is a matrix-vector product; n_tok > 1 reuses each weight block
 * for many tokens. Split across the pool's threads by output rows. */
size_t kern_matmul_work_size(int wtype, int64_t n_in, int64_t n_tok);
void kern_matmul(kern_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
                 int64_t n_tok, float *y, int64_t ldy, void *work);
/* Same with the scalar reference kernels, single-threaded (tests). */
void kern_matmul_ref(int wtype, const void *w, int64_t n_out, int64_t n_in, const float *x, int64_t n_tok,
                     float *y, int64_t ldy, void *work);

/* ---- f32 ops (scalar reference here; SIMD twins chosen by kern_init) --- */

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i] */
void kern_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);
/* out[i] = silu(g[i]) * u[i] */
void kern_silu_mul(float *out, const float *g, const float *u, int64_t n);
/* Rotate adjacent pairs (x[2i], x[2i+1]) of each of n_heads heads of
 * head_dim by pos * theta^(-2i/head_dim) (llama.cpp's "normal" RoPE). */
void kern_rope(float *x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta);
/* In-place softmax of x[0..n). */
void kern_softmax(float *x, int64_t n);
/* Bulk half conversions. */
void kern_f16_to_f32(const kern_f16 *src, float *dst, int64_t n);
void kern_f32_to_f16(const float *src, kern_f16 *dst, int64_t n);

/* ---- attention ---------------------------------------------------------- */

/* Online-softmax state of ng query heads of head_dim hd attending over some
 * positions: running max m[g] of the scaled scores, running sum l[g] of
 * exp(score - m[g]), and the unnormalised output acc[g*hd + i] =
 * sum_p exp(score_p - m[g]) v_p[i]. Start with m = -INFINITY, l = 0,
 * acc = 0; the attention output is acc / l. */
#define KERN_ATTN_MAX_G 16  /* query heads per KV head */
#define KERN_ATTN_MAX_HD 512

/* Advance the state over n positions of one KV head: q is ng rows of hd
 * floats (the query heads sharing this KV head, GQA); score = scale * q.k.
 * kv_type KERN_F16 or KERN_F32: k and v point at the first position's row
 * of this head, rows `stride` bytes apart. kv_type KERN_KV_Q8: k and v
 * point at the first of this head's 8-bit tiles (below), tiles `stride`
 * bytes apart, and the n positions start at that tile's first. Each K and
 * V row is read once for all ng heads. Thread-safe (no shared state);
 * ng <= KERN_ATTN_MAX_G, hd <= KERN_ATTN_MAX_HD. */
void kern_attn(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
               float scale, float *m, float *l, float *acc);
/* Same, scalar reference (tests). */
void kern_attn_ref(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                   float scale, float *m, float *l, float *acc);
/* ---- the 8-bit KV cache ------------------------------------------------
 *
 * KERN_KV_Q8 holds K and V as Q8_0 values (int8, one f16 scale per 32
 * values of a position: 8.5 bits a value against f16's 16), so at long
 * contexts decode reads half the cache bytes. It is stored in tiles of
 * KERN_KV_TILE positions of one head, laid out for integer dot products:
 *
 *   K tile:  f16 d[hd/32][32]    scale of block b at position j
 *            u8  q[hd/4][32][4]  value i of position j, plus 128, at
 *                                ((i/4)*32 + j)*4 + i%4
 *   V tile:  f16 d[hd/32][32]
 *            i8  q[16][hd][2]    value i of position j at
 *                                ((j/2)*hd + i)*2 + j%2
 *
 * Why: 64 bytes of K are 16 positions x 4 consecutive values, so one
 * vpdpbusd against 4 broadcast query bytes advances 16 positions' scores
 * with no horizontal sums (the +128 makes K the unsigned operand; the
 * query's block sums take the offset back out). 32 bytes of V are 2
 * positions x 16 values: widened to int16, one vpdpwssd against the two
 * positions' int16 weights advances 16 outputs.
 *
 * The arithmetic, which every ISA follows (kern_ref_attn spells it out):
 *   - each query head is quantized to Q8_0 (as llama.cpp does for a Q8_0
 *     K cache), so score = scale * sum_b qd_b kd_b (sum_i qq_i kq_i);
 *   - per tile, head and 32-value block b, the softmax weights p (online
 *     softmax, as above) are folded with the V scales, t_j = p_j vd_bj,
 *     and rounded to int16 against the largest: with tmax = max_j t_j,
 *     w_j = rint(min(t_j * (32767 / tmax), 32767)), and
 *     acc += (tmax / 32767) * sum_j w_j vq_j. The rounding error is below
 *     2^-16 of the tile's largest term. */
#define KERN_KV_Q8 64   /* kv_type of kern_attn (not a tensor type) */
#define KERN_KV_TILE 32 /* positions per tile */
/* Bytes of one K (or V) tile of a head of hd values (hd % 32 == 0). */
size_t kern_kv_q8_tile_bytes(int hd);
/* Quantize x[0..hd) into position j (0 <= j < KERN_KV_TILE) of a K tile
 * (is_v 0) or a V tile (is_v 1); the other positions are left as they are. */
void kern_kv_q8_store(void *tile, int j, const float *x, int hd, int is_v);
/* Dequantize position j of a tile into x[0..hd). */
void kern_kv_q8_load(const void *tile, int j, float *x, int hd, int is_v);

/* Fold state 2 (over other positions) into state 1: the split-K merge. */
void kern_attn_merge(int ng, int hd, float *m, float *l, float *acc, const float *m2, const float *l2,
                     const float *acc2);

#endif
