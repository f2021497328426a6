/* store.c -- the SQLite conversation store (see store.h for the contract),
 * and the front door of the PostgreSQL one: store_open with a postgres://
 * URL makes s->pg, and every public function then hands the call to its
 * store_pg_* twin (store_pg.c, store_int.h).  The checks, ids, titles,
 * search words and snippets, and the JSON export/import here serve both.
 *
 * Design
 *   One sqlite3 connection per store object, serialized by our own mutex
 *   (the connection is opened NOMUTEX: SQLite's own locking would only
 *   duplicate ours).  Every statement is prepared once at open with
 *   SQLITE_PREPARE_PERSISTENT and kept in s->st[]; a call binds, steps and
 *   resets it while holding the mutex.
 *
 *   Every write runs inside BEGIN IMMEDIATE .. COMMIT: the write lock is
 *   taken up front, so a transaction never has to upgrade a read lock (the
 *   upgrade is what yields SQLITE_BUSY that no busy handler can fix).  The
 *   busy timeout (10 s) covers other connections and processes on the same
 *   file; BEGIN is retried a few times on top of it.
 *
 *   Searches do not use that connection: they take a read-only one from a
 *   small pool (WAL lets readers and the writer run side by side), under a
 *   deadline enforced by SQLite's progress handler; see "search" below.
 *
 *   Schema versions live in PRAGMA user_version; migrations[] holds the SQL
 *   that takes version i to i+1, applied in one transaction at open.
 *
 * Schema (version 2)
 *   conversations(id TEXT PK, title, created, updated, pinned_date, thinking,
 *                 temperature, top_p, top_k, min_p, max_tokens, system_prompt,
 *                 current_leaf -> messages.id ON DELETE SET NULL)
 *   messages(id INTEGER PK AUTOINCREMENT, conv -> conversations ON DELETE
 *            CASCADE, parent -> messages ON DELETE CASCADE, role, content,
 *            reasoning, created, status, finish, prompt_tokens,
 *            completion_tokens, prefill_ms, gen_ms, model)
 *   AUTOINCREMENT so an id is never reused after a delete: a child's id is
 *   always larger than its parent's, which export/import and the cycle-free
 *   branch walk rely on.
 *   messages_fts: FTS5 over the view messages_indexed (rows not streaming),
 *   external content, kept in sync by triggers.  Indexing only finished or
 *   partial rows keeps streaming updates cheap (no index churn per token
 *   batch) and keeps the FTS integrity check exact, since the index always
 *   matches its content view.
 *
 * Invariants
 *   - nothing reaches the database before it passed validation (UTF-8, size,
 *     role, status, finish reason, finite numbers);
 *   - a message's parent belongs to the same conversation;
 *   - conversations.current_leaf is NULL or a message of that conversation.
 */
#include "store/store.h"
#include "store/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

/* ---- schema ------------------------------------------------------------ */

static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE conversations("
    "  id TEXT PRIMARY KEY,"
    "  title TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL,"
    "  updated INTEGER NOT NULL,"
    "  pinned_date TEXT NOT NULL DEFAULT '',"
    "  thinking INTEGER NOT NULL DEFAULT 1,"
    "  temperature REAL NOT NULL,"
    "  top_p REAL NOT NULL,"
    "  top_k INTEGER NOT NULL,"
    "  min_p REAL NOT NULL,"
    "  max_tokens INTEGER NOT NULL,"
    "  system_prompt TEXT NOT NULL DEFAULT '',"
    "  current_leaf INTEGER REFERENCES messages(id) ON DELETE SET NULL);"
    "CREATE INDEX conversations_updated ON conversations(updated DESC);"
    "CREATE TABLE messages("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  conv TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
    "  parent INTEGER REFERENCES messages(id) ON DELETE CASCADE,"
    "  role TEXT NOT NULL,"
    "  content TEXT NOT NULL,"
    "  reasoning TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL,"
    "  status INTEGER NOT NULL DEFAULT 0,"
    "  finish TEXT NOT NULL DEFAULT '',"
    "  prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    "  completion_tokens INTEGER NOT NULL DEFAULT 0,"
    "  prefill_ms REAL NOT NULL DEFAULT 0,"
    "  gen_ms REAL NOT NULL DEFAULT 0);"
    "CREATE INDEX messages_conv_parent ON messages(conv, parent);"
    "CREATE INDEX messages_parent ON messages(parent);" /* FK cascades */
    "CREATE INDEX messages_streaming ON messages(status) WHERE status = 1;"
    "CREATE VIEW messages_indexed AS SELECT id, content FROM messages WHERE status != 1;"
    "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages_indexed',"
    "  content_rowid='id', tokenize='unicode61 remove_diacritics 2');"
    "CREATE TRIGGER messages_fts_ins AFTER INSERT ON messages WHEN new.status != 1 BEGIN"
    "  INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);"
    "END;"
    "CREATE TRIGGER messages_fts_del AFTER DELETE ON messages WHEN old.status != 1 BEGIN"
    "  INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);"
    "END;"
    /* one trigger, two ordered statements: remove the old text, then add the new */
    "CREATE TRIGGER messages_fts_upd AFTER UPDATE OF content, status ON messages BEGIN"
    "  INSERT INTO messages_fts(messages_fts, rowid, content)"
    "    SELECT 'delete', old.id, old.content WHERE old.status != 1;"
    "  INSERT INTO messages_fts(rowid, content) SELECT new.id, new.content WHERE new.status != 1;"
    "END;",
    /* 1 -> 2: which model wrote each answer (several models per server) */
    "ALTER TABLE messages ADD COLUMN model TEXT NOT NULL DEFAULT '';",
};
#define SCHEMA_VERSION ((int)CORE_ARRAY_LEN(migrations))

/* ---- prepared statements ----------------------------------------------- */

#define CONV_COLS                                                                             \
    "c.id, c.title, c.created, c.updated, c.pinned_date, c.thinking, c.temperature, c.top_p," \
    " c.top_k, c.min_p, c.max_tokens, c.system_prompt, coalesce(c.current_leaf, 0),"          \
    " (SELECT count(*) FROM messages x WHERE x.conv = c.id)"
#define MSG_COLS                                                                            \
    "m.id, coalesce(m.parent, 0), m.conv, m.role, m.content, m.reasoning, m.created, m.status," \
    " m.finish, m.prompt_tokens, m.completion_tokens, m.prefill_ms, m.gen_ms, m.model"

enum {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK,
    ST_CONV_INSERT, ST_CONV_GET, ST_CONV_LIST, ST_CONV_RENAME, ST_CONV_TITLE_IF_EMPTY,
    ST_CONV_SETTINGS, ST_CONV_DELETE, ST_CONV_LEAF, ST_CONV_TOUCH, ST_CONV_EXISTS,
    ST_MSG_INSERT, ST_MSG_UPDATE, ST_MSG_GET, ST_MSG_ALL, ST_MSG_NEWEST_CHILD, ST_BRANCH,
    ST_RECOVER,
    ST_COUNT
};

static const char *const st_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_CONV_INSERT] =
        "INSERT INTO conversations(id, title, created, updated, pinned_date, thinking,"
        " temperature, top_p, top_k, min_p, max_tokens, system_prompt)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [ST_CONV_GET] = "SELECT " CONV_COLS " FROM conversations c WHERE c.id = ?1",
    [ST_CONV_LIST] = "SELECT " CONV_COLS " FROM conversations c"
                     " ORDER BY c.updated DESC, c.rowid DESC LIMIT ?1 OFFSET ?2",
    [ST_CONV_RENAME] = "UPDATE conversations SET title = ?2, updated = ?3 WHERE id = ?1",
    [ST_CONV_TITLE_IF_EMPTY] = "UPDATE conversations SET title = ?2 WHERE id = ?1 AND title = ''",
    [ST_CONV_SETTINGS] =
        "UPDATE conversations SET thinking = ?2, temperature = ?3, top_p = ?4, top_k = ?5,"
        " min_p = ?6, max_tokens = ?7, system_prompt = coalesce(?8, system_prompt),"
        " pinned_date = coalesce(?9, pinned_date), updated = ?10 WHERE id = ?1",
    [ST_CONV_DELETE] = "DELETE FROM conversations WHERE id = ?1",
    [ST_CONV_LEAF] = "UPDATE conversations SET current_leaf = nullif(?2, 0), updated = ?3 WHERE id = ?1",
    [ST_CONV_TOUCH] = "UPDATE conversations SET updated = ?2 WHERE id = ?1",
    [ST_CONV_EXISTS] = "SELECT coalesce(current_leaf, 0) FROM conversations WHERE id = ?1",
    [ST_MSG_INSERT] =
        "INSERT INTO messages(conv, parent, role, content, reasoning, created, status, finish,"
        " prompt_tokens, completion_tokens, prefill_ms, gen_ms, model)"
        " VALUES (?1, nullif(?2, 0), ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [ST_MSG_UPDATE] =
        "UPDATE messages SET content = ?2, reasoning = ?3, status = ?4, finish = ?5,"
        " prompt_tokens = ?6, completion_tokens = ?7, prefill_ms = ?8, gen_ms = ?9 WHERE id = ?1"
        " RETURNING conv",
    [ST_MSG_GET] = "SELECT " MSG_COLS " FROM messages m WHERE m.id = ?1",
    [ST_MSG_ALL] = "SELECT " MSG_COLS " FROM messages m WHERE m.conv = ?1 ORDER BY m.id",
    [ST_MSG_NEWEST_CHILD] = "SELECT max(id) FROM messages WHERE parent = ?1",
    [ST_BRANCH] =
        "WITH RECURSIVE p(id, depth) AS ("
        "  SELECT id, 0 FROM messages WHERE id = ?1 AND conv = ?2"
        "  UNION ALL SELECT m.parent, p.depth + 1 FROM messages m JOIN p ON m.id = p.id"
        "  WHERE m.parent IS NOT NULL AND p.depth < 1000000)"
        " SELECT " MSG_COLS ","
        " (SELECT count(*) FROM messages s WHERE s.conv = m.conv AND s.parent IS m.parent AND s.id < m.id),"
        " (SELECT count(*) FROM messages s WHERE s.conv = m.conv AND s.parent IS m.parent)"
        " FROM p JOIN messages m ON m.id = p.id ORDER BY p.depth DESC",
    [ST_RECOVER] = "UPDATE messages SET status = 2, finish = 'interrupted' WHERE status = 1",
};

typedef struct reader reader;
enum { MAX_READERS = 4 }; /* concurrent searches; more wait for one, up to their deadline */

struct store {
    sqlite3 *db;
    pthread_mutex_t mu;
    sqlite3_stmt *st[ST_COUNT];
    size_t max_message;
    char path[1024];
    /* search connections (see "search" below), under rmu */
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    reader *idle[MAX_READERS];
    int n_idle, n_readers;
    reader *mem_reader; /* ":memory:" only: the main connection's */
    atomic_int stop_searches;
    atomic_int search_ms;
    char reader_path[3200]; /* what readers open: the path, or the read-only URI */
    int readonly;           /* opened read-only: every write is refused */
    char ro_reason[512];    /* why */
    store_pg *pg;           /* a PostgreSQL store: every call goes to store_pg.c */
};

store_pg *store_i_pg(const store *s) { return s->pg; }
int store_i_search_ms(const store *s) { return atomic_load(&s->search_ms); }
int store_i_searches_stopped(const store *s) { return atomic_load(&s->stop_searches); }

/* ---- small helpers ----------------------------------------------------- */

int64_t store_i_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Map an SQLite result to our codes, with the connection's message. */
static int db_err(store *s, core_err *err, int rc, const char *what) {
    int code;
    switch (rc & 0xff) {
    case SQLITE_NOMEM: code = CORE_ENOMEM; break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT: code = CORE_EFORMAT; break;
    case SQLITE_CONSTRAINT: code = CORE_EINVAL; break;
    case SQLITE_FULL: code = CORE_EFULL; break;
    default: code = CORE_EIO; break;
    }
    /* SQLite says "disk I/O error" for a quota or a file size limit: the
     * same to the user as a full disk */
    int sys = s->db ? sqlite3_system_errno(s->db) : 0;
    if (code == CORE_EIO && (rc & 0xff) == SQLITE_IOERR && (sys == ENOSPC || sys == EDQUOT || sys == EFBIG))
        code = CORE_EFULL;
    if (code == CORE_EFULL)
        return core_errf(err, code, "store: %s: the disk is full%s, nothing was saved (%s)", what,
                         sys == EDQUOT ? " (quota)" : sys == EFBIG ? " (file size limit)" : "",
                         s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    return core_errf(err, code, "store: %s: %s", what, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

/* Statement i, ready to bind (it was reset after its last use). */
static sqlite3_stmt *st(store *s, int i) { return s->st[i]; }

static void st_done(sqlite3_stmt *q) {
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
}

/* Step a statement that returns no rows; resets it. */
static int st_exec(store *s, sqlite3_stmt *q, const char *what, core_err *err) {
    int rc = sqlite3_step(q);
    st_done(q);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return db_err(s, err, rc, what);
    return 0;
}

static void bind_text(sqlite3_stmt *q, int i, const char *t) {
    sqlite3_bind_text(q, i, t ? t : "", -1, SQLITE_STATIC);
}

/* malloc'd copy of a text column ("" for NULL); NULL only when out of memory. */
static char *col_dup(sqlite3_stmt *q, int i) {
    const unsigned char *t = sqlite3_column_text(q, i);
    size_t n = (size_t)sqlite3_column_bytes(q, i);
    char *r = malloc(n + 1);
    if (!r) return NULL;
    if (t) memcpy(r, t, n);
    r[n] = 0;
    return r;
}

static void col_copy(sqlite3_stmt *q, int i, char *dst, size_t cap) {
    const unsigned char *t = sqlite3_column_text(q, i);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

static void db_close(store *s);
static int open_conn(store *s, core_err *err);
static int prepare_all(store *s, core_err *err);
static int is_memory(const char *path);

/* A new main connection after a write failed on I/O (a full disk): FTS5
 * keeps its index structure cached per connection, and after a failed
 * commit that cache no longer matches the file, so the next write on the
 * same connection reads as "database disk image is malformed".  When even
 * the new connection fails, the store turns read-only with the reason.
 * Lock held, no statement in use. */
static void reopen(store *s) {
    if (is_memory(s->path)) return; /* a new connection would be a new, empty database */
    core_err e = {0};
    db_close(s);
    if (open_conn(s, &e) == 0 && prepare_all(s, &e) == 0) return;
    LOG_ERROR("store: reopening %s after a failed write: %s", s->path, e.msg);
    snprintf(s->ro_reason, sizeof s->ro_reason, "%s", e.msg);
    s->readonly = 1;
}

/* Write transactions.  BEGIN IMMEDIATE waits up to the busy timeout; a few
 * retries on top make "database is locked" practically unreachable. */
static int tx_begin(store *s, core_err *err) {
    if (s->readonly)
        return core_errf(err, STORE_EREADONLY, "store: the history is read-only, nothing can be saved (%s)",
                         s->ro_reason);
    int rc = SQLITE_BUSY;
    for (int tries = 0; tries < 5; tries++) {
        rc = sqlite3_step(st(s, ST_BEGIN));
        st_done(st(s, ST_BEGIN));
        if (rc == SQLITE_DONE) return 0;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) break;
    }
    return db_err(s, err, rc, "begin transaction");
}

/* Commit when rc == 0, else roll back; returns the final status. */
static int tx_end(store *s, int rc, core_err *err) {
    if (rc == 0) {
        int r = SQLITE_BUSY;
        for (int tries = 0; tries < 5; tries++) {
            r = sqlite3_step(st(s, ST_COMMIT));
            st_done(st(s, ST_COMMIT));
            if (r == SQLITE_DONE) return 0;
            if ((r & 0xff) != SQLITE_BUSY) break;
        }
        rc = db_err(s, err, r, "commit");
    }
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_step(st(s, ST_ROLLBACK));
        st_done(st(s, ST_ROLLBACK));
    }
    if (rc == CORE_EFULL || rc == CORE_EIO) reopen(s);
    return rc;
}

static void lock(store *s) { pthread_mutex_lock(&s->mu); }
static void unlock(store *s) { pthread_mutex_unlock(&s->mu); }

int store_i_check_text(const store *s, const char *what, const char *t, size_t limit, core_err *err) {
    if (!t) return 0;
    size_t n = strlen(t);
    if (n > limit)
        return core_errf(err, CORE_ERANGE, "store: %s is %zu bytes, the limit is %zu", what, n, limit);
    if (!core_utf8_valid(t, n)) return core_errf(err, CORE_EINVAL, "store: %s is not valid UTF-8", what);
    (void)s;
    return 0;
}

int store_i_check_id(const char *id, core_err *err) {
    if (!id) return core_errf(err, CORE_EINVAL, "store: no conversation id");
    size_t n = strlen(id);
    if (n != STORE_ID_LEN) return core_errf(err, CORE_ENOTFOUND, "store: no conversation '%.40s'", id);
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return core_errf(err, CORE_ENOTFOUND, "store: no conversation '%.40s'", id);
    return 0;
}

static int valid_role(const char *r) {
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    for (size_t i = 0; i < CORE_ARRAY_LEN(roles); i++)
        if (strcmp(r, roles[i]) == 0) return 1;
    return 0;
}

static int valid_finish(const char *f) {
    static const char *const reasons[] = {"", "stop", "length", "cancelled", "error", "interrupted"};
    for (size_t i = 0; i < CORE_ARRAY_LEN(reasons); i++)
        if (strcmp(f, reasons[i]) == 0) return 1;
    return 0;
}

int store_i_check_msg(const store *s, const store_msg *m, int with_role, core_err *err) {
    if (with_role && !valid_role(m->role))
        return core_errf(err, CORE_EINVAL, "store: unknown role '%.16s'", m->role);
    if (m->status < STORE_MSG_DONE || m->status > STORE_MSG_PARTIAL)
        return core_errf(err, CORE_EINVAL, "store: bad message status %d", m->status);
    if (!valid_finish(m->finish))
        return core_errf(err, CORE_EINVAL, "store: unknown finish reason '%.16s'", m->finish);
    if (m->prompt_tokens < 0 || m->completion_tokens < 0 || !isfinite(m->prefill_ms) ||
        !isfinite(m->gen_ms) || m->prefill_ms < 0 || m->gen_ms < 0)
        return core_errf(err, CORE_EINVAL, "store: negative or non-finite token count or timing");
    if (!memchr(m->model, 0, sizeof m->model))
        return core_errf(err, CORE_EINVAL, "store: model name longer than %zu bytes", sizeof m->model - 1);
    int rc = store_i_check_text(s, "message content", m->content, s->max_message, err);
    if (!rc) rc = store_i_check_text(s, "message reasoning", m->reasoning, s->max_message, err);
    if (!rc) rc = store_i_check_text(s, "model name", m->model, sizeof m->model, err);
    return rc;
}

int store_i_check_settings(const store *s, const store_conv *c, core_err *err) {
    if (c->thinking != 0 && c->thinking != 1)
        return core_errf(err, CORE_EINVAL, "store: thinking must be 0 or 1");
    if (!isfinite(c->temperature) || c->temperature < 0 || c->temperature > 100)
        return core_errf(err, CORE_ERANGE, "store: temperature %g out of range [0, 100]", c->temperature);
    if (!isfinite(c->top_p) || c->top_p < 0 || c->top_p > 1)
        return core_errf(err, CORE_ERANGE, "store: top_p %g out of range [0, 1]", c->top_p);
    if (!isfinite(c->min_p) || c->min_p < 0 || c->min_p > 1)
        return core_errf(err, CORE_ERANGE, "store: min_p %g out of range [0, 1]", c->min_p);
    if (c->top_k < 0) return core_errf(err, CORE_ERANGE, "store: top_k %d is negative", c->top_k);
    if (c->max_tokens < 0) return core_errf(err, CORE_ERANGE, "store: max_tokens %d is negative", c->max_tokens);
    int rc = store_i_check_text(s, "system prompt", c->system_prompt, s->max_message, err);
    if (!rc) rc = store_i_check_text(s, "pinned date", c->pinned_date, 64, err);
    if (!rc) rc = store_i_check_text(s, "title", c->title, STORE_MAX_TITLE, err);
    return rc;
}

/* 16 hex chars from the kernel RNG. */
int store_i_random_id(char out[STORE_ID_LEN + 1], core_err *err) {
    unsigned char b[STORE_ID_LEN / 2];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t r = getrandom(b + got, sizeof b - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got < sizeof b) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || read(fd, b, sizeof b) != (ssize_t)sizeof b) {
            if (fd >= 0) close(fd);
            return core_errf(err, CORE_EIO, "store: no random bytes for an id");
        }
        close(fd);
    }
    for (size_t i = 0; i < sizeof b; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}

void store_i_today(char *buf, size_t cap) {
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    static const char *const months[] = {"January", "February", "March", "April", "May", "June", "July",
                                         "August", "September", "October", "November", "December"};
    snprintf(buf, cap, "%02d %s %d", tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900);
}

/* ---- open / close ------------------------------------------------------ */

static int reader_new(store *s, sqlite3 *db, reader **out, core_err *err);
static void reader_free(reader *r);

/* Space held in reserve: a file of RESERVE_BYTES beside the database
 * (<db>-reserve).  When the disk is full, SQLite cannot even delete (the
 * deletion is written to the WAL first, and FTS5 records it in its index);
 * releasing the reserve makes room for the deletes that free space inside
 * the database, so the history can take new messages again.  Made again
 * (best effort) at the next open, or after a delete once the disk has room. */
enum { RESERVE_BYTES = 4 << 20 };

static void reserve_name(const store *s, char *buf, size_t cap) { snprintf(buf, cap, "%s-reserve", s->path); }

static void reserve_make(store *s) {
    char p[1100];
    reserve_name(s, p, sizeof p);
    struct stat st;
    if (stat(p, &st) == 0 && st.st_size >= RESERVE_BYTES) return;
    int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return;
    /* real blocks, not a hole: a sparse file would free nothing */
    int r = posix_fallocate(fd, 0, RESERVE_BYTES);
    close(fd);
    if (r != 0) unlink(p); /* a partial reserve would only hide how full the disk is */
}

/* 1 when a reserve was there and is gone now. */
static int reserve_release(store *s) {
    char p[1100];
    reserve_name(s, p, sizeof p);
    return unlink(p) == 0;
}

/* An in-memory database is private to its connection: no reader can join it. */
static int is_memory(const char *path) {
    return strcmp(path, ":memory:") == 0 || strncmp(path, "file::memory:", 13) == 0 || strstr(path, "mode=memory");
}

const char *store_default_path(char *buf, size_t cap) {
    const char *x = getenv("XDG_DATA_HOME");
    int n;
    if (x && x[0] == '/') {
        n = snprintf(buf, cap, "%s/smolbot/smolbot.db", x);
    } else {
        const char *h = getenv("HOME");
        if (!h || h[0] != '/') return NULL;
        n = snprintf(buf, cap, "%s/.local/share/smolbot/smolbot.db", h);
    }
    return n > 0 && (size_t)n < cap ? buf : NULL;
}

/* mkdir -p of the directory part of path. */
static int make_parent_dirs(const char *path, core_err *err) {
    char dir[1024];
    if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
        return core_errf(err, CORE_EINVAL, "store: path too long");
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    for (char *p = dir + 1; ; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(dir, 0700) != 0 && errno != EEXIST)
                return core_errf(err, CORE_EIO, "store: cannot create %s: %s", dir, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    return 0;
}

static int exec_sql(store *s, const char *sql, const char *what, core_err *err) {
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    sqlite3_free(msg);
    return rc == SQLITE_OK ? 0 : db_err(s, err, rc, what);
}

static int migrate(store *s, core_err *err) {
    int rc = exec_sql(s, "BEGIN IMMEDIATE", "begin migration", err);
    if (rc) return rc;
    sqlite3_stmt *q = NULL;
    int v = -1, r = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &q, NULL);
    if (r == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW) v = sqlite3_column_int(q, 0);
    else rc = db_err(s, err, r == SQLITE_OK ? sqlite3_errcode(s->db) : r, "read schema version");
    sqlite3_finalize(q);
    if (!rc && v > SCHEMA_VERSION)
        rc = core_errf(err, CORE_EUNSUP, "store: %s has schema version %d, newer than this smolbot's %d",
                       s->path, v, SCHEMA_VERSION);
    for (; !rc && v < SCHEMA_VERSION; v++) {
        char set[64];
        snprintf(set, sizeof set, "PRAGMA user_version = %d", v + 1);
        rc = exec_sql(s, migrations[v], "migrate schema", err);
        if (!rc) rc = exec_sql(s, set, "set schema version", err);
        if (!rc) LOG_INFO("store: %s migrated to schema version %d", s->path, v + 1);
    }
    if (!rc) return exec_sql(s, "COMMIT", "commit migration", err);
    exec_sql(s, "ROLLBACK", "rollback migration", NULL);
    return rc;
}

/* Close the connection and its statements (a failed open, before a retry). */
static void db_close(store *s) {
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(s->st[i]);
        s->st[i] = NULL;
    }
    if (s->db) sqlite3_close(s->db);
    s->db = NULL;
}

static int prepare_all(store *s, core_err *err) {
    for (int i = 0; i < ST_COUNT; i++) {
        int r = sqlite3_prepare_v3(s->db, st_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
        if (r != SQLITE_OK) return db_err(s, err, r, "prepare statement");
    }
    return 0;
}

/* The usual open: read-write, created if absent, WAL, migrated, crashed
 * streams marked interrupted (open_rw); the connection alone (open_conn). */
static int open_conn(store *s, core_err *err) {
    int r = sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (r != SQLITE_OK)
        return core_errf(err, r == SQLITE_NOMEM ? CORE_ENOMEM : CORE_EIO, "store: cannot open %s: %s", s->path,
                         s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(r));
    sqlite3_busy_timeout(s->db, 10000);
    /* The first statement reads the header: a non-SQLite file fails here. */
    r = sqlite3_exec(s->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
    if (r != SQLITE_OK)
        return (r & 0xff) == SQLITE_NOTADB ? core_errf(err, CORE_EFORMAT, "store: %s is not a SQLite database", s->path)
                                           : db_err(s, err, r, "enable WAL");
    /* a file SQLite could only open for reading (permissions) */
    if (sqlite3_db_readonly(s->db, "main") == 1)
        return core_errf(err, CORE_EIO, "store: %s cannot be opened for writing", s->path);
    return exec_sql(s, "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL", "pragmas", err);
}

static int open_rw(store *s, core_err *err) {
    int rc = open_conn(s, err);
    if (!rc) rc = migrate(s, err);
    if (!rc) rc = prepare_all(s, err);
    if (rc) return rc;
    /* A message still streaming was being written by a process that died. */
    if ((rc = tx_begin(s, err))) return rc;
    rc = st_exec(s, st(s, ST_RECOVER), "recover interrupted messages", err);
    int fixed = sqlite3_changes(s->db);
    if ((rc = tx_end(s, rc, err))) return rc;
    if (fixed > 0) LOG_WARN("store: %d message(s) interrupted by a crash were marked partial", fixed);
    return 0;
}

/* s->path as an SQLite URI for a read-only, immutable open: the one open
 * that needs no -shm file, so it works on a read-only or full file system.
 * "immutable" means the -wal is not read, so it is used only when there is
 * no -wal with frames in it: a checkpoint cut short leaves the database file
 * consistent only together with its WAL. */
static int ro_uri(const char *path, char *out, size_t cap) {
    size_t n = (size_t)snprintf(out, cap, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                    strchr("/-._~", *p);
        if (n + 4 >= cap) return -1;
        n += (size_t)(plain ? snprintf(out + n, cap - n, "%c", *p) : snprintf(out + n, cap - n, "%%%02X", *p));
    }
    return snprintf(out + n, cap - n, "?immutable=1") >= (int)(cap - n) ? -1 : 0;
}

/* Open s->reader_path read-only and check the schema version. */
static int open_ro_at(store *s, core_err *err) {
    int r = sqlite3_open_v2(s->reader_path, &s->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
    if (r != SQLITE_OK)
        return core_errf(err, CORE_EIO, "store: cannot open %s even read-only: %s", s->path,
                         s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(r));
    sqlite3_stmt *q = NULL;
    int v = -1;
    r = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &q, NULL);
    if (r == SQLITE_OK && (r = sqlite3_step(q)) == SQLITE_ROW) v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (v < 0)
        return (r & 0xff) == SQLITE_NOTADB ? core_errf(err, CORE_EFORMAT, "store: %s is not a SQLite database", s->path)
                                           : db_err(s, err, r, "read schema version");
    if (v != SCHEMA_VERSION)
        return core_errf(err, CORE_EUNSUP, "store: %s has schema version %d, this smolbot reads %d (and cannot "
                                           "migrate a read-only file)", s->path, v, SCHEMA_VERSION);
    return prepare_all(s, err);
}

/* The fallback: the history read-only, as it is on disk.  A plain
 * read-only open first (it reads the WAL; it needs the -shm file to exist
 * or be creatable), else the immutable open when no WAL holds frames. */
static int open_ro(store *s, core_err *err) {
    snprintf(s->reader_path, sizeof s->reader_path, "%s", s->path);
    int rc = open_ro_at(s, err);
    if (rc != CORE_EIO && rc != CORE_EFULL) return rc;
    db_close(s);
    char wal[1100];
    struct stat st;
    snprintf(wal, sizeof wal, "%s-wal", s->path);
    if (stat(wal, &st) == 0 && st.st_size > 0)
        return core_errf(err, CORE_EIO, "store: cannot read %s: its latest changes are in %s, which cannot be read "
                                        "without writing beside it", s->path, wal);
    if (ro_uri(s->path, s->reader_path, sizeof s->reader_path))
        return core_errf(err, CORE_EINVAL, "store: path too long");
    return open_ro_at(s, err);
}

int store_open(store **out, const char *path, core_err *err) {
    *out = NULL;
    char def[1024];
    if (!path) {
        path = store_default_path(def, sizeof def);
        if (!path) return core_errf(err, CORE_EINVAL, "store: neither XDG_DATA_HOME nor HOME is set; pass --db PATH");
        int rc = make_parent_dirs(path, err);
        if (rc) return rc;
    }
    store *s = calloc(1, sizeof *s);
    if (!s) return core_errf(err, CORE_ENOMEM, "store: out of memory");
    snprintf(s->path, sizeof s->path, "%s", path);
    snprintf(s->reader_path, sizeof s->reader_path, "%s", path);
    s->max_message = STORE_DEFAULT_MAX_MESSAGE;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->rcv, NULL);
    atomic_init(&s->stop_searches, 0);
    atomic_init(&s->search_ms, STORE_SEARCH_BUDGET_MS);
    if (store_pg_url(path)) {
        int rc = store_pg_open(&s->pg, s, path, err);
        if (rc) {
            store_close(s);
            return rc;
        }
        *out = s;
        return 0;
    }
    int memory = is_memory(path);
    core_err le = {0}, *e = &le; /* the reason is kept for ro_reason even when err is NULL */
    int rc = open_rw(s, e);
    /* A full disk: the space held in reserve lets the open (its -shm, a
     * recovery) and the deletes that free space go through. */
    if (rc && !memory && rc != CORE_EFORMAT && rc != CORE_EUNSUP && reserve_release(s)) {
        LOG_WARN("store: %s: released the %d MiB held in reserve to open the history", le.msg, RESERVE_BYTES >> 20);
        db_close(s);
        s->readonly = 0; /* a failed reopen on the way may have set it */
        rc = open_rw(s, e);
    }
    /* Read-only or still full: the history stays readable, writes are refused. */
    if (rc && !memory && rc != CORE_EFORMAT && rc != CORE_EUNSUP && access(path, F_OK) == 0) {
        const char *why = strncmp(le.msg, "store: ", 7) ? le.msg : le.msg + 7;
        snprintf(s->ro_reason, sizeof s->ro_reason, "cannot write %.300s (read-only or full file system?): %.150s",
                 path, why);
        db_close(s);
        rc = open_ro(s, e);
        if (!rc) {
            s->readonly = 1;
            LOG_WARN("store: %s: history opened read-only", s->ro_reason);
        }
    }
    if (!rc && !s->readonly && !memory) reserve_make(s);
    if (!rc && memory) rc = reader_new(s, s->db, &s->mem_reader, e);
    if (rc) {
        if (err) *err = le;
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

const char *store_readonly(const store *s) { return s->readonly ? s->ro_reason : NULL; }

void store_close(store *s) {
    if (!s) return;
    store_pg_close(s->pg);
    /* every search has returned (the caller's contract), so all readers are idle */
    for (int i = 0; i < s->n_idle; i++) reader_free(s->idle[i]);
    reader_free(s->mem_reader);
    /* sqlite3_close (not _v2): every statement is finalized first. */
    db_close(s);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->rcv);
    free(s);
}

void store_set_max_message(store *s, size_t bytes) {
    lock(s);
    s->max_message = bytes;
    unlock(s);
}

int store_check(store *s, core_err *err) {
    if (s->pg) return store_pg_check(s, err);
    lock(s);
    sqlite3_stmt *q = NULL;
    int rc = 0, r = sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &q, NULL);
    if (r != SQLITE_OK) {
        rc = db_err(s, err, r, "integrity check");
    } else if ((r = sqlite3_step(q)) != SQLITE_ROW) {
        rc = db_err(s, err, r, "integrity check");
    } else {
        const char *res = (const char *)sqlite3_column_text(q, 0);
        if (!res || strcmp(res, "ok") != 0)
            rc = core_errf(err, CORE_EFORMAT, "store: integrity check: %s", res ? res : "(no result)");
    }
    sqlite3_finalize(q);
    if (!rc) {
        r = sqlite3_exec(s->db, "INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')", NULL,
                         NULL, NULL);
        if (r != SQLITE_OK) rc = db_err(s, err, r, "search index check");
    }
    unlock(s);
    return rc;
}

/* ---- conversations ----------------------------------------------------- */

void store_conv_defaults(store_conv *c) {
    memset(c, 0, sizeof *c);
    c->thinking = 1;
    c->temperature = 0.6;
    c->top_p = 0.95;
    c->top_k = 20;
    c->min_p = 0;
    c->max_tokens = 0;
}

void store_conv_clear(store_conv *c) {
    if (!c) return;
    free(c->title);
    free(c->pinned_date);
    free(c->system_prompt);
    memset(c, 0, sizeof *c);
}

void store_conv_free_list(store_conv *list, int n) {
    for (int i = 0; i < n; i++) store_conv_clear(&list[i]);
    free(list);
}

static int read_conv(sqlite3_stmt *q, store_conv *c, core_err *err) {
    memset(c, 0, sizeof *c);
    col_copy(q, 0, c->id, sizeof c->id);
    c->title = col_dup(q, 1);
    c->created = sqlite3_column_int64(q, 2);
    c->updated = sqlite3_column_int64(q, 3);
    c->pinned_date = col_dup(q, 4);
    c->thinking = sqlite3_column_int(q, 5);
    c->temperature = sqlite3_column_double(q, 6);
    c->top_p = sqlite3_column_double(q, 7);
    c->top_k = sqlite3_column_int(q, 8);
    c->min_p = sqlite3_column_double(q, 9);
    c->max_tokens = sqlite3_column_int(q, 10);
    c->system_prompt = col_dup(q, 11);
    c->current_leaf = sqlite3_column_int64(q, 12);
    c->n_messages = sqlite3_column_int64(q, 13);
    if (!c->title || !c->pinned_date || !c->system_prompt) {
        store_conv_clear(c);
        return core_errf(err, CORE_ENOMEM, "store: out of memory");
    }
    return 0;
}

/* Insert a conversation row (caller holds the lock and a transaction). */
static int conv_insert(store *s, const store_conv *c, int64_t created, int64_t updated, char id[STORE_ID_LEN + 1],
                       core_err *err) {
    char date[64];
    const char *pinned = c->pinned_date;
    if (!pinned) {
        store_i_today(date, sizeof date);
        pinned = date;
    }
    for (int tries = 0;; tries++) {
        int rc = store_i_random_id(id, err);
        if (rc) return rc;
        sqlite3_stmt *q = st(s, ST_CONV_INSERT);
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        bind_text(q, 2, c->title);
        sqlite3_bind_int64(q, 3, created);
        sqlite3_bind_int64(q, 4, updated);
        bind_text(q, 5, pinned);
        sqlite3_bind_int(q, 6, c->thinking);
        sqlite3_bind_double(q, 7, c->temperature);
        sqlite3_bind_double(q, 8, c->top_p);
        sqlite3_bind_int(q, 9, c->top_k);
        sqlite3_bind_double(q, 10, c->min_p);
        sqlite3_bind_int(q, 11, c->max_tokens);
        bind_text(q, 12, c->system_prompt);
        int r = sqlite3_step(q);
        st_done(q);
        if (r == SQLITE_DONE) return 0;
        /* a 64-bit id collision: astronomically rare, but cheap to handle */
        if (r != SQLITE_CONSTRAINT || tries >= 3) return db_err(s, err, r, "create conversation");
    }
}

int store_create(store *s, const store_conv *init, char id_out[STORE_ID_LEN + 1], core_err *err) {
    if (s->pg) return store_pg_create(s, init, id_out, err);
    store_conv def;
    if (!init) {
        store_conv_defaults(&def);
        init = &def;
    }
    id_out[0] = 0;
    lock(s);
    int rc = store_i_check_settings(s, init, err);
    if (!rc) rc = tx_begin(s, err);
    if (!rc) {
        int64_t t = store_i_now_ms();
        rc = conv_insert(s, init, t, t, id_out, err);
        rc = tx_end(s, rc, err);
    }
    unlock(s);
    if (rc) id_out[0] = 0;
    return rc;
}

int store_get(store *s, const char *id, store_conv *out, core_err *err) {
    if (s->pg) return store_pg_get(s, id, out, err);
    memset(out, 0, sizeof *out);
    int rc = store_i_check_id(id, err);
    if (rc) return rc;
    lock(s);
    sqlite3_stmt *q = st(s, ST_CONV_GET);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(q);
    if (r == SQLITE_ROW) rc = read_conv(q, out, err);
    else if (r == SQLITE_DONE) rc = core_errf(err, CORE_ENOTFOUND, "store: no conversation '%s'", id);
    else rc = db_err(s, err, r, "get conversation");
    st_done(q);
    unlock(s);
    return rc;
}

int store_list(store *s, int limit, int offset, store_conv **out, int *n, core_err *err) {
    if (s->pg) return store_pg_list(s, limit, offset, out, n, err);
    *out = NULL;
    *n = 0;
    if (limit <= 0) limit = 50;
    if (offset < 0) offset = 0;
    store_conv *v = NULL;
    int cnt = 0, cap = 0, rc = 0, r;
    lock(s);
    sqlite3_stmt *q = st(s, ST_CONV_LIST);
    sqlite3_bind_int(q, 1, limit);
    sqlite3_bind_int(q, 2, offset);
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            int nc = cap ? cap * 2 : 16;
            store_conv *nv = realloc(v, (size_t)nc * sizeof *nv);
            if (!nv) { rc = core_errf(err, CORE_ENOMEM, "store: out of memory"); break; }
            v = nv;
            cap = nc;
        }
        if ((rc = read_conv(q, &v[cnt], err))) break;
        cnt++;
    }
    if (!rc && r != SQLITE_DONE) rc = db_err(s, err, r, "list conversations");
    st_done(q);
    unlock(s);
    if (rc) {
        store_conv_free_list(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* Run a one-row UPDATE keyed by conversation id in its own transaction;
 * zero rows changed -> CORE_ENOTFOUND. Caller holds the lock and has bound q. */
static int conv_write(store *s, sqlite3_stmt *q, const char *id, const char *what, core_err *err) {
    int rc = tx_begin(s, err);
    if (rc) {
        st_done(q);
        return rc;
    }
    rc = st_exec(s, q, what, err);
    if (!rc && sqlite3_changes(s->db) == 0) rc = core_errf(err, CORE_ENOTFOUND, "store: no conversation '%s'", id);
    return tx_end(s, rc, err);
}

int store_rename(store *s, const char *id, const char *title, core_err *err) {
    if (s->pg) return store_pg_rename(s, id, title, err);
    int rc = store_i_check_id(id, err);
    if (rc) return rc;
    lock(s);
    rc = store_i_check_text(s, "title", title, STORE_MAX_TITLE, err);
    if (!rc) {
        sqlite3_stmt *q = st(s, ST_CONV_RENAME);
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        bind_text(q, 2, title);
        sqlite3_bind_int64(q, 3, store_i_now_ms());
        rc = conv_write(s, q, id, "rename conversation", err);
    }
    unlock(s);
    return rc;
}

int store_set_settings(store *s, const char *id, const store_conv *c, core_err *err) {
    if (s->pg) return store_pg_set_settings(s, id, c, err);
    int rc = store_i_check_id(id, err);
    if (rc) return rc;
    lock(s);
    store_conv tmp = *c;
    tmp.title = NULL; /* not written here */
    rc = store_i_check_settings(s, &tmp, err);
    if (!rc) {
        sqlite3_stmt *q = st(s, ST_CONV_SETTINGS);
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(q, 2, c->thinking);
        sqlite3_bind_double(q, 3, c->temperature);
        sqlite3_bind_double(q, 4, c->top_p);
        sqlite3_bind_int(q, 5, c->top_k);
        sqlite3_bind_double(q, 6, c->min_p);
        sqlite3_bind_int(q, 7, c->max_tokens);
        if (c->system_prompt) sqlite3_bind_text(q, 8, c->system_prompt, -1, SQLITE_STATIC);
        if (c->pinned_date) sqlite3_bind_text(q, 9, c->pinned_date, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 10, store_i_now_ms());
        rc = conv_write(s, q, id, "update settings", err);
    }
    unlock(s);
    return rc;
}

int store_delete(store *s, const char *id, core_err *err) {
    if (s->pg) return store_pg_delete(s, id, err);
    int rc = store_i_check_id(id, err);
    if (rc) return rc;
    lock(s);
    sqlite3_stmt *q = st(s, ST_CONV_DELETE);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    rc = conv_write(s, q, id, "delete conversation", err);
    if (rc == CORE_EFULL && !is_memory(s->path) && reserve_release(s)) { /* what the reserve is for */
        LOG_WARN("store: the disk is full: released the %d MiB held in reserve to delete a conversation",
                 RESERVE_BYTES >> 20);
        q = st(s, ST_CONV_DELETE); /* tx_end made a new connection */
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
        rc = conv_write(s, q, id, "delete conversation", err);
    }
    /* the reserve again once the disk has room for it and then some */
    struct statvfs fs;
    if (!rc && !is_memory(s->path) && statvfs(s->path, &fs) == 0 &&
        (uint64_t)fs.f_bavail * fs.f_frsize > 4 * (uint64_t)RESERVE_BYTES)
        reserve_make(s);
    unlock(s);
    return rc;
}

/* ---- messages ---------------------------------------------------------- */

void store_msg_clear(store_msg *m) {
    if (!m) return;
    free(m->content);
    free(m->reasoning);
    memset(m, 0, sizeof *m);
}

void store_msgs_free(store_msg *m, int n) {
    for (int i = 0; i < n; i++) store_msg_clear(&m[i]);
    free(m);
}

static int read_msg(sqlite3_stmt *q, store_msg *m, int with_siblings, core_err *err) {
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(q, 0);
    m->parent = sqlite3_column_int64(q, 1);
    col_copy(q, 2, m->conv, sizeof m->conv);
    col_copy(q, 3, m->role, sizeof m->role);
    m->content = col_dup(q, 4);
    m->reasoning = col_dup(q, 5);
    m->created = sqlite3_column_int64(q, 6);
    m->status = sqlite3_column_int(q, 7);
    col_copy(q, 8, m->finish, sizeof m->finish);
    m->prompt_tokens = sqlite3_column_int(q, 9);
    m->completion_tokens = sqlite3_column_int(q, 10);
    m->prefill_ms = sqlite3_column_double(q, 11);
    m->gen_ms = sqlite3_column_double(q, 12);
    col_copy(q, 13, m->model, sizeof m->model);
    if (with_siblings) {
        m->sibling_index = sqlite3_column_int(q, 14);
        m->sibling_count = sqlite3_column_int(q, 15);
    }
    if (!m->content || !m->reasoning) {
        store_msg_clear(m);
        return core_errf(err, CORE_ENOMEM, "store: out of memory");
    }
    return 0;
}

/* Step q (already bound) and collect every row as a message. Resets q. */
static int read_msgs(store *s, sqlite3_stmt *q, int with_siblings, const char *what, store_msg **out, int *n,
                     core_err *err) {
    store_msg *v = NULL;
    int cnt = 0, cap = 0, rc = 0, r;
    while ((r = sqlite3_step(q)) == SQLITE_ROW) {
        if (cnt == cap) {
            int nc = cap ? cap * 2 : 16;
            store_msg *nv = realloc(v, (size_t)nc * sizeof *nv);
            if (!nv) { rc = core_errf(err, CORE_ENOMEM, "store: out of memory"); break; }
            v = nv;
            cap = nc;
        }
        if ((rc = read_msg(q, &v[cnt], with_siblings, err))) break;
        cnt++;
    }
    if (!rc && r != SQLITE_DONE) rc = db_err(s, err, r, what);
    st_done(q);
    if (rc) {
        store_msgs_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* Lock held. Fetch message id's row into *m. */
static int msg_get(store *s, int64_t id, store_msg *m, core_err *err) {
    sqlite3_stmt *q = st(s, ST_MSG_GET);
    sqlite3_bind_int64(q, 1, id);
    int r = sqlite3_step(q), rc;
    if (r == SQLITE_ROW) rc = read_msg(q, m, 0, err);
    else if (r == SQLITE_DONE) rc = core_errf(err, CORE_ENOTFOUND, "store: no message %lld", (long long)id);
    else rc = db_err(s, err, r, "get message");
    st_done(q);
    return rc;
}

/* Title from the first non-blank line: at most 80 bytes, cut on a character. */
void store_i_title_from(const char *content, char *buf, size_t cap) {
    const char *p = content;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    size_t n = strcspn(p, "\r\n");
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    int cut = 0;
    if (n > 80) {
        n = core_utf8_complete_prefix(p, 80);
        /* complete_prefix keeps whole characters only when the cut lands inside one */
        while (n > 0 && ((unsigned char)p[n] & 0xc0) == 0x80) n--;
        cut = 1;
    }
    if (n + 4 > cap) n = 0;
    memcpy(buf, p, n);
    if (cut) memcpy(buf + n, "\xe2\x80\xa6", 3), n += 3;
    buf[n] = 0;
}

/* Lock held, transaction open: insert m under parent and make it the leaf. */
static int msg_insert(store *s, const char *conv, const store_msg *m, int64_t parent, int64_t created,
                      int64_t *id_out, core_err *err) {
    sqlite3_stmt *q = st(s, ST_MSG_INSERT);
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, parent);
    sqlite3_bind_text(q, 3, m->role, -1, SQLITE_STATIC);
    bind_text(q, 4, m->content);
    bind_text(q, 5, m->reasoning);
    sqlite3_bind_int64(q, 6, created);
    sqlite3_bind_int(q, 7, m->status);
    sqlite3_bind_text(q, 8, m->finish, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 9, m->prompt_tokens);
    sqlite3_bind_int(q, 10, m->completion_tokens);
    sqlite3_bind_double(q, 11, m->prefill_ms);
    sqlite3_bind_double(q, 12, m->gen_ms);
    sqlite3_bind_text(q, 13, m->model, -1, SQLITE_STATIC);
    int rc = st_exec(s, q, "append message", err);
    if (!rc) *id_out = sqlite3_last_insert_rowid(s->db);
    return rc;
}

int store_append(store *s, const char *conv, const store_msg *m, int64_t *id_out, core_err *err) {
    if (s->pg) return store_pg_append(s, conv, m, id_out, err);
    if (id_out) *id_out = 0;
    int rc = store_i_check_id(conv, err);
    if (rc) return rc;
    lock(s);
    rc = store_i_check_msg(s, m, 1, err);
    if (!rc) rc = tx_begin(s, err);
    if (rc) goto out;
    /* the conversation must exist, the parent must be one of its messages */
    sqlite3_stmt *q = st(s, ST_CONV_EXISTS);
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    int r = sqlite3_step(q);
    st_done(q);
    if (r == SQLITE_DONE) rc = core_errf(err, CORE_ENOTFOUND, "store: no conversation '%s'", conv);
    else if (r != SQLITE_ROW) rc = db_err(s, err, r, "append message");
    if (!rc && m->parent) {
        store_msg p = {0};
        rc = msg_get(s, m->parent, &p, err);
        if (!rc && strcmp(p.conv, conv) != 0)
            rc = core_errf(err, CORE_EINVAL, "store: message %lld is not in conversation '%s'",
                           (long long)m->parent, conv);
        store_msg_clear(&p);
    }
    int64_t id = 0, t = store_i_now_ms();
    if (!rc) rc = msg_insert(s, conv, m, m->parent, t, &id, err);
    if (!rc) {
        q = st(s, ST_CONV_LEAF);
        sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, id);
        sqlite3_bind_int64(q, 3, t);
        rc = st_exec(s, q, "set current leaf", err);
    }
    if (!rc && strcmp(m->role, "user") == 0 && m->content) {
        char title[96];
        store_i_title_from(m->content, title, sizeof title);
        if (title[0]) {
            q = st(s, ST_CONV_TITLE_IF_EMPTY);
            sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
            sqlite3_bind_text(q, 2, title, -1, SQLITE_STATIC);
            rc = st_exec(s, q, "set title", err);
        }
    }
    rc = tx_end(s, rc, err);
    if (!rc && id_out) *id_out = id;
out:
    unlock(s);
    return rc;
}

int store_update(store *s, int64_t id, const store_msg *m, core_err *err) {
    if (s->pg) return store_pg_update(s, id, m, err);
    lock(s);
    int rc = store_i_check_msg(s, m, 0, err);
    if (!rc) rc = tx_begin(s, err);
    if (rc) goto out;
    sqlite3_stmt *q = st(s, ST_MSG_UPDATE);
    sqlite3_bind_int64(q, 1, id);
    bind_text(q, 2, m->content);
    bind_text(q, 3, m->reasoning);
    sqlite3_bind_int(q, 4, m->status);
    sqlite3_bind_text(q, 5, m->finish, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 6, m->prompt_tokens);
    sqlite3_bind_int(q, 7, m->completion_tokens);
    sqlite3_bind_double(q, 8, m->prefill_ms);
    sqlite3_bind_double(q, 9, m->gen_ms);
    char conv[STORE_ID_LEN + 1] = "";
    int r = sqlite3_step(q);
    if (r == SQLITE_ROW) {
        col_copy(q, 0, conv, sizeof conv);
        r = sqlite3_step(q);
    }
    st_done(q);
    if (r != SQLITE_DONE) rc = db_err(s, err, r, "update message");
    else if (!conv[0]) rc = core_errf(err, CORE_ENOTFOUND, "store: no message %lld", (long long)id);
    if (!rc) {
        q = st(s, ST_CONV_TOUCH);
        sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, store_i_now_ms());
        rc = st_exec(s, q, "touch conversation", err);
    }
    rc = tx_end(s, rc, err);
out:
    unlock(s);
    return rc;
}

int store_get_msg(store *s, int64_t id, store_msg *out, core_err *err) {
    if (s->pg) return store_pg_get_msg(s, id, out, err);
    lock(s);
    int rc = msg_get(s, id, out, err);
    unlock(s);
    return rc;
}

int store_branch(store *s, const char *conv, int64_t leaf, store_msg **out, int *n, core_err *err) {
    if (s->pg) return store_pg_branch(s, conv, leaf, out, n, err);
    *out = NULL;
    *n = 0;
    int rc = store_i_check_id(conv, err);
    if (rc) return rc;
    lock(s);
    sqlite3_stmt *q = st(s, ST_CONV_EXISTS);
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    int r = sqlite3_step(q);
    int64_t cur = r == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    st_done(q);
    if (r == SQLITE_DONE) rc = core_errf(err, CORE_ENOTFOUND, "store: no conversation '%s'", conv);
    else if (r != SQLITE_ROW) rc = db_err(s, err, r, "get branch");
    if (!rc && !leaf) leaf = cur;
    if (!rc && leaf) {
        q = st(s, ST_BRANCH);
        sqlite3_bind_int64(q, 1, leaf);
        sqlite3_bind_text(q, 2, conv, -1, SQLITE_STATIC);
        rc = read_msgs(s, q, 1, "get branch", out, n, err);
        if (!rc && *n == 0)
            rc = core_errf(err, CORE_ENOTFOUND, "store: no message %lld in conversation '%s'", (long long)leaf,
                           conv);
    }
    unlock(s);
    return rc;
}

int store_messages(store *s, const char *conv, store_msg **out, int *n, core_err *err) {
    if (s->pg) return store_pg_messages(s, conv, out, n, err);
    *out = NULL;
    *n = 0;
    int rc = store_i_check_id(conv, err);
    if (rc) return rc;
    lock(s);
    sqlite3_stmt *q = st(s, ST_MSG_ALL);
    sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
    rc = read_msgs(s, q, 0, "list messages", out, n, err);
    unlock(s);
    return rc;
}

int store_set_leaf(store *s, const char *conv, int64_t msg, int64_t *leaf_out, core_err *err) {
    if (s->pg) return store_pg_set_leaf(s, conv, msg, leaf_out, err);
    if (leaf_out) *leaf_out = 0;
    int rc = store_i_check_id(conv, err);
    if (rc) return rc;
    lock(s);
    if ((rc = tx_begin(s, err))) goto out;
    store_msg m = {0};
    rc = msg_get(s, msg, &m, err);
    if (!rc && strcmp(m.conv, conv) != 0)
        rc = core_errf(err, CORE_ENOTFOUND, "store: no message %lld in conversation '%s'", (long long)msg, conv);
    store_msg_clear(&m);
    int64_t leaf = msg;
    while (!rc) { /* terminates: children have larger ids */
        sqlite3_stmt *q = st(s, ST_MSG_NEWEST_CHILD);
        sqlite3_bind_int64(q, 1, leaf);
        int r = sqlite3_step(q);
        int64_t child = r == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
        st_done(q);
        if (r != SQLITE_ROW) rc = db_err(s, err, r, "find leaf");
        if (child <= leaf) break;
        leaf = child;
    }
    if (!rc) {
        sqlite3_stmt *q = st(s, ST_CONV_LEAF);
        sqlite3_bind_text(q, 1, conv, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, leaf);
        sqlite3_bind_int64(q, 3, store_i_now_ms());
        rc = st_exec(s, q, "set current leaf", err);
    }
    rc = tx_end(s, rc, err);
    if (!rc && leaf_out) *leaf_out = leaf;
out:
    unlock(s);
    return rc;
}

/* ---- search ------------------------------------------------------------ */

/* Searches run on reader connections of their own (read-only, WAL: a reader
 * sees the last commit and neither waits for the writer nor makes it wait),
 * never under s->mu.  A reader is taken from a small pool; each has the
 * deadline of the search it serves, checked by SQLite's progress handler,
 * so no query runs past the budget or past store_stop_searches().
 * A ":memory:" store has no second connection: its searches take s->mu and
 * run on the main connection, with the same deadline. */
enum { SNIPPET_WORDS = 16, SNIPPET_BEFORE = 4 };

static const char SQL_HITS[] =
    "SELECT m.conv, c.title, m.id, m.role, m.created"
    " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
    " JOIN conversations c ON c.id = m.conv"
    " WHERE messages_fts MATCH ?1 ORDER BY rank, m.id DESC LIMIT ?2 OFFSET ?3";
/* FTS5 walks its index newest first and stops at the limit: no ranking. */
static const char SQL_NEWEST[] =
    "SELECT m.conv, c.title, m.id, m.role, m.created"
    " FROM (SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH ?1"
    "       ORDER BY rowid DESC LIMIT ?2 OFFSET ?3) f"
    " JOIN messages m ON m.id = f.id JOIN conversations c ON c.id = m.conv ORDER BY m.id DESC";
static const char SQL_CONTENT[] = "SELECT content FROM messages WHERE id = ?1";

struct reader {
    sqlite3 *db;
    sqlite3_stmt *hits, *newest, *content;
    uint64_t deadline_ns; /* UINT64_MAX while no search runs */
    const store *s;
};

static int reader_progress(void *p) {
    reader *r = p;
    if (r->deadline_ns == UINT64_MAX) return 0;
    return atomic_load(&r->s->stop_searches) || core_now_ns() > r->deadline_ns;
}

static void reader_free(reader *r) {
    if (!r) return;
    sqlite3_finalize(r->hits);
    sqlite3_finalize(r->newest);
    sqlite3_finalize(r->content);
    if (r->db && r->db != r->s->db) sqlite3_close(r->db);
    free(r);
}

/* A reader on db (NULL = open a new read-only connection to s->path). */
static int reader_new(store *s, sqlite3 *db, reader **out, core_err *err) {
    *out = NULL;
    reader *r = calloc(1, sizeof *r);
    if (!r) return core_errf(err, CORE_ENOMEM, "store: out of memory");
    r->s = s;
    r->deadline_ns = UINT64_MAX;
    r->db = db;
    int rc = SQLITE_OK;
    if (!db) {
        rc = sqlite3_open_v2(s->reader_path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                             NULL);
        if (rc == SQLITE_OK) sqlite3_busy_timeout(r->db, 1000);
    }
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v3(r->db, SQL_HITS, -1, SQLITE_PREPARE_PERSISTENT, &r->hits, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(r->db, SQL_NEWEST, -1, SQLITE_PREPARE_PERSISTENT, &r->newest, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v3(r->db, SQL_CONTENT, -1, SQLITE_PREPARE_PERSISTENT, &r->content, NULL);
    if (rc != SQLITE_OK) {
        core_errf(err, CORE_EIO, "store: search connection to %s: %s", s->path,
                  r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
        reader_free(r);
        return err ? err->code : CORE_EIO;
    }
    /* every 1000 virtual machine steps: well under a millisecond apart */
    sqlite3_progress_handler(r->db, 1000, reader_progress, r);
    *out = r;
    return 0;
}

/* Take a reader for a search that must end by deadline_ns. */
static int reader_get(store *s, uint64_t deadline_ns, reader **out, core_err *err) {
    *out = NULL;
    if (s->mem_reader) { /* ":memory:": the main connection, under its lock */
        lock(s);
        s->mem_reader->deadline_ns = deadline_ns;
        *out = s->mem_reader;
        return 0;
    }
    pthread_mutex_lock(&s->rmu);
    for (;;) {
        if (atomic_load(&s->stop_searches)) {
            pthread_mutex_unlock(&s->rmu);
            return core_errf(err, CORE_ECANCEL, "store: search cancelled: the server is shutting down");
        }
        if (s->n_idle > 0) {
            *out = s->idle[--s->n_idle];
            break;
        }
        if (s->n_readers < MAX_READERS) {
            s->n_readers++;
            pthread_mutex_unlock(&s->rmu);
            int rc = reader_new(s, NULL, out, err);
            if (rc) {
                pthread_mutex_lock(&s->rmu);
                s->n_readers--;
                pthread_cond_signal(&s->rcv);
                pthread_mutex_unlock(&s->rmu);
                return rc;
            }
            (*out)->deadline_ns = deadline_ns;
            return 0;
        }
        struct timespec ts;
        uint64_t wait_ns = core_now_ns() + 20000000u; /* re-check the deadline and stop flag */
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->rcv, &s->rmu, &ts);
        if (wait_ns > deadline_ns && core_now_ns() > deadline_ns) {
            pthread_mutex_unlock(&s->rmu);
            return core_errf(err, CORE_ECANCEL, "store: search timed out waiting for a free search connection "
                                                "(%d searches are running)", MAX_READERS);
        }
    }
    pthread_mutex_unlock(&s->rmu);
    (*out)->deadline_ns = deadline_ns;
    return 0;
}

static void reader_put(store *s, reader *r) {
    r->deadline_ns = UINT64_MAX;
    if (r == s->mem_reader) {
        unlock(s);
        return;
    }
    pthread_mutex_lock(&s->rmu);
    s->idle[s->n_idle++] = r;
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
}

void store_stop_searches(store *s) {
    if (!s) return;
    atomic_store(&s->stop_searches, 1);
    if (s->pg) store_pg_stop_searches(s);
    pthread_mutex_lock(&s->rmu);
    pthread_cond_broadcast(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
}

void store_set_search_budget(store *s, int ms) { atomic_store(&s->search_ms, ms > 0 ? ms : STORE_SEARCH_BUDGET_MS); }

void store_hits_free(store_hit *h, int n) {
    for (int i = 0; i < n; i++) {
        free(h[i].title);
        free(h[i].snippet);
    }
    free(h);
}

/* Word characters, as FTS5's unicode61 tokenizer sees them for ASCII (letters
 * and digits); every non-ASCII byte counts as a word character, so words
 * never split inside a UTF-8 sequence. */
int store_i_word_char(unsigned char c) { return c >= 0x80 || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }

static int word_eq(const char *a, size_t an, const char *b, size_t bn) {
    if (an != bn) return 0;
    for (size_t i = 0; i < an; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x < 0x80 && ((x | 0x20) >= 'a' && (x | 0x20) <= 'z')) x |= 0x20;
        if (y < 0x80 && ((y | 0x20) >= 'a' && (y | 0x20) <= 'z')) y |= 0x20;
        if (x != y) return 0;
    }
    return 1;
}


/* Split the user's text into words (the tokenizer's boundaries, so a word
 * never becomes a multi-token FTS5 phrase), drop repeats (ASCII case
 * folded) and keep the first STORE_MAX_TERMS: the cost of a query grows with its
 * terms, and repeating a word adds nothing to an AND of words. */
void store_i_split_terms(const char *text, store_terms *t) {
    t->count = 0;
    const char *p = text;
    while (*p && t->count < STORE_MAX_TERMS) {
        while (*p && !store_i_word_char((unsigned char)*p)) p++;
        const char *w = p;
        while (store_i_word_char((unsigned char)*p)) p++;
        size_t n = (size_t)(p - w);
        if (!n) break;
        int dup = 0;
        for (int i = 0; i < t->count && !dup; i++) dup = word_eq(t->w[i], t->n[i], w, n);
        if (dup) continue;
        t->w[t->count] = w;
        t->n[t->count++] = n;
    }
}

/* The terms as an FTS5 query: each a quoted string (no operator survives;
 * a word holds no '"', store_i_word_char excludes it), all required. */
static int fts_query(const store_terms *t, core_buf *q) {
    for (int i = 0; i < t->count; i++)
        if ((i && core_buf_puts(q, " ")) || core_buf_puts(q, "\"") || core_buf_append(q, t->w[i], t->n[i]) ||
            core_buf_puts(q, "\""))
            return -1;
    return 0;
}

static int is_term(const store_terms *t, const char *w, size_t n) {
    for (int i = 0; i < t->count; i++)
        if (word_eq(t->w[i], t->n[i], w, n)) return 1;
    return 0;
}

/* Our own snippet: SNIPPET_WORDS words from SNIPPET_BEFORE words before the
 * first word that equals a term, every such word between STORE_HL_*
 * markers, "…" where text was left out.  One pass up to the window, so the
 * cost is linear in the text whatever the query (FTS5's snippet() looks for
 * the best window and grows with the terms times their occurrences).  A
 * match FTS5 made through folding we do not repeat (diacritics) shows the
 * text's first words, unmarked. */
char *store_i_make_snippet(const char *text, size_t len, const store_terms *t) {
    size_t ring[SNIPPET_BEFORE + 1]; /* starts of the last words seen */
    int seen = 0;
    size_t i = 0, start = 0;
    int found = 0;
    while (i < len) {
        while (i < len && !store_i_word_char((unsigned char)text[i])) i++;
        if (i >= len) break;
        size_t w = i;
        while (i < len && store_i_word_char((unsigned char)text[i])) i++;
        ring[seen % (SNIPPET_BEFORE + 1)] = w;
        seen++;
        if (is_term(t, text + w, i - w)) {
            int back = seen - 1 < SNIPPET_BEFORE ? seen - 1 : SNIPPET_BEFORE;
            start = ring[(seen - 1 - back) % (SNIPPET_BEFORE + 1)];
            found = 1;
            break;
        }
    }
    if (!found) { /* the first words */
        start = 0;
        while (start < len && !store_i_word_char((unsigned char)text[start])) start++;
    }
    core_buf b = {0};
    int bad = start > 0 && core_buf_puts(&b, "\xe2\x80\xa6");
    size_t p = start, copied = start;
    int words = 0;
    while (!bad && p < len && words < SNIPPET_WORDS) {
        while (p < len && !store_i_word_char((unsigned char)text[p])) p++;
        if (p >= len) break;
        size_t w = p;
        while (p < len && store_i_word_char((unsigned char)text[p])) p++;
        words++;
        if (is_term(t, text + w, p - w)) {
            bad = core_buf_append(&b, text + copied, w - copied) || core_buf_puts(&b, STORE_HL_START) ||
                  core_buf_append(&b, text + w, p - w) || core_buf_puts(&b, STORE_HL_END);
            copied = p;
        }
    }
    if (!bad) bad = core_buf_append(&b, text + copied, p - copied);
    while (!bad && p < len && !store_i_word_char((unsigned char)text[p])) p++;
    if (!bad && p < len) bad = core_buf_puts(&b, "\xe2\x80\xa6");
    if (!bad && !b.data) bad = core_buf_puts(&b, "");
    if (bad) {
        core_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* Map a failed step of a search: the deadline or stop flag interrupts it. */
static int search_err(store *s, reader *r, core_err *err, int rc, int budget_ms) {
    if ((rc & 0xff) == SQLITE_INTERRUPT) {
        if (atomic_load(&s->stop_searches))
            return core_errf(err, CORE_ECANCEL, "store: search cancelled: the server is shutting down");
        return core_errf(err, CORE_ECANCEL, "store: search stopped after %d ms, its time limit: use fewer or "
                                            "rarer words", budget_ms);
    }
    return core_errf(err, (rc & 0xff) == SQLITE_NOMEM ? CORE_ENOMEM : CORE_EIO, "store: search: %s",
                     sqlite3_errmsg(r->db));
}

int store_search(store *s, const char *query, int limit, int offset, store_hit **out, int *n, core_err *err) {
    if (s->pg) return store_pg_search(s, query, limit, offset, out, n, err);
    *out = NULL;
    *n = 0;
    if (limit <= 0) limit = 20;
    if (offset < 0) offset = 0;
    int rc = store_i_check_text(s, "search query", query, STORE_MAX_QUERY, err);
    if (rc) return rc;
    store_terms t;
    store_i_split_terms(query ? query : "", &t);
    if (t.count == 0) return 0;
    core_buf fq = {0};
    if (fts_query(&t, &fq)) {
        core_buf_free(&fq);
        return core_errf(err, CORE_ENOMEM, "store: out of memory");
    }
    int budget = atomic_load(&s->search_ms);
    reader *rd = NULL;
    if ((rc = reader_get(s, core_now_ns() + (uint64_t)budget * 1000000u, &rd, err))) {
        core_buf_free(&fq);
        return rc;
    }
    store_hit *v = NULL;
    int cnt = 0, cap = 0, r;
    /* one read transaction: the hits and their text come from one snapshot */
    r = sqlite3_exec(rd->db, "BEGIN", NULL, NULL, NULL);
    if (r != SQLITE_OK) rc = search_err(s, rd, err, r, budget);
    /* Ranking scores every match: with a common word in a large history that
     * is the one cost that grows with the history.  It gets half the time;
     * past that, the newest matches are shown instead of the best. */
    uint64_t end = rd->deadline_ns;
    rd->deadline_ns = core_now_ns() + (uint64_t)budget * 500000u;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        sqlite3_stmt *q = pass ? rd->newest : rd->hits;
        sqlite3_bind_text(q, 1, fq.data, (int)fq.len, SQLITE_STATIC);
        sqlite3_bind_int(q, 2, limit);
        sqlite3_bind_int(q, 3, offset);
        while (!rc && (r = sqlite3_step(q)) == SQLITE_ROW) {
            if (cnt == cap) {
                int nc = cap ? cap * 2 : 16;
                store_hit *nv = realloc(v, (size_t)nc * sizeof *nv);
                if (!nv) { rc = core_errf(err, CORE_ENOMEM, "store: out of memory"); break; }
                v = nv;
                cap = nc;
            }
            store_hit *h = &v[cnt];
            memset(h, 0, sizeof *h);
            col_copy(q, 0, h->conv, sizeof h->conv);
            h->title = col_dup(q, 1);
            h->msg = sqlite3_column_int64(q, 2);
            col_copy(q, 3, h->role, sizeof h->role);
            h->created = sqlite3_column_int64(q, 4);
            cnt++;
            if (!h->title) rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
        }
        st_done(q);
        rd->deadline_ns = end;
        if (rc || r == SQLITE_DONE) break;
        if ((r & 0xff) != SQLITE_INTERRUPT || pass || atomic_load(&s->stop_searches) || core_now_ns() > end) {
            rc = search_err(s, rd, err, r, budget);
            break;
        }
        store_hits_free(v, cnt); /* ranking ran out of its half: start over, newest first */
        v = NULL;
        cnt = cap = 0;
    }
    /* snippets for the hits shown only, by store_i_make_snippet */
    for (int i = 0; i < cnt && !rc; i++) {
        sqlite3_stmt *c = rd->content;
        sqlite3_bind_int64(c, 1, v[i].msg);
        r = sqlite3_step(c);
        if (r == SQLITE_ROW) {
            const char *text = (const char *)sqlite3_column_text(c, 0);
            v[i].snippet = store_i_make_snippet(text ? text : "", (size_t)sqlite3_column_bytes(c, 0), &t);
            if (!v[i].snippet) rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
        } else if (r == SQLITE_DONE) {
            v[i].snippet = store_i_make_snippet("", 0, &t);
            if (!v[i].snippet) rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
        } else {
            rc = search_err(s, rd, err, r, budget);
        }
        st_done(c);
    }
    if (!sqlite3_get_autocommit(rd->db)) sqlite3_exec(rd->db, "COMMIT", NULL, NULL, NULL);
    reader_put(s, rd);
    core_buf_free(&fq);
    if (rc) {
        store_hits_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return 0;
}

/* ---- export / import --------------------------------------------------- */

const char *store_i_status_name(int st) {
    return st == STORE_MSG_STREAMING ? "streaming" : st == STORE_MSG_PARTIAL ? "partial" : "done";
}

/* json_object_set_new that remembers an allocation failure in *bad. */
static void jset(json_t *o, const char *k, json_t *v, int *bad) {
    if (!v || json_object_set_new(o, k, v)) *bad = 1;
}

int store_export_json(store *s, const char *conv, char **out, core_err *err) {
    *out = NULL;
    store_conv c;
    store_msg *m = NULL;
    int n = 0, bad = 0;
    int rc = store_get(s, conv, &c, err);
    if (rc) return rc;
    /* the conversation and its messages are read under one lock, but two
     * calls: a message appended in between only shows up in the export */
    rc = store_messages(s, conv, &m, &n, err);
    if (rc) {
        store_conv_clear(&c);
        return rc;
    }
    json_t *root = json_object(), *jc = json_object(), *jm = json_array();
    if (!root || !jc || !jm) bad = 1;
    if (!bad) {
        jset(root, "format", json_string("smolbot-conversation"), &bad);
        jset(root, "version", json_integer(1), &bad);
        jset(jc, "id", json_string(c.id), &bad);
        jset(jc, "title", json_string(c.title), &bad);
        jset(jc, "created", json_integer(c.created), &bad);
        jset(jc, "updated", json_integer(c.updated), &bad);
        jset(jc, "pinned_date", json_string(c.pinned_date), &bad);
        jset(jc, "thinking", json_boolean(c.thinking), &bad);
        jset(jc, "temperature", json_real(c.temperature), &bad);
        jset(jc, "top_p", json_real(c.top_p), &bad);
        jset(jc, "top_k", json_integer(c.top_k), &bad);
        jset(jc, "min_p", json_real(c.min_p), &bad);
        jset(jc, "max_tokens", json_integer(c.max_tokens), &bad);
        jset(jc, "system_prompt", json_string(c.system_prompt), &bad);
        jset(jc, "current_leaf", c.current_leaf ? json_integer(c.current_leaf) : json_null(), &bad);
        for (int i = 0; i < n && !bad; i++) {
            json_t *o = json_object();
            if (!o || json_array_append_new(jm, o)) { bad = 1; break; }
            jset(o, "id", json_integer(m[i].id), &bad);
            jset(o, "parent", m[i].parent ? json_integer(m[i].parent) : json_null(), &bad);
            jset(o, "role", json_string(m[i].role), &bad);
            jset(o, "content", json_string(m[i].content), &bad);
            jset(o, "reasoning", json_string(m[i].reasoning), &bad);
            jset(o, "created", json_integer(m[i].created), &bad);
            jset(o, "status", json_string(store_i_status_name(m[i].status)), &bad);
            jset(o, "finish_reason", json_string(m[i].finish), &bad);
            jset(o, "prompt_tokens", json_integer(m[i].prompt_tokens), &bad);
            jset(o, "completion_tokens", json_integer(m[i].completion_tokens), &bad);
            jset(o, "prefill_ms", json_real(m[i].prefill_ms), &bad);
            jset(o, "gen_ms", json_real(m[i].gen_ms), &bad);
            if (m[i].model[0]) jset(o, "model", json_string(m[i].model), &bad);
        }
        json_object_set(root, "conversation", jc);
        json_object_set(root, "messages", jm);
    }
    if (!bad) *out = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(jc);
    json_decref(jm);
    json_decref(root);
    store_conv_clear(&c);
    store_msgs_free(m, n);
    if (!*out) return core_errf(err, CORE_ENOMEM, "store: out of memory while exporting '%s'", conv);
    return 0;
}

static int md_section(core_buf *b, const store_msg *m) {
    static const char *const names[][2] = {
        {"system", "System"}, {"user", "User"}, {"assistant", "Assistant"}, {"tool", "Tool"}};
    const char *name = m->role;
    for (size_t i = 0; i < CORE_ARRAY_LEN(names); i++)
        if (strcmp(m->role, names[i][0]) == 0) name = names[i][1];
    int rc = core_buf_printf(b, "## %s\n\n", name);
    if (!rc && m->reasoning[0])
        rc = core_buf_printf(b, "<details><summary>Reasoning</summary>\n\n%s\n\n</details>\n\n", m->reasoning);
    if (!rc && m->content[0]) rc = core_buf_printf(b, "%s\n\n", m->content);
    if (!rc && m->status != STORE_MSG_DONE)
        rc = core_buf_printf(b, "*(incomplete: %s)*\n\n", m->finish[0] ? m->finish : store_i_status_name(m->status));
    return rc;
}

int store_export_md(store *s, const char *conv, char **out, core_err *err) {
    *out = NULL;
    store_conv c;
    store_msg *m = NULL;
    int n = 0;
    int rc = store_get(s, conv, &c, err);
    if (rc) return rc;
    rc = store_branch(s, conv, 0, &m, &n, err);
    if (rc) {
        store_conv_clear(&c);
        return rc;
    }
    core_buf b = {0};
    char when[64];
    time_t t = (time_t)(c.created / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", &tm);
    int bad = core_buf_printf(&b, "# %s\n\n", c.title[0] ? c.title : "Untitled conversation");
    if (!bad)
        bad = core_buf_printf(&b, "*smolbot conversation, created %s; thinking %s, temperature %g, top_p %g, "
                                  "top_k %d, min_p %g*\n\n",
                              when, c.thinking ? "on" : "off", c.temperature, c.top_p, c.top_k, c.min_p);
    if (!bad && c.system_prompt[0]) bad = core_buf_printf(&b, "## System prompt\n\n%s\n\n", c.system_prompt);
    for (int i = 0; i < n && !bad; i++) bad = md_section(&b, &m[i]);
    store_conv_clear(&c);
    store_msgs_free(m, n);
    if (bad) {
        core_buf_free(&b);
        return core_errf(err, CORE_ENOMEM, "store: out of memory while exporting '%s'", conv);
    }
    *out = b.data;
    return 0;
}

/* Import helpers: fetch typed members, with a message naming the field. */
static int j_str(json_t *o, const char *k, const char **v, int required, core_err *err) {
    json_t *x = json_object_get(o, k);
    if (!x && !required) return 0;
    if (!json_is_string(x)) return core_errf(err, CORE_EFORMAT, "store: import: '%s' must be a string", k);
    if (strlen(json_string_value(x)) != json_string_length(x))
        return core_errf(err, CORE_EINVAL, "store: import: '%s' contains a NUL character", k);
    *v = json_string_value(x);
    return 0;
}

static int j_int(json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *v, int required, core_err *err) {
    json_t *x = json_object_get(o, k);
    if (!x && !required) return 0;
    if (!json_is_integer(x)) return core_errf(err, CORE_EFORMAT, "store: import: '%s' must be an integer", k);
    json_int_t i = json_integer_value(x);
    if (i < lo || i > hi) return core_errf(err, CORE_ERANGE, "store: import: '%s' = %lld out of range", k, (long long)i);
    *v = i;
    return 0;
}

static int j_num(json_t *o, const char *k, double *v, core_err *err) {
    json_t *x = json_object_get(o, k);
    if (!x) return 0;
    if (!json_is_number(x)) return core_errf(err, CORE_EFORMAT, "store: import: '%s' must be a number", k);
    *v = json_number_value(x);
    return 0;
}

/* Binary search of old id among the first n (strictly increasing) ids. */
int64_t store_i_map_id(const int64_t *old, const int64_t *nw, int n, int64_t id) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (old[mid] == id) return nw[mid];
        if (old[mid] < id) lo = mid + 1;
        else hi = mid - 1;
    }
    return 0;
}

int store_i_import_conv(json_t *jc, store_conv *c, int64_t *created, int64_t *updated, core_err *err) {
    store_conv_defaults(c);
    const char *title = "", *pinned = "", *sys = "";
    int64_t think = 1, topk = c->top_k, maxt = 0;
    int64_t t = store_i_now_ms();
    *created = *updated = t;
    int rc = j_str(jc, "title", &title, 0, err);
    if (!rc) rc = j_str(jc, "pinned_date", &pinned, 0, err);
    if (!rc) rc = j_str(jc, "system_prompt", &sys, 0, err);
    if (!rc) rc = j_int(jc, "created", 0, INT64_MAX, created, 0, err);
    if (!rc) rc = j_int(jc, "updated", 0, INT64_MAX, updated, 0, err);
    json_t *th = json_object_get(jc, "thinking");
    if (!rc && th) {
        if (json_is_boolean(th)) think = json_is_true(th);
        else rc = j_int(jc, "thinking", 0, 1, &think, 1, err);
    }
    if (!rc) rc = j_num(jc, "temperature", &c->temperature, err);
    if (!rc) rc = j_num(jc, "top_p", &c->top_p, err);
    if (!rc) rc = j_num(jc, "min_p", &c->min_p, err);
    if (!rc) rc = j_int(jc, "top_k", 0, INT32_MAX, &topk, 0, err);
    if (!rc) rc = j_int(jc, "max_tokens", 0, INT32_MAX, &maxt, 0, err);
    c->thinking = (int)think;
    c->top_k = (int)topk;
    c->max_tokens = (int)maxt;
    c->title = (char *)title; /* borrowed from the JSON tree for the insert */
    c->pinned_date = (char *)pinned;
    c->system_prompt = (char *)sys;
    return rc;
}

int store_i_import_msg(store *s, json_t *o, int i, store_msg *m, int64_t *old_id, int64_t *old_parent,
                      int64_t *created, core_err *err) {
    memset(m, 0, sizeof *m);
    if (!json_is_object(o)) return core_errf(err, CORE_EFORMAT, "store: import: message %d is not an object", i);
    const char *role = NULL, *content = "", *reasoning = "", *status = "done", *finish = "", *model = "";
    int64_t pt = 0, ct = 0;
    *old_parent = 0;
    *created = store_i_now_ms();
    int rc = j_int(o, "id", 1, INT64_MAX, old_id, 1, err);
    json_t *p = json_object_get(o, "parent");
    if (!rc && p && !json_is_null(p)) rc = j_int(o, "parent", 1, INT64_MAX, old_parent, 1, err);
    if (!rc) rc = j_str(o, "role", &role, 1, err);
    if (!rc) rc = j_str(o, "content", &content, 0, err);
    if (!rc) rc = j_str(o, "reasoning", &reasoning, 0, err);
    if (!rc) rc = j_str(o, "status", &status, 0, err);
    if (!rc) rc = j_str(o, "finish_reason", &finish, 0, err);
    if (!rc) rc = j_str(o, "model", &model, 0, err);
    if (!rc) rc = j_int(o, "created", 0, INT64_MAX, created, 0, err);
    if (!rc) rc = j_int(o, "prompt_tokens", 0, INT32_MAX, &pt, 0, err);
    if (!rc) rc = j_int(o, "completion_tokens", 0, INT32_MAX, &ct, 0, err);
    if (!rc) rc = j_num(o, "prefill_ms", &m->prefill_ms, err);
    if (!rc) rc = j_num(o, "gen_ms", &m->gen_ms, err);
    if (rc) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err ? err->msg : "");
        return core_errf(err, rc, "%s (message %d)", why, i);
    }
    if (strlen(role) >= sizeof m->role || strlen(finish) >= sizeof m->finish || strlen(model) >= sizeof m->model)
        return core_errf(err, CORE_EINVAL, "store: import: bad role, finish reason or model in message %d", i);
    snprintf(m->role, sizeof m->role, "%s", role);
    snprintf(m->model, sizeof m->model, "%s", model);
    snprintf(m->finish, sizeof m->finish, "%s", finish);
    if (strcmp(status, "done") == 0) m->status = STORE_MSG_DONE;
    else if (strcmp(status, "streaming") == 0) m->status = STORE_MSG_STREAMING;
    else if (strcmp(status, "partial") == 0) m->status = STORE_MSG_PARTIAL;
    else return core_errf(err, CORE_EINVAL, "store: import: unknown status '%.20s' in message %d", status, i);
    m->content = (char *)content; /* borrowed from the JSON tree */
    m->reasoning = (char *)reasoning;
    m->prompt_tokens = (int)pt;
    m->completion_tokens = (int)ct;
    return store_i_check_msg(s, m, 1, err);
}

int store_import_json(store *s, const char *json, size_t len, char id_out[STORE_ID_LEN + 1], core_err *err) {
    id_out[0] = 0;
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return core_errf(err, CORE_EFORMAT, "store: import: line %d: %s", je.line, je.text);
    int rc = 0, nm = 0;
    int64_t *old = NULL, *nw = NULL;
    const char *fmt = NULL;
    int64_t ver = 0;
    json_t *jc = json_object_get(root, "conversation"), *jm = json_object_get(root, "messages");
    if (!json_is_object(root) || j_str(root, "format", &fmt, 1, NULL) || strcmp(fmt, "smolbot-conversation") != 0)
        rc = core_errf(err, CORE_EFORMAT, "store: import: not a smolbot conversation export");
    else if ((rc = j_int(root, "version", 1, INT32_MAX, &ver, 1, err)))
        ;
    else if (ver != 1)
        rc = core_errf(err, CORE_EUNSUP, "store: import: export version %lld is newer than this smolbot's 1",
                       (long long)ver);
    else if (!json_is_object(jc) || !json_is_array(jm))
        rc = core_errf(err, CORE_EFORMAT, "store: import: 'conversation' object or 'messages' array missing");
    if (rc) goto done;
    if (s->pg) {
        rc = store_pg_import(s, root, jc, jm, id_out, err);
        goto done;
    }
    nm = (int)json_array_size(jm);
    if (json_array_size(jm) > 10000000) {
        rc = core_errf(err, CORE_ERANGE, "store: import: too many messages");
        goto done;
    }
    old = malloc(((size_t)nm + 1) * sizeof *old);
    nw = malloc(((size_t)nm + 1) * sizeof *nw);
    if (!old || !nw) {
        rc = core_errf(err, CORE_ENOMEM, "store: out of memory");
        goto done;
    }
    store_conv c;
    int64_t created, updated, leaf_old = 0;
    rc = store_i_import_conv(jc, &c, &created, &updated, err);
    json_t *jl = json_object_get(jc, "current_leaf");
    if (!rc && jl && !json_is_null(jl)) rc = j_int(jc, "current_leaf", 1, INT64_MAX, &leaf_old, 1, err);
    lock(s);
    if (!rc) rc = store_i_check_settings(s, &c, err);
    if (!rc) rc = tx_begin(s, err);
    if (rc) {
        unlock(s);
        goto done;
    }
    rc = conv_insert(s, &c, created, updated, id_out, err);
    for (int i = 0; i < nm && !rc; i++) {
        store_msg m;
        int64_t parent_old, mcreated, parent = 0;
        rc = store_i_import_msg(s, json_array_get(jm, (size_t)i), i, &m, &old[i], &parent_old, &mcreated, err);
        if (!rc && i > 0 && old[i] <= old[i - 1])
            rc = core_errf(err, CORE_EFORMAT, "store: import: message ids must increase (message %d)", i);
        if (!rc && parent_old && !(parent = store_i_map_id(old, nw, i, parent_old)))
            rc = core_errf(err, CORE_EFORMAT, "store: import: message %d has parent %lld, not an earlier message",
                           i, (long long)parent_old);
        if (!rc) rc = msg_insert(s, id_out, &m, parent, mcreated, &nw[i], err);
    }
    if (!rc && leaf_old) {
        int64_t leaf = store_i_map_id(old, nw, nm, leaf_old);
        if (!leaf) rc = core_errf(err, CORE_EFORMAT, "store: import: current_leaf %lld is not a message", (long long)leaf_old);
        sqlite3_stmt *q = st(s, ST_CONV_LEAF);
        sqlite3_bind_text(q, 1, id_out, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, leaf);
        sqlite3_bind_int64(q, 3, updated);
        if (!rc) rc = st_exec(s, q, "set current leaf", err);
        else st_done(q);
    }
    rc = tx_end(s, rc, err);
    unlock(s);
done:
    if (rc) id_out[0] = 0;
    free(old);
    free(nw);
    json_decref(root);
    return rc;
}
