"""Library-level checks: version, ABI, struct mirrors, status names, logging, threads."""
import ctypes
import os
import subprocess
import sys

import pytest

import metamorph
from metamorph import _native as N


def test_abi_and_version():
    assert metamorph.abi_version() == N.ABI_VERSION == 1
    v = metamorph.library_version()
    parts = v.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts), v
    assert os.path.exists(metamorph.library_path())


@pytest.mark.parametrize("which", sorted(N.STRUCT_MIRRORS))
def test_struct_sizes_match_library(which):
    assert metamorph.struct_size(which) == ctypes.sizeof(N.STRUCT_MIRRORS[which])
    assert metamorph.struct_size(which) > 0


def test_struct_size_unknown_is_zero():
    assert metamorph.struct_size(0) == 0
    assert metamorph.struct_size(999) == 0


def test_every_header_function_declared():
    """Each MM_API function of include/metamorph.h has a prototype in the binding."""
    import re
    header = os.path.join(os.path.dirname(__file__), "..", "..", "..", "include", "metamorph.h")
    if not os.path.exists(header):
        pytest.skip("not a repository checkout")
    text = open(header).read()
    names = set(re.findall(r"MM_API[^;(]*?\b(mm_\w+)\s*\(", text))
    declared = {name for name, _, _ in N.PROTOTYPES}
    assert names, "no MM_API functions parsed"
    assert names == declared


def test_status_names():
    assert metamorph.status_name(0) == "MM_OK"
    assert metamorph.status_name(N.MM_ERR_IO) == "MM_ERR_IO"
    assert metamorph.status_name(N.MM_ERR_INVALID_UTF8) == "MM_ERR_INVALID_UTF8"
    assert metamorph.status_name(12345)       # never NULL
    assert metamorph.status_name(-1)


def test_error_classes():
    e = metamorph.errors.error_for(N.MM_ERR_CONTEXT_FULL, "full")
    assert isinstance(e, metamorph.ContextFullError) and isinstance(e, metamorph.MetamorphError)
    assert e.status == N.MM_ERR_CONTEXT_FULL and e.status_name == "MM_ERR_CONTEXT_FULL" and e.message == "full"
    assert type(metamorph.errors.error_for(999, "x")) is metamorph.MetamorphError


def test_default_threads():
    old = metamorph.get_default_threads()
    assert old >= 1
    metamorph.set_default_threads(3)
    assert metamorph.get_default_threads() == 3
    metamorph.set_default_threads(0)
    assert metamorph.get_default_threads() >= 1


def test_log_callback_receives_errors(tmp_path):
    got = []
    metamorph.set_log_callback(lambda level, msg: got.append((level, msg)), metamorph.LOG_DEBUG)
    try:
        with pytest.raises(metamorph.MetamorphError):
            metamorph.Model(tmp_path / "does-not-exist")
    finally:
        metamorph.set_log_callback(None)
    assert all(isinstance(m, str) for _, m in got)


def test_load_errors_are_typed(tmp_path):
    with pytest.raises(metamorph.MetamorphError) as ei:
        metamorph.Model(tmp_path / "nope")
    assert ei.value.status in (N.MM_ERR_IO, N.MM_ERR_INVALID_ARGUMENT)
    assert ei.value.message
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{ not json")
    with pytest.raises(metamorph.MetamorphError) as ei:
        metamorph.Model(bad)
    assert ei.value.status in (N.MM_ERR_FORMAT, N.MM_ERR_IO)


def test_library_env_var_must_exist(tmp_path):
    env = dict(os.environ, METAMORPH_LIBRARY=str(tmp_path / "missing.so"))
    pkg = os.path.join(os.path.dirname(__file__), "..")
    r = subprocess.run([sys.executable, "-c", "import metamorph"], env=env, cwd=pkg,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "METAMORPH_LIBRARY" in r.stderr


def test_mismatched_mirror_refused(monkeypatch):
    class Wrong(ctypes.Structure):
        _fields_ = [("struct_size", ctypes.c_uint32)]
    monkeypatch.setitem(N.STRUCT_MIRRORS, N.MM_STRUCT_TIMINGS, Wrong)
    with pytest.raises(N.LibraryNotFoundError, match="mm_timings|Wrong"):
        N.load(metamorph.library_path())


def test_wrong_abi_refused(monkeypatch):
    monkeypatch.setattr(N, "ABI_VERSION", 999)
    with pytest.raises(N.LibraryNotFoundError, match="ABI version"):
        N.load(metamorph.library_path())
