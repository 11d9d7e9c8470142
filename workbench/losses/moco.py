"""MoCo-style InfoNCE against a queue of past keys."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workbench.losses._base import ContrastiveLoss, logsumexp_terms
from workbench.losses.kernels.blocks import cross_logsumexp
from workbench.losses.kernels.chunked import DEFAULT_CHUNK_SIZE, resolve_implementation, row_logsumexp
from workbench.validation import check_int


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
        validate: check tensor values on every call (see ``ContrastiveLoss``); False in training.
    """

    stateful = True

    def __init__(
        self,
        temperature: float = 0.2,
        queue_size: int = 4096,
        normalize: bool = True,
        chunk_size: int | None = None,
        implementation: str = "auto",
        validate: bool = True,
    ):
        super().__init__(temperature, normalize, chunk_size, implementation=implementation, validate=validate)
        self.queue_size = check_int("queue_size", queue_size, minimum=0)
        # Host copies of queue_filled and queue_ptr, so a step never reads a tensor value (on CUDA a
        # synchronisation); kept in step with the buffers here and in _load_from_state_dict.
        self._filled = 0
        self._ptr = 0
        # The feature size is only known at the first call; the buffer is resized then (and on load).
        self.register_buffer("queue", torch.zeros(0, 0))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _loss(self, a: Tensor, b: Tensor, index, scale: Tensor, bias) -> Tensor:
        block = self.anchor_blocks(a, b, "cross", include_positive=True)[0]
        filled = self._filled
        if filled > 0 and self.queue.shape[1] != a.shape[1]:
            raise ValueError(
                f"feature dimension d={a.shape[1]} does not match the queue's d={self.queue.shape[1]}"
            )
        implementation = resolve_implementation(self.implementation, self.chunk_size, a, b)
        if implementation == "fused":
            pos, lse = logsumexp_terms(block, scale, self.chunk_size, implementation)
            if filled > 0:
                # a copy: the queue is updated in place below, while the graph still needs these keys
                keys = self.queue[:filled].to(a.dtype, copy=True)
                queued = row_logsumexp(block.q, keys, scale, None, self.chunk_size, implementation)
                lse = torch.logaddexp(lse, queued)
        else:
            # one matrix: the batch's keys and the queue side by side (the concatenation copies the
            # queue, which is updated in place below while the graph still needs these keys)
            keys = block.k if filled == 0 else torch.cat([block.k, self.queue[:filled].to(a.dtype)])
            chunk_size = None if implementation == "naive" else self.chunk_size or DEFAULT_CHUNK_SIZE
            offset = 0 if self._local is None else self._local.start
            # the queue holds keys this loss normalised (when it normalises), so |logit| <= scale
            # holds for them as for the batch's
            lse, _, pos = cross_logsumexp(
                block.q, keys, scale, offset=offset, columns=False, chunk_size=chunk_size,
                bound=self._logit_bound,
            )  # fmt: skip
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
            self._filled = self._ptr = 0
        keys = keys[-self.queue_size :].float()
        slots = (self._ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue_size
        self.queue[slots] = keys
        self._ptr = (self._ptr + keys.shape[0]) % self.queue_size
        self._filled = min(self.queue_size, self._filled + keys.shape[0])
        self.queue_ptr.fill_(self._ptr)
        self.queue_filled.fill_(self._filled)

    def reset_state(self) -> None:
        """Empty the queue."""
        self.queue_filled.zero_()
        self.queue_ptr.zero_()
        self._filled = self._ptr = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "queue"
        if key in state_dict:
            self.queue = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # loading is not a training step: read the counters once here
        self._filled, self._ptr = int(self.queue_filled), int(self.queue_ptr)

    def global_objective(self) -> ContrastiveLoss:
        from workbench.losses.clip import ClipLoss

        return ClipLoss(
            self.temperature,
            symmetric=False,
            normalize=self.normalize,
            chunk_size=self.chunk_size,
            implementation=self.implementation,
            validate=self.validate,
        )

    def log_normalizer(self, batch_size: int) -> float:
        return math.log(batch_size + self._filled)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", queue_size={self.queue_size}"
