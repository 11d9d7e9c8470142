"""Datasets as in-memory paired inputs, and the registry the trainer builds them from.

A :class:`PairDataset` holds N paired rows ``(x_a[i], x_b[i])``: two modalities, or (``views=True``)
one input that is augmented twice per step; a ``MultimodalDataset`` holds images, captions and
prompts for two-tower training. Every dataset here fits in memory, so batches are plain index tensors
into it and a run's sampling is a pure function of (seed, step): resuming a run replays exactly the
batches it would have seen.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from workbench.data.base import Augment, PairDataset, epoch_batch, sample_batch, step_generator
from workbench.data.digits import digits_views
from workbench.data.multimodal import MultimodalDataset, digits_captions, infogap, mnist_captions
from workbench.data.synthetic import make_synthetic
from workbench.data.userdata import image_folder_captions, user_embeddings

__all__ = [
    "Augment",
    "MultimodalDataset",
    "PairDataset",
    "build_dataset",
    "dataset_kind",
    "dataset_names",
    "dataset_parameters",
    "epoch_batch",
    "sample_batch",
    "step_generator",
]


def dataset_names() -> list[str]:
    return list(_BUILDERS)


def dataset_kind(name: str) -> str:
    """``"pairs"`` (a :class:`PairDataset`) or ``"image_text"`` (a ``MultimodalDataset``), unbuilt."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(_BUILDERS)}")
    return "pairs" if name in _PAIR_DATASETS else "image_text"


def dataset_parameters(name: str) -> set[str]:
    """The keyword parameters a registered dataset's builder takes (its ``dataset_params``)."""
    dataset_kind(name)  # an unknown name raises, naming the known ones
    return set(inspect.signature(_BUILDERS[name]).parameters)


def build_dataset(name: str, **params):
    """Build a registered dataset (``dataset_names()``) with its keyword parameters.

    Returns a :class:`PairDataset` (``synthetic``, ``digits_views``) or a
    ``workbench.data.multimodal.MultimodalDataset`` (``digits_captions``, ``mnist_captions``,
    ``infogap``, ``image_folder_captions``, ``user_embeddings``).
    """
    allowed = dataset_parameters(name)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"dataset_params has unknown key(s) {unknown} for dataset {name!r}; allowed: {sorted(allowed)}"
        )
    return _BUILDERS[name](**params)


_PAIR_DATASETS = ("synthetic", "digits_views")
# two-view / paired datasets (PairDataset), then image-text datasets (MultimodalDataset)
_BUILDERS: dict[str, Callable] = {
    "synthetic": make_synthetic,
    "digits_views": digits_views,
    "digits_captions": digits_captions,
    "mnist_captions": mnist_captions,
    "infogap": infogap,
    "image_folder_captions": image_folder_captions,
    "user_embeddings": user_embeddings,
}
