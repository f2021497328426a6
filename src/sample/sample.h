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
 * Constrained decoding (grammar.c): see below.
 *
 * A sampler or a sample_stop belongs to one thread (one request) at a time.
 */
#ifndef SAMPLE_H
#define SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "tok/tok.h"

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

/* Log-probabilities of the distribution a draw came from (logprobs). */
enum { SAMPLE_TOP_MAX = 20 };
typedef struct sample_logprob {
    int32_t id;
    float logprob;
} sample_logprob;
/* sample_next that also reports, for the drawn id, its log-probability
 * and the top_n (<= SAMPLE_TOP_MAX) most likely ids, best first, written
 * to top (*n_top of them). The distribution is the one the draw used:
 * after penalties, top_k, top_p and min_p, at the temperature (ids cut by
 * a filter are not listed: they had no chance). Greedy (temperature 0)
 * reports the softmax of the penalized logits at temperature 1, so the
 * chosen id has the highest log-probability. */
int32_t sample_next_lp(sampler *s, float *logits, const int32_t *recent, size_t n_recent, int top_n,
                       sample_logprob *chosen, sample_logprob *top, int *n_top);

/* Test helper: apply penalties, top_k, top_p and min_p (not temperature) to
 * logits and write the surviving ids, sorted ascending, into out (capacity
 * n_vocab). Returns how many survive. Uses the sampler's scratch. */
size_t sample_debug_keep(sampler *s, float *logits, const int32_t *recent, size_t n_recent, int32_t *out);

/* ---- constrained decoding (grammar.c) -------------------------------------
 *
 * A grammar is compiled once per request from a JSON Schema (or from tools'
 * parameter schemas) and is immutable: any thread, reference counted. A
 * matcher is one generation's position in it (one thread). Per token:
 * sample_matcher_mask(logits) sets every token that cannot continue a
 * valid output to -inf, the sampler draws, sample_matcher_accept(id)
 * advances. The vocabulary table (token bytes, sorted) is built once per
 * tokenizer and shared read-only.
 *
 * Supported JSON Schema: type (object, array, string, number, integer,
 * boolean, null, or a list of them), properties, required,
 * additionalProperties (false, true, absent; a schema only for objects
 * without properties), enum, const, items (one schema), minItems,
 * maxItems, anyOf/oneOf whose branches start with different characters,
 * minLength, maxLength, pattern as ^CLASS QUANTIFIER$ over ASCII, and the
 * annotations (description, title, default, examples, $schema...).
 * Anything else (minimum/maximum, format, $ref, allOf, not, tuples,
 * patternProperties, ...) is refused with CORE_EUNSUP and a message naming
 * it. Output is compact JSON with at most one space after ':' and ',';
 * properties come in any order, each at most once, extra ones never. */
typedef struct sample_vocab sample_vocab;
typedef struct sample_grammar sample_grammar;
typedef struct sample_matcher sample_matcher;

/* The vocabulary's bytes, sorted (t borrowed for the call). 0 or CORE_ENOMEM. */
int sample_vocab_new(const tok *t, sample_vocab **out, core_err *err);
void sample_vocab_free(sample_vocab *v);

/* schema[0..len): JSON Schema text. 0, CORE_EINVAL (not JSON, malformed
 * schema) or CORE_EUNSUP (a feature we cannot enforce), message in err. */
int sample_grammar_schema(const char *schema, size_t len, sample_grammar **out, core_err *err);

/* Tool calls as the model writes them: "<tool_call>\n{\"name\": NAME,
 * \"arguments\": ARGS}\n</tool_call>", NAME one of the tools', ARGS valid
 * for that tool's parameters (JSON Schema text; NULL: any object);
 * parallel: more calls may follow, each after "\n". */
typedef struct sample_tool {
    const char *name;
    const char *schema;
    size_t schema_len;
} sample_tool;
int sample_grammar_tools(const sample_tool *tools, size_t n, int parallel, sample_grammar **out, core_err *err);
/* One call in Llama 3.x's bare form: "{\"name\": NAME, \"parameters\":
 * ARGS}" and nothing else (no tags; the answer ends after it). Never
 * lazy: there is no tag to wait for (sample_matcher_new refuses). */
int sample_grammar_tools_json(const sample_tool *tools, size_t n, sample_grammar **out, core_err *err);
sample_grammar *sample_grammar_ref(sample_grammar *g); /* one more reference */
void sample_grammar_free(sample_grammar *g);           /* drops one; NULL ok */

/* A matcher at the start of g (referenced) over v (borrowed: it must
 * outlive the matcher). lazy (tool-call grammars only): free text until
 * the model writes "<tool_call>", the grammar for each call, free text
 * between calls. thinking: a leading <think>...</think> block is free. */
int sample_matcher_new(sample_grammar *g, const sample_vocab *v, int lazy, int thinking, sample_matcher **out,
                       core_err *err);
void sample_matcher_free(sample_matcher *m);
/* Set logits[id] = -inf for every id that cannot come next; returns how
 * many remain (0: none can, the caller stops). No allocation. */
size_t sample_matcher_mask(sample_matcher *m, float *logits);
/* Advance past id. 0, or -1 when id was not allowed (state unchanged in
 * part: stop using the matcher). */
int sample_matcher_accept(sample_matcher *m, int32_t id);
/* 1 while the grammar constrains (not in free text or thinking). */
int sample_matcher_active(const sample_matcher *m);
/* Test helpers: advance over bytes (0 or -1); may the output end here. */
int sample_matcher_feed(sample_matcher *m, const char *text, size_t len);
int sample_matcher_can_end(const sample_matcher *m);
void sample_matcher_reset(sample_matcher *m);

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
