/* test_registry.c -- the model registry: naming, the LRU choice, scanning
 * a directory (links share a file, unreadable files are listed with the
 * reason), aliases, and loading under a budget that fits one model: the
 * idle one is unloaded for the other, a held one never is, a keep-alive
 * of 0 unloads after the release. The loads use ../shared's tiny models
 * (skipped without them).
 */
#include "t.h"

#include <sys/stat.h>
#include <unistd.h>

#include "registry/registry.h"

static void test_name_of(void) {
    char b[64];
    registry_name_of("/x/y/SmolLM3-3B-Q4_K_M.gguf", b, sizeof b);
    CHECK_EQ_STR(b, "SmolLM3-3B-Q4_K_M");
    registry_name_of("plain", b, sizeof b);
    CHECK_EQ_STR(b, "plain");
    registry_name_of("dir/a.gguf.bak", b, sizeof b);
    CHECK_EQ_STR(b, "a.gguf.bak");
    registry_name_of("/x/abcdefgh.gguf", b, 4);
    CHECK_EQ_STR(b, "abc");
    CHECK_EQ_STR(registry_file_type_name(15), "Q4_K_M");
    CHECK_EQ_STR(registry_file_type_name(0), "F32");
    CHECK(registry_file_type_name(999) == NULL);
}

static void test_lru_pick(void) {
    registry_lru v[4] = {
        {1, 0, 0, 50.0}, /* idle, used at 50 */
        {1, 1, 0, 10.0}, /* held: never */
        {0, 0, 0, 1.0},  /* not loaded */
        {1, 0, 1, 5.0},  /* pinned: never */
    };
    CHECK_EQ_INT(registry_lru_pick(v, 4), 0);
    v[0].holds = 1;
    CHECK_EQ_INT(registry_lru_pick(v, 4), -1);
    v[1].holds = 0;
    CHECK_EQ_INT(registry_lru_pick(v, 4), 1);
    v[0].holds = 0; /* both idle: the older goes first */
    CHECK_EQ_INT(registry_lru_pick(v, 4), 1);
    CHECK_EQ_INT(registry_lru_pick(v, 0), -1);
}

/* dir holding a.gguf -> q4 model, b.gguf -> f32 model, c.gguf -> q4 again
 * (a second link of a's file), bad.gguf (junk). */
static const char *make_dir(void) {
    const char *q4 = t_shared("models/smollm3-tiny-q4_k_m.gguf"), *f32 = t_shared("models/smollm3-tiny-f32.gguf");
    if (!q4 || !f32) return NULL;
    static char dir[300];
    snprintf(dir, sizeof dir, "%s/models", t_tmpdir());
    mkdir(dir, 0700);
    char p[400], abs[1024];
    snprintf(p, sizeof p, "%s/a.gguf", dir);
    if (!realpath(q4, abs)) return NULL;
    symlink(abs, p);
    snprintf(p, sizeof p, "%s/c.gguf", dir);
    symlink(abs, p);
    snprintf(p, sizeof p, "%s/b.gguf", dir);
    if (!realpath(f32, abs)) return NULL;
    symlink(abs, p);
    snprintf(p, sizeof p, "%s/bad.gguf", dir);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs("not a model", f);
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    if ((f = fopen(p, "w"))) fclose(f);
    return dir;
}

static registry *open_reg(uint64_t budget, double keep) {
    registry_config c = {0};
    c.ec.n_threads = 1;
    c.ec.n_ctx = 256;
    c.ec.kv_budget = 16u << 20;
    c.mem_budget = budget;
    c.keep_alive_s = keep;
    registry *r = NULL;
    core_err err = {0};
    if (registry_new(&r, &c, &err)) return NULL;
    return r;
}

static void test_scan_and_aliases(void) {
    const char *dir = make_dir();
    if (!dir) T_SKIP("../shared/models absent");
    registry *r = open_reg(0, 300);
    CHECK(r != NULL);
    if (!r) return;
    core_err err = {0};
    int n = 0;
    CHECK_EQ_INT(registry_scan_dir(r, dir, &n, &err), 0);
    CHECK_EQ_INT(n, 4);
    registry_model m;
    const char *names[] = {"a", "b", "bad", "c"};
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ_INT(registry_get(r, i, &m), 0);
        CHECK_EQ_STR(m.name, names[i]);
    }
    CHECK_EQ_INT(registry_get(r, 4, &m), -1);
    registry_get(r, 0, &m);
    CHECK(m.supported);
    CHECK_EQ_STR(m.quant, "Q4_K_M");
    CHECK_EQ_STR(m.arch, "smollm3");
    CHECK(!m.loaded);
    registry_get(r, 1, &m);
    CHECK_EQ_STR(m.quant, "F32");
    registry_get(r, 2, &m);
    CHECK(!m.supported);
    CHECK_MSG(strstr(m.reason, "GGUF") != NULL, "reason: %s", m.reason);
    CHECK_EQ_INT(registry_find(r, "c:latest"), 3);
    CHECK_EQ_INT(registry_find(r, "nope"), -1);
    char def[64];
    CHECK_EQ_INT(registry_default(r, def, sizeof def), 0);
    CHECK_EQ_STR(def, "a");

    CHECK_EQ_INT(registry_add_alias(r, "small", "a", &err), 0);
    CHECK(registry_add_alias(r, "small", "b", &err) != 0); /* taken */
    CHECK(registry_add_alias(r, "x", "missing", &err) == CORE_ENOTFOUND);
    char ap[400];
    snprintf(ap, sizeof ap, "%s/aliases", t_tmpdir());
    FILE *f = fopen(ap, "w");
    fputs("# comment\n\n  big = b   # trailing\n", f);
    fclose(f);
    CHECK_EQ_INT(registry_load_aliases(r, ap, &err), 0);
    CHECK(registry_find(r, "big") >= 0);
    registry_get(r, (size_t)registry_find(r, "big"), &m);
    CHECK_EQ_STR(m.target, "b");
    f = fopen(ap, "w");
    fputs("no equals sign\n", f);
    fclose(f);
    CHECK(registry_load_aliases(r, ap, &err) == CORE_EFORMAT);
    CHECK_MSG(strstr(err.msg, ":1:") != NULL, "%s", err.msg);

    /* a and c are one file: one engine */
    engine *e1 = NULL, *e2 = NULL;
    double ms = 0;
    CHECK_EQ_INT(registry_acquire(r, "a", NULL, NULL, &e1, &ms, &err), 0);
    CHECK(ms > 0);
    CHECK_EQ_INT(registry_acquire(r, "c", NULL, NULL, &e2, &ms, &err), 0);
    CHECK(e1 == e2);
    CHECK(ms == 0);
    CHECK_EQ_INT(registry_acquire(r, "bad", NULL, NULL, &e2, NULL, &err), CORE_EUNSUP);
    CHECK_EQ_INT(registry_acquire(r, "zz", NULL, NULL, &e2, NULL, &err), CORE_ENOTFOUND);
    registry_get(r, 0, &m);
    CHECK(m.loaded);
    CHECK_EQ_INT(m.holds, 2);
    CHECK(m.mem_bytes >= m.file_size);
    registry_release(r, e1, REGISTRY_KEEP_DEFAULT);
    registry_release(r, e1, REGISTRY_KEEP_DEFAULT);
    registry_free(r);
}

static int give_up_after_two(void *ctx) { return ++*(int *)ctx >= 2; }

static void test_budget(void) {
    const char *dir = make_dir();
    if (!dir) T_SKIP("../shared/models absent");
    /* room for the f32 file (~150 MB) or the q4 one (~36 MB), not both */
    registry *r = open_reg(160ull << 20, -1);
    if (!r) return;
    core_err err = {0};
    CHECK_EQ_INT(registry_scan_dir(r, dir, NULL, &err), 0);
    engine *ea = NULL, *eb = NULL;
    registry_model m;
    CHECK_EQ_INT(registry_acquire(r, "a", NULL, NULL, &ea, NULL, &err), 0);
    /* a is held: b waits for it, and this caller gives up */
    int calls = 0;
    CHECK_EQ_INT(registry_acquire(r, "b", give_up_after_two, &calls, &eb, NULL, &err), CORE_ECANCEL);
    registry_get(r, 0, &m);
    CHECK(m.loaded);
    registry_release(r, ea, REGISTRY_KEEP_DEFAULT); /* idle (kept forever, but it may be evicted) */
    CHECK_EQ_INT(registry_acquire(r, "b", NULL, NULL, &eb, NULL, &err), 0);
    registry_get(r, 0, &m);
    CHECK(!m.loaded); /* made room */
    registry_get(r, 1, &m);
    CHECK(m.loaded);
    CHECK(m.expires_at < 0); /* held */
    /* keep-alive 0: unloaded by the registry's thread soon after the release */
    registry_release(r, eb, 0);
    int gone = 0;
    for (int i = 0; i < 40 && !gone; i++) {
        usleep(50000);
        registry_get(r, 1, &m);
        gone = !m.loaded;
    }
    CHECK(gone);
    /* an explicit unload */
    CHECK_EQ_INT(registry_acquire(r, "a", NULL, NULL, &ea, NULL, &err), 0);
    CHECK_EQ_INT(registry_unload(r, "a"), CORE_EFULL); /* held */
    registry_release(r, ea, -1);
    CHECK_EQ_INT(registry_unload(r, "a"), 0);
    registry_get(r, 0, &m);
    CHECK(!m.loaded);
    CHECK_EQ_INT(registry_unload(r, "zz"), CORE_ENOTFOUND);
    registry_free(r);
}

int main(void) {
    core_log_set_level(CORE_LOG_ERROR);
    T_RUN(test_name_of);
    T_RUN(test_lru_pick);
    T_RUN(test_scan_and_aliases);
    T_RUN(test_budget);
    return t_done();
}
