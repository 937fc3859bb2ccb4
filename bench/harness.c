/* Times a qcc object: `cc -O2 -DQCC_HEADER='"m.h"' -DQCC_PREFIX=m -Iruntime/c harness.c
 * m.o runtime/c/qcc_runtime.c -lpthread`.
 * Runs the model on a fixed pseudo-random input (values in [0, 1)), warms up, then
 * prints `median_us min_us calls` of single calls over about `seconds` (argv[1]), with
 * argv[2] threads (default 1: NAME_run; more: NAME_run_ctx on a qcc_runtime pool). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include QCC_HEADER
#include "qcc_runtime.h"

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define SYM(s) CAT(QCC_PREFIX, s)

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    size_t threads = argc > 2 ? (size_t)atoi(argv[2]) : 1;
    const float *ins[16];
    float *outs[16];
    unsigned long long s = 0x2545F4914F6CDD1DULL;
    for (size_t i = 0; i < SYM(NUM_INPUTS); i++) {
        size_t n = SYM(input_size)(i);
        float *p = malloc(n * sizeof(float));
        for (size_t j = 0; j < n; j++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            p[j] = (float)(s >> 40) / (float)(1 << 24);
        }
        ins[i] = p;
    }
    for (size_t i = 0; i < SYM(NUM_OUTPUTS); i++) outs[i] = malloc(SYM(output_size)(i) * sizeof(float));
    size_t need = threads > 1 ? SYM(scratch_size_threads)(threads) : SYM(scratch_size)();
    size_t ss = (need + 63) / 64 * 64;
    void *scratch = aligned_alloc(64, ss ? ss : 64);
    qcc_pool *pool = threads > 1 ? qcc_pool_new(threads) : NULL;
    qcc_ctx ctx = qcc_pool_ctx(pool, need);
#define RUN() (pool ? SYM(run_ctx)(&ctx, ins, outs, scratch) : SYM(run)(ins, outs, scratch))
    for (int i = 0; i < 5; i++)
        if (RUN() != 0) { fprintf(stderr, "run failed\n"); return 1; }
    size_t cap = 1 << 20, n = 0;
    double *t = malloc(cap * sizeof(double));
    double start = now_us();
    while ((now_us() - start < seconds * 1e6 || n < 10) && n < cap) {
        double a = now_us();
        RUN();
        t[n++] = now_us() - a;
    }
    qsort(t, n, sizeof(double), cmp);
    printf("%.1f %.1f %zu\n", t[n / 2], t[0], n);
    qcc_pool_free(pool);
    return 0;
}
