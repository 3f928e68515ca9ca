#!/usr/bin/env python3
"""Golden data for the SigLIP vision path (Tests/SiglipTests).

Builds tiny random SigLIP vision towers with transformers' SiglipVisionModel, runs MetaMorph's
post-tower ops in torch (hidden_states[select] -> view/permute -> F.interpolate bilinear,
align_corners=False -> permute/flatten -> F.normalize -> mm_projector), and preprocesses a few
deterministic numpy images with SiglipImageProcessor's PIL backend (MetaMorph's expand2square
first in "pad" mode). Writes Tests/Fixtures/siglip/:
  images/<img>.npy                  uint8 HWC RGB inputs
  pixels/<size>_<mode>_<img>.npy    float32 [3,size,size] processor outputs
  <case>/config.json                SigLIP config (full SiglipConfig or bare vision config)
  <case>/preprocessor_config.json
  <case>/model.safetensors          tower (+ model.mm_projector.*), F32 or BF16
  <case>/mm.json                    MetaMorph settings of the case
  <case>/tokens_<img>.npy           [tokens, mm_hidden] after reduction/normalisation
  <case>/features_<img>.npy         [tokens, hidden] after the projector
  versions.json

Needs torch, transformers, numpy, safetensors and Pillow <= 12: Pillow 13 may run the two resize
passes in the other order (vertical first) for some shapes and then differs by a few levels from
the Pillow that MetaMorph was trained with. With a newer Pillow installed, put an older one first:
  pip install --target /tmp/pil12 pillow==12.0.0 && PYTHONPATH=/tmp/pil12 python tools/golden_siglip.py
"""
import json
import os
import sys

import numpy as np
import PIL
from PIL import Image
import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from transformers import SiglipVisionConfig, SiglipVisionModel
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "siglip")

if int(PIL.__version__.split(".")[0]) >= 13 and not os.environ.get("GOLDEN_SIGLIP_ANY_PILLOW"):
    sys.exit(f"Pillow {PIL.__version__}: use Pillow <= 12 (see the docstring), or set GOLDEN_SIGLIP_ANY_PILLOW=1")

try:
    from transformers import SiglipImageProcessorPil as Processor  # transformers >= 5: PIL backend
except ImportError:
    from transformers import SiglipImageProcessor as Processor     # transformers 4.x: PIL-based


def make_images():
    rng = np.random.default_rng(20240611)

    def grad_noise(w, h):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        base = np.stack([xx / max(w - 1, 1), yy / max(h - 1, 1), (xx + yy) / max(w + h - 2, 1)], -1) * 255
        img = base + rng.normal(0, 30, (h, w, 3))
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    return {
        "g37x23": grad_noise(37, 23),
        "g300x200": grad_noise(300, 200),
        "p1x1": np.array([[[200, 30, 90]]], np.uint8),
        "g5x400": grad_noise(5, 400),
        "n23x37": rng.integers(0, 256, (37, 23, 3), dtype=np.uint8),  # pure noise, portrait
    }


def expand2square(img, color):
    w, h = img.size
    if w == h:
        return img
    if w > h:
        out = Image.new(img.mode, (w, w), color)
        out.paste(img, (0, (w - h) // 2))
    else:
        out = Image.new(img.mode, (h, h), color)
        out.paste(img, ((h - w) // 2, 0))
    return out


def preprocess(arr, size, mode):
    mean = [0.5, 0.5, 0.5]
    proc = Processor(do_resize=True, size={"height": size, "width": size}, resample=3, do_rescale=True,
                     rescale_factor=1 / 255, do_normalize=True, image_mean=mean, image_std=[0.5, 0.5, 0.5])
    img = Image.fromarray(arr, "RGB")
    if mode == "pad":
        img = expand2square(img, tuple(int(x * 255) for x in mean))
    px = proc(images=img, return_tensors="np")["pixel_values"][0]
    return np.asarray(px, np.float32)


# name, image, patch, layers, select, tokens, normalize, projector, act, aspect, prefix, nested cfg, dtype
CASES = [
    ("c32_l-1_t4_norm_mlp2x", 32, 8, 2, -1, 4, True, "mlp2x_gelu", "gelu_pytorch_tanh", "square",
     "model.vision_tower.vision_tower.", True, "F32"),
    ("c56_l-2_t16_lin_pad", 56, 7, 3, -2, 16, False, "linear", None, "pad", "vision_model.", False, "F32"),
    ("c56_l-1_t64_norm_erf_bf16", 56, 7, 2, -1, 64, True, "mlp2x_gelu", "gelu", "pad", "vision_model.", True, "BF16"),
    ("c32_l0_t9_norm_lin", 32, 8, 2, 0, 9, True, "linear", "gelu_pytorch_tanh", "square",
     "model.vision_tower.vision_tower.", False, "F32"),
]
HIDDEN, HEADS, INTER, LLM_HIDDEN = 32, 4, 64, 48


def build_projector(kind, mm_hidden, hidden):
    if kind == "linear":
        return nn.Linear(mm_hidden, hidden)
    depth = int(kind[3:-6])
    mods = [nn.Linear(mm_hidden, hidden)]
    for _ in range(1, depth):
        mods += [nn.GELU(), nn.Linear(hidden, hidden)]
    return nn.Sequential(*mods)


def main():
    torch.manual_seed(0)
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "pixels"), exist_ok=True)
    images = make_images()
    for k, v in images.items():
        np.save(os.path.join(OUT, "images", f"{k}.npy"), v)

    pixels = {}
    for size in sorted({c[1] for c in CASES}):
        for mode in ("square", "pad"):
            for k, v in images.items():
                px = preprocess(v, size, mode)
                pixels[(size, mode, k)] = px
                np.save(os.path.join(OUT, "pixels", f"{size}_{mode}_{k}.npy"), px)

    for (name, size, patch, layers, select, tokens, normalize, proj, act, aspect, prefix, nested, dtype) in CASES:
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        kw = dict(hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=layers, num_attention_heads=HEADS,
                  image_size=size, patch_size=patch)
        if act is not None:
            kw["hidden_act"] = act
        cfg = SiglipVisionConfig(**kw)
        model = SiglipVisionModel(cfg).eval()
        projector = build_projector(proj, HIDDEN, LLM_HIDDEN)
        with torch.no_grad():
            for n, p in list(model.named_parameters()) + list(projector.named_parameters()):
                if "norm" in n and n.endswith("weight"):
                    p.copy_(1 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.15 * torch.randn_like(p))
            if dtype == "BF16":  # the reference computes in float32 from the bf16-rounded weights
                for p in list(model.parameters()) + list(projector.parameters()):
                    p.copy_(p.to(torch.bfloat16).to(torch.float32))
        tensors = {}
        for n, p in model.state_dict().items():
            # transformers 4.x names these vision_model.*, 5.x drops that level
            n = n[len("vision_model."):] if n.startswith("vision_model.") else n
            if n.startswith("head.") or n.startswith("post_layernorm"):
                continue
            tensors[prefix + n] = p.detach().clone()
        for n, p in projector.state_dict().items():
            tensors["model.mm_projector." + n] = p.detach().clone()
        if dtype == "BF16":
            tensors = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "model.safetensors"))

        vis = {k: v for k, v in kw.items()}
        vis["model_type"] = "siglip_vision_model"
        conf = {"model_type": "siglip", "vision_config": vis} if nested else vis
        json.dump(conf, open(os.path.join(d, "config.json"), "w"), indent=1)
        json.dump({"do_resize": True, "size": {"height": size, "width": size}, "resample": 3, "do_rescale": True,
                   "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                   "image_processor_type": "SiglipImageProcessor"},
                  open(os.path.join(d, "preprocessor_config.json"), "w"), indent=1)
        json.dump({"mm_vision_select_layer": select, "num_image_tokens": tokens, "normalize_vision": normalize,
                   "mm_projector_type": proj, "mm_hidden_size": HIDDEN, "hidden_size": LLM_HIDDEN,
                   "image_aspect_ratio": aspect, "image_token_reduction": "interpolation",
                   "weights_prefix": prefix, "weights_dtype": dtype},
                  open(os.path.join(d, "mm.json"), "w"), indent=1)

        for k in images:
            px = torch.from_numpy(pixels[(size, aspect, k)])[None]
            with torch.no_grad():
                hs = model(pixel_values=px, output_hidden_states=True).hidden_states[select]
                b, n, dim = hs.shape
                if n != tokens:
                    g, t = int(np.sqrt(n)), int(np.sqrt(tokens))
                    x = hs.view(b, g, g, dim).permute(0, 3, 1, 2).contiguous()
                    x = F.interpolate(x.to(torch.float32), size=(t, t), mode="bilinear", align_corners=False)
                    hs = x.permute(0, 2, 3, 1).contiguous().flatten(1, 2)
                if normalize:
                    hs = F.normalize(hs, p=2, dim=-1)
                feats = projector(hs)
            np.save(os.path.join(d, f"tokens_{k}.npy"), np.ascontiguousarray(hs[0].numpy(), np.float32))
            np.save(os.path.join(d, f"features_{k}.npy"), np.ascontiguousarray(feats[0].numpy(), np.float32))

    json.dump({"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
               "pillow": PIL.__version__, "processor": Processor.__name__},
              open(os.path.join(OUT, "versions.json"), "w"), indent=1)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
