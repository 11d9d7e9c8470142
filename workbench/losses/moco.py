"""MoCo-style InfoNCE against a queue of past keys."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workbench.losses._base import ContrastiveLoss, logsumexp_terms
from workbench.losses.kernels.chunked import row_logsumexp


class MoCoLoss(ContrastiveLoss):
    """One-way InfoNCE of queries ``a`` against their keys ``b`` plus a FIFO queue of past keys.

    For query ``a_i`` the positive is ``b_i``; the negatives are the other keys of the batch and every
    key in the queue. After each call the batch's keys are pushed (detached) into the queue, oldest
    out first. An empty queue (first step, or ``queue_size=0``) reduces to in-batch one-way InfoNCE,
    as in MoCo v3; a full queue gives MoCo v2's large dictionary without a large batch. Keys usually
    come from a momentum encoder; this loss only keeps the queue.

    References: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning",
    CVPR 2020; Chen et al., "An Empirical Study of Training Self-Supervised Vision Transformers",
    ICCV 2021.

    Args:
        temperature: tau > 0 (MoCo v2 uses 0.2).
        queue_size: number of past keys kept (>= 0).
        normalize: L2-normalise the features first.
        chunk_size: exact memory-linear computation in chunks of this many anchors.
        implementation: "auto", "naive", "chunked" or "fused" (see ``ContrastiveLoss``).
    """

    stateful = True

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 4096,
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
    ):
        super().__init__(temperature, normalize, chunk_size, implementation=implementation)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 0:
            raise ValueError(f"queue_size must be an integer >= 0, got {queue_size!r}")
        self.queue_size = queue_size
        # The feature size is only known at the first call; the buffer is resized then (and on load).
        self.register_buffer("queue", torch.zeros(0, 0))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _loss(self, a: Tensor, b: Tensor, index, scale: Tensor, bias) -> Tensor:
        block = self.anchor_blocks(a, b, "cross", include_positive=True)[0]
        pos, lse = logsumexp_terms(block, scale, self.chunk_size, self.implementation)
        filled = int(self.queue_filled)
        if filled > 0:
            if self.queue.shape[1] != a.shape[1]:
                raise ValueError(
                    f"feature dimension d={a.shape[1]} does not match the queue's d={self.queue.shape[1]}"
                )
            # a copy: the queue is updated in place below, while the graph still needs these keys
            keys = self.queue[:filled].to(a.dtype, copy=True)
            queued = row_logsumexp(block.q, keys, scale, None, self.chunk_size, self.implementation)
            lse = torch.logaddexp(lse, queued)
        loss = (lse - pos).mean()
        # b is the whole batch (gathered under a sharding), so every process keeps the same queue
        self._enqueue(b.detach())
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        if self.queue_size == 0:
            return
        if self.queue.shape != (self.queue_size, keys.shape[1]):
            self.queue = torch.zeros(self.queue_size, keys.shape[1], device=keys.device)
            self.queue_filled.zero_()
            self.queue_ptr.zero_()
        keys = keys[-self.queue_size :].float()
        slots = (int(self.queue_ptr) + torch.arange(keys.shape[0], device=keys.device)) % self.queue_size
        self.queue[slots] = keys
        self.queue_ptr.fill_((int(self.queue_ptr) + keys.shape[0]) % self.queue_size)
        self.queue_filled.fill_(min(self.queue_size, int(self.queue_filled) + keys.shape[0]))

    def reset_state(self) -> None:
        """Empty the queue."""
        self.queue_filled.zero_()
        self.queue_ptr.zero_()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "queue"
        if key in state_dict:
            self.queue = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def global_objective(self) -> ContrastiveLoss:
        from workbench.losses.clip import ClipLoss

        return ClipLoss(
            self.temperature,
            symmetric=False,
            normalize=self.normalize,
            chunk_size=self.chunk_size,
            implementation=self.implementation,
        )

    def log_normalizer(self, batch_size: int) -> float:
        return math.log(batch_size + int(self.queue_filled))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", queue_size={self.queue_size}"
