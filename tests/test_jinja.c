/* test_jinja.c -- the Jinja engine against Jinja2 3.1 as transformers sets
 * it up (trim_blocks, lstrip_blocks, loop controls, its tojson).
 *
 * - every construct, with the output Jinja2 gave for the same template and
 *   context (the table below; the context is the `data` object);
 * - the real templates: each family case of refdata/families rendered from
 *   the template read out of the matching model file; the SmolLM3 cases of
 *   refdata/template rendered from smollm3-tiny's own template. That file
 *   carries an edited template (no "Today Date" line, no tools), so the
 *   cases it renders alike are compared with the refdata text less that
 *   line, and every case with Jinja2's render of the file's template
 *   (tests/jinja_smollm3_file.jsonl);
 * - taint: the spans cover exactly the bytes that came from `data`;
 * - errors name the line; limits stop hostile templates (steps, output,
 *   memory, depth) with CORE_EFULL.
 */
#include "t.h"

#include <jansson.h>

#include "gguf/gguf.h"
#include "jinja/jinja.h"

static const struct { const char *name, *tmpl, *ctx, *want; } cases[] = {
#include "jinja_cases.inc"
};

static const struct { const char *name, *tmpl, *msg; } errs[] = {
#include "jinja_errs.inc"
};

/* Compile and render tmpl with ctx (JSON text, the data object). */
static int render(const char *tmpl, const char *ctx, const jinja_limits *lim, core_buf *out, jinja_spans *sp,
                  core_err *err) {
    jinja_tmpl *t = NULL;
    int rc = jinja_compile(tmpl, strlen(tmpl), &t, err);
    if (rc) return rc;
    json_t *data = ctx ? json_loads(ctx, 0, NULL) : NULL;
    rc = jinja_render(t, data, NULL, 0, lim, out, sp, err);
    json_decref(data);
    jinja_free(t);
    return rc;
}

static void test_constructs(void) {
    int match = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        core_buf out = {0};
        core_err err = {0};
        int rc = render(cases[i].tmpl, cases[i].ctx, NULL, &out, NULL, &err);
        int ok = rc == 0 && out.len == strlen(cases[i].want) && !memcmp(out.data ? out.data : "", cases[i].want, out.len);
        CHECK_MSG(ok, "case %s: rc %d (%s)\n got: [%s]\nwant: [%s]", cases[i].name, rc, rc ? err.msg : "",
                  out.data ? out.data : "", cases[i].want);
        match += ok;
        core_buf_free(&out);
    }
    fprintf(stderr, "  %d of %zu constructs match Jinja2\n", match, sizeof cases / sizeof *cases);
}

static void test_errors(void) {
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
        core_buf out = {0};
        core_err err = {0};
        int rc = render(errs[i].tmpl, "{\"x\": null}", NULL, &out, NULL, &err);
        if (!strcmp(errs[i].name, "err_undefined_attr")) rc = render(errs[i].tmpl, NULL, NULL, &out, NULL, &err);
        CHECK_MSG(rc == CORE_EFORMAT && strstr(err.msg, errs[i].msg), "%s: rc %d, msg [%s], want [%s]", errs[i].name,
                  rc, err.msg, errs[i].msg);
        core_buf_free(&out);
    }
}

/* {% generation %} is transformers' own tag: its body renders as is. */
static void test_generation(void) {
    core_buf out = {0};
    core_err err = {0};
    CHECK(render("a{% generation %}b{{ 1 }}{% endgeneration %}c", NULL, NULL, &out, NULL, &err) == 0);
    CHECK_EQ_STR(out.data, "ab1c");
    core_buf_free(&out);
}

/* strftime_now reads the given time as local time. */
static void test_strftime(void) {
    jinja_tmpl *t = NULL;
    core_err err = {0};
    const char *src = "{{ strftime_now('%d %B %Y|%b %-d|%%') }}";
    CHECK(jinja_compile(src, strlen(src), &t, &err) == 0);
    struct tm tm = {.tm_year = 126, .tm_mon = 10, .tm_mday = 6, .tm_hour = 12};
    time_t when = mktime(&tm);
    core_buf out = {0};
    CHECK(jinja_render(t, NULL, NULL, when, NULL, &out, NULL, &err) == 0);
    CHECK_EQ_STR(out.data, "06 November 2026|Nov 6|%");
    core_buf_free(&out);
    jinja_free(t);
}

/* ---- taint ----------------------------------------------------------------------- */

static void test_taint(void) {
    const char *tmpl = "{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}"
                       "{{ m.content.split('|')[-1] }}{% endfor %}{{ bos }}{{ 'lit' }}{{ tools | tojson }}";
    jinja_tmpl *t = NULL;
    core_err err = {0};
    CHECK(jinja_compile(tmpl, strlen(tmpl), &t, &err) == 0);
    json_t *data = json_pack("{s:[{s:s,s:s}],s:[{s:s}]}", "messages", "role", "user", "content", " a|<|x|> ",
                             "tools", "name", "f");
    json_t *trusted = json_pack("{s:s}", "bos", "<|bos|>");
    core_buf out = {0};
    jinja_spans sp = {0};
    CHECK(jinja_render(t, data, trusted, 0, NULL, &out, &sp, &err) == 0);
    CHECK_EQ_STR(out.data, "<|user|>a|<|x|>> <|bos|>lit[{\"name\": \"f\"}]");
    /* which bytes are marked: role, trimmed content, split piece, the tool JSON */
    char mark[128] = {0};
    for (size_t i = 0; i < out.len && i < sizeof mark - 1; i++) mark[i] = '.';
    for (size_t i = 0; i < sp.n; i++)
        for (size_t k = sp.v[i].off; k < sp.v[i].off + sp.v[i].len && k < sizeof mark - 1; k++) mark[k] = 'u';
    const char *want = "..uuuu..uuuuuuuuu..........uuuuuuuuuuuuuuu";
    CHECK_EQ_STR(mark, want);
    for (size_t i = 1; i < sp.n; i++) CHECK(sp.v[i].off > sp.v[i - 1].off + sp.v[i - 1].len);
    /* appended after existing text: offsets are positions in out */
    core_buf_clear(&out);
    core_buf_puts(&out, "xyz");
    jinja_spans sp2 = {0};
    CHECK(jinja_render(t, data, trusted, 0, NULL, &out, &sp2, &err) == 0);
    CHECK(sp2.n == sp.n && sp2.v[0].off == sp.v[0].off + 3);
    free(sp.v);
    free(sp2.v);
    core_buf_free(&out);
    json_decref(data);
    json_decref(trusted);
    jinja_free(t);
}

/* ---- limits ------------------------------------------------------------------------ */

static void expect_full(const char *tmpl, const jinja_limits *lim, const char *what) {
    core_buf out = {0};
    core_err err = {0};
    double t0 = t_now();
    int rc = render(tmpl, NULL, lim, &out, NULL, &err);
    CHECK_MSG(rc == CORE_EFULL && strstr(err.msg, what) && !strncmp(err.msg, "template line 1: ", 17),
              "rc %d msg [%s], want [%s]", rc, err.msg, what);
    CHECK_MSG(t_now() - t0 < 20, "took %.1f s", t_now() - t0);
    core_buf_free(&out);
}

static void test_limits(void) {
    expect_full("{% for i in range(10**9) %}{% endfor %}", NULL, "step limit");
    expect_full("{% for i in range(10**9) %}{% for j in range(10**9) %}x{% endfor %}{% endfor %}",
                &(jinja_limits){.max_steps = 100000}, "step limit");
    expect_full("{{ range(10**9) | list | length }}", NULL, "step limit");
    expect_full("{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}", &(jinja_limits){.max_output = 1 << 20},
                "output limit");
    expect_full("{% set ns = namespace(s='xy') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                &(jinja_limits){.max_output = 1 << 20}, "limit");
    expect_full("{% set ns = namespace(s='xy') %}{% for i in range(200000) %}{% set ns.s = ns.s ~ 'abcdefgh' %}{% endfor %}",
                &(jinja_limits){.max_steps = 1000000}, "step limit");
    expect_full("{% set ns = namespace(s='xy') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
                &(jinja_limits){.max_memory = 8 << 20}, "memory limit");
    expect_full("{{ '' * 9999999999 }}", NULL, "step limit");
    /* values that share parts: tiny to build, exponential to walk */
    const char *dag = "{% set ns = namespace(l=[1], m=[1]) %}{% for i in range(80) %}{% set ns.l = [ns.l, ns.l] %}"
                      "{% set ns.m = [ns.m, ns.m] %}{% endfor %}";
    char buf[512];
    snprintf(buf, sizeof buf, "%s{{ ns.l == ns.m }}", dag);
    expect_full(buf, NULL, "step limit");
    snprintf(buf, sizeof buf, "%s{{ ns.l | tojson }}", dag);
    expect_full(buf, &(jinja_limits){.max_output = 1 << 20}, "output limit");
    snprintf(buf, sizeof buf, "%s{{ ns.l in [ns.m] }}", dag);
    expect_full(buf, NULL, "step limit");
    expect_full("{% set s = 'a' * 200000 %}{% for i in range(200000) %}{{ s[i] }}{% endfor %}", NULL, "step limit");
    expect_full("{% set s = 'a' * 200000 %}{% for i in range(200000) %}{{ s.strip(s) }}{% endfor %}", NULL,
                "step limit");
    /* long needles stay linear */
    core_buf o2 = {0};
    core_err e2 = {0};
    double t0 = t_now();
    CHECK(render("{% set a = 'a' * 1000000 %}{{ (a ~ 'b') in (a ~ a) }}{{ (a ~ a).split(a ~ 'b') | length }}"
                 "{{ (a ~ a).replace(a ~ 'b', 'x') | length }}{{ (a ~ a).count(a ~ 'b') }}",
                 NULL, NULL, &o2, NULL, &e2) == 0);
    CHECK_EQ_STR(o2.data, "False120000000");
    CHECK_MSG(t_now() - t0 < 5, "%.1f s", t_now() - t0);
    core_buf_free(&o2);
    expect_full("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, "nested too deeply");
    /* deep nesting in the source is a compile error, not a stack overflow */
    size_t n = 100000;
    char *deep = malloc(2 * n + 16);
    strcpy(deep, "{{ ");
    for (size_t i = 0; i < n; i++) deep[3 + i] = '(';
    deep[3 + n] = '1';
    for (size_t i = 0; i < n; i++) deep[4 + n + i] = ')';
    strcpy(deep + 4 + 2 * n, " }}");
    core_buf out = {0};
    core_err err = {0};
    CHECK(render(deep, NULL, NULL, &out, NULL, &err) == CORE_EFORMAT && strstr(err.msg, "nested too deeply"));
    size_t k = 0;
    for (size_t i = 0; i < 5000; i++) k += (size_t)sprintf(deep + k, "{%% if true %%}");
    CHECK(render(deep, NULL, NULL, &out, NULL, &err) == CORE_EFORMAT && strstr(err.msg, "template line 1"));
    free(deep);
    core_buf_free(&out);
}

/* ---- real templates ------------------------------------------------------------------- */

/* The model file's tokenizer.chat_template, compiled. */
static jinja_tmpl *file_template(const char *model) {
    const char *path = t_shared(model);
    if (!path) return NULL;
    gguf *g = NULL;
    core_err err = {0};
    jinja_tmpl *t = NULL;
    gguf_str s;
    if (gguf_open(&g, path, &err) == 0 && gguf_get_str(g, "tokenizer.chat_template", &s, &err) == 0)
        CHECK_MSG(jinja_compile(s.ptr, s.len, &t, &err) == 0, "%s: %s", model, err.msg);
    else
        CHECK_MSG(0, "%s: %s", model, err.msg);
    gguf_close(g);
    return t;
}

/* Render one refdata case with t: the case object is the data (messages,
 * tools, flags); bos_token is trusted. */
static int render_case(const jinja_tmpl *t, json_t *c, core_buf *out, core_err *err) {
    json_t *data = json_deep_copy(c);
    json_object_del(data, "expected");
    json_t *trusted = json_pack("{s:s,s:s}", "bos_token", "<|begin_of_text|>", "eos_token", "<|eot_id|>");
    /* flags are not user text: move them to the trusted side */
    const char *flags[] = {"add_generation_prompt", "enable_thinking"};
    for (int i = 0; i < 2; i++) {
        json_t *v = json_object_get(data, flags[i]);
        if (v) {
            json_object_set(trusted, flags[i], v);
            json_object_del(data, flags[i]);
        }
    }
    int rc = jinja_render(t, data, trusted, 0, NULL, out, NULL, err);
    json_decref(data);
    json_decref(trusted);
    return rc;
}

static void test_family_cases(void) {
    const char *path = t_shared("refdata/families/family_template_cases.jsonl");
    if (!path) T_SKIP("../shared/refdata/families is missing");
    jinja_tmpl *llama = file_template("models/llama-tiny.gguf"), *qwen = file_template("models/qwen3-tiny.gguf");
    if (!llama || !qwen) {
        jinja_free(llama);
        jinja_free(qwen);
        T_SKIP("../shared/models/llama-tiny.gguf or qwen3-tiny.gguf is missing");
    }
    char *text;
    size_t len;
    core_err err = {0};
    CHECK(core_read_file(path, &text, &len, &err) == 0);
    int total = 0, match = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *c = json_loads(line, 0, NULL);
        CHECK(c != NULL);
        if (!c) continue;
        const char *fam = json_string_value(json_object_get(c, "family"));
        const char *want = json_string_value(json_object_get(c, "expected"));
        core_buf out = {0};
        int rc = render_case(fam && !strcmp(fam, "llama") ? llama : qwen, c, &out, &err);
        int ok = rc == 0 && want && out.len == strlen(want) && !memcmp(out.data, want, out.len);
        CHECK_MSG(ok, "%s/%s: rc %d %s\n got: [%s]\nwant: [%s]", fam, json_string_value(json_object_get(c, "name")),
                  rc, rc ? err.msg : "", out.data ? out.data : "", want);
        match += ok;
        total++;
        core_buf_free(&out);
        json_decref(c);
    }
    fprintf(stderr, "  family cases: %d of %d match byte for byte\n", match, total);
    CHECK_EQ_INT(total, 6);
    free(text);
    jinja_free(llama);
    jinja_free(qwen);
}

/* Remove the line "Today Date: ...\n" (the file's template has none). */
static void drop_date(char *s) {
    char *d = strstr(s, "Today Date: ");
    if (!d) return;
    char *e = strchr(d, '\n');
    if (e) memmove(d, e + 1, strlen(e + 1) + 1);
}

static void test_smollm3_cases(void) {
    jinja_tmpl *t = file_template("models/smollm3-tiny-f32.gguf");
    if (!t) T_SKIP("../shared/models/smollm3-tiny-f32.gguf is missing");
    char *mine;
    size_t mlen;
    core_err err = {0};
    CHECK(core_read_file("tests/jinja_smollm3_file.jsonl", &mine, &mlen, &err) == 0);
    json_t *jinja2 = json_object(); /* name -> Jinja2's render of the file's template */
    for (char *line = mine ? strtok(mine, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_t *c = json_loads(line, 0, NULL);
        if (c) json_object_set(jinja2, json_string_value(json_object_get(c, "name")), json_object_get(c, "expected"));
        json_decref(c);
    }
    const char *files[] = {"refdata/template/chat_template_cases.jsonl", "refdata/template/chat_tool_cases.jsonl"};
    int total = 0, same_as_ref = 0, same_as_jinja2 = 0;
    for (int f = 0; f < 2; f++) {
        const char *path = t_shared(files[f]);
        if (!path) continue;
        char *text;
        size_t len;
        CHECK(core_read_file(path, &text, &len, &err) == 0);
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            json_t *c = json_loads(line, 0, NULL);
            if (!c) continue;
            const char *name = json_string_value(json_object_get(c, "name"));
            char *ref = strdup(json_string_value(json_object_get(c, "expected")));
            drop_date(ref);
            core_buf out = {0};
            int rc = render_case(t, c, &out, &err);
            CHECK_MSG(rc == 0, "%s: %s", name, err.msg);
            const char *j2 = json_string_value(json_object_get(jinja2, name));
            int ok = rc == 0 && j2 && !strcmp(out.data ? out.data : "", j2);
            CHECK_MSG(ok, "%s: got [%s]\nwant [%s]", name, out.data ? out.data : "", j2 ? j2 : "(no Jinja2 render)");
            same_as_jinja2 += ok;
            /* the file's template has no tools and no system override: the
             * other cases must equal the official render less its date line */
            int differs = json_object_get(c, "tools") || json_object_get(c, "xml_tools") ||
                          json_object_get(c, "python_tools") || !strcmp(name, "system_override");
            if (!differs) {
                int eq = rc == 0 && !strcmp(out.data ? out.data : "", ref);
                CHECK_MSG(eq, "%s: got [%s]\nwant [%s]", name, out.data ? out.data : "", ref);
                same_as_ref += eq;
            }
            total++;
            free(ref);
            core_buf_free(&out);
            json_decref(c);
        }
        free(text);
    }
    fprintf(stderr, "  smollm3 cases: %d of %d equal Jinja2 on the file's template, %d equal refdata less the date\n",
            same_as_jinja2, total, same_as_ref);
    CHECK_EQ_INT(total, 17);
    CHECK_EQ_INT(same_as_ref, 11);
    free(mine);
    json_decref(jinja2);
    jinja_free(t);
}

/* tests/data/template_cases.jsonl (tools/template_cases.py): Jinja2's
 * renders, as transformers calls it, of four real templates over
 * conversations with tools, tool round trips, reasoning, unicode and
 * template-like user text. The file templates come from ../shared; Qwen2.5's
 * is in tests/data/templates. */
static jinja_tmpl *case_template(const char *src, core_err *err) {
    jinja_tmpl *t = NULL;
    if (!strncmp(src, "file:", 5)) {
        char rel[256];
        snprintf(rel, sizeof rel, "models/%s", src + 5);
        return t_shared(rel) ? file_template(rel) : NULL;
    }
    char path[256], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "tests/data/templates/%s", src + 5);
    if (core_read_file(path, &text, &len, err) == 0) {
        CHECK_MSG(jinja_compile(text, len, &t, err) == 0, "%s: %s", path, err->msg);
        free(text);
    }
    return t;
}

static void test_reference_cases(void) {
    char *text;
    size_t len;
    core_err err = {0};
    CHECK(core_read_file("tests/data/template_cases.jsonl", &text, &len, &err) == 0);
    if (!text) return;
    int total = 0, match = 0, skipped = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *c = json_loads(line, 0, NULL);
        CHECK(c != NULL);
        if (!c) continue;
        const char *src = json_string_value(json_object_get(c, "template"));
        const char *name = json_string_value(json_object_get(c, "name"));
        jinja_tmpl *t = src ? case_template(src, &err) : NULL;
        if (!t) {
            skipped++;
            json_decref(c);
            continue;
        }
        /* data: what users give (messages, tools, documents: null when
         * absent, as transformers passes them); trusted: tokens and flags */
        json_t *data = json_pack("{s:n,s:n}", "tools", "documents"), *trusted = json_object();
        const char *key;
        json_t *v;
        json_object_foreach(c, key, v) {
            if (!strcmp(key, "messages") || !strcmp(key, "tools")) json_object_set(data, key, v);
            else if (strcmp(key, "template") && strcmp(key, "name") && strcmp(key, "expected") && strcmp(key, "error") &&
                     strcmp(key, "now"))
                json_object_set(trusted, key, v);
        }
        struct tm tm = {0};
        const char *now = json_string_value(json_object_get(c, "now"));
        CHECK(now && sscanf(now, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                            &tm.tm_sec) == 6);
        tm.tm_year -= 1900, tm.tm_mon -= 1, tm.tm_isdst = -1;
        core_buf out = {0};
        int rc = jinja_render(t, data, trusted, mktime(&tm), NULL, &out, NULL, &err);
        const char *want = json_string_value(json_object_get(c, "expected"));
        const char *why = json_string_value(json_object_get(c, "error"));
        int ok = want ? rc == 0 && out.len == strlen(want) && !memcmp(out.data, want, out.len)
                      : rc == CORE_EFORMAT && why && strstr(err.msg, why);
        CHECK_MSG(ok, "%s/%s: rc %d %s\n got: [%s]\nwant: [%s]", src, name, rc, rc ? err.msg : "",
                  out.data ? out.data : "", want ? want : why);
        match += ok;
        total++;
        core_buf_free(&out);
        json_decref(data);
        json_decref(trusted);
        json_decref(c);
        jinja_free(t);
    }
    fprintf(stderr, "  reference cases: %d of %d as Jinja2 renders them (%d without ../shared)\n", match, total, skipped);
    CHECK(total >= 14);
    free(text);
}

int main(void) {
    T_RUN(test_constructs);
    T_RUN(test_errors);
    T_RUN(test_generation);
    T_RUN(test_strftime);
    T_RUN(test_taint);
    T_RUN(test_limits);
    T_RUN(test_family_cases);
    T_RUN(test_smollm3_cases);
    T_RUN(test_reference_cases);
    return t_done();
}
