/* PNG and JPEG files for the metamorph CLI, through the system's libpng and libjpeg-turbo.
 * Deliberately outside libmetamorph: the library takes pixels, never files. */
#ifndef MMIMAGEIO_H
#define MMIMAGEIO_H
#include <stddef.h>
#include <stdint.h>

/* Decode a PNG or JPEG (chosen by the file's magic bytes) into tightly packed RGB8 rows.
 * On success returns 0 and *rgb (free with free()), *width, *height. On failure returns
 * non-zero and writes a message into err[0..errlen). */
int mmio_load_rgb(const char *path, uint8_t **rgb, int *width, int *height, char *err, size_t errlen);

/* Write tightly packed RGB8 rows as a PNG. Returns 0, or non-zero with a message in err. */
int mmio_write_png(const char *path, const uint8_t *rgb, int width, int height, char *err, size_t errlen);

#endif
