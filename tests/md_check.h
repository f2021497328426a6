/* md_check.h -- an independent judge of md's HTML, shared by test_md.c and
 * fuzz_md.c.
 *
 * md_html_safe(html) returns NULL when the HTML uses only the tags and
 * attributes the renderer is meant to write, every attribute is quoted, no
 * raw '<' or '>' stands outside a tag, every '&' starts an entity, and every
 * href/src passes md_url_allowed after unescaping; otherwise a message that
 * names the first offence. It does not trust the renderer's own checks: it
 * parses the output the way a browser tokenizer would (simplified to what a
 * well-formed output can contain, so anything unexpected is an offence).
 */
#ifndef MD_CHECK_H
#define MD_CHECK_H

#include <stdio.h>
#include <string.h>
#include "md/md.h"

static int mdc_in(const char *s, size_t n, const char *const *list) {
    for (; *list; list++)
        if (strlen(*list) == n && memcmp(*list, s, n) == 0) return 1;
    return 0;
}

static const char *md_html_safe(const char *h) {
    static char msg[256];
    static const char *const tags[] = {"p", "a", "img", "ul", "ol", "li", "blockquote", "hr", "h1", "h2", "h3",
                                       "h4", "h5", "h6", "div", "span", "button", "pre", "code", "em", "strong",
                                       "del", "u", "table", "thead", "tbody", "tr", "th", "td", "br", "input", NULL};
    static const char *const attrs[] = {"href", "src", "alt", "title", "rel", "target", "class", "start", "type",
                                        "disabled", "checked", "loading", "data-copy", "aria-label", NULL};
    size_t i = 0, n = strlen(h);
    while (i < n) {
        char c = h[i];
        if (c == '>') { snprintf(msg, sizeof msg, "raw '>' at %zu", i); return msg; }
        if (c == '&') {
            size_t j = i + 1;
            while (j < n && j - i < 52 && ((h[j] >= 'a' && h[j] <= 'z') || (h[j] >= 'A' && h[j] <= 'Z') ||
                                           (h[j] >= '0' && h[j] <= '9') || h[j] == '#'))
                j++;
            /* md4c passes entity-shaped text (&name; up to 48 letters) through as is;
             * a browser shows an unknown one as text, so it is safe */
            if (j == i + 1 || j >= n || h[j] != ';') { snprintf(msg, sizeof msg, "bare '&' at %zu", i); return msg; }
            i = j + 1;
            continue;
        }
        if (c != '<') { i++; continue; }
        i++;
        int closing = i < n && h[i] == '/';
        if (closing) i++;
        size_t t0 = i;
        while (i < n && ((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= '0' && h[i] <= '9'))) i++;
        if (!mdc_in(h + t0, i - t0, tags)) { snprintf(msg, sizeof msg, "tag '%.*s' at %zu", (int)(i - t0 > 20 ? 20 : i - t0), h + t0, t0); return msg; }
        for (;;) {
            while (i < n && h[i] == ' ') i++;
            if (i >= n) { snprintf(msg, sizeof msg, "unterminated tag"); return msg; }
            if (h[i] == '>') { i++; break; }
            if (closing) { snprintf(msg, sizeof msg, "junk in closing tag at %zu", i); return msg; }
            size_t a0 = i;
            while (i < n && ((h[i] >= 'a' && h[i] <= 'z') || h[i] == '-')) i++;
            if (!mdc_in(h + a0, i - a0, attrs)) { snprintf(msg, sizeof msg, "attribute '%.*s' at %zu", (int)(i - a0 > 20 ? 20 : i - a0), h + a0, a0); return msg; }
            if (i < n && h[i] == '=') {
                if (i + 1 >= n || h[i + 1] != '"') { snprintf(msg, sizeof msg, "unquoted value at %zu", i); return msg; }
                size_t v0 = i + 2, v1 = v0;
                while (v1 < n && h[v1] != '"') {
                    if (h[v1] == '<' || h[v1] == '>') { snprintf(msg, sizeof msg, "raw <> in value at %zu", v1); return msg; }
                    v1++;
                }
                if (v1 >= n) { snprintf(msg, sizeof msg, "unterminated value"); return msg; }
                int is_url = (i - a0 == 4 && memcmp(h + a0, "href", 4) == 0) || (i - a0 == 3 && memcmp(h + a0, "src", 3) == 0);
                if (is_url) {
                    /* unescape the few entities md_escape_html writes */
                    char u[4096];
                    size_t un = 0;
                    for (size_t k = v0; k < v1 && un < sizeof u - 4;) {
                        static const struct { const char *e; char c; } ents[] = {
                            {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&#39;", '\''}};
                        int hit = 0;
                        for (size_t e = 0; e < 5; e++) {
                            size_t el = strlen(ents[e].e);
                            if (k + el <= v1 && memcmp(h + k, ents[e].e, el) == 0) { u[un++] = ents[e].c; k += el; hit = 1; break; }
                        }
                        if (!hit) u[un++] = h[k++];
                    }
                    for (size_t k = 0; k < un; k++)
                        if (u[k] == '\t' || u[k] == '\n' || u[k] == '\r') {
                            snprintf(msg, sizeof msg, "odd byte in url at %zu", v0); return msg;
                        }
                    if ((un && (unsigned char)u[0] <= 0x20) || !md_url_allowed(u, un)) {
                        snprintf(msg, sizeof msg, "url not allowed: '%.*s'", (int)(un > 60 ? 60 : un), u);
                        return msg;
                    }
                }
                i = v1 + 1;
            }
        }
    }
    return NULL;
}

#endif
