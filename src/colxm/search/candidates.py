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


def probe_cells(top_ids: np.ndarray, ncells: int) -> np.ndarray:
    """Union over query tokens of their ``ncells`` best centroids (``top_ids`` [Lq, >= ncells],
    best first)."""
    return np.unique(top_ids[:, :ncells])


def list_entries(seg: SegmentData, cells: np.ndarray, lens: np.ndarray | None = None) -> np.ndarray:
    """The inverted lists of ``cells`` concatenated (local docs, int64); ``lens`` overrides the
    list lengths (0 skips a list)."""
    starts = np.asarray(seg.ivf_offsets[cells], dtype=np.int64)
    if lens is None:
        lens = np.asarray(seg.ivf_offsets[cells + 1], dtype=np.int64) - starts
    pos = np.zeros(lens.size + 1, dtype=np.int64)
    np.cumsum(lens, out=pos[1:])
    idx = np.arange(int(pos[-1]), dtype=np.int64)
    idx += np.repeat(starts - pos[:-1], lens)
    return np.asarray(seg.ivf_docs[idx], dtype=np.int64)


def candidate_docs(seg: SegmentData, cells: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Sorted local docs listed under any of ``cells`` and allowed by ``mask`` (bool [N] or None)."""
    hit = np.zeros(seg.num_docs, dtype=bool)
    hit[list_entries(seg, cells)] = True
    if mask is not None:
        hit &= mask
    return np.flatnonzero(hit)


def pruned(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Centroid scores [Lq, K] with the columns of pruned centroids set to -1e4 (``scores``
    itself when no centroid is pruned)."""
    keep = scores.max(0) >= threshold
    return scores if keep.all() else np.where(keep, scores, NEG)


def approx_scores(seg: SegmentData, docs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Approximate MaxSim of ``docs`` (all non-empty) from centroid scores [Lq, K], reading every
    unique code of every candidate (colbert-ai's way)."""
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


def approx_scores_lists(seg: SegmentData, docs: np.ndarray, vals: np.ndarray, cells: np.ndarray,
                        fallback: np.ndarray, cell_ok: np.ndarray) -> np.ndarray:
    """Approximate MaxSim of the sorted candidate ``docs`` read from the inverted lists instead of
    the documents: query token i looks up only its best centroids ``cells[i]`` (scores ``vals[i]``,
    best first; [Lq, m]); their lists give, per document, the best of those scores. A document that
    has none of them gets ``fallback[i]``, the token's (m+1)-th best centroid score: an upper bound
    of what it could have (XTR's missing-similarity imputation). Cells with ``cell_ok`` False
    (pruned: best score over the query below the threshold) are skipped. The cost grows with
    Lq * m * list length instead of Lq * (all codes of all candidates); memory with Lq * len(docs)."""
    lq, m = cells.shape
    flat = cells.reshape(-1)
    lens = np.asarray(seg.ivf_offsets[flat + 1], dtype=np.int64) - np.asarray(seg.ivf_offsets[flat], dtype=np.int64)
    lens = np.where(cell_ok.reshape(-1), lens, 0)
    entry_docs = list_entries(seg, flat, lens)
    pm = _position_map(seg)
    pm[docs] = np.arange(docs.size, dtype=np.int32)
    col = pm[entry_docs]
    pm[docs] = -1
    keep = col >= 0
    key = np.repeat(np.repeat(np.arange(lq, dtype=np.int64) * docs.size, m), lens)[keep] + col[keep]
    ev = np.repeat(vals.reshape(-1), lens)[keep]
    out = torch.from_numpy(np.repeat(np.asarray(fallback, np.float32)[:, None], docs.size, axis=1))
    out.view(-1).scatter_reduce_(0, torch.from_numpy(key), torch.from_numpy(ev), reduce="amax")
    return out.sum(0).numpy()
