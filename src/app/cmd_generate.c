/* cmd_generate.c -- `smolbot generate`: raw completion from a prompt.
 *
 * The plainest use of the engine: tokens in (text or ids), prefill in one
 * batched forward, then decode token by token, streaming text (or printing
 * the ids as one JSON array with --ids). A stats line goes to stderr.
 * --dump-logits writes the logits at the last prompt position in the
 * reference files' layout (n_vocab float32, little-endian), which is how
 * our numbers are compared with llama.cpp's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "kern/kern.h"
#include "model/model.h"
#include "sample/sample.h"
#include "tok/tok.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: smolbot generate -m MODEL (--prompt TEXT | --prompt-ids 1,2,3) [options]\n"
            "  -n N               tokens to generate (default 128)\n"
            "  --greedy           argmax decoding (same as --temp 0)\n"
            "  --temp T --top-k K --top-p P --min-p P --seed S   sampling (defaults 0.6 / off / 0.95 / off / 0)\n"
            "  --ids              print the generated ids as one JSON array instead of text\n"
            "  --special          parse special-token text in --prompt (e.g. <|im_start|>)\n"
            "  --ignore-eos       do not stop at end-of-turn tokens\n"
            "  --ctx N            KV cache positions (default 4096)\n"
            "  --kv f16|f32|q8    KV cache type (default f16)\n"
            "  -t N               threads (default: all cores)\n"
            "  --gpu auto|on|off  CUDA GPU (default auto: used when built with CUDA and present)\n"
            "  --batch N          prefill chunk size (default 256)\n"
            "  --dump-logits FILE write the logits at the last prompt position (float32 LE)\n");
}

static int parse_ids(const char *s, int32_t **ids, size_t *n) {
    size_t cap = 16;
    *ids = malloc(cap * sizeof **ids);
    *n = 0;
    if (!*ids) return -1;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX) return -1;
        if (*n == cap) {
            int32_t *p = realloc(*ids, (cap *= 2) * sizeof **ids);
            if (!p) return -1;
            *ids = p;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    return *n ? 0 : -1;
}

static int write_logits(const char *path, const float *logits, int n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(logits, sizeof(float), (size_t)n, f);
    return (fclose(f) == 0 && w == (size_t)n) ? 0 : -1;
}

int cmd_generate(int argc, char **argv) {
    const char *model_opt = NULL, *prompt = NULL, *prompt_ids = NULL, *dump = NULL, *kvs = "f16";
    long n_gen = 128, n_ctx = 4096, threads = 0, batch = 0;
    int print_ids = 0, special = 0, ignore_eos = 0;
    sample_params sp;
    sample_params_default(&sp);
    if (app_wants_help(argc, argv)) { usage(stdout); return 0; }
    int gpu = MODEL_GPU_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int sr = app_parse_sampling(argc, argv, &i, &sp, NULL);
        if (sr < 0) return 2;
        if (sr > 0) continue;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!(model_opt = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--prompt") || !strcmp(a, "-p")) { if (!(prompt = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--prompt-ids")) { if (!(prompt_ids = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--dump-logits")) { if (!(dump = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--kv")) { if (!(kvs = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "-n")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &n_gen)) return 2; }
        else if (!strcmp(a, "--ctx")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &n_ctx)) return 2; }
        else if (!strcmp(a, "-t")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &threads)) return 2; }
        else if (!strcmp(a, "--gpu")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_gpu(v, &gpu)) return 2; }
        else if (!strcmp(a, "--batch")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &batch)) return 2; }
        else if (!strcmp(a, "--ids")) print_ids = 1;
        else if (!strcmp(a, "--special")) special = 1;
        else if (!strcmp(a, "--ignore-eos")) ignore_eos = 1;
        else { fprintf(stderr, "generate: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (!!prompt == !!prompt_ids) { fprintf(stderr, "generate: give exactly one of --prompt or --prompt-ids\n"); return 2; }
    int kv_type = MODEL_KV_F16;
    if (n_gen < 0 || n_ctx < 1 || threads < 0 || batch < 0 || app_parse_kv(kvs, &kv_type)) {
        fprintf(stderr, "generate: bad -n / --ctx / -t / --batch / --kv value\n");
        return 2;
    }
    core_err err = {0};
    if (sample_params_check(&sp, &err)) { fprintf(stderr, "generate: %s\n", err.msg); return 2; }
    char path[4096];
    if (app_find_model(model_opt, path, sizeof path)) {
        fprintf(stderr, "generate: no model found: give -m PATH or set MODEL_PATH (or run 'smolbot pull')\n");
        return 1;
    }

    int rc = 1;
    gguf *g = NULL;
    model *m = NULL;
    model_kv *kv = NULL;
    tok *tk = NULL;
    sampler *smp = NULL;
    int32_t *ids = NULL, *out_ids = NULL;
    size_t n_ids = 0, cap_ids = 0;
    float *logits = NULL;
    core_buf text = {0};

    kern_init(NULL);
    if (gguf_open(&g, path, &err)) goto done;
    model_opts mo = {(int)threads, (int)batch, gpu};
    if (model_load(&m, g, &mo, &err)) goto done;
    const model_config *c = model_get_config(m);
    if (tok_load(&tk, g, &err)) goto done;
    if (prompt_ids) {
        if (parse_ids(prompt_ids, &ids, &n_ids)) { fprintf(stderr, "generate: bad --prompt-ids list\n"); goto done; }
    } else if (tok_encode(tk, prompt, strlen(prompt), special, &ids, &n_ids, &cap_ids, &err) ||
               tok_add_bos(tk, &ids, &n_ids, &cap_ids, &err)) {
        goto done;
    }
    if (n_ids == 0) { fprintf(stderr, "generate: the prompt is empty\n"); goto done; }
    if (model_kv_new(&kv, m, (int)n_ctx, kv_type, &err)) goto done;
    if ((long)n_ids + n_gen > model_kv_ctx(kv)) {
        long room = model_kv_ctx(kv) - (long)n_ids;
        if (room <= 0) { core_errf(&err, CORE_EFULL, "prompt of %zu tokens does not fit the context of %d", n_ids, model_kv_ctx(kv)); goto done; }
        fprintf(stderr, "generate: -n %ld cut to %ld to fit the context of %d\n", n_gen, room, model_kv_ctx(kv));
        n_gen = room;
    }
    logits = malloc((size_t)c->n_vocab * sizeof(float));
    out_ids = malloc((size_t)(n_gen + 1) * sizeof(int32_t));
    smp = sample_new(&sp, c->n_vocab);
    if (!logits || !out_ids || !smp) { core_errf(&err, CORE_ENOMEM, "out of memory"); goto done; }

    double t0 = core_now_s();
    if (model_forward(m, kv, ids, (int)n_ids, logits, 0, NULL, &err)) goto done;
    double t1 = core_now_s();
    if (dump && write_logits(dump, logits, c->n_vocab)) { core_errf(&err, CORE_EIO, "cannot write %s", dump); goto done; }

    tok_stream ts;
    tok_stream_init(&ts, tk, 0);
    long n_out = 0;
    for (; n_out < n_gen; n_out++) {
        int32_t id = sample_next(smp, logits, out_ids, (size_t)n_out);
        out_ids[n_out] = id;
        if (!ignore_eos && tok_is_stop(tk, id)) { n_out++; break; }
        if (!print_ids) {
            core_buf_clear(&text);
            tok_stream_push(&ts, id, &text);
            fwrite(text.data, 1, text.len, stdout);
            fflush(stdout);
        }
        if (n_out + 1 < n_gen && model_forward(m, kv, &id, 1, logits, 0, NULL, &err)) goto done;
    }
    double t2 = core_now_s();
    if (print_ids) {
        printf("[");
        for (long i = 0; i < n_out; i++) printf("%s%d", i ? ", " : "", out_ids[i]);
        printf("]\n");
    } else {
        core_buf_clear(&text);
        tok_stream_flush(&ts, &text, 1);
        fwrite(text.data, 1, text.len, stdout);
        printf("\n");
    }
    long n_dec = n_out > 1 ? n_out - 1 : 0;
    fprintf(stderr, "prompt %zu tokens, prefill %.2f tok/s (%.0f ms); generated %ld tokens, decode %.2f tok/s; %d threads, %s kernels\n",
            n_ids, (double)n_ids / (t1 - t0), (t1 - t0) * 1e3, n_out, n_dec ? (double)n_dec / (t2 - t1) : 0.0,
            model_threads(m), kern_isa());
    rc = 0;
done:
    if (rc && err.msg[0]) fprintf(stderr, "generate: %s\n", err.msg);
    core_buf_free(&text);
    free(ids); free(out_ids); free(logits);
    sample_free(smp);
    tok_free(tk);
    model_kv_free(kv);
    model_free(m);
    gguf_close(g);
    return rc;
}
