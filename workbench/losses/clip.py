"""CLIP's symmetric cross-modal InfoNCE loss."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workbench.losses._base import ContrastiveLoss
from workbench.validation import check_bool


class ClipLoss(ContrastiveLoss):
    """Symmetric InfoNCE between two modalities: ``(CE(S / tau, I) + CE(S^T / tau, I)) / 2``, S = A B^T.

    Negatives of ``a_i`` are the other ``b_j`` of the batch and vice versa; the positive stays in the
    denominator. A learnable logit scale can be passed at call time (``loss(a, b, scale=s)``) and is
    clamped at 100 as CLIP does. Matches open_clip's ``ClipLoss`` (single process).

    Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", ICML 2021; the loss itself is van den Oord et al.'s InfoNCE (2018).

    Args:
        temperature: tau > 0 used when no scale is passed (CLIP initialises 1/tau at 1/0.07).
        symmetric: average image-to-text and text-to-image; False keeps only a -> b (one-way InfoNCE).
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
        max_scale: clamp for a scale passed at call time.
        validate: check tensor values on every call (see ``ContrastiveLoss``); False in training.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        symmetric: bool = True,
        normalize: bool = True,
        chunk_size: int | None = None,
        max_scale: float = 100.0,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(temperature, normalize, chunk_size, max_scale, implementation, validate)
        self.symmetric = check_bool("symmetric", symmetric)

    def _loss(self, a: Tensor, b: Tensor, index, scale: Tensor, bias) -> Tensor:
        terms = self.layout_terms(a, b, "cross", True, scale, one_way=not self.symmetric)
        # both directions share the positives: the mean of [lse_rows; lse_cols] - positive in three
        # operations (at B = 256 each costs about what its arithmetic does)
        positive = terms[0][1]
        return torch.stack([lse for _, _, lse in terms]).sub_(positive).mean()

    def log_normalizer(self, batch_size: int) -> float:
        return math.log(batch_size)
