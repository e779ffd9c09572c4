"""DPR-XM: pooling against hand computation, training lowers the loss, save/load round trip."""
import json

import numpy as np
import pytest
import torch

from colxm.errors import InputError
from colxm.train.data import Triple
from colxm.train.dense import DenseConfig, DenseRetriever, _DenseCollator, pool, train_dense
from colxm.train.trainer import TrainConfig

H = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]]])  # last position is padding
M = torch.tensor([[1, 1, 0]])


@pytest.mark.parametrize("how, want", [("mean", [2.0, -1.0]), ("max", [3.0, 2.0]), ("cls", [1.0, 2.0])])
def test_pooling(how, want):
    assert pool(H, M, how)[0].tolist() == want


def test_bad_config():
    with pytest.raises(InputError, match="pooling"):
        DenseConfig(pooling="sum")


ROWS = [Triple(f"what is the capital of {a}", f"{c} is the capital city of {a}", f"the {b} river water")
        for a, c, b in [("france", "paris", "rome"), ("germany", "berlin", "paris"),
                        ("italy", "rome", "berlin"), ("france", "paris", "germany")]]


def batch_loss(model):
    model.eval()
    with torch.no_grad():
        return model(**_DenseCollator(model)(ROWS))["loss"].item()


def test_dpr_xm_training_and_round_trip(tmp_path):
    from tiny_models import make_tiny_bert_colbert

    model = DenseRetriever.from_pretrained(make_tiny_bert_colbert(tmp_path / "base"), DenseConfig(pooling="mean"))
    emb = model.backbone.embeddings.word_embeddings.weight.detach().clone()
    before = batch_loss(model)
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=8, batch_size=2, learning_rate=5e-3,
                      save_steps=100, logging_steps=2)
    summary = train_dense(model, ROWS, cfg)
    assert summary["steps"] == 8
    assert batch_loss(model) < before
    assert torch.equal(model.backbone.embeddings.word_embeddings.weight, emb)
    out = tmp_path / "run"
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    again = DenseRetriever.from_pretrained(out)
    assert again.config.pooling == "mean"
    texts = ["what is the capital of italy", "rome is the capital"]
    a, b = model.encode(texts), again.encode(texts)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("flag", ["query_weights", "learn_temperature"])
def test_dpr_xm_refuses_late_interaction_options(tmp_path, flag):
    from tiny_models import make_tiny_bert_colbert

    model = DenseRetriever.from_pretrained(make_tiny_bert_colbert(tmp_path / "base"), DenseConfig(pooling="mean"))
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=2, **{flag: True})
    with pytest.raises(InputError, match="DPR-XM has one vector per query"):
        train_dense(model, ROWS, cfg)
    assert not (tmp_path / "run").exists()


def test_dpr_xm_from_a_colbert_folder_keeps_its_text_prefixes(tmp_path):
    from tiny_models import make_tiny_bert_colbert

    folder = make_tiny_bert_colbert(tmp_path / "base")
    meta = json.loads((folder / "artifact.metadata").read_text())
    meta.update(colxm_query_prefix="query: ", colxm_doc_prefix="passage: ")  # an e5-style model
    (folder / "artifact.metadata").write_text(json.dumps(meta))
    model = DenseRetriever.from_pretrained(folder, DenseConfig(pooling="mean"))
    assert (model.config.query_prefix, model.config.passage_prefix) == ("query: ", "passage: ")
    ids = model.tokenize_queries(["rome"])["input_ids"][0].tolist()
    assert ids == model.tokenize(["query: rome"])["input_ids"][0].tolist() != model.tokenize(["rome"])["input_ids"][0].tolist()
    # given prefixes win, "" included; and they are saved with the trained model
    plain = DenseRetriever.from_pretrained(folder, DenseConfig(pooling="mean", query_prefix="", passage_prefix="p: "))
    assert (plain.config.query_prefix, plain.config.passage_prefix) == ("", "p: ")
    saved = model.save_pretrained(tmp_path / "dense")
    for config in (None, DenseConfig(pooling="max")):  # a given pooling does not drop the saved prefixes
        again = DenseRetriever.from_pretrained(saved, config)
        assert (again.config.query_prefix, again.config.passage_prefix) == ("query: ", "passage: ")
    assert again.config.pooling == "max"
