/* bench_tok.c -- tokenizer benchmark, run as `smolbot bench --tokenizer`.
 *
 *   app_bench_tokenizer(argc, argv): [-m MODEL] [--text FILE] [--cjk FILE]
 *
 * Measures: tokenizer load time (median of 5), then encode throughput on an
 * English text (FILE, default ../shared/refdata/model/gpl-3.txt, repeated to
 * 1 MB) and a CJK text (FILE, or a generated one) at 10 KB, 100 KB and 1 MB,
 * so growth can be read off (linear is the goal; n log n the bound); plus
 * decode throughput. Each timing is the best of a few runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "tok/tok.h"

/* -m PATH, else $MODEL_PATH. (The shared lookup in modelpath.c can replace
 * this once it is in; kept local so this file builds on its own.) */
static int tok_app_model_path(const char *opt, char *out, size_t cap) {
    const char *p = opt && *opt ? opt : getenv("MODEL_PATH");
    if (!p || !*p) return -1;
    return snprintf(out, cap, "%s", p) < (int)cap ? 0 : -1;
}

/* Repeat src into a buffer of about `size` bytes, cut at a UTF-8 boundary. */
static char *repeat_to(const char *src, size_t n, size_t size, size_t *out_len) {
    char *b = malloc(size + 1);
    if (!b || !n) {
        free(b);
        return NULL;
    }
    for (size_t o = 0; o < size; o += n) memcpy(b + o, src, CORE_MIN(n, size - o));
    size_t len = core_utf8_complete_prefix(b, size); /* whole characters only */
    b[len] = 0;
    *out_len = len;
    return b;
}

/* Deterministic CJK-like text: common Han characters, some kana and
 * Hangul, full-width punctuation, a few ASCII digits. */
static char *gen_cjk(size_t size, size_t *out_len) {
    static const uint32_t ranges[][2] = {{0x4E00, 0x4FFF}, {0x5000, 0x62FF}, {0x3041, 0x3093}, {0x30A1, 0x30F3},
                                         {0xAC00, 0xAFFF}};
    static const uint32_t punct[] = {0x3001, 0x3002, 0xFF0C, 0xFF01, 0x300C, 0x300D, 0x20, 0x0A};
    char *b = malloc(size + 8);
    if (!b) return NULL;
    uint64_t x = 88172645463325252ull;
    size_t o = 0;
    while (o + 4 <= size) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint32_t r = (uint32_t)(x >> 32), cp;
        if (r % 9 == 0) cp = punct[(r >> 8) % CORE_ARRAY_LEN(punct)];
        else if (r % 23 == 0) cp = '0' + (r >> 8) % 10;
        else {
            size_t k = (r >> 4) % 8;
            k = k < 5 ? (k < 3 ? 0 : 1) : k - 3; /* mostly Han */
            cp = ranges[k][0] + (r >> 12) % (ranges[k][1] - ranges[k][0] + 1);
        }
        o += (size_t)core_utf8_encode(cp, b + o);
    }
    b[o] = 0;
    *out_len = o;
    return b;
}

/* Best time of `reps` encodes of text[0..len). */
static double time_encode(const tok *t, const char *text, size_t len, int reps, size_t *ntok) {
    double best = 1e30;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    for (int r = 0; r < reps; r++) {
        n = 0;
        double t0 = core_now_s();
        if (tok_encode(t, text, len, 0, &ids, &n, &cap, NULL)) break;
        double dt = core_now_s() - t0;
        if (dt < best) best = dt;
    }
    *ntok = n;
    free(ids);
    return best;
}

static void bench_text(const tok *t, const char *name, const char *text, size_t len) {
    static const size_t sizes[] = {10 * 1024, 100 * 1024, 1024 * 1024};
    double prev = 0;
    size_t prev_len = 0;
    for (size_t i = 0; i < CORE_ARRAY_LEN(sizes); i++) {
        size_t n = core_utf8_complete_prefix(text, CORE_MIN(sizes[i], len));
        size_t ntok;
        int reps = sizes[i] <= 100 * 1024 ? 20 : 5;
        double dt = time_encode(t, text, n, reps, &ntok);
        printf("  encode %-8s %8zu B  %7zu tokens  %8.2f ms  %7.1f MB/s  %5.2f B/token", name, n, ntok, dt * 1e3,
               n / dt / 1e6, ntok ? (double)n / ntok : 0);
        if (prev > 0) printf("  x%.1f time for x%.1f size", dt / prev, (double)n / prev_len);
        printf("\n");
        prev = dt;
        prev_len = n;
    }
}

int app_bench_tokenizer(int argc, char **argv) {
    const char *model_opt = NULL, *text_path = NULL, *cjk_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (!(model_opt = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--text")) {
            if (!(text_path = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--cjk")) {
            if (!(cjk_path = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            printf("usage: smolbot bench --tokenizer [-m MODEL] [--text FILE] [--cjk FILE]\n");
            return 0;
        }
    }
    char path[1024], def_text[1024];
    if (tok_app_model_path(model_opt, path, sizeof path)) {
        fprintf(stderr, "smolbot bench: no model: pass -m MODEL.gguf or set MODEL_PATH\n");
        return 1;
    }
    if (!text_path) {
        const char *root = getenv("SMOLBOT_SHARED");
        snprintf(def_text, sizeof def_text, "%s/refdata/model/gpl-3.txt", root && *root ? root : "../shared");
        text_path = def_text;
    }
    core_err err = {0};
    gguf *g;
    if (gguf_open(&g, path, &err)) {
        fprintf(stderr, "smolbot bench: %s\n", err.msg);
        return 1;
    }
    double loads[5];
    tok *t = NULL;
    for (int i = 0; i < 5; i++) {
        tok_free(t);
        double t0 = core_now_s();
        if (tok_load(&t, g, &err)) {
            fprintf(stderr, "smolbot bench: %s\n", err.msg);
            gguf_close(g);
            return 1;
        }
        loads[i] = core_now_s() - t0;
    }
    gguf_close(g);
    for (int i = 1; i < 5; i++) /* insertion sort, 5 values */
        for (int j = i; j > 0 && loads[j] < loads[j - 1]; j--) {
            double x = loads[j];
            loads[j] = loads[j - 1];
            loads[j - 1] = x;
        }
    printf("tokenizer: %s\n  load: %d tokens, median %.1f ms (min %.1f)\n", path, tok_n_vocab(t), loads[2] * 1e3,
           loads[0] * 1e3);

    char *src = NULL;
    size_t src_len = 0;
    int status = 0;
    if (core_read_file(text_path, &src, &src_len, &err)) {
        fprintf(stderr, "smolbot bench: English text: %s (pass --text FILE)\n", err.msg);
        status = 1;
    } else {
        size_t len;
        char *en = repeat_to(src, src_len, 1024 * 1024, &len);
        if (en) {
            bench_text(t, "english", en, len);
            /* decode: the ids of 1 MB back to text */
            int32_t *ids = NULL;
            size_t n = 0, cap = 0;
            if (tok_encode(t, en, len, 0, &ids, &n, &cap, NULL) == 0) {
                core_buf out = {0};
                double best = 1e30;
                for (int r = 0; r < 5; r++) {
                    core_buf_clear(&out);
                    double t0 = core_now_s();
                    tok_decode(t, ids, n, 0, &out);
                    double dt = core_now_s() - t0;
                    if (dt < best) best = dt;
                }
                printf("  decode english %zu tokens  %.2f ms  %.1f Mtokens/s\n", n, best * 1e3, n / best / 1e6);
                core_buf_free(&out);
            }
            free(ids);
        }
        free(en);
        free(src);
    }
    src = NULL;
    size_t len = 0;
    char *cjk = NULL;
    if (cjk_path) {
        if (core_read_file(cjk_path, &src, &src_len, &err) == 0) cjk = repeat_to(src, src_len, 1024 * 1024, &len);
        else fprintf(stderr, "smolbot bench: CJK text: %s\n", err.msg);
        free(src);
    } else {
        cjk = gen_cjk(1024 * 1024, &len);
    }
    if (cjk) bench_text(t, "cjk", cjk, len);
    free(cjk);
    tok_free(t);
    return status;
}
