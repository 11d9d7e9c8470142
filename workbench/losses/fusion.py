"""The pre-training objectives of an ALBEF-style fusion model (Li et al., NeurIPS 2021).

* **ITC**, image-text contrastive: any registry loss (``workbench.losses.build_loss``) on the
  unimodal [CLS] embeddings, wrapped in :class:`~workbench.losses.structures.StructuredLoss` so the
  modality-structure regularizers (separation, bridge, consistency) apply exactly as for the two-tower
  model;
* **ITM**, image-text matching (:func:`itm_loss`): a two-way classifier on the fused [CLS] of the B
  positive pairs and 2B hard negatives: for every image a caption of the batch drawn with probability
  ``softmax(contrastive logits)`` over the captions that do not match it, and for every caption an
  image drawn the same way (:func:`sample_hard_negatives`);
* **MLM**, masked-token prediction conditioned on the image (:func:`mlm_loss`): 15% of the caption's
  word tokens are chosen (:func:`mask_tokens`); of those 80% become [MASK], 10% a random word, 10%
  stay, and the fusion encoder predicts the original words from the corrupted caption and the image.

:class:`FusionLoss` weighs the three: ``total = w_itc * L_itc(+structures) + w_itm * L_itm + w_mlm * L_mlm``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.losses._base import Sharding
from workbench.losses.structures import OUTPUT_KEYS, StructuredLoss
from workbench.validation import check_weights

OBJECTIVES = ("itc", "itm", "mlm")
IGNORE = -100
"""MLM target of a token that was not chosen (``F.cross_entropy``'s ``ignore_index``)."""

__all__ = [
    "IGNORE",
    "OBJECTIVES",
    "FusionLoss",
    "check_objective_weights",
    "itm_loss",
    "mask_tokens",
    "mlm_loss",
    "sample_hard_negatives",
]


def check_objective_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """Weights per objective (missing ones default to 1), each a finite number >= 0, not all 0.

    Raises:
        ValueError: an unknown objective or a bad weight, naming ``objective_weights[...]``.
    """
    out = check_weights("objective_weights", weights, OBJECTIVES, "objective", default=1.0)
    if not any(out.values()):
        raise ValueError("objective_weights are all 0: at least one of itc, itm, mlm must have weight > 0")
    return out


# --- image-text matching ----------------------------------------------------------------------------------
def sample_hard_negatives(logits: Tensor, uniforms: Tensor, exclude: Tensor) -> tuple[Tensor, Tensor]:
    """One hard negative column per row, drawn with probability ``softmax(logits[r])`` over the columns
    that ``exclude[r]`` leaves (ALBEF's sampler, made deterministic by pre-drawn uniforms).

    The draw is by inverse CDF: column ``j`` is picked when ``cdf[j-1] <= u * cdf[-1] < cdf[j]``, so an
    excluded column (probability exactly 0, its CDF step empty) can never be picked.

    Args:
        logits: (B, C) similarities (scaled); row r scores the candidates of anchor r.
        uniforms: (B,) numbers in [0, 1).
        exclude: (B, C) bool, True where a column is not a negative of the row (its positive, and any
            candidate identical to it).

    Returns:
        ``(index, valid)``: (B,) long column per row, and (B,) bool, False for a row whose every column is
        excluded (its index is then 0 and must not be used).
    """
    if logits.ndim != 2 or exclude.shape != logits.shape or uniforms.shape != logits.shape[:1]:
        raise ValueError(
            f"logits (B, C), exclude (B, C) and uniforms (B,) must agree; got {tuple(logits.shape)}, "
            f"{tuple(exclude.shape)}, {tuple(uniforms.shape)}"
        )
    allowed = ~exclude.bool()
    valid = allowed.any(dim=1)
    masked = logits.detach().double().masked_fill(~allowed, -math.inf)
    masked = torch.where(valid[:, None], masked, torch.zeros_like(masked))
    probs = torch.softmax(masked, dim=1) * allowed  # rows without any allowed column: all zero
    cdf = probs.cumsum(dim=1)
    target = uniforms.double().clamp(0.0, 1.0) * cdf[:, -1]
    index = torch.searchsorted(cdf, target[:, None], right=True).squeeze(1)
    # round-off can put the target at the very top of the CDF: fall back to the last allowed column
    columns = torch.arange(logits.shape[1], device=logits.device)
    last = torch.where(allowed, columns, torch.full_like(columns, -1)).max(dim=1).values
    index = torch.minimum(index, last.clamp_min(0))
    return torch.where(valid, index, torch.zeros_like(index)), valid


def itm_loss(
    logits: Tensor,
    labels: Tensor,
    valid: Tensor | None = None,
    count: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Mean two-way cross-entropy of the matching head over the valid pairs.

    Args:
        logits: (N, 2) matching logits (column 1 = match).
        labels: (N,) 1 for a matching pair, 0 for a negative.
        valid: (N,) bool; pairs marked False are left out (None keeps every pair).
        count: turns this process's number of pairs into the divisor (see :func:`_local_divisor`);
            None divides by the local number.
    """
    if logits.ndim != 2 or logits.shape[1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (N, 2) and labels (N,), got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    losses = F.cross_entropy(logits.float(), labels.long(), reduction="none")
    if valid is None:
        valid = torch.ones_like(losses, dtype=torch.bool)
    valid = valid.bool()
    pairs = valid.sum().to(losses.dtype)
    return (losses * valid).sum() / (count(pairs) if count is not None else pairs).clamp_min(1)


# --- masked-token prediction ---------------------------------------------------------------------------
def mask_tokens(
    ids: Tensor,
    generator: torch.Generator,
    mask_id: int,
    random_range: tuple[int, int],
    probability: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """BERT's corruption of a batch of token ids for masked-token prediction.

    Every word token (id > 0, position > 0: position 0 holds [CLS], id 0 pads) is chosen with
    ``probability``; a chosen token becomes ``mask_id`` with probability 0.8, a uniform random id in
    ``random_range = [low, high)`` with 0.1, and stays with 0.1. Three tensors of random numbers are
    always drawn, in a fixed order, so equal generators give equal masks.

    Returns:
        ``(corrupted ids, targets)``: targets hold the original id where chosen, :data:`IGNORE` elsewhere.
    """
    if not 0 < probability < 1:
        raise ValueError(f"mask probability must be in (0, 1), got {probability!r}")
    low, high = random_range
    if not 0 < low < high:
        raise ValueError(f"random_range must be 0 < low < high, got {random_range!r}")
    choose = torch.rand(ids.shape, generator=generator)
    kind = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(low, high, ids.shape, generator=generator)
    words = ids > 0
    words[:, 0] = False
    chosen = words & (choose.to(ids.device) < probability)
    kind = kind.to(ids.device)
    corrupted = torch.where(chosen & (kind < 0.8), torch.full_like(ids, mask_id), ids)
    corrupted = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids.to(ids.device), corrupted)
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return corrupted, targets


def mlm_loss(logits: Tensor, targets: Tensor, count: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """Mean cross-entropy over the chosen tokens (targets != :data:`IGNORE`); 0 (with a gradient path)
    when no token was chosen.

    Args:
        logits: (B, L, V) predictions for every position.
        targets: (B, L) original ids at the chosen positions, :data:`IGNORE` elsewhere.
        count: turns this process's number of chosen tokens into the divisor (see
            :func:`_local_divisor`); None divides by the local number.
    """
    if logits.ndim != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"logits must be (B, L, V) and targets (B, L), got {tuple(logits.shape)}, {tuple(targets.shape)}"
        )
    # a sum over every position (ignored ones add 0) keeps the shapes fixed: no host read of the count
    losses = F.cross_entropy(
        logits.float().flatten(0, 1), targets.long().flatten(), ignore_index=IGNORE, reduction="sum"
    )
    chosen = (targets != IGNORE).sum().to(losses.dtype)
    return losses / (count(chosen) if count is not None else chosen).clamp_min(1)


def _local_divisor(sharding: Sharding | None) -> Callable[[Tensor], Tensor] | None:
    """Under torch.distributed, the divisor that makes DDP's mean of the per-process losses the mean
    over the global batch: (sum of the counts over processes) / world size. None in one process."""
    if sharding is None:
        return None
    return lambda local: sharding.gather(local.detach().reshape(1)).sum() / sharding.world_size


# --- all three ----------------------------------------------------------------------------------------------
class FusionLoss(nn.Module):
    """``w_itc * L_itc + w_itm * L_itm + w_mlm * L_mlm``, where ``L_itc`` is the structured contrastive
    loss (the base loss plus any weighted regularizers: the two-tower model's whole objective).

    Args:
        itc: the structured contrastive loss on the unimodal embeddings.
        weights: objective -> weight (see :func:`check_objective_weights`).

    Raises:
        ValueError: bad weights, or regularizers while ``itc`` has weight 0 (they are part of that term).
    """

    def __init__(self, itc: StructuredLoss, weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.weights = check_objective_weights(weights)
        if self.weights["itc"] == 0 and any(itc.weights.values()):
            raise ValueError(
                "the structure regularizers are part of the itc term: give objective_weights['itc'] > 0 "
                "or drop structure"
            )
        self.itc = itc

    @property
    def requires(self) -> set[str]:
        """The model outputs a forward call needs (``FusionModel.forward`` keys)."""
        keys = {"img", "txt"}
        if self.weights["itc"] > 0:
            keys |= self.itc.requires | self.itc.optional
        if self.weights["itm"] > 0:
            keys.add("itm")
        if self.weights["mlm"] > 0:
            keys.add("mlm")
        return keys

    def forward(
        self,
        outputs: Mapping[str, Tensor],
        mlm_targets: Tensor | None = None,
        index: Tensor | None = None,
        scale: Tensor | None = None,
        sharding: Sharding | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted total and its detached parts (0-dim tensors): ``itc`` (the base contrastive
        loss), each active regularizer under its name (as :class:`StructuredLoss` logs it), ``itm``,
        ``mlm``, ``total``.

        Under torch.distributed (``sharding`` given; ``outputs`` hold this process's rows, ``index``
        the global batch's), the contrastive term is computed on the gathered embeddings, whole, on
        every process, and matching and masked-token prediction on the local rows divided by the
        global count over the world size, so that DDP's mean of the per-process gradients is the
        single-process gradient. The local parts of ``itm`` and ``mlm`` then average, over
        processes, to the global ones.
        """
        total = outputs["img"].new_zeros(()).float()
        parts: dict[str, Tensor] = {}
        count = _local_divisor(sharding)
        if self.weights["itc"] > 0:
            gather = sharding.gather if sharding is not None else (lambda x: x)
            views = {
                key: gather(value.float()) for key, value in sorted(outputs.items()) if key in OUTPUT_KEYS
            }
            structured, itc_parts = self.itc(views, index=index, scale=scale)
            total = total + self.weights["itc"] * structured
            itc_parts = dict(itc_parts)
            itc_parts.pop("total")
            parts["itc"] = itc_parts.pop("base")
            parts.update(itc_parts)
        if self.weights["itm"] > 0:
            itm = itm_loss(outputs["itm_logits"], outputs["itm_labels"], outputs.get("itm_valid"), count)
            total = total + self.weights["itm"] * itm
            parts["itm"] = itm.detach()
        if self.weights["mlm"] > 0:
            if mlm_targets is None:
                raise ValueError("mlm has weight > 0 but no mlm_targets were given")
            mlm = mlm_loss(outputs["mlm_logits"], mlm_targets, count)
            total = total + self.weights["mlm"] * mlm
            parts["mlm"] = mlm.detach()
        parts["total"] = total.detach()
        return total, parts
