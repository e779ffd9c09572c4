"""The colxm text-prefix extension of artifact.metadata (e5's "query: " / "passage: ")."""
import json

import numpy as np

from colxm import Encoder
from tests.tiny_models import make_tiny_bert_colbert


def _with_prefixes(folder, query_prefix, doc_prefix):
    meta_path = folder / "artifact.metadata"
    meta = json.loads(meta_path.read_text())
    meta.update({"colxm_query_prefix": query_prefix, "colxm_doc_prefix": doc_prefix})
    meta_path.write_text(json.dumps(meta))


def test_prefix_is_tokenised_before_the_text_and_survives_save(tmp_path):
    plain = Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path / "plain"))
    folder = make_tiny_bert_colbert(tmp_path / "prefixed")
    _with_prefixes(folder, "query :", "the ")
    enc = Encoder.from_pretrained(folder)
    text = "the cat sat"
    q_plain, q = plain.query_tokens([text])[0], enc.query_tokens([text])[0]
    d_plain, d = plain.document_tokens(["cat sat"])[0], enc.document_tokens(["cat sat"])[0]
    assert q[:2] == q_plain[:2]  # [CLS] [Q] markers stay first
    assert q[2:4] == ["query", ":"] and q[4:7] == q_plain[2:5]
    assert "the" in d and "the" not in d_plain
    assert not np.allclose(enc.encode_queries([text])[0], plain.encode_queries([text])[0])
    enc.save_pretrained(tmp_path / "saved")
    again = Encoder.from_pretrained(tmp_path / "saved")
    assert again.query_tokens([text]) == enc.query_tokens([text])
    np.testing.assert_array_equal(again.encode_documents(["cat sat"])[0], enc.encode_documents(["cat sat"])[0])
