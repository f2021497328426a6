/* cmd_gen_model.c -- `smolbot gen-model`: a GGUF with random weights in
 * the shape of a real SmolLM3, Llama 3.2, Qwen2.5 or Qwen3 model.
 *
 *   smolbot gen-model [--arch smollm3|llama|qwen2|qwen3] --preset P
 *                     [--quant f32|f16|q8_0|q4_k_m] [--seed N]
 *                     --vocab-from DONOR.gguf -o OUT.gguf
 *
 * Why: tests and benchmarks need a 3B-shaped file without downloading 1.9 GB,
 * and a tiny one whose layout is exactly that of the real files. The other
 * families add what sets them apart, named as llama.cpp's converter names
 * it: Llama 3's rope_freqs.weight (the real frequency factors), Qwen3's
 * per-layer attn_q_norm / attn_k_norm, Qwen2's attn_{q,k,v}.bias; their
 * heads are tied, as in the presets' real models. The vocabulary size is
 * the donor's (the family's own tokenizer must be the donor).
 *
 * Layout follows the real files: the metadata keys and their order are those
 * of smollm3-tiny-q4_k_m.gguf (quantized) or smollm3-tiny-f32.gguf (f32/f16,
 * which carry general.file_type early and no quantization_version); the
 * tokenizer kvs (tokenizer.*) are copied verbatim from the donor; tensors use
 * the real names and order (quantized files: output_norm, token_embd, then
 * each layer's tensors sorted by name; float files: the converter's order).
 *
 * Types: f32/f16/q8_0 put every matrix (token_embd too) in that type, norms
 * F32. q4_k_m is llama.cpp's recipe: token_embd Q6_K; attn_v and ffn_down Q6_K
 * in layer i when i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2, else Q4_K;
 * other matrices Q4_K; norms F32.
 *
 * Weights are deterministic in --seed: each tensor gets its own xoshiro256**
 * stream seeded by splitmix64(seed, tensor index), so the bytes do not depend
 * on write order. Floats are uniform in +-0.035 (std ~0.02), norms 1 +- 0.05.
 * Quant blocks have random quant bits and small positive f16 scales chosen so
 * dequantized weights stay within about +-0.6 (finite, no NaN/inf).
 * Data goes through gguf_writer (temp file, fsync, rename), one tensor at a
 * time: peak memory is the largest tensor.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "kern/kern.h"

typedef struct preset {
    const char *arch, *name, *size_label;
    uint32_t embd, layers, heads, kv_heads, head_dim, ffn, ctx, vocab; /* vocab 0: the donor's */
    float rope_theta, eps;
} preset;

/* The real models' hyperparameters (their config.json) */
static const preset presets[] = {
    {"smollm3", "tiny", "30M", 256, 4, 4, 1, 64, 768, 4096, 128256, 5e6f, 1e-6f},
    {"smollm3", "3b", "3B", 2048, 36, 16, 4, 128, 11008, 65536, 128256, 5e6f, 1e-6f},
    {"llama", "tiny", "30M", 256, 4, 4, 1, 64, 768, 4096, 0, 500000.0f, 1e-5f},
    {"llama", "1b", "1B", 2048, 16, 32, 8, 64, 8192, 131072, 0, 500000.0f, 1e-5f},
    {"llama", "3b", "3B", 3072, 28, 24, 8, 128, 8192, 131072, 0, 500000.0f, 1e-5f},
    {"qwen2", "tiny", "30M", 256, 4, 4, 1, 64, 768, 4096, 0, 1e6f, 1e-6f},
    {"qwen2", "1.5b", "1.5B", 1536, 28, 12, 2, 128, 8960, 32768, 0, 1e6f, 1e-6f},
    {"qwen3", "tiny", "30M", 256, 4, 4, 1, 128, 768, 4096, 0, 1e6f, 1e-6f},
    {"qwen3", "0.6b", "0.6B", 1024, 28, 16, 8, 128, 3072, 40960, 0, 1e6f, 1e-6f},
    {"qwen3", "4b", "4B", 2560, 36, 32, 8, 128, 9728, 40960, 0, 1e6f, 1e-6f},
};

static int is_arch(const preset *p, const char *a) { return !strcmp(p->arch, a); }

typedef enum { Q_F32, Q_F16, Q_Q8_0, Q_Q4_K_M } quant;
static const struct {
    const char *name;
    uint32_t file_type;
} quants[] = {{"f32", 0}, {"f16", 1}, {"q8_0", 7}, {"q4_k_m", 15}};

/* ---- PRNG: splitmix64 for seeding, xoshiro256** for streams ---------------- */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* uniform in [0, 1) */
static inline float rng_unit(rng *r) { return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f); }
static inline float rng_range(rng *r, float lo, float hi) { return lo + (hi - lo) * rng_unit(r); }

static void rng_bytes(rng *r, void *dst, size_t n) {
    uint8_t *p = dst;
    while (n >= 8) {
        uint64_t v = rng_next(r);
        memcpy(p, &v, 8);
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = rng_next(r);
        memcpy(p, &v, n);
    }
}

/* ---- layout --------------------------------------------------------------- */

enum { T_NORM, T_MAT };

/* The q4_k_m recipe for attn_v / ffn_down in layer i of n. */
static int q4km_wants_q6(uint32_t i, uint32_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

typedef struct gen {
    const preset *p;
    quant q;
    uint64_t seed;
    uint32_t vocab; /* the preset's, or the donor's */
} gen;

static uint32_t mat_type(quant q) {
    switch (q) {
    case Q_F32: return GGUF_GGML_F32;
    case Q_F16: return GGUF_GGML_F16;
    case Q_Q8_0: return GGUF_GGML_Q8_0;
    default: return GGUF_GGML_Q4_K;
    }
}

static int add(gguf_writer *w, const char *name, uint32_t type, uint64_t ne0, uint64_t ne1) {
    uint64_t ne[2] = {ne0, ne1};
    return gguf_writer_add_tensor(w, name, type, ne1 ? 2 : 1, ne, NULL);
}

/* Add one layer's tensors; `sorted` = the quantized files' order (by name). */
typedef struct lt {
    char name[32];
    uint32_t type;
    uint64_t ne0, ne1;
} lt;
static int lt_cmp(const void *a, const void *b) { return strcmp(((const lt *)a)->name, ((const lt *)b)->name); }

static int add_layer(gguf_writer *w, const gen *g, uint32_t il, int sorted) {
    const preset *p = g->p;
    uint64_t E = p->embd, Q = (uint64_t)p->heads * p->head_dim, KV = (uint64_t)p->kv_heads * p->head_dim, F = p->ffn;
    uint32_t mt = mat_type(g->q), vt = mt;
    if (g->q == Q_Q4_K_M && q4km_wants_q6(il, p->layers)) vt = GGUF_GGML_Q6_K;
    lt t[16] = {
        {"attn_norm.weight", GGUF_GGML_F32, E, 0}, {"attn_q.weight", mt, E, Q},    {"attn_k.weight", mt, E, KV},
        {"attn_v.weight", vt, E, KV},              {"attn_output.weight", mt, Q, E}, {"ffn_norm.weight", GGUF_GGML_F32, E, 0},
        {"ffn_gate.weight", mt, E, F},             {"ffn_up.weight", mt, E, F},    {"ffn_down.weight", vt, F, E},
    };
    int n = 9;
    if (is_arch(p, "qwen2")) {
        t[n++] = (lt){"attn_q.bias", GGUF_GGML_F32, Q, 0};
        t[n++] = (lt){"attn_k.bias", GGUF_GGML_F32, KV, 0};
        t[n++] = (lt){"attn_v.bias", GGUF_GGML_F32, KV, 0};
    }
    if (is_arch(p, "qwen3")) {
        t[n++] = (lt){"attn_q_norm.weight", GGUF_GGML_F32, p->head_dim, 0};
        t[n++] = (lt){"attn_k_norm.weight", GGUF_GGML_F32, p->head_dim, 0};
    }
    if (sorted) qsort(t, (size_t)n, sizeof *t, lt_cmp);
    for (int k = 0; k < n; k++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%u.%.40s", il, t[k].name);
        int rc = add(w, name, t[k].type, t[k].ne0, t[k].ne1);
        if (rc) return rc;
    }
    return 0;
}

static int add_tensors(gguf_writer *w, const gen *g) {
    const preset *p = g->p;
    uint32_t et = g->q == Q_Q4_K_M ? GGUF_GGML_Q6_K : mat_type(g->q);
    int sorted = g->q == Q_Q8_0 || g->q == Q_Q4_K_M, rc = 0;
    if (is_arch(p, "llama") && (rc = add(w, "rope_freqs.weight", GGUF_GGML_F32, p->head_dim / 2, 0))) return rc;
    if (sorted) {
        if ((rc = add(w, "output_norm.weight", GGUF_GGML_F32, p->embd, 0))) return rc;
        if ((rc = add(w, "token_embd.weight", et, p->embd, g->vocab))) return rc;
    } else if ((rc = add(w, "token_embd.weight", et, p->embd, g->vocab))) {
        return rc;
    }
    for (uint32_t il = 0; il < p->layers; il++)
        if ((rc = add_layer(w, g, il, sorted))) return rc;
    if (!sorted) rc = add(w, "output_norm.weight", GGUF_GGML_F32, p->embd, 0);
    return rc;
}

/* ---- data ------------------------------------------------------------------ */

/* Llama 3.x's frequency factors as the converter computes them (factor 32,
 * low/high frequency factors 1 and 4, original context 8192): 1 for
 * wavelengths under 2048, the factor over 8192, smoothed between. */
static void llama3_rope_factors(float *f, int n, float theta) {
    const double factor = 32, lo = 1, hi = 4, old_ctx = 8192;
    const double lo_wl = old_ctx / lo, hi_wl = old_ctx / hi;
    for (int i = 0; i < n; i++) {
        const double freq = 1.0 / pow(theta, 2.0 * i / (2.0 * n)), wl = 2 * 3.14159265358979323846 / freq;
        if (wl < hi_wl) f[i] = 1;
        else if (wl > lo_wl) f[i] = (float)factor;
        else {
            const double sm = (old_ctx / wl - lo) / (hi - lo);
            f[i] = (float)(1 / ((1 - sm) / factor + sm));
        }
    }
}

static uint16_t f16_range(rng *r, float lo, float hi) { return core_f32_to_f16(rng_range(r, lo, hi)); }

static int fill(void *ctx, int64_t index, const gguf_tensor *t, void *buf, uint64_t nbytes, core_err *err) {
    const gen *g = ctx;
    rng r;
    rng_seed(&r, g->seed, (uint64_t)index + 1);
    uint64_t n = t->n_elems;
    int norm = t->n_dims == 1;
    switch (t->type) {
    case GGUF_GGML_F32: {
        float *f = buf;
        if (!strcmp(t->name, "rope_freqs.weight")) {
            llama3_rope_factors(f, (int)n, g->p->rope_theta);
            break;
        }
        const int bias = strstr(t->name, ".bias") != NULL;
        for (uint64_t i = 0; i < n; i++)
            f[i] = norm && !bias ? rng_range(&r, 0.95f, 1.05f) : rng_range(&r, -0.035f, 0.035f);
        break;
    }
    case GGUF_GGML_F16: {
        uint16_t *h = buf;
        for (uint64_t i = 0; i < n; i++) h[i] = core_f32_to_f16(rng_range(&r, -0.035f, 0.035f));
        break;
    }
    case GGUF_GGML_Q8_0: {
        /* w = d * q, |q| <= 127: d ~ 0.0003 gives |w| <= ~0.04 */
        kern_block_q8_0 *b = buf;
        rng_bytes(&r, buf, nbytes);
        for (uint64_t i = 0; i < n / QK8_0; i++) b[i].d = f16_range(&r, 0.0002f, 0.0004f);
        break;
    }
    case GGUF_GGML_Q4_K: {
        /* w = d*sc*q - dmin*m with sc, m <= 63 and q <= 15 */
        kern_block_q4_K *b = buf;
        rng_bytes(&r, buf, nbytes);
        for (uint64_t i = 0; i < n / QK_K; i++) {
            b[i].d = f16_range(&r, 0.0001f, 0.0003f);
            b[i].dmin = f16_range(&r, 0.0001f, 0.0003f);
        }
        break;
    }
    case GGUF_GGML_Q6_K: {
        /* w = d*sc*q with q in [-32, 31]; scales kept in [4, 63] */
        kern_block_q6_K *b = buf;
        rng_bytes(&r, buf, nbytes);
        for (uint64_t i = 0; i < n / QK_K; i++) {
            for (int k = 0; k < QK_K / 16; k++) b[i].scales[k] = (int8_t)(4 + (uint8_t)b[i].scales[k] % 60);
            b[i].d = f16_range(&r, 0.0001f, 0.0003f);
        }
        break;
    }
    default:
        return core_errf(err, CORE_EUNSUP, "gen-model: no generator for tensor type %u", t->type);
    }
    return 0;
}

/* ---- metadata ------------------------------------------------------------- */

static int add_metadata(gguf_writer *w, const gen *g, const gguf *donor) {
    const preset *p = g->p;
    const char *a = p->arch;
    static const struct { const char *arch, *title, *base; } titles[] = {
        {"smollm3", "SmolLM3", "SmolLM3-random"}, {"llama", "Llama 3.2", "Llama-3.2-random"},
        {"qwen2", "Qwen2.5", "Qwen2.5-random"},   {"qwen3", "Qwen3", "Qwen3-random"}};
    const char *title = a, *base = a;
    for (size_t i = 0; i < CORE_ARRAY_LEN(titles); i++)
        if (!strcmp(a, titles[i].arch)) title = titles[i].title, base = titles[i].base;
    char name[96], key[96];
    snprintf(name, sizeof name, "%s random weights (%s, %s)", title, p->name, quants[g->q].name);
    int quantized = g->q == Q_Q8_0 || g->q == Q_Q4_K_M, rc = 0;
    rc |= gguf_writer_set_str(w, "general.architecture", a, strlen(a));
    rc |= gguf_writer_set_str(w, "general.type", "model", 5);
    rc |= gguf_writer_set_str(w, "general.name", name, strlen(name));
    rc |= gguf_writer_set_str(w, "general.basename", base, strlen(base));
    rc |= gguf_writer_set_str(w, "general.size_label", p->size_label, strlen(p->size_label));
    rc |= gguf_writer_set_str(w, "general.license", "apache-2.0", 10);
    if (!quantized) rc |= gguf_writer_set_u32(w, "general.file_type", quants[g->q].file_type);
#define U(suffix, v) (snprintf(key, sizeof key, "%s." suffix, a), gguf_writer_set_u32(w, key, (v)))
#define F(suffix, v) (snprintf(key, sizeof key, "%s." suffix, a), gguf_writer_set_f32(w, key, (v)))
    rc |= U("block_count", p->layers);
    rc |= U("context_length", p->ctx);
    rc |= U("embedding_length", p->embd);
    rc |= U("feed_forward_length", p->ffn);
    rc |= U("attention.head_count", p->heads);
    rc |= U("attention.head_count_kv", p->kv_heads);
    rc |= F("rope.freq_base", p->rope_theta);
    rc |= F("attention.layer_norm_rms_epsilon", p->eps);
    if (is_arch(p, "qwen3") || is_arch(p, "llama")) {
        rc |= U("attention.key_length", p->head_dim);
        rc |= U("attention.value_length", p->head_dim);
    }
    rc |= U("vocab_size", g->vocab);
    rc |= U("rope.dimension_count", p->head_dim);
#undef U
#undef F
    for (int64_t i = 0; i < gguf_n_kv(donor); i++)
        if (!strncmp(gguf_kv_key(donor, i), "tokenizer.", 10)) rc |= gguf_writer_copy_kv(w, donor, i);
    if (quantized) {
        rc |= gguf_writer_set_u32(w, "general.quantization_version", 2);
        rc |= gguf_writer_set_u32(w, "general.file_type", quants[g->q].file_type);
    }
    return rc ? CORE_EINVAL : 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: smolbot gen-model [--arch A] --preset P [--quant f32|f16|q8_0|q4_k_m] [--seed N]\n"
               "                         --vocab-from DONOR.gguf -o OUT.gguf\n\n"
               "Write a GGUF shaped like a real model with deterministic random weights (for\n"
               "tests and benchmarks). The tokenizer is copied from DONOR.gguf (use the\n"
               "family's own: Llama 3's for llama, Qwen's for qwen2/qwen3).\n\n"
               "  --arch A         smollm3 (default), llama, qwen2 or qwen3\n"
               "  --preset P       smollm3: tiny (256 wide, 4 layers), 3b\n"
               "                   llama: tiny, 1b, 3b (Llama 3.2)   qwen2: tiny, 1.5b (Qwen2.5)\n"
               "                   qwen3: tiny, 0.6b, 4b\n"
               "  --quant Q        f32, f16, q8_0 or q4_k_m (default q4_k_m)\n"
               "  --seed N         weights seed (default 1)\n"
               "  --vocab-from F   GGUF file whose tokenizer.* keys are copied\n"
               "  -o, --output F   output path (written to F.tmp.* then renamed)\n");
}

int cmd_gen_model(int argc, char **argv) {
    if (app_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *pname = NULL, *qname = "q4_k_m", *donor_path = NULL, *out = NULL, *arch = "smollm3";
    long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--preset") ? &pname : !strcmp(a, "--quant") ? &qname
                           : !strcmp(a, "--arch") ? &arch
                           : !strcmp(a, "--vocab-from") ? &donor_path
                           : (!strcmp(a, "-o") || !strcmp(a, "--output")) ? &out : NULL;
        if (dst) {
            if (!(*dst = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--seed")) {
            const char *v = app_optarg(argc, argv, &i);
            if (!v || app_parse_int("--seed", v, &seed)) return 2;
        } else {
            fprintf(stderr, "smolbot gen-model: unknown argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    gen g = {NULL, Q_Q4_K_M, (uint64_t)seed, 0};
    for (size_t i = 0; pname && i < CORE_ARRAY_LEN(presets); i++)
        if (!strcmp(pname, presets[i].name) && !strcmp(arch, presets[i].arch)) g.p = &presets[i];
    int qi = -1;
    for (size_t i = 0; i < CORE_ARRAY_LEN(quants); i++)
        if (!strcmp(qname, quants[i].name)) qi = (int)i;
    if (!g.p || qi < 0 || !donor_path || !out) {
        if (!g.p) fprintf(stderr, "smolbot gen-model: no preset '%s' for --arch %s (see --help)\n", pname ? pname : "",
                          arch);
        if (qi < 0) fprintf(stderr, "smolbot gen-model: --quant must be f32, f16, q8_0 or q4_k_m\n");
        if (!donor_path) fprintf(stderr, "smolbot gen-model: --vocab-from DONOR.gguf is required\n");
        if (!out) fprintf(stderr, "smolbot gen-model: -o OUT.gguf is required\n");
        usage(stderr);
        return 2;
    }
    g.q = (quant)qi;

    core_err err = {0};
    gguf *donor = NULL;
    gguf_writer *w = NULL;
    int status = 1;
    double t0 = core_now_s();
    if (gguf_open(&donor, donor_path, &err)) {
        fprintf(stderr, "smolbot gen-model: %s\n", err.msg);
        return 1;
    }
    uint64_t ntok = 0;
    if (gguf_get_arr(donor, "tokenizer.ggml.tokens", NULL, &ntok, &err)) {
        fprintf(stderr, "smolbot gen-model: donor has no tokenizer: %s\n", err.msg);
        goto done;
    }
    g.vocab = g.p->vocab ? g.p->vocab : (uint32_t)ntok;
    if (ntok != g.vocab || ntok < 256 || ntok > (1u << 24)) {
        fprintf(stderr, "smolbot gen-model: donor has %llu tokens, preset %s expects %u\n", (unsigned long long)ntok,
                g.p->name, g.vocab);
        goto done;
    }
    if (!(w = gguf_writer_new()) || add_metadata(w, &g, donor) || add_tensors(w, &g)) {
        fprintf(stderr, "smolbot gen-model: building the header failed\n");
        goto done;
    }
    if (gguf_writer_write(w, out, fill, &g, &err)) {
        fprintf(stderr, "smolbot gen-model: %s\n", err.msg);
        goto done;
    }
    fprintf(stderr, "smolbot gen-model: wrote %s (%s, %s, seed %ld) in %.2f s\n", out, g.p->name, quants[g.q].name,
            seed, core_now_s() - t0);
    status = 0;
done:
    gguf_writer_free(w);
    gguf_close(donor);
    return status;
}
