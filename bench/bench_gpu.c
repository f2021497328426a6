/* bench_gpu.c -- CUDA kernel micro-benchmarks (`smolbot bench --kernels
 * --gpu on`, in the bench build: make CUDA=1 build/smolbot-bench).
 *
 * A GPU machine is lent for minutes, so one run times each kernel on the
 * 3B shapes, through the probes of tests/test_gpu_probe.cu. This file and
 * the probes are linked into the bench build only: the product binary has
 * neither (bench_kern.c declares the entry point weak and says so).
 *   - prefill products at 512 and 2048 tokens, each matrix of a layer:
 *     k_mmq (int8 tensor cores), the f16 GEMM over the dequantized matrix
 *     (dequantization included, then alone), and the model's choice, as
 *     TOPS (2 per weight per token) and the layer's sum as an upper bound
 *     on prefill tok/s for 36 layers;
 *   - decode attention (k_attn_dmma) at depths 0, 2048, 8192 and 32768
 *     (16 query heads, 4 KV heads, head_dim 128), as us per layer and GB/s
 *     of K and V read;
 *   - prefill attention (k_fa) over 512 and 2048 tokens from position 0,
 *     as us per layer and TFLOP/s of the causal half.
 * Each figure is the mean over repetitions after one checked launch
 * (gpu_test_timing); inputs are random, weights have small scales.
 */
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "core/core.h"
#include "kern/kern.h"
#include "model/cuda/gpu.h"

static uint64_t bg_rng = 0x9E3779B97F4A7C15ull;
static float bg_rand(void) {
    bg_rng ^= bg_rng << 13, bg_rng ^= bg_rng >> 7, bg_rng ^= bg_rng << 17;
    return (float)((bg_rng >> 40) & 0xFFFF) / 32768.0f - 1.0f;
}

typedef struct {
    const char *name;
    int type;
    int64_t n_out, n_in;
    int per_layer; /* how many such products a layer has */
} bg_mat;

/* ms of one product on path, or -1 (message printed) */
static double bg_matmul(const bg_mat *m, const void *w, const float *x, int n_tok, float *y, int path) {
    char msg[256] = "";
    if (gpu_test_matmul(m->type, w, m->n_out, m->n_in, x, n_tok, y, path, msg, sizeof msg)) {
        fprintf(stderr, "smolbot: %s path %d: %s\n", m->name, path, msg);
        return -1.0;
    }
    return gpu_test_last_ms();
}

static int bench_products(void) {
    /* the 3B Q4_K_M file: Q6_K for attn_v and half the ffn_down tensors */
    static const bg_mat mats[] = {
        {"q, o", KERN_Q4_K, 2048, 2048, 2}, {"k", KERN_Q4_K, 512, 2048, 1},         {"v", KERN_Q6_K, 512, 2048, 1},
        {"gate, up", KERN_Q4_K, 11008, 2048, 2}, {"down Q4_K", KERN_Q4_K, 2048, 11008, 1},
        {"down Q6_K", KERN_Q6_K, 2048, 11008, 0}, /* timed, not summed: the layers alternate */
    };
    static const int paths[] = {GPU_MM_MMQ, GPU_MM_DQ16, GPU_MM_GEMM16, GPU_MM_MODEL};
    static const int toks[] = {512, 2048};
    const int64_t max_in = 11008, max_out = 11008, max_tok = 2048;
    float *x = malloc(sizeof(float) * (size_t)(max_in * max_tok)), *y = malloc(sizeof(float) * (size_t)(max_out * max_tok));
    void *w = malloc(kern_row_size(KERN_Q6_K, max_in) * (size_t)max_out);
    if (!x || !y || !w) {
        free(x), free(y), free(w);
        fprintf(stderr, "smolbot: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < max_in * max_tok; i++) x[i] = bg_rand();
    int rc = 0;
    printf("\nprefill products, TOPS (2 per weight per token)   [us per call]\n");
    printf("%-10s %-6s %11s %5s %20s %20s %20s %20s\n", "matrix", "type", "shape", "tok", "k_mmq", "deq + f16 GEMM",
           "f16 GEMM alone", "the model's choice");
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(toks) && !rc; ti++) {
        double layer[CORE_ARRAY_LEN(paths)] = {0};
        for (size_t mi = 0; mi < CORE_ARRAY_LEN(mats) && !rc; mi++) {
            const bg_mat *m = &mats[mi];
            app_fill_weights(m->type, w, m->n_out, m->n_in);
            printf("%-10s %-6s %5lldx%-5lld %5d", m->name, kern_get_traits(m->type)->name, (long long)m->n_out,
                   (long long)m->n_in, toks[ti]);
            for (size_t pi = 0; pi < CORE_ARRAY_LEN(paths); pi++) {
                const double ms = bg_matmul(m, w, x, toks[ti], y, paths[pi]);
                if (ms < 0) { rc = 1; break; }
                layer[pi] += ms * m->per_layer;
                printf(" %11.1f [%6.0f]", 2.0 * (double)m->n_out * (double)m->n_in * toks[ti] / (ms * 1e-3) / 1e12, ms * 1e3);
            }
            printf("\n");
        }
        if (!rc) {
            printf("%-10s %-6s %11s %5d", "layer", "", "", toks[ti]);
            for (size_t pi = 0; pi < CORE_ARRAY_LEN(paths); pi++)
                printf("   %6.0f tok/s max", toks[ti] / (36.0 * layer[pi] * 1e-3));
            printf("   (36 layers of products only)\n");
        }
    }
    free(x), free(y), free(w);
    return rc;
}

/* us per call of one attention kernel, or -1 */
static double bg_attention(int n_tok, int pos0) {
    const int n_head = 16, n_kv = 4, hd = 128, n_pos = pos0 + n_tok;
    float *q = malloc(sizeof(float) * (size_t)n_tok * n_head * hd), *out = malloc(sizeof(float) * (size_t)n_tok * n_head * hd);
    uint16_t *k = malloc(2 * (size_t)n_pos * n_kv * hd), *v = malloc(2 * (size_t)n_pos * n_kv * hd);
    double us = -1.0;
    if (q && out && k && v) {
        for (size_t i = 0; i < (size_t)n_tok * n_head * hd; i++) q[i] = bg_rand();
        for (size_t i = 0; i < (size_t)n_pos * n_kv * hd; i++) k[i] = core_f32_to_f16(bg_rand()), v[i] = core_f32_to_f16(bg_rand());
        char msg[256] = "";
        if (gpu_test_attention(q, k, v, n_head, n_kv, hd, n_tok, pos0, out, NULL, NULL, msg, sizeof msg))
            fprintf(stderr, "smolbot: attention: %s\n", msg);
        else us = gpu_test_last_ms() * 1e3;
    }
    free(q), free(out), free(k), free(v);
    return us;
}

static int bench_attention(void) {
    static const int depths[] = {0, 2048, 8192, 32768}; /* the last one past the L2 */
    printf("\ndecode attention (k_attn_dmma), one layer (16/4 heads, head_dim 128): us   [GB/s of K and V]\n");
    for (size_t i = 0; i < CORE_ARRAY_LEN(depths); i++) {
        const double bytes = 2.0 * 2 * 4 * 128 * (depths[i] + 1.0), a = bg_attention(1, depths[i]);
        if (a < 0) return 1;
        printf("%-8d %12.1f [%7.0f]\n", depths[i], a, bytes / (a * 1e-6) / 1e9);
    }
    static const int toks[] = {512, 2048};
    printf("\nprefill attention (k_fa) from position 0, one layer: us   [TFLOP/s of the causal half]\n");
    for (size_t i = 0; i < CORE_ARRAY_LEN(toks); i++) {
        const double flops = 4.0 * 128 * 16 * (double)toks[i] * (toks[i] + 1) / 2, a = bg_attention(toks[i], 0);
        if (a < 0) return 1;
        printf("%-8d %12.1f [%7.1f]\n", toks[i], a, flops / (a * 1e-6) / 1e12);
    }
    return 0;
}

int app_bench_gpu_kernels(int quick) {
    char why[512] = "";
    if (!gpu_available(why, sizeof why)) {
        fprintf(stderr, "smolbot: no usable GPU: %s\n", why);
        return 1;
    }
    char dev[256];
    gpu_describe(dev, sizeof dev);
    const int reps = quick ? 3 : 20;
    printf("GPU kernels: %s, mean of %d runs after a checked one\n", dev, reps);
    gpu_test_timing(reps);
    int rc = bench_products();
    if (!rc) rc = bench_attention();
    gpu_test_timing(0);
    return rc;
}
