/* test_chat.c -- the chat template against Jinja2 renders of the official
 * template (refdata/template, tool cases included), Python repr of tools,
 * date formatting, and the thinking and tool-call parsers with their input
 * cut at every byte position. */
#include "t.h"
#include "t_chat.h"

#include <jansson.h>
#include <time.h>

#include "chat/chat.h"

/* ---- template cases ------------------------------------------------------- */

/* Render every case of a refdata file; tools go through chat_tools_repr
 * from their JSON text, as the server and `smolbot template` do. */
static void run_cases(const char *file, int want_total) {
    const char *path = t_shared(file);
    if (!path) T_SKIP("a refdata/template file is missing in ../shared");
    char *data;
    size_t len;
    core_err err = {0};
    CHECK(core_read_file(path, &data, &len, &err) == 0);
    if (!data) return;
    int total = 0, match = 0;
    for (char *line = strtok(data, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *c = json_loads(line, 0, &je);
        CHECK(c != NULL);
        if (!c) continue;
        total++;
        json_t *v;
        chat_msg msgs[16] = {{0}};
        size_t n = t_chat_msgs(json_object_get(c, "messages"), msgs, 16);
        CHECK(n <= 16);
        chat_opts o;
        chat_opts_default(&o);
        if ((v = json_object_get(c, "enable_thinking"))) o.enable_thinking = json_is_true(v);
        o.add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt"));
        o.date = json_string_value(json_object_get(c, "today"));
        core_buf tools = {0}, py = {0};
        const char *keys[2] = {"xml_tools", "python_tools"};
        for (int k = 0; k < 2; k++) {
            core_buf *dst = k ? &py : &tools;
            v = json_object_get(c, keys[k]);
            if (!v && !k) v = json_object_get(c, "tools");
            if (!v) continue;
            char *txt = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(17));
            CHECK(chat_tools_repr(txt, strlen(txt), dst, &err) == 0);
            free(txt);
        }
        o.xml_tools = tools.data;
        o.python_tools = py.data;
        core_buf out = {0};
        int rc = chat_render(msgs, n < 16 ? n : 16, &o, &out, &err);
        const char *want = json_string_value(json_object_get(c, "expected"));
        const char *name = json_string_value(json_object_get(c, "name"));
        int ok = rc == 0 && want && out.len == strlen(want) && !memcmp(out.data, want, out.len);
        CHECK_MSG(ok, "case %s: rc %d, got\n%s\n--- want\n%s", name, rc, out.data ? out.data : "", want);
        match += ok;
        core_buf_free(&out);
        core_buf_free(&tools);
        core_buf_free(&py);
        json_decref(c);
    }
    fprintf(stderr, "  %s: %d of %d match byte for byte\n", file, match, total);
    CHECK_EQ_INT(total, want_total);
    free(data);
}

static void test_template_cases(void) { run_cases("refdata/template/chat_template_cases.jsonl", 13); }
static void test_tool_cases(void) { run_cases("refdata/template/chat_tool_cases.jsonl", 4); }

/* Python repr details beyond the cases: quotes, escapes, floats, nesting. */
static void test_tools_repr(void) {
    static const struct { const char *json, *want; } cases[] = {
        {"[{\"a\": \"it's\"}, 0.001]", "{'a': \"it's\"}\n0.001\n"},
        {"[{\"a\": \"both ' and \\\"\"}]", "{'a': 'both \\' and \"'}\n"},
        {"[[1.5, 1e-5, 1e16, 2.0, -0, 10, 0.1, 123456789.125]]", "[1.5, 1e-05, 1e+16, 2.0, 0, 10, 0.1, 123456789.125]\n"},
        {"[{\"t\": true, \"f\": false, \"n\": null, \"e\": {}, \"l\": []}]",
         "{'t': True, 'f': False, 'n': None, 'e': {}, 'l': []}\n"},
        {"[\"tab\\there\\n\\u00e9\\u00a0\\ud83d\\ude00\"]", "'tab\\there\\n\xc3\xa9\\xa0\xf0\x9f\x98\x80'\n"},
        {"{\"one\": 1}", "{'one': 1}\n"},
        {"[1, 2]", "1\n2\n"},
        {"[]", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        core_buf out = {0};
        core_err err = {0};
        int rc = chat_tools_repr(cases[i].json, strlen(cases[i].json), &out, &err);
        CHECK_MSG(rc == 0 && out.len == strlen(cases[i].want) && (!out.len || !memcmp(out.data, cases[i].want, out.len)),
                  "case %zu: rc %d got [%.*s] want [%s]", i, rc, (int)out.len, out.data ? out.data : "", cases[i].want);
        core_buf_free(&out);
    }
    static const char *const bad[] = {"[", "[{]", "{\"a\" 1}", "[01]", "[1.]", "[\"\\x\"]", "[\"\\ud800\"]",
                                      "[1] 2", "[tru]", "[\"\x01\"]", "[\"\xff\"]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        core_buf out = {0};
        core_err err = {0};
        CHECK_MSG(chat_tools_repr(bad[i], strlen(bad[i]), &out, &err) == CORE_EINVAL, "bad %zu accepted", i);
        core_buf_free(&out);
    }
}

/* An assistant's structured calls render as the text the model writes:
 * the same bytes as the round-trip case's content; names and arguments are
 * user spans. */
static void test_render_calls(void) {
    chat_opts o;
    chat_opts_default(&o);
    o.date = "01 January 2026";
    o.enable_thinking = 0;
    static const char text[] = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    chat_call call = {"get_weather", 11, "{\"city\": \"Paris\"}", 17};
    chat_msg a[] = {{"user", "w?", 2}, {"assistant", text, sizeof text - 1}, {"tool", "{}", 2}};
    chat_msg b[] = {{"user", "w?", 2}, {"assistant", "", 0}, {"tool", "{}", 2}};
    chat_msg_calls bc[] = {{NULL, 0}, {&call, 1}, {NULL, 0}};
    core_buf x = {0}, y = {0};
    chat_spans sp = {0};
    CHECK_EQ_INT(chat_render(a, 3, &o, &x, NULL), 0);
    o.calls = bc;
    CHECK_EQ_INT(chat_render_spans(b, 3, &o, &y, &sp, NULL), 0);
    CHECK(x.len == y.len && !memcmp(x.data, y.data, x.len));
    int name_span = 0, args_span = 0;
    for (size_t i = 0; i < sp.n; i++) {
        if (sp.v[i].len == 11 && !memcmp(y.data + sp.v[i].off, "get_weather", 11)) name_span = 1;
        if (sp.v[i].len == 17 && !memcmp(y.data + sp.v[i].off, "{\"city\": \"Paris\"}", 17)) args_span = 1;
    }
    CHECK(name_span && args_span);
    free(sp.v);
    /* content first, then a newline; two calls joined by a newline; a quote in a name is escaped */
    chat_call two[] = {{"f", 1, "{}", 2}, {"g\"", 2, "{\"a\": 1}", 8}};
    chat_msg c[] = {{"user", "u", 1}, {"assistant", "Sure.", 5}};
    chat_msg_calls cc[] = {{NULL, 0}, {two, 2}};
    o.calls = cc;
    core_buf_clear(&y);
    CHECK_EQ_INT(chat_render(c, 2, &o, &y, NULL), 0);
    CHECK(strstr(y.data, "Sure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n"
                         "{\"name\": \"g\\\"\", \"arguments\": {\"a\": 1}}\n</tool_call><|im_end|>\n") != NULL);
    chat_msg_calls wrong[] = {{two, 1}, {NULL, 0}}; /* calls on a user message */
    o.calls = wrong;
    CHECK_EQ_INT(chat_render(c, 2, &o, &y, NULL), CORE_EINVAL);
    core_buf_free(&x);
    core_buf_free(&y);
}

typedef struct calls_log {
    core_buf bodies;
    int n, incomplete;
} calls_log;

static int on_call(void *ctx, const char *body, size_t len, int complete) {
    calls_log *l = ctx;
    l->n++;
    l->incomplete += !complete;
    core_buf_puts(&l->bodies, "[");
    core_buf_append(&l->bodies, body, len);
    return core_buf_puts(&l->bodies, "]");
}

/* The call parser gives the same split whatever the cut of its input. */
static void test_calls_splits(void) {
    static const char in[] = "Let me look. <tool_ca <tool_call>\n{\"name\": \"f\"}\n</tool_call>\n<tool_call>{}</tool_call> bye <tool_call>x</tool_c";
    static const char want_content[] = "Let me look. <tool_ca \n bye ";
    static const char want_bodies[] = "[\n{\"name\": \"f\"}\n][{}][x</tool_c]";
    size_t n = sizeof in - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        for (size_t cut2 = cut; cut2 <= n; cut2 += 7) {
            chat_calls p;
            chat_calls_init(&p);
            calls_log l = {0};
            core_buf content = {0};
            CHECK(chat_calls_push(&p, in, cut, &content, on_call, &l) == 0);
            CHECK(chat_calls_push(&p, in + cut, cut2 - cut, &content, on_call, &l) == 0);
            CHECK(chat_calls_push(&p, in + cut2, n - cut2, &content, on_call, &l) == 0);
            CHECK(chat_calls_finish(&p, &content, on_call, &l) == 0);
            int ok = content.len == sizeof want_content - 1 && !memcmp(content.data, want_content, content.len) &&
                     l.bodies.len == sizeof want_bodies - 1 && !memcmp(l.bodies.data, want_bodies, l.bodies.len) &&
                     l.n == 3 && l.incomplete == 1;
            CHECK_MSG(ok, "cut %zu/%zu: content [%.*s] bodies [%.*s]", cut, cut2, (int)content.len,
                      content.data ? content.data : "", (int)l.bodies.len, l.bodies.data ? l.bodies.data : "");
            core_buf_free(&content);
            core_buf_free(&l.bodies);
            chat_calls_free(&p);
            if (!ok) return;
        }
    }
}

/* The JSON form's callback: a call is an object that opens with "name"
 * and closes with '}' (the real one parses JSON; this is enough to see
 * what the parser hands over and what it keeps as content). */
static int on_json_call(void *ctx, const char *body, size_t len, int complete) {
    static const char head[] = "{\"name\"";
    if (!complete || len < sizeof head || memcmp(body, head, sizeof head - 1) || body[len - 1] != '}')
        return CHAT_CALLS_REJECT;
    on_call(ctx, body, len, complete);
    return 0;
}

/* Llama's bare JSON calls: balanced braces outside strings, an optional
 * <|python_tag|>, several calls apart by ';' or whitespace, and whatever
 * is not a call kept as content, at every cut of the input. */
static void test_calls_json(void) {
    static const struct {
        const char *in, *content, *bodies;
    } cases[] = {
        {"{\"name\": \"f\", \"parameters\": {\"a\": \"}{\"}}", "", "[{\"name\": \"f\", \"parameters\": {\"a\": \"}{\"}}]"},
        {"<|python_tag|>{\"name\": \"f\", \"parameters\": {}}", "", "[{\"name\": \"f\", \"parameters\": {}}]"},
        {" \n{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"arguments\": \"{\\\"x\\\": [1]}\"}\n", "",
         "[{\"name\": \"a\", \"parameters\": {}}][{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": [1]}\"}]"},
        /* an escaped quote and a backslash do not end the string */
        {"{\"name\": \"f\", \"parameters\": {\"s\": \"a\\\"}b\\\\\"}}", "",
         "[{\"name\": \"f\", \"parameters\": {\"s\": \"a\\\"}b\\\\\"}}]"},
        /* truncated: content, never a call */
        {"{\"name\": \"f\", \"parameters\": {\"a\": 1", "{\"name\": \"f\", \"parameters\": {\"a\": 1", ""},
        {"{\"name\": \"f\", \"parameters\": {\"a\": \"}", "{\"name\": \"f\", \"parameters\": {\"a\": \"}", ""},
        /* an object that is not a call, and what follows it */
        {"{\"answer\": 4} and more", "{\"answer\": 4} and more", ""},
        {"{\"name\": \"f\"] tail", "{\"name\": \"f\"] tail", ""},
        /* text first: no calls at all, even if an object follows */
        {"Hello {\"name\": \"f\", \"parameters\": {}}", "Hello {\"name\": \"f\", \"parameters\": {}}", ""},
        {"]{\"name\": \"f\"}", "]{\"name\": \"f\"}", ""},
        /* a call, then text or an object that is not a call */
        {"{\"name\": \"f\", \"parameters\": {}} then text", " then text", "[{\"name\": \"f\", \"parameters\": {}}]"},
        {"{\"name\": \"f\", \"parameters\": {}}\n{\"x\": 1}", "\n{\"x\": 1}", "[{\"name\": \"f\", \"parameters\": {}}]"},
        /* the tag alone, cut, twice, or before text */
        {"<|python_ta", "<|python_ta", ""},
        {"<|python_tag|> hi", "<|python_tag|> hi", ""},
        {"<|python_tag|><|python_tag|>{\"name\": \"f\"}", "<|python_tag|><|python_tag|>{\"name\": \"f\"}", ""},
        {"<tool_call>{\"name\": \"f\"}</tool_call>", "<tool_call>{\"name\": \"f\"}</tool_call>", ""},
        {"   ", "   ", ""},
        {"", "", ""},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *in = cases[c].in;
        size_t n = strlen(in);
        for (size_t cut = 0; cut <= n; cut++) {
            chat_calls p;
            chat_calls_init_json(&p);
            calls_log l = {0};
            core_buf content = {0};
            /* one cut, then the rest a byte at a time */
            int rc = chat_calls_push(&p, in, cut, &content, on_json_call, &l);
            for (size_t i = cut; i < n && !rc; i++) rc = chat_calls_push(&p, in + i, 1, &content, on_json_call, &l);
            if (!rc) rc = chat_calls_finish(&p, &content, on_json_call, &l);
            size_t wc = strlen(cases[c].content), wb = strlen(cases[c].bodies);
            int ok = rc == 0 && content.len == wc && (!wc || !memcmp(content.data, cases[c].content, wc)) &&
                     l.bodies.len == wb && (!wb || !memcmp(l.bodies.data, cases[c].bodies, wb)) && p.n_calls == l.n;
            CHECK_MSG(ok, "case %zu cut %zu: content [%.*s] bodies [%.*s]", c, cut, (int)content.len,
                      content.data ? content.data : "", (int)l.bodies.len, l.bodies.data ? l.bodies.data : "");
            core_buf_free(&content);
            core_buf_free(&l.bodies);
            chat_calls_free(&p);
            if (!ok) break;
        }
    }
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
    T_RUN(test_tool_cases);
    T_RUN(test_tools_repr);
    T_RUN(test_render_calls);
    T_RUN(test_calls_splits);
    T_RUN(test_calls_json);
    T_RUN(test_render_rules);
    T_RUN(test_date);
    T_RUN(test_think_splits);
    return t_done();
}
