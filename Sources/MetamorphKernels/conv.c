/* Kernels of the visualizer (Stable Diffusion UNet / VAE): 2-D convolution (im2col + sgemm),
 * GroupNorm (+ fused SiLU), nearest 2x upsampling, SiLU, a transpose and a GEMM-based full
 * attention for long sequences. Activations are float32 NCHW, one image per call. */
#include <math.h>
#include <stdlib.h>
#include <cblas.h>
#include "mmk_internal.h"

void openblas_set_num_threads(int num_threads);

/* ---- conv2d ---------------------------------------------------------------------------- */

void mmk_conv2d_ref(int wdtype, const void *w, const float *bias, const float *in, float *out,
                    int cin, int h, int wd, int cout, int kh, int kw, int stride, int pad) {
    int oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1;
    for (int o = 0; o < cout; o++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                double acc = bias ? bias[o] : 0.0;
                for (int c = 0; c < cin; c++)
                    for (int i = 0; i < kh; i++)
                        for (int j = 0; j < kw; j++) {
                            int iy = y * stride - pad + i, ix = x * stride - pad + j;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= wd) continue;
                            int64_t wi = (((int64_t)o * cin + c) * kh + i) * kw + j;
                            acc += (double)in[((int64_t)c * h + iy) * wd + ix] * (double)mmk_load1(wdtype, w, wi);
                        }
                out[((int64_t)o * oh + y) * ow + x] = (float)acc;
            }
}

/* col[(c*kh + i)*kw + j][(y - y0)*ow + x] = in[c][y*stride - pad + i][x*stride - pad + j] (0 outside),
 * for output rows y0 <= y < y1. */
static void im2col(const float *in, float *col, int cin, int h, int wd, int kh, int kw, int stride, int pad,
                   int y0, int y1, int ow, int nt) {
    int64_t rows = (int64_t)cin * kh * kw, ncol = (int64_t)(y1 - y0) * ow;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && rows * ncol >= MMK_PAR_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        int c = (int)(r / (kh * kw)), i = (int)(r / kw % kh), j = (int)(r % kw);
        float *d = col + r * ncol;
        const float *src = in + (int64_t)c * h * wd;
        for (int y = y0; y < y1; y++) {
            int iy = y * stride - pad + i;
            float *dr = d + (int64_t)(y - y0) * ow;
            if (iy < 0 || iy >= h) { for (int x = 0; x < ow; x++) dr[x] = 0.0f; continue; }
            const float *sr = src + (int64_t)iy * wd;
            for (int x = 0; x < ow; x++) {
                int ix = x * stride - pad + j;
                dr[x] = (ix >= 0 && ix < wd) ? sr[ix] : 0.0f;
            }
        }
    }
}

/* Floats of im2col scratch per chunk of output rows (32 MB). */
#define CONV_COL_FLOATS ((int64_t)8 << 20)

int mmk_conv2d(int wdtype, const void *w, const float *bias, const float *in, float *out,
               int cin, int h, int wd, int cout, int kh, int kw, int stride, int pad, int nthreads) {
    size_t es = mmk_dtype_size(wdtype);
    if (es == 0 || cin <= 0 || cout <= 0 || stride <= 0) return -1;
    int oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1;
    if (oh <= 0 || ow <= 0) return -1;
    int nt = mmk_nt(nthreads);
    int64_t K = (int64_t)cin * kh * kw, N = (int64_t)oh * ow;
    int direct = kh == 1 && kw == 1 && stride == 1 && pad == 0;
    int chunk_rows = oh;
    if (!direct) {
        int64_t r = CONV_COL_FLOATS / (K * ow);
        chunk_rows = r < 1 ? 1 : (r > oh ? oh : (int)r);
    }
    float *colbuf = NULL, *wbuf = NULL;
    if (!direct) {
        colbuf = malloc((size_t)K * (size_t)chunk_rows * (size_t)ow * sizeof(float));
        if (!colbuf) return -3;
    }
    const float *W = (const float *)w;
    if (wdtype != MMK_F32) {
        wbuf = malloc((size_t)cout * (size_t)K * sizeof(float));
        if (!wbuf) { free(colbuf); return -3; }
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && cout * K >= MMK_PAR_MIN_WORK)
        for (int o = 0; o < cout; o++)
            mmk_convert_to_f32(wdtype, (const char *)w + (size_t)o * (size_t)K * es, wbuf + (int64_t)o * K, K);
        W = wbuf;
    }
    mmk_blas_set_threads(1);
    for (int y0 = 0; y0 < oh; y0 += chunk_rows) {
        int y1 = y0 + chunk_rows < oh ? y0 + chunk_rows : oh;
        int64_t nc = (int64_t)(y1 - y0) * ow;
        const float *col = in;
        int64_t ldcol = N;
        if (!direct) { im2col(in, colbuf, cin, h, wd, kh, kw, stride, pad, y0, y1, ow, nt); col = colbuf; ldcol = nc; }
        float *o = out + (int64_t)y0 * ow;
        /* o[cout][nc] (row stride N) = W[cout][K] col[K][nc]; split output rows, or columns when cout is thin */
        int split_rows = cout >= 32 * nt;
#pragma omp parallel num_threads(nt) if (nt > 1 && (int64_t)cout * nc * K >= 4 * MMK_PAR_MIN_WORK)
        {
#ifdef _OPENMP
            int64_t t = omp_get_thread_num(), c = omp_get_num_threads();
#else
            int64_t t = 0, c = 1;
#endif
            if (split_rows) {
                int64_t r0 = cout * t / c, r1 = cout * (t + 1) / c;
                if (r1 > r0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)nc, (int)K, 1.0f,
                                W + r0 * K, (int)K, col, (int)ldcol, 0.0f, o + r0 * N, (int)N);
            } else {
                int64_t c0 = nc * t / c, c1 = nc * (t + 1) / c;
                if (c1 > c0)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)(c1 - c0), (int)K, 1.0f,
                                W, (int)K, col + c0, (int)ldcol, 0.0f, o + c0, (int)N);
            }
        }
    }
    if (bias) {
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && cout * N >= MMK_PAR_MIN_WORK)
        for (int o = 0; o < cout; o++) {
            float *y = out + (int64_t)o * N;
            float b = bias[o];
            for (int64_t i = 0; i < N; i++) y[i] += b;
        }
    }
    free(colbuf);
    free(wbuf);
    return 0;
}

/* ---- group norm ------------------------------------------------------------------------ */

static inline float silu1(float v) { return v / (1.0f + expf(-v)); }

static void gn_group(float *out, const float *x, const float *gamma, const float *beta, int c0, int cg,
                     int64_t hw, float eps, int silu) {
    double s = 0.0, ss = 0.0;
    int64_t n = (int64_t)cg * hw;
    const float *xg = x + (int64_t)c0 * hw;
    for (int64_t i = 0; i < n; i++) s += xg[i];
    double mean = s / (double)n;
    for (int64_t i = 0; i < n; i++) { double d = xg[i] - mean; ss += d * d; }
    float m = (float)mean;
    float rstd = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (int c = c0; c < c0 + cg; c++) {
        float g = gamma ? gamma[c] : 1.0f, b = beta ? beta[c] : 0.0f;
        const float *xr = x + (int64_t)c * hw;
        float *o = out + (int64_t)c * hw;
        float a = rstd * g, bb = b - m * a;
        for (int64_t i = 0; i < hw; i++) o[i] = xr[i] * a + bb;
        if (silu) mmk_silu_inplace(o, hw);
    }
}

void mmk_groupnorm_ref(float *out, const float *x, const float *gamma, const float *beta, int channels,
                       int64_t hw, int groups, float eps, int silu) {
    int cg = channels / groups;
    for (int g = 0; g < groups; g++) {
        double s = 0.0, ss = 0.0;
        int64_t n = (int64_t)cg * hw;
        const float *xg = x + (int64_t)g * cg * hw;
        for (int64_t i = 0; i < n; i++) s += xg[i];
        double mean = s / (double)n;
        for (int64_t i = 0; i < n; i++) ss += (xg[i] - mean) * (xg[i] - mean);
        double rstd = 1.0 / sqrt(ss / (double)n + (double)eps);
        for (int c = g * cg; c < (g + 1) * cg; c++)
            for (int64_t i = 0; i < hw; i++) {
                double v = (x[(int64_t)c * hw + i] - mean) * rstd * (gamma ? gamma[c] : 1.0f) + (beta ? beta[c] : 0.0f);
                out[(int64_t)c * hw + i] = silu ? silu1((float)v) : (float)v;
            }
    }
}

void mmk_groupnorm(float *out, const float *x, const float *gamma, const float *beta, int channels,
                   int64_t hw, int groups, float eps, int silu, int nthreads) {
    if (groups <= 0 || channels % groups != 0) return;
    int nt = mmk_nt(nthreads), cg = channels / groups;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && (int64_t)channels * hw >= MMK_PAR_MIN_WORK)
    for (int g = 0; g < groups; g++) gn_group(out, x, gamma, beta, g * cg, cg, hw, eps, silu);
}

/* ---- upsample, silu, transpose --------------------------------------------------------- */

void mmk_upsample_nearest2x_ref(float *out, const float *x, int channels, int h, int w) {
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < 2 * h; y++)
            for (int xx = 0; xx < 2 * w; xx++)
                out[((int64_t)c * 2 * h + y) * 2 * w + xx] = x[((int64_t)c * h + y / 2) * w + xx / 2];
}

void mmk_upsample_nearest2x(float *out, const float *x, int channels, int h, int w, int nthreads) {
    int nt = mmk_nt(nthreads);
    int64_t rows = (int64_t)channels * h;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && rows * w * 4 >= MMK_PAR_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        const float *s = x + r * w;
        float *d0 = out + r * 4 * w, *d1 = d0 + 2 * w;
        for (int i = 0; i < w; i++) { d0[2 * i] = d0[2 * i + 1] = s[i]; }
        memcpy(d1, d0, (size_t)(2 * w) * sizeof(float));
    }
}

void mmk_silu_ref(float *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = silu1(x[i]); }

void mmk_silu(float *x, int64_t n, int nthreads) {
    int nt = mmk_nt(nthreads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && n >= MMK_PAR_MIN_WORK)
    for (int64_t c = 0; c < n; c += 4096) mmk_silu_inplace(x + c, n - c < 4096 ? n - c : 4096);
}

void mmk_transpose(float *out, const float *x, int64_t rows, int64_t cols, int nthreads) {
    int nt = mmk_nt(nthreads);
    const int64_t B = 32;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && rows * cols >= MMK_PAR_MIN_WORK)
    for (int64_t r0 = 0; r0 < rows; r0 += B)
        for (int64_t c0 = 0; c0 < cols; c0 += B)
            for (int64_t r = r0; r < r0 + B && r < rows; r++)
                for (int64_t c = c0; c < c0 + B && c < cols; c++) out[c * rows + r] = x[r * cols + c];
}

/* ---- attention through sgemm ------------------------------------------------------------ */

#define ATT_QB 128

void mmk_attention_gemm(float *out, const float *q, const float *k, const float *v,
                        int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                        int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale, int nthreads) {
    if (n_q <= 0 || n_kv <= 0 || n_heads <= 0 || head_dim <= 0) return;
    int nt = mmk_nt(nthreads);
    int64_t nqb = (n_q + ATT_QB - 1) / ATT_QB, total = nqb * n_heads;
    mmk_blas_set_threads(1);
#pragma omp parallel num_threads(nt) if (nt > 1 && total > 1)
    {
        float *S = malloc((size_t)ATT_QB * (size_t)n_kv * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t it = 0; it < total; it++) {
            int h = (int)(it % n_heads);
            int64_t i0 = (it / n_heads) * ATT_QB, m = n_q - i0 < ATT_QB ? n_q - i0 : ATT_QB;
            const float *qb = q + i0 * q_stride + (int64_t)h * head_dim;
            const float *kb = k + (int64_t)h * head_dim, *vb = v + (int64_t)h * head_dim;
            float *ob = out + i0 * out_stride + (int64_t)h * head_dim;
            if (!S) {
                mmk_attention_full_ref(ob, qb, kb, vb, m, n_kv, 1, head_dim, q_stride, kv_stride, out_stride, scale);
                continue;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)n_kv, head_dim, scale, qb, (int)q_stride,
                        kb, (int)kv_stride, 0.0f, S, (int)n_kv);
            for (int64_t i = 0; i < m; i++) {
                float *s = S + i * n_kv, mx = -INFINITY, sum = 0.0f;
                for (int64_t j = 0; j < n_kv; j++) if (s[j] > mx) mx = s[j];
                for (int64_t j = 0; j < n_kv; j++) s[j] -= mx;
                sum = mmk_exp_inplace_sum(s, n_kv);
                float inv = 1.0f / sum;
                for (int64_t j = 0; j < n_kv; j++) s[j] *= inv;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, head_dim, (int)n_kv, 1.0f, S, (int)n_kv,
                        vb, (int)kv_stride, 0.0f, ob, (int)out_stride);
        }
        free(S);
    }
}
