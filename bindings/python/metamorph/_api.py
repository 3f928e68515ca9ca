"""The Python API of metamorph: Tokenizer, Model, Session, Stream and Result."""
import ctypes
import sys
import threading
import time
import weakref
from ctypes import POINTER, byref, c_char, c_char_p, c_int32, c_size_t, c_uint8, c_void_p
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import _native as N
from .errors import (BusyError, ClosedError, InvalidArgumentError, MetamorphError, OutOfRangeError,
                     UnsupportedError, check, error_for)

STOP_REASONS = {
    N.MM_STOP_NONE: "none",
    N.MM_STOP_EOS: "eos",
    N.MM_STOP_MAX_TOKENS: "max_tokens",
    N.MM_STOP_STRING: "stop_string",
    N.MM_STOP_CANCELLED: "cancelled",
    N.MM_STOP_ERROR: "error",
    N.MM_STOP_CONTEXT_FULL: "context_full",
}

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _lib():
    return N.load()


def _to_utf8(text, what="text"):
    """str -> UTF-8 bytes (lone surrogates pass through so the library reports them as invalid
    UTF-8); bytes-like objects are passed unchanged so hosts can hand over raw bytes."""
    if isinstance(text, str):
        return text.encode("utf-8", "surrogatepass")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"{what} must be str or bytes, not {type(text).__name__}")


def _int32(value, what):
    v = int(value)
    if not _INT32_MIN <= v <= _INT32_MAX:
        raise InvalidArgumentError(f"{what} = {v} does not fit in int32", status=N.MM_ERR_INVALID_ARGUMENT)
    return v


def _id_array(ids, what="ids"):
    """A sequence of token ids (list, tuple, numpy array) -> (c_int32 array, n, keepalive)."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(ids, np.ndarray):
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"{what} must be a 1-D integer array")
        if ids.size and (ids.min() < _INT32_MIN or ids.max() > _INT32_MAX):
            raise OutOfRangeError(f"{what} holds a value outside int32", status=N.MM_ERR_OUT_OF_RANGE)
        arr = np.ascontiguousarray(ids, dtype=np.int32)
        return arr.ctypes.data_as(POINTER(c_int32)), int(arr.size), arr
    vals = [int(i) for i in ids]
    for v in vals:
        if not _INT32_MIN <= v <= _INT32_MAX:
            raise OutOfRangeError(f"token id {v} is outside int32", status=N.MM_ERR_OUT_OF_RANGE)
    arr = (c_int32 * max(1, len(vals)))(*vals)
    return arr, len(vals), arr


class _Handle:
    """Shared bookkeeping: a C handle that becomes None once closed."""

    _kind = "handle"

    def _h(self):
        h = self.__dict__.get("_handle")
        if h is None:
            raise ClosedError(f"this {self._kind} is closed", status=N.MM_ERR_INVALID_ARGUMENT)
        return h

    @property
    def closed(self):
        return self.__dict__.get("_handle") is None

    def __enter__(self):
        self._h()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# Tokenizer


class Tokenizer(_Handle):
    """A Hugging Face tokenizer.json. Immutable and thread-safe.

    Tokenizer(path) loads a file (or a directory holding tokenizer.json); Tokenizer.from_bytes()
    loads JSON held in memory. A model's own tokenizer (Model.tokenizer) is a borrowed view that
    keeps its model alive and cannot be closed on its own.
    """

    _kind = "tokenizer"

    def __init__(self, path):
        lib = _lib()
        out = c_void_p()
        check(lib, lib.mm_tokenizer_load(_to_utf8(str(path), "path"), byref(out)))
        self._lib = lib
        self._owner = None
        self._handle = out.value

    @classmethod
    def from_bytes(cls, data):
        lib = _lib()
        buf = _to_utf8(data, "data")
        out = c_void_p()
        check(lib, lib.mm_tokenizer_load_from_memory(buf, len(buf), byref(out)))
        self = cls.__new__(cls)
        self._lib = lib
        self._owner = None
        self._handle = out.value
        return self

    @classmethod
    def _borrowed(cls, lib, handle, owner):
        self = cls.__new__(cls)
        self._lib = lib
        self._owner = owner          # the Model: kept alive by this view
        self._handle = handle
        return self

    def _h(self):
        if self.__dict__.get("_owner") is not None and self._owner.closed:
            raise ClosedError("the model owning this tokenizer is closed", status=N.MM_ERR_INVALID_ARGUMENT)
        return super()._h()

    def close(self):
        h = self.__dict__.get("_handle")
        if h is None:
            return
        self._handle = None
        if self.__dict__.get("_owner") is None:     # borrowed views are freed with their model
            self._lib.mm_tokenizer_free(h)

    def encode(self, text, add_bos=False, parse_special=True) -> List[int]:
        """Token ids of `text` (str, or UTF-8 bytes). add_bos applies the post-processor (BOS
        for LLaMA-3). Special-token text such as "<|eot_id|>" is matched as that token, as the
        reference tokenizer does; the library has no literal mode, so parse_special=False
        raises UnsupportedError."""
        h = self._h()
        lib = self._lib
        if not parse_special:
            raise UnsupportedError("libmetamorph always matches special-token text (parse_special=False "
                                   "is not available)", status=N.MM_ERR_UNSUPPORTED)
        data = _to_utf8(text)
        flags = N.MM_TOKENIZE_ADD_BOS if add_bos else 0
        need = c_size_t(0)
        st = lib.mm_tokenize(h, data, len(data), flags, None, 0, byref(need))
        if st == N.MM_OK:
            return []
        if st != N.MM_ERR_BUFFER_TOO_SMALL:
            check(lib, st)
        cap = need.value
        buf = (c_int32 * cap)()
        check(lib, lib.mm_tokenize(h, data, len(data), flags, buf, cap, byref(need)))
        return list(buf[:need.value])

    def decode(self, ids, skip_special=False) -> str:
        """Text of a sequence of ids. Invalid byte sequences decode to U+FFFD."""
        h = self._h()
        lib = self._lib
        arr, n, _keep = _id_array(ids)
        flags = N.MM_DETOKENIZE_SKIP_SPECIAL if skip_special else 0
        need = c_size_t(0)
        st = lib.mm_detokenize(h, arr, n, flags, None, 0, byref(need))
        if st == N.MM_OK and need.value == 0:
            return ""
        if st not in (N.MM_OK, N.MM_ERR_BUFFER_TOO_SMALL):
            check(lib, st)
        cap = need.value + 1
        buf = ctypes.create_string_buffer(cap)
        check(lib, lib.mm_detokenize(h, arr, n, flags, buf, cap, byref(need)))
        return buf.raw[:need.value].decode("utf-8", "replace")

    def token_to_piece(self, token_id) -> bytes:
        """The raw bytes of one token (possibly part of a UTF-8 sequence)."""
        h = self._h()
        lib = self._lib
        tid = int(token_id)
        if not _INT32_MIN <= tid <= _INT32_MAX:
            raise OutOfRangeError(f"token id {tid} is outside int32", status=N.MM_ERR_OUT_OF_RANGE)
        need = c_size_t(0)
        st = lib.mm_token_to_piece(h, tid, None, 0, byref(need))
        if st == N.MM_OK and need.value == 0:
            return b""
        if st not in (N.MM_OK, N.MM_ERR_BUFFER_TOO_SMALL):
            check(lib, st)
        cap = need.value
        buf = ctypes.create_string_buffer(cap)
        check(lib, lib.mm_token_to_piece(h, tid, buf, cap, byref(need)))
        return buf.raw[:need.value]

    @property
    def vocab_size(self) -> int:
        return self._lib.mm_vocab_size(self._h())

    def __len__(self):
        return self.vocab_size

    def _special(self, which):
        h = self._h()
        out = c_int32(-1)
        st = self._lib.mm_token_special(h, which, byref(out))
        if st == N.MM_ERR_OUT_OF_RANGE:
            return None
        check(self._lib, st)
        return out.value

    bos_id = property(lambda self: self._special(N.MM_TOKEN_BOS), doc="<|begin_of_text|> or None")
    eos_id = property(lambda self: self._special(N.MM_TOKEN_EOS), doc="first end-of-sequence id or None")
    eot_id = property(lambda self: self._special(N.MM_TOKEN_EOT), doc="<|eot_id|> or None")
    image_start_id = property(lambda self: self._special(N.MM_TOKEN_IMAGE_START), doc="<image_start> or None")
    image_end_id = property(lambda self: self._special(N.MM_TOKEN_IMAGE_END), doc="<image_end> or None")

    def lookup(self, text) -> Optional[int]:
        """The id of a token given its exact text (vocabulary or added token), or None."""
        h = self._h()
        data = _to_utf8(text)
        out = c_int32(-1)
        st = self._lib.mm_token_lookup(h, data, len(data), byref(out))
        if st == N.MM_ERR_OUT_OF_RANGE:
            return None
        check(self._lib, st)
        return out.value

    def is_special(self, token_id) -> bool:
        """True for special tokens; OutOfRangeError for an id outside the vocabulary."""
        h = self._h()
        tid = int(token_id)
        r = self._lib.mm_token_is_special(h, tid) if _INT32_MIN <= tid <= _INT32_MAX else -1
        if r < 0:
            raise OutOfRangeError(f"token id {tid} is outside 0..{self.vocab_size - 1}", status=N.MM_ERR_OUT_OF_RANGE)
        return bool(r)


# ---------------------------------------------------------------------------------------------
# Model

_INFO_KEYS = [
    ("vocab_size", N.MM_MODEL_INFO_VOCAB_SIZE, int),
    ("hidden_size", N.MM_MODEL_INFO_HIDDEN_SIZE, int),
    ("n_layers", N.MM_MODEL_INFO_N_LAYERS, int),
    ("max_positions", N.MM_MODEL_INFO_MAX_POSITIONS, int),
    ("has_vision_input", N.MM_MODEL_INFO_HAS_VISION_INPUT, bool),
    ("has_vision_output", N.MM_MODEL_INFO_HAS_VISION_OUTPUT, bool),
    ("num_image_tokens", N.MM_MODEL_INFO_NUM_IMAGE_TOKENS, int),
    ("mm_hidden_size", N.MM_MODEL_INFO_MM_HIDDEN_SIZE, int),
]


def _model_params(lib, use_mmap, tokenizer_path, vision_tower_path, n_threads, require_tokenizer):
    p = N.mm_model_params()
    lib.mm_model_params_init(byref(p))
    p.use_mmap = 1 if use_mmap else 0
    p.n_threads = _int32(n_threads, "n_threads")
    p.require_tokenizer = 1 if require_tokenizer else 0
    keep = []
    if tokenizer_path is not None:
        keep.append(_to_utf8(str(tokenizer_path), "tokenizer_path"))
        p.tokenizer_path = keep[-1]
    if vision_tower_path is not None:
        keep.append(_to_utf8(str(vision_tower_path), "vision_tower_path"))
        p.vision_tower_path = keep[-1]
    return p, keep


class Model(_Handle):
    """A loaded checkpoint. Immutable; share it between threads and sessions.

    Close it (or let it be collected) after its sessions: Model.close() raises BusyError while a
    session of the model is still open.
    """

    _kind = "model"

    def __init__(self, path, *, use_mmap=True, tokenizer_path=None, vision_tower_path=None, n_threads=0,
                 require_tokenizer=False):
        lib = _lib()
        params, _keep = _model_params(lib, use_mmap, tokenizer_path, vision_tower_path, n_threads,
                                      require_tokenizer)
        out = c_void_p()
        check(lib, lib.mm_model_load(_to_utf8(str(path), "path"), byref(params), byref(out)))
        self._init(lib, out.value, None)

    def _init(self, lib, handle, buffers):
        self._lib = lib
        self._buffers = buffers          # borrowed weight buffers: alive as long as the model
        self._sessions = weakref.WeakSet()
        self._tokenizer = None
        self._handle = handle

    @classmethod
    def from_memory(cls, files: Dict[str, Any], borrow=False, *, tokenizer_path=None, vision_tower_path=None,
                    n_threads=0, require_tokenizer=False):
        """Load a checkpoint from {file name: bytes-like}. borrow=True lets the library use the
        buffers in place (no copy of the weights); the model then keeps them referenced."""
        lib = _lib()
        if not files:
            raise InvalidArgumentError("no files given", status=N.MM_ERR_INVALID_ARGUMENT)
        arr = (N.mm_memory_file * len(files))()
        keep = []
        for i, (name, data) in enumerate(files.items()):
            name_b = _to_utf8(name, "file name")
            keep.append(name_b)
            if isinstance(data, bytes):
                ptr, size = ctypes.cast(c_char_p(data), c_void_p), len(data)
                keep.append(data)
            else:
                mv = memoryview(data).cast("B")
                if mv.readonly:
                    b = mv.tobytes()
                    ptr, size = ctypes.cast(c_char_p(b), c_void_p), len(b)
                    keep.append(b)
                else:
                    cbuf = (c_char * mv.nbytes).from_buffer(mv)
                    ptr, size = ctypes.cast(cbuf, c_void_p), mv.nbytes
                    keep.append((data, mv, cbuf))
            arr[i].struct_size = ctypes.sizeof(N.mm_memory_file)
            arr[i].name = name_b
            arr[i].data = ptr
            arr[i].size = size
        params, _k = _model_params(lib, True, tokenizer_path, vision_tower_path, n_threads, require_tokenizer)
        out = c_void_p()
        mode = N.MM_MEMORY_BORROW if borrow else N.MM_MEMORY_COPY
        check(lib, lib.mm_model_load_from_memory(arr, len(files), mode, byref(params), byref(out)))
        self = cls.__new__(cls)
        self._init(lib, out.value, keep if borrow else None)
        return self

    def close(self):
        h = self.__dict__.get("_handle")
        if h is None:
            return
        live = [s for s in list(self.__dict__.get("_sessions", ())) if not s.closed]
        if live:
            raise BusyError(f"the model still has {len(live)} open session(s); close them first",
                            status=N.MM_ERR_BUSY)
        self._handle = None
        self._lib.mm_model_free(h)
        self._buffers = None

    @property
    def tokenizer(self) -> Optional[Tokenizer]:
        """The checkpoint's tokenizer (a view valid while the model is open), or None."""
        h = self._h()
        # The view holds the model; the model holds the view weakly (no reference cycle).
        tok = self._tokenizer() if self._tokenizer is not None else None
        if tok is None or tok.closed:
            th = self._lib.mm_model_tokenizer(h)
            if not th:
                return None
            tok = Tokenizer._borrowed(self._lib, th, self)
            self._tokenizer = weakref.ref(tok)
        return tok

    @property
    def info(self) -> Dict[str, Any]:
        h = self._h()
        return {name: conv(self._lib.mm_model_info(h, key)) for name, key, conv in _INFO_KEYS}

    @property
    def model_type(self) -> str:
        s = self._lib.mm_model_type(self._h())
        return s.decode("utf-8", "replace") if s else ""

    def session(self, n_ctx=0, n_threads=0) -> "Session":
        return Session(self, n_ctx=n_ctx, n_threads=n_threads)

    def __repr__(self):
        if self.closed:
            return "<metamorph.Model closed>"
        return f"<metamorph.Model {self.model_type} layers={self.info['n_layers']}>"


# ---------------------------------------------------------------------------------------------
# Prompts and parameters


def _is_pil_image(obj):
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(obj, pil.Image)


def _is_token_list(obj):
    return isinstance(obj, (list, tuple)) and len(obj) > 0 and all(
        isinstance(x, int) and not isinstance(x, bool) for x in obj)


def _normalize_prompt(prompt):
    """A prompt -> a list of parts. A str/bytes, an image, an int array or a flat list of ints is
    one part; any other list or tuple is a list of parts."""
    np = sys.modules.get("numpy")
    if isinstance(prompt, (str, bytes, bytearray)) or _is_pil_image(prompt):
        return [prompt]
    if np is not None and isinstance(prompt, np.ndarray):
        return [prompt]
    if _is_token_list(prompt):
        return [prompt]
    if isinstance(prompt, (list, tuple)):
        return list(prompt)
    raise TypeError(f"prompt must be str, bytes, a list of parts, token ids or an image; got {type(prompt).__name__}")


def _image_struct(img, keep):
    """numpy uint8 HxWx3 / HxWx4 or a PIL image -> mm_image (pixels kept alive in `keep`)."""
    im = N.mm_image()
    im.struct_size = ctypes.sizeof(N.mm_image)
    if _is_pil_image(img):
        if img.mode not in ("RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
        ch = 3 if img.mode == "RGB" else 4
        data = img.tobytes()
        w, h = img.size
        buf = (c_uint8 * len(data)).from_buffer_copy(data)
        keep.append(buf)
        im.width, im.height, im.stride = w, h, w * ch
        im.format = N.MM_PIXEL_RGB8 if ch == 3 else N.MM_PIXEL_RGBA8
        im.pixels = ctypes.cast(buf, POINTER(c_uint8))
        return im
    np = sys.modules.get("numpy")
    if np is None or not isinstance(img, np.ndarray):
        raise TypeError("an image part must be a numpy uint8 array (HxWx3 or HxWx4) or a PIL.Image")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise TypeError(f"an image array must be uint8 with shape HxWx3 or HxWx4, got {img.dtype} {img.shape}")
    h, w, ch = img.shape
    # Rows may be padded (stride), but pixels and channels must be packed.
    if not (img.strides[2] == 1 and img.strides[1] == ch and img.strides[0] >= w * ch):
        img = np.ascontiguousarray(img)
    keep.append(img)
    im.width, im.height, im.stride = _int32(w, "image width"), _int32(h, "image height"), _int32(img.strides[0], "stride")
    im.format = N.MM_PIXEL_RGB8 if ch == 3 else N.MM_PIXEL_RGBA8
    im.pixels = img.ctypes.data_as(POINTER(c_uint8))
    return im


def _build_parts(prompt, keep):
    parts = _normalize_prompt(prompt)
    if not parts:
        raise InvalidArgumentError("the prompt has no parts", status=N.MM_ERR_INVALID_ARGUMENT)
    np = sys.modules.get("numpy")
    arr = (N.mm_prompt_part * len(parts))()
    for i, part in enumerate(parts):
        p = arr[i]
        p.struct_size = ctypes.sizeof(N.mm_prompt_part)
        if isinstance(part, (str, bytes, bytearray, memoryview)):
            data = _to_utf8(part)
            keep.append(data)
            p.kind = N.MM_PART_TEXT
            p.text = data
            p.text_len = len(data)
        elif _is_pil_image(part) or (np is not None and isinstance(part, np.ndarray) and part.ndim == 3):
            im = _image_struct(part, keep)
            keep.append(im)
            p.kind = N.MM_PART_IMAGE
            p.image = ctypes.pointer(im)
        elif (np is not None and isinstance(part, np.ndarray)) or isinstance(part, (list, tuple)):
            ids, n, k = _id_array(part, f"parts[{i}]")
            keep.append(k)
            p.kind = N.MM_PART_TOKENS
            p.tokens = ctypes.cast(ids, POINTER(c_int32))
            p.n_tokens = n
        else:
            raise TypeError(f"prompt part {i} is a {type(part).__name__}: use str, bytes, token ids or an image")
    return arr, len(parts)


class _Request:
    """Everything one generation hands to C, kept alive for as long as C may read it."""

    def __init__(self, lib, prompt, *, max_tokens=256, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
                 repeat_penalty=1.0, repeat_last_n=64, seed=None, raw=False, assistant_prefix=None, stop=(),
                 keep_logits=False, on_text=None):
        self.keep = []
        self.parts, self.n_parts = _build_parts(prompt, self.keep)
        if keep_logits and "numpy" not in sys.modules:
            try:
                import numpy  # noqa: F401
            except ImportError as e:
                raise ImportError("keep_logits=True needs numpy") from e
        g = N.mm_gen_params()
        lib.mm_gen_params_init(byref(g))
        g.max_tokens = _int32(max_tokens, "max_tokens")
        g.temperature = float(temperature)
        g.top_k = _int32(top_k, "top_k")
        g.top_p = float(top_p)
        g.min_p = float(min_p)
        g.repeat_penalty = float(repeat_penalty)
        g.repeat_last_n = _int32(repeat_last_n, "repeat_last_n")
        if seed is not None:
            s = int(seed)
            if not 0 <= s <= 0xFFFFFFFFFFFFFFFF:
                raise InvalidArgumentError(f"seed {s} does not fit in uint64", status=N.MM_ERR_INVALID_ARGUMENT)
            g.seed = s
        g.raw = 1 if raw else 0
        g.keep_logits = 1 if keep_logits else 0
        if assistant_prefix is not None:
            b = _to_utf8(assistant_prefix, "assistant_prefix")
            if b"\0" in b:
                raise InvalidArgumentError("assistant_prefix contains a NUL byte", status=N.MM_ERR_INVALID_ARGUMENT)
            self.keep.append(b)
            g.assistant_prefix = b
        if isinstance(stop, (str, bytes)):
            stop = (stop,)
        stops = [_to_utf8(s, "stop string") for s in stop]
        if any(b"\0" in s for s in stops):
            raise InvalidArgumentError("a stop string contains a NUL byte", status=N.MM_ERR_INVALID_ARGUMENT)
        if stops:
            sarr = (c_char_p * len(stops))(*stops)
            self.keep += [stops, sarr]
            g.stop_strings = sarr
            g.n_stop_strings = len(stops)
        self.callback_error = None
        self.callback = None
        if on_text is not None:
            def trampoline(text, length, token, user):
                try:
                    if length:
                        piece = ctypes.string_at(text, length).decode("utf-8", "replace")
                        if on_text(piece):
                            return 1
                    return 0
                except BaseException as e:  # noqa: B902 -- re-raised after mm_generate returns
                    self.callback_error = e
                    return 1
            self.callback = N.mm_token_fn(trampoline)
            g.on_token = self.callback
        self.params = g


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Result:
    """One generation's outcome."""

    text: str
    tokens: List[int]
    prompt_tokens: List[int]
    stop_reason: str                       # "eos", "max_tokens", "stop_string", "cancelled", "context_full"
    seed: int
    timings: Dict[str, float] = field(default_factory=dict)
    logits: Any = None                     # numpy float32 [vocab] with keep_logits=True, else None
    stop_code: int = 0                     # the raw MM_STOP_* value
    # Generated images: one numpy float32 array [n_tokens, mm_hidden] of visual tokens each.
    images: List[Any] = field(default_factory=list)
    images_complete: List[bool] = field(default_factory=list)

    @classmethod
    def _from_handle(cls, lib, r):
        n = c_size_t(0)
        p = lib.mm_result_tokens(r, byref(n))
        tokens = list(p[:n.value]) if p and n.value else []
        p = lib.mm_result_prompt_tokens(r, byref(n))
        prompt = list(p[:n.value]) if p and n.value else []
        lp = lib.mm_result_logits(r, byref(n))
        logits = None
        if lp and n.value:
            import numpy as np
            logits = np.ctypeslib.as_array(lp, shape=(n.value,)).copy()
        t = N.mm_timings()
        t.struct_size = ctypes.sizeof(N.mm_timings)
        check(lib, lib.mm_result_timings(r, byref(t)))
        timings = {
            "n_prompt_tokens": t.n_prompt_tokens,
            "n_generated": t.n_generated,
            "load_ms": t.load_ms,
            "prompt_ms": t.prompt_ms,
            "generate_ms": t.generate_ms,
            "prompt_tokens_per_s": t.n_prompt_tokens * 1000.0 / t.prompt_ms if t.prompt_ms > 0 else 0.0,
            "tokens_per_s": t.n_generated * 1000.0 / t.generate_ms if t.generate_ms > 0 else 0.0,
        }
        images, complete = [], []
        for i in range(max(0, lib.mm_result_n_images(r))):
            import numpy as np
            nt, dim, comp = ctypes.c_int32(0), ctypes.c_int32(0), ctypes.c_int32(0)
            st = lib.mm_result_image_tokens(r, i, None, 0, byref(nt), byref(dim), byref(comp))
            arr = np.zeros((nt.value, dim.value), dtype=np.float32)
            if arr.size:
                check(lib, lib.mm_result_image_tokens(r, i, arr.ctypes.data_as(POINTER(ctypes.c_float)), arr.size,
                                                      byref(nt), byref(dim), byref(comp)))
            elif st not in (0, 9):
                check(lib, st)
            images.append(arr)
            complete.append(bool(comp.value))
        text = lib.mm_result_text(r) or b""
        code = lib.mm_result_stop_reason(r)
        return cls(text=text.decode("utf-8", "replace"), tokens=tokens, prompt_tokens=prompt,
                   stop_reason=STOP_REASONS.get(code, f"unknown({code})"), seed=lib.mm_result_seed(r),
                   timings=timings, logits=logits, stop_code=code, images=images, images_complete=complete)


# ---------------------------------------------------------------------------------------------
# Sessions and streams


class Session(_Handle):
    """One conversation on a model (KV cache and history). One generation at a time; several
    sessions of one model can generate in parallel on different threads."""

    _kind = "session"

    def __init__(self, model: Model, n_ctx=0, n_threads=0):
        if not isinstance(model, Model):
            raise TypeError("Session needs a metamorph.Model")
        mh = model._h()
        lib = model._lib
        p = N.mm_session_params()
        lib.mm_session_params_init(byref(p))
        p.n_ctx = _int32(n_ctx, "n_ctx")
        p.n_threads = _int32(n_threads, "n_threads")
        out = c_void_p()
        check(lib, lib.mm_session_create(mh, byref(p), byref(out)))
        self._lib = lib
        self.model = model                 # keeps the model alive while the session lives
        self._stream = None                # weakref to the running Stream, if any
        self._state = threading.Lock()
        self._inflight = 0
        self._requests = set()             # in-flight _Request objects (callbacks kept alive)
        self._handle = out.value
        model._sessions.add(self)

    # -- bookkeeping -----------------------------------------------------------------------

    def _active_stream(self):
        s = self._stream() if self._stream is not None else None
        return s if s is not None and not s._finished else None

    def _begin(self):
        with self._state:
            h = self._h()
            if self._active_stream() is not None:
                raise BusyError("a stream (job) is running on this session; exhaust or close it first",
                                status=N.MM_ERR_BUSY)
            self._inflight += 1
            return h

    def _end(self):
        with self._state:
            self._inflight -= 1

    def close(self):
        """Free the session (cancelling and freeing a running stream first). Raises BusyError if
        another thread is inside generate() on this session (it is asked to cancel)."""
        state = self.__dict__.get("_state")
        if state is None or self.__dict__.get("_handle") is None:
            return
        stream = self._active_stream()
        if stream is not None:
            stream.close()
        with state:
            h = self._handle
            if h is None:
                return
            if self._inflight:
                self._lib.mm_session_cancel(h)
                raise BusyError("the session is generating on another thread; it was asked to cancel",
                                status=N.MM_ERR_BUSY)
            self._handle = None
        self._lib.mm_session_free(h)

    # -- generation ------------------------------------------------------------------------

    def generate(self, prompt, *, max_tokens=256, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
                 repeat_penalty=1.0, repeat_last_n=64, seed=None, raw=False, assistant_prefix=None, stop=(),
                 keep_logits=False, on_text=None) -> Result:
        """Append a user message and generate the reply (blocking).

        prompt: a str, or a list of parts (str text, list/array of token ids (raw=True only),
        numpy uint8 HxWx3/HxWx4 or PIL images). on_text(piece) is called with each new piece of
        text on this thread; if it returns a true value, generation stops ("cancelled").
        seed=None picks a random seed (reported in Result.seed).
        """
        lib = self._lib
        req = _Request(lib, prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                       min_p=min_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed, raw=raw,
                       assistant_prefix=assistant_prefix, stop=stop, keep_logits=keep_logits, on_text=on_text)
        h = self._begin()
        try:
            out = c_void_p()
            self._requests.add(req)          # parts, strings and the ctypes callback stay alive
            try:
                st = lib.mm_generate(h, req.parts, req.n_parts, byref(req.params), byref(out))
            finally:
                self._requests.discard(req)
            if st != N.MM_OK:
                if req.callback_error is not None:
                    raise req.callback_error
                check(lib, st)
            try:
                result = Result._from_handle(lib, out.value)
            finally:
                lib.mm_result_free(out.value)
        finally:
            self._end()
        if req.callback_error is not None:
            raise req.callback_error
        return result

    def stream(self, prompt, *, poll_interval=0.004, **kwargs) -> "Stream":
        """Start a generation on a background job and return an iterator of text pieces.

        Accepts generate()'s keyword arguments except on_text. After exhaustion the Result is
        in `.result`; closing the iterator early (or breaking out of a for loop and dropping it)
        cancels the job; `.result` then holds the partial result."""
        if "on_text" in kwargs:
            raise TypeError("stream() does not take on_text: iterate over the stream instead")
        lib = self._lib
        req = _Request(lib, prompt, **kwargs)
        with self._state:
            h = self._h()
            if self._active_stream() is not None:
                raise BusyError("a stream (job) is already running on this session", status=N.MM_ERR_BUSY)
            out = c_void_p()
            check(lib, lib.mm_job_start(h, req.parts, req.n_parts, byref(req.params), byref(out)))
            s = Stream(self, out.value, poll_interval)
            self._stream = weakref.ref(s)
        return s

    def cancel(self):
        """Ask the running (or next) generation to stop; safe from any thread."""
        stream = self._active_stream()
        if stream is not None:
            stream.cancel()
            return
        check(self._lib, self._lib.mm_session_cancel(self._h()))

    def reset(self):
        """Forget the conversation (KV cache and history)."""
        h = self._begin()
        try:
            check(self._lib, self._lib.mm_session_reset(h))
        finally:
            self._end()

    def set_threads(self, n_threads):
        check(self._lib, self._lib.mm_session_set_threads(self._h(), _int32(n_threads, "n_threads")))

    @property
    def n_past(self) -> int:
        return int(self._lib.mm_session_n_past(self._h()))

    @property
    def tokenizer(self):
        return self.model.tokenizer


class Stream:
    """Iterator over the text pieces of a background generation (mm_job_* poll API)."""

    _BUF = 4096

    def __init__(self, session, job, poll_interval):
        self._session = session            # keeps the session (and model) alive
        self._lib = session._lib
        self._job = job
        self._poll_interval = poll_interval
        self._buf = ctypes.create_string_buffer(self._BUF)
        self._finished = False
        self._lock = threading.Lock()
        self.result: Optional[Result] = None
        self.error: Optional[MetamorphError] = None
        self.pieces: List[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        lib = self._lib
        n = c_size_t(0)
        while True:
            with self._lock:
                if self._finished:
                    raise StopIteration
                reason = lib.mm_job_poll(self._job, self._buf, self._BUF, byref(n))
                if n.value:
                    piece = self._buf.raw[:n.value].decode("utf-8", "replace")
                    self.pieces.append(piece)
                    return piece
                if reason != N.MM_STOP_NONE:
                    self._finish(cancel=False)
                    if self.error is not None:
                        raise self.error
                    raise StopIteration
            time.sleep(self._poll_interval)

    def _finish(self, cancel):
        """Wait for the job, collect the result or error, free the job. Holds self._lock."""
        if self._finished:
            return
        lib = self._lib
        job = self._job
        if cancel:
            lib.mm_job_cancel(job)
        out = c_void_p()
        st = lib.mm_job_wait(job, byref(out))
        if st == N.MM_OK:
            try:
                self.result = Result._from_handle(lib, out.value)
            finally:
                lib.mm_result_free(out.value)
        else:
            msg = (lib.mm_last_error() or b"").decode("utf-8", "replace")
            name = (lib.mm_status_name(st) or b"").decode("ascii", "replace")
            self.error = error_for(st, msg, name)
        lib.mm_job_free(job)
        self._job = None
        self._finished = True

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self.pieces)

    @property
    def done(self) -> bool:
        return self._finished

    def cancel(self):
        """Ask the job to stop (returns at once); keep iterating to collect the rest."""
        with self._lock:
            if not self._finished:
                self._lib.mm_job_cancel(self._job)

    def close(self):
        """Cancel if running, wait, free the job. `.result` holds the partial result."""
        with self._lock:
            self._finish(cancel=True)

    def wait(self) -> Result:
        """Drain the stream and return the result (raises the generation's error)."""
        for _ in self:
            pass
        if self.error is not None:
            raise self.error
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
