/* npy.h: reading float32 images for the C examples (main.c, threads.c). */
#ifndef QCC_EXAMPLE_NPY_H
#define QCC_EXAMPLE_NPY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads the whole file; for an .npy (format 1.0, 2.0 or 3.0) only float32 little-endian
 * C-ordered data is accepted, and *data points past the header. */
static float *read_floats(const char *path, size_t *count, void **block) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: cannot open %s\n", path);
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return NULL;
    }
    long len = ftell(f);
    rewind(f);
    unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "error: cannot read %s\n", path);
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    size_t off = 0;
    if (len >= 10 && memcmp(buf, "\x93NUMPY", 6) == 0) {
        size_t hlen, start;
        if (buf[6] == 1) {
            hlen = buf[8] | (size_t)buf[9] << 8;
            start = 10;
        } else {
            if (len < 12) goto bad;
            hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
            start = 12;
        }
        if (start + hlen > (size_t)len) goto bad;
        char *hdr = malloc(hlen + 1);
        if (!hdr) goto bad;
        memcpy(hdr, buf + start, hlen);
        hdr[hlen] = 0;
        int ok = strstr(hdr, "'descr': '<f4'") && strstr(hdr, "'fortran_order': False");
        free(hdr);
        if (!ok) {
            fprintf(stderr, "error: %s: need a float32 (<f4), C-ordered array\n", path);
            free(buf);
            return NULL;
        }
        off = start + hlen;
    }
    *count = ((size_t)len - off) / sizeof(float);
    *block = buf;
    /* The data offset of an .npy is a multiple of 16 (64 since numpy 2), and malloc's
     * alignment suffices for float. */
    return (float *)(void *)(buf + off);
bad:
    fprintf(stderr, "error: %s: malformed .npy header\n", path);
    free(buf);
    return NULL;
}

#endif /* QCC_EXAMPLE_NPY_H */
