"""The optional full-precision tier: a segment's token vectors as they were given to the codec,
float16 [T, dim] in ``vectors.npy`` (same token order as residuals.npy), read by row ranges.

Reads go through ``os.preadv`` on a descriptor opened with the segment, into a caller's buffer:
never a memory map, whose touched pages would count in the process's RSS (the file is 8x the
residuals at 2 bits). The descriptor keeps the file readable after a later commit collects it.
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np

from colxm.errors import IndexFormatError

NAME = "vectors"
DTYPE = np.float16


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a C-order .npy file, without reading its data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise ValueError("Fortran-ordered array")
        return shape, dtype, f.tell()


class FullVectors:
    """Row-range reader of one segment's vectors.npy (thread-safe: positioned reads only)."""

    def __init__(self, path: Path, num_tokens: int, dim: int, where: str = "segment"):
        try:
            shape, dtype, self.offset = read_npy_header(path)
        except (OSError, ValueError, EOFError) as e:
            raise IndexFormatError(f"{where}: {path.name} is not a valid array ({e})") from None
        if shape != (num_tokens, dim) or dtype != DTYPE:
            raise IndexFormatError(f"{where}: {path.name} has shape {shape} {dtype}, expected "
                                   f"({num_tokens}, {dim}) float16")
        self.shape = (num_tokens, dim)
        self.row_bytes = dim * np.dtype(DTYPE).itemsize
        if path.stat().st_size != self.offset + num_tokens * self.row_bytes:
            raise IndexFormatError(f"{where}: {path.name} is truncated")
        self._fd = os.open(path, os.O_RDONLY)
        self._close = weakref.finalize(self, os.close, self._fd)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def read_into(self, start: int, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (C-contiguous float16 [m, dim]) with rows start .. start+m."""
        if not out.flags.c_contiguous or out.dtype != DTYPE:
            raise ValueError("read_into needs a C-contiguous float16 buffer")
        buf = memoryview(out.reshape(-1).view(np.uint8))
        at, pos = self.offset + start * self.row_bytes, 0
        while pos < len(buf):
            got = _pread_into(self._fd, buf[pos:], at + pos)
            if got <= 0:
                raise IndexFormatError("a vectors.npy file ended early; run `colxm verify` on the index")
            pos += got
        return out

    def rows(self, start: int, stop: int) -> np.ndarray:
        """A new float16 array of rows start .. stop."""
        return self.read_into(start, np.empty((stop - start, self.shape[1]), dtype=DTYPE))

    def close(self) -> None:
        self._close()


def _pread_into(fd: int, buf: memoryview, offset: int) -> int:
    if hasattr(os, "preadv"):
        return os.preadv(fd, [buf], offset)
    data = os.pread(fd, len(buf), offset)  # no preadv (e.g. older macOS): one copy more
    buf[: len(data)] = data
    return len(data)
