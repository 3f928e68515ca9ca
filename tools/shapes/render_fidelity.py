"""Where does a generated picture lose its colour or shape? Takes the language model out of the
loop: canonical pictures of the held-out pairs (large, centred, on gray: the generation targets)
are judged by the model (its answers to "What color is the shape?" / "What shape is this?",
as in quality.py) as they are, after a round trip through the VAE (decoding the latent mean and a
posterior sample, the kind of latent the UNet is trained on), and rendered by the visualizer
from the tower's own visual tokens of the picture.

    python3 tools/shapes/render_fidelity.py --work WORK [--vae WORK/vae] [--visualizer DIR]
                                            [--model models/shapes] [--per-pair 4]

Needs torch + diffusers for the VAE round trip (WORK/vae is the full VAE, encoder included;
the shipped visualizer has the decoder only) and WORK/canon.npz, canon.json, canon_tokens.npy
from build_data.py / train_tower.py. The judge and the visualizer run in our engine.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
import world  # noqa: E402
from quality import Judge  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--vae", help="full AutoencoderKL directory (default WORK/vae)")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "shapes"))
    ap.add_argument("--visualizer", help="default MODEL/visualizer")
    ap.add_argument("--per-pair", type=int, default=4)
    args = ap.parse_args()
    import torch
    from diffusers import AutoencoderKL
    import metamorph
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = metamorph.Model(args.model)
    vis = metamorph.Visualizer(args.visualizer or os.path.join(args.model, "visualizer"))
    judge = Judge(model)
    canon = json.load(open(os.path.join(args.work, "canon.json")))
    images = np.load(os.path.join(args.work, "canon.npz"))["images"]
    tokens = np.load(os.path.join(args.work, "canon_tokens.npy"))
    vae = AutoencoderKL.from_pretrained(args.vae or os.path.join(args.work, "vae")).eval()
    kinds = ["picture", "vae mean", "vae sample", "visualizer from tower tokens"]
    ok = {k: np.zeros(3, int) for k in kinds}
    err = {"vae mean": [], "vae sample": []}
    n = 0
    for c, s in sorted(world.HELD_OUT):
        idx = [i for i, (a, kind) in enumerate(zip(canon["attrs"], canon["varied"]))  # default attributes only
               if kind == "" and (a["color"], a["shape"]) == (c, s)][:args.per_pair]
        x = torch.from_numpy(images[idx]).float().div(127.5).sub(1).permute(0, 3, 1, 2)
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            decoded = {"vae mean": vae.decode(post.mean).sample, "vae sample": vae.decode(post.sample()).sample}
        pics = {k: ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy() for k, y in decoded.items()}
        for k in pics:
            err[k].append(np.abs(pics[k].astype(np.float64) - images[idx]).mean())
        for j, i in enumerate(idx):
            for k, img in (("picture", images[i]), ("vae mean", pics["vae mean"][j]), ("vae sample", pics["vae sample"][j]),
                           ("visualizer from tower tokens", vis.render(tokens[i].astype(np.float32), seed=i))):
                pc, ps = judge.classify(img)
                ok[k] += [pc == c, ps == s, (pc, ps) == (c, s)]
            n += 1
    print(f"| canonical pictures of the held-out pairs ({n}), judged by the model | colour | shape | both | mean abs error (levels) |")
    print("|---|---|---|---|---|")
    for k in kinds:
        e = f"{np.mean(err[k]):.1f}" if k in err else ""
        print(f"| {k} | {ok[k][0] / n:.0%} | {ok[k][1] / n:.0%} | {ok[k][2] / n:.0%} | {e} |")


if __name__ == "__main__":
    main()
