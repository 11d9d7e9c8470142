#!/usr/bin/env python
"""Benchmark the loss zoo: forward+backward wall time and peak memory of every implementation.

One run times every loss x implementation (``naive``, ``chunked``, ``fused``: the ``implementation=``
of the losses) x batch size on the current device. On CUDA it adds the scale suite: ``clip`` at
d=512 in bfloat16 from B=4,096 to B=1,048,576 (fused; naive, chunked and the peers open_clip
``ClipLoss`` and ``inf_cl`` where installed, up to where they fit or stay under --max-seconds), with
the fraction of the tensor-core bound (6 B^2 d FLOPs at the card's dense bf16 peak) and the peak extra
memory against B. On CPU the fused kernels are not timed: they run there only through the Triton
interpreter, a correctness check.

Every measurement runs in a fresh Python subprocess, so that the peak memory of one configuration
cannot hide behind the high-water mark of another (see ``benchmarks/README.md`` for the method).
Results go to one JSON file per run; render them into ``BENCHMARKS.md`` with
``benchmarks/render_benchmarks.py``.

    python benchmarks/bench_losses.py                       # all losses, CPU/CUDA defaults
    python benchmarks/bench_losses.py --losses clip --batch-sizes 1024,4096 --repeats 5
    python benchmarks/bench_losses.py --quick --losses clip,bayes --out /tmp/smoke.json
    python benchmarks/bench_losses.py --scale only          # CUDA: just the clip scale suite
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the benchmark runs from a checkout; the package need not be installed
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from workbench.losses import build_loss, loss_names  # noqa: E402
from workbench.losses.kernels.chunked import fused_problem  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CPU_BATCH_SIZES = (256, 1024, 4096, 16384)
CUDA_BATCH_SIZES = (*CPU_BATCH_SIZES, 65536)
QUICK_BATCH_SIZES = (256, 1024)
IMPLS = ("naive", "chunked", "fused")  # ContrastiveLoss(implementation=...)
PEERS = {"open_clip": "open_clip", "inf_cl": "inf_cl"}  # other libraries' CLIP losses: impl -> module
ALL_IMPLS = (*IMPLS, *PEERS)
# The scale suite (CUDA): the headline configuration and its memory growth.
SCALE_BATCH_SIZES = (4096, 16384, 65536, 262144, 1048576)
SCALE_DIM, SCALE_DTYPE = 512, "bfloat16"
SCALE_HEADLINE_B = 65536
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's data sheets, matched in order
# against torch.cuda.get_device_name(): the first pattern contained in the name wins.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("L4", 121.0),
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
INDEXED_LOSSES = ("sogclr", "bayes")  # stateful: need num_samples=B and index=arange(B)
# A naive run is skipped when (logit entries held by the loss) x 4 bytes x this factor exceeds
# MEMORY_FRACTION of the available memory. The factor covers the similarity matrix, the scaled /
# masked logits saved for backward and the backward temporaries. Measured naive CPU peaks are 2.5x
# (clip) to 4.4x (ntxent, siglip) the 4-byte logit matrices, so 6 leaves some margin.
NAIVE_MEMORY_FACTOR = 6
MEMORY_FRACTION = 0.7
WARMUP_ROWS = 64  # the tiny in-process warm-up that pages in code before the memory baseline
RESULT_MARKER = "BENCH_RESULT "
MIB = 2**20


# --- what a configuration holds ---------------------------------------------------------------------
def loss_params(name: str, impl: str, batch_size: int, chunk_size: int) -> dict:
    """Constructor arguments for one configuration (defaults of the loss otherwise)."""
    params: dict = {"chunk_size": chunk_size if impl == "chunked" else None, "implementation": impl}
    if name in INDEXED_LOSSES:
        params["num_samples"] = batch_size
    return params


def bf16_peak_tflops(name: str) -> float | None:
    """Dense bf16 tensor-core peak of a CUDA device from its name, or None if not in the table."""
    for pattern, tflops in BF16_PEAK_TFLOPS:
        if pattern.lower() in name.lower():
            return tflops
    return None


def clip_flops(batch_size: int, dim: int) -> float:
    """The matrix-multiply work of a symmetric CLIP forward+backward: S = A B^T, dA = dS B, dB = dS^T A."""
    return 6.0 * batch_size**2 * dim


def impl_problem(name: str, impl: str, device: str, dtype: torch.dtype) -> str | None:
    """Why (loss, impl) cannot be measured on this device, as a record status; None if it can."""
    if impl in PEERS:
        if name != "clip":
            return "skipped: peers are CLIP losses"
        if importlib.util.find_spec(PEERS[impl]) is None:
            return f"skipped: {PEERS[impl]} not installed"
        if impl == "inf_cl" and device != "cuda":
            return "skipped: inf_cl needs CUDA"
        return None
    if impl == "fused":
        if device != "cuda":
            return "not measured: CPU (the fused kernels run on CPU only through the Triton interpreter)"
        probe = torch.empty(1, 1, device=device, dtype=dtype)
        problem = fused_problem(probe, probe)
        return None if problem is None else f"skipped: {problem}"
    return None


def layout(name: str, batch_size: int) -> tuple[int, int]:
    """(anchor rows per block, logit entries the naive path holds at once) for a loss's defaults."""
    loss = build_loss(name, **loss_params(name, "naive", batch_size, 1))
    if name == "moco":
        return batch_size, batch_size * (batch_size + loss.queue_size)
    if name == "siglip":
        return batch_size, batch_size**2
    if name == "ntxent" or getattr(loss, "negatives", "cross") == "views":
        return 2 * batch_size, (2 * batch_size) ** 2
    return batch_size, 2 * batch_size**2  # "cross": a -> b and b -> a, both kept for backward


def available_memory_bytes(device: str) -> int:
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    with contextlib.suppress(OSError):
        text = Path("/proc/meminfo").read_text()
        match = re.search(r"MemAvailable:\s+(\d+) kB", text)
        if match:
            return int(match.group(1)) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


# --- the worker: one measurement in a fresh process -------------------------------------------------
def _proc_status_mib(key: str) -> float | None:
    with contextlib.suppress(OSError):
        match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) / 1024
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _maxrss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class CpuPeak:
    """Peak extra resident memory of this process between ``start()`` and ``stop()``, in MiB."""

    def start(self) -> None:
        _malloc_trim()
        self.reset = _reset_peak_rss() and _proc_status_mib("VmHWM") is not None
        if self.reset:
            self.method = "VmHWM after clear_refs minus VmRSS"
            self.baseline = _proc_status_mib("VmRSS")
        else:  # ru_maxrss cannot be reset: only meaningful when nothing before was bigger
            self.method = "ru_maxrss minus ru_maxrss at start"
            self.baseline = _maxrss_mib()

    def stop(self) -> float:
        peak = _proc_status_mib("VmHWM") if self.reset else _maxrss_mib()
        return max(0.0, peak - self.baseline)


class CudaPeak:
    def start(self) -> None:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.method = "torch.cuda.max_memory_allocated minus memory_allocated at start"
        self.baseline = torch.cuda.memory_allocated()

    def stop(self) -> float:
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - self.baseline) / MIB


def _inputs(batch_size: int, dim: int, device: str, dtype: torch.dtype, seed: int):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(batch_size, dim, generator=gen).to(device, dtype).requires_grad_(True)
    b = torch.randn(batch_size, dim, generator=gen).to(device, dtype).requires_grad_(True)
    return a, b, torch.arange(batch_size, device=device)


def _fill_moco_queue(loss, dim: int, device: str, dtype: torch.dtype) -> None:
    """Fill MoCo's queue with small batches, so the measured step sees its steady state."""
    step = min(512, loss.queue_size) or 1
    seed = 1000
    with torch.no_grad():
        while int(loss.queue_filled) < loss.queue_size:
            a, b, _ = _inputs(step, dim, device, dtype, seed)
            loss(a, b)
            seed += 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peer_loss(impl: str, device: str):
    """Another library's symmetric CLIP loss as ``fn(a, b, index=None)`` on raw features.

    Both get L2-normalised features and the logit scale 1 / 0.07, as ``build_loss("clip")`` uses.
    """
    import torch.nn.functional as F

    scale = torch.tensor(1 / 0.07, device=device)
    if impl == "open_clip":
        from open_clip.loss import ClipLoss

        peer = ClipLoss()

        def open_clip_loss(a, b, index=None):
            return peer(F.normalize(a, dim=1), F.normalize(b, dim=1), scale)

        return open_clip_loss
    import torch.distributed as dist

    if not dist.is_initialized():  # inf_cl's ring runs on a process group, here of one process
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        dist.init_process_group("nccl", rank=0, world_size=1)
    from inf_cl import cal_inf_loss

    def inf_cl_loss(a, b, index=None):
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        return 0.5 * (cal_inf_loss(a, b, scale=scale).mean() + cal_inf_loss(b, a, scale=scale).mean())

    return inf_cl_loss


def make_loss(name: str, impl: str, batch_size: int, chunk_size: int, device: str):
    """(callable ``fn(a, b, index=None)``, its constructor arguments) for one configuration."""
    if impl in PEERS:
        return peer_loss(impl, device), {"peer": impl}
    params = loss_params(name, impl, batch_size, chunk_size)
    return build_loss(name, **params).to(device), params


def measure(spec: dict) -> dict:
    """Time ``repeats`` forward+backward passes of one configuration and record its peak memory."""
    name, impl, batch_size = spec["loss"], spec["impl"], spec["batch_size"]
    device, dtype, dim = spec["device"], DTYPES[spec["dtype"]], spec["dim"]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def step(loss, a, b, index) -> None:
        a.grad = b.grad = None
        loss(a, b, index=index if name in INDEXED_LOSSES else None).backward()

    # Tiny warm-up on a separate instance: loads kernels and libraries (for "chunked" the chunked
    # autograd path, for "fused" the Triton compilation) before the memory baseline, without any
    # large allocation.
    tiny, _ = make_loss(name, impl, WARMUP_ROWS, WARMUP_ROWS // 4, device)
    step(tiny, *_inputs(WARMUP_ROWS, dim, device, dtype, seed=1))
    sync()

    loss, params = make_loss(name, impl, batch_size, spec["chunk_size"], device)
    a, b, index = _inputs(batch_size, dim, device, dtype, seed=0)
    extra: dict = {}
    if name == "moco":
        _fill_moco_queue(loss, dim, device, dtype)
        extra = {"queue_size": loss.queue_size, "queue_filled": int(loss.queue_filled)}

    peak = CudaPeak() if device == "cuda" else CpuPeak()
    peak.start()
    # Full-size warm-up: counted for memory (same computation as the timed runs), not for time.
    start, cpu_start = time.perf_counter(), time.process_time()
    step(loss, a, b, index)
    sync()
    warmup = time.perf_counter() - start
    warmup_cpu = time.process_time() - cpu_start
    # Budget: at most --repeats runs, and no more than fit in --max-seconds judging by the warm-up.
    # A warm-up that alone took longer than --max-seconds is reported as the one measurement: at that
    # size (tens of seconds) what a warm-up warms is negligible, and a second pass would double the cost.
    repeats = min(spec["repeats"], int(spec["max_seconds"] // max(warmup, 1e-9)))
    seconds, cpu_seconds = ([], []) if repeats > 0 else ([warmup], [warmup_cpu])
    for _ in range(repeats):
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        step(loss, a, b, index)
        sync()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return {
        "seconds_all": seconds,
        "cpu_seconds_all": cpu_seconds,
        "seconds_warmup": warmup,
        "warmup_only": repeats == 0,
        "peak_mem_mb": peak.stop(),
        "memory_method": peak.method,
        "threads": torch.get_num_threads(),
        "params": {**{k: v for k, v in params.items() if k != "num_samples"}, **extra},
    }


def worker_main(spec_json: str) -> int:
    result = measure(json.loads(spec_json))
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


# --- the driver -------------------------------------------------------------------------------------
def run_config(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"status": f"error: timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return {"status": "ok", **json.loads(line[len(RESULT_MARKER) :])}
    if proc.returncode < 0:
        why = "killed (out of memory?)" if proc.returncode == -9 else f"signal {-proc.returncode}"
        return {"status": f"error: worker {why}"}
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"error: exit {proc.returncode}: {tail[:300]}"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _csv(kind, allowed=None):
    def parse(text: str):
        items = [kind(x.strip()) for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        bad = [x for x in items if allowed is not None and x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        return items

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Forward+backward time and peak memory of the loss zoo, naive (B x B matrix) vs "
        "chunked (memory linear in B). Each measurement runs in a fresh subprocess.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--batch-sizes",
        type=_csv(int),
        default=None,
        help=f"comma-separated B; default {','.join(map(str, CPU_BATCH_SIZES))} on CPU, "
        f"{','.join(map(str, CUDA_BATCH_SIZES))} on CUDA",
    )
    parser.add_argument("--dim", type=int, default=128, help="feature dimension d")
    parser.add_argument(
        "--losses", type=_csv(str, loss_names()), default=loss_names(), help="comma-separated loss names"
    )
    parser.add_argument(
        "--impls",
        type=_csv(str, ALL_IMPLS),
        default=None,
        help="naive (materialise B x B), chunked (--chunk-size rows at a time), fused (Triton, CUDA); "
        "open_clip, inf_cl: those libraries' CLIP losses, for clip only, where installed. Default: "
        "naive,chunked,fused on CPU (fused recorded as not measured); all of them on CUDA",
    )
    parser.add_argument("--chunk-size", type=int, default=1024, help="anchor rows per chunk for 'chunked'")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per config (median reported)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="bfloat16: CUDA only")
    parser.add_argument(
        "--out", type=Path, default=None, help="output JSON; default benchmarks/results/losses-<device>.json"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="per-config time guard: once a median exceeds it, the larger B of that (loss, impl) are "
        "recorded as 'skipped: too slow'; also caps the timed runs of one config to what fits in it "
        "(a warm-up that alone exceeds it is reported as the single pass)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: B={','.join(map(str, QUICK_BATCH_SIZES))} only and 1 repeat",
    )
    parser.add_argument(
        "--scale",
        choices=("auto", "on", "off", "only"),
        default="auto",
        help=f"the clip scale suite (d={SCALE_DIM}, {SCALE_DTYPE}, B up to {max(SCALE_BATCH_SIZES):,}, "
        "fraction of the tensor-core bound, memory vs B): auto = on CUDA only; only = skip the grid",
    )
    parser.add_argument(
        "--scale-batch-sizes",
        type=_csv(int),
        default=list(SCALE_BATCH_SIZES),
        help="batch sizes of the scale suite",
    )
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    if args.dtype != "float32" and args.device != "cuda":
        parser.error(f"--dtype {args.dtype} is only supported on CUDA")
    if args.impls is None:
        # on CPU the fused rows are recorded as not measured, so the file says why they are missing
        args.impls = list(ALL_IMPLS if args.device == "cuda" else IMPLS)
    if args.scale == "auto":
        args.scale = "on" if args.device == "cuda" and not args.quick else "off"
    if args.scale != "off" and args.device != "cuda":
        parser.error("--scale needs CUDA (the suite measures tensor-core throughput)")
    if args.quick:
        args.batch_sizes, args.repeats = list(QUICK_BATCH_SIZES), 1
    elif args.batch_sizes is None:
        args.batch_sizes = list(CUDA_BATCH_SIZES if args.device == "cuda" else CPU_BATCH_SIZES)
    if min(args.batch_sizes) < 2:
        parser.error("batch sizes must be >= 2")
    for flag, value in (("--dim", args.dim), ("--chunk-size", args.chunk_size), ("--repeats", args.repeats)):
        if value < 1:
            parser.error(f"{flag} must be >= 1")
    if not args.max_seconds > 0:
        parser.error("--max-seconds must be > 0")
    if args.out is None:
        suffix = "-quick" if args.quick else ""
        args.out = RESULTS_DIR / f"losses-{args.device}{suffix}.json"


def notes(args: argparse.Namespace) -> list[str]:
    out = [
        "Time: wall clock of one forward+backward (loss(a, b).backward(), inputs requiring grad), "
        "median of the timed runs after one untimed full-size warm-up"
        + (", with torch.cuda.synchronize()" if args.device == "cuda" else "")
        + "; at most --repeats runs, fewer where the warm-up shows they would not fit in --max-seconds, "
        "and where the warm-up alone exceeded --max-seconds it is the one reported pass (note says so).",
        "Memory: peak extra memory of the warm-up plus timed runs over a baseline taken after the "
        "inputs are allocated, each configuration in a fresh process "
        + (
            "(torch.cuda.max_memory_allocated)."
            if args.device == "cuda"
            else "(Linux VmHWM reset through /proc/self/clear_refs, minus VmRSS): resident memory of the "
            "whole process, allocator slack included: glibc serves blocks below its dynamic mmap threshold "
            "(up to 32 MiB) from a heap it keeps, which inflates mid-size chunked runs; run with "
            "MALLOC_MMAP_THRESHOLD_=1048576 (recorded under host.malloc_env) to measure closer to the live "
            "tensors, at some cost in time."
        ),
        "cpu_seconds_all: process CPU time (all threads) of each timed run; well below threads x wall "
        "time means the process waited for a CPU (other load on the machine, see loadavg_*).",
        "moco is measured with its default queue_size=4096 and the queue full (filled before the "
        "baseline): its logits are B x (B + 4096).",
        "sogclr and bayes are built with num_samples=B and called with index=arange(B); the first call "
        "(warm-up) visits every sample, so the timed runs see the running-average branch.",
        f"chunked falls back to the naive code path when chunk_size ({args.chunk_size}) >= the anchor rows "
        "of a block (B for cross losses, 2B for ntxent/dcl/dclw): such rows carry a note.",
        f"naive runs are skipped ('skipped: memory') when logit entries x 4 bytes x {NAIVE_MEMORY_FACTOR} "
        f"exceeds {MEMORY_FRACTION:.0%} of the memory available at start (open_clip, which holds the "
        "same matrices as naive clip, likewise).",
        "implementation: naive, chunked and fused are build_loss(..., implementation=...); fused is not "
        "timed on CPU, where it runs only through the Triton interpreter (a correctness check).",
    ]
    if args.device == "cuda":
        out.append(
            "Peers (clip only): open_clip.loss.ClipLoss and inf_cl.cal_inf_loss (both directions, mean), "
            "on L2-normalised features with logit scale 1/0.07, where the packages are installed."
        )
    if args.scale != "off":
        out.append(
            f"Scale suite: clip, d={SCALE_DIM}, {SCALE_DTYPE}; model FLOPs = 6 B^2 d (S = A B^T forward, dA "
            "and dB backward); bound_fraction = (model FLOPs / dense bf16 peak) / measured time, the peak "
            "read from a table keyed by the device name (bf16_peak_tflops in the JSON)."
        )
    return out


def base_record(name: str, impl: str, batch_size: int) -> dict:
    rows, _ = layout(name, batch_size)
    return {
        "loss": name,
        "impl": impl,
        "batch_size": batch_size,
        "seconds_median": None,
        "seconds_all": [],
        "peak_mem_mb": None,
        "status": "ok",
        "anchor_rows": rows,
        "note": None,
    }


def measure_into(record: dict, spec: dict, args: argparse.Namespace, timeout: float) -> None:
    """Run one configuration in a fresh process and copy its result into ``record``."""
    result = run_config(spec, timeout)
    record["status"] = result["status"]
    if result["status"] != "ok":
        return
    record["seconds_all"] = result["seconds_all"]
    record["seconds_median"] = statistics.median(result["seconds_all"])
    record["seconds_warmup"] = result["seconds_warmup"]
    record["cpu_seconds_all"] = result["cpu_seconds_all"]
    if result["warmup_only"]:
        record["note"] = (
            f"one pass: the warm-up alone exceeded --max-seconds {args.max_seconds:g} "
            "and is reported as the measurement"
        )
    record["peak_mem_mb"] = round(result["peak_mem_mb"], 1)
    record["params"] = result["params"]
    record["memory_method"] = result["memory_method"]
    record["threads"] = result["threads"]


def run_series(
    name: str,
    impl: str,
    batch_sizes: list[int],
    args: argparse.Namespace,
    dim: int,
    dtype: str,
    available: int,
    emit,
) -> None:
    """Measure one (loss, impl) at increasing B, skipping what cannot run, would not fit, or is too slow."""
    problem = impl_problem(name, impl, args.device, DTYPES[dtype])
    if problem == "skipped: peers are CLIP losses":
        return
    timeout = max(300.0, 20 * args.max_seconds)
    too_slow_at = None
    for batch_size in sorted(batch_sizes):
        record = base_record(name, impl, batch_size)
        rows, logits = record["anchor_rows"], layout(name, batch_size)[1]
        estimate = logits * 4 * NAIVE_MEMORY_FACTOR
        if impl == "chunked" and args.chunk_size >= rows:
            record["note"] = "chunk_size >= anchor rows: same code path as naive"
        if problem is not None:
            record["status"] = problem
        elif too_slow_at is not None:
            record["status"] = "skipped: too slow"
            record["note"] = f"median at B={too_slow_at} exceeded --max-seconds {args.max_seconds:g}"
        elif impl in ("naive", "open_clip") and estimate > MEMORY_FRACTION * available:
            record["status"] = "skipped: memory"
            record["note"] = (
                f"estimated {estimate / 2**30:.1f} GiB > {MEMORY_FRACTION:.0%} of "
                f"{available / 2**30:.1f} GiB available"
            )
        else:
            spec = {
                "loss": name,
                "impl": impl,
                "batch_size": batch_size,
                "dim": dim,
                "device": args.device,
                "dtype": dtype,
                "chunk_size": args.chunk_size,
                "repeats": args.repeats,
                "max_seconds": args.max_seconds,
            }
            measure_into(record, spec, args, timeout)
            if record["status"] == "ok" and record["seconds_median"] > args.max_seconds:
                too_slow_at = batch_size
        emit(record)


def add_throughput(record: dict, dim: int, peak_tflops: float | None) -> None:
    """Model TFLOP/s of a clip record and its fraction of the bf16 tensor-core bound."""
    if record["status"] != "ok":
        return
    flops = clip_flops(record["batch_size"], dim)
    record["model_tflops"] = round(flops / record["seconds_median"] / 1e12, 2)
    if peak_tflops:
        record["bound_seconds"] = flops / (peak_tflops * 1e12)
        record["bound_fraction"] = round(record["bound_seconds"] / record["seconds_median"], 4)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    resolve(args, parser)

    available = available_memory_bytes(args.device)
    name = device_name(args.device)
    peak = bf16_peak_tflops(name) if args.device == "cuda" else None
    payload = {
        "device": name,
        "device_type": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dim": args.dim,
        "dtype": args.dtype,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "chunk_size": args.chunk_size,
        "batch_sizes": args.batch_sizes if args.scale != "only" else [],
        "impls": args.impls,
        "repeats": args.repeats,
        "max_seconds": args.max_seconds,
        "quick": args.quick,
        "host": {
            "cpu_count": os.cpu_count(),
            "memory_available_gib": round(available / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        },
        "loadavg_start": _loadavg(),
        "memory_method": None,
        "notes": notes(args),
        "complete": False,
        "results": [],
        "scale": None
        if args.scale == "off"
        else {
            "loss": "clip",
            "dim": SCALE_DIM,
            "dtype": SCALE_DTYPE,
            "batch_sizes": args.scale_batch_sizes,
            "headline_batch_size": SCALE_HEADLINE_B,
            "bf16_peak_tflops": peak,
            "results": [],
        },
    }
    started = time.perf_counter()

    def emit_to(records: list):
        def emit(record: dict) -> None:
            if record.get("memory_method"):
                payload["memory_method"] = record.pop("memory_method")
                payload["threads"] = record.pop("threads")
            records.append(record)
            write_json_atomic(args.out, payload)  # partial results survive an interruption
            print(_progress(record, time.perf_counter() - started), file=sys.stderr, flush=True)

        return emit

    if args.scale != "only":
        for loss in args.losses:
            for impl in args.impls:
                run_series(
                    loss,
                    impl,
                    args.batch_sizes,
                    args,
                    args.dim,
                    args.dtype,
                    available,
                    emit_to(payload["results"]),
                )
    if args.scale != "off":
        scale = payload["scale"]
        emit = emit_to(scale["results"])

        def emit_scale(record: dict) -> None:
            add_throughput(record, SCALE_DIM, peak)
            emit(record)

        for impl in ("fused", *(i for i in ALL_IMPLS if i != "fused")):
            if impl in args.impls:
                run_series(
                    "clip", impl, args.scale_batch_sizes, args, SCALE_DIM, SCALE_DTYPE, available, emit_scale
                )
    payload["complete"] = True
    payload["loadavg_end"] = _loadavg()
    payload["total_seconds"] = round(time.perf_counter() - started, 1)
    write_json_atomic(args.out, payload)
    print(f"wrote {args.out} ({payload['total_seconds']:.0f} s)", file=sys.stderr)
    return 0


def _loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on the machine skews the timings."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _progress(record: dict, elapsed: float) -> str:
    head = f"[{elapsed:6.0f}s] {record['loss']:>7} {record['impl']:>7} B={record['batch_size']:>6}"
    if record["status"] != "ok":
        return f"{head}  {record['status']}"
    runs = len(record["seconds_all"])
    return f"{head}  {record['seconds_median']:8.3f} s (n={runs})  {record['peak_mem_mb']:9.1f} MiB"


if __name__ == "__main__":
    sys.exit(main())
