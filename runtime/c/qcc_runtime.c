/* The thread pool of qcc_runtime.h (C11 atomics, POSIX threads).
 *
 * The layers of a model run for tens of microseconds, so a fork/join must cost about a
 * microsecond, and a task should run on the thread that ran the same task index last
 * time: the task's part of the scratch, and the rows of the tensors it writes, are then
 * still in that core's cache (when a task moves to the other core, every line it
 * touches is first fetched from there).
 *
 * The job is published in one atomic word: its epoch (high 32 bits), its task count n
 * (6 bits, at most MAX_N) and a bitmap of the indices taken (26 bits); task and
 * argument are written before the word. Thread `t` of `T` (the caller is 0) takes
 * indices t, t + T, ... first, then what is left from the end (a slow or descheduled
 * thread's). An index is taken by a compare-and-swap of the whole word, so it succeeds
 * only while that job is the published one: the task and argument read before it are
 * the job's own, and a late worker can never take an index of the next job. Workers
 * spin on the word for a while after each job (QCC_SPIN_NS), then sleep on a condition
 * variable (the caller signals only when some worker sleeps). More than MAX_N tasks run
 * as successive jobs of at most MAX_N. */
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

#define MAX_N 26u

typedef void (*task_fn)(void *arg, size_t i);

struct qcc_pool {
    _Atomic uint64_t word; /* epoch << 32 | n << 26 | taken bits */
    _Atomic(task_fn) task;
    _Atomic(void *) arg;
    _Atomic size_t done;
    _Atomic size_t sleepers;
    _Atomic int shutdown;
    _Atomic int busy;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    size_t threads;
    size_t started;
    pthread_t *workers;
    struct worker_arg *args;
};

struct worker_arg {
    qcc_pool *pool;
    size_t id;
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

/* Tries to take index i of the job of `epoch` and runs it. Returns 0 once that job is
   no longer the published one (nothing more to do), else 1. */
static int take(qcc_pool *p, uint64_t epoch, size_t i) {
    uint64_t bit = (uint64_t)1 << i;
    uint64_t w = atomic_load_explicit(&p->word, memory_order_acquire);
    for (;;) {
        if ((w >> 32) != epoch) return 0;
        if (w & bit) return 1;
        task_fn t = atomic_load_explicit(&p->task, memory_order_relaxed);
        void *a = atomic_load_explicit(&p->arg, memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&p->word, &w, w | bit, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            /* The word was unchanged since before task and argument were read: the job
               was the published one then, so they are its own. */
            t(a, i);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
            return 1;
        }
    }
}

/* Thread `id`'s share of the job of `epoch` (n tasks), then whatever is left. */
static void run_job(qcc_pool *p, uint64_t epoch, size_t n, size_t id) {
    size_t t = p->threads;
    for (size_t i = id; i < n; i += t)
        if (!take(p, epoch, i)) return;
    for (size_t i = n; i-- > 0;)
        if (!take(p, epoch, i)) return;
}

static void *worker(void *vp) {
    struct worker_arg *wa = vp;
    qcc_pool *p = wa->pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t start = now_ns();
        unsigned spins = 0;
        uint64_t w;
        for (;;) {
            w = atomic_load_explicit(&p->word, memory_order_acquire);
            if (atomic_load_explicit(&p->shutdown, memory_order_acquire)) return NULL;
            if ((w >> 32) != seen) break;
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
            if ((atomic_load(&p->word) >> 32) == seen && !atomic_load(&p->shutdown))
                pthread_cond_wait(&p->wake, &p->lock);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->lock);
            start = now_ns();
        }
        seen = w >> 32;
        run_job(p, seen, (size_t)((w >> 26) & 0x3f), wa->id);
    }
}

qcc_pool *qcc_pool_new(size_t threads) {
    if (threads == 0) threads = 1;
    qcc_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    atomic_init(&p->word, 0);
    atomic_init(&p->task, NULL);
    atomic_init(&p->arg, NULL);
    atomic_init(&p->done, 0);
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
        p->args = calloc(threads - 1, sizeof *p->args);
        if (!p->workers || !p->args) {
            qcc_pool_free(p);
            return NULL;
        }
        for (size_t k = 0; k + 1 < threads; k++) {
            p->args[k].pool = p;
            p->args[k].id = k + 1;
            if (pthread_create(&p->workers[k], NULL, worker, &p->args[k]) != 0) {
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
    free(p->args);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

size_t qcc_pool_threads(const qcc_pool *p) { return p ? p->threads : 1; }

/* Runs the job of tasks task(arg, i), i < n <= MAX_N, on the pool (held busy). */
static void run_on(qcc_pool *p, size_t n, task_fn task, void *arg) {
    atomic_store_explicit(&p->task, task, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint64_t epoch = ((atomic_load_explicit(&p->word, memory_order_relaxed) >> 32) + 1) & 0xffffffffu;
    atomic_store(&p->word, epoch << 32 | (uint64_t)n << 26);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }
    run_job(p, epoch, n, 0);
    unsigned spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < n) {
        /* A worker may have been descheduled with an index: yield now and then. */
        if (++spins % 4096 != 0)
            relax();
        else
            sched_yield();
    }
}

/* Indices base + i of a larger job. */
struct batch {
    task_fn task;
    void *arg;
    size_t base;
};

static void batch_task(void *vb, size_t i) {
    struct batch *b = vb;
    b->task(b->arg, b->base + i);
}

void qcc_pool_parallel_for(void *vp, size_t n, void (*task)(void *arg, size_t i), void *arg) {
    qcc_pool *p = vp;
    int idle = 0;
    if (n == 0) return;
    /* No pool, no workers, one task, or a job of another thread running: run here. */
    if (!p || p->threads < 2 || n == 1 || !atomic_compare_exchange_strong(&p->busy, &idle, 1)) {
        for (size_t i = 0; i < n; i++) task(arg, i);
        return;
    }
    if (n <= MAX_N) {
        run_on(p, n, task, arg);
    } else {
        struct batch b = {task, arg, 0};
        for (; b.base < n; b.base += MAX_N) {
            size_t k = n - b.base < MAX_N ? n - b.base : MAX_N;
            run_on(p, k, batch_task, &b);
        }
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
