"""The article's small-batch convergence experiment, reproduced on simulated data.

Setting (see ``workbench.data.synthetic``): N paired samples with a fraction ``noise`` of injected
near-duplicates, two linear towers, temperature 0.1. Every loss targets the same global objective,
symmetric InfoNCE over all N samples (``clip`` at B = N). For each noise level, batch size, loss and
seed (the seed sets the initialisation and the batch order) we train with Adam and a cosine schedule
and track the normalised progress

    progress_t = (L(theta_0) - L(theta_t)) / (L(theta_0) - L*),

which is exactly 1.0 at the optimum of the global objective. L* is the lowest global objective that
full-batch training (B = N, where minibatch and global gradients coincide) reaches from several
initialisations. A run "reaches the optimum" when its final progress is >= ``reach``.

The experiment is a :class:`ConvergenceGrid`, trained by ``workbench.labs.grid.run_grid``: every
training run lands in the run store (``<tag>-...`` ids, resumable and skipped once complete), and a
``<tag>-summary`` run holds the tables ``runs`` (one row per run) and ``summary``. Command line (one
flag per grid field): ``workbench lab convergence --help``, or ``python -m workbench.labs.convergence``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from workbench.labs.grid import (
    Check,
    Grid,
    Point,
    axis,
    check_axis,
    choices,
    ints,
    lab_main,
    numbers,
)
from workbench.losses import select_specs
from workbench.store.runs import Run, load_run, slug
from workbench.training.trainer import TrainConfig

DEFAULT_LOSSES: dict[str, dict] = {
    "clip": {"name": "clip"},
    "sogclr": {"name": "sogclr"},
    "bayes": {"name": "bayes"},
    "bayes-point": {"name": "bayes", "shape": math.inf},
}
# The defaults plus the ablation of RESULTS.md section 2: SogCLR's fast-tracking gamma, but the Gamma
# rate still taken from the estimate before the batch.
ALL_LOSSES: dict[str, dict] = {**DEFAULT_LOSSES, "bayes-g0.9": {"name": "bayes", "gamma": 0.9}}


def loss_specs(labels: Sequence[str] | None = None) -> dict[str, dict]:
    """Specs of :data:`ALL_LOSSES` for ``labels`` (:data:`DEFAULT_LOSSES` when None), in the given order.

    Raises:
        ValueError: ``labels`` is empty, a plain string, or names a label outside ``ALL_LOSSES``.
    """
    return select_specs(labels, ALL_LOSSES, DEFAULT_LOSSES)


def experiment_config(
    loss: dict,
    batch_size: int,
    seed: int,
    noise: float,
    num_samples: int,
    steps: int,
    lr: float,
    temperature: float,
) -> TrainConfig:
    params = {key: value for key, value in loss.items() if key != "name"}
    params["temperature"] = temperature
    return TrainConfig.from_dict(
        dict(
            dataset="synthetic",
            dataset_params={"num_samples": num_samples, "noise": noise},
            model="two_tower",
            model_size="linear",
            loss=loss["name"],
            loss_params=params,
            batch_size=batch_size,
            optimizer="adam",
            lr=lr,
            schedule="cosine",
            steps=steps,
            seed=seed,
            eval_every=max(1, steps // 20),
            snapshot_every=steps,
            checkpoint_every=max(1, steps // 4),
            probe_size=num_samples,  # the global objective is evaluated on all N samples
        )
    )


def _check_losses(name: str, losses: Any) -> dict[str, dict]:
    """Loss labels (see :func:`loss_specs`) or a dict label -> {"name": registry name, **params}."""
    if losses is None or (isinstance(losses, Sequence) and not isinstance(losses, (str, bytes))):
        return loss_specs(losses)
    if not isinstance(losses, dict) or not losses:
        raise ValueError(f"{name} must be loss labels or a non-empty dict of loss specs, got {losses!r}")
    for label, spec in losses.items():
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"{name}[{label!r}] must be a dict with a 'name', got {spec!r}")
    return {label: dict(spec) for label, spec in losses.items()}


@dataclass(frozen=True)
class ConvergenceGrid(Grid):
    """The article's small-batch convergence experiment: progress to the optimum per noise, B and loss.

    For each noise level, ``reference_seeds`` full-batch runs (B = N) define L*, and every (batch size,
    loss, seed) trains one minibatch run. Run ids ``<tag>-n<noise>-fullbatch-s<seed>`` and
    ``<tag>-n<noise>-<loss label>-b<B>-s<seed>``: they name the noise, loss label, batch size and
    seed only, so the tag must change with anything else that changes a run (steps, lr, ...).

    Summary: one row per (noise, batch_size, loss): progress mean / std / min, excess loss mean / std,
    the runs that reached the optimum, the runs and L*. The ``runs`` table has every run, the
    full-batch ones included (``kind`` reference), with its initial and final global loss.

    Attributes:
        noise_levels: fractions of injected near-duplicates, each in [0, 0.5].
        batch_sizes: minibatch sizes, each in [2, num_samples].
        losses: loss labels (clip, sogclr, bayes, bayes-point, bayes-g0.9, or all), or a dict label ->
            {"name": registry name, **params}; default clip, sogclr, bayes, bayes-point.
        num_samples: N, the size of the simulated data set; the global objective sums over all N.
        temperature: the temperature every loss shares.
        reference_seeds: full-batch runs per noise level; the lowest final loss defines L*.
        reference_steps: steps of each full-batch run.
        reference_lr: peak learning rate of the full-batch runs (cosine schedule to 0).
        reach: a run reaches the optimum when its final progress is at least this, in (0, 1].
    """

    seeds: int = 10
    steps: int = 2000
    lr: float = 0.01
    tag: str = "convergence"
    noise_levels: tuple[float, ...] = (0.0, 0.25, 0.5)
    batch_sizes: tuple[int, ...] = (4, 16)
    losses: dict[str, dict] | tuple[str, ...] | None = None
    num_samples: int = 256
    temperature: float = 0.1
    reference_seeds: int = 3
    reference_steps: int = 3000
    reference_lr: float = 0.02
    reach: float = 0.99

    kind = "convergence"
    checks: ClassVar[dict[str, Check]] = {
        **Grid.checks,
        "noise_levels": axis(numbers(0.0, 0.5)),
        "losses": _check_losses,
        "num_samples": ints(4),
        "reference_seeds": ints(1),
        "reference_steps": ints(1),
        "reference_lr": numbers(0.0, open_low=True),
        "reach": numbers(0.0, 1.0, open_low=True),
    }
    cli_options: ClassVar[dict[str, dict[str, Any]]] = {
        "noise_levels": {"aliases": ("--noise",)},
        "losses": {"nargs": "+", "type": str, "metavar": "LABEL"},
    }
    cli_flags: ClassVar[dict[str, dict[str, Any]]] = {
        "--with-ablation": {
            "dest": "losses",
            "action": "store_const",
            "const": ["all"],
            "help": "every loss label, bayes with gamma=0.9 (a fast-tracking estimate) included",
        }
    }

    def __post_init__(self) -> None:
        super().__post_init__()

        def batch_size(name: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= self.num_samples:
                raise ValueError(f"{name} must lie in [2, num_samples={self.num_samples}], got {value!r}")
            return value

        self._set("batch_sizes", check_axis("batch_sizes", self.batch_sizes, batch_size))
        from workbench.losses import build_loss

        for spec in self.losses.values():  # every loss is built once, so a bad parameter fails here
            params = {key: value for key, value in spec.items() if key != "name"}
            if spec["name"] in ("sogclr", "bayes"):
                params["num_samples"] = self.num_samples
            build_loss(spec["name"], **{**params, "temperature": self.temperature})

    def points(self) -> list[Point]:
        clip, n = {"name": "clip"}, self.num_samples
        points = []
        for noise in self.noise_levels:
            config = experiment_config(
                clip, n, 0, noise, n, self.reference_steps, self.reference_lr, self.temperature
            )
            coords = {"kind": "reference", "noise": noise, "batch_size": n, "loss": "full-batch"}
            points.append(Point(coords, f"n{slug(noise)}-fullbatch", config, range(self.reference_seeds)))
            for batch_size in self.batch_sizes:
                for label, spec in self.losses.items():
                    config = experiment_config(
                        spec, batch_size, 0, noise, n, self.steps, self.lr, self.temperature
                    )
                    coords = {"kind": "run", "noise": noise, "batch_size": batch_size, "loss": label}
                    slug_ = f"n{slug(noise)}-{label}-b{batch_size}"
                    points.append(Point(coords, slug_, config, range(self.seeds)))
        return points

    def measure(self, run: Run) -> dict[str, float]:
        metrics = run.metrics
        return {
            "initial": float(metrics["global_loss"].iloc[0]),
            "final": float(metrics["global_loss"].iloc[-1]),
        }

    def summarize(
        self, table: pd.DataFrame, points: list[Point]
    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """Progress against L*, the best final global loss of the full-batch runs of each noise level."""
        optimum = table[table.kind == "reference"].groupby("noise")["final"].min().rename("optimum")
        table = table.join(optimum, on="noise")
        table["progress"] = (table.initial - table.final) / (table.initial - table.optimum)
        table["excess"] = table.final - table.optimum
        table["reached"] = table.progress >= self.reach
        runs = table[table.kind == "run"].drop(columns="kind")
        summary = (
            runs.groupby(["noise", "batch_size", "loss"], sort=False)
            .agg(
                progress_mean=("progress", "mean"),
                progress_std=("progress", "std"),
                progress_min=("progress", "min"),
                excess_mean=("excess", "mean"),
                excess_std=("excess", "std"),
                reached=("reached", "sum"),
                runs=("seed", "count"),
                optimum=("optimum", "first"),
            )
            .reset_index()
        )
        totals = {"settings": len(summary), "runs": len(runs), "mean_progress": float(np.mean(runs.progress))}
        return table, summary, totals


def progress_curves(summary_run: str, root: str | Path | None = None) -> pd.DataFrame:
    """Long table (run_id, noise, batch_size, loss, seed, step, progress) for plotting the curves."""
    run = load_run(summary_run, root=root)
    table = run.table("runs")
    frames = []
    for row in table[table.kind == "run"].itertuples():
        metrics = load_run(row.run_id, root=root).metrics[["step", "global_loss"]]
        progress = (row.initial - metrics.global_loss) / (row.initial - row.optimum)
        frames.append(
            pd.DataFrame(
                {
                    "run_id": row.run_id,
                    "noise": row.noise,
                    "batch_size": row.batch_size,
                    "loss": row.loss,
                    "seed": row.seed,
                    "step": metrics.step,
                    "progress": progress,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------ real data

SMALL_BATCH_LOSSES: dict[str, dict] = {
    "clip": {"name": "clip"},
    "sogclr": {"name": "sogclr"},
    "bayes": {"name": "bayes"},  # the bank E-step (the default)
    "bayes-running": {"name": "bayes", "estimator": "running"},
}
SMALL_BATCH_TASKS = ("views", "captions")
SMALL_BATCH_TOWER: dict = {"hidden": 128, "depth": 2, "out_dim": 64}


@dataclass(frozen=True)
class SmallBatchGrid(Grid):
    """Small-batch representation learning on real data: accuracy against batch size at equal steps.

    ``views``: SimCLR-style training on two augmented views of sklearn's 1,797 digits (``digits_views``,
    the small siamese MLP); measured by kNN accuracy (k = 5) on held-out rows. ``captions``: CLIP-style
    training on the digits and their generated captions (``digits_captions``, the packaged MiniLM,
    frozen, under trainable MLP towers); measured by zero-shot accuracy, a linear probe on the image
    embeddings and mean retrieval recall. Every run takes ``steps`` Adam steps at a constant lr, so a
    smaller batch sees less data: this asks what a fixed number of updates buys at each batch size.
    Run ids ``<tag>-<task>-<loss>-b<B>-s<seed>``.

    Attributes:
        tasks: views and/or captions.
        batch_sizes: each in [2, 1024].
        losses: labels among clip, sogclr, bayes (the bank E-step), bayes-running.
        temperature: the fixed temperature of every loss.
    """

    seeds: int = 3
    steps: int = 200
    lr: float = 1e-3
    tag: str = "smallbatch"
    tasks: tuple[str, ...] = SMALL_BATCH_TASKS
    batch_sizes: tuple[int, ...] = (4, 16, 64)
    losses: tuple[str, ...] = tuple(SMALL_BATCH_LOSSES)
    temperature: float = 0.1

    kind = "small_batch"
    metrics = ("knn_acc", "zero_shot_acc", "linear_probe_acc", "mean_R")
    checks: ClassVar[dict[str, Check]] = {
        **Grid.checks,
        "tasks": axis(choices(SMALL_BATCH_TASKS)),
        "batch_sizes": axis(ints(2)),
        "losses": axis(choices(tuple(SMALL_BATCH_LOSSES))),
    }
    cli_options: ClassVar[dict[str, dict[str, Any]]] = {
        "losses": {"nargs": "+", "type": str, "metavar": "LABEL"}
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if max(self.batch_sizes) > 1024:
            raise ValueError(
                f"batch_sizes must be <= 1024 (the digits' training rows), got {self.batch_sizes}"
            )

    def config(self, task: str, loss: str, batch_size: int) -> TrainConfig:
        spec = SMALL_BATCH_LOSSES[loss]
        params = {key: value for key, value in spec.items() if key != "name"}
        common = dict(
            loss=spec["name"],
            loss_params={**params, "temperature": self.temperature},
            batch_size=batch_size,
            optimizer="adam",
            lr=self.lr,
            schedule="constant",
            steps=self.steps,
            seed=0,
            eval_every=self.steps,
            snapshot_every=self.steps,
            checkpoint_every=self.steps,
        )
        if task == "views":
            return TrainConfig.from_dict(
                dict(dataset="digits_views", model_size="small", probe_size=512, **common)
            )
        return TrainConfig.from_dict(
            dict(
                dataset="digits_captions",
                dataset_params={"text_encoder": "minilm"},
                image_tower=dict(SMALL_BATCH_TOWER),
                text_tower=dict(SMALL_BATCH_TOWER),
                probe_size=449,  # the whole test split
                **common,
            )
        )

    def points(self) -> list[Point]:
        return [
            Point(
                {"task": task, "batch_size": b, "loss": loss},
                f"{task}-{loss}-b{b}",
                self.config(task, loss, b),
                range(self.seeds),
            )
            for task in self.tasks
            for b in self.batch_sizes
            for loss in self.losses
        ]


def main(argv: list[str] | None = None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["smallbatch"]:  # the real-data grid; the default command is the simulated one
        prog = "python -m workbench.labs.convergence smallbatch"
        return lab_main(args[1:], prog, __doc__, SmallBatchGrid)
    return lab_main(args, "python -m workbench.labs.convergence", __doc__, ConvergenceGrid)


if __name__ == "__main__":
    raise SystemExit(main())
