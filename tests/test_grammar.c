/* test_grammar.c -- the JSON Schema automaton (src/sample/grammar.c):
 * strings accepted and rejected byte by byte, every refused schema feature
 * an error, tool-call grammars, and a property test: random walks over the
 * tokens the mask allows (the tiny model's real vocabulary) always end in
 * JSON that jansson parses and a small independent validator accepts. */
#include "t.h"

#include <jansson.h>

#include "gguf/gguf.h"
#include "sample/sample.h"
#include "tok/tok.h"

static sample_grammar *compile(const char *schema) {
    sample_grammar *g = NULL;
    core_err err = {0};
    int rc = sample_grammar_schema(schema, strlen(schema), &g, &err);
    CHECK_MSG(rc == 0, "%s: %s", schema, err.msg);
    return g;
}

/* 1 when text is a complete output of g (fed byte by byte from the start). */
static int accepts(sample_grammar *g, sample_vocab *v, const char *text) {
    sample_matcher *m = NULL;
    core_err err = {0};
    if (sample_matcher_new(g, v, 0, 0, &m, &err)) return -1;
    int ok = sample_matcher_feed(m, text, strlen(text)) == 0 && sample_matcher_can_end(m);
    sample_matcher_free(m);
    return ok;
}

static tok *g_tok;
static sample_vocab *g_voc;

static void load_vocab(void) {
    const char *path = t_shared("models/smollm3-tiny-q4_k_m.gguf");
    if (!path) return;
    gguf *g;
    core_err err = {0};
    if (gguf_open(&g, path, &err)) return;
    if (!tok_load(&g_tok, g, &err)) sample_vocab_new(g_tok, &g_voc, &err);
    gguf_close(g);
}

static void test_accept_reject(void) {
    if (!g_voc) T_SKIP("no tiny model in ../shared");
    static const struct {
        const char *schema;
        const char *good[6];
        const char *bad[8];
    } cases[] = {
        {"{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"n\":{\"type\":\"integer\"}},"
         "\"required\":[\"city\"],\"additionalProperties\":false}",
         {"{\"city\":\"Paris\"}", "{\"city\": \"P\", \"n\": -12}", "{\"n\":0,\"city\":\"\"}", "{\"city\":\"a\\\"b\"}", "{\"city\":\"\xc3\xa9\"}", NULL},
         {"{}", "{\"n\":1}", "{\"city\":\"a\",\"city\":\"b\"}", "{\"city\":1}", "{\"city\":\"a\",\"x\":1}", "{\"city\":\"a\",}",
          "{ \"city\":\"a\"}", "{\"city\":\"a\",\"n\":01}"}},
        {"{\"type\":\"array\",\"items\":{\"enum\":[\"red\",\"green\",1,12,null]},\"minItems\":1,\"maxItems\":3}",
         {"[\"red\"]", "[1, 12,null]", "[12,\"green\",1]", NULL},
         {"[]", "[\"blue\"]", "[1,1,1,1]", "[2]", "[\"re\"]", "[12 ]", NULL}},
        {"{\"type\":\"string\",\"pattern\":\"^[a-z0-9_]{2,4}$\"}",
         {"\"ab\"", "\"a_9z\"", NULL},
         {"\"a\"", "\"abcde\"", "\"AB\"", "\"a-b\"", "\"\"", NULL}},
        {"{\"type\":[\"number\",\"null\"]}", {"1.5e-3", "-0.25", "null", "7", "0", NULL}, {"01", "1.", "-", "1e", ".5", "nul", NULL}},
        {"{\"anyOf\":[{\"type\":\"boolean\"},{\"type\":\"object\",\"properties\":{\"a\":{\"const\":3}},\"required\":[\"a\"]}]}",
         {"true", "{\"a\":3}", "{\"a\": 3}", NULL},
         {"{\"a\":4}", "truex", "{}", NULL}},
        {"{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}", {"\"ab\"", "\"\xc3\xa9\xc3\xa9\xc3\xa9\"", "\"a\\n\"", NULL},
         {"\"a\"", "\"abcd\"", "\"\x01\"", "\"\xc3\"", "\"\xed\xa0\x80x\"", "\"a\\u0041\"", NULL}},
        {"{\"type\":\"object\"}", {"{}", "{\"k\": [1, {\"x\": null}], \"z\": \"w\"}", NULL}, {"[]", "{\"k\"}", "{1:2}", NULL}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sample_grammar *g = compile(cases[c].schema);
        if (!g) continue;
        for (int i = 0; i < 6 && cases[c].good[i]; i++)
            CHECK_MSG(accepts(g, g_voc, cases[c].good[i]) == 1, "schema %zu should accept %s", c, cases[c].good[i]);
        for (int i = 0; i < 8 && cases[c].bad[i]; i++)
            CHECK_MSG(accepts(g, g_voc, cases[c].bad[i]) == 0, "schema %zu should reject %s", c, cases[c].bad[i]);
        sample_grammar_free(g);
    }
}

static void test_refused(void) {
    static const struct {
        const char *schema;
        const char *word; /* the message names it */
    } cases[] = {
        {"{\"type\":\"integer\",\"minimum\":1}", "minimum"},
        {"{\"type\":\"string\",\"format\":\"date\"}", "format"},
        {"{\"$ref\":\"#/$defs/a\"}", "$ref"},
        {"{\"allOf\":[{}]}", "allOf"},
        {"{\"not\":{}}", "not"},
        {"{\"type\":\"array\",\"items\":[{}]}", "items"},
        {"{\"type\":\"object\",\"patternProperties\":{}}", "patternProperties"},
        {"{\"anyOf\":[{\"type\":\"string\"},{\"enum\":[\"a\"]}]}", "anyOf"},
        {"{\"anyOf\":[{\"type\":\"object\"},{\"type\":\"object\",\"properties\":{\"a\":{}}}]}", "anyOf"},
        {"{\"type\":\"string\",\"pattern\":\"^(a|b)$\"}", "pattern"},
        {"{\"type\":\"string\",\"pattern\":\"[a-z]+\"}", "pattern"},
        {"{\"type\":\"thing\"}", "thing"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "'b'"},
        {"{\"type\":\"array\",\"minItems\":3,\"maxItems\":2}", "maxItems"},
        {"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\",\"exclusiveMaximum\":3}}}", "properties.a"},
        {"[1]", "schema"},
        {"{\"type\":", "JSON"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sample_grammar *g = NULL;
        core_err err = {0};
        int rc = sample_grammar_schema(cases[c].schema, strlen(cases[c].schema), &g, &err);
        CHECK_MSG(rc == CORE_EUNSUP || rc == CORE_EINVAL, "%s: rc %d", cases[c].schema, rc);
        CHECK_MSG(g == NULL, "%s", cases[c].schema);
        CHECK_MSG(strstr(err.msg, cases[c].word) != NULL, "%s: message '%s' does not name %s", cases[c].schema, err.msg,
                  cases[c].word);
        sample_grammar_free(g);
    }
    sample_grammar *g = NULL;
    core_err err = {0};
    sample_tool t[1] = {{"f", "{\"type\":\"string\"}", 17}};
    CHECK(sample_grammar_tools(t, 1, 0, &g, &err) == CORE_EINVAL && strstr(err.msg, "object"));
}

/* Llama's bare form: one {"name", "parameters"} object, no tags, the end right after it. */
static void test_tool_calls_json(void) {
    if (!g_voc) T_SKIP("no tiny model in ../shared");
    static const char ws[] = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}";
    sample_tool t[2] = {{"get_weather", ws, sizeof ws - 1}, {"now", NULL, 0}};
    sample_grammar *g = NULL;
    core_err err = {0};
    CHECK_MSG(sample_grammar_tools_json(t, 2, &g, &err) == 0, "%s", err.msg);
    if (!g) return;
    static const char c1[] = "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}";
    CHECK(accepts(g, g_voc, c1) == 1);
    CHECK(accepts(g, g_voc, "{\"name\": \"now\", \"parameters\": {}}") == 1);
    sample_grammar *closed = NULL;
    static const char none[] = "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}";
    sample_tool tc[1] = {{"now", none, sizeof none - 1}};
    CHECK_MSG(sample_grammar_tools_json(tc, 1, &closed, &err) == 0, "%s", err.msg);
    CHECK(accepts(closed, g_voc, "{\"name\": \"now\", \"parameters\": {}}") == 1);
    CHECK(accepts(closed, g_voc, "{\"name\": \"now\", \"parameters\": {\"x\": 1}}") == 0); /* no key at all */
    sample_grammar_free(closed);
    CHECK(accepts(g, g_voc, "{\"name\": \"get_weather\", \"parameters\": {}}") == 0); /* city is required */
    CHECK(accepts(g, g_voc, "{\"name\": \"now\", \"arguments\": {}}") == 0);
    CHECK(accepts(g, g_voc, "{\"name\": \"other\", \"parameters\": {}}") == 0);
    CHECK(accepts(g, g_voc, "<tool_call>\n{\"name\": \"now\", \"parameters\": {}}\n</tool_call>") == 0);
    char two[256];
    snprintf(two, sizeof two, "%s\n%s", c1, c1);
    CHECK(accepts(g, g_voc, two) == 0);
    /* a lazy matcher needs a tag this form does not have: refused */
    sample_matcher *m = NULL;
    CHECK(sample_matcher_new(g, g_voc, 1, 0, &m, &err) == CORE_EINVAL && !m);
    sample_grammar_free(g);
}

static void test_tool_calls(void) {
    if (!g_voc) T_SKIP("no tiny model in ../shared");
    static const char ws[] = "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}";
    sample_tool t[2] = {{"get_weather", ws, sizeof ws - 1}, {"now", NULL, 0}};
    sample_grammar *one = NULL, *par = NULL;
    core_err err = {0};
    CHECK_MSG(sample_grammar_tools(t, 2, 0, &one, &err) == 0, "%s", err.msg);
    CHECK(sample_grammar_tools(t, 2, 1, &par, &err) == 0);
    if (!one || !par) return;
    static const char c1[] = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    static const char c2[] = "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
    CHECK(accepts(one, g_voc, c1) == 1);
    CHECK(accepts(one, g_voc, c2) == 1);
    CHECK(accepts(one, g_voc, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>") == 0);
    CHECK(accepts(one, g_voc, "<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>") == 0);
    char two[512];
    snprintf(two, sizeof two, "%s\n%s", c1, c2);
    CHECK(accepts(one, g_voc, two) == 0);
    CHECK(accepts(par, g_voc, two) == 1);
    /* lazy: free text, then a call; the special token <tool_call> triggers */
    sample_matcher *m = NULL;
    CHECK(sample_matcher_new(par, g_voc, 1, 0, &m, &err) == 0);
    int32_t *buf = NULL;
    size_t bn = 0, bcap = 0;
    CHECK(tok_encode(g_tok, "Let me check. ", 14, 1, &buf, &bn, &bcap, &err) == 0);
    for (size_t i = 0; i < bn; i++) CHECK(sample_matcher_accept(m, buf[i]) == 0);
    CHECK(!sample_matcher_active(m));
    bn = 0;
    CHECK(tok_encode(g_tok, c1, sizeof c1 - 1, 1, &buf, &bn, &bcap, &err) == 0);
    CHECK(buf[0] == tok_find(g_tok, "<tool_call>"));
    for (size_t i = 0; i < bn; i++) {
        CHECK_MSG(sample_matcher_accept(m, buf[i]) == 0, "token %zu", i);
        if (i == 0) CHECK(sample_matcher_active(m));
    }
    CHECK(!sample_matcher_active(m)); /* the call ended: free text again */
    free(buf);
    sample_matcher_free(m);
    sample_grammar_free(one);
    sample_grammar_free(par);
}

/* ---- the property test ------------------------------------------------------- */

/* A validator for the schemas below, independent of the automaton. */
static int valid(json_t *s, json_t *v) {
    json_t *en = json_object_get(s, "enum");
    if (en) {
        size_t i;
        json_t *x;
        json_array_foreach(en, i, x) if (json_equal(x, v)) return 1;
        return 0;
    }
    const char *t = json_string_value(json_object_get(s, "type"));
    if (!t) return 1;
    if (!strcmp(t, "object")) {
        if (!json_is_object(v)) return 0;
        json_t *props = json_object_get(s, "properties");
        size_t i;
        json_t *x;
        json_array_foreach(json_object_get(s, "required"), i, x) if (!json_object_get(v, json_string_value(x))) return 0;
        const char *k;
        json_object_foreach(v, k, x) {
            json_t *ps = json_object_get(props, k);
            if (!ps || !valid(ps, x)) return 0;
        }
        return 1;
    }
    if (!strcmp(t, "array")) {
        if (!json_is_array(v)) return 0;
        json_t *mn = json_object_get(s, "minItems"), *mx = json_object_get(s, "maxItems");
        if (mn && json_array_size(v) < (size_t)json_integer_value(mn)) return 0;
        if (mx && json_array_size(v) > (size_t)json_integer_value(mx)) return 0;
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) if (!valid(json_object_get(s, "items"), x)) return 0;
        return 1;
    }
    if (!strcmp(t, "string")) {
        if (!json_is_string(v)) return 0;
        size_t chars = 0;
        const char *p = json_string_value(v);
        for (size_t i = 0; i < json_string_length(v); i++) chars += ((unsigned char)p[i] & 0xc0) != 0x80;
        json_t *mn = json_object_get(s, "minLength"), *mx = json_object_get(s, "maxLength");
        if (mn && chars < (size_t)json_integer_value(mn)) return 0;
        if (mx && chars > (size_t)json_integer_value(mx)) return 0;
        return 1;
    }
    if (!strcmp(t, "integer")) return json_is_integer(v);
    if (!strcmp(t, "number")) return json_is_number(v);
    if (!strcmp(t, "boolean")) return json_is_boolean(v);
    return 1;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_random_walks(void) {
    if (!g_voc) T_SKIP("no tiny model in ../shared");
    static const char *const schemas[] = {
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},\"age\":{\"type\":\"integer\"},"
        "\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":4},\"maxItems\":3},"
        "\"kind\":{\"enum\":[\"cat\",\"dog\",\"catfish\"]}},\"required\":[\"name\",\"kind\"],\"additionalProperties\":false}",
        "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"},"
        "\"ok\":{\"type\":\"boolean\"}},\"required\":[\"x\",\"ok\"]},\"minItems\":1,\"maxItems\":3}",
        "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"array\","
        "\"items\":{\"type\":\"integer\"},\"maxItems\":4}},\"required\":[\"b\"]}},\"required\":[\"a\"]}",
    };
    int32_t nv = tok_n_vocab(g_tok);
    float *logits = malloc((size_t)nv * sizeof *logits);
    int32_t *allowed = malloc((size_t)nv * sizeof *allowed);
    int walks = 0, complete = 0, valid_n = 0;
    double t0 = core_now_s();
    size_t masks = 0;
    for (size_t si = 0; si < sizeof schemas / sizeof schemas[0]; si++) {
        sample_grammar *g = compile(schemas[si]);
        json_t *sj = json_loads(schemas[si], 0, NULL);
        if (!g || !sj) continue;
        for (int w = 0; w < 20; w++) {
            sample_matcher *m = NULL;
            core_err err = {0};
            CHECK(sample_matcher_new(g, g_voc, 0, 0, &m, &err) == 0);
            core_buf text = {0};
            int ended = 0;
            walks++;
            for (int step = 0; step < 400 && !ended; step++) {
                for (int32_t i = 0; i < nv; i++) logits[i] = 0;
                size_t n = sample_matcher_mask(m, logits);
                masks++;
                CHECK(n > 0);
                if (!n) break;
                size_t k = 0;
                for (int32_t i = 0; i < nv; i++)
                    if (logits[i] == 0) allowed[k++] = i;
                CHECK_EQ_INT((int)k, (int)n);
                /* prefer ending once possible, and short tokens half the time, so walks finish */
                int32_t id = allowed[rnd() % k];
                for (size_t i = 0; i < k && step > 40; i++)
                    if (tok_is_stop(g_tok, allowed[i])) id = allowed[i];
                CHECK(sample_matcher_accept(m, id) == 0);
                if (tok_is_stop(g_tok, id)) { ended = 1; break; }
                tok_decode(g_tok, &id, 1, 0, &text);
            }
            if (ended) {
                complete++;
                json_error_t je;
                json_t *v = json_loadb(text.data ? text.data : "", text.len, 0, &je);
                int ok = v && valid(sj, v);
                CHECK_MSG(ok, "schema %zu walk %d: %.*s (%s)", si, w, (int)text.len, text.data ? text.data : "",
                          v ? "invalid" : je.text);
                valid_n += ok;
                json_decref(v);
            }
            core_buf_free(&text);
            sample_matcher_free(m);
        }
        json_decref(sj);
        sample_grammar_free(g);
    }
    double dt = core_now_s() - t0;
    fprintf(stderr, "  random walks: %d, %d ended, %d valid; %.3f ms per mask (%zu masks, %d tokens)\n", walks, complete,
            valid_n, masks ? dt * 1e3 / (double)masks : 0, masks, nv);
    CHECK(complete >= walks / 2);
    CHECK_EQ_INT(valid_n, complete);
    free(logits);
    free(allowed);
}

int main(void) {
    load_vocab();
    T_RUN(test_accept_reject);
    T_RUN(test_refused);
    T_RUN(test_tool_calls);
    T_RUN(test_tool_calls_json);
    T_RUN(test_random_walks);
    sample_vocab_free(g_voc);
    tok_free(g_tok);
    return t_done();
}
