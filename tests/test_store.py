"""Document store: input records, the per-segment SQLite file, fetch and metadata filters."""
from __future__ import annotations

import numpy as np
import pytest

from colxm.errors import IndexFormatError, InputError
from colxm.store import Record, StoreReader, StoreWriter, iter_records, to_record


def test_records_from_dicts_and_pairs():
    r = to_record({"id": 7, "text": "hallo", "language": "de", "year": 2020, "tags": ["a"]}, 0)
    assert r == Record("7", "hallo", "de", {"year": 2020, "tags": ["a"]})
    assert to_record(("x", "text"), 1) == Record("x", "text", None, {})
    assert [r.id for r in iter_records([("a", "1"), {"id": "b", "text": "2"}])] == ["a", "b"]


@pytest.mark.parametrize("bad, match", [
    ({"text": "no id"}, "needs 'id' and 'text'"),
    ({"id": "a", "text": None}, "text must be a string"),
    (("a", "b", "c"), "must be a dict"),
    ("just a string", "must be a dict"),
    ({"id": None, "text": "x"}, "invalid id"),
    ({"id": "a", "text": "x", "language": 5}, "language"),
])
def test_bad_records(bad, match):
    with pytest.raises(InputError, match=match):
        to_record(bad, 3)


def make_store(path):
    w = StoreWriter(path)
    rows = [(Record(f"d{i}", f"text {i}", "de" if i % 2 else "en", {"n": i, "kind": "odd" if i % 2 else "even", "ok": i < 3}), 0)
            for i in range(6)]
    w.add(rows[:3])
    w.add(rows[3:] + [(Record("d5", "second passage", "de", {"n": 5}), 1)])
    w.close()
    return StoreReader(path)


def test_write_fetch_filter(tmp_path):
    s = make_store(tmp_path / "docs.sqlite")
    assert s.num_rows == 7
    got = s.fetch([6, 0])
    assert got[6] == ("d5", 1, "second passage", "de", {"n": 5})
    assert got[0][4] == {"n": 0, "kind": "even", "ok": True}
    assert list(s.id_rows())[5:] == [(5, "d5"), (6, "d5")]
    assert s.doc_ids([2, 1]) == ["d2", "d1"]
    assert np.flatnonzero(s.filter_mask({"kind": "odd"})).tolist() == [1, 3, 5]
    assert np.flatnonzero(s.filter_mask({"language": "en", "n": [0, 4, 5]})).tolist() == [0, 4]
    assert np.flatnonzero(s.filter_mask({"ok": True})).tolist() == [0, 1, 2]
    assert np.flatnonzero(s.filter_mask({"id": "d5"})).tolist() == [5, 6]
    assert not s.filter_mask({"missing": "x"}).any()
    with pytest.raises(InputError):
        s.filter_mask({"n": None})
    s.close()


def test_unserialisable_metadata_is_input_error(tmp_path):
    w = StoreWriter(tmp_path / "d.sqlite")
    with pytest.raises(InputError, match="JSON"):
        w.add([(Record("a", "t", None, {"x": object()}), 0)])


def test_missing_or_garbage_store(tmp_path):
    with pytest.raises(IndexFormatError, match="missing"):
        StoreReader(tmp_path / "nope.sqlite")
    (tmp_path / "bad.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(IndexFormatError, match="unreadable"):
        StoreReader(tmp_path / "bad.sqlite")
