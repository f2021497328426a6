/* test_sha256.c -- SHA-256 against the FIPS 180-2 example vectors, every
 * chunking of the updates, and the padding boundary lengths (55/56/63/64).
 *
 * src/app is not part of the library the tests link (it holds main), so the
 * one file under test is compiled in here directly. */
#include "t.h"
#include "../src/app/sha256.c"

static void hex_of(const void *p, size_t n, char out[65]) {
    app_sha256 s;
    uint8_t d[32];
    app_sha256_init(&s);
    app_sha256_update(&s, p, n);
    app_sha256_final(&s, d);
    app_sha256_hex(d, out);
}

static void test_fips_vectors(void) {
    char h[65];
    hex_of("abc", 3, h);
    CHECK_EQ_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hex_of("", 0, h);
    CHECK_EQ_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(two, strlen(two), h);
    CHECK_EQ_STR(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *four = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(four, strlen(four), h);
    CHECK_EQ_STR(h, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a(void) {
    /* one million 'a', fed 1000 at a time */
    char a[1000];
    memset(a, 'a', sizeof a);
    app_sha256 s;
    uint8_t d[32];
    char h[65];
    app_sha256_init(&s);
    for (int i = 0; i < 1000; i++) app_sha256_update(&s, a, sizeof a);
    app_sha256_final(&s, d);
    app_sha256_hex(d, h);
    CHECK_EQ_STR(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_chunking(void) {
    /* any split of the input into two or three updates gives the one-shot digest */
    uint8_t msg[200];
    for (int i = 0; i < 200; i++) msg[i] = (uint8_t)(i * 37 + 11);
    int bad = 0;
    for (size_t n = 0; n <= 200; n += 7) {
        char want[65], got[65];
        hex_of(msg, n, want);
        for (size_t a = 0; a <= n; a++) {
            size_t b = a + (n - a) / 2;
            app_sha256 s;
            uint8_t d[32];
            app_sha256_init(&s);
            app_sha256_update(&s, msg, a);
            app_sha256_update(&s, msg + a, b - a);
            app_sha256_update(&s, msg + b, n - b);
            app_sha256_final(&s, d);
            app_sha256_hex(d, got);
            bad += strcmp(want, got) != 0;
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_padding_boundaries(void) {
    /* lengths around the 56-byte padding edge, checked with sha256sum at writing time */
    char a[64], h[65];
    memset(a, 'a', sizeof a);
    hex_of(a, 55, h);
    CHECK_EQ_STR(h, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    hex_of(a, 56, h);
    CHECK_EQ_STR(h, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    hex_of(a, 63, h);
    CHECK_EQ_STR(h, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34");
    hex_of(a, 64, h);
    CHECK_EQ_STR(h, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

int main(void) {
    T_RUN(test_fips_vectors);
    T_RUN(test_million_a);
    T_RUN(test_chunking);
    T_RUN(test_padding_boundaries);
    return t_done();
}
