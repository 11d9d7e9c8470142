"""The decomposable contrastive loss from Bayesian data augmentation (Chen et al., NeurIPS 2022)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workbench.losses._base import check_choice
from workbench.losses.partition import RunningPartitionLoss

ESTIMATORS = ("running", "batch")


class BayesLoss(RunningPartitionLoss):
    r"""Decomposable InfoNCE through Gamma-distributed auxiliary variables, optimised by stochastic EM.

    Derivation (reconstructed by this project from the public abstract and the Amazon Science article;
    the paper's full text was not available, so details such as the Gamma parameters are ours):

    The global objective is ``L = (1/N) sum_i [-s_ii / tau + log Z_i]`` with
    ``Z_i = (1/N) sum_j exp(s_ij / tau)``. A minibatch replaces ``Z_i`` by a batch estimate ``Zhat_i``;
    even an unbiased ``Zhat_i`` (the positive weighted 1/P, the batch negatives by their mean; see
    ``workbench.losses.partition``) leaves ``grad log Zhat_i = grad Zhat_i / Zhat_i`` a ratio, so the
    minibatch gradient is biased (roughly like 1/B). Because ``1/Z = \int_0^\infty exp(-u Z) du``,

        exp(-l_i) = exp(s_ii / tau) / Z_i = \int_0^\infty exp(s_ii / tau - u_i Z_i) du_i,

    so ``u_i`` is an auxiliary variable whose posterior given the parameters is
    ``Gamma(shape 1, rate Z_i)`` with mean ``1 / Z_i``. Conditioned on ``u_i`` the per-anchor loss
    ``-s_ii / tau + u_i Z_i`` is linear in the negatives, i.e. decomposable: its minibatch estimate
    with ``Zhat_i`` is unbiased. Stochastic EM alternates

    * E-step: draw ``u_i ~ Gamma(shape k, rate k * Ztilde_i)`` for the batch's anchors, where
      ``Ztilde_i`` is a per-sample running estimate of ``Z_i`` kept across steps (indexed by dataset
      position). The rate uses the estimate *before* this batch is folded in, so ``u_i`` does not
      depend on the negatives it will weight (on a first visit the batch estimate is all there is).
      ``k = 1`` is the exact posterior; larger ``k`` keeps the mean ``1 / Ztilde_i`` and lowers the
      variance; ``k = inf`` is the deterministic EM point estimate ``u_i = 1 / Ztilde_i``, which
      makes the step the SogCLR gradient (``log Z = min_u [u Z - log u - 1]``).
    * M-step: an SGD step on ``-s_ii / tau + u_i * Zhat_i - log u_i - 1`` (the last two terms are
      constants that make the value an upper bound on the InfoNCE term, tight at ``u_i = 1/Z_i``).

    ``estimator="batch"`` uses the current batch's ``Zhat_i`` as the rate: the ablation that brings
    the ratio bias back (with ``k = inf`` the step is ``grad log Zhat_i``; at B = N it is exact).

    Args:
        num_samples: dataset size N.
        temperature: tau > 0.
        shape: Gamma shape k > 0, or ``math.inf`` for the point estimate.
        estimator: "running" (per-sample memory) or "batch" (ablation).
        gamma: rate of the running average of Z in (0, 1]; gamma = 1 on a sample's first visit.
            The default 0.1 averages about ten visits: ``E[u_i]`` is ``1 / Z_i`` only when ``Ztilde_i``
            is concentrated, and an average of a few small-batch estimates is not (Jensen's gap
            of 1/Z makes the step *more* biased than InfoNCE's; see RESULTS.md).
        negatives: "cross" (two-tower) or "views" (SimCLR).
        include_positive: keep the positive in the partition sum.
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
        validate: check ``index`` values and features on every call; False in training.
    """

    def __init__(
        self,
        num_samples: int,
        temperature: float = 0.1,
        shape: float = 1.0,
        estimator: str = "running",
        gamma: float = 0.1,
        negatives: str = "cross",
        include_positive: bool = True,
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(
            num_samples, temperature, negatives, include_positive, gamma, normalize, chunk_size,
            implementation, validate,
        )  # fmt: skip
        if isinstance(shape, bool) or not isinstance(shape, (int, float)) or math.isnan(shape) or shape <= 0:
            raise ValueError(f"shape (the Gamma shape k) must be > 0 or math.inf, got {shape!r}")
        self.shape = float(shape)
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)

    def _log_weight(self, log_zhat: Tensor, slots: Tensor, samples: Tensor) -> Tensor:
        if self.estimator == "batch":
            log_rate = log_zhat
        else:
            seen = self.visited[slots, samples]
            log_rate = torch.where(seen, self.log_z[slots, samples].to(log_zhat.dtype), log_zhat)
            self._update(log_zhat, slots, samples, self.gamma)
        if math.isinf(self.shape):
            return -log_rate
        concentration = torch.full_like(log_rate, self.shape)
        draws = torch._standard_gamma(concentration).clamp_min(torch.finfo(log_rate.dtype).tiny)
        return torch.log(draws / self.shape) - log_rate

    def extra_repr(self) -> str:
        return super().extra_repr() + f", shape={self.shape}, estimator={self.estimator!r}"
