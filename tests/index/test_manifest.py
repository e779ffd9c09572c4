"""Manifest: JSON round trip, validation, atomic replacement, referenced files."""
from __future__ import annotations

import json

import pytest

from colxm.errors import IndexFormatError, InputError
from colxm.index.manifest import IndexConfig, Manifest, SegmentRecord, read_manifest, write_manifest


def sample() -> Manifest:
    f = lambda p: {"path": p, "size": 1, "sha256": "0" * 64}  # noqa: E731
    seg = SegmentRecord("seg-000000", 3, 9, {"codes": f("segments/seg-000000/codes.npy")},
                        tombstones=f("tombstones/seg-000000.2.npy"), num_deleted=1)
    return Manifest(generation=2, dim=32, nbits=2, num_centroids=8, codec_files={"centroids": f("codec/g000001/centroids.npy")},
                    segments=[seg], config=IndexConfig(passage_max_tokens=64), model={"name_or_path": "/m"})


def test_round_trip_and_references(tmp_path):
    m = sample()
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back.to_json() == m.to_json()
    assert back.config.passage_max_tokens == 64
    assert back.referenced_paths() == {"codec/g000001/centroids.npy", "segments/seg-000000/codes.npy",
                                       "tombstones/seg-000000.2.npy"}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


def test_invalid_manifests(tmp_path):
    with pytest.raises(IndexFormatError, match="not a colxm index"):
        read_manifest(tmp_path)
    d = sample().to_json()
    for change, match in [({"format": "other"}, "not a colxm index manifest"),
                          ({"format_version": 99}, "format version"),
                          ({"segments": [{"id": "x"}]}, "malformed")]:
        (tmp_path / "manifest.json").write_text(json.dumps({**d, **change}))
        with pytest.raises(IndexFormatError, match=match):
            read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(IndexFormatError, match="not a JSON object"):
        read_manifest(tmp_path)


def test_config_validation():
    with pytest.raises(InputError):
        IndexConfig(nbits=3)
    with pytest.raises(InputError):
        IndexConfig(passage_max_tokens=2)
    assert IndexConfig.from_dict({"nbits": 4, "unknown_future_field": 1}).nbits == 4
