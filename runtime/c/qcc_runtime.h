/* qcc_runtime.h: the optional runtime of qcc objects (issue 15): a thread pool that
 * provides the parallel_for callback of NAME_run_ctx, and the qcc_ctx context.
 *
 *     qcc_pool *pool = qcc_pool_new(4);                 // the caller + 3 workers
 *     size_t bytes = NAME_scratch_size_threads(qcc_pool_threads(pool));
 *     void *scratch = aligned_alloc(64, (bytes + 63) / 64 * 64);
 *     qcc_ctx ctx = qcc_pool_ctx(pool, bytes);
 *     int rc = NAME_run_ctx(&ctx, inputs, outputs, scratch);
 *     ...
 *     qcc_pool_free(pool);
 *
 * Build: cc -O2 -c qcc_runtime.c && ar rcs libqcc_runtime.a qcc_runtime.o (or `make` in
 * runtime/c); link with -lpthread. A pool runs one job at a time: a second thread
 * calling parallel_for on a pool that is busy runs its tasks itself, so one pool may
 * serve several threads (each with its own scratch) without deadlock. */
#ifndef QCC_RUNTIME_H
#define QCC_RUNTIME_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef QCC_CTX_DEFINED
#define QCC_CTX_DEFINED
/* The context of NAME_run_ctx (qcc object ABI v1, threaded entry). parallel_for must
   call task(arg, i) once for every i < n, on any threads, and return when all calls
   have returned; qcc_runtime.h has a pool that provides it. */
typedef struct qcc_ctx {
    void *pool;
    void (*parallel_for)(void *pool, size_t n, void (*task)(void *arg, size_t i), void *arg);
    size_t threads;       /* threads that may run tasks at once (at least 1) */
    size_t scratch_bytes; /* bytes at the scratch pointer */
} qcc_ctx;
#endif

typedef struct qcc_pool qcc_pool;

/* A pool running jobs on `threads` threads: the caller of parallel_for and threads - 1
   workers (0 counts as 1). NULL when memory or threads cannot be had. */
qcc_pool *qcc_pool_new(size_t threads);

/* Stops and joins the workers and frees the pool (NULL: nothing). No job may run. */
void qcc_pool_free(qcc_pool *pool);

/* The threads a job runs on (the caller included). */
size_t qcc_pool_threads(const qcc_pool *pool);

/* Runs task(arg, i) for every i < n on the pool's threads; returns when all are done.
   `pool` is a qcc_pool (void * to fit qcc_ctx). */
void qcc_pool_parallel_for(void *pool, size_t n, void (*task)(void *arg, size_t i), void *arg);

/* The context for NAME_run_ctx with this pool and `scratch_bytes` of scratch. */
qcc_ctx qcc_pool_ctx(qcc_pool *pool, size_t scratch_bytes);

#ifdef __cplusplus
}
#endif

#endif /* QCC_RUNTIME_H */
