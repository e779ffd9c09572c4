"""Inverted lists: centroid -> sorted unique local document indexes containing a token of it."""
from __future__ import annotations

import numpy as np

from colxm.errors import InputError


def build_ivf(codes: np.ndarray, doclens: np.ndarray, num_centroids: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (ivf_offsets int64 [K+1], ivf_docs int32 [nnz]); the docs of centroid c are
    ``ivf_docs[ivf_offsets[c]:ivf_offsets[c+1]]``, sorted and unique."""
    codes = np.asarray(codes)
    doclens = np.asarray(doclens, dtype=np.int64)
    if doclens.sum() != codes.shape[0]:
        raise InputError(f"doclens sum to {int(doclens.sum())} but there are {codes.shape[0]} codes")
    if codes.size and (codes.min() < 0 or codes.max() >= num_centroids):
        raise InputError(f"codes must lie in [0, {num_centroids}), got [{codes.min()}, {codes.max()}]")
    n_docs = doclens.shape[0]
    docs = np.repeat(np.arange(n_docs, dtype=np.int64), doclens)
    keys = np.unique(codes.astype(np.int64) * max(n_docs, 1) + docs)
    cent = keys // max(n_docs, 1)
    offsets = np.zeros(num_centroids + 1, dtype=np.int64)
    np.cumsum(np.bincount(cent, minlength=num_centroids), out=offsets[1:])
    return offsets, (keys - cent * max(n_docs, 1)).astype(np.int32)
