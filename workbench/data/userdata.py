"""The user's own paired data: precomputed embeddings, or a folder of images with a captions CSV.

Paired embeddings (:func:`load_paired_embeddings`, :func:`user_embeddings`)
---------------------------------------------------------------------------
``.npz`` (read with ``allow_pickle=False``: nothing is ever unpickled):

* ``image_emb``: (n, d_image) numbers, ``text_emb``: (n, d_text) numbers (the dims may differ);
* optional ``labels``: (n,) integers >= 0 or strings; optional ``captions``: (n,) strings
  (save them as a unicode array, e.g. ``np.array(captions, dtype=str)``, not as objects).

``.parquet``, one row per pair, the embeddings in either layout:

* list columns ``image_emb`` and ``text_emb`` (each cell a list of floats, the same length in every
  row), as ``pd.DataFrame({"image_emb": list(x), "text_emb": list(y)}).to_parquet(path)`` writes; or
* wide columns ``image_emb_0, image_emb_1, ...`` and ``text_emb_0, ...`` (numbered from 0, no gaps);

plus optional ``labels`` (or ``label``) and ``captions`` (or ``caption``) columns.

Checks, each a ValueError naming the file unless said otherwise: the file exists
(FileNotFoundError), the required keys are present (the message lists the keys found), both arrays
are 2-D with the same number of rows (the message gives both shapes), no NaN or inf (the message names
the array and the first bad row), at least 2 rows.

Memory is bounded for any file: rows, dimension (``max_dim``, default :data:`MAX_DIM`), dtypes and
the bytes decoding takes (``max_bytes``) are read from the npz member headers or the parquet footer
(``workbench.data.embedfile``) and checked before any array is decoded. Labels are mapped through
``np.unique`` (class ``k`` is the k-th smallest label), so a label of 10^9 costs nothing.

Image folder (:func:`image_folder_captions`)
--------------------------------------------
A folder of PNG/JPG images and a CSV with columns ``filename`` (relative to the folder), ``caption``
and optionally ``label``. Images are converted to grayscale, resized to ``image_size`` squared, scaled
to [0, 1] and, by default, inverted when they are dark ink on a light ground (the digits convention is
light ink on black). Errors name the CSV, the row (1-based, header excluded) and its line.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from workbench.data import captions as cap
from workbench.data.embedfile import EmbeddingFile, open_embedding_file
from workbench.data.multimodal import (
    MultimodalDataset,
    check_float,
    check_int,
    check_test_fraction,
    encode_captions,
    make_image_augment,
    seeded_split,
)

REQUIRED_KEYS = ("image_emb", "text_emb")
OPTIONAL_KEYS = ("labels", "captions")
#: Default cap on the embedding dimension d (``max_dim``): past it the O(d^2) views have no meaning.
MAX_DIM = 65_536
#: Default cap on the memory decoding a file may take (``max_bytes``), checked before decoding.
MAX_DECODED_BYTES = 4 * 2**30
# The finiteness check and the float32 conversion run over blocks of about this many values.
_BLOCK_VALUES = 1 << 22


# ------------------------------------------------------------------------------------------ embeddings


def _check_embedding(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    """float32 copy of a numeric (n, d) array, refused at the first row with NaN or inf (blockwise)."""
    out = array if array.dtype == np.float32 else np.empty(array.shape, dtype=np.float32)
    rows = max(1, _BLOCK_VALUES // max(1, array.shape[1]))
    for start in range(0, array.shape[0], rows):
        block = array[start : start + rows]
        if block.dtype != np.float32:
            with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 range -> inf, reported below
                block = block.astype(np.float32)
            out[start : start + rows] = block
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise ValueError(f"{path}: {key} has a non-finite value (NaN or inf) in row {row}")
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MB"


def _check_headers(
    path: Path, file: EmbeddingFile, max_rows: int | None, max_dim: int, max_bytes: int
) -> int:
    """Check keys, dtypes, shapes and the decoded size from the headers alone; returns n."""
    entries = file.entries
    missing = [k for k in REQUIRED_KEYS if k not in entries]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}; found keys: {file.keys or 'none'}")
    for key, entry in entries.items():
        if entry.kind == "object":
            raise ValueError(
                f"{path}: {key} is stored as Python objects (pickle), which is not loaded; "
                "save it as a numeric or unicode string array"
            )
        wanted = ("number",) if key in REQUIRED_KEYS else ("number", "string")
        if entry.kind not in wanted:
            what = "numbers" if key in REQUIRED_KEYS else "numbers or strings"
            raise ValueError(f"{path}: {key} must hold {what}, got dtype {entry.dtype}")
    image, text = entries["image_emb"].shape, entries["text_emb"].shape
    if len(image) != 2 or len(text) != 2 or image[0] != text[0]:
        raise ValueError(
            f"{path}: image_emb has shape {image} but text_emb has shape {text}; "
            "both must be 2-D (n, d) with the same number of rows n"
        )
    n = image[0]
    if n < 2:
        raise ValueError(f"{path}: needs at least 2 rows, got {n}")
    if max_rows is not None and n > max_rows:
        raise ValueError(f"{path}: {n} rows is over the limit of {max_rows} (max_rows); use a sample")
    for key, shape in (("image_emb", image), ("text_emb", text)):
        if shape[1] < 1:
            raise ValueError(f"{path}: {key} has no columns (shape {shape}); each row needs d >= 1 values")
        if shape[1] > max_dim:
            raise ValueError(
                f"{path}: {key} has d = {shape[1]} columns, over the limit of {max_dim} (max_dim); "
                "reduce the dimension first (e.g. PCA) or raise max_dim"
            )
    for key in OPTIONAL_KEYS:
        if key in entries and math.prod(entries[key].shape) != n:
            raise ValueError(f"{path}: {key} has {math.prod(entries[key].shape)} rows but image_emb has {n}")
    # Decoded arrays plus the float32 copies of the embeddings.
    need = sum(e.nbytes for e in entries.values()) + 4 * n * (image[1] + text[1])
    if need > max_bytes:
        raise ValueError(
            f"{path}: decoding it needs about {_size(need)} ({_plural(n, 'row')}, d = {image[1]} and "
            f"{text[1]}), over the limit of {_size(max_bytes)} (max_bytes); use a sample or raise max_bytes"
        )
    return n


def load_paired_embeddings(
    path, max_dim: int = MAX_DIM, max_rows: int | None = None, max_bytes: int = MAX_DECODED_BYTES
) -> dict:
    """Read and check a file of paired embeddings (layouts in the module docstring).

    The file is sized from its headers (npz member headers, the parquet footer) before anything is
    decoded: keys, dtypes, rows, dimension and the memory decoding takes are checked first, so a
    small file declaring huge arrays is refused without allocating them.

    Args:
        path: A ``.npz`` or ``.parquet`` file.
        max_dim: Largest embedding dimension accepted (each modality).
        max_rows: Most pairs accepted (None: no cap besides ``max_bytes``).
        max_bytes: Most bytes decoding may take (arrays plus their float32 copies).

    Returns:
        ``{"image_emb": (n, d_i) float32, "text_emb": (n, d_t) float32, "labels": (n,) int64 or None,
        "class_names": list[str] or None, "captions": list[str] or None, "path": str}``. Labels
        (integers >= 0 or strings) become indices into ``class_names``, the sorted distinct label
        values as strings: labels 3 and 7 become 0 and 1, with class names "3" and "7".

    Raises:
        FileNotFoundError: No such file.
        ValueError: Anything else wrong with the file or the limits; the message starts with the path.
    """
    max_dim = check_int("max_dim", max_dim, 1)
    max_bytes = check_int("max_bytes", max_bytes, 1)
    if max_rows is not None:
        max_rows = check_int("max_rows", max_rows, 2)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"paired embeddings file not found: {path}")
    file = open_embedding_file(
        path, (*REQUIRED_KEYS, *OPTIONAL_KEYS), REQUIRED_KEYS, {"labels": "label", "captions": "caption"}
    )
    n = _check_headers(path, file, max_rows, max_dim, max_bytes)
    image = _check_embedding(path, "image_emb", _decoded(file, "image_emb"))
    text = _check_embedding(path, "text_emb", _decoded(file, "text_emb"))
    labels = class_names = captions = None
    if "labels" in file.entries:
        labels, class_names = _labels(path, file.read("labels"), n)
    if "captions" in file.entries:
        values = file.read("captions").reshape(-1)
        if values.dtype.kind == "S":
            values = np.char.decode(values, "utf-8", "replace")
        captions = ["" if c is None else str(c) for c in values.tolist()]
    return {
        "image_emb": image,
        "text_emb": text,
        "labels": labels,
        "class_names": class_names,
        "captions": captions,
        "path": str(path),
    }


def _decoded(file: EmbeddingFile, key: str) -> np.ndarray:
    array = file.read(key)
    if array.shape != file.entries[key].shape or array.dtype.kind not in "biuf":
        raise ValueError(
            f"{file.path}: {key} decoded to shape {array.shape} and dtype {array.dtype}, not the "
            f"{file.entries[key].shape} of numbers its header declares"
        )
    return array


def _labels(path: Path, values: np.ndarray, n: int) -> tuple[np.ndarray, list[str]]:
    """Labels as indices into the sorted distinct values (``np.unique``: never a range up to the max)."""
    values = values.reshape(-1)
    if values.shape[0] != n:
        raise ValueError(f"{path}: labels has {values.shape[0]} rows but image_emb has {n}")
    if values.dtype.kind in "biuf":
        if values.dtype.kind == "f" and not (
            np.isfinite(values).all() and (values == np.round(values)).all()
        ):
            raise ValueError(f"{path}: labels must be whole numbers or strings")
        numbers = values.astype(np.int64)
        if numbers.min() < 0:
            raise ValueError(
                f"{path}: labels must be >= 0, got {numbers.min()} in row {int(numbers.argmin())}"
            )
        distinct, index = np.unique(numbers, return_inverse=True)
        return index.astype(np.int64).reshape(-1), [str(v) for v in distinct.tolist()]
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", "replace")
    elif values.dtype.hasobject:  # strings from parquet; a null has no class
        missing = np.flatnonzero(np.array([v is None for v in values.tolist()], dtype=bool))
        if missing.size:
            raise ValueError(f"{path}: labels is empty (null) in row {int(missing[0])}")
        values = values.astype(str)
    distinct, index = np.unique(values, return_inverse=True)
    return index.astype(np.int64).reshape(-1), [str(v) for v in distinct.tolist()]


def user_embeddings(
    path,
    test_fraction: float = 0.25,
    seed: int = 0,
    max_dim: int = MAX_DIM,
    max_bytes: int = MAX_DECODED_BYTES,
) -> MultimodalDataset:
    """A :class:`MultimodalDataset` ("features", V = 1) from :func:`load_paired_embeddings`.

    ``max_dim`` and ``max_bytes`` are the limits of :func:`load_paired_embeddings`.
    """
    test_fraction = check_test_fraction(test_fraction)
    check_int("seed", seed, 0)
    data = load_paired_embeddings(path, max_dim=max_dim, max_bytes=max_bytes)
    n = data["image_emb"].shape[0]
    labels = data["labels"] if data["labels"] is not None else np.full(n, -1, dtype=np.int64)
    train, test = seeded_split(labels, test_fraction, seed)
    return MultimodalDataset(
        name="user_embeddings",
        images=torch.from_numpy(data["image_emb"]),
        texts=torch.from_numpy(data["text_emb"])[:, None, :],
        captions=[[c] for c in data["captions"]] if data["captions"] is not None else [],
        labels=labels,
        class_names=data["class_names"] or [],
        prompts=None,
        prompt_texts=[],
        train_index=train,
        test_index=test,
        text_encoder="features",
        info={"source": data["path"], "labelled": data["labels"] is not None},
    )


def save_paired_embeddings(
    path,
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    labels: np.ndarray | None = None,
    captions: list[str] | None = None,
) -> Path:
    """Write paired embeddings in the layout :func:`load_paired_embeddings` reads, and check it reads back.

    Args:
        path: a ``.npz`` or ``.parquet`` file (parent folders are created; the write is atomic).
        image_emb, text_emb: (n, d_image) and (n, d_text) numbers.
        labels: optional (n,) integers >= 0 or strings.
        captions: optional n strings.

    Returns:
        The path written.

    Raises:
        ValueError: an unsupported suffix, or data that :func:`load_paired_embeddings` rejects (the file
            is then not left behind).
    """
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".parquet", ".pq"):
        raise ValueError(f"path must end in .npz or .parquet, got {path.name!r}")
    arrays = {"image_emb": np.asarray(image_emb), "text_emb": np.asarray(text_emb)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    if captions is not None:
        arrays["captions"] = np.asarray([str(c) for c in captions], dtype=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.stem}{suffix}")
    try:
        if suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        else:
            import pandas as pd

            columns = {k: (list(v) if v.ndim == 2 else v) for k, v in arrays.items()}
            pd.DataFrame(columns).to_parquet(tmp)
        load_paired_embeddings(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------- image folder


def _image_reader():
    """A function path -> (H, W) or (H, W, C) float array in [0, 1], from whichever library exists."""
    try:
        from PIL import Image

        def read_pil(path: Path) -> np.ndarray:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"), dtype=np.float32) / 255.0

        return read_pil
    except ImportError:
        pass
    try:
        import imageio.v3 as iio

        def read_imageio(path: Path) -> np.ndarray:
            arr = np.asarray(iio.imread(path))
            return arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else max(1.0, float(arr.max())))

        return read_imageio
    except ImportError:
        pass
    try:
        import matplotlib.image as mpimg

        def read_mpl(path: Path) -> np.ndarray:
            arr = np.asarray(mpimg.imread(path))
            return arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)

        return read_mpl
    except ImportError:
        pass
    raise ValueError(
        "reading images needs Pillow (or imageio or matplotlib): pip install pillow "
        "(mlxtend, in the 'data' extra, brings it)"
    )


def _to_gray(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3] * arr[..., 3:] + (1 - arr[..., 3:])  # alpha over white
        arr = (
            arr[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            if arr.shape[2] >= 3
            else arr[..., 0]
        )
    return arr.astype(np.float32)


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(arr))[None, None]
    out = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out[0, 0].clamp(0, 1).numpy()


def image_folder_captions(
    folder,
    captions_csv,
    image_size: int = 28,
    test_fraction: float = 0.25,
    seed: int = 0,
    text_encoder: str = "auto",
    variants: int = 1,
    invert: bool | str = "auto",
    max_shift: int = 2,
    max_rotation: float = 10.0,
    noise: float = 0.05,
    max_len: int = 16,
) -> MultimodalDataset:
    """Images from ``folder`` paired with the captions in ``captions_csv`` (columns filename, caption,
    optional label).

    Args:
        folder: folder holding the images (PNG, JPG, anything the reader opens).
        captions_csv: CSV file; ``filename`` is relative to ``folder``.
        image_size: images are resized to (image_size, image_size), grayscale, [0, 1].
        test_fraction, seed: the seeded (stratified when labelled) split.
        text_encoder: "auto", "minilm" or "tokens".
        variants: captions per image; variants 1.. are text augmentations of the given caption
            (synonym substitution or word dropout).
        invert: True / False, or "auto": invert an image whose border is mostly light (dark ink on paper).
        max_shift, max_rotation, noise: image augmentation for ``batch``.
        max_len: token sequence length for "tokens".
    """
    import pandas as pd

    image_size = check_int("image_size", image_size, 4, 512)
    test_fraction = check_test_fraction(test_fraction)
    check_int("seed", seed, 0)
    variants = check_int("variants", variants, 1, 32)
    check_int("max_shift", max_shift, 0, max(1, image_size // 4))
    check_float("max_rotation", max_rotation, 0.0, 180.0)
    check_float("noise", noise, 0.0, 1.0)
    check_int("max_len", max_len, 1, 512)
    if invert not in (True, False, "auto"):
        raise ValueError(f"invert must be True, False or 'auto', got {invert!r}")
    folder = Path(folder).expanduser()
    csv = Path(captions_csv).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    if not csv.is_file():
        raise FileNotFoundError(f"captions CSV not found: {csv}")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("filename", "caption") if c not in table.columns]
    if missing:
        raise ValueError(
            f"{csv}: missing column(s) {', '.join(missing)}; found columns: {list(table.columns)}"
        )
    if len(table) < 2:
        raise ValueError(f"{csv}: needs at least 2 rows, got {len(table)}")
    has_label = "label" in table.columns
    read = _image_reader()
    root = folder.resolve()
    seen: dict[str, int] = {}
    images, texts, names = [], [], []
    for i, row in enumerate(table.itertuples(index=False)):
        where = f"{csv}, row {i + 1} (line {i + 2})"
        filename = str(row.filename).strip()
        if not filename:
            raise ValueError(f"{where}: empty filename")
        if filename in seen:
            raise ValueError(
                f"{where}: duplicate filename {filename!r}, first used in row {seen[filename] + 1}"
            )
        seen[filename] = i
        caption = " ".join(str(row.caption).split())
        if not caption:
            raise ValueError(f"{where}: empty caption for {filename!r}")
        image_path = (folder / filename).resolve()
        if not image_path.is_relative_to(root):
            raise ValueError(f"{where}: filename {filename!r} points outside {folder}")
        if not image_path.is_file():
            raise ValueError(f"{where}: image not found: {folder / filename}")
        try:
            arr = _to_gray(read(image_path))
        except Exception as err:
            raise ValueError(f"{where}: cannot read image {folder / filename}: {err}") from err
        if arr.ndim != 2 or min(arr.shape) < 1:
            raise ValueError(f"{where}: {folder / filename} is not a 2-D image (shape {arr.shape})")
        arr = _resize(np.clip(arr, 0, 1), image_size)
        if invert is True or (invert == "auto" and _border_mean(arr) > 0.5):
            arr = 1.0 - arr
        images.append(arr)
        texts.append(caption)
        if has_label:
            label = str(row.label).strip()
            if not label:
                raise ValueError(
                    f"{where}: empty label for {filename!r} (leave the column out, or fill every row)"
                )
            names.append(label)
    if has_label:
        if all(re.fullmatch(r"-?\d+", v) for v in names):
            class_names = sorted(set(names), key=int)
        else:
            class_names = sorted(set(names))
        lookup = {c: k for k, c in enumerate(class_names)}
        labels = np.array([lookup[v] for v in names], dtype=np.int64)
    else:
        class_names = []
        labels = np.full(len(texts), -1, dtype=np.int64)
    rng = np.random.default_rng(seed)
    captions = []
    for text in texts:
        row = [text]
        for _ in range(1, variants):
            new = text
            for _attempt in range(6):
                new = cap.augment_caption(text, rng)
                if new not in row:
                    break
            row.append(new)
        captions.append(row)
    prompt_texts = cap.prompt_texts(class_names) if class_names else []
    train, test = seeded_split(labels, test_fraction, seed)
    encoded, prompts, vocab, encoder = encode_captions(
        captions, prompt_texts, text_encoder, train, max_len=max_len, cache_key="image_folder"
    )
    return MultimodalDataset(
        name="image_folder_captions",
        images=torch.tensor(np.stack(images), dtype=torch.float32)[:, None],
        texts=encoded,
        captions=captions,
        labels=labels,
        class_names=class_names,
        prompts=prompts,
        prompt_texts=prompt_texts,
        train_index=train,
        test_index=test,
        text_encoder=encoder,
        vocab=vocab,
        image_augment=make_image_augment(max_shift, max_rotation, noise),
        info={
            "source": str(folder),
            "captions_csv": str(csv),
            "filenames": list(seen),
            "image_size": image_size,
            "labelled": has_label,
            "seed": seed,
            "test_fraction": test_fraction,
        },
    )


def _border_mean(arr: np.ndarray) -> float:
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    return float(border.mean())
