/* dec.cuh -- decode: one token, so every product is a pass over the
 * weights, bound by memory bandwidth and by the number of kernel
 * boundaries (each a few microseconds even inside a graph). k_dec
 * therefore does a "job": up to three matrices that read the same input
 * (Wq, Wk, Wv), and what follows them in the forward pass:
 *   MV_STORE / MV_ACC  y = W x, or y += W x (the residual add of Wo, down),
 *            then optionally the next RMSNorm by the last block to finish
 *   MV_QKV   q = Wq x rotated (RoPE, unless a NoPE layer); k = Wk x rotated
 *            and v = Wv x rounded to f16 straight into the cache row at *d_pos
 *   MV_GLU   out = silu(Wgate x) * (Wup x)
 * A block is 8 warps; a row is split over wpr warps (1..8, chosen from the
 * row length and count so that short matrices still fill the GPU) and the
 * block owns 8 / wpr rows ("virtual rows": GLU pairs gate row r with up
 * row r in one block, QKV keeps the two rows of a RoPE pair together).
 * K-quant rows are read 8 lanes per 256-value super-block, 32 values per
 * lane, as integer dot products with the Q8_K activations (kq_sb); other
 * types dequantize and multiply f32 activations (mv_part).
 */
#ifndef DEC_CUH
#define DEC_CUH

#include "model/cuda/ops.cuh"

enum { MV_STORE = 0, MV_ACC = 1, MV_QKV = 2, MV_GLU = 3 };
#define MV_SEGS 3

typedef struct mv_seg {
    const uint8_t *W;
    size_t rb;
    int type, n_out, blk0; /* blk0: first block of this segment */
    float *y;              /* MV_STORE/ACC/GLU: output rows; MV_QKV: q (seg 0), unused for k, v */
} mv_seg;

typedef struct mv_job {
    mv_seg s[MV_SEGS];
    int nseg, n_in, wpr, mode;
    const float *x;   /* the input in f32 (weights that are not K-quants) */
    const int8_t *xq; /* ... and as Q8_K (K-quant weights): values, */
    const float *xd;  /* one scale per 256 (k_quant) */
    /* MV_QKV */
    __half *kc, *vc;
    const int *d_pos;
    float theta_scale;
    int rope, hd;
    /* MV_ACC: when nw is set, the last block to finish also normalizes the
     * whole updated y (the residual) into ny and nxq/nxd for the next
     * product -- one kernel boundary less per norm */
    const float *nw;
    float eps;
    float *ny;
    int8_t *nxq;
    float *nxd;
    unsigned *counter;
    /* in the decode graph: let the next kernel start now (gdc_launch) and
     * ask L2 for this block's rows before waiting for the previous one */
    int early;
} mv_job;

/* ---- K-quant weights x Q8_K activations (decode) ----------------------
 * The activations are quantized once per product input, exactly as the CPU
 * does (k_quant mirrors kern_ref_quantize_q8_K: int8 values, one f32 scale
 * per 256), so the products see the same rounding as the reference and as
 * llama.cpp. A super-block's 256 values are read by 16 lanes, 16 values
 * each, as integer dot products of 4 (dp4a): for Q4_K/Q5_K
 *   sum = xd * (d * sum_j sc_j (q . a)_j - dmin * sum_j m_j (1 . a)_j)
 * and for Q6_K  sum = xd * d * sum_j sc_j ((q . a)_j - 32 (1 . a)_j). */

/* 16 bytes at p, a 2-byte aligned address, as four words: five aligned
 * word loads funnel-shifted by p's misalignment (no 2-byte loads; the
 * fifth is not needed when p is aligned, and stays inside the row) */
__device__ __forceinline__ void ld_16_2(const uint8_t *p, uint32_t *w) {
    const uint32_t *a = (const uint32_t *)((uintptr_t)p & ~(uintptr_t)3);
    const unsigned sh = ((unsigned)(uintptr_t)p & 3) * 8;
    const uint32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4];
    w[0] = __funnelshift_r(a0, a1, sh), w[1] = __funnelshift_r(a1, a2, sh);
    w[2] = __funnelshift_r(a2, a3, sh), w[3] = __funnelshift_r(a3, a4, sh);
}

/* lane li (0..7) of a super-block at blk, activations a[256], scale ad:
 * 32 values per lane, so the block's header (d, dmin, scales) is read and
 * decoded once per 32 values -- the decode kernel is bound by issued
 * instructions as much as by memory. */
template <int T> __device__ __forceinline__ float kq_sb(const uint8_t *blk, const int8_t *a, float ad, int li) {
    const int ones = 0x01010101;
    if (T == KERN_Q4_K || T == KERN_Q5_K) {
        const int c = li >> 1, l0 = (li & 1) * 16;
        typedef typename std::conditional<T == KERN_Q4_K, bq4_K, bq5_K>::type B;
        const B *b = (const B *)blk;
        const uint32_t dd = *(const uint32_t *)blk; /* d | dmin << 16 */
        const float d = __half2float(__ushort_as_half((unsigned short)(dd & 0xFFFF)));
        const float dmin = __half2float(__ushort_as_half((unsigned short)(dd >> 16)));
        /* this lane's sub-blocks: 2c (low nibbles) and 2c + 1 (high) */
        uint32_t sw[3];
        gq_words(b->scales, sw);
        int sc[2], m[2];
        gq_sm2(sw[0], sw[1], sw[2], c, sc, m);
        const uint4 u = *(const uint4 *)(b->qs + 32 * c + l0);
        const uint32_t uw[4] = {u.x, u.y, u.z, u.w};
        uint32_t hw[4] = {0, 0, 0, 0};
        if (T == KERN_Q5_K) {
            const uint4 h = *(const uint4 *)(((const bq5_K *)blk)->qh + l0);
            hw[0] = h.x, hw[1] = h.y, hw[2] = h.z, hw[3] = h.w;
        }
        const int4 al = *(const int4 *)(a + 64 * c + l0), ah = *(const int4 *)(a + 64 * c + 32 + l0);
        const int alw[4] = {al.x, al.y, al.z, al.w}, ahw[4] = {ah.x, ah.y, ah.z, ah.w};
        int sl = 0, sh = 0, ml = 0, mh = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            uint32_t lo = uw[i] & 0x0F0F0F0Fu, hi = (uw[i] >> 4) & 0x0F0F0F0Fu;
            if (T == KERN_Q5_K) {
                lo |= ((hw[i] >> (2 * c)) & 0x01010101u) << 4;
                hi |= ((hw[i] >> (2 * c + 1)) & 0x01010101u) << 4;
            }
            sl = __dp4a((int)lo, alw[i], sl), sh = __dp4a((int)hi, ahw[i], sh);
            ml = __dp4a(ones, alw[i], ml), mh = __dp4a(ones, ahw[i], mh);
        }
        return ad * (d * (float)(sc[0] * sl + sc[1] * sh) - dmin * (float)(m[0] * ml + m[1] * mh));
    } else { /* KERN_Q6_K */
        /* 16 contiguous ql bytes per lane: ql byte j of half h holds value
         * j (low nibble) and 64 + j (high), their top bits in qh byte j % 32
         * (bits 0-1 / 4-5 for j < 32, 2-3 / 6-7 above), and 16 values share
         * a scale: 10 aligned word loads and 2 scale bytes per lane */
        const int h = li >> 2, l1 = (li & 3) * 16, sl = (l1 >> 5) * 2;
        uint32_t q[4], hh[4];
        ld_16_2(((const bq6_K *)blk)->ql + h * 64 + l1, q);
        ld_16_2(((const bq6_K *)blk)->qh + h * 32 + (l1 & 31), hh);
        const int8_t *scl = ((const bq6_K *)blk)->scales + h * 8 + (l1 >> 4);
        const int sc_lo = scl[0], sc_hi = scl[4];
        const float d = gq_h2f(((const bq6_K *)blk)->d);
        const int4 al = *(const int4 *)(a + h * 128 + l1), ah = *(const int4 *)(a + h * 128 + 64 + l1);
        const int alw[4] = {al.x, al.y, al.z, al.w}, ahw[4] = {ah.x, ah.y, ah.z, ah.w};
        int dl = 0, dh = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const uint32_t lo = (q[i] & 0x0F0F0F0Fu) | (((hh[i] >> sl) & 0x03030303u) << 4);
            const uint32_t hi = ((q[i] >> 4) & 0x0F0F0F0Fu) | (((hh[i] >> (sl + 4)) & 0x03030303u) << 4);
            dl = __dp4a((int)__vsub4(lo, 0x20202020u), alw[i], dl);
            dh = __dp4a((int)__vsub4(hi, 0x20202020u), ahw[i], dh);
        }
        return ad * d * (float)(sc_lo * dl + sc_hi * dh);
    }
}

/* Partial dot over the super-blocks of this (warp part, lane group): four
 * super-blocks per warp step (8 lanes each), U steps per iteration so
 * that each warp keeps 4 U blocks of loads in flight. */
template <int T> __device__ __forceinline__ float mv_part_q(const uint8_t *wr, int n_in, const int8_t *xq,
                                                                       const float *xd, int lane, int part, int wpr) {
    constexpr int U = 2, BS = T == KERN_Q4_K ? sizeof(bq4_K) : T == KERN_Q5_K ? sizeof(bq5_K) : sizeof(bq6_K);
    const int nsb = n_in >> 8, li = lane & 7, step = 4 * wpr;
    float s = 0.0f;
    int sb = part * 4 + (lane >> 3);
#define KQ(o) kq_sb<T>(wr + (size_t)(sb + (o)) * BS, xq + (size_t)(sb + (o)) * 256, xd[sb + (o)], li)
    for (; sb + (U - 1) * step < nsb; sb += U * step) {
        float a[U];
#pragma unroll
        for (int u = 0; u < U; u++) a[u] = KQ(u * step);
        float t = a[0];
#pragma unroll
        for (int u = 1; u < U; u++) t += a[u];
        s += t;
    }
    for (; sb < nsb; sb += step) s += KQ(0);
#undef KQ
    return s;
}

/* mv_part_q for two rows of the same type at once (gate and up): twice
 * the loads in flight per warp, each row's sum in mv_part_q's order.
 * Written out beside mv_part_q on purpose: one template for one and two
 * rows costs k_dec registers, and with them a block per SM. */
template <int T> __device__ __forceinline__ float2 mv_part_q2(const uint8_t *w0, const uint8_t *w1, int n_in,
                                                              const int8_t *xq, const float *xd, int lane) {
    constexpr int BS = T == KERN_Q4_K ? sizeof(bq4_K) : T == KERN_Q5_K ? sizeof(bq5_K) : sizeof(bq6_K);
    const int nsb = n_in >> 8, li = lane & 7, step = 4;
    float s0 = 0.0f, s1 = 0.0f;
    int sb = lane >> 3;
#define KQ(w, o) kq_sb<T>(w + (size_t)(sb + (o)) * BS, xq + (size_t)(sb + (o)) * 256, xd[sb + (o)], li)
    for (; sb + step < nsb; sb += 2 * step) {
        const float a0 = KQ(w0, 0), b0 = KQ(w0, step), a1 = KQ(w1, 0), b1 = KQ(w1, step);
        s0 += a0 + b0, s1 += a1 + b1;
    }
    if (sb < nsb) s0 += KQ(w0, 0), s1 += KQ(w1, 0);
#undef KQ
    return make_float2(s0, s1);
}

/* Partial dot of one weight row with f32 x over super-blocks part, part +
 * wpr, ...: the weights that are not K-quants (K-quants always take Q8_K
 * activations). */
template <int T> __device__ __forceinline__ float mv_part(const uint8_t *wr, int n_in, const float *x, int lane, int part,
                                                          int wpr) {
    float s = 0.0f;
    for (int k = part * 256 + lane * 8; k < n_in; k += wpr * 256) {
        const float4 a = __ldg((const float4 *)(x + k)), b = __ldg((const float4 *)(x + k) + 1);
        const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        float w[8];
        deq8<T>(wr, k, w);
#pragma unroll
        for (int i = 0; i < 8; i++) s += w[i] * xv[i];
    }
    return s;
}

__device__ __forceinline__ float mv_part_any(int type, const uint8_t *wr, int n_in, const float *x, const int8_t *xq,
                                             const float *xd, int lane, int part, int wpr) {
    switch (type) {
    case KERN_Q4_K: return mv_part_q<KERN_Q4_K>(wr, n_in, xq, xd, lane, part, wpr);
    case KERN_Q6_K: return mv_part_q<KERN_Q6_K>(wr, n_in, xq, xd, lane, part, wpr);
    case KERN_Q5_K: return mv_part_q<KERN_Q5_K>(wr, n_in, xq, xd, lane, part, wpr);
    case KERN_Q8_0: return mv_part<KERN_Q8_0>(wr, n_in, x, lane, part, wpr);
    case KERN_Q4_0: return mv_part<KERN_Q4_0>(wr, n_in, x, lane, part, wpr);
    case KERN_F16: return mv_part<KERN_F16>(wr, n_in, x, lane, part, wpr);
    case KERN_BF16: return mv_part<KERN_BF16>(wr, n_in, x, lane, part, wpr);
    default: return mv_part<KERN_F32>(wr, n_in, x, lane, part, wpr);
    }
}

/* j.early: start the next kernel, and ask L2 for this block's rows while
 * the previous kernel finishes */
__device__ __forceinline__ void dec_early(const mv_job &j, const mv_seg &s, int r0, int R) {
    if (!j.early) return;
    gdc_launch();
    const int rows = min(R, s.n_out - r0);
    if (rows <= 0) return;
    l2_prefetch(s.W + (size_t)r0 * s.rb, (size_t)rows * s.rb);
    if (j.mode == MV_GLU) l2_prefetch(j.s[1].W + (size_t)r0 * j.s[1].rb, (size_t)rows * j.s[1].rb);
}

/* MV_GLU with one warp per row (dec_glu): warp w of block b does gate and
 * up row 8 b + w, reduced in the warp -- twice the loads in flight. Its own
 * kernel: the registers those loads take would cost every product of k_dec
 * occupancy. */
static __global__ void __launch_bounds__(256) k_dec_glu2(const mv_job j) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, row = blockIdx.x * 8 + warp;
    const mv_seg &s = j.s[0], &u = j.s[1];
    dec_early(j, s, blockIdx.x * 8, 8);
    gdc_wait();
    const int8_t *xq = j.xq;
    const float *xd = j.xd;
    if (row >= s.n_out) return;
    const uint8_t *wg = s.W + (size_t)row * s.rb, *wu = u.W + (size_t)row * u.rb;
    float2 v;
    if (s.type == u.type && s.type == KERN_Q4_K) v = mv_part_q2<KERN_Q4_K>(wg, wu, j.n_in, xq, xd, lane);
    else if (s.type == u.type && s.type == KERN_Q6_K) v = mv_part_q2<KERN_Q6_K>(wg, wu, j.n_in, xq, xd, lane);
    else if (s.type == u.type && s.type == KERN_Q5_K) v = mv_part_q2<KERN_Q5_K>(wg, wu, j.n_in, xq, xd, lane);
    else
        v = make_float2(mv_part_any(s.type, wg, j.n_in, j.x, xq, xd, lane, 0, 1),
                        mv_part_any(u.type, wu, j.n_in, j.x, xq, xd, lane, 0, 1));
    const float g = warp_sum(v.x), up = warp_sum(v.y);
    if (lane == 0) s.y[row] = g / (1.0f + expf(-g)) * up;
}

static __global__ void __launch_bounds__(256) k_dec(const mv_job j) {
    __shared__ float red[8], val[8];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int vrows = 8 / j.wpr, vr = warp / j.wpr, part = warp % j.wpr;
    /* segments are copied field by field with constant indices: indexing the
     * kernel parameter with a runtime value would copy it to local memory */
    const int si = j.nseg > 2 && (int)blockIdx.x >= j.s[2].blk0 ? 2 : j.nseg > 1 && (int)blockIdx.x >= j.s[1].blk0 ? 1 : 0;
    const mv_seg s = si == 0 ? j.s[0] : si == 1 ? j.s[1] : j.s[2];
    /* GLU: virtual rows [0, R) are gate rows, [R, 2R) the same up rows */
    const int R = j.mode == MV_GLU ? vrows / 2 : vrows;
    const int r0 = ((int)blockIdx.x - s.blk0) * R;
    dec_early(j, s, r0, R);
    gdc_wait();
    const int8_t *xq = j.xq;
    const float *xd = j.xd;
    const mv_seg sg = j.mode == MV_GLU && vr >= R ? j.s[1] : s;
    const int row = r0 + (vr < R ? vr : vr - R);
    float v = 0.0f;
    if (row < sg.n_out) v = mv_part_any(sg.type, sg.W + (size_t)row * sg.rb, j.n_in, j.x, xq, xd, lane, part, j.wpr);
    v = warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if ((int)threadIdx.x < vrows) {
        float t = 0.0f;
        for (int p = 0; p < j.wpr; p++) t += red[threadIdx.x * j.wpr + p];
        val[threadIdx.x] = t;
    }
    __syncthreads();
    const int t = threadIdx.x, r = r0 + t;
    if (j.mode != MV_QKV) {
        if (t < R && r < s.n_out) {
            if (j.mode == MV_STORE) s.y[r] = val[t];
            else if (j.mode == MV_ACC) s.y[r] += val[t];
            else {
                const float g = val[t];
                s.y[r] = g / (1.0f + expf(-g)) * val[R + t];
            }
        }
        if (!j.nw) return;
        __shared__ int last;
        __threadfence(); /* our rows of y are visible to whichever block is last */
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(j.counter, 1u) == gridDim.x - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        rms_row(s.y, j.nw, j.ny, s.n_out, j.eps, j.nxq, j.nxd);
        if (threadIdx.x == 0) *j.counter = 0; /* ready for the next kernel */
        return;
    }
    if (t >= R || r >= s.n_out) return;
    { /* MV_QKV: rows r, r + 1 of a RoPE pair are done by the even thread */
        const int pos = *j.d_pos;
        if (si < 2 && j.rope) {
            if (t & 1) return;
            float pv[2] = {val[t], val[t + 1]};
            rope_pair(pv, (r % j.hd) >> 1, pos, j.theta_scale);
            if (si == 0) s.y[r] = pv[0], s.y[r + 1] = pv[1];
            else {
                const size_t kvdim = (size_t)j.s[1].n_out;
                j.kc[(size_t)pos * kvdim + r] = __float2half_rn(pv[0]);
                j.kc[(size_t)pos * kvdim + r + 1] = __float2half_rn(pv[1]);
            }
        } else if (si == 0) s.y[r] = val[t];
        else {
            const size_t kvdim = (size_t)j.s[1].n_out;
            (si == 1 ? j.kc : j.vc)[(size_t)pos * kvdim + r] = __float2half_rn(val[t]);
        }
    }
}

#endif
