/* MetamorphKernels: the hot loops of metamorph, plain C + OpenMP (+ OpenBLAS for large GEMMs).
 *
 * Private to the package: the public C API is include/metamorph.h at the top of the repository.
 * Kernels know nothing of models; they take pointers, shapes and a thread count.
 * Every fast kernel has a plain reference twin (suffix _ref) that is the oracle in tests.
 *
 * Conventions
 *  - Matrices are row-major. A weight W of a Linear(in=k, out=n) is stored [n][k] (PyTorch layout).
 *  - dtype codes: MMK_F32, MMK_F16 (IEEE half), MMK_BF16 (bfloat16). Weights are read in their
 *    stored dtype (memory-mapped checkpoints), activations are always float32.
 *  - nthreads <= 0 means "use 1".
 */
#ifndef MMKERNELS_H
#define MMKERNELS_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

enum { MMK_F32 = 0, MMK_F16 = 1, MMK_BF16 = 2 };

/* Bytes per element of a dtype code (0 for an unknown code). */
size_t mmk_dtype_size(int dtype);

/* dst[i] = (float)src[i] for i < n, src in `dtype`. */
void mmk_convert_to_f32(int dtype, const void *src, float *dst, int64_t n);
/* float32 -> f16 / bf16 (round to nearest even), used by tests and tools. */
void mmk_f32_to_f16(const float *src, uint16_t *dst, int64_t n);
void mmk_f32_to_bf16(const float *src, uint16_t *dst, int64_t n);

/* y[n] = W[n][k] . x[k]  (+ bias[n] when bias != NULL, bias is float32).
 * Decode path: OpenMP over rows, AVX2/FMA/F16C, streams W at memory bandwidth. */
void mmk_matvec(int dtype, const void *W, const float *bias, const float *x, float *y,
                int64_t n, int64_t k, int nthreads);
void mmk_matvec_ref(int dtype, const void *W, const float *bias, const float *x, float *y,
                    int64_t n, int64_t k);

/* Y[m][n] = X[m][k] . W[n][k]^T (+ bias[n]).  Prefill / batched path.
 * F32 weights go straight to OpenBLAS sgemm; F16/BF16 weights are converted block by block
 * into a scratch buffer (never the whole matrix) and multiplied with sgemm.
 * Small m falls back to matvec. */
void mmk_matmul(int dtype, const void *W, const float *bias, const float *X, float *Y,
                int64_t m, int64_t n, int64_t k, int nthreads);
void mmk_matmul_ref(int dtype, const void *W, const float *bias, const float *X, float *Y,
                    int64_t m, int64_t n, int64_t k);

/* RMSNorm over each of `rows` rows of length dim: out = x / sqrt(mean(x^2) + eps) * w
 * (w in `wdtype`; computed in float32 like transformers' LlamaRMSNorm, sum in double). out may equal x. */
void mmk_rmsnorm(float *out, const float *x, int wdtype, const void *w, int64_t rows, int64_t dim,
                 float eps, int nthreads);
void mmk_rmsnorm_ref(float *out, const float *x, int wdtype, const void *w, int64_t rows, int64_t dim,
                     float eps);

/* LayerNorm over rows (weight and bias in wdtype, may be NULL for none). out may equal x. */
void mmk_layernorm(float *out, const float *x, int wdtype, const void *w, const void *b,
                   int64_t rows, int64_t dim, float eps, int nthreads);
void mmk_layernorm_ref(float *out, const float *x, int wdtype, const void *w, const void *b,
                       int64_t rows, int64_t dim, float eps);

/* Rotary embedding, "rotate half" form of Hugging Face Llama, in place.
 * x: [n_tokens][n_heads][head_dim] (row stride n_heads*head_dim), token t is at position pos[t].
 * inv_freq: head_dim/2 floats. angle = (float)pos * inv_freq[i] in float32 (as torch does),
 * x1 = x[i], x2 = x[i + head_dim/2]:  x[i] = x1*cos - x2*sin ; x[i+half] = x2*cos + x1*sin. */
void mmk_rope(float *x, const int32_t *pos, int64_t n_tokens, int n_heads, int head_dim,
              const float *inv_freq, int nthreads);
void mmk_rope_ref(float *x, const int32_t *pos, int64_t n_tokens, int n_heads, int head_dim,
                  const float *inv_freq);

/* Causal grouped-query attention against a KV cache.
 * q:   [n_q][n_heads*head_dim]      query i sits at absolute position q_pos0 + i
 * k,v: [n_kv][n_kv_heads*head_dim]  rows 0..n_kv-1 of the cache (row stride kv_stride floats)
 * out: [n_q][n_heads*head_dim]
 * Query i attends to key rows 0..q_pos0+i (inclusive) and never beyond n_kv-1.
 * Head h uses kv head h / (n_heads / n_kv_heads). scores = q.k * scale, softmax in float32. */
void mmk_attention(float *out, const float *q, const float *k, const float *v,
                   int64_t n_q, int64_t q_pos0, int64_t n_kv, int n_heads, int n_kv_heads,
                   int head_dim, int64_t kv_stride, float scale, int nthreads);
void mmk_attention_ref(float *out, const float *q, const float *k, const float *v,
                       int64_t n_q, int64_t q_pos0, int64_t n_kv, int n_heads, int n_kv_heads,
                       int head_dim, int64_t kv_stride, float scale);

/* Bidirectional (non-causal) attention, for vision encoders: every query sees all n_kv keys. */
void mmk_attention_full(float *out, const float *q, const float *k, const float *v,
                        int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                        int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale, int nthreads);
/* Added: reference twin of mmk_attention_full (the oracle in tests). */
void mmk_attention_full_ref(float *out, const float *q, const float *k, const float *v,
                            int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                            int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale);

/* gate[i] = silu(gate[i]) * up[i]  (SwiGLU). */
void mmk_silu_mul(float *gate, const float *up, int64_t n, int nthreads);
/* x[i] = gelu(x[i]) exact erf form (torch GELU default). */
void mmk_gelu_erf(float *x, int64_t n, int nthreads);
/* GEGLU (diffusers' feed-forward): proj [rows][2 inner] = [hidden | gate] ->
 * out [rows][inner] = hidden * gelu_erf(gate). out must not overlap proj. The fast form uses a
 * vector erf within 3.9e-7 of erf (so |error| <= ~2e-7 |gate| |hidden|); _ref uses libm. */
void mmk_geglu(float *out, const float *proj, int64_t rows, int64_t inner, int nthreads);
void mmk_geglu_ref(float *out, const float *proj, int64_t rows, int64_t inner);
/* x[i] = gelu(x[i]) tanh approximation (gelu_pytorch_tanh). */
void mmk_gelu_tanh(float *x, int64_t n, int nthreads);
/* Added: single-threaded reference twins of the three activations above (same semantics). */
void mmk_silu_mul_ref(float *gate, const float *up, int64_t n);
void mmk_gelu_erf_ref(float *x, int64_t n);
void mmk_gelu_tanh_ref(float *x, int64_t n);
/* y[i] += x[i]. */
void mmk_add(float *y, const float *x, int64_t n, int nthreads);

/* Index of the maximum (first one on ties), for greedy decoding.
 * NaN entries are ignored; returns 0 when every entry is NaN and -1 when n <= 0. */
int64_t mmk_argmax(const float *x, int64_t n);

/* Limit OpenBLAS's own threads (it has a pthread pool separate from OpenMP). */
void mmk_blas_set_threads(int nthreads);

#ifdef __cplusplus
}
#endif
#endif

/* ---- vision (resize.c) ------------------------------------------------------------------- */
#ifdef __cplusplus
extern "C" {
#endif
/* Resize an 8-bit image (rows packed, `channels` interleaved samples per pixel) from sw x sh to
 * dw x dh exactly like Pillow's (<= 12) Image.resize(size, resample) for 8-bit modes without box or
 * reducing_gap (Pillow 13 sometimes runs the vertical pass first and can differ by a few levels): separable filter (horizontal pass, then vertical), support widened by the
 * downscale factor, 22-bit fixed-point weights, 8-bit intermediate with rounding and clipping.
 * resample uses Pillow's codes: 1 LANCZOS, 2 BILINEAR, 3 BICUBIC (a = -0.5), 4 BOX, 5 HAMMING
 * (0 NEAREST is not supported). Same size on both axes copies. Single-threaded.
 * Returns 0, -1 for bad sizes/pointers, -2 for an unsupported resample code, -3 out of memory. */
int mmk_resize_u8(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh, int resample);
/* The same on a pw x ph canvas filled with color[channels] with the sw x sh image pasted at (x0, y0),
 * without materialising the canvas (memory O(dw * ph)). */
int mmk_resize_u8_padded(const uint8_t *src, int sw, int sh, int channels, int pw, int ph, int x0, int y0,
                         const uint8_t *color, uint8_t *dst, int dw, int dh, int resample);
/* vision.c: mmk_attention_full computed per head and block of 64 queries as two sgemm calls with
 * a float32 row softmax between them (same contract; faster when n_kv is in the hundreds). */
void mmk_attention_full_gemm(float *out, const float *q, const float *k, const float *v,
                             int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                             int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale, int nthreads);
#ifdef __cplusplus
}
#endif

/* ---- visualizer: convolution, group norm, upsampling (conv.c) ----------------------------- */
#ifdef __cplusplus
extern "C" {
#endif
/* 2-D convolution of one NCHW image: in [cin][h][w] float32, weight [cout][cin][kh][kw] in wdtype
 * (PyTorch layout), bias float32 [cout] or NULL, out [cout][oh][ow] with
 * oh = (h + 2 pad - kh) / stride + 1 (same for ow), zero padding. 3x3 / stride 1 / pad 1
 * convolutions with enough channels and tiles go to mmk_conv2d_winograd3x3 (rule and
 * measurements in conv.c); everything else, and METAMORPH_CONV=im2col, is im2col (in chunks of
 * output rows, at most 32 MB of scratch) + OpenBLAS sgemm (single-threaded sgemm inside OpenMP
 * threads); F16/BF16 weights are widened per call. METAMORPH_CONV=winograd forces Winograd for
 * every 3x3 / stride 1 / pad 1 convolution. Returns 0, -1 for bad arguments, -3 out of memory. */
int mmk_conv2d(int wdtype, const void *w, const float *bias, const float *in, float *out,
               int cin, int h, int wd, int cout, int kh, int kw, int stride, int pad, int nthreads);
/* mmk_conv2d over nimg images stored back to back (in [nimg][cin][h][wd], out
 * [nimg][cout][oh][ow]): Winograd then convolves the whole batch with one weight transform and
 * longer GEMMs (what makes it pay on the UNet's 8x8 / 16x16 levels with the guidance pair). */
int mmk_conv2d_batch(int wdtype, const void *w, const float *bias, const float *in, float *out, int nimg,
                     int cin, int h, int wd, int cout, int kh, int kw, int stride, int pad, int nthreads);
void mmk_conv2d_ref(int wdtype, const void *w, const float *bias, const float *in, float *out,
                    int cin, int h, int wd, int cout, int kh, int kw, int stride, int pad);
/* The same convolution for kh = kw = 3, stride 1, pad 1 (out is [cout][h][wd]) by Winograd
 * F(2x2, 3x3): 16 sgemm calls of [cout x cin] x [cin x tiles] per chunk of 2x2 output tiles,
 * 2.25x fewer multiply-adds than im2col. Why it exists: these convolutions are most of the
 * Stable Diffusion UNet / VAE time. mmk_conv2d calls it by itself for such layers when the
 * channel counts and maps are large enough to win (see conv.c); call it directly only to
 * compare. Weights are transformed per call (F16/BF16 widened on the way); scratch is bounded
 * (chunks of tile rows, blocks of output channels; 11-50 MB for SD1.5's layers at 1-2 threads).
 * The _batch form convolves nimg images stored back to back (in [nimg][cin][h][wd], out
 * [nimg][cout][h][wd]) with one weight transform. Results differ from the direct sum by float32
 * rounding only (a few ulp of the magnitudes involved).
 * Returns 0, -1 for bad arguments, -3 out of memory. */
int mmk_conv2d_winograd3x3(int wdtype, const void *w, const float *bias, const float *in, float *out,
                           int cin, int cout, int h, int wd, int nthreads);
int mmk_conv2d_winograd3x3_batch(int wdtype, const void *w, const float *bias, const float *in, float *out,
                                 int nimg, int cin, int cout, int h, int wd, int nthreads);
/* GroupNorm of one image x [channels][hw] (torch.nn.GroupNorm: biased variance, statistics in
 * double), affine gamma/beta float32 [channels] (NULL = 1 / 0), then SiLU when silu != 0.
 * channels must be a multiple of groups. out may equal x. */
void mmk_groupnorm(float *out, const float *x, const float *gamma, const float *beta, int channels,
                   int64_t hw, int groups, float eps, int silu, int nthreads);
void mmk_groupnorm_ref(float *out, const float *x, const float *gamma, const float *beta, int channels,
                       int64_t hw, int groups, float eps, int silu);
/* Nearest-neighbour 2x upsampling: x [channels][h][w] -> out [channels][2h][2w]. */
void mmk_upsample_nearest2x(float *out, const float *x, int channels, int h, int w, int nthreads);
void mmk_upsample_nearest2x_ref(float *out, const float *x, int channels, int h, int w);
/* x[i] = x[i] * sigmoid(x[i]) in place. */
void mmk_silu(float *x, int64_t n, int nthreads);
void mmk_silu_ref(float *x, int64_t n);
/* out[cols][rows] = x[rows][cols]^T (out != x). */
void mmk_transpose(float *out, const float *x, int64_t rows, int64_t cols, int nthreads);
/* Same contract as mmk_attention_full, computed per head and block of 128 queries with two sgemm
 * calls (scores, then scores x V): for long sequences (UNet / VAE self-attention). */
void mmk_attention_gemm(float *out, const float *q, const float *k, const float *v,
                        int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                        int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale, int nthreads);
/* attention_tiled.c: same contract again, tiled with an online softmax (the score matrix is never
 * stored; keys packed once per call). The visualizer's attention: on SD1.5's layers 1.4-1.65x
 * (64x64 self-attention) and 1.1-1.6x (others) faster than mmk_attention_gemm. Needs AVX2/FMA and head_dim % 8 == 0, otherwise (or with
 * METAMORPH_ATTENTION=gemm, or when scratch cannot be allocated) it calls mmk_attention_gemm.
 * A row whose scores contain NaN or +inf comes out NaN, as in the reference. */
void mmk_attention_tiled(float *out, const float *q, const float *k, const float *v,
                         int64_t n_q, int64_t n_kv, int n_heads, int head_dim,
                         int64_t q_stride, int64_t kv_stride, int64_t out_stride, float scale, int nthreads);
#ifdef __cplusplus
}
#endif
