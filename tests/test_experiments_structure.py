"""structure_experiment, structure_variants and the batch-size options the notebooks use."""

from __future__ import annotations

import pytest

from workbench.labs import modality as ex
from workbench.store.runs import list_runs, load_run
from workbench.training.trainer import TrainConfig

TOWER = {"hidden": 16, "depth": 1, "out_dim": 8}
TINY = dict(tower=TOWER, workers=1, batch_size=32, text_encoder="tokens", probe_size=48)


def test_structure_variants_lists_base_each_regularizer_and_all():
    variants = ex.structure_variants(["bridge", "consistency"], [0.5, 2.0])
    assert variants == {
        "base": {},
        "bridge": {"bridge": 0.5},
        "consistency": {"consistency": 2.0},
        "all": {"bridge": 0.5, "consistency": 2.0},
    }
    assert list(ex.structure_variants(["separation"])) == ["base", "separation"]
    assert ex.structure_variants([]) == {"base": {}}


@pytest.mark.parametrize(
    "regularizers, weights, message",
    [
        (["dropout"], None, r"regularizers entries must be one of separation, bridge, consistency"),
        (["bridge", "bridge"], None, r"regularizers has duplicate values"),
        (["bridge"], [1.0, 2.0], r"weights must hold one number per regularizer"),
        (["bridge"], [0.0], r"weights\[0\] \(bridge\) must be a finite number > 0"),
        ("bridge", None, r"regularizers must be a list"),
    ],
)
def test_structure_variants_rejects_bad_input(regularizers, weights, message):
    with pytest.raises(ValueError, match=message):
        ex.structure_variants(regularizers, weights)


def test_structure_plan_writes_nothing(tmp_path):
    plan = ex.structure_experiment(
        regularizers=["bridge"],
        steps=4,
        snapshots=2,
        seed=3,
        seeds=2,
        tag="p",
        root=tmp_path,
        plan_only=True,
        **TINY,
    )
    assert plan.run_id.tolist() == ["p-base-s3", "p-base-s4", "p-bridge-s3", "p-bridge-s4"]
    assert plan.regularizers.tolist() == ["", "", "bridge", "bridge"]
    assert list_runs(tmp_path) == []


def test_structure_experiment_snapshots_geometry_over_training(tmp_path):
    summary = ex.structure_experiment(
        regularizers=["consistency"],
        weights=[0.5],
        loss="sogclr",
        steps=4,
        snapshots=2,
        seed=1,
        tag="st",
        root=tmp_path,
        **TINY,
    )
    assert summary.variant.tolist() == ["base", "consistency"]
    assert {f"{m}_mean" for m in ex.STRUCTURE_METRICS} <= set(summary.columns)
    run = load_run("st-consistency-s1", root=tmp_path)
    config = TrainConfig.from_dict(run.config)
    assert config.loss == "sogclr" and config.seed == 1
    assert config.task.structure == {"mode": "four_term", "weights": {"consistency": 0.5}}
    assert run.snapshot_steps == [2, 4]
    geometry = run.metrics.dropna(subset=["centroid_gap"])
    assert geometry.step.tolist() == [2, 4]
    columns = ["alignment", "uniformity", "effective_rank", "relative_modality_gap"]
    assert geometry[columns].notna().all().all()
    assert load_run("st-summary", root=tmp_path).config["first_seed"] == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(loss="nope"), r"loss must be one of .*clip"),
        (dict(dataset="cifar"), r"dataset must be one of digits_captions, mnist_captions"),
        (dict(snapshots=9, steps=4), r"snapshots must be <= steps"),
        (dict(seed=-1), r"seed must be an integer >= 0"),
    ],
)
def test_structure_experiment_bad_parameters(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ex.structure_experiment(root=tmp_path, **{**TINY, "steps": 4, **kwargs})
    assert list_runs(tmp_path) == []


def test_batch_size_fixed_steps_and_shared_runs(tmp_path):
    shared = {key: value for key, value in TINY.items() if key != "batch_size"}
    common = dict(losses=["clip"], seeds=1, steps=3, tag="bs", root=tmp_path, **shared)
    plan = ex.batch_size_experiment(batch_sizes=[16, 32], plan_only=True, **common)
    assert plan.run_id.tolist() == ["bs-b16-clip-s0", "bs-b32-clip-s0"]
    assert list_runs(tmp_path) == []
    one = ex.batch_size_experiment(batch_sizes=[16], summary_id="bs-one", **common)
    assert one.steps.tolist() == [3]
    written = (tmp_path / "bs-b16-clip-s0" / "metrics.csv").stat().st_mtime_ns
    both = ex.batch_size_experiment(batch_sizes=[16, 32], summary_id="bs-both", **common)
    assert both.steps.tolist() == [3, 3]
    # the B = 16 run is reused, not retrained; each call keeps its own summary
    assert (tmp_path / "bs-b16-clip-s0" / "metrics.csv").stat().st_mtime_ns == written
    assert {r.run_id for r in list_runs(tmp_path)} == {
        "bs-b16-clip-s0",
        "bs-b32-clip-s0",
        "bs-one",
        "bs-both",
    }
    assert load_run("bs-both", root=tmp_path).config["steps"] == 3
    with pytest.raises(ValueError, match=r"summary_id 'bad id' is not allowed"):
        ex.batch_size_experiment(batch_sizes=[16], summary_id="bad id", **common)
