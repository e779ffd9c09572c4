"""Learned query-token weights: score(q, d) = sum_i w_i max_j <q_i, d_j>, stored with the model."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colxm import Encoder
from colxm.errors import CheckpointError
from colxm.modeling.query_weights import STATE_PREFIX, QueryTokenWeights
from colxm.train.losses import maxsim_scores
from tests.tiny_models import make_tiny_bert_colbert

TEXTS = ["the cat sat on the mat", "a dog"]


def _trained_head(hidden: int, seed: int = 0, scale: float = 1.0) -> QueryTokenWeights:
    head = QueryTokenWeights(hidden)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.score.weight.copy_(torch.randn(head.score.weight.shape, generator=gen) * scale)
        head.score.bias.fill_(0.3)
    return head


def test_an_untrained_head_is_plain_colbert(tmp_path):
    plain = Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path / "m"))
    weighted = Encoder.from_pretrained(tmp_path / "m", query_weights=True)
    assert plain.model.query_weights is None and weighted.model.query_weights is not None
    for a, b in zip(plain.encode_queries(TEXTS), weighted.encode_queries(TEXTS)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_weights_by_hand_average_one_and_scale_the_rows():
    head = _trained_head(8)
    H = torch.randn(2, 5, 8)
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    w = head(H, keep)
    # direct computation: softplus(a . [h/|h|, log|h|] + b), zero where not kept, mean 1 per query
    n = H.norm(dim=-1, keepdim=True)
    raw = F.softplus(torch.cat([H / n, n.log()], -1) @ head.score.weight.T + head.score.bias).squeeze(-1)
    raw = raw * keep
    expected = raw * keep.sum(1, keepdim=True) / raw.sum(1, keepdim=True)
    torch.testing.assert_close(w, expected)
    assert torch.all(w[~keep] == 0)
    torch.testing.assert_close(w.sum(1), keep.sum(1).float())
    assert w[keep].std() > 0.05  # a trained head does weigh tokens differently


def test_weighted_scores_equal_the_weighted_maxsim_sum(tmp_path):
    enc = Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path / "m"), query_weights=True)
    enc.model.query_weights = _trained_head(enc.model.backbone.config.hidden_size)
    tq, td = enc.tokenize_queries(TEXTS), enc.tokenize_documents(["the cat", "a dog ran on the mat"])
    with torch.no_grad():
        H = enc.model.hidden(tq["input_ids"], tq["attention_mask"])
        w = enc.model.query_weights(H)
        unit = F.normalize(enc.model.linear(H), dim=-1)
        D, dm = enc.model.forward_documents(td["input_ids"], td["attention_mask"])
        got = maxsim_scores(enc.model.forward_queries(tq["input_ids"], tq["attention_mask"]), D, dm)
        sims = torch.einsum("bid,njd->bnij", unit, D).masked_fill(~dm[None, :, None, :], -1e4)
        expected = (sims.max(-1).values * w[:, None, :]).sum(-1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_head_survives_save_and_load_and_can_be_switched_off(tmp_path):
    enc = Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path / "m"), query_weights=True)
    enc.model.query_weights = _trained_head(enc.model.backbone.config.hidden_size)
    before = enc.encode_queries(TEXTS)
    enc.save_pretrained(tmp_path / "saved")
    from safetensors.torch import load_file

    names = [k for k in load_file(str(tmp_path / "saved" / "model.safetensors")) if k.startswith(STATE_PREFIX)]
    assert sorted(names) == [STATE_PREFIX + "score.bias", STATE_PREFIX + "score.weight"]
    again = Encoder.from_pretrained(tmp_path / "saved")
    for a, b in zip(before, again.encode_queries(TEXTS)):
        np.testing.assert_array_equal(a, b)
    off = Encoder.from_pretrained(tmp_path / "saved", query_weights=False)
    assert off.model.query_weights is None
    rows = off.encode_queries(TEXTS)[0]
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(before[0], axis=1), 1.0, atol=1e-3)
    # the documents do not change: an index built without the head serves the weighted queries
    np.testing.assert_array_equal(off.encode_documents(TEXTS)[0], again.encode_documents(TEXTS)[0])


def test_damaged_head_tensors_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="query-weight tensors"):
        QueryTokenWeights.from_state({STATE_PREFIX + "score.weight": torch.zeros(1, 5),
                                      STATE_PREFIX + "score.bias": torch.zeros(1)}, hidden=32)


def test_index_search_with_weights_ranks_by_the_weighted_sum(tmp_path):
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig
    from colxm.search.searcher import SearchParams

    enc = Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path / "m"), query_weights=True)
    query = "the cat on a red mat"
    tq = enc.tokenize_queries([query])
    with torch.no_grad():  # a head that favours the query's own 3rd token ("cat") and tokens like it
        H = enc.model.hidden(tq["input_ids"], tq["attention_mask"])[0]
        head = enc.model.query_weights.score
        head.weight[0, :-1] = 40 * H[2] / H[2].norm()
        head.bias.fill_(-30.0)
    texts = ["the cat sat on the mat", "a dog ran in the park", "birds fly over the sea", "the mat is red",
             "cats and dogs", "the sea is blue"]
    docs = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    index = Index.build(tmp_path / "idx", docs, encoder=enc, config=IndexConfig(full_vectors=True))
    exhaustive = index.search(query, k=6, params=SearchParams(exhaustive=True))[0]
    plaid = index.search(query, k=6)[0]
    q = enc.encode_queries([query])[0]
    exact = [float(np.max(q @ d.T, axis=1).sum()) for d in enc.encode_documents(texts)]
    # the weights matter: plain ColBERT scores these documents differently
    unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    plain = [float(np.max(unit @ d.T, axis=1).sum()) for d in enc.encode_documents(texts)]
    assert np.abs(np.array(exact) - np.array(plain)).max() > 0.2
    for hits in (exhaustive, plaid):
        assert [h.id for h in hits] == [str(i) for i in np.argsort(exact)[::-1]]
        assert hits[0].score == pytest.approx(max(exact), abs=2e-2)
    index.close()
