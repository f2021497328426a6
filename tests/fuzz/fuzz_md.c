/* fuzz_md.c -- arbitrary bytes through the markdown renderer.
 *
 * The first byte seeds the piece sizes; the rest is the document. It is
 * rendered whole and pushed in pseudo-random pieces (asking for the tail after
 * each push, as the server does). Abort if the two disagree, if any output is
 * not valid UTF-8, or if md_html_safe (tests/md_check.h) refuses it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "md/md.h"
#include "../md_check.h"

static void must(int cond, const char *what, const char *html) {
    if (cond) return;
    fprintf(stderr, "fuzz_md: %s\n%s\n", what, html ? html : "");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint32_t x = data[0] * 2654435761u + 1;
    const char *doc = (const char *)data + 1;
    size_t len = size - 1;

    core_buf whole = {0}, got = {0}, tail = {0};
    must(md_render(doc, len, &whole) == 0, "md_render failed", NULL);
    const char *w = whole.data ? whole.data : "";
    must(core_utf8_valid(w, whole.len), "invalid utf-8", w);
    const char *bad = md_html_safe(w);
    must(bad == NULL, bad, w);

    md_stream *s = md_stream_new();
    must(s != NULL, "md_stream_new", NULL);
    size_t off = 0;
    while (off < len) {
        x = x * 1103515245u + 12345u;
        size_t n = 1 + (x >> 16) % 24;
        if (n > len - off) n = len - off;
        must(md_stream_push(s, doc + off, n, &got) == 0, "push failed", NULL);
        off += n;
        core_buf_clear(&tail);
        must(md_stream_tail(s, &tail) == 0, "tail failed", NULL);
        if (tail.len) {
            must(core_utf8_valid(tail.data, tail.len), "invalid utf-8 in tail", tail.data);
            bad = md_html_safe(tail.data);
            must(bad == NULL, bad, tail.data);
        }
    }
    must(md_stream_finish(s, &got) == 0, "finish failed", NULL);
    must(got.len == whole.len && (got.len == 0 || memcmp(got.data, whole.data, got.len) == 0),
         "stream differs from whole render", got.data);
    md_stream_free(s);
    core_buf_free(&whole);
    core_buf_free(&got);
    core_buf_free(&tail);
    return 0;
}
