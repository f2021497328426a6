/* mmq.cuh -- prefill products of K-quant weights and Q8_K activations on
 * int8 tensor cores (k_mmq), from MMA_MIN_TOK tokens up to the f16 GEMM's
 * threshold (gemm16.cuh).
 *
 * k_mmq is llama.cpp's MMQ idea written for our layouts: the products are
 * exact integer dot products, like the CPU's (the results match its
 * rounding, not just its tolerance), and unpacking a Q4_K nibble pair to
 * int8 is one AND: no f16 conversion of either operand.
 *
 * Tile: 64 weight rows x BN tokens per block of 8 warps; a warp owns 32
 * rows (two m16 tiles) x BN/4 tokens (n8 tiles). K moves in steps of 64
 * (inside one 256-value super-block). Per step the weights are unpacked to
 * int8 in shared memory with their per-sub-block factors (Q4_K/Q5_K:
 * d*sc and dmin*m per 32 values; Q6_K: d*sc per 16, quants already minus
 * 32), the activations copied as they are with their sums per 32 and
 * their Q8_K scale. mma.sync m16n8k32 (m16n8k16 for Q6_K's 16-value
 * scales) gives int32 sums per sub-block; their integer sum over the
 * super-block, sum_j sc_j (q . a)_j, is folded into the f32 accumulators
 * once per 256 values as the CPU does, the mins' term goes straight in:
 *   acc += xd * d * sum_j sc_j (q . a)_j - sum_j dmin * m_j * xd * sum(a)_j
 * The next step's bytes are loaded into registers before the products and
 * unpacked into the other shared-memory stage after them.
 *
 * Fragment layouts: common.cuh. */
#define MQ_LD 80 /* bytes per shared row of 64 int8: 20 words, conflict-free fragment loads */

#ifndef MMQ_CUH
#define MMQ_CUH

#include "model/cuda/quant.cuh"

#define MMA_MIN_TOK 9 /* tensor-core products from this many tokens on */
#define MM_R 64       /* weight rows per block */

/* the raw bytes one thread loads for one step: its row's 8 + 8 values */
struct mq_raw {
    uint2 q0, q1, h; /* Q4_K/Q5_K: q0 = 8 qs bytes, h = 8 qh bytes; Q6_K: q0/q1 = ql, h = qh */
    uint32_t dd, s[3];
};

template <int T> __device__ __forceinline__ void mq_load(const uint8_t *row, int k0, int q, mq_raw &r) {
    if (T == KERN_Q4_K || T == KERN_Q5_K) {
        typedef typename std::conditional<T == KERN_Q4_K, bq4_K, bq5_K>::type B;
        const B *b = (const B *)row + (k0 >> 8);
        const int c = (k0 & 255) >> 6;
        r.dd = *(const uint32_t *)b; /* d | dmin << 16 */
        gq_words(b->scales, r.s);
        r.q0 = *(const uint2 *)(b->qs + 32 * c + 8 * q);
        if (T == KERN_Q5_K) r.h = *(const uint2 *)(((const bq5_K *)b)->qh + 8 * q);
    } else { /* Q6_K: 2-byte aligned blocks */
        const bq6_K *b = (const bq6_K *)row + (k0 >> 8);
        const int h = (k0 & 255) >> 7;
        const uint16_t *a0 = (const uint16_t *)(b->ql + h * 64 + 8 * q), *a1 = (const uint16_t *)(b->ql + h * 64 + 32 + 8 * q);
        const uint16_t *hh = (const uint16_t *)(b->qh + h * 32 + 8 * q);
        r.q0 = make_uint2(a0[0] | (a0[1] << 16), a0[2] | (a0[3] << 16));
        r.q1 = make_uint2(a1[0] | (a1[1] << 16), a1[2] | (a1[3] << 16));
        r.h = make_uint2(hh[0] | (hh[1] << 16), hh[2] | (hh[3] << 16));
        r.dd = b->d;
        /* the four 16-value scales of this step: (k % 128) / 16 .. +4 of this half's 8 */
        const uint8_t *sc = (const uint8_t *)b->scales + h * 8 + ((k0 & 127) >> 4);
        r.s[0] = sc[0] | (sc[1] << 8) | (sc[2] << 16) | ((uint32_t)sc[3] << 24);
    }
}

/* unpack into shared row w (64 int8) and its factors (per sub-block): fs
 * the integer scales (int bits), fm dmin * min, and dr[0] the super-block's d */
template <int T>
__device__ __forceinline__ void mq_store(const mq_raw &r, int k0, int q, int8_t *w, float *fs, float *fm, float *dr) {
    if (T == KERN_Q4_K || T == KERN_Q5_K) {
        const int c = (k0 & 255) >> 6;
        uint2 lo = make_uint2(r.q0.x & 0x0F0F0F0Fu, r.q0.y & 0x0F0F0F0Fu);
        uint2 hi = make_uint2((r.q0.x >> 4) & 0x0F0F0F0Fu, (r.q0.y >> 4) & 0x0F0F0F0Fu);
        if (T == KERN_Q5_K) {
            lo.x |= ((r.h.x >> (2 * c)) & 0x01010101u) << 4, lo.y |= ((r.h.y >> (2 * c)) & 0x01010101u) << 4;
            hi.x |= ((r.h.x >> (2 * c + 1)) & 0x01010101u) << 4, hi.y |= ((r.h.y >> (2 * c + 1)) & 0x01010101u) << 4;
        }
        *(uint2 *)(w + 8 * q) = lo;
        *(uint2 *)(w + 32 + 8 * q) = hi;
        if (q < 2) { /* thread q computes sub-block 2c + q's factors */
            const int j = 2 * c + q;
            int sc, m;
            gq_sm(r.s[0], r.s[1], r.s[2], j, &sc, &m);
            const float d = __half2float(__ushort_as_half((unsigned short)(r.dd & 0xFFFF)));
            const float dmin = __half2float(__ushort_as_half((unsigned short)(r.dd >> 16)));
            fs[q] = __int_as_float(sc);
            fm[q] = dmin * (float)m;
            if (q == 0) dr[0] = d;
        }
    } else {
        const int qu0 = (k0 & 127) >> 5, ns = 4 * (qu0 >> 1); /* values 0..31: qu0 (ql low 32), 32..63: qu0 + 1 (ql high 32) */
        uint2 a, b;
        a.x = ((r.q0.x >> ns) & 0x0F0F0F0Fu) | (((r.h.x >> (2 * qu0)) & 0x03030303u) << 4);
        a.y = ((r.q0.y >> ns) & 0x0F0F0F0Fu) | (((r.h.y >> (2 * qu0)) & 0x03030303u) << 4);
        b.x = ((r.q1.x >> ns) & 0x0F0F0F0Fu) | (((r.h.x >> (2 * qu0 + 2)) & 0x03030303u) << 4);
        b.y = ((r.q1.y >> ns) & 0x0F0F0F0Fu) | (((r.h.y >> (2 * qu0 + 2)) & 0x03030303u) << 4);
        *(uint2 *)(w + 8 * q) = make_uint2(__vsub4(a.x, 0x20202020u), __vsub4(a.y, 0x20202020u));
        *(uint2 *)(w + 32 + 8 * q) = make_uint2(__vsub4(b.x, 0x20202020u), __vsub4(b.y, 0x20202020u));
        /* sub-blocks of 16: 0, 1 -> scales 2*qu0 + {0, 1}; 2, 3 -> 2*(qu0+1) + {0, 1}:
         * bytes (k%128)/16 + {0, 1, 2, 3} of this half's 8 scales */
        const float d = __half2float(__ushort_as_half((unsigned short)r.dd));
        const int sc = (int8_t)(r.s[0] >> (8 * q));
        fs[q] = __int_as_float(sc);
        if (q == 0) dr[0] = d;
        (void)fm;
    }
}

template <int T, int BN>
__global__ void __launch_bounds__(256)
    k_mmq(const uint8_t *W, size_t rb, int n_in, int n_out, const int8_t *xq, const float *xd, int n_tok, float *y,
          int ldy, int acc) {
    constexpr int NT = BN / 32;                 /* n8 tiles per warp (BN / 4 tokens) */
    constexpr int NS = T == KERN_Q6_K ? 4 : 2;    /* sub-blocks per step of 64 */
    __shared__ __align__(16) int8_t Wt[2][64 * MQ_LD];
    __shared__ __align__(16) int8_t Xt[2][BN * MQ_LD];
    __shared__ float Fs[2][64][4], Fm[2][64][2], Xs[2][BN][2], Xd[2][BN], Dr[2][64];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int row0 = blockIdx.x * 64, tok0 = blockIdx.y * BN;
    const int wm = (warp & 1) * 32, wn = (warp >> 1) * (BN / 4);
    /* loader roles: weights: row lr, quarter lq; activations: 16-byte chunks tid + 256u */
    const int lr = tid >> 2, lq = tid & 3;
    const bool wok = row0 + lr < n_out;
    const uint8_t *wrow = W + (size_t)(wok ? row0 + lr : 0) * rb;
    constexpr int XC = BN * 4 >= 256 ? BN * 4 / 256 : 1; /* BN = 32: half the threads load */
    mq_raw raw;
    int4 xr[XC];
    float xdr[XC];
    auto load = [&](int k0) {
        if (wok) mq_load<T>(wrow, k0, lq, raw);
#pragma unroll
        for (int u = 0; u < XC; u++) {
            const int ch = tid + u * 256, tt = tok0 + (ch >> 2);
            if (ch < BN * 4 && tt < n_tok) {
                xr[u] = *(const int4 *)(xq + (size_t)tt * n_in + k0 + (ch & 3) * 16);
                xdr[u] = xd[(size_t)tt * (n_in >> 8) + (k0 >> 8)];
            } else xr[u] = make_int4(0, 0, 0, 0), xdr[u] = 0.0f;
        }
    };
    auto store = [&](int k0, int s) {
        int8_t *w = Wt[s] + lr * MQ_LD;
        if (wok) mq_store<T>(raw, k0, lq, w, Fs[s][lr], Fm[s][lr], &Dr[s][lr]);
        else { /* zeros: float 0 and int 0 have the same bits */
            *(uint2 *)(w + 8 * lq) = make_uint2(0, 0), *(uint2 *)(w + 32 + 8 * lq) = make_uint2(0, 0);
            Fs[s][lr][lq] = 0.0f;
            if (lq < 2) Fm[s][lr][lq] = 0.0f;
            if (lq == 0) Dr[s][lr] = 0.0f;
        }
#pragma unroll
        for (int u = 0; u < XC; u++) {
            const int ch = tid + u * 256, tt = ch >> 2, part = ch & 3;
            if (BN * 4 < 256 && ch >= BN * 4) continue; /* warp-uniform: whole warps idle */
            *(int4 *)(Xt[s] + tt * MQ_LD + part * 16) = xr[u];
            /* sum per 32: this chunk's 16 plus the neighbour's (lanes tid ^ 1) */
            int sum = __dp4a(xr[u].x, 0x01010101, __dp4a(xr[u].y, 0x01010101, __dp4a(xr[u].z, 0x01010101, __dp4a(xr[u].w, 0x01010101, 0))));
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            /* the mins' term needs sum * xd only */
            if (!(part & 1)) Xs[s][tt][part >> 1] = (float)sum * xdr[u];
            if (part == 0) Xd[s][tt] = xdr[u];
        }
    };

    float ac[2][NT][4];
    /* ai: the super-block's integer sum_j sc_j (q . a)_j, folded into ac
     * once per 256 values; the mins' term goes straight into ac */
    int ai[2][NT][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) ac[i][j][e] = 0.0f, ai[i][j][e] = 0;

    load(0);
    store(0, 0);
    __syncthreads();
    int s = 0;
    for (int k0 = 0; k0 < n_in; k0 += 64) {
        const bool more = k0 + 64 < n_in;
        if (more) load(k0 + 64);
        const int8_t *Ws = Wt[s], *Xs_ = Xt[s];
#pragma unroll
        for (int sb = 0; sb < NS; sb++) {
            constexpr int KS = 64 / NS; /* 32 or 16 */
            int c[2][NT][4];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) c[i][j][0] = c[i][j][1] = c[i][j][2] = c[i][j][3] = 0;
            const int kk = sb * KS;
            int a[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int8_t *r0 = Ws + (wm + 16 * i + g) * MQ_LD + kk + 4 * t4, *r1 = r0 + 8 * MQ_LD;
                a[i][0] = *(const int *)r0, a[i][1] = *(const int *)r1;
                if (KS == 32) a[i][2] = *(const int *)(r0 + 16), a[i][3] = *(const int *)(r1 + 16);
            }
#pragma unroll
            for (int j = 0; j < NT; j++) {
                const int8_t *bp = Xs_ + (wn + 8 * j + g) * MQ_LD + kk + 4 * t4;
                const int b0 = *(const int *)bp;
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    if (KS == 32) mma_k32(c[i][j], a[i], b0, *(const int *)(bp + 16));
                    else mma_k16(c[i][j], a[i], b0);
                }
            }
            /* fold: rows wm + 16i + g (+8), tokens wn + 8j + 2*t4 (+1) */
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int ra = wm + 16 * i + g, rb2 = ra + 8;
                const int sa = __float_as_int(Fs[s][ra][sb]), sb2 = __float_as_int(Fs[s][rb2][sb]);
                const float ma = NS == 2 ? Fm[s][ra][sb] : 0.0f, mb = NS == 2 ? Fm[s][rb2][sb] : 0.0f;
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const int ta = wn + 8 * j + 2 * t4;
                    ai[i][j][0] += sa * c[i][j][0], ai[i][j][1] += sa * c[i][j][1];
                    ai[i][j][2] += sb2 * c[i][j][2], ai[i][j][3] += sb2 * c[i][j][3];
                    if (NS == 2) {
                        const float x0 = Xs[s][ta][sb], x1 = Xs[s][ta + 1][sb];
                        ac[i][j][0] -= ma * x0, ac[i][j][1] -= ma * x1;
                        ac[i][j][2] -= mb * x0, ac[i][j][3] -= mb * x1;
                    }
                }
            }
        }
        if (((k0 + 64) & 255) == 0) { /* the super-block ends: fold its integer sums */
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int ra = wm + 16 * i + g, rb2 = ra + 8;
                const float da = Dr[s][ra], db = Dr[s][rb2];
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const int ta = wn + 8 * j + 2 * t4;
                    const float d0 = Xd[s][ta], d1 = Xd[s][ta + 1];
                    ac[i][j][0] += d0 * da * (float)ai[i][j][0], ac[i][j][1] += d1 * da * (float)ai[i][j][1];
                    ac[i][j][2] += d0 * db * (float)ai[i][j][2], ac[i][j][3] += d1 * db * (float)ai[i][j][3];
#pragma unroll
                    for (int e = 0; e < 4; e++) ai[i][j][e] = 0;
                }
            }
        }
        if (more) store(k0 + 64, s ^ 1);
        __syncthreads();
        s ^= 1;
    }
    mma_store<2, NT>(ac, y, ldy, row0 + wm, tok0 + wn, n_out, n_tok, g, t4, acc);
}

#endif
