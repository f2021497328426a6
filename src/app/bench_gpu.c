/* bench_gpu.c -- CUDA kernel micro-benchmarks (`smolbot bench --kernels
 * --gpu on`, issue 12).
 *
 * Device time is scarce (a GPU machine is lent for minutes), so one run
 * times every kernel whose variant is not settled yet, on the 3B shapes,
 * and the table says which to make the default:
 *   - prefill products at 512 and 2048 tokens, each matrix of a layer:
 *     k_mmq (int8 tensor cores, float fold per sub-block, path 1), the same
 *     with the integer fold per super-block (path 7, SMOLBOT_GPU_MMQI=1),
 *     that compiled for two blocks per SM (path 8, SMOLBOT_GPU_MMQ2=1),
 *     f16 tensor cores (path 6) and the f16 GEMM over the matrix
 *     dequantized first (path 9, SMOLBOT_GPU_DQ16, the default, dequantization
 *     included; path 10 without it), as TOPS (2 per weight per token), and
 *     the layer's sum as an upper bound on prefill tok/s for 36 layers;
 *   - decode attention at depths 0, 2048, 8192 and 32768 (16 query heads,
 *     4 KV heads, head_dim 128): split-K + combine (SMOLBOT_GPU_DATT=0),
 *     k_attn_dec (SMOLBOT_GPU_DMMA=0) and k_attn_dmma (the default), as us
 *     per layer and GB/s of K and V read;
 *   - prefill attention over 512 and 2048 tokens from position 0: k_attn
 *     (CUDA cores, SMOLBOT_GPU_FA=0) against k_fa (tensor cores, the
 *     default), as us per layer and TFLOP/s of the causal half.
 * Each figure is the mean over repetitions after one checked launch
 * (gpu_test_timing); inputs are random, weights have small scales.
 */
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "core/core.h"
#include "kern/cuda/gpu.h"
#include "kern/kern.h"

/* declared weak: NULL in a build without CUDA (as in src/model/gpu_model.c) */
#pragma weak gpu_available
#pragma weak gpu_describe
#pragma weak gpu_test_matmul
#pragma weak gpu_test_attention
#pragma weak gpu_test_timing
#pragma weak gpu_test_last_ms

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
    static const int paths[] = {1, 7, 8, 6, 9, 10};
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
    printf("%-10s %-6s %11s %5s %20s %20s %20s %20s %20s %20s\n", "matrix", "type", "shape", "tok", "k_mmq (1)",
           "k_mmq int fold (7)", "(7), 2 blocks/SM (8)", "f16 cores (6)", "deq + f16 GEMM (9)", "f16 GEMM alone (10)");
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
static double bg_attention(int n_tok, int pos0, int kernel) {
    const int n_head = 16, n_kv = 4, hd = 128, n_pos = pos0 + n_tok;
    float *q = malloc(sizeof(float) * (size_t)n_tok * n_head * hd), *out = malloc(sizeof(float) * (size_t)n_tok * n_head * hd);
    uint16_t *k = malloc(2 * (size_t)n_pos * n_kv * hd), *v = malloc(2 * (size_t)n_pos * n_kv * hd);
    double us = -1.0;
    if (q && out && k && v) {
        for (size_t i = 0; i < (size_t)n_tok * n_head * hd; i++) q[i] = bg_rand();
        for (size_t i = 0; i < (size_t)n_pos * n_kv * hd; i++) k[i] = core_f32_to_f16(bg_rand()), v[i] = core_f32_to_f16(bg_rand());
        char msg[256] = "";
        if (gpu_test_attention(q, k, v, n_head, n_kv, hd, n_tok, pos0, kernel, out, NULL, NULL, msg, sizeof msg))
            fprintf(stderr, "smolbot: attention: %s\n", msg);
        else us = gpu_test_last_ms() * 1e3;
    }
    free(q), free(out), free(k), free(v);
    return us;
}

static int bench_attention(void) {
    static const int depths[] = {0, 2048, 8192, 32768}; /* the last one past the L2 */
    printf("\ndecode attention, one layer (16/4 heads, head_dim 128): us   [GB/s of K and V]\n");
    printf("%-8s %22s %22s %22s\n", "depth", "split-K + combine", "k_attn_dec", "k_attn_dmma");
    for (size_t i = 0; i < CORE_ARRAY_LEN(depths); i++) {
        const double bytes = 2.0 * 2 * 4 * 128 * (depths[i] + 1.0);
        const double a = bg_attention(1, depths[i], GPU_ATT_SPLIT), b = bg_attention(1, depths[i], GPU_ATT_DEC);
        const double c = bg_attention(1, depths[i], GPU_ATT_DMMA);
        if (a < 0 || b < 0 || c < 0) return 1;
        printf("%-8d %12.1f [%7.0f] %12.1f [%7.0f] %12.1f [%7.0f]\n", depths[i], a, bytes / (a * 1e-6) / 1e9, b,
               bytes / (b * 1e-6) / 1e9, c, bytes / (c * 1e-6) / 1e9);
    }
    static const int toks[] = {512, 2048};
    printf("\nprefill attention from position 0, one layer: us   [TFLOP/s of the causal half]\n");
    printf("%-8s %22s %22s\n", "tokens", "k_attn (CUDA cores)", "k_fa (tensor cores)");
    for (size_t i = 0; i < CORE_ARRAY_LEN(toks); i++) {
        const double flops = 4.0 * 128 * 16 * (double)toks[i] * (toks[i] + 1) / 2;
        const double a = bg_attention(toks[i], 0, GPU_ATT_PREFILL), b = bg_attention(toks[i], 0, GPU_ATT_FA);
        if (a < 0 || b < 0) return 1;
        printf("%-8d %12.1f [%7.1f] %12.1f [%7.1f]\n", toks[i], a, flops / (a * 1e-6) / 1e12, b, flops / (b * 1e-6) / 1e12);
    }
    return 0;
}

int app_bench_gpu_kernels(int quick) {
    char why[512] = "";
    if (!gpu_available || !gpu_test_timing) {
        fprintf(stderr, "smolbot: this build has no CUDA backend (make CUDA=1)\n");
        return 1;
    }
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
