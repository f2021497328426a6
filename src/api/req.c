/* req.c -- request parsing that the OpenAI and Ollama routes share.
 *
 * Both routes read the same things out of a JSON body: sampling settings,
 * stop strings, a message list (with an assistant's tool_calls), tools and
 * a JSON schema that become the output's grammar; both answer the same
 * "not ready" and submit failures; both cut tool calls out of the answer.
 * The code is one; only the answer's shape differs. An api_rq carries the
 * request and its dialect: api_bad() answers OpenAI's
 * {"error":{"message","type","param","code"}} or Ollama's {"error": "..."}
 * (where the message names the field: "param: message" unless the message
 * already says it).
 *
 * Every parser returns 0, or -1 after answering; with rq->r NULL (the
 * fuzzer) the answer is formatted and dropped. Request bytes never reach
 * an assert. Strings handed back are borrowed from the request's JSON.
 */
#include "api/api_int.h"
#include "prompt/prompt.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define MAX_STOP_LEN 64 /* SAMPLE_STOP_LEN */
#define MAX_TOOLS 128

int api_bad(const api_rq *q, int status, const char *code, const char *param, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!q->r && q->ollama) return -1;
    if (q->ollama) {
        if (param && !strstr(msg, param)) api_error_ollama(q->r, status, "%s: %s", param, msg);
        else api_error_ollama(q->r, status, "%s", msg);
        return -1;
    }
    const char *type = status == 429   ? "rate_limit_error"
                       : status == 503 ? "unavailable_error"
                       : status >= 500 ? "server_error"
                                       : "invalid_request_error";
    api_error(q->r, status, type, code, param, "%s", msg);
    return -1;
}

int api_oom(const api_rq *q) { return api_bad(q, 500, NULL, NULL, "out of memory"); }

int api_send_json(const api_rq *q, int status, json_t *o) {
    char *body = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(o);
    if (!body) return api_oom(q), 0;
    if (!q->r) return free(body), 0;
    return http_respond_take(q->r, status, "application/json", body, strlen(body));
}

uint64_t api_random_u64(void) {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
        static _Atomic uint64_t ctr; /* fallback only: mixed with the clock */
        v = core_now_ns() ^ (++ctr * 0x9E3779B97F4A7C15ull);
    }
    return v;
}

void api_parse_only(api *x, const api_config *cfg) {
    memset(x, 0, sizeof *x);
    x->cfg = *cfg;
    if (x->cfg.max_messages <= 0) x->cfg.max_messages = 1000;
    if (x->cfg.max_tokens <= 0) x->cfg.max_tokens = 4096; /* no engine to ask */
}

json_t *api_parse_json(const api_rq *q, const char *body, size_t len) {
    if (!body) body = q->r ? http_req_body(q->r, &len) : "";
    json_error_t je;
    json_t *root = api_json_loadb(body, len, &je);
    if (!root) {
        api_bad(q, 400, "invalid_json", NULL, "invalid JSON in the request body: %s (line %d, column %d)", je.text,
                je.line, je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        api_bad(q, 400, "invalid_json", NULL, "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

int api_not_ready(api *a, const api_rq *q) {
    int st = a->cfg.reg ? ENGINE_READY : engine_state(a->eng); /* a registry's models load on demand */
    int stopping = bridge_stopping(a->br);
    if (st == ENGINE_READY && !stopping && !atomic_load(&a->draining)) return 0;
    if (atomic_load(&a->draining) && !stopping)
        return api_bad(q, 503, "draining", NULL, "this server is draining: try again (another replica answers)"), 1;
    if (stopping || st == ENGINE_STOPPING) return api_bad(q, 503, "shutting_down", NULL, "the server is shutting down"), 1;
    if (st == ENGINE_LOADING) {
        if (q->r) http_req_add_header(q->r, "Retry-After", "1");
        return api_bad(q, 503, "model_loading", NULL, "the model is loading: try again shortly"), 1;
    }
    if (st == ENGINE_NO_MODEL)
        return api_bad(q, 503, "no_model", NULL, "no model is loaded: %s", engine_state_message(a->eng)), 1;
    return api_bad(q, 503, "model_failed", NULL, "the model failed to load: %s", engine_state_message(a->eng)), 1;
}

int api_submit_error(api *a, const api_rq *q, int rc, const char *param, const char *msg) {
    if (rc == CORE_EFULL) {
        if (q->r) http_req_add_header(q->r, "Retry-After", "1");
        return api_bad(q, 429, "queue_full", NULL, "%s", msg);
    }
    if (rc == CORE_ERANGE) return api_bad(q, 400, "context_length_exceeded", param, "%s", msg);
    if (rc == CORE_EUNSUP) {
        if (bridge_stopping(a->br)) return api_bad(q, 503, "shutting_down", NULL, "%s", msg);
        return api_not_ready(a, q) ? -1 : api_bad(q, 503, NULL, NULL, "%s", msg);
    }
    if (rc == CORE_EINVAL) return api_bad(q, 400, "invalid_value", NULL, "%s", msg);
    return api_bad(q, 500, NULL, NULL, "%s", msg);
}

int api_result_failed(api *a, const api_rq *q, int ecode, const char *emsg, const char *finish, const char *param) {
    if (ecode == CORE_ERANGE) return api_bad(q, 400, "context_length_exceeded", param, "%s", emsg), 1;
    if (ecode) return api_bad(q, 500, "internal_error", NULL, "%s", emsg[0] ? emsg : "generation failed"), 1;
    if (strcmp(finish, "cancelled")) return 0;
    int stopping = bridge_stopping(a->br);
    api_bad(q, 503, stopping ? "shutting_down" : "cancelled", NULL, "%s",
            stopping ? "the server is shutting down" : "the request was cancelled");
    return 1;
}

int api_stream_take(api *a, const api_rq *q) {
    pthread_mutex_lock(&a->mu);
    int over = a->streams >= a->cfg.max_streams;
    if (!over) a->streams++;
    pthread_mutex_unlock(&a->mu);
    if (!over) return 0;
    if (q->r) http_req_add_header(q->r, "Retry-After", "1");
    return api_bad(q, 429, "too_many_streams", NULL, "too many concurrent streams (at most %d): try again shortly",
                   a->cfg.max_streams);
}

void api_stream_give(api *a) {
    pthread_mutex_lock(&a->mu);
    a->streams--;
    pthread_mutex_unlock(&a->mu);
}

/* ---- sampling ------------------------------------------------------------------ */

int api_get_num(const api_rq *q, json_t *o, const char *key, double lo, double hi, double *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 1;
    double d = json_is_number(v) ? json_number_value(v) : NAN;
    if (!isfinite(d) || d < lo || d > hi)
        return api_bad(q, 400, "invalid_value", key, "'%s' must be a number from %g to %g", key, lo, hi);
    *out = d;
    return 0;
}

int api_get_int(const api_rq *q, json_t *o, const char *key, long long lo, long long hi, long long *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 1;
    /* Ollama's server (Go) decodes 40.0 into an int field; its JS clients send those */
    double d = json_is_integer(v) ? (double)json_integer_value(v)
               : q->ollama && json_is_real(v) ? json_real_value(v) : NAN;
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi)
        return api_bad(q, 400, "invalid_value", key, "'%s' must be an integer from %lld to %lld", key, lo, hi);
    *out = json_is_integer(v) ? json_integer_value(v) : (long long)d;
    return 0;
}

int api_get_bool(const api_rq *q, json_t *o, const char *key, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 1;
    if (!json_is_boolean(v)) return api_bad(q, 400, "invalid_value", key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

int api_parse_sampling(const api_rq *q, json_t *o, double max_temp, sample_params *sp) {
    static const struct {
        const char *key;
        double lo, hi;
        size_t off;
    } nums[] = {
        {"temperature", 0, 0, offsetof(sample_params, temperature)},
        {"top_p", 0, 1, offsetof(sample_params, top_p)},
        {"min_p", 0, 1, offsetof(sample_params, min_p)},
        {"presence_penalty", -2, 2, offsetof(sample_params, presence_penalty)},
        {"frequency_penalty", -2, 2, offsetof(sample_params, frequency_penalty)},
        {"repeat_penalty", 0, 10, offsetof(sample_params, repeat_penalty)},
    };
    double d;
    long long ll;
    int rc;
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if ((rc = api_get_num(q, o, nums[i].key, nums[i].lo, i ? nums[i].hi : max_temp, &d)) < 0) return -1;
        if (!rc) *(float *)((char *)sp + nums[i].off) = (float)d;
    }
    if ((rc = api_get_int(q, o, "top_k", 0, 1000000, &ll)) < 0) return -1;
    if (!rc) sp->top_k = (int)ll;
    sp->seed = api_random_u64();
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return api_bad(q, 400, "invalid_value", "seed", "'seed' must be an integer");
        if (!q->ollama || json_integer_value(seed) >= 0) /* Ollama: < 0 is random */
            sp->seed = (uint64_t)json_integer_value(seed);
    }
    return 0;
}

int api_parse_stops(const api_rq *q, json_t *stop, const char **stops, size_t *n_stops) {
    if (!stop || json_is_null(stop)) return 0;
    size_t n = json_is_array(stop) ? json_array_size(stop) : 1;
    if (n > SAMPLE_STOP_MAX) return api_bad(q, 400, "invalid_value", "stop", "at most %d stop strings", SAMPLE_STOP_MAX);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(stop) ? json_array_get(stop, i) : stop;
        if (!json_is_string(s) || !json_string_length(s) || json_string_length(s) > MAX_STOP_LEN)
            return api_bad(q, 400, "invalid_value", "stop",
                           "'stop' must be a string or an array of strings of 1 to %d bytes", MAX_STOP_LEN);
        stops[(*n_stops)++] = json_string_value(s);
    }
    return 0;
}

/* ---- messages ------------------------------------------------------------------ */

void api_msgs_free(api_msgs *m) {
    if (m->bufs)
        for (size_t i = 0; i < m->n; i++) core_buf_free(&m->bufs[i]);
    if (m->calls)
        for (size_t i = 0; i < m->n; i++) {
            for (size_t k = 0; k < m->calls[i].n; k++) free((char *)m->calls[i].v[k].arguments);
            free((chat_call *)m->calls[i].v);
        }
    free(m->calls);
    free(m->bufs);
    free(m->v);
    *m = (api_msgs){0};
}

/* messages[i].tool_calls (an assistant's) into m->calls[i]: the names, and
 * the arguments (an object, or OpenAI's object as a string) re-serialized
 * the way the model writes JSON (", ", ": "). */
static int parse_tool_calls(const api_rq *q, json_t *tc, size_t i, api_msgs *m) {
    char param[96];
    snprintf(param, sizeof param, "messages[%zu].tool_calls", i);
    if (!json_is_array(tc)) return api_bad(q, 400, "invalid_value", param, "'tool_calls' must be an array");
    size_t n = json_array_size(tc);
    if (!n) return 0;
    if (strcmp(m->v[i].role, "assistant"))
        return api_bad(q, 400, "invalid_value", param, "only assistant messages have 'tool_calls'");
    chat_call *cv = calloc(n, sizeof *cv);
    if (!cv) return api_oom(q);
    m->calls[i] = (chat_msg_calls){cv, 0};
    for (size_t k = 0; k < n; k++) {
        json_t *c = json_array_get(tc, k), *f = json_object_get(c, "function");
        json_t *name = json_object_get(f, "name"), *args = json_object_get(f, "arguments");
        snprintf(param, sizeof param, "messages[%zu].tool_calls[%zu]", i, k);
        if (!json_is_object(c) || !json_is_object(f) || !json_is_string(name) || !json_string_length(name))
            return api_bad(q, 400, "invalid_value", param,
                           "a tool call is {\"function\": {\"name\", \"arguments\"}} (OpenAI's with \"id\" and \"type\")");
        json_t *parsed = NULL;
        if (json_is_string(args)) {
            json_error_t je;
            parsed = json_loadb(json_string_value(args), json_string_length(args), JSON_DECODE_ANY, &je);
        } else if (json_is_object(args)) {
            parsed = json_incref(args);
        }
        snprintf(param, sizeof param, "messages[%zu].tool_calls[%zu].function.arguments", i, k);
        if (!json_is_object(parsed)) {
            json_decref(parsed);
            return api_bad(q, 400, "invalid_value", param, "'arguments' must be a JSON object (or one as a string)");
        }
        char *txt = json_dumps(parsed, JSON_ENCODE_ANY); /* not compact: ", " and ": " */
        json_decref(parsed);
        if (!txt) return api_oom(q);
        cv[k] = (chat_call){json_string_value(name), json_string_length(name), txt, strlen(txt)};
        m->calls[i].n = k + 1;
    }
    return 0;
}

int api_parse_messages(const api_rq *q, json_t *arr, int max_messages, api_msgs *m) {
    if (!json_is_array(arr)) return api_bad(q, 400, "invalid_value", "messages", "'messages' must be an array of messages");
    size_t n = json_array_size(arr);
    if (n > (size_t)max_messages)
        return api_bad(q, 400, "too_many_messages", "messages", "%zu messages; at most %d are allowed", n, max_messages);
    if (!n) return 0;
    m->v = calloc(n, sizeof *m->v);
    m->bufs = calloc(n, sizeof *m->bufs);
    m->calls = calloc(n, sizeof *m->calls);
    m->n = n;
    if (!m->v || !m->bufs || !m->calls) return api_oom(q);
    for (size_t i = 0; i < n; i++) {
        char param[64];
        json_t *msg = json_array_get(arr, i);
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(msg)) return api_bad(q, 400, "invalid_value", param, "each message must be an object");
        json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
        json_t *images = json_object_get(msg, "images");
        if (images && !json_is_null(images) && !(json_is_array(images) && !json_array_size(images)))
            return api_bad(q, 400, "invalid_value", param, "images are not supported: the model reads text only");
        snprintf(param, sizeof param, "messages[%zu].role", i);
        if (!json_is_string(role)) return api_bad(q, 400, "invalid_value", param, "'role' must be a string");
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system"; /* OpenAI's newer name for it */
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return api_bad(q, 400, "invalid_value", param, "unknown role '%.40s' (system, user, assistant or tool)", rs);
        m->v[i].role = rs;
        snprintf(param, sizeof param, "messages[%zu].content", i);
        if (json_is_string(content)) {
            m->v[i].content = json_string_value(content);
            m->v[i].content_len = json_string_length(content);
        } else if (json_is_array(content)) {
            core_buf *b = &m->bufs[i];
            size_t k;
            json_t *part;
            json_array_foreach(content, k, part) {
                json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
                if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") ||
                    !json_is_string(text))
                    return api_bad(q, 400, "invalid_value", param, "content parts must be {\"type\":\"text\",\"text\":\"...\"}");
                if ((k > 0 && core_buf_puts(b, "\n")) ||
                    core_buf_append(b, json_string_value(text), json_string_length(text)))
                    return api_oom(q);
            }
            m->v[i].content = b->data ? b->data : "";
            m->v[i].content_len = b->len;
        } else if (!content || json_is_null(content)) {
            if (!q->ollama && strcmp(rs, "assistant")) /* Ollama: an absent content is "" */
                return api_bad(q, 400, "invalid_value", param, "'content' must be a string or an array of text parts");
            m->v[i].content = "";
        } else {
            return api_bad(q, 400, "invalid_value", param, "'content' must be a string or an array of text parts");
        }
        json_t *tc = json_object_get(msg, "tool_calls");
        if (tc && !json_is_null(tc) && parse_tool_calls(q, tc, i, m)) return -1;
    }
    return 0;
}

/* ---- tools and the output's grammar ----------------------------------------------- */

void api_tools_free(api_tools *t) {
    core_buf_free(&t->repr);
    core_buf_free(&t->json);
    sample_grammar_free(t->grammar);
    t->grammar = NULL;
}

/* 400 for a grammar that does not compile: the message names the schema part. */
static int grammar_error(const api_rq *q, const char *param, int rc, const core_err *err) {
    if (rc == CORE_ENOMEM) return api_oom(q);
    return api_bad(q, 400, rc == CORE_EUNSUP ? "unsupported_schema" : "invalid_schema", param, "%s", err->msg);
}

/* The tool names must be what OpenAI allows: the model writes them in JSON
 * and clients match them back. */
static int valid_tool_name(const char *s, size_t n) {
    if (n < 1 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-' || s[i] == '.'))
            return 0;
    return 1;
}

int api_tools_check(const api_rq *q, json_t *tools, size_t *n_tools) {
    *n_tools = 0;
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return api_bad(q, 400, "invalid_value", "tools", "'tools' must be an array");
    size_t nt = json_array_size(tools);
    if (nt > MAX_TOOLS) return api_bad(q, 400, "invalid_value", "tools", "at most %d tools", MAX_TOOLS);
    for (size_t i = 0; i < nt; i++) {
        json_t *t = json_array_get(tools, i), *f = json_object_get(t, "function"), *type = json_object_get(t, "type");
        json_t *name = json_object_get(f, "name"), *params = json_object_get(f, "parameters");
        char param[64];
        snprintf(param, sizeof param, "tools[%zu]", i);
        if (!json_is_object(t) || !json_is_string(type) || strcmp(json_string_value(type), "function") || !json_is_object(f))
            return api_bad(q, 400, "invalid_value", param,
                           "a tool is {\"type\": \"function\", \"function\": {\"name\", \"description\", \"parameters\"}}");
        snprintf(param, sizeof param, "tools[%zu].function.name", i);
        if (!json_is_string(name) || !valid_tool_name(json_string_value(name), json_string_length(name)))
            return api_bad(q, 400, "invalid_value", param, "a tool's name is 1 to 64 of a-z, A-Z, 0-9, _, - and .");
        for (size_t k = 0; k < i; k++)
            if (json_equal(name, json_object_get(json_object_get(json_array_get(tools, k), "function"), "name")))
                return api_bad(q, 400, "invalid_value", param, "two tools are named '%s'", json_string_value(name));
        snprintf(param, sizeof param, "tools[%zu].function.parameters", i);
        if (params && !json_is_null(params) && !json_is_object(params))
            return api_bad(q, 400, "invalid_value", param, "'parameters' must be a JSON Schema object");
    }
    *n_tools = nt;
    return 0;
}

int api_tool_choice(const api_rq *q, json_t *tc, size_t n_tools, int *choice, const char **named) {
    static const char form[] =
        "'tool_choice' must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}";
    *choice = n_tools ? API_TC_AUTO : API_TC_NONE;
    *named = NULL;
    if (!tc || json_is_null(tc)) return 0;
    const char *v = json_string_value(tc);
    if (v && !strcmp(v, "none")) *choice = API_TC_NONE;
    else if (v && !strcmp(v, "auto")) *choice = n_tools ? API_TC_AUTO : API_TC_NONE;
    else if (v && !strcmp(v, "required")) *choice = API_TC_REQUIRED;
    else if (json_is_object(tc)) {
        json_t *f = json_object_get(tc, "function"), *type = json_object_get(tc, "type");
        *named = json_string_value(json_object_get(f, "name"));
        if (!json_is_string(type) || strcmp(json_string_value(type), "function") || !*named)
            return api_bad(q, 400, "invalid_value", "tool_choice", "%s", form);
        *choice = API_TC_NAMED;
    } else {
        return api_bad(q, 400, "invalid_value", "tool_choice", "%s", form);
    }
    if ((*choice == API_TC_REQUIRED || *choice == API_TC_NAMED) && !n_tools)
        return api_bad(q, 400, "invalid_value", "tool_choice", "'tool_choice' asks for a tool call but there are no 'tools'");
    return 0;
}

int api_calls_form(engine *eng) {
    const tok *tk = eng ? engine_tok(eng) : NULL;
    return tk && prompt_calls_json(tk) ? API_CALLS_JSON : API_CALLS_TAGS;
}

int api_tools_build(const api_rq *q, json_t *tools, int choice, const char *named, int parallel, int form,
                    api_tools *t) {
    core_err err = {0};
    size_t nt = json_array_size(tools);
    char *txt = json_dumps(tools, JSON_COMPACT | JSON_REAL_PRECISION(17));
    int rc = txt ? chat_tools_repr(txt, strlen(txt), &t->repr, &err) : CORE_ENOMEM;
    if (!rc && core_buf_puts(&t->json, txt)) rc = core_errf(&err, CORE_ENOMEM, "out of memory");
    free(txt);
    if (rc) return grammar_error(q, "tools", rc, &err);
    sample_tool tv[MAX_TOOLS];
    char *sv[MAX_TOOLS] = {0};
    size_t n = 0;
    for (size_t i = 0; i < nt && i < MAX_TOOLS; i++) {
        json_t *f = json_object_get(json_array_get(tools, i), "function"), *params = json_object_get(f, "parameters");
        const char *name = json_string_value(json_object_get(f, "name"));
        if (named && strcmp(name, named)) continue;
        sv[n] = json_is_object(params) ? json_dumps(params, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
        tv[n] = (sample_tool){name, sv[n], sv[n] ? strlen(sv[n]) : 0};
        n++;
    }
    if (named && !n) /* nothing was kept, so nothing to free */
        return api_bad(q, 400, "invalid_value", "tool_choice", "'tool_choice' names '%.64s', which is not in 'tools'", named);
    int json = form == API_CALLS_JSON;
    /* The bare form has no tag to wake a lazy grammar: auto is free text,
     * and an answer that is a call object becomes a call (as llama.cpp). */
    if (json && choice == API_TC_AUTO) rc = 0;
    else if (json) rc = sample_grammar_tools_json(tv, n, &t->grammar, &err);
    else rc = sample_grammar_tools(tv, n, named ? 0 : parallel, &t->grammar, &err);
    for (size_t i = 0; i < n; i++) free(sv[i]);
    if (rc) return grammar_error(q, "tools", rc, &err);
    t->on = json ? API_CALLS_JSON : API_CALLS_TAGS;
    t->lazy = !json && choice == API_TC_AUTO;
    return 0;
}

int api_schema_grammar(const api_rq *q, json_t *schema, const char *param, api_tools *t) {
    core_err err = {0};
    char *txt = schema ? json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17)) : strdup("{}");
    int rc = txt ? sample_grammar_schema(txt, strlen(txt), &t->grammar, &err) : CORE_ENOMEM;
    free(txt);
    return rc ? grammar_error(q, param, rc, &err) : 0;
}

/* ---- tool calls in the answer --------------------------------------------------- */

/* A call's body ("\n{\"name\": ..., \"arguments\": {...}}\n") as a tool
 * call, or NULL when it is not a valid call. Llama 3.x names the arguments
 * "parameters" (and may add "type": "function"); both are accepted, and
 * arguments written as a string are accepted when the string holds a JSON
 * object. OpenAI's has a new id and the arguments as a string: the model's
 * own text when it can be cut out (what the grammar makes), else jansson's
 * compact form. Ollama's has the arguments as an object. */
json_t *api_tool_call(const char *body, size_t len, int ollama) {
    json_error_t je;
    json_t *o = json_loadb(body, len, 0, &je), *res = NULL, *parsed = NULL;
    const char *key = json_object_get(o, "arguments") ? "arguments" : "parameters";
    json_t *name = json_object_get(o, "name"), *args = json_object_get(o, key), *type = json_object_get(o, "type");
    size_t want = 2 + (type != NULL);
    if (!json_is_object(o) || json_object_size(o) != want || !json_is_string(name) || !json_string_length(name) ||
        (type && !(json_is_string(type) && !strcmp(json_string_value(type), "function"))))
        goto out;
    if (json_is_string(args)) { /* {"arguments": "{\"city\": ...}"}: the object inside */
        parsed = json_loadb(json_string_value(args), json_string_length(args), 0, &je);
        if (!json_is_object(parsed)) goto out;
        args = parsed;
    }
    if (!json_is_object(args)) goto out;
    if (ollama) {
        res = json_pack("{s:{s:O, s:O}}", "function", "name", name, "arguments", args);
        goto out;
    }
    char *txt = NULL;
    char mid[16];
    snprintf(mid, sizeof mid, "\"%s\":", key);
    const char *p = parsed ? NULL : memmem(body, len, mid, strlen(mid)), *end = body + len;
    while (end > body && (end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\r' || end[-1] == '\t')) end--;
    if (p && end > p && end[-1] == '}') {
        p += strlen(mid);
        while (p < end && *p == ' ') p++;
        const char *e = end - 1; /* the outer object's '}' */
        while (e > p && (e[-1] == ' ' || e[-1] == '\n')) e--;
        json_t *back = e > p ? json_loadb(p, (size_t)(e - p), 0, &je) : NULL;
        if (back && json_equal(back, args)) txt = strndup(p, (size_t)(e - p));
        json_decref(back);
    }
    if (!txt) txt = json_dumps(args, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (!txt) goto out;
    char id[40];
    snprintf(id, sizeof id, "call_%016llx%08llx", (unsigned long long)api_random_u64(),
             (unsigned long long)(api_random_u64() & 0xffffffffu));
    res = json_pack("{s:s, s:s, s:{s:O, s:s}}", "id", id, "type", "function", "function", "name", name, "arguments", txt);
    free(txt);
out:
    json_decref(parsed);
    json_decref(o);
    return res;
}

int api_all_space(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t') return 0;
    return 1;
}

typedef struct calls_acc {
    core_buf *content;
    json_t *calls;
    int ollama, json;
} calls_acc;

static int acc_call(void *ctx, const char *body, size_t len, int complete) {
    calls_acc *c = ctx;
    json_t *tc = complete ? api_tool_call(body, len, c->ollama) : NULL;
    if (tc) return json_array_append_new(c->calls, tc) ? CORE_ENOMEM : 0;
    if (c->json) return CHAT_CALLS_REJECT; /* the parser keeps the text as content */
    /* not a call after all: the text stays where it was */
    if (core_buf_puts(c->content, "<tool_call>") || core_buf_append(c->content, body, len) ||
        (complete && core_buf_puts(c->content, "</tool_call>")))
        return CORE_ENOMEM;
    return 0;
}

static void calls_init(chat_calls *cp, int form) {
    if (form == API_CALLS_JSON) chat_calls_init_json(cp);
    else chat_calls_init(cp);
}

int api_split_calls(const char *text, size_t len, int ollama, int form, core_buf *content, json_t *calls) {
    calls_acc acc = {content, calls, ollama, form == API_CALLS_JSON};
    chat_calls cp;
    calls_init(&cp, form);
    int rc = chat_calls_push(&cp, text, len, content, acc_call, &acc);
    if (!rc) rc = chat_calls_finish(&cp, content, acc_call, &acc);
    chat_calls_free(&cp);
    if (!rc && json_array_size(calls)) /* trailing whitespace goes with the calls */
        while (content->len && api_all_space(content->data + content->len - 1, 1)) content->len--;
    return rc;
}

/* ---- tool calls in a stream -------------------------------------------------------- */

void api_calls_stream_init(api_calls_stream *s, int ollama, int form, api_text_fn text, api_call_fn call, void *ctx) {
    *s = (api_calls_stream){.ollama = ollama, .text = text, .call = call, .ctx = ctx};
    calls_init(&s->cp, form);
}

void api_calls_stream_free(api_calls_stream *s) {
    chat_calls_free(&s->cp);
    core_buf_free(&s->cbuf);
    core_buf_free(&s->ws);
}

/* Content: whitespace alone waits for what follows it (after the last call
 * it is dropped, as the non-stream answer does). */
static int cs_content(api_calls_stream *s, const char *text, size_t len) {
    if (!len) return 0;
    if (api_all_space(text, len)) return core_buf_append(&s->ws, text, len);
    if (!s->ws.len) return s->text(s->ctx, text, len);
    if (core_buf_append(&s->ws, text, len)) return CORE_ENOMEM;
    int rc = s->text(s->ctx, s->ws.data, s->ws.len);
    core_buf_clear(&s->ws);
    return rc;
}

/* A finished <tool_call> block: the content before it, then the call (or
 * its text, when it is not a call after all). */
static int cs_call(void *ctx, const char *body, size_t len, int complete) {
    api_calls_stream *s = ctx;
    int rc = cs_content(s, s->cbuf.data, s->cbuf.len);
    core_buf_clear(&s->cbuf);
    json_t *tc = complete ? api_tool_call(body, len, s->ollama) : NULL;
    if (!tc && s->cp.json) return rc ? rc : CHAT_CALLS_REJECT; /* the parser keeps the text as content */
    if (!tc) {
        core_buf t = {0};
        if (core_buf_puts(&t, "<tool_call>") || core_buf_append(&t, body, len) ||
            (complete && core_buf_puts(&t, "</tool_call>")))
            rc = CORE_ENOMEM;
        else if (!rc)
            rc = cs_content(s, t.data, t.len);
        core_buf_free(&t);
        return rc;
    }
    core_buf_clear(&s->ws); /* whitespace between content and a call */
    int crc = s->call(s->ctx, tc, s->n_calls++);
    return rc ? rc : crc;
}

int api_calls_stream_push(api_calls_stream *s, const char *text, size_t len) {
    core_buf_clear(&s->cbuf);
    int rc = chat_calls_push(&s->cp, text, len, &s->cbuf, cs_call, s);
    return rc ? rc : cs_content(s, s->cbuf.data, s->cbuf.len);
}

int api_calls_stream_finish(api_calls_stream *s) {
    core_buf_clear(&s->cbuf);
    int rc = chat_calls_finish(&s->cp, &s->cbuf, cs_call, s);
    if (!rc) rc = cs_content(s, s->cbuf.data, s->cbuf.len);
    if (!rc && !s->n_calls && s->ws.len) rc = s->text(s->ctx, s->ws.data, s->ws.len);
    return rc;
}
