"""Stage 0: render the shapes-world picture pool and train the byte-level BPE tokenizer.

    python3 tools/shapes/build_data.py --work WORK [--seed 0] [--singles 24000] [--edits 6000]

Writes WORK/pool.npz (images uint8 [N, 64, 64, 3], edit pairs) + WORK/attrs.json,
WORK/canon.npz + canon.json (generation targets with default attributes, see canonical()), and
WORK/tokenizer.json: LLaMA-3's format (same Split regex, ByteLevel pre-tokenizer / decoder,
TemplateProcessing that adds <|begin_of_text|>, ignore_merges) with a vocabulary (at most 1024 entries)
learnt on the world's language, then the LLaMA-3.1 special tokens and <image_start>/<image_end>.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import world  # noqa: E402

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                   "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
IMAGE_SPECIALS = ["<image_start>", "<image_end>"]
BPE_VOCAB = 1024

SPLIT_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
               "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def corpus(rng, n):
    """Text the model will see: templates, questions, answers, requests, edits, plus digits and
    punctuation so every byte sequence of this world has short tokens."""
    out = ["user", "assistant", "system", "\n", "0123456789", "What is 2 + 2?", "Hello! How are you?"]
    for _ in range(n):
        a = world.sample_attrs(rng)
        q, ans = world.qa(a, rng)
        out += [q, ans, world.caption(a, rng), world.generation_request(rng, a)[0], world.edit_instruction(rng, a)[0],
                world.GEN_ANSWER.split("<")[0], world.EDIT_ANSWER.split("<")[0]]
    return out


def train_tokenizer(path, rng):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False, special_tokens=[])
    tok.train_from_iterator(corpus(rng, 20000), trainer)
    j = json.loads(tok.to_str())
    # The world's language is small: the trainer stops when every word is one token (~510).
    base = len(j["model"]["vocab"])
    assert sorted(j["model"]["vocab"].values()) == list(range(base))
    # LLaMA-3 writes merges as "a b" strings.
    j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    specials = LLAMA3_SPECIALS + IMAGE_SPECIALS
    j["added_tokens"] = [{"id": base + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, s in enumerate(specials)]
    bos = base
    j["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing",
         "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                  {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos], "tokens": ["<|begin_of_text|>"]}}}]}
    with open(path, "w") as f:
        json.dump(j, f, ensure_ascii=False)
    check = Tokenizer.from_file(path)
    ids = check.encode("<|start_header_id|>user<|end_header_id|>\nWhat color is the shape?<|eot_id|><image_start>").ids
    assert ids[0] == bos and ids[-1] == base + len(specials) - 2, ids
    return base + len(specials)


def canonical(rng, per_base=40, per_variant=10):
    """Generation targets. A request names a colour and a shape and at most one more attribute;
    the rest take defaults (large, center, gray background) so that a request has one answer
    and a regression head is not asked to predict the mean of many pictures.
    Returns attrs, images, and the attribute that was varied ("" for the default picture)."""
    attrs, images, varied = [], [], []
    for c in world.COLOR_NAMES:
        for s in world.SHAPES:
            jobs = [({}, "", per_base)]
            jobs += [({"size": z}, "size", per_variant) for z in world.SIZE_NAMES if z != "large"]
            jobs += [({"bg": b}, "bg", per_variant) for b in world.BG_NAMES if b not in ("gray", c)]
            jobs += [({"pos": p}, "pos", per_variant) for p in world.POSITIONS if p != "center"]
            for over, kind, n in jobs:
                for _ in range(n):
                    kw = dict(size="large", pos="center", bg="gray") | over
                    a = world.sample_attrs(rng, color=c, shape=s, **kw)
                    attrs.append(a)
                    images.append(world.render(a, rng))
                    varied.append(kind)
    return attrs, images, varied


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--singles", type=int, default=24000)
    ap.add_argument("--edits", type=int, default=6000)
    ap.add_argument("--canonical-only", action="store_true", help="only (re)write WORK/canon.npz + canon.json")
    args = ap.parse_args()
    if args.canonical_only:
        return write_canonical(args)
    os.makedirs(args.work, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    vocab = train_tokenizer(os.path.join(args.work, "tokenizer.json"), rng)
    attrs, images = [], []
    for _ in range(args.singles):
        a = world.sample_attrs(rng)
        attrs.append(a)
        images.append(world.render(a, rng))
    edits = []  # (source index, target index, instruction)
    while len(edits) < args.edits:
        a = world.sample_attrs(rng, allow_held_out=False)
        instr, b = world.edit_instruction(rng, a)
        if (b["color"], b["shape"]) in world.HELD_OUT:
            continue
        renderer = "pil" if rng.random() < 0.5 else "numpy"
        # Same renderer, geometry, supersampling and noise on both sides: only the edited attribute differs.
        state = rng.bit_generator.state
        ia = world.render(a, rng, renderer)
        rng.bit_generator.state = state
        ib = world.render(b, rng, renderer)
        attrs += [a, b]
        images += [ia, ib]
        edits.append((len(attrs) - 2, len(attrs) - 1, instr))
    np.savez(os.path.join(args.work, "pool.npz"), images=np.stack(images),
             edit_src=np.array([e[0] for e in edits]), edit_dst=np.array([e[1] for e in edits]))
    with open(os.path.join(args.work, "attrs.json"), "w") as f:
        json.dump({"seed": args.seed, "vocab_size": vocab, "attrs": attrs, "edit_instructions": [e[2] for e in edits]}, f)
    print(f"{len(images)} pictures, {len(edits)} edit pairs, vocabulary {vocab}", file=sys.stderr)
    write_canonical(args)


def write_canonical(args):
    rng = np.random.default_rng([args.seed, 1])
    attrs, images, varied = canonical(rng)
    np.savez(os.path.join(args.work, "canon.npz"), images=np.stack(images))
    with open(os.path.join(args.work, "canon.json"), "w") as f:
        json.dump({"attrs": attrs, "varied": varied}, f)
    print(f"{len(images)} canonical generation targets", file=sys.stderr)


if __name__ == "__main__":
    main()
