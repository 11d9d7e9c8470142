"""Smoke test of the loss benchmark and its renderer (benchmarks/bench_losses.py, render_benchmarks.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_losses.py"
RENDER = ROOT / "benchmarks" / "render_benchmarks.py"
RESULT_KEYS = {"loss", "impl", "batch_size", "seconds_median", "seconds_all", "peak_mem_mb", "status"}


@pytest.mark.slow  # one fresh subprocess per configuration: about 20 s on 2 CPU cores
def test_quick_benchmark_writes_schema_and_renders(tmp_path):
    out = tmp_path / "results" / "losses-smoke.json"
    cmd = [sys.executable, str(BENCH), *"--quick --losses clip,bayes --device cpu --out".split(), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr

    data = json.loads(out.read_text())
    for key, kind in {
        "device": str,
        "torch": str,
        "threads": int,
        "dim": int,
        "dtype": str,
        "created": str,
        "command": str,
        "results": list,
    }.items():
        assert isinstance(data[key], kind), key
    assert data["dim"] == 128 and data["dtype"] == "float32" and data["device_type"] == "cpu"
    assert data["complete"] is True and data["quick"] is True
    assert "--quick" in data["command"]
    assert not list(out.parent.glob("*.tmp"))  # the atomic write left no temporary file behind

    # the fused kernels are not timed on CPU: their rows say so instead of holding numbers
    fused = [r for r in data["results"] if r["impl"] == "fused"]
    assert {(r["loss"], r["batch_size"]) for r in fused} == {
        (loss, b) for loss in ("clip", "bayes") for b in (256, 1024)
    }
    assert all(r["status"].startswith("not measured: CPU") and r["seconds_median"] is None for r in fused)
    results = [r for r in data["results"] if r["impl"] != "fused"]
    configs = {(r["loss"], r["impl"], r["batch_size"]) for r in results}
    assert configs == {
        (loss, impl, b) for loss in ("clip", "bayes") for impl in ("naive", "chunked") for b in (256, 1024)
    }
    for r in results:
        assert RESULT_KEYS <= set(r), r
        assert r["status"] == "ok", r
        assert len(r["seconds_all"]) == 1  # --quick: one timed run
        assert r["seconds_median"] == r["seconds_all"][0] > 0
        assert r["peak_mem_mb"] >= 0
    # the naive B=1024 clip graph holds two 1024 x 1024 float32 matrices (8 MiB): memory must show it
    by_key = {(r["loss"], r["impl"], r["batch_size"]): r for r in results}
    assert by_key[("clip", "naive", 1024)]["peak_mem_mb"] > 8
    assert by_key[("clip", "naive", 1024)]["peak_mem_mb"] > by_key[("clip", "naive", 256)]["peak_mem_mb"]

    # render into a temporary file that has a hand-written header: the header must survive
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(
        "# My header\n\nhand-written\n\n<!-- generated:start -->\nold\n<!-- generated:end -->\nfooter\n"
    )
    render = [sys.executable, str(RENDER), "--results-dir", str(out.parent), "--output", str(md)]
    proc = subprocess.run(render, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = md.read_text()
    assert text.startswith("# My header\n\nhand-written\n")
    assert text.rstrip().endswith("footer")
    assert "\nold\n" not in text
    assert text.count("<!-- generated:start -->") == 1 and text.count("<!-- generated:end -->") == 1
    assert "| clip | 1024 |" in text and "| bayes | 256 |" in text
    assert "| fused s |" in text and "n/m" in text
    assert data["command"] in text
    assert "GPU: not measured in this session (no GPU lent)" in text
    assert "How to regenerate" in text


PEERS_BENCH = ROOT / "benchmarks" / "bench_peers.py"


@pytest.mark.slow  # one worker process per loss plus two training steps: about 30 s on 2 CPU cores
def test_tiny_peer_benchmark_writes_ratios_and_renders(tmp_path):
    out = tmp_path / "results" / "peers-cpu.json"
    cmd = [
        sys.executable,
        str(PEERS_BENCH),
        "--tiny",
        "--losses",
        "ntxent,moco",
        "--training",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["kind"] == "peers" and data["tiny"] is True and data["complete"] is True
    assert [(r["loss"], r["batch_size"], r["status"]) for r in data["results"]] == [
        ("ntxent", 64, "ok"),
        ("moco", 64, "ok"),
    ]
    ntxent, moco = data["results"]
    # pytorch-metric-learning is a dev dependency: always a peer of ntxent; lightly is fetched from
    # PyPI and may be reported as skipped (with the reason) where the index cannot be reached
    assert "pytorch_metric_learning.NTXentLoss" in ntxent["contenders"]
    assert set(ntxent["contenders"]) | set(ntxent["skipped"]) == {
        "default",
        "chunked",
        "floor",
        "lightly.NTXentLoss",
        "pytorch_metric_learning.NTXentLoss",
    }
    assert ntxent["fastest_peer"] in ntxent["contenders"] and ntxent["logit_shape"] == [128, 128]
    for record in (ntxent, moco):
        assert record["rounds"] == 2 and record["bound_seconds"] > 0
        for label in ("default", "chunked"):
            row = record["contenders"][label]
            assert len(row["seconds_all"]) == 2 and row["ratio_to_bound"] > 0 and row["peak_mem_mb"] >= 0
            assert row["ratio_to_floor"] > 0
        # the floor (bound + one exponential pass) is timed in the same rounds
        assert len(record["contenders"]["floor"]["seconds_all"]) == 2
    assert ntxent["contenders"]["default"]["ratio_to_fastest_peer"] > 0
    assert moco["fastest_peer"] is None and moco["logit_shape"] == [64, 64 + 4096]
    assert ntxent["bound_extra_products"] == moco["bound_extra_products"] == []  # bayes only
    (train,) = data["training"]
    assert train["loss"] == "ntxent" and train["steps"] == 2 and train["samples_per_second"] > 0

    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Header\n\n<!-- generated:start -->\n<!-- generated:end -->\n")
    render = [sys.executable, str(RENDER), "--results-dir", str(out.parent), "--output", str(md)]
    proc = subprocess.run(render, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = md.read_text()
    assert "### Against other libraries" in text and "tiny smoke run" in text
    assert "| ntxent | 64 | " in text and "| moco | 64 | none |" in text
    assert "samples/s" in text and data["command"] in text
    assert "| floor / bound |" in text


COMPARE = ROOT / "benchmarks" / "compare_peers.py"


def _peer_result(path: Path, ratios: dict) -> Path:
    results = [
        {"loss": loss, "batch_size": batch, "status": "ok", "contenders": {"default": {"ratio_to_bound": r}}}
        for (loss, batch), r in ratios.items()
    ]
    path.write_text(json.dumps({"results": results}))
    return path


def test_compare_peers_tabulates_each_run_and_the_change_of_the_means(tmp_path):
    before = [
        _peer_result(tmp_path / f"b{i}.json", {("clip", 256): r, ("dcl", 64): 2.0})
        for i, r in enumerate((4.0, 6.0))
    ]
    after = [_peer_result(tmp_path / "a.json", {("clip", 256): 4.0, ("ntxent", 64): 1.0})]
    cmd = [sys.executable, str(COMPARE), "--before", *map(str, before), "--after", *map(str, after)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    # only the (loss, B) both sides measured; the mean 5.0 -> 4.0 is -20%
    assert proc.stdout.splitlines()[2:] == ["| clip | 256 | 4.00×, 6.00× | 4.00× | -20% |"]
    cmd = [sys.executable, str(COMPARE), "--before", str(before[0]), "--after", str(after[0])]
    cmd += ["--label", "chunked"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and "no (loss, B) has a 'chunked' result on both sides" in proc.stderr


def test_the_bound_of_bayes_counts_its_e_step_products():
    sys.path.insert(0, str(PEERS_BENCH.parent))
    try:
        import bench_peers
    finally:
        sys.path.remove(str(PEERS_BENCH.parent))
    # both directions' anchors against the bank of N = B samples, forward only; no other loss has any
    assert bench_peers.estep_products("bayes", 512) == [(512, 512), (512, 512)]
    assert all(bench_peers.estep_products(name, 512) == [] for name in ("clip", "sogclr", "moco", "ntxent"))


APP_BENCH = ROOT / "benchmarks" / "bench_app.py"


@pytest.mark.slow  # builds a 500-pair run and a two-loss gradient-bias run, runs every page: about 30 s
def test_app_benchmark_smoke_times_every_page_and_renders_targets(tmp_path):
    out = tmp_path / "results" / "app-smoke.json"
    cmd = [sys.executable, str(APP_BENCH), "--smoke", "--no-browser", "--note", "a test", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr

    data = json.loads(out.read_text())
    assert data["benchmark"] == "app"
    assert data["target_seconds"] == 1.5 and data["upload_target_seconds"] == 3.0
    assert data["setup"]["points"] == 500 and data["setup"]["browser_skipped"] == "--no-browser"
    assert data["note"] == "a test" and len(data["loadavg_start"]) == 3
    rows = {r["name"]: r for r in data["results"]}
    pages = ("runs", "geometry", "modality_gap", "bridges", "gradient_bias")
    for page in pages:  # every page rerun with warm caches, against the 1.5 s target
        row = rows[f"render_{page}"]
        assert row["target_seconds"] == 1.5 and row["seconds_median"] > 0
    assert rows["render_upload"]["target_seconds"] == 3.0 and len(rows["render_upload"]["seconds_all"]) == 1

    md = tmp_path / "BENCHMARKS.md"
    render = [sys.executable, str(RENDER), "--results-dir", str(out.parent), "--output", str(md)]
    proc = subprocess.run(render, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    text = md.read_text()
    assert "| measurement | what | target s | median s |" in text and "; a test" in text
    for name, record in rows.items():
        target = record.get("target_seconds")
        missed = target is not None and record["seconds_median"] > target
        line = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        assert ("✗" in line) == missed, line


def test_one_function_clip_experiment_matches_the_loss_and_writes_ratios(tmp_path):
    out = tmp_path / "one-function.json"
    script = ROOT / "benchmarks" / "bench_one_function_clip.py"
    cmd = [sys.executable, str(script), "--batch-sizes", "16", "--rounds", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(out.read_text())["results"]
    # the hand-written function is the same loss: value and both gradients to float32 round-off
    assert result["max_abs_difference_to_workbench"] < 1e-5
    assert result["rounds"] >= 30 and set(result["ratio_to_bound"]) == {
        "workbench_default",
        "one_function",
        "one_function_unit",
    }


@pytest.mark.slow  # eight fresh processes, each importing torch: about 10 s
def test_tile_processes_runs_each_tile_in_fresh_processes(tmp_path):
    out = tmp_path / "tiles.json"
    script = ROOT / "benchmarks" / "bench_tile_processes.py"
    cmd = [sys.executable, str(script), "--batch-size", "16", "--tiles", "64,1024", "--processes", "2"]
    cmd += ["--steps", "4", "--env", "MALLOC_TRIM_THRESHOLD_=1000000000", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    settings = [(r["setting"], r["tile_elements"], len(r["seconds_per_process"])) for r in data["results"]]
    assert settings == [
        ("as is", 64, 2),
        ("as is", 1024, 2),
        ("with MALLOC_TRIM_THRESHOLD_=1000000000", 64, 2),
        ("with MALLOC_TRIM_THRESHOLD_=1000000000", 1024, 2),
    ]
    assert all(x > 0 for r in data["results"] for x in r["seconds_per_process"])
