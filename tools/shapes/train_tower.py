"""Stage 1: a small SigLIP (vision + text towers) trained with the sigmoid image-text loss on
the shapes world, then the visual tokens of every pool picture.

    python3 tools/shapes/train_tower.py --work WORK [--steps 2500] [--threads 1]

Writes WORK/siglip/ (SiglipModel.save_pretrained: config.json + model.safetensors, the
Hugging Face layout; vision_model.* names), WORK/canon_tokens.npy for WORK/canon.npz, and
WORK/tokens.npy: float16 [N, 16, 128], the
visual tokens exactly as MetaMorph forms them (hidden_states[-1] before post_layernorm, 8x8
grid bilinearly reduced to 4x4 with align_corners=False, L2-normalised).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402

TEXT_LEN = 24
NUM_IMAGE_TOKENS = 16
VISION = dict(image_size=64, patch_size=8, num_channels=3, hidden_size=128, intermediate_size=512,
              num_hidden_layers=4, num_attention_heads=4, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)


def pixels(images):
    """uint8 [B, H, W, 3] -> SigLIP input: /255, mean 0.5, std 0.5, NCHW."""
    x = torch.from_numpy(images).float().div_(255.0)
    return ((x - 0.5) / 0.5).permute(0, 3, 1, 2).contiguous()


def visual_tokens(vision_model, px):
    out = vision_model(pixel_values=px, output_hidden_states=True)
    h = out.hidden_states[-1]  # last encoder layer, before post_layernorm
    b, n, d = h.shape
    g = int(math.isqrt(n))
    grid = h.transpose(1, 2).reshape(b, d, g, g)
    s = int(math.isqrt(NUM_IMAGE_TOKENS))
    red = F.interpolate(grid, size=(s, s), mode="bilinear", align_corners=False)
    t = red.flatten(2).transpose(1, 2)
    return t / t.norm(dim=-1, keepdim=True)


def recenter(model, work, images):
    """The last encoder layer's output (what MetaMorph reads) is dominated by one constant vector
    (random pictures' tokens have cosine 0.997): a regression target and a projector input that
    differ only in the last few per mille. Subtract the mean hidden_states[-1] vector (over 4000
    pool pictures and all positions) through the last layer's fc2 bias: an exact constant shift of
    hidden_states[-1]; bilinear token reduction commutes with it. Saved as WORK/siglip_mm (the
    tower inside the MetaMorph checkpoint); WORK/siglip keeps the contrastive model as trained."""
    with torch.no_grad():
        hs = [model.vision_model(pixel_values=pixels(images[i:i + 500]), output_hidden_states=True).hidden_states[-1]
              for i in range(0, 4000, 500)]
        mu = torch.cat(hs).mean((0, 1))
        fc2 = model.vision_model.encoder.layers[-1].mlp.fc2
        fc2.bias -= mu
    model.save_pretrained(os.path.join(work, "siglip_mm"), safe_serialization=True)
    return float(mu.norm())


def encode_all(model, work, images):
    """WORK/tokens.npy for the pool and WORK/canon_tokens.npy for the generation targets."""
    def enc(imgs):
        out = []
        with torch.no_grad():
            for i in range(0, len(imgs), 512):
                out.append(visual_tokens(model.vision_model, pixels(imgs[i:i + 512])).half().numpy())
        return np.concatenate(out)
    np.save(os.path.join(work, "tokens.npy"), enc(images))
    canon = os.path.join(work, "canon.npz")
    if os.path.exists(canon):
        np.save(os.path.join(work, "canon_tokens.npy"), enc(np.load(canon)["images"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--encode-only", action="store_true", help="only recompute the visual tokens with WORK/siglip")
    ap.add_argument("--resume", action="store_true", help="start from WORK/siglip")
    ap.add_argument("--hard-negatives", action="store_true", help="half of every batch in same-but-shape groups")
    ap.add_argument("--multi-positive", action="store_true", help="captions naming attribute subsets, true label matrix")
    ap.add_argument("--attribute-texts", type=float, default=0.0,
                    help="weight of a second sigmoid loss against one-attribute texts with the true label matrix")
    ap.add_argument("--freeze-vision", action="store_true",
                    help="train only the text tower (and temperature/bias) against the frozen vision tower")
    ap.add_argument("--save-every", type=int, default=0, help="also save WORK/siglip every N steps")
    ap.add_argument("--caption-weight", type=float, default=1.0,
                    help="weight of the caption sigmoid loss (0: attribute phrases only, a first phase)")
    ap.add_argument("--shape-weight", type=float, default=1.0,
                    help="weight of the shape rows of the one-attribute loss (shape is learnt last)")
    ap.add_argument("--attribute-table", action="store_true",
                    help="embed the one-attribute texts with a learnt table (a bag-of-phrases text tower) "
                         "instead of the text transformer")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals in late training otherwise slow CPU steps down 2-3x
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    from tokenizers import Tokenizer
    from transformers import SiglipConfig, SiglipModel

    pool = np.load(os.path.join(args.work, "pool.npz"))
    images = pool["images"]
    if args.encode_only:
        from transformers import SiglipModel
        m = SiglipModel.from_pretrained(os.path.join(args.work, "siglip")).eval()
        print(f"recentred: |mean| {recenter(m, args.work, images):.3f}", file=sys.stderr)
        return encode_all(m, args.work, images)
    meta = json.load(open(os.path.join(args.work, "attrs.json")))
    attrs = meta["attrs"]
    tok = Tokenizer.from_file(os.path.join(args.work, "tokenizer.json"))
    pad = tok.token_to_id("<|finetune_right_pad_id|>")
    cfg = SiglipConfig(
        text_config=dict(vocab_size=meta["vocab_size"], hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=TEXT_LEN, hidden_act="gelu_pytorch_tanh",
                         layer_norm_eps=1e-6, pad_token_id=pad, projection_size=128),
        vision_config=VISION)
    if args.resume:  # continue from WORK/siglip (e.g. a second phase with --hard-negatives)
        model = SiglipModel.from_pretrained(os.path.join(args.work, "siglip"))
    else:
        model = SiglipModel(cfg)
    # Hard negatives: groups of pictures equal in colour, background, size and position but with
    # different shapes, so that the loss can only fall by telling the shapes apart (with random
    # batches, colour, background and position explain most captions and shape is learnt last).
    groups = {}
    for i, a in enumerate(attrs):
        groups.setdefault((a["color"], a["bg"], a["size"], a["pos"]), {}).setdefault(a["shape"], []).append(i)
    full = [g for g in groups.values() if len(g) == len(world.SHAPES)]

    MENTION_FORMS = [("shape",), ("color",), ("color", "shape"), ("shape", "pos"), ("color", "shape", "bg"),
                     ("size", "shape"), ("bg",), ("color", "shape", "size", "bg", "pos")]

    def partial_caption(a):
        """A caption naming a random subset of the attributes, and that subset."""
        keys = MENTION_FORMS[rng.integers(len(MENTION_FORMS))]
        words = {"size": a["size"], "color": a["color"], "shape": a["shape"] if "shape" in keys else "shape"}
        text = " ".join(words[k] for k in ("size", "color") if k in keys) + " " + words["shape"]
        text = "a " + text.strip()
        if "bg" in keys:
            text = (text + f" on a {a['bg']} background") if text != "a shape" else f"a {a['bg']} background"
        if "pos" in keys:
            text += f" at the {a['pos']}"
        return text, keys

    def sample_batch():
        if not args.hard_negatives:
            return rng.choice(len(images), args.batch, replace=False)
        n_groups = args.batch // (2 * len(world.SHAPES))
        idx = []
        for gi in rng.choice(len(full), n_groups, replace=False):
            idx += [full[gi][s][rng.integers(len(full[gi][s]))] for s in world.SHAPES]
        rest = rng.choice(len(images), args.batch - len(idx), replace=False)
        return np.concatenate([np.array(idx), rest])
    # Learnt phrase embeddings for the one-attribute texts (--attribute-table): the text
    # transformer, resumed from a phase where shape never mattered, embeds "a star" and "a circle"
    # almost alike; with identical text embeddings the positive and negative terms of the sigmoid
    # loss cancel and no shape gradient reaches the image tower (measured: zero-shot shape stayed
    # at chance, 0.25, for 300 steps). A table starts the phrases apart.
    table = torch.nn.Parameter(torch.randn(24, 128) * 0.5) if args.attribute_table else None
    # Their own temperature and bias: the caption loss's bias settles near -10 for one positive
    # in 128, which pins every attribute logit (a quarter to a half of the batch positive) far
    # below zero, where the sigmoid saturates (measured: the shape term then stalls at 0.41).
    attr_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    attr_bias = torch.nn.Parameter(torch.tensor(-1.0))
    table_file = os.path.join(args.work, "siglip", "attribute_table.pt")
    if table is not None and args.resume and os.path.exists(table_file):
        saved = torch.load(table_file, weights_only=True)
        with torch.no_grad():
            table.copy_(saved["table"]); attr_scale.copy_(saved["scale"]); attr_bias.copy_(saved["bias"])

    def save_tower():
        model.save_pretrained(os.path.join(args.work, "siglip"), safe_serialization=True)
        if table is not None:
            torch.save({"table": table.detach(), "scale": attr_scale.detach(), "bias": attr_bias.detach()}, table_file)
    if args.freeze_vision:  # align a text tower to a vision tower already in use (its tokens stay as they are)
        for p in model.vision_model.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad] + ([table, attr_scale, attr_bias] if table is not None else [])
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    warm = 150

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, args.steps - warm)))

    def encode_captions(idx):
        # SigLIP's text tower reads the last position: pad every caption to TEXT_LEN (no BOS).
        rows = []
        for i in idx:
            ids = tok.encode(world.caption(attrs[i], rng), add_special_tokens=False).ids[:TEXT_LEN]
            rows.append(ids + [pad] * (TEXT_LEN - len(ids)))
        return torch.tensor(rows)

    # One-attribute texts ("a star", "a red shape", ...): every picture in the batch is a positive
    # for the texts naming its attributes and a negative for the others. This is SigLIP's sigmoid
    # loss with the correct label matrix for texts many pictures share; against full captions in
    # random batches, colour, background and position explain the loss and shape is learnt last.
    attr_texts = ([("shape", s, f"a {s}") for s in world.SHAPES] + [("color", c, f"a {c} shape") for c in world.COLOR_NAMES]
                  + [("bg", b, f"a {b} background") for b in world.BG_NAMES] + [("size", z, f"a {z} shape") for z in world.SIZE_NAMES]
                  + [("pos", q, f"a shape at the {q}") for q in world.POSITIONS])
    attr_ids = [tok.encode(t, add_special_tokens=False).ids for _, _, t in attr_texts]
    row_w = torch.tensor([args.shape_weight if k == "shape" else 1.0 for k, _, _ in attr_texts])[:, None]
    attr_ids = torch.tensor([x + [pad] * (TEXT_LEN - len(x)) for x in attr_ids])
    feats = lambda x: x if torch.is_tensor(x) else x.pooler_output  # transformers 5 returns an output object
    probe_idx = np.arange(len(images) - 1000, len(images))

    def shape_zero_shot():
        model.eval()
        with torch.no_grad():
            te = F.normalize(table[:len(world.SHAPES)] if table is not None
                             else feats(model.get_text_features(input_ids=attr_ids[:len(world.SHAPES)])), dim=-1)
            ie = F.normalize(feats(model.get_image_features(pixel_values=pixels(images[probe_idx]))), dim=-1)
            pred = (ie @ te.T).argmax(-1).numpy()
        model.train()
        return float(np.mean([world.SHAPES[p] == attrs[i]["shape"] for p, i in zip(pred, probe_idx)]))

    t0 = time.time()
    model.train()
    for step in range(args.steps):
        idx = sample_batch()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        if args.multi_positive:
            # SigLIP's sigmoid loss with the true label matrix: caption i names some attributes and
            # is a positive for every picture j that has them all (one positive per row otherwise
            # mislabels same-attribute pairs as negatives once captions are short).
            caps = [partial_caption(attrs[i]) for i in idx]
            ids = [tok.encode(c, add_special_tokens=False).ids[:TEXT_LEN] for c, _ in caps]
            ids = torch.tensor([x + [pad] * (TEXT_LEN - len(x)) for x in ids])
            out = model(input_ids=ids, pixel_values=pixels(images[idx]))
            lab = torch.tensor([[all(attrs[j][k] == attrs[i][k] for k in keys) for j in idx] for i, (_, keys) in zip(idx, caps)],
                               dtype=torch.float32)
            logits = out.logits_per_text  # [text, image]
            loss = -F.logsigmoid((2 * lab - 1) * logits).sum() / len(idx)
            out.loss = loss
        else:
            out = model(input_ids=encode_captions(idx), pixel_values=pixels(images[idx]), return_loss=True)
        out.loss = out.loss * args.caption_weight
        if args.attribute_texts > 0:
            te = F.normalize(table if table is not None else feats(model.get_text_features(input_ids=attr_ids)), dim=-1)
            logits = (te @ out.image_embeds.T * attr_scale.exp() + attr_bias if table is not None
                      else te @ out.image_embeds.T * model.logit_scale.exp() + model.logit_bias)
            lab = torch.tensor([[attrs[j][k] == v for j in idx] for k, v, _ in attr_texts], dtype=torch.float32)
            out.loss = out.loss + args.attribute_texts * -(row_w * F.logsigmoid((2 * lab - 1) * logits)).sum() / len(idx)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step < 3 or step == args.steps - 1:
            zs = f" shape zero-shot {shape_zero_shot():.3f}" if args.attribute_texts > 0 and step % 100 == 0 else ""
            print(f"step {step} loss {out.loss.item():.4f}{zs} t={time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        if args.save_every and (step + 1) % args.save_every == 0:
            save_tower()
    model.eval()
    out_dir = os.path.join(args.work, "siglip")
    save_tower()
    mm_tower = SiglipModel.from_pretrained(out_dir).eval()
    recenter(mm_tower, args.work, images)
    encode_all(mm_tower, args.work, images)
    # Zero-shot check on colour x shape: image embedding vs "a COLOR SHAPE" text embeddings.
    with torch.no_grad():
        pairs = [(c, s) for c in world.COLOR_NAMES for s in world.SHAPES]
        texts = [tok.encode(f"a {c} {s}", add_special_tokens=False).ids for c, s in pairs]
        ids = torch.tensor([t + [pad] * (TEXT_LEN - len(t)) for t in texts])
        te = F.normalize(feats(model.get_text_features(input_ids=ids)), dim=-1)
        idx = np.arange(0, min(len(images), 24000), 12)
        ie = F.normalize(feats(model.get_image_features(pixel_values=pixels(images[idx]))), dim=-1)
        pred = (ie @ te.T).argmax(-1).numpy()
        ok = np.mean([pairs[p] == (attrs[i]["color"], attrs[i]["shape"]) for p, i in zip(pred, idx)])
    info = {"phase": ("multi-positive captions, " if args.multi_positive else "") + (f"attribute {'table' if args.attribute_table else 'texts'} x{args.attribute_texts}, " if args.attribute_texts else "") + (f"captions x{args.caption_weight}, " if args.caption_weight != 1 else "") + (f"shape rows x{args.shape_weight}, " if args.shape_weight != 1 else "") + ("vision frozen, " if args.freeze_vision else "") + ("hard-negatives" if args.hard_negatives else "random batches"), "resumed": args.resume, "steps": args.steps, "batch": args.batch, "seed": args.seed, "seconds": round(time.time() - t0),
            "final_loss": out.loss.item(), "zero_shot_color_shape_accuracy": float(ok),
            "torch": torch.__version__}
    log = os.path.join(out_dir, "training.json")
    phases = json.load(open(log))["phases"] if args.resume and os.path.exists(log) else []
    json.dump({"phases": phases + [info]}, open(log, "w"), indent=1)
    print(json.dumps(info), file=sys.stderr)


if __name__ == "__main__":
    main()
