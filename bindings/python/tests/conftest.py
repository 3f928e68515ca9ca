"""Fixtures: tiny checkpoints made by tools/make_checkpoints.py, golden data, loaded models.

Environment:
  METAMORPH_LIBRARY        libmetamorph.so to test (else the package's own search)
  METAMORPH_TEST_CKPT_DIR  a directory already holding the variants (else they are generated
                           into a temporary directory once per test session)
"""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(HERE.parent))          # the package from this checkout, installed or not

VARIANTS = ("mm-f32", "mm-bf16-sharded", "llama-f16")
EOS_IDS = (128001, 128008, 128009)
GOLDEN_DIR = Path(os.environ.get("METAMORPH_GOLDEN_DIR") or REPO / "Tests" / "Fixtures" / "golden")
_CKPT_DIR = None          # set by the ckpt_dir fixture, for the golden checksum check
_verified = {}


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory):
    env = os.environ.get("METAMORPH_TEST_CKPT_DIR")
    if env:
        d = Path(env)
        missing = [v for v in VARIANTS if not (d / v / "config.json").exists()]
        if not missing:
            return d
        out = d
    else:
        out = tmp_path_factory.mktemp("ckpt")
    tool = REPO / "tools" / "make_checkpoints.py"
    if not tool.exists():
        pytest.skip(f"{tool} is missing")
    subprocess.run([sys.executable, str(tool), "--out", str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


@pytest.fixture(scope="session", autouse=True)
def _remember_ckpt_dir(request):
    global _CKPT_DIR
    _CKPT_DIR = request.getfixturevalue("ckpt_dir")


@pytest.fixture(scope="session")
def mm():
    import metamorph
    return metamorph


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def golden(variant):
    p = GOLDEN_DIR / f"{variant}.json"
    if not p.exists():
        pytest.skip(f"no golden data at {p}")
    with open(p) as f:
        doc = json.load(f)
    # The golden ids are only valid for byte-identical checkpoints.
    if variant not in _verified and _CKPT_DIR is not None:
        d = Path(_CKPT_DIR) / variant
        bad = [fn for fn, sha in doc.get("safetensors_sha256", {}).items() if _sha256(d / fn) != sha]
        _verified[variant] = bad
    if _verified.get(variant):
        pytest.fail(f"{variant}: {', '.join(_verified[variant])} differ from the files {p.name} was computed "
                    "from (make_checkpoints.py or NumPy changed; regenerate the golden data)")
    return doc


def golden_case(variant, name):
    for c in golden(variant)["cases"]:
        if c["name"] == name:
            return c
    pytest.skip(f"{variant}: no golden case {name!r}")


def expected_ids(case):
    """The golden greedy ids truncated after the first EOS (the engine stops there), and the
    number of them that are reliable: we stop comparing after a near-tie step (margin < 1e-4)
    where float32 summation order may legitimately flip the argmax."""
    ids = list(case["greedy_ids"])
    for i, t in enumerate(ids):
        if t in EOS_IDS:
            ids = ids[:i + 1]
            break
    margins = case.get("greedy_margins") or []
    for i, m in enumerate(margins[:len(ids)]):
        if m < 1e-4:
            return ids, i + 1
    return ids, len(ids)


@pytest.fixture(scope="session")
def models(ckpt_dir, mm):
    """One loaded model per variant, shared by the tests (a model is immutable)."""
    loaded = {}
    yield lambda v: loaded.setdefault(v, mm.Model(ckpt_dir / v))
    for m in loaded.values():
        try:
            m.close()
        except Exception:
            pass


@pytest.fixture(scope="session")
def model(models):
    return models("mm-f32")


@pytest.fixture
def session(model, mm):
    s = mm.Session(model, n_threads=2)
    yield s
    s.close()
