"""metamorph: CPU inference of MetaMorph / LLaMA-3 models, a ctypes binding of libmetamorph.

    import metamorph
    with metamorph.Model("path/to/checkpoint") as model, metamorph.Session(model) as s:
        print(s.generate("What is the capital of France?", max_tokens=32).text)

The shared library is found through $METAMORPH_LIBRARY (full path), the package folder, a
repository checkout's .build/release, then the system search path. Importing the package loads
and checks it (ABI version and struct layouts); a mismatch raises LibraryNotFoundError.
"""
import threading as _threading

from . import _native
from ._api import STOP_REASONS, Model, Result, Session, Stream, Tokenizer
from ._visualizer import Visualizer
from ._native import ABI_VERSION, LibraryNotFoundError, find_library
from .errors import (ABIMismatchError, BufferTooSmallError, BusyError, CancelledError, ClosedError,
                     ContextFullError, FormatError, InternalError, InvalidArgumentError, InvalidUTF8Error,
                     IOError_, MetamorphError, OutOfMemoryError, OutOfRangeError, UnsupportedError)

__all__ = [
    "Model", "Session", "Stream", "Tokenizer", "Result", "Visualizer", "STOP_REASONS",
    "MetamorphError", "InvalidArgumentError", "ClosedError", "IOError_", "FormatError", "UnsupportedError",
    "OutOfMemoryError", "ContextFullError", "CancelledError", "BusyError", "BufferTooSmallError",
    "InvalidUTF8Error", "OutOfRangeError", "InternalError", "ABIMismatchError", "LibraryNotFoundError",
    "ABI_VERSION", "abi_version", "version", "library_version", "library_path", "status_name", "struct_size",
    "set_log_callback", "set_default_threads", "get_default_threads", "find_library",
    "LOG_DEBUG", "LOG_INFO", "LOG_WARN", "LOG_ERROR",
]

__version__ = "0.1.0"

LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR = (_native.MM_LOG_DEBUG, _native.MM_LOG_INFO, _native.MM_LOG_WARN,
                                            _native.MM_LOG_ERROR)

_lib = _native.load()


def abi_version() -> int:
    """mm_abi_version() of the loaded library."""
    return int(_lib.mm_abi_version())


def library_version() -> str:
    """mm_version_string() of the loaded library, e.g. "0.1.0"."""
    return _lib.mm_version_string().decode("ascii")


version = library_version


def library_path() -> str:
    return _lib._name


def status_name(status: int) -> str:
    return _lib.mm_status_name(int(status)).decode("ascii", "replace")


def struct_size(which: int) -> int:
    return int(_lib.mm_struct_size(int(which)))


_log_lock = _threading.Lock()
_log_callback = None   # the ctypes function object must outlive its registration


def set_log_callback(fn, min_level=LOG_INFO):
    """Route library diagnostics to fn(level: int, message: str); None discards them.

    fn may be called from any library thread, concurrently; exceptions it raises are ignored."""
    global _log_callback
    with _log_lock:
        if fn is None:
            _lib.mm_set_log_callback(_native.mm_log_fn(), None, int(min_level))
            _log_callback = None
            return

        def trampoline(level, message, user):
            try:
                fn(level, (message or b"").decode("utf-8", "replace"))
            except BaseException:  # noqa: B902 -- never propagate into C
                pass

        cb = _native.mm_log_fn(trampoline)
        _lib.mm_set_log_callback(cb, None, int(min_level))
        _log_callback = cb


def set_default_threads(n: int):
    _lib.mm_set_default_threads(int(n))


def get_default_threads() -> int:
    return int(_lib.mm_get_default_threads())
