/* t_gpu.h -- what the GPU kernel tests share: random inputs and the
 * double-precision references the kernels are held to. Used by
 * test_gpu.c (the kernels on a GPU) and test_gpu_emu.cpp (the same
 * kernels' code on the CPU emulation), so it compiles as C and as C++.
 * Include t.h first: tg_check_attention records with its CHECK macros.
 */
#ifndef T_GPU_H
#define T_GPU_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "core/core.h"
#include "kern/kern.h"
#ifdef __cplusplus
}
#endif

static uint64_t tg_rng = 88172645463325252ull;
static uint32_t rnd(void) {
    tg_rng ^= tg_rng << 13, tg_rng ^= tg_rng >> 7, tg_rng ^= tg_rng << 17;
    return (uint32_t)(tg_rng >> 16);
}
static float frand(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xffffff) / 16777216.0f; }

/* n_out random rows of n_in values of `type`: random quants, sane scales. */
static void *random_rows(int type, int64_t n_in, int64_t n_out) {
    const kern_traits *tr = kern_ref_traits(type);
    size_t rb = kern_row_size(type, n_in), bytes = rb * (size_t)n_out;
    uint8_t *p = (uint8_t *)malloc(bytes);
    for (size_t i = 0; i < bytes; i++) p[i] = (uint8_t)rnd();
    int64_t nb = n_in / tr->blck * n_out;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *blk = p + (size_t)b * tr->bytes;
        kern_f16 h;
        switch (type) {
        case KERN_F32: ((float *)p)[b] = frand(-1, 1); break;
        case KERN_F16: ((kern_f16 *)p)[b] = core_f32_to_f16(frand(-1, 1)); break;
        case KERN_BF16: ((uint16_t *)p)[b] = core_f32_to_bf16(frand(-1, 1)); break;
        case KERN_Q8_0: case KERN_Q4_0:
            h = core_f32_to_f16(frand(0.005f, 0.03f)); memcpy(blk, &h, 2); break;
        case KERN_Q4_K: case KERN_Q5_K:
            h = core_f32_to_f16(frand(0.001f, 0.01f)); memcpy(blk, &h, 2);
            h = core_f32_to_f16(frand(0.0f, 0.01f)); memcpy(blk + 2, &h, 2); break;
        case KERN_Q6_K:
            h = core_f32_to_f16(frand(0.0005f, 0.003f)); memcpy(blk + 208, &h, 2); break;
        }
    }
    return p;
}

/* Rows of x replaced by their Q8_K round trip: what K-quant products on
 * the GPU multiply (the activations are quantized first, as on the CPU). */
static void tg_q8k_round_trip(float *x, int n_tok, int64_t n_in) {
    void *q8 = malloc((size_t)(n_in / 256) * sizeof(kern_block_q8_K));
    for (int t = 0; t < n_tok; t++) {
        kern_ref_traits(KERN_Q8_K)->from_float(x + t * n_in, q8, n_in);
        kern_ref_traits(KERN_Q8_K)->dequant_row(q8, x + t * n_in, n_in);
    }
    free(q8);
}

/* Largest error of y = W x (rows of n_in values of `type`), relative to
 * sum |w x| of its dot product, against the reference dequantization in
 * double. */
static double tg_matmul_err(int type, const void *w, int64_t n_out, int64_t n_in, const float *x, int n_tok,
                            const float *y) {
    double worst = 0;
    size_t rb = kern_row_size(type, n_in);
    float *wf = (float *)malloc((size_t)n_in * sizeof *wf);
    for (int64_t o = 0; o < n_out; o++) {
        kern_ref_traits(type)->dequant_row((const char *)w + o * rb, wf, n_in);
        for (int t = 0; t < n_tok; t++) {
            double s = 0, a = 0;
            for (int64_t i = 0; i < n_in; i++) {
                s += (double)wf[i] * x[t * n_in + i];
                a += fabs((double)wf[i] * x[t * n_in + i]);
            }
            double e = fabs(s - y[t * n_out + o]) / (a + 1e-6);
            if (e > worst) worst = e;
        }
    }
    free(wf);
    return worst;
}

/* Largest |difference| of out from causal softmax attention in double:
 * q [n_tok][n_head*hd] at positions pos0.., k and v f16 [pos0+n_tok][n_kv*hd]. */
static double tg_attention_err(const float *q, const kern_f16 *k, const kern_f16 *v, int n_head, int n_kv, int hd,
                               int n_tok, int pos0, const float *out) {
    const int qdim = n_head * hd, kvdim = n_kv * hd, n_pos = pos0 + n_tok, group = n_head / n_kv;
    double md = 0, *s = (double *)malloc((size_t)n_pos * sizeof *s);
    for (int t = 0; t < n_tok; t++)
        for (int h = 0; h < n_head; h++) {
            const int kvh = h / group, pos = pos0 + t;
            double mx = -1e300, sum = 0;
            for (int p = 0; p <= pos; p++) {
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)q[t * qdim + h * hd + i] * core_f16_to_f32(k[p * kvdim + kvh * hd + i]);
                s[p] = d / sqrt((double)hd);
                if (s[p] > mx) mx = s[p];
            }
            for (int p = 0; p <= pos; p++) sum += (s[p] = exp(s[p] - mx));
            for (int i = 0; i < hd; i++) {
                double o = 0;
                for (int p = 0; p <= pos; p++) o += s[p] * core_f16_to_f32(v[p * kvdim + kvh * hd + i]);
                md = fmax(md, fabs(o / sum - out[t * qdim + h * hd + i]));
            }
        }
    free(s);
    return md;
}

/* Q8_K blocks of x (n values) that differ from kern_ref_quantize_q8_K's:
 * values q [n], scales d [n / 256]. */
static int tg_q8k_mismatches(const float *x, int n, const int8_t *q, const float *d) {
    const int nb = n / 256;
    kern_block_q8_K *ref = (kern_block_q8_K *)malloc((size_t)nb * sizeof *ref);
    kern_ref_traits(KERN_Q8_K)->from_float(x, ref, n);
    int bad = 0;
    for (int b = 0; b < nb; b++) bad += memcmp(&ref[b].d, &d[b], 4) != 0 || memcmp(ref[b].qs, q + b * 256, 256) != 0;
    free(ref);
    return bad;
}

/* How a test runs attention (gpu_test_attention's contract): out for
 * every token; for one token with oq set, also the Q8_K of out.
 * Returns 0, or -1 with msg. */
typedef int (*tg_attention_fn)(const float *q, const kern_f16 *k, const kern_f16 *v, int n_head, int n_kv, int hd,
                               int n_tok, int pos0, float *out, int8_t *oq, float *od, char *msg, size_t msg_len);

/* Random q, K, V; run (k_fa for several tokens, k_attn_dmma for one); out
 * against tg_attention_err, and the fused Q8_K of the decode kernel bit
 * for bit against kern_ref_quantize_q8_K. */
static void tg_check_attention(tg_attention_fn run, int n_head, int n_kv, int hd, int n_tok, int pos0) {
    const int qdim = n_head * hd, kvdim = n_kv * hd, n_pos = pos0 + n_tok;
    const char *name = n_tok > 1 ? "k_fa" : "k_attn_dmma";
    float *q = (float *)malloc((size_t)n_tok * qdim * 4), *out = (float *)malloc((size_t)n_tok * qdim * 4);
    kern_f16 *k = (kern_f16 *)malloc((size_t)n_pos * kvdim * 2), *v = (kern_f16 *)malloc((size_t)n_pos * kvdim * 2);
    const int want_q8 = n_tok == 1 && qdim % 256 == 0;
    int8_t *oq = (int8_t *)malloc((size_t)qdim);
    float *od = (float *)malloc((size_t)(qdim / 256 + 1) * 4);
    for (int i = 0; i < n_tok * qdim; i++) q[i] = frand(-1, 1);
    for (int i = 0; i < n_pos * kvdim; i++) k[i] = core_f32_to_f16(frand(-1, 1)), v[i] = core_f32_to_f16(frand(-1, 1));
    char msg[256] = "";
    int rc = run(q, k, v, n_head, n_kv, hd, n_tok, pos0, out, want_q8 ? oq : NULL, od, msg, sizeof msg);
    CHECK_MSG(rc == 0, "%s", msg);
    const double md = rc ? 0 : tg_attention_err(q, k, v, n_head, n_kv, hd, n_tok, pos0, out);
    /* both kernels multiply q and the softmax weights as two f16 parts each */
    CHECK_MSG(md < 1e-4, "attention heads %d/%d hd %d, %d tokens at %d (%s): max diff %.3g", n_head, n_kv, hd, n_tok,
              pos0, name, md);
    if (want_q8 && !rc) {
        const int bad = tg_q8k_mismatches(out, qdim, oq, od);
        CHECK_MSG(bad == 0, "%s at %d: %d of %d Q8_K blocks differ from kern_ref_quantize_q8_K", name, pos0, bad, qdim / 256);
    }
    free(q), free(out), free(k), free(v), free(oq), free(od);
}

/* k_attn_dmma's cases, for test_gpu (the GPU) and test_gpu_emu (the
 * emulation): the whole context in one split (up to 128 positions, some
 * warps idle), tiles cut by the end, many splits and their merge; groups of
 * 1 (output quantized by the caller), 2 and 4; head_dim 64 and 128.
 * longer: the depths past 8192 too. */
static void tg_dmma_cases(tg_attention_fn run, int longer) {
    const int dpos[] = {0, 1, 31, 32, 95, 127, 128, 129, 300, 1000, 4095, 4100, 8191, 9000, 20000};
    for (size_t i = 0; i < sizeof dpos / sizeof dpos[0]; i++)
        if (longer || dpos[i] <= 8191) tg_check_attention(run, 16, 4, 128, 1, dpos[i]);
    tg_check_attention(run, 4, 1, 64, 1, 700);
    tg_check_attention(run, 16, 16, 64, 1, 333);
    tg_check_attention(run, 16, 8, 128, 1, longer ? 3000 : 2000);
    tg_check_attention(run, 8, 4, 128, 1, 77);
    tg_check_attention(run, 8, 2, 64, 1, 5000);
}

/* k_fa's cases: groups 1, 2, 4; head_dim 64 and 128; tiles cut by the
 * tokens and by the context; a prompt after a cached prefix. */
static void tg_fa_cases(tg_attention_fn run) {
    tg_check_attention(run, 8, 2, 64, 20, 0);
    tg_check_attention(run, 16, 4, 128, 40, 100);
    tg_check_attention(run, 4, 4, 64, 70, 5);
    tg_check_attention(run, 4, 1, 64, 33, 0);
    tg_check_attention(run, 16, 8, 128, 40, 200);
    tg_check_attention(run, 16, 4, 128, 2, 70);
    tg_check_attention(run, 4, 1, 128, 300, 0);
}

#endif
