/* Y = X W^T (+ bias): the prefill / batched path. Here the work is compute bound, so it goes to
 * OpenBLAS sgemm; half-precision weights are widened to float a block of rows at a time. */
#include <stdlib.h>
#include <cblas.h>
#include "mmk_internal.h"

/* cblas.h of the pthread OpenBLAS declares this, other cblas.h flavours may not. */
void openblas_set_num_threads(int num_threads);

/* Up to this many rows of X, matvec (which streams W once per row) beats converting W for sgemm. */
#define MMK_MATMUL_MATVEC_MAX_M 4

void mmk_blas_set_threads(int nthreads) { openblas_set_num_threads(mmk_nt(nthreads)); }

void mmk_matmul_ref(int dtype, const void *W, const float *bias, const float *X, float *Y,
                    int64_t m, int64_t n, int64_t k) {
    size_t es = mmk_dtype_size(dtype);
    if (es == 0) return;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            const char *w = (const char *)W + (size_t)j * (size_t)k * es;
            double acc = 0.0;
            for (int64_t p = 0; p < k; p++) acc += (double)X[i * k + p] * (double)mmk_load1(dtype, w, p);
            Y[i * n + j] = (float)acc + (bias ? bias[j] : 0.0f);
        }
}

/* Rows per converted block: about 8 MB of float scratch, but at least 128 rows so sgemm still
 * gets a wide enough panel, and at most 512 (no gain beyond). Multiple of 16 for the packers. */
static int64_t block_rows(int64_t n, int64_t k) {
    int64_t nb = ((int64_t)2 << 20) / (k > 0 ? k : 1);
    if (nb < 128) nb = 128;
    if (nb > 512) nb = 512;
    nb &= ~(int64_t)15;
    return nb < n ? nb : n;
}

/* One thread's share: rows [i0, i1) of X against rows [r0, r1) of W, single-threaded sgemm.
 * Returns 0 if the scratch block could not be allocated (nothing written then). */
static int matmul_part(int dtype, const void *W, const float *bias, const float *X, float *Y, int64_t n, int64_t k,
                       int64_t i0, int64_t i1, int64_t r0, int64_t r1) {
    size_t es = mmk_dtype_size(dtype);
    int64_t m = i1 - i0;
    if (m <= 0 || r1 <= r0) return 1;
    int64_t nb = dtype == MMK_F32 ? 0 : block_rows(r1 - r0, k);
    float *scratch = NULL;
    if (dtype != MMK_F32 && !(scratch = malloc((size_t)nb * (size_t)k * sizeof(float)))) return 0;
    /* With a bias, Y starts as the bias and sgemm accumulates (beta = 1): OpenBLAS otherwise
     * zeroes C in a separate pass for beta = 0 and the bias is added in a third (both were ~3%
     * of a UNet evaluation). */
    float beta = 0.0f;
    if (bias) {
        for (int64_t i = i0; i < i1; i++) memcpy(Y + i * n + r0, bias + r0, (size_t)(r1 - r0) * sizeof(float));
        beta = 1.0f;
    }
    if (dtype == MMK_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)(r1 - r0), (int)k, 1.0f, X + i0 * k,
                    (int)k, (const float *)W + r0 * k, (int)k, beta, Y + i0 * n + r0, (int)n);
        return 1;
    }
    for (int64_t j0 = r0; j0 < r1; j0 += nb) {
        int64_t rows = r1 - j0 < nb ? r1 - j0 : nb;
        mmk_convert_to_f32(dtype, (const char *)W + (size_t)j0 * (size_t)k * es, scratch, rows * k);
        /* this block fills columns j0..j0+rows of Y; ldc = n keeps Y in its final layout */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)rows, (int)k, 1.0f, X + i0 * k, (int)k,
                    scratch, (int)k, beta, Y + i0 * n + j0, (int)n);
    }
    free(scratch);
    return 1;
}

void mmk_matmul(int dtype, const void *W, const float *bias, const float *X, float *Y,
                int64_t m, int64_t n, int64_t k, int nthreads) {
    size_t es = mmk_dtype_size(dtype);
    if (es == 0 || m <= 0 || n <= 0) return;
    int nt = mmk_nt(nthreads);
    if (m <= MMK_MATMUL_MATVEC_MAX_M || k <= 0) {
        for (int64_t i = 0; i < m; i++) mmk_matvec(dtype, W, bias, X + i * k, Y + i * n, n, k, nt);
        return;
    }
#ifdef MMK_MATMUL_BLAS_THREADS
    /* Alternative kept for measurements on a quiet machine: one sgemm call over the whole
     * problem, threaded by OpenBLAS's own pool (conversion then runs on the calling thread). */
    mmk_blas_set_threads(nt);
    int ok = matmul_part(dtype, W, bias, X, Y, n, k, 0, m, 0, n);
    if (!ok) for (int64_t i = 0; i < m; i++) mmk_matvec(dtype, W, bias, X + i * k, Y + i * n, n, k, nt);
    return;
#endif
    /* OpenBLAS runs single-threaded inside each of our OpenMP threads: one thread pool, not two.
     * libomp's workers spin ~200 ms after every parallel region (and OpenBLAS's spin after every
     * call), so alternating the two pools on 2 cores makes each steal the other's cores.
     * Split W's rows (each thread converts only its own rows into its own scratch); split X's
     * rows instead when W is too thin to share. OpenBLAS (pthread build, >= 0.3.7) is safe to
     * call concurrently with its thread count at 1. */
    mmk_blas_set_threads(1);
    int split_w = n >= 64 * (int64_t)nt;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        int64_t t = omp_get_thread_num(), c = omp_get_num_threads();
#else
        int64_t t = 0, c = 1;
#endif
        int64_t i0 = 0, i1 = m, r0 = 0, r1 = n;
        if (split_w) { r0 = n * t / c; r1 = n * (t + 1) / c; }
        else { i0 = m * t / c; i1 = m * (t + 1) / c; }
        if (!matmul_part(dtype, W, bias, X, Y, n, k, i0, i1, r0, r1)) {
            /* no scratch: stream this part of W once per row of X */
            for (int64_t i = i0; i < i1; i++)
                mmk_matvec(dtype, (const char *)W + (size_t)r0 * (size_t)k * es, bias ? bias + r0 : NULL, X + i * k,
                           Y + i * n + r0, r1 - r0, k, 1);
        }
    }
}
