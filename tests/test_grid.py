"""workbench.labs.grid: frozen grids checked when made, run_grid on a toy grid, run_pool, grid flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import pytest

from workbench.labs import modality
from workbench.labs.convergence import ConvergenceGrid
from workbench.labs.grid import (
    Check,
    Grid,
    Point,
    add_grid_arguments,
    axis,
    grid_from_args,
    numbers,
    run_grid,
    run_pool,
)
from workbench.store.runs import RunWriter, check_stored_config, list_runs, load_run, slug
from workbench.training.trainer import TrainConfig, Trainer


@dataclass(frozen=True)
class ToyGrid(Grid):
    """A grid of tiny synthetic runs, one point per noise level.

    Attributes:
        noises: near-duplicate fractions, each in [0, 0.5].
    """

    seeds: int = 2
    steps: int = 4
    tag: str = "toy"
    noises: tuple[float, ...] = (0.0, 0.5)

    kind = "toy"
    metrics = ("global_loss", "pos_cos", "not_logged")
    checks: ClassVar[dict[str, Check]] = {**Grid.checks, "noises": axis(numbers(0.0, 0.5))}

    def points(self) -> list[Point]:
        points = []
        for noise in self.noises:
            config = TrainConfig.from_dict(
                dict(
                    dataset="synthetic",
                    dataset_params={"num_samples": 32, "noise": noise},
                    model_size="tiny",
                    loss="clip",
                    batch_size=8,
                    steps=self.steps,
                    lr=self.lr,
                    eval_every=2,
                    snapshot_every=self.steps,
                    checkpoint_every=self.steps,
                    probe_size=32,
                )
            )
            points.append(Point({"noise": noise}, f"n{slug(noise)}", config, range(self.seeds), {"n": 32}))
        return points


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    grid = ToyGrid(root=root, workers=1)
    return root, grid, run_grid(grid)


def test_a_grid_is_checked_when_made_and_frozen():
    with pytest.raises(ValueError, match=r"seeds must be an integer >= 1, got 0"):
        ToyGrid(seeds=0)
    with pytest.raises(ValueError, match=r"noises must be a finite number >= 0.0 and <= 0.5, got 0.7"):
        ToyGrid(noises=(0.7,))
    with pytest.raises(ValueError, match=r"noises has duplicate values"):
        ToyGrid(noises=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"tag 'a b' is not allowed: '<tag>-summary' must match"):
        ToyGrid(tag="a b")
    with pytest.raises(ValueError, match=r"root must be a path or None"):
        ToyGrid(root=3)
    grid = ToyGrid(noises=[0, 0.5])
    assert grid.noises == (0.0, 0.5)  # axes are normalised to tuples of the checked values
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.seeds = 5  # type: ignore[misc]
    assert dataclasses.replace(grid, seeds=1).seeds == 1
    with pytest.raises(ValueError, match="seeds"):
        dataclasses.replace(grid, seeds=-1)  # a changed copy is checked again


def test_the_record_is_the_grid_without_where_it_runs(tmp_path):
    grid = ToyGrid(root=tmp_path, workers=2, summary_id="elsewhere")
    record = grid.record()
    expected = {
        k: v for k, v in dataclasses.asdict(grid).items() if k not in ("workers", "root", "summary_id")
    }
    assert record == {"kind": "toy", "metrics": list(ToyGrid.metrics), **expected}
    assert ToyGrid(workers=1).record() == record  # workers and root do not change what is computed


def test_run_grid_writes_every_run_and_the_summary(toy):
    root, grid, summary = toy
    assert list(summary.columns) == [
        "noise",
        "n",
        "global_loss_mean",
        "global_loss_std",
        "pos_cos_mean",
        "pos_cos_std",
        "not_logged_mean",
        "not_logged_std",
        "runs",
    ]
    assert summary.noise.tolist() == [0.0, 0.5] and summary.runs.tolist() == [2, 2]
    assert summary.not_logged_mean.isna().all()  # a metric no run logs is NaN, not an error
    run = load_run("toy-summary", root=root)
    assert run.is_complete and run.config == json.loads(json.dumps(grid.record()))  # tuples as lists
    assert run.summary["settings"] == 2 and run.summary["runs"] == 4
    runs = run.table("runs")
    assert runs.run_id.tolist() == ["toy-n0-s0", "toy-n0-s1", "toy-n0p5-s0", "toy-n0p5-s1"]
    for row in runs.itertuples():
        child = load_run(row.run_id, root=root)
        assert child.is_complete and child.config["seed"] == row.seed
        assert row.global_loss == pytest.approx(child.metrics.global_loss.iloc[-1])
        assert row.final_step == 4
    part = runs[runs.noise == 0.5]
    assert summary.global_loss_mean.iloc[1] == pytest.approx(part.global_loss.mean())
    assert summary.global_loss_std.iloc[1] == pytest.approx(part.global_loss.std())


def test_run_grid_plans_and_reruns_without_training(toy, monkeypatch):
    root, grid, summary = toy
    monkeypatch.setattr(Trainer, "train_step", lambda self, step: pytest.fail("a complete run was trained"))
    plan = run_grid(dataclasses.replace(grid, seeds=3, summary_id="toy-more"), plan_only=True)
    assert plan.run_id.tolist()[-1] == "toy-n0p5-s2" and "toy-n0p5-s2" not in {
        r.run_id for r in list_runs(root)
    }
    pd.testing.assert_frame_equal(run_grid(grid), summary, check_exact=True)


def test_a_changed_setting_under_one_tag_is_refused_before_training(toy):
    root, grid, _ = toy
    before = {run.run_id for run in list_runs(root)}
    with pytest.raises(ValueError, match=r"run 'toy-n0-s0' exists and its config differs .* keys: .*lr"):
        run_grid(dataclasses.replace(grid, lr=0.5))
    # the summary holds the grid: a grid with other seeds but the same runs needs its own summary id
    with pytest.raises(
        ValueError, match=r"run 'toy-summary' exists and .* keys: seeds; pass another summary_id"
    ):
        run_grid(dataclasses.replace(grid, seeds=1))
    assert {run.run_id for run in list_runs(root)} == before


def test_one_config_check_for_the_grids_and_the_run_writer(tmp_path):
    check_stored_config("new", {"a": 1}, tmp_path)  # nothing stored: passes
    RunWriter.create({"a": 1, "b": {"c": 2}}, run_id="r", root=tmp_path).finish({})
    check_stored_config("r", {"a": 1, "b": {"c": 2}}, tmp_path)
    message = r"run 'r' exists and its config differs from the stored one in keys: a, b.c"
    with pytest.raises(ValueError, match=message):
        check_stored_config("r", {"a": 2, "b": {"c": 3}}, tmp_path)
    with pytest.raises(ValueError, match=message):
        RunWriter.create({"a": 2, "b": {"c": 3}}, run_id="r", root=tmp_path)


def test_slug_names_numbers_in_run_ids():
    assert [slug(v) for v in (0.0, 0.5, 1.0, 0.25, 1e-05, 1e20)] == ["0", "0p5", "1", "0p25", "1e-05", "1e20"]


def _square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_run_pool_keeps_the_job_order_and_raises_the_first_error(workers, capsys):
    assert run_pool(_square, [3, 1, 2], workers, name=str) == [9, 1, 4]
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["[1/3] 3", "[2/3] 1", "[3/3] 2"]
    with pytest.raises(ValueError, match="negative: -1"):
        run_pool(_square, [1, -1, 2], workers)


def _parse(cls, argv, defaults=None):
    parser = argparse.ArgumentParser()
    add_grid_arguments(parser, cls, defaults)
    return parser, parser.parse_args(argv)


def test_flags_are_built_from_the_grid_fields():
    parser, args = _parse(ToyGrid, ["--noises", "0.1", "0.2", "--seeds", "1", "--workers", "2"])
    assert grid_from_args(args) == ToyGrid(noises=(0.1, 0.2), seeds=1, workers=2)
    assert grid_from_args(_parse(ToyGrid, [])[1]) == ToyGrid()  # no flag: the dataclass defaults
    assert grid_from_args(_parse(ToyGrid, [], {"tag": "other"})[1]).tag == "other"
    text = parser.format_help()
    assert "near-duplicate fractions, each in [0, 0.5] (default: (0.0, 0.5))" in " ".join(text.split())
    for f in dataclasses.fields(ToyGrid):
        assert "--" + f.name.replace("_", "-") in text


def test_flags_of_every_type_and_the_extra_spellings():
    _, args = _parse(
        modality.StructureGrid,
        ["--no-learn-scale", "--tower", '{"hidden": 8}', "--weights", "0.5", "2", "--regularizers", "bridge",
         "consistency", "--snapshots", "2", "--plan"],
    )  # fmt: skip
    grid = grid_from_args(args)
    assert grid.learn_scale is False and grid.tower == {**modality.DEFAULT_TOWER, "hidden": 8}
    assert grid.weights == (0.5, 2.0) and grid.regularizers == ("bridge", "consistency") and args.plan
    _, args = _parse(ConvergenceGrid, ["--noise", "0.5", "--with-ablation"])
    grid = grid_from_args(args)
    assert grid.noise_levels == (0.5,) and list(grid.losses) == [
        "clip",
        "sogclr",
        "bayes",
        "bayes-point",
        "bayes-g0.9",
    ]
    _, args = _parse(ConvergenceGrid, ["--losses", "clip", "bayes"])
    assert list(grid_from_args(args).losses) == ["clip", "bayes"]
    _, args = _parse(modality.BatchSizeGrid, ["--steps", "3"])
    assert grid_from_args(args).steps == 3 and modality.BatchSizeGrid().steps is None
