"""Experiment grids: frozen dataclasses of settings, and one runner that trains any of them.

A grid is the product of its axes (temperatures, say, or noise levels x batch sizes x losses) times
its seeds. Its dataclass holds every setting and checks them all when it is made (``__post_init__``),
so a bad value fails before anything is built, trained or written. :meth:`Grid.points` turns it into
grid points, each a training config. :func:`run_grid` trains every (point, seed) as one run of the
run store with the deterministic id ``<tag>-<point>-s<seed>`` (a complete run is skipped on the next
call, a killed one resumes from its checkpoint), then writes a summary run, ``<tag>-summary`` by
default. The summary run's config is the grid (:meth:`Grid.record`: ``asdict(grid)`` without the
runtime fields workers, root and summary_id, plus ``kind`` and ``metrics``); its tables are ``runs``
(one row per run: coordinates, seed, run_id, measured values) and ``summary`` (per point the mean
and standard deviation over seeds of every metric, ``<m>_mean`` and ``<m>_std``, and ``runs``).

A run id holds one config: a run, or the summary, whose stored config differs from the grid's makes
:func:`run_grid` raise before anything is trained (pass another tag for other settings).

:func:`run_pool` is the one process pool: grids train with it, notebook sweeps execute with it.
:func:`add_grid_arguments` builds command-line flags from a grid's fields, as the trainer's command
line does from ``TrainConfig``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from workbench.store.runs import RUN_ID_PATTERN, Run, RunWriter, check_stored_config

if typing.TYPE_CHECKING:
    from workbench.training.trainer import TrainConfig

J = TypeVar("J")
R = TypeVar("R")
RUNTIME = {"runtime": True}  # field metadata: where a grid runs, not what it computes (not recorded)
_RUN_ID_RE = re.compile(RUN_ID_PATTERN)


# ------------------------------------------------------------------------------------------ validation


def check_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int >= ``low``; ValueError naming ``name`` otherwise (bools are not ints here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_number(
    name: str, value: Any, low: float, high: float | None = None, open_low: bool = False
) -> float:
    """``value`` as a finite float >= ``low`` (> with ``open_low``) and <= ``high``; ValueError otherwise."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if open_low else value >= low)
        ok = ok and (high is None or value <= high)
    if not ok:
        lo = f"> {low}" if open_low else f">= {low}"
        bound = lo if high is None else f"{lo} and <= {high}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return value


def check_axis(name: str, values: Any, check: Callable[[str, Any], Any]) -> tuple:
    """A grid axis: a non-empty sequence without duplicates, each value passed through ``check``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence, got {values!r}")
    out = tuple(check(name, value) for value in values)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicate values: {list(values)!r}")
    return out


def one_of(allowed: Sequence[str]) -> Callable[[str, Any], str]:
    """A ``check`` for :func:`check_axis` accepting the names in ``allowed``."""

    def check(name: str, value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{name} entries must be one of {', '.join(allowed)}; got {value!r}")
        return value

    return check


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``; ValueError listing them otherwise."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return value


def check_run_id(name: str, value: Any, suffix: str = "") -> str:
    """``value`` if ``value + suffix`` is a valid run id."""
    if not isinstance(value, str) or not _RUN_ID_RE.fullmatch(f"{value}{suffix}"):
        where = f"'<{name}>{suffix}'" if suffix else "it"
        raise ValueError(f"{name} {value!r} is not allowed: {where} must match {RUN_ID_PATTERN}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


# Field checks for the ``checks`` tables of the grids: (name, value) -> the checked, normalised value.
Check = Callable[[str, Any], Any]


def ints(low: int) -> Check:
    return lambda name, value: check_int(name, value, low)


def numbers(low: float, high: float | None = None, open_low: bool = False) -> Check:
    return lambda name, value: check_number(name, value, low, high, open_low)


def choices(allowed: Sequence[str]) -> Check:
    return lambda name, value: check_choice(name, value, allowed)


def axis(check: Check) -> Check:
    return lambda name, value: check_axis(name, value, check)


def optional(check: Check) -> Check:
    """``check``, with None allowed (for a default worked out later)."""
    return lambda name, value: None if value is None else check(name, value)


def _check_root(name: str, value: Any) -> Any:
    if value is not None and not isinstance(value, (str, Path)):
        raise ValueError(f"{name} must be a path or None, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------ grids


@dataclass(frozen=True)
class Point:
    """One grid point: its coordinates (summary columns), the run-id part naming them, its seeds, the
    config of its runs (each seed replaces ``seed``) and per-point constants (e.g. measured data)."""

    coords: dict[str, Any]
    slug: str
    config: TrainConfig
    seeds: Sequence[int]
    constants: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    """Settings every grid shares; a subclass adds its axes, ``kind``, ``metrics`` and :meth:`points`.

    Attributes:
        seeds: runs per grid point (the model seeds 0, 1, ...).
        steps: training steps of every run.
        lr: learning rate of every run.
        workers: training processes in parallel (default: the CPU count, at most 4).
        tag: prefix of every run id; pass another one when a setting that the run ids do not name changes.
        root: run-store root (default $WORKBENCH_HOME/runs or data/runs).
        summary_id: id of the summary run (default <tag>-summary).
    """

    seeds: int = 3
    steps: int = 500
    lr: float = 1e-3
    workers: int | None = field(default=None, metadata=RUNTIME)
    tag: str = "grid"
    root: str | Path | None = field(default=None, metadata=RUNTIME)
    summary_id: str | None = field(default=None, metadata=RUNTIME)

    kind: ClassVar[str] = "grid"
    metrics: ClassVar[tuple[str, ...]] = ()  # read from the last metrics row of every run
    # Every field is checked by the entry of its name, when it has one: (name, value) -> value. The
    # table holds settings several grids have; a subclass extends it with its own fields.
    checks: ClassVar[dict[str, Check]] = {
        "seeds": ints(1),
        "steps": ints(1),
        "lr": numbers(0.0, open_low=True),
        "workers": optional(ints(1)),
        "tag": lambda name, value: check_run_id(name, value, "-summary"),
        "root": _check_root,
        "summary_id": optional(check_run_id),
        "batch_size": ints(2),
        "temperature": numbers(0.0, open_low=True),
        "learn_scale": check_bool,
        "probe_size": optional(ints(2)),
        "data_seed": ints(0),
        "seed": ints(0),
    }
    # command line: argparse options per field (e.g. extra flag names as "aliases") and extra flags
    cli_options: ClassVar[dict[str, dict[str, Any]]] = {}
    cli_flags: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = self.checks.get(f.name)
            if check is not None:
                self._set(f.name, check(f.name, getattr(self, f.name)))

    def _set(self, name: str, value: Any) -> None:
        """Store a checked (normalised) value on the frozen instance; for ``__post_init__`` only."""
        object.__setattr__(self, name, value)

    def points(self) -> list[Point]:
        """The grid points, in summary order; may build data sets (and raise on data-dependent values)."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """The summary run's config: ``kind``, ``metrics`` and every field but the runtime ones."""
        values = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("runtime"):
                values.pop(f.name)
        return {"kind": self.kind, "metrics": list(self.metrics), **values}

    def measure(self, run: Run) -> dict[str, float]:
        """The values of one finished run for the ``runs`` table (runs in the worker process)."""
        return final_metrics(run, self.metrics)

    def summarize(
        self, table: pd.DataFrame, points: list[Point]
    ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """(runs table, summary table, summary.json) from the table of every run.

        The summary has one row per point: its coordinates, its constants, ``<m>_mean`` and ``<m>_std``
        of every metric over the seeds, and ``runs``.
        """
        aggregations: dict[str, tuple[str, str]] = {name: (name, "first") for name in points[0].constants}
        for name in self.metrics:
            aggregations[f"{name}_mean"] = (name, "mean")
            aggregations[f"{name}_std"] = (name, "std")
        aggregations["runs"] = ("seed", "count")
        summary = table.groupby(list(points[0].coords), sort=False).agg(**aggregations).reset_index()
        totals = {"settings": len(summary), "runs": len(table), "seconds": float(table.seconds.sum())}
        return table, summary, totals


def final_metrics(run: Run, metrics: Sequence[str]) -> dict[str, float]:
    """``metrics`` from the last metrics row of ``run`` (NaN where absent), its last step and seconds."""
    table = run.metrics
    final = table.iloc[-1] if len(table) else pd.Series(dtype=float)
    values = {name: float(final.get(name, math.nan)) for name in metrics}
    values["final_step"] = int(final.get("step", 0)) if len(table) else 0
    values["seconds"] = float(run.summary.get("seconds", math.nan))
    return values


def _train(job: tuple[str, TrainConfig, str | None, Grid]) -> dict[str, float]:
    import torch

    from workbench.training.trainer import train

    run_id, config, root, grid = job
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread per process beats threads shared by processes
    try:
        return grid.measure(train(config, run_id=run_id, root=root, progress=False))
    finally:
        torch.set_num_threads(threads)


def run_grid(grid: Grid, *, progress: bool = False, plan_only: bool = False) -> pd.DataFrame:
    """Train every (point, seed) of ``grid``, then write and return the summary (module docstring).

    Args:
        grid: the grid.
        progress: print one line per finished run to stderr.
        plan_only: check everything (the run ids' stored configs included) and return the plan, one row
            per run (coordinates, seed, run_id, constants), without training or writing anything.

    Raises:
        ValueError: a data-dependent value is out of range, two runs share an id, or a run id (the
            summary's included) is stored with another config; nothing is trained then.
    """
    points = grid.points()
    root = None if grid.root is None else str(grid.root)
    jobs, rows = [], []
    for point in points:
        for seed in point.seeds:
            config = dataclasses.replace(point.config, seed=seed)  # checked again, with its seed
            run_id = f"{grid.tag}-{point.slug}-s{seed}"
            jobs.append((run_id, config, root, grid))
            rows.append({**point.coords, "seed": seed, "run_id": run_id, **point.constants})
    if len({job[0] for job in jobs}) != len(jobs):
        raise ValueError("the grid has duplicate run ids; check the grid values for duplicates")
    summary_id = grid.summary_id or f"{grid.tag}-summary"
    record = grid.record()
    try:
        for run_id, config, *_ in jobs:
            check_stored_config(run_id, config.to_dict(), root)
    except ValueError as err:
        raise ValueError(f"{err}; pass another tag than {grid.tag!r} to run these settings") from None
    try:
        check_stored_config(summary_id, record, root)
    except ValueError as err:
        raise ValueError(f"{err}; pass another summary_id (or tag) to keep both summaries") from None
    if plan_only:
        return pd.DataFrame(rows)

    workers = grid.workers or min(4, os.cpu_count() or 1)
    results = run_pool(_train, jobs, workers, name=(lambda job: job[0]) if progress else None)
    table = pd.DataFrame([{**row, **result} for row, result in zip(rows, results, strict=True)])
    table, summary, totals = grid.summarize(table, points)
    with RunWriter.create(record, run_id=summary_id, root=root) as writer:
        writer.save_table("runs", table)
        writer.save_table("summary", summary)
        writer.finish(totals)
    return summary


# ------------------------------------------------------------------------------------------ the pool


def run_pool(
    function: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    *,
    name: Callable[[J], str] | None = None,
    spawn: bool = False,
) -> list[R]:
    """``function(job)`` for every job, the results in job order.

    In this process when ``workers`` <= 1 or there is one job, else in a pool of up to ``workers``
    processes (``function`` and the jobs must pickle). The first exception cancels the jobs that have
    not started and is raised once the running ones end.

    Args:
        function: a module-level function of one job.
        jobs: the jobs.
        workers: processes in parallel.
        name: when given, print ``[i/n] <name(job)> (<elapsed> s)`` to stderr as each job ends.
        spawn: start the workers with ``spawn`` rather than the platform default (for work that starts
            threads or subprocesses of its own, e.g. a Jupyter kernel, where forking is unsafe).
    """
    started = time.perf_counter()

    def report(i: int, job: J) -> None:
        if name is not None:
            print(f"[{i}/{len(jobs)}] {name(job)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    if workers <= 1 or len(jobs) <= 1:
        out = []
        for i, job in enumerate(jobs, 1):
            out.append(function(job))
            report(i, job)
        return out
    context = get_context("spawn") if spawn else None
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(function, job) for job in jobs]
        try:
            out = []
            for i, (future, job) in enumerate(zip(futures, jobs, strict=True), 1):
                out.append(future.result())
                report(i, job)
            return out
        except BaseException:
            for future in futures:
                future.cancel()
            raise


# ------------------------------------------------------------------------------------------ command line


def _attribute_help(cls: type) -> dict[str, str]:
    """``name: text`` of the ``Attributes:`` sections of the class's docstrings (subclasses win)."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        doc = klass.__dict__.get("__doc__") or ""
        section = doc.partition("Attributes:")[2]
        current = None
        for line in section.splitlines():
            match = re.match(r"^\s{4,8}(\w+): (.*)$", line)
            if match:
                current = match.group(1)
                helps[current] = match.group(2).strip()
            elif current and line.strip() and line.startswith(" " * 12):
                helps[current] += " " + line.strip()
            elif not line.strip() and helps:
                current = None
    return helps


def _argparse_options(hint: Any) -> dict[str, Any]:
    """argparse options for a field's type: scalars, ``X | None``, ``tuple[X, ...]``, dicts (JSON), bools."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in args if arg is not type(None))
        return _argparse_options(hint)
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is tuple:
        return {"nargs": "+", "type": typing.get_args(hint)[0]}
    if origin is dict:
        return {"type": json.loads, "metavar": "JSON"}
    if origin is Path:
        return {"type": str}
    return {"type": origin}


def add_grid_arguments(
    parser: argparse.ArgumentParser, cls: type[Grid], defaults: Mapping[str, Any] | None = None
) -> None:
    """One flag per field of ``cls`` (``--batch-sizes`` for ``batch_sizes``), typed from its annotation.

    A flag left out keeps the field's default, so the defaults live in the dataclass alone; ``defaults``
    overrides some of them for this command. The help of a flag is the field's line under
    ``Attributes:`` in the class docstring. Also ``--plan``: print the runs without training.
    """
    defaults = dict(defaults or {})
    hints = typing.get_type_hints(cls)
    helps = _attribute_help(cls)
    for f in dataclasses.fields(cls):
        options = {**_argparse_options(hints[f.name]), **cls.cli_options.get(f.name, {})}
        aliases = options.pop("aliases", ())
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        text = helps.get(f.name, "").rstrip(".")
        if "default" not in text:
            shown = json.dumps(default) if isinstance(default, dict) else repr(default)
            text = f"{text} (default: {shown})"
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            *aliases,
            dest=f.name,
            default=argparse.SUPPRESS,
            help=text.replace("%", "%%"),  # argparse formats help with %
            **options,
        )
    for flag, options in cls.cli_flags.items():
        parser.add_argument(flag, default=argparse.SUPPRESS, **options)
    parser.add_argument(
        "--plan", action="store_true", help="check everything and list the runs; train nothing"
    )
    parser.set_defaults(grid_class=cls, grid_defaults=defaults)


def grid_from_args(args: argparse.Namespace) -> Grid:
    """The grid a command line of :func:`add_grid_arguments` asks for (raises ValueError on bad values)."""
    cls: type[Grid] = args.grid_class
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**args.grid_defaults, **given})


def run_grid_command(args: argparse.Namespace) -> int:
    """Run (or with ``--plan`` list) the grid of a parsed command line and print its summary table."""
    grid = grid_from_args(args)
    started = time.perf_counter()
    table = run_grid(grid, progress=True, plan_only=args.plan)
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_rows", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if not args.plan:
        summary_id = grid.summary_id or f"{grid.tag}-summary"
        print(f"wall time: {time.perf_counter() - started:.1f} s ({summary_id})")
    return 0


def add_grid_commands(
    subparsers: argparse._SubParsersAction, commands: Mapping[str, tuple[type[Grid], dict[str, Any]]]
) -> None:
    """One subcommand per entry ``name: (grid class, default overrides)``; the tag defaults to ``name``."""
    for name, (cls, defaults) in commands.items():
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        parser = subparsers.add_parser(name, help=doc, description=doc)
        add_grid_arguments(parser, cls, {"tag": name, **defaults})


Grids = type[Grid] | Mapping[str, tuple[type[Grid], dict[str, Any]]]


def add_grid_parser(parser: argparse.ArgumentParser, grids: Grids) -> None:
    """A lab's command line on ``parser``: one grid's flags, or one subcommand per entry of a mapping."""
    if isinstance(grids, Mapping):
        add_grid_commands(
            parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True), grids
        )
    else:
        add_grid_arguments(parser, grids)


def lab_main(argv: list[str] | None, prog: str, doc: str, grids: Grids) -> int:
    """A lab module's ``python -m`` command line (``workbench lab ...`` takes the same arguments)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    add_grid_parser(parser, grids)
    args = parser.parse_args(argv)
    try:
        return run_grid_command(args)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
