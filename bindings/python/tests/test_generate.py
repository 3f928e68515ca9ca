"""Generation through Session: golden greedy ids, streaming, stop strings, cancellation,
errors, threads, handle lifetime, memory loading, prompt parts."""
import threading
import time

import pytest

import metamorph
from metamorph import _native as N

from conftest import EOS_IDS, VARIANTS, expected_ids, golden_case

LONG = 1500      # max_tokens for generations that are meant to be interrupted


# --- golden -----------------------------------------------------------------------------------

def _check_ids(got, want, reliable):
    n = min(len(got), len(want), reliable)
    assert n > 0
    assert got[:n] == want[:n], f"first difference at {next(i for i in range(n) if got[i] != want[i])}"
    if reliable >= len(want):          # no near-tie: same length too (same EOS or same budget)
        assert len(got) == len(want)


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_raw(models, variant):
    case = golden_case(variant, "raw")
    want, reliable = expected_ids(case)
    with metamorph.Session(models(variant), n_threads=1) as s:
        r = s.generate("Hello world", raw=True, max_tokens=len(want))
    assert r.prompt_tokens == case["prompt_ids"]
    _check_ids(r.tokens, want, reliable)
    assert r.stop_reason == ("eos" if want[-1] in EOS_IDS else "max_tokens")


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_chat(models, variant):
    case = golden_case(variant, "chat")
    want, reliable = expected_ids(case)
    with metamorph.Session(models(variant), n_threads=2) as s:
        r = s.generate("What is the capital of France?", max_tokens=len(want))
    assert r.prompt_tokens == case["prompt_ids"]
    _check_ids(r.tokens, want, reliable)


@pytest.mark.parametrize("variant", VARIANTS)
def test_golden_token_prompt(models, variant):
    """Raw token parts are fed as they are (the golden prompt ids already start with BOS)."""
    case = golden_case(variant, "raw")
    want, reliable = expected_ids(case)
    ids = case["prompt_ids"]
    assert ids[0] == 128000
    with metamorph.Session(models(variant)) as s:
        r = s.generate([ids], raw=True, max_tokens=len(want))
    assert r.prompt_tokens == ids
    _check_ids(r.tokens, want, reliable)


@pytest.mark.parametrize("variant", VARIANTS)
def test_first_logits_match_golden(models, variant):
    np = pytest.importorskip("numpy")
    from conftest import GOLDEN_DIR
    case = golden_case(variant, "raw")
    if not case.get("logits_file"):
        pytest.skip("no logits file")
    ref = np.load(GOLDEN_DIR / case["logits_file"])
    with metamorph.Session(models(variant)) as s:
        r = s.generate("Hello world", raw=True, max_tokens=1, keep_logits=True)
    assert isinstance(r.logits, np.ndarray) and r.logits.dtype == np.float32
    assert r.logits.shape == ref.shape
    diff = float(np.max(np.abs(r.logits - ref)))
    tol = 1e-3 * max(1.0, float(np.max(np.abs(ref))))
    print(f"{variant}: max |logits - golden| = {diff:.3g} (tolerance {tol:.3g})")
    assert diff <= tol
    assert int(np.argmax(r.logits)) == r.tokens[0]


# --- results and parameters -------------------------------------------------------------------

def test_result_fields(session):
    r = session.generate("Hello world", raw=True, max_tokens=5, seed=7)
    assert isinstance(r, metamorph.Result)
    assert isinstance(r.text, str) and len(r.tokens) <= 5
    assert r.seed == 7 and r.logits is None
    t = r.timings
    for k in ("n_prompt_tokens", "n_generated", "load_ms", "prompt_ms", "generate_ms", "tokens_per_s"):
        assert k in t
    assert t["n_prompt_tokens"] == len(r.prompt_tokens) == 3
    assert t["n_generated"] == len(r.tokens)
    assert t["prompt_ms"] >= 0 and t["generate_ms"] >= 0


def test_seeded_sampling_is_reproducible(model):
    kw = dict(raw=True, max_tokens=12, temperature=0.9, top_k=40, top_p=0.95, min_p=0.01,
              repeat_penalty=1.1, seed=1234)
    with metamorph.Session(model) as a, metamorph.Session(model) as b:
        ra, rb = a.generate("Hello world", **kw), b.generate("Hello world", **kw)
    assert ra.tokens == rb.tokens and ra.seed == rb.seed == 1234
    with metamorph.Session(model) as c:
        rc = c.generate("Hello world", raw=True, max_tokens=12, temperature=0.9)      # random seed
        assert 0 <= rc.seed < 2 ** 64
    with metamorph.Session(model) as d:
        rd = d.generate("Hello world", raw=True, max_tokens=12, temperature=0.9, seed=rc.seed)
    assert rd.tokens == rc.tokens


def test_conversation_and_reset(session):
    assert session.n_past == 0
    r1 = session.generate("Hi", max_tokens=4)
    p1 = session.n_past
    assert p1 >= len(r1.prompt_tokens)
    session.generate("And then?", max_tokens=4)
    assert session.n_past > p1
    session.reset()
    assert session.n_past == 0


def test_assistant_prefix(session, model):
    r = session.generate("Hi", max_tokens=3, assistant_prefix="Sure")
    tail = model.tokenizer.encode("Sure")
    assert r.prompt_tokens[-len(tail):] == tail


def test_on_text_callback_gets_the_text(session):
    pieces = []
    r = session.generate("Hello world", raw=True, max_tokens=16, on_text=pieces.append)
    assert "".join(pieces) == r.text


def test_on_text_can_stop_and_raise(model):
    with metamorph.Session(model) as s:
        calls = []
        r = s.generate("Hello world", raw=True, max_tokens=LONG, temperature=0.8, seed=3,
                       on_text=lambda t: calls.append(t) or len(calls) >= 2)
        assert r.stop_reason == "cancelled" and len(r.tokens) < LONG
        def boom(_):
            raise KeyError("from the callback")
        with pytest.raises(KeyError, match="from the callback"):
            s.generate("Hello world", raw=True, max_tokens=LONG, temperature=0.8, seed=3, on_text=boom)
        s.generate("Hello", raw=True, max_tokens=2)           # the session is still usable


# --- streaming --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw,prompt", [(True, "Hello world"), (False, "What is the capital of France?")])
def test_stream_matches_generate(model, raw, prompt):
    with metamorph.Session(model) as a:
        r = a.generate(prompt, raw=raw, max_tokens=24)
    with metamorph.Session(model) as b:
        st = b.stream(prompt, raw=raw, max_tokens=24)
        pieces = list(st)
        assert st.done and st.result is not None
    assert "".join(pieces) == r.text == st.result.text
    assert st.result.tokens == r.tokens
    assert st.result.stop_reason == r.stop_reason


def test_stream_cancel_on_close(model):
    with metamorph.Session(model) as s:
        st = s.stream("Hello world", raw=True, max_tokens=LONG, temperature=0.8, seed=5)
        first = next(st)
        assert isinstance(first, str)
        st.close()
        assert st.done
        assert st.result is None or st.result.stop_reason in ("cancelled", "eos")
        if st.result is not None and st.result.stop_reason == "cancelled":
            assert len(st.result.tokens) < LONG
        # the session is free again, and a stale cancel does not hit the next generation
        r = s.generate("Hello world", raw=True, max_tokens=3)
        assert r.stop_reason in ("max_tokens", "eos")


def test_stream_break_in_for_loop_then_del(model):
    s = metamorph.Session(model)
    for _piece in s.stream("Hello world", raw=True, max_tokens=LONG, temperature=0.8, seed=6):
        break
    import gc
    gc.collect()
    assert s.generate("Hello", raw=True, max_tokens=2).tokens    # the dropped stream freed its job
    s.close()


def test_stream_errors_surface(model):
    with metamorph.Session(model, n_ctx=8) as s:
        with pytest.raises(metamorph.ContextFullError):
            st = s.stream("What is the capital of France? " * 4, max_tokens=4)
            list(st)
    with metamorph.Session(model) as s:
        with pytest.raises(metamorph.InvalidArgumentError):
            s.stream("x", max_tokens=0).wait()


# --- stop strings -----------------------------------------------------------------------------

def test_stop_strings(model):
    with metamorph.Session(model) as s:
        full = s.generate("Hello world", raw=True, max_tokens=40).text
    if len(full) < 8:
        pytest.skip(f"greedy text too short for the test: {full!r}")
    i = len(full) // 2
    stop = full[i:i + 3]
    expect = full[:full.find(stop)]
    with metamorph.Session(model) as s:
        r = s.generate("Hello world", raw=True, max_tokens=40, stop=[stop, "\x01never"])
    assert r.stop_reason == "stop_string"
    assert r.text == expect
    with metamorph.Session(model) as s:
        st = s.stream("Hello world", raw=True, max_tokens=40, stop=stop)
        assert "".join(st) == expect
        assert st.result.stop_reason == "stop_string"


# --- cancellation -----------------------------------------------------------------------------

def test_cancel_from_another_thread(model):
    with metamorph.Session(model) as s:
        started = threading.Event()
        def canceller():
            started.wait(30)
            s.cancel()
        t = threading.Thread(target=canceller)
        t.start()
        r = s.generate("Hello world", raw=True, max_tokens=LONG, temperature=0.8, seed=11,
                       on_text=lambda _t: started.set())
        t.join()
        if r.stop_reason == "eos":
            pytest.skip("the sampled reply ended before the cancel arrived")
        assert r.stop_reason == "cancelled"
        assert 0 < len(r.tokens) < LONG
        # the latch was consumed: the next generation runs normally
        assert s.generate("Hello", raw=True, max_tokens=2).stop_reason in ("max_tokens", "eos")


def test_cancel_before_start_is_latched(session):
    session.cancel()
    with pytest.raises(metamorph.CancelledError) as ei:
        session.generate("Hello", raw=True, max_tokens=4)
    assert ei.value.status == N.MM_ERR_CANCELLED
    assert session.generate("Hello", raw=True, max_tokens=2).tokens


# --- errors -----------------------------------------------------------------------------------

def test_context_full(model):
    with metamorph.Session(model, n_ctx=8) as s:
        with pytest.raises(metamorph.ContextFullError) as ei:
            s.generate("What is the capital of France?", max_tokens=4)
        assert ei.value.status == N.MM_ERR_CONTEXT_FULL and "context" in ei.value.message
        assert s.n_past == 0                                  # nothing changed
        r = s.generate("Hi", raw=True, max_tokens=100)        # fits, then fills up while generating
        assert r.stop_reason == "context_full" and len(r.tokens) < 100
        assert s.n_past <= 8


@pytest.mark.parametrize("bad", [0, -1])
def test_max_tokens_must_be_positive(session, bad):
    with pytest.raises(metamorph.InvalidArgumentError) as ei:
        session.generate("Hello", max_tokens=bad)
    assert ei.value.status == N.MM_ERR_INVALID_ARGUMENT


def test_bad_sampling_parameters(session):
    for kw in (dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=2.0), dict(top_k=-3),
               dict(repeat_penalty=0.0)):
        with pytest.raises(metamorph.InvalidArgumentError):
            session.generate("Hello", max_tokens=2, **kw)


def test_prompt_errors(session):
    with pytest.raises(metamorph.InvalidUTF8Error):
        session.generate(b"bad \xff bytes", max_tokens=2)
    with pytest.raises(metamorph.InvalidArgumentError):
        session.generate([], max_tokens=2)
    with pytest.raises(metamorph.InvalidArgumentError):
        session.generate([[9906, 1917]], max_tokens=2)               # tokens need raw mode
    with pytest.raises(metamorph.OutOfRangeError):
        session.generate([[9906, 10 ** 6]], raw=True, max_tokens=2)
    with pytest.raises(TypeError):
        session.generate(3.5, max_tokens=2)
    assert session.n_past == 0


def test_images_are_passed_and_refused_as_unsupported(session):
    np = pytest.importorskip("numpy")
    rgb = np.zeros((8, 6, 3), dtype=np.uint8)
    rgba = np.full((5, 7, 4), 200, dtype=np.uint8)
    padded = np.zeros((8, 10, 3), dtype=np.uint8)[:, :6]               # rows padded: stride 30
    for img in (rgb, rgba, padded, rgb[::-1]):
        with pytest.raises(metamorph.UnsupportedError) as ei:
            session.generate(["Describe", img], max_tokens=2)
        assert ei.value.status == N.MM_ERR_UNSUPPORTED
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        for mode in ("RGB", "RGBA", "L"):
            with pytest.raises(metamorph.UnsupportedError):
                session.generate([Image.new(mode, (4, 3)), "What is this?"], max_tokens=2)
    with pytest.raises(TypeError):
        session.generate([np.zeros((4, 4, 2), dtype=np.uint8)], max_tokens=2)
    with pytest.raises(TypeError):
        session.generate([np.zeros((4, 4, 3), dtype=np.float32)], max_tokens=2)
    assert session.n_past == 0


# --- sessions, busy, threads ------------------------------------------------------------------

def test_busy_while_a_stream_runs(model):
    with metamorph.Session(model) as s:
        st = s.stream("Hello world", raw=True, max_tokens=LONG, temperature=0.8, seed=21)
        with pytest.raises(metamorph.BusyError) as ei:
            s.generate("Hello", max_tokens=2)
        assert ei.value.status == N.MM_ERR_BUSY
        with pytest.raises(metamorph.BusyError):
            s.stream("Hello", max_tokens=2)
        with pytest.raises(metamorph.BusyError):
            s.reset()
        # the library itself refuses a second job on the session
        lib = N.load()
        part = N.mm_prompt_part(struct_size=N.ctypes.sizeof(N.mm_prompt_part), kind=N.MM_PART_TEXT,
                                text=b"Hi", text_len=2)
        job = N.ctypes.c_void_p()
        assert lib.mm_job_start(s._h(), N.ctypes.byref(part), 1, None, N.ctypes.byref(job)) == N.MM_ERR_BUSY
        st.close()
        assert s.generate("Hello", raw=True, max_tokens=2).tokens


def test_busy_from_the_library(model):
    """A second generate on the same session while the first is inside its callback."""
    with metamorph.Session(model) as s:
        inside, release, errors = threading.Event(), threading.Event(), []
        def on_text(_t):
            inside.set()
            release.wait(30)
        def first():
            try:
                s.generate("Hello world", raw=True, max_tokens=3, on_text=on_text)
            except Exception as e:  # pragma: no cover
                errors.append(e)
        t = threading.Thread(target=first)
        t.start()
        assert inside.wait(30)
        try:
            with pytest.raises(metamorph.BusyError):
                s.generate("Hi", raw=True, max_tokens=2)
            with pytest.raises(metamorph.BusyError):
                s.reset()
        finally:
            release.set()
            t.join()
        assert not errors


def test_two_threads_two_sessions(model):
    with metamorph.Session(model) as s:
        ref = s.generate("Hello world", raw=True, max_tokens=16).tokens
    barrier = threading.Barrier(2)
    out, errors = {}, []
    def worker(k):
        try:
            with metamorph.Session(model, n_threads=1) as s:
                barrier.wait()
                out[k] = s.generate("Hello world", raw=True, max_tokens=16).tokens
        except Exception as e:  # pragma: no cover
            errors.append(e)
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert out[0] == ref and out[1] == ref


def test_set_threads(session):
    session.set_threads(1)
    a = session.generate("Hello world", raw=True, max_tokens=6).tokens
    session.reset()
    session.set_threads(0)
    assert session.generate("Hello world", raw=True, max_tokens=6).tokens == a


# --- lifetime ---------------------------------------------------------------------------------

def test_closed_handles_raise(ckpt_dir):
    m = metamorph.Model(ckpt_dir / "mm-f32")
    tok = m.tokenizer
    s = metamorph.Session(m)
    with pytest.raises(metamorph.BusyError):
        m.close()                                           # a session is still open
    assert not m.closed
    s.close()
    s.close()                                               # idempotent
    for call in (lambda: s.generate("x", max_tokens=1), lambda: s.n_past, s.reset, s.cancel,
                 lambda: s.stream("x", max_tokens=1)):
        with pytest.raises(metamorph.ClosedError):
            call()
    m.close()
    assert m.closed
    for call in (lambda: m.info, lambda: m.model_type, lambda: m.tokenizer, lambda: metamorph.Session(m),
                 lambda: tok.encode("x")):
        with pytest.raises(metamorph.ClosedError):
            call()
    m.close()


def test_context_managers_and_gc(ckpt_dir):
    import gc
    with metamorph.Model(ckpt_dir / "mm-bf16-sharded") as m:
        assert m.model_type == "metamorph_llama"
        with m.session() as s:
            s.generate("Hello", raw=True, max_tokens=2)
        assert s.closed
    assert m.closed
    # dropping objects without close() frees them (sessions before their model)
    m = metamorph.Model(ckpt_dir / "mm-bf16-sharded")
    s = metamorph.Session(m)
    tok = m.tokenizer
    del m, s
    gc.collect()
    assert tok.encode("Hello") == [9906]                   # the view keeps its model alive
    del tok
    gc.collect()


def test_model_info(models):
    m = models("mm-f32")
    info = m.info
    assert m.model_type == "metamorph_llama"
    assert info["vocab_size"] == 128258 and info["hidden_size"] == 64 and info["n_layers"] == 2
    assert info["max_positions"] == 2048
    assert info["num_image_tokens"] == 4 and info["mm_hidden_size"] == 32
    assert isinstance(info["has_vision_input"], bool)
    llama = models("llama-f16")
    assert llama.model_type == "llama" and llama.info["vocab_size"] == 128256


def test_load_options(ckpt_dir):
    base = ckpt_dir / "mm-f32"
    with metamorph.Model(base, use_mmap=False, tokenizer_path=ckpt_dir / "llama-f16" / "tokenizer.json") as m:
        assert m.tokenizer.encode("Hello") == [9906]
        with m.session() as s:
            assert s.generate("Hello world", raw=True, max_tokens=4).tokens


@pytest.mark.parametrize("borrow", [False, True])
def test_from_memory(ckpt_dir, model, borrow):
    d = ckpt_dir / "mm-bf16-sharded"
    files = {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}
    if borrow:
        files = {k: bytearray(v) if k.endswith(".safetensors") else v for k, v in files.items()}
    with metamorph.Model(d) as disk, metamorph.Session(disk) as s:
        want = s.generate("Hello world", raw=True, max_tokens=8).tokens
    m = metamorph.Model.from_memory(files, borrow=borrow)
    del files                                   # borrowed buffers are kept alive by the model
    import gc
    gc.collect()
    with metamorph.Session(m) as s:
        assert s.generate("Hello world", raw=True, max_tokens=8).tokens == want
    m.close()
    with pytest.raises(metamorph.MetamorphError):
        metamorph.Model.from_memory({"config.json": b"{}"})


def test_visual_tokens_as_numpy(session):
    """A reply forced to open with <image_start> yields one image of visual tokens (numpy)."""
    np = pytest.importorskip("numpy")
    r = session.generate("Generate an image of a red star.",
                         assistant_prefix="Here is an image based on your request: <image_start>",
                         max_tokens=6)
    assert len(r.images) == 1
    img = r.images[0]
    assert img.dtype == np.float32 and img.shape == (4, 32)   # mm-f32: num_image_tokens 4, mm_hidden 32
    assert r.images_complete == [True]
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)  # normalize_vision
    assert len(r.tokens) == 2                                # 4 visual + 2 text positions = 6


def test_image_cut_by_max_tokens_is_flagged(session):
    r = session.generate("Draw", assistant_prefix="<image_start>", max_tokens=3)
    assert r.stop_reason == "max_tokens"
    assert r.images[0].shape[0] == 3 and r.images_complete == [False]


def test_numpy_and_pil_images_in_prompt(ckpt_dir, mm):
    """Images as numpy arrays (RGB and RGBA) and PIL images reach the vision tower."""
    np = pytest.importorskip("numpy")
    from pathlib import Path
    root = Path(__file__).resolve().parents[3] / "Tests" / "Fixtures"
    tower = root / "siglip" / "c32_l-1_t4_norm_mlp2x"
    img = np.load(root / "golden_understanding" / "image_a.npy")          # uint8 HxWx3
    golden = __import__("json").load(open(root / "golden_understanding" / "golden.json"))
    case = [c for c in golden["cases"] if c["n_images"] == 1][0]
    with mm.Model(ckpt_dir / "mm-f32", vision_tower_path=tower) as m, mm.Session(m, n_threads=1) as s:
        r = s.generate([img, case["question"]], max_tokens=len(case["greedy_ids"]))
        assert r.prompt_tokens == case["prompt_ids"]
        want = case["greedy_ids"]
        eos = {128001, 128008, 128009}
        if any(t in eos for t in want):
            want = want[:next(i for i, t in enumerate(want) if t in eos) + 1]
        assert r.tokens == want
        s.reset()
        rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
        r2 = s.generate([rgba, case["question"]], max_tokens=len(want))
        assert r2.tokens == r.tokens                                       # alpha is dropped
        try:
            from PIL import Image
        except ImportError:
            return
        s.reset()
        r3 = s.generate([Image.fromarray(img), case["question"]], max_tokens=len(want))
        assert r3.tokens == r.tokens
