"""The README's main job: every notebook runs headless, failures are reported, the dashboard is pointed to."""

from __future__ import annotations

from pathlib import Path

from workbench.cli import demo
from workbench.cli.notebooks import NOTEBOOKS_ENV, notebook_names, notebook_parameters
from workbench.store.runs import list_runs

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


def test_demo_runs_every_notebook_and_points_to_the_dashboard(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(NOTEBOOKS_ENV, str(FIXTURES))
    assert demo.main(["--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[1/1] 01_echo" in out and "1 of 1 notebooks ran" in out
    assert "workbench app" in out and "http://localhost:8501" in out
    (run,) = list_runs(tmp_path / "runs")
    assert run.is_complete and run.notebooks


def test_demo_reports_a_failing_notebook_and_exits_nonzero(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(NOTEBOOKS_ENV, str(FIXTURES))
    monkeypatch.setitem(demo.TINY_PARAMETERS, "01_echo", {"fail": True})
    assert demo.main(["--home", str(tmp_path), "--quick"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 01_echo failed" in out and "RuntimeError: asked to fail" in out
    assert "0 of 1 notebooks ran" in out


def test_tiny_parameters_name_real_notebooks_and_parameters():
    names = notebook_names()
    assert sorted(demo.TINY_PARAMETERS) == names
    for name, values in demo.TINY_PARAMETERS.items():
        assert set(values) <= set(notebook_parameters(name)), name
