/* avx2.c -- AVX2/FMA/F16C twins of the kernels (placeholder until filled). */
#include "kern_impl.h"
void kern_avx2_install(kern_impl *t) { t->isa = "avx2"; }
