/* RMSNorm and LayerNorm. Sums are taken in double: a float running sum over a few thousand
 * elements drifts further from torch's (pairwise) float32 reduction than the exact value does. */
#include <math.h>
#include "mmk_internal.h"

/* ---- RMSNorm ---------------------------------------------------------------------------- */

/* Same rounding steps as LlamaRMSNorm in float32: inv = rsqrt(mean + eps); out = (x * inv) * w. */
static float rms_inv(double sumsq, int64_t dim, float eps) {
    float mean = (float)(sumsq / (double)dim);
    return 1.0f / sqrtf(mean + eps);
}

void mmk_rmsnorm_ref(float *out, const float *x, int wdtype, const void *w, int64_t rows, int64_t dim,
                     float eps) {
    if (dim <= 0) return;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *o = out + r * dim;
        double ss = 0.0;
        for (int64_t i = 0; i < dim; i++) ss += (double)xr[i] * (double)xr[i];
        float inv = rms_inv(ss, dim, eps);
        for (int64_t i = 0; i < dim; i++) {
            float v = xr[i] * inv; /* kept as a separate rounding step, as torch does */
            o[i] = w ? v * mmk_load1(wdtype, w, i) : v;
        }
    }
}

static inline __attribute__((always_inline)) void rms_row(int wdt, float *o, const float *xr, const void *w,
                                                          int64_t dim, float eps) {
    int64_t i = 0;
    double ss;
#ifdef __AVX2__
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    for (; i + 8 <= dim; i += 8) {
        __m256 v = _mm256_loadu_ps(xr + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(s0, s1));
    ss = (t[0] + t[1]) + (t[2] + t[3]);
#else
    ss = 0.0;
#endif
    for (; i < dim; i++) ss += (double)xr[i] * (double)xr[i];
    float inv = rms_inv(ss, dim, eps);
    i = 0;
#ifdef __AVX2__
    __m256 vinv = _mm256_set1_ps(inv);
    for (; i + 8 <= dim; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + i), vinv);
        if (w) v = _mm256_mul_ps(v, mmk_load8(wdt, w, i));
        _mm256_storeu_ps(o + i, v);
    }
#endif
    for (; i < dim; i++) {
        float v = xr[i] * inv;
        o[i] = w ? v * mmk_load1(wdt, w, i) : v;
    }
}

void mmk_rmsnorm(float *out, const float *x, int wdtype, const void *w, int64_t rows, int64_t dim,
                 float eps, int nthreads) {
    if (dim <= 0 || rows <= 0 || mmk_dtype_size(wdtype) == 0) return;
    int nt = rows * dim >= MMK_PAR_MIN_WORK ? mmk_nt(nthreads) : 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * dim;
        const float *xr = x + r * dim;
        if (wdtype == MMK_F16) rms_row(MMK_F16, o, xr, w, dim, eps);
        else if (wdtype == MMK_BF16) rms_row(MMK_BF16, o, xr, w, dim, eps);
        else rms_row(MMK_F32, o, xr, w, dim, eps);
    }
}

/* ---- LayerNorm -------------------------------------------------------------------------- */

/* Two passes (mean, then centred squares) rather than E[x^2]-E[x]^2, which cancels badly when
 * |mean| >> std. Biased variance, as torch.nn.LayerNorm. */
static void ln_stats(const float *xr, int64_t dim, float eps, float *mean_out, float *inv_out) {
    double s = 0.0;
    for (int64_t i = 0; i < dim; i++) s += xr[i];
    double mean = s / (double)dim, v = 0.0;
    for (int64_t i = 0; i < dim; i++) {
        double d = (double)xr[i] - mean;
        v += d * d;
    }
    *mean_out = (float)mean;
    *inv_out = (float)(1.0 / sqrt(v / (double)dim + (double)eps));
}

void mmk_layernorm_ref(float *out, const float *x, int wdtype, const void *w, const void *b,
                       int64_t rows, int64_t dim, float eps) {
    if (dim <= 0) return;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *o = out + r * dim;
        float mean, inv;
        ln_stats(xr, dim, eps, &mean, &inv);
        for (int64_t i = 0; i < dim; i++) {
            float v = (xr[i] - mean) * inv;
            if (w) v = v * mmk_load1(wdtype, w, i);
            if (b) v = v + mmk_load1(wdtype, b, i);
            o[i] = v;
        }
    }
}

/* LayerNorm only appears in vision towers and small encoders; parallel rows with the same
 * scalar row code is plenty (the compiler vectorises the elementwise loop). */
void mmk_layernorm(float *out, const float *x, int wdtype, const void *w, const void *b,
                   int64_t rows, int64_t dim, float eps, int nthreads) {
    if (dim <= 0 || rows <= 0 || mmk_dtype_size(wdtype) == 0) return;
    int nt = rows * dim >= MMK_PAR_MIN_WORK ? mmk_nt(nthreads) : 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * dim;
        float *o = out + r * dim;
        float mean, inv;
        ln_stats(xr, dim, eps, &mean, &inv);
        for (int64_t i = 0; i < dim; i++) {
            float v = (xr[i] - mean) * inv;
            if (w) v = v * mmk_load1(wdtype, w, i);
            if (b) v = v + mmk_load1(wdtype, b, i);
            o[i] = v;
        }
    }
}
