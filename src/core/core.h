/* core.h -- the bottom layer: errors, logging, half floats, buffers, UTF-8, time.
 *
 * Everything above includes this and nothing below it exists: libc only.
 *
 * Errors. A function that can fail returns an int status (0 ok, negative
 * CORE_E* code) and, when the caller passes a core_err, fills a one-line
 * human message.  The message is the product: it should name the file, the
 * byte offset or the key that was wrong, so that a user can act on it.
 *
 * Logging goes to one sink (stderr by default) with a level set once at
 * start; it is the only mutable global here besides that level.
 */
#ifndef CORE_H
#define CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

/* ---- errors --------------------------------------------------------- */

enum {
    CORE_OK = 0,
    CORE_EIO = -1,       /* open/read/write/mmap failed */
    CORE_EFORMAT = -2,   /* malformed input (file, request, text) */
    CORE_ENOTFOUND = -3, /* key, tensor, id absent */
    CORE_ETYPE = -4,     /* present but of another type */
    CORE_ENOMEM = -5,
    CORE_EINVAL = -6,    /* bad argument from a caller or user */
    CORE_ERANGE = -7,    /* value out of the allowed range */
    CORE_EUNSUP = -8,    /* valid but not supported by us */
    CORE_ECANCEL = -9,
    CORE_EFULL = -10,    /* a limit was reached (context, queue) */
};

typedef struct core_err {
    int code;
    char msg[512];
} core_err;

/* Set err (if not NULL) to code and a printf-style message; returns code so
 * call sites can write `return core_errf(err, CORE_EFORMAT, "...")`. */
int core_errf(core_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Short name of a code ("format error", ...). */
const char *core_strerror(int code);

/* ---- logging -------------------------------------------------------- */

enum { CORE_LOG_DEBUG = 0, CORE_LOG_INFO = 1, CORE_LOG_WARN = 2, CORE_LOG_ERROR = 3, CORE_LOG_OFF = 4 };
void core_log_set_level(int level);
int core_log_level(void);
/* Parse "debug|info|warn|error|off"; returns -1 if unknown. */
int core_log_parse_level(const char *s);
void core_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define LOG_DEBUG(...) core_log(CORE_LOG_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) core_log(CORE_LOG_INFO, __VA_ARGS__)
#define LOG_WARN(...) core_log(CORE_LOG_WARN, __VA_ARGS__)
#define LOG_ERROR(...) core_log(CORE_LOG_ERROR, __VA_ARGS__)

/* ---- half floats (IEEE binary16 and bfloat16), scalar reference -------- */

float core_f16_to_f32(uint16_t h);
uint16_t core_f32_to_f16(float f); /* round to nearest even, saturates to inf */
float core_bf16_to_f32(uint16_t h);
uint16_t core_f32_to_bf16(float f); /* round to nearest even, NaN kept NaN */

/* ---- growable byte buffer ------------------------------------------- */

typedef struct core_buf {
    char *data; /* always NUL-terminated when cap > 0 */
    size_t len;
    size_t cap;
} core_buf;

int core_buf_reserve(core_buf *b, size_t extra); /* ensure room for len+extra+1 */
int core_buf_append(core_buf *b, const void *p, size_t n);
int core_buf_puts(core_buf *b, const char *s);
int core_buf_printf(core_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void core_buf_clear(core_buf *b); /* len = 0, keeps memory */
void core_buf_free(core_buf *b);

/* ---- UTF-8 ------------------------------------------------------------ */

/* Decode one code point at s[0..n). Returns its byte length (1..4) and sets
 * *cp, or returns 0 if the bytes are not a valid, complete, shortest-form
 * UTF-8 sequence (then *cp is undefined). */
int core_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* Encode cp into out (at least 4 bytes). Returns length, 0 if cp is invalid. */
int core_utf8_encode(uint32_t cp, char *out);
/* 1 if all of s[0..n) is valid UTF-8. */
int core_utf8_valid(const char *s, size_t n);
/* The one sanitizer: bytes that are not UTF-8 become U+FFFD, one per
 * maximal invalid subpart (Unicode's recommended practice, what browsers'
 * decoders and Python's errors="replace" do): a lead byte and the
 * continuation bytes that could still follow it count as one; any other bad
 * byte (a stray continuation, C0, C1, F5..FF) as one. Overlong forms,
 * surrogates and code points above U+10FFFF are invalid from their first
 * impossible byte.
 *
 * core_utf8_step: one step at s[0..n) (n > 0). Returns the bytes taken,
 * with *ok = 1 for one valid character, 0 for a maximal invalid subpart (one
 * U+FFFD), or -1 for a sequence valid so far but cut by the end of s (a
 * stream holds those bytes for more; core_utf8_sanitize replaces them). */
#define CORE_UTF8_REPL "\xEF\xBF\xBD" /* U+FFFD */
size_t core_utf8_step(const char *s, size_t n, int *ok);
/* Append s[0..n) to out as valid UTF-8 (see above). 0 or CORE_ENOMEM. */
int core_utf8_sanitize(const char *s, size_t n, core_buf *out);
/* Length of the longest prefix of s[0..n) that ends on a character boundary
 * of a sequence that could still become valid; i.e. the bytes after it are
 * an incomplete (but so far valid) UTF-8 lead. Used by streaming decoders. */
size_t core_utf8_complete_prefix(const char *s, size_t n);

/* ---- files, time, misc ---------------------------------------------- */

/* Read a whole file into a malloc'd NUL-terminated buffer. */
int core_read_file(const char *path, char **out, size_t *len, core_err *err);
double core_now_s(void);   /* monotonic seconds */
uint64_t core_now_ns(void);
/* Peak resident set size of this process in bytes (0 if unknown). */
uint64_t core_peak_rss(void);
uint64_t core_rss(void);
/* Number of online CPUs (at least 1). */
int core_ncpu(void);
/* Overflow-checked arithmetic: return 0 on success, -1 on overflow. */
static inline int core_mul_u64(uint64_t a, uint64_t b, uint64_t *r) { return __builtin_mul_overflow(a, b, r) ? -1 : 0; }
static inline int core_add_u64(uint64_t a, uint64_t b, uint64_t *r) { return __builtin_add_overflow(a, b, r) ? -1 : 0; }

/* Aligned allocation (alignment a power of two >= sizeof(void*)); free with core_free_aligned. */
void *core_alloc_aligned(size_t size, size_t align);
void core_free_aligned(void *p);

#define CORE_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CORE_MAX(a, b) ((a) > (b) ? (a) : (b))
#define CORE_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
