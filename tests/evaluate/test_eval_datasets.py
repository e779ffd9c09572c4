import json
import sys

import pytest

from colxm.errors import InputError
from colxm.evaluate import load_beir, load_eval_set


def make_beir(root):
    root.mkdir()
    (root / "qrels").mkdir()
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"text {i}"}) + "\n" for i in range(3)))
    (root / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "one"}) + "\n" + json.dumps({"_id": "q2", "text": "unjudged"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return root


def test_beir_folder(tmp_path):
    ev = load_beir(make_beir(tmp_path / "set"))
    assert ev.name == "set"
    assert ev.queries == {"q1": "one"}
    assert ev.qrels == {"q1": {"d1": 1}}
    assert [d["id"] for d in ev.corpus()] == ["d0", "d1", "d2"]
    assert [d["id"] for d in ev.corpus()] == ["d0", "d1", "d2"]  # re-iterable


def test_separate_files_and_overrides(tmp_path):
    q = tmp_path / "q.tsv"
    q.write_text("q1\tuno\nq5\tcinco\n")
    r = tmp_path / "r.qrels"
    r.write_text("q1 0 d1 1\nq5 0 d2 2\n")
    ev = load_eval_set(None, queries=q, qrels=r)
    assert ev.queries == {"q1": "uno", "q5": "cinco"}
    assert ev.qrels == {"q1": {"d1": 1}, "q5": {"d2": 2}}
    ev = load_eval_set(make_beir(tmp_path / "b"), queries=q)
    assert ev.queries == {"q1": "uno"}


def test_errors(tmp_path):
    with pytest.raises(InputError, match="qrels/test.tsv"):
        load_beir(tmp_path)
    with pytest.raises(InputError, match="both queries and qrels"):
        load_eval_set(None, queries=tmp_path / "q.tsv")
    q = tmp_path / "q.tsv"
    q.write_text("a\tx\n")
    r = tmp_path / "r.tsv"
    r.write_text("b\td\t1\n")
    with pytest.raises(InputError, match="query ids match"):
        load_eval_set(None, queries=q, qrels=r)


def test_ir_datasets_name_without_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # as if not installed
    with pytest.raises(InputError, match="pip install ir_datasets"):
        load_eval_set("irds:msmarco-passage/dev/small")
    with pytest.raises(InputError, match="not a file or folder"):
        load_eval_set(str(tmp_path / "no-such-set"))
