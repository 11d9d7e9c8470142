"""A one-parameter contrastive problem whose optimum is theta* = 1 by construction.

**The problem.** Every sample has a coarse and a fine feature (frozen, noisy views of two latent unit
vectors), and the one parameter theta weights the fine one:
``s_ij = (<g_i, g'_j> + theta * c * <f_i, f'_j>) / tau``. A fraction ``noise`` of the samples are
near-duplicates of another sample in the coarse feature (the injected hard negatives of
``workbench.data.synthetic``): each exists once in the population, so a batch of B rows holds it with
probability (B - 1) / (N - 1), and only the fine feature tells it apart. Every loss here targets the
same global objective, symmetric InfoNCE over all N samples (up to a constant), which is convex in
theta (a log-sum-exp of functions linear in theta). The constant ``c`` is the minimiser of that
objective over the fine feature's weight, found by Newton's method when the problem is made, so the
global objective's minimiser is theta* = 1 by construction (to the solver's tolerance; the tests check
the full-data gradient at 1). The losses are the workbench's own classes, fed the features with
``normalize=False``, so their E-steps, banks and running estimates are the ones training uses.

**Two modes.** ``mode="stochastic"``: plain SGD, one minibatch per step (reshuffled every epoch), the
article's setting. ``mode="bias"``: each step averages the minibatch gradients over a random
partition of all N samples into N / B batches, processed in order at fixed theta (a stateful loss
updates its state batch by batch, as in training), then takes one step. This keeps each estimator's
bias (E[g_B(theta)], the mean over batches, is what a partition averages) and drops most of its
variance, so a run settles at the estimator's fixed point, the theta where E[g_B] = 0.

:class:`ToyGrid` runs noise levels x batch sizes x losses x seeds (the seed sets the initial theta,
drawn log-uniformly in [1/3, 3], and the batch order) and stores one run, ``<tag>-summary``, with the
tables ``runs`` (one row per run: final theta, distance to theta*, excess loss, full-data gradient),
``trajectories`` (theta every ``record_every`` steps) and ``summary``. Command line:
``python -m workbench.labs.toy --help``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.labs.grid import Check, Grid, add_grid_arguments, axis, choices, grid_from_args, ints, numbers
from workbench.losses import build_loss
from workbench.store.runs import RunWriter, check_stored_config, load_run

TOY_LOSSES: dict[str, dict] = {
    "clip": {"name": "clip"},
    "bayes": {"name": "bayes"},  # the default E-step: the memory bank
    "bayes-point": {"name": "bayes", "shape": math.inf},  # the bank, u = 1 / R (no Gamma draw)
    "bayes-exact": {"name": "bayes", "estimator": "exact"},
    "bayes-exact-point": {"name": "bayes", "estimator": "exact", "shape": math.inf},  # no stale row, no draw
    "bayes-running": {"name": "bayes", "estimator": "running"},
    "sogclr": {"name": "sogclr"},
}
MODES = ("bias", "stochastic")


# ------------------------------------------------------------------------------------------ the problem


@dataclass(frozen=True)
class ToyProblem:
    """Frozen unit vectors ``a``, ``b`` (N, d) and the logit constant ``c`` that puts theta* at 1."""

    a: Tensor
    b: Tensor
    c: float
    temperature: float

    @property
    def num_samples(self) -> int:
        return int(self.a.shape[0])

    def features(self, theta: Tensor | float, index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The losses' inputs at theta: a with its fine half scaled by theta * c, and b (rows ``index``)."""
        a, b = (self.a, self.b) if index is None else (self.a[index], self.b[index])
        return _split(a, b, theta * self.c)


def _global(a: Tensor, b: Tensor, scale: Tensor | float) -> Tensor:
    logits = scale * a @ b.T
    labels = torch.arange(a.shape[0])
    return 0.5 * (
        torch.nn.functional.cross_entropy(logits, labels)
        + torch.nn.functional.cross_entropy(logits.T, labels)
    )


def global_loss(problem: ToyProblem, theta: float) -> float:
    """Symmetric InfoNCE over all N samples at ``theta`` (the objective every loss targets)."""
    a, b = problem.features(torch.tensor(float(theta), dtype=torch.float64))
    return float(_global(a.double(), b.double(), 1 / problem.temperature))


def global_gradient(problem: ToyProblem, theta: float) -> float:
    """d(global loss)/d theta at ``theta``."""
    t = torch.tensor(float(theta), dtype=torch.float64, requires_grad=True)
    a, b = problem.features(t)
    _global(a.double(), b.double(), 1 / problem.temperature).backward()
    return float(t.grad)


def make_toy(
    num_samples: int = 64,
    noise: float = 0.5,
    dim: int = 4,
    coarse_noise: float = 0.6,
    fine_noise: float = 0.3,
    duplicate_spread: float = 0.02,
    temperature: float = 0.1,
    seed: int = 0,
) -> ToyProblem:
    """The toy problem (module docstring): a coarse and a fine feature, theta weighting the fine one.

    Each sample has a coarse latent g_i and a fine latent f_i (unit vectors in ``dim`` dimensions). A
    fraction ``noise`` of the samples are near-duplicates: their coarse latent copies another sample's
    (plus ``duplicate_spread`` noise), their fine latent is their own, so only the fine feature tells
    them apart. Each view perturbs both latents (``coarse_noise``, ``fine_noise``) and normalises
    them; a sample's features are ``[g, theta * c * f]`` on side a and ``[g, f]`` on side b.

    Args:
        num_samples: N >= 4.
        noise: fraction of near-duplicate samples, in [0, 0.5].
        dim: dimension of each latent.
        coarse_noise, fine_noise: view noise of the coarse and the fine latent (> 0).
        duplicate_spread: std of the perturbation of a near-duplicate's coarse latent.
        temperature: tau of every loss.
        seed: data seed.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 4:
        raise ValueError(f"num_samples must be an integer >= 4, got {num_samples!r}")
    if not 0 <= noise <= 0.5:
        raise ValueError(f"noise must be in [0, 0.5], got {noise!r}")
    if not (coarse_noise > 0 and fine_noise > 0):
        raise ValueError(f"coarse_noise and fine_noise must be > 0, got {coarse_noise!r}, {fine_noise!r}")
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    g = rng.standard_normal((num_samples, dim))
    duplicates = round(noise * num_samples)
    originals = rng.choice(num_samples - duplicates, size=duplicates)
    g[num_samples - duplicates :] = g[originals] + duplicate_spread * rng.standard_normal((duplicates, dim))
    g, f = unit(g), unit(rng.standard_normal((num_samples, dim)))

    def view(z: np.ndarray, spread: float) -> np.ndarray:
        return unit(z + spread * rng.standard_normal(z.shape) / math.sqrt(dim))

    a = np.concatenate([view(g, coarse_noise), view(f, fine_noise)], axis=1)
    b = np.concatenate([view(g, coarse_noise), view(f, fine_noise)], axis=1)
    a, b = torch.from_numpy(a), torch.from_numpy(b)
    # Newton on the convex 1-D objective (log-sum-exp of functions linear in c): c is its minimiser.
    c = 1.0
    for _ in range(100):
        t = torch.tensor(c, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(_global(*_split(a, b, t), 1 / temperature), t, create_graph=True)
        (hess,) = torch.autograd.grad(grad, t)
        step = float(grad.detach() / hess)
        c = max(c - step, c / 2)  # convex, so Newton converges; halving guards the first steps
        if abs(step) < 1e-12 * max(1.0, c):
            break
    return ToyProblem(a.float(), b.float(), c, float(temperature))


def _split(a: Tensor, b: Tensor, weight: Tensor | float) -> tuple[Tensor, Tensor]:
    """Side a with its fine half (the second half of the columns) scaled by ``weight``."""
    half = a.shape[1] // 2
    return torch.cat([a[:, :half], weight * a[:, half:]], dim=1), b


# ------------------------------------------------------------------------------------------ training


def build_toy_loss(spec: dict, problem: ToyProblem, holder: list[float]) -> torch.nn.Module:
    """The loss of ``spec`` on raw features; ``holder[0]`` is the current theta (for the exact E-step)."""
    params = {key: value for key, value in spec.items() if key != "name"}
    params.update(temperature=problem.temperature, normalize=False)
    if spec["name"] in ("bayes", "sogclr"):
        params["num_samples"] = problem.num_samples
    loss = build_loss(spec["name"], **params)
    if getattr(loss, "needs_population", False):
        loss.set_population_source(lambda: problem.features(holder[0]))
    return loss


def _gradient(loss: torch.nn.Module, problem: ToyProblem, theta: float, index: Tensor) -> float:
    t = torch.tensor(theta, requires_grad=True)
    a, b = problem.features(t, index)
    loss(a, b, index=index).backward()
    return float(t.grad)


def train_theta(
    problem: ToyProblem,
    spec: dict,
    batch_size: int,
    steps: int,
    lr: float,
    mode: str = "stochastic",
    schedule: str = "cosine",
    theta0: float = 0.5,
    seed: int = 0,
    record_every: int = 10,
    partitions: int = 1,
) -> pd.DataFrame:
    """SGD on theta with one loss; returns (step, theta) every ``record_every`` steps and at the end.

    A run whose theta leaves [-1e6, 1e6] (or is not finite) stops there with theta NaN.

    Args:
        problem: the toy problem.
        spec: {"name": registry name, **loss params}.
        batch_size: B in [2, N]; in ``"bias"`` mode N must be a multiple of B.
        steps: SGD steps.
        lr: peak learning rate.
        mode: "stochastic" (one batch per step) or "bias" (partition-averaged gradients).
        schedule: "cosine" (to 0) or "constant".
        theta0: initial theta.
        seed: batch order and Gamma draws.
        record_every: trajectory resolution in steps.
        partitions: random partitions averaged per step in ``"bias"`` mode (more: less variance).
    """
    n = problem.num_samples
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if not 2 <= batch_size <= n or (mode == "bias" and n % batch_size):
        raise ValueError(
            f"batch_size must lie in [2, {n}] (and divide N={n} in bias mode), got {batch_size!r}"
        )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    holder = [float(theta0)]
    loss = build_toy_loss(spec, problem, holder)
    theta, order, rows = float(theta0), torch.empty(0, dtype=torch.long), [(0, float(theta0))]
    for step in range(steps):
        holder[0] = theta
        if mode == "bias":
            batches = [
                b for _ in range(partitions) for b in torch.randperm(n, generator=generator).split(batch_size)
            ]
            grad = float(np.mean([_gradient(loss, problem, theta, index) for index in batches]))
        else:
            if order.numel() < batch_size:  # a new epoch: reshuffle, drop the ragged tail
                order = torch.randperm(n, generator=generator)
            index, order = order[:batch_size], order[batch_size:]
            grad = _gradient(loss, problem, theta, index)
        rate = lr * (0.5 * (1 + math.cos(math.pi * step / steps)) if schedule == "cosine" else 1.0)
        theta -= rate * grad
        if not math.isfinite(theta) or abs(theta) > 1e6:  # diverged: recorded as NaN, never "reached"
            rows.append((step + 1, math.nan))
            break
        if (step + 1) % record_every == 0 or step + 1 == steps:
            rows.append((step + 1, theta))
    return pd.DataFrame(rows, columns=["step", "theta"])


def expected_gradient(
    problem: ToyProblem,
    spec: dict,
    batch_size: int,
    thetas: Sequence[float],
    partitions: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """E[g_B(theta)] at fixed theta: the mean step over ``partitions`` random partitions of all N.

    A stateful loss first runs one partition at theta (its bank, or running estimate, warm at these
    parameters; a running estimate then holds one visit per sample, as after an epoch), which is not
    counted. Returns one row per theta: ``mean`` (the estimator's expected step, whose zero is its
    fixed point), ``sem`` (standard error of that mean), ``step_std`` (std of one minibatch step, the
    variance SGD sees) and ``global`` (the full-data gradient).
    """
    rows = []
    for theta in thetas:
        grads = step_distribution(problem, spec, batch_size, theta, partitions, seed)
        per_partition = grads.reshape(partitions, -1).mean(axis=1)
        rows.append(
            dict(
                theta=float(theta),
                mean=float(grads.mean()),
                sem=float(per_partition.std(ddof=1) / math.sqrt(partitions)),
                step_std=float(grads.std(ddof=1)),
                **{"global": global_gradient(problem, theta)},
            )
        )
    return pd.DataFrame(rows)


def step_distribution(
    problem: ToyProblem, spec: dict, batch_size: int, theta: float, partitions: int = 100, seed: int = 0
) -> np.ndarray:
    """Every minibatch step g_B(theta) of ``partitions`` random partitions of all N, at fixed theta.

    The warm-up is :func:`expected_gradient`'s (one partition, not returned). Their mean is the
    expected step; their shape (median, skew, the share of the rare large steps) is what a run feels.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    loss = build_toy_loss(spec, problem, [float(theta)])
    steps = []
    for p in range(partitions + 1):
        batch = [
            _gradient(loss, problem, float(theta), i)
            for i in torch.randperm(problem.num_samples, generator=generator).split(batch_size)
        ]
        steps.extend(batch if p else [])
    return np.asarray(steps)


def summarize_steps(steps: np.ndarray, full_gradient: float) -> dict[str, float]:
    """Mean (± s.e.), median, quantiles and the skew of one step; ``up``: the share of steps that raise
    theta (g < 0); ``top1_share``: the share of all downward pull (g > 0) carried by the largest 1%."""
    ordered = np.sort(steps)[::-1]
    pull_down = ordered[ordered > 0].sum()
    return {
        "mean": float(steps.mean()),
        "sem": float(steps.std(ddof=1) / math.sqrt(len(steps))),
        "global": float(full_gradient),
        "median": float(np.median(steps)),
        "up": float(np.mean(steps < 0)),
        "q01": float(np.quantile(steps, 0.01)),
        "q99": float(np.quantile(steps, 0.99)),
        "top1_share": float(ordered[: max(1, len(steps) // 100)].clip(min=0).sum() / pull_down)
        if pull_down > 0
        else 0.0,
        "batches": len(steps),
    }


def root_of(curve: pd.DataFrame, column: str = "mean") -> float:
    """theta where ``column`` of an :func:`expected_gradient` table crosses zero upward (linear
    interpolation between the grid points); NaN if it does not cross."""
    x, y = curve.theta.to_numpy(), curve[column].to_numpy()
    for i in range(len(x) - 1):
        if y[i] <= 0 < y[i + 1]:
            return float(x[i] - y[i] * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))
    return math.nan


def fixed_point(problem: ToyProblem, spec: dict, batch_size: int, **kwargs: Any) -> float:
    """The estimator's fixed point by bias-mode training: the final theta (cosine schedule to 0)."""
    trajectory = train_theta(problem, spec, batch_size, mode="bias", **kwargs)
    return float(trajectory.theta.iloc[-1])


def reach_threshold(fixed_points: dict[str, float], biased: str = "clip", optimum: float = 1.0) -> float:
    """Half the distance from theta* to the biased loss's fixed point.

    A run that ends within it is closer to theta* than to the biased fixed point, so "reached" means
    "ended nearer the optimum than where the biased estimator settles"; a run stuck at that fixed
    point can never count. Raises ValueError when the biased fixed point is missing or sits on theta*
    (no threshold separates them then).
    """
    if biased not in fixed_points:
        raise ValueError(f"fixed_points must hold the biased loss {biased!r}, got {sorted(fixed_points)}")
    gap = abs(fixed_points[biased] - optimum)
    if not gap > 0:
        raise ValueError(f"the fixed point of {biased!r} is theta* itself: no threshold separates them")
    return gap / 2


# ------------------------------------------------------------------------------------------ the grid


def _check_losses(name: str, value: Any) -> tuple[str, ...]:
    labels = axis(choices(tuple(TOY_LOSSES)))(name, value)
    return labels


@dataclass(frozen=True)
class ToyGrid(Grid):
    """The one-parameter toy (theta* = 1): ``seeds`` runs per noise level, batch size and loss.

    Attributes:
        mode: "bias" (partition-averaged gradients: each estimator's fixed point) or "stochastic"
            (one batch per step, as in training).
        noise_levels: fractions of near-duplicate samples, each in [0, 0.5].
        batch_sizes: minibatch sizes, each in [2, num_samples] (a divisor of it in bias mode).
        losses: labels among clip, bayes (bank), bayes-point (bank, no draw), bayes-exact,
            bayes-exact-point (exact E-step, no draw), bayes-running, sogclr.
        num_samples: N.
        temperature: tau of every loss.
        coarse_noise, fine_noise: view noise of the coarse and the fine latent (see :func:`make_toy`).
        schedule: "cosine" (to 0) or "constant" learning rate.
        record_every: steps between recorded thetas.
        data_seed: seed of the data.
    """

    seeds: int = 10
    steps: int = 300
    lr: float = 0.02
    tag: str = "toy"
    mode: str = "stochastic"
    noise_levels: tuple[float, ...] = (0.0, 0.25, 0.5)
    batch_sizes: tuple[int, ...] = (4,)
    losses: tuple[str, ...] = ("clip", "bayes")
    num_samples: int = 64
    temperature: float = 0.1
    coarse_noise: float = 0.6
    fine_noise: float = 0.3
    schedule: str = "cosine"
    record_every: int = 5
    data_seed: int = 0

    kind = "toy"
    checks: ClassVar[dict[str, Check]] = {
        **Grid.checks,
        "mode": choices(MODES),
        "noise_levels": axis(numbers(0.0, 0.5)),
        "batch_sizes": axis(ints(2)),
        "losses": _check_losses,
        "num_samples": ints(4),
        "coarse_noise": numbers(0.0, open_low=True),
        "fine_noise": numbers(0.0, open_low=True),
        "schedule": choices(("cosine", "constant")),
        "record_every": ints(1),
    }
    cli_options: ClassVar[dict[str, dict[str, Any]]] = {
        "noise_levels": {"aliases": ("--noise",)},
        "losses": {"nargs": "+", "type": str, "metavar": "LABEL"},
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for b in self.batch_sizes:
            if b > self.num_samples or (self.mode == "bias" and self.num_samples % b):
                raise ValueError(
                    f"batch_sizes must lie in [2, num_samples={self.num_samples}]"
                    f"{' and divide it (bias mode)' if self.mode == 'bias' else ''}, got {b}"
                )

    def problem(self, noise: float) -> ToyProblem:
        return make_toy(
            self.num_samples,
            noise,
            coarse_noise=self.coarse_noise,
            fine_noise=self.fine_noise,
            temperature=self.temperature,
            seed=self.data_seed,
        )

    def jobs(self) -> list[dict[str, Any]]:
        """One dict per run: noise, batch_size, loss, seed, theta0 (log-uniform in [1/3, 3] by seed)."""
        out = []
        for noise in self.noise_levels:
            for batch_size in self.batch_sizes:
                for loss in self.losses:
                    for seed in range(self.seeds):
                        theta0 = float(3.0 ** np.random.default_rng(1000 + seed).uniform(-1, 1))
                        out.append(
                            dict(noise=noise, batch_size=batch_size, loss=loss, seed=seed, theta0=theta0)
                        )
        return out


def _run_job(job: tuple[ToyGrid, dict[str, Any]]) -> pd.DataFrame:
    grid, row = job
    torch.set_num_threads(1)
    problem = grid.problem(row["noise"])
    trajectory = train_theta(
        problem,
        TOY_LOSSES[row["loss"]],
        row["batch_size"],
        grid.steps,
        grid.lr,
        grid.mode,
        grid.schedule,
        row["theta0"],
        row["seed"],
        grid.record_every,
    )
    return trajectory.assign(**{k: row[k] for k in ("noise", "batch_size", "loss", "seed")})


def run_toy(grid: ToyGrid, progress: bool = False) -> pd.DataFrame:
    """Run every job of ``grid`` and store ``<tag>-summary`` (module docstring); returns the summary."""
    from workbench.labs.grid import run_pool

    summary_id = grid.summary_id or f"{grid.tag}-summary"
    record = grid.record()
    check_stored_config(summary_id, record, grid.root)
    try:  # a complete summary of this very grid is reused, not recomputed
        stored = load_run(summary_id, root=grid.root)
        if stored.status == "complete":
            return stored.table("summary")
    except FileNotFoundError:
        pass
    jobs = [(grid, row) for row in grid.jobs()]
    started = time.perf_counter()
    name = (
        (lambda job: f"{job[1]['loss']} n{job[1]['noise']} b{job[1]['batch_size']} s{job[1]['seed']}")
        if progress
        else None
    )
    trajectories = pd.concat(run_pool(_run_job, jobs, grid.workers or 1, name=name), ignore_index=True)
    runs = (
        trajectories.groupby(["noise", "batch_size", "loss", "seed"], sort=False).theta.last().reset_index()
    )
    problems = {noise: grid.problem(noise) for noise in grid.noise_levels}
    runs["distance"] = (runs.theta - 1.0).abs()
    runs["excess"] = [
        global_loss(problems[r.noise], r.theta) - global_loss(problems[r.noise], 1.0)
        for r in runs.itertuples()
    ]
    runs["grad_norm"] = [abs(global_gradient(problems[r.noise], r.theta)) for r in runs.itertuples()]
    summary = summarize_toy(runs)
    totals = {
        "runs": len(runs),
        "seconds": time.perf_counter() - started,
        "c": {str(k): p.c for k, p in problems.items()},
    }
    with RunWriter.create(record, run_id=summary_id, root=grid.root) as writer:
        writer.save_table("runs", runs)
        writer.save_table("trajectories", trajectories)
        writer.save_table("summary", summary)
        writer.finish(totals)
    return summary


def summarize_toy(runs: pd.DataFrame, thresholds: dict | None = None) -> pd.DataFrame:
    """Per (noise, batch_size, loss): final theta mean/std, distance, excess loss, gradient norm."""
    return (
        runs.groupby(["noise", "batch_size", "loss"], sort=False)
        .agg(
            theta_mean=("theta", "mean"),
            theta_std=("theta", "std"),
            distance_mean=("distance", "mean"),
            distance_max=("distance", "max"),
            excess_mean=("excess", "mean"),
            grad_norm_mean=("grad_norm", "mean"),
            runs=("seed", "count"),
        )
        .reset_index()
    )


def reached_table(bias_summary: pd.DataFrame, runs: pd.DataFrame, biased: str = "clip") -> pd.DataFrame:
    """Runs that reached theta*: per (noise, batch_size), the threshold from the bias-mode fixed points.

    Args:
        bias_summary: a bias-mode summary (``theta_mean`` per noise, batch size, loss), with ``biased``.
        runs: a stochastic grid's ``runs`` table (noise, batch_size, loss, seed, distance, ...).
        biased: the loss whose fixed point sets the threshold (:func:`reach_threshold`).

    Returns:
        One row per (noise, batch_size, loss) of ``runs``: the threshold, the reached count, the runs.
    """
    rows = []
    for (noise, batch_size, loss), group in runs.groupby(["noise", "batch_size", "loss"], sort=False):
        points = bias_summary[(bias_summary.noise == noise) & (bias_summary.batch_size == batch_size)]
        threshold = reach_threshold(dict(zip(points.loss, points.theta_mean, strict=True)), biased)
        reached = int((group.distance < threshold).sum())
        rows.append(
            dict(
                noise=noise,
                batch_size=batch_size,
                loss=loss,
                threshold=threshold,
                reached=reached,
                runs=len(group),
            )
        )
    return pd.DataFrame(rows)


CURVE_THETAS = (0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5, 1.8)


def store_curves(grid: ToyGrid, partitions: int = 20, thetas: Sequence[float] = CURVE_THETAS) -> pd.DataFrame:
    """:func:`expected_gradient` for every noise level, batch size and loss of ``grid``, stored as the
    ``curves`` table of ``<tag>-curves`` with a ``fixed_points`` table (the zero of each curve)."""
    record = {**grid.record(), "kind": "toy_curves", "partitions": partitions, "thetas": list(thetas)}
    run_id = f"{grid.tag}-curves"
    check_stored_config(run_id, record, grid.root)
    try:  # a complete run of these very curves is reused
        stored = load_run(run_id, root=grid.root)
        if stored.status == "complete":
            return stored.table("fixed_points")
    except FileNotFoundError:
        pass
    frames = []
    for noise in grid.noise_levels:
        problem = grid.problem(noise)
        for batch_size in grid.batch_sizes:
            for loss in grid.losses:
                curve = expected_gradient(
                    problem, TOY_LOSSES[loss], batch_size, thetas, partitions, grid.data_seed
                )
                frames.append(curve.assign(noise=noise, batch_size=batch_size, loss=loss))
    curves = pd.concat(frames, ignore_index=True)
    fixed = curves.groupby(["noise", "batch_size", "loss"], sort=False).apply(root_of, include_groups=False)
    fixed = fixed.rename("fixed_point").reset_index()
    with RunWriter.create(record, run_id=run_id, root=grid.root) as writer:
        writer.save_table("curves", curves)
        writer.save_table("fixed_points", fixed)
        writer.finish({"rows": len(curves)})
    return fixed


def store_step_distribution(
    grid: ToyGrid, thetas: Sequence[float] = (1.0, 3.0), partitions: int = 100
) -> pd.DataFrame:
    """:func:`step_distribution` at each theta, per noise level, batch size and loss of ``grid``.

    Stored as ``<tag>-steps`` with the tables ``steps`` (every step, with the full-data gradient
    ``global``) and ``summary``
    (:func:`summarize_steps` per setting); a complete stored run of the same settings is reused.
    Returns the summary.
    """
    record = {**grid.record(), "kind": "toy_steps", "partitions": partitions, "thetas": list(thetas)}
    run_id = f"{grid.tag}-steps"
    check_stored_config(run_id, record, grid.root)
    try:
        stored = load_run(run_id, root=grid.root)
        if stored.status == "complete":
            return stored.table("summary")
    except FileNotFoundError:
        pass
    frames, rows = [], []
    for noise in grid.noise_levels:
        problem = grid.problem(noise)
        for batch_size in grid.batch_sizes:
            for loss in grid.losses:
                for theta in thetas:
                    steps = step_distribution(
                        problem, TOY_LOSSES[loss], batch_size, theta, partitions, grid.data_seed
                    )
                    key = dict(noise=noise, batch_size=batch_size, loss=loss, theta=float(theta))
                    full = global_gradient(problem, theta)
                    frames.append(pd.DataFrame({**key, "step": steps, "global": full}))
                    rows.append({**key, **summarize_steps(steps, full)})
    summary = pd.DataFrame(rows)
    with RunWriter.create(record, run_id=run_id, root=grid.root) as writer:
        writer.save_table("steps", pd.concat(frames, ignore_index=True))
        writer.save_table("summary", summary)
        writer.finish({"rows": len(summary)})
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m workbench.labs.toy", description=__doc__.split("\n\n")[0]
    )
    add_grid_arguments(parser, ToyGrid)
    parser.add_argument(
        "--curves",
        type=int,
        default=None,
        metavar="PARTITIONS",
        help="instead of training: each loss's expected step E[g_B(theta)] on a grid of theta, "
        "averaged over this many partitions, stored as <tag>-curves",
    )
    parser.add_argument(
        "--step-distribution",
        type=int,
        default=None,
        metavar="PARTITIONS",
        help="instead of training: every minibatch step at theta = 1 (theta*) and 3 over this many "
        "partitions, with its mean, median and skew, stored as <tag>-steps",
    )
    args = parser.parse_args(argv)
    try:
        grid = grid_from_args(args)
        if args.step_distribution is not None:
            summary = store_step_distribution(grid, partitions=args.step_distribution)
            print(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            return 0
        if args.curves is not None:
            print(store_curves(grid, args.curves).to_string(index=False))
            return 0
        if args.plan:
            print(pd.DataFrame(grid.jobs()).to_string(index=False))
            return 0
        summary = run_toy(grid, progress=True)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
