/* model.h -- decoder-only transformers of the Llama lineage (SmolLM3,
 * Llama 3.x, Qwen2.5, Qwen3): config, weights, KV cache, forward pass (on
 * the CPU, or on a CUDA GPU: one model, two backends, chosen at load).
 * The families differ in a few switches of one forward pass (model_config:
 * RoPE layout and scaling, per-head q/k norms, q/k/v biases, NoPE layers),
 * read from the file's general.architecture and its keys.
 *
 * A model is a set of typed views into a GGUF mapping (nothing copied,
 * nothing dequantized whole) plus run state allocated once at load. The KV
 * cache is a separate object so that each conversation keeps its own and
 * reuses it across turns; any number of caches can share one model.
 *
 * One entry point runs n tokens at positions pos..pos+n-1 of a cache:
 * n > 1 is prefill (matrix-matrix products, each weight block used for many
 * tokens), n == 1 is decode. Logits come back for the last position, or for
 * every position when asked.
 *
 * Thread safety: a model runs one forward at a time (it owns the scratch
 * buffers and the thread pool); the engine thread is its only caller.
 */
#ifndef MODEL_H
#define MODEL_H

#include <stdint.h>

#include "core/core.h"
#include "gguf/gguf.h"
#include "kern/kern.h"

#define MODEL_MAX_LAYERS 256

typedef struct model_config {
    char arch[32];       /* "smollm3", "llama", "qwen2" or "qwen3" */
    int n_layer;         /* 36 */
    int n_embd;          /* 2048 */
    int n_ff;            /* 11008 */
    int n_head;          /* 16 */
    int n_head_kv;       /* 4 */
    int head_dim;        /* 128 */
    int n_ctx_train;     /* 65536 */
    int n_vocab;         /* 128256 */
    float rope_theta;    /* 5e6 */
    float eps;           /* 1e-6 */
    float rope_freq_scale; /* 1, or 1/factor for linear RoPE scaling */
    int rope_neox;       /* 1: rotate x[i] with x[i + hd/2] (qwen); 0: adjacent pairs */
    int rope_freqs;      /* 1: per-frequency divisors (Llama 3 scaling, rope_freqs.weight) */
    int qk_norm;         /* 1: RMSNorm over each head of q and k before RoPE (qwen3) */
    int qkv_bias;        /* 1: biases added to q, k and v (qwen2) */
    uint8_t nope[MODEL_MAX_LAYERS]; /* 1: layer skips RoPE ((il+1) % 4 == 0 for smollm3) */
} model_config;

typedef struct model_opts {
    int n_threads; /* 0 = all cores */
    int n_batch;   /* tokens per forward chunk; 0 = 256 */
    int gpu;       /* MODEL_GPU_*: run on a CUDA device; 0 = CPU */
} model_opts;

/* off: CPU; auto: the GPU when built with CUDA (make CUDA=1) and a device is
 * present, else the CPU; on: the GPU or fail (CORE_EUNSUP). */
enum { MODEL_GPU_OFF = 0, MODEL_GPU_AUTO = 1, MODEL_GPU_ON = 2 };

/* KV cache element types; MODEL_KV_Q8: Q8_0 values in tiles of 32 positions
 * (kern.h: 8.5 bits a value, half the bytes per token at long contexts; CPU
 * only: on a GPU the cache is f16 whatever is asked) */
enum { MODEL_KV_F16 = 0, MODEL_KV_F32 = 1, MODEL_KV_Q8 = 2 };

typedef struct model model;
typedef struct model_kv model_kv;

/* Read and validate the config and the tensor table of an open GGUF. The
 * gguf must stay open as long as the model lives (weights are views).
 * Errors name the missing tensor, the wrong shape or the bad key. */
int model_load(model **out, const gguf *g, const model_opts *opts, core_err *err);
void model_free(model *m);
const model_config *model_get_config(const model *m);
/* Bytes of weight data one decode step reads (all matrices + one embd row). */
uint64_t model_weight_bytes(const model *m);
int model_threads(const model *m);
/* "cpu", or the CUDA device the forward runs on. */
const char *model_device(const model *m);
/* Tokens per model_forward call that prefill runs best at: n_batch on the
 * CPU, the device's own chunk on a GPU (larger: its tensor-core tiles). */
int model_prefill_chunk(const model *m);
kern_pool *model_pool(model *m);

/* For experiments and tests: make layer il apply RoPE (1) or skip it (0),
 * overriding the NoPE rule. Returns CORE_ERANGE for a bad layer. */
int model_set_rope_layer(model *m, int il, int use_rope);

/* A KV cache for up to n_ctx positions (clamped to the model's context). */
int model_kv_new(model_kv **out, const model *m, int n_ctx, int kv_type, core_err *err);
void model_kv_free(model_kv *kv);
int model_kv_ctx(const model_kv *kv);   /* capacity in positions */
int model_kv_len(const model_kv *kv);   /* positions filled (valid prefix) */
/* Forget positions >= n (rewind for edit/regenerate); n <= len. */
void model_kv_truncate(model_kv *kv, int n);
/* Copy the first n positions of src into dst (same model, dst ctx >= n). */
int model_kv_copy_prefix(model_kv *dst, const model_kv *src, int n, core_err *err);
uint64_t model_kv_bytes(const model_kv *kv);
/* Bytes a cache of n_ctx positions of kv_type would take (before making it). */
uint64_t model_kv_size(const model *m, int n_ctx, int kv_type);
/* For `smolbot bench --depth`: extend the cache to n positions with
 * deterministic synthetic keys and values (attention costs the same
 * whatever the values), so a decode speed at depth n can be measured
 * without prefilling n tokens. */
int model_kv_fill_synthetic(model_kv *kv, int n, core_err *err);

/* Run tokens[0..n) at positions kv_len(kv).. and append them to the cache.
 * logits: n_vocab floats for the last token, or n * n_vocab when
 * all_logits (row t for tokens[t]); may be NULL to skip the output head.
 * cancel (may be NULL) is polled between chunks: when it reads nonzero the
 * call stops and returns CORE_ECANCEL with the cache holding the tokens
 * processed so far. Returns CORE_EFULL if the tokens do not fit. */
int model_forward(model *m, model_kv *kv, const int32_t *tokens, int n, float *logits, int all_logits,
                  const volatile int *cancel, core_err *err);

/* One decode step of token tok that returns only the k (1..64) largest
 * logits, in descending order (ties: the lower id first): greedy and top-k
 * sampling without n_vocab floats per token (on the GPU the logits never
 * leave the device). */
int model_decode_topk(model *m, model_kv *kv, int32_t tok, int k, int32_t *ids, float *vals, core_err *err);

/* Batched decode: one new token for each of n_seq different caches, in one
 * pass (each weight is read once for all of them). logits: n_seq * n_vocab
 * (row r for kvs[r]), may be NULL. n_seq <= the model's n_batch. */
int model_decode_batch(model *m, model_kv *const *kvs, const int32_t *tokens, int n_seq, float *logits,
                       core_err *err);

/* A mixed step: n_seq different caches in one pass, sequence s appending
 * tokens[s][0..n_tok[s]) to kvs[s] -- decode rows of running sequences
 * beside a prefill chunk of another, so the chunk and the decode tokens
 * share one read of the weights. logits: n_seq * n_vocab (row s for the
 * last token of sequence s), may be NULL. At most model_step_rows(m) tokens
 * in all. A backend without mixed steps runs the leading one-token
 * sequences as model_decode_batch and the others one by one. */
int model_forward_seqs(model *m, model_kv *const *kvs, const int32_t *const *tokens, const int *n_tok, int n_seq,
                       float *logits, core_err *err);
/* The most tokens one model_forward_seqs call takes. */
int model_step_rows(const model *m);

#endif
