#!/usr/bin/env python3
"""Benchmark: one 384x384 image through a SigLIP-so400m-shaped vision tower (random weights,
shapes from the real config), our engine vs transformers' SiglipVisionModel in float32.

  python tools/bench_siglip.py [--ckpt /work/ckpt/siglip-so400m-random] [--reps 3] [--scratch .build-vis]

Writes config.json + model.safetensors (vision_model.* names, F32, ~1.7 GB) to --ckpt (outside the
repo) if missing, runs the engine through `swift test --filter testBenchSo400m` with
METAMORPH_BENCH_SIGLIP set (release build), then torch with 1 and 2 threads, and prints ratios.
Both sides compute hidden_states[-1] (all 27 layers, no post_layernorm / head).
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

import torch
import transformers
from transformers import SiglipVisionConfig, SiglipVisionModel

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
REAL_CONFIG = os.path.join(ROOT, "..", "shared", "fixtures", "models", "siglip-so400m-patch14-384", "config.json")


def vision_config():
    if os.path.exists(REAL_CONFIG):
        vc = json.load(open(REAL_CONFIG))["vision_config"]
    else:
        vc = {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304, "num_attention_heads": 16,
              "num_hidden_layers": 27, "patch_size": 14}
    vc = {k: v for k, v in vc.items() if k != "model_type"}
    return SiglipVisionConfig(**vc), vc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="/work/ckpt/siglip-so400m-random")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scratch", default=".build-vis")
    ap.add_argument("--skip-engine", action="store_true")
    a = ap.parse_args()

    cfg, vc = vision_config()
    torch.manual_seed(0)
    model = SiglipVisionModel(cfg).eval()
    if not os.path.exists(os.path.join(a.ckpt, "model.safetensors")):
        from safetensors.torch import save_file
        os.makedirs(a.ckpt, exist_ok=True)
        sd = {}
        for n, p in model.state_dict().items():
            n = n[len("vision_model."):] if n.startswith("vision_model.") else n
            sd["vision_model." + n] = p.detach().contiguous()
        save_file(sd, os.path.join(a.ckpt, "model.safetensors"))
        json.dump({"model_type": "siglip", "vision_config": vc}, open(os.path.join(a.ckpt, "config.json"), "w"), indent=1)
        print(f"wrote {a.ckpt}")

    engine = {}
    if not a.skip_engine:
        env = dict(os.environ, METAMORPH_BENCH_SIGLIP=a.ckpt, METAMORPH_BENCH_REPS=str(a.reps))
        r = subprocess.run(["swift", "test", "-c", "release", "-Xswiftc", "-enable-testing", "--scratch-path", a.scratch, "--filter",
                            "SiglipModelTests/testBenchSo400m"], cwd=ROOT, env=env, capture_output=True, text=True)
        out = r.stdout + r.stderr
        for m in re.finditer(r"BENCH_SIGLIP threads=(\d+) ms_per_image=([\d.]+)", out):
            engine[int(m.group(1))] = float(m.group(2))
        m = re.search(r"BENCH_SIGLIP peak_rss_mb=(\d+)", out)
        if not engine:
            print(out[-3000:])
            sys.exit("engine benchmark produced no numbers")
        print(f"engine: {engine} ms/image, peak RSS {m.group(1) if m else '?'} MB")

    px = torch.rand(1, 3, cfg.image_size, cfg.image_size) * 2 - 1
    torch_ms = {}
    with torch.no_grad():
        for th in (1, 2):
            torch.set_num_threads(th)
            model(pixel_values=px, output_hidden_states=True)
            best = float("inf")
            for _ in range(a.reps):
                t0 = time.perf_counter()
                model(pixel_values=px, output_hidden_states=True)
                best = min(best, (time.perf_counter() - t0) * 1000)
            torch_ms[th] = best
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__} transformers {transformers.__version__}: {torch_ms} ms/image, peak RSS {rss:.0f} MB")
    for th in (1, 2):
        if th in engine:
            print(f"threads={th}: engine {engine[th]:.0f} ms, torch {torch_ms[th]:.0f} ms, engine/torch = {engine[th] / torch_ms[th]:.2f}")


if __name__ == "__main__":
    main()
