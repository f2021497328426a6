/* test_gpu.c -- the CUDA backend (issue 12) against the CPU.
 *
 * Built in every build; every test skips with the reason when the binary
 * was built without CUDA (`make CUDA=1`) or no CUDA device is present, so
 * `make test` stays green on machines without a GPU.
 *
 *   - each kernel on random inputs against the scalar reference: dequant
 *     (bit-exact), matrix-vector and tensor-core products (against the
 *     reference dequantization in double), rmsnorm, silu*mul, RoPE,
 *     attention (prefill and split-K decode, against a double-precision
 *     causal softmax), top-k;
 *   - the golden logits of the inference issue (refdata/model, llama.cpp) on
 *     the GPU path with the same tolerances as tests/test_model.c;
 *   - decode (CUDA graph) equals prefill, KV copy/truncate/fill on the device.
 *
 * The gpu_test_* entry points are declared weak like in gpu_model.c: NULL
 * means "built without CUDA".
 */
#include <jansson.h>

#include "t.h"
#include "t_model.h"
#include "t_gpu.h"
#include "gguf/gguf.h"
#include "kern/cuda/gpu.h"
#include "kern/kern.h"
#include "model/model.h"

#pragma weak gpu_available
#pragma weak gpu_describe
#pragma weak gpu_test_matmul
#pragma weak gpu_test_dequant
#pragma weak gpu_test_quant
#pragma weak gpu_test_rmsnorm
#pragma weak gpu_test_silu_mul
#pragma weak gpu_test_rope
#pragma weak gpu_test_attention
#pragma weak gpu_test_topk

static char skip_why[600];
/* 1 when the "GPU" is the CPU emulation (test_gpu_on_emu): each CUDA thread
 * is a fiber there, so the cases sized to fill a real GPU are left out */
static int on_emu;

/* 1 when the kernels can run; else skip_why says why. */
static int gpu_ready(void) {
    if (!gpu_available) {
        snprintf(skip_why, sizeof skip_why, "built without CUDA (make CUDA=1)");
        return 0;
    }
    return gpu_available(skip_why, sizeof skip_why);
}
#define NEED_GPU() \
    if (!gpu_ready()) T_SKIP("%s", skip_why)

static const int types[] = {KERN_F32, KERN_F16, KERN_BF16, KERN_Q8_0, KERN_Q4_0, KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};

static void test_device(void) {
    NEED_GPU();
    char d[256];
    gpu_describe(d, sizeof d);
    fprintf(stderr, "  device: %s\n", d);
}

static void test_dequant(void) {
    NEED_GPU();
    const int64_t n = 1024;
    float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(types); ti++) {
        int type = types[ti];
        void *w = random_rows(type, n, 1);
        kern_ref_traits(type)->dequant_row(w, ref, n);
        char msg[256] = "";
        int rc = gpu_test_dequant(type, w, n, got, msg, sizeof msg);
        CHECK_MSG(rc == 0, "%s: %s", kern_ref_traits(type)->name, msg);
        int bad = 0;
        for (int64_t i = 0; i < n && !rc; i++) bad += memcmp(&ref[i], &got[i], 4) != 0;
        CHECK_MSG(bad == 0, "%s: %d of %lld values differ from kern_ref_dequant", kern_ref_traits(type)->name, bad,
                  (long long)n);
        free(w);
    }
    free(ref);
    free(got);
}

/* Q8_K quantization on the device equals kern_ref_quantize_q8_K value for
 * value (ties of |max| between signs, an all-zero block, large values). */
static void test_quant(void) {
    NEED_GPU();
    const int n = 2816, rows = 3, nb = n / 256;
    float *x = malloc(n * rows * 4), *d = malloc(nb * rows * 4);
    int8_t *q = malloc(n * rows);
    kern_block_q8_K *ref = malloc(nb * sizeof *ref);
    for (int i = 0; i < n * rows; i++) x[i] = frand(-3, 3);
    x[5] = 7.0f, x[9] = -7.0f;               /* the first of equal magnitudes wins */
    x[300] = -9.5f, x[301] = 9.5f;
    for (int i = 512; i < 768; i++) x[i] = 0;  /* an all-zero block */
    for (int i = 0; i < 256; i++) x[n + i] *= 1e4f;
    char msg[256] = "";
    int rc = gpu_test_quant(x, n, rows, q, d, msg, sizeof msg);
    CHECK_MSG(rc == 0, "%s", msg);
    int bad = 0;
    for (int r = 0; r < rows && !rc; r++) {
        kern_ref_traits(KERN_Q8_K)->from_float(x + r * n, ref, n);
        for (int b = 0; b < nb; b++) {
            bad += memcmp(&ref[b].d, &d[r * nb + b], 4) != 0;
            bad += memcmp(ref[b].qs, q + r * n + b * 256, 256) != 0;
        }
    }
    CHECK_MSG(bad == 0, "%d blocks differ from kern_ref_quantize_q8_K", bad);
    free(x), free(d), free(q), free(ref);
}

/* GPU product (gpu_test_matmul's paths) against the reference dequantization
 * and a double dot product; tolerance relative to sum |w x|. */
static void check_matmul(int type, int64_t n_out, int64_t n_in, int n_tok, int path, double rel) {
    void *w = random_rows(type, n_in, n_out);
    float *x = malloc((size_t)n_tok * n_in * sizeof *x), *y = malloc((size_t)n_tok * n_out * sizeof *y);
    for (int64_t i = 0; i < n_tok * n_in; i++) x[i] = frand(-1, 1);
    char msg[256] = "";
    int rc = gpu_test_matmul(type, w, n_out, n_in, x, n_tok, y, path, msg, sizeof msg);
    /* K-quants on paths 1..9 multiply Q8_K activations: the reference does too */
    if (path >= 1 && (type == KERN_Q4_K || type == KERN_Q5_K || type == KERN_Q6_K)) tg_q8k_round_trip(x, n_tok, n_in);
    CHECK_MSG(rc == 0, "%s path %d: %s", kern_ref_traits(type)->name, path, msg);
    const double worst = rc ? 0 : tg_matmul_err(type, w, n_out, n_in, x, n_tok, y);
    CHECK_MSG(worst <= rel, "%s path %d (%lld x %lld, %d tokens): relative error %.3g > %.3g",
              kern_ref_traits(type)->name, path, (long long)n_out, (long long)n_in, n_tok, worst, rel);
    free(w);
    free(x);
    free(y);
}

static void test_matvec(void) {
    NEED_GPU();
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(types); ti++) {
        check_matmul(types[ti], 67, 768, 1, 0, 1e-5);
        check_matmul(types[ti], 19, 512, 5, 0, 1e-5);  /* batched rows */
        check_matmul(types[ti], 9, 2816, 11, 0, 1e-5); /* two passes of 8 */
        /* the fused decode kernel k_dec with 1, 2, 4, 8 warps per row */
        for (int path = 2; path <= 5; path++) {
            check_matmul(types[ti], 67, 768, 1, path, 1e-5);
            check_matmul(types[ti], 13, 2816, 2, path, 1e-5);
        }
    }
}

static int is_kq(int type) { return type == KERN_Q4_K || type == KERN_Q5_K || type == KERN_Q6_K; }

/* Prefill products. K-quants: int8 tensor cores (k_mmq) on Q8_K
 * activations -- exact integer sums, so the error is float rounding only;
 * f16 tensor cores (path 6, and path 1 for Q8_0/Q4_0): about 2^-11
 * relative per term. Shapes: partial row and token tiles, then enough
 * tiles for the 128-token variant. */
static void test_matmul_tensor_cores(void) {
    NEED_GPU();
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(types); ti++) {
        const int t = types[ti];
        if (t == KERN_F32 || t == KERN_F16 || t == KERN_BF16) continue;
        check_matmul(t, 67, 512, 37, 1, is_kq(t) ? 1e-5 : 3e-3);
        check_matmul(t, 130, 768, 129, 1, is_kq(t) ? 1e-5 : 3e-3);
        if (is_kq(t)) check_matmul(t, 67, 512, 37, 6, 3e-3);
        if (is_kq(t)) check_matmul(t, 67, 512, 37, 7, 1e-5);   /* integer fold: 32-token tiles */
        if (is_kq(t)) check_matmul(t, 130, 768, 129, 7, 1e-5);
        if (is_kq(t)) check_matmul(t, 130, 768, 129, 8, 1e-5); /* two blocks per SM: the same code */
        check_matmul(t, 130, 768, 129, 9, 3e-3); /* f16 GEMM over the dequantized matrix */
        check_matmul(t, 67, 512, 3, 9, 3e-3);
        check_matmul(t, 67, 512, 37, 10, 3e-3);
    }
    if (on_emu) return; /* test_gpu_emu covers every token tile directly */
    const int big[] = {KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};
    for (size_t i = 0; i < CORE_ARRAY_LEN(big); i++) {
        check_matmul(big[i], 2112, 256, 1000, 1, 1e-5); /* 128-token tiles */
        check_matmul(big[i], 2112, 256, 500, 1, 1e-5);  /* 64-token tiles (smaller ones: above) */
        check_matmul(big[i], 2112, 256, 1000, 6, 3e-3);
        check_matmul(big[i], 2112, 1024, 1000, 7, 1e-5); /* integer fold over 4 super-blocks, 128-token tiles */
        check_matmul(big[i], 2112, 512, 500, 7, 1e-5);   /* ... 64-token tiles */
        check_matmul(big[i], 2112, 1024, 1000, 8, 1e-5);
        check_matmul(big[i], 2112, 1024, 1000, 9, 3e-3); /* 128-row tiles */
    }
}

static void test_rmsnorm_silu(void) {
    NEED_GPU();
    const int n = 2048, rows = 3;
    float *x = malloc(n * rows * 4), *w = malloc(n * 4), *ref = malloc(n * rows * 4), *got = malloc(n * rows * 4);
    for (int i = 0; i < n * rows; i++) x[i] = frand(-3, 3);
    for (int i = 0; i < n; i++) w[i] = frand(0.5f, 1.5f);
    for (int r = 0; r < rows; r++) kern_rmsnorm(ref + r * n, x + r * n, w, n, 1e-6f);
    char msg[256] = "";
    CHECK_MSG(gpu_test_rmsnorm(x, w, n, rows, 1e-6f, got, msg, sizeof msg) == 0, "%s", msg);
    double md = 0;
    for (int i = 0; i < n * rows; i++) md = fmax(md, fabs(ref[i] - got[i]) / (fabs(ref[i]) + 1e-3));
    CHECK_MSG(md < 1e-5, "rmsnorm relative error %.3g", md);
    kern_silu_mul(ref, x, x + n, n);
    CHECK_MSG(gpu_test_silu_mul(x, x + n, n, got, msg, sizeof msg) == 0, "%s", msg);
    md = 0;
    for (int i = 0; i < n; i++) md = fmax(md, fabs(ref[i] - got[i]) / (fabs(ref[i]) + 1e-3));
    CHECK_MSG(md < 1e-5, "silu_mul relative error %.3g", md);
    free(x), free(w), free(ref), free(got);
}

static void test_rope(void) {
    NEED_GPU();
    const int hds[] = {64, 128}, poss[] = {0, 1, 7, 4999, 65000};
    for (size_t a = 0; a < 2; a++)
        for (size_t b = 0; b < CORE_ARRAY_LEN(poss); b++) {
            int hd = hds[a], nh = 5, n = hd * nh;
            float *x = malloc(n * 4), *g = malloc(n * 4);
            for (int i = 0; i < n; i++) x[i] = g[i] = frand(-2, 2);
            kern_rope(x, nh, hd, poss[b], 5e6f);
            char msg[256] = "";
            CHECK_MSG(gpu_test_rope(g, nh, hd, poss[b], 5e6f, msg, sizeof msg) == 0, "%s", msg);
            double md = 0;
            for (int i = 0; i < n; i++) md = fmax(md, fabs(x[i] - g[i]));
            /* device cosf/sinf vs glibc: a few ulp of angles up to 65000 rad */
            CHECK_MSG(md < 2e-5, "rope hd %d pos %d: max diff %.3g", hd, poss[b], md);
            free(x), free(g);
        }
}

static void check_attention(int n_head, int n_kv, int hd, int n_tok, int pos0, int kernel) {
    tg_check_attention(gpu_test_attention, n_head, n_kv, hd, n_tok, pos0, kernel);
}

static void test_attention(void) {
    NEED_GPU();
    check_attention(8, 2, 64, 20, 0, GPU_ATT_PREFILL);    /* prefill from 0 */
    check_attention(16, 4, 128, 40, 300, GPU_ATT_PREFILL); /* prefill after a prefix, tiles cross */
    check_attention(4, 4, 64, 70, 5, GPU_ATT_PREFILL);    /* no grouping, several token tiles */
    check_attention(4, 1, 64, 33, 0, GPU_ATT_PREFILL);    /* the tiny model's shape */
    const int dpos[] = {0, 1, 31, 127, 128, 129, 1000};
    for (size_t i = 0; i < CORE_ARRAY_LEN(dpos); i++) check_attention(16, 4, 128, 1, dpos[i], GPU_ATT_SPLIT);
    check_attention(4, 1, 64, 1, 700, GPU_ATT_SPLIT);
}

/* k_fa: the shapes above, token tiles of 16 (group 4), 32 (group 2) and 64
 * (group 1) cut by n_tok, key tiles of 64 crossing the diagonal, two tokens
 * (one tile, mostly idle rows), 300 tokens from 0 (five key tiles). */
static void test_attention_fa(void) {
    NEED_GPU();
    check_attention(8, 2, 64, 20, 0, GPU_ATT_FA);
    check_attention(16, 4, 128, 40, 300, GPU_ATT_FA);
    check_attention(4, 4, 64, 70, 5, GPU_ATT_FA);
    check_attention(4, 1, 64, 33, 0, GPU_ATT_FA);
    check_attention(16, 8, 128, 100, 1000, GPU_ATT_FA);
    check_attention(16, 4, 128, 2, 70, GPU_ATT_FA);
    check_attention(16, 4, 128, 300, 0, GPU_ATT_FA);
}

/* k_attn_dec: chunks of one tile, of several, cut mid-tile, a lone last
 * split, every split in use (ATT_DEC_SPLITS 64, at least ATT_DEC_MIN 32
 * positions each: 2048 and up), the 3B and tiny shapes, a group of one
 * (output quantized by the caller), a group of 8 with head_dim 256. */
static void test_attention_dec(void) {
    NEED_GPU();
    const int dpos[] = {0, 1, 31, 32, 63, 64, 65, 100, 1000, 4095, 4096, 4100, 8191, 9000};
    for (size_t i = 0; i < CORE_ARRAY_LEN(dpos); i++) check_attention(16, 4, 128, 1, dpos[i], GPU_ATT_DEC);
    check_attention(4, 1, 64, 1, 700, GPU_ATT_DEC);
    check_attention(16, 16, 64, 1, 333, GPU_ATT_DEC);
    check_attention(16, 2, 256, 1, 2500, GPU_ATT_DEC);
}

/* k_attn_dmma (tensor cores): tg_dmma_cases, past 8192 positions too */
static void test_attention_dmma(void) {
    NEED_GPU();
    tg_dmma_cases(gpu_test_attention, 1);
}

/* the same in blocks of eight warps (SMOLBOT_GPU_DW8), then with the
 * merge in fewer round trips (SMOLBOT_GPU_MW: the groups of 8) */
static void test_attention_dmma_w8(void) {
    NEED_GPU();
    if (on_emu) return; /* test_gpu_emu runs these kernels with several splits */
    setenv("SMOLBOT_GPU_DW8", "1", 1);
    tg_dmma_cases(gpu_test_attention, 1);
    setenv("SMOLBOT_GPU_MW", "1", 1);
    tg_dmma_cases(gpu_test_attention, 1);
    unsetenv("SMOLBOT_GPU_DW8"), unsetenv("SMOLBOT_GPU_MW");
}

static int cmp_desc(const void *a, const void *b) {
    const float *x = a, *y = b;
    return (x[0] < y[0]) - (x[0] > y[0]);
}

static void test_topk(void) {
    NEED_GPU();
    const int n = 128256;
    float *x = malloc(n * 4), *sorted = malloc(n * 4);
    for (int i = 0; i < n; i++) x[i] = frand(-10, 10);
    x[77] = x[99] = 50.0f; /* a tie: the lower id first */
    memcpy(sorted, x, n * 4);
    qsort(sorted, n, 4, cmp_desc);
    int32_t ids[64];
    float vals[64];
    const int ks[] = {1, 5, 40, 64};
    for (size_t j = 0; j < CORE_ARRAY_LEN(ks); j++) {
        char msg[256] = "";
        int rc = gpu_test_topk(x, n, ks[j], ids, vals, msg, sizeof msg);
        CHECK_MSG(rc == 0, "%s", msg);
        for (int i = 0; i < ks[j] && !rc; i++) {
            CHECK_MSG(vals[i] == sorted[i] && x[ids[i]] == vals[i], "k %d rank %d: %g (id %d) want %g", ks[j], i, vals[i],
                      ids[i], sorted[i]);
        }
        if (!rc) CHECK_EQ_INT(ids[0], 77);
        if (!rc && ks[j] > 1) CHECK_EQ_INT(ids[1], 99);
    }
    free(x), free(sorted);
}

/* ---- the model on the GPU --------------------------------------------- */

typedef t_loaded loaded;

/* 0 ok, -1 shared/ absent, -2 load error, -3 no GPU (skip_why says why) */
static int load(const char *rel, loaded *L, int gpu) { return t_load(rel, L, 0, gpu, skip_why, sizeof skip_why); }
static void unload(loaded *L) { t_unload(L); }

static int32_t *ids_of(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *t = malloc(*n * sizeof *t + 4);
    for (size_t i = 0; i < *n; i++) t[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return t;
}

/* Golden logits on the GPU; also: prefill of n-1 tokens + one decode step
 * (the graph) gives the same logits as the one-shot prefill. */
static void check_golden(const char *model_file, int is_f32) {
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", model_file);
    const char *gj = t_shared("refdata/model/greedy.jsonl");
    if (!gpu_ready()) T_SKIP("%s", skip_why);
    loaded L;
    int lr = load(rel, &L, MODEL_GPU_ON);
    if (lr == -1 || !gj) T_SKIP("../shared/%s or refdata absent", rel);
    if (lr == -3) T_SKIP("%s", skip_why);
    CHECK(lr == 0);
    if (lr) return;
    CHECK(strcmp(model_device(L.m), "cpu") != 0);
    CHECK_EQ_INT(model_prefill_chunk(L.m), 2048); /* the device's own chunk, not the CPU's 256 */
    const model_config *c = model_get_config(L.m);
    float *logits = malloc((size_t)c->n_vocab * sizeof(float)), *l2 = malloc((size_t)c->n_vocab * sizeof(float));
    FILE *f = fopen(gj, "r");
    char line[1 << 16];
    int n_logit_cases = 0;
    while (f && fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        if (!o) continue;
        const char *mf = json_string_value(json_object_get(o, "model_file"));
        const char *cfg = json_string_value(json_object_get(o, "llama_cpp_config"));
        const char *lf = json_string_value(json_object_get(o, "logits_file"));
        if (!mf || strcmp(mf, model_file) || !cfg || strcmp(cfg, "default") || !lf) { json_decref(o); continue; }
        const char *name = json_string_value(json_object_get(o, "prompt_name"));
        char lrel[256];
        snprintf(lrel, sizeof lrel, "refdata/model/%s", lf);
        float *ref = t_shared(lrel) ? t_read_f32(t_shared(lrel), (size_t)c->n_vocab) : NULL;
        size_t n;
        int32_t *toks = ids_of(json_object_get(o, "prompt_ids"), &n);
        model_kv *kv = NULL;
        core_err err = {0};
        int rc = model_kv_new(&kv, L.m, 512, MODEL_KV_F16, &err);
        if (!rc) rc = model_forward(L.m, kv, toks, (int)n, logits, 0, NULL, &err);
        CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
        if (ref && rc == 0) {
            n_logit_cases++;
            double maxd, rms;
            t_diff_stats(logits, ref, c->n_vocab, &maxd, &rms);
            fprintf(stderr, "  gpu %-22s %-16s max|diff| %.5f  rms %.5f\n", model_file, name, maxd, rms);
            if (is_f32) CHECK_MSG(maxd <= 0.02 && rms <= 0.005, "%s: max %.4f rms %.4f", name, maxd, rms);
            else CHECK_MSG(maxd <= 0.5 && rms <= 0.1, "%s: max %.4f rms %.4f", name, maxd, rms);
            double m0 = json_number_value(json_array_get(json_object_get(o, "top1_minus_top2"), 0));
            if (m0 >= 0.1 || is_f32) CHECK_EQ_INT(t_argmax(logits, c->n_vocab), t_argmax(ref, c->n_vocab));
        }
        /* decode (graph) of the last token after a prefill of the others */
        if (rc == 0 && n >= 2) {
            model_kv_truncate(kv, 0);
            rc = model_forward(L.m, kv, toks, (int)n - 1, NULL, 0, NULL, &err);
            if (!rc) rc = model_forward(L.m, kv, toks + n - 1, 1, l2, 0, NULL, &err);
            CHECK_MSG(rc == 0, "%s", err.msg);
            double maxd, rms;
            t_diff_stats(logits, l2, c->n_vocab, &maxd, &rms);
            fprintf(stderr, "  gpu %-22s %-16s decode vs prefill max|diff| %.5f  rms %.5f\n", model_file, name, maxd, rms);
            if (is_f32) CHECK_MSG(maxd <= 0.01, "%s: decode vs prefill max %.4f rms %.4f", name, maxd, rms);
            else CHECK_MSG(maxd <= 0.5 && rms <= 0.1, "%s: decode vs prefill max %.4f rms %.4f", name, maxd, rms);
        }
        model_kv_free(kv);
        free(toks);
        free(ref);
        json_decref(o);
    }
    if (f) fclose(f);
    CHECK(n_logit_cases >= 2);
    free(logits);
    free(l2);
    unload(&L);
}

static void test_golden_f32(void) {
    /* on the emulation the q4_k_m golden test runs the same code in a third
     * of the time (the 128K-row f32 head is most of it) */
    if (on_emu) T_SKIP("on the CPU emulation the q4_k_m golden test stands for it");
    check_golden("smollm3-tiny-f32.gguf", 1);
}
static void test_golden_q4(void) { check_golden("smollm3-tiny-q4_k_m.gguf", 0); }

/* The decode step (fused kernels, CUDA graph) against the CPU on the same
 * file, teacher-forced: both are fed the CPU's greedy choice for 16 steps
 * and their logits must agree within the golden tolerances (argmax too
 * where the CPU's margin is clear); model_decode_topk on the GPU returns
 * the same step's best ids. Uses the f32 tiny model, or the q4_k_m one when
 * only that is present or when want_q4 asks for K-quant weights. Then the
 * device cache survives copy and truncate. */
/* The switches of gpu.cu that choose kernels, set for one run (cfg: one
 * value per name, NULL leaves it unset: the default). */
static const char *const gpu_switches[] = {"SMOLBOT_GPU_DATT", "SMOLBOT_GPU_MMQI", "SMOLBOT_GPU_FA",  "SMOLBOT_GPU_EARLY",
                                           "SMOLBOT_GPU_PF16", "SMOLBOT_GPU_GLUQ", "SMOLBOT_GPU_GLU2", "SMOLBOT_GPU_BATCH",
                                           "SMOLBOT_GPU_DMMA", "SMOLBOT_GPU_QIN",  "SMOLBOT_GPU_MMQ2",  "SMOLBOT_GPU_PAR",
                                           "SMOLBOT_GPU_SQ",   "SMOLBOT_GPU_Q6B",  "SMOLBOT_GPU_DQ16", "SMOLBOT_GPU_DQMIN",
                                           "SMOLBOT_GPU_APF",  "SMOLBOT_GPU_MW",   "SMOLBOT_GPU_DW8",  "SMOLBOT_GPU_NIN",
                                           "SMOLBOT_GPU_DU3"};
static void set_switches(const char *const *cfg) {
    for (size_t i = 0; i < CORE_ARRAY_LEN(gpu_switches); i++) {
        if (cfg && cfg[i]) setenv(gpu_switches[i], cfg[i], 1);
        else unsetenv(gpu_switches[i]);
    }
}
static void decode_and_cache(const char *const *cfg, int want_q4) {
    if (!gpu_ready()) T_SKIP("%s", skip_why);
    set_switches(cfg);
    const char *file = !want_q4 && t_shared("models/smollm3-tiny-f32.gguf") ? "models/smollm3-tiny-f32.gguf"
                                                                             : "models/smollm3-tiny-q4_k_m.gguf";
    const int steps = on_emu ? 8 : 16; /* each step is millions of emulated blocks there */
    const int is_f32 = strstr(file, "f32") != NULL;
    loaded G, C;
    int lg = load(file, &G, MODEL_GPU_ON);
    if (lg == -1) T_SKIP("../shared/models absent");
    if (lg == -3) T_SKIP("%s", skip_why);
    CHECK(lg == 0);
    if (lg) return;
    CHECK(load(file, &C, MODEL_GPU_OFF) == 0);
    const model_config *c = model_get_config(G.m);
    float *lg_ = malloc((size_t)c->n_vocab * 4), *lc = malloc((size_t)c->n_vocab * 4), *l3 = malloc((size_t)c->n_vocab * 4);
    int32_t prompt[12] = {504, 3090, 315, 279, 1917, 374, 264, 11, 323, 279, 10, 128011};
    model_kv *kg = NULL, *kc = NULL, *k2 = NULL;
    core_err err = {0};
    CHECK(model_kv_new(&kg, G.m, 300, MODEL_KV_F16, &err) == 0);
    CHECK(model_kv_new(&kc, C.m, 300, MODEL_KV_F16, &err) == 0);
    CHECK(model_kv_new(&k2, G.m, 300, MODEL_KV_F16, &err) == 0);
    CHECK(model_forward(G.m, kg, prompt, 12, lg_, 0, NULL, &err) == 0);
    CHECK(model_forward(C.m, kc, prompt, 12, lc, 0, NULL, &err) == 0);
    int argmax_same = 0, clear = 0;
    double worst = 0, worst_rms = 0;
    for (int s = 0; s < steps; s++) {
        double maxd, rms;
        t_diff_stats(lg_, lc, c->n_vocab, &maxd, &rms);
        worst = fmax(worst, maxd), worst_rms = fmax(worst_rms, rms);
        const int32_t b = t_argmax(lc, c->n_vocab);
        float second = -INFINITY;
        for (int i = 0; i < c->n_vocab; i++) if (i != b && lc[i] > second) second = lc[i];
        if (lc[b] - second >= 0.1f) {
            clear++;
            argmax_same += t_argmax(lg_, c->n_vocab) == b;
        }
        int32_t feed = b;
        if (model_forward(G.m, kg, &feed, 1, lg_, 0, NULL, &err) || model_forward(C.m, kc, &feed, 1, lc, 0, NULL, &err)) {
            CHECK_MSG(0, "%s", err.msg);
            break;
        }
    }
    fprintf(stderr, "  %s: GPU vs CPU over %d teacher-forced steps: max|diff| %.4f, rms %.4f, argmax equal %d of %d clear\n",
            file, steps, worst, worst_rms, argmax_same, clear);
    if (is_f32) CHECK_MSG(worst <= 0.02 && worst_rms <= 0.005, "max %.4f rms %.4f", worst, worst_rms);
    else CHECK_MSG(worst <= 0.5 && worst_rms <= 0.1, "max %.4f rms %.4f", worst, worst_rms);
    CHECK_EQ_INT(argmax_same, clear);
    CHECK(clear >= 4);
    /* copy the first 12 positions, decode the same token on both caches */
    CHECK(model_kv_copy_prefix(k2, kg, 12, &err) == 0);
    model_kv_truncate(kg, 12);
    int32_t t = 42;
    CHECK(model_forward(G.m, kg, &t, 1, lg_, 0, NULL, &err) == 0);
    CHECK(model_forward(G.m, k2, &t, 1, l3, 0, NULL, &err) == 0);
    double maxd, rms;
    t_diff_stats(lg_, l3, c->n_vocab, &maxd, &rms);
    CHECK_MSG(maxd == 0, "copied cache: max diff %.3g", maxd);
    /* top-k on the device equals the sorted logits of the same step */
    model_kv_truncate(k2, 12);
    int32_t ids[8];
    float vals[8];
    CHECK(model_decode_topk(G.m, k2, t, 8, ids, vals, &err) == 0);
    CHECK_EQ_INT(model_kv_len(k2), 13);
    for (int i = 0; i < 8; i++) {
        CHECK_MSG(vals[i] == lg_[ids[i]] || fabsf(vals[i] - lg_[ids[i]]) < 1e-6f, "rank %d: %g vs %g", i, vals[i], lg_[ids[i]]);
        if (i) CHECK(vals[i] <= vals[i - 1]);
    }
    CHECK_EQ_INT(ids[0], t_argmax(lg_, c->n_vocab));
    CHECK(model_kv_fill_synthetic(k2, 200, &err) == 0);
    CHECK_EQ_INT(model_kv_len(k2), 200);
    CHECK(model_forward(G.m, k2, &t, 1, l3, 0, NULL, &err) == 0);
    CHECK(l3[0] == l3[0]); /* finite after synthetic context */
    model_kv_free(kg), model_kv_free(kc), model_kv_free(k2);
    free(lg_), free(lc), free(l3);
    unload(&G);
    unload(&C);
}
static void decode_and_cache_env(const char *const *cfg, int want_q4) {
    decode_and_cache(cfg, want_q4);
    set_switches(NULL);
}
/* the defaults; every switch off (the first kernels: split-K decode
 * attention on CUDA cores, k_attn, k_mmq's fold per sub-block, one stream,
 * 256-token chunks); the opt-ins (the SwiGLU's Q8_K fused by gate/up, K
 * and V prefetched into L2 by decode attention, its merge in fewer round
 * trips, in blocks of eight warps), with the smallest chunk;
 * down quantizing its input itself (three steps of loads an iteration)
 * and QKV, gate/up normalizing theirs, with k_mmq at two blocks per SM and
 * the prefill's f16 GEMMs from one token on (DQMIN 1) */
static void test_decode_and_cache(void) { decode_and_cache_env(NULL, 0); }
static void test_decode_and_cache_off(void) {
    const char *const off[] = {"0", "0", "0", "0", "0", "0", "0", "256", "0", "0", "0",
                               "0", "0", "0", "0", NULL, "0", "0",   "0", "0", "0"};
    decode_and_cache_env(off, 0);
}
static void test_decode_and_cache_optin(void) {
    const char *const optin[] = {NULL, NULL, NULL, NULL, NULL, "1", NULL, "64", NULL, NULL,
                                 NULL, NULL, NULL, NULL, NULL, NULL, "1",  "1",  "1",  NULL, NULL};
    decode_and_cache_env(optin, 0);
}
static void test_decode_and_cache_qin(void) {
    const char *const qin[] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "1",
                               "1",  NULL, NULL, NULL, NULL, "1",  NULL, NULL, NULL, "1", "1"};
    decode_and_cache_env(qin, 1); /* K-quant weights: the only ones qin, nin and k_mmq see */
}

static void test_off_and_auto(void) {
    /* Runs everywhere: --gpu off never touches CUDA; on fails cleanly
     * without a GPU; auto always loads. */
    loaded L;
    int lr = load("models/smollm3-tiny-q4_k_m.gguf", &L, MODEL_GPU_OFF);
    if (lr == -1) T_SKIP("../shared/models absent");
    CHECK(lr == 0);
    if (!lr) { CHECK_EQ_STR(model_device(L.m), "cpu"); unload(&L); }
    lr = load("models/smollm3-tiny-q4_k_m.gguf", &L, MODEL_GPU_AUTO);
    CHECK(lr == 0);
    if (!lr) unload(&L);
    lr = load("models/smollm3-tiny-q4_k_m.gguf", &L, MODEL_GPU_ON);
    if (gpu_ready()) { CHECK(lr == 0); if (!lr) unload(&L); }
    else CHECK_MSG(lr == -3, "want CORE_EUNSUP without a GPU, got %d (%s)", lr, skip_why);
}

int main(void) {
    kern_init("scalar"); /* kern_rmsnorm & co. are then the reference */
    if (gpu_ready()) {
        char d[256];
        gpu_describe(d, sizeof d);
        on_emu = strstr(d, "emulation") != NULL;
    }
    T_RUN(test_off_and_auto);
    T_RUN(test_device);
    T_RUN(test_dequant);
    T_RUN(test_quant);
    T_RUN(test_matvec);
    T_RUN(test_matmul_tensor_cores);
    T_RUN(test_rmsnorm_silu);
    T_RUN(test_rope);
    T_RUN(test_attention);
    T_RUN(test_attention_dec);
    T_RUN(test_attention_dmma);
    T_RUN(test_attention_dmma_w8);
    T_RUN(test_attention_fa);
    T_RUN(test_topk);
    T_RUN(test_golden_f32);
    T_RUN(test_golden_q4);
    T_RUN(test_decode_and_cache);
    T_RUN(test_decode_and_cache_off);
    T_RUN(test_decode_and_cache_optin);
    T_RUN(test_decode_and_cache_qin);
    return t_done();
}
