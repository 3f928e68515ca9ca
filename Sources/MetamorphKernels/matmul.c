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

static void add_bias(float *Y, const float *bias, int64_t m, int64_t n, int nt) {
    if (!bias) return;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && m * n >= MMK_PAR_MIN_WORK)
    for (int64_t i = 0; i < m; i++) {
        float *y = Y + i * n;
        for (int64_t j = 0; j < n; j++) y[j] += bias[j];
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

void mmk_matmul(int dtype, const void *W, const float *bias, const float *X, float *Y,
                int64_t m, int64_t n, int64_t k, int nthreads) {
    size_t es = mmk_dtype_size(dtype);
    if (es == 0 || m <= 0 || n <= 0) return;
    int nt = mmk_nt(nthreads);
    if (m <= MMK_MATMUL_MATVEC_MAX_M || k <= 0) {
        for (int64_t i = 0; i < m; i++) mmk_matvec(dtype, W, bias, X + i * k, Y + i * n, n, k, nt);
        return;
    }
    mmk_blas_set_threads(nt);
    if (dtype == MMK_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n, (int)k, 1.0f, X, (int)k,
                    (const float *)W, (int)k, 0.0f, Y, (int)n);
        add_bias(Y, bias, m, n, nt);
        return;
    }
    int64_t nb = block_rows(n, k);
    float *scratch = malloc((size_t)nb * (size_t)k * sizeof(float));
    if (!scratch) {
        /* No room for a block: stream W once per row of X instead; slower but correct. */
        for (int64_t i = 0; i < m; i++) mmk_matvec(dtype, W, bias, X + i * k, Y + i * n, n, k, nt);
        return;
    }
    for (int64_t j0 = 0; j0 < n; j0 += nb) {
        int64_t rows = n - j0 < nb ? n - j0 : nb;
        const char *src = (const char *)W + (size_t)j0 * (size_t)k * es;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int64_t r = 0; r < rows; r++)
            mmk_convert_to_f32(dtype, src + (size_t)r * (size_t)k * es, scratch + r * k, k);
        /* This block fills columns j0..j0+rows of Y; ldc = n keeps Y in its final layout. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)rows, (int)k, 1.0f, X, (int)k,
                    scratch, (int)k, 0.0f, Y + j0, (int)n);
    }
    free(scratch);
    add_bias(Y, bias, m, n, nt);
}
