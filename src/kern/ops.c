/* ops.c -- the small f32 ops of a transformer layer, dispatched to the
 * SIMD twin chosen by kern_init (scalar reference in ref.c, twins in
 * avx2.c / avx512.c). RoPE stays scalar: it touches head_dim values per
 * head once per token and its cost is the sin/cos, computed once per call.
 */
#include <math.h>

#include "kern_impl.h"

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
