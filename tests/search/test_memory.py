"""Search memory stays bounded without changing results: block sizes, scratch buffers, threads."""
import threading
import tracemalloc

import numpy as np
import pytest

from colxm.index.codec import train_codec
from colxm.search import SearchParams, Searcher, SegmentData
from colxm.search import candidates, rerank, searcher
from colxm.search import memory
from colxm.search.memory import scratch

from colxm_synth import clustered_docs, queries_from

PARAMS = [SearchParams(exhaustive=True), SearchParams(ncells=4, ndocs=256, nrerank=64),
          SearchParams(ncells=4, ndocs=256, approx_cells=0)]


@pytest.fixture(scope="module")
def setup():
    docs, _ = clustered_docs(n_docs=500, dim=32, n_topics=50, seed=3)
    docs[300] = docs[20].copy()  # exact duplicates: tied scores, in both segments
    docs[450] = docs[20].copy()
    codec = train_codec(np.concatenate(docs), nbits=2, num_centroids=128, seed=0)
    segs = [SegmentData.from_vectors(codec, docs[:400]), SegmentData.from_vectors(codec, docs[400:])]
    queries = queries_from(docs, n=24, qlen=8) + [docs[20][:6].copy()]
    return codec, segs, queries


@pytest.mark.parametrize("params", PARAMS)
def test_block_sizes_do_not_change_results(setup, params, monkeypatch):
    codec, segs, queries = setup
    big = Searcher(codec, segs).search(queries, k=10, params=params)
    monkeypatch.setattr(rerank, "BLOCK_TOKENS", 16)
    monkeypatch.setattr(rerank, "INT8_BLOCK_TOKENS", 24)  # the exact stage of this codec (raw scoring)
    monkeypatch.setattr(candidates, "_ROWS_PER_BLOCK", 5)  # centroid rows converted at once
    monkeypatch.setattr(searcher, "_EXHAUSTIVE_CELLS", 8)  # 256 tokens per exhaustive block
    small = Searcher(codec, segs).search(queries, k=10, params=params)
    # the same documents and scores (BLAS may round the last bit differently for other shapes)
    for a, b in zip(small, big):
        assert {h[:2] for h in a} == {h[:2] for h in b}
        np.testing.assert_allclose(sorted(h[2] for h in a), sorted(h[2] for h in b), rtol=1e-6)


def test_running_top_k_breaks_ties_by_segment_then_doc():
    top = searcher._RunningTopK(2, 3)
    top.add(np.array([[1.0, 2.0, 2.0], [0.5, 0.5, 0.5]], np.float32), 0, np.array([7, 8, 9]))
    top.add(np.array([[2.0, 3.0], [0.5, 0.9]], np.float32), 1, np.array([0, 1]))
    assert top.hits(0) == [(1, 1, 3.0), (0, 8, 2.0), (0, 9, 2.0)]
    assert top.hits(1) == [(1, 1, np.float32(0.9).item()), (0, 7, 0.5), (0, 8, 0.5)]


def test_exhaustive_ties_in_order(setup):
    codec, segs, queries = setup
    for hits in Searcher(codec, segs).search(queries, k=10, params=SearchParams(exhaustive=True)):
        for a, b in zip(hits, hits[1:]):
            assert a[2] > b[2] or (a[2] == b[2] and a[:2] < b[:2])


@pytest.mark.parametrize("params", PARAMS)
def test_threads_give_the_same_results(setup, params):
    codec, segs, queries = setup
    one = [Searcher(codec, segs, threads=1).search(q, k=7, params=params)[0] for q in queries]
    many = Searcher(codec, segs, threads=3).search(queries, k=7, params=params)
    assert len(many) == len(one)
    # same documents and scores; a batch's matrix shapes may round the last bit differently
    for a, b in zip(many, one):
        assert {h[:2] for h in a} == {h[:2] for h in b}
        np.testing.assert_allclose([h[2] for h in a], [h[2] for h in b], rtol=1e-6)


def test_threads_share_one_centroid_scan(setup):
    """The int8 scan (forced on this small codebook) under a batch of 3 threads: one scan built,
    per-thread buffers, the same results as one query at a time."""
    codec, segs, queries = setup
    params = SearchParams(ncells=4, ndocs=256, nrerank=64, centroid_nprobe=1)  # 1 of 2 coarse lists
    single = Searcher(codec, segs, threads=1)
    single.scorer.scan_min = 0
    one = [single.search(q, k=7, params=params)[0] for q in queries]
    batch = Searcher(codec, segs, threads=3)
    batch.scorer.scan_min = 0
    many = batch.search(queries, k=7, params=params)
    scan = batch.scorer._scan
    assert scan is not None and scan.num_lists == 2
    for a, b in zip(many, one):
        assert {h[:2] for h in a} == {h[:2] for h in b}
    assert batch.scorer._scanner() is scan  # built once


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_decompress_into_a_buffer(nbits):
    rng = np.random.default_rng(nbits)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    codec = train_codec(x, nbits=nbits, num_centroids=8, seed=0)
    _, res = codec.compress(x)
    out = np.full((300, 16), np.nan, dtype=np.float32)
    assert codec.decompress_residuals(res, out=out) is out
    np.testing.assert_array_equal(out, codec.decompress_residuals(res))
    small = np.empty((64, res.shape[1]), dtype=np.intp)  # widened 64 rows at a time
    out2 = np.full((300, 16), np.nan, dtype=np.float32)
    codec.decompress_residuals(res, out=out2, index_buffer=small)
    np.testing.assert_array_equal(out, out2)


def test_heap_release_is_rate_limited(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "release_free_heap", lambda: calls.append(1))
    monkeypatch.setattr(memory, "_last_trim", [0.0])
    memory.release_free_heap_every(3600)
    memory.release_free_heap_every(3600)
    assert calls == [1]
    memory.release_free_heap_every(0)
    assert calls == [1, 1]


def test_scratch_is_reused_and_grows():
    a = scratch("test", (4, 5))
    b = scratch("test", (2, 3))
    assert b.base is a.base and b.flags.c_contiguous and b.shape == (2, 3)
    c = scratch("test", (10, 10))
    assert c.shape == (10, 10) and c.base is not a.base


def test_exhaustive_memory_does_not_grow_with_the_index():
    """numpy allocations of an exhaustive search (scratch buffers included: each search runs in a
    new thread) stay far below the decompressed index and do not grow when the index doubles:
    it is scored in blocks, with a running top k."""
    docs, _ = clustered_docs(n_docs=8000, dim=64, n_topics=100, seed=1)
    codec = train_codec(np.concatenate(docs[:1000]), nbits=2, num_centroids=64, seed=0)
    half = Searcher(codec, [SegmentData.from_vectors(codec, docs[:4000])])
    full = Searcher(codec, [SegmentData.from_vectors(codec, docs)])
    queries = queries_from(docs, n=40, qlen=8)

    def peak(s):
        t = threading.Thread(target=s.search, args=(queries,), kwargs={"k": 10, "params": SearchParams(exhaustive=True)})
        tracemalloc.start()
        t.start()
        t.join()
        out = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return out

    decompressed = sum(d.shape[0] for d in docs) * 64 * 4
    p_half, p_full = peak(half), peak(full)
    assert p_full < decompressed / 3
    assert p_full <= p_half + 256 * 1024
