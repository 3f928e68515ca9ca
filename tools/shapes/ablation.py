"""Does understanding data help generation? A small version of the paper's ablation (MetaMorph,
section 4: adding understanding data improves visual generation more than adding the same amount
of generation data), measured through our engine.

    python3 tools/shapes/ablation.py --work WORK NAME=CHECKPOINT_DIR ... [--markdown]

Each CHECKPOINT_DIR is a language model trained by train_llm.py with a different --mix / --steps
(see docs/shapes.md for the runs). For every colour x shape pair and five phrasings of the
request ("Generate an image of ...", "Draw ...", ...), the engine generates greedily and the
reply's visual tokens are judged without the visualizer, so that only the language model is
compared: each generated token grid is assigned to the colour x shape pair whose canonical
pictures (large, centred, on gray, as the training targets) it is closest to in cosine, summed
over the 16 tokens. The judge's own accuracy on held-back canonical pictures is printed first.
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

def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="training WORK directory (canon.json, canon_tokens.npy)")
    ap.add_argument("runs", nargs="+", help="NAME=DIR")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    import metamorph
    canon = json.load(open(os.path.join(args.work, "canon.json")))
    toks = unit(np.load(os.path.join(args.work, "canon_tokens.npy")).astype(np.float32))
    pairs = [(c, s) for c in world.COLOR_NAMES for s in world.SHAPES]
    by_pair = {p: [] for p in pairs}
    for j, (a, kind) in enumerate(zip(canon["attrs"], canon["varied"])):
        if kind == "":
            by_pair[(a["color"], a["shape"])].append(j)
    # Centroids from the first half of each pair's canonical pictures; the judge is checked on
    # the second half.
    cent = np.stack([unit(toks[by_pair[p][:len(by_pair[p]) // 2]].mean(0)) for p in pairs])  # [32, 16, D]

    def judge(grid):
        score = np.einsum("td,ptd->p", unit(grid), cent)
        return pairs[int(score.argmax())]
    check = [(judge(toks[j]), p) for p in pairs for j in by_pair[p][len(by_pair[p]) // 2:]]
    judge_acc = float(np.mean([a == b for a, b in check]))
    print(f"judge on held-back canonical pictures: {judge_acc:.3f} ({len(check)} pictures)", file=sys.stderr)
    report = {"judge_accuracy": judge_acc, "runs": {}}
    for spec in args.runs:
        name, path = spec.split("=", 1)
        model = metamorph.Model(path)
        res = {}
        for group in ("held-out", "trained"):
            ok = {"color": 0, "shape": 0, "both": 0, "n": 0, "cos": 0.0}
            for c, s in pairs:
                if ((c, s) in world.HELD_OUT) != (group == "held-out"):
                    continue
                for form in world.GEN_FORMS:
                    with metamorph.Session(model) as sess:
                        r = sess.generate(form.format(f"{world.article(c)} {c} {s}"), max_tokens=64)
                    ok["n"] += 1
                    if not r.images:
                        continue
                    g = r.images[0]
                    pc, ps = judge(g)
                    ok["color"] += pc == c; ok["shape"] += ps == s; ok["both"] += (pc, ps) == (c, s)
                    ok["cos"] += float(np.einsum("td,td->", unit(g), cent[pairs.index((c, s))]) / g.shape[0])
            res[group] = {k: (v / ok["n"] if k != "n" else v) for k, v in ok.items()}
        model.close()
        report["runs"][name] = res
        print(name, json.dumps(res), file=sys.stderr, flush=True)
    if args.json:
        json.dump(report, open(args.json, "w"), indent=1)
    if args.markdown:
        print("| run | held-out: colour / shape / both | held-out cos | trained: colour / shape / both | trained cos |")
        print("|---|---|---|---|---|")
        for name, r in report["runs"].items():
            h, t = r["held-out"], r["trained"]
            print(f"| {name} | {h['color']:.0%} / {h['shape']:.0%} / {h['both']:.0%} | {h['cos']:.3f} "
                  f"| {t['color']:.0%} / {t['shape']:.0%} / {t['both']:.0%} | {t['cos']:.3f} |")


if __name__ == "__main__":
    main()
