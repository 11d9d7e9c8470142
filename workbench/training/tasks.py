"""The interface between the one training loop and what it trains.

A :class:`Task` is everything that differs between kinds of training: it builds the model and the
loss from the config, draws a step's batch, computes features and the loss of a batch, and measures
the model (cheap metrics at every evaluation, costlier ones and a snapshot of probe embeddings at
snapshot steps). The :class:`~workbench.training.trainer.Trainer` owns the rest: device, precision,
optimiser, learning-rate schedule, DDP, GradCache, checkpoints, resumption and the loop, as open_clip's
``task/`` modules or solo-learn's methods plug into one trainer.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from workbench.training.config import TrainConfig

Features = dict[str, Tensor]


class Task:
    """One kind of training. Subclasses set ``model`` and ``loss`` in ``__init__``.

    Attributes:
        model: the trained module; the trainer checkpoints it and wraps it in DDP.
        loss: the criterion, an ``nn.Module`` whose state (running estimates, queues) is checkpointed.
        supports_gradcache: whether ``micro_batch`` (GradCache) applies: the loss of a batch must be a
            function of per-row features only.
        unused_parameters: whether some trained parameters get no gradient in a training step (heads
            only evaluation uses); DDP must then look for them every step (``find_unused_parameters``).
    """

    supports_gradcache: ClassVar[bool] = True
    unused_parameters: ClassVar[bool] = False
    model: nn.Module
    loss: nn.Module

    def __init__(
        self,
        config: TrainConfig,
        dataset: Any,
        device: torch.device,
        autocast: contextlib.AbstractContextManager,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.device = device
        self.autocast = autocast

    # --- training -------------------------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        """Every trained parameter (the optimiser's)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def extra_parameters(self) -> list[nn.Parameter]:
        """Trained parameters outside ``model``: DDP does not average their gradients, the trainer does."""
        return []

    def num_train_rows(self) -> int:
        raise NotImplementedError

    def batch(self, step: int) -> tuple[Features, Tensor]:
        """The global batch of ``step``: inputs (rows on dim 0) and their dataset index, on the CPU."""
        raise NotImplementedError

    def forward(self, model: nn.Module, inputs: Features) -> Features:
        """Features of ``inputs``; ``model`` is ``self.model`` or its DDP wrapper."""
        raise NotImplementedError

    def batch_loss(self, features: Features, index: Tensor, shard: slice) -> Tensor:
        """The scalar to backpropagate.

        Args:
            features: this process's rows of the batch (all of them in one process).
            index: the dataset index of the whole global batch.
            shard: this process's rows of the global batch.
        """
        raise NotImplementedError

    def extra_state(self) -> dict | None:
        """State outside the model and the loss that a checkpoint must keep."""
        return None

    def load_extra_state(self, state: dict | None) -> None:
        return None

    # --- measuring ------------------------------------------------------------------------------
    def probe(self) -> Any:
        """Embeddings of the probe rows, computed once per evaluation and passed to the methods below."""
        raise NotImplementedError

    def evaluate(self, probe: Any) -> dict[str, float]:
        """Cheap metrics, logged every ``eval_every`` steps."""
        raise NotImplementedError

    def downstream(self, probe: Any) -> dict[str, float]:
        """Costlier metrics, logged at snapshot steps only."""
        return {}

    def snapshot(self, probe: Any) -> dict[str, np.ndarray]:
        """Arrays saved at snapshot steps: at least ``a``, ``b`` (unit rows) and ``ids``."""
        raise NotImplementedError
