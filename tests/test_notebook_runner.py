"""The papermill runner, sweeps and the `workbench` command, on tests/fixtures/notebooks/01_echo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.cli import command as cli
from workbench.cli import notebooks
from workbench.cli.notebooks import (
    NOTEBOOKS_ENV,
    NotebookError,
    expand_grid,
    notebook_names,
    notebook_parameters,
    parse_grid,
    resolve_notebook,
    run_notebook,
    run_sweep,
)
from workbench.store.runs import list_runs

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


@pytest.fixture(autouse=True)
def fixture_notebooks(monkeypatch):
    monkeypatch.setenv(NOTEBOOKS_ENV, str(FIXTURES))


def test_notebooks_are_found_by_stem_slug_and_number():
    assert notebook_names() == ["01_echo"]
    for name in ("01_echo", "echo", "1", "01", "01_echo.ipynb"):
        assert resolve_notebook(name) == FIXTURES / "01_echo.ipynb"
    with pytest.raises(NotebookError, match="notebook must be one of 01_echo"):
        resolve_notebook("nope")


def test_parameters_are_read_with_types_defaults_and_help():
    params = notebook_parameters("echo")
    assert list(params) == ["loss", "batch_sizes", "scale", "tag", "fail", "die"]
    assert params["batch_sizes"].type == "list[int]" and params["batch_sizes"].default == [4, 16]
    assert params["loss"].help == "a loss of the registry"


def test_grid_values_are_coerced_to_the_declared_types():
    grid = parse_grid("echo", ["batch_sizes=4,16", "scale=0.5,2", "loss=clip"])
    assert grid == {"batch_sizes": [[4], [16]], "scale": [0.5, 2.0], "loss": ["clip"]}
    assert parse_grid("echo", ["batch_sizes=4,16;8"]) == {"batch_sizes": [[4, 16], [8]]}
    assert parse_grid("echo", ["batch_size=4,16"]) == {"batch_sizes": [[4], [16]]}  # singular of a list
    assert len(expand_grid(grid)) == 4
    with pytest.raises(NotebookError, match=r"unknown grid parameter 'size'.*allowed: loss, batch_sizes"):
        parse_grid("echo", ["size=1,2"])
    with pytest.raises(NotebookError, match="parameter scale must be float"):
        parse_grid("echo", ["scale=big"])
    with pytest.raises(NotebookError, match="key=v1,v2"):
        parse_grid("echo", ["scale"])


def test_unknown_or_badly_typed_parameters_fail_before_any_kernel_starts(tmp_path):
    with pytest.raises(NotebookError, match=r"unknown parameter 'lr'.*allowed: loss, batch_sizes"):
        run_notebook("echo", {"lr": "0.1"}, tmp_path)
    with pytest.raises(NotebookError, match=r"parameter batch_sizes must be list\[int\]"):
        run_notebook("echo", {"batch_sizes": "4,many"}, tmp_path)
    assert not (tmp_path / "notebook-runs").exists()


def test_run_notebook_writes_the_executed_copy_and_the_run_records_it(tmp_path):
    output = run_notebook("echo", {"batch_sizes": "2,3", "scale": "2"}, tmp_path)
    assert output.parent == tmp_path / "notebook-runs" and output.exists()
    executed = json.loads(output.read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "batch_sizes = [2, 3]" in "".join(injected[0]["source"])
    (run,) = list_runs(tmp_path / "runs")
    assert run.is_complete and run.summary == {"total": 10.0}
    assert [n["path"] for n in run.notebooks] == [str(output)]


def test_a_bad_value_fails_in_the_first_cells_with_the_allowed_names(tmp_path):
    with pytest.raises(NotebookError) as info:
        run_notebook("echo", {"loss": "nope"}, tmp_path)
    message = str(info.value)
    assert "ValueError" in message and "'nope'" in message and "clip" in message and "bayes" in message
    assert "In [3]" in message  # parameters, injected parameters, then the validation cell
    assert list_runs(tmp_path / "runs") == []


def test_a_dead_kernel_fails_the_notebook_with_the_reason_and_keeps_the_executed_copy(tmp_path):
    with pytest.raises(NotebookError) as info:
        run_notebook("echo", {"die": "true"}, tmp_path)
    message = str(info.value)
    assert "01_echo failed in cell In [4]: DeadKernelError: Kernel died" in message
    executed = info.value.notebook
    assert executed is not None and executed.parent == tmp_path / "notebook-runs"
    assert f"(executed copy: {executed})" in message
    cells = json.loads(executed.read_text())["cells"]
    assert "os._exit(1)" in "".join(cells[-1]["source"])  # kept up to the cell that killed the kernel
    assert list_runs(tmp_path / "runs") == []


def test_sweep_input_is_validated(tmp_path):
    with pytest.raises(NotebookError, match="executor must be one of local, ray"):
        run_sweep("echo", {"scale": [1.0]}, None, tmp_path, executor="slurm")
    with pytest.raises(NotebookError, match="both fixed"):
        run_sweep("echo", {"scale": [1.0]}, {"scale": 2}, tmp_path)
    with pytest.raises(NotebookError, match="grid must name"):
        run_sweep("echo", {}, None, tmp_path)


@pytest.mark.slow
def test_ray_sweep_on_a_local_two_cpu_ray(tmp_path):
    pytest.importorskip("ray")
    table = run_sweep("echo", {"scale": [1.0, 2.0]}, {"tag": "ray"}, tmp_path, executor="ray", workers=2)
    assert list(table.status) == ["complete", "complete"]
    totals = sorted(r.summary["total"] for r in list_runs(tmp_path / "runs") if r.run_id.startswith("ray-"))
    assert totals == [20.0, 40.0]


# -- the command line -----------------------------------------------------------------------------------


def test_cli_notebook_run_and_runs_show(tmp_path, capsys):
    assert cli.main(["notebook", "run", "echo", "-p", "scale", "4", "--home", str(tmp_path), "--quiet"]) == 0
    assert "executed notebook:" in capsys.readouterr().out
    (run,) = list_runs(tmp_path / "runs")
    assert cli.main(["runs", "show", run.run_id, "--root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "[complete]" in out and "written by notebook" in out
    assert cli.main(["runs", "list", "--root", str(tmp_path / "runs")]) == 0
    assert run.run_id in capsys.readouterr().out


def test_cli_two_point_sweep_records_every_point_and_a_failing_one(tmp_path, capsys):
    argv = ["sweep", "echo", "--grid", "fail=false,true", "-p", "tag", "cli", "--home", str(tmp_path)]
    assert cli.main(argv) == 1  # one point failed
    captured = capsys.readouterr()
    assert captured.out.count("complete") == 1 and "RuntimeError: asked to fail" in captured.err
    runs = list_runs(tmp_path / "runs")
    assert [r.summary["total"] for r in runs if r.run_id.startswith("cli-")] == [20.0]
    (sweep,) = [r for r in runs if r.run_id.startswith("sweep-01_echo")]
    points = sweep.table("points")
    assert sweep.status == "failed" and list(points.status) == ["complete", "failed"]
    assert Path(points.notebook.iloc[0]).parent == tmp_path / "notebook-runs"


def test_cli_sweep_survives_a_dead_kernel(tmp_path, capsys):
    argv = ["sweep", "echo", "--grid", "die=true,false", "-p", "tag", "dk", "--home", str(tmp_path)]
    assert cli.main(argv) == 1
    assert "DeadKernelError: Kernel died" in capsys.readouterr().err
    runs = list_runs(tmp_path / "runs")
    assert [r.summary["total"] for r in runs if r.run_id.startswith("dk-")] == [20.0]  # the other point ran
    (sweep,) = [r for r in runs if r.run_id.startswith("sweep-01_echo")]
    assert sweep.status == "failed" and "1 of 2 points failed" in sweep.error
    points = sweep.table("points")
    assert list(points.status) == ["failed", "complete"]
    assert "DeadKernelError" in points.error.iloc[0] and points.error.iloc[1] == ""
    for notebook in points.notebook:  # the failed point keeps its executed copy too
        assert Path(notebook).parent == tmp_path / "notebook-runs" and Path(notebook).is_file()


def test_cli_notebook_run_reports_a_dead_kernel_in_one_line(tmp_path, capsys):
    assert cli.main(["notebook", "run", "echo", "-p", "die", "true", "--home", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("workbench: error: 01_echo failed in cell In [4]: DeadKernelError")
    assert not any("Traceback" in line for line in err)


def test_a_sweep_that_breaks_off_ends_failed_not_running(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the pool broke")

    monkeypatch.setattr(notebooks, "run_pool", broken)
    with pytest.raises(RuntimeError, match="the pool broke"):
        run_sweep("echo", {"scale": [1.0, 2.0]}, None, tmp_path)
    (sweep,) = list_runs(tmp_path / "runs")
    assert sweep.status == "failed" and sweep.error == "RuntimeError: the pool broke"


def test_a_sweep_with_one_worker_runs_in_this_process_and_completes(tmp_path):
    table = run_sweep("echo", {"scale": [1.0]}, {"tag": "one"}, tmp_path, workers=1)
    assert list(table.status) == ["complete"] and Path(table.notebook.iloc[0]).is_file()
    (sweep,) = [r for r in list_runs(tmp_path / "runs") if r.run_id.startswith("sweep-")]
    assert sweep.status == "complete" and sweep.summary["points"] == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["notebook", "run", "nope"], "notebook must be one of 01_echo"),
        (["notebook", "run", "echo", "-p", "lr", "1"], "unknown parameter 'lr'"),
        (["notebook", "run", "echo", "-p", "loss", "nope"], "ValueError"),
        (["sweep", "echo", "--grid", "size=1,2"], "unknown grid parameter 'size'"),
        (["sweep", "echo"], "grid must name at least one parameter"),
        (["runs", "show", "../escape"], "is not a run id"),
        (["runs", "show", "missing-run"], "not found"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path, capsys, argv, expected):
    home = ["--home", str(tmp_path)] if argv[0] in ("notebook", "sweep") else ["--root", str(tmp_path)]
    assert cli.main(argv + home) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after papermill's progress bar, if any
    assert last.startswith("workbench: error:") and expected in last


def test_cli_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "lab", "report", "runs", "notebook", "sweep", "app"):
        assert command in out
    assert cli.main(["sweep", "echo", "--executor", "slurm"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("workbench: error:") and "invalid choice: 'slurm'" in line


def test_cli_passes_train_arguments_through(tmp_path, capsys):
    assert cli.main(["train", "--loss", "nope", "--steps", "1", "--root", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("workbench: error: loss must be one of") and "'nope'" in line


def test_cli_app_starts_streamlit_bound_to_localhost(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command, env: calls.append((command, env)) or 0)
    monkeypatch.setattr(cli, "APP_FILE", tmp_path / "streamlit_app.py")
    (tmp_path / "streamlit_app.py").write_text("")
    assert cli.main(["app", "--home", str(tmp_path), "--port", "8600"]) == 0
    ((command, env),) = calls
    assert command[1:4] == ["-m", "streamlit", "run"]
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.port") + 1] == "8600"
    assert env["WORKBENCH_HOME"] == str(tmp_path)
