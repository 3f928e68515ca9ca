/* Elementwise activations, residual add and greedy argmax. These are memory-light and cheap next
 * to the matmuls; libm's expf/erff/tanhf keep them bit-comparable with the references. */
#include <math.h>
#include "mmk_internal.h"

/* ---- references: the definitions, one element at a time -------------------------------- */

void mmk_silu_mul_ref(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void mmk_gelu_erf_ref(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void mmk_geglu_ref(float *out, const float *proj, int64_t rows, int64_t inner) {
    for (int64_t r = 0; r < rows; r++) {
        const float *h = proj + r * 2 * inner, *g = h + inner;
        for (int64_t j = 0; j < inner; j++) out[r * inner + j] = h[j] * (0.5f * g[j] * (1.0f + erff(g[j] * 0.70710678118654752f)));
    }
}

void mmk_gelu_tanh_ref(float *x, int64_t n) {
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
    }
}

/* ---- parallel versions --------------------------------------------------------------------
 * Chunks of 4096 keep each thread on its own cache lines; small n stays on the calling thread. */
#define ACT_CHUNK 4096

static int act_threads(int64_t n, int nthreads) { return n >= MMK_PAR_MIN_WORK ? mmk_nt(nthreads) : 1; }

/* silu(g) = g / (1 + exp(-g)) with the vector exp (prefill runs it on n_tokens x FFN values). */
static void silu_mul_block(float *gate, const float *up, int64_t n) {
    float e[ACT_CHUNK];
    for (int64_t i = 0; i < n; i++) e[i] = -gate[i];
    (void)mmk_exp_inplace_sum(e, n);
    for (int64_t i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + e[i]) * up[i];
}

void mmk_silu_mul(float *gate, const float *up, int64_t n, int nthreads) {
    int nt = act_threads(n, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t c = 0; c < n; c += ACT_CHUNK)
        silu_mul_block(gate + c, up + c, n - c < ACT_CHUNK ? n - c : ACT_CHUNK);
}

void mmk_gelu_erf(float *x, int64_t n, int nthreads) {
    int nt = act_threads(n, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t c = 0; c < n; c += ACT_CHUNK) mmk_gelu_erf_ref(x + c, n - c < ACT_CHUNK ? n - c : ACT_CHUNK);
}

/* GEGLU in one pass and over all rows in parallel (it was a serial Swift loop calling the GELU
 * per row: single-threaded at 2 threads, and libm's scalar erff was 2% of a UNet evaluation).
 * erf(x) here is a rational approximation x P(x^2) / Q(x^2) on x clamped to [-4, 4] (degree-13
 * odd numerator, degree-8 even denominator; the coefficients are the widely published float
 * fit used by several vector math libraries): at most 3.9e-7 from erf over the real line
 * (measured over [-10, 10] in steps of 1e-4 against double-precision erf). So gelu's absolute error is at
 * most ~2e-7 |x|: 1 + erf cancels for negative x exactly as it does in PyTorch's vectorised GELU,
 * whose erf is also a ~1 ulp approximation. mmk_geglu_ref keeps libm. */
#if defined(__AVX2__) && defined(__FMA__)
static inline __m256 erf8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-4.0f)), _mm256_set1_ps(4.0f));
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(-2.72614225801306e-10f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.77068142495902e-08f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.10102402082508e-06f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-5.69250639462346e-05f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-7.34990630326855e-04f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-2.95459980854025e-03f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.60960333262415e-02f));
    p = _mm256_mul_ps(p, x);
    __m256 q = _mm256_set1_ps(-1.45660718464996e-05f);
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-2.13374055278905e-04f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.68282697438203e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-7.37332916720468e-03f));
    q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(-1.42647390514189e-02f));
    return _mm256_div_ps(p, q);
}
#endif

static void geglu_row(float *out, const float *h, const float *g, int64_t inner) {
    int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), rs2 = _mm256_set1_ps(0.70710678118654752f);
    for (; j + 8 <= inner; j += 8) {
        __m256 gv = _mm256_loadu_ps(g + j);
        __m256 e = erf8(_mm256_mul_ps(gv, rs2));
        __m256 gelu = _mm256_mul_ps(_mm256_mul_ps(half, gv), _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_loadu_ps(h + j), gelu));
    }
#endif
    for (; j < inner; j++) out[j] = h[j] * (0.5f * g[j] * (1.0f + erff(g[j] * 0.70710678118654752f)));
}

void mmk_geglu(float *out, const float *proj, int64_t rows, int64_t inner, int nthreads) {
    int nt = act_threads(rows * inner, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) geglu_row(out + r * inner, proj + r * 2 * inner, proj + r * 2 * inner + inner, inner);
}

/* 0.5 v (1 + tanh(u)) = v / (1 + exp(-2u)): the same function with no cancellation near
 * tanh(u) = -1, computed with the vector exp (within a few ulp of the libm reference). */
static void gelu_tanh_block(float *x, int64_t n) {
    const float c = 0.7978845608028654f;
    float e[ACT_CHUNK];
    for (int64_t i = 0; i < n; i++) { float v = x[i]; e[i] = -2.0f * c * (v + 0.044715f * v * v * v); }
    (void)mmk_exp_inplace_sum(e, n);
    for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + e[i]);
}

void mmk_gelu_tanh(float *x, int64_t n, int nthreads) {
    int nt = act_threads(n, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t c = 0; c < n; c += ACT_CHUNK) gelu_tanh_block(x + c, n - c < ACT_CHUNK ? n - c : ACT_CHUNK);
}

void mmk_add(float *y, const float *x, int64_t n, int nthreads) {
    int nt = act_threads(n, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

/* Strict '>' keeps the first maximum on ties; NaN compares false so it is skipped. */
int64_t mmk_argmax(const float *x, int64_t n) {
    if (n <= 0) return -1;
    int64_t best = -1;
    float bv = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (v != v) continue;
        if (best < 0 || v > bv) {
            best = i;
            bv = v;
        }
    }
    return best < 0 ? 0 : best;
}
