"""verify() finds each kind of damage and says exactly what is wrong; open() refuses cheap-to-
detect damage with IndexFormatError."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from lifecycle_support import docs_and_vectors

from colxm.errors import IndexFormatError
from colxm.index.index import Index
from colxm.index.manifest import IndexConfig
from colxm.index.verify import verify


@pytest.fixture
def path(tmp_path):
    ds, vs = docs_and_vectors([f"d{i}" for i in range(40)])
    idx = Index.build(tmp_path / "idx", ds, embeddings=vs, config=IndexConfig(chunk_documents=8))
    ds, vs = docs_and_vectors(["n1", "n2"])
    idx.add(ds, embeddings=vs)
    idx.delete(["d3"])
    assert idx.verify() == []
    idx.close()
    return tmp_path / "idx"


def seg_file(path, name, which=0):
    m = json.loads((path / "manifest.json").read_text())
    return path / m["segments"][which]["files"][name]["path"]


def test_truncated_array(path):
    f = seg_file(path, "residuals")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 7])
    problems = verify(path)
    assert len(problems) == 1
    assert "residuals" in problems[0] and "truncated" in problems[0] and f.name in problems[0]
    with pytest.raises(IndexFormatError, match="truncated"):
        Index.open(path)


def test_flipped_byte(path):
    f = seg_file(path, "codes")
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x01
    f.write_bytes(bytes(data))
    problems = verify(path)
    assert len(problems) == 1 and "codes" in problems[0] and "checksum" in problems[0]


def test_flipped_byte_in_store_and_codec(path):
    f = seg_file(path, "store")
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x40
    f.write_bytes(bytes(data))
    m = json.loads((path / "manifest.json").read_text())
    c = path / m["codec_files"]["centroids"]["path"]
    data = bytearray(c.read_bytes())
    data[200] ^= 0x10
    c.write_bytes(bytes(data))
    problems = verify(path)
    assert len(problems) == 2
    assert any("store" in p and "checksum" in p for p in problems)
    assert any("codec" in p and "centroids" in p for p in problems)


def test_missing_file(path):
    seg_file(path, "ivf_docs", which=1).unlink()
    problems = verify(path)
    assert len(problems) == 1 and "ivf_docs" in problems[0] and "missing" in problems[0]
    with pytest.raises(IndexFormatError, match="missing"):
        Index.open(path)


def test_missing_tombstones(path):
    m = json.loads((path / "manifest.json").read_text())
    tomb = [s["tombstones"] for s in m["segments"] if s["tombstones"]]
    (path / tomb[0]["path"]).unlink()
    problems = verify(path)
    assert len(problems) == 1 and "tombstones" in problems[0] and "missing" in problems[0]


def test_manifest_points_at_missing_segment(path):
    m = json.loads((path / "manifest.json").read_text())
    seg_id = m["segments"][1]["id"]
    shutil.rmtree(path / "segments" / seg_id)
    problems = verify(path)
    assert f"segment {seg_id}: folder segments/{seg_id} is missing" in problems
    assert all(seg_id in p for p in problems)
    with pytest.raises(IndexFormatError, match=seg_id):
        Index.open(path)


def test_invariants_beyond_checksums(path):
    """A consistently rewritten but wrong file (checksum updated) is caught by the invariants."""
    from colxm.index.atomic import file_record

    m = json.loads((path / "manifest.json").read_text())
    f = seg_file(path, "ivf_docs")
    ivf = np.load(f)
    ivf[0] = (ivf[0] + 1) % 40
    np.save(f, ivf)
    m["segments"][0]["files"]["ivf_docs"] = file_record(f, path)
    m["segments"][0]["num_deleted"] = 5
    (path / "manifest.json").write_text(json.dumps(m))
    problems = verify(path)
    assert any("inverted lists do not match" in p for p in problems)
    assert any("tombstoned rows, the manifest says 5" in p for p in problems)


def test_duplicate_live_id(path):
    idx = Index.open(path)
    idx.upsert(*docs_and_vectors(["d5"], version=1))
    idx.close()
    m = json.loads((path / "manifest.json").read_text())
    m["segments"][0]["tombstones"], m["segments"][0]["num_deleted"] = None, 0  # resurrect old rows
    (path / "manifest.json").write_text(json.dumps(m))
    problems = verify(path)
    assert len(problems) == 1 and "'d5' is also live in segment" in problems[0]


def test_not_an_index(tmp_path):
    assert "not a colxm index" in verify(tmp_path)[0]
