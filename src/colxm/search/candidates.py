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

from colxm.search.data import SegmentData, token_ranges
from colxm.search.memory import release_free_heap, scratch
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


class CentroidScorer:
    """Scores query tokens against the codec's centroids: all of them (one matmul), or each token's
    best ones through a faiss inverted file over the centroids (built on first use, seeded)."""

    def __init__(self, centroids: np.ndarray):
        self.centroids = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
        self._ivf = None
        self._lock = threading.Lock()

    def all(self, Q: np.ndarray) -> np.ndarray:
        """[Lq, K] scores: a view of this thread's scratch buffer, valid until its next call."""
        out = scratch("centroid_scores", (Q.shape[0], self.centroids.shape[0]))
        torch.mm(torch.from_numpy(Q), self.centroids.T, out=torch.from_numpy(out))
        return out

    def best(self, Q: np.ndarray, m: int, nprobe: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(values, ids) [Lq, m] of each token's m best centroids, best first, plus the full score
        matrix when it was computed (nprobe == 0). Ids are -1 (values -1e4) where fewer were found."""
        K = self.centroids.shape[0]
        if nprobe <= 0 or K <= 1024:
            scores = self.all(Q)
            top = torch.topk(torch.from_numpy(scores), min(m, K), dim=1)
            vals, ids = top.values.numpy(), top.indices.numpy()
            if m > K:
                pad = ((0, 0), (0, m - K))
                vals, ids = np.pad(vals, pad, constant_values=NEG), np.pad(ids, pad, constant_values=-1)
            return vals, ids, scores
        D, ids = self._index(nprobe).search(Q, m)
        D[ids < 0] = NEG
        return D.astype(np.float32, copy=False), ids, None

    def max_over_query(self, Q: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Best score over the query's tokens of each centroid in ``cells`` (PLAID's pruning test)."""
        return (torch.from_numpy(Q) @ self.centroids[torch.from_numpy(cells)].T).amax(0).numpy()

    def _index(self, nprobe: int):
        with self._lock:
            if self._ivf is None:
                import faiss

                c = self.centroids.numpy()
                nlist = max(16, c.shape[0] // 64)
                quantizer = faiss.IndexFlatIP(c.shape[1])
                ivf = faiss.IndexIVFFlat(quantizer, c.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
                ivf.cp.seed = 0
                ivf.cp.niter = 10
                ivf.train(c)
                # each list's exact size reserved first: adding vector by vector grows them by
                # doubling (~1.4x the centroids' bytes)
                lists = faiss.downcast_InvertedLists(ivf.invlists)
                sizes = np.bincount(ivf.quantizer.search(c, 1)[1][:, 0], minlength=nlist)
                for i, n in enumerate(sizes.tolist()):
                    lists.resize(i, n)
                    lists.resize(i, 0)
                ivf.add(c)
                self._ivf = ivf
                release_free_heap()  # k-means buffers freed below the lists faiss keeps
            self._ivf.nprobe = nprobe  # the same value for every caller of one search
            return self._ivf
