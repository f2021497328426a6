/* emu.h -- enough of CUDA on the CPU to run the backend's kernels and host
 * code (compiled as C++ with SMOLBOT_GPU_EMU defined), so that the kernels'
 * own code is tested against the scalar references where no GPU is -- in CI.
 *
 * A launch (emu_launch) runs the grid block by block. Each thread of a
 * block is a fiber (see "threads, barriers" below); __syncthreads is a
 * barrier of the block's live threads, and a warp's collective operations (shuffles, mma.sync,
 * ldmatrix) are a barrier of its 32 lanes around a slot per lane: every
 * lane deposits its operands, then computes its own result from all of
 * them, exactly as the PTX ISA lays out the fragments:
 *   mma m16n8k16 f16 -> f32:  a0 = A[g][2t..], a1 = A[g+8][2t..],
 *       a2 = A[g][8+2t..], a3 = A[g+8][8+2t..]; b0 = B[2t..][g],
 *       b1 = B[8+2t..][g]; c0,c1 = C[g][2t..], c2,c3 = C[g+8][2t..]
 *   mma m16n8k32 s8 -> s32:   a0 = A[g][4t..4t+3], a1 = A[g+8][4t..],
 *       a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]; b0 = B[4t..][g],
 *       b1 = B[16+4t..][g] (m16n8k16: a0, a1, b0)
 *   ldmatrix x4: lane 8i+r gives row r of matrix i; register i of lane l
 *       is M_i[l/4][2(l%4)..+1], or M_i[2(l%4)..+1][l/4] transposed
 * (g = lane / 4, t = lane % 4; "x..": consecutive elements packed low
 * first). cp.async copies at once; __threadfence and griddepcontrol do
 * nothing beyond a fence: the emulation checks arithmetic and indexing,
 * not timing, memory ordering or races.
 *
 * Static __shared__ variables become function statics (one block runs at
 * a time); dynamic shared memory is emu_dyn_smem(). Half floats round to
 * nearest even through the project's own conversions (core.h).
 */
#ifndef EMU_H
#define EMU_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#include <atomic>
#include <vector>

extern "C" {
uint16_t core_f32_to_f16(float f);
float core_f16_to_f32(uint16_t h);
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static

/* ---- vector types ---- */
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
static inline float2 make_float2(float x, float y) { return {x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
static inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
static inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
typedef int cudaStream_t;

/* ---- half and bfloat16 ---- */
struct __half { uint16_t x; };
struct alignas(4) __half2 { __half x, y; };
struct __nv_bfloat16 { uint16_t x; };
/* f16 -> f32 through a table: the emulated tensor cores convert a lot */
static inline float emu_f16(uint16_t h) {
    static float *tab;
    if (!tab) {
        float *t = (float *)malloc(65536 * sizeof *t);
        for (int i = 0; i < 65536; i++) t[i] = core_f16_to_f32((uint16_t)i);
        tab = t;
    }
    return tab[h];
}
static inline float __half2float(__half h) { return emu_f16(h.x); }
static inline __half __float2half_rn(float f) { return {core_f32_to_f16(f)}; }
static inline __half __ushort_as_half(unsigned short u) { return {u}; }
static inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
static inline __half2 __floats2half2_rn(float lo, float hi) { return {__float2half_rn(lo), __float2half_rn(hi)}; }
static inline float __bfloat162float(__nv_bfloat16 b) {
    const uint32_t u = (uint32_t)b.x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- scalar intrinsics ---- */
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline int __float2int_rn(float f) { return (int)nearbyintf(f); }
/* volatile: no contraction into an FMA, as nvcc promises for these */
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
}
static inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    return (unsigned)((((uint64_t)hi << 32) | lo) >> (shift & 31));
}
static inline unsigned __vsub4(unsigned a, unsigned b) {
    unsigned r = 0;
    for (int i = 0; i < 4; i++) r |= ((((a >> (8 * i)) & 0xFF) - ((b >> (8 * i)) & 0xFF)) & 0xFF) << (8 * i);
    return r;
}
template <class T> static inline T __ldcg(const T *p) { return *p; }
template <class T> static inline T __ldg(const T *p) { return *p; }
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline unsigned atomicAdd(unsigned *p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
static inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }

/* ---- threads, barriers ----
 * The threads of a block are fibers run by one OS thread: a fiber runs
 * until it waits at a barrier or returns, then the scheduler resumes the
 * next ready one (a barrier's waiters become ready when it opens). Deterministic. A fiber starts on its
 * own stack through makecontext/setcontext; after that the switches are
 * the compiler's __builtin_setjmp/__builtin_longjmp: no system call (as
 * swapcontext makes) and no sanitizer interceptor (as longjmp has, which
 * clears the whole thread stack's shadow each time); ASan is told of each
 * switch instead. */

/* A barrier of the live members of a group: a thread that returns counts
 * as arrived from then on (whole warps leave kernels early, before any
 * __syncthreads; blocks leave together). */
struct emu_fiber;
struct emu_bar {
    int live, arrived;
    emu_fiber *waiters; /* linked through emu_fiber.next */
};
static inline void emu_bar_init(emu_bar *b, int n) { b->live = n, b->arrived = 0, b->waiters = NULL; }
static inline void emu_bar_open(emu_bar *b);

/* A collective's operands go to slot[c & 1] for the lane's c-th
 * collective: alternating slots need one barrier each, since no lane can
 * start collective c + 2 before every lane has arrived at c + 1. The
 * first lane to read a collective's result computes it for the whole warp
 * (res, done[c & 1] = c + 1). */
struct emu_warp {
    emu_bar bar;
    uint32_t slot[2][32][8];
    uint32_t res[2][32][4];
    unsigned done[2];
};
struct emu_fiber {
    ucontext_t ctx; /* the start, once */
    void *jb[5];    /* where it waits (__builtin_setjmp) */
    int started;
    dim3 tid;
    int lane, done;
    emu_warp *warp;
    emu_fiber *next; /* in a barrier's waiters */
    unsigned ncoll;  /* this lane's collectives so far */
    void *stack;
    const void *ptr; /* ldmatrix row address */
};
struct emu_block {
    dim3 grid, block, bid;
    emu_bar bar;
    unsigned char *dyn;
    void *sched[5];
    emu_fiber *self;
    const void *sched_bottom; /* the scheduler's stack, for ASan's fiber switches */
    size_t sched_size;
    emu_fiber **runq; /* fibers ready to run: a ring of one slot per thread */
    int rq_head, rq_len, rq_cap;
};
inline emu_block emu_blk; /* the block running now (one for every file that includes this) */

#define threadIdx (emu_blk.self->tid)
#define blockIdx (emu_blk.bid)
#define blockDim (emu_blk.block)
#define gridDim (emu_blk.grid)

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif
#define EMU_STACK (64 * 1024)

/* The switches are not instrumented: ASan would call its no-return hook
 * before each longjmp, clearing the shadow of the whole thread stack. */
#define EMU_NO_ASAN __attribute__((no_sanitize_address))

/* fiber -> scheduler */
static EMU_NO_ASAN void emu_yield() {
    emu_fiber *f = emu_blk.self;
#if EMU_ASAN
    void *fake = NULL; /* a finished fiber's fake stack is released (NULL) */
    __sanitizer_start_switch_fiber(f->done ? NULL : &fake, emu_blk.sched_bottom, emu_blk.sched_size);
#endif
    if (!__builtin_setjmp(f->jb)) __builtin_longjmp(emu_blk.sched, 1);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}
/* the waiters become ready (they run when the opener next waits) */
static inline void emu_bar_open(emu_bar *b) {
    b->arrived = 0;
    for (emu_fiber *f = b->waiters; f; f = f->next)
        emu_blk.runq[(emu_blk.rq_head + emu_blk.rq_len++) % emu_blk.rq_cap] = f;
    b->waiters = NULL;
}
/* returns 1 in the thread that opened it (the last to arrive) */
static inline int emu_bar_wait(emu_bar *b) {
    emu_fiber *f = emu_blk.self;
    if (++b->arrived == b->live) {
        emu_bar_open(b);
        return 1;
    }
    f->next = b->waiters, b->waiters = f;
    emu_yield();
    return 0;
}
static inline void emu_bar_leave(emu_bar *b) {
    b->live--;
    if (b->arrived && b->arrived == b->live) emu_bar_open(b);
}

static inline void *emu_dyn_smem(void) { return emu_blk.dyn; }
static inline void __syncthreads() { emu_bar_wait(&emu_blk.bar); }
static inline void __syncwarp(unsigned = 0xffffffffu) { emu_bar_wait(&emu_blk.self->warp->bar); }

/* deposit n words in this collective's slot and wait for the warp; returns
 * the slots to read (valid until this lane's next collective) */
static inline uint32_t (*emu_put(const void *v, int n))[8] {
    emu_fiber *f = emu_blk.self;
    uint32_t(*slots)[8] = f->warp->slot[f->ncoll++ & 1];
    memcpy(slots[f->lane], v, 4 * (size_t)n);
    emu_bar_wait(&f->warp->bar);
    return slots;
}
static inline int emu_lane() { return emu_blk.self->lane; }

/* A collective whose results all(slots, res) computes for the 32 lanes at
 * once: returns this lane's 4 words. */
typedef void (*emu_all_fn)(uint32_t (*sl)[8], uint32_t (*res)[4]);
static inline const uint32_t *emu_collective(const void *v, int n, emu_all_fn all) {
    emu_fiber *f = emu_blk.self;
    const unsigned c = f->ncoll;
    uint32_t(*sl)[8] = emu_put(v, n);
    emu_warp *w = f->warp;
    if (w->done[c & 1] != c + 1) {
        all(sl, w->res[c & 1]);
        w->done[c & 1] = c + 1;
    }
    return w->res[c & 1][f->lane];
}

template <class T> static inline T emu_shfl(T v, int src) {
    static_assert(sizeof(T) == 4, "32-bit shuffles");
    uint32_t(*s)[8] = emu_put(&v, 1);
    T r;
    memcpy(&r, s[src & 31], 4);
    return r;
}
template <class T> static inline T __shfl_sync(unsigned, T v, int src) { return emu_shfl(v, src); }
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int m) { return emu_shfl(v, emu_lane() ^ m); }

/* ---- tensor-core and async-copy instructions ---- */

static inline float emu_h(uint32_t w, int hi) { return emu_f16((uint16_t)(hi ? w >> 16 : w)); }
static inline int emu_b(uint32_t w, int i) { return (int)(int8_t)(w >> (8 * i)); }

/* D = A (16 x K) B (K x 8) for every lane (the caller adds C), from the
 * lanes' fragments: each 32-bit register packs E elements (f16: 2, s8: 4),
 * so with g = lane / 4, t = lane % 4 and h = K / 2
 *   a0 = A[g][Et..], a1 = A[g+8][Et..], a2 = A[g][h+Et..], a3 = A[g+8][h+Et..]
 *   b0 = B[Et..][g], b1 = B[h+Et..][g]
 * (s8 with K = 16 has a0, a1, b0 only: Et.. then spans all of K). Slot
 * words 0-3: a, 4-5: b, 7: K. */
template <class T, int E, T (*elem)(uint32_t, int)>
static void emu_all_mma(uint32_t (*sl)[8], uint32_t (*res)[4]) {
    const int K = (int)sl[0][7], regs = K / (4 * E); /* A registers per row: 1 or 2 */
    T A[16][32], B[32][8];
    for (int l = 0; l < 32; l++) {
        const uint32_t *s = sl[l];
        const int g = l >> 2, t = l & 3;
        for (int r = 0; r < regs; r++)
            for (int e = 0; e < E; e++) {
                const int k = r * K / 2 + E * t + e;
                A[g][k] = elem(s[2 * r], e), A[g + 8][k] = elem(s[2 * r + 1], e), B[k][g] = elem(s[4 + r], e);
            }
    }
    for (int l = 0; l < 32; l++)
        for (int e = 0; e < 4; e++) {
            const int row = (l >> 2) + (e >= 2 ? 8 : 0), col = 2 * (l & 3) + (e & 1);
            T sum = 0;
            for (int k = 0; k < K; k++) sum += A[row][k] * B[k][col];
            memcpy(&res[l][e], &sum, 4);
        }
}
static inline void emu_mma_f16(float *c, const unsigned *a, unsigned b0, unsigned b1) {
    const uint32_t in[8] = {a[0], a[1], a[2], a[3], b0, b1, 0u, 16u};
    const uint32_t *r = emu_collective(in, 8, emu_all_mma<float, 2, emu_h>);
    for (int e = 0; e < 4; e++) c[e] += __uint_as_float(r[e]);
}
/* K = 32, or 16 (then a[2], a[3] and b1 are not read) */
static inline void emu_mma_s8(int *c, const int *a, int b0, int b1, int K) {
    const uint32_t in[8] = {(uint32_t)a[0], (uint32_t)a[1], K == 32 ? (uint32_t)a[2] : 0u, K == 32 ? (uint32_t)a[3] : 0u,
                            (uint32_t)b0, (uint32_t)b1, 0u, (uint32_t)K};
    const uint32_t *r = emu_collective(in, 8, emu_all_mma<int, 4, emu_b>);
    for (int e = 0; e < 4; e++) c[e] += (int)r[e];
}

/* ldmatrix .x4 (.trans): four 8x8 b16 matrices, rows given by the lanes
 * (slot words 0-1: the row address, word 7: trans) */
static void emu_all_ldsm(uint32_t (*sl)[8], uint32_t (*res)[4]) {
    const void *rows[32];
    for (int l = 0; l < 32; l++) memcpy(&rows[l], sl[l], sizeof rows[l]);
    const int trans = (int)sl[0][7];
    for (int l = 0; l < 32; l++) {
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; i++) {
            uint16_t lo, hi;
            if (!trans) {
                const uint16_t *row = (const uint16_t *)rows[8 * i + g];
                lo = row[2 * t], hi = row[2 * t + 1];
            } else {
                lo = ((const uint16_t *)rows[8 * i + 2 * t])[g];
                hi = ((const uint16_t *)rows[8 * i + 2 * t + 1])[g];
            }
            res[l][i] = (uint32_t)lo | ((uint32_t)hi << 16);
        }
    }
}
static inline void emu_ldsm_x4(unsigned *r, const void *p, int trans) {
    uint32_t in[8] = {0};
    memcpy(in, &p, sizeof p);
    in[7] = (uint32_t)trans;
    const uint32_t *o = emu_collective(in, 8, emu_all_ldsm);
    for (int i = 0; i < 4; i++) r[i] = o[i];
}

static inline void emu_cp_async16(void *dst, const void *src, int bytes) {
    if (bytes) memcpy(dst, src, 16);
    else memset(dst, 0, 16);
}

/* ---- launch ----
 * One set of fibers serves a launch: each runs the kernel for the current
 * block, leaves the block's barriers, and waits at the end of the block;
 * the last to arrive sets up the next block (barriers, shared memory),
 * so a block costs no new contexts. */

#include <functional>
#include <tuple>
#include <utility>

template <typename... KA, size_t... I>
static void emu_call(void (*k)(KA...), std::tuple<KA...> &a, std::index_sequence<I...>) {
    k(std::get<I>(a)...);
}
/* the running launch (makecontext passes ints only) */
struct emu_run {
    void (*fn)(void *);
    void *arg;
    unsigned next, total; /* blocks handed out, and in the grid */
    int nt, nw, finished;
    emu_warp *warps;
    std::vector<unsigned char> *dyn;
    emu_bar end;
};
inline emu_run emu_cur_run;

/* the block emu_cur_run.next - 1 starts: fresh barriers and shared memory */
static void emu_block_setup() {
    emu_run *r = &emu_cur_run;
    const unsigned b = r->next++;
    const dim3 g = emu_blk.grid;
    emu_blk.bid = dim3(b % g.x, (b / g.x) % g.y, b / (g.x * g.y));
    memset(r->dyn->data(), 0xA5, r->dyn->size()); /* shared memory starts as garbage */
    emu_bar_init(&emu_blk.bar, r->nt);
    for (int w = 0; w < r->nw; w++) {
        emu_bar_init(&r->warps[w].bar, w == r->nw - 1 ? r->nt - 32 * w : 32);
        r->warps[w].done[0] = r->warps[w].done[1] = 0;
    }
}

static void emu_fiber_main() {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, &emu_blk.sched_bottom, &emu_blk.sched_size);
#endif
    emu_run *r = &emu_cur_run;
    for (;;) {
        emu_blk.self->ncoll = 0;
        r->fn(r->arg);
        emu_fiber *f = emu_blk.self;
        emu_bar_leave(&f->warp->bar);
        emu_bar_leave(&emu_blk.bar);
        /* the end of the block: its last thread sets up the next one before
         * the others run again */
        if (emu_bar_wait(&r->end)) {
            if (r->next < r->total) emu_block_setup();
            else r->finished = 1;
        }
        if (r->finished) break;
    }
    emu_blk.self->done = 1;
    emu_yield(); /* never resumed */
}
template <typename... KA> struct emu_kernel {
    void (*k)(KA...);
    std::tuple<KA...> args;
    static void run(void *p) {
        emu_kernel *e = (emu_kernel *)p;
        emu_call(e->k, e->args, std::index_sequence_for<KA...>{});
    }
};

/* a fresh context at emu_fiber_main on the fiber's stack (getcontext
 * returns twice, so it has a frame of its own too) */
static __attribute__((noinline)) void emu_fiber_start(emu_fiber *f) {
#if EMU_ASAN
    __asan_unpoison_memory_region(f->stack, EMU_STACK); /* whatever the last launch's frames left */
#endif
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack, f->ctx.uc_stack.ss_size = EMU_STACK, f->ctx.uc_link = NULL;
    makecontext(&f->ctx, emu_fiber_main, 0);
}

/* scheduler -> fiber, until it waits or returns; a function of its own so
 * that no local of the scheduler's loop lives across the switch */
static __attribute__((noinline)) EMU_NO_ASAN void emu_resume(emu_fiber *f) {
    emu_blk.self = f;
#if EMU_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, f->stack, EMU_STACK);
#endif
    if (!__builtin_setjmp(emu_blk.sched)) {
        if (!f->started) {
            f->started = 1;
            setcontext(&f->ctx);
        }
        __builtin_longjmp(f->jb, 1);
    }
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

/* Run k over the grid on the CPU, block after block; returns when done. */
template <typename... KA> static void emu_run_grid(void (*k)(KA...), dim3 grid, dim3 block, size_t smem, KA... args) {
    emu_kernel<KA...> ek = {k, std::tuple<KA...>(args...)};
    const int nt = (int)(block.x * block.y * block.z), nw = (nt + 31) / 32;
    const unsigned total = grid.x * grid.y * grid.z;
    if (!total || !nt) return;
    std::vector<unsigned char> dyn(smem + 16);
    std::vector<emu_warp> warps((size_t)nw);
    std::vector<emu_fiber> fib((size_t)nt);
    std::vector<emu_fiber *> runq((size_t)nt);
    emu_blk.runq = runq.data(), emu_blk.rq_head = 0, emu_blk.rq_len = 0, emu_blk.rq_cap = nt;
    emu_run *r = &emu_cur_run;
    r->fn = emu_kernel<KA...>::run, r->arg = &ek, r->next = 0, r->total = total, r->nt = nt, r->nw = nw;
    r->finished = 0, r->warps = warps.data(), r->dyn = &dyn;
    emu_bar_init(&r->end, nt);
    emu_blk.grid = grid, emu_blk.block = block, emu_blk.dyn = dyn.data();
    emu_block_setup();
    for (int i = 0; i < nt; i++) {
        emu_fiber &f = fib[(size_t)i];
        f.stack = malloc(EMU_STACK);
        f.tid = dim3((unsigned)i % block.x, ((unsigned)i / block.x) % block.y, (unsigned)i / (block.x * block.y));
        f.lane = i & 31, f.done = 0, f.started = 0, f.warp = &warps[(size_t)(i >> 5)], f.next = NULL, f.ncoll = 0;
        emu_fiber_start(&f);
        runq[(size_t)i] = &f;
    }
    emu_blk.rq_len = nt;
    while (emu_blk.rq_len) {
        emu_fiber *f = emu_blk.runq[emu_blk.rq_head];
        emu_blk.rq_head = (emu_blk.rq_head + 1) % emu_blk.rq_cap, emu_blk.rq_len--;
        emu_resume(f);
    }
    for (const emu_fiber &f : fib)
        if (!f.done) {
            fprintf(stderr, "emu: block %u: every live thread waits at a barrier\n", r->next - 1);
            abort(); /* a kernel bug in a test harness: nothing to return to */
        }
    for (emu_fiber &f : fib) free(f.stack);
}

/* ---- the runtime API, as far as gpu.cu uses it ----
 * Device memory is host memory; copies are memcpy; streams are in order
 * by construction; a graph is the list of launches made while capturing,
 * replayed by cudaGraphLaunch. */
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum { cudaStreamNonBlocking = 1, cudaHostAllocDefault = 0, cudaStreamCaptureModeThreadLocal = 1,
       cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
typedef std::vector<std::function<void()>> emu_graph;
typedef emu_graph *cudaGraph_t;
typedef emu_graph *cudaGraphExec_t;
inline emu_graph *emu_capture; /* launches go here while a stream captures */

template <typename... KA> static void emu_launch(void (*k)(KA...), dim3 grid, dim3 block, size_t smem, KA... args) {
    if (emu_capture) emu_capture->push_back([=]() { emu_run_grid(k, grid, block, smem, args...); });
    else emu_run_grid(k, grid, block, smem, args...);
}

struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount;
    size_t totalGlobalMem;
};
static inline const char *cudaGetErrorString(cudaError_t e) { return e ? "out of memory (emulated device)" : "no error"; }
static inline cudaError_t cudaGetLastError() { return cudaSuccess; }
static inline cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
static inline cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
static inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "CPU emulation of CUDA (SMOLBOT_GPU_EMU)");
    p->major = 9, p->minor = 0, p->multiProcessorCount = 1, p->totalGlobalMem = (size_t)1 << 30;
    return cudaSuccess;
}
static inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
static inline cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
static inline cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) { return cudaMalloc(p, n); }
static inline cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
static inline cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) { memmove(d, s, n); return cudaSuccess; }
static inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t) {
    return cudaMemcpy(d, s, n, k);
}
static inline cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h,
                                            cudaMemcpyKind, cudaStream_t) {
    for (size_t i = 0; i < h; i++) memmove((char *)d + i * dp, (const char *)s + i * sp, w);
    return cudaSuccess;
}
static inline cudaError_t cudaMemset(void *p, int v, size_t n) { memset(p, v, n); return cudaSuccess; }
static inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { *s = 1; return cudaSuccess; }
static inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
template <class F> static inline cudaError_t cudaFuncSetAttribute(F, int, int) { return cudaSuccess; }
static inline cudaError_t cudaStreamBeginCapture(cudaStream_t, int) {
    emu_capture = new emu_graph();
    return cudaSuccess;
}
static inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) {
    *g = emu_capture, emu_capture = NULL;
    return cudaSuccess;
}
static inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
    *e = new emu_graph(*g);
    return cudaSuccess;
}
static inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
    for (auto &f : *e) f();
    return cudaSuccess;
}
static inline cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete g; return cudaSuccess; }
static inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { delete e; return cudaSuccess; }
typedef struct timespec *cudaEvent_t;
static inline cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (struct timespec *)calloc(1, sizeof **e);
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}
static inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) { clock_gettime(CLOCK_MONOTONIC, e); return cudaSuccess; }
static inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
static inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)((double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6);
    return cudaSuccess;
}
static inline cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
/* every launch runs to its end at once: streams are always in order */
enum { cudaEventDisableTiming = 2 };
static inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { return cudaEventCreate(e); }
static inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }

#endif
