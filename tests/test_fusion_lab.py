"""The fusion ablation grid: its plan, its checks, and the verdict table against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from workbench.labs.fusion import FusionStructureGrid, compare_to_base
from workbench.labs.grid import run_grid


def test_plan_names_every_variant_and_builds_fusion_configs(tmp_path):
    grid = FusionStructureGrid(seeds=2, steps=8, model_size="tiny", root=tmp_path, variants=("clip", "all"))
    plan = run_grid(grid, plan_only=True)
    assert plan.variant.tolist() == ["clip", "clip", "all", "all"]
    assert plan.run_id.tolist()[0] == "fusion-structure-digits_captions-clip-s0"
    point = grid.points()[1]
    assert point.config.model == "fusion" and point.config.task.model_size == "tiny"
    assert point.config.task.structure == {
        "mode": "four_term",
        "weights": {"separation": 1.0, "bridge": 1.0, "consistency": 1.0},
    }
    assert not list(tmp_path.iterdir())  # planning writes nothing


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"model_size": "huge"}, "model_size must be one of tiny, small, base"),
        ({"objective_weights": {"itm": -1}}, r"objective_weights\['itm'\]"),
        ({"regularizers": ("dropout",)}, "regularizers entries must be one of"),
        ({"snapshots": 9, "steps": 8}, "snapshots must be <= steps"),
        ({"variants": ("nope",)}, "variants entries must be one of"),
    ],
)
def test_bad_values_name_the_field(values, match):
    with pytest.raises(ValueError, match=match):
        FusionStructureGrid(**values)


def test_compare_to_base_by_hand():
    summary = pd.DataFrame(
        {
            "variant": ["clip", "bridge", "all"],
            "regularizers": ["", "bridge", "separation+bridge+consistency"],
            "runs": [3, 3, 1],
            "vqa_acc_mean": [0.70, 0.80, 0.71],
            "vqa_acc_std": [0.01, 0.02, math.nan],
            "centroid_gap_mean": [0.40, 0.10, 0.38],
            "centroid_gap_std": [0.01, 0.01, math.nan],
        }
    )
    table = compare_to_base(summary, ["vqa_acc", "centroid_gap"]).set_index(["variant", "metric"])
    se = math.sqrt(0.02**2 / 3 + 0.01**2 / 3)
    row = table.loc[("bridge", "vqa_acc")]
    assert row["delta"] == pytest.approx(0.10) and row["se"] == pytest.approx(se)
    assert row["verdict"] == "better"
    assert table.loc[("bridge", "centroid_gap"), "verdict"] == "lower"  # geometry: no better side
    assert table.loc[("all", "vqa_acc"), "verdict"] == "one seed"
    close = summary.assign(vqa_acc_mean=[0.70, 0.71, 0.71])
    assert compare_to_base(close, ["vqa_acc"]).verdict.iloc[0] == "within noise"
    with pytest.raises(ValueError, match="base"):
        compare_to_base(summary, ["vqa_acc"], base="nope")
