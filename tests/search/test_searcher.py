import numpy as np
import pytest

from colxm.errors import IndexFormatError, InputError
from colxm.index.codec import train_codec
from colxm.search import SearchParams, Searcher, SegmentData

from colxm_synth import clustered_docs, exact_topk, queries_from


@pytest.fixture(scope="module")
def setup():
    docs, _ = clustered_docs(n_docs=600, dim=32, n_topics=60, seed=0)
    codec = train_codec(np.concatenate(docs), nbits=2, num_centroids=128, seed=0)
    # two segments, as an index with an appended batch would have
    segs = [SegmentData.from_vectors(codec, docs[:400]), SegmentData.from_vectors(codec, docs[400:])]
    queries = queries_from(docs, n=30, qlen=8)
    return docs, codec, segs, queries


def _global(hits):
    return [(400 if s == 1 else 0) + d for s, d, _ in hits]


def test_exhaustive_matches_bruteforce_on_decompressed(setup):
    docs, codec, segs, queries = setup
    res = Searcher(codec, segs).search(queries, k=10, params=SearchParams(exhaustive=True))
    dec = [codec.decompress(*codec.compress(d)) for d in docs]
    for q, hits in zip(queries, res):
        assert _global(hits) == exact_topk(q, dec, 10)
        assert all(hits[i][2] >= hits[i + 1][2] for i in range(len(hits) - 1))
    # and the compressed exact ranking is close to the one over raw vectors
    raw = np.mean([len(set(_global(h)) & set(exact_topk(q, docs, 10))) / 10 for q, h in zip(queries, res)])
    assert raw >= 0.8


# nrerank 512 is the k=10 default's exact stage (17% of these documents). With a codebook fitted to
# the whole collection (k-means on up to 128 tokens per centroid), ndocs // 4 = 256 reaches 0.984
# here (0.994 with session 5's 32 per centroid); on the real 45k set the default k=10 setting's
# overlap with exhaustive rose from 0.969 to 0.982 with it (benchmarks/README.md, Search).
@pytest.mark.parametrize("params,scan", [(SearchParams(ncells=4, ndocs=1024, nrerank=512), False),  # approximate scores from the lists
                                         (SearchParams(ncells=4, ndocs=512, approx_cells=0), False),  # colbert-ai's way
                                         (SearchParams(ncells=4, ndocs=1024, nrerank=512), True),  # int8 centroid scan
                                         # ... of the coarse lists probed by the tokens (2 of 8 each)
                                         (SearchParams(ncells=4, ndocs=1024, nrerank=512, centroid_nprobe=2), True)])
def test_plaid_overlap_with_exhaustive(params, scan):
    # 3000 docs: the candidate and ndocs stages really cut (ndocs=512 keeps < 20% of the docs)
    docs, _ = clustered_docs(n_docs=3000, dim=32, n_topics=200, seed=0)
    codec = train_codec(np.concatenate(docs), nbits=2, num_centroids=512, seed=0)
    s = Searcher(codec, [SegmentData.from_vectors(codec, docs)])
    if scan:  # the int8 scan of large codebooks, here on 512 centroids
        s.scorer.scan_min = 0
    queries = queries_from(docs, n=50, qlen=8)
    ex = s.search(queries, k=10, params=SearchParams(exhaustive=True))
    ap = s.search(queries, k=10, params=params)
    ov = np.mean([len({h[:2] for h in a} & {h[:2] for h in e}) / 10 for a, e in zip(ap, ex)])
    assert ov >= 0.99
    # scores of PLAID hits are the exact scores, computed in integers (int8 query rows): each
    # query token's similarity within ~1e-3 of exhaustive search's float32 one (bounded in
    # tests/search/test_rerank.py), here 8 tokens of 32 dimensions
    for q, a, e in zip(queries, ap, ex):
        ed = {h[:2]: h[2] for h in e}
        for h in a:
            if h[:2] in ed:
                assert abs(ed[h[:2]] - h[2]) <= 2e-3 * len(q)


def test_tight_params_still_return_k(setup):
    docs, codec, segs, queries = setup
    res = Searcher(codec, segs).search(queries[:5], k=10, params=SearchParams(ncells=1, ndocs=40,
                                                                                centroid_score_threshold=0.9))
    assert all(len(h) == 10 for h in res)


def test_allowed_and_live_masks(setup):
    docs, codec, segs, queries = setup
    allowed = [np.arange(400) % 3 == 0, None]
    live = np.ones(200, bool)
    live[::2] = False
    segs2 = [segs[0], SegmentData(**{**segs[1].__dict__, "live": live})]
    s = Searcher(codec, segs2)
    for params in (SearchParams(exhaustive=True), SearchParams()):
        for hits in s.search(queries, k=10, params=params, allowed=allowed):
            assert len(hits) == 10
            for seg, d, _ in hits:
                assert (seg == 0 and d % 3 == 0) or (seg == 1 and d % 2 == 1)
    # filtered exhaustive == brute force over the allowed docs
    dec = [codec.decompress(*codec.compress(d)) for d in docs]
    ok = [i for i in range(600) if (i < 400 and i % 3 == 0) or (i >= 400 and (i - 400) % 2 == 1)]
    for q, hits in zip(queries[:5], s.search(queries[:5], k=5, params=SearchParams(exhaustive=True), allowed=allowed)):
        assert _global(hits) == [ok[i] for i in exact_topk(q, [dec[i] for i in ok], 5)]


def test_batched_equals_single(setup):
    docs, codec, segs, queries = setup
    s = Searcher(codec, segs)
    stacked = np.stack(queries[:6])
    assert s.search(stacked, k=5) == [s.search(q, k=5)[0] for q in queries[:6]]


def test_bad_input(setup):
    docs, codec, segs, queries = setup
    s = Searcher(codec, segs)
    with pytest.raises(InputError):
        s.search([np.zeros((4, 31), np.float32)])
    with pytest.raises(InputError):
        s.search(queries[:1], k=0)
    with pytest.raises(InputError):
        s.search(queries[:1], allowed=[None])
    with pytest.raises(InputError):
        s.search(queries[:1], params=SearchParams(ndocs=0))


def test_list_based_approximation_is_plaid_approximation_when_it_reads_every_centroid():
    from colxm.search.candidates import approx_scores, approx_scores_lists

    docs, _ = clustered_docs(n_docs=300, dim=32, n_topics=50, seed=0)
    codec = train_codec(np.concatenate(docs), nbits=2, num_centroids=64, seed=0)
    seg = SegmentData.from_vectors(codec, docs)
    q = queries_from(docs, n=1, qlen=8)[0]
    S = q @ codec.centroids.T
    cand = np.arange(0, 300, 3)
    order = np.argsort(-S, axis=1)

    def lists(m):
        ids = order[:, :m]
        vals = np.take_along_axis(S, ids, 1)
        fallback = S[np.arange(len(S)), order[:, m]] if m < S.shape[1] else np.full(len(S), -1e4, np.float32)
        return approx_scores_lists(seg, cand, vals, ids, fallback, np.ones(ids.shape, bool))

    np.testing.assert_allclose(lists(64), approx_scores(seg, cand, S), rtol=1e-6)
    # with fewer centroids per token, a missing one is imputed by an upper bound: never below
    assert np.all(lists(8) >= approx_scores(seg, cand, S) - 1e-5)
    assert np.any(lists(8) > approx_scores(seg, cand, S) + 1e-3)


@pytest.mark.parametrize("params", [SearchParams(ncells=4, centroid_score_threshold=0.0, ndocs=8, nrerank=4),
                                    SearchParams(ncells=4, centroid_score_threshold=0.0, ndocs=8, nrerank=4,
                                                 approx_cells=0)])
def test_budgets_are_per_index_not_per_segment(setup, params):
    """ndocs/nrerank bound the whole search: the same documents split into two segments give the
    same results as one segment (a per-segment budget would rerank twice as many documents)."""
    docs, codec, segs, queries = setup
    one = Searcher(codec, [SegmentData.from_vectors(codec, docs)]).search(queries, k=3, params=params)
    two = Searcher(codec, segs).search(queries, k=3, params=params)
    assert [[d for _, d, _ in h] for h in one] == [_global(h) for h in two]
    assert np.allclose([[x for *_, x in h] for h in one], [[x for *_, x in h] for h in two])


def test_out_of_range_centroid_id_is_a_format_error(setup):
    docs, codec, segs, queries = setup
    bad_codes = np.array(segs[0].codes, copy=True)
    bad_codes[:50] = codec.num_centroids + 7
    bad = SegmentData(**{**segs[0].__dict__, "codes": bad_codes})
    # exhaustive search (float32) and PLAID's exact stage over every document (integer scoring)
    for params in (SearchParams(exhaustive=True), SearchParams(ncells=128, centroid_score_threshold=-1.0,
                                                               ndocs=1000, nrerank=1000)):
        with pytest.raises(IndexFormatError, match="corrupted"):
            Searcher(codec, [bad]).search(queries[:3], k=10, params=params)


def test_ties_among_approximate_scores_go_to_the_lower_position():
    from colxm.search.searcher import _top_positions

    scores = np.array([1.0, 3.0, 2.0, 3.0, 2.0, 2.0, 0.5], dtype=np.float32)
    np.testing.assert_array_equal(_top_positions(scores, 3), [1, 2, 3])  # of the tied 2.0s, the first
    np.testing.assert_array_equal(_top_positions(scores, 4), [1, 2, 3, 4])
    np.testing.assert_array_equal(_top_positions(scores, 9), np.arange(7))
