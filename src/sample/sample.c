/* sample.c -- penalties, top-k, top-p, min-p, temperature and the draw.
 *
 * Data layout: three parallel scratch arrays of n_vocab entries (candidate
 * id, its logit, and e = exp(logit - max) once top_p needs it), allocated in
 * sample_new and reused for every token. Filters shrink the candidate count m;
 * survivors are always in positions [0, m), in no particular order.
 *
 * Ranking is by (logit descending, id ascending), so every key is distinct and
 * ties resolve the way argmax does: the lowest id wins. Both selections are
 * quickselects over that key with a median-of-three pivot:
 *   - top_k: move the k best to the front.
 *   - top_p: find the smallest K such that the K best hold at least p of the
 *     probability mass (llama.cpp: "smallest set with cumulative >= p"). Each
 *     round partitions around a pivot and sums the mass of the upper part; the
 *     boundary is on one side, so only that side is examined next. Expected
 *     O(m) work, and no sort of the 128k-entry vocabulary.
 * min_p keeps the candidates whose probability is >= min_p times the best
 * one, i.e. logit >= max + log(min_p) (the form llama.cpp uses).
 *
 * Penalties follow llama.cpp over the last penalty_last_n ids: a token seen c
 * times gets logit / repeat (if positive) or * repeat (if not), then minus
 * c * frequency + (c > 0) * presence. A per-vocabulary count array (zeroed
 * again after each use) makes this O(window).
 */
#include "sample/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sampler {
    sample_params p;
    int32_t n_vocab;
    uint64_t rng[4]; /* xoshiro256** state */
    int32_t *id;     /* [n_vocab] candidate ids */
    float *lg;       /* [n_vocab] candidate logits */
    float *e;        /* [n_vocab] exp(logit - max) for top_p / the draw */
    int32_t *count;  /* [n_vocab] occurrences in the penalty window; all zero between calls */
    size_t last_m;   /* candidates of the last draw (id/lg[0..last_m)), for sample_next_lp */
};

void sample_params_default(sample_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 0.6f;
    p->top_k = 0;
    p->top_p = 0.95f;
    p->min_p = 0.0f;
    p->repeat_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->penalty_last_n = 64;
    p->seed = 0;
}

int sample_params_check(const sample_params *p, core_err *err) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return core_errf(err, CORE_ERANGE, "temperature must be in [0, 100], got %g", (double)p->temperature);
    if (p->top_k < 0) return core_errf(err, CORE_ERANGE, "top_k must be >= 0 (0 = off), got %d", p->top_k);
    if (!(p->top_p >= 0.0f && p->top_p <= 1.0f))
        return core_errf(err, CORE_ERANGE, "top_p must be in [0, 1], got %g", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return core_errf(err, CORE_ERANGE, "min_p must be in [0, 1], got %g", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= 10.0f))
        return core_errf(err, CORE_ERANGE, "repeat_penalty must be in (0, 10], got %g", (double)p->repeat_penalty);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return core_errf(err, CORE_ERANGE, "presence_penalty must be in [-2, 2], got %g",
                         (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return core_errf(err, CORE_ERANGE, "frequency_penalty must be in [-2, 2], got %g",
                         (double)p->frequency_penalty);
    if (p->penalty_last_n < 0 || p->penalty_last_n > (1 << 20))
        return core_errf(err, CORE_ERANGE, "penalty_last_n must be in [0, 1048576], got %d", p->penalty_last_n);
    return 0;
}

/* ---- RNG: splitmix64 seeds xoshiro256** ------------------------------- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform double in [0, 1) from the top 53 bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

void sample_reset(sampler *s, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
}

sampler *sample_new(const sample_params *p, int32_t n_vocab) {
    if (n_vocab <= 0) return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->id = calloc((size_t)n_vocab, sizeof *s->id);
    s->lg = calloc((size_t)n_vocab, sizeof *s->lg);
    s->e = calloc((size_t)n_vocab, sizeof *s->e);
    s->count = calloc((size_t)n_vocab, sizeof *s->count);
    if (!s->id || !s->lg || !s->e || !s->count) {
        sample_free(s);
        return NULL;
    }
    sample_reset(s, p->seed);
    return s;
}

void sample_free(sampler *s) {
    if (!s) return;
    free(s->id);
    free(s->lg);
    free(s->e);
    free(s->count);
    free(s);
}

/* ---- exp over arrays ----------------------------------------------------
 *
 * libm's expf is a call per element and is most of the cost of a 128k-entry
 * softmax. fast_exp is a plain-C, branch-free expf (range reduction by ln 2,
 * degree-6 polynomial, relative error ~2e-7) that GCC vectorizes at -O2; it
 * returns exactly 0 below -87.3 (so -inf logits keep no mass). The sums run
 * in a second loop in double with four accumulators. */
static inline float fast_exp(float x) {
    float xc = x < -87.3f ? -87.3f : (x > 88.0f ? 88.0f : x);
    float k = (xc * 1.44269504f + 12582912.0f) - 12582912.0f; /* round(x / ln2) */
    float r = xc - k * 0.693145752f - k * 1.42860677e-06f;   /* ln2 split hi + lo */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f + r * (0.00833333377f +
                                                                                         r * 0.00138888892f)))));
    union {
        int32_t i;
        float f;
    } sc = {.i = ((int32_t)k + 127) << 23};
    return x < -87.3f ? 0.0f : p * sc.f;
}

/* The same computation four lanes at a time with GCC/clang generic vectors
 * (SSE2 on any x86-64, NEON on arm64; no ISA-specific code). Only for
 * x <= 0, which is all the sampler needs (logit - max). fast_exp above is
 * its scalar reference and handles the tail. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f fast_exp4(v4f x) {
    const v4f lo = {-87.3f, -87.3f, -87.3f, -87.3f}, magic = {12582912.0f, 12582912.0f, 12582912.0f, 12582912.0f};
    v4i under = x < lo; /* lanes that underflow: result 0 */
    v4f xc = (v4f)(((v4i)x & ~under) | ((v4i)lo & under));
    v4f k = (xc * 1.44269504f + magic) - magic;
    v4f r = xc - k * 0.693145752f - k * 1.42860677e-06f;
    v4f p = 1.0f + r * (1.0f + r * (0.5f + r * (0.166666672f + r * (0.0416666679f + r * (0.00833333377f +
                                                                                     r * 0.00138888892f)))));
    v4i e = (__builtin_convertvector(k, v4i) + 127) << 23;
    return (v4f)((v4i)(p * (v4f)e) & ~under);
}

/* e[i] = exp((lg[i] - mx) * scale) for i < m (all lg <= mx, scale > 0);
 * returns the sum. */
static double exp_sum(float *e, const float *lg, size_t m, float mx, float scale) {
    size_t i = 0;
    for (; i + 4 <= m; i += 4) {
        v4f x;
        memcpy(&x, lg + i, sizeof x);
        x = fast_exp4((x - mx) * scale);
        memcpy(e + i, &x, sizeof x);
    }
    for (; i < m; i++) e[i] = fast_exp((lg[i] - mx) * scale);
    double z0 = 0, z1 = 0, z2 = 0, z3 = 0;
    i = 0;
    for (; i + 4 <= m; i += 4) z0 += e[i], z1 += e[i + 1], z2 += e[i + 2], z3 += e[i + 3];
    for (; i < m; i++) z0 += e[i];
    return (z0 + z1) + (z2 + z3);
}

/* ---- penalties ----------------------------------------------------------- */

static void apply_penalties(sampler *s, float *logits, const int32_t *recent, size_t n_recent) {
    const sample_params *p = &s->p;
    if (p->penalty_last_n <= 0 || !recent || !n_recent) return;
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f) return;
    size_t w = CORE_MIN(n_recent, (size_t)p->penalty_last_n);
    const int32_t *win = recent + (n_recent - w);
    for (size_t j = 0; j < w; j++)
        if (win[j] >= 0 && win[j] < s->n_vocab) s->count[win[j]]++;
    for (size_t j = 0; j < w; j++) {
        int32_t t = win[j];
        if (t < 0 || t >= s->n_vocab || !s->count[t]) continue; /* invalid, or already done */
        float l = logits[t];
        int32_t c = s->count[t];
        if (l <= 0.0f) l *= p->repeat_penalty;
        else l /= p->repeat_penalty;
        l -= (float)c * p->frequency_penalty + p->presence_penalty;
        logits[t] = l;
        s->count[t] = 0; /* each distinct id once; leaves the array zeroed */
    }
}

/* ---- candidate ranking and selection ------------------------------------ */

/* 1 if candidate a ranks before b: higher logit, or equal logit and lower id. */
static inline int before(const sampler *s, size_t a, size_t b) {
    return s->lg[a] > s->lg[b] || (s->lg[a] == s->lg[b] && s->id[a] < s->id[b]);
}

static inline void swap_c(sampler *s, size_t a, size_t b) {
    int32_t ti = s->id[a];
    s->id[a] = s->id[b];
    s->id[b] = ti;
    float tl = s->lg[a];
    s->lg[a] = s->lg[b];
    s->lg[b] = tl;
    float te = s->e[a];
    s->e[a] = s->e[b];
    s->e[b] = te;
}

/* Partition [lo, hi) (hi - lo >= 3) around a median-of-three pivot. Returns q:
 * [lo, q) rank before the pivot, the pivot is at q, (q, hi) rank after. */
static size_t partition(sampler *s, size_t lo, size_t hi) {
    size_t a = lo, b = lo + (hi - lo) / 2, c = hi - 1, m;
    if (before(s, a, b)) m = before(s, b, c) ? b : (before(s, a, c) ? c : a);
    else m = before(s, a, c) ? a : (before(s, b, c) ? c : b);
    swap_c(s, m, hi - 1);
    size_t st = lo;
    for (size_t j = lo; j < hi - 1; j++)
        if (before(s, j, hi - 1)) swap_c(s, st++, j);
    swap_c(s, st, hi - 1);
    return st;
}

static void insertion_sort(sampler *s, size_t lo, size_t hi) {
    for (size_t i = lo + 1; i < hi; i++)
        for (size_t j = i; j > lo && before(s, j, j - 1); j--) swap_c(s, j, j - 1);
}

/* Move the k best of [0, m) to [0, k). */
static void select_top_k(sampler *s, size_t m, size_t k) {
    size_t lo = 0, hi = m;
    while (hi - lo > 16) {
        size_t q = partition(s, lo, hi);
        if (q == k || q + 1 == k) return;
        if (q > k) hi = q;
        else lo = q + 1;
    }
    insertion_sort(s, lo, hi);
}

/* Smallest K such that the K best of [0, m) hold >= target of the mass in
 * e[]; on return they are in [0, K). */
static size_t select_top_p(sampler *s, size_t m, double target) {
    size_t lo = 0, hi = m;
    double above = 0.0; /* mass of [0, lo) */
    while (hi - lo > 16) {
        size_t q = partition(s, lo, hi);
        double mass = 0.0;
        for (size_t j = lo; j <= q; j++) mass += s->e[j];
        if (above + mass >= target) {
            if (above + mass - s->e[q] < target) return q + 1;
            hi = q;
        } else {
            above += mass;
            lo = q + 1;
        }
    }
    insertion_sort(s, lo, hi);
    for (size_t j = lo; j < hi; j++) {
        above += s->e[j];
        if (above >= target) return j + 1;
    }
    return hi ? hi : 1; /* rounding: the whole remaining range */
}

/* Fill the candidate arrays from logits and apply top_k, top_p, min_p.
 * Returns the number of survivors (>= 1), in [0, m).
 *
 * Without top_k, candidates that cannot matter are never copied:
 *   - top_p: with Z the total mass, every token with e < (1 - p) Z / n is
 *     dropped first. Their mass together is below (1 - p) Z, so the tokens
 *     kept already hold more than p Z, and since they rank above the dropped
 *     ones the nucleus boundary lies among them: the result is exact, and on
 *     real (peaked) logits only a few hundred tokens reach the selection.
 *   - otherwise: tokens under min_p's threshold, and tokens whose tempered
 *     probability underflows to 0 (they could never be drawn). */
static size_t filter(sampler *s, const float *logits) {
    const sample_params *p = &s->p;
    size_t n = (size_t)s->n_vocab, m = 0;
    float mx = -INFINITY;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        float v = logits[i];
        nan |= v != v;
        mx = v > mx ? v : mx;
    }
    const float *src = logits;
    if (nan) { /* rare: clean a copy once so every comparison below is ordered */
        for (size_t i = 0; i < n; i++) s->lg[i] = isnan(logits[i]) ? -INFINITY : logits[i];
        src = s->lg;
    }
    if (mx == -INFINITY) { /* nothing has any probability: the lowest id, like argmax */
        s->id[0] = 0;
        s->lg[0] = -INFINITY;
        return 1;
    }
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        for (size_t i = 0; i < n; i++) s->id[i] = (int32_t)i, s->lg[i] = src[i];
        select_top_k(s, n, (size_t)p->top_k);
        m = (size_t)p->top_k;
    } else if (p->top_p > 0.0f && p->top_p < 1.0f) {
        double z = exp_sum(s->e, src, n, mx, 1.0f); /* e indexed by id for now */
        float thr = (float)((1.0 - (double)p->top_p) * z / (double)n);
        for (size_t i = 0; i < n; i++) /* forward compaction: m <= i, so in place is safe */
            if (s->e[i] >= thr) {
                s->id[m] = (int32_t)i;
                s->lg[m] = src[i];
                s->e[m] = s->e[i];
                m++;
            }
        m = select_top_p(s, m, (double)p->top_p * z);
        goto min_p;
    } else {
        float t = p->temperature > 0.0f ? p->temperature : 1.0f;
        float cut = mx - 87.0f * CORE_MAX(t, 1.0f);
        if (p->min_p > 0.0f) cut = CORE_MAX(cut, mx + logf(p->min_p));
        for (size_t i = 0; i < n; i++)
            if (src[i] >= cut) {
                s->id[m] = (int32_t)i;
                s->lg[m] = src[i];
                m++;
            }
    }
    if (p->top_p < 1.0f) { /* after top_k */
        if (p->top_p <= 0.0f) {
            select_top_k(s, m, 1);
            m = 1;
        } else {
            double z = exp_sum(s->e, s->lg, m, mx, 1.0f);
            m = select_top_p(s, m, (double)p->top_p * z);
        }
    }
min_p:
    if (p->min_p > 0.0f && m > 1) {
        float thr = mx + logf(p->min_p); /* the max survives top_k and top_p */
        size_t k = 0;
        for (size_t i = 0; i < m; i++)
            if (s->lg[i] >= thr) swap_c(s, k++, i);
        m = k ? k : 1;
    }
    return m;
}

static int32_t argmax(const float *logits, int32_t n) {
    int32_t best = 0;
    float bv = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (logits[i] > bv) bv = logits[i], best = i; /* strict: ties keep the lowest id; NaN never wins */
    return best;
}

int32_t sample_next(sampler *s, float *logits, const int32_t *recent, size_t n_recent) {
    apply_penalties(s, logits, recent, n_recent);
    if (s->p.temperature <= 0.0f) return argmax(logits, s->n_vocab);
    size_t m = filter(s, logits);
    s->last_m = m;
    if (m == 1) return s->id[0];
    float mx = -INFINITY;
    for (size_t i = 0; i < m; i++) mx = s->lg[i] > mx ? s->lg[i] : mx;
    float inv_t = 1.0f / s->p.temperature;
    double z = exp_sum(s->e, s->lg, m, mx, inv_t);
    double u = rng_uniform(s->rng) * z, acc = 0.0;
    for (size_t i = 0; i < m; i++) {
        acc += s->e[i];
        if (u < acc) return s->id[i];
    }
    /* u landed past the sum by rounding: the last candidate with mass */
    for (size_t i = m; i-- > 0;)
        if (s->e[i] > 0.0f) return s->id[i];
    return s->id[0];
}

/* Insert (id, v) into the best-first list top[0..*n) of capacity k. */
static void top_insert(sample_logprob *top, int *n, int k, int32_t id, float v) {
    if (k <= 0 || (*n == k && !(v > top[k - 1].logprob))) return;
    int i = *n < k ? (*n)++ : k - 1;
    while (i > 0 && top[i - 1].logprob < v) top[i] = top[i - 1], i--;
    top[i] = (sample_logprob){id, v};
}

int32_t sample_next_lp(sampler *s, float *logits, const int32_t *recent, size_t n_recent, int top_n,
                       sample_logprob *chosen, sample_logprob *top, int *n_top) {
    int32_t id;
    const float *lg;
    const int32_t *ids;
    size_t m;
    float inv_t;
    top_n = top_n < 0 ? 0 : top_n > SAMPLE_TOP_MAX ? SAMPLE_TOP_MAX : top_n;
    *n_top = 0;
    if (s->p.temperature <= 0.0f) {
        apply_penalties(s, logits, recent, n_recent);
        id = argmax(logits, s->n_vocab);
        lg = logits, ids = NULL, m = (size_t)s->n_vocab, inv_t = 1.0f;
    } else {
        /* sample_next leaves the candidates it drew from in s->id/s->lg[0..m) */
        id = sample_next(s, logits, recent, n_recent);
        m = s->last_m;
        lg = s->lg, ids = s->id, inv_t = 1.0f / s->p.temperature;
    }
    float mx = -INFINITY;
    for (size_t i = 0; i < m; i++) mx = lg[i] > mx ? lg[i] : mx;
    double z = 0;
    for (size_t i = 0; i < m; i++)
        if (lg[i] > -INFINITY) z += exp((double)(lg[i] - mx) * inv_t);
    double lz = z > 0 ? log(z) : 0;
    chosen->id = id;
    chosen->logprob = -INFINITY;
    for (size_t i = 0; i < m; i++) {
        int32_t t = ids ? ids[i] : (int32_t)i;
        if (!(lg[i] > -INFINITY)) continue;
        float v = (float)((double)(lg[i] - mx) * inv_t - lz);
        if (t == id) chosen->logprob = v;
        top_insert(top, n_top, top_n, t, v);
    }
    if (m == 1 && chosen->logprob == -INFINITY) chosen->logprob = 0; /* the only candidate */
    return id;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

size_t sample_debug_keep(sampler *s, float *logits, const int32_t *recent, size_t n_recent, int32_t *out) {
    apply_penalties(s, logits, recent, n_recent);
    size_t m = filter(s, logits);
    memcpy(out, s->id, m * sizeof *out);
    qsort(out, m, sizeof *out, cmp_i32);
    return m;
}
