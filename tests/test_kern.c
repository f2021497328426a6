/* test_kern.c -- the kernels against references.
 *
 * (a) dequantization of every tensor of models/quant-types.gguf equals
 *     llama.cpp's values (refdata/dequant) bit for bit;
 * (b) every SIMD kernel against the scalar reference on random valid
 *     blocks, for each ISA this CPU has: dots within a tight relative
 *     tolerance (integer parts exact, float order differs), activation
 *     quantization bit-exact, f32 ops within 1e-5;
 * (c) kern_matmul against kern_matmul_ref for every weight type, several
 *     token counts and odd row counts, with 1 and 2 threads;
 *     (b) and (c) include the wide prefill tiles (check_wide);
 * (d) the pool runs a task on all threads 1000 times;
 * (e) traits and row sizes, NULL for unsupported types.
 * The tolerance of a dot is relative to sum |w_i * a_i| (from dequantized
 * values), the natural scale of its rounding error.
 *
 * Built with -DKERN_AMX_EMU (test_kern_amx_emu), it checks the AMX kernel
 * on CPUs without a tile unit: its tile instructions run in C
 * (kern/amx_emu.h), and every check runs for "amx" alone.
 */
#include <stdatomic.h>

#include "t.h"
#include "gguf/gguf.h"
#include "kern/kern.h"
#include "kern/kern_impl.h"

#ifdef KERN_AMX_EMU
static const char *isas[] = {"amx"};
#else
static const char *isas[] = {"scalar", "avx2", "avx512", "amx"};
#endif
static const int wtypes[] = {KERN_F32,  KERN_F16,  KERN_BF16, KERN_Q4_0, KERN_Q4_1, KERN_Q5_0,
                             KERN_Q5_1, KERN_Q8_0, KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static float frand(void) { return (float)rnd() / 2147483648.0f * 2.0f - 1.0f; } /* [-1, 1) approx */

/* n values of random valid data of type `type` into dst (row_size bytes). */
static void random_row(int type, void *dst, int64_t n) {
    const kern_traits *t = kern_ref_traits(type);
    const int64_t nb = n / t->blck;
    unsigned char *p = dst;
    for (size_t i = 0; i < kern_row_size(type, n); i++) p[i] = (unsigned char)rnd();
    for (int64_t i = 0; i < nb; i++) {
        switch (type) {
        case KERN_F32: ((float *)dst)[i] = frand() * 3; break;
        case KERN_F16: ((kern_f16 *)dst)[i] = core_f32_to_f16(frand() * 3); break;
        case KERN_BF16: ((uint16_t *)dst)[i] = core_f32_to_bf16(frand() * 3); break;
        case KERN_Q4_0: ((kern_block_q4_0 *)dst)[i].d = core_f32_to_f16(frand() * 0.1f); break;
        case KERN_Q5_0: ((kern_block_q5_0 *)dst)[i].d = core_f32_to_f16(frand() * 0.1f); break;
        case KERN_Q4_1:
            ((kern_block_q4_1 *)dst)[i].d = core_f32_to_f16(frand() * 0.1f);
            ((kern_block_q4_1 *)dst)[i].m = core_f32_to_f16(frand() * 0.5f);
            break;
        case KERN_Q5_1:
            ((kern_block_q5_1 *)dst)[i].d = core_f32_to_f16(frand() * 0.1f);
            ((kern_block_q5_1 *)dst)[i].m = core_f32_to_f16(frand() * 0.5f);
            break;
        case KERN_Q8_0: ((kern_block_q8_0 *)dst)[i].d = core_f32_to_f16(frand() * 0.01f); break;
        case KERN_Q4_K:
            ((kern_block_q4_K *)dst)[i].d = core_f32_to_f16(frand() * 0.01f);
            ((kern_block_q4_K *)dst)[i].dmin = core_f32_to_f16(frand() * 0.01f);
            break;
        case KERN_Q5_K:
            ((kern_block_q5_K *)dst)[i].d = core_f32_to_f16(frand() * 0.01f);
            ((kern_block_q5_K *)dst)[i].dmin = core_f32_to_f16(frand() * 0.01f);
            break;
        case KERN_Q6_K: ((kern_block_q6_K *)dst)[i].d = core_f32_to_f16(frand() * 0.001f); break;
        }
    }
}

/* sum |w_i| |a_i| with both sides dequantized by the reference */
static double abs_dot(int wtype, const void *w, const void *a, int64_t n) {
    const kern_traits *t = kern_ref_traits(wtype);
    float *wf = malloc((size_t)n * 4), *af = malloc((size_t)n * 4);
    t->dequant_row(w, wf, n);
    kern_ref_traits(t->vec_dot_type)->dequant_row(a, af, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += fabs((double)wf[i] * af[i]);
    free(wf);
    free(af);
    return s;
}

/* ---- (e) traits ---- */

static void test_traits(void) {
    CHECK(kern_init("scalar") == 0);
    CHECK(kern_get_traits(10) == NULL); /* Q2_K */
    CHECK(kern_get_traits(-1) == NULL);
    CHECK(kern_get_traits(KERN_TYPE_MAX) == NULL);
    CHECK(kern_get_traits(100) == NULL);
    CHECK(kern_ref_traits(11) == NULL);
    CHECK_EQ_INT(kern_row_size(10, 256), 0);
    CHECK_EQ_INT(kern_row_size(KERN_Q4_1, 64), 40);
    CHECK_EQ_INT(kern_row_size(KERN_Q5_0, 64), 44);
    CHECK_EQ_INT(kern_row_size(KERN_Q5_1, 64), 48);
    CHECK_EQ_INT(kern_row_size(KERN_Q4_K, 2048), 8 * 144);
    CHECK_EQ_INT(kern_row_size(KERN_Q6_K, 512), 2 * 210);
    CHECK_EQ_INT(kern_row_size(KERN_Q5_K, 256), 176);
    CHECK_EQ_INT(kern_row_size(KERN_Q8_0, 64), 68);
    CHECK_EQ_INT(kern_row_size(KERN_Q4_0, 64), 36);
    CHECK_EQ_INT(kern_row_size(KERN_Q8_K, 512), 584);
    CHECK_EQ_INT(kern_row_size(KERN_F16, 7), 14);
    CHECK_EQ_INT(kern_row_size(KERN_BF16, 7), 14);
    CHECK_EQ_INT(kern_row_size(KERN_F32, 7), 28);
    CHECK(kern_get_traits(KERN_Q8_K)->vec_dot == NULL);
    CHECK(kern_get_traits(KERN_Q4_K)->vec_dot_type == KERN_Q8_K);
    CHECK(kern_get_traits(KERN_Q6_K)->vec_dot_type == KERN_Q8_K);
    CHECK(kern_get_traits(KERN_Q8_0)->vec_dot_type == KERN_Q8_0);
    CHECK(kern_get_traits(KERN_Q4_0)->vec_dot_type == KERN_Q8_0);
    CHECK(kern_get_traits(KERN_F16)->vec_dot_type == KERN_F16);
    CHECK(kern_get_traits(KERN_BF16)->vec_dot_type == KERN_BF16);
    CHECK(kern_get_traits(KERN_F32)->vec_dot_type == KERN_F32);
    CHECK_EQ_STR(kern_get_traits(KERN_Q4_K)->name, "Q4_K");
    CHECK(kern_init("sse9") == CORE_EUNSUP);
    CHECK_EQ_STR(kern_isa(), "scalar");
    CHECK(kern_init(NULL) == 0);
    fprintf(stderr, "  auto ISA: %s\n", kern_isa());
}

/* The legacy blocks' bit layout, built by hand from known values: value j
 * of a block is nibble j of qs (low nibbles first, then high ones) plus,
 * for Q5, bit j of qh (little-endian) as its 16. */
static void test_legacy_layout(void) {
    int q[32];
    for (int j = 0; j < 32; j++) q[j] = (j * 7 + 3) % 32;
    kern_block_q5_0 b0;
    kern_block_q5_1 b1;
    kern_block_q4_1 b4;
    memset(&b0, 0, sizeof b0);
    memset(&b1, 0, sizeof b1);
    memset(&b4, 0, sizeof b4);
    b0.d = b1.d = b4.d = core_f32_to_f16(0.5f);
    b1.m = b4.m = core_f32_to_f16(-2.0f);
    for (int j = 0; j < 32; j++) {
        const int lo = q[j] & 15, hi = q[j] >> 4;
        const int at = j % 16, shift = j < 16 ? 0 : 4;
        b0.qs[at] |= (uint8_t)(lo << shift);
        b1.qs[at] |= (uint8_t)(lo << shift);
        b4.qs[at] |= (uint8_t)(lo << shift);
        b0.qh[j / 8] |= (uint8_t)(hi << (j % 8));
        b1.qh[j / 8] |= (uint8_t)(hi << (j % 8));
    }
    float o0[32], o1[32], o4[32];
    kern_ref_traits(KERN_Q5_0)->dequant_row(&b0, o0, 32);
    kern_ref_traits(KERN_Q5_1)->dequant_row(&b1, o1, 32);
    kern_ref_traits(KERN_Q4_1)->dequant_row(&b4, o4, 32);
    int bad = 0;
    for (int j = 0; j < 32; j++) {
        bad += o0[j] != (q[j] - 16) * 0.5f;
        bad += o1[j] != q[j] * 0.5f - 2.0f;
        bad += o4[j] != (q[j] & 15) * 0.5f - 2.0f;
    }
    CHECK_MSG(bad == 0, "%d legacy values differ", bad);
    /* the dots equal the float dot of the dequantized values (small
     * integers times powers of two: exact) in every ISA */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)((j % 5) - 2);
    kern_block_q8_0 a;
    kern_ref_traits(KERN_Q8_0)->from_float(x, &a, 32);
    float ax[32];
    kern_ref_traits(KERN_Q8_0)->dequant_row(&a, ax, 32);
    const void *blocks[3] = {&b0, &b1, &b4};
    const float *vals[3] = {o0, o1, o4};
    const int types[3] = {KERN_Q5_0, KERN_Q5_1, KERN_Q4_1};
    for (size_t ii = 0; ii < CORE_ARRAY_LEN(isas); ii++) {
        if (kern_init(isas[ii]) != 0) continue;
        for (int t = 0; t < 3; t++) {
            double want = 0;
            for (int j = 0; j < 32; j++) want += (double)vals[t][j] * ax[j];
            float got = 0;
            kern_get_traits(types[t])->vec_dot(32, &got, blocks[t], &a);
            CHECK_MSG(fabs(got - want) <= 1e-4 * (1 + fabs(want)), "%s %s: %g, want %g", isas[ii],
                      kern_get_traits(types[t])->name, got, want);
        }
    }
    kern_init(NULL);
}

/* ---- (a) dequantization against llama.cpp ---- */

static void test_dequant_refdata(void) {
    const char *gpath = t_shared("models/quant-types.gguf");
    if (!gpath) T_SKIP("shared/models/quant-types.gguf absent");
    static const struct { const char *tensor, *file; int type; } cases[] = {
        {"t.f32", "refdata/dequant/f32.f32", KERN_F32},    {"t.f16", "refdata/dequant/f16.f32", KERN_F16},
        {"t.bf16", "refdata/dequant/bf16.f32", KERN_BF16}, {"t.q8_0", "refdata/dequant/q8_0.f32", KERN_Q8_0},
        {"t.q4_0", "refdata/dequant/q4_0.f32", KERN_Q4_0}, {"t.q4_k", "refdata/dequant/q4_k.f32", KERN_Q4_K},
        {"t.q5_k", "refdata/dequant/q5_k.f32", KERN_Q5_K}, {"t.q6_k", "refdata/dequant/q6_k.f32", KERN_Q6_K},
    };
    gguf *g = NULL;
    core_err err = {0};
    if (gguf_open(&g, gpath, &err) != 0) T_SKIP("gguf reader failed (%s): not ready yet?", err.msg);
    for (size_t ii = 0; ii < CORE_ARRAY_LEN(isas); ii++) {
        if (kern_init(isas[ii]) != 0) continue;
        for (size_t k = 0; k < CORE_ARRAY_LEN(cases); k++) {
            const gguf_tensor *t = gguf_find_tensor(g, cases[k].tensor);
            CHECK_MSG(t != NULL, "tensor %s", cases[k].tensor);
            const char *fpath = t_shared(cases[k].file);
            CHECK(fpath != NULL);
            if (!t || !fpath) continue;
            CHECK_EQ_INT(t->type, cases[k].type);
            char *ref;
            size_t len;
            CHECK(core_read_file(fpath, &ref, &len, &err) == 0);
            CHECK_EQ_INT(len, t->n_elems * 4);
            CHECK_EQ_INT(t->nbytes, kern_row_size(cases[k].type, (int64_t)t->ne[0]) * (t->n_elems / t->ne[0]));
            const int64_t n = (int64_t)t->ne[0], rows = (int64_t)(t->n_elems / t->ne[0]);
            float *out = malloc(t->n_elems * 4);
            const kern_traits *tr = kern_get_traits(cases[k].type);
            for (int64_t r = 0; r < rows; r++)
                tr->dequant_row((const char *)t->data + r * kern_row_size(cases[k].type, n), out + r * n, n);
            int bad = 0;
            for (uint64_t i = 0; i < t->n_elems; i++) {
                float rv;
                memcpy(&rv, ref + 4 * i, 4);
                if (memcmp(&rv, &out[i], 4) != 0 && !(rv == out[i])) bad++;
            }
            CHECK_MSG(bad == 0, "%s (%s): %d values differ", cases[k].tensor, isas[ii], bad);
            free(out);
            free(ref);
        }
    }
    gguf_close(g);
    kern_init(NULL);
}

/* ---- (b) SIMD against scalar ---- */

static void check_quantize(const char *isa) {
    static const int lens[] = {1, 2, 3, 8};
    for (int ty = 0; ty < 2; ty++) {
        const int type = ty ? KERN_Q8_K : KERN_Q8_0;
        for (size_t li = 0; li < CORE_ARRAY_LEN(lens); li++) {
            const int64_t n = lens[li] * (type == KERN_Q8_K ? QK_K : QK8_0) * (ty ? 1 : 3);
            float *x = malloc((size_t)n * 4);
            for (int64_t i = 0; i < n; i++) x[i] = frand() * (1 + (float)(rnd() % 100));
            if (li == 1) for (int64_t i = 0; i < n / 2; i++) x[i] = 0; /* zero blocks */
            if (li == 2) for (int64_t i = 0; i < n; i++) x[i] = (float)((int)(rnd() % 9) - 4) * 0.5f; /* ties */
            if (li == 3) x[5] = -1000, x[9] = 1000; /* equal magnitudes: the first wins */
            const size_t rs = kern_row_size(type, n);
            void *a = malloc(rs), *b = malloc(rs);
            memset(a, 0, rs);
            memset(b, 0, rs);
            kern_ref_traits(type)->from_float(x, a, n);
            kern_get_traits(type)->from_float(x, b, n);
            CHECK_MSG(memcmp(a, b, rs) == 0, "%s quantize %s n=%lld differs", isa, kern_get_traits(type)->name,
                      (long long)n);
            free(a);
            free(b);
            free(x);
        }
    }
}

static void check_dots(const char *isa) {
    static const int kblocks[] = {1, 2, 3, 8, 11, 43};
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(wtypes); ti++) {
        const int type = wtypes[ti];
        const kern_traits *rt = kern_ref_traits(type), *st = kern_get_traits(type);
        for (size_t li = 0; li < CORE_ARRAY_LEN(kblocks); li++) {
            for (int extra = 0; extra < (rt->blck == 1 ? 2 : 1); extra++) {
                int64_t n = kblocks[li] * (rt->blck == 1 ? 32 : rt->blck) + (extra ? kblocks[li] % 31 + 1 : 0);
                void *w = malloc(kern_row_size(type, n));
                random_row(type, w, n);
                float *x = malloc((size_t)n * 4);
                for (int64_t i = 0; i < n; i++) x[i] = frand() * 2;
                void *a = malloc(kern_row_size(rt->vec_dot_type, n));
                kern_ref_traits(rt->vec_dot_type)->from_float(x, a, n);
                float sr = 0, ss = 0;
                rt->vec_dot(n, &sr, w, a);
                st->vec_dot(n, &ss, w, a);
                const double tol = 2e-6 * abs_dot(type, w, a, n) + 1e-30;
                CHECK_MSG(fabs((double)sr - ss) <= tol, "%s %s n=%lld: ref %.9g simd %.9g tol %g", isa, rt->name,
                          (long long)n, sr, ss, tol);
                /* tile kernel, 3 rows x 5 tokens of the same data shifted */
                free(w);
                free(x);
                free(a);
            }
        }
    }
}

static void check_tiles(const char *isa) {
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(wtypes); ti++) {
        const int type = wtypes[ti];
        const kern_traits *rt = kern_ref_traits(type);
        const int64_t n = 3 * (rt->blck == 1 ? 40 : rt->blck);
        const size_t wr = kern_row_size(type, n), ar = kern_row_size(rt->vec_dot_type, n);
        for (int nr = 1; nr <= KERN_TILE_R; nr++) {
            for (int nc = 1; nc <= kern_cur.tile_c[type]; nc++) {
                char *w = malloc(wr * (size_t)nr), *a = malloc(ar * (size_t)nc);
                for (int r = 0; r < nr; r++) random_row(type, w + r * wr, n);
                float *x = malloc((size_t)n * 4);
                for (int c = 0; c < nc; c++) {
                    for (int64_t i = 0; i < n; i++) x[i] = frand();
                    kern_ref_traits(rt->vec_dot_type)->from_float(x, a + c * ar, n);
                }
                /* the tiles' own order of the activations, where they have one */
                char *ap = malloc(ar * (size_t)nc);
                memcpy(ap, a, ar * (size_t)nc);
                if (kern_cur.perm[type]) kern_cur.perm[type](ap, ar, nc, n);
                float y[KERN_TILE_CMAX * 7];
                for (size_t i = 0; i < CORE_ARRAY_LEN(y); i++) y[i] = -12345.f;
                (nc == 1 ? kern_cur.tile1 : kern_cur.tile)[type](n, w, wr, nr, ap, ar, nc, y, 7);
                if (nc == 1 && (nr & 1)) { /* and the n_tok > 1 tile on one token */
                    float y2[KERN_TILE_R];
                    kern_cur.tile[type](n, w, wr, nr, ap, ar, 1, y2, 1);
                    for (int r = 0; r < nr; r++) {
                        float want;
                        rt->vec_dot(n, &want, w + r * wr, a);
                        CHECK_MSG(fabs((double)want - y2[r]) <= 2e-6 * abs_dot(type, w + r * wr, a, n), "%s %s tile 1 token", isa, rt->name);
                    }
                }
                for (int c = 0; c < KERN_TILE_CMAX; c++)
                    for (int r = 0; r < 7; r++) {
                        const float got = y[c * 7 + r];
                        if (c >= nc || r >= nr) {
                            CHECK_MSG(got == -12345.f, "%s %s tile wrote outside %dx%d", isa, rt->name, nr, nc);
                            continue;
                        }
                        float want;
                        rt->vec_dot(n, &want, w + r * wr, a + c * ar);
                        const double tol = 2e-6 * abs_dot(type, w + r * wr, a + c * ar, n);
                        CHECK_MSG(fabs((double)want - got) <= tol, "%s %s tile %dx%d [%d,%d]: %.9g vs %.9g", isa,
                                  rt->name, nr, nc, r, c, want, got);
                    }
                free(w);
                free(a);
                free(ap);
                free(x);
            }
        }
    }
}

static int rel_ok(float a, float b, float tol) { return fabsf(a - b) <= tol * fmaxf(1e-6f, fmaxf(fabsf(a), fabsf(b))); }

static void check_ops(const char *isa) {
    static const int lens[] = {1, 7, 16, 33, 64, 100, 2048};
    for (size_t li = 0; li < CORE_ARRAY_LEN(lens); li++) {
        const int n = lens[li];
        float *x = malloc(n * 4), *w = malloc(n * 4), *u = malloc(n * 4), *o1 = malloc(n * 4), *o2 = malloc(n * 4);
        kern_f16 *h1 = malloc(n * 2), *h2 = malloc(n * 2);
        for (int i = 0; i < n; i++) x[i] = frand() * 8, w[i] = frand(), u[i] = frand() * 3;
        int bad = 0;
        kern_ref_rmsnorm(o1, x, w, n, 1e-6f);
        kern_rmsnorm(o2, x, w, n, 1e-6f);
        for (int i = 0; i < n; i++) bad += !rel_ok(o1[i], o2[i], 1e-5f);
        CHECK_MSG(bad == 0, "%s rmsnorm n=%d", isa, n);
        bad = 0;
        kern_ref_silu_mul(o1, x, u, n);
        kern_silu_mul(o2, x, u, n);
        for (int i = 0; i < n; i++) bad += !(fabsf(o1[i] - o2[i]) <= 1e-5f * (fabsf(o1[i]) + fabsf(u[i]) * 1e-2f));
        CHECK_MSG(bad == 0, "%s silu_mul n=%d", isa, n);
        bad = 0;
        for (int i = 0; i < n; i++) o1[i] = o2[i] = x[i] * 4;
        kern_ref_softmax(o1, n);
        kern_softmax(o2, n);
        for (int i = 0; i < n; i++) bad += !(fabsf(o1[i] - o2[i]) <= 1e-5f * fabsf(o1[i]) + 1e-12f);
        CHECK_MSG(bad == 0, "%s softmax n=%d", isa, n);
        bad = 0;
        kern_ref_f32_to_f16(x, h1, n);
        kern_f32_to_f16(x, h2, n);
        CHECK_MSG(memcmp(h1, h2, n * 2) == 0, "%s f32_to_f16 n=%d", isa, n);
        kern_ref_f16_to_f32(h1, o1, n);
        kern_f16_to_f32(h1, o2, n);
        CHECK_MSG(memcmp(o1, o2, n * 4) == 0, "%s f16_to_f32 n=%d", isa, n);
        free(x), free(w), free(u), free(o1), free(o2), free(h1), free(h2);
    }
}

/* kern_attn against kern_attn_ref: random q, K, V (f16 and f32 rows with
 * a stride wider than a head, 8-bit tiles three heads apart), several head
 * counts, head sizes (one not a multiple of 8: the fallback; the 8-bit
 * cache takes multiples of 32), lengths around the block size; and a split
 * into two ranges (on a tile boundary) merged with kern_attn_merge equals
 * one pass; continuing a pass and taking a head alone change no bit.
 * Tolerance 5e-5 relative: the SIMD exp and the summation order differ
 * (2.5e-5 seen on f32 rows whose scores spread wide). */
static void check_attn(const char *isa) {
    static const int ngs[] = {1, 3, 4, 5, 8}, hds[] = {6, 40, 64, 80, 128}, ns[] = {1, 7, 32, 33, 100, 300};
    static const char *const names[] = {"f16", "f32", "q8"};
    for (int kt = 0; kt < 3; kt++) {
        const int type = kt == 0 ? KERN_F16 : kt == 1 ? KERN_F32 : KERN_KV_Q8;
        for (size_t gi = 0; gi < CORE_ARRAY_LEN(ngs); gi++)
            for (size_t hi = 0; hi < CORE_ARRAY_LEN(hds); hi++)
                for (size_t ni = 0; ni < CORE_ARRAY_LEN(ns); ni++) {
                    const int ng = ngs[gi], hd = hds[hi], n = ns[ni];
                    if (kt == 2 && hd % 32) continue;
                    /* elt: bytes of one head's row (or tile); stride: three heads' worth, the middle one used */
                    const size_t elt = kt == 2 ? kern_kv_q8_tile_bytes(hd) : (size_t)hd * (kt ? 4 : 2);
                    const size_t stride = 3 * elt, rows = kt == 2 ? (size_t)(n + KERN_KV_TILE - 1) / KERN_KV_TILE : (size_t)n;
                    char *k = malloc(stride * rows), *v = malloc(stride * rows);
                    float *fk = malloc(sizeof(float) * hd), *fv = malloc(sizeof(float) * hd);
                    for (size_t r = 0; r < 3 * (size_t)n; r++) {
                        for (int i = 0; i < hd; i++) fk[i] = frand() * 2, fv[i] = frand() * 2;
                        if (kt == 2) { /* position r % n of head r / n */
                            const size_t at = (r / (size_t)n) * elt + (r % (size_t)n) / KERN_KV_TILE * stride;
                            kern_kv_q8_store(k + at, (int)(r % (size_t)n % KERN_KV_TILE), fk, hd, 0);
                            kern_kv_q8_store(v + at, (int)(r % (size_t)n % KERN_KV_TILE), fv, hd, 1);
                            continue;
                        }
                        char *kr = k + r * elt, *vr = v + r * elt;
                        for (int i = 0; i < hd; i++) {
                            if (kt) ((float *)kr)[i] = fk[i], ((float *)vr)[i] = fv[i];
                            else ((kern_f16 *)kr)[i] = core_f32_to_f16(fk[i]), ((kern_f16 *)vr)[i] = core_f32_to_f16(fv[i]);
                        }
                    }
                    free(fk), free(fv);
                    float *q = malloc(sizeof(float) * ng * hd);
                    for (int i = 0; i < ng * hd; i++) q[i] = frand();
                    float m[3][KERN_ATTN_MAX_G], l[3][KERN_ATTN_MAX_G];
                    float *acc[3];
                    for (int s = 0; s < 3; s++) {
                        acc[s] = calloc((size_t)ng * hd, sizeof(float));
                        for (int g = 0; g < ng; g++) m[s][g] = -INFINITY, l[s][g] = 0;
                    }
                    const float scale = 1.0f / sqrtf((float)hd);
                    kern_attn_ref(type, q, ng, hd, k + elt, v + elt, stride, n, scale, m[0], l[0], acc[0]);
                    kern_attn(type, q, ng, hd, k + elt, v + elt, stride, n, scale, m[1], l[1], acc[1]);
                    /* split-K: [0, h) and [h, n); hs rows (tiles) in */
                    const int h = kt == 2 ? n / 3 / KERN_KV_TILE * KERN_KV_TILE : n / 3;
                    const size_t hs = kt == 2 ? (size_t)h / KERN_KV_TILE : (size_t)h;
                    kern_attn(type, q, ng, hd, k + elt + hs * stride, v + elt + hs * stride, stride, n - h, scale,
                              m[2], l[2], acc[2]);
                    float m1[KERN_ATTN_MAX_G], l1[KERN_ATTN_MAX_G];
                    float *a1 = calloc((size_t)ng * hd, sizeof(float));
                    for (int g = 0; g < ng; g++) m1[g] = -INFINITY, l1[g] = 0;
                    kern_attn(type, q, ng, hd, k + elt, v + elt, stride, h, scale, m1, l1, a1);
                    kern_attn_merge(ng, hd, m1, l1, a1, m[2], l[2], acc[2]);
                    int bad = 0, badm = 0;
                    float worst = 0;
                    for (int g = 0; g < ng; g++)
                        for (int i = 0; i < hd; i++) {
                            const float want = acc[0][g * hd + i] / l[0][g];
                            const float got = acc[1][g * hd + i] / l[1][g], got2 = a1[g * hd + i] / l1[g];
                            bad += !(fabsf(want - got) <= 5e-5f * (1 + fabsf(want)));
                            badm += !(fabsf(want - got2) <= 5e-5f * (1 + fabsf(want)));
                            worst = fmaxf(worst, fmaxf(fabsf(want - got), fabsf(want - got2)) / (1 + fabsf(want)));
                        }
                    CHECK_MSG(bad == 0 && badm == 0, "%s attn %s ng=%d hd=%d n=%d: %d bad, %d bad after merge (worst %.3g)",
                              isa, names[kt], ng, hd, n, bad, badm, worst);
                    /* bit for bit, what the model's grouped prompt attention
                     * rests on: a pass continued at a block boundary is one
                     * pass, and the first head alone is its part of them all */
                    const int c = n / 2 / KERN_ATTN_BLOCK * KERN_ATTN_BLOCK;
                    const size_t cs = kt == 2 ? (size_t)c / KERN_KV_TILE : (size_t)c;
                    memset(a1, 0, sizeof(float) * (size_t)ng * hd);
                    for (int g = 0; g < ng; g++) m1[g] = -INFINITY, l1[g] = 0;
                    kern_attn(type, q, ng, hd, k + elt, v + elt, stride, c, scale, m1, l1, a1);
                    kern_attn(type, q, ng, hd, k + elt + cs * stride, v + elt + cs * stride, stride, n - c, scale, m1, l1,
                              a1);
                    CHECK_MSG(memcmp(a1, acc[1], sizeof(float) * (size_t)ng * hd) == 0 &&
                                  memcmp(l1, l[1], sizeof(float) * (size_t)ng) == 0,
                              "%s attn %s ng=%d hd=%d n=%d: continued at %d differs", isa, names[kt], ng, hd, n, c);
                    m1[0] = -INFINITY, l1[0] = 0;
                    memset(a1, 0, sizeof(float) * (size_t)hd);
                    kern_attn(type, q, 1, hd, k + elt, v + elt, stride, n, scale, m1, l1, a1);
                    CHECK_MSG(memcmp(a1, acc[1], sizeof(float) * (size_t)hd) == 0 && l1[0] == l[1][0],
                              "%s attn %s ng=%d hd=%d n=%d: head 0 alone differs", isa, names[kt], ng, hd, n);
                    for (int s = 0; s < 3; s++) free(acc[s]);
                    free(a1), free(q), free(k), free(v);
                }
    }
}

/* The 8-bit KV tiles: a stored position reads back as its Q8_0 blocks
 * (K and V layouts), the other positions of the tile untouched; and the
 * reference attention over them stays close to float attention over the
 * unquantized values (the integer arithmetic of kern.h adds no error
 * beyond the Q8_0 rounding of q, K and V). */
static void test_kv_q8(void) {
    enum { HD = 128, N = 77 };
    /* its own data, whatever the tests before it drew: the bound below is
     * for these scores (a nearly one-hot softmax amplifies rounding) */
    rng_state = 0x9e3779b97f4a7c15ull;
    const size_t tb = kern_kv_q8_tile_bytes(HD);
    CHECK_EQ_INT((int)tb, 32 * 136);
    char *t = calloc(1, tb);
    float x[HD], y[HD], z[HD];
    for (int is_v = 0; is_v < 2; is_v++) {
        memset(t, 0, tb);
        for (int i = 0; i < HD; i++) x[i] = frand() * 3;
        kern_kv_q8_store(t, 5, x, HD, is_v);
        kern_block_q8_0 blk[HD / 32];
        kern_ref_traits(KERN_Q8_0)->from_float(x, blk, HD);
        kern_ref_traits(KERN_Q8_0)->dequant_row(blk, y, HD);
        kern_kv_q8_load(t, 5, z, HD, is_v);
        CHECK_MSG(memcmp(y, z, sizeof y) == 0, "kv q8 round trip (%s)", is_v ? "V" : "K");
        kern_kv_q8_load(t, 4, z, HD, is_v);
        int zero = 1;
        for (int i = 0; i < HD; i++) zero &= z[i] == 0;
        CHECK_MSG(zero, "kv q8 store touched another position (%s)", is_v ? "V" : "K");
    }
    free(t);
    /* attention: 8-bit tiles against f32 rows of the values they hold (q,
     * K and V rounded through Q8_0 first): the integer path adds only
     * float rounding. Against the unrounded values the gap depends on how
     * peaked the softmax is, so it is printed, not bounded. */
    const size_t tiles = (N + KERN_KV_TILE - 1) / KERN_KV_TILE;
    char *k8 = calloc(tiles, tb), *v8 = calloc(tiles, tb);
    float *kf = malloc(sizeof(float) * HD * N), *vf = malloc(sizeof(float) * HD * N), q[4 * HD], qr[4 * HD];
    float *kr = malloc(sizeof(float) * HD * N), *vr = malloc(sizeof(float) * HD * N);
    const kern_traits *q8 = kern_ref_traits(KERN_Q8_0);
    kern_block_q8_0 blk[HD / 32];
    for (int p = 0; p < N; p++) {
        for (int i = 0; i < HD; i++) kf[p * HD + i] = frand() * 2, vf[p * HD + i] = frand() * 2;
        kern_kv_q8_store(k8 + p / KERN_KV_TILE * tb, p % KERN_KV_TILE, kf + p * HD, HD, 0);
        kern_kv_q8_store(v8 + p / KERN_KV_TILE * tb, p % KERN_KV_TILE, vf + p * HD, HD, 1);
        q8->from_float(kf + p * HD, blk, HD), q8->dequant_row(blk, kr + p * HD, HD);
        q8->from_float(vf + p * HD, blk, HD), q8->dequant_row(blk, vr + p * HD, HD);
    }
    for (int i = 0; i < 4 * HD; i++) q[i] = frand() * 2;
    for (int g = 0; g < 4; g++) q8->from_float(q + g * HD, blk, HD), q8->dequant_row(blk, qr + g * HD, HD);
    float m[3][4], l[3][4], acc[3][4 * HD] = {{0}};
    for (int g = 0; g < 4; g++) m[0][g] = m[1][g] = m[2][g] = -INFINITY, l[0][g] = l[1][g] = l[2][g] = 0;
    kern_attn_ref(KERN_F32, q, 4, HD, kf, vf, HD * sizeof(float), N, 0.3f, m[0], l[0], acc[0]);
    kern_attn_ref(KERN_KV_Q8, q, 4, HD, k8, v8, tb, N, 0.3f, m[1], l[1], acc[1]);
    kern_attn_ref(KERN_F32, qr, 4, HD, kr, vr, HD * sizeof(float), N, 0.3f, m[2], l[2], acc[2]);
    float worst = 0, gap = 0, big = 0;
    for (int i = 0; i < 4 * HD; i++) {
        const float a = acc[0][i] / l[0][i / HD], b = acc[1][i] / l[1][i / HD], c = acc[2][i] / l[2][i / HD];
        worst = fmaxf(worst, fabsf(c - b)), gap = fmaxf(gap, fabsf(a - b)), big = fmaxf(big, fabsf(a));
    }
    fprintf(stderr, "  kv q8 attention: max |diff| %.2g against its rounded values, %.4f against f32 (outputs up to %.3f)\n",
            worst, gap, big);
    CHECK_MSG(worst <= 1e-4f * big && gap > 0, "kv q8 attention off by %.3g from its rounded values (outputs up to %.3f)",
              worst, big);
    free(kr), free(vr);
    free(k8), free(v8), free(kf), free(vf);
}

/* Wide tiles (prefill, kern_impl.tile_wide, given the activations in the
 * layout of kern_impl.prep where an ISA has one): 16-row x up to KERN_WIDE_C
 * token tiles over K of 1-9 blocks (the AVX-512 kernels repack by slabs of
 * 1 block up to 32 tokens and 4 above, and go 8 tokens at a time with the
 * rest, 1-7, in one pass: these counts cross every boundary), on random
 * data and on extremes: every quant at its maximum
 * against activations all at -128 or near +127, the bounds of the int16
 * partial sums. Checks every output against ref.c's dot and that nothing
 * outside nr x nc is written. */
static void check_wide(const char *isa) {
    static const int kblocks[] = {1, 4, 5, 9};
    static const int nrs[] = {1, 7, 16};
    static const int ncs[] = {1, 2, 3, 5, 6, 8, 11, 13, 20, 31, 32, 33, KERN_WIDE_C};
    const int ldy = KERN_WIDE_R + 3;
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(wtypes); ti++) {
        const int type = wtypes[ti];
        if (!kern_cur.tile_wide[type]) continue;
        const kern_traits *rt = kern_ref_traits(type);
        for (size_t ki = 0; ki < CORE_ARRAY_LEN(kblocks); ki++)
            for (int mode = 0; mode < 3; mode++) {
                const int64_t n = (int64_t)kblocks[ki] * rt->blck;
                const size_t wr = kern_row_size(type, n), ar = kern_row_size(rt->vec_dot_type, n);
                char *w = malloc(wr * KERN_WIDE_R), *a = malloc(ar * KERN_WIDE_C);
                float *x = malloc((size_t)n * 4), *y = malloc(sizeof(float) * (size_t)ldy * KERN_WIDE_C);
                const size_t pg = kern_cur.prep[type] ? (size_t)kblocks[ki] * kern_cur.prep_block[type] : 0;
                char *prep = pg ? aligned_alloc(64, pg * (KERN_WIDE_C / KERN_PREP_T)) : NULL;
                for (int r = 0; r < KERN_WIDE_R; r++) {
                    random_row(type, w + r * wr, n);
                    if (mode == 0) continue;
                    for (int64_t i = 0; i < n / rt->blck; i++) { /* quants at their maximum */
                        if (type == KERN_Q4_K) {
                            kern_block_q4_K *b = (kern_block_q4_K *)(w + r * wr) + i;
                            memset(b->qs, 0xFF, sizeof b->qs);
                        } else if (type == KERN_Q6_K) {
                            kern_block_q6_K *b = (kern_block_q6_K *)(w + r * wr) + i;
                            memset(b->ql, 0xFF, sizeof b->ql), memset(b->qh, 0xFF, sizeof b->qh);
                        }
                    }
                }
                for (int c = 0; c < KERN_WIDE_C; c++) {
                    for (int64_t i = 0; i < n; i++) x[i] = mode == 0 ? frand() : mode == 1 ? -1.f : 0.999f;
                    if (mode == 2) x[c % n] = -1.f; /* -> -128 there, 127 elsewhere */
                    kern_ref_traits(rt->vec_dot_type)->from_float(x, a + c * ar, n);
                }
                for (size_t ri = 0; ri < CORE_ARRAY_LEN(nrs); ri++)
                    for (size_t ci = 0; ci < CORE_ARRAY_LEN(ncs); ci++) {
                        const int nr = nrs[ri], nc = ncs[ci];
                        for (int i = 0; i < ldy * KERN_WIDE_C; i++) y[i] = -12345.f;
                        const char *wa = a; /* the activations as the tile reads them */
                        size_t wb = ar;
                        if (prep) { /* the layout kern_matmul makes first (kern_impl.h "Prepared") */
                            for (int g = 0; g * KERN_PREP_T < nc; g++)
                                kern_cur.prep[type](a + (size_t)g * KERN_PREP_T * ar, ar,
                                                    CORE_MIN(KERN_PREP_T, nc - g * KERN_PREP_T), n, prep + g * pg);
                            wa = prep, wb = pg;
                        }
                        kern_cur.tile_wide[type](n, w, wr, nr, wa, wb, nc, y, ldy);
                        int bad = 0, outside = 0;
                        for (int c = 0; c < KERN_WIDE_C; c++)
                            for (int r = 0; r < ldy; r++) {
                                const float got = y[c * ldy + r];
                                if (c >= nc || r >= nr) {
                                    outside += got != -12345.f;
                                    continue;
                                }
                                float want;
                                rt->vec_dot(n, &want, w + r * wr, a + c * ar);
                                const double tol = 2e-6 * abs_dot(type, w + r * wr, a + c * ar, n) + 1e-30;
                                if (!(fabs((double)want - got) <= tol)) {
                                    if (!bad)
                                        fprintf(stderr, "  %s %s wide n=%lld mode %d %dx%d [%d,%d]: %.9g vs %.9g\n", isa,
                                                rt->name, (long long)n, mode, nr, nc, r, c, want, got);
                                    bad++;
                                }
                            }
                        CHECK_MSG(bad == 0 && outside == 0, "%s %s wide n=%lld mode %d %dx%d: %d bad, %d outside", isa,
                                  rt->name, (long long)n, mode, nr, nc, bad, outside);
                    }
                free(w), free(a), free(x), free(y), free(prep);
            }
    }
}

static void test_simd_vs_ref(void) {
    int ran = 0;
    for (size_t ii = 0; ii < CORE_ARRAY_LEN(isas); ii++) {
        if (kern_init(isas[ii]) != 0) {
            fprintf(stderr, "  (%s not supported here)\n", isas[ii]);
            continue;
        }
        CHECK_EQ_STR(kern_isa(), isas[ii]);
        if (ii > 0) { /* the SIMD entries really are installed */
            CHECK(kern_get_traits(KERN_Q4_K)->vec_dot != kern_ref_dot_q4_K);
            CHECK(kern_get_traits(KERN_Q8_K)->from_float != kern_ref_quantize_q8_K);
            CHECK(kern_cur.rmsnorm != kern_ref_rmsnorm);
        }
        check_quantize(isas[ii]);
        check_dots(isas[ii]);
        check_tiles(isas[ii]);
        check_wide(isas[ii]);
        check_ops(isas[ii]);
        check_attn(isas[ii]);
        ran++;
    }
    CHECK(ran >= 1);
    kern_init(NULL);
}

/* A token's outputs do not depend on the tokens beside it, bit for bit,
 * for every weight type and ISA: the matrix-vector kernel, the register
 * tiles and the wide tile (from wide_min, in slabs of 1 and 4 blocks) all
 * reduce a block to its exact integer sums and apply the same float steps
 * in block order. So a stream gets the same logits alone and batched with
 * any others, prompt rows included (test_engine), AMX's Q4_K tile too. */
static void test_token_invariance(void) {
    static const int counts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 16, 17, 32, 33, 40};
    enum { NO = 37, NMAX = 40 };
    kern_pool *pool = kern_pool_new(2);
    CHECK(pool != NULL);
    for (size_t ii = 0; ii < CORE_ARRAY_LEN(isas); ii++) {
        if (kern_init(isas[ii]) != 0) continue;
        for (size_t ti = 0; ti < CORE_ARRAY_LEN(wtypes); ti++) {
            const int type = wtypes[ti];
            const int64_t n_in = 9 * QK_K; /* slabs of 1 and of 4 with a short one */
            const size_t wr = kern_row_size(type, n_in);
            char *w = malloc(wr * NO);
            float *x = malloc(sizeof(float) * n_in * NMAX), *y = malloc(sizeof(float) * NO * NMAX);
            float *first = malloc(sizeof(float) * NO);
            void *work = malloc(kern_matmul_work_size(type, n_in, NMAX));
            for (int r = 0; r < NO; r++) random_row(type, w + r * wr, n_in);
            for (int64_t i = 0; i < n_in * NMAX; i++) x[i] = frand();
            int bad = 0;
            for (size_t ci = 0; ci < CORE_ARRAY_LEN(counts); ci++) {
                /* token 0 among n: the first count is the reference */
                kern_matmul(pool, type, w, NO, n_in, x, counts[ci], y, NO, work);
                if (ci == 0) memcpy(first, y, sizeof(float) * NO);
                else bad += memcmp(first, y, sizeof(float) * NO) != 0;
            }
            CHECK_MSG(bad == 0, "%s %s: token 0's outputs moved with the token count in %d counts", isas[ii],
                      kern_ref_traits(type)->name, bad);
            free(w), free(x), free(y), free(first), free(work);
        }
    }
    kern_pool_free(pool);
    kern_init(NULL);
}

static void test_ops_values(void) {
    /* a few values by hand */
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 1, 2}, o[4];
    kern_rmsnorm(o, x, w, 4, 0);
    const float s = 1.0f / sqrtf(7.5f);
    CHECK_NEAR(o[0], s, 1e-6);
    CHECK_NEAR(o[3], 8 * s, 1e-6);
    float sm[3] = {0, 0, 0};
    kern_softmax(sm, 3);
    CHECK_NEAR(sm[1], 1.0 / 3, 1e-7);
    float r[4] = {1, 0, 1, 0};
    kern_rope(r, 1, 4, 1, 10000.f);
    CHECK_NEAR(r[0], cos(1.0), 1e-6);
    CHECK_NEAR(r[1], sin(1.0), 1e-6);
    CHECK_NEAR(r[2], cos(0.01), 1e-6);
    CHECK_NEAR(r[3], sin(0.01), 1e-6);
    float g[2] = {0, 1}, u[2] = {5, 2};
    kern_silu_mul(o, g, u, 2);
    CHECK_NEAR(o[0], 0, 1e-7);
    CHECK_NEAR(o[1], 2 / (1 + exp(-1.0)), 1e-6);
}

/* ---- (c) matmul against matmul_ref ---- */

static void test_matmul(void) {
    static const int ntoks[] = {1, 3, 5, 8, 17, 150}; /* 5 up: wide tiles where an ISA has them */
    static const int nouts[] = {37, 259};
    kern_pool *pools[2] = {kern_pool_new(1), kern_pool_new(2)};
    CHECK(pools[0] && pools[1]);
    for (size_t ii = 0; ii < CORE_ARRAY_LEN(isas); ii++) {
        if (kern_init(isas[ii]) != 0) continue;
        for (size_t ti = 0; ti < CORE_ARRAY_LEN(wtypes); ti++) {
            const int type = wtypes[ti];
            const kern_traits *rt = kern_ref_traits(type);
            const int64_t n_in = rt->blck == 1 ? 200 : 2 * rt->blck;
            const size_t wr = kern_row_size(type, n_in);
            for (size_t oi = 0; oi < CORE_ARRAY_LEN(nouts); oi++) {
                const int64_t n_out = nouts[oi];
                char *w = malloc(wr * n_out);
                for (int64_t r = 0; r < n_out; r++) random_row(type, w + r * wr, n_in);
                float *wf = malloc(n_in * n_out * 4);
                for (int64_t r = 0; r < n_out; r++) rt->dequant_row(w + r * wr, wf + r * n_in, n_in);
                for (size_t ki = 0; ki < CORE_ARRAY_LEN(ntoks); ki++) {
                    const int64_t nt = ntoks[ki], ldy = n_out + 5;
                    float *x = malloc(n_in * nt * 4), *y0 = malloc(ldy * nt * 4), *y1 = malloc(ldy * nt * 4);
                    for (int64_t i = 0; i < n_in * nt; i++) x[i] = frand();
                    size_t ws = kern_matmul_work_size(type, n_in, nt);
                    void *work = malloc(ws ? ws : 1);
                    kern_matmul_ref(type, w, n_out, n_in, x, nt, y0, ldy, work);
                    for (int pi = 0; pi < 2; pi++) {
                        for (int64_t i = 0; i < ldy * nt; i++) y1[i] = -777.f;
                        kern_matmul(pools[pi], type, w, n_out, n_in, x, nt, y1, ldy, work);
                        int bad = 0, pad = 0;
                        for (int64_t t = 0; t < nt; t++) {
                            for (int64_t o = 0; o < n_out; o++) {
                                double sc = 0;
                                for (int64_t i = 0; i < n_in; i++) sc += fabs(wf[o * n_in + i] * x[t * n_in + i]);
                                if (!(fabs(y0[t * ldy + o] - y1[t * ldy + o]) <= 1e-5 * sc + 1e-30)) bad++;
                            }
                            for (int64_t o = n_out; o < ldy; o++) pad += y1[t * ldy + o] != -777.f;
                        }
                        CHECK_MSG(bad == 0 && pad == 0, "%s %s n_out=%lld n_tok=%lld threads=%d: %d bad, %d pad",
                                  isas[ii], rt->name, (long long)n_out, (long long)nt, pi + 1, bad, pad);
                    }
                    free(x), free(y0), free(y1), free(work);
                }
                free(w);
                free(wf);
            }
        }
    }
    kern_pool_free(pools[0]);
    kern_pool_free(pools[1]);
    kern_init(NULL);
}

/* ---- (d) pool ---- */

typedef struct {
    _Atomic int hits[8];
    _Atomic int total;
    int run;
    int seen[8];
} pool_ctx;

static void pool_task(void *arg, int ith, int nth) {
    pool_ctx *c = arg;
    atomic_fetch_add(&c->hits[ith], 1);
    atomic_fetch_add(&c->total, nth);
    c->seen[ith] = c->run; /* each thread writes only its slot */
}

static void test_pool(void) {
    for (int n = 1; n <= 3; n++) {
        kern_pool *p = kern_pool_new(n);
        CHECK(p != NULL);
        if (!p) continue;
        CHECK_EQ_INT(kern_pool_threads(p), n);
        pool_ctx c;
        memset(&c, 0, sizeof c);
        int bad = 0;
        for (int r = 1; r <= 1000; r++) {
            c.run = r;
            kern_pool_run(p, pool_task, &c);
            for (int i = 0; i < n; i++) bad += c.seen[i] != r; /* all done when run returns */
            if (r == 500) usleep(2000);                     /* let workers fall asleep once */
        }
        CHECK_EQ_INT(bad, 0);
        for (int i = 0; i < n; i++) CHECK_EQ_INT(atomic_load(&c.hits[i]), 1000);
        CHECK_EQ_INT(atomic_load(&c.total), 1000 * n * n);
        kern_pool_free(p);
    }
    kern_pool_free(NULL);
}

#ifdef KERN_AMX_EMU
static void test_amx_emu(void) { T_SKIP("the emulated AMX kernel needs AVX-512 (F, BW, VL, VNNI, VBMI)"); }
#endif

int main(void) {
#ifdef KERN_AMX_EMU
    if (kern_init("amx") != 0) {
        T_RUN(test_amx_emu);
        return t_done();
    }
#endif
    T_RUN(test_traits);
    T_RUN(test_legacy_layout);
    T_RUN(test_dequant_refdata);
    T_RUN(test_simd_vs_ref);
    T_RUN(test_ops_values);
    T_RUN(test_kv_q8);
    T_RUN(test_matmul);
    T_RUN(test_token_invariance);
    T_RUN(test_pool);
    return t_done();
}
