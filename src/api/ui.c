/* ui.c -- the web page and its HTMX fragments (the contract is written at
 * the top of web/app.js; this file implements exactly that).
 *
 * Pages and fragments. "/" and the static files come from the embedded
 * assets (http_respond_asset). Everything under /ui/ is built here from the
 * store: the conversation list, a conversation's messages (the current
 * branch), and the articles a POST returns. User text, titles and
 * reasoning are HTML-escaped (md_escape_html); answers go through src/md,
 * whose output is safe by construction (no raw HTML, link schemes
 * filtered). Nothing the model or a user wrote is ever inserted unescaped.
 *
 * Answers. A POST that asks for an answer stores the user message first,
 * then an assistant message with status STREAMING, and starts a job of the
 * stream bridge (bridge.h) keyed by the assistant message id and tagged
 * with the conversation: generation starts before the browser opens the
 * event stream. The bridge keeps the text (the replay log), saves it to
 * the store every second and at the end through this file's owner hook
 * (DONE, or PARTIAL with "cancelled"/"error", before "done" reaches any
 * reader), and cancels the job when nobody has listened for ANS_GRACE_S
 * seconds (a closed tab; Stop cancels at once).
 *
 * The event stream of an answer is a bridge listener with this file's
 * framing, at most ~30 deliveries a second however fast tokens come:
 *   - new reasoning -> one "think" event (escaped);
 *   - new answer text -> its own md_stream: finished blocks -> "block"
 *     events (safe HTML, appended), the unfinished tail -> a "tail" event
 *     when it changed; "thought" when the answer starts after reasoning;
 *   - the end: the last block, tail "", thought, error, stats, "done".
 * Event ids are the bridge's log positions. A first connect or a reloaded
 * page starts from 0 and gets everything so far in one delivery; a
 * reconnect with Last-Event-ID resumes there (its md_stream is fed the
 * text before that position silently, so the tail renders right). A
 * finished answer stays ANS_KEEP_S seconds for late readers; after that,
 * the stream URL of a finished message answers 204 (EventSource stops).
 *
 * Several models (a registry): an answer runs on the model the page's
 * picker sends ("model" in the form), else the one that wrote the
 * conversation's last answer, else the registry's default; the name is
 * stored with the answer and shown under it. A model that is not loaded
 * does not hold the POST up: its stream says "loading" until the answer
 * starts (see "answers waiting for their model's load").
 *
 * /ui/quote streams a fixed public-domain passage (John 1:1-14, KJV) word by
 * word through the same bridge, as a job without engine that feeds itself,
 * with no model and no store, so the streaming path can be seen (and
 * tested) without a model.
 *
 * CSRF: state-changing requests (POST, DELETE) under /ui/ need the htmx
 * header HX-Request (a cross-site form cannot set it) and, when an Origin
 * header is present, it must match Host; otherwise 403.
 */
#include "api/api_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "http/assets.h"
#include "md/md.h"
#include "prompt/prompt.h"
#include "tok/tok.h"

#define ANS_GRACE_S 30.0   /* no listener this long: cancel */
#define ANS_KEEP_S 60.0    /* finished answers stay for replay this long */
#define ANS_TICK_MS 33     /* at most ~30 deliveries a second */
#define ANS_SAVE_S 1.0     /* partial text to the store this often */
#define QUOTE_WORD_MS 12   /* pace of /ui/quote */
#define QUOTE_GRACE_S 5.0  /* nobody wants the quote */

typedef struct ui_load ui_load;
typedef struct ui {
    pthread_mutex_t mu;   /* guards quote_serial and loads (and the streams waiting on them) */
    int64_t quote_serial; /* quotes are keyed -1, -2, ... (model answers by message id) */
    store *mem;           /* without a history database: the page's chats, in memory */
    ui_load *loads;       /* answers waiting for their model's load */
} ui;

/* The page's store: the history database, or (serve --no-db, or a database
 * that failed to open) a private in-memory one, so the page can still chat;
 * its chats are lost on restart, and the page says so. */
static store *S(api *a) { return a->st ? a->st : a->ui ? ((ui *)a->ui)->mem : NULL; }

static const char QUOTE[] =
    "**In the beginning was the Word** -- John 1:1-14, King James Version\n\n"
    "In the beginning was the Word, and the Word was with God, and the Word was God. "
    "The same was in the beginning with God. "
    "All things were made by him; and without him was not any thing made that was made. "
    "In him was life; and the life was the light of men. "
    "And the light shineth in darkness; and the darkness comprehended it not.\n\n"
    "There was a man sent from God, whose name was John. "
    "The same came for a witness, to bear witness of the Light, that all men through him might believe. "
    "He was not that Light, but was sent to bear witness of that Light. "
    "That was the true Light, which lighteth every man that cometh into the world.\n\n"
    "He was in the world, and the world was made by him, and the world knew him not. "
    "He came unto his own, and his own received him not. "
    "But as many as received him, to them gave he power to become the sons of God, even to them that believe on "
    "his name: "
    "Which were born, not of blood, nor of the will of the flesh, nor of the will of man, but of God.\n\n"
    "And the Word was made flesh, and dwelt among us, (and we beheld his glory, the glory as of the only "
    "begotten of the Father,) full of grace and truth.\n";

/* ---- small helpers ------------------------------------------------------ */

static void esc(core_buf *b, const char *s) { md_escape_html(s ? s : "", s ? strlen(s) : 0, b); }

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The value of key in an application/x-www-form-urlencoded body, decoded,
 * malloc'd; NULL when absent (or out of memory). */
static char *form_get(const char *body, const char *key) {
    size_t kl = strlen(key);
    const char *p = body;
    while (p && *p) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *kend = eq ? eq : end;
        if ((size_t)(kend - p) == kl && !memcmp(p, key, kl)) {
            const char *v = eq ? eq + 1 : end;
            char *out = malloc((size_t)(end - v) + 1), *o = out;
            if (!out) return NULL;
            for (const char *q = v; q < end; q++) {
                if (*q == '+') *o++ = ' ';
                else if (*q == '%' && q + 2 < end && hexval(q[1]) >= 0 && hexval(q[2]) >= 0) {
                    *o++ = (char)(hexval(q[1]) * 16 + hexval(q[2]));
                    q += 2;
                } else *o++ = *q;
            }
            *o = 0;
            return out;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static int valid_conv_id(const char *s) {
    if (strlen(s) != STORE_ID_LEN) return 0;
    for (const char *p = s; *p; p++)
        if (hexval(*p) < 0) return 0;
    return 1;
}

static int respond_buf(http_req *r, int status, const char *type, core_buf *b) {
    int rc = http_respond_take(r, status, type, b->data ? b->data : strdup(""), b->len);
    *b = (core_buf){0};
    return rc;
}

static const char *HTML = "text/html; charset=utf-8";

/* 0 if the request may change state; else a 403 was sent (returns 1). */
static int csrf_reject(http_req *r) {
    const char *m = http_req_method(r);
    if (!strcmp(m, "GET") || !strcmp(m, "HEAD")) return 0;
    const char *origin = http_req_header(r, "Origin"), *host = http_req_header(r, "Host");
    if (origin) {
        const char *o = origin;
        if (!strncmp(o, "http://", 7)) o += 7;
        else if (!strncmp(o, "https://", 8)) o += 8;
        else o = NULL;
        if (!o || !host || strcmp(o, host)) {
            http_respond_text(r, 403, "cross-origin request refused");
            return 1;
        }
    }
    if (!http_req_header(r, "HX-Request")) {
        http_respond_text(r, 403, "missing HX-Request header");
        return 1;
    }
    return 0;
}

/* ---- the event stream of an answer (a bridge listener) --------------------- */

typedef struct ui_stream {
    http_stream *s;
    md_stream *md;
    int quote;
    int fresh;          /* nothing delivered yet */
    int thought_sent;
    double t_think_end; /* seconds after the start; 0: still thinking */
    char *tail;         /* the last tail sent */
    size_t tail_len;
    core_buf tmp;
} ui_stream;

static void stats_line(core_buf *b, const ui_stream *x, const bridge_out *o) {
    const engine_stats *s = o->st;
    if (x->quote) {
        core_buf_printf(b, "quote · %zu bytes · %.1f s", o->answer_end, o->elapsed_s);
        return;
    }
    if (s->ttft_ms > 0) core_buf_printf(b, "TTFT %.0f ms · ", s->ttft_ms);
    core_buf_printf(b, "%.1f tok/s · %d tokens", s->decode_tok_s, s->gen_tokens);
    if (!strcmp(o->finish, "cancelled")) core_buf_puts(b, " · stopped");
    else if (!strcmp(o->finish, "length")) core_buf_puts(b, " · length limit");
    else if (!strcmp(o->finish, "error")) core_buf_puts(b, " · error");
    core_buf_printf(b, "<span class=\"ctx\" data-ctx-used=\"%d\" data-ctx-max=\"%d\"></span>", s->ctx_used, s->ctx_size);
}

/* Send one event; *bad collects failures (the client is gone). */
static void ev(ui_stream *x, const char *name, const char *id, const char *data, size_t len, int *bad) {
    if (!*bad && http_stream_event(x->s, name, id, data, len)) *bad = 1;
}

static void ev_meta(ui_stream *x, const char *id, int tokens, double secs, int *bad) {
    core_buf_clear(&x->tmp);
    core_buf_printf(&x->tmp, "%d tokens · %.1f s", tokens, secs);
    ev(x, "thought", id, x->tmp.data, x->tmp.len, bad);
}

static void ev_tail(ui_stream *x, const char *html, size_t len, int *bad) {
    if (x->tail && x->tail_len == len && !memcmp(x->tail, html, len)) return;
    char *t = malloc(len + 1);
    if (!t) return;
    memcpy(t, html, len);
    t[len] = 0;
    free(x->tail);
    x->tail = t;
    x->tail_len = len;
    ev(x, "tail", NULL, html, len, bad);
}

static int ui_deliver(void *ctx, const bridge_out *o) {
    ui_stream *x = ctx;
    int bad = 0;
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)o->seq);
    if (x->fresh) { /* resuming after Last-Event-ID: what came before was seen */
        x->fresh = 0;
        if (o->answer_from) {
            md_stream_push(x->md, o->answer, o->answer_from, &x->tmp);
            core_buf_clear(&x->tmp);
        }
        x->thought_sent = o->reasoning_from > 0 && o->answer_from > 0;
    }
    if (o->reasoning_end > o->reasoning_from) {
        core_buf_clear(&x->tmp);
        md_escape_html(o->reasoning + o->reasoning_from, o->reasoning_end - o->reasoning_from, &x->tmp);
        ev(x, "think", id, x->tmp.data, x->tmp.len, &bad);
    }
    if (o->answer_end > o->answer_from) {
        if (o->reasoning_end && !x->thought_sent) { /* thinking ended: the answer started */
            x->thought_sent = 1;
            x->t_think_end = o->elapsed_s;
            ev_meta(x, id, o->reasoning_events, o->elapsed_s, &bad);
        }
        core_buf blocks = {0}, tail = {0};
        md_stream_push(x->md, o->answer + o->answer_from, o->answer_end - o->answer_from, &blocks);
        if (blocks.len) ev(x, "block", id, blocks.data, blocks.len, &bad);
        if (!o->end) {
            md_stream_tail(x->md, &tail);
            ev_tail(x, tail.data ? tail.data : "", tail.len, &bad);
        }
        core_buf_free(&blocks);
        core_buf_free(&tail);
    }
    if (o->end) {
        core_buf last = {0};
        md_stream_finish(x->md, &last);
        if (last.len) ev(x, "block", id, last.data, last.len, &bad);
        core_buf_free(&last);
        ev_tail(x, "", 0, &bad);
        if (o->reasoning_end)
            ev_meta(x, id, o->st->reasoning_tokens ? o->st->reasoning_tokens : o->reasoning_events,
                    x->t_think_end ? x->t_think_end : o->elapsed_s, &bad);
        int failed = !strcmp(o->finish, "error");
        if (failed || o->save_err[0]) { /* unsaved: the text shown is all there is, a reload loses it */
            core_buf m = {0};
            if (failed) core_buf_puts(&m, o->err_msg[0] ? o->err_msg : "generation failed");
            if (o->save_err[0]) core_buf_printf(&m, "%sThis answer was not saved: %s", failed ? " · " : "", o->save_err);
            core_buf_clear(&x->tmp);
            esc(&x->tmp, m.data);
            core_buf_free(&m);
            ev(x, "error", id, x->tmp.data, x->tmp.len, &bad);
        }
        core_buf_clear(&x->tmp);
        stats_line(&x->tmp, x, o);
        ev(x, "stats", id, x->tmp.data, x->tmp.len, &bad);
        ev(x, "done", id, "", 0, &bad);
    }
    return bad;
}

static int ui_gone(void *ctx) { return http_stream_gone(((ui_stream *)ctx)->s); }

static void ui_stream_free(ui_stream *x) {
    if (!x) return;
    http_stream_close(x->s);
    md_stream_free(x->md);
    free(x->tail);
    core_buf_free(&x->tmp);
    free(x);
}

static void ui_drop(void *ctx) { ui_stream_free(ctx); }

static const bridge_listener_ops ui_ops = {ui_deliver, ui_gone, ui_drop};

/* Answer r with an event stream in this file's framing: 0, or -1 after
 * answering 500. */
static int ui_stream_open(http_req *r, int quote, ui_stream **out) {
    core_err err = {0};
    ui_stream *x = *out = calloc(1, sizeof *x);
    if (!x || !(x->md = md_stream_new())) {
        free(x);
        return http_respond_text(r, 500, "out of memory"), -1;
    }
    x->quote = quote;
    x->fresh = 1;
    x->s = http_respond_stream(r, 200, "text/event-stream", NULL, &err);
    if (!x->s) {
        ui_stream_free(x);
        return http_respond_text(r, 500, err.msg), -1;
    }
    return 0;
}

/* Answer r with the event stream of job j from Last-Event-ID (or 0). */
static int ui_listen(bridge_job *j, http_req *r, int quote) {
    ui_stream *x;
    if (ui_stream_open(r, quote, &x)) return 0;
    const char *lid = http_req_header(r, "Last-Event-ID");
    bridge_listen(j, &ui_ops, x, lid ? strtoull(lid, NULL, 10) : 0, ANS_TICK_MS);
    return 0;
}

/* ---- owners: the store for answers, the passage for the quote -------------- */

typedef struct ans_owner {
    api *a;
    int64_t msg;
} ans_owner;

/* The answer so far (or the final one) to the store. Bridge thread, no lock. */
static int ans_save(void *ctx, const char *answer, size_t answer_len, const char *reasoning, size_t reasoning_len,
                    const engine_stats *st, const char *finish, int final, core_err *err) {
    ans_owner *o = ctx;
    (void)answer_len; /* the store takes C strings: the engine's text holds no NUL */
    (void)reasoning_len;
    store_msg m = {0};
    snprintf(m.role, sizeof m.role, "assistant");
    m.content = (char *)answer;
    m.reasoning = (char *)reasoning;
    m.status = !final ? STORE_MSG_STREAMING
               : (!strcmp(finish, "stop") || !strcmp(finish, "length")) ? STORE_MSG_DONE : STORE_MSG_PARTIAL;
    snprintf(m.finish, sizeof m.finish, "%s", final ? finish : "");
    m.prompt_tokens = st->prompt_tokens;
    m.completion_tokens = st->gen_tokens;
    m.prefill_ms = st->prefill_ms;
    m.gen_ms = st->decode_ms;
    int rc = store_update(S(o->a), o->msg, &m, err);
    if (rc) core_log(1, "ui: saving message %lld: %s", (long long)o->msg, err->msg);
    return rc;
}

typedef struct quote_owner {
    size_t pos;
    double next;
} quote_owner;

/* Feed the words that are due. */
static void quote_tick(void *ctx, bridge_job *j, double now) {
    quote_owner *q = ctx;
    size_t n = sizeof QUOTE - 1, start = q->pos;
    while (q->pos < n && now >= q->next) {
        while (q->pos < n && QUOTE[q->pos] == ' ') q->pos++;
        while (q->pos < n && QUOTE[q->pos] != ' ') q->pos++;
        q->next += QUOTE_WORD_MS / 1e3;
    }
    if (q->pos > start) bridge_push(j, QUOTE + start, q->pos - start);
    if (q->pos >= n) bridge_finish(j, "stop");
}

static void load_gc(ui *u, double now);

int api_ui_init(api *a, core_err *err) {
    ui *u = calloc(1, sizeof *u);
    if (!u) return core_errf(err, CORE_ENOMEM, "out of memory");
    pthread_mutex_init(&u->mu, NULL);
    int rc = a->st ? 0 : store_open(&u->mem, ":memory:", err);
    if (rc) {
        pthread_mutex_destroy(&u->mu);
        free(u);
        return rc;
    }
    a->ui = u;
    return 0;
}

void api_ui_free(api *a) {
    ui *u = a ? a->ui : NULL;
    if (!u) return;
    load_gc(u, INFINITY); /* ended ones only: the loader threads are done (api_free waited) */
    pthread_mutex_destroy(&u->mu);
    store_close(u->mem);
    free(u);
    a->ui = NULL;
}

/* ---- rendering ----------------------------------------------------------- */

/* "< 2/3 >": the message has siblings (regenerated answers, edited
 * questions); the buttons show the previous or next one's branch. */
static void render_versions(core_buf *b, const store_msg *m) {
    if (m->sibling_count <= 1) return;
    core_buf_printf(b, "<span class=\"versions\" role=\"group\" aria-label=\"Versions\">"
                       "<button type=\"button\" class=\"icon sm\" data-switch=\"-1\" aria-label=\"Previous version\"%s>&lsaquo;</button>"
                       "<span class=\"ver-pos\">%d/%d</span>"
                       "<button type=\"button\" class=\"icon sm\" data-switch=\"1\" aria-label=\"Next version\"%s>&rsaquo;</button></span>\n",
                    m->sibling_index == 0 ? " disabled" : "", m->sibling_index + 1, m->sibling_count,
                    m->sibling_index + 1 >= m->sibling_count ? " disabled" : "");
}

static void render_user(core_buf *b, const store_msg *m) {
    core_buf_printf(b, "<article class=\"msg user\" id=\"m-%lld\" data-msg=\"%lld\">\n<div class=\"bubble\"><div class=\"text\">",
                    (long long)m->id, (long long)m->id);
    esc(b, m->content);
    core_buf_puts(b, "</div></div>\n<div class=\"msg-actions\">");
    render_versions(b, m);
    core_buf_puts(b, "<button type=\"button\" class=\"icon sm\" data-copy=\"msg\" "
                     "aria-label=\"Copy message\">Copy</button>\n<button type=\"button\" class=\"icon sm\" data-action=\"edit\" "
                     "aria-label=\"Edit message\">Edit</button></div></article>\n");
}

/* The assistant article; streaming: with the sse-* attributes and empty
 * content (the stream replays everything). */
static void render_assistant(core_buf *b, const char *conv, const store_msg *m, int streaming) {
    long long id = (long long)m->id;
    core_buf_printf(b, "<article class=\"msg assistant%s%s\" id=\"m-%lld\" data-msg=\"%lld\"", streaming ? " streaming" : "",
                    !streaming && m->status == STORE_MSG_PARTIAL ? " partial" : "", id, id);
    if (streaming) core_buf_printf(b, " sse-connect=\"/ui/c/%s/stream/%lld\" sse-close=\"done\"", conv, id);
    core_buf_puts(b, ">\n");
    int has_r = !streaming && m->reasoning && *m->reasoning;
    core_buf_printf(b, "<details class=\"think%s\"%s><summary>Thinking <span class=\"think-meta\"%s>", has_r ? " has-text" : "",
                    streaming ? " open" : "", streaming ? " sse-swap=\"thought\" hx-swap=\"innerHTML\"" : "");
    if (has_r) { /* the store keeps no reasoning token count: words say the size */
        int words = 0, in = 0;
        for (const char *p = m->reasoning; *p; p++) {
            int sp = *p == ' ' || *p == '\n' || *p == '\t';
            words += !sp && !in;
            in = !sp;
        }
        core_buf_printf(b, "%d words", words);
    }
    core_buf_printf(b, "</span></summary>\n<div class=\"think-body\"%s>", streaming ? " sse-swap=\"think\" hx-swap=\"beforeend\"" : "");
    if (has_r) esc(b, m->reasoning);
    core_buf_printf(b, "</div></details>\n<div class=\"bubble\">%s<div class=\"md\"%s>",
                    streaming ? "<div class=\"loading\" role=\"status\" sse-swap=\"loading\" hx-swap=\"innerHTML\"></div>" : "",
                    streaming ? " sse-swap=\"block\" hx-swap=\"beforeend\"" : "");
    if (!streaming && m->content) md_render(m->content, strlen(m->content), b);
    core_buf_printf(b, "</div><div class=\"tail\"%s></div><div class=\"err\"%s></div></div>\n",
                    streaming ? " sse-swap=\"tail\" hx-swap=\"innerHTML\"" : "",
                    streaming ? " sse-swap=\"error\" hx-swap=\"innerHTML\"" : "");
    core_buf_puts(b, "<div class=\"msg-foot\">");
    if (m->model[0]) { /* which model wrote it (several models per server) */
        core_buf_puts(b, "<span class=\"msg-model\" title=\"model\">");
        esc(b, m->model);
        core_buf_puts(b, "</span> ");
    }
    core_buf_printf(b, "<span class=\"stats\"%s>", streaming ? " sse-swap=\"stats\" hx-swap=\"innerHTML\"" : "");
    if (!streaming) { /* the line the stream ended with, from what the store keeps */
        double tps = m->gen_ms > 0 && m->completion_tokens > 1 ? (m->completion_tokens - 1) / (m->gen_ms / 1e3) : 0;
        /* the store keeps the prefill time: the TTFT less any wait in the queue */
        if (m->completion_tokens && m->prefill_ms > 0) core_buf_printf(b, "TTFT %.0f ms · ", m->prefill_ms);
        if (m->completion_tokens) core_buf_printf(b, "%.1f tok/s · %d tokens", tps, m->completion_tokens);
        const char *why = m->status == STORE_MSG_PARTIAL ? (!strcmp(m->finish, "cancelled") ? "stopped"
                                                            : !strcmp(m->finish, "interrupted") ? "interrupted"
                                                            : !strcmp(m->finish, "error") ? "error" : "incomplete")
                          : !strcmp(m->finish, "length") ? "length limit" : NULL;
        if (why) core_buf_printf(b, "%s%s", m->completion_tokens ? " · " : "", why);
    } else {
        core_buf_puts(b, "…");
    }
    core_buf_puts(b, "</span><span class=\"msg-actions\">\n");
    render_versions(b, m);
    core_buf_puts(b, "<button type=\"button\" class=\"icon sm\" data-copy=\"msg\" aria-label=\"Copy "
                     "answer\">Copy</button>\n<button type=\"button\" class=\"icon sm last-only\" data-cmd=\"regenerate\" "
                     "aria-label=\"Regenerate answer\">Regenerate</button>\n<button type=\"button\" class=\"icon sm last-only\" "
                     "data-cmd=\"continue\" aria-label=\"Continue answer\">Continue</button>\n</span></div></article>\n");
}

static int load_live(api *a, const char *conv, int64_t msg, const char *model);

static void render_msg(api *a, core_buf *b, const char *conv, const store_msg *m) {
    if (!strcmp(m->role, "user")) render_user(b, m);
    else if (!strcmp(m->role, "assistant")) {
        bridge_job *j = bridge_find(a->br, m->id, conv);
        int live = (j && bridge_live(j)) || load_live(a, conv, m->id, NULL);
        if (j) bridge_release(j);
        render_assistant(b, conv, m, live);
    }
}

static int ctx_max(api *a) {
    if (a->cfg.reg) { /* the default model's (the page's gauge; each answer is cut to its own) */
        char def[128];
        registry_model m;
        int i = registry_default(a->cfg.reg, def, sizeof def) ? -1 : registry_find(a->cfg.reg, def);
        return i >= 0 && registry_get(a->cfg.reg, (size_t)i, &m) == 0 ? m.n_ctx : 0;
    }
    int n = engine_ctx_size(a->eng);
    return n > 0 ? n : 0;
}

static void forget_one(void *ctx, engine *e, const char *name) {
    (void)name;
    engine_forget(e, ctx);
}

/* A conversation's caches go, on every engine that may hold one. */
static void forget_conv(api *a, const char *conv) {
    if (a->cfg.reg) registry_each_engine(a->cfg.reg, forget_one, (void *)conv);
    else engine_forget(a->eng, conv);
}

/* The model of a new answer (see the header) into out ("" without a registry). */
static void pick_model(api *a, const store_conv *c, const char *body, char *out, size_t cap) {
    out[0] = 0;
    if (!a->cfg.reg) return;
    char *f = body ? form_get(body, "model") : NULL;
    if (f && *f && registry_find(a->cfg.reg, f) >= 0) snprintf(out, cap, "%s", f);
    free(f);
    if (out[0]) return;
    store_msg *ms = NULL;
    int n = 0;
    if (c->current_leaf && !store_branch(S(a), c->id, 0, &ms, &n, NULL))
        for (int i = n - 1; i >= 0 && !out[0]; i--)
            if (!strcmp(ms[i].role, "assistant") && ms[i].model[0] && registry_find(a->cfg.reg, ms[i].model) >= 0)
                snprintf(out, cap, "%s", ms[i].model);
    store_msgs_free(ms, n);
    if (!out[0]) registry_default(a->cfg.reg, out, cap);
}

/* The whole #messages fragment of conv (current branch). */
static int render_conv(api *a, core_buf *b, const store_conv *c, core_err *err) {
    store_msg *ms = NULL;
    int n = 0, rc = store_branch(S(a), c->id, 0, &ms, &n, err);
    if (rc) return rc;
    int used = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(ms[i].role, "assistant") && ms[i].prompt_tokens) used = ms[i].prompt_tokens + ms[i].completion_tokens;
    core_buf_printf(b, "<div id=\"messages\" class=\"messages\" aria-live=\"polite\" data-conv=\"%s\" data-title=\"", c->id);
    esc(b, c->title);
    const char *model = "";
    for (int i = 0; i < n; i++)
        if (!strcmp(ms[i].role, "assistant") && ms[i].model[0]) model = ms[i].model;
    /* the conversation's settings: the page fills its Settings from them */
    core_buf_printf(b, "\" data-ctx-used=\"%d\" data-ctx-max=\"%d\" data-thinking=\"%d\" data-temperature=\"%g\" data-top-p=\"%g\" "
                       "data-top-k=\"%d\" data-min-p=\"%g\" data-max-tokens=\"%d\" data-model=\"",
                    used, ctx_max(a), c->thinking, c->temperature, c->top_p, c->top_k, c->min_p, c->max_tokens);
    esc(b, model);
    core_buf_puts(b, "\" data-system=\"");
    esc(b, c->system_prompt);
    core_buf_puts(b, "\">\n");
    for (int i = 0; i < n; i++) render_msg(a, b, c->id, &ms[i]);
    core_buf_puts(b, "</div>\n");
    store_msgs_free(ms, n);
    return 0;
}

static void render_conv_li(core_buf *b, const store_conv *c, const char *current) {
    core_buf_printf(b, "<li class=\"conv%s\" id=\"conv-%s\" data-conv=\"%s\">\n", current && !strcmp(current, c->id) ? " current" : "",
                    c->id, c->id);
    core_buf_printf(b, "<a class=\"conv-open\" href=\"/ui/c/%s\" hx-get=\"/ui/c/%s\" hx-target=\"#messages\" hx-swap=\"outerHTML\">",
                    c->id, c->id);
    esc(b, c->title && *c->title ? c->title : "New chat");
    core_buf_printf(b, "</a>\n<button type=\"button\" class=\"icon sm\" data-action=\"rename\" aria-label=\"Rename conversation\">✎</button>\n"
                       "<button type=\"button\" class=\"icon sm\" hx-delete=\"/ui/c/%s\" hx-target=\"closest li\" hx-swap=\"outerHTML\" "
                       "hx-confirm=\"Delete this conversation?\" aria-label=\"Delete conversation\">✕</button></li>\n",
                    c->id);
}

/* ---- routes -------------------------------------------------------------- */

static int no_store(http_req *r) { return http_respond_text(r, 503, "History is off: the server runs without a conversation store."); }

/* A cancelled search (time limit, shutdown) and a read-only history are
 * 503, a full disk 507: none is the request's fault. */
static int store_fail(http_req *r, const core_err *err, int rc) {
    int status = rc == CORE_ENOTFOUND ? 404 : rc == CORE_EINVAL || rc == CORE_ERANGE ? 400
               : rc == CORE_ECANCEL || rc == STORE_EREADONLY || rc == STORE_EUNAVAIL ? 503 : rc == CORE_EFULL ? 507 : 500;
    return http_respond_text(r, status, err->msg[0] ? err->msg : "store error");
}

/* Resolve "latest" (the newest conversation, created if none) or check an
 * id. 0 and *c filled, or a response was made (returns 1). */
static int conv_resolve(api *a, http_req *r, const char *id, store_conv *c) {
    core_err err = {0};
    if (!S(a)) {
        no_store(r);
        return 1;
    }
    if (!strcmp(id, "latest")) {
        store_conv *list = NULL;
        int n = 0, rc = store_list(S(a), 1, 0, &list, &n, &err);
        if (rc) {
            store_fail(r, &err, rc);
            return 1;
        }
        char nid[STORE_ID_LEN + 1];
        if (n > 0) snprintf(nid, sizeof nid, "%s", list[0].id);
        store_conv_free_list(list, n);
        if (n == 0 && (rc = store_create(S(a), NULL, nid, &err))) {
            store_fail(r, &err, rc);
            return 1;
        }
        id = nid;
        rc = store_get(S(a), id, c, &err);
        if (rc) store_fail(r, &err, rc);
        return rc ? 1 : 0;
    }
    if (!valid_conv_id(id)) {
        http_respond_text(r, 404, "no such conversation");
        return 1;
    }
    int rc = store_get(S(a), id, c, &err);
    if (rc) {
        store_fail(r, &err, rc);
        return 1;
    }
    return 0;
}

static int respond_conv(api *a, http_req *r, const store_conv *c, int trigger) {
    core_buf b = {0};
    core_err err = {0};
    int rc = render_conv(a, &b, c, &err);
    if (rc) {
        core_buf_free(&b);
        return store_fail(r, &err, rc);
    }
    if (trigger) http_req_add_header(r, "HX-Trigger", "smolbot:convs");
    return respond_buf(r, 200, HTML, &b);
}

/* The registry's names for the page's picker and /status. */
static json_t *status_models(api *a) {
    json_t *arr = json_array();
    registry_model m;
    for (size_t i = 0; arr && registry_get(a->cfg.reg, i, &m) == 0; i++) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:f, s:b, s:b, s:b, s:f, s:i}", "name", m.name, "quant", m.quant, "arch",
                              m.arch, "size_mb", m.file_size / 1048576.0, "loaded", m.loaded, "loading", m.loading || load_live(a, NULL, 0, m.name),
                              "supported", m.supported, "mem_mb", m.mem_bytes / 1048576.0, "n_ctx", m.n_ctx);
        if (o && !m.supported) json_object_set_new(o, "reason", json_string(m.reason));
        if (!o || json_array_append_new(arr, o)) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

static int route_status(api *a, http_req *r) {
    int st = a->cfg.reg ? ENGINE_READY : engine_state(a->eng);
    const char *s = st == ENGINE_READY ? "ready" : st == ENGINE_LOADING ? "loading" : "no_model";
    engine_metrics m;
    engine_get_metrics(a->eng, &m);
    const model_config *mc = engine_model_config(a->eng);
    int busy = 0, live = bridge_running(a->br, NULL, &busy);
    json_t *o = json_pack("{s:s, s:s, s:i, s:b, s:b, s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:i, s:f, s:f, s:s, s:I, s:I, s:i}", "state", s,
                          "model", st == ENGINE_READY || st == ENGINE_LOADING ? a->model_name : "SmolLM3-3B", "ctx_max", ctx_max(a), "thinking_default", 1, "busy", busy, "pull_hint",
                          "smolbot pull", "state_message", engine_state_message(a->eng), "model_file", engine_model_path(a->eng),
                          "uptime_s", core_now_s() - a->t_start, "rss_mb", (double)core_rss() / (1024.0 * 1024.0), "streams", live,
                          "queued", m.queued, "active", m.active, "tok_s", m.last_decode_tok_s, "ttft_ms", m.last_ttft_ms,
                          "history", !a->st ? "memory" : store_readonly(a->st) ? "readonly" : "disk", "requests", (json_int_t)m.requests, "gen_tokens", (json_int_t)m.gen_tokens, "threads",
                          engine_threads(a->eng));
    if (o && a->cfg.reg) {
        char def[128] = "";
        registry_default(a->cfg.reg, def, sizeof def);
        json_object_set_new(o, "model", json_string(def));
        json_object_set_new(o, "models", status_models(a));
    }
    if (o && mc) {
        /* parameters, counted from the shapes (embeddings tied) */
        double hd = mc->head_dim, L = mc->n_layer, E = mc->n_embd;
        double per = E * hd * mc->n_head * 2 + E * hd * mc->n_head_kv * 2 + 3.0 * E * mc->n_ff + 2 * E;
        double params = L * per + (double)mc->n_vocab * E + E;
        json_object_set_new(o, "arch", json_string(mc->arch));
        json_object_set_new(o, "n_layer", json_integer(mc->n_layer));
        json_object_set_new(o, "n_embd", json_integer(mc->n_embd));
        json_object_set_new(o, "n_ctx_train", json_integer(mc->n_ctx_train));
        json_object_set_new(o, "params", json_real(params));
    }
    if (o && mc) { /* the quantization, as the file name says it ("...-Q4_K_M.gguf") */
        const char *dash = strrchr(a->model_name, '-');
        char q[32] = "";
        if (dash && (dash[1] == 'q' || dash[1] == 'Q' || dash[1] == 'f' || dash[1] == 'F' || dash[1] == 'b'))
            for (size_t i = 0; dash[1 + i] && i + 1 < sizeof q; i++) q[i] = (char)toupper((unsigned char)dash[1 + i]);
        json_object_set_new(o, "quant", json_string(q[0] ? q : "unknown"));
    }
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body) return http_respond_text(r, 500, "out of memory");
    http_req_add_header(r, "Cache-Control", "no-store");
    return http_respond_take(r, 200, "application/json", body, strlen(body));
}

static void apply_form_settings(api *a, store_conv *c, const char *body);

static int route_conversations(api *a, http_req *r) {
    core_err err = {0};
    if (!S(a)) {
        static const char off[] = "<li class=\"conv-empty\">History is off</li>";
        return http_respond(r, 200, HTML, off, sizeof off - 1); /* 43 sent the NUL too */
    }
    if (!strcmp(http_req_method(r), "POST")) {
        if (csrf_reject(r)) return 0;
        char id[STORE_ID_LEN + 1];
        int rc = store_create(S(a), NULL, id, &err);
        if (rc) return store_fail(r, &err, rc);
        store_conv c = {0};
        if ((rc = store_get(S(a), id, &c, &err))) return store_fail(r, &err, rc);
        size_t bl;
        const char *body = http_req_body(r, &bl);
        if (body && *body) apply_form_settings(a, &c, body); /* the page's defaults for new chats */
        rc = respond_conv(a, r, &c, 1);
        store_conv_clear(&c);
        return rc;
    }
    const char *q = http_req_query(r, "q");
    const char *cur = http_req_query(r, "current");
    core_buf b = {0};
    int rc, shown = 0;
    const char *ro = store_readonly(S(a));
    if (!a->st) /* the in-memory store: say what that means, once, on top */
        core_buf_puts(&b, "<li class=\"conv-empty history-off\" role=\"status\">History is off: these chats live in "
                          "memory and are lost when the server stops.</li>\n");
    if (ro) { /* the history is there, it just cannot change: say so above it */
        core_buf_puts(&b, "<li class=\"conv-empty\" role=\"status\">History is read-only: ");
        esc(&b, ro);
        core_buf_puts(&b, "</li>\n");
    }
    if (q && *q) {
        store_hit *h = NULL;
        int n = 0;
        if ((rc = store_search(S(a), q, 50, 0, &h, &n, &err))) return store_fail(r, &err, rc);
        for (int i = 0; i < n; i++) {
            int dup = 0;
            for (int j = 0; j < i; j++)
                if (!strcmp(h[j].conv, h[i].conv)) dup = 1;
            if (dup) continue;
            store_conv c = {0};
            if (store_get(S(a), h[i].conv, &c, NULL)) continue;
            render_conv_li(&b, &c, cur);
            store_conv_clear(&c);
            shown++;
        }
        store_hits_free(h, n);
        /* titles match too (the index covers message text only) */
        store_conv *list = NULL;
        if (!store_list(S(a), 200, 0, &list, &n, NULL)) {
            for (int i = 0; i < n; i++)
                if (list[i].title && strcasestr(list[i].title, q) && !strstr(b.data ? b.data : "", list[i].id)) {
                    render_conv_li(&b, &list[i], cur);
                    shown++;
                }
            store_conv_free_list(list, n);
        }
        if (!shown) core_buf_puts(&b, "<li class=\"conv-empty\">Nothing found</li>");
    } else {
        store_conv *list = NULL;
        int n = 0;
        if ((rc = store_list(S(a), 100, 0, &list, &n, &err))) return store_fail(r, &err, rc);
        for (int i = 0; i < n; i++) render_conv_li(&b, &list[i], cur);
        if (!n) core_buf_puts(&b, "<li class=\"conv-empty\">No conversations yet</li>");
        store_conv_free_list(list, n);
    }
    return respond_buf(r, 200, HTML, &b);
}

/* Settings that come with a message form: thinking ("1" or absent),
 * temperature ("" = keep), top_p, top_k, min_p, max_tokens, system (each ""
 * or absent = keep). Stored on the conversation, so they persist with it. */
static void apply_form_settings(api *a, store_conv *c, const char *body) {
    char *th = form_get(body, "thinking"), *t = form_get(body, "temperature"), *tp = form_get(body, "top_p"),
         *mt = form_get(body, "max_tokens"), *sys = form_get(body, "system"), *tk = form_get(body, "top_k"),
         *mp = form_get(body, "min_p");
    int changed = 0;
    int want_th = th && !strcmp(th, "1");
    if (want_th != c->thinking) c->thinking = want_th, changed = 1;
    char *end;
    if (t && *t) {
        double v = strtod(t, &end);
        if (*end == 0 && v >= 0 && v <= 2 && v != c->temperature) c->temperature = v, changed = 1;
    }
    if (tp && *tp) {
        double v = strtod(tp, &end);
        if (*end == 0 && v > 0 && v <= 1 && v != c->top_p) c->top_p = v, changed = 1;
    }
    if (tk && *tk) {
        long v = strtol(tk, &end, 10);
        if (*end == 0 && v >= 0 && v <= 1000 && v != c->top_k) c->top_k = (int)v, changed = 1;
    }
    if (mp && *mp) {
        double v = strtod(mp, &end);
        if (*end == 0 && v >= 0 && v <= 1 && v != c->min_p) c->min_p = v, changed = 1;
    }
    if (mt && *mt) {
        long v = strtol(mt, &end, 10);
        if (*end == 0 && v >= 0 && v <= 1000000 && v != c->max_tokens) c->max_tokens = (int)v, changed = 1;
    }
    char *old_sys = NULL;
    if (sys && strcmp(sys, c->system_prompt ? c->system_prompt : "")) {
        old_sys = c->system_prompt;
        c->system_prompt = sys;
        sys = NULL;
        changed = 1;
    }
    if (changed) {
        core_err err = {0};
        if (store_set_settings(S(a), c->id, c, &err)) core_log(1, "ui: settings: %s", err.msg);
    }
    free(old_sys);
    free(th);
    free(t);
    free(tp);
    free(mt);
    free(sys);
    free(tk);
    free(mp);
}

/* Start an answer: history = the branch ending at `upto` (plus the system
 * prompt), the assistant message `asst` (already stored, STREAMING).
 * cont: continue asst (its content is the prefix; upto == asst).
 * Returns 0 or a CORE_E* with err (the caller marks asst as failed). */
/* Samplers the store does not keep (the page keeps them per conversation
 * and sends them with every message): repeat_penalty (0.5-2), presence_penalty
 * and frequency_penalty (-2..2), seed (an integer; "" = random). A value
 * out of range or not a number is ignored, like the stored settings. */
static void form_samplers(const char *body, sample_params *sp) {
    char *v, *end;
    static const struct { const char *key; double lo, hi; } f[] = {
        {"repeat_penalty", 0.5, 2}, {"presence_penalty", -2, 2}, {"frequency_penalty", -2, 2}};
    for (size_t i = 0; body && i < sizeof f / sizeof f[0]; i++) {
        if (!(v = form_get(body, f[i].key))) continue;
        double d = strtod(v, &end);
        if (*v && !*end && d >= f[i].lo && d <= f[i].hi) {
            if (i == 0) sp->repeat_penalty = (float)d;
            else if (i == 1) sp->presence_penalty = (float)d;
            else sp->frequency_penalty = (float)d;
        }
        free(v);
    }
    if (body && (v = form_get(body, "seed"))) {
        errno = 0;
        unsigned long long n = strtoull(v, &end, 10);
        if (*v >= '0' && *v <= '9' && !*end && !errno) sp->seed = n;
        free(v);
    }
}

static int stopping_wait(void *ctx) { return bridge_stopping(((api *)ctx)->br); }

/* The answer asst to the branch ending at upto on *am's engine (a hold
 * given back here). held: the job, with bridge_start's hold (else given
 * back: the page connects within ANS_GRACE_S). */
static int start_on(api *a, api_model *am, const store_conv *c, int64_t upto, int64_t asst, int cont,
                    const char *form, bridge_job **held, core_err *err) {
    store_msg *ms = NULL;
    int n = 0, rc = store_branch(S(a), c->id, upto, &ms, &n, err);
    if (rc) {
        api_model_put(a, am);
        return rc;
    }
    chat_msg *cm = calloc((size_t)n + 1, sizeof *cm);
    prompt p = {0};
    if (!cm) {
        rc = core_errf(err, CORE_ENOMEM, "out of memory");
        goto out;
    }
    size_t k = 0;
    if (c->system_prompt && *c->system_prompt) cm[k++] = (chat_msg){"system", c->system_prompt, strlen(c->system_prompt)};
    for (int i = 0; i < n; i++) {
        if (strcmp(ms[i].role, "user") && strcmp(ms[i].role, "assistant")) continue;
        const char *t = ms[i].content ? ms[i].content : "";
        cm[k++] = (chat_msg){ms[i].role, t, strlen(t)};
    }
    const tok *tk = engine_tok(am->eng);
    if (!tk) {
        rc = core_errf(err, CORE_EUNSUP, "the model is not loaded");
        goto out;
    }
    prompt_opts po = {.thinking = c->thinking, .date = c->pinned_date, .cont = cont};
    rc = prompt_build(tk, cm, k, &po, &p, err);
    if (rc) goto out;
    engine_request rq = {0};
    rq.conv_id = c->id;
    rq.prompt = p.ids;
    rq.n_prompt = p.n_ids;
    rq.n_shared = p.n_shared;
    sample_params_default(&rq.sampling);
    rq.sampling.temperature = (float)c->temperature;
    rq.sampling.top_p = (float)c->top_p;
    rq.sampling.top_k = c->top_k;
    rq.sampling.min_p = (float)c->min_p;
    rq.sampling.seed = core_now_ns() ^ (uint64_t)asst * 0x9E3779B97F4A7C15ull;
    form_samplers(form, &rq.sampling);
    rq.thinking = p.thinking;
    /* the page's setting is cut to what the context leaves, never refused */
    rc = bridge_max_tokens(engine_ctx_size(am->eng), p.n_ids, c->max_tokens, a->cfg.max_tokens, 0, &rq.max_tokens, err);
    if (rc) { /* before anything is relabelled: a continue that cannot fit leaves the answer as it was */
        rc = core_errf(err, CORE_ERANGE, "The conversation (%zu tokens) no longer fits the context (%d): start a new one.",
                       p.n_ids, engine_ctx_size(am->eng));
        goto out;
    }
    if (cont && n > 0) { /* the finished answer streams again */
        store_msg m = ms[n - 1];
        m.status = STORE_MSG_STREAMING;
        m.finish[0] = 0;
        store_update(S(a), asst, &m, NULL);
    }
    ans_owner *ow = malloc(sizeof *ow);
    if (!ow) {
        rc = core_errf(err, CORE_ENOMEM, "out of memory");
        goto out;
    }
    *ow = (ans_owner){a, asst};
    bridge_job_opts bo = {0};
    bo.key = asst;
    bo.tag = c->id;
    bo.grace_s = ANS_GRACE_S;
    bo.keep_s = ANS_KEEP_S;
    bo.save_s = ANS_SAVE_S;
    bo.owner = (bridge_owner){NULL, ans_save, free, ow};
    if (cont && n > 0) { /* the existing answer is replayed first */
        const store_msg *last = &ms[n - 1];
        bo.prefix = last->content ? last->content : "";
        bo.prefix_len = strlen(bo.prefix);
        bo.prefix_reasoning = last->reasoning ? last->reasoning : "";
        bo.prefix_reasoning_len = strlen(bo.prefix_reasoning);
    }
    bridge_job *j = NULL;
    rc = api_model_start(a, am, &rq, &bo, &j, err);
    if (rc) free(ow);
    else if (held) *held = j;
    else bridge_release(j);
out:
    api_model_put(a, am);
    prompt_free(&p);
    free(cm);
    store_msgs_free(ms, n);
    return rc;
}

static int load_start(api *a, const store_conv *c, int64_t upto, int64_t asst, int cont, const char *model,
                      const char *form, core_err *err);

/* The answer asst to the branch ending at upto: started now when its model
 * is loaded, else on a loader thread (load_start), never waiting here. */
static int start_answer(api *a, const store_conv *c, int64_t upto, int64_t asst, int cont, const char *model,
                        const char *form, core_err *err) {
    char canon[128];
    if (api_model_unloaded(a, model, canon, sizeof canon)) return load_start(a, c, upto, asst, cont, canon, form, err);
    api_model am = {.eng = a->eng, .keep_alive_s = REGISTRY_KEEP_DEFAULT};
    if (a->cfg.reg) { /* loaded already: this does not wait */
        int rc = registry_acquire(a->cfg.reg, model, stopping_wait, a, &am.eng, &am.load_ms, err);
        if (rc) return rc == CORE_ENOTFOUND ? CORE_EINVAL : rc;
        am.held = 1;
    }
    return start_on(a, &am, c, upto, asst, cont, form, NULL, err);
}

/* An answer that never started, stored empty with its finish ("error",
 * "cancelled"). */
static void mark_failed(api *a, int64_t id, const char *finish) {
    store_msg m = {0};
    snprintf(m.role, sizeof m.role, "assistant");
    m.content = "";
    m.status = STORE_MSG_PARTIAL;
    snprintf(m.finish, sizeof m.finish, "%s", finish);
    store_update(S(a), id, &m, NULL);
}

/* ---- answers waiting for their model's load --------------------------------
 *
 * An answer whose model is not loaded does not make its POST wait: the
 * POST stores the messages and returns the streaming article at once, and
 * a loader thread (api_loader_spawn) waits for the load. The article's
 * event stream, which finds no job yet, waits on the load instead: it gets
 * a "loading" event at once and then about every second (the registry's
 * wait ticks) with the seconds so far, which also tells the server whether
 * the client is still there. Once loaded, the thread starts the job and
 * hands the waiting streams to it (an empty "loading" first, which clears
 * the line); a failed or stopped load ends them with error/stats/done and
 * is kept ANS_KEEP_S for a stream that comes late. With no stream for
 * ANS_GRACE_S (a closed tab), on Stop, a deleted conversation or the server
 * stopping, the wait gives up; a load under way still completes (the
 * registry keeps the file, with no hold, for whoever asks next).
 * Lock order: u->mu, then the bridge's.
 */
#define LOAD_STREAMS 8 /* streams of one answer (tabs, reconnects) */

struct ui_load {
    ui_load *next;
    api *a;
    char conv[STORE_ID_LEN + 1], model[128];
    int64_t upto, asst;
    int cont;
    char *form;          /* the POST's body: the samplers of this answer */
    double t0;
    double alone_since;  /* no stream attached since then; 0: one is */
    int ticked_s;        /* the seconds the last tick told */
    int cancel;          /* Stop, the conversation deleted */
    int ended;           /* 1: failed (msg says why), 2: stopped */
    double ended_at;
    char msg[512];
    ui_stream *w[LOAD_STREAMS];
    int n_w;
};

static void load_free(ui_load *l) {
    if (!l) return;
    free(l->form);
    free(l);
}

/* Unlink l from u->loads (u->mu held). */
static void load_unlink(ui *u, ui_load *l) {
    for (ui_load **p = &u->loads; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            return;
        }
}

/* Ended loads past ANS_KEEP_S go (u->mu held). */
static void load_gc(ui *u, double now) {
    for (ui_load **p = &u->loads; *p;) {
        ui_load *l = *p;
        if (l->ended && now - l->ended_at > ANS_KEEP_S) {
            *p = l->next;
            load_free(l);
        } else {
            p = &l->next;
        }
    }
}

/* "Loading MODEL… N s" (escaped) to x. */
static void load_ev(ui_stream *x, const ui_load *l, double now, int *bad) {
    core_buf t = {0};
    int secs = (int)(now - l->t0);
    core_buf_printf(&t, "Loading %s…", l->model);
    if (secs > 0) core_buf_printf(&t, " %d s", secs);
    core_buf_clear(&x->tmp);
    esc(&x->tmp, t.data);
    core_buf_free(&t);
    ev(x, "loading", NULL, x->tmp.data ? x->tmp.data : "", x->tmp.len, bad);
}

/* The end of an answer that never started, to x: the line cleared, the
 * reason (failed), the stats line, done. */
static void load_ev_end(ui_stream *x, const ui_load *l, int *bad) {
    ev(x, "loading", NULL, "", 0, bad);
    if (l->ended == 1) {
        core_buf_clear(&x->tmp);
        esc(&x->tmp, l->msg);
        ev(x, "error", NULL, x->tmp.data ? x->tmp.data : "", x->tmp.len, bad);
    }
    ev(x, "stats", NULL, l->ended == 1 ? "error" : "stopped", l->ended == 1 ? 5 : 7, bad);
    ev(x, "done", NULL, "", 0, bad);
}

/* The registry's wait tick (about once a second): gone streams go, the
 * others hear the time; nonzero gives the wait up. */
static int load_wait(void *ctx) {
    ui_load *l = ctx;
    ui *u = l->a->ui;
    double now = core_now_s();
    int tell = (int)(now - l->t0) != l->ticked_s; /* once a second (silence is filled by the pings) */
    l->ticked_s = (int)(now - l->t0);
    pthread_mutex_lock(&u->mu);
    for (int i = 0; i < l->n_w;) {
        int bad = http_stream_gone(l->w[i]->s);
        if (!bad && tell) load_ev(l->w[i], l, now, &bad);
        if (bad) {
            ui_stream_free(l->w[i]);
            l->w[i] = l->w[--l->n_w];
        } else {
            i++;
        }
    }
    if (l->n_w) l->alone_since = 0;
    else if (!l->alone_since) l->alone_since = now;
    int give_up = l->cancel || bridge_stopping(l->a->br) || (l->alone_since && now - l->alone_since > ANS_GRACE_S);
    pthread_mutex_unlock(&u->mu);
    return give_up;
}

static void *load_main(void *arg) {
    ui_load *l = arg;
    api *a = l->a;
    ui *u = a->ui;
    core_err err = {0};
    api_model am = {.keep_alive_s = REGISTRY_KEEP_DEFAULT};
    bridge_job *j = NULL;
    int rc = registry_acquire(a->cfg.reg, l->model, load_wait, l, &am.eng, &am.load_ms, &err);
    if (!rc) {
        store_conv c = {0};
        am.held = 1;
        rc = store_get(S(a), l->conv, &c, &err);
        if (!rc) rc = start_on(a, &am, &c, l->upto, l->asst, l->cont, l->form, &j, &err); /* gives am back */
        else api_model_put(a, &am);
        store_conv_clear(&c);
    }
    pthread_mutex_lock(&u->mu);
    int stopped = rc == CORE_ECANCEL || l->cancel;
    pthread_mutex_unlock(&u->mu);
    if (rc && !l->cont) mark_failed(a, l->asst, stopped ? "cancelled" : "error");
    pthread_mutex_lock(&u->mu);
    if (rc) {
        snprintf(l->msg, sizeof l->msg, "%s", err.msg);
        l->ended = stopped ? 2 : 1;
        l->ended_at = core_now_s();
    } else {
        load_unlink(u, l); /* from now on the stream route finds the job */
        if (l->cancel) bridge_cancel(j); /* Stop came between the load and the start */
    }
    for (int i = 0; i < l->n_w; i++) {
        ui_stream *x = l->w[i];
        int bad = 0;
        if (!rc) { /* the job's now (bridge_listen drops one it cannot keep) */
            ev(x, "loading", NULL, "", 0, &bad);
            bridge_listen(j, &ui_ops, x, 0, ANS_TICK_MS);
        } else {
            load_ev_end(x, l, &bad);
            ui_stream_free(x);
        }
    }
    l->n_w = 0;
    pthread_mutex_unlock(&u->mu);
    if (j) bridge_release(j);
    if (!rc) load_free(l);
    api_loader_done(a); /* the last touch of a */
    return NULL;
}

/* Answer asst once model is loaded (see above). 0, or an error (nothing kept). */
static int load_start(api *a, const store_conv *c, int64_t upto, int64_t asst, int cont, const char *model,
                      const char *form, core_err *err) {
    ui *u = a->ui;
    ui_load *l = calloc(1, sizeof *l);
    if (!l || !(l->form = strdup(form ? form : ""))) {
        free(l);
        return core_errf(err, CORE_ENOMEM, "out of memory");
    }
    l->a = a;
    snprintf(l->conv, sizeof l->conv, "%s", c->id);
    snprintf(l->model, sizeof l->model, "%s", model);
    l->upto = upto;
    l->asst = asst;
    l->cont = cont;
    l->t0 = core_now_s();
    l->alone_since = l->t0; /* the page connects within ANS_GRACE_S */
    pthread_mutex_lock(&u->mu);
    load_gc(u, l->t0);
    l->next = u->loads;
    u->loads = l;
    pthread_mutex_unlock(&u->mu);
    if (!api_loader_spawn(a, load_main, l)) return 0;
    pthread_mutex_lock(&u->mu);
    load_unlink(u, l);
    pthread_mutex_unlock(&u->mu);
    load_free(l);
    return core_errf(err, CORE_ENOMEM, "out of threads");
}

/* 1 while an answer waits for a load: answer msg of conv, or any answer
 * of conv (msg 0), or any answer on model (conv NULL). */
static int load_live(api *a, const char *conv, int64_t msg, const char *model) {
    ui *u = a->ui;
    if (!u) return 0;
    int live = 0;
    pthread_mutex_lock(&u->mu);
    for (ui_load *l = u->loads; l && !live; l = l->next)
        live = !l->ended && (conv ? !strcmp(l->conv, conv) && (!msg || l->asst == msg) : !strcmp(l->model, model));
    pthread_mutex_unlock(&u->mu);
    return live;
}

/* Stop the waits of conv's answers. */
static void load_cancel(api *a, const char *conv) {
    ui *u = a->ui;
    pthread_mutex_lock(&u->mu);
    for (ui_load *l = u->loads; l; l = l->next)
        if (!strcmp(l->conv, conv)) l->cancel = 1;
    pthread_mutex_unlock(&u->mu);
}

/* The event stream of answer msg when it waits for a load (or its load
 * ended): 1 answered, 0 not such an answer. */
static int load_attach(api *a, http_req *r, const char *conv, int64_t msg) {
    ui *u = a->ui;
    double now = core_now_s();
    int rc = 1;
    pthread_mutex_lock(&u->mu);
    load_gc(u, now);
    ui_load *l = u->loads;
    while (l && !(l->asst == msg && !strcmp(l->conv, conv))) l = l->next;
    ui_stream *x = NULL;
    if (!l) rc = 0;
    else if (l->n_w == LOAD_STREAMS) http_respond_text(r, 503, "Too many streams for this answer.");
    else if (!ui_stream_open(r, 0, &x)) {
        int bad = 0;
        if (l->ended) {
            load_ev_end(x, l, &bad);
            ui_stream_free(x);
        } else {
            load_ev(x, l, now, &bad);
            l->w[l->n_w++] = x;
            l->alone_since = 0;
        }
    }
    pthread_mutex_unlock(&u->mu);
    return rc;
}

static int model_ready_or_503(api *a, http_req *r) {
    int st = a->cfg.reg ? ENGINE_READY : engine_state(a->eng); /* a registry loads on demand */
    if (st == ENGINE_READY && !atomic_load(&a->draining)) return 0;
    if (st == ENGINE_READY) http_respond_text(r, 503, "This server is draining; try again.");
    else if (st == ENGINE_LOADING) http_respond_text(r, 503, "The model is still loading; try again in a moment.");
    else http_respond_text(r, 503, "No model loaded: run \"smolbot pull\", then restart \"smolbot serve\".");
    return 1;
}

static int busy_409(api *a, http_req *r, const char *conv) {
    int answers = 0; /* quotes shown in the conversation do not make it busy */
    bridge_running(a->br, conv, &answers);
    int busy = answers > 0 || load_live(a, conv, 0, NULL);
    if (busy) http_respond_text(r, 409, "An answer is still being generated: stop it first.");
    return busy;
}

static int64_t append_msg(api *a, const char *conv, int64_t parent, const char *role, const char *content, int status,
                          const char *model, core_err *err) {
    store_msg m = {0};
    m.parent = parent;
    snprintf(m.model, sizeof m.model, "%s", model ? model : "");
    snprintf(m.role, sizeof m.role, "%s", role);
    m.content = (char *)content;
    m.status = status;
    int64_t id = 0;
    if (store_append(S(a), conv, &m, &id, err)) return 0;
    return id;
}

/* The last k messages of the branch ending at leaf (with their versions
 * control), the one with id `live` as a streaming article. */
static void render_branch_tail(api *a, core_buf *b, const store_conv *c, int64_t leaf, int k, int64_t live) {
    store_msg *ms = NULL;
    int n = 0;
    if (store_branch(S(a), c->id, leaf, &ms, &n, NULL)) return;
    for (int i = n > k ? n - k : 0; i < n; i++) {
        if (!strcmp(ms[i].role, "user")) render_user(b, &ms[i]);
        else if (!strcmp(ms[i].role, "assistant")) render_assistant(b, c->id, &ms[i], ms[i].id == live);
    }
    store_msgs_free(ms, n);
}

/* POST .../messages and .../messages/{msg}/edit: a user message under
 * parent, then a streaming answer. */
static int route_send(api *a, http_req *r, store_conv *c, int64_t edit_of) {
    size_t bl;
    const char *body = http_req_body(r, &bl);
    if (model_ready_or_503(a, r) || busy_409(a, r, c->id)) return 0;
    char *text = form_get(body, "text");
    if (!text || !*text) {
        free(text);
        return http_respond_text(r, 400, "The message is empty.");
    }
    core_err err = {0};
    int64_t parent = c->current_leaf;
    if (edit_of) {
        store_msg om = {0};
        int rc = store_get_msg(S(a), edit_of, &om, &err);
        int ok = !rc && !strcmp(om.conv, c->id) && !strcmp(om.role, "user");
        parent = om.parent;
        store_msg_clear(&om);
        if (!ok) {
            free(text);
            return http_respond_text(r, 404, "no such message to edit");
        }
    }
    apply_form_settings(a, c, body);
    char model[128];
    pick_model(a, c, body, model, sizeof model);
    int64_t uid = append_msg(a, c->id, parent, "user", text, STORE_MSG_DONE, NULL, &err);
    free(text);
    if (!uid) return store_fail(r, &err, err.code ? err.code : CORE_EIO); /* disk full is a 500, not the client's fault */
    int64_t aid = append_msg(a, c->id, uid, "assistant", "", STORE_MSG_STREAMING, model, &err);
    if (!aid) return store_fail(r, &err, err.code ? err.code : CORE_EIO);
    int rc = start_answer(a, c, uid, aid, 0, model, body, &err);
    if (rc) {
        mark_failed(a, aid, "error");
        return http_respond_text(r, rc == CORE_ERANGE ? 413 : rc == CORE_EFULL ? 503 : rc == CORE_EINVAL || rc == CORE_EUNSUP ? 400 : 500,
                                 err.msg);
    }
    core_buf b = {0};
    render_branch_tail(a, &b, c, aid, 2, aid);
    if (c->title == NULL || !*c->title) http_req_add_header(r, "HX-Trigger", "smolbot:convs"); /* the title was just set */
    return respond_buf(r, 200, HTML, &b);
}

/* The last assistant message of the current branch (0 if the leaf is not one). */
static int64_t last_assistant(api *a, const store_conv *c, int64_t *parent) {
    store_msg m = {0};
    if (!c->current_leaf || store_get_msg(S(a), c->current_leaf, &m, NULL)) return 0;
    int64_t id = !strcmp(m.role, "assistant") ? m.id : 0;
    *parent = m.parent;
    store_msg_clear(&m);
    return id;
}

static int route_regen(api *a, http_req *r, store_conv *c, int cont) {
    size_t bl;
    const char *body = http_req_body(r, &bl);
    if (model_ready_or_503(a, r) || busy_409(a, r, c->id)) return 0;
    int64_t parent = 0, last = last_assistant(a, c, &parent);
    if (!last || (!cont && !parent)) return http_respond_text(r, 409, cont ? "There is no answer to continue." : "There is no answer to regenerate.");
    apply_form_settings(a, c, body);
    core_err err = {0};
    int64_t aid = last;
    char model[128];
    pick_model(a, c, body, model, sizeof model);
    if (!cont) {
        aid = append_msg(a, c->id, parent, "assistant", "", STORE_MSG_STREAMING, model, &err);
        if (!aid) return store_fail(r, &err, CORE_EIO);
    }
    int rc = start_answer(a, c, cont ? last : parent, aid, cont, model, body, &err);
    if (rc) {
        if (!cont) mark_failed(a, aid, "error");
        return http_respond_text(r, rc == CORE_ERANGE ? 413 : 500, err.msg);
    }
    core_buf b = {0};
    render_branch_tail(a, &b, c, aid, 1, aid);
    return respond_buf(r, 200, HTML, &b);
}

/* POST .../switch/{msg}?dir=-1|1: show the previous or next sibling of msg
 * (the newest branch below it); the conversation goes on from there. */
static int route_switch(api *a, http_req *r, const store_conv *c, int64_t msg) {
    if (busy_409(a, r, c->id)) return 0;
    const char *d = http_req_query(r, "dir");
    int dir = d && !strcmp(d, "-1") ? -1 : 1;
    core_err err = {0};
    store_msg m = {0};
    int rc = store_get_msg(S(a), msg, &m, &err);
    int ok = !rc && !strcmp(m.conv, c->id);
    int64_t parent = m.parent;
    store_msg_clear(&m);
    if (!ok) return http_respond_text(r, 404, "no such message");
    store_msg *all = NULL;
    int n = 0;
    if ((rc = store_messages(S(a), c->id, &all, &n, &err))) return store_fail(r, &err, rc);
    int64_t target = 0, prev = 0;
    int found = 0;
    for (int i = 0; i < n && !target; i++) { /* siblings in id order, as store_branch counts them */
        if (all[i].parent != parent) continue;
        if (found) target = all[i].id; /* the next one */
        else if (all[i].id == msg) {
            found = 1;
            if (dir < 0) {
                target = prev;
                if (!target) break;
            }
        }
        prev = all[i].id;
    }
    store_msgs_free(all, n);
    if (!target) return http_respond_text(r, 409, dir < 0 ? "This is the first version." : "This is the last version.");
    if ((rc = store_set_leaf(S(a), c->id, target, NULL, &err))) return store_fail(r, &err, rc);
    store_conv nc = {0};
    if ((rc = store_get(S(a), c->id, &nc, &err))) return store_fail(r, &err, rc);
    rc = respond_conv(a, r, &nc, 0);
    store_conv_clear(&nc);
    return rc;
}

static int route_stream(api *a, http_req *r, const store_conv *c, int64_t msg) {
    if (a->cfg.reg && load_attach(a, r, c->id, msg)) return 0; /* before bridge_find: a load ends in a job */
    bridge_job *j = bridge_find(a->br, msg, c->id);
    store_msg m = {0};
    if (!j && !store_get_msg(S(a), msg, &m, NULL) && !strcmp(m.finish, "interrupted")) {
        /* its server died mid-stream (another replica answers now): say so
         * and end, so the page keeps the text it has and the user goes on */
        store_msg_clear(&m);
        static const char end[] = "event: error\ndata: This answer was interrupted: the server writing it stopped. "
                                  "The text saved so far is kept; send a message to go on.\n\nevent: done\ndata: \n\n";
        return http_respond(r, 200, "text/event-stream", end, sizeof end - 1);
    }
    store_msg_clear(&m);
    if (!j) return http_respond(r, 204, NULL, "", 0); /* finished long ago: EventSource stops */
    int rc = ui_listen(j, r, 0);
    bridge_release(j);
    return rc;
}

static int route_quote(api *a, http_req *r) {
    ui *u = a->ui;
    quote_owner *q = calloc(1, sizeof *q);
    if (!q) return http_respond_text(r, 500, "out of memory");
    q->next = core_now_s();
    bridge_job_opts bo = {0};
    pthread_mutex_lock(&u->mu);
    bo.key = --u->quote_serial;
    pthread_mutex_unlock(&u->mu);
    /* shown in that conversation: its Stop button stops it (and no other's) */
    const char *conv = http_req_query(r, "conv");
    bo.tag = conv && valid_conv_id(conv) ? conv : "quote";
    bo.grace_s = QUOTE_GRACE_S;
    bo.keep_s = ANS_KEEP_S;
    bo.owner = (bridge_owner){quote_tick, NULL, free, q};
    bridge_job *j = NULL;
    core_err err = {0};
    if (bridge_start(a->br, NULL, &bo, &j, &err)) {
        free(q);
        return http_respond_text(r, 503, err.msg);
    }
    int rc = ui_listen(j, r, 1);
    bridge_release(j);
    return rc;
}

/* Its answer (running, or waiting for its model) and the quotes shown in it. */
static void cancel_conv(api *a, const char *conv) {
    bridge_cancel_tag(a->br, conv);
    load_cancel(a, conv);
}

static int route_stop(api *a, http_req *r, const store_conv *c) {
    cancel_conv(a, c->id);
    return http_respond(r, 204, NULL, "", 0);
}

/* An export's JSON cut to the messages of the shown branch (the other
 * versions left out); *json replaced. */
static int export_branch_only(api *a, const store_conv *c, char **json, core_err *err) {
    store_msg *ms = NULL;
    int n = 0, rc = store_branch(S(a), c->id, 0, &ms, &n, err);
    if (rc) return rc;
    json_error_t je;
    json_t *root = json_loads(*json, 0, &je), *all = json_object_get(root, "messages"), *keep = json_array();
    for (size_t i = 0; keep && i < json_array_size(all); i++) {
        json_t *m = json_array_get(all, i);
        json_int_t id = json_integer_value(json_object_get(m, "id"));
        for (int k = 0; k < n; k++)
            if (ms[k].id == id) {
                json_array_append(keep, m);
                break;
            }
    }
    store_msgs_free(ms, n);
    char *out = NULL;
    if (root && keep && !json_object_set_new(root, "messages", keep)) out = json_dumps(root, JSON_INDENT(1));
    else json_decref(keep);
    json_decref(root);
    if (!out) return core_errf(err, CORE_ENOMEM, "out of memory");
    free(*json);
    *json = out;
    return 0;
}

static int route_export(api *a, http_req *r, const store_conv *c) {
    const char *fmt = http_req_query(r, "fmt");
    int json = fmt && !strcmp(fmt, "json");
    char *out = NULL;
    core_err err = {0};
    int rc = json ? store_export_json(S(a), c->id, &out, &err) : store_export_md(S(a), c->id, &out, &err);
    if (rc) return store_fail(r, &err, rc);
    const char *br = http_req_query(r, "branch");
    if (json && br && !strcmp(br, "1") && (rc = export_branch_only(a, c, &out, &err))) {
        free(out);
        return store_fail(r, &err, rc);
    }
    char disp[96];
    snprintf(disp, sizeof disp, "attachment; filename=\"smolbot-%s.%s\"", c->id, json ? "json" : "md");
    http_req_add_header(r, "Content-Disposition", disp);
    return http_respond_take(r, 200, json ? "application/json" : "text/markdown; charset=utf-8", out, strlen(out));
}

/* The import is one store transaction that holds off every other writer:
 * bound it by the number of messages. The answer is a short summary, not
 * the conversation (which the page loads when opened, a screen at a time). */
#define IMPORT_MAX_MESSAGES 10000

static int cmp_jint(const void *x, const void *y) {
    json_int_t a = *(const json_int_t *)x, b = *(const json_int_t *)y;
    return (a > b) - (a < b);
}

/* ---- import: smolbot's export, and ChatGPT's and Open WebUI's mapped to it ----
 * Both keep a conversation as a tree of messages keyed by strings (uuids)
 * with parent keys; the mapping keeps the user and assistant messages with
 * text, renumbers them parents first, hangs each on its nearest kept
 * ancestor and keeps the shown branch (current_node / currentId). */

typedef struct imp_node {
    const char *key, *parent, *role, *content;
    double t;
    size_t pi;     /* parent's index, or n */
    long depth;    /* -1 until known */
    json_int_t id; /* 0: not kept */
    size_t kept;   /* the nearest kept ancestor-or-self's index, or n */
} imp_node;

static int imp_key_cmp(const void *x, const void *y) {
    const imp_node *a = x, *b = y;
    return strcmp(a->key, b->key);
}

static int imp_order_cmp(const void *x, const void *y) {
    const imp_node *a = *(imp_node *const *)x, *b = *(imp_node *const *)y;
    if (a->depth != b->depth) return a->depth < b->depth ? -1 : 1;
    return (a->t > b->t) - (a->t < b->t);
}

/* nodes[0..n) -> a smolbot export (new reference), or NULL with err. */
static json_t *imp_export(imp_node *v, size_t n, const char *current, const char *title, core_err *err) {
    if (n > IMPORT_MAX_MESSAGES) {
        core_errf(err, CORE_ERANGE, "too many messages to import (%zu; at most %d)", n, IMPORT_MAX_MESSAGES);
        return NULL;
    }
    qsort(v, n, sizeof *v, imp_key_cmp);
    for (size_t i = 0; i < n; i++) {
        imp_node k = {.key = v[i].parent};
        const imp_node *p = v[i].parent ? bsearch(&k, v, n, sizeof *v, imp_key_cmp) : NULL;
        v[i].pi = p && p != &v[i] ? (size_t)(p - v) : n;
        v[i].depth = -1;
        v[i].kept = n;
    }
    /* depth: walk up to a known one (or the root), then number the walk
     * top down; a loop in the parents counts as a root */
    size_t *stk = malloc((n ? n : 1) * sizeof *stk);
    if (!stk) {
        core_errf(err, CORE_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].depth >= 0) continue;
        size_t sp = 0, x = i;
        while (x < n && v[x].depth == -1 && sp < n) {
            stk[sp++] = x;
            v[x].depth = -2; /* on this walk */
            x = v[x].pi;
        }
        long d = x < n && v[x].depth >= 0 ? v[x].depth : -1;
        while (sp) v[stk[--sp]].depth = ++d;
    }
    free(stk);
    imp_node **ord = malloc((n ? n : 1) * sizeof *ord);
    json_t *ms = json_array(), *root = NULL;
    if (!ord || !ms) goto oom;
    for (size_t i = 0; i < n; i++) ord[i] = &v[i];
    qsort(ord, n, sizeof *ord, imp_order_cmp);
    json_int_t next = 1;
    for (size_t o = 0; o < n; o++) {
        imp_node *x = ord[o];
        size_t i = (size_t)(x - v);
        size_t pk = x->pi < n ? v[x->pi].kept : n;
        if (x->role && x->content && *x->content) {
            x->id = next++;
            x->kept = i;
            json_t *m = json_pack("{s:I, s:o, s:s, s:s}", "id", x->id, "parent", pk < n ? json_integer(v[pk].id) : json_null(),
                                  "role", x->role, "content", x->content);
            if (!m || json_array_append_new(ms, m)) goto oom;
        } else x->kept = pk;
    }
    json_int_t leaf = 0;
    if (current) {
        imp_node k = {.key = current};
        const imp_node *c = bsearch(&k, v, n, sizeof *v, imp_key_cmp);
        if (c && c->kept < n) leaf = v[c->kept].id;
    }
    if (!json_array_size(ms)) {
        core_errf(err, CORE_EFORMAT, "the conversation \"%.60s\" has no messages with text", title ? title : "");
        goto fail;
    }
    root = json_pack("{s:s, s:i, s:{s:s, s:o}, s:O}", "format", "smolbot-conversation", "version", 1, "conversation", "title",
                     title ? title : "", "current_leaf", leaf ? json_integer(leaf) : json_null(), "messages", ms);
    if (!root) goto oom;
    free(ord);
    json_decref(ms);
    return root;
oom:
    core_errf(err, CORE_ENOMEM, "out of memory");
fail:
    free(ord);
    json_decref(ms);
    return NULL;
}

static const char *jstr(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

/* The text of a ChatGPT message: its string parts (images and the like left out). */
static char *chatgpt_text(json_t *content) {
    core_buf b = {0};
    json_t *parts = json_object_get(content, "parts");
    for (size_t i = 0; i < json_array_size(parts); i++) {
        const char *s = json_string_value(json_array_get(parts, i));
        if (s && *s) core_buf_printf(&b, "%s%s", b.len ? "\n" : "", s);
    }
    if (!b.len && jstr(content, "text")) core_buf_puts(&b, jstr(content, "text"));
    return b.data; /* NULL when empty */
}

/* One ChatGPT conversation ({"title", "mapping": {key: {message, parent}}, "current_node"}). */
static json_t *from_chatgpt(json_t *cv, core_err *err) {
    json_t *mp = json_object_get(cv, "mapping");
    size_t n = json_object_size(mp), i = 0;
    imp_node *v = calloc(n ? n : 1, sizeof *v);
    char **texts = calloc(n ? n : 1, sizeof *texts);
    json_t *out = NULL;
    if (!v || !texts) {
        core_errf(err, CORE_ENOMEM, "out of memory");
        goto done;
    }
    const char *key;
    json_t *node;
    json_object_foreach(mp, key, node) {
        json_t *msg = json_object_get(node, "message");
        const char *role = jstr(json_object_get(msg, "author"), "role");
        v[i].key = key;
        v[i].parent = jstr(node, "parent");
        v[i].role = role && (!strcmp(role, "user") || !strcmp(role, "assistant")) ? role : NULL;
        v[i].t = json_number_value(json_object_get(msg, "create_time"));
        if (v[i].role) v[i].content = texts[i] = chatgpt_text(json_object_get(msg, "content"));
        i++;
    }
    out = imp_export(v, n, jstr(cv, "current_node"), jstr(cv, "title"), err);
done:
    for (size_t k = 0; texts && k < n; k++) free(texts[k]);
    free(texts);
    free(v);
    return out;
}

/* One Open WebUI chat ({"title", "chat": {"history": {"messages": {key: {parentId, role,
 * content, timestamp}}, "currentId"}}}, or the chat object itself). */
static json_t *from_openwebui(json_t *cv, core_err *err) {
    json_t *chat = json_object_get(cv, "chat") ? json_object_get(cv, "chat") : cv;
    json_t *hist = json_object_get(chat, "history"), *mp = json_object_get(hist, "messages");
    size_t n = json_object_size(mp), i = 0;
    imp_node *v = calloc(n ? n : 1, sizeof *v);
    if (!v) {
        core_errf(err, CORE_ENOMEM, "out of memory");
        return NULL;
    }
    const char *key;
    json_t *m;
    json_object_foreach(mp, key, m) {
        const char *role = jstr(m, "role");
        v[i].key = key;
        v[i].parent = jstr(m, "parentId");
        v[i].role = role && (!strcmp(role, "user") || !strcmp(role, "assistant")) ? role : NULL;
        v[i].content = jstr(m, "content");
        v[i].t = json_number_value(json_object_get(m, "timestamp"));
        i++;
    }
    const char *title = jstr(cv, "title") ? jstr(cv, "title") : jstr(chat, "title");
    json_t *out = imp_export(v, n, jstr(hist, "currentId"), title, err);
    free(v);
    return out;
}

/* A smolbot export without current_leaf (a file written by another tool):
 * show the newest branch (the leaf with the highest id), not an empty chat. */
static void smolbot_leaf(json_t *root) {
    json_t *jc = json_object_get(root, "conversation"), *jl = json_object_get(jc, "current_leaf");
    json_t *ms = json_object_get(root, "messages");
    size_t n_msgs = json_array_size(ms);
    if (!json_is_object(jc) || (jl && !json_is_null(jl)) || n_msgs == 0 || n_msgs > IMPORT_MAX_MESSAGES) return;
    json_int_t best = 0, *parents = malloc(n_msgs * sizeof *parents);
    if (!parents) return;
    for (size_t i = 0; i < n_msgs; i++) parents[i] = json_integer_value(json_object_get(json_array_get(ms, i), "parent"));
    qsort(parents, n_msgs, sizeof *parents, cmp_jint);
    for (size_t i = 0; i < n_msgs; i++) {
        json_int_t id = json_integer_value(json_object_get(json_array_get(ms, i), "id"));
        if (id > best && !bsearch(&id, parents, n_msgs, sizeof *parents, cmp_jint)) best = id;
    }
    free(parents);
    if (best > 0) json_object_set_new(jc, "current_leaf", json_integer(best));
}

/* The file -> an array of smolbot exports (new reference), or NULL with err. */
static json_t *import_map(json_t *root, core_err *err) {
    json_t *list = json_array(), *one = json_is_array(root) ? NULL : root;
    if (!list) return NULL;
    size_t n = json_is_array(root) ? json_array_size(root) : 1;
    if (n == 0) core_errf(err, CORE_EFORMAT, "the file holds no conversations");
    for (size_t i = 0; i < n && !err->code; i++) {
        json_t *cv = one ? one : json_array_get(root, i), *ex = NULL;
        if (!json_is_object(cv)) core_errf(err, CORE_EFORMAT, "item %zu is not a conversation", i + 1);
        else if (json_object_get(cv, "messages") && json_object_get(cv, "conversation")) {
            smolbot_leaf(cv);
            ex = json_incref(cv);
        } else if (json_is_object(json_object_get(cv, "mapping"))) ex = from_chatgpt(cv, err);
        else if (json_is_object(json_object_get(json_object_get(json_object_get(cv, "chat"), "history"), "messages")) ||
                 json_is_object(json_object_get(json_object_get(cv, "history"), "messages")))
            ex = from_openwebui(cv, err);
        else
            core_errf(err, CORE_EFORMAT, "%s is not a conversation export smolbot reads (smolbot's JSON, ChatGPT's "
                      "conversations.json, Open WebUI's chat export)", one ? "the file" : "an item");
        if (ex && json_array_append_new(list, ex)) core_errf(err, CORE_ENOMEM, "out of memory");
    }
    if (err->code) {
        json_decref(list);
        return NULL;
    }
    return list;
}

static int route_import(api *a, http_req *r) {
    if (!S(a)) return no_store(r);
    size_t len;
    const char *body = http_req_body(r, &len);
    json_error_t je;
    json_t *root = api_json_loadb(body, len, &je);
    if (!root) {
        char msg[256];
        snprintf(msg, sizeof msg, "not a JSON conversation export: %s (line %d)", je.text, je.line);
        return http_respond_text(r, 400, msg);
    }
    core_err err = {0};
    json_t *list = import_map(root, &err);
    json_decref(root);
    if (!list) return http_respond_text(r, err.code == CORE_ERANGE ? 413 : err.code == CORE_ENOMEM ? 500 : 400, err.msg);
    size_t total = 0, n = json_array_size(list);
    for (size_t i = 0; i < n; i++) total += json_array_size(json_object_get(json_array_get(list, i), "messages"));
    if (total > IMPORT_MAX_MESSAGES) {
        json_decref(list);
        char msg[128];
        snprintf(msg, sizeof msg, "too many messages to import (%zu; at most %d)", total, IMPORT_MAX_MESSAGES);
        return http_respond_text(r, 413, msg);
    }
    /* one conversation per transaction: a later one that fails takes the
     * earlier ones back out, so a bad file changes nothing */
    char (*ids)[STORE_ID_LEN + 1] = calloc(n ? n : 1, sizeof *ids);
    size_t done = 0;
    int rc = ids ? 0 : core_errf(&err, CORE_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        char *txt = json_dumps(json_array_get(list, i), JSON_COMPACT);
        rc = txt ? store_import_json(S(a), txt, strlen(txt), ids[i], &err) : core_errf(&err, CORE_ENOMEM, "out of memory");
        free(txt);
        if (!rc) done++;
        else if (n > 1) { /* say which */
            char m[sizeof err.msg];
            snprintf(m, sizeof m, "conversation %zu of %zu: %.400s", i + 1, n, err.msg);
            snprintf(err.msg, sizeof err.msg, "%s", m);
        }
    }
    json_decref(list);
    if (rc) {
        for (size_t i = 0; i < done; i++) store_delete(S(a), ids[i], NULL);
        free(ids);
        if (rc != CORE_EFORMAT && rc != CORE_EINVAL && rc != CORE_ERANGE && rc != CORE_EUNSUP)
            return store_fail(r, &err, rc); /* the disk, not the file */
        return http_respond_text(r, 400, err.msg[0] ? err.msg : "not a conversation export");
    }
    store_conv c = {0};
    rc = store_get(S(a), ids[0], &c, &err);
    free(ids);
    if (rc) return store_fail(r, &err, rc);
    core_buf b = {0};
    core_buf_printf(&b, "<p class=\"import-done\" data-conv=\"%s\" data-count=\"%zu\">Imported <b>", c.id, n);
    esc(&b, c.title && *c.title ? c.title : "(untitled)");
    core_buf_printf(&b, "</b>: %lld messages", (long long)c.n_messages);
    if (n > 1) core_buf_printf(&b, " (and %zu more conversations)", n - 1);
    core_buf_printf(&b, ". <a href=\"/ui/c/%s\" hx-get=\"/ui/c/%s\" hx-target=\"#messages\" hx-swap=\"outerHTML\">Open it</a></p>",
                    c.id, c.id);
    store_conv_clear(&c);
    http_req_add_header(r, "HX-Trigger", "smolbot:convs");
    return respond_buf(r, 200, HTML, &b);
}

/* POST /ui/count, form: text -> {"tokens":N,"exact":true}: what an
 * attached file costs before it is sent (the page refuses what does not
 * fit). Without a model there is no tokenizer: about 3.5 bytes a token. */
static int route_count(api *a, http_req *r) {
    size_t bl;
    char *text = form_get(http_req_body(r, &bl), "text");
    if (!text) return http_respond_text(r, 400, "no text to count");
    const tok *tk = engine_state(a->eng) == ENGINE_READY ? engine_tok(a->eng) : NULL;
    size_t len = strlen(text), n = 0, cap = 0;
    int32_t *ids = NULL;
    int exact = 0;
    core_err err = {0};
    if (tk && !tok_encode(tk, text, len, 0, &ids, &n, &cap, &err)) exact = 1;
    else n = (size_t)((double)len / 3.5 + 0.5);
    free(ids);
    free(text);
    char out[96];
    int k = snprintf(out, sizeof out, "{\"tokens\":%zu,\"exact\":%s}", n, exact ? "true" : "false");
    http_req_add_header(r, "Cache-Control", "no-store");
    return http_respond(r, 200, "application/json", out, (size_t)k);
}

/* /ui/c/{id}[/rest...] */
static int route_conv(api *a, http_req *r, const char *rest) {
    const char *m = http_req_method(r);
    char id[32];
    size_t il = strcspn(rest, "/");
    if (il == 0 || il >= sizeof id) return http_respond_text(r, 404, "no such conversation");
    memcpy(id, rest, il);
    id[il] = 0;
    const char *sub = rest[il] ? rest + il + 1 : "";
    int is_get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), is_post = !strcmp(m, "POST"), is_del = !strcmp(m, "DELETE");
    if (!is_get && csrf_reject(r)) return 0;
    store_conv c = {0};
    if (conv_resolve(a, r, id, &c)) return 0;
    int rc = 0;
    core_err err = {0};
    char *endp;
    if (!*sub && is_get) rc = respond_conv(a, r, &c, 0);
    else if (!*sub && is_del) {
        cancel_conv(a, c.id);
        rc = store_delete(S(a), c.id, &err);
        forget_conv(a, c.id);
        if (rc) rc = store_fail(r, &err, rc);
        else {
            http_req_add_header(r, "HX-Trigger", "smolbot:convs");
            rc = http_respond(r, 200, HTML, "", 0);
        }
    } else if (!strcmp(sub, "messages") && is_post) rc = route_send(a, r, &c, 0);
    else if (!strncmp(sub, "messages/", 9) && is_post) {
        long long mid = strtoll(sub + 9, &endp, 10);
        if (mid <= 0 || strcmp(endp, "/edit")) rc = http_respond_text(r, 404, "no such route");
        else rc = route_send(a, r, &c, mid);
    } else if (!strncmp(sub, "stream/", 7) && is_get) {
        long long mid = strtoll(sub + 7, &endp, 10);
        rc = (mid <= 0 || *endp) ? http_respond_text(r, 404, "no such message") : route_stream(a, r, &c, mid);
    } else if (!strncmp(sub, "switch/", 7) && is_post) {
        long long mid = strtoll(sub + 7, &endp, 10);
        rc = (mid <= 0 || *endp) ? http_respond_text(r, 404, "no such message") : route_switch(a, r, &c, mid);
    } else if (!strcmp(sub, "stop") && is_post) rc = route_stop(a, r, &c);
    else if (!strcmp(sub, "regenerate") && is_post) rc = route_regen(a, r, &c, 0);
    else if (!strcmp(sub, "continue") && is_post) rc = route_regen(a, r, &c, 1);
    else if (!strcmp(sub, "reset") && is_post) {
        /* the built-in sampling defaults, then those the page sends (its
         * defaults for new chats); the system prompt stays */
        forget_conv(a, c.id);
        store_conv d;
        store_conv_defaults(&d);
        c.temperature = d.temperature;
        c.top_p = d.top_p;
        c.top_k = d.top_k;
        c.min_p = d.min_p;
        c.max_tokens = d.max_tokens;
        c.thinking = d.thinking;
        size_t bl;
        const char *body = http_req_body(r, &bl);
        if (body && *body) apply_form_settings(a, &c, body);
        if ((rc = store_set_settings(S(a), c.id, &c, &err))) rc = store_fail(r, &err, rc);
        else rc = respond_conv(a, r, &c, 0);
    } else if (!strcmp(sub, "clear") && is_post) {
        /* a fresh conversation with the same settings takes this one's
         * place; the old one stays until the page's undo time is over (the
         * page deletes it then), so a cleared chat can come back */
        if (busy_409(a, r, c.id)) goto out;
        char nid[STORE_ID_LEN + 1];
        store_conv nc = {0};
        if ((rc = store_create(S(a), &c, nid, &err)) || (rc = store_get(S(a), nid, &nc, &err))) {
            rc = store_fail(r, &err, rc);
            goto out;
        }
        forget_conv(a, c.id);
        char trig[128];
        snprintf(trig, sizeof trig, "{\"smolbot:convs\":\"\",\"smolbot:cleared\":\"%s\"}", c.id);
        http_req_add_header(r, "HX-Trigger", trig);
        rc = respond_conv(a, r, &nc, 0);
        store_conv_clear(&nc);
    } else if (!strcmp(sub, "rename") && is_post) {
        size_t bl;
        char *t = form_get(http_req_body(r, &bl), "title");
        if (!t || !*t) rc = http_respond_text(r, 400, "the title is empty");
        else if ((rc = store_rename(S(a), c.id, t, &err))) rc = store_fail(r, &err, rc);
        else {
            free(c.title);
            c.title = t;
            t = NULL;
            core_buf b = {0};
            render_conv_li(&b, &c, c.id);
            rc = respond_buf(r, 200, HTML, &b);
        }
        free(t);
    } else if (!strcmp(sub, "export") && is_get) rc = route_export(a, r, &c);
    else rc = http_respond_text(r, 404, "no such route");
out:
    store_conv_clear(&c);
    return rc;
}

int api_ui_route(api *a, http_req *r, core_err *err) {
    const char *p = http_req_path(r), *m = http_req_method(r);
    if (api_auth_route(a, r)) return 1; /* sign-in, sign-out, or the wall in front of the page */
    if (!strncmp(p, "/ui/", 4)) {
        const char *sub = p + 4;
        if (!strcmp(sub, "status") && !strcmp(m, "GET")) route_status(a, r);
        else if (!strcmp(sub, "conversations") && (!strcmp(m, "GET") || !strcmp(m, "POST"))) route_conversations(a, r);
        else if (!strcmp(sub, "quote") && !strcmp(m, "GET")) route_quote(a, r);
        else if (!strcmp(sub, "count") && !strcmp(m, "POST")) {
            if (!csrf_reject(r)) route_count(a, r);
        } else if (!strcmp(sub, "import") && !strcmp(m, "POST")) {
            if (!csrf_reject(r)) route_import(a, r);
        } else if (!strncmp(sub, "c/", 2)) route_conv(a, r, sub + 2);
        else http_respond_text(r, 404, "no such route");
        return 1;
    }
    if (strcmp(m, "GET") && strcmp(m, "HEAD")) return 0;
    if (!strcmp(p, "/") || !strcmp(p, "/index.html")) return http_respond_asset(r, "/index.html"), 1;
    if (http_asset_find(p)) return http_respond_asset(r, p), 1;
    return 0;
}
