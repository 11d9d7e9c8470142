"""Notebook 01_gradient_bias executes headless with tiny parameters and fails fast on bad ones."""

from __future__ import annotations

import json

import pytest

from workbench.cli.demo import TINY_PARAMETERS
from workbench.cli.notebooks import NotebookError, run_notebook
from workbench.labs.gradbias import COLUMNS, SAMPLE_COLUMNS
from workbench.store.runs import list_runs

TINY = TINY_PARAMETERS["01_gradient_bias"]


def test_tiny_measurement_lands_in_the_run_store(tmp_path):
    executed = run_notebook("01_gradient_bias", TINY, root=tmp_path)
    runs = list_runs(tmp_path / "runs")
    assert len(runs) == 1
    run = runs[0]
    assert run.is_complete and run.run_id.startswith("gradbias-nb-")
    assert run.notebooks[0]["path"] == str(executed)
    assert run.config["batch_sizes"] == [4, 32] and run.config["bias_repeats"] == 5

    table = run.table("gradbias")
    assert list(table.columns) == COLUMNS
    # clip is stateless, bayes is measured cold and warm: 3 rows per batch size
    assert sorted(zip(table.loss, table.state, strict=True)) == sorted(
        [("clip", "stateless"), ("bayes", "cold"), ("bayes", "warm")] * 2
    )
    clip = table[table.loss == "clip"].set_index("batch_size")
    assert clip.rel_bias[4] > 0 and clip.rel_bias[32] < 1e-5  # the bias vanishes at B = N
    samples = run.table("gradbias_samples")
    assert list(samples.columns) == SAMPLE_COLUMNS and len(samples) == 6 * 3

    text = executed.read_text()
    assert run.run_id in text and "open the dashboard with `workbench app`" in text
    cells = json.loads(text)["cells"]
    plotted = [
        c
        for c in cells
        if any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in c.get("outputs", []))
    ]
    assert plotted, "the relative-bias figure is missing from the executed notebook"


def test_unknown_loss_fails_fast_naming_the_parameter(tmp_path):
    with pytest.raises(
        NotebookError, match=r"ValueError: losses has unknown label\(s\) \['nope'\]; allowed: clip"
    ):
        run_notebook("01_gradient_bias", {**TINY, "losses": ["nope"]}, root=tmp_path)
    assert list_runs(tmp_path / "runs") == []


def test_batch_size_above_n_fails_fast(tmp_path):
    with pytest.raises(NotebookError, match=r"batch_sizes must be integers in \[2, N=32\], got \[4, 64\]"):
        run_notebook("01_gradient_bias", {**TINY, "batch_sizes": [4, 64]}, root=tmp_path)
    assert list_runs(tmp_path / "runs") == []
