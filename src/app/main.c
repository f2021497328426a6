/* main.c -- smolbot: dispatch to a subcommand.
 *
 *   smolbot <command> [options]      smolbot <command> --help
 *
 * The table below is the whole CLI surface; each entry's code lives in
 * cmd_<name>.c. Helpers shared by the commands (option parsing) are here.
 */
#include "app/app.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "kern/kern.h"
#include "sample/sample.h"

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command commands[] = {
    /* commands: one line each, keep sorted by workflow */
    {"pull", cmd_pull, "download the model (SmolLM3-3B Q4_K_M by default)"},
    {"inspect", cmd_inspect, "show metadata, tensors and model summary of a GGUF file"},
    {"gen-model", cmd_gen_model, "write a SmolLM3 GGUF with random weights (tests, benchmarks)"},
    {"chat", cmd_chat, "chat in the terminal (streams answers, slash commands)"},
    {"generate", cmd_generate, "complete a prompt (text or token ids) with the model"},
    {"tokenize", cmd_tokenize, "text to token ids"},
    {"detokenize", cmd_detokenize, "token ids to text"},
    {"template", cmd_template, "render a conversation in the SmolLM3 chat format"},
    {"serve", cmd_serve, "serve the chat page and the OpenAI-compatible API"},
    {"bench", cmd_bench, "measure prefill and decode speed (llama-bench style), or the kernels"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f) {
    fprintf(f, "smolbot -- a self-hosted chatbot for SmolLM3-3B\n\nusage: smolbot <command> [options]\n\ncommands:\n");
    for (const command *c = commands; c->name; c++) fprintf(f, "  %-12s %s\n", c->name, c->help);
    fprintf(f, "\n'smolbot <command> --help' shows the options of a command.\n");
}

int app_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

int app_parse_int(const char *opt, const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s ? s : "", &end, 10);
    if (!s || !*s || *end || errno) {
        fprintf(stderr, "smolbot: %s expects an integer, got '%s'\n", opt, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int app_parse_float(const char *opt, const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s ? s : "", &end);
    if (!s || !*s || *end || errno || v != v) {
        fprintf(stderr, "smolbot: %s expects a number, got '%s'\n", opt, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int app_parse_sampling(int argc, char **argv, int *i, sample_params *sp, int *seed_given) {
    const char *a = argv[*i], *v;
    double d;
    long l;
    float *f = !strcmp(a, "--temp") ? &sp->temperature : !strcmp(a, "--top-p") ? &sp->top_p
             : !strcmp(a, "--min-p") ? &sp->min_p : NULL;
    if (!strcmp(a, "--greedy")) { sp->temperature = 0; return 1; }
    if (f) {
        if (!(v = app_optarg(argc, argv, i)) || app_parse_float(a, v, &d)) return -1;
        *f = (float)d;
        return 1;
    }
    if (!strcmp(a, "--top-k") || !strcmp(a, "--seed")) {
        if (!(v = app_optarg(argc, argv, i)) || app_parse_int(a, v, &l)) return -1;
        if (a[2] == 't') sp->top_k = (int)l;
        else { sp->seed = (uint64_t)l; if (seed_given) *seed_given = 1; }
        return 1;
    }
    return 0;
}

const char *app_optarg(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "smolbot: option %s needs a value\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int main(int argc, char **argv) {
    const char *lvl = getenv("LOG_LEVEL");
    if (lvl && core_log_parse_level(lvl) >= 0) core_log_set_level(core_log_parse_level(lvl));
    /* The kernel table is chosen once, before any thread runs a kernel
     * (SMOLBOT_ISA=scalar|avx2|avx512 forces one). */
    if (kern_init(NULL)) {
        fprintf(stderr, "smolbot: SMOLBOT_ISA=%s is not available on this CPU\n", getenv("SMOLBOT_ISA"));
        return 1;
    }
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const command *c = commands; c->name; c++)
        if (!strcmp(argv[1], c->name)) return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "smolbot: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
