/* cmd_gen_model.c -- `smolbot gen-model`: a SmolLM3 GGUF with random weights.
 *
 *   smolbot gen-model --preset tiny|3b [--quant f32|f16|q8_0|q4_k_m] [--seed N]
 *                     --vocab-from DONOR.gguf -o OUT.gguf
 *
 * Why: tests and benchmarks need a 3B-shaped file without downloading 1.9 GB,
 * and a tiny one whose layout is exactly that of the real files.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "kern/kern.h"

typedef struct preset {
    const char *name, *size_label;
    uint32_t embd, layers, heads, kv_heads, head_dim, ffn, ctx, vocab;
    float rope_theta, eps;
} preset;

static const preset presets[] = {
    {"tiny", "30M", 256, 4, 4, 1, 64, 768, 4096, 128256, 5e6f, 1e-6f},
    {"3b", "3B", 2048, 36, 16, 4, 128, 11008, 65536, 128256, 5e6f, 1e-6f},
};

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
static int add_layer(gguf_writer *w, const gen *g, uint32_t il, int sorted) {
    const preset *p = g->p;
    uint64_t E = p->embd, Q = (uint64_t)p->heads * p->head_dim, KV = (uint64_t)p->kv_heads * p->head_dim, F = p->ffn;
    uint32_t mt = mat_type(g->q), vt = mt;
    if (g->q == Q_Q4_K_M && q4km_wants_q6(il, p->layers)) vt = GGUF_GGML_Q6_K;
    struct {
        const char *suffix;
        uint32_t type;
        uint64_t ne0, ne1;
    } t[9] = {
        {"attn_norm", GGUF_GGML_F32, E, 0}, {"attn_q", mt, E, Q},    {"attn_k", mt, E, KV},
        {"attn_v", vt, E, KV},              {"attn_output", mt, Q, E}, {"ffn_norm", GGUF_GGML_F32, E, 0},
        {"ffn_gate", mt, E, F},             {"ffn_up", mt, E, F},    {"ffn_down", vt, F, E},
    };
    static const int conv_order[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    static const int name_order[9] = {2, 0, 4, 1, 3, 8, 6, 5, 7}; /* k norm output q v down gate norm up */
    const int *ord = sorted ? name_order : conv_order;
    for (int k = 0; k < 9; k++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%u.%s.weight", il, t[ord[k]].suffix);
        int rc = add(w, name, t[ord[k]].type, t[ord[k]].ne0, t[ord[k]].ne1);
        if (rc) return rc;
    }
    return 0;
}

static int add_tensors(gguf_writer *w, const gen *g) {
    const preset *p = g->p;
    uint32_t et = g->q == Q_Q4_K_M ? GGUF_GGML_Q6_K : mat_type(g->q);
    int sorted = g->q == Q_Q8_0 || g->q == Q_Q4_K_M, rc = 0;
    if (sorted) {
        if ((rc = add(w, "output_norm.weight", GGUF_GGML_F32, p->embd, 0))) return rc;
        if ((rc = add(w, "token_embd.weight", et, p->embd, p->vocab))) return rc;
    } else if ((rc = add(w, "token_embd.weight", et, p->embd, p->vocab))) {
        return rc;
    }
    for (uint32_t il = 0; il < p->layers; il++)
        if ((rc = add_layer(w, g, il, sorted))) return rc;
    if (!sorted) rc = add(w, "output_norm.weight", GGUF_GGML_F32, p->embd, 0);
    return rc;
}

/* ---- data ------------------------------------------------------------------ */

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
        for (uint64_t i = 0; i < n; i++) f[i] = norm ? rng_range(&r, 0.95f, 1.05f) : rng_range(&r, -0.035f, 0.035f);
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
    char name[96];
    snprintf(name, sizeof name, "SmolLM3 random weights (%s, %s)", p->name, quants[g->q].name);
    int quantized = g->q == Q_Q8_0 || g->q == Q_Q4_K_M, rc = 0;
    rc |= gguf_writer_set_str(w, "general.architecture", "smollm3", 7);
    rc |= gguf_writer_set_str(w, "general.type", "model", 5);
    rc |= gguf_writer_set_str(w, "general.name", name, strlen(name));
    rc |= gguf_writer_set_str(w, "general.basename", "SmolLM3-random", 14);
    rc |= gguf_writer_set_str(w, "general.size_label", p->size_label, strlen(p->size_label));
    rc |= gguf_writer_set_str(w, "general.license", "apache-2.0", 10);
    if (!quantized) rc |= gguf_writer_set_u32(w, "general.file_type", quants[g->q].file_type);
    rc |= gguf_writer_set_u32(w, "smollm3.block_count", p->layers);
    rc |= gguf_writer_set_u32(w, "smollm3.context_length", p->ctx);
    rc |= gguf_writer_set_u32(w, "smollm3.embedding_length", p->embd);
    rc |= gguf_writer_set_u32(w, "smollm3.feed_forward_length", p->ffn);
    rc |= gguf_writer_set_u32(w, "smollm3.attention.head_count", p->heads);
    rc |= gguf_writer_set_u32(w, "smollm3.attention.head_count_kv", p->kv_heads);
    rc |= gguf_writer_set_f32(w, "smollm3.rope.freq_base", p->rope_theta);
    rc |= gguf_writer_set_f32(w, "smollm3.attention.layer_norm_rms_epsilon", p->eps);
    rc |= gguf_writer_set_u32(w, "smollm3.vocab_size", p->vocab);
    rc |= gguf_writer_set_u32(w, "smollm3.rope.dimension_count", p->head_dim);
    for (int64_t i = 0; i < gguf_n_kv(donor); i++)
        if (!strncmp(gguf_kv_key(donor, i), "tokenizer.", 10)) rc |= gguf_writer_copy_kv(w, donor, i);
    if (quantized) {
        rc |= gguf_writer_set_u32(w, "general.quantization_version", 2);
        rc |= gguf_writer_set_u32(w, "general.file_type", quants[g->q].file_type);
    }
    return rc ? CORE_EINVAL : 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: smolbot gen-model --preset tiny|3b [--quant f32|f16|q8_0|q4_k_m] [--seed N]\n"
               "                         --vocab-from DONOR.gguf -o OUT.gguf\n\n"
               "Write a SmolLM3-shaped GGUF with deterministic random weights (for tests and\n"
               "benchmarks). The tokenizer is copied from DONOR.gguf.\n\n"
               "  --preset P       tiny (256 wide, 4 layers) or 3b (2048 wide, 36 layers)\n"
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
    const char *pname = NULL, *qname = "q4_k_m", *donor_path = NULL, *out = NULL;
    long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = !strcmp(a, "--preset") ? &pname : !strcmp(a, "--quant") ? &qname
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
    gen g = {NULL, Q_Q4_K_M, (uint64_t)seed};
    for (size_t i = 0; pname && i < CORE_ARRAY_LEN(presets); i++)
        if (!strcmp(pname, presets[i].name)) g.p = &presets[i];
    int qi = -1;
    for (size_t i = 0; i < CORE_ARRAY_LEN(quants); i++)
        if (!strcmp(qname, quants[i].name)) qi = (int)i;
    if (!g.p || qi < 0 || !donor_path || !out) {
        if (!g.p) fprintf(stderr, "smolbot gen-model: --preset must be tiny or 3b\n");
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
    if (ntok != g.p->vocab) {
        fprintf(stderr, "smolbot gen-model: donor has %llu tokens, preset %s expects %u\n", (unsigned long long)ntok,
                g.p->name, g.p->vocab);
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
