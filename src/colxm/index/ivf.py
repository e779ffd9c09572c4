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


def doc_codes_from_ivf(ivf_offsets: np.ndarray, ivf_docs: np.ndarray, num_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverted lists transposed: (doc_code_offsets int64 [N+1], doc_codes [nnz]), each
    document's sorted unique centroid codes (uint16 when there are at most 65,536 centroids)."""
    offsets_ivf = np.asarray(ivf_offsets, dtype=np.int64)
    K = offsets_ivf.shape[0] - 1
    cent = np.repeat(np.arange(K, dtype=np.uint16 if K <= 65536 else np.int32), np.diff(offsets_ivf))
    docs = np.asarray(ivf_docs)
    order = np.argsort(docs, kind="stable")  # by doc, centroids ascending within a doc
    offsets = np.zeros(num_docs + 1, dtype=np.int64)
    np.cumsum(np.bincount(docs, minlength=num_docs)[:num_docs], out=offsets[1:])
    return offsets, cent[order]


def local_codes(codes: np.ndarray, doclens: np.ndarray, num_centroids: int) -> np.ndarray:
    """Each token's code as its position among its document's sorted unique codes (the document's
    row of :func:`doc_codes_from_ivf`): uint8 when no document has more than 256 distinct codes,
    else uint16. Stored instead of the global codes, this halves their size; the inverted lists
    hold the rest of the information, so nothing is stored twice."""
    doclens = np.asarray(doclens, dtype=np.int64)
    offsets, doc_codes = build_doc_codes(codes, doclens, num_centroids)
    # a token's rank among all (document, code) pairs, minus its document's first pair
    owner = np.repeat(np.arange(doclens.shape[0], dtype=np.int64), doclens) * num_centroids
    pairs = np.repeat(np.arange(doclens.shape[0], dtype=np.int64) * num_centroids, np.diff(offsets))
    pairs += doc_codes
    pos = np.searchsorted(pairs, owner + np.asarray(codes, dtype=np.int64))
    pos -= np.repeat(offsets[:-1], doclens)
    top = int(pos.max()) if pos.size else 0
    if top >= 1 << 16:
        raise InputError(f"a document has {top + 1} distinct centroid codes; at most 65,536 are supported")
    return pos.astype(np.uint8 if top < 256 else np.uint16)


class LocalCodes:
    """Read-only view of local codes (see :func:`local_codes`) that indexes like the array of
    global codes: ``view[a:b]``, ``view[int array]`` and ``np.asarray(view)`` give global codes.
    ``local`` may be memory-mapped; the transposed inverted lists are derived on first use."""

    def __init__(self, local: np.ndarray, doc_offsets: np.ndarray, ivf_offsets: np.ndarray, ivf_docs: np.ndarray):
        self.local = local
        self.doc_offsets = doc_offsets
        self.ivf_offsets = ivf_offsets
        self.ivf_docs = ivf_docs
        self._doc_codes: tuple[np.ndarray, np.ndarray] | None = None
        K = int(np.asarray(ivf_offsets).shape[0]) - 1
        self.dtype = np.dtype(np.uint16 if K <= 65536 else np.int32)

    @property
    def shape(self) -> tuple[int]:
        return (int(self.local.shape[0]),)

    @property
    def ndim(self) -> int:
        return 1

    def __len__(self) -> int:
        return int(self.local.shape[0])

    @property
    def doc_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """(doc_code_offsets, doc_codes) of the segment (computed once)."""
        if self._doc_codes is None:
            n = int(np.asarray(self.doc_offsets).shape[0]) - 1
            self._doc_codes = doc_codes_from_ivf(self.ivf_offsets, self.ivf_docs, n)
        return self._doc_codes

    def for_docs(self, docs: np.ndarray, idx: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Global codes of token indexes ``idx``: the tokens of ``docs`` in order, ``lens`` each."""
        off, codes = self.doc_codes
        base = np.repeat(np.asarray(off[docs], dtype=np.int64), lens)
        return codes[base + self.local[idx]]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            idx = np.arange(a, b, step, dtype=np.int64)
        else:
            idx = np.asarray(key, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
                raise IndexError(f"token index out of range [0, {len(self)})")
        return self._decode(idx)

    def _decode(self, idx: np.ndarray) -> np.ndarray:
        from colxm.errors import IndexFormatError

        off, codes = self.doc_codes
        tok_doc = np.searchsorted(np.asarray(self.doc_offsets), idx, side="right") - 1
        loc = np.asarray(self.local[idx], dtype=np.int64)
        if loc.size and np.any(loc >= off[tok_doc + 1] - off[tok_doc]):
            raise IndexFormatError("inverted lists do not match the codes (local codes point past their "
                                   "document's inverted-list entries); the index is corrupted: rebuild it")
        return codes[off[tok_doc] + loc]

    def __array__(self, dtype=None, copy=None):
        out = self._decode(np.arange(len(self), dtype=np.int64))
        return out if dtype is None else out.astype(dtype)
