/* cmd_inspect.c -- `smolbot inspect FILE [--json]`: what is in a GGUF file.
 *
 * Shows the header facts, every metadata key (arrays as element type, length
 * and the first few items; long strings cut, with their length), the tensor
 * table, totals per tensor type, and a model summary (shapes, NoPE layers,
 * special tokens, chat template). --json prints the same as one JSON object
 * (jansson) for scripts and tests.
 *
 * Only the header is read: tensor data is never touched, so inspecting a
 * 2 GB file costs the header walk (the 128k-token list scanned once for
 * special tokens). Text from the file may be any bytes: it is made valid
 * UTF-8 (core_utf8_sanitize: bad bytes become U+FFFD) and control characters are escaped before
 * it reaches the terminal or JSON.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "core/core.h"
#include "gguf/gguf.h"

#define SHOW_ITEMS 5   /* array items shown */
#define SHOW_STR 80    /* bytes of a string shown in text mode */
#define JSON_STR 256   /* bytes of a string kept in JSON */

/* Printable, valid UTF-8 copy of at most `max` bytes of s (escapes controls
 * in text mode; JSON escaping is jansson's job). Caller frees. */
static char *clean_str(const char *s, uint64_t n, uint64_t max, int escape) {
    if (n > max) n = max;
    core_buf v = {0}, b = {0};
    if (core_utf8_sanitize(s, (size_t)n, &v)) return NULL;
    /* valid UTF-8 now: what is escaped is ASCII, so a byte walk will do */
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.data[i];
        if (escape && c < 0x20) {
            if (c == '\n') core_buf_puts(&b, "\\n");
            else if (c == '\t') core_buf_puts(&b, "\\t");
            else core_buf_printf(&b, "\\x%02x", c);
        } else if (escape && c == '"') {
            core_buf_puts(&b, "\\\"");
        } else if (escape && c == '\\') {
            core_buf_puts(&b, "\\\\");
        } else {
            core_buf_append(&b, &v.data[i], 1);
        }
    }
    core_buf_free(&v);
    if (!b.data) core_buf_puts(&b, "");
    return b.data; /* NULL only on out of memory */
}

static json_t *jstr(const char *s, uint64_t n, uint64_t max) {
    char *c = clean_str(s, n, max, 0);
    json_t *j = json_string(c ? c : "");
    free(c);
    return j;
}

/* One scalar or string value as text / JSON. */
static void print_scalar(const gguf_value *v) {
    double d;
    int64_t x;
    if (v->type == GGUF_TYPE_STRING) {
        char *c = clean_str(v->str.ptr, v->str.len, SHOW_STR, 1);
        if (v->str.len > SHOW_STR) printf("\"%s\"... (%llu bytes)", c ? c : "", (unsigned long long)v->str.len);
        else printf("\"%s\"", c ? c : "");
        free(c);
    } else if (v->type == GGUF_TYPE_BOOL) {
        printf("%s", v->ptr[0] ? "true" : "false");
    } else if (v->type == GGUF_TYPE_F32 || v->type == GGUF_TYPE_F64) {
        gguf_value_as_f64(v, &d);
        printf("%g", d);
    } else if (v->type == GGUF_TYPE_U64 && gguf_value_as_i64(v, &x)) {
        gguf_value_as_f64(v, &d);
        printf("%.0f", d);
    } else if (!gguf_value_as_i64(v, &x)) {
        printf("%lld", (long long)x);
    }
}

static void print_value(const gguf_value *v, int depth) {
    if (v->type != GGUF_TYPE_ARRAY) {
        print_scalar(v);
        return;
    }
    printf("[%s x %llu]", gguf_vtype_name(v->elem_type), (unsigned long long)v->count);
    if (!v->count) return;
    printf(" [");
    for (uint64_t i = 0; i < v->count && i < SHOW_ITEMS; i++) {
        gguf_value e;
        if (gguf_arr_elem(v, i, &e)) break;
        if (i) printf(", ");
        if (depth < 2) print_value(&e, depth + 1);
        else printf("...");
    }
    printf("%s]", v->count > SHOW_ITEMS ? ", ..." : "");
}

static json_t *json_value(const gguf_value *v, int depth) {
    double d;
    int64_t x;
    if (v->type == GGUF_TYPE_STRING) return jstr(v->str.ptr, v->str.len, JSON_STR);
    if (v->type == GGUF_TYPE_BOOL) return json_boolean(v->ptr[0]);
    if (v->type == GGUF_TYPE_F32 || v->type == GGUF_TYPE_F64) {
        gguf_value_as_f64(v, &d);
        return json_real(d);
    }
    if (v->type != GGUF_TYPE_ARRAY) {
        if (!gguf_value_as_i64(v, &x)) return json_integer(x);
        gguf_value_as_f64(v, &d);
        return json_real(d);
    }
    json_t *o = json_object();
    json_object_set_new(o, "elem_type", json_string(gguf_vtype_name(v->elem_type)));
    json_object_set_new(o, "count", json_integer((json_int_t)v->count));
    json_t *a = json_array();
    for (uint64_t i = 0; i < v->count && i < SHOW_ITEMS; i++) {
        gguf_value e;
        if (gguf_arr_elem(v, i, &e)) break;
        json_array_append_new(a, depth < 2 ? json_value(&e, depth + 1) : json_null());
    }
    json_object_set_new(o, "first", a);
    return o;
}

/* ---- model summary -------------------------------------------------------- */

typedef struct summary {
    char arch[64];
    int64_t layers, embd, ffn, heads, kv_heads, head_dim, ctx, vocab;
    double rope_theta, eps;
    int has_template;
    uint64_t template_len;
    int64_t bos, eos, eot, pad, im_start, im_end, think, think_end; /* -1 = absent */
} summary;

static int64_t arch_int(const gguf *g, const char *arch, const char *suffix) {
    char key[160];
    int64_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_i64(g, key, &v, NULL) ? -1 : v;
}

static double arch_f(const gguf *g, const char *arch, const char *suffix) {
    char key[160];
    float v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_f32(g, key, &v, NULL) ? -1.0 : v;
}

static int64_t tok_id(const gguf *g, const char *key) {
    int64_t v;
    return gguf_get_i64(g, key, &v, NULL) ? -1 : v;
}

static void summarize(const gguf *g, summary *s) {
    memset(s, 0, sizeof *s);
    gguf_str a;
    if (!gguf_get_str(g, "general.architecture", &a, NULL)) {
        char *c = clean_str(a.ptr, a.len, sizeof s->arch - 8, 0);
        if (c) snprintf(s->arch, sizeof s->arch, "%s", c);
        free(c);
    }
    s->layers = arch_int(g, s->arch, "block_count");
    s->embd = arch_int(g, s->arch, "embedding_length");
    s->ffn = arch_int(g, s->arch, "feed_forward_length");
    s->heads = arch_int(g, s->arch, "attention.head_count");
    s->kv_heads = arch_int(g, s->arch, "attention.head_count_kv");
    s->head_dim = arch_int(g, s->arch, "attention.key_length");
    if (s->head_dim < 0) s->head_dim = arch_int(g, s->arch, "rope.dimension_count");
    if (s->head_dim < 0 && s->heads > 0 && s->embd > 0) s->head_dim = s->embd / s->heads;
    s->ctx = arch_int(g, s->arch, "context_length");
    s->vocab = arch_int(g, s->arch, "vocab_size");
    s->rope_theta = arch_f(g, s->arch, "rope.freq_base");
    s->eps = arch_f(g, s->arch, "attention.layer_norm_rms_epsilon");
    gguf_str t;
    s->has_template = !gguf_get_str(g, "tokenizer.chat_template", &t, NULL);
    s->template_len = s->has_template ? t.len : 0;
    s->bos = tok_id(g, "tokenizer.ggml.bos_token_id");
    s->eos = tok_id(g, "tokenizer.ggml.eos_token_id");
    s->eot = tok_id(g, "tokenizer.ggml.eot_token_id");
    s->pad = tok_id(g, "tokenizer.ggml.padding_token_id");
    s->im_start = s->im_end = s->think = s->think_end = -1;
    gguf_str *toks = NULL;
    uint64_t n = 0;
    if (!gguf_get_str_arr(g, "tokenizer.ggml.tokens", &toks, &n, NULL)) {
        if (s->vocab < 0) s->vocab = (int64_t)n;
        for (uint64_t i = 0; i < n; i++) {
            const gguf_str *k = &toks[i];
            if (k->len < 7 || k->len > 12 || k->ptr[0] != '<') continue; /* all we look for are 7..12 bytes */
#define IS(lit) (k->len == sizeof(lit) - 1 && !memcmp(k->ptr, lit, k->len))
            if (IS("<|im_start|>") && s->im_start < 0) s->im_start = (int64_t)i;
            else if (IS("<|im_end|>") && s->im_end < 0) s->im_end = (int64_t)i;
            else if (IS("<think>") && s->think < 0) s->think = (int64_t)i;
            else if (IS("</think>") && s->think_end < 0) s->think_end = (int64_t)i;
            else if (IS("<|eot_id|>") && s->eot < 0) s->eot = (int64_t)i;
#undef IS
        }
        free(toks);
    }
}

static int is_nope(const summary *s, int64_t il) { return !strcmp(s->arch, "smollm3") && (il + 1) % 4 == 0; }

/* ---- output ------------------------------------------------------------------ */

typedef struct type_total {
    uint32_t type;
    int64_t count;
    uint64_t bytes;
} type_total;

static int totals(const gguf *g, type_total *tt, int max) {
    int n = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        int k = 0;
        while (k < n && tt[k].type != t->type) k++;
        if (k == n) {
            if (n == max) continue;
            tt[n++] = (type_total){t->type, 0, 0};
        }
        tt[k].count++;
        tt[k].bytes += t->nbytes;
    }
    return n;
}

static const char *type_name(uint32_t t, char *buf, size_t n) {
    const char *s = gguf_type_name(t);
    if (s) return s;
    snprintf(buf, n, "type%u", t);
    return buf;
}

static void print_text(const gguf *g, const summary *s) {
    char tb[32];
    printf("file:       %s\n", gguf_name(g));
    printf("size:       %llu bytes, GGUF v%u, alignment %u, data at offset %llu\n",
           (unsigned long long)gguf_file_size(g), gguf_version(g), gguf_alignment(g),
           (unsigned long long)gguf_data_offset(g));
    printf("\nmetadata (%lld keys):\n", (long long)gguf_n_kv(g));
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_value v;
        gguf_kv_value(g, i, &v);
        char *k = clean_str(gguf_kv_key(g, i), strlen(gguf_kv_key(g, i)), 200, 1);
        printf("  %-44s %-6s ", k ? k : "", gguf_vtype_name(v.type));
        free(k);
        print_value(&v, 0);
        printf("\n");
    }
    printf("\ntensors (%lld):\n", (long long)gguf_n_tensors(g));
    printf("  %-32s %-6s %-24s %12s %12s\n", "name", "type", "shape", "offset", "bytes");
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        char shape[96];
        int p = 0;
        for (uint32_t d = 0; d < t->n_dims; d++)
            p += snprintf(shape + p, sizeof shape - (size_t)p, "%s%llu", d ? ", " : "[", (unsigned long long)t->ne[d]);
        snprintf(shape + p, sizeof shape - (size_t)p, "]");
        char *nm = clean_str(t->name, strlen(t->name), 200, 1);
        printf("  %-32s %-6s %-24s %12llu %12llu%s\n", nm ? nm : "", type_name(t->type, tb, sizeof tb), shape,
               (unsigned long long)t->offset, (unsigned long long)t->nbytes, t->data ? "" : "  (unknown type)");
        free(nm);
    }
    type_total tt[64];
    int nt = totals(g, tt, 64);
    uint64_t all = 0;
    printf("\ntotals by type:\n");
    for (int k = 0; k < nt; k++) {
        printf("  %-6s %6lld tensors %14llu bytes\n", type_name(tt[k].type, tb, sizeof tb), (long long)tt[k].count,
               (unsigned long long)tt[k].bytes);
        all += tt[k].bytes;
    }
    printf("  %-6s %6lld tensors %14llu bytes\n", "all", (long long)gguf_n_tensors(g), (unsigned long long)all);

    printf("\nmodel:\n");
    printf("  architecture   %s\n", s->arch[0] ? s->arch : "(none)");
    printf("  layers         %lld\n  embedding      %lld\n  ffn            %lld\n", (long long)s->layers,
           (long long)s->embd, (long long)s->ffn);
    printf("  heads          %lld\n  kv heads       %lld\n  head dim       %lld\n", (long long)s->heads,
           (long long)s->kv_heads, (long long)s->head_dim);
    printf("  nope layers    ");
    int any = 0;
    for (int64_t il = 0; il < s->layers && il < 100000; il++)
        if (is_nope(s, il)) printf("%s%lld", any++ ? "," : "", (long long)il);
    printf("%s\n", any ? "" : "(none)");
    printf("  context        %lld\n  vocab          %lld\n", (long long)s->ctx, (long long)s->vocab);
    printf("  rope theta     %g\n  rms eps        %g\n", s->rope_theta, s->eps);
    printf("  special tokens bos=%lld eos=%lld eot=%lld pad=%lld im_start=%lld im_end=%lld think=%lld /think=%lld\n",
           (long long)s->bos, (long long)s->eos, (long long)s->eot, (long long)s->pad, (long long)s->im_start,
           (long long)s->im_end, (long long)s->think, (long long)s->think_end);
    if (s->has_template) printf("  chat template  yes (%llu bytes)\n", (unsigned long long)s->template_len);
    else printf("  chat template  no\n");
}

static json_t *jint_or_null(int64_t v) { return v < 0 ? json_null() : json_integer(v); }

static int print_json(const gguf *g, const summary *s) {
    char tb[32];
    json_t *root = json_object();
    json_object_set_new(root, "file", jstr(gguf_name(g), strlen(gguf_name(g)), 4096));
    json_object_set_new(root, "size", json_integer((json_int_t)gguf_file_size(g)));
    json_object_set_new(root, "version", json_integer(gguf_version(g)));
    json_object_set_new(root, "alignment", json_integer(gguf_alignment(g)));
    json_object_set_new(root, "data_offset", json_integer((json_int_t)gguf_data_offset(g)));
    json_object_set_new(root, "kv_count", json_integer(gguf_n_kv(g)));
    json_object_set_new(root, "tensor_count", json_integer(gguf_n_tensors(g)));
    json_t *md = json_array();
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        gguf_value v;
        gguf_kv_value(g, i, &v);
        json_t *o = json_object();
        json_object_set_new(o, "key", jstr(gguf_kv_key(g, i), strlen(gguf_kv_key(g, i)), 4096));
        json_object_set_new(o, "type", json_string(gguf_vtype_name(v.type)));
        json_object_set_new(o, "value", json_value(&v, 0));
        if (v.type == GGUF_TYPE_STRING) json_object_set_new(o, "len", json_integer((json_int_t)v.str.len));
        json_array_append_new(md, o);
    }
    json_object_set_new(root, "metadata", md);
    json_t *ts = json_array();
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        json_t *o = json_object(), *shape = json_array();
        json_object_set_new(o, "name", jstr(t->name, strlen(t->name), 4096));
        json_object_set_new(o, "type", json_string(type_name(t->type, tb, sizeof tb)));
        for (uint32_t d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer((json_int_t)t->ne[d]));
        json_object_set_new(o, "shape", shape);
        json_object_set_new(o, "offset", json_integer((json_int_t)t->offset));
        json_object_set_new(o, "bytes", json_integer((json_int_t)t->nbytes));
        json_array_append_new(ts, o);
    }
    json_object_set_new(root, "tensors", ts);
    type_total tt[64];
    int nt = totals(g, tt, 64);
    json_t *tot = json_object();
    for (int k = 0; k < nt; k++) {
        json_t *o = json_object();
        json_object_set_new(o, "count", json_integer(tt[k].count));
        json_object_set_new(o, "bytes", json_integer((json_int_t)tt[k].bytes));
        json_object_set_new(tot, type_name(tt[k].type, tb, sizeof tb), o);
    }
    json_object_set_new(root, "types", tot);
    json_t *m = json_object();
    json_object_set_new(m, "architecture", json_string(s->arch));
    json_object_set_new(m, "layers", jint_or_null(s->layers));
    json_object_set_new(m, "embedding", jint_or_null(s->embd));
    json_object_set_new(m, "ffn", jint_or_null(s->ffn));
    json_object_set_new(m, "heads", jint_or_null(s->heads));
    json_object_set_new(m, "kv_heads", jint_or_null(s->kv_heads));
    json_object_set_new(m, "head_dim", jint_or_null(s->head_dim));
    json_t *nope = json_array();
    for (int64_t il = 0; il < s->layers && il < 100000; il++)
        if (is_nope(s, il)) json_array_append_new(nope, json_integer(il));
    json_object_set_new(m, "nope_layers", nope);
    json_object_set_new(m, "context", jint_or_null(s->ctx));
    json_object_set_new(m, "vocab", jint_or_null(s->vocab));
    json_object_set_new(m, "rope_theta", s->rope_theta < 0 ? json_null() : json_real(s->rope_theta));
    json_object_set_new(m, "eps", s->eps < 0 ? json_null() : json_real(s->eps));
    json_t *sp = json_object();
    json_object_set_new(sp, "bos", jint_or_null(s->bos));
    json_object_set_new(sp, "eos", jint_or_null(s->eos));
    json_object_set_new(sp, "eot", jint_or_null(s->eot));
    json_object_set_new(sp, "pad", jint_or_null(s->pad));
    json_object_set_new(sp, "im_start", jint_or_null(s->im_start));
    json_object_set_new(sp, "im_end", jint_or_null(s->im_end));
    json_object_set_new(sp, "think", jint_or_null(s->think));
    json_object_set_new(sp, "think_end", jint_or_null(s->think_end));
    json_object_set_new(m, "special_tokens", sp);
    json_object_set_new(m, "chat_template", json_boolean(s->has_template));
    json_object_set_new(m, "chat_template_len", json_integer((json_int_t)s->template_len));
    json_object_set_new(root, "model", m);
    int rc = json_dumpf(root, stdout, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    printf("\n");
    json_decref(root);
    return rc ? 1 : 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: smolbot inspect FILE.gguf [--json]\n\n"
               "Show the metadata, tensor table, per-type totals and a model summary of a GGUF file.\n"
               "Reads only the header (fast on multi-GB files).\n\n"
               "  --json   print one JSON object instead of text\n");
}

int cmd_inspect(int argc, char **argv) {
    if (app_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "smolbot inspect: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!path) path = argv[i];
        else {
            fprintf(stderr, "smolbot inspect: one file at a time\n");
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    if (app_check_model("smolbot inspect", path, 0)) return 1;
    gguf *g;
    core_err err = {0};
    if (gguf_open(&g, path, &err)) {
        fprintf(stderr, "smolbot inspect: %s\n", err.msg);
        return 1;
    }
    summary s;
    summarize(g, &s);
    int rc = 0;
    if (json) rc = print_json(g, &s);
    else print_text(g, &s);
    gguf_close(g);
    return rc;
}
