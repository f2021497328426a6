/* gguf.c -- the GGUF reader: one checked walk over a read-only mapping.
 *
 * Layout (all little-endian; strings are u64 length + bytes, no NUL):
 *
 *   +0   u32 magic "GGUF"   +4 u32 version (2 or 3)
 *   +8   u64 n_tensors      +16 u64 n_kv
 *   +24  n_kv x  { str key; u32 vtype; value }
 *        n_tensors x { str name; u32 n_dims; u64 ne[n_dims]; u32 ggml_type; u64 offset }
 *        zero padding up to general.alignment (default 32)
 *        data: tensor t at data_offset + t.offset
 *
 *   value: fixed-size scalar | str | array { u32 elem_type; u64 count; elems }
 *   (arrays of arrays are legal, so values are walked recursively, depth-limited)
 *
 * Design. gguf_open() maps the file and calls parse(), which walks the
 * header exactly once with a cursor that refuses to read past the end. Each
 * count is compared with the bytes that remain BEFORE anything is allocated
 * for it (a kv needs at least 13 bytes, a tensor entry at least 32), so a
 * file claiming 2^60 keys fails in O(1). Every product (dims, blocks, bytes)
 * and sum (data offset + tensor offset + size) is overflow-checked. Work is
 * linear in the file size: each array element consumes at least one byte.
 *
 * What is kept: per kv the key (a NUL-terminated copy) and a gguf_value view
 * into the mapping; per tensor a gguf_tensor with a copied name. Keys and
 * tensor names are indexed in open-addressing hash tables (FNV-1a), which
 * also reject duplicates at open.
 *
 * Invariants after a successful open: every pointer handed out lies inside
 * [base, base + size); every tensor of a known type has ne[0] a multiple of
 * its block size, an offset that is a multiple of the alignment, and data +
 * nbytes inside the file. Tensors of a type we cannot size are kept (inspect
 * shows them) with data NULL and nbytes 0; model loading refuses them.
 *
 * Errors: "<name>: offset <N>: <what>", N the absolute offset of the field.
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC 0x46554747u /* "GGUF" little-endian */
#define MAX_DEPTH 8            /* arrays of arrays nest at most this deep */
#define MIN_KV_BYTES 13        /* u64 key len + u32 type + 1-byte value */
#define MIN_TENSOR_BYTES 32    /* u64 name len + u32 n_dims + u64 ne + u32 type + u64 offset */
#define MAX_DIM (UINT64_C(1) << 40) /* no real tensor has a dimension this long */

typedef struct kv {
    char *key;
    uint64_t off; /* absolute offset of the key (for messages) */
    gguf_value v;
} kv;

struct gguf {
    char *name;
    const uint8_t *base;
    uint64_t size;
    int mapped;
    int fd;              /* the mapped file, kept open for fstat; -1 if none */
    struct timespec mtime; /* at open */
    int guard;           /* slot in guards[], -1 if unguarded */
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    kv *kvs;
    int64_t n_tensors;
    gguf_tensor *tensors;
    uint64_t *t_field; /* absolute offset of each tensor's offset field (messages) */
    int32_t *kv_index; /* hash slots -> kv index, -1 empty */
    uint64_t kv_cap;
    int32_t *t_index;
    uint64_t t_cap;
};

/* ---- type facts ---------------------------------------------------------- */

static const struct {
    uint32_t id;
    const char *name;
    uint32_t block, bytes;
} type_facts[] = {
    {GGUF_GGML_F32, "F32", 1, 4},      {GGUF_GGML_F16, "F16", 1, 2},      {GGUF_GGML_Q4_0, "Q4_0", 32, 18},
    {GGUF_GGML_Q4_1, "Q4_1", 32, 20},  {GGUF_GGML_Q5_0, "Q5_0", 32, 22},  {GGUF_GGML_Q5_1, "Q5_1", 32, 24},
    {GGUF_GGML_Q8_0, "Q8_0", 32, 34},  {GGUF_GGML_Q8_1, "Q8_1", 32, 36},  {GGUF_GGML_Q2_K, "Q2_K", 256, 84},
    {GGUF_GGML_Q3_K, "Q3_K", 256, 110}, {GGUF_GGML_Q4_K, "Q4_K", 256, 144}, {GGUF_GGML_Q5_K, "Q5_K", 256, 176},
    {GGUF_GGML_Q6_K, "Q6_K", 256, 210}, {GGUF_GGML_Q8_K, "Q8_K", 256, 292}, {GGUF_GGML_BF16, "BF16", 1, 2},
    {24, "I8", 1, 1},                  {25, "I16", 1, 2},                 {26, "I32", 1, 4},
    {27, "I64", 1, 8},                 {28, "F64", 1, 8},
};

static int type_fact(uint32_t t) {
    for (size_t i = 0; i < CORE_ARRAY_LEN(type_facts); i++)
        if (type_facts[i].id == t) return (int)i;
    return -1;
}

const char *gguf_type_name(uint32_t t) {
    int i = type_fact(t);
    return i < 0 ? NULL : type_facts[i].name;
}
uint32_t gguf_type_block(uint32_t t) {
    int i = type_fact(t);
    return i < 0 ? 0 : type_facts[i].block;
}
uint32_t gguf_type_bytes(uint32_t t) {
    int i = type_fact(t);
    return i < 0 ? 0 : type_facts[i].bytes;
}

static const char *const vtype_names[GGUF_TYPE_COUNT] = {"u8",  "i8",  "u16",    "i16",   "u32", "i32", "f32",
                                                         "bool", "str", "array", "u64", "i64", "f64"};
const char *gguf_vtype_name(uint32_t vt) { return vt < GGUF_TYPE_COUNT ? vtype_names[vt] : NULL; }

/* Byte size of a fixed-size value type, 0 for string/array/unknown. */
static uint64_t vtype_size(uint32_t vt) {
    switch (vt) {
    case GGUF_TYPE_U8: case GGUF_TYPE_I8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_U16: case GGUF_TYPE_I16: return 2;
    case GGUF_TYPE_U32: case GGUF_TYPE_I32: case GGUF_TYPE_F32: return 4;
    case GGUF_TYPE_U64: case GGUF_TYPE_I64: case GGUF_TYPE_F64: return 8;
    default: return 0;
    }
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* ---- hash index ------------------------------------------------------------ */

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static int32_t *index_new(int64_t n, uint64_t *cap) {
    uint64_t c = 16;
    while (c < (uint64_t)n * 2) c <<= 1;
    int32_t *t = malloc(c * sizeof *t);
    if (!t) return NULL;
    memset(t, 0xff, c * sizeof *t); /* all -1 */
    *cap = c;
    return t;
}

/* Find `name` (names[i] via the getter); returns the slot; *found set if present. */
typedef const char *(*name_at_fn)(const gguf *g, int64_t i);
static const char *kv_name_at(const gguf *g, int64_t i) { return g->kvs[i].key; }
static const char *t_name_at(const gguf *g, int64_t i) { return g->tensors[i].name; }

static uint64_t index_slot(const gguf *g, const int32_t *tab, uint64_t cap, name_at_fn at, const char *name, int *found) {
    uint64_t s = fnv1a(name) & (cap - 1);
    for (;;) {
        if (tab[s] < 0) { *found = 0; return s; }
        if (!strcmp(at(g, tab[s]), name)) { *found = 1; return s; }
        s = (s + 1) & (cap - 1);
    }
}

/* ---- cursor ---------------------------------------------------------------- */

typedef struct cur {
    const uint8_t *p;
    uint64_t size, pos;
    const char *name;
    core_err *err;
} cur;

static uint64_t rem(const cur *c) { return c->size - c->pos; }

static int need(cur *c, uint64_t n, const char *what) {
    if (n > rem(c))
        return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: %s needs %llu bytes, only %llu left (file size %llu)",
                         c->name, (unsigned long long)c->pos, what, (unsigned long long)n,
                         (unsigned long long)rem(c), (unsigned long long)c->size);
    return 0;
}

static int rd_u32(cur *c, uint32_t *v, const char *what) {
    int rc = need(c, 4, what);
    if (rc) return rc;
    *v = le32(c->p + c->pos);
    c->pos += 4;
    return 0;
}

static int rd_u64(cur *c, uint64_t *v, const char *what) {
    int rc = need(c, 8, what);
    if (rc) return rc;
    *v = le64(c->p + c->pos);
    c->pos += 8;
    return 0;
}

static int rd_str(cur *c, gguf_str *s, const char *what) {
    uint64_t at = c->pos, n;
    int rc = rd_u64(c, &n, what);
    if (rc) return rc;
    if (n > rem(c))
        return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: %s length %llu runs past end of file (size %llu)",
                         c->name, (unsigned long long)at, what, (unsigned long long)n, (unsigned long long)c->size);
    s->ptr = (const char *)c->p + c->pos;
    s->len = n;
    c->pos += n;
    return 0;
}

/* A NUL-terminated copy of a key or tensor name; embedded NULs are refused
 * since every caller compares these as C strings. */
static int dup_name(cur *c, uint64_t at, gguf_str s, const char *what, char **out) {
    if (memchr(s.ptr, 0, s.len))
        return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: %s contains a NUL byte", c->name,
                         (unsigned long long)at, what);
    char *d = malloc(s.len + 1);
    if (!d) return core_errf(c->err, CORE_ENOMEM, "%s: offset %llu: out of memory", c->name, (unsigned long long)at);
    memcpy(d, s.ptr, s.len);
    d[s.len] = 0;
    *out = d;
    return 0;
}

/* Parse one value of type vt at the cursor into *v (views only). */
static int parse_value(cur *c, uint32_t vt, int depth, gguf_value *v) {
    uint64_t at = c->pos;
    memset(v, 0, sizeof *v);
    v->type = vt;
    uint64_t fs = vtype_size(vt);
    if (fs) {
        int rc = need(c, fs, gguf_vtype_name(vt));
        if (rc) return rc;
        v->ptr = c->p + c->pos;
        v->size = fs;
        c->pos += fs;
        return 0;
    }
    if (vt == GGUF_TYPE_STRING) {
        int rc = rd_str(c, &v->str, "string");
        if (rc) return rc;
        v->ptr = (const uint8_t *)v->str.ptr;
        v->size = v->str.len;
        return 0;
    }
    if (vt != GGUF_TYPE_ARRAY)
        return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: unknown value type %u", c->name,
                         (unsigned long long)at, vt);
    if (depth >= MAX_DEPTH)
        return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: arrays nested deeper than %d", c->name,
                         (unsigned long long)at, MAX_DEPTH);
    uint32_t et;
    uint64_t n;
    int rc = rd_u32(c, &et, "array element type");
    if (!rc) rc = rd_u64(c, &n, "array count");
    if (rc) return rc;
    if (et >= GGUF_TYPE_COUNT)
        return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: unknown array element type %u", c->name,
                         (unsigned long long)at, et);
    uint64_t start = c->pos;
    uint64_t efs = vtype_size(et);
    /* smallest possible element: fixed size, 8 (string length), 12 (array header) */
    uint64_t emin = efs ? efs : et == GGUF_TYPE_STRING ? 8 : 12;
    if (n > rem(c) / emin)
        return core_errf(c->err, CORE_EFORMAT,
                         "%s: offset %llu: array of %llu %s elements cannot fit in the %llu bytes left", c->name,
                         (unsigned long long)at + 4, (unsigned long long)n, gguf_vtype_name(et),
                         (unsigned long long)rem(c));
    if (efs) {
        c->pos += n * efs;
    } else if (et == GGUF_TYPE_STRING) {
        /* the hot case (128k tokens, 280k merges): lengths walked inline */
        for (uint64_t i = 0; i < n; i++) {
            if (rem(c) < 8) return need(c, 8, "string");
            uint64_t l = le64(c->p + c->pos);
            if (l > rem(c) - 8)
                return core_errf(c->err, CORE_EFORMAT,
                                 "%s: offset %llu: string length %llu runs past end of file (size %llu)", c->name,
                                 (unsigned long long)c->pos, (unsigned long long)l, (unsigned long long)c->size);
            c->pos += 8 + l;
        }
    } else {
        for (uint64_t i = 0; i < n; i++) {
            gguf_value e;
            rc = parse_value(c, et, depth + 1, &e);
            if (rc) return rc;
        }
    }
    v->elem_type = et;
    v->count = n;
    v->ptr = c->p + start;
    v->size = c->pos - start;
    return 0;
}

/* ---- open ------------------------------------------------------------------- */

static void free_tables(gguf *g) {
    if (g->kvs)
        for (int64_t i = 0; i < g->n_kv; i++) free(g->kvs[i].key);
    if (g->tensors)
        for (int64_t i = 0; i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    free(g->t_field);
    free(g->kv_index);
    free(g->t_index);
}

/* ---- the mapping's guard (see gguf_mapping_ok in gguf.h) -------------------
 *
 * A signal handler can only find the mappings through a global: guards[] is
 * that one exception to "no mutable globals".  Slots are claimed and
 * released with atomics; the handler only reads them and sets a flag, and
 * calls nothing but mmap (a plain system call on Linux, safe in a handler).
 * Zeros over the rest of the mapping, not one page: a truncated file faults
 * on every page past its end, and one signal is enough to know. */
enum { MAX_GUARDS = 32 };
static struct {
    _Atomic uintptr_t base; /* 0 = free slot */
    _Atomic size_t len;     /* the mapping's length, a whole number of pages */
    atomic_int faulted;
} guards[MAX_GUARDS];
static struct sigaction prev_bus;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_installed;
static size_t page_size = 4096;

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < MAX_GUARDS; i++) {
        uintptr_t b = atomic_load(&guards[i].base);
        size_t n = atomic_load(&guards[i].len);
        if (!b || a < b || a - b >= n) continue;
        uintptr_t page = a & ~(uintptr_t)(page_size - 1);
        void *m = mmap((void *)page, b + n - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (m == MAP_FAILED) break; /* cannot repair: die as without the guard */
        atomic_store(&guards[i].faulted, 1);
        return;
    }
    if ((prev_bus.sa_flags & SA_SIGINFO) && prev_bus.sa_sigaction) {
        prev_bus.sa_sigaction(sig, si, uc);
    } else if (prev_bus.sa_handler != SIG_DFL && prev_bus.sa_handler != SIG_IGN && prev_bus.sa_handler) {
        prev_bus.sa_handler(sig);
    } else {
        /* the default action: returning re-runs the access, which faults
         * again and now kills the process (with a core, as it would have) */
        signal(SIGBUS, SIG_DFL);
        if (si->si_code <= 0) raise(SIGBUS); /* sent by kill(), nothing to re-run */
    }
}

static void guard_install(void) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) page_size = (size_t)ps;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    guard_installed = sigaction(SIGBUS, &sa, &prev_bus) == 0;
}

/* A slot for [base, base + size), or -1 when none is free (then unguarded). */
static int guard_add(const void *base, uint64_t size) {
    pthread_once(&guard_once, guard_install);
    if (!guard_installed) return -1;
    size_t len = (size_t)((size + page_size - 1) & ~(uint64_t)(page_size - 1));
    for (int i = 0; i < MAX_GUARDS; i++) {
        uintptr_t zero = 0;
        if (atomic_load(&guards[i].base) == 0) {
            atomic_store(&guards[i].len, len);
            atomic_store(&guards[i].faulted, 0);
            if (atomic_compare_exchange_strong(&guards[i].base, &zero, (uintptr_t)base)) return i;
        }
    }
    return -1;
}

int gguf_mapping_ok(const gguf *g, core_err *err) {
    if (!g->mapped) return 0;
    if (g->guard >= 0 && atomic_load(&guards[g->guard].faulted))
        return core_errf(err, CORE_EIO, "%s was truncated while in use (a read past its new end got zeros)",
                         g->name);
    struct stat st;
    if (g->fd < 0) return 0;
    if (fstat(g->fd, &st) != 0) return core_errf(err, CORE_EIO, "%s: cannot stat: %s", g->name, strerror(errno));
    if ((uint64_t)st.st_size != g->size)
        return core_errf(err, CORE_EIO, "%s is now %llu bytes, it was %llu when loaded", g->name,
                         (unsigned long long)st.st_size, (unsigned long long)g->size);
    if (st.st_mtim.tv_sec != g->mtime.tv_sec || st.st_mtim.tv_nsec != g->mtime.tv_nsec)
        return core_errf(err, CORE_EIO, "%s was modified after it was loaded", g->name);
    return 0;
}

void gguf_close(gguf *g) {
    if (!g) return;
    free_tables(g);
    if (g->guard >= 0) atomic_store(&guards[g->guard].base, 0); /* before the range can be reused */
    if (g->mapped && g->size) munmap((void *)g->base, g->size);
    if (g->fd >= 0) close(g->fd);
    free(g->name);
    free(g);
}

static int parse_kvs(gguf *g, cur *c, uint64_t n_kv) {
    if (n_kv > rem(c) / MIN_KV_BYTES)
        return core_errf(c->err, CORE_EFORMAT, "%s: offset 16: kv count %llu cannot fit in a %llu-byte file",
                         c->name, (unsigned long long)n_kv, (unsigned long long)c->size);
    g->kvs = calloc(n_kv ? n_kv : 1, sizeof *g->kvs);
    g->kv_index = index_new((int64_t)n_kv, &g->kv_cap);
    if (!g->kvs || !g->kv_index) return core_errf(c->err, CORE_ENOMEM, "%s: offset 16: out of memory", c->name);
    for (uint64_t i = 0; i < n_kv; i++) {
        kv *e = &g->kvs[i];
        uint64_t at = c->pos;
        gguf_str key;
        int rc = rd_str(c, &key, "key");
        if (rc) return rc;
        rc = dup_name(c, at, key, "key", &e->key);
        if (rc) return rc;
        g->n_kv = (int64_t)i + 1; /* owns e->key from here on */
        e->off = at;
        int found;
        uint64_t slot = index_slot(g, g->kv_index, g->kv_cap, kv_name_at, e->key, &found);
        if (found)
            return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: duplicate key '%s'", c->name,
                             (unsigned long long)at, e->key);
        uint32_t vt;
        uint64_t tat = c->pos;
        rc = rd_u32(c, &vt, "value type");
        if (rc) return rc;
        if (vt >= GGUF_TYPE_COUNT)
            return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: key '%s' has unknown value type %u", c->name,
                             (unsigned long long)tat, e->key, vt);
        rc = parse_value(c, vt, 0, &e->v);
        if (rc) return rc;
        g->kv_index[slot] = (int32_t)i;
    }
    return 0;
}

static int parse_tensors(gguf *g, cur *c, uint64_t n_t) {
    if (n_t > rem(c) / MIN_TENSOR_BYTES)
        return core_errf(c->err, CORE_EFORMAT,
                         "%s: offset 8: tensor count %llu cannot fit in the %llu bytes left after the metadata",
                         c->name, (unsigned long long)n_t, (unsigned long long)rem(c));
    g->tensors = calloc(n_t ? n_t : 1, sizeof *g->tensors);
    g->t_field = calloc(n_t ? n_t : 1, sizeof *g->t_field);
    g->t_index = index_new((int64_t)n_t, &g->t_cap);
    if (!g->tensors || !g->t_field || !g->t_index) return core_errf(c->err, CORE_ENOMEM, "%s: offset 8: out of memory", c->name);
    for (uint64_t i = 0; i < n_t; i++) {
        gguf_tensor *t = &g->tensors[i];
        uint64_t at = c->pos;
        gguf_str nm;
        int rc = rd_str(c, &nm, "tensor name");
        if (rc) return rc;
        char *name;
        rc = dup_name(c, at, nm, "tensor name", &name);
        if (rc) return rc;
        t->name = name;
        g->n_tensors = (int64_t)i + 1;
        int found;
        uint64_t slot = index_slot(g, g->t_index, g->t_cap, t_name_at, name, &found);
        if (found)
            return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: duplicate tensor name '%s'", c->name,
                             (unsigned long long)at, name);
        uint64_t dat = c->pos;
        rc = rd_u32(c, &t->n_dims, "n_dims");
        if (rc) return rc;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS)
            return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: tensor '%s' has n_dims %u (must be 1..%d)",
                             c->name, (unsigned long long)dat, name, t->n_dims, GGUF_MAX_DIMS);
        uint64_t n = 1;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t nat = c->pos;
            rc = rd_u64(c, &t->ne[d], "tensor dimension");
            if (rc) return rc;
            if (t->ne[d] == 0 || t->ne[d] > MAX_DIM || core_mul_u64(n, t->ne[d], &n) || n > MAX_DIM * 16)
                return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: tensor '%s' has bad dimension ne[%u] = %llu",
                                 c->name, (unsigned long long)nat, name, d, (unsigned long long)t->ne[d]);
        }
        t->n_elems = n;
        uint64_t tat = c->pos;
        rc = rd_u32(c, &t->type, "tensor type");
        if (rc) return rc;
        uint32_t blk = gguf_type_block(t->type), bpb = gguf_type_bytes(t->type);
        if (blk) {
            if (t->ne[0] % blk)
                return core_errf(c->err, CORE_EFORMAT,
                                 "%s: offset %llu: tensor '%s' of type %s has row length %llu, not a multiple of %u",
                                 c->name, (unsigned long long)tat, name, gguf_type_name(t->type),
                                 (unsigned long long)t->ne[0], blk);
            if (core_mul_u64(n / blk, bpb, &t->nbytes))
                return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: tensor '%s' byte size overflows", c->name,
                                 (unsigned long long)tat, name);
        } else if (t->type > 1000) {
            /* an unknown id we keep for inspect must still be plausible */
            return core_errf(c->err, CORE_EFORMAT, "%s: offset %llu: tensor '%s' has invalid type %u", c->name,
                             (unsigned long long)tat, name, t->type);
        }
        g->t_field[i] = c->pos;
        rc = rd_u64(c, &t->offset, "tensor offset");
        if (rc) return rc;
        g->t_index[slot] = (int32_t)i;
    }
    return 0;
}

/* Second pass over tensors once the data offset is known. */
static int check_tensor_data(gguf *g, cur *c) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        unsigned long long at = (unsigned long long)g->t_field[i];
        uint64_t abs, end;
        if (t->offset % g->alignment)
            return core_errf(c->err, CORE_EFORMAT,
                             "%s: offset %llu: tensor '%s' data offset %llu is not a multiple of the alignment %u",
                             c->name, at, t->name, (unsigned long long)t->offset, g->alignment);
        if (core_add_u64(g->data_offset, t->offset, &abs) || core_add_u64(abs, t->nbytes, &end) || end > g->size)
            return core_errf(c->err, CORE_EFORMAT,
                             "%s: offset %llu: tensor '%s' data (offset %llu, %llu bytes) runs past end of file (size %llu)",
                             c->name, at, t->name, (unsigned long long)t->offset, (unsigned long long)t->nbytes,
                             (unsigned long long)g->size);
        t->data = gguf_type_block(t->type) ? g->base + abs : NULL;
    }
    return 0;
}

static int parse(gguf *g, core_err *err) {
    cur c = {g->base, g->size, 0, g->name, err};
    uint32_t magic, version;
    uint64_t n_t, n_kv;
    int rc = rd_u32(&c, &magic, "magic");
    if (rc) return rc;
    if (magic != GGUF_MAGIC)
        return core_errf(err, CORE_EFORMAT, "%s: offset 0: bad magic 0x%08x (not a GGUF file)", g->name, magic);
    if ((rc = rd_u32(&c, &version, "version"))) return rc;
    if (version != 2 && version != 3) {
        if (version == 1)
            return core_errf(err, CORE_EUNSUP, "%s: offset 4: GGUF version 1 is not supported (only 2 and 3)", g->name);
        return core_errf(err, CORE_EUNSUP, "%s: offset 4: unsupported GGUF version %u%s", g->name, version,
                         (version & 0xffff) == 0 ? " (big-endian file?)" : "");
    }
    g->version = version;
    if ((rc = rd_u64(&c, &n_t, "tensor count"))) return rc;
    if ((rc = rd_u64(&c, &n_kv, "kv count"))) return rc;
    if (n_t > INT32_MAX || n_kv > INT32_MAX)
        return core_errf(err, CORE_EFORMAT, "%s: offset %d: absurd %s count %llu", g->name, n_t > INT32_MAX ? 8 : 16,
                         n_t > INT32_MAX ? "tensor" : "kv", (unsigned long long)(n_t > INT32_MAX ? n_t : n_kv));
    if ((rc = parse_kvs(g, &c, n_kv))) return rc;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = gguf_find_key(g, "general.alignment");
    if (ai >= 0) {
        const kv *e = &g->kvs[ai];
        if (e->v.type != GGUF_TYPE_U32)
            return core_errf(err, CORE_EFORMAT, "%s: offset %llu: general.alignment has type %s, expected u32", g->name,
                             (unsigned long long)e->off, gguf_vtype_name(e->v.type));
        uint32_t a = le32(e->v.ptr);
        if (a == 0 || (a & (a - 1)))
            return core_errf(err, CORE_EFORMAT, "%s: offset %llu: general.alignment %u is not a nonzero power of two",
                             g->name, (unsigned long long)(e->v.ptr - g->base), a);
        g->alignment = a;
    }
    if ((rc = parse_tensors(g, &c, n_t))) return rc;
    uint64_t pad = (g->alignment - c.pos % g->alignment) % g->alignment;
    g->data_offset = c.pos + pad;
    if (g->data_offset > g->size) {
        if (g->n_tensors)
            return core_errf(err, CORE_EFORMAT, "%s: offset %llu: data section (aligned to %u) starts past end of file",
                             g->name, (unsigned long long)c.pos, g->alignment);
        g->data_offset = g->size; /* no tensors: padding may be absent */
    }
    return check_tensor_data(g, &c);
}

static int open_common(gguf **out, gguf *g, core_err *err) {
    int rc = parse(g, err);
    if (rc) {
        gguf_close(g);
        *out = NULL;
        return rc;
    }
    *out = g;
    return 0;
}

int gguf_open_mem(gguf **out, const void *data, size_t size, const char *name, core_err *err) {
    *out = NULL;
    gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(name ? name : "(memory)"))) {
        free(g);
        return core_errf(err, CORE_ENOMEM, "%s: offset 0: out of memory", name ? name : "(memory)");
    }
    g->fd = -1;
    g->guard = -1;
    g->base = data;
    g->size = size;
    return open_common(out, g, err);
}

int gguf_open(gguf **out, const char *path, core_err *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return core_errf(err, CORE_EIO, "%s: offset 0: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return core_errf(err, CORE_EIO, "%s: offset 0: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return core_errf(err, CORE_EIO, "%s: offset 0: not a regular file", path);
    }
    gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(path))) {
        free(g);
        close(fd);
        return core_errf(err, CORE_ENOMEM, "%s: offset 0: out of memory", path);
    }
    g->fd = -1;
    g->guard = -1;
    g->mtime = st.st_mtim;
    g->size = (uint64_t)st.st_size;
    if (g->size) {
        void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(g->name);
            free(g);
            return core_errf(err, CORE_EIO, "%s: offset 0: mmap failed: %s", path, strerror(e));
        }
        g->base = m;
        g->mapped = 1;
        g->fd = fd; /* for gguf_mapping_ok's fstat */
        g->guard = guard_add(m, g->size); /* before parse(): it reads the mapping */
    } else {
        g->base = (const uint8_t *)"";
        close(fd);
    }
    return open_common(out, g, err);
}

/* ---- accessors -------------------------------------------------------------- */

const char *gguf_name(const gguf *g) { return g->name; }
uint32_t gguf_version(const gguf *g) { return g->version; }
uint64_t gguf_file_size(const gguf *g) { return g->size; }
uint64_t gguf_data_offset(const gguf *g) { return g->data_offset; }
uint32_t gguf_alignment(const gguf *g) { return g->alignment; }
const void *gguf_base(const gguf *g) { return g->base; }
int64_t gguf_n_kv(const gguf *g) { return g->n_kv; }

const char *gguf_kv_key(const gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kvs[i].key : NULL; }

int gguf_kv_value(const gguf *g, int64_t i, gguf_value *out) {
    if (i < 0 || i >= g->n_kv) return CORE_EINVAL;
    *out = g->kvs[i].v;
    return 0;
}

int64_t gguf_find_key(const gguf *g, const char *key) {
    if (!g->kv_index || !key) return -1;
    int found;
    uint64_t s = index_slot(g, g->kv_index, g->kv_cap, kv_name_at, key, &found);
    return found ? g->kv_index[s] : -1;
}

int64_t gguf_n_tensors(const gguf *g) { return g->n_tensors; }
const gguf_tensor *gguf_tensor_at(const gguf *g, int64_t i) { return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL; }

const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name) {
    if (!g->t_index || !name) return NULL;
    int found;
    uint64_t s = index_slot(g, g->t_index, g->t_cap, t_name_at, name, &found);
    return found ? &g->tensors[g->t_index[s]] : NULL;
}

/* ---- values ------------------------------------------------------------------ */

static int vtype_is_int(uint32_t t) {
    return t == GGUF_TYPE_U8 || t == GGUF_TYPE_I8 || t == GGUF_TYPE_U16 || t == GGUF_TYPE_I16 || t == GGUF_TYPE_U32 ||
           t == GGUF_TYPE_I32 || t == GGUF_TYPE_U64 || t == GGUF_TYPE_I64;
}

/* Decode an integer scalar: *neg set for negative signed values, magnitude
 * semantics avoided by returning the value as i64 plus a u64 for big u64s. */
static int int_at(uint32_t t, const uint8_t *p, int64_t *s, uint64_t *u, int *is_big) {
    *is_big = 0;
    switch (t) {
    case GGUF_TYPE_U8: *s = p[0]; break;
    case GGUF_TYPE_I8: *s = (int8_t)p[0]; break;
    case GGUF_TYPE_U16: *s = (uint16_t)(p[0] | p[1] << 8); break;
    case GGUF_TYPE_I16: *s = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case GGUF_TYPE_U32: *s = le32(p); break;
    case GGUF_TYPE_I32: *s = (int32_t)le32(p); break;
    case GGUF_TYPE_I64: *s = (int64_t)le64(p); break;
    case GGUF_TYPE_U64:
        *u = le64(p);
        if (*u > INT64_MAX) { *is_big = 1; *s = 0; return 0; }
        *s = (int64_t)*u;
        break;
    case GGUF_TYPE_BOOL: *s = p[0] != 0; break;
    default: return CORE_ETYPE;
    }
    return 0;
}

int gguf_value_as_i64(const gguf_value *v, int64_t *out) {
    int64_t s;
    uint64_t u;
    int big;
    if (!v->ptr || v->size < vtype_size(v->type) || int_at(v->type, v->ptr, &s, &u, &big)) return CORE_ETYPE;
    if (big) return CORE_ERANGE;
    *out = s;
    return 0;
}

int gguf_value_as_f64(const gguf_value *v, double *out) {
    if (!v->ptr || !vtype_size(v->type) || v->size < vtype_size(v->type)) return CORE_ETYPE;
    if (v->type == GGUF_TYPE_F32) {
        uint32_t b = le32(v->ptr);
        float f;
        memcpy(&f, &b, 4);
        *out = f;
        return 0;
    }
    if (v->type == GGUF_TYPE_F64) {
        uint64_t b = le64(v->ptr);
        memcpy(out, &b, 8);
        return 0;
    }
    int64_t s;
    uint64_t u;
    int big;
    if (int_at(v->type, v->ptr, &s, &u, &big)) return CORE_ETYPE;
    *out = big ? (double)u : (double)s;
    return 0;
}

/* Byte length of the encoded value of type vt at p (at most `avail` bytes).
 * Returns 0 when it does not fit (values from an opened file always fit). */
static uint64_t encoded_len(uint32_t vt, const uint8_t *p, uint64_t avail, int depth) {
    uint64_t fs = vtype_size(vt);
    if (fs) return fs <= avail ? fs : 0;
    if (vt == GGUF_TYPE_STRING) {
        if (avail < 8) return 0;
        uint64_t n = le64(p);
        return n <= avail - 8 ? n + 8 : 0;
    }
    if (vt != GGUF_TYPE_ARRAY || avail < 12 || depth >= MAX_DEPTH) return 0;
    uint32_t et = le32(p);
    uint64_t n = le64(p + 4), pos = 12;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t l = encoded_len(et, p + pos, avail - pos, depth + 1);
        if (!l) return 0;
        pos += l;
    }
    return pos;
}

int gguf_arr_elem(const gguf_value *arr, uint64_t i, gguf_value *out) {
    if (arr->type != GGUF_TYPE_ARRAY || i >= arr->count) return CORE_ERANGE;
    memset(out, 0, sizeof *out);
    out->type = arr->elem_type;
    uint64_t fs = vtype_size(arr->elem_type);
    if (fs) {
        if (i >= arr->size / fs) return CORE_ERANGE;
        out->ptr = arr->ptr + i * fs;
        out->size = fs;
        return 0;
    }
    /* strings and nested arrays: walk (O(i); for display) */
    uint64_t pos = 0;
    for (uint64_t k = 0; k < i; k++) {
        uint64_t l = encoded_len(arr->elem_type, arr->ptr + pos, arr->size - pos, 1);
        if (!l) return CORE_EFORMAT;
        pos += l;
    }
    const uint8_t *p = arr->ptr + pos;
    uint64_t l = encoded_len(arr->elem_type, p, arr->size - pos, 1);
    if (!l) return CORE_EFORMAT;
    if (arr->elem_type == GGUF_TYPE_STRING) {
        out->str.ptr = (const char *)p + 8;
        out->str.len = l - 8;
        out->ptr = p + 8;
        out->size = l - 8;
    } else {
        out->elem_type = le32(p);
        out->count = le64(p + 4);
        out->ptr = p + 12;
        out->size = l - 12;
    }
    return 0;
}

/* ---- typed getters ------------------------------------------------------------ */

static int lookup(const gguf *g, const char *key, gguf_value *v, core_err *err) {
    int64_t i = gguf_find_key(g, key);
    memset(v, 0, sizeof *v);
    if (i < 0) return core_errf(err, CORE_ENOTFOUND, "%s: key '%s' not found", g->name, key);
    *v = g->kvs[i].v;
    return 0;
}

static int wrong_type(const gguf *g, const char *key, const gguf_value *v, const char *want, core_err *err) {
    return core_errf(err, CORE_ETYPE, "%s: offset %llu: key '%s' has type %s, expected %s", g->name,
                     (unsigned long long)g->kvs[gguf_find_key(g, key)].off, key, gguf_vtype_name(v->type), want);
}

int gguf_get_i64(const gguf *g, const char *key, int64_t *out, core_err *err) {
    gguf_value v;
    int rc = lookup(g, key, &v, err);
    if (rc) return rc;
    if (!vtype_is_int(v.type)) return wrong_type(g, key, &v, "an integer", err);
    if (gguf_value_as_i64(&v, out))
        return core_errf(err, CORE_ERANGE, "%s: key '%s' value does not fit in i64", g->name, key);
    return 0;
}

int gguf_get_u32(const gguf *g, const char *key, uint32_t *out, core_err *err) {
    int64_t x;
    int rc = gguf_get_i64(g, key, &x, err);
    if (rc) return rc;
    if (x < 0 || x > UINT32_MAX)
        return core_errf(err, CORE_ERANGE, "%s: key '%s' value %lld does not fit in u32", g->name, key, (long long)x);
    *out = (uint32_t)x;
    return 0;
}

int gguf_get_f32(const gguf *g, const char *key, float *out, core_err *err) {
    gguf_value v;
    int rc = lookup(g, key, &v, err);
    if (rc) return rc;
    if (v.type != GGUF_TYPE_F32 && v.type != GGUF_TYPE_F64) return wrong_type(g, key, &v, "f32", err);
    double d;
    gguf_value_as_f64(&v, &d);
    *out = (float)d;
    return 0;
}

int gguf_get_bool(const gguf *g, const char *key, int *out, core_err *err) {
    gguf_value v;
    int rc = lookup(g, key, &v, err);
    if (rc) return rc;
    if (v.type != GGUF_TYPE_BOOL) return wrong_type(g, key, &v, "bool", err);
    *out = v.ptr[0] != 0;
    return 0;
}

int gguf_get_str(const gguf *g, const char *key, gguf_str *out, core_err *err) {
    gguf_value v;
    int rc = lookup(g, key, &v, err);
    if (rc) return rc;
    if (v.type != GGUF_TYPE_STRING) return wrong_type(g, key, &v, "str", err);
    *out = v.str;
    return 0;
}

int gguf_get_arr(const gguf *g, const char *key, uint32_t *elem_type, uint64_t *count, core_err *err) {
    gguf_value v;
    int rc = lookup(g, key, &v, err);
    if (rc) return rc;
    if (v.type != GGUF_TYPE_ARRAY) return wrong_type(g, key, &v, "array", err);
    if (elem_type) *elem_type = v.elem_type;
    if (count) *count = v.count;
    return 0;
}

static int get_arr_of(const gguf *g, const char *key, gguf_value *v, core_err *err) {
    int rc = lookup(g, key, v, err);
    if (rc) return rc;
    if (v->type != GGUF_TYPE_ARRAY) return wrong_type(g, key, v, "array", err);
    return 0;
}

int gguf_get_str_arr(const gguf *g, const char *key, gguf_str **out, uint64_t *count, core_err *err) {
    gguf_value v;
    *out = NULL;
    *count = 0;
    int rc = get_arr_of(g, key, &v, err);
    if (rc) return rc;
    if (v.elem_type != GGUF_TYPE_STRING)
        return core_errf(err, CORE_ETYPE, "%s: key '%s' is an array of %s, expected an array of str", g->name, key,
                         gguf_vtype_name(v.elem_type));
    gguf_str *a = malloc((v.count ? v.count : 1) * sizeof *a);
    if (!a) return core_errf(err, CORE_ENOMEM, "%s: key '%s': out of memory", g->name, key);
    uint64_t pos = 0;
    for (uint64_t i = 0; i < v.count; i++) { /* validated at open: lengths fit */
        uint64_t n = le64(v.ptr + pos);
        a[i].ptr = (const char *)v.ptr + pos + 8;
        a[i].len = n;
        pos += 8 + n;
    }
    *out = a;
    *count = v.count;
    return 0;
}

int gguf_get_i32_arr(const gguf *g, const char *key, int32_t **out, uint64_t *count, core_err *err) {
    gguf_value v;
    *out = NULL;
    *count = 0;
    int rc = get_arr_of(g, key, &v, err);
    if (rc) return rc;
    if (!vtype_is_int(v.elem_type))
        return core_errf(err, CORE_ETYPE, "%s: key '%s' is an array of %s, expected an array of integers", g->name,
                         key, gguf_vtype_name(v.elem_type));
    int32_t *a = malloc((v.count ? v.count : 1) * sizeof *a);
    if (!a) return core_errf(err, CORE_ENOMEM, "%s: key '%s': out of memory", g->name, key);
    uint64_t fs = vtype_size(v.elem_type);
    for (uint64_t i = 0; i < v.count; i++) {
        int64_t s;
        uint64_t u;
        int big;
        int_at(v.elem_type, v.ptr + i * fs, &s, &u, &big);
        if (big || s < INT32_MIN || s > INT32_MAX) {
            free(a);
            return core_errf(err, CORE_ERANGE, "%s: key '%s' element %llu does not fit in i32", g->name, key,
                             (unsigned long long)i);
        }
        a[i] = (int32_t)s;
    }
    *out = a;
    *count = v.count;
    return 0;
}

int gguf_get_f32_arr(const gguf *g, const char *key, float **out, uint64_t *count, core_err *err) {
    gguf_value v;
    *out = NULL;
    *count = 0;
    int rc = get_arr_of(g, key, &v, err);
    if (rc) return rc;
    if (v.elem_type != GGUF_TYPE_F32)
        return core_errf(err, CORE_ETYPE, "%s: key '%s' is an array of %s, expected an array of f32", g->name, key,
                         gguf_vtype_name(v.elem_type));
    float *a = malloc((v.count ? v.count : 1) * sizeof *a);
    if (!a) return core_errf(err, CORE_ENOMEM, "%s: key '%s': out of memory", g->name, key);
    for (uint64_t i = 0; i < v.count; i++) {
        uint32_t b = le32(v.ptr + 4 * i);
        memcpy(&a[i], &b, 4);
    }
    *out = a;
    *count = v.count;
    return 0;
}
