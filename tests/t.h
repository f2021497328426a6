/* t.h -- the tiny test harness every tests/test_*.c uses.
 *
 * A test is a function `static void test_x(void)`; T_RUN(test_x) runs it.
 * CHECK* macros record a failure with file:line and keep going; a test
 * passes when none of its checks failed. T_SKIP(msg) skips the rest of a
 * test (counted apart). t_done() prints "N passed, N failed, N skipped"
 * and returns the exit status. tests/run.sh adds the lines up.
 *
 * Reference files live in ../shared (SMOLBOT_SHARED overrides): use
 * t_shared("models/x.gguf"), which returns NULL when shared/ is absent so
 * the test can skip with a clear message.
 */
#ifndef T_H
#define T_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int t_passed, t_failed, t_skipped, t_cur_failed, t_cur_skipped;
static const char *t_cur_name;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "  FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, t_cur_name, #cond); \
            t_cur_failed++;                                                              \
        }                                                                                \
    } while (0)

#define CHECK_MSG(cond, ...)                                                             \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "  FAIL %s:%d: %s: %s: ", __FILE__, __LINE__, t_cur_name, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                \
            fprintf(stderr, "\n");                                                       \
            t_cur_failed++;                                                              \
        }                                                                                \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                               \
    do {                                                                                 \
        long long t_a = (long long)(a), t_b = (long long)(b);                            \
        CHECK_MSG(t_a == t_b, "%lld != %lld", t_a, t_b);                                 \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                               \
    do {                                                                                 \
        const char *t_a = (a), *t_b = (b);                                               \
        CHECK_MSG(t_a && t_b && strcmp(t_a, t_b) == 0, "\"%s\" != \"%s\"", t_a ? t_a : "(null)", \
                  t_b ? t_b : "(null)");                                                 \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                            \
    do {                                                                                 \
        double t_a = (double)(a), t_b = (double)(b);                                     \
        CHECK_MSG(fabs(t_a - t_b) <= (tol), "%.9g vs %.9g (tol %g)", t_a, t_b, (double)(tol)); \
    } while (0)

#define T_SKIP(...)                                                                      \
    do {                                                                                 \
        fprintf(stderr, "  SKIP %s: ", t_cur_name);                                      \
        fprintf(stderr, __VA_ARGS__);                                                    \
        fprintf(stderr, "\n");                                                           \
        t_cur_skipped = 1;                                                               \
        return;                                                                          \
    } while (0)

/* T_TIME=1 in the environment: each test's wall time on stderr */
static inline double t_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define T_RUN(fn)                                                                        \
    do {                                                                                 \
        t_cur_name = #fn;                                                                \
        t_cur_failed = 0;                                                                \
        t_cur_skipped = 0;                                                               \
        const double t_t0 = t_now();                                                     \
        fn();                                                                            \
        if (getenv("T_TIME")) fprintf(stderr, "  time %s: %.2f s\n", #fn, t_now() - t_t0); \
        if (t_cur_failed) { t_failed++; fprintf(stderr, "not ok %s\n", #fn); }           \
        else if (t_cur_skipped) t_skipped++;                                             \
        else t_passed++;                                                                 \
    } while (0)

static inline int t_done(void) {
    printf("%d passed, %d failed, %d skipped\n", t_passed, t_failed, t_skipped);
    return t_failed ? 1 : 0;
}

/* Path of a file in shared/, or NULL when it is not there. */
static inline const char *t_shared(const char *rel) {
    static char buf[8][1024];
    static int slot;
    const char *root = getenv("SMOLBOT_SHARED");
    if (!root || !*root) root = "../shared";
    char *out = buf[slot++ % 8];
    snprintf(out, sizeof buf[0], "%s/%s", root, rel);
    return access(out, R_OK) == 0 ? out : NULL;
}

/* A fresh temp directory for this test binary (created once). */
static inline const char *t_tmpdir(void) {
    static char dir[256];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/smolbot-test-XXXXXX");
        if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    }
    return dir;
}

#endif
