/* model_opt.c -- options about how the model runs, shared by generate,
 * chat, serve and bench.
 *
 * --gpu auto|on|off (issue 12): auto (the default) runs on a CUDA device
 * when the binary was built with `make CUDA=1` and one is present, else on
 * the CPU; on insists (the model fails to load without a GPU); off is the
 * CPU.
 *
 * --kv f16|f32|q8: the KV cache's element type. f16 is the default (what
 * llama.cpp uses); q8 (Q8_0 blocks, 8.5 bits a value) halves the cache and
 * the bytes decode reads at long contexts, for a small loss of precision;
 * f32 is for comparisons.
 */
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "model/model.h"

int app_parse_gpu(const char *v, int *out) {
    if (!strcmp(v, "auto")) *out = MODEL_GPU_AUTO;
    else if (!strcmp(v, "on")) *out = MODEL_GPU_ON;
    else if (!strcmp(v, "off")) *out = MODEL_GPU_OFF;
    else {
        fprintf(stderr, "--gpu expects auto, on or off (got '%s')\n", v);
        return -1;
    }
    return 0;
}

int app_parse_kv(const char *v, int *out) {
    if (!strcmp(v, "f16")) *out = MODEL_KV_F16;
    else if (!strcmp(v, "f32")) *out = MODEL_KV_F32;
    else if (!strcmp(v, "q8")) *out = MODEL_KV_Q8;
    else {
        fprintf(stderr, "--kv expects f16, f32 or q8 (got '%s')\n", v);
        return -1;
    }
    return 0;
}
