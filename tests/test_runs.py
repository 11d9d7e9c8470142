"""Tests for the run store (workbench.store.runs)."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.store import runs
from workbench.store.runs import Run, RunWriter, list_runs, load_run, new_run_id, runs_root, runs_table

CONFIG = {"loss": {"name": "infonce", "temperature": 0.1}, "seed": 0, "dims": [8, 16]}


def _make(tmp_path, run_id="r1", config=CONFIG, **kwargs) -> RunWriter:
    return RunWriter.create(config, run_id=run_id, root=tmp_path, **kwargs)


def test_round_trip(tmp_path):
    w = _make(tmp_path)
    assert w.path == (tmp_path / "r1").resolve()
    assert w.run_id == "r1"
    assert w.config == CONFIG
    w.log(0, loss=1.5)
    w.log(0, {"acc": 0.25})  # same step: merged into one row
    w.log_metrics(2, {"loss": 0.1})
    w.flush()
    status = json.loads((w.path / "status.json").read_text())
    assert status["status"] == "running"
    assert status["step"] == 2
    assert status["error"] is None

    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    w.save_snapshot(2, {"emb": emb, "ids": np.array(["a", "b", "c"]), "labels": torch.tensor([0, 1, 1])})
    table = pd.DataFrame({"layer": ["a", "b"], "bias": [0.5, -0.25]})
    w.save_table("grad_bias", table)
    w.write_json("extra", {"k": [1, 2]})
    w.finish({"best": {"acc": 0.25}, "epochs": np.int64(3)})

    run = load_run("r1", root=tmp_path)
    assert run.status == "complete"
    assert run.is_complete
    assert run.config == CONFIG
    assert run.created == status["created"]
    m = run.metrics
    assert list(m.columns) == ["step", "loss", "acc"]
    assert m["step"].tolist() == [0, 2]
    assert m["loss"].tolist() == [1.5, 0.1]  # exact float round trip through CSV
    assert m.loc[0, "acc"] == 0.25
    assert math.isnan(m.loc[1, "acc"])
    assert run.snapshot_steps == [2]
    snap = run.snapshot(2)
    np.testing.assert_array_equal(snap["emb"], emb)
    assert snap["emb"].dtype == np.float32
    assert snap["ids"].tolist() == ["a", "b", "c"]
    assert snap["labels"].tolist() == [0, 1, 1]
    assert (w.path / "snapshots" / "step_00000002.npz").is_file()
    assert run.tables == ["grad_bias"]
    pd.testing.assert_frame_equal(run.table("grad_bias"), table)
    assert run.read_json("extra") == {"k": [1, 2]}
    assert run.artifact_path("extra.json") == w.path / "artifacts" / "extra.json"
    assert run.summary == {"best": {"acc": 0.25}, "epochs": 3}


def test_missing_snapshot_and_table_errors(tmp_path):
    w = _make(tmp_path)
    w.save_snapshot(5, {"x": np.zeros(2)})
    w.save_table("t", pd.DataFrame({"a": [1]}))
    run = Run(w.path)
    with pytest.raises(ValueError, match=r"step 7.*\[5\]"):
        run.snapshot(7)
    with pytest.raises(ValueError, match=r"name 'nope'.*\['t'\]"):
        run.table("nope")
    with pytest.raises(ValueError, match="name"):
        w.save_table("../t", pd.DataFrame({"a": [1]}))
    with pytest.raises(TypeError, match="pickle"):
        w.save_snapshot(6, {"obj": np.array([{"a": 1}], dtype=object)})
    assert run.snapshot_steps == [5]


def test_load_run_by_id_and_path(tmp_path):
    w = _make(tmp_path, run_id="abc")
    by_id = load_run("abc", root=tmp_path)
    by_path = load_run(w.path)
    by_str_path = load_run(str(w.path))
    assert by_id.path == by_path.path == by_str_path.path == w.path
    assert by_path.run_id == "abc"
    assert by_path.status == "running"
    with pytest.raises(FileNotFoundError, match=r"'missing'.*" + str(tmp_path.resolve().name)):
        load_run("missing", root=tmp_path)
    with pytest.raises(FileNotFoundError):
        load_run(tmp_path / "nowhere")


def test_list_runs_order_and_status(tmp_path):
    assert list_runs(tmp_path / "does-not-exist") == []
    # Created in reverse alphabetical order, so sorting by id would give a different answer.
    c = _make(tmp_path, run_id="c")
    time.sleep(0.002)
    b = _make(tmp_path, run_id="b")
    time.sleep(0.002)
    a = _make(tmp_path, run_id="a")
    c.finish({"acc": 0.9})
    b.fail("boom")
    (tmp_path / "not a run").mkdir()  # invalid id: skipped
    (tmp_path / "stray.txt").write_text("x")  # not a folder: skipped
    found = list_runs(tmp_path)
    assert [r.run_id for r in found] == ["c", "b", "a"]
    assert [r.status for r in found] == ["complete", "failed", "running"]
    assert found[1].error == "boom"
    assert a.path == found[2].path

    table = runs_table(tmp_path)
    assert table["run_id"].tolist() == ["c", "b", "a"]
    assert table["loss.name"].tolist() == ["infonce"] * 3
    assert table["loss.temperature"].tolist() == [0.1] * 3
    assert "dims" not in table.columns  # lists are not scalars
    assert table.loc[0, "summary.acc"] == 0.9
    assert math.isnan(table.loc[1, "summary.acc"])  # failed runs have no summary
    assert table["writer"].tolist()[:2] == ["", ""] and table["writer"].iloc[2].startswith("pid ")
    assert list(runs_table(tmp_path / "empty").columns) == ["run_id", "status", "writer", "created"]


def test_resume_keeps_metrics_and_truncates(tmp_path):
    w = _make(tmp_path)
    for step in range(5):
        w.log(step, loss=float(step))
    w.log(3, acc=0.5)
    w.fail("interrupted")

    w2 = _make(tmp_path, config=json.loads(json.dumps(CONFIG)))
    assert Run(w2.path).status == "running"
    w2.truncate_metrics(after_step=2)
    w2.log(3, loss=30.0)
    w2.flush()
    m = Run(w2.path).metrics
    assert m["step"].tolist() == [0, 1, 2, 3]
    assert m["loss"].tolist() == [0.0, 1.0, 2.0, 30.0]
    assert m["acc"].isna().all()  # the acc logged at step 3 before truncation is gone
    assert json.loads((w2.path / "status.json").read_text())["step"] == 3


def test_resume_created_is_kept_and_resume_false_refuses(tmp_path):
    created = Run(_make(tmp_path).path).created
    assert Run(_make(tmp_path).path).created == created
    with pytest.raises(ValueError, match=r"run_id 'r1'.*exists"):
        _make(tmp_path, resume=False)


def test_resume_with_different_config_raises(tmp_path):
    _make(tmp_path)
    changed = {"loss": {"name": "infonce", "temperature": 0.2}, "seed": 0, "dims": [8, 16], "new": 1}
    with pytest.raises(ValueError, match=r"config.*loss\.temperature, new"):
        _make(tmp_path, config=changed)
    assert Run(tmp_path / "r1").config == CONFIG  # stored config untouched


@pytest.mark.parametrize("bad", ["../evil", "a/b", "", ".hidden", "a\n", "x" * 129])
def test_invalid_run_ids(tmp_path, bad):
    with pytest.raises(ValueError, match="run_id") as info:
        _make(tmp_path, run_id=bad)
    assert runs.RUN_ID_PATTERN in str(info.value)
    assert not (tmp_path.parent / "evil").exists()
    with pytest.raises(ValueError, match="run_id"):
        runs._run_dir(tmp_path, bad)


def test_symlink_escaping_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the runs root"):
        _make(root, run_id="link")


def test_new_run_id():
    rid = new_run_id("my model/v2!")
    assert runs._NAME_RE.fullmatch(rid)
    assert "-my-model-v2-" in rid
    assert rid[:8].isdigit()
    assert new_run_id("x") != new_run_id("x")
    assert runs._NAME_RE.fullmatch(new_run_id("/" * 300))


def test_generated_id_when_none(tmp_path):
    w = RunWriter.create(CONFIG, root=tmp_path, prefix="simclr")
    assert "-simclr-" in w.run_id
    assert [r.run_id for r in list_runs(tmp_path)] == [w.run_id]


def test_incomplete_run(tmp_path):
    w = _make(tmp_path)
    w.log(1, loss=2.0)
    (w.path / "summary.json").write_text('{"stale": 1}')  # present but the run never finished
    run = Run(w.path)
    assert run.status == "running"
    assert not run.is_complete
    assert run.summary == {}
    assert run.metrics.columns.tolist() == ["step"]  # nothing flushed yet
    assert len(run.metrics) == 0


def test_invalid_run_folder(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "status.json").write_text("{not json")
    run = load_run("broken", root=tmp_path)
    with pytest.warns(runs.DamagedFileWarning, match=r"broken/status\.json is damaged"):
        assert run.status == "invalid"
        assert run.config == {}
        assert run.created == ""
    w = _make(tmp_path, run_id="noconfig")
    (w.path / "config.json").unlink()
    assert Run(w.path).status == "invalid"


def test_tmp_files_are_ignored(tmp_path):
    w = _make(tmp_path)
    w.save_snapshot(1, {"x": np.ones(3)})
    w.save_table("t", pd.DataFrame({"a": [1.0]}))
    (tmp_path / ".tmp-abc").mkdir()  # a half-made folder in the root
    (w.path / "snapshots" / ".tmp-xyz.npz").write_bytes(b"torn")
    (w.path / "snapshots" / ".tmp-step_00000009.npz").write_bytes(b"torn")
    (w.path / "tables" / ".tmp-q.parquet").write_bytes(b"torn")
    run = Run(w.path)
    assert [r.run_id for r in list_runs(tmp_path)] == ["r1"]
    assert run.snapshot_steps == [1]
    assert run.tables == ["t"]
    # Finished writes leave no temp file behind: only the planted ones remain.
    w.finish({})
    planted = [".tmp-q.parquet", ".tmp-step_00000009.npz", ".tmp-xyz.npz"]
    assert sorted(p.name for p in w.path.rglob(".tmp-*")) == planted


def test_checkpoint_round_trip(tmp_path):
    w = _make(tmp_path)
    assert w.load_checkpoint() is None
    state = {
        "model": {"weight": torch.randn(3, 4), "bias": torch.zeros(3)},
        "epoch": 7,
        "lr": 0.5,
        "name": "adam",
        "history": [1.0, 2.0],
    }
    w.save_checkpoint(state)
    loaded = w.load_checkpoint()
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert torch.equal(loaded["model"]["bias"], state["model"]["bias"])
    assert (loaded["epoch"], loaded["lr"], loaded["name"], loaded["history"]) == (7, 0.5, "adam", [1.0, 2.0])
    # A fresh writer on the same run (resume) sees the checkpoint too.
    again = _make(tmp_path).load_checkpoint()
    assert torch.equal(again["model"]["weight"], state["model"]["weight"])


def test_context_manager_marks_failed(tmp_path):
    with pytest.raises(RuntimeError, match="kaput"), _make(tmp_path) as w:
        w.log(4, loss=1.0)
        raise RuntimeError("kaput")
    run = Run(w.path)
    assert run.status == "failed"
    assert run.error == "RuntimeError: kaput"
    assert run.metrics["loss"].tolist() == [1.0]  # buffered rows were flushed on failure

    with pytest.raises(KeyboardInterrupt), _make(tmp_path, run_id="r2") as w2:
        raise KeyboardInterrupt
    assert Run(w2.path).status == "failed"
    assert Run(w2.path).error == "interrupted"

    with _make(tmp_path, run_id="r3") as w3:
        w3.log(0, loss=2.0)
        w3.finish({"ok": True})
    assert Run(w3.path).status == "complete"
    assert Run(w3.path).summary == {"ok": True}


def test_workbench_home_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    assert runs_root() == tmp_path / "home" / "runs"
    assert runs_root(tmp_path / "explicit") == tmp_path / "explicit"
    w = RunWriter.create(CONFIG, run_id="envrun")
    assert w.path == (tmp_path / "home" / "runs" / "envrun").resolve()
    assert [r.run_id for r in list_runs()] == ["envrun"]
    assert load_run("envrun").config == CONFIG

    monkeypatch.delenv("WORKBENCH_HOME")
    assert runs_root() == runs.data_home() / "runs"


def test_runs_record_the_notebook_that_opened_them(tmp_path, monkeypatch):
    from workbench.store.runs import NOTEBOOK_ENV, RunWriter, load_run

    monkeypatch.delenv(NOTEBOOK_ENV, raising=False)
    RunWriter.create({"x": 1}, run_id="plain", root=tmp_path).finish({})
    assert load_run("plain", root=tmp_path).notebooks == []

    monkeypatch.setenv(NOTEBOOK_ENV, "/store/notebook-runs/01_gradient_bias-abc.ipynb")
    RunWriter.create({"x": 1}, run_id="nb", root=tmp_path)
    RunWriter.create({"x": 1}, run_id="nb", root=tmp_path)  # reopened by the same notebook: one entry
    monkeypatch.setenv(NOTEBOOK_ENV, "/store/notebook-runs/01_gradient_bias-def.ipynb")
    RunWriter.create({"x": 1}, run_id="nb", root=tmp_path)
    names = [p["path"].rsplit("/", 1)[-1] for p in load_run("nb", root=tmp_path).notebooks]
    assert names == ["01_gradient_bias-abc.ipynb", "01_gradient_bias-def.ipynb"]


def test_config_run_id_is_a_stable_function_of_the_config():
    from workbench.store.runs import RUN_ID_PATTERN, config_run_id

    a = config_run_id("nb gradbias", {"loss": "clip", "sizes": [4, 16]})
    assert a == config_run_id("nb gradbias", {"sizes": [4, 16], "loss": "clip"})
    assert a != config_run_id("nb gradbias", {"loss": "bayes", "sizes": [4, 16]})
    assert a.startswith("nb-gradbias-") and re.fullmatch(RUN_ID_PATTERN, a)
