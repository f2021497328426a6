/* core.c -- errors, logging, half floats, buffers, UTF-8, files and time.
 *
 * Small, dependency-free helpers every module uses. The half-float
 * conversions here are the scalar reference: kern has F16C twins for bulk
 * work, tested against these.
 */
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

/* ---- errors --------------------------------------------------------- */

int core_errf(core_err *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *core_strerror(int code) {
    switch (code) {
    case CORE_OK: return "ok";
    case CORE_EIO: return "i/o error";
    case CORE_EFORMAT: return "format error";
    case CORE_ENOTFOUND: return "not found";
    case CORE_ETYPE: return "wrong type";
    case CORE_ENOMEM: return "out of memory";
    case CORE_EINVAL: return "invalid argument";
    case CORE_ERANGE: return "out of range";
    case CORE_EUNSUP: return "unsupported";
    case CORE_ECANCEL: return "cancelled";
    case CORE_EFULL: return "limit reached";
    default: return "error";
    }
}

/* ---- logging -------------------------------------------------------- */

static int log_level = CORE_LOG_INFO;

void core_log_set_level(int level) { log_level = level; }
int core_log_level(void) { return log_level; }

int core_log_parse_level(const char *s) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (s && strcasecmp(s, names[i]) == 0) return i;
    return -1;
}

void core_log(int level, const char *fmt, ...) {
    static const char *tags[] = {"debug", "info", "warn", "error"};
    if (level < log_level || level >= CORE_LOG_OFF) return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "[%s] %s\n", tags[level], line);
}

/* ---- half floats ---------------------------------------------------- */

static inline uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float core_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000 | (man << 13)); /* inf/nan */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t core_f32_to_f16(float f) {
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (ax < 0x38800000) {                                   /* below 2^-14: subnormal or zero */
        if (ax < 0x33000000) return (uint16_t)sign;          /* < 2^-25 rounds to 0 */
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;                            /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = (ax >> 23) - 112, m = ax & 0x7fffff;
    uint32_t q = (e << 10) | (m >> 13), rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
    return (uint16_t)(sign | q);
}

float core_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t core_f32_to_bf16(float f) {
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ---- buffers -------------------------------------------------------- */

int core_buf_reserve(core_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t need = b->len + extra + 1;
    if (need < b->len) return CORE_ENOMEM;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) { cap = need; break; }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) return CORE_ENOMEM;
    b->data = p;
    b->cap = cap;
    b->data[b->len] = 0;
    return 0;
}

int core_buf_append(core_buf *b, const void *p, size_t n) {
    if (core_buf_reserve(b, n)) return CORE_ENOMEM;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int core_buf_puts(core_buf *b, const char *s) { return core_buf_append(b, s, strlen(s)); }

int core_buf_printf(core_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return CORE_EINVAL;
    if (core_buf_reserve(b, (size_t)n)) return CORE_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void core_buf_clear(core_buf *b) {
    b->len = 0;
    if (b->cap) b->data[0] = 0;
}

void core_buf_free(core_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- UTF-8 ---------------------------------------------------------- */

int core_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    if (n == 0) return 0;
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    uint32_t v, min;
    if ((c & 0xe0) == 0xc0) { len = 2; v = c & 0x1f; min = 0x80; }
    else if ((c & 0xf0) == 0xe0) { len = 3; v = c & 0x0f; min = 0x800; }
    else if ((c & 0xf8) == 0xf0) { len = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

int core_utf8_encode(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) { o[0] = 0xc0 | (cp >> 6); o[1] = 0x80 | (cp & 0x3f); return 2; }
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;
    if (cp < 0x10000) {
        o[0] = 0xe0 | (cp >> 12); o[1] = 0x80 | ((cp >> 6) & 0x3f); o[2] = 0x80 | (cp & 0x3f);
        return 3;
    }
    if (cp <= 0x10ffff) {
        o[0] = 0xf0 | (cp >> 18); o[1] = 0x80 | ((cp >> 12) & 0x3f);
        o[2] = 0x80 | ((cp >> 6) & 0x3f); o[3] = 0x80 | (cp & 0x3f);
        return 4;
    }
    return 0;
}

int core_utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        if (p[i] < 0x80) { i++; continue; }
        int l = core_utf8_decode(p + i, n - i, &cp);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* Bytes a sequence with this lead has; 0 if it can lead none. */
static int seq_need(unsigned char b) {
    return b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
}

/* May b be continuation byte k (1-based) after lead? (Unicode table 3-7:
 * the second byte's range rules out overlongs, surrogates, > U+10FFFF.) */
static int cont_ok(unsigned char lead, int k, unsigned char b) {
    if (k == 1) {
        if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
        if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
        if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
        if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
    }
    return b >= 0x80 && b <= 0xBF;
}

size_t core_utf8_step(const char *s, size_t n, int *ok) {
    const unsigned char *p = (const unsigned char *)s;
    int need = seq_need(p[0]), k = 1;
    if (p[0] < 0x80) { *ok = 1; return 1; }
    if (!need) { *ok = 0; return 1; }
    while (k < need && (size_t)k < n && cont_ok(p[0], k, p[k])) k++;
    *ok = k == need ? 1 : (size_t)k == n ? -1 : 0;
    return (size_t)k;
}

int core_utf8_sanitize(const char *s, size_t n, core_buf *out) {
    if (core_buf_reserve(out, n)) return CORE_ENOMEM;
    if (!n) return 0;
    size_t i = 0, run = 0; /* s[run..i) is valid and not yet copied */
    while (i < n) {
        if ((unsigned char)s[i] < 0x80) { i++; continue; }
        int ok;
        size_t k = core_utf8_step(s + i, n - i, &ok);
        if (ok == 1) { i += k; continue; }
        if (core_buf_append(out, s + run, i - run) || core_buf_append(out, CORE_UTF8_REPL, 3)) return CORE_ENOMEM;
        i += k;
        run = i;
    }
    return core_buf_append(out, s + run, n - run) ? CORE_ENOMEM : 0;
}

size_t core_utf8_complete_prefix(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    /* Look back at most 3 bytes for a lead byte whose sequence is cut short. */
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        unsigned c = p[n - k];
        if ((c & 0xc0) == 0x80) continue; /* continuation: keep looking */
        int need = c >= 0xf0 && c < 0xf8 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        if (c >= 0xf8) need = 1;
        return (size_t)need > k ? n - k : n;
    }
    return n;
}

/* ---- files, time, misc ---------------------------------------------- */

int core_read_file(const char *path, char **out, size_t *len, core_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return core_errf(err, CORE_EIO, "%s: %s", path, strerror(errno));
    core_buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (core_buf_append(&b, chunk, n)) {
            fclose(f);
            core_buf_free(&b);
            return core_errf(err, CORE_ENOMEM, "%s: out of memory", path);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        core_buf_free(&b);
        return core_errf(err, CORE_EIO, "%s: read error", path);
    }
    if (core_buf_reserve(&b, 0)) return core_errf(err, CORE_ENOMEM, "%s: out of memory", path);
    *out = b.data;
    if (len) *len = b.len;
    return 0;
}

uint64_t core_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double core_now_s(void) { return (double)core_now_ns() * 1e-9; }

uint64_t core_peak_rss(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru)) return 0;
    return (uint64_t)ru.ru_maxrss * 1024;
}

uint64_t core_rss(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long size = 0, res = 0;
    int ok = fscanf(f, "%lu %lu", &size, &res) == 2;
    fclose(f);
    return ok ? (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
}

int core_ncpu(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void *core_alloc_aligned(size_t size, size_t align) {
    void *p = NULL;
    if (size == 0) size = align;
    if (posix_memalign(&p, align, size)) return NULL;
    return p;
}

void core_free_aligned(void *p) { free(p); }
