#!/usr/bin/env python
"""Each workbench loss against the other libraries that implement it, interleaved in one process.

For every (loss, B) one fresh worker process builds the contenders:

* ``default``: ``build_loss(name)`` as a user gets it (on CPU the whole-matrix path);
* ``chunked``: ``implementation="chunked"`` with ``--chunk-size`` rows per chunk (memory linear in B);
* the peers of ``peer_losses.PEERS`` (open_clip, lightly, pytorch-metric-learning, LibAUC) at the
  same hyper-parameters;
* ``bound``: the matrix products a loss cannot avoid: the three of its (M x N) similarity matrix
  (``S = Q K^T``, ``G K``, ``G^T Q``), at the loss's M and N, allocating their results as a loss does,
  and, for ``bayes``, the two forward products of its E-step (each direction's anchors scored against
  the bank of all N samples, ``--batch-sizes`` B = N here; ``estep_products``);
* ``floor``: ``bound`` plus the least elementwise work a softmax loss adds to it, one in-place
  exponential over the (M x N) matrix and its row sums (what a loss can reach without a fused kernel).

Each contender runs one forward+backward on ``randn(B, d)`` inputs that require grad. After a warm-up
of each, the worker runs rounds in which every contender runs once (the order rotating per round),
so a slow spell of a shared machine hits all of them; a contender's ratio to another is the median
over rounds of the per-round ratios. Peak memory: before the rounds, each contender's extra resident
memory over one pass (``malloc_trim``, then the kernel's high-water mark reset through
``/proc/self/clear_refs``; Linux), or CUDA's ``max_memory_allocated``.

    python benchmarks/bench_peers.py                       # B = 256 .. 8192, d = 128, float32
    python benchmarks/bench_peers.py --losses clip,siglip --batch-sizes 4096 --repeats 9
    python benchmarks/bench_peers.py --tiny --out /tmp/peers.json   # smoke run (tests)
    python benchmarks/bench_peers.py --training             # also samples/s of the default runs

Results: ``benchmarks/results/peers-<device>.json``; ``render_benchmarks.py`` renders them into
BENCHMARKS.md. Peers are fetched into ``data/cache/peers`` on first use (see ``peer_losses.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for path in (REPO_ROOT, BENCH_DIR):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import peer_losses  # noqa: E402
import torch  # noqa: E402
from bench_losses import (  # noqa: E402
    CpuPeak,
    CudaPeak,
    _loadavg,
    available_memory_bytes,
    device_name,
    write_json_atomic,
)

from workbench.losses import build_loss, loss_names  # noqa: E402

RESULT_MARKER = "PEERS_RESULT "
BATCH_SIZES = (256, 1024, 4096, 8192)
TINY_BATCH_SIZES = (64,)
INDEXED = ("sogclr", "bayes")
TWO_VIEW = ("ntxent", "dcl", "dclw")
MOCO_QUEUE = 4096
# peers whose memory grows far faster than B^2 floats are not run beyond this batch size
# (pytorch-metric-learning's NTXentLoss builds a (2B)^3 tensor: 34 GB at B = 1024)
PEER_MAX_BATCH = {"pytorch_metric_learning.NTXentLoss": 256}
# bytes of memory per logit entry a contender may need (a peer holds several B x B matrices)
BYTES_PER_LOGIT = 4 * 8
# environment variables recorded with a run (they change CPU timings)
THREAD_ENV = (
    "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_ARENA_MAX",
)  # fmt: skip


def logit_shape(name: str, batch_size: int) -> tuple[int, int]:
    """(M, N) of the similarity matrix a loss reduces at its defaults."""
    if name in TWO_VIEW:
        return 2 * batch_size, 2 * batch_size
    if name == "moco":
        return batch_size, batch_size + MOCO_QUEUE
    return batch_size, batch_size


def estep_products(name: str, batch_size: int) -> list[tuple[int, int]]:
    """(rows, cols) of the forward-only products a loss needs beyond its similarity matrix.

    ``bayes`` scores both directions' anchors against its bank of every sample's embedding (its
    estimate of each anchor's partition function over the dataset): two (B x N) products, N = B here.
    """
    return [(batch_size, batch_size)] * 2 if name == "bayes" else []


def params_for(name: str, batch_size: int) -> dict:
    return {"num_samples": batch_size} if name in INDEXED else {}


# --- the worker ---------------------------------------------------------------------------------------
def _extra_fn(extra: list[tuple[int, int]], dim: int, device: str, dtype: torch.dtype):
    """The forward-only products of ``estep_products`` (their results reduced, to keep them live)."""
    def features(rows):
        return torch.randn(rows, dim, device=device, dtype=dtype)

    pairs = [(features(rows), features(cols)) for rows, cols in extra]
    return lambda: sum((q @ k.T).sum(dim=1).sum() for q, k in pairs)


def _bound_fn(rows: int, cols: int, dim: int, device: str, dtype: torch.dtype, extra=()):
    q = torch.randn(rows, dim, device=device, dtype=dtype)
    k = torch.randn(cols, dim, device=device, dtype=dtype)
    more = _extra_fn(list(extra), dim, device, dtype)

    def products(a, b, index):
        s = q @ k.T  # forward
        return (s @ k).sum() + (s.T @ q).sum() + more()  # the two backward products (sums: keep them live)

    return products


def _floor_fn(rows: int, cols: int, dim: int, device: str, dtype: torch.dtype, extra=()):
    # unit rows at CLIP's scale 1/0.07: the exponentials stay finite, as a loss's do
    gen = torch.Generator().manual_seed(1)
    q = torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen), dim=1).mul_(1 / 0.07)
    k = torch.nn.functional.normalize(torch.randn(cols, dim, generator=gen), dim=1)
    q, k = q.to(device, dtype), k.to(device, dtype)
    more = _extra_fn(list(extra), dim, device, dtype)

    def products(a, b, index):
        s = (q @ k.T).exp_()  # forward product and one exponential per entry
        total = s.sum(dim=1).sum()  # the row sums a log-sum-exp needs
        return total + (s @ k).sum() + (s.T @ q).sum() + more()

    return products


def contenders(spec: dict) -> dict:
    """name -> fn(a, b, index) -> loss value (None for the bound), for one (loss, B)."""
    name, batch, device, chunk = spec["loss"], spec["batch_size"], spec["device"], spec["chunk_size"]
    dtype = getattr(torch, spec["dtype"])
    out, skipped = {}, {}
    for label, impl in (("default", None), ("chunked", "chunked")):
        params = params_for(name, batch)
        if impl is not None:
            params.update(implementation=impl, chunk_size=chunk)
        loss = build_loss(name, **params).to(device)
        if name == "moco":
            _fill_queue(loss, spec["dim"], device, dtype)
        out[label] = _ours(loss, name)
    for peer in peer_losses.PEERS[name]:
        if batch > PEER_MAX_BATCH.get(peer, batch):
            skipped[peer] = f"skipped: memory (run up to B={PEER_MAX_BATCH[peer]})"
            continue
        try:
            out[peer] = peer_losses.build(peer, batch, device)
        except peer_losses.PeerUnavailable as error:
            skipped[peer] = f"skipped: {error}"
    rows, cols = logit_shape(name, batch)
    extra = estep_products(name, batch)
    out["bound"] = _bound_fn(rows, cols, spec["dim"], device, dtype, extra)
    out["floor"] = _floor_fn(rows, cols, spec["dim"], device, dtype, extra)
    return out, skipped


def _ours(loss, name):
    def fn(a, b, index):
        return loss(a, b, index=index if name in INDEXED else None)

    return fn


def _fill_queue(loss, dim, device, dtype) -> None:
    gen = torch.Generator().manual_seed(1000)
    with torch.no_grad():
        while int(loss.queue_filled) < loss.queue_size:  # before the timing: a host read is fine
            step = min(512, loss.queue_size)
            keys = torch.randn(2, step, dim, generator=gen).to(device, dtype)
            loss(keys[0], keys[1])


def measure(spec: dict) -> dict:
    device, dim = spec["device"], spec["dim"]
    dtype = getattr(torch, spec["dtype"])
    gen = torch.Generator().manual_seed(0)
    batch = spec["batch_size"]
    a = torch.randn(batch, dim, generator=gen).to(device, dtype).requires_grad_(True)
    b = torch.randn(batch, dim, generator=gen).to(device, dtype).requires_grad_(True)
    index = torch.arange(batch, device=device)
    fns, skipped = contenders(spec)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def step(fn) -> float:
        a.grad = b.grad = None
        sync()
        start = time.perf_counter()
        value = fn(a, b, index)
        if value.requires_grad:
            value.backward()
        sync()
        return time.perf_counter() - start

    warmup = {}
    for label, fn in list(fns.items()):  # the warm-up also loads kernels and code
        try:
            warmup[label] = step(fn)
        except (RuntimeError, MemoryError) as error:  # a peer that cannot run this size: say so
            if label in ("default", "chunked", "bound", "floor"):
                raise
            skipped[label] = f"error: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
            del fns[label]
    memory, method = {}, None
    if spec["memory"]:
        for label, fn in fns.items():
            peak = CudaPeak() if device == "cuda" else CpuPeak()
            peak.start()
            step(fn)
            memory[label], method = round(peak.stop(), 1), peak.method
    round_seconds = sum(warmup.values())
    # --repeats rounds, fewer where they would not fit in --max-seconds, and up to ten times more
    # where a quarter of it holds them (small B: single passes are short and noisy)
    fit = int(spec["max_seconds"] // max(round_seconds, 1e-9))
    rounds = max(1, min(spec["repeats"], fit))
    if spec.get("adaptive", True):
        rounds = max(rounds, min(10 * spec["repeats"], fit // 4))
    labels = list(fns)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            times[label].append(step(fns[label]))
    return {
        "times": times,
        "warmup": warmup,
        "memory_mb": memory,
        "memory_method": method,
        "skipped": skipped,
        "threads": torch.get_num_threads(),
    }


# --- the driver ---------------------------------------------------------------------------------------
def median_ratio(times: dict, x: str, y: str) -> float:
    return statistics.median(p / q for p, q in zip(times[x], times[y], strict=True))


def summarize(name: str, batch: int, result: dict) -> dict:
    times = result["times"]
    peers = [p for p in peer_losses.PEERS[name] if p in times]
    medians = {label: statistics.median(values) for label, values in times.items()}
    fastest = min(peers, key=medians.get) if peers else None
    rows = {}
    for label in times:
        if label == "bound":
            continue
        row = {
            "seconds_median": medians[label],
            "seconds_all": times[label],
            "peak_mem_mb": result["memory_mb"].get(label),
            "ratio_to_bound": median_ratio(times, label, "bound"),
            "ratio_to_floor": median_ratio(times, label, "floor") if "floor" in times else None,
            "ratio_to_peers": {p: median_ratio(times, label, p) for p in peers if p != label},
        }
        if fastest is not None and label != fastest:
            row["ratio_to_fastest_peer"] = row["ratio_to_peers"][fastest]
        rows[label] = row
    return {
        "loss": name,
        "batch_size": batch,
        "status": "ok",
        "logit_shape": list(logit_shape(name, batch)),
        # the bound's products: 3 of the similarity matrix, plus the forward-only ones (rows, cols)
        "bound_extra_products": [list(p) for p in estep_products(name, batch)],
        "rounds": len(times["bound"]),
        "bound_seconds": medians["bound"],
        "bound_peak_mem_mb": result["memory_mb"].get("bound"),
        "fastest_peer": fastest,
        "contenders": rows,
        "skipped": result["skipped"],
    }


def run_worker(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"status": f"error: timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return {"status": "ok", **json.loads(line[len(RESULT_MARKER) :])}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"error: exit {proc.returncode}: {tail[:300]}"}


def training_throughput(losses: list[str], steps: int, warmup: int) -> list[dict]:
    """samples/s of ``train_step`` for the default run (TrainConfig defaults), one loss at a time."""
    from workbench.training.config import TrainConfig
    from workbench.training.trainer import Trainer

    out = []
    for name in losses:
        config = TrainConfig(loss=name, steps=warmup + steps, device="cpu")
        trainer = Trainer(config)
        for step in range(warmup):
            trainer.train_step(step)
        start = time.perf_counter()
        values = [trainer.train_step(step) for step in range(warmup, warmup + steps)]
        float(torch.stack(values).sum())  # the losses are device tensors: wait for the last one
        seconds = time.perf_counter() - start
        out.append(
            {
                "loss": name,
                "dataset": config.dataset,
                "batch_size": config.batch_size,
                "steps": steps,
                "seconds": seconds,
                "samples_per_second": config.batch_size * steps / seconds,
            }
        )
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--losses", default=",".join(loss_names()), help="comma-separated loss names")
    p.add_argument("--batch-sizes", default=None, help=f"comma-separated B (default {BATCH_SIZES})")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=7, help="rounds (each contender once per round)")
    p.add_argument("--max-seconds", type=float, default=90.0, help="time budget of one (loss, B)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory passes")
    p.add_argument("--training", action="store_true", help="also time train_step of the default runs")
    p.add_argument("--training-steps", type=int, default=20)
    p.add_argument("--tiny", action="store_true", help="smoke run: B=64, d=16, 2 rounds, 2 training steps")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(RESULT_MARKER + json.dumps(measure(json.loads(args.worker))), flush=True)
        return 0
    losses = [x.strip() for x in args.losses.split(",") if x.strip()]
    unknown = sorted(set(losses) - set(loss_names()))
    if unknown:
        parser.error(f"unknown losses {unknown}; known: {', '.join(loss_names())}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.tiny:
        batch_sizes, args.dim, args.repeats, args.training_steps = list(TINY_BATCH_SIZES), 16, 2, 2
    elif args.batch_sizes:
        batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    else:
        batch_sizes = list(BATCH_SIZES)
    if min(batch_sizes) < 2 or args.dim < 1 or args.chunk_size < 1 or args.repeats < 1:
        parser.error("batch sizes must be >= 2; --dim, --chunk-size and --repeats >= 1")
    out = args.out or BENCH_DIR / "results" / f"peers-{device}{'-tiny' if args.tiny else ''}.json"
    available = available_memory_bytes(device)
    payload = {
        "kind": "peers",
        "device": device_name(device),
        "device_type": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dim": args.dim,
        "dtype": args.dtype,
        "chunk_size": args.chunk_size,
        "batch_sizes": batch_sizes,
        "repeats": args.repeats,
        "tiny": args.tiny,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "host": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            # thread-pool and allocator settings change CPU timings (e.g. OMP_WAIT_POLICY on a busy machine)
            "env": {key: os.environ[key] for key in THREAD_ENV if key in os.environ},
        },
        "peers": {name: list(peer_losses.PEERS[name]) for name in losses},
        "peer_sources": {lib: spec for lib, (spec, _) in peer_losses.SOURCES.items()},
        "loadavg_start": _loadavg(),
        "complete": False,
        "results": [],
        "training": None,
    }
    started = time.perf_counter()
    for name in losses:
        for batch in batch_sizes:
            rows, cols = logit_shape(name, batch)
            if rows * cols * BYTES_PER_LOGIT > 0.7 * available:
                record = {"loss": name, "batch_size": batch, "status": "skipped: memory"}
            else:
                spec = {
                    "loss": name,
                    "batch_size": batch,
                    "dim": args.dim,
                    "dtype": args.dtype,
                    "device": device,
                    "chunk_size": args.chunk_size,
                    "repeats": args.repeats,
                    "max_seconds": args.max_seconds,
                    "memory": not args.no_memory,
                    "adaptive": not args.tiny,  # the smoke run does exactly --repeats rounds
                }
                result = run_worker(spec, timeout=max(600.0, 10 * args.max_seconds))
                if result["status"] == "ok":
                    record = summarize(name, batch, result)
                    payload["memory_method"] = result["memory_method"]
                    payload["threads"] = result["threads"]
                else:
                    record = {"loss": name, "batch_size": batch, "status": result["status"]}
            payload["results"].append(record)
            write_json_atomic(out, payload)
            print(_progress(record, time.perf_counter() - started), file=sys.stderr, flush=True)
    if args.training:
        payload["training"] = training_throughput(
            losses if not args.tiny else losses[:1], args.training_steps, 1 if args.tiny else 3
        )
    payload["complete"] = True
    payload["loadavg_end"] = _loadavg()
    payload["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(out, payload)
    print(f"wrote {out} ({payload['total_seconds']:.0f} s)", file=sys.stderr)
    return 0


def _progress(record: dict, elapsed: float) -> str:
    head = f"[{elapsed:6.0f}s] {record['loss']:>7} B={record['batch_size']:>6}"
    if record["status"] != "ok":
        return f"{head}  {record['status']}"
    parts = []
    for label, row in record["contenders"].items():
        vs = row.get("ratio_to_fastest_peer")
        parts.append(
            f"{label}: x{row['ratio_to_bound']:.2f} bound" + ("" if vs is None else f", x{vs:.2f} peer")
        )
    return f"{head}  " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
