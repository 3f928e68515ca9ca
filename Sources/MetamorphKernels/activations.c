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
 * per row: single-threaded at 2 threads). libm's erff keeps it bit-identical to the reference:
 * a vector erf loses the relative accuracy of 1 + erf(x) for negative x. */
void mmk_geglu(float *out, const float *proj, int64_t rows, int64_t inner, int nthreads) {
    int nt = act_threads(rows * inner, nthreads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < rows; r++) mmk_geglu_ref(out + r * inner, proj + r * 2 * inner, 1, inner);
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
