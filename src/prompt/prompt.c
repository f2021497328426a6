/* prompt.c -- messages -> token ids: render (src/chat), then a masked
 * tokenization (src/tok) in two calls, the system block and the rest.
 *
 * Why two calls give the same ids as one: the system block ends with
 * "<|im_end|>\n" and what follows starts with "<|im_start|>" (or nothing),
 * and special tokens cut the text into fragments before any BPE runs, so no
 * token can straddle that boundary. The count after the first call is
 * therefore exactly the number of ids the block takes (n_shared), with no
 * second tokenization and no search for a token id.
 *
 * The content spans of the render (chat_span) become tok_span, rebased for
 * the part they fall in; a span never crosses the boundary (the system
 * prompt's text lies inside the block, message texts after it).
 */
#include "prompt/prompt.h"

#include <stdlib.h>
#include <string.h>

void prompt_free(prompt *p) {
    if (!p) return;
    free(p->ids);
    core_buf_free(&p->text);
    memset(p, 0, sizeof *p);
}

/* Spans of [from, to) as tok_span relative to from, into v (room for n). */
static size_t spans_in(const chat_spans *sp, size_t from, size_t to, tok_span *v) {
    size_t k = 0;
    for (size_t i = 0; i < sp->n; i++)
        if (sp->v[i].off >= from && sp->v[i].off + sp->v[i].len <= to)
            v[k++] = (tok_span){sp->v[i].off - from, sp->v[i].len};
    return k;
}

int prompt_build(const tok *tk, const chat_msg *msgs, size_t n, const prompt_opts *o, prompt *p, core_err *err) {
    memset(p, 0, sizeof *p);
    if (!tk) return core_errf(err, CORE_EINVAL, "no tokenizer (the model is not loaded)");
    prompt_opts def = {.thinking = 1};
    if (!o) o = &def;
    chat_opts co;
    chat_opts_default(&co);
    co.enable_thinking = o->thinking;
    co.date = o->date;
    co.continue_final = o->cont;
    co.xml_tools = o->xml_tools;
    co.python_tools = o->python_tools;
    co.calls = o->calls;
    chat_spans sp = {0};
    tok_span *ts = NULL;
    int rc = chat_render_spans(msgs, n, &co, &p->text, &sp, err);
    if (rc) goto out;
    if (sp.n && !(ts = malloc(sp.n * sizeof *ts))) {
        rc = core_errf(err, CORE_ENOMEM, "out of memory");
        goto out;
    }
    const char *text = p->text.data ? p->text.data : "";
    size_t cut = sp.system_end <= p->text.len ? sp.system_end : 0;
    size_t k = spans_in(&sp, 0, cut, ts);
    rc = tok_encode_masked(tk, text, cut, 1, ts, k, &p->ids, &p->n_ids, &p->cap, err);
    if (rc) goto out;
    p->n_shared = p->n_ids;
    k = spans_in(&sp, cut, p->text.len, ts);
    rc = tok_encode_masked(tk, text + cut, p->text.len - cut, 1, ts, k, &p->ids, &p->n_ids, &p->cap, err);
    if (rc) goto out;
    /* a continued answer goes on in the answer: its reasoning, if any, is
     * not in the history the model sees */
    p->thinking = o->cont ? 0 : chat_mode_of(msgs, n, o->thinking);
out:
    free(ts);
    free(sp.v);
    return rc;
}
