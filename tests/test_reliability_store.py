"""Reliability of the run store: one writer per run, kill and resume, damaged files, corrupt checkpoints.

The concurrent-writer and kill tests start real processes (a few seconds in all): the lock is the
kernel's, so only other processes can show that it holds and that it goes away when its holder dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.store import report
from workbench.store.runs import (
    CorruptCheckpointError,
    DamagedFileError,
    DamagedFileWarning,
    Run,
    RunLockedError,
    RunWriter,
    list_runs,
    load_run,
    runs_table,
)

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"loss": "clip", "seed": 0}


def _writer_process(root: Path, run_id: str, body: str) -> subprocess.Popen:
    """A python process that opens ``run_id`` with a RunWriter ``w`` and runs ``body``."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from workbench.store.runs import RunWriter, RunLockedError
        try:
            w = RunWriter.create({CONFIG!r}, run_id={run_id!r}, root={str(root)!r})
        except RunLockedError as err:
            print("LOCKED", err, flush=True)
            sys.exit(3)
        print("OPEN", flush=True)
        """
    ) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(proc: subprocess.Popen, word: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(word):
            return line
        if not line and proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
    raise AssertionError(f"no {word!r} within {timeout} s")


# --------------------------------------------------------------------------------------------- one writer
def test_a_second_process_cannot_write_a_run_being_written(tmp_path):
    writer = RunWriter.create(CONFIG, run_id="busy", root=tmp_path)
    writer.log(1, loss=1.0)
    writer.flush()
    other = _writer_process(tmp_path, "busy", "")
    out, err = other.communicate(timeout=60)
    assert other.returncode == 3, err
    line = out.strip()
    assert "\n" not in line  # one line, naming the run and the holder
    assert f"run 'busy' is being written by pid {os.getpid()}" in line and "writer.lock" in line
    # The refused process changed nothing.
    run = load_run("busy", root=tmp_path)
    assert run.status == "running" and run.metrics["loss"].tolist() == [1.0]
    assert run.writer.pid == os.getpid()
    assert run.status_text == f"running (pid {os.getpid()})"
    writer.finish({"loss": 1.0})
    assert run.writer is None and run.status == "complete"


def test_concurrent_writers_one_wins_and_the_run_stays_consistent(tmp_path):
    body = """
        for step in range(1, 21):
            w.log(step, loss=float(step))
            w.flush()
            time.sleep(0.01)
        w.finish({"steps": 20})
        print("DONE", flush=True)
    """
    procs = [_writer_process(tmp_path, "race", body) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    winners = [o for p, o in zip(procs, outs, strict=True) if p.returncode == 0]
    losers = [o for p, o in zip(procs, outs, strict=True) if p.returncode == 3]
    assert codes.count(0) >= 1 and set(codes) <= {0, 3}, outs
    # A loser is refused while a winner writes; one that comes after a finished winner resumes the
    # complete run and finishes it again with the same content (never two writers at once).
    assert all("is being written by pid" in out for out, _ in losers)
    assert all("DONE" in out for out, _ in winners)
    run = load_run("race", root=tmp_path)
    assert run.status == "complete"
    assert run.metrics["step"].tolist() == list(range(1, 21))
    assert run.metrics["loss"].tolist() == [float(s) for s in range(1, 21)]


def test_a_killed_writer_shows_as_stopped_and_its_lock_is_taken_over(tmp_path):
    body = """
        w.log(5, loss=0.5)
        w.flush()
        (w.path / "snapshots").mkdir(exist_ok=True)
        (w.path / "snapshots" / ".tmp-half.npz").write_bytes(b"torn by the kill")
        print("READY", flush=True)
        time.sleep(600)
    """
    proc = _writer_process(tmp_path, "killed", body)
    _wait_for(proc, "READY")
    run = load_run("killed", root=tmp_path)
    assert run.status == "running" and run.writer.pid == proc.pid
    assert runs_table(tmp_path).set_index("run_id").loc["killed", "writer"] == f"pid {proc.pid}"
    young_cache = tmp_path / "killed" / "cache" / "projections" / ".tmp-reader.npz"
    young_cache.parent.mkdir(parents=True)
    young_cache.write_bytes(b"a dashboard writing its cache")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    assert run.status == "stopped" and run.writer is None
    assert run.status_text == "stopped at step 5"
    assert runs_table(tmp_path).set_index("run_id").loc["killed", "status"] == "stopped"
    with pytest.warns(RuntimeWarning, match=rf"taking over from pid {proc.pid}.*resuming after step 5"):
        resumed = RunWriter.create(CONFIG, run_id="killed", root=tmp_path)
    assert run.status == "running" and run.writer.pid == os.getpid()
    # The torn temp file of the killed writer is gone; a reader's fresh cache file is left alone.
    assert not (tmp_path / "killed" / "snapshots" / ".tmp-half.npz").exists()
    assert young_cache.exists()
    resumed.finish({})
    assert run.status == "complete"


def test_an_exited_writer_releases_the_lock(tmp_path):
    proc = _writer_process(tmp_path, "quit", "w.log(1, loss=1.0)\nw.flush()\n")  # exits without finish
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert load_run("quit", root=tmp_path).status == "stopped"
    with pytest.warns(RuntimeWarning, match="which stopped without finishing"):
        RunWriter.create(CONFIG, run_id="quit", root=tmp_path).finish({})  # no error: nobody holds it


def test_lock_is_released_by_finish_fail_and_with_and_retaken_for_later_writes(tmp_path):
    w = RunWriter.create(CONFIG, run_id="r", root=tmp_path)
    w.finish({})
    assert Run(w.path).writer is None
    w.save_table("late", pd.DataFrame({"a": [1]}))  # a write after finish takes the lock again
    assert Run(w.path).writer.pid == os.getpid()
    w.close()
    assert Run(w.path).writer is None
    with pytest.raises(KeyError), RunWriter.create(CONFIG, run_id="r2", root=tmp_path) as w2:
        raise KeyError("x")
    assert Run(w2.path).status == "failed" and Run(w2.path).writer is None


def test_a_newer_writer_in_the_same_process_takes_over(tmp_path):
    old = RunWriter.create(CONFIG, run_id="nb", root=tmp_path)
    new = RunWriter.create(CONFIG, run_id="nb", root=tmp_path)  # e.g. a notebook cell run again
    old.log(1, loss=1.0)  # buffering writes nothing
    with pytest.raises(RunLockedError, match="newer RunWriter"):
        old.flush()
    with old:  # leaving the superseded writer's block writes nothing and does not raise
        pass
    new.log(1, loss=2.0)
    new.finish({})
    assert Run(new.path).metrics["loss"].tolist() == [2.0] and Run(new.path).status == "complete"


def test_store_files_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        w = RunWriter.create(CONFIG, run_id="perm", root=tmp_path)
        w.save_snapshot(1, {"a": np.zeros(2)})
        w.finish({})
    finally:
        os.umask(previous)
    modes = {p.name: p.stat().st_mode & 0o777 for p in w.path.rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {0o644}, modes


# --------------------------------------------------------------------------------------------- damaged files
def _complete_run(root: Path, run_id: str = "dmg") -> Run:
    w = RunWriter.create(CONFIG, run_id=run_id, root=root)
    for step in range(3):
        w.log(step, loss=float(step), acc=0.5)
    w.save_snapshot(2, {"a": np.ones((4, 3)), "b": np.ones((4, 3))})
    w.save_table("t", pd.DataFrame({"x": [1.0]}))
    w.write_json("names", ["a"])
    w.finish({"loss": 2.0})
    return Run(w.path)


def test_a_text_cell_in_metrics_is_a_warning_and_a_missing_value(tmp_path):
    run = _complete_run(tmp_path)
    text = (run.path / "metrics.csv").read_text().replace("1.0,0.5", "oops,0.5")
    (run.path / "metrics.csv").write_text(text)
    with pytest.warns(
        DamagedFileWarning, match=r"metrics\.csv is damaged \(1 cell\(s\) are not numbers.*loss"
    ):
        metrics = run.metrics
    assert metrics["step"].tolist() == [0, 1, 2] and np.isnan(metrics["loss"][1])
    assert metrics.dtypes.loc["loss"] == np.float64
    assert any("metrics.csv is damaged" in p for p in run.problems())


@pytest.mark.parametrize(
    "damage",
    ["folder", "garbage", "no-step", "bad-step"],
)
def test_an_unreadable_metrics_file_reads_as_no_metrics(tmp_path, damage):
    run = _complete_run(tmp_path)
    path = run.path / "metrics.csv"
    path.unlink()
    if damage == "folder":
        path.mkdir()
    elif damage == "garbage":
        path.write_bytes(b"\xff\xfe\x00binary\x00")
    elif damage == "no-step":
        path.write_text("loss\n1.0\n")
    else:
        path.write_text("step,loss\nx,1.0\n-1,2.0\n1.5,3.0\n4,4.0\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = run.metrics
    assert metrics["step"].tolist() == ([4] if damage == "bad-step" else [])
    assert any(issubclass(w.category, DamagedFileWarning) for w in caught)
    assert run.problems()


def test_symlinks_out_of_a_run_or_the_store_are_not_followed(tmp_path):
    root = tmp_path / "runs"
    run = _complete_run(root)
    secret = tmp_path / "secret.csv"
    secret.write_text("step,password\n0,42\n")
    (run.path / "metrics.csv").unlink()
    (run.path / "metrics.csv").symlink_to(secret)
    with pytest.warns(DamagedFileWarning, match="symbolic link to a place outside the run folder"):
        assert run.metrics.columns.tolist() == ["step"] and run.metrics.empty
    (root / "alias").symlink_to(run.path)  # a symlinked run folder is not listed twice (or at all)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "foreign").symlink_to(elsewhere)
    assert [r.run_id for r in list_runs(root)] == ["dmg"]


def test_damaged_json_snapshot_table_and_artifact(tmp_path):
    run = _complete_run(tmp_path)
    (run.path / "summary.json").write_text("{")
    with pytest.warns(DamagedFileWarning, match=r"summary\.json is damaged"):
        assert run.summary == {}
    (run.path / "snapshots" / "step_00000002.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(DamagedFileError, match=r"step_00000002\.npz is damaged .*delete the file"):
        run.snapshot(2)
    (run.path / "tables" / "t.parquet").write_bytes(b"PAR1 torn")
    with pytest.raises(DamagedFileError, match=r"t\.parquet is damaged"):
        run.table("t")
    (run.path / "artifacts" / "names.json").write_text("[")
    with pytest.raises(DamagedFileError, match=r"names\.json is damaged"):
        run.read_json("names")
    with pytest.raises(FileNotFoundError):
        run.read_json("missing")
    problems = run.problems()
    assert len(problems) == 3 and all(" is damaged (" in p for p in problems)  # summary, snapshot, table
    assert _complete_run(tmp_path, "fine").problems() == []


def test_report_names_a_damaged_table_in_one_line(tmp_path):
    w = RunWriter.create(CONFIG, run_id="gradbias-results", root=tmp_path)
    w.save_table("gradbias", pd.DataFrame({"a": [1.0]}))
    w.finish({})
    (w.path / "tables" / "gradbias.parquet").write_bytes(b"not parquet")
    results = tmp_path / "RESULTS.md"
    results.write_text("<!-- table:gradbias -->\nold\n<!-- /table -->\n")
    with pytest.raises(SystemExit) as exit_info:
        report.main(["--file", str(results), "--root", str(tmp_path), "--check"])
    message = str(exit_info.value)
    assert message.startswith("error: ") and "gradbias.parquet is damaged" in message and "\n" not in message


# --------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("damage", ["garbage", "truncated", "folder", "not-a-dict"])
def test_a_corrupt_checkpoint_is_one_clear_error(tmp_path, damage):
    w = RunWriter.create(CONFIG, run_id="ck", root=tmp_path)
    w.save_checkpoint({"model": {"w": torch.randn(64, 64)}, "step": 3})
    path = w.path / "checkpoint.pt"
    if damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "folder":
        path.unlink()
        path.mkdir()
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(CorruptCheckpointError) as info:
        w.load_checkpoint()
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert str(path) in message and "restart" in message
    if damage in ("garbage", "truncated"):  # the zip container itself is broken
        assert any("checkpoint.pt is damaged" in p for p in Run(w.path).problems())


def test_restart_forgets_the_trained_state(tmp_path):
    w = RunWriter.create(CONFIG, run_id="again", root=tmp_path)
    w.log(0, loss=3.0)
    w.log(10, loss=1.0)
    w.save_snapshot(10, {"a": np.ones((2, 2))})
    w.flush()
    (w.path / "checkpoint.pt").write_bytes(b"torn")
    created = Run(w.path).created
    w.restart()
    assert w.load_checkpoint() is None
    run = Run(w.path)
    assert run.snapshot_steps == [] and run.metrics.empty and run.step == 0
    assert run.created == created and run.config == CONFIG and run.status == "running"
    w.log(0, loss=3.0)
    w.finish({})
    assert run.metrics["loss"].tolist() == [3.0]


def test_status_json_with_wrong_types_does_not_crash_readers_or_resume(tmp_path):
    w = RunWriter.create(CONFIG, run_id="types", root=tmp_path)
    w.close()
    (w.path / "status.json").write_text(json.dumps({"status": "running", "step": "ten", "created": 5}))
    run = Run(w.path)
    assert run.step == 0 and run.created == "" and run.status == "stopped"
    RunWriter.create(CONFIG, run_id="types", root=tmp_path).finish({})
    assert run.status == "complete"
