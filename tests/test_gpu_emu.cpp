/* test_gpu_emu.cpp -- the CUDA kernels' own code on the CPU (issue 12).
 *
 * kernels.cuh and launch.cuh compiled against src/kern/cuda/emu.h: each
 * kernel runs with the grid, block and shared memory the model uses
 * (launch.cuh), its warps' mma.sync / ldmatrix / shuffles emulated with
 * the PTX ISA's fragment layouts, and its results are held to the same
 * double-precision references and tolerances as tests/test_gpu.c holds the
 * GPU to. So every machine -- CI included -- checks the kernels'
 * arithmetic and indexing; test_gpu checks them again, and their speed,
 * where a GPU is.
 *
 * Covered: decode attention (split-K + combine, k_attn_dec and
 * k_attn_dmma with their merge and Q8_K output), prefill attention (k_attn and k_fa on tensor
 * cores), the int8 tensor-core prefill product k_mmq (float and integer
 * fold, every token tile), the f16 GEMM over a dequantized matrix
 * (k_gemm16, SMOLBOT_GPU_DQ16), the fused decode product k_dec for SwiGLU
 * (with its Q8_K output) and for the residual (with the norm after it, and
 * the Q8_K of its input made inside: SMOLBOT_GPU_QIN). Not covered: k_mm (wmma has no emulation).
 * Sizes are small: every CUDA thread is an OS thread here.
 */
#include "t.h"
#include "t_gpu.h"

#include "kern/cuda/launch.cuh"

/* ---- attention ---- */

static att_dec_cfg g_datt = ATT_DEC_DEFAULT; /* how emu_attention runs k_attn_dec */

/* tg_attention_fn on the emulation, launched as gpu.cu launches them:
 * k_attn_dec twice (the second run starts from the counters the first
 * left, which must be zero again), its Q8_K fused exactly when the group's
 * heads are whole super-blocks (else quantized after, as in the model) */
static int emu_attention(const float *q, const kern_f16 *k, const kern_f16 *v, int n_head, int n_kv, int hd, int n_tok,
                         int pos0, int kernel, float *out, int8_t *oq, float *od, char *msg, size_t msg_len) {
    const int qdim = n_head * hd, n_pos = pos0 + n_tok, group = n_head / n_kv;
    const int nsplit = (n_pos + ATT_SPLIT - 1) / ATT_SPLIT;
    std::vector<float> part((size_t)n_head * (nsplit > ATT_DEC_MAX_SPLITS ? nsplit : ATT_DEC_MAX_SPLITS) * (hd + 2));
    std::vector<unsigned> counter((size_t)n_kv, 0);
    const __half *kc = (const __half *)k, *vc = (const __half *)v;
    const float scale = 1.0f / sqrtf((float)hd);
    if (kernel == GPU_ATT_DEC || kernel == GPU_ATT_DMMA) {
        att_dec_cfg sp = g_datt;
        if (kernel == GPU_ATT_DMMA && !sp.mma) sp.mma = 1, sp.minc = ATT_DMMA_MIN;
        int quantized = 0;
        for (int rep = 0; rep < 2; rep++)
            quantized = launch_attn_dec(0, q, kc, vc, &pos0, n_head, n_kv, hd, scale, sp, part.data(),
                                        counter.data(), out, oq, od);
        for (int h = 0; h < n_kv; h++) CHECK_EQ_INT(counter[(size_t)h], 0);
        CHECK_EQ_INT(quantized, oq && (group * hd) % 256 == 0);
        if (oq && !quantized) quant(0, out, qdim, qdim, 1, oq, od);
    } else
        launch_attn(0, q, kc, vc, &pos0, n_tok, n_head, n_kv, hd, ATT_PAIRS / group, nsplit, scale, out, part.data(),
                    kernel == GPU_ATT_FA);
    (void)msg, (void)msg_len;
    return 0;
}

static void check_attention(int n_head, int n_kv, int hd, int n_tok, int pos0, int kernel) {
    tg_check_attention(emu_attention, n_head, n_kv, hd, n_tok, pos0, kernel);
}

static void test_attention_split(void) {
    check_attention(16, 4, 128, 1, 0, GPU_ATT_SPLIT);
    check_attention(16, 4, 128, 1, 129, GPU_ATT_SPLIT);
    check_attention(4, 1, 64, 1, 70, GPU_ATT_SPLIT);
}

/* one split and several; cut mid-tile; every split in use (2048 and up:
 * ATT_DEC_SPLITS of at least ATT_DEC_MIN positions); the tiny model's
 * shape; a group of one (no fused Q8_K); a group of 8 with head_dim 256 */
static void test_attention_dec(void) {
    const int dpos[] = {0, 1, 31, 64, 65, 100, 1000, 4100};
    for (size_t i = 0; i < CORE_ARRAY_LEN(dpos); i++) check_attention(16, 4, 128, 1, dpos[i], GPU_ATT_DEC);
    check_attention(4, 1, 64, 1, 700, GPU_ATT_DEC);
    check_attention(16, 16, 64, 1, 333, GPU_ATT_DEC);
    check_attention(16, 2, 256, 1, 300, GPU_ATT_DEC);
}

/* kernel with each of the n splits in sps: the 3B shape at four depths,
 * and the shape (n_head, n_kv, hd) at 777 */
static void check_splits(const att_dec_cfg *sps, size_t n, int kernel, int n_head, int n_kv, int hd) {
    const int dpos[] = {0, 40, 1000, 8191};
    for (size_t s = 0; s < n; s++) {
        g_datt = sps[s];
        for (size_t i = 0; i < CORE_ARRAY_LEN(dpos); i++) check_attention(16, 4, 128, 1, dpos[i], kernel);
        check_attention(n_head, n_kv, hd, 1, 777, kernel);
    }
    g_datt = ATT_DEC_DEFAULT;
}

/* the other splits SMOLBOT_GPU_DSPLITS/DMIN allow: 256 splits of 32 (the
 * merge's eight-split batches whole and cut), 128 (with the early launch,
 * a no-op here), 8 splits of 64 (long chunks) */
static void test_attention_dec_splits(void) {
    const att_dec_cfg sps[] = {{256, 32, 0, 0, 0, 0, 0}, {128, 32, 1, 0, 0, 0, 0}, {8, 64, 0, 0, 0, 0, 0}};
    check_splits(sps, CORE_ARRAY_LEN(sps), GPU_ATT_DEC, 16, 2, 256);
}

/* k_attn_dmma with its default split (tg_dmma_cases) */
static void test_attention_dmma(void) { tg_dmma_cases(emu_attention, 0); }

/* k_attn_dmma's other splits: 256 of 32 (a tile per split, three warps
 * idle), 8 of 256 (several tiles per warp), 32 of 64 with the early launch;
 * the merge in fewer round trips (mw) with the default split, 256 splits
 * (every lane's eight (m, l) loads in use) and 8 (one partial batch cut);
 * blocks of eight warps (w8) with their default split (two warps a head
 * in the merge), 256 splits of 32 (seven warps idle) and 8 of 512 (two
 * tiles a warp) -- also for a group of 8 (a warp a head) */
static void test_attention_dmma_splits(void) {
    const att_dec_cfg sps[] = {{256, 32, 0, 1, 0, 0, 0}, {8, 256, 0, 1, 0, 0, 0}, {32, 64, 1, 1, 0, 0, 0},
                               {64, 128, 0, 1, 0, 1, 0}, {256, 32, 0, 1, 0, 1, 0}, {8, 64, 0, 1, 1, 1, 0}};
    check_splits(sps, CORE_ARRAY_LEN(sps), GPU_ATT_DMMA, 8, 1, 64);
    const att_dec_cfg w8[] = {{ATT_DW8_SPLITS, ATT_DW8_MIN, 0, 1, 0, 0, 1}, {256, 32, 0, 1, 0, 1, 1}, {8, 512, 1, 1, 0, 0, 1}};
    check_splits(w8, CORE_ARRAY_LEN(w8), GPU_ATT_DMMA, 16, 2, 128);
}

static void test_attention_prefill(void) {
    check_attention(8, 2, 64, 20, 0, GPU_ATT_PREFILL);
    check_attention(16, 4, 128, 40, 100, GPU_ATT_PREFILL);
}

/* token tiles of 16 (group 4), 32 (group 2), 64 (group 1) cut by n_tok;
 * key tiles crossing the diagonal; two tokens; five key tiles */
static void test_attention_fa(void) {
    check_attention(8, 2, 64, 20, 0, GPU_ATT_FA);
    check_attention(16, 4, 128, 40, 100, GPU_ATT_FA);
    check_attention(4, 4, 64, 70, 5, GPU_ATT_FA);
    check_attention(4, 1, 64, 33, 0, GPU_ATT_FA);
    check_attention(16, 8, 128, 40, 200, GPU_ATT_FA);
    check_attention(16, 4, 128, 2, 70, GPU_ATT_FA);
    check_attention(4, 1, 128, 300, 0, GPU_ATT_FA);
}

/* ---- products ---- */

static const int kq_types[] = {KERN_Q4_K, KERN_Q5_K, KERN_Q6_K};

/* rows of x as the kernels take Q8_K activations (k_quant's layout):
 * values xq [n_tok][n_in], scales xd [n_tok][n_in / 256] */
static void q8k_rows(const float *x, int n_tok, int n_in, int8_t *xq, float *xd) {
    std::vector<kern_block_q8_K> b((size_t)n_in / 256);
    for (int t = 0; t < n_tok; t++) {
        kern_ref_traits(KERN_Q8_K)->from_float(x + (size_t)t * n_in, b.data(), n_in);
        for (int i = 0; i < n_in / 256; i++) {
            memcpy(xq + (size_t)t * n_in + 256 * i, b[(size_t)i].qs, 256);
            xd[(size_t)t * (n_in / 256) + i] = b[(size_t)i].d;
        }
    }
}

template <int T, int BN, int IF>
static void run_mmq(const void *w, int n_out, int n_in, const int8_t *xq, const float *xd, int n_tok, float *y) {
    const dim3 grid((unsigned)((n_out + MM_R - 1) / MM_R), (unsigned)((n_tok + BN - 1) / BN));
    launch_plain(k_mmq<T, BN, IF>, grid, 256, 0, 0, (const uint8_t *)w, kern_row_size(T, n_in), n_in, n_out, xq, xd,
                 n_tok, y, n_out, 0);
}

template <int T, int BN, int IF> static void check_mmq_one(int n_out, int n_in, int n_tok) {
    void *w = random_rows(T, n_in, n_out);
    std::vector<float> x((size_t)n_tok * n_in), y((size_t)n_tok * n_out, NAN), xd((size_t)n_tok * (n_in / 256));
    std::vector<int8_t> xq((size_t)n_tok * n_in);
    for (float &v : x) v = frand(-1, 1);
    q8k_rows(x.data(), n_tok, n_in, xq.data(), xd.data());
    run_mmq<T, BN, IF>(w, n_out, n_in, xq.data(), xd.data(), n_tok, y.data());
    tg_q8k_round_trip(x.data(), n_tok, n_in);
    const double e = tg_matmul_err(T, w, n_out, n_in, x.data(), n_tok, y.data());
    CHECK_MSG(e <= 1e-5, "k_mmq<%s, %d, fold %s> %d x %d, %d tokens: relative error %.3g", kern_ref_traits(T)->name, BN,
              IF ? "int" : "float", n_out, n_in, n_tok, e);
    free(w);
}

template <int T> static void check_mmq_type(void) {
    /* partial row and token tiles; several super-blocks */
    check_mmq_one<T, 32, 0>(67, 512, 37);
    check_mmq_one<T, 32, 1>(67, 512, 37);
    check_mmq_one<T, 64, 0>(70, 768, 65);
    check_mmq_one<T, 64, 1>(70, 768, 65);
    check_mmq_one<T, 128, 0>(64, 512, 130);
    check_mmq_one<T, 128, 1>(64, 512, 130);
}

static void test_mmq(void) {
    check_mmq_type<KERN_Q4_K>();
    check_mmq_type<KERN_Q5_K>();
    check_mmq_type<KERN_Q6_K>();
}

/* The DQ16 path (k_dq16, k_f2h, k_gemm16) as matmul runs it: both tile
 * heights, rows and tokens cut mid-tile, several K steps through the
 * stages; the result accumulated too. f16 weights and activations: about
 * 2^-11 relative per term, as k_mm. */
static void check_gemm16(int type, int n_out, int n_in, int n_tok, int bm) {
    void *w = random_rows(type, n_in, n_out);
    std::vector<float> x((size_t)n_tok * n_in), y((size_t)n_tok * n_out, NAN), y0((size_t)n_tok * n_out);
    std::vector<__half> hw((size_t)n_out * n_in), hx((size_t)n_tok * n_in);
    for (float &v : x) v = frand(-1, 1);
    for (float &v : y0) v = frand(-1, 1);
    const dmat W = {(const uint8_t *)w, type, n_in, n_out, kern_row_size(type, n_in)};
    dq16_buf dq;
    dq.w = hw.data(), dq.x = hx.data(), dq.wcap = hw.size(), dq.xcap = hx.size(), dq.min_tok = 1, dq.bm = bm;
    matmul(0, &W, x.data(), n_in, NULL, NULL, n_tok, y.data(), n_out, 0, 7, &dq);
    double e = tg_matmul_err(type, w, n_out, n_in, x.data(), n_tok, y.data());
    CHECK_MSG(e <= 3e-3, "k_gemm16 %s %d x %d, %d tokens: relative error %.3g", kern_ref_traits(type)->name, n_out, n_in, n_tok, e);
    /* y += W x: the same products on top of y0 */
    std::vector<float> ya = y0;
    matmul(0, &W, x.data(), n_in, NULL, NULL, n_tok, ya.data(), n_out, 1, 7, &dq);
    double worst = 0;
    for (size_t i = 0; i < ya.size(); i++) worst = fmax(worst, fabs((double)ya[i] - y0[i] - y[i]) / (fabs((double)y[i]) + 1.0));
    CHECK_MSG(worst < 1e-6, "k_gemm16 accumulate: off by %.3g", worst);
    free(w);
}

/* k_gemm16 alone on f16 matrices whose K (72) ends inside a step, which no
 * quantized row length does: against the same products in double */
static void check_gemm16_raw(int M, int N, int K) {
    std::vector<__half> w((size_t)M * K), x((size_t)N * K);
    for (__half &v : w) v = __float2half_rn(frand(-1, 1));
    for (__half &v : x) v = __float2half_rn(frand(-1, 1));
    std::vector<float> y((size_t)N * M, NAN);
    launch_plain(k_gemm16<64>, dim3((M + 63) / 64, (N + GM_BN - 1) / GM_BN), 256, gemm16_smem(64), 0, w.data(), x.data(), M, N,
                 K, y.data(), M, 0);
    double worst = 0;
    for (int t = 0; t < N; t++)
        for (int r = 0; r < M; r++) {
            double ref = 0;
            for (int k = 0; k < K; k++) ref += (double)__half2float(w[(size_t)r * K + k]) * __half2float(x[(size_t)t * K + k]);
            worst = fmax(worst, fabs(ref - y[(size_t)t * M + r]));
        }
    CHECK_MSG(worst < 1e-4, "k_gemm16 %d x %d x %d: max diff %.3g", M, N, K, worst);
}

static void test_gemm16(void) {
    check_gemm16(KERN_Q4_K, 200, 512, 37, 0);   /* 64-row tiles, one token tile cut */
    check_gemm16(KERN_Q6_K, 136, 768, 130, 0);  /* 24 K steps through 3 stages; two token tiles */
    check_gemm16(KERN_Q8_0, 70, 96, 5, 0);
    check_gemm16(KERN_Q5_K, 4224, 256, 129, 0); /* 128-row tiles: 33 x 2 blocks */
    check_gemm16(KERN_Q4_K, 200, 512, 37, 32);  /* 32-row tiles (SMOLBOT_GPU_DQBM) */
    check_gemm16(KERN_Q4_K, 200, 256, 130, 128);
    check_gemm16_raw(70, 20, 72);
}

/* k_dec's SwiGLU job: out = silu(gate x) * (up x) on Q8_K activations,
 * and with oq its Q8_K, each super-block made by its last block */
static void check_glu(int type, int n_ff, int n_in, int fused, int glu2) {
    void *wg = random_rows(type, n_in, n_ff), *wu = random_rows(type, n_in, n_ff);
    const size_t rb = kern_row_size(type, n_in);
    dlayer L;
    memset(&L, 0, sizeof L);
    L.gate = {(const uint8_t *)wg, type, n_in, n_ff, rb};
    L.up = {(const uint8_t *)wu, type, n_in, n_ff, rb};
    std::vector<float> x((size_t)n_in), xd((size_t)n_in / 256), out((size_t)n_ff, NAN), od((size_t)n_ff / 256, NAN);
    std::vector<int8_t> xq((size_t)n_in), oq((size_t)n_ff);
    std::vector<unsigned> counter((size_t)n_ff / 256, 0);
    for (float &v : x) v = frand(-1, 1);
    q8k_rows(x.data(), 1, n_in, xq.data(), xd.data());
    /* early as in the decode graph: nothing to see on the emulation, but the
     * blocks must still find their rows */
    dec_glu(0, &L, x.data(), xq.data(), xd.data(), out.data(), fused ? oq.data() : NULL, od.data(), counter.data(), 1, glu2,
            NULL, 0.0f);
    /* the reference: the two products in double, then silu(g) * u */
    tg_q8k_round_trip(x.data(), 1, n_in);
    std::vector<float> wf((size_t)n_in);
    double worst = 0;
    for (int r = 0; r < n_ff; r++) {
        double gu[2], mag[2]; /* the products and their sums of |w x| */
        for (int m = 0; m < 2; m++) {
            kern_ref_traits(type)->dequant_row((const char *)(m ? wu : wg) + (size_t)r * rb, wf.data(), n_in);
            double sum = 0, a = 0;
            for (int i = 0; i < n_in; i++) sum += (double)wf[(size_t)i] * x[(size_t)i], a += fabs((double)wf[(size_t)i] * x[(size_t)i]);
            gu[m] = sum, mag[m] = a;
        }
        const double sg = 1.0 / (1.0 + exp(-gu[0])), ref = gu[0] * sg * gu[1];
        /* relative to what rounding in either product can move: silu' <= 1.1 */
        const double scale = 1.1 * mag[0] * fabs(gu[1]) + fabs(gu[0] * sg) * mag[1] + 1e-9;
        worst = fmax(worst, fabs(ref - out[(size_t)r]) / scale);
    }
    CHECK_MSG(worst < 1e-5, "SwiGLU %s %d x %d: relative error %.3g", kern_ref_traits(type)->name, n_ff, n_in, worst);
    if (fused) {
        const int bad = tg_q8k_mismatches(out.data(), n_ff, oq.data(), od.data());
        CHECK_MSG(bad == 0, "SwiGLU Q8_K: %d of %d blocks differ from kern_ref_quantize_q8_K", bad, n_ff / 256);
        for (size_t i = 0; i < counter.size(); i++) CHECK_EQ_INT(counter[i], 0);
    }
    free(wg), free(wu);
}

static void test_dec_glu(void) {
    g_q6b = 1; /* Q6_K read as GT_Q6_KB first (SMOLBOT_GPU_Q6B) */
    check_glu(KERN_Q6_K, 768, 512, 0, 0);
    check_glu(KERN_Q6_K, 2056, 512, 0, 1);
    g_q6b = 0;
    for (size_t i = 0; i < CORE_ARRAY_LEN(kq_types); i++) {
        check_glu(kq_types[i], 768, 512, 0, 0);
        check_glu(kq_types[i], 768, 512, 1, 0);
        /* a warp per row pair: 4096 rows of gate and up take one warp each;
         * its tail block half full; the loop's single-step tail (7 super-blocks) */
        check_glu(kq_types[i], 2056, 512, 0, 1);
        check_glu(kq_types[i], 2048, 1792, 0, 1);
    }
}

/* SMOLBOT_GPU_NIN: gate/up blocks that normalize the residual y themselves
 * (qnw) compute what they compute from the Q8_K that the last block of the
 * residual's product made (dec_acc_norm's tail), to the last bit: rms_row
 * one value octet per thread (n 2048) and strided (other n) */
static void check_nin(int type, int n_embd, int n_ff, int glu2) {
    const int n_in = 256;
    void *w = random_rows(type, n_in, n_embd), *wg = random_rows(type, n_embd, n_ff), *wu = random_rows(type, n_embd, n_ff);
    const dmat W = {(const uint8_t *)w, type, n_in, n_embd, kern_row_size(type, n_in)};
    dlayer L;
    memset(&L, 0, sizeof L);
    L.gate = {(const uint8_t *)wg, type, n_embd, n_ff, kern_row_size(type, n_embd)};
    L.up = {(const uint8_t *)wu, type, n_embd, n_ff, kern_row_size(type, n_embd)};
    std::vector<float> x((size_t)n_in), xd((size_t)n_in / 256), y((size_t)n_embd), nw((size_t)n_embd), ny((size_t)n_embd);
    std::vector<float> nd((size_t)n_embd / 256), od((size_t)n_ff / 256), out[2];
    std::vector<int8_t> xq((size_t)n_in), nq((size_t)n_embd);
    std::vector<unsigned> counter((size_t)n_ff / 256 + 1, 0);
    /* a small product into y (the random rows share a positive bias), and
     * norm weights that keep gate and up near 1: silu saturates nowhere */
    for (float &v : x) v = frand(-0.05f, 0.05f);
    for (float &v : y) v = frand(-3, 3);
    for (float &v : nw) v = frand(0.005f, 0.015f);
    q8k_rows(x.data(), 1, n_in, xq.data(), xd.data());
    dec_acc_norm(0, &W, x.data(), xq.data(), xd.data(), y.data(), nw.data(), 1e-6f, ny.data(), nq.data(), nd.data(),
                 counter.data(), 1, 0, 0, 2);
    for (int nin = 0; nin < 2; nin++) {
        out[nin].assign((size_t)n_ff, NAN);
        dec_glu(0, &L, nin ? y.data() : NULL, nin ? NULL : nq.data(), nin ? NULL : nd.data(), out[nin].data(), NULL, od.data(),
                counter.data(), 1, glu2, nin ? nw.data() : NULL, 1e-6f);
    }
    CHECK_MSG(!memcmp(out[0].data(), out[1].data(), 4 * (size_t)n_ff), "%s %d x %d: the blocks' own norm differs from the tail's",
              kern_ref_traits(type)->name, n_ff, n_embd);
    free(w), free(wg), free(wu);
}

static void test_dec_nin(void) {
    check_nin(KERN_Q4_K, 2048, 768, 0);
    check_nin(KERN_Q6_K, 2048, 2056, 1);
    check_nin(KERN_Q5_K, 512, 2056, 1);
    check_nin(KERN_Q4_K, 768, 600, 0);
}

/* k_dec's residual job: y += W x on Q8_K activations, then the last block
 * writes rmsnorm(y) * nw and its Q8_K; with qin each block quantizes x
 * itself (no k_quant before it) -- the same values to the last bit;
 * unroll: mv_job's (k_dec<3>, or k_dec<2>) */
static void check_acc(int type, int n_out, int n_in, int wpr, int unroll = 2) {
    void *w = random_rows(type, n_in, n_out);
    const size_t rb = kern_row_size(type, n_in);
    const dmat W = {(const uint8_t *)w, type, n_in, n_out, rb};
    std::vector<float> x((size_t)n_in), xd((size_t)n_in / 256), y0((size_t)n_out), nw((size_t)n_out);
    std::vector<int8_t> xq((size_t)n_in);
    for (float &v : x) v = frand(-1, 1);
    for (float &v : y0) v = frand(-1, 1);
    for (float &v : nw) v = frand(0.5, 1.5);
    q8k_rows(x.data(), 1, n_in, xq.data(), xd.data());
    std::vector<float> y[2], ny[2], nd[2];
    std::vector<int8_t> nq[2];
    for (int qin = 0; qin < 2; qin++) {
        y[qin] = y0, ny[qin].assign((size_t)n_out, NAN), nd[qin].assign((size_t)n_out / 256, NAN), nq[qin].assign((size_t)n_out, 0);
        unsigned counter = 0;
        dec_acc_norm(0, &W, x.data(), qin ? NULL : xq.data(), qin ? NULL : xd.data(), y[qin].data(), nw.data(), 1e-6f,
                     ny[qin].data(), nq[qin].data(), nd[qin].data(), &counter, 1, qin, wpr, unroll);
        CHECK_EQ_INT(counter, 0);
    }
    CHECK_MSG(!memcmp(y[0].data(), y[1].data(), 4 * (size_t)n_out) && !memcmp(ny[0].data(), ny[1].data(), 4 * (size_t)n_out) &&
                  !memcmp(nq[0].data(), nq[1].data(), (size_t)n_out) && !memcmp(nd[0].data(), nd[1].data(), 4 * (size_t)n_out / 256),
              "%s %d x %d: qin differs from k_quant's activations", kern_ref_traits(type)->name, n_out, n_in);
    /* y against the reference product in double, the norm against y */
    tg_q8k_round_trip(x.data(), 1, n_in);
    std::vector<float> wf((size_t)n_in);
    double worst = 0, ss = 0;
    for (int r = 0; r < n_out; r++) {
        kern_ref_traits(type)->dequant_row((const char *)w + (size_t)r * rb, wf.data(), n_in);
        double sum = 0, mag = 0;
        for (int i = 0; i < n_in; i++) sum += (double)wf[(size_t)i] * x[(size_t)i], mag += fabs((double)wf[(size_t)i] * x[(size_t)i]);
        worst = fmax(worst, fabs(y0[(size_t)r] + sum - y[0][(size_t)r]) / (mag + 1.0));
        ss += (double)y[0][(size_t)r] * y[0][(size_t)r];
    }
    CHECK_MSG(worst < 1e-5, "%s %d x %d, %d warps a row, unroll %d: y += W x relative error %.3g", kern_ref_traits(type)->name,
              n_out, n_in, wpr, unroll, worst);
    const double sc = 1.0 / sqrt(ss / n_out + 1e-6);
    double wn = 0;
    for (int r = 0; r < n_out; r++) wn = fmax(wn, fabs(y[0][(size_t)r] * sc * nw[(size_t)r] - ny[0][(size_t)r]));
    CHECK_MSG(wn < 1e-4, "%s %d: rmsnorm of y off by %.3g", kern_ref_traits(type)->name, n_out, wn);
    const int bad = tg_q8k_mismatches(ny[0].data(), n_out, nq[0].data(), nd[0].data());
    CHECK_MSG(bad == 0, "norm's Q8_K: %d of %d blocks differ from kern_ref_quantize_q8_K", bad, n_out / 256);
    free(w);
}

/* the norm's two paths (2048 values: one octet per thread; 768); rows split
 * over pick_wpr's warps, and over 1, 4 and 8 (SMOLBOT_GPU_OWPR/DWPR);
 * three steps per iteration (SMOLBOT_GPU_DU3): rows of 20 super-blocks
 * (a warp a row: an iteration, then two steps), 27 (two warps: an
 * iteration, then one step) and 11 (a tail only) */
static void test_dec_acc(void) {
    for (size_t i = 0; i < CORE_ARRAY_LEN(kq_types); i++) {
        check_acc(kq_types[i], 2048, 2816, 0);
        check_acc(kq_types[i], 768, 512, 0);
    }
    check_acc(KERN_Q6_K, 2048, 2816, 1);
    check_acc(KERN_Q4_K, 2048, 2816, 4);
    check_acc(KERN_Q6_K, 768, 2816, 8);
    check_acc(KERN_Q4_K, 768, 5120, 1, 3);
    check_acc(KERN_Q6_K, 2048, 2816, 0, 3);
    g_q6b = 1; /* rows of 11 super-blocks: every other one 2-byte aligned */
    check_acc(KERN_Q6_K, 2048, 2816, 0);
    check_acc(KERN_Q6_K, 768, 2816, 8);
    check_acc(KERN_Q6_K, 768, 6912, 2, 3);
    g_q6b = 0;
}

/* k_silu_quant against k_silu_mul then k_quant (the model's two kernels):
 * the same values and Q8_K to the last bit, over rows of super-blocks that
 * a block's 8 warps divide and do not */
static void test_silu_quant(void) {
    const int n = 256 * 11, rows = 3;
    std::vector<float> g((size_t)n * rows), u((size_t)n * rows), xd[2];
    std::vector<int8_t> xq[2];
    for (float &v : g) v = frand(-6, 6);
    for (float &v : u) v = frand(-3, 3);
    std::vector<float> h[2] = {g, g};
    for (int k = 0; k < 2; k++) xq[k].assign((size_t)n * rows, 0), xd[k].assign((size_t)rows * (n / 256), NAN);
    launch_plain(k_silu_mul, (rows * n + 255) / 256, 256, 0, 0, h[0].data(), u.data(), rows * n);
    quant(0, h[0].data(), n, n, rows, xq[0].data(), xd[0].data());
    launch_plain(k_silu_quant, dim3((n / 256 + 7) / 8, rows), 256, 0, 0, h[1].data(), u.data(), n, xq[1].data(), xd[1].data());
    CHECK(!memcmp(h[0].data(), h[1].data(), 4 * h[0].size()));
    CHECK(!memcmp(xq[0].data(), xq[1].data(), xq[0].size()));
    CHECK(!memcmp(xd[0].data(), xd[1].data(), 4 * xd[0].size()));
    CHECK_EQ_INT(tg_q8k_mismatches(h[1].data(), n, xq[1].data(), xd[1].data()), 0);
}

int main(void) {
    kern_init("scalar");
    T_RUN(test_attention_split);
    T_RUN(test_attention_dec);
    T_RUN(test_attention_dec_splits);
    T_RUN(test_attention_dmma);
    T_RUN(test_attention_dmma_splits);
    T_RUN(test_attention_prefill);
    T_RUN(test_attention_fa);
    T_RUN(test_mmq);
    T_RUN(test_gemm16);
    T_RUN(test_dec_glu);
    T_RUN(test_dec_nin);
    T_RUN(test_dec_acc);
    T_RUN(test_silu_quant);
    return t_done();
}
