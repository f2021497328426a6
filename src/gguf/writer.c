/* writer.c -- builds GGUF v3 files (gen-model, tests).
 *
 * Design. Metadata is serialized as it is added, into one growing buffer
 * (key, type, value: exactly the bytes that go to the file), so adding is
 * cheap and copying a kv from another file is a memcpy of its raw encoding,
 * nested arrays included. Tensors are recorded as (name, type, dims); their
 * offsets are assigned at write time, each rounded up to the alignment.
 *
 * Writing goes to PATH.tmp.XXXXXX (mkstemp, same directory so rename is
 * atomic), then fsync + rename; on any failure the temp file is removed and
 * PATH is untouched. Tensor data comes from the fill callback one tensor at
 * a time into one reused buffer, so peak memory is the largest tensor (215
 * MB for the 3B token embedding in Q6_K), never the file.
 *
 * Invalid arguments (duplicate key or tensor, bad dims) return CORE_EINVAL
 * and leave the writer as it was; an allocation failure midway through a
 * kv poisons it (write then refuses) since the buffer may hold half a kv.
 *
 * The alignment is GGUF_DEFAULT_ALIGNMENT unless a u32 general.alignment was
 * added (set or copied); it must then be a nonzero power of two.
 */
#include "gguf/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct wtensor {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t nbytes, offset;
    const void *data;
} wtensor;

struct gguf_writer {
    core_buf kv;     /* serialized kvs */
    int64_t n_kv;
    char **keys;     /* for duplicate checks */
    wtensor *t;
    int64_t n_t, cap_t;
    uint32_t alignment;
    int bad;         /* a set_* call failed: write refuses */
};

gguf_writer *gguf_writer_new(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    core_buf_free(&w->kv);
    for (int64_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    for (int64_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    free(w);
}

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static int app_u32(core_buf *b, uint32_t v) {
    uint8_t p[4];
    put_u32(p, v);
    return core_buf_append(b, p, 4);
}
static int app_u64(core_buf *b, uint64_t v) {
    uint8_t p[8];
    put_u64(p, v);
    return core_buf_append(b, p, 8);
}
static int app_str(core_buf *b, const char *s, uint64_t n) {
    if (app_u64(b, n)) return CORE_ENOMEM;
    return n ? core_buf_append(b, s, n) : 0;
}

/* Start a kv: duplicate check, key and type. */
static int begin_kv(gguf_writer *w, const char *key, uint32_t type) {
    for (int64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return CORE_EINVAL;
    char **k = realloc(w->keys, (size_t)(w->n_kv + 1) * sizeof *k);
    if (!k) return w->bad = CORE_ENOMEM;
    w->keys = k;
    if (!(k[w->n_kv] = strdup(key))) return w->bad = CORE_ENOMEM;
    w->n_kv++;
    if (app_str(&w->kv, key, strlen(key)) || app_u32(&w->kv, type)) return w->bad = CORE_ENOMEM;
    return 0;
}

static int set_fixed(gguf_writer *w, const char *key, uint32_t type, const void *le, size_t n) {
    int rc = begin_kv(w, key, type);
    if (rc) return rc;
    if (core_buf_append(&w->kv, le, n)) return w->bad = CORE_ENOMEM;
    return 0;
}

int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v) {
    if (!strcmp(key, "general.alignment")) {
        if (v == 0 || (v & (v - 1))) return CORE_EINVAL;
        w->alignment = v;
    }
    uint8_t p[4];
    put_u32(p, v);
    return set_fixed(w, key, GGUF_TYPE_U32, p, 4);
}
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v) {
    uint8_t p[4];
    put_u32(p, (uint32_t)v);
    return set_fixed(w, key, GGUF_TYPE_I32, p, 4);
}
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v) {
    uint8_t p[8];
    put_u64(p, v);
    return set_fixed(w, key, GGUF_TYPE_U64, p, 8);
}
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v) {
    uint32_t b;
    memcpy(&b, &v, 4);
    uint8_t p[4];
    put_u32(p, b);
    return set_fixed(w, key, GGUF_TYPE_F32, p, 4);
}
int gguf_writer_set_bool(gguf_writer *w, const char *key, int v) {
    uint8_t p = v ? 1 : 0;
    return set_fixed(w, key, GGUF_TYPE_BOOL, &p, 1);
}
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *s, uint64_t len) {
    int rc = begin_kv(w, key, GGUF_TYPE_STRING);
    if (rc) return rc;
    if (app_str(&w->kv, s, len)) return w->bad = CORE_ENOMEM;
    return 0;
}

static uint64_t fixed_size(uint32_t t) {
    switch (t) {
    case GGUF_TYPE_U8: case GGUF_TYPE_I8: case GGUF_TYPE_BOOL: return 1;
    case GGUF_TYPE_U16: case GGUF_TYPE_I16: return 2;
    case GGUF_TYPE_U32: case GGUF_TYPE_I32: case GGUF_TYPE_F32: return 4;
    case GGUF_TYPE_U64: case GGUF_TYPE_I64: case GGUF_TYPE_F64: return 8;
    default: return 0;
    }
}

/* Fixed-size elements in host order; the file is little-endian, which every
 * platform we build for is (a big-endian host would need a swap here). */
int gguf_writer_set_arr(gguf_writer *w, const char *key, uint32_t elem_type, const void *data, uint64_t count) {
    uint64_t es = fixed_size(elem_type), n;
    if (!es || core_mul_u64(es, count, &n) || n > SIZE_MAX / 2) return CORE_EINVAL;
    int rc = begin_kv(w, key, GGUF_TYPE_ARRAY);
    if (rc) return rc;
    if (app_u32(&w->kv, elem_type) || app_u64(&w->kv, count) || (n && core_buf_append(&w->kv, data, (size_t)n)))
        return w->bad = CORE_ENOMEM;
    return 0;
}

int gguf_writer_set_str_arr(gguf_writer *w, const char *key, const gguf_str *items, uint64_t count) {
    int rc = begin_kv(w, key, GGUF_TYPE_ARRAY);
    if (rc) return rc;
    if (app_u32(&w->kv, GGUF_TYPE_STRING) || app_u64(&w->kv, count)) return w->bad = CORE_ENOMEM;
    for (uint64_t i = 0; i < count; i++)
        if (app_str(&w->kv, items[i].ptr, items[i].len)) return w->bad = CORE_ENOMEM;
    return 0;
}

/* The raw encoding of a value sits right before/at its view (see gguf.c's
 * parse_value): scalars at ptr, strings 8 bytes (length) before str.ptr,
 * arrays 12 bytes (elem type + count) before ptr. */
int gguf_writer_copy_kv(gguf_writer *w, const gguf *src, int64_t i) {
    gguf_value v;
    const char *key = gguf_kv_key(src, i);
    if (!key || gguf_kv_value(src, i, &v)) return CORE_EINVAL;
    const uint8_t *raw;
    uint64_t n;
    if (v.type == GGUF_TYPE_STRING) {
        raw = (const uint8_t *)v.str.ptr - 8;
        n = v.str.len + 8;
    } else if (v.type == GGUF_TYPE_ARRAY) {
        raw = v.ptr - 12;
        n = v.size + 12;
    } else {
        raw = v.ptr;
        n = v.size;
    }
    if (!strcmp(key, "general.alignment")) {
        if (v.type != GGUF_TYPE_U32) return CORE_EINVAL;
        uint32_t a = (uint32_t)raw[0] | (uint32_t)raw[1] << 8 | (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 24;
        w->alignment = a; /* the reader checked it is a power of two */
    }
    int rc = begin_kv(w, key, v.type);
    if (rc) return rc;
    if (n > SIZE_MAX || core_buf_append(&w->kv, raw, (size_t)n)) return w->bad = CORE_ENOMEM;
    return 0;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims, const uint64_t *ne,
                           const void *data) {
    uint32_t blk = gguf_type_block(ggml_type);
    if (!blk || n_dims < 1 || n_dims > GGUF_MAX_DIMS || ne[0] % blk) return CORE_EINVAL;
    for (int64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) return CORE_EINVAL;
    uint64_t n = 1;
    for (uint32_t d = 0; d < n_dims; d++)
        if (!ne[d] || core_mul_u64(n, ne[d], &n)) return CORE_EINVAL;
    if (w->n_t == w->cap_t) {
        int64_t c = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *t = realloc(w->t, (size_t)c * sizeof *t);
        if (!t) return w->bad = CORE_ENOMEM;
        w->t = t;
        w->cap_t = c;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return w->bad = CORE_ENOMEM;
    t->type = ggml_type;
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < n_dims ? ne[d] : 1;
    if (core_mul_u64(n / blk, gguf_type_bytes(ggml_type), &t->nbytes)) {
        free(t->name);
        return CORE_EINVAL;
    }
    t->data = data;
    w->n_t++;
    return 0;
}

static int write_all(int fd, const void *p, uint64_t n) {
    const char *c = p;
    while (n) {
        ssize_t k = write(fd, c, n > (1u << 30) ? (1u << 30) : (size_t)n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += k;
        n -= (uint64_t)k;
    }
    return 0;
}

static uint64_t pad_to(uint64_t x, uint32_t a) { return (a - x % a) % a; }

int gguf_writer_write(gguf_writer *w, const char *path, gguf_fill_fn fill, void *ctx, core_err *err) {
    if (w->bad) return core_errf(err, CORE_EINVAL, "%s: an earlier writer call failed (%s)", path, core_strerror(w->bad));
    core_buf hdr = {0};
    char *tmp = NULL;
    void *buf = NULL;
    uint64_t buf_cap = 0;
    int fd = -1, rc = 0;
    static const uint8_t zeros[256];

    /* assign offsets */
    uint64_t off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        off += pad_to(off, w->alignment);
        w->t[i].offset = off;
        off += w->t[i].nbytes;
        if (!fill && !w->t[i].data) {
            rc = core_errf(err, CORE_EINVAL, "%s: tensor '%s' has no data and no fill callback", path, w->t[i].name);
            goto out;
        }
    }
    /* header + kvs + tensor infos */
    if (app_u32(&hdr, 0x46554747u) || app_u32(&hdr, 3) || app_u64(&hdr, (uint64_t)w->n_t) ||
        app_u64(&hdr, (uint64_t)w->n_kv) || (w->kv.len && core_buf_append(&hdr, w->kv.data, w->kv.len)))
        goto nomem;
    for (int64_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        if (app_str(&hdr, t->name, strlen(t->name)) || app_u32(&hdr, t->n_dims)) goto nomem;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if (app_u64(&hdr, t->ne[d])) goto nomem;
        if (app_u32(&hdr, t->type) || app_u64(&hdr, t->offset)) goto nomem;
    }
    if (core_buf_append(&hdr, zeros, pad_to(hdr.len, w->alignment))) goto nomem;

    size_t pl = strlen(path);
    if (!(tmp = malloc(pl + 16))) goto nomem;
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp.XXXXXX", 12);
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = core_errf(err, CORE_EIO, "%s: cannot create temp file: %s", tmp, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto out;
    }
    if (fchmod(fd, 0644) < 0 || write_all(fd, hdr.data, hdr.len)) goto ioerr;

    off = 0;
    for (int64_t i = 0; i < w->n_t; i++) {
        wtensor *t = &w->t[i];
        uint64_t p = pad_to(off, w->alignment);
        if (p && write_all(fd, zeros, p)) goto ioerr;
        off += p;
        const void *src = t->data;
        if (fill) {
            if (t->nbytes > buf_cap) {
                free(buf);
                if (t->nbytes > SIZE_MAX || !(buf = malloc((size_t)t->nbytes))) {
                    buf_cap = 0;
                    goto nomem;
                }
                buf_cap = t->nbytes;
            }
            gguf_tensor view = {.name = t->name, .type = t->type, .n_dims = t->n_dims, .offset = t->offset,
                                .nbytes = t->nbytes, .data = NULL};
            memcpy(view.ne, t->ne, sizeof view.ne);
            view.n_elems = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
            rc = fill(ctx, i, &view, buf, t->nbytes, err);
            if (rc) goto out;
            src = buf;
        }
        if (write_all(fd, src, t->nbytes)) goto ioerr;
        off += t->nbytes;
    }
    if (fsync(fd) < 0) goto ioerr;
    if (close(fd) < 0) {
        fd = -1;
        goto ioerr;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = core_errf(err, CORE_EIO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
        goto out;
    }
    free(tmp);
    tmp = NULL;
    goto out;

nomem:
    rc = core_errf(err, CORE_ENOMEM, "%s: out of memory while writing", path);
    goto out;
ioerr:
    rc = core_errf(err, CORE_EIO, "%s: write failed: %s", tmp ? tmp : path, strerror(errno));
out:
    if (fd >= 0) close(fd);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    free(buf);
    core_buf_free(&hdr);
    return rc;
}
