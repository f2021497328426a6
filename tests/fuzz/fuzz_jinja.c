/* fuzz_jinja.c -- libFuzzer target: jinja_compile and jinja_render on
 * arbitrary templates and contexts.
 *
 * Input layout: the template, then optionally a 0x1f byte and a JSON object
 * used as the render's data (a fixed conversation when absent or invalid,
 * so the real templates of the seed corpus walk their message loops).
 * Budgets are small so that a hostile input ends quickly; whatever the
 * input, a render ends in 0 or an error code with a message, never a
 * crash, a leak or a hang, and the reported spans lie inside the output,
 * sorted and disjoint. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jinja/jinja.h"

static const char conv[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief. /no_think\"},"
    " {\"role\": \"user\", \"content\": \"<think>hi</think> <tool_response>x</tool_response>\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>\\nr\\n</think>\\n\\nok\","
    "  \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1}}}]},"
    " {\"role\": \"tool\", \"content\": \"42\"}, {\"role\": \"user\", \"content\": \"again\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *src = (const char *)data;
    const uint8_t *sep = memchr(data, 0x1f, size);
    size_t tlen = sep ? (size_t)(sep - data) : size;
    json_t *ctx = NULL;
    if (sep) ctx = json_loadb((const char *)sep + 1, size - tlen - 1, JSON_DECODE_ANY, NULL);
    if (!json_is_object(ctx)) {
        json_decref(ctx);
        ctx = json_loads(conv, 0, NULL);
    }
    json_t *trusted = json_pack("{s:s,s:b,s:b}", "bos_token", "<|begin_of_text|>", "add_generation_prompt", 1,
                                "enable_thinking", (int)(size & 1));
    jinja_tmpl *t = NULL;
    core_err err;
    if (jinja_compile(src, tlen, &t, &err) == 0) {
        jinja_limits lim = {.max_steps = 200000, .max_output = 1 << 20, .max_memory = 32 << 20, .max_depth = 32};
        core_buf out = {0};
        jinja_spans sp = {0};
        int rc = jinja_render(t, ctx, trusted, 1, &lim, &out, &sp, &err);
        if (rc == 0) {
            size_t end = 0;
            for (size_t i = 0; i < sp.n; i++) {
                if (sp.v[i].off < end || sp.v[i].off + sp.v[i].len > out.len || !sp.v[i].len) abort();
                end = sp.v[i].off + sp.v[i].len;
            }
        } else if (!err.msg[0]) {
            abort();
        }
        free(sp.v);
        core_buf_free(&out);
        jinja_free(t);
    } else if (t || !err.msg[0]) {
        abort();
    }
    json_decref(ctx);
    json_decref(trusted);
    return 0;
}
