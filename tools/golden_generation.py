#!/usr/bin/env python3
"""Golden data for image generation (METAMORPH.md section 4) on the tiny MetaMorph checkpoints.

Reference = the official loop's arithmetic, MetaMorphLlamaForCausalLM.greedy_decode, written
here from its description (no code copied): NO KV cache, every step runs transformers'
LlamaModel (float32, eager attention, weights upcast exactly from BF16/F16) on the whole
sequence of input embeddings -- token embeddings for text ids, mm_projector outputs for visual
positions -- and takes the last position's final-normed hidden state h:

  text mode:  next = argmax(lm_head(h)) (first index on ties); <image_start> (128256) switches to
              image mode; an EOS id (128001, 128008, 128009) ends the reply;
  image mode: num_image_tokens times: z = vision_head(h); z /= max(||z||, 1e-12) when
              normalize_vision; z is a visual token; mm_projector(z) is the next input embedding.
              Then text mode again.

Every generated position (text or visual) counts against max_tokens; generation stops as soon
as max_tokens positions exist, also inside an image (partial image, complete = false). The
official loop's defects are not reproduced (argmax of image steps tested against EOS; per-image
counter only reset by <image_end>).

The heads are plain torch modules built from the config: mm_projector mlp2x_gelu =
Linear(mm_hidden, hidden), GELU(exact), Linear(hidden, hidden); vision_head "mlp" =
Linear(hidden, hidden), GELU, Linear(hidden, mm_hidden); "mlp2x_gelu" = three Linears with two
GELUs; "linear" = Linear(hidden, hidden); anything else (or no vision_head_type) =
Linear(hidden, mm_hidden).

Cases (prompts built like the engine: llama3 chat template, BOS twice):
  forced        user "Generate an image of a red star.", assistant prefix
                "Here is an image based on your request: <image_start>": image mode from the
                first step, then TEXT_AFTER text tokens;
  midtext       K_PREFIX greedy text tokens of the plain chat reply, then <image_start> forced
                (appended as if generated): prompt_ids = chat prompt + those ids + [128256];
                the image, then TEXT_AFTER text tokens;
  maxtok_inside forced prompt, max_tokens = num_image_tokens - 1: partial image, no text;
  maxtok_at_end forced prompt, max_tokens = num_image_tokens: complete image, no text token;
  natural       (variants whose lm_head makes greedy decoding emit <image_start> by itself)
                plain chat prompt, no prefix: text, a generated <image_start>, image, text.

Usage:
  python3 tools/golden_generation.py [--ckpt-dir DIR] [--out Tests/Fixtures/golden_generation]
                                     [--only NAME ...]
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import make_checkpoints as mk  # noqa: E402
import golden_llama as gl  # noqa: E402  (checkpoint loading, tokenizer, prompt ids, versions)

IMAGE_START = mk.IMAGE_START_ID
IMAGE_END = mk.IMAGE_END_ID
EOS = (128001, 128008, 128009)
FORCED_MESSAGE = "Generate an image of a red star."
FORCED_PREFIX = "Here is an image based on your request: <image_start>"
MIDTEXT_MESSAGE = "Show me what a lighthouse looks like."
NATURAL_MESSAGE = "Draw a quiet harbour at night."
K_PREFIX = 5
TEXT_AFTER = 12
NATURAL_MAX = 28


def metamorph_variants():
    return [n for n, v in mk.VARIANTS.items() if v["model_type"] == "metamorph_llama"]


def load_mm_heads(ckpt, cfg):
    """mm_projector and vision_head as torch modules, loaded strictly from the checkpoint."""
    import torch
    from torch import nn

    files, _ = gl.checkpoint_files(ckpt)
    tensors = {}
    for fn in files:
        for name, a in gl.read_safetensors_numpy(os.path.join(ckpt, fn)).items():
            if name.startswith(("model.mm_projector.", "vision_head.")):
                tensors[name] = torch.from_numpy(np.array(a, dtype=np.float32))
    h, mmh = cfg["hidden_size"], cfg["mm_hidden_size"]
    gelu = lambda: nn.GELU(approximate="none")  # noqa: E731
    assert cfg["mm_projector_type"] == "mlp2x_gelu"
    proj = nn.Sequential(nn.Linear(mmh, h), gelu(), nn.Linear(h, h))
    head_type = cfg.get("vision_head_type")
    if head_type == "mlp":
        head = nn.Sequential(nn.Linear(h, h), gelu(), nn.Linear(h, mmh))
    elif head_type == "mlp2x_gelu":
        head = nn.Sequential(nn.Linear(h, h), gelu(), nn.Linear(h, h), gelu(), nn.Linear(h, mmh))
    elif head_type == "linear":
        head = nn.Linear(h, h)
    else:
        head = nn.Linear(h, mmh)
    for prefix, module in (("model.mm_projector.", proj), ("vision_head.", head)):
        sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(sd, strict=True)
        module.to(torch.float32).eval()
    out_dim = mmh if head_type != "linear" else h
    return proj, head, head_type, out_dim


class Reference:
    """The no-cache loop. Each step recomputes the whole sequence from its input embeddings."""

    def __init__(self, model, proj, head, cfg):
        self.model, self.proj, self.head = model, proj, head
        self.n_img = cfg["num_image_tokens"]
        self.normalize = bool(cfg["normalize_vision"])
        self.forward_calls = 0

    def last_hidden(self, seq):
        import torch
        x = torch.stack(seq)[None]
        out = self.model.model(inputs_embeds=x, use_cache=False)
        self.forward_calls += 1
        return out.last_hidden_state[0, -1]

    def embed(self, ids):
        import torch
        return list(self.model.model.embed_tokens(torch.tensor(ids, dtype=torch.long)))

    def generate(self, prompt_ids, max_tokens, start_in_image, force_text=None):
        """Returns tokens (text ids, stop token included), images, segments, stop reason and
        text-step margins. force_text: ids to emit instead of the argmax at the first steps."""
        import torch
        with torch.no_grad():
            seq = self.embed(prompt_ids)
            h = self.last_hidden(seq)
            tokens, images, segments, margins = [], [], [], []
            positions, image_mode, stop = 0, start_in_image, None
            force = list(force_text or [])
            while stop is None:
                if positions >= max_tokens:
                    stop = "max_tokens"
                    break
                if image_mode:
                    img = {"count": 0, "complete": False, "tokens": []}
                    images.append(img)
                    segments.append({"kind": "image", "index": len(images) - 1})
                    for _ in range(self.n_img):
                        if positions >= max_tokens:
                            stop = "max_tokens"
                            break
                        z = self.head(h)
                        if self.normalize:
                            z = z / torch.clamp(torch.linalg.vector_norm(z), min=1e-12)
                        img["tokens"].append([float(v) for v in z])
                        img["count"] += 1
                        positions += 1
                        seq.append(self.proj(z))
                        h = self.last_hidden(seq)
                    if stop is None:
                        img["complete"] = True
                    image_mode = False
                    continue
                logits = self.model.lm_head(h)
                nxt = int(torch.argmax(logits))
                top2 = torch.topk(logits, 2).values
                margins.append(float(top2[0] - top2[1]))
                if force:
                    nxt = force.pop(0)
                tokens.append(nxt)
                if not segments or segments[-1]["kind"] != "text":
                    segments.append({"kind": "text", "ids": []})
                segments[-1]["ids"].append(nxt)
                positions += 1
                if nxt in EOS:
                    stop = "eos"
                    break
                if positions >= max_tokens:
                    stop = "max_tokens"
                    break
                seq += self.embed([nxt])
                h = self.last_hidden(seq)
                if nxt == IMAGE_START:
                    image_mode = True
            return {"tokens": tokens, "images": images, "segments": segments, "stop_reason": stop,
                    "text_margins": [round(m, 6) for m in margins],
                    "text_min_margin": min(margins) if margins else None, "positions": positions}


def chat_ids(tok, message, prefix=""):
    """Engine's non-raw prompt: template + assistant prefix, tokenised the MetaMorph way."""
    full = gl.CHAT_TEMPLATE.format(message=message) + prefix
    ids = gl.prompt_ids(tok, "raw", full)
    assert ids[:2] == [128000, 128000]
    return ids


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt-dir", help="use DIR/NAME/ instead of generating checkpoints")
    ap.add_argument("--out", default=os.path.join(REPO, "Tests", "Fixtures", "golden_generation"))
    ap.add_argument("--only", nargs="+", metavar="NAME")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--explore", action="store_true", help="print the natural trajectory only")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    names = args.only or metamorph_variants()
    vers = gl.versions()
    print("versions:", json.dumps(vers))

    tmp = tempfile.TemporaryDirectory(prefix="mm_golden_gen_")
    fresh = os.path.join(tmp.name, "a")
    gl.run_make(fresh, names)
    if args.ckpt_dir:
        root = args.ckpt_dir
    else:
        root = os.path.join(tmp.name, "b")
        gl.run_make(root, names)
    for n in names:
        gl.assert_same_tree(os.path.join(fresh, n), os.path.join(root, n))
    print("determinism: OK")

    os.makedirs(args.out, exist_ok=True)
    for name in names:
        t0 = time.time()
        ckpt = os.path.join(root, name)
        model, cfg, _ = gl.load_model(ckpt)
        proj, head, head_type, zdim = load_mm_heads(ckpt, cfg)
        tok = gl.make_tokenizer(ckpt, True)
        ref = Reference(model, proj, head, cfg)
        n_img = cfg["num_image_tokens"]
        files, _ = gl.checkpoint_files(ckpt)

        natural_ids = chat_ids(tok, NATURAL_MESSAGE)
        natural = ref.generate(natural_ids, NATURAL_MAX, False)
        has_natural = IMAGE_START in natural["tokens"]
        print(f"{name}: natural tokens {natural['tokens']} images "
              f"{[(i['count'], i['complete']) for i in natural['images']]}")
        if args.explore:
            continue

        cases = []
        forced_ids = chat_ids(tok, FORCED_MESSAGE, FORCED_PREFIX)
        assert forced_ids[-1] == IMAGE_START
        mid_chat = chat_ids(tok, MIDTEXT_MESSAGE)
        plain = ref.generate(mid_chat, K_PREFIX, False)
        assert IMAGE_START not in plain["tokens"] and len(plain["tokens"]) == K_PREFIX
        mid_ids = mid_chat + plain["tokens"] + [IMAGE_START]
        specs = [
            ("forced", forced_ids, n_img + TEXT_AFTER, {"message": FORCED_MESSAGE, "assistant_prefix": FORCED_PREFIX}),
            ("midtext", mid_ids, n_img + TEXT_AFTER,
             {"message": MIDTEXT_MESSAGE, "chat_prompt_ids": mid_chat, "prefix_text_ids": plain["tokens"],
              "how": "engine: raw = true, parts [.tokens(chat_prompt_ids + prefix_text_ids)], "
                     "assistant_prefix \"<image_start>\""}),
            ("maxtok_inside", forced_ids, n_img - 1, {"message": FORCED_MESSAGE, "assistant_prefix": FORCED_PREFIX}),
            ("maxtok_at_end", forced_ids, n_img, {"message": FORCED_MESSAGE, "assistant_prefix": FORCED_PREFIX}),
        ]
        for cname, ids, max_tokens, extra in specs:
            r = ref.generate(ids, max_tokens, True)
            cases.append(dict({"name": cname, "prompt_ids": ids, "max_tokens": max_tokens,
                               "start_in_image": True}, **extra, **r))
        if has_natural:
            cases.append(dict({"name": "natural", "prompt_ids": natural_ids, "max_tokens": NATURAL_MAX,
                               "start_in_image": False, "message": NATURAL_MESSAGE}, **natural))

        doc = {
            "variant": name,
            "description": mk.VARIANTS[name]["description"],
            "seed": mk.VARIANTS[name]["seed"],
            "vision_head_type": head_type,
            "normalize_vision": bool(cfg["normalize_vision"]),
            "num_image_tokens": n_img,
            "visual_token_dim": zdim,
            "dtype": mk.VARIANTS[name]["dtype"],
            "safetensors_sha256": {fn: gl.sha256(os.path.join(ckpt, fn)) for fn in files},
            "tokenizer_sha256": gl.sha256(os.path.join(ckpt, "tokenizer.json")),
            "versions": vers,
            "reference": "transformers LlamaModel float32 eager (weights upcast exactly) + torch "
                         "heads (GELU exact); no KV cache: the whole sequence of input embeddings "
                         "is recomputed every step; greedy argmax; every position counts against "
                         "max_tokens; EOS only tested in text mode",
            "eos_ids": list(EOS),
            "cases": cases,
        }
        path = os.path.join(args.out, f"{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        for c in cases:
            segs = " ".join(f"text{len(s['ids'])}" if s["kind"] == "text" else
                            f"img{c['images'][s['index']]['count']}{'' if c['images'][s['index']]['complete'] else '(partial)'}"
                            for s in c["segments"])
            print(f"  {c['name']}: {len(c['prompt_ids'])} prompt ids, max {c['max_tokens']}: {segs}, "
                  f"stop {c['stop_reason']}, min text margin {c['text_min_margin']}")
        print(f"{name}: {os.path.getsize(path)} bytes, {time.time() - t0:.1f} s, "
              f"{ref.forward_calls} full-sequence forwards")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
