"""Decoupled contrastive loss (DCL) and its weighted form (DCLW)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workbench.losses._base import NEGATIVES, ContrastiveLoss
from workbench.losses.kernels.chunked import accumulation_dtype
from workbench.validation import check_choice, check_positive


class DCLLoss(ContrastiveLoss):
    """Decoupled contrastive loss: InfoNCE with the positive removed from the denominator.

    ``l_i = -w_i * s_pos / tau + log sum_{k in negatives(i)} exp(s_ik / tau)``, mean over anchors, with
    ``w_i = 1`` (DCL). With ``negatives="views"`` (default, as lightly) the 2B embeddings of both
    views are anchors and each one's negatives are the other 2B - 2; with ``negatives="cross"`` the
    anchors of one modality are scored only against the other modality.

    Reference: Yeh et al., "Decoupled Contrastive Learning", ECCV 2022.

    Args:
        temperature: tau > 0 (lightly default 0.1).
        negatives: "views" or "cross".
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
        validate: check tensor values on every call (see ``ContrastiveLoss``); False in training.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        negatives: str = "views",
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(temperature, normalize, chunk_size, implementation=implementation, validate=validate)
        self.negatives = check_choice("negatives", negatives, NEGATIVES)

    def positive_weights(self, a: Tensor, b: Tensor) -> Tensor | None:
        return None

    def _loss(self, a: Tensor, b: Tensor, index, scale: Tensor, bias) -> Tensor:
        weights = self.positive_weights(a, b)
        losses = []
        for block, pos, lse in self.layout_terms(a, b, self.negatives, False, scale):
            if weights is not None:
                # every row of a block is one pair; views blocks hold each pair twice
                pos = pos * weights[block.anchor_rows() % weights.shape[0]]
            losses.append((lse - pos).mean())
        return sum(losses) / len(losses)

    def log_normalizer(self, batch_size: int) -> float:
        return math.log(2 * batch_size - 2 if self.negatives == "views" else batch_size - 1)


class DCLWLoss(DCLLoss):
    """Weighted DCL: the positive term is weighted by a negative von Mises-Fisher weight.

    ``w_i = 2 - B * softmax_i(<a_i, b_i> / sigma)`` (computed without gradient), so pairs that are
    already close get less pull. Same convention as lightly's ``DCLWLoss``.

    Reference: Yeh et al., "Decoupled Contrastive Learning", ECCV 2022.

    Args:
        temperature: tau > 0 (lightly default 0.1).
        sigma: width of the weighting > 0 (default 0.5).
        negatives: "views" or "cross".
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
        validate: check tensor values on every call (see ``ContrastiveLoss``); False in training.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sigma: float = 0.5,
        negatives: str = "views",
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(temperature, negatives, normalize, chunk_size, implementation, validate)
        self.sigma = check_positive("sigma", sigma)

    def positive_weights(self, a: Tensor, b: Tensor) -> Tensor:
        with torch.no_grad():
            similarity = (a * b).sum(dim=1).to(accumulation_dtype(a.dtype)) / self.sigma
            return 2.0 - a.shape[0] * torch.softmax(similarity, dim=0)
