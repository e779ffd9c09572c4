"""PLAID candidate generation: centroid scores, centroid probing, centroid pruning and
approximate MaxSim.

Approximate score of a document = sum over query tokens of the best centroid score among the
document's token codes (each token stands in for its centroid); centroids whose best score over the
query is below the threshold score -1e4 instead (PLAID's centroid pruning, as colbert-ai does it).
"""
from __future__ import annotations

import threading
import weakref

import numpy as np
import torch

from colxm.index.centroid_table import CentroidTable
from colxm.search.centroid_scan import CentroidScan
from colxm.search.data import SegmentData, token_ranges
from colxm.search.memory import scratch
from colxm.search.rerank import segment_max

NEG = np.float32(-1e4)
_SCAN_MIN = 4096  # see CentroidScorer
_ROWS_PER_BLOCK = 4096  # centroid rows converted to float32 at once by all()


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
    # [Lq, len(docs)] in this thread's scratch: a fresh array of varying size per query would
    # fragment the heap (batched search's RSS grew by tens of MB)
    out_np = scratch("approx_scores", (lq, docs.size))
    out_np[:] = np.asarray(fallback, np.float32)[:, None]
    out = torch.from_numpy(out_np)
    out.view(-1).scatter_reduce_(0, torch.from_numpy(key), torch.from_numpy(ev), reduce="amax")
    return out.sum(0).numpy()


class CentroidScorer:
    """Scores query tokens against the codec's centroids (a :class:`CentroidTable`).

    From ``scan_min`` centroids, each token's best centroids come from an int8 scan
    (:class:`CentroidScan`: the coarse lists probed by any of the query's tokens, or every
    centroid), with scores within ~1e-3 of the exact ones; below it, from exact scores of all.
    The pruning test (max_over_query) is always exact. No float32 copy of the table is kept."""

    def __init__(self, table: CentroidTable, scan_min: int = _SCAN_MIN):
        """scan_min: from this many centroids best() scans in int8; below it every centroid is
        scored exactly (one small matmul)."""
        self.table = table
        self.scan_min = scan_min
        self._scan: CentroidScan | None = None
        self._lock = threading.Lock()

    @property
    def num_centroids(self) -> int:
        return int(self.table.shape[0])

    def all(self, Q: np.ndarray) -> np.ndarray:
        """[Lq, K] exact scores: a view of this thread's scratch buffer, valid until its next call.
        The table is converted to float32 a block of rows at a time (no float32 copy is kept)."""
        K, dim = self.table.shape
        out = scratch("centroid_scores", (Q.shape[0], K))
        Qt = torch.from_numpy(Q)
        for a in range(0, K, _ROWS_PER_BLOCK):
            b = min(K, a + _ROWS_PER_BLOCK)
            rows = self.table.rows(torch.arange(a, b), torch.from_numpy(scratch("centroid_rows", (b - a, dim))))
            out[:, a:b] = (rows @ Qt.T).T.numpy()
        return out

    def best(self, Q: np.ndarray, m: int, nprobe: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(values, ids) [Lq, m] of each token's m best centroids, best first; ``nprobe`` > 0:
        among the centroids of the coarse lists that any token probes (each its ``nprobe``
        best), 0: among all. Below ``scan_min`` centroids every score is exact; above, the
        int8 scan's (within ~1e-3). Ids are -1 (values -1e4) where fewer were found."""
        K = self.num_centroids
        if K < self.scan_min:
            vals, ids = torch.topk(torch.from_numpy(self.all(Q)), min(m, K), dim=1)
        else:
            vals, ids = self._scanner().top(torch.from_numpy(Q), m, nprobe)
        vals, ids = vals.numpy(), ids.numpy()
        if m > ids.shape[1]:
            pad = ((0, 0), (0, m - ids.shape[1]))
            vals, ids = np.pad(vals, pad, constant_values=NEG), np.pad(ids, pad, constant_values=-1)
        return vals, ids

    def _scanner(self) -> CentroidScan:
        with self._lock:
            if self._scan is None:
                self._scan = CentroidScan(self.table)
            return self._scan

    def max_over_query(self, Q: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Best score over the query's tokens of each centroid in ``cells`` (PLAID's pruning test)."""
        rows = self.table.rows(torch.from_numpy(np.asarray(cells, dtype=np.int64)))
        return (torch.from_numpy(Q) @ rows.T).amax(0).numpy()
