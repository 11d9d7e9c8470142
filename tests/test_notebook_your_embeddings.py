"""Notebook 05_your_embeddings executes headless on a small file and fails fast on bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.cli.notebooks import NotebookError, run_notebook
from workbench.data.userdata import save_paired_embeddings
from workbench.store.runs import list_runs


def _pairs_file(path, n: int = 60, d: int = 8, text_dim: int | None = None):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, d)) + 3.0 * np.eye(d)[0]
    b = rng.normal(size=(n, text_dim or d))
    labels = np.array(["cat", "dog", "eel"])[np.arange(n) % 3]
    return save_paired_embeddings(path, a, b, labels=labels, captions=[f"item {i}" for i in range(n)])


def test_report_of_a_small_file_lands_in_the_run_store(tmp_path):
    path = _pairs_file(tmp_path / "mine.npz")
    params = {"embeddings_path": str(path), "max_points": 40, "bridge_pairs": 2}
    executed = run_notebook("05_your_embeddings", params, root=tmp_path / "home")
    (run,) = list_runs(tmp_path / "home" / "runs")
    assert run.is_complete and run.run_id.startswith("embeddings-mine-")
    assert run.notebooks[0]["path"] == str(executed)
    assert run.config["source"] == str(path.resolve()) and run.config["n"] == 60
    assert run.tables == ["geometry", "per_dimension_gap", "spectrum"]
    assert {"centroid_gap", "relative_modality_gap", "effective_rank", "mean_R"} <= set(run.metrics.columns)
    assert set(run.snapshot(0)) == {"a", "b", "ids", "labels", "captions"}
    assert run.read_json("class_names") == ["cat", "dog", "eel"]
    assert list((run.path / "cache" / "projections").iterdir())  # the projection the dashboard reuses
    text = executed.read_text()
    assert "open the dashboard with `workbench app`" in text and "Brownian bridges (2 pairs)" in text


def test_missing_file_fails_fast_naming_embeddings_path(tmp_path):
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(NotebookError, match=r"ValueError: embeddings_path '.*nowhere\.npz': no such file"):
        run_notebook("05_your_embeddings", {"embeddings_path": str(missing)}, root=tmp_path / "home")
    assert not (tmp_path / "home" / "runs").exists() or list_runs(tmp_path / "home" / "runs") == []


def test_embeddings_of_two_spaces_are_refused(tmp_path):
    path = _pairs_file(tmp_path / "mixed.npz", text_dim=5)
    with pytest.raises(NotebookError, match=r"image_emb has dimension 8 but text_emb has 5"):
        run_notebook("05_your_embeddings", {"embeddings_path": str(path)}, root=tmp_path / "home")
