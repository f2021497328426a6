/* test_gpu_emu.cpp -- the CUDA kernels' own code on the CPU.
 *
 * src/model/cuda's kernels and launch.cuh compiled against emu.h: each
 * kernel runs with the grid, block and shared memory the model uses
 * (launch.cuh), its warps' mma.sync / ldmatrix / shuffles emulated with
 * the PTX ISA's fragment layouts, and its results are held to the same
 * double-precision references and tolerances as tests/test_gpu.c holds the
 * GPU to. So every machine -- CI included -- checks the kernels'
 * arithmetic and indexing; test_gpu checks them again where a GPU is.
 *
 * Covered: decode attention (k_attn_dmma, its merge and Q8_K output),
 * prefill attention (k_fa), the int8 tensor-core product k_mmq (every
 * token tile), the f16 GEMM over a dequantized matrix (k_gemm16), the
 * fused decode product k_dec for SwiGLU and for the residual (with the
 * norm after it), k_silu_quant.
 * Sizes are small: every CUDA thread is a fiber here.
 */
#include "t.h"
#include "t_gpu.h"

#include "model/cuda/launch.cuh"

/* ---- attention ---- */

/* tg_attention_fn on the emulation, launched as gpu.cu launches them:
 * k_attn_dmma twice (the second run starts from the counters the first
 * left, which must be zero again), its Q8_K fused exactly when the group's
 * heads are whole super-blocks (else quantized after, as in the model) */
static int emu_attention(const float *q, const kern_f16 *k, const kern_f16 *v, int n_head, int n_kv, int hd, int n_tok,
                         int pos0, float *out, int8_t *oq, float *od, char *msg, size_t msg_len) {
    const int qdim = n_head * hd, group = n_head / n_kv;
    std::vector<float> part((size_t)n_head * ATT_DEC_SPLITS * (hd + 2));
    std::vector<unsigned> counter((size_t)n_kv, 0);
    const __half *kc = (const __half *)k, *vc = (const __half *)v;
    const float scale = 1.0f / sqrtf((float)hd);
    (void)msg, (void)msg_len;
    if (n_tok > 1) {
        launch_attn(0, q, kc, vc, &pos0, n_tok, n_head, n_kv, hd, scale, out);
        return 0;
    }
    int quantized = 0;
    for (int rep = 0; rep < 2; rep++)
        quantized = launch_attn_dec(0, q, kc, vc, &pos0, n_head, n_kv, hd, scale, part.data(), counter.data(), out, oq, od);
    for (int h = 0; h < n_kv; h++) CHECK_EQ_INT(counter[(size_t)h], 0);
    CHECK_EQ_INT(quantized, oq && (group * hd) % 256 == 0);
    if (oq && !quantized) quant(0, out, qdim, qdim, 1, oq, od);
    return 0;
}

static void test_attention_dmma(void) { tg_dmma_cases(emu_attention, 0); }
static void test_attention_fa(void) { tg_fa_cases(emu_attention); }

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

template <int T, int BN>
static void run_mmq(const void *w, int n_out, int n_in, const int8_t *xq, const float *xd, int n_tok, float *y) {
    const dim3 grid((unsigned)((n_out + MM_R - 1) / MM_R), (unsigned)((n_tok + BN - 1) / BN));
    launch_plain(k_mmq<T, BN>, grid, 256, 0, 0, (const uint8_t *)w, kern_row_size(T, n_in), n_in, n_out, xq, xd,
                 n_tok, y, n_out, 0);
}

template <int T, int BN> static void check_mmq_one(int n_out, int n_in, int n_tok) {
    void *w = random_rows(T, n_in, n_out);
    std::vector<float> x((size_t)n_tok * n_in), y((size_t)n_tok * n_out, NAN), xd((size_t)n_tok * (n_in / 256));
    std::vector<int8_t> xq((size_t)n_tok * n_in);
    for (float &v : x) v = frand(-1, 1);
    q8k_rows(x.data(), n_tok, n_in, xq.data(), xd.data());
    run_mmq<T, BN>(w, n_out, n_in, xq.data(), xd.data(), n_tok, y.data());
    tg_q8k_round_trip(x.data(), n_tok, n_in);
    const double e = tg_matmul_err(T, w, n_out, n_in, x.data(), n_tok, y.data());
    CHECK_MSG(e <= 1e-5, "k_mmq<%s, %d> %d x %d, %d tokens: relative error %.3g", kern_ref_traits(T)->name, BN, n_out,
              n_in, n_tok, e);
    free(w);
}

template <int T> static void check_mmq_type(void) {
    /* partial row and token tiles; several super-blocks */
    check_mmq_one<T, 32>(67, 512, 37);
    check_mmq_one<T, 64>(70, 768, 65);
    check_mmq_one<T, 128>(64, 512, 130);
}

static void test_mmq(void) {
    check_mmq_type<KERN_Q4_K>();
    check_mmq_type<KERN_Q5_K>();
    check_mmq_type<KERN_Q6_K>();
}

/* The DQ16 path (k_dq16, k_f2h, k_gemm16) as matmul runs it: both tile
 * heights, rows and tokens cut mid-tile, several K steps through the
 * stages; the result accumulated too. f16 weights and activations: about
 * 2^-11 relative per term. */
static void check_gemm16(int type, int n_out, int n_in, int n_tok) {
    void *w = random_rows(type, n_in, n_out);
    std::vector<float> x((size_t)n_tok * n_in), y((size_t)n_tok * n_out, NAN), y0((size_t)n_tok * n_out);
    std::vector<__half> hw((size_t)n_out * n_in), hx((size_t)n_tok * n_in);
    for (float &v : x) v = frand(-1, 1);
    for (float &v : y0) v = frand(-1, 1);
    const dmat W = {(const uint8_t *)w, type, n_in, n_out, kern_row_size(type, n_in)};
    dq16_buf dq;
    dq.w = hw.data(), dq.x = hx.data(), dq.wcap = hw.size(), dq.xcap = hx.size();
    matmul_dq16(0, &W, x.data(), n_in, NULL, NULL, n_tok, y.data(), n_out, 0, &dq);
    double e = tg_matmul_err(type, w, n_out, n_in, x.data(), n_tok, y.data());
    CHECK_MSG(e <= 3e-3, "k_gemm16 %s %d x %d, %d tokens: relative error %.3g", kern_ref_traits(type)->name, n_out, n_in, n_tok, e);
    /* y += W x: the same products on top of y0 */
    std::vector<float> ya = y0;
    matmul_dq16(0, &W, x.data(), n_in, NULL, NULL, n_tok, ya.data(), n_out, 1, &dq);
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
    check_gemm16(KERN_Q4_K, 200, 512, 37);   /* 64-row tiles, one token tile cut */
    check_gemm16(KERN_Q6_K, 136, 768, 130);  /* 24 K steps through 3 stages; two token tiles */
    check_gemm16(KERN_Q8_0, 70, 96, 5);
    check_gemm16(KERN_Q5_K, 4224, 256, 129); /* 128-row tiles: 33 x 2 blocks */
    check_gemm16_raw(70, 20, 72);
}

/* dec_glu: out = silu(gate x) * (up x) on Q8_K activations (k_dec, or
 * k_dec_glu2 where a warp takes a row pair) */
static void check_glu(int type, int n_ff, int n_in) {
    void *wg = random_rows(type, n_in, n_ff), *wu = random_rows(type, n_in, n_ff);
    const size_t rb = kern_row_size(type, n_in);
    dlayer L;
    memset(&L, 0, sizeof L);
    L.gate = {(const uint8_t *)wg, type, n_in, n_ff, rb};
    L.up = {(const uint8_t *)wu, type, n_in, n_ff, rb};
    std::vector<float> x((size_t)n_in), xd((size_t)n_in / 256), out((size_t)n_ff, NAN);
    std::vector<int8_t> xq((size_t)n_in);
    for (float &v : x) v = frand(-1, 1);
    q8k_rows(x.data(), 1, n_in, xq.data(), xd.data());
    dec_glu(0, &L, x.data(), xq.data(), xd.data(), out.data());
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
    free(wg), free(wu);
}

/* k_dec: two warps a row; k_dec_glu2: 4096 rows of gate and up take one
 * warp each, its tail block half full; the loop's single-step tail (7
 * super-blocks) */
static void test_dec_glu(void) {
    for (size_t i = 0; i < CORE_ARRAY_LEN(kq_types); i++) {
        check_glu(kq_types[i], 768, 512);
        check_glu(kq_types[i], 2056, 512);
        check_glu(kq_types[i], 2048, 1792);
    }
}

/* k_dec's residual job: y += W x on Q8_K activations, then the last block
 * writes rmsnorm(y) * nw and its Q8_K */
static void check_acc(int type, int n_out, int n_in) {
    void *w = random_rows(type, n_in, n_out);
    const size_t rb = kern_row_size(type, n_in);
    const dmat W = {(const uint8_t *)w, type, n_in, n_out, rb};
    std::vector<float> x((size_t)n_in), xd((size_t)n_in / 256), y0((size_t)n_out), nw((size_t)n_out);
    std::vector<int8_t> xq((size_t)n_in);
    for (float &v : x) v = frand(-1, 1);
    for (float &v : y0) v = frand(-1, 1);
    for (float &v : nw) v = frand(0.5, 1.5);
    q8k_rows(x.data(), 1, n_in, xq.data(), xd.data());
    std::vector<float> y[1] = {y0}, ny[1], nd[1];
    std::vector<int8_t> nq[1];
    ny[0].assign((size_t)n_out, NAN), nd[0].assign((size_t)n_out / 256, NAN), nq[0].assign((size_t)n_out, 0);
    unsigned counter = 0;
    dec_acc_norm(0, &W, x.data(), xq.data(), xd.data(), y[0].data(), nw.data(), 1e-6f, ny[0].data(), nq[0].data(),
                 nd[0].data(), &counter);
    CHECK_EQ_INT(counter, 0);
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
    CHECK_MSG(worst < 1e-5, "%s %d x %d: y += W x relative error %.3g", kern_ref_traits(type)->name, n_out, n_in, worst);
    const double sc = 1.0 / sqrt(ss / n_out + 1e-6);
    double wn = 0;
    for (int r = 0; r < n_out; r++) wn = fmax(wn, fabs(y[0][(size_t)r] * sc * nw[(size_t)r] - ny[0][(size_t)r]));
    CHECK_MSG(wn < 1e-4, "%s %d: rmsnorm of y off by %.3g", kern_ref_traits(type)->name, n_out, wn);
    const int bad = tg_q8k_mismatches(ny[0].data(), n_out, nq[0].data(), nd[0].data());
    CHECK_MSG(bad == 0, "norm's Q8_K: %d of %d blocks differ from kern_ref_quantize_q8_K", bad, n_out / 256);
    free(w);
}

/* the norm's two paths (2048 values: one octet per thread; 768, 256);
 * rows over 1 (2816: 11 super-blocks, every other Q6_K one 2-byte
 * aligned), 2, 4 and 8 warps (pick_wpr) */
static void test_dec_acc(void) {
    for (size_t i = 0; i < CORE_ARRAY_LEN(kq_types); i++) {
        check_acc(kq_types[i], 2048, 2816);
        check_acc(kq_types[i], 768, 512);
        check_acc(kq_types[i], 768, 5120);
        check_acc(kq_types[i], 256, 8192);
        check_acc(kq_types[i], 256, 16384);
    }
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
    T_RUN(test_attention_dmma);
    T_RUN(test_attention_fa);
    T_RUN(test_mmq);
    T_RUN(test_gemm16);
    T_RUN(test_dec_glu);
    T_RUN(test_dec_acc);
    T_RUN(test_silu_quant);
    return t_done();
}
