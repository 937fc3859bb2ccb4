/* Classifies 8x8 digit images with a model compiled by qcc, on several threads: the
 * threaded entry digits_run_ctx with the thread pool of the optional C runtime
 * (runtime/c/qcc_runtime.h, libqcc_runtime.a).
 *
 *   qcc compile ../../tests/models/digits_cnn_folded.onnx --name digits -o digits.o
 *   make -C ../../runtime/c OUT=$PWD        # libqcc_runtime.a
 *   cc -O2 -std=c11 -Wall -I../../runtime/c threads.c digits.o libqcc_runtime.a \
 *      -lpthread -o digits_threads
 *   ./digits_threads images.npy [THREADS]   (default 2)
 *
 * Prints what main.c prints (the outputs are bit-identical to digits_run's). The
 * layers big enough to be worth it are split into tasks at compile time (the report's
 * "tasks"); the digits models are small, so most of theirs run inline. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits.h"
#include "npy.h"
#include "qcc_runtime.h"

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s IMAGES.npy|IMAGES.f32 [THREADS]\n", argv[0]);
        return 2;
    }
    size_t threads = argc == 3 ? (size_t)strtoul(argv[2], NULL, 10) : 2;
    if (threads == 0) threads = 1;
    size_t count = 0;
    void *block = NULL;
    const float *x = read_floats(argv[1], &count, &block);
    if (!x) return 1;
    size_t in_n = digits_input_size(0), out_n = digits_output_size(0);
    if (count == 0 || count % in_n != 0) {
        fprintf(stderr, "error: %s holds %zu floats, not a multiple of %zu (one image)\n",
                argv[1], count, in_n);
        free(block);
        return 1;
    }
    qcc_pool *pool = qcc_pool_new(threads);
    if (!pool) {
        fprintf(stderr, "error: cannot start %zu threads\n", threads);
        free(block);
        return 1;
    }
    /* Scratch for this many threads, aligned to 64 (a multiple of 64 for aligned_alloc). */
    size_t need = digits_scratch_size_threads(qcc_pool_threads(pool));
    void *scratch = aligned_alloc(64, need ? (need + 63) / 64 * 64 : 64);
    float *y = malloc(out_n * sizeof(float));
    qcc_ctx ctx = qcc_pool_ctx(pool, need);
    int rc = 0;
    for (size_t k = 0; scratch && y && k < count / in_n; k++) {
        const float *ins[digits_NUM_INPUTS] = {x + k * in_n};
        float *outs[digits_NUM_OUTPUTS] = {y};
        if (digits_run_ctx(&ctx, ins, outs, scratch) != 0) {
            fprintf(stderr, "error: digits_run_ctx refused its arguments\n");
            rc = 1;
            break;
        }
        size_t best = 0;
        for (size_t i = 1; i < out_n; i++)
            if (y[i] > y[best]) best = i;
        printf("%zu", best);
        for (size_t i = 0; i < out_n; i++) printf(" %.9g", y[i]);
        printf("\n");
    }
    if (!scratch || !y) rc = 1;
    free(y);
    free(scratch);
    qcc_pool_free(pool);
    free(block);
    return rc;
}
