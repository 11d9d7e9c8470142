"""The one call signature every loss shares, its input validation, and the anchor layouts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.losses._kernels import accumulation_dtype, row_logsumexp

NEGATIVES = ("views", "cross")


def check_positive(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or a positive integer, got {chunk_size!r}")
    return chunk_size


@dataclass
class AnchorBlock:
    """A set of anchor rows scored against a set of candidate columns.

    ``lse`` of row r runs over the columns of ``k`` except ``exclude[r]``; its positive is column
    ``pos_col[r]``. ``slot`` tells stateful losses which per-sample estimate a row belongs to.
    """

    q: Tensor
    k: Tensor
    pos_col: Tensor
    exclude: Tensor | None
    slot: int | Tensor

    @property
    def num_terms(self) -> int:
        """Columns each row's log-sum-exp runs over."""
        excluded = 0 if self.exclude is None else self.exclude.shape[1]
        return self.k.shape[0] - excluded


def anchor_blocks(a: Tensor, b: Tensor, negatives: str, include_positive: bool) -> list[AnchorBlock]:
    """Anchor layouts for the two ways of choosing negatives.

    ``views`` (SimCLR): 2B anchors ``[a; b]``, each against every other embedding of the batch;
    the positive of row r is row ``(r + B) mod 2B``. ``cross`` (CLIP): anchors ``a`` against columns
    ``b`` and anchors ``b`` against columns ``a``; the positive of row r is column r.
    """
    size = a.shape[0]
    rows = torch.arange(size, device=a.device)
    if negatives == "views":
        z = torch.cat([a, b])
        rows2 = torch.arange(2 * size, device=a.device)
        pos = (rows2 + size) % (2 * size)
        exclude = rows2[:, None] if include_positive else torch.stack([rows2, pos], dim=1)
        slot = (rows2 >= size).long()
        return [AnchorBlock(z, z, pos, exclude, slot)]
    exclude = None if include_positive else rows[:, None]
    return [AnchorBlock(a, b, rows, exclude, 0), AnchorBlock(b, a, rows, exclude, 1)]


def positive_logits(block: AnchorBlock, scale: Tensor) -> Tensor:
    return scale * (block.q * block.k[block.pos_col]).sum(dim=1).to(accumulation_dtype(block.q.dtype))


class ContrastiveLoss(nn.Module):
    """Base class: validates inputs, L2-normalises, resolves the scale, then calls ``_loss``.

    Every loss is called as ``loss(a, b, index=None, scale=None, bias=None)`` with raw (B, d)
    features and returns a scalar tensor. ``scale`` overrides ``1 / temperature`` (a learnable logit
    scale, clamped at ``max_scale`` as CLIP does); ``bias`` is only meaningful for SigLIP.

    Args:
        temperature: softmax temperature tau > 0.
        normalize: L2-normalise features inside the loss.
        chunk_size: if set, compute exactly in chunks of this many anchor rows so the similarity
            matrix is never held whole (memory linear in B).
        max_scale: clamp for a scale passed at call time (CLIP uses 100).
    """

    stateful: bool = False
    uses_bias: bool = False

    def __init__(
        self,
        temperature: float,
        normalize: bool = True,
        chunk_size: int | None = None,
        max_scale: float | None = 100.0,
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.normalize = bool(normalize)
        self.chunk_size = check_chunk_size(chunk_size)
        self.max_scale = None if max_scale is None else check_positive("max_scale", max_scale)

    # --- interface -----------------------------------------------------------------------------
    def forward(
        self,
        a: Tensor,
        b: Tensor,
        index: Tensor | None = None,
        scale: Tensor | float | None = None,
        bias: Tensor | float | None = None,
    ) -> Tensor:
        self._check_features(a, b)
        index = self._check_index(index, a.shape[0])
        if bias is not None and not self.uses_bias:
            raise ValueError(f"bias is only used by the siglip loss; {type(self).__name__} takes none")
        if self.normalize:
            a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        return self._loss(a, b, index, self._resolve_scale(scale, a), bias)

    def _loss(self, a: Tensor, b: Tensor, index: Tensor | None, scale: Tensor, bias) -> Tensor:
        raise NotImplementedError

    def global_objective(self) -> ContrastiveLoss:
        """The stateless loss whose value on the whole dataset (B = N) is this loss's target."""
        return self

    def log_normalizer(self, batch_size: int) -> float | None:
        """log of the number of terms in each anchor's partition sum at this batch size.

        Subtracting it turns a sum over the batch into a mean, so values at different batch sizes
        estimate the same global objective (used for the Jensen gap). None where that is not defined.
        """
        return None

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, normalize={self.normalize}, chunk_size={self.chunk_size}"

    # --- validation --------------------------------------------------------------------------------
    @staticmethod
    def _check_features(a: Tensor, b: Tensor) -> None:
        for name, x in (("a", a), ("b", b)):
            if not isinstance(x, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor of shape (B, d), got {type(x).__name__}")
            if x.ndim != 2:
                raise ValueError(f"{name} must have shape (B, d), got {tuple(x.shape)}")
            if not x.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
        if a.shape != b.shape:
            raise ValueError(
                f"a and b must have the same shape (B, d); got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        if a.shape[0] < 2:
            raise ValueError(f"batch size B must be >= 2 for a contrastive loss, got B={a.shape[0]}")
        if a.shape[1] < 1:
            raise ValueError("feature dimension d must be >= 1")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise ValueError("features a and b must be finite (found NaN or inf)")

    def _check_index(self, index: Tensor | None, batch_size: int) -> Tensor | None:
        if index is not None and not isinstance(index, Tensor):
            index = torch.as_tensor(index)
        return index

    def _resolve_scale(self, scale: Tensor | float | None, ref: Tensor) -> Tensor:
        dtype = accumulation_dtype(ref.dtype)
        if scale is None:
            return torch.tensor(1.0 / self.temperature, dtype=dtype, device=ref.device)
        scale = torch.as_tensor(scale, device=ref.device).to(dtype)
        if scale.numel() != 1:
            raise ValueError(f"scale must be a scalar, got shape {tuple(scale.shape)}")
        scale = scale.reshape(())
        if not torch.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be finite and > 0, got {scale.item()}")
        return scale if self.max_scale is None else scale.clamp(max=self.max_scale)


def logsumexp_terms(block: AnchorBlock, scale: Tensor, chunk_size: int | None) -> tuple[Tensor, Tensor]:
    """(positive logits, row log-sum-exp) of one anchor block."""
    return positive_logits(block, scale), row_logsumexp(block.q, block.k, scale, block.exclude, chunk_size)
