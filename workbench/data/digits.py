"""sklearn's bundled 8x8 digits as a unimodal two-view dataset (SimCLR-style)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from workbench.data.base import PairDataset


def shift_and_noise(
    images: Tensor, generator: torch.Generator | None, max_shift: int = 1, noise: float = 0.1
):
    """Random integer translation by up to ``max_shift`` pixels (zero padded) plus Gaussian noise."""
    size = images.shape[-1]
    padded = torch.nn.functional.pad(images, (max_shift,) * 4)
    shifts = torch.randint(0, 2 * max_shift + 1, (images.shape[0], 2), generator=generator)
    rows = (shifts[:, 0, None] + torch.arange(size))[:, :, None]
    cols = (shifts[:, 1, None] + torch.arange(size))[:, None, :]
    out = padded[torch.arange(images.shape[0])[:, None, None], rows, cols]
    return out + noise * torch.randn(out.shape, generator=generator)


def digits_views(max_shift: int = 1, noise: float = 0.1) -> PairDataset:
    """The 1,797 digits, pixel values scaled to [0, 1], seen through two random augmentations."""
    from sklearn.datasets import load_digits

    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or not 0 <= max_shift <= 3:
        raise ValueError(f"max_shift must be an integer in [0, 3], got {max_shift!r}")
    if not 0 <= noise <= 1:
        raise ValueError(f"noise must be in [0, 1], got {noise!r}")
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32)
    return PairDataset(
        name="digits_views",
        x_a=images,
        x_b=images,
        labels=digits.target.astype(np.int64),
        views=True,
        augment=lambda x, g: shift_and_noise(x, g, max_shift, noise),
        class_names=[str(d) for d in range(10)],
    )
