/* ops.cuh -- the small kernels of a forward pass: embedding lookup,
 * RMSNorm (with the Q8_K of its output for the next product), RoPE and the
 * f16 cache store, SwiGLU (with its Q8_K), top-k over the logits, and the
 * synthetic cache fill the benchmarks use. Each mirrors the CPU's
 * arithmetic (src/kern/ref.c) operation for operation where the CPU's
 * result is the reference.
 */
#ifndef OPS_CUH
#define OPS_CUH

#include "model/cuda/quant.cuh"

#define TOPK_MAX 64
#define TOPK_BLOCKS 64

/* One row of RMSNorm by one block: o = x / sqrt(mean(x^2) + eps) * w
 * and (xq != NULL, n % 256 == 0) the Q8_K of the same values (o must not
 * alias x: the Q8_K reads x again). x is read around L1 (__ldcg): the
 * fused callers read values other blocks have just written. */
static __device__ void rms_row(const float *x, const float *w, float *o, int n, float eps, int8_t *xq, float *xd) {
    __shared__ float part[32];
    if (n == 8 * (int)blockDim.x) { /* one value octet per thread, kept in registers: one trip to memory */
        const int i0 = threadIdx.x * 8, lane = threadIdx.x & 31;
        const float4 a = __ldcg((const float4 *)(x + i0)), b = __ldcg((const float4 *)(x + i0 + 4));
        const float4 wa = *(const float4 *)(w + i0), wb = *(const float4 *)(w + i0 + 4);
        float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        const float wv[8] = {wa.x, wa.y, wa.z, wa.w, wb.x, wb.y, wb.z, wb.w};
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) s += v[i] * v[i];
        s = warp_sum(s);
        if (lane == 0) part[threadIdx.x >> 5] = s;
        __syncthreads();
        s = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.0f;
        s = warp_sum(s);
        const float scale = 1.0f / sqrtf(s / (float)n + eps);
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = __fmul_rn(__fmul_rn(v[i], scale), wv[i]);
        if (o) {
            *(float4 *)(o + i0) = make_float4(v[0], v[1], v[2], v[3]);
            *(float4 *)(o + i0 + 4) = make_float4(v[4], v[5], v[6], v[7]);
        }
        /* warp w's 256 values are super-block w */
        if (xq) quant_vals(v, xq + (threadIdx.x >> 5) * 256, xd + (threadIdx.x >> 5), lane);
        return;
    }
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = __ldcg(x + i);
        s += v * v;
    }
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        s = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0f;
        s = warp_sum(s);
        if (threadIdx.x == 0) part[0] = s;
    }
    __syncthreads();
    const float scale = 1.0f / sqrtf(part[0] / (float)n + eps);
    if (o)
        for (int i = threadIdx.x; i < n; i += blockDim.x) o[i] = __fmul_rn(__fmul_rn(__ldcg(x + i), scale), w[i]);
    if (!xq) return;
    /* each warp's super-blocks from x, the same products as o's: no trip
     * through o and no barrier */
    const int lane = threadIdx.x & 31;
    for (int sb = threadIdx.x >> 5; sb < n >> 8; sb += blockDim.x >> 5) {
        const int i0 = sb * 256 + lane * 8;
        float v[8];
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = __fmul_rn(__fmul_rn(__ldcg(x + i0 + i), scale), w[i0 + i]);
        quant_vals(v, xq + sb * 256, xd + sb, lane);
    }
}

/* Rotate the pair v[0], v[1] -- pair i of a head -- to position pos: the
 * angle as ggml's cache computes it (pos times theta_scale^i by repeated
 * multiplication), the rotation without FMA contraction. */
__device__ __forceinline__ void rope_pair(float *v, int i, int pos, float theta_scale) {
    float t = (float)pos;
    for (int j = 0; j < i; j++) t *= theta_scale;
    const float c = cosf(t), s = sinf(t);
    const float x0 = v[0], x1 = v[1];
    v[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    v[1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
}

/* x[t] = dequantized row tok[t] of the embedding; one block per token. */
template <int T> __global__ void k_embed(const uint8_t *W, size_t rb, int n, const int *tok, float *x) {
    gdc_wait();
    const uint8_t *row = W + (size_t)tok[blockIdx.x] * rb;
    for (int k = threadIdx.x * 8; k < n; k += blockDim.x * 8) deq8<T>(row, k, x + (size_t)blockIdx.x * n + k);
}

/* out[row] = x[row] / sqrt(mean(x[row]^2) + eps) * w (and its Q8_K); one
 * block per row (rms_row). */
static __global__ void k_rmsnorm(const float *x, const float *w, float *out, int n, float eps, int8_t *xq, float *xd) {
    gdc_wait();
    const int nsb = n >> 8;
    rms_row(x + (size_t)blockIdx.x * n, w, out + (size_t)blockIdx.x * n, n, eps, xq ? xq + (size_t)blockIdx.x * n : NULL,
            xd + (size_t)blockIdx.x * nsb);
}

static __global__ void k_silu_mul(float *g, const float *u, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* k_silu_mul and then k_quant in one pass: row blockIdx.y
 * of n values (n % 256 == 0), a warp per super-block, each lane its 8
 * values; g gets silu(g) * u, xq/xd its Q8_K in k_quant's layout -- the
 * same values to the last bit, without reading g back */
static __global__ void k_silu_quant(float *g, const float *u, int n, int8_t *xq, float *xd) {
    const int sb = blockIdx.x * 8 + (threadIdx.x >> 5), nsb = n >> 8, r = blockIdx.y, lane = threadIdx.x & 31;
    if (sb >= nsb) return;
    float4 *gp = (float4 *)(g + (size_t)r * n + sb * 256 + lane * 8);
    const float4 *up = (const float4 *)(u + (size_t)r * n + sb * 256 + lane * 8);
    const float4 g0 = gp[0], g1 = gp[1], u0 = up[0], u1 = up[1];
    const float gv[8] = {g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w}, uv[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
    float v[8];
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = gv[i] / (1.0f + expf(-gv[i])) * uv[i];
    gp[0] = make_float4(v[0], v[1], v[2], v[3]), gp[1] = make_float4(v[4], v[5], v[6], v[7]);
    quant_vals(v, xq + (size_t)r * n + sb * 256, xd + (size_t)r * nsb + sb, lane);
}

/* Token blockIdx.x at position *d_pos + blockIdx.x: rotate q and k (unless
 * rope == 0) and store k, v into the layer's cache rows as f16. */
static __global__ void k_rope_store(float *q, float *k, const float *v, __half *kc, __half *vc, const int *d_pos, int n_head,
                             int n_kv, int hd, float theta_scale, int rope) {
    const int t = blockIdx.x, pos = *d_pos + t, half = hd / 2;
    const int qdim = n_head * hd, kvdim = n_kv * hd;
    if (rope) {
        for (int p = threadIdx.x; p < (n_head + n_kv) * half; p += blockDim.x) {
            const int h = p / half, i = p % half;
            float *base = h < n_head ? q + (size_t)t * qdim + h * hd : k + (size_t)t * kvdim + (h - n_head) * hd;
            rope_pair(base + 2 * i, i, pos, theta_scale);
        }
        __syncthreads();
    }
    for (int e = threadIdx.x; e < kvdim; e += blockDim.x) {
        kc[(size_t)pos * kvdim + e] = __float2half_rn(k[(size_t)t * kvdim + e]);
        vc[(size_t)pos * kvdim + e] = __float2half_rn(v[(size_t)t * kvdim + e]);
    }
}

/* Stage of top-k: block b keeps the k best of vals[b*chunk .. +chunk)
 * (ids[] or the index itself), writing out_v/out_i[b*k + r] in descending
 * order; ties go to the lower id; used entries are marked id -1. */
static __global__ void k_topk(const float *vals, const int *ids, int n, int chunk, int k, float *out_v, int *out_i) {
    DYN_SMEM(float, tsm);
    float *sv = tsm;
    int *si = (int *)(tsm + chunk);
    __shared__ float rv[32];
    __shared__ int ri[32], rl[32];
    const int base = blockIdx.x * chunk, cnt = max(0, min(chunk, n - base));
    for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
        sv[i] = vals[base + i];
        si[i] = ids ? ids[base + i] : base + i;
    }
    __syncthreads();
    for (int r = 0; r < k; r++) {
        float bv = -INFINITY;
        int bi = -1, bl = -1;
        for (int i = threadIdx.x; i < cnt; i += blockDim.x) {
            const int id = si[i];
            if (id < 0) continue;
            const float v = sv[i];
            if (bi < 0 || v > bv || (v == bv && id < bi)) bv = v, bi = id, bl = i;
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o), ol = __shfl_xor_sync(0xffffffffu, bl, o);
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi, bl = ol;
        }
        if ((threadIdx.x & 31) == 0) rv[threadIdx.x >> 5] = bv, ri[threadIdx.x >> 5] = bi, rl[threadIdx.x >> 5] = bl;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < (int)blockDim.x / 32; w++)
                if (ri[w] >= 0 && (ri[0] < 0 || rv[w] > rv[0] || (rv[w] == rv[0] && ri[w] < ri[0])))
                    rv[0] = rv[w], ri[0] = ri[w], rl[0] = rl[w];
            out_v[blockIdx.x * k + r] = rv[0];
            out_i[blockIdx.x * k + r] = ri[0];
            if (rl[0] >= 0) si[rl[0]] = -1;
        }
        __syncthreads();
    }
}

/* Positions [from, to) of every layer's cache: deterministic values in
 * +-0.1 (benchmarks at depth: attention costs the same whatever they are) */
static __global__ void k_fill(__half *k, __half *v, int n_layer, int n_ctx, int kvdim, int from, int to) {
    const size_t per = (size_t)(to - from) * kvdim, total = per * n_layer;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        const size_t il = e / per, r = e % per;
        const size_t idx = (il * n_ctx + from) * kvdim + r;
        uint32_t h = (uint32_t)(e * 2654435761u) ^ 0x9e3779b9u;
        h ^= h >> 15, h *= 0x2c1b3c6du, h ^= h >> 12;
        k[idx] = __float2half_rn(((float)(h & 0xffff) / 65536.0f - 0.5f) * 0.2f);
        v[idx] = __float2half_rn(((float)(h >> 16) / 65536.0f - 0.5f) * 0.2f);
    }
}

#endif
