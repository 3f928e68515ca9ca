"""Stage 2: the visualizer, in the layout the engine reads (docs/visualizer.md):
an AutoencoderKL (64x64 RGB <-> 4x16x16 latents), then a UNet2DConditionModel and the
MetaMorph adapter (mode mlp) trained together to denoise latents given the visual tokens.

    python3 tools/shapes/train_visualizer.py --work WORK --stage vae  [--steps 800]
    python3 tools/shapes/train_visualizer.py --work WORK --stage unet [--steps 3000]   (needs WORK/tokens.npy)
    python3 tools/shapes/train_visualizer.py --work WORK --stage export --out DIR

Conditioning is what the engine feeds at inference: adapter(16 visual tokens) zero-padded to
77 rows; 10% of the time the whole condition is zeros, which is the negative condition of
classifier-free guidance. Noise schedule: SD1.5's (scaled_linear 0.00085..0.012, 1000 steps,
epsilon prediction).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

COND_LEN = 77
VAE_CONFIG = dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 3,
                  up_block_types=["UpDecoderBlock2D"] * 3, block_out_channels=[16, 32, 64], layers_per_block=1,
                  latent_channels=4, norm_num_groups=8, sample_size=64)
UNET_CONFIG = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[64, 128],
                   down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                   cross_attention_dim=64, attention_head_dim=4, norm_num_groups=32)
ADAPTER_CONFIG = dict(mode="mlp", input_dim=128, hidden_dim=256, output_dim=64, num_layers=2, num_tokens=77, num_heads=8)
SCHEDULER = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.42.1", "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
             "steps_offset": 1, "trained_betas": None, "clip_sample": False}


class Adapter(nn.Module):
    """MetaMorph's SimplifiedSigLIPProjector, mode mlp: Linear -> LayerNorm -> ReLU, last without ReLU."""

    def __init__(self, c):
        super().__init__()
        n = max(c["num_layers"], 2)
        dims = [c["input_dim"]] + [c["hidden_dim"]] * (n - 1) + [c["output_dim"]]
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(n))
        self.norms = nn.ModuleList(nn.LayerNorm(dims[i + 1]) for i in range(n))

    def forward(self, x):
        for i, (l, n) in enumerate(zip(self.layers, self.norms)):
            x = n(l(x))
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def images_to_x(images):
    return torch.from_numpy(images).float().div_(127.5).sub_(1).permute(0, 3, 1, 2).contiguous()


def latent_params(vae, images, idx):
    """The VAE posterior's parameters (mean and log-variance, concatenated on channels) of
    images[idx], encoded once; training steps then sample latents from them as SD's training does."""
    with torch.no_grad():
        return torch.cat([vae.encode(images_to_x(images[idx[i:i + 256]])).latent_dist.parameters
                          for i in range(0, len(idx), 256)])


def sample_latents(params):
    mean, logvar = params.chunk(2, dim=1)
    return mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn_like(mean)


def lr_at(step, steps, lr, warm=100):
    return lr * min(1.0, (step + 1) / warm) * (0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)) * 0.9 + 0.1)


def train_vae(args, images):
    from diffusers import AutoencoderKL
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    if args.decoder_only:
        # The encoder (and so the latent space the UNet was trained on) stays exactly as it is;
        # only the decoder learns to turn those latents into sharper pictures.
        vae = AutoencoderKL.from_pretrained(os.path.join(args.work, "vae"))
        prev = json.load(open(os.path.join(args.work, "vae", "training.json")))
        args.history = prev.get("history", [prev])
        for p in vae.parameters():
            p.requires_grad_(False)
        train = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
        for p in train:
            p.requires_grad_(True)
        n = min(len(images), args.pool)
        idx_all = rng.permutation(len(images))[:n]
        params = latent_params(vae, images, idx_all)
        print(f"encoded {n} pictures in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    else:
        vae = AutoencoderKL(**VAE_CONFIG)
        train = list(vae.parameters())
    opt = torch.optim.AdamW(train, lr=args.lr or 1e-3, weight_decay=0.0)
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr or 1e-3)
        if args.decoder_only:
            b = rng.choice(n, args.batch, replace=False)
            x = images_to_x(images[idx_all[b]])
            y = vae.decode(sample_latents(params[torch.from_numpy(b)])).sample
            kl = torch.zeros(())
        else:
            x = images_to_x(images[rng.choice(len(images), args.batch, replace=False)])
            post = vae.encode(x).latent_dist
            y = vae.decode(post.sample()).sample
            kl = post.kl().mean()
        rec = F.mse_loss(y, x) + 0.5 * F.l1_loss(y, x)
        loss = rec + 1e-6 * kl
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(train, 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"vae step {step} rec {rec.item():.5f} t={time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        if args.decoder_only and ((step + 1) % args.save_every == 0 or step == args.steps - 1):
            vae.save_pretrained(os.path.join(args.work, "vae"), safe_serialization=True)
    vae.eval()
    vae.save_pretrained(os.path.join(args.work, "vae"), safe_serialization=True)  # before anything can fail
    with torch.no_grad():
        idx = rng.choice(len(images), 512, replace=False)
        if args.decoder_only:  # same encoder, same latent scale
            scale = vae.config.scaling_factor
        else:
            z = torch.cat([vae.encode(images_to_x(images[b])).latent_dist.mean for b in idx.reshape(-1, 64)])
            scale = float(1.0 / z.std())
        y = torch.cat([vae.decode(vae.encode(images_to_x(images[b])).latent_dist.mean).sample for b in idx.reshape(-1, 64)[:2]])
        err = (y.clamp(-1, 1) - images_to_x(images[idx[:128]])).abs().mul(127.5).mean().item()
    vae.register_to_config(scaling_factor=scale)
    vae.save_pretrained(os.path.join(args.work, "vae"), safe_serialization=True)
    info = {"steps": args.steps, "batch": args.batch, "seconds": round(time.time() - t0), "scaling_factor": scale,
            "mean_abs_error_levels": err, "decoder_only": args.decoder_only, "lr": args.lr or 1e-3,
            "torch": torch.__version__}
    if args.decoder_only:
        info = {"history": args.history + [info]}
    json.dump(info, open(os.path.join(args.work, "vae", "training.json"), "w"), indent=1)
    print(json.dumps(info), file=sys.stderr)


def train_unet(args, images):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    vae = AutoencoderKL.from_pretrained(os.path.join(args.work, "vae")).eval()
    scale = vae.config.scaling_factor
    tokens = np.load(os.path.join(args.work, "tokens.npy"))
    rng = np.random.default_rng(args.seed)
    n = min(len(images), args.pool)
    idx_all = rng.permutation(len(images))[:n]
    t0 = time.time()
    params = latent_params(vae, images, idx_all)
    toks = torch.from_numpy(tokens[idx_all].astype(np.float32))
    print(f"encoded {n} pictures in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    adapter = Adapter(ADAPTER_CONFIG)
    if args.resume:  # continue from the saved (EMA) weights of an earlier run
        from safetensors.torch import load_file
        unet = UNet2DConditionModel.from_pretrained(os.path.join(args.work, "unet"))
        adapter.load_state_dict(load_file(os.path.join(args.work, "adapter", "model.safetensors")))
        prev = json.load(open(os.path.join(args.work, "unet", "training.json")))
        args.history = prev.get("history", [prev])
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    params_all = list(unet.parameters()) + list(adapter.parameters())
    lr = args.lr or 5e-4
    opt = torch.optim.AdamW(params_all, lr=lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in params_all]
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, lr)
        b = torch.from_numpy(rng.choice(n, args.batch, replace=False))
        z0 = sample_latents(params[b]) * scale
        noise = torch.randn_like(z0)
        t = torch.randint(0, 1000, (args.batch,))
        zt = sched.add_noise(z0, noise, t)
        cond = adapter(toks[b])
        cond = F.pad(cond, (0, 0, 0, COND_LEN - cond.shape[1]))
        drop = torch.from_numpy(rng.random(args.batch) < 0.1)
        cond = torch.where(drop[:, None, None], torch.zeros_like(cond), cond)
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params_all, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(0.999, (1 + step) / (10 + step))
            for e, p in zip(ema, params_all):
                e.mul_(d).add_(p.detach(), alpha=1 - d)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"unet step {step} loss {loss.item():.4f} t={time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        if (step + 1) % args.save_every == 0 or step == args.steps - 1:
            save_unet(args, unet, adapter, ema, params_all, step + 1, time.time() - t0, loss.item())


def save_unet(args, unet, adapter, ema, params_all, steps, seconds, loss):
    backup = [p.detach().clone() for p in params_all]
    with torch.no_grad():
        for p, e in zip(params_all, ema):
            p.copy_(e)
    unet.save_pretrained(os.path.join(args.work, "unet"), safe_serialization=True)
    from safetensors.torch import save_file
    os.makedirs(os.path.join(args.work, "adapter"), exist_ok=True)
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, os.path.join(args.work, "adapter", "model.safetensors"))
    json.dump(ADAPTER_CONFIG, open(os.path.join(args.work, "adapter", "config.json"), "w"), indent=1)
    run = {"steps": steps, "batch": args.batch, "pool": args.pool, "lr": args.lr or 5e-4, "threads": args.threads,
           "seconds": round(seconds), "last_loss": loss, "ema": 0.999, "torch": torch.__version__}
    json.dump({"history": getattr(args, "history", []) + [run]}, open(os.path.join(args.work, "unet", "training.json"), "w"), indent=1)
    with torch.no_grad():
        for p, b in zip(params_all, backup):
            p.copy_(b)


def export(args):
    """WORK/{vae,unet,adapter} -> DIR in the engine's visualizer layout, weights as float16."""
    from safetensors.torch import load_file, save_file
    out = args.out
    for sub in ("vae", "unet", "adapter"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
        src = os.path.join(args.work, sub)
        name = "model.safetensors" if sub == "adapter" else "diffusion_pytorch_model.safetensors"
        sd = load_file(os.path.join(src, name))
        if sub == "vae":  # the engine decodes only: keep the decoder side (the full VAE stays in WORK)
            sd = {k: v for k, v in sd.items() if k.startswith(("decoder.", "post_quant_conv."))}
        save_file({k: v.half().contiguous() for k, v in sorted(sd.items())}, os.path.join(out, sub, name), metadata={"format": "pt"})
        cfg = json.load(open(os.path.join(src, "config.json")))
        json.dump(cfg, open(os.path.join(out, sub, "config.json"), "w"), indent=1)
    os.makedirs(os.path.join(out, "scheduler"), exist_ok=True)
    json.dump(SCHEDULER, open(os.path.join(out, "scheduler", "scheduler_config.json"), "w"), indent=1)
    scale = json.load(open(os.path.join(args.work, "vae", "config.json")))["scaling_factor"]
    json.dump({"latent_scale": scale, "steps": args.export_steps, "guidance": args.export_guidance, "condition_length": COND_LEN},
              open(os.path.join(out, "visualizer.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--stage", choices=["vae", "unet", "export"], required=True)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pool", type=int, default=36000)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--resume", action="store_true", help="unet: start from WORK/unet + WORK/adapter")
    ap.add_argument("--decoder-only", action="store_true",
                    help="vae: continue WORK/vae training only the decoder, so its latents (and the UNet) stay valid")
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--export-steps", type=int, default=25)
    ap.add_argument("--export-guidance", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals in late training otherwise slow CPU steps down 2-3x
    torch.manual_seed(args.seed)
    if args.stage == "export":
        return export(args)
    images = np.load(os.path.join(args.work, "pool.npz"))["images"]
    train_vae(args, images) if args.stage == "vae" else train_unet(args, images)


if __name__ == "__main__":
    main()
