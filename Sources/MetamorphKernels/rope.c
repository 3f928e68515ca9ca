/* Rotary position embedding, Hugging Face "rotate half" layout: dimension i pairs with i + half. */
#include <math.h>
#include "mmk_internal.h"

void mmk_rope_ref(float *x, const int32_t *pos, int64_t n_tokens, int n_heads, int head_dim,
                  const float *inv_freq) {
    int half = head_dim / 2;
    for (int64_t t = 0; t < n_tokens; t++)
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (t * n_heads + h) * (int64_t)head_dim;
            for (int i = 0; i < half; i++) {
                /* the angle is rounded to float32 before cos/sin, exactly like torch */
                float angle = (float)pos[t] * inv_freq[i];
                float c = cosf(angle), s = sinf(angle);
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * c - x2 * s;
                v[i + half] = x2 * c + x1 * s;
            }
        }
}

/* cos/sin of one token are shared by all its heads: compute them once into a small table. */
#define ROPE_TABLE 512

static void rope_token(float *xt, int32_t p, int n_heads, int head_dim, const float *inv_freq) {
    int half = head_dim / 2;
    float ctab[ROPE_TABLE], stab[ROPE_TABLE];
    if (half > ROPE_TABLE) { /* absurdly wide heads: no table, recompute per head */
        mmk_rope_ref(xt, &p, 1, n_heads, head_dim, inv_freq);
        return;
    }
    for (int i = 0; i < half; i++) {
        float angle = (float)p * inv_freq[i];
        ctab[i] = cosf(angle);
        stab[i] = sinf(angle);
    }
    for (int h = 0; h < n_heads; h++) {
        float *v = xt + (int64_t)h * head_dim;
        int i = 0;
#ifdef __AVX2__
        for (; i + 8 <= half; i += 8) {
            __m256 c = _mm256_loadu_ps(ctab + i), s = _mm256_loadu_ps(stab + i);
            __m256 x1 = _mm256_loadu_ps(v + i), x2 = _mm256_loadu_ps(v + i + half);
            _mm256_storeu_ps(v + i, _mm256_fmsub_ps(x1, c, _mm256_mul_ps(x2, s)));
            _mm256_storeu_ps(v + i + half, _mm256_fmadd_ps(x2, c, _mm256_mul_ps(x1, s)));
        }
#endif
        for (; i < half; i++) {
            float x1 = v[i], x2 = v[i + half];
            v[i] = x1 * ctab[i] - x2 * stab[i];
            v[i + half] = x2 * ctab[i] + x1 * stab[i];
        }
    }
}

void mmk_rope(float *x, const int32_t *pos, int64_t n_tokens, int n_heads, int head_dim,
              const float *inv_freq, int nthreads) {
    if (n_tokens <= 0 || n_heads <= 0 || head_dim < 2) return;
    int64_t row = (int64_t)n_heads * head_dim;
    int nt = n_tokens > 1 && n_tokens * row >= MMK_PAR_MIN_WORK ? mmk_nt(nthreads) : 1;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t t = 0; t < n_tokens; t++) rope_token(x + t * row, pos[t], n_heads, head_dim, inv_freq);
}
