/* chat.h -- the SmolLM3 chat format, rendered natively, and the thinking parser.
 *
 * Rendering. chat_render() produces, byte for byte, what the official SmolLM3
 * Jinja template produces for the same conversation (checked against the
 * Jinja2 renders in ../shared/refdata/template). There is no template engine
 * here: the template's logic is short and fixed, so it is written out in C.
 * No JSON library either: tool descriptions arrive as repr lines that
 * chat_tools_repr writes from JSON text (a small strict reader), messages
 * as plain (role, content) pairs, an assistant's tool calls as (name,
 * arguments text) pairs.
 *
 * Tool-call parser. SmolLM3 and Qwen write calls as
 * "<tool_call>{json}</tool_call>", Llama 3.x as a bare JSON object that is
 * the whole answer; chat_calls splits a stream of answer text into content
 * and call bodies, in either form.
 *
 * Thinking parser. A model in /think mode writes "<think>\n...\n</think>\n"
 * and then its answer; chat_think splits a stream of generated text into
 * reasoning and answer as it arrives, holding back bytes that might be the
 * start of a tag until the next push decides.
 *
 * Neither part keeps global state; every object here is owned by one thread.
 */
#ifndef CHAT_H
#define CHAT_H

#include <stddef.h>
#include <time.h>

#include "core/core.h"

/* One message. role is "system" (first message only), "user", "assistant" or
 * "tool"; anything else is rejected by chat_render. content may be NULL
 * (rendered as empty, like a non-string content in the template) and is
 * content_len bytes long (it may contain NUL bytes; it is not parsed).
 * Borrowed: the strings must live for the duration of the call. */
typedef struct chat_call {
    const char *name;       /* the function's name, name_len bytes of plain text */
    size_t name_len;
    const char *arguments;  /* a JSON object's text, written as is */
    size_t arguments_len;
} chat_call;

typedef struct chat_msg {
    const char *role;
    const char *content;
    size_t content_len;
} chat_msg;

/* An assistant's tool calls (chat_opts.calls[i] for message i), rendered
 * the way the model writes them, after the content (and a "\n" when there
 * is content): "<tool_call>\n{\"name\": \"NAME\", \"arguments\": ARGS}\n</tool_call>",
 * calls joined by "\n". The name is JSON-escaped; both are user text
 * (spans). The template has no such field: the model was trained on that
 * text as the assistant's content. */
typedef struct chat_msg_calls {
    const chat_call *v;
    size_t n;
} chat_msg_calls;

typedef struct chat_opts {
    int enable_thinking;       /* 1: /think (the template's default), 0: /no_think */
    int add_generation_prompt; /* 1: end with the assistant header the model continues */
    const char *date;          /* "26 November 2026"; NULL: today (local time) */
    /* Tool descriptions, already rendered one per line, each line ending in
     * "\n": exactly the text the template puts between "<tools>\n" and
     * "</tools>" (the template writes each tool with Jinja's `| string`, i.e.
     * Python's repr of the dict: {'name': 'f', ...}). NULL or "" = no tools. */
    const char *xml_tools;
    const char *python_tools; /* same shape, for the template's python_tools; usually NULL */
    /* 1: the last message is an unfinished assistant answer that the model
     * continues: it is rendered without its closing "<|im_end|>\n" and no
     * generation prompt follows (add_generation_prompt is ignored). Refused
     * (CORE_EINVAL) when the last message is not an assistant's. */
    int continue_final;
    /* NULL, or one entry per message: the tool calls of assistant messages
     * (entries of other roles must be empty). Borrowed for the call. */
    const chat_msg_calls *calls;
} chat_opts;

/* Defaults: thinking on, generation prompt on, today's date, no tools. */
void chat_opts_default(chat_opts *o);

/* Append the rendered prompt for msgs[0..n) to out (out is not cleared).
 * Returns 0, CORE_EINVAL (unknown role, a system message after the first,
 * NULL role) or CORE_ENOMEM; on error out may hold a partial render. */
int chat_render(const chat_msg *msgs, size_t n, const chat_opts *o, core_buf *out, core_err *err);

/* What a render reports besides its text. v: the byte ranges that came from
 * message contents (and the system prompt), text users typed, to be
 * tokenized without special tokens (src/prompt); sorted by offset; free v
 * with free(). system_end: where the system block that opens every prompt
 * ("<|im_start|>system\n...<|im_end|>\n") ends; it depends only on the
 * system message, the mode, the date and the tools, so conversations that
 * agree on those share it. All offsets are positions in out. */
typedef struct chat_span {
    size_t off, len;
} chat_span;
typedef struct chat_spans {
    chat_span *v;
    size_t n, cap;
    size_t system_end;
} chat_spans;
/* chat_render that also fills *spans (may be NULL). */
int chat_render_spans(const chat_msg *msgs, size_t n, const chat_opts *o, core_buf *out, chat_spans *spans,
                      core_err *err);

/* Python repr() lines for chat_opts.xml_tools / python_tools: json is a
 * JSON array of tool objects (or one object); appends one repr per element,
 * each ending in "\n", to out. Returns 0, CORE_EINVAL (not valid JSON) or
 * CORE_ENOMEM. */
int chat_tools_repr(const char *json, size_t len, core_buf *out, core_err *err);

/* Effective reasoning mode: 1 for /think, 0 for /no_think. A first message
 * with role "system" that contains "/no_think" forces 0, else one that
 * contains "/think" forces 1, else enable_thinking decides. In mode 0 the
 * generation prompt ends with the pre-filled "<think>\n\n</think>\n", so the
 * generated text starts in the answer (chat_think_init(p, 1)). */
int chat_mode_of(const chat_msg *msgs, size_t n, int enable_thinking);

/* Write `now` as local "%d %B %Y" with English month names ("05 March 2026")
 * into buf. Returns 0, or CORE_ERANGE if cap is too small (needs <= 20). */
int chat_date_today(char *buf, size_t cap, time_t now);

/* ---- thinking stream parser ----------------------------------------------
 *
 * States: BEFORE (think mode, no "<think>" seen yet: text is answer, and a
 * "<think>" opens the block), THINK (text is reasoning until "</think>"),
 * AFTER (everything is answer verbatim; tags are no longer recognized, so a
 * model that writes about "<think>" in its answer is shown as written).
 *
 * Whitespace, the way chat UIs show it: newlines at the start of the
 * reasoning are dropped, newlines right before "</think>" are dropped, and
 * newlines at the start of the answer are dropped (the template itself
 * lstrips "\n" from assistant history, so nothing is lost on the next turn).
 * Other bytes pass through unchanged. An unclosed block at the end of the
 * stream is reasoning. No allocation beyond appending to the caller's
 * buffers; a partial tag is held in the struct (at most 8 bytes). */
typedef struct chat_think {
    int state;            /* CHAT_THINK_BEFORE / _THINK / _AFTER */
    char hold[8];         /* bytes that may be the start of the tag we look for */
    size_t hold_len;
    size_t nl_pending;    /* newlines seen in THINK not yet known to be inner */
    int reasoning_started;/* a non-newline reasoning byte was emitted */
    int answer_started;   /* a non-newline answer byte was emitted */
} chat_think;

enum { CHAT_THINK_BEFORE = 0, CHAT_THINK_THINK = 1, CHAT_THINK_AFTER = 2 };

/* starts_in_answer: 1 when the prompt pre-filled "<think>\n\n</think>\n"
 * (/no_think mode): the whole stream is answer. */
void chat_think_init(chat_think *p, int starts_in_answer);
/* Feed len bytes of generated text; appends what is decided to reasoning and
 * answer (either may be NULL to discard). Returns 0 or CORE_ENOMEM. */
int chat_think_push(chat_think *p, const char *text, size_t len, core_buf *reasoning, core_buf *answer);
/* End of stream: releases held bytes (a partial tag is plain text of the
 * current part). Returns 0 or CORE_ENOMEM. */
int chat_think_finish(chat_think *p, core_buf *reasoning, core_buf *answer);

/* ---- tool-call stream parser ----------------------------------------------
 *
 * Splits answer text into content and "<tool_call>BODY</tool_call>" blocks
 * as it arrives. Content is appended to the caller's buffer; each block's
 * BODY (raw bytes, usually "\n{json}\n") is handed to on_call once its
 * closing tag arrived (complete 1), or at finish when the stream ended
 * inside it (complete 0). Bytes that may start a tag are held (at most 11).
 * on_call returns 0 or an error that push/finish pass on. */
typedef int (*chat_calls_fn)(void *ctx, const char *body, size_t len, int complete);

/* The bare JSON form (Llama 3.x): the answer is a tool call when it opens,
 * after optional whitespace and an optional "<|python_tag|>", with a JSON
 * object; more objects may follow, separated by whitespace or ';'. Each
 * object, once its braces balance (strings and escapes respected), goes to
 * on_call (complete 1); on_call returns CHAT_CALLS_REJECT when it is not a
 * call, and then that object's raw text (with what preceded it) and all
 * that follows are content. Anything but an object where one may start
 * ends the calls: the rest is content. An object still open at finish is
 * content (never a call). Everything held is held in block. */
enum { CHAT_CALLS_REJECT = 1 };

typedef struct chat_calls {
    int in_call;       /* inside a block */
    int n_calls;       /* blocks opened so far */
    char hold[16];
    size_t hold_len;
    core_buf block;    /* the body of the open block; JSON form: the raw text held */
    int json;          /* 1: the bare JSON form */
    int jstate;        /* JSON form: where the parser is (tools.c) */
    int depth, in_str, esc, tag_i, tag_seen;
    size_t obj_off;    /* JSON form: where the open object starts in block */
} chat_calls;

void chat_calls_init(chat_calls *p);
void chat_calls_init_json(chat_calls *p); /* the bare JSON form */
void chat_calls_free(chat_calls *p);
/* Returns 0, CORE_ENOMEM or on_call's error. content may be NULL. */
int chat_calls_push(chat_calls *p, const char *text, size_t len, core_buf *content, chat_calls_fn on_call, void *ctx);
int chat_calls_finish(chat_calls *p, core_buf *content, chat_calls_fn on_call, void *ctx);

#endif
