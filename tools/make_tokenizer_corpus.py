#!/usr/bin/env python3
"""Build a synthetic, mixed-script benchmark corpus for the tokenizer.

Nothing is downloaded: text is synthesized from a seed (prose-like English,
source code, CJK, emoji sequences, numbers, other scripts, whitespace runs).
Documents are separated by "\\x1e\\n" (ASCII record separator + newline); the
separator itself is never part of a document.

Usage: python3 tools/make_tokenizer_corpus.py OUT [--mb 12] [--seed 1234]
"""
import argparse
import random

WORDS = ("the of and to in is was for on that with as by at from it this be are or an have not "
         "which but were they had their one all can been has more when there will would who so no "
         "time people year way day man thing woman life child world school state family student group "
         "country problem hand part place case week company system program question work government "
         "number night point home water room mother area money story fact month lot right study book "
         "eye job word business issue side kind head house service friend father power hour game line "
         "tokenizer inference multimodal transformer embedding attention gradient checkpoint").split()
NAMES = "Alice Bob Carol Dave Eve Mallory Trent Peggy Victor Walter Zoë José Ångström Müller".split()
CODE_KW = "def class return if else elif for while import from try except with as lambda yield async await".split()
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
KANA = [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)]
HANGUL = [chr(c) for c in range(0xAC00, 0xAC00 + 2000)]
EMOJI = ["😀", "😂", "🥲", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "1️⃣", "❤️", "🔥", "🚀", "✨", "🤖"]
SCRIPTS = ["Привет, как дела? Всё хорошо.", "Γειά σου Κόσμε, τι κάνεις;", "مرحبا بالعالم، كيف حالك؟",
           "שלום עולם, מה שלומך?", "नमस्ते दुनिया, आप कैसे हैं?", "สวัสดีชาวโลก สบายดีไหม",
           "Բարեւ աշխարհ", "გამარჯობა მსოფლიო", " হ্যালো বিশ্ব", "ሰላም ልዑል", "ជំរាបសួរ ពិភពលោក",
           "Tiếng Việt có dấu: Trường Đại học", "Ça va? Déjà vu, naïve café, Straße, Øresund"]


def prose(r):
    out = []
    for _ in range(r.randint(3, 12)):
        n = r.randint(6, 24)
        s = [r.choice(WORDS) for _ in range(n)]
        if r.random() < 0.3:
            s.insert(r.randrange(n), r.choice(NAMES))
        if r.random() < 0.2:
            s.insert(r.randrange(n), r.choice(["don't", "it's", "we'll", "they're", "I've", "she'd", "I'M"]))
        sent = " ".join(s)
        out.append(sent[0].upper() + sent[1:] + r.choice([".", ".", "!", "?", ";", ":"]))
    return " ".join(out)


def code(r):
    lines = []
    ind = 0
    for _ in range(r.randint(5, 30)):
        kind = r.random()
        name = "_".join(r.choice(WORDS) for _ in range(r.randint(1, 3)))
        if kind < 0.2:
            lines.append("    " * ind + f"def {name}(self, x: int = {r.randint(0, 999)}) -> list[str]:")
            ind = min(ind + 1, 4)
        elif kind < 0.4:
            lines.append("    " * ind + f"{name} = [{', '.join(str(r.randint(0, 10**r.randint(1, 7))) for _ in range(r.randint(1, 5)))}]")
        elif kind < 0.5:
            lines.append("    " * ind + f"return {{'{name}': {name}.get(\"key\", None) or 0x{r.randint(0, 2**32):08x}}}")
            ind = max(ind - 1, 0)
        elif kind < 0.6:
            lines.append("\t" * ind + f"if ({name} != NULL && {name}->count >= {r.randint(0, 64)}) {{ /* {r.choice(WORDS)} */ }}")
        elif kind < 0.7:
            lines.append("")
        else:
            lines.append("    " * ind + f"{r.choice(CODE_KW)} {name}  # {r.choice(WORDS)} {r.choice(WORDS)}")
    return "\n".join(lines) + "\n"


def cjk(r):
    parts = []
    for _ in range(r.randint(5, 40)):
        pool = r.choice([CJK, CJK, KANA, HANGUL])
        parts.append("".join(r.choice(pool) for _ in range(r.randint(1, 12))))
        parts.append(r.choice(["，", "。", "、", "！", "？", " ", "「", "」", ""]))
    return "".join(parts)


def numbers(r):
    items = []
    for _ in range(r.randint(5, 40)):
        k = r.random()
        if k < 0.3:
            items.append(str(r.randint(0, 10**r.randint(1, 15))))
        elif k < 0.5:
            items.append(f"{r.uniform(-1e6, 1e6):.{r.randint(0, 6)}f}")
        elif k < 0.6:
            items.append(f"{r.randint(1900, 2099)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}")
        elif k < 0.7:
            items.append(f"+1 ({r.randint(100, 999)}) {r.randint(100, 999)}-{r.randint(1000, 9999)}")
        elif k < 0.8:
            items.append(r.choice(["Ⅻ", "²³", "½", "٣٤٥", "१२३", "①②"]))
        else:
            items.append(f"{r.randint(0, 100)}%")
    return " ".join(items)


def emoji(r):
    return " ".join(r.choice(EMOJI) * r.randint(1, 3) + (r.choice(WORDS) if r.random() < 0.5 else "")
                    for _ in range(r.randint(3, 20)))


def whitespace(r):
    parts = []
    for _ in range(r.randint(5, 30)):
        parts.append(r.choice(WORDS))
        parts.append(r.choice([" " * r.randint(1, 12), "\n" * r.randint(1, 4), "\t" * r.randint(1, 3),
                               " \n ", "\r\n", "\u00a0", "\u3000", "  \n\n  ", " "]))
    return "".join(parts)


def other_scripts(r):
    return " ".join(r.choice(SCRIPTS) for _ in range(r.randint(2, 10)))


GENS = [(prose, 40), (code, 20), (cjk, 10), (numbers, 8), (emoji, 5), (whitespace, 7), (other_scripts, 10)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=12.0)
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    r = random.Random(a.seed)
    fns = [g for g, _ in GENS]
    weights = [w for _, w in GENS]
    target = int(a.mb * 1e6)
    size = 0
    with open(a.out, "w", encoding="utf-8", newline="") as f:
        while size < target:
            doc = "\n\n".join(r.choices(fns, weights)[0](r) for _ in range(r.randint(1, 6)))
            doc = doc.replace("\x1e", "")
            f.write(doc + "\x1e\n")
            size += len(doc.encode("utf-8")) + 2
    print(f"wrote {a.out}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
