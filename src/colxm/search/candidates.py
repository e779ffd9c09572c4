"""PLAID candidate generation: centroid probing, centroid pruning and approximate MaxSim.

Approximate score of a document = sum over query tokens of the best centroid score among the
document's token codes (each token stands in for its centroid); codes whose best score over the
query is below the threshold are ignored (PLAID's centroid pruning).
"""
from __future__ import annotations

import numpy as np

from colxm.search.data import SegmentData, token_ranges
from colxm.search.rerank import segment_max

NEG = np.float32(-1e4)


def probe_cells(scores: np.ndarray, ncells: int) -> np.ndarray:
    """Union over query tokens of their ``ncells`` best centroids. ``scores``: [Lq, K]."""
    ncells = min(ncells, scores.shape[1])
    if ncells == 1:
        return np.unique(scores.argmax(1))
    top = np.argpartition(-scores, ncells - 1, axis=1)[:, :ncells]
    return np.unique(top)


def candidate_docs(seg: SegmentData, cells: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Sorted local docs listed under any of ``cells`` and allowed by ``mask`` (bool [N] or None)."""
    starts = seg.ivf_offsets[cells]
    ends = seg.ivf_offsets[cells + 1]
    hit = np.zeros(seg.num_docs, dtype=bool)
    for a, b in zip(starts.tolist(), ends.tolist()):
        hit[seg.ivf_docs[a:b]] = True
    if mask is not None:
        hit &= mask
    return np.flatnonzero(hit)


def approx_scores(seg: SegmentData, docs: np.ndarray, scores_t: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Approximate MaxSim of ``docs`` from centroid scores ``scores_t`` [K, Lq] (transposed so that a
    code's scores are one contiguous row). ``keep``: bool [K] of unpruned centroids, None = all."""
    idx, seg_starts = token_ranges(seg.doc_offsets, docs)
    codes = np.asarray(seg.codes[idx], dtype=np.int64)
    if keep is not None:
        k = keep[codes]
        codes = codes[k]
        counts = np.add.reduceat(k.astype(np.int32), seg_starts[:-1]) if len(docs) else np.zeros(0, np.int32)
        nonempty = counts > 0
        seg_starts = np.zeros(int(nonempty.sum()) + 1, dtype=np.int64)
        np.cumsum(counts[nonempty], out=seg_starts[1:])
    else:
        nonempty = None
    out = np.full(len(docs), NEG * scores_t.shape[1], dtype=np.float32)
    if codes.size == 0:
        return out
    per_doc = segment_max(scores_t[codes], seg_starts).sum(1)
    if nonempty is None:
        return per_doc
    out[nonempty] = per_doc
    return out
