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

from workbench.losses.kernels.chunked import DEFAULT_CHUNK_SIZE, accumulation_dtype, row_logsumexp


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
        if self.filled.any():
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
        """Forget every row."""
        self.filled.zero_()
        self.refreshed_at.fill_(-1)

    @torch.no_grad()
    def log_partition(
        self,
        index: Tensor,
        scale: Tensor,
        candidates: Tensor,
        negatives: str,
        population: int | None,
        chunk_size: int | None = None,
        implementation: str = "auto",
    ) -> Tensor:
        """log Z of the anchors of samples ``index`` over the bank (see the module docstring).

        Args:
            index: (B,) dataset positions of the batch; their rows must have been written this step
                (the anchors and their positives are read from the bank).
            scale: the inverse temperature in use.
            candidates: (K,) distinct filled positions whose rows serve as negatives.
            negatives: "cross" (a-anchors against the b-side, and vice versa) or "views" (both sides).
            population: P, the terms of the full partition sum with the positive in it; None leaves
                the positive out (the mean over negatives).
            chunk_size, implementation: as for ``row_logsumexp`` (chunked by default: no (B, N) matrix).

        Returns:
            (2, B): row 0 for the a-anchors (slot 0), row 1 for the b-anchors; NaN for an anchor with no
            candidate negative (a subset holding only the anchor itself).
        """
        if implementation == "naive":  # the E-step needs no backward: chunk it even so
            implementation = "chunked"
        chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
        size = candidates.shape[0]
        if size == self.num_samples:  # every row, in order: no gather of the whole bank
            own, rows = index, self.rows
        else:
            where = torch.full((self.num_samples,), -1, dtype=torch.long, device=index.device)
            where[candidates] = torch.arange(size, device=index.device)
            own, rows = where[index], self.rows[:, candidates]
        inside = (own >= 0).long()
        side_a, side_b = self.rows[0, index], self.rows[1, index]
        acc = accumulation_dtype(side_a.dtype)
        pos = scale.to(acc) * (side_a.to(acc) * side_b.to(acc)).sum(dim=1)
        out = []
        for slot, anchors in enumerate((side_a, side_b)):
            if negatives == "cross":
                keys = rows[1 - slot]
                exclude = own[:, None]
                count = size - inside
            else:  # both sides: [side a of the candidates; side b of them]
                keys = rows.reshape(2 * size, rows.shape[2])
                exclude = torch.stack([own, torch.where(own >= 0, own + size, own)], dim=1)
                count = 2 * (size - inside)
            lse = row_logsumexp(anchors, keys, scale, exclude, chunk_size, implementation).to(acc)
            log_z = lse - torch.log(count.clamp_min(1).to(acc))
            if population is not None:
                log_z = torch.logaddexp(
                    pos - math.log(population), log_z + math.log((population - 1) / population)
                )
            out.append(torch.where(count > 0, log_z, torch.full_like(log_z, math.nan)))
        return torch.stack(out)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "rows"
        if key in state_dict:  # a bank sized by a previous run (d, dtype) replaces the empty one
            self.rows = torch.empty_like(state_dict[key], device=self.filled.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
