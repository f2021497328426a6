/* tok.c -- byte-level BPE with the Llama-3 (or Qwen2) pre-tokenizer, matching llama.cpp.
 *
 * Loading. Every token text in a GPT-2 style vocab is written in the
 * "byte-to-unicode" alphabet: each byte is one code point (printable Latin-1
 * bytes map to themselves, the other 68 to U+0100..U+0143). We undo that once
 * at load and key everything on RAW BYTES: a symbol id <-> its bytes. Since
 * the mapping is a bijection, looking up the raw bytes of a piece is the same
 * as llama.cpp looking up its encoded text, and encode never builds encoded
 * strings. Tokens whose text has code points outside the alphabet (control
 * tokens with odd characters) cannot be the result of a merge, so they get
 * no byte key; their literal text is their piece.
 *
 *   blob:       key bytes, piece bytes and merge entries, by uint32 offsets
 *   sym hash:   bytes -> token id (open addressing, power-of-two size)
 *   merge hash: (H(left), H(right)) -> merge entry [u16 llen][u16 rlen]
 *               [left bytes][right bytes] and its rank
 *
 * H is a polynomial hash mod 2^64, chosen because it composes:
 * H(a||b) = H(a) * B^|b| + H(b). So during BPE a merged symbol's hash is
 * two multiplications away, and loading the 280k merges needs no lookup of
 * their parts at all (that was 3 hash-table misses per merge, ~150 ms).
 * A hash match is always confirmed by comparing bytes, so collisions cost
 * time, never correctness. Like llama.cpp, BPE works on byte strings; a
 * final symbol is looked up as a token only at the end (and if the vocab
 * lacks it, its ASCII bytes are looked up one by one, the rest dropped).
 *
 * Encoding (tok_encode), all per llama.cpp for pre-tokenizer "llama-bpe":
 *   1. special partition: eligible special tokens, longest text first,
 *      claim their left-to-right occurrences inside the remaining raw text;
 *   2. raw fragments with invalid UTF-8 are first rewritten as llama.cpp
 *      sees them (lenient decode, U+FFFD per bad byte, re-encode);
 *   3. the Llama-3 regex, hand-written (see split_llama3), yields pieces
 *      (Qwen2's "qwen2" pre is the same regex with one digit a piece);
 *   4. a piece whose bytes are a whole token is that token ("ignore_merges");
 *      otherwise BPE: a linked list of byte symbols and a binary heap of
 *      candidate pairs ordered by (rank, left position); stale heap entries
 *      are detected by length, as llama.cpp does. O(n log n) per piece.
 * Scratch for pieces up to 256 bytes lives on the stack; longer pieces use a
 * heap buffer that is reused within the call and freed at its end.
 *
 * Invariants: after tok_new, every key of the sym hash lies in the blob;
 * byte_sym[b] is a symbol for every byte; merge results are symbols.
 */
#include "tok/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok/unicode_data.h"

/* ---- the GPT-2 byte <-> code point alphabet ----------------------------- */

/* Bytes that stand for themselves: '!'..'~', 0xA1..0xAC, 0xAE..0xFF. The
 * others get U+0100 + k in byte order. */
static int byte_is_self(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE; }

typedef struct byte_map {
    uint32_t to_cp[256];
    int16_t from_cp[0x144]; /* -1: not in the alphabet */
} byte_map;

static void byte_map_init(byte_map *m) {
    for (int i = 0; i < 0x144; i++) m->from_cp[i] = -1;
    uint32_t next = 0x100;
    for (unsigned b = 0; b < 256; b++) {
        uint32_t cp = byte_is_self(b) ? b : next++;
        m->to_cp[b] = cp;
        m->from_cp[cp] = (int16_t)b;
    }
}

/* ---- hashing ---------------------------------------------------------- */

static uint32_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

typedef struct sym_slot {
    int32_t id; /* -1 empty */
    uint32_t h;
} sym_slot;

typedef struct merge_slot {
    uint64_t key; /* pair_key(H(left), H(right)); the slot is empty when rank < 0 */
    uint32_t off; /* merge entry in the blob */
    int32_t rank;
} merge_slot;

#define POLY_B 0x100000001b3ull /* odd; bytes enter as b + 1 so NULs count */

static uint64_t poly_hash(const unsigned char *p, size_t n, uint64_t *pw) {
    uint64_t h = 0, w = 1;
    for (size_t i = 0; i < n; i++) {
        h = h * POLY_B + p[i] + 1;
        w *= POLY_B;
    }
    if (pw) *pw = w;
    return h;
}

static uint64_t pair_key(uint64_t hl, uint64_t hr) { return hash_u64(hl * 0x9E3779B97F4A7C15ull + hr); }

struct tok {
    int32_t n_vocab;
    int digits_max;      /* \p{N}{1,digits_max}: 3 for Llama 3's regex, 1 for Qwen2's */
    uint8_t *type;       /* [n_vocab] */
    uint32_t *piece_off; /* [n_vocab] */
    uint32_t *piece_len; /* [n_vocab] */
    uint32_t *key_off;   /* [n_vocab] */
    int32_t *key_len;    /* [n_vocab]; -1: no byte key */
    char *blob;
    size_t blob_len, blob_cap;
    sym_slot *syms;
    size_t sym_mask, sym_count;
    merge_slot *merges;
    size_t merge_mask;
    int32_t byte_sym[256]; /* token of each single byte, -1 if none */
    int32_t *spec; /* special-text candidates: types 2,3,4, by length desc then id */
    size_t n_spec;
    uint8_t spec_first[256]; /* 1 if some candidate starts with this byte */
    tok_special sp;
    char *chat_template; /* tokenizer.chat_template, NUL-terminated copy, or NULL */
    size_t chat_template_len;
    char arch[32]; /* general.architecture */
};

/* ---- building --------------------------------------------------------- */

static int blob_add(tok *t, const void *p, size_t n, uint32_t *off) {
    if (t->blob_len + n > UINT32_MAX) return CORE_ERANGE;
    if (t->blob_len + n > t->blob_cap) {
        size_t cap = t->blob_cap ? t->blob_cap * 2 : 1 << 20;
        while (cap < t->blob_len + n) cap *= 2;
        char *b = realloc(t->blob, cap);
        if (!b) return CORE_ENOMEM;
        t->blob = b;
        t->blob_cap = cap;
    }
    if (n) memcpy(t->blob + t->blob_len, p, n);
    *off = (uint32_t)t->blob_len;
    t->blob_len += n;
    return 0;
}

static int32_t sym_lookup_h(const tok *t, const void *p, size_t n, uint32_t h) {
    for (size_t i = h & t->sym_mask;; i = (i + 1) & t->sym_mask) {
        const sym_slot *s = &t->syms[i];
        if (s->id < 0) return -1;
        if (s->h == h && (size_t)t->key_len[s->id] == n && !memcmp(t->blob + t->key_off[s->id], p, n)) return s->id;
    }
}

static int32_t sym_lookup(const tok *t, const void *p, size_t n) { return sym_lookup_h(t, p, n, hash_bytes(p, n)); }

static int sym_rehash(tok *t, size_t cap) {
    sym_slot *s = malloc(cap * sizeof *s);
    if (!s) return CORE_ENOMEM;
    for (size_t i = 0; i < cap; i++) s[i].id = -1;
    for (size_t i = 0; t->syms && i <= t->sym_mask; i++) {
        if (t->syms[i].id < 0) continue;
        size_t j = t->syms[i].h & (cap - 1);
        while (s[j].id >= 0) j = (j + 1) & (cap - 1);
        s[j] = t->syms[i];
    }
    free(t->syms);
    t->syms = s;
    t->sym_mask = cap - 1;
    return 0;
}

/* Insert id with its key (already in the blob). A duplicate key is taken by
 * the later id, as llama.cpp's token_to_id map does. */
static int sym_insert(tok *t, int32_t id) {
    if ((t->sym_count + 1) * 2 > t->sym_mask + 1) {
        int rc = sym_rehash(t, (t->sym_mask + 1) * 2);
        if (rc) return rc;
    }
    const char *k = t->blob + t->key_off[id];
    size_t n = (size_t)t->key_len[id];
    uint32_t h = hash_bytes(k, n);
    size_t i = h & t->sym_mask;
    for (;; i = (i + 1) & t->sym_mask) {
        sym_slot *s = &t->syms[i];
        if (s->id < 0) break;
        if (s->h == h && (size_t)t->key_len[s->id] == n && !memcmp(t->blob + t->key_off[s->id], k, n)) {
            s->id = id;
            return 0;
        }
    }
    t->syms[i].id = id;
    t->syms[i].h = h;
    t->sym_count++;
    return 0;
}

/* Decode a vocab text (GPT-2 alphabet) into raw bytes in dst (room for
 * 4*n bytes). Code points outside the alphabet, and invalid UTF-8, are
 * copied through; *mapped is 0 when that happened. Returns the length. */
static size_t unmap_text(const byte_map *m, const char *s, size_t n, char *dst, int *mapped) {
    size_t o = 0;
    *mapped = 1;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x21 && c <= 0x7E) { /* the common case: self-mapped ASCII */
            dst[o++] = (char)c;
            i++;
            continue;
        }
        uint32_t cp;
        int l = core_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (l > 0 && cp < 0x144 && m->from_cp[cp] >= 0) {
            dst[o++] = (char)m->from_cp[cp];
            i += (size_t)l;
            continue;
        }
        if (l <= 0) l = 1;
        memcpy(dst + o, s + i, (size_t)l);
        o += (size_t)l;
        i += (size_t)l;
        *mapped = 0;
    }
    return o;
}

/* Does the merge entry at off have exactly these parts? */
static int merge_is(const tok *t, uint32_t off, const unsigned char *l, size_t nl, const unsigned char *r, size_t nr) {
    const unsigned char *e = (const unsigned char *)t->blob + off;
    size_t el = (size_t)e[0] | (size_t)e[1] << 8, er = (size_t)e[2] | (size_t)e[3] << 8;
    return el == nl && er == nr && !memcmp(e + 4, l, nl) && !memcmp(e + 4 + nl, r, nr);
}

/* Rank of the merge (l, r) with hashes hl, hr, or -1. */
static int32_t merge_rank(const tok *t, uint64_t hl, uint64_t hr, const unsigned char *l, size_t nl,
                          const unsigned char *r, size_t nr) {
    uint64_t key = pair_key(hl, hr);
    for (size_t i = key & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const merge_slot *s = &t->merges[i];
        if (s->rank < 0) return -1;
        if (s->key == key && merge_is(t, s->off, l, nl, r, nr)) return s->rank;
    }
}

/* Add merge `rank` (parts in raw bytes). A repeated pair keeps its first
 * (lowest) rank, like llama.cpp's std::map::emplace. */
static int merge_add(tok *t, const unsigned char *l, size_t nl, const unsigned char *r, size_t nr, int32_t rank) {
    uint64_t hl = poly_hash(l, nl, NULL), hr = poly_hash(r, nr, NULL), key = pair_key(hl, hr);
    size_t i = key & t->merge_mask;
    for (;; i = (i + 1) & t->merge_mask) {
        merge_slot *s = &t->merges[i];
        if (s->rank < 0) break;
        if (s->key == key && merge_is(t, s->off, l, nl, r, nr)) return 0;
    }
    unsigned char hdr[4] = {(unsigned char)nl, (unsigned char)(nl >> 8), (unsigned char)nr, (unsigned char)(nr >> 8)};
    uint32_t off, o2;
    int rc;
    if ((rc = blob_add(t, hdr, 4, &off)) || (rc = blob_add(t, l, nl, &o2)) || (rc = blob_add(t, r, nr, &o2))) return rc;
    t->merges[i].key = key;
    t->merges[i].off = off;
    t->merges[i].rank = rank;
    return 0;
}

/* Sort key for special-text candidates: longer text first, then lower id. */
static int u64_cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Split "left right" at the first space from index 1 (llama.cpp's rule). */
static int merge_split(gguf_str m, gguf_str *l, gguf_str *r) {
    if (m.len < 3) return -1;
    const char *sp = memchr(m.ptr + 1, ' ', m.len - 1);
    if (!sp) return -1;
    l->ptr = m.ptr;
    l->len = (uint64_t)(sp - m.ptr);
    r->ptr = sp + 1;
    r->len = m.len - l->len - 1;
    return r->len ? 0 : -1;
}

int tok_new(tok **out, const gguf_str *tokens, const int32_t *types, size_t n_tokens, const gguf_str *merges,
            size_t n_merges, core_err *err) {
    *out = NULL;
    if (n_tokens == 0 || n_tokens > (1u << 24))
        return core_errf(err, CORE_EFORMAT, "tokenizer: %zu tokens (expected 1..16M)", n_tokens);
    if (n_merges > (1u << 26)) return core_errf(err, CORE_EFORMAT, "tokenizer: %zu merges is too many", n_merges);
    tok *t = calloc(1, sizeof *t);
    char *tmp = NULL;
    int rc = CORE_ENOMEM;
    if (!t) goto fail;
    byte_map bm;
    byte_map_init(&bm);
    int32_t nv = (int32_t)n_tokens;
    t->n_vocab = nv;
    t->type = malloc((size_t)nv);
    t->piece_off = malloc((size_t)nv * sizeof *t->piece_off);
    t->piece_len = malloc((size_t)nv * sizeof *t->piece_len);
    t->key_off = malloc((size_t)nv * sizeof *t->key_off);
    t->key_len = malloc((size_t)nv * sizeof *t->key_len);
    if (!t->type || !t->piece_off || !t->piece_len || !t->key_off || !t->key_len) goto fail;
    size_t cap = 1024;
    while (cap < (size_t)nv * 2 + 1024) cap *= 2;
    if ((rc = sym_rehash(t, cap))) goto fail;
    size_t tmp_cap = 1024;
    rc = CORE_ENOMEM;
    if (!(tmp = malloc(tmp_cap))) goto fail;

    /* tokens: piece bytes and byte keys */
    for (int32_t i = 0; i < nv; i++) {
        gguf_str s = tokens[i];
        int ty = types ? types[i] : TOK_TYPE_NORMAL;
        if (ty < 0 || ty > TOK_TYPE_BYTE) ty = TOK_TYPE_UNDEFINED;
        t->type[i] = (uint8_t)ty;
        if (s.len > (1u << 20)) {
            rc = core_errf(err, CORE_EFORMAT, "tokenizer: token %d is %llu bytes long", i, (unsigned long long)s.len);
            goto fail;
        }
        if (s.len * 4 > tmp_cap) {
            tmp_cap = s.len * 4;
            char *nt = realloc(tmp, tmp_cap);
            if (!nt) goto fail;
            tmp = nt;
        }
        int mapped;
        size_t dn = unmap_text(&bm, s.ptr, s.len, tmp, &mapped);
        uint32_t off;
        if ((rc = blob_add(t, tmp, dn, &off))) goto fail;
        t->key_off[i] = off;
        t->key_len[i] = (mapped && dn > 0) ? (int32_t)dn : -1;
        int literal = ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN || ty == TOK_TYPE_USER_DEFINED;
        if (ty == TOK_TYPE_UNUSED) {
            t->piece_off[i] = off;
            t->piece_len[i] = 0;
        } else if (literal && !(dn == s.len && !memcmp(tmp, s.ptr, dn))) {
            if ((rc = blob_add(t, s.ptr, s.len, &t->piece_off[i]))) goto fail;
            t->piece_len[i] = (uint32_t)s.len;
        } else {
            t->piece_off[i] = off;
            t->piece_len[i] = (uint32_t)dn;
        }
        if (t->key_len[i] >= 0 && (rc = sym_insert(t, i))) goto fail;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_sym[b] = sym_lookup(t, &c, 1);
    }

    /* merges: raw bytes of both parts into the blob, keyed by their hashes */
    cap = 1024;
    while (cap < n_merges + n_merges / 2 + 1024) cap *= 2;
    t->merges = malloc(cap * sizeof *t->merges);
    rc = CORE_ENOMEM;
    if (!t->merges) goto fail;
    for (size_t i = 0; i < cap; i++) t->merges[i].rank = -1;
    t->merge_mask = cap - 1;
    for (size_t i = 0; i < n_merges; i++) {
        gguf_str l, r;
        if (merge_split(merges[i], &l, &r)) continue; /* unusable: llama.cpp can never apply it either */
        if (merges[i].len > 65535) continue;           /* longer than any piece a merge could join */
        if (merges[i].len * 4 > tmp_cap) {
            tmp_cap = merges[i].len * 4;
            char *nt = realloc(tmp, tmp_cap);
            if (!nt) goto fail;
            tmp = nt;
        }
        int m1, m2;
        size_t n1 = unmap_text(&bm, l.ptr, l.len, tmp, &m1);
        size_t n2 = unmap_text(&bm, r.ptr, r.len, tmp + n1, &m2);
        if (!m1 || !m2 || n1 > 65535 || n2 > 65535) continue; /* parts no symbol can ever have */
        if ((rc = merge_add(t, (unsigned char *)tmp, n1, (unsigned char *)tmp + n1, n2, (int32_t)i))) goto fail;
    }

    /* special-text candidates */
    rc = CORE_ENOMEM;
    t->spec = malloc((size_t)nv * sizeof *t->spec);
    if (!t->spec) goto fail;
    for (int32_t i = 0; i < nv; i++) {
        int ty = t->type[i];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN || ty == TOK_TYPE_USER_DEFINED) && t->piece_len[i]) {
            t->spec[t->n_spec++] = i;
            t->spec_first[(unsigned char)t->blob[t->piece_off[i]]] = 1;
        }
    }
    if (t->n_spec) {
        uint64_t *keys = malloc(t->n_spec * sizeof *keys);
        if (!keys) goto fail;
        for (size_t k = 0; k < t->n_spec; k++)
            keys[k] = ((uint64_t)(UINT32_MAX - t->piece_len[t->spec[k]]) << 32) | (uint32_t)t->spec[k];
        qsort(keys, t->n_spec, sizeof *keys, u64_cmp);
        for (size_t k = 0; k < t->n_spec; k++) t->spec[k] = (int32_t)(keys[k] & UINT32_MAX);
        free(keys);
    }

    t->sp.bos = tok_find(t, "<|begin_of_text|>");
    t->sp.end_of_text = tok_find(t, "<|end_of_text|>");
    t->sp.eot = tok_find(t, "<|eot_id|>");
    t->sp.eom = tok_find(t, "<|eom_id|>");
    if (t->sp.end_of_text < 0) t->sp.end_of_text = tok_find(t, "<|endoftext|>");
    t->sp.im_start = tok_find(t, "<|im_start|>");
    t->sp.im_end = tok_find(t, "<|im_end|>");
    t->sp.think = tok_find(t, "<think>");
    t->sp.think_end = tok_find(t, "</think>");
    t->sp.eos = t->sp.im_end;
    t->sp.pad = tok_find(t, "<|finetune_right_pad_id|>");
    t->sp.add_bos = 0;
    t->digits_max = 3;

    free(tmp);
    *out = t;
    return 0;
fail:
    free(tmp);
    tok_free(t);
    if (rc == CORE_ENOMEM) return core_errf(err, CORE_ENOMEM, "tokenizer: out of memory");
    if (rc == CORE_ERANGE) return core_errf(err, CORE_ERANGE, "tokenizer: vocab too large");
    return rc;
}

void tok_free(tok *t) {
    if (!t) return;
    free(t->type);
    free(t->piece_off);
    free(t->piece_len);
    free(t->key_off);
    free(t->key_len);
    free(t->blob);
    free(t->syms);
    free(t->merges);
    free(t->spec);
    free(t->chat_template);
    free(t);
}

/* Optional id key: absent is fine, out of range is an error. */
static int load_id(const gguf *g, const char *key, int32_t n_vocab, int32_t *dst, core_err *err) {
    uint32_t v;
    int rc = gguf_get_u32(g, key, &v, err);
    if (rc == CORE_ENOTFOUND) return 0;
    if (rc) return rc;
    if (v >= (uint32_t)n_vocab)
        return core_errf(err, CORE_ERANGE, "%s: %s = %u is not below the vocab size %d", gguf_name(g), key, v,
                         n_vocab);
    *dst = (int32_t)v;
    return 0;
}

int tok_load(tok **out, const gguf *g, core_err *err) {
    *out = NULL;
    gguf_str model;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &model, err);
    if (rc) return rc;
    if (model.len != 4 || memcmp(model.ptr, "gpt2", 4))
        return core_errf(err, CORE_EUNSUP,
                         "%s: tokenizer.ggml.model is '%.*s'; only 'gpt2' (byte-level BPE) is supported",
                         gguf_name(g), (int)CORE_MIN(model.len, 64), model.ptr);
    /* The pre-tokenizers we know differ only in how many digits a piece
     * takes: Llama 3's regex groups up to 3, Qwen2's splits every digit. */
    gguf_str pre;
    int digits_max = 3;
    if (gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL) == 0) {
        static const struct { const char *name; int digits; } known[] = {
            {"llama-bpe", 3}, {"llama3", 3}, {"llama-v3", 3}, {"smollm3", 3}, {"qwen2", 1}, {"deepseek-r1-qwen", 1}};
        int ok = 0;
        for (size_t i = 0; i < CORE_ARRAY_LEN(known); i++)
            if (pre.len == strlen(known[i].name) && !memcmp(pre.ptr, known[i].name, pre.len)) ok = 1, digits_max = known[i].digits;
        if (!ok)
            LOG_WARN("%s: tokenizer.ggml.pre '%.*s' is not a pre-tokenizer we know (llama-bpe, qwen2); using Llama 3's",
                     gguf_name(g), (int)CORE_MIN(pre.len, 64), pre.ptr);
    }
    gguf_str *toks = NULL, *merges = NULL;
    int32_t *types = NULL;
    uint64_t nt = 0, nm = 0, nty = 0;
    if ((rc = gguf_get_str_arr(g, "tokenizer.ggml.tokens", &toks, &nt, err))) goto done;
    rc = gguf_get_i32_arr(g, "tokenizer.ggml.token_type", &types, &nty, err);
    if (rc == CORE_ENOTFOUND) types = NULL;
    else if (rc) goto done;
    else if (nty != nt) {
        rc = core_errf(err, CORE_EFORMAT, "%s: %llu token types for %llu tokens", gguf_name(g),
                       (unsigned long long)nty, (unsigned long long)nt);
        goto done;
    }
    if ((rc = gguf_get_str_arr(g, "tokenizer.ggml.merges", &merges, &nm, err))) goto done;
    tok *t;
    if ((rc = tok_new(&t, toks, types, (size_t)nt, merges, (size_t)nm, err))) goto done;
    if ((rc = load_id(g, "tokenizer.ggml.bos_token_id", t->n_vocab, &t->sp.bos, err)) ||
        (rc = load_id(g, "tokenizer.ggml.eos_token_id", t->n_vocab, &t->sp.eos, err)) ||
        (rc = load_id(g, "tokenizer.ggml.padding_token_id", t->n_vocab, &t->sp.pad, err))) {
        tok_free(t);
        goto done;
    }
    int b;
    if (gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b, NULL) == 0) t->sp.add_bos = b;
    gguf_str ct;
    if (gguf_get_str(g, "general.architecture", &ct, NULL) == 0)
        snprintf(t->arch, sizeof t->arch, "%.*s", (int)CORE_MIN(ct.len, sizeof t->arch - 1), ct.ptr);
    if (gguf_get_str(g, "tokenizer.chat_template", &ct, NULL) == 0 && ct.len < ((size_t)1 << 24)) {
        if (!(t->chat_template = malloc(ct.len + 1))) {
            tok_free(t);
            rc = core_errf(err, CORE_ENOMEM, "tokenizer: out of memory");
            goto done;
        }
        memcpy(t->chat_template, ct.ptr, ct.len);
        t->chat_template[ct.len] = 0;
        t->chat_template_len = ct.len;
    }
    t->digits_max = digits_max;
    *out = t;
done:
    free(toks);
    free(merges);
    free(types);
    return rc;
}

/* ---- queries ---------------------------------------------------------- */

int32_t tok_n_vocab(const tok *t) { return t->n_vocab; }

const char *tok_piece(const tok *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->piece_len[id];
    return t->blob + t->piece_off[id];
}

int tok_type(const tok *t, int32_t id) { return id < 0 || id >= t->n_vocab ? -1 : t->type[id]; }

int tok_is_control(const tok *t, int32_t id) {
    int ty = tok_type(t, id);
    return ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN;
}

int32_t tok_find_n(const tok *t, const char *s, size_t len) {
    for (size_t i = 0; i < t->n_spec; i++) {
        int32_t id = t->spec[i];
        if (t->piece_len[id] == len && !memcmp(t->blob + t->piece_off[id], s, len)) return id;
    }
    return sym_lookup(t, s, len);
}

int32_t tok_find(const tok *t, const char *s) { return tok_find_n(t, s, strlen(s)); }

const tok_special *tok_specials(const tok *t) { return &t->sp; }

int tok_is_stop(const tok *t, int32_t id) {
    return id >= 0 && (id == t->sp.eos || id == t->sp.eot || id == t->sp.eom || id == t->sp.end_of_text ||
                       id == t->sp.im_end);
}

const char *tok_chat_template(const tok *t, size_t *len) {
    if (len) *len = t->chat_template_len;
    return t->chat_template;
}

const char *tok_arch(const tok *t) { return t->arch;
}

/* ---- encoding: scratch and output ------------------------------------- */

typedef struct bpe_sym {
    int32_t prev, next, start, len; /* len 0: merged into its left neighbour */
    uint64_t h, pw;                 /* H(bytes), B^len */
} bpe_sym;

typedef struct bpe_pair {
    int32_t rank, left, right, size; /* size: len(left) + len(right) when pushed */
} bpe_pair;

#define STACK_SYMS 256

typedef struct enc {
    const tok *t;
    int32_t **ids;
    size_t *n, *cap;
    bpe_sym *sym;
    bpe_pair *heap;
    size_t sym_cap; /* heap has 3 * sym_cap entries */
    bpe_sym *big_sym;
    bpe_pair *big_heap;
    size_t big_cap;
    bpe_sym stack_sym[STACK_SYMS];
    bpe_pair stack_heap[3 * STACK_SYMS];
} enc;

static int push_id(enc *e, int32_t id) {
    if (*e->n == *e->cap) {
        size_t nc = *e->cap ? *e->cap * 2 : 64;
        int32_t *p = realloc(*e->ids, nc * sizeof *p);
        if (!p) return CORE_ENOMEM;
        *e->ids = p;
        *e->cap = nc;
    }
    (*e->ids)[(*e->n)++] = id;
    return 0;
}

/* A final BPE symbol: its token, or (vocab lacking it) llama.cpp's
 * fallback of one-byte tokens, which can only hit self-mapped ASCII. */
static int push_sym(enc *e, const unsigned char *bytes, size_t n) {
    int32_t id = sym_lookup(e->t, bytes, n);
    if (id >= 0) return push_id(e, id);
    for (size_t i = 0; i < n; i++) {
        if (bytes[i] < 0x21 || bytes[i] > 0x7E || e->t->byte_sym[bytes[i]] < 0) continue;
        int rc = push_id(e, e->t->byte_sym[bytes[i]]);
        if (rc) return rc;
    }
    return 0;
}

static int pair_less(const bpe_pair *a, const bpe_pair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_pair *h, size_t *n, bpe_pair p) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_less(&p, &h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = p;
}

static bpe_pair heap_pop(bpe_pair *h, size_t *n) {
    bpe_pair top = h[0], last = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && pair_less(&h[c + 1], &h[c])) c++;
        if (!pair_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = last;
    return top;
}

static void try_pair(enc *e, const unsigned char *w, size_t *hn, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const bpe_sym *a = &e->sym[l], *b = &e->sym[r];
    int32_t rank = merge_rank(e->t, a->h, b->h, w + a->start, (size_t)a->len, w + b->start, (size_t)b->len);
    if (rank < 0) return;
    bpe_pair p = {rank, l, r, a->len + b->len};
    heap_push(e->heap, hn, p);
}

static int ensure_scratch(enc *e, size_t n) {
    if (n <= e->sym_cap) return 0;
    if (n > e->big_cap) {
        size_t nc = e->big_cap ? e->big_cap : 1024;
        while (nc < n) nc *= 2;
        bpe_sym *s = realloc(e->big_sym, nc * sizeof *s);
        if (!s) return CORE_ENOMEM;
        e->big_sym = s;
        bpe_pair *h = realloc(e->big_heap, 3 * nc * sizeof *h);
        if (!h) return CORE_ENOMEM;
        e->big_heap = h;
        e->big_cap = nc;
    }
    e->sym = e->big_sym;
    e->heap = e->big_heap;
    e->sym_cap = e->big_cap;
    return 0;
}

/* One pre-tokenized piece w[0..n) -> ids. */
static int bpe_piece(enc *e, const unsigned char *w, size_t n) {
    const tok *t = e->t;
    int32_t whole = sym_lookup(t, w, n);
    if (whole >= 0) return push_id(e, whole); /* llama.cpp's ignore_merges */
    if (n == 1) return push_sym(e, w, 1);
    int rc = ensure_scratch(e, n);
    if (rc) return rc;
    bpe_sym *s = e->sym;
    for (size_t i = 0; i < n; i++) {
        s[i].prev = (int32_t)i - 1;
        s[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
        s[i].start = (int32_t)i;
        s[i].len = 1;
        s[i].h = (uint64_t)w[i] + 1;
        s[i].pw = POLY_B;
    }
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) try_pair(e, w, &hn, (int32_t)i, (int32_t)i + 1);
    while (hn) {
        bpe_pair p = heap_pop(e->heap, &hn);
        bpe_sym *l = &s[p.left], *r = &s[p.right];
        if (!l->len || !r->len || l->len + r->len != p.size) continue; /* stale */
        l->h = l->h * r->pw + r->h;
        l->pw *= r->pw;
        l->len += r->len;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = p.left;
        try_pair(e, w, &hn, l->prev, p.left);
        try_pair(e, w, &hn, p.left, l->next);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        if ((rc = push_sym(e, w + s[i].start, (size_t)s[i].len))) return rc;
    return 0;
}

/* ---- the Llama-3 pre-tokenizer ------------------------------------------ *
 *
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * Written as llama.cpp's unicode_regex_split_custom_llama3 behaves: at each
 * position try the alternatives in order, each one greedy. The input here is
 * already "lenient-canonical" (see canon_fragment), so decoding can't fail. */

#define F_LET TOK_UNI_LETTER
#define F_NUM TOK_UNI_NUMBER
#define F_WS TOK_UNI_SPACE
#define F_ANY 8 /* any code point; 0 means "past the end" */

/* Decode at s[pos] (pos < n). Lenient like llama.cpp: surrogates pass; the
 * input was canonicalized so sequences are complete. */
static inline size_t cp_at(const unsigned char *s, size_t n, size_t pos, uint32_t *cp, unsigned *fl) {
    if (pos >= n) {
        *cp = 0xFFFFFFFFu;
        *fl = 0;
        return 0;
    }
    unsigned char b = s[pos];
    size_t l;
    uint32_t c;
    if (b < 0x80) {
        c = b;
        l = 1;
    } else if (b < 0xE0) {
        c = ((uint32_t)(b & 0x1F) << 6) | (s[pos + 1] & 0x3F);
        l = 2;
    } else if (b < 0xF0) {
        c = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[pos + 1] & 0x3F) << 6) | (s[pos + 2] & 0x3F);
        l = 3;
    } else {
        c = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[pos + 1] & 0x3F) << 12) |
            ((uint32_t)(s[pos + 2] & 0x3F) << 6) | (s[pos + 3] & 0x3F);
        l = 4;
    }
    *cp = c;
    *fl = (unsigned)tok_uni_blocks[tok_uni_index[c >> 8]][c & 255] | F_ANY;
    return l;
}

static inline uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int split_llama3(enc *e, const unsigned char *s, size_t n) {
    size_t pos = 0;
    int rc = 0;
#define EMIT(a, b)                                                                   \
    do {                                                                             \
        if ((b) > (a) && (rc = bpe_piece(e, s + (a), (size_t)((b) - (a))))) return rc; \
    } while (0)
    while (pos < n) {
        size_t start = pos;
        uint32_t c, c1, c2;
        unsigned f, f1, f2;
        size_t l = cp_at(s, n, pos, &c, &f);
        /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
        if (c == '\'' && pos + l < n) {
            size_t l1 = cp_at(s, n, pos + l, &c1, &f1);
            c1 = ascii_lower(c1);
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                pos += l + l1;
                EMIT(start, pos);
                continue;
            }
            if (pos + l + l1 < n) {
                size_t l2 = cp_at(s, n, pos + l + l1, &c2, &f2);
                c2 = ascii_lower(c2);
                if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
                    pos += l + l1 + l2;
                    EMIT(start, pos);
                    continue;
                }
            }
        }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!(c == '\r' || c == '\n' || (f & F_NUM))) {
            size_t q = pos + l;
            cp_at(s, n, q, &c1, &f1);
            if ((f & F_LET) || (f1 & F_LET)) {
                for (;;) {
                    size_t lq = cp_at(s, n, q, &c1, &f1);
                    if (!(f1 & F_LET)) break;
                    q += lq;
                }
                EMIT(start, q);
                pos = q;
                continue;
            }
        }
        /* \p{N}{1,3} (Qwen2's regex: \p{N}, one digit a piece) */
        if (f & F_NUM) {
            size_t q = pos;
            int k = 0;
            for (;;) {
                size_t lq = cp_at(s, n, q, &c1, &f1);
                if (!(f1 & F_NUM)) break;
                q += lq;
                if (++k == e->t->digits_max) {
                    EMIT(start, q);
                    start = q;
                    k = 0;
                }
            }
            EMIT(start, q);
            pos = q;
            continue;
        }
        /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
        {
            size_t q = pos;
            f2 = f;
            if (c == ' ') cp_at(s, n, pos + l, &c2, &f2);
            if (!(f2 & (F_WS | F_LET | F_NUM))) {
                if (c == ' ') q += l;
                for (;;) {
                    size_t lq = cp_at(s, n, q, &c1, &f1);
                    if (!f1 || (f1 & (F_WS | F_LET | F_NUM))) break;
                    q += lq;
                }
                while (q < n && (s[q] == '\r' || s[q] == '\n')) q++;
                EMIT(start, q);
                pos = q;
                continue;
            }
        }
        /* \s*[\r\n]+ | \s+(?!\S) | \s+ */
        {
            size_t q = pos, k = 0, last_start = pos, end_rn = 0;
            int have_rn = 0;
            for (;;) {
                size_t lq = cp_at(s, n, q, &c1, &f1);
                if (!(f1 & F_WS)) break;
                if (c1 == '\r' || c1 == '\n') {
                    have_rn = 1;
                    end_rn = q + lq;
                }
                last_start = q;
                q += lq;
                k++;
            }
            if (have_rn) {
                EMIT(start, end_rn);
                pos = end_rn;
                continue;
            }
            if (k > 1 && q < n) {
                EMIT(start, last_start);
                pos = last_start;
                continue;
            }
            if (k > 0) {
                EMIT(start, q);
                pos = q;
                continue;
            }
        }
        pos += l; /* no alternative matched: one code point alone */
        EMIT(start, pos);
    }
#undef EMIT
    return 0;
}

/* llama.cpp's lenient UTF-8 decode of one code point: checks the lead and
 * the continuation bytes only (overlongs and surrogates pass). Returns the
 * length, or 0 for a bad byte (llama.cpp: U+FFFD, skip one byte). Code
 * points above U+10FFFF, which llama.cpp cannot re-encode (it throws), are
 * treated as bad bytes here. */
static size_t lenient_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned char b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t l = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (!l || l > n) return 0;
    for (size_t i = 1; i < l; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    uint32_t c = l == 2 ? (uint32_t)(b & 0x1F) : l == 3 ? (uint32_t)(b & 0x0F) : (uint32_t)(b & 0x07);
    for (size_t i = 1; i < l; i++) c = (c << 6) | (s[i] & 0x3F);
    if (c > 0x10FFFF) return 0;
    *cp = c;
    return l;
}

static size_t enc_len(uint32_t c) { return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4; }

static size_t put_utf8(unsigned char *o, uint32_t c) {
    if (c < 0x80) {
        o[0] = (unsigned char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (unsigned char)(0xC0 | (c >> 6));
        o[1] = (unsigned char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (c >> 12));
        o[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (c >> 18));
    o[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (c & 0x3F));
    return 4;
}

/* 1 if decoding then re-encoding s[0..n) as llama.cpp does gives s back. */
static int is_canonical(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t c;
        size_t l = lenient_decode(s + i, n - i, &c);
        if (!l || enc_len(c) != l) return 0;
        i += l;
    }
    return 1;
}

/* Tokenize one raw (non-special) fragment. */
static int encode_raw(enc *e, const unsigned char *s, size_t n) {
    if (is_canonical(s, n)) return split_llama3(e, s, n);
    /* Rewrite as llama.cpp sees it: bad bytes -> U+FFFD, overlongs shortened. */
    if (n > SIZE_MAX / 3) return CORE_ENOMEM;
    unsigned char *c = malloc(n * 3 + 1);
    if (!c) return CORE_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = lenient_decode(s + i, n - i, &cp);
        if (!l) {
            cp = 0xFFFD;
            l = 1;
        }
        o += put_utf8(c + o, cp);
        i += l;
    }
    int rc = split_llama3(e, c, o);
    free(c);
    return rc;
}

/* ---- special-token partition -------------------------------------------- */

typedef struct frag {
    size_t off, len;
    int32_t id; /* >= 0: a special token; -1: raw text */
} frag;

static int eligible(const tok *t, int32_t id, int parse_special) {
    return parse_special || t->type[id] == TOK_TYPE_USER_DEFINED;
}

/* Split fragments by the special tokens present in text, in llama.cpp's
 * order (longest text first; each claims its leftmost non-overlapping
 * occurrences inside raw fragments). *out is malloc'd; *nout fragments. */
/* 1 if [off, off+n) overlaps one of the plain spans (sorted by offset). */
static int in_plain(const tok_span *plain, size_t n_plain, size_t off, size_t n) {
    for (size_t i = 0; i < n_plain; i++) {
        if (plain[i].off >= off + n) break;
        if (plain[i].off + plain[i].len > off) return 1;
    }
    return 0;
}

static int partition(const tok *t, const char *text, size_t len, int parse_special, const tok_span *plain,
                     size_t n_plain, frag **out, size_t *nout) {
    *out = NULL;
    *nout = 0;
    uint8_t *present = NULL;
    frag *a = NULL, *b = NULL;
    size_t na = 0, capa = 16, capb = 16;
    int rc = CORE_ENOMEM;
    a = malloc(capa * sizeof *a);
    b = malloc(capb * sizeof *b);
    if (!a || !b) goto done;
    a[na++] = (frag){0, len, -1};
    int any = 0;
    for (size_t i = 0; i < len && !any; i++) any = t->spec_first[(unsigned char)text[i]];
    if (any) {
        if (!(present = calloc(t->n_spec, 1))) goto done;
        /* Which candidates occur at all: one pass over the text, testing at
         * bytes that start some candidate. */
        for (size_t i = 0; i < len; i++) {
            if (!t->spec_first[(unsigned char)text[i]]) continue;
            for (size_t k = 0; k < t->n_spec; k++) {
                int32_t id = t->spec[k];
                size_t pl = t->piece_len[id];
                const char *p = t->blob + t->piece_off[id];
                if (present[k] || pl > len - i || p[0] != text[i] || !eligible(t, id, parse_special)) continue;
                if (!memcmp(p, text + i, pl)) present[k] = 1;
            }
        }
        for (size_t k = 0; k < t->n_spec; k++) {
            if (!present[k]) continue;
            int32_t id = t->spec[k];
            size_t pl = t->piece_len[id];
            const char *p = t->blob + t->piece_off[id];
            size_t nb = 0;
            for (size_t j = 0; j < na; j++) {
                frag f = a[j];
                /* each fragment yields at most 2 * matches + 1 pieces */
                if (f.id >= 0) {
                    if (nb == capb) {
                        frag *nbuf = realloc(b, (capb *= 2) * sizeof *b);
                        if (!nbuf) goto done;
                        b = nbuf;
                    }
                    b[nb++] = f;
                    continue;
                }
                size_t cur = f.off, end = f.off + f.len, from = cur;
                for (;;) {
                    const char *m = from < end ? memmem(text + from, end - from, p, pl) : NULL;
                    if (m && in_plain(plain, n_plain, (size_t)(m - text), pl)) {
                        from = (size_t)(m - text) + 1; /* text a user typed: not a token here */
                        continue;
                    }
                    if (nb + 2 >= capb) {
                        frag *nbuf = realloc(b, (capb *= 2) * sizeof *b);
                        if (!nbuf) goto done;
                        b = nbuf;
                    }
                    if (!m) {
                        if (end > cur) b[nb++] = (frag){cur, end - cur, -1};
                        break;
                    }
                    size_t mo = (size_t)(m - text);
                    if (mo > cur) b[nb++] = (frag){cur, mo - cur, -1};
                    b[nb++] = (frag){mo, pl, id};
                    cur = from = mo + pl;
                }
            }
            frag *tmp = a;
            a = b;
            b = tmp;
            size_t tc = capa;
            capa = capb;
            capb = tc;
            na = nb;
        }
    }
    *out = a;
    *nout = na;
    a = NULL;
    rc = 0;
done:
    free(a);
    free(b);
    free(present);
    return rc;
}

int tok_encode(const tok *t, const char *text, size_t len, int parse_special, int32_t **ids, size_t *n, size_t *cap,
               core_err *err) {
    return tok_encode_masked(t, text, len, parse_special, NULL, 0, ids, n, cap, err);
}

int tok_add_bos(const tok *t, int32_t **ids, size_t *n, size_t *cap, core_err *err) {
    const tok_special *sp = tok_specials(t);
    if (!sp->add_bos || sp->bos < 0 || (*n > 0 && (*ids)[0] == sp->bos)) return 0;
    if (*n + 1 > *cap) {
        size_t c = *cap ? *cap * 2 : 16;
        while (c < *n + 1) c *= 2;
        int32_t *p = realloc(*ids, c * sizeof *p);
        if (!p) return core_errf(err, CORE_ENOMEM, "out of memory");
        *ids = p;
        *cap = c;
    }
    memmove(*ids + 1, *ids, *n * sizeof **ids);
    (*ids)[0] = sp->bos;
    (*n)++;
    return 0;
}

int tok_encode_masked(const tok *t, const char *text, size_t len, int parse_special, const tok_span *plain,
                      size_t n_plain, int32_t **ids, size_t *n, size_t *cap, core_err *err) {
    for (size_t i = 0; i < n_plain; i++)
        if (plain[i].off > len || plain[i].len > len - plain[i].off || (i && plain[i].off < plain[i - 1].off))
            return core_errf(err, CORE_EINVAL, "tok_encode: plain span %zu out of order or out of range", i);
    if (!text && len) return core_errf(err, CORE_EINVAL, "tok_encode: NULL text");
    if (len > ((size_t)1 << 30)) return core_errf(err, CORE_EINVAL, "tok_encode: text of %zu bytes is too long", len);
    size_t n0 = *n;
    enc *e = malloc(sizeof *e); /* ~20 KB of stack scratch is too much for small thread stacks */
    if (!e) return core_errf(err, CORE_ENOMEM, "tok_encode: out of memory");
    e->t = t;
    e->ids = ids;
    e->n = n;
    e->cap = cap;
    e->sym = e->stack_sym;
    e->heap = e->stack_heap;
    e->sym_cap = STACK_SYMS;
    e->big_sym = NULL;
    e->big_heap = NULL;
    e->big_cap = 0;
    frag *fr = NULL;
    size_t nf = 0;
    int rc = partition(t, text, len, parse_special, plain, n_plain, &fr, &nf);
    for (size_t i = 0; !rc && i < nf; i++) {
        if (fr[i].id >= 0) rc = push_id(e, fr[i].id);
        else rc = encode_raw(e, (const unsigned char *)text + fr[i].off, fr[i].len);
    }
    free(fr);
    free(e->big_sym);
    free(e->big_heap);
    free(e);
    if (rc) {
        *n = n0;
        return core_errf(err, rc, "tok_encode: %s", core_strerror(rc));
    }
    return 0;
}

/* ---- decoding ----------------------------------------------------------- */

int tok_decode(const tok *t, const int32_t *ids, size_t n, int show_control, core_buf *out) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) return CORE_EINVAL;
        if (!show_control && tok_is_control(t, ids[i])) continue;
        total += t->piece_len[ids[i]];
    }
    if (core_buf_reserve(out, total)) return CORE_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!show_control && tok_is_control(t, ids[i])) continue;
        if (core_buf_append(out, t->blob + t->piece_off[ids[i]], t->piece_len[ids[i]])) return CORE_ENOMEM;
    }
    return 0;
}

void tok_stream_init(tok_stream *s, const tok *t, int show_control) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->show_control = show_control;
}

/* core's sanitizer a step at a time, with the bytes of a character cut by
 * the token boundary held for the next piece. */
static int stream_feed(tok_stream *s, const unsigned char *p, size_t n, core_buf *out) {
    size_t i = 0;
    if (s->n_held) { /* finish the held character first: at most 4 bytes decide it */
        char c[4];
        size_t h = (size_t)s->n_held, m = h + CORE_MIN(n, 4 - h);
        memcpy(c, s->held, h);
        memcpy(c + h, p, m - h);
        int ok;
        size_t k = core_utf8_step(c, m, &ok);
        if (ok < 0) { /* still cut: all of p joins the held bytes */
            memcpy(s->held, c, m);
            s->n_held = (int)m;
            return 0;
        }
        s->n_held = 0;
        if (core_buf_append(out, ok ? c : CORE_UTF8_REPL, ok ? k : 3)) return CORE_ENOMEM;
        i = k - h; /* a bad byte after the held ones starts afresh */
    }
    size_t run = i; /* p[run..i) is valid and not yet copied */
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        int ok;
        size_t k = core_utf8_step((const char *)p + i, n - i, &ok);
        if (ok == 1) {
            i += k;
            continue;
        }
        if (core_buf_append(out, p + run, i - run)) return CORE_ENOMEM;
        if (ok < 0) { /* cut by the token boundary: hold */
            memcpy(s->held, p + i, k);
            s->n_held = (int)k;
            return 0;
        }
        if (core_buf_append(out, CORE_UTF8_REPL, 3)) return CORE_ENOMEM; /* one per maximal bad subpart */
        i += k;
        run = i;
    }
    return core_buf_append(out, p + run, n - run) ? CORE_ENOMEM : 0;
}

int tok_stream_push(tok_stream *s, int32_t id, core_buf *out) {
    const tok *t = s->t;
    if (id < 0 || id >= t->n_vocab) return CORE_EINVAL;
    if (tok_is_control(t, id)) {
        if (!s->show_control) return 0;
        if (s->n_held) {
            s->n_held = 0;
            if (core_buf_append(out, CORE_UTF8_REPL, 3)) return CORE_ENOMEM;
        }
        return core_buf_append(out, t->blob + t->piece_off[id], t->piece_len[id]) ? CORE_ENOMEM : 0;
    }
    return stream_feed(s, (const unsigned char *)t->blob + t->piece_off[id], t->piece_len[id], out);
}

int tok_stream_flush(tok_stream *s, core_buf *out, int keep_incomplete) {
    int had = s->n_held;
    s->n_held = 0;
    if (had && keep_incomplete && core_buf_append(out, CORE_UTF8_REPL, 3)) return CORE_ENOMEM;
    return 0;
}
