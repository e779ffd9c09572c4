"""save_pretrained → from_pretrained gives the same model, bit for bit, in colbert-ai's layout."""
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from colxm.modeling.encoder import Encoder

TEXTS = ["Paris is the capital of France.", "Berlin ist die Hauptstadt Deutschlands!", "dog"]


@pytest.mark.parametrize("which, scheme", [("tiny_bert", None), ("tiny_xmod", "legacy"), ("tiny_xmod", None)])
def test_save_reload_bit_identical(which, scheme, request, tmp_path):
    src = request.getfixturevalue(which)
    enc = Encoder.from_pretrained(src, marker_scheme=scheme, attend_to_mask_tokens=True)
    out = enc.save_pretrained(tmp_path / "saved")
    again = Encoder.from_pretrained(out)
    assert again.config == enc.config
    a, b = enc.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    langs = "de" if which == "tiny_xmod" else None
    for x, y in zip(enc.encode_documents(TEXTS, languages=langs), again.encode_documents(TEXTS, languages=langs)):
        assert np.array_equal(x, y)
    for x, y in zip(enc.encode_queries(TEXTS, languages=langs), again.encode_queries(TEXTS, languages=langs)):
        assert np.array_equal(x, y)
    # colbert-ai's HF_ColBERT layout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["HF_ColBERT"]
    keys = load_file(str(out / "model.safetensors")).keys()
    prefix = "roberta." if which == "tiny_xmod" else "bert."
    assert "linear.weight" in keys and all(k == "linear.weight" or k.startswith(prefix) for k in keys)
    meta = json.loads((out / "artifact.metadata").read_text())
    assert meta["colxm_marker_scheme"] == (scheme or ("legacy" if which == "tiny_xmod" else "current"))
    assert meta["attend_to_mask_tokens"] is True and meta["dim"] == enc.dim


def test_plain_hf_encoder_gets_a_seeded_projection(tiny_bert, tmp_path):
    from transformers import AutoTokenizer
    plain = tmp_path / "plain"
    backbone = Encoder.from_pretrained(tiny_bert).model.backbone
    backbone.save_pretrained(plain)
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(plain)
    a = Encoder.from_pretrained(plain, dim=24, seed=3)
    b = Encoder.from_pretrained(plain, dim=24, seed=3)
    c = Encoder.from_pretrained(plain, dim=24, seed=4)
    assert a.dim == 24 and a.config.dim == 24
    da, db, dc = (e.encode_documents(["rome and paris"])[0] for e in (a, b, c))
    assert np.array_equal(da, db) and not np.allclose(da, dc)
    assert not (plain / "artifact.metadata").exists()  # the folder was a plain transformers one


def test_auto_language_detection_routes_per_text(tiny_xmod):
    enc = Encoder.from_pretrained(tiny_xmod)  # language=None means "auto" for XMOD models
    texts = ["Das ist ein kleiner Test über die Hauptstadt von Deutschland und ihre Geschichte.",
             "Ceci est un petit texte sur la capitale de la France et son histoire."]
    auto = enc.encode_documents(texts)
    explicit = enc.encode_documents(texts, languages=["de", "fr"])
    for x, y in zip(auto, explicit):
        np.testing.assert_allclose(x, y, atol=1e-6)
    wrong = enc.encode_documents(texts, languages=["fr", "de"])
    assert not np.allclose(auto[0], wrong[0], atol=1e-3)
    assert enc.lang_ids(texts, "auto").tolist() == [enc.languages.index("de_DE"), enc.languages.index("fr_XX")]


def test_paper_behaviour_one_language_for_all(tiny_xmod):
    enc = Encoder.from_pretrained(tiny_xmod, language="en")
    texts = ["Das ist ein Test über Deutschland.", "Ceci est un texte sur la France."]
    for x, y in zip(enc.encode_documents(texts), enc.encode_documents(texts, languages="en_XX")):
        assert np.array_equal(x, y)


def test_plain_xlmr_encoder_saves_in_colbert_layout(tmp_path):
    """Any Hugging Face encoder works: a tiny XLM-R gets a projection and saves under `roberta.`."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel
    from tiny_models import xlmr_tokenizer
    tok = xlmr_tokenizer()
    torch.manual_seed(0)
    model = XLMRobertaModel(XLMRobertaConfig(vocab_size=250002, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32,
                                             max_position_embeddings=80))
    model.save_pretrained(tmp_path / "xlmr")
    tok.save_pretrained(str(tmp_path / "xlmr"))
    enc = Encoder.from_pretrained(tmp_path / "xlmr", dim=8)
    assert enc.languages == [] and enc.dim == 8
    docs = enc.encode_documents(["Ciao mondo, come stai?"], languages="it")  # ignored: no adapters
    assert docs[0].shape[1] == 8
    out = enc.save_pretrained(tmp_path / "colbert")
    keys = load_file(str(out / "model.safetensors")).keys()
    assert "roberta.embeddings.word_embeddings.weight" in keys and "linear.weight" in keys
    again = Encoder.from_pretrained(out)
    assert np.array_equal(again.encode_documents(["Ciao mondo, come stai?"])[0], docs[0])
