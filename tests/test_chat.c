/* test_chat.c -- the chat template against Jinja2 renders of the official
 * template (refdata/template), date formatting, and the thinking parser with
 * its input cut at every byte position. */
#include "t.h"

#include <jansson.h>
#include <time.h>

#include "chat/chat.h"

/* ---- template cases ------------------------------------------------------- */

/* Just enough of Python's repr() for the tool objects in the cases (dicts,
 * lists, strings without quotes or escapes, ints, bools); the full version is
 * in src/app/cmd_template.c. */
static void pyrepr(core_buf *b, json_t *v) {
    const char *k;
    json_t *x;
    size_t i;
    int first = 1;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        core_buf_puts(b, "{");
        json_object_foreach(v, k, x) {
            core_buf_printf(b, "%s'%s': ", first ? "" : ", ", k);
            first = 0;
            pyrepr(b, x);
        }
        core_buf_puts(b, "}");
        break;
    case JSON_ARRAY:
        core_buf_puts(b, "[");
        json_array_foreach(v, i, x) {
            if (i) core_buf_puts(b, ", ");
            pyrepr(b, x);
        }
        core_buf_puts(b, "]");
        break;
    case JSON_STRING: core_buf_printf(b, "'%s'", json_string_value(v)); break;
    case JSON_INTEGER: core_buf_printf(b, "%lld", (long long)json_integer_value(v)); break;
    case JSON_TRUE: core_buf_puts(b, "True"); break;
    case JSON_FALSE: core_buf_puts(b, "False"); break;
    default: core_buf_puts(b, "None"); break;
    }
}

static void test_template_cases(void) {
    const char *path = t_shared("refdata/template/chat_template_cases.jsonl");
    if (!path) T_SKIP("../shared/refdata/template/chat_template_cases.jsonl not found");
    char *data;
    size_t len;
    core_err err = {0};
    CHECK(core_read_file(path, &data, &len, &err) == 0);
    if (!data) return;
    int total = 0, match = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *c = json_loads(line, 0, &je);
        CHECK_MSG(c != NULL, "bad jsonl line: %s", je.text);
        if (!c) continue;
        total++;
        json_t *jm = json_object_get(c, "messages"), *v;
        size_t n = json_array_size(jm);
        chat_msg msgs[16] = {{0}};
        CHECK(n <= 16);
        for (size_t i = 0; i < n && i < 16; i++) {
            json_t *m = json_array_get(jm, i);
            msgs[i].role = json_string_value(json_object_get(m, "role"));
            msgs[i].content = json_string_value(json_object_get(m, "content"));
            msgs[i].content_len = json_string_length(json_object_get(m, "content"));
        }
        chat_opts o;
        chat_opts_default(&o);
        if ((v = json_object_get(c, "enable_thinking"))) o.enable_thinking = json_is_true(v);
        o.add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt"));
        o.date = json_string_value(json_object_get(c, "today"));
        core_buf tools = {0};
        if ((v = json_object_get(c, "xml_tools"))) {
            size_t i;
            json_t *x;
            json_array_foreach(v, i, x) {
                pyrepr(&tools, x);
                core_buf_puts(&tools, "\n");
            }
            o.xml_tools = tools.data;
        }
        core_buf out = {0};
        int rc = chat_render(msgs, n < 16 ? n : 16, &o, &out, &err);
        const char *want = json_string_value(json_object_get(c, "expected"));
        const char *name = json_string_value(json_object_get(c, "name"));
        int ok = rc == 0 && want && out.len == strlen(want) && !memcmp(out.data, want, out.len);
        CHECK_MSG(ok, "case %s: rc %d, got\n%s\n--- want\n%s", name, rc, out.data ? out.data : "", want);
        match += ok;
        core_buf_free(&out);
        core_buf_free(&tools);
        json_decref(c);
    }
    fprintf(stderr, "  template cases: %d of %d match byte for byte\n", match, total);
    CHECK_EQ_INT(total, 13);
    free(data);
}

static int render(const chat_msg *m, size_t n, const chat_opts *o, core_buf *out) {
    core_buf_clear(out);
    return chat_render(m, n, o, out, NULL);
}

#define MSG(r, c) {r, c, sizeof(c) - 1}

static void test_render_rules(void) {
    chat_opts o;
    chat_opts_default(&o);
    o.date = "01 January 2026";
    core_buf out = {0};
    core_err err = {0};

    chat_msg bad_role[] = {MSG("user", "hi"), MSG("wizard", "x")};
    CHECK_EQ_INT(chat_render(bad_role, 2, &o, &out, &err), CORE_EINVAL);
    CHECK(strstr(err.msg, "wizard") != NULL);
    chat_msg late_sys[] = {MSG("user", "hi"), MSG("system", "x")};
    CHECK_EQ_INT(chat_render(late_sys, 2, &o, &out, &err), CORE_EINVAL);
    chat_msg no_role[] = {{NULL, "x", 1}};
    CHECK_EQ_INT(chat_render(no_role, 1, &o, &out, &err), CORE_EINVAL);

    /* both flags: /no_think wins; both words are removed, then rstripped
     * (Python's rstrip also takes U+00A0 and U+3000) */
    chat_msg both[] = {MSG("system", "Be /think kind. /no_think \xc2\xa0\xe3\x80\x80\n"), MSG("user", "u")};
    CHECK_EQ_INT(chat_mode_of(both, 2, 1), 0);
    CHECK_EQ_INT(render(both, 2, &o, &out), 0);
    CHECK(strstr(out.data, "Reasoning Mode: /no_think\n") != NULL);
    CHECK(strstr(out.data, "## Custom Instructions\n\nBe  kind.\n\n<|im_end|>\n") != NULL);
    CHECK(out.len > 18 && !strcmp(out.data + out.len - 18, "<think>\n\n</think>\n"));

    /* only whitespace left: the default instructions of the mode */
    chat_msg ws[] = {MSG("system", " /think \n"), MSG("user", "u")};
    CHECK_EQ_INT(render(ws, 2, &o, &out), 0);
    CHECK(strstr(out.data, "named SmolLM, trained by Hugging Face. Your role") != NULL);

    /* NULL content renders as empty; leading newlines of assistant turns go */
    chat_msg nul[] = {{"user", NULL, 5}, MSG("assistant", "\n\n\nok\n")};
    o.enable_thinking = 1;
    o.add_generation_prompt = 0;
    CHECK_EQ_INT(render(nul, 2, &o, &out), 0);
    CHECK(strstr(out.data, "<|im_start|>user\n<|im_end|>\n<|im_start|>assistant\nok\n<|im_end|>\n") != NULL);
    CHECK(out.len > 11 && !strcmp(out.data + out.len - 11, "<|im_end|>\n"));

    /* no messages: just the header (+ generation prompt) */
    o.add_generation_prompt = 1;
    CHECK_EQ_INT(render(NULL, 0, &o, &out), 0);
    CHECK(!strncmp(out.data, "<|im_start|>system\n## Metadata", 30));

    /* tool turns render as user turns; system override keeps the mode */
    chat_msg ov[] = {MSG("system", "Raw. /no_think /system_override  "), MSG("tool", "{}")};
    CHECK_EQ_INT(render(ov, 2, &o, &out), 0);
    CHECK_EQ_STR(out.data, "<|im_start|>system\nRaw.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
                           "<|im_start|>assistant\n<think>\n\n</think>\n");

    /* python tools section */
    o.python_tools = "def f(x): ...\n";
    chat_msg u[] = {MSG("user", "u")};
    CHECK_EQ_INT(render(u, 1, &o, &out), 0);
    CHECK(strstr(out.data, "### Tools\n\nWhen you send a message containing Python code") != NULL);
    CHECK(strstr(out.data, "<tools>\ndef f(x): ...\n</tools>\n\nThe state persists") != NULL);
    CHECK(strstr(out.data, "available thereafter.\n\n<|im_end|>\n") != NULL);

    /* a NUL byte inside content is kept (it is data, not a terminator) */
    chat_msg z[] = {{"user", "a\0b", 3}};
    o.python_tools = NULL;
    CHECK_EQ_INT(render(z, 1, &o, &out), 0);
    CHECK(memmem(out.data, out.len, "user\na\0b<|im_end|>", 18) != NULL);

    /* the date defaults to today */
    o.date = NULL;
    CHECK_EQ_INT(render(u, 1, &o, &out), 0);
    char today[32];
    CHECK_EQ_INT(chat_date_today(today, sizeof today, time(NULL)), 0);
    CHECK(strstr(out.data, today) != NULL);
    core_buf_free(&out);
}

static void test_date(void) {
    setenv("TZ", "UTC", 1);
    tzset();
    char b[32];
    CHECK_EQ_INT(chat_date_today(b, sizeof b, (time_t)1795651200), 0); /* 2026-11-26 00:00 UTC */
    CHECK_EQ_STR(b, "26 November 2026");
    CHECK_EQ_INT(chat_date_today(b, sizeof b, (time_t)1772668800), 0); /* 2026-03-05 */
    CHECK_EQ_STR(b, "05 March 2026");
    CHECK_EQ_INT(chat_date_today(b, sizeof b, (time_t)0), 0);
    CHECK_EQ_STR(b, "01 January 1970");
    CHECK_EQ_INT(chat_date_today(b, 8, (time_t)0), CORE_ERANGE);
}

/* ---- thinking parser ------------------------------------------------------ */

typedef struct {
    const char *text;
    int in_answer;
    const char *reasoning, *answer;
} think_case;

static const think_case THINK_CASES[] = {
    {"<think>\nI reason.\n</think>\n\nThe answer.", 0, "I reason.", "The answer."},
    {"<think>\n\nline 1\n\nline 2\n\n\n</think>\nA\n\nB\n", 0, "line 1\n\nline 2", "A\n\nB\n"},
    {"<think>\nhmm, no end\n\n", 0, "hmm, no end", ""},
    {"<think>abc</thi", 0, "abc</thi", ""},
    {"Just an answer, no tags.", 0, "", "Just an answer, no tags."},
    {"", 0, "", ""},
    {"\nHello <think> x</think>", 1, "", "Hello <think> x</think>"},
    {"Hi <think>r</think>a", 0, "r", "Hi a"},
    {"<<think>x</think>y", 0, "x", "<y"},
    {"a < b <thin and <think>1 < 2 </thinK> </think></think>z", 0, "1 < 2 </thinK> ", "a < b <thin and </think>z"},
    {"<thin", 0, "", "<thin"},
    {"<think></think>", 0, "", ""},
    {"\n\n<think>\n</think>\n\n\nok", 0, "", "ok"},
    {"<think>\xe4\xb8\x96\n</think>\xf0\x9f\x8e\x89", 0, "\xe4\xb8\x96", "\xf0\x9f\x8e\x89"},
};

/* Push t in the pieces given by cuts (sorted positions), then finish. */
static void run_think(const think_case *c, const size_t *cuts, size_t ncuts, core_buf *r, core_buf *a) {
    chat_think p;
    chat_think_init(&p, c->in_answer);
    core_buf_clear(r);
    core_buf_clear(a);
    size_t len = strlen(c->text), at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        CHECK_EQ_INT(chat_think_push(&p, c->text + at, end - at, r, a), 0);
        at = end;
    }
    CHECK_EQ_INT(chat_think_finish(&p, r, a), 0);
    core_buf_puts(r, "");
    core_buf_puts(a, "");
}

static void test_think_splits(void) {
    core_buf r = {0}, a = {0};
    for (size_t k = 0; k < CORE_ARRAY_LEN(THINK_CASES); k++) {
        const think_case *c = &THINK_CASES[k];
        size_t len = strlen(c->text);
        run_think(c, NULL, 0, &r, &a);
        CHECK_MSG(!strcmp(r.data, c->reasoning) && !strcmp(a.data, c->answer), "case %zu whole: [%s] [%s]", k,
                  r.data, a.data);
        for (size_t i = 0; i <= len; i++) /* one cut anywhere */
            for (size_t j = i; j <= len; j++) { /* and a second one after it */
                size_t cuts[2] = {i, j};
                run_think(c, cuts, 2, &r, &a);
                CHECK_MSG(!strcmp(r.data, c->reasoning) && !strcmp(a.data, c->answer),
                          "case %zu cut %zu,%zu: [%s] [%s]", k, i, j, r.data, a.data);
            }
        size_t bytes[128]; /* one byte per push */
        CHECK(len < 128);
        for (size_t i = 0; i < len && i < 128; i++) bytes[i] = i + 1;
        run_think(c, bytes, len ? len - 1 : 0, &r, &a);
        CHECK_MSG(!strcmp(r.data, c->reasoning) && !strcmp(a.data, c->answer), "case %zu bytewise: [%s] [%s]", k,
                  r.data, a.data);
    }
    /* NULL buffers discard */
    chat_think p;
    chat_think_init(&p, 0);
    CHECK_EQ_INT(chat_think_push(&p, "<think>x</think>y", 17, NULL, &a), 0);
    CHECK_EQ_INT(p.state, CHAT_THINK_AFTER);
    core_buf_free(&r);
    core_buf_free(&a);
}

int main(void) {
    T_RUN(test_template_cases);
    T_RUN(test_render_rules);
    T_RUN(test_date);
    T_RUN(test_think_splits);
    return t_done();
}
