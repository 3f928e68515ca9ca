"""Exceptions raised by the metamorph binding: one class per mm_status, all MetamorphError."""
from . import _native as N


class MetamorphError(Exception):
    """A failed libmetamorph call.

    Attributes: status (the mm_status code), status_name ("MM_ERR_IO", ...), message (the
    library's mm_last_error() text, or the binding's own explanation).
    """

    status = N.MM_ERR_INTERNAL

    def __init__(self, message, status=None, status_name=None):
        if status is not None:
            self.status = status
        self.status_name = status_name or _STATUS_NAMES.get(self.status, f"MM_STATUS_{self.status}")
        self.message = message
        super().__init__(f"{self.status_name}: {message}" if message else self.status_name)


class InvalidArgumentError(MetamorphError, ValueError):
    status = N.MM_ERR_INVALID_ARGUMENT


class ClosedError(InvalidArgumentError):
    """The Python object's handle was already closed (freed)."""


class IOError_(MetamorphError, OSError):
    status = N.MM_ERR_IO


class FormatError(MetamorphError):
    status = N.MM_ERR_FORMAT


class UnsupportedError(MetamorphError):
    status = N.MM_ERR_UNSUPPORTED


class OutOfMemoryError(MetamorphError, MemoryError):
    status = N.MM_ERR_OUT_OF_MEMORY


class ContextFullError(MetamorphError):
    status = N.MM_ERR_CONTEXT_FULL


class CancelledError(MetamorphError):
    status = N.MM_ERR_CANCELLED


class BusyError(MetamorphError):
    status = N.MM_ERR_BUSY


class BufferTooSmallError(MetamorphError):
    status = N.MM_ERR_BUFFER_TOO_SMALL


class InvalidUTF8Error(MetamorphError, ValueError):
    status = N.MM_ERR_INVALID_UTF8


class OutOfRangeError(MetamorphError, IndexError):
    status = N.MM_ERR_OUT_OF_RANGE


class InternalError(MetamorphError):
    status = N.MM_ERR_INTERNAL


class ABIMismatchError(MetamorphError):
    status = N.MM_ERR_ABI_MISMATCH


_STATUS_NAMES = {
    N.MM_OK: "MM_OK",
    N.MM_ERR_INVALID_ARGUMENT: "MM_ERR_INVALID_ARGUMENT",
    N.MM_ERR_IO: "MM_ERR_IO",
    N.MM_ERR_FORMAT: "MM_ERR_FORMAT",
    N.MM_ERR_UNSUPPORTED: "MM_ERR_UNSUPPORTED",
    N.MM_ERR_OUT_OF_MEMORY: "MM_ERR_OUT_OF_MEMORY",
    N.MM_ERR_CONTEXT_FULL: "MM_ERR_CONTEXT_FULL",
    N.MM_ERR_CANCELLED: "MM_ERR_CANCELLED",
    N.MM_ERR_BUSY: "MM_ERR_BUSY",
    N.MM_ERR_BUFFER_TOO_SMALL: "MM_ERR_BUFFER_TOO_SMALL",
    N.MM_ERR_INVALID_UTF8: "MM_ERR_INVALID_UTF8",
    N.MM_ERR_OUT_OF_RANGE: "MM_ERR_OUT_OF_RANGE",
    N.MM_ERR_INTERNAL: "MM_ERR_INTERNAL",
    N.MM_ERR_ABI_MISMATCH: "MM_ERR_ABI_MISMATCH",
}

_BY_STATUS = {
    N.MM_ERR_INVALID_ARGUMENT: InvalidArgumentError,
    N.MM_ERR_IO: IOError_,
    N.MM_ERR_FORMAT: FormatError,
    N.MM_ERR_UNSUPPORTED: UnsupportedError,
    N.MM_ERR_OUT_OF_MEMORY: OutOfMemoryError,
    N.MM_ERR_CONTEXT_FULL: ContextFullError,
    N.MM_ERR_CANCELLED: CancelledError,
    N.MM_ERR_BUSY: BusyError,
    N.MM_ERR_BUFFER_TOO_SMALL: BufferTooSmallError,
    N.MM_ERR_INVALID_UTF8: InvalidUTF8Error,
    N.MM_ERR_OUT_OF_RANGE: OutOfRangeError,
    N.MM_ERR_INTERNAL: InternalError,
    N.MM_ERR_ABI_MISMATCH: ABIMismatchError,
}


def error_for(status, message, status_name=None):
    """The exception object for a status code (MetamorphError for unknown codes)."""
    cls = _BY_STATUS.get(status, MetamorphError)
    return cls(message, status=status, status_name=status_name)


def check(lib, status, context=None):
    """Raise the matching exception when `status` is not MM_OK; reads the thread's last error.

    Must be called on the thread that made the failing call (mm_last_error is thread-local)."""
    if status == N.MM_OK:
        return
    msg = (lib.mm_last_error() or b"").decode("utf-8", "replace")
    name = (lib.mm_status_name(status) or b"").decode("ascii", "replace")
    if context:
        msg = f"{context}: {msg}" if msg else context
    raise error_for(status, msg, name)
