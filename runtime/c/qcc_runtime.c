/* The thread pool of qcc_runtime.h (C11 atomics, POSIX threads).
 *
 * The layers of a model run for tens of microseconds, so a fork/join must cost about a
 * microsecond: the job is published in one atomic word (epoch in the high 32 bits, the
 * task count in the next 16, the next index to claim in the low 16), which workers
 * spin on for a while after each job and claim indices from with a compare-and-swap
 * (a claim can only succeed for an index of the job whose count it read); after
 * QCC_SPIN_NS without a job a worker sleeps on a condition variable, and the caller
 * signals only when some worker sleeps. It is the algorithm of the Rust pool
 * (runtime/src/pool.rs). */
#define _POSIX_C_SOURCE 200809L
#include "qcc_runtime.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#ifndef QCC_SPIN_NS
#define QCC_SPIN_NS 300000 /* 0.3 ms */
#endif

#define MAX_N 0xffffu

typedef void (*task_fn)(void *arg, size_t i);

struct qcc_pool {
    _Atomic uint64_t claim;
    _Atomic size_t done;
    _Atomic(task_fn) task;
    _Atomic(void *) arg;
    _Atomic size_t sleepers;
    _Atomic int shutdown;
    _Atomic int busy;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    size_t threads;
    size_t started;
    pthread_t *workers;
};

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Claims and runs indices of the current job until none is left. `own`: the caller's
   task (workers read the job's fields once an index is left to claim). */
static void work(qcc_pool *p, task_fn own, void *own_arg) {
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
    uint64_t epoch = c >> 32;
    task_fn task = own;
    void *arg = own_arg;
    for (;;) {
        size_t n = (size_t)((c >> 16) & 0xffffu), i = (size_t)(c & 0xffffu);
        if ((c >> 32) != epoch || i >= n) return;
        task_fn t = task;
        void *a = arg;
        if (!t) {
            t = atomic_load_explicit(&p->task, memory_order_relaxed);
            a = atomic_load_explicit(&p->arg, memory_order_relaxed);
        }
        if (atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            /* The word was unchanged since before the fields were read: the job was
               running then, so they are its own. */
            task = t;
            arg = a;
            t(a, i);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
            c = atomic_load_explicit(&p->claim, memory_order_acquire);
        }
    }
}

static void *worker(void *vp) {
    qcc_pool *p = vp;
    uint64_t seen = 0;
    for (;;) {
        uint64_t start = now_ns();
        unsigned spins = 0;
        for (;;) {
            uint64_t e = atomic_load_explicit(&p->claim, memory_order_acquire) >> 32;
            if (atomic_load_explicit(&p->shutdown, memory_order_acquire)) return NULL;
            if (e != seen) {
                seen = e;
                break;
            }
            if (++spins % 256 != 0) {
                relax();
                continue;
            }
            if (now_ns() - start < QCC_SPIN_NS) {
                /* Let another thread of this CPU run (the caller, on a busy machine). */
                if (spins % 4096 == 0) sched_yield();
                continue;
            }
            pthread_mutex_lock(&p->lock);
            atomic_fetch_add(&p->sleepers, 1);
            e = atomic_load(&p->claim) >> 32;
            if (e == seen && !atomic_load(&p->shutdown)) pthread_cond_wait(&p->wake, &p->lock);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->lock);
            start = now_ns();
        }
        work(p, NULL, NULL);
    }
}

qcc_pool *qcc_pool_new(size_t threads) {
    if (threads == 0) threads = 1;
    qcc_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    atomic_init(&p->claim, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->task, NULL);
    atomic_init(&p->arg, NULL);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->shutdown, 0);
    atomic_init(&p->busy, 0);
    p->threads = threads;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
    }
    if (threads > 1) {
        p->workers = calloc(threads - 1, sizeof *p->workers);
        if (!p->workers) {
            qcc_pool_free(p);
            return NULL;
        }
        for (size_t k = 0; k + 1 < threads; k++) {
            if (pthread_create(&p->workers[k], NULL, worker, p) != 0) {
                qcc_pool_free(p);
                return NULL;
            }
            p->started++;
        }
    }
    return p;
}

void qcc_pool_free(qcc_pool *p) {
    if (!p) return;
    atomic_store(&p->shutdown, 1);
    pthread_mutex_lock(&p->lock);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (size_t k = 0; k < p->started; k++) pthread_join(p->workers[k], NULL);
    free(p->workers);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

size_t qcc_pool_threads(const qcc_pool *p) { return p ? p->threads : 1; }

void qcc_pool_parallel_for(void *vp, size_t n, void (*task)(void *arg, size_t i), void *arg) {
    qcc_pool *p = vp;
    int idle = 0;
    if (n == 0) return;
    /* No pool, no workers, one task, too many tasks for the claim word, or a job of
       another thread running: run here. */
    if (!p || p->threads < 2 || n == 1 || n > MAX_N ||
        !atomic_compare_exchange_strong(&p->busy, &idle, 1)) {
        for (size_t i = 0; i < n; i++) task(arg, i);
        return;
    }
    atomic_store_explicit(&p->task, task, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint64_t epoch = ((atomic_load_explicit(&p->claim, memory_order_relaxed) >> 32) + 1) & 0xffffffffu;
    atomic_store(&p->claim, epoch << 32 | (uint64_t)n << 16);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
    work(p, task, arg);
    unsigned spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < n) {
        /* A worker may have been descheduled with an index: yield now and then. */
        if (++spins % 4096 != 0)
            relax();
        else
            sched_yield();
    }
    atomic_store_explicit(&p->busy, 0, memory_order_release);
}

qcc_ctx qcc_pool_ctx(qcc_pool *p, size_t scratch_bytes) {
    qcc_ctx c;
    c.pool = p;
    c.parallel_for = qcc_pool_parallel_for;
    c.threads = qcc_pool_threads(p);
    c.scratch_bytes = scratch_bytes;
    return c;
}
