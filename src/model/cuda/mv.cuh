/* mv.cuh -- k_mv: products with f32 activations, for the weights that are
 * not quantized (f32/f16/bf16) and for quantized ones on few tokens where
 * no tensor-core path applies: a warp per row, up to MV_NT tokens per pass
 * over it.
 */
#ifndef MV_CUH
#define MV_CUH

#include "model/cuda/quant.cuh"

#define MV_ROWS 8 /* rows (warps) per k_mv block */
#define MV_NT 8   /* tokens per k_mv pass */

/* y[t*ldy + row] (+)= dot(W row, x[t*ldx ..]) for t < nt <= MV_NT. */
template <int T>
__global__ void __launch_bounds__(MV_ROWS * 32)
    k_mv(const uint8_t *W, size_t rb, int n_in, int n_out, const float *x, int ldx, int nt, float *y, int ldy,
         int acc) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * MV_ROWS + warp;
    if (row >= n_out) return;
    const uint8_t *wr = W + (size_t)row * rb;
    float s[MV_NT];
#pragma unroll
    for (int t = 0; t < MV_NT; t++) s[t] = 0.0f;
    for (int k = lane * 8; k < n_in; k += 256) {
        float w[8];
        deq8<T>(wr, k, w);
#pragma unroll
        for (int t = 0; t < MV_NT; t++) {
            if (t < nt) {
                const float4 *xp = (const float4 *)(x + (size_t)t * ldx + k);
                const float4 a = __ldg(xp), b = __ldg(xp + 1);
                s[t] += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z +
                        w[7] * b.w;
            }
        }
    }
#pragma unroll
    for (int t = 0; t < MV_NT; t++) {
        if (t < nt) {
            const float v = warp_sum(s[t]);
            if (lane == 0) {
                float *yp = y + (size_t)t * ldy + row;
                *yp = acc ? *yp + v : v;
            }
        }
    }
}

#endif
