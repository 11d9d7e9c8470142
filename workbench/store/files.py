"""File io of the run store: atomic writes, and reads that treat a damaged file as damaged.

Writes go to a ``.tmp-*`` sibling, are fsynced and renamed over the target, with the permissions a
plain ``open`` would give (``0666`` less the umask; ``mkstemp`` alone would leave them ``0600``).

Reads never raise on a damaged file where a default can stand in (a JSON file that does not parse, a
``metrics.csv`` with a text cell or that is a folder): they return the default and say so with a
:class:`DamagedFileWarning` naming the file and what to do. Where nothing can stand in (a snapshot,
a table), the reader raises :class:`DamagedFileError`, a ``ValueError`` with the same kind of message.
A file that is a symbolic link pointing outside its run folder is never followed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pandas as pd

TMP_PREFIX = ".tmp-"


class DamagedFileError(ValueError):
    """A file of the run store exists but cannot be read; the message names it and says what to do."""


class DamagedFileWarning(UserWarning):
    """A damaged file of the run store was read as empty or partly; the message names it."""


def damaged_message(path: Path, reason: str, advice: str) -> str:
    """``<path> is damaged (<reason>); <advice>``: one line for warnings and errors."""
    reason = " ".join(str(reason).split())[:300]
    return f"{path} is damaged ({reason}); {advice}"


Report = Callable[[str], object]


def warn_damaged(path: Path, reason: str, advice: str, report: Report | None = None) -> str:
    """Say that ``path`` is damaged: to ``report`` when given, else as a :class:`DamagedFileWarning`."""
    message = damaged_message(path, reason, advice)
    if report is not None:
        report(message)
    else:
        warnings.warn(message, DamagedFileWarning, stacklevel=3)
    return message


# --------------------------------------------------------------------------------------------- writing


def _umask() -> int:
    # /proc is read-only; os.umask(0) would briefly loosen the mask for every other thread.
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through a fsynced ``.tmp-*`` sibling renamed over it (old or new, never torn)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A failed write cleans up after itself; only a hard kill can leave a .tmp- file (swept by the
        # next writer of the run, skipped by readers).
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_tmp(folder: Path, keep_younger_than: dict[str, float]) -> int:
    """Delete ``.tmp-*`` files a killed process left under ``folder``; returns how many.

    Args:
        folder: A run folder whose writer lock the caller holds (so no writer of it is mid-write).
        keep_younger_than: ``{subfolder: seconds}``: files under these subfolders are kept while younger
            (readers such as the dashboard write caches there without the lock).
    """
    removed = 0
    now = time.time()
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
        rel = os.path.relpath(top, folder).split(os.sep)[0]
        for name in files:
            if not name.startswith(TMP_PREFIX):
                continue
            path = os.path.join(top, name)
            with contextlib.suppress(OSError):
                if os.path.islink(path) or (
                    rel in keep_younger_than and now - os.lstat(path).st_mtime < keep_younger_than[rel]
                ):
                    continue
                os.unlink(path)
                removed += 1
    return removed


# --------------------------------------------------------------------------------------------- reading


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (symbolic links followed) lies within ``folder``."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def read_json(path: Path, advice: str, report: Report | None = None) -> Any:
    """Parsed JSON; None when missing, or when damaged (said through :func:`warn_damaged`)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        warn_damaged(path, "it is a folder, not a file", advice, report)
    except (OSError, ValueError) as err:  # ValueError covers JSON and UTF-8 errors
        warn_damaged(path, f"{type(err).__name__}: {err}", advice, report)
    return None


def empty_metrics() -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype="int64")})


def read_metrics(path: Path, report: Report | None = None) -> pd.DataFrame:
    """``metrics.csv`` as ``step`` (int64) plus float64 columns; damaged parts dropped with a warning.

    A cell that is not a number becomes NaN, a row whose step is not a whole number >= 0 is dropped,
    an unreadable file (a folder, not CSV, no ``step`` column) reads as no metrics.
    """
    advice = "its rows may be missing; delete the file to drop the run's metrics, or rerun the run"
    try:
        df = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return empty_metrics()
    except IsADirectoryError:
        warn_damaged(path, "it is a folder, not a file", advice, report)
        return empty_metrics()
    except (OSError, ValueError) as err:  # ParserError and UnicodeDecodeError are ValueErrors
        warn_damaged(path, f"{type(err).__name__}: {err}", advice, report)
        return empty_metrics()
    if "step" not in df.columns:
        warn_damaged(path, f"no 'step' column; columns: {list(df.columns)[:10]}", advice, report)
        return empty_metrics()
    numeric = df.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & df.notna()
    if bad.to_numpy().any():
        columns = [str(c) for c in df.columns[bad.any().to_numpy()]]
        row = int(bad.any(axis=1).to_numpy().argmax())
        warn_damaged(
            path,
            f"{int(bad.to_numpy().sum())} cell(s) are not numbers, first in row {row + 1}, "
            f"column(s) {columns[:5]}",
            "those cells are shown as missing; fix or delete the file, or rerun the run",
            report,
        )
    step = numeric["step"]
    whole = step.notna() & (step >= 0) & (step == step.round())
    numeric = numeric[whole.to_numpy()]
    return numeric.astype({"step": "int64", **{c: "float64" for c in numeric.columns if c != "step"}})
