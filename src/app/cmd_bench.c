/* cmd_bench.c -- `smolbot bench`: what a user of llama-bench expects.
 *
 *   prefill tok/s for a p-token prompt, decode tok/s at each context depth,
 *   time to first token, peak RSS, and the weight bandwidth decode achieves
 *   next to a plain read bandwidth measured in the same run, so a result
 *   reads as a fraction of the machine's limit.
 *
 * Depths are reached with synthetic KV contents by default (attention costs
 * the same whatever the values; --real-fill prefills real tokens instead,
 * which takes minutes on the 3B model). Each figure is the best of -r runs.
 * --kernels and --tokenizer run the micro-benchmarks instead.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "kern/kern.h"
#include "model/model.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: smolbot bench -m MODEL [options]\n"
            "  -p N         prompt tokens for prefill (default 512)\n"
            "  -n N         tokens to decode at each depth (default 128)\n"
            "  -d LIST      context depths for decode, e.g. 0,2048,4096 (default 0)\n"
            "  -t N         threads (default: all cores)\n"
            "  --gpu auto|on|off  CUDA GPU (default auto: used when built with CUDA and present)\n"
            "  --kv f16|f32|q8    KV cache type (default f16)\n"
            "  -r N         repetitions, best is kept (default 3)\n"
            "  --real-fill  reach each depth by prefilling real tokens (slow)\n"
            "  --json       one JSON object on stdout\n"
            "       smolbot bench --kernels [-t N] [--isa scalar|avx2|avx512|amx] [--quick]\n"
            "       smolbot bench --kernels --gpu on [--quick]   (the CUDA kernels; bench build)\n"
            "       smolbot bench --tokenizer [-m MODEL] [--text FILE] [--cjk FILE]\n");
}

#define MAX_DEPTHS 16

static int parse_depths(const char *s, long *d, int *n) {
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || *n == MAX_DEPTHS) return -1;
        d[(*n)++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return *n ? 0 : -1;
}

int cmd_bench(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--kernels")) return app_bench_kernels(argc, argv);
        if (!strcmp(argv[i], "--tokenizer")) return app_bench_tokenizer(argc, argv);
    }
    if (app_wants_help(argc, argv)) { usage(stdout); return 0; }
    const char *model_opt = NULL;
    long p = 512, n = 128, threads = 0, reps = 3, depths[MAX_DEPTHS] = {0};
    int n_depths = 1, json = 0, real_fill = 0, gpu = MODEL_GPU_AUTO, kv_type = MODEL_KV_F16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!(model_opt = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "-p")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &p)) return 2; }
        else if (!strcmp(a, "-n")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &n)) return 2; }
        else if (!strcmp(a, "-t")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &threads)) return 2; }
        else if (!strcmp(a, "--gpu")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_gpu(v, &gpu)) return 2; }
        else if (!strcmp(a, "--kv")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_kv(v, &kv_type)) return 2; }
        else if (!strcmp(a, "-r")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &reps)) return 2; }
        else if (!strcmp(a, "-d")) {
            if (!(v = app_optarg(argc, argv, &i)) || parse_depths(v, depths, &n_depths)) {
                fprintf(stderr, "bench: -d expects a list like 0,2048,4096\n");
                return 2;
            }
        } else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--real-fill")) real_fill = 1;
        else { fprintf(stderr, "bench: unknown option %s\n", a); usage(stderr); return 2; }
    }
    if (p < 1 || n < 1 || threads < 0 || reps < 1) { fprintf(stderr, "bench: -p, -n, -r must be positive\n"); return 2; }
    char path[4096];
    if (app_find_model(model_opt, path, sizeof path)) { fprintf(stderr, "bench: no model: give -m PATH\n"); return 1; }

    core_err err = {0};
    gguf *g = NULL;
    model *m = NULL;
    model_kv *kv = NULL;
    float *logits = NULL;
    int32_t *toks = NULL;
    int rc = 1;
    kern_init(NULL);
    if (gguf_open(&g, path, &err)) goto done;
    model_opts mo = {(int)threads, 0, gpu};
    if (model_load(&m, g, &mo, &err)) goto done;
    const model_config *c = model_get_config(m);
    long max_depth = 0;
    for (int i = 0; i < n_depths; i++) max_depth = CORE_MAX(max_depth, depths[i]);
    long ctx = CORE_MAX(p, max_depth + n) + 1;
    if (ctx > c->n_ctx_train) { core_errf(&err, CORE_ERANGE, "depth %ld + %ld tokens exceeds the context %d", max_depth, n, c->n_ctx_train); goto done; }
    if (model_kv_new(&kv, m, (int)ctx, kv_type, &err)) goto done;
    logits = malloc((size_t)c->n_vocab * sizeof(float));
    toks = malloc((size_t)CORE_MAX(p, max_depth) * sizeof(int32_t));
    if (!logits || !toks) { core_errf(&err, CORE_ENOMEM, "out of memory"); goto done; }
    uint32_t x = 12345;
    for (long i = 0; i < CORE_MAX(p, max_depth); i++) {
        x = x * 1103515245u + 12345u;
        toks[i] = (int32_t)((x >> 8) % (uint32_t)c->n_vocab);
    }

    double read_bw = app_read_bw(model_pool(m));
    /* warm-up: page the weights in */
    if (model_forward(m, kv, toks, 1, logits, 0, NULL, &err)) goto done;

    double best_prefill = 1e30;
    for (long r = 0; r < reps; r++) {
        model_kv_truncate(kv, 0);
        double t0 = core_now_s();
        if (model_forward(m, kv, toks, (int)p, logits, 0, NULL, &err)) goto done;
        best_prefill = CORE_MIN(best_prefill, core_now_s() - t0);
    }
    /* repetitions outside depths: a slow spell of a shared host then hits
     * every depth alike instead of one, and the depth ratios stay honest */
    double decode[MAX_DEPTHS], best[MAX_DEPTHS];
    for (int di = 0; di < n_depths; di++) best[di] = 1e30;
    for (long r = 0; r < reps; r++) {
        for (int di = 0; di < n_depths; di++) {
            model_kv_truncate(kv, 0);
            if (depths[di] > 0) {
                int rc2 = real_fill ? model_forward(m, kv, toks, (int)depths[di], NULL, 0, NULL, &err)
                                    : model_kv_fill_synthetic(kv, (int)depths[di], &err);
                if (rc2) goto done;
            }
            /* each step ends with the greedy choice, as in generation (on a
             * GPU the logits stay on the device); the next token is fixed
             * so that every run decodes the same sequence */
            int32_t t = toks[0], best_id;
            float best_logit;
            double t0 = core_now_s();
            for (long i = 0; i < n; i++) {
                if (model_decode_topk(m, kv, t, 1, &best_id, &best_logit, &err)) goto done;
                t = (int32_t)((t * 7 + 11) % c->n_vocab);
            }
            best[di] = CORE_MIN(best[di], core_now_s() - t0);
        }
    }
    for (int di = 0; di < n_depths; di++) decode[di] = (double)n / best[di];
    double weight_gb = (double)model_weight_bytes(m) / 1e9;
    double prefill_tok_s = (double)p / best_prefill;
    double ttft_ms = best_prefill * 1e3;
    double d0 = decode[0];
    for (int di = 0; di < n_depths; di++) if (depths[di] == 0) d0 = decode[di];
    double peak_mb = (double)core_peak_rss() / (1 << 20);
    /* KV bytes read per token per position of context (K and V, all layers) */
    /* per position, over a whole number of the 8-bit cache's 32-position tiles */
    const double kv_pos_gb = (double)model_kv_size(m, 1024, kv_type) / 1024 / 1e9;
    const char *kv_name = kv_type == MODEL_KV_Q8 ? "q8" : kv_type == MODEL_KV_F32 ? "f32" : "f16";
    if (json) {
        printf("{\"model\": \"%s\", \"device\": \"%s\", \"threads\": %d, \"isa\": \"%s\", \"prompt_tokens\": %ld, \"decode_tokens\": %ld, "
               "\"prefill_tok_s\": %.2f, \"decode_tok_s\": {",
               path, model_device(m), model_threads(m), kern_isa(), p, n, prefill_tok_s);
        for (int di = 0; di < n_depths; di++) printf("%s\"%ld\": %.2f", di ? ", " : "", depths[di], decode[di]);
        printf("}, \"ttft_ms\": %.1f, \"peak_rss_mb\": %.0f, \"read_bw_gbs\": %.2f, \"weight_bw_gbs\": %.2f, "
               "\"weight_gb\": %.3f, \"kv_mb\": %.0f, \"kv_type\": \"%s\"}\n",
               ttft_ms, peak_mb, read_bw, weight_gb * d0, weight_gb, (double)model_kv_bytes(kv) / (1 << 20), kv_name);
    } else {
        printf("model        %s (%d layers, %.2f GB of weights read per token)\n", path, c->n_layer, weight_gb);
        printf("threads      %d, %s kernels\n", model_threads(m), kern_isa());
        printf("device       %s\n", model_device(m));
        printf("prefill      %8.2f tok/s  (%ld tokens, TTFT %.0f ms)\n", prefill_tok_s, p, ttft_ms);
        for (int di = 0; di < n_depths; di++)
            printf("decode @%-5ld %8.2f tok/s  (%ld tokens%s; %.0f GB/s of weights + %s KV)\n", depths[di], decode[di], n,
                   depths[di] && !real_fill ? ", synthetic context" : "", decode[di] * (weight_gb + kv_pos_gb * (double)depths[di]),
                   kv_name);
        if (strcmp(model_device(m), "cpu")) /* the plain read measures the CPU's memory, not the device's */
            printf("bandwidth    %.1f GB/s of weights at depth 0 (device memory)\n", weight_gb * d0);
        else
            printf("bandwidth    %.1f GB/s of weights at depth 0 = %.0f%% of %.1f GB/s plain read\n", weight_gb * d0,
                   100 * weight_gb * d0 / read_bw, read_bw);
        printf("peak RSS     %.0f MB (KV cache %.0f MB)\n", peak_mb, (double)model_kv_bytes(kv) / (1 << 20));
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "bench: %s\n", err.msg);
    free(logits);
    free(toks);
    model_kv_free(kv);
    model_free(m);
    gguf_close(g);
    return rc;
}
