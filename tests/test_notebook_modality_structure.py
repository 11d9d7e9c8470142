"""Notebook 03_modality_structure executes headless with tiny parameters and fails fast on bad ones."""

from __future__ import annotations

import pytest

from workbench.cli.demo import TINY_PARAMETERS
from workbench.cli.notebooks import NotebookError, run_notebook
from workbench.store.runs import list_runs

TINY = TINY_PARAMETERS["03_modality_structure"]


def test_tiny_comparison_lands_in_the_run_store(tmp_path):
    executed = run_notebook("03_modality_structure", TINY, root=tmp_path)
    runs = {run.run_id: run for run in list_runs(tmp_path / "runs")}
    (summary_run,) = [run for run in runs.values() if run.config.get("kind") == "structure"]
    assert summary_run.is_complete and summary_run.notebooks[0]["path"] == str(executed)
    summary = summary_run.table("summary")
    assert summary.variant.tolist() == ["clip", "bridge"]  # the base loss alone, named after it
    assert summary.zero_shot_acc_mean.between(0, 1).all() and (summary.centroid_gap_mean > 0).all()
    bridge = runs[summary_run.table("runs").set_index("variant").loc["bridge", "run_id"]]
    assert bridge.config["structure"] == {"mode": "four_term", "weights": {"bridge": 0.5}}
    assert bridge.notebooks[0]["name"] == executed.stem
    assert bridge.snapshot_steps == [1, 2]
    assert bridge.metrics.dropna(subset=["centroid_gap"]).step.tolist() == [1, 2]
    assert list((bridge.path / "cache" / "projections").iterdir())  # the checkpoint projections
    text = executed.read_text()
    assert "bridge: step 2 of 2" in text and "open the dashboard with `workbench app`" in text


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            {"regularizers": ["dropout"]},
            r"ValueError: regularizers entries must be one of separation, bridge",
        ),
        ({"loss": "nope"}, r"ValueError: loss must be one of .*clip"),
    ],
)
def test_bad_parameter_fails_fast_naming_it(tmp_path, bad, message):
    with pytest.raises(NotebookError, match=message):
        run_notebook("03_modality_structure", {**TINY, "weights": [], **bad}, root=tmp_path)
    assert not (tmp_path / "runs").exists() or list_runs(tmp_path / "runs") == []
