/* stop.c -- stop strings over a stream of text pieces.
 *
 * Invariant: s->hold is the longest suffix of everything pushed so far that
 * is a proper prefix of some stop string; everything before it has been
 * emitted. Why that is enough: a stop string that has not completed yet must
 * start inside the text not yet emitted, and a start position before the
 * longest such suffix would itself be a longer suffix that is a prefix of a
 * stop string.
 *
 * Input is taken in chunks of at most SAMPLE_STOP_LEN bytes; each chunk is
 * appended to the held bytes in the fixed window s->win (hold < STOP_LEN, so
 * the window never overflows) and scanned there. So a push of any size works
 * without allocating. Stop strings are few and short; the scan is
 * O(window * stops), which is nothing next to a forward pass.
 */
#include "sample/sample.h"

#include <stdint.h>
#include <string.h>

int sample_stop_init(sample_stop *s, const char *const *stops, size_t n, core_err *err) {
    memset(s, 0, sizeof *s);
    if (n > SAMPLE_STOP_MAX)
        return core_errf(err, CORE_EINVAL, "too many stop strings: %zu (at most %d)", n, SAMPLE_STOP_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t l = stops[i] ? strlen(stops[i]) : 0;
        if (l == 0) return core_errf(err, CORE_EINVAL, "stop string %zu is empty", i);
        if (l > SAMPLE_STOP_LEN)
            return core_errf(err, CORE_EINVAL, "stop string %zu is %zu bytes (at most %d)", i, l, SAMPLE_STOP_LEN);
        memcpy(s->stops[i], stops[i], l + 1);
        s->lens[i] = l;
        if (l > s->max_len) s->max_len = l;
    }
    s->n = n;
    return 0;
}

/* Start of the stop string that completes first in w[0..n) (smallest end;
 * on a tie the longer one), or n. "Completes first" is what makes the result
 * independent of how the text was cut: fed byte by byte, that is the match
 * that would be seen first. */
static size_t find_stop(const sample_stop *s, const char *w, size_t n) {
    size_t best = n, best_end = SIZE_MAX;
    for (size_t k = 0; k < s->n; k++) {
        const char *p = memmem(w, n, s->stops[k], s->lens[k]);
        if (!p) continue;
        size_t at = (size_t)(p - w), end = at + s->lens[k];
        if (end < best_end || (end == best_end && at < best)) best = at, best_end = end;
    }
    return best;
}

/* Length of the longest suffix of w[0..n) that is a proper prefix of a stop. */
static size_t partial_tail(const sample_stop *s, const char *w, size_t n) {
    size_t from = s->max_len <= n ? n - s->max_len + 1 : 0; /* longer suffixes cannot be proper prefixes */
    for (size_t i = from; i < n; i++) {
        size_t t = n - i;
        for (size_t k = 0; k < s->n; k++)
            if (t < s->lens[k] && !memcmp(w + i, s->stops[k], t)) return t;
    }
    return 0;
}

int sample_stop_push(sample_stop *s, const char *text, size_t len, core_buf *emit) {
    if (s->done) return 1;
    if (!s->n) return (len && core_buf_append(emit, text, len)) ? CORE_ENOMEM : 0;
    while (len) {
        size_t chunk = CORE_MIN(len, (size_t)SAMPLE_STOP_LEN);
        size_t n = s->hold_len + chunk;
        memcpy(s->win, s->hold, s->hold_len);
        memcpy(s->win + s->hold_len, text, chunk);
        text += chunk;
        len -= chunk;
        size_t at = find_stop(s, s->win, n);
        if (at < n) {
            s->done = 1;
            s->hold_len = 0;
            return core_buf_append(emit, s->win, at) ? CORE_ENOMEM : 1;
        }
        size_t t = partial_tail(s, s->win, n);
        if (core_buf_append(emit, s->win, n - t)) return CORE_ENOMEM;
        memcpy(s->hold, s->win + (n - t), t);
        s->hold_len = t;
    }
    return 0;
}

int sample_stop_flush(sample_stop *s, core_buf *emit) {
    size_t h = s->hold_len;
    s->hold_len = 0;
    if (s->done || !h) return 0;
    return core_buf_append(emit, s->hold, h) ? CORE_ENOMEM : 0;
}
