"""The one call signature every loss shares, its input validation, and the anchor layouts."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from workbench.losses.kernels.blocks import cross_logsumexp, views_logsumexp
from workbench.losses.kernels.chunked import (
    DEFAULT_CHUNK_SIZE,
    accumulation_dtype,
    check_implementation,
    fused_cross_logsumexp,
    fused_row_terms,
    resolve_implementation,
    row_logsumexp,
)
from workbench.validation import check_bool, check_int, check_positive
from workbench.validation import check_choice as check_choice  # re-exported for the loss modules

NEGATIVES = ("views", "cross")


def check_chunk_size(chunk_size: int | None) -> int | None:
    return check_int("chunk_size", chunk_size, minimum=1, allow_none=True)


@dataclass(frozen=True)
class Sharding:
    """How one batch is split over processes (torch.distributed): this process's share and the gather.

    The global batch of ``B`` rows is the concatenation, in rank order, of every process's ``B /
    world_size`` rows. A loss called under :meth:`ContrastiveLoss.sharded` scores only this process's
    anchors, against the columns of the whole gathered batch.

    Attributes:
        rank: this process's position in the group.
        world_size: number of processes (each passes the same number of rows).
        gather: concatenates every process's tensor along dim 0 in rank order and backpropagates the
            sum over processes of the gradients of each process's rows (as
            ``torch.distributed.nn.functional.all_gather`` does; see
            ``workbench.training.distributed.gather_with_grad``).
    """

    rank: int
    world_size: int
    gather: Callable[[Tensor], Tensor]


@dataclass
class AnchorBlock:
    """A set of anchor rows scored against a set of candidate columns.

    ``lse`` of row r runs over the columns of ``k`` except ``exclude[r]``; its positive is column
    ``pos_col[r]``. ``slot`` tells stateful losses which per-sample estimate a row belongs to.
    ``rows`` numbers the anchors within the layout's full set of anchor rows (2B for "views", B per
    "cross" block); None means all of them in order. Under a :class:`Sharding` a block holds only this
    process's anchors, so ``rows`` says where they sit.
    """

    q: Tensor
    k: Tensor
    pos_col: Tensor
    exclude: Tensor | None
    slot: int | Tensor
    rows: Tensor | None = None

    def anchor_rows(self) -> Tensor:
        """``rows``, or ``0 .. M-1`` when the block holds every anchor."""
        if self.rows is None:
            return torch.arange(self.q.shape[0], device=self.q.device)
        return self.rows

    @property
    def num_terms(self) -> int:
        """Columns each row's log-sum-exp runs over."""
        excluded = 0 if self.exclude is None else self.exclude.shape[1]
        return self.k.shape[0] - excluded


def anchor_blocks(
    a: Tensor, b: Tensor, negatives: str, include_positive: bool, local: slice | None = None
) -> list[AnchorBlock]:
    """Anchor layouts for the two ways of choosing negatives.

    ``views`` (SimCLR): 2B anchors ``[a; b]``, each against every other embedding of the batch;
    the positive of row r is row ``(r + B) mod 2B``. ``cross`` (CLIP): anchors ``a`` against columns
    ``b`` and anchors ``b`` against columns ``a``; the positive of row r is column r.

    Args:
        a, b: the (B, d) features of the whole (global) batch.
        negatives: "views" or "cross".
        include_positive: keep the positive in each row's log-sum-exp (else it is excluded too).
        local: the batch rows whose anchors to build, ``slice(start, stop)`` (a process's shard);
            None builds every anchor. The columns are always the whole batch, so positive columns and
            exclusions are global indices (offset by ``start``); for "views" the anchors are
            ``a[local]`` and ``b[local]`` (rows ``start..stop-1`` and ``B+start..B+stop-1``).
    """
    size = a.shape[0]
    start, stop = (0, size) if local is None else (local.start, local.stop)
    if not 0 <= start < stop <= size:
        raise ValueError(f"local must be a non-empty slice of the {size} batch rows, got {local!r}")
    mine = torch.arange(start, stop, device=a.device)
    if negatives == "views":
        z = torch.cat([a, b])
        rows = torch.cat([mine, mine + size])
        pos = (rows + size) % (2 * size)
        exclude = rows[:, None] if include_positive else torch.stack([rows, pos], dim=1)
        slot = (rows >= size).long()
        q = z if local is None else torch.cat([a[local], b[local]])
        return [AnchorBlock(q, z, pos, exclude, slot, rows)]
    exclude = None if include_positive else mine[:, None]
    q_a, q_b = (a, b) if local is None else (a[local], b[local])
    return [AnchorBlock(q_a, b, mine, exclude, 0, mine), AnchorBlock(q_b, a, mine, exclude, 1, mine)]


class _UnitRows(torch.autograd.Function):
    """``x / max(|x_r|, eps)`` row by row, as ``F.normalize``, with a four-operation backward pass.

    Autograd of the composed formula makes about twenty (B, d) operations (the division's two
    gradients, the norm's, the clamp's); on a CPU each is a parallel region, which on a loaded machine
    costs more than its arithmetic. Several matrices go through one call: one graph node instead of
    one each (at B = 256 a node's own cost is about that of its arithmetic).
    """

    @staticmethod
    def forward(ctx, eps: float, *xs):
        ctx.set_materialize_grads(False)  # the norms take no gradient: none is built for them
        ys, norms, saved = [], [], []
        for x in xs:
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
            denominator = norm.clamp_min(eps)
            ys.append(x / denominator)
            norms.append(norm)
            saved += [ys[-1], denominator, norm < eps]
        ctx.mark_non_differentiable(*norms)
        ctx.save_for_backward(*saved)
        return (*ys, *norms)

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        out = [None]  # eps
        for i, grad_y in enumerate(grads[: len(saved) // 3]):
            if grad_y is None:
                out.append(None)
                continue
            y, denominator, clamped = saved[3 * i : 3 * i + 3]
            # d(x / |x|) = (g - y <y, g>) / |x|; where the norm is clamped the denominator is constant
            dot = torch.linalg.vecdot(grad_y, y, dim=1)[:, None].masked_fill_(clamped, 0.0)
            out.append(torch.addcmul(grad_y, y, dot, value=-1.0).div_(denominator))
        return tuple(out)


def unit_rows(*xs: Tensor, eps: float = 1e-12) -> list[tuple[Tensor, Tensor]]:
    """``[(x / max(|x_r|, eps), |x_r|), ...]`` for each x: unit rows (``F.normalize``) and row norms.

    The norms take no gradient. All matrices go through one autograd node.
    """
    out = _UnitRows.apply(eps, *xs)
    return list(zip(out[: len(xs)], out[len(xs) :], strict=True))


def positive_logits(block: AnchorBlock, scale: Tensor) -> Tensor:
    # products and sum in float32 for half inputs, like the log-sum-exp: rounding the positive logit
    # to bfloat16 alone would bias lse - positive by up to scale * 2^-9
    acc = accumulation_dtype(block.q.dtype)
    return scale * (block.q.to(acc) * block.k[block.pos_col].to(acc)).sum(dim=1)


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
        implementation: how the similarity matrix is reduced: "naive" (materialised), "chunked"
            (``chunk_size`` rows at a time; 1024 if unset), "fused" (Triton kernels, never
            materialised), or "auto" (fused for CUDA tensors where Triton is installed, else chunked
            if ``chunk_size`` is set, else naive). See ``workbench.losses.kernels``.
        validate: check tensor *values* on every call (features finite, ``index`` in range and
            without repeats, a passed ``scale`` finite and > 0, a passed ``bias`` finite). Each such
            check reads a value on the host, which on CUDA waits for the device: a training loop
            builds its loss with ``validate=False`` and checks the loss value now and then instead
            (``workbench.losses.check_finite_loss``). Shape and dtype checks always run (they read
            no values).

    Multi-process training: inside ``with loss.sharded(sharding):`` each process passes its own shard
    of the batch (and of ``index``); the loss gathers every process's features with their gradient,
    scores this process's anchors against all gathered columns, and averages over its anchors, as
    open_clip's ``local_loss=True, gather_with_grad=True`` mode does. The mean over processes of the
    returned values is the single-process loss of the whole batch, and under DDP's gradient averaging
    the parameter gradient is the single-process one. Stateful losses update every row's state on every
    process, so the state stays identical everywhere.
    """

    stateful: bool = False
    uses_bias: bool = False
    # Set only inside ``sharded()``, so nothing outside a training step (an evaluation on one process,
    # say) ever waits on a collective.
    sharding: Sharding | None = None
    _local: slice | None = None
    _logit_bound: float | None = None  # set by each call (see forward)

    def __init__(
        self,
        temperature: float,
        normalize: bool = True,
        chunk_size: int | None = None,
        max_scale: float | None = 100.0,
        implementation: str = "auto",
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.temperature = check_positive("temperature", temperature)
        self.normalize = check_bool("normalize", normalize)
        self.chunk_size = check_chunk_size(chunk_size)
        self.implementation = check_implementation(implementation, self.chunk_size)
        self.max_scale = None if max_scale is None else check_positive("max_scale", max_scale)
        self.validate = check_bool("validate", validate)

    # --- interface -----------------------------------------------------------------------------
    def forward(
        self,
        a: Tensor,
        b: Tensor,
        index: Tensor | None = None,
        scale: Tensor | float | None = None,
        bias: Tensor | float | None = None,
    ) -> Tensor:
        sharding = self.sharding if self.sharding is not None and self.sharding.world_size > 1 else None
        self._check_features(a, b, min_rows=2 if sharding is None else 1, values=False)
        index = self._check_index(index, a.shape[0])
        if bias is not None and not self.uses_bias:
            raise ValueError(f"bias is only used by the siglip loss; {type(self).__name__} takes none")
        if self.normalize:
            # F.normalize, with the row norms at hand: a NaN or inf feature makes its row's norm
            # non-finite, so the value check reads one number instead of scanning both matrices
            (a, norm_a), (b, norm_b) = unit_rows(a, b)
            if self.validate and not torch.isfinite(norm_a.sum() + norm_b.sum()):
                self._check_features(a, b, values=True)  # or only huge finite features: scan them
        elif self.validate:
            self._check_features(a, b, values=True)
        # A bound on |logit| known without reading a tensor: unit features give logits in
        # [-scale, scale] (up to rounding: the margin), the scale the constructor's or at most max_scale.
        bound = 1.0 / self.temperature if scale is None else self.max_scale
        self._logit_bound = bound * (1 + 1e-4) if self.normalize and bound is not None else None
        scale = self._resolve_scale(scale, a)
        if sharding is None:
            return self._loss(a, b, index, scale, bias)
        return self._sharded_loss(a, b, index, scale, bias, sharding)

    def _sharded_loss(
        self, a: Tensor, b: Tensor, index: Tensor | None, scale: Tensor, bias, sharding: Sharding
    ) -> Tensor:
        rows = a.shape[0]
        # The losses see the whole batch and build only this process's anchors (``_local``).
        a, b = sharding.gather(a), sharding.gather(b)
        if a.shape[0] < 2:
            raise ValueError(f"the global batch size must be >= 2 for a contrastive loss, got {a.shape[0]}")
        if index is not None:
            index = self._check_index(sharding.gather(index), a.shape[0])
        self._local = slice(sharding.rank * rows, (sharding.rank + 1) * rows)
        try:
            return self._loss(a, b, index, scale, bias)
        finally:
            self._local = None

    def _loss(self, a: Tensor, b: Tensor, index: Tensor | None, scale: Tensor, bias) -> Tensor:
        """The loss of the anchors of this call (all rows, or this process's share under a sharding)
        scored against the whole batch ``a``, ``b`` (normalised; gathered from every process)."""
        raise NotImplementedError

    @contextmanager
    def sharded(self, sharding: Sharding | None) -> Iterator[ContrastiveLoss]:
        """Within the block, calls compute this process's share of a batch split over processes.

        Args:
            sharding: this process's rank, the world size and the differentiable gather
                (``workbench.training.distributed.loss_sharding()``); None (or a world of 1) leaves calls
                single-process.
        """
        previous = self.sharding
        self.sharding = sharding
        try:
            yield self
        finally:
            self.sharding = previous

    def anchor_blocks(
        self, a: Tensor, b: Tensor, negatives: str, include_positive: bool
    ) -> list[AnchorBlock]:
        """:func:`anchor_blocks` of this call's anchors: every row, or this process's under a sharding."""
        return anchor_blocks(a, b, negatives, include_positive, self._local)

    def layout_terms(
        self,
        a: Tensor,
        b: Tensor,
        negatives: str,
        include_positive: bool,
        scale: Tensor,
        one_way: bool = False,
    ) -> list[tuple[AnchorBlock, Tensor, Tensor]]:
        """``(block, positive logits, row log-sum-exp)`` of each anchor block of this call's layout.

        The torch paths (naive, chunked) reduce one similarity matrix per layout
        (``workbench.losses.kernels.blocks``): for "cross" the a -> b rows and the b -> a rows are
        the rows and columns of one ``A B^T``. The fused kernels, and two-view anchors under a
        sharding, go block by block (``workbench.losses.kernels.chunked.row_logsumexp``).

        Args:
            a, b: normalised (B, d) features of the whole batch.
            negatives: "views" or "cross".
            include_positive: keep each anchor's positive in its log-sum-exp.
            scale: 0-dim inverse temperature.
            one_way: "cross" only: just the a -> b block.
        """
        blocks = self.anchor_blocks(a, b, negatives, include_positive)
        if one_way:
            blocks = blocks[:1]
        implementation = resolve_implementation(self.implementation, self.chunk_size, a, b)
        exclude = not include_positive
        whole_cross = negatives == "cross" and not exclude and not one_way and self._local is None
        if implementation == "fused" and whole_cross:
            # both directions of one matrix (symmetric CLIP): one backward pass over the tiles
            rows, cols, positive = fused_cross_logsumexp(a, b, scale, self._logit_bound)
            return [(block, positive, lse) for block, lse in zip(blocks, (rows, cols), strict=True)]
        if implementation == "fused" or (negatives == "views" and self._local is not None):
            return [
                (block, *logsumexp_terms(block, scale, self.chunk_size, implementation)) for block in blocks
            ]
        chunk_size = None if implementation == "naive" else self.chunk_size or DEFAULT_CHUNK_SIZE
        if negatives == "views":
            (block,) = blocks
            lse, positive = views_logsumexp(
                block.q, scale, exclude_positive=exclude, chunk_size=chunk_size, bound=self._logit_bound
            )
            return [(block, positive, lse)]
        if self._local is None:
            # one matrix: its rows are the a -> b anchors, its columns the b -> a ones; the positive
            # logits <a_i, b_i> (its diagonal) are the same for both
            rows, cols, positive = cross_logsumexp(
                a,
                b,
                scale,
                exclude_positive=exclude,
                columns=not one_way,
                chunk_size=chunk_size,
                bound=self._logit_bound,
            )
            return [
                (block, positive, lse) for block, lse in zip(blocks, (rows, cols)[: len(blocks)], strict=True)
            ]
        out = []
        for block in blocks:  # this process's rows of each direction, positives at column start + r
            lse, _, positive = cross_logsumexp(
                block.q, block.k, scale, offset=self._local.start, exclude_positive=exclude,
                columns=False, chunk_size=chunk_size, bound=self._logit_bound,
            )  # fmt: skip
            out.append((block, positive, lse))
        return out

    def local_rows(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows of x that are this call's anchors, their positions in the batch)``."""
        if self._local is None:
            return x, torch.arange(x.shape[0], device=x.device)
        return x[self._local], torch.arange(self._local.start, self._local.stop, device=x.device)

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
        return (
            f"temperature={self.temperature}, normalize={self.normalize}, chunk_size={self.chunk_size}, "
            f"implementation={self.implementation!r}" + ("" if self.validate else ", validate=False")
        )

    # --- validation --------------------------------------------------------------------------------
    @staticmethod
    def _check_features(a: Tensor, b: Tensor, min_rows: int = 2, values: bool = True) -> None:
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
        if a.shape[0] < min_rows:
            raise ValueError(f"batch size B must be >= {min_rows} for a contrastive loss, got B={a.shape[0]}")
        if a.shape[1] < 1:
            raise ValueError("feature dimension d must be >= 1")
        if values and not (torch.isfinite(a).all() and torch.isfinite(b).all()):
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
        if self.validate and not (torch.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale.item()}")
        return scale if self.max_scale is None else scale.clamp(max=self.max_scale)


def check_finite_loss(value: Tensor | float, step: int | None = None) -> float:
    """Read a loss value on the host once and check that it is finite.

    A training loop that builds its loss with ``validate=False`` never reads a tensor in a step; it
    accumulates the detached losses on the device (``total = total + loss.detach()``) and calls this
    once per logging interval: one synchronisation, and a NaN or inf anywhere in the interval
    makes the sum non-finite.

    Args:
        value: a loss, or a sum of losses (a 0-dim tensor or a number).
        step: the step it was reached at, for the message.

    Returns:
        The value as a float.

    Raises:
        FloatingPointError: the value is NaN or infinite.
    """
    number = float(value.detach()) if isinstance(value, Tensor) else float(value)
    if not math.isfinite(number):
        where = "" if step is None else f" at step {step}"
        raise FloatingPointError(
            f"loss became {number}{where}; lower the learning rate or raise the temperature"
        )
    return number


def logsumexp_terms(
    block: AnchorBlock, scale: Tensor, chunk_size: int | None, implementation: str = "auto"
) -> tuple[Tensor, Tensor]:
    """(positive logits, row log-sum-exp) of one anchor block."""
    if implementation == "fused":
        return fused_row_terms(block.q, block.k, scale, block.exclude, block.pos_col)
    lse = row_logsumexp(block.q, block.k, scale, block.exclude, chunk_size, implementation)
    return positive_logits(block, scale), lse
