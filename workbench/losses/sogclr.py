"""SogCLR: global contrastive learning with a per-sample running estimate of the denominator."""

from __future__ import annotations

import math

from torch import Tensor

from workbench.losses._base import check_choice
from workbench.losses.partition import RunningPartitionLoss

GAMMA_SCHEDULES = ("constant", "cosine")


class SogCLRLoss(RunningPartitionLoss):
    """SogCLR (Yuan et al., ICML 2022): InfoNCE with a moving-average denominator per sample.

    Each anchor keeps ``u_i``, a running estimate of its partition function ``Z_i`` (the batch
    estimate ``Zhat_i`` of ``workbench.losses.partition``: the positive weighted 1/P, the batch
    negatives by their mean), updated with the current batch (``u_i <- (1 - gamma) u_i + gamma *
    Zhat_i``, gamma = 1 on the first visit). The negatives are weighted by ``exp(s_ij / tau) / u_i``
    without gradient, so the step is ``-grad s_ii / tau + (1 / u_i) grad Zhat_i``: the gradient of
    LibAUC's ``GCLoss``. The
    returned value is the surrogate of ``workbench.losses.partition``, which equals the batch InfoNCE
    value to first order (LibAUC reports a different number with the same gradient).

    LibAUC drops the positive from the denominator; here ``include_positive=True`` by default so
    SogCLR, ``bayes`` and ``clip``/``ntxent`` target the same global objective. Set it to False to
    match LibAUC.

    Reference: Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning: Small
    Batch Does Not Harm Performance", ICML 2022.

    Args:
        num_samples: dataset size N.
        temperature: tau > 0 (paper default 0.1).
        gamma: running-average rate in (0, 1] (paper default 0.9); with the cosine schedule, the value
            reached at ``total_steps``.
        gamma_schedule: "constant", or "cosine" (decays from 1 to ``gamma`` over ``total_steps``).
        total_steps: length of the cosine schedule (required for it).
        negatives: "cross" (two-tower) or "views" (SimCLR).
        include_positive: keep the positive in the denominator.
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
    """

    def __init__(
        self,
        num_samples: int,
        temperature: float = 0.1,
        gamma: float = 0.9,
        gamma_schedule: str = "constant",
        total_steps: int | None = None,
        negatives: str = "cross",
        include_positive: bool = True,
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
    ):
        super().__init__(
            num_samples, temperature, negatives, include_positive, gamma, normalize, chunk_size,
            implementation,
        )  # fmt: skip
        self.gamma_schedule = check_choice("gamma_schedule", gamma_schedule, GAMMA_SCHEDULES)
        if gamma_schedule == "cosine" and (
            isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1
        ):
            raise ValueError(
                f"total_steps must be a positive integer for the cosine schedule, got {total_steps!r}"
            )
        self.total_steps = total_steps

    def current_gamma(self) -> float:
        if self.gamma_schedule == "constant":
            return self.gamma
        progress = min(int(self.steps), self.total_steps) / self.total_steps
        return self.gamma + (1.0 - self.gamma) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _log_weight(self, log_zhat: Tensor, slots: Tensor, samples: Tensor) -> Tensor:
        return -self._update(log_zhat, slots, samples, self.current_gamma())
