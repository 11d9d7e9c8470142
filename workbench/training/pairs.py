"""Pair training: a siamese encoder on two augmented views, or two MLP towers on paired inputs.

The loss is any registry loss. Under torchrun every process embeds its rows of the global batch and
the loss scores them against the gathered columns of all processes (``ContrastiveLoss.sharded``), so
the gradient is the single-process one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from workbench.data import PairDataset, sample_batch, step_generator
from workbench.losses import ContrastiveLoss, build_loss
from workbench.models import LogitScale, build_pair_model, model_size
from workbench.training import distributed
from workbench.training.gradcache import embed
from workbench.training.tasks import Features, Task


def loss_from_config(config, num_samples: int, views: bool) -> ContrastiveLoss:
    """The configured loss; stateful losses learn the dataset size (and schedule length) from the run."""
    params = dict(config.loss_params)
    # no per-call reads of tensor values (a host sync on CUDA): the trainer checks the loss per interval
    params.setdefault("validate", False)
    if config.loss in ("sogclr", "bayes"):
        params.setdefault("num_samples", num_samples)
        params.setdefault("negatives", "views" if views else "cross")
    if config.loss == "sogclr" and params.get("gamma_schedule") == "cosine":
        params.setdefault("total_steps", config.steps)
    return build_loss(config.loss, **params)


class PairTask(Task):
    """Two views of one input (``views`` datasets, a siamese model) or two paired inputs (two towers)."""

    def __init__(self, config, dataset: PairDataset, device, autocast) -> None:
        super().__init__(config, dataset, device, autocast)
        kind = config.model if config.model != "auto" else ("siamese" if dataset.views else "two_tower")
        in_a, in_b = dataset.in_dims
        self.model = build_pair_model(kind, in_a, in_b, model_size(config.task.model_size)).to(device)
        self.loss = loss_from_config(config, len(dataset), dataset.views).to(device)
        if getattr(self.loss, "needs_population", False):  # bayes' exact E-step (an oracle for labs)
            self.loss.set_population_source(self._population)
        self.scale = None
        if config.learn_scale:
            init = 10.0 if config.loss == "siglip" else 1.0 / self.loss.temperature
            self.scale = LogitScale(init).to(device)
            if config.loss == "siglip":
                self.scale.bias = nn.Parameter(torch.tensor(-10.0, device=device))
        self.sharding = distributed.loss_sharding()
        order = torch.randperm(len(dataset), generator=step_generator(config.seed, 0, stream=3))
        self.probe_index = order[: min(config.probe_size, len(dataset))].sort().values
        # fixed augmentations, so snapshots at different steps see the same inputs
        x_a, x_b = dataset.batch(self.probe_index, step_generator(config.seed, 0, stream=2))
        self.probe_views = x_a.to(device), x_b.to(device)

    @torch.no_grad()
    def _population(self) -> tuple[Tensor, Tensor]:
        """Every sample's embeddings now, through fixed views (equal on every process)."""
        every_row = torch.arange(len(self.dataset))
        x_a, x_b = self.dataset.batch(every_row, step_generator(self.config.seed, 0, stream=2))
        training = self.model.training
        self.model.eval()
        try:
            return embed(self.model, x_a.to(self.device), x_b.to(self.device), 1024, self.autocast)
        finally:
            self.model.train(training)

    def parameters(self) -> list[nn.Parameter]:
        return super().parameters() + self.extra_parameters()

    def extra_parameters(self) -> list[nn.Parameter]:
        return [] if self.scale is None else list(self.scale.parameters())

    def num_train_rows(self) -> int:
        return len(self.dataset)

    def loss_kwargs(self) -> dict:
        if self.scale is None:
            return {}
        kwargs = {"scale": self.scale()}
        if hasattr(self.scale, "bias"):
            kwargs["bias"] = self.scale.bias
        return kwargs

    def batch(self, step: int) -> tuple[Features, Tensor]:
        c = self.config
        index = sample_batch(self.dataset, step, c.batch_size, c.seed)
        x_a, x_b = self.dataset.batch(index, step_generator(c.seed, step, stream=0))
        return {"a": x_a, "b": x_b}, index

    def forward(self, model: nn.Module, inputs: Features) -> Features:
        z_a, z_b = model(inputs["a"], inputs["b"])
        return {"a": z_a, "b": z_b}

    def batch_loss(self, features: Features, index: Tensor, shard: slice) -> Tensor:
        # the loss scores this process's anchors against every process's columns
        with self.loss.sharded(self.sharding):
            return self.loss(features["a"], features["b"], index=index[shard], **self.loss_kwargs())

    def extra_state(self) -> dict | None:
        return None if self.scale is None else self.scale.state_dict()

    def load_extra_state(self, state: dict | None) -> None:
        if self.scale is not None:
            self.scale.load_state_dict(state)

    # --- measuring ------------------------------------------------------------------------------
    @torch.no_grad()
    def probe(self) -> tuple[Tensor, Tensor]:
        self.model.eval()
        z_a, z_b = embed(self.model, *self.probe_views, micro_batch=1024, autocast=self.autocast)
        return nn.functional.normalize(z_a, dim=1), nn.functional.normalize(z_b, dim=1)

    @torch.no_grad()
    def evaluate(self, probe: tuple[Tensor, Tensor]) -> dict[str, float]:
        z_a, z_b = probe
        objective = self.loss.global_objective()
        kwargs = self.loss_kwargs()
        if not objective.uses_bias:
            kwargs.pop("bias", None)
        metrics = {
            "global_loss": float(objective(z_a, z_b, **kwargs)),
            "pos_cos": float((z_a * z_b).sum(dim=1).mean()),
        }
        if self.dataset.labels is not None:
            labels = torch.as_tensor(self.dataset.labels[self.probe_index.numpy()], device=z_a.device)
            metrics["knn_acc"] = knn_accuracy(z_a, labels)
        if self.scale is not None:
            metrics["scale"] = float(self.scale())
        return metrics

    def snapshot(self, probe: tuple[Tensor, Tensor]) -> dict[str, np.ndarray]:
        z_a, z_b = probe
        rows = self.probe_index.numpy()
        arrays = {"a": z_a.cpu().numpy(), "b": z_b.cpu().numpy(), "ids": self.dataset.ids[rows]}
        if self.dataset.labels is not None:
            arrays["labels"] = self.dataset.labels[rows]
        return arrays


def knn_accuracy(z: Tensor, labels: Tensor, k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (cosine, majority vote) on unit-norm rows."""
    k = min(k, z.shape[0] - 1)
    sims = z @ z.T
    sims.fill_diagonal_(-float("inf"))
    neighbours = labels[sims.topk(k, dim=1).indices]
    votes = torch.zeros(z.shape[0], int(labels.max()) + 1, device=z.device)
    votes.scatter_add_(1, neighbours, torch.ones_like(neighbours, dtype=votes.dtype))
    return float((votes.argmax(dim=1) == labels).float().mean())
