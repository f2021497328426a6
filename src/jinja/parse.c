/* parse.c -- template text to a tree: a lexer that applies Jinja2's
 * whitespace rules, then a recursive-descent parser with Jinja2's operator
 * precedence.
 *
 * Lexing follows Jinja2's lexer as transformers configures it: newlines
 * are normalized to "\n" and one trailing newline is dropped; "{%-" and
 * "{{-" strip all whitespace before the tag, "-%}" all after it;
 * lstrip_blocks strips spaces and tabs between a line start and "{%"/"{#"
 * (not "{{", not "{%+"); trim_blocks drops the one "\n" after "%}"/"#}"
 * (not "+%}"). A line start is a "\n" in the text before the tag, or the
 * end of a previous tag whose match ended in "\n", or the template start.
 *
 * Precedence, loosest first: `a if b else c`, or, and, not, comparisons
 * (in, not in, ==, ...), + -, ~, * / // %, **, unary - +, then a primary
 * with its postfixes (.attr, [index], (call)) and filters/tests (| f,
 * is t), which bind tighter than any operator as in Jinja2.
 *
 * Nesting depth is bounded (parentheses, blocks) so a hostile template
 * cannot overflow the C stack; every error names the line.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jinja/jinja_int.h"

#define MAX_PARSE_DEPTH 200

/* ---- arena -------------------------------------------------------------- */

void *jarena_alloc(jarena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (a->limit && (a->total + n > a->limit || a->total + n < a->total)) {
        a->over = 1;
        return NULL;
    }
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        jarena_blk *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += n;
    a->total += n;
    memset(p, 0, n);
    return p;
}

void jarena_free(jarena *a) {
    for (jarena_blk *b = a->head, *nx; b; b = nx) {
        nx = b->next;
        free(b);
    }
    a->head = NULL;
    a->total = 0;
}

/* ---- lexer ---------------------------------------------------------------- */

enum { T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct tok {
    int type, line;
    const char *s; /* T_DATA/T_STR: decoded text (arena); T_NAME/T_OP: in the source */
    size_t n;
    int64_t i;
    double f;
} tok;

typedef struct ps {
    jarena *ar;
    core_err *err;
    const char *src;
    size_t len;
    tok *t;
    size_t nt, cap, pos;
    int depth;
} ps;

static int perr(ps *p, int line, const char *fmt, const char *a) {
    char m[300];
    snprintf(m, sizeof m, fmt, a);
    return core_errf(p->err, CORE_EFORMAT, "template line %d: %s", line, m);
}

static int push_tok(ps *p, tok t) {
    if (p->nt == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        tok *v = realloc(p->t, cap * sizeof *v);
        if (!v) return core_errf(p->err, CORE_ENOMEM, "out of memory");
        p->t = v;
        p->cap = cap;
    }
    p->t[p->nt++] = t;
    return 0;
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static int is_name0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

static char *dup_n(jarena *a, const char *s, size_t n) {
    char *d = jarena_alloc(a, n + 1);
    if (d && n) memcpy(d, s, n);
    return d;
}

static int count_lines(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string literal at s[0] (the quote) in src up to end; Python's escapes. */
static int lex_string(ps *p, const char *s, const char *end, int line, const char **after) {
    char q = *s++;
    const char *b = s;
    while (s < end && *s != q) s += (*s == '\\' && s + 1 < end) ? 2 : 1;
    if (s >= end) return perr(p, line, "%s", "unterminated string literal");
    size_t n = (size_t)(s - b);
    char *d = jarena_alloc(p->ar, n + 1);
    if (!d) return core_errf(p->err, CORE_ENOMEM, "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        if (c != '\\' || i + 1 >= n) {
            d[k++] = c;
            continue;
        }
        char e = b[++i];
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        if (digits) {
            uint32_t cp = 0;
            int ok = i + (size_t)digits < n;
            for (int j = 1; ok && j <= digits; j++) {
                int h = hexval(b[i + (size_t)j]);
                if (h < 0) ok = 0;
                cp = cp * 16 + (uint32_t)(h < 0 ? 0 : h);
            }
            if (!ok || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000))
                return perr(p, line, "%s", "bad \\x/\\u escape in a string literal");
            k += (size_t)core_utf8_encode(cp, d + k);
            i += (size_t)digits;
            continue;
        }
        switch (e) {
        case 'n': d[k++] = '\n'; break;
        case 't': d[k++] = '\t'; break;
        case 'r': d[k++] = '\r'; break;
        case '\\': d[k++] = '\\'; break;
        case '\'': d[k++] = '\''; break;
        case '"': d[k++] = '"'; break;
        case '0': d[k++] = '\0'; break;
        case 'a': d[k++] = '\a'; break;
        case 'b': d[k++] = '\b'; break;
        case 'f': d[k++] = '\f'; break;
        case 'v': d[k++] = '\v'; break;
        case '\n': break; /* a backslash-newline continues the line */
        default: d[k++] = '\\'; d[k++] = e; /* unknown escapes stay, as in Python */
        }
    }
    *after = s + 1;
    return push_tok(p, (tok){.type = T_STR, .line = line, .s = d, .n = k});
}

static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
static const char ops1[] = "+-*/%~<>=()[]{},.:|";

/* Tokens of one tag from *at until its end delimiter (close: "%}", "}}").
 * Sets *strip_after (a "-" end) and *trim_ok (no "+" end); *at moves past. */
static int lex_tag(ps *p, const char **at, const char *end, int *line, const char *close, int *strip_after,
                   int *keep_nl) {
    const char *s = *at;
    for (;;) {
        while (s < end && is_ws(*s)) {
            if (*s == '\n') (*line)++;
            s++;
        }
        if (s >= end) return perr(p, *line, "%s", "unexpected end of template inside a tag (missing '%}' or '}}')");
        if ((*s == '-' || *s == '+') && end - s >= 3 && !memcmp(s + 1, close, 2)) {
            *strip_after = *s == '-';
            *keep_nl = *s == '+';
            *at = s + 3;
            return 0;
        }
        if (end - s >= 2 && !memcmp(s, close, 2)) {
            *at = s + 2;
            return 0;
        }
        const char *b = s;
        if (*s == '\'' || *s == '"') {
            int rc = lex_string(p, s, end, *line, &s);
            if (rc) return rc;
            *line += count_lines(b, (size_t)(s - b));
            continue;
        }
        if (is_name0(*s)) {
            while (s < end && (is_name0(*s) || is_digit(*s))) s++;
            int rc = push_tok(p, (tok){.type = T_NAME, .line = *line, .s = b, .n = (size_t)(s - b)});
            if (rc) return rc;
            continue;
        }
        if (is_digit(*s)) {
            char num[64];
            size_t k = 0;
            int fl = 0;
            while (s < end && (is_digit(*s) || *s == '_') && k < 60)
                if (*s++ != '_') num[k++] = s[-1];
            if (s + 1 < end && *s == '.' && is_digit(s[1])) {
                fl = 1;
                num[k++] = *s++;
                while (s < end && (is_digit(*s) || *s == '_') && k < 60)
                    if (*s++ != '_') num[k++] = s[-1];
            }
            if (s < end && (*s == 'e' || *s == 'E')) {
                const char *e = s + 1;
                if (e < end && (*e == '+' || *e == '-')) e++;
                if (e < end && is_digit(*e)) {
                    fl = 1;
                    num[k++] = 'e';
                    if (s[1] == '-') num[k++] = '-';
                    s = e;
                    while (s < end && is_digit(*s) && k < 60) num[k++] = *s++;
                }
            }
            if (k >= 60) return perr(p, *line, "%s", "number literal too long");
            num[k] = 0;
            tok t = {.type = fl ? T_FLOAT : T_INT, .line = *line};
            errno = 0;
            if (fl) t.f = strtod(num, NULL);
            else t.i = strtoll(num, NULL, 10);
            if (errno) return perr(p, *line, "%s", "integer literal out of range");
            int rc = push_tok(p, t);
            if (rc) return rc;
            continue;
        }
        size_t n = 0;
        for (size_t k = 0; k < sizeof ops2 / sizeof *ops2; k++)
            if (end - s >= 2 && !memcmp(s, ops2[k], 2)) n = 2;
        if (!n && memchr(ops1, *s, sizeof ops1 - 1)) n = 1;
        if (!n) {
            char c[8];
            snprintf(c, sizeof c, (unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f ? "%c" : "\\x%02x",
                     (unsigned char)*s);
            return perr(p, *line, "unexpected character '%s' in a tag", c);
        }
        int rc = push_tok(p, (tok){.type = T_OP, .line = *line, .s = s, .n = n});
        if (rc) return rc;
        s += n;
    }
}

static int lex(ps *p) {
    /* normalize newlines and drop one trailing newline, as Jinja2 does */
    char *src = jarena_alloc(p->ar, p->len + 1);
    if (!src) return core_errf(p->err, CORE_ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < p->len; i++) {
        if (p->src[i] == '\r') {
            src[n++] = '\n';
            if (i + 1 < p->len && p->src[i + 1] == '\n') i++;
        } else {
            src[n++] = p->src[i];
        }
    }
    if (n && src[n - 1] == '\n') n--;
    const char *s = src, *end = src + n;
    int line = 1, line_starting = 1, strip_next = 0;
    while (s < end) {
        /* the next tag start */
        const char *t = s;
        int kind = 0; /* '{', '%', '#' */
        while (t + 1 < end) {
            if (t[0] == '{' && (t[1] == '{' || t[1] == '%' || t[1] == '#')) {
                kind = t[1];
                break;
            }
            t++;
        }
        if (!kind) t = end;
        const char *ds = s;
        if (strip_next)
            while (ds < t && is_ws(*ds)) ds++;
        strip_next = 0;
        tok d = {.type = T_DATA, .line = line, .s = ds, .n = (size_t)(t - ds)};
        line += count_lines(s, (size_t)(t - s));
        if (!kind) {
            if (d.n) {
                int rc = push_tok(p, d);
                if (rc) return rc;
            }
            break;
        }
        char sign = t + 2 < end ? t[2] : 0;
        if (sign == '-') {
            while (d.n && is_ws(d.s[d.n - 1])) d.n--;
        } else if (sign != '+' && kind != '{') {
            /* lstrip_blocks */
            size_t lp = d.n;
            while (lp && d.s[lp - 1] != '\n') lp--;
            int has_nl = lp > 0;
            if (has_nl || line_starting) {
                size_t k = lp;
                while (k < d.n && (d.s[k] == ' ' || d.s[k] == '\t' || d.s[k] == '\f' || d.s[k] == '\v')) k++;
                if (k == d.n) d.n = lp;
            }
        }
        if (d.n) {
            int rc = push_tok(p, d);
            if (rc) return rc;
        }
        int tline = line;
        const char *a = t + 2 + (sign == '-' || sign == '+');
        int strip_after = 0, keep_nl = 0;
        if (kind == '#') {
            const char *e = a;
            while (e + 1 < end && !(e[0] == '#' && e[1] == '}')) e++;
            if (e + 1 >= end) return perr(p, tline, "%s", "unclosed comment (missing '#}')");
            strip_after = e > a && e[-1] == '-';
            keep_nl = e > a && e[-1] == '+';
            line += count_lines(a, (size_t)(e - a));
            s = e + 2;
        } else {
            int rc = push_tok(p, (tok){.type = kind == '{' ? T_VAR_BEGIN : T_BLOCK_BEGIN, .line = tline});
            if (rc) return rc;
            rc = lex_tag(p, &a, end, &line, kind == '{' ? "}}" : "%}", &strip_after, &keep_nl);
            if (rc) return rc;
            if ((rc = push_tok(p, (tok){.type = kind == '{' ? T_VAR_END : T_BLOCK_END, .line = line}))) return rc;
            s = a;
        }
        line_starting = 0;
        if (strip_after) {
            const char *w = s;
            while (w < end && is_ws(*w)) w++;
            line_starting = w > s && w[-1] == '\n';
            line += count_lines(s, (size_t)(w - s));
            s = w;
        } else if (kind != '{' && !keep_nl && s < end && *s == '\n') {
            s++; /* trim_blocks */
            line++;
            line_starting = 1;
        }
    }
    return push_tok(p, (tok){.type = T_EOF, .line = line});
}

/* ---- parser ---------------------------------------------------------------- */

static tok *cur(ps *p) { return &p->t[p->pos]; }
static int is_op(const tok *t, const char *op) { return t->type == T_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n); }
static int is_name(const tok *t, const char *nm) {
    return t->type == T_NAME && t->n == strlen(nm) && !memcmp(t->s, nm, t->n);
}
static void adv(ps *p) {
    if (p->t[p->pos].type != T_EOF) p->pos++;
}

static const char *tok_desc(const tok *t) {
    switch (t->type) {
    case T_EOF: return "end of template";
    case T_VAR_END: return "'}}'";
    case T_BLOCK_END: return "'%}'";
    case T_STR: return "a string";
    case T_INT: case T_FLOAT: return "a number";
    default: return "this token";
    }
}

static int expect_op(ps *p, const char *op) {
    if (!is_op(cur(p), op)) {
        char m[64];
        snprintf(m, sizeof m, "expected '%s'", op);
        return perr(p, cur(p)->line, "%s", m);
    }
    adv(p);
    return 0;
}

static jnode *mk(ps *p, int kind, int line) {
    jnode *n = jarena_alloc(p->ar, sizeof *n);
    if (n) {
        n->kind = kind;
        n->line = line;
    }
    return n;
}

#define OOM() core_errf(p->err, CORE_ENOMEM, "out of memory")
#define TRY(x)                 \
    do {                       \
        int rc_ = (x);         \
        if (rc_) return rc_;   \
    } while (0)

/* A growable list of nodes (and keyword names) built in malloc, copied to the arena at the end. */
typedef struct nlist {
    jnode **v;
    const char **kw;
    size_t n, cap;
} nlist;

static int nl_push(ps *p, nlist *l, jnode *x, const char *kw) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        jnode **v = realloc(l->v, cap * sizeof *v);
        if (!v) return OOM();
        l->v = v;
        const char **k = realloc(l->kw, cap * sizeof *k);
        if (!k) return OOM();
        l->kw = k;
        l->cap = cap;
    }
    l->v[l->n] = x;
    l->kw[l->n++] = kw;
    return 0;
}

static int nl_done(ps *p, nlist *l, jnode *into) {
    into->nk = l->n;
    int rc = 0;
    if (l->n) {
        into->kids = jarena_alloc(p->ar, l->n * sizeof *into->kids);
        into->kw = jarena_alloc(p->ar, l->n * sizeof *into->kw);
        if (!into->kids || !into->kw) rc = OOM();
        else {
            memcpy(into->kids, l->v, l->n * sizeof *l->v);
            memcpy(into->kw, l->kw, l->n * sizeof *l->kw);
        }
    }
    free(l->v);
    free(l->kw);
    memset(l, 0, sizeof *l);
    return rc;
}

static int parse_expr(ps *p, jnode **out);
static int parse_or(ps *p, jnode **out);
static int parse_unary(ps *p, jnode **out, int with_filter);

static const char *name_dup(ps *p, const tok *t) { return dup_n(p->ar, t->s, t->n); }

static int enter(ps *p) {
    if (++p->depth > MAX_PARSE_DEPTH) return perr(p, cur(p)->line, "%s", "expression or blocks nested too deeply");
    return 0;
}

/* "(" already consumed: arguments up to ")", positional then name=value. */
static int parse_args(ps *p, jnode *into) {
    nlist l = {0};
    int rc = 0;
    while (!is_op(cur(p), ")")) {
        const char *kw = NULL;
        if (cur(p)->type == T_NAME && p->pos + 1 < p->nt && is_op(&p->t[p->pos + 1], "=")) {
            if (!(kw = name_dup(p, cur(p)))) {
                rc = OOM();
                break;
            }
            adv(p);
            adv(p);
        }
        jnode *a;
        if ((rc = parse_expr(p, &a)) || (rc = nl_push(p, &l, a, kw))) break;
        if (!is_op(cur(p), ",")) break;
        adv(p);
    }
    if (!rc) rc = expect_op(p, ")");
    int rc2 = nl_done(p, &l, into);
    return rc ? rc : rc2;
}

static int parse_primary(ps *p, jnode **out) {
    tok *t = cur(p);
    jnode *n = NULL;
    if (t->type == T_NAME) {
        if (is_name(t, "true") || is_name(t, "True") || is_name(t, "false") || is_name(t, "False")) {
            if (!(n = mk(p, N_BOOL, t->line))) return OOM();
            n->i = t->s[0] == 't' || t->s[0] == 'T';
        } else if (is_name(t, "none") || is_name(t, "None")) {
            if (!(n = mk(p, N_NONE, t->line))) return OOM();
        } else {
            if (!(n = mk(p, N_NAME, t->line)) || !(n->s = name_dup(p, t))) return OOM();
        }
        adv(p);
    } else if (t->type == T_STR) {
        /* adjacent literals concatenate, as in Python */
        size_t len = 0, k = p->pos;
        while (p->t[k].type == T_STR) len += p->t[k++].n;
        if (!(n = mk(p, N_STR, t->line))) return OOM();
        char *d = jarena_alloc(p->ar, len + 1);
        if (!d) return OOM();
        len = 0;
        while (cur(p)->type == T_STR) {
            if (cur(p)->n) memcpy(d + len, cur(p)->s, cur(p)->n);
            len += cur(p)->n;
            adv(p);
        }
        n->s = d;
        n->slen = len;
    } else if (t->type == T_INT || t->type == T_FLOAT) {
        if (!(n = mk(p, t->type == T_INT ? N_INT : N_FLOAT, t->line))) return OOM();
        n->i = t->i;
        n->f = t->f;
        adv(p);
    } else if (is_op(t, "(")) {
        adv(p);
        if (is_op(cur(p), ")")) { /* empty tuple */
            adv(p);
            if (!(n = mk(p, N_TUPLE, t->line))) return OOM();
        } else {
            TRY(parse_expr(p, &n));
            if (is_op(cur(p), ",")) {
                nlist l = {0};
                int rc = nl_push(p, &l, n, NULL);
                while (!rc && is_op(cur(p), ",")) {
                    adv(p);
                    if (is_op(cur(p), ")")) break;
                    jnode *x;
                    if (!(rc = parse_expr(p, &x))) rc = nl_push(p, &l, x, NULL);
                }
                if (!rc && !(n = mk(p, N_TUPLE, t->line))) rc = OOM();
                int rc2 = n ? nl_done(p, &l, n) : 0;
                if (rc || rc2) {
                    free(l.v);
                    free(l.kw);
                    return rc ? rc : rc2;
                }
            }
            TRY(expect_op(p, ")"));
        }
    } else if (is_op(t, "[") || is_op(t, "{")) {
        int dict = is_op(t, "{");
        adv(p);
        if (!(n = mk(p, dict ? N_DICT : N_LIST, t->line))) return OOM();
        nlist l = {0};
        int rc = 0;
        while (!is_op(cur(p), dict ? "}" : "]")) {
            jnode *x;
            if ((rc = parse_expr(p, &x)) || (rc = nl_push(p, &l, x, NULL))) break;
            if (dict) {
                if ((rc = expect_op(p, ":")) || (rc = parse_expr(p, &x)) || (rc = nl_push(p, &l, x, NULL))) break;
            }
            if (!is_op(cur(p), ",")) break;
            adv(p);
        }
        if (!rc) rc = expect_op(p, dict ? "}" : "]");
        int rc2 = nl_done(p, &l, n);
        if (rc || rc2) return rc ? rc : rc2;
    } else {
        return perr(p, t->line, "unexpected %s in an expression", tok_desc(t));
    }
    *out = n;
    return 0;
}

/* `[` consumed: an index or a slice. */
static int parse_subscript(ps *p, jnode *obj, int line, jnode **out) {
    jnode *parts[3] = {0};
    int k = 0, slice = 0;
    for (;;) {
        if (!is_op(cur(p), ":") && !is_op(cur(p), "]")) TRY(parse_expr(p, &parts[k]));
        if (is_op(cur(p), ":") && k < 2) {
            slice = 1;
            k++;
            adv(p);
            continue;
        }
        break;
    }
    TRY(expect_op(p, "]"));
    jnode *n = mk(p, slice ? N_SLICE : N_ITEM, line);
    if (!n) return OOM();
    n->a = obj;
    if (slice) {
        if (!(n->kids = jarena_alloc(p->ar, 3 * sizeof *n->kids))) return OOM();
        memcpy(n->kids, parts, sizeof parts);
        n->nk = 3;
    } else {
        if (!parts[0]) return perr(p, line, "%s", "empty subscript");
        n->b = parts[0];
    }
    *out = n;
    return 0;
}

static int parse_postfix(ps *p, jnode **io) {
    for (;;) {
        tok *t = cur(p);
        if (is_op(t, ".")) {
            adv(p);
            tok *nm = cur(p);
            jnode *n;
            if (nm->type == T_NAME) {
                if (!(n = mk(p, N_ATTR, t->line)) || !(n->s = name_dup(p, nm))) return OOM();
                n->a = *io;
            } else if (nm->type == T_INT) {
                jnode *ix = mk(p, N_INT, t->line);
                if (!ix || !(n = mk(p, N_ITEM, t->line))) return OOM();
                ix->i = nm->i;
                n->a = *io;
                n->b = ix;
            } else {
                return perr(p, t->line, "%s", "expected an attribute name after '.'");
            }
            adv(p);
            *io = n;
        } else if (is_op(t, "[")) {
            adv(p);
            TRY(parse_subscript(p, *io, t->line, io));
        } else if (is_op(t, "(")) {
            adv(p);
            jnode *n = mk(p, N_CALL, t->line);
            if (!n) return OOM();
            n->a = *io;
            TRY(parse_args(p, n));
            *io = n;
        } else {
            return 0;
        }
    }
}

/* What render.c implements: an unknown name fails at compile time, as in Jinja2. */
static const char *const filters[] = {"safe", "string", "tojson", "trim", "length", "count", "first", "last", "join",
                                      "default", "d", "upper", "lower", "capitalize", "items", "list", "reverse",
                                      "replace", "int", "float", "abs", "indent", "select", "reject", "selectattr",
                                      "rejectattr", "map", NULL};
static const char *const tests[] = {"defined", "undefined", "none", "string", "mapping", "iterable", "sequence",
                                    "number", "integer", "float", "boolean", "true", "false", "callable", "lower",
                                    "upper", "odd", "even", "divisibleby", "eq", "equalto", "sameas", "ne", "lt",
                                    "le", "gt", "ge", "in", NULL};
static int known(const char *const *list, const char *name) {
    for (size_t i = 0; list[i]; i++)
        if (!strcmp(list[i], name)) return 1;
    return 0;
}

static int parse_filters(ps *p, jnode **io) {
    for (;;) {
        tok *t = cur(p);
        if (is_op(t, "|")) {
            adv(p);
            if (cur(p)->type != T_NAME) return perr(p, t->line, "%s", "expected a filter name after '|'");
            jnode *n = mk(p, N_FILTER, t->line);
            if (!n || !(n->s = name_dup(p, cur(p)))) return OOM();
            if (!known(filters, n->s)) return perr(p, t->line, "unknown filter '%s'", n->s);
            adv(p);
            n->a = *io;
            if (is_op(cur(p), "(")) {
                adv(p);
                TRY(parse_args(p, n));
            }
            *io = n;
        } else if (is_name(t, "is")) {
            adv(p);
            jnode *n = mk(p, N_TEST, t->line);
            if (!n) return OOM();
            if (is_name(cur(p), "not")) {
                n->op = 1;
                adv(p);
            }
            tok *nm = cur(p);
            if (nm->type != T_NAME) return perr(p, t->line, "%s", "expected a test name after 'is'");
            /* `is none`, `is true`: the literals name tests here */
            if (!(n->s = name_dup(p, nm))) return OOM();
            if (!known(tests, n->s)) return perr(p, t->line, "unknown test '%s'", n->s);
            adv(p);
            n->a = *io;
            tok *q = cur(p);
            if (is_op(q, "(")) {
                adv(p);
                TRY(parse_args(p, n));
            } else if (q->type == T_STR || q->type == T_INT || q->type == T_FLOAT || is_op(q, "[") || is_op(q, "{") ||
                       (q->type == T_NAME && !is_name(q, "else") && !is_name(q, "or") && !is_name(q, "and") &&
                        !is_name(q, "if") && !is_name(q, "not") && !is_name(q, "in") && !is_name(q, "is"))) {
                jnode *arg;
                TRY(parse_unary(p, &arg, 0));
                nlist l = {0};
                TRY(nl_push(p, &l, arg, NULL));
                TRY(nl_done(p, &l, n));
            }
            *io = n;
        } else if (is_op(t, "(")) {
            adv(p);
            jnode *n = mk(p, N_CALL, t->line);
            if (!n) return OOM();
            n->a = *io;
            TRY(parse_args(p, n));
            *io = n;
        } else {
            return 0;
        }
    }
}

static int parse_unary(ps *p, jnode **out, int with_filter) {
    TRY(enter(p));
    tok *t = cur(p);
    if (is_op(t, "-") || is_op(t, "+")) {
        adv(p);
        jnode *n = mk(p, is_op(t, "-") ? N_NEG : N_POS, t->line);
        if (!n) return OOM();
        TRY(parse_unary(p, &n->a, 0));
        *out = n;
    } else {
        TRY(parse_primary(p, out));
    }
    TRY(parse_postfix(p, out));
    if (with_filter) TRY(parse_filters(p, out));
    p->depth--;
    return 0;
}

static int bin(ps *p, int op, int line, jnode *a, jnode *b, jnode **out) {
    jnode *n = mk(p, N_BIN, line);
    if (!n) return OOM();
    n->op = op;
    n->a = a;
    n->b = b;
    *out = n;
    return 0;
}

static int parse_pow(ps *p, jnode **out) {
    TRY(parse_unary(p, out, 1));
    while (is_op(cur(p), "**")) {
        int line = cur(p)->line;
        adv(p);
        jnode *r;
        TRY(parse_unary(p, &r, 1));
        TRY(bin(p, B_POW, line, *out, r, out));
    }
    return 0;
}

static int parse_math2(ps *p, jnode **out) {
    TRY(parse_pow(p, out));
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, "*") ? B_MUL : is_op(t, "/") ? B_DIV : is_op(t, "//") ? B_FLOORDIV : is_op(t, "%") ? B_MOD : -1;
        if (op < 0) return 0;
        adv(p);
        jnode *r;
        TRY(parse_pow(p, &r));
        TRY(bin(p, op, t->line, *out, r, out));
    }
}

static int parse_concat(ps *p, jnode **out) {
    TRY(parse_math2(p, out));
    while (is_op(cur(p), "~")) {
        int line = cur(p)->line;
        adv(p);
        jnode *r;
        TRY(parse_math2(p, &r));
        TRY(bin(p, B_CAT, line, *out, r, out));
    }
    return 0;
}

static int parse_math1(ps *p, jnode **out) {
    TRY(parse_concat(p, out));
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, "+") ? B_ADD : is_op(t, "-") ? B_SUB : -1;
        if (op < 0) return 0;
        adv(p);
        jnode *r;
        TRY(parse_concat(p, &r));
        TRY(bin(p, op, t->line, *out, r, out));
    }
}

/* Comparisons chain as in Python: a < b < c is (a < b) and (b < c). */
static int parse_compare(ps *p, jnode **out) {
    TRY(parse_math1(p, out));
    jnode *left = *out, *acc = NULL;
    for (;;) {
        tok *t = cur(p);
        int op = -1;
        if (is_op(t, "==")) op = B_EQ;
        else if (is_op(t, "!=")) op = B_NE;
        else if (is_op(t, "<")) op = B_LT;
        else if (is_op(t, "<=")) op = B_LE;
        else if (is_op(t, ">")) op = B_GT;
        else if (is_op(t, ">=")) op = B_GE;
        else if (is_name(t, "in")) op = B_IN;
        else if (is_name(t, "not") && p->pos + 1 < p->nt && is_name(&p->t[p->pos + 1], "in")) {
            op = B_NOTIN;
            adv(p);
        }
        if (op < 0) break;
        adv(p);
        jnode *r, *c = NULL;
        TRY(parse_math1(p, &r));
        TRY(bin(p, op, t->line, left, r, &c));
        if (acc) {
            jnode *n = mk(p, N_AND, t->line);
            if (!n) return OOM();
            n->a = acc;
            n->b = c;
            acc = n;
        } else {
            acc = c;
        }
        left = r;
    }
    if (acc) *out = acc;
    return 0;
}

static int parse_not(ps *p, jnode **out) {
    if (is_name(cur(p), "not")) {
        TRY(enter(p));
        jnode *n = mk(p, N_NOT, cur(p)->line);
        if (!n) return OOM();
        adv(p);
        TRY(parse_not(p, &n->a));
        *out = n;
        p->depth--;
        return 0;
    }
    return parse_compare(p, out);
}

static int parse_and(ps *p, jnode **out) {
    TRY(parse_not(p, out));
    while (is_name(cur(p), "and")) {
        jnode *n = mk(p, N_AND, cur(p)->line);
        if (!n) return OOM();
        adv(p);
        n->a = *out;
        TRY(parse_not(p, &n->b));
        *out = n;
    }
    return 0;
}

static int parse_or(ps *p, jnode **out) {
    TRY(parse_and(p, out));
    while (is_name(cur(p), "or")) {
        jnode *n = mk(p, N_OR, cur(p)->line);
        if (!n) return OOM();
        adv(p);
        n->a = *out;
        TRY(parse_and(p, &n->b));
        *out = n;
    }
    return 0;
}

static int parse_expr(ps *p, jnode **out) {
    TRY(enter(p));
    TRY(parse_or(p, out));
    while (is_name(cur(p), "if")) {
        jnode *n = mk(p, N_COND, cur(p)->line);
        if (!n) return OOM();
        adv(p);
        n->a = *out;
        TRY(parse_or(p, &n->b));
        if (is_name(cur(p), "else")) {
            adv(p);
            TRY(parse_expr(p, &n->c));
        }
        *out = n;
    }
    p->depth--;
    return 0;
}

/* ---- statements ------------------------------------------------------------ */

static int expect_block_end(ps *p) {
    if (cur(p)->type != T_BLOCK_END) return perr(p, cur(p)->line, "expected '%%}', got %s", tok_desc(cur(p)));
    adv(p);
    return 0;
}

/* Parse statements until a block tag whose name is one of `ends` (NULL-
 * terminated); that tag's name token is left current (after "{%"). */
static int parse_body(ps *p, const char *const *ends, const char *what, int open_line, jnode **out);

static int parse_names(ps *p, jnode *n) {
    const char *nm[16];
    size_t k = 0;
    int paren = is_op(cur(p), "(");
    if (paren) adv(p);
    for (;;) {
        if (cur(p)->type != T_NAME) return perr(p, cur(p)->line, "%s", "expected a variable name");
        if (k == 16) return perr(p, cur(p)->line, "%s", "too many names");
        if (!(nm[k++] = name_dup(p, cur(p)))) return OOM();
        adv(p);
        if (!is_op(cur(p), ",")) break;
        adv(p);
    }
    if (paren) TRY(expect_op(p, ")"));
    if (!(n->names = jarena_alloc(p->ar, k * sizeof *n->names))) return OOM();
    memcpy(n->names, nm, k * sizeof *nm);
    n->nnames = k;
    return 0;
}

static int parse_stmt(ps *p, jnode **out) {
    tok *t = cur(p);
    int line = t->line;
    if (t->type != T_NAME) return perr(p, line, "%s", "expected a statement name after '{%'");
    jnode *n = NULL;
    if (is_name(t, "if") || is_name(t, "elif")) {
        adv(p);
        if (!(n = mk(p, N_IF, line))) return OOM();
        TRY(parse_expr(p, &n->a));
        TRY(expect_block_end(p));
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        TRY(parse_body(p, ends, "if", line, &n->b));
        if (is_name(cur(p), "elif")) {
            TRY(parse_stmt(p, &n->c)); /* consumes through endif */
            *out = n;
            return 0;
        }
        if (is_name(cur(p), "else")) {
            adv(p);
            TRY(expect_block_end(p));
            static const char *const e2[] = {"endif", NULL};
            TRY(parse_body(p, e2, "if", line, &n->c));
        }
        adv(p); /* endif */
        TRY(expect_block_end(p));
    } else if (is_name(t, "for")) {
        adv(p);
        if (!(n = mk(p, N_FOR, line))) return OOM();
        TRY(parse_names(p, n));
        if (!is_name(cur(p), "in")) return perr(p, line, "%s", "expected 'in' in a for loop");
        adv(p);
        TRY(parse_or(p, &n->a));
        if (is_name(cur(p), "if")) {
            adv(p);
            TRY(parse_expr(p, &n->d));
        }
        if (is_name(cur(p), "recursive")) return perr(p, line, "%s", "recursive loops are not supported");
        TRY(expect_block_end(p));
        static const char *const ends[] = {"else", "endfor", NULL};
        TRY(parse_body(p, ends, "for", line, &n->b));
        if (is_name(cur(p), "else")) {
            adv(p);
            TRY(expect_block_end(p));
            static const char *const e2[] = {"endfor", NULL};
            TRY(parse_body(p, e2, "for", line, &n->c));
        }
        adv(p);
        TRY(expect_block_end(p));
    } else if (is_name(t, "set")) {
        adv(p);
        if (cur(p)->type != T_NAME) return perr(p, line, "%s", "expected a name after 'set'");
        if (!(n = mk(p, N_SET, line))) return OOM();
        if (p->pos + 1 < p->nt && is_op(&p->t[p->pos + 1], ".")) {
            if (!(n->s = name_dup(p, cur(p)))) return OOM();
            adv(p);
            adv(p);
            if (cur(p)->type != T_NAME) return perr(p, line, "%s", "expected an attribute name after '.'");
            if (!(n->s2 = name_dup(p, cur(p)))) return OOM();
            adv(p);
        } else {
            TRY(parse_names(p, n));
            n->s = n->names[0];
        }
        if (cur(p)->type == T_BLOCK_END && !n->s2 && n->nnames == 1) {
            n->kind = N_SETBLOCK;
            adv(p);
            static const char *const ends[] = {"endset", NULL};
            TRY(parse_body(p, ends, "set", line, &n->b));
            adv(p);
            TRY(expect_block_end(p));
        } else {
            TRY(expect_op(p, "="));
            TRY(parse_expr(p, &n->a));
            if (is_op(cur(p), ",")) { /* set a, b = x, y */
                nlist l = {0};
                TRY(nl_push(p, &l, n->a, NULL));
                int rc = 0;
                while (!rc && is_op(cur(p), ",")) {
                    adv(p);
                    jnode *x;
                    if (!(rc = parse_expr(p, &x))) rc = nl_push(p, &l, x, NULL);
                }
                if (rc) {
                    free(l.v);
                    free(l.kw);
                    return rc;
                }
                jnode *tu = mk(p, N_TUPLE, line);
                if (!tu) return OOM();
                TRY(nl_done(p, &l, tu));
                n->a = tu;
            }
            TRY(expect_block_end(p));
        }
    } else if (is_name(t, "macro")) {
        adv(p);
        if (cur(p)->type != T_NAME) return perr(p, line, "%s", "expected a macro name");
        if (!(n = mk(p, N_MACRO, line)) || !(n->s = name_dup(p, cur(p)))) return OOM();
        adv(p);
        TRY(expect_op(p, "("));
        nlist l = {0};
        const char *nm[32];
        size_t k = 0;
        while (!is_op(cur(p), ")")) {
            if (cur(p)->type != T_NAME || k == 32) {
                free(l.v);
                free(l.kw);
                return perr(p, line, "%s", "bad macro parameter list");
            }
            if (!(nm[k++] = name_dup(p, cur(p)))) return OOM();
            adv(p);
            jnode *def = NULL;
            int rc = 0;
            if (is_op(cur(p), "=")) {
                adv(p);
                rc = parse_expr(p, &def);
            }
            if (rc || (rc = nl_push(p, &l, def, NULL))) {
                free(l.v);
                free(l.kw);
                return rc;
            }
            if (!is_op(cur(p), ",")) break;
            adv(p);
        }
        TRY(nl_done(p, &l, n));
        TRY(expect_op(p, ")"));
        if (k && !(n->names = jarena_alloc(p->ar, k * sizeof *n->names))) return OOM();
        if (k) memcpy(n->names, nm, k * sizeof *nm);
        n->nnames = k;
        TRY(expect_block_end(p));
        static const char *const ends[] = {"endmacro", NULL};
        TRY(parse_body(p, ends, "macro", line, &n->b));
        adv(p);
        TRY(expect_block_end(p));
    } else if (is_name(t, "break") || is_name(t, "continue")) {
        if (!(n = mk(p, is_name(t, "break") ? N_BREAK : N_CONTINUE, line))) return OOM();
        adv(p);
        TRY(expect_block_end(p));
    } else if (is_name(t, "generation")) {
        /* transformers' marker of assistant text for masks: its body renders as is */
        adv(p);
        TRY(expect_block_end(p));
        static const char *const ends[] = {"endgeneration", NULL};
        TRY(parse_body(p, ends, "generation", line, &n));
        adv(p);
        TRY(expect_block_end(p));
    } else {
        char nm[40];
        snprintf(nm, sizeof nm, "%.*s", (int)(t->n < 32 ? t->n : 32), t->s);
        return perr(p, line, "unknown or unsupported statement '%s'", nm);
    }
    *out = n;
    return 0;
}

static int parse_body(ps *p, const char *const *ends, const char *what, int open_line, jnode **out) {
    TRY(enter(p));
    jnode *body = mk(p, N_BODY, cur(p)->line);
    if (!body) return OOM();
    nlist l = {0};
    int rc = 0;
    for (;;) {
        tok *t = cur(p);
        jnode *n = NULL;
        if (t->type == T_EOF) {
            if (ends) {
                char m[80];
                snprintf(m, sizeof m, "'%s' opened on line %d is never closed", what, open_line);
                rc = perr(p, t->line, "%s", m);
            }
            break;
        }
        if (t->type == T_DATA) {
            if (!(n = mk(p, N_TEXT, t->line))) {
                rc = OOM();
                break;
            }
            n->s = t->s;
            n->slen = t->n;
            adv(p);
        } else if (t->type == T_VAR_BEGIN) {
            adv(p);
            if (!(n = mk(p, N_OUT, t->line))) {
                rc = OOM();
                break;
            }
            if ((rc = parse_expr(p, &n->a))) break;
            if (cur(p)->type != T_VAR_END) {
                rc = perr(p, cur(p)->line, "expected '}}', got %s", tok_desc(cur(p)));
                break;
            }
            adv(p);
        } else if (t->type == T_BLOCK_BEGIN) {
            adv(p);
            int stop = 0;
            for (size_t k = 0; ends && ends[k]; k++) stop |= is_name(cur(p), ends[k]);
            if (stop) break;
            static const char *const closers[] = {"endif", "endfor", "elif", "else", "endset", "endmacro", "endgeneration", NULL};
            for (size_t k = 0; closers[k]; k++)
                if (is_name(cur(p), closers[k])) {
                    rc = perr(p, cur(p)->line, "unexpected '%s'", closers[k]);
                    break;
                }
            if (rc || (rc = parse_stmt(p, &n))) break;
        } else {
            rc = perr(p, t->line, "unexpected %s", tok_desc(t));
            break;
        }
        if ((rc = nl_push(p, &l, n, NULL))) break;
    }
    int rc2 = nl_done(p, &l, body);
    if (rc || rc2) return rc ? rc : rc2;
    p->depth--;
    *out = body;
    return 0;
}

int jinja_compile(const char *src, size_t len, jinja_tmpl **out, core_err *err) {
    *out = NULL;
    jinja_tmpl *t = calloc(1, sizeof *t);
    if (!t) return core_errf(err, CORE_ENOMEM, "out of memory");
    ps p = {.ar = &t->arena, .err = err, .src = src ? src : "", .len = src ? len : 0};
    int rc = lex(&p);
    if (!rc) rc = parse_body(&p, NULL, NULL, 0, &t->root);
    free(p.t);
    if (rc) {
        jinja_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void jinja_free(jinja_tmpl *t) {
    if (!t) return;
    jarena_free(&t->arena);
    free(t);
}
