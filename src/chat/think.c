/* think.c -- split a stream of generated text into reasoning and answer.
 *
 * A byte-level state machine (see chat.h for the states and the whitespace
 * rules). Text arrives in arbitrary pieces (token texts), so a tag may be cut
 * anywhere: "</thi" + "nk>". The parser keeps the bytes that match a prefix of
 * the tag it is looking for in p->hold; the next byte either extends the match
 * or proves it was ordinary text, and the held bytes are released as such.
 *
 * Why no general string matcher: both tags start with '<' and contain no other
 * '<', so a failed partial match can never hide the start of another match
 * inside the held bytes; on a mismatch everything held is plain text and the
 * scan goes on from the mismatching byte. Runs of ordinary text between '<'
 * bytes are appended in one piece (memchr), so the cost is one pass.
 *
 * Trimming needs its own little memory: newlines inside the reasoning are
 * kept, but newlines right before "</think>" are not, so a run of trailing
 * newlines is counted in nl_pending and written only when more reasoning
 * follows.
 */
#include "chat/chat.h"

#include <string.h>

static const char TAG_OPEN[] = "<think>";
static const char TAG_CLOSE[] = "</think>";

void chat_think_init(chat_think *p, int starts_in_answer) {
    memset(p, 0, sizeof *p);
    p->state = starts_in_answer ? CHAT_THINK_AFTER : CHAT_THINK_BEFORE;
}

static int put(core_buf *b, const char *s, size_t n) {
    return (b && n) ? core_buf_append(b, s, n) : 0;
}

static int emit_answer(chat_think *p, const char *s, size_t n, core_buf *answer) {
    if (!p->answer_started) {
        while (n && *s == '\n') s++, n--;
        if (!n) return 0;
        p->answer_started = 1;
    }
    return put(answer, s, n);
}

static int emit_reasoning(chat_think *p, const char *s, size_t n, core_buf *reasoning) {
    if (!p->reasoning_started) {
        while (n && *s == '\n') s++, n--;
        if (!n) return 0;
        p->reasoning_started = 1;
    }
    size_t body = n;
    while (body && s[body - 1] == '\n') body--;
    if (!body) { /* only newlines: they may turn out to be trailing */
        p->nl_pending += n;
        return 0;
    }
    for (; p->nl_pending; p->nl_pending--)
        if (put(reasoning, "\n", 1)) return CORE_ENOMEM;
    p->nl_pending = n - body;
    return put(reasoning, s, body);
}

static int emit(chat_think *p, const char *s, size_t n, core_buf *reasoning, core_buf *answer) {
    return p->state == CHAT_THINK_THINK ? emit_reasoning(p, s, n, reasoning) : emit_answer(p, s, n, answer);
}

int chat_think_push(chat_think *p, const char *text, size_t len, core_buf *reasoning, core_buf *answer) {
    size_t i = 0;
    while (i < len) {
        if (p->state == CHAT_THINK_AFTER) return emit_answer(p, text + i, len - i, answer);
        const char *tag = p->state == CHAT_THINK_BEFORE ? TAG_OPEN : TAG_CLOSE;
        size_t tl = strlen(tag);
        if (p->hold_len) {
            if (text[i] == tag[p->hold_len]) {
                p->hold[p->hold_len++] = text[i++];
                if (p->hold_len == tl) { /* a whole tag: change state, the tag itself is not shown */
                    p->hold_len = 0;
                    if (p->state == CHAT_THINK_BEFORE) {
                        p->state = CHAT_THINK_THINK;
                    } else {
                        p->state = CHAT_THINK_AFTER;
                        p->nl_pending = 0; /* newlines before </think> are dropped */
                    }
                }
                continue;
            }
            /* mismatch: the held bytes were text (no '<' inside them to restart from) */
            size_t h = p->hold_len;
            p->hold_len = 0;
            if (emit(p, p->hold, h, reasoning, answer)) return CORE_ENOMEM;
            continue; /* re-examine text[i]: it may be a '<' */
        }
        const char *lt = memchr(text + i, '<', len - i);
        size_t run = lt ? (size_t)(lt - (text + i)) : len - i;
        if (emit(p, text + i, run, reasoning, answer)) return CORE_ENOMEM;
        i += run;
        if (lt) {
            p->hold[0] = '<';
            p->hold_len = 1;
            i++;
        }
    }
    return 0;
}

int chat_think_finish(chat_think *p, core_buf *reasoning, core_buf *answer) {
    size_t h = p->hold_len;
    p->hold_len = 0;
    if (h && emit(p, p->hold, h, reasoning, answer)) return CORE_ENOMEM;
    if (p->state == CHAT_THINK_THINK) p->nl_pending = 0; /* trailing newlines of an unclosed block */
    return 0;
}
