/* assets.c -- lookup in the embedded asset table (see assets.h). */
#include "http/assets.h"

#include <string.h>

const http_asset *http_asset_find(const char *path) {
    if (!path) return NULL;
    for (const http_asset *a = http_assets; a->path; a++)
        if (strcmp(a->path, path) == 0) return a;
    return NULL;
}
