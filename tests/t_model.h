/* t_model.h -- helpers the model tests share (CPU and GPU golden tests):
 * read a reference logits file, argmax, and the max/RMS difference. */
#ifndef T_MODEL_H
#define T_MODEL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

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
