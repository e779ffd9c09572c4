"""The index's single-writer lock: an advisory ``flock`` on ``write.lock``.

The kernel releases the lock when the holder exits or is killed, so a crashed writer never
leaves a stale lock behind. Readers never take it.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from colxm.errors import WriterLockedError

LOCK_NAME = "write.lock"


class WriterLock:
    """Non-blocking exclusive lock on ``<index>/write.lock``; records the holder's pid."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise WriterLockedError(
                f"index {self.path.parent} is being written by {who}; wait for it to finish "
                "(only one writer at a time; searching needs no lock)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
