/* test_api_calls.c -- the model's tool calls as the API answers them
 * (src/api/req.c): api_tool_call on the bodies both families write, and
 * api_split_calls on whole answers in the <tool_call> form and in Llama's
 * bare JSON form, hostile inputs included (cut-off JSON, braces in
 * strings, <|python_tag|>, arguments as a string or as an object, extra
 * keys). The shapes are OpenAI's (arguments a string) and Ollama's
 * (arguments an object). No model, no server: the parsers alone.
 */
#include "t.h"

#include <string.h>

#include "api/api_int.h"

/* OpenAI's arguments text of a call (NULL when not a call). */
static char *args_of(const char *body) {
    json_t *c = api_tool_call(body, strlen(body), 0);
    const char *a = json_string_value(json_object_get(json_object_get(c, "function"), "arguments"));
    char *r = a ? strdup(a) : NULL;
    json_decref(c);
    return r;
}

static void test_tool_call(void) {
    static const struct {
        const char *body, *args; /* args NULL: not a call */
    } cases[] = {
        {"\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n", "{\"a\": 1}"},
        {"{\"name\": \"f\", \"parameters\": {\"a\": \"}{\"}}", "{\"a\": \"}{\"}"},
        {"{\"type\": \"function\", \"name\": \"f\", \"parameters\": {}}", "{}"},
        {"{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": [1, 2]}\"}", "{\"a\":[1,2]}"}, /* a string holding an object */
        {"{\"name\": \"f\", \"arguments\": \"not json\"}", NULL},
        {"{\"name\": \"f\", \"arguments\": \"[1]\"}", NULL},
        {"{\"name\": \"f\", \"parameters\": [1]}", NULL},
        {"{\"name\": \"f\", \"parameters\": {}, \"extra\": 1}", NULL},
        {"{\"type\": \"tool\", \"name\": \"f\", \"parameters\": {}}", NULL},
        {"{\"name\": \"\", \"parameters\": {}}", NULL},
        {"{\"name\": 3, \"parameters\": {}}", NULL},
        {"{\"name\": \"f\", \"parameters\": {\"a\": 1}", NULL}, /* cut off */
        {"{\"name\": \"f\"}", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *a = args_of(cases[i].body);
        if (cases[i].args) CHECK_MSG(a && !strcmp(a, cases[i].args), "%zu: [%s]", i, a ? a : "(none)");
        else CHECK_MSG(!a, "%zu: a call [%s]", i, a);
        free(a);
    }
    /* Ollama's: the arguments as an object, from a string too */
    static const char s[] = "{\"name\": \"f\", \"arguments\": \"{\\\"n\\\": 2}\"}";
    json_t *c = api_tool_call(s, sizeof s - 1, 1);
    json_t *args = json_object_get(json_object_get(c, "function"), "arguments");
    CHECK(json_is_object(args) && json_integer_value(json_object_get(args, "n")) == 2);
    json_decref(c);
}

/* An answer split into content and call names, in form. */
static void split(const char *text, int form, core_buf *content, char *names, size_t cap) {
    json_t *calls = json_array();
    core_buf_clear(content);
    CHECK(api_split_calls(text, strlen(text), 0, form, content, calls) == 0);
    names[0] = 0;
    for (size_t i = 0; i < json_array_size(calls); i++) {
        json_t *f = json_object_get(json_array_get(calls, i), "function");
        const char *n = json_string_value(json_object_get(f, "name"));
        snprintf(names + strlen(names), cap - strlen(names), "%s;", n ? n : "?");
    }
    json_decref(calls);
}

static void test_split(void) {
    static const struct {
        const char *text;
        int form;
        const char *content, *names;
    } cases[] = {
        {"<|python_tag|>{\"name\": \"f\", \"parameters\": {\"q\": \"a;b\"}}", API_CALLS_JSON, "", "f;"},
        {"{\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"arguments\": {}}\n", API_CALLS_JSON, "", "f;g;"},
        {"{\"name\": \"f\", \"parameters\": {}}\nDone.", API_CALLS_JSON, "\nDone.", "f;"},
        {"{\"answer\": 42}", API_CALLS_JSON, "{\"answer\": 42}", ""},
        {"{\"name\": \"f\", \"parameters\": {\"a\": \"x", API_CALLS_JSON, "{\"name\": \"f\", \"parameters\": {\"a\": \"x", ""},
        {"Sure: {\"name\": \"f\", \"parameters\": {}}", API_CALLS_JSON, "Sure: {\"name\": \"f\", \"parameters\": {}}", ""},
        /* the tag form is text to a Llama file, and the bare form to SmolLM3 */
        {"<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", API_CALLS_JSON,
         "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", ""},
        {"<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", API_CALLS_TAGS, "", "f;"},
        {"{\"name\": \"f\", \"parameters\": {}}", API_CALLS_TAGS, "{\"name\": \"f\", \"parameters\": {}}", ""},
    };
    core_buf content = {0};
    char names[64];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        split(cases[i].text, cases[i].form, &content, names, sizeof names);
        size_t wl = strlen(cases[i].content);
        CHECK_MSG(content.len == wl && (!wl || !memcmp(content.data, cases[i].content, wl)) && !strcmp(names, cases[i].names),
                  "%zu: content [%.*s] calls [%s]", i, (int)content.len, content.data ? content.data : "", names);
    }
    core_buf_free(&content);
}

int main(void) {
    T_RUN(test_tool_call);
    T_RUN(test_split);
    return t_done();
}
