"""The colxm query-expansion switch of artifact.metadata: off, the [MASK] padding of a query does not score."""
import json

import numpy as np
import pytest
import torch

from colxm import Encoder
from colxm.train.losses import maxsim_scores
from tests.tiny_models import make_tiny_bert_colbert

TEXT = "the cat sat on the mat"


def _expansion_off(folder):
    meta_path = folder / "artifact.metadata"
    meta = json.loads(meta_path.read_text())
    meta["colxm_query_expansion"] = False
    meta_path.write_text(json.dumps(meta))
    return folder


def test_off_keeps_only_the_query_s_own_positions(tmp_path):
    on = Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path / "on"))
    off = Encoder.from_pretrained(_expansion_off(make_tiny_bert_colbert(tmp_path / "off")))
    q_on, q_off = on.encode_queries([TEXT])[0], off.encode_queries([TEXT])[0]
    tokens_on, tokens_off = on.query_tokens([TEXT])[0], off.query_tokens([TEXT])[0]
    assert q_on.shape[0] == 16 and "[MASK]" in tokens_on
    assert "[MASK]" not in tokens_off and len(tokens_off) == q_off.shape[0] < 16
    assert tokens_off == tokens_on[: len(tokens_off)]
    # masks are never attended to (attend_to_mask_tokens false): the kept rows are the same vectors
    np.testing.assert_allclose(q_off, q_on[: len(q_off)], atol=1e-6)
    # the same switch from the API, on a colbert-ai folder that has no such key
    switched = Encoder.from_pretrained(tmp_path / "on", query_expansion=False)
    np.testing.assert_array_equal(switched.encode_queries([TEXT])[0], q_off)
    # a query that fills query_maxlen has no padding to drop
    long = " ".join(["cat"] * 40)
    assert off.encode_queries([long])[0].shape[0] == 16


def test_off_scores_like_a_query_mask_in_training_and_survives_save(tmp_path):
    off = Encoder.from_pretrained(_expansion_off(make_tiny_bert_colbert(tmp_path / "off")))
    tok_q = off.tokenize_queries([TEXT, "a dog"])
    tok_d = off.tokenize_documents(["the cat sat", "a dog ran on the mat"])
    with torch.no_grad():
        Q = off.model.forward_queries(tok_q["input_ids"], tok_q["attention_mask"])
        D, dm = off.model.forward_documents(tok_d["input_ids"], tok_d["attention_mask"])
        keep = off.model.query_mask(tok_q["input_ids"])
        assert not keep.all() and torch.all(Q[~keep] == 0)
        # zero rows add nothing: the same as masking those positions out of the sum
        torch.testing.assert_close(maxsim_scores(Q, D, dm), maxsim_scores(Q, D, dm, keep))
    off.save_pretrained(tmp_path / "saved")
    again = Encoder.from_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "artifact.metadata").read_text())["colxm_query_expansion"] is False
    assert again.encode_queries([TEXT])[0].shape == off.encode_queries([TEXT])[0].shape


def test_index_search_with_expansion_off_scores_the_own_tokens(tmp_path):
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig
    from colxm.search.searcher import SearchParams

    off = Encoder.from_pretrained(_expansion_off(make_tiny_bert_colbert(tmp_path / "off")))
    docs = [{"id": str(i), "text": t} for i, t in enumerate(
        ["the cat sat on the mat", "a dog ran in the park", "birds fly over the sea", "the mat is red"])]
    index = Index.build(tmp_path / "idx", docs, encoder=off, config=IndexConfig(full_vectors=True))
    hits = index.search(TEXT, k=4, params=SearchParams(exhaustive=True))[0]
    q = off.encode_queries([TEXT])[0]
    exact = [float(np.max(q @ d.T, axis=1).sum()) for d in off.encode_documents([d["text"] for d in docs])]
    assert hits[0].id == str(int(np.argmax(exact)))
    assert hits[0].score == pytest.approx(max(exact), abs=1e-3)
    index.close()
