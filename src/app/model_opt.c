/* model_opt.c -- options about how the model runs, shared by generate,
 * chat, serve and bench.
 *
 * --gpu auto|on|off: auto (the default) runs on a CUDA device
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

#include "app/app.h"
#include "model/model.h"

/* v must be one of names[0..n); *out gets the matching value */
static int parse_choice(const char *opt, const char *v, const char *const *names, const int *vals, int n, int *out) {
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) {
            *out = vals[i];
            return 0;
        }
    fprintf(stderr, "%s expects %s", opt, names[0]);
    for (int i = 1; i < n; i++) fprintf(stderr, "%s%s", i + 1 < n ? ", " : " or ", names[i]);
    fprintf(stderr, " (got '%s')\n", v);
    return -1;
}

int app_parse_gpu(const char *v, int *out) {
    static const char *const names[] = {"auto", "on", "off"};
    static const int vals[] = {MODEL_GPU_AUTO, MODEL_GPU_ON, MODEL_GPU_OFF};
    return parse_choice("--gpu", v, names, vals, 3, out);
}

int app_parse_kv(const char *v, int *out) {
    static const char *const names[] = {"f16", "f32", "q8"};
    static const int vals[] = {MODEL_KV_F16, MODEL_KV_F32, MODEL_KV_Q8};
    return parse_choice("--kv", v, names, vals, 3, out);
}
