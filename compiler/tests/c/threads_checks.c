/* Checks the threaded entry of a qcc object compiled with --name m (issue 15), with the
 * pool of runtime/c/qcc_runtime.h.
 *
 * m_run_ctx with pools of 1, 2, 3 and 7 threads must give m_run's output bytes, twice
 * (the second time on scratch full of garbage); bad arguments (NULL context, zero
 * threads, no parallel_for with several threads, scratch declared too small, NULL or
 * misaligned scratch, NULL arrays and tensors) must return 1 and leave the outputs
 * untouched. Every buffer has exactly the size the header asks for, so that valgrind
 * sees any access beyond it.
 *
 * Prints "ok" and exits 0 when every check holds; otherwise lists the failures. */
#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m.h"
#include "qcc_runtime.h"

static int failures = 0;

#define CHECK(cond, ...)                           \
    do {                                           \
        if (!(cond)) {                             \
            fprintf(stderr, "FAIL: " __VA_ARGS__); \
            fputc('\n', stderr);                   \
            failures++;                            \
        }                                          \
    } while (0)

static void *exact_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) {
        fprintf(stderr, "out of memory\n");
        exit(3);
    }
    return p;
}

static int same_outputs(float *const *a, float *const *b) {
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++)
        if (memcmp(a[j], b[j], m_output_size(j) * sizeof(float)) != 0) return 0;
    return 1;
}

static void zero_outputs(float *const *o) {
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++) memset(o[j], 0, m_output_size(j) * sizeof(float));
}

static int untouched(float *const *o) {
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++)
        for (size_t k = 0; k < m_output_size(j); k++)
            if (o[j][k] != 0.0f) return 0;
    return 1;
}

int main(void) {
    const float *ins[m_NUM_INPUTS + 1];
    float *want[m_NUM_OUTPUTS + 1];
    float *got[m_NUM_OUTPUTS + 1];
    for (size_t i = 0; i < m_NUM_INPUTS; i++) {
        size_t n = m_input_size(i);
        float *x = exact_alloc(n * sizeof(float));
        for (size_t k = 0; k < n; k++) x[k] = (float)((k * 7919u) % 255u) / 255.0f;
        ins[i] = x;
    }
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++) {
        want[j] = exact_alloc(m_output_size(j) * sizeof(float));
        got[j] = exact_alloc(m_output_size(j) * sizeof(float));
    }
    size_t s1 = m_scratch_size();
    CHECK(m_scratch_size_threads(1) == s1, "scratch for 1 thread is not m_scratch_size()");
    unsigned char *scratch = exact_alloc(s1);
    CHECK(m_run(ins, want, scratch) == 0, "m_run refused good arguments");
    free(scratch);

    static const size_t threads[] = {1, 2, 3, 7};
    for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
        size_t T = threads[t];
        qcc_pool *pool = qcc_pool_new(T);
        CHECK(pool != NULL && qcc_pool_threads(pool) == T, "qcc_pool_new(%zu)", T);
        if (!pool) continue;
        size_t ss = m_scratch_size_threads(T);
        CHECK(ss >= s1, "scratch for %zu threads below one thread's", T);
        scratch = exact_alloc(ss);
        qcc_ctx ctx = qcc_pool_ctx(pool, ss);
        for (int rep = 0; rep < 2; rep++) {
            zero_outputs(got);
            CHECK(m_run_ctx(&ctx, ins, got, scratch) == 0, "%zu threads: refused", T);
            CHECK(same_outputs(want, got), "%zu threads (call %d): outputs differ from m_run", T,
                  rep + 1);
            memset(scratch, 0xFF, ss);
        }
        qcc_pool_free(pool);
        free(scratch);
    }

    /* Bad arguments, with a pool of 2. */
    qcc_pool *pool = qcc_pool_new(2);
    size_t ss = m_scratch_size_threads(2);
    scratch = exact_alloc(ss);
    unsigned char *block = exact_alloc(ss + 64);
    qcc_ctx good = qcc_pool_ctx(pool, ss);
    qcc_ctx c;
    zero_outputs(got);
    CHECK(m_run_ctx(NULL, ins, got, scratch) == 1, "NULL ctx accepted");
    c = good;
    c.threads = 0;
    CHECK(m_run_ctx(&c, ins, got, scratch) == 1, "0 threads accepted");
    c = good;
    c.parallel_for = NULL;
    CHECK(m_run_ctx(&c, ins, got, scratch) == 1, "2 threads without parallel_for accepted");
    c = good;
    c.scratch_bytes = ss - 1;
    CHECK(m_run_ctx(&c, ins, got, scratch) == 1, "scratch_bytes too small accepted");
    c = good;
    c.threads = 1;
    c.scratch_bytes = s1 - 1;
    CHECK(s1 == 0 || m_run_ctx(&c, ins, got, scratch) == 1,
          "scratch_bytes too small for one thread accepted");
    CHECK(ss == 0 || m_run_ctx(&good, ins, got, NULL) == 1, "NULL scratch accepted");
    for (size_t off = 1; off < 64 && ss > 0; off *= 2)
        CHECK(m_run_ctx(&good, ins, got, block + off) == 1, "scratch misaligned by %zu accepted",
              off);
    CHECK(m_NUM_INPUTS == 0 || m_run_ctx(&good, NULL, got, scratch) == 1, "NULL inputs accepted");
    CHECK(m_run_ctx(&good, ins, NULL, scratch) == 1, "NULL outputs accepted");
    for (size_t i = 0; i < m_NUM_INPUTS; i++) {
        const float *keep = ins[i];
        ins[i] = NULL;
        CHECK(m_run_ctx(&good, ins, got, scratch) == 1, "NULL input %zu accepted", i);
        ins[i] = keep;
    }
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++) {
        float *keep = got[j];
        got[j] = NULL;
        CHECK(m_run_ctx(&good, ins, got, scratch) == 1, "NULL output %zu accepted", j);
        got[j] = keep;
    }
    CHECK(untouched(got), "a refused call wrote an output");
    /* One thread needs no parallel_for. */
    c = good;
    c.threads = 1;
    c.parallel_for = NULL;
    c.scratch_bytes = s1;
    CHECK(m_run_ctx(&c, ins, got, scratch) == 0 && same_outputs(want, got),
          "one thread without parallel_for");
    qcc_pool_free(pool);
    free(scratch);
    free(block);

    for (size_t i = 0; i < m_NUM_INPUTS; i++) free((void *)ins[i]);
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++) {
        free(want[j]);
        free(got[j]);
    }
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
