"""Notebook 02_small_batch_convergence executes headless with tiny parameters and fails fast on bad ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workbench.cli.demo import TINY_PARAMETERS
from workbench.cli.notebooks import NotebookError, run_notebook
from workbench.store.runs import list_runs

NAME = "02_small_batch_convergence"
# Seconds, not science: 4 training runs of 20 steps on 32 samples and one full-batch reference run.
# workbench/demo.py keeps a copy in TINY_PARAMETERS.
TINY = TINY_PARAMETERS["02_small_batch_convergence"]


def _outputs(executed: Path) -> list[dict]:
    cells = json.loads(executed.read_text())["cells"]
    return [output for cell in cells for output in cell.get("outputs", [])]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """One execution with TINY, shared by the tests that only read its results: (data home, executed copy)."""
    home = tmp_path_factory.mktemp("home")
    return home, run_notebook(NAME, TINY, root=home)


def test_tiny_grid_lands_in_the_run_store(tiny):
    home, executed = tiny
    runs = {run.run_id: run for run in list_runs(home / "runs")}
    summaries = [run for run in runs.values() if run.config.get("kind") == "convergence"]
    assert len(summaries) == 1
    summary_run = summaries[0]
    assert summary_run.is_complete
    assert summary_run.notebooks[0]["path"] == str(executed)

    summary = summary_run.table("summary")
    assert summary[["noise", "batch_size", "loss", "runs"]].values.tolist() == [
        [0.5, 4, "clip", 2],
        [0.5, 4, "bayes", 2],
    ]
    assert summary.reached.between(0, 2).all()
    table = summary_run.table("runs")
    assert sorted(table.kind.value_counts().items()) == [("reference", 1), ("run", 4)]
    # progress is normalised by the best reference run, which therefore sits exactly at 1.0
    assert table[table.kind == "reference"].progress.max() == pytest.approx(1.0)
    # 4 training runs, 1 reference run, the summary, and the toy's curves, steps and summary runs
    assert len(runs) == 9
    toy = [run for run in runs.values() if run.config.get("kind") in ("toy", "toy_curves", "toy_steps")]
    assert sorted(run.config["kind"] for run in toy) == ["toy", "toy_curves", "toy_steps"]
    toy_summary = next(run for run in toy if run.config["kind"] == "toy")
    assert toy_summary.is_complete and len(toy_summary.table("runs")) == 2 * 2 * 2  # noise x loss x seed
    for run_id in table.run_id:
        assert runs[run_id].is_complete
        assert runs[run_id].notebooks[0]["name"] == executed.stem

    outputs = _outputs(executed)
    assert any("application/vnd.plotly.v1+json" in out.get("data", {}) for out in outputs)
    text = executed.read_text()
    assert "open the dashboard with `workbench app`" in text and summary_run.run_id in text


def test_a_larger_grid_reuses_the_finished_runs(tiny, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(tiny[0], home)
    before = {run.run_id: run.notebooks for run in list_runs(home / "runs")}
    executed = run_notebook(NAME, {**TINY, "seeds": 3}, root=home)
    after = {run.run_id: run.notebooks for run in list_runs(home / "runs")}
    assert {run_id: after[run_id] for run_id in before} == before  # nothing retrained or rewritten
    new = sorted(set(after) - set(before))
    toy = [run_id for run_id in new if run_id.startswith("toy-nb-")]
    assert len(toy) == 3  # the toy follows seeds: a new grid, its curves, steps and summary
    new = [run_id for run_id in new if run_id not in toy]
    assert len(new) == 3  # seed 2 of each loss and the summary of the larger grid
    assert [run_id for run_id in new if run_id.endswith("-s2")] == sorted(
        run_id.replace("-s1", "-s2") for run_id in before if run_id.endswith("-s1")
    )
    assert all(after[run_id][0]["path"] == str(executed) for run_id in new)


def test_unknown_loss_fails_fast_naming_the_parameter(tmp_path):
    with pytest.raises(
        NotebookError, match=r"ValueError: losses has unknown label\(s\) \['nope'\]; allowed: clip, sogclr"
    ):
        run_notebook(NAME, {**TINY, "losses": ["clip", "nope"]}, root=tmp_path)
    assert list_runs(tmp_path / "runs") == []
