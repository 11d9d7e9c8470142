"""A memory bank of every sample's last embedding, and the partition functions it estimates.

The decomposable loss (``workbench.losses.bayes``) needs, for each anchor of a batch, a weight close
to ``1 / Z_i(theta)`` with ``Z_i`` the anchor's partition function over the *whole* dataset. The bank
holds the last embedding seen of both sides of every sample (slot 0: the ``a`` side, slot 1: the
``b`` side; detached, L2-normalised as the loss uses them), so ``Z_i`` can be computed against all N
samples with no backward pass. Rows are written as batches pass through the loss, or all at once
from the caller's embeddings of the whole dataset (:meth:`EmbeddingBank.fill`).

The estimate of anchor i mirrors the unbiased batch estimate of ``workbench.losses.partition``, with
the bank's negatives in place of the batch's: over the candidate samples C (the filled rows, or a
random subset of them) other than i,

    Z_i = (1/P) exp(s_ii / tau) + ((P - 1)/P) * mean_{j in C, j != i} exp(s_ij / tau),

where ``s_ii`` is the anchor's current positive and each ``s_ij`` is taken against the bank row (for
``negatives="views"`` both sides of every candidate are negatives). Without the positive, ``Z_i`` is
the mean over the negatives alone. With every row current and C all samples it is the exact
``Z_i``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from workbench.losses.kernels.blocks import SAFE_BOUND
from workbench.losses.kernels.chunked import DEFAULT_CHUNK_SIZE, accumulation_dtype


class EmbeddingBank(nn.Module):
    """The last embedding of both sides of each of ``num_samples`` samples, as registered buffers.

    Buffers (all in the state dict, so a checkpoint carries them): ``rows`` (2, N, d), sized at the
    first write (d is unknown before; float64 when the features are, else float32); ``filled`` (N,),
    whether a sample has been written; ``refreshed_at``, the loss step of the last :meth:`fill`
    (-1: never).
    """

    def __init__(self, num_samples: int) -> None:
        super().__init__()
        self.num_samples = num_samples
        self.register_buffer("rows", torch.zeros(2, num_samples, 0))
        self.register_buffer("filled", torch.zeros(num_samples, dtype=torch.bool))
        self.register_buffer("refreshed_at", torch.full((), -1, dtype=torch.long))

    @property
    def complete(self) -> bool:
        """Every sample has been written."""
        return bool(self.filled.all())

    def _allocate(self, like: Tensor) -> None:
        dim = like.shape[1]
        if self.rows.shape[2] == dim:
            return
        # rows are sized only at the first write (or after reset), so no host read of ``filled`` here
        if self.rows.shape[2] != 0:
            raise ValueError(f"feature dimension d={dim} does not match the bank's d={self.rows.shape[2]}")
        dtype = torch.promote_types(self.rows.dtype, accumulation_dtype(like.dtype))
        self.rows = torch.zeros(2, self.num_samples, dim, dtype=dtype, device=self.filled.device)

    @torch.no_grad()
    def write(self, a: Tensor, b: Tensor, index: Tensor) -> None:
        """Store rows ``a``, ``b`` (B, d) as the embeddings of samples ``index`` (B,)."""
        self._allocate(a)
        index = index.to(self.filled.device)
        self.rows[0, index] = a.detach().to(self.rows)
        self.rows[1, index] = b.detach().to(self.rows)
        self.filled[index] = True

    @torch.no_grad()
    def fill(self, a: Tensor, b: Tensor, step: int) -> None:
        """Replace every row by ``a``, ``b`` (N, d): the whole dataset at the current parameters."""
        self.write(a, b, torch.arange(self.num_samples, device=self.filled.device))
        self.refreshed_at.fill_(step)

    def reset(self) -> None:
        """Forget every row (the next write may have another feature dimension)."""
        self.rows = self.rows.new_zeros(2, self.num_samples, 0)
        self.filled.zero_()
        self.refreshed_at.fill_(-1)

    @torch.no_grad()
    def draw_subset(self, size: int, generator: torch.Generator | None = None) -> Tensor:
        """``size`` distinct positions, uniformly among the filled rows while at least ``size`` are.

        With fewer filled rows, every filled one is in the subset and the rest are unfilled positions,
        which :meth:`log_partition` leaves out. Fixed shape and no host read: random keys, unfilled
        rows pushed to the back, the ``size`` smallest kept.
        """
        keys = torch.rand(self.num_samples, generator=generator, device=self.filled.device)
        return torch.topk(keys + (~self.filled).to(keys.dtype), size, largest=False).indices

    @torch.no_grad()
    def log_partition(
        self,
        index: Tensor,
        scale: Tensor,
        candidates: Tensor | None,
        negatives: str,
        population: int | None,
        chunk_size: int | None = None,
        bound: float | None = None,
    ) -> Tensor:
        """log Z of the anchors of samples ``index`` over the bank (see the module docstring).

        No host read and no data-dependent shape (a CUDA step does not wait on it): unfilled
        candidates are masked, not removed.

        Args:
            index: (B,) dataset positions of the batch; their rows must have been written this step
                (the anchors and their positives are read from the bank).
            scale: the inverse temperature in use.
            candidates: (K,) distinct positions whose filled rows serve as negatives (unfilled ones are
                left out), or None for every row.
            negatives: "cross" (a-anchors against the b-side, and vice versa) or "views" (both sides).
            population: P, the terms of the full partition sum with the positive in it; None leaves
                the positive out (the mean over negatives).
            chunk_size: anchors per block of the (block, K) logit matrix (default
                ``DEFAULT_CHUNK_SIZE``): memory is linear in the bank size.
            bound: a bound on ``|scale * <anchor, row>|`` known without reading a tensor (the rows are
                unit vectors), or None; within ``SAFE_BOUND`` the log-sum-exp skips its peak shift.

        Returns:
            (2, B): row 0 for the a-anchors (slot 0), row 1 for the b-anchors; NaN for an anchor with no
            candidate negative (a subset holding only the anchor itself).
        """
        chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
        if candidates is None:  # every row, in order: no gather of the whole bank
            own, rows, usable = index, self.rows, self.filled
        else:
            where = torch.full((self.num_samples,), -1, dtype=torch.long, device=index.device)
            where[candidates] = torch.arange(candidates.shape[0], device=index.device)
            own, rows, usable = where[index], self.rows[:, candidates], self.filled[candidates]
        side_a, side_b = self.rows[0, index], self.rows[1, index]
        acc = accumulation_dtype(side_a.dtype)
        scale = scale.to(acc)
        pos = scale * (side_a.to(acc) * side_b.to(acc)).sum(dim=1)
        # the anchor's own row is a candidate whenever it is in the subset (it was written this step)
        inside = (own >= 0).long()
        key_bias = torch.zeros(usable.shape, dtype=acc, device=usable.device).masked_fill(~usable, -math.inf)
        count = usable.sum() - inside
        if negatives == "cross":  # each side's anchors against the other side's rows
            keys, bias, exclude, terms = (rows[1], rows[0]), key_bias, own[:, None], count
        else:  # both sides against [side a of the candidates; side b of them]
            keys = (rows.reshape(-1, rows.shape[2]),) * 2
            bias = torch.cat([key_bias, key_bias])
            exclude = torch.stack([own, torch.where(own >= 0, own + usable.shape[0], own)], dim=1)
            terms = 2 * count
        lse = torch.stack([
            _masked_row_logsumexp(anchors.to(acc), side.to(acc), scale, bias, exclude, chunk_size, bound)
            for anchors, side in zip((side_a, side_b), keys, strict=True)
        ])  # fmt: skip
        # both slots at once from here: (2, B)
        log_z = lse - torch.log(terms.clamp_min(1).to(acc))
        if population is not None:
            log_z = torch.logaddexp(
                pos - math.log(population), log_z + math.log((population - 1) / population)
            )
        return torch.where(terms > 0, log_z, torch.full_like(log_z, math.nan))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "rows"
        if key in state_dict:  # a bank sized by a previous run (d, dtype) replaces the empty one
            self.rows = torch.empty_like(state_dict[key], device=self.filled.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _masked_row_logsumexp(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    key_bias: Tensor,
    exclude: Tensor,
    chunk_size: int,
    bound: float | None = None,
) -> Tensor:
    """Per-row logsumexp of ``scale * q @ k.T + key_bias``, with columns ``exclude`` (-1: none) left out.

    ``key_bias`` is 0 or -inf. Where ``|scale * q @ k.T| <= bound <= SAFE_BOUND``, ``exp`` of the
    logits neither overflows nor loses the sum to underflow, so the row peaks (a reduction and a
    subtraction over every chunk) are skipped: one in-place exponential, a sum and a logarithm.
    """
    unshifted = bound is not None and bound <= SAFE_BOUND.get(q.dtype, 0.0)
    out = []
    for start in range(0, q.shape[0], chunk_size):
        # scale the (chunk, d) anchors, not the (chunk, K) logits; a tensor alpha would be a host read
        logits = torch.addmm(key_bias, q[start : start + chunk_size] * scale, k.T)
        cols = exclude[start : start + chunk_size]
        # -1 pads point at column 0 and write its own value back, so nothing is left out (a row never
        # has both a pad and a real exclusion, so no column is written twice with different values)
        safe = cols.clamp_min(0)
        kept = logits.gather(1, safe)
        logits.scatter_(1, safe, torch.where(cols >= 0, torch.full_like(kept, -math.inf), kept))
        out.append(logits.exp_().sum(dim=1).log() if unshifted else torch.logsumexp(logits, dim=1))
    return torch.cat(out)
