"""Pictures in colours outside the eight named ones, for shape questions that colour cannot answer.

    python3 tools/shapes/build_extra.py --work WORK [--n 6000]

Every colour of the world is seen with exactly three shapes by the language model (the fourth
pair is held out), so a decoder can answer "What shape is this?" from the colour alone on every
training picture, and then does so on held-out pairs (a blue circle is called a triangle). Shapes
drawn in other colours (pink, brown, teal, lime, ...: random hues at least 90 RGB units from every
named colour) break that shortcut: the only way to answer them is to read the shape. Writes
WORK/extra.npz (uint8 [N, 64, 64, 3]), WORK/extra.json (attributes, "color": null) and
WORK/extra_tokens.npy (float16 [N, 16, 128], encoded with WORK/siglip_mm exactly like
train_tower.encode_all). train_llm.py --extra-frac uses them.
"""
import argparse
import colorsys
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402
from train_tower import pixels, visual_tokens  # noqa: E402


def other_colour(rng):
    named = np.array(list(world.COLORS.values()), dtype=np.float64)
    while True:
        h, s, v = rng.uniform(0, 1), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0)
        rgb = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255
        if np.min(np.linalg.norm(named - rgb, axis=1)) >= 90:
            return tuple(int(round(x)) for x in rgb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    rng = np.random.default_rng(args.seed)
    images, attrs = [], []
    for _ in range(args.n):
        a = world.sample_attrs(rng)
        a["fg_rgb"] = other_colour(rng)
        a["color"] = None
        images.append(world.render(a, rng))
        attrs.append(a)
    images = np.stack(images)
    np.savez_compressed(os.path.join(args.work, "extra.npz"), images=images)
    json.dump({"seed": args.seed, "attrs": attrs}, open(os.path.join(args.work, "extra.json"), "w"))
    from transformers import SiglipModel
    tower = SiglipModel.from_pretrained(os.path.join(args.work, "siglip_mm")).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 512):
            out.append(visual_tokens(tower.vision_model, pixels(images[i:i + 512])).half().numpy())
    np.save(os.path.join(args.work, "extra_tokens.npy"), np.concatenate(out))
    print(f"{len(images)} pictures in other colours", file=sys.stderr)


if __name__ == "__main__":
    main()
