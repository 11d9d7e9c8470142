"""Paired in-memory datasets and the seeded batch sampling every run replays exactly.

A :class:`PairDataset` holds N paired rows ``(x_a[i], x_b[i])``: two modalities, or (``views=True``)
one input that is augmented twice per step. Every dataset here fits in memory, so batches are plain
index tensors into it and a run's sampling is a pure function of (seed, step): resuming a run replays
exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class PairDataset:
    """N paired rows of inputs.

    Attributes:
        name: dataset name.
        x_a, x_b: (N, ...) float tensors; for ``views`` datasets both are the same tensor.
        labels: (N,) int array or None.
        ids: (N,) int array of stable row ids.
        views: rows are one input seen through two random augmentations.
        augment: per-row augmentation applied at batch time (views datasets), or None.
        class_names: names of the label values, if any.
        captions: one text per row, if any.
        batch_sampler: optional ``(step, batch_size, seed) -> index`` replacing uniform epochs.
    """

    name: str
    x_a: Tensor
    x_b: Tensor
    labels: np.ndarray | None = None
    ids: np.ndarray | None = None
    views: bool = False
    augment: Augment | None = None
    class_names: list[str] | None = None
    captions: list[str] | None = None
    batch_sampler: Callable[[int, int, int], Tensor] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x_a.shape[0] != self.x_b.shape[0]:
            raise ValueError(
                f"x_a and x_b must have the same number of rows: {len(self.x_a)} vs {len(self.x_b)}"
            )
        if self.ids is None:
            self.ids = np.arange(len(self.x_a))
        if self.labels is not None and len(self.labels) != len(self.x_a):
            raise ValueError(f"labels has {len(self.labels)} rows, inputs have {len(self.x_a)}")

    def __len__(self) -> int:
        return self.x_a.shape[0]

    @property
    def in_dims(self) -> tuple[int, int]:
        return int(np.prod(self.x_a.shape[1:])), int(np.prod(self.x_b.shape[1:]))

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Inputs for the rows ``index``; views datasets draw two augmentations with ``generator``."""
        x_a, x_b = self.x_a[index], self.x_b[index]
        if self.augment is not None:
            x_a, x_b = self.augment(x_a, generator), self.augment(x_b, generator)
        return x_a, x_b


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A generator that depends only on (seed, step, stream), so a resumed run replays its randomness."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4 + stream)


def epoch_batch(step: int, batch_size: int, num_rows: int, seed: int) -> Tensor:
    """Rows of step ``step`` under shuffled epochs without replacement (last partial batch dropped)."""
    per_epoch = num_rows // batch_size
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(num_rows, generator=step_generator(seed, epoch, stream=1))
    return order[position * batch_size : (position + 1) * batch_size]


def sample_batch(dataset: PairDataset, step: int, batch_size: int, seed: int) -> Tensor:
    """The index of the batch that a run with ``seed`` uses at ``step``."""
    if dataset.batch_sampler is not None:
        return dataset.batch_sampler(step, batch_size, seed)
    return epoch_batch(step, batch_size, len(dataset), seed)
