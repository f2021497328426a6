/* test_sample.c -- samplers against brute-force references and empirical
 * frequencies, determinism per seed, penalties, parameter checks, speed on a
 * 128k vocabulary, and stop strings cut at every position. */
#include "t.h"

#include "sample/sample.h"

static uint64_t lcg = 88172645463325252ull;
static double urand(void) { /* test-only PRNG, independent of the sampler's */
    lcg ^= lcg << 13;
    lcg ^= lcg >> 7;
    lcg ^= lcg << 17;
    return (double)(lcg >> 11) * 0x1.0p-53;
}

static void fill_logits(float *l, int n, double scale, int quantize) {
    for (int i = 0; i < n; i++) {
        double x = (urand() + urand() + urand() - 1.5) * scale;
        l[i] = quantize ? (float)floor(x * 2) / 2 : (float)x; /* quantized: many ties */
    }
}

static sample_params params(float temp, int top_k, float top_p, float min_p) {
    sample_params p;
    sample_params_default(&p);
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    return p;
}

static void test_params(void) {
    sample_params p;
    sample_params_default(&p);
    CHECK_NEAR(p.temperature, 0.6, 1e-6);
    CHECK_NEAR(p.top_p, 0.95, 1e-6);
    CHECK_EQ_INT(p.top_k, 0);
    CHECK(p.min_p == 0 && p.repeat_penalty == 1 && p.presence_penalty == 0 && p.frequency_penalty == 0);
    CHECK_EQ_INT(p.penalty_last_n, 64);
    core_err e = {0};
    CHECK_EQ_INT(sample_params_check(&p, &e), 0);
    const char *bad[] = {"temperature",      "top_k",             "top_p",         "min_p",
                         "repeat_penalty",   "presence_penalty",  "frequency_penalty", "penalty_last_n"};
    for (size_t i = 0; i < CORE_ARRAY_LEN(bad); i++) {
        sample_params q = p;
        switch (i) {
        case 0: q.temperature = -0.1f; break;
        case 1: q.top_k = -1; break;
        case 2: q.top_p = 1.5f; break;
        case 3: q.min_p = NAN; break;
        case 4: q.repeat_penalty = 0; break;
        case 5: q.presence_penalty = 3; break;
        case 6: q.frequency_penalty = -INFINITY; break;
        case 7: q.penalty_last_n = -1; break;
        }
        CHECK_EQ_INT(sample_params_check(&q, &e), CORE_ERANGE);
        CHECK_MSG(strstr(e.msg, bad[i]) != NULL, "%s: %s", bad[i], e.msg);
    }
    p.temperature = NAN;
    CHECK_EQ_INT(sample_params_check(&p, &e), CORE_ERANGE);
    CHECK(sample_new(&p, 0) == NULL);
}

static void test_determinism(void) {
    enum { N = 1000, T = 300 };
    static float base[N], l[N];
    fill_logits(base, N, 4.0, 0);
    sample_params p = params(1.0f, 0, 1.0f, 0.0f);
    p.seed = 42;
    sampler *a = sample_new(&p, N), *b = sample_new(&p, N);
    p.seed = 43;
    sampler *c = sample_new(&p, N);
    int32_t sa[T], sb[T], sc[T];
    int differ = 0;
    for (int t = 0; t < T; t++) {
        memcpy(l, base, sizeof l);
        sa[t] = sample_next(a, l, NULL, 0);
        memcpy(l, base, sizeof l);
        sb[t] = sample_next(b, l, NULL, 0);
        memcpy(l, base, sizeof l);
        sc[t] = sample_next(c, l, NULL, 0);
        CHECK(sa[t] >= 0 && sa[t] < N);
        differ += sa[t] != sc[t];
    }
    CHECK(memcmp(sa, sb, sizeof sa) == 0);
    CHECK(differ > T / 2);
    sample_reset(c, 42); /* same seed again: the same sequence */
    for (int t = 0; t < T; t++) {
        memcpy(l, base, sizeof l);
        CHECK_EQ_INT(sample_next(c, l, NULL, 0), sa[t]);
    }
    sample_free(a);
    sample_free(b);
    sample_free(c);
    sample_free(NULL);
}

static void test_greedy(void) {
    enum { N = 5000 };
    static float l[N];
    sample_params p = params(0.0f, 0, 1.0f, 0.0f);
    sampler *s = sample_new(&p, N);
    for (int rep = 0; rep < 20; rep++) {
        fill_logits(l, N, 3.0, rep & 1);
        int best = 0;
        for (int i = 1; i < N; i++)
            if (l[i] > l[best]) best = i;
        CHECK_EQ_INT(sample_next(s, l, NULL, 0), best);
    }
    sample_free(s);
    s = sample_new(&p, 5);
    float t[5] = {1, 3, NAN, 3, 2};
    CHECK_EQ_INT(sample_next(s, t, NULL, 0), 1); /* tie: lowest id; NaN never wins */
    sample_free(s);
    float m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    p = params(0.7f, 0, 0.9f, 0.1f);
    s = sample_new(&p, 4);
    CHECK_EQ_INT(sample_next(s, m, NULL, 0), 0); /* nothing has mass: still an id */
    float one[4] = {-INFINITY, NAN, 5, -INFINITY};
    CHECK_EQ_INT(sample_next(s, one, NULL, 0), 2);
    sample_free(s);
}

static int cmp_desc(const void *a, const void *b, void *ctx) {
    const float *l = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    if (l[x] != l[y]) return l[x] > l[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static int cmp_asc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The reference: sort everything by (logit desc, id asc), cut. */
static size_t ref_keep(const float *l, int n, int top_k, float top_p, float min_p, int32_t *out) {
    int *ord = malloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) ord[i] = i;
    qsort_r(ord, (size_t)n, sizeof(int), cmp_desc, (void *)l);
    size_t m = (top_k > 0 && top_k < n) ? (size_t)top_k : (size_t)n;
    float mx = l[ord[0]];
    if (top_p < 1.0f) {
        double z = 0, acc = 0;
        for (size_t i = 0; i < m; i++) z += expf(l[ord[i]] - mx);
        size_t k = m;
        for (size_t i = 0; i < m; i++) {
            acc += expf(l[ord[i]] - mx);
            if (acc >= top_p * z) {
                k = i + 1;
                break;
            }
        }
        m = k;
    }
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (min_p <= 0 || l[ord[i]] >= mx + logf(min_p)) out[k++] = ord[i];
    qsort(out, k, sizeof(int32_t), cmp_asc); /* canonical: ids ascending, like sample_debug_keep */
    free(ord);
    return k;
}

/* Two sizes: on the larger one's flat logits, top_p's selection works on
 * most of 20,000 candidates (a high temperature, a random-weight model). */
static void test_filters_vs_reference(void) {
    enum { NMAX = 20000 };
    static float l[NMAX], c[NMAX];
    static int32_t got[NMAX], want[NMAX];
    struct {
        int k;
        float p, minp;
    } cfg[] = {{5, 1, 0}, {1, 1, 0}, {0, 0.5f, 0}, {0, 0.95f, 0}, {0, 0.999f, 0}, {40, 0.9f, 0},
               {0, 1, 0.05f}, {0, 0.9f, 0.2f}, {100, 0.8f, 0.01f}, {-1, 1, 0}, {0, 0.0f, 0}};
    int bad = 0;
    for (int n = 3000; n <= NMAX; n += NMAX - 3000)
        for (size_t ci = 0; ci < CORE_ARRAY_LEN(cfg); ci++)
            for (int rep = 0; rep < 8; rep++) {
                const int k = cfg[ci].k < 0 ? n : cfg[ci].k; /* -1: top_k of the whole vocabulary */
                fill_logits(l, n, rep < 4 ? 2.0 : 8.0, rep & 1);
                sample_params p = params(1.0f, k, cfg[ci].p, cfg[ci].minp);
                sampler *s = sample_new(&p, n);
                memcpy(c, l, sizeof(float) * (size_t)n);
                size_t m = sample_debug_keep(s, c, NULL, 0, got);
                size_t r = ref_keep(l, n, k, cfg[ci].p, cfg[ci].minp, want);
                /* top_p's boundary is a float sum compared with p*Z: summation
                 * order may move it by one token when a partial sum sits on it */
                int ok = m == r && !memcmp(got, want, m * sizeof *got);
                if (!ok && cfg[ci].p < 1 && (m == r + 1 || m + 1 == r)) ok = 1;
                bad += !ok;
                CHECK_MSG(ok, "n %d cfg %zu rep %d: kept %zu, reference %zu", n, ci, rep, m, r);
                if (k > 0 && k < n && cfg[ci].p >= 1 && cfg[ci].minp == 0) CHECK_EQ_INT(m, k);
                sample_free(s);
            }
    CHECK_EQ_INT(bad, 0);
}

static void test_small_vocab_empirical(void) {
    /* probabilities 0.5 0.2 0.15 0.1 0.05 */
    const float pr[5] = {0.5f, 0.2f, 0.15f, 0.1f, 0.05f};
    float base[5], l[5];
    int32_t keep[5];
    for (int i = 0; i < 5; i++) base[i] = logf(pr[i]);
    struct {
        float top_p, min_p;
        int top_k;
        size_t n;
    } cfg[] = {{0.8f, 0, 0, 3}, {0.69f, 0, 0, 2}, {0.3f, 0, 0, 1}, {1, 0.25f, 0, 3}, {1, 0.11f, 0, 4},
               {1, 0, 2, 2}, {1, 0, 0, 5}};
    for (size_t ci = 0; ci < CORE_ARRAY_LEN(cfg); ci++) {
        sample_params p = params(1.0f, cfg[ci].top_k, cfg[ci].top_p, cfg[ci].min_p);
        p.seed = 7 + ci;
        sampler *s = sample_new(&p, 5);
        memcpy(l, base, sizeof l);
        size_t m = sample_debug_keep(s, l, NULL, 0, keep);
        CHECK_EQ_INT(m, cfg[ci].n);
        for (size_t i = 0; i < m; i++) CHECK_EQ_INT(keep[i], i); /* the best ones */
        /* draw: frequencies follow the renormalized probabilities */
        int cnt[5] = {0};
        enum { DRAWS = 20000 };
        for (int t = 0; t < DRAWS; t++) {
            memcpy(l, base, sizeof l);
            cnt[sample_next(s, l, NULL, 0)]++;
        }
        double mass = 0;
        for (size_t i = 0; i < cfg[ci].n; i++) mass += pr[i];
        for (size_t i = 0; i < 5; i++) {
            double want = i < cfg[ci].n ? pr[i] / mass : 0.0;
            CHECK_MSG(fabs(cnt[i] / (double)DRAWS - want) < 0.015, "cfg %zu id %zu: %g vs %g", ci, i,
                      cnt[i] / (double)DRAWS, want);
        }
        sample_free(s);
    }
    /* temperature sharpens: T = 0.5 squares the odds */
    sample_params p = params(0.5f, 0, 1.0f, 0.0f);
    sampler *s = sample_new(&p, 5);
    int c0 = 0;
    for (int t = 0; t < 20000; t++) {
        memcpy(l, base, sizeof l);
        c0 += sample_next(s, l, NULL, 0) == 0;
    }
    double z = 0;
    for (int i = 0; i < 5; i++) z += pr[i] * pr[i];
    CHECK_NEAR(c0 / 20000.0, 0.25 / z, 0.015);
    sample_free(s);
}

static void test_penalties(void) {
    sample_params p = params(0.0f, 0, 1.0f, 0.0f);
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    p.penalty_last_n = 64;
    sampler *s = sample_new(&p, 5);
    float l[5] = {2, -2, 1, 0.5f, 0};
    const int32_t recent[] = {0, 1, 0, -3, 99};
    sample_next(s, l, recent, 5);
    CHECK_NEAR(l[0], 2.0 / 2 - (2 * 0.5 + 0.25), 1e-6); /* positive: divided; seen twice */
    CHECK_NEAR(l[1], -2.0 * 2 - (0.5 + 0.25), 1e-6);     /* negative: multiplied */
    CHECK_NEAR(l[2], 1, 0);
    CHECK_NEAR(l[3], 0.5, 0);
    CHECK_NEAR(l[4], 0, 0);
    sample_free(s);
    /* window: only the last 2 ids count */
    p.penalty_last_n = 2;
    s = sample_new(&p, 5);
    float m[5] = {2, -2, 1, 0.5f, 0};
    const int32_t r2[] = {0, 1, 0};
    CHECK_EQ_INT(sample_next(s, m, r2, 3), 2); /* 0 fell to 0.25, 2 is now the best */
    CHECK_NEAR(m[0], 1 - 0.75, 1e-6);
    CHECK_NEAR(m[1], -4.75, 1e-6);
    /* the count array is left clean: a second call without history changes nothing */
    float q[5] = {2, -2, 1, 0.5f, 0};
    sample_next(s, q, NULL, 0);
    CHECK(q[0] == 2 && q[1] == -2);
    sample_free(s);
    /* all off: untouched */
    p = params(0.0f, 0, 1.0f, 0.0f);
    s = sample_new(&p, 5);
    float u[5] = {2, -2, 1, 0.5f, 0};
    sample_next(s, u, r2, 3);
    CHECK(u[0] == 2 && u[1] == -2);
    sample_free(s);
}

static void test_speed_128k(void) {
    enum { N = 128256, T = 50 };
    float *base = malloc(sizeof(float) * N), *l = malloc(sizeof(float) * N);
    fill_logits(base, N, 6.0, 0);
    int32_t recent[64];
    for (int i = 0; i < 64; i++) recent[i] = i * 7;
    struct {
        const char *name;
        sample_params p;
    } cfg[] = {{"default (T 0.6, top_p 0.95)", params(0.6f, 0, 0.95f, 0)},
               {"top_k 40 + top_p 0.9 + min_p 0.05", params(0.8f, 40, 0.9f, 0.05f)},
               {"T 1 only", params(1.0f, 0, 1.0f, 0)},
               {"greedy", params(0.0f, 0, 1.0f, 0)}};
    for (size_t ci = 0; ci < CORE_ARRAY_LEN(cfg); ci++) {
        cfg[ci].p.repeat_penalty = 1.1f;
        sampler *s = sample_new(&cfg[ci].p, N);
        double t0 = core_now_s();
        for (int t = 0; t < T; t++) {
            memcpy(l, base, sizeof(float) * N);
            int32_t id = sample_next(s, l, recent, 64);
            CHECK(id >= 0 && id < N);
        }
        double ms = (core_now_s() - t0) * 1e3 / T;
        fprintf(stderr, "  sample_next, 128256 vocab, %s: %.3f ms/token (sanitized build)\n", cfg[ci].name, ms);
        CHECK(ms < 50); /* sanitizers cost ~5-10x; the release build is far below 1 ms */
        sample_free(s);
    }
    free(base);
    free(l);
}

/* ---- stop strings --------------------------------------------------------- */

typedef struct {
    const char *stops[3];
    size_t nstops;
    const char *text;
    int stopped;
    const char *emitted;
} stop_case;

static const stop_case STOP_CASES[] = {
    {{"<|im_end|>", "\n\nUser:"}, 2, "Hello world<|im_end|>junk after", 1, "Hello world"},
    {{"<|im_end|>", "\n\nUser:"}, 2, "line\n\nUse it\n\nUser: x", 1, "line\n\nUse it"},
    {{"<|im_end|>"}, 1, "abc<|im_", 0, "abc<|im_"},
    {{"abcd", "bc"}, 2, "xabcd", 1, "xa"},
    {{"aab"}, 1, "aaab!", 1, "a"},
    {{"aab"}, 1, "aaaa", 0, "aaaa"},
    {{"x"}, 1, "x", 1, ""},
    {{"END"}, 1, "no stop here at all, just a longer text that spans more than one chunk of sixty-four "
                 "bytes, E N D, EN, and END? yes",
     1, "no stop here at all, just a longer text that spans more than one chunk of sixty-four bytes, E N D, EN, "
        "and "},
    {{NULL}, 0, "passes <|im_end|> through", 0, "passes <|im_end|> through"},
    {{"\xe4\xb8\x96\xe7\x95\x8c"}, 1, "h\xc3\xa9 \xe4\xb8\x96\xe4\xb8\x96\xe7\x95\x8c!", 1, "h\xc3\xa9 \xe4\xb8\x96"},
};

static int run_stop(const stop_case *c, const size_t *cuts, size_t ncuts, core_buf *out) {
    sample_stop st;
    CHECK_EQ_INT(sample_stop_init(&st, c->stops, c->nstops, NULL), 0);
    core_buf_clear(out);
    size_t len = strlen(c->text), at = 0;
    int stopped = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        int rc = sample_stop_push(&st, c->text + at, end - at, out);
        CHECK(rc == 0 || rc == 1);
        if (stopped) CHECK_EQ_INT(rc, 1); /* stays stopped */
        stopped |= rc == 1;
        at = end;
    }
    CHECK_EQ_INT(sample_stop_flush(&st, out), 0);
    core_buf_puts(out, "");
    return stopped;
}

/* sample_next_lp: the same id as sample_next for the same seed, logprobs of
 * the distribution drawn from (a softmax over the kept candidates at the
 * temperature), top list best first, greedy's pick the best. */
static void test_logprobs(void) {
    enum { NV = 64 };
    float base[NV], a[NV], b[NV];
    for (int i = 0; i < NV; i++) base[i] = (float)((i * 37) % 23) * 0.25f - 2.0f;
    sample_params p;
    sample_params_default(&p);
    p.temperature = 0.8f;
    p.top_p = 1.0f;
    p.seed = 42;
    sampler *s1 = sample_new(&p, NV), *s2 = sample_new(&p, NV);
    for (int round = 0; round < 20; round++) {
        memcpy(a, base, sizeof a);
        memcpy(b, base, sizeof b);
        sample_logprob ch, top[SAMPLE_TOP_MAX];
        int nt;
        int32_t x = sample_next(s1, a, NULL, 0);
        int32_t y = sample_next_lp(s2, b, NULL, 0, 5, &ch, top, &nt);
        CHECK_EQ_INT(x, y);
        CHECK_EQ_INT(ch.id, y);
        CHECK_EQ_INT(nt, 5);
        /* the reference: log softmax(base / T) over all ids (no filter here) */
        double mx = -1e9, z = 0;
        for (int i = 0; i < NV; i++) mx = base[i] > mx ? base[i] : mx;
        for (int i = 0; i < NV; i++) z += exp((base[i] - mx) / 0.8);
        double want = (base[y] - mx) / 0.8 - log(z);
        CHECK(fabs(ch.logprob - want) < 1e-4);
        double sum = 0;
        for (int k = 0; k < nt; k++) {
            sum += exp(top[k].logprob);
            if (k) CHECK(top[k - 1].logprob >= top[k].logprob);
            CHECK(fabs(top[k].logprob - ((base[top[k].id] - mx) / 0.8 - log(z))) < 1e-4);
        }
        CHECK(sum <= 1.0 + 1e-6);
        if (ch.logprob > top[nt - 1].logprob) {
            int found = 0;
            for (int k = 0; k < nt; k++) found |= top[k].id == y;
            CHECK(found);
        }
    }
    sample_free(s1);
    sample_free(s2);
    /* greedy: the pick is top[0]; top_p cuts the list to what survives */
    p.temperature = 0;
    sampler *g = sample_new(&p, NV);
    memcpy(a, base, sizeof a);
    sample_logprob ch, top[SAMPLE_TOP_MAX];
    int nt;
    int32_t id = sample_next_lp(g, a, NULL, 0, 3, &ch, top, &nt);
    CHECK_EQ_INT(nt, 3);
    CHECK_EQ_INT(top[0].id, id);
    CHECK(ch.logprob == top[0].logprob);
    sample_free(g);
    p.temperature = 1.0f;
    p.top_k = 2;
    sampler *k2 = sample_new(&p, NV);
    memcpy(a, base, sizeof a);
    sample_next_lp(k2, a, NULL, 0, 5, &ch, top, &nt);
    CHECK_EQ_INT(nt, 2); /* top_k 2: only two had a chance */
    CHECK(fabs(exp(top[0].logprob) + exp(top[1].logprob) - 1.0) < 1e-5);
    sample_free(k2);
}

static void test_stop_strings(void) {
    core_buf out = {0};
    for (size_t k = 0; k < CORE_ARRAY_LEN(STOP_CASES); k++) {
        const stop_case *c = &STOP_CASES[k];
        size_t len = strlen(c->text);
        int s = run_stop(c, NULL, 0, &out);
        CHECK_MSG(s == c->stopped && !strcmp(out.data, c->emitted), "case %zu whole: %d [%s]", k, s, out.data);
        for (size_t i = 0; i <= len; i++)
            for (size_t j = i; j <= len; j += (len > 40 ? 7 : 1)) {
                size_t cuts[2] = {i, j};
                s = run_stop(c, cuts, 2, &out);
                CHECK_MSG(s == c->stopped && !strcmp(out.data, c->emitted), "case %zu cuts %zu,%zu: %d [%s]", k,
                          i, j, s, out.data);
            }
        size_t bytes[256];
        for (size_t i = 0; i + 1 < len && i < 256; i++) bytes[i] = i + 1;
        s = run_stop(c, bytes, len ? len - 1 : 0, &out);
        CHECK_MSG(s == c->stopped && !strcmp(out.data, c->emitted), "case %zu bytewise: %d [%s]", k, s, out.data);
    }
    /* held back while partial, released once disproved */
    sample_stop st;
    const char *stops[] = {"<|im_end|>"};
    CHECK_EQ_INT(sample_stop_init(&st, stops, 1, NULL), 0);
    core_buf_clear(&out);
    CHECK_EQ_INT(sample_stop_push(&st, "ok <|im", 7, &out), 0);
    CHECK_EQ_INT(out.len, 3);
    CHECK_EQ_INT(sample_stop_push(&st, "age", 3, &out), 0);
    CHECK_EQ_STR(out.data, "ok <|image");
    /* bad configurations */
    core_err e = {0};
    const char *empty[] = {""};
    CHECK_EQ_INT(sample_stop_init(&st, empty, 1, &e), CORE_EINVAL);
    char longs[100];
    memset(longs, 'a', 99);
    longs[99] = 0;
    const char *lp[] = {longs};
    CHECK_EQ_INT(sample_stop_init(&st, lp, 1, &e), CORE_EINVAL);
    const char *many[9] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    CHECK_EQ_INT(sample_stop_init(&st, many, 9, &e), CORE_EINVAL);
    CHECK(strstr(e.msg, "too many") != NULL);
    core_buf_free(&out);
}

int main(void) {
    T_RUN(test_params);
    T_RUN(test_determinism);
    T_RUN(test_greedy);
    T_RUN(test_filters_vs_reference);
    T_RUN(test_small_vocab_empirical);
    T_RUN(test_penalties);
    T_RUN(test_speed_128k);
    T_RUN(test_stop_strings);
    T_RUN(test_logprobs);
    return t_done();
}
