/* http.c -- server, request view, responses, assets and auth over libmicrohttpd.
 *
 * Request life (MHD calls the access handler several times per request):
 *   1st call   allocate our http_req, hang it on *con_cls, return MHD_YES.
 *              Queueing here would make MHD answer "Connection: close" and
 *              kill keep-alive (7.7k vs 59k req/s), so we never do, except
 *              for a Content-Length above max_body: 413 at once and close,
 *              instead of reading megabytes we will refuse.
 *   Nth call   upload_data: append to the body, bounded by max_body; past
 *              it we keep swallowing (chunked bodies have no length up
 *              front) and answer 413 at the end.
 *   last call  *upload_data_size == 0: run the user handler, queue the
 *              response it built (or a 500), drop our response reference.
 *   completed  MHD_OPTION_NOTIFY_COMPLETED frees the http_req.
 * A response is built by http_respond* into r->resp and queued only after
 * the handler returns, so a handler that fails after answering still sends
 * its answer, and "exactly one response" is checked in one place.
 *
 * Threads. The default is thread-per-connection with poll: the stream
 * reader (sse.c) blocks on a condvar, which only works when the connection
 * owns its thread. Measured with the C client in tests/test_http.c (-O2,
 * no sanitizers, loopback, 2 cores shared with other work, so +-40%):
 *                                  thread/conn     epoll pool(2)
 *   1 client, keep-alive, 20k GET  ~83-100k req/s  ~45-100k req/s
 *   4 clients, keep-alive, 20k GET ~60-160k req/s  ~70-78k req/s
 *   1 client, new connection each  ~3-18k req/s    ~17-30k req/s
 * Keep-alive traffic (browsers, API clients) is as fast either way; only
 * connection setup pays for the thread creation. Streams need the thread,
 * so it is the default. The pool mode is kept for that comparison and for
 * non-streaming uses; it refuses streams (a suspend/resume reader would
 * lift that, at the price of a timer thread for pings).
 *
 * Invariants: the server never calls back into user code after
 * http_server_stop returns; every response carries the security headers;
 * no request byte reaches an assert.
 */
#include "http/http_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/assets.h"

#define HTTP_DEF_MAX_BODY (8u << 20)
#define HTTP_DEF_MAX_HEADER (32u << 10)
#define HTTP_DEF_TIMEOUT_S 30u
#define HTTP_DEF_MAX_CONNS 1024u
#define HTTP_DEF_HEADER_S 10u
#define HTTP_DEF_BODY_S 30u
#define HTTP_FD_RESERVE 64u  /* descriptors kept for the store, logs, models */
#define HTTP_REAP_MS 250     /* how often the deadlines are checked */
#define HTTP_DEF_PING_MS 1000u
#define HTTP_STOP_DRAIN_MS 2000
#define HTTP_DEF_CSP "default-src 'self'"

/* ---- small helpers -------------------------------------------------- */

static int has_crlf(const char *s) { return s && strpbrk(s, "\r\n") != NULL; }

const char *http_status_text(int st) {
    switch (st) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "";
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    /* MHD reports client misbehaviour here too: not our error. */
    LOG_DEBUG("http: %s", line);
}

/* ---- request view --------------------------------------------------- */

const char *http_req_method(const http_req *r) { return r->method; }
const char *http_req_path(const http_req *r) { return r->path; }
const char *http_req_remote(const http_req *r) { return r->remote; }
int http_req_body_complete(const http_req *r) { return r->body_complete; }

const char *http_req_query(const http_req *r, const char *key) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_req_header(const http_req *r, const char *name) {
    /* MHD compares header names case-insensitively. */
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

int http_req_type_is(const http_req *r, const char *mime) {
    const char *ct = http_req_header(r, "Content-Type");
    if (!ct) return 0;
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strcspn(ct, "; \t"), ml = strlen(mime);
    return n == ml && !strncasecmp(ct, mime, n);
}

const char *http_req_cookie(const http_req *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, name);
}

const char *http_req_body(const http_req *r, size_t *len) {
    if (len) *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

int http_req_add_header(http_req *r, const char *name, const char *value) {
    if (!name || !*name || !value || has_crlf(name) || has_crlf(value) || strchr(name, ':'))
        return CORE_EINVAL;
    if (r->nhdr == r->caphdr) {
        size_t cap = r->caphdr ? r->caphdr * 2 : 4;
        char **h = realloc(r->hdrs, cap * 2 * sizeof *h);
        if (!h) return CORE_ENOMEM;
        r->hdrs = h;
        r->caphdr = cap;
    }
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return CORE_ENOMEM;
    }
    r->hdrs[2 * r->nhdr] = n;
    r->hdrs[2 * r->nhdr + 1] = v;
    r->nhdr++;
    return 0;
}

static void req_free(http_req *r) {
    if (!r) return;
    for (size_t i = 0; i < 2 * r->nhdr; i++) free(r->hdrs[i]);
    free(r->hdrs);
    core_buf_free(&r->body);
    if (r->resp) MHD_destroy_response(r->resp);
    free(r);
}

/* ---- responses ------------------------------------------------------ */

/* Add content type, security headers, the request's queued headers and
 * `hdrs` to resp. On failure the caller destroys resp. */
static int add_headers(http_req *r, struct MHD_Response *resp, const char *ct, const http_header *hdrs) {
    const http_server *s = r->srv;
    int ok = 1;
    if (ct) ok &= MHD_add_response_header(resp, "Content-Type", ct) == MHD_YES;
    ok &= MHD_add_response_header(resp, "Content-Security-Policy", s->csp) == MHD_YES;
    ok &= MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES;
    ok &= MHD_add_response_header(resp, "Referrer-Policy", "same-origin") == MHD_YES;
    ok &= MHD_add_response_header(resp, "X-Frame-Options", "DENY") == MHD_YES;
    for (size_t i = 0; i < r->nhdr; i++)
        ok &= MHD_add_response_header(resp, r->hdrs[2 * i], r->hdrs[2 * i + 1]) == MHD_YES;
    for (const http_header *h = hdrs; h && h->name; h++) {
        if (!h->value || has_crlf(h->name) || has_crlf(h->value)) return CORE_EINVAL;
        ok &= MHD_add_response_header(resp, h->name, h->value) == MHD_YES;
    }
    return ok ? 0 : CORE_EINVAL;
}

/* Attach a finished response to r (to be queued after the handler). */
int http__set_response(http_req *r, struct MHD_Response *resp, int status, const char *ct,
                       const http_header *hdrs) {
    int rc = add_headers(r, resp, ct, hdrs);
    if (rc) {
        MHD_destroy_response(resp);
        return rc;
    }
    r->resp = resp;
    r->status = status;
    return 0;
}

static int respond_mem(http_req *r, int status, const char *ct, void *body, size_t len,
                       enum MHD_ResponseMemoryMode mode, const http_header *hdrs) {
    if (r->resp || r->queued || status < 100 || status > 999) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return CORE_EINVAL;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
    if (!resp) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return CORE_ENOMEM;
    }
    return http__set_response(r, resp, status, ct, hdrs);
}

int http_respond_ex(http_req *r, int status, const char *ct, const void *body, size_t len,
                    const http_header *hdrs) {
    return respond_mem(r, status, ct, (void *)(body ? body : ""), body ? len : 0,
                       MHD_RESPMEM_MUST_COPY, hdrs);
}

int http_respond(http_req *r, int status, const char *ct, const void *body, size_t len) {
    return http_respond_ex(r, status, ct, body, len, NULL);
}

int http_respond_take(http_req *r, int status, const char *ct, char *body, size_t len) {
    if (!body) return http_respond_ex(r, status, ct, "", 0, NULL);
    return respond_mem(r, status, ct, body, len, MHD_RESPMEM_MUST_FREE, NULL);
}

int http_respond_text(http_req *r, int status, const char *text) {
    if (!text) text = http_status_text(status);
    size_t n = strlen(text);
    char *b = malloc(n + 2);
    if (!b) return CORE_ENOMEM;
    memcpy(b, text, n);
    b[n] = '\n';
    b[n + 1] = 0;
    return respond_mem(r, status, "text/plain; charset=utf-8", b, n + 1, MHD_RESPMEM_MUST_FREE, NULL);
}

/* ---- assets --------------------------------------------------------- */

/* ETag: FNV-1a 64 of the bytes, computed once per asset at server start. */
static void asset_etag(const http_asset *a, char out[HTTP_ETAG_LEN]) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < a->len; i++) {
        h ^= a->data[i];
        h *= 1099511628211ull;
    }
    snprintf(out, HTTP_ETAG_LEN, "\"%016llx\"", (unsigned long long)h);
}

int http_respond_asset(http_req *r, const char *path) {
    const http_asset *a = http_asset_find(path);
    if (!a) return http_respond_text(r, 404, "not found");
    size_t idx = (size_t)(a - http_assets);
    const char *etag = idx < r->srv->nassets ? r->srv->etags[idx] : NULL;
    http_header h[] = {{"Cache-Control", "no-cache"}, {"ETag", etag}, {NULL, NULL}};
    if (!etag) h[1].name = NULL;
    const char *inm = http_req_header(r, "If-None-Match");
    if (etag && inm && (strstr(inm, etag) || strcmp(inm, "*") == 0))
        return respond_mem(r, 304, NULL, (void *)"", 0, MHD_RESPMEM_PERSISTENT, h);
    /* The table is static and read-only: no copy. */
    return respond_mem(r, 200, a->mime, (void *)a->data, a->len, MHD_RESPMEM_PERSISTENT, h);
}

/* ---- auth ----------------------------------------------------------- */

int http_check_bearer(const http_req *r, const char *key) {
    if (!key || !*key) return 1;
    const char *h = http_req_header(r, "Authorization");
    if (!h) return 0;
    while (*h == ' ' || *h == '\t') h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t')) return 0;
    h += 6;
    while (*h == ' ' || *h == '\t') h++;
    size_t tl = strlen(h);
    while (tl && (h[tl - 1] == ' ' || h[tl - 1] == '\t')) tl--;
    size_t kl = strlen(key);
    /* Walk the whole key whatever the token holds: time depends on the key
     * length only, never on the position of the first differing byte. */
    volatile unsigned char diff = (unsigned char)(kl != tl);
    for (size_t i = 0; i < kl; i++) {
        unsigned char t = i < tl ? (unsigned char)h[i] : 0;
        diff |= (unsigned char)((unsigned char)key[i] ^ t);
    }
    return diff == 0;
}

/* ---- Host allow-list --------------------------------------------------- */

/* 1 if the Host header value names this server. No header: 1 (HTTP/1.0
 * tools; MHD itself refuses HTTP/1.1 without one, and browsers always send
 * it). The port is not compared: a reverse proxy may show another one. */
static int host_allowed(const http_server *s, const char *h) {
    if (!h) return 1;
    char name[256];
    size_t n;
    const char *rest;
    if (*h == '[') { /* [v6]:port */
        const char *e = strchr(h, ']');
        if (!e) return 0;
        n = (size_t)(e - h) + 1;
        rest = e + 1;
    } else {
        n = strcspn(h, ":");
        rest = h + n;
    }
    if (*rest) {
        if (*rest != ':' || !rest[1] || strspn(rest + 1, "0123456789") != strlen(rest + 1)) return 0;
    }
    if (n == 0 || n >= sizeof name) return 0;
    for (size_t i = 0; i < n; i++) name[i] = (char)tolower((unsigned char)h[i]);
    name[n] = 0;
    if (n > 1 && name[n - 1] == '.') name[--n] = 0; /* "localhost." is localhost */
    if (s->any_host) return 1;
    /* An address literal cannot be re-pointed: the browser connected to it. */
    unsigned char ab[16];
    if (inet_pton(AF_INET, name, ab) == 1) return 1;
    if (name[0] == '[' && name[n - 1] == ']') {
        name[n - 1] = 0;
        int ok = inet_pton(AF_INET6, name + 1, ab) == 1;
        name[n - 1] = ']';
        if (ok) return 1;
    }
    if (!strcmp(name, "localhost")) return 1;
    for (size_t i = 0; i < s->n_allow; i++)
        if (!strcasecmp(name, s->allow[i])) return 1;
    return 0;
}

/* ---- connections: deadlines and shedding ------------------------------
 * MHD's own timeout counts idle time only, so a client trickling a header
 * line every few seconds holds its connection (and, here, a thread)
 * forever, and MHD's limits refuse newcomers instead of the slow. We keep
 * our own list of connections with their state (from MHD's connection
 * notifications and our request callbacks) and close slow ones with
 * shutdown(2): the connection's thread sees end-of-file and MHD closes it.
 * shutdown, never close: the descriptor stays MHD's; MHD reports CLOSED
 * (we unlink under cmu) before it closes the descriptor, so a number we
 * shut down is never one reused by a newer connection. */

static http_conn *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void conn_set(http_server *s, http_conn *x, int state) {
    if (!x) return;
    pthread_mutex_lock(&s->cmu);
    x->state = state;
    x->since_ns = core_now_ns();
    pthread_mutex_unlock(&s->cmu);
}

/* cmu held */
static void conn_kill(http_conn *x) {
    if (x->fd >= 0) shutdown(x->fd, SHUT_RDWR);
    x->shed = 1;
}

/* cmu held: close the oldest waiting connection (of address ip, or any). */
static void conn_shed_oldest(http_server *s, const char *ip) {
    for (http_conn *x = s->c_head; x; x = x->next)
        if (!x->shed && x->state != HTTP_CONN_BUSY && (!ip || !strcmp(x->ip, ip))) {
            conn_kill(x);
            s->n_shed++;
            return;
        }
}

static void remote_text(struct MHD_Connection *c, char *out, size_t cap) {
    snprintf(out, cap, "?");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)cap);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        http_conn *x = calloc(1, sizeof *x);
        *socket_context = x;
        if (!x) return; /* out of memory: this one goes untracked */
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        x->fd = ci ? ci->connect_fd : -1;
        remote_text(c, x->ip, sizeof x->ip);
        pthread_mutex_lock(&s->cmu);
        x->state = HTTP_CONN_WAIT;
        x->since_ns = core_now_ns();
        x->prev = s->c_tail;
        if (s->c_tail) s->c_tail->next = x;
        else s->c_head = x;
        s->c_tail = x;
        s->n_conns++;
        /* Make room before the pool or one address's share runs out: a
         * complete request must always find a connection. */
        if (s->n_conns > s->shed_at) conn_shed_oldest(s, NULL);
        unsigned same = 0;
        for (http_conn *y = s->c_head; y; y = y->next)
            same += !y->shed && y->state != HTTP_CONN_BUSY && !strcmp(y->ip, x->ip);
        if (same > s->per_ip) conn_shed_oldest(s, x->ip);
        pthread_mutex_unlock(&s->cmu);
        return;
    }
    http_conn *x = *socket_context;
    *socket_context = NULL;
    if (!x) return;
    pthread_mutex_lock(&s->cmu);
    if (x->prev) x->prev->next = x->next;
    else s->c_head = x->next;
    if (x->next) x->next->prev = x->prev;
    else s->c_tail = x->prev;
    s->n_conns--;
    pthread_mutex_unlock(&s->cmu);
    free(x);
}

/* Closes connections past their header or body deadline. */
static void *reaper_main(void *arg) {
    http_server *s = arg;
    pthread_mutex_lock(&s->cmu);
    while (!s->reaper_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += HTTP_REAP_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->ccv, &s->cmu, &ts);
        uint64_t now = core_now_ns();
        for (http_conn *x = s->c_head; x; x = x->next) {
            if (x->shed || x->state == HTTP_CONN_BUSY) continue;
            uint64_t limit = x->state == HTTP_CONN_WAIT ? s->hdr_ns : s->body_ns;
            if (now - x->since_ns > limit) {
                conn_kill(x);
                s->n_timed_out++;
            }
        }
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
}

void http_server_stats(http_server *s, http_stats *out) {
    memset(out, 0, sizeof *out);
    if (!s) return;
    pthread_mutex_lock(&s->cmu);
    out->open = s->n_conns;
    out->shed = s->n_shed;
    out->timed_out = s->n_timed_out;
    pthread_mutex_unlock(&s->cmu);
}

/* ---- MHD callbacks -------------------------------------------------- */


static enum MHD_Result queue(http_req *r) {
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, r->resp);
    MHD_destroy_response(r->resp); /* MHD holds its own reference when queued */
    r->resp = NULL;
    r->queued = 1;
    return ret;
}

/* MHD stores each query argument in the connection's memory pool right
 * after this call; past a few hundred the pool runs dry and MHD drops the
 * connection without an answer. So count them here (the URI is still
 * whole) and, over the limit, empty the query in place (MHD parses it from
 * its own buffer, which it clobbers anyway) and remember to answer 414.
 * The returned request becomes the access handler's *con_cls. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
    (void)cls;
    (void)c;
    const char *q = uri ? strchr(uri, '?') : NULL;
    if (!q) return NULL;
    size_t n = 1;
    for (const char *p = q + 1; *p; p++) n += *p == '&';
    if (n <= HTTP_MAX_QUERY_ARGS) return NULL;
    http_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->n_args = n;
    ((char *)q)[1] = 0;
    return r;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                 const char *version, const char *upload, size_t *upload_size,
                                 void **con_cls) {
    http_server *s = cls;
    http_req *r = *con_cls;
    (void)version;
    if (!r || !r->started) {
        if (!r && !(r = calloc(1, sizeof *r))) return MHD_NO;
        r->started = 1;
        r->srv = s;
        r->conn = c;
        r->hc = conn_of(c);
        conn_set(s, r->hc, HTTP_CONN_BODY); /* the header block is complete */
        r->method = method;
        r->path = url;
        remote_text(c, r->remote, sizeof r->remote);
        *con_cls = r;
        /* Before anything else: a foreign name may be a rebound page. */
        const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
        if (!host_allowed(s, host)) {
            conn_set(s, r->hc, HTTP_CONN_BUSY);
            char msg[512];
            snprintf(msg, sizeof msg,
                     "this server does not answer to the host name '%.200s' (DNS rebinding protection): "
                     "use http://localhost or its address, or start it with --allow-host NAME", host);
            if (http_respond_text(r, 421, msg) == 0) return queue(r);
            return MHD_NO;
        }
        if (r->n_args) {
            conn_set(s, r->hc, HTTP_CONN_BUSY);
            char msg[128];
            snprintf(msg, sizeof msg, "too many query arguments (%zu; at most %d)", r->n_args, HTTP_MAX_QUERY_ARGS);
            if (http_respond_text(r, 414, msg) == 0) return queue(r);
            return MHD_NO;
        }
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || end == cl || n > s->max_body) {
                r->too_large = 1;
                conn_set(s, r->hc, HTTP_CONN_BUSY);
                /* Early answer: MHD closes the connection after it. */
                if (http_respond_text(r, 413, "request body too large") == 0) return queue(r);
                return MHD_NO;
            }
        }
        return MHD_YES;
    }
    if (r->queued) { /* answered early (413): discard the rest */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        if (!r->too_large) {
            if (r->body.len + *upload_size > s->max_body) {
                r->too_large = 1;
                core_buf_free(&r->body);
            } else if (core_buf_append(&r->body, upload, *upload_size) != 0) {
                return MHD_NO; /* out of memory: drop the connection */
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    r->body_complete = 1;
    conn_set(s, r->hc, HTTP_CONN_BUSY);
    if (r->too_large) {
        if (http_respond_text(r, 413, "request body too large") != 0) return MHD_NO;
        return queue(r);
    }
    core_err err = {0};
    int rc = s->handler(s->ctx, r, &err);
    if (!r->resp) {
        const char *msg = rc ? (err.msg[0] ? err.msg : core_strerror(rc)) : "handler made no response";
        if (!rc) LOG_WARN("http: %s %s: handler made no response", method, url);
        if (http_respond_text(r, 500, msg) != 0) return MHD_NO;
    }
    return queue(r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    http_server *s = cls;
    /* Keep-alive: the next request's header deadline starts now. */
    conn_set(s, conn_of(c), HTTP_CONN_WAIT);
    http_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    /* Anything but COMPLETED_OK (MHD says WITH_ERROR for a client that went
     * away, not CLIENT_ABORT) means the stream is over; so does OK. */
    if (r->stream) {
        http__stream_mhd_done(r->stream, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK);
        r->stream = NULL;
    }
    req_free(r);
}

/* ---- server --------------------------------------------------------- */

int http_server_new(const http_config *cfg, http_handler_fn handler, void *ctx, http_server **out,
                    core_err *err) {
    http_config c = cfg ? *cfg : (http_config){0};
    *out = NULL;
    if (!handler) return core_errf(err, CORE_EINVAL, "http: no handler");
    if (c.port < 0 || c.port > 65535) return core_errf(err, CORE_EINVAL, "http: bad port %d", c.port);
    http_server *s = calloc(1, sizeof *s);
    if (!s) return core_errf(err, CORE_ENOMEM, "http: out of memory");
    s->handler = handler;
    s->ctx = ctx;
    s->max_body = c.max_body ? c.max_body : HTTP_DEF_MAX_BODY;
    s->ping_ms = c.ping_ms ? c.ping_ms : HTTP_DEF_PING_MS;
    s->pool = c.pool_threads;
    s->csp = strdup(c.csp ? c.csp : HTTP_DEF_CSP);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->ccv, &ca);
    pthread_condattr_destroy(&ca);
    unsigned max_conns = c.max_conns ? c.max_conns : HTTP_DEF_MAX_CONNS;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)max_conns + 2 * HTTP_FD_RESERVE) {
        /* each connection is a descriptor: past the limit accept() fails for everyone */
        unsigned fit = rl.rlim_cur > 2 * HTTP_FD_RESERVE ? (unsigned)rl.rlim_cur - HTTP_FD_RESERVE : HTTP_FD_RESERVE;
        if (fit < max_conns) {
            LOG_WARN("http: %u connections at most (open-file limit %llu)", fit, (unsigned long long)rl.rlim_cur);
            max_conns = fit;
        }
    }
    s->shed_at = max_conns - max_conns / 4; /* the rest: room for the shed until MHD reaps them */
    s->per_ip = c.max_waiting_per_ip ? c.max_waiting_per_ip : max_conns / 2;
    if (s->per_ip < 1) s->per_ip = 1;
    s->hdr_ns = (uint64_t)(c.header_timeout_s ? c.header_timeout_s : HTTP_DEF_HEADER_S) * 1000000000ull;
    s->body_ns = (uint64_t)(c.body_timeout_s ? c.body_timeout_s : HTTP_DEF_BODY_S) * 1000000000ull;
    for (const char *const *h = c.allow_hosts; h && *h; h++) {
        if (!strcmp(*h, "*")) {
            s->any_host = 1;
            continue;
        }
        char **na = realloc(s->allow, (s->n_allow + 1) * sizeof *na);
        if (na) s->allow = na;
        char *d = na ? strdup(*h) : NULL;
        if (!d) {
            http_server_free(s);
            return core_errf(err, CORE_ENOMEM, "http: out of memory");
        }
        s->allow[s->n_allow++] = d;
    }
    if (!s->csp || has_crlf(s->csp)) {
        http_server_free(s);
        return core_errf(err, CORE_EINVAL, "http: bad Content-Security-Policy");
    }
    size_t na = 0;
    while (http_assets[na].path) na++;
    if (na) {
        s->etags = calloc(na, sizeof *s->etags);
        if (!s->etags) {
            http_server_free(s);
            return core_errf(err, CORE_ENOMEM, "http: out of memory");
        }
        for (size_t i = 0; i < na; i++) asset_etag(&http_assets[i], s->etags[i]);
        s->nassets = na;
    }

    const char *host = c.host && *c.host ? c.host : "127.0.0.1";
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    struct sockaddr *sa;
    int loopback = 0;
    unsigned flags = MHD_USE_ITC | MHD_USE_ERROR_LOG;
    memset(&a4, 0, sizeof a4);
    memset(&a6, 0, sizeof a6);
    if (inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET;
        a4.sin_port = htons((uint16_t)c.port);
        sa = (struct sockaddr *)&a4;
        loopback = (ntohl(a4.sin_addr.s_addr) >> 24) == 127;
    } else if (inet_pton(AF_INET6, host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6;
        a6.sin6_port = htons((uint16_t)c.port);
        sa = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
        loopback = IN6_IS_ADDR_LOOPBACK(&a6.sin6_addr);
    } else {
        http_server_free(s);
        return core_errf(err, CORE_EINVAL, "http: host '%s' is not a numeric IPv4/IPv6 address", host);
    }
    if (s->pool)
        flags |= MHD_USE_EPOLL_INTERNAL_THREAD;
    else
        flags |= MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION;

    size_t mem = c.max_header ? c.max_header : HTTP_DEF_MAX_HEADER;
    if (mem < 4096) mem = 4096;
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, sa},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)mem, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)(c.conn_timeout_s ? c.conn_timeout_s : HTTP_DEF_TIMEOUT_S), NULL},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)max_conns, NULL},
        /* Busy ones included, one remote address never holds every
         * connection. Not on loopback: there every client is this machine
         * (127.0.0.1 for all), and the cap would refuse the user's own
         * request while the connections we shed are still being reaped. */
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)(loopback ? 0 : max_conns - max_conns / 4), NULL},
        {MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)(s->pool ? s->pool : 0), NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    if (!s->pool) opts[5].option = MHD_OPTION_END; /* no pool option in thread-per-connection mode */
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_access, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                            MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
                            MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!s->d) {
        http_server_free(s);
        return core_errf(err, CORE_EIO, "http: cannot listen on %s:%d (address in use or not local?)", host,
                         c.port);
    }
    if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
        http_server_free(s);
        return core_errf(err, CORE_ENOMEM, "http: cannot start the connection reaper thread");
    }
    s->reaper_on = 1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : c.port;
    *out = s;
    return 0;
}

int http_server_port(const http_server *s) { return s ? s->port : 0; }

void http_server_stop(http_server *s) {
    if (!s || !s->d) return;
    /* 1. No new connections. */
    MHD_socket lfd = MHD_quiesce_daemon(s->d);
    /* 2. Wake every stream reader: they end their bodies and return. */
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    for (http_stream *st = s->streams; st; st = st->next) http__stream_stop(st);
    pthread_mutex_unlock(&s->mu);
    /* 3. Let the woken streams send what was queued and their chunked
     *    terminator (MHD_stop_daemon shuts sockets down at once), bounded. */
    for (int i = 0; i < HTTP_STOP_DRAIN_MS / 10; i++) {
        int busy = 0;
        pthread_mutex_lock(&s->mu);
        for (http_stream *st = s->streams; st && !busy; st = st->next) busy = !http__stream_done(st);
        pthread_mutex_unlock(&s->mu);
        if (!busy) break;
        usleep(10000);
    }
    /* 4. No more deadlines (the reaper must not outlive the list). */
    if (s->reaper_on) {
        pthread_mutex_lock(&s->cmu);
        s->reaper_stop = 1;
        pthread_cond_signal(&s->ccv);
        pthread_mutex_unlock(&s->cmu);
        pthread_join(s->reaper, NULL);
        s->reaper_on = 0;
    }
    /* 5. Close idle keep-alive connections and join every thread. */
    MHD_stop_daemon(s->d);
    s->d = NULL;
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
}

void http_server_free(http_server *s) {
    if (!s) return;
    http_server_stop(s);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->cmu);
    pthread_cond_destroy(&s->ccv);
    for (size_t i = 0; i < s->n_allow; i++) free(s->allow[i]);
    free(s->allow);
    free(s->etags);
    free(s->csp);
    free(s);
}
