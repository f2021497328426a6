/* registry.h -- the models a server serves, by name: loaded on demand,
 * unloaded when idle too long or when memory is needed.
 *
 * A registry holds files and names. A file is one GGUF on disk, known by
 * device and inode, so two names (links, aliases) of the same file share
 * one engine. Each file is probed when added: its header, architecture,
 * config, tensor types and tokenizer are checked without reading the
 * weights (gguf maps the file; model_load makes views), and a file that
 * cannot run is kept, listed as unsupported with the reason.
 *
 * registry_acquire() hands out an engine for a name with a hold; the
 * engine is created (and the model loaded) when the file has none. Before
 * a load, idle files are unloaded, least recently used first, until the
 * new file fits the memory budget (a file's cost is its size, the weights
 * being mapped, plus the KV caches its engine holds). A file with holds is
 * never unloaded: when only busy files stand in the way the load waits for
 * one to go idle; a file that does not fit an empty budget loads anyway
 * (the budget is a policy, not a promise the kernel made).
 * registry_release() gives a hold back with the request's keep-alive: the
 * file unloads that long after its last hold goes (0: at once, < 0:
 * never). A thread of the registry unloads expired files.
 *
 * Locking: one mutex; engines are created under it and freed outside it.
 * Every function is safe from any thread except the engine threads (an
 * engine callback must not release: that could free its own engine).
 */
#ifndef REGISTRY_H
#define REGISTRY_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "engine/engine.h"
#include "model/model.h"

typedef struct registry registry;

typedef struct registry_config {
    engine_config ec;     /* every engine's settings (model_path is each file's) */
    uint64_t mem_budget;  /* bytes for loaded files and their caches; 0: no limit */
    double keep_alive_s;  /* default idle time before an unload; < 0: forever */
} registry_config;

/* A name's state, copied out (registry_get). */
typedef struct registry_model {
    char name[128];
    char target[128];     /* an alias: the name it was given for; else "" */
    int primary;          /* the file's first name (aliases and other links are not) */
    char path[1024];
    char arch[32];
    char quant[32];       /* "Q4_K_M", "F32", ... ("?" when the header has no file type) */
    uint64_t file_size;
    int64_t mtime_s, mtime_ns;
    model_config cfg;     /* valid when supported */
    int supported;        /* 0: reason says why it cannot run */
    char reason[256];
    int pinned;           /* never unloaded */
    int loaded;           /* an engine is READY */
    int loading;
    int holds;            /* requests running or waiting on it */
    int n_ctx;            /* the engine's context when loaded, else the configured one */
    uint64_t mem_bytes;   /* loaded: file size + KV caches held; else 0 */
    double last_used;     /* core_now_s of the last release */
    double expires_at;    /* wall clock (s since the epoch) of the unload; 0: not loaded; < 0: never */
    double load_ms;       /* the last load's duration */
} registry_model;

/* The keep-alive of registry_release meaning "the registry's default". */
#define REGISTRY_KEEP_DEFAULT NAN

int registry_new(registry **out, const registry_config *cfg, core_err *err);
/* Unload everything (engines freed: cancel their requests first). NULL ok. */
void registry_free(registry *r);

/* Add a file under name (NULL: the file name without ".gguf"). pinned:
 * loaded now (registry_acquire's wait is the caller's) and never unloaded.
 * Errors: CORE_EINVAL (name taken or malformed), CORE_EIO (no such file). A file that
 * cannot run is added as unsupported (returns 0). */
int registry_add_file(registry *r, const char *name, const char *path, int pinned, core_err *err);
/* Every *.gguf of dir (sorted by name; hidden files skipped). Returns the
 * count added in *n (may be NULL). CORE_EIO: dir cannot be read. */
int registry_scan_dir(registry *r, const char *dir, int *n, core_err *err);
/* Another name for target: a registered name, or a file path (added
 * unless already there). */
int registry_add_alias(registry *r, const char *alias, const char *target, core_err *err);
/* An aliases file: one "alias = target" a line; '#' starts a comment. */
int registry_load_aliases(registry *r, const char *path, core_err *err);

size_t registry_count(registry *r);
uint64_t registry_mem_budget(registry *r); /* bytes; 0: no limit */
/* Name i (registration order) copied into *out; -1 when i is out of range. */
int registry_get(registry *r, size_t i, registry_model *out);
/* The index of name (a trailing ":latest" on either side is ignored), or -1. */
int registry_find(registry *r, const char *name);
/* The default name: the first pinned, else the first supported. 0, or -1 when none. */
int registry_default(registry *r, char *out, size_t cap);

/* Called about once a second while a request waits for a load; nonzero
 * gives up (the client left). */
typedef int (*registry_wait_fn)(void *ctx);

/* An engine (READY) for name, held. *load_ms: how long this call waited
 * for a load (0 when loaded already). *canon: the file's first name (may
 * be NULL). Errors: CORE_ENOTFOUND (no such name), CORE_EUNSUP (the file
 * cannot run, or the load failed: err says why), CORE_ECANCEL (wait gave up). */
int registry_acquire(registry *r, const char *name, registry_wait_fn wait, void *wait_ctx, engine **out,
                     double *load_ms, core_err *err);
/* One more hold on e, which the caller holds already (a job of its
 * request). 0, or CORE_ENOTFOUND when e is not the registry's. */
int registry_hold(registry *r, engine *e);
/* Give back a hold on e with a keep-alive in seconds (REGISTRY_KEEP_DEFAULT,
 * 0 unload now when idle, < 0 never). */
void registry_release(registry *r, engine *e, double keep_alive_s);
/* Unload name's file now if idle (Ollama's keep_alive 0 with no prompt).
 * 0, CORE_ENOTFOUND, or CORE_EFULL when it has holds or is pinned. */
int registry_unload(registry *r, const char *name);
/* Forget a name (Ollama's delete). An alias goes alone. A file's name takes
 * the file with it: its engine is unloaded and every name of it goes, and
 * its path is copied to path_out (cap bytes) for the caller to remove; an
 * alias leaves path_out "". 0, CORE_ENOTFOUND, CORE_EINVAL (the file was
 * pinned with -m) or CORE_EFULL (it is serving or loading: try later). */
int registry_remove(registry *r, const char *name, char *path_out, size_t cap, core_err *err);

/* fn for every loaded engine (engine_forget of a conversation, memory on
 * the status page). Runs under the registry's lock: fn must not call it. */
void registry_each_engine(registry *r, void (*fn)(void *ctx, engine *e, const char *name), void *ctx);

/* ---- the pure parts (tests) ---- */

/* The name of a model file: its base name without ".gguf". */
void registry_name_of(const char *path, char *out, size_t cap);
/* The quantization name of GGUF general.file_type (NULL if unknown). */
const char *registry_file_type_name(uint32_t ft);

/* The eviction choice: among loaded files without holds and not pinned,
 * the least recently used; -1 when none may go. */
typedef struct registry_lru {
    int loaded, holds, pinned;
    double last_used;
} registry_lru;
int registry_lru_pick(const registry_lru *v, size_t n);

#endif
