"""Bring-your-own-embeddings: saving, the offline example file, the parameter check and the report run."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.data.userdata import load_paired_embeddings, save_paired_embeddings
from workbench.labs.embedding_report import (
    embedding_report,
    make_example_embeddings,
    resolve_embeddings_path,
    subsample_rows,
)
from workbench.metrics.geometry import centroid_gap
from workbench.store.runs import list_runs


def _pairs(n: int = 40, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, d)) + 2.0 * np.eye(d)[0]  # an offset along dimension 0: a modality gap
    b = a + 0.3 * rng.normal(size=(n, d)) - 2.0 * np.eye(d)[0]
    return a, b


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_save_round_trips_through_the_loader(tmp_path, suffix):
    a, b = _pairs()
    path = save_paired_embeddings(
        tmp_path / f"sub/pairs{suffix}",
        a,
        b,
        labels=["cat", "dog"] * 20,
        captions=[f"c{i}" for i in range(40)],
    )
    data = load_paired_embeddings(path)
    np.testing.assert_allclose(data["image_emb"], a, rtol=1e-6)
    np.testing.assert_allclose(data["text_emb"], b, rtol=1e-6)
    assert data["class_names"] == ["cat", "dog"] and data["labels"][:2].tolist() == [0, 1]
    assert data["captions"][3] == "c3"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_save_refuses_bad_data_and_leaves_no_file(tmp_path):
    a, b = _pairs()
    a[5, 2] = np.nan
    with pytest.raises(ValueError, match="image_emb has a non-finite value"):
        save_paired_embeddings(tmp_path / "bad.npz", a, b)
    with pytest.raises(ValueError, match=r"path must end in \.npz or \.parquet"):
        save_paired_embeddings(tmp_path / "bad.csv", *_pairs())
    assert list(tmp_path.iterdir()) == []


def test_example_embeddings_are_trained_pairs_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    path = make_example_embeddings(steps=3, text_encoder="tokens")
    assert path.parent == tmp_path / "examples"
    data = load_paired_embeddings(path)
    assert data["image_emb"].shape == data["text_emb"].shape == (1797, 64)
    np.testing.assert_allclose(np.linalg.norm(data["image_emb"], axis=1), 1.0, atol=1e-5)
    assert sorted(set(data["labels"].tolist())) == list(range(10))
    assert len(data["captions"]) == 1797 and data["captions"][0]
    stamp = path.stat().st_mtime_ns
    assert make_example_embeddings(steps=3, text_encoder="tokens") == path
    assert path.stat().st_mtime_ns == stamp


def test_resolve_embeddings_path_names_the_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"embeddings_path '.*missing\.npz': no such file"):
        resolve_embeddings_path(str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match=r"embeddings_path must be a \.npz or \.parquet file"):
        resolve_embeddings_path(str(tmp_path / "pairs.csv"))
    path = save_paired_embeddings(tmp_path / "pairs.npz", *_pairs())
    assert resolve_embeddings_path(str(path)) == path


def test_report_run_holds_geometry_tables_and_snapshot(tmp_path):
    a, b = _pairs()
    path = save_paired_embeddings(tmp_path / "pairs.npz", a, b, labels=[0, 1] * 20)
    run = embedding_report(path, root=tmp_path / "runs")
    assert run.is_complete and run.run_id.startswith("embeddings-pairs-")
    assert run.config["kind"] == "embeddings" and run.config["n"] == 40 and run.config["dim"] == 6
    assert run.tables == ["geometry", "per_dimension_gap", "spectrum"]
    geometry = run.table("geometry").set_index("measure").value
    assert geometry["centroid_gap"] == pytest.approx(centroid_gap(a, b))
    assert run.metrics.iloc[0]["centroid_gap"] == pytest.approx(geometry["centroid_gap"])
    assert 0 <= geometry["mean_R"] <= 1
    gaps = run.table("per_dimension_gap")
    assert gaps.loc[gaps["rank"] == 0, "dimension"].item() == 0  # the planted offset dominates
    spectrum = run.table("spectrum")
    assert spectrum.image.sum() == pytest.approx(1.0) and spectrum.joint.sum() == pytest.approx(1.0)
    snap = run.snapshot(0)
    assert set(snap) == {"a", "b", "ids", "labels"}
    np.testing.assert_allclose(np.linalg.norm(snap["a"], axis=1), 1.0, atol=1e-5)
    again = embedding_report(path, root=tmp_path / "runs")
    assert again.run_id == run.run_id and len(list_runs(tmp_path / "runs")) == 1


def test_report_needs_one_shared_space(tmp_path):
    a, _ = _pairs()
    path = save_paired_embeddings(tmp_path / "pairs.npz", a, np.ones((40, 3)) + np.arange(3))
    with pytest.raises(ValueError, match="image_emb has dimension 6 but text_emb has 3"):
        embedding_report(path, root=tmp_path / "runs")
    assert list_runs(tmp_path / "runs") == []


def test_subsample_rows_is_seeded_and_checked():
    rows = subsample_rows(100, 10, seed=3)
    assert len(rows) == 10 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, subsample_rows(100, 10, seed=3))
    np.testing.assert_array_equal(subsample_rows(5, 10), np.arange(5))
    with pytest.raises(ValueError, match="max_points must be an integer >= 2"):
        subsample_rows(100, 1)
    with pytest.raises(ValueError, match="bridge_pairs must be an integer >= 1, got 0"):
        subsample_rows(100, 0, name="bridge_pairs", minimum=1)
