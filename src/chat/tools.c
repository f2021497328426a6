/* tools.c -- tool descriptions for the template, and the model's tool calls.
 *
 * chat_tools_repr: the template prints each tool with Jinja's `| string`,
 * which is Python's repr() of the dict ({'name': 'f', 'ok': True}). The
 * callers hold JSON text, so this file reads JSON (a small recursive
 * descent, strict RFC 8259, depth-limited) and writes repr text directly;
 * the module stays free of any JSON library. Object keys keep their order
 * (Python dicts do too).
 *
 * chat_calls: a stream parser that takes answer text and separates the
 * "<tool_call>...</tool_call>" blocks from the rest, holding back bytes
 * that may start a tag until the next push decides (as chat_think does).
 * What is inside a block is handed out raw; JSON parsing is the caller's.
 * Llama 3.x writes no tags: a call is a bare JSON object that is the whole
 * answer. That form is found by balancing braces (outside strings), so an
 * answer that opens with '{' is held until its object closes; whether the
 * object is a call is again the caller's decision (CHAT_CALLS_REJECT).
 */
#include "chat/chat.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Python repr ----------------------------------------------------------- */

/* Python repr of a str: single quotes unless the text has ' and no ". */
static int pyrepr_str(core_buf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    if (core_buf_append(b, &q, 1)) return CORE_ENOMEM;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        int l = core_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        int rc = 0;
        if (l <= 0) {
            rc = core_buf_printf(b, "\\x%02x", c);
            l = 1;
        } else if (cp == '\\' || cp == (uint32_t)q) {
            rc = core_buf_printf(b, "\\%c", (char)cp);
        } else if (cp == '\n') {
            rc = core_buf_puts(b, "\\n");
        } else if (cp == '\r') {
            rc = core_buf_puts(b, "\\r");
        } else if (cp == '\t') {
            rc = core_buf_puts(b, "\\t");
        } else if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) {
            rc = core_buf_printf(b, "\\x%02x", cp);
        } else if ((cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
                   (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 || cp == 0xfeff || cp == 0x1680) {
            /* Unicode separators and format characters: not printable for Python */
            rc = core_buf_printf(b, "\\u%04x", cp);
        } else {
            rc = core_buf_append(b, s + i, (size_t)l);
        }
        if (rc) return CORE_ENOMEM;
        i += (size_t)l;
    }
    return core_buf_append(b, &q, 1);
}

/* Python repr of a float: the shortest digits that round-trip, in fixed
 * notation for exponents in [-4, 16), else scientific (1e-05, 1.5e+16). */
static int pyrepr_real(core_buf *b, double v) {
    if (isnan(v)) return core_buf_puts(b, "nan");
    if (isinf(v)) return core_buf_puts(b, v < 0 ? "-inf" : "inf");
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    char digits[24];
    size_t nd = 0;
    const char *p = tmp;
    int neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.' && nd < sizeof digits - 1) digits[nd++] = *p;
    int ex = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    if (neg && core_buf_puts(b, "-")) return CORE_ENOMEM;
    if (ex < -4 || ex >= 16) {
        if (core_buf_append(b, digits, 1)) return CORE_ENOMEM;
        if (nd > 1 && core_buf_printf(b, ".%s", digits + 1)) return CORE_ENOMEM;
        return core_buf_printf(b, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    if (ex < 0) {
        if (core_buf_puts(b, "0.")) return CORE_ENOMEM;
        for (int i = 0; i < -ex - 1; i++)
            if (core_buf_puts(b, "0")) return CORE_ENOMEM;
        return core_buf_puts(b, digits);
    }
    for (int i = 0; i <= ex; i++)
        if (core_buf_append(b, (size_t)i < nd ? &digits[i] : "0", 1)) return CORE_ENOMEM;
    if ((size_t)ex + 1 < nd) return core_buf_printf(b, ".%s", digits + ex + 1);
    return core_buf_puts(b, ".0");
}

typedef struct jr {
    const char *s;
    size_t n, i;
    int depth;
    core_buf str; /* a decoded string, reused */
} jr;

enum { JR_MAX_DEPTH = 64 };

static void jr_ws(jr *r) {
    while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' || r->s[r->i] == '\r'))
        r->i++;
}

static int hex4(const char *s, uint32_t *v) {
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

static int put_cp(core_buf *b, uint32_t cp) {
    char u[4];
    size_t l;
    if (cp < 0x80) u[0] = (char)cp, l = 1;
    else if (cp < 0x800) u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), l = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[2] = (char)(0x80 | (cp & 0x3f)), l = 3;
    else
        u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), l = 4;
    return core_buf_append(b, u, l);
}

/* A JSON string at r->i (the opening quote) decoded into r->str. */
static int jr_string(jr *r) {
    core_buf_clear(&r->str);
    if (core_buf_reserve(&r->str, 0)) return CORE_ENOMEM;
    r->i++;
    while (r->i < r->n) {
        unsigned char c = (unsigned char)r->s[r->i];
        if (c == '"') {
            r->i++;
            return core_utf8_valid(r->str.data, r->str.len) ? 0 : CORE_EINVAL;
        }
        if (c < 0x20) return CORE_EINVAL;
        if (c != '\\') {
            if (core_buf_append(&r->str, (const char *)&c, 1)) return CORE_ENOMEM;
            r->i++;
            continue;
        }
        if (r->i + 1 >= r->n) return CORE_EINVAL;
        char e = r->s[r->i + 1], o;
        r->i += 2;
        switch (e) {
        case '"': o = '"'; break;
        case '\\': o = '\\'; break;
        case '/': o = '/'; break;
        case 'b': o = '\b'; break;
        case 'f': o = '\f'; break;
        case 'n': o = '\n'; break;
        case 'r': o = '\r'; break;
        case 't': o = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (r->i + 4 > r->n || hex4(r->s + r->i, &cp)) return CORE_EINVAL;
            r->i += 4;
            if (cp >= 0xd800 && cp < 0xdc00) {
                if (r->i + 6 > r->n || r->s[r->i] != '\\' || r->s[r->i + 1] != 'u' || hex4(r->s + r->i + 2, &lo) ||
                    lo < 0xdc00 || lo > 0xdfff)
                    return CORE_EINVAL;
                r->i += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return CORE_EINVAL;
            }
            if (put_cp(&r->str, cp)) return CORE_ENOMEM;
            continue;
        }
        default: return CORE_EINVAL;
        }
        if (core_buf_append(&r->str, &o, 1)) return CORE_ENOMEM;
    }
    return CORE_EINVAL;
}

static int jr_number(jr *r, core_buf *out) {
    size_t st = r->i;
    int real = 0;
    if (r->i < r->n && r->s[r->i] == '-') r->i++;
    if (r->i >= r->n) return CORE_EINVAL;
    if (r->s[r->i] == '0') r->i++;
    else if (r->s[r->i] >= '1' && r->s[r->i] <= '9')
        while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9') r->i++;
    else return CORE_EINVAL;
    if (r->i < r->n && r->s[r->i] == '.') {
        real = 1;
        r->i++;
        size_t d = r->i;
        while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9') r->i++;
        if (r->i == d) return CORE_EINVAL;
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        real = 1;
        r->i++;
        if (r->i < r->n && (r->s[r->i] == '+' || r->s[r->i] == '-')) r->i++;
        size_t d = r->i;
        while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9') r->i++;
        if (r->i == d) return CORE_EINVAL;
    }
    size_t len = r->i - st;
    char tmp[64];
    if (!real) { /* Python ints are exact: the digits as written, but -0 is 0 */
        if (len == 2 && r->s[st] == '-' && r->s[st + 1] == '0') return core_buf_puts(out, "0");
        return core_buf_append(out, r->s + st, len);
    }
    if (len >= sizeof tmp) return CORE_EINVAL;
    memcpy(tmp, r->s + st, len);
    tmp[len] = 0;
    return pyrepr_real(out, strtod(tmp, NULL));
}

static int lit(jr *r, const char *w) {
    size_t l = strlen(w);
    if (r->n - r->i < l || memcmp(r->s + r->i, w, l)) return 0;
    r->i += l;
    return 1;
}

static int jr_value(jr *r, core_buf *out) {
    int rc;
    jr_ws(r);
    if (r->i >= r->n) return CORE_EINVAL;
    char c = r->s[r->i];
    if (c == '{' || c == '[') {
        if (++r->depth > JR_MAX_DEPTH) return CORE_EINVAL;
        char close = c == '{' ? '}' : ']';
        r->i++;
        if (core_buf_append(out, &c, 1)) return CORE_ENOMEM;
        jr_ws(r);
        if (r->i < r->n && r->s[r->i] == close) {
            r->i++;
        } else {
            for (;;) {
                if (c == '{') {
                    jr_ws(r);
                    if (r->i >= r->n || r->s[r->i] != '"') return CORE_EINVAL;
                    if ((rc = jr_string(r))) return rc;
                    if (pyrepr_str(out, r->str.data, r->str.len) || core_buf_puts(out, ": ")) return CORE_ENOMEM;
                    jr_ws(r);
                    if (r->i >= r->n || r->s[r->i] != ':') return CORE_EINVAL;
                    r->i++;
                }
                if ((rc = jr_value(r, out))) return rc;
                jr_ws(r);
                if (r->i >= r->n) return CORE_EINVAL;
                if (r->s[r->i] == close) { r->i++; break; }
                if (r->s[r->i] != ',') return CORE_EINVAL;
                r->i++;
                if (core_buf_puts(out, ", ")) return CORE_ENOMEM;
            }
        }
        r->depth--;
        return core_buf_append(out, &close, 1);
    }
    if (c == '"') {
        if ((rc = jr_string(r))) return rc;
        return pyrepr_str(out, r->str.data, r->str.len);
    }
    if (lit(r, "true")) return core_buf_puts(out, "True");
    if (lit(r, "false")) return core_buf_puts(out, "False");
    if (lit(r, "null")) return core_buf_puts(out, "None");
    return jr_number(r, out);
}

int chat_tools_repr(const char *json, size_t len, core_buf *out, core_err *err) {
    jr r = {.s = json, .n = len};
    int rc;
    jr_ws(&r);
    if (r.i < r.n && r.s[r.i] == '[') {
        r.i++;
        jr_ws(&r);
        if (r.i < r.n && r.s[r.i] == ']') {
            r.i++;
            rc = 0;
        } else {
            for (;;) {
                if ((rc = jr_value(&r, out)) || (rc = core_buf_puts(out, "\n"))) break;
                jr_ws(&r);
                if (r.i < r.n && r.s[r.i] == ']') { r.i++; break; }
                if (r.i >= r.n || r.s[r.i] != ',') { rc = CORE_EINVAL; break; }
                r.i++;
            }
        }
    } else { /* one tool, not a list: one line */
        rc = jr_value(&r, out);
        if (!rc) rc = core_buf_puts(out, "\n");
    }
    if (!rc) {
        jr_ws(&r);
        if (r.i != r.n) rc = CORE_EINVAL;
    }
    core_buf_free(&r.str);
    if (rc == CORE_ENOMEM) return core_errf(err, rc, "out of memory");
    if (rc) return core_errf(err, rc, "the tools are not valid JSON (near byte %zu)", r.i);
    return 0;
}

/* ---- tool calls in the answer ------------------------------------------------ */

#define OPEN_TAG "<tool_call>"
#define CLOSE_TAG "</tool_call>"

void chat_calls_init(chat_calls *p) { memset(p, 0, sizeof *p); }

void chat_calls_init_json(chat_calls *p) {
    memset(p, 0, sizeof *p);
    p->json = 1;
}

/* ---- the bare JSON form ---- */

#define PY_TAG "<|python_tag|>"
enum { J_START, J_TAG, J_OBJ, J_SEP, J_PLAIN };

static int is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* Give up on calls: what is held, then the rest, is content. */
static int json_plain(chat_calls *p, core_buf *content) {
    int rc = content && p->block.len ? core_buf_append(content, p->block.data, p->block.len) : 0;
    core_buf_clear(&p->block);
    p->jstate = J_PLAIN;
    return rc ? CORE_ENOMEM : 0;
}

static int json_push(chat_calls *p, const char *s, size_t n, core_buf *content, chat_calls_fn on_call, void *ctx) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        switch (p->jstate) {
        case J_PLAIN:
            return content && core_buf_append(content, s + i, n - i) ? CORE_ENOMEM : 0;
        case J_START:
        case J_SEP:
            if (is_ws(c) || (c == ';' && p->jstate == J_SEP)) break;
            if (c == '<' && p->jstate == J_START && !p->tag_seen) {
                p->jstate = J_TAG, p->tag_i = 1;
                break;
            }
            if (c == '{') {
                p->obj_off = p->block.len;
                p->jstate = J_OBJ, p->depth = 1, p->in_str = 0, p->esc = 0;
                break;
            }
            if (json_plain(p, content)) return CORE_ENOMEM;
            i--; /* this byte again, as content */
            continue;
        case J_TAG:
            if (c != PY_TAG[p->tag_i]) {
                if (json_plain(p, content)) return CORE_ENOMEM;
                i--;
                continue;
            }
            if (++p->tag_i == (int)sizeof PY_TAG - 1) p->jstate = J_START, p->tag_seen = 1;
            break;
        case J_OBJ:
            if (p->in_str) {
                if (p->esc) p->esc = 0;
                else if (c == '\\') p->esc = 1;
                else if (c == '"') p->in_str = 0;
            } else if (c == '"') {
                p->in_str = 1;
            } else if (c == '{' || c == '[') {
                p->depth++;
            } else if (c == '}' || c == ']') {
                p->depth--;
            }
            break;
        }
        if (core_buf_append(&p->block, &c, 1)) return CORE_ENOMEM;
        if (p->jstate == J_OBJ && p->depth == 0) { /* the object closed: a call? */
            const char *obj = p->block.data + p->obj_off;
            int rc = on_call ? on_call(ctx, obj, p->block.len - p->obj_off, 1) : CHAT_CALLS_REJECT;
            if (rc == CHAT_CALLS_REJECT) {
                if (json_plain(p, content)) return CORE_ENOMEM;
                continue;
            }
            if (rc) return rc;
            p->n_calls++;
            core_buf_clear(&p->block);
            p->jstate = J_SEP;
        }
    }
    return 0;
}

static int json_finish(chat_calls *p, core_buf *content) {
    /* separators after the last call are not content; anything else held is */
    if (p->jstate == J_SEP) core_buf_clear(&p->block);
    int rc = json_plain(p, content);
    return rc;
}

void chat_calls_free(chat_calls *p) {
    if (!p) return;
    core_buf_free(&p->block);
    memset(p, 0, sizeof *p);
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of tag. */
static size_t partial_tag(const char *s, size_t n, const char *tag) {
    size_t t = strlen(tag);
    for (size_t k = n < t - 1 ? n : t - 1; k > 0; k--)
        if (!memcmp(s + n - k, tag, k)) return k;
    return 0;
}

int chat_calls_push(chat_calls *p, const char *text, size_t len, core_buf *content, chat_calls_fn on_call,
                    void *ctx) {
    if (p->json) return json_push(p, text, len, content, on_call, ctx);
    /* The held bytes and the new text, scanned as one string. */
    core_buf tmp = {0};
    const char *s = text;
    size_t n = len;
    if (p->hold_len) {
        if (core_buf_append(&tmp, p->hold, p->hold_len) || core_buf_append(&tmp, text, len)) {
            core_buf_free(&tmp);
            return CORE_ENOMEM;
        }
        s = tmp.data;
        n = tmp.len;
        p->hold_len = 0;
    }
    int rc = 0;
    size_t i = 0;
    while (i < n && !rc) {
        if (!p->in_call) {
            const char *o = memmem(s + i, n - i, OPEN_TAG, sizeof OPEN_TAG - 1);
            size_t run = o ? (size_t)(o - (s + i)) : n - i;
            size_t keep = o ? 0 : partial_tag(s + i, run, OPEN_TAG);
            if (content && core_buf_append(content, s + i, run - keep)) rc = CORE_ENOMEM;
            if (!o) {
                memcpy(p->hold, s + n - keep, keep);
                p->hold_len = keep;
                break;
            }
            i += run + sizeof OPEN_TAG - 1;
            p->in_call = 1;
            p->n_calls++;
            core_buf_clear(&p->block);
        } else {
            const char *c = memmem(s + i, n - i, CLOSE_TAG, sizeof CLOSE_TAG - 1);
            size_t run = c ? (size_t)(c - (s + i)) : n - i;
            size_t keep = c ? 0 : partial_tag(s + i, run, CLOSE_TAG);
            if (core_buf_append(&p->block, s + i, run - keep)) rc = CORE_ENOMEM;
            if (!c) {
                memcpy(p->hold, s + n - keep, keep);
                p->hold_len = keep;
                break;
            }
            i += run + sizeof CLOSE_TAG - 1;
            p->in_call = 0;
            if (!rc && on_call) rc = on_call(ctx, p->block.data ? p->block.data : "", p->block.len, 1);
        }
    }
    core_buf_free(&tmp);
    return rc;
}

int chat_calls_finish(chat_calls *p, core_buf *content, chat_calls_fn on_call, void *ctx) {
    if (p->json) return json_finish(p, content);
    int rc = 0;
    if (p->in_call) { /* an unclosed block: what it holds, marked unfinished */
        if (core_buf_append(&p->block, p->hold, p->hold_len)) return CORE_ENOMEM;
        p->in_call = 0;
        if (on_call) rc = on_call(ctx, p->block.data ? p->block.data : "", p->block.len, 0);
    } else if (content && p->hold_len) {
        rc = core_buf_append(content, p->hold, p->hold_len);
    }
    p->hold_len = 0;
    return rc;
}
