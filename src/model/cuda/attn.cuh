/* attn.cuh -- attention on f16 tensor cores over the f16 KV cache,
 * [n_ctx][n_kv * hd] per layer. Both kernels hold q and the softmax
 * weights P in two f16 parts (x = hi + lo, two products): f16 alone
 * doubled the golden tests' logit error on the tiny Q4_K_M model.
 *
 * k_fa (prefill) is flash attention, as llama.cpp's CUDA build does it:
 *   - block (KV head, tile of 16 * 4 / group tokens), 4 warps; warp w takes
 *     query head w % group of its KV head and 16 tokens (w / group), so the
 *     group's heads share every K/V tile;
 *   - K/V tiles of FA_KEYS positions, double-buffered in shared memory by
 *     cp.async (rows padded by 8 halves: the 8 row addresses of an ldmatrix
 *     fall in distinct banks); keys past the block's last query are zeros
 *     and masked;
 *   - per tile: S = Q K^T (Q pre-scaled, held as f16 A fragments for the
 *     whole loop; K by ldmatrix), causal mask, online softmax per row (a
 *     row lives in a quad of lanes), P's two parts used as the A fragments
 *     of O += P V directly (V by ldmatrix.trans);
 *   - a warp skips the products of tiles wholly after its last query.
 *
 * k_attn_dmma (decode, one token at depth n = *d_pos + 1) is split-K
 * flash-decoding with the group's heads as the rows of one m16n8k16 tile:
 * row h is head h's q rounded to f16, row 8 + h what that rounding left, so
 * one mma gives both parts' scores (summed after), and P's two parts in the
 * same rows feed O += P V the same way:
 *   - grid (n_kv, ATT_DEC_SPLITS), fixed, so one CUDA graph serves every
 *     depth: split s takes positions [s c, s c + c), c = att_dec_chunk(n),
 *     at least ATT_DMMA_MIN; splits past n leave at once, uncounted;
 *   - DM_WARPS warps; warp w takes the split's 32-position tiles w, w + W,
 *     .. into its own shared buffer (cp.async, a warp barrier only);
 *   - the warps' (m, l, o) are merged in shared memory; a split that holds
 *     the whole context writes the output and its Q8_K (for Wo) at once,
 *     else its partial, and the last split to finish (a counter, as in
 *     k_dec's norm) merges them all (att_merge): no combine or quant
 *     kernel follows.
 * Shapes: head_dim 64 or 128; group 1, 2 or 4 (attn_ok).
 */
#ifndef ATTN_CUH
#define ATTN_CUH

#include "model/cuda/quant.cuh"

#define FA_KEYS 64
#define FA_WARPS 4
#define DM_WARPS 4
#define DM_TILE 32
#define ATT_DEC_SPLITS 64 /* blocks per KV head in decode; the partials' room */
#define ATT_DMMA_MIN 128  /* positions per decode split, at least (a tile per warp) */

static inline bool attn_ok(int hd, int group) { return (hd == 64 || hd == 128) && (group == 1 || group == 2 || group == 4); }
static inline size_t fa_smem(int hd) { return (size_t)2 * 2 * FA_KEYS * (hd + 8) * sizeof(__half); }
static inline int fa_tokens(int group) { return 16 * (FA_WARPS / group); }
static inline size_t dmma_smem(int hd) { return (size_t)DM_WARPS * 2 * DM_TILE * (hd + 8) * sizeof(__half); }

__device__ __forceinline__ int att_dec_chunk(int n, int splits, int minc) {
    const int c = ((n + splits - 1) / splits + 31) & ~31;
    return c > minc ? c : minc;
}

/* Tile of positions p0..p0+rows-1 of one KV head (column off of the cache
 * rows) into shared memory, one cp.async group, by threads tid of nthr
 * (the block, or one warp): K rows padded by 8 halves (row j's 16-byte
 * pieces fall in distinct banks for 8 consecutive rows), V rows vld halves
 * apart; rows at or past end are zeros. */
__device__ __forceinline__ void att_tile_load(__half *Kb, __half *Vb, const __half *kc, const __half *vc, int p0, int end,
                                              int kvdim, int off, int hd, int rows, int vld, int tid, int nthr) {
    const int cpr = hd / 8;
    for (int c = tid; c < rows * cpr; c += nthr) {
        const int j = c / cpr, d = (c % cpr) * 8, p = p0 + j, ok = p < end ? 16 : 0;
        const size_t gofs = (size_t)(ok ? p : p0) * kvdim + off + d;
        cp_async16(Kb + j * (hd + 8) + d, kc + gofs, ok);
        cp_async16(Vb + j * vld + d, vc + gofs, ok);
    }
    cp_async_commit();
}

/* The merge by the last block of a KV head, one warp per head: the ns
 * partials pp[s * (hd + 2)] (acc[hd], m, l; every one has l >= 1) weighed
 * by exp(m - M) -- each lane weighs its own splits into ws (shared, ns
 * floats), then lane i sums the dimension pairs 2i + 64k of the partial
 * outputs with eight splits' loads in flight (one at a time, the merge was
 * a chain of L2 round trips). The result goes to out and to ob (shared
 * memory, for att_out_q8). */
__device__ __forceinline__ void att_merge(const float *pp, int ns, int hd, float *ws, float *out, float *ob, int lane) {
    constexpr int U = 8, NP = 4;
    const int np = hd / 64;
    float M = -INFINITY, den = 0.0f;
    for (int s = lane; s < ns; s += 32) M = fmaxf(M, __ldcg(pp + (size_t)s * (hd + 2) + hd));
    M = warp_max(M);
    for (int s = lane; s < ns; s += 32) {
        const float *ps = pp + (size_t)s * (hd + 2);
        const float w = expf(__ldcg(ps + hd) - M);
        ws[s] = w;
        den += w * __ldcg(ps + hd + 1);
    }
    den = warp_sum(den);
    __syncwarp();
    const int d = 2 * lane;
    float2 o[NP];
#pragma unroll
    for (int i = 0; i < NP; i++) o[i] = make_float2(0.0f, 0.0f);
    for (int s0 = 0; s0 < ns; s0 += U) {
        float2 a[U][NP];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int i = 0; i < NP; i++)
                a[u][i] = s0 + u < ns && i < np ? __ldcg((const float2 *)(pp + (size_t)(s0 + u) * (hd + 2) + d + 64 * i))
                                                : make_float2(0.0f, 0.0f);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const float w = s0 + u < ns ? ws[s0 + u] : 0.0f;
#pragma unroll
            for (int i = 0; i < NP; i++) o[i].x += w * a[u][i].x, o[i].y += w * a[u][i].y;
        }
    }
#pragma unroll
    for (int i = 0; i < NP; i++)
        if (i < np) {
            const float2 r = make_float2(o[i].x / den, o[i].y / den);
            *(float2 *)(out + d + 64 * i) = r;
            *(float2 *)(ob + d + 64 * i) = r;
        }
}

/* The Q8_K of a group's n outputs ob (shared memory; n % 256 == 0) into
 * oq/od at value base, a super-block per warp (nw warps). */
__device__ __forceinline__ void att_out_q8(const float *ob, int base, int n, int8_t *oq, float *od, int warp, int nw, int lane) {
    for (int sb = warp; sb < n / 256; sb += nw) quant_sb(ob + sb * 256, oq + base + sb * 256, od + base / 256 + sb, lane);
}

/* S += A K^T for a tile of 8 NJ keys: K's rows (keys) in shared memory,
 * LD halves apart, A as KS k-step fragments over the head dims; with TWO,
 * A2 (q's second part) after A on the same K fragments */
template <int NJ, int KS, bool TWO>
__device__ __forceinline__ void tile_qk(float (*sc)[4], const unsigned (*a)[4], const unsigned (*a2)[4], const __half *Kb,
                                        int LD, int lane) {
    const int mi = lane >> 3;
#pragma unroll
    for (int k = 0; k < KS; k++)
#pragma unroll
        for (int j = 0; j < NJ; j += 2) {
            unsigned b[4]; /* keys 8j.. (+8 for matrices 2, 3), dims 16k.. (+8 for 1, 3) */
            ldsm_x4(b, Kb + (8 * j + (mi >> 1) * 8 + (lane & 7)) * LD + 16 * k + (mi & 1) * 8);
            mma_f16(sc[j], a[k], b[0], b[1]);
            mma_f16(sc[j + 1], a[k], b[2], b[3]);
            if (TWO) {
                mma_f16(sc[j], a2[k], b[0], b[1]);
                mma_f16(sc[j + 1], a2[k], b[2], b[3]);
            }
        }
}

/* O += P V for 16 NS keys: P as NS k-step fragments over the keys (with
 * TWO, P2 after P: P's second part), V's rows (keys) in shared memory read
 * transposed, O as DT n8 tiles of the head dims */
template <int NS, int DT, bool TWO>
__device__ __forceinline__ void tile_pv(float (*o)[4], const unsigned (*p)[4], const unsigned (*p2)[4], const __half *Vb,
                                        int LD, int lane) {
    const int mi = lane >> 3;
#pragma unroll
    for (int s = 0; s < NS; s++)
#pragma unroll
        for (int d = 0; d < DT; d += 2) {
            unsigned b[4]; /* transposed: keys 16s.. (+8 for matrices 1, 3), dims 8d.. (+8 for 2, 3) */
            ldsm_x4_t(b, Vb + (16 * s + (mi & 1) * 8 + (lane & 7)) * LD + 8 * d + (mi >> 1) * 8);
            mma_f16(o[d], p[s], b[0], b[1]);
            mma_f16(o[d + 1], p[s], b[2], b[3]);
            if (TWO) {
                mma_f16(o[d], p2[s], b[0], b[1]);
                mma_f16(o[d + 1], p2[s], b[2], b[3]);
            }
        }
}

template <int HD>
__global__ void __launch_bounds__(FA_WARPS * 32) k_fa(const float *q, const __half *kc, const __half *vc, const int *d_pos,
                                                       int n_tok, int n_head, int n_kv, float scale, float *out) {
    DYN_SMEM(unsigned char, fa_sm);
    constexpr int LD = HD + 8, KS = HD / 16, DT = HD / 8; /* row stride; k-steps over dims; n8 tiles of dims */
    const int group = n_head / n_kv, kvdim = n_kv * HD, qdim = n_head * HD, tq = FA_WARPS / group * 16;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int kvh = blockIdx.x, head = kvh * group + warp % group;
    const int t0 = blockIdx.y * tq + (warp / group) * 16, pos0 = *d_pos;
    const int kend = pos0 + min((int)blockIdx.y * tq + tq, n_tok);       /* keys the block needs */
    const int wmax = pos0 + min(t0 + 15, n_tok - 1);                      /* the warp's last query position */
    const int qpa = pos0 + min(t0 + g, n_tok - 1), qpb = pos0 + min(t0 + g + 8, n_tok - 1); /* rows g, g + 8 */
    __half *Ks = (__half *)fa_sm, *Vs = Ks + 2 * FA_KEYS * LD;
    att_tile_load(Ks, Vs, kc, vc, 0, kend, kvdim, kvh * HD, HD, FA_KEYS, LD, threadIdx.x, blockDim.x);
    /* q as two f16 parts, q = hi + lo (rows past n_tok repeat the last
     * token: computed, never written): f16 q alone costs scores an error of
     * 2^-11 of their size, which doubled the golden tests' logit error */
    unsigned qa[KS][4], ql[KS][4];
    {
        const float *r0 = q + (size_t)(qpa - pos0) * qdim + head * HD, *r1 = q + (size_t)(qpb - pos0) * qdim + head * HD;
#pragma unroll
        for (int k = 0; k < KS; k++) {
            const float2 x0 = *(const float2 *)(r0 + 16 * k + 2 * t), x1 = *(const float2 *)(r1 + 16 * k + 2 * t);
            const float2 x2 = *(const float2 *)(r0 + 16 * k + 8 + 2 * t), x3 = *(const float2 *)(r1 + 16 * k + 8 + 2 * t);
            const float2 xs[4] = {x0, x1, x2, x3};
#pragma unroll
            for (int r = 0; r < 4; r++) split_h2(xs[r].x * scale, xs[r].y * scale, &qa[k][r], &ql[k][r]);
        }
    }
    float o[DT][4];
#pragma unroll
    for (int d = 0; d < DT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const int ntiles = (kend + FA_KEYS - 1) / FA_KEYS;
    for (int it = 0; it < ntiles; it++) {
        const int kb = it * FA_KEYS, buf = it & 1;
        if (it + 1 < ntiles) {
            att_tile_load(Ks + (buf ^ 1) * FA_KEYS * LD, Vs + (buf ^ 1) * FA_KEYS * LD, kc, vc, kb + FA_KEYS, kend, kvdim,
                          kvh * HD, HD, FA_KEYS, LD, threadIdx.x, blockDim.x);
            cp_async_wait<1>();
        } else cp_async_wait<0>();
        __syncthreads();
        if (kb <= wmax) { /* warp-uniform; tile 0 always runs, so m0, m1 are finite after it */
            const __half *Kb = Ks + buf * FA_KEYS * LD, *Vb = Vs + buf * FA_KEYS * LD;
            float sc[FA_KEYS / 8][4];
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
            tile_qk<FA_KEYS / 8, KS, true>(sc, qa, ql, Kb, LD, lane);
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int key = kb + 8 * j + 2 * t + (e & 1);
                    if (key > (e < 2 ? qpa : qpb)) sc[j][e] = -INFINITY;
                    if (e < 2) mx0 = fmaxf(mx0, sc[j][e]);
                    else mx1 = fmaxf(mx1, sc[j][e]);
                }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1)), mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1)), mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1), r0 = expf(m0 - n0), r1 = expf(m1 - n1);
            m0 = n0, m1 = n1, l0 *= r0, l1 *= r1;
#pragma unroll
            for (int d = 0; d < DT; d++) o[d][0] *= r0, o[d][1] *= r0, o[d][2] *= r1, o[d][3] *= r1;
            /* P as A fragments (keys 16s.. are n8 tiles 2s, 2s + 1), in two f16
             * parts like q: P = hi + lo to about 2^-22 */
            unsigned pa[FA_KEYS / 16][4], pl[FA_KEYS / 16][4];
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j++) {
                const float p0 = expf(sc[j][0] - n0), p1 = expf(sc[j][1] - n0);
                const float p2 = expf(sc[j][2] - n1), p3 = expf(sc[j][3] - n1);
                const int s = j >> 1, e = (j & 1) * 2;
                split_h2(p0, p1, &pa[s][e], &pl[s][e]);
                split_h2(p2, p3, &pa[s][e + 1], &pl[s][e + 1]);
                l0 += p0 + p1, l1 += p2 + p3;
            }
            tile_pv<FA_KEYS / 16, DT, true>(o, pa, pl, Vb, LD, lane);
        }
        __syncthreads(); /* the buffer is loaded again next iteration */
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1), l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1), l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const int ta = t0 + g, tb = ta + 8;
#pragma unroll
    for (int d = 0; d < DT; d++) {
        if (ta < n_tok) *(float2 *)(out + (size_t)ta * qdim + head * HD + 8 * d + 2 * t) = make_float2(o[d][0] / l0, o[d][1] / l0);
        if (tb < n_tok) *(float2 *)(out + (size_t)tb * qdim + head * HD + 8 * d + 2 * t) = make_float2(o[d][2] / l1, o[d][3] / l1);
    }
}

/* early: let the next kernel start at once (gdc_launch) */
template <int HD>
__global__ void __launch_bounds__(DM_WARPS * 32)
    k_attn_dmma(const float *q, const __half *kc, const __half *vc, const int *d_pos, int n_head, int n_kv, float scale,
                int minc, int early, float *part, unsigned *counter, float *out, int8_t *oq, float *od) {
    if (early) gdc_launch();
    constexpr int W = DM_WARPS, LD = HD + 8, KS = HD / 16, DT = HD / 8, NJ = DM_TILE / 8;
    const int group = n_head / n_kv, kvdim = n_kv * HD, kvh = blockIdx.x, S = gridDim.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    /* d_pos is set before the graph runs (no kernel writes it): read before the wait */
    const int n = *d_pos + 1, chunk = att_dec_chunk(n, S, minc), ns = (n + chunk - 1) / chunk;
    const int begin = blockIdx.y * chunk, end = min(begin + chunk, n);
    gdc_wait();
    DYN_SMEM(unsigned char, dm_sm);
    __shared__ int last;
    if (begin >= end) return;
    __half *Kw = (__half *)dm_sm + (size_t)warp * 2 * DM_TILE * LD, *Vw = Kw + DM_TILE * LD;
    unsigned qa[KS][4]; /* A fragments: a0, a2 row g (hi), a1, a3 row g + 8 (lo); zero past the group */
    {
        const float *qr = q + ((size_t)kvh * group + (g < group ? g : 0)) * HD;
#pragma unroll
        for (int k = 0; k < KS; k++) {
            float2 x0 = *(const float2 *)(qr + 16 * k + 2 * t), x1 = *(const float2 *)(qr + 16 * k + 8 + 2 * t);
            if (g >= group) x0 = x1 = make_float2(0.0f, 0.0f);
            split_h2(x0.x * scale, x0.y * scale, &qa[k][0], &qa[k][1]);
            split_h2(x1.x * scale, x1.y * scale, &qa[k][2], &qa[k][3]);
        }
    }
    float o[DT][4]; /* c0, c1: row g (hi), c2, c3: row g + 8 (lo) of dims 8d + 2t.. */
#pragma unroll
    for (int d = 0; d < DT; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int p0 = begin + warp * DM_TILE; p0 < end; p0 += W * DM_TILE) {
        att_tile_load(Kw, Vw, kc, vc, p0, end, kvdim, kvh * HD, HD, DM_TILE, LD, lane, 32);
        cp_async_wait<0>();
        __syncwarp();
        float sc[NJ][4];
#pragma unroll
        for (int j = 0; j < NJ; j++) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
        tile_qk<NJ, KS, false>(sc, qa, qa, Kw, LD, lane);
        /* head g's score of key 8j + 2t + e: its hi row plus its lo row;
         * keys at or past end (zeros in the buffer) are masked */
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float v = sc[j][e] + sc[j][e + 2];
                sc[j][e] = p0 + 8 * j + 2 * t + e < end ? v : -INFINITY;
                mx = fmaxf(mx, sc[j][e]);
            }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1)), mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float nm = fmaxf(m, mx), r = expf(m - nm); /* key p0 is below end: nm is finite */
        m = nm, l *= r;
#pragma unroll
        for (int d = 0; d < DT; d++) o[d][0] *= r, o[d][1] *= r, o[d][2] *= r, o[d][3] *= r;
        unsigned pa[DM_TILE / 16][4]; /* P as A fragments: keys 16s.. are n8 tiles 2s, 2s + 1; hi row g, lo row g + 8 */
#pragma unroll
        for (int j = 0; j < NJ; j++) {
            const float p0v = expf(sc[j][0] - nm), p1v = expf(sc[j][1] - nm);
            l += p0v + p1v;
            split_h2(p0v, p1v, &pa[j >> 1][(j & 1) * 2], &pa[j >> 1][(j & 1) * 2 + 1]);
        }
        tile_pv<DM_TILE / 16, DT, false>(o, pa, pa, Vw, LD, lane);
        __syncwarp(); /* the buffer is loaded again next tile */
    }
    l += __shfl_xor_sync(0xffffffffu, l, 1), l += __shfl_xor_sync(0xffffffffu, l, 2);
    __syncthreads(); /* every warp is done with its tiles: the buffers become the merge's */
    float *wst = (float *)dm_sm;                        /* [W][group][HD + 2]: each warp's acc, m, l */
    float *ob = wst + (size_t)W * group * (HD + 2);     /* [group][HD]: the output, for its Q8_K */
    if (g < group) { /* a warp without tiles stores m = -inf, l = 0, acc = 0 */
        float *w = wst + ((size_t)warp * group + g) * (HD + 2);
#pragma unroll
        for (int d = 0; d < DT; d++) *(float2 *)(w + 8 * d + 2 * t) = make_float2(o[d][0] + o[d][2], o[d][1] + o[d][3]);
        if (t == 0) w[HD] = m, w[HD + 1] = l;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < group * HD / 2; e += blockDim.x) {
        const int h = e / (HD / 2), d = 2 * (e % (HD / 2)), head = kvh * group + h;
        float M = -INFINITY, L = 0.0f;
        for (int w = 0; w < W; w++) M = fmaxf(M, wst[((size_t)w * group + h) * (HD + 2) + HD]); /* warp 0's is finite */
        float2 acc = make_float2(0.0f, 0.0f);
        for (int w = 0; w < W; w++) {
            const float *ws = wst + ((size_t)w * group + h) * (HD + 2), c = expf(ws[HD] - M);
            acc.x += c * ws[d], acc.y += c * ws[d + 1], L += c * ws[HD + 1];
        }
        if (ns == 1) { /* the whole context: the output itself */
            const float2 r = make_float2(acc.x / L, acc.y / L);
            *(float2 *)(out + (size_t)head * HD + d) = r;
            *(float2 *)(ob + h * HD + d) = r;
        } else {
            float *pp = part + ((size_t)head * S + blockIdx.y) * (HD + 2);
            *(float2 *)(pp + d) = acc;
            if (d == 0) pp[HD] = M, pp[HD + 1] = L;
        }
    }
    if (ns > 1) {
        __threadfence(); /* our partials are visible to whichever block is last */
        __syncthreads();
        if (threadIdx.x == 0) last = atomicAdd(counter + kvh, 1u) == (unsigned)ns - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        if (threadIdx.x == 0) counter[kvh] = 0; /* ready for the next layer */
        /* the merge weights in wst (S floats a head): our own partial went
         * to global memory above, so it is free (S < W (HD + 2) / 2) */
        for (int h = warp; h < group; h += W)
            att_merge(part + (size_t)(kvh * group + h) * S * (HD + 2), ns, HD, wst + h * S,
                      out + (size_t)(kvh * group + h) * HD, ob + h * HD, lane);
    }
    if (!oq) return;
    __syncthreads();
    att_out_q8(ob, kvh * group * HD, group * HD, oq, od, warp, W, lane);
}

#endif
