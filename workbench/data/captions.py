"""Real, varied captions for digit images, with descriptors measured from each image.

Every caption names the digit (as a numeral "3" or a word "three") and describes what the image
shows, measured with image moments rather than made up:

* thickness: the mean stroke width, ``2 * ink mass / total variation`` (for a long stroke of width w
  this is about w pixels: mass = w L, edge length = 2 L), bucketed thin / medium-weight / thick;
* slant: the shear ``-mu11 / mu02`` of the second-order central moments (x to the right, y down, so a
  positive value means the top of the digit leans right), bucketed left-leaning / upright /
  right-leaning at +-0.1 (about 6 degrees);
* size: the area of the ink's bounding box as a fraction of the frame (a soft box: each row and column
  counts with its brightest pixel), bucketed small / medium-sized / large;
* position: the offset of the ink's centroid from the frame's centre, as a fraction of the frame:
  "centered" within 0.05, else shifted left / right / up / down along the larger offset.

:func:`describe_image` buckets one image with fixed default thresholds (tuned on 28x28 MNIST);
:func:`make_captions` buckets thickness and size by the tertiles of the images it is given, so a data
set gets about a third of each word, and keeps the absolute thresholds for slant and position.

Captions come from :data:`TRAINING_TEMPLATES`. Variant 0 of each image is its canonical caption (a
seeded choice of template); variants 1.. are text augmentations of it: a template swap, word dropout
(one non-digit word removed), synonym substitution (:data:`SYNONYMS`), or a combination. Zero-shot
prompts use :data:`ZERO_SHOT_TEMPLATES`, which share no template with the training ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

#: Caption templates for training captions. Fields: {digit} (numeral or word, chosen at random),
#: {word}, {numeral}, {thickness}, {slant}, {size}, {position}.
TRAINING_TEMPLATES: tuple[str, ...] = (
    "a handwritten {digit}",
    "the number {word} written by hand",
    "a {thickness} {slant} {word}",
    "a {size} handwritten {numeral}, {position}",
    "the digit {numeral} drawn with {thickness} strokes",
    "a {slant} {digit} in {thickness} ink",
    "a {size} {word} that is {position}",
    "handwriting of the number {numeral}, {slant} and {thickness}",
    "a {thickness}, {size} {digit} {position} in the frame",
    "a person wrote a {slant} {word}",
)

#: Zero-shot prompt templates, disjoint from :data:`TRAINING_TEMPLATES` (no descriptors: a prompt
#: names the class only). Fields: {word}, {numeral}.
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of the digit {word}",
    "an image showing {numeral}",
    "a picture of the number {numeral}",
    "a drawing of a {word}",
    "this is the digit {numeral}",
    "an example of the numeral {word}",
    "a black and white image of a {numeral}",
    "the figure {word}",
)

#: Prompt templates for class names that are not digits (user data). Field: {name}.
GENERIC_PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {name}",
    "an image of a {name}",
    "a picture showing a {name}",
    "a drawing of a {name}",
)

#: Hand-written synonym table for synonym substitution (keys are matched as whole words).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "handwritten": ("hand-drawn", "scribbled", "hand-written"),
    "handwriting": ("penmanship", "script"),
    "written by hand": ("drawn by hand", "penned by hand", "scrawled by hand"),
    "a person wrote": ("somebody wrote", "a writer penned"),
    "thick": ("bold", "heavy"),
    "thin": ("light", "fine"),
    "medium-weight": ("regular", "moderate"),
    "small": ("little", "tiny"),
    "large": ("big", "sizable"),
    "medium-sized": ("mid-sized", "average-sized"),
    "upright": ("vertical", "straight"),
    "right-leaning": ("slanted right", "tilted right"),
    "left-leaning": ("slanted left", "tilted left"),
    "centered": ("central", "in the middle"),
    "shifted": ("moved", "offset", "displaced"),
    "strokes": ("lines", "pen strokes"),
    "drawn": ("sketched", "traced"),
    "number": ("numeral", "figure"),
    "digit": ("figure", "character"),
    "ink": ("pen",),
    "frame": ("picture", "image"),
}

THICKNESS_WORDS = ("thin", "medium-weight", "thick")
SLANT_WORDS = ("left-leaning", "upright", "right-leaning")
SIZE_WORDS = ("small", "medium-sized", "large")
POSITION_WORDS = ("centered", "shifted left", "shifted right", "shifted up", "shifted down")

#: Absolute thresholds used by :func:`describe_image` (thickness in pixels of a 28-pixel frame, size as
#: a fraction of the frame, slant as a shear, position as a fraction of the frame).
DEFAULT_THRESHOLDS: dict[str, tuple[float, float] | float] = {
    "thickness": (1.7, 2.3),
    "size": (0.3, 0.45),
    "slant": 0.1,
    "position": 0.05,
}

_INK_LEVEL = 0.3


# ------------------------------------------------------------------------------------------ measurement


def _as_stack(images) -> np.ndarray:
    """(N, H, W) float64 from (H, W), (1, H, W), (N, H, W) or (N, 1, H, W) arrays or tensors."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 4:
        if arr.shape[1] != 1:
            raise ValueError(f"images must have one channel, got shape {arr.shape}")
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"images must be (H, W), (N, H, W) or (N, 1, H, W), got shape {arr.shape}")
    return np.clip(np.nan_to_num(arr), 0.0, None)


def measure_images(images) -> dict[str, np.ndarray]:
    """Raw moment-based measurements of each image (vectorised over N).

    Returns arrays of length N: ``stroke_width`` (pixels, scaled to a 28-pixel frame), ``ink_fraction``
    (fraction of pixels above 0.5), ``slant`` (-mu11/mu02, > 0 leans right), ``box_area`` (soft
    bounding-box area / frame area), ``offset_x`` and ``offset_y`` (centroid minus frame centre, as a
    fraction of the frame; > 0 means right / down).
    """
    im = _as_stack(images)
    _, h, w = im.shape
    mass = im.sum(axis=(1, 2))
    safe_mass = np.where(mass > 0, mass, 1.0)
    padded = np.pad(im, ((0, 0), (1, 1), (1, 1)))
    variation = np.abs(np.diff(padded, axis=1)).sum(axis=(1, 2)) + np.abs(np.diff(padded, axis=2)).sum(
        axis=(1, 2)
    )
    width = np.where(variation > 0, 2.0 * mass / np.where(variation > 0, variation, 1.0), 0.0)
    ys, xs = np.mgrid[0:h, 0:w]
    cx = (im * xs).sum(axis=(1, 2)) / safe_mass
    cy = (im * ys).sum(axis=(1, 2)) / safe_mass
    dx = xs[None] - cx[:, None, None]
    dy = ys[None] - cy[:, None, None]
    mu11 = (im * dx * dy).sum(axis=(1, 2)) / safe_mass
    mu02 = (im * dy * dy).sum(axis=(1, 2)) / safe_mass
    slant = np.where(mu02 > 1e-12, -mu11 / np.where(mu02 > 1e-12, mu02, 1.0), 0.0)
    peak = np.maximum(im.max(axis=(1, 2)), 1e-12)[:, None]
    rows = np.clip(im.max(axis=2) / peak / _INK_LEVEL, 0.0, 1.0)  # soft "this row has ink"
    cols = np.clip(im.max(axis=1) / peak / _INK_LEVEL, 0.0, 1.0)
    box_area = rows.sum(axis=1) * cols.sum(axis=1) / (h * w)
    return {
        "stroke_width": width * 28.0 / h,
        "ink_fraction": (im > 0.5).mean(axis=(1, 2)),
        "slant": slant,
        "box_area": box_area,
        "offset_x": np.where(mass > 0, (cx - (w - 1) / 2) / w, 0.0),
        "offset_y": np.where(mass > 0, (cy - (h - 1) / 2) / h, 0.0),
    }


def dataset_thresholds(images) -> dict[str, tuple[float, float] | float]:
    """Thresholds for :func:`describe_images`: tertiles of stroke width and box area over ``images``,
    the fixed slant and position thresholds."""
    m = measure_images(images)
    return {
        "thickness": tuple(float(q) for q in np.quantile(m["stroke_width"], [1 / 3, 2 / 3])),
        "size": tuple(float(q) for q in np.quantile(m["box_area"], [1 / 3, 2 / 3])),
        "slant": DEFAULT_THRESHOLDS["slant"],
        "position": DEFAULT_THRESHOLDS["position"],
    }


def _bucket(values: np.ndarray, cuts: tuple[float, float], words: Sequence[str]) -> list[str]:
    # value < low -> words[0]; low <= value <= high -> words[1]; value > high -> words[2]
    lo, hi = cuts
    return [words[0] if v < lo else words[2] if v > hi else words[1] for v in values]


_RAW_NAMES = {"slant": "slant_value"}


def describe_images(images, thresholds: dict | None = None) -> list[dict]:
    """Descriptor words and raw measurements for each image (see :func:`describe_image`)."""
    t = dict(DEFAULT_THRESHOLDS)
    t.update(thresholds or {})
    m = measure_images(images)
    thickness = _bucket(m["stroke_width"], t["thickness"], THICKNESS_WORDS)
    size = _bucket(m["box_area"], t["size"], SIZE_WORDS)
    s = float(t["slant"])
    slant = [SLANT_WORDS[0] if v < -s else SLANT_WORDS[2] if v > s else SLANT_WORDS[1] for v in m["slant"]]
    p = float(t["position"])
    position = []
    for ox, oy in zip(m["offset_x"], m["offset_y"], strict=True):
        if max(abs(ox), abs(oy)) < p:
            position.append("centered")
        elif abs(ox) >= abs(oy):
            position.append("shifted right" if ox > 0 else "shifted left")
        else:
            position.append("shifted down" if oy > 0 else "shifted up")
    out = []
    for i in range(len(thickness)):
        out.append(
            {
                "thickness": thickness[i],
                "slant": slant[i],
                "size": size[i],
                "position": position[i],
                **{_RAW_NAMES.get(key, key): float(values[i]) for key, values in m.items()},
            }
        )
    return out


def describe_image(img, thresholds: dict | None = None) -> dict:
    """Describe one image ((H, W) or (1, H, W), values in [0, 1], bright ink on a dark ground).

    Returns the words ``thickness``, ``slant``, ``size``, ``position`` and the raw measurements of
    :func:`measure_images` (``stroke_width``, ``ink_fraction``, ``box_area``, ``offset_x``,
    ``offset_y``, and ``slant_value``: ``slant`` is the word). ``thresholds`` overrides
    :data:`DEFAULT_THRESHOLDS`; :func:`dataset_thresholds` gives data-set tertiles.
    """
    arr = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"describe_image takes one (H, W) or (1, H, W) image, got shape {arr.shape}")
    (d,) = describe_images(arr[None], thresholds)
    return d


# ------------------------------------------------------------------------------------------- rendering


def digit_forms(label) -> tuple[str, str]:
    """(numeral, word) for a digit label (int, "3" or "three")."""
    if isinstance(label, str) and label.lower() in DIGIT_WORDS:
        k = DIGIT_WORDS.index(label.lower())
    else:
        k = int(label)
    if not 0 <= k <= 9:
        raise ValueError(f"digit label must be in 0..9, got {label!r}")
    return str(k), DIGIT_WORDS[k]


def fix_articles(text: str) -> str:
    """ "a" before a vowel sound becomes "an" and back ("an eight", "a one", "an 8", "a upright" -> "an")."""

    def repl(m: re.Match) -> str:
        word = m.group(2)
        vowel = (word[0] in "aeiou8" and not word.startswith(("one", "use", "uni"))) or word in ("11", "18")
        return f"{'an' if vowel else 'a'} {word}"

    return re.sub(r"\b(a|an) (\S+)", repl, text)


def _render(template: str, fields: dict[str, str], rng: np.random.Generator) -> str:
    digit = fields["numeral"] if rng.random() < 0.5 else fields["word"]
    return fix_articles(template.format(digit=digit, **fields))


def _tokens(text: str) -> list[str]:
    return text.split(" ")


def _bare(token: str) -> str:
    return token.strip(",.;:").lower()


def word_dropout(text: str, rng: np.random.Generator, keep: Iterable[str] = ()) -> str:
    """Drop one random word that is not in ``keep`` (the class words); unchanged if none can go."""
    keep = {k.lower() for k in keep}
    tokens = _tokens(text)
    candidates = [i for i, tok in enumerate(tokens) if _bare(tok) and _bare(tok) not in keep]
    if len(tokens) < 2 or not candidates:
        return text
    i = candidates[int(rng.integers(len(candidates)))]
    if tokens[i].endswith(",") and i > 0 and not tokens[i - 1].endswith(","):
        tokens[i - 1] += ","  # keep the clause break
    del tokens[i]
    out = " ".join(tokens).strip().rstrip(",").strip()
    out = re.sub(r",\s*,", ",", out)
    return fix_articles(out)


def synonym_substitution(text: str, rng: np.random.Generator, max_swaps: int = 2) -> str:
    """Replace one to ``max_swaps`` phrases found in :data:`SYNONYMS` by a random synonym."""
    found = []
    for phrase in sorted(SYNONYMS, key=len, reverse=True):
        for m in re.finditer(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text):
            if not any(m.start() < e and s < m.end() for s, e, _ in found):
                found.append((m.start(), m.end(), phrase))
    if not found:
        return text
    count = int(rng.integers(1, min(max_swaps, len(found)) + 1))
    chosen = sorted((found[i] for i in rng.choice(len(found), size=count, replace=False)), reverse=True)
    for start, end, phrase in chosen:
        options = SYNONYMS[phrase]
        text = text[:start] + options[int(rng.integers(len(options)))] + text[end:]
    return fix_articles(text)


def augment_caption(text: str, rng: np.random.Generator, keep: Iterable[str] = ()) -> str:
    """A generic text augmentation (synonym substitution or word dropout) for free-form captions."""
    if rng.random() < 0.5:
        out = synonym_substitution(text, rng)
        if out != text:
            return out
    return word_dropout(text, rng, keep)


_AUGMENTATIONS = ("template", "dropout", "synonym", "template+synonym", "dropout+synonym")


def make_captions(
    images, labels, variants: int = 5, seed: int = 0, thresholds: dict | None = None
) -> list[list[str]]:
    """``variants`` captions for each image: variant 0 canonical, the others text augmentations.

    Args:
        images: (N, H, W) or (N, 1, H, W) array or tensor, values in [0, 1].
        labels: (N,) digit labels 0..9.
        variants: captions per image (>= 1).
        seed: the captions are a pure function of (images, labels, variants, seed).
        thresholds: descriptor thresholds; default :func:`dataset_thresholds` of ``images``.
    """
    if isinstance(variants, bool) or not isinstance(variants, (int, np.integer)) or variants < 1:
        raise ValueError(f"variants must be an integer >= 1, got {variants!r}")
    labels = np.asarray(labels)
    descriptions = describe_images(
        images, thresholds if thresholds is not None else dataset_thresholds(images)
    )
    if len(descriptions) != len(labels):
        raise ValueError(f"images has {len(descriptions)} rows but labels has {len(labels)}")
    rng = np.random.default_rng(seed)
    out: list[list[str]] = []
    for desc, label in zip(descriptions, labels, strict=True):
        numeral, word = digit_forms(int(label))
        fields = {
            "numeral": numeral,
            "word": word,
            "thickness": desc["thickness"],
            "slant": desc["slant"],
            "size": desc["size"],
            "position": desc["position"],
        }
        t0 = int(rng.integers(len(TRAINING_TEMPLATES)))
        canonical = _render(TRAINING_TEMPLATES[t0], fields, rng)
        row = [canonical]
        for v in range(1, variants):
            caption = canonical
            for attempt in range(8):
                kind = _AUGMENTATIONS[(v - 1 + attempt) % len(_AUGMENTATIONS)]
                if kind.startswith("template"):
                    t = int(rng.integers(len(TRAINING_TEMPLATES) - 1))
                    caption = _render(TRAINING_TEMPLATES[t + (t >= t0)], fields, rng)
                else:
                    caption = canonical
                if "dropout" in kind:
                    caption = word_dropout(caption, rng, keep=(numeral, word))
                if "synonym" in kind:
                    caption = synonym_substitution(caption, rng)
                if caption not in row:
                    break
            row.append(caption)
        out.append(row)
    return out


def prompt_texts(class_names: Sequence[str], templates: Sequence[str] | None = None) -> list[list[str]]:
    """Zero-shot prompts, one list per class: :data:`ZERO_SHOT_TEMPLATES` for digit classes ("3" or
    "three"), :data:`GENERIC_PROMPT_TEMPLATES` (``{name}``) otherwise. ``templates`` overrides."""
    out = []
    for name in class_names:
        try:
            numeral, word = digit_forms(name)
        except (ValueError, TypeError):
            use = templates if templates is not None else GENERIC_PROMPT_TEMPLATES
            out.append([fix_articles(t.format(name=name, word=name, numeral=name)) for t in use])
        else:
            use = templates if templates is not None else ZERO_SHOT_TEMPLATES
            out.append([fix_articles(t.format(word=word, numeral=numeral, name=word)) for t in use])
    return out
