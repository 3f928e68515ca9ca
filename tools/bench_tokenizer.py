#!/usr/bin/env python3
"""Tokenizer speed: metamorph (Swift) vs Hugging Face `tokenizers`, single thread.

Both encode the same documents (the corpus split on "\\x1e\\n"), one encode call
per document, no BOS. The Swift side runs `metamorph tokenize --bench FILE`,
which prints JSON (MB/s, token count, load time). Token counts and an id
checksum are compared so a speedup can't hide a mismatch.

Usage:
  python3 tools/make_tokenizer_corpus.py /tmp/corpus.txt
  python3 tools/bench_tokenizer.py --bin .build/release/metamorph-cli \\
      --tokenizer /work/shared/fixtures/tokenizer/meta-llama-3.1-8b-instruct/tokenizer.json \\
      --corpus /tmp/corpus.txt
"""
import argparse
import json
import os
import subprocess
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from tokenizers import AddedToken, Tokenizer  # noqa: E402


def checksum(ids_lists):
    c = 0
    for ids in ids_lists:
        for i in ids:
            c = (c * 31 + i) & 0xFFFFFFFFFFFFFFFF
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="metamorph CLI binary (release build)")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs for each side")
    a = ap.parse_args()

    # Reference.
    loads = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        tk = Tokenizer.from_file(a.tokenizer)
        loads.append(time.perf_counter() - t)
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ["<image_start>", "<image_end>"]])
    text = open(a.corpus, encoding="utf-8", newline="").read()
    docs = text.split("\x1e\n")
    if docs and docs[-1] == "":
        docs.pop()
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    best = None
    for _ in range(a.repeat):
        t = time.perf_counter()
        out = [tk.encode(d, add_special_tokens=False).ids for d in docs]
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    ref_tokens = sum(len(x) for x in out)
    ref_sum = checksum(out)
    ref = {"mb_per_s": nbytes / 1e6 / best, "seconds": best, "tokens": ref_tokens, "load_seconds": min(loads)}

    # Ours.
    runs = []
    for _ in range(a.repeat):
        p = subprocess.run([a.bin, "tokenize", "--tokenizer", a.tokenizer, "--bench", a.corpus],
                           capture_output=True, text=True, check=True)
        runs.append(json.loads(p.stdout))
    ours = max(runs, key=lambda r: r["mb_per_s"])
    ours["load_seconds"] = min(r["load_seconds"] for r in runs)

    print(f"corpus: {nbytes / 1e6:.1f} MB, {len(docs)} documents")
    print(f"tokenizers : {ref['mb_per_s']:8.2f} MB/s  {ref_tokens} tokens  load {ref['load_seconds']:.3f} s")
    print(f"metamorph  : {ours['mb_per_s']:8.2f} MB/s  {ours['tokens']} tokens  load {ours['load_seconds']:.3f} s")
    print(f"speed ratio (metamorph / tokenizers): {ours['mb_per_s'] / ref['mb_per_s']:.2f}x")
    print(f"load ratio (tokenizers / metamorph): {ref['load_seconds'] / ours['load_seconds']:.2f}x")
    same = ours["tokens"] == ref_tokens and ours["checksum"] == ref_sum
    print("ids identical (count + checksum):", same)
    print(json.dumps({"tokenizers": ref, "metamorph": ours, "ids_identical": same}))


if __name__ == "__main__":
    main()
