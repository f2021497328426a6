/* render.c -- walk the tree with Python's semantics for the values chat
 * templates handle: str, int, float, bool, None, list/tuple, dict, Jinja2's
 * Undefined, namespace() and the loop object.
 *
 * Values live in the render's arena and die with it (templates build few
 * and small ones); nothing is freed early. Every string carries its taint,
 * the sorted byte ranges that came from the context's `data` object; string
 * operations carry them along (exactly for concatenation, slicing, strip
 * and split; the whole result for anything that rewrites the text, such as
 * replace, tojson or repr), and the output records them as jinja_span.
 *
 * Budgets: each node evaluated and each loop turn is a step, every 256
 * bytes copied is another, the arena has a byte limit and the output a
 * size limit, macro calls and blocks a depth limit; any of them ends the
 * render with CORE_EFULL. Errors carry the line of the node that failed.
 *
 * Scopes follow Jinja2: a for loop's body gets a fresh scope per turn (a
 * set inside it is gone after the turn), if blocks share their parent's,
 * a macro sees its parameters and the template's top level.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja/jinja_int.h"

enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_LOOP, V_MACRO, V_FUNC, V_RANGE };
enum { F_RANGE = 1, F_NAMESPACE, F_RAISE, F_STRFTIME, F_DICT };

typedef struct jstr {
    const char *p;
    size_t n;
    const jinja_span *t; /* taint, relative to p */
    size_t nt;
} jstr;

typedef struct val val;
typedef struct jlist {
    val *v;
    size_t n;
    int tuple;
} jlist;
typedef struct jdict {
    val *k, *v;
    size_t n, cap;
} jdict;
typedef struct jloop {
    const val *items;
    size_t i, n;
    int64_t rstart, rstep; /* range loops have no items */
} jloop;

struct val {
    int k;
    union {
        int64_t i;
        double f;
        jstr *s;
        jlist *l;
        jdict *d;
        jloop *lp;
        const jnode *m;
        int fn;
        int64_t *r; /* range: start, stop, step */
    } u;
    const char *uname; /* V_UNDEF: the missing name, for messages */
};

typedef struct var {
    const char *name;
    val v;
} var;

typedef struct frame {
    size_t base;
    int barrier; /* a macro's frame: lookups skip to the top level */
} frame;

typedef struct sink {
    char *p;
    size_t n, cap;
    jinja_span *t;
    size_t nt, tcap;
} sink;

typedef struct rs {
    jarena ar;
    core_err *err;
    size_t steps, max_steps, max_out;
    int depth, max_depth;
    time_t now;
    int line; /* of the node being evaluated, for limit messages */
    var *vars;
    size_t nv, vcap;
    frame fr[128];
    int nfr;
} rs;

enum { R_BREAK = 1, R_CONTINUE = 2 };

#define TRY(x)               \
    do {                     \
        int rc_ = (x);       \
        if (rc_) return rc_; \
    } while (0)

static int rerr(rs *r, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rerr(rs *r, int line, const char *fmt, ...) {
    char m[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return core_errf(r->err, CORE_EFORMAT, "template line %d: %s", line, m);
}

static int oom(rs *r) {
    if (r->ar.over)
        return core_errf(r->err, CORE_EFULL, "template line %d: render exceeds its memory limit (%zu bytes)", r->line,
                         r->ar.limit);
    return core_errf(r->err, CORE_ENOMEM, "out of memory");
}

static int charge(rs *r, size_t bytes) {
    r->steps += 1 + bytes / 256;
    if (r->steps > r->max_steps)
        return core_errf(r->err, CORE_EFULL, "template line %d: render exceeds its step limit (%zu steps)", r->line,
                         r->max_steps);
    return 0;
}

static void *ralloc(rs *r, size_t n) { return jarena_alloc(&r->ar, n); }

/* ---- values ----------------------------------------------------------------- */

static val v_undef(const char *name) { return (val){.k = V_UNDEF, .uname = name}; }
static val v_none(void) { return (val){.k = V_NONE}; }
static val v_bool(int b) { return (val){.k = V_BOOL, .u.i = !!b}; }
static val v_int(int64_t i) { return (val){.k = V_INT, .u.i = i}; }
static val v_float(double f) { return (val){.k = V_FLOAT, .u.f = f}; }

static const char *type_name(const val *v) {
    switch (v->k) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: return v->u.l->tuple ? "tuple" : "list";
    case V_DICT: return "dict";
    case V_NS: return "Namespace";
    case V_LOOP: return "LoopContext";
    case V_RANGE: return "range";
    default: return "function";
    }
}

/* A string value over p[0..n) (copied); taint: NULL/0, or ranges relative to p. */
static int mkstr(rs *r, const char *p, size_t n, const jinja_span *t, size_t nt, val *out) {
    if (n > r->max_out)
        return core_errf(r->err, CORE_EFULL, "template line %d: render exceeds its output limit (%zu bytes)", r->line,
                         r->max_out);
    TRY(charge(r, n));
    jstr *s = ralloc(r, sizeof *s);
    char *d = ralloc(r, n + 1);
    jinja_span *tt = nt ? ralloc(r, nt * sizeof *tt) : NULL;
    if (!s || !d || (nt && !tt)) return oom(r);
    if (n) memcpy(d, p, n);
    if (nt) memcpy(tt, t, nt * sizeof *tt);
    *s = (jstr){d, n, tt, nt};
    *out = (val){.k = V_STR, .u.s = s};
    return 0;
}

static int mkcstr(rs *r, const char *s, val *out) { return mkstr(r, s, strlen(s), NULL, 0, out); }

static int is_num(const val *v) { return v->k == V_INT || v->k == V_FLOAT || v->k == V_BOOL; }
static double num_f(const val *v) { return v->k == V_FLOAT ? v->u.f : (double)v->u.i; }

/* ---- sinks: growing text with taint --------------------------------------- */

static int sink_grow(rs *r, sink *s, size_t extra) {
    if (s->n + extra > r->max_out || s->n + extra < s->n)
        return core_errf(r->err, CORE_EFULL, "template line %d: render exceeds its output limit (%zu bytes)", r->line,
                         r->max_out);
    if (s->n + extra + 1 <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->n + extra + 1) cap *= 2;
    char *p = realloc(s->p, cap);
    if (!p) return oom(r);
    s->p = p;
    s->cap = cap;
    return 0;
}

static int sink_taint(rs *r, sink *s, size_t off, size_t len) {
    if (!len) return 0;
    if (s->nt && s->t[s->nt - 1].off + s->t[s->nt - 1].len == off) {
        s->t[s->nt - 1].len += len;
        return 0;
    }
    if (s->nt == s->tcap) {
        size_t cap = s->tcap ? s->tcap * 2 : 16;
        jinja_span *t = realloc(s->t, cap * sizeof *t);
        if (!t) return oom(r);
        s->t = t;
        s->tcap = cap;
    }
    s->t[s->nt++] = (jinja_span){off, len};
    return 0;
}

/* Append p[0..n) with its taint t[0..nt) (relative to p); all: taint it all. */
static int sink_put(rs *r, sink *s, const char *p, size_t n, const jinja_span *t, size_t nt, int all) {
    TRY(charge(r, n)); /* even when empty: '' * 10**10 must run out of steps */
    if (!n) return 0;
    TRY(sink_grow(r, s, n));
    size_t at = s->n;
    memcpy(s->p + at, p, n);
    s->n += n;
    s->p[s->n] = 0;
    if (all) return sink_taint(r, s, at, n);
    for (size_t i = 0; i < nt; i++) TRY(sink_taint(r, s, at + t[i].off, t[i].len));
    return 0;
}

static int sink_cs(rs *r, sink *s, const char *c) { return sink_put(r, s, c, strlen(c), NULL, 0, 0); }
static int sink_str(rs *r, sink *s, const jstr *x) { return sink_put(r, s, x->p, x->n, x->t, x->nt, 0); }

static void sink_free(sink *s) {
    free(s->p);
    free(s->t);
    memset(s, 0, sizeof *s);
}

/* The sink's text as a string value; the sink is freed. */
static int sink_val(rs *r, sink *s, val *out) {
    int rc = mkstr(r, s->p ? s->p : "", s->n, s->t, s->nt, out);
    sink_free(s);
    return rc;
}

/* ---- Python text forms: str(), repr(), json.dumps() ----------------------- */

/* Python's repr of a float: the shortest digits that read back the same. */
static void float_repr(double f, char *buf, size_t cap, int json) {
    if (isnan(f)) {
        snprintf(buf, cap, json ? "NaN" : "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, cap, f < 0 ? (json ? "-Infinity" : "-inf") : (json ? "Infinity" : "inf"));
        return;
    }
    char e[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, f);
        if (strtod(e, NULL) == f) break;
    }
    /* e = "-d.ddde+XX": digits and exponent */
    char digs[24];
    size_t nd = 0;
    const char *q = e;
    int neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digs[nd++] = *q;
    while (nd > 1 && digs[nd - 1] == '0') nd--;
    int ex = atoi(q + 1);
    size_t k = 0;
    if (neg) buf[k++] = '-';
    if (ex >= -5 + 1 && ex < 16) {
        if (ex < 0) {
            buf[k++] = '0';
            buf[k++] = '.';
            for (int i = -1; i > ex; i--) buf[k++] = '0';
            for (size_t i = 0; i < nd; i++) buf[k++] = digs[i];
        } else {
            for (int i = 0; i <= ex; i++) buf[k++] = (size_t)i < nd ? digs[i] : '0';
            buf[k++] = '.';
            if ((size_t)ex + 1 < nd)
                for (size_t i = (size_t)ex + 1; i < nd; i++) buf[k++] = digs[i];
            else
                buf[k++] = '0';
        }
        buf[k] = 0;
    } else {
        buf[k++] = digs[0];
        if (nd > 1) {
            buf[k++] = '.';
            for (size_t i = 1; i < nd; i++) buf[k++] = digs[i];
        }
        snprintf(buf + k, cap - k, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
}

/* Python's str.isprintable for one code point, for the characters that
 * occur in practice: controls, separators other than space, format marks. */
static int py_printable(uint32_t c) {
    if (c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad) return 0;
    if (c == 0x1680 || (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x2064))
        return 0;
    if (c == 0x3000 || c == 0xfeff || (c >= 0xd800 && c <= 0xf8ff) || (c >= 0xfff9 && c <= 0xfffb)) return 0;
    if (c == 0x61c || c == 0x180e || (c >= 0x2066 && c <= 0x206f) || c >= 0xf0000) return 0;
    return 1;
}

static int any_taint(rs *r, const val *v, int depth);

static int repr_str(rs *r, sink *s, const jstr *x) {
    int sq = memchr(x->p, '\'', x->n) != NULL, dq = memchr(x->p, '"', x->n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    char qs[2] = {q, 0};
    TRY(sink_cs(r, s, qs));
    for (size_t i = 0; i < x->n;) {
        uint32_t cp;
        int k = core_utf8_decode((const unsigned char *)x->p + i, x->n - i, &cp);
        if (k <= 0) { /* not UTF-8: pass the byte */
            TRY(sink_put(r, s, x->p + i, 1, NULL, 0, 0));
            i++;
            continue;
        }
        char e[16];
        if (cp == '\\') strcpy(e, "\\\\");
        else if (cp == (uint32_t)q) snprintf(e, sizeof e, "\\%c", q);
        else if (cp == '\n') strcpy(e, "\\n");
        else if (cp == '\r') strcpy(e, "\\r");
        else if (cp == '\t') strcpy(e, "\\t");
        else if (!py_printable(cp)) snprintf(e, sizeof e, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", cp);
        else {
            TRY(sink_put(r, s, x->p + i, (size_t)k, NULL, 0, 0));
            i += (size_t)k;
            continue;
        }
        TRY(sink_cs(r, s, e));
        i += (size_t)k;
    }
    return sink_cs(r, s, qs);
}

static int repr_val(rs *r, sink *s, const val *v, int depth);

static int repr_items(rs *r, sink *s, const val *v, int depth) {
    if (v->k == V_LIST) {
        const jlist *l = v->u.l;
        TRY(sink_cs(r, s, l->tuple ? "(" : "["));
        for (size_t i = 0; i < l->n; i++) {
            if (i) TRY(sink_cs(r, s, ", "));
            TRY(repr_val(r, s, &l->v[i], depth + 1));
        }
        return sink_cs(r, s, l->tuple ? (l->n == 1 ? ",)" : ")") : "]");
    }
    const jdict *d = v->u.d;
    TRY(sink_cs(r, s, v->k == V_NS ? "<Namespace {" : "{"));
    for (size_t i = 0; i < d->n; i++) {
        if (i) TRY(sink_cs(r, s, ", "));
        TRY(repr_val(r, s, &d->k[i], depth + 1));
        TRY(sink_cs(r, s, ": "));
        TRY(repr_val(r, s, &d->v[i], depth + 1));
    }
    return sink_cs(r, s, v->k == V_NS ? "}>" : "}");
}

static int repr_val(rs *r, sink *s, const val *v, int depth) {
    char b[64];
    if (depth > 100) return core_errf(r->err, CORE_EFULL, "template line %d: a value nested too deeply to print", r->line);
    switch (v->k) {
    case V_UNDEF: return 0;
    case V_NONE: return sink_cs(r, s, "None");
    case V_BOOL: return sink_cs(r, s, v->u.i ? "True" : "False");
    case V_INT: snprintf(b, sizeof b, "%lld", (long long)v->u.i); return sink_cs(r, s, b);
    case V_FLOAT: float_repr(v->u.f, b, sizeof b, 0); return sink_cs(r, s, b);
    case V_STR: return repr_str(r, s, v->u.s);
    case V_LIST: case V_DICT: case V_NS: return repr_items(r, s, v, depth);
    case V_RANGE:
        snprintf(b, sizeof b, "range(%lld, %lld)", (long long)v->u.r[0], (long long)v->u.r[1]);
        return sink_cs(r, s, b);
    default: return sink_cs(r, s, "<object>");
    }
}

static int json_str(rs *r, sink *s, const jstr *x) {
    TRY(sink_cs(r, s, "\""));
    size_t run = 0;
    for (size_t i = 0; i < x->n; i++) {
        unsigned char c = (unsigned char)x->p[i];
        const char *e = NULL;
        char u[8];
        if (c == '"') e = "\\\"";
        else if (c == '\\') e = "\\\\";
        else if (c == '\n') e = "\\n";
        else if (c == '\r') e = "\\r";
        else if (c == '\t') e = "\\t";
        else if (c == '\b') e = "\\b";
        else if (c == '\f') e = "\\f";
        else if (c < 0x20) {
            snprintf(u, sizeof u, "\\u%04x", c);
            e = u;
        }
        if (!e) continue;
        TRY(sink_put(r, s, x->p + run, i - run, NULL, 0, 0));
        TRY(sink_cs(r, s, e));
        run = i + 1;
    }
    TRY(sink_put(r, s, x->p + run, x->n - run, NULL, 0, 0));
    return sink_cs(r, s, "\"");
}

static int json_nl(rs *r, sink *s, int indent, int level) {
    if (indent < 0) return 0;
    TRY(sink_cs(r, s, "\n"));
    for (int i = 0; i < indent * level; i++) TRY(sink_cs(r, s, " "));
    return 0;
}

/* json.dumps(v, ensure_ascii=False, indent=indent or None when < 0) */
static int json_val(rs *r, sink *s, const val *v, int indent, int level, int line) {
    char b[64];
    if (level > 100) return core_errf(r->err, CORE_EFULL, "template line %d: a value nested too deeply for tojson", r->line);
    switch (v->k) {
    case V_NONE: return sink_cs(r, s, "null");
    case V_BOOL: return sink_cs(r, s, v->u.i ? "true" : "false");
    case V_INT: snprintf(b, sizeof b, "%lld", (long long)v->u.i); return sink_cs(r, s, b);
    case V_FLOAT: float_repr(v->u.f, b, sizeof b, 1); return sink_cs(r, s, b);
    case V_STR: return json_str(r, s, v->u.s);
    case V_LIST: {
        const jlist *l = v->u.l;
        if (!l->n) return sink_cs(r, s, "[]");
        TRY(sink_cs(r, s, "["));
        for (size_t i = 0; i < l->n; i++) {
            if (i) TRY(sink_cs(r, s, indent >= 0 ? "," : ", "));
            TRY(json_nl(r, s, indent, level + 1));
            TRY(json_val(r, s, &l->v[i], indent, level + 1, line));
        }
        TRY(json_nl(r, s, indent, level));
        return sink_cs(r, s, "]");
    }
    case V_DICT: case V_NS: {
        const jdict *d = v->u.d;
        if (!d->n) return sink_cs(r, s, "{}");
        TRY(sink_cs(r, s, "{"));
        for (size_t i = 0; i < d->n; i++) {
            if (i) TRY(sink_cs(r, s, indent >= 0 ? "," : ", "));
            TRY(json_nl(r, s, indent, level + 1));
            const val *k = &d->k[i];
            if (k->k == V_STR) TRY(json_str(r, s, k->u.s));
            else {
                TRY(sink_cs(r, s, "\""));
                if (k->k == V_NONE) TRY(sink_cs(r, s, "null"));
                else if (k->k == V_BOOL) TRY(sink_cs(r, s, k->u.i ? "true" : "false"));
                else TRY(json_val(r, s, k, -1, level + 1, line));
                TRY(sink_cs(r, s, "\""));
            }
            TRY(sink_cs(r, s, ": "));
            TRY(json_val(r, s, &d->v[i], indent, level + 1, line));
        }
        TRY(json_nl(r, s, indent, level));
        return sink_cs(r, s, "}");
    }
    default: return rerr(r, line, "Object of type %s is not JSON serializable", type_name(v));
    }
}

/* str(v) appended to s, with v's taint (containers: all of it when any). */
static int put_str(rs *r, sink *s, const val *v) {
    if (v->k == V_STR) return sink_str(r, s, v->u.s);
    size_t at = s->n;
    TRY(repr_val(r, s, v, 0));
    if ((v->k == V_LIST || v->k == V_DICT || v->k == V_NS) && any_taint(r, v, 0)) TRY(sink_taint(r, s, at, s->n - at));
    return charge(r, 0);
}

static int to_str(rs *r, const val *v, val *out) {
    if (v->k == V_STR) {
        *out = *v;
        return 0;
    }
    sink s = {0};
    int rc = put_str(r, &s, v);
    if (rc) {
        sink_free(&s);
        return rc;
    }
    return sink_val(r, &s, out);
}

/* Whether v holds a context string. Values may share parts (a list of the
 * same list twice, nested): each visit is a step, and past the step limit
 * the answer is the safe one (1); the caller's next charge fails. */
static int any_taint(rs *r, const val *v, int depth) {
    if (depth > 100 || ++r->steps > r->max_steps) return 1;
    if (v->k == V_STR) return v->u.s->nt > 0;
    if (v->k == V_LIST) {
        for (size_t i = 0; i < v->u.l->n; i++)
            if (any_taint(r, &v->u.l->v[i], depth + 1)) return 1;
    }
    if (v->k == V_DICT || v->k == V_NS) {
        for (size_t i = 0; i < v->u.d->n; i++)
            if (any_taint(r, &v->u.d->k[i], depth + 1) || any_taint(r, &v->u.d->v[i], depth + 1)) return 1;
    }
    return 0;
}

/* ---- comparisons and truth --------------------------------------------------- */

static int truthy(const val *v) {
    switch (v->k) {
    case V_UNDEF: case V_NONE: return 0;
    case V_BOOL: case V_INT: return v->u.i != 0;
    case V_FLOAT: return v->u.f != 0;
    case V_STR: return v->u.s->n > 0;
    case V_LIST: return v->u.l->n > 0;
    case V_DICT: return v->u.d->n > 0;
    case V_RANGE: return v->u.r[0] < v->u.r[1];
    default: return 1;
    }
}

/* Python's ==; each visit is a step (shared parts can make a small value
 * huge to walk): past the limit the answer is 0 and the caller's next
 * charge fails. */
static int equal(rs *r, const val *a, const val *b, int depth) {
    if (depth > 100 || ++r->steps > r->max_steps) return 0;
    if (is_num(a) && is_num(b)) {
        if (a->k != V_FLOAT && b->k != V_FLOAT) return a->u.i == b->u.i;
        return num_f(a) == num_f(b);
    }
    if (a->k != b->k) return 0;
    switch (a->k) {
    case V_UNDEF: case V_NONE: return 1;
    case V_STR: return a->u.s->n == b->u.s->n && !memcmp(a->u.s->p, b->u.s->p, a->u.s->n);
    case V_LIST:
        if (a->u.l->n != b->u.l->n) return 0;
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!equal(r, &a->u.l->v[i], &b->u.l->v[i], depth + 1)) return 0;
        return 1;
    case V_DICT:
        if (a->u.d->n != b->u.d->n) return 0;
        for (size_t i = 0; i < a->u.d->n; i++)
            if (!equal(r, &a->u.d->k[i], &b->u.d->k[i], depth + 1) || !equal(r, &a->u.d->v[i], &b->u.d->v[i], depth + 1))
                return 0;
        return 1;
    default: return a->u.d == b->u.d;
    }
}

static int dict_find(rs *r, const jdict *d, const val *k) {
    for (size_t i = 0; i < d->n; i++)
        if (equal(r, &d->k[i], k, 0)) return (int)i;
    return -1;
}

static int dict_find_s(const jdict *d, const char *k, size_t n) {
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].k == V_STR && d->k[i].u.s->n == n && !memcmp(d->k[i].u.s->p, k, n)) return (int)i;
    return -1;
}

/* Add a key known to be absent (JSON objects, copies of a dict). */
static int dict_append(rs *r, jdict *d, val k, val v) {
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        TRY(charge(r, cap * 2 * sizeof(val)));
        val *nk = ralloc(r, cap * sizeof *nk), *nv = ralloc(r, cap * sizeof *nv);
        if (!nk || !nv) return oom(r);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
    return 0;
}

static int dict_set(rs *r, jdict *d, val k, val v) {
    TRY(charge(r, d->n * 64));
    int i = dict_find(r, d, &k);
    if (i >= 0) {
        d->v[i] = v;
        return 0;
    }
    return dict_append(r, d, k, v);
}

static int new_dict(rs *r, int kind, val *out) {
    jdict *d = ralloc(r, sizeof *d);
    if (!d) return oom(r);
    *out = (val){.k = kind, .u.d = d};
    return 0;
}

static int new_list(rs *r, size_t n, int tuple, val *out) {
    TRY(charge(r, n * sizeof(val)));
    jlist *l = ralloc(r, sizeof *l);
    val *v = n ? ralloc(r, n * sizeof *v) : NULL;
    if (!l || (n && !v)) return oom(r);
    l->v = v;
    l->n = n;
    l->tuple = tuple;
    *out = (val){.k = V_LIST, .u.l = l};
    return 0;
}

/* ---- UTF-8 helpers -------------------------------------------------------------- */

static size_t cp_len(const char *p, size_t n, size_t i) {
    int ok;
    size_t k = core_utf8_step(p + i, n - i, &ok);
    return k ? k : 1;
}

static size_t cp_count(const char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i += cp_len(p, n, i)) c++;
    return c;
}

/* A substring value of x: bytes [off, off+n), taint cut to it. */
static int substr(rs *r, const jstr *x, size_t off, size_t n, val *out) {
    TRY(charge(r, x->nt * 16));
    jinja_span t[64];
    size_t nt = 0;
    int all = 0;
    for (size_t i = 0; i < x->nt; i++) {
        size_t a = x->t[i].off, b = a + x->t[i].len;
        if (b <= off || a >= off + n) continue;
        if (a < off) a = off;
        if (b > off + n) b = off + n;
        if (nt == 64) {
            all = 1;
            break;
        }
        t[nt++] = (jinja_span){a - off, b - a};
    }
    if (all) {
        t[0] = (jinja_span){0, n};
        nt = 1;
    }
    return mkstr(r, x->p + off, n, t, nt, out);
}

/* Python's whitespace (str.split() / str.strip() with no argument). */
static int py_space(uint32_t c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

static uint32_t cp_at(const char *p, size_t n, size_t i, size_t *k) {
    uint32_t cp;
    int m = core_utf8_decode((const unsigned char *)p + i, n - i, &cp);
    if (m <= 0) {
        *k = 1;
        return 0xFFFFFFFFu - (unsigned char)p[i];
    }
    *k = (size_t)m;
    return cp;
}

static int in_chars(uint32_t c, const jstr *chars) {
    if (!chars) return py_space(c);
    for (size_t i = 0; i < chars->n;) {
        size_t k;
        if (cp_at(chars->p, chars->n, i, &k) == c) return 1;
        i += k;
    }
    return 0;
}

/* strip: which 1 left, 2 right, 3 both; chars NULL: whitespace */
static int do_strip(rs *r, const jstr *x, const jstr *chars, int which, val *out) {
    size_t a = 0, b = x->n;
    size_t per = chars ? chars->n : 0;
    if (which & 1)
        while (a < b) {
            TRY(charge(r, per));
            size_t k;
            if (!in_chars(cp_at(x->p, x->n, a, &k), chars)) break;
            a += k;
        }
    if (which & 2)
        while (b > a) {
            TRY(charge(r, per));
            size_t s = b - 1;
            while (s > a && ((unsigned char)x->p[s] & 0xC0) == 0x80) s--;
            size_t k;
            uint32_t c = cp_at(x->p, x->n, s, &k);
            if (s + k != b) c = 0xFFFFFFFFu;
            if (!in_chars(c, chars)) break;
            b = s;
        }
    return substr(r, x, a, b - a, out);
}

static int list_push(rs *r, val *lst, size_t *cap, val v) {
    jlist *l = lst->u.l;
    if (l->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        TRY(charge(r, nc * sizeof(val)));
        val *nv = ralloc(r, nc * sizeof *nv);
        if (!nv) return oom(r);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        *cap = nc;
    }
    l->v[l->n++] = v;
    return 0;
}

static int do_split(rs *r, const jstr *x, const jstr *sep, int64_t maxsplit, val *out) {
    TRY(new_list(r, 0, 0, out));
    size_t cap = 0;
    val piece;
    if (sep && sep->n == 0) return core_errf(r->err, CORE_EFORMAT, "template line %d: split: empty separator", r->line);
    if (!sep) {
        size_t i = 0;
        while (i < x->n) {
            size_t k;
            while (i < x->n && py_space(cp_at(x->p, x->n, i, &k))) i += k;
            if (i >= x->n) break;
            size_t b = i;
            if (maxsplit >= 0 && (int64_t)out->u.l->n >= maxsplit) {
                size_t e = x->n;
                while (e > b) {
                    size_t s = e - 1;
                    while (s > b && ((unsigned char)x->p[s] & 0xC0) == 0x80) s--;
                    if (!py_space(cp_at(x->p, x->n, s, &k))) break;
                    e = s;
                }
                TRY(substr(r, x, b, e - b, &piece));
                return list_push(r, out, &cap, piece);
            }
            while (i < x->n && !py_space(cp_at(x->p, x->n, i, &k))) i += k;
            TRY(substr(r, x, b, i - b, &piece));
            TRY(list_push(r, out, &cap, piece));
        }
        return 0;
    }
    size_t b = 0;
    while (maxsplit < 0 || (int64_t)out->u.l->n < maxsplit) {
        const char *m = memmem(x->p + b, x->n - b, sep->p, sep->n);
        if (!m) break;
        size_t i = (size_t)(m - x->p);
        TRY(substr(r, x, b, i - b, &piece));
        TRY(list_push(r, out, &cap, piece));
        b = i + sep->n;
    }
    TRY(charge(r, x->n));
    TRY(substr(r, x, b, x->n - b, &piece));
    return list_push(r, out, &cap, piece);
}

static int do_replace(rs *r, const jstr *x, const jstr *old, const jstr *nw, int64_t count, val *out) {
    sink s = {0};
    int rc = 0;
    size_t b = 0, i = 0;
    int64_t done = 0;
    while (!rc && i <= x->n && (count < 0 || done < count)) {
        if (old->n == 0) { /* Python inserts between every character */
            if ((rc = sink_str(r, &s, nw))) break;
            done++;
            if (i >= x->n) break;
            size_t k = cp_len(x->p, x->n, i);
            rc = sink_put(r, &s, x->p + i, k, NULL, 0, 0);
            i += k;
            b = i;
            continue;
        }
        const char *m = i < x->n ? memmem(x->p + i, x->n - i, old->p, old->n) : NULL;
        if (!m) break;
        i = (size_t)(m - x->p);
        if (!(rc = sink_put(r, &s, x->p + b, i - b, NULL, 0, 0))) rc = sink_str(r, &s, nw);
        i += old->n;
        b = i;
        done++;
    }
    if (!rc && b < x->n) rc = sink_put(r, &s, x->p + b, x->n - b, NULL, 0, 0);
    if (rc) {
        sink_free(&s);
        return rc;
    }
    /* the text was rewritten: if any of it came from the context, all of it is marked */
    if (x->nt && s.n) {
        s.nt = 0;
        TRY(sink_taint(r, &s, 0, s.n));
    }
    return sink_val(r, &s, out);
}

static int do_case(rs *r, const jstr *x, int upper, val *out) {
    TRY(mkstr(r, x->p, x->n, x->t, x->nt, out));
    char *p = (char *)out->u.s->p;
    for (size_t i = 0; i < x->n; i++) {
        if (upper && p[i] >= 'a' && p[i] <= 'z') p[i] = (char)(p[i] - 32);
        if (!upper && p[i] >= 'A' && p[i] <= 'Z') p[i] = (char)(p[i] + 32);
    }
    return 0;
}

/* ---- iteration, subscripts, slices ------------------------------------------------ */

static int64_t range_len(const int64_t *rg) {
    if (rg[2] > 0) return rg[1] > rg[0] ? (rg[1] - rg[0] + rg[2] - 1) / rg[2] : 0;
    return rg[0] > rg[1] ? (rg[0] - rg[1] - rg[2] - 1) / -rg[2] : 0;
}

/* The items a for loop or a filter walks: list/tuple items, dict keys,
 * string characters, range numbers; Undefined walks nothing. */
static int as_list(rs *r, const val *v, int line, val *out) {
    switch (v->k) {
    case V_LIST: *out = *v; return 0;
    case V_UNDEF: return new_list(r, 0, 0, out);
    case V_DICT: case V_NS: {
        TRY(new_list(r, v->u.d->n, 0, out));
        for (size_t i = 0; i < v->u.d->n; i++) out->u.l->v[i] = v->u.d->k[i];
        return 0;
    }
    case V_STR: {
        const jstr *x = v->u.s;
        TRY(new_list(r, cp_count(x->p, x->n), 0, out));
        size_t j = 0;
        for (size_t i = 0; i < x->n;) {
            size_t k = cp_len(x->p, x->n, i);
            TRY(substr(r, x, i, k, &out->u.l->v[j++]));
            i += k;
        }
        return 0;
    }
    case V_RANGE: {
        int64_t n = range_len(v->u.r);
        TRY(charge(r, (size_t)n * 4)); /* fail on the step limit before allocating */
        TRY(new_list(r, (size_t)n, 0, out));
        for (int64_t i = 0; i < n; i++) out->u.l->v[i] = v_int(v->u.r[0] + i * v->u.r[2]);
        return 0;
    }
    default: return rerr(r, line, "'%s' object is not iterable", type_name(v));
    }
}

/* Python's slice.indices */
static void slice_idx(int64_t n, const val *a, const val *b, const val *c, int64_t *start, int64_t *stop, int64_t *step) {
    *step = c && c->k == V_INT ? c->u.i : 1;
    int neg = *step < 0;
    int64_t lo = neg ? -1 : 0, hi = neg ? n - 1 : n;
    *start = neg ? hi : lo;
    *stop = neg ? lo : hi;
    if (a && a->k == V_INT) {
        int64_t x = a->u.i;
        if (x < 0) x = x + n < lo ? lo : x + n;
        else if (x > hi) x = hi;
        *start = x;
    }
    if (b && b->k == V_INT) {
        int64_t x = b->u.i;
        if (x < 0) x = x + n < lo ? lo : x + n;
        else if (x > hi) x = hi;
        *stop = x;
    }
}

static int do_slice(rs *r, const val *obj, const val *a, const val *b, const val *c, int line, val *out) {
    if (c && c->k == V_INT && c->u.i == 0) return rerr(r, line, "slice step cannot be zero");
    for (int i = 0; i < 3; i++) {
        const val *x = i == 0 ? a : i == 1 ? b : c;
        if (x && x->k != V_INT && x->k != V_NONE && x->k != V_UNDEF)
            return rerr(r, line, "slice indices must be integers or None");
    }
    if (obj->k == V_UNDEF) return rerr(r, line, "'%s' is undefined", obj->uname ? obj->uname : "value");
    if (obj->k != V_LIST && obj->k != V_STR) return rerr(r, line, "'%s' object is not subscriptable", type_name(obj));
    if (obj->k == V_LIST) {
        int64_t st, sp, step;
        slice_idx((int64_t)obj->u.l->n, a, b, c, &st, &sp, &step);
        TRY(new_list(r, 0, obj->u.l->tuple, out));
        size_t cap = 0;
        for (int64_t i = st; step > 0 ? i < sp : i > sp; i += step) TRY(list_push(r, out, &cap, obj->u.l->v[i]));
        return 0;
    }
    const jstr *x = obj->u.s;
    TRY(charge(r, x->n * 32));
    size_t nc = cp_count(x->p, x->n);
    size_t *off = malloc((nc + 1) * sizeof *off);
    if (!off) return oom(r);
    size_t j = 0;
    for (size_t i = 0; i < x->n; i += cp_len(x->p, x->n, i)) off[j++] = i;
    off[nc] = x->n;
    int64_t st, sp, step;
    slice_idx((int64_t)nc, a, b, c, &st, &sp, &step);
    int rc = 0;
    if (step == 1) {
        rc = sp > st ? substr(r, x, off[st], off[sp] - off[st], out) : mkcstr(r, "", out);
    } else {
        sink s = {0};
        for (int64_t i = st; !rc && (step > 0 ? i < sp : i > sp); i += step)
            rc = sink_put(r, &s, x->p + off[i], off[i + 1] - off[i], NULL, 0, x->nt > 0);
        if (!rc) rc = sink_val(r, &s, out);
        else sink_free(&s);
    }
    free(off);
    return rc;
}

static int loop_attr(rs *r, const jloop *lp, const char *name, val *out) {
    int64_t i = (int64_t)lp->i, n = (int64_t)lp->n;
    if (!strcmp(name, "index")) *out = v_int(i + 1);
    else if (!strcmp(name, "index0")) *out = v_int(i);
    else if (!strcmp(name, "first")) *out = v_bool(i == 0);
    else if (!strcmp(name, "last")) *out = v_bool(i == n - 1);
    else if (!strcmp(name, "length")) *out = v_int(n);
    else if (!strcmp(name, "revindex")) *out = v_int(n - i);
    else if (!strcmp(name, "revindex0")) *out = v_int(n - i - 1);
    else if (!strcmp(name, "depth")) *out = v_int(1);
    else if (!strcmp(name, "depth0")) *out = v_int(0);
    else if (!strcmp(name, "previtem") || !strcmp(name, "nextitem")) {
        int64_t j = name[0] == 'p' ? i - 1 : i + 1;
        if (j < 0 || j >= n) *out = v_undef(name);
        else *out = lp->items ? lp->items[j] : v_int(lp->rstart + j * lp->rstep);
    } else *out = v_undef(name);
    (void)r;
    return 0;
}

/* obj.name / obj["name"] as Jinja2's getattr: Undefined fails, anything else
 * without the attribute gives Undefined. */
static int get_attr(rs *r, const val *obj, const char *name, int line, val *out) {
    if (obj->k == V_UNDEF) return rerr(r, line, "'%s' is undefined", obj->uname ? obj->uname : "value");
    if (obj->k == V_DICT || obj->k == V_NS) {
        int i = dict_find_s(obj->u.d, name, strlen(name));
        TRY(charge(r, obj->u.d->n * 64));
        *out = i >= 0 ? obj->u.d->v[i] : v_undef(name);
        return 0;
    }
    if (obj->k == V_LOOP) return loop_attr(r, obj->u.lp, name, out);
    *out = v_undef(name);
    return 0;
}

static int get_item(rs *r, const val *obj, const val *key, int line, val *out) {
    if (obj->k == V_UNDEF) return rerr(r, line, "'%s' is undefined", obj->uname ? obj->uname : "value");
    if (key->k == V_UNDEF) return rerr(r, line, "'%s' is undefined", key->uname ? key->uname : "value");
    if (obj->k == V_DICT) {
        int i = dict_find(r, obj->u.d, key);
        TRY(charge(r, obj->u.d->n * 64));
        *out = i >= 0 ? obj->u.d->v[i] : v_undef("key");
        return 0;
    }
    if ((obj->k == V_LIST || obj->k == V_STR) && (key->k == V_INT || key->k == V_BOOL)) {
        int64_t n = obj->k == V_LIST ? (int64_t)obj->u.l->n : (int64_t)cp_count(obj->u.s->p, obj->u.s->n);
        int64_t i = key->u.i < 0 ? key->u.i + n : key->u.i;
        if (i < 0 || i >= n) {
            *out = v_undef("index");
            return 0;
        }
        if (obj->k == V_LIST) {
            *out = obj->u.l->v[i];
            return 0;
        }
        const jstr *x = obj->u.s;
        size_t off = 0;
        TRY(charge(r, x->n * 32)); /* walking characters costs more than copying bytes */
        for (int64_t j = 0; j < i; j++) off += cp_len(x->p, x->n, off);
        return substr(r, x, off, cp_len(x->p, x->n, off), out);
    }
    if (key->k == V_STR && memchr(key->u.s->p, 0, key->u.s->n) == NULL)
        return get_attr(r, obj, key->u.s->p, line, out);
    *out = v_undef("item");
    return 0;
}

/* ---- scopes ------------------------------------------------------------------------- */

static int lookup(rs *r, const char *name, val *out) {
    size_t stop = 0;
    for (int f = r->nfr - 1; f >= 0; f--) {
        size_t lo = r->fr[f].base, hi = f + 1 < r->nfr ? r->fr[f + 1].base : r->nv;
        for (size_t i = hi; i > lo; i--)
            if (!strcmp(r->vars[i - 1].name, name)) {
                *out = r->vars[i - 1].v;
                return 1;
            }
        if (r->fr[f].barrier) {
            /* a macro: its own frame, then the top level */
            stop = r->nfr > 2 ? r->fr[2].base : r->nv;
            for (size_t i = stop; i > 0; i--)
                if (!strcmp(r->vars[i - 1].name, name)) {
                    *out = r->vars[i - 1].v;
                    return 1;
                }
            return 0;
        }
    }
    return 0;
}

/* Bind name in the innermost frame. */
static int assign(rs *r, const char *name, val v) {
    size_t lo = r->nfr ? r->fr[r->nfr - 1].base : 0;
    for (size_t i = r->nv; i > lo; i--)
        if (!strcmp(r->vars[i - 1].name, name)) {
            r->vars[i - 1].v = v;
            return 0;
        }
    if (r->nv == r->vcap) {
        size_t cap = r->vcap ? r->vcap * 2 : 64;
        var *nv = realloc(r->vars, cap * sizeof *nv);
        if (!nv) return oom(r);
        r->vars = nv;
        r->vcap = cap;
    }
    TRY(charge(r, sizeof(var)));
    r->vars[r->nv++] = (var){name, v};
    return 0;
}

static int push_frame(rs *r, int barrier, int line) {
    if (r->nfr >= (int)(sizeof r->fr / sizeof *r->fr) || r->depth >= r->max_depth)
        return core_errf(r->err, CORE_EFULL, "template line %d: blocks or macro calls nested too deeply (limit %d)",
                         line, r->max_depth);
    r->fr[r->nfr++] = (frame){r->nv, barrier};
    r->depth++;
    return 0;
}

static void pop_frame(rs *r) {
    r->nv = r->fr[--r->nfr].base;
    r->depth--;
}

/* ---- evaluation -------------------------------------------------------------------- */

static int eval(rs *r, const jnode *n, val *out);
static int exec_body(rs *r, const jnode *n, sink *s);

typedef struct args {
    val v[8];
    const char *kw[8];
    size_t n;
} args;

static int eval_args(rs *r, const jnode *n, args *a) {
    if (n->nk > 8) return rerr(r, n->line, "too many arguments");
    a->n = n->nk;
    for (size_t i = 0; i < n->nk; i++) {
        TRY(eval(r, n->kids[i], &a->v[i]));
        a->kw[i] = n->kw[i];
    }
    return 0;
}

/* Argument `pos` positionally or by keyword name; NULL when absent. */
static const val *arg(const args *a, size_t pos, const char *name) {
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (a->kw[i]) {
            if (name && !strcmp(a->kw[i], name)) return &a->v[i];
        } else if (k++ == pos) {
            return &a->v[i];
        }
    }
    return NULL;
}

static int want_str(rs *r, const val *v, const char *what, int line) {
    if (!v || v->k != V_STR) return rerr(r, line, "%s expects a string, got %s", what, v ? type_name(v) : "nothing");
    return 0;
}

static int undefined_err(rs *r, const val *v, int line) {
    return rerr(r, line, "'%s' is undefined", v->uname ? v->uname : "value");
}

static int arith(rs *r, int op, const val *a, const val *b, int line, val *out) {
    static const char *const opn[] = {"+", "-", "*", "/", "//", "%", "**"};
    if (a->k == V_UNDEF) return undefined_err(r, a, line);
    if (b->k == V_UNDEF) return undefined_err(r, b, line);
    if (op == B_ADD && a->k == V_STR && b->k == V_STR) {
        sink s = {0};
        int rc = sink_str(r, &s, a->u.s);
        if (!rc) rc = sink_str(r, &s, b->u.s);
        if (rc) {
            sink_free(&s);
            return rc;
        }
        return sink_val(r, &s, out);
    }
    if (op == B_ADD && a->k == V_LIST && b->k == V_LIST) {
        TRY(new_list(r, a->u.l->n + b->u.l->n, a->u.l->tuple && b->u.l->tuple, out));
        if (a->u.l->n) memcpy(out->u.l->v, a->u.l->v, a->u.l->n * sizeof(val));
        if (b->u.l->n) memcpy(out->u.l->v + a->u.l->n, b->u.l->v, b->u.l->n * sizeof(val));
        return 0;
    }
    if (op == B_MUL && ((a->k == V_STR && b->k == V_INT) || (a->k == V_INT && b->k == V_STR))) {
        const jstr *x = a->k == V_STR ? a->u.s : b->u.s;
        int64_t k = a->k == V_INT ? a->u.i : b->u.i;
        sink s = {0};
        int rc = 0;
        for (int64_t i = 0; !rc && i < k; i++) rc = sink_str(r, &s, x);
        if (rc) {
            sink_free(&s);
            return rc;
        }
        return sink_val(r, &s, out);
    }
    if (!is_num(a) || !is_num(b))
        return rerr(r, line, "unsupported operand type(s) for %s: '%s' and '%s'", opn[op], type_name(a), type_name(b));
    int fl = a->k == V_FLOAT || b->k == V_FLOAT;
    if (op == B_DIV) {
        if (num_f(b) == 0) return rerr(r, line, "division by zero");
        *out = v_float(num_f(a) / num_f(b));
        return 0;
    }
    if (fl) {
        double x = num_f(a), y = num_f(b), z;
        switch (op) {
        case B_ADD: z = x + y; break;
        case B_SUB: z = x - y; break;
        case B_MUL: z = x * y; break;
        case B_POW: z = pow(x, y); break;
        default:
            if (y == 0) return rerr(r, line, "division by zero");
            z = op == B_FLOORDIV ? floor(x / y) : x - floor(x / y) * y;
        }
        *out = v_float(z);
        return 0;
    }
    int64_t x = a->u.i, y = b->u.i, z = 0;
    int ovf = 0;
    switch (op) {
    case B_ADD: ovf = __builtin_add_overflow(x, y, &z); break;
    case B_SUB: ovf = __builtin_sub_overflow(x, y, &z); break;
    case B_MUL: ovf = __builtin_mul_overflow(x, y, &z); break;
    case B_FLOORDIV: case B_MOD:
        if (y == 0) return rerr(r, line, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) {
            ovf = 1;
            break;
        }
        z = x / y;
        if ((x % y != 0) && ((x < 0) != (y < 0))) z--;
        if (op == B_MOD) z = x - z * y;
        break;
    case B_POW:
        if (y < 0) {
            *out = v_float(pow((double)x, (double)y));
            return 0;
        }
        z = 1;
        for (int64_t i = 0; i < y && !ovf; i++) {
            ovf = __builtin_mul_overflow(z, x, &z);
            if (z == 0 || z == 1) break;
        }
        if (!ovf && z == 1 && x == -1) z = (y % 2) ? -1 : 1;
        break;
    }
    if (ovf) return rerr(r, line, "integer result out of range");
    *out = v_int(z);
    return 0;
}

static int compare(rs *r, int op, const val *a, const val *b, int line, int *res) {
    if (op == B_EQ || op == B_NE) {
        *res = equal(r, a, b, 0) == (op == B_EQ);
        return charge(r, 0);
    }
    if (op == B_IN || op == B_NOTIN) {
        int found = 0;
        if (b->k == V_STR) {
            if (a->k != V_STR) return rerr(r, line, "'in <string>' requires string as left operand, not %s", type_name(a));
            const jstr *h = b->u.s, *nd = a->u.s;
            found = nd->n == 0 || memmem(h->p, h->n, nd->p, nd->n) != NULL;
            TRY(charge(r, h->n));
        } else if (b->k == V_LIST) {
            for (size_t i = 0; !found && i < b->u.l->n; i++) found = equal(r, a, &b->u.l->v[i], 0);
            TRY(charge(r, b->u.l->n));
        } else if (b->k == V_DICT || b->k == V_NS) {
            found = dict_find(r, b->u.d, a) >= 0;
            TRY(charge(r, b->u.d->n * 64));
        } else if (b->k == V_RANGE) {
            if (a->k == V_INT) {
                int64_t d = a->u.i - b->u.r[0];
                found = d % b->u.r[2] == 0 && d / b->u.r[2] >= 0 && d / b->u.r[2] < range_len(b->u.r);
            }
        } else if (b->k != V_UNDEF) {
            return rerr(r, line, "argument of type '%s' is not iterable", type_name(b));
        }
        *res = found == (op == B_IN);
        return 0;
    }
    int c;
    if (is_num(a) && is_num(b)) {
        double x = num_f(a), y = num_f(b);
        if (a->k != V_FLOAT && b->k != V_FLOAT) c = a->u.i < b->u.i ? -1 : a->u.i > b->u.i;
        else c = x < y ? -1 : x > y ? 1 : 0;
    } else if (a->k == V_STR && b->k == V_STR) {
        size_t m = a->u.s->n < b->u.s->n ? a->u.s->n : b->u.s->n;
        c = memcmp(a->u.s->p, b->u.s->p, m);
        if (!c) c = a->u.s->n < b->u.s->n ? -1 : a->u.s->n > b->u.s->n;
    } else {
        if (a->k == V_UNDEF) return undefined_err(r, a, line);
        if (b->k == V_UNDEF) return undefined_err(r, b, line);
        return rerr(r, line, "'<' not supported between instances of '%s' and '%s'", type_name(a), type_name(b));
    }
    switch (op) {
    case B_LT: *res = c < 0; break;
    case B_LE: *res = c <= 0; break;
    case B_GT: *res = c > 0; break;
    default: *res = c >= 0;
    }
    return 0;
}

static int length_of(rs *r, const val *v, int line, int64_t *n) {
    switch (v->k) {
    case V_UNDEF: *n = 0; return 0;
    case V_STR: *n = (int64_t)cp_count(v->u.s->p, v->u.s->n); return charge(r, v->u.s->n * 32);
    case V_LIST: *n = (int64_t)v->u.l->n; return 0;
    case V_DICT: case V_NS: *n = (int64_t)v->u.d->n; return 0;
    case V_RANGE: *n = range_len(v->u.r); return 0;
    default: return rerr(r, line, "object of type '%s' has no len()", type_name(v));
    }
}

static int items_of(rs *r, const val *v, int line, val *out) {
    if (v->k == V_UNDEF) return new_list(r, 0, 0, out);
    if (v->k != V_DICT && v->k != V_NS) return rerr(r, line, "items() needs a mapping, got %s", type_name(v));
    TRY(new_list(r, v->u.d->n, 0, out));
    for (size_t i = 0; i < v->u.d->n; i++) {
        val t;
        TRY(new_list(r, 2, 1, &t));
        t.u.l->v[0] = v->u.d->k[i];
        t.u.l->v[1] = v->u.d->v[i];
        out->u.l->v[i] = t;
    }
    return 0;
}

static int apply_test(rs *r, const jnode *n, const val *x, const args *a, int *res);
static int apply_filter(rs *r, const jnode *n, val *x, const args *a, val *out);

/* select/reject(test, args...), selectattr/rejectattr(attr, test, args...);
 * no test: the item's (or attribute's) truth. */
static int filter_select(rs *r, const char *f, const val *x, const args *a, int line, val *out) {
    int attr = strstr(f, "attr") != NULL, keep = f[0] == 's';
    val l;
    TRY(as_list(r, x, line, &l));
    const val *an = attr ? arg(a, 0, NULL) : NULL, *tn = arg(a, attr ? 1 : 0, NULL);
    if (attr && (!an || an->k != V_STR)) return rerr(r, line, "%s needs an attribute name", f);
    if (tn && tn->k != V_STR) return want_str(r, tn, f, line);
    args ta = {0};
    for (size_t i = 0, k = 0; i < a->n; i++)
        if (!a->kw[i] && k++ > (size_t)attr) ta.v[ta.n++] = a->v[i];
    jnode tnode = {.kind = N_TEST, .line = line, .s = tn ? tn->u.s->p : NULL};
    TRY(new_list(r, 0, 0, out));
    size_t cap = 0;
    for (size_t i = 0; i < l.u.l->n; i++) {
        val v = l.u.l->v[i];
        if (attr) TRY(get_attr(r, &l.u.l->v[i], an->u.s->p, line, &v));
        int res;
        if (tn) TRY(apply_test(r, &tnode, &v, &ta, &res));
        else res = truthy(&v);
        if (res == keep) TRY(list_push(r, out, &cap, l.u.l->v[i]));
    }
    return 0;
}

static int apply_filter(rs *r, const jnode *n, val *x, const args *a, val *out) {
    const char *f = n->s;
    int line = n->line;
    if (!strcmp(f, "safe")) {
        *out = *x;
        return 0;
    }
    if (!strcmp(f, "string")) return x->k == V_UNDEF ? mkcstr(r, "", out) : to_str(r, x, out);
    if (!strcmp(f, "tojson")) {
        const val *ind = arg(a, 1, "indent"); /* transformers' tojson(x, ensure_ascii, indent, ...) */
        int indent = ind && ind->k == V_INT ? (int)(ind->u.i < 0 ? 0 : ind->u.i > 64 ? 64 : ind->u.i) : -1;
        sink s = {0};
        int rc = json_val(r, &s, x, indent, 0, line);
        if (!rc && any_taint(r, x, 0) && s.n) rc = sink_taint(r, &s, 0, s.n);
        if (!rc) rc = charge(r, 0);
        if (rc) {
            sink_free(&s);
            return rc;
        }
        return sink_val(r, &s, out);
    }
    if (!strcmp(f, "trim")) {
        val s;
        TRY(x->k == V_UNDEF ? mkcstr(r, "", &s) : to_str(r, x, &s));
        const val *ch = arg(a, 0, "chars");
        if (ch && ch->k != V_STR && ch->k != V_NONE) return want_str(r, ch, "trim", line);
        return do_strip(r, s.u.s, ch && ch->k == V_STR ? ch->u.s : NULL, 3, out);
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        int64_t k = 0;
        TRY(length_of(r, x, line, &k));
        *out = v_int(k);
        return 0;
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        if (x->k == V_UNDEF) {
            *out = v_undef(f);
            return 0;
        }
        val l;
        TRY(as_list(r, x, line, &l));
        *out = l.u.l->n ? l.u.l->v[f[0] == 'f' ? 0 : l.u.l->n - 1] : v_undef(f);
        return 0;
    }
    if (!strcmp(f, "join")) {
        const val *sep = arg(a, 0, "d");
        if (sep && sep->k != V_STR) return want_str(r, sep, "join", line);
        const val *attr = arg(a, 1, "attribute");
        val l;
        TRY(as_list(r, x, line, &l));
        sink s = {0};
        int rc = 0;
        for (size_t i = 0; !rc && i < l.u.l->n; i++) {
            if (i && sep) rc = sink_str(r, &s, sep->u.s);
            val it = l.u.l->v[i];
            if (!rc && attr && attr->k == V_STR) rc = get_attr(r, &it, attr->u.s->p, line, &it);
            if (!rc) rc = put_str(r, &s, &it);
        }
        if (rc) {
            sink_free(&s);
            return rc;
        }
        return sink_val(r, &s, out);
    }
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        const val *dv = arg(a, 0, "default_value"), *bo = arg(a, 1, "boolean");
        int use = x->k == V_UNDEF || (bo && truthy(bo) && !truthy(x));
        *out = use ? (dv ? *dv : (val){.k = V_STR, .u.s = NULL}) : *x;
        if (use && !dv) return mkcstr(r, "", out);
        return 0;
    }
    if (!strcmp(f, "upper") || !strcmp(f, "lower")) {
        val s;
        TRY(x->k == V_UNDEF ? mkcstr(r, "", &s) : to_str(r, x, &s));
        return do_case(r, s.u.s, f[0] == 'u', out);
    }
    if (!strcmp(f, "capitalize")) {
        val s;
        TRY(x->k == V_UNDEF ? mkcstr(r, "", &s) : to_str(r, x, &s));
        TRY(do_case(r, s.u.s, 0, out));
        char *p = (char *)out->u.s->p;
        if (out->u.s->n && p[0] >= 'a' && p[0] <= 'z') p[0] = (char)(p[0] - 32);
        return 0;
    }
    if (!strcmp(f, "items")) return items_of(r, x, line, out);
    if (!strcmp(f, "list")) {
        val l;
        TRY(as_list(r, x, line, &l));
        TRY(new_list(r, l.u.l->n, 0, out));
        if (l.u.l->n) memcpy(out->u.l->v, l.u.l->v, l.u.l->n * sizeof(val));
        return 0;
    }
    if (!strcmp(f, "reverse")) {
        val l;
        if (x->k == V_STR) {
            val m1 = v_int(-1);
            return do_slice(r, x, NULL, NULL, &m1, line, out);
        }
        TRY(as_list(r, x, line, &l));
        TRY(new_list(r, l.u.l->n, 0, out));
        for (size_t i = 0; i < l.u.l->n; i++) out->u.l->v[i] = l.u.l->v[l.u.l->n - 1 - i];
        return 0;
    }
    if (!strcmp(f, "replace")) {
        const val *o = arg(a, 0, "old"), *nw = arg(a, 1, "new"), *cnt = arg(a, 2, "count");
        TRY(want_str(r, o, "replace", line));
        TRY(want_str(r, nw, "replace", line));
        val s;
        TRY(x->k == V_UNDEF ? mkcstr(r, "", &s) : to_str(r, x, &s));
        return do_replace(r, s.u.s, o->u.s, nw->u.s, cnt && cnt->k == V_INT ? cnt->u.i : -1, out);
    }
    if (!strcmp(f, "int") || !strcmp(f, "float")) {
        const val *dv = arg(a, 0, "default");
        int isint = f[0] == 'i';
        double d = 0;
        int ok = 1;
        if (is_num(x)) d = num_f(x);
        else if (x->k == V_STR) {
            char buf[64];
            size_t m = x->u.s->n < 63 ? x->u.s->n : 63;
            memcpy(buf, x->u.s->p, m);
            buf[m] = 0;
            char *e;
            d = strtod(buf, &e);
            while (*e == ' ' || *e == '\n' || *e == '\t') e++;
            ok = e != buf && !*e && m;
        } else ok = 0;
        if (!ok || (isint && !(fabs(d) < 9.2e18))) {
            *out = dv ? *dv : isint ? v_int(0) : v_float(0);
            return 0;
        }
        *out = isint ? v_int(x->k == V_INT || x->k == V_BOOL ? x->u.i : (int64_t)d) : v_float(d);
        return 0;
    }
    if (!strcmp(f, "abs")) {
        if (x->k == V_INT) *out = v_int(x->u.i < 0 && x->u.i != INT64_MIN ? -x->u.i : x->u.i);
        else if (x->k == V_FLOAT) *out = v_float(fabs(x->u.f));
        else return rerr(r, line, "bad operand type for abs(): '%s'", type_name(x));
        return 0;
    }
    if (!strcmp(f, "indent")) {
        const val *w = arg(a, 0, "width"), *first = arg(a, 1, "first"), *blank = arg(a, 2, "blank");
        val s;
        TRY(x->k == V_UNDEF ? mkcstr(r, "", &s) : to_str(r, x, &s));
        char pad[65];
        int64_t wd = w && w->k == V_INT ? w->u.i : 4;
        if (wd < 0) wd = 0;
        if (wd > 64) wd = 64;
        memset(pad, ' ', (size_t)wd);
        pad[wd] = 0;
        if (w && w->k == V_STR) snprintf(pad, sizeof pad, "%.*s", (int)(w->u.s->n < 64 ? w->u.s->n : 64), w->u.s->p);
        const jstr *t = s.u.s;
        sink o = {0};
        int rc = 0;
        size_t i = 0, ln = 0;
        while (!rc && i < t->n) {
            const char *nl = memchr(t->p + i, '\n', t->n - i);
            size_t e = nl ? (size_t)(nl - t->p) + 1 : t->n;
            int empty = e - i <= 1 && nl;
            if ((ln > 0 || (first && truthy(first))) && (!empty || (blank && truthy(blank)))) rc = sink_cs(r, &o, pad);
            if (!rc) rc = sink_put(r, &o, t->p + i, e - i, NULL, 0, t->nt > 0);
            i = e;
            ln++;
        }
        if (rc) {
            sink_free(&o);
            return rc;
        }
        return sink_val(r, &o, out);
    }
    if (!strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr"))
        return filter_select(r, f, x, a, line, out);
    if (!strcmp(f, "map")) {
        val l;
        TRY(as_list(r, x, line, &l));
        const val *at = arg(a, 99, "attribute"), *dv = arg(a, 99, "default"), *fn = arg(a, 0, NULL);
        if (at && at->k != V_STR) return want_str(r, at, "map(attribute=)", line);
        if (!at && (!fn || fn->k != V_STR)) return rerr(r, line, "map needs a filter name or attribute=");
        args fa = {0};
        for (size_t i = 0, k = 0; i < a->n; i++)
            if (!a->kw[i] && k++ > 0) fa.v[fa.n++] = a->v[i];
        jnode fnode = {.kind = N_FILTER, .line = line, .s = at ? NULL : fn->u.s->p};
        TRY(new_list(r, l.u.l->n, 0, out));
        for (size_t i = 0; i < l.u.l->n; i++) {
            val *o = &out->u.l->v[i];
            if (at) {
                TRY(get_attr(r, &l.u.l->v[i], at->u.s->p, line, o));
                if (o->k == V_UNDEF && dv) *o = *dv;
            } else {
                TRY(apply_filter(r, &fnode, &l.u.l->v[i], &fa, o));
            }
        }
        return 0;
    }
    return rerr(r, line, "unknown filter '%s'", f);
}

static int apply_test(rs *r, const jnode *n, const val *x, const args *a, int *res) {
    const char *t = n->s;
    int line = n->line;
    if (!strcmp(t, "defined")) *res = x->k != V_UNDEF;
    else if (!strcmp(t, "undefined")) *res = x->k == V_UNDEF;
    else if (!strcmp(t, "none")) *res = x->k == V_NONE;
    else if (!strcmp(t, "string")) *res = x->k == V_STR;
    else if (!strcmp(t, "mapping")) *res = x->k == V_DICT;
    else if (!strcmp(t, "iterable")) *res = x->k == V_STR || x->k == V_LIST || x->k == V_DICT || x->k == V_RANGE || x->k == V_UNDEF;
    else if (!strcmp(t, "sequence")) *res = x->k == V_STR || x->k == V_LIST || x->k == V_DICT || x->k == V_RANGE;
    else if (!strcmp(t, "number")) *res = is_num(x);
    else if (!strcmp(t, "integer")) *res = x->k == V_INT;
    else if (!strcmp(t, "float")) *res = x->k == V_FLOAT;
    else if (!strcmp(t, "boolean")) *res = x->k == V_BOOL;
    else if (!strcmp(t, "true")) *res = x->k == V_BOOL && x->u.i;
    else if (!strcmp(t, "false")) *res = x->k == V_BOOL && !x->u.i;
    else if (!strcmp(t, "callable")) *res = x->k == V_MACRO || x->k == V_FUNC;
    else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        *res = x->k == V_STR;
        for (size_t i = 0; *res && i < x->u.s->n; i++) {
            char c = x->u.s->p[i];
            if (t[0] == 'l' ? (c >= 'A' && c <= 'Z') : (c >= 'a' && c <= 'z')) *res = 0;
        }
    } else if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        if (x->k != V_INT) return rerr(r, line, "test '%s' needs an integer", t);
        *res = (x->u.i % 2 != 0) == (t[0] == 'o');
    } else if (!strcmp(t, "divisibleby")) {
        const val *d = arg(a, 0, "num");
        if (x->k != V_INT || !d || d->k != V_INT || d->u.i == 0) return rerr(r, line, "bad divisibleby test");
        *res = x->u.i % d->u.i == 0;
    } else if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "sameas") || !strcmp(t, "ne") ||
               !strcmp(t, "lt") || !strcmp(t, "le") || !strcmp(t, "gt") || !strcmp(t, "ge") || !strcmp(t, "in")) {
        const val *o = arg(a, 0, NULL);
        if (!o) return rerr(r, line, "test '%s' needs an argument", t);
        int op = !strcmp(t, "ne") ? B_NE : !strcmp(t, "lt") ? B_LT : !strcmp(t, "le") ? B_LE : !strcmp(t, "gt") ? B_GT
               : !strcmp(t, "ge") ? B_GE : !strcmp(t, "in") ? B_IN : B_EQ;
        TRY(compare(r, op, x, o, line, res));
    } else {
        return rerr(r, line, "unknown test '%s'", t);
    }
    return 0;
}

/* obj.name(args) for str, dict and loop methods; *done 0: not a method. */
static int call_method(rs *r, const val *obj, const char *m, const args *a, int line, val *out, int *done) {
    *done = 1;
    if (obj->k == V_STR) {
        const jstr *x = obj->u.s;
        if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            const val *p = arg(a, 0, NULL);
            int end = m[0] == 'e', hit = 0;
            if (p && p->k == V_LIST) { /* a tuple of prefixes */
                for (size_t i = 0; i < p->u.l->n && !hit; i++) {
                    const val *q = &p->u.l->v[i];
                    TRY(want_str(r, q, m, line));
                    hit = q->u.s->n <= x->n && !memcmp(x->p + (end ? x->n - q->u.s->n : 0), q->u.s->p, q->u.s->n);
                }
            } else {
                TRY(want_str(r, p, m, line));
                hit = p->u.s->n <= x->n && !memcmp(x->p + (end ? x->n - p->u.s->n : 0), p->u.s->p, p->u.s->n);
            }
            *out = v_bool(hit);
            return 0;
        }
        if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
            const val *ch = arg(a, 0, "chars");
            if (ch && ch->k != V_STR && ch->k != V_NONE) TRY(want_str(r, ch, m, line));
            return do_strip(r, x, ch && ch->k == V_STR ? ch->u.s : NULL, m[0] == 'l' ? 1 : m[0] == 'r' ? 2 : 3, out);
        }
        if (!strcmp(m, "split")) {
            const val *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
            if (sep && sep->k != V_STR && sep->k != V_NONE) TRY(want_str(r, sep, m, line));
            return do_split(r, x, sep && sep->k == V_STR ? sep->u.s : NULL, mx && mx->k == V_INT ? mx->u.i : -1, out);
        }
        if (!strcmp(m, "replace")) {
            const val *o = arg(a, 0, NULL), *nw = arg(a, 1, NULL), *c = arg(a, 2, "count");
            TRY(want_str(r, o, m, line));
            TRY(want_str(r, nw, m, line));
            return do_replace(r, x, o->u.s, nw->u.s, c && c->k == V_INT ? c->u.i : -1, out);
        }
        if (!strcmp(m, "upper") || !strcmp(m, "lower")) return do_case(r, x, m[0] == 'u', out);
        if (!strcmp(m, "find") || !strcmp(m, "count")) {
            const val *p = arg(a, 0, NULL);
            TRY(want_str(r, p, m, line));
            int64_t res = m[0] == 'f' ? -1 : 0;
            TRY(charge(r, x->n * 32));
            if (m[0] == 'f') {
                const char *at = memmem(x->p, x->n, p->u.s->p, p->u.s->n);
                if (at) res = (int64_t)cp_count(x->p, (size_t)(at - x->p));
            } else if (!p->u.s->n) {
                res = (int64_t)cp_count(x->p, x->n) + 1;
            } else {
                for (const char *at = x->p; (at = memmem(at, x->n - (size_t)(at - x->p), p->u.s->p, p->u.s->n));
                     at += p->u.s->n)
                    res++;
            }
            *out = v_int(res);
            return 0;
        }
    } else if (obj->k == V_DICT || obj->k == V_NS) {
        if (!strcmp(m, "items")) return items_of(r, obj, line, out);
        if (!strcmp(m, "keys") || !strcmp(m, "values")) {
            TRY(new_list(r, obj->u.d->n, 0, out));
            for (size_t i = 0; i < obj->u.d->n; i++) out->u.l->v[i] = m[0] == 'k' ? obj->u.d->k[i] : obj->u.d->v[i];
            return 0;
        }
        if (!strcmp(m, "get")) {
            const val *k = arg(a, 0, NULL), *d = arg(a, 1, NULL);
            if (!k) return rerr(r, line, "get() needs a key");
            int i = dict_find(r, obj->u.d, k);
            TRY(charge(r, obj->u.d->n * 64));
            *out = i >= 0 ? obj->u.d->v[i] : d ? *d : v_none();
            return 0;
        }
    } else if (obj->k == V_LOOP && !strcmp(m, "cycle")) {
        if (!a->n) return rerr(r, line, "loop.cycle() needs arguments");
        *out = a->v[obj->u.lp->i % a->n];
        return 0;
    }
    *done = 0;
    return 0;
}

static int call_macro(rs *r, const jnode *m, const args *a, int line, val *out) {
    TRY(push_frame(r, 1, line));
    int rc = 0;
    size_t pos = 0;
    for (size_t i = 0; i < a->n && !rc; i++) {
        if (a->kw[i]) {
            size_t j = 0;
            while (j < m->nnames && strcmp(m->names[j], a->kw[i])) j++;
            if (j == m->nnames) rc = rerr(r, line, "macro '%s' has no parameter '%s'", m->s, a->kw[i]);
        } else if (pos++ >= m->nnames) {
            rc = rerr(r, line, "macro '%s' takes %zu arguments", m->s, m->nnames);
        }
    }
    pos = 0;
    for (size_t j = 0; j < m->nnames && !rc; j++) {
        const val *v = NULL;
        for (size_t i = 0; i < a->n; i++)
            if (a->kw[i] && !strcmp(a->kw[i], m->names[j])) v = &a->v[i];
        if (!v) v = arg(a, j, NULL);
        val d = v_undef(m->names[j]);
        if (!v && m->kids[j]) rc = eval(r, m->kids[j], &d);
        if (!rc) rc = assign(r, m->names[j], v ? *v : d);
    }
    sink s = {0};
    if (!rc) rc = exec_body(r, m->b, &s);
    pop_frame(r);
    if (rc > 0) rc = 0; /* a stray break ends the macro */
    if (rc) {
        sink_free(&s);
        return rc;
    }
    return sink_val(r, &s, out);
}

static int strftime_now(rs *r, const val *fmt, int line, val *out) {
    TRY(want_str(r, fmt, "strftime_now", line));
    static const char *const months[] = {"January", "February", "March", "April", "May", "June", "July",
                                         "August", "September", "October", "November", "December"};
    static const char *const days[] = {"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"};
    time_t now = r->now ? r->now : time(NULL);
    struct tm tm;
    if (!localtime_r(&now, &tm)) return rerr(r, line, "strftime_now: bad time");
    sink s = {0};
    int rc = 0;
    const jstr *f = fmt->u.s;
    for (size_t i = 0; i < f->n && !rc; i++) {
        char b[32];
        if (f->p[i] != '%' || i + 1 >= f->n) {
            rc = sink_put(r, &s, f->p + i, 1, NULL, 0, 0);
            continue;
        }
        char c = f->p[++i];
        b[0] = 0;
        switch (c) {
        case 'd': snprintf(b, sizeof b, "%02d", tm.tm_mday); break;
        case 'm': snprintf(b, sizeof b, "%02d", tm.tm_mon + 1); break;
        case 'Y': snprintf(b, sizeof b, "%d", tm.tm_year + 1900); break;
        case 'y': snprintf(b, sizeof b, "%02d", (tm.tm_year + 1900) % 100); break;
        case 'B': snprintf(b, sizeof b, "%s", months[tm.tm_mon % 12]); break;
        case 'b': snprintf(b, sizeof b, "%.3s", months[tm.tm_mon % 12]); break;
        case 'A': snprintf(b, sizeof b, "%s", days[tm.tm_wday % 7]); break;
        case 'a': snprintf(b, sizeof b, "%.3s", days[tm.tm_wday % 7]); break;
        case 'H': snprintf(b, sizeof b, "%02d", tm.tm_hour); break;
        case 'M': snprintf(b, sizeof b, "%02d", tm.tm_min); break;
        case 'S': snprintf(b, sizeof b, "%02d", tm.tm_sec); break;
        case 'j': snprintf(b, sizeof b, "%03d", tm.tm_yday + 1); break;
        case '-': /* %-d: glibc's no padding */
            if (i + 1 < f->n && (f->p[i + 1] == 'd' || f->p[i + 1] == 'm')) {
                snprintf(b, sizeof b, "%d", f->p[i + 1] == 'd' ? tm.tm_mday : tm.tm_mon + 1);
                i++;
            }
            break;
        case '%': strcpy(b, "%"); break;
        default: b[0] = '%'; b[1] = c; b[2] = 0;
        }
        rc = sink_cs(r, &s, b);
    }
    if (rc) {
        sink_free(&s);
        return rc;
    }
    return sink_val(r, &s, out);
}

static int call_func(rs *r, int fn, const args *a, int line, val *out) {
    switch (fn) {
    case F_RANGE: {
        int64_t v[3] = {0, 0, 1};
        size_t np = 0;
        for (size_t i = 0; i < a->n; i++) {
            if (a->kw[i] || a->v[i].k != V_INT || np == 3) return rerr(r, line, "range() takes 1 to 3 integers");
            v[np++] = a->v[i].u.i;
        }
        if (!np) return rerr(r, line, "range() takes 1 to 3 integers");
        if (np == 1) {
            v[1] = v[0];
            v[0] = 0;
        }
        if (!v[2]) return rerr(r, line, "range() arg 3 must not be zero");
        int64_t *rg = ralloc(r, 3 * sizeof *rg);
        if (!rg) return oom(r);
        memcpy(rg, v, sizeof v);
        *out = (val){.k = V_RANGE, .u.r = rg};
        return 0;
    }
    case F_NAMESPACE: case F_DICT: {
        TRY(new_dict(r, fn == F_NAMESPACE ? V_NS : V_DICT, out));
        for (size_t i = 0; i < a->n; i++) {
            if (!a->kw[i]) {
                if (a->v[i].k == V_DICT) { /* namespace(d) / dict(d) copies d */
                    if (out->u.d->n) return rerr(r, line, "namespace()/dict() take one mapping, first");
                    for (size_t j = 0; j < a->v[i].u.d->n; j++)
                        TRY(dict_append(r, out->u.d, a->v[i].u.d->k[j], a->v[i].u.d->v[j]));
                    continue;
                }
                return rerr(r, line, "namespace()/dict() take keyword arguments");
            }
            val k;
            TRY(mkcstr(r, a->kw[i], &k));
            TRY(dict_set(r, out->u.d, k, a->v[i]));
        }
        return 0;
    }
    case F_RAISE: {
        const val *m = arg(a, 0, NULL);
        val s;
        if (!m) return rerr(r, line, "raise_exception()");
        TRY(to_str(r, m, &s));
        return rerr(r, line, "%.*s", (int)(s.u.s->n < 300 ? s.u.s->n : 300), s.u.s->p);
    }
    case F_STRFTIME: return strftime_now(r, arg(a, 0, NULL), line, out);
    }
    return rerr(r, line, "not callable");
}

static int eval_call(rs *r, const jnode *n, val *out) {
    args a;
    if (n->a->kind == N_ATTR) {
        val obj;
        TRY(eval(r, n->a->a, &obj));
        TRY(eval_args(r, n, &a));
        int done;
        TRY(call_method(r, &obj, n->a->s, &a, n->line, out, &done));
        if (done) return 0;
        val f;
        TRY(get_attr(r, &obj, n->a->s, n->line, &f));
        if (f.k == V_MACRO) return call_macro(r, f.u.m, &a, n->line, out);
        if (f.k == V_UNDEF) return rerr(r, n->line, "'%s' object has no method '%s'", type_name(&obj), n->a->s);
        return rerr(r, n->line, "'%s' is not callable", n->a->s);
    }
    val f;
    TRY(eval(r, n->a, &f));
    TRY(eval_args(r, n, &a));
    if (f.k == V_MACRO) return call_macro(r, f.u.m, &a, n->line, out);
    if (f.k == V_FUNC) return call_func(r, f.u.fn, &a, n->line, out);
    if (f.k == V_UNDEF) return undefined_err(r, &f, n->line);
    return rerr(r, n->line, "'%s' object is not callable", type_name(&f));
}

static int eval(rs *r, const jnode *n, val *out) {
    r->line = n->line;
    TRY(charge(r, 0));
    switch (n->kind) {
    case N_STR: return mkstr(r, n->s, n->slen, NULL, 0, out);
    case N_INT: *out = v_int(n->i); return 0;
    case N_FLOAT: *out = v_float(n->f); return 0;
    case N_BOOL: *out = v_bool((int)n->i); return 0;
    case N_NONE: *out = v_none(); return 0;
    case N_NAME:
        if (!lookup(r, n->s, out)) *out = v_undef(n->s);
        return 0;
    case N_ATTR: {
        val o;
        TRY(eval(r, n->a, &o));
        return get_attr(r, &o, n->s, n->line, out);
    }
    case N_ITEM: {
        val o, k;
        TRY(eval(r, n->a, &o));
        TRY(eval(r, n->b, &k));
        return get_item(r, &o, &k, n->line, out);
    }
    case N_SLICE: {
        val o, p[3];
        TRY(eval(r, n->a, &o));
        for (int i = 0; i < 3; i++) {
            p[i] = v_none();
            if (n->kids[i]) TRY(eval(r, n->kids[i], &p[i]));
        }
        return do_slice(r, &o, &p[0], &p[1], &p[2], n->line, out);
    }
    case N_CALL: return eval_call(r, n, out);
    case N_FILTER: {
        val x;
        args a;
        TRY(eval(r, n->a, &x));
        TRY(eval_args(r, n, &a));
        return apply_filter(r, n, &x, &a, out);
    }
    case N_TEST: {
        val x;
        args a;
        int res;
        TRY(eval(r, n->a, &x));
        TRY(eval_args(r, n, &a));
        TRY(apply_test(r, n, &x, &a, &res));
        *out = v_bool(res != n->op);
        return 0;
    }
    case N_BIN: {
        val a, b;
        TRY(eval(r, n->a, &a));
        TRY(eval(r, n->b, &b));
        if (n->op == B_CAT) {
            sink s = {0};
            int rc = put_str(r, &s, &a);
            if (!rc) rc = put_str(r, &s, &b);
            if (rc) {
                sink_free(&s);
                return rc;
            }
            return sink_val(r, &s, out);
        }
        if (n->op >= B_EQ) {
            int res;
            TRY(compare(r, n->op, &a, &b, n->line, &res));
            *out = v_bool(res);
            return 0;
        }
        return arith(r, n->op, &a, &b, n->line, out);
    }
    case N_AND: case N_OR: {
        TRY(eval(r, n->a, out));
        if (truthy(out) == (n->kind == N_OR)) return 0;
        return eval(r, n->b, out);
    }
    case N_NOT: {
        val a;
        TRY(eval(r, n->a, &a));
        *out = v_bool(!truthy(&a));
        return 0;
    }
    case N_NEG: case N_POS: {
        val a;
        TRY(eval(r, n->a, &a));
        if (a.k == V_UNDEF) return undefined_err(r, &a, n->line);
        if (!is_num(&a)) return rerr(r, n->line, "bad operand type for unary %c: '%s'", n->kind == N_NEG ? '-' : '+', type_name(&a));
        if (n->kind == N_POS) *out = a.k == V_BOOL ? v_int(a.u.i) : a;
        else if (a.k == V_FLOAT) *out = v_float(-a.u.f);
        else if (a.u.i == INT64_MIN) return rerr(r, n->line, "integer result out of range");
        else *out = v_int(-a.u.i);
        return 0;
    }
    case N_COND: {
        val c;
        TRY(eval(r, n->b, &c));
        if (truthy(&c)) return eval(r, n->a, out);
        if (n->c) return eval(r, n->c, out);
        *out = v_undef("conditional");
        return 0;
    }
    case N_LIST: case N_TUPLE: {
        TRY(new_list(r, n->nk, n->kind == N_TUPLE, out));
        for (size_t i = 0; i < n->nk; i++) TRY(eval(r, n->kids[i], &out->u.l->v[i]));
        return 0;
    }
    case N_DICT: {
        TRY(new_dict(r, V_DICT, out));
        for (size_t i = 0; i + 1 < n->nk; i += 2) {
            val k, v;
            TRY(eval(r, n->kids[i], &k));
            TRY(eval(r, n->kids[i + 1], &v));
            TRY(dict_set(r, out->u.d, k, v));
        }
        return 0;
    }
    }
    return rerr(r, n->line, "not an expression");
}

/* ---- statements -------------------------------------------------------------------- */

static int bind_targets(rs *r, const jnode *n, const val *item) {
    if (n->nnames == 1) return assign(r, n->names[0], *item);
    if (item->k != V_LIST || item->u.l->n != n->nnames)
        return rerr(r, n->line, "cannot unpack %s into %zu names", type_name(item), n->nnames);
    for (size_t i = 0; i < n->nnames; i++) TRY(assign(r, n->names[i], item->u.l->v[i]));
    return 0;
}

static int exec_for(rs *r, const jnode *n, sink *s) {
    val it, items;
    TRY(eval(r, n->a, &it));
    /* in the arena, not on the stack: a template may keep `loop` past its loop */
    jloop *lpp = ralloc(r, sizeof *lpp);
    if (!lpp) return oom(r);
    jloop lp = {0};
    if (it.k == V_RANGE && !n->d) { /* ranges run without a list: a huge one only costs steps */
        lp.n = (size_t)range_len(it.u.r);
        lp.rstart = it.u.r[0];
        lp.rstep = it.u.r[2];
    } else {
        TRY(as_list(r, &it, n->line, &items));
        if (n->d) { /* `for x in xs if cond`: filter first, loop.* counts what is left */
            val kept;
            size_t cap = 0;
            TRY(new_list(r, 0, 0, &kept));
            for (size_t i = 0; i < items.u.l->n; i++) {
                TRY(push_frame(r, 0, n->line));
                val c;
                int rc = bind_targets(r, n, &items.u.l->v[i]);
                if (!rc) rc = eval(r, n->d, &c);
                pop_frame(r);
                TRY(rc);
                if (truthy(&c)) TRY(list_push(r, &kept, &cap, items.u.l->v[i]));
            }
            items = kept;
        }
        lp.items = items.u.l->v;
        lp.n = items.u.l->n;
    }
    if (!lp.n) return n->c ? exec_body(r, n->c, s) : 0;
    *lpp = lp;
    for (lpp->i = 0; lpp->i < lpp->n; lpp->i++) {
        TRY(charge(r, 0));
        TRY(push_frame(r, 0, n->line));
        val item = lpp->items ? lpp->items[lpp->i] : v_int(lpp->rstart + (int64_t)lpp->i * lpp->rstep);
        int rc = bind_targets(r, n, &item);
        if (!rc) rc = assign(r, "loop", (val){.k = V_LOOP, .u.lp = lpp});
        if (!rc) rc = exec_body(r, n->b, s);
        pop_frame(r);
        if (rc == R_BREAK) break;
        if (rc == R_CONTINUE) continue;
        TRY(rc);
    }
    if (lpp->i >= lpp->n) lpp->i = lpp->n - 1; /* a kept `loop` shows its last turn, as in Jinja2 */
    return 0;
}

static int exec_stmt(rs *r, const jnode *n, sink *s) {
    r->line = n->line;
    TRY(charge(r, 0));
    switch (n->kind) {
    case N_BODY: return exec_body(r, n, s);
    case N_TEXT: return sink_put(r, s, n->s, n->slen, NULL, 0, 0);
    case N_OUT: {
        val v;
        TRY(eval(r, n->a, &v));
        return put_str(r, s, &v);
    }
    case N_IF: {
        val c;
        TRY(eval(r, n->a, &c));
        if (truthy(&c)) return exec_body(r, n->b, s);
        if (!n->c) return 0;
        return n->c->kind == N_IF ? exec_stmt(r, n->c, s) : exec_body(r, n->c, s);
    }
    case N_FOR: return exec_for(r, n, s);
    case N_SET: {
        val v;
        TRY(eval(r, n->a, &v));
        if (n->s2) {
            val ns;
            if (!lookup(r, n->s, &ns) || ns.k != V_NS)
                return rerr(r, n->line, "cannot assign attribute on non-namespace object '%s'", n->s);
            val k;
            TRY(mkcstr(r, n->s2, &k));
            return dict_set(r, ns.u.d, k, v);
        }
        if (n->nnames > 1) return bind_targets(r, n, &v);
        return assign(r, n->s, v);
    }
    case N_SETBLOCK: {
        sink b = {0};
        int rc = exec_body(r, n->b, &b);
        val v;
        if (rc || (rc = sink_val(r, &b, &v))) {
            sink_free(&b);
            return rc;
        }
        return assign(r, n->s, v);
    }
    case N_MACRO: return assign(r, n->s, (val){.k = V_MACRO, .u.m = n});
    case N_BREAK: return R_BREAK;
    case N_CONTINUE: return R_CONTINUE;
    }
    return rerr(r, n->line, "not a statement");
}

static int exec_body(rs *r, const jnode *n, sink *s) {
    if (r->depth >= r->max_depth)
        return core_errf(r->err, CORE_EFULL, "template line %d: blocks nested too deeply (limit %d)", n->line, r->max_depth);
    r->depth++;
    int rc = 0;
    for (size_t i = 0; i < n->nk && !rc; i++) rc = exec_stmt(r, n->kids[i], s);
    r->depth--;
    return rc;
}

/* ---- context ------------------------------------------------------------------------- */

static int from_json(rs *r, const json_t *j, int taint, int depth, val *out) {
    if (depth > 64) return core_errf(r->err, CORE_EFULL, "context JSON nested too deeply");
    TRY(charge(r, 0));
    switch (json_typeof(j)) {
    case JSON_NULL: *out = v_none(); return 0;
    case JSON_TRUE: *out = v_bool(1); return 0;
    case JSON_FALSE: *out = v_bool(0); return 0;
    case JSON_INTEGER: *out = v_int((int64_t)json_integer_value(j)); return 0;
    case JSON_REAL: *out = v_float(json_real_value(j)); return 0;
    case JSON_STRING: {
        size_t n = json_string_length(j);
        jinja_span t = {0, n};
        return mkstr(r, json_string_value(j), n, &t, taint && n ? 1 : 0, out);
    }
    case JSON_ARRAY: {
        TRY(new_list(r, json_array_size(j), 0, out));
        for (size_t i = 0; i < json_array_size(j); i++)
            TRY(from_json(r, json_array_get(j, i), taint, depth + 1, &out->u.l->v[i]));
        return 0;
    }
    case JSON_OBJECT: {
        TRY(new_dict(r, V_DICT, out));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            val kv, vv;
            jinja_span t = {0, strlen(k)};
            TRY(mkstr(r, k, t.len, &t, taint && t.len ? 1 : 0, &kv));
            TRY(from_json(r, v, taint, depth + 1, &vv));
            TRY(dict_append(r, out->u.d, kv, vv)); /* jansson keeps keys unique */
        }
        return 0;
    }
    }
    *out = v_none();
    return 0;
}

static int add_ctx(rs *r, const json_t *obj, int taint) {
    if (!obj) return 0;
    if (!json_is_object(obj)) return core_errf(r->err, CORE_EINVAL, "template context must be a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        val x;
        TRY(from_json(r, v, taint, 0, &x));
        char *name = ralloc(r, strlen(k) + 1);
        if (!name) return oom(r);
        strcpy(name, k);
        TRY(assign(r, name, x));
    }
    return 0;
}

int jinja_render(const jinja_tmpl *t, const json_t *data, const json_t *trusted, time_t now,
                 const jinja_limits *lim, core_buf *out, jinja_spans *spans, core_err *err) {
    if (!t || !t->root || !out) return core_errf(err, CORE_EINVAL, "jinja_render: no template or no output");
    rs r = {.err = err, .now = now};
    jinja_limits d = {0};
    if (lim) d = *lim;
    r.max_steps = d.max_steps ? d.max_steps : 20000000;
    r.max_out = d.max_output ? d.max_output : (size_t)64 << 20;
    r.ar.limit = d.max_memory ? d.max_memory : (size_t)512 << 20;
    r.max_depth = d.max_depth > 0 ? (d.max_depth < 120 ? d.max_depth : 120) : 64;
    static const struct { const char *name; int fn; } fns[] = {
        {"range", F_RANGE}, {"namespace", F_NAMESPACE}, {"raise_exception", F_RAISE},
        {"strftime_now", F_STRFTIME}, {"dict", F_DICT}};
    sink s = {0};
    int rc = 0;
    r.fr[r.nfr++] = (frame){0, 0};
    for (size_t i = 0; i < sizeof fns / sizeof *fns && !rc; i++)
        rc = assign(&r, fns[i].name, (val){.k = V_FUNC, .u.fn = fns[i].fn});
    if (!rc) rc = add_ctx(&r, data, 1);
    if (!rc) rc = add_ctx(&r, trusted, 0);
    /* the template's own top level: sets there are seen by macros */
    if (!rc) r.fr[r.nfr++] = (frame){r.nv, 0};
    if (!rc) rc = exec_body(&r, t->root, &s);
    if (rc > 0) rc = 0; /* break/continue outside a loop end the template, as Jinja2 refuses them at compile time */
    if (!rc) {
        size_t base = out->len;
        if (core_buf_append(out, s.p ? s.p : "", s.n)) rc = core_errf(err, CORE_ENOMEM, "out of memory");
        for (size_t i = 0; !rc && spans && i < s.nt; i++) {
            if (spans->n == spans->cap) {
                size_t cap = spans->cap ? spans->cap * 2 : 16;
                jinja_span *v = realloc(spans->v, cap * sizeof *v);
                if (!v) {
                    rc = core_errf(err, CORE_ENOMEM, "out of memory");
                    break;
                }
                spans->v = v;
                spans->cap = cap;
            }
            spans->v[spans->n++] = (jinja_span){base + s.t[i].off, s.t[i].len};
        }
    }
    sink_free(&s);
    free(r.vars);
    jarena_free(&r.ar);
    return rc;
}
