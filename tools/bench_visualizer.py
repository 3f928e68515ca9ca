#!/usr/bin/env python3
"""Visualizer speed: one SD1.5 UNet evaluation (batch 2 for guidance, 64x64 latent, 77x768
condition) and one VAE decode to 512x512, metamorph vs diffusers on PyTorch float32, 1 and 2
threads, in the same run. Random weights from the real SD1.5 configs
(/work/shared/fixtures/models/stable-diffusion-v1-5), written once as float32 safetensors to
--ckpt (outside the repository). Our side runs the env-gated XCTest VisualizerBenchTests
(release build) in a child process; peak RSS is each process's VmHWM.

  python tools/bench_visualizer.py [--ckpt /work/ckpt/sd15-random] [--threads 1,2] [--what unet,vae]
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SD = "/work/shared/fixtures/models/stable-diffusion-v1-5"


def make_ckpt(ckpt):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    torch.manual_seed(0)
    for sub, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        d = os.path.join(ckpt, sub)
        if os.path.exists(os.path.join(d, "diffusion_pytorch_model.safetensors")):
            continue
        cfg = cls.load_config(os.path.join(SD, sub))
        m = cls.from_config(cfg)
        m.save_pretrained(d, safe_serialization=True)
        print(f"wrote random {sub} to {d}", file=sys.stderr)


def torch_child(ckpt, what, th):
    """Runs in a subprocess so its peak RSS is its own."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    torch.set_num_threads(th)
    out = {}
    with torch.no_grad():
        if "unet" in what:
            unet = UNet2DConditionModel.from_pretrained(os.path.join(ckpt, "unet")).eval()
            x = torch.randn(2, 4, 64, 64)
            ctx = torch.randn(2, 77, 768)
            t0 = time.time(); unet(x, 500, encoder_hidden_states=ctx); out["unet"] = time.time() - t0
            del unet
        if "vae" in what:
            vae = AutoencoderKL.from_pretrained(os.path.join(ckpt, "vae")).eval()
            z = torch.randn(1, 4, 64, 64)
            t0 = time.time(); vae.decode(z); out["vae"] = time.time() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def ours(ckpt, what, th):
    env = dict(os.environ, MM_VIZ_BENCH_DIR=ckpt, MM_VIZ_BENCH_THREADS=str(th), MM_VIZ_BENCH_WHAT=what)
    r = subprocess.run(["swift", "test", "-c", "release", "--scratch-path", ".build-viz-rel", "--skip-build", "-Xswiftc", "-enable-testing",
                        "--filter", "VisualizerBenchTests"], cwd=ROOT, env=env, capture_output=True, text=True)
    res = {}
    for line in r.stdout.splitlines():
        m = re.match(r"bench: (unet|vae) threads=\d+ seconds=([0-9.]+) peak_rss_mb=([0-9.]+)", line)
        if m:
            res[m.group(1)] = float(m.group(2))
            res["peak_rss_mb"] = max(res.get("peak_rss_mb", 0), float(m.group(3)))
    if not res:
        sys.exit("our benchmark produced no numbers:\n" + r.stdout[-2000:] + r.stderr[-2000:])
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="/work/ckpt/sd15-random")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--what", default="unet,vae")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        return torch_child(a.ckpt, a.what, a.child)
    make_ckpt(a.ckpt)
    if subprocess.run(["swift", "build", "-c", "release", "--scratch-path", ".build-viz-rel", "--build-tests", "-Xswiftc", "-enable-testing"], cwd=ROOT).returncode:
        sys.exit("release build failed")
    print("| workload | threads | metamorph s | PyTorch s | ratio (torch / ours) | peak RSS ours / torch MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for th in [int(t) for t in a.threads.split(",")]:
        for w in a.what.split(","):
            r = subprocess.run([sys.executable, __file__, "--ckpt", a.ckpt, "--what", w, "--child", str(th)], capture_output=True, text=True)
            tr = json.loads([l for l in r.stdout.splitlines() if l.startswith("RESULT ")][0][7:])
            our = ours(a.ckpt, w, th)
            print(f"| {w} | {th} | {our[w]:.2f} | {tr[w]:.2f} | {tr[w] / our[w]:.2f} | {our['peak_rss_mb']:.0f} / {tr['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
