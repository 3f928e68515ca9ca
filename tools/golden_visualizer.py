#!/usr/bin/env python3
"""Golden data for the visualizer (Tests/Fixtures/visualizer), from diffusers itself.

1. Builds tiny random models that exercise every block type of SD1.5: a UNet2DConditionModel
   (CrossAttnDownBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D),
   an AutoencoderKL with 2 UpDecoderBlock2D, and MetaMorph's adapter (mlp mode; xattnffn checked
   separately), with norms perturbed away from identity.
2. Writes them as the *official* release files (unet_checkpoint.pt / adapter_checkpoint.pt with
   model_state_dict, model_config.json, a diffusers SD folder with the SD1.5 scheduler config)
   to a temporary folder and runs tools/convert_visualizer.py on them: the fixture directory is
   the converter's output.
3. Runs diffusers' StableDiffusionPipeline (prompt_embeds = adapter output padded to 77 rows,
   negative_prompt_embeds = zeros, fixed latents, output_type "np") with PNDM, DDIM and Euler,
   plus single UNet and VAE evaluations, and stores inputs/outputs as .npy. For every pipeline run
   steps_<run>.npy [n_steps, 4, h, w] holds the latents after each denoising step (the scheduler's
   output, from callback_on_step_end).
The adapter class below re-states inference/adapter.py's module tree (same parameter names).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import diffusers
from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler,
                       StableDiffusionPipeline, UNet2DConditionModel)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "visualizer")
SD_SCHED = os.path.join("/work/shared/fixtures/models/stable-diffusion-v1-5/scheduler/scheduler_config.json")
CTX = 32  # cross_attention_dim of the tiny UNet = adapter output_dim


class XBlock(nn.Module):
    def __init__(self, e, heads, ffn):
        super().__init__()
        self.include_ffn = ffn
        self.cross_attn = nn.MultiheadAttention(e, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(e)
        if ffn:
            self.ffn = nn.Sequential(nn.Linear(e, 4 * e), nn.ReLU(), nn.Linear(4 * e, e))
            self.norm2 = nn.LayerNorm(e)

    def forward(self, t, x):
        t = self.norm1(t + self.cross_attn(t, x, x)[0])
        if self.include_ffn:
            t = self.norm2(t + self.ffn(t))
        return t


class Projector(nn.Module):
    """Parameter names and forward of SimplifiedSigLIPProjector."""
    def __init__(self, input_dim, hidden_dim, output_dim, num_tokens, num_layers, num_heads, mode):
        super().__init__()
        self.mode = mode
        if mode == "mlp":
            dims = [input_dim] + [hidden_dim] * (max(num_layers, 2) - 1) + [output_dim]
            self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
            self.norms = nn.ModuleList(nn.LayerNorm(dims[i + 1]) for i in range(len(dims) - 1))
        else:
            self.token_embeddings = nn.Parameter(torch.randn(1, num_tokens, output_dim))
            self.proj = nn.Linear(input_dim, output_dim)
            self.input_norm = nn.LayerNorm(output_dim)
            self.cross_attn_layers = nn.ModuleList(XBlock(output_dim, num_heads, mode == "xattnffn") for _ in range(num_layers))

    def forward(self, x):
        if self.mode == "mlp":
            for l, n in zip(self.layers[:-1], self.norms[:-1]):
                x = F.relu(n(l(x)))
            return self.norms[-1](self.layers[-1](x))
        xp = self.input_norm(self.proj(x))
        t = self.token_embeddings.expand(x.shape[0], -1, -1)
        for b in self.cross_attn_layers:
            t = b(t, xp)
        return t


def perturb(model, g):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif "norm" in name and name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def save(name, a):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(a, dtype=np.float32))


class StepRecorder:
    """callback_on_step_end: keeps the scheduler's output latents after every denoising step."""
    def __init__(self):
        self.latents = []

    def __call__(self, pipe, i, t, kwargs):
        self.latents.append(kwargs["latents"][0].detach().clone())
        return {}

    def array(self):
        return torch.stack(self.latents).numpy()  # [n_steps, 4, h, w]


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    os.makedirs(OUT, exist_ok=True)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=CTX,
        attention_head_dim=2, norm_num_groups=4, flip_sin_to_cos=True, freq_shift=0).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=16).eval()
    acfg = dict(input_dim=1152, hidden_dim=64, output_dim=CTX, num_tokens=77, num_layers=3, num_heads=4, mode="mlp")
    adapter = Projector(**acfg).eval()
    for m in (unet, vae, adapter):
        perturb(m, g)
    xcfg = dict(input_dim=1152, hidden_dim=64, output_dim=CTX, num_tokens=77, num_layers=2, num_heads=4, mode="xattnffn")
    xadapter = Projector(**xcfg).eval()
    perturb(xadapter, g)

    with tempfile.TemporaryDirectory() as tmp:
        # the official release files + a diffusers SD folder
        torch.save({"model_state_dict": unet.state_dict()}, os.path.join(tmp, "unet_checkpoint.pt"))
        torch.save({"model_state_dict": adapter.state_dict()}, os.path.join(tmp, "adapter_checkpoint.pt"))
        json.dump(acfg, open(os.path.join(tmp, "model_config.json"), "w"))
        sd = os.path.join(tmp, "sd")
        unet.save_pretrained(os.path.join(sd, "unet"))
        vae.save_pretrained(os.path.join(sd, "vae"))
        os.makedirs(os.path.join(sd, "scheduler"))
        sched_cfg = json.load(open(SD_SCHED))
        json.dump(sched_cfg, open(os.path.join(sd, "scheduler", "scheduler_config.json"), "w"))
        open(os.path.join(sd, "v1-inference.yaml"), "w").write("model:\n  params:\n    scale_factor: 0.18215\n")
        dst = os.path.join(OUT, "tiny")
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_visualizer.py"),
                        "--unet-pt", os.path.join(tmp, "unet_checkpoint.pt"), "--adapter-pt", os.path.join(tmp, "adapter_checkpoint.pt"),
                        "--adapter-config", os.path.join(tmp, "model_config.json"), "--sd", sd, "--out", dst], check=True)
        # a second scheduler folder: Euler with trailing spacing, selected by name
        os.makedirs(os.path.join(dst, "euler_trailing"), exist_ok=True)
        ecfg = dict(EulerDiscreteScheduler.from_config(sched_cfg, timestep_spacing="trailing").config)
        ecfg["_class_name"] = "EulerDiscreteScheduler"
        json.dump(ecfg, open(os.path.join(dst, "euler_trailing", "scheduler_config.json"), "w"), indent=2, default=list)
    # the xattnffn adapter on its own
    xdir = os.path.join(OUT, "adapter_xattnffn")
    os.makedirs(xdir, exist_ok=True)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in xadapter.state_dict().items()}, os.path.join(xdir, "model.safetensors"))
    json.dump(xcfg, open(os.path.join(xdir, "config.json"), "w"), indent=2)

    gen = torch.Generator().manual_seed(7)
    tokens = torch.randn(1, 64, 1152, generator=gen)
    latents = torch.randn(1, 4, 8, 8, generator=gen)
    golden = {"diffusers": diffusers.__version__, "torch": torch.__version__, "runs": {}}
    with torch.no_grad():
        emb = adapter(tokens)
        save("visual_tokens.npy", tokens[0].numpy())
        save("adapter_out.npy", emb[0].numpy())
        save("adapter_xattnffn_out.npy", xadapter(tokens)[0].numpy())
        cond = torch.cat([emb, torch.zeros(1, 77 - 64, CTX)], dim=1)
        save("latents.npy", latents.numpy())
        # single UNet evaluation, batch 2 like guidance
        x = torch.randn(2, 4, 8, 8, generator=gen)
        ctx = torch.cat([torch.zeros_like(cond), cond])
        t = 801
        save("unet_in.npy", x.numpy()); save("unet_ctx.npy", ctx.numpy())
        save("unet_out.npy", unet(x, t, encoder_hidden_states=ctx).sample.numpy())
        golden["unet_timestep"] = t
        z = torch.randn(1, 4, 8, 8, generator=gen)
        save("vae_in.npy", z.numpy()); save("vae_out.npy", vae.decode(z).sample.numpy())

        runs = [("pndm", PNDMScheduler, 6, 7.5, {}), ("ddim", DDIMScheduler, 5, 6.0, {}),
                ("euler", EulerDiscreteScheduler, 5, 7.5, {}), ("pndm_noguide", PNDMScheduler, 4, 1.0, {})]
        for name, cls, steps, gscale, extra in runs:
            sched = cls.from_config(sched_cfg, **extra)
            pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sched,
                                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
            pipe.set_progress_bar_config(disable=True)
            rec = StepRecorder()
            img = pipe(prompt_embeds=cond, negative_prompt_embeds=torch.zeros_like(cond), guidance_scale=gscale,
                       num_inference_steps=steps, latents=latents.clone(), output_type="np",
                       callback_on_step_end=rec, callback_on_step_end_tensor_inputs=["latents"]).images[0]
            save(f"image_{name}.npy", img)
            save(f"steps_{name}.npy", rec.array())
            sched.set_timesteps(steps)
            golden["runs"][name] = {"scheduler": cls.__name__.replace("Scheduler", "").replace("Discrete", "").lower(),
                                    "steps": steps, "guidance": gscale,
                                    "timesteps": [float(v) for v in sched.timesteps]}
        # the trailing Euler from the subfolder
        esched = EulerDiscreteScheduler.from_config(json.load(open(os.path.join(OUT, "tiny", "euler_trailing", "scheduler_config.json"))))
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=esched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        rec = StepRecorder()
        img = pipe(prompt_embeds=cond, negative_prompt_embeds=torch.zeros_like(cond), guidance_scale=7.5,
                   num_inference_steps=4, latents=latents.clone(), output_type="np",
                   callback_on_step_end=rec, callback_on_step_end_tensor_inputs=["latents"]).images[0]
        save("image_euler_trailing.npy", img)
        save("steps_euler_trailing.npy", rec.array())
        esched.set_timesteps(4)
        golden["runs"]["euler_trailing"] = {"scheduler": "euler_trailing", "steps": 4, "guidance": 7.5,
                                            "timesteps": [float(v) for v in esched.timesteps]}
    json.dump(golden, open(os.path.join(OUT, "golden.json"), "w"), indent=2)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
