/* prompt.c -- messages -> token ids: render (src/chat for SmolLM3, the
 * file's own template through src/jinja for other families), then a masked
 * tokenization (src/tok) in two calls, the system block and the rest.
 *
 * Why two calls give the same ids as one: the system block ends at a
 * special token ("<|im_end|>\n" before "<|im_start|>", "<|eot_id|>" before
 * "<|start_header_id|>"), and special tokens cut the text into fragments
 * before any BPE runs, so no token can straddle that boundary. The count
 * after the first call is therefore exactly the number of ids the block
 * takes (n_shared), with no second tokenization and no search for a token
 * id. A file template's block is only trusted when that boundary holds.
 *
 * The content spans of the render become tok_span, rebased for the part
 * they fall in and cut at the boundary, so no user byte ever escapes the
 * mask.
 *
 * File templates: the conversation goes in as JSON. Message texts and
 * tools are the render's `data` (tainted: masked), the flags and the
 * bos/eos token texts are `trusted`. Continuing an answer renders the last
 * message with a sentinel after its text and cuts the prompt there, so
 * whatever the template writes after a message (its end-of-turn token,
 * a newline) is left out, as transformers' continue_final_message does.
 */
#include "prompt/prompt.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "jinja/jinja.h"

void prompt_free(prompt *p) {
    if (!p) return;
    free(p->ids);
    core_buf_free(&p->text);
    memset(p, 0, sizeof *p);
}

/* A render: text (in the caller's buffer), user-text spans, the system block's end. */
typedef struct rendered {
    jinja_span *v;
    size_t n;
    size_t system_end;
    int thinking; /* the effective mode */
} rendered;

/* Spans of [from, to) as tok_span relative to from, cut to it, into v (room for n). */
static size_t spans_in(const rendered *sp, size_t from, size_t to, tok_span *v) {
    size_t k = 0;
    for (size_t i = 0; i < sp->n; i++) {
        size_t a = sp->v[i].off, b = a + sp->v[i].len;
        if (a < from) a = from;
        if (b > to) b = to;
        if (a < b) v[k++] = (tok_span){a - from, b - a};
    }
    return k;
}

int prompt_uses_file_template(const tok *tk) {
    size_t len;
    return tk && tok_chat_template(tk, &len) && len && strcmp(tok_arch(tk), "smollm3") != 0;
}

int prompt_calls_json(const tok *tk) {
    size_t len;
    const char *t = tk ? tok_chat_template(tk, &len) : NULL;
    static const char tag[] = "<tool_call>";
    return prompt_uses_file_template(tk) && !strcmp(tok_arch(tk), "llama") && !memmem(t, len, tag, sizeof tag - 1);
}

/* ---- SmolLM3: the native renderer ------------------------------------------ */

static int render_native(const chat_msg *msgs, size_t n, const prompt_opts *o, core_buf *out, rendered *r,
                         core_err *err) {
    chat_opts co;
    chat_opts_default(&co);
    co.enable_thinking = o->thinking;
    co.add_generation_prompt = !o->no_gen;
    co.date = o->date;
    co.continue_final = o->cont;
    co.xml_tools = o->xml_tools;
    co.python_tools = o->python_tools;
    co.calls = o->calls;
    chat_spans sp = {0};
    int rc = chat_render_spans(msgs, n, &co, out, &sp, err);
    if (!rc && sp.n && !(r->v = malloc(sp.n * sizeof *r->v))) rc = core_errf(err, CORE_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < sp.n; i++) r->v[i] = (jinja_span){sp.v[i].off, sp.v[i].len};
    if (!rc) r->n = sp.n;
    r->system_end = sp.system_end;
    r->thinking = o->cont ? 0 : chat_mode_of(msgs, n, o->thinking);
    free(sp.v);
    return rc;
}

/* ---- other families: the file's template ------------------------------------ */

/* no whitespace in it: templates trim message texts */
#define CONT_MARK "\x01\x02smolbot-continue\x02\x01"

/* A JSON string of text; invalid UTF-8 (the terminal can send it) becomes U+FFFD. */
static json_t *jtext(const char *p, size_t n) {
    json_t *s = json_stringn(p ? p : "", p ? n : 0);
    if (s) return s;
    core_buf b = {0};
    if (!core_utf8_sanitize(p, n, &b)) s = json_stringn(b.data ? b.data : "", b.len);
    core_buf_free(&b);
    return s;
}

/* The messages as the template sees them; the last one's text gets mark
 * appended (NULL: none). */
static json_t *messages_json(const chat_msg *msgs, size_t n, const prompt_opts *o, const char *mark) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *m = json_object();
        core_buf c = {0};
        if (core_buf_append(&c, msgs[i].content ? msgs[i].content : "", msgs[i].content ? msgs[i].content_len : 0) ||
            (mark && i + 1 == n && core_buf_puts(&c, mark))) {
            core_buf_free(&c);
            json_decref(m);
            json_decref(arr);
            return NULL;
        }
        json_object_set_new(m, "role", json_string(msgs[i].role ? msgs[i].role : ""));
        json_object_set_new(m, "content", jtext(c.data, c.len));
        core_buf_free(&c);
        const chat_msg_calls *mc = o->calls ? &o->calls[i] : NULL;
        if (mc && mc->n) {
            json_t *calls = json_array();
            for (size_t k = 0; k < mc->n; k++) {
                const chat_call *cc = &mc->v[k];
                /* templates print arguments with tojson (Llama) or as text (Qwen) */
                json_t *args = json_loadb(cc->arguments ? cc->arguments : "", cc->arguments_len, 0, NULL);
                if (!args) args = jtext(cc->arguments, cc->arguments_len);
                json_array_append_new(calls, json_pack("{s:s,s:{s:o,s:o}}", "type", "function", "function", "name",
                                                       jtext(cc->name, cc->name_len), "arguments", args));
            }
            json_object_set_new(m, "tool_calls", calls);
        }
        json_array_append_new(arr, m);
    }
    return arr;
}

/* Text of a special token ("" when the file has none). */
static json_t *token_text(const tok *tk, int32_t id) {
    size_t len = 0;
    const char *p = id >= 0 ? tok_piece(tk, id, &len) : NULL;
    return json_stringn(p ? p : "", p ? len : 0);
}

/* The date the template's strftime_now reads: o->date ("26 November 2026")
 * at noon local time, else now. */
static time_t pinned_time(const char *date) {
    static const char *const months[] = {"January", "February", "March", "April", "May", "June", "July",
                                         "August", "September", "October", "November", "December"};
    int d, y;
    char mon[16];
    if (date && sscanf(date, "%d %15s %d", &d, mon, &y) == 3)
        for (int m = 0; m < 12; m++)
            if (!strcmp(mon, months[m])) {
                struct tm tm = {.tm_year = y - 1900, .tm_mon = m, .tm_mday = d, .tm_hour = 12, .tm_isdst = -1};
                time_t t = mktime(&tm);
                if (t != (time_t)-1) return t;
            }
    return time(NULL);
}

/* A control token whose text starts at s (1) or ends at s[n] (at_end). */
static int control_at(const tok *tk, const char *s, size_t n, int at_end) {
    for (size_t k = 3; k <= 40 && k <= n; k++) {
        const char *p = at_end ? s + n - k : s;
        if (p[0] != '<' && !at_end) return 0;
        if ((at_end ? p[0] == '<' : p[k - 1] == '>')) {
            int32_t id = tok_find_n(tk, p, k);
            if (id >= 0 && tok_type(tk, id) == TOK_TYPE_CONTROL) return 1;
        }
    }
    return 0;
}

static int render_once(const jinja_tmpl *t, json_t *data, json_t *trusted, time_t now, core_buf *out,
                       jinja_spans *sp, core_err *err) {
    int rc = jinja_render(t, data, trusted, now, NULL, out, sp, err);
    if (rc == CORE_ENOMEM || !rc) return rc;
    char m[sizeof err->msg];
    snprintf(m, sizeof m, "%s", err->msg);
    return core_errf(err, rc, "the model's chat template failed: %s", m);
}

static int render_file(const tok *tk, const chat_msg *msgs, size_t n, const prompt_opts *o, core_buf *out,
                       rendered *r, core_err *err) {
    size_t tlen;
    const char *src = tok_chat_template(tk, &tlen);
    jinja_tmpl *t = NULL;
    core_err e2 = {0};
    if (jinja_compile(src, tlen, &t, &e2))
        return core_errf(err, CORE_EUNSUP, "the model's chat template cannot be used: %s", e2.msg);
    if (o->cont && (!n || !msgs[n - 1].role || strcmp(msgs[n - 1].role, "assistant")))
        return jinja_free(t), core_errf(err, CORE_EINVAL, "continuing needs an assistant message last");
    int rc = CORE_ENOMEM;
    json_t *data = json_object(), *trusted = json_object(), *tools = NULL;
    jinja_spans sp = {0};
    core_buf sys = {0};
    if (!data || !trusted) goto out;
    if (o->tools_json && *o->tools_json) {
        json_error_t je;
        if (!(tools = json_loads(o->tools_json, 0, &je)) || !json_is_array(tools)) {
            rc = core_errf(err, CORE_EINVAL, "tools: not a JSON array (%s)", tools ? "wrong type" : je.text);
            goto out;
        }
        json_object_set(data, "tools", tools);
    }
    const tok_special *ts = tok_specials(tk);
    json_object_set_new(trusted, "bos_token", token_text(tk, ts->bos));
    json_object_set_new(trusted, "eos_token", token_text(tk, ts->eos));
    json_object_set_new(trusted, "add_generation_prompt", json_boolean(!o->cont && !o->no_gen));
    json_object_set_new(trusted, "enable_thinking", json_boolean(o->thinking));
    time_t now = pinned_time(o->date);
    json_t *ms = messages_json(msgs, n, o, o->cont ? CONT_MARK : NULL);
    if (!ms) goto out;
    json_object_set_new(data, "messages", ms);
    size_t base = out->len;
    if ((rc = render_once(t, data, trusted, now, out, &sp, err))) goto out;
    if (o->cont) {
        char *at = out->data ? memmem(out->data + base, out->len - base, CONT_MARK, strlen(CONT_MARK)) : NULL;
        if (!at) {
            rc = core_errf(err, CORE_EUNSUP, "the model's chat template does not show the last message as written; "
                                             "cannot continue it");
            goto out;
        }
        out->len = (size_t)(at - out->data);
        out->data[out->len] = 0;
    }
    /* spans past the end (the cut) go; the rest become offsets from base */
    for (size_t i = 0; i < sp.n; i++) {
        size_t a = sp.v[i].off, b = a + sp.v[i].len;
        if (b > out->len) b = out->len;
        if (a < b) sp.v[r->n++] = (jinja_span){a, b - a};
    }
    r->v = sp.v;
    sp.v = NULL;
    /* the system block: the render of the system message alone, when the
     * prompt starts with it at a special token */
    r->system_end = base;
    int has_sys = n && msgs[0].role && !strcmp(msgs[0].role, "system");
    json_object_set_new(data, "messages", messages_json(msgs, has_sys ? 1 : 0, o, NULL));
    json_object_set_new(trusted, "add_generation_prompt", json_false());
    core_err e3 = {0};
    if (json_object_get(data, "messages") && !jinja_render(t, data, trusted, now, NULL, &sys, NULL, &e3) && sys.len &&
        base + sys.len <= out->len && !memcmp(out->data + base, sys.data, sys.len)) {
        const char *p = out->data + base;
        size_t rest = out->len - base - sys.len;
        if (!rest || control_at(tk, p + sys.len, rest, 0) || control_at(tk, p, sys.len, 1))
            r->system_end = base + sys.len;
    }
    r->thinking = !o->cont && o->thinking && strstr(src, "<think>") != NULL;
    rc = 0;
out:
    free(sp.v);
    core_buf_free(&sys);
    json_decref(tools);
    json_decref(data);
    json_decref(trusted);
    jinja_free(t);
    return rc;
}

static int render_any(const tok *tk, const chat_msg *msgs, size_t n, const prompt_opts *o, core_buf *out,
                      rendered *r, core_err *err) {
    if (prompt_uses_file_template(tk)) return render_file(tk, msgs, n, o, out, r, err);
    return render_native(msgs, n, o, out, r, err);
}

int prompt_render(const tok *tk, const chat_msg *msgs, size_t n, const prompt_opts *o, core_buf *out, core_err *err) {
    prompt_opts def = {.thinking = 1};
    rendered r = {0};
    int rc = render_any(tk, msgs, n, o ? o : &def, out, &r, err);
    free(r.v);
    return rc;
}

int prompt_build(const tok *tk, const chat_msg *msgs, size_t n, const prompt_opts *o, prompt *p, core_err *err) {
    memset(p, 0, sizeof *p);
    if (!tk) return core_errf(err, CORE_EINVAL, "no tokenizer (the model is not loaded)");
    prompt_opts def = {.thinking = 1};
    if (!o) o = &def;
    rendered r = {0};
    tok_span *ts = NULL;
    int rc = render_any(tk, msgs, n, o, &p->text, &r, err);
    if (rc) goto out;
    if (r.n && !(ts = malloc(r.n * sizeof *ts))) {
        rc = core_errf(err, CORE_ENOMEM, "out of memory");
        goto out;
    }
    const char *text = p->text.data ? p->text.data : "";
    size_t cut = r.system_end <= p->text.len ? r.system_end : 0;
    size_t k = spans_in(&r, 0, cut, ts);
    rc = tok_encode_masked(tk, text, cut, 1, ts, k, &p->ids, &p->n_ids, &p->cap, err);
    if (rc) goto out;
    p->n_shared = p->n_ids;
    k = spans_in(&r, cut, p->text.len, ts);
    rc = tok_encode_masked(tk, text + cut, p->text.len - cut, 1, ts, k, &p->ids, &p->n_ids, &p->cap, err);
    if (rc) goto out;
    /* a continued answer goes on in the answer: its reasoning, if any, is
     * not in the history the model sees */
    p->thinking = r.thinking;
out:
    free(ts);
    free(r.v);
    return rc;
}
