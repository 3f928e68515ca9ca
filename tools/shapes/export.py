"""Assemble the shipped model directory from a training WORK directory:

    OUT/                 MetaMorph checkpoint (config.json, model.safetensors BF16 with the recentred
                         tower bundled as model.vision_tower.vision_tower.*, tokenizer.json,
                         generation_config.json, training.json)
    OUT/siglip/          the SigLIP model as trained (vision + text towers, Hugging Face layout)
    OUT/visualizer/      adapter + UNet + VAE decoder (F16) + scheduler, the engine's layout

    python3 tools/shapes/export.py --work WORK --out models/shapes
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "training.json"):
        shutil.copy(os.path.join(args.work, "mm", f), os.path.join(args.out, f))
    sig = os.path.join(args.out, "siglip")
    os.makedirs(sig, exist_ok=True)
    for f in ("config.json", "model.safetensors", "training.json"):
        shutil.copy(os.path.join(args.work, "siglip", f), os.path.join(sig, f))
    size = json.load(open(os.path.join(args.work, "siglip", "config.json")))["vision_config"]["image_size"]
    json.dump({"image_processor_type": "SiglipImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
               "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
               "image_mean": [0.5] * 3, "image_std": [0.5] * 3}, open(os.path.join(sig, "preprocessor_config.json"), "w"), indent=1)
    subprocess.run([sys.executable, os.path.join(HERE, "train_visualizer.py"), "--work", args.work, "--stage", "export",
                    "--out", os.path.join(args.out, "visualizer")], check=True)
    for sub in ("vae", "unet"):
        t = os.path.join(args.work, sub, "training.json")
        if os.path.exists(t):
            shutil.copy(t, os.path.join(args.out, "visualizer", sub, "training.json"))
    total = 0
    for root, _, files in os.walk(args.out):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"{args.out}: {total / 1e6:.1f} MB", file=sys.stderr)
    assert total <= 25e6, "the shipped model must stay within 25 MB"
