"""SigLIP's pairwise sigmoid loss."""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.losses._base import ContrastiveLoss
from workbench.losses.kernels.blocks import sigmoid_sum
from workbench.losses.kernels.chunked import DEFAULT_CHUNK_SIZE, pairwise_sigmoid_sum, resolve_implementation
from workbench.validation import check_number, check_positive


class SigLipLoss(ContrastiveLoss):
    """Sigmoid loss: every (a_i, b_j) pair is an independent binary classification.

    ``L = -(1/B) sum_{i,j} log sigmoid(z_ij * (t * s_ij + b))`` with ``z_ij = +1`` on the diagonal and
    -1 off it: a sum over the B^2 pairs divided by B, not a mean. ``t`` and ``b`` default to the
    paper's initialisation (10, -10); learnable values are passed at call time as ``scale=`` and
    ``bias=``. Matches open_clip's ``SigLipLoss`` (single process).

    Note the minibatch objective itself depends on B (each anchor sees B - 1 negatives), so its
    gradient differs from the full-data one even though the loss is a plain sum over pairs.

    Reference: Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023.

    Args:
        scale: the logit scale t > 0 used when none is passed at call time (default 10).
        bias: the logit bias b used when none is passed (default -10).
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
        validate: check tensor values on every call (see ``ContrastiveLoss``); False in training.
    """

    uses_bias = True

    def __init__(
        self,
        scale: float = 10.0,
        bias: float = -10.0,
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(
            1.0 / check_positive("scale", scale), normalize, chunk_size, None, implementation, validate
        )
        self.bias = check_number("bias", bias)

    def _loss(self, a: Tensor, b: Tensor, index, scale: Tensor, bias) -> Tensor:
        passed = bias is not None  # the constructor's bias was checked when it was built
        bias = torch.as_tensor(self.bias if bias is None else bias, device=a.device).to(scale.dtype)
        if bias.numel() != 1:
            raise ValueError(f"bias must be a scalar, got shape {tuple(bias.shape)}")
        if self.validate and passed and not torch.isfinite(bias):
            raise ValueError(f"bias must be a finite scalar, got {bias}")
        # this call's anchors (a process's share under a sharding) against every column; dividing by
        # their count makes the mean over processes the full-batch loss
        q, rows = self.local_rows(a)
        bias = bias.reshape(())
        implementation = resolve_implementation(self.implementation, self.chunk_size, q, b)
        if implementation == "fused":
            total = pairwise_sigmoid_sum(q, b, scale, bias, rows, self.chunk_size, implementation)
        else:
            chunk_size = None if implementation == "naive" else self.chunk_size or DEFAULT_CHUNK_SIZE
            offset = 0 if self._local is None else self._local.start
            total = sigmoid_sum(q, b, scale, bias, offset=offset, chunk_size=chunk_size)
        return total / q.shape[0]
