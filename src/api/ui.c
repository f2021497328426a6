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
 * stored with the answer and shown under it.
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

#define ANS_GRACE_S 30.0   /* no listener this long: cancel */
#define ANS_KEEP_S 60.0    /* finished answers stay for replay this long */
#define ANS_TICK_MS 33     /* at most ~30 deliveries a second */
#define ANS_SAVE_S 1.0     /* partial text to the store this often */
#define QUOTE_WORD_MS 12   /* pace of /ui/quote */
#define QUOTE_GRACE_S 5.0  /* nobody wants the quote */

typedef struct ui {
    pthread_mutex_t mu;
    int64_t quote_serial; /* quotes are keyed -1, -2, ... (model answers by message id) */
} ui;

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

/* Answer r with the event stream of job j from Last-Event-ID (or 0). */
static int ui_listen(bridge_job *j, http_req *r, int quote) {
    core_err err = {0};
    ui_stream *x = calloc(1, sizeof *x);
    if (!x || !(x->md = md_stream_new())) {
        free(x);
        return http_respond_text(r, 500, "out of memory");
    }
    x->quote = quote;
    x->fresh = 1;
    x->s = http_respond_stream(r, 200, "text/event-stream", NULL, &err);
    if (!x->s) {
        ui_stream_free(x);
        return http_respond_text(r, 500, err.msg);
    }
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
    int rc = store_update(o->a->st, o->msg, &m, err);
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

int api_ui_init(api *a, core_err *err) {
    ui *u = calloc(1, sizeof *u);
    if (!u) return core_errf(err, CORE_ENOMEM, "out of memory");
    pthread_mutex_init(&u->mu, NULL);
    a->ui = u;
    return 0;
}

void api_ui_free(api *a) {
    ui *u = a ? a->ui : NULL;
    if (!u) return;
    pthread_mutex_destroy(&u->mu);
    free(u);
    a->ui = NULL;
}

/* ---- rendering ----------------------------------------------------------- */

static void render_user(core_buf *b, const store_msg *m) {
    core_buf_printf(b, "<article class=\"msg user\" id=\"m-%lld\" data-msg=\"%lld\">\n<div class=\"bubble\"><div class=\"text\">",
                    (long long)m->id, (long long)m->id);
    esc(b, m->content);
    core_buf_puts(b, "</div></div>\n<div class=\"msg-actions\"><button type=\"button\" class=\"icon sm\" data-copy=\"msg\" "
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
                    streaming ? " open" : "", streaming ? " sse-swap=\"thought\"" : "");
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
    core_buf_printf(b, "</div></details>\n<div class=\"bubble\"><div class=\"md\"%s>",
                    streaming ? " sse-swap=\"block\" hx-swap=\"beforeend\"" : "");
    if (!streaming && m->content) md_render(m->content, strlen(m->content), b);
    core_buf_printf(b, "</div><div class=\"tail\"%s></div><div class=\"err\"%s></div></div>\n",
                    streaming ? " sse-swap=\"tail\"" : "", streaming ? " sse-swap=\"error\"" : "");
    core_buf_puts(b, "<div class=\"msg-foot\">");
    if (m->model[0]) { /* which model wrote it (several models per server) */
        core_buf_puts(b, "<span class=\"msg-model\" title=\"model\">");
        esc(b, m->model);
        core_buf_puts(b, "</span> ");
    }
    core_buf_printf(b, "<span class=\"stats\"%s>", streaming ? " sse-swap=\"stats\"" : "");
    if (!streaming) {
        double tps = m->gen_ms > 0 && m->completion_tokens > 1 ? (m->completion_tokens - 1) / (m->gen_ms / 1e3) : 0;
        if (m->completion_tokens) core_buf_printf(b, "%.1f tok/s · %d tokens", tps, m->completion_tokens);
        if (m->status == STORE_MSG_PARTIAL)
            core_buf_printf(b, "%s%s", m->completion_tokens ? " · " : "",
                            !strcmp(m->finish, "cancelled") ? "stopped" : !strcmp(m->finish, "interrupted") ? "interrupted" : "incomplete");
    } else {
        core_buf_puts(b, "…");
    }
    core_buf_puts(b, "</span><span class=\"msg-actions\">\n<button type=\"button\" class=\"icon sm\" data-copy=\"msg\" aria-label=\"Copy "
                     "answer\">Copy</button>\n<button type=\"button\" class=\"icon sm last-only\" data-cmd=\"regenerate\" "
                     "aria-label=\"Regenerate answer\">Regenerate</button>\n<button type=\"button\" class=\"icon sm last-only\" "
                     "data-cmd=\"continue\" aria-label=\"Continue answer\">Continue</button>\n</span></div></article>\n");
}

static void render_msg(api *a, core_buf *b, const char *conv, const store_msg *m) {
    if (!strcmp(m->role, "user")) render_user(b, m);
    else if (!strcmp(m->role, "assistant")) {
        bridge_job *j = bridge_find(a->br, m->id, conv);
        int live = j && bridge_live(j);
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
    if (c->current_leaf && !store_branch(a->st, c->id, 0, &ms, &n, NULL))
        for (int i = n - 1; i >= 0 && !out[0]; i--)
            if (!strcmp(ms[i].role, "assistant") && ms[i].model[0] && registry_find(a->cfg.reg, ms[i].model) >= 0)
                snprintf(out, cap, "%s", ms[i].model);
    store_msgs_free(ms, n);
    if (!out[0]) registry_default(a->cfg.reg, out, cap);
}

/* The whole #messages fragment of conv (current branch). */
static int render_conv(api *a, core_buf *b, const store_conv *c, core_err *err) {
    store_msg *ms = NULL;
    int n = 0, rc = store_branch(a->st, c->id, 0, &ms, &n, err);
    if (rc) return rc;
    int used = 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(ms[i].role, "assistant") && ms[i].prompt_tokens) used = ms[i].prompt_tokens + ms[i].completion_tokens;
    core_buf_printf(b, "<div id=\"messages\" class=\"messages\" aria-live=\"polite\" data-conv=\"%s\" data-title=\"", c->id);
    esc(b, c->title);
    const char *model = "";
    for (int i = 0; i < n; i++)
        if (!strcmp(ms[i].role, "assistant") && ms[i].model[0]) model = ms[i].model;
    core_buf_printf(b, "\" data-ctx-used=\"%d\" data-ctx-max=\"%d\" data-thinking=\"%d\" data-model=\"", used, ctx_max(a),
                    c->thinking);
    esc(b, model);
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
               : rc == CORE_ECANCEL || rc == STORE_EREADONLY ? 503 : rc == CORE_EFULL ? 507 : 500;
    return http_respond_text(r, status, err->msg[0] ? err->msg : "store error");
}

/* Resolve "latest" (the newest conversation, created if none) or check an
 * id. 0 and *c filled, or a response was made (returns 1). */
static int conv_resolve(api *a, http_req *r, const char *id, store_conv *c) {
    core_err err = {0};
    if (!a->st) {
        no_store(r);
        return 1;
    }
    if (!strcmp(id, "latest")) {
        store_conv *list = NULL;
        int n = 0, rc = store_list(a->st, 1, 0, &list, &n, &err);
        if (rc) {
            store_fail(r, &err, rc);
            return 1;
        }
        char nid[STORE_ID_LEN + 1];
        if (n > 0) snprintf(nid, sizeof nid, "%s", list[0].id);
        store_conv_free_list(list, n);
        if (n == 0 && (rc = store_create(a->st, NULL, nid, &err))) {
            store_fail(r, &err, rc);
            return 1;
        }
        id = nid;
        rc = store_get(a->st, id, c, &err);
        if (rc) store_fail(r, &err, rc);
        return rc ? 1 : 0;
    }
    if (!valid_conv_id(id)) {
        http_respond_text(r, 404, "no such conversation");
        return 1;
    }
    int rc = store_get(a->st, id, c, &err);
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
                              m.arch, "size_mb", m.file_size / 1048576.0, "loaded", m.loaded, "loading", m.loading,
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
    json_t *o = json_pack("{s:s, s:s, s:i, s:b, s:b, s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:i, s:f, s:f, s:I, s:I, s:i}", "state", s,
                          "model", st == ENGINE_READY || st == ENGINE_LOADING ? a->model_name : "SmolLM3-3B", "ctx_max", ctx_max(a), "thinking_default", 1, "busy", busy, "pull_hint",
                          "smolbot pull", "state_message", engine_state_message(a->eng), "model_file", engine_model_path(a->eng),
                          "uptime_s", core_now_s() - a->t_start, "rss_mb", (double)core_rss() / (1024.0 * 1024.0), "streams", live,
                          "queued", m.queued, "active", m.active, "tok_s", m.last_decode_tok_s, "ttft_ms", m.last_ttft_ms,
                          "requests", (json_int_t)m.requests, "gen_tokens", (json_int_t)m.gen_tokens, "threads",
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

static int route_conversations(api *a, http_req *r) {
    core_err err = {0};
    if (!a->st) {
        static const char off[] = "<li class=\"conv-empty\">History is off</li>";
        return http_respond(r, 200, HTML, off, sizeof off - 1); /* 43 sent the NUL too */
    }
    if (!strcmp(http_req_method(r), "POST")) {
        if (csrf_reject(r)) return 0;
        char id[STORE_ID_LEN + 1];
        int rc = store_create(a->st, NULL, id, &err);
        if (rc) return store_fail(r, &err, rc);
        store_conv c = {0};
        if ((rc = store_get(a->st, id, &c, &err))) return store_fail(r, &err, rc);
        rc = respond_conv(a, r, &c, 1);
        store_conv_clear(&c);
        return rc;
    }
    const char *q = http_req_query(r, "q");
    const char *cur = http_req_query(r, "current");
    core_buf b = {0};
    int rc, shown = 0;
    const char *ro = store_readonly(a->st);
    if (ro) { /* the history is there, it just cannot change: say so above it */
        core_buf_puts(&b, "<li class=\"conv-empty\" role=\"status\">History is read-only: ");
        esc(&b, ro);
        core_buf_puts(&b, "</li>\n");
    }
    if (q && *q) {
        store_hit *h = NULL;
        int n = 0;
        if ((rc = store_search(a->st, q, 50, 0, &h, &n, &err))) return store_fail(r, &err, rc);
        for (int i = 0; i < n; i++) {
            int dup = 0;
            for (int j = 0; j < i; j++)
                if (!strcmp(h[j].conv, h[i].conv)) dup = 1;
            if (dup) continue;
            store_conv c = {0};
            if (store_get(a->st, h[i].conv, &c, NULL)) continue;
            render_conv_li(&b, &c, cur);
            store_conv_clear(&c);
            shown++;
        }
        store_hits_free(h, n);
        /* titles match too (the index covers message text only) */
        store_conv *list = NULL;
        if (!store_list(a->st, 200, 0, &list, &n, NULL)) {
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
        if ((rc = store_list(a->st, 100, 0, &list, &n, &err))) return store_fail(r, &err, rc);
        for (int i = 0; i < n; i++) render_conv_li(&b, &list[i], cur);
        if (!n) core_buf_puts(&b, "<li class=\"conv-empty\">No conversations yet</li>");
        store_conv_free_list(list, n);
    }
    return respond_buf(r, 200, HTML, &b);
}

/* Settings that come with a message form: thinking ("1" or absent),
 * temperature ("" = keep), top_p, max_tokens, system (each "" or absent =
 * keep). Stored on the conversation, so they persist with it. */
static void apply_form_settings(api *a, store_conv *c, const char *body) {
    char *th = form_get(body, "thinking"), *t = form_get(body, "temperature"), *tp = form_get(body, "top_p"),
         *mt = form_get(body, "max_tokens"), *sys = form_get(body, "system");
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
        if (store_set_settings(a->st, c->id, c, &err)) core_log(1, "ui: settings: %s", err.msg);
    }
    free(old_sys);
    free(th);
    free(t);
    free(tp);
    free(mt);
    free(sys);
}

/* Start an answer: history = the branch ending at `upto` (plus the system
 * prompt), the assistant message `asst` (already stored, STREAMING).
 * cont: continue asst (its content is the prefix; upto == asst).
 * Returns 0 or a CORE_E* with err (the caller marks asst as failed). */
static int stopping_wait(void *ctx) { return bridge_stopping(((api *)ctx)->br); }

static int start_answer(api *a, const store_conv *c, int64_t upto, int64_t asst, int cont, const char *model,
                        core_err *err) {
    api_model am = {.eng = a->eng, .keep_alive_s = REGISTRY_KEEP_DEFAULT};
    if (a->cfg.reg) { /* loads it if it must (the POST waits) */
        int rc = registry_acquire(a->cfg.reg, model, stopping_wait, a, &am.eng, &am.load_ms, err);
        if (rc) return rc == CORE_ENOTFOUND ? CORE_EINVAL : rc;
        am.held = 1;
    }
    store_msg *ms = NULL;
    int n = 0, rc = store_branch(a->st, c->id, upto, &ms, &n, err);
    if (rc) {
        api_model_put(a, &am);
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
    const tok *tk = engine_tok(am.eng);
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
    rq.thinking = p.thinking;
    /* the page's setting is cut to what the context leaves, never refused */
    rc = bridge_max_tokens(engine_ctx_size(am.eng), p.n_ids, c->max_tokens, a->cfg.max_tokens, 0, &rq.max_tokens, err);
    if (rc) { /* before anything is relabelled: a continue that cannot fit leaves the answer as it was */
        rc = core_errf(err, CORE_ERANGE, "The conversation (%zu tokens) no longer fits the context (%d): start a new one.",
                       p.n_ids, engine_ctx_size(am.eng));
        goto out;
    }
    if (cont && n > 0) { /* the finished answer streams again */
        store_msg m = ms[n - 1];
        m.status = STORE_MSG_STREAMING;
        m.finish[0] = 0;
        store_update(a->st, asst, &m, NULL);
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
    rc = api_model_start(a, &am, &rq, &bo, &j, err);
    if (rc) free(ow);
    else bridge_release(j); /* the page connects within ANS_GRACE_S */
out:
    api_model_put(a, &am);
    prompt_free(&p);
    free(cm);
    store_msgs_free(ms, n);
    return rc;
}

static int model_ready_or_503(api *a, http_req *r) {
    int st = a->cfg.reg ? ENGINE_READY : engine_state(a->eng); /* a registry loads on demand */
    if (st == ENGINE_READY) return 0;
    if (st == ENGINE_LOADING) http_respond_text(r, 503, "The model is still loading; try again in a moment.");
    else http_respond_text(r, 503, "No model loaded: run \"smolbot pull\", then restart \"smolbot serve\".");
    return 1;
}

static int busy_409(api *a, http_req *r, const char *conv) {
    int answers = 0; /* quotes shown in the conversation do not make it busy */
    bridge_running(a->br, conv, &answers);
    int busy = answers > 0;
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
    if (store_append(a->st, conv, &m, &id, err)) return 0;
    return id;
}

static void mark_failed(api *a, int64_t id, const char *why) {
    store_msg m = {0};
    snprintf(m.role, sizeof m.role, "assistant");
    m.content = "";
    m.status = STORE_MSG_PARTIAL;
    snprintf(m.finish, sizeof m.finish, "error");
    store_update(a->st, id, &m, NULL);
    (void)why;
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
        int rc = store_get_msg(a->st, edit_of, &om, &err);
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
    int rc = start_answer(a, c, uid, aid, 0, model, &err);
    if (rc) {
        mark_failed(a, aid, err.msg);
        return http_respond_text(r, rc == CORE_ERANGE ? 413 : rc == CORE_EFULL ? 503 : rc == CORE_EINVAL || rc == CORE_EUNSUP ? 400 : 500,
                                 err.msg);
    }
    store_msg um = {0}, am = {0};
    core_buf b = {0};
    if (!store_get_msg(a->st, uid, &um, &err)) render_user(&b, &um);
    if (!store_get_msg(a->st, aid, &am, &err)) render_assistant(&b, c->id, &am, 1);
    store_msg_clear(&um);
    store_msg_clear(&am);
    if (c->title == NULL || !*c->title) http_req_add_header(r, "HX-Trigger", "smolbot:convs"); /* the title was just set */
    return respond_buf(r, 200, HTML, &b);
}

/* The last assistant message of the current branch (0 if the leaf is not one). */
static int64_t last_assistant(api *a, const store_conv *c, int64_t *parent) {
    store_msg m = {0};
    if (!c->current_leaf || store_get_msg(a->st, c->current_leaf, &m, NULL)) return 0;
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
    int rc = start_answer(a, c, cont ? last : parent, aid, cont, model, &err);
    if (rc) {
        if (!cont) mark_failed(a, aid, err.msg);
        return http_respond_text(r, rc == CORE_ERANGE ? 413 : 500, err.msg);
    }
    store_msg am = {0};
    core_buf b = {0};
    if (!store_get_msg(a->st, aid, &am, &err)) render_assistant(&b, c->id, &am, 1);
    store_msg_clear(&am);
    return respond_buf(r, 200, HTML, &b);
}

static int route_stream(api *a, http_req *r, const store_conv *c, int64_t msg) {
    bridge_job *j = bridge_find(a->br, msg, c->id);
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

static int route_stop(api *a, http_req *r, const store_conv *c) {
    bridge_cancel_tag(a->br, c->id); /* its answer and the quotes shown in it */
    return http_respond(r, 204, NULL, "", 0);
}

static void cancel_conv(api *a, const char *conv) { bridge_cancel_tag(a->br, conv); }

static int route_export(api *a, http_req *r, const store_conv *c) {
    const char *fmt = http_req_query(r, "fmt");
    int json = fmt && !strcmp(fmt, "json");
    char *out = NULL;
    core_err err = {0};
    int rc = json ? store_export_json(a->st, c->id, &out, &err) : store_export_md(a->st, c->id, &out, &err);
    if (rc) return store_fail(r, &err, rc);
    char disp[96];
    snprintf(disp, sizeof disp, "attachment; filename=\"smolbot-%s.%s\"", c->id, json ? "json" : "md");
    http_req_add_header(r, "Content-Disposition", disp);
    return http_respond_take(r, 200, json ? "application/json" : "text/markdown; charset=utf-8", out, strlen(out));
}

/* The import is one store transaction that holds off every other writer:
 * bound it by the number of messages. The answer is a short summary, not
 * the conversation (which the page loads when opened, a screen at a time). */
#define IMPORT_MAX_MESSAGES 10000

static int route_import(api *a, http_req *r) {
    if (!a->st) return no_store(r);
    size_t len;
    const char *body = http_req_body(r, &len);
    json_error_t je;
    json_t *root = api_json_loadb(body, len, &je);
    if (!root) {
        char msg[256];
        snprintf(msg, sizeof msg, "not a smolbot conversation export: %s", je.text);
        return http_respond_text(r, 400, msg);
    }
    size_t n_msgs = json_array_size(json_object_get(root, "messages"));
    json_decref(root);
    if (n_msgs > IMPORT_MAX_MESSAGES) {
        char msg[128];
        snprintf(msg, sizeof msg, "too many messages to import (%zu; at most %d)", n_msgs, IMPORT_MAX_MESSAGES);
        return http_respond_text(r, 413, msg);
    }
    char id[STORE_ID_LEN + 1];
    core_err err = {0};
    int rc = store_import_json(a->st, body, len, id, &err);
    if (rc && rc != CORE_EFORMAT && rc != CORE_EINVAL && rc != CORE_ERANGE && rc != CORE_EUNSUP)
        return store_fail(r, &err, rc); /* the disk, not the file */
    if (rc) return http_respond_text(r, 400, err.msg[0] ? err.msg : "not a smolbot conversation export");
    store_conv c = {0};
    if ((rc = store_get(a->st, id, &c, &err))) return store_fail(r, &err, rc);
    core_buf b = {0};
    core_buf_printf(&b, "<p class=\"import-done\" data-conv=\"%s\">Imported <b>", c.id);
    esc(&b, c.title && *c.title ? c.title : "(untitled)");
    core_buf_printf(&b, "</b>: %lld messages. <a href=\"/ui/c/%s\" hx-get=\"/ui/c/%s\" hx-target=\"#messages\" "
                        "hx-swap=\"outerHTML\">Open it</a></p>",
                    (long long)c.n_messages, c.id, c.id);
    store_conv_clear(&c);
    http_req_add_header(r, "HX-Trigger", "smolbot:convs");
    return respond_buf(r, 200, HTML, &b);
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
        rc = store_delete(a->st, c.id, &err);
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
    } else if (!strcmp(sub, "stop") && is_post) rc = route_stop(a, r, &c);
    else if (!strcmp(sub, "regenerate") && is_post) rc = route_regen(a, r, &c, 0);
    else if (!strcmp(sub, "continue") && is_post) rc = route_regen(a, r, &c, 1);
    else if (!strcmp(sub, "reset") && is_post) {
        forget_conv(a, c.id);
        rc = http_respond(r, 204, NULL, "", 0);
    } else if (!strcmp(sub, "clear") && is_post) {
        /* a fresh conversation with the same settings replaces this one */
        if (busy_409(a, r, c.id)) goto out;
        char nid[STORE_ID_LEN + 1];
        store_conv nc = {0};
        if ((rc = store_create(a->st, &c, nid, &err)) || (rc = store_get(a->st, nid, &nc, &err))) {
            rc = store_fail(r, &err, rc);
            goto out;
        }
        store_delete(a->st, c.id, NULL);
        forget_conv(a, c.id);
        rc = respond_conv(a, r, &nc, 1);
        store_conv_clear(&nc);
    } else if (!strcmp(sub, "rename") && is_post) {
        size_t bl;
        char *t = form_get(http_req_body(r, &bl), "title");
        if (!t || !*t) rc = http_respond_text(r, 400, "the title is empty");
        else if ((rc = store_rename(a->st, c.id, t, &err))) rc = store_fail(r, &err, rc);
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
        else if (!strcmp(sub, "import") && !strcmp(m, "POST")) {
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
