/* gpu_opt.c -- the `--gpu auto|on|off` option shared by generate, chat,
 * serve and bench (issue 12). auto (the default) runs on a CUDA device when
 * the binary was built with `make CUDA=1` and one is present, else on the
 * CPU; on insists (the model fails to load without a GPU); off is the CPU.
 */
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "model/model.h"

int app_parse_gpu(const char *v, int *out) {
    if (!strcmp(v, "auto")) *out = MODEL_GPU_AUTO;
    else if (!strcmp(v, "on")) *out = MODEL_GPU_ON;
    else if (!strcmp(v, "off")) *out = MODEL_GPU_OFF;
    else {
        fprintf(stderr, "--gpu expects auto, on or off (got '%s')\n", v);
        return -1;
    }
    return 0;
}
