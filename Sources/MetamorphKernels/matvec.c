/* y = W x (+ bias): the decode hot path. At batch 1 every weight byte is touched once per token,
 * so the job is to stream W at memory bandwidth; arithmetic is almost free. */
#include <stdlib.h>
#include "mmk_internal.h"

/* Oracle: one row at a time, double accumulation so it is more accurate than the fast path. */
void mmk_matvec_ref(int dtype, const void *W, const float *bias, const float *x, float *y,
                    int64_t n, int64_t k) {
    size_t es = mmk_dtype_size(dtype);
    if (es == 0) return;
    for (int64_t r = 0; r < n; r++) {
        const char *row = (const char *)W + (size_t)r * (size_t)k * es;
        double acc = 0.0;
        for (int64_t p = 0; p < k; p++) acc += (double)mmk_load1(dtype, row, p) * (double)x[p];
        y[r] = (float)acc + (bias ? bias[r] : 0.0f);
    }
}

#ifdef __AVX2__
/* Software prefetch distance in bytes along each row (tuned on Zen: 1 KB beat 0, 512 and 2 KB). */
#ifndef MATVEC_PREFETCH
#define MATVEC_PREFETCH 1024
#endif

/* Four rows share every load of x, which halves the loads per FMA compared to one row at a time;
 * two accumulators per row (8 in flight) hide the FMA latency. */
static inline __attribute__((always_inline)) void dot_rows4(int dt, const void *W, size_t es, int64_t r,
                                                            int64_t k, const float *x, float out[4]) {
    const char *w0 = (const char *)W + (size_t)r * (size_t)k * es;
    const char *w1 = w0 + (size_t)k * es, *w2 = w1 + (size_t)k * es, *w3 = w2 + (size_t)k * es;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t p = 0;
    const int64_t row_bytes = k * (int64_t)es;
    for (; p + 16 <= k; p += 16) {
        /* Past the end of its row, each stream prefetches the same offset of its row in the next
         * block (4 rows further on), so the next block starts warm instead of waiting for the
         * hardware prefetcher to ramp up again on new pages. Prefetches never fault. */
        int64_t ahead = p * (int64_t)es + MATVEC_PREFETCH;
        if (ahead >= row_bytes) ahead += 3 * row_bytes;
        _mm_prefetch(w0 + ahead, _MM_HINT_T0);
        _mm_prefetch(w1 + ahead, _MM_HINT_T0);
        _mm_prefetch(w2 + ahead, _MM_HINT_T0);
        _mm_prefetch(w3 + ahead, _MM_HINT_T0);
        __m256 x0 = _mm256_loadu_ps(x + p), x1 = _mm256_loadu_ps(x + p + 8);
        a0 = _mm256_fmadd_ps(mmk_load8(dt, w0, p), x0, a0);
        a1 = _mm256_fmadd_ps(mmk_load8(dt, w1, p), x0, a1);
        a2 = _mm256_fmadd_ps(mmk_load8(dt, w2, p), x0, a2);
        a3 = _mm256_fmadd_ps(mmk_load8(dt, w3, p), x0, a3);
        b0 = _mm256_fmadd_ps(mmk_load8(dt, w0, p + 8), x1, b0);
        b1 = _mm256_fmadd_ps(mmk_load8(dt, w1, p + 8), x1, b1);
        b2 = _mm256_fmadd_ps(mmk_load8(dt, w2, p + 8), x1, b2);
        b3 = _mm256_fmadd_ps(mmk_load8(dt, w3, p + 8), x1, b3);
    }
    if (p + 8 <= k) {
        __m256 x0 = _mm256_loadu_ps(x + p);
        a0 = _mm256_fmadd_ps(mmk_load8(dt, w0, p), x0, a0);
        a1 = _mm256_fmadd_ps(mmk_load8(dt, w1, p), x0, a1);
        a2 = _mm256_fmadd_ps(mmk_load8(dt, w2, p), x0, a2);
        a3 = _mm256_fmadd_ps(mmk_load8(dt, w3, p), x0, a3);
        p += 8;
    }
    a0 = _mm256_add_ps(a0, b0); a1 = _mm256_add_ps(a1, b1);
    a2 = _mm256_add_ps(a2, b2); a3 = _mm256_add_ps(a3, b3);
    /* reduce the four accumulators at once: lanes end up as [sum0, sum1, sum2, sum3] */
    __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    _mm_storeu_ps(out, t);
    for (; p < k; p++) {
        float xp = x[p];
        out[0] += mmk_load1(dt, w0, p) * xp;
        out[1] += mmk_load1(dt, w1, p) * xp;
        out[2] += mmk_load1(dt, w2, p) * xp;
        out[3] += mmk_load1(dt, w3, p) * xp;
    }
}

static inline __attribute__((always_inline)) float dot_row1(int dt, const void *W, size_t es, int64_t r,
                                                            int64_t k, const float *x) {
    const char *w = (const char *)W + (size_t)r * (size_t)k * es;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t p = 0;
    for (; p + 32 <= k; p += 32) {
        a0 = _mm256_fmadd_ps(mmk_load8(dt, w, p), _mm256_loadu_ps(x + p), a0);
        a1 = _mm256_fmadd_ps(mmk_load8(dt, w, p + 8), _mm256_loadu_ps(x + p + 8), a1);
        a2 = _mm256_fmadd_ps(mmk_load8(dt, w, p + 16), _mm256_loadu_ps(x + p + 16), a2);
        a3 = _mm256_fmadd_ps(mmk_load8(dt, w, p + 24), _mm256_loadu_ps(x + p + 24), a3);
    }
    for (; p + 8 <= k; p += 8) a0 = _mm256_fmadd_ps(mmk_load8(dt, w, p), _mm256_loadu_ps(x + p), a0);
    float s = mmk_hsum8(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; p < k; p++) s += mmk_load1(dt, w, p) * x[p];
    return s;
}

/* Rows [r0, r1): blocks of four, then the leftover rows one by one. */
static inline __attribute__((always_inline)) void rows_range(int dt, const void *W, const float *bias,
                                                             const float *x, float *y, int64_t r0,
                                                             int64_t r1, int64_t k) {
    size_t es = mmk_dtype_size(dt);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        float o[4];
        dot_rows4(dt, W, es, r, k, x, o);
        for (int i = 0; i < 4; i++) y[r + i] = o[i] + (bias ? bias[r + i] : 0.0f);
    }
    for (; r < r1; r++) y[r] = dot_row1(dt, W, es, r, k, x) + (bias ? bias[r] : 0.0f);
}

/* One specialised copy per dtype so the conversion is resolved at compile time. */
static void rows_f32(const void *W, const float *b, const float *x, float *y, int64_t r0, int64_t r1, int64_t k) {
    rows_range(MMK_F32, W, b, x, y, r0, r1, k);
}
static void rows_f16(const void *W, const float *b, const float *x, float *y, int64_t r0, int64_t r1, int64_t k) {
    rows_range(MMK_F16, W, b, x, y, r0, r1, k);
}
static void rows_bf16(const void *W, const float *b, const float *x, float *y, int64_t r0, int64_t r1, int64_t k) {
    rows_range(MMK_BF16, W, b, x, y, r0, r1, k);
}

void mmk_matvec(int dtype, const void *W, const float *bias, const float *x, float *y,
                int64_t n, int64_t k, int nthreads) {
    void (*rows)(const void *, const float *, const float *, float *, int64_t, int64_t, int64_t);
    switch (dtype) {
    case MMK_F32: rows = rows_f32; break;
    case MMK_F16: rows = rows_f16; break;
    case MMK_BF16: rows = rows_bf16; break;
    default: return;
    }
    if (n <= 0) return;
    int nt = mmk_nt(nthreads);
    int64_t nblocks = (n + 3) / 4;
    if (n * k < MMK_PAR_MIN_WORK) nt = 1;
    if (nt > nblocks) nt = (int)nblocks;
    /* Static split into contiguous runs of 4-row blocks: each thread streams one long stretch of W,
     * which keeps the hardware prefetchers on a straight line. */
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        int tid = omp_get_thread_num(), cnt = omp_get_num_threads();
#else
        int tid = 0, cnt = 1;
#endif
        int64_t b0 = nblocks * tid / cnt, b1 = nblocks * (tid + 1) / cnt;
        int64_t r0 = b0 * 4, r1 = b1 * 4 < n ? b1 * 4 : n;
        if (r0 < r1) rows(W, bias, x, y, r0, r1, k);
    }
}
#else
void mmk_matvec(int dtype, const void *W, const float *bias, const float *x, float *y,
                int64_t n, int64_t k, int nthreads) {
    (void)nthreads;
    mmk_matvec_ref(dtype, W, bias, x, y, n, k);
}
#endif
