/* md.c -- Markdown to safe HTML with md4c's parser and our own writer.
 *
 * Two halves:
 *
 * 1. The writer (struct rend + the md4c callbacks). md4c tells us what it
 *    saw; we decide what HTML comes out. Text is escaped with md_escape_html,
 *    which also escapes quotes, so the same routine serves text and
 *    attributes. Link and image URLs are rebuilt from md4c's attribute pieces
 *    with entities decoded (so "jav&#x61;script:" is seen as what the browser
 *    would see), tabs/newlines removed and leading controls stripped the way
 *    a URL parser does, then checked by md_url_allowed. A refused link keeps
 *    its text without the <a>; a refused image shows its alt text. Code
 *    languages keep only [A-Za-z0-9_+#.-] so a class cannot grow a second
 *    class or break its quotes. No inline style attributes (the page's CSP
 *    forbids them): table alignment is a class.
 *
 * 2. The splitter (struct md_stream). Bytes accumulate in `pend`, the
 *    current unfinished segment. `scan` is how far lines have been looked
 *    at; `line` is where the current line starts. Per line we keep:
 *    whether a split before it is decided, fence state (char, length,
 *    opened at column 0), whether the previous line was blank, and whether
 *    the segment has any non-blank line. Decisions depend only on bytes, never
 *    on where the pushes were cut, and an undecided line (e.g. "12" that may
 *    become "12. item") simply waits for more bytes -- this is why pushing
 *    in 1-byte pieces equals md_render of the whole.
 *
 * Invariants: pend[0..line) are complete lines of the segment; scan >= line;
 * a finished segment's HTML is appended exactly once.
 */
#include "md/md.h"

#include <md4c.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* LaTeX spans: md4c hands "$...$" and "$$...$$" over raw (no escapes
 * processed, so "\\," survives), and the page typesets them. */
#define MD_FLAGS (MD_DIALECT_GITHUB | MD_FLAG_NOHTML | MD_FLAG_LATEXMATHSPANS)
#define MD_MAX_PENDING ((size_t)64 << 20)

/* ---- escaping ------------------------------------------------------- */

int md_escape_html(const char *s, size_t n, core_buf *out) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* p[run..i) is safe and not yet copied */
    while (i < n) {
        unsigned char c = p[i];
        const char *esc = NULL;
        size_t adv = 1;
        if (c < 0x80) {
            switch (c) {
            case '&': esc = "&amp;"; break;
            case '<': esc = "&lt;"; break;
            case '>': esc = "&gt;"; break;
            case '"': esc = "&quot;"; break;
            case '\'': esc = "&#39;"; break;
            case 0: esc = CORE_UTF8_REPL; break;
            default: i++; continue;
            }
        } else {
            int ok; /* core's one sanitizer, a step at a time (escaping is interleaved) */
            adv = core_utf8_step(s + i, n - i, &ok);
            if (ok == 1) { i += adv; continue; }
            esc = CORE_UTF8_REPL; /* one per maximal invalid subpart */
        }
        if (core_buf_append(out, p + run, i - run) < 0 || core_buf_puts(out, esc) < 0) return CORE_ENOMEM;
        i += adv;
        run = i;
    }
    return core_buf_append(out, p + run, n - run) < 0 ? CORE_ENOMEM : 0;
}

/* ---- URLs ----------------------------------------------------------- */

int md_url_allowed(const char *url, size_t n) {
    size_t i = 0;
    unsigned char c0 = n ? (unsigned char)url[0] : 0;
    if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z'))) return 1; /* no scheme */
    while (i < n) {
        unsigned char c = (unsigned char)url[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
            c == '.') {
            i++;
            continue;
        }
        break;
    }
    if (i == n || url[i] != ':') return 1; /* "a/b", "x.html": relative */
    static const char *ok[] = {"http", "https", "mailto"};
    for (size_t k = 0; k < CORE_ARRAY_LEN(ok); k++)
        if (strlen(ok[k]) == i && strncasecmp(url, ok[k], i) == 0) return 1;
    return 0;
}

/* Decode one md4c entity ("&amp;", "&#65;", "&#x41;") into UTF-8 at out.
 * Unknown named entities are copied verbatim (they are [A-Za-z0-9] only). */
static int entity_decode(const char *e, size_t n, core_buf *out) {
    char u[4];
    uint32_t cp = 0;
    if (n >= 4 && e[1] == '#') {
        int hex = (e[2] == 'x' || e[2] == 'X');
        for (size_t i = hex ? 3 : 2; i + 1 < n; i++) {
            char c = e[i];
            uint32_t d = (c >= '0' && c <= '9') ? (uint32_t)(c - '0')
                       : (hex && c >= 'a' && c <= 'f') ? (uint32_t)(c - 'a' + 10)
                       : (hex && c >= 'A' && c <= 'F') ? (uint32_t)(c - 'A' + 10) : 99;
            if (d == 99) break;
            cp = cp * (hex ? 16 : 10) + d;
            if (cp > 0x10FFFF) break;
        }
        if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
        int k = core_utf8_encode(cp, u);
        return core_buf_append(out, u, (size_t)k);
    }
    static const struct { const char *name; uint32_t cp; } named[] = {
        {"amp", '&'},  {"lt", '<'},      {"gt", '>'},    {"quot", '"'}, {"apos", '\''},  {"colon", ':'},
        {"Tab", '\t'}, {"NewLine", '\n'}, {"sol", '/'},   {"nbsp", 0xA0}, {"lpar", '('},  {"rpar", ')'},
        {"period", '.'}, {"num", '#'},   {"quest", '?'}, {"equals", '='}, {"percnt", '%'},
    };
    if (n >= 3)
        for (size_t k = 0; k < CORE_ARRAY_LEN(named); k++)
            if (strlen(named[k].name) == n - 2 && memcmp(e + 1, named[k].name, n - 2) == 0) {
                int len = core_utf8_encode(named[k].cp, u);
                return core_buf_append(out, u, (size_t)len);
            }
    return core_buf_append(out, e, n);
}

/* "&name;" with only ASCII letters and digits in the name. */
static int entity_plain(const char *s, size_t n) {
    if (n < 3 || s[0] != '&' || s[n - 1] != ';') return 0;
    for (size_t i = 1; i + 1 < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) return 0;
    }
    return 1;
}

/* The attribute's text as the browser would see it after HTML decoding. */
static int attr_decode(const MD_ATTRIBUTE *a, core_buf *out) {
    core_buf_clear(out);
    if (core_buf_reserve(out, a->size) < 0) return CORE_ENOMEM;
    for (int i = 0; a->substr_offsets[i] < a->size; i++) {
        const char *p = a->text + a->substr_offsets[i];
        size_t n = a->substr_offsets[i + 1] - a->substr_offsets[i];
        int rc;
        if (a->substr_types[i] == MD_TEXT_ENTITY) rc = entity_decode(p, n, out);
        else if (a->substr_types[i] == MD_TEXT_NULLCHAR) rc = core_buf_puts(out, "\xef\xbf\xbd");
        else rc = core_buf_append(out, p, n);
        if (rc < 0) return CORE_ENOMEM;
    }
    return 0;
}

/* Normalize like the WHATWG URL parser: drop tab/LF/CR anywhere, strip
 * leading and trailing C0 controls and spaces. In place on b. */
static void url_normalize(core_buf *b) {
    size_t w = 0;
    for (size_t r = 0; r < b->len; r++) {
        char c = b->data[r];
        if (c == '\t' || c == '\n' || c == '\r') continue;
        b->data[w++] = c;
    }
    size_t a = 0;
    while (a < w && (unsigned char)b->data[a] <= 0x20) a++;
    while (w > a && (unsigned char)b->data[w - 1] <= 0x20) w--;
    memmove(b->data, b->data + a, w - a);
    b->len = w - a;
    if (b->cap) b->data[b->len] = 0;
}

/* ---- the writer ----------------------------------------------------- */

typedef struct rend {
    core_buf *out;
    core_buf tmp;      /* scratch for decoded attributes */
    int img_depth;     /* >0: inside an image's alt text */
    int img_ok;        /* outermost image was accepted (alt goes in an attribute) */
    unsigned a_depth;  /* link nesting; a_ok holds one bit per level */
    uint64_t a_ok;
    int err;
} rend;

static int put(rend *r, const char *s) {
    if (core_buf_puts(r->out, s) < 0) r->err = CORE_ENOMEM;
    return r->err;
}
static int esc(rend *r, const char *s, size_t n) {
    if (md_escape_html(s, n, r->out) < 0) r->err = CORE_ENOMEM;
    return r->err;
}

/* Decode, normalize and check a URL attribute; on success r->tmp holds it. */
static int url_ok(rend *r, const MD_ATTRIBUTE *a) {
    if (attr_decode(a, &r->tmp) < 0) { r->err = CORE_ENOMEM; return 0; }
    url_normalize(&r->tmp);
    return md_url_allowed(r->tmp.data ? r->tmp.data : "", r->tmp.len);
}

static void put_title(rend *r, const MD_ATTRIBUTE *t) {
    if (!t->text || t->size == 0) return;
    if (attr_decode(t, &r->tmp) < 0) { r->err = CORE_ENOMEM; return; }
    put(r, " title=\"");
    esc(r, r->tmp.data, r->tmp.len);
    put(r, "\"");
}

static int enter_block(MD_BLOCKTYPE type, void *detail, void *ud) {
    rend *r = ud;
    char tag[64];
    switch (type) {
    case MD_BLOCK_DOC: break;
    case MD_BLOCK_QUOTE: put(r, "<blockquote>\n"); break;
    case MD_BLOCK_UL: put(r, "<ul>\n"); break;
    case MD_BLOCK_OL: {
        const MD_BLOCK_OL_DETAIL *d = detail;
        if (d->start == 1) put(r, "<ol>\n");
        else { snprintf(tag, sizeof tag, "<ol start=\"%u\">\n", d->start); put(r, tag); }
        break;
    }
    case MD_BLOCK_LI: {
        const MD_BLOCK_LI_DETAIL *d = detail;
        if (d->is_task)
            put(r, (d->task_mark == 'x' || d->task_mark == 'X')
                       ? "<li class=\"task\"><input type=\"checkbox\" disabled checked> "
                       : "<li class=\"task\"><input type=\"checkbox\" disabled> ");
        else put(r, "<li>");
        break;
    }
    case MD_BLOCK_HR: put(r, "<hr>\n"); break;
    case MD_BLOCK_H: {
        const MD_BLOCK_H_DETAIL *d = detail;
        snprintf(tag, sizeof tag, "<h%u>", d->level >= 1 && d->level <= 6 ? d->level : 6);
        put(r, tag);
        break;
    }
    case MD_BLOCK_CODE: {
        const MD_BLOCK_CODE_DETAIL *d = detail;
        /* The language, reduced to a safe token (also used as a label). */
        char lang[33];
        size_t n = 0;
        if (d->lang.text && d->lang.size) {
            if (attr_decode(&d->lang, &r->tmp) < 0) { r->err = CORE_ENOMEM; break; }
            for (size_t i = 0; i < r->tmp.len && n < sizeof lang - 1; i++) {
                char c = r->tmp.data[i];
                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '+' || c == '#' || c == '.' || c == '-')
                    lang[n++] = c;
                else break;
            }
        }
        lang[n] = 0;
        put(r, "<div class=\"code\"><div class=\"code-head\"><span class=\"code-lang\">");
        put(r, n ? lang : "text");
        put(r, "</span><button type=\"button\" class=\"copy\" data-copy=\"code\" aria-label=\"Copy code\">Copy</button>"
               "</div><pre><code");
        if (n) { put(r, " class=\"language-"); put(r, lang); put(r, "\""); }
        put(r, ">");
        break;
    }
    case MD_BLOCK_HTML: break; /* not produced with MD_FLAG_NOHTML */
    case MD_BLOCK_P: put(r, "<p>"); break;
    case MD_BLOCK_TABLE: put(r, "<div class=\"table\"><table>\n"); break;
    case MD_BLOCK_THEAD: put(r, "<thead>\n"); break;
    case MD_BLOCK_TBODY: put(r, "<tbody>\n"); break;
    case MD_BLOCK_TR: put(r, "<tr>"); break;
    case MD_BLOCK_TH:
    case MD_BLOCK_TD: {
        const MD_BLOCK_TD_DETAIL *d = detail;
        const char *t = type == MD_BLOCK_TH ? "th" : "td";
        const char *al = d->align == MD_ALIGN_LEFT     ? " class=\"al-left\""
                       : d->align == MD_ALIGN_CENTER ? " class=\"al-center\""
                       : d->align == MD_ALIGN_RIGHT  ? " class=\"al-right\"" : "";
        snprintf(tag, sizeof tag, "<%s%s>", t, al);
        put(r, tag);
        break;
    }
    }
    return r->err;
}

static int leave_block(MD_BLOCKTYPE type, void *detail, void *ud) {
    rend *r = ud;
    char tag[16];
    switch (type) {
    case MD_BLOCK_DOC: break;
    case MD_BLOCK_QUOTE: put(r, "</blockquote>\n"); break;
    case MD_BLOCK_UL: put(r, "</ul>\n"); break;
    case MD_BLOCK_OL: put(r, "</ol>\n"); break;
    case MD_BLOCK_LI: put(r, "</li>\n"); break;
    case MD_BLOCK_HR: break;
    case MD_BLOCK_H: {
        const MD_BLOCK_H_DETAIL *d = detail;
        snprintf(tag, sizeof tag, "</h%u>\n", d->level >= 1 && d->level <= 6 ? d->level : 6);
        put(r, tag);
        break;
    }
    case MD_BLOCK_CODE: put(r, "</code></pre></div>\n"); break;
    case MD_BLOCK_HTML: break;
    case MD_BLOCK_P: put(r, "</p>\n"); break;
    case MD_BLOCK_TABLE: put(r, "</table></div>\n"); break;
    case MD_BLOCK_THEAD: put(r, "</thead>\n"); break;
    case MD_BLOCK_TBODY: put(r, "</tbody>\n"); break;
    case MD_BLOCK_TR: put(r, "</tr>\n"); break;
    case MD_BLOCK_TH: put(r, "</th>"); break;
    case MD_BLOCK_TD: put(r, "</td>"); break;
    }
    return r->err;
}

static int enter_span(MD_SPANTYPE type, void *detail, void *ud) {
    rend *r = ud;
    if (type == MD_SPAN_IMG) {
        if (r->img_depth++ == 0) {
            const MD_SPAN_IMG_DETAIL *d = detail;
            r->img_ok = url_ok(r, &d->src);
            if (r->img_ok) {
                put(r, "<img src=\"");
                esc(r, r->tmp.data, r->tmp.len);
                put(r, "\" alt=\"");
            }
        }
        return r->err;
    }
    if (type == MD_SPAN_A) {
        int ok = r->img_depth == 0 && url_ok(r, &((const MD_SPAN_A_DETAIL *)detail)->href);
        if (r->a_depth >= 64) ok = 0; /* deeper than we track: plain text */
        else if (ok) r->a_ok |= (uint64_t)1 << r->a_depth;
        else r->a_ok &= ~((uint64_t)1 << r->a_depth);
        r->a_depth++;
        if (ok) {
            const MD_SPAN_A_DETAIL *d = detail;
            put(r, "<a href=\"");
            esc(r, r->tmp.data, r->tmp.len);
            put(r, "\"");
            put_title(r, &d->title);
            put(r, " rel=\"noopener noreferrer nofollow\" target=\"_blank\">");
        }
        return r->err;
    }
    if (r->img_depth > 0) return 0; /* alt text is plain */
    switch (type) {
    case MD_SPAN_EM: put(r, "<em>"); break;
    case MD_SPAN_STRONG: put(r, "<strong>"); break;
    case MD_SPAN_CODE: put(r, "<code>"); break;
    case MD_SPAN_DEL: put(r, "<del>"); break;
    case MD_SPAN_U: put(r, "<u>"); break;
    case MD_SPAN_LATEXMATH: put(r, "<span class=\"math\">"); break;
    case MD_SPAN_LATEXMATH_DISPLAY: put(r, "<span class=\"math display\">"); break;
    default: break; /* latex/wikilinks are not enabled */
    }
    return r->err;
}

static int leave_span(MD_SPANTYPE type, void *detail, void *ud) {
    rend *r = ud;
    if (type == MD_SPAN_IMG) {
        if (--r->img_depth == 0 && r->img_ok) {
            put(r, "\"");
            put_title(r, &((const MD_SPAN_IMG_DETAIL *)detail)->title);
            put(r, " loading=\"lazy\">");
        }
        return r->err;
    }
    if (type == MD_SPAN_A) {
        r->a_depth--;
        if (r->a_depth < 64 && (r->a_ok >> r->a_depth & 1)) put(r, "</a>");
        return r->err;
    }
    if (r->img_depth > 0) return 0;
    switch (type) {
    case MD_SPAN_EM: put(r, "</em>"); break;
    case MD_SPAN_STRONG: put(r, "</strong>"); break;
    case MD_SPAN_CODE: put(r, "</code>"); break;
    case MD_SPAN_DEL: put(r, "</del>"); break;
    case MD_SPAN_U: put(r, "</u>"); break;
    case MD_SPAN_LATEXMATH:
    case MD_SPAN_LATEXMATH_DISPLAY: put(r, "</span>"); break;
    default: break;
    }
    return r->err;
}

static int text(MD_TEXTTYPE type, const MD_CHAR *s, MD_SIZE n, void *ud) {
    rend *r = ud;
    switch (type) {
    case MD_TEXT_NULLCHAR: put(r, "\xef\xbf\xbd"); break;
    case MD_TEXT_BR: put(r, r->img_depth ? " " : "<br>\n"); break;
    case MD_TEXT_SOFTBR: put(r, r->img_depth ? " " : "\n"); break;
    case MD_TEXT_ENTITY:
        /* Decode then escape, so the browser sees exactly that character.
         * An unknown named entity ("&eacute;") comes back verbatim; md4c only
         * reports /&[A-Za-z][A-Za-z0-9]*;/ so it is safe to leave it for the
         * browser, which knows all the names. */
        core_buf_clear(&r->tmp);
        if (entity_decode(s, n, &r->tmp) < 0) { r->err = CORE_ENOMEM; break; }
        if (n > 2 && s[1] != '#' && r->tmp.len == n && memcmp(r->tmp.data, s, n) == 0 && entity_plain(s, n)) {
            if (core_buf_append(r->out, s, n) < 0) r->err = CORE_ENOMEM;
        } else {
            esc(r, r->tmp.data, r->tmp.len);
        }
        break;
    default: esc(r, s, n); break; /* normal, code, (escaped) html */
    }
    return r->err;
}

static int render_segment_raw(const char *md, size_t len, core_buf *out);

/* The other LaTeX delimiters, "\\(...\\)" and "\\[...\\]", would lose their
 * backslash as Markdown escapes: spell them "$...$" and "$$...$$" (md4c's
 * math spans) before parsing. Only a pair closed within the segment, never
 * inside a code span or fenced or indented code; escaped backslashes stay.
 * 1 and *out filled when something changed, 0 when md is to be used as is,
 * -1 out of memory. */
static int latex_delims(const char *md, size_t len, core_buf *out) {
    size_t i = 0, line0 = 1;
    int changed = 0, fence = 0;
    if (len >= 4 && (md[0] == '\t' || !memcmp(md, "    ", 4))) return 0; /* indented code */
    while (i < len) {
        if (line0) { /* a fence line opens or closes code: copy the line */
            size_t k = i;
            while (k < len && k - i < 3 && md[k] == ' ') k++;
            int is_fence = k + 2 < len && (md[k] == '`' || md[k] == '~') && md[k + 1] == md[k] && md[k + 2] == md[k];
            if (is_fence) fence = !fence;
            if (is_fence || fence) {
                const char *nl = memchr(md + i, '\n', len - i);
                size_t e = nl ? (size_t)(nl - md) + 1 : len;
                if (core_buf_append(out, md + i, e - i) < 0) return -1;
                i = e;
                continue;
            }
        }
        char c = md[i];
        line0 = c == '\n';
        if (c == '`') { /* a code span: up to the same run of backticks */
            size_t run = 0;
            while (i + run < len && md[i + run] == '`') run++;
            size_t j = i + run, end = len;
            while (j < len) {
                if (md[j] != '`') { j++; continue; }
                size_t r2 = 0;
                while (j + r2 < len && md[j + r2] == '`') r2++;
                if (r2 == run) { end = j + r2; break; }
                j += r2;
            }
            if (end == len && j >= len) end = i + run; /* unclosed: just the backticks */
            if (core_buf_append(out, md + i, end - i) < 0) return -1;
            i = end;
            continue;
        }
        if (c == '\\' && i + 1 < len && (md[i + 1] == '(' || md[i + 1] == '[')) {
            const char *close = md[i + 1] == '(' ? "\\)" : "\\]", *dollars = md[i + 1] == '(' ? "$" : "$$";
            size_t j = i + 2;
            while (j + 1 < len && !(md[j] == close[0] && md[j + 1] == close[1])) j += md[j] == '\\' ? 2 : 1;
            if (j + 1 < len) {
                size_t a = i + 2, b = j; /* md4c wants no space inside the dollars */
                while (a < b && (md[a] == ' ' || md[a] == '\n')) a++;
                while (b > a && (md[b - 1] == ' ' || md[b - 1] == '\n')) b--;
                if (b > a) {
                    if (core_buf_puts(out, dollars) < 0 || core_buf_append(out, md + a, b - a) < 0 || core_buf_puts(out, dollars) < 0)
                        return -1;
                    changed = 1;
                    i = j + 2;
                    continue;
                }
            }
        }
        if (c == '\\' && i + 1 < len) { /* an escape stays as it is, both bytes */
            if (core_buf_append(out, md + i, 2) < 0) return -1;
            line0 = md[i + 1] == '\n';
            i += 2;
            continue;
        }
        if (core_buf_append(out, md + i, 1) < 0) return -1;
        i++;
    }
    return changed;
}

/* Render one segment (no splitting) and append to out. */
static int render_segment(const char *md, size_t len, core_buf *out) {
    if (len == 0) return 0;
    if (len > UINT32_MAX) return CORE_ERANGE;
    core_buf alt = {0};
    int ch = memchr(md, '\\', len) ? latex_delims(md, len, &alt) : 0;
    if (ch < 0) {
        core_buf_free(&alt);
        return CORE_ENOMEM;
    }
    if (ch > 0) {
        int rc = alt.len > UINT32_MAX ? CORE_ERANGE : render_segment_raw(alt.data, alt.len, out);
        core_buf_free(&alt);
        return rc;
    }
    core_buf_free(&alt);
    return render_segment_raw(md, len, out);
}

static int render_segment_raw(const char *md, size_t len, core_buf *out) {
    MD_PARSER p = {0};
    p.flags = MD_FLAGS;
    p.enter_block = enter_block;
    p.leave_block = leave_block;
    p.enter_span = enter_span;
    p.leave_span = leave_span;
    p.text = text;
    rend r = {.out = out};
    size_t start = out->len;
    int rc = md_parse(md, (MD_SIZE)len, &p, &r);
    core_buf_free(&r.tmp);
    if (rc != 0 || r.err) {
        out->len = start; /* no half-written block */
        if (out->cap) out->data[start] = 0;
        return r.err ? r.err : CORE_ENOMEM;
    }
    return 0;
}

/* ---- the splitter --------------------------------------------------- */

struct md_stream {
    core_buf pend;     /* the unfinished segment */
    size_t scan;       /* bytes of pend examined */
    size_t line;       /* start of the current (incomplete) line in pend */
    int decided;       /* split question for the current line answered */
    int prev_blank;    /* previous complete line was blank, outside a fence */
    int has_content;   /* the segment has a non-blank line */
    char fence_ch;     /* 0, '`' or '~' */
    size_t fence_len;
    int fence_top;     /* fence opened at column 0 */
};

md_stream *md_stream_new(void) { return calloc(1, sizeof(md_stream)); }

void md_stream_free(md_stream *s) {
    if (!s) return;
    core_buf_free(&s->pend);
    free(s);
}

size_t md_stream_pending(const md_stream *s) { return s->pend.len; }

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r'; }

enum { SPLIT, NOSPLIT, MORE };

/* Does a line starting with p[0..n) (complete: the line ends at n) begin a
 * new segment when it follows a blank line? Not if it is indented or a list
 * item (it may continue a loose list); undecided while "12" could be "12.". */
static int split_before(const char *p, size_t n, int complete) {
    if (n == 0) return complete ? NOSPLIT : MORE;
    char c = p[0];
    if (is_ws(c)) return NOSPLIT;
    if (c == '-' || c == '*' || c == '+') {
        if (n < 2) return complete ? NOSPLIT : MORE;
        return is_ws(p[1]) ? NOSPLIT : SPLIT;
    }
    if (c >= '0' && c <= '9') {
        size_t i = 0;
        while (i < n && i < 9 && p[i] >= '0' && p[i] <= '9') i++;
        if (i == n) return complete ? SPLIT : MORE;
        if (p[i] != '.' && p[i] != ')') return SPLIT;
        if (i + 1 == n) return complete ? NOSPLIT : MORE;
        return is_ws(p[i + 1]) ? NOSPLIT : SPLIT;
    }
    return SPLIT;
}

static int line_blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!is_ws(p[i])) return 0;
    return 1;
}

/* Skip container prefixes ("  ", "> ", "- ", "1. ") before a fence. */
static size_t skip_prefix(const char *p, size_t n, int list_markers) {
    size_t i = 0;
    for (;;) {
        while (i < n && (p[i] == ' ' || p[i] == '\t')) i++;
        if (i < n && p[i] == '>') { i++; continue; }
        if (!list_markers) break;
        if (i + 1 < n && (p[i] == '-' || p[i] == '*' || p[i] == '+') && (p[i + 1] == ' ' || p[i + 1] == '\t')) {
            i += 2;
            continue;
        }
        size_t j = i;
        while (j < n && j - i < 9 && p[j] >= '0' && p[j] <= '9') j++;
        if (j > i && j + 1 < n && (p[j] == '.' || p[j] == ')') && (p[j + 1] == ' ' || p[j + 1] == '\t')) {
            i = j + 2;
            continue;
        }
        break;
    }
    return i;
}

/* Look at one complete line p[0..n) (without '\n'); update fence/blank
 * state. Returns 1 when the segment should end right after this line. */
static int take_line(md_stream *s, const char *p, size_t n) {
    if (s->fence_ch) {
        size_t i = skip_prefix(p, n, 0), k = 0;
        while (i + k < n && p[i + k] == s->fence_ch) k++;
        if (k >= s->fence_len && line_blank(p + i + k, n - i - k)) {
            int top = s->fence_top;
            s->fence_ch = 0;
            s->prev_blank = 0;
            return top; /* a column-0 fence is a top-level block: done */
        }
        return 0;
    }
    size_t i = skip_prefix(p, n, 1), k = 0;
    char c = i < n ? p[i] : 0;
    if (c == '`' || c == '~') {
        while (i + k < n && p[i + k] == c) k++;
        int ok = k >= 3;
        if (ok && c == '`' && memchr(p + i + k, '`', n - i - k)) ok = 0; /* inline code, not a fence */
        if (ok) {
            s->fence_ch = c;
            s->fence_len = k;
            s->fence_top = (i == 0);
            s->prev_blank = 0;
            s->has_content = 1;
            return 0;
        }
    }
    s->prev_blank = line_blank(p, n);
    if (!s->prev_blank) s->has_content = 1;
    return 0;
}

/* Emit pend[0..at) as a finished block and keep the rest. */
static int emit(md_stream *s, size_t at, core_buf *out) {
    int rc = render_segment(s->pend.data, at, out);
    if (rc) return rc;
    memmove(s->pend.data, s->pend.data + at, s->pend.len - at);
    s->pend.len -= at;
    s->pend.data[s->pend.len] = 0;
    s->scan -= at;
    s->line -= at;
    s->has_content = 0;
    s->prev_blank = 0;
    return 0;
}

/* Advance over the bytes pushed so far, emitting finished segments. */
static int advance(md_stream *s, core_buf *out) {
    for (;;) {
        const char *d = s->pend.data;
        size_t len = s->pend.len;
        if (!s->decided) {
            if (!s->fence_ch && s->prev_blank && s->has_content) {
                const char *nl = memchr(d + s->line, '\n', len - s->line);
                size_t avail = nl ? (size_t)(nl - (d + s->line)) : len - s->line;
                int v = split_before(d + s->line, avail, nl != NULL);
                if (v == MORE) return 0;
                s->decided = 1;
                if (v == SPLIT) {
                    int rc = emit(s, s->line, out);
                    if (rc) return rc;
                    continue;
                }
            } else {
                s->decided = 1;
            }
        }
        if (s->scan < s->line) s->scan = s->line;
        const char *nl = memchr(d + s->scan, '\n', len - s->scan);
        if (!nl) { s->scan = len; return 0; }
        size_t end = (size_t)(nl - d);
        int done = take_line(s, d + s->line, end - s->line);
        s->line = s->scan = end + 1;
        s->decided = 0;
        if (done) {
            int rc = emit(s, s->line, out);
            if (rc) return rc;
        }
    }
}

int md_stream_push(md_stream *s, const char *text, size_t len, core_buf *blocks_html) {
    if (len == 0) return 0;
    if (s->pend.len + len > MD_MAX_PENDING) return CORE_ERANGE;
    if (core_buf_append(&s->pend, text, len) < 0) return CORE_ENOMEM;
    return advance(s, blocks_html);
}

int md_stream_tail(const md_stream *s, core_buf *tail_html) {
    size_t n = core_utf8_complete_prefix(s->pend.data ? s->pend.data : "", s->pend.len);
    return render_segment(s->pend.data, n, tail_html);
}

int md_stream_finish(md_stream *s, core_buf *blocks_html) {
    int rc = render_segment(s->pend.data, s->pend.len, blocks_html);
    core_buf_clear(&s->pend);
    s->scan = s->line = 0;
    s->decided = s->prev_blank = s->has_content = 0;
    s->fence_ch = 0;
    s->fence_len = 0;
    s->fence_top = 0;
    return rc;
}

int md_render(const char *md, size_t len, core_buf *html) {
    md_stream s = {0};
    int rc = 0;
    /* Feed in bounded pieces so the splitter (not just one parse) decides. */
    size_t off = 0;
    while (rc == 0 && off < len) {
        size_t n = CORE_MIN(len - off, (size_t)1 << 20);
        if (core_buf_append(&s.pend, md + off, n) < 0) rc = CORE_ENOMEM;
        else rc = advance(&s, html);
        off += n;
    }
    if (rc == 0) rc = md_stream_finish(&s, html);
    core_buf_free(&s.pend);
    return rc;
}
