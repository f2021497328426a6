/* modelpath.c -- one rule, everywhere, for which model file to use.
 *
 *   1. -m PATH (the option)
 *   2. $MODEL_PATH
 *   3. the models directory: $SMOLBOT_MODELS, else ~/.cache/smolbot/models:
 *      the default download name if present, else the first .gguf file by name
 *   4. the first .gguf file in ./models
 *
 * A path given explicitly (1 or 2) is used as is even if it does not exist,
 * so the user sees an error about *their* path rather than a silent fallback.
 *
 * app_check_model: the commands check the file before they start an engine,
 * so a missing or broken file gives one message, before anything else
 * (serve's "listening on", the engine's own log line).
 */
#include "app/app.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tok/tok.h"

static int first_gguf(const char *dir, char *out, size_t cap) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    char best[256] = "";
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 5 && n < sizeof best && !strcmp(e->d_name + n - 5, ".gguf") &&
            (!best[0] || strcmp(e->d_name, best) < 0))
            strcpy(best, e->d_name);
    }
    closedir(d);
    if (!best[0]) return -1;
    snprintf(out, cap, "%s/%s", dir, best);
    return 0;
}

int app_models_dir(char *out, size_t cap) {
    const char *env = getenv("SMOLBOT_MODELS");
    if (env && *env) return snprintf(out, cap, "%s", env) < (int)cap ? 0 : -1;
    const char *home = getenv("HOME");
    if (!home || !*home) home = ".";
    return snprintf(out, cap, "%s/.cache/smolbot/models", home) < (int)cap ? 0 : -1;
}

int app_find_model(const char *opt, char *out, size_t cap) {
    if (opt && *opt) return snprintf(out, cap, "%s", opt) < (int)cap ? 0 : -1;
    const char *env = getenv("MODEL_PATH");
    if (env && *env) return snprintf(out, cap, "%s", env) < (int)cap ? 0 : -1;
    char dir[1024];
    if (app_models_dir(dir, sizeof dir) == 0) {
        snprintf(out, cap, "%s/%s", dir, APP_DEFAULT_MODEL_FILE);
        if (access(out, R_OK) == 0) return 0;
        if (first_gguf(dir, out, cap) == 0) return 0;
    }
    if (first_gguf("models", out, cap) == 0) return 0;
    out[0] = 0;
    return -1;
}

int app_check_model(const char *cmd, const char *path, int full) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open %s: %s\n", cmd, path, strerror(errno));
        return 1;
    }
    fclose(f);
    if (!full) return 0;
    gguf *g = NULL;
    model *m = NULL;
    tok *t = NULL;
    core_err err = {0};
    model_opts mo = {.n_threads = 1, .gpu = MODEL_GPU_OFF};
    int rc = gguf_open(&g, path, &err) || model_load(&m, g, &mo, &err) || tok_load(&t, g, &err);
    if (rc) fprintf(stderr, "%s: cannot load %s: %s\n", cmd, path, err.msg);
    tok_free(t);
    model_free(m);
    gguf_close(g);
    return rc;
}
