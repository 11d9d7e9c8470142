"""The small-batch convergence experiment (workbench.labs.convergence) on a tiny grid."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.labs import convergence
from workbench.store.runs import list_runs, load_run
from workbench.training.trainer import TrainConfig, Trainer

LOSSES = {"clip": {"name": "clip"}, "bayes": {"name": "bayes"}}
GRID = dict(
    noise_levels=(0.5,),
    batch_sizes=(8,),
    seeds=2,
    steps=30,
    num_samples=32,
    reference_seeds=1,
    reference_steps=40,
    workers=1,
    tag="tiny",
)
SUMMARY_COLUMNS = [
    "noise",
    "batch_size",
    "loss",
    "progress_mean",
    "progress_std",
    "progress_min",
    "excess_mean",
    "excess_std",
    "reached",
    "runs",
    "optimum",
]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("convergence")
    summary = convergence.run_convergence(losses=LOSSES, root=root, **GRID)
    return root, summary


def test_summary_rows_and_columns(experiment):
    _, summary = experiment
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary[["noise", "batch_size", "loss"]].values.tolist() == [[0.5, 8, "clip"], [0.5, 8, "bayes"]]
    assert summary.runs.tolist() == [2, 2]
    assert summary.reached.between(0, 2).all()
    assert np.isfinite(summary[["progress_mean", "progress_std", "progress_min", "excess_mean"]]).all().all()
    assert (summary.progress_min <= summary.progress_mean).all()
    assert (summary.progress_mean > 0).all()  # 30 steps of Adam do lower the global objective


def test_summary_run_and_tables(experiment):
    root, summary = experiment
    run = load_run("tiny-summary", root=root)
    assert run.is_complete
    assert run.tables == ["runs", "summary"]
    pd.testing.assert_frame_equal(run.table("summary"), summary)
    assert run.summary["settings"] == 2 and run.summary["runs"] == 4
    assert run.config["losses"] == LOSSES and run.config["reference"]["steps"] == 40

    table = run.table("runs")
    assert len(table) == 1 + 2 * 2  # one reference, two losses x two seeds
    assert sorted(table.run_id) == sorted(
        ["tiny-n0p5-fullbatch-s0"] + [f"tiny-n0p5-{loss}-b8-s{seed}" for loss in LOSSES for seed in (0, 1)]
    )
    for row in table.itertuples():
        child = load_run(row.run_id, root=root)
        assert child.is_complete
        config = TrainConfig.from_dict(child.config)
        assert config.dataset == "synthetic" and config.dataset_params == {"num_samples": 32, "noise": 0.5}
        assert config.loss_params["temperature"] == 0.1
        if row.kind == "reference":
            assert config.batch_size == 32 and config.steps == 40 and config.loss == "clip"
        else:
            assert config.batch_size == 8 and config.steps == 30 and config.loss == row.loss
            assert config.seed == row.seed
        metrics = child.metrics
        assert row.initial == float(metrics.global_loss.iloc[0])
        assert row.final == float(metrics.global_loss.iloc[-1])
    # all runs of a noise level share L*, the best full-batch final value
    reference = table[table.kind == "reference"]
    assert (table.optimum == reference.final.min()).all()
    assert reference.progress.max() == 1.0
    assert np.allclose(table.excess, table.final - table.optimum)
    assert (table.reached == (table.progress >= 0.99)).all()
    runs = table[table.kind == "run"]
    for loss, part in runs.groupby("loss"):
        row = summary.set_index("loss").loc[loss]
        assert row.progress_mean == pytest.approx(part.progress.mean())
        assert row.progress_min == pytest.approx(part.progress.min())


def test_progress_curves_start_at_zero(experiment):
    root, _ = experiment
    curves = convergence.progress_curves("tiny-summary", root=root)
    assert set(curves.columns) == {"run_id", "noise", "batch_size", "loss", "seed", "step", "progress"}
    assert curves.run_id.nunique() == 4
    first = curves[curves.step == 0]
    assert len(first) == 4
    assert (first.progress == 0.0).all()
    last = curves.sort_values("step").groupby("run_id").tail(1)
    assert (last.step == 30).all()
    table = load_run("tiny-summary", root=root).table("runs").set_index("run_id")
    for row in last.itertuples():
        assert row.progress == pytest.approx(table.loc[row.run_id, "progress"], rel=1e-12)


def test_second_call_skips_complete_runs(experiment, monkeypatch):
    root, summary = experiment

    def no_training(self, step):
        raise AssertionError("a complete run was trained again")

    monkeypatch.setattr(Trainer, "train_step", no_training)
    runs_before = {run.run_id: run.path.joinpath("metrics.csv").stat().st_mtime_ns for run in list_runs(root)}
    table_before = load_run("tiny-summary", root=root).table("runs")
    again = convergence.run_convergence(losses=LOSSES, root=root, **GRID)
    pd.testing.assert_frame_equal(again, summary, check_exact=True)
    pd.testing.assert_frame_equal(load_run("tiny-summary", root=root).table("runs"), table_before)
    runs_after = {run.run_id: run.path.joinpath("metrics.csv").stat().st_mtime_ns for run in list_runs(root)}
    for run_id, mtime in runs_before.items():
        if run_id != "tiny-summary":
            assert runs_after[run_id] == mtime, run_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(noise_levels=(0.7,)), r"noise_levels must lie in \[0, 0.5\], got 0.7"),
        (dict(batch_sizes=(64,)), r"batch_sizes must lie in \[2, num_samples=32\], got 64"),
        (dict(batch_sizes=(1,)), r"batch_sizes"),
        (dict(seeds=0), r"seeds and reference_seeds must be >= 1"),
        (dict(reach=1.5), r"reach must be in \(0, 1\]"),
    ],
)
def test_bad_arguments_raise_before_anything_runs(tmp_path, kwargs, message):
    grid = {**GRID, **kwargs}
    with pytest.raises(ValueError, match=message):
        convergence.run_convergence(losses=LOSSES, root=tmp_path, **grid)
    assert list_runs(tmp_path) == []


def test_experiment_config_targets_the_global_objective():
    config = convergence.experiment_config(
        {"name": "bayes", "shape": math.inf}, 8, 3, 0.25, 64, 200, 0.01, 0.1
    )
    assert config.loss == "bayes" and config.loss_params == {"shape": math.inf, "temperature": 0.1}
    assert config.probe_size == 64  # the global objective is evaluated on all N samples
    assert config.model == "two_tower" and config.task.model_size == "linear"
    assert config.schedule == "cosine" and config.seed == 3 and config.batch_size == 8
    assert config.eval_every == 10 and config.checkpoint_every == 50 and config.snapshot_every == 200


def test_loss_specs_take_labels_of_all_losses():
    assert convergence.loss_specs() == convergence.DEFAULT_LOSSES
    assert convergence.loss_specs(["bayes-g0.9", "clip"]) == {
        "bayes-g0.9": {"name": "bayes", "gamma": 0.9},
        "clip": {"name": "clip"},
    }
    with pytest.raises(ValueError, match=r"losses has unknown label\(s\) \['nope'\]; allowed: clip, sogclr"):
        convergence.loss_specs(["nope"])
    with pytest.raises(ValueError, match="losses must be a non-empty list"):
        convergence.loss_specs([])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(losses={"x": {"name": "nope"}}), "unknown loss name 'nope'"),
        (dict(losses={"x": {"name": "bayes", "shape": -1}}), "shape"),
        (dict(temperature=0.0), "temperature"),
        (dict(steps=0), "steps and reference_steps must be integers >= 1"),
        (dict(workers=0), "workers must be an integer >= 1"),
        (dict(reference_lr=0.0), "reference_lr must be a number > 0"),
        (dict(lr="0.1"), "lr must be a number > 0"),
        (dict(noise_levels=[]), "noise_levels and batch_sizes must each hold at least one value"),
    ],
)
def test_validate_convergence_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        convergence.validate_convergence(**kwargs)


def test_summary_id_names_the_summary_run(experiment, monkeypatch):
    root, summary = experiment
    monkeypatch.setattr(Trainer, "train_step", lambda self, step: pytest.fail("trained again"))
    again = convergence.run_convergence(
        losses={"clip": LOSSES["clip"]}, root=root, summary_id="other", **GRID
    )
    pd.testing.assert_frame_equal(again, summary[summary.loss == "clip"].reset_index(drop=True))
    assert load_run("other", root=root).config["losses"] == {"clip": LOSSES["clip"]}
