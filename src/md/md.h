/* md.h -- safe Markdown to HTML, whole documents and token streams.
 *
 * The model answers in Markdown, one token at a time; the page shows it as
 * HTML while it streams. md4c parses (GitHub dialect, raw HTML off); the HTML
 * is written by our own callbacks so that every attribute is escaped and
 * links/images keep only http, https, mailto and relative URLs (anything
 * else -- javascript:, data:, vbscript:, entity-hidden schemes -- is shown as
 * plain text). The output is safe to insert into the page as is.
 *
 * Streaming. A document is a sequence of segments ("blocks") that are parsed
 * independently. A segment ends
 *   - before a line that follows a blank line, outside a fenced code block,
 *     when that line starts at column 0 and is not a list item (so loose lists
 *     and indented continuations stay in one segment), or
 *   - right after the closing fence of a code block opened at column 0.
 * Finished segments are rendered once and never again; the unfinished tail
 * can be rendered as often as the caller likes (best effort: an unclosed
 * fence shows as an open code block). md_render() uses the same splitter, so
 * pushing a text in any pieces yields exactly md_render() of the whole.
 * Trade-off: reference-style link definitions do not reach across segments
 * (models rarely write them); everything else matches a whole-document parse.
 *
 * All output is valid UTF-8 (invalid bytes and NUL become U+FFFD).
 * An md_stream is single-threaded; distinct streams are independent.
 */
#ifndef MD_H
#define MD_H

#include <stddef.h>
#include "core/core.h"

typedef struct md_stream md_stream;

/* A new empty stream, or NULL when out of memory. Free with md_stream_free. */
md_stream *md_stream_new(void);
void md_stream_free(md_stream *s); /* NULL is a no-op */

/* Add text (any bytes, any split, even inside a UTF-8 character). Finished
 * blocks are rendered and appended to blocks_html. Returns 0, CORE_ENOMEM,
 * or CORE_ERANGE when the unfinished block would exceed 64 MiB. */
int md_stream_push(md_stream *s, const char *text, size_t len, core_buf *blocks_html);

/* Append the HTML of the unfinished tail (may be empty) to tail_html. The
 * tail replaces the previous one on the page; it stops before an incomplete
 * UTF-8 character. Does not change the stream. Returns 0 or CORE_ENOMEM. */
int md_stream_tail(const md_stream *s, core_buf *tail_html);

/* End of text: render the tail as the last block, append it to blocks_html,
 * and reset the stream to empty (it may be reused). Returns 0 or CORE_ENOMEM. */
int md_stream_finish(md_stream *s, core_buf *blocks_html);

/* Bytes pushed but not yet emitted as finished blocks. */
size_t md_stream_pending(const md_stream *s);

/* Render a whole document; appends to html. Same result as pushing md in
 * any pieces and finishing. Returns 0, CORE_ENOMEM or CORE_ERANGE. */
int md_render(const char *md, size_t len, core_buf *html);

/* Append s[0..n) escaped for HTML text and quoted attributes (& < > " ');
 * invalid UTF-8 and NUL become U+FFFD. Returns 0 or CORE_ENOMEM. */
int md_escape_html(const char *s, size_t n, core_buf *out);

/* 1 if url (already entity-decoded, as the browser will see it) is a link
 * target we allow: http:, https:, mailto: or no scheme (relative). */
int md_url_allowed(const char *url, size_t n);

#endif
