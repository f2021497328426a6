/* cmd_template.c -- `smolbot template`: render a conversation in the SmolLM3
 * chat format.
 *
 *   smolbot template [--date "26 November 2026"] < case.json
 *
 * stdin holds one JSON object shaped like a line of
 * refdata/template/chat_template_cases.jsonl: "messages" (array of {role,
 * content}), "enable_thinking" (default true), "add_generation_prompt"
 * (default false, as in transformers' apply_chat_template), "xml_tools"
 * (array of tool objects), "python_tools", "today". Other keys are ignored.
 * The prompt goes to stdout with no newline added. The date is --date, else
 * "today", else today's local date.
 *
 * The template writes each tool with Jinja's `| string`, which is Python's
 * repr() of the dict ({'name': 'f', 'n': 1, 'ok': True}), so this file turns
 * JSON into Python repr text; the chat module itself knows no JSON.
 */
#include "app.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "core/core.h"

/* Python repr of a str: single quotes unless the text has ' and no ". */
static int pyrepr_str(core_buf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = (has_sq && !has_dq) ? '"' : '\'';
    if (core_buf_append(b, &q, 1)) return CORE_ENOMEM;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        int l = core_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        int rc = 0;
        if (l <= 0) { /* jansson only hands out valid UTF-8; be safe anyway */
            rc = core_buf_printf(b, "\\x%02x", c);
            l = 1;
        } else if (cp == '\\' || cp == (uint32_t)q) {
            rc = core_buf_printf(b, "\\%c", (char)cp);
        } else if (cp == '\n') {
            rc = core_buf_puts(b, "\\n");
        } else if (cp == '\r') {
            rc = core_buf_puts(b, "\\r");
        } else if (cp == '\t') {
            rc = core_buf_puts(b, "\\t");
        } else if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) {
            rc = core_buf_printf(b, "\\x%02x", cp);
        } else if ((cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
                   (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 || cp == 0xfeff || cp == 0x1680) {
            /* Unicode separators and format characters: not printable for Python */
            rc = core_buf_printf(b, "\\u%04x", cp);
        } else {
            rc = core_buf_append(b, s + i, (size_t)l);
        }
        if (rc) return CORE_ENOMEM;
        i += (size_t)l;
    }
    return core_buf_append(b, &q, 1);
}

/* Python repr of a float: the shortest digits that round-trip, in fixed
 * notation for exponents in [-4, 16), else scientific (1e-05, 1.5e+16). */
static int pyrepr_real(core_buf *b, double v) {
    if (isnan(v)) return core_buf_puts(b, "nan");
    if (isinf(v)) return core_buf_puts(b, v < 0 ? "-inf" : "inf");
    char tmp[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        if (strtod(tmp, NULL) == v) break;
    }
    /* tmp = [-]d[.ddd]e[+-]XX */
    char digits[24];
    size_t nd = 0;
    const char *p = tmp;
    int neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int ex = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    if (neg && core_buf_puts(b, "-")) return CORE_ENOMEM;
    if (ex < -4 || ex >= 16) {
        if (core_buf_append(b, digits, 1)) return CORE_ENOMEM;
        if (nd > 1 && core_buf_printf(b, ".%s", digits + 1)) return CORE_ENOMEM;
        return core_buf_printf(b, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    if (ex < 0) return core_buf_printf(b, "0.%0*d%s", -ex - 1, 0, digits) ? CORE_ENOMEM : 0;
    /* ex >= 0: integer part is digits[0..ex] padded with zeros */
    for (int i = 0; i <= ex; i++)
        if (core_buf_append(b, (size_t)i < nd ? &digits[i] : "0", 1)) return CORE_ENOMEM;
    if ((size_t)ex + 1 < nd) return core_buf_printf(b, ".%s", digits + ex + 1);
    return core_buf_puts(b, ".0");
}

static int pyrepr(core_buf *b, const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        int first = 1;
        if (core_buf_puts(b, "{")) return CORE_ENOMEM;
        json_object_foreach((json_t *)v, k, x) {
            if (!first && core_buf_puts(b, ", ")) return CORE_ENOMEM;
            first = 0;
            if (pyrepr_str(b, k, strlen(k)) || core_buf_puts(b, ": ") || pyrepr(b, x)) return CORE_ENOMEM;
        }
        return core_buf_puts(b, "}");
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        if (core_buf_puts(b, "[")) return CORE_ENOMEM;
        json_array_foreach((json_t *)v, i, x) {
            if ((i && core_buf_puts(b, ", ")) || pyrepr(b, x)) return CORE_ENOMEM;
        }
        return core_buf_puts(b, "]");
    }
    case JSON_STRING: return pyrepr_str(b, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: return core_buf_printf(b, "%lld", (long long)json_integer_value(v));
    case JSON_REAL: return pyrepr_real(b, json_real_value(v));
    case JSON_TRUE: return core_buf_puts(b, "True");
    case JSON_FALSE: return core_buf_puts(b, "False");
    default: return core_buf_puts(b, "None");
    }
}

/* The tools list as chat_opts wants it: one repr per line. A non-list value
 * is written as one item (the template's [:] would reject it). */
static int tools_text(const json_t *tools, core_buf *out) {
    if (!tools || json_is_null(tools) || json_is_false(tools)) return 0;
    if (!json_is_array(tools)) return pyrepr(out, tools) || core_buf_puts(out, "\n") ? CORE_ENOMEM : 0;
    size_t i;
    json_t *x;
    json_array_foreach((json_t *)tools, i, x) {
        if (pyrepr(out, x) || core_buf_puts(out, "\n")) return CORE_ENOMEM;
    }
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: smolbot template [--date \"26 November 2026\"] < conversation.json\n\n"
               "Reads one JSON object {\"messages\": [{\"role\", \"content\"}...], \"enable_thinking\": true,\n"
               "\"add_generation_prompt\": false, \"xml_tools\": [...], \"today\": \"...\"} from stdin and prints\n"
               "the prompt in the SmolLM3 chat format (no newline added).\n");
}

int cmd_template(int argc, char **argv) {
    if (app_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *date = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--date")) {
            if (!(date = app_optarg(argc, argv, &i))) return 2;
        } else {
            fprintf(stderr, "smolbot template: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    json_error_t je;
    json_t *root = json_loadf(stdin, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fprintf(stderr, "smolbot template: stdin is not JSON: %s (line %d, column %d)\n", je.text, je.line,
                je.column);
        return 1;
    }
    int status = 1;
    chat_msg *msgs = NULL;
    core_buf xml = {0}, py = {0}, out = {0};
    json_t *jm = json_object_get(root, "messages");
    if (!json_is_object(root) || !json_is_array(jm)) {
        fprintf(stderr, "smolbot template: expected an object with a \"messages\" array\n");
        goto done;
    }
    size_t n = json_array_size(jm);
    msgs = calloc(n ? n : 1, sizeof *msgs);
    if (!msgs) goto oom;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(jm, i), *r = json_object_get(m, "role"), *c = json_object_get(m, "content");
        if (!json_is_string(r)) {
            fprintf(stderr, "smolbot template: messages[%zu].role must be a string\n", i);
            goto done;
        }
        msgs[i].role = json_string_value(r);
        if (json_is_string(c)) { /* non-string content renders as "" like the template */
            msgs[i].content = json_string_value(c);
            msgs[i].content_len = json_string_length(c);
        }
    }
    chat_opts o;
    chat_opts_default(&o);
    o.add_generation_prompt = 0;
    json_t *v;
    if ((v = json_object_get(root, "enable_thinking")) && !json_is_null(v)) o.enable_thinking = json_is_true(v);
    if ((v = json_object_get(root, "add_generation_prompt"))) o.add_generation_prompt = json_is_true(v);
    if (tools_text(json_object_get(root, "xml_tools"), &xml) || tools_text(json_object_get(root, "python_tools"), &py))
        goto oom;
    o.xml_tools = xml.len ? xml.data : NULL;
    o.python_tools = py.len ? py.data : NULL;
    if (!date && json_is_string(v = json_object_get(root, "today"))) date = json_string_value(v);
    o.date = date; /* NULL: today */
    core_err err = {0};
    if (chat_render(msgs, n, &o, &out, &err)) {
        fprintf(stderr, "smolbot template: %s\n", err.msg);
        goto done;
    }
    if (out.len && fwrite(out.data, 1, out.len, stdout) != out.len) {
        fprintf(stderr, "smolbot template: write failed\n");
        goto done;
    }
    status = fflush(stdout) ? 1 : 0;
    goto done;
oom:
    fprintf(stderr, "smolbot template: out of memory\n");
done:
    core_buf_free(&xml);
    core_buf_free(&py);
    core_buf_free(&out);
    free(msgs);
    json_decref(root);
    return status;
}
