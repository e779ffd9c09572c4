"""The full-precision tier: re-scoring with the stored original vectors makes PLAID and exhaustive
search exact MaxSim over the vectors that were indexed, where 2-bit compression alone is not."""
import os

import numpy as np
import pytest

from colxm.index.index import Index
from colxm.index.manifest import IndexConfig
from colxm.search import SearchParams, Searcher
from colxm.search.searcher import with_params

from colxm_synth import clustered_docs, exact_topk, queries_from

K = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    docs, _ = clustered_docs(n_docs=3000, dim=32, n_topics=200, seed=0)
    queries = queries_from(docs, n=50, qlen=8)
    items = [{"id": str(i), "text": f"doc {i}"} for i in range(len(docs))]
    cfg = IndexConfig(nbits=2, num_centroids=512, full_vectors=True)
    idx = Index.build(tmp_path_factory.mktemp("full") / "idx", items[:2000], embeddings=docs[:2000], config=cfg)
    idx.add(items[2000:], embeddings=docs[2000:])  # two segments: re-scoring merges across them
    assert idx.stats()["segments"] == 2
    truth = [[int(i) for i in exact_topk(q, docs, K)] for q in queries]
    yield idx, docs, queries, truth
    idx.close()


def ids(hits):
    return [int(h.id) for h in hits]


def maxsim(q, d):
    return float((q @ d.T).max(1).sum())


def test_plaid_with_full_rerank_is_exact_where_compressed_is_not(setup):
    idx, docs, queries, truth = setup
    full = idx.search_embeddings(queries, k=K)  # default: full_rerank automatic
    compressed = idx.search_embeddings(queries, k=K, params=with_params(SearchParams.for_k(K), full_rerank=0))
    same_full = sum(ids(h) == t for h, t in zip(full, truth))
    same_compressed = sum(ids(h) == t for h, t in zip(compressed, truth))
    overlap = lambda res: np.mean([len(set(ids(h)) & set(t)) / K for h, t in zip(res, truth)])  # noqa: E731
    # the tier matters: compression alone reorders close scores in every query here
    assert same_compressed <= 10 and overlap(compressed) <= 0.95
    assert same_full >= 48 and overlap(full) >= 0.99
    for q, hits in zip(queries, full):  # the scores are exact MaxSim (to float16 rounding)
        np.testing.assert_allclose([h.score for h in hits], [maxsim(q, docs[int(h.id)]) for h in hits], atol=2e-3)


def test_exhaustive_with_full_vectors_is_bruteforce(setup):
    idx, docs, queries, truth = setup
    res = idx.search_embeddings(queries, k=K, params=SearchParams(exhaustive=True))
    half = [d.astype(np.float16).astype(np.float32) for d in docs]
    for q, hits, t in zip(queries, res, truth):
        assert ids(hits) == t
        scores = [h.score for h in hits]
        np.testing.assert_allclose(scores, [maxsim(q, half[i]) for i in t], rtol=1e-5)  # what is stored
        np.testing.assert_allclose(scores, [maxsim(q, docs[i]) for i in t], atol=2e-3)  # what was given
    # full_rerank=0 is the compressed exhaustive mode: a different ranking
    off = idx.search_embeddings(queries, k=K, params=SearchParams(exhaustive=True, full_rerank=0))
    assert sum(ids(h) == t for h, t in zip(off, truth)) <= 10


def test_threads_and_block_sizes_give_the_same_results(setup, monkeypatch):
    from colxm.search import rerank

    idx, docs, queries, truth = setup
    s = idx._snap.searcher
    one = [Searcher(s.codec, s.segments, threads=1).search(q, k=K)[0] for q in queries[:12]]
    many = Searcher(s.codec, s.segments, threads=3).search(queries[:12], k=K)
    monkeypatch.setattr(rerank, "BLOCK_TOKENS", 40)  # many small positioned reads
    small = Searcher(s.codec, s.segments, threads=2).search(queries[:12], k=K)
    for a, b, c in zip(one, many, small):
        assert [h[:2] for h in a] == [h[:2] for h in b] == [h[:2] for h in c]
        np.testing.assert_allclose([h[2] for h in a], [h[2] for h in c], rtol=1e-6)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_search_reads_the_vectors_without_mapping_them(setup):
    """Mapped pages would count in the search's RSS: vectors.npy is read, never memory-mapped."""
    idx, docs, queries, truth = setup
    idx.search_embeddings(queries[:5], k=K)
    idx.search_embeddings(queries[:5], k=K, params=SearchParams(exhaustive=True))
    maps = open("/proc/self/maps").read()
    assert "residuals.npy" in maps  # the check sees the segment files that are mapped
    assert "vectors.npy" not in maps



def test_full_vector_indexes_get_their_own_defaults(setup, monkeypatch):
    """Without params, a full-vector index searches with for_k(k, full=True): wider candidates and
    a float16 stage of at least k documents, so its top 100 is exact too."""
    idx, docs, queries, truth = setup
    seen = []
    real = Searcher._plaid_one

    def spy(self, Q, k, params, masks, nfull):
        seen.append((params, nfull))
        return real(self, Q, k, params, masks, nfull)

    monkeypatch.setattr(Searcher, "_plaid_one", spy)
    for k in (10, 100):
        seen.clear()
        res = idx.search_embeddings(queries[:20], k=k)
        want = SearchParams.for_k(k, full=True)
        assert want != SearchParams.for_k(k) and len(seen) == 20
        assert all(p == want and n >= k for p, n in seen)
        top = [set(int(i) for i in exact_topk(q, docs, k)) for q in queries[:20]]
        assert np.mean([len(set(ids(h)) & t) / k for h, t in zip(res, top)]) >= 0.99


def test_full_stage_covering_the_exact_stage_skips_decompression(setup):
    """With full_rerank >= nrerank every document of the exact stage is re-scored with the
    originals, so the compressed exact scores are never computed; the hits are the same as
    when they are (they only decided an order that the float16 stage redoes)."""
    idx, docs, queries, truth = setup
    searcher = idx._snap.searcher
    wide = SearchParams(ncells=4, centroid_score_threshold=0.3, ndocs=512, nrerank=64, full_rerank=64)
    searcher.stage_seconds.clear()
    skipped = idx.search_embeddings(queries, k=K, params=wide)
    assert "exact" not in searcher.stage_seconds and searcher.stage_seconds["full"] > 0
    both = idx.search_embeddings(queries, k=K, params=with_params(wide, full_rerank=63))
    assert searcher.stage_seconds["exact"] > 0
    for a, b, q in zip(skipped, both, queries):
        np.testing.assert_allclose([h.score for h in a], [maxsim(q, docs[int(h.id)]) for h in a], atol=2e-3)
        # 63 of 64 re-scored: the same top 10 unless the compressed stage put a true top-10 last
        assert len(set(ids(a)) & set(ids(b))) >= 9
