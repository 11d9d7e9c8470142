"""Notebook 06_fusion executes headless with tiny parameters and fails fast on bad ones."""

from __future__ import annotations

import pytest

from workbench.cli.demo import TINY_PARAMETERS
from workbench.cli.notebooks import NotebookError, run_notebook
from workbench.store.runs import list_runs

TINY = TINY_PARAMETERS["06_fusion"]


@pytest.mark.slow
def test_tiny_ablation_lands_in_the_run_store(tmp_path):
    executed = run_notebook("06_fusion", TINY, root=tmp_path)
    runs = {run.run_id: run for run in list_runs(tmp_path / "runs")}
    kinds = {run.config.get("kind"): run for run in runs.values() if run.config.get("kind")}
    assert set(kinds) == {"fusion_structure", "structure"}  # the fusion grid and the two-tower one
    summary = kinds["fusion_structure"].table("summary")
    assert summary.variant.tolist() == ["clip", "bridge"]
    for metric in ("itm_acc", "vqa_acc", "ve_acc", "nlvr_acc", "itm_mean_R", "zero_shot_itm_acc"):
        assert summary[f"{metric}_mean"].between(0, 1).all(), metric
    bridge = runs[kinds["fusion_structure"].table("runs").set_index("variant").loc["bridge", "run_id"]]
    assert bridge.config["model"] == "fusion" and bridge.config["structure"]["weights"] == {"bridge": 1.0}
    assert "attn_maps" in bridge.snapshot(bridge.snapshot_steps[-1])
    text = executed.read_text()
    assert "cross-attention of held-out questions" in text and "open the dashboard" in text


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"model_size": "huge"}, r"ValueError: model_size must be one of tiny, small, base"),
        ({"regularizers": ["dropout"]}, r"ValueError: regularizers entries must be one of separation"),
    ],
)
def test_bad_parameter_fails_fast_naming_it(tmp_path, bad, message):
    with pytest.raises(NotebookError, match=message):
        run_notebook("06_fusion", {**TINY, **bad}, root=tmp_path)
    assert not (tmp_path / "runs").exists() or list_runs(tmp_path / "runs") == []


@pytest.mark.slow
def test_a_stored_lab_ablation_is_read_and_nothing_trains(tmp_path):
    from workbench.labs.fusion import FusionStructureGrid
    from workbench.labs.grid import run_grid

    lab = FusionStructureGrid(
        steps=2,
        snapshots=1,
        seeds=1,
        variants=("clip", "bridge"),
        model_size="tiny",
        batch_size=32,
        per_kind_train=10,
        per_kind_test=6,
        workers=1,
        root=tmp_path / "runs",
    )
    run_grid(lab)  # the lab's default tag: the summary the notebook reads by default
    stored = sorted(run.run_id for run in list_runs(tmp_path / "runs"))
    executed = run_notebook("06_fusion", TINY, root=tmp_path).read_text()
    assert sorted(run.run_id for run in list_runs(tmp_path / "runs")) == stored  # trained nothing
    assert "stored summary 'fusion-structure-summary'" in executed
    assert "holds no two-tower ablation 'ablation-summary'" in executed
    assert "cross-attention of held-out questions" in executed
