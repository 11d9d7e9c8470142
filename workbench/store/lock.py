"""One writer per run: an advisory ``fcntl.flock`` on ``<run>/writer.lock``, held by the writing process.

The lock file records the holder's pid, host and start time. The kernel drops a flock when its
process dies, however it dies (SIGKILL included), so:

* a second process that wants to write the run finds the lock taken and gets a one-line
  :class:`RunLockedError` naming the holder;
* a lock left behind by a dead process is free: the next writer takes it over (its record is kept
  as :attr:`RunLock.previous`, so the writer can say whom it replaced);
* a reader tells a live run from one whose process is gone by probing the lock (:func:`holder`),
  whatever status.json says.

Within one process the newest writer of a run takes the lock over from an older one (a notebook cell
run twice); :attr:`RunLock.owner` says which writer that is. The lock file is never replaced by a
rename (that would swap the inode under the lock), only rewritten in place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOCK_NAME = "writer.lock"
# A reader's probe holds a shared lock for microseconds; a writer retries that long before giving up.
_ACQUIRE_RETRY_S = 0.5
_HELD: weakref.WeakValueDictionary[str, RunLock] = weakref.WeakValueDictionary()


class RunLockedError(ValueError):
    """Another live process holds the run's writer lock."""


@dataclass(frozen=True)
class LockInfo:
    """Who holds (or last held) a run's writer lock."""

    pid: int | None
    host: str
    started: str

    def describe(self) -> str:
        """``pid 123 on host h since 2026-...`` (the host only when it is not this one)."""
        where = "" if self.host in ("", socket.gethostname()) else f" on host {self.host}"
        since = f" since {self.started[:19].replace('T', ' ')}" if self.started else ""
        return f"pid {self.pid if self.pid is not None else '?'}{where}{since}"

    @classmethod
    def parse(cls, text: str) -> LockInfo | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            host=str(data.get("host") or ""),
            started=str(data.get("started") or ""),
        )


def _read(fd: int) -> LockInfo | None:
    with contextlib.suppress(OSError):
        return LockInfo.parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
    return None


class RunLock:
    """An exclusive flock on ``<folder>/writer.lock``, released by :meth:`release` or garbage collection.

    Attributes:
        folder: The run folder.
        info: This holder's record.
        previous: The record found in the file when the lock was taken (a finished or dead writer), if any.
        owner: The writer object that may write under this lock (a weak reference's target, or None).
    """

    def __init__(self, folder: Path, fd: int, info: LockInfo, previous: LockInfo | None) -> None:
        self.folder = folder
        self.info = info
        self.previous = previous
        self._fd: int | None = fd
        self._owner: weakref.ref | None = None

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    @property
    def owner(self) -> Any:
        return self._owner() if self._owner is not None else None

    @owner.setter
    def owner(self, value: Any) -> None:
        self._owner = weakref.ref(value) if value is not None else None

    @classmethod
    def acquire(cls, folder: Path) -> RunLock:
        """Take the writer lock of ``folder`` (which must exist).

        Returns this process's lock when it already holds it (the caller then becomes its owner).

        Raises:
            RunLockedError: Another live process holds it; the message names the run and the holder.
        """
        key = str(folder)
        mine = _HELD.get(key)
        if mine is not None and mine.held and mine.info.pid == os.getpid():
            return mine
        path = folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        try:
            deadline = time.monotonic() + _ACQUIRE_RETRY_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        other = _read(fd)
                        who = other.describe() if other else "another process"
                        raise RunLockedError(
                            f"run {folder.name!r} is being written by {who} (lock {path}); "
                            "wait for it to finish or stop that process first"
                        ) from None
                    time.sleep(0.01)
                except OSError as err:
                    if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
                    # A file system without flock (some network mounts): record the writer, unguarded.
                    break
            previous = _read(fd)
            info = LockInfo(
                pid=os.getpid(),
                host=socket.gethostname(),
                started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            data = json.dumps({"pid": info.pid, "host": info.host, "started": info.started}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data + b"\n", 0)
        except BaseException:
            os.close(fd)
            raise
        lock = cls(folder, fd, info, previous)
        _HELD[key] = lock
        return lock

    def release(self) -> None:
        """Drop the lock (closing the descriptor drops the flock); the record stays for readers."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
            if _HELD.get(str(self.folder)) is self:
                del _HELD[str(self.folder)]

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter exit module globals may already be gone; the OS drops the lock
            pass


def last_writer(folder: Path) -> LockInfo | None:
    """The record of the last process that took the lock, live or not (None when never locked)."""
    try:
        return LockInfo.parse((folder / LOCK_NAME).read_text(errors="replace"))
    except OSError:
        return None


def holder(folder: Path) -> LockInfo | None:
    """The live process holding ``folder``'s writer lock, or None when nobody does.

    A lock this process holds is answered from memory; otherwise a shared lock is tried and dropped at
    once (it fails exactly when a writer holds the exclusive one).
    """
    mine = _HELD.get(str(folder))
    if mine is not None and mine.held and mine.info.pid == os.getpid():
        return mine.info
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:  # never locked (or not a plain file): nobody holds it
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or LockInfo(pid=None, host="", started="")
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
