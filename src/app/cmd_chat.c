/* cmd_chat.c -- `smolbot chat`: a terminal chat on the same engine the
 * server uses.
 *
 * Each turn is rendered in the SmolLM3 chat format (date pinned at start,
 * so the cached prefix stays valid), tokenized with user text kept plain,
 * and submitted to the engine under one conversation id: only the new
 * tokens of a turn are prefilled. Answers stream as they are generated;
 * reasoning is shown dimmed on a terminal (or hidden), and never kept in
 * the history the model sees again.
 *
 * Ctrl-C cancels the answer in progress, not the program. With stdin not a
 * terminal, lines are read as turns one by one, so sessions can be scripted.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app/app.h"
#include "chat/chat.h"
#include "core/core.h"
#include "engine/engine.h"
#include "kern/kern.h"
#include "model/model.h"
#include "prompt/prompt.h"

typedef struct turn_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int tty, hide_thinking, in_reasoning;
    core_buf answer;
    engine_stats st;
    char finish[16];
    char error[512];
} turn_state;

static volatile sig_atomic_t g_interrupt;
static void on_sigint(int sig) { (void)sig; g_interrupt = 1; }

static int on_event(void *ctx, const engine_event *ev) {
    turn_state *t = ctx;
    if (ev->type == ENGINE_EV_TEXT) {
        if (ev->reasoning_len && !t->hide_thinking) {
            if (!t->in_reasoning) fputs(t->tty ? "\033[2m" : "<think>\n", stdout);
            t->in_reasoning = 1;
            fwrite(ev->reasoning, 1, ev->reasoning_len, stdout);
        }
        if (ev->text_len) {
            if (t->in_reasoning) fputs(t->tty ? "\033[0m\n" : "\n</think>\n", stdout);
            t->in_reasoning = 0;
            fwrite(ev->text, 1, ev->text_len, stdout);
            core_buf_append(&t->answer, ev->text, ev->text_len);
        }
        fflush(stdout);
    } else if (ev->type == ENGINE_EV_DONE || ev->type == ENGINE_EV_ERROR) {
        if (t->in_reasoning) fputs(t->tty ? "\033[0m\n" : "\n</think>\n", stdout);
        pthread_mutex_lock(&t->mu);
        t->st = *ev->stats;
        snprintf(t->finish, sizeof t->finish, "%s", ev->stats->finish_reason);
        if (ev->type == ENGINE_EV_ERROR) snprintf(t->error, sizeof t->error, "%s", ev->error);
        t->done = 1;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
    }
    return g_interrupt;
}

typedef struct history {
    chat_msg *m;
    size_t n, cap;
} history;

static int hist_push(history *h, const char *role, const char *text, size_t len) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 16;
        chat_msg *m = realloc(h->m, cap * sizeof *m);
        if (!m) return -1;
        h->m = m;
        h->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, text, len);
    c[len] = 0;
    h->m[h->n++] = (chat_msg){role, c, len};
    return 0;
}

static void hist_clear(history *h, int keep_system) {
    size_t keep = keep_system && h->n && !strcmp(h->m[0].role, "system") ? 1 : 0;
    for (size_t i = keep; i < h->n; i++) free((char *)h->m[i].content);
    h->n = keep;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: smolbot chat [-m MODEL] [options]\n"
            "  --system TEXT      system prompt (custom instructions)\n"
            "  --think / --no-think   reasoning mode (default: think)\n"
            "  --hide-thinking    do not print the reasoning\n"
            "  --temp T --top-p P --top-k K --min-p P --seed S   sampling (defaults 0.6 / 0.95 / off / off)\n"
            "  -n N               max tokens per answer (default: until the context is full)\n"
            "  --ctx N            context positions (default 4096)\n"
            "  -t N               threads (default: all cores)\n"
            "  --gpu auto|on|off  CUDA GPU (default auto: used when built with CUDA and present)\n"
            "In the chat: /help lists the commands; Ctrl-C stops an answer; /quit or Ctrl-D exits.\n");
}

static void help(void) {
    printf("commands:\n"
           "  /clear           clear the screen\n"
           "  /reset           forget the conversation (history and cache)\n"
           "  /thinking [on|off]  switch reasoning mode\n"
           "  /temp [T]        show or set the temperature\n"
           "  /model [NAME]    the model file and its shape, or switch to NAME (a file of the models\n"
           "                   directory without .gguf, or a path); the conversation goes on\n"
           "  /status          context used, speed of the last answer\n"
           "  /export FILE     write the conversation as Markdown\n"
           "  /help            this list\n"
           "  /quit            leave\n");
}

/* NAME of the models directory, or a path, into out. 0, or -1 (said). */
static int model_by_name(const char *name, char *out, size_t cap) {
    char dir[1024];
    if (!strchr(name, '/') && app_models_dir(dir, sizeof dir) == 0) {
        snprintf(out, cap, "%s/%s%s", dir, name, strstr(name, ".gguf") ? "" : ".gguf");
        if (access(out, R_OK) == 0) return 0;
    }
    snprintf(out, cap, "%s", name);
    return app_check_model("chat", out, 1) ? -1 : 0;
}

static int export_md(const history *h, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "# smolbot conversation\n\n");
    for (size_t i = 0; i < h->n; i++) fprintf(f, "## %s\n\n%s\n\n", h->m[i].role, h->m[i].content);
    return fclose(f);
}

int cmd_chat(int argc, char **argv) {
    const char *model_opt = NULL, *system = NULL;
    long n_ctx = 4096, threads = 0, max_tokens = 0;
    int thinking = 1, hide = 0, seed_given = 0;
    sample_params sp;
    sample_params_default(&sp);
    if (app_wants_help(argc, argv)) { usage(stdout); return 0; }
    int gpu = MODEL_GPU_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int sr = app_parse_sampling(argc, argv, &i, &sp, &seed_given);
        if (sr < 0) return 2;
        if (sr > 0) continue;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) { if (!(model_opt = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--system")) { if (!(system = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--think")) thinking = 1;
        else if (!strcmp(a, "--no-think")) thinking = 0;
        else if (!strcmp(a, "--hide-thinking")) hide = 1;
        else if (!strcmp(a, "-n")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &max_tokens)) return 2; }
        else if (!strcmp(a, "--ctx")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &n_ctx)) return 2; }
        else if (!strcmp(a, "-t")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &threads)) return 2; }
        else if (!strcmp(a, "--gpu")) { if (!(v = app_optarg(argc, argv, &i)) || app_parse_gpu(v, &gpu)) return 2; }
        else { fprintf(stderr, "chat: unknown option %s\n", a); usage(stderr); return 2; }
    }
    core_err err = {0};
    if (sample_params_check(&sp, &err) || max_tokens < 0 || n_ctx < 16 || threads < 0) {
        fprintf(stderr, "chat: %s\n", err.msg[0] ? err.msg : "bad -n / --ctx / -t value");
        return 2;
    }
    if (!seed_given) sp.seed = (uint64_t)time(NULL) ^ (uint64_t)getpid();
    char path[4096];
    if (app_find_model(model_opt, path, sizeof path)) {
        fprintf(stderr, "chat: no model found: give -m PATH or set MODEL_PATH (or run 'smolbot pull')\n");
        return 1;
    }
    kern_init(NULL);
    if (app_check_model("chat", path, 1)) return 1; /* one message, not the engine's and ours */
    engine_config ec = {0};
    ec.model_path = path;
    ec.n_threads = (int)threads;
    ec.gpu = gpu;
    ec.n_ctx = (int)n_ctx;
    engine *e = NULL;
    if (engine_new(&e, &ec, &err)) { fprintf(stderr, "chat: %s\n", err.msg); return 1; }
    if (engine_wait_ready(e, 600) != ENGINE_READY) {
        fprintf(stderr, "chat: %s\n", engine_state_message(e));
        engine_free(e);
        return 1;
    }
    char date[32];
    chat_date_today(date, sizeof date, time(NULL));
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);

    int tty = isatty(0) && isatty(1);
    history h = {0};
    if (system) hist_push(&h, "system", system, strlen(system));
    const model_config *mc = engine_model_config(e);
    int announce = 0;
    if (tty) printf("smolbot chat: %s (%d layers, context %d). /help for commands, Ctrl-D to leave.\n", path, mc->n_layer, engine_ctx_size(e));
    char *line = NULL;
    size_t cap = 0;
    engine_stats last = {0};
    int rc = 0;
    for (;;) {
        if (tty) { printf("\n> "); fflush(stdout); }
        g_interrupt = 0;
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            if (g_interrupt) { clearerr(stdin); printf("\n(use /quit or Ctrl-D to leave)"); continue; }
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (!n) continue;
        if (line[0] == '/') {
            char *arg = strchr(line, ' ');
            if (arg) { *arg++ = 0; while (*arg == ' ') arg++; }
            if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) break;
            else if (!strcmp(line, "/help")) help();
            else if (!strcmp(line, "/clear")) { if (tty) printf("\033[H\033[2J"); }
            else if (!strcmp(line, "/reset")) { hist_clear(&h, 1); engine_forget(e, "cli"); printf("conversation forgotten\n"); }
            else if (!strcmp(line, "/thinking")) {
                if (arg && *arg) thinking = !strcmp(arg, "on") || !strcmp(arg, "1");
                else thinking = !thinking;
                printf("thinking %s\n", thinking ? "on (/think)" : "off (/no_think)");
            } else if (!strcmp(line, "/temp")) {
                double t;
                if (arg && *arg) {
                    if (app_parse_float("/temp", arg, &t) == 0 && t >= 0 && t <= 2) sp.temperature = (float)t; /* the page and the API: 0-2 too */
                    else printf("temperature must be a number in 0..2\n");
                }
                printf("temperature %.2f\n", sp.temperature);
            } else if (!strcmp(line, "/model") && arg && *arg) {
                /* another model: a new engine first, the old one goes only once it is ready */
                char np[4096];
                engine *ne = NULL;
                engine_config nc = ec;
                nc.model_path = np;
                if (model_by_name(arg, np, sizeof np) || app_check_model("chat", np, 1)) continue;
                if (engine_new(&ne, &nc, &err) || engine_wait_ready(ne, 600) != ENGINE_READY) {
                    printf("cannot load %s: %s\n", np, ne ? engine_state_message(ne) : err.msg);
                    engine_free(ne);
                    continue;
                }
                engine_free(e);
                e = ne;
                snprintf(path, sizeof path, "%s", np);
                mc = engine_model_config(e);
                announce = 1;
                printf("model %s (%s, %d layers, context %d); the conversation goes on with it\n", arg, mc->arch,
                       mc->n_layer, engine_ctx_size(e));
            } else if (!strcmp(line, "/model")) {
                printf("%s\n%s: %d layers, %d wide, %d heads (%d KV), head dim %d, FFN %d, vocab %d, context %d (file %d), %d threads\n",
                       path, mc->arch, mc->n_layer, mc->n_embd, mc->n_head, mc->n_head_kv, mc->head_dim, mc->n_ff,
                       mc->n_vocab, engine_ctx_size(e), mc->n_ctx_train, engine_threads(e));
            } else if (!strcmp(line, "/status")) {
                printf("context %d of %d used; last answer: %d tokens, TTFT %.0f ms, prefill %.1f tok/s, decode %.1f tok/s (%d cached prompt tokens)\n",
                       last.ctx_used, engine_ctx_size(e), last.gen_tokens, last.ttft_ms, last.prefill_tok_s,
                       last.decode_tok_s, last.cached_tokens);
            } else if (!strcmp(line, "/export")) {
                if (!arg || !*arg) printf("usage: /export FILE\n");
                else if (export_md(&h, arg)) printf("cannot write %s\n", arg);
                else printf("written to %s\n", arg);
            } else printf("unknown command %s (/help lists them)\n", line);
            continue;
        }

        hist_push(&h, "user", line, (size_t)n);
        prompt p;
        prompt_opts po = {.thinking = thinking, .date = date};
        if (prompt_build(engine_tok(e), h.m, h.n, &po, &p, &err)) { /* the server's prompt path */
            printf("error: %s\n", err.msg);
            free((char *)h.m[--h.n].content);
            prompt_free(&p);
            continue;
        }
        if (announce) { /* the first answer after a switch says which model wrote it */
            char nm[256];
            const char *b = strrchr(path, '/');
            snprintf(nm, sizeof nm, "%.255s", b ? b + 1 : path);
            char *dot = strstr(nm, ".gguf");
            if (dot) *dot = 0;
            printf("[%s] ", nm);
            fflush(stdout);
            announce = 0;
        }
        turn_state t = {0};
        pthread_mutex_init(&t.mu, NULL);
        pthread_cond_init(&t.cv, NULL);
        t.tty = tty;
        t.hide_thinking = hide;
        engine_request q = {0};
        q.conv_id = "cli";
        q.prompt = p.ids;
        q.n_prompt = p.n_ids;
        q.n_shared = p.n_shared;
        q.sampling = sp;
        q.max_tokens = (int)max_tokens;
        q.thinking = p.thinking;
        q.cb = on_event;
        q.ctx = &t;
        if (engine_submit(e, &q, NULL, &err)) {
            printf("error: %s\n", err.msg);
            free((char *)h.m[--h.n].content);
        } else {
            pthread_mutex_lock(&t.mu);
            while (!t.done) pthread_cond_wait(&t.cv, &t.mu);
            pthread_mutex_unlock(&t.mu);
            printf("\n");
            if (t.error[0]) printf("error: %s\n", t.error);
            else if (!strcmp(t.finish, "cancelled")) printf("[stopped]\n");
            else if (!strcmp(t.finish, "length")) printf("[cut at the token limit]\n");
            hist_push(&h, "assistant", t.answer.data ? t.answer.data : "", t.answer.len);
            last = t.st;
            sp.seed++;
        }
        core_buf_free(&t.answer);
        pthread_mutex_destroy(&t.mu);
        pthread_cond_destroy(&t.cv);
        prompt_free(&p);
    }
    free(line);
    hist_clear(&h, 0);
    free(h.m);
    engine_free(e);
    return rc;
}
