"""The shapes world: procedural pictures of one simple object, their attributes, and the
captions, questions, answers, generation requests and edit instructions made from them.

Everything is drawn from a numpy Generator, so a seed fixes the data. Two renderers are used
for training (PIL polygons on a supersampled canvas, and numpy analytic coverage), so the
models do not learn one rasteriser's edges; `quality.py` adds a third program (matplotlib's
Agg) that training never sees.
"""
import math

import numpy as np

SIZE = 64  # picture side in pixels

SHAPES = ["circle", "square", "triangle", "star"]
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225), "yellow": (240, 220, 40),
    "orange": (245, 140, 30), "purple": (140, 60, 190), "white": (245, 245, 245), "black": (20, 20, 20),
}
COLOR_NAMES = list(COLORS)
BACKGROUNDS = {"white": (235, 235, 235), "black": (30, 30, 30), "gray": (128, 128, 128), "beige": (225, 210, 170)}
BG_NAMES = list(BACKGROUNDS)
SIZES = {"small": (8.0, 11.0), "medium": (13.0, 16.0), "large": (18.0, 22.0)}
SIZE_NAMES = list(SIZES)
POSITIONS = ["center", "left", "right", "top", "bottom"]

# Colour x shape pairs the language model never sees in training (pictures, prompts or answers):
# each colour once, each shape twice. The tower and the visualizer are "pretrained" parts and
# see every pair, as SigLIP and Stable Diffusion saw the web.
HELD_OUT = {("red", "star"), ("green", "triangle"), ("blue", "circle"), ("yellow", "square"),
            ("orange", "triangle"), ("purple", "star"), ("white", "square"), ("black", "circle")}


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def sample_attrs(rng, color=None, shape=None, bg=None, size=None, pos=None, allow_held_out=True):
    """Attributes plus the continuous parameters that place the shape."""
    while True:
        c = color or COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
        s = shape or SHAPES[rng.integers(len(SHAPES))]
        if allow_held_out or (c, s) not in HELD_OUT:
            break
        if color and shape:
            raise ValueError(f"{c} {s} is held out")
    choices = [b for b in BG_NAMES if b != c]
    b = bg if bg and bg != c else choices[rng.integers(len(choices))]
    z = size or SIZE_NAMES[rng.integers(len(SIZE_NAMES))]
    p = pos or POSITIONS[rng.integers(len(POSITIONS))]
    r = float(rng.uniform(*SIZES[z]))
    d = (SIZE / 2 - r - 3) * float(rng.uniform(0.75, 1.0))
    dx, dy = {"center": (0, 0), "left": (-d, 0), "right": (d, 0), "top": (0, -d), "bottom": (0, d)}[p]
    jitter = 2.0
    return {
        "color": c, "shape": s, "bg": b, "size": z, "pos": p,
        "cx": SIZE / 2 + dx + float(rng.uniform(-jitter, jitter)),
        "cy": SIZE / 2 + dy + float(rng.uniform(-jitter, jitter)),
        "r": r, "rot": float(rng.uniform(-10, 10)), "inner": float(rng.uniform(0.4, 0.5)),
        "fg_rgb": jitter_rgb(COLORS[c], rng, 14), "bg_rgb": jitter_rgb(BACKGROUNDS[b], rng, 10),
    }


def jitter_rgb(rgb, rng, amount):
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in rgb)


def polygon(a):
    """Vertices (x, y) of the shape in pixel coordinates; None for a circle."""
    s, r, cx, cy, rot = a["shape"], a["r"], a["cx"], a["cy"], math.radians(a["rot"])
    if s == "circle":
        return None
    if s == "square":
        h = r * 0.85
        pts = [(-h, -h), (h, -h), (h, h), (-h, h)]
    elif s == "triangle":
        # Equilateral, pointing up, centred on its centroid so it fills its radius.
        pts = [(r * math.cos(math.radians(-90 + 120 * k)), r * math.sin(math.radians(-90 + 120 * k)) + r * 0.12) for k in range(3)]
    else:
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * a["inner"]
            ang = math.radians(-90 + 36 * k)
            pts.append((rad * math.cos(ang), rad * math.sin(ang) + r * 0.05))
    cs, sn = math.cos(rot), math.sin(rot)
    return [(cx + x * cs - y * sn, cy + x * sn + y * cs) for x, y in pts]


def render_pil(a, rng):
    from PIL import Image, ImageDraw
    k = int(rng.choice([1, 2, 4, 4]))
    img = Image.new("RGB", (SIZE * k, SIZE * k), a["bg_rgb"])
    d = ImageDraw.Draw(img)
    poly = polygon(a)
    if poly is None:
        r, cx, cy = a["r"] * k, a["cx"] * k, a["cy"] * k
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=a["fg_rgb"])
    else:
        d.polygon([(x * k, y * k) for x, y in poly], fill=a["fg_rgb"])
    if k > 1:
        img = img.resize((SIZE, SIZE), Image.Resampling.BOX if rng.random() < 0.5 else Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def _inside(poly, x, y):
    """Even-odd point-in-polygon for arrays of points."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        cond = (y1 > y) != (y2 > y)
        xt = (x2 - x1) * (y - y1) / ((y2 - y1) if y2 != y1 else 1e-9) + x1
        inside ^= cond & (x < xt)
    return inside


def render_numpy(a, rng):
    """Coverage by s x s subsamples per pixel (s random), then optional softening."""
    s = int(rng.choice([1, 3, 5]))
    off = (np.arange(s) + 0.5) / s
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    cov = np.zeros((SIZE, SIZE))
    poly = polygon(a)
    for oy in off:
        for ox in off:
            px, py = xs + ox, ys + oy
            if poly is None:
                m = (px - a["cx"]) ** 2 + (py - a["cy"]) ** 2 <= a["r"] ** 2
            else:
                m = _inside(poly, px, py)
            cov += m
    cov /= s * s
    fg = np.array(a["fg_rgb"], dtype=np.float64)
    bg = np.array(a["bg_rgb"], dtype=np.float64)
    img = bg + cov[..., None] * (fg - bg)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def augment(img, rng):
    x = img.astype(np.float32)
    if rng.random() < 0.3:
        x += rng.normal(0, rng.uniform(1, 5), x.shape)
    if rng.random() < 0.2:  # a light 3x3 box blur
        p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        x = sum(p[i:i + SIZE, j:j + SIZE] for i in range(3) for j in range(3)) / 9
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def render(a, rng, renderer=None, aug=True):
    renderer = renderer or ("pil" if rng.random() < 0.5 else "numpy")
    img = render_pil(a, rng) if renderer == "pil" else render_numpy(a, rng)
    return augment(img, rng) if aug else img


# ----- language -----

def describe(a, rng):
    size, color, shape, bg, pos = a["size"], a["color"], a["shape"], a["bg"], a["pos"]
    where = "in the center" if pos == "center" else f"on the {pos}" if pos in ("left", "right") else f"at the {pos}"
    forms = [
        f"A {size} {color} {shape} on a {bg} background, {where}.",
        f"The image shows a {size} {color} {shape} {where} on a {bg} background.",
        f"A {color} {shape} on a {bg} background. It is {size} and {where}.",
    ]
    return forms[rng.integers(len(forms))]


def caption(a, rng):
    """Short captions for the tower's text side."""
    forms = [
        f"a {a['size']} {a['color']} {a['shape']} on a {a['bg']} background at the {a['pos']}",
        f"a {a['color']} {a['shape']}, {a['size']}, {a['pos']}, {a['bg']} background",
        f"{a['bg']} background with a {a['size']} {a['color']} {a['shape']} at the {a['pos']}",
    ]
    return forms[rng.integers(len(forms))]


COLOR_QUESTIONS = ["What color is the shape?", "What colour is the shape?", "What color is the object?",
                   "What is the color of the shape in the image?", "Which color does the shape have?"]
SHAPE_QUESTIONS = ["What shape is this?", "What shape is in the image?", "What is the shape?",
                   "Which shape do you see?", "What kind of shape is shown?"]
DESCRIBE_QUESTIONS = ["Describe the image.", "Describe this picture.", "What do you see?", "What is in the image?"]


def qa(a, rng, kind=None):
    """One (question, answer) about a picture with attributes a."""
    kinds = ["color", "shape", "describe", "background", "size", "position"]
    kind = kind or kinds[rng.choice(len(kinds), p=[0.25, 0.25, 0.2, 0.1, 0.1, 0.1])]
    c, s = a["color"], a["shape"]
    pick = lambda xs: xs[rng.integers(len(xs))]
    if kind == "color":
        return pick(COLOR_QUESTIONS), pick([f"The shape is {c}.", f"{c.capitalize()}.", f"It is {c}."])
    if kind == "shape":
        return pick(SHAPE_QUESTIONS), pick([f"It is {article(s)} {s}.", f"{article(s).capitalize()} {s}.", f"This is {article(s)} {s}."])
    if kind == "describe":
        return pick(DESCRIBE_QUESTIONS), describe(a, rng)
    if kind == "background":
        return pick(["What color is the background?", "What is the background color?"]), f"The background is {a['bg']}."
    if kind == "size":
        return pick(["How big is the shape?", "What size is the shape?"]), f"It is {a['size']}."
    p = a["pos"]
    return pick(["Where is the shape?", "Where is the object in the image?"]), \
        "It is in the center." if p == "center" else f"It is on the {p}." if p in ("left", "right") else f"It is at the {p}."


def generation_request(rng, a):
    """A request naming the pair (and sometimes more); the picture must match the named attributes."""
    c, s = a["color"], a["shape"]
    extra = rng.random()
    if extra < 0.55:
        obj = f"{article(c)} {c} {s}"
    elif extra < 0.7:
        obj = f"{article(a['size'])} {a['size']} {c} {s}"
    elif extra < 0.85:
        obj = f"{article(c)} {c} {s} on a {a['bg']} background"
    else:
        obj = f"{article(c)} {c} {s} at the {a['pos']}"
    return GEN_FORMS[rng.integers(len(GEN_FORMS))].format(obj), ("size" if 0.55 <= extra < 0.7 else "bg" if 0.7 <= extra < 0.85 else "pos" if extra >= 0.85 else None)


# Phrasings of a generation request (training, evaluation and the ablation use the same ones).
GEN_FORMS = ["Generate an image of {}.", "Draw {}.", "Create a picture of {}.", "Make an image of {}.", "Show me {}."]
GEN_ANSWER = "Here is an image based on your request: <image_start><image><image_end>"
EDIT_ANSWER = "Here is the edited image: <image_start><image><image_end>"


def edit_instruction(rng, a, kind=None):
    """(instruction, changed attribute dict) for an edit of picture a."""
    kind = kind or ["color", "shape", "bg"][rng.choice(3, p=[0.45, 0.4, 0.15])]
    b = dict(a)
    if kind == "color":
        new = [c for c in COLOR_NAMES if c != a["color"] and c != a["bg"]]
        b["color"] = new[rng.integers(len(new))]
        b["fg_rgb"] = jitter_rgb(COLORS[b["color"]], rng, 14)
        forms = ["Make it {}.", "Change the color to {}.", "Make the shape {}.", "Paint it {}."]
        return forms[rng.integers(len(forms))].format(b["color"]), b
    if kind == "shape":
        new = [s for s in SHAPES if s != a["shape"]]
        b["shape"] = new[rng.integers(len(new))]
        forms = ["Turn it into {} {}.", "Make it {} {}.", "Change the shape to {} {}.", "Replace it with {} {}."]
        f = forms[rng.integers(len(forms))]
        return f.format(article(b["shape"]), b["shape"]), b
    new = [x for x in BG_NAMES if x != a["bg"] and x != a["color"]]
    b["bg"] = new[rng.integers(len(new))]
    b["bg_rgb"] = jitter_rgb(BACKGROUNDS[b["bg"]], rng, 10)
    forms = ["Make the background {}.", "Change the background to {}."]
    return forms[rng.integers(len(forms))].format(b["bg"]), b
