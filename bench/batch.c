/* batch.c -- `make bench`'s batched-step benchmark: what one step costs
 * with 1, 2, 4 and 8 sequences decoding together, and with a prefill chunk
 * mixed in (build/bench-batch MODEL [THREADS] [DEPTH]).
 *
 * Each step reads every weight once whatever the batch, so on a memory
 * bound CPU a step of B rows should cost little more than one of 1 row:
 * the table gives ms per step, aggregate tok/s, the weight bytes read per
 * second, and each batch's step time over batch 1's (measured back to
 * back, round-robin, best of the rounds, so a loaded host shifts the
 * ratios less than the absolute figures). Caches start at DEPTH synthetic
 * positions (default 64), like short chats; so does the prompt's, so a
 * mixed step's chunk attends over DEPTH positions as in a conversation.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "gguf/gguf.h"
#include "kern/kern.h"
#include "model/model.h"

enum { MAXB = 8, STEPS = 6, ROUNDS = 3 };
static const int BATCH[] = {1, 2, 4, 8};
static const int CHUNK[] = {8, 32, 128}; /* prefill rows beside 4 decode rows */

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench-batch MODEL [THREADS] [DEPTH]\n");
        return 2;
    }
    const int threads = argc > 2 ? atoi(argv[2]) : 0, depth = argc > 3 ? atoi(argv[3]) : 64;
    core_err err = {0};
    gguf *g = NULL;
    model *m = NULL;
    model_kv *kv[MAXB + 1] = {0};
    float *logits = NULL;
    int rc = 1;
    kern_init(NULL);
    model_opts mo = {threads, 0, MODEL_GPU_OFF};
    if (gguf_open(&g, argv[1], &err) || model_load(&m, g, &mo, &err)) goto done;
    const model_config *c = model_get_config(m);
    const int ctx = depth + (STEPS + 1) * ROUNDS * 8 + 512;
    for (int i = 0; i <= MAXB; i++)
        if (model_kv_new(&kv[i], m, ctx, MODEL_KV_F16, &err)) goto done;
    logits = malloc((size_t)(MAXB + 1) * (size_t)c->n_vocab * sizeof(float));
    int32_t toks[MAXB], chunk[256];
    for (int i = 0; i < MAXB; i++) toks[i] = 1000 + 7 * i;
    for (int i = 0; i < 256; i++) chunk[i] = 2000 + i;
    /* warm-up: page the weights in */
    if (model_decode_batch(m, kv, toks, 1, logits, &err)) goto done;
    const int NB = (int)CORE_ARRAY_LEN(BATCH), NC = (int)CORE_ARRAY_LEN(CHUNK);
    double best[8], bestc[8];
    for (int i = 0; i < 8; i++) best[i] = bestc[i] = 1e30;
    for (int r = 0; r < ROUNDS; r++) {
        for (int bi = 0; bi < NB; bi++) {
            const int B = BATCH[bi];
            for (int i = 0; i < B; i++) {
                model_kv_truncate(kv[i], 0);
                if (model_kv_fill_synthetic(kv[i], depth, &err)) goto done;
            }
            double t0 = core_now_s();
            for (int s = 0; s < STEPS; s++)
                if (model_decode_batch(m, kv, toks, B, logits, &err)) goto done;
            best[bi] = CORE_MIN(best[bi], (core_now_s() - t0) / STEPS);
        }
        for (int ci = 0; ci < NC; ci++) {
            const int32_t *tp[5] = {toks, toks + 1, toks + 2, toks + 3, chunk};
            int nt[5] = {1, 1, 1, 1, CHUNK[ci]};
            model_kv *ks[5] = {kv[0], kv[1], kv[2], kv[3], kv[MAXB]}; /* 4 decoding, the prompt's */
            for (int i = 0; i < 5; i++) {
                model_kv_truncate(ks[i], 0);
                if (model_kv_fill_synthetic(ks[i], depth, &err)) goto done;
            }
            double t0 = core_now_s();
            if (model_forward_seqs(m, ks, tp, nt, 5, logits, &err)) goto done;
            bestc[ci] = CORE_MIN(bestc[ci], core_now_s() - t0);
        }
    }
    const double gb = (double)model_weight_bytes(m) / 1e9;
    printf("batched decode, depth %d, %d threads, %.2f GB of weights a step (best of %d rounds)\n", depth,
           model_threads(m), gb, ROUNDS);
    printf("  %-22s %9s %11s %8s %10s\n", "step", "ms", "tok/s", "GB/s", "vs batch 1");
    for (int bi = 0; bi < NB; bi++)
        printf("  decode x%-13d %9.1f %11.2f %8.1f %10.2f\n", BATCH[bi], best[bi] * 1e3, BATCH[bi] / best[bi],
               gb / best[bi], best[bi] / best[0]);
    for (int ci = 0; ci < NC; ci++)
        printf("  decode x4 + prefill %-3d %8.1f %11.2f %8.1f %10.2f\n", CHUNK[ci], bestc[ci] * 1e3,
               (4 + CHUNK[ci]) / bestc[ci], gb / bestc[ci], bestc[ci] / best[0]);
    rc = 0;
done:
    if (rc) fprintf(stderr, "bench-batch: %s\n", err.msg);
    for (int i = 0; i <= MAXB; i++) model_kv_free(kv[i]);
    free(logits);
    model_free(m);
    gguf_close(g);
    return rc;
}
