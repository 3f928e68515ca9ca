/* Helpers shared by the kernel files; not part of the contract (include/mmkernels.h is). */
#ifndef MMK_INTERNAL_H
#define MMK_INTERNAL_H
#include <stdint.h>
#include <string.h>
#include "mmkernels.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* The contract says nthreads <= 0 means one thread. */
static inline int mmk_nt(int nthreads) { return nthreads <= 0 ? 1 : nthreads; }

/* Below this many elements of work, waking a second thread costs more than it saves. */
#define MMK_PAR_MIN_WORK 32768

static inline float mmk_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t mmk_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* IEEE half -> float, exact (every half is representable as a float). Written out by hand so the
 * scalar paths and tails do not depend on compiler support for _Float16. */
static inline float mmk_h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: value is mant * 2^-24, exact in float */
        float f = (float)mant * 0x1p-24f;
        return sign ? -f : f;
    }
    if (exp == 31) return mmk_bits_to_f32(sign | 0x7f800000u | (mant << 13)); /* inf / NaN keeps payload */
    return mmk_bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));        /* rebias 15 -> 127 */
}

/* bfloat16 is the top half of a float32. */
static inline float mmk_bf2f(uint16_t b) { return mmk_bits_to_f32((uint32_t)b << 16); }

/* float -> half, round to nearest even, same result as F16C's vcvtps2ph with RNE. */
static inline uint16_t mmk_f2h(float f) {
    uint32_t x = mmk_f32_to_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) { /* inf, or NaN made quiet with the top payload bits kept */
        if (ax == 0x7f800000u) return sign | 0x7c00u;
        return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    if (ax >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 (halfway past 65504) ties to inf */
    if (ax < 0x38800000u) {
        /* below the smallest normal half 2^-14: result is round(|f| / 2^-24) as a subnormal */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* |f| / 2^-24 = m >> shift */
        if (e == 0 || shift > 24) return sign; /* < 2^-25 (or exactly half of 2^-24 with m even) */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (q & 1u))) q++;
        return (uint16_t)(sign | q); /* q == 0x400 correctly encodes the smallest normal */
    }
    uint32_t h = ((ax >> 23) - 112u) << 10 | ((ax >> 13) & 0x3ffu);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

/* float -> bfloat16, round to nearest even; NaN stays NaN (quiet bit forced). */
static inline uint16_t mmk_f2bf(float f) {
    uint32_t x = mmk_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Element i of a weight vector in `dtype`, as float. */
static inline float mmk_load1(int dtype, const void *p, int64_t i) {
    switch (dtype) {
    case MMK_F16: return mmk_h2f(((const uint16_t *)p)[i]);
    case MMK_BF16: return mmk_bf2f(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

#ifdef __AVX2__
#include <immintrin.h>
/* 8 consecutive elements of a weight vector as floats. Called with a constant dtype so the
 * switch folds away in the specialised loops. */
static inline __attribute__((always_inline)) __m256 mmk_load8(int dtype, const void *p, int64_t i) {
    if (dtype == MMK_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    if (dtype == MMK_BF16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i))), 16));
    return _mm256_loadu_ps((const float *)p + i);
}

static inline float mmk_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif


/* ---- vector exp ----------------------------------------------------------------------------
 * Softmax over hundreds of keys and GELU/SiLU over whole activations call exp hundreds of
 * millions of times; libm's scalar expf is then a large share of a vision or prefill pass.
 * exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 (ln 2 split in two for accuracy),
 * exp(r) by a degree-6 polynomial on |r| <= ln2/2 (the classic Cephes coefficients): about
 * 2 ulp over the clamped range, far inside every tolerance the references allow. */
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
static inline __m256 mmk_exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654f)), _mm256_set1_ps(88.37626f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n by building the exponent field; n >= -126 after the clamp, so no denormal path. */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

/* x[i] = exp(x[i]), vectorised where the CPU allows; returns the sum of the results (for softmax). */
static inline float mmk_exp_inplace_sum(float *x, int64_t n) {
    int64_t i = 0;
    float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 e = mmk_exp8(_mm256_loadu_ps(x + i));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, acc);
    for (int l = 0; l < 8; l++) sum += lanes[l];
#endif
    for (; i < n; i++) { float e = __builtin_expf(x[i]); x[i] = e; sum += e; }
    return sum;
}

/* x[i] = silu(x[i]) = x / (1 + exp(-x)) with the vector exp, in blocks on the stack. */
static inline void mmk_silu_inplace(float *x, int64_t n) {
    float e[1024];
    for (int64_t c = 0; c < n; c += 1024) {
        int64_t m = n - c < 1024 ? n - c : 1024;
        for (int64_t i = 0; i < m; i++) e[i] = -x[c + i];
        (void)mmk_exp_inplace_sum(e, m);
        for (int64_t i = 0; i < m; i++) x[c + i] = x[c + i] / (1.0f + e[i]);
    }
}

#endif
