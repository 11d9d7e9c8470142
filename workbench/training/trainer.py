"""One training loop for every kind of model: any dataset, any loss, any batch size, resumable.

The loop reads top to bottom: build the data and the task (:mod:`workbench.training.tasks`: pairs or
image-text) from a :class:`TrainConfig`; for each step draw the batch of (seed, step), compute the exact
gradient of the loss on it (through GradCache when ``micro_batch`` is smaller than the batch), take an
optimiser step, and now and then evaluate, snapshot the probe embeddings and checkpoint. Everything
lands in the run store; a run started again with the same ``run_id`` resumes from its last checkpoint.

CPU recipe (2 cores; timings in BENCHMARKS.md)::

    python -m workbench.train --dataset digits_views --loss ntxent --batch-size 128 --steps 300

Several processes (``torchrun --nproc-per-node N -m workbench.train ...``): the model is wrapped in
DistributedDataParallel and every process trains on its ``batch_size / N`` rows of the same global
batch; the losses gather the features of all processes (see ``workbench.training.distributed``), so the
gradient is the single-process one. Process 0 alone evaluates and writes the run store.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from workbench.data import build_dataset
from workbench.store.runs import Run, RunWriter, config_diff, load_run, new_run_id, runs_root
from workbench.training import distributed
from workbench.training.config import (
    FusionConfig,
    ImageTextConfig,
    PairConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    resolve_device,
)
from workbench.training.fusion import FusionTask
from workbench.training.gradcache import cached_backward_features
from workbench.training.image_text import ImageTextTask
from workbench.training.pairs import PairTask
from workbench.training.tasks import Task

__all__ = ["FusionConfig", "ImageTextConfig", "PairConfig", "TrainConfig", "Trainer", "train"]

TASKS: dict[str, type[Task]] = {"pairs": PairTask, "image_text": ImageTextTask, "fusion": FusionTask}


class Trainer:
    """The training loop's live objects: device, precision, task, optimiser, DDP; :func:`train` runs it.

    Args:
        config: the run's config (validated when it was built).
        dataset: the built dataset, when the caller already has it; else built from the config.
    """

    def __init__(self, config: TrainConfig, dataset=None) -> None:
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.device = distributed.local_device(resolve_device(config.device))
        if dataset is None:
            dataset = build_dataset(config.dataset, **config.dataset_params)
        self.dataset = dataset
        use_bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16)
        torch.manual_seed(config.seed)
        self.task = TASKS[config.kind](config, self.dataset, self.device, self.autocast)
        rows = self.task.num_train_rows()
        if config.batch_size > rows:
            raise ValueError(
                f"batch_size={config.batch_size} exceeds the training set size {rows} "
                f"of dataset {config.dataset!r}"
            )
        if config.micro_batch is not None and not self.task.supports_gradcache:
            raise ValueError(
                f"micro_batch (GradCache) does not apply to {config.kind} training: its loss couples rows "
                "beyond per-row features; leave micro_batch unset"
            )
        self.model = self.task.model
        self.loss = self.task.loss
        self.optimizer = self._optimizer()
        self.world_size = distributed.world_size()
        self.shard = distributed.shard_slice(config.batch_size)
        # self.model stays the plain module (checkpoints, evaluation); train_model is what a step calls
        self.train_model: nn.Module = self.model
        if self.world_size > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(
                self.model, device_ids=device_ids, find_unused_parameters=self.task.unused_parameters
            )

    def _optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = self.task.parameters()
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.lr, momentum=0.9, weight_decay=c.weight_decay)
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=c.lr, weight_decay=c.weight_decay)

    def lr_at(self, step: int) -> float:
        if self.config.schedule == "constant":
            return self.config.lr
        return 0.5 * self.config.lr * (1.0 + math.cos(math.pi * step / self.config.steps))

    def train_step(self, step: int) -> Tensor:
        """One optimiser step on the batch of ``step``; returns its loss as a detached tensor.

        Nothing here reads a tensor's value on the host, so a CUDA step never waits for the device;
        :func:`train` checks the losses once per logging interval.
        """
        c = self.config
        inputs, index = self.task.batch(step)
        # Every process draws the same global batch and keeps its own rows, so the union of the
        # shards is the single-process batch (a no-op slice in one process).
        inputs = {key: value[self.shard].to(self.device) for key, value in inputs.items()}
        index = index.to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.train()
        # DDP reduces gradients at the end of one backward pass; GradCache runs several, so it drives
        # the plain module and its gradients are averaged below with the rest.
        rows = next(iter(inputs.values())).shape[0]
        gradcache = c.micro_batch is not None and c.micro_batch < rows
        model = self.model if gradcache else self.train_model
        value = cached_backward_features(
            lambda part: self.task.forward(model, part),
            inputs,
            lambda features: self.task.batch_loss(features, index, self.shard),
            c.micro_batch if gradcache else None,
            self.autocast,
        )
        distributed.average_gradients(self.task.parameters() if gradcache else self.task.extra_parameters())
        self.optimizer.step()
        return value

    # --- checkpoints ----------------------------------------------------------------------------
    def state(self, step: int) -> dict:
        return {
            "step": step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss.state_dict(),
            "scale": self.task.extra_state(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def load_state(self, state: dict) -> int:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.loss.load_state_dict(state["loss"])
        self.task.load_extra_state(state.get("scale"))
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        return int(state["step"])


def train(
    config: TrainConfig | dict,
    run_id: str | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
    on_step: Callable[[int, Trainer], None] | None = None,
    restart: bool = False,
) -> Run:
    """Train (or resume) a run and return it from the run store.

    Under torchrun (``WORLD_SIZE`` > 1) this joins the process group and trains with DDP on shards of
    the global batch. Process 0 evaluates and writes the run; every process returns it once process 0
    has finished, so the run store must be on a file system all processes see (always so on one node).

    Args:
        config: a :class:`TrainConfig` or a flat dict of its fields (as in ``config.json``).
        run_id: the run's id; a run with this id and the same config resumes from its last
            checkpoint (a complete one is returned as is). None makes a new id.
        root: run-store root (default ``data/runs`` or ``$WORKBENCH_HOME/runs``).
        progress: show a tqdm progress bar.
        stop_at_step: stop early after this step, leaving the run resumable (as a kill would).
        on_step: called after every step with (step, trainer); for notebooks and tests.
        restart: forget what the run trained so far (checkpoint, metrics, snapshots) and start it from
            step 0; for a run whose checkpoint is damaged. A complete run is never restarted.

    Raises:
        ValueError: a bad config, or a complete run with this id and another config; nothing is written.
        FloatingPointError: the loss became NaN or infinite (the message names the step).
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    # gloo for CPU training even where a GPU exists (NCCL only moves CUDA tensors)
    distributed.init_from_env("gloo" if resolve_device(config.device).type == "cpu" else None)
    trainer = Trainer(config)  # everything is checked before anything is written
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
        if restart and main:
            writer.restart()
        checkpoint = distributed.run_on_main(lambda: writer.load_checkpoint())
        recent: list[Tensor] = []
        if checkpoint is not None:
            start = trainer.load_state(checkpoint)
            # the losses since the last evaluation, so the next logged train_loss is the uninterrupted one
            recent = [torch.tensor(v, dtype=torch.float64) for v in checkpoint.get("recent_losses", [])]
            if main:
                writer.truncate_metrics(start)
        started = time.perf_counter()
        if start == 0 and main:
            # Curves start at the initialisation, so progress can be measured against it.
            probe = trainer.task.probe()
            writer.log_metrics(0, trainer.task.evaluate(probe))
        distributed.sync_rng_state()
        bar = tqdm(
            range(start, config.steps),
            disable=not (progress and main),
            desc=run_id,
            initial=start,
            total=config.steps,
        )
        for step in bar:
            recent.append(trainer.train_step(step))
            done = step + 1
            evaluate = done % config.eval_every == 0 or done == config.steps
            checkpoint_due = done % config.checkpoint_every == 0 or done == config.steps
            if evaluate or checkpoint_due:
                losses = _finite_losses(recent, done)  # the one host read of the losses per interval
            if evaluate:
                if main:
                    train_loss = _record(trainer, writer, done, losses, trainer.lr_at(step))
                    bar.set_postfix(loss=f"{train_loss:.3f}")
                recent = []
                # evaluation may have drawn random numbers on process 0 only
                distributed.sync_rng_state()
            if main and checkpoint_due:
                # Metrics first: a kill between the two writes then only repeats work on resume
                # (rows after the checkpoint are recomputed), it never loses rows.
                writer.flush()
                state = trainer.state(done)
                # the (process-averaged) losses since the last evaluation: resuming logs the same train_loss
                state["recent_losses"] = [] if evaluate else losses
                writer.save_checkpoint(state)
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


def _finite_losses(recent: list[Tensor], done: int) -> list[float]:
    """The losses of the steps since the last check (means over processes); raises at a non-finite one.

    Under torchrun each process's loss covers its own anchors, so the mean over processes is the loss
    of the global batch.
    """
    local = torch.stack([v.to(recent[-1].device, torch.float64) for v in recent]).tolist() if recent else []
    values = distributed.average_values(local)
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            step = done - len(values) + offset
            raise FloatingPointError(
                f"the training loss became {value} at step {step} (0-based); the run stopped and its last "
                "checkpoint is intact. Lower lr, raise the temperature, or use precision='fp32'"
            )
    return values


def _is_complete(path: Path, config: TrainConfig) -> bool:
    """Whether the run at ``path`` is complete; raises if it is and its config differs."""
    if not ((path / "status.json").exists() and load_run(path).is_complete):
        return False
    done = load_run(path)
    wanted = config.to_dict()
    try:  # configs written before the task blocks existed carry every key: read them the same way
        stored = TrainConfig.from_dict(done.config).to_dict()
    except ValueError:
        stored = done.config
    changed = config_diff(stored, wanted)
    if changed:
        raise ValueError(
            f"run {path.name!r} is complete and its config differs (keys {changed}); "
            "choose another run_id to train with this config"
        )
    return True


def _record(trainer: Trainer, writer: RunWriter, done: int, losses: list[float], lr: float) -> float:
    """Evaluate after step ``done``, write the metrics (and a snapshot when due); returns the train loss."""
    config, task = trainer.config, trainer.task
    probe = task.probe()
    metrics = {"train_loss": float(np.mean(losses)), "lr": lr}
    metrics.update(task.evaluate(probe))
    snapshot = done % config.snapshot_every == 0 or done == config.steps
    if snapshot:
        metrics.update(task.downstream(probe))
    writer.log_metrics(done, metrics)
    if snapshot:
        writer.save_snapshot(done, task.snapshot(probe))
    return metrics["train_loss"]


def parse_args(argv: list[str] | None = None, prog: str = "python -m workbench.train") -> argparse.Namespace:
    """The trainer's command line: one flag per config key (see :func:`add_config_arguments`)."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--run-id", default=None, help="resume this run if it exists")
    parser.add_argument("--root", default=None, help="run-store root")
    parser.add_argument(
        "--restart", action="store_true", help="train the run again from step 0 (its checkpoint is damaged)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run = train(config_from_args(args), run_id=args.run_id, root=args.root, restart=args.restart)
    except (ValueError, FloatingPointError) as err:
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
