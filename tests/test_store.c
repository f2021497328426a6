/* test_store.c -- the conversation store on real database files in a temp dir:
 * migrations from an empty file, CRUD, branches, streaming, search, export /
 * import round trip, bad input, a SIGKILL in the middle of a stream, and
 * parallel writers (shared store and one connection per thread).
 *
 * Then the backend-agnostic ones again on PostgreSQL (pg_test_*), on a
 * server of our own that tests/pg_util.sh starts in a temp dir (as
 * "nobody" when we run as root) and stops at exit; plus what only a shared
 * server has: two replicas' streams, replicas migrating together, the
 * server going away and coming back.  Skipped, saying why, when no server
 * can be started here.
 *
 * sqlite3.h is included here only to look behind the store's back
 * (user_version, journal mode); the store itself is used through store.h.
 */
#include "t.h"
#include "core/core.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

static const char *db_path(const char *name) {
    static char buf[8][512];
    static int slot;
    char *out = buf[slot++ % 8];
    snprintf(out, sizeof buf[0], "%s/%s", t_tmpdir(), name);
    return out;
}

/* The PostgreSQL run: the backend-agnostic tests again, against a server
 * tests/pg_util.sh starts for this process (NULL: the SQLite run). */
static char g_pg_url[256];
static int g_pg;

/* What store_open gets for the database called name. */
static const char *target(const char *name) { return g_pg ? g_pg_url : db_path(name); }

/* SQL straight to the test server, behind the store's back. */
static int pg_sql(const char *sql) {
    PGconn *c = PQconnectdb(g_pg_url);
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) fprintf(stderr, "  pg_sql: %s: %s", sql, PQerrorMessage(c));
    int v = ok && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) ? atoi(PQgetvalue(r, 0, 0)) : ok ? 0 : -1;
    PQclear(r);
    PQfinish(c);
    return v;
}

static store *open_fresh(const char *name) {
    const char *p = target(name);
    if (g_pg) pg_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public");
    else unlink(p);
    store *s = NULL;
    core_err e = {0};
    int rc = store_open(&s, p, &e);
    CHECK_MSG(rc == 0 && s, "open %s: %s", p, e.msg);
    return s;
}

static store_msg msg(const char *role, int64_t parent, const char *content) {
    store_msg m;
    memset(&m, 0, sizeof m);
    snprintf(m.role, sizeof m.role, "%s", role);
    m.parent = parent;
    m.content = (char *)content;
    return m;
}

static int64_t append(store *s, const char *conv, const char *role, int64_t parent, const char *content) {
    store_msg m = msg(role, parent, content);
    int64_t id = 0;
    core_err e = {0};
    int rc = store_append(s, conv, &m, &id, &e);
    CHECK_MSG(rc == 0 && id > 0, "append: %s", e.msg);
    return id;
}

static int sql_int(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    int v = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK) {
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
            v = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
    }
    sqlite3_close(db);
    return v;
}

/* ---- open, paths, migrations ------------------------------------------- */

static void test_default_path(void) {
    char buf[512];
    const char *oldx = getenv("XDG_DATA_HOME"), *oldh = getenv("HOME");
    char *sx = oldx ? strdup(oldx) : NULL, *sh = oldh ? strdup(oldh) : NULL;
    setenv("XDG_DATA_HOME", "/x/data", 1);
    CHECK_EQ_STR(store_default_path(buf, sizeof buf), "/x/data/smolbot/smolbot.db");
    CHECK(store_default_path(buf, 10) == NULL);
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/u", 1);
    CHECK_EQ_STR(store_default_path(buf, sizeof buf), "/home/u/.local/share/smolbot/smolbot.db");
    setenv("XDG_DATA_HOME", "relative/ignored", 1);
    CHECK_EQ_STR(store_default_path(buf, sizeof buf), "/home/u/.local/share/smolbot/smolbot.db");
    unsetenv("HOME");
    unsetenv("XDG_DATA_HOME");
    CHECK(store_default_path(buf, sizeof buf) == NULL);
    /* store_open(NULL) creates the directories below XDG_DATA_HOME */
    char xdg[512];
    snprintf(xdg, sizeof xdg, "%s/xdg", t_tmpdir());
    setenv("XDG_DATA_HOME", xdg, 1);
    store *s = NULL;
    core_err e = {0};
    CHECK_MSG(store_open(&s, NULL, &e) == 0, "%s", e.msg);
    store_close(s);
    struct stat stt;
    char expect[600];
    snprintf(expect, sizeof expect, "%s/smolbot/smolbot.db", xdg);
    CHECK(stat(expect, &stt) == 0);
    if (sx) setenv("XDG_DATA_HOME", sx, 1); else unsetenv("XDG_DATA_HOME");
    if (sh) setenv("HOME", sh, 1);
    free(sx);
    free(sh);
}

static void test_migrate_empty_file(void) {
    const char *p = db_path("empty.db");
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (f) fclose(f);
    store *s = NULL;
    core_err e = {0};
    CHECK_MSG(store_open(&s, p, &e) == 0, "%s", e.msg);
    char id[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, id, &e) == 0);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
    CHECK_EQ_INT(sql_int(p, "PRAGMA user_version"), 2);
    CHECK_EQ_INT(sql_int(p, "SELECT count(*) FROM conversations"), 1);
    CHECK_EQ_INT(sql_int(p, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
    /* reopening an up-to-date file changes nothing */
    CHECK_MSG(store_open(&s, p, &e) == 0, "%s", e.msg);
    store_conv c;
    CHECK(store_get(s, id, &c, &e) == 0);
    store_conv_clear(&c);
    store_close(s);
    CHECK_EQ_INT(sql_int(p, "PRAGMA user_version"), 2);
    /* in memory works too */
    CHECK(store_open(&s, ":memory:", &e) == 0);
    CHECK(store_create(s, NULL, id, &e) == 0);
    store_close(s);
}

static void test_open_errors(void) {
    store *s = (store *)1;
    core_err e = {0};
    const char *p = db_path("notadb.db");
    FILE *f = fopen(p, "w");
    if (f) {
        for (int i = 0; i < 200; i++) fputs("this is not a database file. ", f);
        fclose(f);
    }
    CHECK_EQ_INT(store_open(&s, p, &e), CORE_EFORMAT);
    CHECK(s == NULL);
    CHECK(strstr(e.msg, "not a SQLite database") != NULL);
    /* a file from a newer smolbot is refused, not downgraded */
    const char *pn = db_path("newer.db");
    unlink(pn);
    sqlite3 *db;
    CHECK(sqlite3_open(pn, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    CHECK_EQ_INT(store_open(&s, pn, &e), CORE_EUNSUP);
    CHECK(strstr(e.msg, "99") != NULL);
    /* missing directory */
    CHECK(store_open(&s, "/nonexistent/dir/x.db", &e) == CORE_EIO);
    CHECK(strstr(e.msg, "/nonexistent/dir/x.db") != NULL);
}

/* ---- conversations ----------------------------------------------------- */

static void test_crud(void) {
    store *s = open_fresh("crud.db");
    if (!s) return;
    core_err e = {0};
    char a[STORE_ID_LEN + 1], b[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, a, &e) == 0);
    CHECK_EQ_INT(strlen(a), STORE_ID_LEN);
    store_conv init;
    store_conv_defaults(&init);
    init.thinking = 0;
    init.temperature = 0.25;
    init.system_prompt = "Be brief.";
    init.pinned_date = "26 November 2026";
    usleep(2000);
    CHECK(store_create(s, &init, b, &e) == 0);
    CHECK(strcmp(a, b) != 0);
    store_conv c;
    CHECK(store_get(s, a, &c, &e) == 0);
    CHECK_EQ_STR(c.title, "");
    CHECK_EQ_INT(c.thinking, 1);
    CHECK_NEAR(c.temperature, 0.6, 0);
    CHECK_EQ_INT(c.top_k, 20);
    CHECK_EQ_INT(strlen(c.pinned_date) >= 10, 1); /* "DD Month YYYY" of today */
    CHECK(c.pinned_date[2] == ' ');
    CHECK_EQ_INT(c.current_leaf, 0);
    CHECK_EQ_INT(c.n_messages, 0);
    store_conv_clear(&c);
    CHECK(store_get(s, b, &c, &e) == 0);
    CHECK_EQ_INT(c.thinking, 0);
    CHECK_NEAR(c.temperature, 0.25, 0);
    CHECK_EQ_STR(c.system_prompt, "Be brief.");
    CHECK_EQ_STR(c.pinned_date, "26 November 2026");
    store_conv_clear(&c);

    /* list: most recent first; appending moves a conversation to the top */
    store_conv *l;
    int n;
    CHECK(store_list(s, 10, 0, &l, &n, &e) == 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) CHECK_EQ_STR(l[0].id, b);
    store_conv_free_list(l, n);
    usleep(2000);
    append(s, a, "user", 0, "  \n  What is the capital of France?\nAnswer in one word.");
    CHECK(store_list(s, 1, 0, &l, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        CHECK_EQ_STR(l[0].id, a);
        CHECK_EQ_STR(l[0].title, "What is the capital of France?"); /* first user line */
        CHECK_EQ_INT(l[0].n_messages, 1);
    }
    store_conv_free_list(l, n);
    CHECK(store_list(s, 1, 1, &l, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1) CHECK_EQ_STR(l[0].id, b);
    store_conv_free_list(l, n);
    CHECK(store_list(s, 10, 2, &l, &n, &e) == 0);
    CHECK_EQ_INT(n, 0);
    CHECK(l == NULL);

    /* rename wins over the first-line title, and sticks */
    CHECK(store_rename(s, a, "Capitals", &e) == 0);
    append(s, a, "user", 0, "another root question");
    CHECK(store_get(s, a, &c, &e) == 0);
    CHECK_EQ_STR(c.title, "Capitals");
    store_conv_clear(&c);
    /* long first line: cut at 80 bytes on a character boundary, with an ellipsis */
    char long_line[300] = "";
    for (int i = 0; i < 40; i++) strcat(long_line, "\xc3\xa9t\xc3\xa9 "); /* "été " */
    char cid[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, cid, &e) == 0);
    append(s, cid, "user", 0, long_line);
    CHECK(store_get(s, cid, &c, &e) == 0);
    CHECK(strlen(c.title) <= 83);
    CHECK(core_utf8_valid(c.title, strlen(c.title)));
    CHECK(strstr(c.title, "\xe2\x80\xa6") != NULL);
    store_conv_clear(&c);

    /* settings */
    store_conv set;
    store_conv_defaults(&set);
    set.thinking = 0;
    set.temperature = 1.5;
    set.top_p = 0.5;
    set.top_k = 7;
    set.min_p = 0.05;
    set.max_tokens = 321;
    set.system_prompt = "You are a pirate.";
    CHECK(store_set_settings(s, a, &set, &e) == 0);
    CHECK(store_get(s, a, &c, &e) == 0);
    CHECK_EQ_INT(c.thinking, 0);
    CHECK_NEAR(c.temperature, 1.5, 0);
    CHECK_NEAR(c.top_p, 0.5, 0);
    CHECK_EQ_INT(c.top_k, 7);
    CHECK_NEAR(c.min_p, 0.05, 0);
    CHECK_EQ_INT(c.max_tokens, 321);
    CHECK_EQ_STR(c.system_prompt, "You are a pirate.");
    CHECK(c.pinned_date[0] != 0); /* NULL pinned_date left it unchanged */
    store_conv_clear(&c);
    set.temperature = -1;
    CHECK_EQ_INT(store_set_settings(s, a, &set, &e), CORE_ERANGE);
    set.temperature = NAN;
    CHECK_EQ_INT(store_set_settings(s, a, &set, &e), CORE_ERANGE);
    set.temperature = 1;
    set.thinking = 2;
    CHECK_EQ_INT(store_set_settings(s, a, &set, &e), CORE_EINVAL);
    set.thinking = 1;

    /* delete takes the messages with it */
    CHECK(store_delete(s, a, &e) == 0);
    CHECK_EQ_INT(store_get(s, a, &c, &e), CORE_ENOTFOUND);
    CHECK_EQ_INT(store_delete(s, a, &e), CORE_ENOTFOUND);
    CHECK_EQ_INT(store_rename(s, a, "x", &e), CORE_ENOTFOUND);
    CHECK_EQ_INT(store_set_settings(s, a, &set, &e), CORE_ENOTFOUND);
    store_msg m = msg("user", 0, "hi");
    CHECK_EQ_INT(store_append(s, a, &m, NULL, &e), CORE_ENOTFOUND);
    /* ids that cannot be ours are "not found", whatever they contain */
    CHECK_EQ_INT(store_get(s, "'; DROP TABLE conversations; --", &c, &e), CORE_ENOTFOUND);
    CHECK_EQ_INT(store_get(s, "0123456789ABCDEF", &c, &e), CORE_ENOTFOUND);
    CHECK_EQ_INT(store_get(s, NULL, &c, &e), CORE_EINVAL);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
}

/* ---- branches and streaming ------------------------------------------ */

static void test_branches(void) {
    store *s = open_fresh("branches.db");
    if (!s) return;
    core_err e = {0};
    char id[STORE_ID_LEN + 1], other[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, id, &e) == 0);
    CHECK(store_create(s, NULL, other, &e) == 0);
    store_msg *b;
    int n;
    CHECK(store_branch(s, id, 0, &b, &n, &e) == 0);
    CHECK_EQ_INT(n, 0);

    int64_t u1 = append(s, id, "user", 0, "Hello");
    int64_t a1 = append(s, id, "assistant", u1, "Hi there");
    int64_t u2 = append(s, id, "user", a1, "Tell me a joke");
    int64_t a2 = append(s, id, "assistant", u2, "Why did the chicken...");
    /* regenerate a2: a sibling under u2 */
    int64_t a2b = append(s, id, "assistant", u2, "Knock knock");
    /* edit u2: a sibling under a1, then its answer */
    int64_t u2b = append(s, id, "user", a1, "Tell me a fact");
    int64_t a3 = append(s, id, "assistant", u2b, "Octopuses have three hearts");

    CHECK(store_branch(s, id, 0, &b, &n, &e) == 0);
    CHECK_EQ_INT(n, 4);
    if (n == 4) {
        CHECK_EQ_INT(b[0].id, u1);
        CHECK_EQ_INT(b[0].parent, 0);
        CHECK_EQ_INT(b[1].id, a1);
        CHECK_EQ_INT(b[2].id, u2b);
        CHECK_EQ_INT(b[2].sibling_index, 1);
        CHECK_EQ_INT(b[2].sibling_count, 2);
        CHECK_EQ_INT(b[3].id, a3);
        CHECK_EQ_INT(b[3].sibling_count, 1);
        CHECK_EQ_STR(b[3].content, "Octopuses have three hearts");
        CHECK_EQ_STR(b[3].role, "assistant");
        CHECK_EQ_STR(b[3].conv, id);
        CHECK(b[3].created > 0);
    }
    store_msgs_free(b, n);

    /* switch to the first edit: descends to its newest leaf (a2b, the regenerated one) */
    int64_t leaf = 0;
    CHECK(store_set_leaf(s, id, u2, &leaf, &e) == 0);
    CHECK_EQ_INT(leaf, a2b);
    CHECK(store_branch(s, id, 0, &b, &n, &e) == 0);
    CHECK_EQ_INT(n, 4);
    if (n == 4) {
        CHECK_EQ_INT(b[2].id, u2);
        CHECK_EQ_INT(b[2].sibling_index, 0);
        CHECK_EQ_INT(b[3].id, a2b);
        CHECK_EQ_INT(b[3].sibling_index, 1);
        CHECK_EQ_INT(b[3].sibling_count, 2);
    }
    store_msgs_free(b, n);
    /* an explicit leaf, without moving the current one */
    CHECK(store_branch(s, id, a2, &b, &n, &e) == 0);
    CHECK_EQ_INT(n, 4);
    if (n == 4) CHECK_EQ_INT(b[3].id, a2);
    store_msgs_free(b, n);
    store_conv c;
    CHECK(store_get(s, id, &c, &e) == 0);
    CHECK_EQ_INT(c.current_leaf, a2b);
    CHECK_EQ_INT(c.n_messages, 7);
    store_conv_clear(&c);
    /* a second root (edit of the first message) */
    int64_t u1b = append(s, id, "user", 0, "Bonjour");
    CHECK(store_branch(s, id, 0, &b, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        CHECK_EQ_INT(b[0].id, u1b);
        CHECK_EQ_INT(b[0].sibling_index, 1);
        CHECK_EQ_INT(b[0].sibling_count, 2);
    }
    store_msgs_free(b, n);
    /* all messages, parents first */
    CHECK(store_messages(s, id, &b, &n, &e) == 0);
    CHECK_EQ_INT(n, 8);
    for (int i = 1; i < n; i++) CHECK(b[i].id > b[i - 1].id);
    store_msgs_free(b, n);

    /* cross-conversation parents and leaves are refused */
    store_msg m = msg("user", a1, "sneaky");
    CHECK_EQ_INT(store_append(s, other, &m, NULL, &e), CORE_EINVAL);
    m.parent = 999999;
    CHECK_EQ_INT(store_append(s, id, &m, NULL, &e), CORE_ENOTFOUND);
    CHECK_EQ_INT(store_branch(s, other, a1, &b, &n, &e), CORE_ENOTFOUND);
    CHECK_EQ_INT(store_set_leaf(s, other, a1, NULL, &e), CORE_ENOTFOUND);
    CHECK(store_get(s, other, &c, &e) == 0);
    CHECK_EQ_INT(c.n_messages, 0);
    store_conv_clear(&c);
    /* deleting the conversation deletes the tree; the other one is untouched */
    CHECK(store_delete(s, id, &e) == 0);
    CHECK_EQ_INT(store_get_msg(s, a1, &m, &e), CORE_ENOTFOUND);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
}

static void test_streaming(void) {
    store *s = open_fresh("stream.db");
    if (!s) return;
    core_err e = {0};
    char id[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, id, &e) == 0);
    int64_t u = append(s, id, "user", 0, "Write a haiku about zebras");
    store_msg m = msg("assistant", u, "");
    m.status = STORE_MSG_STREAMING;
    int64_t a;
    CHECK(store_append(s, id, &m, &a, &e) == 0);
    m.content = "Striped";
    m.reasoning = "The user wants a haiku.";
    CHECK(store_update(s, a, &m, &e) == 0);
    /* streaming text is not indexed yet */
    store_hit *h;
    int n;
    CHECK(store_search(s, "striped", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 0);
    store_hits_free(h, n);
    m.content = "Striped horses graze";
    m.status = STORE_MSG_DONE;
    snprintf(m.finish, sizeof m.finish, "stop");
    m.prompt_tokens = 12;
    m.completion_tokens = 34;
    m.prefill_ms = 56.5;
    m.gen_ms = 789.25;
    CHECK(store_update(s, a, &m, &e) == 0);
    store_msg g;
    CHECK(store_get_msg(s, a, &g, &e) == 0);
    CHECK_EQ_STR(g.content, "Striped horses graze");
    CHECK_EQ_STR(g.reasoning, "The user wants a haiku.");
    CHECK_EQ_STR(g.finish, "stop");
    CHECK_EQ_INT(g.status, STORE_MSG_DONE);
    CHECK_EQ_INT(g.prompt_tokens, 12);
    CHECK_EQ_INT(g.completion_tokens, 34);
    CHECK_NEAR(g.prefill_ms, 56.5, 0);
    CHECK_NEAR(g.gen_ms, 789.25, 0);
    CHECK_EQ_INT(g.parent, u);
    store_msg_clear(&g);
    CHECK(store_search(s, "striped", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    store_hits_free(h, n);
    /* a cancelled answer keeps its text, marked partial */
    m = msg("assistant", u, "Zebra");
    m.status = STORE_MSG_STREAMING;
    int64_t a2;
    CHECK(store_append(s, id, &m, &a2, &e) == 0);
    m.content = "Zebra in the";
    m.status = STORE_MSG_PARTIAL;
    snprintf(m.finish, sizeof m.finish, "cancelled");
    CHECK(store_update(s, a2, &m, &e) == 0);
    CHECK(store_get_msg(s, a2, &g, &e) == 0);
    CHECK_EQ_INT(g.status, STORE_MSG_PARTIAL);
    CHECK_EQ_STR(g.finish, "cancelled");
    CHECK_EQ_STR(g.content, "Zebra in the");
    store_msg_clear(&g);
    /* bad updates */
    snprintf(m.finish, sizeof m.finish, "bored");
    CHECK_EQ_INT(store_update(s, a2, &m, &e), CORE_EINVAL);
    snprintf(m.finish, sizeof m.finish, "stop");
    m.status = 7;
    CHECK_EQ_INT(store_update(s, a2, &m, &e), CORE_EINVAL);
    m.status = STORE_MSG_DONE;
    m.gen_ms = -1;
    CHECK_EQ_INT(store_update(s, a2, &m, &e), CORE_EINVAL);
    m.gen_ms = 0;
    CHECK_EQ_INT(store_update(s, 123456, &m, &e), CORE_ENOTFOUND);
    m = msg("wizard", u, "x");
    CHECK_EQ_INT(store_append(s, id, &m, NULL, &e), CORE_EINVAL);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
    /* a clean reopen changes nothing that finished */
    CHECK(store_open(&s, target("stream.db"), &e) == 0);
    CHECK(store_get_msg(s, a2, &g, &e) == 0);
    CHECK_EQ_STR(g.finish, "cancelled");
    store_msg_clear(&g);
    store_close(s);
}

/* ---- search ------------------------------------------------------------ */

static void test_search(void) {
    store *s = open_fresh("search.db");
    if (!s) return;
    core_err e = {0};
    char a[STORE_ID_LEN + 1], b[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, a, &e) == 0);
    CHECK(store_create(s, NULL, b, &e) == 0);
    CHECK(store_rename(s, a, "Travel", &e) == 0);
    int64_t u = append(s, a, "user", 0, "Where can I find the best caf\xc3\xa9 in Paris?");
    append(s, a, "assistant", u, "Paris has many cafes; try one near the Seine. Paris, Paris!");
    append(s, b, "user", 0, "How do I sort an array in C? Use qsort AND compare \"carefully\" *now*");
    store_hit *h;
    int n;
    CHECK(store_search(s, "paris", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        /* the answer mentions Paris four times: it ranks first */
        CHECK_EQ_STR(h[0].role, "assistant");
        CHECK_EQ_STR(h[0].conv, a);
        CHECK_EQ_STR(h[0].title, "Travel");
        CHECK(strstr(h[0].snippet, STORE_HL_START "Paris" STORE_HL_END) != NULL);
        CHECK(h[0].msg > 0);
    }
    store_hits_free(h, n);
    /* paging */
    CHECK(store_search(s, "paris", 1, 1, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1) CHECK_EQ_STR(h[0].role, "user");
    store_hits_free(h, n);
    /* diacritics folded: "cafe" finds "café" and "cafes" does not */
    CHECK(store_search(s, "cafe", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    store_hits_free(h, n);
    /* every word must match */
    CHECK(store_search(s, "paris seine", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    store_hits_free(h, n);
    /* FTS5 syntax from users is plain text: no errors, sensible matches */
    const char *weird[] = {"AND", "\"", "*", "NEAR(", "qsort AND", "\"carefully\"", "content:qsort",
                           "-qsort", "qsort OR", "(qsort", "^qsort", "' OR 1=1 --", "a\"b\"\"c", "\xc3\xa9", "{}"};
    for (size_t i = 0; i < CORE_ARRAY_LEN(weird); i++) {
        int rc = store_search(s, weird[i], 10, 0, &h, &n, &e);
        CHECK_MSG(rc == 0, "query %s: %s", weird[i], e.msg);
        if (rc == 0) store_hits_free(h, n);
    }
    CHECK(store_search(s, "qsort AND", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1); /* "AND" is a word of that message */
    store_hits_free(h, n);
    CHECK(store_search(s, "content:qsort", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 0);
    store_hits_free(h, n);
    CHECK(store_search(s, "   ", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 0);
    CHECK(h == NULL);
    CHECK_EQ_INT(store_search(s, "\xff", 10, 0, &h, &n, &e), CORE_EINVAL);
    /* deleting a conversation removes its hits and keeps the index consistent */
    CHECK(store_delete(s, a, &e) == 0);
    CHECK(store_search(s, "paris", 10, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 0);
    store_hits_free(h, n);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
}

/* ---- search cost ------------------------------------------------------- */

static const char *const common[] = {"the", "a", "of", "to", "and", "in", "is", "it",
                                     "you", "that", "for", "on", "with", "as", "be", "at"};

/* Text of about `bytes` bytes: the common words cycled (`distinct` of them),
 * the worst case for ranking and for FTS5's snippet(): every word matches
 * the query, thousands of times. */
static char *words_text(size_t bytes, int distinct, unsigned seed) {
    char *t = malloc(bytes + 16);
    size_t n = 0;
    for (unsigned i = seed; n + 6 < bytes; i++) {
        const char *w = common[i % (unsigned)distinct];
        size_t k = strlen(w);
        memcpy(t + n, w, k);
        n += k;
        t[n++] = (i % 7 == 3) ? ',' : ' ';
    }
    t[n] = 0;
    return t;
}

/* A query of about `bytes` bytes: word(i) joined by sep. */
static char *query_of(size_t bytes, const char *sep, int distinct) {
    char *q = malloc(bytes + 16);
    size_t n = 0;
    for (int i = 0;; i++) {
        const char *w = common[i % distinct];
        size_t k = strlen(w), s = strlen(sep);
        if (n + k + s > bytes) break;
        memcpy(q + n, w, k);
        n += k;
        memcpy(q + n, sep, s);
        n += s;
    }
    q[n] = 0;
    return q;
}

static double timed_search(store *s, const char *q, int limit, int *n_out, int *rc_out, core_err *e) {
    store_hit *h = NULL;
    int n = 0;
    double t0 = t_now();
    int rc = store_search(s, q, limit, 0, &h, &n, e);
    double dt = t_now() - t0;
    if (rc == 0) store_hits_free(h, n);
    *n_out = rc ? 0 : n;
    *rc_out = rc;
    return dt;
}

/* Fill s with n_msgs messages of generated worst-case text through imports
 * of 1000 messages each (one transaction each): mostly ~2 KB of the common
 * words, every 500th a long one (64 KiB) of one word repeated. */
static int fill_history(store *s, int n_msgs) {
    core_err e = {0};
    for (int base = 0; base < n_msgs; base += 1000) {
        json_t *root = json_pack("{s:s, s:i, s:{s:s}, s:[]}", "format", "smolbot-conversation", "version", 1,
                                 "conversation", "title", "generated", "messages");
        json_t *ms = json_object_get(root, "messages");
        for (int i = base; i < n_msgs && i < base + 1000; i++) {
            char *t = (i % 500 == 7) ? words_text(64 << 10, 1, (unsigned)i) : words_text(2000, 16, (unsigned)i);
            json_t *m = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)(i + 1), "role",
                                  i % 2 ? "assistant" : "user", "content", t);
            if (i > base) json_object_set_new(m, "parent", json_integer(i));
            json_array_append_new(ms, m);
            free(t);
        }
        char *text = json_dumps(root, JSON_COMPACT);
        char id[STORE_ID_LEN + 1];
        int rc = store_import_json(s, text, strlen(text), id, &e);
        free(text);
        json_decref(root);
        if (rc) {
            CHECK_MSG(0, "import: %s", e.msg);
            return rc;
        }
    }
    return 0;
}

/* One message of a word repeated thousands of times, the query that word
 * repeated: FTS5's snippet() took seconds to minutes (growing with the
 * repeats); the cost must not depend on the query's repeats. */
static void test_search_repeats(void) {
    store *s = open_fresh("search_cost.db");
    if (!s) return;
    core_err e = {0};
    char a[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, a, &e) == 0);
    char *t = words_text(16000, 1, 0); /* "the" x 4000 */
    char *u = words_text(200000, 16, 0);
    append(s, a, "user", 0, t);
    append(s, a, "assistant", 0, u);
    append(s, a, "user", 0, "a short one: the cat sat on the mat");
    const char *seps[] = {" ", "-", ".", "\xe2\x80\x94", "\"", "*"};
    double worst = 0;
    for (int reps = 1; reps <= 64; reps *= 2) {
        for (size_t k = 0; k < CORE_ARRAY_LEN(seps); k++) {
            char *q = query_of((size_t)reps * (3 + strlen(seps[k])), seps[k], 1);
            int n, rc;
            double dt = timed_search(s, q, 20, &n, &rc, &e);
            CHECK_MSG(rc == 0, "x%d '%s': %s", reps, seps[k], e.msg);
            /* the non-ASCII separator counts as part of a word: that query matches nothing */
            if (strcmp(seps[k], "\xe2\x80\x94") != 0 || reps == 1) CHECK_MSG(n == 3, "x%d '%s': %d hits", reps, seps[k], n);
            if (dt > worst) worst = dt;
            free(q);
        }
    }
    /* every common word, and the longest query allowed: words repeated */
    char *q16 = query_of(200, " ", 16), *qmax = query_of(STORE_MAX_QUERY, " ", 16);
    int n, rc;
    double d16 = timed_search(s, q16, 50, &n, &rc, &e);
    CHECK_MSG(rc == 0 && n == 1, "16 words: rc %d, %d hits: %s", rc, n, e.msg);
    double dmax = timed_search(s, qmax, 50, &n, &rc, &e);
    CHECK_MSG(rc == 0 && n == 1, "longest query: rc %d, %d hits: %s", rc, n, e.msg);
    if (d16 > worst) worst = d16;
    if (dmax > worst) worst = dmax;
    CHECK_MSG(worst < 1.0, "slowest search %.3f s", worst);
    /* the snippet marks the words of the query around the first match */
    store_hit *h = NULL;
    CHECK(store_search(s, "mat CAT", 5, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    if (n == 1)
        CHECK_EQ_STR(h[0].snippet, "a short one: the " STORE_HL_START "cat" STORE_HL_END " sat on the "
                                   STORE_HL_START "mat" STORE_HL_END);
    store_hits_free(h, n);
    CHECK(store_search(s, "the", 5, 0, &h, &n, &e) == 0);
    for (int i = 0; i < n; i++) {
        CHECK(strstr(h[i].snippet, STORE_HL_START "the" STORE_HL_END) != NULL);
        CHECK(strlen(h[i].snippet) < 400);
    }
    store_hits_free(h, n);
    /* too long a query is refused, not run */
    char *over = query_of(STORE_MAX_QUERY + 8, " ", 16);
    CHECK_EQ_INT(store_search(s, over, 5, 0, &h, &n, &e), CORE_ERANGE);
    fprintf(stderr, "  search cost: 'the' x1..x64 (6 separators) over 4000 repeats, 16 words, a %d-byte query: "
                    "slowest %.1f ms\n", STORE_MAX_QUERY, worst * 1e3);
    free(over);
    free(q16);
    free(qmax);
    free(t);
    free(u);
    store_close(s);
}

/* The time limit and the stop switch end a search with a clear error. */
static void test_search_deadline(void) {
    store *s = open_fresh("search_deadline.db");
    if (!s || fill_history(s, 2000)) {
        store_close(s);
        return;
    }
    core_err e = {0};
    int n, rc;
    double full = timed_search(s, "the of and", 20, &n, &rc, &e);
    CHECK_MSG(rc == 0 && n == 20, "rc %d, %d hits: %s", rc, n, e.msg);
    if (full < 0.01) {
        store_close(s);
        T_SKIP("a search took %.1f ms: too quick to test a 1 ms limit", full * 1e3);
    }
    /* a limit far below what ranking needs: the newest matches instead
     * (ids descending), or, when even those do not fit, a clear error */
    store_set_search_budget(s, 1);
    store_hit *h = NULL;
    double t1 = t_now();
    rc = store_search(s, "the of and", 20, 0, &h, &n, &e);
    double dt = t_now() - t1;
    if (rc == 0) {
        CHECK_EQ_INT(n, 20);
        for (int i = 1; i < n; i++) CHECK(h[i].msg < h[i - 1].msg);
        store_hits_free(h, n);
    } else {
        CHECK_EQ_INT(rc, CORE_ECANCEL);
        CHECK_MSG(strstr(e.msg, "time limit") != NULL, "%s", e.msg);
    }
    fprintf(stderr, "  search deadline: a whole search %.1f ms; with a 1 ms limit: %s after %.1f ms\n", full * 1e3,
            rc ? "stopped" : "newest first", dt * 1e3);
    CHECK_MSG(dt < full / 2, "stopped after %.1f ms, a whole search takes %.1f ms", dt * 1e3, full * 1e3);
    store_set_search_budget(s, 0);
    timed_search(s, "the", 5, &n, &rc, &e);
    CHECK_EQ_INT(rc, 0);
    store_stop_searches(s);
    timed_search(s, "the", 5, &n, &rc, &e);
    CHECK_EQ_INT(rc, CORE_ECANCEL);
    CHECK_MSG(strstr(e.msg, "shutting down") != NULL, "%s", e.msg);
    /* writes and other reads go on */
    char a[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, a, &e) == 0);
    append(s, a, "user", 0, "still writable");
    store_close(s);
}

/* A search runs on its own connection: a write transaction held open by
 * another connection on the file does not block it, and a search runs
 * while the store's own writer is busy. */
static void test_search_reader(void) {
    store *s = open_fresh("search_reader.db");
    if (!s) return;
    core_err e = {0};
    char a[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, a, &e) == 0);
    append(s, a, "user", 0, "committed before the writer came");
    sqlite3 *w = NULL;
    CHECK(sqlite3_open(db_path("search_reader.db"), &w) == SQLITE_OK);
    CHECK(sqlite3_exec(w, "BEGIN IMMEDIATE; UPDATE conversations SET title = 'x'", NULL, NULL, NULL) == SQLITE_OK);
    int n, rc;
    double dt = timed_search(s, "writer", 5, &n, &rc, &e);
    CHECK_MSG(rc == 0 && n == 1, "rc %d, %d hits: %s", rc, n, e.msg);
    CHECK_MSG(dt < 0.5, "%.3f s", dt);
    sqlite3_exec(w, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(w);
    /* in-memory stores search on their one connection */
    store *m = NULL;
    CHECK(store_open(&m, ":memory:", &e) == 0);
    if (m) {
        CHECK(store_create(m, NULL, a, &e) == 0);
        append(m, a, "user", 0, "in memory");
        dt = timed_search(m, "memory", 5, &n, &rc, &e);
        CHECK_MSG(rc == 0 && n == 1, "rc %d, %d hits: %s", rc, n, e.msg);
        store_close(m);
    }
    store_close(s);
}

/* The property: under one second for any query up to the length limit,
 * against a history of SMOLBOT_SEARCH_HISTORY messages (default 1000 here;
 * `make reliability` runs 10,000) of generated worst-case text. */
static void test_search_property(void) {
    const char *env = getenv("SMOLBOT_SEARCH_HISTORY");
    int n_msgs = env && atoi(env) > 0 ? atoi(env) : 1000;
    store *s = open_fresh("search_property.db");
    double t0 = t_now();
    if (!s || fill_history(s, n_msgs)) {
        store_close(s);
        return;
    }
    double fill = t_now() - t0;
    core_err e = {0};
    enum { NQ = 120 };
    double lat[NQ];
    int nq = 0, nd = 0;
    unsigned rng = 12345;
    const char *seps[] = {" ", "-", ".", "\"", " AND ", "*", "\xc3\xa9 "};
    for (int i = 0; i < NQ; i++) {
        rng = rng * 1103515245u + 12345u;
        size_t len = i < 8 ? (size_t)STORE_MAX_QUERY : 1 + (rng >> 8) % STORE_MAX_QUERY;
        int distinct = 1 + (int)((rng >> 4) % 16);
        char *q = query_of(len, seps[(rng >> 20) % CORE_ARRAY_LEN(seps)], distinct);
        int n, rc;
        lat[nq++] = timed_search(s, q, 50, &n, &rc, &e);
        CHECK_MSG(rc == 0 || rc == CORE_ECANCEL, "query %d: %s", i, e.msg);
        if (rc == 0) nd++;
        free(q);
    }
    double mx = 0, sum = 0;
    for (int i = 0; i < nq; i++) {
        sum += lat[i];
        if (lat[i] > mx) mx = lat[i];
    }
    CHECK_MSG(mx < 1.0, "slowest search %.3f s", mx);
    CHECK_MSG(nd * 10 >= nq * 9, "only %d of %d searches completed within their time limit", nd, nq);
    fprintf(stderr, "  search property: %d messages (filled in %.1f s), %d queries up to %d bytes: mean %.1f ms, "
                    "max %.1f ms, %d completed, %d stopped at the limit\n",
            n_msgs, fill, nq, STORE_MAX_QUERY, sum / nq * 1e3, mx * 1e3, nd, nq - nd);
    store_close(s);
}

/* ---- export / import --------------------------------------------------- */

/* Replace message ids by their index in the array, so two exports compare
 * equal when they differ only in ids. */
static json_t *normalize(const char *text) {
    json_t *r = json_loads(text, 0, NULL);
    if (!r) return NULL;
    json_t *c = json_object_get(r, "conversation"), *m = json_object_get(r, "messages");
    json_object_del(c, "id");
    json_int_t leaf = json_integer_value(json_object_get(c, "current_leaf"));
    size_t nm = json_array_size(m);
    json_int_t *ids = calloc(nm + 1, sizeof *ids);
    for (size_t i = 0; i < nm; i++) ids[i] = json_integer_value(json_object_get(json_array_get(m, i), "id"));
    for (size_t i = 0; i < nm; i++) {
        json_t *o = json_array_get(m, i);
        json_int_t p = json_integer_value(json_object_get(o, "parent"));
        json_object_set_new(o, "id", json_integer((json_int_t)i));
        for (size_t k = 0; k < nm; k++)
            if (p && ids[k] == p) json_object_set_new(o, "parent", json_integer((json_int_t)k));
        if (ids[i] == leaf) json_object_set_new(c, "current_leaf", json_integer((json_int_t)i));
    }
    free(ids);
    return r;
}

/* A version-1 file (before answers recorded their model) keeps its rows,
 * gains the column with "" for old answers, and new answers record theirs. */
static void test_migrate_v1(void) {
    const char *p = db_path("v1.db");
    unlink(p);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(p, &db) == SQLITE_OK);
    const char *v1 =
        "CREATE TABLE conversations(id TEXT PRIMARY KEY, title TEXT NOT NULL DEFAULT '',"
        " created INTEGER NOT NULL, updated INTEGER NOT NULL, pinned_date TEXT NOT NULL DEFAULT '',"
        " thinking INTEGER NOT NULL DEFAULT 1, temperature REAL NOT NULL, top_p REAL NOT NULL,"
        " top_k INTEGER NOT NULL, min_p REAL NOT NULL, max_tokens INTEGER NOT NULL,"
        " system_prompt TEXT NOT NULL DEFAULT '', current_leaf INTEGER REFERENCES messages(id) ON DELETE SET NULL);"
        "CREATE TABLE messages(id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " conv TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,"
        " parent INTEGER REFERENCES messages(id) ON DELETE CASCADE, role TEXT NOT NULL, content TEXT NOT NULL,"
        " reasoning TEXT NOT NULL DEFAULT '', created INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0,"
        " finish TEXT NOT NULL DEFAULT '', prompt_tokens INTEGER NOT NULL DEFAULT 0,"
        " completion_tokens INTEGER NOT NULL DEFAULT 0, prefill_ms REAL NOT NULL DEFAULT 0,"
        " gen_ms REAL NOT NULL DEFAULT 0);"
        "CREATE VIEW messages_indexed AS SELECT id, content FROM messages WHERE status != 1;"
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages_indexed',"
        " content_rowid='id', tokenize='unicode61 remove_diacritics 2');"
        "INSERT INTO conversations VALUES('00112233445566aa', 'old', 1, 1, '', 1, 0.6, 0.95, 20, 0, 0, '', 2);"
        "INSERT INTO messages(conv, parent, role, content, created) VALUES('00112233445566aa', NULL, 'user', 'hi', 1);"
        "INSERT INTO messages(conv, parent, role, content, created) VALUES('00112233445566aa', 1, 'assistant', 'hello', 2);"
        "PRAGMA user_version = 1;";
    CHECK(sqlite3_exec(db, v1, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    store *s = NULL;
    core_err e = {0};
    CHECK_MSG(store_open(&s, p, &e) == 0, "%s", e.msg);
    if (!s) return;
    CHECK_EQ_INT(sql_int(p, "PRAGMA user_version"), 2);
    store_msg *b = NULL;
    int n = 0;
    CHECK(store_branch(s, "00112233445566aa", 0, &b, &n, &e) == 0);
    CHECK_EQ_INT(n, 2);
    if (n == 2) CHECK(strcmp(b[1].content, "hello") == 0 && b[1].model[0] == 0);
    store_msgs_free(b, n);
    store_msg m = msg("assistant", 1, "hey");
    snprintf(m.model, sizeof m.model, "llama-3.2-1b");
    int64_t a = 0;
    CHECK(store_append(s, "00112233445566aa", &m, &a, &e) == 0);
    CHECK(store_branch(s, "00112233445566aa", a, &b, &n, &e) == 0);
    CHECK(n == 2 && strcmp(b[1].model, "llama-3.2-1b") == 0);
    store_msgs_free(b, n);
    /* a model name that is not text is refused */
    memset(m.model, 'x', sizeof m.model);
    CHECK(store_append(s, "00112233445566aa", &m, NULL, &e) == CORE_EINVAL);
    snprintf(m.model, sizeof m.model, "bad\xff");
    CHECK(store_append(s, "00112233445566aa", &m, NULL, &e) == CORE_EINVAL);
    store_close(s);
}

static void test_export_import(void) {
    store *s = open_fresh("export.db");
    if (!s) return;
    core_err e = {0};
    store_conv init;
    store_conv_defaults(&init);
    init.temperature = 0.7; /* not exact in binary: checks the 17-digit reals */
    init.top_p = 0.9;
    init.min_p = 0.1;
    init.system_prompt = "Answer like a \"poet\" \xe2\x9c\x8d.";
    init.pinned_date = "01 January 2027";
    char id[STORE_ID_LEN + 1];
    CHECK(store_create(s, &init, id, &e) == 0);
    CHECK(store_rename(s, id, "Poems & <stuff>", &e) == 0);
    int64_t u = append(s, id, "user", 0, "Write a poem\nabout \"quotes\" and 'apostrophes'; DROP TABLE x;");
    store_msg m = msg("assistant", u, "Roses are red,\n\n```c\nint x = 1;\n```");
    m.reasoning = "Let me think about rhymes.\nOK.";
    m.prompt_tokens = 20;
    m.completion_tokens = 30;
    m.prefill_ms = 1.0 / 3.0;
    m.gen_ms = 1e-300;
    snprintf(m.finish, sizeof m.finish, "stop");
    snprintf(m.model, sizeof m.model, "qwen3-4b-q4_k_m");
    int64_t a;
    CHECK(store_append(s, id, &m, &a, &e) == 0);
    m = msg("assistant", u, "Violets are");
    m.status = STORE_MSG_PARTIAL;
    snprintf(m.finish, sizeof m.finish, "cancelled");
    CHECK(store_append(s, id, &m, NULL, &e) == 0);
    append(s, id, "user", 0, "\xf0\x9f\x98\x80 emoji root");
    CHECK(store_set_leaf(s, id, a, NULL, &e) == 0);

    char *j1 = NULL, *j2 = NULL;
    CHECK_MSG(store_export_json(s, id, &j1, &e) == 0, "%s", e.msg);
    if (!j1) { store_close(s); return; }
    CHECK(strstr(j1, "\"format\": \"smolbot-conversation\"") != NULL);
    char id2[STORE_ID_LEN + 1];
    CHECK_MSG(store_import_json(s, j1, strlen(j1), id2, &e) == 0, "%s", e.msg);
    CHECK(strcmp(id, id2) != 0);
    CHECK(store_export_json(s, id2, &j2, &e) == 0);
    json_t *n1 = normalize(j1), *n2 = j2 ? normalize(j2) : NULL;
    CHECK(n1 && n2 && json_equal(n1, n2));
    /* and the structs agree too */
    store_msg *b1, *b2;
    int k1, k2;
    CHECK(store_branch(s, id, 0, &b1, &k1, &e) == 0);
    CHECK(store_branch(s, id2, 0, &b2, &k2, &e) == 0);
    CHECK_EQ_INT(k1, 2);
    CHECK_EQ_INT(k2, 2);
    if (k1 == 2 && k2 == 2) {
        CHECK_EQ_STR(b2[1].reasoning, b1[1].reasoning);
        CHECK(b2[1].prefill_ms == b1[1].prefill_ms);
        CHECK(b2[1].gen_ms == b1[1].gen_ms);
        CHECK_EQ_INT(b2[1].sibling_count, 2);
        CHECK_EQ_INT(b2[1].created, b1[1].created);
    }
    store_msgs_free(b1, k1);
    store_msgs_free(b2, k2);
    store_conv c1, c2;
    CHECK(store_get(s, id, &c1, &e) == 0);
    CHECK(store_get(s, id2, &c2, &e) == 0);
    CHECK(c1.temperature == c2.temperature && c1.top_p == c2.top_p && c1.min_p == c2.min_p);
    CHECK_EQ_STR(c2.title, "Poems & <stuff>");
    CHECK_EQ_STR(c2.system_prompt, c1.system_prompt);
    CHECK_EQ_INT(c2.n_messages, 4);
    store_conv_clear(&c1);
    store_conv_clear(&c2);
    json_decref(n1);
    json_decref(n2);
    free(j2);

    /* Markdown: the current branch, reasoning folded */
    char *md = NULL;
    CHECK(store_export_md(s, id, &md, &e) == 0);
    if (md) {
        CHECK(strncmp(md, "# Poems & <stuff>\n", 18) == 0);
        CHECK(strstr(md, "## System prompt\n\nAnswer like") != NULL);
        CHECK(strstr(md, "## User\n\nWrite a poem\n") != NULL);
        CHECK(strstr(md, "<details><summary>Reasoning</summary>\n\nLet me think") != NULL);
        CHECK(strstr(md, "Roses are red,") != NULL);
        CHECK(strstr(md, "Violets") == NULL);     /* other branch */
        CHECK(strstr(md, "emoji root") == NULL);  /* other root */
    }
    free(md);
    CHECK(store_set_leaf(s, id, u, NULL, &e) == 0); /* newest under u: the partial one */
    CHECK(store_export_md(s, id, &md, &e) == 0);
    if (md) CHECK(strstr(md, "Violets are\n\n*(incomplete: cancelled)*") != NULL);
    free(md);

    /* bad imports: nothing is created */
    store_conv *l;
    int nl;
    CHECK(store_list(s, 100, 0, &l, &nl, &e) == 0);
    store_conv_free_list(l, nl);
    const char *bad[] = {
        "",
        "not json",
        "[]",
        "{\"format\":\"other\",\"version\":1,\"conversation\":{},\"messages\":[]}",
        "{\"format\":\"smolbot-conversation\",\"version\":2,\"conversation\":{},\"messages\":[]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"messages\":[]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{},\"messages\":"
        "[{\"id\":2,\"parent\":5,\"role\":\"user\",\"content\":\"x\"},{\"id\":5,\"role\":\"user\"}]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{},\"messages\":"
        "[{\"id\":2,\"role\":\"user\",\"content\":\"x\"},{\"id\":2,\"role\":\"user\"}]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{},\"messages\":"
        "[{\"id\":1,\"role\":\"hacker\",\"content\":\"x\"}]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{},\"messages\":"
        "[{\"id\":1,\"role\":\"user\",\"content\":\"x\\u0000y\"}]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{},\"messages\":"
        "[{\"id\":1,\"role\":\"user\",\"content\":\"\xff\"}]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{\"temperature\":-3},\"messages\":[]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{\"current_leaf\":9},\"messages\":"
        "[{\"id\":1,\"role\":\"user\",\"content\":\"x\"}]}",
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{},\"messages\":"
        "[{\"id\":1,\"role\":\"user\",\"content\":\"x\",\"status\":\"weird\"}]}",
    };
    for (size_t i = 0; i < CORE_ARRAY_LEN(bad); i++) {
        char bid[STORE_ID_LEN + 1];
        int rc = store_import_json(s, bad[i], strlen(bad[i]), bid, &e);
        CHECK_MSG(rc < 0, "bad import %zu accepted", i);
        CHECK(bid[0] == 0);
    }
    int nl2;
    CHECK(store_list(s, 100, 0, &l, &nl2, &e) == 0);
    store_conv_free_list(l, nl2);
    CHECK_EQ_INT(nl2, nl);
    /* a minimal hand-written file imports with defaults */
    const char *mini = "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{\"title\":\"Mini\"},"
                       "\"messages\":[{\"id\":1,\"role\":\"user\",\"content\":\"hi\"},"
                       "{\"id\":3,\"parent\":1,\"role\":\"assistant\",\"content\":\"hello\"}]}";
    char mid[STORE_ID_LEN + 1];
    CHECK_MSG(store_import_json(s, mini, strlen(mini), mid, &e) == 0, "%s", e.msg);
    store_msg *mb;
    int mn;
    CHECK(store_messages(s, mid, &mb, &mn, &e) == 0);
    CHECK_EQ_INT(mn, 2);
    if (mn == 2) CHECK_EQ_INT(mb[1].parent, mb[0].id);
    store_msgs_free(mb, mn);
    free(j1);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
}

/* ---- bad input --------------------------------------------------------- */

static void test_bad_input(void) {
    store *s = open_fresh("bad.db");
    if (!s) return;
    core_err e = {0};
    char id[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, id, &e) == 0);
    /* exactly at the limit is fine, one byte more is refused */
    size_t lim = STORE_DEFAULT_MAX_MESSAGE;
    char *big = malloc(lim + 2);
    if (!big) return;
    for (size_t i = 0; i < lim + 1; i++) big[i] = "abcdefgh \n"[i % 10];
    big[lim] = 0;
    int64_t bid = append(s, id, "user", 0, big);
    store_msg g;
    CHECK(store_get_msg(s, bid, &g, &e) == 0);
    CHECK_EQ_INT(g.content ? strlen(g.content) : 0, lim);
    store_msg_clear(&g);
    big[lim] = 'x';
    big[lim + 1] = 0;
    store_msg m = msg("user", 0, big);
    CHECK_EQ_INT(store_append(s, id, &m, NULL, &e), CORE_ERANGE);
    m = msg("assistant", bid, "ok");
    m.reasoning = big;
    CHECK_EQ_INT(store_append(s, id, &m, NULL, &e), CORE_ERANGE);
    free(big);
    store_set_max_message(s, 10);
    m = msg("user", 0, "01234567890");
    CHECK_EQ_INT(store_append(s, id, &m, NULL, &e), CORE_ERANGE);
    CHECK(strstr(e.msg, "limit is 10") != NULL);
    store_set_max_message(s, STORE_DEFAULT_MAX_MESSAGE);

    /* invalid UTF-8 anywhere is refused before anything is stored */
    const char *invalid[] = {"\xff", "ab\xc3", "\xc0\x80", "\xed\xa0\x80 surrogate", "ok \xf4\x90\x80\x80"};
    for (size_t i = 0; i < CORE_ARRAY_LEN(invalid); i++) {
        m = msg("user", 0, invalid[i]);
        CHECK_EQ_INT(store_append(s, id, &m, NULL, &e), CORE_EINVAL);
        m = msg("assistant", bid, "fine");
        m.reasoning = (char *)invalid[i];
        CHECK_EQ_INT(store_append(s, id, &m, NULL, &e), CORE_EINVAL);
        CHECK_EQ_INT(store_update(s, bid, &m, &e), CORE_EINVAL);
        CHECK_EQ_INT(store_rename(s, id, invalid[i], &e), CORE_EINVAL);
        store_conv c;
        store_conv_defaults(&c);
        c.system_prompt = (char *)invalid[i];
        char x[STORE_ID_LEN + 1];
        CHECK_EQ_INT(store_create(s, &c, x, &e), CORE_EINVAL);
        CHECK_EQ_INT(store_set_settings(s, id, &c, &e), CORE_EINVAL);
    }
    CHECK(strstr(e.msg, "UTF-8") != NULL);
    store_conv c;
    CHECK(store_get(s, id, &c, &e) == 0);
    CHECK_EQ_INT(c.n_messages, 1);
    CHECK_EQ_STR(c.system_prompt, "");
    store_conv_clear(&c);
    store_conv *l;
    int n;
    CHECK(store_list(s, 10, 0, &l, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    store_conv_free_list(l, n);
    char *title = malloc(STORE_MAX_TITLE + 2);
    memset(title, 't', STORE_MAX_TITLE + 1);
    title[STORE_MAX_TITLE + 1] = 0;
    CHECK_EQ_INT(store_rename(s, id, title, &e), CORE_ERANGE);
    free(title);

    /* SQL metacharacters and control characters are stored verbatim */
    const char *meta[] = {"'; DROP TABLE messages; --", "Robert'); DELETE FROM conversations;--",
                          "\" OR \"1\"=\"1", "%_\\'\\\"`$(rm -rf /)", "tab\there\r\nnul-free \x01\x02\x03 ctl",
                          "<script>alert(1)</script>"};
    for (size_t i = 0; i < CORE_ARRAY_LEN(meta); i++) {
        int64_t mid = append(s, id, "user", 0, meta[i]);
        CHECK(store_get_msg(s, mid, &g, &e) == 0);
        CHECK_EQ_STR(g.content, meta[i]);
        store_msg_clear(&g);
        CHECK(store_rename(s, id, meta[i], &e) == 0);
        CHECK(store_get(s, id, &c, &e) == 0);
        CHECK_EQ_STR(c.title, meta[i]);
        store_conv_clear(&c);
    }
    CHECK(store_get(s, id, &c, &e) == 0);
    CHECK_EQ_INT(c.n_messages, 1 + (int)CORE_ARRAY_LEN(meta));
    store_conv_clear(&c);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
}

/* ---- crash: SIGKILL in the middle of a stream ------------------------- */

#define CRASH_FINISHED 6

static void crash_text(core_buf *b, int i) {
    core_buf_clear(b);
    for (int k = 0; k <= i; k++) core_buf_printf(b, "tok%d ", k);
}

/* The child: writes, reports each committed update number on fd, never returns. */
static void crash_child(const char *path, int fd) {
    store *s = NULL;
    core_err e = {0};
    if (store_open(&s, path, &e)) _exit(3);
    char id[STORE_ID_LEN + 1];
    if (store_create(s, NULL, id, &e)) _exit(4);
    if (write(fd, id, STORE_ID_LEN) != STORE_ID_LEN) _exit(5);
    int64_t parent = 0;
    for (int i = 0; i < CRASH_FINISHED; i++) {
        char text[64];
        snprintf(text, sizeof text, "finished message %d", i);
        store_msg m = msg(i % 2 ? "assistant" : "user", parent, text);
        if (i % 2) snprintf(m.finish, sizeof m.finish, "stop");
        if (store_append(s, id, &m, &parent, &e)) _exit(6);
    }
    store_msg m = msg("assistant", parent, "");
    m.status = STORE_MSG_STREAMING;
    int64_t a;
    if (store_append(s, id, &m, &a, &e)) _exit(7);
    core_buf b = {0};
    for (int i = 0; i < 20000; i++) {
        crash_text(&b, i);
        m.content = b.data;
        if (store_update(s, a, &m, &e)) _exit(8);
        if (write(fd, &i, sizeof i) != sizeof i) _exit(9); /* after the commit */
    }
    _exit(0);
}

static void test_crash_sigkill(void) {
    const char *path = db_path("crash.db");
    unlink(path);
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) T_SKIP("fork failed");
    if (pid == 0) {
        close(p[0]);
        crash_child(path, p[1]);
    }
    close(p[1]);
    char id[STORE_ID_LEN + 1] = "";
    ssize_t r = read(p[0], id, STORE_ID_LEN);
    CHECK_EQ_INT(r, STORE_ID_LEN);
    id[STORE_ID_LEN] = 0;
    int last = -1, v, got = 0;
    while (got < 200 && read(p[0], &v, sizeof v) == sizeof v) {
        last = v;
        got++;
    }
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* updates committed between our last read and the kill are in the pipe */
    while (read(p[0], &v, sizeof v) == sizeof v) last = v;
    close(p[0]);
    CHECK(last >= 199);
    struct stat st;
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    CHECK(stat(wal, &st) == 0 && st.st_size > 0); /* the crash left a WAL to recover */

    store *s = NULL;
    core_err e = {0};
    int quiet = core_log_level();
    core_log_set_level(CORE_LOG_ERROR); /* the recovery warning is expected */
    int rc = store_open(&s, path, &e);
    core_log_set_level(quiet);
    CHECK_MSG(rc == 0, "reopen: %s", e.msg);
    if (rc) return;
    CHECK_MSG(store_check(s, &e) == 0, "%s", e.msg);
    store_msg *b;
    int n;
    CHECK(store_branch(s, id, 0, &b, &n, &e) == 0);
    CHECK_EQ_INT(n, CRASH_FINISHED + 1);
    for (int i = 0; i < n && i < CRASH_FINISHED; i++) {
        char text[64];
        snprintf(text, sizeof text, "finished message %d", i);
        CHECK_EQ_STR(b[i].content, text);
        CHECK_EQ_INT(b[i].status, STORE_MSG_DONE);
    }
    if (n == CRASH_FINISHED + 1) {
        store_msg *x = &b[CRASH_FINISHED];
        CHECK_EQ_INT(x->status, STORE_MSG_PARTIAL);
        CHECK_EQ_STR(x->finish, "interrupted");
        /* the last update the child reported, or the one after it (committed, not yet reported) */
        core_buf want = {0};
        crash_text(&want, last);
        int ok = strcmp(x->content, want.data) == 0;
        crash_text(&want, last + 1);
        ok |= strcmp(x->content, want.data) == 0;
        CHECK_MSG(ok, "partial text has %zu bytes, last reported update %d", strlen(x->content), last);
        core_buf_free(&want);
        fprintf(stderr, "  crash test: child killed after update %d; reopened: %d finished messages intact, "
                        "partial kept %zu bytes, integrity ok\n", last, CRASH_FINISHED, strlen(x->content));
    }
    store_msgs_free(b, n);
    /* the interrupted answer is now searchable and the index is consistent */
    store_hit *h;
    int nh;
    CHECK(store_search(s, "tok42", 5, 0, &h, &nh, &e) == 0);
    CHECK_EQ_INT(nh, 1);
    store_hits_free(h, nh);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
    CHECK_EQ_INT(sql_int(path, "SELECT count(*) FROM messages WHERE status = 1"), 0);
}

/* ---- parallel writers -------------------------------------------------- */

#define N_THREADS 4
#define N_APPENDS 200

typedef struct {
    store *s;          /* shared store, or NULL: open our own connection */
    const char *path;
    const char *shared_conv;
    int errors;
    char first_error[512];
} worker;

static void note(worker *w, int rc, const core_err *e) {
    if (!rc) return;
    if (!w->errors++) snprintf(w->first_error, sizeof w->first_error, "%s", e->msg);
}

static void *work(void *arg) {
    worker *w = arg;
    core_err e = {0};
    store *s = w->s;
    if (!s) {
        int rc = store_open(&s, w->path, &e);
        note(w, rc, &e);
        if (rc) return NULL;
        store_set_search_budget(s, 20000); /* correctness here, not latency: CI machines are loaded */
    }
    char own[STORE_ID_LEN + 1];
    note(w, store_create(s, NULL, own, &e), &e);
    int64_t parent = 0;
    for (int i = 0; i < N_APPENDS; i++) {
        char text[64];
        snprintf(text, sizeof text, "parallel message %d from %p", i, (void *)w);
        store_msg m = msg(i % 2 ? "assistant" : "user", parent, text);
        note(w, store_append(s, own, &m, &parent, &e), &e);
        m.parent = 0;
        if (i % 4 == 0) note(w, store_append(s, w->shared_conv, &m, NULL, &e), &e);
        if (i % 10 == 0) {
            store_msg *b;
            int n;
            int rc = store_branch(s, own, 0, &b, &n, &e);
            note(w, rc, &e);
            if (!rc) {
                if (n != i + 1) note(w, -1, &(core_err){.msg = "branch length wrong"});
                store_msgs_free(b, n);
            }
            store_conv *l;
            rc = store_list(s, 5, 0, &l, &n, &e);
            note(w, rc, &e);
            if (!rc) store_conv_free_list(l, n);
            store_hit *h;
            rc = store_search(s, "parallel", 5, 0, &h, &n, &e);
            note(w, rc, &e);
            if (!rc) store_hits_free(h, n);
        }
    }
    if (!w->s) store_close(s);
    return NULL;
}

static void run_parallel(const char *name, int shared) {
    const char *path = target(name);
    store *s = open_fresh(name);
    core_err e = {0};
    if (!s) return;
    char conv[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, conv, &e) == 0);
    if (!shared) {
        store_close(s);
        s = NULL;
    }
    worker w[N_THREADS];
    pthread_t th[N_THREADS];
    double t0 = core_now_s();
    if (s) store_set_search_budget(s, 20000);
    for (int i = 0; i < N_THREADS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].s = s;
        w[i].path = path;
        w[i].shared_conv = conv;
        pthread_create(&th[i], NULL, work, &w[i]);
    }
    int errors = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        errors += w[i].errors;
        if (w[i].errors) fprintf(stderr, "  thread %d: %d errors, first: %s\n", i, w[i].errors, w[i].first_error);
    }
    double dt = core_now_s() - t0;
    CHECK_EQ_INT(errors, 0);
    if (!s) CHECK(store_open(&s, path, &e) == 0);
    if (!s) return;
    store_conv c;
    CHECK(store_get(s, conv, &c, &e) == 0);
    CHECK_EQ_INT(c.n_messages, N_THREADS * (N_APPENDS / 4));
    store_conv_clear(&c);
    store_conv *l;
    int n;
    CHECK(store_list(s, 100, 0, &l, &n, &e) == 0);
    CHECK_EQ_INT(n, N_THREADS + 1);
    for (int i = 0; i < n; i++)
        if (strcmp(l[i].id, conv) != 0) CHECK_EQ_INT(l[i].n_messages, N_APPENDS);
    store_conv_free_list(l, n);
    CHECK(store_check(s, &e) == 0);
    store_close(s);
    fprintf(stderr, "  parallel (%s): %d threads x %d appends + reads in %.2f s, %d errors\n",
            shared ? "one shared store" : "a connection per thread", N_THREADS, N_APPENDS, dt, errors);
}

static void test_parallel_shared_store(void) { run_parallel("par_shared.db", 1); }
static void test_parallel_connections(void) { run_parallel("par_conns.db", 0); }

/* ---- full and read-only disks ------------------------------------------ */

/* A tmpfs of `mib` MiB at a fresh directory: needs root (CI runs as root);
 * NULL when mounting is not allowed, and the test skips. */
static const char *small_fs(const char *name, int mib) {
    const char *dir = db_path(name);
    char opts[32];
    snprintf(opts, sizeof opts, "size=%dm", mib);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return NULL;
    if (mount("tmpfs", dir, "tmpfs", 0, opts) != 0) return NULL;
    return dir;
}

/* Write zeros into dir/name until the file system is full. */
static void fill_fs(const char *dir, const char *name) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0) return;
    static char zeros[65536];
    for (size_t chunk = sizeof zeros; chunk >= 512; chunk /= 2)
        while (write(fd, zeros, chunk) == (ssize_t)chunk) {}
    close(fd);
}

static void checkpoint_truncate(const char *path) {
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) == SQLITE_OK) sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    sqlite3_close(db);
}

static int count_convs(store *s) {
    store_conv *l = NULL;
    int n = -1;
    core_err e = {0};
    if (store_list(s, 100, 0, &l, &n, &e)) CHECK_MSG(0, "list: %s", e.msg);
    store_conv_free_list(l, n);
    return n;
}

/* The disk fills up while the server runs, then at start; then the file
 * system is read-only.  The history must stay readable throughout, writes
 * must say the disk is full, and deleting must work (and free room). */
static void test_full_disk(void) {
    const char *fs = small_fs("fullfs", 16);
    if (!fs) T_SKIP("cannot mount a tmpfs (needs root): %s", strerror(errno));
    char path[600], big[8192];
    snprintf(path, sizeof path, "%s/h.db", fs);
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    core_err e = {0};
    store *s = NULL;
    CHECK_EQ_INT(store_open(&s, path, &e), 0);
    if (!s) goto out;
    char a[STORE_ID_LEN + 1], b[STORE_ID_LEN + 1], id[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, a, &e) == 0);
    CHECK(store_create(s, NULL, b, &e) == 0);
    int64_t p = 0;
    for (int i = 0; i < 200; i++) p = append(s, a, i % 2 ? "assistant" : "user", p, big);
    append(s, b, "user", 0, "a needle in the history");
    checkpoint_truncate(path); /* no room left in the WAL file either */
    fill_fs(fs, "fill1");

    /* while running: writes fail saying why, reads and search work */
    store_msg m = msg("user", 0, big);
    CHECK_EQ_INT(store_append(s, b, &m, NULL, &e), CORE_EFULL);
    CHECK_MSG(strstr(e.msg, "disk is full") != NULL, "%s", e.msg);
    const char *exp = "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{\"title\":\"t\"},"
                      "\"messages\":[{\"id\":1,\"role\":\"user\",\"content\":\"imported\"}]}";
    int rc = store_import_json(s, exp, strlen(exp), id, &e);
    CHECK_MSG(rc == CORE_EFULL, "import on a full disk: %d %s", rc, e.msg);
    CHECK_EQ_INT(count_convs(s), 2);
    store_hit *h = NULL;
    int n = 0;
    CHECK(store_search(s, "needle", 5, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    store_hits_free(h, n);
    /* deleting works, and makes room for new messages */
    rc = store_delete(s, a, &e);
    CHECK_MSG(rc == 0, "delete on a full disk: %s", e.msg);
    CHECK_EQ_INT(count_convs(s), 1);
    append(s, b, "assistant", 0, "saved after the delete");
    CHECK_MSG(store_check(s, &e) == 0, "%s", e.msg);
    store_close(s);
    s = NULL;

    /* full at start, no reserve left: read-only, history visible */
    fill_fs(fs, "fill2");
    CHECK_EQ_INT(store_open(&s, path, &e), 0);
    if (!s) goto out;
    CHECK(store_readonly(s) != NULL);
    CHECK_EQ_INT(count_convs(s), 1);
    CHECK(store_search(s, "needle", 5, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    store_hits_free(h, n);
    CHECK_EQ_INT(store_append(s, b, &m, NULL, &e), STORE_EREADONLY);
    CHECK_MSG(strstr(e.msg, "read-only") != NULL, "%s", e.msg);
    CHECK_EQ_INT(store_delete(s, b, &e), STORE_EREADONLY);
    store_close(s);
    s = NULL;

    /* room again: the reserve is made; full at start again: the reserve
     * lets the store open read-write */
    char fp[700];
    snprintf(fp, sizeof fp, "%s/fill1", fs);
    unlink(fp);
    snprintf(fp, sizeof fp, "%s/fill2", fs);
    unlink(fp);
    CHECK_EQ_INT(store_open(&s, path, &e), 0);
    store_close(s);
    s = NULL;
    fill_fs(fs, "fill3");
    CHECK_EQ_INT(store_open(&s, path, &e), 0);
    if (!s) goto out;
    CHECK_MSG(store_readonly(s) == NULL, "%s", store_readonly(s));
    CHECK_EQ_INT(count_convs(s), 1);
    CHECK_EQ_INT(store_delete(s, b, &e), 0);
    store_close(s);
    s = NULL;

    /* a read-only file system: read-only, history visible */
    CHECK(store_open(&s, path, &e) == 0 && store_create(s, NULL, b, &e) == 0);
    append(s, b, "user", 0, "written before the remount");
    store_close(s);
    s = NULL;
    CHECK(mount("tmpfs", fs, "tmpfs", MS_REMOUNT | MS_RDONLY, NULL) == 0);
    CHECK_EQ_INT(store_open(&s, path, &e), 0);
    if (!s) goto out;
    CHECK(store_readonly(s) != NULL);
    CHECK_EQ_INT(count_convs(s), 1);
    CHECK(store_search(s, "remount", 5, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    store_hits_free(h, n);
    CHECK_EQ_INT(store_create(s, NULL, id, &e), STORE_EREADONLY);
out:
    store_close(s);
    umount2(fs, MNT_DETACH);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    remove(p); /* best effort: go on */
    return 0;
}

/* What one streamed answer costs the store: append the user message and the
 * answer, 8 partial updates, the final one.  A figure, not a limit. */
static void test_latency(void) {
    store *s = open_fresh("latency.db");
    if (!s) return;
    core_err e = {0};
    char id[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, id, &e) == 0);
    enum { TURNS = 40 };
    double t0 = t_now();
    int64_t parent = 0;
    for (int i = 0; i < TURNS; i++) {
        int64_t u = append(s, id, "user", parent, "How far is the moon?");
        store_msg m = msg("assistant", u, "");
        m.status = STORE_MSG_STREAMING;
        int64_t a = 0;
        CHECK(store_append(s, id, &m, &a, &e) == 0);
        for (int k = 0; k < 9; k++) {
            m.content = "About 384,400 km on average, a little more or less along its orbit.";
            if (k == 8) m.status = STORE_MSG_DONE;
            CHECK(store_update(s, a, &m, &e) == 0);
        }
        parent = a;
    }
    double dt = t_now() - t0;
    fprintf(stderr, "  store latency (%s): %.2f ms per call (append x2 + update x9 per answer, %d answers)\n",
            g_pg ? "PostgreSQL" : "SQLite", dt * 1e3 / (TURNS * 11), TURNS);
    store_close(s);
}

/* ---- PostgreSQL only ------------------------------------------------------ */

/* Two stores on one database, as two replicas: opening the second does not
 * touch the first one's live stream; once the first is gone (its session
 * lock with it), the next read of that conversation marks it interrupted,
 * keeping the partial text; it becomes searchable then. */
static void test_pg_replicas(void) {
    store *a = open_fresh("replicas"), *b = NULL;
    if (!a) return;
    core_err e = {0};
    char id[STORE_ID_LEN + 1];
    CHECK(store_create(a, NULL, id, &e) == 0);
    int64_t u = append(a, id, "user", 0, "tell me about lanterns");
    store_msg m = msg("assistant", u, "Lanterns glow");
    m.status = STORE_MSG_STREAMING;
    int64_t ans = 0;
    CHECK(store_append(a, id, &m, &ans, &e) == 0);
    CHECK_MSG(store_open(&b, g_pg_url, &e) == 0, "%s", e.msg);
    if (!b) {
        store_close(a);
        return;
    }
    store_msg *br;
    int n;
    store_msg g;
    CHECK(store_branch(b, id, 0, &br, &n, &e) == 0);
    store_msgs_free(br, n);
    CHECK(store_get_msg(b, ans, &g, &e) == 0);
    CHECK_EQ_INT(g.status, STORE_MSG_STREAMING); /* its replica lives */
    store_msg_clear(&g);
    m.content = "Lanterns glow softly";
    CHECK(store_update(a, ans, &m, &e) == 0);
    store_close(a); /* the replica dies with its stream open */
    /* its server session (and so its lock) ends a moment after the socket
     * closes: a read soon after may still see the stream live */
    for (int tries = 0;; tries++) {
        CHECK(store_branch(b, id, 0, &br, &n, &e) == 0);
        if (n != 2 || br[1].status != STORE_MSG_STREAMING || tries == 50) break;
        store_msgs_free(br, n);
        usleep(100 * 1000);
    }
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        CHECK_EQ_INT(br[1].status, STORE_MSG_PARTIAL);
        CHECK_EQ_STR(br[1].finish, "interrupted");
        CHECK_EQ_STR(br[1].content, "Lanterns glow softly");
    }
    store_msgs_free(br, n);
    store_hit *h;
    CHECK(store_search(b, "softly", 5, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 1);
    store_hits_free(h, n);
    /* the conversation goes on on the other replica */
    append(b, id, "user", u, "and candles?");
    CHECK(store_check(b, &e) == 0);
    store_close(b);
}

/* Replicas starting together migrate once (the advisory lock). */
static void *open_close(void *arg) {
    store *s = NULL;
    core_err e = {0};
    *(int *)arg = store_open(&s, g_pg_url, &e);
    if (*(int *)arg) fprintf(stderr, "  open: %s\n", e.msg);
    store_close(s);
    return NULL;
}

static void test_pg_migrate_together(void) {
    pg_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public");
    enum { N = 4 };
    pthread_t th[N];
    int rc[N];
    for (int i = 0; i < N; i++) pthread_create(&th[i], NULL, open_close, &rc[i]);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(rc[i], 0);
    }
    CHECK_EQ_INT(pg_sql("SELECT count(*) FROM smolbot_migrations"), 1);
    /* a database from a newer smolbot is refused */
    pg_sql("INSERT INTO smolbot_migrations VALUES (99, 0)");
    store *s = NULL;
    core_err e = {0};
    CHECK_EQ_INT(store_open(&s, g_pg_url, &e), CORE_EUNSUP);
    CHECK(s == NULL);
}

/* The server goes away: calls fail with STORE_EUNAVAIL, never crash; once
 * it is back, the same store works again and nothing committed is lost. */
static char g_pg_dir[512];
static void test_pg_unavailable(void) {
    store *s = open_fresh("unavailable");
    if (!s) return;
    core_err e = {0};
    char id[STORE_ID_LEN + 1];
    CHECK(store_create(s, NULL, id, &e) == 0);
    append(s, id, "user", 0, "before the outage");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "bash tests/pg_util.sh stop %s", g_pg_dir);
    CHECK(system(cmd) == 0);
    store_conv c;
    store_msg m = msg("user", 0, "during the outage");
    CHECK_EQ_INT(store_append(s, id, &m, NULL, &e), STORE_EUNAVAIL);
    CHECK_MSG(strstr(e.msg, "unavailable") != NULL && strstr(e.msg, "***") == NULL, "%s", e.msg);
    CHECK_EQ_INT(store_get(s, id, &c, &e), STORE_EUNAVAIL);
    store_hit *h;
    int n;
    CHECK_EQ_INT(store_search(s, "outage", 5, 0, &h, &n, &e), STORE_EUNAVAIL);
    store *s2 = NULL;
    CHECK_EQ_INT(store_open(&s2, g_pg_url, &e), STORE_EUNAVAIL);
    snprintf(cmd, sizeof cmd, "bash tests/pg_util.sh up %s", g_pg_dir);
    CHECK(system(cmd) == 0);
    CHECK_MSG(store_get(s, id, &c, &e) == 0, "%s", e.msg);
    CHECK_EQ_INT(c.n_messages, 1);
    store_conv_clear(&c);
    append(s, id, "user", 0, "after the outage");
    CHECK(store_search(s, "outage", 5, 0, &h, &n, &e) == 0);
    CHECK_EQ_INT(n, 2);
    store_hits_free(h, n);
    store_close(s);
}

static void pg_stop(void) {
    if (!g_pg_dir[0]) return;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "bash tests/pg_util.sh stop %s >/dev/null 2>&1; rm -rf %s", g_pg_dir, g_pg_dir);
    if (system(cmd) != 0) fprintf(stderr, "test_store: could not stop the test server in %s\n", g_pg_dir);
    g_pg_dir[0] = 0;
}

/* Start a server for this process; 0 and g_pg_url set, or why not in why. */
static int pg_start(char *why, size_t cap) {
    if (access("tests/pg_util.sh", R_OK) != 0) return snprintf(why, cap, "tests/pg_util.sh not found (run from the repository root)"), -1;
    snprintf(g_pg_dir, sizeof g_pg_dir, "/tmp/smolbot-pgtest-XXXXXX");
    if (!mkdtemp(g_pg_dir)) return snprintf(why, cap, "mkdtemp: %s", strerror(errno)), -1;
    atexit(pg_stop);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "bash tests/pg_util.sh start %s 2>%s.err", g_pg_dir, g_pg_dir);
    FILE *f = popen(cmd, "r");
    if (!f || !fgets(g_pg_url, sizeof g_pg_url, f)) g_pg_url[0] = 0;
    int rc = f ? pclose(f) : -1;
    g_pg_url[strcspn(g_pg_url, "\n")] = 0;
    if (rc != 0 || !g_pg_url[0]) {
        char ep[600];
        snprintf(ep, sizeof ep, "%s.err", g_pg_dir);
        FILE *e = fopen(ep, "r");
        char line[300] = "no message";
        if (e && fgets(line, sizeof line, e)) line[strcspn(line, "\n")] = 0;
        if (e) fclose(e);
        unlink(ep);
        snprintf(why, cap, "%s", line);
        return -1;
    }
    char ep[600];
    snprintf(ep, sizeof ep, "%s.err", g_pg_dir);
    unlink(ep);
    return 0;
}

/* The same tests on PostgreSQL, named apart in the output. */
#define PG_TEST(fn) static void pg_##fn(void) { if (!g_pg) T_SKIP("%s", g_pg_url); fn(); }
PG_TEST(test_crud)
PG_TEST(test_branches)
PG_TEST(test_streaming)
PG_TEST(test_search)
PG_TEST(test_search_repeats)
PG_TEST(test_search_deadline)
PG_TEST(test_search_property)
PG_TEST(test_export_import)
PG_TEST(test_bad_input)
PG_TEST(test_parallel_shared_store)
PG_TEST(test_parallel_connections)
PG_TEST(test_latency)
PG_TEST(test_pg_replicas)
PG_TEST(test_pg_migrate_together)
PG_TEST(test_pg_unavailable)

int main(void) {
    core_log_set_level(CORE_LOG_WARN);
    T_RUN(test_default_path);
    T_RUN(test_migrate_empty_file);
    T_RUN(test_open_errors);
    T_RUN(test_crud);
    T_RUN(test_branches);
    T_RUN(test_streaming);
    T_RUN(test_search);
    T_RUN(test_search_repeats);
    T_RUN(test_search_deadline);
    T_RUN(test_search_reader);
    T_RUN(test_search_property);
    T_RUN(test_migrate_v1);
    T_RUN(test_export_import);
    T_RUN(test_bad_input);
    T_RUN(test_crash_sigkill);
    T_RUN(test_parallel_shared_store);
    T_RUN(test_parallel_connections);
    T_RUN(test_full_disk);
    T_RUN(test_latency);
    /* every database keeps a 4 MiB reserve beside it: leave nothing behind */
    nftw(t_tmpdir(), rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);

    char why[200];
    if (pg_start(why, sizeof why) == 0) {
        g_pg = 1;
    } else {
        fprintf(stderr, "test_store: PostgreSQL tests skipped: cannot start a test server: %s\n", why);
        snprintf(g_pg_url, sizeof g_pg_url, "no PostgreSQL test server: %s", why);
    }
    T_RUN(pg_test_crud);
    T_RUN(pg_test_branches);
    T_RUN(pg_test_streaming);
    T_RUN(pg_test_search);
    T_RUN(pg_test_search_repeats);
    T_RUN(pg_test_search_deadline);
    T_RUN(pg_test_search_property);
    T_RUN(pg_test_export_import);
    T_RUN(pg_test_bad_input);
    T_RUN(pg_test_parallel_shared_store);
    T_RUN(pg_test_parallel_connections);
    T_RUN(pg_test_latency);
    T_RUN(pg_test_pg_replicas);
    T_RUN(pg_test_pg_migrate_together);
    T_RUN(pg_test_pg_unavailable);
    pg_stop();
    return t_done();
}
