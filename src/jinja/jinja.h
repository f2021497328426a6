/* jinja.h -- the chat templates that model files carry, rendered the way
 * Python transformers renders them (Jinja2 with trim_blocks, lstrip_blocks
 * and loop controls; tojson = json.dumps with keys unsorted and non-ASCII
 * kept; raise_exception and strftime_now as globals).
 *
 * A template is compiled once (jinja_compile) into a tree and rendered many
 * times (jinja_render) with a context given as two JSON objects: `data`,
 * whose strings come from users (messages, tools), and `trusted`, whose
 * strings belong to the model file or to us (bos_token, flags). Every string
 * carries the byte ranges that came from `data`; the render reports the
 * output ranges made of such bytes (jinja_span), so the tokenizer can keep
 * user text from ever becoming a control token.
 *
 * The subset is what real chat templates use: if/elif/else, for with loop.*,
 * break/continue, set (namespace attributes, block set), macro, whitespace
 * control, the usual expressions, filters, tests and string/dict methods.
 * Anything else is a compile or render error that names the template line.
 *
 * Hostile templates: a render stops with CORE_EFULL when it exceeds its step
 * budget, its output size, its memory or its nesting depth (jinja_limits);
 * no input reaches assert or abort.
 *
 * A compiled template is immutable: one may be rendered by several threads
 * at once, each render owning its own state.
 */
#ifndef JINJA_H
#define JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <time.h>

#include "core/core.h"

typedef struct jinja_tmpl jinja_tmpl;

/* Compile src[0..len) (UTF-8 text, NUL bytes allowed). *out is NULL on error.
 * Returns 0, CORE_EFORMAT ("template line N: ...") or CORE_ENOMEM. */
int jinja_compile(const char *src, size_t len, jinja_tmpl **out, core_err *err);
void jinja_free(jinja_tmpl *t);

/* Budgets of one render; a zero field takes its default. */
typedef struct jinja_limits {
    size_t max_steps;  /* evaluation steps (nodes, loop turns, bytes copied / 256); default 20,000,000 */
    size_t max_output; /* bytes of output (and of any one string); default 64 MiB */
    size_t max_memory; /* bytes allocated by the render; default 512 MiB */
    int max_depth;     /* nested macro calls and blocks; default 64 */
} jinja_limits;

/* Byte ranges of the output that came from `data` strings, sorted, disjoint. */
typedef struct jinja_span {
    size_t off, len;
} jinja_span;
typedef struct jinja_spans {
    jinja_span *v; /* malloc'd; free with free() */
    size_t n, cap;
} jinja_spans;

/* Render t with the variables of the objects data and trusted (either may be
 * NULL; a key in trusted wins). `now` feeds strftime_now (0: the current
 * time), read as local time. Appends the text to out (out is not cleared)
 * and, when spans is not NULL, the tainted ranges (offsets in out).
 * Returns 0, CORE_EFORMAT (an error of the template at run time, or
 * raise_exception: the message names the line), CORE_EFULL (a limit) or
 * CORE_ENOMEM. On error out may hold a partial render. */
int jinja_render(const jinja_tmpl *t, const json_t *data, const json_t *trusted, time_t now,
                 const jinja_limits *lim, core_buf *out, jinja_spans *spans, core_err *err);

#endif
