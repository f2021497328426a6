/* test_http.c -- the HTTP glue over real loopback sockets.
 *
 * Every test starts a server on 127.0.0.1 with port 0 (a free port) and
 * stops it at the end. The client is a small raw-socket one written here
 * (buffered reader, Content-Length and chunked bodies), so keep-alive and
 * the exact bytes of SSE framing are visible. No timing assertions except
 * generous bounds on disconnect detection and stop (both are features).
 *
 * HTTP_BENCH=N runs N GETs against both thread modes (1 and 4 keep-alive
 * clients, and N/4 with a new connection each) and prints requests per
 * second; the default N=200 only exercises the path. Numbers: http.c.
 */
#include "t.h"
#include "core/core.h"
#include "http/assets.h"
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

/* ---- raw client ------------------------------------------------------ */

typedef struct cli {
    int fd;
    char buf[1 << 16];
    size_t len;
} cli;

typedef struct resp {
    int status;
    char head[8192];   /* raw header block, lower-cased names not applied */
    core_buf body;
    int chunked;
} resp;

static int cli_open(cli *c, int port) {
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -1;
    struct timeval tv = {5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void cli_close(cli *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static int cli_send(cli *c, const void *p, size_t n) {
    const char *s = p;
    while (n) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cli_sends(cli *c, const char *s) { return cli_send(c, s, strlen(s)); }

/* Ensure at least n buffered bytes; -1 on EOF/timeout. */
static int cli_fill(cli *c, size_t n) {
    while (c->len < n) {
        if (c->len == sizeof c->buf) return -1;
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r <= 0) return -1;
        c->len += (size_t)r;
    }
    return 0;
}

static void cli_consume(cli *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Read a line ending in \r\n (without it) into out. */
static int cli_line(cli *c, char *out, size_t cap) {
    for (;;) {
        char *e = memmem(c->buf, c->len, "\r\n", 2);
        if (e) {
            size_t n = (size_t)(e - c->buf);
            if (n >= cap) return -1;
            memcpy(out, c->buf, n);
            out[n] = 0;
            cli_consume(c, n + 2);
            return 0;
        }
        if (cli_fill(c, c->len + 1)) return -1;
    }
}

/* Header value from a raw block ("Name: value\r\n"), case-insensitive. */
static const char *hval(const char *head, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (const char *p = head; *p;) {
        const char *e = strstr(p, "\r\n");
        if (!e) break;
        if ((size_t)(e - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ') v++;
            size_t n = (size_t)(e - v) < cap - 1 ? (size_t)(e - v) : cap - 1;
            memcpy(out, v, n);
            out[n] = 0;
            return out;
        }
        p = e + 2;
    }
    return NULL;
}

/* Status line and headers. */
static int read_head(cli *c, resp *r) {
    char line[4096];
    r->head[0] = 0;
    r->status = 0;
    if (cli_line(c, line, sizeof line)) return -1;
    if (sscanf(line, "HTTP/1.%*d %d", &r->status) != 1) return -1;
    size_t hl = 0;
    for (;;) {
        if (cli_line(c, line, sizeof line)) return -1;
        if (!line[0]) break;
        int n = snprintf(r->head + hl, sizeof r->head - hl, "%s\r\n", line);
        if (n < 0 || (size_t)n >= sizeof r->head - hl) return -1;
        hl += (size_t)n;
    }
    char v[64];
    r->chunked = hval(r->head, "Transfer-Encoding", v, sizeof v) && strcasecmp(v, "chunked") == 0;
    return 0;
}

/* One chunk appended to r->body; returns its size, 0 at the end, -1 error. */
static long read_chunk(cli *c, resp *r) {
    char line[64];
    if (cli_line(c, line, sizeof line)) return -1;
    long n = strtol(line, NULL, 16);
    if (n < 0) return -1;
    if (n == 0) {
        if (cli_line(c, line, sizeof line)) return -1; /* blank line after trailers */
        return 0;
    }
    if (cli_fill(c, (size_t)n + 2)) return -1;
    core_buf_append(&r->body, c->buf, (size_t)n);
    cli_consume(c, (size_t)n + 2);
    return n;
}

/* A whole response (head and body). HEAD/304 bodies are empty. */
static int read_resp(cli *c, resp *r, int no_body) {
    core_buf_clear(&r->body);
    if (read_head(c, r)) return -1;
    if (no_body || r->status == 304 || r->status == 204) return 0;
    if (r->chunked) {
        long n;
        while ((n = read_chunk(c, r)) > 0) {}
        return n == 0 ? 0 : -1;
    }
    char v[64];
    if (!hval(r->head, "Content-Length", v, sizeof v)) { /* until close */
        for (;;) {
            if (cli_fill(c, c->len + 1)) break;
        }
        core_buf_append(&r->body, c->buf, c->len);
        cli_consume(c, c->len);
        return 0;
    }
    size_t n = (size_t)strtoull(v, NULL, 10);
    while (n) {
        if (!c->len && cli_fill(c, 1)) return -1;
        size_t k = c->len < n ? c->len : n;
        core_buf_append(&r->body, c->buf, k);
        cli_consume(c, k);
        n -= k;
    }
    return 0;
}

/* One request on a fresh connection. */
static int fetch(int port, const char *req, resp *r) {
    cli *c = malloc(sizeof *c);
    if (!c || cli_open(c, port)) {
        free(c);
        return -1;
    }
    int rc = cli_sends(c, req) ? -1 : read_resp(c, r, 0);
    cli_close(c);
    free(c);
    return rc;
}

/* ---- the test server's handler ------------------------------------------- */

typedef struct shared {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    http_stream *silent; /* last /silent stream, one reference held for the test */
    int n_silent;
} shared;

static shared g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0};

typedef struct producer {
    http_stream *st;
    int n, gap_ms;
} producer;

static void *produce(void *arg) {
    producer *p = arg;
    char data[64];
    for (int i = 0; i < p->n; i++) {
        snprintf(data, sizeof data, "token %d", i);
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        if (http_stream_event(p->st, "tok", id, data, strlen(data)) != 0) break;
        usleep((useconds_t)p->gap_ms * 1000);
    }
    http_stream_event(p->st, "done", NULL, "[DONE]", 6);
    http_stream_close(p->st);
    free(p);
    return NULL;
}

static int handler(void *ctx, http_req *r, core_err *err) {
    (void)ctx;
    const char *path = http_req_path(r);
    const char *m = http_req_method(r);
    if (strcmp(path, "/hello") == 0) return http_respond(r, 200, "text/plain", "hello", 5);
    if (strcmp(path, "/echo") == 0) {
        size_t n;
        const char *b = http_req_body(r, &n);
        const char *q = http_req_query(r, "q");
        const char *x = http_req_header(r, "x-TEST");
        char info[256];
        snprintf(info, sizeof info, "%s|%s|%s|%s|%d", m, q ? q : "-", x ? x : "-", http_req_remote(r),
                 http_req_body_complete(r));
        http_header h[] = {{"X-Info", info}, {NULL, NULL}};
        return http_respond_ex(r, 200, "application/octet-stream", b, n, h);
    }
    if (strcmp(path, "/ctype") == 0) {
        const char *q = http_req_query(r, "a99");
        char out[64];
        snprintf(out, sizeof out, "%d %s", http_req_type_is(r, "application/json"), q ? q : "-");
        return http_respond_text(r, 200, out);
    }
    if (strcmp(path, "/fail") == 0) return core_errf(err, CORE_EFORMAT, "boom: bad thing");
    if (strcmp(path, "/none") == 0) return 0;
    if (strcmp(path, "/headers") == 0) {
        int bad = http_req_add_header(r, "X-Evil", "a\r\nSet-Cookie: x=1");
        http_req_add_header(r, "Retry-After", "7");
        http_req_add_header(r, "Set-Cookie", "a=1; HttpOnly");
        http_req_add_header(r, "Set-Cookie", "b=2");
        int again = http_respond(r, 200, "text/plain", "x", 1);
        int twice = http_respond(r, 200, "text/plain", "y", 1);
        char body[64];
        snprintf(body, sizeof body, "%d %d %d", bad, again, twice);
        (void)body;
        return (bad == CORE_EINVAL && again == 0 && twice == CORE_EINVAL) ? 0 : core_errf(err, CORE_EINVAL, "header checks");
    }
    if (strcmp(path, "/auth") == 0)
        return http_check_bearer(r, "sekrit-key") ? http_respond_text(r, 200, "ok")
                                                  : http_respond_text(r, 401, "no");
    if (strcmp(path, "/json") == 0) {
        char *b = strdup("{\"a\":1}");
        return http_respond_take(r, 201, "application/json", b, strlen(b));
    }
    if (strncmp(path, "/static/", 8) == 0 || strcmp(path, "/asset") == 0) {
        const char *p = http_req_query(r, "p");
        return http_respond_asset(r, p ? p : path);
    }
    if (strcmp(path, "/sse") == 0) {
        const char *ns = http_req_query(r, "n");
        http_header h[] = {{"X-Stream", "yes"}, {NULL, NULL}};
        http_stream *st = http_respond_stream(r, 200, NULL, h, err);
        if (!st) return err->code ? err->code : CORE_EIO;
        producer *p = malloc(sizeof *p);
        p->st = st;
        p->n = ns ? atoi(ns) : 20;
        p->gap_ms = 5;
        pthread_t t;
        if (pthread_create(&t, NULL, produce, p) != 0) {
            http_stream_close(st);
            free(p);
            return 0;
        }
        pthread_detach(t);
        return 0;
    }
    if (strcmp(path, "/fmt") == 0) {
        http_stream *st = http_respond_stream(r, 200, "text/event-stream; charset=utf-8", NULL, err);
        if (!st) return err->code;
        http_stream_event(st, NULL, NULL, "a\nb\r\nc\rd", 8);
        http_stream_event(st, "e1", "7", "x", 1);
        http_stream_event(st, NULL, NULL, "", 0);
        http_stream_event(st, NULL, NULL, "end\n", 4);
        http_stream_comment(st, "note");
        int bad = http_stream_event(st, "a\nb", NULL, "x", 1);
        http_stream_write(st, bad == CORE_EINVAL ? "raw\n" : "BAD\n", 4);
        http_stream_close(st);
        return 0;
    }
    if (strcmp(path, "/ndjson") == 0) {
        http_stream *st = http_respond_stream(r, 200, "application/x-ndjson", NULL, err);
        if (!st) return err->code;
        http_stream_write(st, "{}\n{}\n", 6);
        http_stream_close(st);
        return 0;
    }
    if (strcmp(path, "/silent") == 0) {
        http_stream *st = http_respond_stream(r, 200, NULL, NULL, err);
        if (!st) return err->code;
        pthread_mutex_lock(&g.mu);
        if (g.silent) http_stream_close(g.silent);
        g.silent = st; /* the test is the producer: it closes */
        g.n_silent++;
        pthread_cond_broadcast(&g.cv);
        pthread_mutex_unlock(&g.mu);
        return 0;
    }
    return http_respond_text(r, 404, "not found");
}

/* Wait for the handler to publish a /silent stream; takes it over. */
static http_stream *take_silent(int want_n) {
    http_stream *st = NULL;
    pthread_mutex_lock(&g.mu);
    for (int i = 0; i < 50 && g.n_silent < want_n; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
        pthread_cond_timedwait(&g.cv, &g.mu, &ts);
    }
    if (g.n_silent >= want_n) {
        st = g.silent;
        g.silent = NULL;
    }
    pthread_mutex_unlock(&g.mu);
    return st;
}

static http_server *start(const http_config *cfg) {
    http_server *s = NULL;
    core_err e = {0};
    int rc = http_server_new(cfg, handler, NULL, &s, &e);
    CHECK_MSG(rc == 0, "%s", e.msg);
    if (rc == 0) CHECK(http_server_port(s) > 0);
    return rc == 0 ? s : NULL;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_get_post(void) {
    http_server *s = start(NULL);
    if (!s) return;
    int port = http_server_port(s);
    resp r = {0};
    char v[256];
    CHECK(fetch(port, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.body.data, "hello");
    CHECK_EQ_STR(hval(r.head, "X-Content-Type-Options", v, sizeof v), "nosniff");
    CHECK_EQ_STR(hval(r.head, "X-Frame-Options", v, sizeof v), "DENY");
    CHECK_EQ_STR(hval(r.head, "Referrer-Policy", v, sizeof v), "same-origin");
    CHECK_EQ_STR(hval(r.head, "Content-Security-Policy", v, sizeof v), "default-src 'self'");

    /* a body big enough to arrive in several upload calls */
    size_t n = 200000;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++) big[i] = (char)('a' + i % 26);
    core_buf req = {0};
    core_buf_printf(&req, "POST /echo?q=a%%20b&z HTTP/1.1\r\nHost: localhost\r\nX-Test: yes\r\nContent-Length: %zu\r\n\r\n", n);
    core_buf_append(&req, big, n);
    cli c;
    CHECK(cli_open(&c, port) == 0);
    CHECK(cli_send(&c, req.data, req.len) == 0);
    CHECK(read_resp(&c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body.len, n);
    CHECK(r.body.len == n && memcmp(r.body.data, big, n) == 0);
    CHECK_EQ_STR(hval(r.head, "X-Info", v, sizeof v), "POST|a b|yes|127.0.0.1|1");
    cli_close(&c);

    /* chunked upload */
    CHECK(fetch(port, "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.body.data, "abcde");
    /* percent-decoded path */
    CHECK(fetch(port, "GET /hel%6Co HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_STR(r.body.data, "hello");
    CHECK(fetch(port, "GET /json HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 201);
    CHECK_EQ_STR(r.body.data, "{\"a\":1}");
    CHECK_EQ_STR(hval(r.head, "Content-Type", v, sizeof v), "application/json");
    free(big);
    core_buf_free(&req);
    core_buf_free(&r.body);
    http_server_free(s);
}

static void test_404_and_errors(void) {
    http_server *s = start(NULL);
    if (!s) return;
    int port = http_server_port(s);
    resp r = {0};
    char v[128];
    CHECK(fetch(port, "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(fetch(port, "GET /fail HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 500);
    CHECK(r.body.data && strstr(r.body.data, "boom: bad thing"));
    CHECK_EQ_STR(hval(r.head, "X-Frame-Options", v, sizeof v), "DENY");
    CHECK(fetch(port, "GET /none HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 500);
    CHECK(fetch(port, "GET /headers HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.body.data, "x");
    CHECK_EQ_STR(hval(r.head, "Retry-After", v, sizeof v), "7");
    CHECK(strstr(r.head, "Set-Cookie: a=1; HttpOnly\r\n") && strstr(r.head, "Set-Cookie: b=2\r\n"));
    CHECK(!strstr(r.head, "X-Evil") && !strstr(r.head, "x=1"));
    /* malformed requests: MHD answers 400 (or closes); the server lives on */
    CHECK(fetch(port, "BLAH\r\n\r\n", &r) != 0 || r.status == 400);
    /* a header block over max_header: 431 (or closed) */
    core_buf big = {0};
    core_buf_puts(&big, "GET /hello HTTP/1.1\r\nHost: localhost\r\nX-Big: ");
    for (int i = 0; i < 40000; i++) core_buf_puts(&big, "a");
    core_buf_puts(&big, "\r\n\r\n");
    int rc = fetch(port, big.data, &r);
    CHECK(rc != 0 || r.status == 431 || r.status == 413);
    CHECK(fetch(port, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    core_buf_free(&big);
    core_buf_free(&r.body);
    http_server_free(s);
}

static void test_413(void) {
    http_config cfg = {0};
    cfg.max_body = 1000;
    http_server *s = start(&cfg);
    if (!s) return;
    int port = http_server_port(s);
    resp r = {0};
    core_buf req = {0};
    core_buf_printf(&req, "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1001\r\n\r\n");
    for (int i = 0; i < 1001; i++) core_buf_puts(&req, "z");
    CHECK(fetch(port, req.data, &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    /* exactly the limit passes */
    core_buf_clear(&req);
    core_buf_printf(&req, "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n");
    for (int i = 0; i < 1000; i++) core_buf_puts(&req, "z");
    CHECK(fetch(port, req.data, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body.len, 1000);
    /* chunked: no length up front, refused at the end */
    core_buf_clear(&req);
    core_buf_puts(&req, "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        core_buf_puts(&req, "1f4\r\n");
        for (int j = 0; j < 500; j++) core_buf_puts(&req, "y");
        core_buf_puts(&req, "\r\n");
    }
    core_buf_puts(&req, "0\r\n\r\n");
    CHECK(fetch(port, req.data, &r) == 0);
    CHECK_EQ_INT(r.status, 413);
    /* absurd Content-Length */
    CHECK(fetch(port, "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 99999999999999999999999\r\n\r\n", &r) != 0 ||
          r.status == 413 || r.status == 400);
    core_buf_free(&req);
    core_buf_free(&r.body);
    http_server_free(s);
}

static void test_keepalive(void) {
    http_server *s = start(NULL);
    if (!s) return;
    cli c;
    resp r = {0};
    char v[64];
    CHECK(cli_open(&c, http_server_port(s)) == 0);
    /* two requests in one write (pipelined), then a third after reading */
    CHECK(cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
                        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc") == 0);
    CHECK(read_resp(&c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.body.data, "hello");
    CHECK(!hval(r.head, "Connection", v, sizeof v) || strcasecmp(v, "close") != 0);
    CHECK(read_resp(&c, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.body.data, "abc");
    for (int i = 0; i < 5; i++) {
        CHECK(cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n") == 0);
        CHECK(read_resp(&c, &r, 0) == 0);
        CHECK_EQ_STR(r.body.data, "hello");
    }
    /* HEAD: headers only */
    CHECK(cli_sends(&c, "HEAD /hello HTTP/1.1\r\nHost: localhost\r\n\r\n") == 0);
    CHECK(read_resp(&c, &r, 1) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n") == 0);
    CHECK(read_resp(&c, &r, 0) == 0);
    CHECK_EQ_STR(r.body.data, "hello");
    cli_close(&c);
    core_buf_free(&r.body);
    http_server_free(s);
}

/* Read SSE events from an open stream response until the body ends;
 * counts "event: tok" events in order. */
typedef struct sse_client {
    int port, n, got, in_order, done, status;
    char ctype[128], cache[64], accel[64];
} sse_client;

static void *sse_run(void *arg) {
    sse_client *sc = arg;
    cli *c = malloc(sizeof *c);
    resp r = {0};
    if (cli_open(c, sc->port) == 0) {
        char req[128];
        snprintf(req, sizeof req, "GET /sse?n=%d HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n", sc->n);
        if (cli_sends(c, req) == 0 && read_head(c, &r) == 0) {
            sc->status = r.status;
            hval(r.head, "Content-Type", sc->ctype, sizeof sc->ctype);
            hval(r.head, "Cache-Control", sc->cache, sizeof sc->cache);
            hval(r.head, "X-Accel-Buffering", sc->accel, sizeof sc->accel);
            sc->in_order = 1;
            long k;
            size_t scanned = 0;
            while ((k = read_chunk(c, &r)) > 0) {
                /* count complete events as they arrive */
                char *p;
                while ((p = memmem(r.body.data + scanned, r.body.len - scanned, "\n\n", 2))) {
                    *p = 0;
                    const char *ev = r.body.data + scanned;
                    int id;
                    if (strncmp(ev, "event: tok\nid: ", 15) == 0 && sscanf(ev + 15, "%d", &id) == 1) {
                        char want[64];
                        snprintf(want, sizeof want, "event: tok\nid: %d\ndata: token %d", id, id);
                        if (id != sc->got || strcmp(ev, want) != 0) sc->in_order = 0;
                        sc->got++;
                    } else if (strcmp(ev, "event: done\ndata: [DONE]") == 0) {
                        sc->done = 1;
                    }
                    *p = '\n';
                    scanned = (size_t)(p - r.body.data) + 2;
                }
            }
            if (k != 0) sc->done = 0; /* body must end with the chunked terminator */
        }
        cli_close(c);
    }
    free(c);
    core_buf_free(&r.body);
    return NULL;
}

static void test_sse_thread(void) {
    http_server *s = start(NULL);
    if (!s) return;
    sse_client sc = {.port = http_server_port(s), .n = 20};
    sse_run(&sc);
    CHECK_EQ_INT(sc.status, 200);
    CHECK_EQ_INT(sc.got, 20);
    CHECK(sc.in_order);
    CHECK(sc.done);
    CHECK_EQ_STR(sc.ctype, "text/event-stream");
    CHECK_EQ_STR(sc.cache, "no-cache");
    CHECK_EQ_STR(sc.accel, "no");
    http_server_free(s);
}

static void test_sse_two_concurrent(void) {
    http_server *s = start(NULL);
    if (!s) return;
    sse_client a = {.port = http_server_port(s), .n = 30}, b = a;
    pthread_t ta, tb;
    CHECK(pthread_create(&ta, NULL, sse_run, &a) == 0);
    CHECK(pthread_create(&tb, NULL, sse_run, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.got == 30 && a.done && a.in_order);
    CHECK(b.got == 30 && b.done && b.in_order);
    http_server_free(s);
}

static void test_sse_format(void) {
    http_server *s = start(NULL);
    if (!s) return;
    resp r = {0};
    char v[128];
    CHECK(fetch(http_server_port(s), "GET /fmt HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(hval(r.head, "Content-Type", v, sizeof v), "text/event-stream; charset=utf-8");
    CHECK_EQ_STR(r.body.data, ": ok\n\n"
                              "data: a\ndata: b\ndata: c\ndata: d\n\n"
                              "event: e1\nid: 7\ndata: x\n\n"
                              "data: \n\n"
                              "data: end\ndata: \n\n"
                              ": note\n\n"
                              "raw\n");
    /* non-SSE stream: no comments injected */
    CHECK(fetch(http_server_port(s), "GET /ndjson HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(r.body.data, "{}\n{}\n");
    core_buf_free(&r.body);
    http_server_free(s);
}

/* Open /silent, read the head (and the first comment), return the client. */
static int open_silent(cli *c, int port, resp *r) {
    if (cli_open(c, port)) return -1;
    if (cli_sends(c, "GET /silent HTTP/1.1\r\nHost: localhost\r\n\r\n")) return -1;
    if (read_head(c, r) || r->status != 200) return -1;
    return read_chunk(c, r) > 0 ? 0 : -1; /* ": ok" arrives at once */
}

static void test_sse_disconnect(void) {
    http_config cfg = {0};
    http_server *s = start(&cfg);
    if (!s) return;
    cli *c = malloc(sizeof *c);
    resp r = {0};
    int want = g.n_silent + 1;
    CHECK(open_silent(c, http_server_port(s), &r) == 0);
    CHECK_EQ_STR(r.body.data, ": ok\n\n");
    http_stream *st = take_silent(want);
    CHECK(st != NULL);
    if (st) {
        /* a silent producer still keeps the stream alive with pings */
        CHECK(!http_stream_gone(st));
        core_buf_clear(&r.body);
        CHECK(read_chunk(c, &r) > 0);
        CHECK_EQ_STR(r.body.data, ": ping\n\n");
        CHECK(!http_stream_gone(st));
        double t0 = core_now_s();
        cli_close(c);
        int gone = http_stream_wait_gone(st, 3000);
        double dt = core_now_s() - t0;
        CHECK(gone);
        CHECK_MSG(dt < 1.5, "disconnect noticed after %.2f s", dt);
        fprintf(stderr, "  disconnect of a silent stream noticed after %.0f ms\n", dt * 1000);
        CHECK_EQ_INT(http_stream_write(st, "x", 1), CORE_ECANCEL);
        CHECK_EQ_INT(http_stream_event(st, NULL, NULL, "x", 1), CORE_ECANCEL);
        http_stream_close(st);
    }
    cli_close(c);
    free(c);
    /* the server still serves */
    CHECK(fetch(http_server_port(s), "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    core_buf_free(&r.body);
    http_server_free(s);
}

static void test_stop_with_open_stream(void) {
    http_server *s = start(NULL);
    if (!s) return;
    cli *c = malloc(sizeof *c), *idle = malloc(sizeof *idle);
    resp r = {0};
    int want = g.n_silent + 1;
    CHECK(open_silent(c, http_server_port(s), &r) == 0);
    /* an idle keep-alive connection must not hold stop up either */
    CHECK(cli_open(idle, http_server_port(s)) == 0);
    http_stream *st = take_silent(want);
    CHECK(st != NULL);
    if (st) CHECK(http_stream_write(st, "data: before\n\n", 14) == 0);
    double t0 = core_now_s();
    http_server_stop(s);
    double dt = core_now_s() - t0;
    CHECK_MSG(dt < 3.0, "stop took %.2f s", dt);
    if (st) {
        CHECK(http_stream_gone(st));
        CHECK_EQ_INT(http_stream_write(st, "x", 1), CORE_ECANCEL);
    }
    /* the client saw the queued event and a clean end of the chunked body */
    core_buf_clear(&r.body);
    long k;
    while ((k = read_chunk(c, &r)) > 0) {}
    CHECK_EQ_INT(k, 0);
    CHECK(r.body.data && strstr(r.body.data, "data: before\n\n"));
    http_server_stop(s); /* idempotent */
    http_server_free(s);
    http_stream_close(st); /* the producer lets go after the server is gone */
    cli_close(c);
    cli_close(idle);
    free(c);
    free(idle);
    core_buf_free(&r.body);
}

static void test_stream_refs(void) {
    /* the producer holds two references and lets go after the client left */
    http_server *s = start(NULL);
    if (!s) return;
    cli *c = malloc(sizeof *c);
    resp r = {0};
    int want = g.n_silent + 1;
    CHECK(open_silent(c, http_server_port(s), &r) == 0);
    http_stream *st = take_silent(want);
    CHECK(st != NULL);
    if (st) {
        http_stream *st2 = http_stream_ref(st);
        http_stream_close(st); /* one producer done: the stream stays open */
        CHECK(http_stream_write(st2, "data: still\n\n", 13) == 0);
        core_buf_clear(&r.body);
        CHECK(read_chunk(c, &r) > 0);
        CHECK_EQ_STR(r.body.data, "data: still\n\n");
        http_stream_close(st2); /* last one: end of body */
        long k;
        while ((k = read_chunk(c, &r)) > 0) {}
        CHECK_EQ_INT(k, 0);
    }
    cli_close(c);
    free(c);
    core_buf_free(&r.body);
    http_server_free(s);
}

static void test_bearer(void) {
    http_server *s = start(NULL);
    if (!s) return;
    int port = http_server_port(s);
    resp r = {0};
    static const struct {
        const char *hdr;
        int status;
    } cases[] = {
        {"", 401},
        {"Authorization: Bearer sekrit-key\r\n", 200},
        {"authorization: bearer   sekrit-key  \r\n", 200},
        {"Authorization: Bearer sekrit-ke\r\n", 401},
        {"Authorization: Bearer sekrit-keyy\r\n", 401},
        {"Authorization: Bearer Sekrit-key\r\n", 401},
        {"Authorization: Basic sekrit-key\r\n", 401},
        {"Authorization: Bearersekrit-key\r\n", 401},
        {"Authorization: Bearer \r\n", 401},
    };
    for (size_t i = 0; i < CORE_ARRAY_LEN(cases); i++) {
        char req[256];
        snprintf(req, sizeof req, "GET /auth HTTP/1.1\r\nHost: localhost\r\n%s\r\n", cases[i].hdr);
        CHECK(fetch(port, req, &r) == 0);
        CHECK_MSG(r.status == cases[i].status, "case %zu: %d", i, r.status);
    }
    core_buf_free(&r.body);
    http_server_free(s);
}

/* DNS rebinding: only loopback names, address literals and the
 * configured names are served; any other Host gets 421 before the handler. */
static void test_host_allow_list(void) {
    const char *extra[] = {"proxy.example.org", NULL};
    http_config cfg = {0};
    cfg.allow_hosts = extra;
    http_server *s = start(&cfg);
    if (!s) return;
    int port = http_server_port(s);
    resp r = {0};
    static const struct {
        const char *host; /* NULL: no Host line (HTTP/1.0) */
        int status;
    } cases[] = {
        {"localhost", 200},         {"localhost:3000", 200},   {"LocalHost", 200},
        {"localhost.", 200},        {"127.0.0.1:8080", 200},   {"127.0.0.2", 200},
        {"[::1]:3000", 200},        {"[::1]", 200},            {"192.168.1.20:3000", 200},
        {"proxy.example.org", 200}, {"PROXY.example.org:443", 200},
        {"evil.example", 421},      {"evil.example:3000", 421}, {"localhost.evil.example", 421},
        {"127.0.0.1.nip.io", 421},  {"proxy.example.org.evil", 421}, {"[::1", 421},
        {"localhost:80x", 421},     {"", 421},                 {"::1", 421},
        {NULL, 200},
    };
    char v[64];
    for (size_t i = 0; i < CORE_ARRAY_LEN(cases); i++) {
        char req[256];
        if (cases[i].host)
            snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: %s\r\n\r\n", cases[i].host);
        else
            snprintf(req, sizeof req, "GET /hello HTTP/1.0\r\n\r\n");
        int rc = fetch(port, req, &r);
        /* MHD itself may refuse an empty Host with 400 */
        if (cases[i].host && !*cases[i].host) {
            CHECK(rc != 0 || r.status == 421 || r.status == 400);
            continue;
        }
        CHECK(rc == 0);
        CHECK_MSG(r.status == cases[i].status, "host %s: %d", cases[i].host ? cases[i].host : "(none)", r.status);
        if (cases[i].status == 421) {
            CHECK(r.body.data && strstr(r.body.data, "--allow-host"));
            CHECK_EQ_STR(hval(r.head, "X-Frame-Options", v, sizeof v), "DENY");
        }
    }
    /* a refused Host never reaches the handler, even with a body */
    CHECK(fetch(port, "POST /echo HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 3\r\n\r\nabc", &r) == 0);
    CHECK_EQ_INT(r.status, 421);
    CHECK(!hval(r.head, "X-Info", v, sizeof v));
    core_buf_free(&r.body);
    http_server_free(s);
    /* "*" turns the check off (behind a proxy that checks names itself) */
    const char *any[] = {"*", NULL};
    cfg.allow_hosts = any;
    s = start(&cfg);
    if (!s) return;
    CHECK(fetch(http_server_port(s), "GET /hello HTTP/1.1\r\nHost: evil.example\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    core_buf_free(&r.body);
    http_server_free(s);
}

/* ---- slow clients ----------------------------------------------------------- */

/* A connection from source address `from` (e.g. "127.0.0.2": loopback
 * holds all of 127/8, so one machine can be many clients). */
static int cli_open_from(cli *c, int port, const char *from) {
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) return -1;
    struct timeval tv = {5, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    inet_pton(AF_INET, from, &a.sin_addr);
    if (bind(c->fd, (struct sockaddr *)&a, sizeof a) != 0) goto fail;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) goto fail;
    return 0;
fail:
    close(c->fd);
    c->fd = -1;
    return -1;
}

/* 1 if the server closed the connection (EOF or reset) within ms. */
static int cli_closed_within(cli *c, int ms) {
    struct pollfd p = {c->fd, POLLIN, 0};
    uint64_t end = core_now_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        uint64_t now = core_now_ns();
        if (now >= end) return 0;
        if (poll(&p, 1, (int)((end - now) / 1000000u) + 1) <= 0) continue;
        char b[4096];
        ssize_t n = recv(c->fd, b, sizeof b, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return 1;
    }
}

/* Trickle `piece` every 200 ms until the server closes (1) or ms pass (0). */
static int trickle_until_closed(cli *c, const char *piece, int ms) {
    for (int t = 0; t < ms; t += 200) {
        if (cli_sends(c, piece)) return 1;
        if (cli_closed_within(c, 200)) return 1;
    }
    return 0;
}

/* Deadlines that trickled bytes do not extend: header block, body, and the
 * idle time between keep-alive requests; a streaming response has none. */
static void test_conn_deadlines(void) {
    http_config cfg = {0};
    cfg.header_timeout_s = 1;
    cfg.body_timeout_s = 1;
    cfg.conn_timeout_s = 30; /* MHD's idle timeout alone would keep them all */
    http_server *s = start(&cfg);
    if (!s) return;
    int port = http_server_port(s);
    cli *a = malloc(sizeof *a), *b = malloc(sizeof *b), *k = malloc(sizeof *k), *st = malloc(sizeof *st);
    resp r = {0};
    CHECK(cli_open(st, port) == 0);
    CHECK(cli_sends(st, "GET /silent HTTP/1.1\r\nHost: localhost\r\n\r\n") == 0);
    CHECK(read_head(st, &r) == 0);
    http_stream *silent = take_silent(1);
    CHECK(silent != NULL);

    double t0 = core_now_s();
    CHECK(cli_open(a, port) == 0);
    CHECK(cli_sends(a, "GET /hello HTTP/1.1\r\nHost: localhost\r\n") == 0);
    CHECK(trickle_until_closed(a, "X-Slow: 1\r\n", 4000));
    double ta = core_now_s() - t0;
    CHECK_MSG(ta >= 0.9 && ta < 3.0, "header trickle closed after %.2f s", ta);

    t0 = core_now_s();
    CHECK(cli_open(b, port) == 0);
    CHECK(cli_sends(b, "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n") == 0);
    CHECK(trickle_until_closed(b, "z", 4000));
    double tb = core_now_s() - t0;
    CHECK_MSG(tb >= 0.9 && tb < 3.0, "body trickle closed after %.2f s", tb);

    /* keep-alive: served, then closed when idle past the header deadline */
    CHECK(cli_open(k, port) == 0);
    CHECK(cli_sends(k, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n") == 0);
    CHECK(read_resp(k, &r, 0) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(cli_closed_within(k, 3000));

    /* the stream outlived every deadline and still delivers */
    CHECK(http_stream_write(silent, "data: late\n\n", 12) == 0);
    char line[256];
    int got = 0;
    for (int i = 0; i < 20 && !got; i++) {
        if (cli_line(st, line, sizeof line)) break;
        got = strstr(line, "late") != NULL;
    }
    CHECK(got);
    http_stats hs;
    http_server_stats(s, &hs);
    CHECK_MSG(hs.timed_out >= 3, "timed out %llu", hs.timed_out);
    http_stream_close(silent);
    cli_close(a);
    cli_close(b);
    cli_close(k);
    cli_close(st);
    free(a);
    free(b);
    free(k);
    free(st);
    core_buf_free(&r.body);
    http_server_free(s);
}

/* A full pool of waiting connections (one address, then several) does not
 * keep a complete request out: the oldest waiting ones are shed; busy ones
 * (a stream) are not. */
static void test_conn_shedding(void) {
    http_config cfg = {0};
    cfg.max_conns = 32;
    http_server *s = start(&cfg);
    if (!s) return;
    int port = http_server_port(s);
    enum { N = 48 };
    cli *cs = calloc(N + 1, sizeof *cs);
    resp r = {0};
    cli *st = &cs[N];
    CHECK(cli_open(st, port) == 0);
    CHECK(cli_sends(st, "GET /silent HTTP/1.1\r\nHost: localhost\r\n\r\n") == 0);
    CHECK(read_head(st, &r) == 0);
    http_stream *silent = take_silent(1);
    CHECK(silent != NULL);
    for (int round = 0; round < 2; round++) {
        /* round 0: all from 127.0.0.1; round 1: 127.0.0.2 .. 127.0.0.5 */
        for (int i = 0; i < N; i++) {
            char from[32];
            snprintf(from, sizeof from, "127.0.0.%d", round ? 2 + i % 4 : 1);
            if (cli_open_from(&cs[i], port, from)) continue;
            cli_sends(&cs[i], "GET /hello HTTP/1.1\r\nHost: localhost\r\n");
            usleep(5000); /* 200 a second: a burst faster than reaping is the documented limit */
        }
        /* The shed ones close asynchronously and count against MHD's hard
         * limits (all: 32; one address: 24) until it reaps them; a loaded
         * machine may take a while. Then this address holds at most 16
         * waiting (round 0) and the pool at most 28 (round 1). */
        http_stats hs;
        unsigned settled = round ? 32 - 32 / 4 : 32 / 2 + 1;
        for (int w = 0; w < 500; w++) {
            http_server_stats(s, &hs);
            if (hs.open <= settled) break;
            usleep(10000);
        }
        for (int t = 0; t < 3; t++) {
            double t0 = core_now_s();
            int frc = fetch(port, "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
            http_server_stats(s, &hs);
            CHECK_MSG(frc == 0, "round %d: no answer after %.3f s (%u open, %llu shed)", round, core_now_s() - t0, hs.open, hs.shed);
            CHECK_EQ_INT(r.status, 200);
            double dt = core_now_s() - t0;
            CHECK_MSG(dt < 1.0, "round %d: answered in %.3f s", round, dt);
        }
        for (int i = 0; i < N; i++) cli_close(&cs[i]);
        usleep(100000);
    }
    http_stats hs;
    http_server_stats(s, &hs);
    CHECK_MSG(hs.shed > 0, "shed %llu", hs.shed); /* how many depends on how fast MHD reaps the closed */
    CHECK(http_stream_write(silent, "data: alive\n\n", 13) == 0);
    char line[256];
    int got = 0;
    for (int i = 0; i < 20 && !got; i++) {
        if (cli_line(st, line, sizeof line)) break;
        got = strstr(line, "alive") != NULL;
    }
    CHECK_MSG(got, "the busy stream was not shed");
    http_stream_close(silent);
    cli_close(st);
    free(cs);
    core_buf_free(&r.body);
    http_server_free(s);
}

/* Thousands of query arguments once made MHD drop the connection without a
 * word (its memory pool ran dry): now 414 with a message; 100 still work. */
static void test_query_args_and_type(void) {
    http_server *s = start(NULL);
    if (!s) return;
    int port = http_server_port(s);
    resp r = {0};
    static const int counts[] = {100, 101, 500, 3000};
    for (size_t i = 0; i < CORE_ARRAY_LEN(counts); i++) {
        core_buf q = {0};
        core_buf_puts(&q, "GET /ctype?");
        for (int k = 0; k < counts[i]; k++) core_buf_printf(&q, "%sa%d=%d", k ? "&" : "", k, k);
        core_buf_puts(&q, " HTTP/1.1\r\nHost: localhost\r\n\r\n");
        CHECK_MSG(fetch(port, q.data, &r) == 0, "%d arguments: no response", counts[i]);
        if (counts[i] <= HTTP_MAX_QUERY_ARGS) {
            CHECK_EQ_INT(r.status, 200);
            CHECK(r.body.data && strstr(r.body.data, " 99"));
        } else {
            CHECK_MSG(r.status == 414, "%d arguments: %d", counts[i], r.status);
            CHECK(r.body.data && strstr(r.body.data, "too many query arguments"));
        }
        core_buf_free(&q);
    }
    static const struct {
        const char *ct;
        int json;
    } types[] = {
        {"application/json", 1}, {"Application/JSON; charset=utf-8", 1}, {"application/json;charset=utf-8", 1},
        {"text/plain", 0}, {"application/x-www-form-urlencoded", 0}, {"application/jsonx", 0},
        {"multipart/form-data; boundary=x", 0}, {NULL, 0},
    };
    for (size_t i = 0; i < CORE_ARRAY_LEN(types); i++) {
        char req[256];
        snprintf(req, sizeof req, "POST /ctype HTTP/1.1\r\nHost: localhost\r\n%s%s%sContent-Length: 2\r\n\r\n{}",
                 types[i].ct ? "Content-Type: " : "", types[i].ct ? types[i].ct : "", types[i].ct ? "\r\n" : "");
        CHECK(fetch(port, req, &r) == 0);
        CHECK_MSG(r.body.data && r.body.data[0] == '0' + types[i].json, "%s", types[i].ct ? types[i].ct : "(none)");
    }
    core_buf_free(&r.body);
    http_server_free(s);
}

static void test_assets(void) {
    http_server *s = start(NULL);
    if (!s) return;
    int port = http_server_port(s);
    resp r = {0};
    char v[128], etag[64] = "";
    CHECK(fetch(port, "GET /asset?p=/no/such/file HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(fetch(port, "GET /asset?p=/../../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 404);
    const http_asset *a = &http_assets[0];
    if (!a->path) {
        core_buf_free(&r.body);
        http_server_free(s);
        T_SKIP("no embedded assets in this build (web/ is empty)");
    }
    char req[512];
    snprintf(req, sizeof req, "GET /asset?p=%s HTTP/1.1\r\nHost: localhost\r\n\r\n", a->path);
    CHECK(fetch(port, req, &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body.len == a->len && memcmp(r.body.data, a->data, a->len) == 0);
    CHECK_EQ_STR(hval(r.head, "Content-Type", v, sizeof v), a->mime);
    CHECK_EQ_STR(hval(r.head, "Cache-Control", v, sizeof v), "no-cache");
    CHECK(hval(r.head, "ETag", etag, sizeof etag) != NULL);
    snprintf(req, sizeof req, "GET /asset?p=%s HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: %s\r\n\r\n", a->path, etag);
    CHECK(fetch(port, req, &r) == 0);
    CHECK_EQ_INT(r.status, 304);
    core_buf_free(&r.body);
    http_server_free(s);
}

static void test_pool_mode_and_config(void) {
    http_config cfg = {0};
    cfg.pool_threads = 2;
    cfg.csp = "default-src 'none'";
    http_server *s = start(&cfg);
    if (!s) return;
    resp r = {0};
    char v[128];
    CHECK(fetch(http_server_port(s), "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_STR(hval(r.head, "Content-Security-Policy", v, sizeof v), "default-src 'none'");
    /* streams are refused in pool mode: the handler's error becomes a 500 */
    CHECK(fetch(http_server_port(s), "GET /sse HTTP/1.1\r\nHost: localhost\r\n\r\n", &r) == 0);
    CHECK_EQ_INT(r.status, 500);
    CHECK(r.body.data && strstr(r.body.data, "thread-per-connection"));
    core_buf_free(&r.body);

    /* bad configs fail cleanly; a taken port is reported */
    http_server *s2 = NULL;
    core_err e = {0};
    http_config bad = {0};
    bad.host = "localhost.invalid";
    CHECK(http_server_new(&bad, handler, NULL, &s2, &e) == CORE_EINVAL && !s2);
    bad.host = NULL;
    bad.port = http_server_port(s);
    int rc = http_server_new(&bad, handler, NULL, &s2, &e);
    CHECK_MSG(rc == CORE_EIO && !s2, "rc %d", rc);
    http_server_free(s2);
    http_server_free(s);
    http_server_free(NULL);
}

/* ---- throughput (printed, never asserted) ---------------------------------- */

typedef struct bench_arg {
    int port, n, keepalive, ok;
} bench_arg;

/* n GETs, on one keep-alive connection or a new connection each. */
static void *bench_client(void *arg) {
    bench_arg *b = arg;
    cli *c = malloc(sizeof *c);
    resp r = {0};
    c->fd = -1;
    for (int i = 0; i < b->n; i++) {
        if (c->fd < 0 && cli_open(c, b->port)) break;
        if (cli_sends(c, b->keepalive ? "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
                                      : "GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n") ||
            read_resp(c, &r, 0) || r.status != 200)
            break;
        b->ok++;
        if (!b->keepalive) cli_close(c);
    }
    cli_close(c);
    free(c);
    core_buf_free(&r.body);
    return NULL;
}

static double bench_mode(unsigned pool, int n, int nclients, int keepalive) {
    http_config cfg = {0};
    cfg.pool_threads = pool;
    http_server *s = start(&cfg);
    if (!s) return 0;
    bench_arg args[8] = {{0}};
    pthread_t t[8];
    if (nclients > 8) nclients = 8;
    double t0 = core_now_s();
    for (int i = 0; i < nclients; i++) {
        args[i] = (bench_arg){http_server_port(s), n / nclients, keepalive, 0};
        pthread_create(&t[i], NULL, bench_client, &args[i]);
    }
    int ok = 0;
    for (int i = 0; i < nclients; i++) {
        pthread_join(t[i], NULL);
        ok += args[i].ok;
        CHECK_EQ_INT(args[i].ok, n / nclients);
    }
    double dt = core_now_s() - t0;
    http_server_free(s);
    return ok / dt;
}

static void test_bench(void) {
    const char *e = getenv("HTTP_BENCH");
    int n = e && atoi(e) > 0 ? atoi(e) : 200;
    static const struct { int clients, keepalive; const char *what; } runs[] = {
        {1, 1, "1 client, keep-alive"}, {4, 1, "4 clients, keep-alive"}, {1, 0, "1 client, new connection each"}};
    for (size_t i = 0; i < CORE_ARRAY_LEN(runs); i++) {
        int m = runs[i].keepalive ? n : n / 4;
        double tpc = bench_mode(0, m, runs[i].clients, runs[i].keepalive);
        double pool = bench_mode(2, m, runs[i].clients, runs[i].keepalive);
        fprintf(stderr, "  bench: %d GETs, %s: thread-per-connection %.0f req/s, epoll pool(2) %.0f req/s\n", m,
                runs[i].what, tpc, pool);
    }
}

int main(void) {
    core_log_set_level(CORE_LOG_ERROR); /* the /none route warns by design */
    T_RUN(test_get_post);
    T_RUN(test_404_and_errors);
    T_RUN(test_413);
    T_RUN(test_keepalive);
    T_RUN(test_sse_thread);
    T_RUN(test_sse_two_concurrent);
    T_RUN(test_sse_format);
    T_RUN(test_sse_disconnect);
    T_RUN(test_stop_with_open_stream);
    T_RUN(test_stream_refs);
    T_RUN(test_bearer);
    T_RUN(test_host_allow_list);
    T_RUN(test_conn_deadlines);
    T_RUN(test_conn_shedding);
    T_RUN(test_query_args_and_type);
    T_RUN(test_assets);
    T_RUN(test_pool_mode_and_config);
    T_RUN(test_bench);
    return t_done();
}
