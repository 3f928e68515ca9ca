"""The example pictures in examples/images/: drawn by matplotlib (a rasteriser the model never saw
in training), two of them colour x shape pairs held out from the language model's training.

    python3 tools/shapes/make_examples.py   (matplotlib 3.11, seed 7)
"""
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import quality  # noqa: E402
import world  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "images")
PICTURES = [("purple", "star"), ("blue", "circle"), ("orange", "square"), ("white", "triangle")]

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    for c, s in PICTURES:
        img = quality.render_matplotlib(c, s, rng)
        held = "held-out" if (c, s) in world.HELD_OUT else "trained"
        Image.fromarray(img).save(os.path.join(OUT, f"{c}-{s}.png"), optimize=True)
        print(f"{c}-{s}.png ({held} pair)", file=sys.stderr)
