"""IndexConfig.full_vectors: the original vectors stored with every segment (vectors.npy, float16),
kept aligned with the codes through add/delete/upsert/optimize/reindex, checked by verify and on
open; indexes without them, and manifests from before them, are unchanged."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from lifecycle_support import doc, docs_and_vectors, exhaustive, stored_codes_match, vectors

from colxm.errors import IndexFormatError, InputError
from colxm.index.atomic import file_record
from colxm.index.index import Index
from colxm.index.manifest import IndexConfig
from colxm.index.verify import verify
from colxm.search import SearchParams
from colxm.search.searcher import with_params

CFG = IndexConfig(chunk_documents=16, kmeans_sample_vectors=400)
FULL = IndexConfig(chunk_documents=16, kmeans_sample_vectors=400, full_vectors=True)


def originals_mismatch(idx, expected: dict[str, np.ndarray]) -> list[str]:
    """Ids whose stored original vectors differ from ``expected`` (as float16)."""
    snap, bad = idx._snap, []
    for d, v in expected.items():
        si, rows = snap.id_map[d]
        seg = snap.segments[si]
        a, b = int(seg.doc_offsets[rows[0]]), int(seg.doc_offsets[rows[-1] + 1])
        if not np.array_equal(seg.vectors.rows(a, b), v.astype(np.float16)):
            bad.append(d)
    return bad


def ranked(idx, queries, params=None):
    return [[(h.id, h.score) for h in r] for r in idx.search_embeddings(queries, k=10, params=params)]


def manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_build_stores_the_original_vectors(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(60)])
    cfg = dataclasses.replace(FULL, segment_max_tokens=120)  # several segments
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=cfg)
    m = manifest(idx.path)
    assert m["format_version"] == 3 and m["config"]["full_vectors"] is True and len(m["segments"]) >= 3
    for s in m["segments"]:
        arr = np.load(idx.path / s["files"]["vectors"]["path"], allow_pickle=False)
        assert arr.dtype == np.float16 and arr.shape == (s["num_tokens"], 32)
    assert originals_mismatch(idx, {d["id"]: v for d, v in zip(ds, vs)}) == []
    st = idx.stats()
    assert st["full_vectors"] is True
    assert st["full_vectors_bytes"] == sum(s["files"]["vectors"]["size"] for s in m["segments"]) > st["tokens"] * 64
    assert idx.verify() == []
    assert idx.search_embeddings([vectors("d7 v0")], k=1)[0][0].id == "d7"
    idx.close()


def test_updates_and_optimize_keep_the_vectors_aligned(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(40)])
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=FULL)
    expected = {d["id"]: v for d, v in zip(ds, vs)}
    for i in range(3):
        ds2, vs2 = docs_and_vectors([f"x{i}a", f"x{i}b"])
        idx.add(ds2, embeddings=vs2)
        expected.update({d["id"]: v for d, v in zip(ds2, vs2)})
    idx.delete(["d0", "d13", "x1a"])
    idx.upsert([doc("d5", 1), doc("d20", 1)], embeddings=[vectors("d5 v1"), vectors("d20 v1")])
    for d in ("d0", "d13", "x1a"):
        del expected[d]
    expected.update({"d5": vectors("d5 v1"), "d20": vectors("d20 v1")})
    assert idx.stats()["segments"] == 5 and originals_mismatch(idx, expected) == []
    queries = [vectors("d7 v0"), vectors("x2b v0"), vectors("d5 v1")]
    before = ranked(idx, queries, exhaustive()), ranked(idx, queries)
    idx.optimize()
    st = idx.stats()
    assert st["segments"] == 1 and st["deleted_rows"] == 0 and idx.verify() == []
    assert originals_mismatch(idx, expected) == []
    after = ranked(idx, queries, exhaustive()), ranked(idx, queries)
    for b, a in zip(before, after):
        assert [[d for d, _ in r] for r in a] == [[d for d, _ in r] for r in b]
        np.testing.assert_allclose([[s for _, s in r] for r in a], [[s for _, s in r] for r in b], rtol=1e-6)
    idx.close()


def test_reindex_recompresses_the_originals(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(60)])
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=FULL)
    originals = {d["id"]: v for d, v in zip(ds, vs)}
    old = idx._snap.codec
    decompressed = {d: old.decompress(*old.compress(v)) for d, v in originals.items()}
    report = idx.reindex(force=True)  # no model, no embeddings: the stored originals are used
    assert report.done and idx.verify() == []
    stored = {d: v.astype(np.float16).astype(np.float32) for d, v in originals.items()}
    assert stored_codes_match(idx, stored) == []
    # retrained on the same float16 originals and seed as the build: the same codec, where the
    # decompressed copies (what reindex does without the originals) train a different one
    assert np.array_equal(idx._snap.codec.centroids, old.centroids)
    other = Index.build(tmp_path / "dec", ds, embeddings=[decompressed[d["id"]] for d in ds], config=FULL)
    assert not np.array_equal(other._snap.codec.centroids, old.centroids)
    other.close()
    assert originals_mismatch(idx, originals) == []
    idx.close()


def test_verify_and_open_catch_damaged_vectors(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(40)])
    Index.build(tmp_path / "i", ds, embeddings=vs, config=FULL).close()
    path = tmp_path / "i"
    good = manifest(path)
    f = path / good["segments"][0]["files"]["vectors"]["path"]
    data = f.read_bytes()

    def restore():
        f.write_bytes(data)
        (path / "manifest.json").write_text(json.dumps(good))

    f.write_bytes(data[:-10])  # truncated
    problems = verify(path)
    assert len(problems) == 1 and "vectors" in problems[0] and "truncated" in problems[0]
    with pytest.raises(IndexFormatError, match="truncated"):
        Index.open(path)
    restore()
    damaged = bytearray(data)
    damaged[-5] ^= 0x20  # one altered byte
    f.write_bytes(bytes(damaged))
    problems = verify(path)
    assert len(problems) == 1 and "vectors" in problems[0] and "checksum" in problems[0]
    restore()
    # rows in another order, checksum updated: only the alignment with the codes can tell
    arr = np.load(f, allow_pickle=False)
    np.save(f, arr[np.random.default_rng(0).permutation(len(arr))])
    m = manifest(path)
    m["segments"][0]["files"]["vectors"] = file_record(f, path)
    (path / "manifest.json").write_text(json.dumps(m))
    problems = verify(path)
    assert len(problems) == 1 and "original vectors do not match the codes" in problems[0]
    # the wrong dtype (size and checksum updated) is refused on open
    np.save(f, arr.astype(np.float32))
    m["segments"][0]["files"]["vectors"] = file_record(f, path)
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="float16"):
        Index.open(path)
    restore()
    # a segment of a full-vectors index without vectors
    m = manifest(path)
    del m["segments"][0]["files"]["vectors"]
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="full_vectors"):
        Index.open(path)
    assert any("no vectors file" in p for p in verify(path))
    restore()
    assert verify(path) == []


def test_an_index_without_full_vectors_is_unchanged(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(40)])
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=CFG)
    m = manifest(idx.path)
    assert m["format_version"] == 2 and m["config"]["full_vectors"] is False
    assert list(idx.path.rglob("vectors*")) == [] and all("vectors" not in s["files"] for s in m["segments"])
    assert idx.stats()["full_vectors"] is False and idx.stats()["full_vectors_bytes"] == 0
    queries = [vectors("d3 v0"), vectors("d17 v0")]
    assert ranked(idx, queries) == ranked(idx, queries, with_params(SearchParams.for_k(10), full_rerank=0))
    with pytest.raises(InputError, match="full_vectors=True"):
        idx.search_embeddings(queries, k=3, params=SearchParams(full_rerank=10))
    idx.close()


def test_a_manifest_from_before_full_vectors_opens(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(40)])
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=CFG)
    queries = [vectors("d3 v0"), vectors("d17 v0")]
    before = ranked(idx, queries), ranked(idx, queries, exhaustive())
    idx.close()
    m = manifest(tmp_path / "i")
    del m["config"]["full_vectors"]
    m["format_version"] = 2
    (tmp_path / "i" / "manifest.json").write_text(json.dumps(m))
    old = Index.open(tmp_path / "i")
    assert old.config.full_vectors is False and old.verify() == []
    assert (ranked(old, queries), ranked(old, queries, exhaustive())) == before
    old.add(*docs_and_vectors(["n1"]))
    assert manifest(tmp_path / "i")["format_version"] == 2 and old.verify() == []
    old.close()


def test_imports_and_configs(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(20)])
    idx = Index.build(tmp_path / "i", ds, embeddings=vs, config=CFG)
    seg = idx._snap.segments[0]
    args = (idx._snap.codec, np.asarray(seg.codes), np.asarray(seg.residuals), np.asarray(seg.doclens), ds)
    with pytest.raises(InputError, match="no original vectors"):
        Index.from_compressed(tmp_path / "imp", *args, config=IndexConfig(full_vectors=True))
    assert not (tmp_path / "imp").exists()
    imported = Index.from_compressed(tmp_path / "imp", *args)
    assert imported.config.full_vectors is False and imported.verify() == []
    imported.close()
    idx.close()
    with pytest.raises(InputError, match="full_vectors"):
        IndexConfig(full_vectors="yes")
    assert IndexConfig.from_dict({"nbits": 4}).full_vectors is False
