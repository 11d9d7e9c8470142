"""The ``workbench`` command: train, lab (grids with flags from their fields), report, and one-line errors.

The notebook, sweep, runs and app subcommands are tested in test_notebook_runner.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from workbench.cli import command as cli
from workbench.data.userdata import save_paired_embeddings
from workbench.labs.grid import grid_from_args
from workbench.labs.modality import COMMANDS, StructureGrid, TemperatureGrid
from workbench.store.runs import list_runs, load_run

TOWER = json.dumps({"hidden": 16, "depth": 1, "out_dim": 8})
TINY_TEMPERATURE = ["--seeds", "1", "--steps", "2", "--temperatures", "0.5", "--workers", "1"]
TINY_TEMPERATURE += ["--batch-size", "32", "--probe-size", "48", "--tower", TOWER]


def _one_error_line(capsys) -> str:
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("workbench: error: ")
    return line


def test_help_lists_the_commands_and_the_labs(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "lab", "report", "runs", "notebook", "sweep", "app"):
        assert f"    {command} " in out
    with pytest.raises(SystemExit):
        cli.main(["lab", "--help"])
    out = capsys.readouterr().out
    for lab in ("gradbias", "convergence", "modality (experiments)", "embeddings"):
        assert lab in out


def test_every_grid_field_is_a_flag_and_the_command_names_the_tag():
    for name, (cls, _) in COMMANDS.items():
        args = cli.build_parser().parse_args(["lab", "modality", name])
        grid = grid_from_args(args)
        assert type(grid) is cls and grid.tag == name
    args = cli.build_parser().parse_args(
        ["lab", "modality", "ablation", "--seeds", "1", "--variants", "clip"]
    )
    assert grid_from_args(args) == StructureGrid(tag="ablation", seeds=1, variants=("clip",))


def test_lab_plan_lists_the_runs_and_writes_nothing(tmp_path, capsys):
    argv = ["temperature", "--plan", "--temperatures", "0.1", "1", "--root", str(tmp_path)]
    assert cli.main(["lab", "modality", *argv]) == 0
    out = capsys.readouterr().out
    assert "temperature-t0p1-s2" in out and "temperature-t1-s0" in out
    assert cli.main(["experiments", *argv]) == 0  # the older spelling
    assert capsys.readouterr().out == out
    assert list_runs(tmp_path) == []
    argv = ["--noise", "0.5", "--with-ablation", "--seeds", "1", "--plan", "--root", str(tmp_path)]
    assert cli.main(["convergence", *argv]) == 0
    out = capsys.readouterr().out
    assert "convergence-n0p5-fullbatch-s2" in out and "convergence-n0p5-bayes-g0.9-b16-s0" in out


def test_lab_trains_a_grid_and_prints_its_summary(tmp_path, capsys):
    argv = ["lab", "modality", "temperature", *TINY_TEMPERATURE, "--tag", "cli", "--root", str(tmp_path)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "centroid_gap_mean" in out and "wall time" in out and "(cli-summary)" in out
    grid = TemperatureGrid(
        seeds=1,
        steps=2,
        temperatures=(0.5,),
        batch_size=32,
        probe_size=48,
        tower=json.loads(TOWER),
        tag="cli",
    )
    assert load_run("cli-summary", root=tmp_path).config == json.loads(json.dumps(grid.record()))
    assert load_run("cli-t0p5-s0", root=tmp_path).is_complete


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["lab", "modality", "temperature", "--seeds", "0"], "seeds must be an integer >= 1, got 0"),
        (["lab", "modality", "temperature", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
        (["lab", "modality", "temperature", "--tower", "{bad"], "argument --tower: invalid loads value"),
        (["lab", "modality", "ablation", "--mode", "three", "--plan"], "mode must be one of four_term, clip"),
        (["lab", "modality", "nope"], "invalid choice: 'nope'"),
        (["lab", "nope"], "invalid choice: 'nope'"),
        (["lab"], "the following arguments are required: LAB"),
        (["lab", "convergence", "--noise", "0.9", "--plan"], "noise_levels must be a finite number >= 0.0"),
        (["convergence", "--losses", "nope", "--plan"], "losses has unknown label(s) ['nope']"),
        (["lab", "gradbias", "--batch-sizes", "1"], "batch_sizes must be integers in [2, N=256], got [1]"),
        (["gradbias", "--repeats", "x"], "argument --repeats: invalid int value: 'x'"),
        (["lab", "embeddings", "missing.npz"], "missing.npz"),
        (["train", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
        (["train", "--dataset", "nope", "--steps", "1"], "nope"),
        (["report", "--file", "missing.md"], "No such file or directory"),
        (["nope"], "invalid choice: 'nope'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    assert cli.main(argv) == 2
    assert expected in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists() or list_runs(tmp_path / "runs") == []


def test_train_takes_the_trainer_flags(tmp_path, capsys):
    argv = [
        "train",
        "--dataset",
        "synthetic",
        "--dataset-params",
        '{"num_samples": 32}',
        "--model-size",
        "tiny",
    ]
    argv += ["--loss", "clip", "--batch-size", "8", "--steps", "2", "--eval-every", "1", "--probe-size", "32"]
    assert cli.main([*argv, "--run-id", "cli-train", "--root", str(tmp_path)]) == 0
    assert "run cli-train: complete" in capsys.readouterr().out
    run = load_run("cli-train", root=tmp_path)
    assert run.config["batch_size"] == 8 and run.config["dataset_params"] == {"num_samples": 32}
    assert run.metrics.step.tolist() == [0, 1, 2]


def test_python_m_workbench_train_still_works():
    result = subprocess.run(
        [sys.executable, "-m", "workbench.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "--batch-size" in result.stdout and "--run-id" in result.stdout


def test_lab_embeddings_reports_a_file_as_a_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = save_paired_embeddings(tmp_path / "pairs.npz", rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))
    assert (
        cli.main(["lab", "embeddings", str(path), "--run-id", "emb", "--root", str(tmp_path / "runs")]) == 0
    )
    out = capsys.readouterr().out
    assert "centroid_gap" in out and "run emb: complete" in out
    assert load_run("emb", root=tmp_path / "runs").config["kind"] == "embeddings"


def test_runs_list_and_show_say_stopped_and_name_damaged_files(tmp_path, capsys):
    from workbench.store.runs import RunWriter

    writer = RunWriter.create({"dataset": "synthetic"}, run_id="halted", root=tmp_path)
    writer.log_metrics(0, {"loss": 1.0})
    writer.flush()
    writer.close()  # the process is gone: nobody holds the run's lock any more
    (tmp_path / "halted" / "summary.json").write_text("{not json")
    assert cli.main(["runs", "list", "--root", str(tmp_path), "--status", "stopped"]) == 0
    assert "halted" in capsys.readouterr().out
    assert cli.main(["runs", "show", "halted", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[stopped" in out and "warning:" in out and "summary.json" in out
