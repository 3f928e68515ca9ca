#!/usr/bin/env python3
"""Golden data for image understanding end to end: prompts with 0, 1 and 2 images through the
reference pipeline (transformers' SiglipVisionModel + SiglipImageProcessor, MetaMorph's token
reduction, L2 normalisation and projector, LlamaForCausalLM), greedy ids by a no-cache loop.

Checkpoint: tools/make_checkpoints.py's mm-f32 (mm_hidden 32, mlp2x_gelu projector, 4 image
tokens, select layer -1, normalize_vision). Tower: the tiny SigLIP of
Tests/Fixtures/siglip/c32_l-1_t4_norm_mlp2x (32x32 images, patch 8: a 4x4 grid -> 2x2 tokens),
used as a separate vision tower directory, as the official loader re-reads SigLIP.

Prompt building follows metamorph's mm_utils.tokenizer_image_token: the llama3 template text
(starting with the literal <|begin_of_text|>), split at "<image>", each piece tokenised with the
post-processor (BOS), the first BOS kept and the others dropped, -200 where an image goes; the
image's projected tokens replace the -200 in the input embeddings
(prepare_inputs_labels_for_multimodal).

    python3 tools/golden_understanding.py      # needs torch, transformers, tokenizers, Pillow
Writes Tests/Fixtures/golden_understanding/{golden.json, image_*.npy}.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
import tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
from golden_siglip import preprocess  # noqa: E402  (SiglipImageProcessor with the PIL backend)

TOWER = os.path.join(REPO, "Tests/Fixtures/siglip/c32_l-1_t4_norm_mlp2x")
OUT = os.path.join(REPO, "Tests/Fixtures/golden_understanding")
TOKENIZER = os.path.join(REPO, "..", "shared/fixtures/tokenizer/meta-llama-3.1-8b-instruct/tokenizer.json")
STEPS = 24


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def load_safetensors(path):
    from safetensors.torch import load_file
    return {k: v.to(torch.float32) for k, v in load_file(path).items()}


def main():
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp()
    subprocess.check_call([sys.executable, os.path.join(REPO, "tools/make_checkpoints.py"), "--out", tmp,
                           "--only", "mm-f32", "--tokenizer", TOKENIZER], stdout=subprocess.DEVNULL)
    ck = os.path.join(tmp, "mm-f32")
    cfg = json.load(open(os.path.join(ck, "config.json")))
    llama_cfg = {k: v for k, v in cfg.items() if not k.startswith("mm_") and k not in (
        "model_type", "vision_head_type", "image_token_reduction", "num_image_tokens", "normalize_vision",
        "apply_softmax", "tokenizer_model_max_length", "image_aspect_ratio")}
    lc = LlamaConfig(**llama_cfg)
    lc._attn_implementation = "eager"
    llm = LlamaForCausalLM(lc).eval()
    w = load_safetensors(os.path.join(ck, "model.safetensors"))
    missing, unexpected = llm.load_state_dict({k: v for k, v in w.items() if k.startswith(("model.layers", "model.embed", "model.norm", "lm_head"))}, strict=False)
    assert not missing, missing
    projector = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 64))
    projector.load_state_dict({"0.weight": w["model.mm_projector.0.weight"], "0.bias": w["model.mm_projector.0.bias"],
                               "2.weight": w["model.mm_projector.2.weight"], "2.bias": w["model.mm_projector.2.bias"]})

    tcfg = json.load(open(os.path.join(TOWER, "config.json")))
    vcfg = SiglipVisionConfig(**tcfg.get("vision_config", tcfg))
    vcfg._attn_implementation = "eager"
    tower = SiglipVisionModel(vcfg).eval()
    tw = load_safetensors(os.path.join(TOWER, "model.safetensors"))
    prefix = "model.vision_tower.vision_tower."
    # transformers 4 names the tower's tensors vision_model.*, 5 may not: follow the model's own keys.
    model_prefix = "vision_model." if any(k.startswith("vision_model.") for k in tower.state_dict()) else ""
    sd = {model_prefix + k[len(prefix):]: v for k, v in tw.items() if k.startswith(prefix)}
    missing, _ = tower.load_state_dict(sd, strict=False)
    # The pooling head and post_layernorm are never used (select layer -1 is before post_layernorm).
    assert not [m for m in missing if "head." not in m and "post_layernorm" not in m], missing

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:40, 0:60]
    img_a = np.clip(np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1) + rng.normal(0, 20, (40, 60, 3)), 0, 255).astype(np.uint8)
    img_b = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    images = {"image_a.npy": img_a, "image_b.npy": img_b}
    os.makedirs(OUT, exist_ok=True)
    for name, arr in images.items():
        np.save(os.path.join(OUT, name), arr)

    def features(arr):
        px = torch.from_numpy(preprocess(arr, vcfg.image_size, cfg.get("image_aspect_ratio", "square")))[None]
        with torch.no_grad():
            hs = tower(pixel_values=px, output_hidden_states=True).hidden_states[cfg["mm_vision_select_layer"]]
            b, n, c = hs.shape
            g = int(round(n ** 0.5))
            t = int(round(cfg["num_image_tokens"] ** 0.5))
            x = hs.view(b, g, g, c).permute(0, 3, 1, 2)
            x = F.interpolate(x, size=(t, t), mode="bilinear", align_corners=False)
            hs = x.permute(0, 2, 3, 1).reshape(b, t * t, c)
            if cfg["normalize_vision"]:
                hs = F.normalize(hs, p=2, dim=-1)
            return projector(hs)[0]

    tok = tokenizers.Tokenizer.from_file(TOKENIZER)
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in ["<image_start>", "<image_end>"]])

    def prompt_ids(question, n_images):
        msg = "<image_start><image><image_end>" * n_images + "\n" + question if n_images else question
        text = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n" + msg +
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n")
        chunks = [tok.encode(c, add_special_tokens=True).ids for c in text.split("<image>")]
        ids = [chunks[0][0]]
        for i, c in enumerate(chunks):
            if i > 0:
                ids.append(-200)
            ids += c[1:]
        return ids

    cases = []
    for n_images, question, files in [(0, "What is in the picture?", []),
                                      (1, "What color is the shape?", ["image_a.npy"]),
                                      (2, "Describe both images.", ["image_a.npy", "image_b.npy"])]:
        ids = prompt_ids(question, n_images)
        feats = [features(images[f]) for f in files]
        emb = llm.model.embed_tokens
        rows, k = [], 0
        with torch.no_grad():
            for i in ids:
                if i == -200:
                    rows.append(feats[k]); k += 1
                else:
                    rows.append(emb(torch.tensor([i])))
            x = torch.cat(rows, 0)[None]
            greedy = []
            for _ in range(STEPS):      # the reference greedy_decode: no KV cache, full recompute
                logits = llm(inputs_embeds=x).logits[0, -1]
                nxt = int(torch.argmax(logits))
                greedy.append(nxt)
                x = torch.cat([x, emb(torch.tensor([[nxt]]))], 1)
        cases.append({"n_images": n_images, "question": question, "images": files, "prompt_ids": ids,
                      "greedy_ids": greedy})
        print(f"{n_images} images: {len(ids)} prompt ids, greedy {greedy[:8]}...")

    golden = {
        "checkpoint": "mm-f32 (tools/make_checkpoints.py)",
        "tower": "Tests/Fixtures/siglip/c32_l-1_t4_norm_mlp2x",
        "safetensors_sha256": {"mm-f32/model.safetensors": sha256(os.path.join(ck, "model.safetensors")),
                               "tower/model.safetensors": sha256(os.path.join(TOWER, "model.safetensors"))},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "steps": STEPS,
        "cases": cases,
    }
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
