"""The k-means sample is drawn over the whole stream (not its head), in bounded memory, and a
long build is parked on disk without changing what ends up in the index."""
from __future__ import annotations

import numpy as np
import pytest
from lifecycle_support import stored_codes_match

from colxm.errors import InputError
from colxm.index.index import Index
from colxm.index.manifest import IndexConfig
from colxm.index.pipeline import Chunk
from colxm.index.sampling import RowReservoir
from colxm.index.spill import ChunkSpill
from colxm.store import Record

DIM = 16


def rows_of(labels, length=4):
    """Rows whose every vector holds its row's label in column 0 (so a sample can be traced)."""
    return [np.full((length, DIM), float(lab), np.float32) for lab in labels]


def test_reservoir_is_uniform_over_a_sorted_stream_and_bounded():
    res = RowReservoir(capacity=400, seed=3)
    for part in range(50):  # 50 parts of 20 rows: labels 0..999 in stream order
        res.offer(rows_of(range(part * 20, part * 20 + 20)))
    sample = res.sample(10_000)
    assert len(sample) <= 400 and len(sample) % 4 == 0  # whole rows, within capacity
    labels = np.unique(sample[:, 0])
    assert len(labels) == len(sample) // 4 == 100
    # uniform: each fifth of the stream holds about a fifth of the sample (head-of-stream
    # sampling would put everything in the first fifth)
    counts = np.histogram(labels, bins=5, range=(0, 1000))[0]
    assert counts.min() >= 8, counts


def test_reservoir_prefix_is_whole_rows_and_a_single_long_row_is_cut():
    res = RowReservoir(capacity=10, seed=0)
    res.offer([np.ones((25, DIM), np.float32)])
    assert res.sample(100).shape == (10, DIM)
    res = RowReservoir(capacity=1000, seed=0)
    res.offer(rows_of(range(30), length=5))
    assert res.sample(23).shape == (20, DIM)  # 4 whole rows of 5
    assert res.sample(3).shape == (5, DIM)  # at least one row
    with pytest.raises(ValueError):
        RowReservoir(0)


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
