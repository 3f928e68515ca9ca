/* Scaled dot-product attention of one query row per (query, head) pair against a KV cache.
 * Row j of the keys for kv head g starts at k + j*kv_stride + g*head_dim (same for v). */
#include <math.h>
#include <stdlib.h>
#include "mmk_internal.h"

/* ---- reference ------------------------------------------------------------------------- */

static float score_ref(const float *q, const float *kr, int hd, float scale) {
    double acc = 0.0;
    for (int d = 0; d < hd; d++) acc += (double)q[d] * (double)kr[d];
    return (float)acc * scale;
}

/* Softmax(q.K^T * scale) . V over key rows 0..n_ctx-1 with no scratch at all: scores are
 * recomputed in each of the three passes (max, normaliser, weighted sum). Slow but obviously right,
 * and the fallback of the fast path when it cannot get a buffer. */
static void attend_ref(float *o, const float *q, const float *kb, const float *vb, int64_t n_ctx,
                       int64_t kv_stride, int hd, float scale) {
    for (int d = 0; d < hd; d++) o[d] = 0.0f;
    if (n_ctx <= 0) return;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n_ctx; j++) {
        float s = score_ref(q, kb + j * kv_stride, hd, scale);
        if (s > mx) mx = s;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < n_ctx; j++) sum += expf(score_ref(q, kb + j * kv_stride, hd, scale) - mx);
    for (int64_t j = 0; j < n_ctx; j++) {
        float p = expf(score_ref(q, kb + j * kv_stride, hd, scale) - mx) / sum;
        const float *vr = vb + j * kv_stride;
        for (int d = 0; d < hd; d++) o[d] += p * vr[d];
    }
}

/* kv head used by query head h: consecutive query heads share one kv head. */
static int kv_head_of(int h, int n_heads, int n_kv_heads) {
    int group = n_kv_heads > 0 && n_heads >= n_kv_heads ? n_heads / n_kv_heads : 1;
    int g = h / group;
    return n_kv_heads > 0 && g >= n_kv_heads ? n_kv_heads - 1 : g;
}

/* keys visible to query i: causal up to its own position, and never past the cache */
static int64_t causal_len(int64_t q_pos0, int64_t i, int64_t n_kv) {
    int64_t c = q_pos0 + i + 1;
    return c < n_kv ? c : n_kv;
}

void mmk_attention_ref(float *out, const float *q, const float *k, const float *v,
                       int64_t n_q, int64_t q_pos0, int64_t n_kv, int n_heads, int n_kv_heads,
                       int head_dim, int64_t kv_stride, float scale) {
    int64_t qrow = (int64_t)n_heads * head_dim;
    for (int64_t i = 0; i < n_q; i++)
        for (int h = 0; h < n_heads; h++) {
            int64_t g = kv_head_of(h, n_heads, n_kv_heads);
            attend_ref(out + i * qrow + (int64_t)h * head_dim, q + i * qrow + (int64_t)h * head_dim,
                       k + g * head_dim, v + g * head_dim, causal_len(q_pos0, i, n_kv), kv_stride, head_dim,
                       scale);
        }
}

void mmk_attention_full_ref(float *out, const float *q, const float *k, const float *v,
                            int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                            int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale) {
    for (int64_t i = 0; i < n_q; i++)
        for (int h = 0; h < n_heads; h++)
            attend_ref(out + i * out_stride + (int64_t)h * head_dim, q + i * q_stride + (int64_t)h * head_dim,
                       k + (int64_t)h * head_dim, v + (int64_t)h * head_dim, n_kv, kv_stride, head_dim, scale);
}

/* ---- fast ------------------------------------------------------------------------------ */

static inline float dot_f32(const float *a, const float *b, int n) {
    int d = 0;
    float s;
#ifdef __AVX2__
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    for (; d + 16 <= n; d += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), s1);
    }
    if (d + 8 <= n) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s0);
        d += 8;
    }
    s = mmk_hsum8(_mm256_add_ps(s0, s1));
#else
    s = 0.0f;
#endif
    for (; d < n; d++) s += a[d] * b[d];
    return s;
}

/* o += a * x */
static inline void axpy_f32(float *o, float a, const float *x, int n) {
    int d = 0;
#ifdef __AVX2__
    __m256 va = _mm256_set1_ps(a);
    for (; d + 8 <= n; d += 8)
        _mm256_storeu_ps(o + d, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + d), _mm256_loadu_ps(o + d)));
#endif
    for (; d < n; d++) o[d] += a * x[d];
}

/* One pass for the scores (kept in sc), one for the exponentials, one to accumulate V. */
static void attend_fast(float *o, const float *q, const float *kb, const float *vb, int64_t n_ctx,
                        int64_t kv_stride, int hd, float scale, float *sc) {
    for (int d = 0; d < hd; d++) o[d] = 0.0f;
    if (n_ctx <= 0) return;
    float mx = -INFINITY;
    for (int64_t j = 0; j < n_ctx; j++) {
        float s = dot_f32(q, kb + j * kv_stride, hd) * scale;
        sc[j] = s;
        if (s > mx) mx = s;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < n_ctx; j++) {
        float e = expf(sc[j] - mx);
        sc[j] = e;
        sum += e;
    }
    for (int64_t j = 0; j < n_ctx; j++) axpy_f32(o, sc[j], vb + j * kv_stride, hd);
    float inv = 1.0f / sum;
    for (int d = 0; d < hd; d++) o[d] *= inv;
}

void mmk_attention(float *out, const float *q, const float *k, const float *v,
                   int64_t n_q, int64_t q_pos0, int64_t n_kv, int n_heads, int n_kv_heads,
                   int head_dim, int64_t kv_stride, float scale, int nthreads) {
    if (n_q <= 0 || n_heads <= 0 || head_dim <= 0) return;
    int64_t qrow = (int64_t)n_heads * head_dim;
    int64_t total = n_q * n_heads;
    int64_t kv_len = n_kv > 0 ? n_kv : 1;
    int nt = total > 1 && total * (n_kv > 0 ? n_kv : 1) * head_dim >= MMK_PAR_MIN_WORK ? mmk_nt(nthreads) : 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *sc = malloc((size_t)kv_len * sizeof(float));
        /* Causal rows get longer with i; dealing pairs out round-robin keeps threads even.
         * (Not schedule(dynamic): the toolchain's clang emits __kmpc_dispatch_deinit for it,
         * which the system libomp 14 does not have.) */
#pragma omp for schedule(static, 1)
        for (int64_t it = 0; it < total; it++) {
            int64_t i = it / n_heads;
            int h = (int)(it % n_heads);
            int64_t g = kv_head_of(h, n_heads, n_kv_heads);
            float *o = out + i * qrow + (int64_t)h * head_dim;
            const float *qv = q + i * qrow + (int64_t)h * head_dim;
            int64_t n_ctx = causal_len(q_pos0, i, n_kv);
            if (sc) attend_fast(o, qv, k + g * head_dim, v + g * head_dim, n_ctx, kv_stride, head_dim, scale, sc);
            else attend_ref(o, qv, k + g * head_dim, v + g * head_dim, n_ctx, kv_stride, head_dim, scale);
        }
        free(sc);
    }
}

void mmk_attention_full(float *out, const float *q, const float *k, const float *v,
                        int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                        int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale, int nthreads) {
    if (n_q <= 0 || n_heads <= 0 || head_dim <= 0) return;
    int64_t total = n_q * n_heads;
    int64_t kv_len = n_kv > 0 ? n_kv : 1;
    int nt = total > 1 && total * kv_len * head_dim >= MMK_PAR_MIN_WORK ? mmk_nt(nthreads) : 1;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        float *sc = malloc((size_t)kv_len * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t it = 0; it < total; it++) {
            int64_t i = it / n_heads;
            int h = (int)(it % n_heads);
            float *o = out + i * out_stride + (int64_t)h * head_dim;
            const float *qv = q + i * q_stride + (int64_t)h * head_dim;
            const float *kb = k + (int64_t)h * head_dim, *vb = v + (int64_t)h * head_dim;
            if (sc) attend_fast(o, qv, kb, vb, n_kv, kv_stride, head_dim, scale, sc);
            else attend_ref(o, qv, kb, vb, n_kv, kv_stride, head_dim, scale);
        }
        free(sc);
    }
}
