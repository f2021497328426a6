/* pool.c -- a fixed thread pool for the kernels.
 *
 * Threads are created once (kern_pool_new) and live until kern_pool_free.
 * A run publishes (fn, ctx), bumps a generation counter, runs fn as
 * thread 0 on the caller, then waits until every worker has decremented
 * `pending`. Nothing is allocated per run.
 *
 * Waking: a forward pass issues hundreds of runs per token, a few
 * microseconds apart, so workers first spin on the generation (with the
 * pause hint) and only then sleep on a futex. The caller issues the wake
 * syscall only when some worker declared itself asleep; the same scheme
 * guards the caller's wait for completion. Both use the Dekker pattern
 * with sequentially consistent atomics: the sleeper increments the
 * sleepers count then futex-waits on the value it saw (the kernel
 * re-checks it), the waker changes the value then reads the count, so
 * either the sleeper sees the change or the waker sees the sleeper.
 *
 * The spin is bounded (about 50-100 us) so that idle workers do not eat
 * the cores of a machine shared with other work.
 */
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kern/kern_impl.h"

#define SPIN_ITERS 20000

struct kern_pool {
    int n;
    pthread_t *th;
    kern_task_fn fn;
    void *ctx;
    _Atomic uint32_t gen;      /* bumped once per run (and at shutdown) */
    _Atomic uint32_t pending;  /* workers still running the current task */
    _Atomic int sleepers;      /* workers blocked in futex on gen */
    _Atomic int waiter;        /* caller blocked in futex on pending */
    _Atomic int quit;
};

typedef struct {
    kern_pool *p;
    int ith;
} worker_arg;

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static void *worker(void *arg) {
    worker_arg *wa = arg;
    kern_pool *p = wa->p;
    const int ith = wa->ith;
    free(wa);
    uint32_t seen = 0; /* gen at creation: a run may come before this thread starts */
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            atomic_fetch_add(&p->sleepers, 1);
            futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
        }
        seen = g;
        if (atomic_load(&p->quit)) break;
        p->fn(p->ctx, ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->waiter)) futex_wake(&p->pending, 1);
    }
    return NULL;
}

kern_pool *kern_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    kern_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    p->th = calloc((size_t)n_threads, sizeof *p->th);
    if (!p->th) {
        free(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || pthread_create(&p->th[i], NULL, worker, (wa->p = p, wa->ith = i, wa)) != 0) {
            free(wa);
            p->n = i; /* shut down the ones that started */
            kern_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void kern_pool_free(kern_pool *p) {
    if (!p) return;
    atomic_store(&p->quit, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen, INT_MAX);
    for (int i = 1; i < p->n; i++) pthread_join(p->th[i], NULL);
    free(p->th);
    free(p);
}

int kern_pool_threads(const kern_pool *p) { return p ? p->n : 1; }

void kern_pool_run(kern_pool *p, kern_task_fn fn, void *ctx) {
    if (!p || p->n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, (uint32_t)(p->n - 1));
    atomic_fetch_add(&p->gen, 1); /* seq_cst: publishes fn/ctx/pending */
    if (atomic_load(&p->sleepers) > 0) futex_wake(&p->gen, INT_MAX);
    fn(ctx, 0, p->n);
    int spins = 0;
    uint32_t left;
    while ((left = atomic_load(&p->pending)) != 0) {
        if (++spins < SPIN_ITERS) {
            cpu_relax();
            continue;
        }
        atomic_store(&p->waiter, 1);
        left = atomic_load(&p->pending);
        if (left) futex_wait(&p->pending, left);
        atomic_store(&p->waiter, 0);
    }
}
