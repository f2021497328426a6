/* cmd_serve.c -- `smolbot serve`: the chat page and the OpenAI-compatible API.
 *
 * Start-up order: block SIGINT/SIGTERM (every thread created after this
 * inherits the mask, so only the main thread ever sees them, through
 * sigtimedwait), start the engine (the model loads in the background),
 * open the history database, bind the HTTP server and print
 *     listening on http://HOST:PORT
 * at once: /health answers 503 "loading" until the engine is ready, then
 * 200. Tests start us with --port 0 and read the port from that line. When
 * the model is ready a banner with model, quantization, context, threads,
 * KV budget, URL and database follows.
 *
 * Several models: without -m and $MODEL_PATH, every .gguf of the models
 * directory (--models-dir, $SMOLBOT_MODELS, ~/.cache/smolbot/models) is
 * served under its file name (plus --alias/--aliases names), loaded on
 * the first request that names it and unloaded when idle past the
 * keep-alive or when another needs the memory budget (src/registry). The
 * banner lists them, unsupported files with the reason. -m FILE (or
 * $MODEL_PATH) serves that one file, loaded at start, as before.
 *
 * No model found (no -m, no $MODEL_PATH, nothing in the models directory):
 * we still serve, in no-model mode; /health says 200 {"status":"no_model"}
 * and the page tells the user to run `smolbot pull`. A model path that was
 * given but cannot be loaded is an error (exit 1): a server that can never
 * answer is worse than one that says why it stopped.
 *
 * Shutdown (SIGINT/SIGTERM): api_shutdown cancels every request (streams
 * end with an error event and [DONE]), we give the engine up to 2 s to
 * report those ends, then stop the HTTP server (it drains what is queued
 * for clients), free the engine, the api and the store, and exit 0. The
 * signals are unblocked first, so a second Ctrl-C kills a stuck shutdown.
 * With --drain-timeout S (replicas behind a proxy), SIGTERM on a ready
 * server drains first (api_drain: /health and new generations answer 503,
 * so the proxy sends them to another replica) until no generation runs or
 * S seconds pass; a second SIGTERM or SIGINT ends the drain at once.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "app/app.h"
#include "core/core.h"
#include "engine/engine.h"
#include "gguf/gguf.h"
#include "http/http.h"
#include "registry/registry.h"
#include "store/store.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: smolbot serve [-m MODEL] [options]\n"
            "  -m, --model PATH     serve this one GGUF file (else $MODEL_PATH; else every .gguf of the\n"
            "                       models directory; none found: serve the page in no-model mode)\n"
            "  --models-dir DIR     the models directory (default $SMOLBOT_MODELS, else\n"
            "                       ~/.cache/smolbot/models): each FILE.gguf is served as model FILE\n"
            "  --alias NAME=MODEL   another name for a model (a name or a .gguf path; repeatable)\n"
            "  --aliases FILE       aliases, one 'NAME = MODEL' a line ('#' comments)\n"
            "  --mem-budget MB      memory for loaded models (file sizes + KV caches); the least\n"
            "                       recently used idle one is unloaded to make room (default:\n"
            "                       MemAvailable at start less 10%% and 512 MB)\n"
            "  --keep-alive DUR     unload a model idle this long: 30s, 5m, 1h, 0 (after each request),\n"
            "                       -1 (never) (default 5m; Ollama's keep_alive overrides per request)\n"
            "  --host ADDR          address to bind (default 127.0.0.1, or $HOST)\n"
            "  --port N             port (default 3000, or $PORT; 0 = any free port)\n"
            "  --api-key KEY        require 'Authorization: Bearer KEY' (or $SMOLBOT_API_KEY);\n"
            "                       other users see it in ps: prefer the file or the variable\n"
            "  --api-key-file PATH  read the key from the first line of PATH\n"
            "  --allow-host NAME    also answer to this host name, e.g. a reverse proxy's (repeatable;\n"
            "                       localhost and IP addresses always work; '*' = any name)\n"
            "  --db PATH|URL        history database (default %s; ':memory:' = none kept;\n"
            "                       postgres://user@host/db = PostgreSQL, shared by several servers)\n"
            "  --no-db              no history database\n"
            "  --ctx N              context positions per conversation (default 4096)\n"
            "  -t, --threads N      threads (default: all cores)\n"
            "  --gpu auto|on|off    CUDA GPU (default auto: used when built with CUDA and present)\n"
            "  --kv-budget MB       memory for all KV caches (default 2048)\n"
            "  --kv f16|f32|q8      KV cache type (default f16; q8 halves it)\n"
            "  --parallel N         sequences generating at once (default 8)\n"
            "  --queue N            waiting requests before 429 (default 64)\n"
            "  --batch N            prefill chunk in tokens (default 256)\n"
            "  --max-streams N      concurrent streaming responses (default 32)\n"
            "  --max-messages N     messages per request (default 1000)\n"
            "  --max-tokens N       largest max_tokens a request may ask (default: the context)\n"
            "  --max-body BYTES     largest request body (default 8 MiB)\n"
            "  --timeout SECONDS    drop a connection idle this long, e.g. a stalled request (default 30)\n"
            "  --drain-timeout S    behind a proxy: SIGTERM first finishes running streams, up to S seconds,\n"
            "                       while /health and new generations answer 503 (default 0: stop at once)\n"
            "  --model-name NAME    model id shown by /v1/models (default: the file name)\n"
            "environment: HOST, PORT, MODEL_PATH, SMOLBOT_API_KEY, SMOLBOT_DB (as --db), LOG_LEVEL (debug|info|warn|error)\n",
            "$XDG_DATA_HOME/smolbot/smolbot.db");
}

/* The key from the first line of path (trailing blanks and CR/LF cut) into
 * out. Returns 0, or prints why and returns 2. */
static int read_key_file(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "serve: cannot read --api-key-file %s\n", path);
        return 2;
    }
    int ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    size_t n = ok ? strlen(out) : 0;
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r' || out[n - 1] == ' ' || out[n - 1] == '\t')) out[--n] = 0;
    for (size_t i = 0; ok && i < n; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f) ok = 0;
    if (!ok || !n || n + 1 >= cap) {
        fprintf(stderr, "serve: --api-key-file %s: want one line with the key (printable, under %zu bytes)\n", path,
                cap - 1);
        return 2;
    }
    return 0;
}

static int is_loopback(const char *h) {
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost");
}

/* Quantization of a model file for the banner: general.file_type, else the
 * type of the first FFN weight. */
static void quant_name(const char *path, char *out, size_t cap) {
    static const struct { uint32_t ft; const char *name; } names[] = {
        {0, "F32"}, {1, "F16"}, {2, "Q4_0"}, {3, "Q4_1"}, {7, "Q8_0"}, {8, "Q5_0"}, {9, "Q5_1"}, {10, "Q2_K"},
        {11, "Q3_K_S"}, {12, "Q3_K_M"}, {13, "Q3_K_L"}, {14, "Q4_K_S"}, {15, "Q4_K_M"}, {16, "Q5_K_S"},
        {17, "Q5_K_M"}, {18, "Q6_K"}, {32, "BF16"},
    };
    gguf *g = NULL;
    snprintf(out, cap, "?");
    if (gguf_open(&g, path, NULL)) return;
    uint32_t ft;
    if (gguf_get_u32(g, "general.file_type", &ft, NULL) == 0) {
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
            if (names[i].ft == ft) snprintf(out, cap, "%s", names[i].name);
    } else {
        const gguf_tensor *t = gguf_find_tensor(g, "blk.0.ffn_down.weight");
        if (t) snprintf(out, cap, "%s (ffn_down)", gguf_type_name(t->type));
    }
    gguf_close(g);
}

#define OPT_INT(flag, var)                                                                         \
    else if (!strcmp(a, flag)) {                                                                    \
        if (!(v = app_optarg(argc, argv, &i)) || app_parse_int(a, v, &var)) return 2;              \
    }

/* "5m", "30s", "1h", "250ms", a number of seconds; < 0: forever. */
static int parse_duration(const char *s, double *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s) return -1;
    if (!strcmp(end, "") || !strcmp(end, "s")) *out = v;
    else if (!strcmp(end, "ms")) *out = v / 1e3;
    else if (!strcmp(end, "m")) *out = v * 60;
    else if (!strcmp(end, "h")) *out = v * 3600;
    else return -1;
    return 0;
}

/* MemAvailable of /proc/meminfo in bytes (0 when unknown). */
static uint64_t mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb << 10;
}

/* A directory with at least one .gguf (hidden files aside). */
static int has_gguf(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        found = e->d_name[0] != '.' && n > 5 && !strcmp(e->d_name + n - 5, ".gguf");
    }
    closedir(d);
    return found;
}

int cmd_serve(int argc, char **argv) {
    if (app_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *model_opt = NULL, *host = getenv("HOST"), *api_key = getenv("SMOLBOT_API_KEY"), *db = getenv("SMOLBOT_DB"),
               *kvs = "f16", *model_name = NULL, *models_dir = NULL, *aliases_file = NULL,
               *keep_s = "5m";
    const char *aliases[33] = {0}; /* --alias NAME=MODEL (into argv) */
    size_t n_aliases = 0;
    long mem_mb = -1;
    long port = 3000, n_ctx = 4096, threads = 0, kv_mb = 2048, parallel = 0, queue = 0, batch = 0, max_streams = 0,
         max_messages = 0, max_tokens = 0, max_body = 0, conn_timeout = 30, drain_s = 0;
    int no_db = 0, gpu = MODEL_GPU_AUTO, kv_type = MODEL_KV_F16;
    char keybuf[1024] = ""; /* --api-key-file's key; the api borrows it until we return */
    const char *allow_hosts[17] = {0}; /* --allow-host names (into argv), NULL-terminated */
    size_t n_allow = 0;
    if (!host || !*host) host = "127.0.0.1";
    const char *penv = getenv("PORT");
    if (penv && *penv && app_parse_int("$PORT", penv, &port)) return 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!(model_opt = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--models-dir")) {
            if (!(models_dir = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--aliases")) {
            if (!(aliases_file = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--keep-alive")) {
            if (!(keep_s = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--alias")) {
            if (!(v = app_optarg(argc, argv, &i))) return 2;
            if (!strchr(v, '=') || v[0] == '=' || n_aliases + 1 >= CORE_ARRAY_LEN(aliases)) {
                fprintf(stderr, "serve: --alias wants NAME=MODEL (at most %zu): '%s'\n", CORE_ARRAY_LEN(aliases) - 1, v);
                return 2;
            }
            aliases[n_aliases++] = v;
        } else if (!strcmp(a, "--host")) {
            if (!(host = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--api-key")) {
            if (!(api_key = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--api-key-file")) {
            if (!(v = app_optarg(argc, argv, &i)) || read_key_file(v, keybuf, sizeof keybuf)) return 2;
            api_key = keybuf;
        } else if (!strcmp(a, "--allow-host")) {
            if (!(v = app_optarg(argc, argv, &i))) return 2;
            if (!*v || strpbrk(v, ":/ \t") || n_allow + 1 >= CORE_ARRAY_LEN(allow_hosts)) {
                fprintf(stderr, "serve: --allow-host wants a bare host name (no scheme, port or path; at most %zu): "
                                "'%s'\n", CORE_ARRAY_LEN(allow_hosts) - 1, v);
                return 2;
            }
            allow_hosts[n_allow++] = v;
        } else if (!strcmp(a, "--db")) {
            if (!(db = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--kv")) {
            if (!(kvs = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--model-name")) {
            if (!(model_name = app_optarg(argc, argv, &i))) return 2;
        } else if (!strcmp(a, "--gpu")) {
            if (!(v = app_optarg(argc, argv, &i)) || app_parse_gpu(v, &gpu)) return 2;
        } else if (!strcmp(a, "--no-db")) {
            no_db = 1;
        }
        OPT_INT("--port", port)
        OPT_INT("--ctx", n_ctx)
        OPT_INT("-t", threads)
        OPT_INT("--threads", threads)
        OPT_INT("--kv-budget", kv_mb)
        OPT_INT("--parallel", parallel)
        OPT_INT("--queue", queue)
        OPT_INT("--batch", batch)
        OPT_INT("--max-streams", max_streams)
        OPT_INT("--max-messages", max_messages)
        OPT_INT("--max-tokens", max_tokens)
        OPT_INT("--max-body", max_body)
        OPT_INT("--timeout", conn_timeout)
        OPT_INT("--drain-timeout", drain_s)
        OPT_INT("--mem-budget", mem_mb)
        else {
            fprintf(stderr, "serve: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (port < 0 || port > 65535 || n_ctx < 1 || threads < 0 || kv_mb < 1 || parallel < 0 || parallel > 64 ||
        queue < 0 || batch < 0 || mem_mb < -1 || max_streams < 0 || max_messages < 0 || max_tokens < 0 || max_body < 0 || conn_timeout < 1 || conn_timeout > 86400 || drain_s < 0 ||
        app_parse_kv(kvs, &kv_type)) {
        fprintf(stderr, "serve: an option is out of range (see --help)\n");
        return 2;
    }
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    if (api_key && !*api_key) api_key = NULL;
    if (!is_loopback(host) && !api_key)
        fprintf(stderr, "serve: WARNING: listening on %s without an API key: anyone who can reach this address can "
                        "use the model (set --api-key or $SMOLBOT_API_KEY)\n", host);

    double keep_alive = 0;
    if (parse_duration(keep_s, &keep_alive)) {
        fprintf(stderr, "serve: --keep-alive wants a duration such as 30s, 5m, 1h, 0 or -1: '%s'\n", keep_s);
        return 2;
    }
    /* Several models unless one file is named (-m, $MODEL_PATH): those of the models directory. */
    char dirbuf[1024] = "";
    const char *penv_model = getenv("MODEL_PATH");
    int one_file = (model_opt && *model_opt) || (penv_model && *penv_model);
    if (!one_file && !models_dir && app_models_dir(dirbuf, sizeof dirbuf) == 0) models_dir = dirbuf;
    int multi = !one_file && models_dir && has_gguf(models_dir);
    if (!one_file && (n_aliases || aliases_file) && !multi) {
        fprintf(stderr, "serve: --alias and --aliases need a models directory with .gguf files\n");
        return 2;
    }
    if (!multi && models_dir && models_dir != dirbuf && !has_gguf(models_dir)) {
        fprintf(stderr, "serve: no .gguf files in --models-dir %s\n", models_dir);
        return 1;
    }

    char model_path[4096] = "";
    int have_model = !multi && app_find_model(model_opt, model_path, sizeof model_path) == 0;
    /* A file that cannot load fails now, before we say we listen. */
    if (have_model && app_check_model("serve", model_path, 1)) return 1;
    if (!have_model && !multi)
        fprintf(stderr, "serve: no model found (give -m PATH, set MODEL_PATH or run 'smolbot pull'): serving in "
                        "no-model mode\n");

    /* Only the main thread takes these signals: block them before any thread exists. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Past a file size limit (RLIMIT_FSIZE, a full quota) writes must fail
     * with EFBIG, which SQLite reports, instead of killing the server. */
    signal(SIGXFSZ, SIG_IGN);

    int rc = 1;
    core_err err = {0};
    engine *eng = NULL;
    registry *reg = NULL;
    store *st = NULL;
    api *ap = NULL;
    http_server *srv = NULL;
    char dbbuf[4096] = "";

    engine_config ec = {0};
    ec.model_path = have_model ? model_path : NULL;
    ec.n_threads = (int)threads;
    ec.n_ctx = (int)n_ctx;
    ec.kv_type = kv_type;
    ec.kv_budget = (uint64_t)kv_mb << 20;
    ec.max_queue = (int)queue;
    ec.max_active = parallel ? (int)parallel : 8;
    ec.n_batch = (int)batch;
    ec.gpu = gpu;
    if (multi) {
        registry_config rcfg = {0};
        rcfg.ec = ec;
        rcfg.keep_alive_s = keep_alive;
        if (mem_mb >= 0) {
            rcfg.mem_budget = (uint64_t)mem_mb << 20;
        } else {
            uint64_t avail = mem_available(), margin = avail / 10 + (512ull << 20);
            rcfg.mem_budget = avail > margin ? avail - margin : 0;
        }
        int n = 0;
        if (registry_new(&reg, &rcfg, &err) || registry_scan_dir(reg, models_dir, &n, &err)) goto done;
        for (size_t i = 0; i < n_aliases; i++) {
            char nm[128];
            const char *eq = strchr(aliases[i], '=');
            snprintf(nm, sizeof nm, "%.*s", (int)(eq - aliases[i]), aliases[i]);
            if (registry_add_alias(reg, nm, eq + 1, &err)) goto done;
        }
        if (aliases_file && registry_load_aliases(reg, aliases_file, &err)) goto done;
        ec.model_path = NULL; /* the api's own engine: the server's state only (no model) */
    }
    if (engine_new(&eng, &ec, &err)) goto done;

    if (db && !*db) db = NULL;
    if (!no_db) {
        /* dbbuf: the path for the banner; the store itself resolves the
         * default (and makes its directories) when given NULL */
        const char *path = db ? db : store_default_path(dbbuf, sizeof dbbuf);
        if (db) snprintf(dbbuf, sizeof dbbuf, "%s", db);
        if (path && strstr(path, "://") && store_open(&st, path, &err)) {
            goto done; /* a shared database named on purpose: serving without it would lose chats */
        } else if (!path || (!st && store_open(&st, db, &err))) {
            fprintf(stderr, "serve: no history database (%s): chats are not kept\n", path ? err.msg : "no $HOME");
            st = NULL;
            dbbuf[0] = 0;
        } else if (store_readonly(st)) {
            fprintf(stderr, "serve: the history is read-only (%s): it can be read and searched, new chats are not "
                            "kept\n", store_readonly(st));
        }
    }

    api_config acfg = {0};
    acfg.api_key = api_key;
    acfg.model_name = model_name;
    acfg.max_messages = (int)max_messages;
    acfg.max_tokens = (int)max_tokens;
    acfg.max_streams = (int)max_streams;
    acfg.slots = ec.max_active;
    acfg.reg = reg;
    char exe[4096];
    ssize_t xl = reg ? readlink("/proc/self/exe", exe, sizeof exe - 1) : -1;
    if (xl > 0) { /* Ollama's /api/pull runs our own `pull` into the models directory */
        exe[xl] = 0;
        acfg.pull_exe = exe;
        acfg.models_dir = models_dir;
    }
    if (api_new(&ap, eng, st, &acfg, &err)) goto done;

    /* Each connection is a descriptor: a soft limit of 1024 would cap the
     * connection pool (and turn a flood into failed accepts for everyone). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    http_config hc = {0};
    hc.host = host;
    hc.port = (int)port;
    hc.max_body = (size_t)max_body;
    hc.conn_timeout_s = (unsigned)conn_timeout;
    hc.allow_hosts = allow_hosts;
    if (http_server_new(&hc, api_handle, ap, &srv, &err)) goto done;
    char url[300];
    snprintf(url, sizeof url, strchr(host, ':') ? "http://[%s]:%d" : "http://%s:%d", host, http_server_port(srv));
    printf("listening on %s\n", url);
    fflush(stdout);

    int announced = 0;
    double drain_end = 0; /* draining since a SIGTERM: stop at this time, or once nothing runs */
    for (;;) {
        struct timespec ts = {0, 100 * 1000000L};
        int sig = sigtimedwait(&sigs, NULL, &ts);
        /* SIGTERM (a deploy, behind a proxy): drain first; a second one,
         * SIGINT or the drain timeout stop at once */
        if (sig == SIGTERM && !drain_end && engine_state(eng) == ENGINE_READY && drain_s > 0) {
            fprintf(stderr, "serve: SIGTERM: draining (running streams finish, up to %ld s)\n", drain_s);
            api_drain(ap);
            drain_end = core_now_s() + (double)drain_s;
            continue;
        }
        if (sig == SIGINT || sig == SIGTERM) {
            fprintf(stderr, "serve: %s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
            break;
        }
        if (drain_end) {
            engine_metrics m;
            engine_get_metrics(eng, &m);
            if ((m.active == 0 && m.queued == 0) || core_now_s() > drain_end) {
                fprintf(stderr, "serve: drained%s: shutting down\n", m.active || m.queued ? " (timeout)" : "");
                break;
            }
        }
        if (announced) continue;
        if (reg) {
            announced = 1;
            printf("smolbot ready (%zu models, loaded on demand)\n", registry_count(reg));
            registry_model m;
            for (size_t i = 0; registry_get(reg, i, &m) == 0; i++) {
                if (!m.supported) printf("  model     %-24s unsupported: %s\n", m.name, m.reason);
                else if (m.target[0]) printf("  model     %-24s = %s\n", m.name, m.target);
                else printf("  model     %-24s %s, %.1f MiB\n", m.name, m.quant, m.file_size / 1048576.0);
            }
            printf("  context   %ld tokens\n"
                   "  memory    budget %.0f MiB, keep-alive %s\n"
                   "  url       %s%s\n"
                   "  database  %s\n",
                   n_ctx, registry_mem_budget(reg) / 1048576.0, keep_s, url, api_key ? " (API key required)" : "",
                   dbbuf[0] ? dbbuf : "(none)");
            fflush(stdout);
            continue;
        }
        int es = engine_state(eng);
        if (es == ENGINE_LOADING) continue;
        announced = 1;
        if (es == ENGINE_FAILED) {
            fprintf(stderr, "serve: cannot load %s: %s\n", model_path, engine_state_message(eng));
            core_errf(&err, CORE_EIO, "model failed to load");
            goto stop;
        }
        if (es == ENGINE_READY) {
            char quant[64];
            quant_name(model_path, quant, sizeof quant);
            printf("smolbot ready\n"
                   "  model     %s\n"
                   "  quant     %s\n"
                   "  context   %d tokens\n"
                   "  threads   %d\n"
                   "  kv budget %ld MiB (%s), %d parallel, queue %ld\n"
                   "  url       %s%s\n"
                   "  database  %s\n",
                   model_path, quant, engine_ctx_size(eng), engine_threads(eng), kv_mb, kvs, ec.max_active,
                   queue ? queue : 64, url, api_key ? " (API key required)" : "", dbbuf[0] ? dbbuf : "(none)");
        } else {
            printf("smolbot ready (no model)\n  url       %s\n  database  %s\n", url, dbbuf[0] ? dbbuf : "(none)");
        }
        fflush(stdout);
    }
    rc = 0;

stop:
    /* A second signal now takes the default action: a stuck shutdown can be killed. */
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    store_stop_searches(st); /* a search in a handler must not hold up http_server_stop */
    api_shutdown(ap);
    for (int i = 0; i < 200; i++) { /* let the engine report the cancelled ends (<= 2 s) */
        engine_metrics m;
        engine_get_metrics(eng, &m);
        if (m.active == 0 && m.queued == 0) break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    http_server_stop(srv);
done:
    engine_free(eng);
    http_server_free(srv);
    api_free(ap);
    registry_free(reg); /* after the api: its jobs' holds went back */
    store_close(st);
    /* last: nothing the engine prints (a load finishing) may follow the reason we stop */
    if (rc && err.msg[0]) fprintf(stderr, "serve: %s\n", err.msg);
    return rc;
}
