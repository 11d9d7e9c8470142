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
    writer.lock                   pid, host and start of the process writing the run (see ``.lock``)

Every file is written to a ``.tmp-*`` sibling, fsynced and renamed over its target, so a killed process
leaves the old file or the new one, never a torn one. Readers skip ``.tmp-*`` names; the next writer of
the run deletes the ones a killed process left.

One process writes a run at a time: ``RunWriter.create`` takes the run's writer lock and a second
process gets a ``RunLockedError`` naming the holder. ``Run.status`` reads ``stopped`` for a run whose
status.json says ``running`` but whose writer is gone (killed), so a dead run never shows as running.

Readers treat a damaged file as damaged (``.files``): a warning naming it where a default can stand in,
a ``DamagedFileError`` (a ``ValueError``) where not, never a traceback from deep inside a parser.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import re
import secrets
import socket
import time
import warnings
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd

from workbench.store import lock as _lock
from workbench.store.files import (
    TMP_PREFIX,
    DamagedFileError,
    DamagedFileWarning,
    atomic_write,
    damaged_message,
    empty_metrics,
    inside,
    read_json,
    read_metrics,
    remove_stale_tmp,
    warn_damaged,
)
from workbench.store.lock import RunLockedError

__all__ = [
    "NOTEBOOK_ENV",
    "RUN_ID_PATTERN",
    "RUN_STATES",
    "STATUSES",
    "CorruptCheckpointError",
    "DamagedFileError",
    "DamagedFileWarning",
    "Run",
    "RunLockedError",
    "RunWriter",
    "config_run_id",
    "data_home",
    "list_runs",
    "load_run",
    "new_run_id",
    "runs_root",
    "runs_table",
]

# The notebook runner sets this to the executed notebook's path; every run a notebook opens records it.
NOTEBOOK_ENV = "WORKBENCH_NOTEBOOK"
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
STATUSES = ("running", "complete", "failed")
#: What ``Run.status`` answers: a stored status, ``stopped`` (stored "running", writer gone) or ``invalid``.
RUN_STATES = (*STATUSES, "stopped", "invalid")

# fullmatch, because "$" alone would also accept a trailing newline.
_NAME_RE = re.compile(RUN_ID_PATTERN)
_SNAPSHOT_RE = re.compile(r"step_(\d{8,})\.npz")
_TMP_PREFIX = TMP_PREFIX
# Readers (the dashboard) write caches under cache/ without the writer lock: their fresh temp files stay.
_KEEP_TMP = {"cache": 600.0}


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


# Kept under its old name: the dashboard's caches (workbench.viz.projection) write through it.
_atomic_write = atomic_write


class CorruptCheckpointError(DamagedFileError):
    """``checkpoint.pt`` cannot be loaded; the message names it and says how to start the run afresh."""


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=2, default=_json_default) + "\n").encode()
    atomic_write(path, lambda fh: fh.write(data))


def _read_json(path: Path) -> Any:
    """Parsed JSON, or None when the file is missing or unreadable (quietly: the writer's own reads)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def _read_dict(path: Path) -> dict[str, Any]:
    obj = _read_json(path)
    return obj if isinstance(obj, dict) else {}


def _read_metrics(path: Path) -> pd.DataFrame:
    return read_metrics(path)


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


def _config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)

    def canon(value: Any) -> str:
        # Compare JSON text, not values, so a NaN in the config still equals itself.
        return json.dumps(value, sort_keys=True)

    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or canon(a[k]) != canon(b[k]))


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _as_step(status: Mapping[str, Any]) -> int:
    """The step of a status.json, 0 when missing or not a whole number >= 0 (a damaged file)."""
    value = status.get("step")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _json_name(name: str) -> str:
    return name if name.endswith(".json") else f"{name}.json"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# --------------------------------------------------------------------------------------------- writer


class RunWriter:
    """Writes one run folder. Make one with ``RunWriter.create``, which takes the run's writer lock.

    The lock is held until :meth:`finish`, :meth:`fail`, :meth:`close`, the end of a ``with`` block or
    the writer's garbage collection; a write after that takes it again. A newer writer of the same run
    in the same process takes the lock over, and writes through the older one then raise
    ``RunLockedError``.

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
        self._lock: _lock.RunLock | None = None

    @classmethod
    def create(
        cls,
        config: Mapping[str, Any],
        run_id: str | None = None,
        root: str | Path | None = None,
        prefix: str = "run",
        resume: bool = True,
    ) -> RunWriter:
        """Create a run folder, or reopen an existing one, holding its writer lock.

        Args:
            config: JSON-serialisable resolved config.
            run_id: Folder name; a fresh ``new_run_id(prefix)`` when None.
            root: Runs root, see ``runs_root``.
            prefix: Readable part of a generated run id.
            resume: Reopen an existing run (its stored config must equal ``config``) instead of refusing.

        Raises:
            RunLockedError: Another live process is writing the run (a ``ValueError``; one line naming it).
            DamagedFileError: The stored config.json cannot be read, so the run cannot be resumed.
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
        if exists and not path.is_dir():
            raise ValueError(f"run_id {path.name!r}: {path} exists and is not a folder")
        if exists and not resume:
            raise ValueError(f"run_id {path.name!r} already exists under {base}; pass resume=True to reopen")
        held = _lock.RunLock.acquire(path)
        # Nothing is written before the lock is held: a second writer leaves the run untouched.
        old = _read_dict(path / "status.json")
        config_path = path / "config.json"
        # A folder without config.json was left by a crash right after mkdir: start it afresh.
        if not exists or not config_path.exists():
            _write_json(config_path, normalised)
            writer = cls(path, normalised, created=_now())
        else:
            stored = _read_json(config_path)
            if not isinstance(stored, dict):
                raise DamagedFileError(
                    damaged_message(
                        config_path,
                        "not a JSON object",
                        f"run {path.name!r} cannot be resumed; delete its folder or choose another run_id",
                    )
                )
            diff = _config_diff(stored, normalised)
            if diff:
                keys = ", ".join(diff)
                raise ValueError(f"config differs from the stored one of run {path.name!r} in keys: {keys}")
            writer = cls(path, stored, created=_as_str(old.get("created")) or _now(), step=_as_step(old))
            writer._load_metrics()
        writer._take(held)
        previous = held.previous
        if old.get("status") == "running" and previous is not None and previous != held.info:
            warnings.warn(
                f"run {path.name!r}: taking over from {previous.describe()}, which stopped without "
                f"finishing (killed?); resuming after step {writer._step}",
                RuntimeWarning,
                stacklevel=2,
            )
        remove_stale_tmp(path, _KEEP_TMP)
        writer._record_provenance()
        writer._write_status("running")
        return writer

    # -- the writer lock

    def _take(self, held: _lock.RunLock) -> None:
        self._lock = held
        held.owner = self

    def _check_writer(self) -> None:
        """Make sure this writer holds the run's lock (taking it again after finish/fail/close)."""
        if self._lock is not None and self._lock.held and self._lock.owner is self:
            return
        if self._lock is not None and self._lock.held:
            raise RunLockedError(
                f"run {self.run_id!r} was reopened by a newer RunWriter in this process; "
                "write through that one"
            )
        self._take(_lock.RunLock.acquire(self.path))

    def close(self) -> None:
        """Release the writer lock (kept in the file as the last writer's record); writes retake it."""
        if self._lock is not None and self._lock.owner is self:
            self._lock.release()
        self._lock = None

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
        self._check_writer()
        records = [{"step": s, **self._rows[s]} for s in sorted(self._rows)]
        df = pd.DataFrame.from_records(records, columns=["step", *self._names])
        data = df.to_csv(index=False).encode()
        _atomic_write(self.path / "metrics.csv", lambda fh: fh.write(data))

    def _write_status(self, status: str, error: str | None = None) -> None:
        self._check_writer()
        self._status = status
        state = {"status": status, "created": self._created, "updated": _now(), "step": self._step}
        writer = {"pid": os.getpid(), "host": socket.gethostname()}
        _write_json(self.path / "status.json", {**state, "error": error, "writer": writer})

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
        self._check_writer()
        _atomic_write(path, lambda fh: np.savez(fh, allow_pickle=False, **data))
        return path

    def save_table(self, name: str, df: pd.DataFrame) -> Path:
        """Save ``df`` as ``tables/<name>.parquet``; ``name`` must match the run id pattern."""
        path = self.path / "tables" / f"{_check_name(name, 'name')}.parquet"
        self._check_writer()
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
        self._check_writer()
        _write_json(path, obj)
        return path

    def save_checkpoint(self, state: Mapping[str, Any]) -> Path:
        """Save tensors / python scalars / nested dicts as ``checkpoint.pt``."""
        import torch  # deferred so that readers and dashboards never pay for importing torch

        path = self.path / "checkpoint.pt"
        self._check_writer()
        _atomic_write(path, lambda fh: torch.save(dict(state), fh))
        return path

    def load_checkpoint(self) -> dict[str, Any] | None:
        """Load ``checkpoint.pt`` on the CPU with ``weights_only=True``; None when there is none.

        Raises:
            CorruptCheckpointError: The file exists but does not load (truncated, overwritten, not a
                checkpoint); the message names it and says how to train the run again from the start.
        """
        import torch

        path = self.path / "checkpoint.pt"
        if not path.exists() and not path.is_symlink():
            return None
        advice = (
            f"restart the run from step 0 (the trainer's --restart, or RunWriter.restart()) or delete "
            f"the file to train run {self.run_id!r} again"
        )
        if not path.is_file() or not inside(path, self.path):
            raise CorruptCheckpointError(damaged_message(path, "not a file inside the run folder", advice))
        if not zipfile.is_zipfile(path):  # torch.save writes a zip; torch.load's own error misleads here
            raise CorruptCheckpointError(
                damaged_message(path, "not a zip archive: truncated or overwritten", advice)
            )
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except MemoryError:
            raise
        except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, zip errors ...
            first = re.split(r"(?<=[.!?])\s", str(err).strip(), maxsplit=1)[0][:200]
            raise CorruptCheckpointError(
                damaged_message(path, f"{type(err).__name__}: {first}", advice)
            ) from None
        if not isinstance(state, dict):
            raise CorruptCheckpointError(
                damaged_message(path, f"it holds a {type(state).__name__}, not a dict", advice)
            )
        return state

    def restart(self) -> None:
        """Forget everything trained so far: checkpoint, snapshots, summary, caches and metrics.

        For a run whose checkpoint is damaged (:class:`CorruptCheckpointError`): the config, the
        creation time and the provenance stay, and the run trains again from step 0.
        """
        self._check_writer()
        for name in ("checkpoint.pt", "summary.json"):
            (self.path / name).unlink(missing_ok=True)
        for sub in ("snapshots", "cache"):
            for top, _dirs, files in os.walk(self.path / sub, topdown=False):
                for name in files:
                    Path(top, name).unlink(missing_ok=True)
                for name in _dirs:
                    with contextlib.suppress(OSError):
                        Path(top, name).rmdir()
        self._rows, self._names, self._step = {}, {}, 0
        self._write_metrics()
        self._write_status("running")

    # -- end of run

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Flush, write summary.json, then mark the run complete."""
        self._write_metrics()
        _write_json(self.path / "summary.json", dict(summary))
        # Status last, so a reader never sees "complete" before the summary exists.
        self._write_status("complete")
        self.close()

    def fail(self, error: str) -> None:
        """Flush and mark the run failed with ``error``."""
        self._write_metrics()
        self._write_status("failed", str(error))
        self.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        superseded = self._lock is not None and self._lock.held and self._lock.owner is not self
        try:
            if superseded:
                return  # a newer writer of this run (same process) owns the files now
            if exc_type is None:
                if self._status == "running":
                    self.flush()
                return
            # Interrupted runs are marked failed too: RunWriter.create(..., resume=True) picks them up.
            interrupted = issubclass(exc_type, KeyboardInterrupt)
            message = "interrupted" if interrupted else f"{exc_type.__name__}: {exc}"
            try:
                self.fail(message)
            except RunLockedError:
                pass  # another process writes the run now; the exception in flight says what went wrong
        finally:
            self.close()


# --------------------------------------------------------------------------------------------- reader


_ADVICE = {
    "config.json": "the run's config is unknown and it cannot be resumed; delete the run folder, or train "
    "again under another run_id",
    "status.json": "the run shows as invalid; train the same config again under this run_id to resume it",
    "summary.json": "the run's summary is not shown; train the same config again to rewrite it",
    "provenance.json": "the notebooks that wrote the run are not shown",
    "snapshot": "that checkpoint's embeddings cannot be shown; delete the file, or train the run again",
    "table": "that table cannot be shown; delete the file and rerun what wrote it",
    "checkpoint.pt": "the run cannot resume from it; restart it from step 0 (the trainer's --restart) or "
    "delete the file",
    "artifact": "delete the file and rerun what wrote it",
    "metrics.csv": "the run's metrics are not shown; delete the link",
}
_OUTSIDE = "it is a symbolic link to a place outside the run folder, which is never read"


class Run:
    """Read-only view of a run folder; constructing one reads nothing.

    Every read treats a damaged file as damaged (see ``workbench.store.files``): a
    ``DamagedFileWarning`` and a default where one can stand in, a ``DamagedFileError`` where not.
    :meth:`problems` lists every damaged file at once. Files that are symbolic links leading outside
    the run folder are treated as damaged and never read.

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

    def _file(self, *parts: str, report: Any = None) -> Path | None:
        """``path/parts`` when reading it stays inside the run folder; None (and a warning) otherwise."""
        path = self.path.joinpath(*parts)
        if not (path.is_symlink() or path.parent.is_symlink()) or inside(path, self.path):
            return path
        advice = _ADVICE.get(parts[-1], _ADVICE.get(parts[0].rstrip("s"), "delete the link"))
        warn_damaged(path, _OUTSIDE, advice, report)
        return None

    def _json(self, name: str, report: Any = None) -> Any:
        path = self._file(name, report=report)
        return None if path is None else read_json(path, _ADVICE[name], report)

    def _load_config(self) -> dict[str, Any] | None:
        # Only a successful read is cached: a run being created may not have its config yet.
        if self._config is None:
            config = self._json("config.json")
            if isinstance(config, dict):
                self._config = config
        return self._config

    @property
    def config(self) -> dict[str, Any]:
        """The stored config; empty when config.json is missing or unreadable."""
        return self._load_config() or {}

    def _status_dict(self) -> dict[str, Any]:
        status = self._json("status.json")
        return status if isinstance(status, dict) else {}

    @property
    def writer(self) -> _lock.LockInfo | None:
        """The live process writing this run (pid, host, start), or None when no process is."""
        return _lock.holder(self.path.resolve())

    @property
    def status(self) -> str:
        """One of :data:`RUN_STATES`.

        ``running`` only while a process holds the run's writer lock; ``stopped`` when status.json says
        running but that process is gone (killed: train the same config again to resume);
        ``invalid`` when status.json or config.json is missing or unreadable.
        """
        status = self._status_dict().get("status")
        if status not in STATUSES or self._load_config() is None:
            return "invalid"
        if status == "running" and self.writer is None:
            return "stopped"
        return status

    @property
    def status_text(self) -> str:
        """The status for people: ``running (pid 123)``, ``stopped at step 40``, ``complete``, ..."""
        status = self.status
        if status == "running":
            writer = self.writer
            return f"running ({writer.describe().split(' since ')[0]})" if writer else "running"
        if status == "stopped":
            return f"stopped at step {self.step}"
        return status

    @property
    def is_complete(self) -> bool:
        """Whether the run finished."""
        return self.status == "complete"

    @property
    def notebooks(self) -> list[dict[str, str]]:
        """Executed notebooks that wrote to this run: ``[{"path", "name", "time"}]``, oldest first."""
        provenance = self._json("provenance.json")
        producers = provenance.get("notebooks", []) if isinstance(provenance, dict) else []
        return [p for p in producers if isinstance(p, dict)] if isinstance(producers, list) else []

    @property
    def created(self) -> str:
        """ISO creation time (UTC), or ``""`` when unknown."""
        return _as_str(self._status_dict().get("created"))

    @property
    def step(self) -> int:
        """Last step recorded in status.json (0 when unknown)."""
        return _as_step(self._status_dict())

    @property
    def error(self) -> str | None:
        """Error of a failed run."""
        error = self._status_dict().get("error")
        return None if error is None else str(error)

    @property
    def metrics(self) -> pd.DataFrame:
        """Wide metrics table: ``step`` plus one column per metric (NaN where not logged or damaged)."""
        path = self._file("metrics.csv")
        return empty_metrics() if path is None else read_metrics(path)

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
            DamagedFileError: The snapshot file cannot be read.
        """
        name = f"step_{int(step):08d}.npz"
        path = self.path / "snapshots" / name
        if not path.is_file():
            raise ValueError(
                f"no snapshot at step {step} in run {self.run_id!r}; available steps: {self.snapshot_steps}"
            )
        if not inside(path, self.path):
            raise DamagedFileError(damaged_message(path, _OUTSIDE, _ADVICE["snapshot"]))
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except MemoryError:
            raise
        except Exception as err:  # BadZipFile, zlib.error, EOFError, ValueError (pickle), ...
            raise DamagedFileError(
                damaged_message(path, f"{type(err).__name__}: {err}", _ADVICE["snapshot"])
            ) from None

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json of a complete run; empty otherwise."""
        if not self.is_complete:
            return {}
        summary = self._json("summary.json")
        return summary if isinstance(summary, dict) else {}

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
            DamagedFileError: The table file cannot be read.
        """
        available = self.tables
        if name not in available:
            raise ValueError(f"no table name {name!r} in run {self.run_id!r}; available: {available}")
        path = self.path / "tables" / f"{name}.parquet"
        if not inside(path, self.path):
            raise DamagedFileError(damaged_message(path, _OUTSIDE, _ADVICE["table"]))
        try:
            return pd.read_parquet(path)
        except MemoryError:
            raise
        except Exception as err:  # pyarrow's ArrowInvalid, OSError, ...
            raise DamagedFileError(
                damaged_message(path, f"{type(err).__name__}: {err}", _ADVICE["table"])
            ) from None

    def artifact_path(self, name: str) -> Path:
        """Path of ``artifacts/<name>`` (which may not exist)."""
        return self.path / "artifacts" / _check_name(name, "name")

    def read_json(self, name: str) -> Any:
        """Read ``artifacts/<name>.json`` (``.json`` added when missing).

        Raises:
            FileNotFoundError: There is no such file.
            DamagedFileError: The file is not JSON or leads outside the run folder.
        """
        path = self.artifact_path(_json_name(name))
        if path.exists() and not inside(path, self.path):
            raise DamagedFileError(damaged_message(path, _OUTSIDE, _ADVICE["artifact"]))
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as err:
            raise DamagedFileError(
                damaged_message(path, f"{type(err).__name__}: {err}", _ADVICE["artifact"])
            ) from None

    def problems(self) -> list[str]:
        """One message per damaged file of the run (what is wrong, what to do); empty when none.

        Cheap: JSON files and metrics.csv are parsed, snapshots, tables and the checkpoint only have
        their container checked (zip directory, parquet magic bytes), nothing is decoded.
        """
        found: list[str] = []
        for name in ("config.json", "status.json", "summary.json", "provenance.json"):
            if self._file(name, report=found.append) is not None:
                self._json(name, report=found.append)
        path = self._file("metrics.csv", report=found.append)
        if path is not None:
            read_metrics(path, report=found.append)
        checks = [(self.path / "snapshots" / f"step_{s:08d}.npz", "snapshot") for s in self.snapshot_steps]
        checks += [(self.path / "tables" / f"{t}.parquet", "table") for t in self.tables]
        if (self.path / "checkpoint.pt").exists():
            checks.append((self.path / "checkpoint.pt", "checkpoint.pt"))
        for path, kind in checks:
            if not inside(path, self.path):
                found.append(damaged_message(path, _OUTSIDE, _ADVICE[kind]))
            elif not path.is_file():
                found.append(damaged_message(path, "it is not a file", _ADVICE[kind]))
            elif (reason := _container_problem(path)) is not None:
                found.append(damaged_message(path, reason, _ADVICE[kind]))
        return found


def _container_problem(path: Path) -> str | None:
    """Why ``path`` is not a readable zip (.npz, .pt) or parquet container, or None when it looks fine."""
    try:
        if path.suffix == ".parquet":
            with open(path, "rb") as fh:
                head = fh.read(4)
                fh.seek(-4, os.SEEK_END)
                tail = fh.read(4)
            return None if head == tail == b"PAR1" else "not a parquet file (bad magic bytes)"
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
        return None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        return f"{type(err).__name__}: {err}"


# --------------------------------------------------------------------------------------------- queries


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Every folder under the root named like a run id, oldest first, whatever its status."""
    base = runs_root(root)
    if not base.is_dir():
        return []
    # Symbolic links are skipped: a link could lead anywhere, and a run's folder is never one.
    runs = [
        Run(p) for p in base.iterdir() if _NAME_RE.fullmatch(p.name) and not p.is_symlink() and p.is_dir()
    ]
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
    """One row per run: run_id, status, writer, created, scalar config keys (``loss.name``), ``summary.*``.

    ``status`` is ``Run.status`` (``stopped`` for a run whose process is gone); ``writer`` is
    ``pid N`` (``pid N on host H`` elsewhere) for a run being written, else empty.
    """
    rows = []
    for run in list_runs(root):
        status = run.status
        writer = run.writer if status == "running" else None
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "status": status,
            "writer": writer.describe().split(" since ")[0] if writer else "",
            "created": run.created,
        }
        for key, value in _flatten(run.config).items():
            if _is_scalar(value):
                # Keep config keys from overwriting the fixed columns or the summary ones.
                clash = key in row or key.startswith("summary.")
                row[f"config.{key}" if clash else key] = value
        for key, value in _flatten(run.summary).items():
            if _is_scalar(value):
                row[f"summary.{key}"] = value
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["run_id", "status", "writer", "created"])
