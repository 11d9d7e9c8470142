#!/usr/bin/env python
"""One loss's forward+backward time in several fresh processes, per elementwise tile size.

A process's time can depend on how the C allocator treats a large temporary freed at the end of
each call (returned to the system, then faulted back in on the next call), which differs from one
process to the next: so each (tile, repeat) is its own process, and ``--env KEY=VALUE`` runs them all
again with allocator variables set (``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``).

    python benchmarks/bench_tile_processes.py --out benchmarks/results/tile-processes-cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = """
import statistics, sys, time, torch
from workbench.losses import build_loss
from workbench.losses.kernels import blocks
loss_name, batch, tile, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
blocks.TILE_ELEMENTS = tile
gen = torch.Generator().manual_seed(0)
a, b = (torch.randn(batch, 128, generator=gen).requires_grad_(True) for _ in range(2))
loss = build_loss(loss_name, validate=False)
times = []
for _ in range(steps):
    start = time.perf_counter()
    loss(a, b).backward()
    times.append(time.perf_counter() - start)
print(statistics.median(times[3:]))
"""


def run(loss: str, batch: int, tile: int, steps: int, env: dict) -> float:
    cmd = [sys.executable, "-c", WORKER, loss, str(batch), str(tile), str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({loss}, B={batch}, tile {tile}):\n{proc.stderr[-2000:]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="clip")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--tiles", default=f"{1 << 22},{1 << 18}", help="comma-separated TILE_ELEMENTS")
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per tile size")
    parser.add_argument("--steps", type=int, default=40, help="calls per process (median of all but 3)")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE: also run with these set")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.steps < 4:
        parser.error("--steps must be >= 4 (the first 3 calls are warm-up)")
    settings = {"as is": {}}
    if args.env:
        settings["with " + " ".join(args.env)] = dict(item.split("=", 1) for item in args.env)
    results = []
    for label, extra in settings.items():
        env = {**os.environ, **extra, "PYTHONPATH": str(REPO_ROOT)}
        tiles = [int(t) for t in args.tiles.split(",")]
        seconds: dict[int, list[float]] = {tile: [] for tile in tiles}
        for _ in range(args.processes):  # the tiles' processes alternate: a slow spell hits all of them
            for tile in tiles:
                seconds[tile].append(run(args.loss, args.batch_size, tile, args.steps, env))
        for tile in tiles:
            results.append({"setting": label, "tile_elements": tile, "seconds_per_process": seconds[tile]})
            times = ", ".join(f"{x * 1e3:.2f}" for x in sorted(seconds[tile]))
            print(f"{label}: tile {tile}: {times} ms")
    record = {
        "benchmark": "tile_processes",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loss": args.loss,
        "batch_size": args.batch_size,
        "loadavg_start": list(os.getloadavg()),
        "results": results,
        "median_ms": {
            f"{r['setting']}, tile {r['tile_elements']}": statistics.median(r["seconds_per_process"]) * 1e3
            for r in results
        },
    }
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
