#!/usr/bin/env python3
"""Compute golden LLaMA outputs for the tiny checkpoints of tools/make_checkpoints.py.

Reference = Hugging Face transformers' LlamaForCausalLM in float32 with eager attention
(MetaMorph's language model is exactly that class; transformers has no metamorph class,
so the mm fields of config.json are dropped and the mm tensors ignored).

Needs torch, transformers, tokenizers, safetensors, numpy (NOT needed in CI: the outputs
are committed under Tests/Fixtures/golden/).

Usage:
  python3 tools/golden_llama.py [--ckpt-dir DIR] [--out Tests/Fixtures/golden] [--only NAME ...]

Without --ckpt-dir the checkpoints are generated twice into a temporary directory and
compared byte for byte (determinism check). With --ckpt-dir, DIR/NAME/ is used and
compared against a fresh generation.
"""

import argparse
import copy
import filecmp
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MAKE = os.path.join(HERE, "make_checkpoints.py")
sys.path.insert(0, HERE)
import make_checkpoints as mk  # noqa: E402  (numpy only; used for variant names)

GREEDY_STEPS = 40
MIN_DISTINCT = 5
TOPK_LONG = 50
MM_PREFIXES = ("model.mm_projector.", "vision_head.", "model.vision_proj.", "model.vision_tower.")
MM_CONFIG_KEYS = set(mk.MM_FIELDS)

CHAT_TEMPLATE = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n{message}<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n")
LONG_TEXT = (
    "The lighthouse keeper climbed the narrow spiral stairs every evening at dusk, carrying a "
    "small brass lantern and a notebook filled with careful observations about the weather. "
    "Over thirty years he had recorded the direction of the wind, the height of the waves, the "
    "colour of the sky at sunset, and the names of the ships that passed along the rocky coast. "
    "Some nights the fog rolled in so thick that the great lamp seemed to glow inside a cloud of "
    "milk, and he would sound the horn until his arms ached. On clear winter nights he could see "
    "the lights of the fishing village across the bay, and he liked to imagine the families "
    "gathered around their tables, sharing bread and stories. When the new automatic beacon was "
    "finally installed, he packed his notebooks into a wooden crate and gave them to the village "
    "library, where children still read them today."
)
CASES = [
    ("chat", "template", "What is the capital of France?"),
    ("raw", "raw", "Hello world"),
    ("long", "raw", LONG_TEXT),
]
FULL_LOGITS_CASES = ("chat", "raw")  # "long" stores only the top-50 (id, logit) pairs


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_make(out, names):
    t0 = time.time()
    subprocess.run([sys.executable, MAKE, "--out", out, "--only", *names], check=True,
                   stdout=subprocess.DEVNULL)
    return time.time() - t0


def assert_same_tree(a, b):
    files_a, files_b = sorted(os.listdir(a)), sorted(os.listdir(b))
    if files_a != files_b:
        raise SystemExit(f"determinism: file lists differ: {a} {files_a} vs {b} {files_b}")
    for fn in files_a:
        if not filecmp.cmp(os.path.join(a, fn), os.path.join(b, fn), shallow=False):
            raise SystemExit(f"determinism: {fn} differs between {a} and {b}")


def read_safetensors_numpy(path):
    """Independent decoder (numpy only) used to cross-check the loaded tensors."""
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    assert n % 8 == 0, "header not padded to 8"
    assert header.get("__metadata__") == {"format": "pt"}
    base = 8 + n
    out, end_max = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        buf = raw[base + s:base + e]
        end_max = max(end_max, e)
        if info["dtype"] == "F32":
            a = np.frombuffer(buf, "<f4")
        elif info["dtype"] == "F16":
            a = np.frombuffer(buf, "<f2").astype(np.float32)
        elif info["dtype"] == "BF16":
            a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(info["dtype"])
        out[name] = a.reshape(info["shape"])
    assert base + end_max == len(raw), "trailing bytes after the last tensor"
    return out


def checkpoint_files(ckpt):
    index = os.path.join(ckpt, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            idx = json.load(f)
        files = sorted(set(idx["weight_map"].values()))
        return files, idx
    return ["model.safetensors"], None


def llama3_inv_freq(theta, dim, rs):
    """Independent numpy version of the llama3 RoPE frequency rule; returns (inv_freq, bands)."""
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    if not rs:
        return inv, None
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wl, high_wl = old / lo, old / hi
    out, bands = [], {"kept": 0, "smoothed": 0, "scaled": 0}
    for f in inv:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(f)
            bands["kept"] += 1
        elif wl > low_wl:
            out.append(f / factor)
            bands["scaled"] += 1
        else:
            s = (old / wl - lo) / (hi - lo)
            out.append((1 - s) * f / factor + s * f)
            bands["smoothed"] += 1
    return np.array(out), bands


def versions():
    import tokenizers
    import torch
    import transformers
    import safetensors
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }


# ---------------------------------------------------------------------------
# reference model
# ---------------------------------------------------------------------------

def load_model(ckpt):
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    with open(os.path.join(ckpt, "config.json")) as f:
        cfg_json = json.load(f)
    # deep copy: transformers rewrites the rope_scaling dict in place (adds rope_theta)
    cfg = {k: copy.deepcopy(v) for k, v in cfg_json.items()
           if k not in MM_CONFIG_KEYS and k not in ("model_type", "architectures", "torch_dtype")}
    config = LlamaConfig(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.config._attn_implementation = "eager"

    files, idx = checkpoint_files(ckpt)
    sd, seen = {}, {}
    for fn in files:
        path = os.path.join(ckpt, fn)
        tens = load_file(path)
        ref = read_safetensors_numpy(path)
        assert sorted(tens) == sorted(ref)
        for name, t in tens.items():
            if name in seen:
                raise SystemExit(f"{name} in both {seen[name]} and {fn}")
            seen[name] = fn
            if idx is not None and idx["weight_map"].get(name) != fn:
                raise SystemExit(f"index.json disagrees about {name}")
            t32 = t.to(torch.float32)  # BF16/F16 -> F32 is exact
            if not np.array_equal(t32.numpy(), ref[name]):
                raise SystemExit(f"{fn}:{name}: torch and the numpy decoder disagree")
            if name.startswith(MM_PREFIXES):
                continue
            sd[name] = t32
    if idx is not None:
        assert set(idx["weight_map"]) == set(seen), "index.json lists other tensors than the shards"
        total = sum(os.path.getsize(os.path.join(ckpt, fn)) for fn in files)
        assert idx["metadata"]["total_size"] <= total

    missing, unexpected = model.load_state_dict(sd, strict=False)
    allowed_missing = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise SystemExit(f"strict load failed: missing={missing} unexpected={unexpected}")
    if config.tie_word_embeddings:
        if "lm_head.weight" in sd:
            raise SystemExit("tied checkpoint must not contain lm_head.weight")
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    else:
        assert "lm_head.weight" in sd
    # every parameter came from the file (no random init left)
    for name, p in model.named_parameters():
        src = sd.get(name, sd.get("model.embed_tokens.weight") if name == "lm_head.weight" else None)
        assert src is not None and torch.equal(p.detach(), src), name

    # RoPE: check transformers' frequencies against an independent computation
    head_dim = cfg_json.get("head_dim") or cfg_json["hidden_size"] // cfg_json["num_attention_heads"]
    expect, bands = llama3_inv_freq(cfg_json["rope_theta"], head_dim, cfg_json.get("rope_scaling"))
    got = model.model.rotary_emb.inv_freq.double().numpy()
    if not np.allclose(got, expect, rtol=1e-5, atol=0):
        raise SystemExit(f"inv_freq mismatch:\n{got}\n{expect}")
    if bands is not None and min(bands.values()) == 0:
        raise SystemExit(f"llama3 rope_scaling does not exercise all bands: {bands}")
    with open(os.path.join(ckpt, "config.json")) as f:
        assert json.load(f) == cfg_json, "config.json was modified in memory"
    return model, cfg_json, bands


def make_tokenizer(ckpt, metamorph):
    from tokenizers import AddedToken, Tokenizer
    tok = Tokenizer.from_file(os.path.join(ckpt, "tokenizer.json"))
    if metamorph:
        tok.add_special_tokens([AddedToken("<image_start>", special=True, normalized=False),
                                AddedToken("<image_end>", special=True, normalized=False)])
        assert tok.token_to_id("<image_start>") == mk.IMAGE_START_ID
        assert tok.token_to_id("<image_end>") == mk.IMAGE_END_ID
    return tok


def prompt_ids(tok, kind, text):
    """MetaMorph's tokenizer_image_token: split at <image>, encode each piece with the
    post-processor (BOS prepended), keep the first piece's BOS and drop the others'.
    Our prompts have no <image>, so it is one piece."""
    full = CHAT_TEMPLATE.format(message=text) if kind == "template" else text
    pieces = full.split("<image>")
    ids = []
    for k, piece in enumerate(pieces):
        enc = tok.encode(piece, add_special_tokens=True).ids
        assert enc[0] == 128000
        ids += enc if k == 0 else enc[1:]
        if k + 1 < len(pieces):
            raise SystemExit("image placeholders are not part of the golden prompts")
    if kind == "template":
        assert ids[:2] == [128000, 128000], ids[:4]
    return ids


def run_case(model, ids, steps):
    import torch
    seq = list(ids)
    greedy, margins, first_logits, last_max = [], [], None, None
    with torch.no_grad():
        for step in range(steps):
            out = model(input_ids=torch.tensor([seq], dtype=torch.long), use_cache=False)
            logits = out.logits[0, -1].to(torch.float32)
            if step == 0:
                first_logits = logits.numpy().copy()
            nxt = int(torch.argmax(logits))  # ties -> first index
            top2 = torch.topk(logits, 2).values
            margins.append(float(top2[0] - top2[1]))
            last_max = float(logits[nxt])
            greedy.append(nxt)
            seq.append(nxt)
    return first_logits, greedy, margins, last_max


# ---------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt-dir", help="use DIR/NAME/ instead of generating checkpoints")
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures", "golden"))
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--steps", type=int, default=GREEDY_STEPS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = most reproducible)")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    names = args.only or list(mk.VARIANTS)
    vers = versions()
    print("versions:", json.dumps(vers))

    tmp = tempfile.TemporaryDirectory(prefix="mm_golden_")
    fresh = os.path.join(tmp.name, "a")
    t_make = run_make(fresh, names)
    if args.ckpt_dir:
        ckpt_root = args.ckpt_dir
    else:
        ckpt_root = os.path.join(tmp.name, "b")
        run_make(ckpt_root, names)
    for n in names:
        assert_same_tree(os.path.join(fresh, n), os.path.join(ckpt_root, n))
    print(f"determinism: OK (two generations byte-identical; make_checkpoints {t_make:.2f} s)")

    os.makedirs(args.out, exist_ok=True)
    for name in names:
        ckpt = os.path.join(ckpt_root, name)
        metamorph = mk.VARIANTS[name]["model_type"] == "metamorph_llama"
        model, cfg_json, bands = load_model(ckpt)
        tok = make_tokenizer(ckpt, metamorph)
        files, _ = checkpoint_files(ckpt)
        doc = {
            "variant": name,
            "description": mk.VARIANTS[name]["description"],
            "seed": mk.VARIANTS[name]["seed"],
            "config": cfg_json,
            "safetensors_sha256": {fn: sha256(os.path.join(ckpt, fn)) for fn in files},
            "tokenizer_sha256": sha256(os.path.join(ckpt, "tokenizer.json")),
            "versions": vers,
            "reference": "transformers LlamaForCausalLM, float32, attn_implementation=eager, "
                         "weights upcast exactly to float32; greedy = argmax (first index on ties) "
                         "recomputing the whole sequence each step, no EOS stop",
            "rope_llama3_bands": bands,
            "greedy_steps": args.steps,
            "cases": [],
        }
        for case, kind, text in CASES:
            ids = prompt_ids(tok, kind, text)
            logits, greedy, margins, last_max = run_case(model, ids, args.steps)
            distinct = len(set(greedy))
            max_abs = float(np.max(np.abs(logits)))
            entry = {
                "name": case,
                "prompt": CHAT_TEMPLATE.format(message=text) if kind == "template" else text,
                "prompt_kind": "llama3 chat template, tokenizer_image_token" if kind == "template"
                               else "raw text, add_special_tokens=True (BOS prepended)",
                "prompt_ids": ids,
                "greedy_ids": greedy,
                "greedy_distinct": distinct,
                "greedy_min_margin": min(margins),
                "greedy_margins": [round(m, 6) for m in margins],
                "last_step_max_logit": last_max,
                "logits_max_abs": max_abs,
                "logits_argmax": int(np.argmax(logits)),
            }
            if case in FULL_LOGITS_CASES:
                fn = f"{name}.{case}.logits.npy"
                np.save(os.path.join(args.out, fn), logits.astype("<f4"))
                entry["logits_file"] = fn
            else:
                order = np.argsort(-logits, kind="stable")[:TOPK_LONG]
                entry["logits_file"] = None
                entry["logits_top"] = [[int(i), float(logits[i])] for i in order]
            doc["cases"].append(entry)
            print(f"{name}.{case}: {len(ids)} prompt ids, max|logits| {max_abs:.4f}, "
                  f"greedy distinct {distinct}/{len(greedy)}, min margin {min(margins):.4g}, "
                  f"last max {last_max:.4f}")
            if distinct < MIN_DISTINCT:
                raise SystemExit(f"{name}.{case}: greedy output too repetitive ({distinct} distinct)")
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
