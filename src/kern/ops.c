/* ops.c -- the small f32 ops of a transformer layer, dispatched to the
 * SIMD twin chosen by kern_init (scalar reference in ref.c, twins in
 * avx2.c / avx512.c). RoPE stays scalar: it touches head_dim values per
 * head once per token and its cost is the sin/cos, computed once per call.
 * Attention: kern_attn dispatches; kern_attn_merge (the split-K merge, a
 * few hundred floats per call) is plain C.
 */
#include <math.h>

#include "kern/kern_impl.h"

static const kern_impl *ops(void) {
    (void)kern_get_traits(KERN_F32); /* initialise to scalar if kern_init was not called */
    return &kern_cur;
}

void kern_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    ops()->rmsnorm(out, x, w, n, eps);
}

void kern_silu_mul(float *out, const float *g, const float *u, int64_t n) { ops()->silu_mul(out, g, u, n); }

void kern_softmax(float *x, int64_t n) { ops()->softmax(x, n); }

void kern_f16_to_f32(const kern_f16 *src, float *dst, int64_t n) { ops()->f16_to_f32(src, dst, n); }

void kern_f32_to_f16(const float *src, kern_f16 *dst, int64_t n) { ops()->f32_to_f16(src, dst, n); }

void kern_attn(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
               float scale, float *m, float *l, float *acc) {
    ops()->attn(kv_type, q, ng, hd, k, v, stride, n, scale, m, l, acc);
}

void kern_attn_ref(int kv_type, const float *q, int ng, int hd, const void *k, const void *v, size_t stride, int n,
                   float scale, float *m, float *l, float *acc) {
    kern_ref_attn(kv_type, q, ng, hd, k, v, stride, n, scale, m, l, acc);
}

/* Both states are rescaled to the larger max; a state that saw no
 * positions (m = -inf, l = 0) contributes nothing. */
void kern_attn_merge(int ng, int hd, float *m, float *l, float *acc, const float *m2, const float *l2,
                     const float *acc2) {
    for (int g = 0; g < ng; g++) {
        if (l2[g] == 0) continue;
        const float mm = fmaxf(m[g], m2[g]);
        const float r1 = l[g] == 0 ? 0 : expf(m[g] - mm), r2 = expf(m2[g] - mm);
        float *a = acc + (size_t)g * hd;
        const float *b = acc2 + (size_t)g * hd;
        for (int i = 0; i < hd; i++) a[i] = a[i] * r1 + b[i] * r2;
        l[g] = l[g] * r1 + l2[g] * r2;
        m[g] = mm;
    }
}

/* As ggml's rope cache: theta starts at pos and is multiplied by
 * theta_scale = base^(-2/head_dim) for each successive pair, in float. */
void kern_rope(float *x, int64_t n_heads, int64_t head_dim, int64_t pos, float theta) {
    float cs[1024];
    assert(head_dim % 2 == 0 && head_dim <= 1024);
    const float theta_scale = powf(theta, -2.0f / (float)head_dim);
    float t = (float)pos;
    for (int64_t i = 0; i < head_dim; i += 2) {
        cs[i] = cosf(t);
        cs[i + 1] = sinf(t);
        t *= theta_scale;
    }
    for (int64_t h = 0; h < n_heads; h++) {
        float *v = x + h * head_dim;
        for (int64_t i = 0; i < head_dim; i += 2) {
            const float x0 = v[i], x1 = v[i + 1];
            v[i] = x0 * cs[i] - x1 * cs[i + 1];
            v[i + 1] = x0 * cs[i + 1] + x1 * cs[i];
        }
    }
}
