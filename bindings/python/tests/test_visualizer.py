"""The visualizer through the C ABI: render, progress, cancel, bad input."""
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
FIX = Path(__file__).resolve().parents[3] / "Tests" / "Fixtures" / "visualizer"


@pytest.fixture(scope="module")
def viz(mm):
    v = mm.Visualizer(FIX / "tiny")
    yield v
    v.close()


def tokens():
    t = np.load(FIX / "visual_tokens.npy")
    return t.reshape(-1, t.shape[-1])


def test_render_is_deterministic_and_reports_progress(viz):
    seen = []
    a = viz.render(tokens(), steps=3, seed=5, on_progress=lambda s, n: seen.append((s, n)))
    b = viz.render(tokens(), steps=3, seed=5)
    c = viz.render(tokens(), steps=3, seed=6)
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    assert (a == b).all() and not (a == c).all()
    assert seen and seen[-1][0] == seen[-1][1]


def test_render_cancel_and_bad_input(viz, mm):
    with pytest.raises(mm.CancelledError):
        viz.render(tokens(), steps=3, on_progress=lambda s, n: True)
    with pytest.raises(mm.MetamorphError):
        viz.render(np.zeros((64, 7), np.float32), steps=2)
    with pytest.raises(mm.MetamorphError):
        mm.Visualizer(FIX / "does-not-exist")
