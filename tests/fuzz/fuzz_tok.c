/* fuzz_tok.c -- libFuzzer target for the tokenizer.
 *
 * Byte 0 picks the mode (bit 0: parse_special); the rest is the text.
 * Arbitrary bytes must never crash; for valid UTF-8, decode(encode(x)) == x
 * both whole and through the streaming decoder, and the stream's output is
 * always valid UTF-8. The tokenizer is loaded once from the tiny model in
 * $SMOLBOT_SHARED (default ../shared); without it every input is a no-op.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "gguf/gguf.h"
#include "tok/tok.h"

static tok *load_once(void) {
    static int tried;
    static tok *t;
    if (tried) return t;
    tried = 1;
    const char *root = getenv("SMOLBOT_SHARED");
    char path[1024];
    snprintf(path, sizeof path, "%s/models/smollm3-tiny-q4_k_m.gguf", root && *root ? root : "../shared");
    gguf *g;
    if (gguf_open(&g, path, NULL)) return NULL;
    if (tok_load(&t, g, NULL)) t = NULL;
    gguf_close(g);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tok *t = load_once();
    if (!t || size < 1) return 0;
    int special = data[0] & 1;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    int32_t *ids = NULL;
    size_t nid = 0, cap = 0;
    if (tok_encode(t, s, n, special, &ids, &nid, &cap, NULL)) __builtin_trap();
    core_buf whole = {0}, st = {0};
    if (tok_decode(t, ids, nid, 1, &whole)) __builtin_trap();
    tok_stream ts;
    tok_stream_init(&ts, t, 1);
    for (size_t i = 0; i < nid; i++)
        if (tok_stream_push(&ts, ids[i], &st)) __builtin_trap();
    tok_stream_flush(&ts, &st, 1);
    if (!core_utf8_valid(st.data ? st.data : "", st.len)) __builtin_trap();
    if (core_utf8_valid(s, n)) {
        if (whole.len != n || (n && memcmp(whole.data, s, n))) __builtin_trap();
        if (st.len != n || (n && memcmp(st.data, s, n))) __builtin_trap();
    }
    core_buf_free(&whole);
    core_buf_free(&st);
    free(ids);
    return 0;
}
