"""Losses that keep a per-sample running estimate of each anchor's partition function.

SogCLR and the decomposable Bayesian loss share everything but how they turn the estimate into the
weight ``u_i`` of an anchor's negatives, so the shared machinery lives here.

The partition function of anchor i over the whole population of P_i terms (its positive and every
other sample: P = N for cross-modal negatives, 2N - 1 for two views) is
``Z_i = (1/P) [exp(s_ii / tau) + sum_{j != i} exp(s_ij / tau)]``. Given that i is in the batch, an
unbiased batch estimate weights the positive by 1/P and the batch's negatives by their mean:

    Zhat_i = (1/P) exp(s_ii / tau) + ((P - 1)/P) * mean_{j in batch negatives(i)} exp(s_ij / tau).

(Minibatch InfoNCE instead gives the positive weight 1/B: at small B its denominator is biased even
before the logarithm.) With ``include_positive=False`` the positive is left out and
``Zhat_i`` is the mean over the batch negatives. For a weight ``u_i`` held fixed (no gradient),
both losses minimise the per-anchor surrogate

    -s_ii / tau + u_i * Zhat_i - log u_i - 1,

whose gradient ``-grad s_ii / tau + u_i * grad Zhat_i`` is linear in the negatives. With
``u_i = 1 / Z_i`` its value is ``-s_ii / tau + log Z_i`` (the variational identity
``log Z = min_u [u Z - log u - 1]``), i.e. the global InfoNCE term, and its gradient is the global
gradient whenever ``Zhat_i`` is unbiased for ``Z_i``. Everything is kept in the log domain so any
temperature is safe in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workbench.losses._base import (
    NEGATIVES,
    AnchorBlock,
    ContrastiveLoss,
    check_choice,
)


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    return float(gamma)


class RunningPartitionLoss(ContrastiveLoss):
    """Base for stateful losses holding ``log Z_i`` per dataset sample and anchor slot.

    Args:
        num_samples: dataset size N; ``index`` values must lie in [0, N).
        temperature: tau > 0.
        negatives: "cross" (anchors of one modality against the other, two slots per sample) or
            "views" (SimCLR: 2B anchors against both views, one slot per view).
        include_positive: keep the positive in the partition sum (InfoNCE) or drop it (DCL).
        gamma: rate of the running average, in (0, 1]; gamma = 1 on a sample's first visit.
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
        validate: check ``index`` values (range, repeats) and features on every call.
    """

    stateful = True

    def __init__(
        self,
        num_samples: int,
        temperature: float,
        negatives: str,
        include_positive: bool,
        gamma: float,
        normalize: bool,
        chunk_size: int | None,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(temperature, normalize, chunk_size, implementation=implementation, validate=validate)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
            raise ValueError(f"num_samples (the dataset size) must be an integer >= 2, got {num_samples!r}")
        self.num_samples = num_samples
        self.negatives = check_choice("negatives", negatives, NEGATIVES)
        self.include_positive = bool(include_positive)
        self.gamma = _check_gamma(gamma)
        self.register_buffer("log_z", torch.zeros(2, num_samples))
        self.register_buffer("visited", torch.zeros(2, num_samples, dtype=torch.bool))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def _check_index(self, index: Tensor | None, batch_size: int) -> Tensor:
        if index is None:
            raise ValueError(
                f"index is required by the stateful {type(self).__name__}: pass the dataset positions "
                "of the batch rows, loss(a, b, index=idx)"
            )
        index = torch.as_tensor(index)
        if index.ndim != 1 or index.shape[0] != batch_size:
            raise ValueError(f"index must have shape ({batch_size},), got {tuple(index.shape)}")
        if index.dtype.is_floating_point or index.dtype == torch.bool or index.is_complex():
            raise ValueError(f"index must be an integer tensor, got dtype {index.dtype}")
        if not self.validate:  # the value checks below read the index on the host
            return index.to(self.log_z.device, torch.long)
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= self.num_samples:
            raise ValueError(
                f"index values must lie in [0, num_samples={self.num_samples}), got [{low}, {high}]"
            )
        if torch.unique(index).numel() != batch_size:
            raise ValueError("index must not repeat a dataset position within one batch")
        return index.to(self.log_z.device, torch.long)

    def _loss(self, a: Tensor, b: Tensor, index: Tensor, scale: Tensor, bias) -> Tensor:
        terms = self.layout_terms(a, b, self.negatives, False, scale)
        if self._local is None:
            # Every block at once, as a (blocks, M) table: one state update and one weight draw, half
            # the operations of block by block (at B = 256 each costs about what its arithmetic
            # does). The blocks hold disjoint (slot, sample) pairs, so the update is the same.
            blocks = [block for block, _, _ in terms]
            shared = all(pos is terms[0][1] for _, pos, _ in terms)  # cross: <a_i, b_i> both ways
            pos = terms[0][1] if shared else torch.stack([pos for _, pos, _ in terms])
            log_zhat = self._log_zhat(torch.stack([lse for _, _, lse in terms]), pos, blocks[0].num_terms)
            rows = blocks[0].anchor_rows()
            slots = torch.stack([torch.as_tensor(b.slot, device=rows.device).expand_as(rows) for b in blocks])
            samples = index[rows % index.shape[0]].expand_as(slots)
            with torch.no_grad():
                log_u = self._log_weight(log_zhat.detach().flatten(), slots.flatten(), samples.flatten())
            loss = self._surrogate(log_zhat, log_u.view_as(log_zhat), pos).mean()
        else:
            losses = []
            for block, pos, lse in terms:
                log_zhat = self._log_zhat(lse, pos, block.num_terms)
                with torch.no_grad():
                    log_u = self._block_weights(block, log_zhat.detach(), index)
                losses.append(self._surrogate(log_zhat, log_u, pos).mean())
            loss = sum(losses) / len(losses)
        if self.training:
            self.steps += 1
        return loss

    def _log_zhat(self, lse: Tensor, pos: Tensor, num_terms: int) -> Tensor:
        """log Zhat of each anchor from its batch log-sum-exp (and positive; see the module doc)."""
        log_zhat = lse - math.log(num_terms)
        if not self.include_positive:
            return log_zhat
        population = self.population_terms()
        return torch.logaddexp(pos - math.log(population), log_zhat + math.log((population - 1) / population))

    @staticmethod
    def _surrogate(log_zhat: Tensor, log_u: Tensor, pos: Tensor) -> Tensor:
        """The per-anchor surrogate ``u Zhat - log u - 1 - s_ii / tau``, linear in the negatives."""
        return torch.exp(log_zhat + log_u) - log_u - 1.0 - pos

    def _block_weights(self, block: AnchorBlock, log_zhat: Tensor, index: Tensor) -> Tensor:
        """log u of the block's anchors, after folding every anchor of the whole batch into the state.

        ``index`` holds the whole batch's dataset positions; anchor row r of a layout belongs to sample
        ``index[r mod B]``. Under a sharding this process holds only some anchors: it gathers every
        process's estimates so that all of them apply the same update, in the single-process row order.
        """
        rows = block.anchor_rows()
        slots = torch.as_tensor(block.slot, device=rows.device).expand(rows.shape[0])
        if self._local is None:
            return self._log_weight(log_zhat, slots, index[rows % index.shape[0]])
        gather = self.sharding.gather
        all_rows = gather(rows)
        order = torch.empty_like(all_rows)
        order[all_rows] = torch.arange(all_rows.shape[0], device=all_rows.device)
        log_zhat_all, slots_all = gather(log_zhat)[order], gather(slots)[order]
        samples = index[torch.arange(order.shape[0], device=index.device) % index.shape[0]]
        log_u = self._log_weight(log_zhat_all, slots_all, samples)
        # Random weights (Bayesian Gamma draws) are taken from process 0, so that every process
        # applies the same ones whatever its random stream.
        return gather(log_u)[: log_u.shape[0]][rows]

    def population_terms(self) -> int:
        """P: terms in each anchor's partition sum over the whole dataset."""
        negatives = self.num_samples - 1 if self.negatives == "cross" else 2 * self.num_samples - 2
        return negatives + 1 if self.include_positive else negatives

    def _log_weight(self, log_zhat: Tensor, slots: Tensor, samples: Tensor) -> Tensor:
        """log u for each anchor row; updates the running state."""
        raise NotImplementedError

    def _update(self, log_zhat: Tensor, slots: Tensor, samples: Tensor, gamma: float) -> Tensor:
        """Running average ``Z <- (1 - gamma) Z + gamma Zhat`` in the log domain; returns the new log Z."""
        old = self.log_z[slots, samples].to(log_zhat.dtype)
        seen = self.visited[slots, samples]
        if gamma < 1.0:
            blended = torch.logaddexp(old + math.log1p(-gamma), log_zhat + math.log(gamma))
            new = torch.where(seen, blended, log_zhat)
        else:
            new = log_zhat
        self.log_z[slots, samples] = new.to(self.log_z.dtype)
        self.visited[slots, samples] = True
        return new

    def reset_state(self) -> None:
        """Forget every estimate (as before training)."""
        self.log_z.zero_()
        self.visited.zero_()
        self.steps.zero_()

    def global_objective(self) -> ContrastiveLoss:
        from workbench.losses.clip import ClipLoss
        from workbench.losses.dcl import DCLLoss
        from workbench.losses.ntxent import NTXentLoss

        if not self.include_positive:
            return DCLLoss(
                self.temperature, self.negatives, self.normalize, self.chunk_size, self.implementation,
                self.validate,
            )  # fmt: skip
        if self.negatives == "cross":
            return ClipLoss(
                self.temperature,
                normalize=self.normalize,
                chunk_size=self.chunk_size,
                implementation=self.implementation,
                validate=self.validate,
            )
        return NTXentLoss(
            self.temperature, self.normalize, self.chunk_size, self.implementation, self.validate
        )

    def log_normalizer(self, batch_size: int) -> float:
        # The surrogate already uses the mean over negatives.
        return 0.0

    def extra_repr(self) -> str:
        return (
            super().extra_repr()
            + f", num_samples={self.num_samples}, negatives={self.negatives!r}, "
            + f"include_positive={self.include_positive}, gamma={self.gamma}"
        )
