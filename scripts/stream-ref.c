/* stream-ref.c: a STREAM-style C reference for the CPU bandwidth suite, to check that
 * membound's Rust kernels reach what plain C with OpenMP reaches on the same machine.
 * Build and run: scripts/stream-ref.sh [MiB per array] [repetitions]
 * Reports the best of the repetitions in decimal GB/s with membound's byte convention
 * (read 1, write 1, copy 2, triad 3 arrays; write-allocate traffic not counted). */
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>

static double now(void) { return omp_get_wtime(); }

int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    int reps = argc > 2 ? atoi(argv[2]) : 20;
    size_t n = mib * 1024 * 1024 / sizeof(float);
    float *a = aligned_alloc(64, n * sizeof(float));
    float *b = aligned_alloc(64, n * sizeof(float));
    float *c = aligned_alloc(64, n * sizeof(float));
    if (!a || !b || !c) { fprintf(stderr, "cannot allocate 3 x %zu MiB\n", mib); return 2; }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { a[i] = (float)(i % 3) - 1.0f; b[i] = 2.0f; c[i] = 0.5f; }
    double best[4] = {1e30, 1e30, 1e30, 1e30};
    volatile float sink = 0;
    for (int r = 0; r < reps; r++) {
        double t = now();
        float sum = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : sum)
        for (size_t i = 0; i < n; i++) sum += a[i];
        sink += sum;
        t = now() - t; if (t < best[0]) best[0] = t;
        t = now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) b[i] = 3.0f;
        t = now() - t; if (t < best[1]) best[1] = t;
        t = now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) b[i] = a[i];
        t = now() - t; if (t < best[2]) best[2] = t;
        t = now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) b[i] = a[i] + 3.0f * c[i];
        t = now() - t; if (t < best[3]) best[3] = t;
    }
    const char *names[4] = {"read", "write", "copy", "triad"};
    const double arrays[4] = {1, 1, 2, 3};
    printf("stream-ref: %d threads, %zu MiB per array, best of %d (sum %g)\n", omp_get_max_threads(), mib, reps, (double)sink);
    for (int k = 0; k < 4; k++)
        printf("%-6s %8.2f GB/s\n", names[k], arrays[k] * n * sizeof(float) / best[k] / 1e9);
    free(a); free(b); free(c);
    return 0;
}
