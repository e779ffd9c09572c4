"""The search pipeline over one codec and its segments: PLAID-style approximate search or an
exhaustive exact mode."""
from __future__ import annotations

import heapq
from concurrent.futures import ThreadPoolExecutor
import time
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np

from colxm.errors import InputError
from colxm.index.codec import ResidualCodec
import torch

from colxm.search.candidates import (approx_scores, approx_scores_lists, candidate_docs, probe_cells, pruned,
                                     top_centroids)
from colxm.search.data import SegmentData
from colxm.search.rerank import maxsim_docs

Hit = tuple[int, int, float]  # (segment index, local doc, score)
_EXHAUSTIVE_CELLS = 1 << 24  # query rows x tokens per similarity block in exhaustive mode
_EXHAUSTIVE_TOKENS = 1 << 15  # tokens decompressed at once in exhaustive mode (16 MB of float32)
_SCORE_BATCH = 16  # queries whose centroid scores are computed in one matmul


@dataclass
class SearchParams:
    """Knobs of the approximate search (ignored when ``exhaustive``).

    ncells: centroids probed per query token for candidates; centroid_score_threshold: centroid
    scores below it are pruned from approximate scoring; ndocs: documents kept after approximate
    scoring; nrerank: documents decompressed and scored exactly (default ndocs // 4);
    approx_cells: approximate scores are read from each query token's approx_cells best centroids'
    inverted lists (candidates lacking them get the next best score); 0 = colbert-ai's way, a pass
    over every code of every candidate, pruned then unpruned (slower, same quality in our
    measurements).
    """

    ncells: int = 2
    centroid_score_threshold: float = 0.45
    ndocs: int = 1024
    nrerank: int | None = None
    exhaustive: bool = False
    approx_cells: int = 16

    @classmethod
    def for_k(cls, k: int) -> "SearchParams":
        """Defaults measured with benchmarks/search.py (see benchmarks/README.md, "Search")."""
        if k <= 10:
            return cls(ncells=8, centroid_score_threshold=0.3, ndocs=4096, nrerank=512)
        if k <= 100:
            return cls(ncells=16, centroid_score_threshold=0.3, ndocs=8192, nrerank=max(1024, 8 * k))
        return cls(ncells=16, centroid_score_threshold=0.3, ndocs=16384, nrerank=max(2048, 8 * k))

    def validate(self) -> None:
        if (self.ncells < 1 or self.ndocs < 1 or self.approx_cells < 0
                or (self.nrerank is not None and self.nrerank < 1)):
            raise InputError(f"ncells, ndocs and nrerank must be >= 1, got {self}")


def _as_query_list(queries, dim: int) -> list[np.ndarray]:
    if isinstance(queries, np.ndarray) and queries.ndim == 3:
        queries = list(queries)
    elif isinstance(queries, np.ndarray) and queries.ndim == 2:
        queries = [queries]
    out = []
    for i, q in enumerate(queries):
        q = np.ascontiguousarray(np.asarray(q, dtype=np.float32))
        if q.ndim != 2 or q.shape[1] != dim or q.shape[0] == 0:
            raise InputError(f"query {i} has shape {q.shape}; expected [tokens > 0, {dim}]")
        out.append(q)
    return out


class Searcher:
    """Searches token-vector queries over segments that share one codec."""

    def __init__(self, codec: ResidualCodec, segments: list[SegmentData], threads: int | None = None):
        """threads: queries of a batch searched in parallel (None = torch's intra-op thread count)."""
        self.codec = codec
        self.segments = list(segments)
        self.threads = threads
        self._centroids_t = np.ascontiguousarray(codec.centroids.T)
        # seconds spent per stage since creation (benchmarks/scale.py reports where the time goes)
        self.stage_seconds: dict[str, float] = defaultdict(float)

    def _masks(self, allowed) -> list[np.ndarray | None]:
        if allowed is not None and len(allowed) != len(self.segments):
            raise InputError(f"allowed has {len(allowed)} masks for {len(self.segments)} segments")
        masks = []
        for s, seg in enumerate(self.segments):
            m = None if allowed is None else allowed[s]
            if m is not None:
                m = np.asarray(m, dtype=bool)
                if m.shape != (seg.num_docs,):
                    raise InputError(f"allowed mask {s} has shape {m.shape}, expected ({seg.num_docs},)")
            if seg.live is not None:
                m = np.asarray(seg.live, dtype=bool) if m is None else (m & seg.live)
            masks.append(m)
        return masks

    def search(self, queries, k: int = 10, params: SearchParams | None = None,
               allowed: list[np.ndarray | None] | None = None) -> list[list[Hit]]:
        """Top-k (segment, local doc, score) per query, best first."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        Qs = _as_query_list(queries, self.codec.dim)
        params = params or SearchParams.for_k(k)
        params.validate()
        masks = self._masks(allowed)
        if not Qs:
            return []
        if params.exhaustive:
            return self._exhaustive(Qs, k, masks)
        out: list[list[Hit]] = []
        threads = torch.get_num_threads()
        workers = self.threads or threads
        pool = ThreadPoolExecutor(workers) if workers > 1 and len(Qs) > 1 else None
        try:
            for a in range(0, len(Qs), _SCORE_BATCH):
                # one matmul scores the centroids for a batch of queries
                batch = Qs[a:a + _SCORE_BATCH]
                t0 = time.perf_counter()
                stacked = torch.from_numpy(np.concatenate(batch)) @ torch.from_numpy(self._centroids_t)
                rows = np.split(stacked.numpy(), np.cumsum([q.shape[0] for q in batch])[:-1])
                self.stage_seconds["centroid_scores"] += time.perf_counter() - t0
                if pool is None:
                    out.extend(self._plaid_one(q, sc, k, params, masks) for q, sc in zip(batch, rows))
                else:
                    # queries in parallel (numpy and torch release the GIL); one torch thread each
                    torch.set_num_threads(1)
                    try:
                        out.extend(pool.map(lambda qs: self._plaid_one(qs[0], qs[1], k, params, masks),
                                            zip(batch, rows)))
                    finally:
                        torch.set_num_threads(threads)
        finally:
            if pool is not None:
                pool.shutdown()
        return out

    # ---- approximate (PLAID) ------------------------------------------------------------------
    def _plaid_one(self, Q: np.ndarray, scores: np.ndarray, k: int, params: SearchParams, masks) -> list[Hit]:
        """One query: ``scores`` [Lq, K] are its centroid scores."""
        best = None
        if params.approx_cells > 0:  # one top-k serves probing and the approximate scores
            best = top_centroids(scores, max(params.approx_cells, params.ncells) + 1)
        cells = probe_cells(scores, params.ncells, None if best is None else best[1])
        scores_pruned = None
        nrerank = max(k, params.nrerank or params.ndocs // 4)
        qb = np.array([0, Q.shape[0]], dtype=np.int64)
        hits: list[Hit] = []
        st = self.stage_seconds
        for s, seg in enumerate(self.segments):
            t0 = time.perf_counter()
            docs = candidate_docs(seg, cells, masks[s])
            t1 = time.perf_counter()
            st["candidates"] += t1 - t0
            if docs.size == 0:
                continue
            if params.approx_cells > 0:
                keep_n = min(params.ndocs, nrerank)
                if docs.size > keep_n:
                    approx = approx_scores_lists(seg, docs, scores, max(params.approx_cells, params.ncells),
                                                 params.centroid_score_threshold, best)
                    docs = np.sort(docs[np.argpartition(-approx, keep_n - 1)[:keep_n]])
            else:  # colbert-ai's two passes over every code of every candidate
                approx = None
                if docs.size > params.ndocs:
                    if scores_pruned is None:
                        scores_pruned = pruned(scores, params.centroid_score_threshold)
                    approx = approx_scores(seg, docs, scores_pruned)
                    keep = np.sort(np.argpartition(-approx, params.ndocs - 1)[:params.ndocs])
                    docs, approx = docs[keep], approx[keep]
                if docs.size > nrerank:
                    # the second pass scores the survivors without pruning (the first pass already
                    # did when nothing was pruned)
                    if approx is None or scores_pruned is not scores:
                        approx = approx_scores(seg, docs, scores)
                    docs = np.sort(docs[np.argpartition(-approx, nrerank - 1)[:nrerank]])
            t2 = time.perf_counter()
            st["approx"] += t2 - t1
            exact = maxsim_docs(self.codec, seg, docs, Q, qb)[0]
            top = np.argsort(-exact, kind="stable")[:k]
            hits.extend((s, int(docs[i]), float(exact[i])) for i in top)
            st["exact"] += time.perf_counter() - t2
        return heapq.nlargest(k, hits, key=lambda h: h[2])

    # ---- exhaustive ---------------------------------------------------------------------------
    def _exhaustive(self, Qs: list[np.ndarray], k: int, masks) -> list[list[Hit]]:
        Q = np.concatenate(Qs)
        qb = np.zeros(len(Qs) + 1, dtype=np.int64)
        np.cumsum([q.shape[0] for q in Qs], out=qb[1:])
        per_query: list[list[Hit]] = [[] for _ in Qs]
        for s, seg in enumerate(self.segments):
            ok = np.asarray(seg.doclens) > 0
            if masks[s] is not None:
                ok &= masks[s]
            docs = np.flatnonzero(ok)
            if docs.size == 0:
                continue
            scores = np.empty((len(Qs), docs.size), dtype=np.float32)
            # blocks of whole documents, sized so that the similarity block stays ~64 MB
            block = max(256, min(_EXHAUSTIVE_TOKENS, _EXHAUSTIVE_CELLS // Q.shape[0]))
            cum = np.cumsum(np.asarray(seg.doclens, dtype=np.int64)[docs])
            cuts = np.searchsorted(cum, np.arange(block, int(cum[-1]), block), "right")
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, docs.size]):
                if b > a:
                    scores[:, a:b] = maxsim_docs(self.codec, seg, docs[a:b], Q, qb)
            kk = min(k, docs.size)
            for j in range(len(Qs)):
                top = np.argpartition(-scores[j], kk - 1)[:kk]
                per_query[j].extend((s, int(docs[i]), float(scores[j, i])) for i in top)
        return [sorted(h, key=lambda x: -x[2])[:k] for h in per_query]


def with_params(params: SearchParams | None, **changes) -> SearchParams:
    """Copy of ``params`` (or the k=10 defaults) with some fields changed."""
    return replace(params or SearchParams.for_k(10), **changes)
