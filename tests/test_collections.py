import gzip
import json

import pytest

from colxm.collections import detect_format, load_collection, load_qrels, load_queries
from colxm.errors import InputError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, rows):
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def test_beir_corpus_file_and_folder(tmp_path):
    rows = [{"_id": "d1", "title": "Berlin", "text": "Berlin ist die Hauptstadt.", "metadata": {"k": 1}},
            {"_id": "doc/2 with spaces", "title": "", "text": "Sin título."}]
    jsonl(tmp_path / "beir" / "corpus.jsonl", rows)
    for path in (tmp_path / "beir" / "corpus.jsonl", tmp_path / "beir"):
        assert detect_format(path) == "beir"
        docs = list(load_collection(path))
        assert docs == [
            {"id": "d1", "text": "Berlin ist die Hauptstadt.", "title": "Berlin", "metadata": {"k": 1}},
            {"id": "doc/2 with spaces", "text": "Sin título."},
        ]


def test_jsonl_any_fields_autodetected(tmp_path):
    path = jsonl(tmp_path / "docs.jsonl", [
        {"docid": 7, "contents": "hello", "lang": "en", "year": 2020},
        {"docid": "x-8", "contents": "bonjour", "lang": "fr", "tags": ["a"]},
    ])
    docs = list(load_collection(path))
    assert docs == [{"id": "7", "text": "hello", "language": "en", "year": 2020},
                    {"id": "x-8", "text": "bonjour", "language": "fr", "tags": ["a"]}]


def test_jsonl_named_fields_and_gzip(tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"key2": "a", "body2": "text a", "id": "not-the-id"}) + "\n")
    docs = list(load_collection(path, id_field="key2", text_field="body2"))
    assert docs == [{"id": "a", "text": "text a", "orig_id": "not-the-id"}]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"id": "1", "text": "ok"}\n\n{"id": "2", "text": "oops"\n')
    with pytest.raises(InputError, match=r"bad\.jsonl, line 3: not valid JSON"):
        list(load_collection(path))


def test_missing_fields_name_the_line(tmp_path):
    path = jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "a"}, {"id": "2", "body": "b"}])
    with pytest.raises(InputError, match=r"c\.jsonl, line 2: missing text field 'text'"):
        list(load_collection(path))
    path = jsonl(tmp_path / "d.jsonl", [{"name": "1", "text": "a"}])
    with pytest.raises(InputError, match=r"d\.jsonl, line 1: no id field found.*--id-field"):
        list(load_collection(path))
    path = jsonl(tmp_path / "e.jsonl", [{"id": "1", "text": 5}])
    with pytest.raises(InputError, match=r"line 1: text field 'text' must be a string"):
        list(load_collection(path))
    path = jsonl(tmp_path / "f.jsonl", [{"id": "", "text": "x"}])
    with pytest.raises(InputError, match=r"line 1: empty id"):
        list(load_collection(path))
    path = write(tmp_path / "g.jsonl", '["not", "an", "object"]\n')
    with pytest.raises(InputError, match=r"line 1: expected a JSON object"):
        list(load_collection(path))


def test_tsv_without_and_with_header(tmp_path):
    path = write(tmp_path / "c.tsv", "1\tfirst text\n\nq 2\tsecond text\tA title\r\n")
    assert list(load_collection(path)) == [
        {"id": "1", "text": "first text"}, {"id": "q 2", "text": "second text", "title": "A title"}]
    path = write(tmp_path / "h.tsv", "id\ttext\ttitle\tlang\n1\tuno\tT\tes\n")
    assert list(load_collection(path)) == [{"id": "1", "text": "uno", "title": "T", "language": "es"}]


def test_tsv_errors(tmp_path):
    path = write(tmp_path / "c.tsv", "1\tok\n2 no tab here\n")
    with pytest.raises(InputError, match=r"c\.tsv, line 2: expected id<TAB>text"):
        list(load_collection(path))
    path = write(tmp_path / "d.tsv", "1\tok\n2\ta\tb\tc\n")
    with pytest.raises(InputError, match=r"d\.tsv, line 2: 4 columns"):
        list(load_collection(path))


def test_folder_of_text_files(tmp_path):
    write(tmp_path / "docs" / "b.md", "# Título\n\nTexto en español.")
    write(tmp_path / "docs" / "sub" / "a.txt", "plain text")
    write(tmp_path / "docs" / "skip.pdf", "x")
    write(tmp_path / "docs" / ".hidden" / "c.txt", "hidden")
    assert detect_format(tmp_path / "docs") == "folder"
    assert list(load_collection(tmp_path / "docs")) == [
        {"id": "b.md", "text": "# Título\n\nTexto en español.", "title": "Título"},
        {"id": "sub/a.txt", "text": "plain text"},
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .txt or .md files"):
        list(load_collection(tmp_path / "empty"))


def test_json_array(tmp_path):
    path = write(tmp_path / "c.json", json.dumps([{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]))
    assert [d["id"] for d in load_collection(path)] == ["a", "b"]


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_collection(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="cannot tell"):
        load_collection(write(tmp_path / "c.xml", "<x/>"))
    with pytest.raises(InputError, match="unknown collection format"):
        load_collection(tmp_path, fmt="xml")


def test_non_utf8_file(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(b"1\tcaf\xe9\n")
    with pytest.raises(InputError, match="not utf-8 text"):
        list(load_collection(path))


def test_queries_beir_tsv(tmp_path):
    jsonl(tmp_path / "b" / "queries.jsonl", [{"_id": "q1", "text": "wer?"}, {"_id": "q2", "text": "qui ?"}])
    assert load_queries(tmp_path / "b") == {"q1": "wer?", "q2": "qui ?"}
    assert load_queries(write(tmp_path / "q.tsv", "qid\tquery\n3\tdónde\n")) == {"3": "dónde"}
    with pytest.raises(InputError, match="appears twice"):
        load_queries(write(tmp_path / "dup.tsv", "1\ta\n1\tb\n"))


def test_qrels_beir_trec(tmp_path):
    beir = write(tmp_path / "b" / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td1\t0\n")
    expected = {"q1": {"d1": 1, "d2": 2}, "q2": {"d1": 0}}
    assert load_qrels(beir) == expected
    assert load_qrels(tmp_path / "b") == expected
    assert load_qrels(write(tmp_path / "nh.tsv", "q1\td1\t1\nq1\td2\t2\nq2\td1\t0\n")) == expected
    assert load_qrels(write(tmp_path / "t.qrels", "q1 0 d1 1\nq1 0 d2 2\nq2 Q0 d1 0\n")) == expected
    with pytest.raises(InputError, match=r"bad\.tsv, line 2: relevance 'x'"):
        load_qrels(write(tmp_path / "bad.tsv", "q1\td1\t1\nq1\td2\tx\n"))
    with pytest.raises(InputError, match=r"line 1: expected"):
        load_qrels(write(tmp_path / "bad2.tsv", "q1 d1\n"))


def test_shipped_sample_collection():
    from colxm.collections import sample_collection_path

    root = sample_collection_path()
    docs = list(load_collection(root / "corpus.jsonl"))
    assert len(docs) >= 30 and len({d["id"] for d in docs}) == len(docs)
    assert len({d["language"] for d in docs}) >= 6
    assert all(d["text"].strip() and d["title"] for d in docs)
    queries = load_queries(root / "queries.jsonl")
    qrels = load_qrels(root / "qrels.tsv")
    assert set(queries) == set(qrels)
    ids = {d["id"] for d in docs}
    assert all(d in ids for rel in qrels.values() for d in rel)
