// PNG through libpng's simplified API; JPEG through libjpeg(-turbo) with an error manager that
// returns instead of exit()ing, so a broken file is a message, not a dead process.
#include "mmimageio.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

static int load_png(const char *path, uint8_t **rgb, int *w, int *h, char *err, size_t errlen) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path)) {
        snprintf(err, errlen, "%s: %s", path, img.message);
        return 1;
    }
    img.format = PNG_FORMAT_RGB;
    size_t size = PNG_IMAGE_SIZE(img);
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) { png_image_free(&img); snprintf(err, errlen, "%s: out of memory", path); return 1; }
    if (!png_image_finish_read(&img, NULL, buf, 0, NULL)) {
        snprintf(err, errlen, "%s: %s", path, img.message);
        free(buf);
        png_image_free(&img);
        return 1;
    }
    *rgb = buf; *w = (int)img.width; *h = (int)img.height;
    return 0;
}

struct jpeg_err { struct jpeg_error_mgr mgr; jmp_buf jump; char msg[JMSG_LENGTH_MAX]; };
static void jpeg_fail(j_common_ptr c) {
    struct jpeg_err *e = (struct jpeg_err *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jump, 1);
}
static void jpeg_quiet(j_common_ptr c) { (void)c; }

static int load_jpeg(const char *path, uint8_t **rgb, int *w, int *h, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "%s: cannot open", path); return 1; }
    struct jpeg_decompress_struct d;
    struct jpeg_err je;
    uint8_t *volatile buf = NULL;
    d.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_fail;
    je.mgr.output_message = jpeg_quiet;
    if (setjmp(je.jump)) {
        snprintf(err, errlen, "%s: %s", path, je.msg);
        jpeg_destroy_decompress(&d);
        fclose(f);
        free(buf);
        return 1;
    }
    jpeg_create_decompress(&d);
    jpeg_stdio_src(&d, f);
    jpeg_read_header(&d, TRUE);
    d.out_color_space = JCS_RGB;
    jpeg_start_decompress(&d);
    size_t stride = (size_t)d.output_width * 3;
    buf = malloc(stride * d.output_height + 1);
    if (!buf) { snprintf(err, errlen, "%s: out of memory", path); jpeg_destroy_decompress(&d); fclose(f); return 1; }
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = buf + stride * d.output_scanline;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    *w = (int)d.output_width; *h = (int)d.output_height;
    jpeg_destroy_decompress(&d);
    fclose(f);
    *rgb = buf;
    return 0;
}

int mmio_load_rgb(const char *path, uint8_t **rgb, int *width, int *height, char *err, size_t errlen) {
    unsigned char magic[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) { snprintf(err, errlen, "%s: cannot open", path); return 1; }
    size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    if (n >= 8 && png_sig_cmp(magic, 0, 8) == 0) return load_png(path, rgb, width, height, err, errlen);
    if (n >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) return load_jpeg(path, rgb, width, height, err, errlen);
    snprintf(err, errlen, "%s: not a PNG or JPEG file", path);
    return 1;
}

int mmio_write_png(const char *path, const uint8_t *rgb, int width, int height, char *err, size_t errlen) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)width;
    img.height = (png_uint_32)height;
    img.format = PNG_FORMAT_RGB;
    if (!png_image_write_to_file(&img, path, 0, rgb, 0, NULL)) {
        snprintf(err, errlen, "%s: %s", path, img.message);
        return 1;
    }
    return 0;
}
