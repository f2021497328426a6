/* prompt.h -- a conversation to the token ids the engine runs.
 *
 * One path for every client (the terminal chat, the OpenAI route, the web
 * page): render the messages in the chat format (src/chat), then tokenize
 * with the bytes that came from messages masked, so text a user typed can
 * never become a control token (no forged turn, no forged stop).
 *
 * Besides the ids, a prompt says:
 *   - n_shared: how many leading ids form the system block. It depends only
 *     on the system message, the reasoning mode, the date and the tools, so
 *     the engine keeps its KV once and copies it into new conversations
 *     instead of prefilling it again. The engine gets a count of ids and
 *     knows nothing of the template's text.
 *   - thinking: the effective mode (engine_request.thinking).
 * Continuing an answer (prompt_opts.cont) ends the prompt right after the
 * text of the last message, an unfinished assistant answer, so the model
 * goes on where it stopped; the output then starts in the answer.
 *
 * The chat format. SmolLM3 files (and files without a template) use the
 * native renderer of src/chat, which is the official SmolLM3 template byte
 * for byte; the template inside SmolLM3 GGUFs is often an edited copy
 * without the date and the tools. Every other file (Llama 3.x, Qwen2.5,
 * Qwen3...) is rendered from its own tokenizer.chat_template by src/jinja,
 * as transformers' apply_chat_template would: messages, tools (OpenAI
 * JSON), add_generation_prompt, enable_thinking, bos_token, eos_token, and
 * strftime_now at the pinned date. The bytes that came from messages and
 * tools are masked the same way on both paths; n_shared is the length of
 * the template's render of the system message alone, when the full prompt
 * starts with it at a special-token boundary (else 0: nothing shared).
 * A template the engine cannot compile or render is a CORE_EUNSUP /
 * CORE_EFORMAT error whose message names the template line.
 *
 * No global state; a prompt is owned by one thread.
 */
#ifndef PROMPT_H
#define PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "chat/chat.h"
#include "core/core.h"
#include "tok/tok.h"

typedef struct prompt_opts {
    int thinking;       /* the toggle: 1 /think, 0 /no_think (a system message with either wins) */
    const char *date;   /* "26 November 2026"; NULL: today */
    int cont;           /* 1: continue the last message (an assistant's); 0: a new answer */
    const char *xml_tools;    /* chat_opts.xml_tools (chat_tools_repr lines); NULL: none */
    const char *python_tools; /* chat_opts.python_tools; NULL: none */
    const chat_msg_calls *calls; /* chat_opts.calls: NULL or one per message */
    /* The tools as an OpenAI JSON array (text), for files rendered from their
     * own template (xml_tools is SmolLM3's form of the same list); NULL: none. */
    const char *tools_json;
    int no_gen; /* 1: no generation prompt after the last message (a bare render) */
} prompt_opts;

typedef struct prompt {
    int32_t *ids;       /* n_ids token ids, malloc'd (cap allocated) */
    size_t n_ids, cap;
    size_t n_shared;    /* ids[0..n_shared): the system block (0 when there is none) */
    int thinking;       /* effective mode: 1 the output may open with <think>, 0 answer only */
    core_buf text;      /* the rendered text that ids encode */
} prompt;

/* Render and tokenize msgs[0..n) into *p (zeroed first; free it with
 * prompt_free even on error). Borrowed: msgs and tk for the call only.
 * Returns 0, CORE_EINVAL (a message the format refuses, or cont with a
 * last message that is not an assistant's) or CORE_ENOMEM, with err. */
int prompt_build(const tok *tk, const chat_msg *msgs, size_t n, const prompt_opts *o, prompt *p, core_err *err);
void prompt_free(prompt *p);

/* 1 when prompts for tk come from the file's own template (src/jinja), 0
 * when from the native SmolLM3 renderer. */
int prompt_uses_file_template(const tok *tk);

/* 1 when the model writes tool calls as Llama 3.x does, a bare JSON object
 * {"name": ..., "parameters": {...}} that is the whole answer; 0 when in
 * "<tool_call>" tags (SmolLM3, Qwen, Hermes-style fine-tunes). The rule:
 * a llama-architecture file rendered from its own template that never
 * writes "<tool_call>" (Llama 3.1+ templates describe the JSON form; 3.0's
 * say nothing of tools, and its models answer in that form when asked). */
int prompt_calls_json(const tok *tk);

/* The text alone, as prompt_build renders it (no tokenization): appended
 * to out. Same returns as prompt_build. */
int prompt_render(const tok *tk, const chat_msg *msgs, size_t n, const prompt_opts *o, core_buf *out, core_err *err);

#endif
