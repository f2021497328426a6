/* gpu.cu -- the model's CUDA backend, host side: upload, KV caches, the
 * forward pass kernel by kernel, and top-k over the logits on the device.
 *
 * gpu_model_new() copies every weight to the device as it is in the file
 * (quantized; a tied head once) and allocates run state for a chunk of
 * prefill tokens. A forward is src/model/model.c's forward_rows() kernel
 * by kernel: embed; per layer rmsnorm, Wq/Wk/Wv, RoPE + f16 cache store,
 * attention, Wo (+= residual), rmsnorm, gate, up, SwiGLU, down (+=);
 * rmsnorm and the head.
 *
 * Numerics. Inputs of products with K-quant weights are quantized to Q8_K
 * first, as the CPU and llama.cpp do, and the products are integer dot
 * products: the GPU sees the CPU's rounding (on the tiny test model GPU and
 * CPU agree to a few 1e-5 of the logits). Prefill products of
 * DQ16_MIN_TOK tokens and more run as f16 GEMMs over dequantized weights,
 * as llama.cpp's long prompts do: about 2^-11 of relative rounding per
 * weight, far below the quantization itself.
 *
 * Decode (one token) is bound by memory bandwidth and by kernel
 * boundaries, so it runs fused kernels (enqueue_decode, 6 a layer: k_dec's
 * QKV with RoPE and the cache store; k_attn_dmma, which also makes the
 * Q8_K of its output; Wo with the residual add and the next norm; gate/up
 * with SwiGLU; k_quant; down with the next norm), captured once per KV
 * cache as a CUDA graph that reads its token and position from device
 * memory: one launch per token. A change of the NoPE flags recaptures.
 * Prefill runs chunks of at least GPU_BATCH tokens (enqueue_step), K and V
 * beside Q and up beside gate on two side streams.
 *
 * The same text compiles as C++ against emu.h (SMOLBOT_GPU_EMU), so
 * test_gpu_on_emu runs tests/test_gpu.c against this whole backend on any
 * machine. Invariants: every row length is a multiple of 8 (checked at
 * load); activation buffers are cudaMalloc'd (256-byte aligned) with row
 * strides that are multiples of 8 floats, so float4 loads are aligned.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/cuda/launch.cuh"
#include "model/cuda/gpu.h"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t ck_e = (call);                                                                 \
        if (ck_e != cudaSuccess) {                                                                 \
            set_msg(msg, msg_len, "CUDA: %s: %s (%s:%d)", #call, cudaGetErrorString(ck_e), __FILE__, \
                    __LINE__);                                                                     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

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
    int8_t *xq;            /* Q8_K activations of the next product input: [B][max dim] ... */
    float *xd;             /* ... their scales: [B][max dim / 256] */
    unsigned *counter;     /* blocks done, for the fused norms (zero between kernels) */
    unsigned *att_counter; /* [n_kv]: k_attn_dmma's blocks done per KV head (likewise) */
    float *tk_v, *tk_fv;
    int *tk_i, *tk_fi;
    /* prefill: the f16 GEMMs' scratch, per stream; K and V beside Q, up
     * beside gate, on side streams joined by events (a 512-row product
     * alone fills a fraction of a large GPU) */
    dq16_buf dq[3];
    cudaStream_t side[2];
    cudaEvent_t ev_fork, ev_join[2];
    int logit_rows; /* rows of logits: forwards that want every row's run chunks of this many */
    uint8_t nope[256];
    unsigned gen;
    float theta_scale, att_scale;
};

struct gpu_kv {
    gpu_model *g;
    int n_ctx;
    __half *k, *v; /* [n_layer][n_ctx][kvdim] */
    float *part;   /* [n_head][ATT_DEC_SPLITS][hd + 2]: decode attention's partials */
    cudaGraphExec_t exec;
    unsigned gen;
    int graph_failed;
};

/* Prefill chunk: the tensor-core products fill a large GPU only from
 * about 512 tokens on (a 2048-row matrix is 32 tiles of rows), so the
 * device takes at least GPU_BATCH tokens per chunk whatever the CPU's
 * n_batch (docs/performance.md has the figures). */
#define GPU_BATCH 2048
#define LOGIT_ROWS 256 /* all-logits forwards: 128K floats a row */
static int prefill_batch(int n_batch) { return n_batch > GPU_BATCH ? n_batch : GPU_BATCH; }

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
    const int blk = gq_block(m->type);
    if (!blk) { set_msg(msg, msg_len, "%s: tensor type %d has no CUDA kernel", what, m->type); return -1; }
    if (m->n_in % blk || m->n_in % 8 || m->n_in > (1 << 30) || m->n_out > (1 << 30)) {
        set_msg(msg, msg_len, "%s: row of %lld values does not fit the CUDA kernels", what, (long long)m->n_in);
        return -1;
    }
    const size_t rb = kern_row_size(m->type, m->n_in);
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

/* The side streams and the f16 GEMMs' scratch per stream: the largest
 * layer matrix, and a chunk of the widest input. */
static int setup_prefill(gpu_model *g, int B, int E, int F, int qdim, size_t dmax, char *msg, size_t msg_len) {
    const size_t wcap = (size_t)(F > qdim ? F : qdim) * E, xcap = (size_t)B * dmax;
    CK(cudaEventCreateWithFlags(&g->ev_fork, cudaEventDisableTiming));
    for (int i = 0; i < 2; i++) {
        CK(cudaStreamCreateWithFlags(&g->side[i], cudaStreamNonBlocking));
        CK(cudaEventCreateWithFlags(&g->ev_join[i], cudaEventDisableTiming));
    }
    for (int i = 0; i < 3; i++) {
        void *pw, *px;
        if (g_alloc(g, &pw, wcap * sizeof(__half), msg, msg_len) || g_alloc(g, &px, xcap * sizeof(__half), msg, msg_len))
            return -1;
        g->dq[i].w = (__half *)pw, g->dq[i].x = (__half *)px, g->dq[i].wcap = wcap, g->dq[i].xcap = xcap;
    }
    return 0;
fail:
    return -1;
}

extern "C" int gpu_model_new(gpu_model **out, const gpu_model_desc *d, char *msg, size_t msg_len) {
    *out = NULL;
    if (!gpu_available(msg, msg_len)) return -1;
    const int hd = d->head_dim, group = d->n_head_kv > 0 ? d->n_head / d->n_head_kv : 0;
    if (!attn_ok(hd, group) || d->n_embd % 8 || d->n_ff % 8 || d->n_layer > 256) {
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
        if (g_alloc(g, &p, (size_t)(B + 1) * sizeof(int), msg, msg_len)) goto fail_nock;
        g->d_io = (int *)p;
        if (g_alloc(g, &p, TOPK_BLOCKS * TOPK_MAX * sizeof(int), msg, msg_len)) goto fail_nock;
        g->tk_i = (int *)p;
        if (g_alloc(g, &p, TOPK_MAX * sizeof(int), msg, msg_len)) goto fail_nock;
        g->tk_fi = (int *)p;
    }
    CK(smem_limits(hd));
    if (setup_prefill(g, B, E, F, qdim, dmax, msg, msg_len)) goto fail_nock;
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
    kv->g = g, kv->n_ctx = n_ctx;
    CK(cudaMalloc((void **)&kv->k, bytes));
    CK(cudaMalloc((void **)&kv->v, bytes));
    CK(cudaMalloc((void **)&kv->part, (size_t)g->c.n_head * ATT_DEC_SPLITS * (g->c.head_dim + 2) * sizeof(float)));
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

/* One layer's matrix product on stream i (0: the main one, 1, 2: the
 * side streams), with that stream's f16 GEMM scratch */
static void mm_on(gpu_model *g, int i, const dmat *w, const float *x, int ldx, int B, float *y, int ldy, int acc) {
    matmul(i ? g->side[i - 1] : g->st, w, x, ldx, g->xq, g->xd, B, y, ldy, acc, &g->dq[i]);
}

/* Enqueue one chunk of B > 1 tokens (tokens and position already in d_io).
 * head: 0 none, 1 last row into logits[0..n_vocab), 2 every row. */
static void enqueue_step(gpu_model *g, gpu_kv *kv, int B, int head) {
    const gpu_model_desc *c = &g->c;
    const int E = c->n_embd, F = c->n_ff, hd = c->head_dim;
    const int qdim = c->n_head * hd, kvdim = c->n_head_kv * hd;
    cudaStream_t st = g->st;
    const int *d_pos = g->d_io, *d_tok = g->d_io + 1;
    int8_t *xq = g->xq;
    float *xd = g->xd;
    GQ_DISPATCH(g->tok_embd.type, (launch_plain(k_embed<T>, B, 256, 0, st, g->tok_embd.d, g->tok_embd.rb, E, d_tok, g->x)));
    for (int il = 0; il < c->n_layer; il++) {
        const dlayer *L = &g->L[il];
        __half *kc = kv->k + (size_t)il * kv->n_ctx * kvdim, *vc = kv->v + (size_t)il * kv->n_ctx * kvdim;
        launch_plain(k_rmsnorm, B, 256, 0, st, g->x, L->attn_norm, g->xb, E, c->eps, xq, xd);
        fork_sides(g, 2);
        mm_on(g, 1, &L->wk, g->xb, E, B, g->k, kvdim, 0);
        mm_on(g, 2, &L->wv, g->xb, E, B, g->v, kvdim, 0);
        mm_on(g, 0, &L->wq, g->xb, E, B, g->q, qdim, 0);
        join_sides(g, 2);
        launch_plain(k_rope_store, B, 256, 0, st, g->q, g->k, g->v, kc, vc, d_pos, c->n_head, c->n_head_kv, hd, g->theta_scale,
                     !g->nope[il]);
        launch_attn(st, g->q, kc, vc, d_pos, B, c->n_head, c->n_head_kv, hd, g->att_scale, g->att);
        quant(st, g->att, qdim, qdim, B, xq, xd);
        mm_on(g, 0, &L->wo, g->att, qdim, B, g->x, E, 1);
        launch_plain(k_rmsnorm, B, 256, 0, st, g->x, L->ffn_norm, g->xb, E, c->eps, xq, xd);
        fork_sides(g, 1);
        mm_on(g, 1, &L->up, g->xb, E, B, g->hb2, F, 0);
        mm_on(g, 0, &L->gate, g->xb, E, B, g->hb, F, 0);
        join_sides(g, 1);
        if (F % 256 == 0) launch_plain(k_silu_quant, dim3((F / 256 + 7) / 8, B), 256, 0, st, g->hb, g->hb2, F, xq, xd);
        else launch_plain(k_silu_mul, (B * F + 255) / 256, 256, 0, st, g->hb, g->hb2, B * F);
        mm_on(g, 0, &L->down, g->hb, F, B, g->x, E, 1);
    }
    if (head == 1) {
        launch_plain(k_rmsnorm, 1, 256, 0, st, g->x + (size_t)(B - 1) * E, g->out_norm, g->xb, E, c->eps, xq, xd);
        matmul(st, &g->output, g->xb, E, xq, xd, 1, g->logits, c->n_vocab, 0, NULL);
    } else if (head == 2) {
        launch_plain(k_rmsnorm, B, 256, 0, st, g->x, g->out_norm, g->xb, E, c->eps, xq, xd);
        matmul(st, &g->output, g->xb, E, xq, xd, B, g->logits, c->n_vocab, 0, NULL);
    }
}

/* One decode step with the fused kernels (k_dec): 6 kernels per layer.
 * The norms ride on the products that update the residual (dec_acc_norm):
 * Wo's last block computes the ffn norm, down's the next layer's attention
 * norm (the output norm after the last layer). */
static void enqueue_decode(gpu_model *g, gpu_kv *kv) {
    const gpu_model_desc *c = &g->c;
    const int E = c->n_embd, F = c->n_ff, hd = c->head_dim, qdim = c->n_head * hd, kvdim = c->n_head_kv * hd;
    cudaStream_t st = g->st;
    const int *d_pos = g->d_io, *d_tok = g->d_io + 1;
    int8_t *xq = g->xq;
    float *xd = g->xd;
    GQ_DISPATCH(g->tok_embd.type, (launch(k_embed<T>, 1, 256, 0, st, g->tok_embd.d, g->tok_embd.rb, E, d_tok, g->x)));
    launch(k_rmsnorm, 1, 256, 0, st, g->x, g->L[0].attn_norm, g->xb, E, c->eps, xq, xd);
    for (int il = 0; il < c->n_layer; il++) {
        const dlayer *L = &g->L[il];
        const float *next_norm = il + 1 < c->n_layer ? g->L[il + 1].attn_norm : g->out_norm;
        __half *kc = kv->k + (size_t)il * kv->n_ctx * kvdim, *vc = kv->v + (size_t)il * kv->n_ctx * kvdim;
        dec_qkv(st, L, g->xb, xq, xd, g->q, kc, vc, d_pos, g->theta_scale, !g->nope[il], hd);
        if (!launch_attn_dec(st, g->q, kc, vc, d_pos, c->n_head, c->n_head_kv, hd, g->att_scale, kv->part, g->att_counter,
                             g->att, xq, xd))
            quant(st, g->att, qdim, qdim, 1, xq, xd);
        dec_acc_norm(st, &L->wo, g->att, xq, xd, g->x, L->ffn_norm, c->eps, g->xb, xq, xd, g->counter);
        dec_glu(st, L, g->xb, xq, xd, g->hb);
        quant(st, g->hb, F, F, 1, xq, xd);
        dec_acc_norm(st, &L->down, g->hb, xq, xd, g->x, next_norm, c->eps, g->xb, xq, xd, g->counter);
    }
    dec_single(st, &g->output, g->xb, xq, xd, g->logits, MV_STORE);
}

/* The decode step as a graph, captured on first use (and after a change of
 * the NoPE flags). Returns 0 when launched, 1 when the caller should launch
 * the kernels directly (the capture failed), -1 on error. */
static int decode_graph(gpu_model *g, gpu_kv *kv, char *msg, size_t msg_len) {
    if (kv->graph_failed) return 1;
    if (kv->exec && kv->gen != g->gen) {
        cudaGraphExecDestroy(kv->exec);
        kv->exec = NULL;
    }
    if (!kv->exec) {
        cudaGraph_t graph = NULL;
        CK(cudaStreamBeginCapture(g->st, cudaStreamCaptureModeThreadLocal));
        enqueue_decode(g, kv);
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
        if (direct && B == 1) enqueue_decode(g, kv);
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

extern "C" int gpu_sample_topk(gpu_model *g, int k, int32_t *ids, float *vals, char *msg, size_t msg_len) {
    if (k < 1 || k > TOPK_MAX || k > g->c.n_vocab) { set_msg(msg, msg_len, "top-k of %d out of 1..%d", k, TOPK_MAX); return -1; }
    CK(topk(g->st, g->logits, g->c.n_vocab, k, g->tk_v, g->tk_i, g->tk_fv, g->tk_fi));
    CK(cudaMemcpyAsync(ids, g->tk_fi, (size_t)k * sizeof(int), cudaMemcpyDeviceToHost, g->st));
    CK(cudaMemcpyAsync(vals, g->tk_fv, (size_t)k * sizeof(float), cudaMemcpyDeviceToHost, g->st));
    CK(cudaStreamSynchronize(g->st));
    return 0;
fail:
    return -1;
}

