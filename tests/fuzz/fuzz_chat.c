/* fuzz_chat.c -- libFuzzer target: chat_render, the thinking parser and the
 * stop-string matcher on arbitrary bytes.
 *
 * Input layout: byte 0 holds flags (thinking, generation prompt, no_think
 * prefill, tools); the rest is split on 0x1e into messages, each message's
 * first byte picking its role (including invalid ones). The same bytes are
 * then fed to the thinking parser, the stop matcher and (as float logits)
 * the sampler in pieces whose sizes
 * come from the data (the tool-call parser in Llama's bare JSON form too),
 * and the outputs are checked for the invariants that
 * must hold whatever the input: the sampled id is in range, the stream parts are made of input bytes only
 * (never more of them), and no emitted text contains a stop string. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "sample/sample.h"

static int json_refuse(void *ctx, const char *body, size_t len, int complete) {
    (void)ctx, (void)body, (void)len, (void)complete;
    return CHAT_CALLS_REJECT;
}

static int json_take(void *ctx, const char *body, size_t len, int complete) {
    if (!complete || len < 2 || body[0] != '{' || body[len - 1] != '}') return CHAT_CALLS_REJECT;
    *(size_t *)ctx += len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t flags = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    static const char *const roles[] = {"system", "user", "assistant", "tool", "bogus"};
    chat_msg msgs[32];
    size_t n = 0, at = 0;
    while (at <= len && n < 32) {
        const char *p = memchr(text + at, 0x1e, len - at);
        size_t end = p ? (size_t)(p - text) : len;
        if (end > at) {
            msgs[n].role = roles[(unsigned char)text[at] % 5];
            msgs[n].content = text + at + 1;
            msgs[n].content_len = end - at - 1;
            n++;
        }
        at = end + 1;
    }
    chat_opts o;
    chat_opts_default(&o);
    o.enable_thinking = flags & 1;
    o.add_generation_prompt = (flags >> 1) & 1;
    o.date = "26 November 2026";
    o.xml_tools = (flags & 8) ? "{'name': 'f'}\n" : NULL;
    core_buf out = {0};
    core_err err;
    chat_render(msgs, n, &o, &out, &err);
    core_buf_free(&out);

    /* thinking parser: pieces of 1..16 bytes */
    core_buf r = {0}, a = {0};
    chat_think tp;
    chat_think_init(&tp, (flags >> 2) & 1);
    for (size_t i = 0; i < len;) {
        size_t k = 1 + ((unsigned char)text[i] & 15);
        if (k > len - i) k = len - i;
        chat_think_push(&tp, text + i, k, &r, &a);
        i += k;
    }
    chat_think_finish(&tp, &r, &a);
    if (r.len + a.len > len) abort();
    core_buf_free(&r);
    core_buf_free(&a);

    /* stop strings */
    static const char *const stops[] = {"<|im_end|>", "\n\nUser:", "aab"};
    sample_stop st;
    if (sample_stop_init(&st, stops, 3, NULL)) abort();
    core_buf e = {0};
    int stopped = 0;
    for (size_t i = 0; i < len && !stopped;) {
        size_t k = 1 + ((unsigned char)text[i] % 7);
        if (k > len - i) k = len - i;
        stopped = sample_stop_push(&st, text + i, k, &e) == 1;
        i += k;
    }
    sample_stop_flush(&st, &e);
    if (e.len > len) abort();
    for (size_t k = 0; k < 3; k++) /* stopped or not, no stop string is ever shown */
        if (e.len && memmem(e.data, e.len, stops[k], strlen(stops[k]))) abort();
    core_buf_free(&e);

    /* Llama's bare tool calls: with every object refused, the content is
     * the input byte for byte; with objects that close on '}' taken, the
     * content and the calls together are never more than the input */
    for (int take = 0; take < 2; take++) {
        chat_calls cp;
        chat_calls_init_json(&cp);
        core_buf c = {0};
        size_t got = 0;
        chat_calls_fn fn = take ? json_take : json_refuse;
        for (size_t i = 0; i < len;) {
            size_t k = 1 + ((unsigned char)text[i] % 11);
            if (k > len - i) k = len - i;
            chat_calls_push(&cp, text + i, k, &c, fn, &got);
            i += k;
        }
        chat_calls_finish(&cp, &c, fn, &got);
        if (!take && (c.len != len || (len && memcmp(c.data, text, len)))) abort();
        if (c.len + got > len) abort();
        core_buf_free(&c);
        chat_calls_free(&cp);
    }

    /* sampler: the bytes as float logits (NaN, inf, huge values included) */
    size_t nv = len / 4 > 256 ? 256 : len / 4;
    if (nv) {
        float lg[256];
        memcpy(lg, text, nv * 4);
        sample_params sp;
        sample_params_default(&sp);
        sp.temperature = (flags & 16) ? 0.0f : 0.05f + (float)(flags >> 5) * 0.4f;
        sp.top_k = (flags & 32) ? 3 : 0;
        sp.top_p = (flags & 64) ? 1.0f : 0.5f;
        sp.min_p = (flags & 128) ? 0.1f : 0.0f;
        sp.repeat_penalty = 1.3f;
        sp.frequency_penalty = 0.5f;
        sampler *sm = sample_new(&sp, (int32_t)nv);
        if (sm) {
            int32_t recent[8];
            for (int i = 0; i < 8; i++) recent[i] = (int32_t)((unsigned char)text[i % len]) - 8;
            int32_t id = sample_next(sm, lg, recent, 8);
            if (id < 0 || (size_t)id >= nv) abort();
            sample_free(sm);
        }
    }
    return 0;
}
