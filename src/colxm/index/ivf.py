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


def build_doc_codes(codes: np.ndarray, doclens: np.ndarray, num_centroids: int) -> tuple[np.ndarray, np.ndarray]:
    """The IVF transposed: (doc_code_offsets int64 [N+1], doc_codes [nnz]) with each document's
    sorted unique centroid codes, uint16 when num_centroids <= 65536. Approximate scoring reads
    these instead of every token's code (documents repeat codes: ~2.5x fewer entries)."""
    codes = np.asarray(codes)
    doclens = np.asarray(doclens, dtype=np.int64)
    if doclens.sum() != codes.shape[0]:
        raise InputError(f"doclens sum to {int(doclens.sum())} but there are {codes.shape[0]} codes")
    docs = np.repeat(np.arange(doclens.shape[0], dtype=np.int64), doclens)
    keys = np.unique(docs * num_centroids + codes.astype(np.int64))
    owner = keys // num_centroids
    offsets = np.zeros(doclens.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=doclens.shape[0]), out=offsets[1:])
    dtype = np.uint16 if num_centroids <= 65536 else np.int32
    return offsets, (keys - owner * num_centroids).astype(dtype)
