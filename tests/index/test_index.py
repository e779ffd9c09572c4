"""Index lifecycle on precomputed vectors (real codec and searcher): build, open, search,
add/delete/upsert, batch, optimize, reindex, overwrite, locking, and bad input."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from lifecycle_support import DIM, contents, doc, docs_and_vectors, exhaustive, stored_codes_match, vectors

from colxm.errors import IndexFormatError, InputError, WriterLockedError
from colxm.index.index import Index
from colxm.index.manifest import IndexConfig

CFG = IndexConfig(chunk_documents=16, kmeans_sample_vectors=400)


@pytest.fixture
def built(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(60)])
    idx = Index.build(tmp_path / "idx", ds, embeddings=vs, config=CFG)
    yield idx
    idx.close()


def top1(idx, key):
    return idx.search_embeddings([vectors(key)], k=1, params=exhaustive())[0][0].id


def test_build_open_search(built, tmp_path):
    assert len(built) == 60 and built.ids() == [f"d{i}" for i in range(60)]
    assert built.generation == 1 and built.verify() == []
    s = built.last_summary
    assert (s.documents, s.indexed, s.passages, s.duplicates, s.empty) == (60, 60, 60, 0, 0)
    # several chunks streamed into one segment (parked on disk: more vectors than the 400-vector
    # k-means sample) and compressed exactly as the codec compresses them directly
    assert built.stats()["segments"] == 1
    for i in (0, 17, 59):
        assert top1(built, f"d{i} v0") == f"d{i}"
    reopened = Index.open(tmp_path / "idx")
    hits = reopened.search_embeddings([vectors("d5 v0")], k=3)  # default (approximate) params
    assert hits[0][0].id == "d5" and hits[0][0].text == "d5 v0" and len(hits[0]) == 3
    assert hits[0][0].score >= hits[0][1].score >= hits[0][2].score
    reopened.close()


def test_duplicates_keep_last_and_empty_texts_are_counted(tmp_path):
    ds = [doc("a"), doc("b"), {"id": "a", "text": "a v1"}, {"id": "e", "text": "   "}, doc("c"), ("a", "a v2")]
    vs = [vectors("a v0"), vectors("b v0"), vectors("a v1"), np.zeros((0, DIM), np.float32), vectors("c v0"), vectors("a v2")]
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=CFG)
    s = idx.last_summary
    assert (s.documents, s.indexed, s.duplicates, s.empty) == (6, 3, 2, 1)
    assert s.duplicate_ids == ["a"] and s.empty_ids == ["e"]
    assert sorted(idx.ids()) == ["a", "b", "c"] and contents(idx)["a"] == "a v2"
    assert top1(idx, "a v2") == "a" and idx.verify() == []
    idx.close()


def test_add_delete_upsert(built):
    g = built.generation
    ds, vs = docs_and_vectors(["n1", "n2"])
    s = built.add(ds, embeddings=vs)
    assert (s.indexed, s.generation) == (2, g + 1) and len(built) == 62
    assert top1(built, "n2 v0") == "n2"
    with pytest.raises(InputError, match="already in the index"):
        built.add([doc("d3")], embeddings=[vectors("d3 v9")])
    assert built.generation == g + 1 and contents(built)["d3"] == "d3 v0"
    s = built.delete(["d1", "d2", "nope", "d1"])
    assert (s.deleted, s.not_found) == (2, 1) and "d1" not in built and len(built) == 60
    assert all(h.id not in ("d1", "d2") for h in built.search_embeddings([vectors("d1 v0")], k=60, params=exhaustive())[0])
    s = built.upsert([doc("d4", 1), doc("n3", 1)], embeddings=[vectors("d4 v1"), vectors("n3 v1")])
    assert (s.replaced, s.indexed) == (1, 2)
    assert contents(built)["d4"] == "d4 v1" and top1(built, "d4 v1") == "d4" and len(built) == 61
    assert built.verify() == []
    assert built.generation == g + 3


def test_batch_is_one_commit_and_rolls_back_on_error(built):
    g = built.generation
    with built.batch():
        built.delete(["d0"])
        ds, vs = docs_and_vectors(["b1"])
        built.add(ds, embeddings=vs)
        built.upsert([doc("d9", 2)], embeddings=[vectors("d9 v2")])
    assert built.generation == g + 1 and "d0" not in built and "b1" in built
    assert contents(built)["d9"] == "d9 v2"
    before = contents(built)
    with pytest.raises(RuntimeError):
        with built.batch():
            built.delete(["d10"])
            built.add([doc("b2")], embeddings=[vectors("b2 v0")])
            raise RuntimeError("boom")
    assert built.generation == g + 1 and contents(built) == before
    assert not any((built.path / "tmp").iterdir())  # the rolled-back segment was removed
    reader = Index.open(built.path)
    assert contents(reader) == before
    reader.close()


def test_optimize_merges_and_drops_deleted_rows(built):
    for i in range(3):
        ds, vs = docs_and_vectors([f"x{i}a", f"x{i}b"])
        built.add(ds, embeddings=vs)
    built.delete(["d0", "x1a"])
    built.upsert([doc("d5", 1)], embeddings=[vectors("d5 v1")])
    st = built.stats()
    assert st["segments"] == 5 and st["deleted_rows"] == 3
    before = contents(built)
    q = [vectors("d7 v0"), vectors("x2b v0")]
    res_before = [[(h.id, round(h.score, 4)) for h in r] for r in built.search_embeddings(q, k=10, params=exhaustive())]
    built.optimize()
    st = built.stats()
    assert st["segments"] == 1 and st["deleted_rows"] == 0 and st["passages"] == len(before)
    assert contents(built) == before and built.verify() == []
    res_after = [[(h.id, round(h.score, 4)) for h in r] for r in built.search_embeddings(q, k=10, params=exhaustive())]
    assert res_after == res_before
    # files of the merged segments and old tombstones are gone
    assert len(list((built.path / "segments").iterdir())) == 1
    assert list((built.path / "tombstones").iterdir()) == []


def test_drift_is_tracked_and_reindex_retrains_when_worth_it(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(60)])
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=CFG)
    small = idx.add([doc("s0")], embeddings=[vectors("s0 v0")])
    assert small.indexed == 1
    report = idx.reindex()
    assert not report.done and idx.generation == 2  # too few new vectors to matter
    # a different distribution: vectors concentrated along a few directions the codec never saw
    rng = np.random.default_rng(1)
    base = rng.normal(size=(4, DIM)).astype(np.float32)
    new_docs, new_vecs = [], []
    for i in range(40):
        v = base[rng.integers(0, 4, size=6)] + 0.05 * rng.normal(size=(6, DIM)).astype(np.float32)
        new_docs.append(doc(f"z{i}"))
        new_vecs.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    idx.add(new_docs, embeddings=new_vecs)
    drift = idx.stats()["drift"]
    assert drift["added"]["mean_error"] > drift["build"]["mean_error"]
    report = idx.reindex()
    assert report.done and "added after training" in report.reason
    assert idx.stats()["segments"] == 1 and idx.stats()["drift"]["added"]["vectors"] == 0
    assert len(idx) == 101 and idx.verify() == []
    assert top1(idx, "d3 v0") == "d3"
    # with the raw vectors, reindex recompresses exactly what a fresh build would store
    raw = {d["id"]: v for d, v in zip(ds + new_docs, vs + new_vecs)}
    raw["s0"] = vectors("s0 v0")
    report = idx.reindex(force=True, embeddings=lambda keys: [raw[d] for d, _ in keys])
    assert report.done and report.reason == "forced"
    assert stored_codes_match(idx, raw) == []
    idx.close()


def test_where_filters(tmp_path):
    ds = [{"id": f"d{i}", "text": f"t{i}", "language": "de" if i % 2 else "fr", "group": i % 3, "tag": "x" if i < 5 else "y"} for i in range(30)]
    vs = [vectors(f"w{i}") for i in range(30)]
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=CFG)
    q = [vectors("w4")]
    hits = idx.search_embeddings(q, k=30, where={"group": 1}, params=exhaustive())[0]
    assert sorted(h.id for h in hits) == sorted(f"d{i}" for i in range(30) if i % 3 == 1)
    hits = idx.search_embeddings(q, k=30, where={"language": "de", "tag": ["x"]}, params=exhaustive())[0]
    assert sorted(h.id for h in hits) == ["d1", "d3"]
    assert hits[0].metadata["tag"] == "x" and hits[0].language == "de"
    assert idx.search_embeddings(q, k=5, where={"group": 7})[0] == []
    with pytest.raises(InputError):
        idx.search_embeddings(q, k=5, where={"group": {"a": 1}})
    idx.close()


def test_overwrite_and_interrupted_build_keep_the_old_index(built, tmp_path):
    path = built.path
    ds, vs = docs_and_vectors(["o1", "o2", "o3"])
    with pytest.raises(InputError, match="overwrite"):
        Index.build(path, ds, embeddings=vs, config=CFG)

    def failing():
        yield from ds
        raise RuntimeError("input broke")

    built.close()
    with pytest.raises(RuntimeError):
        Index.build(path, failing(), embeddings=vs + [vectors("z")], config=CFG, overwrite=True)
    old = Index.open(path)
    assert len(old) == 60 and old.verify() == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    new = Index.build(path, ds, embeddings=vs, config=CFG, overwrite=True)
    assert new.ids() == ["o1", "o2", "o3"] and new.verify() == []
    old.refresh()
    assert old.ids() == ["o1", "o2", "o3"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not a colxm index"):
        Index.build(tmp_path / "other", ds, embeddings=vs, overwrite=True)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"
    new.close()
    old.close()


def test_second_writer_is_refused_and_readers_refresh(built):
    other = Index.open(built.path)
    built.delete(["d0"])  # built now holds the writer lock
    with pytest.raises(WriterLockedError, match=str(os.getpid())):
        other.delete(["d1"])
    assert "d0" in other and other.refresh() and "d0" not in other and "d1" in other
    assert not other.refresh()
    built.close()  # releases the lock
    other.delete(["d1"])
    assert "d1" not in other
    other.close()


def test_bad_input_and_bad_folders(built, tmp_path):
    with pytest.raises(InputError):
        built.search_embeddings([vectors("q")], k=0)
    with pytest.raises(InputError):
        built.search_embeddings([np.zeros((3, DIM + 1), np.float32)], k=3)
    with pytest.raises(InputError):
        built.add([{"text": "no id"}], embeddings=[vectors("x")])
    with pytest.raises(InputError, match="fewer embeddings"):
        built.add([doc("q1"), doc("q2")], embeddings=[vectors("x")])
    with pytest.raises(InputError, match="embeddings"):
        built.search(["hello"])  # built from vectors: no model recorded
    with pytest.raises(InputError):
        Index.build(tmp_path / "e", [doc("a")], embeddings=[np.zeros((0, DIM), np.float32)])
    assert not (tmp_path / "e").exists()
    with pytest.raises(IndexFormatError, match="not a colxm index"):
        Index.open(tmp_path)
    with pytest.raises(IndexFormatError):
        Index.open(tmp_path / "missing")
    m = json.loads((built.path / "manifest.json").read_text())
    m["format_version"] = 99
    (built.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="format version"):
        Index.open(built.path)
    (built.path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="corrupted"):
        Index.open(built.path)


def test_from_compressed_copies_codes_without_reencoding(built, tmp_path):
    """The import path (import-colbert): an index from a codec and compressed arrays."""
    snap = built._snap
    seg = snap.segments[0]
    docs = [{"id": f"p{i}", "text": t, "src": "import"} for i, t in enumerate(h.text for d in built.ids() for h in built.get(d))]
    idx = Index.from_compressed(tmp_path / "imp", snap.codec, np.asarray(seg.codes).astype(np.int32),
                                np.asarray(seg.residuals), np.asarray(seg.doclens), docs)
    assert len(idx) == 60 and idx.verify() == [] and idx.get("p7")[0].text == "d7 v0"
    a = built.search_embeddings([vectors("d7 v0")], k=5, params=exhaustive())[0]
    b = idx.search_embeddings([vectors("d7 v0")], k=5, params=exhaustive())[0]
    assert [(h.text, h.score) for h in a] == [(h.text, h.score) for h in b]
    idx.add([doc("later")], embeddings=[vectors("later v0")])  # imported indexes take updates
    assert top1(idx, "later v0") == "later"
    with pytest.raises(InputError, match="fewer documents"):
        Index.from_compressed(tmp_path / "bad", snap.codec, np.asarray(seg.codes), np.asarray(seg.residuals),
                              np.asarray(seg.doclens), docs[:10])
    assert not (tmp_path / "bad").exists()
    idx.close()


def test_many_small_commits_are_merged_automatically(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(20)])
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=IndexConfig(max_segments=4))
    counts = []
    for i in range(8):
        idx.add(*docs_and_vectors([f"a{i}"]))
        if i % 3 == 0:
            idx.delete([f"d{i}"])
        counts.append(idx.stats()["segments"])
    assert max(counts) <= 4 and len(idx) == 20 + 8 - 3
    assert idx.verify() == [] and top1(idx, "a5 v0") == "a5" and top1(idx, "d7 v0") == "d7"
    idx.close()


def test_segments_roll_over_at_segment_max_tokens(tmp_path):
    """Bounded memory: a build, an add and a merge each close a segment every N tokens."""
    ids = [f"d{i}" for i in range(50)]
    ds, vs = docs_and_vectors(ids)
    cfg = IndexConfig(chunk_documents=5, segment_max_tokens=60, max_segments=0)
    idx = Index.build(tmp_path / "i", ds + [doc("d3", 1)], embeddings=vs + [vectors("d3 v1")], config=cfg)
    st = idx.stats()
    assert st["segments"] >= 4 and idx.last_summary.duplicates == 1 and contents(idx)["d3"] == "d3 v1"
    assert idx.verify() == [] and sorted(idx.ids()) == sorted(ids)
    idx.add(*docs_and_vectors([f"n{i}" for i in range(12)]))
    idx.delete(["d0", "n5"])
    before = contents(idx)
    idx.optimize()
    assert idx.stats()["deleted_rows"] == 0 and contents(idx) == before and idx.verify() == []
    assert all(s.num_tokens < 60 + 5 * 8 for s in idx._snap.manifest.segments)
    assert top1(idx, "n7 v0") == "n7" and top1(idx, "d3 v1") == "d3"
    idx.close()


def test_reindex_when_the_collection_outgrew_its_centroids(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(30)])
    idx = Index.build(tmp_path / "i", ds, embeddings=vs)
    k0 = idx.stats()["num_centroids"]
    idx.add(*docs_and_vectors([f"n{i}" for i in range(300)]))
    report = idx.reindex()
    assert report.done and "centroids" in report.reason and idx.stats()["num_centroids"] >= 2 * k0
    assert len(idx) == 330 and idx.verify() == [] and top1(idx, "n42 v0") == "n42"
    idx.close()


def test_later_snapshots_share_an_unchanged_codec_and_its_scorer(built):
    """An update keeps the codec files: the next snapshot reuses the codec and the centroid scorer
    (whose coarse lists are built once); a reindex writes a new codec, which is loaded afresh."""
    top1(built, "d1 v0")
    first = built._snap
    built.add(*docs_and_vectors(["n1", "n2"]))
    second = built._snap
    assert second is not first and second.codec is first.codec
    assert second.searcher.scorer is first.searcher.scorer
    assert top1(built, "n2 v0") == "n2"
    raw = dict(zip([f"d{i}" for i in range(60)] + ["n1", "n2"],
                   docs_and_vectors([f"d{i}" for i in range(60)] + ["n1", "n2"])[1]))
    built.reindex(force=True, embeddings=lambda keys: [raw[d] for d, _ in keys])
    third = built._snap
    assert third.codec is not second.codec and third.searcher.scorer is not second.searcher.scorer
    assert top1(built, "n1 v0") == "n1"
