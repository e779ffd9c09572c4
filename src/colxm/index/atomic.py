"""Durable file primitives: write-to-temp, fsync, rename, fsync the folder.

Every file an index refers to is written through these helpers so that a crash at any instant
leaves either the old file or the complete new one, never a torn one (the Lucene/SQLite way).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


def fsync_file(path: str | os.PathLike) -> None:
    """Flush one file's data to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (new names, renames) to stable storage."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under ``root`` (files first, then their folders)."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(os.path.join(folder, name))
        fsync_dir(folder)


def replace_file(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Atomically move a complete, already fsync'ed file into place and persist the rename."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the complete new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    replace_file(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a .npy file and fsync it (callers rename whole folders or files into place)."""
    with open(path, "wb") as f:
        a = np.asarray(array)
        np.save(f, a if a.ndim == 0 else np.ascontiguousarray(a), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def file_record(path: str | os.PathLike, root: str | os.PathLike) -> dict[str, Any]:
    """The manifest's record of one file: path relative to the index root, size, sha256."""
    p = Path(path)
    return {
        "path": p.relative_to(root).as_posix(),
        "size": p.stat().st_size,
        "sha256": sha256_file(p),
    }


_RENAME_EXCHANGE = 2


def exchange_dirs(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Atomically swap two folders (Linux renameat2 RENAME_EXCHANGE). False when unsupported.

    Used to overwrite an existing index with a freshly built one without a moment where the
    path holds neither: the old index is complete until the swap, the new one right after.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        return False
    fsync_dir(Path(a).parent)
    if Path(b).parent != Path(a).parent:
        fsync_dir(Path(b).parent)
    return True
