/* cmd_template.c -- `smolbot template`: render a conversation in the SmolLM3
 * chat format, or in a model file's own format.
 *
 *   smolbot template [-m MODEL] [--date "26 November 2026"] < case.json
 *
 * With -m, the prompt is what the server would build for that file
 * (src/prompt): a Llama or Qwen file's own tokenizer.chat_template through
 * the Jinja engine, SmolLM3's native renderer for SmolLM3 files.
 *
 * stdin holds one JSON object shaped like a line of
 * refdata/template/chat_template_cases.jsonl: "messages" (array of {role,
 * content}), "enable_thinking" (default true), "add_generation_prompt"
 * (default false, as in transformers' apply_chat_template), "tools" (array
 * of tool objects; "xml_tools" is the template's own name for it),
 * "python_tools", "today". Other keys are ignored.
 * The prompt goes to stdout with no newline added. The date is --date, else
 * "today", else today's local date.
 *
 * The template writes each tool with Jinja's `| string`, which is Python's
 * repr() of the dict ({'name': 'f', 'n': 1, 'ok': True}): chat_tools_repr.
 */
#include "app/app.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "prompt/prompt.h"
#include "tok/tok.h"

/* The tools list as chat_opts wants it: one repr line per tool. */
static int tools_text(const json_t *tools, core_buf *out, core_err *err) {
    if (!tools || json_is_null(tools) || json_is_false(tools)) return 0;
    char *txt = json_dumps(tools, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17));
    if (!txt) return core_errf(err, CORE_ENOMEM, "out of memory");
    int rc = chat_tools_repr(txt, strlen(txt), out, err);
    free(txt);
    return rc;
}

/* The prompt's text for the model file at path (src/prompt decides the format). */
static int file_render(const char *path, json_t *root, const chat_msg *msgs, size_t n, const chat_opts *co,
                       core_buf *out, core_err *err) {
    char found[4096];
    if (app_find_model(path, found, sizeof found)) return core_errf(err, CORE_ENOTFOUND, "model '%s' not found", path);
    gguf *g = NULL;
    tok *tk = NULL;
    char *tools = NULL;
    int rc = gguf_open(&g, found, err);
    if (!rc) rc = tok_load(&tk, g, err);
    gguf_close(g);
    json_t *tl = json_object_get(root, "tools");
    if (!rc && json_is_array(tl) && json_array_size(tl) &&
        !(tools = json_dumps(tl, JSON_COMPACT | JSON_REAL_PRECISION(17))))
        rc = core_errf(err, CORE_ENOMEM, "out of memory");
    if (!rc) {
        prompt_opts po = {.thinking = co->enable_thinking, .date = co->date, .xml_tools = co->xml_tools,
                          .python_tools = co->python_tools, .tools_json = tools, .no_gen = !co->add_generation_prompt};
        rc = prompt_render(tk, msgs, n, &po, out, err);
    }
    free(tools);
    tok_free(tk);
    return rc;
}

static void usage(FILE *f) {
    fprintf(f, "usage: smolbot template [-m MODEL] [--date \"26 November 2026\"] < conversation.json\n\n"
               "Reads one JSON object {\"messages\": [{\"role\", \"content\"}...], \"enable_thinking\": true,\n"
               "\"add_generation_prompt\": false, \"tools\": [...], \"python_tools\": [...], \"today\": \"...\"} from stdin and prints\n"
               "the prompt in the SmolLM3 chat format (no newline added).\n\n"
               "  -m MODEL   the prompt the server builds for this GGUF file: its own chat template\n"
               "             (Llama, Qwen...) through the Jinja engine, the SmolLM3 format for SmolLM3\n");
}

int cmd_template(int argc, char **argv) {
    if (app_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *date = NULL, *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--date")) {
            if (!(date = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (!(model = app_optarg(argc, argv, &i))) return 2;
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
    core_err err = {0};
    json_t *tl = json_object_get(root, "tools");
    if (!tl) tl = json_object_get(root, "xml_tools");
    if (tools_text(tl, &xml, &err) || tools_text(json_object_get(root, "python_tools"), &py, &err)) {
        fprintf(stderr, "smolbot template: %s\n", err.msg);
        goto done;
    }
    o.xml_tools = xml.len ? xml.data : NULL;
    o.python_tools = py.len ? py.data : NULL;
    if (!date && json_is_string(v = json_object_get(root, "today"))) date = json_string_value(v);
    o.date = date; /* NULL: today */
    if (model) {
        if (file_render(model, root, msgs, n, &o, &out, &err)) {
            fprintf(stderr, "smolbot template: %s\n", err.msg);
            goto done;
        }
    } else if (chat_render(msgs, n, &o, &out, &err)) {
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
