"""The codec's centroids held in their stored precision: int8 rows with one float32 scale each
(codecs colxm trains) or float16 (as colbert-ai stores them). Search reads only these, never a
float32 copy, so an open index costs a quarter (int8) or half (float16) of the float32 table;
rows come out as float32 bit for bit equal to what the float32 table would hold."""
from __future__ import annotations

import numpy as np
import torch

from colxm.errors import IndexFormatError, InputError

KINDS = ("float16", "int8")


def int8_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 quantisation: (int8 [K, dim], float32 scales [K])."""
    x = np.asarray(x, dtype=np.float32)
    scales = (np.abs(x).max(1) / 127).astype(np.float32)
    q = np.rint(x / np.where(scales > 0, scales, 1)[:, None])
    return np.clip(q, -127, 127).astype(np.int8), scales


def from_int8_rows(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return np.asarray(q, dtype=np.float32) * np.asarray(scales, dtype=np.float32)[:, None]


class CentroidTable:
    """K centroid rows of ``dim`` values: ``values`` int8 with ``scales`` float32 [K], or float16
    with ``scales`` None."""

    def __init__(self, values: np.ndarray, scales: np.ndarray | None = None):
        values = np.ascontiguousarray(values)
        if values.ndim != 2:
            raise IndexFormatError(f"centroids must be 2-D, got shape {values.shape}")
        if values.dtype == np.int8:
            if scales is None or np.asarray(scales).reshape(-1).shape != (values.shape[0],):
                got = 0 if scales is None else np.asarray(scales).size
                raise IndexFormatError(f"int8 centroids need {values.shape[0]} centroid_scales, got {got}; "
                                       "the index is incomplete")
            scales = np.ascontiguousarray(scales, dtype=np.float32).reshape(-1)
        elif values.dtype == np.float16:
            scales = None
        else:
            raise IndexFormatError(f"centroids have dtype {values.dtype}; expected float16 or int8")
        self.values, self.scales = values, scales
        self._values_t = torch.from_numpy(values)
        self._scales_t = None if scales is None else torch.from_numpy(scales)

    @classmethod
    def from_float(cls, centroids: np.ndarray, kind: str) -> "CentroidTable":
        """The table of float centroids stored as ``kind`` ("int8": per-row quantisation, exact for
        centroids already rounded to it; "float16")."""
        if kind not in KINDS:
            raise InputError(f"centroid_dtype must be float16 or int8, got {kind!r}")
        c = np.asarray(centroids, dtype=np.float32)
        if c.ndim != 2:
            raise IndexFormatError(f"centroids must be 2-D, got shape {c.shape}")
        return cls(*int8_rows(c)) if kind == "int8" else cls(c.astype(np.float16))

    @property
    def kind(self) -> str:
        return "int8" if self.scales is not None else "float16"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    def to_float32(self) -> np.ndarray:
        """Every row as float32 [K, dim] (a new array)."""
        if self.scales is not None:
            return from_int8_rows(self.values, self.scales)
        return self.values.astype(np.float32)

    def rows(self, ids: torch.Tensor, out: torch.Tensor | None = None, alloc=None) -> torch.Tensor:
        """float32 rows ``ids`` (int64 tensor) into ``out`` [len(ids), dim], bit for bit
        ``to_float32()[ids]``. ``alloc(name, shape, dtype)`` gives the work buffers (search passes
        its per-thread scratch: no allocation per call; default np.empty). Raises IndexError
        (torch's) for an id outside [0, K)."""
        alloc = alloc or (lambda name, shape, dtype: np.empty(shape, dtype))
        n, dim = ids.shape[0], self.values.shape[1]
        out = torch.empty((n, dim), dtype=torch.float32) if out is None else out
        raw = torch.from_numpy(alloc("centroid_raw", (n, dim), self.values.dtype))
        torch.index_select(self._values_t, 0, ids, out=raw)
        out.copy_(raw)  # an explicit conversion: mixed-dtype in-place ops allocate a copy
        if self._scales_t is not None:
            scales = torch.from_numpy(alloc("centroid_scale", (n, 1), np.float32))
            torch.index_select(self._scales_t, 0, ids, out=scales[:, 0])
            out.mul_(scales)
        return out

    def int8_rows_into(self, ids: torch.Tensor, rows: torch.Tensor, scales: torch.Tensor) -> None:
        """The stored int8 rows ``ids`` into ``rows`` [len(ids), dim] and their scales into
        ``scales`` [len(ids)] (int8 tables only). Raises IndexError/RuntimeError (torch's) for
        an id outside [0, K)."""
        if self._scales_t is None:
            raise InputError("int8_rows_into needs an int8 centroid table; this one is float16")
        torch.index_select(self._values_t, 0, ids, out=rows)
        torch.index_select(self._scales_t, 0, ids, out=scales)

    def add_rows_(self, target: torch.Tensor, ids: torch.Tensor, alloc=None) -> None:
        """target [len(ids), dim] float32 += rows ``ids``, bit for bit ``target + to_float32()[ids]``
        (``alloc``: as for :meth:`rows`)."""
        alloc = alloc or (lambda name, shape, dtype: np.empty(shape, dtype))
        target += self.rows(ids, torch.from_numpy(alloc("centroid_part", tuple(target.shape), np.float32)), alloc)

    def abs_max(self) -> float:
        """The largest absolute value of any centroid component."""
        if self.scales is not None:
            return 127.0 * float(self.scales.max(initial=0.0))
        return float(np.abs(self.values).max(initial=0).astype(np.float32))
