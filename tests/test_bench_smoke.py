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
