"""PLAID candidate generation: centroid probing, centroid pruning and approximate MaxSim.

Approximate score of a document = sum over query tokens of the best centroid score among the
document's token codes (each token stands in for its centroid); centroids whose best score over the
query is below the threshold score -1e4 instead (PLAID's centroid pruning, as colbert-ai does it).
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
    starts = seg.ivf_offsets[cells].tolist()
    ends = seg.ivf_offsets[cells + 1].tolist()
    hit = np.zeros(seg.num_docs, dtype=bool)
    ivf = seg.ivf_docs
    for a, b in zip(starts, ends):
        hit[ivf[a:b]] = True
    if mask is not None:
        hit &= mask
    return np.flatnonzero(hit)


def pruned(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Centroid scores [Lq, K] with the columns of pruned centroids set to -1e4 (``scores``
    itself when no centroid is pruned)."""
    keep = scores.max(0) >= threshold
    return scores if keep.all() else np.where(keep, scores, NEG)


def approx_scores(seg: SegmentData, docs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Approximate MaxSim of ``docs`` (all non-empty) from centroid scores [Lq, K]."""
    seg.ensure_doc_codes()  # each doc's unique codes: the same maxima from ~2.5x fewer entries
    idx, seg_starts = token_ranges(seg.doc_code_offsets, docs)
    codes = seg.doc_codes[idx]
    sims = np.take(scores, codes, axis=1)  # [Lq, ntok]: a row gather per query token
    return segment_max(sims, seg_starts).sum(0)
