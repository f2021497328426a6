/* avx512.c -- AVX-512 (F/BW/VL/VNNI) twins of the kernels (placeholder). */
#include "kern_impl.h"
void kern_avx512_install(kern_impl *t) { t->isa = "avx512"; }
