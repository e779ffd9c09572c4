import numpy as np
import pytest

from colxm.errors import IndexFormatError, InputError
from colxm.index.codec import ResidualCodec, byte_bucket_table, train_codec
from colxm.index.kmeans import KMeansConfig, num_centroids_for, train_centroids


def _vectors(n=4000, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, dim)).astype(np.float32)
    v = centers[rng.integers(0, 50, n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_num_centroids_rule():
    assert num_centroids_for(1_377_956) == 16384  # colbert-ai chose 16384 for this count
    assert num_centroids_for(10_000) == 1024
    assert num_centroids_for(3) == 3
    with pytest.raises(InputError):
        num_centroids_for(0)


def test_kmeans_is_seeded_and_normalised():
    x = _vectors(3000, 32)
    a = train_centroids(x, 64, KMeansConfig(seed=3))
    b = train_centroids(x, 64, KMeansConfig(seed=3))
    c = train_centroids(x, 64, KMeansConfig(seed=4))
    assert a.shape == (64, 32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    h1 = train_centroids(x, 64, KMeansConfig(seed=3, assign="hnsw"))
    np.testing.assert_array_equal(h1, train_centroids(x, 64, KMeansConfig(seed=3, assign="hnsw")))
    # the HNSW-assigned k-means fits the data about as well as the exact one
    fit = lambda c: (x @ c.T).max(1).mean()  # noqa: E731
    assert fit(h1) >= fit(a) - 0.02


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_round_trip_within_quantisation_bound(nbits):
    x = _vectors()
    codec = train_codec(x, nbits=nbits, num_centroids=64, seed=0)
    codes, res = codec.compress(x)
    assert codes.dtype == np.int32 and res.dtype == np.uint8 and res.shape == (len(x), 64 * nbits // 8)
    # codes are the nearest centroids
    np.testing.assert_array_equal(codes, (x @ codec.centroids.T).argmax(1))
    # every residual value is reconstructed by its bucket's weight: the error per dimension is at most
    # the distance from the value to the weight of the bucket it falls in (bucket edges or the range)
    resid = x - codec.centroids[codes]
    buckets = codec.unpack(res)
    np.testing.assert_array_equal(buckets, codec.quantize(resid))
    edges = np.concatenate([[resid.min()], codec.bucket_cutoffs, [resid.max()]])
    recon = codec.bucket_weights[buckets]
    bound = np.maximum(np.abs(edges[buckets] - recon), np.abs(edges[buckets.astype(int) + 1] - recon))
    assert np.all(np.abs(resid - recon) <= bound + 1e-6)
    # decompressed vectors are centroid + reconstructed residual: as they are for search (codecs
    # colxm trains score them so), normalised as an estimate of the (unit) input
    expect = codec.centroids[codes] + recon
    assert codec.normalize is False
    np.testing.assert_allclose(codec.decompress(codes, res), expect, atol=1e-6)
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    dec = codec.decompress(codes, res, normalize=True)
    np.testing.assert_allclose(dec, expect, atol=1e-5)
    cos = (dec * x).sum(1)
    assert cos.mean() > {1: 0.9, 2: 0.96, 4: 0.99}[nbits]
    # more bits, less error
    err = np.abs(resid - recon).mean()
    assert err <= codec.avg_residual


def test_bucket_quantiles_follow_colbert_definition():
    x = _vectors(2000, 32)
    codec = train_codec(x, nbits=2, num_centroids=32, seed=0)
    assert np.all(np.diff(codec.bucket_cutoffs) > 0)
    assert np.all(np.diff(codec.bucket_weights) > 0)
    # weights are the bucket midpoint quantiles: each weight lies inside its bucket
    assert codec.bucket_weights[0] < codec.bucket_cutoffs[0] < codec.bucket_weights[1]
    assert codec.bucket_weights[-1] > codec.bucket_cutoffs[-1]


def test_bit_layout_matches_colbert_ai():
    # colbert-ai: bits of bucket b are (b>>0)&1, (b>>1)&1 (LSB first), np.packbits is MSB first.
    codec = ResidualCodec(nbits=2, dim=8, centroids=np.eye(8, dtype=np.float32),
                          bucket_cutoffs=[-0.1, 0, 0.1], bucket_weights=[-0.2, -0.05, 0.05, 0.2], avg_residual=0.1)
    buckets = np.array([[1, 2, 3, 0, 0, 0, 0, 1]], dtype=np.uint8)
    bits = ((buckets[..., None] >> np.arange(2, dtype=np.uint8)) & 1).reshape(-1)
    expected = np.packbits(bits).reshape(1, 2)
    np.testing.assert_array_equal(codec.pack(buckets), expected)
    np.testing.assert_array_equal(codec.unpack(expected), buckets)
    for nbits in (1, 2, 4):
        t = byte_bucket_table(nbits)
        assert t.shape == (256, 8 // nbits) and t.max() == (1 << nbits) - 1


def test_arrays_round_trip_and_errors():
    codec = train_codec(_vectors(1000, 32), nbits=2, num_centroids=16)
    again = ResidualCodec.from_arrays(codec.to_arrays())
    for name, value in codec.to_arrays().items():
        np.testing.assert_array_equal(again.to_arrays()[name], value)
    assert again.avg_residual == codec.avg_residual and again.nbits == 2 and again.dim == 32
    # trained centroids are stored as int8 rows with a scale each, and read back exactly
    arrays = codec.to_arrays()
    assert arrays["centroids"].dtype == np.int8 and arrays["centroid_scales"].shape == (16,)
    np.testing.assert_array_equal(again.centroids, codec.centroids)
    assert again.centroid_dtype == "int8"
    # a codec with other centroids (e.g. imported from colbert-ai) keeps float16, as before
    imported = ResidualCodec(nbits=2, dim=32, centroids=codec.centroids.astype(np.float16).astype(np.float32),
                             bucket_cutoffs=codec.bucket_cutoffs, bucket_weights=codec.bucket_weights,
                             avg_residual=codec.avg_residual)
    assert imported.to_arrays()["centroids"].dtype == np.float16
    # how search scores decompressed vectors round-trips; a codec written before the choice
    # existed (no "normalize" array) keeps colbert-ai's normalised scoring
    assert imported.normalize and not codec.normalize and not again.normalize
    assert ResidualCodec.from_arrays({k: v for k, v in arrays.items() if k != "normalize"}).normalize
    with pytest.raises(IndexFormatError, match="centroid_scales"):
        ResidualCodec.from_arrays({k: v for k, v in arrays.items() if k != "centroid_scales"})
    with pytest.raises(IndexFormatError):
        ResidualCodec.from_arrays({"centroids": codec.centroids})
    with pytest.raises(InputError):
        codec.compress(np.zeros((3, 31), np.float32))
    with pytest.raises(InputError):
        train_codec(np.zeros((10, 32), np.float32), nbits=3)


def test_fast_assignment_nearly_always_exact(capfd):
    rng = np.random.default_rng(0)
    cent = rng.standard_normal((4096, 32)).astype(np.float32)
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    codec = ResidualCodec(nbits=2, dim=32, centroids=cent, bucket_cutoffs=[-0.1, 0, 0.1],
                          bucket_weights=[-0.2, -0.05, 0.05, 0.2], avg_residual=0.1)
    x = cent[rng.integers(0, 4096, 3000)] + 0.05 * rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    exact, fast = codec.assign(x), codec.assign(x, fast=True)
    assert "WARNING" not in capfd.readouterr().err  # faiss's "please provide at least ... points"
    assert (exact == fast).mean() >= 0.97
    best = (x * cent[exact]).sum(1)
    got = (x * cent[fast]).sum(1)
    assert np.all(got <= best + 1e-6) and (best - got).mean() < 0.01


def test_held_rows_move_to_the_front_in_place():
    from colxm.index.codec import _held_rows_to_front

    rng = np.random.default_rng(3)
    x = np.arange(200, dtype=np.float32).repeat(4).reshape(200, 4)
    for held in (np.array([0, 1, 2]), np.array([5, 50, 199]), np.sort(rng.choice(200, 30, replace=False))):
        y = x.copy()
        _held_rows_to_front(y, held)
        assert set(y[: held.size, 0].astype(int)) == set(held.tolist())  # the held rows, in front
        assert sorted(y[:, 0].astype(int)) == list(range(200))  # a permutation: nothing lost
        assert (y == y[:, :1]).all()  # rows moved whole


def test_train_codec_leaves_the_callers_sample_alone_unless_told():
    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    before = x.copy()
    a = train_codec(x, nbits=2, num_centroids=16, seed=0)
    np.testing.assert_array_equal(x, before)
    b = train_codec(x, nbits=2, num_centroids=16, seed=0, reorder_sample=True)
    assert not np.array_equal(x, before) and sorted(map(tuple, x)) == sorted(map(tuple, before))
    np.testing.assert_array_equal(a.centroids, b.centroids)  # the same codec either way
    np.testing.assert_array_equal(a.bucket_cutoffs, b.bucket_cutoffs)
