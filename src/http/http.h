/* http.h -- a small HTTP server over libmicrohttpd, with streaming (SSE).
 *
 * Generic glue: this module knows routes only as strings and bodies only as
 * bytes; it knows nothing about models, chat or JSON. src/api builds on it.
 *
 * Model. One handler function serves every request. It is called once per
 * request, on an MHD connection thread, after the whole body has arrived
 * (bounded by max_body; larger bodies get 413 before the handler runs). The
 * handler reads the request through the http_req_* view and answers exactly
 * once with http_respond*, http_respond_asset or http_respond_stream. If it
 * returns nonzero without answering, the client gets 500 with the message
 * from `err`; if it returns 0 without answering, 500 "no response".
 *
 * Streams. http_respond_stream() answers with a chunked response whose bytes
 * come later, possibly from another thread (the engine). The stream is
 * reference counted: MHD holds one reference until the connection is done,
 * the caller holds one until http_stream_close(). Either side may let go
 * first. For text/event-stream the module sends ": ping\n\n" after
 * ping_ms of silence, so a client that went away is noticed even while the
 * producer is silent (queue wait, prefill); it also peeks at the socket for
 * EOF. Once the client is gone or the server stops, http_stream_gone() is
 * true and writes fail with CORE_ECANCEL: the producer should stop work.
 *
 * Threads. The server runs in thread-per-connection mode (the default):
 * a stream's content reader blocks on a condition variable, which needs a
 * thread of its own per connection. pool_threads > 0 selects internal epoll
 * with a thread pool instead: faster for small requests, but it cannot
 * stream (http_respond_stream fails there). See http.c for numbers.
 *
 * Host names. A request whose Host header names neither a loopback name
 * ("localhost"), nor an IP address literal, nor one of cfg->allow_hosts
 * gets 421 before anything else runs: a web page whose own name was
 * re-pointed at 127.0.0.1 (DNS rebinding) reaches us with its name in Host,
 * while a browser that really connected to an address sends that address.
 *
 * Connections. A connection that has not yet sent a whole request
 * ("waiting": idle keep-alive, a header block or a body on its way) has
 * deadlines that bytes do not extend: header_timeout_s for the header
 * block (counted from accept or from the end of the previous response) and
 * body_timeout_s for the body; past them it is closed. When the pool fills
 * (3/4 of max_conns) or one address holds more than max_waiting_per_ip
 * waiting connections, the oldest waiting one (of that address) is closed
 * to make room, so slow or idle clients cannot keep a complete request
 * out; connections busy with a request or a stream are never shed. (A shed
 * connection holds its slot until MHD reaps it, a moment later: a burst of
 * connections faster than that can still find the pool full.) Bound
 * to a non-loopback address, one client address may hold at most 3/4 of
 * max_conns in all.
 *
 * Every response carries the security headers: Content-Security-Policy
 * (from the config), X-Content-Type-Options: nosniff, Referrer-Policy:
 * same-origin, X-Frame-Options: DENY.
 */
#ifndef HTTP_H
#define HTTP_H

#include <stddef.h>

#include "core/core.h"

typedef struct http_server http_server;
typedef struct http_req http_req;
typedef struct http_stream http_stream;

/* One extra response header. Arrays of them end with {NULL, NULL}. Names and
 * values must not contain CR or LF (rejected with CORE_EINVAL). */
typedef struct http_header {
    const char *name;
    const char *value;
} http_header;

/* Zero means "default" for every field, so `http_config c = {0};` works. */
typedef struct http_config {
    const char *host;          /* numeric IPv4/IPv6 address to bind; NULL -> "127.0.0.1" */
    int port;                  /* 0 -> any free port (see http_server_port) */
    size_t max_body;           /* bytes; 0 -> 8 MiB; larger bodies -> 413 */
    size_t max_header;         /* per-connection header memory; 0 -> 32 KiB; over -> 431 */
    unsigned conn_timeout_s;   /* idle connection timeout; 0 -> 30 s */
    unsigned max_conns;        /* concurrent connections (= threads); 0 -> 1024, at most the fd limit - 64 */
    unsigned header_timeout_s; /* accept or end of the last response -> whole header block; 0 -> 10 s */
    unsigned body_timeout_s;   /* whole header block -> whole body; 0 -> 30 s */
    unsigned max_waiting_per_ip; /* connections one address may hold without a complete request; 0 -> max_conns/2 */
    unsigned pool_threads;     /* 0 -> thread per connection (streams work); N -> epoll pool, no streams */
    unsigned ping_ms;          /* SSE keep-alive comment after this much silence; 0 -> 1000 */
    const char *csp;           /* Content-Security-Policy; NULL -> "default-src 'self'" */
    /* Host names served besides localhost and IP literals (a reverse
     * proxy's name), compared case-insensitively without the port;
     * NULL-terminated, may be NULL; "*" serves any name. Copied. */
    const char *const *allow_hosts;
} http_config;

/* The request handler. `ctx` is the pointer given to http_server_new. `req`
 * is valid until the handler returns (keep nothing from it; copy what you
 * need). Return 0, or nonzero with `err` filled for a 500 (when no response
 * was made). Called concurrently from several connection threads. */
typedef int (*http_handler_fn)(void *ctx, http_req *req, core_err *err);

/* ---- server ---------------------------------------------------------- */

/* Bind and start serving. On success *out owns the server (free it with
 * http_server_free). Returns 0 or CORE_EIO (bind failed, port in use, ...)
 * / CORE_EINVAL (bad host) / CORE_ENOMEM with `err` filled. */
int http_server_new(const http_config *cfg, http_handler_fn handler, void *ctx,
                    http_server **out, core_err *err);
/* The bound TCP port (useful when cfg->port was 0). */
int http_server_port(const http_server *s);
/* Stop accepting, end every open stream (clients see a clean end of the
 * chunked body; producers see http_stream_gone), wait for every connection
 * thread. Idempotent. Must not be called from a handler. */
void http_server_stop(http_server *s);
/* Stop (if needed) and free. NULL is a no-op. Streams still held by
 * producers stay valid (gone) until they call http_stream_close. */
void http_server_free(http_server *s);

/* ---- request view (valid only during the handler call) ---------------- */

const char *http_req_method(const http_req *r); /* "GET", "POST", ... */
/* Percent-decoded path without the query string, e.g. "/v1/chat". */
const char *http_req_path(const http_req *r);
/* Query argument value (decoded), "" for "?flag", NULL when absent. A
 * query of more than HTTP_MAX_QUERY_ARGS arguments is answered 414 before
 * the handler runs. */
#define HTTP_MAX_QUERY_ARGS 100
const char *http_req_query(const http_req *r, const char *key);
/* Header value, name compared case-insensitively; NULL when absent. */
const char *http_req_header(const http_req *r, const char *name);
/* 1 if the request's Content-Type is the media type `mime` (compared
 * case-insensitively, parameters such as "; charset=utf-8" ignored). */
int http_req_type_is(const http_req *r, const char *mime);
/* Cookie value; NULL when absent. */
const char *http_req_cookie(const http_req *r, const char *name);
/* Client address as text ("127.0.0.1", "::1"). */
const char *http_req_remote(const http_req *r);
/* The request body, NUL-terminated (the NUL is not counted in *len); "" and
 * 0 when there is none. Always complete when the handler runs. */
const char *http_req_body(const http_req *r, size_t *len);
/* 1: the body has fully arrived. Always 1 inside the handler; here so that
 * callers can assert what they rely on. */
int http_req_body_complete(const http_req *r);

/* Queue an extra header for whichever response this request gets (e.g.
 * Retry-After, Set-Cookie; may be called several times, even with the same
 * name). Strings are copied. Returns 0, CORE_EINVAL (CR/LF), CORE_ENOMEM. */
int http_req_add_header(http_req *r, const char *name, const char *value);

/* ---- responses (each request gets exactly one; a second one fails with
 *      CORE_EINVAL) ------------------------------------------------------ */

/* Respond with a copy of body[0..len). content_type NULL -> none sent. */
int http_respond(http_req *r, int status, const char *content_type, const void *body, size_t len);
/* Same, plus `hdrs` ({NULL,NULL}-terminated, may be NULL). */
int http_respond_ex(http_req *r, int status, const char *content_type, const void *body,
                    size_t len, const http_header *hdrs);
/* Respond with a malloc'd body whose ownership passes to the module (also on
 * failure), e.g. the string from json_dumps(). */
int http_respond_take(http_req *r, int status, const char *content_type, char *body, size_t len);
/* text/plain; charset=utf-8 response with `text` and a trailing newline. */
int http_respond_text(http_req *r, int status, const char *text);

/* Serve the embedded asset at exactly `path` (see assets.h) with ETag and
 * Cache-Control: no-cache; 304 for a matching If-None-Match; 404 text when
 * there is no such asset. No file system is touched. Returns 0 when a
 * response (including the 404) was made. */
int http_respond_asset(http_req *r, const char *path);

/* ---- streams ---------------------------------------------------------- */

/* Answer with a stream. For "text/event-stream" (NULL means that) the
 * headers Cache-Control: no-cache and X-Accel-Buffering: no are added and
 * the headers reach the client at once (an initial ": ok" comment flushes
 * them). Returns the stream with one reference owned by the caller (give it
 * back with http_stream_close), or NULL (no response made; `err` says why:
 * CORE_EUNSUP in pool mode, CORE_EINVAL if already answered). */
http_stream *http_respond_stream(http_req *r, int status, const char *content_type,
                                 const http_header *hdrs, core_err *err);

/* Queue raw bytes for the client. Any thread. Returns 0, CORE_ECANCEL when
 * the client is gone or the server is stopping, CORE_EFULL when more than
 * 16 MiB are waiting unsent, CORE_EINVAL after http_stream_close. */
int http_stream_write(http_stream *s, const char *data, size_t len);
/* Queue one SSE event: optional "event: NAME" and "id: ID" lines (NULL to
 * omit; CR/LF in them -> CORE_EINVAL), then data[0..len) split at "\n",
 * "\r\n" or "\r" into one "data: " line each, then a blank line. len 0 sends
 * a single empty "data:" line. Same returns as http_stream_write. */
int http_stream_event(http_stream *s, const char *event, const char *id, const char *data,
                      size_t len);
/* Send an SSE comment (": text\n\n"), e.g. a progress note. */
int http_stream_comment(http_stream *s, const char *text);
/* 1 once the client disconnected, the server is stopping, or the
 * connection otherwise ended: stop producing. Any thread, cheap. */
int http_stream_gone(const http_stream *s);
/* Block up to timeout_ms for the stream to become gone; returns gone. For
 * producers that have nothing to do but wait (and tests). */
int http_stream_wait_gone(http_stream *s, int timeout_ms);
/* Take an extra reference (e.g. for a second thread); each ref needs its
 * own http_stream_close. */
http_stream *http_stream_ref(http_stream *s);
/* End of stream (the last queued bytes are still sent, then the chunked
 * body ends) and drop the caller's reference. s must not be used after.
 * With extra references, only the last close ends the stream. NULL ok. */
void http_stream_close(http_stream *s);

/* ---- auth ---------------------------------------------------------------- */

/* 1 if `key` is NULL or "" (no key configured), or the request carries
 * "Authorization: Bearer <key>" (scheme case-insensitive) with exactly that
 * key; 0 otherwise. The comparison takes time independent of where the
 * bytes differ. */
int http_check_bearer(const http_req *r, const char *key);

/* Connection counters since start, for tests and metrics. */
typedef struct http_stats {
    unsigned open;          /* connections now */
    unsigned long long shed; /* waiting connections closed to make room */
    unsigned long long timed_out; /* closed at the header or body deadline */
} http_stats;
void http_server_stats(http_server *s, http_stats *out);

/* Reason phrase for a status code ("Not Found"), "" when unknown. */
const char *http_status_text(int status);

#endif
