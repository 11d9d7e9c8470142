"""RESULTS.md's fusion tables: mean ± std per variant and the change against the base, marked by the noise."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from workbench.labs.fusion import compare_to_base
from workbench.store import report
from workbench.store.runs import RunWriter

METRICS = report.EXPERIMENT_COLUMNS["fusion"][1]


def _summary() -> pd.DataFrame:
    """Two datasets, a base and two variants each; vqa moves by 0.10 (beyond noise) or 0.01 (within)."""
    rows = []
    for dataset, shift in (("digits_captions", 0.0), ("mnist_captions", 0.05)):
        for variant, regularizers, vqa, runs in (
            ("clip", "", 0.70, 3),
            ("bridge", "bridge", 0.80, 3),
            ("separation", "separation", 0.71, 3),
        ):
            row = {"dataset": dataset, "variant": variant, "regularizers": regularizers, "runs": runs}
            for k, metric in enumerate(METRICS):
                row[f"{metric}_mean"] = 0.5 + 0.01 * k + shift
                row[f"{metric}_std"] = 0.01
            row["vqa_acc_mean"] = vqa + shift
            row["centroid_gap_mean"] = {"clip": 0.4, "bridge": 0.1, "separation": 0.41}[variant]
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def store(tmp_path):
    writer = RunWriter.create({"kind": "fusion_structure"}, run_id="fusion-structure-summary", root=tmp_path)
    writer.save_table("summary", _summary())
    writer.finish({})
    return tmp_path


def test_mean_std_table_lists_every_dataset_and_variant(store):
    table = report.experiment_summary_table("fusion", root=store)  # the lab's default summary id
    lines = table.splitlines()
    assert lines[0] == "| dataset | variant | " + " | ".join(METRICS) + " |"
    assert len(lines) == 2 + 6
    assert "| digits_captions | bridge | 0.500 ± 0.010 | 0.800 ± 0.010 |" in table
    assert "| mnist_captions | clip | 0.550 ± 0.010 | 0.750 ± 0.010 |" in table


def test_delta_table_marks_what_compare_to_base_calls(store):
    lines = report.fusion_delta_table(root=store).splitlines()
    assert lines[0] == "| dataset | variant | " + " | ".join(METRICS) + " |"
    assert len(lines) == 2 + 4  # no base rows
    cells = {tuple(line.split(" | ")[:2]): line.strip("| ").split(" | ")[2:] for line in lines[2:]}
    summary = _summary()
    for dataset in ("digits_captions", "mnist_captions"):
        verdicts = compare_to_base(summary[summary.dataset == dataset].reset_index(drop=True), METRICS)
        for row in verdicts.itertuples():
            cell = cells[(f"| {dataset}", row.variant)][METRICS.index(row.metric)]
            assert cell.startswith(f"{row.delta:+.3f}"), (dataset, row.variant, row.metric)
            called = row.verdict in ("better", "worse", "higher", "lower")
            assert cell.endswith("*") == called, (dataset, row.variant, row.metric, row.verdict)
    bridge = cells[("| digits_captions", "bridge")]
    assert bridge[METRICS.index("vqa_acc")] == "+0.100*"
    assert bridge[METRICS.index("centroid_gap")] == "-0.300*"
    assert cells[("| digits_captions", "separation")][METRICS.index("vqa_acc")] == "+0.010"


def test_delta_table_says_when_one_seed_cannot_call(tmp_path):
    summary = _summary().assign(runs=1)
    summary[[f"{m}_std" for m in METRICS]] = math.nan
    writer = RunWriter.create({"kind": "fusion_structure"}, run_id="one-seed", root=tmp_path)
    writer.save_table("summary", summary)
    writer.finish({})
    assert "+0.100 n/a" in report.fusion_delta_table("one-seed", root=tmp_path)


def test_results_markers_render_and_check(store):
    results = store / "RESULTS.md"
    results.write_text(
        "<!-- table:fusion fusion-structure-summary -->\nold\n<!-- /table -->\n\n"
        "<!-- table:fusiondelta fusion-structure-summary -->\nold\n<!-- /table -->\n"
    )
    assert report.main(["--file", str(results), "--root", str(store), "--check"]) == 1
    assert report.main(["--file", str(results), "--root", str(store)]) == 0
    assert report.main(["--file", str(results), "--root", str(store), "--check"]) == 0
    assert "+0.100*" in results.read_text() and "0.800 ± 0.010" in results.read_text()
