/* grammar.c -- constrained decoding: JSON Schema -> a byte automaton that
 * masks the tokens which cannot continue a valid output.
 *
 * Compile. A schema (jansson) becomes an array of nodes: OBJ (declared
 * properties, any order, each at most once, "}" only after the required
 * ones; or free keys when none are declared, and "{}" alone when none
 * are and additionalProperties is false), ARR (items, min/max count),
 * STR (length bounds, an ASCII class from a simple pattern), NUM, INT, LIT
 * (enum/const/true/false/null: the values' compact JSON texts), ALT (anyOf,
 * type lists: the branch is chosen by the first byte, so branches must start
 * differently; the compiler refuses overlap), ANY (any JSON value) and
 * CALLS (the <tool_call> wrapper around one tool's arguments, repeated when
 * parallel; or Llama's bare {"name": ..., "parameters": ...} object).
 * Whatever the schema says that we cannot enforce is refused
 * with a message naming the keyword: never ignored.
 *
 * Run. The matcher is a pushdown automaton over bytes: a stack of frames
 * (node, phase, three counters), at most MAX_DEPTH deep, no allocation
 * after sample_matcher_new. Output is compact JSON with at most one space
 * after ':' and ',' (so a model cannot loop on whitespace), no \u escapes,
 * valid UTF-8, numbers of at most 15 digits per part.
 *
 * Mask. The vocabulary's byte strings are sorted once (sample_vocab); a
 * mask walks them in order with one automaton state per depth, so each
 * token costs only the bytes after its common prefix with the previous
 * one, and a rejected prefix skips every token that shares it: the walk of
 * a token trie without building one. Stop tokens are allowed only where
 * the output may end.
 *
 * Gates (per matcher): lazy (free text until "<tool_call>", then the
 * grammar from that tag on, back to free text when a call ends) and
 * thinking (a leading <think>...</think> block is free; the grammar starts
 * after it).
 */
#include "sample/sample.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_DEPTH = 32, MAX_PROPS = 32, MAX_DIGITS = 15, MAX_TOKEN_BYTES = 128 };

enum { N_ANY, N_OBJ, N_ARR, N_STR, N_NUM, N_INT, N_LIT, N_ALT, N_CALLS };

typedef struct node {
    int kind;
    int n;            /* OBJ: props, LIT: literals, ALT: branches, CALLS: tools */
    char **keys;      /* OBJ: '"key"'; LIT: literal texts; CALLS: '"name"' */
    int *kids;        /* OBJ: prop value nodes; ALT: branches; CALLS: argument nodes */
    uint32_t required;/* OBJ: bit i = keys[i] required */
    int value;        /* OBJ without properties: node of every value; ARR: items */
    int lo, hi;       /* ARR: items, STR: characters (hi -1: no bound) */
    int parallel;     /* CALLS */
    int bare;         /* CALLS: Llama's bare {"name", "parameters"} object, no tags */
    int has_class;    /* STR */
    uint8_t cls[32];  /* STR: allowed ASCII bytes */
    uint8_t first[32];/* bytes a value of this node may start with */
} node;

struct sample_grammar {
    atomic_int refs;
    node *v;
    int n, cap;
    int root;
    int has_any, any_obj, any_arr, any_str, any_num, any_lit; /* ANY's branches */
    int no_tags;      /* tool calls: strings never hold "</" */
};

static int bit(const uint8_t *s, unsigned c) { return s[c >> 3] >> (c & 7) & 1; }
static void set_bit(uint8_t *s, unsigned c) { s[c >> 3] |= (uint8_t)(1u << (c & 7)); }

/* ---- building nodes -------------------------------------------------------- */

static int new_node(sample_grammar *g, int kind) {
    if (g->n == g->cap) {
        int cap = g->cap ? 2 * g->cap : 32;
        node *v = realloc(g->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        g->v = v;
        g->cap = cap;
    }
    memset(&g->v[g->n], 0, sizeof g->v[0]);
    g->v[g->n].kind = kind;
    g->v[g->n].hi = -1;
    return g->n++;
}

static void first_set(sample_grammar *g, int i) {
    node *x = &g->v[i];
    memset(x->first, 0, sizeof x->first);
    switch (x->kind) {
    case N_ANY: for (const char *p = "{[\"-0123456789tfn"; *p; p++) set_bit(x->first, (unsigned char)*p); break;
    case N_OBJ: set_bit(x->first, '{'); break;
    case N_ARR: set_bit(x->first, '['); break;
    case N_STR: set_bit(x->first, '"'); break;
    case N_NUM:
    case N_INT: for (const char *p = "-0123456789"; *p; p++) set_bit(x->first, (unsigned char)*p); break;
    case N_LIT: for (int k = 0; k < x->n; k++) set_bit(x->first, (unsigned char)x->keys[k][0]); break;
    case N_ALT:
        for (int k = 0; k < x->n; k++)
            for (int b = 0; b < 32; b++) x->first[b] |= g->v[x->kids[k]].first[b];
        break;
    case N_CALLS: set_bit(x->first, x->bare ? '{' : '<'); break;
    }
}

static int add_lit(sample_grammar *g, int i, const char *text) {
    node *x = &g->v[i];
    char **k = realloc(x->keys, (size_t)(x->n + 1) * sizeof *k);
    if (!k) return -1;
    x->keys = k;
    if (!(k[x->n] = strdup(text))) return -1;
    x->n++;
    return 0;
}

static int lit_node(sample_grammar *g, const char *const *texts, int n) {
    int i = new_node(g, N_LIT);
    if (i < 0) return -1;
    for (int k = 0; k < n; k++)
        if (add_lit(g, i, texts[k])) return -1;
    first_set(g, i);
    return i;
}

typedef struct cc {
    sample_grammar *g;
    core_err *err;
    int depth;
} cc;

static int fail(cc *c, int code, const char *fmt, const char *what, const char *path) {
    char msg[200];
    snprintf(msg, sizeof msg, fmt, what);
    core_errf(c->err, code, "%s%s%s", path && *path ? path : "", path && *path ? ": " : "", msg);
    return -1;
}

static int make_any(cc *c) {
    sample_grammar *g = c->g;
    if (g->has_any) return g->v[g->any_obj].value; /* the ANY node is the free object's value */
    int any = new_node(g, N_ANY), obj = new_node(g, N_OBJ), arr = new_node(g, N_ARR), str = new_node(g, N_STR),
        num = new_node(g, N_NUM);
    static const char *const lits[] = {"true", "false", "null"};
    int lit = lit_node(g, lits, 3);
    if (any < 0 || obj < 0 || arr < 0 || str < 0 || num < 0 || lit < 0) return -1;
    g->v[obj].value = any;
    g->v[arr].value = any;
    g->has_any = 1;
    g->any_obj = obj, g->any_arr = arr, g->any_str = str, g->any_num = num, g->any_lit = lit;
    int ids[] = {any, obj, arr, str, num};
    for (int k = 0; k < 5; k++) first_set(g, ids[k]);
    return any;
}

/* ---- JSON Schema ------------------------------------------------------------- */

static int compile(cc *c, json_t *s, const char *type_override, const char *path);

static int is_annotation(const char *k) {
    static const char *const ok[] = {"description", "title", "default", "examples", "$schema", "$comment",
                                     "deprecated", "readOnly", "writeOnly", "$id", "strict", "name"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(k, ok[i])) return 1;
    return 0;
}

static int keyword_known(const char *k) {
    static const char *const ok[] = {"type", "properties", "required", "enum", "const", "items", "minItems", "maxItems",
                                     "anyOf", "oneOf", "additionalProperties", "minLength", "maxLength", "pattern"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(k, ok[i])) return 1;
    return is_annotation(k);
}

static int get_count(cc *c, json_t *s, const char *key, int def, int *out, const char *path) {
    json_t *v = json_object_get(s, key);
    *out = def;
    if (!v) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 4096)
        return fail(c, CORE_EINVAL, "'%s' must be an integer in [0, 4096]", key, path);
    *out = (int)json_integer_value(v);
    return 0;
}

/* A pattern we can enforce: ^ATOM QUANT$ with ATOM a class ([a-z0-9_], [^...],
 * \d, \w, .) over printable ASCII and QUANT one of * + ? {m} {m,} {m,n}. */
static int parse_pattern(const char *p, uint8_t *cls, int *lo, int *hi) {
    size_t n = strlen(p), i = 0;
    memset(cls, 0, 32);
    if (n < 2 || p[0] != '^' || p[n - 1] != '$' || (n >= 3 && p[n - 2] == '\\')) return -1;
    i = 1;
    n--;
    uint8_t set[32] = {0};
    if (p[i] == '[') {
        i++;
        int neg = 0;
        if (p[i] == '^') neg = 1, i++;
        int any = 0;
        while (i < n && p[i] != ']') {
            int a;
            if (p[i] == '\\' && i + 1 < n) {
                char e = p[i + 1];
                i += 2;
                if (e == 'd') { for (int ch = '0'; ch <= '9'; ch++) set_bit(set, (unsigned)ch); any = 1; continue; }
                if (e == 'w') {
                    for (int ch = 0x20; ch < 0x7f; ch++)
                        if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_')
                            set_bit(set, (unsigned)ch);
                    any = 1;
                    continue;
                }
                if (e == 's') { set_bit(set, ' '); any = 1; continue; }
                if (strchr("-.\\[]^$/+*?(){}|", e)) a = (unsigned char)e;
                else return -1;
            } else {
                a = (unsigned char)p[i++];
            }
            if (a < 0x20 || a >= 0x7f) return -1;
            int b = a;
            if (i + 1 < n && p[i] == '-' && p[i + 1] != ']') {
                b = (unsigned char)p[i + 1];
                i += 2;
                if (b == '\\' || b < a || b >= 0x7f) return -1;
            }
            for (int ch = a; ch <= b; ch++) set_bit(set, (unsigned)ch);
            any = 1;
        }
        if (i >= n || !any) return -1;
        i++;
        if (neg)
            for (int ch = 0; ch < 256; ch++) set[ch >> 3] ^= (uint8_t)(1u << (ch & 7));
    } else if (p[i] == '\\' && i + 1 < n && (p[i + 1] == 'd' || p[i + 1] == 'w')) {
        char e = p[i + 1];
        for (int ch = 0x20; ch < 0x7f; ch++)
            if ((ch >= '0' && ch <= '9') || (e == 'w' && ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_')))
                set_bit(set, (unsigned)ch);
        i += 2;
    } else if (p[i] == '.') {
        for (int ch = 0x20; ch < 0x7f; ch++) set_bit(set, (unsigned)ch);
        i++;
    } else {
        return -1;
    }
    /* printable ASCII only, and never the bytes JSON would have to escape */
    for (int ch = 0; ch < 256; ch++)
        if (bit(set, (unsigned)ch) && ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') set_bit(cls, (unsigned)ch);
    *lo = 1, *hi = 1;
    if (i == n) return 0;
    if (p[i] == '*') *lo = 0, *hi = -1, i++;
    else if (p[i] == '+') *lo = 1, *hi = -1, i++;
    else if (p[i] == '?') *lo = 0, *hi = 1, i++;
    else if (p[i] == '{') {
        char *e;
        long a = strtol(p + i + 1, &e, 10), b;
        if (e == p + i + 1 || a < 0 || a > 4096) return -1;
        if (*e == '}') b = a;
        else if (*e == ',' && e[1] == '}') b = -1, e++;
        else if (*e == ',') {
            char *f;
            b = strtol(e + 1, &f, 10);
            if (f == e + 1 || b < a || b > 4096) return -1;
            e = f;
        } else return -1;
        if (*e != '}') return -1;
        *lo = (int)a, *hi = (int)b;
        i = (size_t)(e + 1 - p);
    }
    return i == n ? 0 : -1;
}

static int compile_object(cc *c, json_t *s, const char *path) {
    sample_grammar *g = c->g;
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required"),
           *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return fail(c, CORE_EINVAL, "'%s' must be an object", "properties", path);
    if (req && !json_is_array(req)) return fail(c, CORE_EINVAL, "'%s' must be an array of names", "required", path);
    if (addl && !json_is_boolean(addl) && !json_is_object(addl))
        return fail(c, CORE_EINVAL, "'%s' must be a boolean or a schema", "additionalProperties", path);
    size_t np = props ? json_object_size(props) : 0;
    if (np == 0 && json_is_false(addl)) { /* no property may appear: the empty object alone */
        if (req && json_array_size(req))
            return fail(c, CORE_EUNSUP, "'%s' without 'properties' is not supported", "required", path);
        static const char *const empty[] = {"{}"};
        return lit_node(g, empty, 1);
    }
    int i = new_node(g, N_OBJ);
    if (i < 0) return -1;
    if (np > MAX_PROPS) return fail(c, CORE_EUNSUP, "more than 32 %s are not supported", "properties", path);
    if (np == 0) {
        if (req && json_array_size(req)) return fail(c, CORE_EUNSUP, "'%s' without 'properties' is not supported", "required", path);
        int val;
        if (json_is_object(addl) && json_object_size(addl)) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.additionalProperties", path);
            val = compile(c, addl, NULL, sub);
        } else {
            val = make_any(c);
        }
        if (val < 0) return -1;
        g->v[i].value = val;
        first_set(g, i);
        return i;
    }
    if (json_is_object(addl) && json_object_size(addl))
        return fail(c, CORE_EUNSUP, "'%s' as a schema beside 'properties' is not supported", "additionalProperties", path);
    /* declared properties only: extra ones are never generated, which every
     * value of additionalProperties (true, false, absent) allows */
    g->v[i].keys = calloc(np, sizeof(char *));
    g->v[i].kids = calloc(np, sizeof(int));
    if (!g->v[i].keys || !g->v[i].kids) return -1;
    const char *k;
    json_t *v;
    int n = 0;
    json_object_foreach(props, k, v) {
        json_t *ks = json_string(k);
        char *kt = ks ? json_dumps(ks, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(ks);
        if (!kt) return -1;
        g->v[i].keys[n] = kt;
        g->v[i].n = ++n;
        char sub[256];
        snprintf(sub, sizeof sub, "%s.properties.%.60s", path, k);
        int kid = compile(c, v, NULL, sub);
        if (kid < 0) return -1;
        g->v[i].kids[n - 1] = kid;
    }
    size_t ri;
    json_array_foreach(req, ri, v) {
        if (!json_is_string(v)) return fail(c, CORE_EINVAL, "'%s' must be an array of names", "required", path);
        int found = -1;
        n = 0;
        json_object_foreach(props, k, v) {
            (void)v;
            if (!strcmp(k, json_string_value(json_array_get(req, ri)))) found = n;
            n++;
        }
        if (found < 0)
            return fail(c, CORE_EINVAL, "required property '%.60s' is not in 'properties'",
                        json_string_value(json_array_get(req, ri)), path);
        g->v[i].required |= 1u << found;
    }
    first_set(g, i);
    return i;
}

static int compile_type(cc *c, json_t *s, const char *t, const char *path) {
    sample_grammar *g = c->g;
    int i, lo, hi;
    if (!strcmp(t, "object")) return compile_object(c, s, path);
    if (!strcmp(t, "array")) {
        json_t *items = json_object_get(s, "items");
        int item;
        char sub[256];
        snprintf(sub, sizeof sub, "%s.items", path);
        if (items && !json_is_object(items) && !json_is_boolean(items))
            return fail(c, CORE_EUNSUP, "'%s' must be one schema (tuples are not supported)", "items", path);
        item = items ? compile(c, items, NULL, sub) : make_any(c);
        if (item < 0) return -1;
        if (get_count(c, s, "minItems", 0, &lo, path) || get_count(c, s, "maxItems", -1, &hi, path)) return -1;
        if (hi >= 0 && hi < lo) return fail(c, CORE_EINVAL, "'%s' is below minItems", "maxItems", path);
        if ((i = new_node(g, N_ARR)) < 0) return -1;
        g->v[i].value = item, g->v[i].lo = lo, g->v[i].hi = hi;
        first_set(g, i);
        return i;
    }
    if (!strcmp(t, "string")) {
        if (json_object_get(s, "format")) return -2;
        if (get_count(c, s, "minLength", 0, &lo, path) || get_count(c, s, "maxLength", -1, &hi, path)) return -1;
        if ((i = new_node(g, N_STR)) < 0) return -1;
        json_t *pat = json_object_get(s, "pattern");
        if (pat) {
            int plo, phi;
            if (!json_is_string(pat) || parse_pattern(json_string_value(pat), g->v[i].cls, &plo, &phi))
                return fail(c, CORE_EUNSUP,
                            "'%s' is supported only as ^CLASS QUANTIFIER$ over ASCII (e.g. ^[a-z0-9_]{1,20}$)",
                            "pattern", path);
            g->v[i].has_class = 1;
            if (plo > lo) lo = plo;
            if (phi >= 0 && (hi < 0 || phi < hi)) hi = phi;
        }
        if (hi >= 0 && hi < lo) return fail(c, CORE_EINVAL, "'%s' is below minLength", "maxLength", path);
        g->v[i].lo = lo, g->v[i].hi = hi;
        first_set(g, i);
        return i;
    }
    if (!strcmp(t, "number") || !strcmp(t, "integer")) {
        if ((i = new_node(g, t[0] == 'n' ? N_NUM : N_INT)) < 0) return -1;
        first_set(g, i);
        return i;
    }
    if (!strcmp(t, "boolean")) {
        static const char *const b[] = {"true", "false"};
        return lit_node(g, b, 2);
    }
    if (!strcmp(t, "null")) {
        static const char *const b[] = {"null"};
        return lit_node(g, b, 1);
    }
    return fail(c, CORE_EINVAL, "unknown type '%.40s'", t, path);
}

/* Branches chosen by their first byte: refuse two that may start alike. */
static int alt_node(cc *c, const int *kids, int n, const char *path) {
    sample_grammar *g = c->g;
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            for (int k = 0; k < 32; k++)
                if (g->v[kids[a]].first[k] & g->v[kids[b]].first[k])
                    return fail(c, CORE_EUNSUP,
                                "%s branches that can start with the same character (two objects, two strings, ...) "
                                "are not supported",
                                "anyOf/type list", path);
    int i = new_node(g, N_ALT);
    if (i < 0 || !(g->v[i].kids = malloc((size_t)n * sizeof(int)))) return -1;
    memcpy(g->v[i].kids, kids, (size_t)n * sizeof(int));
    g->v[i].n = n;
    first_set(g, i);
    return i;
}

static int compile(cc *c, json_t *s, const char *type_override, const char *path) {
    if (++c->depth > MAX_DEPTH - 4) return fail(c, CORE_EUNSUP, "schemas nested deeper than %s levels are not supported", "28", path);
    int r = -1;
    if (!type_override && (json_is_true(s) || (json_is_object(s) && json_object_size(s) == 0))) {
        r = make_any(c);
        goto out;
    }
    if (!json_is_object(s)) {
        r = fail(c, CORE_EINVAL, "a schema must be an object (got %s)", json_is_false(s) ? "false" : "another type", path);
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (!keyword_known(k)) {
            r = fail(c, CORE_EUNSUP, "the keyword '%.60s' is not supported", k, path);
            goto out;
        }
    }
    json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const"), *any = json_object_get(s, "anyOf");
    if (!any) any = json_object_get(s, "oneOf");
    json_t *type = json_object_get(s, "type");
    if (en || cn) {
        if (en && (!json_is_array(en) || !json_array_size(en))) {
            r = fail(c, CORE_EINVAL, "'%s' must be a non-empty array", "enum", path);
            goto out;
        }
        if ((r = new_node(c->g, N_LIT)) < 0) goto out;
        size_t n = en ? json_array_size(en) : 1;
        for (size_t i = 0; i < n; i++) {
            char *t = json_dumps(en ? json_array_get(en, i) : cn, JSON_ENCODE_ANY | JSON_COMPACT);
            int bad = !t || add_lit(c->g, r, t);
            free(t);
            if (bad) { r = -1; goto out; }
        }
        first_set(c->g, r);
        goto out;
    }
    if (any && !type_override) {
        if (!json_is_array(any) || !json_array_size(any) || json_array_size(any) > 16) {
            r = fail(c, CORE_EINVAL, "'%s' must be an array of 1 to 16 schemas", "anyOf", path);
            goto out;
        }
        int kids[16], n = (int)json_array_size(any);
        for (int i = 0; i < n; i++) {
            char sub[256];
            snprintf(sub, sizeof sub, "%s.anyOf[%d]", path, i);
            if ((kids[i] = compile(c, json_array_get(any, (size_t)i), NULL, sub)) < 0) goto out;
        }
        r = n == 1 ? kids[0] : alt_node(c, kids, n, path);
        goto out;
    }
    if (type_override) {
        r = compile_type(c, s, type_override, path);
    } else if (json_is_string(type)) {
        r = compile_type(c, s, json_string_value(type), path);
    } else if (json_is_array(type) && json_array_size(type) >= 1 && json_array_size(type) <= 7) {
        int kids[7], n = (int)json_array_size(type);
        for (int i = 0; i < n; i++) {
            json_t *t = json_array_get(type, (size_t)i);
            if (!json_is_string(t)) {
                r = fail(c, CORE_EINVAL, "'%s' must be a string or an array of strings", "type", path);
                goto out;
            }
            c->depth--; /* same level */
            kids[i] = compile(c, s, json_string_value(t), path);
            c->depth++;
            if (kids[i] < 0) goto out;
        }
        r = n == 1 ? kids[0] : alt_node(c, kids, n, path);
    } else if (type) {
        r = fail(c, CORE_EINVAL, "'%s' must be a string or an array of strings", "type", path);
    } else if (json_object_get(s, "properties")) {
        r = compile_object(c, s, path);
    } else {
        r = make_any(c); /* only annotations */
    }
    if (r == -2) r = fail(c, CORE_EUNSUP, "the keyword '%s' is not supported", "format", path);
out:
    c->depth--;
    return r;
}

static sample_grammar *grammar_new(void) {
    sample_grammar *g = calloc(1, sizeof *g);
    if (g) atomic_init(&g->refs, 1);
    return g;
}

void sample_grammar_free(sample_grammar *g) {
    if (!g || atomic_fetch_sub(&g->refs, 1) > 1) return;
    for (int i = 0; i < g->n; i++) {
        for (int k = 0; k < g->v[i].n && g->v[i].keys; k++) free(g->v[i].keys[k]);
        free(g->v[i].keys);
        free(g->v[i].kids);
    }
    free(g->v);
    free(g);
}

sample_grammar *sample_grammar_ref(sample_grammar *g) {
    if (g) atomic_fetch_add(&g->refs, 1);
    return g;
}

static int finish_compile(sample_grammar *g, int root, sample_grammar **out, core_err *err) {
    if (root < 0) {
        if (!err || !err->code) core_errf(err, CORE_ENOMEM, "out of memory compiling the schema");
        sample_grammar_free(g);
        return err && err->code ? err->code : CORE_ENOMEM;
    }
    g->root = root;
    *out = g;
    return 0;
}

int sample_grammar_schema(const char *schema, size_t len, sample_grammar **out, core_err *err) {
    *out = NULL;
    json_error_t je;
    json_t *s = json_loadb(schema, len, 0, &je);
    if (!s) return core_errf(err, CORE_EINVAL, "the schema is not JSON: %s", je.text);
    sample_grammar *g = grammar_new();
    if (!g) { json_decref(s); return core_errf(err, CORE_ENOMEM, "out of memory"); }
    if (err) err->code = 0;
    cc c = {g, err, 0};
    int root = compile(&c, s, NULL, "");
    json_decref(s);
    return finish_compile(g, root, out, err);
}

static int grammar_tools(const sample_tool *tools, size_t n, int parallel, int bare, sample_grammar **out,
                         core_err *err) {
    *out = NULL;
    if (n == 0 || n > 128) return core_errf(err, CORE_EINVAL, "1 to 128 tools");
    sample_grammar *g = grammar_new();
    if (!g) return core_errf(err, CORE_ENOMEM, "out of memory");
    if (err) err->code = 0;
    cc c = {g, err, 0};
    int i = new_node(g, N_CALLS);
    if (i < 0 || !(g->v[i].keys = calloc(n, sizeof(char *))) || !(g->v[i].kids = calloc(n, sizeof(int))))
        return finish_compile(g, -1, out, err);
    g->v[i].parallel = parallel;
    g->v[i].bare = bare;
    g->no_tags = !bare;
    for (size_t k = 0; k < n; k++) {
        json_t *ns = json_string(tools[k].name);
        char *nt = ns ? json_dumps(ns, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(ns);
        if (!nt) return finish_compile(g, -1, out, err);
        g->v[i].keys[k] = nt;
        g->v[i].n = (int)k + 1;
        json_error_t je;
        json_t *s = tools[k].schema ? json_loadb(tools[k].schema, tools[k].schema_len, 0, &je) : json_object();
        if (!s) {
            core_errf(err, CORE_EINVAL, "tool '%.60s': the parameters are not JSON", tools[k].name);
            return finish_compile(g, -1, out, err);
        }
        char path[128];
        snprintf(path, sizeof path, "tool '%.60s' parameters", tools[k].name);
        /* arguments are an object: a schema without a type means one */
        int kid = json_object_get(s, "type") || json_object_get(s, "anyOf") || json_object_get(s, "enum")
                      ? compile(&c, s, NULL, path)
                      : compile(&c, s, "object", path);
        json_decref(s);
        if (kid < 0) return finish_compile(g, -1, out, err);
        for (int b = 0; b < 256; b++)
            if (bit(g->v[kid].first, (unsigned)b) != (b == '{')) {
                core_errf(err, CORE_EINVAL, "%s: the arguments must be an object", path);
                return finish_compile(g, -1, out, err);
            }
        g->v[i].kids[k] = kid;
    }
    first_set(g, i);
    return finish_compile(g, i, out, err);
}

int sample_grammar_tools(const sample_tool *tools, size_t n, int parallel, sample_grammar **out, core_err *err) {
    return grammar_tools(tools, n, parallel, 0, out, err);
}

int sample_grammar_tools_json(const sample_tool *tools, size_t n, sample_grammar **out, core_err *err) {
    return grammar_tools(tools, n, 0, 1, out, err);
}

/* ---- the automaton ------------------------------------------------------------ */

typedef struct frame {
    int16_t node;
    uint8_t phase;
    uint8_t flag;
    int32_t a, b, c;
} frame;

typedef struct mstate {
    int depth;          /* frames in use; 0 with done: the value is complete */
    int done;
    frame f[MAX_DEPTH];
} mstate;

static const char CALL_PRE[] = "<tool_call>\n{\"name\": ";
static const char CALL_MID[] = ", \"arguments\": ";
static const char CALL_POST[] = "}\n</tool_call>";
static const char BARE_PRE[] = "{\"name\": ";
static const char BARE_MID[] = ", \"parameters\": ";
static const char BARE_POST[] = "}";

enum { R_OK, R_FAIL, R_POP_AGAIN };

static int push(mstate *s, int node) {
    if (s->depth >= MAX_DEPTH) return -1;
    s->f[s->depth++] = (frame){.node = (int16_t)node};
    return 0;
}

static int pop_done(mstate *s) {
    s->depth--;
    if (s->depth == 0) s->done = 1;
    return R_OK;
}

/* Is the number in frame f complete (may end here)? */
static int num_complete(const frame *f) { return f->phase == 2 || f->phase == 3 || f->phase == 5 || f->phase == 8; }

static int lit_can_end(const node *x, const frame *f) {
    return f->phase == 1 && (size_t)f->a == strlen(x->keys[f->b]);
}

static int step(const sample_grammar *g, mstate *s, unsigned char ch) {
    for (;;) {
        if (s->depth == 0) return R_FAIL; /* nothing may follow a complete value */
        frame *f = &s->f[s->depth - 1];
        const node *x = &g->v[f->node];
        switch (x->kind) {
        case N_ANY: {
            int to = ch == '{' ? g->any_obj : ch == '[' ? g->any_arr : ch == '"' ? g->any_str
                     : (ch == '-' || (ch >= '0' && ch <= '9')) ? g->any_num
                     : (ch == 't' || ch == 'f' || ch == 'n') ? g->any_lit : -1;
            if (to < 0) return R_FAIL;
            if ((ch == '{' || ch == '[') && s->depth >= MAX_DEPTH - 2) return R_FAIL; /* keep room */
            *f = (frame){.node = (int16_t)to};
            continue;
        }
        case N_ALT: {
            int to = -1;
            for (int k = 0; k < x->n && to < 0; k++)
                if (bit(g->v[x->kids[k]].first, ch)) to = x->kids[k];
            if (to < 0) return R_FAIL;
            *f = (frame){.node = (int16_t)to};
            continue;
        }
        case N_LIT: {
            if (f->phase == 0) { f->phase = 1, f->a = 0, f->b = -1; }
            int pos = f->a, cand = -1;
            for (int k = 0; k < x->n && cand < 0; k++) {
                const char *t = x->keys[k];
                if ((size_t)pos < strlen(t) && (unsigned char)t[pos] == ch &&
                    (f->b < 0 || !memcmp(t, x->keys[f->b], (size_t)pos)))
                    cand = k;
            }
            if (cand < 0) {
                if (f->b >= 0 && lit_can_end(x, f)) { pop_done(s); continue; }
                return R_FAIL;
            }
            f->b = cand, f->a = pos + 1;
            if (lit_can_end(x, f)) { /* ends here unless a longer literal shares the prefix */
                int longer = 0;
                for (int k = 0; k < x->n && !longer; k++)
                    longer = strlen(x->keys[k]) > (size_t)f->a && !memcmp(x->keys[k], x->keys[f->b], (size_t)f->a);
                if (!longer) return pop_done(s);
            }
            return R_OK;
        }
        case N_NUM:
        case N_INT: {
            int d = ch >= '0' && ch <= '9';
            switch (f->phase) {
            case 0:
                if (ch == '-') { f->phase = 1; return R_OK; }
                /* fallthrough */
            case 1:
                if (ch == '0') { f->phase = 2; return R_OK; }
                if (d) { f->phase = 3, f->a = 1; return R_OK; }
                return R_FAIL;
            case 3:
                if (d) { if (f->a >= MAX_DIGITS) return R_FAIL; f->a++; return R_OK; }
                /* fallthrough */
            case 2:
                if (x->kind == N_NUM && ch == '.') { f->phase = 4, f->a = 0; return R_OK; }
                if (x->kind == N_NUM && (ch == 'e' || ch == 'E')) { f->phase = 6, f->a = 0; return R_OK; }
                break;
            case 4:
            case 5:
                if (d && f->a < MAX_DIGITS) { f->phase = 5, f->a++; return R_OK; }
                if (f->phase == 5 && (ch == 'e' || ch == 'E')) { f->phase = 6, f->a = 0; return R_OK; }
                if (f->phase == 4) return R_FAIL;
                break;
            case 6:
                if (ch == '-' || ch == '+') { f->phase = 7; return R_OK; }
                /* fallthrough */
            case 7:
            case 8:
                if (d && f->a < 2) { f->phase = 8, f->a++; return R_OK; } /* 1e99 at most: a double */
                if (f->phase != 8) return R_FAIL;
                break;
            }
            if (!num_complete(f)) return R_FAIL;
            pop_done(s);
            continue; /* the byte belongs to the parent */
        }
        case N_STR: {
            if (f->phase == 0) {
                if (ch != '"') return R_FAIL;
                f->phase = 1, f->a = 0, f->b = 0, f->c = 0, f->flag = 0;
                return R_OK;
            }
            if (f->b > 0) { /* UTF-8 continuation, with the first one's range */
                static const unsigned char lo[] = {0x80, 0xa0, 0x80, 0x90, 0x80}, hi[] = {0xbf, 0xbf, 0x9f, 0xbf, 0x8f};
                if (ch < lo[f->c] || ch > hi[f->c]) return R_FAIL;
                f->b--, f->c = 0;
                if (f->b == 0) f->a++;
                return R_OK;
            }
            if (f->flag & 1) { /* after a backslash */
                if (!strchr("\"\\/bfnrt", ch) || !ch) return R_FAIL;
                f->flag = 0, f->a++;
                return R_OK;
            }
            if (ch == '"') {
                if (f->a < x->lo) return R_FAIL;
                return pop_done(s);
            }
            if (x->hi >= 0 && f->a >= x->hi) return R_FAIL;
            /* "</" never: inside a tool call it would read as the closing tag */
            if (g->no_tags && ch == '/' && (f->flag & 2)) return R_FAIL;
            f->flag = ch == '<' ? 2 : 0;
            if (x->has_class) {
                if (!bit(x->cls, ch)) return R_FAIL;
                f->a++;
                return R_OK;
            }
            if (ch < 0x20 || ch == 0x7f) return R_FAIL;
            if (ch == '\\') { f->flag = 1; return R_OK; }
            if (ch < 0x80) { f->a++; return R_OK; }
            if (ch >= 0xc2 && ch <= 0xdf) { f->b = 1, f->c = 0; return R_OK; }
            if (ch >= 0xe0 && ch <= 0xef) { f->b = 2, f->c = ch == 0xe0 ? 1 : ch == 0xed ? 2 : 0; return R_OK; }
            if (ch >= 0xf0 && ch <= 0xf4) { f->b = 3, f->c = ch == 0xf0 ? 3 : ch == 0xf4 ? 4 : 0; return R_OK; }
            return R_FAIL;
        }
        case N_ARR: {
            switch (f->phase) {
            case 0:
                if (ch != '[') return R_FAIL;
                f->phase = 1, f->a = 0;
                return R_OK;
            case 1: /* after '[' */
                if (ch == ']' && x->lo == 0) return pop_done(s);
                if (x->hi == 0) return R_FAIL;
                f->phase = 5, f->a = 1;
                if (push(s, x->value)) return R_FAIL;
                continue;
            case 5: /* after a value */
                if (ch == ']' && f->a >= x->lo) return pop_done(s);
                if (ch == ',' && (x->hi < 0 || f->a < x->hi)) { f->phase = 6, f->flag = 0; return R_OK; }
                return R_FAIL;
            case 6: /* after ',' */
                if (ch == ' ' && !f->flag) { f->flag = 1; return R_OK; }
                f->phase = 5, f->a++;
                if (push(s, x->value)) return R_FAIL;
                continue;
            }
            return R_FAIL;
        }
        case N_OBJ: {
            int free_keys = x->n == 0;
            uint32_t all = x->n >= 32 ? 0xffffffffu : ((1u << x->n) - 1);
            switch (f->phase) {
            case 0:
                if (ch != '{') return R_FAIL;
                f->phase = 1, f->a = 0;
                return R_OK;
            case 1: /* after '{': a key or '}' */
            case 6: /* after ',': a key (one space allowed first) */
                if (f->phase == 6 && ch == ' ' && !f->flag) { f->flag = 1; return R_OK; }
                if (ch == '}' && f->phase == 1 && ((uint32_t)f->a & x->required) == x->required) return pop_done(s);
                if (ch != '"') return R_FAIL;
                if (free_keys) {
                    f->phase = 3;
                    if (push(s, g->any_str)) return R_FAIL;
                    continue;
                }
                f->phase = 2, f->b = 0, f->c = -1;
                /* fallthrough */
            case 2: { /* in a declared key: b bytes matched, c a candidate */
                int cand = -1;
                for (int k = 0; k < x->n && cand < 0; k++) {
                    const char *t = x->keys[k];
                    if (((uint32_t)f->a >> k & 1) || (size_t)f->b >= strlen(t) || (unsigned char)t[f->b] != ch) continue;
                    if (f->c >= 0 && memcmp(t, x->keys[f->c], (size_t)f->b)) continue;
                    cand = k;
                }
                if (cand < 0) return R_FAIL;
                f->c = cand, f->b++;
                if ((size_t)f->b == strlen(x->keys[cand])) f->phase = 3; /* the closing quote */
                return R_OK;
            }
            case 3: /* after the key */
                if (ch != ':') return R_FAIL;
                f->phase = 4, f->flag = 0;
                return R_OK;
            case 4: /* after ':' */
                if (ch == ' ' && !f->flag) { f->flag = 1; return R_OK; }
                f->phase = 5;
                if (!free_keys) f->a |= (int32_t)(1u << f->c);
                if (push(s, free_keys ? x->value : x->kids[f->c])) return R_FAIL;
                continue;
            case 5: /* after a value */
                if (ch == '}' && ((uint32_t)f->a & x->required) == x->required) return pop_done(s);
                if (ch == ',' && (free_keys || ((uint32_t)f->a & all) != all)) { f->phase = 6, f->flag = 0; return R_OK; }
                return R_FAIL;
            }
            return R_FAIL;
        }
        case N_CALLS: {
            switch (f->phase) {
            case 0: { /* "<tool_call>\n{\"name\": " */
                const char *pre = x->bare ? BARE_PRE : CALL_PRE;
                if ((unsigned char)pre[f->a] != ch) return R_FAIL;
                if (!pre[++f->a]) f->phase = 1, f->a = 0, f->b = -1;
                return R_OK;
            }
            case 1: { /* the name, a JSON string among the tools' */
                int cand = -1;
                for (int k = 0; k < x->n && cand < 0; k++) {
                    const char *t = x->keys[k];
                    if ((size_t)f->a < strlen(t) && (unsigned char)t[f->a] == ch &&
                        (f->b < 0 || !memcmp(t, x->keys[f->b], (size_t)f->a)))
                        cand = k;
                }
                if (cand < 0) return R_FAIL;
                f->b = cand, f->a++;
                if ((size_t)f->a == strlen(x->keys[cand])) f->phase = 2, f->a = 0;
                return R_OK;
            }
            case 2: { /* ", \"arguments\": " then the arguments */
                const char *mid = x->bare ? BARE_MID : CALL_MID;
                if ((unsigned char)mid[f->a] != ch) return R_FAIL;
                if (!mid[++f->a]) {
                    f->phase = 3, f->a = 0;
                    if (push(s, x->kids[f->b])) return R_FAIL;
                }
                return R_OK;
            }
            case 3: { /* "}\n</tool_call>" */
                const char *post = x->bare ? BARE_POST : CALL_POST;
                if ((unsigned char)post[f->a] != ch) return R_FAIL;
                if (!post[++f->a]) {
                    if (!x->parallel) return pop_done(s);
                    f->phase = 4, f->a = 0;
                }
                return R_OK;
            }
            case 4: /* complete; "\n" opens another call */
                if (ch != '\n') return R_FAIL;
                f->phase = 0, f->a = 0;
                return R_OK;
            }
            return R_FAIL;
        }
        }
        return R_FAIL;
    }
}

/* May the output end in state s? */
static int can_end(const sample_grammar *g, const mstate *s) {
    if (s->done) return 1;
    if (s->depth != 1) return 0;
    const frame *f = &s->f[0];
    const node *x = &g->v[f->node];
    if (x->kind == N_NUM || x->kind == N_INT) return num_complete(f);
    if (x->kind == N_LIT) return lit_can_end(x, f);
    if (x->kind == N_CALLS) return f->phase == 4;
    return 0;
}

/* ---- vocabulary -------------------------------------------------------------- */

struct sample_vocab {
    int32_t n;
    int32_t *order;     /* ids sorted by their bytes */
    uint32_t *off;      /* [n] offset of id's bytes in blob */
    uint16_t *len;      /* [n] bytes of id (0: none, never allowed as text) */
    uint16_t *lcp;      /* [n] common prefix of order[i] with order[i-1] */
    uint8_t *stop;      /* [n] 1: a stop token */
    uint8_t *plain;     /* [n] 1: text any free string may hold whole (see mask) */
    uint16_t *nchar;    /* [n] characters of a plain token */
    int32_t *order_np;  /* the ids not plain, sorted by bytes */
    uint16_t *lcp_np;
    int32_t n_np;
    char *blob;
    int32_t think, think_end;
    int max_len;
};

static const sample_vocab *sort_v;
static int cmp_tok(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    const sample_vocab *v = sort_v;
    size_t la = v->len[a], lb = v->len[b], l = la < lb ? la : lb;
    int c = memcmp(v->blob + v->off[a], v->blob + v->off[b], l);
    if (c) return c;
    if (la != lb) return la < lb ? -1 : 1;
    return a < b ? -1 : a > b;
}

static void lcp_fill(const sample_vocab *v, const int32_t *order, uint16_t *lcp, int32_t n) {
    for (int32_t i = 1; i < n; i++) {
        int32_t a = order[i - 1], b = order[i];
        size_t l = 0, m = v->len[a] < v->len[b] ? v->len[a] : v->len[b];
        while (l < m && v->blob[v->off[a] + l] == v->blob[v->off[b] + l]) l++;
        lcp[i] = (uint16_t)l;
    }
}

int sample_vocab_new(const tok *t, sample_vocab **out, core_err *err) {
    static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER; /* qsort has no context argument */
    *out = NULL;
    sample_vocab *v = calloc(1, sizeof *v);
    int32_t n = tok_n_vocab(t);
    core_buf blob = {0}, piece = {0};
    if (!v) goto oom;
    v->n = n;
    v->order = malloc((size_t)n * sizeof *v->order);
    v->off = malloc((size_t)n * sizeof *v->off);
    v->len = calloc((size_t)n, sizeof *v->len);
    v->lcp = calloc((size_t)n, sizeof *v->lcp);
    v->stop = calloc((size_t)n, 1);
    if (!v->order || !v->off || !v->len || !v->lcp || !v->stop) goto oom;
    int32_t tc = tok_find(t, "<tool_call>"), tce = tok_find(t, "</tool_call>");
    const tok_special *sp = tok_specials(t);
    v->think = sp->think, v->think_end = sp->think_end;
    for (int32_t id = 0; id < n; id++) {
        v->order[id] = id;
        v->off[id] = (uint32_t)blob.len;
        v->stop[id] = (uint8_t)tok_is_stop(t, id);
        core_buf_clear(&piece);
        if (id == tc || id == tce) { /* control tokens whose text the engine shows */
            if (core_buf_puts(&piece, id == tc ? "<tool_call>" : "</tool_call>")) goto oom;
        } else if (!tok_is_control(t, id)) {
            if (tok_decode(t, &id, 1, 0, &piece)) goto oom;
        }
        if (piece.len > MAX_TOKEN_BYTES) piece.len = 0; /* never needed for JSON; keeps the walk's stack small */
        if (core_buf_append(&blob, piece.data ? piece.data : "", piece.len)) goto oom;
        v->len[id] = (uint16_t)piece.len;
        if ((int)piece.len > v->max_len) v->max_len = (int)piece.len;
    }
    if (core_buf_reserve(&blob, 1)) goto oom;
    v->blob = blob.data;
    blob.data = NULL;
    pthread_mutex_lock(&sort_mu);
    sort_v = v;
    qsort(v->order, (size_t)n, sizeof *v->order, cmp_tok);
    pthread_mutex_unlock(&sort_mu);
    v->plain = calloc((size_t)n, 1);
    v->nchar = calloc((size_t)n, sizeof *v->nchar);
    v->order_np = malloc((size_t)n * sizeof *v->order_np);
    v->lcp_np = calloc((size_t)n, sizeof *v->lcp_np);
    if (!v->plain || !v->nchar || !v->order_np || !v->lcp_np) goto oom;
    for (int32_t id = 0; id < n; id++) {
        const unsigned char *b = (const unsigned char *)v->blob + v->off[id];
        int len = v->len[id], ok = len > 0 && id != tc && id != tce && b[0] != '/' &&
                                  core_utf8_valid((const char *)b, (size_t)len);
        for (int k = 0; k < len && ok; k++) {
            if (b[k] < 0x20 || b[k] == 0x7f || b[k] == '"' || b[k] == '\\' || (b[k] == '/' && b[k - 1] == '<')) ok = 0;
            v->nchar[id] += (b[k] & 0xc0) != 0x80;
        }
        v->plain[id] = (uint8_t)ok;
    }
    for (int32_t i = 0; i < n; i++)
        if (!v->plain[v->order[i]]) v->order_np[v->n_np++] = v->order[i];
    lcp_fill(v, v->order, v->lcp, n);
    lcp_fill(v, v->order_np, v->lcp_np, v->n_np);
    core_buf_free(&piece);
    *out = v;
    return 0;
oom:
    core_buf_free(&blob);
    core_buf_free(&piece);
    sample_vocab_free(v);
    return core_errf(err, CORE_ENOMEM, "out of memory building the vocabulary table");
}

void sample_vocab_free(sample_vocab *v) {
    if (!v) return;
    free(v->order);
    free(v->off);
    free(v->len);
    free(v->lcp);
    free(v->stop);
    free(v->plain);
    free(v->nchar);
    free(v->order_np);
    free(v->lcp_np);
    free(v->blob);
    free(v);
}

/* ---- the matcher --------------------------------------------------------------- */

enum { GATE_ON = 0, GATE_LAZY, GATE_PRE_THINK, GATE_THINK, GATE_LAZY_THINK };

struct sample_matcher {
    sample_grammar *g;
    const sample_vocab *v;
    int gate, lazy;
    mstate st;
    mstate *walk;        /* [max_len + 1] states of the mask walk */
    char trig[16];       /* lazy: the last bytes of free text */
    size_t trig_len;
};

static void st_reset(sample_matcher *m) {
    m->st.depth = 0;
    m->st.done = 0;
    push(&m->st, m->g->root);
}

int sample_matcher_new(sample_grammar *g, const sample_vocab *v, int lazy, int thinking, sample_matcher **out,
                       core_err *err) {
    *out = NULL;
    if (lazy && (g->v[g->root].kind != N_CALLS || g->v[g->root].bare))
        return core_errf(err, CORE_EINVAL, "a lazy grammar must be tool calls in <tool_call> tags");
    sample_matcher *m = calloc(1, sizeof *m);
    if (!m || !(m->walk = malloc((size_t)(v->max_len + 1) * sizeof *m->walk))) {
        free(m);
        return core_errf(err, CORE_ENOMEM, "out of memory");
    }
    m->g = sample_grammar_ref(g);
    m->v = v;
    m->lazy = lazy;
    m->gate = lazy ? GATE_LAZY : thinking ? GATE_PRE_THINK : GATE_ON;
    st_reset(m);
    *out = m;
    return 0;
}

void sample_matcher_free(sample_matcher *m) {
    if (!m) return;
    sample_grammar_free(m->g);
    free(m->walk);
    free(m);
}

static void copy_state(mstate *dst, const mstate *src) {
    dst->depth = src->depth;
    dst->done = src->done;
    memcpy(dst->f, src->f, (size_t)src->depth * sizeof(frame));
}

int sample_matcher_active(const sample_matcher *m) { return m->gate == GATE_ON || m->gate == GATE_PRE_THINK; }

/* The walk over ids order[0..n) (sorted by bytes, lcp[i] shared with
 * order[i-1]) from state m->st: -inf for the rejected ones. */
static size_t walk(sample_matcher *m, const int32_t *order, const uint16_t *lcp, int32_t n, float *logits, int end_ok) {
    const sample_vocab *v = m->v;
    const sample_grammar *g = m->g;
    size_t allowed = 0;
    copy_state(&m->walk[0], &m->st);
    int ok_prev = 0; /* bytes of the previous token that stepped */
    for (int32_t i = 0; i < n; i++) {
        int32_t id = order[i];
        int len = v->len[id], l = i ? lcp[i] : 0;
        int keep = 0;
        if (len == 0) {
            keep = (v->stop[id] && end_ok) || (m->gate == GATE_PRE_THINK && id == v->think);
            ok_prev = 0;
        } else if (ok_prev < l) {
            /* shares the prefix that failed at byte ok_prev: rejected too */
        } else {
            const unsigned char *b = (const unsigned char *)v->blob + v->off[id];
            int k = l;
            for (; k < len; k++) {
                copy_state(&m->walk[k + 1], &m->walk[k]);
                if (step(g, &m->walk[k + 1], b[k]) != R_OK) break;
            }
            ok_prev = k;
            keep = k == len;
        }
        if (keep) allowed++;
        else logits[id] = -INFINITY;
    }
    return allowed;
}

size_t sample_matcher_mask(sample_matcher *m, float *logits) {
    if (!sample_matcher_active(m)) return (size_t)m->v->n;
    const sample_vocab *v = m->v;
    int end_ok = can_end(m->g, &m->st);
    const frame *f = m->st.depth ? &m->st.f[m->st.depth - 1] : NULL;
    const node *x = f ? &m->g->v[f->node] : NULL;
    if (x && x->kind == N_STR && f->phase == 1 && f->b == 0 && f->flag == 0 && !x->has_class) {
        /* Inside a free string, between characters: a plain token is
         * allowed whole when its characters fit, whatever it holds, so
         * only the others (quotes, escapes, partial UTF-8...) are walked. */
        size_t allowed = 0;
        int room = x->hi < 0 ? 1 << 30 : x->hi - f->a;
        for (int32_t id = 0; id < v->n; id++) {
            if (!v->plain[id]) continue;
            if (v->nchar[id] <= room) allowed++;
            else logits[id] = -INFINITY;
        }
        return allowed + walk(m, v->order_np, v->lcp_np, v->n_np, logits, end_ok);
    }
    return walk(m, v->order, v->lcp, v->n, logits, end_ok);
}

/* Free text in lazy mode: watch for the tag; from it on, the grammar. */
static int lazy_push(sample_matcher *m, const char *b, size_t n) {
    static const char tag[] = "<tool_call>";
    char win[16 + MAX_TOKEN_BYTES];
    memcpy(win, m->trig, m->trig_len);
    memcpy(win + m->trig_len, b, n);
    size_t wn = m->trig_len + n;
    const char *p = memmem(win, wn, tag, sizeof tag - 1);
    if (!p) {
        size_t keep = wn < sizeof tag - 2 ? wn : sizeof tag - 2;
        memmove(m->trig, win + wn - keep, keep);
        m->trig_len = keep;
        return 0;
    }
    m->trig_len = 0;
    st_reset(m);
    m->gate = GATE_ON;
    for (const char *q = p; q < win + wn; q++)
        if (step(m->g, &m->st, (unsigned char)*q) != R_OK) { /* a token past the tag the grammar refuses */
            m->gate = GATE_LAZY;
            return -1;
        }
    return 0;
}

int sample_matcher_accept(sample_matcher *m, int32_t id) {
    const sample_vocab *v = m->v;
    if (id < 0 || id >= v->n) return -1;
    if (m->gate == GATE_THINK) {
        if (id == v->think_end) m->gate = GATE_ON;
        return 0;
    }
    if (m->gate == GATE_LAZY_THINK) {
        if (id == v->think_end) m->gate = GATE_LAZY;
        return 0;
    }
    if (m->gate == GATE_LAZY) {
        if (id == v->think) { m->gate = GATE_LAZY_THINK; return 0; }
        return lazy_push(m, v->blob + v->off[id], v->len[id]);
    }
    if (m->gate == GATE_PRE_THINK) {
        if (id == v->think) { m->gate = GATE_THINK; return 0; }
        m->gate = GATE_ON;
    }
    if (v->stop[id]) return can_end(m->g, &m->st) ? 0 : -1;
    const unsigned char *b = (const unsigned char *)v->blob + v->off[id];
    if (!v->len[id]) return -1;
    for (int k = 0; k < v->len[id]; k++)
        if (step(m->g, &m->st, b[k]) != R_OK) return -1;
    if (m->lazy && can_end(m->g, &m->st)) { /* a call ended: free text again until the next tag */
        m->gate = GATE_LAZY;
        m->trig_len = 0;
    }
    return 0;
}

int sample_matcher_feed(sample_matcher *m, const char *text, size_t len) {
    for (size_t k = 0; k < len; k++)
        if (step(m->g, &m->st, (unsigned char)text[k]) != R_OK) return -1;
    return 0;
}

int sample_matcher_can_end(const sample_matcher *m) { return can_end(m->g, &m->st); }

void sample_matcher_reset(sample_matcher *m) {
    m->gate = m->lazy ? GATE_LAZY : GATE_ON;
    m->trig_len = 0;
    st_reset(m);
}
