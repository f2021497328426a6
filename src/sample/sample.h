/* sample.h -- choosing the next token from logits, and stop strings.
 *
 * The sampler follows llama.cpp's default chain, in this order:
 *     penalties -> top_k -> top_p -> min_p -> temperature -> softmax -> draw
 * so top_p and min_p see the untempered distribution (temperature 1), as in
 * llama.cpp. temperature == 0 is greedy: penalties, then argmax (ties go to
 * the lowest id). The draw uses xoshiro256** seeded through splitmix64: the
 * same seed and the same logits give the same tokens, on every machine.
 *
 * Cost: no allocation per token (all scratch is sized for n_vocab in
 * sample_new); top_k is a quickselect, top_p a weighted quickselect (no full
 * sort: the nucleus is a set, its order does not matter for the draw), min_p
 * a threshold; everything is O(n_vocab) expected.
 *
 * Stop strings are matched on bytes of the decoded text, independent of how
 * the text was cut into pieces: when several could match, the one that
 * completes first wins (for stops "abcd" and "bc", "xabcd" stops at "xa").
 *
 * A sampler or a sample_stop belongs to one thread (one request) at a time.
 */
#ifndef SAMPLE_H
#define SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

typedef struct sample_params {
    float temperature;       /* 0 = greedy; SmolLM3 card: 0.6 */
    int top_k;               /* 0 = off */
    float top_p;             /* 1 = off; card: 0.95 */
    float min_p;             /* 0 = off */
    float repeat_penalty;    /* 1 = off; > 1 discourages repeats */
    float presence_penalty;  /* 0 = off; subtracted once from tokens seen in the window */
    float frequency_penalty; /* 0 = off; subtracted count times */
    int penalty_last_n;      /* window of recent ids the penalties look at; 0 = none */
    uint64_t seed;           /* RNG seed (the caller picks a random one if the user gave none) */
} sample_params;

/* Model card defaults: temperature 0.6, top_p 0.95, top_k off, min_p 0,
 * penalties off, window 64, seed 0. */
void sample_params_default(sample_params *p);
/* 0, or CORE_ERANGE with a message naming the field (NaN, negative
 * temperature, top_p outside [0,1], ...). */
int sample_params_check(const sample_params *p, core_err *err);

typedef struct sampler sampler;

/* Returns NULL on allocation failure or n_vocab <= 0. Copies *p. */
sampler *sample_new(const sample_params *p, int32_t n_vocab);
void sample_free(sampler *s);
/* Restart the random sequence from seed. */
void sample_reset(sampler *s, uint64_t seed);
/* Pick the next id. logits[n_vocab] is modified (penalties are applied in
 * place). recent[0..n_recent) are the ids so far, oldest first (ids outside
 * [0, n_vocab) are ignored); only the last penalty_last_n count. NaN logits
 * are treated as -inf. Never fails: with all logits -inf it returns 0. */
int32_t sample_next(sampler *s, float *logits, const int32_t *recent, size_t n_recent);

/* Test helper: apply penalties, top_k, top_p and min_p (not temperature) to
 * logits and write the surviving ids, sorted ascending, into out (capacity
 * n_vocab). Returns how many survive. Uses the sampler's scratch. */
size_t sample_debug_keep(sampler *s, float *logits, const int32_t *recent, size_t n_recent, int32_t *out);

/* ---- stop strings ------------------------------------------------------ */

enum { SAMPLE_STOP_MAX = 8, SAMPLE_STOP_LEN = 64 };

typedef struct sample_stop {
    char stops[SAMPLE_STOP_MAX][SAMPLE_STOP_LEN + 1];
    size_t lens[SAMPLE_STOP_MAX];
    size_t n;
    size_t max_len;
    char hold[SAMPLE_STOP_LEN];         /* text that is a proper prefix of some stop */
    size_t hold_len;
    char win[2 * SAMPLE_STOP_LEN];      /* scratch: hold + the next chunk of input */
    int done;                           /* a stop string completed */
} sample_stop;

/* Copy stops[0..n) (n <= SAMPLE_STOP_MAX, each 1..SAMPLE_STOP_LEN bytes).
 * n == 0 is allowed (text passes through). CORE_EINVAL on bad input. */
int sample_stop_init(sample_stop *s, const char *const *stops, size_t n, core_err *err);
/* Feed text; appends what can be shown to emit. Returns 1 when a stop string
 * completed (text before it was emitted; the stop string and anything after
 * it never are; later pushes emit nothing and return 1), 0 otherwise, or
 * CORE_ENOMEM. A tail that could be the start of a stop string is held back. */
int sample_stop_push(sample_stop *s, const char *text, size_t len, core_buf *emit);
/* End of stream: emit the held tail (unless a stop completed). 0 or CORE_ENOMEM. */
int sample_stop_flush(sample_stop *s, core_buf *emit);

#endif
