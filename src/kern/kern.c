/* kern.c -- the per-type traits tables and ISA selection.
 *
 * Two tables: the scalar reference (kern_ref, filled once, never changed)
 * and the one in use (kern_cur), which kern_init builds from the scalar
 * table by letting every ISA this CPU supports overwrite what it
 * implements. kern_cur is the module's only mutable global (style rule 8):
 * written by kern_init before any thread runs kernels, read-only after.
 * Using the kernels before kern_init is allowed and gets the scalar table
 * (kern_get_traits initialises lazily, single-threaded callers only).
 */
#include <stdlib.h>
#include <string.h>

#include <cpuid.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kern/kern_impl.h"

kern_impl kern_cur;
static kern_impl kern_ref;
static int kern_ready;

/* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports
 * does not know the "f16c" name, gcc's does; cpuid works for both. */
static int cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0 && cpu_has_f16c();
}

static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") != 0 && __builtin_cpu_supports("avx512bw") != 0 &&
           __builtin_cpu_supports("avx512vl") != 0 && __builtin_cpu_supports("avx512vnni") != 0;
}

/* AMX-TILE and AMX-INT8 (CPUID leaf 7, EDX bits 24 and 25), the tile
 * state enabled by the OS (XCR0 bits 17 and 18), and Linux's leave to use
 * it: the 8 KB of tile data are off until a process asks (arch_prctl
 * ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA), once, for all its threads. */
static int cpu_has_amx(void) {
#if defined(KERN_AMX_EMU)
    /* the test build's tiles are C (amx_emu.h); the kernel around them needs AVX-512 VBMI */
    return cpu_has_avx512() && __builtin_cpu_supports("avx512vbmi") != 0;
#elif defined(__linux__) && defined(SYS_arch_prctl)
    unsigned a, b, c, d;
    if (!cpu_has_avx512() || !__get_cpuid_count(7, 0, &a, &b, &c, &d) || (d & (3u << 24)) != (3u << 24)) return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE: xgetbv works */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}

int kern_init(const char *isa) {
    if (!isa || !*isa) isa = getenv("SMOLBOT_ISA");
    if (isa && !*isa) isa = NULL;
    kern_ref_install(&kern_ref);
    kern_impl t;
    kern_ref_install(&t);
    if (isa && strcmp(isa, "scalar") && strcmp(isa, "avx2") && strcmp(isa, "avx512") && strcmp(isa, "amx"))
        return CORE_EUNSUP;
    if (isa && !strcmp(isa, "avx2") && !cpu_has_avx2()) return CORE_EUNSUP;
    if (isa && !strcmp(isa, "avx512") && !cpu_has_avx512()) return CORE_EUNSUP;
    if (isa && !strcmp(isa, "amx") && !cpu_has_amx()) return CORE_EUNSUP;
    const int wantamx = isa ? strcmp(isa, "amx") == 0 : cpu_has_amx();
    const int want2 = isa ? strcmp(isa, "scalar") != 0 : cpu_has_avx2();
    const int want512 = isa ? wantamx || strcmp(isa, "avx512") == 0 : cpu_has_avx512();
    if (want2) kern_avx2_install(&t);
    if (want512) kern_avx512_install(&t);
    if (wantamx) kern_amx_install(&t);
    kern_cur = t;
    kern_ready = 1;
    return 0;
}

static void ensure_ready(void) {
    if (!kern_ready) kern_init("scalar");
}

const char *kern_isa(void) {
    ensure_ready();
    return kern_cur.isa;
}

const kern_traits *kern_get_traits(int type) {
    ensure_ready();
    if (type < 0 || type >= KERN_TYPE_MAX || !kern_cur.traits[type].name) return NULL;
    return &kern_cur.traits[type];
}

const kern_traits *kern_ref_traits(int type) {
    ensure_ready();
    if (type < 0 || type >= KERN_TYPE_MAX || !kern_ref.traits[type].name) return NULL;
    return &kern_ref.traits[type];
}

size_t kern_row_size(int type, int64_t n) {
    const kern_traits *t = kern_ref_traits(type);
    if (!t || n < 0) return 0;
    assert(n % t->blck == 0);
    return (size_t)(n / t->blck) * t->bytes;
}
