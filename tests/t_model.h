/* t_model.h -- helpers the model tests share (CPU and GPU golden tests):
 * load a model from ../shared, read a reference logits file, argmax, and
 * the max/RMS difference. Include after t.h. */
#ifndef T_MODEL_H
#define T_MODEL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "model/model.h"

typedef struct t_loaded {
    gguf *g;
    model *m;
} t_loaded;

/* Open ../shared/<rel> and load it (n_batch 0: the default; gpu:
 * MODEL_GPU_*). 0 ok, -1 shared/ absent, -2 load error, -3 refused as
 * unsupported (CORE_EUNSUP: no GPU, built without CUDA). A load error's
 * message goes to why (why_len bytes) when given, else to stderr. */
static inline int t_load(const char *rel, t_loaded *L, int n_batch, int gpu, char *why, size_t why_len) {
    const char *path = t_shared(rel);
    core_err err = {0};
    memset(L, 0, sizeof *L);
    if (!path) return -1;
    if (gguf_open(&L->g, path, &err)) { fprintf(stderr, "  %s\n", err.msg); return -2; }
    model_opts o = {0, n_batch, gpu};
    int rc = model_load(&L->m, L->g, &o, &err);
    if (rc) {
        gguf_close(L->g);
        if (why) snprintf(why, why_len, "%s", err.msg);
        else fprintf(stderr, "  %s\n", err.msg);
        return rc == CORE_EUNSUP ? -3 : -2;
    }
    return 0;
}

static inline void t_unload(t_loaded *L) {
    model_free(L->m);
    gguf_close(L->g);
}

/* n float32 values from path, malloc'd; NULL if the file is short or absent. */
static inline float *t_read_f32(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *v = malloc(n * sizeof *v);
    size_t r = v ? fread(v, sizeof *v, n, f) : 0;
    fclose(f);
    if (r != n) { free(v); return NULL; }
    return v;
}

static inline int t_argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* max |a-b| (NaN counts as infinitely far) and RMS of a-b. */
static inline void t_diff_stats(const float *a, const float *b, int n, double *maxd, double *rms) {
    double mx = 0, ss = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > mx || d != d) mx = d;
        ss += d * d;
    }
    *maxd = mx;
    *rms = sqrt(ss / n);
}

#endif
