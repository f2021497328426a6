/* store_int.h -- what the two backends of the store share (private to
 * src/store: nothing outside this folder includes it).
 *
 * store.c is the SQLite backend and the front door: every public function
 * starts there and hands a PostgreSQL store (store_open with a postgres://
 * URL) to the store_pg_* twin in store_pg.c.  Validation, ids, titles,
 * the search's word splitting and snippets, and the import's JSON reading
 * live once, in store.c, so both backends accept and answer the same.
 */
#ifndef STORE_INT_H
#define STORE_INT_H

#include <jansson.h>

#include "store/store.h"

/* ---- shared helpers (store.c) ------------------------------------------ */

int64_t store_i_now_ms(void);
int store_i_check_text(const store *s, const char *what, const char *t, size_t limit, core_err *err);
int store_i_check_id(const char *id, core_err *err);
int store_i_check_msg(const store *s, const store_msg *m, int with_role, core_err *err);
int store_i_check_settings(const store *s, const store_conv *c, core_err *err);
int store_i_random_id(char out[STORE_ID_LEN + 1], core_err *err);
void store_i_today(char *buf, size_t cap);
void store_i_title_from(const char *content, char *buf, size_t cap);
const char *store_i_status_name(int st);

/* search: the user's words (at most STORE_MAX_TERMS distinct, ASCII case
 * folded), what counts as a word character, and our linear snippet */
enum { STORE_MAX_TERMS = 16 };
typedef struct store_terms {
    const char *w[STORE_MAX_TERMS];
    size_t n[STORE_MAX_TERMS];
    int count;
} store_terms;
int store_i_word_char(unsigned char c);
void store_i_split_terms(const char *text, store_terms *t);
char *store_i_make_snippet(const char *text, size_t len, const store_terms *t);
int store_i_search_ms(const store *s);
int store_i_searches_stopped(const store *s);

/* import: one conversation / one message of an export, validated */
int store_i_import_conv(json_t *jc, store_conv *c, int64_t *created, int64_t *updated, core_err *err);
int store_i_import_msg(store *s, json_t *o, int i, store_msg *m, int64_t *old_id, int64_t *old_parent,
                       int64_t *created, core_err *err);
int64_t store_i_map_id(const int64_t *old, const int64_t *nw, int n, int64_t id);

/* ---- the PostgreSQL backend (store_pg.c) ------------------------------- */

typedef struct store_pg store_pg;
store_pg *store_i_pg(const store *s);

/* 1 when path names a PostgreSQL database (postgres:// or postgresql://). */
int store_pg_url(const char *path);
int store_pg_open(store_pg **out, store *s, const char *url, core_err *err);
void store_pg_close(store_pg *p);
int store_pg_check(store *s, core_err *err);
int store_pg_create(store *s, const store_conv *init, char id_out[STORE_ID_LEN + 1], core_err *err);
int store_pg_get(store *s, const char *id, store_conv *out, core_err *err);
int store_pg_list(store *s, int limit, int offset, store_conv **out, int *n, core_err *err);
int store_pg_rename(store *s, const char *id, const char *title, core_err *err);
int store_pg_set_settings(store *s, const char *id, const store_conv *c, core_err *err);
int store_pg_delete(store *s, const char *id, core_err *err);
int store_pg_append(store *s, const char *conv, const store_msg *m, int64_t *id_out, core_err *err);
int store_pg_update(store *s, int64_t id, const store_msg *m, core_err *err);
int store_pg_get_msg(store *s, int64_t id, store_msg *out, core_err *err);
int store_pg_branch(store *s, const char *conv, int64_t leaf, store_msg **out, int *n, core_err *err);
int store_pg_messages(store *s, const char *conv, store_msg **out, int *n, core_err *err);
int store_pg_set_leaf(store *s, const char *conv, int64_t msg, int64_t *leaf_out, core_err *err);
int store_pg_search(store *s, const char *query, int limit, int offset, store_hit **out, int *n, core_err *err);
void store_pg_stop_searches(store *s);
int store_pg_import(store *s, json_t *root, json_t *jc, json_t *jm, char id_out[STORE_ID_LEN + 1], core_err *err);

#endif
