"""The search pipeline over one codec and its segments: PLAID-style approximate search or an
exhaustive exact mode."""
from __future__ import annotations

import heapq
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from colxm.errors import InputError
from colxm.index.codec import ResidualCodec
from colxm.search.candidates import (CentroidScorer, approx_scores, approx_scores_lists, candidate_docs,
                                    probe_cells, pruned)
from colxm.search.data import SegmentData
from colxm.search.memory import release_free_heap, release_free_heap_every
from colxm.search.rerank import maxsim_docs

Hit = tuple[int, int, float]  # (segment index, local doc, score)
_EXHAUSTIVE_ROWS = 512  # query rows scored together in exhaustive mode (groups of whole queries)
_TRIM_SECONDS = 0.02  # see release_free_heap_every
_EXHAUSTIVE_CELLS = 1 << 20  # query rows x tokens per similarity block in exhaustive mode (4 MB)


@dataclass
class SearchParams:
    """Knobs of the approximate search (ignored when ``exhaustive``, except full_rerank = 0).

    ncells: centroids probed per query token for candidates; centroid_score_threshold: centroid
    scores below it are pruned from approximate scoring; ndocs: documents kept after approximate
    scoring; nrerank: documents decompressed and scored exactly (default ndocs // 4); both count
    documents of the whole index, however many segments it has;
    approx_cells: approximate scores are read from each query token's approx_cells best centroids'
    inverted lists (candidates lacking them get the next best score); 0 = colbert-ai's way, a pass
    over every code of every candidate, pruned then unpruned (slower, same quality in our
    measurements). centroid_nprobe: where each token's best centroids are looked for (an int8
    scan, scores within ~1e-3: search.centroid_scan); 0 = among every centroid; n > 0 = among the
    centroids of the coarse lists (~64 centroids each) that any token of the query ranks in its
    n best (approximate, several times cheaper with tens of thousands of centroids; only with
    approx_cells > 0).
    full_rerank: on an index that stores the original vectors (IndexConfig.full_vectors), the
    best documents of the exact stage re-scored with those (at least k; None = full_count's
    default; 0 = off); when it covers the whole exact stage (full_rerank >= nrerank) the
    compressed exact scores are not computed at all, the fastest setting of such an index;
    exhaustive mode then scores every document with them.
    """

    ncells: int = 2
    centroid_score_threshold: float = 0.45
    ndocs: int = 1024
    nrerank: int | None = None
    exhaustive: bool = False
    approx_cells: int = 16
    centroid_nprobe: int = 0
    full_rerank: int | None = None

    def full_count(self, k: int) -> int:
        """Documents re-scored with the original vectors. Default max(4k, 64): at 2 bits the
        quantisation error reorders close scores, but only locally, so the true top k lie
        within the first few k of the compressed ranking; 64 documents cost about 1/8 of the
        default compressed exact stage (nrerank=512), with no decompression."""
        if self.full_rerank is None:
            return max(4 * k, 64)
        return max(k, self.full_rerank) if self.full_rerank else 0

    @classmethod
    def for_k(cls, k: int, full: bool = False) -> "SearchParams":
        """Defaults measured with benchmarks/search.py (see benchmarks/README.md, "Search").

        ``full``: for an index that stores its original vectors (IndexConfig.full_vectors). Its
        float16 stage makes the top k exact, so what limits quality is whether the true top k
        reach it at all: wider candidate generation (benchmarks/search_defaults.py)."""
        params = cls._widths_for_k(k, full)
        # centroid_nprobe 32: each token's best centroids among the coarse lists the query's
        # tokens probe (about a third of 32,768 centroids) instead of all of them (measured on
        # the 45k benchmark: see benchmarks/README.md, Search, session 9)
        params.centroid_nprobe = 32
        return params

    @classmethod
    def _widths_for_k(cls, k: int, full: bool) -> "SearchParams":
        if full:
            if k <= 10:
                return cls(ncells=32, centroid_score_threshold=0.2, ndocs=16384, nrerank=4096, full_rerank=256)
            # k=100, measured (benchmarks/search_defaults.py): overlap@100 with the exhaustive top
            # 100 0.979 at 300 ms p50; ndocs 16384 / nrerank 4096 stop at 0.947 (150 ms), whatever
            # full_rerank. Beyond k=100 the widths grow with k: not measured.
            return cls(ncells=32, centroid_score_threshold=0.2, ndocs=max(32768, 328 * k),
                       nrerank=max(8192, 82 * k), full_rerank=max(1024, 10 * k))
        if k <= 10:
            return cls(ncells=8, centroid_score_threshold=0.3, ndocs=4096, nrerank=512)
        if k <= 100:
            return cls(ncells=16, centroid_score_threshold=0.3, ndocs=8192, nrerank=max(1024, 8 * k))
        return cls(ncells=16, centroid_score_threshold=0.3, ndocs=16384, nrerank=max(2048, 8 * k))

    def validate(self) -> None:
        if (self.ncells < 1 or self.ndocs < 1 or self.approx_cells < 0 or self.centroid_nprobe < 0
                or (self.nrerank is not None and self.nrerank < 1)
                or (self.full_rerank is not None and self.full_rerank < 0)):
            raise InputError(f"ncells, ndocs and nrerank must be >= 1 (approx_cells, centroid_nprobe, "
                             f"full_rerank >= 0), got {self}")


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

    def __init__(self, codec: ResidualCodec, segments: list[SegmentData], threads: int | None = None,
                 scorer: CentroidScorer | None = None):
        """threads: queries of a batch searched in parallel (None = torch's intra-op thread count);
        scorer: a CentroidScorer of this codec to share (a later snapshot of the same index)."""
        self.codec = codec
        self.segments = list(segments)
        self.threads = threads
        self.scorer = scorer if scorer is not None and scorer.table is codec.table else CentroidScorer(codec.table)
        # the original vectors re-score only when every segment has them: scores must compare
        self.full = bool(self.segments) and all(seg.vectors is not None for seg in self.segments)
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
        params = params or SearchParams.for_k(k, full=self.full)
        params.validate()
        masks = self._masks(allowed)
        if params.full_rerank and self.segments and not self.full:
            raise InputError("full_rerank needs an index that stores its original vectors: build it "
                             "with IndexConfig(full_vectors=True)")
        nfull = params.full_count(k) if self.full else 0
        if not Qs:
            return []
        if params.exhaustive:
            return self._exhaustive(Qs, k, masks, full=nfull > 0)
        threads = torch.get_num_threads()
        workers = self.threads or threads
        if workers <= 1 or len(Qs) == 1:
            return [self._plaid_then_trim(q, k, params, masks, nfull) for q in Qs]
        # queries in parallel (numpy and torch release the GIL), one torch thread each; this
        # thread is one of the workers: each new thread grows a heap arena of its own (given back
        # when the batch ends)
        results: list[list[Hit]] = [[] for _ in Qs]
        todo = iter(range(len(Qs)))
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    j = next(todo, None)
                if j is None:
                    return
                results[j] = self._plaid_then_trim(Qs[j], k, params, masks, nfull)

        torch.set_num_threads(1)
        try:
            helpers_n = min(workers, len(Qs)) - 1
            with ThreadPoolExecutor(helpers_n) as pool:
                helpers = [pool.submit(work) for _ in range(helpers_n)]
                work()
                for h in helpers:
                    h.result()
        finally:
            torch.set_num_threads(threads)
            release_free_heap()
        return results

    # ---- approximate (PLAID) ------------------------------------------------------------------
    def _plaid_then_trim(self, Q, k, params, masks, nfull) -> list[Hit]:
        hits = self._plaid_one(Q, k, params, masks, nfull)
        release_free_heap_every(_TRIM_SECONDS)
        return hits

    def _plaid_one(self, Q: np.ndarray, k: int, params: SearchParams, masks, nfull: int) -> list[Hit]:
        """Top k of one query; the best ``nfull`` of the exact stage re-scored with the original
        vectors when nfull > 0."""
        st = self.stage_seconds
        t0 = time.perf_counter()
        m = max(params.approx_cells, params.ncells)
        if params.approx_cells > 0:  # one top-m search serves probing and the approximate scores
            vals, ids = self.scorer.best(Q, m + 1, params.centroid_nprobe)
            fallback = vals[:, m].copy()
            vals, ids = vals[:, :m], ids[:, :m]
            valid = ids >= 0
            cells = probe_cells(np.where(valid, ids, ids[:, :1]), params.ncells)
            uniq, inv = np.unique(np.where(valid, ids, 0), return_inverse=True)
            cmax = self.scorer.max_over_query(Q, uniq)
            cell_ok = (cmax[inv.reshape(ids.shape)] >= params.centroid_score_threshold) & valid
            ids = np.where(valid, ids, 0)
        else:
            scores = self.scorer.all(Q)
            top = torch.topk(torch.from_numpy(scores), min(params.ncells, scores.shape[1]), dim=1).indices.numpy()
            cells = probe_cells(top, params.ncells)
        st["centroid_scores"] += time.perf_counter() - t0
        nrerank = max(k, params.nrerank or params.ndocs // 4)
        lists = params.approx_cells > 0
        # ndocs and nrerank are budgets of the whole index, not of each segment: candidates are
        # narrowed per segment first, then to the best ``budget`` approximate scores over all
        # segments, so an index's results and cost do not depend on how it is segmented
        budget = min(params.ndocs, nrerank) if lists else nrerank
        pruned_scores: list[np.ndarray] = []

        def approx_of(seg: SegmentData, docs: np.ndarray, prune: bool = False) -> np.ndarray:
            if lists:
                return approx_scores_lists(seg, docs, vals, ids, fallback, cell_ok)
            if not prune:
                return approx_scores(seg, docs, scores)
            if not pruned_scores:
                pruned_scores.append(pruned(scores, params.centroid_score_threshold))
            return approx_scores(seg, docs, pruned_scores[0])

        pool: list[list] = []  # [segment, sorted candidate docs, their approximate scores or None]
        for s, seg in enumerate(self.segments):
            t0 = time.perf_counter()
            docs = candidate_docs(seg, cells, masks[s])
            t1 = time.perf_counter()
            st["candidates"] += t1 - t0
            if docs.size == 0:
                continue
            approx = None
            if not lists and docs.size > params.ndocs:  # colbert-ai's first, pruned pass
                docs, _ = _best(docs, approx_of(seg, docs, prune=True), params.ndocs)
            if docs.size > budget:
                docs, approx = _best(docs, approx_of(seg, docs), budget)
            pool.append([s, docs, approx])
            st["approx"] += time.perf_counter() - t1
        if sum(p[1].size for p in pool) > budget:
            t1 = time.perf_counter()
            for p in pool:
                if p[2] is None:
                    p[2] = approx_of(self.segments[p[0]], p[1])
            chosen = _top_positions(np.concatenate([p[2] for p in pool]), budget)
            start = 0
            for p in pool:
                n = p[1].size
                p[1] = p[1][np.sort(chosen[(chosen >= start) & (chosen < start + n)] - start)]
                start += n
            st["approx"] += time.perf_counter() - t1
        hits: list[Hit] = []
        qb = np.array([0, Q.shape[0]], dtype=np.int64)
        if nfull and nfull >= sum(p[1].size for p in pool):
            # every document of the exact stage is re-scored with the originals below anyway:
            # decompressing them first would only cost time
            hits = [(s, int(d), 0.0) for s, docs, _ in pool for d in docs]
        else:
            keep = max(k, nfull)
            for s, docs, _ in pool:
                if docs.size == 0:
                    continue
                t2 = time.perf_counter()
                exact = maxsim_docs(self.codec, self.segments[s], docs, Q, qb)[0]
                top = np.argsort(-exact, kind="stable")[:keep]
                hits.extend((s, int(docs[i]), float(exact[i])) for i in top)
                st["exact"] += time.perf_counter() - t2
            hits = heapq.nlargest(keep, hits, key=lambda h: h[2])
        if nfull:
            t3 = time.perf_counter()
            hits = self._rescore_full(hits, Q, qb)
            st["full"] += time.perf_counter() - t3
        return heapq.nlargest(k, hits, key=lambda h: h[2])

    def _rescore_full(self, hits: list[Hit], Q: np.ndarray, qb: np.ndarray) -> list[Hit]:
        """``hits`` with exact scores on the original vectors, in (segment, doc) order (so equal
        scores keep the lower segment and document, as everywhere else)."""
        by_seg: dict[int, list[int]] = defaultdict(list)
        for s, d, _ in hits:
            by_seg[s].append(d)
        out: list[Hit] = []
        for s in sorted(by_seg):
            docs = np.array(sorted(by_seg[s]), dtype=np.int64)
            scores = maxsim_docs(self.codec, self.segments[s], docs, Q, qb, full=True)[0]
            out.extend((s, int(d), float(x)) for d, x in zip(docs, scores))
        return out

    # ---- exhaustive ---------------------------------------------------------------------------
    def _exhaustive(self, Qs: list[np.ndarray], k: int, masks, full: bool) -> list[list[Hit]]:
        """Exact MaxSim against every live document (on the original vectors when ``full``), one
        group of queries (<= 512 rows) at a time over blocks of documents (<= 4 MB of
        similarities); each query keeps a running top k, so memory does not grow with the index."""
        groups, rows = [[]], 0
        for j, q in enumerate(Qs):
            if groups[-1] and rows + q.shape[0] > _EXHAUSTIVE_ROWS:
                groups.append([])
                rows = 0
            groups[-1].append(j)
            rows += q.shape[0]
        spans = []  # per segment: (live docs, cumulative token counts)
        for s, seg in enumerate(self.segments):
            ok = np.asarray(seg.doclens) > 0
            if masks[s] is not None:
                ok &= masks[s]
            docs = np.flatnonzero(ok)
            spans.append((docs, np.cumsum(np.asarray(seg.doclens, dtype=np.int64)[docs])))
        out: list[list[Hit]] = [[] for _ in Qs]
        for group in groups:
            Q = np.concatenate([Qs[j] for j in group])
            qb = np.zeros(len(group) + 1, dtype=np.int64)
            np.cumsum([Qs[j].shape[0] for j in group], out=qb[1:])
            block = max(256, _EXHAUSTIVE_CELLS // Q.shape[0])  # tokens per block
            top = _RunningTopK(len(group), k)
            for s, (docs, cum) in enumerate(spans):
                if docs.size == 0:
                    continue
                cuts = np.searchsorted(cum, np.arange(block, int(cum[-1]), block), "right")
                for a, b in zip(np.r_[0, cuts], np.r_[cuts, docs.size]):
                    if b > a:
                        top.add(maxsim_docs(self.codec, self.segments[s], docs[a:b], Q, qb, full, integer=False),
                                s, docs[a:b])
            for g, j in enumerate(group):
                out[j] = top.hits(g)
        return out


class _RunningTopK:
    """Each of ``n`` queries' k best (score, segment, doc) so far, merged block by block with
    stable sorts: exact ties go to the lower (segment, doc), as in the approximate path, whatever
    the block sizes."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.scores = np.zeros((n, 0), dtype=np.float32)
        self.segs = np.zeros((n, 0), dtype=np.int64)
        self.docs = np.zeros((n, 0), dtype=np.int64)

    def add(self, scores: np.ndarray, seg: int, docs: np.ndarray) -> None:
        """scores [n, len(docs)] of ``docs`` of segment ``seg``."""
        part = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]  # blocks hold few docs
        sc = np.concatenate([self.scores, np.take_along_axis(scores, part, axis=1)], axis=1)
        dd = np.concatenate([self.docs, docs[part]], axis=1)
        ss = np.concatenate([self.segs, np.full(part.shape, seg, dtype=np.int64)], axis=1)
        keep = np.argsort(-sc, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(sc, keep, axis=1)
        self.docs = np.take_along_axis(dd, keep, axis=1)
        self.segs = np.take_along_axis(ss, keep, axis=1)

    def hits(self, i: int) -> list[Hit]:
        return [(int(s), int(d), float(x)) for s, d, x in zip(self.segs[i], self.docs[i], self.scores[i])]


def _best(docs: np.ndarray, approx: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` sorted docs with the highest approximate scores, and their scores."""
    keep = _top_positions(approx, n)
    return docs[keep], approx[keep]


def _top_positions(scores: np.ndarray, n: int) -> np.ndarray:
    """Sorted positions of the ``n`` highest scores, equal scores to the lower position (as
    everywhere in search), so that which tied candidates go on does not depend on how the
    index is segmented (argpartition alone picks among ties arbitrarily)."""
    if n >= scores.size:
        return np.arange(scores.size)
    cut = -np.partition(-scores, n - 1)[n - 1]
    above = np.flatnonzero(scores > cut)
    return np.sort(np.concatenate([above, np.flatnonzero(scores == cut)[: n - above.size]]))


def with_params(params: SearchParams | None, **changes) -> SearchParams:
    """Copy of ``params`` (or the k=10 defaults) with some fields changed."""
    return replace(params or SearchParams.for_k(10), **changes)
