/* cmd_pull.c -- `smolbot pull`: download a model, resumably, and prove it is one.
 *
 *   smolbot pull                          SmolLM3-3B Q4_K_M from Hugging Face
 *   smolbot pull owner/repo/file.gguf     a file of a Hugging Face repository
 *   smolbot pull owner/repo:Q8_0          the repository's file for that quant
 *   smolbot pull https://host/x.gguf      any URL, as is
 *   smolbot pull --which                  print the model the lookup rule picks
 *
 * Story. The bytes go to FINAL.part, opened and flock'ed by this process;
 * an existing .part is resumed with an HTTP Range request (after hashing the
 * bytes it already holds, so the SHA-256 covers the whole file without a
 * second pass). Transient failures (the connection drops, the transfer
 * stalls) are retried a few times from where they stopped; a second run
 * of the same command resumes too. Only when the size equals the total the
 * server announced (Content-Length, or the total of Content-Range), the hash
 * matches the one given (--sha256) or published (Hugging Face's
 * X-Linked-Etag is the LFS sha256), and the file opens as a SmolLM3 GGUF
 * whose tensors model_load accepts, is the .part renamed to FINAL. A file
 * that fails those checks is deleted: nothing corrupt ever sits under the
 * final name, and a corrupt .part is not worth resuming.
 *
 * Names resolve to {HF_ENDPOINT or https://huggingface.co}/{owner}/{repo}/
 * resolve/main/{file}; `owner/repo:QUANT` asks {endpoint}/api/models/{repo}
 * for the file list. HF_TOKEN goes out as "Authorization: Bearer" only to
 * the endpoint (never to an arbitrary URL's host; libcurl also drops it on
 * redirects to other hosts, e.g. Hugging Face's CDN).
 *
 * Output: progress on stderr (a redrawn bar on a terminal, a plain line
 * every few seconds otherwise), then on stdout one line in sha256sum's
 * format, "HEX  PATH". Errors say what happened and what to do: offline,
 * 401/403 (HF_TOKEN), 404, disk full, a failed validation.
 */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/app.h"
#include "core/core.h"
#include "gguf/gguf.h"
#include "kern/kern.h"
#include "model/model.h"
#include "app/sha256.h"

#define DEFAULT_REPO "unsloth/SmolLM3-3B-GGUF"
#define DEFAULT_QUANT "Q4_K_M"
#define DEFAULT_ENDPOINT "https://huggingface.co"

/* The stop flag (house rule 8): SIGINT/SIGTERM end the transfer cleanly,
 * keeping the .part for a resume. */
static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void usage(FILE *f) {
    fprintf(f,
            "usage: smolbot pull [NAME|URL] [options]\n"
            "  NAME               owner/repo/file.gguf, owner/repo:QUANT or owner/repo (Hugging Face),\n"
            "                     or an http(s) URL; default " DEFAULT_REPO "/SmolLM3-3B-" DEFAULT_QUANT ".gguf\n"
            "  -o PATH            where to save (a file, or a directory); default: the models directory\n"
            "                     ($SMOLBOT_MODELS, else ~/.cache/smolbot/models) + the file name\n"
            "  --sha256 HEX       expected SHA-256 of the file; a mismatch deletes the download\n"
            "  --force            download again even if the file is already there\n"
            "  --retries N        resume up to N times after a dropped connection (default 5)\n"
            "  -q, --quiet        no progress output\n"
            "  --which [-m PATH]  print the model file the lookup rule selects (-m, $MODEL_PATH,\n"
            "                     the models directory, ./models) and exit; 1 if there is none\n"
            "environment: HF_ENDPOINT (mirror, default " DEFAULT_ENDPOINT "), HF_TOKEN (gated or\n"
            "private repositories), https_proxy, SMOLBOT_MODELS\n");
}

/* ---- one download ------------------------------------------------------- */

typedef struct pull {
    CURL *curl;
    const char *url;
    const char *part;      /* FINAL.part */
    int fd;                /* the .part, flock'ed */
    uint64_t have;         /* bytes in the .part (== its size) */
    uint64_t total;        /* size announced by the server; 0 = not known */
    int total_known;
    app_sha256 sha;        /* over bytes [0, have) */
    /* per attempt */
    int started;           /* first body byte of this response seen */
    uint64_t attempt_from; /* `have` when the attempt began */
    double t_attempt;
    int write_errno;       /* errno of a failed write(), 0 if none */
    char content_range[96];
    char etag_sha[65];     /* X-Linked-Etag when it is a sha256 */
    char fail[256];        /* our own reason to abort the transfer */
    /* progress */
    int tty, quiet;
    double last_draw;
} pull;

static double mb(uint64_t n) { return (double)n / 1e6; }

static void fmt_eta(double s, char *out, size_t cap) {
    if (s < 0 || s > 360000) { snprintf(out, cap, "--:--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

/* Draw the bar (tty) or a line (not a tty). `done` forces a final draw. */
static void progress(pull *p, int done) {
    if (p->quiet) return;
    double now = core_now_s();
    if (!done && now - p->last_draw < (p->tty ? 0.1 : 5.0)) return;
    p->last_draw = now;
    double dt = now - p->t_attempt;
    double rate = dt > 0.05 ? (double)(p->have - p->attempt_from) / dt : 0; /* bytes/s this attempt */
    char eta[32] = "";
    if (p->total_known && p->total >= p->have && rate > 0)
        fmt_eta((double)(p->total - p->have) / rate, eta, sizeof eta);
    else
        snprintf(eta, sizeof eta, "--:--");
    double pct = p->total_known && p->total ? 100.0 * (double)p->have / (double)p->total : 0;
    if (p->tty) {
        char bar[31];
        int w = 30, fill = p->total_known && p->total ? (int)(w * (double)p->have / (double)p->total) : 0;
        if (fill > w) fill = w;
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
        bar[w] = 0;
        if (p->total_known)
            fprintf(stderr, "\r\033[K%3.0f%% [%s] %.1f/%.1f MB  %.1f MB/s  ETA %s", pct, bar, mb(p->have),
                    mb(p->total), rate / 1e6, eta);
        else
            fprintf(stderr, "\r\033[K%.1f MB  %.1f MB/s", mb(p->have), rate / 1e6);
        if (done) fputc('\n', stderr);
    } else if (p->total_known) {
        fprintf(stderr, "pull: %3.0f%%  %.1f/%.1f MB  %.1f MB/s  ETA %s\n", pct, mb(p->have), mb(p->total),
                rate / 1e6, eta);
    } else {
        fprintf(stderr, "pull: %.1f MB  %.1f MB/s\n", mb(p->have), rate / 1e6);
    }
    fflush(stderr);
}

/* Header lines of every response in the redirect chain. A status line
 * starts a new response: what we keep from the previous one is only the
 * published hash (Hugging Face sends it on the redirect, not on the CDN's
 * answer). */
static size_t on_header(char *buf, size_t size, size_t n, void *ud) {
    pull *p = ud;
    size_t len = size * n;
    if (len >= 5 && !memcmp(buf, "HTTP/", 5)) {
        p->content_range[0] = 0;
        return len;
    }
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    size_t klen = (size_t)(colon - buf);
    const char *v = colon + 1, *end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t' || *v == '"')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '"')) end--;
    size_t vlen = (size_t)(end - v);
    if (klen == 13 && !strncasecmp(buf, "Content-Range", 13) && vlen < sizeof p->content_range) {
        memcpy(p->content_range, v, vlen);
        p->content_range[vlen] = 0;
    } else if (klen == 13 && !strncasecmp(buf, "X-Linked-Etag", 13) && vlen == 64 && !p->etag_sha[0]) {
        int hex = 1;
        for (size_t i = 0; i < 64; i++) hex &= isxdigit((unsigned char)v[i]) != 0;
        if (hex) {
            for (size_t i = 0; i < 64; i++) p->etag_sha[i] = (char)tolower((unsigned char)v[i]);
            p->etag_sha[64] = 0;
        }
    }
    return len;
}

/* "bytes A-B/T", or "bytes *" "/T" on a 416: fills start and total; 0 if it parsed. */
static int parse_content_range(const char *s, uint64_t *start, uint64_t *total) {
    unsigned long long a = 0, b = 0, t = 0;
    if (sscanf(s, "bytes %llu-%llu/%llu", &a, &b, &t) == 3) {
        *start = a, *total = t;
        return 0;
    }
    if (sscanf(s, "bytes */%llu", &t) == 1) {
        *start = 0, *total = t;
        return 0;
    }
    return -1;
}

static int reset_part(pull *p) {
    if (ftruncate(p->fd, 0) || lseek(p->fd, 0, SEEK_SET) < 0) return -1;
    p->have = 0;
    app_sha256_init(&p->sha);
    return 0;
}

/* The first body bytes of a 2xx response decide what they continue: a 206
 * must start exactly at `have`; a 200 is the whole file (the server ignored
 * or does not do ranges), so the .part starts over. */
static int begin_body(pull *p) {
    long code = 0;
    curl_easy_getinfo(p->curl, CURLINFO_RESPONSE_CODE, &code);
    if (code == 206) {
        uint64_t start = 0, total = 0;
        if (parse_content_range(p->content_range, &start, &total) || start != p->have) {
            snprintf(p->fail, sizeof p->fail, "the server resumed at the wrong place (Content-Range '%s', have %llu bytes)",
                     p->content_range, (unsigned long long)p->have);
            return -1;
        }
        p->total = total, p->total_known = total > 0;
    } else if (code == 200) {
        if (p->have && reset_part(p)) {
            snprintf(p->fail, sizeof p->fail, "cannot truncate %s: %s", p->part, strerror(errno));
            return -1;
        }
        curl_off_t cl = -1;
        curl_easy_getinfo(p->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        p->total = cl > 0 ? (uint64_t)cl : 0, p->total_known = cl >= 0;
    } else {
        snprintf(p->fail, sizeof p->fail, "unexpected HTTP %ld", code);
        return -1;
    }
    p->attempt_from = p->have;
    p->started = 1;
    return 0;
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud) {
    pull *p = ud;
    size_t len = size * n;
    if (!p->started && begin_body(p)) return 0;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(p->fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            p->write_errno = w < 0 ? errno : EIO;
            return 0;
        }
        off += (size_t)w;
    }
    app_sha256_update(&p->sha, buf, len);
    p->have += len;
    return len;
}

static int on_xfer(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    pull *p = ud;
    if (stop_flag) return 1;
    if (p->started) progress(p, 0);
    return 0;
}

/* Read back the bytes a .part already holds into the hash. */
static int hash_existing(pull *p, core_err *err) {
    if (!p->have) return 0;
    if (!p->quiet) fprintf(stderr, "pull: resuming %s (%.1f MB already here)\n", p->part, mb(p->have));
    char *buf = malloc(1 << 20);
    if (!buf) return core_errf(err, CORE_ENOMEM, "out of memory");
    uint64_t done = 0;
    while (done < p->have) {
        ssize_t r = pread(p->fd, buf, 1 << 20, (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            free(buf);
            return core_errf(err, CORE_EIO, "%s: read failed: %s", p->part, r < 0 ? strerror(errno) : "short file");
        }
        app_sha256_update(&p->sha, buf, (size_t)r);
        done += (uint64_t)r;
    }
    free(buf);
    return 0;
}

static void host_of(const char *url, char *out, size_t cap) {
    const char *s = strstr(url, "://");
    s = s ? s + 3 : url;
    size_t n = strcspn(s, "/?#");
    if (n >= cap) n = cap - 1;
    memcpy(out, s, n);
    out[n] = 0;
}

enum { XFER_OK, XFER_RETRY, XFER_FATAL, XFER_RANGE_DONE, XFER_RANGE_RESTART };

/* One HTTP request from `have` on. Returns an XFER_* verdict, with err set
 * for RETRY/FATAL. */
static int attempt(pull *p, struct curl_slist *hdrs, core_err *err) {
    char range[64], errbuf[CURL_ERROR_SIZE] = "", host[256];
    host_of(p->url, host, sizeof host);
    CURL *c = p->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, p->url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "smolbot-pull/1");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    /* a transfer slower than 1 kB/s for 30 s is stalled: retry it */
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 30L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, p);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_xfer);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, p);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    if (p->have) {
        snprintf(range, sizeof range, "%llu-", (unsigned long long)p->have);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    p->started = 0, p->write_errno = 0, p->fail[0] = 0, p->content_range[0] = 0;
    p->attempt_from = p->have;
    p->t_attempt = core_now_s();
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (p->started) progress(p, 1);

    if (rc == CURLE_OK) {
        if (!p->started) { /* a 2xx without a body: an empty file */
            if (code == 200 && p->have && reset_part(p))
                return core_errf(err, CORE_EIO, "cannot truncate %s: %s", p->part, strerror(errno)), XFER_FATAL;
            if (code == 200) p->total = 0, p->total_known = 1;
        }
        if (p->total_known && p->have < p->total) {
            core_errf(err, CORE_EIO, "the connection closed at %.1f of %.1f MB", mb(p->have), mb(p->total));
            return XFER_RETRY;
        }
        return XFER_OK;
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK && stop_flag)
        return core_errf(err, CORE_ECANCEL, "interrupted"), XFER_FATAL;
    if (rc == CURLE_WRITE_ERROR && p->fail[0]) return core_errf(err, CORE_EFORMAT, "%s", p->fail), XFER_FATAL;
    if (rc == CURLE_WRITE_ERROR && p->write_errno) {
        int e = p->write_errno;
        if (e == ENOSPC || e == EDQUOT || e == EFBIG)
            core_errf(err, CORE_EIO, "%s writing %s after %.1f MB%s%.1f MB needed): free some space or use -o PATH on another disk; "
                      "the partial file is kept, run the same command again to resume",
                      e == EFBIG ? "file size limit reached" : "disk full", p->part, mb(p->have),
                      p->total_known ? " (" : " (size unknown, ", p->total_known ? mb(p->total) : 0.0);
        else
            core_errf(err, CORE_EIO, "writing %s failed: %s", p->part, strerror(e));
        return XFER_FATAL;
    }
    if (rc == CURLE_HTTP_RETURNED_ERROR) {
        if (code == 416) {
            uint64_t start, total;
            if (!parse_content_range(p->content_range, &start, &total) && total == p->have) return XFER_RANGE_DONE;
            return XFER_RANGE_RESTART;
        }
        if (code == 401 || code == 403) {
            const char *tok = getenv("HF_TOKEN");
            core_errf(err, CORE_EIO,
                      tok && *tok ? "HTTP %ld from %s: access denied with the HF_TOKEN given: check that the token is valid and "
                                    "that its account has accepted the model's license on the repository page"
                                  : "HTTP %ld from %s: the repository is gated or private: set HF_TOKEN to a Hugging Face access "
                                    "token (https://huggingface.co/settings/tokens) and accept the license on the repository page",
                      code, p->url);
            return XFER_FATAL;
        }
        if (code == 404) {
            core_errf(err, CORE_ENOTFOUND, "HTTP 404 from %s: no such file: check the name (owner/repo/file.gguf, "
                      "owner/repo:QUANT) or the URL", p->url);
            return XFER_FATAL;
        }
        core_errf(err, CORE_EIO, "HTTP %ld from %s", code, p->url);
        return code >= 500 || code == 429 ? XFER_RETRY : XFER_FATAL;
    }
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
        core_errf(err, CORE_EIO, "cannot resolve %s: are you offline? (a mirror can be set with HF_ENDPOINT)", host);
        return XFER_FATAL;
    case CURLE_COULDNT_RESOLVE_PROXY:
        core_errf(err, CORE_EIO, "cannot resolve the proxy: check https_proxy / http_proxy (%s)", errbuf);
        return XFER_FATAL;
    case CURLE_COULDNT_CONNECT:
        core_errf(err, CORE_EIO, "cannot connect to %s: are you offline or behind a proxy? (libcurl honours https_proxy) (%s)",
                  host, errbuf);
        return XFER_FATAL;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        core_errf(err, CORE_EIO, "the download was interrupted at %.1f MB: %s", mb(p->have),
                  errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return XFER_RETRY;
    default:
        core_errf(err, CORE_EIO, "download from %s failed: %s", host, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        return XFER_FATAL;
    }
}

/* ---- validation --------------------------------------------------------- */

/* The file must be a GGUF for architecture smollm3 with a tokenizer, whose
 * tensor table model_load accepts (names, types, shapes; no weight is
 * copied or read, so this costs the header walk). */
static int validate(const char *path, core_err *err) {
    gguf *g = NULL;
    model *m = NULL;
    gguf_str arch;
    int rc = gguf_open(&g, path, err);
    if (rc) return rc;
    if ((rc = gguf_get_str(g, "general.architecture", &arch, err))) goto done;
    if (arch.len != 7 || memcmp(arch.ptr, "smollm3", 7)) {
        rc = core_errf(err, CORE_EUNSUP, "%s: architecture is '%.*s', not smollm3", path, (int)CORE_MIN(arch.len, 64),
                       arch.ptr);
        goto done;
    }
    if (gguf_find_key(g, "tokenizer.ggml.tokens") < 0) {
        rc = core_errf(err, CORE_EFORMAT, "%s: no tokenizer (tokenizer.ggml.tokens) in the file", path);
        goto done;
    }
    kern_init(NULL);
    model_opts mo = {1, 0, MODEL_GPU_OFF};
    rc = model_load(&m, g, &mo, err);
done:
    model_free(m);
    gguf_close(g);
    return rc;
}

/* ---- names -------------------------------------------------------------- */

static int name_ok(const char *s, size_t n, int allow_slash) {
    if (!n || (n == 2 && !memcmp(s, "..", 2)) || (n == 1 && *s == '.')) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '-' || c == '_' || c == '.' || (allow_slash && c == '/'))) return 0;
    }
    return !allow_slash || (!strstr(s, "/../") && strncmp(s, "../", 3) && s[n - 1] != '/' && s[0] != '/');
}

static void endpoint(char *out, size_t cap) {
    const char *e = getenv("HF_ENDPOINT");
    snprintf(out, cap, "%s", e && *e ? e : DEFAULT_ENDPOINT);
    size_t n = strlen(out);
    while (n && out[n - 1] == '/') out[--n] = 0;
}

/* Small GET into memory (the Hugging Face file list). */
static size_t on_mem(char *buf, size_t size, size_t n, void *ud) {
    core_buf *b = ud;
    if (b->len + size * n > (64u << 20)) return 0;
    return core_buf_append(b, buf, size * n) ? 0 : size * n;
}

/* owner/repo:QUANT -> the .gguf file in the repository's list whose name
 * ends in QUANT (case-insensitive); the shortest such name wins, split
 * files (-00001-of-0000N) are refused. */
static int pick_quant(CURL *c, struct curl_slist *hdrs, const char *ep, const char *repo, const char *quant, char *file,
                      size_t cap, core_err *err) {
    char url[1024], errbuf[CURL_ERROR_SIZE] = "";
    snprintf(url, sizeof url, "%s/api/models/%s", ep, repo);
    core_buf body = {0};
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "smolbot-pull/1");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_mem);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    CURLcode rc = curl_easy_perform(c);
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    int ret = 0;
    if (rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_CONNECT) {
        char host[256];
        host_of(url, host, sizeof host);
        ret = core_errf(err, CORE_EIO, "cannot reach %s: are you offline? (%s)", host, errbuf);
    } else if (rc == CURLE_HTTP_RETURNED_ERROR && code == 404) {
        ret = core_errf(err, CORE_ENOTFOUND, "HTTP 404: no repository %s at %s", repo, ep);
    } else if (rc == CURLE_HTTP_RETURNED_ERROR && (code == 401 || code == 403)) {
        ret = core_errf(err, CORE_EIO, "HTTP %ld listing %s: gated or private: set HF_TOKEN to a Hugging Face access token", code,
                        repo);
    } else if (rc != CURLE_OK) {
        ret = core_errf(err, CORE_EIO, "listing the files of %s failed: %s", repo, errbuf[0] ? errbuf : curl_easy_strerror(rc));
    }
    if (ret) goto done;
    json_error_t je;
    json_t *root = json_loadb(body.data ? body.data : "", body.len, 0, &je);
    json_t *sib = root ? json_object_get(root, "siblings") : NULL;
    if (!json_is_array(sib)) {
        ret = core_errf(err, CORE_EFORMAT, "%s: unexpected answer (no 'siblings' list)", url);
        json_decref(root);
        goto done;
    }
    size_t ql = strlen(quant), best = 0, i;
    json_t *it;
    core_buf all = {0};
    file[0] = 0;
    json_array_foreach(sib, i, it) {
        const char *f = json_string_value(json_object_get(it, "rfilename"));
        size_t n = f ? strlen(f) : 0;
        if (n < 6 || strcmp(f + n - 5, ".gguf")) continue;
        core_buf_printf(&all, "%s%s", all.len ? ", " : "", f);
        if (n < ql + 5 || strncasecmp(f + n - 5 - ql, quant, ql)) continue;
        if (n - 5 - ql > 0 && isalnum((unsigned char)f[n - 6 - ql])) continue; /* Q4_K_M must not match XQ4_K_M */
        if (!best || n < best) {
            if (n < cap) snprintf(file, cap, "%s", f), best = n;
        }
    }
    if (!best) {
        /* a split model names its parts ...-Q4_K_M-00001-of-00002.gguf */
        ret = core_errf(err, CORE_ENOTFOUND, "%s has no single .gguf file for %s; its .gguf files: %s", repo, quant,
                        all.len ? all.data : "(none)");
    }
    core_buf_free(&all);
    json_decref(root);
done:
    core_buf_free(&body);
    return ret;
}

/* NAME -> url and file name (the last path segment). *to_endpoint is 1 when
 * the URL is on the Hugging Face endpoint (then HF_TOKEN may be sent). */
static int resolve(CURL *c, struct curl_slist *hdrs, const char *name, char *url, size_t ucap, char *file, size_t fcap,
                   int *to_endpoint, core_err *err) {
    char ep[512];
    endpoint(ep, sizeof ep);
    *to_endpoint = 0;
    if (!name) name = DEFAULT_REPO "/SmolLM3-3B-" DEFAULT_QUANT ".gguf";
    if (!strncmp(name, "http://", 7) || !strncmp(name, "https://", 8)) {
        snprintf(url, ucap, "%s", name);
        size_t n = strcspn(url, "?#");
        const char *s = url + n;
        while (s > url && s[-1] != '/') s--;
        size_t fl = (size_t)(url + n - s);
        if (!fl || fl >= fcap || !name_ok(s, fl, 0))
            return core_errf(err, CORE_EINVAL, "cannot tell a file name from %s: give -o PATH", name);
        memcpy(file, s, fl);
        file[fl] = 0;
        *to_endpoint = !strncmp(url, ep, strlen(ep)) && (url[strlen(ep)] == '/' || !url[strlen(ep)]);
        return 0;
    }
    if (strstr(name, "://")) return core_errf(err, CORE_EINVAL, "%s: only http:// and https:// URLs are supported", name);
    const char *s1 = strchr(name, '/');
    const char *colon = strchr(name, ':');
    char repo[256], path[768], quant[64];
    if (!s1 || s1 == name) goto bad;
    const char *s2 = strchr(s1 + 1, '/');
    if (colon && (!s2 || colon < s2)) { /* owner/repo:QUANT */
        size_t rl = (size_t)(colon - name);
        if (s2 || rl >= sizeof repo || strlen(colon + 1) >= sizeof quant || !name_ok(colon + 1, strlen(colon + 1), 0)) goto bad;
        memcpy(repo, name, rl), repo[rl] = 0;
        snprintf(quant, sizeof quant, "%s", colon + 1);
    } else if (!s2) { /* owner/repo */
        if (strlen(name) >= sizeof repo) goto bad;
        snprintf(repo, sizeof repo, "%s", name);
        snprintf(quant, sizeof quant, "%s", DEFAULT_QUANT);
    } else { /* owner/repo/path/file.gguf */
        size_t rl = (size_t)(s2 - name);
        if (rl >= sizeof repo || strlen(s2 + 1) >= sizeof path) goto bad;
        memcpy(repo, name, rl), repo[rl] = 0;
        snprintf(path, sizeof path, "%s", s2 + 1);
        quant[0] = 0;
    }
    const char *slash = strchr(repo, '/');
    if (!name_ok(repo, (size_t)(slash - repo), 0) || !name_ok(slash + 1, strlen(slash + 1), 0)) goto bad;
    if (quant[0]) {
        int rc = pick_quant(c, hdrs, ep, repo, quant, path, sizeof path, err);
        if (rc) return rc;
    }
    if (!name_ok(path, strlen(path), 1)) goto bad;
    if (snprintf(url, ucap, "%s/%s/resolve/main/%s", ep, repo, path) >= (int)ucap) goto bad;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strlen(base) >= fcap) goto bad;
    memcpy(file, base, strlen(base) + 1);
    *to_endpoint = 1;
    return 0;
bad:
    return core_errf(err, CORE_EINVAL,
                     "cannot make sense of '%s': give owner/repo/file.gguf, owner/repo:QUANT, owner/repo or an http(s) URL", name);
}

/* ---- the command -------------------------------------------------------- */

static int mkdirs(const char *dir) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) return -1;
    for (char *s = tmp + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
        *s = '/';
    }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static int which(const char *opt) {
    char path[4096];
    if (app_find_model(opt, path, sizeof path)) {
        char dir[1024] = "";
        app_models_dir(dir, sizeof dir);
        fprintf(stderr, "pull: no model found (looked at -m, $MODEL_PATH, %s/*.gguf, ./models/*.gguf); "
                        "run 'smolbot pull' to download " DEFAULT_REPO "\n", dir);
        return 1;
    }
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "pull: %s (from %s) is not a readable file\n", path, opt && *opt ? "-m" : "$MODEL_PATH");
        return 1;
    }
    printf("%s\n", path);
    return 0;
}

int cmd_pull(int argc, char **argv) {
    const char *name = NULL, *out_opt = NULL, *want = NULL, *model_opt = NULL;
    int force = 0, quiet = 0, do_which = 0;
    long retries = 5;
    if (app_wants_help(argc, argv)) { usage(stdout); return 0; }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o")) { if (!(out_opt = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--sha256")) { if (!(want = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "-m")) { if (!(model_opt = app_optarg(argc, argv, &i))) return 2; }
        else if (!strcmp(a, "--retries")) {
            const char *v = app_optarg(argc, argv, &i);
            if (!v || app_parse_int(a, v, &retries) || retries < 0 || retries > 1000) return 2;
        }
        else if (!strcmp(a, "--force")) force = 1;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--which")) do_which = 1;
        else if (a[0] == '-' && a[1]) { fprintf(stderr, "pull: unknown option %s\n", a); usage(stderr); return 2; }
        else if (!name) name = a;
        else { fprintf(stderr, "pull: more than one name given ('%s', '%s')\n", name, a); return 2; }
    }
    if (do_which) return which(model_opt);
    if (model_opt) { fprintf(stderr, "pull: -m only goes with --which (use -o to choose where to save)\n"); return 2; }
    char want_lc[65] = "";
    if (want) {
        size_t n = strlen(want);
        int ok = n == 64;
        for (size_t i = 0; ok && i < n; i++) ok = isxdigit((unsigned char)want[i]) != 0;
        if (!ok) { fprintf(stderr, "pull: --sha256 expects 64 hex digits, got '%s'\n", want); return 2; }
        for (size_t i = 0; i < 64; i++) want_lc[i] = (char)tolower((unsigned char)want[i]);
    }

    int rc = 1;
    core_err err = {0};
    char url[2048], file[512], final_path[4096], part[4200], ep[512];
    struct curl_slist *hdrs = NULL, *auth_hdrs = NULL;
    pull p = {.fd = -1};
    int to_ep = 0, tty = isatty(2);
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) { fprintf(stderr, "pull: libcurl failed to start\n"); return 1; }
    p.curl = curl_easy_init();
    if (!p.curl) { fprintf(stderr, "pull: libcurl failed to start\n"); goto out; }
    const char *token = getenv("HF_TOKEN");
    if (token && *token) {
        char h[2048];
        if (snprintf(h, sizeof h, "Authorization: Bearer %s", token) >= (int)sizeof h || strpbrk(token, "\r\n")) {
            fprintf(stderr, "pull: HF_TOKEN is not a valid token\n");
            goto out;
        }
        auth_hdrs = curl_slist_append(NULL, h);
    }
    endpoint(ep, sizeof ep);
    if (resolve(p.curl, auth_hdrs, name, url, sizeof url, file, sizeof file, &to_ep, &err)) {
        fprintf(stderr, "pull: %s\n", err.msg);
        goto out;
    }
    if (to_ep) hdrs = auth_hdrs; /* the token goes to the Hugging Face endpoint only */

    /* where to: -o FILE, -o DIR, or the models directory */
    struct stat st;
    if (out_opt && !stat(out_opt, &st) && S_ISDIR(st.st_mode)) {
        snprintf(final_path, sizeof final_path, "%s/%s", out_opt, file);
    } else if (out_opt) {
        snprintf(final_path, sizeof final_path, "%s", out_opt);
    } else {
        char dir[1024];
        if (app_models_dir(dir, sizeof dir)) { fprintf(stderr, "pull: the models directory path is too long\n"); goto out; }
        snprintf(final_path, sizeof final_path, "%s/%s", dir, file);
    }
    {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", final_path);
        char *sl = strrchr(dir, '/');
        if (sl && sl != dir) {
            *sl = 0;
            if (mkdirs(dir)) { fprintf(stderr, "pull: cannot create %s: %s\n", dir, strerror(errno)); goto out; }
        }
    }
    snprintf(part, sizeof part, "%s.part", final_path);
    if (!force && !stat(final_path, &st)) {
        fprintf(stderr, "pull: %s is already there (use --force to download it again)\n", final_path);
        rc = 0;
        goto out;
    }

    p.url = url, p.part = part, p.tty = tty, p.quiet = quiet;
    p.fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (p.fd < 0) { fprintf(stderr, "pull: cannot open %s: %s\n", part, strerror(errno)); goto out; }
    if (flock(p.fd, LOCK_EX | LOCK_NB)) {
        fprintf(stderr, "pull: another 'smolbot pull' is writing %s\n", part);
        goto out;
    }
    if (fstat(p.fd, &st)) { fprintf(stderr, "pull: %s: %s\n", part, strerror(errno)); goto out; }
    p.have = (uint64_t)st.st_size;
    if (lseek(p.fd, 0, SEEK_END) < 0) { fprintf(stderr, "pull: %s: %s\n", part, strerror(errno)); goto out; }
    app_sha256_init(&p.sha);
    if (hash_existing(&p, &err)) { fprintf(stderr, "pull: %s\n", err.msg); goto out; }

    /* Ctrl-C keeps the .part; a file size limit becomes EFBIG from write() */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGXFSZ, SIG_IGN);

    if (!quiet) fprintf(stderr, "pull: %s\n   -> %s\n", url, final_path);
    int verdict = XFER_FATAL, restarted = 0;
    for (long tries = 0;;) {
        verdict = attempt(&p, hdrs, &err);
        if (verdict == XFER_RANGE_RESTART && !restarted) {
            /* the .part is longer than the file or the server forgot it */
            restarted = 1;
            if (reset_part(&p)) { fprintf(stderr, "pull: cannot truncate %s: %s\n", part, strerror(errno)); goto out; }
            continue;
        }
        if (verdict == XFER_RANGE_RESTART) {
            core_errf(&err, CORE_EIO, "the server refused the byte range twice (HTTP 416)");
            verdict = XFER_FATAL;
        }
        if (verdict == XFER_RANGE_DONE) p.total = p.have, p.total_known = 1, verdict = XFER_OK;
        if (verdict != XFER_RETRY || tries >= retries || stop_flag) break;
        tries++;
        unsigned wait = tries < 5 ? 1u << (tries - 1) : 16u;
        fprintf(stderr, "pull: %s; resuming in %u s (try %ld of %ld)\n", err.msg, wait, tries, retries);
        for (unsigned s = 0; s < wait * 10 && !stop_flag; s++) nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    /* from here on Ctrl-C may kill us: a complete .part is re-checked by the next run */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    if (verdict != XFER_OK) {
        if (err.code == CORE_ECANCEL || stop_flag)
            fprintf(stderr, "\npull: interrupted; %.1f MB kept in %s: run the same command again to resume\n", mb(p.have), part);
        else if (verdict == XFER_RETRY)
            fprintf(stderr, "pull: %s; %.1f MB kept in %s: run the same command again to resume\n", err.msg, mb(p.have), part);
        else
            fprintf(stderr, "pull: %s\n", err.msg);
        /* keep a partial file worth resuming; drop an empty one */
        if (p.have == 0) unlink(part);
        goto out;
    }
    if (p.total_known && p.have != p.total) {
        fprintf(stderr, "pull: got %llu bytes but the server announced %llu; %s kept, run again to resume\n",
                (unsigned long long)p.have, (unsigned long long)p.total, part);
        goto out;
    }
    if (fsync(p.fd)) { fprintf(stderr, "pull: writing %s failed: %s\n", part, strerror(errno)); goto out; }

    uint8_t digest[32];
    char hex[65];
    app_sha256_final(&p.sha, digest);
    app_sha256_hex(digest, hex);
    const char *expect = want_lc[0] ? want_lc : (p.etag_sha[0] ? p.etag_sha : NULL);
    if (expect && strcmp(expect, hex)) {
        fprintf(stderr, "pull: sha256 mismatch for %s: got %s, expected %s (%s); the download was deleted\n", url, hex, expect,
                want_lc[0] ? "--sha256" : "published by the server");
        unlink(part);
        goto out;
    }
    if (!quiet) fprintf(stderr, "pull: checking that %s is a SmolLM3 GGUF\n", part);
    if (validate(part, &err)) {
        fprintf(stderr, "pull: the download is not a usable SmolLM3 model: %s; it was deleted\n", err.msg);
        unlink(part);
        goto out;
    }
    if (rename(part, final_path)) {
        fprintf(stderr, "pull: cannot rename %s to %s: %s\n", part, final_path, strerror(errno));
        goto out;
    }
    if (!quiet)
        fprintf(stderr, "pull: saved %s (%.1f MB)%s\n", final_path, mb(p.have),
                expect ? ", sha256 verified" : "");
    printf("%s  %s\n", hex, final_path);
    rc = 0;
out:
    if (p.fd >= 0) close(p.fd);
    curl_slist_free_all(auth_hdrs);
    if (p.curl) curl_easy_cleanup(p.curl);
    curl_global_cleanup();
    return rc;
}
