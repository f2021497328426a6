/* fuzz_gguf.c -- libFuzzer target for the GGUF reader.
 *
 * Opens the input with gguf_open_mem, then touches everything a caller can
 * reach: every kv through the typed getters and gguf_arr_elem (nested arrays
 * too), every tensor (lookup by name, and a read of its first and last data
 * byte, which ASan checks is inside the input). Seeds: tests/fuzz/corpus/gguf.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "gguf/gguf.h"

static volatile uint8_t sink;

static void walk_value(const gguf_value *v, int depth) {
    double d;
    int64_t x;
    gguf_value_as_f64(v, &d);
    gguf_value_as_i64(v, &x);
    if (v->type == GGUF_TYPE_STRING && v->str.len) sink ^= (uint8_t)(v->str.ptr[0] ^ v->str.ptr[v->str.len - 1]);
    if (v->type != GGUF_TYPE_ARRAY || depth > 3) return;
    for (uint64_t i = 0; i < v->count && i < 8; i++) {
        gguf_value e;
        if (gguf_arr_elem(v, i, &e) == 0) walk_value(&e, depth + 1);
    }
    if (v->count) {
        gguf_value e;
        if (gguf_arr_elem(v, v->count - 1, &e) == 0) walk_value(&e, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gguf *g = NULL;
    core_err err;
    if (gguf_open_mem(&g, data, size, "fuzz.gguf", &err)) {
        if (!strstr(err.msg, "offset")) abort(); /* every error names an offset */
        return 0;
    }
    for (int64_t i = 0; i < gguf_n_kv(g); i++) {
        const char *key = gguf_kv_key(g, i);
        gguf_value v;
        if (gguf_kv_value(g, i, &v)) abort();
        if (gguf_find_key(g, key) != i) abort();
        walk_value(&v, 0);
        uint32_t u;
        int64_t x;
        float f;
        int b;
        gguf_str s, *sa;
        uint64_t n;
        int32_t *ia;
        float *fa;
        gguf_get_u32(g, key, &u, &err);
        gguf_get_i64(g, key, &x, &err);
        gguf_get_f32(g, key, &f, &err);
        gguf_get_bool(g, key, &b, &err);
        gguf_get_str(g, key, &s, &err);
        gguf_get_arr(g, key, &u, &n, &err);
        if (gguf_get_str_arr(g, key, &sa, &n, &err) == 0) {
            for (uint64_t k = 0; k < n; k++)
                if (sa[k].len) sink ^= (uint8_t)sa[k].ptr[sa[k].len - 1];
            free(sa);
        }
        if (gguf_get_i32_arr(g, key, &ia, &n, &err) == 0) free(ia);
        if (gguf_get_f32_arr(g, key, &fa, &n, &err) == 0) free(fa);
    }
    for (int64_t i = 0; i < gguf_n_tensors(g); i++) {
        const gguf_tensor *t = gguf_tensor_at(g, i);
        if (gguf_find_tensor(g, t->name) != t) abort();
        if (t->data && t->nbytes) {
            const uint8_t *p = t->data;
            sink ^= (uint8_t)(p[0] ^ p[t->nbytes - 1]);
        }
        gguf_type_name(t->type);
    }
    gguf_close(g);
    return 0;
}
