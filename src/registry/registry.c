/* registry.c -- names -> files -> engines; see registry.h.
 *
 * Data: files[] (one per device+inode: path, probe result, engine, holds,
 * last use, expiry) and names[] (each points at a file; the first name of
 * a file is its own, later ones are links or aliases). Both only grow
 * while the server runs, so indexes stay valid.
 *
 * A load: under the lock, unload idle files (LRU) until the new one fits,
 * or wait for holds to go; create the engine (its thread loads the model)
 * and take the hold; then, without the lock, wait for READY. Other
 * requests for the same file find the engine and wait on it the same way.
 * An unload takes the engine out of its file under the lock and frees it
 * outside (engine_free joins its thread).
 */
#include "registry/registry.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "gguf/gguf.h"
#include "tok/tok.h"

typedef struct rfile {
    char path[1024];
    dev_t dev;
    ino_t ino;
    uint64_t size;
    int64_t mtime_s, mtime_ns;
    char arch[32], quant[32];
    model_config cfg;
    int supported;
    char reason[256];
    int pinned;
    engine *eng;
    int loading;
    int holds;
    double last_used;   /* monotonic */
    double keep_s;      /* of the last release */
    double load_ms;
    int first_name;     /* names[] index */
} rfile;

typedef struct rname {
    char name[128];
    char target[128];
    int file;
} rname;

struct registry {
    registry_config cfg;
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* a hold was released, a load ended, quit */
    pthread_t reaper;
    int reaper_on, quit;
    rfile *files;
    size_t n_files, cap_files;
    rname *names;
    size_t n_names, cap_names;
};

/* ---- pure parts ------------------------------------------------------------- */

void registry_name_of(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 5 && !strcmp(b + n - 5, ".gguf")) n -= 5;
    if (n >= cap) n = cap - 1;
    memcpy(out, b, n);
    out[n] = 0;
}

const char *registry_file_type_name(uint32_t ft) {
    static const struct { uint32_t ft; const char *name; } names[] = {
        {0, "F32"}, {1, "F16"}, {2, "Q4_0"}, {3, "Q4_1"}, {7, "Q8_0"}, {8, "Q5_0"}, {9, "Q5_1"}, {10, "Q2_K"},
        {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"}, {14, "Q4_K_S"}, {15, "Q4_K_M"}, {16, "Q5_K_S"},
        {17, "Q5_K_M"}, {18, "Q6_K"}, {32, "BF16"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].ft == ft) return names[i].name;
    return NULL;
}

int registry_lru_pick(const registry_lru *v, size_t n) {
    int best = -1;
    for (size_t i = 0; i < n; i++) {
        if (!v[i].loaded || v[i].holds || v[i].pinned) continue;
        if (best < 0 || v[i].last_used < v[best].last_used) best = (int)i;
    }
    return best;
}

/* ---- probing ------------------------------------------------------------------ */

/* What a load would check, without the weights: header, config, tensor
 * table and types (model_load makes views), tokenizer. */
static void probe(rfile *f) {
    gguf *g = NULL;
    model *m = NULL;
    tok *t = NULL;
    core_err err = {0};
    snprintf(f->quant, sizeof f->quant, "?");
    snprintf(f->arch, sizeof f->arch, "?");
    if (gguf_open(&g, f->path, &err)) goto bad;
    gguf_str s;
    if (gguf_get_str(g, "general.architecture", &s, NULL) == 0)
        snprintf(f->arch, sizeof f->arch, "%.*s", (int)(s.len < 31 ? s.len : 31), s.ptr);
    uint32_t ft;
    const char *qn = gguf_get_u32(g, "general.file_type", &ft, NULL) == 0 ? registry_file_type_name(ft) : NULL;
    if (qn) {
        snprintf(f->quant, sizeof f->quant, "%s", qn);
    } else {
        const gguf_tensor *td = gguf_find_tensor(g, "blk.0.ffn_down.weight");
        if (td) snprintf(f->quant, sizeof f->quant, "%s", gguf_type_name(td->type));
    }
    model_opts mo = {.n_threads = 1, .gpu = MODEL_GPU_OFF};
    if (model_load(&m, g, &mo, &err) || tok_load(&t, g, &err)) goto bad;
    f->cfg = *model_get_config(m);
    f->supported = 1;
    f->reason[0] = 0;
    goto out;
bad:
    f->supported = 0;
    snprintf(f->reason, sizeof f->reason, "%.255s", err.msg[0] ? err.msg : "cannot be read");
out:
    tok_free(t);
    model_free(m);
    gguf_close(g);
}

/* ---- names ------------------------------------------------------------------- */

static size_t base_len(const char *s) {
    size_t n = strlen(s);
    return n > 7 && !strcmp(s + n - 7, ":latest") ? n - 7 : n;
}

static int find_locked(registry *r, const char *name) {
    size_t ln = base_len(name);
    for (size_t i = 0; i < r->n_names; i++) {
        const char *nm = r->names[i].name;
        if (base_len(nm) == ln && !memcmp(nm, name, ln)) return (int)i;
    }
    return -1;
}

static int add_name_locked(registry *r, const char *name, const char *target, int file, core_err *err) {
    if (!*name || strlen(name) >= sizeof r->names[0].name || strchr(name, '/') || strchr(name, '"'))
        return core_errf(err, CORE_EINVAL, "bad model name '%.100s' (1..127 bytes, no '/' or '\"')", name);
    if (find_locked(r, name) >= 0) return core_errf(err, CORE_EINVAL, "the model name '%s' is taken", name);
    if (r->n_names == r->cap_names) {
        size_t cap = r->cap_names ? 2 * r->cap_names : 16;
        rname *p = realloc(r->names, cap * sizeof *p);
        if (!p) return core_errf(err, CORE_ENOMEM, "out of memory");
        r->names = p;
        r->cap_names = cap;
    }
    rname *n = &r->names[r->n_names];
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(n->target, sizeof n->target, "%s", target ? target : "");
    n->file = file;
    if (r->files[file].first_name < 0) r->files[file].first_name = (int)r->n_names;
    r->n_names++;
    return 0;
}

/* The file of path (added and probed if new): its index in *idx. */
static int file_of_locked(registry *r, const char *path, int pinned, int *idx, core_err *err) {
    struct stat sb;
    if (stat(path, &sb)) return core_errf(err, CORE_EIO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return core_errf(err, CORE_EIO, "%s: not a regular file", path);
    for (size_t i = 0; i < r->n_files; i++)
        if (r->files[i].dev == sb.st_dev && r->files[i].ino == sb.st_ino) {
            r->files[i].pinned |= pinned;
            *idx = (int)i;
            return 0;
        }
    if (strlen(path) >= sizeof r->files[0].path) return core_errf(err, CORE_EINVAL, "path too long: %.100s...", path);
    if (r->n_files == r->cap_files) {
        size_t cap = r->cap_files ? 2 * r->cap_files : 16;
        rfile *p = realloc(r->files, cap * sizeof *p);
        if (!p) return core_errf(err, CORE_ENOMEM, "out of memory");
        r->files = p;
        r->cap_files = cap;
    }
    rfile *f = &r->files[r->n_files];
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->dev = sb.st_dev;
    f->ino = sb.st_ino;
    f->size = (uint64_t)sb.st_size;
    f->mtime_s = sb.st_mtim.tv_sec;
    f->mtime_ns = sb.st_mtim.tv_nsec;
    f->pinned = pinned;
    f->first_name = -1;
    f->keep_s = r->cfg.keep_alive_s;
    probe(f);
    if (!f->supported) LOG_WARN("registry: %s cannot be served: %s", path, f->reason);
    *idx = (int)r->n_files++;
    return 0;
}

int registry_add_file(registry *r, const char *name, const char *path, int pinned, core_err *err) {
    char own[128];
    if (!name) {
        registry_name_of(path, own, sizeof own);
        name = own;
    }
    pthread_mutex_lock(&r->mu);
    int idx, rc = find_locked(r, name) >= 0 ? core_errf(err, CORE_EINVAL, "the model name '%s' is taken", name)
                                            : file_of_locked(r, path, pinned, &idx, err);
    if (!rc) rc = add_name_locked(r, name, NULL, idx, err);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int registry_scan_dir(registry *r, const char *dir, int *n, core_err *err) {
    if (n) *n = 0;
    DIR *d = opendir(dir);
    if (!d) return core_errf(err, CORE_EIO, "cannot read the models directory %s: %s", dir, strerror(errno));
    char **v = NULL;
    size_t nv = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l <= 5 || strcmp(e->d_name + l - 5, ".gguf")) continue;
        if (nv == cap) {
            cap = cap ? 2 * cap : 16;
            char **p = realloc(v, cap * sizeof *p);
            if (!p) { rc = core_errf(err, CORE_ENOMEM, "out of memory"); break; }
            v = p;
        }
        if (!(v[nv] = strdup(e->d_name))) { rc = core_errf(err, CORE_ENOMEM, "out of memory"); break; }
        nv++;
    }
    closedir(d);
    if (nv) qsort(v, nv, sizeof *v, cmp_str);
    for (size_t i = 0; i < nv; i++) {
        char path[1100];
        snprintf(path, sizeof path, "%s/%s", dir, v[i]);
        core_err e2 = {0};
        if (!rc && registry_add_file(r, NULL, path, 0, &e2) == 0) {
            if (n) (*n)++;
        } else if (!rc) {
            LOG_WARN("registry: skipped %s: %s", path, e2.msg);
        }
        free(v[i]);
    }
    free(v);
    return rc;
}

int registry_add_alias(registry *r, const char *alias, const char *target, core_err *err) {
    pthread_mutex_lock(&r->mu);
    int t = find_locked(r, target), rc = 0, idx;
    if (t >= 0) {
        rc = add_name_locked(r, alias, r->names[t].name, r->names[t].file, err);
    } else if (strchr(target, '/') || strstr(target, ".gguf")) {
        rc = file_of_locked(r, target, 0, &idx, err);
        if (!rc) rc = add_name_locked(r, alias, target, idx, err);
    } else {
        rc = core_errf(err, CORE_ENOTFOUND, "alias %s: no model named '%s'", alias, target);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) s[--n] = 0;
    return s;
}

int registry_load_aliases(registry *r, const char *path, core_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return core_errf(err, CORE_EIO, "cannot read the aliases file %s: %s", path, strerror(errno));
    char line[2048];
    int ln = 0, rc = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        ln++;
        char *h = strchr(line, '#');
        if (h) *h = 0;
        char *s = trim(line);
        if (!*s) continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = core_errf(err, CORE_EFORMAT, "%s:%d: want 'alias = model name or file'", path, ln);
            break;
        }
        *eq = 0;
        core_err e2 = {0};
        if (registry_add_alias(r, trim(s), trim(eq + 1), &e2))
            rc = core_errf(err, CORE_EFORMAT, "%s:%d: %s", path, ln, e2.msg);
    }
    fclose(f);
    return rc;
}

/* ---- state -------------------------------------------------------------------- */

static uint64_t mem_of(const rfile *f) {
    if (!f->eng) return 0;
    engine_metrics m;
    engine_get_metrics(f->eng, &m);
    return f->size + m.kv_bytes;
}

/* A load whose every waiter gave up (its client left) ends with nobody to
 * say so: the file counts as loaded (and may be unloaded) once its engine
 * is no longer loading. A waiter still there does it itself (load_ms). */
static void settle_locked(registry *r) {
    for (size_t i = 0; i < r->n_files; i++) {
        rfile *f = &r->files[i];
        if (f->loading && !f->holds && f->eng && engine_state(f->eng) != ENGINE_LOADING) {
            f->loading = 0;
            pthread_cond_broadcast(&r->cv);
        }
    }
}

size_t registry_count(registry *r) {
    pthread_mutex_lock(&r->mu);
    size_t n = r->n_names;
    pthread_mutex_unlock(&r->mu);
    return n;
}

int registry_get(registry *r, size_t i, registry_model *o) {
    pthread_mutex_lock(&r->mu);
    settle_locked(r);
    if (i >= r->n_names) {
        pthread_mutex_unlock(&r->mu);
        return -1;
    }
    const rname *n = &r->names[i];
    const rfile *f = &r->files[n->file];
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", n->name);
    snprintf(o->target, sizeof o->target, "%s", n->target);
    o->primary = f->first_name == (int)i;
    snprintf(o->path, sizeof o->path, "%s", f->path);
    snprintf(o->arch, sizeof o->arch, "%s", f->arch);
    snprintf(o->quant, sizeof o->quant, "%s", f->quant);
    o->file_size = f->size;
    o->mtime_s = f->mtime_s;
    o->mtime_ns = f->mtime_ns;
    o->cfg = f->cfg;
    o->supported = f->supported;
    snprintf(o->reason, sizeof o->reason, "%s", f->reason);
    o->pinned = f->pinned;
    o->loading = f->loading;
    o->loaded = f->eng && !f->loading && engine_state(f->eng) == ENGINE_READY;
    o->holds = f->holds;
    int ctx = r->cfg.ec.n_ctx > 0 ? r->cfg.ec.n_ctx : 4096;
    o->n_ctx = o->loaded ? engine_ctx_size(f->eng) : (f->cfg.n_ctx_train > 0 && f->cfg.n_ctx_train < ctx ? f->cfg.n_ctx_train : ctx);
    o->mem_bytes = o->loaded ? mem_of(f) : 0;
    o->last_used = f->last_used;
    o->load_ms = f->load_ms;
    if (o->loaded) {
        if (f->pinned || f->keep_s < 0 || f->holds) {
            o->expires_at = -1;
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double wall = ts.tv_sec + ts.tv_nsec / 1e9;
            o->expires_at = wall + (f->last_used + f->keep_s - core_now_s());
        }
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

uint64_t registry_mem_budget(registry *r) { return r->cfg.mem_budget; }

int registry_find(registry *r, const char *name) {
    pthread_mutex_lock(&r->mu);
    int i = find_locked(r, name);
    pthread_mutex_unlock(&r->mu);
    return i;
}

int registry_default(registry *r, char *out, size_t cap) {
    pthread_mutex_lock(&r->mu);
    int pick = -1;
    for (size_t i = 0; i < r->n_names && pick < 0; i++)
        if (r->files[r->names[i].file].pinned) pick = (int)i;
    for (size_t i = 0; i < r->n_names && pick < 0; i++)
        if (r->files[r->names[i].file].supported) pick = (int)i;
    if (pick >= 0) snprintf(out, cap, "%s", r->names[pick].name);
    pthread_mutex_unlock(&r->mu);
    return pick >= 0 ? 0 : -1;
}

/* ---- loading and unloading ------------------------------------------------------ */

/* Take file i's engine out (caller frees it without the lock). */
static engine *detach_locked(registry *r, size_t i) {
    engine *e = r->files[i].eng;
    r->files[i].eng = NULL;
    LOG_INFO("registry: unloading %s", r->files[i].path);
    return e;
}

/* The idle file to unload first, or -1. */
static int victim_locked(registry *r, size_t except) {
    registry_lru v[64];
    size_t n = r->n_files < 64 ? r->n_files : 64;
    settle_locked(r);
    for (size_t i = 0; i < n; i++) {
        const rfile *f = &r->files[i];
        v[i] = (registry_lru){f->eng != NULL && !f->loading, f->holds, f->pinned || i == except, f->last_used};
        /* an engine with queued or running requests is busy whatever the holds say */
        if (v[i].loaded && !v[i].holds) {
            engine_metrics m;
            engine_get_metrics(f->eng, &m);
            if (m.active || m.queued) v[i].holds = 1;
        }
    }
    return registry_lru_pick(v, n);
}

static uint64_t used_locked(registry *r) {
    uint64_t u = 0;
    for (size_t i = 0; i < r->n_files; i++) u += mem_of(&r->files[i]);
    return u;
}

int registry_acquire(registry *r, const char *name, registry_wait_fn wait, void *wait_ctx, engine **out,
                     double *load_ms, core_err *err) {
    *out = NULL;
    if (load_ms) *load_ms = 0;
    double t0 = core_now_s();
    int waited = 0;
    pthread_mutex_lock(&r->mu);
    int ni = find_locked(r, name);
    if (ni < 0) {
        pthread_mutex_unlock(&r->mu);
        return core_errf(err, CORE_ENOTFOUND, "model \"%.200s\" not found", name);
    }
    size_t fi = (size_t)r->names[ni].file;
    rfile *f = &r->files[fi];
    if (!f->supported) {
        int rc = core_errf(err, CORE_EUNSUP, "model \"%.200s\" cannot be served: %s", name, f->reason);
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    while (!f->eng) {
        /* make room: idle files go, least recently used first */
        uint64_t used = used_locked(r);
        if (!r->cfg.mem_budget || used + f->size <= r->cfg.mem_budget || used == 0) break;
        int v = victim_locked(r, fi);
        if (v >= 0) {
            engine *e = detach_locked(r, (size_t)v);
            pthread_mutex_unlock(&r->mu);
            engine_free(e);
            pthread_mutex_lock(&r->mu);
            f = &r->files[fi];
            continue;
        }
        /* only busy files stand in the way: wait for one to go idle */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        waited = 1;
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        f = &r->files[fi];
        if (r->quit || (wait && wait(wait_ctx))) {
            pthread_mutex_unlock(&r->mu);
            return core_errf(err, CORE_ECANCEL, "gave up waiting for memory to load \"%.200s\"", name);
        }
    }
    if (!f->eng) {
        engine_config ec = r->cfg.ec;
        ec.model_path = f->path;
        core_err e2 = {0};
        if (engine_new(&f->eng, &ec, &e2)) {
            f->eng = NULL;
            pthread_mutex_unlock(&r->mu);
            return core_errf(err, CORE_EUNSUP, "model \"%.200s\": %s", name, e2.msg);
        }
        f->loading = 1;
        LOG_INFO("registry: loading %s", f->path);
    }
    engine *e = f->eng;
    f->holds++;
    int loading = f->loading;
    pthread_mutex_unlock(&r->mu);

    int st;
    while ((st = engine_wait_ready(e, 1.0)) == ENGINE_LOADING) {
        waited = 1;
        if (wait && wait(wait_ctx)) {
            registry_release(r, e, REGISTRY_KEEP_DEFAULT);
            return core_errf(err, CORE_ECANCEL, "gave up waiting for \"%.200s\" to load", name);
        }
    }
    if (loading || waited) waited = 1;
    pthread_mutex_lock(&r->mu);
    f = &r->files[fi];
    if (f->loading && f->eng == e) {
        f->loading = 0;
        f->load_ms = (core_now_s() - t0) * 1e3;
        pthread_cond_broadcast(&r->cv);
    }
    if (st != ENGINE_READY) {
        f->supported = 0;
        snprintf(f->reason, sizeof f->reason, "%s", engine_state_message(e));
        int rc = core_errf(err, CORE_EUNSUP, "model \"%.200s\" failed to load: %s", name, f->reason);
        pthread_mutex_unlock(&r->mu);
        registry_release(r, e, 0);
        return rc;
    }
    pthread_mutex_unlock(&r->mu);
    if (load_ms && waited) *load_ms = (core_now_s() - t0) * 1e3;
    *out = e;
    return 0;
}

int registry_hold(registry *r, engine *e) {
    int rc = CORE_ENOTFOUND;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_files; i++)
        if (r->files[i].eng == e) {
            r->files[i].holds++;
            rc = 0;
            break;
        }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void registry_release(registry *r, engine *e, double keep_alive_s) {
    if (!e) return;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_files; i++) {
        rfile *f = &r->files[i];
        if (f->eng != e) continue;
        if (f->holds > 0) f->holds--;
        f->last_used = core_now_s();
        if (!isnan(keep_alive_s)) f->keep_s = keep_alive_s;
        else f->keep_s = r->cfg.keep_alive_s;
        break;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int registry_unload(registry *r, const char *name) {
    pthread_mutex_lock(&r->mu);
    int ni = find_locked(r, name);
    if (ni < 0) {
        pthread_mutex_unlock(&r->mu);
        return CORE_ENOTFOUND;
    }
    size_t fi = (size_t)r->names[ni].file;
    settle_locked(r);
    if (!r->files[fi].eng) {
        pthread_mutex_unlock(&r->mu);
        return 0;
    }
    if (r->files[fi].holds || r->files[fi].pinned || r->files[fi].loading) {
        pthread_mutex_unlock(&r->mu);
        return CORE_EFULL;
    }
    engine_metrics m;
    engine_get_metrics(r->files[fi].eng, &m);
    if (m.active || m.queued) {
        pthread_mutex_unlock(&r->mu);
        return CORE_EFULL;
    }
    engine *e = detach_locked(r, fi);
    pthread_mutex_unlock(&r->mu);
    engine_free(e);
    return 0;
}

/* Drop names[i], keeping every file's first_name pointing at its first
 * remaining name (-1 when it has none). */
static void drop_name_locked(registry *r, size_t i) {
    memmove(&r->names[i], &r->names[i + 1], (r->n_names - i - 1) * sizeof *r->names);
    r->n_names--;
    for (size_t f = 0; f < r->n_files; f++) r->files[f].first_name = -1;
    for (size_t k = 0; k < r->n_names; k++)
        if (r->files[r->names[k].file].first_name < 0) r->files[r->names[k].file].first_name = (int)k;
}

int registry_remove(registry *r, const char *name, char *path_out, size_t cap, core_err *err) {
    if (cap) path_out[0] = 0;
    pthread_mutex_lock(&r->mu);
    int ni = find_locked(r, name), rc = 0;
    engine *e = NULL;
    if (ni < 0) {
        rc = core_errf(err, CORE_ENOTFOUND, "model \"%.200s\" not found", name);
        goto out;
    }
    size_t fi = (size_t)r->names[ni].file;
    rfile *f = &r->files[fi];
    if (r->names[ni].target[0]) { /* an alias: the file and its other names stay */
        drop_name_locked(r, (size_t)ni);
        goto out;
    }
    settle_locked(r);
    engine_metrics m = {0};
    if (f->eng) engine_get_metrics(f->eng, &m);
    if (f->pinned) rc = core_errf(err, CORE_EINVAL, "model \"%.200s\" was given with -m: it stays while the server runs", name);
    else if (f->holds || f->loading || m.active || m.queued)
        rc = core_errf(err, CORE_EFULL, "model \"%.200s\" is serving a request: try again when it is done", name);
    if (rc) goto out;
    if (f->eng) e = detach_locked(r, fi);
    for (size_t k = r->n_names; k-- > 0;)
        if ((size_t)r->names[k].file == fi) drop_name_locked(r, k);
    if (cap) snprintf(path_out, cap, "%s", f->path);
    f->supported = 0; /* unreachable now; the slot stays so other indices hold */
    snprintf(f->reason, sizeof f->reason, "deleted");
out:
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    engine_free(e);
    return rc;
}

void registry_each_engine(registry *r, void (*fn)(void *ctx, engine *e, const char *name), void *ctx) {
    pthread_mutex_lock(&r->mu);
    settle_locked(r);
    for (size_t i = 0; i < r->n_files; i++)
        if (r->files[i].eng && !r->files[i].loading)
            fn(ctx, r->files[i].eng, r->files[i].first_name >= 0 ? r->names[r->files[i].first_name].name : "");
    pthread_mutex_unlock(&r->mu);
}

/* Unloads files whose keep-alive ran out. */
static void *reaper_main(void *arg) {
    registry *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->quit) {
        double now = core_now_s();
        int freed = 0;
        settle_locked(r);
        for (size_t i = 0; i < r->n_files; i++) {
            rfile *f = &r->files[i];
            if (!f->eng || f->loading || f->holds || f->pinned || f->keep_s < 0) continue;
            if (now < f->last_used + f->keep_s) continue;
            engine_metrics m;
            engine_get_metrics(f->eng, &m);
            if (m.active || m.queued) continue;
            engine *e = detach_locked(r, i);
            pthread_mutex_unlock(&r->mu);
            engine_free(e);
            pthread_mutex_lock(&r->mu);
            freed = 1;
            break;
        }
        if (freed) {
            pthread_cond_broadcast(&r->cv);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int registry_new(registry **out, const registry_config *cfg, core_err *err) {
    *out = NULL;
    registry *r = calloc(1, sizeof *r);
    if (!r) return core_errf(err, CORE_ENOMEM, "out of memory");
    r->cfg = *cfg;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if (pthread_create(&r->reaper, NULL, reaper_main, r)) {
        registry_free(r);
        return core_errf(err, CORE_ENOMEM, "cannot start a thread");
    }
    r->reaper_on = 1;
    *out = r;
    return 0;
}

void registry_free(registry *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->quit = 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (r->reaper_on) pthread_join(r->reaper, NULL);
    for (size_t i = 0; i < r->n_files; i++) engine_free(r->files[i].eng);
    free(r->files);
    free(r->names);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
