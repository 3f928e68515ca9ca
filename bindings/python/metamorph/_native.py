"""Low-level ctypes layer over libmetamorph: library discovery, struct mirrors, prototypes.

Everything here mirrors include/metamorph.h exactly. The high-level API lives in _api.py.
"""
import ctypes
import ctypes.util
import os
import threading
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int32,
                    c_int64, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p)
from pathlib import Path

# The ABI version this binding was written against (MM_ABI_VERSION in metamorph.h).
ABI_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Constants (metamorph.h)

MM_OK = 0
MM_ERR_INVALID_ARGUMENT = 1
MM_ERR_IO = 2
MM_ERR_FORMAT = 3
MM_ERR_UNSUPPORTED = 4
MM_ERR_OUT_OF_MEMORY = 5
MM_ERR_CONTEXT_FULL = 6
MM_ERR_CANCELLED = 7
MM_ERR_BUSY = 8
MM_ERR_BUFFER_TOO_SMALL = 9
MM_ERR_INVALID_UTF8 = 10
MM_ERR_OUT_OF_RANGE = 11
MM_ERR_INTERNAL = 12
MM_ERR_ABI_MISMATCH = 13

MM_STRUCT_MODEL_PARAMS = 1
MM_STRUCT_SESSION_PARAMS = 2
MM_STRUCT_GEN_PARAMS = 3
MM_STRUCT_PROMPT_PART = 4
MM_STRUCT_IMAGE = 5
MM_STRUCT_TIMINGS = 6
MM_STRUCT_MEMORY_FILE = 7
MM_STRUCT_RENDER_PARAMS = 8

MM_LOG_DEBUG = 0
MM_LOG_INFO = 1
MM_LOG_WARN = 2
MM_LOG_ERROR = 3

MM_TOKENIZE_ADD_BOS = 1  # special-token text in the input is always matched
MM_DETOKENIZE_SKIP_SPECIAL = 1

MM_TOKEN_BOS = 0
MM_TOKEN_EOS = 1
MM_TOKEN_EOT = 2
MM_TOKEN_IMAGE_START = 3
MM_TOKEN_IMAGE_END = 4

MM_MEMORY_COPY = 0
MM_MEMORY_BORROW = 1

MM_MODEL_INFO_VOCAB_SIZE = 0
MM_MODEL_INFO_HIDDEN_SIZE = 1
MM_MODEL_INFO_N_LAYERS = 2
MM_MODEL_INFO_MAX_POSITIONS = 3
MM_MODEL_INFO_HAS_VISION_INPUT = 4
MM_MODEL_INFO_HAS_VISION_OUTPUT = 5
MM_MODEL_INFO_NUM_IMAGE_TOKENS = 6
MM_MODEL_INFO_MM_HIDDEN_SIZE = 7

MM_PIXEL_RGB8 = 0
MM_PIXEL_RGBA8 = 1

MM_PART_TEXT = 0
MM_PART_IMAGE = 1
MM_PART_TOKENS = 2

MM_STOP_NONE = 0
MM_STOP_EOS = 1
MM_STOP_MAX_TOKENS = 2
MM_STOP_STRING = 3
MM_STOP_CANCELLED = 4
MM_STOP_ERROR = 5
MM_STOP_CONTEXT_FULL = 6

MM_SEED_RANDOM = 0xFFFFFFFFFFFFFFFF
SIZE_MAX = ctypes.c_size_t(-1).value

# ---------------------------------------------------------------------------------------------
# Struct mirrors. ctypes applies the platform C alignment rules, so these match the header's
# layouts; load() checks them against mm_struct_size().


class mm_model_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("n_threads", c_int32),
        ("use_mmap", c_int32),
        ("require_tokenizer", c_int32),
        ("vision_tower_path", c_char_p),
        ("tokenizer_path", c_char_p),
    ]


class mm_memory_file(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("name", c_char_p),
        ("data", c_void_p),
        ("size", c_size_t),
    ]


class mm_session_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("n_ctx", c_int32),
        ("n_threads", c_int32),
    ]


class mm_image(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("width", c_int32),
        ("height", c_int32),
        ("stride", c_int32),
        ("format", c_int32),
        ("pixels", POINTER(c_uint8)),
    ]


class mm_prompt_part(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("kind", c_int32),
        ("text", c_char_p),
        ("text_len", c_size_t),
        ("image", POINTER(mm_image)),
        ("tokens", POINTER(c_int32)),
        ("n_tokens", c_size_t),
    ]


# typedef int32_t (*mm_token_fn)(const char *text, size_t len, int32_t token, void *user);
# `text` is not NUL-terminated, so it is received as a raw pointer.
mm_token_fn = CFUNCTYPE(c_int32, c_void_p, c_size_t, c_int32, c_void_p)
# typedef void (*mm_log_fn)(int32_t level, const char *message, void *user);
mm_log_fn = CFUNCTYPE(None, c_int32, c_char_p, c_void_p)


class mm_gen_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("max_tokens", c_int32),
        ("temperature", c_float),
        ("top_k", c_int32),
        ("top_p", c_float),
        ("min_p", c_float),
        ("repeat_penalty", c_float),
        ("repeat_last_n", c_int32),
        ("seed", c_uint64),
        ("raw", c_int32),
        ("keep_logits", c_int32),
        ("assistant_prefix", c_char_p),
        ("stop_strings", POINTER(c_char_p)),
        ("n_stop_strings", c_size_t),
        ("on_token", mm_token_fn),
        ("user", c_void_p),
        ("visualizer", c_void_p),
        ("render", c_void_p),       # const mm_render_params *
    ]


# typedef int32_t (*mm_progress_fn)(int32_t step, int32_t n_steps, void *user);
mm_progress_fn = CFUNCTYPE(c_int32, c_int32, c_int32, c_void_p)


class mm_render_params(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("steps", c_int32),
        ("guidance", c_float),
        ("n_threads", c_int32),
        ("seed", c_uint64),
        ("scheduler", c_char_p),
        ("latents", POINTER(c_float)),
        ("n_latents", c_size_t),
        ("on_progress", mm_progress_fn),
        ("user", c_void_p),
    ]


class mm_timings(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("n_prompt_tokens", c_int32),
        ("n_generated", c_int32),
        ("pad0", c_int32),
        ("load_ms", c_double),
        ("prompt_ms", c_double),
        ("generate_ms", c_double),
    ]


STRUCT_MIRRORS = {
    MM_STRUCT_MODEL_PARAMS: mm_model_params,
    MM_STRUCT_SESSION_PARAMS: mm_session_params,
    MM_STRUCT_GEN_PARAMS: mm_gen_params,
    MM_STRUCT_PROMPT_PART: mm_prompt_part,
    MM_STRUCT_IMAGE: mm_image,
    MM_STRUCT_TIMINGS: mm_timings,
    MM_STRUCT_MEMORY_FILE: mm_memory_file,
    MM_STRUCT_RENDER_PARAMS: mm_render_params,
}

# ---------------------------------------------------------------------------------------------
# Prototypes: (name, restype, argtypes) for every MM_API function of the header.

_h = c_void_p  # opaque handles (mm_model*, mm_session*, mm_tokenizer*, mm_result*, mm_job*)
_status = c_int32

PROTOTYPES = [
    ("mm_last_error", c_char_p, []),
    ("mm_status_name", c_char_p, [_status]),
    ("mm_abi_version", c_uint32, []),
    ("mm_version_string", c_char_p, []),
    ("mm_struct_size", c_size_t, [c_int32]),
    ("mm_set_log_callback", None, [mm_log_fn, c_void_p, c_int32]),
    ("mm_set_default_threads", None, [c_int32]),
    ("mm_get_default_threads", c_int32, []),
    # tokenizer
    ("mm_tokenizer_load", _status, [c_char_p, POINTER(_h)]),
    ("mm_tokenizer_load_from_memory", _status, [c_void_p, c_size_t, POINTER(_h)]),
    ("mm_tokenizer_free", None, [_h]),
    ("mm_tokenize", _status, [_h, c_char_p, c_size_t, c_int32, POINTER(c_int32), c_size_t, POINTER(c_size_t)]),
    ("mm_detokenize", _status, [_h, POINTER(c_int32), c_size_t, c_int32, POINTER(c_char), c_size_t,
                                POINTER(c_size_t)]),
    ("mm_token_to_piece", _status, [_h, c_int32, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    ("mm_vocab_size", c_int32, [_h]),
    ("mm_token_special", _status, [_h, c_int32, POINTER(c_int32)]),
    ("mm_token_lookup", _status, [_h, c_char_p, c_size_t, POINTER(c_int32)]),
    ("mm_token_is_special", c_int32, [_h, c_int32]),
    # model
    ("mm_model_params_init", None, [POINTER(mm_model_params)]),
    ("mm_model_load", _status, [c_char_p, POINTER(mm_model_params), POINTER(_h)]),
    ("mm_model_load_from_memory", _status, [POINTER(mm_memory_file), c_size_t, c_int32,
                                            POINTER(mm_model_params), POINTER(_h)]),
    ("mm_model_free", None, [_h]),
    ("mm_model_tokenizer", _h, [_h]),
    ("mm_model_info", c_int64, [_h, c_int32]),
    ("mm_model_type", c_char_p, [_h]),
    # sessions
    ("mm_session_params_init", None, [POINTER(mm_session_params)]),
    ("mm_session_create", _status, [_h, POINTER(mm_session_params), POINTER(_h)]),
    ("mm_session_free", None, [_h]),
    ("mm_session_reset", _status, [_h]),
    ("mm_session_n_past", c_int64, [_h]),
    ("mm_session_set_threads", _status, [_h, c_int32]),
    ("mm_session_cancel", _status, [_h]),
    # generation
    ("mm_gen_params_init", None, [POINTER(mm_gen_params)]),
    ("mm_generate", _status, [_h, POINTER(mm_prompt_part), c_size_t, POINTER(mm_gen_params), POINTER(_h)]),
    ("mm_result_text", c_char_p, [_h]),
    ("mm_result_tokens", POINTER(c_int32), [_h, POINTER(c_size_t)]),
    ("mm_result_prompt_tokens", POINTER(c_int32), [_h, POINTER(c_size_t)]),
    ("mm_result_stop_reason", c_int32, [_h]),
    ("mm_result_logits", POINTER(c_float), [_h, POINTER(c_size_t)]),
    ("mm_result_seed", c_uint64, [_h]),
    ("mm_result_timings", _status, [_h, POINTER(mm_timings)]),
    ("mm_result_n_images", c_int32, [_h]),
    ("mm_result_image_tokens", _status, [_h, c_int32, POINTER(c_float), c_size_t, POINTER(c_int32),
                                         POINTER(c_int32), POINTER(c_int32)]),
    ("mm_result_n_pictures", c_int32, [_h]),
    ("mm_result_picture", _h, [_h, c_int32]),
    ("mm_result_free", None, [_h]),
    # visualizer
    ("mm_render_params_init", None, [POINTER(mm_render_params)]),
    ("mm_visualizer_load", _status, [c_char_p, POINTER(_h)]),
    ("mm_visualizer_free", None, [_h]),
    ("mm_visualizer_render", _status, [_h, POINTER(c_float), c_int32, c_int32, POINTER(mm_render_params), POINTER(_h)]),
    ("mm_picture_width", c_int32, [_h]),
    ("mm_picture_height", c_int32, [_h]),
    ("mm_picture_stride", c_int32, [_h]),
    ("mm_picture_pixels", POINTER(c_uint8), [_h]),
    ("mm_picture_free", None, [_h]),
    # jobs
    ("mm_job_start", _status, [_h, POINTER(mm_prompt_part), c_size_t, POINTER(mm_gen_params), POINTER(_h)]),
    ("mm_job_poll", c_int32, [_h, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    ("mm_job_cancel", _status, [_h]),
    ("mm_job_wait", _status, [_h, POINTER(_h)]),
    ("mm_job_free", None, [_h]),
]

LIBRARY_NAME = "libmetamorph.so"


class LibraryNotFoundError(OSError):
    """libmetamorph could not be located or does not match this binding."""


def candidate_paths():
    """Where the library is looked for, in order (see find_library)."""
    out = []
    env = os.environ.get("METAMORPH_LIBRARY")
    if env:
        out.append(("METAMORPH_LIBRARY", env))
    here = Path(__file__).resolve().parent
    out.append(("package folder", str(here / LIBRARY_NAME)))
    # A repository checkout: <repo>/bindings/python/metamorph -> <repo>/.build/release.
    out.append(("repository checkout", str((here.parent / ".." / ".." / ".build" / "release" / LIBRARY_NAME).resolve())))
    found = ctypes.util.find_library("metamorph")
    if found:
        out.append(("find_library", found))
    return out


def find_library():
    """The path of the libmetamorph shared library this binding will load.

    Order: $METAMORPH_LIBRARY (a full path; an error if it does not exist), the package's own
    folder, <repo>/.build/release/libmetamorph.so relative to the package source, then
    ctypes.util.find_library("metamorph").
    """
    tried = []
    for origin, path in candidate_paths():
        if origin == "METAMORPH_LIBRARY":
            if not os.path.isfile(path):
                raise LibraryNotFoundError(f"METAMORPH_LIBRARY={path!r} does not name an existing file")
            return path
        if origin == "find_library" or os.path.isfile(path):
            return path
        tried.append(path)
    raise LibraryNotFoundError(
        "libmetamorph.so not found; set METAMORPH_LIBRARY to its full path or build it with "
        "`swift build -c release`. Tried: " + ", ".join(tried))


_lib = None
_lib_lock = threading.Lock()


def _declare(lib):
    missing = []
    for name, restype, argtypes in PROTOTYPES:
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if missing:
        raise LibraryNotFoundError(f"{lib._name} lacks functions this binding needs: {', '.join(missing)}")


def _check(lib):
    abi = lib.mm_abi_version()
    if abi != ABI_VERSION:
        raise LibraryNotFoundError(
            f"{lib._name} has ABI version {abi}, but this binding was written for ABI version {ABI_VERSION}; "
            "install matching versions of metamorph and its Python binding")
    for which, mirror in STRUCT_MIRRORS.items():
        want = lib.mm_struct_size(which)
        have = ctypes.sizeof(mirror)
        if want != have:
            raise LibraryNotFoundError(
                f"struct {mirror.__name__}: the library says {want} bytes, the binding's mirror has {have}; "
                "the binding does not match this library")


def load(path=None):
    """Load (once) and return the checked ctypes library object."""
    global _lib
    with _lib_lock:
        if _lib is not None and path is None:
            return _lib
        p = path or find_library()
        try:
            lib = ctypes.CDLL(p)
        except OSError as e:
            raise LibraryNotFoundError(f"cannot load {p}: {e}") from e
        _declare(lib)
        _check(lib)
        if path is None:
            _lib = lib
        return lib
