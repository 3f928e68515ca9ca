/* Bidirectional attention for long sequences (the UNet's and the VAE's self-attention over 4096
 * latent pixels, and cross-attention to the 77-row condition), computed in tiles with an online
 * softmax so that the [n_q x n_kv] score matrix never exists.
 *
 * Why: with two sgemm calls per block of queries (mmk_attention_gemm), a UNet evaluation at
 * SD1.5's size spends about 30% of its time in attention although it is under 20% of the
 * multiply-adds. The inner dimension is the head width (40 in SD1.5), too short for sgemm to
 * amortise packing the keys again for every query block, and the softmax streams a 2 MB score
 * block through memory four times. Here the keys are packed once per call, a block of queries
 * meets a chunk of keys in registers, the scores of one chunk (60 x 128) stay in L1/L2, and
 * exp / max / sum run on them while they are hot.
 *
 * Layout per (head, block of TQ queries), chunk by chunk of TK keys:
 *   S = (scale * Q) K^T            6x16 register tiles over keys packed as [panel][hd][16]
 *   m' = max(m, rowmax S); a = exp(m - m'); P = exp(S - m'); l = a l + rowsum P; O = a O + P V
 * and at the end out = O / l. Needs AVX2 + FMA and head_dim a multiple of 8; everything else goes
 * to mmk_attention_gemm (same contract). The plain twin is mmk_attention_full_ref (attention.c).
 */
#include <math.h>
#include <stdlib.h>
#include "mmk_internal.h"

#define TQ 60   /* queries per block: ten 6-row tiles for scores, thirty 2-row tiles for P V */
#define TK 128  /* keys per chunk: the chunk's packed keys and values (20 KB each at hd 40) stay in L1/L2 */

static int attention_mode(void) {
    /* METAMORPH_ATTENTION=gemm forces the two-sgemm path (for A/B measurements). */
    const char *e = getenv("METAMORPH_ATTENTION");
    return e && e[0] == 'g' ? 1 : 0;
}

#if defined(__AVX2__) && defined(__FMA__)

/* Keys of one head packed as panels of 16: kp[p][d][0..15] = k[16 p + j][d], zero past n_kv. */
static void pack_keys(float *kp, const float *k, int64_t n_kv, int64_t kv_stride, int hd) {
    int64_t np = (n_kv + 15) / 16;
    for (int64_t p = 0; p < np; p++) {
        float *dst = kp + p * hd * 16;
        for (int j = 0; j < 16; j++) {
            int64_t r = p * 16 + j;
            if (r < n_kv) {
                const float *src = k + r * kv_stride;
                for (int d = 0; d < hd; d++) dst[d * 16 + j] = src[d];
            } else {
                for (int d = 0; d < hd; d++) dst[d * 16 + j] = 0.0f;
            }
        }
    }
}

/* Values of one head as contiguous rows of hd floats (the rows of v are heads * hd apart, which
 * spreads a chunk over three times as many cache lines). */
static void pack_values(float *vp, const float *v, int64_t n, int64_t kv_stride, int hd) {
    for (int64_t r = 0; r < n; r++) memcpy(vp + r * hd, v + r * kv_stride, (size_t)hd * sizeof(float));
}

/* S[6][16] = Q[6][hd] . panel[hd][16]; q rows hd apart, S rows ldS apart. */
static inline __attribute__((always_inline)) void scores_6x16(float *S, int64_t ldS, const float *q, int hd,
                                                              const float *panel) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int d = 0; d < hd; d++) {
        __m256 b0 = _mm256_loadu_ps(panel + d * 16), b1 = _mm256_loadu_ps(panel + d * 16 + 8);
        __m256 a;
        a = _mm256_broadcast_ss(q + d);          c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(q + hd + d);     c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(q + 2 * hd + d); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(q + 3 * hd + d); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(q + 4 * hd + d); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(q + 5 * hd + d); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    }
    _mm256_storeu_ps(S, c00);           _mm256_storeu_ps(S + 8, c01);
    _mm256_storeu_ps(S + ldS, c10);     _mm256_storeu_ps(S + ldS + 8, c11);
    _mm256_storeu_ps(S + 2 * ldS, c20); _mm256_storeu_ps(S + 2 * ldS + 8, c21);
    _mm256_storeu_ps(S + 3 * ldS, c30); _mm256_storeu_ps(S + 3 * ldS + 8, c31);
    _mm256_storeu_ps(S + 4 * ldS, c40); _mm256_storeu_ps(S + 4 * ldS + 8, c41);
    _mm256_storeu_ps(S + 5 * ldS, c50); _mm256_storeu_ps(S + 5 * ldS + 8, c51);
}

/* O[2][8 nv] += P[2][0..kc) . V[0..kc)[8 nv] for columns c0 .. c0 + 8 nv; nv <= 5 is a constant
 * after inlining, so the accumulators live in registers (10 + 5 loaded V vectors + 1 broadcast). */
static inline __attribute__((always_inline)) void pv_2rows(float *O, int hd, const float *P, int64_t ldP,
                                                           const float *v, int64_t kv_stride, int kc, int c0, int nv) {
    __m256 a0[5], a1[5];
    for (int c = 0; c < nv; c++) { a0[c] = _mm256_loadu_ps(O + c0 + 8 * c); a1[c] = _mm256_loadu_ps(O + hd + c0 + 8 * c); }
    for (int j = 0; j < kc; j++) {
        const float *vr = v + j * kv_stride + c0;
        __m256 p0 = _mm256_broadcast_ss(P + j), p1 = _mm256_broadcast_ss(P + ldP + j);
        for (int c = 0; c < nv; c++) {
            __m256 vv = _mm256_loadu_ps(vr + 8 * c);
            a0[c] = _mm256_fmadd_ps(p0, vv, a0[c]);
            a1[c] = _mm256_fmadd_ps(p1, vv, a1[c]);
        }
    }
    for (int c = 0; c < nv; c++) { _mm256_storeu_ps(O + c0 + 8 * c, a0[c]); _mm256_storeu_ps(O + hd + c0 + 8 * c, a1[c]); }
}

static void pv_block(float *O, int hd, const float *P, int64_t ldP, const float *v, int64_t kv_stride, int kc, int rows) {
    int nvec = hd / 8;
    for (int r = 0; r < rows; r += 2) {
        for (int c = 0; c < nvec; c += 5) {
            int nv = nvec - c < 5 ? nvec - c : 5;
            float *o = O + (int64_t)r * hd;
            const float *p = P + r * ldP;
            switch (nv) { /* constant nv per case: the compiler unrolls and keeps registers */
            case 5: pv_2rows(o, hd, p, ldP, v, kv_stride, kc, 8 * c, 5); break;
            case 4: pv_2rows(o, hd, p, ldP, v, kv_stride, kc, 8 * c, 4); break;
            case 3: pv_2rows(o, hd, p, ldP, v, kv_stride, kc, 8 * c, 3); break;
            case 2: pv_2rows(o, hd, p, ldP, v, kv_stride, kc, 8 * c, 2); break;
            default: pv_2rows(o, hd, p, ldP, v, kv_stride, kc, 8 * c, 1); break;
            }
        }
    }
}

/* One block of m <= TQ queries of one head against all keys. Scratch (per thread): Qs [TQ][hd],
 * O [TQ][hd], S [TQ][TK], mx [TQ], l [TQ]. */
static void attend_block(float *out, int64_t out_stride, const float *q, int64_t q_stride, int64_t m,
                         const float *kp, const float *v, int64_t n_kv, int hd, float scale,
                         float *Qs, float *O, float *S, float *mx, float *l) {
    /* Queries scaled once; rows past m are zero (their results are computed and dropped). */
    for (int64_t i = 0; i < TQ; i++)
        for (int d = 0; d < hd; d++) Qs[i * hd + d] = i < m ? q[i * q_stride + d] * scale : 0.0f;
    memset(O, 0, (size_t)TQ * hd * sizeof(float));
    for (int i = 0; i < TQ; i++) { mx[i] = -INFINITY; l[i] = 0.0f; }
    int rows = m < TQ ? (int)((m + 1) & ~1) : TQ;       /* P V rows: m rounded up to even */
    int srows = m < TQ ? (int)((m + 5) / 6 * 6) : TQ;   /* score rows: m rounded up to 6 */
    for (int64_t j0 = 0; j0 < n_kv; j0 += TK) {
        int kc = n_kv - j0 < TK ? (int)(n_kv - j0) : TK;
        int kc16 = (kc + 15) & ~15;
        for (int i = 0; i < srows; i += 6)
            for (int p = 0; p < kc16; p += 16)
                scores_6x16(S + (int64_t)i * TK + p, TK, Qs + (int64_t)i * hd, hd, kp + (j0 + p) * hd);
        for (int i = 0; i < rows; i++) {
            float *s = S + (int64_t)i * TK;
            __m256 vm = _mm256_set1_ps(-INFINITY), bad = _mm256_setzero_ps();
            int j = 0;
            for (; j + 8 <= kc; j += 8) {
                __m256 x = _mm256_loadu_ps(s + j);
                bad = _mm256_or_ps(bad, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
                vm = _mm256_max_ps(vm, x);
            }
            float cm = -INFINITY;
            int nan = _mm256_movemask_ps(bad) != 0;
            {
                float lanes[8];
                _mm256_storeu_ps(lanes, vm);
                for (int t = 0; t < 8; t++) cm = lanes[t] > cm ? lanes[t] : cm;
            }
            for (; j < kc; j++) { cm = s[j] > cm ? s[j] : cm; nan |= s[j] != s[j]; }
            if (nan || cm == INFINITY) {
                /* NaN or infinite inputs: the reference's softmax is NaN for this row, so is ours
                 * (the vector exp clamps and would hide it). */
                l[i] = NAN;
                continue;
            }
            float mnew = cm > mx[i] ? cm : mx[i];
            __m256 vmn = _mm256_set1_ps(mnew), acc = _mm256_setzero_ps();
            for (j = 0; j + 8 <= kc; j += 8) {
                __m256 e = mmk_exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vmn));
                _mm256_storeu_ps(s + j, e);
                acc = _mm256_add_ps(acc, e);
            }
            float sum = mmk_hsum8(acc);
            for (; j < kc; j++) { float e = expf(s[j] - mnew); s[j] = e; sum += e; }
            float alpha = mx[i] == -INFINITY ? 0.0f : expf(mx[i] - mnew);
            if (alpha != 1.0f) {
                float *o = O + (int64_t)i * hd;
                for (int d = 0; d < hd; d++) o[d] *= alpha;
            }
            l[i] = l[i] * alpha + sum;
            mx[i] = mnew;
        }
        pv_block(O, hd, S, TK, v + j0 * hd, hd, kc, rows);
    }
    for (int64_t i = 0; i < m; i++) {
        float inv = 1.0f / l[i];
        float *o = out + i * out_stride;
        for (int d = 0; d < hd; d++) o[d] = O[i * hd + d] * inv;
    }
}

#endif

void mmk_attention_tiled(float *out, const float *q, const float *k, const float *v,
                         int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                         int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale, int nthreads) {
    if (n_q <= 0 || n_kv <= 0 || n_heads <= 0 || head_dim <= 0) return;
#if defined(__AVX2__) && defined(__FMA__)
    /* Read per call like METAMORPH_CONV (a getenv next to milliseconds of work). */
    if (attention_mode() == 0 && head_dim % 8 == 0) {
        int nt = mmk_nt(nthreads);
        int hd = head_dim;
        int64_t np = (n_kv + 15) / 16;
        /* The last chunk may read up to 15 zero columns past n_kv: panels cover them. */
        float *kp = malloc((size_t)n_heads * (size_t)np * 16 * (size_t)hd * sizeof(float));
        float *vp = kp ? malloc((size_t)n_heads * (size_t)n_kv * (size_t)hd * sizeof(float)) : NULL;
        if (vp) {
            int64_t nqb = (n_q + TQ - 1) / TQ, total = nqb * n_heads;
            int failed = 0;
#pragma omp parallel num_threads(nt) if (nt > 1 && total > 1)
            {
#pragma omp for schedule(static)
                for (int64_t t = 0; t < (int64_t)n_heads * np; t++) {
                    int64_t h = t / np, p = t % np;
                    int64_t rows = n_kv - p * 16 < 16 ? n_kv - p * 16 : 16;
                    pack_keys(kp + h * np * 16 * hd + p * 16 * hd, k + h * hd + p * 16 * kv_stride, rows, kv_stride, hd);
                    pack_values(vp + h * n_kv * hd + p * 16 * hd, v + h * hd + p * 16 * kv_stride, rows, kv_stride, hd);
                }
                float *buf = malloc(((size_t)2 * TQ * hd + (size_t)TQ * TK + 2 * TQ) * sizeof(float));
                if (!buf) {
#pragma omp atomic write
                    failed = 1;
                }
#pragma omp for schedule(static)
                for (int64_t it = 0; it < total; it++) {
                    if (!buf) continue;
                    int h = (int)(it % n_heads);
                    int64_t i0 = (it / n_heads) * TQ, m = n_q - i0 < TQ ? n_q - i0 : TQ;
                    float *Qs = buf, *O = Qs + TQ * hd, *S = O + TQ * hd, *mx = S + TQ * TK, *l = mx + TQ;
                    attend_block(out + i0 * out_stride + (int64_t)h * hd, out_stride, q + i0 * q_stride + (int64_t)h * hd,
                                 q_stride, m, kp + (int64_t)h * np * 16 * hd, vp + (int64_t)h * n_kv * hd, n_kv, hd,
                                 scale, Qs, O, S, mx, l);
                }
                free(buf);
            }
            free(kp);
            free(vp);
            if (!failed) return;
        } else {
            free(kp);
        }
    }
#endif
    /* No AVX2, a head width that is not a multiple of 8, no memory, or METAMORPH_ATTENTION=gemm. */
    mmk_attention_gemm(out, q, k, v, n_q, n_kv, n_heads, head_dim, q_stride, kv_stride, out_stride, scale, nthreads);
}
