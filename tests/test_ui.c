/* test_ui.c -- the page's server side (src/api/ui.c) over real loopback.
 *
 * A server is started with http_server_new + api_handle on a free port, an
 * in-memory store and an engine: no model (the no-model mode) or the tiny
 * SmolLM3 from ../shared (random weights: the text is gibberish, the
 * mechanics are real). The client is libcurl. Checked: static files, the
 * CSRF rules, the quote stream, a whole answer (POST -> SSE GET -> stored),
 * Last-Event-ID replay, Stop, escaping of user text and of an imported
 * hostile answer, and 503 / working quote without a model.
 */
#include "t.h"

#include <curl/curl.h>
#include <stdint.h>
#include <string.h>

#include "api/api.h"
#include "engine/engine.h"
#include "http/http.h"
#include "store/store.h"

typedef struct srv {
    engine *eng;
    store *st;
    api *a;
    http_server *h;
    int port;
} srv;

static int srv_start(srv *s, const char *model) {
    core_err err = {0};
    memset(s, 0, sizeof *s);
    engine_config ec = {0};
    ec.model_path = model;
    ec.n_threads = 2;
    ec.n_ctx = 1024;
    if (engine_new(&s->eng, &ec, &err)) return -1;
    engine_wait_ready(s->eng, 60);
    if (store_open(&s->st, ":memory:", &err)) return -1;
    api_config ac = {0};
    if (api_new(&s->a, s->eng, s->st, &ac, &err)) return -1;
    http_config hc = {0};
    if (http_server_new(&hc, api_handle, s->a, &s->h, &err)) return -1;
    s->port = http_server_port(s->h);
    return 0;
}

static void srv_stop(srv *s) {
    http_server_stop(s->h);
    api_free(s->a);
    engine_free(s->eng);
    http_server_free(s->h);
    store_close(s->st);
}

typedef struct resp {
    long status;
    core_buf body, head;
} resp;

static size_t on_data(char *p, size_t sz, size_t n, void *ud) {
    core_buf_append(ud, p, sz * n);
    return sz * n;
}

/* method GET/POST/DELETE; hx: send HX-Request; extra: one more header or NULL. */
static resp req(const srv *s, const char *method, const char *path, const char *body, int hx, const char *extra) {
    resp r = {0};
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    struct curl_slist *h = NULL;
    if (hx) h = curl_slist_append(h, "HX-Request: true");
    if (extra) h = curl_slist_append(h, extra);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r.head);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body.data) core_buf_puts(&r.body, "");
    if (!r.head.data) core_buf_puts(&r.head, "");
    return r;
}

static void resp_free(resp *r) {
    core_buf_free(&r->body);
    core_buf_free(&r->head);
}

/* The value of attribute attr="..." after the first occurrence of attr. */
static void attr(const char *html, const char *attr, char *out, size_t cap) {
    out[0] = 0;
    char pat[64];
    snprintf(pat, sizeof pat, "%s=\"", attr);
    const char *p = strstr(html, pat);
    if (!p) return;
    p += strlen(pat);
    size_t n = strcspn(p, "\"");
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
}

static void test_static_and_csrf(void) {
    srv s;
    CHECK(srv_start(&s, NULL) == 0);
    resp r = req(&s, "GET", "/", NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, "<!doctype html>") != NULL);
    resp_free(&r);
    r = req(&s, "GET", "/app.js", NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    r = req(&s, "GET", "/static/htmx.min.js", NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    /* state-changing without HX-Request, or from another origin: 403 */
    r = req(&s, "POST", "/ui/conversations", "", 0, NULL);
    CHECK_EQ_INT(r.status, 403);
    resp_free(&r);
    r = req(&s, "POST", "/ui/conversations", "", 1, "Origin: http://evil.example");
    CHECK_EQ_INT(r.status, 403);
    resp_free(&r);
    char origin[64];
    snprintf(origin, sizeof origin, "Origin: http://127.0.0.1:%d", s.port);
    r = req(&s, "POST", "/ui/conversations", "", 1, origin);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, "id=\"messages\"") != NULL);
    CHECK(strstr(r.head.data, "HX-Trigger: smolbot:convs") != NULL);
    char id[32];
    attr(r.body.data, "data-conv", id, sizeof id);
    CHECK_EQ_INT((int)strlen(id), STORE_ID_LEN);
    resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/ui/c/%s", id);
    r = req(&s, "DELETE", path, NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 403);
    resp_free(&r);
    r = req(&s, "GET", "/ui/c/0123456789abcdef", NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    r = req(&s, "GET", "/ui/c/latest", NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, id) != NULL);
    resp_free(&r);
    srv_stop(&s);
}

static void test_no_model(void) {
    srv s;
    CHECK(srv_start(&s, NULL) == 0);
    resp r = req(&s, "GET", "/ui/status", NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, "\"state\":\"no_model\"") != NULL);
    CHECK(strstr(r.body.data, "smolbot pull") != NULL);
    resp_free(&r);
    r = req(&s, "POST", "/ui/c/latest/messages", "text=hello", 1, NULL);
    CHECK_EQ_INT(r.status, 503);
    CHECK(strstr(r.body.data, "smolbot pull") != NULL);
    resp_free(&r);
    /* the quote needs no model: the whole passage, then done */
    double t0 = core_now_s();
    r = req(&s, "GET", "/ui/quote", NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, "event: block") != NULL);
    CHECK(strstr(r.body.data, "In the beginning was the Word") != NULL);
    CHECK(strstr(r.body.data, "full of grace and truth.") != NULL);
    CHECK(strstr(r.body.data, "event: done") != NULL);
    CHECK(core_now_s() - t0 < 20);
    resp_free(&r);
    srv_stop(&s);
}

static void test_import_escapes(void) {
    srv s;
    CHECK(srv_start(&s, NULL) == 0);
    const char *exp =
        "{\"format\":\"smolbot-conversation\",\"version\":1,\"conversation\":{\"title\":\"<b>t</b>\",\"current_leaf\":2},"
        "\"messages\":[{\"id\":1,\"parent\":null,\"role\":\"user\",\"content\":\"<script>window.__xss=1</script>\"},"
        "{\"id\":2,\"parent\":1,\"role\":\"assistant\",\"content\":\"hi <script>window.__xss=2</script>\\n\\n"
        "<img src=x onerror=\\\"window.__xss=3\\\">\\n\\n[click](javascript:window.__xss=4)\","
        "\"reasoning\":\"<i>r</i>\"}]}";
    resp r = req(&s, "POST", "/ui/import", exp, 1, "Content-Type: application/json");
    CHECK_EQ_INT(r.status, 200);
    /* the answer is a summary (title escaped), the conversation comes on its own */
    CHECK_MSG(strstr(r.body.data, "&lt;b&gt;t&lt;/b&gt;</b>: 2 messages") != NULL, "%s", r.body.data);
    CHECK(strstr(r.body.data, "script") == NULL);
    char id[32], path[64];
    attr(r.body.data, "data-conv", id, sizeof id);
    snprintf(path, sizeof path, "/ui/c/%s", id);
    resp_free(&r);
    r = req(&s, "GET", path, NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, "<script") == NULL);
    CHECK(strstr(r.body.data, "<img") == NULL);
    CHECK(strstr(r.body.data, "href=\"javascript") == NULL);
    CHECK(strstr(r.body.data, "<i>r") == NULL);
    CHECK_MSG(strstr(r.body.data, "&lt;script&gt;") != NULL, "%s", r.body.data);
    resp_free(&r);
    r = req(&s, "GET", "/ui/conversations", NULL, 0, NULL);
    CHECK(strstr(r.body.data, "&lt;b&gt;t&lt;/b&gt;") != NULL);
    resp_free(&r);
    srv_stop(&s);
}

static void test_answer(void) {
    const char *m = t_shared("models/smollm3-tiny-q4_k_m.gguf");
    if (!m) T_SKIP("../shared/models/smollm3-tiny-q4_k_m.gguf not found");
    srv s;
    CHECK(srv_start(&s, m) == 0);
    resp r = req(&s, "POST", "/ui/conversations", "", 1, NULL);
    char id[32], path[256], sse[256], msg[32];
    attr(r.body.data, "data-conv", id, sizeof id);
    resp_free(&r);
    snprintf(path, sizeof path, "/ui/c/%s/messages", id);
    r = req(&s, "POST", path, "text=%3Cb%3Ehi%3C%2Fb%3E&max_tokens=12&temperature=0.7", 1, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, "&lt;b&gt;hi&lt;/b&gt;") != NULL);
    CHECK(strstr(r.body.data, "msg assistant streaming") != NULL);
    attr(r.body.data, "sse-connect", sse, sizeof sse);
    attr(strstr(r.body.data, "msg assistant"), "data-msg", msg, sizeof msg);
    resp_free(&r);
    /* a second message while this one runs: 409 (unless it already ended) */
    r = req(&s, "GET", sse, NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, "event: stats") != NULL);
    CHECK(strstr(r.body.data, "12 tokens") != NULL);
    CHECK(strstr(r.body.data, "event: done") != NULL);
    resp_free(&r);
    /* replay after id 1 omits event 1 */
    r = req(&s, "GET", sse, NULL, 0, "Last-Event-ID: 1");
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body.data, "id: 1\n") == NULL);
    CHECK(strstr(r.body.data, "event: done") != NULL);
    resp_free(&r);
    /* stored and shown finished */
    snprintf(path, sizeof path, "/ui/c/%s", id);
    r = req(&s, "GET", path, NULL, 0, NULL);
    CHECK(strstr(r.body.data, "sse-connect") == NULL);
    CHECK(strstr(r.body.data, "12 tokens") != NULL);
    resp_free(&r);
    /* stop a long answer */
    snprintf(path, sizeof path, "/ui/c/%s/messages", id);
    r = req(&s, "POST", path, "text=again&max_tokens=100000", 1, NULL);
    CHECK_EQ_INT(r.status, 200);
    attr(r.body.data, "sse-connect", sse, sizeof sse);
    resp_free(&r);
    r = req(&s, "POST", path, "text=third", 1, NULL);
    CHECK_EQ_INT(r.status, 409);
    resp_free(&r);
    snprintf(path, sizeof path, "/ui/c/%s/stop", id);
    r = req(&s, "POST", path, "", 1, NULL);
    CHECK_EQ_INT(r.status, 204);
    resp_free(&r);
    r = req(&s, "GET", sse, NULL, 0, NULL);
    CHECK(strstr(r.body.data, "stopped") != NULL);
    CHECK(strstr(r.body.data, "event: done") != NULL);
    resp_free(&r);
    /* regenerate and continue */
    snprintf(path, sizeof path, "/ui/c/%s/regenerate", id);
    r = req(&s, "POST", path, "max_tokens=5", 1, NULL);
    CHECK_EQ_INT(r.status, 200);
    attr(r.body.data, "sse-connect", sse, sizeof sse);
    resp_free(&r);
    r = req(&s, "GET", sse, NULL, 0, NULL);
    CHECK(strstr(r.body.data, "event: done") != NULL);
    resp_free(&r);
    snprintf(path, sizeof path, "/ui/c/%s/continue", id);
    r = req(&s, "POST", path, "max_tokens=5", 1, NULL);
    CHECK_EQ_INT(r.status, 200);
    attr(r.body.data, "sse-connect", sse, sizeof sse);
    resp_free(&r);
    r = req(&s, "GET", sse, NULL, 0, NULL);
    CHECK(strstr(r.body.data, "event: done") != NULL);
    resp_free(&r);
    snprintf(path, sizeof path, "/ui/c/%s/export?fmt=md", id);
    r = req(&s, "GET", path, NULL, 0, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.head.data, "attachment") != NULL);
    CHECK(strstr(r.body.data, "## User") != NULL);
    resp_free(&r);
    srv_stop(&s);
}

int main(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    T_RUN(test_static_and_csrf);
    T_RUN(test_no_model);
    T_RUN(test_import_escapes);
    T_RUN(test_answer);
    curl_global_cleanup();
    return t_done();
}
