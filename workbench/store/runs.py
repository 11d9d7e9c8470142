"""Run store: one folder per training run, written atomically and read lazily.

Layout of ``<root>/<run_id>/``::

    config.json                   resolved config, written once
    status.json                   {"status", "created", "updated", "step", "error"}
    metrics.csv                   wide table: ``step`` plus one column per metric
    snapshots/step_XXXXXXXX.npz   dicts of numpy arrays
    checkpoint.pt                 tensors / scalars / nested dicts, loaded with ``weights_only=True``
    tables/<name>.parquet         named DataFrames
    summary.json                  written by ``RunWriter.finish``
    provenance.json               which executed notebooks wrote to the run (see ``NOTEBOOK_ENV``)
    cache/projections/            2-D/3-D projections of the snapshots, cached by the dashboard
    artifacts/                    free-form files

Every file is written to a ``.tmp-*`` sibling, fsynced and renamed over its target, so a killed process
leaves the old file or the new one, never a torn one. Readers skip ``.tmp-*`` names.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import pandas as pd

# The notebook runner sets this to the executed notebook's path; every run a notebook opens records it.
NOTEBOOK_ENV = "WORKBENCH_NOTEBOOK"
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
STATUSES = ("running", "complete", "failed")

# fullmatch, because "$" alone would also accept a trailing newline.
_NAME_RE = re.compile(RUN_ID_PATTERN)
_SNAPSHOT_RE = re.compile(r"step_(\d{8,})\.npz")
_TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------------------------- locations


def data_home() -> Path:
    """Where the workbench writes: ``$WORKBENCH_HOME`` if set, else the repo's ``data/`` folder
    (``./data`` when the package is installed outside a checkout)."""
    home = os.environ.get("WORKBENCH_HOME")
    if home:
        return Path(home).expanduser()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():
        return repo / "data"
    return Path.cwd() / "data"


def runs_root(root: str | Path | None = None) -> Path:
    """Return the folder holding all runs.

    Args:
        root: Explicit root; wins over everything else.

    Returns:
        ``root``, else ``$WORKBENCH_HOME/runs`` when that variable is set, else ``data_home() / "runs"``.
    """
    if root is not None:
        return Path(root).expanduser()
    return data_home() / "runs"


def new_run_id(prefix: str = "run") -> str:
    """Make a readable, unique run id such as ``20261124-153012-simclr-a1b2c3``.

    Args:
        prefix: Free text; characters outside ``[A-Za-z0-9._-]`` become ``-``.
    """
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("._-")[:80] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{clean}-{secrets.token_hex(3)}"


def config_run_id(prefix: str, config: Mapping[str, Any]) -> str:
    """A run id that is a function of the config: ``<prefix>-<12 hex of its hash>``.

    Re-running the same config (a notebook re-executed, a sweep point retried) reopens the same run, so
    an interrupted run resumes and a complete one is returned instead of being trained again.
    """
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("._-")[:100] or "run"
    digest = hashlib.sha256(json.dumps(_normalise(config), sort_keys=True).encode()).hexdigest()[:12]
    return f"{clean}-{digest}"


def slug(value: float) -> str:
    """A number as a run-id part, ``:g`` without ``.`` and ``+``: 0.5 -> ``0p5``, 1e+20 -> ``1e20``."""
    return f"{value:g}".replace(".", "p").replace("+", "")


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not allowed; it must match {RUN_ID_PATTERN}")
    return value


def _run_dir(root: Path, run_id: str) -> Path:
    _check_name(run_id, "run_id")
    base = root.resolve()
    path = (base / run_id).resolve()
    # The pattern already rules out separators and "..", but a symlinked folder could still point outside.
    if path.parent != base:
        raise ValueError(f"run_id {run_id!r} resolves to {path}, which is outside the runs root {base}")
    return path


def _check_step(step: int) -> int:
    try:
        value = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer, got {type(step).__name__}") from None
    if value < 0:
        raise ValueError(f"step must be >= 0, got {value}")
    return value


# --------------------------------------------------------------------------------------------- file io


def _now() -> str:
    # UTC with microseconds, so ISO strings sort in creation order even for runs made in the same second.
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A failed write cleans up after itself; only a hard kill can leave a .tmp- file, which readers skip.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()
    _atomic_write(path, lambda fh: fh.write(data))


def _read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_dict(path: Path) -> dict[str, Any]:
    obj = _read_json(path)
    return obj if isinstance(obj, dict) else {}


def _read_metrics(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame({"step": pd.Series(dtype="int64")})
    # A header-only file parses as object columns; pin the dtypes so empty and full tables look alike.
    return df.astype({"step": "int64", **{c: "float64" for c in df.columns if c != "step"}})


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}")
    return json.loads(json.dumps(dict(config), default=_json_default))


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The sorted keys (nested ones dotted, ``loss_params.temperature``) whose values differ."""
    a, b = _flatten(_normalise(old)), _flatten(_normalise(new))

    def canon(value: Any) -> str:
        # Compare JSON text, not values, so a NaN in the config still equals itself.
        return json.dumps(value, sort_keys=True)

    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or canon(a[k]) != canon(b[k]))


def check_stored_config(run_id: str, config: Mapping[str, Any], root: str | Path | None = None) -> None:
    """Refuse a run id whose stored config is another than ``config``; reads, never writes.

    A run id holds one config, so that a resumed or skipped run is the run that was asked for. A run
    that does not exist yet, or a folder without ``config.json`` (left by a crash), passes.

    Raises:
        ValueError: The stored config differs (the message lists the keys) or is unreadable.
    """
    path = _run_dir(runs_root(root), run_id) / "config.json"
    if not path.exists():
        return
    stored = _read_json(path)
    if not isinstance(stored, dict):
        raise ValueError(f"config.json of run {run_id!r} is unreadable; cannot resume it")
    diff = config_diff(stored, config)
    if diff:
        keys = ", ".join(diff)
        raise ValueError(f"run {run_id!r} exists and its config differs from the stored one in keys: {keys}")


def _json_name(name: str) -> str:
    return name if name.endswith(".json") else f"{name}.json"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# --------------------------------------------------------------------------------------------- writer


class RunWriter:
    """Writes one run folder. Make one with ``RunWriter.create``.

    Attributes:
        path: The run folder.
        run_id: The folder name.
        config: The stored config, in its JSON-normalised form.
    """

    def __init__(self, path: Path, config: dict[str, Any], created: str, step: int = 0) -> None:
        self.path = path
        self.run_id = path.name
        self.config = config
        self._created = created
        self._step = step
        self._status = "running"
        self._rows: dict[int, dict[str, float]] = {}
        self._names: dict[str, None] = {}  # metric columns in first-logged order

    @classmethod
    def create(
        cls,
        config: Mapping[str, Any],
        run_id: str | None = None,
        root: str | Path | None = None,
        prefix: str = "run",
        resume: bool = True,
    ) -> RunWriter:
        """Create a run folder, or reopen an existing one.

        Args:
            config: JSON-serialisable resolved config.
            run_id: Folder name; a fresh ``new_run_id(prefix)`` when None.
            root: Runs root, see ``runs_root``.
            prefix: Readable part of a generated run id.
            resume: Reopen an existing run (its stored config must equal ``config``) instead of refusing.

        Raises:
            ValueError: Invalid run id, run exists and ``resume`` is False, or the stored config differs.
        """
        normalised = _normalise(config)
        base = runs_root(root)
        base.mkdir(parents=True, exist_ok=True)
        path = _run_dir(base, run_id if run_id is not None else new_run_id(prefix))
        try:
            path.mkdir()
            exists = False
        except FileExistsError:
            exists = True
        if exists and not resume:
            raise ValueError(f"run_id {path.name!r} already exists under {base}; pass resume=True to reopen")

        config_path = path / "config.json"
        # A folder without config.json was left by a crash right after mkdir: start it afresh.
        if not exists or not config_path.exists():
            _write_json(config_path, normalised)
            writer = cls(path, normalised, created=_now())
        else:
            check_stored_config(path.name, normalised, base)
            stored = _read_json(config_path)
            old = _read_dict(path / "status.json")
            writer = cls(path, stored, created=old.get("created") or _now(), step=int(old.get("step") or 0))
            writer._load_metrics()
        writer._record_provenance()
        writer._write_status("running")
        return writer

    def _record_provenance(self) -> None:
        """Append the executed notebook that opened this run (from ``NOTEBOOK_ENV``), once per notebook."""
        notebook = os.environ.get(NOTEBOOK_ENV)
        if not notebook:
            return
        path = self.path / "provenance.json"
        producers = _read_dict(path).get("notebooks", [])
        if not isinstance(producers, list):
            producers = []
        if all(p.get("path") != notebook for p in producers if isinstance(p, dict)):
            producers.append({"path": notebook, "name": Path(notebook).stem, "time": _now()})
        _write_json(path, {"notebooks": producers})

    # -- metrics

    def _load_metrics(self) -> None:
        df = _read_metrics(self.path / "metrics.csv")
        self._names = {c: None for c in df.columns if c != "step"}
        for record in df.to_dict("records"):
            step = int(record.pop("step"))
            self._rows[step] = {k: float(v) for k, v in record.items() if not pd.isna(v)}
        if self._rows:
            self._step = max(self._step, *self._rows)

    def log(self, step: int, metrics: Mapping[str, float] | None = None, /, **kwargs: float) -> None:
        """Buffer metrics for ``step``, given as a dict, as keywords, or both."""
        self.log_metrics(step, {**(metrics or {}), **kwargs})

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer metrics for ``step``; several calls for one step merge into one row."""
        step = _check_step(step)
        values = {}
        for name, value in metrics.items():
            if not isinstance(name, str) or not name or name == "step":
                raise ValueError(f"metric name {name!r} is not allowed: use a non-empty str but 'step'")
            values[name] = float(value)
        if not values:
            return
        self._names.update(dict.fromkeys(values))
        self._rows.setdefault(step, {}).update(values)
        self._step = max(self._step, step)

    def truncate_metrics(self, after_step: int) -> None:
        """Drop buffered rows with step > ``after_step``, e.g. when resuming from an earlier checkpoint."""
        after_step = operator.index(after_step)
        self._rows = {s: row for s, row in self._rows.items() if s <= after_step}
        self._step = max(0, min(self._step, after_step))

    def _write_metrics(self) -> None:
        records = [{"step": s, **self._rows[s]} for s in sorted(self._rows)]
        df = pd.DataFrame.from_records(records, columns=["step", *self._names])
        data = df.to_csv(index=False).encode()
        _atomic_write(self.path / "metrics.csv", lambda fh: fh.write(data))

    def _write_status(self, status: str, error: str | None = None) -> None:
        self._status = status
        state = {"status": status, "created": self._created, "updated": _now(), "step": self._step}
        _write_json(self.path / "status.json", {**state, "error": error})

    def flush(self) -> None:
        """Rewrite metrics.csv and status.json (with the last step)."""
        self._write_metrics()
        self._write_status(self._status)

    # -- other files

    def save_snapshot(self, step: int, arrays: Mapping[str, Any]) -> Path:
        """Save a dict of arrays as ``snapshots/step_XXXXXXXX.npz``.

        Raises:
            TypeError: An array has dtype object, which could only be stored by pickling.
        """
        step = _check_step(step)
        data = {}
        for key, value in arrays.items():
            if hasattr(value, "detach"):  # torch tensors, possibly requiring grad or on a GPU
                value = value.detach().cpu().numpy()
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise TypeError(f"snapshot array {key!r} has dtype object, which only pickle could store")
            data[key] = arr
        path = self.path / "snapshots" / f"step_{step:08d}.npz"
        _atomic_write(path, lambda fh: np.savez(fh, allow_pickle=False, **data))
        return path

    def save_table(self, name: str, df: pd.DataFrame) -> Path:
        """Save ``df`` as ``tables/<name>.parquet``; ``name`` must match the run id pattern."""
        path = self.path / "tables" / f"{_check_name(name, 'name')}.parquet"
        _atomic_write(path, lambda fh: df.to_parquet(fh))
        return path

    def artifact_path(self, name: str) -> Path:
        """Path for a free-form file ``artifacts/<name>``; the folder is created, the file is not."""
        path = self.path / "artifacts" / _check_name(name, "name")
        path.parent.mkdir(exist_ok=True)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` to ``artifacts/<name>.json`` (``.json`` added when missing)."""
        path = self.artifact_path(_json_name(name))
        _write_json(path, obj)
        return path

    def save_checkpoint(self, state: Mapping[str, Any]) -> Path:
        """Save tensors / python scalars / nested dicts as ``checkpoint.pt``."""
        import torch  # deferred so that readers and dashboards never pay for importing torch

        path = self.path / "checkpoint.pt"
        _atomic_write(path, lambda fh: torch.save(dict(state), fh))
        return path

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Load ``checkpoint.pt`` on the CPU with ``weights_only=True``; None when there is none."""
        import torch

        path = self.path / "checkpoint.pt"
        if not path.is_file():
            return None
        return torch.load(path, weights_only=True, map_location="cpu")

    # -- end of run

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Flush, write summary.json, then mark the run complete."""
        self._write_metrics()
        _write_json(self.path / "summary.json", dict(summary))
        # Status last, so a reader never sees "complete" before the summary exists.
        self._write_status("complete")

    def fail(self, error: str) -> None:
        """Flush and mark the run failed with ``error``."""
        self._write_metrics()
        self._write_status("failed", str(error))

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            if self._status == "running":
                self.flush()
            return
        # Interrupted runs are marked failed too: RunWriter.create(..., resume=True) picks them up again.
        self.fail("interrupted" if issubclass(exc_type, KeyboardInterrupt) else f"{exc_type.__name__}: {exc}")


# --------------------------------------------------------------------------------------------- reader


class Run:
    """Read-only view of a run folder; constructing one reads nothing.

    Attributes:
        path: The run folder.
        run_id: The folder name.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.run_id = self.path.name
        self._config: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, status={self.status!r})"

    def _load_config(self) -> dict[str, Any] | None:
        # Only a successful read is cached: a run being created may not have its config yet.
        if self._config is None:
            config = _read_json(self.path / "config.json")
            if isinstance(config, dict):
                self._config = config
        return self._config

    @property
    def config(self) -> dict[str, Any]:
        """The stored config; empty when config.json is missing or unreadable."""
        return self._load_config() or {}

    def _status_dict(self) -> dict[str, Any]:
        return _read_dict(self.path / "status.json")

    @property
    def status(self) -> str:
        """``running``, ``complete``, ``failed``, or ``invalid`` when status or config is unreadable."""
        status = self._status_dict().get("status")
        return status if status in STATUSES and self._load_config() is not None else "invalid"

    @property
    def is_complete(self) -> bool:
        """Whether the run finished."""
        return self.status == "complete"

    @property
    def notebooks(self) -> list[dict[str, str]]:
        """Executed notebooks that wrote to this run: ``[{"path", "name", "time"}]``, oldest first."""
        producers = _read_dict(self.path / "provenance.json").get("notebooks", [])
        return [p for p in producers if isinstance(p, dict)] if isinstance(producers, list) else []

    @property
    def created(self) -> str:
        """ISO creation time (UTC), or ``""`` when unknown."""
        return str(self._status_dict().get("created") or "")

    @property
    def step(self) -> int:
        """Last step recorded in status.json."""
        return int(self._status_dict().get("step") or 0)

    @property
    def error(self) -> str | None:
        """Error of a failed run."""
        return self._status_dict().get("error")

    @property
    def metrics(self) -> pd.DataFrame:
        """Wide metrics table: ``step`` plus one column per metric (NaN where not logged)."""
        return _read_metrics(self.path / "metrics.csv")

    @property
    def snapshot_steps(self) -> list[int]:
        """Sorted steps that have a snapshot."""
        folder = self.path / "snapshots"
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _SNAPSHOT_RE.fullmatch(p.name)))

    def snapshot(self, step: int) -> dict[str, np.ndarray]:
        """Arrays saved at ``step``.

        Raises:
            ValueError: No snapshot at ``step``; the message lists the available steps.
        """
        path = self.path / "snapshots" / f"step_{int(step):08d}.npz"
        if not path.is_file():
            raise ValueError(
                f"no snapshot at step {step} in run {self.run_id!r}; available steps: {self.snapshot_steps}"
            )
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json of a complete run; empty otherwise."""
        return _read_dict(self.path / "summary.json") if self.is_complete else {}

    @property
    def tables(self) -> list[str]:
        """Sorted names of saved tables."""
        folder = self.path / "tables"
        if not folder.is_dir():
            return []
        return sorted(
            p.stem for p in folder.glob("*.parquet") if not p.name.startswith(_TMP_PREFIX) and p.is_file()
        )

    def table(self, name: str) -> pd.DataFrame:
        """Load table ``name``.

        Raises:
            ValueError: No such table; the message lists the available ones.
        """
        available = self.tables
        if name not in available:
            raise ValueError(f"no table name {name!r} in run {self.run_id!r}; available: {available}")
        return pd.read_parquet(self.path / "tables" / f"{name}.parquet")

    def artifact_path(self, name: str) -> Path:
        """Path of ``artifacts/<name>`` (which may not exist)."""
        return self.path / "artifacts" / _check_name(name, "name")

    def read_json(self, name: str) -> Any:
        """Read ``artifacts/<name>.json`` (``.json`` added when missing)."""
        return json.loads(self.artifact_path(_json_name(name)).read_text())


# --------------------------------------------------------------------------------------------- queries


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Every folder under the root named like a run id, oldest first, whatever its status."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    runs = [Run(p) for p in base.iterdir() if p.is_dir() and _NAME_RE.fullmatch(p.name)]
    return sorted(runs, key=lambda run: (run.created, run.run_id))


def load_run(path_or_id: str | Path, root: str | Path | None = None) -> Run:
    """Open a run by id (a ``str`` matching the run id pattern, looked up under the root) or by folder path.

    Raises:
        FileNotFoundError: The run folder does not exist.
    """
    if isinstance(path_or_id, str) and _NAME_RE.fullmatch(path_or_id):
        base = runs_root(root)
        path = _run_dir(base, path_or_id)
        if not path.is_dir():
            raise FileNotFoundError(f"run_id {path_or_id!r} not found under runs root {base.resolve()}")
        return Run(path)
    path = Path(path_or_id).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder at {path} (run_id {path.name!r})")
    return Run(path)


def runs_table(root: str | Path | None = None) -> pd.DataFrame:
    """One row per run: run_id, status, created, scalar config keys (``loss.name``), ``summary.*`` keys."""
    rows = []
    for run in list_runs(root):
        row: dict[str, Any] = {"run_id": run.run_id, "status": run.status, "created": run.created}
        for key, value in _flatten(run.config).items():
            if _is_scalar(value):
                # Keep config keys from overwriting the fixed columns or the summary ones.
                clash = key in row or key.startswith("summary.")
                row[f"config.{key}" if clash else key] = value
        for key, value in _flatten(run.summary).items():
            if _is_scalar(value):
                row[f"summary.{key}"] = value
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["run_id", "status", "created"])
