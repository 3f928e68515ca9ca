"""Tokenizer: round trips, the size-needed protocol, errors, special tokens."""
import ctypes
from ctypes import byref, c_int32, c_size_t

import pytest

import metamorph
from metamorph import _native as N

TEXTS = ["Hello world", "", " leading space", "naïve café — 東京 🚀", "a\nb\tc  d", "1234567890",
         "<|begin_of_text|>special", "What is the capital of France?"]


@pytest.fixture(scope="module")
def tok(ckpt_dir):
    t = metamorph.Tokenizer(ckpt_dir / "mm-f32" / "tokenizer.json")
    yield t
    t.close()


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert tok.decode(ids) == text


def test_bos_and_specials(tok):
    assert tok.bos_id == 128000
    assert tok.encode("Hello world", add_bos=True)[0] == 128000
    assert tok.encode("Hello world", add_bos=True)[1:] == tok.encode("Hello world")
    assert tok.eot_id == 128009
    assert tok.eos_id == 128001
    assert tok.image_start_id == 128256 and tok.image_end_id == 128257
    assert tok.vocab_size == 128258 == len(tok)
    assert tok.is_special(128000) and not tok.is_special(9906)
    assert tok.lookup("<|eot_id|>") == 128009
    assert tok.lookup("Hello") == 9906
    assert tok.lookup("this is surely not one token") is None


def test_special_text_is_matched(tok):
    assert tok.encode("<|eot_id|>") == [128009]
    assert tok.encode("a<|start_header_id|>b")[1] == 128006
    with pytest.raises(metamorph.UnsupportedError):
        tok.encode("<|eot_id|>", parse_special=False)


def test_skip_special(tok):
    ids = tok.encode("Hi<|eot_id|>")
    assert tok.decode(ids, skip_special=True) == "Hi"
    assert tok.decode(ids) == "Hi<|eot_id|>"


def test_token_to_piece(tok):
    assert tok.token_to_piece(9906) == b"Hello"
    assert tok.token_to_piece(128009) == b"<|eot_id|>"
    # the pieces of a multi-byte character concatenate to its bytes
    ids = tok.encode("🚀")
    assert b"".join(tok.token_to_piece(i) for i in ids) == "🚀".encode()
    with pytest.raises(metamorph.OutOfRangeError):
        tok.token_to_piece(10 ** 6)


def test_size_needed_protocol_raw(tok):
    """The C protocol itself: capacity 0 reports the size; a short buffer is refused with the
    size; the exact size works."""
    lib = N.load()
    h = tok._h()
    text = b"The quick brown fox"
    need = c_size_t(123)
    st = lib.mm_tokenize(h, text, len(text), 0, None, 0, byref(need))
    assert st == N.MM_ERR_BUFFER_TOO_SMALL and need.value == len(tok.encode(text))
    small = (c_int32 * (need.value - 1))()
    n2 = c_size_t(0)
    assert lib.mm_tokenize(h, text, len(text), 0, small, need.value - 1, byref(n2)) == N.MM_ERR_BUFFER_TOO_SMALL
    assert n2.value == need.value
    buf = (c_int32 * need.value)()
    assert lib.mm_tokenize(h, text, len(text), 0, buf, need.value, byref(n2)) == N.MM_OK
    ids = list(buf)
    # detokenize: NUL written only when it fits
    nb = c_size_t(0)
    arr = (c_int32 * len(ids))(*ids)
    assert lib.mm_detokenize(h, arr, len(ids), 0, None, 0, byref(nb)) == N.MM_ERR_BUFFER_TOO_SMALL
    assert nb.value == len(text)
    out = ctypes.create_string_buffer(b"\xff" * (nb.value + 1), nb.value + 1)
    assert lib.mm_detokenize(h, arr, len(ids), 0, out, nb.value, byref(nb)) == N.MM_OK
    assert out.raw[:nb.value] == text and out.raw[nb.value] == 0xFF        # exact fit: no NUL
    assert lib.mm_detokenize(h, arr, len(ids), 0, out, nb.value + 1, byref(nb)) == N.MM_OK
    assert out.raw[nb.value] == 0                                           # room: NUL written
    # empty text needs nothing and succeeds with capacity 0
    assert lib.mm_tokenize(h, b"", 0, 0, None, 0, byref(need)) == N.MM_OK and need.value == 0


def test_invalid_utf8(tok):
    for bad in (b"abc\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"ok\xc0\xafok"):
        with pytest.raises(metamorph.InvalidUTF8Error) as ei:
            tok.encode(bad)
        assert ei.value.status == N.MM_ERR_INVALID_UTF8
        assert ei.value.status_name == "MM_ERR_INVALID_UTF8"
        assert ei.value.message
    with pytest.raises(metamorph.InvalidUTF8Error):
        tok.encode("lone surrogate \udc80")
    with pytest.raises(metamorph.InvalidUTF8Error):
        tok.lookup(b"\xff")
    assert tok.encode("valid é".encode()) == tok.encode("valid é")


def test_decode_out_of_range(tok):
    for bad in ([128258], [-1], [5, 10 ** 7], [2 ** 40]):
        with pytest.raises(metamorph.OutOfRangeError) as ei:
            tok.decode(bad)
        assert ei.value.status == N.MM_ERR_OUT_OF_RANGE
    with pytest.raises(metamorph.OutOfRangeError):
        tok.is_special(128258)


def test_decode_incomplete_utf8_gives_replacement(tok):
    ids = tok.encode("🚀")
    if len(ids) < 2:
        pytest.skip("the emoji is a single token")
    assert "\ufffd" in tok.decode(ids[:1])


def test_numpy_ids(tok):
    np = pytest.importorskip("numpy")
    ids = tok.encode("Hello world")
    assert tok.decode(np.array(ids, dtype=np.int64)) == "Hello world"


def test_from_bytes_and_directory(ckpt_dir, tok):
    data = (ckpt_dir / "mm-f32" / "tokenizer.json").read_bytes()
    with metamorph.Tokenizer.from_bytes(data) as t2:
        assert t2.encode("Hello world") == tok.encode("Hello world")
    with metamorph.Tokenizer(ckpt_dir / "mm-f32") as t3:      # a directory holding tokenizer.json
        assert t3.vocab_size == tok.vocab_size
    with pytest.raises(metamorph.MetamorphError):
        metamorph.Tokenizer.from_bytes(b"{ not json")


def test_plain_llama_vocab_gets_image_tokens(ckpt_dir):
    """mm-bf16-sharded ships the plain LLaMA-3.1 tokenizer: <image_start>/<image_end> are added."""
    with metamorph.Tokenizer(ckpt_dir / "mm-bf16-sharded" / "tokenizer.json") as t:
        assert t.image_start_id == 128256 and t.image_end_id == 128257


def test_closed_tokenizer_raises(ckpt_dir):
    t = metamorph.Tokenizer(ckpt_dir / "mm-f32" / "tokenizer.json")
    t.close()
    t.close()        # idempotent
    with pytest.raises(metamorph.ClosedError):
        t.encode("x")
    with pytest.raises(metamorph.ClosedError):
        _ = t.vocab_size


def test_model_tokenizer_view(model):
    t = model.tokenizer
    assert t is not None and t is model.tokenizer
    assert t.encode("Hello world") == [9906, 1917]
    t.close()        # a borrowed view: closing it does not free the model's tokenizer
    assert model.tokenizer.encode("Hello") == [9906]
