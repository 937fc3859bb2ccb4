/* Classifies 8x8 digit images with a model compiled by qcc (object ABI v1).
 *
 *   qcc compile ../../tests/models/digits_cnn_folded.onnx --name digits -o digits.o
 *   cc -O2 -std=c11 -Wall main.c digits.o -o digits
 *   ./digits images.npy        (float32 .npy, any number of images; or raw float32)
 *
 * Prints one line per image: the predicted class, then the model's scores.
 * The object needs nothing but this file (and npy.h): no runtime library, no libm.
 * threads.c is the same program on several threads, with the optional runtime. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digits.h"
#include "npy.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s IMAGES.npy|IMAGES.f32\n", argv[0]);
        return 2;
    }
    size_t count = 0;
    void *block = NULL;
    const float *x = read_floats(argv[1], &count, &block);
    if (!x) return 1;
    size_t in_n = digits_input_size(0), out_n = digits_output_size(0);
    if (count == 0 || count % in_n != 0) {
        fprintf(stderr, "error: %s holds %zu floats, not a multiple of %zu (one image)\n",
                argv[1], count, in_n);
        return 1;
    }
    /* Scratch: digits_scratch_size() bytes aligned to 64 (aligned_alloc wants a
     * multiple of the alignment; the size may be 0). */
    size_t s = (digits_scratch_size() + 63) / 64 * 64;
    void *scratch = aligned_alloc(64, s ? s : 64);
    float *y = malloc(out_n * sizeof(float));
    if (!scratch || !y) return 1;
    for (size_t k = 0; k < count / in_n; k++) {
        const float *ins[digits_NUM_INPUTS] = {x + k * in_n};
        float *outs[digits_NUM_OUTPUTS] = {y};
        if (digits_run(ins, outs, scratch) != 0) {
            fprintf(stderr, "error: digits_run refused its arguments\n");
            return 1;
        }
        size_t best = 0;
        for (size_t i = 1; i < out_n; i++)
            if (y[i] > y[best]) best = i;
        printf("%zu", best);
        for (size_t i = 0; i < out_n; i++) printf(" %.9g", y[i]);
        printf("\n");
    }
    free(y);
    free(scratch);
    free(block);
    return 0;
}
