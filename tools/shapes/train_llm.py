"""Stage 3: the language model, trained with VPiT (visual-predictive instruction tuning) on the
shapes world, saved as an official MetaMorph checkpoint.

    python3 tools/shapes/train_llm.py --work WORK --out DIR [--steps 1500] [--mix 0.5,0.35,0.15]

Model: LlamaForCausalLM (transformers) + mm_projector (mlp2x_gelu) + vision_head (mlp), the
SigLIP tower of stage 1 frozen. Prompts are built exactly as the reference builds them
(llama3 template, "<image_start><image><image_end>\\n" before the question, text split at
<image> and each piece tokenised with BOS, later pieces dropping theirs, so the sequence starts
with BOS twice). Loss: cross-entropy on the assistant's answer tokens (and its <|eot_id|>) plus
vision_coef x (1 - cosine) between vision_head(h) and the L2-normalised visual token, at every
position that predicts a token of an image inside the answer. Pictures whose colour x shape
pair is in world.HELD_OUT are never used (prompts, inputs or targets).
Mixture: understanding (captions and questions) / generation ("Generate an image of ...") /
image-to-image edits, by --mix.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402

N_IMG = 16
TEMPLATE_USER = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n{}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n"
IMAGE_BLOCK = "<image_start><image><image_end>"


class Data:
    def __init__(self, work, tok, rng):
        meta = json.load(open(os.path.join(work, "attrs.json")))
        self.attrs = meta["attrs"]
        self.instr = meta["edit_instructions"]
        pool = np.load(os.path.join(work, "pool.npz"))
        self.edit_src, self.edit_dst = pool["edit_src"], pool["edit_dst"]
        # Pool tokens, then the canonical generation targets' tokens (indices continue after the pool).
        self.tokens = np.concatenate([np.load(os.path.join(work, "tokens.npy")), np.load(os.path.join(work, "canon_tokens.npy"))])
        canon = json.load(open(os.path.join(work, "canon.json")))
        self.canon_attrs = canon["attrs"]
        self.canon_by_pair = {}
        for j, (a, kind) in enumerate(zip(canon["attrs"], canon["varied"])):
            if (a["color"], a["shape"]) not in world.HELD_OUT:
                self.canon_by_pair.setdefault((a["color"], a["shape"]), {}).setdefault(kind, []).append(j)
        n_single = len(self.attrs) - 2 * len(self.edit_src)
        self.singles = [i for i in range(n_single) if (self.attrs[i]["color"], self.attrs[i]["shape"]) not in world.HELD_OUT]
        self.by_pair = {}
        for i in self.singles:
            self.by_pair.setdefault((self.attrs[i]["color"], self.attrs[i]["shape"]), []).append(i)
        self.tok, self.rng = tok, rng
        self.eot = "<|eot_id|>"
        self.extra_frac = 0.0  # load_extra sets it

    def load_extra(self, work, frac):
        """Pictures in colours outside the named eight (build_extra.py): a share frac of the
        understanding samples becomes a shape question about one of them."""
        self.extra_frac = frac
        if frac <= 0:
            return
        self.extra_attrs = json.load(open(os.path.join(work, "extra.json")))["attrs"]
        self.extra0 = len(self.tokens)
        self.tokens = np.concatenate([self.tokens, np.load(os.path.join(work, "extra_tokens.npy"))])

    def understanding(self):
        if self.extra_frac > 0 and self.rng.random() < self.extra_frac:
            j = int(self.rng.integers(len(self.extra_attrs)))
            q, a = world.qa(self.extra_attrs[j], self.rng, kind="shape")
            return IMAGE_BLOCK + "\n" + q, a, [self.extra0 + j], []
        i = self.singles[self.rng.integers(len(self.singles))]
        q, a = world.qa(self.attrs[i], self.rng)
        return IMAGE_BLOCK + "\n" + q, a, [i], []

    def generation(self):
        """A request for a colour x shape pair, sometimes with one more attribute; the target is a
        canonical picture (unnamed attributes at their defaults: large, center, gray)."""
        pairs = list(self.canon_by_pair)
        c, s = pairs[self.rng.integers(len(pairs))]
        kind = ["", "size", "bg", "pos"][self.rng.choice(4, p=[0.55, 0.15, 0.15, 0.15])]
        cands = self.canon_by_pair[(c, s)][kind]
        j = cands[self.rng.integers(len(cands))]
        a = self.canon_attrs[j]
        obj = f"{world.article(c)} {c} {s}"
        if kind == "size":
            obj = f"{world.article(a['size'])} {a['size']} {c} {s}"
        elif kind == "bg":
            obj += f" on {world.article(a['bg'])} {a['bg']} background"
        elif kind == "pos":
            obj += f" at the {a['pos']}" if a["pos"] in ("top", "bottom") else f" on the {a['pos']}"
        req = world.GEN_FORMS[self.rng.choice(len(world.GEN_FORMS), p=[0.4, 0.15, 0.15, 0.15, 0.15])].format(obj)
        return req, world.GEN_ANSWER, [], [len(self.attrs) + j]

    def edit(self):
        k = self.rng.integers(len(self.edit_src))
        return IMAGE_BLOCK + "\n" + self.instr[k], world.EDIT_ANSWER, [int(self.edit_src[k])], [int(self.edit_dst[k])]

    def encode(self, message, answer):
        """ids (image positions = -1), answer mask, image position lists (prompt ones, answer ones)."""
        prompt = TEMPLATE_USER.format(message)
        text = prompt + answer + self.eot
        ids, in_answer = [], []
        pieces = text.split("<image>")
        pos = 0
        for k, piece in enumerate(pieces):
            enc = self.tok.encode(piece)  # the post-processor adds BOS to every piece
            pid, offs = enc.ids, enc.offsets
            if k > 0:
                pid, offs = pid[1:], offs[1:]
            ids += pid
            in_answer += [pos + o[0] >= len(prompt) for o in offs]  # char offsets within the piece
            pos += len(piece)
            if k < len(pieces) - 1:
                ids += [-1] * N_IMG
                in_answer += [pos >= len(prompt)] * N_IMG
                pos += len("<image>")
        return ids, in_answer

    def batch(self, n, mix):
        kinds = self.rng.choice(3, n, p=mix)
        rows = []
        for k in kinds:
            msg, ans, in_imgs, out_imgs = [self.understanding, self.generation, self.edit][k]()
            ids, in_answer = self.encode(msg, ans)
            rows.append((ids, in_answer, in_imgs + out_imgs, k))
        return rows


def build_model(vocab, args):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.ffn, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, max_position_embeddings=1024,
                      rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 256},
                      attention_bias=False, mlp_bias=False, hidden_act="silu", initializer_range=0.02)
    llm = LlamaForCausalLM(cfg)
    h, m = args.hidden, args.mm_hidden
    projector = nn.Sequential(nn.Linear(m, h), nn.GELU(), nn.Linear(h, h))
    head = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, m))
    return llm, projector, head


def step_loss(llm, projector, head, data, rows, pad_id, vision_coef):
    T = max(len(r[0]) for r in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    att = torch.zeros((B, T), dtype=torch.long)
    img_slots, img_feats, tgt_pos, tgt_feats, labels = [], [], [], [], torch.full((B, T), -100, dtype=torch.long)
    for b, (row_ids, in_answer, imgs, _) in enumerate(rows):
        L = len(row_ids)
        t = torch.tensor(row_ids)
        att[b, :L] = 1
        img_mask = t < 0
        ids[b, :L] = torch.where(img_mask, torch.full_like(t, pad_id), t)
        starts = [p for p in range(L) if row_ids[p] < 0 and (p == 0 or row_ids[p - 1] >= 0)]
        assert len(starts) == len(imgs)
        for st, im in zip(starts, imgs):
            feats = torch.from_numpy(data.tokens[im].astype(np.float32))
            img_slots.append((b, st))
            img_feats.append(feats)
            if in_answer[st]:
                tgt_pos += [(b, st - 1 + k) for k in range(N_IMG)]
                tgt_feats.append(feats)
        for p in range(L - 1):  # position p predicts token p + 1
            if in_answer[p + 1] and row_ids[p + 1] >= 0:
                labels[b, p] = row_ids[p + 1]
    emb = llm.model.embed_tokens(ids)
    if img_slots:
        proj = projector(torch.stack(img_feats))  # [n, 16, h]
        rows_idx = torch.tensor([b for b, _ in img_slots])[:, None].expand(-1, N_IMG)
        cols_idx = torch.tensor([st for _, st in img_slots])[:, None] + torch.arange(N_IMG)[None]
        emb = emb.index_put((rows_idx.reshape(-1), cols_idx.reshape(-1)), proj.reshape(-1, proj.shape[-1]))
    hidden = llm.model(inputs_embeds=emb, attention_mask=att).last_hidden_state  # after the final RMSNorm
    logits = llm.lm_head(hidden)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    vis = torch.zeros(())
    if tgt_pos:
        hb = torch.tensor([b for b, _ in tgt_pos]); hp = torch.tensor([p for _, p in tgt_pos])
        pred = F.normalize(head(hidden[hb, hp]), dim=-1)
        tgt = F.normalize(torch.cat(tgt_feats), dim=-1)
        vis = (1 - (pred * tgt).sum(-1)).mean()
    return ce + vision_coef * vis, ce, vis


def to_bf16_bytes(t):
    return t.detach().to(torch.bfloat16).contiguous()


def save(args, llm, projector, head, vocab, info):
    from safetensors.torch import load_file, save_file
    out = args.out
    os.makedirs(out, exist_ok=True)
    sd = {}
    for k, v in llm.state_dict().items():
        if "rotary_emb" in k:
            continue
        sd[k] = to_bf16_bytes(v)
    for k, v in projector.state_dict().items():
        sd["model.mm_projector." + k] = to_bf16_bytes(v)
    for k, v in head.state_dict().items():
        sd["vision_head." + k] = to_bf16_bytes(v)
    tower = load_file(os.path.join(args.work, "siglip_mm", "model.safetensors"))  # the recentred tower (train_tower.recenter)
    for k, v in tower.items():
        if k.startswith("vision_model."):
            sd["model.vision_tower.vision_tower." + k[len("vision_model."):]] = to_bf16_bytes(v)
    save_file(dict(sorted(sd.items())), os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    siglip_cfg = json.load(open(os.path.join(args.work, "siglip", "config.json")))
    vcfg = siglip_cfg["vision_config"]
    vcfg = {k: vcfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                                 "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout") if k in vcfg}
    vcfg["model_type"] = "siglip_vision_model"
    c = llm.config
    tok = json.load(open(os.path.join(args.work, "tokenizer.json")))
    special = {t["content"]: t["id"] for t in tok["added_tokens"]}
    cfg = {
        "architectures": ["MetaMorphLlamaForCausalLM"], "model_type": "metamorph_llama",
        "vocab_size": vocab, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads, "head_dim": c.hidden_size // c.num_attention_heads,
        "hidden_act": "silu", "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 256},
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "torch_dtype": "bfloat16",
        "bos_token_id": special["<|begin_of_text|>"], "eos_token_id": [special["<|end_of_text|>"], special["<|eot_id|>"]],
        "mm_vision_tower": "siglip-shapes (bundled: model.vision_tower.vision_tower.*, vision_config)",
        "mm_hidden_size": args.mm_hidden, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -1,
        "mm_use_im_start_end": True, "mm_use_im_patch_token": False, "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "square", "vision_head_type": "mlp", "image_token_reduction": "interpolation",
        "num_image_tokens": N_IMG, "normalize_vision": True, "apply_softmax": False, "tokenizer_model_max_length": 512,
        "vision_config": vcfg,
    }
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    json.dump({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"]},
              open(os.path.join(out, "generation_config.json"), "w"), indent=1)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    json.dump(info, open(os.path.join(out, "training.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--mix", default="0.5,0.35,0.15", help="understanding,generation,edit probabilities")
    ap.add_argument("--vision-coef", type=float, default=1.0)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--mm-hidden", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--extra-frac", type=float, default=0.0,
                    help="share of understanding samples that ask the shape of a picture in an unnamed colour (build_extra.py)")
    ap.add_argument("--resume", metavar="DIR", help="continue from a checkpoint written by this script")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # denormals in late training otherwise slow CPU steps down 2-3x
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.work, "tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    pad_id = tok.token_to_id("<|finetune_right_pad_id|>")
    data = Data(args.work, tok, rng)
    data.load_extra(args.work, args.extra_frac)
    mix = [float(x) for x in args.mix.split(",")]
    mix = [m / sum(mix) for m in mix]
    llm, projector, head = build_model(vocab, args)
    history = []
    if args.resume:  # continue a saved checkpoint (its BF16 weights; the optimizer state starts afresh)
        from safetensors.torch import load_file
        sd = {k: v.float() for k, v in load_file(os.path.join(args.resume, "model.safetensors")).items()}
        for prefix, module in (("model.mm_projector.", projector), ("vision_head.", head)):
            module.load_state_dict({k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)})
        own = {k: v for k, v in sd.items()
               if not k.startswith(("model.mm_projector.", "vision_head.", "model.vision_tower."))}
        missing, unexpected = llm.load_state_dict(own, strict=False)
        assert not unexpected and all("rotary_emb" in k for k in missing), (missing, unexpected)
        prev = json.load(open(os.path.join(args.resume, "training.json")))
        history = prev.get("history", [prev])
    params = list(llm.parameters()) + list(projector.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    t0 = time.time()
    hist = []
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        rows = data.batch(args.batch, mix)
        loss, ce, vis = step_loss(llm, projector, head, data, rows, pad_id, args.vision_coef)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hist.append((ce.item(), vis.item()))
        if step % 50 == 0 or step == args.steps - 1:
            c, v = np.mean(hist[-50:], axis=0)
            print(f"step {step} ce {c:.4f} cos-loss {v:.4f} lr {lr:.2e} t={time.time() - t0:.0f}s", file=sys.stderr, flush=True)
        if (step + 1) % args.save_every == 0 or step == args.steps - 1:
            c, v = np.mean(hist[-50:], axis=0)
            info = {"steps": step + 1, "batch": args.batch, "mix": mix, "extra_frac": args.extra_frac, "vision_coef": args.vision_coef, "lr": args.lr,
                    "seed": args.seed, "seconds": round(time.time() - t0), "ce_last50": float(c), "cos_loss_last50": float(v),
                    "held_out_pairs": sorted(" ".join(p) for p in world.HELD_OUT), "torch": torch.__version__}
            save(args, llm, projector, head, vocab, {"history": history + [info]} if history else info)


if __name__ == "__main__":
    main()
