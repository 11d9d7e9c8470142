#!/usr/bin/env python
"""How close to the matrix-product bound can an eager-PyTorch CLIP loss get at small B on a CPU?

An experiment, not a library path: the symmetric CLIP loss written as ONE autograd function, with
everything a loss of the workbench does on its whole-matrix path (L2 normalisation of both inputs,
the logits, both directions' log-sum-exp from one exponential per entry, the positives from the
diagonal) and nothing else (no input checks, no shared anchor layouts, no other loss's options).
It is timed interleaved with ``build_loss("clip")`` and the three-product bound of
``bench_peers.py``, so the ratio of the two losses says what the workbench's general structure
costs, and the one-function ratio to the bound what per-operation dispatch leaves even without it.
``one_function_unit`` skips the normalisation (inputs already unit rows), as the peers' losses do.

    python benchmarks/bench_one_function_clip.py --out benchmarks/results/one-function-clip-cpu.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from workbench.losses import build_loss  # noqa: E402

TEMPERATURE = 0.07


class OneFunctionClip(torch.autograd.Function):
    """Symmetric CLIP loss of raw features, normalised inside (or not), at a fixed temperature."""

    @staticmethod
    def forward(ctx, a, b, scale: float, normalize: bool):
        if normalize:
            norm_a = torch.linalg.vector_norm(a, dim=1, keepdim=True)
            norm_b = torch.linalg.vector_norm(b, dim=1, keepdim=True)
            a, b = a / norm_a, b / norm_b
        logits = torch.mm(a * scale, b.T)
        positive_sum = logits.diagonal().sum()
        exps = logits.exp_()  # |logit| <= scale = 1/0.07: no shift needed (float32)
        row_sum, col_sum = exps.sum(dim=1), exps.sum(dim=0)
        loss = (row_sum.log().sum() + col_sum.log().sum() - 2 * positive_sum) / (2 * a.shape[0])
        ctx.save_for_backward(a, b, exps, row_sum, col_sum, *((norm_a, norm_b) if normalize else ()))
        ctx.scale, ctx.normalize = scale, normalize
        return loss

    @staticmethod
    def backward(ctx, grad):
        a, b, exps, row_sum, col_sum, *norms = ctx.saved_tensors
        weight = grad * ctx.scale / (2 * a.shape[0])
        exps.mul_((weight / row_sum)[:, None] + (weight / col_sum)[None, :])
        exps.diagonal().sub_(2 * weight)
        grad_a, grad_b = exps @ b, exps.T @ a
        if ctx.normalize:  # d(x / |x|) = (g - y <y, g>) / |x|
            grad_a = torch.addcmul(grad_a, a, (grad_a * a).sum(1, keepdim=True), value=-1).div_(norms[0])
            grad_b = torch.addcmul(grad_b, b, (grad_b * b).sum(1, keepdim=True), value=-1).div_(norms[1])
        return grad_a, grad_b, None, None


def contenders(batch: int, dim: int) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(0)
    raw = [torch.randn(batch, dim, generator=gen).requires_grad_(True) for _ in range(2)]
    unit = [torch.nn.functional.normalize(x.detach(), dim=1).requires_grad_(True) for x in raw]
    q, k = torch.randn(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen)
    loss = build_loss("clip", temperature=TEMPERATURE)

    def bound():
        s = q @ k.T
        (s @ k).sum() + (s.T @ q).sum()

    def run(fn, inputs):
        def step():
            for x in inputs:
                x.grad = None
            fn(*inputs).backward()

        return step

    fns = {
        "workbench_default": run(loss, raw),
        "one_function": run(lambda a, b: OneFunctionClip.apply(a, b, 1 / TEMPERATURE, True), raw),
        "one_function_unit": run(lambda a, b: OneFunctionClip.apply(a, b, 1 / TEMPERATURE, False), unit),
        "bound": bound,
    }
    # the same value and gradients as the workbench's loss (up to float32 round-off)
    checks = {}
    for name, inputs in (("workbench_default", raw), ("one_function", raw)):
        value = (loss if name == "workbench_default" else lambda a, b: OneFunctionClip.apply(
            a, b, 1 / TEMPERATURE, True
        ))(*inputs)  # fmt: skip
        checks[name] = (value.detach(), *torch.autograd.grad(value, inputs))
    error = max(float((x - y).abs().max()) for x, y in zip(*checks.values(), strict=True))
    return fns, {"max_abs_difference_to_workbench": error}


def measure(batch: int, dim: int, rounds: int) -> dict:
    fns, check = contenders(batch, dim)
    for fn in fns.values():
        for _ in range(10):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    ratios = {
        name: statistics.median(x / y for x, y in zip(times[name], times["bound"], strict=True))
        for name in names
        if name != "bound"
    }
    return {
        "batch_size": batch,
        "rounds": rounds,
        "seconds_median": {name: statistics.median(v) for name, v in times.items()},
        "ratio_to_bound": ratios,
        **check,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="256,1024", help="comma-separated B")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=300, help="interleaved rounds per B")
    parser.add_argument("--out", type=Path, help="JSON file to write")
    args = parser.parse_args(argv)
    batches = [int(x) for x in args.batch_sizes.split(",")]
    results = []
    for batch in batches:
        rounds = max(30, args.rounds * 256 * 256 // (batch * batch))  # about the same time per B
        results.append(measure(batch, args.dim, rounds))
        ratios = ", ".join(f"{k} x{v:.2f}" for k, v in results[-1]["ratio_to_bound"].items())
        print(f"B={batch}: {ratios} (of the bound)", flush=True)
    record = {
        "benchmark": "one_function_clip",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "dim": args.dim,
        "loadavg_start": list(os.getloadavg()),
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
