/* launch.cuh -- how each kernel of kernels.cuh is launched: grid, block
 * and shared memory for a shape, and the jobs of the fused decode kernel.
 * Host code, shared by gpu.cu (the model) and, compiled against the CPU
 * emulation (SMOLBOT_GPU_EMU), by tests/test_gpu_emu.cpp, so both run the
 * kernels exactly as configured here.
 */
#ifndef LAUNCH_CUH
#define LAUNCH_CUH

#include <string.h>

#include "kernels.cuh"

typedef struct dmat {
    const uint8_t *d; /* device */
    int type;
    int n_in, n_out;
    size_t rb; /* bytes per row */
} dmat;

typedef struct dlayer {
    float *attn_norm, *ffn_norm;
    dmat wq, wk, wv, wo, gate, up, down;
} dlayer;

/* SMOLBOT_GPU_PDL=0: ordinary launches (the emulation runs in order anyway) */
static int g_pdl __attribute__((unused)) = 1;

#ifdef SMOLBOT_GPU_EMU
/* on the CPU: run the grid now, block by block (emu.h) */
template <typename... KArgs, typename... Args>
static void launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    (void)st;
    emu_launch(k, grid, block, smem, (KArgs)args...);
}
#define launch_plain launch
#else
/* pdl: programmatic stream serialization (the kernel calls gdc_wait) */
template <typename... KArgs, typename... Args>
static void launch_with(int pdl, void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = pdl;
    cfg.attrs = at, cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, k, (KArgs)args...);
}
/* Launch with programmatic stream serialization (see gdc_wait). */
template <typename... KArgs, typename... Args>
static void launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    launch_with(g_pdl, k, grid, block, smem, st, args...);
}
/* An ordinary launch: for kernels that read their inputs without gdc_wait. */
template <typename... KArgs, typename... Args>
static void launch_plain(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    launch_with(0, k, grid, block, smem, st, args...);
}
#endif

/* Warps per row for a decode product: split rows until about 4k warps
 * share the matrix (measured on an H200: splitting further costs more in
 * block reductions than it gains in parallelism), keeping at least four
 * super-blocks per warp (one step of mv_part_q). */
static int pick_wpr(int rows, int n_in, int max) {
    const int nsb = (n_in + 255) / 256;
    int w = 1;
    while (w < max && rows * w < 4096 && nsb >= 8 * w) w *= 2;
    return w;
}

/* decode reads Q6_K rows as GT_Q6_KB (SMOLBOT_GPU_Q6B, set at model load) */
static int g_q6b __attribute__((unused)) = 0;

static mv_seg seg_of(const dmat *w, float *y, int blk0) {
    mv_seg s = {w->d, w->rb, g_q6b && w->type == GT_Q6_K ? GT_Q6_KB : w->type, w->n_out, blk0, y};
    return s;
}

/* The job y = W x (MV_STORE) or y += W x (MV_ACC); wpr 0: pick_wpr. */
static mv_job job_single(const dmat *w, const float *x, const int8_t *xq, const float *xd, float *y, int mode, int wpr) {
    mv_job j;
    memset(&j, 0, sizeof j);
    j.nseg = 1, j.n_in = w->n_in, j.mode = mode, j.x = x, j.xq = xq, j.xd = xd;
    j.wpr = wpr ? wpr : pick_wpr(w->n_out, w->n_in, 8);
    j.s[0] = seg_of(w, y, 0);
    return j;
}

/* the Q8_K of n values: int8 values and a float per 256 */
static size_t q8k_bytes(int n) { return (size_t)n + (size_t)n / 64; }

/* the dynamic shared memory of a k_dec job: the Q8_K of x when j.qin */
static size_t dec_smem(const mv_job &j) { return j.qin ? q8k_bytes(j.n_in) : 0; }

/* qin is possible: whole super-blocks that fit the default 48 KiB */
static int dec_qin_ok(int n_in) { return n_in % 256 == 0 && q8k_bytes(n_in) <= 48 * 1024; }

/* Each block of QKV and gate/up can normalize the residual itself (qin
 * with qnw): their weights are K-quants, which read the Q8_K only (the
 * others would read the normalized x in f32, which is then not made) */
static int dec_nin_ok(const dlayer *L, int n_embd) {
    return dec_qin_ok(n_embd) && gq_is_k(L->wq.type) && gq_is_k(L->wk.type) && gq_is_k(L->wv.type) &&
           gq_is_k(L->gate.type) && gq_is_k(L->up.type);
}

static void launch_single(cudaStream_t st, const mv_job &j) {
    const int R = 8 / j.wpr;
    launch(j.unroll == 3 ? k_dec<3> : k_dec<2>, (j.s[0].n_out + R - 1) / R, 256, dec_smem(j), st, j);
}

static void dec_single(cudaStream_t st, const dmat *w, const float *x, const int8_t *xq, const float *xd, float *y,
                       int mode, int wpr) {
    launch_single(st, job_single(w, x, xq, xd, y, mode, wpr));
}

/* y += W x, then the last block writes ny = rmsnorm(y) * nw and its Q8_K
 * (nxq, nxd) for the next product (see mv_job); qin: each block makes the
 * Q8_K of x itself (xq, xd unused; the caller checked dec_qin_ok); wpr:
 * warps per row, 0 for pick_wpr's; unroll: mv_job's. */
static void dec_acc_norm(cudaStream_t st, const dmat *w, const float *x, const int8_t *xq, const float *xd, float *y,
                         const float *nw, float eps, float *ny, int8_t *nxq, float *nxd, unsigned *counter,
                         int early, int qin, int wpr, int unroll) {
    mv_job j = job_single(w, x, xq, xd, y, MV_ACC, wpr);
    j.early = early, j.qin = qin, j.unroll = unroll;
    j.nw = nw, j.eps = eps, j.ny = ny, j.nxq = nxq, j.nxd = nxd, j.counter = counter;
    launch_single(st, j);
}

/* q = rope(Wq x); cache[pos] = rope(Wk x), Wv x (see k_dec). With qnw set
 * (dec_nin_ok), x is the residual and each block normalizes it (eps) for
 * itself; xq, xd are unused. */
static void dec_qkv(cudaStream_t st, const dlayer *L, const float *x, const int8_t *xq, const float *xd, float *q,
                    __half *kc, __half *vc, const int *d_pos, float theta_scale, int rope, int hd, int early,
                    const float *qnw, float eps) {
    mv_job j;
    memset(&j, 0, sizeof j);
    j.early = early, j.qin = qnw != NULL, j.qnw = qnw, j.eps = eps;
    j.nseg = 3, j.n_in = L->wq.n_in, j.mode = MV_QKV, j.x = x, j.xq = xq, j.xd = xd;
    j.wpr = pick_wpr(L->wq.n_out + L->wk.n_out + L->wv.n_out, j.n_in, 4);
    const int R = 8 / j.wpr; /* even, and divides head_dim: pairs stay in a block */
    const int b1 = L->wq.n_out / R, b2 = b1 + L->wk.n_out / R, nb = b2 + L->wv.n_out / R;
    j.s[0] = seg_of(&L->wq, q, 0), j.s[1] = seg_of(&L->wk, NULL, b1), j.s[2] = seg_of(&L->wv, NULL, b2);
    j.kc = kc, j.vc = vc, j.d_pos = d_pos, j.theta_scale = theta_scale, j.rope = rope, j.hd = hd;
    launch(k_dec<2>, nb, 256, dec_smem(j), st, j);
}

/* out = silu(Wgate x) * (Wup x); with oq set (n_ff % 256 == 0), also its
 * Q8_K (oq, od), each super-block made by the last of its blocks to finish
 * (counter: n_ff / 256 zeros, left zero). glu2: a warp per gate/up row
 * pair where one warp per row is the split anyway and oq is NULL. qnw, eps:
 * as in dec_qkv. */
static void dec_glu(cudaStream_t st, const dlayer *L, const float *x, const int8_t *xq, const float *xd, float *out,
                    int8_t *oq, float *od, unsigned *counter, int early, int glu2, const float *qnw, float eps) {
    mv_job j;
    memset(&j, 0, sizeof j);
    j.early = early, j.qin = qnw != NULL, j.qnw = qnw, j.eps = eps;
    j.nseg = 1, j.n_in = L->gate.n_in, j.mode = MV_GLU, j.x = x, j.xq = xq, j.xd = xd;
    j.nxq = oq, j.nxd = od, j.counter = counter;
    j.wpr = pick_wpr(2 * L->gate.n_out, j.n_in, 4);
    j.glu2 = glu2 && j.wpr == 1 && !oq;
    const int R = j.glu2 ? 8 : 4 / j.wpr;
    j.s[0] = seg_of(&L->gate, out, 0), j.s[1] = seg_of(&L->up, NULL, 1 << 30);
    launch(j.glu2 ? j.qin ? k_dec_glu2<true> : k_dec_glu2<false> : k_dec<2>, (L->gate.n_out + R - 1) / R, 256, dec_smem(j), st,
           j);
}

/* rows x n of x (stride ldx) -> g->xq/xd layout (row stride n) */
static void quant(cudaStream_t st, const float *x, int n, int ldx, int rows, int8_t *xq, float *xd) {
    if (n % 256) return; /* only K-quant products read it, and their rows are whole super-blocks */
    dim3 grid((n / 256 + 7) / 8, rows);
    launch(k_quant, grid, 256, 0, st, x, n, ldx, xq, xd);
}

typedef void (*dmma_fn)(const float *, const __half *, const __half *, const int *, int, int, float, int, int, float *,
                        unsigned *, float *, int8_t *, float *);
/* k_attn_dmma for head_dim hd (64 or 128), of DM_WARPS8 warps when w8 */
static dmma_fn dmma_kernel(int hd, int w8) {
    if (hd == 128) return w8 ? k_attn_dmma<128, DM_WARPS8> : k_attn_dmma<128, DM_WARPS>;
    return w8 ? k_attn_dmma<64, DM_WARPS8> : k_attn_dmma<64, DM_WARPS>;
}

/* The dynamic shared memory the attention kernels take for this shape
 * (above the 48 KiB default): k_attn always, k_attn_dec, k_attn_dmma and k_fa where
 * their shapes allow them. Once per model (and per test call). */
static cudaError_t attn_smem_limits(int hd, int group) {
    cudaError_t e = cudaFuncSetAttribute(k_attn, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)attn_smem(hd, ATT_PAIRS));
    if (e == cudaSuccess && attn_dec_ok(hd, group))
        e = cudaFuncSetAttribute(k_attn_dec, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)attn_dec_smem(hd, group));
    for (int w8 = 0; w8 < 2 && e == cudaSuccess && dmma_ok(hd, group); w8++)
        e = cudaFuncSetAttribute(dmma_kernel(hd, w8), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)dmma_smem(hd, w8 ? DM_WARPS8 : DM_WARPS));
    if (e == cudaSuccess && fa_ok(hd, group))
        e = cudaFuncSetAttribute(hd == 128 ? k_fa<128> : k_fa<64>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)fa_smem(hd));
    return e;
}

/* k_gemm16's 128-row tiles take more than the 48 KiB default */
static cudaError_t gemm16_smem_limits(void) {
    return cudaFuncSetAttribute(k_gemm16<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)gemm16_smem(128));
}

/* fa: k_fa for more than one token (the caller checked fa_ok and set its
 * shared memory limit) */
static void launch_attn(cudaStream_t st, const float *q, const __half *kc, const __half *vc, const int *d_pos, int n_tok,
                        int n_head, int n_kv, int hd, int qt, int nsplit, float scale, float *out, float *part, int fa) {
    const int group = n_head / n_kv;
    if (n_tok > 1 && fa) {
        const dim3 grid(n_kv, (n_tok + fa_tokens(group) - 1) / fa_tokens(group));
        if (hd == 128) launch_plain(k_fa<128>, grid, FA_WARPS * 32, fa_smem(hd), st, q, kc, vc, d_pos, n_tok, n_head, n_kv, scale, out);
        else launch_plain(k_fa<64>, grid, FA_WARPS * 32, fa_smem(hd), st, q, kc, vc, d_pos, n_tok, n_head, n_kv, scale, out);
        return;
    }
    if (n_tok == 1) {
        const int pairs = group, nw = pairs < 8 ? pairs : 8;
        dim3 grid(n_kv, nsplit);
        launch(k_attn, grid, nw * 32, attn_smem(hd, pairs), st, q, kc, vc, d_pos, 1, n_head, n_kv, hd, 1, ATT_SPLIT, nsplit,
               scale, out, part);
        launch(k_attn_combine, n_head, hd, nsplit * sizeof(float), st, part, d_pos, hd, ATT_SPLIT, nsplit, out);
    } else {
        const int pairs = qt * group, nw = pairs < 8 ? pairs : 8;
        dim3 grid(n_kv, (n_tok + qt - 1) / qt);
        launch_plain(k_attn, grid, nw * 32, attn_smem(hd, pairs), st, q, kc, vc, d_pos, n_tok, n_head, n_kv, hd, qt, 0, 0,
                     scale, out, part);
    }
}

/* How k_attn_dec runs: `splits` blocks per KV head (part holds that many
 * per head), each at least minc positions (a multiple of 32); early: it
 * lets its successor start at once (gdc_launch, SMOLBOT_GPU_EARLY); mma:
 * k_attn_dmma instead, where dmma_ok (SMOLBOT_GPU_DMMA); pf: k_attn_dmma
 * asks L2 for its K and V before it waits (SMOLBOT_GPU_APF); mw: its merge
 * in fewer round trips (att_merge_head<true>, SMOLBOT_GPU_MW); w8: its
 * blocks of DM_WARPS8 warps (SMOLBOT_GPU_DW8) */
typedef struct att_dec_cfg {
    int splits, minc, early, mma, pf, mw, w8;
} att_dec_cfg;
static const att_dec_cfg ATT_DEC_DEFAULT = {ATT_DEC_SPLITS, ATT_DEC_MIN, 0, 0, 0, 0, 0};

/* One token's attention by k_attn_dec; the Q8_K of its output too when the
 * group's heads are whole super-blocks (xq set), else the caller quantizes.
 * Returns whether it quantized. */
static int launch_attn_dec(cudaStream_t st, const float *q, const __half *kc, const __half *vc, const int *d_pos,
                           int n_head, int n_kv, int hd, float scale, att_dec_cfg sp, float *part, unsigned *counter,
                           float *out, int8_t *xq, float *xd) {
    const int group = n_head / n_kv, fq = xq && (group * hd) % 256 == 0;
    if (sp.mma && dmma_ok(hd, group)) {
        const int w = sp.w8 ? DM_WARPS8 : DM_WARPS;
        launch(dmma_kernel(hd, sp.w8), dim3(n_kv, sp.splits), w * 32, dmma_smem(hd, w), st, q, kc, vc, d_pos, n_head, n_kv,
               scale, sp.minc, sp.early | sp.pf << 1 | sp.mw << 2, part, counter, out, fq ? xq : (int8_t *)NULL, xd);
        return fq;
    }
    launch(k_attn_dec, dim3(n_kv, sp.splits), group * 32, attn_dec_smem(hd, group), st, q, kc, vc, d_pos, n_head, n_kv,
           hd, scale, sp.minc, sp.early, part, counter, out, fq ? xq : (int8_t *)NULL, xd);
    return fq;
}

/* Scratch of the DQ16 path (one per stream that runs products): the
 * dequantized matrix (wcap halves) and the activations in f16 (xcap);
 * from min_tok tokens on. */
typedef struct dq16_buf {
    __half *w, *x;
    size_t wcap, xcap;
    int min_tok;
    int bm; /* k_gemm16's rows per block: 32, 64, 128, or 0 for gemm16's choice (SMOLBOT_GPU_DQBM) */
} dq16_buf;

/* y[N][M] (+)= dq->x[N][K] dq->w[M][K]^T: k_gemm16 with dq->bm-row tiles,
 * or (0) 128-row tiles where they still give a block per SM of 132, else
 * 64 */
static void gemm16(cudaStream_t st, const dq16_buf *dq, int M, int N, int K, float *y, int ldy, int acc) {
    const int bm = dq->bm ? dq->bm : ((M + 127) / 128) * ((N + GM_BN - 1) / GM_BN) >= 132 ? 128 : 64;
    launch_plain(bm == 128 ? k_gemm16<128> : bm == 64 ? k_gemm16<64> : k_gemm16<32>,
                 dim3((M + bm - 1) / bm, (N + GM_BN - 1) / GM_BN), 256, gemm16_smem(bm), st, dq->w, dq->x, M, N, K, y, ldy, acc);
}

/* y = x W^T for n_tok rows. x: f32 rows (ldx); xq/xd: the same rows as
 * Q8_K (k_quant / k_rmsnorm), used with K-quant weights, may be NULL.
 *   - dq set (SMOLBOT_GPU_DQ16) and the matrix fits it: W dequantized to
 *     f16, x rounded to f16 (its Q8_K for K-quant weights), one f16 GEMM
 *     (k_gemm16)
 *   - quantized weights, >= MMA_MIN_TOK tokens: k_mm on tensor cores
 *   - K-quant weights, fewer tokens: k_dec per token (Q8_K dots)
 *   - otherwise k_mv on f32 activations */
static void matmul(cudaStream_t st, const dmat *w, const float *x, int ldx, const int8_t *xq, const float *xd,
                   int n_tok, float *y, int ldy, int acc, int use_mma, const dq16_buf *dq) {
    const int kq = w->type == GT_Q4_K || w->type == GT_Q5_K || w->type == GT_Q6_K;
    if (dq && dq->w && n_tok >= dq->min_tok && gq_is_quant(w->type) && w->n_in % 8 == 0 &&
        (size_t)w->n_out * w->n_in <= dq->wcap && (size_t)n_tok * w->n_in <= dq->xcap) {
        const size_t nw = (size_t)w->n_out * w->n_in, nx = (size_t)n_tok * w->n_in;
        GQ_DISPATCH(w->type, (launch_plain(k_dq16<T>, (unsigned)((nw / 8 + 255) / 256), 256, 0, st, w->d, w->rb, w->n_in,
                                           w->n_out, dq->w)));
        if (kq && xq) launch_plain(k_q2h, (unsigned)((nx / 8 + 255) / 256), 256, 0, st, xq, xd, w->n_in, n_tok, dq->x);
        else launch_plain(k_f2h, (unsigned)((nx / 8 + 255) / 256), 256, 0, st, x, ldx, w->n_in, n_tok, dq->x);
        gemm16(st, dq, w->n_out, n_tok, w->n_in, y, ldy, acc);
        return;
    }
    const int rb = (w->n_out + MM_R - 1) / MM_R;
    const int big = rb * ((n_tok + 127) / 128) >= 264; /* two blocks per SM of 132 with 128-token tiles */
    /* use_mma & 8 (SMOLBOT_GPU_PF16=0 turns it off): the matrices of 2048
     * rows and more on f16 tensor cores (k_mm), which `bench --kernels`
     * times faster on an H200 than k_mmq for them at 512 and 1024 tokens,
     * and beyond for all but the down projection (n_in > n_out); fewer
     * tokens stay on k_mmq's narrower tiles */
    const int f16 = (use_mma & 9) == 9 && w->n_out >= 2048 && n_tok >= 512 && (n_tok <= 1024 || w->n_in <= w->n_out);
    if ((use_mma & 2) && n_tok >= MMA_MIN_TOK && kq && xq && !f16) {
        /* the widest token tile that still gives two blocks per SM */
        const int bn = big ? 128 : rb * ((n_tok + 63) / 64) >= 264 ? 64 : 32;
        const dim3 grid(rb, (n_tok + bn - 1) / bn);
#define MQ(TT, IF, MB) \
    (bn == 128 ? launch_plain(k_mmq<TT, 128, IF, MB>, grid, 256, 0, st, w->d, w->rb, w->n_in, w->n_out, xq, xd, n_tok, y, ldy, acc) \
     : bn == 64 ? launch_plain(k_mmq<TT, 64, IF, MB>, grid, 256, 0, st, w->d, w->rb, w->n_in, w->n_out, xq, xd, n_tok, y, ldy, acc) \
                : launch_plain(k_mmq<TT, 32, IF, MB>, grid, 256, 0, st, w->d, w->rb, w->n_in, w->n_out, xq, xd, n_tok, y, ldy, acc))
#define MQ2(TT, IF) ((use_mma & 16) ? MQ(TT, IF, 2) : MQ(TT, IF, 1))
        const int fi = (use_mma & 4) != 0; /* integer fold (SMOLBOT_GPU_MMQI) */
        if (w->type == GT_Q4_K) fi ? MQ2(GT_Q4_K, 1) : MQ2(GT_Q4_K, 0);
        else if (w->type == GT_Q5_K) fi ? MQ2(GT_Q5_K, 1) : MQ2(GT_Q5_K, 0);
        else fi ? MQ2(GT_Q6_K, 1) : MQ2(GT_Q6_K, 0);
#undef MQ2
#undef MQ
        return;
    }
#ifndef SMOLBOT_GPU_EMU /* k_mm (wmma) is not emulated: other types take k_mv there */
    if ((use_mma & 1) && n_tok >= MMA_MIN_TOK && gq_is_quant(w->type)) {
        const int8_t *q = kq ? xq : NULL;
        if (big) {
            dim3 grid(rb, (n_tok + 127) / 128);
            GQ_DISPATCH(w->type, (launch_plain(k_mm<T, 128>, grid, 256, 0, st, w->d, w->rb, w->n_in, w->n_out, x, ldx, q, xd, n_tok, y, ldy, acc)));
        } else {
            dim3 grid(rb, (n_tok + 63) / 64);
            GQ_DISPATCH(w->type, (launch_plain(k_mm<T, 64>, grid, 256, 0, st, w->d, w->rb, w->n_in, w->n_out, x, ldx, q, xd, n_tok, y, ldy, acc)));
        }
        return;
    }
#endif
    if (kq && xq) {
        for (int t = 0; t < n_tok; t++)
            dec_single(st, w, x + (size_t)t * ldx, xq + (size_t)t * w->n_in, xd + (size_t)t * (w->n_in / 256),
                       y + (size_t)t * ldy, acc ? MV_ACC : MV_STORE, 0);
        return;
    }
    for (int t0 = 0; t0 < n_tok; t0 += MV_NT) {
        const int nt = n_tok - t0 < MV_NT ? n_tok - t0 : MV_NT;
        const int blocks = (w->n_out + MV_ROWS - 1) / MV_ROWS;
        GQ_DISPATCH(w->type, (launch_plain(k_mv<T>, blocks, MV_ROWS * 32, 0, st, w->d, w->rb, w->n_in, w->n_out, x + (size_t)t0 * ldx,
                                                                    ldx, nt, y + (size_t)t0 * ldy, ldy, acc)));
    }
}

#endif
