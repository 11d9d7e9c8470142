"""The multimodal-lab experiments (workbench.labs.modality) on tiny grids: tables, run ids, reruns, errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.labs import modality as ex
from workbench.store.runs import list_runs, load_run
from workbench.training.trainer import TrainConfig, Trainer

TOWER = {"hidden": 16, "depth": 1, "out_dim": 8}
TINY = dict(tower=TOWER, workers=1, steps=4, batch_size=32)
INFOGAP = dict(gaps=(0.0, 1.0), seeds=2, num_samples=120, **TINY)
TEMPERATURE = dict(temperatures=(0.1, 1.0), seeds=1, probe_size=48, **TINY)
ABLATION = dict(variants=("clip", "all"), seeds=1, text_encoder="tokens", probe_size=48, **TINY)
BATCH = dict(
    batch_sizes=(64, 128),
    losses=("clip", "bayes"),
    seeds=1,
    epochs=0.2,
    text_encoder="tokens",
    probe_size=48,
    tower=TOWER,
    workers=1,
)


def _stats(metrics) -> list[str]:
    return [f"{m}_{s}" for m in metrics for s in ("mean", "std")]


@pytest.fixture(scope="module")
def infogap(tmp_path_factory):
    root = tmp_path_factory.mktemp("infogap")
    return root, ex.information_gap_experiment(root=root, tag="ig", **INFOGAP)


@pytest.fixture(scope="module")
def temperature(tmp_path_factory):
    root = tmp_path_factory.mktemp("temperature")
    return root, ex.temperature_gap_experiment(root=root, tag="tg", **TEMPERATURE)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    return root, ex.ablation_experiment(root=root, tag="ab", **ABLATION)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    return root, ex.batch_size_experiment(root=root, tag="bs", **BATCH)


def _check_summary_run(root, tag, summary, coords, metrics, seeds):
    run = load_run(f"{tag}-summary", root=root)
    assert run.is_complete
    assert run.tables == ["runs", "summary"]
    pd.testing.assert_frame_equal(run.table("summary"), summary)
    runs = run.table("runs")
    assert len(runs) == len(summary) * seeds
    assert run.summary["settings"] == len(summary) and run.summary["runs"] == len(runs)
    assert {*coords, "seed", "run_id", *metrics} <= set(runs.columns)
    for row in runs.itertuples():
        child = load_run(row.run_id, root=root)
        assert child.is_complete
        assert row.run_id.startswith(f"{tag}-") and row.run_id.endswith(f"-s{row.seed}")
        assert TrainConfig.from_dict(child.config).seed == row.seed
        final = child.metrics.iloc[-1]
        for name in metrics:
            if name in final.index:
                assert row._asdict()[name] == pytest.approx(final[name], nan_ok=True), name
    for _, point in summary.iterrows():
        part = runs
        for name in coords:
            part = part[part[name] == point[name]]
        assert len(part) == seeds == point["runs"]
        for name in metrics:
            assert point[f"{name}_mean"] == pytest.approx(part[name].mean(), nan_ok=True)
    return runs


@pytest.mark.slow  # about 10 s: eight tiny runs plus the separation probes
def test_information_gap_summary(infogap):
    root, summary = infogap
    constants = ["information_gap", "raw_image_acc", "raw_text_acc", "raw_joint_acc"]
    assert list(summary.columns) == ["gap", "variant", *constants, *_stats(ex.INFOGAP_METRICS), "runs"]
    assert summary[["gap", "variant"]].values.tolist() == [
        [0.0, "clip"],
        [0.0, "separation"],
        [1.0, "clip"],
        [1.0, "separation"],
    ]
    # the parameterisation moves the measured gap from ~0 up, and the text is at chance at gap 1
    gap0, gap1 = summary.information_gap.iloc[0], summary.information_gap.iloc[2]
    assert gap0 < 0.1 < gap1
    assert summary.raw_text_acc.iloc[2] < summary.raw_image_acc.iloc[2]
    clip = summary[summary.variant == "clip"]
    sep = summary[summary.variant == "separation"]
    assert clip.sep_image_probe_acc_mean.isna().all() and clip.sep_concat_probe_acc_mean.isna().all()
    assert sep.sep_image_probe_acc_mean.between(0, 1).all()
    assert sep.sep_concat_probe_acc_mean.between(0, 1).all()
    runs = _check_summary_run(root, "ig", summary, ["gap", "variant"], ex.INFOGAP_METRICS, seeds=2)
    assert "ig-g0-clip-s0" in set(runs.run_id) and "ig-g1-separation-s1" in set(runs.run_id)
    config = TrainConfig.from_dict(load_run("ig-g1-separation-s0", root=root).config)
    assert config.dataset == "infogap"
    assert config.dataset_params["label_weight_image"] == 1.0
    assert config.dataset_params["label_weight_shared"] == 0.0
    assert config.dataset_params["label_weight_text"] == 0.0
    assert config.task.structure == {"mode": "clip", "weights": {"separation": 1.0}}
    assert TrainConfig.from_dict(load_run("ig-g1-clip-s0", root=root).config).task.structure == {}


def test_temperature_summary(temperature):
    root, summary = temperature
    assert list(summary.columns) == ["temperature", *_stats(ex.TEMPERATURE_METRICS), "runs"]
    assert summary.temperature.tolist() == [0.1, 1.0]
    assert summary.runs.tolist() == [1, 1]
    assert summary.centroid_gap_std.isna().all()  # one seed: no spread
    assert np.isfinite(summary[["centroid_gap_mean", "zero_shot_acc_mean"]]).all().all()
    runs = _check_summary_run(root, "tg", summary, ["temperature"], ex.TEMPERATURE_METRICS, seeds=1)
    assert sorted(runs.run_id) == ["tg-t0p1-s0", "tg-t1-s0"]
    config = TrainConfig.from_dict(load_run("tg-t0p1-s0", root=root).config)
    assert config.learn_scale is False and config.loss_params == {"temperature": 0.1}
    assert config.task.structure == {} and config.dataset_params["text_encoder"] == "tokens"
    assert config.eval_every == 1 and config.snapshot_every == 2 and config.probe_size == 48


def test_ablation_summary(ablation):
    root, summary = ablation
    assert list(summary.columns) == ["dataset", "variant", *_stats(ex.ABLATION_METRICS), "runs"]
    assert summary[["dataset", "variant"]].values.tolist() == [
        ["digits_captions", "clip"],
        ["digits_captions", "all"],
    ]
    runs = _check_summary_run(root, "ab", summary, ["dataset", "variant"], ex.ABLATION_METRICS, seeds=1)
    assert sorted(runs.run_id) == ["ab-digits_captions-all-s0", "ab-digits_captions-clip-s0"]
    clip = TrainConfig.from_dict(load_run("ab-digits_captions-clip-s0", root=root).config)
    both = TrainConfig.from_dict(load_run("ab-digits_captions-all-s0", root=root).config)
    assert clip.task.structure == {"mode": "four_term", "weights": {}}  # same base, no regularizer
    assert both.task.structure == {"mode": "four_term", "weights": ex.REGULARIZER_WEIGHTS}
    assert clip.task.image_tower == clip.task.text_tower == TOWER


def test_batch_size_summary_uses_equal_epochs(batch):
    root, summary = batch
    assert list(summary.columns) == ["batch_size", "loss", "steps", *_stats(ex.BATCH_METRICS), "runs"]
    assert summary[["batch_size", "loss"]].values.tolist() == [
        [64, "clip"],
        [64, "bayes"],
        [128, "clip"],
        [128, "bayes"],
    ]
    train_rows = load_run("bs-summary", root=root).config["train_rows"]
    assert train_rows == 1348
    expected = {b: max(1, int(0.2 * train_rows) // b) for b in (64, 128)}
    assert summary.steps.tolist() == [expected[64], expected[64], expected[128], expected[128]]
    runs = _check_summary_run(root, "bs", summary, ["batch_size", "loss"], ex.BATCH_METRICS, seeds=1)
    for row in runs.itertuples():
        config = TrainConfig.from_dict(load_run(row.run_id, root=root).config)
        assert config.steps == expected[row.batch_size] == row.final_step
        assert config.loss == row.loss and config.batch_size == row.batch_size
        assert config.learn_scale is False
    assert "bs-b64-bayes-s0" in set(runs.run_id)


def test_rerun_skips_complete_runs(temperature, monkeypatch):
    root, summary = temperature

    def no_training(self, step):
        raise AssertionError("a complete run was trained again")

    monkeypatch.setattr(Trainer, "train_step", no_training)
    before = {run.run_id: (run.path / "metrics.csv").stat().st_mtime_ns for run in list_runs(root)}
    table = load_run("tg-summary", root=root).table("runs")
    again = ex.temperature_gap_experiment(root=root, tag="tg", **TEMPERATURE)
    pd.testing.assert_frame_equal(again, summary, check_exact=True)
    pd.testing.assert_frame_equal(load_run("tg-summary", root=root).table("runs"), table)
    after = {run.run_id: (run.path / "metrics.csv").stat().st_mtime_ns for run in list_runs(root)}
    for run_id, mtime in before.items():
        if run_id != "tg-summary":
            assert after[run_id] == mtime, run_id


@pytest.mark.slow  # reruns the infogap grid: the separation probes are recomputed from checkpoints
def test_infogap_rerun_is_identical(infogap, monkeypatch):
    root, summary = infogap
    monkeypatch.setattr(Trainer, "train_step", lambda self, step: pytest.fail("trained again"))
    again = ex.information_gap_experiment(root=root, tag="ig", **INFOGAP)
    pd.testing.assert_frame_equal(again, summary, check_exact=True)


def test_changed_settings_under_the_same_tag_raise_before_training(temperature):
    root, _ = temperature
    runs = {run.run_id for run in list_runs(root)}
    with pytest.raises(ValueError, match=r"run 'tg-t0p1-s0' exists with a different config.*steps"):
        ex.temperature_gap_experiment(root=root, tag="tg", **{**TEMPERATURE, "steps": 6})
    assert {run.run_id for run in list_runs(root)} == runs


@pytest.mark.parametrize(
    ("function", "kwargs", "message"),
    [
        (ex.information_gap_experiment, dict(gaps=(1.5,)), r"gaps must be a finite number >= 0.0 and <= 1.0"),
        (ex.information_gap_experiment, dict(gaps=()), r"gaps must be a non-empty sequence"),
        (ex.information_gap_experiment, dict(gaps=(0.5, 0.5)), r"gaps has duplicate values"),
        (ex.information_gap_experiment, dict(separation_weight=0), r"separation_weight"),
        (ex.information_gap_experiment, dict(num_samples=5), r"num_samples"),
        (ex.information_gap_experiment, dict(batch_size=10_000), r"batch_size=10000 exceeds"),
        (
            ex.temperature_gap_experiment,
            dict(temperatures=(0.0,)),
            r"temperatures must be a finite number > 0",
        ),
        (ex.temperature_gap_experiment, dict(text_encoder="bert"), r"text_encoder must be one of"),
        (ex.temperature_gap_experiment, dict(seeds=0), r"seeds must be an integer >= 1"),
        (ex.temperature_gap_experiment, dict(steps=0), r"steps must be an integer >= 1"),
        (ex.temperature_gap_experiment, dict(workers=0), r"workers must be an integer >= 1"),
        (ex.temperature_gap_experiment, dict(tag="bad tag"), r"tag 'bad tag' is not allowed"),
        (ex.temperature_gap_experiment, dict(tower={"kind": "cnn"}), r"tower has unknown key"),
        (ex.temperature_gap_experiment, dict(tower={"hidden": 0}), r"tower\['hidden'\]"),
        (ex.temperature_gap_experiment, dict(lr=-1.0), r"lr must be"),
        (ex.ablation_experiment, dict(variants=("clip", "dropout")), r"variants entries must be one of"),
        (ex.ablation_experiment, dict(datasets=("cifar",)), r"datasets entries must be one of"),
        (ex.ablation_experiment, dict(mode="three_term"), r"mode must be 'four_term' or 'clip'"),
        (ex.ablation_experiment, dict(weights={"bridge": -1.0}), r"weights\['bridge'\]"),
        (ex.ablation_experiment, dict(weights={"dropout": 1.0}), r"weights has unknown regularizer"),
        (ex.batch_size_experiment, dict(batch_sizes=(1,)), r"batch_sizes must be an integer >= 2"),
        (
            ex.batch_size_experiment,
            dict(batch_sizes=(4096,)),
            r"batch_sizes must be <= the 1348 training rows",
        ),
        (ex.batch_size_experiment, dict(losses=("triplet",)), r"losses entries must be one of"),
        (ex.batch_size_experiment, dict(epochs=0), r"epochs must be a finite number > 0"),
        (ex.batch_size_experiment, dict(epochs=math.nan), r"epochs must be a finite number > 0"),
    ],
)
def test_bad_parameters_raise_before_anything_runs(tmp_path, function, kwargs, message):
    kwargs = {"workers": 1, **kwargs}
    if function is not ex.information_gap_experiment:
        kwargs = {"text_encoder": "tokens", **kwargs}
    with pytest.raises(ValueError, match=message):
        function(root=tmp_path, **kwargs)
    assert list_runs(tmp_path) == []


def test_main_prints_the_summary(tmp_path, capsys):
    code = ex.main(
        [
            "temperature",
            "--seeds",
            "1",
            "--steps",
            "2",
            "--temperatures",
            "0.5",
            "--workers",
            "1",
            "--tag",
            "cli",
            "--root",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "centroid_gap_mean" in out and "wall time" in out
    assert load_run("cli-summary", root=tmp_path).is_complete
    assert load_run("cli-t0p5-s0", root=tmp_path).is_complete


def test_main_reports_bad_parameters(tmp_path):
    with pytest.raises(SystemExit, match="error: seeds must be an integer >= 1"):
        ex.main(["temperature", "--seeds", "0", "--root", str(tmp_path)])
