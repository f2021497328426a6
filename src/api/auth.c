/* auth.c -- the page's sign-in when the server has an API key: sessions,
 * the sign-in rate limit, sign-out.
 *
 * The page is as powerful as the API, so with a key it needs the key too.
 * The form at /login.html posts it once to /ui/login; the answer is an
 * HttpOnly, SameSite=Strict cookie holding a session id: 128 random bits,
 * new at each sign-in, so every browser has its own and one can sign out
 * (POST /ui/logout) without the others. The key itself never sits in the
 * browser. Sessions live in memory (a restart signs everyone out) and end
 * after AUTH_IDLE_S without use or AUTH_MAX_AGE_S after sign-in; past
 * AUTH_MAX_SESSIONS the least recently used one goes.
 *
 * Guessing. Every attempt is first counted as a failure (so parallel
 * guesses cannot all slip past the check) and refunded when the key was
 * right. Per client address: AUTH_FREE_FAILS failures, then each one
 * doubles the wait before the next attempt (1 s, 2 s, ... up to
 * AUTH_MAX_WAIT_S), answered 429 with Retry-After without looking at the
 * key. All addresses together: a bucket of AUTH_BUCKET failures refilled
 * at AUTH_REFILL_PER_S, so rotating addresses buys nothing. A guesser can
 * thereby delay others' sign-ins (never signed-in browsers or Bearer
 * clients): the price of a key that cannot be brute-forced.
 *
 * Cross-site: sign-in and sign-out need a same-origin request (Origin, when
 * sent, must be this Host; Sec-Fetch-Site, when sent, same-origin or none).
 * Host itself is on the http module's allow-list.
 *
 * Thread-safety: everything under one mutex; handlers call in from many
 * connection threads.
 */
#include "api/api_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define AUTH_MAX_SESSIONS 256
#define AUTH_IDLE_S (7 * 86400.0)
#define AUTH_MAX_AGE_S (30 * 86400.0)
#define AUTH_ID_BYTES 16
#define AUTH_CLIENTS 256       /* addresses remembered for the back-off */
#define AUTH_FREE_FAILS 5
#define AUTH_MAX_WAIT_S 600.0
#define AUTH_BUCKET 20.0
#define AUTH_REFILL_PER_S 0.5
#define AUTH_COOKIE "smolbot_session"

typedef struct auth_session {
    char id[2 * AUTH_ID_BYTES + 1]; /* "" = free slot */
    double created, used;
} auth_session;

typedef struct auth_client {
    char ip[48]; /* "" = free slot */
    unsigned fails;
    double last, next_ok;
} auth_client;

struct api_auth {
    pthread_mutex_t mu;
    auth_session s[AUTH_MAX_SESSIONS];
    auth_client c[AUTH_CLIENTS];
    double tokens, refilled;
};

int api_auth_new(api_auth **out, core_err *err) {
    api_auth *u = calloc(1, sizeof *u);
    if (!u) return core_errf(err, CORE_ENOMEM, "out of memory");
    pthread_mutex_init(&u->mu, NULL);
    u->tokens = AUTH_BUCKET;
    u->refilled = core_now_s();
    *out = u;
    return 0;
}

void api_auth_free(api_auth *u) {
    if (!u) return;
    pthread_mutex_destroy(&u->mu);
    free(u);
}

/* Equal strings, in time that depends on the lengths only. */
static int ct_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < nb; i++) d |= (unsigned char)(a[i % (na ? na : 1)] ^ b[i]);
    return d == 0;
}

/* mu held: the live session with this id, or NULL (expired ones are freed). */
static auth_session *session_find(api_auth *u, const char *id, double now) {
    auth_session *hit = NULL;
    for (int i = 0; i < AUTH_MAX_SESSIONS; i++) {
        auth_session *x = &u->s[i];
        if (!x->id[0]) continue;
        if (now - x->used > AUTH_IDLE_S || now - x->created > AUTH_MAX_AGE_S) {
            memset(x, 0, sizeof *x);
            continue;
        }
        if (ct_equal(id, x->id)) hit = x; /* no early exit: every slot costs the same */
    }
    return hit;
}

static int keyed(const api *a) { return a->cfg.api_key && *a->cfg.api_key; }

int api_auth_signed_in(api *a, http_req *r) {
    if (!keyed(a)) return 1;
    const char *c = http_req_cookie(r, AUTH_COOKIE);
    if (c && strlen(c) == 2 * AUTH_ID_BYTES) {
        api_auth *u = a->auth;
        double now = core_now_s();
        pthread_mutex_lock(&u->mu);
        auth_session *x = session_find(u, c, now);
        if (x) x->used = now;
        pthread_mutex_unlock(&u->mu);
        if (x) return 1;
    }
    return http_req_header(r, "Authorization") && http_check_bearer(r, a->cfg.api_key);
}

/* 1 if the request comes from our own page (or from no browser at all). */
static int same_origin(http_req *r) {
    const char *site = http_req_header(r, "Sec-Fetch-Site");
    if (site && strcmp(site, "same-origin") && strcmp(site, "none")) return 0;
    const char *origin = http_req_header(r, "Origin"), *host = http_req_header(r, "Host");
    if (!origin) return 1;
    const char *o = origin;
    if (!strncmp(o, "http://", 7)) o += 7;
    else if (!strncmp(o, "https://", 8)) o += 8;
    else return 0;
    return host && !strcasecmp(o, host);
}

/* The value of field `name` in an application/x-www-form-urlencoded body,
 * decoded into out. -1 when absent, too long, or holding a NUL. */
static int form_field(const char *body, size_t len, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && body[end] != '&') end++;
        if (end - i > nl && !strncmp(body + i, name, nl) && body[i + nl] == '=') {
            size_t o = 0;
            for (size_t k = i + nl + 1; k < end; k++) {
                int ch = (unsigned char)body[k];
                if (ch == '+') ch = ' ';
                else if (ch == '%' && k + 2 < end && isxdigit((unsigned char)body[k + 1]) &&
                         isxdigit((unsigned char)body[k + 2])) {
                    char hex[3] = {body[k + 1], body[k + 2], 0};
                    ch = (int)strtol(hex, NULL, 16);
                    k += 2;
                }
                if (o + 1 >= cap || ch == 0) return -1;
                out[o++] = (char)ch;
            }
            out[o] = 0;
            return 0;
        }
        i = end + 1;
    }
    return -1;
}

/* mu held: the back-off entry of ip (the least recently used one is reused). */
static auth_client *client_of(api_auth *u, const char *ip) {
    auth_client *lru = &u->c[0];
    for (int i = 0; i < AUTH_CLIENTS; i++) {
        if (u->c[i].ip[0] && !strcmp(u->c[i].ip, ip)) return &u->c[i];
        if (!u->c[i].ip[0] || u->c[i].last < lru->last) lru = &u->c[i];
        if (!lru->ip[0]) break;
    }
    memset(lru, 0, sizeof *lru);
    snprintf(lru->ip, sizeof lru->ip, "%s", ip);
    return lru;
}

static void page(http_req *r, int status, const char *msg) {
    core_buf b = {0};
    core_buf_printf(&b,
                    "<!doctype html><meta charset=utf-8><title>smolbot</title>"
                    "<link rel=stylesheet href=/app.css><body class=login><main class=login-card>"
                    "<h1>smolbot</h1><p>%s</p><p><a href=/>Try again</a></p></main>",
                    msg);
    if (!b.data) {
        http_respond_text(r, 500, "out of memory");
        return;
    }
    http_respond_take(r, status, "text/html; charset=utf-8", b.data, b.len);
}

static void route_login(api *a, http_req *r) {
    api_auth *u = a->auth;
    if (!same_origin(r)) {
        page(r, 403, "Sign in from this server's own page.");
        return;
    }
    /* Count the attempt as a failure up front; refund it if the key is right. */
    double now = core_now_s();
    char retry[32] = "";
    pthread_mutex_lock(&u->mu);
    u->tokens += (now - u->refilled) * AUTH_REFILL_PER_S;
    if (u->tokens > AUTH_BUCKET) u->tokens = AUTH_BUCKET;
    u->refilled = now;
    auth_client *cl = client_of(u, http_req_remote(r));
    cl->last = now;
    if (now < cl->next_ok) snprintf(retry, sizeof retry, "%.0f", cl->next_ok - now + 0.999);
    else if (u->tokens < 1) snprintf(retry, sizeof retry, "%.0f", (1 - u->tokens) / AUTH_REFILL_PER_S + 0.999);
    else {
        u->tokens -= 1;
        if (++cl->fails > AUTH_FREE_FAILS) {
            double wait = 1;
            for (unsigned i = AUTH_FREE_FAILS + 1; i < cl->fails && wait < AUTH_MAX_WAIT_S; i++) wait *= 2;
            cl->next_ok = now + (wait < AUTH_MAX_WAIT_S ? wait : AUTH_MAX_WAIT_S);
        }
    }
    pthread_mutex_unlock(&u->mu);
    if (retry[0]) {
        http_req_add_header(r, "Retry-After", retry);
        char msg[128];
        snprintf(msg, sizeof msg, "Too many wrong keys: wait %s s before the next try.", retry);
        page(r, 429, msg);
        return;
    }

    size_t len;
    const char *body = http_req_body(r, &len);
    char key[512];
    if (form_field(body, len, "key", key, sizeof key) || !ct_equal(key, a->cfg.api_key)) {
        page(r, 401, "That is not the key.");
        return;
    }
    unsigned char rnd[AUTH_ID_BYTES];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        http_respond_text(r, 500, "no randomness for a session id");
        return;
    }
    char id[2 * AUTH_ID_BYTES + 1];
    for (int i = 0; i < AUTH_ID_BYTES; i++) snprintf(id + 2 * i, 3, "%02x", rnd[i]);
    pthread_mutex_lock(&u->mu);
    cl = client_of(u, http_req_remote(r));
    cl->fails = 0;
    cl->next_ok = 0;
    u->tokens = u->tokens + 1 > AUTH_BUCKET ? AUTH_BUCKET : u->tokens + 1;
    session_find(u, "", now); /* drop expired sessions */
    auth_session *slot = &u->s[0];
    for (int i = 0; i < AUTH_MAX_SESSIONS && slot->id[0]; i++)
        if (!u->s[i].id[0] || u->s[i].used < slot->used) slot = &u->s[i];
    memcpy(slot->id, id, sizeof id);
    slot->created = slot->used = now;
    pthread_mutex_unlock(&u->mu);
    char cookie[160];
    snprintf(cookie, sizeof cookie, AUTH_COOKIE "=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%d", id,
             (int)AUTH_MAX_AGE_S);
    http_req_add_header(r, "Set-Cookie", cookie);
    http_req_add_header(r, "Location", "/");
    http_respond(r, 303, "text/plain", "", 0);
}

static void route_logout(api *a, http_req *r) {
    if (!same_origin(r)) {
        http_respond_text(r, 403, "cross-origin request refused");
        return;
    }
    const char *c = http_req_cookie(r, AUTH_COOKIE);
    if (keyed(a) && c && strlen(c) == 2 * AUTH_ID_BYTES) {
        api_auth *u = a->auth;
        pthread_mutex_lock(&u->mu);
        auth_session *x = session_find(u, c, core_now_s());
        if (x) memset(x, 0, sizeof *x);
        pthread_mutex_unlock(&u->mu);
    }
    http_req_add_header(r, "Set-Cookie", AUTH_COOKIE "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    http_req_add_header(r, "Location", "/");
    http_req_add_header(r, "HX-Redirect", "/"); /* when htmx posts it */
    http_respond(r, 303, "text/plain", "", 0);
}

int api_auth_route(api *a, http_req *r) {
    const char *p = http_req_path(r), *m = http_req_method(r);
    if (!strcmp(p, "/ui/logout")) {
        if (strcmp(m, "POST")) return http_respond_text(r, 405, "use POST"), 1;
        return route_logout(a, r), 1;
    }
    if (!keyed(a)) return 0;
    if (!strcmp(p, "/ui/login")) {
        if (strcmp(m, "POST")) return http_respond_text(r, 405, "use POST"), 1;
        return route_login(a, r), 1;
    }
    if (api_auth_signed_in(a, r)) return 0;
    if (!strcmp(p, "/") || !strcmp(p, "/index.html")) return http_respond_asset(r, "/login.html"), 1;
    if (!strncmp(p, "/ui/", 4)) return http_respond_text(r, 401, "sign in first: this server needs its API key"), 1;
    return 0;
}
