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

Every training run lands in the run store (``<tag>-...`` ids, resumable and skipped once complete),
and a ``<tag>-summary`` run holds the tables ``runs`` (one row per run) and ``summary``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.losses import select_specs
from workbench.store.runs import RunWriter, load_run
from workbench.training.trainer import TrainConfig, train

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
    return TrainConfig.from_dict(dict(
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
    ))


def _train_one(job: tuple[str, TrainConfig, str | None]) -> str:
    run_id, config, root = job
    import torch

    torch.set_num_threads(1)  # many tiny runs: one thread per process beats shared threads
    return str(train(config, run_id=run_id, root=root, progress=False).path)


def _run_all(jobs: list[tuple[str, TrainConfig, str | None]], workers: int) -> list[str]:
    if workers <= 1:
        return [_train_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_train_one, jobs))


def _slug(value: float) -> str:
    return f"{value:g}".replace(".", "p")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_convergence(
    noise_levels: Sequence[float] = (0.0, 0.25, 0.5),
    batch_sizes: Sequence[int] = (4, 16),
    losses: dict[str, dict] | None = None,
    seeds: int = 10,
    steps: int = 2000,
    num_samples: int = 256,
    lr: float = 0.01,
    temperature: float = 0.1,
    reference_seeds: int = 3,
    reference_steps: int = 3000,
    reach: float = 0.99,
    workers: int | None = None,
    reference_lr: float = 0.02,
) -> dict[str, dict]:
    """Check :func:`run_convergence`'s arguments before anything trains; return the loss specs.

    Every loss is built once at ``num_samples`` and ``temperature``, so a bad loss parameter fails here.

    Raises:
        ValueError: naming the parameter and its allowed values.
    """
    from workbench.losses import build_loss

    losses = dict(DEFAULT_LOSSES if losses is None else losses)
    if not losses:
        raise ValueError("losses must name at least one loss")
    if not _is_int(num_samples) or num_samples < 4:
        raise ValueError(f"num_samples must be an integer >= 4, got {num_samples!r}")
    if not list(noise_levels) or not list(batch_sizes):
        raise ValueError("noise_levels and batch_sizes must each hold at least one value")
    for noise in noise_levels:
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not 0 <= noise <= 0.5:
            raise ValueError(f"noise_levels must lie in [0, 0.5], got {noise!r}")
    for batch_size in batch_sizes:
        if not _is_int(batch_size) or not 2 <= batch_size <= num_samples:
            raise ValueError(f"batch_sizes must lie in [2, num_samples={num_samples}], got {batch_size!r}")
    if not _is_int(seeds) or not _is_int(reference_seeds) or seeds < 1 or reference_seeds < 1:
        raise ValueError("seeds and reference_seeds must be >= 1")
    if not _is_int(steps) or not _is_int(reference_steps) or steps < 1 or reference_steps < 1:
        raise ValueError(
            f"steps and reference_steps must be integers >= 1, got {steps!r}, {reference_steps!r}"
        )
    for name, value in (("lr", lr), ("reference_lr", reference_lr)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not 0 < reach <= 1:
        raise ValueError(f"reach must be in (0, 1], got {reach!r}")
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1 or None, got {workers!r}")
    for label, spec in losses.items():
        if not isinstance(spec, dict) or "name" not in spec:
            raise ValueError(f"losses[{label!r}] must be a dict with a 'name', got {spec!r}")
        params = {key: value for key, value in spec.items() if key != "name"}
        if spec["name"] in ("sogclr", "bayes"):
            params["num_samples"] = num_samples
        build_loss(spec["name"], **{**params, "temperature": temperature})
    return losses


def run_convergence(
    noise_levels: Sequence[float] = (0.0, 0.25, 0.5),
    batch_sizes: Sequence[int] = (4, 16),
    losses: dict[str, dict] | None = None,
    seeds: int = 10,
    steps: int = 2000,
    num_samples: int = 256,
    lr: float = 0.01,
    temperature: float = 0.1,
    reference_seeds: int = 3,
    reference_steps: int = 3000,
    reference_lr: float = 0.02,
    reach: float = 0.99,
    workers: int | None = None,
    tag: str = "convergence",
    root: str | Path | None = None,
    summary_id: str | None = None,
) -> pd.DataFrame:
    """Run the experiment; return one row per (noise, batch size, loss) with mean/std over seeds.

    Args:
        noise_levels: fractions of near-duplicates, each in [0, 0.5].
        batch_sizes: minibatch sizes, each in [2, num_samples].
        losses: label -> {"name": registry name, **params}; default clip, sogclr, bayes, bayes-point.
        seeds: runs (initialisations) per setting.
        steps, lr: training length and peak learning rate (cosine schedule to 0).
        num_samples, temperature: the data size and the shared temperature.
        reference_seeds, reference_steps, reference_lr: full-batch runs that define L*.
        reach: final progress counted as reaching the optimum.
        workers: parallel processes (default: CPU count, at most 4).
        tag: prefix of the run ids. A training run's id names its noise, loss label, batch size and
            seed, so the tag must change with anything else that changes its config (steps, lr, ...).
        root: run-store root.
        summary_id: id of the summary run (default ``<tag>-summary``). Its config lists the whole grid,
            so grids that share a tag but differ in their lists need distinct summary ids.
    """
    losses = validate_convergence(
        noise_levels,
        batch_sizes,
        losses,
        seeds,
        steps,
        num_samples,
        lr,
        temperature,
        reference_seeds,
        reference_steps,
        reach,
        workers,
        reference_lr=reference_lr,
    )
    workers = workers or min(4, os.cpu_count() or 1)
    root_arg = None if root is None else str(root)
    clip = {"name": "clip"}

    jobs, keys = [], []
    for noise in noise_levels:
        for seed in range(reference_seeds):
            config = experiment_config(
                clip, num_samples, seed, noise, num_samples, reference_steps, reference_lr, temperature
            )
            jobs.append((f"{tag}-n{_slug(noise)}-fullbatch-s{seed}", config, root_arg))
            keys.append(("reference", noise, num_samples, "full-batch", seed))
        for batch_size in batch_sizes:
            for label, spec in losses.items():
                for seed in range(seeds):
                    config = experiment_config(
                        spec, batch_size, seed, noise, num_samples, steps, lr, temperature
                    )
                    run_id = f"{tag}-n{_slug(noise)}-{label}-b{batch_size}-s{seed}"
                    jobs.append((run_id, config, root_arg))
                    keys.append(("run", noise, batch_size, label, seed))
    paths = _run_all(jobs, workers)

    records = []
    for (kind, noise, batch_size, label, seed), path in zip(keys, paths, strict=True):
        metrics = load_run(path).metrics
        records.append(
            {
                "kind": kind,
                "noise": noise,
                "batch_size": batch_size,
                "loss": label,
                "seed": seed,
                "run_id": Path(path).name,
                "initial": float(metrics["global_loss"].iloc[0]),
                "final": float(metrics["global_loss"].iloc[-1]),
            }
        )
    table = pd.DataFrame(records)
    optimum = table[table.kind == "reference"].groupby("noise")["final"].min().rename("optimum")
    table = table.join(optimum, on="noise")
    table["progress"] = (table.initial - table.final) / (table.initial - table.optimum)
    table["excess"] = table.final - table.optimum
    table["reached"] = table.progress >= reach
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
    config = {
        "kind": "convergence",
        "noise_levels": list(noise_levels),
        "batch_sizes": list(batch_sizes),
        "losses": losses,
        "seeds": seeds,
        "steps": steps,
        "num_samples": num_samples,
        "lr": lr,
        "temperature": temperature,
        "reference": {"seeds": reference_seeds, "steps": reference_steps, "lr": reference_lr},
        "reach": reach,
    }
    with RunWriter.create(config, run_id=summary_id or f"{tag}-summary", root=root) as writer:
        writer.save_table("runs", table)
        writer.save_table("summary", summary)
        writer.finish(
            {"settings": len(summary), "runs": len(runs), "mean_progress": float(np.mean(runs.progress))}
        )
    return summary


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m workbench.labs.convergence", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--tag", default="convergence")
    parser.add_argument("--root", default=None)
    parser.add_argument(
        "--with-ablation", action="store_true", help="add bayes with gamma=0.9 (a fast-tracking estimate)"
    )
    args = parser.parse_args(argv)
    losses = dict(ALL_LOSSES if args.with_ablation else DEFAULT_LOSSES)
    try:
        summary = run_convergence(
            noise_levels=args.noise,
            batch_sizes=args.batch_sizes,
            losses=losses,
            seeds=args.seeds,
            steps=args.steps,
            workers=args.workers,
            tag=args.tag,
            root=args.root,
        )
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
