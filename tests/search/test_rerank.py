"""The exact stage: integer scoring of centroid + residual (codecs colxm trains) against float32,
and colbert-ai's normalised scoring for codecs that ask for it (imported indexes)."""
import numpy as np
import pytest

from colxm.index.codec import ResidualCodec, train_codec
from colxm.search import SegmentData
from colxm.search.rerank import Int8Query, int8_scoring, int8_token_sims, maxsim_docs, token_sims


def _unit(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("nbits", [1, 2, 4])
@pytest.mark.parametrize("rows", [3, 32])
def test_integer_similarities_within_their_rounding_bound(nbits, rows):
    rng = np.random.default_rng(nbits)
    x = _unit(rng, 6000, 64)
    codec = train_codec(x, nbits=nbits, num_centroids=64, seed=0)
    assert int8_scoring(codec)
    codes, res = codec.compress(x[:1001])  # not a multiple of 8 tokens
    Q = _unit(rng, rows, 64)
    exact = token_sims(codec, codes, res, Q).copy()
    query = Int8Query(Q)
    got = int8_token_sims(codec, codes, res, query).copy()
    # q8 * s_q = q + e_q (|e_q| <= s_q / 2 per value), the int8 weights * s_w = w + e_w
    # (|e_w| <= s_w / 2), centroids exact as stored: the error of <q, c + w> is bounded by
    # |e_q| . |c + w| + |q| . |e_w| + |e_q| . |e_w| summed over the dimensions
    v = codec.decompress(codes, res)
    _, w_scale = codec.int8_weight_lut
    sq = query.scale.numpy()[:, None]
    bound = (sq / 2) * np.abs(v).sum(1)[None, :] + (w_scale / 2) * np.abs(Q).sum(1)[:, None] \
        + (sq / 2) * (w_scale / 2) * 64 + 1e-5
    assert np.all(np.abs(got - exact) <= bound)
    assert np.abs(got - exact).max() > 0  # really computed another way
    # a token's similarity does not depend on where it sits in the block
    part = int8_token_sims(codec, codes[5:21], res[5:21], query).copy()
    np.testing.assert_array_equal(part, got[:, 5:21])


def test_normalised_scoring_for_imported_codecs():
    rng = np.random.default_rng(0)
    docs = [_unit(rng, int(n), 32) for n in rng.integers(3, 12, 50)]
    trained = train_codec(np.concatenate(docs), nbits=2, num_centroids=32, seed=0)
    imported = ResidualCodec(nbits=2, dim=32, centroids=trained.centroids, bucket_cutoffs=trained.bucket_cutoffs,
                             bucket_weights=trained.bucket_weights, avg_residual=trained.avg_residual)
    assert imported.normalize and not int8_scoring(imported)
    Q = _unit(rng, 8, 32)
    qb = np.array([0, 8])
    for codec in (trained, imported):
        seg = SegmentData.from_vectors(codec, docs)
        docs_ids = np.arange(len(docs))
        expect = []
        for d in docs:
            v = codec.decompress(*codec.compress(d))  # normalised exactly when the codec says so
            expect.append((Q @ v.T).max(1).sum())
        if codec.normalize:
            assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
        np.testing.assert_allclose(maxsim_docs(codec, seg, docs_ids, Q, qb, integer=False)[0], expect, atol=1e-5)
        got = maxsim_docs(codec, seg, docs_ids, Q, qb)[0]
        np.testing.assert_allclose(got, expect, atol=1e-5 if codec.normalize else 2e-2)
