/* gguf.h -- GGUF v3 model files: a checked reader over a read-only mmap,
 * and a writer for tools and tests.
 *
 * Reader. gguf_open() maps the file read-only and walks the header once,
 * checking every count, length, dimension product and offset against the
 * file size with overflow-safe arithmetic. After a successful open every
 * pointer handed out (strings, arrays, tensor data) is inside the mapping
 * and stays valid until gguf_close(). Nothing is copied except small
 * bookkeeping (the key and tensor name index). Tensor data is never touched
 * by the reader, so opening a 2 GB file costs only the header.
 *
 * Strings in GGUF are (u64 length, bytes) with no NUL: they are returned as
 * gguf_str views. Keys and tensor names are also offered NUL-terminated
 * (copies made at open) since every caller wants to compare them.
 *
 * Errors name the file, the byte offset and what is wrong, e.g.
 *   "model.gguf: offset 1234: string length 9999999 runs past end of file (size 2048)"
 *
 * Thread safety: an opened gguf is immutable; concurrent readers are fine.
 */
#ifndef GGUF_H
#define GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* Value types as stored in the file. */
enum gguf_vtype {
    GGUF_TYPE_U8 = 0,
    GGUF_TYPE_I8 = 1,
    GGUF_TYPE_U16 = 2,
    GGUF_TYPE_I16 = 3,
    GGUF_TYPE_U32 = 4,
    GGUF_TYPE_I32 = 5,
    GGUF_TYPE_F32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_U64 = 10,
    GGUF_TYPE_I64 = 11,
    GGUF_TYPE_F64 = 12,
    GGUF_TYPE_COUNT
};

/* ggml tensor type ids (the ones this project knows by name). */
enum gguf_ggml_type {
    GGUF_GGML_F32 = 0,
    GGUF_GGML_F16 = 1,
    GGUF_GGML_Q4_0 = 2,
    GGUF_GGML_Q4_1 = 3,
    GGUF_GGML_Q5_0 = 6,
    GGUF_GGML_Q5_1 = 7,
    GGUF_GGML_Q8_0 = 8,
    GGUF_GGML_Q8_1 = 9,
    GGUF_GGML_Q2_K = 10,
    GGUF_GGML_Q3_K = 11,
    GGUF_GGML_Q4_K = 12,
    GGUF_GGML_Q5_K = 13,
    GGUF_GGML_Q6_K = 14,
    GGUF_GGML_Q8_K = 15,
    GGUF_GGML_BF16 = 30,
};

#define GGUF_MAX_DIMS 4
#define GGUF_DEFAULT_ALIGNMENT 32

typedef struct gguf gguf;

/* A view of bytes inside the mapping (not NUL-terminated). */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

/* A value: for scalars `ptr` points at the little-endian bytes; for strings
 * `str` is set; for arrays `elem_type`, `count` and `ptr` (first element)
 * are set, and `size` is the byte size of the whole array payload. */
typedef struct gguf_value {
    uint32_t type;
    const uint8_t *ptr;
    uint64_t size;
    gguf_str str;
    uint32_t elem_type;
    uint64_t count;
} gguf_value;

typedef struct gguf_tensor {
    const char *name;          /* NUL-terminated copy, owned by the gguf */
    uint32_t type;             /* ggml type id */
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] = row length; unused dims are 1 */
    uint64_t n_elems;
    uint64_t offset;           /* relative to the start of the data section */
    uint64_t nbytes;
    const void *data;          /* inside the mapping; NULL if the type is unknown */
} gguf_tensor;

/* ---- reader ----------------------------------------------------------- */

/* Open and validate `path`. On success *out owns the mapping. */
int gguf_open(gguf **out, const char *path, core_err *err);
/* Same over a caller's buffer (fuzzing, tests). `data` must outlive the
 * gguf; `name` is used in error messages. */
int gguf_open_mem(gguf **out, const void *data, size_t size, const char *name, core_err *err);
void gguf_close(gguf *g); /* NULL is a no-op */

/* The file under a mapping can change while it is in use: a `cp` over it
 * truncates it first, and reading a page past a file's end raises SIGBUS.
 * gguf_open() therefore guards its mapping: a SIGBUS at an address inside a
 * guarded mapping maps zero pages over the rest of that mapping (the read
 * that faulted, retried, gets zeros instead of killing the process) and
 * marks it changed; a SIGBUS anywhere else goes to the handler that was
 * there before (by default the process dies, as without the guard).
 * gguf_mapping_ok() returns 0 while the mapped file is as it was at open,
 * else CORE_EIO with a message saying what changed (a read past its new
 * end, its size, its modification time).  Whatever was computed from the
 * mapping since the change is garbage: callers check between steps and
 * stop using the gguf.  A file replaced by rename (mv, the safe way) is a
 * new inode: the mapping keeps the old one and stays ok.  Thread-safe; a
 * gguf_open_mem() gguf is always ok. */
int gguf_mapping_ok(const gguf *g, core_err *err);

const char *gguf_name(const gguf *g);     /* path or name given at open */
uint32_t gguf_version(const gguf *g);
uint64_t gguf_file_size(const gguf *g);
uint64_t gguf_data_offset(const gguf *g); /* absolute offset of tensor data */
uint32_t gguf_alignment(const gguf *g);
const void *gguf_base(const gguf *g);     /* start of the mapping */

/* Key/values, in file order. */
int64_t gguf_n_kv(const gguf *g);
const char *gguf_kv_key(const gguf *g, int64_t i);
int gguf_kv_value(const gguf *g, int64_t i, gguf_value *out);
int64_t gguf_find_key(const gguf *g, const char *key); /* -1 if absent */

/* Typed getters by key. Return 0, CORE_ENOTFOUND (absent) or CORE_ETYPE
 * (present with another type), with a message naming the key.
 * Integer getters accept any integer type whose value fits the target. */
int gguf_get_u32(const gguf *g, const char *key, uint32_t *out, core_err *err);
int gguf_get_i64(const gguf *g, const char *key, int64_t *out, core_err *err);
int gguf_get_f32(const gguf *g, const char *key, float *out, core_err *err); /* f32 or f64 */
int gguf_get_bool(const gguf *g, const char *key, int *out, core_err *err);
int gguf_get_str(const gguf *g, const char *key, gguf_str *out, core_err *err);
/* Array header: element type and count. */
int gguf_get_arr(const gguf *g, const char *key, uint32_t *elem_type, uint64_t *count, core_err *err);
/* Array of strings: fills a malloc'd array of views (free() it). */
int gguf_get_str_arr(const gguf *g, const char *key, gguf_str **out, uint64_t *count, core_err *err);
/* Array of integers (any integer elem type, values must fit i32): malloc'd copy. */
int gguf_get_i32_arr(const gguf *g, const char *key, int32_t **out, uint64_t *count, core_err *err);
/* Array of f32 (f32 elems): malloc'd copy. */
int gguf_get_f32_arr(const gguf *g, const char *key, float **out, uint64_t *count, core_err *err);

/* Scalar value as a double / int64 for display (any numeric or bool type). */
int gguf_value_as_f64(const gguf_value *v, double *out);
int gguf_value_as_i64(const gguf_value *v, int64_t *out);
/* Element i of a numeric array value, decoded (bounds-checked). */
int gguf_arr_elem(const gguf_value *arr, uint64_t i, gguf_value *out);

/* Tensors, in file order. */
int64_t gguf_n_tensors(const gguf *g);
const gguf_tensor *gguf_tensor_at(const gguf *g, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf *g, const char *name); /* NULL if absent */

/* ggml type facts: name ("Q4_K"), weights per block, bytes per block.
 * Return 0 / NULL for types unknown to us. */
const char *gguf_type_name(uint32_t ggml_type);
uint32_t gguf_type_block(uint32_t ggml_type);
uint32_t gguf_type_bytes(uint32_t ggml_type);
const char *gguf_vtype_name(uint32_t vtype);

/* ---- writer ----------------------------------------------------------- */

/* Builds a GGUF v3 file: metadata in the order added, then the tensor table,
 * then data. Tensor data is produced by a callback at write time so a 2 GB
 * file never needs to be in memory. The file is written to PATH.tmp.XXXXXX
 * and renamed over PATH only when complete. */
typedef struct gguf_writer gguf_writer;

/* Fill buf[0..nbytes) with the data of tensor `index` (in the order added). */
typedef int (*gguf_fill_fn)(void *ctx, int64_t index, const gguf_tensor *t, void *buf, uint64_t nbytes,
                            core_err *err);

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
int gguf_writer_set_u32(gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_u64(gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_set_f32(gguf_writer *w, const char *key, float v);
int gguf_writer_set_bool(gguf_writer *w, const char *key, int v);
int gguf_writer_set_str(gguf_writer *w, const char *key, const char *s, uint64_t len);
int gguf_writer_set_arr(gguf_writer *w, const char *key, uint32_t elem_type, const void *data, uint64_t count);
int gguf_writer_set_str_arr(gguf_writer *w, const char *key, const gguf_str *items, uint64_t count);
/* Copy key/value i of another (open) file verbatim, any type including nested arrays. */
int gguf_writer_copy_kv(gguf_writer *w, const gguf *src, int64_t i);
/* Add a tensor; data comes from fill() at write time (or from `data` if
 * fill is NULL: then `data` must stay valid until write). */
int gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                           const uint64_t *ne, const void *data);
int gguf_writer_write(gguf_writer *w, const char *path, gguf_fill_fn fill, void *ctx, core_err *err);

#endif
