"""SimCLR's NT-Xent loss."""

from __future__ import annotations

import math

from torch import Tensor

from workbench.losses._base import ContrastiveLoss


class NTXentLoss(ContrastiveLoss):
    """Normalised temperature-scaled cross entropy (SimCLR).

    The 2B embeddings ``[a; b]`` are all anchors; the positive of ``a_i`` is ``b_i`` (and vice versa)
    and the negatives are the other 2B - 2 embeddings of both views. The loss is the mean over the
    2B anchors of ``-s_pos / tau + log sum_{k != self} exp(s_k / tau)``. Same convention as lightly's
    ``NTXentLoss`` and pytorch-metric-learning's ``SelfSupervisedLoss(NTXentLoss)``.

    Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020.

    Args:
        temperature: tau > 0 (SimCLR / lightly default 0.5).
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
        validate: check tensor values on every call (see ``ContrastiveLoss``); False in training.
    """

    def __init__(
        self,
        temperature: float = 0.5,
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(temperature, normalize, chunk_size, implementation=implementation, validate=validate)

    def _loss(self, a: Tensor, b: Tensor, index, scale: Tensor, bias) -> Tensor:
        ((_, pos, lse),) = self.layout_terms(a, b, "views", True, scale)
        return (lse - pos).mean()

    def log_normalizer(self, batch_size: int) -> float:
        return math.log(2 * batch_size - 1)
