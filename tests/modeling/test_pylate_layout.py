"""Reading a PyLate / sentence-transformers ColBERT folder (Transformer module + 1_Dense).

This checks the folder layout is read (backbone at the root without prefix, projection in
1_Dense, lengths and markers from config_sentence_transformers.json); PyLate's own tokenisation
is not compared here (no golden outputs from PyLate).
"""
import json

import numpy as np
from safetensors.torch import load_file, save_file

from colxm.modeling.encoder import Encoder


def test_pylate_folder_loads_same_weights(tiny_bert, tmp_path):
    ref = Encoder.from_pretrained(tiny_bert)
    d = tmp_path / "pylate"
    (d / "1_Dense").mkdir(parents=True)
    state = load_file(str(tiny_bert / "model.safetensors"))
    save_file({k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}, str(d / "model.safetensors"))
    save_file({"linear.weight": state["linear.weight"]}, str(d / "1_Dense" / "model.safetensors"))
    cfg = json.loads((tiny_bert / "config.json").read_text())
    cfg["architectures"] = ["BertModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    ref.tokenizer.save_pretrained(str(d))
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    (d / "1_Dense" / "config.json").write_text(json.dumps(
        {"in_features": 32, "out_features": 16, "bias": False,
         "activation_function": "torch.nn.modules.linear.Identity"}))
    (d / "config_sentence_transformers.json").write_text(json.dumps(
        {"query_prefix": "[unused0]", "document_prefix": "[unused1]", "query_length": 16,
         "document_length": 32, "attend_to_expansion_tokens": False,
         "skiplist_words": ["!", ",", ".", "?"]}))
    enc = Encoder.from_pretrained(d)
    assert enc.dim == 16 and enc.config.query_maxlen == 16 and enc.config.doc_maxlen == 32
    texts = ["paris, rome.", "what is the capital of france?"]
    for a, b in zip(enc.encode_queries(texts), ref.encode_queries(texts)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # the folder's own skiplist is used: ";" is not in it, so it is kept
    assert enc.document_tokens(["rome; paris!"])[0] == ["[CLS]", "[unused1]", "rome", ";", "paris", "[SEP]"]
    assert ref.document_tokens(["rome; paris!"])[0] == ["[CLS]", "[unused1]", "rome", "paris", "[SEP]"]
    # PyLate's do_query_expansion=False: only the query's own tokens score, no [MASK] padding
    st = json.loads((d / "config_sentence_transformers.json").read_text())
    (d / "config_sentence_transformers.json").write_text(json.dumps({**st, "do_query_expansion": False}))
    short = Encoder.from_pretrained(d)
    padded, own = enc.encode_queries(texts), short.encode_queries(texts)
    assert [q.shape[0] for q in padded] == [16, 16]
    assert [q.shape[0] for q in own] == [len(t) for t in short.query_tokens(texts)] and own[0].shape[0] < 16
    np.testing.assert_allclose(own[0], padded[0][: own[0].shape[0]], atol=1e-6)
