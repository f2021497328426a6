/* chat.c -- the SmolLM3 chat template, written out in C.
 *
 * The official template (a Jinja file shipped with the model) does, in order:
 *   1. reasoning mode = /think if enable_thinking (default true) else /no_think;
 *   2. if messages[0] is a system message: "/no_think" in it forces /no_think,
 *      else "/think" in it forces /think; the custom instructions are its text
 *      with "/no_think" then "/think" removed, then Python-rstripped;
 *   3. header: "<|im_start|>system\n", then either (system text contains
 *      "/system_override") the instructions with that word removed and
 *      rstripped + "<|im_end|>\n", or the metadata block (cutoff date, today,
 *      mode), "## Custom Instructions\n\n", the instructions or a default that
 *      depends on the mode, + "\n\n", an optional tools section, "<|im_end|>\n";
 *   4. every message: user -> "<|im_start|>user\n{c}<|im_end|>\n"; assistant ->
 *      "<|im_start|>assistant\n" + ("<think>\n\n</think>\n" in /no_think) +
 *      c.lstrip("\n") + "<|im_end|>\n"; tool -> rendered as a user turn; a
 *      system message renders nothing (it was consumed by the header);
 *   5. the generation prompt: "<|im_start|>assistant\n" (+ the empty think
 *      block in /no_think).
 * Continuing an answer (chat_opts.continue_final) is step 4 with the last
 * turn left open (no "<|im_end|>\n") and no step 5: what the template
 * renders for the whole history, cut right after the answer's text.
 * The template keeps assistant content as given (only leading newlines go):
 * callers store the answer without its reasoning, which is how "reasoning is
 * not kept in history" comes about.
 *
 * Tool calls of assistant messages (chat_opts.calls) are written after the
 * content as the model writes them (see chat.h); tool descriptions arrive
 * as repr lines (chat_tools_repr in tools.c).
 *
 * Departures, on purpose: a system message anywhere but first, an unknown
 * role or a NULL role is an error (the template would silently drop it).
 *
 * Substring tests ("/think" in text) are byte searches over (ptr, len), so
 * content with NUL bytes is handled the same way as Python strings would be.
 */
#include "chat/chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IM_START "<|im_start|>"
#define IM_END "<|im_end|>\n"
#define EMPTY_THINK "<think>\n\n</think>\n"

static const char DEFAULT_NO_THINK[] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face.";
static const char DEFAULT_THINK[] =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an assistant "
    "involves thoroughly exploring questions through a systematic thinking process before providing "
    "the final precise and accurate solutions. This requires engaging in a comprehensive cycle of "
    "analysis, summarizing, exploration, reassessment, reflection, backtracking, and iteration to "
    "develop well-considered thinking process. Please structure your response into two main sections: "
    "Thought and Solution using the specified format: <think> Thought section </think> Solution "
    "section. In the Thought section, detail your reasoning process in steps. Each step should include "
    "detailed considerations such as analysing questions, summarizing relevant findings, brainstorming "
    "new ideas, verifying the accuracy of the current steps, refining any errors, and revisiting "
    "previous steps. In the Solution section, based on various attempts, explorations, and reflections "
    "from the Thought section, systematically present the final solution that you deem correct. The "
    "Solution section should be logical, accurate, and concise and detail necessary steps needed to "
    "reach the conclusion.";

static const char XML_TOOLS_HEAD[] =
    "You may call one or more functions to assist with the user query.\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n\n<tools>\n";
static const char XML_TOOLS_TAIL[] =
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call>";
static const char PY_TOOLS_HEAD[] =
    "When you send a message containing Python code between '<code>' and '</code>' tags, it will be "
    "executed in a stateful Jupyter notebook environment, and you will then be given the output to "
    "continued reasoning in an agentic loop.\n\nYou can use the following tools in your python code "
    "like regular functions:\n<tools>\n";
static const char PY_TOOLS_TAIL[] =
    "</tools>\n\nThe state persists between code executions: so variables that you define in one step "
    "are still available thereafter.";

static const char *const MONTHS[12] = {"January", "February", "March",     "April",   "May",      "June",
                                       "July",    "August",   "September", "October", "November", "December"};

void chat_opts_default(chat_opts *o) {
    memset(o, 0, sizeof *o);
    o->enable_thinking = 1;
    o->add_generation_prompt = 1;
}

int chat_date_today(char *buf, size_t cap, time_t now) {
    struct tm tm;
    if (!localtime_r(&now, &tm) || tm.tm_mon < 0 || tm.tm_mon > 11) {
        if (cap) buf[0] = 0;
        return CORE_ERANGE;
    }
    /* English month names from a table: strftime's %B follows the locale. */
    int n = snprintf(buf, cap, "%02d %s %d", tm.tm_mday, MONTHS[tm.tm_mon], tm.tm_year + 1900);
    return (n < 0 || (size_t)n >= cap) ? CORE_ERANGE : 0;
}

/* ---- Python string semantics over (ptr, len) ---------------------------- */

static int contains(const char *s, size_t n, const char *needle) {
    return s && n && memmem(s, n, needle, strlen(needle)) != NULL;
}

/* Bytes of the whitespace character ending at s[n-1], 0 if it is none.
 * Python's str.isspace() set: ASCII \t\n\v\f\r, \x1c-\x1f, space, and the
 * Unicode spaces U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
 * U+202F, U+205F, U+3000. */
static size_t trailing_space(const unsigned char *s, size_t n) {
    if (!n) return 0;
    unsigned char c = s[n - 1];
    if ((c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20)) return 1;
    if (n >= 2 && s[n - 2] == 0xc2 && (c == 0x85 || c == 0xa0)) return 2;
    if (n >= 3) {
        unsigned a = s[n - 3], b = s[n - 2];
        uint32_t cp = ((a & 0x0f) << 12) | ((b & 0x3f) << 6) | (c & 0x3f);
        if ((a & 0xf0) == 0xe0 && (b & 0xc0) == 0x80 && (c & 0xc0) == 0x80 &&
            (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
             cp == 0x205f || cp == 0x3000))
            return 3;
    }
    return 0;
}

static size_t rstrip_len(const char *s, size_t n) {
    size_t k;
    while ((k = trailing_space((const unsigned char *)s, n))) n -= k;
    return n;
}

/* out += s[0..n) with every occurrence of word removed (Python str.replace(word, "")). */
static int append_without(core_buf *out, const char *s, size_t n, const char *word) {
    size_t w = strlen(word);
    while (n) {
        const char *p = memmem(s, n, word, w);
        size_t run = p ? (size_t)(p - s) : n;
        if (core_buf_append(out, s, run)) return CORE_ENOMEM;
        if (!p) break;
        s += run + w;
        n -= run + w;
    }
    return 0;
}

int chat_mode_of(const chat_msg *msgs, size_t n, int enable_thinking) {
    int think = enable_thinking ? 1 : 0;
    if (n && msgs[0].role && !strcmp(msgs[0].role, "system")) {
        if (contains(msgs[0].content, msgs[0].content_len, "/no_think")) think = 0;
        else if (contains(msgs[0].content, msgs[0].content_len, "/think")) think = 1;
    }
    return think;
}

/* The custom instructions: system text minus "/no_think" and "/think",
 * rstripped, into tmp (cleared first). */
static int custom_instructions(const chat_msg *sys, core_buf *tmp) {
    core_buf a = {0};
    int rc = append_without(&a, sys->content, sys->content ? sys->content_len : 0, "/no_think");
    core_buf_clear(tmp);
    if (!rc && a.len) rc = append_without(tmp, a.data, a.len, "/think");
    core_buf_free(&a);
    if (rc) return rc;
    if (core_buf_reserve(tmp, 0)) return CORE_ENOMEM; /* data non-NULL even when empty */
    tmp->len = rstrip_len(tmp->data, tmp->len);
    tmp->data[tmp->len] = 0;
    return 0;
}

/* Record out[start..len) as user-provided bytes. */
static int note_span(chat_spans *sp, const core_buf *out, size_t start) {
    if (!sp || out->len == start) return 0;
    if (sp->n == sp->cap) {
        size_t cap = sp->cap ? 2 * sp->cap : 16;
        chat_span *a = realloc(sp->v, cap * sizeof *a);
        if (!a) return CORE_ENOMEM;
        sp->v = a;
        sp->cap = cap;
    }
    sp->v[sp->n++] = (chat_span){start, out->len - start};
    return 0;
}

/* An assistant's tool calls as the model writes them (chat_msg.calls). */
static int render_calls(const chat_msg_calls *m, core_buf *out, chat_spans *sp, int after_content) {
    for (size_t k = 0; k < m->n; k++) {
        const chat_call *c = &m->v[k];
        if ((k || after_content) && core_buf_puts(out, "\n")) return CORE_ENOMEM;
        if (core_buf_puts(out, "<tool_call>\n{\"name\": \"")) return CORE_ENOMEM;
        size_t at = out->len;
        for (size_t i = 0; i < c->name_len; i++) { /* JSON string escaping */
            unsigned char ch = (unsigned char)c->name[i];
            int rc = ch == '"' || ch == '\\' ? core_buf_printf(out, "\\%c", ch)
                     : ch < 0x20           ? core_buf_printf(out, "\\u%04x", ch)
                                           : core_buf_append(out, (const char *)&ch, 1);
            if (rc) return CORE_ENOMEM;
        }
        if (note_span(sp, out, at) || core_buf_puts(out, "\", \"arguments\": ")) return CORE_ENOMEM;
        at = out->len;
        if (core_buf_append(out, c->arguments ? c->arguments : "{}", c->arguments ? c->arguments_len : 2) ||
            note_span(sp, out, at) || core_buf_puts(out, "}\n</tool_call>"))
            return CORE_ENOMEM;
    }
    return 0;
}

int chat_render(const chat_msg *msgs, size_t n, const chat_opts *o, core_buf *out, core_err *err) {
    return chat_render_spans(msgs, n, o, out, NULL, err);
}

int chat_render_spans(const chat_msg *msgs, size_t n, const chat_opts *o, core_buf *out, chat_spans *spans,
                      core_err *err) {
    chat_opts def;
    if (!o) {
        chat_opts_default(&def);
        o = &def;
    }
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r) return core_errf(err, CORE_EINVAL, "message %zu has no role", i);
        if (!strcmp(r, "system")) {
            if (i) return core_errf(err, CORE_EINVAL, "message %zu: a system message is only allowed first", i);
        } else if (strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool")) {
            return core_errf(err, CORE_EINVAL, "message %zu: unknown role '%.40s' (system, user, assistant, tool)",
                             i, r);
        }
    }
    if (o->calls)
        for (size_t i = 0; i < n; i++)
            if (o->calls[i].n && strcmp(msgs[i].role, "assistant"))
                return core_errf(err, CORE_EINVAL, "message %zu: only an assistant's message has tool calls", i);
    if (o->continue_final && (!n || strcmp(msgs[n - 1].role, "assistant")))
        return core_errf(err, CORE_EINVAL, "only an assistant's answer can be continued");
    int think = chat_mode_of(msgs, n, o->enable_thinking);
    int has_sys = n && !strcmp(msgs[0].role, "system");
    core_buf ci = {0};
    int rc = CORE_ENOMEM;
    if (has_sys && custom_instructions(&msgs[0], &ci)) goto done;

    if (core_buf_puts(out, IM_START "system\n")) goto done;
    if (has_sys && contains(msgs[0].content, msgs[0].content_len, "/system_override")) {
        core_buf tmp = {0};
        int bad = append_without(&tmp, ci.data, ci.len, "/system_override");
        size_t at = out->len;
        if (!bad) bad = core_buf_append(out, tmp.data ? tmp.data : "", tmp.data ? rstrip_len(tmp.data, tmp.len) : 0);
        if (!bad) bad = note_span(spans, out, at);
        core_buf_free(&tmp);
        if (bad || core_buf_puts(out, IM_END)) goto done;
    } else {
        char today[32];
        const char *date = o->date;
        if (!date) {
            if (chat_date_today(today, sizeof today, time(NULL))) strcpy(today, "01 January 1970");
            date = today;
        }
        if (core_buf_printf(out,
                            "## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: %s\nReasoning Mode: %s\n\n"
                            "## Custom Instructions\n\n",
                            date, think ? "/think" : "/no_think"))
            goto done;
        if (ci.len) {
            size_t at = out->len;
            if (core_buf_append(out, ci.data, ci.len) || note_span(spans, out, at)) goto done;
        } else if (core_buf_puts(out, think ? DEFAULT_THINK : DEFAULT_NO_THINK)) {
            goto done;
        }
        if (core_buf_puts(out, "\n\n")) goto done;
        int xml = o->xml_tools && *o->xml_tools, py = o->python_tools && *o->python_tools;
        if (xml || py) {
            if (core_buf_puts(out, "### Tools\n\n")) goto done;
            if (xml && (core_buf_puts(out, XML_TOOLS_HEAD) || core_buf_puts(out, o->xml_tools) ||
                        core_buf_puts(out, XML_TOOLS_TAIL)))
                goto done;
            if (py && (core_buf_puts(out, PY_TOOLS_HEAD) || core_buf_puts(out, o->python_tools) ||
                       core_buf_puts(out, PY_TOOLS_TAIL)))
                goto done;
            if (core_buf_puts(out, "\n\n")) goto done;
        }
        if (core_buf_puts(out, "<|im_end|>\n")) goto done;
    }
    if (spans) spans->system_end = out->len;

    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        const char *c = msgs[i].content ? msgs[i].content : "";
        size_t cl = msgs[i].content ? msgs[i].content_len : 0;
        if (!strcmp(r, "system")) continue;
        if (!strcmp(r, "assistant")) {
            while (cl && *c == '\n') c++, cl--; /* content.lstrip("\n") */
            if (core_buf_puts(out, IM_START "assistant\n")) goto done;
            if (!think && core_buf_puts(out, EMPTY_THINK)) goto done;
        } else if (core_buf_puts(out, IM_START "user\n")) { /* user, and tool rendered as user */
            goto done;
        }
        size_t at = out->len;
        if (core_buf_append(out, c, cl) || note_span(spans, out, at)) goto done;
        if (o->calls && render_calls(&o->calls[i], out, spans, cl > 0)) goto done;
        if (o->continue_final && i + 1 == n) break; /* the answer goes on: no end of turn */
        if (core_buf_puts(out, IM_END)) goto done;
    }
    if (o->add_generation_prompt && !o->continue_final) {
        if (core_buf_puts(out, IM_START "assistant\n")) goto done;
        if (!think && core_buf_puts(out, EMPTY_THINK)) goto done;
    }
    rc = 0;
done:
    core_buf_free(&ci);
    if (rc) core_errf(err, rc, "out of memory rendering the chat prompt");
    return rc;
}
