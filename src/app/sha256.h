/* sha256.h -- SHA-256 (FIPS 180-4), streaming, for checking downloads.
 *
 * None of the project's Debian libraries (libcurl, jansson, sqlite3,
 * libmicrohttpd, md4c) exports a hash, and pulling in OpenSSL for one
 * function is not worth a dependency: this is the plain reference
 * algorithm, ~150 MB/s+ in C, which hashes a 1.9 GB model while it downloads.
 *
 * Usage: app_sha256_init, app_sha256_update (any chunking), app_sha256_final.
 * Thread safety: one context per thread; no globals.
 */
#ifndef APP_SHA256_H
#define APP_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct app_sha256 {
    uint32_t h[8];    /* chaining state */
    uint64_t nbytes;  /* message length so far */
    uint8_t buf[64];  /* pending partial block */
    size_t nbuf;      /* bytes in buf, < 64 */
} app_sha256;

void app_sha256_init(app_sha256 *s);
void app_sha256_update(app_sha256 *s, const void *data, size_t n);
/* Writes the 32-byte digest; the context must be re-initialized after. */
void app_sha256_final(app_sha256 *s, uint8_t out[32]);
/* Digest as 64 lowercase hex characters plus NUL. */
void app_sha256_hex(const uint8_t digest[32], char out[65]);

#endif
