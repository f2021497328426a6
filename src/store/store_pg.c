/* store_pg.c -- the conversation store on PostgreSQL, through libpq (see
 * store.h for the contract, store_int.h for how store.c hands calls here).
 *
 * Why PostgreSQL: several smolbot processes (replicas behind a proxy, on
 * one or more machines) share one history.  Everything store.h promises
 * holds here too; what differs is said where it differs.
 *
 * Connections
 *   A small pool (POOL connections, made on first use): a call takes one,
 *   runs its statements (writes inside BEGIN .. COMMIT) and gives it back,
 *   so calls from different threads run side by side.  A connection found
 *   broken is dropped; the next call connects again, so when the server
 *   comes back the store works again without a restart.  A call that fails
 *   because the server cannot be reached returns STORE_EUNAVAIL (HTTP 503);
 *   a statement that fails on a dead connection before anything was written
 *   (BEGIN, a read) is retried once on a new connection, which hides a
 *   server restart from the first call after it.
 *
 * Schema
 *   smolbot_migrations(version, applied) records each migration; they run
 *   at open inside one transaction holding pg_advisory_xact_lock(K_MIGRATE),
 *   so replicas starting at the same moment migrate once, one after the
 *   other.  Tables mirror the SQLite ones; conversations.seq orders equal
 *   "updated" times like SQLite's rowid; messages.id is an identity (never
 *   reused: a child's id is larger than its parent's).
 *
 * Search
 *   messages.words is a tsvector we build ourselves from the words the
 *   SQLite side sees (store_i_word_char), lowercased, Latin-1 diacritics
 *   folded, with positions: so a query splits and matches the same way on
 *   both (PostgreSQL's own parser splits differently, e.g. on non-ASCII
 *   punctuation).  NULL while streaming, as SQLite does not index those.  A
 *   GIN index serves "all words match"; ts_rank (frequency) orders, by half
 *   the time limit, else newest first, all under statement_timeout; the
 *   snippet is store_i_make_snippet over the content.  Diacritics outside
 *   Latin-1 are not folded (SQLite's unicode61 folds them).
 *
 * Streams of several replicas
 *   Each open store has a replica id and holds a session advisory lock
 *   (K_REPLICA, hashtext(id)) on a connection of its own; a message
 *   appended STREAMING records that id as its owner.  "interrupted" is set
 *   only on streams whose owner's lock can be taken, i.e. whose process
 *   (or connection) is gone: at open for every such stream, and for one
 *   conversation whenever it is read (branch, messages, a message still
 *   streaming) or a user message is appended to it, so a conversation
 *   moved off a killed replica shows its partial answer as interrupted at
 *   once.  After a server restart every lock is gone until
 *   each replica's next stream takes its own again; a live stream marked
 *   interrupted in that window is set right by its next update.
 */
#include "store/store_int.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { POOL = 4 };
/* advisory lock classes: 'smol' and 'smom' */
#define K_MIGRATE "1936682860"
#define K_REPLICA "1936682861"

typedef struct pconn {
    PGconn *c;
    PGcancel *cancel; /* for store_stop_searches, while searching */
    int busy, searching;
} pconn;

struct store_pg {
    store *s;
    char url[1024];
    char replica[STORE_ID_LEN + 1];
    pthread_mutex_t mu; /* the pool */
    pthread_cond_t cv;
    pconn pool[POOL];
    pthread_mutex_t lease_mu;
    PGconn *lease; /* holds our replica lock */
};

/* ---- schema ------------------------------------------------------------ */

static const char *const pg_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE conversations("
    "  id text PRIMARY KEY,"
    "  seq bigint GENERATED ALWAYS AS IDENTITY,"
    "  title text NOT NULL DEFAULT '',"
    "  created bigint NOT NULL,"
    "  updated bigint NOT NULL,"
    "  pinned_date text NOT NULL DEFAULT '',"
    "  thinking int NOT NULL DEFAULT 1,"
    "  temperature double precision NOT NULL,"
    "  top_p double precision NOT NULL,"
    "  top_k int NOT NULL,"
    "  min_p double precision NOT NULL,"
    "  max_tokens int NOT NULL,"
    "  system_prompt text NOT NULL DEFAULT '',"
    "  current_leaf bigint);"
    "CREATE INDEX conversations_updated ON conversations(updated DESC, seq DESC);"
    "CREATE TABLE messages("
    "  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "  conv text NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
    "  parent bigint REFERENCES messages(id) ON DELETE CASCADE,"
    "  role text NOT NULL,"
    "  content text NOT NULL,"
    "  reasoning text NOT NULL DEFAULT '',"
    "  created bigint NOT NULL,"
    "  status int NOT NULL DEFAULT 0,"
    "  finish text NOT NULL DEFAULT '',"
    "  prompt_tokens int NOT NULL DEFAULT 0,"
    "  completion_tokens int NOT NULL DEFAULT 0,"
    "  prefill_ms double precision NOT NULL DEFAULT 0,"
    "  gen_ms double precision NOT NULL DEFAULT 0,"
    "  model text NOT NULL DEFAULT '',"
    "  owner text NOT NULL DEFAULT '',"
    "  words tsvector);"
    "ALTER TABLE conversations ADD FOREIGN KEY (current_leaf) REFERENCES messages(id) ON DELETE SET NULL;"
    "CREATE INDEX messages_conv_parent ON messages(conv, parent);"
    "CREATE INDEX messages_parent ON messages(parent);"
    "CREATE INDEX messages_streaming ON messages(conv, owner) WHERE status = 1;"
    "CREATE INDEX messages_words ON messages USING gin(words);",
};
#define PG_SCHEMA_VERSION ((int)CORE_ARRAY_LEN(pg_migrations))

#define CONV_COLS                                                                              \
    "c.id, c.title, c.created, c.updated, c.pinned_date, c.thinking, c.temperature, c.top_p,"  \
    " c.top_k, c.min_p, c.max_tokens, c.system_prompt, coalesce(c.current_leaf, 0),"           \
    " (SELECT count(*) FROM messages x WHERE x.conv = c.id)"
#define MSG_COLS                                                                                \
    "m.id, coalesce(m.parent, 0), m.conv, m.role, m.content, m.reasoning, m.created, m.status," \
    " m.finish, m.prompt_tokens, m.completion_tokens, m.prefill_ms, m.gen_ms, m.model"

/* ---- connections -------------------------------------------------------- */

int store_pg_url(const char *path) {
    return path && (strncmp(path, "postgres://", 11) == 0 || strncmp(path, "postgresql://", 13) == 0);
}

/* The URL without a password, for messages. */
static void safe_url(const char *url, char *buf, size_t cap) {
    const char *at = strchr(url, '@'), *scheme = strstr(url, "://");
    const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
    if (at && colon && colon < at)
        snprintf(buf, cap, "%.*s:***%s", (int)(colon - url), url, at);
    else
        snprintf(buf, cap, "%s", url);
}

static int unavailable(store_pg *p, PGconn *c, const char *what, core_err *err) {
    char u[512], m[300] = "";
    safe_url(p->url, u, sizeof u);
    if (c) snprintf(m, sizeof m, "%s", PQerrorMessage(c));
    for (char *x = m; *x; x++)
        if (*x == '\n') *x = ' ';
    return core_errf(err, STORE_EUNAVAIL, "store: %s: the database %s is unavailable: %s", what, u,
                     m[0] ? m : "no connection");
}

static PGconn *pg_connect(store_pg *p, core_err *err) {
    /* later keywords override what the URL says: bounded connect, and a
     * statement limit so no call hangs on a stuck server */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "options", NULL};
    const char *vals[] = {p->url, "3", "smolbot", "-c statement_timeout=30000 -c client_min_messages=warning", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        core_errf(err, CORE_ENOMEM, "store: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        unavailable(p, c, "connect", err);
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Map a failed result to our codes. */
static int pg_err(store_pg *p, PGconn *c, PGresult *r, const char *what, core_err *err) {
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(c) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0)
        return unavailable(p, c, what, err);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    int code = CORE_EIO;
    if (strcmp(state, "57014") == 0) code = CORE_ECANCEL;
    else if (strncmp(state, "23", 2) == 0) code = CORE_EINVAL;
    else if (strcmp(state, "53100") == 0) code = CORE_EFULL;
    else if (strcmp(state, "53200") == 0) code = CORE_ENOMEM;
    else if (strcmp(state, "25006") == 0) code = STORE_EREADONLY;
    if (code == CORE_EFULL) return core_errf(err, code, "store: %s: the database server's disk is full, nothing was saved (%s)", what, msg ? msg : "");
    return core_errf(err, code, "store: %s: %s", what, msg ? msg : "error");
}

/* Take a pool connection, connected; deadline_ns 0 = wait as long as it takes. */
static int conn_get(store_pg *p, pconn **out, uint64_t deadline_ns, core_err *err) {
    *out = NULL;
    pthread_mutex_lock(&p->mu);
    pconn *pc = NULL;
    for (;;) {
        for (int i = 0; i < POOL && !pc; i++)
            if (!p->pool[i].busy) pc = &p->pool[i];
        if (pc) break;
        if (deadline_ns && core_now_ns() > deadline_ns) {
            pthread_mutex_unlock(&p->mu);
            return core_errf(err, CORE_ECANCEL, "store: timed out waiting for a free database connection");
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pc->busy = 1;
    pthread_mutex_unlock(&p->mu);
    if (pc->c && PQstatus(pc->c) != CONNECTION_OK) {
        PQfinish(pc->c);
        pc->c = NULL;
    }
    if (!pc->c && !(pc->c = pg_connect(p, err))) {
        pthread_mutex_lock(&p->mu);
        pc->busy = 0;
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
        return err ? err->code : STORE_EUNAVAIL;
    }
    *out = pc;
    return 0;
}

static void conn_put(store_pg *p, pconn *pc) {
    if (pc->c && PQstatus(pc->c) == CONNECTION_OK && PQtransactionStatus(pc->c) != PQTRANS_IDLE)
        PQclear(PQexec(pc->c, "ROLLBACK"));
    if (pc->c && PQstatus(pc->c) != CONNECTION_OK) {
        PQfinish(pc->c);
        pc->c = NULL;
    }
    pthread_mutex_lock(&p->mu);
    pc->busy = 0;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Run sql with n text parameters.  The result when it succeeded, else NULL
 * and *rc set.  retry: nothing was written yet on this connection, so a
 * dead connection is replaced and the statement run once more. */
static PGresult *q(store_pg *p, pconn *pc, const char *sql, int n, const char *const *v, int retry, const char *what,
                   int *rc, core_err *err) {
    PGresult *r = PQexecParams(pc->c, sql, n, NULL, v, NULL, NULL, 0);
    if (r && (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)) return r;
    if (retry && PQstatus(pc->c) != CONNECTION_OK) {
        PQclear(r);
        PQfinish(pc->c);
        core_err e2 = {0};
        pc->c = pg_connect(p, &e2);
        if (!pc->c) {
            if (err) *err = e2;
            *rc = e2.code ? e2.code : STORE_EUNAVAIL;
            return NULL;
        }
        r = PQexecParams(pc->c, sql, n, NULL, v, NULL, NULL, 0);
        if (r && (PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK)) return r;
    }
    *rc = pg_err(p, pc->c, r, what, err);
    PQclear(r);
    return NULL;
}

/* A statement whose rows we do not need. */
static int qx(store_pg *p, pconn *pc, const char *sql, int n, const char *const *v, int retry, const char *what,
              core_err *err) {
    int rc = 0;
    PGresult *r = q(p, pc, sql, n, v, retry, what, &rc, err);
    PQclear(r);
    return rc;
}

static int tx_begin(store_pg *p, pconn *pc, core_err *err) { return qx(p, pc, "BEGIN", 0, NULL, 1, "begin transaction", err); }

static int tx_end(store_pg *p, pconn *pc, int rc, core_err *err) {
    if (!rc) return qx(p, pc, "COMMIT", 0, NULL, 0, "commit", err);
    if (PQstatus(pc->c) == CONNECTION_OK) PQclear(PQexec(pc->c, "ROLLBACK"));
    return rc;
}

static int64_t v64(PGresult *r, int row, int col) { return strtoll(PQgetvalue(r, row, col), NULL, 10); }
static double vdbl(PGresult *r, int row, int col) { return strtod(PQgetvalue(r, row, col), NULL); }
static char *vdup(PGresult *r, int row, int col) { return strdup(PQgetvalue(r, row, col)); }
static void vcopy(PGresult *r, int row, int col, char *dst, size_t cap) { snprintf(dst, cap, "%s", PQgetvalue(r, row, col)); }

/* Number formatting for parameters. */
typedef struct nbuf { char b[12][32]; } nbuf;
static const char *fi(nbuf *nb, int i, int64_t v) { snprintf(nb->b[i], sizeof nb->b[i], "%lld", (long long)v); return nb->b[i]; }
static const char *fd(nbuf *nb, int i, double v) { snprintf(nb->b[i], sizeof nb->b[i], "%.17g", v); return nb->b[i]; }

/* ---- replica lease and crash recovery ------------------------------------ */

static char *words_of(const char *text);

/* Our lease connection, connected and holding our replica lock.  lease_mu held. */
static int lease_ensure(store_pg *p, core_err *err) {
    if (p->lease && PQstatus(p->lease) == CONNECTION_OK) {
        /* a server restart is seen only by using the connection */
        PGresult *r = PQexec(p->lease, "SELECT 1");
        int ok = r && PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (ok) return 0;
    }
    PQfinish(p->lease);
    if (!(p->lease = pg_connect(p, err))) return err ? err->code : STORE_EUNAVAIL;
    const char *v[] = {p->replica};
    PGresult *r = PQexecParams(p->lease, "SELECT pg_advisory_lock(" K_REPLICA ", hashtext($1))", 1, NULL, v, NULL, NULL, 0);
    int rc = 0;
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) rc = pg_err(p, p->lease, r, "take the replica lock", err);
    PQclear(r);
    return rc;
}

/* Mark interrupted the streams (of conv, or all when NULL) whose owner is gone. */
static int recover(store_pg *p, pconn *pc, const char *conv, core_err *err) {
    int rc = 0;
    const char *v[] = {p->replica, conv};
    PGresult *r = q(p, pc,
                    conv ? "SELECT DISTINCT owner FROM messages WHERE status = 1 AND conv = $2 AND owner <> $1"
                         : "SELECT DISTINCT owner FROM messages WHERE status = 1 AND owner <> $1",
                    conv ? 2 : 1, v, 1, "find interrupted streams", &rc, err);
    if (!r) return rc;
    int n = PQntuples(r), fixed = 0;
    pthread_mutex_lock(&p->lease_mu);
    for (int i = 0; i < n && !rc; i++) {
        const char *owner = PQgetvalue(r, i, 0);
        if ((rc = lease_ensure(p, err))) break;
        const char *lv[] = {owner};
        PGresult *t = PQexecParams(p->lease, "SELECT pg_try_advisory_lock(" K_REPLICA ", hashtext($1))", 1, NULL, lv,
                                   NULL, NULL, 0);
        int gone = t && PQresultStatus(t) == PGRES_TUPLES_OK && PQgetvalue(t, 0, 0)[0] == 't';
        PQclear(t);
        if (!gone) continue; /* its replica is alive: the stream is running */
        /* partial answers are searchable, as on SQLite: their words now */
        const char *uv[] = {owner, conv};
        PGresult *u = q(p, pc,
                        conv ? "SELECT id, content FROM messages WHERE status = 1 AND owner = $1 AND conv = $2"
                             : "SELECT id, content FROM messages WHERE status = 1 AND owner = $1",
                        conv ? 2 : 1, uv, 0, "recover interrupted messages", &rc, err);
        for (int k = 0; u && k < PQntuples(u) && !rc; k++) {
            char *words = words_of(PQgetvalue(u, k, 1));
            if (!words) {
                rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
                break;
            }
            const char *wv[] = {PQgetvalue(u, k, 0), words};
            rc = qx(p, pc, "UPDATE messages SET status = 2, finish = 'interrupted', words = $2::tsvector"
                           " WHERE id = $1::bigint AND status = 1", 2, wv, 0, "recover interrupted messages", err);
            free(words);
            if (!rc) fixed++;
        }
        PQclear(u);
        PQclear(PQexecParams(p->lease, "SELECT pg_advisory_unlock(" K_REPLICA ", hashtext($1))", 1, NULL, lv, NULL,
                             NULL, 0));
    }
    pthread_mutex_unlock(&p->lease_mu);
    PQclear(r);
    if (fixed > 0) LOG_WARN("store: %d message(s) of a replica that is gone were marked interrupted", fixed);
    return rc;
}

/* ---- search words ---------------------------------------------------------- */

/* One word as we index it: ASCII lowercased, Latin-1 letters folded to
 * their base letter (é -> e, Ü -> u), other bytes kept. */
static size_t norm_word(const char *w, size_t n, char *out) {
    /* U+00C0..U+00FF, 'x' = keep */
    static const char fold[] = "aaaaaaxceeeeiiiixnooooxouuuuyxx"
                               "aaaaaaxceeeeiiiixnooooxouuuuyxy";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)w[i];
        if (c < 0x80) {
            out[o++] = (char)((c >= 'A' && c <= 'Z') ? c | 0x20 : c);
        } else if (c == 0xc3 && i + 1 < n && (unsigned char)w[i + 1] >= 0x80 && (unsigned char)w[i + 1] <= 0xbf &&
                   fold[(unsigned char)w[i + 1] - 0x80] != 'x') {
            out[o++] = fold[(unsigned char)w[i + 1] - 0x80];
            i++;
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

/* Bytes of a non-ASCII separator at t (punctuation and spaces of Latin-1,
 * General Punctuation, CJK punctuation), else 0.  store_i_word_char keeps
 * every non-ASCII byte in a word; FTS5 then splits such a word at these
 * inside its quoted string, so a word "a—b" is the phrase "a b" there, and
 * here too (pieces of one word at consecutive positions). */
static size_t sep_len(const unsigned char *t, size_t n) {
    if (n >= 2 && t[0] == 0xc2 && t[1] >= 0xa0 && t[1] <= 0xbf && !strchr("\xaa\xb2\xb3\xb5\xb9\xba\xbc\xbd\xbe", t[1]))
        return 2;
    if (n >= 2 && t[0] == 0xc3 && (t[1] == 0x97 || t[1] == 0xb7)) return 2;
    if (n >= 3 && t[0] == 0xe2 && (t[1] == 0x80 || (t[1] == 0x81 && t[2] <= 0xaf))) return 3;
    if (n >= 3 && t[0] == 0xe3 && t[1] == 0x80) return 3;
    return 0;
}

/* The next piece of the word w[*at..n): its start and length (0: none left). */
static size_t piece_next(const char *w, size_t n, size_t *at, size_t *start) {
    size_t i = *at, k;
    while (i < n && (k = sep_len((const unsigned char *)w + i, n - i))) i += k;
    *start = i;
    while (i < n && !sep_len((const unsigned char *)w + i, n - i)) i++;
    *at = i;
    return i - *start;
}

typedef struct wref { size_t off, len; int pos; } wref;
static int wref_cmp(const void *a, const void *b, void *base) {
    const wref *x = a, *y = b;
    const char *t = base;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(t + x->off, t + y->off, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->pos - y->pos;
}

/* The tsvector literal of text: 'word':1,5 'other':2 ... (NULL when out of memory). */
static char *words_of(const char *text) {
    size_t len = strlen(text), cnt = 0, cap = 0;
    char *nb = malloc(len + 1);
    wref *v = NULL;
    if (!nb) return NULL;
    size_t o = 0, i = 0;
    int pos = 0;
    while (i < len) {
        while (i < len && !store_i_word_char((unsigned char)text[i])) i++;
        if (i >= len) break;
        size_t w = i;
        while (i < len && store_i_word_char((unsigned char)text[i])) i++;
        size_t at = 0, ps, pl;
        while ((pl = piece_next(text + w, i - w, &at, &ps))) {
            pos++;
            if (pl > 2000) continue; /* past PostgreSQL's lexeme limit: not searchable */
            if (cnt == cap) {
                cap = cap ? cap * 2 : 64;
                wref *nv = realloc(v, cap * sizeof *nv);
                if (!nv) { free(v); free(nb); return NULL; }
                v = nv;
            }
            size_t n = norm_word(text + w + ps, pl, nb + o);
            v[cnt++] = (wref){o, n, pos < 16383 ? pos : 16383};
            o += n;
        }
    }
    if (cnt) qsort_r(v, cnt, sizeof *v, wref_cmp, nb); /* equal words together, positions ascending */
    core_buf b = {0};
    int bad = core_buf_puts(&b, "");
    size_t total = 0;
    for (size_t k = 0; k < cnt && !bad;) {
        size_t e = k;
        while (e < cnt && v[e].len == v[k].len && memcmp(nb + v[e].off, nb + v[k].off, v[k].len) == 0) e++;
        total += v[k].len + 8;
        if (total > 900000) break; /* tsvector's size limit is 1 MiB */
        bad = core_buf_puts(&b, " '") || core_buf_append(&b, nb + v[k].off, v[k].len) || core_buf_puts(&b, "':");
        int np = 0, last = 0;
        for (size_t j = k; j < e && !bad && np < 250; j++) {
            if (v[j].pos == last) continue;
            bad = core_buf_printf(&b, np ? ",%d" : "%d", v[j].pos);
            last = v[j].pos;
            np++;
        }
        k = e;
    }
    free(v);
    free(nb);
    if (bad) {
        core_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* ---- open / close ------------------------------------------------------- */

static int migrate(store_pg *p, pconn *pc, core_err *err) {
    int rc = tx_begin(p, pc, err);
    if (!rc) rc = qx(p, pc, "SELECT pg_advisory_xact_lock(" K_MIGRATE ")", 0, NULL, 0, "lock for migration", err);
    if (!rc)
        rc = qx(p, pc, "CREATE TABLE IF NOT EXISTS smolbot_migrations(version int PRIMARY KEY, applied bigint NOT NULL)",
                0, NULL, 0, "create the migrations table", err);
    int v = 0;
    if (!rc) {
        PGresult *r = q(p, pc, "SELECT coalesce(max(version), 0) FROM smolbot_migrations", 0, NULL, 0,
                        "read schema version", &rc, err);
        if (r) v = (int)v64(r, 0, 0);
        PQclear(r);
    }
    if (!rc && v > PG_SCHEMA_VERSION) {
        char u[512];
        safe_url(p->url, u, sizeof u);
        rc = core_errf(err, CORE_EUNSUP, "store: %s has schema version %d, newer than this smolbot's %d", u, v,
                       PG_SCHEMA_VERSION);
    }
    for (; !rc && v < PG_SCHEMA_VERSION; v++) {
        nbuf nb;
        const char *vv[] = {fi(&nb, 0, v + 1), fi(&nb, 1, store_i_now_ms())};
        PGresult *r = PQexec(pc->c, pg_migrations[v]); /* several statements: no parameters */
        if (!r || PQresultStatus(r) != PGRES_COMMAND_OK) rc = pg_err(p, pc->c, r, "migrate schema", err);
        PQclear(r);
        if (!rc) rc = qx(p, pc, "INSERT INTO smolbot_migrations VALUES ($1::int, $2::bigint)", 2, vv, 0,
                         "record the migration", err);
        if (!rc) LOG_INFO("store: database migrated to schema version %d", v + 1);
    }
    return tx_end(p, pc, rc, err);
}

int store_pg_open(store_pg **out, store *s, const char *url, core_err *err) {
    *out = NULL;
    store_pg *p = calloc(1, sizeof *p);
    if (!p) return core_errf(err, CORE_ENOMEM, "store: out of memory");
    p->s = s;
    snprintf(p->url, sizeof p->url, "%s", url);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_mutex_init(&p->lease_mu, NULL);
    int rc = store_i_random_id(p->replica, err);
    pconn *pc = NULL;
    if (!rc) rc = conn_get(p, &pc, 0, err);
    if (!rc) rc = migrate(p, pc, err);
    if (!rc) {
        pthread_mutex_lock(&p->lease_mu);
        rc = lease_ensure(p, err);
        pthread_mutex_unlock(&p->lease_mu);
    }
    if (!rc) rc = recover(p, pc, NULL, err);
    if (pc) conn_put(p, pc);
    if (rc) {
        store_pg_close(p);
        return rc;
    }
    *out = p;
    return 0;
}

void store_pg_close(store_pg *p) {
    if (!p) return;
    for (int i = 0; i < POOL; i++) PQfinish(p->pool[i].c);
    PQfinish(p->lease);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->lease_mu);
    free(p);
}

int store_pg_check(store *s, core_err *err) {
    store_pg *p = store_i_pg(s);
    pconn *pc;
    int rc = conn_get(p, &pc, 0, err);
    if (rc) return rc;
    PGresult *r = q(p, pc,
                    "SELECT (SELECT count(*) FROM conversations c WHERE c.current_leaf IS NOT NULL AND NOT EXISTS"
                    " (SELECT 1 FROM messages m WHERE m.id = c.current_leaf AND m.conv = c.id)),"
                    " (SELECT count(*) FROM messages m JOIN messages pm ON pm.id = m.parent WHERE pm.conv <> m.conv)",
                    0, NULL, 1, "check", &rc, err);
    if (r && (v64(r, 0, 0) || v64(r, 0, 1)))
        rc = core_errf(err, CORE_EFORMAT, "store: check: %lld leaves or %lld parents point into another conversation",
                       (long long)v64(r, 0, 0), (long long)v64(r, 0, 1));
    PQclear(r);
    conn_put(p, pc);
    return rc;
}

/* ---- conversations -------------------------------------------------------- */

static int read_conv(PGresult *r, int i, store_conv *c, core_err *err) {
    memset(c, 0, sizeof *c);
    vcopy(r, i, 0, c->id, sizeof c->id);
    c->title = vdup(r, i, 1);
    c->created = v64(r, i, 2);
    c->updated = v64(r, i, 3);
    c->pinned_date = vdup(r, i, 4);
    c->thinking = (int)v64(r, i, 5);
    c->temperature = vdbl(r, i, 6);
    c->top_p = vdbl(r, i, 7);
    c->top_k = (int)v64(r, i, 8);
    c->min_p = vdbl(r, i, 9);
    c->max_tokens = (int)v64(r, i, 10);
    c->system_prompt = vdup(r, i, 11);
    c->current_leaf = v64(r, i, 12);
    c->n_messages = v64(r, i, 13);
    if (!c->title || !c->pinned_date || !c->system_prompt) {
        store_conv_clear(c);
        return core_errf(err, CORE_ENOMEM, "store: out of memory");
    }
    return 0;
}

static int conv_insert(store_pg *p, pconn *pc, const store_conv *c, int64_t created, int64_t updated,
                       char id[STORE_ID_LEN + 1], int retry, core_err *err) {
    char date[64];
    const char *pinned = c->pinned_date;
    if (!pinned) {
        store_i_today(date, sizeof date);
        pinned = date;
    }
    for (int tries = 0;; tries++) {
        int rc = store_i_random_id(id, err);
        if (rc) return rc;
        nbuf nb;
        const char *v[] = {id, c->title ? c->title : "", fi(&nb, 0, created), fi(&nb, 1, updated), pinned,
                           fi(&nb, 2, c->thinking), fd(&nb, 3, c->temperature), fd(&nb, 4, c->top_p),
                           fi(&nb, 5, c->top_k), fd(&nb, 6, c->min_p), fi(&nb, 7, c->max_tokens),
                           c->system_prompt ? c->system_prompt : ""};
        PGresult *r = q(p, pc,
                        "INSERT INTO conversations(id, title, created, updated, pinned_date, thinking, temperature,"
                        " top_p, top_k, min_p, max_tokens, system_prompt) VALUES ($1, $2, $3::bigint, $4::bigint, $5,"
                        " $6::int, $7::float8, $8::float8, $9::int, $10::float8, $11::int, $12)"
                        " ON CONFLICT (id) DO NOTHING",
                        12, v, retry, "create conversation", &rc, err);
        if (!r) return rc;
        int n = atoi(PQcmdTuples(r));
        PQclear(r);
        if (n == 1) return 0;
        /* a 64-bit id collision: astronomically rare, but cheap to handle */
        if (tries >= 3) return core_errf(err, CORE_EIO, "store: create conversation: no free id");
    }
}

int store_pg_create(store *s, const store_conv *init, char id_out[STORE_ID_LEN + 1], core_err *err) {
    store_pg *p = store_i_pg(s);
    store_conv def;
    if (!init) {
        store_conv_defaults(&def);
        init = &def;
    }
    id_out[0] = 0;
    int rc = store_i_check_settings(s, init, err);
    if (rc) return rc;
    pconn *pc;
    if ((rc = conn_get(p, &pc, 0, err))) return rc;
    int64_t t = store_i_now_ms();
    /* one statement: its own transaction */
    rc = conv_insert(p, pc, init, t, t, id_out, 1, err);
    conn_put(p, pc);
    if (rc) id_out[0] = 0;
    return rc;
}

int store_pg_get(store *s, const char *id, store_conv *out, core_err *err) {
    store_pg *p = store_i_pg(s);
    memset(out, 0, sizeof *out);
    int rc = store_i_check_id(id, err);
    if (rc) return rc;
    pconn *pc;
    if ((rc = conn_get(p, &pc, 0, err))) return rc;
    const char *v[] = {id};
    PGresult *r = q(p, pc, "SELECT " CONV_COLS " FROM conversations c WHERE c.id = $1", 1, v, 1, "get conversation", &rc, err);
    if (r && PQntuples(r) == 0) rc = core_errf(err, CORE_ENOTFOUND, "store: no conversation '%s'", id);
    else if (r) rc = read_conv(r, 0, out, err);
    PQclear(r);
    conn_put(p, pc);
    return rc;
}

int store_pg_list(store *s, int limit, int offset, store_conv **out, int *n, core_err *err) {
    store_pg *p = store_i_pg(s);
    *out = NULL;
    *n = 0;
    if (limit <= 0) limit = 50;
    if (offset < 0) offset = 0;
    pconn *pc;
    int rc = conn_get(p, &pc, 0, err);
    if (rc) return rc;
    nbuf nb;
    const char *v[] = {fi(&nb, 0, limit), fi(&nb, 1, offset)};
    PGresult *r = q(p, pc, "SELECT " CONV_COLS " FROM conversations c ORDER BY c.updated DESC, c.seq DESC"
                           " LIMIT $1::bigint OFFSET $2::bigint", 2, v, 1, "list conversations", &rc, err);
    int cnt = r ? PQntuples(r) : 0;
    store_conv *list = cnt ? calloc((size_t)cnt, sizeof *list) : NULL;
    if (cnt && !list) rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
    int got = 0;
    for (; !rc && got < cnt; got++)
        if ((rc = read_conv(r, got, &list[got], err))) break;
    PQclear(r);
    conn_put(p, pc);
    if (rc) {
        store_conv_free_list(list, got);
        return rc;
    }
    *out = list;
    *n = cnt;
    return 0;
}

/* One UPDATE of a conversation; no row -> CORE_ENOTFOUND. */
static int conv_write(store_pg *p, const char *id, const char *sql, int n, const char *const *v, const char *what,
                      core_err *err) {
    pconn *pc;
    int rc = conn_get(p, &pc, 0, err);
    if (rc) return rc;
    PGresult *r = q(p, pc, sql, n, v, 1, what, &rc, err);
    if (r && atoi(PQcmdTuples(r)) == 0) rc = core_errf(err, CORE_ENOTFOUND, "store: no conversation '%s'", id);
    PQclear(r);
    conn_put(p, pc);
    return rc;
}

int store_pg_rename(store *s, const char *id, const char *title, core_err *err) {
    int rc = store_i_check_id(id, err);
    if (!rc) rc = store_i_check_text(s, "title", title, STORE_MAX_TITLE, err);
    if (rc) return rc;
    nbuf nb;
    const char *v[] = {id, title ? title : "", fi(&nb, 0, store_i_now_ms())};
    return conv_write(store_i_pg(s), id, "UPDATE conversations SET title = $2, updated = $3::bigint WHERE id = $1", 3, v,
                      "rename conversation", err);
}

int store_pg_set_settings(store *s, const char *id, const store_conv *c, core_err *err) {
    int rc = store_i_check_id(id, err);
    if (rc) return rc;
    store_conv tmp = *c;
    tmp.title = NULL;
    if ((rc = store_i_check_settings(s, &tmp, err))) return rc;
    nbuf nb;
    const char *v[] = {id, fi(&nb, 0, c->thinking), fd(&nb, 1, c->temperature), fd(&nb, 2, c->top_p),
                       fi(&nb, 3, c->top_k), fd(&nb, 4, c->min_p), fi(&nb, 5, c->max_tokens), c->system_prompt,
                       c->pinned_date, fi(&nb, 6, store_i_now_ms())};
    return conv_write(store_i_pg(s), id,
                      "UPDATE conversations SET thinking = $2::int, temperature = $3::float8, top_p = $4::float8,"
                      " top_k = $5::int, min_p = $6::float8, max_tokens = $7::int,"
                      " system_prompt = coalesce($8, system_prompt), pinned_date = coalesce($9, pinned_date),"
                      " updated = $10::bigint WHERE id = $1",
                      10, v, "update settings", err);
}

int store_pg_delete(store *s, const char *id, core_err *err) {
    int rc = store_i_check_id(id, err);
    if (rc) return rc;
    const char *v[] = {id};
    return conv_write(store_i_pg(s), id, "DELETE FROM conversations WHERE id = $1", 1, v, "delete conversation", err);
}

/* ---- messages ------------------------------------------------------------- */

static int read_msg(PGresult *r, int i, store_msg *m, int with_siblings, core_err *err) {
    memset(m, 0, sizeof *m);
    m->id = v64(r, i, 0);
    m->parent = v64(r, i, 1);
    vcopy(r, i, 2, m->conv, sizeof m->conv);
    vcopy(r, i, 3, m->role, sizeof m->role);
    m->content = vdup(r, i, 4);
    m->reasoning = vdup(r, i, 5);
    m->created = v64(r, i, 6);
    m->status = (int)v64(r, i, 7);
    vcopy(r, i, 8, m->finish, sizeof m->finish);
    m->prompt_tokens = (int)v64(r, i, 9);
    m->completion_tokens = (int)v64(r, i, 10);
    m->prefill_ms = vdbl(r, i, 11);
    m->gen_ms = vdbl(r, i, 12);
    vcopy(r, i, 13, m->model, sizeof m->model);
    if (with_siblings) {
        m->sibling_index = (int)v64(r, i, 14);
        m->sibling_count = (int)v64(r, i, 15);
    }
    if (!m->content || !m->reasoning) {
        store_msg_clear(m);
        return core_errf(err, CORE_ENOMEM, "store: out of memory");
    }
    return 0;
}

static int read_msgs(PGresult *r, int with_siblings, store_msg **out, int *n, core_err *err) {
    int cnt = PQntuples(r), rc = 0, got = 0;
    store_msg *v = cnt ? calloc((size_t)cnt, sizeof *v) : NULL;
    if (cnt && !v) return core_errf(err, CORE_ENOMEM, "store: out of memory");
    for (; got < cnt; got++)
        if ((rc = read_msg(r, got, &v[got], with_siblings, err))) break;
    if (rc) {
        store_msgs_free(v, got);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

static int msg_get(store_pg *p, pconn *pc, int64_t id, store_msg *m, core_err *err) {
    nbuf nb;
    const char *v[] = {fi(&nb, 0, id)};
    int rc = 0;
    PGresult *r = q(p, pc, "SELECT " MSG_COLS " FROM messages m WHERE m.id = $1::bigint", 1, v, 1, "get message", &rc, err);
    if (r && PQntuples(r) == 0) rc = core_errf(err, CORE_ENOTFOUND, "store: no message %lld", (long long)id);
    else if (r) rc = read_msg(r, 0, m, 0, err);
    PQclear(r);
    return rc;
}

/* Insert m under parent (transaction open); *id_out its id. */
static int msg_insert(store_pg *p, pconn *pc, const char *conv, const store_msg *m, int64_t parent, int64_t created,
                      const char *owner, int64_t *id_out, core_err *err) {
    char *words = NULL;
    if (m->status != STORE_MSG_STREAMING && !(words = words_of(m->content ? m->content : "")))
        return core_errf(err, CORE_ENOMEM, "store: out of memory");
    nbuf nb;
    const char *v[] = {conv, fi(&nb, 0, parent), m->role, m->content ? m->content : "",
                       m->reasoning ? m->reasoning : "", fi(&nb, 1, created), fi(&nb, 2, m->status), m->finish,
                       fi(&nb, 3, m->prompt_tokens), fi(&nb, 4, m->completion_tokens), fd(&nb, 5, m->prefill_ms),
                       fd(&nb, 6, m->gen_ms), m->model, owner, words};
    int rc = 0;
    PGresult *r = q(p, pc,
                    "INSERT INTO messages(conv, parent, role, content, reasoning, created, status, finish,"
                    " prompt_tokens, completion_tokens, prefill_ms, gen_ms, model, owner, words)"
                    " VALUES ($1, nullif($2::bigint, 0), $3, $4, $5, $6::bigint, $7::int, $8, $9::int, $10::int,"
                    " $11::float8, $12::float8, $13, $14, $15::tsvector) RETURNING id",
                    15, v, 0, "append message", &rc, err);
    free(words);
    if (r) *id_out = v64(r, 0, 0);
    PQclear(r);
    return rc;
}

int store_pg_append(store *s, const char *conv, const store_msg *m, int64_t *id_out, core_err *err) {
    store_pg *p = store_i_pg(s);
    if (id_out) *id_out = 0;
    int rc = store_i_check_id(conv, err);
    if (!rc) rc = store_i_check_msg(s, m, 1, err);
    if (rc) return rc;
    if (m->status == STORE_MSG_STREAMING) { /* we own this stream: hold our lock */
        pthread_mutex_lock(&p->lease_mu);
        rc = lease_ensure(p, err);
        pthread_mutex_unlock(&p->lease_mu);
        if (rc) return rc;
    }
    pconn *pc;
    if ((rc = conn_get(p, &pc, 0, err))) return rc;
    if (strcmp(m->role, "user") == 0) rc = recover(p, pc, conv, err);
    if (!rc) rc = tx_begin(p, pc, err);
    if (rc) {
        conn_put(p, pc);
        return rc;
    }
    const char *cv[] = {conv};
    PGresult *r = q(p, pc, "SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", 1, cv, 0, "append message", &rc, err);
    if (r && PQntuples(r) == 0) rc = core_errf(err, CORE_ENOTFOUND, "store: no conversation '%s'", conv);
    PQclear(r);
    if (!rc && m->parent) {
        store_msg par = {0};
        rc = msg_get(p, pc, m->parent, &par, err);
        if (!rc && strcmp(par.conv, conv) != 0)
            rc = core_errf(err, CORE_EINVAL, "store: message %lld is not in conversation '%s'", (long long)m->parent, conv);
        store_msg_clear(&par);
    }
    int64_t id = 0, t = store_i_now_ms();
    if (!rc) rc = msg_insert(p, pc, conv, m, m->parent, t, m->status == STORE_MSG_STREAMING ? p->replica : "", &id, err);
    if (!rc) {
        char title[96] = "";
        if (strcmp(m->role, "user") == 0 && m->content) store_i_title_from(m->content, title, sizeof title);
        nbuf nb;
        const char *v[] = {conv, fi(&nb, 0, id), fi(&nb, 1, t), title};
        rc = qx(p, pc, "UPDATE conversations SET current_leaf = $2::bigint, updated = $3::bigint,"
                       " title = CASE WHEN title = '' THEN $4 ELSE title END WHERE id = $1",
                4, v, 0, "set current leaf", err);
    }
    rc = tx_end(p, pc, rc, err);
    conn_put(p, pc);
    if (!rc && id_out) *id_out = id;
    return rc;
}

int store_pg_update(store *s, int64_t id, const store_msg *m, core_err *err) {
    store_pg *p = store_i_pg(s);
    int rc = store_i_check_msg(s, m, 0, err);
    if (rc) return rc;
    char *words = NULL;
    if (m->status != STORE_MSG_STREAMING && !(words = words_of(m->content ? m->content : "")))
        return core_errf(err, CORE_ENOMEM, "store: out of memory");
    pconn *pc;
    if ((rc = conn_get(p, &pc, 0, err))) {
        free(words);
        return rc;
    }
    nbuf nb;
    const char *v[] = {fi(&nb, 0, id), m->content ? m->content : "", m->reasoning ? m->reasoning : "",
                       fi(&nb, 1, m->status), m->finish, fi(&nb, 2, m->prompt_tokens),
                       fi(&nb, 3, m->completion_tokens), fd(&nb, 4, m->prefill_ms), fd(&nb, 5, m->gen_ms), words,
                       fi(&nb, 6, store_i_now_ms())};
    /* one statement, one transaction: the message and its conversation's time */
    PGresult *r = q(p, pc,
                    "WITH u AS (UPDATE messages SET content = $2, reasoning = $3, status = $4::int, finish = $5,"
                    " prompt_tokens = $6::int, completion_tokens = $7::int, prefill_ms = $8::float8,"
                    " gen_ms = $9::float8, words = $10::tsvector WHERE id = $1::bigint RETURNING conv)"
                    " UPDATE conversations c SET updated = $11::bigint FROM u WHERE c.id = u.conv RETURNING c.id",
                    11, v, 1, "update message", &rc, err);
    free(words);
    if (r && PQntuples(r) == 0) rc = core_errf(err, CORE_ENOTFOUND, "store: no message %lld", (long long)id);
    PQclear(r);
    conn_put(p, pc);
    return rc;
}

int store_pg_get_msg(store *s, int64_t id, store_msg *out, core_err *err) {
    store_pg *p = store_i_pg(s);
    memset(out, 0, sizeof *out);
    pconn *pc;
    int rc = conn_get(p, &pc, 0, err);
    if (rc) return rc;
    rc = msg_get(p, pc, id, out, err);
    if (!rc && out->status == STORE_MSG_STREAMING) { /* its writer may be gone */
        char conv[STORE_ID_LEN + 1];
        memcpy(conv, out->conv, sizeof conv);
        store_msg_clear(out);
        rc = recover(p, pc, conv, err);
        if (!rc) rc = msg_get(p, pc, id, out, err);
    }
    conn_put(p, pc);
    return rc;
}

int store_pg_branch(store *s, const char *conv, int64_t leaf, store_msg **out, int *n, core_err *err) {
    store_pg *p = store_i_pg(s);
    *out = NULL;
    *n = 0;
    int rc = store_i_check_id(conv, err);
    if (rc) return rc;
    pconn *pc;
    if ((rc = conn_get(p, &pc, 0, err))) return rc;
    rc = recover(p, pc, conv, err);
    const char *cv[] = {conv};
    PGresult *r = rc ? NULL : q(p, pc, "SELECT coalesce(current_leaf, 0) FROM conversations WHERE id = $1", 1, cv, 1,
                                "get branch", &rc, err);
    if (r && PQntuples(r) == 0) rc = core_errf(err, CORE_ENOTFOUND, "store: no conversation '%s'", conv);
    else if (r && !leaf) leaf = v64(r, 0, 0);
    PQclear(r);
    if (!rc && leaf) {
        nbuf nb;
        const char *v[] = {fi(&nb, 0, leaf), conv};
        r = q(p, pc,
              "WITH RECURSIVE p(id, depth) AS ("
              "  SELECT id, 0 FROM messages WHERE id = $1::bigint AND conv = $2"
              "  UNION ALL SELECT m.parent, p.depth + 1 FROM messages m JOIN p ON m.id = p.id"
              "  WHERE m.parent IS NOT NULL AND p.depth < 1000000)"
              " SELECT " MSG_COLS ","
              " (SELECT count(*) FROM messages s WHERE s.conv = m.conv AND s.parent IS NOT DISTINCT FROM m.parent AND s.id < m.id),"
              " (SELECT count(*) FROM messages s WHERE s.conv = m.conv AND s.parent IS NOT DISTINCT FROM m.parent)"
              " FROM p JOIN messages m ON m.id = p.id ORDER BY p.depth DESC",
              2, v, 1, "get branch", &rc, err);
        if (r) rc = read_msgs(r, 1, out, n, err);
        PQclear(r);
        if (!rc && *n == 0)
            rc = core_errf(err, CORE_ENOTFOUND, "store: no message %lld in conversation '%s'", (long long)leaf, conv);
    }
    conn_put(p, pc);
    return rc;
}

int store_pg_messages(store *s, const char *conv, store_msg **out, int *n, core_err *err) {
    store_pg *p = store_i_pg(s);
    *out = NULL;
    *n = 0;
    int rc = store_i_check_id(conv, err);
    if (rc) return rc;
    pconn *pc;
    if ((rc = conn_get(p, &pc, 0, err))) return rc;
    rc = recover(p, pc, conv, err);
    const char *v[] = {conv};
    PGresult *r = rc ? NULL : q(p, pc, "SELECT " MSG_COLS " FROM messages m WHERE m.conv = $1 ORDER BY m.id", 1, v, 1,
                                "list messages", &rc, err);
    if (r) rc = read_msgs(r, 0, out, n, err);
    PQclear(r);
    conn_put(p, pc);
    return rc;
}

int store_pg_set_leaf(store *s, const char *conv, int64_t msg, int64_t *leaf_out, core_err *err) {
    store_pg *p = store_i_pg(s);
    if (leaf_out) *leaf_out = 0;
    int rc = store_i_check_id(conv, err);
    if (rc) return rc;
    pconn *pc;
    if ((rc = conn_get(p, &pc, 0, err))) return rc;
    if ((rc = tx_begin(p, pc, err))) {
        conn_put(p, pc);
        return rc;
    }
    store_msg m = {0};
    rc = msg_get(p, pc, msg, &m, err);
    if (!rc && strcmp(m.conv, conv) != 0)
        rc = core_errf(err, CORE_ENOTFOUND, "store: no message %lld in conversation '%s'", (long long)msg, conv);
    if (rc == CORE_ENOTFOUND)
        core_errf(err, CORE_ENOTFOUND, "store: no message %lld in conversation '%s'", (long long)msg, conv);
    store_msg_clear(&m);
    int64_t leaf = msg;
    while (!rc) { /* terminates: children have larger ids */
        nbuf nb;
        const char *v[] = {fi(&nb, 0, leaf)};
        PGresult *r = q(p, pc, "SELECT coalesce(max(id), 0) FROM messages WHERE parent = $1::bigint", 1, v, 0,
                        "find leaf", &rc, err);
        int64_t child = r ? v64(r, 0, 0) : 0;
        PQclear(r);
        if (child <= leaf) break;
        leaf = child;
    }
    if (!rc) {
        nbuf nb;
        const char *v[] = {conv, fi(&nb, 0, leaf), fi(&nb, 1, store_i_now_ms())};
        rc = qx(p, pc, "UPDATE conversations SET current_leaf = $2::bigint, updated = $3::bigint WHERE id = $1", 3, v,
                0, "set current leaf", err);
    }
    rc = tx_end(p, pc, rc, err);
    conn_put(p, pc);
    if (!rc && leaf_out) *leaf_out = leaf;
    return rc;
}

/* ---- search --------------------------------------------------------------- */

void store_pg_stop_searches(store *s) {
    store_pg *p = store_i_pg(s);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < POOL; i++)
        if (p->pool[i].searching && p->pool[i].cancel) {
            char buf[256];
            PQcancel(p->pool[i].cancel, buf, sizeof buf);
        }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static int set_timeout(store_pg *p, pconn *pc, int64_t ms, core_err *err) {
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %lld", (long long)(ms > 1 ? ms : 1));
    return qx(p, pc, sql, 0, NULL, 1, "search", err);
}

int store_pg_search(store *s, const char *query, int limit, int offset, store_hit **out, int *n, core_err *err) {
    store_pg *p = store_i_pg(s);
    *out = NULL;
    *n = 0;
    if (limit <= 0) limit = 20;
    if (offset < 0) offset = 0;
    int rc = store_i_check_text(s, "search query", query, STORE_MAX_QUERY, err);
    if (rc) return rc;
    store_terms t;
    store_i_split_terms(query ? query : "", &t);
    if (t.count == 0) return 0;
    /* the tsquery: each word quoted as a lexeme (a word holds no quote or
     * backslash, store_i_word_char excludes them), all required */
    /* tq: every word must match (the filter); tr: any (the rank: ts_rank
     * of an AND weighs every pair of terms' positions, quadratic in both,
     * while of an OR it adds up each term's frequency, linear) */
    core_buf tq = {0}, tr = {0};
    char w[STORE_MAX_QUERY + 8];
    int bad = 0;
    int used = 0;
    for (int i = 0; i < t.count && !bad; i++) {
        size_t at = 0, ps, pl;
        int pieces = 0;
        while (!bad && (pl = piece_next(t.w[i], t.n[i], &at, &ps))) {
            size_t wn = norm_word(t.w[i] + ps, pl, w);
            for (int k = 0; k < 2 && !bad; k++) {
                core_buf *b = k ? &tr : &tq;
                bad = (pieces ? core_buf_puts(b, " <-> ") : used ? core_buf_puts(b, k ? " | (" : " & (") : core_buf_puts(b, "(")) ||
                      core_buf_puts(b, "'") || core_buf_append(b, w, wn) || core_buf_puts(b, "'");
            }
            pieces++;
        }
        if (pieces && !bad) bad = core_buf_puts(&tq, ")") || core_buf_puts(&tr, ")");
        used += pieces > 0;
    }
    if (!used || bad || store_i_searches_stopped(s)) {
        core_buf_free(&tq);
        core_buf_free(&tr);
        if (bad) return core_errf(err, CORE_ENOMEM, "store: out of memory");
        if (used) return core_errf(err, CORE_ECANCEL, "store: search cancelled: the server is shutting down");
        return 0; /* only separators: nothing to look for */
    }
    int budget = store_i_search_ms(s);
    uint64_t t0 = core_now_ns(), end = t0 + (uint64_t)budget * 1000000u;
    pconn *pc;
    if ((rc = conn_get(p, &pc, end, err))) {
        core_buf_free(&tq);
        core_buf_free(&tr);
        if (rc == CORE_ECANCEL)
            core_errf(err, CORE_ECANCEL, "store: search stopped after %d ms, its time limit (no free connection)", budget);
        return rc;
    }
    PGcancel *cancel = PQgetCancel(pc->c);
    pthread_mutex_lock(&p->mu);
    pc->cancel = cancel;
    pc->searching = 1;
    pthread_mutex_unlock(&p->mu);
    nbuf nb;
    const char *v[] = {tq.data, fi(&nb, 0, limit), fi(&nb, 1, offset), tr.data};
    PGresult *r = NULL;
    /* Ranking scores every match: it gets half the time; past that, the
     * newest matches are shown instead of the best (as on SQLite). */
    for (int pass = 0; pass < 2 && !rc && !r; pass++) {
        int64_t left = ((int64_t)end - (int64_t)core_now_ns()) / 1000000;
        if (left < 1) left = 1;
        rc = set_timeout(p, pc, pass ? left : (left + 1) / 2, err);
        if (rc) break;
        r = q(p, pc,
              pass ? "SELECT m.conv, c.title, m.id, m.role, m.created, m.content FROM messages m"
                     " JOIN conversations c ON c.id = m.conv WHERE m.words @@ $1::tsquery"
                     " ORDER BY m.id DESC LIMIT $2::bigint OFFSET $3::bigint"
                   : "SELECT m.conv, c.title, m.id, m.role, m.created, m.content FROM messages m"
                     " JOIN conversations c ON c.id = m.conv WHERE m.words @@ $1::tsquery"
                     " ORDER BY ts_rank(m.words, $4::tsquery) DESC, m.id DESC LIMIT $2::bigint OFFSET $3::bigint",
              pass ? 3 : 4, v, 0, "search", &rc, err);
        if (!r && rc == CORE_ECANCEL && !pass && !store_i_searches_stopped(s) && core_now_ns() < end) rc = 0;
    }
    if (rc == CORE_ECANCEL)
        core_errf(err, CORE_ECANCEL,
                  store_i_searches_stopped(s) ? "store: search cancelled: the server is shutting down"
                                              : "store: search stopped after %d ms, its time limit: use fewer or rarer words",
                  budget);
    pthread_mutex_lock(&p->mu);
    pc->searching = 0;
    pc->cancel = NULL;
    pthread_mutex_unlock(&p->mu);
    PQfreeCancel(cancel);
    if (PQstatus(pc->c) == CONNECTION_OK) PQclear(PQexec(pc->c, "SET statement_timeout = 30000"));
    int cnt = r ? PQntuples(r) : 0;
    store_hit *h = cnt ? calloc((size_t)cnt, sizeof *h) : NULL;
    if (cnt && !h) rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
    for (int i = 0; i < cnt && !rc; i++) {
        vcopy(r, i, 0, h[i].conv, sizeof h[i].conv);
        h[i].title = vdup(r, i, 1);
        h[i].msg = v64(r, i, 2);
        vcopy(r, i, 3, h[i].role, sizeof h[i].role);
        h[i].created = v64(r, i, 4);
        h[i].snippet = store_i_make_snippet(PQgetvalue(r, i, 5), (size_t)PQgetlength(r, i, 5), &t);
        if (!h[i].title || !h[i].snippet) rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
    }
    PQclear(r);
    conn_put(p, pc);
    core_buf_free(&tq);
    core_buf_free(&tr);
    if (rc) {
        store_hits_free(h, cnt);
        return rc;
    }
    *out = h;
    *n = cnt;
    return 0;
}

/* ---- import --------------------------------------------------------------- */

int store_pg_import(store *s, json_t *root, json_t *jc, json_t *jm, char id_out[STORE_ID_LEN + 1], core_err *err) {
    (void)root;
    store_pg *p = store_i_pg(s);
    int nm = (int)json_array_size(jm);
    if (json_array_size(jm) > 10000000) return core_errf(err, CORE_ERANGE, "store: import: too many messages");
    int64_t *old = malloc(((size_t)nm + 1) * sizeof *old), *nw = malloc(((size_t)nm + 1) * sizeof *nw);
    int rc = 0;
    if (!old || !nw) rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
    store_conv c;
    int64_t created, updated, leaf_old = 0;
    if (!rc) rc = store_i_import_conv(jc, &c, &created, &updated, err);
    json_t *jl = json_object_get(jc, "current_leaf");
    if (!rc && jl && !json_is_null(jl)) {
        if (!json_is_integer(jl) || json_integer_value(jl) < 1)
            rc = core_errf(err, CORE_EFORMAT, "store: import: 'current_leaf' must be an integer");
        else
            leaf_old = json_integer_value(jl);
    }
    if (!rc) rc = store_i_check_settings(s, &c, err);
    pconn *pc = NULL;
    if (!rc) rc = conn_get(p, &pc, 0, err);
    if (!rc) {
        rc = tx_begin(p, pc, err);
        if (!rc) rc = conv_insert(p, pc, &c, created, updated, id_out, 0, err);
        for (int i = 0; i < nm && !rc; i++) {
            store_msg m;
            int64_t parent_old, mcreated, parent = 0;
            rc = store_i_import_msg(s, json_array_get(jm, (size_t)i), i, &m, &old[i], &parent_old, &mcreated, err);
            if (!rc && i > 0 && old[i] <= old[i - 1])
                rc = core_errf(err, CORE_EFORMAT, "store: import: message ids must increase (message %d)", i);
            if (!rc && parent_old && !(parent = store_i_map_id(old, nw, i, parent_old)))
                rc = core_errf(err, CORE_EFORMAT, "store: import: message %d has parent %lld, not an earlier message",
                               i, (long long)parent_old);
            if (!rc) rc = msg_insert(p, pc, id_out, &m, parent, mcreated, "", &nw[i], err);
        }
        if (!rc && leaf_old) {
            int64_t leaf = store_i_map_id(old, nw, nm, leaf_old);
            if (!leaf)
                rc = core_errf(err, CORE_EFORMAT, "store: import: current_leaf %lld is not a message", (long long)leaf_old);
            nbuf nb;
            const char *v[] = {id_out, fi(&nb, 0, leaf), fi(&nb, 1, updated)};
            if (!rc)
                rc = qx(p, pc, "UPDATE conversations SET current_leaf = $2::bigint, updated = $3::bigint WHERE id = $1",
                        3, v, 0, "set current leaf", err);
        }
        rc = tx_end(p, pc, rc, err);
        conn_put(p, pc);
    }
    free(old);
    free(nw);
    return rc;
}
