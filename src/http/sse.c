/* sse.c -- streamed responses (Server-Sent Events and any chunked body).
 *
 * A stream is a byte queue between producers (any thread: the engine) and
 * one MHD content reader (the connection's own thread, in thread-per-
 * connection mode). The reader blocks on the stream's condvar; producers
 * append under the mutex and signal. When the reader finds nothing to send
 * it waits in slices of HTTP_SLICE_MS:
 *   - after each slice it peeks at the socket: EOF or an error there means
 *     the client left, so the stream is gone at once (even for non-SSE
 *     streams, which may not inject pings);
 *   - after ping_ms of silence an SSE stream sends ": ping\n\n": a client
 *     behind a proxy or a half-dead TCP peer is found by the failed write,
 *     as MHD notices closed clients only on write.
 * The stream ends (chunked terminator) when the producers closed it and
 * the queue is drained, or at once with the server stopping. Anything that
 * ends the connection makes the stream gone: writes then fail with
 * CORE_ECANCEL so the producer can stop burning compute.
 *
 * Ownership: refs counts the caller's references (prod_refs of them), the
 * MHD response's (dropped in the free callback, when MHD can never call the
 * reader again) and the request's (dropped when MHD reports the request
 * completed). The last one frees. No side waits for another.
 */
#include "http/http_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define HTTP_SLICE_MS 200u
#define HTTP_STREAM_MAX_QUEUED (16u << 20)
#define HTTP_STREAM_BLOCK 4096

static void stream_unref(http_stream *st) {
    pthread_mutex_lock(&st->mu);
    int last = --st->refs == 0;
    pthread_mutex_unlock(&st->mu);
    if (!last) return;
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    core_buf_free(&st->q);
    free(st);
}

/* 1 when the peer closed its side or the socket failed. MSG_PEEK: a
 * pipelined next request stays for MHD. */
static int peer_closed(int fd) {
    if (fd < 0) return 0;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return 1;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return 1;
    return 0;
}

static struct timespec abs_after_ns(uint64_t ns_from_epoch_mono) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ns_from_epoch_mono / 1000000000ull);
    ts.tv_nsec = (long)(ns_from_epoch_mono % 1000000000ull);
    return ts;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    http_stream *st = cls;
    (void)pos;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        size_t avail = st->q.len - st->qoff;
        if (avail) {
            size_t n = avail < max ? avail : max;
            memcpy(buf, st->q.data + st->qoff, n);
            st->qoff += n;
            if (st->qoff == st->q.len) {
                st->q.len = st->qoff = 0;
            } else if (st->qoff >= 65536) { /* keep the queue from creeping */
                memmove(st->q.data, st->q.data + st->qoff, st->q.len - st->qoff);
                st->q.len -= st->qoff;
                st->qoff = 0;
            }
            st->last_ns = core_now_ns();
            pthread_mutex_unlock(&st->mu);
            return (ssize_t)n;
        }
        if (st->stopped || st->closed) { /* clean end of the chunked body */
            pthread_mutex_unlock(&st->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (st->gone) {
            pthread_mutex_unlock(&st->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        uint64_t now = core_now_ns();
        uint64_t until = now + HTTP_SLICE_MS * 1000000ull;
        uint64_t ping_at = st->last_ns + (uint64_t)st->ping_ms * 1000000ull;
        if (st->sse && ping_at < until) until = ping_at > now ? ping_at : now;
        struct timespec ts = abs_after_ns(until);
        int rc = pthread_cond_timedwait(&st->cv, &st->mu, &ts);
        if (rc == ETIMEDOUT) {
            if (peer_closed(st->fd)) {
                st->gone = 1;
                pthread_cond_broadcast(&st->cv);
                pthread_mutex_unlock(&st->mu);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            if (st->sse && st->q.len == st->qoff && core_now_ns() >= ping_at && !st->gone && !st->closed &&
                core_buf_append(&st->q, ": ping\n\n", 8) != 0) {
                /* no memory for 8 bytes: give up on this connection */
                st->gone = 1;
                pthread_cond_broadcast(&st->cv);
            }
        }
    }
}

/* MHD freed the response: the reader will never run again. */
static void stream_free_cb(void *cls) {
    http_stream *st = cls;
    http_server *srv = st->srv; /* written only here and at creation */
    if (srv) {
        pthread_mutex_lock(&srv->mu);
        if (st->prev) st->prev->next = st->next;
        else srv->streams = st->next;
        if (st->next) st->next->prev = st->prev;
        st->prev = st->next = NULL;
        st->srv = NULL;
        pthread_mutex_unlock(&srv->mu);
    }
    pthread_mutex_lock(&st->mu);
    st->gone = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    stream_unref(st);
}

void http__stream_stop(http_stream *st) {
    pthread_mutex_lock(&st->mu);
    st->stopped = st->gone = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

void http__stream_mhd_done(http_stream *st, int error) {
    (void)error; /* done is done: either way no more bytes reach the client */
    pthread_mutex_lock(&st->mu);
    st->gone = st->done = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    stream_unref(st);
}

int http__stream_done(http_stream *st) {
    pthread_mutex_lock(&st->mu);
    int d = st->done;
    pthread_mutex_unlock(&st->mu);
    return d;
}

http_stream *http_respond_stream(http_req *r, int status, const char *ct, const http_header *hdrs,
                                 core_err *err) {
    http_server *srv = r->srv;
    if (srv->pool) {
        core_errf(err, CORE_EUNSUP, "http: streams need thread-per-connection mode (pool_threads = 0)");
        return NULL;
    }
    if (r->resp || r->queued || status < 100 || status > 999) {
        core_errf(err, CORE_EINVAL, "http: request already answered or bad status %d", status);
        return NULL;
    }
    if (!ct) ct = "text/event-stream";
    http_stream *st = calloc(1, sizeof *st);
    if (!st) {
        core_errf(err, CORE_ENOMEM, "http: out of memory");
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* matches core_now_ns */
    pthread_cond_init(&st->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&st->mu, NULL);
    st->refs = 3; /* caller, MHD response, request */
    st->prod_refs = 1;
    st->sse = strncasecmp(ct, "text/event-stream", 17) == 0;
    st->ping_ms = srv->ping_ms;
    st->fd = -1;
    st->last_ns = core_now_ns();
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) st->fd = ci->connect_fd;
    /* MHD sends the headers together with the first body bytes: a comment
     * gets them out now, so the client sees 200 before any token. */
    if (st->sse && core_buf_append(&st->q, ": ok\n\n", 6) != 0) goto nomem;
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK, stream_reader, st, stream_free_cb);
    if (!resp) goto nomem;
    pthread_mutex_lock(&srv->mu);
    st->srv = srv;
    st->next = srv->streams;
    if (st->next) st->next->prev = st;
    srv->streams = st;
    if (srv->stopping) st->stopped = st->gone = 1;
    pthread_mutex_unlock(&srv->mu);
    int rc = 0;
    if (st->sse) {
        rc = MHD_add_response_header(resp, "Cache-Control", "no-cache") == MHD_YES &&
                     MHD_add_response_header(resp, "X-Accel-Buffering", "no") == MHD_YES
                 ? 0
                 : CORE_ENOMEM;
        if (rc) MHD_destroy_response(resp);
    }
    if (!rc) rc = http__set_response(r, resp, status, ct, hdrs); /* destroys resp on failure */
    if (rc) { /* the free callback dropped MHD's reference; drop ours and the request's */
        core_errf(err, rc, "http: cannot build stream response (bad header?)");
        stream_unref(st);
        stream_unref(st);
        return NULL;
    }
    r->stream = st;
    return st;
nomem:
    core_buf_free(&st->q);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
    core_errf(err, CORE_ENOMEM, "http: out of memory");
    return NULL;
}

/* Can bytes be queued? mu held. */
static int writable(const http_stream *st, size_t more) {
    if (st->closed) return CORE_EINVAL;
    if (st->gone) return CORE_ECANCEL;
    if (st->q.len - st->qoff + more > HTTP_STREAM_MAX_QUEUED) return CORE_EFULL;
    return 0;
}

int http_stream_write(http_stream *st, const char *data, size_t len) {
    if (!st) return CORE_EINVAL;
    pthread_mutex_lock(&st->mu);
    int rc = writable(st, len);
    if (!rc && len) {
        rc = core_buf_append(&st->q, data, len) ? CORE_ENOMEM : 0;
        pthread_cond_broadcast(&st->cv);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int http_stream_event(http_stream *st, const char *event, const char *id, const char *data, size_t len) {
    if (!st || (!data && len) || (event && strpbrk(event, "\r\n")) || (id && strpbrk(id, "\r\n")))
        return CORE_EINVAL;
    if (!data) data = "";
    pthread_mutex_lock(&st->mu);
    int rc = writable(st, len + 64);
    size_t mark = st->q.len;
    if (!rc) {
        core_buf *q = &st->q;
        int bad = 0;
        if (event) bad |= core_buf_puts(q, "event: ") | core_buf_puts(q, event) | core_buf_puts(q, "\n");
        if (id) bad |= core_buf_puts(q, "id: ") | core_buf_puts(q, id) | core_buf_puts(q, "\n");
        /* One "data: " line per line of data; \r\n, \r and \n all end a line
         * (the SSE grammar), so none may appear inside a data line. */
        size_t i = 0;
        for (;;) {
            size_t j = i;
            while (j < len && data[j] != '\n' && data[j] != '\r') j++;
            bad |= core_buf_puts(q, "data: ") | core_buf_append(q, data + i, j - i) | core_buf_puts(q, "\n");
            if (j >= len) break;
            if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n') j++;
            i = j + 1; /* a trailing newline yields a last, empty line: kept */
        }
        bad |= core_buf_puts(q, "\n");
        if (bad) {
            q->len = mark; /* never leave half an event */
            rc = CORE_ENOMEM;
        }
        pthread_cond_broadcast(&st->cv);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int http_stream_comment(http_stream *st, const char *text) {
    if (!st || !text || strpbrk(text, "\r\n")) return CORE_EINVAL;
    pthread_mutex_lock(&st->mu);
    int rc = writable(st, strlen(text) + 4);
    if (!rc) {
        size_t mark = st->q.len;
        if (core_buf_puts(&st->q, ": ") | core_buf_puts(&st->q, text) | core_buf_puts(&st->q, "\n\n")) {
            st->q.len = mark;
            rc = CORE_ENOMEM;
        }
        pthread_cond_broadcast(&st->cv);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int http_stream_gone(const http_stream *cst) {
    http_stream *st = (http_stream *)cst; /* locking is not a logical mutation */
    if (!st) return 1;
    pthread_mutex_lock(&st->mu);
    int g = st->gone;
    pthread_mutex_unlock(&st->mu);
    return g;
}

int http_stream_wait_gone(http_stream *st, int timeout_ms) {
    if (!st) return 1;
    uint64_t until = core_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    struct timespec ts = abs_after_ns(until);
    pthread_mutex_lock(&st->mu);
    while (!st->gone && pthread_cond_timedwait(&st->cv, &st->mu, &ts) != ETIMEDOUT) {}
    int g = st->gone;
    pthread_mutex_unlock(&st->mu);
    return g;
}

http_stream *http_stream_ref(http_stream *st) {
    pthread_mutex_lock(&st->mu);
    st->refs++;
    st->prod_refs++;
    pthread_mutex_unlock(&st->mu);
    return st;
}

void http_stream_close(http_stream *st) {
    if (!st) return;
    pthread_mutex_lock(&st->mu);
    if (st->prod_refs > 0 && --st->prod_refs == 0) st->closed = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    stream_unref(st);
}
