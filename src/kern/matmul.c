/* matmul.c -- Y = X . W^T over the thread pool.
 *
 * 1. X (n_tok rows of n_in floats) is quantized once to W's vec_dot type
 *    into `work` (F32 weights use X as is). A few rows (decode, batched
 *    decode): the caller does it (a 2048-float row takes about a
 *    microsecond, less than a wake-up); more: a pool run splits the rows
 *    across threads. Then the ISA may put them in its tiles' own order:
 *    permuted in place for the register tiles, prepared in a layout of
 *    their own after them for the wide tile (kern_impl.h).
 * 2. Output rows are cut into chunks (a multiple of KERN_TILE_R rows),
 *    handed out through an atomic counter so a thread slowed down by
 *    someone else's work on a shared machine does not hold the others up.
 *    Inside a chunk, tokens go by tiles of tile_c (8-16) and rows by tiles of
 *    KERN_TILE_R: the ISA's tile kernel unpacks each weight block once for
 *    up to tile_c tokens, and the chunk's weights (a few KB to tens
 *    of KB) stay in L1/L2 while the token tiles sweep over them.
 *    Enough tokens (wide_min) of a type that has a wide tile use it
 *    instead: tiles of KERN_WIDE_R rows and up to KERN_WIDE_C tokens,
 *    chunks a multiple of KERN_WIDE_R rows.
 * Nothing is allocated; the context lives on the caller's stack.
 */
#include <stdatomic.h>

#include "kern/kern_impl.h"

/* Activations up to this many values are quantized by the caller: a few
 * decode rows take microseconds, less than waking the pool for it. */
#define QUANT_INLINE 16384

typedef struct {
    const kern_impl *impl;
    int wtype;
    const char *w;
    size_t wrow; /* bytes per weight row */
    int64_t n_out, n_in;
    const float *x;
    int64_t n_tok;
    float *y;
    int64_t ldy;
    const char *a; /* activations in vec_dot type */
    char *work;
    size_t arow;   /* bytes per activation row */
    char *prep;    /* prepared groups for the wide tile (kern_impl.h "Prepared"), or NULL */
    size_t pgroup; /* bytes per prepared group */
    int64_t chunk; /* rows per chunk */
    int64_t n_chunks;
    _Atomic int64_t next;
} mm_ctx;

static void quantize_task(void *arg, int ith, int nth) {
    mm_ctx *c = arg;
    const kern_from_float_fn ff = c->impl->traits[c->impl->traits[c->wtype].vec_dot_type].from_float;
    for (int64_t t = ith; t < c->n_tok; t += nth) ff(c->x + t * c->n_in, c->work + t * c->arow, c->n_in);
}

static void prep_task(void *arg, int ith, int nth) {
    mm_ctx *c = arg;
    for (int64_t g = ith; g * KERN_PREP_T < c->n_tok; g += nth) {
        const int nt = (int)CORE_MIN(KERN_PREP_T, c->n_tok - g * KERN_PREP_T);
        c->impl->prep[c->wtype](c->a + g * KERN_PREP_T * c->arow, c->arow, nt, c->n_in, c->prep + g * c->pgroup);
    }
}

/* Several tokens of a type with a wide tile (kern_impl.h). */
static int mm_wide(const kern_impl *impl, int wtype, int64_t n_tok) {
    return impl->tile_wide[wtype] != NULL && n_tok >= CORE_MAX(2, impl->wide_min[wtype]);
}

static void compute_task(void *arg, int ith, int nth) {
    mm_ctx *c = arg;
    (void)ith;
    (void)nth;
    const int wide = mm_wide(c->impl, c->wtype, c->n_tok);
    const kern_tile_fn tile = wide ? c->impl->tile_wide[c->wtype]
                              : c->n_tok == 1 ? c->impl->tile1[c->wtype] : c->impl->tile[c->wtype];
    const int tc = wide ? KERN_WIDE_C : c->impl->tile_c[c->wtype];
    const int tr = wide ? KERN_WIDE_R : KERN_TILE_R;
    for (;;) {
        const int64_t k = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (k >= c->n_chunks) break;
        const int64_t r0 = k * c->chunk;
        const int64_t r1 = CORE_MIN(c->n_out, r0 + c->chunk);
        for (int64_t t0 = 0; t0 < c->n_tok; t0 += tc) {
            const int nc = (int)CORE_MIN(tc, c->n_tok - t0);
            const char *a = c->prep ? c->prep + t0 / KERN_PREP_T * c->pgroup : c->a + t0 * c->arow;
            const size_t ba = c->prep ? c->pgroup : c->arow;
            for (int64_t r = r0; r < r1; r += tr) {
                const int nr = (int)CORE_MIN(tr, r1 - r);
                tile(c->n_in, c->w + r * c->wrow, c->wrow, nr, a, ba, nc, c->y + t0 * c->ldy + r, c->ldy);
            }
        }
    }
}

/* Bytes of a prepared group of n_in values, 0 where the ISA prepares none. */
static size_t prep_group(const kern_impl *impl, int wtype, int64_t n_in) {
    return impl->prep[wtype] ? (size_t)(n_in / QK_K) * impl->prep_block[wtype] : 0;
}

/* Sized for the ISA in use: call after kern_init. */
size_t kern_matmul_work_size(int wtype, int64_t n_in, int64_t n_tok) {
    const kern_traits *t = kern_ref_traits(wtype);
    if (!t || t->vec_dot_type == KERN_F32) return 0;
    const size_t pg = prep_group(&kern_cur, wtype, n_in);
    const size_t groups = (size_t)((n_tok + KERN_PREP_T - 1) / KERN_PREP_T);
    return kern_row_size(t->vec_dot_type, n_in) * (size_t)n_tok + (pg ? 64 + groups * pg : 0);
}

static void matmul(const kern_impl *impl, kern_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in,
                   const float *x, int64_t n_tok, float *y, int64_t ldy, void *work) {
    const kern_traits *t = &impl->traits[wtype];
    assert(t->vec_dot && impl->tile[wtype]);
    mm_ctx c = {.impl = impl,
                .wtype = wtype,
                .w = w,
                .wrow = kern_row_size(wtype, n_in),
                .n_out = n_out,
                .n_in = n_in,
                .x = x,
                .n_tok = n_tok,
                .y = y,
                .ldy = ldy,
                .work = work};
    if (t->vec_dot_type == KERN_F32) {
        c.a = (const char *)x;
        c.arow = (size_t)n_in * sizeof(float);
    } else {
        c.a = work;
        c.arow = kern_row_size(t->vec_dot_type, n_in);
        if (n_tok * n_in <= QUANT_INLINE || !pool || kern_pool_threads(pool) == 1)
            quantize_task(&c, 0, 1);
        else
            kern_pool_run(pool, quantize_task, &c);
        if (impl->perm[wtype] && !mm_wide(impl, wtype, n_tok)) impl->perm[wtype](work, c.arow, n_tok, n_in);
        if (impl->prep[wtype] && mm_wide(impl, wtype, n_tok)) {
            c.pgroup = prep_group(impl, wtype, n_in);
            const uintptr_t end = (uintptr_t)work + c.arow * (size_t)n_tok;
            c.prep = (char *)((end + 63) & ~(uintptr_t)63);
            if (n_tok <= KERN_PREP_T || !pool || kern_pool_threads(pool) == 1)
                prep_task(&c, 0, 1);
            else
                kern_pool_run(pool, prep_task, &c);
        }
    }
    const int nth = pool ? kern_pool_threads(pool) : 1;
    /* about 8 chunks per thread, at least a tile, rounded to whole tiles */
    int64_t chunk = (n_out + 8 * nth - 1) / (8 * nth);
    if (n_tok == 1) chunk = CORE_MAX(chunk, 16); /* matvec: amortise the counter */
    const int64_t tr = mm_wide(impl, wtype, n_tok) ? KERN_WIDE_R : KERN_TILE_R;
    chunk = (chunk + tr - 1) / tr * tr;
    c.chunk = chunk;
    c.n_chunks = (n_out + chunk - 1) / chunk;
    atomic_init(&c.next, 0);
    if (nth == 1)
        compute_task(&c, 0, 1);
    else
        kern_pool_run(pool, compute_task, &c);
}

void kern_matmul(kern_pool *pool, int wtype, const void *w, int64_t n_out, int64_t n_in, const float *x,
                 int64_t n_tok, float *y, int64_t ldy, void *work) {
    (void)kern_get_traits(wtype); /* scalar table if kern_init was not called */
    matmul(&kern_cur, pool, wtype, w, n_out, n_in, x, n_tok, y, ldy, work);
}

void kern_matmul_ref(int wtype, const void *w, int64_t n_out, int64_t n_in, const float *x, int64_t n_tok,
                     float *y, int64_t ldy, void *work) {
    const kern_traits *t = kern_ref_traits(wtype);
    assert(t && t->vec_dot);
    const size_t wrow = kern_row_size(wtype, n_in);
    const char *a = (const char *)x;
    size_t arow = (size_t)n_in * sizeof(float);
    if (t->vec_dot_type != KERN_F32) {
        const kern_traits *at = kern_ref_traits(t->vec_dot_type);
        arow = kern_row_size(t->vec_dot_type, n_in);
        for (int64_t i = 0; i < n_tok; i++) at->from_float(x + i * n_in, (char *)work + i * arow, n_in);
        a = work;
    }
    for (int64_t i = 0; i < n_tok; i++)
        for (int64_t o = 0; o < n_out; o++) t->vec_dot(n_in, &y[i * ldy + o], (const char *)w + o * wrow, a + i * arow);
}
