#!/usr/bin/env python3
"""Write small, deterministic, random-weight checkpoints for metamorph's tests.

NumPy only: no torch, no safetensors package. The safetensors files are written by
hand (8-byte little-endian header length, JSON header padded with spaces to a
multiple of 8, then the raw little-endian tensor data).

Every tensor gets its own generator, np.random.default_rng([seed, crc32(name)]),
and is drawn as float32 standard normals (dtype=np.float32) scaled by a std, so
adding or removing a tensor never changes the others. BF16 is the f32 bit pattern
rounded to nearest even; F16 is astype(np.float16). Output is byte-for-byte
reproducible for a given NumPy version (the golden data records the sha256 of
every file it was computed from, so a drift is detected).

Usage:
  python3 tools/make_checkpoints.py --out DIR [--only NAME ...] [--tokenizer PATH]
  python3 tools/make_checkpoints.py --preset tinyllama-f16|tinyllama-mm-f16 --out DIR
  python3 tools/make_checkpoints.py --list
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import time
import zlib

import numpy as np

DEFAULT_TOKENIZER = "/work/shared/fixtures/tokenizer/meta-llama-3.1-8b-instruct/tokenizer.json"
LLAMA3_VOCAB = 128256  # entries of the LLaMA-3.1 tokenizer (128000 BPE + 256 special)
IMAGE_START_ID = 128256
IMAGE_END_ID = 128257

# ---------------------------------------------------------------------------
# dtype conversion and the safetensors writer
# ---------------------------------------------------------------------------

DTYPE_BYTES = {"F32": 4, "BF16": 2, "F16": 2}
TORCH_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def f32_to_bf16_bits(a):
    """float32 array -> uint16 bfloat16 bit patterns, round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounding = np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return ((u + rounding) >> np.uint32(16)).astype(np.uint16)  # no NaN/Inf in our data


def encode(a, dtype):
    """float32 array -> little-endian bytes in the target dtype."""
    if dtype == "F32":
        return np.ascontiguousarray(a, dtype="<f4").tobytes()
    if dtype == "F16":
        return np.ascontiguousarray(a).astype("<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(a).astype("<u2").tobytes()
    raise ValueError(dtype)


def safetensors_header(entries):
    """entries: list of (name, dtype, shape) in file order -> (header bytes, total data size)."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape in entries:
        n = DTYPE_BYTES[dtype] * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text, offset


def write_safetensors(path, entries, producer):
    """Write one file. producer(name) -> bytes of that tensor, or an iterator of byte
    chunks, called in file order, so at most one tensor (or chunk) is in memory."""
    head, total = safetensors_header(entries)
    written = 0
    with open(path, "wb") as f:
        f.write(head)
        for name, dtype, shape in entries:
            data = producer(name)
            want = DTYPE_BYTES[dtype] * int(np.prod(shape, dtype=np.int64))
            if isinstance(data, (bytes, bytearray)):
                f.write(data)
                n = len(data)
            else:  # an iterator of chunks (large tensors are streamed)
                n = 0
                for chunk in data:
                    f.write(chunk)
                    n += len(chunk)
            if n != want:
                raise RuntimeError(f"{name}: wrote {n} bytes, expected {want}")
            written += n
    assert written == total
    return total


# ---------------------------------------------------------------------------
# random tensors
# ---------------------------------------------------------------------------


def tensor_rng(seed, name):
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def normal(seed, name, shape, std, mean=0.0):
    x = tensor_rng(seed, name).standard_normal(shape, dtype=np.float32)
    x *= np.float32(std)
    if mean:
        x += np.float32(mean)
    return x


# ---------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------

LLAMA3_ROPE_SCALING = {
    # original_max_position_embeddings is small on purpose: with theta 500000 and
    # head_dim 16 (or 32) the wavelengths 2*pi*theta^(2i/d) then fall into all three
    # llama3 bands: < 16 kept, 16..64 smoothly interpolated, > 64 divided by 8.
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

MM_FIELDS = {
    "mm_vision_tower": "google/siglip-so400m-patch14-384",
    "mm_hidden_size": 32,
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -1,
    "mm_use_im_start_end": True,
    "mm_use_im_patch_token": False,
    "mm_patch_merge_type": "flat",
    "image_aspect_ratio": "square",
    "vision_head_type": "mlp",
    "image_token_reduction": "interpolation",
    "num_image_tokens": 4,
    "normalize_vision": True,
    "apply_softmax": False,
    "tokenizer_model_max_length": 2048,
}

# Scales of the random init. Matrices use gain/sqrt(fan_in) (not 0.02) so that every
# block changes the residual stream by O(1): attention, RoPE and the MLP then all
# visibly move the logits, and a kernel bug changes the greedy tokens.
# Seeds and gains were picked (tools/README.md) so that the 40 greedy tokens of every golden
# case are varied and the top-1/top-2 logit margins are not tiny.
INIT = {
    "embed_std": 1.0,       # token embeddings
    "matrix_gain": 1.0,     # q,k,v,gate,up and mm linears: std = gain / sqrt(fan_in)
    "resid_gain": 1.0,      # o_proj, down_proj (write into the residual): gain / sqrt(fan_in)
    "lm_head_gain": 4.0,    # lm_head: std = gain / sqrt(hidden) -> logits std ~ gain
    "norm_noise": 0.1,      # RMSNorm weights = 1 + noise * N(0,1)
    "bias_std": 0.1,        # biases of the mm projector / vision head
}

VARIANTS = {
    "mm-f32": {
        "seed": 1013,
        "description": "metamorph_llama, F32, single model.safetensors, GQA 4 heads / 2 kv heads "
                       "(head_dim 16), rope_theta 500000 with llama3 rope_scaling (all three "
                       "frequency bands used), untied lm_head, mlp vision head, mm_hidden 32. "
                       "tokenizer.json already contains <image_start>=128256 and <image_end>=128257 "
                       "(as a save_pretrained'd MetaMorph checkpoint does).",
        "dtype": "F32",
        "model_type": "metamorph_llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": None,
        "intermediate_size": 176,
        "vocab_size": LLAMA3_VOCAB + 2,
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3_ROPE_SCALING,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "mm": dict(MM_FIELDS),
        "shards": 1,
        "tokenizer": "with_image_tokens",
        "generation_config": True,
    },
    "mm-bf16-sharded": {
        "seed": 1012,
        "description": "metamorph_llama, BF16, 3 shards + model.safetensors.index.json, MHA 4 heads "
                       "/ 4 kv heads (head_dim 16), default RoPE theta 10000 (no rope_scaling), "
                       "tied embeddings (no lm_head.weight), linear vision head "
                       "(vision_head.weight/bias, hidden -> hidden, so mm_hidden_size = hidden = 64). "
                       "tokenizer.json is the plain LLaMA-3.1 one: <image_start>/<image_end> must "
                       "be added by the loader (as the official loader does when they are missing).",
        "dtype": "BF16",
        "model_type": "metamorph_llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": None,
        "intermediate_size": 128,
        "vocab_size": LLAMA3_VOCAB + 2,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "mm": dict(MM_FIELDS, mm_hidden_size=64, vision_head_type="linear"),
        "shards": 3,
        # tied: lm_head = embed_tokens, so the current token's own embedding in the residual
        # would win the argmax every step; stronger layer outputs avoid that repetition.
        "init": {"resid_gain": 8.0},
        "tokenizer": "plain",
        "generation_config": True,
    },
    "llama-f16": {
        "seed": 1003,
        "description": "plain llama (LlamaForCausalLM), F16, vocab 128256, explicit head_dim 32 "
                       "with hidden 64 and 4 heads (heads*head_dim = 128 != hidden), 2 kv heads, "
                       "untied lm_head, llama3 rope_scaling, no mm fields, no generation_config.json.",
        "dtype": "F16",
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "intermediate_size": 160,
        "vocab_size": LLAMA3_VOCAB,
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3_ROPE_SCALING,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "mm": None,
        "shards": 1,
        "init": {"resid_gain": 2.0},
        "tokenizer": "plain",
        "generation_config": False,
    },
    # Variants for image generation (tools/golden_generation.py): every vision-head type and
    # normalize_vision on/off. Appended after the others; each tensor has its own generator,
    # so the variants above are byte-for-byte unchanged.
    "mm-head-mlp2x-nonorm": {
        "seed": 1021,
        "description": "metamorph_llama, F32, vision_head_type mlp2x_gelu (64->64->64->32, two exact "
                       "GELUs), normalize_vision false, mm_hidden 32, num_image_tokens 4, GQA 4/2, "
                       "llama3 rope_scaling, untied lm_head whose <image_start> row is redrawn with a "
                       "larger std (image_start_row_gain) so that greedy decoding of the chat prompt "
                       "emits <image_start> by itself after a few text tokens.",
        "dtype": "F32",
        "model_type": "metamorph_llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": None,
        "intermediate_size": 176,
        "vocab_size": LLAMA3_VOCAB + 2,
        "rope_theta": 500000.0,
        "rope_scaling": LLAMA3_ROPE_SCALING,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "mm": dict(MM_FIELDS, vision_head_type="mlp2x_gelu", normalize_vision=False),
        "shards": 1,
        "image_start_row_gain": 10.0,
        "tokenizer": "with_image_tokens",
        "generation_config": True,
    },
    "mm-head-other": {
        "seed": 1022,
        "description": "metamorph_llama, F16, no vision_head_type in config.json (the reference's "
                       "fallback: one Linear(hidden, mm_hidden) at vision_head.weight/bias, here "
                       "64->48), normalize_vision true, mm_hidden 48, projector 48->64->64, "
                       "num_image_tokens 9, MHA 4/4, theta 10000 without scaling, untied lm_head.",
        "dtype": "F16",
        "model_type": "metamorph_llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": None,
        "intermediate_size": 128,
        "vocab_size": LLAMA3_VOCAB + 2,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "mm": {k: v for k, v in dict(MM_FIELDS, mm_hidden_size=48, num_image_tokens=9).items()
               if k != "vision_head_type"},
        "shards": 1,
        "tokenizer": "with_image_tokens",
        "generation_config": True,
    },
}

TINYLLAMA = {
    "seed": 2001,
    "description": "TinyLlama-1.1B-shaped random F16 checkpoint for benchmarks (std 0.02, "
                   "not a trained model; no tokenizer).",
    "dtype": "F16",
    "model_type": "llama",
    "hidden_size": 2048,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": None,
    "intermediate_size": 5632,
    "vocab_size": 32000,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "max_position_embeddings": 2048,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "mm": None,
    "shards": 1,
    "tokenizer": None,
    "generation_config": False,
}


# TinyLlama-1.1B-shaped transformer with MetaMorph heads for the image-generation benchmark
# (tools/bench_generation.py): LLaMA-3 vocabulary + the two image tokens (so the real tokenizer
# works), SigLIP-width visual tokens (mm_hidden 1152), mlp2x_gelu projector, mlp vision head,
# 64 visual tokens per image. std 0.02 like the tinyllama-f16 preset; not a trained model.
TINYLLAMA_MM = dict(
    TINYLLAMA,
    seed=2002,
    description="TinyLlama-1.1B-shaped random F16 metamorph_llama checkpoint for the image-generation "
                "benchmark: hidden 2048, 22 layers, 32 heads / 4 kv heads, FFN 5632, vocab 128258 "
                "(LLaMA-3.1 tokenizer + <image_start>/<image_end>), mm_hidden 1152, mlp2x_gelu "
                "projector, mlp vision head, 64 image tokens, normalize_vision (std 0.02, not trained).",
    model_type="metamorph_llama",
    vocab_size=LLAMA3_VOCAB + 2,
    bos_token_id=128000,
    eos_token_id=[128001, 128008, 128009],
    mm=dict(MM_FIELDS, mm_hidden_size=1152, num_image_tokens=64),
    tokenizer="with_image_tokens",
    generation_config=True,
)

PRESETS = {"tinyllama-f16": TINYLLAMA, "tinyllama-mm-f16": TINYLLAMA_MM}


def init_of(v):
    """INIT with the variant's overrides ("init" key) applied."""
    return dict(INIT, **v.get("init", {}))


def head_dim_of(v):
    return v["head_dim"] or v["hidden_size"] // v["num_attention_heads"]


def tensor_specs(v):
    """Ordered list of (name, shape, init) where init = ("normal", std, mean)."""
    h = v["hidden_size"]
    hd = head_dim_of(v)
    nh, nkv = v["num_attention_heads"], v["num_key_value_heads"]
    inter = v["intermediate_size"]
    vocab = v["vocab_size"]
    bench = v is TINYLLAMA or v is TINYLLAMA_MM
    init = init_of(v)
    g, rg = init["matrix_gain"], init["resid_gain"]

    def mat(out_f, in_f, gain=g):
        return 0.02 if bench else gain / math.sqrt(in_f)

    norm = ("normal", init["norm_noise"], 1.0)
    specs = [("model.embed_tokens.weight", (vocab, h), ("normal", 0.02 if bench else init["embed_std"], 0.0))]
    for i in range(v["num_hidden_layers"]):
        p = f"model.layers.{i}."
        specs += [
            (p + "input_layernorm.weight", (h,), norm),
            (p + "self_attn.q_proj.weight", (nh * hd, h), ("normal", mat(nh * hd, h), 0.0)),
            (p + "self_attn.k_proj.weight", (nkv * hd, h), ("normal", mat(nkv * hd, h), 0.0)),
            (p + "self_attn.v_proj.weight", (nkv * hd, h), ("normal", mat(nkv * hd, h), 0.0)),
            (p + "self_attn.o_proj.weight", (h, nh * hd), ("normal", mat(h, nh * hd, rg), 0.0)),
            (p + "post_attention_layernorm.weight", (h,), norm),
            (p + "mlp.gate_proj.weight", (inter, h), ("normal", mat(inter, h), 0.0)),
            (p + "mlp.up_proj.weight", (inter, h), ("normal", mat(inter, h), 0.0)),
            (p + "mlp.down_proj.weight", (h, inter), ("normal", mat(h, inter, rg), 0.0)),
        ]
    specs.append(("model.norm.weight", (h,), norm))
    if not v["tie_word_embeddings"]:
        std = 0.02 if bench else init["lm_head_gain"] / math.sqrt(h)
        specs.append(("lm_head.weight", (vocab, h), ("normal", std, 0.0)))
    mm = v["mm"]
    if mm:
        mmh = mm["mm_hidden_size"]
        b = ("normal", init["bias_std"], 0.0)

        if bench:
            b = ("normal", 0.02, 0.0)

        def lin(prefix, in_f, out_f):
            return [(prefix + "weight", (out_f, in_f), ("normal", 0.02 if bench else g / math.sqrt(in_f), 0.0)),
                    (prefix + "bias", (out_f,), b)]

        assert mm["mm_projector_type"] == "mlp2x_gelu"
        specs += lin("model.mm_projector.0.", mmh, h) + lin("model.mm_projector.2.", h, h)
        head_type = mm.get("vision_head_type")
        if head_type == "mlp":
            specs += lin("vision_head.0.", h, h) + lin("vision_head.2.", h, mmh)
        elif head_type == "mlp2x_gelu":
            specs += lin("vision_head.0.", h, h) + lin("vision_head.2.", h, h) + lin("vision_head.4.", h, mmh)
        elif head_type == "linear":
            assert mmh == h, "linear vision head is Linear(hidden, hidden): needs mm_hidden == hidden"
            specs += lin("vision_head.", h, h)
        else:  # the reference's fallback for any other value (or none): Linear(hidden, mm_hidden)
            specs += lin("vision_head.", h, mmh)
        specs += lin("model.vision_proj.", h, h)  # present in the module tree, never used
    return specs


def make_config(v):
    cfg = {
        "architectures": ["MetaMorphLlamaForCausalLM" if v["model_type"] == "metamorph_llama"
                          else "LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": v.get("bos_token_id", 128000),
        "eos_token_id": v.get("eos_token_id", [128001, 128008, 128009]),
        "hidden_act": "silu",
        "hidden_size": v["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": v["intermediate_size"],
        "max_position_embeddings": v.get("max_position_embeddings", 2048),
        "mlp_bias": False,
        "model_type": v["model_type"],
        "num_attention_heads": v["num_attention_heads"],
        "num_hidden_layers": v["num_hidden_layers"],
        "num_key_value_heads": v["num_key_value_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": v["rms_norm_eps"],
        "rope_scaling": dict(v["rope_scaling"]) if v["rope_scaling"] else None,
        "rope_theta": v["rope_theta"],
        "tie_word_embeddings": v["tie_word_embeddings"],
        "torch_dtype": TORCH_DTYPE[v["dtype"]],
        "use_cache": True,
        "vocab_size": v["vocab_size"],
    }
    if v["head_dim"]:
        cfg["head_dim"] = v["head_dim"]
    if v["mm"]:
        cfg.update(v["mm"])
    return cfg


def split_shards(specs, n):
    """Split the ordered tensors into n shards at module boundaries, like a sharded
    save_pretrained would: the embedding plus the first half of the decoder layers,
    then the other layers (spread over the middle shards), then the final norm,
    lm_head and the MetaMorph extras in the last shard. Layers are never split."""
    if n == 1:
        return [specs]
    assert n >= 2

    def layer_of(name):
        return int(name.split(".")[2]) if name.startswith("model.layers.") else None

    embed = [s for s in specs if s[0] == "model.embed_tokens.weight"]
    layer_ids = sorted({layer_of(s[0]) for s in specs if layer_of(s[0]) is not None})
    layers = [[s for s in specs if layer_of(s[0]) == i] for i in layer_ids]
    rest = [s for s in specs if s not in embed and layer_of(s[0]) is None]
    # n - 1 groups of layers (the first also holds the embedding), then the rest
    groups = [[] for _ in range(n - 1)]
    for k, layer in enumerate(layers):
        groups[k * (n - 1) // len(layers)].extend(layer)
    groups[0] = embed + groups[0]
    shards = groups + [rest]
    assert all(shards), "too few layers for that many shards"
    assert sum(len(s) for s in shards) == len(specs)
    return shards


def write_tokenizer(src, dst, mode):
    if mode == "plain":
        shutil.copyfile(src, dst)
        return
    assert mode == "with_image_tokens"
    with open(src, "r", encoding="utf-8") as f:
        tok = json.load(f)
    ids = {t["id"] for t in tok["added_tokens"]}
    for tid, content in ((IMAGE_START_ID, "<image_start>"), (IMAGE_END_ID, "<image_end>")):
        if tid in ids:
            continue
        tok["added_tokens"].append({"id": tid, "content": content, "single_word": False,
                                    "lstrip": False, "rstrip": False, "normalized": False,
                                    "special": True})
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(tok, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def build(name, v, outdir, tokenizer=None, chunk_elems=1 << 24):
    os.makedirs(outdir, exist_ok=True)
    seed, dtype = v["seed"], v["dtype"]
    specs = tensor_specs(v)
    init = {n: (s, i) for n, s, i in specs}

    def producer(tname):
        shape, (_, std, mean) = init[tname]
        rows = shape[0]
        per_row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        total = rows * per_row
        if total <= chunk_elems:
            x = normal(seed, tname, shape, std, mean)
            if tname == "lm_head.weight" and v.get("image_start_row_gain"):
                # the <image_start> row gets its own draw with a larger std, so that greedy
                # decoding emits it now and then (random weights would never pick it)
                x[IMAGE_START_ID] = normal(seed, "lm_head.weight[<image_start>]", (shape[1],),
                                           v["image_start_row_gain"] / math.sqrt(shape[1]))
            return encode(x, dtype)
        assert not v.get("image_start_row_gain"), "image_start_row_gain needs an unchunked lm_head"

        def chunks():  # stream big tensors: same numbers as one draw of the whole shape
            rng = tensor_rng(seed, tname)
            step = max(1, chunk_elems // per_row)
            for r0 in range(0, rows, step):
                r1 = min(rows, r0 + step)
                x = rng.standard_normal((r1 - r0,) + tuple(shape[1:]), dtype=np.float32)
                x *= np.float32(std)
                if mean:
                    x += np.float32(mean)
                yield encode(x, dtype)
        return chunks()

    shards = split_shards(specs, v["shards"])
    files = []
    if len(shards) == 1:
        fn = "model.safetensors"
        write_safetensors(os.path.join(outdir, fn), [(n, dtype, s) for n, s, _ in specs], producer)
        files.append(fn)
    else:
        weight_map, total_size = {}, 0
        for k, group in enumerate(shards):
            fn = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            total_size += write_safetensors(os.path.join(outdir, fn),
                                            [(n, dtype, s) for n, s, _ in group], producer)
            for n, _, _ in group:
                weight_map[n] = fn
            files.append(fn)
        write_json(os.path.join(outdir, "model.safetensors.index.json"),
                   {"metadata": {"total_size": total_size},
                    "weight_map": dict(sorted(weight_map.items()))})

    write_json(os.path.join(outdir, "config.json"), make_config(v))
    if v["generation_config"]:
        write_json(os.path.join(outdir, "generation_config.json"),
                   {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
                    "do_sample": False})
    if v["tokenizer"]:
        if not tokenizer or not os.path.exists(tokenizer):
            raise SystemExit(f"tokenizer.json not found at {tokenizer!r} (use --tokenizer PATH)")
        write_tokenizer(tokenizer, os.path.join(outdir, "tokenizer.json"), v["tokenizer"])
    write_json(os.path.join(outdir, "variant.json"),
               {"name": name, "seed": seed, "description": v["description"],
                "dtype": dtype, "init": init_of(v) if v not in PRESETS.values() else {"std": 0.02, "norm_noise": 0.1},
                "generator": "tools/make_checkpoints.py (numpy "
                             "default_rng([seed, crc32(tensor_name)]).standard_normal(float32))"})
    return files


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory; each variant goes to OUT/NAME/")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="only these tiny variants")
    ap.add_argument("--tokenizer", default=os.environ.get("METAMORPH_TOKENIZER_JSON", DEFAULT_TOKENIZER),
                    help="LLaMA-3.1 tokenizer.json to copy in (default: %(default)s)")
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="write a TinyLlama-1.1B-shaped benchmark checkpoint directly into OUT "
                         "(tinyllama-mm-f16: with MetaMorph heads and the LLaMA-3.1 tokenizer)")
    ap.add_argument("--list", action="store_true", help="list the tiny variants and exit")
    args = ap.parse_args(argv)

    if args.list:
        for n, v in VARIANTS.items():
            print(f"{n}: {v['description']}")
        return 0
    if not args.out:
        ap.error("--out is required")

    t0 = time.time()
    if args.preset:
        build(args.preset, PRESETS[args.preset], args.out, args.tokenizer)
        print(f"{args.preset} -> {args.out} ({time.time() - t0:.1f} s)")
        return 0

    names = args.only or list(VARIANTS)
    for n in names:
        if n not in VARIANTS:
            ap.error(f"unknown variant {n!r}; known: {', '.join(VARIANTS)}")
    for n in names:
        t1 = time.time()
        files = build(n, VARIANTS[n], os.path.join(args.out, n), args.tokenizer)
        print(f"{n} -> {os.path.join(args.out, n)} [{', '.join(files)}] ({time.time() - t1:.2f} s)")
    print(f"done in {time.time() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
