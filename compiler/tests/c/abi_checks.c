/* Checks the argument checks of a qcc object (ABI v1), compiled with --name m.
 *
 * Bad arguments (NULL arrays, NULL tensor pointers, NULL or misaligned scratch) must
 * make m_run return nonzero without touching memory; out-of-range queries answer 0 or
 * NULL; a good call returns 0, writes finite outputs, and gives the same bytes when
 * repeated with scratch full of garbage. Every buffer has exactly the size the header
 * asks for, so that valgrind or AddressSanitizer sees any access beyond it.
 *
 * Prints "ok" and exits 0 when every check holds; otherwise lists the failures. */
#define _POSIX_C_SOURCE 200112L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "m.h"

#ifndef QCC_FILL
#define QCC_FILL 0xFF /* every float a NaN */
#endif

static int failures = 0;

#define CHECK(cond, ...)                         \
    do {                                         \
        if (!(cond)) {                           \
            fprintf(stderr, "FAIL: " __VA_ARGS__); \
            fputc('\n', stderr);                 \
            failures++;                          \
        }                                        \
    } while (0)

static void *exact_alloc(size_t bytes) {
    void *p = NULL;
    /* posix_memalign gives 64-byte alignment without rounding the size up. */
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0) {
        fprintf(stderr, "out of memory\n");
        exit(3);
    }
    return p;
}

int main(void) {
    const float *ins[m_NUM_INPUTS + 1];
    float *outs[m_NUM_OUTPUTS + 1];
    float *out2[m_NUM_OUTPUTS + 1];
    for (size_t i = 0; i < m_NUM_INPUTS; i++) {
        size_t n = m_input_size(i);
        size_t rank = m_input_rank(i);
        const int64_t *dims = m_input_dims(i);
        CHECK(n > 0 && dims != NULL, "input %zu: size %zu", i, n);
        size_t prod = 1;
        for (size_t d = 0; d < rank; d++) prod *= (size_t)dims[d];
        CHECK(prod == n, "input %zu: dims give %zu elements, size %zu", i, prod, n);
#ifdef QCC_SHORT_INPUT
        /* The negative control of the sanitizer tests: one float too few. */
        float *x = exact_alloc((n - 1) * sizeof(float));
        n -= 1;
#else
        float *x = exact_alloc(n * sizeof(float));
#endif
        for (size_t k = 0; k < n; k++) x[k] = (float)((k * 7919u) % 255u) / 255.0f;
        ins[i] = x;
    }
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++) {
        size_t n = m_output_size(j);
        CHECK(n > 0 && m_output_dims(j) != NULL, "output %zu: size %zu", j, n);
        outs[j] = exact_alloc(n * sizeof(float));
        out2[j] = exact_alloc(n * sizeof(float));
        memset(outs[j], 0, n * sizeof(float));
    }
    CHECK(m_input_size(m_NUM_INPUTS) == 0, "input_size out of range");
    CHECK(m_output_size(m_NUM_OUTPUTS) == 0, "output_size out of range");
    CHECK(m_input_dims(m_NUM_INPUTS) == NULL, "input_dims out of range");
    CHECK(m_output_dims(m_NUM_OUTPUTS) == NULL, "output_dims out of range");
    CHECK(m_input_rank((size_t)-1) == 0, "input_rank out of range");
    CHECK(m_output_rank((size_t)-1) == 0, "output_rank out of range");

    size_t ss = m_scratch_size();
    unsigned char *scratch = exact_alloc(ss);
    /* Room for misaligned views of a buffer of the same size. */
    unsigned char *block = exact_alloc(ss + 64);

    /* Bad arguments: nonzero, and the outputs stay untouched. */
    CHECK(m_run(NULL, outs, scratch) != 0 || m_NUM_INPUTS == 0, "NULL inputs accepted");
    CHECK(m_run(ins, NULL, scratch) != 0, "NULL outputs accepted");
    if (ss > 0) {
        CHECK(m_run(ins, outs, NULL) != 0, "NULL scratch accepted");
        for (size_t off = 1; off < 64; off *= 2)
            CHECK(m_run(ins, outs, block + off) != 0, "scratch misaligned by %zu accepted", off);
    }
    for (size_t i = 0; i < m_NUM_INPUTS; i++) {
        const float *keep = ins[i];
        ins[i] = NULL;
        CHECK(m_run(ins, outs, scratch) != 0, "NULL input %zu accepted", i);
        ins[i] = keep;
    }
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++) {
        float *keep = outs[j];
        outs[j] = NULL;
        CHECK(m_run(ins, outs, scratch) != 0, "NULL output %zu accepted", j);
        outs[j] = keep;
    }
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++)
        for (size_t k = 0; k < m_output_size(j); k++)
            CHECK(outs[j][k] == 0.0f, "output %zu written by a refused call", j);

    /* A good call on scratch as it came from the allocator (valgrind sees any read of a
     * byte the object did not write first), then on scratch full of garbage. */
    CHECK(m_run(ins, outs, scratch) == 0, "a good call refused");
    memset(scratch, QCC_FILL, ss);
    CHECK(m_run(ins, out2, scratch) == 0, "a good call refused (second)");
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++) {
        size_t n = m_output_size(j);
        for (size_t k = 0; k < n; k++)
            CHECK(outs[j][k] == outs[j][k], "output %zu[%zu] is NaN", j, k);
        CHECK(memcmp(outs[j], out2[j], n * sizeof(float)) == 0,
              "output %zu depends on what scratch held", j);
    }

    for (size_t i = 0; i < m_NUM_INPUTS; i++) free((void *)ins[i]);
    for (size_t j = 0; j < m_NUM_OUTPUTS; j++) {
        free(outs[j]);
        free(out2[j]);
    }
    free(scratch);
    free(block);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
