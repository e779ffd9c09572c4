"""The k-means sample is single tokens drawn uniformly over the whole stream (not its head, not
whole rows), in bounded memory, with whole rows held out for the drift baseline; a long build is
parked on disk without changing what ends up in the index."""
from __future__ import annotations

import numpy as np
import pytest
from lifecycle_support import stored_codes_match

from colxm.errors import InputError
from colxm.index.index import Index
from colxm.index.manifest import IndexConfig
from colxm.index.pipeline import Chunk, train_codec_on
from colxm.index.sampling import HELD_OUT_MAX, MIN_FOR_HELD_OUT, CodecSample, TokenReservoir
from colxm.index.spill import ChunkSpill
from colxm.store import Record

DIM = 16


def rows_of(labels, length=8):
    """Rows whose vectors hold their row's label in column 0 and their position in the row in
    column 1 (exact in float16), so every sampled token can be traced."""
    out = []
    for lab in labels:
        v = np.zeros((length, DIM), np.float32)
        v[:, 0], v[:, 1] = float(lab), np.arange(length)
        out.append(v)
    return out


def offer_stream(sampler, n_rows=1000, part=20, length=8):
    for a in range(0, n_rows, part):  # labels 0..n_rows-1 in stream order
        sampler.offer(rows_of(range(a, min(a + part, n_rows)), length))


def tokens(x):
    return {(int(a), int(b)) for a, b in x[:, :2]}


def test_token_sample_is_uniform_over_a_sorted_stream_and_spread_over_rows():
    sampler = CodecSample(capacity=800, seed=3)
    offer_stream(sampler)  # 8,000 tokens
    train, held = sampler.split(10_000)
    assert train.shape == (800, DIM) and train.dtype == np.float32
    assert len(tokens(train)) == 800  # no token twice
    # uniform: each fifth of the stream holds about a fifth of the sample (head-of-stream
    # sampling would put everything in the first fifth)
    counts = np.histogram(train[:, 0], bins=5, range=(0, 1000))[0]
    assert counts.min() >= 120 and counts.max() <= 200, counts
    # single tokens, not whole rows: 800 tokens of 8-token rows come from hundreds of rows (a
    # sample of whole rows would cover 100, 8 tokens each; here ~1.4 a row, none gives all 8)
    per_row = np.bincount(train[:, 0].astype(int), minlength=1000)
    assert (per_row > 0).sum() > 450, (per_row > 0).sum()
    assert per_row[per_row > 0].mean() < 2 and per_row.max() < 8
    # every position of a row is sampled about as often (a cut-off row would favour the head)
    assert np.bincount(train[:, 1].astype(int), minlength=8).min() >= 70


def test_token_reservoir_keeps_exactly_the_smallest_keys_within_its_bound():
    rng = np.random.default_rng(0)
    keys = rng.random(43_000)  # 43x capacity, as a 43M-token stream against 2^20
    vecs = np.zeros((len(keys), DIM), np.float32)
    vecs[:, 0] = np.arange(len(keys)) % 2000
    vecs[:, 1] = np.arange(len(keys)) // 2000
    res = TokenReservoir(capacity=1000)
    for a in range(0, len(keys), 3000):
        res.offer(vecs[a:a + 3000], keys[a:a + 3000])
        assert res.count <= 1.5 * 1000 + 1 and len(res._keys) <= 1.5 * 1000 + 1
    want = np.argsort(keys)[:1000]
    got = res.sample(5000)  # at most capacity
    assert got.shape == (1000, DIM)
    assert np.array_equal(got[:, 0] + 2000 * got[:, 1], want)  # in key order
    assert np.array_equal(res.sample(37), got[:37])  # prefix property
    res = TokenReservoir(capacity=10)
    res.offer(np.ones((25, DIM), np.float32), rng.random(25))  # one long row: cut to capacity
    assert res.sample(100).shape == (10, DIM)
    with pytest.raises(ValueError):
        TokenReservoir(0)
    with pytest.raises(ValueError):
        TokenReservoir(5).sample(3)


def test_held_out_rows_are_whole_and_gave_no_token_to_the_training_sample():
    sampler = CodecSample(capacity=4000, seed=1)
    offer_stream(sampler)
    train, held = sampler.split(4000)
    assert len(train) == 4000
    assert 100 <= len(held) <= min(HELD_OUT_MAX, 4000 // 20)  # ~5% of the sample, whole rows
    held_rows = np.unique(held[:, 0])
    assert len(held) == 8 * len(held_rows)
    assert tokens(held) == {(int(r), p) for r in held_rows for p in range(8)}  # whole rows
    assert not set(held_rows) & set(np.unique(train[:, 0]))  # no token of them in train
    assert held_rows.min() < 300 and held_rows.max() > 700  # drawn over the whole stream


def test_held_out_candidates_left_over_rejoin_the_token_sample():
    # the sample can hold the whole stream; a fifth of the rows are held-out candidates, far
    # more than fit: the leftover ones must go to training, so that train + held = the stream
    sampler = CodecSample(capacity=10_000, seed=2, held_out_share=0.2)
    offer_stream(sampler)
    train, held = sampler.split(10_000)
    assert len(held) == 8_000 // 20 and len(train) == 8_000 - len(held)
    everything = {(r, p) for r in range(1000) for p in range(8)}
    assert tokens(train) | tokens(held) == everything
    assert not tokens(train) & tokens(held)


def test_sample_is_reproducible_for_a_seed_however_the_stream_is_cut():
    def draw(seed, part):
        sampler = CodecSample(capacity=500, seed=seed)
        offer_stream(sampler, part=part)
        return sampler.split(500)

    train, held = draw(7, 20)
    for part in (1, 33, 1000):
        t, h = draw(7, part)
        assert np.array_equal(t, train) and np.array_equal(h, held)
    assert not np.array_equal(draw(8, 20)[0], train)
    sampler = CodecSample(capacity=500, seed=7)
    offer_stream(sampler)
    big = sampler.split(500)[0]
    assert np.array_equal(sampler.split(120)[0], big[:120])  # any prefix is a uniform sample
    with pytest.raises(ValueError, match="already split"):
        sampler.offer(rows_of([1]))


def test_tiny_streams_hold_nothing_out_and_train_on_everything():
    # a single short row that is a held-out candidate still ends up in the training sample
    sampler = CodecSample(capacity=1 << 20, seed=0, held_out_share=1.0)
    sampler.offer(rows_of([5], length=3))
    train, held = sampler.split(1 << 16)
    assert tokens(train) == {(5, 0), (5, 1), (5, 2)} and held.shape == (0, DIM)
    # never more than 5% held out: two rows of 300, both candidates, neither fits in 30 vectors
    sampler = CodecSample(capacity=1 << 20, seed=0, held_out_share=1.0)
    sampler.offer(rows_of([1, 2], length=300))
    train, held = sampler.split(1 << 16)
    assert len(train) == 600 and len(held) == 0
    # under MIN_FOR_HELD_OUT vectors nothing is held out
    sampler = CodecSample(capacity=1 << 20, seed=0, held_out_share=1.0)
    offer_stream(sampler, n_rows=MIN_FOR_HELD_OUT // 8 - 1)
    train, held = sampler.split(1 << 16)
    assert len(held) == 0 and len(train) == 8 * (MIN_FOR_HELD_OUT // 8 - 1)


def test_the_drift_baseline_is_measured_on_the_held_out_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, _, baseline = train_codec_on(x[:500], x[500:], 2, 16, 0)
    assert baseline.vectors == 100
    _, _, baseline = train_codec_on(x[:500], x[:0], 2, 16, 0)
    assert baseline.vectors == 500  # tiny stream: measured on the training sample


@pytest.mark.parametrize("seed", range(4))
def test_a_single_short_document_builds(tmp_path, seed):
    v = np.random.default_rng(seed).normal(size=(3, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    idx = Index.build(tmp_path / "idx", [{"id": "a", "text": "a"}], embeddings=[v],
                      config=IndexConfig(seed=seed))
    assert idx.verify() == []
    assert stored_codes_match(idx, {"a": v}) == []
    idx.close()


def test_spill_replays_chunks_exactly(tmp_path):
    rng = np.random.default_rng(0)
    chunks = []
    for c in range(3):
        vecs = [rng.normal(size=(int(rng.integers(1, 6)), DIM)).astype(np.float32) for _ in range(4)]
        rows = [(Record(f"d{c}.{i}", f"tëxt {i}", "fr" if i % 2 else None, {"n": i, "tags": ["a"]}), i % 2)
                for i in range(4)]
        chunks.append(Chunk(rows, vecs))
    spill = ChunkSpill(tmp_path / "spill")
    for ch in chunks:
        spill.write(ch)
    back = list(spill.replay(DIM))
    assert len(back) == 3
    for a, b in zip(chunks, back):
        assert a.rows == b.rows
        assert all(np.array_equal(x, y) for x, y in zip(a.vecs, b.vecs))
    spill.remove()
    assert not (tmp_path / "spill").exists()


def sorted_two_topic_collection(n_docs=240, seed=0):
    """First half of the documents near one set of directions, second half near another."""
    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(2, 8, DIM)).astype(np.float32)
    docs, vecs = [], []
    for i in range(n_docs):
        t = topics[0 if i < n_docs // 2 else 1]
        v = t[rng.integers(0, 8, size=6)] + 0.05 * rng.normal(size=(6, DIM)).astype(np.float32)
        docs.append({"id": f"d{i}", "text": f"doc {i}"})
        vecs.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return docs, vecs


def test_codec_fits_the_tail_of_a_sorted_collection(tmp_path):
    docs, vecs = sorted_two_topic_collection()
    # 240 x 6 = 1,440 vectors, sample capacity 300: the head alone would hold only the first topic
    cfg = IndexConfig(chunk_documents=16, kmeans_sample_vectors=300, num_centroids=32)
    idx = Index.build(tmp_path / "idx", docs, embeddings=vecs, config=cfg)
    centroids = idx._snap.codec.centroids
    for half in (vecs[:120], vecs[120:]):
        x = np.concatenate(half)
        best = (x @ centroids.T).max(axis=1)
        assert best.mean() > 0.95, best.mean()  # both topics have centroids near them
    assert stored_codes_match(idx, {d["id"]: v for d, v in zip(docs, vecs)}) == []
    assert not list((tmp_path / "idx" / "tmp").glob("spill-*"))  # parked chunks removed
    assert idx.verify() == []
    idx.close()


def test_a_failing_stream_leaves_no_index_and_no_spill(tmp_path):
    docs, vecs = sorted_two_topic_collection(60)
    cfg = IndexConfig(chunk_documents=8, kmeans_sample_vectors=50)  # parks chunks before failing
    with pytest.raises(RuntimeError, match="source went away"):
        Index.build(tmp_path / "idx", docs, embeddings=_failing(vecs), config=cfg)
    assert list(tmp_path.iterdir()) == []  # no index, and the temp build folder (spill too) is gone


def _failing(vecs):
    yield from vecs[:40]
    raise RuntimeError("source went away")


def test_empty_stream_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no document has text"):
        Index.build(tmp_path / "idx", [{"id": "a", "text": " "}], embeddings=[np.zeros((0, DIM), np.float32)],
                    config=IndexConfig())
