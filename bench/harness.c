/* Times a qcc object: `cc -O2 -DQCC_HEADER='"m.h"' -DQCC_PREFIX=m harness.c m.o`.
 * Runs the model on a fixed pseudo-random input (values in [0, 1)), warms up, then
 * prints `median_us min_us calls` of single calls over about `seconds` (argv[1]). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include QCC_HEADER

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
    size_t ss = (SYM(scratch_size)() + 63) / 64 * 64;
    void *scratch = aligned_alloc(64, ss ? ss : 64);
    for (int i = 0; i < 5; i++)
        if (SYM(run)(ins, outs, scratch) != 0) { fprintf(stderr, "run failed\n"); return 1; }
    size_t cap = 1 << 20, n = 0;
    double *t = malloc(cap * sizeof(double));
    double start = now_us();
    while ((now_us() - start < seconds * 1e6 || n < 10) && n < cap) {
        double a = now_us();
        SYM(run)(ins, outs, scratch);
        t[n++] = now_us() - a;
    }
    qsort(t, n, sizeof(double), cmp);
    printf("%.1f %.1f %zu\n", t[n / 2], t[0], n);
    return 0;
}
