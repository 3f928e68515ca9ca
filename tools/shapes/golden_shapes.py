"""Golden data for the shipped shapes model (models/shapes): the reference computation in
PyTorch/transformers, compared by bindings/python/tests/test_shapes_model.py against the engine.

Reference: transformers' LlamaForCausalLM (float32, eager attention, weights upcast from the
BF16 file) run WITHOUT a KV cache over the whole sequence every step, SiglipVisionModel for the
tower (hidden_states[-1], bilinear 8x8 -> 4x4, L2 norm, mm_projector), SiglipImageProcessor for
the pixels, and the image-mode loop of tools/golden_generation.py (MetaMorph's greedy_decode).

    python3 tools/shapes/golden_shapes.py [--model models/shapes] [--out Tests/Fixtures/golden/shapes.json]

Cases: questions about the example pictures in examples/images/, and generation prompts whose
reply draws an image (visual tokens recorded).
"""
import argparse
import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import golden_generation as gg  # noqa: E402
import golden_llama as gl  # noqa: E402

IMAGE = -200  # placeholder id for an image's positions (the engine reports it the same way)


def load(model_dir):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    fields = {k: cfg[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                  "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                                  "rope_scaling", "tie_word_embeddings", "hidden_act", "attention_bias", "mlp_bias")}
    lc = LlamaConfig(**fields)
    lc._attn_implementation = "eager"
    model = LlamaForCausalLM(lc).float().eval()
    tensors = {k: torch.from_numpy(np.array(v, dtype=np.float32))
               for k, v in gl.read_safetensors_numpy(os.path.join(model_dir, "model.safetensors")).items()}
    llama_sd = {k: v for k, v in tensors.items() if k.startswith(("model.embed_tokens", "model.layers", "model.norm", "lm_head"))}
    model.load_state_dict(llama_sd, strict=True)
    proj, head, _, _ = gg.load_mm_heads(model_dir, cfg)
    vc = dict(cfg["vision_config"])
    vc.pop("model_type", None)
    tower = SiglipVisionModel(SiglipVisionConfig(**vc)).float().eval()
    pre = "model.vision_tower.vision_tower."
    sd = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
    # transformers 5's SiglipVisionModel is the vision transformer itself (4.x wrapped it in .vision_model)
    (tower.vision_model if hasattr(tower, "vision_model") else tower).load_state_dict(sd, strict=True)
    return cfg, model, proj, head, tower


def image_features(cfg, tower, proj, path):
    """[num_image_tokens, hidden] projected features of one picture, exactly as MetaMorph forms them."""
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from transformers import SiglipImageProcessor
    s = cfg["vision_config"]["image_size"]
    proc = SiglipImageProcessor(size={"height": s, "width": s}, resample=Image.Resampling.BICUBIC,
                                image_mean=[0.5] * 3, image_std=[0.5] * 3)
    px = proc(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        h = tower(pixel_values=px, output_hidden_states=True).hidden_states[cfg["mm_vision_select_layer"]]
        b, n, d = h.shape
        g = int(round(n ** 0.5))
        k = int(round(cfg["num_image_tokens"] ** 0.5))
        t = F.interpolate(h.transpose(1, 2).reshape(b, d, g, g), size=(k, k), mode="bilinear", align_corners=False)
        t = t.flatten(2).transpose(1, 2)[0]
        if cfg["normalize_vision"]:
            t = t / t.norm(dim=-1, keepdim=True)
        return proj(t)


def prompt_ids(tok, message):
    """llama3 template, text split at <image>, each piece tokenised with BOS, later pieces drop it."""
    text = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n" + message +
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n")
    ids = []
    for k, piece in enumerate(text.split("<image>")):
        p = tok.encode(piece).ids
        ids += p if k == 0 else [IMAGE] + p[1:]
    return ids


class Ref(gg.Reference):
    """gg.Reference whose embed() splices image features at IMAGE placeholders."""

    def __init__(self, *a, feats=None, **k):
        super().__init__(*a, **k)
        self.feats = feats or []

    def embed(self, ids):
        import torch
        out, f = [], list(self.feats)
        for i in ids:
            if i == IMAGE:
                out += list(f.pop(0))
            else:
                out.append(self.model.model.embed_tokens(torch.tensor(i)))
        return out


def main():
    import torch
    from tokenizers import Tokenizer
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "shapes"))
    ap.add_argument("--out", default=os.path.join(ROOT, "Tests", "Fixtures", "golden", "shapes.json"))
    ap.add_argument("--images", default=os.path.join(ROOT, "examples", "images", "*.png"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg, model, proj, head, tower = load(args.model)
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    gg.EOS = set(cfg["eos_token_id"])
    gg.IMAGE_START = tok.token_to_id("<image_start>")
    cases = []
    for path in sorted(glob.glob(args.images)):
        feats = image_features(cfg, tower, proj, path)
        for q in ["What color is the shape?", "What shape is this?", "Describe the image."]:
            ids = prompt_ids(tok, "<image_start><image><image_end>\n" + q)
            ref = Ref(model, proj, head, cfg, feats=[feats])
            with torch.no_grad():
                first = model.lm_head(ref.last_hidden(ref.embed(ids)))
            out = ref.generate(ids, 40, False)
            cases.append({"kind": "understanding", "image": os.path.relpath(path, ROOT), "question": q,
                          "prompt_ids": ids, "features": feats.tolist() if q.startswith("What color") else None,
                          "first_logits": first.tolist(), "tokens": out["tokens"],
                          "text": tok.decode(out["tokens"], skip_special_tokens=True), "min_margin": out["text_min_margin"]})
    for c, s in [("red", "star"), ("blue", "circle"), ("green", "square")]:
        msg = f"Generate an image of a {c} {s}."
        ids = prompt_ids(tok, msg)
        ref = Ref(model, proj, head, cfg)
        out = ref.generate(ids, 64, False)
        cases.append({"kind": "generation", "prompt": msg, "prompt_ids": ids, "tokens": out["tokens"],
                      "images": out["images"], "min_margin": out["text_min_margin"]})
    import tokenizers
    import transformers
    meta = {"model": os.path.relpath(args.model, ROOT), "sha256": gl.sha256(os.path.join(args.model, "model.safetensors")),
            "torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    json.dump({"meta": meta, "cases": cases}, open(args.out, "w"))
    for c in cases:
        print(c["kind"], c.get("question") or c.get("prompt"), "->", repr(c.get("text", "")), len(c.get("images", [])), "images",
              "margin", c["min_margin"], file=sys.stderr)


if __name__ == "__main__":
    main()
