/* store.h -- the conversation store: chat history in SQLite that survives
 * restarts and crashes, with branches, full-text search and export; or in
 * PostgreSQL (store_open with a postgres:// URL), shared by several
 * smolbot processes.
 *
 * This module is the only one that includes sqlite3.h and libpq-fe.h; everything above sees
 * plain structs and int status codes (0 ok, negative CORE_E* and a message
 * in the optional core_err).
 *
 * Data model
 *   conversation  id (16 lowercase hex chars from the kernel's RNG, so URLs
 *                 cannot be guessed), title, created/updated (unix ms),
 *                 chat settings (thinking, sampling, system prompt, the
 *                 pinned "Today Date") and the current leaf.
 *   message       integer id (> 0), parent (0 = a root), role, content,
 *                 reasoning, created, status, finish reason, token counts,
 *                 timings.  Messages form a tree: editing a user message or
 *                 regenerating an answer appends a sibling under the same
 *                 parent, so nothing is ever overwritten.  The branch shown is
 *                 the path root -> current leaf.  A child always has a larger
 *                 id than its parent (ids only grow), so "id order" is a
 *                 topological order of the tree.
 *
 * Durability (the contract the engine relies on)
 *   - store the user message (store_append) before generation starts;
 *   - create the answer with status STORE_MSG_STREAMING, optionally update
 *     its partial text while it streams (each store_update is a committed
 *     transaction), and finish it with STORE_MSG_DONE, or STORE_MSG_PARTIAL
 *     plus finish reason "cancelled"/"error" when it stopped early;
 *   - on open, any message still STREAMING (its writer died) becomes
 *     PARTIAL with finish reason "interrupted", keeping the last committed
 *     text.  This assumes one smolbot process writes a database at a time:
 *     a second process opening the file would mark the first one's live
 *     streams interrupted (they finish normally afterwards anyway).
 *   WAL journal with synchronous=NORMAL: a committed transaction survives a
 *   crash or SIGKILL of the process; a power loss may drop the last few
 *   commits but never corrupts the file.
 *
 * Threads: one connection behind a mutex; every function may be called from
 * any thread at the same time.  Searches run on read-only connections of
 * their own (a few, pooled), never under that mutex: in WAL a reader neither
 * waits for the writer nor holds it up.  Writes take BEGIN IMMEDIATE and a 10 s busy
 * timeout with retry, so other processes on the same file do not surface
 * "database is locked" either.  Statements are prepared once at open.
 *
 * Validation: titles, content and reasoning must be valid UTF-8 (CORE_EINVAL,
 * nothing is stored) and at most store_set_max_message() bytes (default 1 MiB;
 * CORE_ERANGE).  Text is NUL-terminated: no embedded NULs.  Text is stored
 * verbatim (bound parameters, never spliced into SQL).
 *
 * Search: an FTS5 index over message content (external content, kept in sync
 * by triggers; messages still streaming are not indexed until they stop).
 * The user's query is plain text: it is split into words (letters, digits
 * and non-ASCII characters; everything else separates), repeated words are
 * dropped and the first 16 distinct ones kept, each quoted as an FTS5
 * string; the words must all match (any order), so quotes, AND, *, NEAR(
 * from users are just text.  Cost is bounded whatever the query and the
 * history: a search stops at its time limit (store_set_search_budget) with
 * CORE_ECANCEL, and snippets are computed by our own linear scan of the hits
 * returned (not by FTS5's snippet(), whose cost grows with the number of
 * terms times their occurrences).  Snippets mark matches with STORE_HL_START / STORE_HL_END
 * (\x02 / \x03): HTML-escape the snippet first, then replace the markers by
 * <mark> and </mark>.  (Content that itself contains \x02/\x03 would produce
 * stray marks, never markup injection, since escaping comes first.)
 *
 * Export: JSON is lossless (every message of the tree with ids, parents and
 * all fields, plus all conversation fields; reals with 17 digits) and
 * store_import_json() reads it back into a new conversation with new ids,
 * equal in everything else.  Markdown is the current branch for people:
 * "## User" / "## Assistant" sections, reasoning folded in a
 * <details><summary>Reasoning</summary> block, partial answers flagged.
 */
#ifndef STORE_H
#define STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

typedef struct store store;

#define STORE_ID_LEN 16 /* conversation id: hex chars, without the NUL */
#define STORE_HL_START "\x02"
#define STORE_HL_END "\x03"
#define STORE_DEFAULT_MAX_MESSAGE (1u << 20)
#define STORE_MAX_TITLE 1024 /* bytes */
#define STORE_MAX_QUERY 4096 /* bytes of a search query */
#define STORE_SEARCH_BUDGET_MS 750 /* default time limit of one search */

/* ---- open / close ------------------------------------------------------ */

/* Default database path: $XDG_DATA_HOME/smolbot/smolbot.db, else
 * $HOME/.local/share/smolbot/smolbot.db.  Writes into buf and returns it, or
 * NULL when neither variable is set (absolute) or buf is too small. */
const char *store_default_path(char *buf, size_t cap);

/* path "postgres://user@host:port/db" (or "postgresql://", libpq's URL
 * syntax) opens a PostgreSQL store instead: same calls, same answers
 * (store_pg.c says what differs); the schema is created or migrated at
 * open, by one of several processes starting together; "interrupted" is
 * set only on streams of processes that are gone; a server that cannot be
 * reached gives STORE_EUNAVAIL (at open too), and the store connects again
 * on the next call.
 *
 * Open or create the database at path (NULL = store_default_path(), whose
 * directories are created with mode 0700; ":memory:" gives a private
 * in-memory store).  Applies schema migrations (PRAGMA user_version),
 * enables WAL and foreign keys, and marks crashed streams interrupted.
 * A file from a newer smolbot (higher user_version) -> CORE_EUNSUP; a file
 * that is not SQLite -> CORE_EFORMAT.  *out is NULL on failure.  An
 * existing file that cannot be written (read-only file system, full disk)
 * opens read-only instead: see store_readonly(). */
int store_open(store **out, const char *path, core_err *err);
void store_close(store *s); /* NULL is a no-op */

/* Error of every write to a store opened read-only (beside core's codes). */
#define STORE_EREADONLY (-64)
/* The database server (PostgreSQL) cannot be reached: nothing was done;
 * the next call connects again (HTTP 503, beside core's codes). */
#define STORE_EUNAVAIL (-65)

/* NULL while the store is writable; else why it was opened read-only.
 * store_open() falls back to a read-only open when the file cannot be
 * opened for writing (a read-only file system, a full disk with no space
 * in reserve): the history stays readable and searchable as it is on disk,
 * and every write fails with STORE_EREADONLY and that reason.  A full disk
 * at run time makes writes fail with CORE_EFULL ("the disk is full");
 * store_delete() then releases the space the store holds in reserve
 * (<path>-reserve, 4 MiB, made at open), so deleting conversations works
 * and frees room inside the database for new messages. */
const char *store_readonly(const store *s);

/* Per-message byte limit for content, reasoning and system prompt
 * (default STORE_DEFAULT_MAX_MESSAGE). */
void store_set_max_message(store *s, size_t bytes);

/* PRAGMA integrity_check plus FTS5's 'integrity-check' of the search index
 * (with SQLite 3.40 that checks the index's own structure, not that it
 * matches every message); 0 when both say ok, else an error with the first
 * complaint.  Takes the lock for as long as the check reads the file. */
int store_check(store *s, core_err *err);

/* ---- conversations ----------------------------------------------------- */

typedef struct store_conv {
    char id[STORE_ID_LEN + 1];
    char *title;         /* owned; "" until set or taken from the first user line */
    int64_t created;     /* unix ms */
    int64_t updated;     /* unix ms, bumped by every change to it or its messages */
    char *pinned_date;   /* owned; "26 November 2026" for the chat format's Today Date */
    int thinking;        /* 0/1 */
    double temperature;
    double top_p;
    int top_k;
    double min_p;
    int max_tokens;      /* 0 = up to the context */
    char *system_prompt; /* owned; "" = none */
    int64_t current_leaf;/* message id, 0 = empty conversation */
    int64_t n_messages;  /* in the whole tree (read only) */
} store_conv;

/* Defaults (no strings): thinking 1, temperature 0.6, top_p 0.95, top_k 20,
 * min_p 0, max_tokens 0. */
void store_conv_defaults(store_conv *c);
/* Free the owned strings and zero the struct. */
void store_conv_clear(store_conv *c);
void store_conv_free_list(store_conv *list, int n);

/* Create a conversation with the settings of init (NULL = defaults; its id,
 * timestamps, leaf and count are ignored; NULL strings = empty, NULL
 * pinned_date = today in local time).  Writes the new id into id_out. */
int store_create(store *s, const store_conv *init, char id_out[STORE_ID_LEN + 1], core_err *err);
/* Fill *out (clear it with store_conv_clear).  Unknown id -> CORE_ENOTFOUND. */
int store_get(store *s, const char *id, store_conv *out, core_err *err);
/* Most recently updated first; limit <= 0 means 50.  *out is a malloc'd array
 * of *n entries (free with store_conv_free_list), NULL when empty. */
int store_list(store *s, int limit, int offset, store_conv **out, int *n, core_err *err);
int store_rename(store *s, const char *id, const char *title, core_err *err);
/* Write thinking, temperature, top_p, top_k, min_p, max_tokens, system_prompt
 * and pinned_date from c (NULL strings = leave unchanged). */
int store_set_settings(store *s, const char *id, const store_conv *c, core_err *err);
/* Delete the conversation and all its messages. */
int store_delete(store *s, const char *id, core_err *err);

/* ---- messages ---------------------------------------------------------- */

enum { STORE_MSG_DONE = 0, STORE_MSG_STREAMING = 1, STORE_MSG_PARTIAL = 2 };

typedef struct store_msg {
    int64_t id;
    int64_t parent;        /* 0 = root */
    char conv[STORE_ID_LEN + 1];
    char role[16];         /* "system", "user", "assistant", "tool" */
    char *content;         /* owned in results; borrowed in inputs; NULL = "" */
    char *reasoning;       /* idem */
    int64_t created;       /* unix ms */
    int status;            /* STORE_MSG_* */
    char finish[16];       /* "", "stop", "length", "cancelled", "error", "interrupted" */
    int prompt_tokens;
    int completion_tokens;
    double prefill_ms;
    double gen_ms;
    char model[128];       /* the model that wrote an answer ("" = unknown or not an answer);
                              set by store_append, kept by store_update */
    int sibling_index;     /* results of store_branch only: 0-based among siblings */
    int sibling_count;     /* idem: messages sharing this parent (>= 1) */
} store_msg;

/* Free owned strings of a message array and the array (NULL ok). */
void store_msgs_free(store_msg *m, int n);

/* Append m (role, content, reasoning, status, finish, counts, timings) under
 * m->parent (0 = root; else a message of the same conversation) and make it
 * the current leaf.  The first user message also becomes the title while the
 * title is empty (its first line, at most 80 bytes, cut on a character).
 * Writes the new id into *id_out (may be NULL). */
int store_append(store *s, const char *conv, const store_msg *m, int64_t *id_out, core_err *err);
/* Rewrite a message's content, reasoning, status, finish reason, token counts
 * and timings from m (role, parent and ids are not changed).  Used while
 * streaming (status STREAMING) and to finish (DONE or PARTIAL). */
int store_update(store *s, int64_t id, const store_msg *m, core_err *err);
/* One message by id into *out (free its strings with store_msg_clear).
 * Unknown id -> CORE_ENOTFOUND. */
int store_get_msg(store *s, int64_t id, store_msg *out, core_err *err);
void store_msg_clear(store_msg *m);
/* The path root -> leaf (leaf 0 = the conversation's current leaf), with
 * sibling_index/sibling_count filled.  Empty conversation: *n = 0. */
int store_branch(store *s, const char *conv, int64_t leaf, store_msg **out, int *n, core_err *err);
/* Every message of the conversation's tree in id order (parents first). */
int store_messages(store *s, const char *conv, store_msg **out, int *n, core_err *err);
/* Switch the shown branch: the current leaf becomes the newest leaf below
 * msg (following the most recent child at each step).  *leaf_out may be NULL. */
int store_set_leaf(store *s, const char *conv, int64_t msg, int64_t *leaf_out, core_err *err);

/* ---- search ------------------------------------------------------------ */

typedef struct store_hit {
    char conv[STORE_ID_LEN + 1];
    char *title;     /* owned: the conversation's title */
    int64_t msg;     /* message id */
    char role[16];
    int64_t created; /* of the message */
    char *snippet;   /* owned: ~16 words around the match, STORE_HL_* markers */
} store_hit;

/* Full-text search over message content, best match first.  An empty query
 * (no words) gives no hits.  limit <= 0 means 20.  A query over
 * STORE_MAX_QUERY bytes -> CORE_ERANGE; past the time limit, or after
 * store_stop_searches() -> CORE_ECANCEL, with a message saying which. */
int store_search(store *s, const char *query, int limit, int offset, store_hit **out, int *n,
                 core_err *err);
void store_hits_free(store_hit *h, int n);
/* Time limit of one search in ms (<= 0: STORE_SEARCH_BUDGET_MS), waiting for
 * a free search connection included. */
void store_set_search_budget(store *s, int ms);
/* Make running searches stop within a millisecond or so and later ones fail
 * at once (CORE_ECANCEL): for shutdown, so no search holds it up.  Thread-safe;
 * other store functions are unaffected. */
void store_stop_searches(store *s);

/* ---- export / import --------------------------------------------------- */

/* Lossless JSON of the conversation and its whole tree; *out malloc'd.
 * {"format":"smolbot-conversation","version":1,"conversation":{...},
 *  "messages":[{"id","parent","role","content","reasoning","created","status",
 *  "finish_reason","prompt_tokens","completion_tokens","prefill_ms","gen_ms"}]}
 * status is "done", "streaming" or "partial"; parent null for roots. */
int store_export_json(store *s, const char *conv, char **out, core_err *err);
/* Markdown of the current branch; *out malloc'd. */
int store_export_md(store *s, const char *conv, char **out, core_err *err);
/* Read an export (len bytes; not NUL-terminated is fine) into a new
 * conversation, all in one transaction; validates like store_append.
 * Writes the new id into id_out. */
int store_import_json(store *s, const char *json, size_t len, char id_out[STORE_ID_LEN + 1],
                      core_err *err);

#endif
