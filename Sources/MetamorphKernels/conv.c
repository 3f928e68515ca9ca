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

static int conv2d_im2col(int wdtype, const void *w, const float *bias, const float *in, float *out,
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

/* ---- Winograd F(2x2, 3x3) ------------------------------------------------------------------
 * Why: 3x3 / stride 1 / padding 1 convolutions are most of the work of the Stable Diffusion UNet
 * and VAE decoder, and im2col + sgemm spends 9 multiply-adds per (input channel, output channel,
 * output pixel). Winograd's minimal filtering algorithm F(2x2, 3x3) makes each 2x2 block of
 * outputs from the 4x4 input patch around it with 16 products per channel pair instead of 36:
 *
 *   Y = A^T [ (G g G^T) .* (B^T d B) ] A        (.* elementwise, per 4x4 tile)
 *
 *   B^T = | 1  0 -1  0 |    G = | 1    0    0  |    A^T = | 1  1  1  0 |
 *         | 0  1  1  0 |        | 1/2  1/2  1/2 |          | 0  1 -1 -1 |
 *         | 0 -1  1  0 |        | 1/2 -1/2  1/2 |
 *         | 0  1  0 -1 |        | 0    0    1  |
 *
 * Summed over input channels, the elementwise products become 16 independent GEMMs
 * M_k[cout][tiles] = U_k[cout][cin] . V_k[cin][tiles] (k = the 16 positions of a tile), which
 * go to OpenBLAS: 2.25x fewer GEMM flops than im2col, no 9x im2col copy of the input. The
 * transforms only add, subtract and halve, so the result stays within a few float32 ulp of
 * the direct sum times the magnitudes involved (F(4x4, 3x3) would save more flops but its
 * transforms amplify rounding error by about an order of magnitude: not worth it for parity).
 *
 * Layouts: tiles are numbered by tile row (over all images of the batch, then ty) and tile
 * column tx; tile (ty, tx) covers output rows 2ty, 2ty+1 and columns 2tx, 2tx+1, reading input
 * rows 2ty-1 .. 2ty+2 and columns 2tx-1 .. 2tx+2 (zero outside: the padding). Odd sizes get a
 * partial last tile whose missing outputs are simply not stored.
 *   V[k][c][t]  transformed input of one chunk of tile rows, shared by the threads
 *   U[k][o][c]  transformed weights of one block of a thread's output channels
 *   M[k][o][t]  that block's GEMM products, turned into outputs by A^T m A
 * Threads split the output channels: after the input transform of a chunk (split by input
 * channel) each thread transforms, multiplies and writes out its own channels, so its U and M
 * stay in its cache and there is one barrier per chunk. */

/* Scratch bounds, measured on the 2-core EPYC with SD1.5 shapes (2x to 4x smaller or larger
 * costs 5-20%): V plus every thread's M for one chunk of tile rows within WINO_CHUNK_FLOATS
 * (16 MB; at least one tile row), each thread's U within WINO_UBLK_FLOATS (16 MB; at least 16
 * output channels). Larger U blocks give sgemm more rows per call. A thread whose channels need
 * several blocks (cin * cout / threads > 256K, the UNet's 640+ channel layers) re-transforms
 * its weights for every chunk: a few percent of the chunk's GEMMs, and on 8x8 / 16x16 maps the
 * whole batch is one chunk. 11-50 MB in all for SD1.5's layers at 1 or 2 threads. */
#ifndef WINO_CHUNK_FLOATS
#define WINO_CHUNK_FLOATS ((int64_t)4 << 20)
#endif
#ifndef WINO_UBLK_FLOATS
#define WINO_UBLK_FLOATS ((int64_t)4 << 20)
#endif

/* U[k][r][c] (k stride ks) = G g G^T for output channel o (row r of the block), every c.
 * Out of line: inlined at its two call sites, clang vectorised only one copy of the loop. */
static __attribute__((noinline)) void wino_weights(int wdtype, const void *w, int64_t o, int cin, float *tmp,
                                                   float *U, int64_t r, int64_t ks) {
    const float *g = (const float *)w + o * cin * 9;
    if (wdtype != MMK_F32) {
        mmk_convert_to_f32(wdtype, (const char *)w + (size_t)o * (size_t)cin * 9 * mmk_dtype_size(wdtype), tmp,
                           (int64_t)cin * 9);
        g = tmp;
    }
    float *u = U + r * cin;
    /* omp simd: U never overlaps the weights, which the compiler cannot prove */
#pragma omp simd
    for (int c = 0; c < cin; c++) {
        const float *q = g + (int64_t)c * 9;
        float a[4][3];
        for (int j = 0; j < 3; j++) { /* G g: rows of the 4x3 intermediate */
            a[0][j] = q[j];
            a[1][j] = 0.5f * (q[j] + q[3 + j] + q[6 + j]);
            a[2][j] = 0.5f * (q[j] - q[3 + j] + q[6 + j]);
            a[3][j] = q[6 + j];
        }
        for (int i = 0; i < 4; i++) { /* (G g) G^T */
            u[(4 * i + 0) * ks + c] = a[i][0];
            u[(4 * i + 1) * ks + c] = 0.5f * (a[i][0] + a[i][1] + a[i][2]);
            u[(4 * i + 2) * ks + c] = 0.5f * (a[i][0] - a[i][1] + a[i][2]);
            u[(4 * i + 3) * ks + c] = a[i][2];
        }
    }
}

/* V[k][c][t] (k stride ks, t from 0 for tile row g0) = B^T d B for channel c and tile rows
 * g0 <= g < g1. eo: scratch of 8 * (tw + 1) floats. Each input row is first copied with its
 * zero padding and split into even and odd padded columns, so that every tile reads
 * E[tx], O[tx], E[tx+1], O[tx+1]: unit strides the compiler vectorises across tiles. */
static void wino_input(const float *in, float *V, float *eo, int c, int cin, int h, int wd, int th, int tw,
                       int64_t g0, int64_t g1, int64_t tc, int64_t ks) {
    float *E[4], *O[4];
    for (int r = 0; r < 4; r++) { E[r] = eo + (int64_t)(2 * r) * (tw + 1); O[r] = E[r] + tw + 1; }
    for (int64_t g = g0; g < g1; g++) {
        int64_t img = g / th;
        int ty = (int)(g % th);
        const float *src = in + (img * cin + c) * (int64_t)h * wd;
        for (int r = 0; r < 4; r++) {
            int iy = 2 * ty - 1 + r;
            /* padded column p = ix + 1: E[q] = P[2q] = x[2q - 1], O[q] = P[2q + 1] = x[2q] */
            if (iy < 0 || iy >= h) {
                memset(E[r], 0, (size_t)(tw + 1) * sizeof(float));
                memset(O[r], 0, (size_t)(tw + 1) * sizeof(float));
                continue;
            }
            const float *s = src + (int64_t)iy * wd;
            E[r][0] = 0.0f;
            for (int q = 0; 2 * q + 1 < wd; q++) { O[r][q] = s[2 * q]; E[r][q + 1] = s[2 * q + 1]; }
            if (wd & 1) { O[r][tw - 1] = s[wd - 1]; E[r][tw] = 0.0f; }
            O[r][tw] = 0.0f;
        }
        float *v = V + c * tc + (g - g0) * tw;
        const float *e0 = E[0], *e1 = E[1], *e2 = E[2], *e3 = E[3];
        const float *o0 = O[0], *o1 = O[1], *o2 = O[2], *o3 = O[3];
        /* omp simd: the 16 output rows never overlap the scratch rows, which the compiler cannot
         * prove (it would not vectorise otherwise). */
#pragma omp simd
        for (int x = 0; x < tw; x++) {
            /* B^T d: rows; then (B^T d) B: columns, per 4x4 tile */
            float d[4][4] = {{e0[x], o0[x], e0[x + 1], o0[x + 1]},
                             {e1[x], o1[x], e1[x + 1], o1[x + 1]},
                             {e2[x], o2[x], e2[x + 1], o2[x + 1]},
                             {e3[x], o3[x], e3[x + 1], o3[x + 1]}};
            float b[4][4];
            for (int j = 0; j < 4; j++) {
                b[0][j] = d[0][j] - d[2][j];
                b[1][j] = d[1][j] + d[2][j];
                b[2][j] = d[2][j] - d[1][j];
                b[3][j] = d[1][j] - d[3][j];
            }
            for (int i = 0; i < 4; i++) {
                v[(4 * i + 0) * ks + x] = b[i][0] - b[i][2];
                v[(4 * i + 1) * ks + x] = b[i][1] + b[i][2];
                v[(4 * i + 2) * ks + x] = b[i][2] - b[i][1];
                v[(4 * i + 3) * ks + x] = b[i][1] - b[i][3];
            }
        }
    }
}

/* Output channel o (row r of the block) for tile rows g0 <= g < g1: y = A^T m A + bias, from
 * M[k][r][t] (k stride ks). yrow: scratch of 4 * tw floats (two interleaved output rows). */
static void wino_output(const float *M, float *out, float *yrow, int64_t o, int64_t r, float bias, int cout,
                        int h, int wd, int th, int tw, int64_t g0, int64_t g1, int64_t tc, int64_t ks) {
    float *y0 = yrow, *y1 = yrow + 2 * tw;
    for (int64_t g = g0; g < g1; g++) {
        int64_t img = g / th;
        int ty = (int)(g % th);
        const float *m = M + r * tc + (g - g0) * tw;
        /* omp simd: the scratch output rows never overlap M (as in wino_input) */
#pragma omp simd
        for (int x = 0; x < tw; x++) {
            float a[4][2];
            for (int i = 0; i < 4; i++) { /* m A: columns */
                float m0 = m[(4 * i + 0) * ks + x], m1 = m[(4 * i + 1) * ks + x];
                float m2 = m[(4 * i + 2) * ks + x], m3 = m[(4 * i + 3) * ks + x];
                a[i][0] = m0 + m1 + m2;
                a[i][1] = m1 - m2 - m3;
            }
            /* A^T (m A): rows */
            y0[2 * x] = bias + a[0][0] + a[1][0] + a[2][0];
            y0[2 * x + 1] = bias + a[0][1] + a[1][1] + a[2][1];
            y1[2 * x] = bias + a[1][0] - a[2][0] - a[3][0];
            y1[2 * x + 1] = bias + a[1][1] - a[2][1] - a[3][1];
        }
        float *dst = out + (img * cout + o) * (int64_t)h * wd + (int64_t)(2 * ty) * wd;
        memcpy(dst, y0, (size_t)wd * sizeof(float));
        if (2 * ty + 1 < h) memcpy(dst + wd, y1, (size_t)wd * sizeof(float));
    }
}

int mmk_conv2d_winograd3x3_batch(int wdtype, const void *w, const float *bias, const float *in, float *out,
                                 int nimg, int cin, int cout, int h, int wd, int nthreads) {
    if (mmk_dtype_size(wdtype) == 0 || nimg <= 0 || cin <= 0 || cout <= 0 || h <= 0 || wd <= 0) return -1;
    int nt = mmk_nt(nthreads);
    if (nt > cout) nt = cout;
    int th = (h + 1) / 2, tw = (wd + 1) / 2;
    int64_t rows_total = (int64_t)nimg * th;
    /* Threads split the output channels; each walks its share in blocks of ob channels (equal
     * blocks) whose transformed weights (16 ob cin floats) stay in its cache between the
     * transform and the 16 GEMMs. */
    int64_t per = (cout + nt - 1) / nt;
    int64_t ob = WINO_UBLK_FLOATS / (16 * (int64_t)cin);
    if (ob < 16) ob = 16;
    if (ob > per) ob = per;
    int64_t nsub = (per + ob - 1) / ob;
    ob = (per + nsub - 1) / nsub;
    /* Chunk of tile rows: V + every thread's M within WINO_CHUNK_FLOATS (at least one tile row),
     * chunks of equal size. */
    int64_t row_floats = 16 * ((int64_t)cin + nt * ob) * tw;
    int64_t cr = WINO_CHUNK_FLOATS / row_floats;
    /* When the weights are re-transformed per chunk (several blocks per thread: wide layers on
     * small maps), a second chunk costs a whole weight transform: allow up to twice the budget
     * to make it one chunk. */
    if (ob < per && cr < rows_total && rows_total * row_floats <= 2 * WINO_CHUNK_FLOATS) cr = rows_total;
    if (cr < 1) cr = 1;
    if (cr > rows_total) cr = rows_total;
    int64_t nchunk = (rows_total + cr - 1) / cr;
    cr = (rows_total + nchunk - 1) / nchunk;
    int64_t tcmax = cr * tw;
    /* per thread: U and M of one block, a weight row widened to f32, padded input rows, output rows */
    int64_t rowbuf = 8 * ((int64_t)tw + 1) + 4 * (int64_t)tw;
    if (wdtype != MMK_F32 && (int64_t)cin * 9 > rowbuf) rowbuf = (int64_t)cin * 9;
    int64_t per_thread = 16 * ob * cin + 16 * ob * tcmax + rowbuf;
    per_thread = (per_thread + 15) & ~(int64_t)15; /* threads' scratch on separate cache lines */
    float *V = malloc((size_t)(16 * (int64_t)cin * tcmax) * sizeof(float));
    float *S = malloc((size_t)(per_thread * nt) * sizeof(float));
    if (!V || !S) { free(V); free(S); return -3; }
    /* Like mmk_conv2d: single-threaded OpenBLAS inside our OpenMP threads, one thread pool. */
    mmk_blas_set_threads(1);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num(), c = omp_get_num_threads();
#else
        int t = 0, c = 1;
#endif
        float *U = S + per_thread * t, *M = U + 16 * ob * cin, *scr = M + 16 * ob * tcmax;
        int64_t ra = (int64_t)cout * t / c, rb = (int64_t)cout * (t + 1) / c;
        /* one block per thread: transform its weights once for all chunks */
        int resident = rb - ra <= ob;
        if (resident)
            for (int64_t o = ra; o < rb; o++) wino_weights(wdtype, w, o, cin, scr, U, o - ra, (rb - ra) * cin);
        for (int64_t g0 = 0; g0 < rows_total; g0 += cr) {
            int64_t g1 = g0 + cr < rows_total ? g0 + cr : rows_total, tc = (g1 - g0) * tw;
            int64_t vks = (int64_t)cin * tc;
#pragma omp for schedule(static)
            for (int ch = 0; ch < cin; ch++) wino_input(in, V, scr, ch, cin, h, wd, th, tw, g0, g1, tc, vks);
            for (int64_t o0 = ra; o0 < rb; o0 += ob) {
                int64_t nb = rb - o0 < ob ? rb - o0 : ob, uks = nb * cin, mks = nb * tc;
                if (!resident)
                    for (int64_t o = o0; o < o0 + nb; o++) wino_weights(wdtype, w, o, cin, scr, U, o - o0, uks);
                for (int k = 0; k < 16; k++)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nb, (int)tc, cin, 1.0f, U + k * uks,
                                cin, V + k * vks, (int)tc, 0.0f, M + k * mks, (int)tc);
                for (int64_t o = o0; o < o0 + nb; o++)
                    wino_output(M, out, scr, o, o - o0, bias ? bias[o] : 0.0f, cout, h, wd, th, tw, g0, g1, tc, mks);
            }
            /* V is overwritten by the next chunk only after every thread is done with it */
#pragma omp barrier
        }
    }
    free(V); free(S);
    return 0;
}

int mmk_conv2d_winograd3x3(int wdtype, const void *w, const float *bias, const float *in, float *out,
                           int cin, int cout, int h, int wd, int nthreads) {
    return mmk_conv2d_winograd3x3_batch(wdtype, w, bias, in, out, 1, cin, cout, h, wd, nthreads);
}

/* ---- conv2d: choice of algorithm -------------------------------------------------------- */

/* METAMORPH_CONV=im2col forces im2col + sgemm for every convolution (A/B benchmarks, bisecting
 * a numerical difference); METAMORPH_CONV=winograd takes Winograd for every 3x3 / stride 1 /
 * pad 1 convolution however small (so the tiny parity models exercise it). Read per call: a
 * few hundred calls per UNet evaluation, and tests can switch it with setenv. */
static int conv_mode(void) {
    const char *e = getenv("METAMORPH_CONV");
    if (!e) return 0;
    if (!strcmp(e, "im2col")) return 1;
    if (!strcmp(e, "winograd")) return 2;
    return 0;
}

/* Where Winograd wins, measured against im2col on the 2-core EPYC (tools: conv A/B in
 * docs/visualizer.md): from 64 input channels and 64 tiles (a 16x16 map per image) it is
 * 1.1-1.4x faster on 16x16 maps and 1.8-2.1x on 32x32 and larger; with 32 tiles (the 8x8 UNet
 * level, batch 2) only the 1280/2560-channel layers gain (1.1-1.3x), 320/640 channels break
 * even; 16 tiles lose (0.6-0.8x) because the weight transform is not amortised; 4 input
 * channels (conv_in) lose 2x because the transforms outweigh a K = 4 GEMM. Few output channels
 * are fine (conv_out 320 -> 4 and 128 -> 3 gain 1.4-2.4x). */
static int wino_pays(int nimg, int cin, int h, int wd) {
    int64_t tiles = (int64_t)nimg * ((h + 1) / 2) * ((wd + 1) / 2);
    return cin >= 64 && (tiles >= 64 || (tiles >= 32 && cin >= 1024));
}

int mmk_conv2d_batch(int wdtype, const void *w, const float *bias, const float *in, float *out, int nimg,
                     int cin, int h, int wd, int cout, int kh, int kw, int stride, int pad, int nthreads) {
    if (nimg <= 0) return -1;
    int mode = conv_mode();
    if (kh == 3 && kw == 3 && stride == 1 && pad == 1 && mode != 1 && (mode == 2 || wino_pays(nimg, cin, h, wd))) {
        int r = mmk_conv2d_winograd3x3_batch(wdtype, w, bias, in, out, nimg, cin, cout, h, wd, nthreads);
        if (r != -3) return r;
        /* out of memory for Winograd's scratch: im2col needs less */
    }
    if (stride <= 0) return -1;
    int oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1;
    if (oh <= 0 || ow <= 0) return -1;
    for (int i = 0; i < nimg; i++) {
        int r = conv2d_im2col(wdtype, w, bias, in + (int64_t)i * cin * h * wd, out + (int64_t)i * cout * oh * ow, cin,
                              h, wd, cout, kh, kw, stride, pad, nthreads);
        if (r) return r;
    }
    return 0;
}

int mmk_conv2d(int wdtype, const void *w, const float *bias, const float *in, float *out,
               int cin, int h, int wd, int cout, int kh, int kw, int stride, int pad, int nthreads) {
    return mmk_conv2d_batch(wdtype, w, bias, in, out, 1, cin, h, wd, cout, kh, kw, stride, pad, nthreads);
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
