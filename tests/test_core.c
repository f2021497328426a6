/* test_core.c -- half floats against exhaustive round trips, UTF-8 edge cases, buffers. */
#include "t.h"
#include "core/core.h"

static void test_f16_roundtrip_all(void) {
    /* every finite f16 converts to f32 and back to the same bits */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t x = (uint16_t)h;
        if ((x & 0x7c00) == 0x7c00 && (x & 0x3ff)) continue; /* nan payloads may change */
        if (core_f32_to_f16(core_f16_to_f32(x)) != x) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(core_f16_to_f32(0x3c00) == 1.0f);
    CHECK(core_f16_to_f32(0xc000) == -2.0f);
    CHECK(core_f16_to_f32(0x0001) == 5.9604644775390625e-08f);
    CHECK(core_f32_to_f16(65520.0f) == 0x7c00);
    CHECK(core_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(core_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* tie to even */
    CHECK(core_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
    CHECK(core_f32_to_f16(1e-9f) == 0);
}

static void test_bf16(void) {
    CHECK(core_bf16_to_f32(0x3f80) == 1.0f);
    CHECK(core_f32_to_bf16(1.0f) == 0x3f80);
    CHECK(core_f32_to_bf16(1.00390625f) == 0x3f80); /* tie to even */
    float nan = __builtin_nanf("");
    CHECK(core_bf16_to_f32(core_f32_to_bf16(nan)) != core_bf16_to_f32(core_f32_to_bf16(nan)));
}

static void test_utf8(void) {
    uint32_t cp;
    CHECK_EQ_INT(core_utf8_decode((const unsigned char *)"\xe2\x82\xac", 3, &cp), 3);
    CHECK_EQ_INT(cp, 0x20ac);
    CHECK_EQ_INT(core_utf8_decode((const unsigned char *)"\xc0\x80", 2, &cp), 0);     /* overlong */
    CHECK_EQ_INT(core_utf8_decode((const unsigned char *)"\xed\xa0\x80", 3, &cp), 0); /* surrogate */
    CHECK_EQ_INT(core_utf8_decode((const unsigned char *)"\xf4\x90\x80\x80", 4, &cp), 0);
    CHECK(core_utf8_valid("h\xc3\xa9llo \xf0\x9f\x98\x80", 11));
    CHECK(!core_utf8_valid("\xff", 1));
    CHECK_EQ_INT(core_utf8_complete_prefix("ab\xf0\x9f\x98", 5), 2);
    CHECK_EQ_INT(core_utf8_complete_prefix("ab\xf0\x9f\x98\x80", 6), 6);
    CHECK_EQ_INT(core_utf8_complete_prefix("ab\xc3", 3), 2);
    CHECK_EQ_INT(core_utf8_complete_prefix("ab", 2), 2);
    char out[4];
    CHECK_EQ_INT(core_utf8_encode(0x1f600, out), 4);
    CHECK(memcmp(out, "\xf0\x9f\x98\x80", 4) == 0);
    CHECK_EQ_INT(core_utf8_encode(0xd800, out), 0);
}

/* s[0..n) through the sanitizer equals want (R = U+FFFD). */
#define R CORE_UTF8_REPL
static void san_is(const char *s, size_t n, const char *want) {
    core_buf b = {0};
    CHECK_EQ_INT(core_utf8_sanitize(s, n, &b), 0);
    CHECK_MSG(b.len == strlen(want) && !memcmp(b.data, want, b.len), "sanitize of %zu bytes gave %zu bytes", n, b.len);
    CHECK(core_utf8_valid(b.data, b.len));
    core_buf_free(&b);
}

static void test_utf8_sanitize(void) {
    san_is("", 0, "");
    san_is("h\xc3\xa9llo \xf0\x9f\x98\x80", 11, "h\xc3\xa9llo \xf0\x9f\x98\x80"); /* valid: unchanged */
    /* overlong: C0/C1 never lead; E0 80..9F and F0 80..8F are impossible seconds */
    san_is("\xc0\x80", 2, R R);
    san_is("\xe0\x80\xaf", 3, R R R);
    san_is("\xf0\x8f\xbf\xbf", 4, R R R R);
    /* surrogates: ED A0..BF */
    san_is("\xed\xa0\x80x", 4, R R R "x");
    san_is("\xed\x9f\xbf", 3, "\xed\x9f\xbf"); /* U+D7FF, just below */
    /* above U+10FFFF: F4 90.., F5..FF */
    san_is("\xf4\x90\x80\x80", 4, R R R R);
    san_is("\xf4\x8f\xbf\xbf", 4, "\xf4\x8f\xbf\xbf"); /* U+10FFFF itself */
    san_is("\xf5\x80\x80\x80", 4, R R R R);
    san_is("\xff\xfe", 2, R R);
    /* truncated: a lead with its valid continuations is one maximal subpart */
    san_is("\xe2\x82", 2, R);
    san_is("\xe2\x82x", 3, R "x");
    san_is("\xf0\x9f\x98", 3, R);
    san_is("a\xf0\x9f\x98\xe2\x82\xac", 7, "a" R "\xe2\x82\xac");
    /* stray continuation bytes: one each */
    san_is("\x80\xbf", 2, R R);
    /* NUL is valid UTF-8; the sanitizer appends (does not clear) */
    core_buf b = {0};
    CHECK_EQ_INT(core_utf8_sanitize("a\0b", 3, &b), 0);
    CHECK(b.len == 3 && !memcmp(b.data, "a\0b", 3));
    core_buf_clear(&b);
    core_buf_puts(&b, "x");
    CHECK_EQ_INT(core_utf8_sanitize("\xff", 1, &b), 0);
    CHECK_EQ_STR(b.data, "x" R);
    core_buf_free(&b);
    /* the step: valid, invalid, cut by the end */
    int ok;
    CHECK_EQ_INT(core_utf8_step("\xe2\x82\xac", 3, &ok), 3);
    CHECK_EQ_INT(ok, 1);
    CHECK_EQ_INT(core_utf8_step("\xe2\x82", 2, &ok), 2);
    CHECK_EQ_INT(ok, -1);
    CHECK_EQ_INT(core_utf8_step("\xe2\x82z", 3, &ok), 2);
    CHECK_EQ_INT(ok, 0);
    CHECK_EQ_INT(core_utf8_step("\xed\xa0", 2, &ok), 1); /* a surrogate is no prefix of anything */
    CHECK_EQ_INT(ok, 0);
}
#undef R

static void test_buf_and_err(void) {
    core_buf b = {0};
    for (int i = 0; i < 1000; i++) CHECK(core_buf_printf(&b, "%d,", i) == 0);
    CHECK(b.len > 3000 && b.data[b.len] == 0);
    CHECK(strncmp(b.data, "0,1,2,", 6) == 0);
    core_buf_clear(&b);
    CHECK(b.len == 0 && b.data[0] == 0);
    core_buf_free(&b);
    core_err e = {0};
    CHECK_EQ_INT(core_errf(&e, CORE_EFORMAT, "bad %s at %d", "thing", 7), CORE_EFORMAT);
    CHECK_EQ_STR(e.msg, "bad thing at 7");
    CHECK_EQ_INT(core_errf(NULL, CORE_EIO, "x"), CORE_EIO);
    char *data; size_t len;
    CHECK(core_read_file("/nonexistent/file", &data, &len, &e) == CORE_EIO);
    CHECK(strstr(e.msg, "/nonexistent/file") != NULL);
}

int main(void) {
    T_RUN(test_f16_roundtrip_all);
    T_RUN(test_bf16);
    T_RUN(test_utf8);
    T_RUN(test_utf8_sanitize);
    T_RUN(test_buf_and_err);
    return t_done();
}
