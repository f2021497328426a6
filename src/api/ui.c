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
 * Answers ("ans"). A POST that asks for an answer stores the user message
 * first, then an assistant message with status STREAMING, submits the engine
 * request at once (generation starts before the browser opens the event
 * stream) and registers an ans object keyed by the assistant message id.
 * The engine callback only appends raw text to the ans's input buffers
 * (it runs on the engine thread and must not block: a short mutex hold). A
 * ticker thread does the rest, at most ~30 times a second:
 *   - reasoning text -> one "think" event per tick (escaped);
 *   - answer text -> md_stream: finished blocks -> "block" events (safe
 *     HTML, appended), the unfinished tail -> a "tail" event when changed;
 *   - every second, the text so far is written to the store (crash safety);
 *   - on DONE: the last block, tail "", stats, the final store_update
 *     (DONE, or PARTIAL with "cancelled"/"error"), then "done".
 * So however fast tokens come, a listener sees at most ~30 swaps a second.
 *
 * Replay. Every event except "tail" is kept in the ans's log with an id
 * 1, 2, 3...; the tail is kept as "the current tail". An SSE GET (first
 * connect, a reconnect with Last-Event-ID, or a reloaded page that starts
 * from nothing) gets the logged events after its id and the current tail,
 * then follows live -- all under the ui mutex, so nothing is lost or sent
 * twice. A finished ans stays ANS_KEEP_S seconds for late readers; after
 * that, the stream URL of a finished message answers 204 (EventSource stops).
 *
 * Cancel. Stop cancels the engine request at once. A client that merely
 * went away (no listener) does not: the answer keeps generating, and only
 * after ANS_GRACE_S seconds with no listener is it cancelled.
 *
 * /ui/quote streams a fixed public-domain passage (John 1:1-14, KJV) word by
 * word through the same ans machinery, with no model and no store, so the
 * streaming path can be seen (and tested) without a model.
 *
 * CSRF: state-changing requests (POST, DELETE) under /ui/ need the htmx
 * header HX-Request (a cross-site form cannot set it) and, when an Origin
 * header is present, it must match Host; otherwise 403.
 *
 * Invariants: an ans is freed only by the ticker, only after the engine
 * reported DONE/ERROR for it (so the engine callback never sees freed
 * memory) and its log is complete; md/answer/reasoning of an ans are touched
 * only by the ticker once the ans is registered.
 */
#include "api_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "http/assets.h"
#include "md/md.h"
#include "tok/tok.h"

#define ANS_GRACE_S 30.0   /* no listener this long: cancel */
#define ANS_KEEP_S 60.0    /* finished answers stay for replay this long */
#define ANS_TICK_MS 33     /* at most ~30 swaps a second */
#define ANS_SAVE_S 1.0     /* partial text to the store this often */
#define QUOTE_WORD_MS 12   /* pace of /ui/quote */

enum { ANS_MODEL = 0, ANS_QUOTE = 1 };

typedef struct ans_ev {
    const char *name; /* static string */
    char *data;
    size_t len;
} ans_ev;

typedef struct ui ui;

typedef struct ans {
    struct ans *next;
    ui *u;            /* the owner (its mutex guards the fields marked so) */
    int kind;
    int64_t msg;      /* store message id; quotes: a negative serial */
    char conv[STORE_ID_LEN + 1];
    uint64_t req_id;
    int has_req, cancel_asked;
    /* engine thread -> ticker (under ui mu) */
    core_buf in_ans, in_reas;
    int got_done, got_error;
    engine_stats st;
    char finish[16];
    char errmsg[256];
    int reas_events;  /* TEXT events carrying reasoning (~ tokens) */
    /* ticker only */
    md_stream *md;
    core_buf answer, reasoning; /* everything so far (answer includes a continued prefix) */
    double t_start, t_think_end, t_saved;
    int thought_sent;
    size_t quote_pos;
    double quote_next;
    /* log and listeners (under ui mu) */
    ans_ev *log;
    size_t n_log, cap_log;
    char *tail;
    size_t tail_len;
    http_stream **ls;
    int n_ls, cap_ls;
    double t_alone;   /* since when nobody listens (0 = someone does) */
    int finished;     /* "done" is in the log */
    double t_finished;
} ans;

struct ui {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thr;
    int thr_started, stop;
    ans *list;
    int64_t quote_serial;
};

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

/* ---- the answer log (caller holds ui mu) -------------------------------- */

static void ans_send(ans *x, const char *name, const char *id, const char *data, size_t len) {
    for (int i = 0; i < x->n_ls;) {
        if (http_stream_event(x->ls[i], name, id, data, len)) {
            http_stream_close(x->ls[i]);
            x->ls[i] = x->ls[--x->n_ls];
            continue;
        }
        i++;
    }
}

static void ans_alone_check(ans *x, double now) {
    if (x->n_ls == 0 && x->t_alone == 0) x->t_alone = now;
}

static void ans_log(ans *x, const char *name, const char *data, size_t len) {
    if (x->n_log == x->cap_log) {
        size_t nc = x->cap_log ? x->cap_log * 2 : 32;
        ans_ev *nl = realloc(x->log, nc * sizeof *nl);
        if (!nl) return; /* out of memory: the event is lost for replay and live */
        x->log = nl;
        x->cap_log = nc;
    }
    char *d = malloc(len + 1);
    if (!d) return;
    memcpy(d, data, len);
    d[len] = 0;
    x->log[x->n_log++] = (ans_ev){name, d, len};
    char id[24];
    snprintf(id, sizeof id, "%zu", x->n_log);
    ans_send(x, name, id, data, len);
}

static void ans_set_tail(ans *x, const char *html, size_t len) {
    if (x->tail && x->tail_len == len && !memcmp(x->tail, html, len)) return;
    char *t = malloc(len + 1);
    if (!t) return;
    memcpy(t, html, len);
    t[len] = 0;
    free(x->tail);
    x->tail = t;
    x->tail_len = len;
    ans_send(x, "tail", NULL, html, len);
}

static void ans_free(ans *x) {
    if (!x) return;
    for (int i = 0; i < x->n_ls; i++) http_stream_close(x->ls[i]);
    free(x->ls);
    for (size_t i = 0; i < x->n_log; i++) free(x->log[i].data);
    free(x->log);
    free(x->tail);
    md_stream_free(x->md);
    core_buf_free(&x->in_ans);
    core_buf_free(&x->in_reas);
    core_buf_free(&x->answer);
    core_buf_free(&x->reasoning);
    free(x);
}

static ans *ans_find(ui *u, int64_t msg) {
    for (ans *x = u->list; x; x = x->next)
        if (x->msg == msg) return x;
    return NULL;
}

/* A running (not yet finished) model answer in conv, or NULL. */
static ans *ans_busy(ui *u, const char *conv) {
    for (ans *x = u->list; x; x = x->next)
        if (x->kind == ANS_MODEL && !x->finished && !strcmp(x->conv, conv)) return x;
    return NULL;
}

/* ---- engine callback (engine thread) ------------------------------------ */

static int on_engine(void *ctx, const engine_event *ev) {
    ans *x = ctx; /* lives until the ticker has seen got_done */
    ui *u = x->u;
    pthread_mutex_lock(&u->mu);
    int cancel = x->cancel_asked;
    switch (ev->type) {
    case ENGINE_EV_TEXT:
        if (ev->text_len) core_buf_append(&x->in_ans, ev->text, ev->text_len);
        if (ev->reasoning_len) {
            core_buf_append(&x->in_reas, ev->reasoning, ev->reasoning_len);
            x->reas_events++;
        }
        break;
    case ENGINE_EV_DONE:
    case ENGINE_EV_ERROR:
        if (ev->stats) x->st = *ev->stats;
        snprintf(x->finish, sizeof x->finish, "%s",
                 ev->type == ENGINE_EV_ERROR ? "error" : (ev->stats && ev->stats->finish_reason ? ev->stats->finish_reason : "stop"));
        x->st.finish_reason = NULL; /* points into the engine; we keep our copy */
        if (ev->type == ENGINE_EV_ERROR) {
            x->got_error = 1;
            snprintf(x->errmsg, sizeof x->errmsg, "%s", ev->error ? ev->error : "generation failed");
        }
        x->got_done = 1;
        pthread_cond_signal(&u->cv);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&u->mu);
    return cancel;
}

static ans *ans_new(ui *u, int kind) {
    ans *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->u = u;
    x->kind = kind;
    x->md = md_stream_new();
    if (!x->md) {
        free(x);
        return NULL;
    }
    x->t_start = core_now_s();
    x->t_alone = x->t_start;
    return x;
}

/* ---- ticker ------------------------------------------------------------ */

static void stats_line(core_buf *b, const ans *x, double now) {
    const engine_stats *s = &x->st;
    if (x->kind == ANS_QUOTE) {
        core_buf_printf(b, "quote · %zu bytes · %.1f s", x->answer.len, now - x->t_start);
        return;
    }
    if (s->ttft_ms > 0) core_buf_printf(b, "TTFT %.0f ms · ", s->ttft_ms);
    core_buf_printf(b, "%.1f tok/s · %d tokens", s->decode_tok_s, s->gen_tokens);
    if (!strcmp(x->finish, "cancelled")) core_buf_puts(b, " · stopped");
    else if (!strcmp(x->finish, "length")) core_buf_puts(b, " · length limit");
    else if (!strcmp(x->finish, "error")) core_buf_puts(b, " · error");
    core_buf_printf(b, "<span class=\"ctx\" data-ctx-used=\"%d\" data-ctx-max=\"%d\"></span>", s->ctx_used, s->ctx_size);
}

static void think_meta(core_buf *b, int tokens, double secs) {
    core_buf_printf(b, "%d tokens · %.1f s", tokens, secs);
}

/* Save the answer so far (or the final one) to the store. Ticker thread,
 * without ui mu (store calls may take a while). */
static int ans_save(api *a, ans *x, const engine_stats *st, int status, const char *finish, core_err *err) {
    if (x->kind != ANS_MODEL || !a->st) return 0;
    store_msg m = {0};
    snprintf(m.role, sizeof m.role, "assistant");
    m.content = x->answer.data ? x->answer.data : "";
    m.reasoning = x->reasoning.data ? x->reasoning.data : "";
    m.status = status;
    snprintf(m.finish, sizeof m.finish, "%s", finish ? finish : "");
    m.prompt_tokens = st->prompt_tokens;
    m.completion_tokens = st->gen_tokens;
    m.prefill_ms = st->prefill_ms;
    m.gen_ms = st->decode_ms;
    int rc = store_update(a->st, x->msg, &m, err);
    if (rc) core_log(1, "ui: saving message %lld: %s", (long long)x->msg, err->msg);
    return rc;
}

/* One tick of one ans. Called with ui mu held; may drop and retake it
 * around store writes. Returns 1 when the ans may be freed. */
static int ans_tick(api *a, ui *u, ans *x, double now) {
    if (x->finished) {
        ans_alone_check(x, now);
        return now - x->t_finished > ANS_KEEP_S;
    }
    /* the quote feeds itself a word at a time */
    if (x->kind == ANS_QUOTE) {
        size_t n = sizeof QUOTE - 1;
        while (x->quote_pos < n && now >= x->quote_next) {
            size_t e = x->quote_pos;
            while (e < n && QUOTE[e] == ' ') e++;
            while (e < n && QUOTE[e] != ' ') e++;
            core_buf_append(&x->in_ans, QUOTE + x->quote_pos, e - x->quote_pos);
            x->quote_pos = e;
            x->quote_next += QUOTE_WORD_MS / 1e3;
        }
        if (x->quote_pos >= n) {
            x->got_done = 1;
            snprintf(x->finish, sizeof x->finish, "stop");
        }
    }
    /* reasoning */
    if (x->in_reas.len) {
        core_buf e = {0};
        md_escape_html(x->in_reas.data, x->in_reas.len, &e);
        core_buf_append(&x->reasoning, x->in_reas.data, x->in_reas.len);
        core_buf_clear(&x->in_reas);
        if (e.len) ans_log(x, "think", e.data, e.len);
        core_buf_free(&e);
    }
    /* answer */
    core_buf blocks = {0}, tail = {0};
    if (x->in_ans.len) {
        if (x->reasoning.len && !x->thought_sent) { /* thinking ended: the answer started */
            x->thought_sent = 1;
            x->t_think_end = now;
            core_buf m = {0};
            think_meta(&m, x->reas_events, now - x->t_start);
            ans_log(x, "thought", m.data, m.len);
            core_buf_free(&m);
        }
        md_stream_push(x->md, x->in_ans.data, x->in_ans.len, &blocks);
        core_buf_append(&x->answer, x->in_ans.data, x->in_ans.len);
        core_buf_clear(&x->in_ans);
        if (blocks.len) ans_log(x, "block", blocks.data, blocks.len);
        if (!x->got_done) {
            md_stream_tail(x->md, &tail);
            ans_set_tail(x, tail.data ? tail.data : "", tail.len);
        }
    }
    core_buf_free(&blocks);
    core_buf_free(&tail);

    if (x->got_done) {
        core_buf last = {0}, st = {0};
        md_stream_finish(x->md, &last);
        if (last.len) ans_log(x, "block", last.data, last.len);
        ans_set_tail(x, "", 0);
        if (x->reasoning.len) {
            core_buf m = {0};
            think_meta(&m, x->st.reasoning_tokens ? x->st.reasoning_tokens : x->reas_events,
                       (x->t_think_end ? x->t_think_end : now) - x->t_start);
            ans_log(x, "thought", m.data, m.len);
            core_buf_free(&m);
        }
        if (x->got_error) {
            core_buf e = {0};
            esc(&e, x->errmsg);
            ans_log(x, "error", e.data, e.len);
            core_buf_free(&e);
        }
        stats_line(&st, x, now);
        ans_log(x, "stats", st.data, st.len);
        core_buf_free(&last);
        core_buf_free(&st);
        /* the store is final before "done" reaches anyone, so a page that
         * reloads right after sees the finished message */
        int status = (!strcmp(x->finish, "stop") || !strcmp(x->finish, "length")) ? STORE_MSG_DONE : STORE_MSG_PARTIAL;
        char fin[16];
        snprintf(fin, sizeof fin, "%s", x->finish);
        engine_stats snap = x->st; /* final: the engine writes it no more */
        pthread_mutex_unlock(&u->mu);
        core_err serr = {0};
        int unsaved = ans_save(a, x, &snap, status, fin, &serr);
        if (x->kind == ANS_MODEL) {
            if (x->st.ttft_ms > 0) api_hist_add(a, &a->ttft_ms, api_ttft_bounds, x->st.ttft_ms);
            if (x->st.decode_tok_s > 0) api_hist_add(a, &a->tok_s, api_toks_bounds, x->st.decode_tok_s);
        }
        pthread_mutex_lock(&u->mu);
        if (unsaved) { /* the text shown is all there is: say it will not be there after a reload */
            core_buf m = {0}, e = {0};
            core_buf_printf(&m, "%s%sThis answer was not saved: %s", x->got_error ? x->errmsg : "",
                            x->got_error ? " · " : "", serr.msg);
            esc(&e, m.data);
            ans_log(x, "error", e.data, e.len);
            core_buf_free(&m);
            core_buf_free(&e);
        }
        ans_log(x, "done", "", 0);
        for (int i = 0; i < x->n_ls; i++) http_stream_close(x->ls[i]);
        x->n_ls = 0;
        x->finished = 1;
        x->t_finished = now;
        return 0;
    }

    /* a client that went away: keep generating for a grace period */
    ans_alone_check(x, now);
    if (x->kind == ANS_MODEL && x->n_ls == 0 && now - x->t_alone > ANS_GRACE_S && !x->cancel_asked) {
        x->cancel_asked = 1;
        if (x->has_req) engine_cancel(a->eng, x->req_id);
    }
    if (x->kind == ANS_QUOTE && x->n_ls == 0 && now - x->t_alone > 5) { /* nobody wants the quote */
        x->got_done = 1;
        snprintf(x->finish, sizeof x->finish, "cancelled");
    }
    if (x->kind == ANS_MODEL && now - x->t_saved > ANS_SAVE_S && x->answer.len + x->reasoning.len) {
        x->t_saved = now;
        engine_stats none = {0}; /* x->st belongs to the engine thread until DONE */
        pthread_mutex_unlock(&u->mu);
        core_err serr = {0};
        ans_save(a, x, &none, STORE_MSG_STREAMING, "", &serr);
        pthread_mutex_lock(&u->mu);
    }
    return 0;
}

static void *ticker(void *arg) {
    api *a = arg;
    ui *u = a->ui;
    pthread_mutex_lock(&u->mu);
    while (!u->stop) {
        double now = core_now_s();
        /* Walk the list; ans_tick may drop the lock, but only this thread
         * removes entries, so pointers stay valid; new ones go to the head. */
        ans **pp = &u->list;
        int live = 0;
        while (*pp) {
            ans *x = *pp;
            live |= !x->finished;
            if (ans_tick(a, u, x, now)) {
                /* re-find the link: entries may have been added at the head */
                pp = &u->list;
                while (*pp != x) pp = &(*pp)->next;
                *pp = x->next;
                ans_free(x);
                continue;
            }
            pp = &x->next;
        }
        for (ans *x = u->list; x; x = x->next) live |= !x->finished; /* some may have come meanwhile */
        if (!u->list) {
            pthread_cond_wait(&u->cv, &u->mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            /* finished answers only wait to expire: no need to tick fast */
            ts.tv_nsec += (live ? ANS_TICK_MS : 500) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&u->cv, &u->mu, &ts);
        }
    }
    pthread_mutex_unlock(&u->mu);
    return NULL;
}

static void ui_add(ui *u, ans *x) {
    x->next = u->list;
    u->list = x;
    pthread_cond_signal(&u->cv);
}

int api_ui_init(api *a, core_err *err) {
    ui *u = calloc(1, sizeof *u);
    if (!u) return core_errf(err, CORE_ENOMEM, "out of memory");
    pthread_mutex_init(&u->mu, NULL);
    pthread_cond_init(&u->cv, NULL);
    a->ui = u;
    if (pthread_create(&u->thr, NULL, ticker, a)) {
        a->ui = NULL;
        pthread_cond_destroy(&u->cv);
        pthread_mutex_destroy(&u->mu);
        free(u);
        return core_errf(err, CORE_EIO, "cannot start the ui thread");
    }
    u->thr_started = 1;
    return 0;
}

/* Order-independent with engine_free: running answers are cancelled and
 * awaited (their DONE comes from the engine thread; if the engine was freed
 * first, every answer already got its DONE). */
void api_ui_free(api *a) {
    ui *u = a ? a->ui : NULL;
    if (!u) return;
    pthread_mutex_lock(&u->mu);
    for (ans *x = u->list; x; x = x->next)
        if (x->kind == ANS_MODEL && !x->got_done && x->has_req) {
            x->cancel_asked = 1;
            engine_cancel(a->eng, x->req_id);
        }
    /* let the ticker finish them (stores the partial text), up to 10 s */
    double t0 = core_now_s();
    for (;;) {
        int pending = 0;
        for (ans *x = u->list; x; x = x->next)
            if (x->kind == ANS_MODEL && !x->finished && x->has_req) pending = 1;
        if (!pending || core_now_s() - t0 > 10) break;
        pthread_mutex_unlock(&u->mu);
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&u->mu);
    }
    u->stop = 1;
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
    if (u->thr_started) pthread_join(u->thr, NULL);
    while (u->list) {
        ans *x = u->list;
        u->list = x->next;
        if (x->kind == ANS_MODEL && !x->got_done && x->has_req)
            core_log(1, "ui: an answer never finished; leaking it rather than freeing memory the engine may use");
        else ans_free(x);
    }
    pthread_cond_destroy(&u->cv);
    pthread_mutex_destroy(&u->mu);
    free(u);
    a->ui = NULL;
}

/* ---- SSE GET ------------------------------------------------------------ */

/* Replay the log after last_id and the current tail, then follow (or end).
 * Caller holds ui mu. */
static int ans_attach(ans *x, http_req *r, core_err *err) {
    http_stream *s = http_respond_stream(r, 200, "text/event-stream", NULL, err);
    if (!s) return 1;
    uint64_t last = 0;
    const char *lid = http_req_header(r, "Last-Event-ID");
    if (lid) last = strtoull(lid, NULL, 10);
    char id[24];
    for (size_t i = (size_t)(last < x->n_log ? last : x->n_log); i < x->n_log; i++) {
        snprintf(id, sizeof id, "%zu", i + 1);
        if (!x->finished || strcmp(x->log[i].name, "done")) /* tail first, done last */
            http_stream_event(s, x->log[i].name, id, x->log[i].data, x->log[i].len);
    }
    if (x->tail_len) http_stream_event(s, "tail", NULL, x->tail, x->tail_len);
    if (x->finished) {
        snprintf(id, sizeof id, "%zu", x->n_log);
        http_stream_event(s, "done", id, "", 0);
        http_stream_close(s);
        return 0;
    }
    if (x->n_ls == x->cap_ls) {
        int nc = x->cap_ls ? x->cap_ls * 2 : 4;
        http_stream **nl = realloc(x->ls, (size_t)nc * sizeof *nl);
        if (!nl) {
            http_stream_close(s);
            return 0;
        }
        x->ls = nl;
        x->cap_ls = nc;
    }
    x->ls[x->n_ls++] = s;
    x->t_alone = 0;
    return 0;
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
    core_buf_printf(b, "<div class=\"msg-foot\"><span class=\"stats\"%s>", streaming ? " sse-swap=\"stats\"" : "");
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
        ui *u = a->ui;
        pthread_mutex_lock(&u->mu);
        ans *x = ans_find(u, m->id);
        int live = x && !x->finished;
        pthread_mutex_unlock(&u->mu);
        render_assistant(b, conv, m, live);
    }
}

static int ctx_max(api *a) {
    int n = engine_ctx_size(a->eng);
    return n > 0 ? n : 0;
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
    core_buf_printf(b, "\" data-ctx-used=\"%d\" data-ctx-max=\"%d\" data-thinking=\"%d\">\n", used, ctx_max(a), c->thinking);
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

static int route_status(api *a, http_req *r) {
    int st = engine_state(a->eng);
    const char *s = st == ENGINE_READY ? "ready" : st == ENGINE_LOADING ? "loading" : "no_model";
    engine_metrics m;
    engine_get_metrics(a->eng, &m);
    const model_config *mc = engine_model_config(a->eng);
    ui *u = a->ui;
    int live = 0, busy = 0;
    pthread_mutex_lock(&u->mu);
    for (ans *x = u->list; x; x = x->next)
        if (!x->finished) {
            live++;
            if (x->kind == ANS_MODEL) busy = 1;
        }
    pthread_mutex_unlock(&u->mu);
    json_t *o = json_pack("{s:s, s:s, s:i, s:b, s:b, s:s, s:s, s:s, s:f, s:f, s:i, s:i, s:i, s:f, s:f, s:I, s:I, s:i}", "state", s,
                          "model", st == ENGINE_READY || st == ENGINE_LOADING ? a->model_name : "SmolLM3-3B", "ctx_max", ctx_max(a), "thinking_default", 1, "busy", busy, "pull_hint",
                          "smolbot pull", "state_message", engine_state_message(a->eng), "model_file", engine_model_path(a->eng),
                          "uptime_s", core_now_s() - a->t_start, "rss_mb", (double)core_rss() / (1024.0 * 1024.0), "streams", live,
                          "queued", m.queued, "active", m.active, "tok_s", m.last_decode_tok_s, "ttft_ms", m.last_ttft_ms,
                          "requests", (json_int_t)m.requests, "gen_tokens", (json_int_t)m.gen_tokens, "threads",
                          engine_threads(a->eng));
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
static int start_answer(api *a, const store_conv *c, int64_t upto, int64_t asst, int cont, core_err *err) {
    store_msg *ms = NULL;
    int n = 0, rc = store_branch(a->st, c->id, upto, &ms, &n, err);
    if (rc) return rc;
    chat_msg *cm = calloc((size_t)n + 1, sizeof *cm);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int mode = 0;
    ans *x = NULL;
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
    rc = api_build_prompt(a, cm, k, c->thinking, c->pinned_date, !cont, &ids, &n_ids, &mode, NULL, err);
    if (rc) goto out;
    if (cont) { /* end right after the answer's text: drop its <|im_end|> and what follows */
        const tok *tk = engine_tok(a->eng);
        int32_t im_end = tk ? tok_specials(tk)->im_end : -1;
        size_t i = n_ids;
        while (i > 0 && ids[i - 1] != im_end) i--;
        if (i > 0) n_ids = i - 1;
        mode = 0;
    }
    x = ans_new(a->ui, ANS_MODEL);
    if (!x) {
        rc = core_errf(err, CORE_ENOMEM, "out of memory");
        goto out;
    }
    x->msg = asst;
    snprintf(x->conv, sizeof x->conv, "%s", c->id);
    if (cont && n > 0) { /* the existing answer is replayed first */
        const store_msg *last = &ms[n - 1];
        const char *t = last->content ? last->content : "";
        core_buf_puts(&x->in_ans, t);
        if (last->reasoning && *last->reasoning) core_buf_puts(&x->in_reas, last->reasoning);
    }
    engine_request rq = {0};
    rq.conv_id = c->id;
    rq.prompt = ids;
    rq.n_prompt = n_ids;
    sample_params_default(&rq.sampling);
    rq.sampling.temperature = (float)c->temperature;
    rq.sampling.top_p = (float)c->top_p;
    rq.sampling.top_k = c->top_k;
    rq.sampling.min_p = (float)c->min_p;
    rq.sampling.seed = core_now_ns() ^ (uint64_t)asst * 0x9E3779B97F4A7C15ull;
    rq.max_tokens = c->max_tokens;
    if (a->cfg.max_tokens > 0 && (rq.max_tokens == 0 || rq.max_tokens > a->cfg.max_tokens)) rq.max_tokens = a->cfg.max_tokens;
    int room = engine_ctx_size(a->eng) - (int)n_ids;
    if (rq.max_tokens == 0 || rq.max_tokens > room) rq.max_tokens = room > 0 ? room : 1;
    rq.thinking = mode;
    rq.cb = on_engine;
    rq.ctx = x;
    ui *u = a->ui;
    pthread_mutex_lock(&u->mu);
    ui_add(u, x);
    pthread_mutex_unlock(&u->mu);
    uint64_t req = 0;
    rc = engine_submit(a->eng, &rq, &req, err);
    pthread_mutex_lock(&u->mu);
    if (rc) { /* never reached the engine: finish it as an error now */
        x->got_done = x->got_error = 1;
        snprintf(x->finish, sizeof x->finish, "error");
        snprintf(x->errmsg, sizeof x->errmsg, "%.200s", err->msg);
    } else {
        x->req_id = req;
        x->has_req = 1;
        if (x->cancel_asked) engine_cancel(a->eng, req);
    }
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
    x = NULL;
out:
    free(ids);
    free(cm);
    store_msgs_free(ms, n);
    return rc;
}

static int model_ready_or_503(api *a, http_req *r) {
    int st = engine_state(a->eng);
    if (st == ENGINE_READY) return 0;
    if (st == ENGINE_LOADING) http_respond_text(r, 503, "The model is still loading; try again in a moment.");
    else http_respond_text(r, 503, "No model loaded: run \"smolbot pull\", then restart \"smolbot serve\".");
    return 1;
}

static int busy_409(api *a, http_req *r, const char *conv) {
    ui *u = a->ui;
    pthread_mutex_lock(&u->mu);
    int busy = ans_busy(u, conv) != NULL;
    pthread_mutex_unlock(&u->mu);
    if (busy) http_respond_text(r, 409, "An answer is still being generated: stop it first.");
    return busy;
}

static int64_t append_msg(api *a, const char *conv, int64_t parent, const char *role, const char *content, int status,
                          core_err *err) {
    store_msg m = {0};
    m.parent = parent;
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
    int64_t uid = append_msg(a, c->id, parent, "user", text, STORE_MSG_DONE, &err);
    free(text);
    if (!uid) return store_fail(r, &err, err.code ? err.code : CORE_EIO); /* disk full is a 500, not the client's fault */
    int64_t aid = append_msg(a, c->id, uid, "assistant", "", STORE_MSG_STREAMING, &err);
    if (!aid) return store_fail(r, &err, err.code ? err.code : CORE_EIO);
    int rc = start_answer(a, c, uid, aid, 0, &err);
    if (rc) {
        mark_failed(a, aid, err.msg);
        return http_respond_text(r, rc == CORE_ERANGE ? 413 : rc == CORE_EFULL ? 503 : 500, err.msg);
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
    if (!cont) {
        aid = append_msg(a, c->id, parent, "assistant", "", STORE_MSG_STREAMING, &err);
        if (!aid) return store_fail(r, &err, CORE_EIO);
    } else {
        store_msg m = {0};
        store_get_msg(a->st, last, &m, NULL);
        m.status = STORE_MSG_STREAMING;
        m.finish[0] = 0;
        store_update(a->st, last, &m, NULL);
        store_msg_clear(&m);
    }
    int rc = start_answer(a, c, cont ? last : parent, aid, cont, &err);
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
    ui *u = a->ui;
    core_err err = {0};
    pthread_mutex_lock(&u->mu);
    ans *x = ans_find(u, msg);
    if (x && !strcmp(x->conv, c->id)) {
        int rc = ans_attach(x, r, &err);
        pthread_mutex_unlock(&u->mu);
        return rc ? http_respond_text(r, 500, err.msg) : 0;
    }
    pthread_mutex_unlock(&u->mu);
    return http_respond(r, 204, NULL, "", 0); /* finished long ago: EventSource stops */
}

static int route_quote(api *a, http_req *r) {
    ui *u = a->ui;
    ans *x = ans_new(u, ANS_QUOTE);
    if (!x) return http_respond_text(r, 500, "out of memory");
    core_err err = {0};
    pthread_mutex_lock(&u->mu);
    x->msg = --u->quote_serial;
    x->quote_next = core_now_s();
    if (ans_attach(x, r, &err)) {
        pthread_mutex_unlock(&u->mu);
        ans_free(x);
        return http_respond_text(r, 500, err.msg);
    }
    ui_add(u, x);
    pthread_mutex_unlock(&u->mu);
    return 0;
}

static int route_stop(api *a, http_req *r, const store_conv *c) {
    ui *u = a->ui;
    pthread_mutex_lock(&u->mu);
    for (ans *x = u->list; x; x = x->next)
        if (!x->finished && (x->kind == ANS_QUOTE || !strcmp(x->conv, c->id))) {
            x->cancel_asked = 1;
            if (x->has_req) engine_cancel(a->eng, x->req_id);
            if (x->kind == ANS_QUOTE) {
                x->got_done = 1;
                snprintf(x->finish, sizeof x->finish, "cancelled");
            }
        }
    pthread_cond_signal(&u->cv);
    pthread_mutex_unlock(&u->mu);
    return http_respond(r, 204, NULL, "", 0);
}

static void cancel_conv(api *a, const char *conv) {
    ui *u = a->ui;
    pthread_mutex_lock(&u->mu);
    for (ans *x = u->list; x; x = x->next)
        if (x->kind == ANS_MODEL && !x->finished && !strcmp(x->conv, conv)) {
            x->cancel_asked = 1;
            if (x->has_req) engine_cancel(a->eng, x->req_id);
        }
    pthread_mutex_unlock(&u->mu);
}

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

static int route_import(api *a, http_req *r) {
    if (!a->st) return no_store(r);
    size_t len;
    const char *body = http_req_body(r, &len);
    char id[STORE_ID_LEN + 1];
    core_err err = {0};
    int rc = store_import_json(a->st, body, len, id, &err);
    if (rc && rc != CORE_EFORMAT && rc != CORE_EINVAL && rc != CORE_ERANGE && rc != CORE_EUNSUP)
        return store_fail(r, &err, rc); /* the disk, not the file */
    if (rc) return http_respond_text(r, 400, err.msg[0] ? err.msg : "not a smolbot conversation export");
    store_conv c = {0};
    if ((rc = store_get(a->st, id, &c, &err))) return store_fail(r, &err, rc);
    rc = respond_conv(a, r, &c, 1);
    store_conv_clear(&c);
    return rc;
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
        engine_forget(a->eng, c.id);
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
        engine_forget(a->eng, c.id);
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
        engine_forget(a->eng, c.id);
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

/* ---- sign-in (only when the server has an API key) -----------------------
 * The page is as powerful as the API, so with --api-key it needs the key
 * too. The form at /login.html posts the key once; the answer is an
 * HttpOnly, SameSite=Strict cookie holding a random session value made at
 * start (the key itself never sits in the browser). Static assets stay
 * public: they hold no data. */

static int ct_equal(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    unsigned char d = na != nb;
    for (size_t i = 0; i < nb; i++) d |= (unsigned char)(a[i % (na ? na : 1)] ^ b[i]);
    return d == 0;
}

static int signed_in(api *a, http_req *r) {
    if (!a->cfg.api_key || !*a->cfg.api_key) return 1;
    const char *c = http_req_cookie(r, "smolbot_session");
    if (c && ct_equal(c, a->session)) return 1;
    return http_req_header(r, "Authorization") && http_check_bearer(r, a->cfg.api_key);
}

/* The value of field `name` in an application/x-www-form-urlencoded body, decoded into out. */
static int form_field(const char *body, size_t len, const char *name, char *out, size_t cap) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < len;) {
        size_t end = i;
        while (end < len && body[end] != '&') end++;
        if (end - i > nl && !strncmp(body + i, name, nl) && body[i + nl] == '=') {
            size_t o = 0;
            for (size_t k = i + nl + 1; k < end; k++) {
                int ch = (unsigned char)body[k];
                if (ch == '+') ch = ' ';
                else if (ch == '%' && k + 2 < end && isxdigit((unsigned char)body[k + 1]) &&
                         isxdigit((unsigned char)body[k + 2])) {
                    char hex[3] = {body[k + 1], body[k + 2], 0};
                    ch = (int)strtol(hex, NULL, 16);
                    k += 2;
                }
                if (o + 1 >= cap) return -1;
                out[o++] = (char)ch;
            }
            out[o] = 0;
            return 0;
        }
        i = end + 1;
    }
    return -1;
}

static void route_login(api *a, http_req *r) {
    size_t len;
    const char *body = http_req_body(r, &len);
    char key[512];
    if (form_field(body, len, "key", key, sizeof key) || !ct_equal(key, a->cfg.api_key)) {
        static const char bad[] = "<!doctype html><meta charset=utf-8><title>smolbot</title>"
                                  "<link rel=stylesheet href=/app.css><body class=login><main class=login-card>"
                                  "<h1>smolbot</h1><p>That is not the key.</p><p><a href=/>Try again</a></p></main>";
        http_respond(r, 401, "text/html; charset=utf-8", bad, sizeof bad - 1);
        return;
    }
    char cookie[128];
    snprintf(cookie, sizeof cookie, "smolbot_session=%s; HttpOnly; SameSite=Strict; Path=/", a->session);
    http_req_add_header(r, "Set-Cookie", cookie);
    http_req_add_header(r, "Location", "/");
    http_respond(r, 303, "text/plain", "", 0);
}

int api_ui_route(api *a, http_req *r, core_err *err) {
    const char *p = http_req_path(r), *m = http_req_method(r);
    if (!signed_in(a, r)) {
        if (!strcmp(p, "/ui/login") && !strcmp(m, "POST")) return route_login(a, r), 1;
        if (!strcmp(p, "/") || !strcmp(p, "/index.html")) return http_respond_asset(r, "/login.html"), 1;
        if (!strncmp(p, "/ui/", 4)) return http_respond_text(r, 401, "sign in first: this server needs its API key"), 1;
    }
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
