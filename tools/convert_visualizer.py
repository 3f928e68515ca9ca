#!/usr/bin/env python3
"""Turn MetaMorph's official visualizer release into metamorph's visualizer directory.

Inputs (see facebookresearch/metamorph inference/load_visualization.py):
  --unet-pt        unet_checkpoint.pt      {"model_state_dict": UNet2DConditionModel state dict}
  --adapter-pt     adapter_checkpoint.pt   {"model_state_dict": SimplifiedSigLIPProjector state dict}
  --adapter-config model_config.json       the projector's constructor arguments
  --sd             a Stable Diffusion 1.5 diffusers folder (unet/config.json, vae/, scheduler/,
                   optionally v1-inference.yaml for the latent scale)
Output (--out DIR):
  adapter/{config.json, model.safetensors}
  unet/{config.json, diffusion_pytorch_model.safetensors}
  vae/{config.json, diffusion_pytorch_model.safetensors}
  scheduler/scheduler_config.json
  visualizer.json   {"latent_scale": ..., "steps": 50, "guidance": 7.5, "condition_length": 77}

Pickles are read with torch.load(weights_only=True) (plain tensors and dicts only). --dtype f16
halves the UNet/VAE/adapter files (the engine widens F16 weights to float32 as it computes).
"""
import argparse
import json
import os
import re
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

ADAPTER_KEYS = ("input_dim", "hidden_dim", "output_dim", "num_tokens", "num_layers", "num_heads", "mode")
ADAPTER_DEFAULTS = dict(input_dim=1152, hidden_dim=4096, output_dim=768, num_tokens=77, num_layers=6, num_heads=8, mode="mlp")


def state_dict_of(path):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict):
        sys.exit(f"{path}: expected a state dict (or a dict with model_state_dict)")
    out = {}
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        # DataParallel / DDP / torch.compile wrappers
        for pre in ("module.", "_orig_mod."):
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def cast(sd, dtype):
    res = {}
    for k, v in sd.items():
        v = v.detach().contiguous()
        if v.is_floating_point():
            if dtype == "f16":
                v = v.to(torch.float16)
            elif dtype == "f32":
                v = v.to(torch.float32)
            elif v.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                v = v.to(torch.float32)
        res[k] = v.contiguous()
    return res


def component_weights(folder):
    for name in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return load_file(p)
    p = os.path.join(folder, "diffusion_pytorch_model.bin")
    if os.path.exists(p):
        return state_dict_of(p)
    sys.exit(f"{folder}: no diffusion_pytorch_model.safetensors or .bin")


def latent_scale(sd_dir, vae_cfg):
    y = os.path.join(sd_dir, "v1-inference.yaml")
    if os.path.exists(y):
        m = re.search(r"^\s*scale_factor:\s*([0-9.eE+-]+)", open(y).read(), re.M)
        if m:
            return float(m.group(1))
    return float(vae_cfg.get("scaling_factor", 0.18215))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet-pt", required=True)
    ap.add_argument("--adapter-pt", required=True)
    ap.add_argument("--adapter-config", required=True)
    ap.add_argument("--sd", required=True, help="Stable Diffusion 1.5 diffusers folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", choices=["keep", "f32", "f16"], default="keep")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    for sub in ("adapter", "unet", "vae", "scheduler"):
        os.makedirs(os.path.join(a.out, sub), exist_ok=True)

    # adapter
    cfg = json.load(open(a.adapter_config))
    acfg = dict(ADAPTER_DEFAULTS)
    acfg.update({k: cfg[k] for k in ADAPTER_KEYS if k in cfg})
    json.dump(acfg, open(os.path.join(a.out, "adapter", "config.json"), "w"), indent=2)
    save_file(cast(state_dict_of(a.adapter_pt), a.dtype), os.path.join(a.out, "adapter", "model.safetensors"))

    # unet: the SD1.5 config with the fine-tuned weights
    ucfg = json.load(open(os.path.join(a.sd, "unet", "config.json")))
    json.dump(ucfg, open(os.path.join(a.out, "unet", "config.json"), "w"), indent=2)
    usd = state_dict_of(a.unet_pt)
    save_file(cast(usd, a.dtype), os.path.join(a.out, "unet", "diffusion_pytorch_model.safetensors"))

    # vae: only the decoder side is used; keep everything (small) for fidelity
    vcfg = json.load(open(os.path.join(a.sd, "vae", "config.json")))
    json.dump(vcfg, open(os.path.join(a.out, "vae", "config.json"), "w"), indent=2)
    vsd = {k: v for k, v in component_weights(os.path.join(a.sd, "vae")).items()
           if k.startswith("decoder.") or k.startswith("post_quant_conv.")}
    save_file(cast(vsd, a.dtype), os.path.join(a.out, "vae", "diffusion_pytorch_model.safetensors"))

    shutil.copy(os.path.join(a.sd, "scheduler", "scheduler_config.json"), os.path.join(a.out, "scheduler", "scheduler_config.json"))
    json.dump({"latent_scale": latent_scale(a.sd, vcfg), "steps": 50, "guidance": 7.5, "condition_length": 77},
              open(os.path.join(a.out, "visualizer.json"), "w"), indent=2)
    print(f"wrote {a.out}: adapter {len(state_dict_of(a.adapter_pt))} tensors, unet {len(usd)}, vae decoder {len(vsd)}")


if __name__ == "__main__":
    main()
