"""PLAID candidate generation: centroid probing, centroid pruning and approximate MaxSim.

Approximate score of a document = sum over query tokens of the best centroid score among the
document's token codes (each token stands in for its centroid); centroids whose best score over the
query is below the threshold score -1e4 instead (PLAID's centroid pruning, as colbert-ai does it).
"""
from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from colxm.search.data import SegmentData, token_ranges
from colxm.search.rerank import segment_max

NEG = np.float32(-1e4)


def probe_cells(scores: np.ndarray, ncells: int, top: np.ndarray | None = None) -> np.ndarray:
    """Union over query tokens of their ``ncells`` best centroids. ``scores``: [Lq, K]; ``top``:
    centroid ids [Lq, >= ncells] best first, when already known."""
    ncells = min(ncells, scores.shape[1])
    if top is not None and top.shape[1] >= ncells:
        return np.unique(top[:, :ncells])
    if ncells == 1:
        return np.unique(scores.argmax(1))
    top = torch.topk(torch.from_numpy(scores), ncells, dim=1, sorted=False).indices.numpy()
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


_local = threading.local()


def _position_map(seg: SegmentData) -> np.ndarray:
    """A per-thread, per-segment int32 [N] array of -1s (callers restore it after use)."""
    maps = getattr(_local, "maps", None)
    if maps is None:
        maps = _local.maps = weakref.WeakKeyDictionary()
    pm = maps.get(seg)
    if pm is None or pm.shape[0] != seg.num_docs:
        pm = maps[seg] = np.full(seg.num_docs, -1, dtype=np.int32)
    return pm


def top_centroids(scores: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, centroid ids) [Lq, m] of each query token's m best centroids, best first."""
    top = torch.topk(torch.from_numpy(scores), min(m, scores.shape[1]), dim=1)
    return top.values.numpy(), top.indices.numpy()


def approx_scores_lists(seg: SegmentData, docs: np.ndarray, scores: np.ndarray, m: int,
                        threshold: float, top: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Approximate MaxSim of the sorted candidate ``docs`` read from the inverted lists instead of
    the documents: for each query token only its ``m`` best centroids are looked up (their lists
    give, per document, the best of those centroid scores); a document that has none of them gets
    the token's (m+1)-th best centroid score, an upper bound of what it could have (XTR's missing
    similarity imputation). Entries below ``threshold`` are pruned the same way. Cost grows with
    Lq * m * list length instead of Lq * (all codes of all candidates)."""
    lq, K = scores.shape
    m = min(m, K - 1) if K > 1 else 1
    if top is None or top[0].shape[1] < min(m + 1, K):
        top = top_centroids(scores, m + 1)
    vals, cells = top[0][:, :m + 1], top[1][:, :m + 1]
    fallback = vals[:, -1].copy() if K > m else np.full(lq, NEG, np.float32)
    vals, cells = vals[:, :m], cells[:, :m]
    flat_cells = cells.reshape(-1)
    starts = np.asarray(seg.ivf_offsets[flat_cells], dtype=np.int64)
    lens = np.asarray(seg.ivf_offsets[flat_cells + 1], dtype=np.int64) - starts
    ok = scores.max(0)[flat_cells] >= threshold  # PLAID pruning: the centroid's best score over the query
    lens = np.where(ok, lens, 0)
    pos = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=pos[1:])
    idx = np.arange(int(pos[-1]), dtype=np.int64) + np.repeat(starts - pos[:-1], lens)
    entry_docs = np.asarray(seg.ivf_docs[idx], dtype=np.int64)
    # rows of the [lq, ncand] matrix: query token of each entry; columns: candidate position
    pm = _position_map(seg)
    pm[docs] = np.arange(docs.size, dtype=np.int32)
    col = pm[entry_docs]
    pm[docs] = -1
    col_ok = col >= 0
    row = np.repeat(np.repeat(np.arange(lq), m), lens)
    ev = np.repeat(vals.reshape(-1), lens)
    out = np.repeat(fallback[:, None], docs.size, axis=1)
    np.maximum.at(out.reshape(-1), row[col_ok] * docs.size + col[col_ok], ev[col_ok])
    return out.sum(0)
