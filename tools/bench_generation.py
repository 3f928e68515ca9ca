#!/usr/bin/env python3
"""Benchmark image generation: our engine (metamorph-cli) vs the official no-cache loop in PyTorch.

Checkpoint: the TinyLlama-1.1B-shaped random F16 metamorph_llama checkpoint of
tools/make_checkpoints.py --preset tinyllama-mm-f16 (hidden 2048, 22 layers, vocab 128258 with the
LLaMA-3.1 tokenizer, mm_hidden 1152, mlp2x_gelu projector, mlp vision head, 64 image tokens);
written to --ckpt if missing (~2 min, 3 GB).

Timed, for every thread count:
  engine image: metamorph-cli run --prompt "Generate an image of a cat." --assistant-prefix
                "Here is an image based on your request: <image_start>" --max-tokens 64 --json
                -> timings.generate_ms over the generated positions (64 visual tokens);
  engine text:  same prompt, no prefix, --max-tokens 64 (plain text decode, per token);
  torch image (official loop): float32 weights, no KV cache, the whole sequence of input
                embeddings recomputed at every one of the 64 visual steps (as
                MetaMorphLlamaForCausalLM.greedy_decode does), torch.set_num_threads(N);
  torch image cached (--torch-cached, for context): the same arithmetic with transformers'
                KV cache, one position per step.
The engine's visual tokens (--save-visual-tokens) are compared with torch's (max abs diff).

Usage:
  python3 tools/bench_generation.py [--ckpt /work/ckpt/tinyllama-mm-f16] [--cli PATH]
                                    [--threads 1 2] [--reps 2] [--torch-cached] [--json OUT]
Build the CLI first: swift build -c release --scratch-path .build-gen --product metamorph-cli
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import golden_llama as gl  # noqa: E402
import golden_generation as gg  # noqa: E402

PROMPT = "Generate an image of a cat."
PREFIX = "Here is an image based on your request: <image_start>"


def ensure_checkpoint(path):
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return
    print(f"writing {path} (tinyllama-mm-f16) ...", flush=True)
    subprocess.run([sys.executable, os.path.join(HERE, "make_checkpoints.py"), "--preset", "tinyllama-mm-f16",
                    "--out", path], check=True)


def run_cli(cli, ckpt, threads, max_tokens, prefix, save=None):
    cmd = [cli, "run", "--model", ckpt, "--prompt", PROMPT, "--max-tokens", str(max_tokens), "--json",
           "--threads", str(threads)]
    if prefix:
        cmd += ["--assistant-prefix", prefix]
    if save:
        cmd += ["--save-visual-tokens", save]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def load_torch(ckpt):
    """transformers LlamaForCausalLM float32 + torch heads (weights upcast from F16)."""
    import torch
    from safetensors import safe_open
    from transformers import LlamaConfig, LlamaForCausalLM
    from torch import nn

    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    keep = {k: v for k, v in cfg.items() if k not in gl.MM_CONFIG_KEYS and k not in ("model_type", "architectures", "torch_dtype")}
    config = LlamaConfig(**keep)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    h, mmh = cfg["hidden_size"], cfg["mm_hidden_size"]
    proj = nn.Sequential(nn.Linear(mmh, h), nn.GELU(approximate="none"), nn.Linear(h, h)).eval()
    assert cfg["vision_head_type"] == "mlp"
    head = nn.Sequential(nn.Linear(h, h), nn.GELU(approximate="none"), nn.Linear(h, mmh)).eval()
    sd, psd, hsd = {}, {}, {}
    with safe_open(os.path.join(ckpt, "model.safetensors"), "pt") as f:
        for name in f.keys():
            t = f.get_tensor(name).to(torch.float32)
            if name.startswith("model.mm_projector."):
                psd[name[len("model.mm_projector."):]] = t
            elif name.startswith("vision_head."):
                hsd[name[len("vision_head."):]] = t
            elif not name.startswith("model.vision_proj."):
                sd[name] = t
    model.load_state_dict(sd, strict=True)
    proj.load_state_dict(psd, strict=True)
    head.load_state_dict(hsd, strict=True)
    return model, proj, head, cfg


def torch_image_nocache(model, proj, head, cfg, ids):
    """The official loop's cost: 64 full-sequence forwards. Returns (ms, tokens[64][1152])."""
    import torch
    ref = gg.Reference(model, proj, head, cfg)
    t0 = time.perf_counter()
    r = ref.generate(ids, cfg["num_image_tokens"], True)
    ms = (time.perf_counter() - t0) * 1e3
    return ms, np.array(r["images"][0]["tokens"], dtype=np.float32)


def torch_image_cached(model, proj, head, cfg, ids):
    """Same arithmetic with transformers' KV cache (one position per step)."""
    import torch
    from transformers import DynamicCache
    with torch.no_grad():
        t0 = time.perf_counter()
        cache = DynamicCache()
        x = model.model.embed_tokens(torch.tensor([ids]))
        out = model.model(inputs_embeds=x, cache=cache, use_cache=True)
        t1 = time.perf_counter()
        h = out.last_hidden_state[0, -1]
        toks = []
        for _ in range(cfg["num_image_tokens"]):
            z = head(h)
            z = z / torch.clamp(torch.linalg.vector_norm(z), min=1e-12)
            toks.append(z.numpy().copy())
            out = model.model(inputs_embeds=proj(z)[None, None], cache=cache, use_cache=True)
            h = out.last_hidden_state[0, -1]
        t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, np.array(toks)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="/work/ckpt/tinyllama-mm-f16")
    ap.add_argument("--cli", default=os.path.join(REPO, ".build-gen", "release", "metamorph-cli"))
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=2, help="engine runs per setting (best is kept)")
    ap.add_argument("--torch-cached", action="store_true")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)

    ensure_checkpoint(args.ckpt)
    if not os.path.exists(args.cli):
        raise SystemExit(f"{args.cli} not found: swift build -c release --scratch-path .build-gen --product metamorph-cli")
    tmp = tempfile.TemporaryDirectory(prefix="mm_bench_gen_")
    results = {"ckpt": args.ckpt, "prompt": PROMPT, "assistant_prefix": PREFIX, "runs": []}

    model = None
    if not args.no_torch:
        import torch
        t0 = time.time()
        model, proj, head, cfg = load_torch(args.ckpt)
        print(f"torch model loaded in {time.time() - t0:.1f} s (float32)", flush=True)
        results["versions"] = gl.versions()

    for n in args.threads:
        row = {"threads": n}
        best_img, best_txt, prompt_ids = None, None, None
        for _ in range(args.reps):
            save = os.path.join(tmp.name, f"visual_{n}.npy")
            r = run_cli(args.cli, args.ckpt, n, 64, PREFIX, save)
            per = r["timings"]["generate_ms"] / max(1, r["timings"]["generated_tokens"])
            if best_img is None or per < best_img[0]:
                best_img = (per, r)
            prompt_ids = r["prompt_token_ids"]
            t = run_cli(args.cli, args.ckpt, n, 64, None)
            per_t = t["timings"]["generate_ms"] / max(1, t["timings"]["generated_tokens"])
            if best_txt is None or per_t < best_txt[0]:
                best_txt = (per_t, t)
        r, t = best_img[1], best_txt[1]
        row.update({
            "engine_image_generate_ms": r["timings"]["generate_ms"],
            "engine_image_positions": r["timings"]["generated_tokens"],
            "engine_image_tokens": [i["n_tokens"] for i in r["images"]],
            "engine_image_prompt_ms": r["timings"]["prompt_ms"],
            "engine_ms_per_visual_token": round(best_img[0], 2),
            "engine_text_generate_ms": t["timings"]["generate_ms"],
            "engine_text_tokens": t["timings"]["generated_tokens"],
            "engine_ms_per_text_token": round(best_txt[0], 2),
            "prompt_tokens": len(prompt_ids),
        })
        row["visual_over_text_per_token"] = round(best_img[0] / best_txt[0], 3)
        if model is not None:
            import torch
            torch.set_num_threads(n)
            ms, ref_tokens = torch_image_nocache(model, proj, head, cfg, prompt_ids)
            ours = np.load(os.path.join(tmp.name, f"visual_{n}.npy"))
            k = min(len(ours), len(ref_tokens))
            row["torch_nocache_image_ms"] = round(ms, 1)
            row["torch_nocache_ms_per_visual_token"] = round(ms / len(ref_tokens), 2)
            row["speedup_vs_torch_nocache"] = round(ms / r["timings"]["generate_ms"], 2)
            row["visual_tokens_max_abs_diff"] = float(np.max(np.abs(ours[:k] - ref_tokens[:k])))
            if args.torch_cached:
                pms, gms, ctoks = torch_image_cached(model, proj, head, cfg, prompt_ids)
                row["torch_cached_prompt_ms"] = round(pms, 1)
                row["torch_cached_image_ms"] = round(gms, 1)
                row["torch_cached_ms_per_visual_token"] = round(gms / len(ctoks), 2)
                row["speedup_vs_torch_cached"] = round(gms / r["timings"]["generate_ms"], 2)
                row["torch_cached_vs_nocache_max_abs_diff"] = float(np.max(np.abs(ctoks - ref_tokens)))
        results["runs"].append(row)
        print(json.dumps(row), flush=True)

    print("\n| threads | engine ms / visual token | engine ms / text token | visual/text | "
          "torch no-cache ms / visual token | engine speedup | max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in results["runs"]:
        print(f"| {row['threads']} | {row['engine_ms_per_visual_token']} | {row['engine_ms_per_text_token']} | "
              f"{row['visual_over_text_per_token']} | {row.get('torch_nocache_ms_per_visual_token', '-')} | "
              f"{row.get('speedup_vs_torch_nocache', '-')}x | {row.get('visual_tokens_max_abs_diff', '-')} |")
        if "torch_cached_ms_per_visual_token" in row:
            print(f"|   (torch with KV cache: {row['torch_cached_ms_per_visual_token']} ms / visual token, "
                  f"engine {row['speedup_vs_torch_cached']}x faster) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
            f.write("\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
