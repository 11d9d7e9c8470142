"""SogCLR: global contrastive learning with a per-sample running estimate of the denominator."""

from __future__ import annotations

import math

from torch import Tensor

from workbench.losses.partition import RunningPartitionLoss
from workbench.validation import check_choice, check_int

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
        validate: check ``index`` values and features on every call; False in training.
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
        validate: bool = True,
    ):
        super().__init__(
            num_samples, temperature, negatives, include_positive, gamma, normalize, chunk_size,
            implementation, validate,
        )  # fmt: skip
        self.gamma_schedule = check_choice("gamma_schedule", gamma_schedule, GAMMA_SCHEDULES)
        if gamma_schedule == "cosine":
            check_int("total_steps (required by the cosine schedule)", total_steps, minimum=1)
        self.total_steps = total_steps
        # host copy of the ``steps`` buffer, so the schedule never reads a tensor value in a step
        self._steps = 0

    def _loss(self, a: Tensor, b: Tensor, index: Tensor, scale: Tensor, bias) -> Tensor:
        loss = super()._loss(a, b, index, scale, bias)
        if self.training:  # the base class counts the step in ``steps`` likewise
            self._steps += 1
        return loss

    def reset_state(self) -> None:
        super().reset_state()
        self._steps = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._steps = int(self.steps)  # loading is not a training step: read it once here

    def current_gamma(self, step: int | None = None) -> float:
        """The running-average rate at a training step (default: the ``steps`` buffer's value).

        The loss itself passes its host copy of the step count, which follows ``steps`` through
        training, ``reset_state`` and ``load_state_dict`` (not through writes to the buffer by hand).
        """
        if self.gamma_schedule == "constant":
            return self.gamma
        step = int(self.steps) if step is None else step
        progress = min(step, self.total_steps) / self.total_steps
        return self.gamma + (1.0 - self.gamma) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _log_weight(self, log_zhat: Tensor, slots: Tensor, samples: Tensor) -> Tensor:
        return -self._update(log_zhat, slots, samples, self.current_gamma(self._steps))
