/* bench_kern.c -- kernel micro-benchmarks (`smolbot bench --kernels`).
 *
 * Prints, for the ISA in use (SMOLBOT_ISA or --isa overrides):
 *   - plain read bandwidth (summing a 256 MB buffer), 1 and N threads: the
 *     ceiling for a memory-bound matrix-vector product;
 *   - matrix-vector products (decode) for Q4_K, Q6_K, Q8_0, F16 weights of
 *     2048x2048 and 11008x2048, as GB/s of weight bytes read, 1 and N threads;
 *   - batched decode: n_tok = 1..8 rows on 11008x2048 Q4_K/Q6_K, as GB/s
 *     (memory-bound while each weight block is unpacked once for all rows);
 *   - matrix-matrix products (prefill) with n_tok = 64 and 512 on 2048x2048
 *     (and 11008x2048), as GFLOP/s (2 flops per weight per token) and tok/s;
 *   - decode attention over f16, Q8_0 and f32 KV rows, 1 thread: 48 KV heads
 *     of 4096 positions (more than the caches hold), head_dim 128, 4 query
 *     heads each, as GB/s of K and V bytes and ns per position.
 * Weights are random valid blocks (small scales, no NaN); time per case is
 * about a quarter second.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "core/core.h"
#include "kern/kern.h"

static uint64_t bk_rng = 88172645463325252ull;
static uint32_t bk_rnd(void) {
    bk_rng ^= bk_rng << 13;
    bk_rng ^= bk_rng >> 7;
    bk_rng ^= bk_rng << 17;
    return (uint32_t)(bk_rng >> 16);
}

void app_fill_weights(int type, void *dst, int64_t rows, int64_t n) {
    const size_t rs = kern_row_size(type, n);
    unsigned char *p = dst;
    for (size_t i = 0; i < rs * (size_t)rows; i++) p[i] = (unsigned char)bk_rnd();
    const uint16_t small = core_f32_to_f16(0.001f);
    const int64_t nb = rows * (n / kern_get_traits(type)->blck);
    for (int64_t i = 0; i < nb; i++) {
        switch (type) {
        case KERN_F16: ((kern_f16 *)dst)[i] = core_f32_to_f16(((float)(bk_rnd() % 2000) - 1000) / 1000); break;
        case KERN_Q8_0: ((kern_block_q8_0 *)dst)[i].d = small; break;
        case KERN_Q4_K: ((kern_block_q4_K *)dst)[i].d = small, ((kern_block_q4_K *)dst)[i].dmin = small; break;
        case KERN_Q6_K: ((kern_block_q6_K *)dst)[i].d = small; break;
        }
    }
}

typedef struct {
    const uint64_t *buf;
    size_t n;
    uint64_t out[64];
} bw_ctx;

static void bw_task(void *arg, int ith, int nth) {
    bw_ctx *c = arg;
    const size_t per = c->n / (size_t)nth, i0 = per * (size_t)ith, i1 = ith == nth - 1 ? c->n : i0 + per;
    uint64_t s[8] = {0};
    for (size_t i = i0; i + 8 <= i1; i += 8)
        for (int k = 0; k < 8; k++) s[k] += c->buf[i + k];
    c->out[ith] = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

double app_read_bw(kern_pool *pool) {
    const size_t bytes = (size_t)256 << 20;
    uint64_t *buf = malloc(bytes);
    if (!buf) return 0;
    memset(buf, 1, bytes);
    bw_ctx c = {.buf = buf, .n = bytes / 8};
    kern_pool_run(pool, bw_task, &c); /* warm */
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        const double t0 = core_now_s();
        kern_pool_run(pool, bw_task, &c);
        const double t = core_now_s() - t0;
        if (t < best) best = t;
    }
    free(buf);
    return (double)bytes / best / 1e9;
}

/* seconds per call of kern_matmul, best of several batches */
static double time_matmul(kern_pool *pool, int type, const void *w, int64_t n_out, int64_t n_in, const float *x,
                          int64_t n_tok, float *y, void *work) {
    kern_matmul(pool, type, w, n_out, n_in, x, n_tok, y, n_out, work);
    const double t0 = core_now_s();
    int reps = 0;
    do {
        kern_matmul(pool, type, w, n_out, n_in, x, n_tok, y, n_out, work);
        reps++;
    } while (core_now_s() - t0 < 0.05);
    const int per_batch = reps;
    double best = 1e9;
    for (int b = 0; b < 4; b++) {
        const double t1 = core_now_s();
        for (int r = 0; r < per_batch; r++) kern_matmul(pool, type, w, n_out, n_in, x, n_tok, y, n_out, work);
        const double t = (core_now_s() - t1) / per_batch;
        if (t < best) best = t;
    }
    return best;
}

/* Decode attention: is it held by memory (f16) or by arithmetic (the
 * 8-bit cache)? One thread walks 48 heads' runs of 4096 positions. */
static int bench_attn(void) {
    enum { HD = 128, NG = 4, NPOS = 4096, NHEAD = 48 };
    static const int kts[] = {KERN_F16, KERN_KV_Q8, KERN_F32};
    printf("\nattention (decode), 1 thread: %d heads x %d positions, head_dim %d, %d query heads\n", NHEAD, NPOS, HD, NG);
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(kts); ti++) {
        const int t = kts[ti], q8 = t == KERN_KV_Q8;
        /* step: bytes between rows, or between 8-bit tiles; run: one head's positions */
        const size_t step = q8 ? kern_kv_q8_tile_bytes(HD) : kern_row_size(t, HD);
        const size_t run = step * (q8 ? NPOS / KERN_KV_TILE : NPOS), bytes = run * NHEAD;
        char *k = malloc(bytes), *v = malloc(bytes);
        if (!k || !v) {
            free(k), free(v);
            fprintf(stderr, "smolbot: out of memory\n");
            return 1;
        }
        float tmp[HD], q[NG * HD], m[NG], l[NG], acc[NG * HD];
        for (size_t r = 0; r < (size_t)NPOS * NHEAD; r++) {
            for (int i = 0; i < HD; i++) tmp[i] = ((float)(bk_rnd() % 2000) - 1000) / 1000;
            if (q8) {
                char *tile = k + r / NPOS * run + r % NPOS / KERN_KV_TILE * step;
                kern_kv_q8_store(tile, (int)(r % KERN_KV_TILE), tmp, HD, 0);
                kern_kv_q8_store(tile - k + v, (int)(r % KERN_KV_TILE), tmp, HD, 1);
            } else {
                kern_get_traits(t)->from_float(tmp, k + r * step, HD);
                kern_get_traits(t)->from_float(tmp, v + r * step, HD);
            }
        }
        for (int i = 0; i < NG * HD; i++) q[i] = ((float)(bk_rnd() % 2000) - 1000) / 10000;
        double best = 1e30;
        for (int rep = 0; rep < 3; rep++) {
            const double t0 = core_now_s();
            for (int h = 0; h < NHEAD; h++) {
                for (int g = 0; g < NG; g++) m[g] = -INFINITY, l[g] = 0;
                memset(acc, 0, sizeof acc);
                kern_attn(t, q, NG, HD, k + (size_t)h * run, v + (size_t)h * run, step, NPOS, 0.088f, m, l, acc);
            }
            const double dt = core_now_s() - t0;
            if (dt < best) best = dt;
        }
        printf("%-6s %7.1f GB/s of K and V  %6.1f ns per position\n", q8 ? "Q8" : kern_get_traits(t)->name,
               2.0 * (double)bytes / best / 1e9, best * 1e9 / ((double)NPOS * NHEAD));
        free(k), free(v);
    }
    return 0;
}

int app_bench_kernels(int argc, char **argv) {
    int nthreads = core_ncpu();
    const char *isa = NULL;
    int quick = 0, gpu_k = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") || !strcmp(argv[i], "-t")) {
            const char *v = app_optarg(argc, argv, &i);
            long n;
            if (!v || app_parse_int("--threads", v, &n) != 0 || n < 1 || n > 64) return 2;
            nthreads = (int)n;
        } else if (!strcmp(argv[i], "--isa")) {
            if (!(isa = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--gpu")) { /* the CUDA kernels instead (bench/bench_gpu.c) */
            const char *v = app_optarg(argc, argv, &i);
            if (!v) return 2;
            gpu_k = strcmp(v, "off") != 0;
        }
    }
    if (gpu_k && !app_bench_gpu_kernels) {
        fprintf(stderr, "smolbot: this build has no kernel probes (make CUDA=1 build/smolbot-bench)\n");
        return 1;
    }
    if (gpu_k) return app_bench_gpu_kernels(quick);
    if (kern_init(isa) != 0) {
        fprintf(stderr, "smolbot: ISA '%s' is not available on this CPU\n", isa ? isa : "");
        return 1;
    }
    kern_pool *p1 = kern_pool_new(1), *pn = kern_pool_new(nthreads);
    if (!p1 || !pn) {
        fprintf(stderr, "smolbot: cannot start threads\n");
        kern_pool_free(p1);
        kern_pool_free(pn);
        return 1;
    }
    printf("kernels: isa %s, threads 1 and %d\n", kern_isa(), nthreads);
    printf("read bandwidth: %.1f GB/s (1 thread), %.1f GB/s (%d threads)\n", app_read_bw(p1), app_read_bw(pn), nthreads);

    static const int types[] = {KERN_Q4_K, KERN_Q6_K, KERN_Q8_0, KERN_F16};
    static const int64_t shapes[][2] = {{2048, 2048}, {11008, 2048}};
    const int64_t max_tok = quick ? 64 : 512, n_in = 2048, max_out = 11008;
    float *x = malloc(sizeof(float) * (size_t)(n_in * max_tok));
    float *y = malloc(sizeof(float) * (size_t)(max_out * max_tok));
    void *w = malloc(kern_row_size(KERN_F16, n_in) * (size_t)max_out);
    size_t ws = 0;
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(types); ti++) ws = CORE_MAX(ws, kern_matmul_work_size(types[ti], n_in, max_tok));
    void *work = malloc(ws);
    int rc = 0;
    if (!x || !y || !w || !work) {
        fprintf(stderr, "smolbot: out of memory\n");
        rc = 1;
        goto done;
    }
    for (int64_t i = 0; i < n_in * max_tok; i++) x[i] = ((float)(bk_rnd() % 2000) - 1000) / 1000;

    printf("\nmatrix-vector (decode), GB/s of weights   [us per call]\n");
    printf("%-6s %-12s %16s %16s\n", "type", "shape", "1 thread", "N threads");
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(types); ti++) {
        for (size_t si = 0; si < CORE_ARRAY_LEN(shapes); si++) {
            const int64_t n_out = shapes[si][0];
            app_fill_weights(types[ti], w, n_out, n_in);
            const double bytes = (double)kern_row_size(types[ti], n_in) * (double)n_out;
            const double t1 = time_matmul(p1, types[ti], w, n_out, n_in, x, 1, y, work);
            const double tn = time_matmul(pn, types[ti], w, n_out, n_in, x, 1, y, work);
            printf("%-6s %5lldx%-6lld %7.1f [%6.0f] %7.1f [%6.0f]\n", kern_get_traits(types[ti])->name,
                   (long long)n_out, (long long)n_in, bytes / t1 / 1e9, t1 * 1e6, bytes / tn / 1e9, tn * 1e6);
        }
    }

    /* batched decode: a few rows (one per conversation) through the same
     * weights should cost about one row while memory-bound */
    printf("\nbatched decode (n_tok rows), %d threads: GB/s of weights, us per call\n", nthreads);
    static const int64_t btoks[] = {1, 2, 3, 4, 6, 8};
    for (size_t ti = 0; ti < 2; ti++) {
        const int64_t n_out = 11008;
        app_fill_weights(types[ti], w, n_out, n_in);
        const double bytes = (double)kern_row_size(types[ti], n_in) * (double)n_out;
        printf("%-6s %5lldx%-6lld", kern_get_traits(types[ti])->name, (long long)n_out, (long long)n_in);
        for (size_t k = 0; k < CORE_ARRAY_LEN(btoks); k++) {
            const double t = time_matmul(pn, types[ti], w, n_out, n_in, x, btoks[k], y, work);
            printf("  %lld: %5.1f [%5.0f]", (long long)btoks[k], bytes / t / 1e9, t * 1e6);
        }
        printf("\n");
    }

    printf("\nmatrix-matrix (prefill), %d threads: GFLOP/s (tok/s)\n", nthreads);
    static const int64_t toks[] = {64, 512};
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(types); ti++) {
        for (size_t si = 0; si < CORE_ARRAY_LEN(shapes); si++) {
            const int64_t n_out = shapes[si][0];
            app_fill_weights(types[ti], w, n_out, n_in);
            printf("%-6s %5lldx%-6lld", kern_get_traits(types[ti])->name, (long long)n_out, (long long)n_in);
            for (size_t k = 0; k < CORE_ARRAY_LEN(toks); k++) {
                const int64_t nt = toks[k];
                if (nt > max_tok) continue;
                const double t = time_matmul(pn, types[ti], w, n_out, n_in, x, nt, y, work);
                printf("  n_tok=%-3lld %7.1f GFLOP/s (%8.0f tok/s)", (long long)nt,
                       2.0 * (double)n_out * (double)n_in * (double)nt / t / 1e9, (double)nt / t);
            }
            printf("\n");
        }
    }
    rc = bench_attn();
done:
    free(x);
    free(y);
    free(w);
    free(work);
    kern_pool_free(p1);
    kern_pool_free(pn);
    return rc;
}
