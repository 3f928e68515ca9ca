/* Image resampling with the semantics of Pillow's Image.resize for 8-bit images (no box, no
 * reducing_gap): a separable convolution, horizontal pass first then vertical, each output sample
 * a weighted sum over the source pixels under a filter whose support is widened by the downscale
 * factor (so shrinking antialiases). Weights are computed in double, normalised to sum 1, then
 * turned into 22-bit fixed point; sums start at half an output unit and are clipped to 0..255.
 * The intermediate image after the horizontal pass is 8-bit, as in Pillow.
 * Written from the published description of the algorithm; this file holds no Pillow code. */
#include <math.h>
#include <stdlib.h>
#include "mmk_internal.h"

#define RS_BITS 22  /* 32 - 8 - 2: headroom for 8-bit samples times negative-lobed weights */

static double f_box(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
static double f_triangle(double x) { x = fabs(x); return x < 1.0 ? 1.0 - x : 0.0; }
static double f_hamming(double x) {
    x = fabs(x);
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * M_PI;
    return sin(x) / x * (0.54 + 0.46 * cos(x));
}
static double f_cubic(double x) {   /* Keys cubic, a = -0.5 */
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}
static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}
static double f_lanczos(double x) {  /* a = 3 */
    if (-3.0 <= x && x < 3.0) return sinc(x) * sinc(x / 3.0);
    return 0.0;
}

typedef struct { double (*fn)(double); double support; } rs_filter;

static int rs_get_filter(int resample, rs_filter *f) {
    switch (resample) {
    case 1: f->fn = f_lanczos; f->support = 3.0; return 0;  /* LANCZOS */
    case 2: f->fn = f_triangle; f->support = 1.0; return 0; /* BILINEAR */
    case 3: f->fn = f_cubic; f->support = 2.0; return 0;    /* BICUBIC */
    case 4: f->fn = f_box; f->support = 0.5; return 0;      /* BOX */
    case 5: f->fn = f_hamming; f->support = 1.0; return 0;  /* HAMMING */
    default: return -1;
    }
}

/* For every output index: first source index, tap count, and `ksize` fixed-point weights. */
typedef struct { int ksize; int *start; int *count; int32_t *w; } rs_taps;

static void rs_taps_free(rs_taps *t) { free(t->start); free(t->count); free(t->w); }

static int rs_taps_make(rs_taps *t, int in_size, int out_size, const rs_filter *f) {
    double scale = (double)in_size / out_size;
    double fscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * fscale;
    int ksize = (int)ceil(support) * 2 + 1;
    t->ksize = ksize;
    t->start = malloc(sizeof(int) * (size_t)out_size);
    t->count = malloc(sizeof(int) * (size_t)out_size);
    t->w = malloc(sizeof(int32_t) * (size_t)out_size * (size_t)ksize);
    double *k = malloc(sizeof(double) * (size_t)ksize);
    if (!t->start || !t->count || !t->w || !k) { free(k); rs_taps_free(t); return -1; }
    double inv = 1.0 / fscale;
    for (int o = 0; o < out_size; o++) {
        double center = (o + 0.5) * scale;
        int lo = (int)(center - support + 0.5);     /* truncation toward zero, then clamp */
        if (lo < 0) lo = 0;
        int hi = (int)(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            double v = f->fn((i + lo - center + 0.5) * inv);
            k[i] = v;
            sum += v;
        }
        int32_t *wo = t->w + (size_t)o * ksize;
        for (int i = 0; i < ksize; i++) {
            double v = i < n ? (sum != 0.0 ? k[i] / sum : k[i]) : 0.0;
            double s = v * (double)(1 << RS_BITS);
            wo[i] = (int32_t)(v < 0 ? -0.5 + s : 0.5 + s);
        }
        t->start[o] = lo;
        t->count[o] = n < 0 ? 0 : n;
    }
    free(k);
    return 0;
}

static inline uint8_t rs_clip8(int64_t v) {
    if (v <= 0) return 0;
    if (v >= ((int64_t)256 << RS_BITS)) return 255;
    return (uint8_t)(v >> RS_BITS);
}

/* The source seen through an optional padding canvas: the image (sw x sh) pasted at (x0, y0) on a
 * pw x ph canvas filled with `color`. Rows are produced on demand so a padded canvas is never
 * materialised (an 8000x1 image padded to 8000x8000 would otherwise need 192 MB). */
typedef struct {
    const uint8_t *src; int sw, sh, ch;
    int pw, ph, x0, y0; const uint8_t *color;
    uint8_t *rowbuf;    /* pw * ch bytes when padding, else NULL */
} rs_source;

static const uint8_t *rs_row(const rs_source *s, int y) {
    if (!s->rowbuf) return s->src + (size_t)y * s->sw * s->ch;
    int ch = s->ch;
    uint8_t *b = s->rowbuf;
    int inside = y >= s->y0 && y < s->y0 + s->sh;
    for (int x = 0; x < s->pw; x++) {
        if (inside && x == s->x0) {
            memcpy(b + (size_t)x * ch, s->src + (size_t)(y - s->y0) * s->sw * ch, (size_t)s->sw * ch);
            x += s->sw - 1;
            continue;
        }
        for (int c = 0; c < ch; c++) b[(size_t)x * ch + c] = s->color[c];
    }
    return b;
}

/* Rows y0..y1-1 of the source -> dst (dw wide, row 0 = source row y0). t == NULL copies. */
static void rs_horizontal(const rs_source *s, int y0, int y1, uint8_t *dst, int dw, const rs_taps *t) {
    int ch = s->ch;
    for (int y = y0; y < y1; y++) {
        const uint8_t *row = rs_row(s, y);
        uint8_t *out = dst + (size_t)(y - y0) * dw * ch;
        if (!t) { memcpy(out, row, (size_t)dw * ch); continue; }
        for (int x = 0; x < dw; x++) {
            const int32_t *w = t->w + (size_t)x * t->ksize;
            const uint8_t *p = row + (size_t)t->start[x] * ch;
            int n = t->count[x];
            for (int c = 0; c < ch; c++) {
                int64_t acc = (int64_t)1 << (RS_BITS - 1);
                for (int i = 0; i < n; i++) acc += (int64_t)p[(size_t)i * ch + c] * w[i];
                out[(size_t)x * ch + c] = rs_clip8(acc);
            }
        }
    }
}

/* src has rows starting at source row `row0`; dst is w x dh. */
static void rs_vertical(const uint8_t *src, int row0, int w, int ch, uint8_t *dst, int dh, const rs_taps *t) {
    size_t stride = (size_t)w * ch;
    for (int y = 0; y < dh; y++) {
        const int32_t *wt = t->w + (size_t)y * t->ksize;
        const uint8_t *base = src + (size_t)(t->start[y] - row0) * stride;
        int n = t->count[y];
        uint8_t *out = dst + (size_t)y * stride;
        for (size_t j = 0; j < stride; j++) {
            int64_t a = (int64_t)1 << (RS_BITS - 1);
            for (int i = 0; i < n; i++) a += (int64_t)base[(size_t)i * stride + j] * wt[i];
            out[j] = rs_clip8(a);
        }
    }
}

static int rs_resize(rs_source *s, uint8_t *dst, int dw, int dh, int resample) {
    rs_filter f;
    int sw = s->pw, sh = s->ph, ch = s->ch;
    if (rs_get_filter(resample, &f) != 0) return -2;
    int need_h = dw != sw, need_v = dh != sh;
    rs_taps th = {0}, tv = {0};
    int rc = 0;
    if (need_v && rs_taps_make(&tv, sh, dh, &f) != 0) return -3;
    if (need_h && rs_taps_make(&th, sw, dw, &f) != 0) { rs_taps_free(&tv); return -3; }
    if (!need_v) {
        rs_horizontal(s, 0, sh, dst, dw, need_h ? &th : NULL);
    } else if (!need_h && !s->rowbuf) {
        rs_vertical(s->src, 0, sw, ch, dst, dh, &tv);
    } else {
        /* Only the source rows the vertical pass reads go through the horizontal pass. */
        int y0 = tv.start[0], y1 = tv.start[0] + tv.count[0];
        for (int y = 1; y < dh; y++) {
            if (tv.start[y] < y0) y0 = tv.start[y];
            if (tv.start[y] + tv.count[y] > y1) y1 = tv.start[y] + tv.count[y];
        }
        uint8_t *tmp = malloc((size_t)dw * ch * (size_t)(y1 - y0 > 0 ? y1 - y0 : 1));
        if (!tmp) rc = -3;
        else {
            rs_horizontal(s, y0, y1, tmp, dw, need_h ? &th : NULL);
            rs_vertical(tmp, y0, dw, ch, dst, dh, &tv);
            free(tmp);
        }
    }
    rs_taps_free(&th);
    rs_taps_free(&tv);
    return rc;
}

int mmk_resize_u8(const uint8_t *src, int sw, int sh, int channels, uint8_t *dst, int dw, int dh, int resample) {
    if (!src || !dst || sw <= 0 || sh <= 0 || dw <= 0 || dh <= 0 || channels <= 0) return -1;
    rs_source s = {src, sw, sh, channels, sw, sh, 0, 0, NULL, NULL};
    return rs_resize(&s, dst, dw, dh, resample);
}

int mmk_resize_u8_padded(const uint8_t *src, int sw, int sh, int channels, int pw, int ph, int x0, int y0,
                         const uint8_t *color, uint8_t *dst, int dw, int dh, int resample) {
    if (!src || !dst || !color || sw <= 0 || sh <= 0 || dw <= 0 || dh <= 0 || channels <= 0) return -1;
    if (x0 < 0 || y0 < 0 || pw < sw || ph < sh || x0 > pw - sw || y0 > ph - sh) return -1;
    rs_source s = {src, sw, sh, channels, pw, ph, x0, y0, color, NULL};
    if (pw == sw && ph == sh) return rs_resize(&s, dst, dw, dh, resample);
    s.rowbuf = malloc((size_t)pw * channels);
    if (!s.rowbuf) return -3;
    int rc;
    if (dw == pw && dh == ph) {      /* no resize: just the canvas */
        for (int y = 0; y < ph; y++) memcpy(dst + (size_t)y * pw * channels, rs_row(&s, y), (size_t)pw * channels);
        rc = 0;
    } else {
        rc = rs_resize(&s, dst, dw, dh, resample);
    }
    free(s.rowbuf);
    return rc;
}
