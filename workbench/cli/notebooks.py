"""Run the parameterised notebooks headless with papermill: one at a time, or a grid of them as a sweep.

The notebooks in ``notebooks/`` are jupytext pairs (``NN_slug.py`` + ``NN_slug.ipynb``) whose first code
cell is tagged ``parameters`` and declares every parameter as ``name: type = value  # help``. This module
reads those declarations (``notebook_parameters``), coerces command-line strings to the declared types,
refuses unknown names before any kernel starts, and executes the notebook with papermill. The executed
copy, outputs and all, lands under ``<data home>/notebook-runs/``; its path is exported to the kernel as
``WORKBENCH_NOTEBOOK``, so every run the notebook writes records which executed notebook produced it.

A sweep runs one papermill execution per grid point, in parallel local processes
(``workbench.labs.grid.run_pool``) or as Ray tasks, and records every point (parameters, status,
executed notebook, error) as a ``sweep`` run in the run store. A point that fails, be it an exception
in a cell or a kernel that died, is recorded as failed with its reason and its executed copy, and the
other points go on; the sweep run always ends, complete or failed. Notebooks derive their run ids from
their parameters, so re-running a sweep resumes interrupted points and reuses finished ones.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.labs.grid import run_pool
from workbench.store.runs import NOTEBOOK_ENV, RunWriter, config_run_id, data_home

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS_ENV = "WORKBENCH_NOTEBOOKS"  # another folder of notebooks following the same conventions
EXECUTORS = ("local", "ray")
SCALAR_TYPES = {"int": int, "float": float, "str": str, "bool": bool}
LIST_TYPES = {f"list[{name}]": kind for name, kind in SCALAR_TYPES.items() if name != "bool"}


class NotebookError(ValueError):
    """A notebook could not be found, was given bad parameters, or failed while executing.

    Attributes:
        notebook: the executed copy of a notebook that failed while executing (kept), else None.
    """

    def __init__(self, message: str, notebook: Path | None = None) -> None:
        super().__init__(message)
        self.notebook = notebook


@dataclass(frozen=True)
class Parameter:
    """One entry of a notebook's ``parameters`` cell."""

    name: str
    type: str
    default: Any
    help: str


# -- finding notebooks and their parameters -------------------------------------------------------------


def notebook_dir() -> Path:
    """The notebooks folder: ``$WORKBENCH_NOTEBOOKS`` if set, else ``notebooks/`` beside the package."""
    folder = Path(os.environ.get(NOTEBOOKS_ENV) or NOTEBOOK_DIR)
    if not folder.is_dir():
        raise NotebookError(
            f"no notebooks folder at {folder}; the notebooks ship with the source checkout "
            f"(install the workbench with `pip install -e .` from a clone, or set {NOTEBOOKS_ENV})"
        )
    return folder


def notebook_names() -> list[str]:
    """Stems of the runnable notebooks, e.g. ``["01_gradient_bias", ...]``, in order."""
    return sorted(path.stem for path in notebook_dir().glob("[0-9][0-9]_*.ipynb"))


def resolve_notebook(name: str) -> Path:
    """Path of a notebook given its stem (``01_gradient_bias``), slug (``gradient_bias``) or number (``1``).

    Raises:
        NotebookError: No notebook matches; the message lists the allowed names.
    """
    names = notebook_names()
    key = str(name).removesuffix(".ipynb").removesuffix(".py")
    matches = [
        stem
        for stem in names
        if key == stem or key == stem[3:] or (key.isdigit() and int(key) == int(stem[:2]))
    ]
    if len(matches) != 1:
        raise NotebookError(f"notebook must be one of {', '.join(names)} (or their number); got {name!r}")
    return notebook_dir() / f"{matches[0]}.ipynb"


def notebook_parameters(name: str) -> dict[str, Parameter]:
    """The parameters declared in the notebook's ``parameters`` cell, in order."""
    import papermill

    path = resolve_notebook(name)
    declared = papermill.inspect_notebook(str(path))
    if not declared:
        raise NotebookError(f"{path.name} has no cell tagged 'parameters'")
    parameters = {}
    for key, entry in declared.items():
        try:
            default = ast.literal_eval(entry["default"])
        except (ValueError, SyntaxError):
            default = entry["default"]
        parameters[key] = Parameter(key, entry["inferred_type_name"], default, entry.get("help") or "")
    return parameters


# -- coercing parameter values --------------------------------------------------------------------------


def _coerce_scalar(kind: type, value: Any, name: str, type_name: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise NotebookError(f"parameter {name} must be a bool (true or false), got {value!r}")
    if kind is str:
        return str(value)
    if isinstance(value, bool):
        raise NotebookError(f"parameter {name} must be {type_name}, got {value!r}")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise NotebookError(f"parameter {name} must be {type_name}, got {value!r}") from None
    if kind is int and isinstance(value, float) and value != number:
        raise NotebookError(f"parameter {name} must be an int, got {value!r}")
    return number


def coerce_value(parameter: Parameter, value: Any) -> Any:
    """``value`` (a Python value or a command-line string) as the parameter's declared type.

    Lists are given on the command line comma-separated: ``-p batch_sizes 4,16,64``.
    """
    name, type_name = parameter.name, parameter.type
    if type_name in SCALAR_TYPES:
        return _coerce_scalar(SCALAR_TYPES[type_name], value, name, type_name)
    if type_name in LIST_TYPES:
        items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise NotebookError(f"parameter {name} must be {type_name} (comma-separated), got {value!r}")
        return [_coerce_scalar(LIST_TYPES[type_name], item, name, type_name) for item in items]
    return value  # an undeclared type: papermill passes it through unchanged


def coerce_parameters(name: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``values`` against the notebook's declared parameters and coerce them to the declared types.

    Raises:
        NotebookError: An unknown parameter name (the message lists the allowed ones) or a bad value.
    """
    declared = notebook_parameters(name)
    unknown = sorted(set(values or {}) - set(declared))
    if unknown:
        raise NotebookError(
            f"unknown parameter {unknown[0]!r} for notebook {resolve_notebook(name).stem}; "
            f"allowed: {', '.join(declared)}"
        )
    return {key: coerce_value(declared[key], value) for key, value in (values or {}).items()}


# -- executing ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set environment variables for the kernel papermill starts (it inherits ours), then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _output_path(stem: str, parameters: Mapping[str, Any], root: Path) -> Path:
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()[:8]
    folder = root / "notebook-runs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{digest}-{os.getpid()}.ipynb"


def run_notebook(
    name: str,
    parameters: Mapping[str, Any] | None = None,
    root: str | Path | None = None,
    *,
    threads: int | None = None,
    progress: bool = False,
    log_output: bool = False,
) -> Path:
    """Execute a notebook headless with papermill and return the path of the executed copy.

    Args:
        name: Notebook stem, slug or number (see ``resolve_notebook``).
        parameters: Values for the ``parameters`` cell; strings are coerced to the declared types.
        root: Data home for this execution (runs land in ``root/runs``, the executed copy in
            ``root/notebook-runs``); the default is ``data_home()``.
        threads: CPU threads for the kernel's torch/BLAS (``OMP_NUM_THREADS``); None leaves them alone.
        progress: Show papermill's cell progress bar.
        log_output: Echo the notebook's output while it runs.

    Raises:
        NotebookError: Unknown notebook or parameter, a bad value, an exception inside the notebook (the
            message names the exception and its text), or a kernel that died or could not start; the
            partly executed copy is kept (``NotebookError.notebook``).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from workbench.cli.engine import register as register_engine

    path = resolve_notebook(name)
    values = coerce_parameters(name, parameters)
    home = Path(root).resolve() if root is not None else data_home().resolve()
    output = _output_path(path.stem, values, home)
    thread_env = None if threads is None else str(int(threads))
    with _environment(
        WORKBENCH_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=thread_env or os.environ.get("OMP_NUM_THREADS"),
        MKL_NUM_THREADS=thread_env or os.environ.get("MKL_NUM_THREADS"),
        **{NOTEBOOK_ENV: str(output)},
    ):
        try:
            papermill.execute_notebook(
                str(path),
                str(output),
                parameters=values,
                kernel_name="python3",
                cwd=str(path.parent),
                progress_bar=progress,
                log_output=log_output,
                request_save_on_cell_execute=True,
                # widget cells can otherwise hang forever on a missed reply (workbench.cli.engine)
                engine_name=register_engine(),
            )
        except PapermillExecutionError as error:
            message = str(error.evalue).strip().splitlines()
            raise NotebookError(
                f"{path.stem} failed in cell In [{error.exec_count}]: {error.ename}: "
                f"{message[-1] if message else ''} (executed copy: {output})",
                output,
            ) from None
        except Exception as error:  # the kernel died (a crash, the OOM killer), timed out or never started
            where = _last_started_cell(output)
            text = str(error).strip().splitlines()
            raise NotebookError(
                f"{path.stem} failed{where}: {type(error).__name__}: {text[-1] if text else ''} "
                f"(executed copy: {output})",
                output if output.exists() else None,
            ) from None
    return output


def _last_started_cell(output: Path) -> str:
    """`` in cell In [n]`` for the last cell the kernel started, from the executed copy papermill saved.

    ``n`` is the cell's execution count, or its place among the code cells where the kernel died before
    its count reached the client (papermill executes the code cells in order, so the two agree).
    """
    try:
        cells = [cell for cell in json.loads(output.read_text())["cells"] if cell.get("cell_type") == "code"]
    except (OSError, ValueError, KeyError):
        return ""
    started = [
        i for i, cell in enumerate(cells) if cell.get("metadata", {}).get("papermill", {}).get("start_time")
    ]
    if not started:
        return ""
    return f" in cell In [{cells[started[-1]].get('execution_count') or started[-1] + 1}]"


# -- sweeps ---------------------------------------------------------------------------------------------


def parse_grid(name: str, specs: Sequence[str]) -> dict[str, list[Any]]:
    """Parse ``--grid key=v1,v2`` specs into ``{key: [values]}`` with values of the declared types.

    Points are separated by commas; for a list-typed parameter separate points with ``;`` so each point
    can itself be a comma-separated list (``--grid "losses=clip;clip,bayes"``). The singular of a list
    parameter sweeps it over single values: ``--grid loss=clip,bayes`` is ``--grid losses=clip,bayes``.
    """
    declared = notebook_parameters(name)
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise NotebookError(f"grid spec must look like key=v1,v2; got {spec!r}")
        plural = f"{key}es" if key.endswith("s") else f"{key}s"
        if key not in declared and declared.get(plural) and declared[plural].type in LIST_TYPES:
            key = plural  # "--grid loss=clip,bayes" sweeps the list parameter losses over [clip], [bayes]
        if key not in declared:
            raise NotebookError(
                f"unknown grid parameter {key!r} for notebook {resolve_notebook(name).stem}; "
                f"allowed: {', '.join(declared)}"
            )
        if key in grid:
            raise NotebookError(f"grid parameter {key!r} is given twice")
        # A list parameter swept over single values ("batch_sizes=4,16") gets [4] and [16] as points.
        separator = ";" if declared[key].type in LIST_TYPES and ";" in raw else ","
        parts = raw.split(separator)
        grid[key] = [coerce_value(declared[key], part.strip()) for part in parts if part.strip()]
    return grid


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """All points of the grid (the Cartesian product), in a stable order."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _run_point(job: tuple[str, dict[str, Any], str, int | None]) -> dict[str, Any]:
    """One sweep point (name, parameters, data home, threads); a failure is returned, not raised, so the
    sweep goes on, with its reason and the executed copy."""
    name, parameters, root, threads = job
    started = time.perf_counter()
    try:
        output = run_notebook(name, parameters, root, threads=threads)
        status, error = "complete", ""
    except Exception as exc:
        output, status = getattr(exc, "notebook", None), "failed"
        error = str(exc) if isinstance(exc, NotebookError) else f"{type(exc).__name__}: {exc}"
    return {
        **{f"param.{k}": json.dumps(v) if isinstance(v, list) else v for k, v in parameters.items()},
        "status": status,
        "notebook": str(output) if output else "",
        "error": error,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _run_ray(jobs: list[tuple], workers: int, address: str | None) -> list[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise NotebookError("executor 'ray' needs the ray package: pip install 'workbench[sweep]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        options = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(**options, log_to_driver=False, ignore_reinit_error=True)
    try:
        task = ray.remote(num_cpus=1)(_run_point)
        return ray.get([task.remote(job) for job in jobs])
    finally:
        if started_here:
            ray.shutdown()


def run_sweep(
    name: str,
    grid: Mapping[str, Sequence[Any]],
    fixed: Mapping[str, Any] | None = None,
    root: str | Path | None = None,
    *,
    executor: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
) -> pd.DataFrame:
    """Execute the notebook once per grid point and record the sweep as a run.

    Args:
        name: Notebook stem, slug or number.
        grid: ``{parameter: [values]}``; every combination is one execution.
        fixed: Parameters shared by every point (may not also be in the grid).
        root: Data home (see ``run_notebook``); must be visible to every worker (a shared path on a cluster).
        executor: ``"local"`` (parallel processes on this machine) or ``"ray"`` (Ray tasks, so a sweep can
            fan out over a cluster; ``ray_address`` names it, the default starts a local Ray).
        workers: Concurrent executions (local processes, or CPUs of a local Ray); default: CPU count,
            at most the number of points.
        ray_address: Address of a running Ray cluster (``ray://host:10001`` or ``auto``).

    Returns:
        One row per point: ``param.<name>`` columns, status, notebook (executed copy, also of a failed
        point), error, seconds. The ``sweep`` run ends failed when a point failed, else complete.

    Raises:
        NotebookError: Bad notebook, parameter, grid or executor; nothing is executed then.
    """
    if executor not in EXECUTORS:
        raise NotebookError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise NotebookError(f"workers must be a positive integer, got {workers!r}")
    if not grid:
        raise NotebookError("grid must name at least one parameter (--grid key=v1,v2)")
    overlap = sorted(set(grid) & set(fixed or {}))
    if overlap:
        raise NotebookError(f"parameter {overlap[0]!r} is both fixed (-p) and swept (--grid)")
    stem = resolve_notebook(name).stem
    base = coerce_parameters(stem, fixed)
    points = [{**base, **point} for point in expand_grid(grid)]
    for point in points:  # every value checked before any kernel starts
        coerce_parameters(stem, point)
    home = str(Path(root).resolve() if root is not None else data_home().resolve())
    workers = workers or min(len(points), os.cpu_count() or 1)
    threads = max(1, (os.cpu_count() or 1) // workers)

    config = {"kind": "sweep", "notebook": stem, "grid": dict(grid), "fixed": base, "executor": executor}
    jobs = [(stem, point, home, threads) for point in points]
    run_id = config_run_id(f"sweep-{stem}", config)
    # the writer's context marks the sweep failed on any exception (an interrupt included)
    with RunWriter.create(config, run_id=run_id, root=Path(home) / "runs") as writer:
        if executor == "ray":
            rows = _run_ray(jobs, workers, ray_address)
        else:
            # spawn, not fork: each worker starts a Jupyter kernel, and forking a threaded process is unsafe
            rows = run_pool(_run_point, jobs, workers, spawn=True)
        table = pd.DataFrame(rows)
        writer.save_table("points", table)
        failed = int((table.status != "complete").sum())
        if failed:
            writer.fail(f"{failed} of {len(table)} points failed; see the 'points' table")
        else:
            writer.finish({"points": len(table), "failed": 0, "seconds": float(table.seconds.sum())})
    return table
