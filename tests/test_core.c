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
    T_RUN(test_buf_and_err);
    return t_done();
}
