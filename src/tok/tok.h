/* tok.h -- the SmolLM3 tokenizer: byte-level BPE read from the GGUF, with the
 * Llama-3 pre-tokenizer, special tokens and a streaming detokenizer.
 *
 * Encoding is meant to give exactly llama.cpp's ids (checked against its
 * outputs in ../shared/refdata/tokenizer):
 *   1. special-token partition: control / unknown tokens (type 3 / 2) only
 *      when parse_special, user-defined tokens (type 4) always; longer token
 *      texts claim their occurrences first, as llama.cpp does;
 *   2. each remaining text fragment is split by the Llama-3 pre-tokenizer
 *      regex (hand-written scanner over generated Unicode tables);
 *   3. each piece: if its bytes are a whole token, that token (llama.cpp's
 *      ignore_merges for this pre-tokenizer); otherwise BPE merges by rank
 *      with a heap over a linked list of symbols (O(n log n) per piece).
 * Invalid UTF-8 in the input is replaced by U+FFFD per bad byte before
 * pre-tokenization, as llama.cpp does (so decode(encode(x)) == x only for
 * valid UTF-8).
 *
 * Thread safety: a loaded tok is immutable; any number of threads may
 * encode/decode with it concurrently. A tok_stream belongs to one thread.
 */
#ifndef TOK_H
#define TOK_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "gguf/gguf.h"

typedef struct tok tok;

/* Token types as stored in tokenizer.ggml.token_type. */
enum {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

/* Special ids; -1 where the file has no such token. */
typedef struct tok_special {
    int32_t bos;         /* tokenizer.ggml.bos_token_id, <|begin_of_text|> */
    int32_t eos;         /* tokenizer.ggml.eos_token_id, <|im_end|> for SmolLM3 */
    int32_t eot;         /* <|eot_id|> */
    int32_t eom;         /* <|eom_id|> (Llama 3.1: end of a tool-calling message) */
    int32_t end_of_text; /* <|end_of_text|>, or Qwen's <|endoftext|> */
    int32_t im_start;    /* <|im_start|> */
    int32_t im_end;      /* <|im_end|> */
    int32_t think;       /* <think> */
    int32_t think_end;   /* </think> */
    int32_t pad;         /* tokenizer.ggml.padding_token_id */
    int add_bos;         /* tokenizer.ggml.add_bos_token (0 if absent) */
} tok_special;

/* Build the tokenizer from the tokenizer.ggml.* keys of g. Copies what it
 * needs: g may be closed afterwards. Refuses tokenizer.ggml.model other than
 * "gpt2" (CORE_EUNSUP). Returns 0 or a negative CORE_E* code with err set. */
int tok_load(tok **out, const gguf *g, core_err *err);

/* The same from plain arrays (tests, fuzzing, tools). tokens[i] is the text
 * of id i as stored in a GGUF (GPT-2 byte-to-unicode form); types may be
 * NULL (all normal); merges are "left right" strings, rank = index. */
int tok_new(tok **out, const gguf_str *tokens, const int32_t *types, size_t n_tokens, const gguf_str *merges,
            size_t n_merges, core_err *err);
void tok_free(tok *t); /* NULL is a no-op */

/* Encode len bytes of text, APPENDING the ids to the caller's growable array
 * (*ids, *n used, *cap allocated; start with NULL/0/0 and free(*ids) when
 * done; realloc'd only when full). parse_special: whether control-token text
 * becomes control ids (only for text the program builds, never for user
 * text). BOS is never added (SmolLM3 does not use it). Returns 0, or
 * CORE_ENOMEM / CORE_EINVAL (then *n is unchanged). */
int tok_encode(const tok *t, const char *text, size_t len, int parse_special, int32_t **ids, size_t *n, size_t *cap,
               core_err *err);

/* Put BOS before ids[0..*n) when the file asks for it (add_bos_token) and
 * it is not there yet, as llama.cpp does for a raw text prompt. Same
 * buffer rules as tok_encode. Returns 0 or CORE_ENOMEM. */
int tok_add_bos(const tok *t, int32_t **ids, size_t *n, size_t *cap, core_err *err);

/* The same over a whole chat prompt: special-token text is recognized
 * (parse_special) everywhere EXCEPT inside the plain spans, the bytes that
 * came from users (message contents). Spans are sorted by offset. The ids
 * equal a whole-text encode except that text typed by a user can never
 * become a control token, so nobody can forge a turn or a stop. */
typedef struct tok_span {
    size_t off, len;
} tok_span;
int tok_encode_masked(const tok *t, const char *text, size_t len, int parse_special, const tok_span *plain,
                      size_t n_plain, int32_t **ids, size_t *n, size_t *cap, core_err *err);

int32_t tok_n_vocab(const tok *t);
/* Decoded bytes of id (byte-level mapping undone; for control and
 * user-defined tokens the literal text). Points into t, valid until
 * tok_free; not NUL-terminated. NULL (and *len 0) for an id out of range. */
const char *tok_piece(const tok *t, int32_t id, size_t *len);
int tok_type(const tok *t, int32_t id);       /* TOK_TYPE_*, -1 out of range */
int tok_is_control(const tok *t, int32_t id); /* type control or unknown: hidden in text */
/* Id of the token whose text is exactly s (decoded bytes, or the literal
 * text of a control token), or -1. */
int32_t tok_find(const tok *t, const char *s);
int32_t tok_find_n(const tok *t, const char *s, size_t len);
const tok_special *tok_specials(const tok *t);
/* 1 if generation should stop at id: eos, eot, eom, end_of_text or im_end. */
int tok_is_stop(const tok *t, int32_t id);
/* The file's tokenizer.chat_template (NULL when it has none; *len its
 * length) and general.architecture ("" when absent), both copied at load:
 * they live as long as t. */
const char *tok_chat_template(const tok *t, size_t *len);
const char *tok_arch(const tok *t);

/* Whole-sequence decode: appends the concatenated pieces to out, raw bytes
 * (a sequence cut inside a character yields invalid UTF-8, as the model
 * produced it). Control tokens only when show_control. Returns 0,
 * CORE_EINVAL (id out of range: nothing appended) or CORE_ENOMEM. */
int tok_decode(const tok *t, const int32_t *ids, size_t n, int show_control, core_buf *out);

/* Streaming decoder for generation: push ids one at a time; out receives
 * only complete, valid UTF-8 characters. Bytes of a character cut across
 * tokens are held (at most 3) until the rest arrives; bytes that can never
 * form a valid character are replaced by U+FFFD, so out is always valid
 * UTF-8. A hidden control token does not break a held character; a shown one
 * does (held bytes become U+FFFD first). No allocation besides growing out. */
typedef struct tok_stream {
    const tok *t;
    int show_control;
    unsigned char held[4];
    int n_held;
} tok_stream;

void tok_stream_init(tok_stream *s, const tok *t, int show_control);
/* Returns 0, CORE_EINVAL (id out of range; state unchanged) or CORE_ENOMEM. */
int tok_stream_push(tok_stream *s, int32_t id, core_buf *out);
/* End of stream: held bytes become one U+FFFD if keep_incomplete, else are
 * dropped. The stream can then be reused. */
int tok_stream_flush(tok_stream *s, core_buf *out, int keep_incomplete);

#endif
