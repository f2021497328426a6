/* test_md.c -- markdown rendering: XSS payloads stay inert, the GitHub
 * features render, and streaming in any pieces equals the whole render.
 *
 * Every output here also goes through md_html_safe (tests/md_check.h), an
 * independent tokenizer that accepts only the renderer's tag/attribute set
 * and allowed URLs.
 */
#include "t.h"
#include "md/md.h"
#include "md_check.h"

static char *render(const char *md) {
    static core_buf b;
    core_buf_clear(&b);
    if (md_render(md, strlen(md), &b) != 0) return NULL;
    const char *bad = md_html_safe(b.data ? b.data : "");
    if (bad) fprintf(stderr, "  unsafe html (%s) for input: %s\n  -> %s\n", bad, md, b.data);
    return bad ? NULL : (b.data ? b.data : "");
}

#define HAS(h, s) CHECK_MSG((h) && strstr((h), (s)), "missing %s in %s", s, (h) ? (h) : "(null)")
#define HASNT(h, s) CHECK_MSG((h) && !strstr((h), (s)), "unexpected %s in %s", s, (h) ? (h) : "(null)")

static void test_escape(void) {
    core_buf b = {0};
    CHECK_EQ_INT(md_escape_html("a<b>&\"'c", 8, &b), 0);
    CHECK_EQ_STR(b.data, "a&lt;b&gt;&amp;&quot;&#39;c");
    core_buf_clear(&b);
    md_escape_html("x\0y\xff\xc3\xa9\xe2\x82", 8, &b); /* NUL, bad byte, é, cut € (one U+FFFD) */
    CHECK_EQ_STR(b.data, "x\xef\xbf\xbdy\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd");
    CHECK(core_utf8_valid(b.data, b.len));
    core_buf_free(&b);
}

static void test_url_allowed(void) {
    const char *ok[] = {"http://a", "HTTPS://a/b", "mailto:x@y", "/rel", "rel/x", "#frag", "?q=1", "", "x.html",
                        "1javascript:x", "java%73cript:x", "./a:b"};
    const char *no[] = {"javascript:alert(1)", "JAVASCRIPT:1", "JaVaScRiPt:1", "data:text/html,x", "vbscript:x",
                        "file:///etc/passwd", "blob:x", "c:\\x", "ftp://a"};
    for (size_t i = 0; i < CORE_ARRAY_LEN(ok); i++) CHECK_MSG(md_url_allowed(ok[i], strlen(ok[i])), "%s", ok[i]);
    for (size_t i = 0; i < CORE_ARRAY_LEN(no); i++) CHECK_MSG(!md_url_allowed(no[i], strlen(no[i])), "%s", no[i]);
}

static void test_xss_inert(void) {
    static const char *payloads[] = {
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "hello <b onmouseover=alert(1)>x</b>",
        "[x](javascript:alert(1))",
        "[x](JAVASCRIPT:alert(1))",
        "[x]( javascript:alert(1))",
        "[x](<javascript:alert(1)>)",
        "[x](jav&#x61;script:alert(1))",
        "[x](jav&#97;script:alert(1))",
        "[x](javascript&colon;alert(1))",
        "[x](java&Tab;script:alert(1))",
        "[x](java&NewLine;script:alert(1))",
        "[x](&#x20;javascript:alert(1))",
        "[x](&#1;javascript:alert(1))",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "![x](data:image/svg+xml,<svg onload=alert(1)>)",
        "![x](javascript:alert(1))",
        "[x](vbscript:msgbox)",
        "<javascript:alert(1)>",
        "[x]: javascript:alert(1)\n\n[x]",
        "[x](http://a\" onmouseover=\"alert(1))",
        "[x](http://a 'a\" onmouseover=alert(1) x=')",
        "![a\" onerror=\"alert(1)](http://a/b.png)",
        "```js\" onmouseover=\"alert(1)\nx\n```",
        "```<script>\nx\n```",
        "~~~ js'><img src=x onerror=alert(1)>\ncode\n~~~",
        "`<script>alert(1)</script>`",
        "| <script> | b |\n|---|---|\n| <img src=x onerror=1> | 2 |",
        "- [x] <script>x</script>",
        "&lt;script&gt; &#60;script&#62; &#x3C;img src=x onerror=alert(1)&#x3E;",
    };
    for (size_t i = 0; i < CORE_ARRAY_LEN(payloads); i++) {
        char *h = render(payloads[i]);
        CHECK_MSG(h != NULL, "payload %zu", i);
        if (!h) continue;
        HASNT(h, "<script");
        HASNT(h, "<svg");
        HASNT(h, "<img src=x");
        HASNT(h, "href=\"j");
        HASNT(h, "href=\"J");
        HASNT(h, "href=\"d");
        HASNT(h, "href=\"v");
        HASNT(h, "src=\"d");
        HASNT(h, "src=\"j");
        /* "onerror=" etc. may remain as escaped text; md_html_safe (in
         * render) has already refused any attribute outside the list */
    }
    /* refused links keep their text */
    char *h = render("see [the docs](javascript:alert(1)) now");
    CHECK_EQ_STR(h, "<p>see the docs now</p>\n");
    h = render("![a cat](data:image/png;base64,AAAA)");
    CHECK_EQ_STR(h, "<p>a cat</p>\n");
    /* the code language is cut at the first unsafe character */
    h = render("```js\" onmouseover=\"alert(1)\nx\n```");
    HAS(h, "<code class=\"language-js\">");
    /* a title cannot break out of its quotes */
    h = render("[x](http://a \"t&quot; onclick=&quot;y\")");
    HAS(h, "title=\"t&quot; onclick=&quot;y\"");
}

static void test_features(void) {
    char *h = render("# Title\n\nSome *em* and **strong** and ~~del~~ and `code <x>`.");
    CHECK_EQ_STR(h, "<h1>Title</h1>\n<p>Some <em>em</em> and <strong>strong</strong> and <del>del</del> and "
                    "<code>code &lt;x&gt;</code>.</p>\n");
    h = render("```python\nprint(\"hi\") # <b>\n```\n");
    CHECK_EQ_STR(h, "<div class=\"code\"><div class=\"code-head\"><span class=\"code-lang\">python</span>"
                    "<button type=\"button\" class=\"copy\" data-copy=\"code\" aria-label=\"Copy code\">Copy</button>"
                    "</div><pre><code class=\"language-python\">print(&quot;hi&quot;) # &lt;b&gt;\n</code></pre></div>\n");
    h = render("```\nplain\n```");
    HAS(h, "<span class=\"code-lang\">text</span>");
    HAS(h, "<pre><code>plain\n</code></pre>");
    h = render("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |");
    HAS(h, "<div class=\"table\"><table>");
    HAS(h, "<th class=\"al-left\">a</th><th class=\"al-center\">b</th><th class=\"al-right\">c</th>");
    HAS(h, "<td class=\"al-left\">1</td>");
    h = render("- one\n- two\n  - nested\n\n3. three\n4. four");
    HAS(h, "<ul>\n<li>one</li>\n<li>two<ul>\n<li>nested</li>\n</ul>\n</li>\n</ul>\n");
    HAS(h, "<ol start=\"3\">\n<li>three</li>\n<li>four</li>\n</ol>");
    h = render("- [x] done\n- [ ] todo");
    HAS(h, "<li class=\"task\"><input type=\"checkbox\" disabled checked> done</li>");
    HAS(h, "<li class=\"task\"><input type=\"checkbox\" disabled> todo</li>");
    h = render("> quoted\n\n---\n\nline  \nbreak");
    HAS(h, "<blockquote>\n<p>quoted</p>\n</blockquote>\n<hr>\n<p>line<br>\nbreak</p>");
    h = render("visit https://example.com/a?b=1&c=2 or www.example.org or mail me@example.com");
    HAS(h, "<a href=\"https://example.com/a?b=1&amp;c=2\" rel=\"noopener noreferrer nofollow\" target=\"_blank\">");
    HAS(h, "href=\"http://www.example.org\"");
    HAS(h, "href=\"mailto:me@example.com\"");
    h = render("[rel](/x/y \"T\") ![img](https://e.org/a.png)");
    HAS(h, "<a href=\"/x/y\" title=\"T\" rel=\"noopener noreferrer nofollow\" target=\"_blank\">rel</a>");
    HAS(h, "<img src=\"https://e.org/a.png\" alt=\"img\" loading=\"lazy\">");
    h = render("caf&eacute; &amp; &#233; &#0;");
    CHECK_EQ_STR(h, "<p>caf&eacute; &amp; \xc3\xa9 \xef\xbf\xbd</p>\n");
    /* a loose list stays one list even though blank lines split blocks */
    h = render("1. a\n\n2. b\n\n3. c\n");
    CHECK_EQ_STR(h, "<ol>\n<li><p>a</p>\n</li>\n<li><p>b</p>\n</li>\n<li><p>c</p>\n</li>\n</ol>\n");
}

/* Push md in pieces given by sizes (cycled), return blocks + finish. */
static int stream_pieces(const char *md, const size_t *sizes, size_t nsizes, core_buf *out) {
    md_stream *s = md_stream_new();
    if (!s) return -1;
    size_t len = strlen(md), off = 0, k = 0;
    int rc = 0;
    core_buf tail = {0};
    while (off < len && rc == 0) {
        size_t n = sizes[k++ % nsizes]; /* not inside CORE_MIN: it evaluates twice */
        if (n > len - off) n = len - off;
        rc = md_stream_push(s, md + off, n, out);
        off += n;
        core_buf_clear(&tail);
        if (rc == 0) rc = md_stream_tail(s, &tail);
        if (rc == 0 && tail.len && md_html_safe(tail.data)) rc = -2;
        if (rc == 0 && tail.len && !core_utf8_valid(tail.data, tail.len)) rc = -3;
    }
    if (rc == 0) rc = md_stream_finish(s, out);
    core_buf_free(&tail);
    md_stream_free(s);
    return rc;
}

static const char *docs[] = {
    "# Plan\n\nFirst paragraph with **bold** and a [link](https://a.b).\n\n- item one\n- item two\n\n"
    "```c\nint main(void) {\n\n    return 0;\n}\n```\nAfter the fence.\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\nDone.",
    "1. a\n\n2. b\n\n   continued\n\nnot in list\n\n10) ten\n11) eleven\n\n12\n\n13.x",
    "> quote\n> more\n\n    indented code\n\n    still code\n\nText\n===\n\n- ```\n  in list\n\n  fence\n  ```\n\nend",
    "~~~~\n```\nnot closed by backticks\n\n~~~\n~~~~~\nafter\n\n```js\nunclosed\n\nfence at end",
    "caf\xc3\xa9 \xe2\x82\xac\n\n\xf0\x9f\x98\x80 emoji\n\n* star\n\n+ plus\n\n-not a list\n\n*emph*",
    "\n\n\nleading blanks\r\n\r\nCRLF para\r\n\r\n- crlf item\r\n",
    "",
    "x",
    "```\n",
    "text ```not a fence``` here\n\nnext",
};

/* LaTeX reaches the page untouched, in spans the page typesets. */
static void test_latex(void) {
    char *h = render("area $$x^2\\,dx$$ and $a_1 < b$.");
    CHECK_EQ_STR(h, "<p>area <span class=\"math display\">x^2\\,dx</span> and <span class=\"math\">a_1 &lt; b</span>.</p>\n");
    h = render("inline \\( \\frac{1}{2} \\) and\n\\[\n\\int_0^1 f\\,dx\n\\]\nend");
    HAS(h, "<span class=\"math\">\\frac{1}{2}</span>");
    HAS(h, "<span class=\"math display\">\\int_0^1 f\\,dx</span>");
    /* code keeps its backslashes and dollars as text */
    h = render("`\\(x\\)` and `$y$`");
    CHECK_EQ_STR(h, "<p><code>\\(x\\)</code> and <code>$y$</code></p>\n");
    h = render("```\n\\[ a \\]\n```\n");
    HAS(h, "<code>\\[ a \\]\n</code>");
    /* an escaped bracket without a partner stays an escape; "\\" stays one backslash */
    h = render("\\[1] and a\\\\(b)");
    CHECK_EQ_STR(h, "<p>[1] and a\\(b)</p>\n");
    /* no way out of the span */
    h = render("$<script>alert(1)</script>$");
    HAS(h, "<span class=\"math\">&lt;script&gt;alert(1)&lt;/script&gt;</span>");
}

static void test_stream_equals_render(void) {
    static const size_t one[] = {1}, mixed[] = {3, 1, 7, 2, 13, 5}, big[] = {64};
    for (size_t d = 0; d < CORE_ARRAY_LEN(docs); d++) {
        core_buf whole = {0}, a = {0}, b = {0}, c = {0};
        CHECK_EQ_INT(md_render(docs[d], strlen(docs[d]), &whole), 0);
        const char *w = whole.data ? whole.data : "";
        CHECK_MSG(md_html_safe(w) == NULL, "doc %zu: %s", d, md_html_safe(w));
        CHECK_EQ_INT(stream_pieces(docs[d], one, 1, &a), 0);
        CHECK_EQ_INT(stream_pieces(docs[d], mixed, CORE_ARRAY_LEN(mixed), &b), 0);
        CHECK_EQ_INT(stream_pieces(docs[d], big, 1, &c), 0);
        CHECK_MSG(strcmp(w, a.data ? a.data : "") == 0, "doc %zu 1-byte:\n%s\n--- vs ---\n%s", d, w, a.data);
        CHECK_MSG(strcmp(w, b.data ? b.data : "") == 0, "doc %zu mixed", d);
        CHECK_MSG(strcmp(w, c.data ? c.data : "") == 0, "doc %zu 64", d);
        core_buf_free(&whole), core_buf_free(&a), core_buf_free(&b), core_buf_free(&c);
    }
}

static void test_stream_blocks_arrive_early(void) {
    md_stream *s = md_stream_new();
    core_buf blocks = {0}, tail = {0};
    const char *p1 = "First *para*.\n\n";
    CHECK_EQ_INT(md_stream_push(s, p1, strlen(p1), &blocks), 0);
    CHECK_EQ_INT((int)blocks.len, 0); /* undecided until the next line starts */
    md_stream_tail(s, &tail);
    CHECK_EQ_STR(tail.data, "<p>First <em>para</em>.</p>\n");
    CHECK_EQ_INT(md_stream_push(s, "Sec", 3, &blocks), 0);
    CHECK_EQ_STR(blocks.data, "<p>First <em>para</em>.</p>\n");
    core_buf_clear(&tail);
    md_stream_tail(s, &tail);
    CHECK_EQ_STR(tail.data, "<p>Sec</p>\n");
    CHECK_EQ_INT((int)md_stream_pending(s), 3);

    /* blank lines inside a fence do not end it; the tail shows an open code block */
    core_buf_clear(&blocks);
    const char *p2 = "ond.\n```py\na = 1\n\n\nb = 2\n";
    CHECK_EQ_INT(md_stream_push(s, p2, strlen(p2), &blocks), 0);
    CHECK_EQ_INT((int)blocks.len, 0);
    core_buf_clear(&tail);
    md_stream_tail(s, &tail);
    HAS(tail.data, "<p>Second.</p>");
    HAS(tail.data, "<code class=\"language-py\">a = 1\n\n\nb = 2\n</code>");
    /* the closing fence finishes the block at once */
    CHECK_EQ_INT(md_stream_push(s, "```\n", 4, &blocks), 0);
    HAS(blocks.data, "<p>Second.</p>\n<div class=\"code\">");
    HAS(blocks.data, "b = 2\n</code></pre></div>\n");
    CHECK_EQ_INT((int)md_stream_pending(s), 0);

    /* half a UTF-8 character is held back from the tail */
    core_buf_clear(&blocks);
    CHECK_EQ_INT(md_stream_push(s, "caf\xc3", 4, &blocks), 0);
    core_buf_clear(&tail);
    md_stream_tail(s, &tail);
    CHECK_EQ_STR(tail.data, "<p>caf</p>\n");
    CHECK_EQ_INT(md_stream_push(s, "\xa9", 1, &blocks), 0);
    CHECK_EQ_INT(md_stream_finish(s, &blocks), 0);
    CHECK_EQ_STR(blocks.data, "<p>caf\xc3\xa9</p>\n");

    /* reusable after finish */
    core_buf_clear(&blocks);
    CHECK_EQ_INT(md_stream_push(s, "```\nopen", 8, &blocks), 0);
    CHECK_EQ_INT(md_stream_finish(s, &blocks), 0);
    HAS(blocks.data, "<pre><code>open\n</code></pre>");
    CHECK_EQ_INT((int)md_stream_pending(s), 0);
    core_buf_free(&blocks);
    core_buf_free(&tail);
    md_stream_free(s);
    md_stream_free(NULL);
}

static void test_random_splits(void) {
    /* pseudo-random pieces over all docs concatenated: same as whole */
    core_buf all = {0};
    for (size_t d = 0; d < CORE_ARRAY_LEN(docs); d++) core_buf_puts(&all, docs[d]), core_buf_puts(&all, "\n\n");
    core_buf whole = {0};
    CHECK_EQ_INT(md_render(all.data, all.len, &whole), 0);
    uint32_t x = 12345;
    for (int round = 0; round < 20; round++) {
        size_t sizes[32];
        for (size_t i = 0; i < 32; i++) { x = x * 1103515245u + 12345u; sizes[i] = 1 + (x >> 16) % 17; }
        core_buf got = {0};
        CHECK_EQ_INT(stream_pieces(all.data, sizes, 32, &got), 0);
        size_t at = 0;
        while (at < got.len && at < whole.len && got.data[at] == whole.data[at]) at++;
        CHECK_MSG(got.len == whole.len && at == got.len, "round %d: differs at %zu:\n%.200s\n--- vs whole ---\n%.200s", round,
                  at, got.data + (at > 80 ? at - 80 : 0), whole.data + (at > 80 ? at - 80 : 0));
        core_buf_free(&got);
    }
    core_buf_free(&all);
    core_buf_free(&whole);
}

/* Random texts made of the LaTeX and code delimiters: never a crash, and
 * streamed in random pieces they render as the whole does. */
static void test_latex_random(void) {
    static const char alpha[] = "\\()[]$`~ \nab1*_";
    uint32_t x = 777;
    for (int round = 0; round < 300; round++) {
        char text[161];
        size_t n = 0, len = 20 + round % 140;
        for (; n < len; n++) { x = x * 1103515245u + 12345u; text[n] = alpha[(x >> 16) % (sizeof alpha - 1)]; }
        text[n] = 0;
        core_buf whole = {0}, got = {0};
        CHECK_EQ_INT(md_render(text, n, &whole), 0);
        size_t sizes[32];
        for (size_t i = 0; i < 32; i++) { x = x * 1103515245u + 12345u; sizes[i] = 1 + (x >> 16) % 9; }
        CHECK_EQ_INT(stream_pieces(text, sizes, 32, &got), 0);
        CHECK_MSG(got.len == whole.len && (!got.len || !memcmp(got.data, whole.data, got.len)), "round %d: %s", round, text);
        core_buf_free(&whole);
        core_buf_free(&got);
    }
}

int main(void) {
    T_RUN(test_escape);
    T_RUN(test_url_allowed);
    T_RUN(test_xss_inert);
    T_RUN(test_features);
    T_RUN(test_latex);
    T_RUN(test_stream_equals_render);
    T_RUN(test_stream_blocks_arrive_early);
    T_RUN(test_random_splits);
    T_RUN(test_latex_random);
    return t_done();
}
