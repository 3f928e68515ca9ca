/* dtype conversions. Weights live in the checkpoint's dtype; activations are always float32. */
#include "mmk_internal.h"

size_t mmk_dtype_size(int dtype) {
    switch (dtype) {
    case MMK_F32: return 4;
    case MMK_F16: return 2;
    case MMK_BF16: return 2;
    default: return 0;
    }
}

void mmk_convert_to_f32(int dtype, const void *src, float *dst, int64_t n) {
    int64_t i = 0;
    if (dtype == MMK_F32) {
        memmove(dst, src, (size_t)(n > 0 ? n : 0) * sizeof(float));
        return;
    }
    if (dtype != MMK_F16 && dtype != MMK_BF16) return; /* unknown code: nothing sensible to write */
#ifdef __AVX2__
    if (dtype == MMK_F16)
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, mmk_load8(MMK_F16, src, i));
    else
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, mmk_load8(MMK_BF16, src, i));
#endif
    for (; i < n; i++) dst[i] = mmk_load1(dtype, src, i);
}

void mmk_f32_to_f16(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
#ifdef __AVX2__
    /* F16C rounds to nearest even when told so explicitly (independent of MXCSR). */
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = mmk_f2h(src[i]);
}

void mmk_f32_to_bf16(const float *src, uint16_t *dst, int64_t n) {
    /* Plain integer rounding; the compiler vectorises it well enough for a tools-only path. */
    for (int64_t i = 0; i < n; i++) dst[i] = mmk_f2bf(src[i]);
}
