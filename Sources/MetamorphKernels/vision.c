/* Bidirectional attention for vision encoders as matrix products: for each head and block of
 * queries, S = scale * Q K^T (sgemm), row softmax in float32, O = P V (sgemm). Same contract
 * and result (to float rounding) as mmk_attention_full, which does it one query row at a time
 * with dot products; with hundreds of keys (SigLIP: 729) the GEMM form is several times faster.
 * OpenBLAS runs single-threaded inside our OpenMP threads, as in matmul.c. */
#include <math.h>
#include <stdlib.h>
#include <cblas.h>
#include "mmk_internal.h"

#define VA_QBLOCK 64

static void softmax_rows(float *s, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++) {
        float *p = s + r * n;
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; j++) if (p[j] > mx) mx = p[j];
        for (int64_t j = 0; j < n; j++) p[j] -= mx;
        float sum = mmk_exp_inplace_sum(p, n);
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < n; j++) p[j] *= inv;
    }
}

void mmk_attention_full_gemm(float *out, const float *q, const float *k, const float *v,
                             int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                             int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale, int nthreads) {
    if (n_q <= 0 || n_heads <= 0 || head_dim <= 0) return;
    if (n_kv <= 0) {
        for (int64_t i = 0; i < n_q; i++)
            for (int h = 0; h < n_heads; h++) memset(out + i * out_stride + (int64_t)h * head_dim, 0, sizeof(float) * head_dim);
        return;
    }
    int64_t nblk = (n_q + VA_QBLOCK - 1) / VA_QBLOCK;
    int64_t tasks = nblk * n_heads;
    int nt = mmk_nt(nthreads);
    if (nt > tasks) nt = (int)tasks;
    mmk_blas_set_threads(1);
    int failed = 0;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(|: failed)
    {
        float *s = malloc(sizeof(float) * (size_t)VA_QBLOCK * (size_t)n_kv);
        if (!s) failed = 1;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            if (!s) continue;
            int h = (int)(t % n_heads);
            int64_t i0 = (t / n_heads) * VA_QBLOCK;
            int64_t m = n_q - i0 < VA_QBLOCK ? n_q - i0 : VA_QBLOCK;
            const float *qb = q + i0 * q_stride + (int64_t)h * head_dim;
            const float *kb = k + (int64_t)h * head_dim, *vb = v + (int64_t)h * head_dim;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n_kv, head_dim, scale, qb, (int)q_stride,
                        kb, (int)kv_stride, 0.0f, s, (int)n_kv);
            softmax_rows(s, m, n_kv);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, head_dim, (int)n_kv, 1.0f, s, (int)n_kv,
                        vb, (int)kv_stride, 0.0f, out + i0 * out_stride + (int64_t)h * head_dim, (int)out_stride);
        }
        free(s);
    }
    if (failed)  /* no scratch: the row-at-a-time kernel */
        mmk_attention_full(out, q, k, v, n_q, n_kv, n_heads, head_dim, q_stride, kv_stride, out_stride, scale, nthreads);
}
