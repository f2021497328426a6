/* cmd_tokenize.c -- `smolbot tokenize` and `smolbot detokenize`: the
 * tokenizer from the command line, for checking ids against llama.cpp.
 *
 *   smolbot tokenize -m MODEL [--special] [--ids|--pieces|--json] [TEXT... | < file]
 *   smolbot detokenize -m MODEL [--hide-control] IDS...   (or ids on stdin)
 *
 * Only the tokenizer keys of the model are read (the file is mapped, the
 * weights are never touched), so this is instant even on a 2 GB model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

static int open_tok(const char *model_opt, tok **t, const char *cmd) {
    char path[1024];
    if (tok_app_model_path(model_opt, path, sizeof path)) {
        fprintf(stderr, "smolbot %s: no model: pass -m MODEL.gguf or set MODEL_PATH\n", cmd);
        return -1;
    }
    gguf *g;
    core_err err = {0};
    if (gguf_open(&g, path, &err)) {
        fprintf(stderr, "smolbot %s: %s\n", cmd, err.msg);
        return -1;
    }
    int rc = tok_load(t, g, &err);
    gguf_close(g);
    if (rc) {
        fprintf(stderr, "smolbot %s: %s\n", cmd, err.msg);
        return -1;
    }
    return 0;
}

static int read_stdin(core_buf *b) {
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (core_buf_append(b, chunk, n)) return -1;
    return ferror(stdin) ? -1 : 0;
}

/* A piece for display: printable text as is, other bytes as C escapes. */
static void put_escaped(core_buf *o, const char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        uint32_t cp;
        int l = c >= 0x80 ? core_utf8_decode((const unsigned char *)p + i, n - i, &cp) : 0;
        if (l > 0) {
            core_buf_append(o, p + i, (size_t)l);
            i += (size_t)l;
            continue;
        }
        if (c == '\n') core_buf_puts(o, "\\n");
        else if (c == '\t') core_buf_puts(o, "\\t");
        else if (c == '\r') core_buf_puts(o, "\\r");
        else if (c == '\\') core_buf_puts(o, "\\\\");
        else if (c < 0x20 || c >= 0x7F) core_buf_printf(o, "\\x%02x", c);
        else core_buf_append(o, &p[i], 1);
        i++;
    }
}

static void tokenize_usage(FILE *f) {
    fprintf(f, "usage: smolbot tokenize [-m MODEL] [--special] [--ids|--pieces|--json] [TEXT... | < file]\n"
               "  -m MODEL    GGUF file (default: $MODEL_PATH)\n"
               "  --special   special-token text (<|im_start|>...) becomes its id\n"
               "  --ids       ids separated by spaces (default)\n"
               "  --pieces    one token per line: id and its text (escaped)\n"
               "  --json      {\"n\":N,\"ids\":[...],\"pieces\":[...]}\n"
               "TEXT arguments are joined by single spaces; without them stdin is read.\n");
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL;
    int special = 0, mode = 0; /* 0 ids, 1 pieces, 2 json */
    core_buf text = {0};
    int have_text = 0;
    if (app_wants_help(argc, argv)) {
        tokenize_usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--special")) special = 1;
        else if (!strcmp(a, "--ids")) mode = 0;
        else if (!strcmp(a, "--pieces")) mode = 1;
        else if (!strcmp(a, "--json")) mode = 2;
        else if (!strcmp(a, "--")) {
            for (i++; i < argc; i++) {
                if (have_text) core_buf_puts(&text, " ");
                core_buf_puts(&text, argv[i]);
                have_text = 1;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "smolbot tokenize: unknown option %s\n", a);
            tokenize_usage(stderr);
            return 2;
        } else {
            if (have_text) core_buf_puts(&text, " ");
            core_buf_puts(&text, a);
            have_text = 1;
        }
    }
    tok *t;
    if (open_tok(model, &t, "tokenize")) return 1;
    if (!have_text && read_stdin(&text)) {
        fprintf(stderr, "smolbot tokenize: reading stdin failed\n");
        tok_free(t);
        return 1;
    }
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    core_err err = {0};
    int status = 0;
    if (tok_encode(t, text.data ? text.data : "", text.len, special, &ids, &n, &cap, &err)) {
        fprintf(stderr, "smolbot tokenize: %s\n", err.msg);
        status = 1;
        goto done;
    }
    core_buf o = {0};
    if (mode == 0) {
        for (size_t i = 0; i < n; i++) core_buf_printf(&o, "%s%d", i ? " " : "", ids[i]);
        core_buf_puts(&o, "\n");
    } else if (mode == 1) {
        for (size_t i = 0; i < n; i++) {
            size_t pl;
            const char *p = tok_piece(t, ids[i], &pl);
            core_buf_printf(&o, "%d\t'", ids[i]);
            put_escaped(&o, p, pl);
            core_buf_puts(&o, "'\n");
        }
    } else {
        json_t *root = json_object(), *ja = json_array(), *jp = json_array();
        core_buf e = {0};
        for (size_t i = 0; i < n; i++) {
            size_t pl;
            const char *p = tok_piece(t, ids[i], &pl);
            json_array_append_new(ja, json_integer(ids[i]));
            core_buf_clear(&e);
            if (core_utf8_valid(p, pl)) core_buf_append(&e, p, pl);
            else put_escaped(&e, p, pl); /* JSON strings must be UTF-8 */
            json_array_append_new(jp, json_stringn(e.data ? e.data : "", e.len));
        }
        core_buf_free(&e);
        json_object_set_new(root, "n", json_integer((json_int_t)n));
        json_object_set_new(root, "ids", ja);
        json_object_set_new(root, "pieces", jp);
        char *s = json_dumps(root, JSON_COMPACT);
        if (s) core_buf_puts(&o, s);
        core_buf_puts(&o, "\n");
        free(s);
        json_decref(root);
    }
    if (o.len && fwrite(o.data, 1, o.len, stdout) != o.len) status = 1;
    core_buf_free(&o);
done:
    free(ids);
    core_buf_free(&text);
    tok_free(t);
    return status;
}

static void detokenize_usage(FILE *f) {
    fprintf(f, "usage: smolbot detokenize [-m MODEL] [--hide-control] IDS...\n"
               "  IDS separated by spaces or commas, as arguments or on stdin (a JSON array works too).\n"
               "  Writes the decoded bytes to stdout exactly (no newline added).\n"
               "  --hide-control   leave out control tokens (<|im_end|>...), as a chat display does\n");
}

/* Parse integers separated by anything that is not a digit or '-'. */
static int parse_ids(const char *s, int32_t **ids, size_t *n, size_t *cap) {
    while (*s) {
        if (!(*s == '-' || (*s >= '0' && *s <= '9'))) {
            s++;
            continue;
        }
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "smolbot detokenize: bad id near '%.20s'\n", s);
            return -1;
        }
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            int32_t *p = realloc(*ids, nc * sizeof *p);
            if (!p) return -1;
            *ids = p;
            *cap = nc;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    return 0;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL;
    int show_control = 1, have_ids = 0;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int status = 1;
    tok *t = NULL;
    if (app_wants_help(argc, argv)) {
        detokenize_usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model = app_optarg(argc, argv, &i))) goto out;
        } else if (!strcmp(a, "--hide-control")) show_control = 0;
        else if (a[0] == '-' && !(a[1] >= '0' && a[1] <= '9')) {
            fprintf(stderr, "smolbot detokenize: unknown option %s\n", a);
            detokenize_usage(stderr);
            status = 2;
            goto out;
        } else {
            if (parse_ids(a, &ids, &n, &cap)) goto out;
            have_ids = 1;
        }
    }
    if (!have_ids) {
        core_buf in = {0};
        int rc = read_stdin(&in) || parse_ids(in.data ? in.data : "", &ids, &n, &cap);
        core_buf_free(&in);
        if (rc) goto out;
    }
    if (open_tok(model, &t, "detokenize")) goto out;
    core_buf o = {0};
    int rc = tok_decode(t, ids, n, show_control, &o);
    if (rc == CORE_EINVAL) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= tok_n_vocab(t)) {
                fprintf(stderr, "smolbot detokenize: id %d is out of range (vocab %d)\n", ids[i], tok_n_vocab(t));
                break;
            }
    } else if (rc) {
        fprintf(stderr, "smolbot detokenize: %s\n", core_strerror(rc));
    } else if (o.len == 0 || fwrite(o.data, 1, o.len, stdout) == o.len) {
        status = 0;
    }
    core_buf_free(&o);
out:
    free(ids);
    tok_free(t);
    return status;
}
