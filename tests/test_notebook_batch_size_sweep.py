"""Notebook 04_batch_size_sweep executes headless with tiny parameters and fails fast on bad ones."""

from __future__ import annotations

import pytest

from workbench.cli.demo import TINY_PARAMETERS
from workbench.cli.notebooks import NotebookError, run_notebook
from workbench.store.runs import list_runs

TINY = TINY_PARAMETERS["04_batch_size_sweep"]


def test_tiny_grid_lands_in_the_run_store(tmp_path):
    executed = run_notebook("04_batch_size_sweep", TINY, root=tmp_path)
    runs = {run.run_id: run for run in list_runs(tmp_path / "runs")}
    summaries = [run for run in runs.values() if run.config.get("kind") == "batch_size"]
    assert len(summaries) == 1
    summary_run = summaries[0]
    assert summary_run.is_complete
    assert summary_run.notebooks[0]["path"] == str(executed)
    summary = summary_run.table("summary")
    assert summary[["batch_size", "loss", "steps"]].values.tolist() == [[16, "clip", 1], [32, "clip", 1]]
    assert summary.zero_shot_acc_mean.between(0, 1).all()
    for run_id in summary_run.table("runs").run_id:
        assert runs[run_id].is_complete
        assert runs[run_id].notebooks[0]["name"] == executed.stem
    assert "open the dashboard with `workbench app`" in executed.read_text()


def test_unknown_loss_fails_fast_naming_the_parameter(tmp_path):
    with pytest.raises(NotebookError, match=r"ValueError: losses entries must be one of .*clip.*sogclr"):
        run_notebook("04_batch_size_sweep", {**TINY, "losses": ["nope"]}, root=tmp_path)
    assert list_runs(tmp_path / "runs") == []
