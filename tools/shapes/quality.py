"""Quality of the shapes model, measured through our engine (libmetamorph via the Python
binding; no PyTorch): question answering, generation and edits on colour x shape pairs the
language model never saw in training (world.HELD_OUT), with pictures from three renderers:
the two used in training (PIL, numpy) and matplotlib's Agg rasteriser, a program training never
saw, with its own antialiasing and with sizes and positions drawn from continuous ranges.

    python3 tools/shapes/quality.py [--model models/shapes] [--visualizer models/shapes/visualizer]
                                    [--n 8] [--json OUT.json] [--markdown]

Generated pictures are classified two ways: by the tower (the model's own answer to "What
color is the shape?" / "What shape is this?" about the rendered picture: SigLIP features read
by the LLM) and, for colour, by pixels (the palette colour nearest to the pixels that differ
most from the picture's border). A generation counts as a match when the tower's colour and
shape both equal the prompt's.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
import world  # noqa: E402


def render_matplotlib(color, shape, rng):
    """The same kinds of pictures drawn by matplotlib (Agg), continuous sizes and positions."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Polygon, RegularPolygon
    S = world.SIZE
    bgs = [b for b in world.BG_NAMES if b != color]
    bg = bgs[rng.integers(len(bgs))]
    r = float(rng.uniform(9, 22))
    cx, cy = (float(rng.uniform(r + 2, S - r - 2)) for _ in range(2))
    fig = plt.figure(figsize=(1, 1), dpi=S)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, S); ax.set_ylim(S, 0); ax.axis("off")
    fig.patch.set_facecolor(np.array(world.BACKGROUNDS[bg]) / 255)
    fc = np.array(world.COLORS[color]) / 255
    rot = math.radians(float(rng.uniform(-10, 10)))
    if shape == "circle":
        p = Circle((cx, cy), r, fc=fc, ec="none")
    elif shape == "square":
        p = RegularPolygon((cx, cy), 4, radius=r * 1.15, orientation=math.pi / 4 + rot, fc=fc, ec="none")
    elif shape == "triangle":
        p = RegularPolygon((cx, cy), 3, radius=r, orientation=math.pi + rot, fc=fc, ec="none")  # y axis points down
    else:
        a = {"shape": "star", "r": r, "cx": cx, "cy": cy, "rot": math.degrees(rot), "inner": float(rng.uniform(0.38, 0.5))}
        p = Polygon(world.polygon(a), closed=True, fc=fc, ec="none")
    ax.add_patch(p)
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def picture(color, shape, renderer, rng):
    if renderer == "matplotlib":
        return render_matplotlib(color, shape, rng)
    a = world.sample_attrs(rng, color=color, shape=shape)
    return world.render(a, rng, renderer, aug=False)


def first_word(text, words):
    """The vocabulary word that occurs first in text (None if none)."""
    t = " " + text.lower().replace(".", " ").replace(",", " ") + " "
    best = None
    for w in words:
        k = t.find(" " + w + " ")
        if k >= 0 and (best is None or k < best[0]):
            best = (k, w)
    return best[1] if best else None


def pixel_color(img):
    """Palette colour of the pixels farthest from the border's colour."""
    x = img.reshape(-1, 3).astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(np.float32)
    bg = np.median(border, axis=0)
    d = np.linalg.norm(x - bg, axis=1)
    fg = x[d > max(40.0, 0.5 * d.max())]
    if len(fg) == 0:
        return None
    m = np.median(fg, axis=0)
    names = world.COLOR_NAMES
    return names[int(np.argmin([np.linalg.norm(m - np.array(world.COLORS[c])) for c in names]))]


class Judge:
    def __init__(self, model):
        self.model = model

    def ask(self, img, question, max_tokens=24):
        import metamorph
        with metamorph.Session(self.model) as s:
            return s.generate([img, question], max_tokens=max_tokens).text

    def classify(self, img):
        return (first_word(self.ask(img, "What color is the shape?"), world.COLOR_NAMES),
                first_word(self.ask(img, "What shape is this?"), world.SHAPES))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "shapes"))
    ap.add_argument("--visualizer", default=None)
    ap.add_argument("--n", type=int, default=8, help="pictures per pair and renderer")
    ap.add_argument("--gen-n", type=int, default=4, help="generations per pair (different seeds)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--trained-pairs", action="store_true", help="also measure on pairs seen in training")
    ap.add_argument("--parts", default="qa,generation,edits")
    args = ap.parse_args()
    import metamorph
    vis_dir = args.visualizer or os.path.join(args.model, "visualizer")
    rng = np.random.default_rng(args.seed)
    model = metamorph.Model(args.model)
    vis = metamorph.Visualizer(vis_dir)
    judge = Judge(model)
    t0 = time.time()
    groups = {"held-out": sorted(world.HELD_OUT)}
    if args.trained_pairs:
        pairs = [(c, s) for c in world.COLOR_NAMES for s in world.SHAPES if (c, s) not in world.HELD_OUT]
        groups["trained"] = [pairs[i] for i in rng.choice(len(pairs), 8, replace=False)]
    report = {"model": os.path.relpath(args.model, ROOT), "n": args.n, "seed": args.seed, "groups": {}}
    for gname, pairs in groups.items():
        g = {}
        parts = args.parts.split(",")
        # 1. understanding
        for renderer in (["pil", "numpy", "matplotlib"] if "qa" in parts else []):
            ok = {"color": 0, "shape": 0, "describe": 0}
            total = 0
            for c, s in pairs:
                for _ in range(args.n):
                    img = picture(c, s, renderer, rng)
                    total += 1
                    ok["color"] += first_word(judge.ask(img, "What color is the shape?"), world.COLOR_NAMES) == c
                    ok["shape"] += first_word(judge.ask(img, "What shape is this?"), world.SHAPES) == s
                    d = judge.ask(img, "Describe the image.", 40)
                    ok["describe"] += first_word(d, world.COLOR_NAMES) == c and first_word(d, world.SHAPES) == s
            g[f"qa/{renderer}"] = {k: v / total for k, v in ok.items()} | {"n": total}
        # 2. generation
        gen = {"both": 0, "color": 0, "shape": 0, "pixel_color": 0, "made_image": 0, "n": 0}
        samples = []
        for c, s in (pairs if "generation" in parts else []):
            for k in range(args.gen_n):
                with metamorph.Session(model) as sess:
                    r = sess.generate(f"Generate an image of {world.article(c)} {c} {s}.", max_tokens=64)
                gen["n"] += 1
                if not r.images:
                    continue
                gen["made_image"] += 1
                img = vis.render(r.images[0], seed=args.seed + k)
                tc, ts = judge.classify(img)
                pc = pixel_color(img)
                gen["color"] += tc == c; gen["shape"] += ts == s; gen["both"] += tc == c and ts == s
                gen["pixel_color"] += pc == c
                if k == 0:
                    samples.append(img)
        if gen["n"]:
            g["generation"] = {k: (v / gen["n"] if k != "n" else v) for k, v in gen.items()}
        # 3. edits: a picture of a pair, "Make it <colour>." / "Turn it into a <shape>."
        ed = {"color_edit": [0, 0], "shape_edit": [0, 0]}

        def edit(kind, src_color, src_shape, instruction, seed):
            """Edit a PIL picture of (src_color, src_shape); a hit when the render is judged (c, s)."""
            img = world.render(world.sample_attrs(rng, color=src_color, shape=src_shape), rng, "pil", aug=False)
            with metamorph.Session(model) as sess:
                r = sess.generate([img, instruction], max_tokens=64)
            if r.images:
                ed[kind][0] += judge.classify(vis.render(r.images[0], seed=seed)) == (c, s)
            ed[kind][1] += 1

        for c, s in (pairs if "edits" in parts else []):
            for k in range(max(1, args.gen_n // 2)):
                src_c = [x for x in world.COLOR_NAMES if x != c][rng.integers(7)]
                edit("color_edit", src_c, s, f"Make it {c}.", args.seed + k)
                src_s = [x for x in world.SHAPES if x != s][rng.integers(3)]
                edit("shape_edit", c, src_s, f"Turn it into {world.article(s)} {s}.", args.seed + k)
        if ed["color_edit"][1]:
            g["edits"] = {k: v[0] / max(1, v[1]) for k, v in ed.items()} | {"n": ed["color_edit"][1]}
        report["groups"][gname] = g
        if samples:
            from PIL import Image
            grid = np.concatenate(samples, axis=1)
            os.makedirs("/tmp/metamorph-quality", exist_ok=True)
            Image.fromarray(grid).save(f"/tmp/metamorph-quality/{gname}-generations.png")
    report["seconds"] = round(time.time() - t0, 1)
    if args.json:
        json.dump(report, open(args.json, "w"), indent=1)
    if args.markdown:
        for gname, g in report["groups"].items():
            print(f"\n{gname} pairs\n\n| measure | colour | shape | both / describe | n |\n|---|---|---|---|---|")
            for r in [r for r in ["pil", "numpy", "matplotlib"] if f"qa/{r}" in g]:
                q = g[f"qa/{r}"]
                print(f"| QA, {r} pictures | {q['color']:.0%} | {q['shape']:.0%} | {q['describe']:.0%} (describe) | {q['n']} |")
            ge = g.get("generation")
            if ge:
              print(f"| generation (tower judge) | {ge['color']:.0%} | {ge['shape']:.0%} | {ge['both']:.0%} | {ge['n']} |")
              print(f"| generation (pixel colour) | {ge['pixel_color']:.0%} | | | {ge['n']} |")
            e = g.get("edits")
            if e:
              print(f"| edit \"Make it C.\" (colour and shape right) | | | {e['color_edit']:.0%} | {e['n']} |")
              print(f"| edit \"Turn it into S.\" (colour and shape right) | | | {e['shape_edit']:.0%} | {e['n']} |")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
