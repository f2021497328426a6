/* common.cuh -- what every kernel file of the CUDA backend shares: the
 * CUDA headers (or emu.h, the CPU emulation, with SMOLBOT_GPU_EMU), warp
 * reductions, the inline-asm instructions (each with its emulated twin:
 * nothing else differs between the two builds), and the launch helpers.
 *
 * Launches. Decode kernels are launched with programmatic stream
 * serialization (launch): their blocks are scheduled while the previous
 * kernel drains and wait in gdc_wait before reading its results. Kernels
 * that read their inputs without gdc_wait use launch_plain.
 */
#ifndef COMMON_CUH
#define COMMON_CUH

#ifdef SMOLBOT_GPU_EMU
#include "model/cuda/emu.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include <type_traits>

/* dynamic shared memory of a kernel launch, as an array of T */
#ifdef SMOLBOT_GPU_EMU
#define DYN_SMEM(T, name) T *name = (T *)emu_dyn_smem()
#else
#define DYN_SMEM(T, name) extern __shared__ __align__(16) T name[]
#endif

/* Store the accumulators of MI x NJ m16n8 mma tiles to y (token-major,
 * ldy floats per token): element e of tile (i, j) is row r0 + 16i + g (+8
 * for e >= 2) of token t0 + 8j + 2t + (e & 1), with g = lane / 4 and
 * t = lane % 4; rows from M and tokens from N on are cut; acc adds to y. */
template <int MI, int NJ>
__device__ __forceinline__ void mma_store(const float (&c)[MI][NJ][4], float *y, int ldy, int r0, int t0, int M, int N,
                                          int g, int t, int acc) {
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int r = r0 + 16 * i + g + (e >= 2 ? 8 : 0), tt = t0 + 8 * j + 2 * t + (e & 1);
                if (r < M && tt < N) {
                    float *yp = y + (size_t)tt * ldy + r;
                    *yp = acc ? *yp + c[i][j][e] : c[i][j][e];
                }
            }
}

/* An error message into msg (len bytes, may be NULL): the C API's way. */
static inline void set_msg(char *msg, size_t len, const char *fmt, ...) {
    if (!msg || !len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Programmatic dependent launch (sm_90): a kernel launched with
 * programmatic stream serialization is scheduled while its predecessor
 * drains, and waits here before reading what the predecessor wrote. A
 * no-op for ordinary launches. */
__device__ __forceinline__ void gdc_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Let the next kernel's blocks be scheduled now rather than as this grid's
 * blocks exit: they wait in gdc_wait until this grid
 * has finished and its writes are visible, but can fetch their weights
 * into L2 first. They only launch once every block of this grid has run
 * this, so they never take the place of one of ours. */
__device__ __forceinline__ void gdc_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Ask L2 for the 128-byte line at p (a hint: nothing waits for it; a
 * no-op on the emulation). */
__device__ __forceinline__ void l2_line(const void *p) {
#if defined(__CUDA_ARCH__)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void)p;
#endif
}

/* the read-only bytes [p, p + n), a line per thread */
__device__ __forceinline__ void l2_prefetch(const void *p, size_t n) {
    const char *e = (const char *)p + n;
    for (const char *c = (const char *)((uintptr_t)p & ~(uintptr_t)127) + threadIdx.x * 128; c < e; c += blockDim.x * 128)
        l2_line(c);
}

/* 16 bytes global -> shared, asynchronously; bytes 0 writes zeros */
#ifdef SMOLBOT_GPU_EMU
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) { emu_cp_async16(dst, src, bytes); }
__device__ __forceinline__ void cp_async_commit() {}
template <int N> __device__ __forceinline__ void cp_async_wait() {}
#else
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"((unsigned)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
#endif

/* Tensor-core instructions (PTX ISA fragment layouts, g = lane / 4,
 * t = lane % 4; emu.h computes the same from every lane's operands):
 *   s8 m16n8k32:  a0 = A[g][4t..], a1 = A[g+8][4t..], a2 = A[g][16+4t..],
 *                 a3 = A[g+8][16+4t..]; b0 = B[4t..][g], b1 = B[16+4t..][g]
 *                 (m16n8k16: a0, a1, b0 only)
 *   f16 m16n8k16: a0 = A[g][2t..], a1 = A[g+8][2t..], a2 = A[g][8+2t..],
 *                 a3 = A[g+8][8+2t..]; b0 = B[2t..][g], b1 = B[8+2t..][g]
 *   C 16x8:       c0, c1 = C[g][2t..], c2, c3 = C[g+8][2t..] */
#ifdef SMOLBOT_GPU_EMU
__device__ __forceinline__ void mma_k32(int *c, const int *a, int b0, int b1) { emu_mma_s8(c, a, b0, b1, 32); }
__device__ __forceinline__ void mma_k16(int *c, const int *a, int b0) { emu_mma_s8(c, a, b0, 0, 16); }
__device__ __forceinline__ void ldsm_x4(unsigned *r, const __half *p) { emu_ldsm_x4(r, p, 0); }
__device__ __forceinline__ void ldsm_x4_t(unsigned *r, const __half *p) { emu_ldsm_x4(r, p, 1); }
__device__ __forceinline__ void mma_f16(float *c, const unsigned *a, unsigned b0, unsigned b1) { emu_mma_f16(c, a, b0, b1); }
#else
__device__ __forceinline__ void mma_k32(int *c, const int *a, int b0, int b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_k16(int *c, const int *a, int b0) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(b0));
}
__device__ __forceinline__ void ldsm_x4(unsigned *r, const __half *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned *r, const __half *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(p)));
}
__device__ __forceinline__ void mma_f16(float *c, const unsigned *a, unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif
/* lo in the low half: the element of the lower column index */
__device__ __forceinline__ unsigned pack_h2(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *(const unsigned *)&h;
}
/* the pair (a, b) as two f16 pairs, hi + lo = (a, b) to about 2^-22 */
__device__ __forceinline__ void split_h2(float a, float b, unsigned *hi, unsigned *lo) {
    *hi = pack_h2(a, b);
    const float2 h = __half22float2(*(const __half2 *)hi);
    *lo = pack_h2(a - h.x, b - h.y);
}


#ifdef SMOLBOT_GPU_EMU
/* on the CPU: run the grid now, block by block (emu.h) */
template <typename... KArgs, typename... Args>
static void launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    (void)st;
    emu_launch(k, grid, block, smem, (KArgs)args...);
}
#define launch_plain launch
#else
/* pdl: programmatic stream serialization (the kernel calls gdc_wait) */
template <typename... KArgs, typename... Args>
static void launch_with(int pdl, void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at[1];
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = st;
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = pdl;
    cfg.attrs = at, cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, k, (KArgs)args...);
}
template <typename... KArgs, typename... Args>
static void launch(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    launch_with(1, k, grid, block, smem, st, args...);
}
template <typename... KArgs, typename... Args>
static void launch_plain(void (*k)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    launch_with(0, k, grid, block, smem, st, args...);
}
#endif

#endif
