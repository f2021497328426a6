/* assets.h -- web files embedded into the binary at build time.
 *
 * tools/embed.sh writes build/gen/assets.c with the table below from the
 * files under web/ (and htmx from web/node_modules). Paths are exact URL
 * paths ("/index.html", "/static/htmx.min.js"); there is no file system
 * behind them, so no path can escape. The table ends with a NULL path.
 */
#ifndef HTTP_ASSETS_H
#define HTTP_ASSETS_H

#include <stddef.h>

typedef struct http_asset {
    const char *path;
    const unsigned char *data;
    size_t len;
    const char *mime;
} http_asset;

extern const http_asset http_assets[];

/* The asset at exactly `path`, or NULL. */
const http_asset *http_asset_find(const char *path);

#endif
