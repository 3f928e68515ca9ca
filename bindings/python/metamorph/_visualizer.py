"""The visualizer: visual tokens (numpy float32 [n, dim]) -> RGB pictures (numpy uint8 HxWx3)."""
import ctypes
from ctypes import POINTER, byref, c_float, c_void_p

from . import _native as N
from ._api import _Handle, _lib, _to_utf8
from .errors import check


class Visualizer(_Handle):
    """A visualizer directory (adapter + UNet + VAE + scheduler). Immutable; renders from
    several threads are serialised by the library."""

    _kind = "visualizer"

    def __init__(self, path):
        lib = _lib()
        out = c_void_p()
        check(lib, lib.mm_visualizer_load(_to_utf8(str(path), "path"), byref(out)))
        self._lib = lib
        self._handle = out.value

    def render(self, tokens, *, steps=None, guidance=None, seed=None, scheduler=None, latents=None,
               n_threads=0, on_progress=None, pil=False):
        """Render visual tokens (e.g. Result.images[i]). on_progress(step, n_steps) may return
        True to cancel. Returns numpy uint8 [height, width, 3] (a PIL image with pil=True)."""
        import numpy as np
        lib = self._lib
        t = np.ascontiguousarray(tokens, dtype=np.float32)
        if t.ndim != 2:
            raise ValueError("tokens must be a 2-D array [n_tokens, dim]")
        p = N.mm_render_params()
        lib.mm_render_params_init(byref(p))
        if steps is not None:
            p.steps = int(steps)
        if guidance is not None:
            p.guidance = float(guidance)
        if seed is not None:
            p.seed = int(seed)
        p.n_threads = int(n_threads)
        keep = []
        if scheduler is not None:
            b = _to_utf8(scheduler, "scheduler")
            keep.append(b)
            p.scheduler = b
        if latents is not None:
            lat = np.ascontiguousarray(latents, dtype=np.float32)
            keep.append(lat)
            p.latents = lat.ctypes.data_as(POINTER(c_float))
            p.n_latents = lat.size
        if on_progress is not None:
            cb = N.mm_progress_fn(lambda step, total, user: 1 if on_progress(step, total) else 0)
            keep.append(cb)
            p.on_progress = cb
        out = c_void_p()
        check(lib, lib.mm_visualizer_render(self._h(), t.ctypes.data_as(POINTER(c_float)), t.shape[0], t.shape[1],
                                            byref(p), byref(out)))
        try:
            w, h, stride = lib.mm_picture_width(out), lib.mm_picture_height(out), lib.mm_picture_stride(out)
            px = lib.mm_picture_pixels(out)
            buf = ctypes.string_at(px, stride * h)
            img = np.frombuffer(buf, dtype=np.uint8).reshape(h, stride)[:, :w * 3].reshape(h, w, 3).copy()
        finally:
            lib.mm_picture_free(out)
        if pil:
            from PIL import Image
            return Image.fromarray(img, "RGB")
        return img

    def close(self):
        h = self.__dict__.get("_handle")
        if h is not None:
            self._handle = None
            self._lib.mm_visualizer_free(h)
