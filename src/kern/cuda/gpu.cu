/* gpu.cu -- the SmolLM3 forward pass on an NVIDIA GPU (issue 12).
 *
 * The story. gpu_model_new() copies every weight to the device as it is in
 * the file (quantized; tied head uploaded once) and allocates run state for
 * n_batch tokens. A forward is the CPU path's forward_rows() kernel by
 * kernel (src/model/model.c, docs/smollm3.md):
 *
 *   embed -> per layer: rmsnorm, Wq/Wk/Wv, rope+store K/V (f16 cache),
 *   attention, Wo (+= residual), rmsnorm, gate, up, silu*mul, down (+=)
 *   -> rmsnorm, tied head.
 *
 * Numerics. Inputs of products with K-quant weights are quantized to Q8_K
 * first (k_quant, or inside the norm), exactly as the CPU and llama.cpp do,
 * and the products are integer dot products: the GPU sees the same rounding
 * as the references (golden logits within the inference issue's
 * tolerances; on the tiny test model decode and prefill agree to the last
 * bit, and so do GPU and CPU over 16 decode steps). The exception is
 * prefill from 512 tokens on, where the wide matrices run on f16 tensor
 * cores over dequantized weights (k_mm, as llama.cpp's cuBLAS path does):
 * about 2^-11 of relative rounding per weight, far below the quantization
 * itself. Other weight types multiply f32 activations.
 *
 * Decode (one token) is bound by memory bandwidth and by the number of
 * kernel boundaries, so it runs its own fused kernels (enqueue_decode):
 *   k_dec      one "job" per product: QKV with RoPE and the f16 cache store
 *              fused in, Wo and down with the residual add and the next
 *              norm (the last block to finish normalizes), gate/up with
 *              SwiGLU; rows split over 1..8 warps; 8 lanes per 256-value
 *              super-block, 32 values per lane, dp4a dots (kq_sb)
 *   k_attn_dec split-K flash-decoding in one kernel: 64 splits per KV head
 *              sized from the depth on the device, the last block of a head
 *              merges them and writes the Q8_K of the output for Wo
 *              (k_attn_dmma, the default where its shapes fit: the same on
              f16 tensor cores, the group's heads as the rows of one tile)
 *   k_dec_glu2 gate/up with SwiGLU, a warp per row pair (twice k_dec's
 *              loads in flight; 80 registers, so not inside k_dec)
 *   k_quant    Q8_K of the SwiGLU output
 * 6 kernels per layer, captured once per KV cache as a CUDA graph that
 * reads its token and position from device memory (d_io): one launch per
 * token, no host round trip per layer. Kernels are launched with
 * programmatic stream serialization (gdc_wait), and each decode kernel
 * lets its successor start at once (gdc_launch), whose blocks ask L2 for
 * their weights before they wait. A change of the NoPE flags
 * (model_set_rope_layer) bumps a generation counter and recaptures. The
 * logits stay on the device; gpu_sample_topk returns the best k.
 *
 * Prefill runs chunks of 2048 tokens (GPU_BATCH; enqueue_step), K and V
 * beside Q and up beside gate on two side streams:
 *   k_dq16 + k_gemm16  products of DQ16_MIN_TOK (256) tokens and more, as
 *             llama.cpp runs long prompts: the matrix dequantized to f16
 *             into scratch, the activations in f16 (from their Q8_K for
 *             K-quant weights), one f16 GEMM (cp.async stages, mma.sync)
 *   k_mmq     K-quant x Q8_K on int8 tensor cores (mma.sync m16n8k32, k16
 *             for Q6_K's 16-value scales): 64 rows x 32/64/128 tokens per
 *             block, weights unpacked to int8 with their sub-block factors,
 *             integer sums per super-block as the CPU does
 *   k_mm      f16 tensor cores (wmma) on dequantized tiles: other quantized
 *             types, and (SMOLBOT_GPU_DQ16=0) the matrices of 2048 rows and
 *             more where it is the faster (see matmul)
 *   k_mv      f32/f16/bf16 weights and small batches
 *   k_fa      flash attention on f16 tensor cores, q and P in two f16 parts
 *
 * Measured on an H200 (3B-shaped Q4_K_M file, smolbot bench; the history
 * is in the commit log): decode 627 tok/s at an empty context (1.20 TB/s
 * of weights), 572 at 2048, 504 at 8192; prefill 20,700 tok/s for 512
 * tokens, 32,100 for 2048 (llama.cpp: 408, 390, 359; 15,300, 16,700).
 * Each decode kernel alone at 8192 (make cuda-profile): gate/up 14.9 us
 * (1.7 TB/s), attention 16.9 (1.0 TB/s of K and V), down 13.2 / 15.4
 * (Q4_K / Q6_K rows, 1.0 / 1.2 TB/s), Wo 7.3, QKV 7.1, k_quant 2.7, the
 * head 84 (2.6 TB/s): the small products and attention are bound by
 * latency, not bandwidth.
 *
 * Switches (=0 turns each off, for comparisons): SMOLBOT_GPU_GRAPH,
 * SMOLBOT_GPU_FUSE (decode kernels), SMOLBOT_GPU_Q8 (Q8_K activations),
 * SMOLBOT_GPU_MMQ, SMOLBOT_GPU_MMA (tensor-core prefill), SMOLBOT_GPU_PDL,
 * SMOLBOT_GPU_DATT (k_attn_dec; off: k_attn + k_attn_combine + k_quant),
 * SMOLBOT_GPU_FA (k_fa; off: k_attn), SMOLBOT_GPU_MMQI (off: k_mmq folds
 * per sub-block), SMOLBOT_GPU_PF16 (off: k_mmq for every K-quant),
 * SMOLBOT_GPU_EARLY (gdc_launch), SMOLBOT_GPU_GLU2 (k_dec_glu2; off: a
 * warp per row). Settings: SMOLBOT_GPU_BATCH (prefill chunk),
 * SMOLBOT_GPU_DSPLITS and SMOLBOT_GPU_DMIN (k_attn_dec's split),
 * SMOLBOT_GPU_OWPR and SMOLBOT_GPU_DWPR (warps per row of Wo and down).
 * Made default after measurement on an H200 (=0 turns each off):
 * SMOLBOT_GPU_DMMA, decode attention on tensor cores (k_attn_dmma; its
 * splits at least ATT_DMMA_MIN positions, so up to that depth one block
 * per KV head and no merge: 560 -> 607 tok/s at depth 0, 412 -> 487 at
 * 8192); SMOLBOT_GPU_Q6B, decode reads a Q6_K super-block as 16
 * contiguous quant bytes per lane in word loads (GT_Q6_KB: 15 loads a
 * lane, not 21; +3%); SMOLBOT_GPU_DQ16, prefill products of
 * SMOLBOT_GPU_DQMIN (256) tokens and more as f16 GEMMs over the matrix
 * dequantized into scratch (14,200 -> 18,300 tok/s at 512 tokens, 17,900
 * -> 29,800 at 2048; SMOLBOT_GPU_DQBM 32, 64 or 128 fixes k_gemm16's rows
 * per block); SMOLBOT_GPU_PAR, prefill's K and V products beside Q and up
 * beside gate on two side streams; SMOLBOT_GPU_SQ, prefill's SwiGLU and
 * its Q8_K in one kernel (k_silu_quant; with PAR: 20,200 and 32,000).
 * Opt-in (=1), measured slower or no faster: SMOLBOT_GPU_GLUQ, the
 * SwiGLU output's Q8_K made by k_dec's last block of each super-block
 * instead of k_quant (478 against 498 tok/s before k_dec_glu2);
 * SMOLBOT_GPU_QIN, down's blocks make the Q8_K of the SwiGLU output
 * themselves (5 kernels per layer instead of 6, but each of down's 512
 * blocks quantizes all 11008 values: 482 against 560 tok/s);
 * SMOLBOT_GPU_MMQ2, k_mmq compiled for two blocks per SM (128 registers
 * instead of ~170; +4% at 2048 tokens alone, nothing beside DQ16);
 * SMOLBOT_GPU_APF, k_attn_dmma asks L2 for its K and V while QKV drains
 * (492 against 504 at 8192); DWPR/OWPR other than the default. Opt-in,
 * not yet measured on a GPU: SMOLBOT_GPU_MW, k_attn_dmma's merge in
 * fewer round trips to L2 (att_merge_head<true>: at 8192 the 64 splits'
 * merge was 10 dependent rounds, now 5; the same sums in the same order);
 * SMOLBOT_GPU_DW8, k_attn_dmma in blocks of eight warps, 32 splits (at
 * 8192 one block per SM, every tile still in flight at once; the merge two
 * rounds: two warps a head, all 32 partials' loads in flight);
 * SMOLBOT_GPU_NIN, QKV's and gate/up's blocks normalize the residual
 * themselves (rms_row into shared memory, the same Q8_K to the last bit)
 * instead of the last block of Wo and down after a fence and a counter:
 * two serial tails fewer per layer, for one round of L2 reads in every
 * block (2048 values, where QIN's blocks quantized 11,008);
 * SMOLBOT_GPU_DU3, down's k_dec<3>: three steps of super-block loads per
 * iteration (down's rows are 43 super-blocks over two warps: two dependent
 * rounds of loads, not three; 63 registers, still four blocks per SM).
 *
 * Files: kernels.cuh holds the device code, launch.cuh how each kernel is
 * launched (grids, decode jobs, products), this file the rest of the host side. All
 * three also compile as plain C++ against emu.h (SMOLBOT_GPU_EMU), which
 * runs CUDA threads as fibers with the PTX fragment layouts of mma.sync
 * and ldmatrix: test_gpu_emu (the kernels) and test_gpu_on_emu (test_gpu.c
 * against this whole file) check the backend's arithmetic on any machine.
 * The emulation does not model timing, memory ordering or races, and has
 * no wmma: k_mm's types take k_mv there.
 *
 * Invariants: every row length is a multiple of 8 (checked at load);
 * activation buffers are cudaMalloc'd (256-byte aligned) with row strides
 * that are multiples of 8 floats, so float4 loads are aligned.
 */
#ifndef SMOLBOT_GPU_EMU /* else the CPU emulation (emu.h, via kernels.cuh) */
#include <cuda_runtime.h>
#endif
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"

static void set_msg(char *msg, size_t len, const char *fmt, ...) {
    if (!msg || !len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t ck_e = (call);                                                                 \
        if (ck_e != cudaSuccess) {                                                                 \
            set_msg(msg, msg_len, "CUDA: %s: %s (%s:%d)", #call, cudaGetErrorString(ck_e), __FILE__, \
                    __LINE__);                                                                     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#include "kernels.cuh"
#include "launch.cuh"

/* ---- host side -------------------------------------------------------- */

struct gpu_model {
    gpu_model_desc c; /* copy; c.layers not kept, c.nope is the model's (read at every forward) */
    dlayer *L;
    dmat tok_embd, output;
    float *out_norm;
    void **allocs;
    int n_allocs, cap_allocs;
    uint64_t bytes;
    cudaStream_t st;
    int *d_io, *h_io; /* [0] = position of the chunk's first token, [1..] tokens */
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *logits;
    int8_t *xq; /* Q8_K activations of the next product input: [B][max dim] */
    unsigned *counter; /* blocks done, for the fused norms (zero between kernels) */
    unsigned *att_counter; /* [n_kv]: k_attn_dec's blocks done per KV head (likewise) */
    unsigned *glu_counter; /* [n_ff / 256]: SwiGLU blocks done per output super-block (likewise) */
    int8_t *xq2;           /* [n_ff]: the SwiGLU output's Q8_K when fused (use_gluq) ... */
    float *xd2;            /* ... and its scales [n_ff / 256] */
    float *xd;  /* ... their scales: [B][max dim / 256] */
    float *tk_v, *tk_fv;
    int *tk_i, *tk_fi;
    int use_mma, use_graph, use_fuse, use_q8, use_datt, use_fa, use_gluq, qt;
    att_dec_cfg datt; /* how k_attn_dec runs (SMOLBOT_GPU_DSPLITS, SMOLBOT_GPU_DMIN, use_early) */
    int use_early; /* decode kernels start their successor early (SMOLBOT_GPU_EARLY) */
    int use_glu2;  /* a warp per gate/up row pair: k_dec_glu2 (SMOLBOT_GPU_GLU2) */
    int use_qin;   /* down quantizes the SwiGLU output itself, no k_quant (SMOLBOT_GPU_QIN) */
    int use_nin;   /* QKV and gate/up normalize the residual themselves (SMOLBOT_GPU_NIN) */
    int use_du3;   /* down's k_dec<3>: three steps of loads per iteration (SMOLBOT_GPU_DU3) */
    int wpr_o, wpr_down; /* warps per row of Wo and down in decode, 0: pick_wpr (SMOLBOT_GPU_OWPR, _DWPR) */
    /* prefill: K and V beside Q, up beside gate, on side streams joined
     * by events (SMOLBOT_GPU_PAR): a 512-row product alone fills a quarter
     * of an H200 at 512 tokens */
    int use_par;
    int use_sq; /* prefill: SwiGLU and its Q8_K in one kernel, k_silu_quant (SMOLBOT_GPU_SQ) */
    dq16_buf dq[3]; /* prefill products as f16 GEMMs, per stream (SMOLBOT_GPU_DQ16, _DQMIN) */
    cudaStream_t side[2];
    cudaEvent_t ev_fork, ev_join[2];
    int logit_rows;       /* rows of logits: forwards that want every row's run chunks of this many */
    unsigned skip; /* SMOLBOT_GPU_SKIP: profiling only */
    uint8_t nope[256];
    unsigned gen;
    float theta_scale, att_scale;
};

struct gpu_kv {
    gpu_model *g;
    int n_ctx, nsplit;
    __half *k, *v; /* [n_layer][n_ctx][kvdim] */
    float *part;   /* [n_head][max(nsplit, ATT_DEC_MAX_SPLITS)][hd + 2] */
    cudaGraphExec_t exec;
    unsigned gen;
    int graph_failed;
};

static int env_off(const char *name) {
    const char *e = getenv(name);
    return e && (!strcmp(e, "0") || !strcmp(e, "off") || !strcmp(e, "no"));
}
static int env_on(const char *name) {
    const char *e = getenv(name);
    return e && (!strcmp(e, "1") || !strcmp(e, "on") || !strcmp(e, "yes"));
}

/* A decode product's warps per row (1, 2, 4 or 8) from the environment,
 * else 0: pick_wpr's choice (for down, 2: 512 blocks of four rows). */
static int env_wpr(const char *name) {
    const char *e = getenv(name);
    const int w = e ? atoi(e) : 0;
    return w == 1 || w == 2 || w == 4 || w == 8 ? w : 0;
}

/* k_attn_dec's split: SMOLBOT_GPU_DSPLITS blocks per KV head (a power of
 * two, 8..ATT_DEC_MAX_SPLITS), SMOLBOT_GPU_DMIN positions per split at
 * least (32, 64, 128 or 256); anything else keeps the default. mma:
 * k_attn_dmma instead (the model: SMOLBOT_GPU_DMMA, on by default), whose default
 * minimum is ATT_DMMA_MIN (a tile per warp) */
static att_dec_cfg att_dec_env(int mma) {
    att_dec_cfg sp = ATT_DEC_DEFAULT;
    const char *e = getenv("SMOLBOT_GPU_DSPLITS"), *m = getenv("SMOLBOT_GPU_DMIN");
    const int n = e ? atoi(e) : 0, mc = m ? atoi(m) : 0;
    sp.mma = mma;
    if (mma) sp.minc = ATT_DMMA_MIN;
    sp.w8 = mma && env_on("SMOLBOT_GPU_DW8"); /* not yet measured on a GPU: opt-in */
    if (sp.w8) sp.splits = ATT_DW8_SPLITS, sp.minc = ATT_DW8_MIN;
    if (n >= 8 && n <= ATT_DEC_MAX_SPLITS && !(n & (n - 1))) sp.splits = n;
    if (mc == 32 || mc == 64 || mc == 128 || mc == 256) sp.minc = mc;
    sp.mw = env_on("SMOLBOT_GPU_MW"); /* not yet measured on a GPU: opt-in */
    return sp;
}

/* Prefill chunk: the tensor-core products fill the GPU with 128-token
 * tiles only from about 512 tokens on (a 2048-row matrix is 32 tiles of
 * rows), so the device takes at least GPU_BATCH tokens per chunk whatever
 * the CPU's n_batch; SMOLBOT_GPU_BATCH (64..8192) sets it. On an H200,
 * 2048 tokens ran at 10,900 tok/s in chunks of 256, 12,500 of 512, 16,100
 * of 1024 and 17,300 of 2048. */
#define GPU_BATCH 2048
#define LOGIT_ROWS 256 /* all-logits forwards: 128K floats a row */
static int prefill_batch(int n_batch) {
    const char *e = getenv("SMOLBOT_GPU_BATCH");
    const int set = e ? atoi(e) : 0;
    if (set >= 64 && set <= 8192) return set;
    return n_batch > GPU_BATCH ? n_batch : GPU_BATCH;
}

extern "C" int gpu_available(char *msg, size_t msg_len) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        set_msg(msg, msg_len, "no CUDA device (%s)", cudaGetErrorString(e));
        return 0;
    }
    if (n < 1) {
        set_msg(msg, msg_len, "no CUDA device");
        return 0;
    }
    return 1;
}

extern "C" void gpu_describe(char *buf, size_t len) {
    cudaDeviceProp p;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) {
        set_msg(buf, len, "unknown CUDA device");
        return;
    }
    set_msg(buf, len, "%s, sm_%d%d, %.0f GiB", p.name, p.major, p.minor, (double)p.totalGlobalMem / (1 << 30));
}

static int g_alloc(gpu_model *g, void **p, size_t bytes, char *msg, size_t msg_len) {
    if (g->n_allocs == g->cap_allocs) {
        int nc = g->cap_allocs ? 2 * g->cap_allocs : 64;
        void **na = (void **)realloc(g->allocs, (size_t)nc * sizeof *na);
        if (!na) { set_msg(msg, msg_len, "out of memory"); return -1; }
        g->allocs = na, g->cap_allocs = nc;
    }
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        set_msg(msg, msg_len, "CUDA: cannot allocate %.1f MiB: %s", (double)bytes / (1 << 20), cudaGetErrorString(e));
        return -1;
    }
    g->allocs[g->n_allocs++] = *p;
    return 0;
}

static int upload(gpu_model *g, const void *host, size_t bytes, void **dev, char *msg, size_t msg_len) {
    if (g_alloc(g, dev, bytes, msg, msg_len)) return -1;
    cudaError_t e = cudaMemcpy(*dev, host, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) { set_msg(msg, msg_len, "CUDA: upload: %s", cudaGetErrorString(e)); return -1; }
    g->bytes += bytes;
    return 0;
}

static int up_mat(gpu_model *g, const gpu_mat *m, dmat *out, const char *what, char *msg, size_t msg_len) {
    const size_t rb = gq_row_bytes(m->type, m->n_in);
    const int blk = gq_block(m->type);
    if (!rb || !blk) { set_msg(msg, msg_len, "%s: tensor type %d has no CUDA kernel", what, m->type); return -1; }
    if (m->n_in % blk || m->n_in % 8 || m->n_in > (1 << 30) || m->n_out > (1 << 30)) {
        set_msg(msg, msg_len, "%s: row of %lld values does not fit the CUDA kernels", what, (long long)m->n_in);
        return -1;
    }
    out->type = m->type, out->n_in = (int)m->n_in, out->n_out = (int)m->n_out, out->rb = rb;
    void *d = NULL;
    if (upload(g, m->data, rb * (size_t)m->n_out, &d, msg, msg_len)) return -1;
    out->d = (const uint8_t *)d;
    return 0;
}

static int up_vec(gpu_model *g, const float *h, int n, float **out, char *msg, size_t msg_len) {
    void *d = NULL;
    if (upload(g, h, (size_t)n * 4, &d, msg, msg_len)) return -1;
    *out = (float *)d;
    return 0;
}

extern "C" void gpu_model_free(gpu_model *g) {
    if (!g) return;
    if (g->st) cudaStreamSynchronize(g->st);
    for (int i = 0; i < 2; i++) {
        if (g->side[i]) cudaStreamSynchronize(g->side[i]), cudaStreamDestroy(g->side[i]);
        if (g->ev_join[i]) cudaEventDestroy(g->ev_join[i]);
    }
    if (g->ev_fork) cudaEventDestroy(g->ev_fork);
    for (int i = 0; i < g->n_allocs; i++) cudaFree(g->allocs[i]);
    if (g->h_io) cudaFreeHost(g->h_io);
    if (g->st) cudaStreamDestroy(g->st);
    free(g->allocs);
    free(g->L);
    free(g);
}

extern "C" uint64_t gpu_model_bytes(const gpu_model *g) { return g ? g->bytes : 0; }
extern "C" int gpu_model_batch(const gpu_model *g) { return g ? g->c.n_batch : 0; }

extern "C" int gpu_model_new(gpu_model **out, const gpu_model_desc *d, char *msg, size_t msg_len) {
    *out = NULL;
    if (!gpu_available(msg, msg_len)) return -1;
    const int hd = d->head_dim, group = d->n_head_kv > 0 ? d->n_head / d->n_head_kv : 0;
    if (hd % 32 || hd > 32 * ATT_DPL || group < 1 || group > ATT_PAIRS || d->n_embd % 8 || d->n_ff % 8 ||
        d->n_layer > 256) {
        set_msg(msg, msg_len, "model shape not supported by the CUDA kernels (head_dim %d, group %d)", hd, group);
        return -1;
    }
    gpu_model *g = (gpu_model *)calloc(1, sizeof *g);
    if (!g) { set_msg(msg, msg_len, "out of memory"); return -1; }
    g->c = *d;
    g->c.layers = NULL;
    const int B = prefill_batch(d->n_batch), E = d->n_embd, F = d->n_ff;
    const int qdim = d->n_head * hd, kvdim = d->n_head_kv * hd;
    const int wide = E > F ? E : F;
    const size_t dmax = (size_t)(wide > qdim ? wide : qdim); /* widest input */
    g->c.n_batch = B;
    g->logit_rows = B < LOGIT_ROWS ? B : LOGIT_ROWS;
    g->L = (dlayer *)calloc((size_t)d->n_layer, sizeof *g->L);
    if (!g->L) { set_msg(msg, msg_len, "out of memory"); goto fail_nock; }
    CK(cudaStreamCreateWithFlags(&g->st, cudaStreamNonBlocking));
    CK(cudaHostAlloc((void **)&g->h_io, (size_t)(B + 1) * sizeof(int), cudaHostAllocDefault));
    for (int il = 0; il < d->n_layer; il++) {
        const gpu_layer_desc *s = &d->layers[il];
        dlayer *t = &g->L[il];
        char what[64];
        snprintf(what, sizeof what, "blk.%d", il);
        if (up_vec(g, s->attn_norm, E, &t->attn_norm, msg, msg_len) || up_vec(g, s->ffn_norm, E, &t->ffn_norm, msg, msg_len) ||
            up_mat(g, &s->wq, &t->wq, what, msg, msg_len) || up_mat(g, &s->wk, &t->wk, what, msg, msg_len) ||
            up_mat(g, &s->wv, &t->wv, what, msg, msg_len) || up_mat(g, &s->wo, &t->wo, what, msg, msg_len) ||
            up_mat(g, &s->gate, &t->gate, what, msg, msg_len) || up_mat(g, &s->up, &t->up, what, msg, msg_len) ||
            up_mat(g, &s->down, &t->down, what, msg, msg_len))
            goto fail_nock;
    }
    if (up_mat(g, &d->tok_embd, &g->tok_embd, "token_embd", msg, msg_len) ||
        up_vec(g, d->out_norm, E, &g->out_norm, msg, msg_len))
        goto fail_nock;
    if (d->output.data == d->tok_embd.data && d->output.type == d->tok_embd.type) g->output = g->tok_embd;
    else if (up_mat(g, &d->output, &g->output, "output", msg, msg_len)) goto fail_nock;
    {
        void *p;
#define A(field, n) if (g_alloc(g, &p, (size_t)(n) * 4, msg, msg_len)) goto fail_nock; g->field = (float *)p;
        A(x, (size_t)B * E) A(xb, (size_t)B * E) A(q, (size_t)B * qdim) A(k, (size_t)B * kvdim) A(v, (size_t)B * kvdim)
        A(att, (size_t)B * qdim) A(hb, (size_t)B * F) A(hb2, (size_t)B * F) A(logits, (size_t)g->logit_rows * d->n_vocab)
        A(tk_v, TOPK_BLOCKS * TOPK_MAX) A(tk_fv, TOPK_MAX)
#undef A
        if (g_alloc(g, &p, (size_t)B * dmax, msg, msg_len)) goto fail_nock;
        g->xq = (int8_t *)p;
        if (g_alloc(g, &p, ((size_t)B * dmax / 256 + 1) * sizeof(float), msg, msg_len)) goto fail_nock;
        g->xd = (float *)p;
        if (g_alloc(g, &p, 64, msg, msg_len)) goto fail_nock;
        g->counter = (unsigned *)p;
        CK(cudaMemset(g->counter, 0, 64));
        if (g_alloc(g, &p, (size_t)d->n_head_kv * sizeof(unsigned), msg, msg_len)) goto fail_nock;
        g->att_counter = (unsigned *)p;
        CK(cudaMemset(g->att_counter, 0, (size_t)d->n_head_kv * sizeof(unsigned)));
        if (g_alloc(g, &p, (size_t)(F / 256 + 1) * sizeof(unsigned), msg, msg_len)) goto fail_nock;
        g->glu_counter = (unsigned *)p;
        CK(cudaMemset(g->glu_counter, 0, (size_t)(F / 256 + 1) * sizeof(unsigned)));
        if (g_alloc(g, &p, (size_t)F, msg, msg_len)) goto fail_nock;
        g->xq2 = (int8_t *)p;
        if (g_alloc(g, &p, (size_t)(F / 256 + 1) * sizeof(float), msg, msg_len)) goto fail_nock;
        g->xd2 = (float *)p;
        if (g_alloc(g, &p, (size_t)(B + 1) * sizeof(int), msg, msg_len)) goto fail_nock;
        g->d_io = (int *)p;
        if (g_alloc(g, &p, TOPK_BLOCKS * TOPK_MAX * sizeof(int), msg, msg_len)) goto fail_nock;
        g->tk_i = (int *)p;
        if (g_alloc(g, &p, TOPK_MAX * sizeof(int), msg, msg_len)) goto fail_nock;
        g->tk_fi = (int *)p;
    }
    g->qt = ATT_PAIRS / group;
    CK(attn_smem_limits(hd, group));
    g->use_mma = (env_off("SMOLBOT_GPU_MMA") ? 0 : 1) | (env_off("SMOLBOT_GPU_MMQ") ? 0 : 2) |
                 (env_off("SMOLBOT_GPU_MMQI") ? 0 : 4) | (env_off("SMOLBOT_GPU_PF16") ? 0 : 8) |
                 (env_on("SMOLBOT_GPU_MMQ2") ? 16 : 0); /* no faster beside DQ16 on an H200: opt-in */
    g->use_graph = !env_off("SMOLBOT_GPU_GRAPH");
    g->use_q8 = !env_off("SMOLBOT_GPU_Q8");
    /* the fused decode kernels multiply K-quants by Q8_K activations only */
    g->use_fuse = !env_off("SMOLBOT_GPU_FUSE") && g->use_q8;
    g->use_datt = !env_off("SMOLBOT_GPU_DATT") && attn_dec_ok(hd, group);
    g->datt = att_dec_env(!env_off("SMOLBOT_GPU_DMMA"));
    g->use_early = !env_off("SMOLBOT_GPU_EARLY");
    g->use_glu2 = !env_off("SMOLBOT_GPU_GLU2");
    g->datt.early = g->use_early;
    g->datt.pf = env_on("SMOLBOT_GPU_APF"); /* measured no faster on an H200 (492 against 504 at 8192): opt-in */
    g->use_fa = !env_off("SMOLBOT_GPU_FA") && fa_ok(hd, group);
    /* measured slower on an H200 (478 against 498 tok/s): opt-in */
    g->use_gluq = env_on("SMOLBOT_GPU_GLUQ") && F % 256 == 0;
    /* measured slower on an H200 (482 against 560 tok/s at depth 0): opt-in */
    g->use_qin = env_on("SMOLBOT_GPU_QIN") && !g->use_gluq && dec_qin_ok(F);
    g->use_nin = env_on("SMOLBOT_GPU_NIN"); /* not yet measured on a GPU: opt-in */
    for (int il = 0; il < d->n_layer; il++) g->use_nin &= dec_nin_ok(&g->L[il], E);
    g->use_du3 = env_on("SMOLBOT_GPU_DU3"); /* not yet measured on a GPU: opt-in */
    g->use_sq = !env_off("SMOLBOT_GPU_SQ") && F % 256 == 0;
    g->use_par = !env_off("SMOLBOT_GPU_PAR");
    if (g->use_par) {
        CK(cudaEventCreateWithFlags(&g->ev_fork, cudaEventDisableTiming));
        for (int i = 0; i < 2; i++) {
            CK(cudaStreamCreateWithFlags(&g->side[i], cudaStreamNonBlocking));
            CK(cudaEventCreateWithFlags(&g->ev_join[i], cudaEventDisableTiming));
        }
    }
    if (!env_off("SMOLBOT_GPU_DQ16")) {
        /* the largest layer matrix, and a chunk of the widest input */
        const size_t wcap = (size_t)(F > qdim ? F : qdim) * E, xcap = (size_t)B * dmax;
        const char *m = getenv("SMOLBOT_GPU_DQMIN"), *tb = getenv("SMOLBOT_GPU_DQBM");
        const int min_tok = m && atoi(m) >= 1 ? atoi(m) : DQ16_MIN_TOK, bm = tb ? atoi(tb) : 0;
        for (int i = 0; i < (g->use_par ? 3 : 1); i++) {
            void *pw, *px;
            if (g_alloc(g, &pw, wcap * sizeof(__half), msg, msg_len) || g_alloc(g, &px, xcap * sizeof(__half), msg, msg_len))
                goto fail_nock;
            g->dq[i].w = (__half *)pw, g->dq[i].x = (__half *)px, g->dq[i].wcap = wcap, g->dq[i].xcap = xcap;
            g->dq[i].min_tok = min_tok, g->dq[i].bm = bm == 32 || bm == 64 || bm == 128 ? bm : 0;
        }
        CK(gemm16_smem_limits());
    }
    g->wpr_o = env_wpr("SMOLBOT_GPU_OWPR");
    g->wpr_down = env_wpr("SMOLBOT_GPU_DWPR");
    g_pdl = !env_off("SMOLBOT_GPU_PDL");
    g_q6b = !env_off("SMOLBOT_GPU_Q6B");
    g->skip = getenv("SMOLBOT_GPU_SKIP") ? (unsigned)strtoul(getenv("SMOLBOT_GPU_SKIP"), NULL, 0) : 0;
    g->theta_scale = powf(d->rope_theta, -2.0f / (float)hd);
    g->att_scale = 1.0f / sqrtf((float)hd);
    memcpy(g->nope, d->nope, (size_t)d->n_layer);
    *out = g;
    return 0;
fail:
fail_nock:
    gpu_model_free(g);
    return -1;
}

extern "C" int gpu_kv_new(gpu_model *g, int n_ctx, gpu_kv **out, char *msg, size_t msg_len) {
    *out = NULL;
    gpu_kv *kv = (gpu_kv *)calloc(1, sizeof *kv);
    if (!kv) { set_msg(msg, msg_len, "out of memory"); return -1; }
    const size_t kvdim = (size_t)g->c.n_head_kv * g->c.head_dim;
    const size_t bytes = (size_t)g->c.n_layer * n_ctx * kvdim * sizeof(__half);
    kv->g = g, kv->n_ctx = n_ctx, kv->nsplit = (n_ctx + ATT_SPLIT - 1) / ATT_SPLIT;
    const int nparts = kv->nsplit > ATT_DEC_MAX_SPLITS ? kv->nsplit : ATT_DEC_MAX_SPLITS;
    CK(cudaMalloc((void **)&kv->k, bytes));
    CK(cudaMalloc((void **)&kv->v, bytes));
    CK(cudaMalloc((void **)&kv->part, (size_t)g->c.n_head * nparts * (g->c.head_dim + 2) * sizeof(float)));
    CK(cudaMemset(kv->k, 0, bytes));
    CK(cudaMemset(kv->v, 0, bytes));
    *out = kv;
    return 0;
fail:
    gpu_kv_free(kv);
    return -1;
}

extern "C" void gpu_kv_free(gpu_kv *kv) {
    if (!kv) return;
    if (kv->g && kv->g->st) cudaStreamSynchronize(kv->g->st);
    if (kv->exec) cudaGraphExecDestroy(kv->exec);
    cudaFree(kv->k);
    cudaFree(kv->v);
    cudaFree(kv->part);
    free(kv);
}

extern "C" int gpu_kv_copy_prefix(gpu_kv *dst, const gpu_kv *src, int n, char *msg, size_t msg_len) {
    const gpu_model *g = src->g;
    const size_t kvdim = (size_t)g->c.n_head_kv * g->c.head_dim, row = kvdim * sizeof(__half);
    if (n > dst->n_ctx || n > src->n_ctx) { set_msg(msg, msg_len, "copy of %d positions does not fit", n); return -1; }
    if (n == 0) return 0;
    CK(cudaMemcpy2DAsync(dst->k, row * dst->n_ctx, src->k, row * src->n_ctx, row * n, g->c.n_layer,
                         cudaMemcpyDeviceToDevice, g->st));
    CK(cudaMemcpy2DAsync(dst->v, row * dst->n_ctx, src->v, row * src->n_ctx, row * n, g->c.n_layer,
                         cudaMemcpyDeviceToDevice, g->st));
    CK(cudaStreamSynchronize(g->st));
    return 0;
fail:
    return -1;
}

extern "C" int gpu_kv_fill_synthetic(gpu_kv *kv, int from, int to, char *msg, size_t msg_len) {
    const gpu_model *g = kv->g;
    if (from < 0 || to > kv->n_ctx || from > to) { set_msg(msg, msg_len, "bad fill range %d..%d", from, to); return -1; }
    if (from == to) return 0;
    launch_plain(k_fill, 1024, 256, 0, g->st, kv->k, kv->v, g->c.n_layer, kv->n_ctx, g->c.n_head_kv * g->c.head_dim, from, to);
    CK(cudaGetLastError());
    CK(cudaStreamSynchronize(g->st));
    return 0;
fail:
    return -1;
}


/* stream i's DQ16 scratch (0: the main stream, 1, 2: the side streams),
 * NULL when SMOLBOT_GPU_DQ16 is off */
static const dq16_buf *dq_of(const gpu_model *g, int i) { return g->dq[i].w ? &g->dq[i] : NULL; }

/* The n side streams start after what the main stream has queued, and the
 * main stream waits for what they queue until join_sides. (Errors show at
 * the forward's cudaGetLastError and synchronization.) */
static void fork_sides(gpu_model *g, int n) {
    cudaEventRecord(g->ev_fork, g->st);
    for (int i = 0; i < n; i++) cudaStreamWaitEvent(g->side[i], g->ev_fork, 0);
}
static void join_sides(gpu_model *g, int n) {
    for (int i = 0; i < n; i++) {
        cudaEventRecord(g->ev_join[i], g->side[i]);
        cudaStreamWaitEvent(g->st, g->ev_join[i], 0);
    }
}

/* Enqueue one chunk of B tokens (tokens/position already in d_io).
 * head: 0 none, 1 last row into logits[0..n_vocab), 2 every row. */
static void enqueue_step(gpu_model *g, gpu_kv *kv, int B, int head) {
    const gpu_model_desc *c = &g->c;
    const int E = c->n_embd, F = c->n_ff, hd = c->head_dim;
    const int qdim = c->n_head * hd, kvdim = c->n_head_kv * hd;
    cudaStream_t st = g->st;
    const int *d_pos = g->d_io, *d_tok = g->d_io + 1;
    int8_t *xq = g->use_q8 ? g->xq : NULL; /* NULL: f32 activations everywhere */
    float *xd = g->xd;
    const int mma = g->use_mma;
    GQ_DISPATCH(g->tok_embd.type, (launch_plain(k_embed<T>, B, 256, 0, st, g->tok_embd.d, g->tok_embd.rb, E, d_tok, g->x)));
    for (int il = 0; il < c->n_layer; il++) {
        const dlayer *L = &g->L[il];
        __half *kc = kv->k + (size_t)il * kv->n_ctx * kvdim, *vc = kv->v + (size_t)il * kv->n_ctx * kvdim;
        launch_plain(k_rmsnorm, B, 256, 0, st, g->x, L->attn_norm, g->xb, E, c->eps, xq, xd);
        const int par = g->use_par && B > 1; /* never in a graph capture (decode) */
        if (par) fork_sides(g, 2);
        matmul(par ? g->side[0] : st, &L->wk, g->xb, E, xq, xd, B, g->k, kvdim, 0, mma, dq_of(g, par ? 1 : 0));
        matmul(par ? g->side[1] : st, &L->wv, g->xb, E, xq, xd, B, g->v, kvdim, 0, mma, dq_of(g, par ? 2 : 0));
        matmul(st, &L->wq, g->xb, E, xq, xd, B, g->q, qdim, 0, mma, dq_of(g, 0));
        if (par) join_sides(g, 2);
        launch_plain(k_rope_store, B, 256, 0, st, g->q, g->k, g->v, kc, vc, d_pos, c->n_head, c->n_head_kv, hd, g->theta_scale,
                                        !g->nope[il]);
        launch_attn(st, g->q, kc, vc, d_pos, B, c->n_head, c->n_head_kv, hd, g->qt, kv->nsplit, g->att_scale, g->att,
                    kv->part, g->use_fa);
        if (xq) quant(st, g->att, qdim, qdim, B, xq, xd);
        matmul(st, &L->wo, g->att, qdim, xq, xd, B, g->x, E, 1, mma, dq_of(g, 0));
        launch_plain(k_rmsnorm, B, 256, 0, st, g->x, L->ffn_norm, g->xb, E, c->eps, xq, xd);
        if (par) fork_sides(g, 1);
        matmul(par ? g->side[0] : st, &L->up, g->xb, E, xq, xd, B, g->hb2, F, 0, mma, dq_of(g, par ? 1 : 0));
        matmul(st, &L->gate, g->xb, E, xq, xd, B, g->hb, F, 0, mma, dq_of(g, 0));
        if (par) join_sides(g, 1);
        if (g->use_sq && xq) launch_plain(k_silu_quant, dim3((F / 256 + 7) / 8, B), 256, 0, st, g->hb, g->hb2, F, xq, xd);
        else {
            launch_plain(k_silu_mul, (B * F + 255) / 256, 256, 0, st, g->hb, g->hb2, B * F);
            if (xq) quant(st, g->hb, F, F, B, xq, xd);
        }
        matmul(st, &L->down, g->hb, F, xq, xd, B, g->x, E, 1, mma, dq_of(g, 0));
    }
    if (head == 1) {
        launch_plain(k_rmsnorm, 1, 256, 0, st, g->x + (size_t)(B - 1) * E, g->out_norm, g->xb, E, c->eps, xq, xd);
        matmul(st, &g->output, g->xb, E, xq, xd, 1, g->logits, c->n_vocab, 0, mma, NULL);
    } else if (head == 2) {
        launch_plain(k_rmsnorm, B, 256, 0, st, g->x, g->out_norm, g->xb, E, c->eps, xq, xd);
        matmul(st, &g->output, g->xb, E, xq, xd, B, g->logits, c->n_vocab, 0, mma, NULL);
    }
}

/* One decode step with the fused kernels (k_dec): 6 kernels per layer.
 * The norms ride on the products that update the residual (dec_acc_norm):
 * Wo's last block computes the ffn norm, down's the next layer's attention
 * norm (the output norm after the last layer) -- or, with use_nin, every
 * block of gate/up and of the next QKV computes its own copy (dec_qin).
 * SMOLBOT_GPU_SKIP (profiling only: the results are garbage) leaves out
 * kernel groups, so that the time each one costs inside the graph can be
 * read off decode speeds: 2 QKV, 4 attention, 8 quant of the attention
 * output, 16 Wo, 64 gate/up, 128 quant of the SwiGLU output, 256 down,
 * 512 head. */
static void enqueue_decode(gpu_model *g, gpu_kv *kv) {
    const gpu_model_desc *c = &g->c;
    const int E = c->n_embd, F = c->n_ff, hd = c->head_dim, qdim = c->n_head * hd, kvdim = c->n_head_kv * hd;
    cudaStream_t st = g->st;
    const int *d_pos = g->d_io, *d_tok = g->d_io + 1;
    int8_t *xq = g->xq; /* use_fuse implies use_q8 */
    float *xd = g->xd;
    const unsigned sk = g->skip;
    GQ_DISPATCH(g->tok_embd.type, (launch(k_embed<T>, 1, 256, 0, st, g->tok_embd.d, g->tok_embd.rb, E, d_tok, g->x)));
    launch(k_rmsnorm, 1, 256, 0, st, g->x, g->L[0].attn_norm, g->xb, E, c->eps, xq, xd);
    for (int il = 0; il < c->n_layer; il++) {
        const dlayer *L = &g->L[il];
        const float *next_norm = il + 1 < c->n_layer ? g->L[il + 1].attn_norm : g->out_norm;
        __half *kc = kv->k + (size_t)il * kv->n_ctx * kvdim, *vc = kv->v + (size_t)il * kv->n_ctx * kvdim;
        /* nin: the norm of the residual in each block of QKV (past layer
         * 0) and gate/up instead of the last block of down and Wo */
        const int nin = g->use_nin && il > 0;
        if (!(sk & 2))
            dec_qkv(st, L, nin ? g->x : g->xb, xq, xd, g->q, kc, vc, d_pos, g->theta_scale, !g->nope[il], hd, g->use_early,
                    nin ? L->attn_norm : NULL, c->eps);
        int quantized = 0;
        if (!(sk & 4) && g->use_datt)
            quantized = launch_attn_dec(st, g->q, kc, vc, d_pos, c->n_head, c->n_head_kv, hd, g->att_scale, g->datt, kv->part,
                                        g->att_counter, g->att, xq, xd);
        else if (!(sk & 4))
            launch_attn(st, g->q, kc, vc, d_pos, 1, c->n_head, c->n_head_kv, hd, g->qt, kv->nsplit, g->att_scale, g->att,
                        kv->part, 0);
        if (!(sk & 8) && !quantized) quant(st, g->att, qdim, qdim, 1, xq, xd);
        if (!(sk & 16))
            dec_acc_norm(st, &L->wo, g->att, xq, xd, g->x, g->use_nin ? NULL : L->ffn_norm, c->eps, g->xb, xq, xd, g->counter,
                         g->use_early, 0, g->wpr_o, 0);
        /* fused, the SwiGLU output's Q8_K goes to its own buffer: blocks
         * still reading xq would see it overwritten */
        int8_t *hq = g->use_gluq ? g->xq2 : xq;
        float *hd_ = g->use_gluq ? g->xd2 : xd;
        if (!(sk & 64))
            dec_glu(st, L, g->use_nin ? g->x : g->xb, xq, xd, g->hb, g->use_gluq ? hq : NULL, hd_, g->glu_counter,
                    g->use_early, g->use_glu2, g->use_nin ? L->ffn_norm : NULL, c->eps);
        if (!(sk & 128) && !g->use_gluq && !g->use_qin) quant(st, g->hb, F, F, 1, xq, xd);
        if (!(sk & 256))
            dec_acc_norm(st, &L->down, g->hb, hq, hd_, g->x, g->use_nin && il + 1 < c->n_layer ? NULL : next_norm, c->eps,
                         g->xb, xq, xd, g->counter, g->use_early, g->use_qin, g->wpr_down, g->use_du3 ? 3 : 2);
    }
    if (!(sk & 512)) dec_single(st, &g->output, g->xb, xq, xd, g->logits, MV_STORE, 0);
}

/* The decode step as a graph, captured on first use (and after a change of
 * the NoPE flags). Returns 0 when launched, 1 when the caller should launch
 * the kernels directly (graphs off or capture failed), -1 on error. */
static int decode_graph(gpu_model *g, gpu_kv *kv, char *msg, size_t msg_len) {
    if (!g->use_graph || kv->graph_failed) return 1;
    if (kv->exec && kv->gen != g->gen) {
        cudaGraphExecDestroy(kv->exec);
        kv->exec = NULL;
    }
    if (!kv->exec) {
        cudaGraph_t graph = NULL;
        CK(cudaStreamBeginCapture(g->st, cudaStreamCaptureModeThreadLocal));
        if (g->use_fuse) enqueue_decode(g, kv);
        else enqueue_step(g, kv, 1, 1);
        if (cudaStreamEndCapture(g->st, &graph) != cudaSuccess || !graph ||
            cudaGraphInstantiate(&kv->exec, graph, 0) != cudaSuccess) {
            if (graph) cudaGraphDestroy(graph);
            (void)cudaGetLastError();
            kv->exec = NULL;
            kv->graph_failed = 1;
            return 1;
        }
        cudaGraphDestroy(graph);
        kv->gen = g->gen;
    }
    CK(cudaGraphLaunch(kv->exec, g->st));
    return 0;
fail:
    return -1;
}

extern "C" int gpu_forward(gpu_model *g, gpu_kv *kv, int pos, const int32_t *tokens, int n, int logits_mode, float *logits,
                           const volatile int *cancel, int *done_out, char *msg, size_t msg_len) {
    const gpu_model_desc *c = &g->c;
    int done = 0;
    if (done_out) *done_out = 0;
    if (n <= 0 || pos < 0 || pos + n > kv->n_ctx) {
        set_msg(msg, msg_len, "%d tokens at %d do not fit a cache of %d", n, pos, kv->n_ctx);
        return -1;
    }
    if (memcmp(g->nope, c->nope, (size_t)c->n_layer)) {
        memcpy(g->nope, c->nope, (size_t)c->n_layer);
        g->gen++;
    }
    while (done < n) {
        if (cancel && *cancel) { set_msg(msg, msg_len, "cancelled"); return -2; }
        const int cap = logits_mode == 2 ? g->logit_rows : c->n_batch;
        const int B = n - done < cap ? n - done : cap;
        const int last = done + B == n;
        const int head = logits_mode == 2 ? 2 : (logits_mode == 1 && last ? 1 : 0);
        g->h_io[0] = pos + done;
        memcpy(g->h_io + 1, tokens + done, (size_t)B * sizeof(int32_t));
        CK(cudaMemcpyAsync(g->d_io, g->h_io, (size_t)(B + 1) * sizeof(int), cudaMemcpyHostToDevice, g->st));
        int direct = 1;
        if (B == 1) {
            direct = decode_graph(g, kv, msg, msg_len);
            if (direct < 0) return -1;
        }
        if (direct && B == 1 && g->use_fuse) enqueue_decode(g, kv);
        else if (direct) enqueue_step(g, kv, B, head);
        CK(cudaGetLastError());
        if (logits && head == 2)
            CK(cudaMemcpyAsync(logits + (size_t)done * c->n_vocab, g->logits, (size_t)B * c->n_vocab * sizeof(float),
                               cudaMemcpyDeviceToHost, g->st));
        else if (logits && head == 1)
            CK(cudaMemcpyAsync(logits, g->logits, (size_t)c->n_vocab * sizeof(float), cudaMemcpyDeviceToHost, g->st));
        CK(cudaStreamSynchronize(g->st));
        done += B;
        if (done_out) *done_out = done;
    }
    return 0;
fail:
    return -1;
}

static int topk_run(cudaStream_t st, const float *d_vals, int n, int k, float *tk_v, int *tk_i, float *tk_fv, int *tk_fi,
                    char *msg, size_t msg_len) {
    if (k < 1 || k > TOPK_MAX || k > n) { set_msg(msg, msg_len, "top-k of %d out of 1..%d", k, TOPK_MAX); return -1; }
    const int chunk = (n + TOPK_BLOCKS - 1) / TOPK_BLOCKS;
    const size_t sm1 = (size_t)chunk * 8, sm2 = (size_t)TOPK_BLOCKS * k * 8;
    if (sm1 > 200 * 1024) { set_msg(msg, msg_len, "top-k over %d values: too many", n); return -1; }
    CK(cudaFuncSetAttribute(k_topk, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)(sm1 > sm2 ? sm1 : sm2)));
    launch_plain(k_topk, TOPK_BLOCKS, 256, sm1, st, d_vals, NULL, n, chunk, k, tk_v, tk_i);
    launch_plain(k_topk, 1, 256, sm2, st, tk_v, tk_i, TOPK_BLOCKS * k, TOPK_BLOCKS * k, k, tk_fv, tk_fi);
    CK(cudaGetLastError());
    return 0;
fail:
    return -1;
}

extern "C" int gpu_sample_topk(gpu_model *g, int k, int32_t *ids, float *vals, char *msg, size_t msg_len) {
    if (topk_run(g->st, g->logits, g->c.n_vocab, k, g->tk_v, g->tk_i, g->tk_fv, g->tk_fi, msg, msg_len)) return -1;
    CK(cudaMemcpyAsync(ids, g->tk_fi, (size_t)k * sizeof(int), cudaMemcpyDeviceToHost, g->st));
    CK(cudaMemcpyAsync(vals, g->tk_fv, (size_t)k * sizeof(float), cudaMemcpyDeviceToHost, g->st));
    CK(cudaStreamSynchronize(g->st));
    return 0;
fail:
    return -1;
}

/* ---- test entry points ------------------------------------------------ */

/* Device scratch for one test call: every pointer is freed by t_free. */
typedef struct tbufs {
    void *p[16];
    int n;
} tbufs;

static void *t_up(tbufs *b, const void *h, size_t bytes) {
    void *d = NULL;
    if (b->n == (int)(sizeof b->p / sizeof b->p[0])) return NULL; /* T_NEED reports it */
    if (cudaMalloc(&d, bytes ? bytes : 16) != cudaSuccess) return NULL;
    b->p[b->n++] = d;
    if (h && cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice) != cudaSuccess) return NULL;
    if (!h) cudaMemset(d, 0, bytes ? bytes : 16);
    return d;
}
static void t_free(tbufs *b) {
    for (int i = 0; i < b->n; i++) cudaFree(b->p[i]);
    b->n = 0;
}
static int t_finish(tbufs *b, void *host, const void *dev, size_t bytes, char *msg, size_t msg_len) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e == cudaSuccess && host) e = cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost);
    t_free(b);
    if (e != cudaSuccess) { set_msg(msg, msg_len, "CUDA: %s", cudaGetErrorString(e)); return -1; }
    return 0;
}
/* gpu_test_timing: after its one checked launch, a test entry launches
 * its kernels g_reps more times between two events (bench --kernels) */
static int g_reps;
static double g_ms;
extern "C" void gpu_test_timing(int reps) { g_reps = reps > 0 ? reps : 0, g_ms = 0.0; }
extern "C" double gpu_test_last_ms(void) { return g_ms; }
#define T_LAUNCH(stmt)                                                        \
    do {                                                                      \
        stmt;                                                                 \
        cudaEvent_t e0_, e1_;                                                 \
        float ms_ = 0.0f;                                                     \
        if (g_reps && cudaEventCreate(&e0_) == cudaSuccess) {                 \
            if (cudaEventCreate(&e1_) == cudaSuccess) {                       \
                cudaEventRecord(e0_, 0);                                      \
                for (int r_ = 0; r_ < g_reps; r_++) { stmt; }                 \
                cudaEventRecord(e1_, 0);                                      \
                cudaEventSynchronize(e1_);                                    \
                cudaEventElapsedTime(&ms_, e0_, e1_);                         \
                g_ms = ms_ / g_reps;                                          \
                cudaEventDestroy(e1_);                                        \
            }                                                                 \
            cudaEventDestroy(e0_);                                            \
        }                                                                     \
    } while (0)
#define T_NEED(ptr)                                                           \
    if (!(ptr)) {                                                             \
        t_free(&b);                                                           \
        set_msg(msg, msg_len, "CUDA: allocation or copy failed");             \
        return -1;                                                            \
    }

extern "C" int gpu_test_matmul(int type, const void *w, int64_t n_out, int64_t n_in, const float *x, int n_tok, float *y,
                               int path, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    const size_t rb = gq_row_bytes(type, n_in);
    if (!rb || n_in % 8 || n_in % gq_block(type)) { set_msg(msg, msg_len, "type %d / n_in %lld unsupported", type, (long long)n_in); return -1; }
    const uint8_t *dw = (const uint8_t *)t_up(&b, w, rb * n_out);
    T_NEED(dw);
    float *dx = (float *)t_up(&b, x, (size_t)n_tok * n_in * 4);
    T_NEED(dx);
    float *dy = (float *)t_up(&b, NULL, (size_t)n_tok * n_out * 4);
    T_NEED(dy);
    dmat m = {dw, type, (int)n_in, (int)n_out, rb};
    if (((path == 1 || (path >= 6 && path <= 8)) && (!gq_is_quant(type) || n_tok < MMA_MIN_TOK)) ||
        (path >= 9 && (!gq_is_quant(type) || n_in % 8)) || path < 0 || path > 10) {
        t_free(&b);
        set_msg(msg, msg_len, "path %d: the tensor-core path needs a quantized type and >= %d tokens", path, MMA_MIN_TOK);
        return -1;
    }
    /* K-quant weights on paths 1..5 read Q8_K activations, as in the model */
    const int kq = type == GT_Q4_K || type == GT_Q5_K || type == GT_Q6_K;
    int8_t *xq = NULL;
    float *xd = NULL;
    if (kq && path >= 1) { /* path 6 too: k_mm converts them to f16 */
        xq = (int8_t *)t_up(&b, NULL, (size_t)n_tok * n_in);
        T_NEED(xq);
        xd = (float *)t_up(&b, NULL, (size_t)n_tok * (n_in / 256) * 4 + 4);
        T_NEED(xd);
        quant(0, dx, (int)n_in, (int)n_in, n_tok, xq, xd);
    }
    if (path >= 2 && path <= 5) { /* k_dec, one token per launch, wpr = 1 << (path - 2) */
        for (int t = 0; t < n_tok; t++)
            dec_single(0, &m, dx + (size_t)t * n_in, xq ? xq + (size_t)t * n_in : NULL, xd ? xd + (size_t)t * (n_in / 256) : NULL,
                       dy + (size_t)t * n_out, MV_STORE, 1 << (path - 2));
    } else if (path >= 9) { /* its own scratch, every token count; 10: the GEMM timed alone */
        dq16_buf dq;
        dq.w = (__half *)t_up(&b, NULL, (size_t)n_out * n_in * 2), dq.x = (__half *)t_up(&b, NULL, (size_t)n_tok * n_in * 2);
        T_NEED(dq.w && dq.x);
        dq.wcap = (size_t)n_out * n_in, dq.xcap = (size_t)n_tok * n_in, dq.min_tok = 1, dq.bm = 0;
        if (gemm16_smem_limits() != cudaSuccess) { t_free(&b); set_msg(msg, msg_len, "CUDA: shared memory for k_gemm16"); return -1; }
        if (path == 9) T_LAUNCH(matmul(0, &m, dx, (int)n_in, xq, xd, n_tok, dy, (int)n_out, 0, 7, &dq));
        else {
            matmul(0, &m, dx, (int)n_in, xq, xd, n_tok, dy, (int)n_out, 0, 7, &dq); /* fills the scratch */
            T_LAUNCH(gemm16(0, &dq, (int)n_out, n_tok, (int)n_in, dy, (int)n_out, 0));
        }
    } else
        T_LAUNCH(matmul(0, &m, dx, (int)n_in, xq, xd, n_tok, dy, (int)n_out, 0,
                        path == 1 ? 3 : path == 6 ? 1 : path == 7 ? 7 : path == 8 ? 7 | 16 : 0, NULL));
    return t_finish(&b, y, dy, (size_t)n_tok * n_out * 4, msg, msg_len);
}

extern "C" int gpu_test_quant(const float *x, int n, int rows, int8_t *q, float *d, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    if (n % 256) { set_msg(msg, msg_len, "n %% 256 != 0"); return -1; }
    float *dx = (float *)t_up(&b, x, (size_t)n * rows * 4);
    int8_t *dq = (int8_t *)t_up(&b, NULL, (size_t)n * rows);
    float *dd = (float *)t_up(&b, NULL, (size_t)(n / 256) * rows * 4);
    T_NEED(dx && dq && dd);
    quant(0, dx, n, n, rows, dq, dd);
    if (cudaDeviceSynchronize() != cudaSuccess || cudaMemcpy(d, dd, (size_t)(n / 256) * rows * 4, cudaMemcpyDeviceToHost) != cudaSuccess) {
        t_free(&b);
        set_msg(msg, msg_len, "CUDA: quant");
        return -1;
    }
    return t_finish(&b, q, dq, (size_t)n * rows, msg, msg_len);
}

extern "C" int gpu_test_dequant(int type, const void *w, int64_t n, float *out, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    const size_t rb = gq_row_bytes(type, n);
    if (!rb || n % 8 || n % gq_block(type)) { set_msg(msg, msg_len, "type %d unsupported", type); return -1; }
    const uint8_t *dw = (const uint8_t *)t_up(&b, w, rb);
    T_NEED(dw);
    float *d = (float *)t_up(&b, NULL, (size_t)n * 4);
    T_NEED(d);
    const int threads = (int)(n / 8);
    GQ_DISPATCH(type, (launch_plain(k_dequant<T>, (threads + 255) / 256, 256, 0, 0, dw, (int)n, d)));
    return t_finish(&b, out, d, (size_t)n * 4, msg, msg_len);
}

extern "C" int gpu_test_rmsnorm(const float *x, const float *w, int n, int rows, float eps, float *out, char *msg,
                                size_t msg_len) {
    tbufs b = {{0}, 0};
    float *dx = (float *)t_up(&b, x, (size_t)n * rows * 4), *dw = (float *)t_up(&b, w, (size_t)n * 4);
    T_NEED(dx && dw);
    float *dout = (float *)t_up(&b, NULL, (size_t)n * rows * 4);
    T_NEED(dout);
    launch_plain(k_rmsnorm, rows, 256, 0, 0, dx, dw, dout, n, eps, NULL, NULL);
    return t_finish(&b, out, dout, (size_t)n * rows * 4, msg, msg_len);
}

extern "C" int gpu_test_silu_mul(const float *g, const float *u, int n, float *out, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    float *dg = (float *)t_up(&b, g, (size_t)n * 4), *du = (float *)t_up(&b, u, (size_t)n * 4);
    T_NEED(dg && du);
    launch_plain(k_silu_mul, (n + 255) / 256, 256, 0, 0, dg, du, n);
    return t_finish(&b, out, dg, (size_t)n * 4, msg, msg_len);
}

extern "C" int gpu_test_rope(float *x, int n_heads, int head_dim, int pos, float theta, char *msg, size_t msg_len) {
    /* k_rope_store on a cache of pos + 1 rows: x plays q, one dummy KV head. */
    tbufs b = {{0}, 0};
    float *dq = (float *)t_up(&b, x, (size_t)n_heads * head_dim * 4);
    float *dk = (float *)t_up(&b, NULL, (size_t)head_dim * 4);
    __half *kc = (__half *)t_up(&b, NULL, (size_t)(pos + 1) * head_dim * 2);
    __half *vc = (__half *)t_up(&b, NULL, (size_t)(pos + 1) * head_dim * 2);
    int *dp = (int *)t_up(&b, &pos, sizeof pos);
    T_NEED(dq && dk && kc && vc && dp);
    launch_plain(k_rope_store, 1, 256, 0, 0, dq, dk, dk, kc, vc, dp, n_heads, 1, head_dim, powf(theta, -2.0f / (float)head_dim), 1);
    return t_finish(&b, x, dq, (size_t)n_heads * head_dim * 4, msg, msg_len);
}

extern "C" int gpu_test_attention(const float *q, const uint16_t *k, const uint16_t *v, int n_head, int n_kv, int hd,
                                  int n_tok, int pos0, int kernel, float *out, int8_t *oq, float *od, char *msg,
                                  size_t msg_len) {
    tbufs b = {{0}, 0};
    const int group = n_head / n_kv, qdim = n_head * hd, kvdim = n_kv * hd, n_pos = pos0 + n_tok;
    if (hd % 32 || hd > 32 * ATT_DPL || group < 1 || group > ATT_PAIRS || ((kernel == GPU_ATT_SPLIT || kernel == GPU_ATT_DEC) && n_tok != 1) ||
        (kernel == GPU_ATT_DEC && !attn_dec_ok(hd, group)) || (kernel == GPU_ATT_FA && !fa_ok(hd, group)) ||
        (kernel == GPU_ATT_DMMA && (n_tok != 1 || !dmma_ok(hd, group))) || kernel < 0 || kernel > GPU_ATT_DMMA) {
        set_msg(msg, msg_len, "attention shape unsupported");
        return -1;
    }
    const int nsplit = (n_pos + ATT_SPLIT - 1) / ATT_SPLIT, qt = ATT_PAIRS / group;
    const int nparts = nsplit > ATT_DEC_MAX_SPLITS ? nsplit : ATT_DEC_MAX_SPLITS;
    const att_dec_cfg sp = att_dec_env(kernel == GPU_ATT_DMMA);
    float *dq = (float *)t_up(&b, q, (size_t)n_tok * qdim * 4);
    __half *kc = (__half *)t_up(&b, k, (size_t)n_pos * kvdim * 2), *vc = (__half *)t_up(&b, v, (size_t)n_pos * kvdim * 2);
    float *dout = (float *)t_up(&b, NULL, (size_t)n_tok * qdim * 4);
    float *part = (float *)t_up(&b, NULL, (size_t)n_head * nparts * (hd + 2) * 4);
    int *dp = (int *)t_up(&b, &pos0, sizeof pos0);
    unsigned *cnt = (unsigned *)t_up(&b, NULL, (size_t)n_kv * sizeof(unsigned));
    int8_t *dxq = (int8_t *)t_up(&b, NULL, (size_t)qdim);
    float *dxd = (float *)t_up(&b, NULL, (size_t)(qdim / 256 + 1) * 4);
    T_NEED(dq && kc && vc && dout && part && dp && cnt && dxq && dxd);
    const float scale = 1.0f / sqrtf((float)hd);
    if (attn_smem_limits(hd, group) != cudaSuccess) {
        t_free(&b);
        set_msg(msg, msg_len, "CUDA: shared memory for attention");
        return -1;
    }
    if (kernel == GPU_ATT_DEC || kernel == GPU_ATT_DMMA) {
        /* twice: the second run finds the counters the first one left (zero) */
        int fq = launch_attn_dec(0, dq, kc, vc, dp, n_head, n_kv, hd, scale, sp, part, cnt, dout, oq ? dxq : NULL, dxd);
        T_LAUNCH(fq = launch_attn_dec(0, dq, kc, vc, dp, n_head, n_kv, hd, scale, sp, part, cnt, dout, oq ? dxq : NULL, dxd));
        if (oq && !fq) quant(0, dout, qdim, qdim, 1, dxq, dxd);
        if (oq && (cudaMemcpy(oq, dxq, (size_t)qdim, cudaMemcpyDeviceToHost) != cudaSuccess ||
                   cudaMemcpy(od, dxd, (size_t)(qdim / 256) * 4, cudaMemcpyDeviceToHost) != cudaSuccess)) {
            t_free(&b);
            set_msg(msg, msg_len, "CUDA: copy");
            return -1;
        }
    } else
        T_LAUNCH(launch_attn(0, dq, kc, vc, dp, n_tok, n_head, n_kv, hd, qt, nsplit, scale, dout, part,
                             kernel == GPU_ATT_FA));
    return t_finish(&b, out, dout, (size_t)n_tok * qdim * 4, msg, msg_len);
}

extern "C" int gpu_test_topk(const float *x, int n, int k, int32_t *ids, float *vals, char *msg, size_t msg_len) {
    tbufs b = {{0}, 0};
    float *dx = (float *)t_up(&b, x, (size_t)n * 4);
    float *tv = (float *)t_up(&b, NULL, TOPK_BLOCKS * TOPK_MAX * 4), *fv = (float *)t_up(&b, NULL, TOPK_MAX * 4);
    int *ti = (int *)t_up(&b, NULL, TOPK_BLOCKS * TOPK_MAX * 4), *fi = (int *)t_up(&b, NULL, TOPK_MAX * 4);
    T_NEED(dx && tv && fv && ti && fi);
    if (topk_run(0, dx, n, k, tv, ti, fv, fi, msg, msg_len)) { t_free(&b); return -1; }
    if (cudaMemcpy(vals, fv, (size_t)k * 4, cudaMemcpyDeviceToHost) != cudaSuccess) { t_free(&b); set_msg(msg, msg_len, "CUDA: copy"); return -1; }
    return t_finish(&b, ids, fi, (size_t)k * 4, msg, msg_len);
}
