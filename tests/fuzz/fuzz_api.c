/* fuzz_api.c -- libFuzzer target: the JSON request parsers of the server.
 *
 * Byte 0 picks the endpoint, the rest is the request body:
 *   0  POST /v1/chat/completions   (every field, messages, thinking)
 *   1  POST /apply-template        (messages, thinking, add_generation_prompt)
 *   2  POST /ui/import             (store_import_json into an in-memory store)
 *   3  POST /api/chat              (Ollama: options, think, messages, format, tools, refusals)
 *   4  POST /api/generate          (Ollama: prompt, system, raw)
 * All but 2 run api_parse_request() / api_ollama_parse_request(), the routes' own parsing code with
 * the 4xx answer formatted and dropped (no server, no model: max_tokens is
 * capped by the config so the engine is never asked). Whatever the bytes,
 * nothing may crash, leak or trip a sanitizer; an import that is accepted
 * must be readable back (store_get, then deleted so the store stays small). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "store/store.h"

static store *st;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    api_config cfg = {0};
    cfg.max_messages = 64;
    cfg.max_tokens = 4096;
    switch (data[0] % 5) {
    case 0: api_parse_request(&cfg, API_PARSE_CHAT, body, len); break;
    case 1: api_parse_request(&cfg, API_PARSE_TEMPLATE, body, len); break;
    case 3: api_ollama_parse_request(&cfg, 1, body, len); break;
    case 4: api_ollama_parse_request(&cfg, 0, body, len); break;
    default: {
        core_err err = {0};
        if (!st && store_open(&st, ":memory:", &err)) abort();
        char id[STORE_ID_LEN + 1];
        if (store_import_json(st, body, len, id, &err) == 0) {
            store_conv c = {0};
            if (store_get(st, id, &c, &err)) abort();
            store_conv_clear(&c);
            if (store_delete(st, id, &err)) abort();
        }
    }
    }
    return 0;
}
