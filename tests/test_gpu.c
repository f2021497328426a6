/* test_gpu.c -- the CUDA backend against the CPU.
 *
 * Built in every build; every test skips with the reason when the binary
 * was built without CUDA (`make CUDA=1`) or no CUDA device is present, so
 * `make test` stays green on machines without a GPU.
 *
 *   - each kernel on random inputs against the scalar reference: dequant
 *     (bit-exact), matrix-vector and tensor-core products (against the
 *     reference dequantization in double), rmsnorm, silu*mul, RoPE,
 *     attention (k_fa and k_attn_dmma, against a double-precision causal
 *     softmax), top-k -- through the probes of tests/test_gpu_probe.cu;
 *   - the golden logits (refdata/model, from llama.cpp) on
 *     the GPU path with the same tolerances as tests/test_model.c;
 *   - decode (CUDA graph) equals prefill, KV copy/truncate/fill on the device.
 *
 * The gpu_test_* probes are declared weak like in src/model/cuda.c: NULL
 * means "built without CUDA".
 */
#include <jansson.h>

#include "t.h"
#include "t_model.h"
#include "t_gpu.h"
#include "gguf/gguf.h"
#include "kern/kern.h"
#include "model/cuda/gpu.h"
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
    /* K-quants multiply Q8_K activations (k_mv aside): the reference does too */
    if (path != GPU_MM_MV && (type == KERN_Q4_K || type == KERN_Q5_K || type == KERN_Q6_K)) tg_q8k_round_trip(x, n_tok, n_in);
    CHECK_MSG(rc == 0, "%s path %d: %s", kern_ref_traits(type)->name, path, msg);
    const double worst = rc ? 0 : tg_matmul_err(type, w, n_out, n_in, x, n_tok, y);
    CHECK_MSG(worst <= rel, "%s path %d (%lld x %lld, %d tokens): relative error %.3g > %.3g",
              kern_ref_traits(type)->name, path, (long long)n_out, (long long)n_in, n_tok, worst, rel);
    free(w);
    free(x);
    free(y);
}

static int is_kq(int type) { return type == KERN_Q4_K || type == KERN_Q5_K || type == KERN_Q6_K; }

/* k_mv (f32 activations) for every type, and the fused decode kernel k_dec
 * (warps per row from the shape) for the K-quants */
static void test_matvec(void) {
    NEED_GPU();
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(types); ti++) {
        check_matmul(types[ti], 67, 768, 1, GPU_MM_MV, 1e-5);
        check_matmul(types[ti], 19, 512, 5, GPU_MM_MV, 1e-5);  /* batched rows */
        check_matmul(types[ti], 9, 2816, 11, GPU_MM_MV, 1e-5); /* two passes of 8 */
        if (!is_kq(types[ti])) continue;
        check_matmul(types[ti], 67, 768, 1, GPU_MM_DEC, 1e-5);
        check_matmul(types[ti], 13, 2816, 2, GPU_MM_DEC, 1e-5);
        check_matmul(types[ti], 2048, 256, 1, GPU_MM_DEC, 1e-5); /* one warp a row */
    }
}

/* Prefill products. K-quants: int8 tensor cores (k_mmq) on Q8_K
 * activations -- exact integer sums, so the error is float rounding only;
 * f16 tensor cores (the f16 GEMM: Q8_0/Q4_0 from 9 tokens, K-quants from 256):
 * about 2^-11 relative per term. Shapes: partial row and token tiles, then
 * enough tiles for the 128-token variants. */
static void test_matmul_tensor_cores(void) {
    NEED_GPU();
    for (size_t ti = 0; ti < CORE_ARRAY_LEN(types); ti++) {
        const int t = types[ti];
        if (t == KERN_F32 || t == KERN_F16 || t == KERN_BF16) continue;
        check_matmul(t, 67, 512, 37, GPU_MM_MODEL, is_kq(t) ? 1e-5 : 3e-3);
        check_matmul(t, 130, 768, 129, GPU_MM_MODEL, is_kq(t) ? 1e-5 : 3e-3);
        if (is_kq(t)) check_matmul(t, 67, 512, 37, GPU_MM_MMQ, 1e-5); /* 32-token tiles */
        check_matmul(t, 130, 768, 129, GPU_MM_DQ16, 3e-3); /* f16 GEMM over the dequantized matrix */
        check_matmul(t, 67, 512, 3, GPU_MM_DQ16, 3e-3);
        check_matmul(t, 67, 512, 37, GPU_MM_GEMM16, 3e-3);
    }
    if (on_emu) return; /* test_gpu_emu covers every token tile directly */
    const int big[] = {KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};
    for (size_t i = 0; i < CORE_ARRAY_LEN(big); i++) {
        check_matmul(big[i], 2112, 1024, 1000, GPU_MM_MMQ, 1e-5); /* 128-token tiles, 4 super-blocks */
        check_matmul(big[i], 2112, 512, 500, GPU_MM_MMQ, 1e-5);   /* 64-token tiles */
        check_matmul(big[i], 2112, 1024, 1000, GPU_MM_MODEL, 3e-3); /* f16 GEMM, 128-row tiles */
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

/* k_fa, k_attn_dmma (tensor cores): t_gpu.h's cases, decode past 8192
 * positions too */
static void test_attention(void) {
    NEED_GPU();
    tg_fa_cases(gpu_test_attention);
    tg_dmma_cases(gpu_test_attention, 1);
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
static void decode_and_cache(int want_q4) {
    if (!gpu_ready()) T_SKIP("%s", skip_why);
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
static void test_decode_and_cache(void) { decode_and_cache(0); }
/* K-quant weights: the integer-dot decode kernels and k_mmq */
static void test_decode_and_cache_q4(void) { decode_and_cache(1); }

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

/* Families the device kernels do not run (NEOX RoPE, q/k norms, RoPE
 * factors): auto stays on the CPU, on is refused naming the reason. */
static void test_family_fallback(void) {
    static const char *const files[] = {"models/qwen3-tiny.gguf", "models/llama-tiny.gguf"};
    for (size_t i = 0; i < CORE_ARRAY_LEN(files); i++) {
        loaded L;
        int lr = load(files[i], &L, MODEL_GPU_AUTO);
        if (lr == -1) T_SKIP("../shared/models absent");
        CHECK(lr == 0);
        if (!lr) { CHECK_EQ_STR(model_device(L.m), "cpu"); unload(&L); }
        char why[512] = "";
        lr = t_load(files[i], &L, 0, MODEL_GPU_ON, why, sizeof why);
        CHECK_MSG(lr == -3 && strstr(why, "CUDA backend does not run"), "%s: %d '%s'", files[i], lr, why);
        if (!lr) unload(&L);
    }
}

int main(void) {
    kern_init("scalar"); /* kern_rmsnorm & co. are then the reference */
    if (gpu_ready()) {
        char d[256];
        gpu_describe(d, sizeof d);
        on_emu = strstr(d, "emulation") != NULL;
    }
    T_RUN(test_off_and_auto);
    T_RUN(test_family_fallback);
    T_RUN(test_device);
    T_RUN(test_dequant);
    T_RUN(test_quant);
    T_RUN(test_matvec);
    T_RUN(test_matmul_tensor_cores);
    T_RUN(test_rmsnorm_silu);
    T_RUN(test_rope);
    T_RUN(test_attention);
    T_RUN(test_topk);
    T_RUN(test_golden_f32);
    T_RUN(test_golden_q4);
    T_RUN(test_decode_and_cache);
    T_RUN(test_decode_and_cache_q4);
    return t_done();
}
