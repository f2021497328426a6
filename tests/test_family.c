/* test_family.c -- the families beside SmolLM3 (llama, qwen2, qwen3).
 *
 * Against llama.cpp (../shared/refdata/families): last-position logits
 * within max 0.1 / RMS 0.02 of llama.cpp's with an f32 KV cache (its own
 * spread, f16 KV + flash attention against f32, is max 0.02-0.07), and the
 * greedy ids equal up to the first step whose margin is below 0.05.
 *
 * No llama.cpp reference is shared for qwen2, so every family also runs
 * against a naive double-precision forward pass written here from
 * llama.cpp's definitions (bias added before RoPE, NEOX halves, per-head
 * q/k norms, Llama 3 frequency factors), on small random F32 models
 * written with the gguf writer. Files of shapes or parts we do not run
 * are refused with a message naming them.
 */
#include <jansson.h>

#include "t.h"
#include "t_model.h"
#include "gguf/gguf.h"
#include "model/model.h"

/* ---- against llama.cpp ------------------------------------------------ */

static int32_t *json_ids(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *v = malloc((*n ? *n : 1) * sizeof *v);
    for (size_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

static void check_family(const char *family) {
    const char *gj = t_shared("refdata/families/family_greedy.jsonl");
    if (!gj) T_SKIP("../shared/refdata/families absent");
    FILE *f = fopen(gj, "r");
    char line[1 << 16];
    int n_cases = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        const char *fam = o ? json_string_value(json_object_get(o, "family")) : NULL;
        if (!fam || strcmp(fam, family)) { json_decref(o); continue; }
        const char *mf = json_string_value(json_object_get(o, "model_file"));
        const char *name = json_string_value(json_object_get(o, "prompt_name"));
        const char *lf = json_string_value(json_object_get(o, "logits_file"));
        char rel[256];
        snprintf(rel, sizeof rel, "models/%s", mf ? mf : "");
        t_loaded L;
        int lr = t_load(rel, &L, 0, MODEL_GPU_OFF, NULL, 0);
        if (lr == -1) { json_decref(o); fclose(f); T_SKIP("../shared/%s absent", rel); }
        CHECK_MSG(lr == 0, "%s", rel);
        if (lr) { json_decref(o); continue; }
        const int nv = model_get_config(L.m)->n_vocab;
        snprintf(rel, sizeof rel, "refdata/families/%s", lf ? lf : "");
        float *ref = t_shared(rel) ? t_read_f32(t_shared(rel), (size_t)nv) : NULL;
        float *logits = malloc((size_t)nv * sizeof(float));
        CHECK_MSG(ref != NULL, "%s", rel);
        size_t n;
        int32_t *toks = json_ids(json_object_get(o, "prompt_ids"), &n);
        model_kv *kv = NULL;
        core_err err = {0};
        CHECK(model_kv_new(&kv, L.m, 512, MODEL_KV_F32, &err) == 0);
        int rc = kv ? model_forward(L.m, kv, toks, (int)n, logits, 0, NULL, &err) : -1;
        CHECK_MSG(rc == 0, "%s", err.msg);
        if (ref && rc == 0) {
            double maxd, rms;
            t_diff_stats(logits, ref, nv, &maxd, &rms);
            fprintf(stderr, "  %-6s %-6s max|diff| %.6f  rms %.6f\n", family, name, maxd, rms);
            CHECK_MSG(maxd <= 0.1 && rms <= 0.02, "%s %s: max %.4f rms %.4f", family, name, maxd, rms);
        }
        /* greedy: decode one token at a time, equal up to the first near-tie */
        json_t *want = json_object_get(o, "greedy_32"), *margins = json_object_get(o, "top1_minus_top2");
        size_t agree = 0, steps = json_array_size(want);
        for (size_t s = 0; rc == 0 && s < steps; s++) {
            int32_t id = t_argmax(logits, nv);
            if (json_number_value(json_array_get(margins, s)) < 0.05) break;
            if (id != json_integer_value(json_array_get(want, s))) {
                CHECK_MSG(0, "%s %s: greedy step %zu: got %d want %lld", family, name, s, id,
                          (long long)json_integer_value(json_array_get(want, s)));
                break;
            }
            agree++;
            rc = model_forward(L.m, kv, &id, 1, logits, 0, NULL, &err);
        }
        CHECK(steps == 32);
        fprintf(stderr, "  %-6s %-6s greedy ids agree for %zu steps (up to the first margin < 0.05)\n", family,
                name, agree);
        model_kv_free(kv);
        free(toks);
        free(logits);
        free(ref);
        t_unload(&L);
        json_decref(o);
        n_cases++;
    }
    fclose(f);
    CHECK_EQ_INT(n_cases, 3);
}

static void test_llama_vs_llamacpp(void) { check_family("llama"); }
static void test_qwen3_vs_llamacpp(void) { check_family("qwen3"); }

/* ---- a naive forward pass on small random models ----------------------- */

enum { FAM_LLAMA, FAM_QWEN2, FAM_QWEN3 };

/* shapes of the random models: GQA (4 query heads, 2 KV heads), qwen3
 * with head_dim apart from n_embd/n_head */
typedef struct rnd_model {
    int fam, E, H, KV, HD, F, V, NL, tied;
    float theta, eps, linear; /* linear: RoPE scaling factor, 0 for none */
    /* weights, row-major [out][in] like GGUF's [ne0 = in, ne1 = out] */
    float *embd, *out, *onorm, *freqs;
    struct {
        float *an, *wq, *wk, *wv, *wo, *fn, *wg, *wu, *wd, *bq, *bk, *bv, *qn, *kn;
    } l[2];
    float *pool;
    size_t used;
} rnd_model;

static uint32_t rng = 12345;
static float frand(float scale) {
    rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
    return ((float)(rng & 0xffffff) / 16777216.0f - 0.5f) * 2.0f * scale;
}
static float *take(rnd_model *r, size_t n, float scale, float base) {
    float *p = r->pool + r->used;
    r->used += n;
    for (size_t i = 0; i < n; i++) p[i] = base + frand(scale);
    return p;
}

static void rnd_init(rnd_model *r, int fam) {
    memset(r, 0, sizeof *r);
    r->fam = fam, r->E = 32, r->H = 4, r->KV = 2, r->HD = fam == FAM_QWEN3 ? 16 : 8, r->F = 48, r->V = 64, r->NL = 2;
    r->tied = fam != FAM_LLAMA;
    r->theta = fam == FAM_LLAMA ? 500000.0f : 1000000.0f, r->eps = 1e-6f;
    const size_t E = (size_t)r->E, QD = (size_t)r->H * r->HD, KD = (size_t)r->KV * r->HD, F = (size_t)r->F;
    r->pool = malloc(sizeof(float) * (2 * E * r->V + E + r->HD + 2 * (2 * E + 2 * E * QD + 2 * E * KD + 3 * E * F + QD + 2 * KD + 2 * r->HD)));
    r->embd = take(r, E * r->V, 1.0f, 0);
    r->out = r->tied ? r->embd : take(r, E * r->V, 0.3f, 0);
    r->onorm = take(r, E, 0.2f, 1.0f);
    /* Llama 3 style factors: 1 for high frequencies, up to 8 for low ones */
    if (fam == FAM_LLAMA) {
        r->freqs = take(r, (size_t)r->HD / 2, 0, 0);
        for (int i = 0; i < r->HD / 2; i++) r->freqs[i] = 1.0f + 7.0f * (float)i / (float)(r->HD / 2 - 1);
    }
    for (int il = 0; il < r->NL; il++) {
        r->l[il].an = take(r, E, 0.2f, 1.0f);
        r->l[il].wq = take(r, E * QD, 0.3f, 0);
        r->l[il].wk = take(r, E * KD, 0.3f, 0);
        r->l[il].wv = take(r, E * KD, 0.3f, 0);
        r->l[il].wo = take(r, QD * E, 0.3f, 0);
        r->l[il].fn = take(r, E, 0.2f, 1.0f);
        r->l[il].wg = take(r, E * F, 0.3f, 0);
        r->l[il].wu = take(r, E * F, 0.3f, 0);
        r->l[il].wd = take(r, F * E, 0.3f, 0);
        if (fam == FAM_QWEN2) {
            r->l[il].bq = take(r, QD, 1.0f, 0);
            r->l[il].bk = take(r, KD, 1.0f, 0);
            r->l[il].bv = take(r, KD, 1.0f, 0);
        }
        if (fam == FAM_QWEN3) {
            r->l[il].qn = take(r, (size_t)r->HD, 0.3f, 1.0f);
            r->l[il].kn = take(r, (size_t)r->HD, 0.3f, 1.0f);
        }
    }
}

/* What rnd_write breaks, for the refusal cases */
enum { OK_FILE, LINEAR_FILE, BAD_ARCH, BAD_NO_KNORM, BAD_NO_BIAS, BAD_EXTRA_BIAS, BAD_MOE, BAD_YARN, BAD_HEAD_DIM };

static int rnd_write(const rnd_model *r, const char *path, int how) {
    static const char *const arch[] = {"llama", "qwen2", "qwen3"};
    const char *a = arch[r->fam];
    gguf_writer *w = gguf_writer_new();
    char k[128];
    if (how == BAD_ARCH) gguf_writer_set_str(w, "general.architecture", "gemma3", 6);
    else gguf_writer_set_str(w, "general.architecture", a, strlen(a));
    if (how == LINEAR_FILE) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", a), gguf_writer_set_str(w, k, "linear", 6);
        snprintf(k, sizeof k, "%s.rope.scaling.factor", a), gguf_writer_set_f32(w, k, r->linear);
    }
    if (how == BAD_MOE) snprintf(k, sizeof k, "%s.expert_count", a), gguf_writer_set_u32(w, k, 8);
    if (how == BAD_YARN) snprintf(k, sizeof k, "%s.rope.scaling.type", a), gguf_writer_set_str(w, k, "yarn", 4);
    if (how == BAD_HEAD_DIM) snprintf(k, sizeof k, "%s.attention.key_length", a), gguf_writer_set_u32(w, k, 9);
#define U(suffix, val) snprintf(k, sizeof k, "%s." suffix, a), gguf_writer_set_u32(w, k, (uint32_t)(val))
    U("block_count", r->NL);
    U("context_length", 4096);
    U("embedding_length", r->E);
    U("feed_forward_length", r->F);
    U("attention.head_count", r->H);
    U("attention.head_count_kv", r->KV);
    U("rope.dimension_count", r->HD);
    if (r->fam == FAM_QWEN3) U("attention.key_length", r->HD), U("attention.value_length", r->HD);
#undef U
    snprintf(k, sizeof k, "%s.rope.freq_base", a), gguf_writer_set_f32(w, k, r->theta);
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", a), gguf_writer_set_f32(w, k, r->eps);
    const uint64_t E = (uint64_t)r->E, QD = (uint64_t)r->H * r->HD, KD = (uint64_t)r->KV * r->HD, F = (uint64_t)r->F;
#define M(name, p, n0, n1) do { uint64_t ne[4] = {n0, n1, 1, 1}; gguf_writer_add_tensor(w, name, GGUF_GGML_F32, 2, ne, p); } while (0)
#define VEC(name, p, n0) do { uint64_t ne[4] = {n0, 1, 1, 1}; gguf_writer_add_tensor(w, name, GGUF_GGML_F32, 1, ne, p); } while (0)
    M("token_embd.weight", r->embd, E, (uint64_t)r->V);
    VEC("output_norm.weight", r->onorm, E);
    if (!r->tied) M("output.weight", r->out, E, (uint64_t)r->V);
    if (r->freqs) VEC("rope_freqs.weight", r->freqs, (uint64_t)r->HD / 2);
    for (int il = 0; il < r->NL; il++) {
        char n[64];
#define NM(s) (snprintf(n, sizeof n, "blk.%d." s, il), n)
        VEC(NM("attn_norm.weight"), r->l[il].an, E);
        M(NM("attn_q.weight"), r->l[il].wq, E, QD);
        M(NM("attn_k.weight"), r->l[il].wk, E, KD);
        M(NM("attn_v.weight"), r->l[il].wv, E, KD);
        M(NM("attn_output.weight"), r->l[il].wo, QD, E);
        VEC(NM("ffn_norm.weight"), r->l[il].fn, E);
        M(NM("ffn_gate.weight"), r->l[il].wg, E, F);
        M(NM("ffn_up.weight"), r->l[il].wu, E, F);
        M(NM("ffn_down.weight"), r->l[il].wd, F, E);
        if (r->l[il].bq) {
            VEC(NM("attn_q.bias"), r->l[il].bq, QD);
            if (!(how == BAD_NO_BIAS && il == 1)) VEC(NM("attn_k.bias"), r->l[il].bk, KD);
            VEC(NM("attn_v.bias"), r->l[il].bv, KD);
        }
        if (r->l[il].qn) {
            VEC(NM("attn_q_norm.weight"), r->l[il].qn, (uint64_t)r->HD);
            if (!(how == BAD_NO_KNORM && il == 1)) VEC(NM("attn_k_norm.weight"), r->l[il].kn, (uint64_t)r->HD);
        }
        if (how == BAD_EXTRA_BIAS && il == 0) VEC(NM("attn_output.bias"), r->onorm, E);
#undef NM
    }
#undef M
#undef VEC
    core_err err = {0};
    int rc = gguf_writer_write(w, path, NULL, NULL, &err);
    if (rc) fprintf(stderr, "  writer: %s\n", err.msg);
    gguf_writer_free(w);
    return rc;
}

static void ref_matvec(const float *w, const double *x, int n_in, int n_out, double *y) {
    for (int o = 0; o < n_out; o++) {
        double s = 0;
        for (int i = 0; i < n_in; i++) s += (double)w[(size_t)o * n_in + i] * x[i];
        y[o] = s;
    }
}
static void ref_rmsnorm(double *y, const double *x, const float *w, int n, double eps) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const double sc = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * sc * w[i];
}
/* llama.cpp's RoPE: angle pos * theta^(-2i/hd) / factor_i; NEOX pairs (i, i + hd/2) */
static void ref_rope(const rnd_model *r, double *x, int pos) {
    const int hd = r->HD, half = hd / 2, neox = r->fam != FAM_LLAMA;
    for (int i = 0; i < half; i++) {
        double a = pos * pow(r->theta, -2.0 * i / hd);
        if (r->freqs) a /= r->freqs[i];
        if (r->linear) a /= r->linear;
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const double x0 = x[i0], x1 = x[i1];
        x[i0] = x0 * cos(a) - x1 * sin(a);
        x[i1] = x0 * sin(a) + x1 * cos(a);
    }
}

/* logits after each of toks[0..n) (n <= 8), out[n][V] */
static void ref_forward(const rnd_model *r, const int32_t *toks, int n, double *out) {
    enum { MAXT = 8, MAXD = 64 };
    static double K[2][MAXT][MAXD], Vv[2][MAXT][MAXD];
    const int E = r->E, HD = r->HD, QD = r->H * HD, KD = r->KV * HD, F = r->F, G = r->H / r->KV;
    for (int t = 0; t < n; t++) {
        double h[64], x[64], q[MAXD], k[MAXD], v[MAXD], att[MAXD], o[64], g[64], u[64];
        for (int i = 0; i < E; i++) h[i] = r->embd[(size_t)toks[t] * E + i];
        for (int il = 0; il < r->NL; il++) {
            ref_rmsnorm(x, h, r->l[il].an, E, r->eps);
            ref_matvec(r->l[il].wq, x, E, QD, q);
            ref_matvec(r->l[il].wk, x, E, KD, k);
            ref_matvec(r->l[il].wv, x, E, KD, v);
            if (r->l[il].bq) {
                for (int i = 0; i < QD; i++) q[i] += r->l[il].bq[i];
                for (int i = 0; i < KD; i++) k[i] += r->l[il].bk[i], v[i] += r->l[il].bv[i];
            }
            if (r->l[il].qn) {
                for (int hh = 0; hh < r->H; hh++) ref_rmsnorm(q + hh * HD, q + hh * HD, r->l[il].qn, HD, r->eps);
                for (int hh = 0; hh < r->KV; hh++) ref_rmsnorm(k + hh * HD, k + hh * HD, r->l[il].kn, HD, r->eps);
            }
            for (int hh = 0; hh < r->H; hh++) ref_rope(r, q + hh * HD, t);
            for (int hh = 0; hh < r->KV; hh++) ref_rope(r, k + hh * HD, t);
            memcpy(K[il][t], k, sizeof(double) * (size_t)KD);
            memcpy(Vv[il][t], v, sizeof(double) * (size_t)KD);
            for (int hh = 0; hh < r->H; hh++) {
                const int kh = hh / G;
                double s[MAXT], mx = -1e300, sum = 0;
                for (int p = 0; p <= t; p++) {
                    s[p] = 0;
                    for (int i = 0; i < HD; i++) s[p] += q[hh * HD + i] * K[il][p][kh * HD + i];
                    s[p] /= sqrt((double)HD);
                    if (s[p] > mx) mx = s[p];
                }
                for (int p = 0; p <= t; p++) sum += (s[p] = exp(s[p] - mx));
                for (int i = 0; i < HD; i++) {
                    double a = 0;
                    for (int p = 0; p <= t; p++) a += s[p] * Vv[il][p][kh * HD + i];
                    att[hh * HD + i] = a / sum;
                }
            }
            ref_matvec(r->l[il].wo, att, QD, E, o);
            for (int i = 0; i < E; i++) h[i] += o[i];
            ref_rmsnorm(x, h, r->l[il].fn, E, r->eps);
            ref_matvec(r->l[il].wg, x, E, F, g);
            ref_matvec(r->l[il].wu, x, E, F, u);
            for (int i = 0; i < F; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            ref_matvec(r->l[il].wd, g, F, E, o);
            for (int i = 0; i < E; i++) h[i] += o[i];
        }
        ref_rmsnorm(x, h, r->onorm, E, r->eps);
        ref_matvec(r->out, x, E, r->V, out + (size_t)t * r->V);
    }
}

static void check_naive(int fam, float linear) {
    static const char *const names[] = {"llama", "qwen2", "qwen3"};
    rnd_model r;
    rnd_init(&r, fam);
    r.linear = linear;
    char path[512];
    snprintf(path, sizeof path, "%s/rnd_%s.gguf", t_tmpdir(), names[fam]);
    CHECK(rnd_write(&r, path, linear ? LINEAR_FILE : OK_FILE) == 0);
    gguf *g = NULL;
    model *m = NULL;
    core_err err = {0};
    int rc = gguf_open(&g, path, &err);
    model_opts o = {1, 0, MODEL_GPU_OFF};
    if (!rc) rc = model_load(&m, g, &o, &err);
    CHECK_MSG(rc == 0, "%s: %s", names[fam], err.msg);
    if (!rc) {
        const model_config *c = model_get_config(m);
        CHECK_EQ_STR(c->arch, names[fam]);
        CHECK_EQ_INT(c->head_dim, r.HD);
        CHECK_EQ_INT(c->rope_neox, fam != FAM_LLAMA);
        CHECK_EQ_INT(c->qkv_bias, fam == FAM_QWEN2);
        CHECK_EQ_INT(c->qk_norm, fam == FAM_QWEN3);
        CHECK_EQ_INT(c->rope_freqs, fam == FAM_LLAMA);
        enum { N = 7 };
        const int32_t toks[N] = {3, 17, 42, 5, 63, 0, 29};
        double want[N * 64];
        float got[N * 64];
        ref_forward(&r, toks, N, want);
        /* prefill of 5 (all logits), then 2 decode steps */
        model_kv *kv = NULL;
        CHECK(model_kv_new(&kv, m, 64, MODEL_KV_F32, &err) == 0);
        CHECK(kv && model_forward(m, kv, toks, 5, got, 1, NULL, &err) == 0);
        for (int t = 5; kv && t < N; t++) CHECK(model_forward(m, kv, toks + t, 1, got + t * r.V, 0, NULL, &err) == 0);
        double maxd = 0;
        for (int i = 0; i < N * r.V; i++) maxd = fmax(maxd, fabs(got[i] - want[i]));
        fprintf(stderr, "  naive %-5s%s max|diff| %.2e over %d positions\n", names[fam], linear ? " (linear RoPE x4)" : "",
                maxd, N);
        CHECK_MSG(maxd < 2e-3, "%s: max %.3g", names[fam], maxd);
        model_kv_free(kv);
        model_free(m);
    }
    gguf_close(g);
    unlink(path);
    free(r.pool);
}

static void test_llama_naive(void) { check_naive(FAM_LLAMA, 0); }
static void test_qwen2_naive(void) { check_naive(FAM_QWEN2, 0); }
static void test_qwen3_naive(void) { check_naive(FAM_QWEN3, 0); }
static void test_linear_rope_naive(void) { check_naive(FAM_QWEN2, 4.0f); }

/* Files we do not run are refused at load, naming what is wrong. */
static void test_refusals(void) {
    struct { int fam, how; const char *want; } cases[] = {
        {FAM_LLAMA, BAD_ARCH, "architecture 'gemma3' is not supported"},
        {FAM_QWEN3, BAD_NO_KNORM, "blk.1.attn_k_norm.weight"},
        {FAM_QWEN2, BAD_NO_BIAS, "blk.1.attn_k.bias"},
        {FAM_LLAMA, BAD_EXTRA_BIAS, "blk.0.attn_output.bias"},
        {FAM_QWEN3, BAD_MOE, "expert_count"},
        {FAM_LLAMA, BAD_YARN, "RoPE scaling 'yarn'"},
        {FAM_QWEN2, BAD_HEAD_DIM, "head_dim 9"},
    };
    for (size_t i = 0; i < CORE_ARRAY_LEN(cases); i++) {
        rnd_model r;
        rnd_init(&r, cases[i].fam);
        char path[512];
        snprintf(path, sizeof path, "%s/bad%zu.gguf", t_tmpdir(), i);
        CHECK(rnd_write(&r, path, cases[i].how) == 0);
        gguf *g = NULL;
        model *m = NULL;
        core_err err = {0};
        int rc = gguf_open(&g, path, &err);
        CHECK_MSG(rc == 0, "%s", err.msg);
        if (!rc) rc = model_load(&m, g, NULL, &err);
        CHECK_MSG(rc != 0 && strstr(err.msg, cases[i].want), "case %zu: rc %d msg '%s'", i, rc, err.msg);
        model_free(m);
        gguf_close(g);
        unlink(path);
        free(r.pool);
    }
}

int main(void) {
    T_RUN(test_refusals);
    T_RUN(test_llama_naive);
    T_RUN(test_qwen2_naive);
    T_RUN(test_qwen3_naive);
    T_RUN(test_linear_rope_naive);
    T_RUN(test_llama_vs_llamacpp);
    T_RUN(test_qwen3_vs_llamacpp);
    return t_done();
}
