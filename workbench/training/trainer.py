"""One training loop for pair models: any dataset, any loss, any batch size, resumable.

The loop reads top to bottom: build data, model and loss from a :class:`TrainConfig`; for each step
draw the batch of (seed, step), compute the exact gradient of the loss on it (through GradCache when
``micro_batch`` is smaller than the batch), take an optimiser step, and now and then evaluate,
snapshot the probe embeddings and checkpoint. Everything lands in the run store; a run that is
started again with the same ``run_id`` resumes from its last checkpoint.

CPU recipe (2 cores, about a minute)::

    python -m workbench.train --dataset digits_views --loss ntxent --batch-size 128 --steps 300

Several processes (``torchrun --nproc-per-node N -m workbench.train ...``): the model is wrapped in
DistributedDataParallel and every process trains on its ``batch_size / N`` rows of the same global
batch; the losses gather the features of all processes (see ``workbench.training.distributed``), so the
gradient is the single-process one. Process 0 alone evaluates and writes the run store.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from workbench.data import PairDataset, build_dataset, sample_batch, step_generator
from workbench.losses import ContrastiveLoss, build_loss, loss_names
from workbench.models import LogitScale, build_pair_model, model_size
from workbench.store.runs import Run, RunWriter, load_run, new_run_id, runs_root
from workbench.training import distributed
from workbench.training.gradcache import cached_backward, embed

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
MODEL_KINDS = ("auto", "siamese", "two_tower")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved as the run's config)."""

    dataset: str = "digits_views"
    dataset_params: dict = field(default_factory=dict)
    model: str = "auto"  # siamese for views datasets, two_tower otherwise
    model_size: str = "small"
    loss: str = "ntxent"
    loss_params: dict = field(default_factory=dict)
    learn_scale: bool = False  # pass a learnable logit scale (and SigLIP bias) to the loss
    batch_size: int = 256  # the global batch: split evenly over the processes under torchrun
    micro_batch: int | None = None  # GradCache micro-batch (per process); None = one forward/backward
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    steps: int = 300
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast on CUDA, fp32 on CPU
    eval_every: int = 50
    snapshot_every: int = 100
    checkpoint_every: int = 100
    probe_size: int = 512
    # image-text datasets only (workbench.training.image_text): towers and modality-structure regularizers
    image_tower: dict = field(default_factory=dict)
    text_tower: dict = field(default_factory=dict)
    structure: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.loss not in loss_names():
            raise ValueError(f"loss must be one of {', '.join(loss_names())}; got {self.loss!r}")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
            ("model", MODEL_KINDS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        model_size(self.model_size)
        for name in ("batch_size", "steps", "eval_every", "snapshot_every", "checkpoint_every", "probe_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for a contrastive loss, got {self.batch_size}")
        if self.micro_batch is not None and (
            isinstance(self.micro_batch, bool)
            or not isinstance(self.micro_batch, int)
            or self.micro_batch < 1
        ):
            raise ValueError(f"micro_batch must be None or a positive integer, got {self.micro_batch!r}")
        if isinstance(self.lr, bool) or not (
            isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0
        ):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; allowed: {sorted(known)}")
        return cls(**values)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def loss_from_config(config: TrainConfig, dataset: PairDataset) -> ContrastiveLoss:
    """The configured loss; stateful losses learn the dataset size (and schedule length) from the run."""
    params = dict(config.loss_params)
    if config.loss in ("sogclr", "bayes"):
        params.setdefault("num_samples", len(dataset))
        params.setdefault("negatives", "views" if dataset.views else "cross")
    if config.loss == "sogclr" and params.get("gamma_schedule") == "cosine":
        params.setdefault("total_steps", config.steps)
    return build_loss(config.loss, **params)


class Trainer:
    """Holds a run's live objects; :func:`train` is the entry point."""

    def __init__(self, config: TrainConfig, dataset: PairDataset | None = None) -> None:
        config.validate()
        self.config = config
        self.device = distributed.local_device(resolve_device(config.device))
        self.dataset = (
            dataset if dataset is not None else build_dataset(config.dataset, **config.dataset_params)
        )
        if config.image_tower or config.text_tower or config.structure:
            raise ValueError(
                "image_tower, text_tower and structure apply to multimodal datasets only; "
                f"dataset {config.dataset!r} is a two-view/paired dataset"
            )
        if config.batch_size > len(self.dataset):
            raise ValueError(
                f"batch_size={config.batch_size} exceeds the training set size {len(self.dataset)} "
                f"of dataset {config.dataset!r}"
            )
        torch.manual_seed(config.seed)
        kind = config.model if config.model != "auto" else ("siamese" if self.dataset.views else "two_tower")
        in_a, in_b = self.dataset.in_dims
        self.model = build_pair_model(kind, in_a, in_b, model_size(config.model_size)).to(self.device)
        self.loss = loss_from_config(config, self.dataset).to(self.device)
        self.scale = None
        if config.learn_scale:
            init = 10.0 if config.loss == "siglip" else 1.0 / self.loss.temperature
            self.scale = LogitScale(init).to(self.device)
            if config.loss == "siglip":
                self.scale.bias = nn.Parameter(torch.tensor(-10.0, device=self.device))
        self.optimizer = self._optimizer()
        use_bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16)
        self.probe_index = self._probe_index()
        self.probe_views = self._probe_views()
        self._setup_distributed(shard_loss=True)

    # --- construction ---------------------------------------------------------------------------
    def _parameters(self) -> list[nn.Parameter]:
        params = list(self.model.parameters())
        if self.scale is not None:
            params += list(self.scale.parameters())
        return params

    def _extra_parameters(self) -> list[nn.Parameter]:
        """Trained parameters outside the model (DDP does not average their gradients)."""
        return [] if self.scale is None else list(self.scale.parameters())

    def _setup_distributed(self, shard_loss: bool) -> None:
        """Shard the batch and wrap the model in DDP when running under a process group.

        ``self.model`` stays the plain module (checkpoints, evaluation); ``self.train_model`` is what
        a training step calls. ``shard_loss``: the loss scores local anchors against gathered columns
        (a registry loss); otherwise the subclass gathers the features itself.
        """
        self.world_size = distributed.world_size()
        self.shard = distributed.shard_slice(self.config.batch_size)
        self.sharding = distributed.loss_sharding() if shard_loss else None
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=device_ids)

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "sgd":
            return torch.optim.SGD(self._parameters(), lr=c.lr, momentum=0.9, weight_decay=c.weight_decay)
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        return cls(self._parameters(), lr=c.lr, weight_decay=c.weight_decay)

    def _probe_index(self) -> Tensor:
        order = torch.randperm(len(self.dataset), generator=step_generator(self.config.seed, 0, stream=3))
        return order[: min(self.config.probe_size, len(self.dataset))].sort().values

    def _probe_views(self) -> tuple[Tensor, Tensor]:
        # Fixed augmentations so snapshots at different steps see the same inputs.
        gen = step_generator(self.config.seed, 0, stream=2)
        x_a, x_b = self.dataset.batch(self.probe_index, gen)
        return x_a.to(self.device), x_b.to(self.device)

    # --- one step ---------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        if self.config.schedule == "constant":
            return self.config.lr
        return 0.5 * self.config.lr * (1.0 + math.cos(math.pi * step / self.config.steps))

    def loss_kwargs(self) -> dict:
        if self.scale is None:
            return {}
        kwargs = {"scale": self.scale()}
        if hasattr(self.scale, "bias"):
            kwargs["bias"] = self.scale.bias
        return kwargs

    def train_step(self, step: int) -> float:
        """One optimiser step on the batch of ``step``; returns its loss (the mean over processes)."""
        c = self.config
        index = sample_batch(self.dataset, step, c.batch_size, c.seed)
        x_a, x_b = self.dataset.batch(index, step_generator(c.seed, step, stream=0))
        # Every process draws the same global batch and keeps its own rows, so the union of the
        # shards is the single-process batch (a no-op slice in one process).
        x_a, x_b, index = x_a[self.shard], x_b[self.shard], index[self.shard]
        x_a, x_b, index = x_a.to(self.device), x_b.to(self.device), index.to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.train()

        def loss_fn(z_a: Tensor, z_b: Tensor) -> Tensor:
            return self.loss(z_a, z_b, index=index, **self.loss_kwargs())

        # DDP reduces gradients at the end of one backward pass; GradCache runs several, so it drives
        # the plain module and its gradients are averaged below with the rest.
        gradcache = c.micro_batch is not None and c.micro_batch < x_a.shape[0]
        model = self.model if gradcache else self.train_model
        with self.loss.sharded(self.sharding):
            value = cached_backward(model, x_a, x_b, loss_fn, c.micro_batch, self.autocast)
        distributed.average_gradients(self._parameters() if gradcache else self._extra_parameters())
        self.optimizer.step()
        return distributed.average(float(value))

    # --- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def probe_embeddings(self) -> tuple[Tensor, Tensor]:
        self.model.eval()
        z_a, z_b = embed(self.model, *self.probe_views, micro_batch=1024, autocast=self.autocast)
        return nn.functional.normalize(z_a, dim=1), nn.functional.normalize(z_b, dim=1)

    @torch.no_grad()
    def evaluate(self, z_a: Tensor, z_b: Tensor) -> dict[str, float]:
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

    def downstream(self, z_a: Tensor, z_b: Tensor) -> dict[str, float]:
        """Costlier metrics computed at snapshot steps only (none for two-view/paired datasets)."""
        return {}

    def snapshot(self, z_a: Tensor, z_b: Tensor) -> dict[str, np.ndarray]:
        rows = self.probe_index.numpy()
        arrays = {"a": z_a.cpu().numpy(), "b": z_b.cpu().numpy(), "ids": self.dataset.ids[rows]}
        if self.dataset.labels is not None:
            arrays["labels"] = self.dataset.labels[rows]
        return arrays

    # --- checkpoints ----------------------------------------------------------------------------
    def state(self, step: int) -> dict:
        return {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss.state_dict(),
            "scale": None if self.scale is None else self.scale.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def load_state(self, state: dict) -> int:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.load_state_dict(state["loss"])
        if self.scale is not None:
            self.scale.load_state_dict(state["scale"])
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        return int(state["step"])


def knn_accuracy(z: Tensor, labels: Tensor, k: int = 5) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (cosine, majority vote) on unit-norm rows."""
    k = min(k, z.shape[0] - 1)
    sims = z @ z.T
    sims.fill_diagonal_(-float("inf"))
    neighbours = labels[sims.topk(k, dim=1).indices]
    votes = torch.zeros(z.shape[0], int(labels.max()) + 1, device=z.device)
    votes.scatter_add_(1, neighbours, torch.ones_like(neighbours, dtype=votes.dtype))
    return float((votes.argmax(dim=1) == labels).float().mean())


def make_trainer(config: TrainConfig) -> Trainer:
    """The trainer for the config's dataset: pairs/views (:class:`Trainer`) or multimodal."""
    config.validate()
    dataset = build_dataset(config.dataset, **config.dataset_params)
    if isinstance(dataset, PairDataset):
        return Trainer(config, dataset)
    from workbench.training.image_text import MultimodalTrainer

    return MultimodalTrainer(config, dataset)


def train(
    config: TrainConfig | dict,
    run_id: str | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
    on_step: Callable[[int, Trainer], None] | None = None,
) -> Run:
    """Train (or resume) a run and return it from the run store.

    Under torchrun (``WORLD_SIZE`` > 1) this joins the process group and trains with DDP on shards of
    the global batch. Process 0 evaluates and writes the run; every process returns it once process 0
    has finished, so the run store must be on a file system all processes see (always so on one node).

    Args:
        config: a :class:`TrainConfig` or a dict of its fields.
        run_id: the run's id; a run with this id and the same config resumes from its last
            checkpoint (a complete one is returned as is). None makes a new id.
        root: run-store root (default ``data/runs`` or ``$WORKBENCH_HOME/runs``).
        progress: show a tqdm progress bar.
        stop_at_step: stop early after this step, leaving the run resumable (as a kill would).
        on_step: called after every step with (step, trainer); for notebooks and tests.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    config.validate()
    # gloo for CPU training even where a GPU exists (NCCL only moves CUDA tensors)
    distributed.init_from_env("gloo" if resolve_device(config.device).type == "cpu" else None)
    trainer = make_trainer(config)  # validates before anything is written
    # Process 0 names the run and owns the run store; the others follow its decisions.
    run_id = distributed.run_on_main(
        lambda: run_id or new_run_id(f"{config.dataset}-{config.loss}-b{config.batch_size}")
    )
    path = runs_root(root) / run_id
    if distributed.run_on_main(lambda: _is_complete(path, config)):
        return load_run(path)
    main = distributed.is_main()
    writer = distributed.run_on_main(
        lambda: RunWriter.create(config.to_dict(), run_id=run_id, root=root), share=False
    )
    with writer if main else contextlib.nullcontext():
        start = 0
        checkpoint = distributed.run_on_main(lambda: writer.load_checkpoint())
        if checkpoint is not None:
            start = trainer.load_state(checkpoint)
            if main:
                writer.truncate_metrics(start)
        started = time.perf_counter()
        if start == 0 and main:
            # Curves start at the initialisation, so progress can be measured against it.
            writer.log_metrics(0, trainer.evaluate(*trainer.probe_embeddings()))
        distributed.sync_rng_state()
        recent: list[float] = []
        bar = tqdm(
            range(start, config.steps),
            disable=not (progress and main),
            desc=run_id,
            initial=start,
            total=config.steps,
        )
        for step in bar:
            value = trainer.train_step(step)
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step}; lower lr or raise temperature")
            recent.append(value)
            done = step + 1
            if done % config.eval_every == 0 or done == config.steps:
                if main:
                    train_loss = _record(trainer, writer, done, recent, trainer.lr_at(step))
                    bar.set_postfix(loss=f"{train_loss:.3f}")
                recent = []
                # evaluation may have drawn random numbers on process 0 only
                distributed.sync_rng_state()
            if main and (done % config.checkpoint_every == 0 or done == config.steps):
                # Metrics first: a kill between the two writes then only repeats work on resume
                # (rows after the checkpoint are recomputed), it never loses rows.
                writer.flush()
                writer.save_checkpoint(trainer.state(done))
            if on_step is not None:
                on_step(done, trainer)
            if stop_at_step is not None and done >= stop_at_step and done < config.steps:
                if main:
                    writer.flush()
                distributed.barrier()
                return load_run(path)
        if main:
            final = load_run(writer.path).metrics
            summary = {key: float(val) for key, val in final.iloc[-1].items() if key != "step"}
            summary.update(steps=config.steps, seconds=time.perf_counter() - started)
            writer.finish(summary)
    distributed.barrier()  # the other processes read the run only once process 0 has finished it
    return load_run(path)


def _is_complete(path: Path, config: TrainConfig) -> bool:
    """Whether the run at ``path`` is complete; raises if it is and its config differs."""
    if not ((path / "status.json").exists() and load_run(path).is_complete):
        return False
    done = load_run(path)
    wanted = json.loads(json.dumps(config.to_dict()))
    changed = sorted(key for key in set(wanted) | set(done.config) if wanted.get(key) != done.config.get(key))
    if changed:
        raise ValueError(
            f"run {path.name!r} is complete and its config differs (keys {changed}); "
            "choose another run_id to train with this config"
        )
    return True


def _record(trainer: Trainer, writer: RunWriter, done: int, recent: list[float], lr: float) -> float:
    """Evaluate after step ``done``, write the metrics (and a snapshot when due); returns the train loss."""
    config = trainer.config
    z_a, z_b = trainer.probe_embeddings()
    metrics = {"train_loss": float(np.mean(recent)), "lr": lr}
    metrics.update(trainer.evaluate(z_a, z_b))
    snapshot = done % config.snapshot_every == 0 or done == config.steps
    if snapshot:
        metrics.update(trainer.downstream(z_a, z_b))
    writer.log_metrics(done, metrics)
    if snapshot:
        writer.save_snapshot(done, trainer.snapshot(z_a, z_b))
    return metrics["train_loss"]


def _parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m workbench.train", description=__doc__.split("\n\n")[0])
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(getattr(defaults, f.name), dict):
            parser.add_argument(flag, type=json.loads, default={}, help="JSON object")
        elif f.name == "micro_batch":
            parser.add_argument(flag, type=int, default=None)
        elif f.name == "learn_scale":
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name))
    parser.add_argument("--run-id", default=None, help="resume this run if it exists")
    parser.add_argument("--root", default=None, help="run-store root")
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**values), args


def main(argv: list[str] | None = None) -> int:
    config, args = _parse_args(argv)
    try:
        run = train(config, run_id=args.run_id, root=args.root)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        distributed.cleanup()
    if distributed.env_world_size() == 1:
        print(f"run {run.run_id}: {run.status} -> {run.path}")
        return 0
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run {run.run_id}: {run.status} -> {run.path}")
    distributed.exit_process(0)  # see exit_process: interpreter shutdown can deadlock in gloo


if __name__ == "__main__":
    raise SystemExit(main())
