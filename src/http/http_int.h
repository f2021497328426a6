/* http_int.h -- shared between http.c and sse.c; not for other modules.
 *
 * Lock order: server mu, then a stream's mu. The server's stream list
 * holds the streams whose MHD response is still alive; a stream leaves it
 * when MHD frees the response (the reader can no longer be called), so a
 * producer that outlives the server never touches it.
 */
#ifndef HTTP_INT_H
#define HTTP_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
#include <microhttpd.h>

#include "http/http.h"

#define HTTP_ETAG_LEN 24

/* One per TCP connection (MHD's socket context), in the server's list
 * oldest first, for the deadlines and the shedding. */
enum { HTTP_CONN_WAIT, HTTP_CONN_BODY, HTTP_CONN_BUSY };
typedef struct http_conn {
    struct http_conn *prev, *next;
    int fd;                   /* shut down (never closed) by us; MHD closes it after CLOSED */
    int state;                /* HTTP_CONN_* */
    int shed;                 /* shut down already */
    uint64_t since_ns;        /* when state began */
    char ip[48];
} http_conn;

struct http_server {
    struct MHD_Daemon *d;
    http_handler_fn handler;
    void *ctx;
    size_t max_body;
    unsigned ping_ms;
    unsigned pool;            /* 0: thread per connection */
    char *csp;
    char **allow;             /* [n_allow] extra Host names (lower case not assumed) */
    size_t n_allow;
    int any_host;             /* allow_hosts held "*" */
    int port;
    char (*etags)[HTTP_ETAG_LEN]; /* [nassets], parallel to http_assets */
    size_t nassets;
    pthread_mutex_t mu;       /* guards stopping and streams */
    int stopping;
    http_stream *streams;     /* doubly linked through prev/next */
    /* connections: guarded by cmu (never held with mu) */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;       /* wakes the reaper to stop */
    http_conn *c_head, *c_tail;
    unsigned n_conns, shed_at, per_ip;
    uint64_t hdr_ns, body_ns;
    unsigned long long n_shed, n_timed_out;
    pthread_t reaper;
    int reaper_on, reaper_stop;
};

struct http_req {
    http_server *srv;
    struct MHD_Connection *conn;
    const char *method, *path; /* MHD's strings, alive for the request */
    char remote[48];
    core_buf body;
    int started;               /* the access handler has seen it (it may come from on_uri) */
    int too_large, body_complete, queued, status;
    size_t n_args;             /* query arguments, when over HTTP_MAX_QUERY_ARGS */
    struct MHD_Response *resp; /* built by http_respond*, queued after the handler */
    char **hdrs;               /* extra headers: name, value pairs */
    size_t nhdr, caphdr;
    http_stream *stream;       /* holds one reference until the request completes */
    http_conn *hc;             /* the connection's tracker (may be NULL: out of memory) */
};

struct http_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* data queued, closed, gone */
    core_buf q;                /* bytes waiting: q.data[qoff .. q.len) */
    size_t qoff;
    int refs;                  /* caller refs + MHD response + request */
    int prod_refs;             /* caller refs; 0 -> closed */
    int closed, gone, stopped, sse;
    int done;                  /* MHD reported the request completed */
    unsigned ping_ms;
    int fd;                    /* connection socket, peeked for EOF by the reader */
    uint64_t last_ns;          /* last time bytes went to MHD */
    http_server *srv;          /* NULL once MHD freed the response */
    http_stream *prev, *next;
};

int http__set_response(http_req *r, struct MHD_Response *resp, int status, const char *ct,
                       const http_header *hdrs);
/* Server stopping (server mu held): mark gone, end the body cleanly, wake. */
void http__stream_stop(http_stream *st);
/* The request of this stream completed (error: not COMPLETED_OK); drops
 * the request's reference. */
void http__stream_mhd_done(http_stream *st, int error);
/* 1 once the request completed (server mu held: the stream is alive). */
int http__stream_done(http_stream *st);

#endif
