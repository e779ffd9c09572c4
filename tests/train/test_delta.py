"""Deltas: export the trained tensors in fp16, rebuild the full model from the base folder."""
import json

import pytest
import torch

from colxm.errors import CheckpointError

pytest.importorskip("colxm.modeling.encoder")


def test_export_and_apply_delta_rebuilds_the_trained_model(tmp_path):
    from tiny_models import make_tiny_bert_colbert

    from colxm.modeling.encoder import Encoder
    from colxm.train.delta import apply_delta, export_delta
    from colxm.train.trainer import apply_freezing

    base = make_tiny_bert_colbert(tmp_path / "base")
    enc = Encoder.from_pretrained(base, doc_maxlen=24)
    trainable, _ = apply_freezing(enc.model, trainable_layers=1)
    with torch.no_grad():
        for n, p in enc.model.named_parameters():
            if n in trainable:
                p.add_(0.01 * torch.randn_like(p))
    d = export_delta(enc, trainable, tmp_path / "delta", base={"model": "tiny"}, training={"command": "x"})
    meta = json.loads((d / "delta.json").read_text())
    assert meta["colbert_config"]["doc_maxlen"] == 24 and meta["dtype"] == "float16"
    assert meta["num_params"] == sum(p.numel() for n, p in enc.model.named_parameters() if n in trainable)
    rebuilt = Encoder.from_pretrained(apply_delta(base, d, tmp_path / "rebuilt"))
    assert rebuilt.config.doc_maxlen == 24
    original = Encoder.from_pretrained(base)
    for (n, a), (_, b), (_, o) in zip(rebuilt.model.named_parameters(), enc.model.named_parameters(),
                                      original.model.named_parameters()):
        if n in trainable:
            assert torch.equal(a, b.half().float()), n
        else:
            assert torch.equal(a, o), n
    texts = ["the capital of france is paris"]
    diff = abs(rebuilt.encode_documents(texts)[0] - enc.encode_documents(texts)[0]).max()
    assert diff < 2e-3


def test_delta_for_another_model_is_refused(tmp_path):
    from tiny_models import make_tiny_bert_colbert

    from colxm.modeling.encoder import Encoder
    from colxm.train.delta import apply_delta, export_delta

    small = Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path / "a", hidden=32))
    d = export_delta(small, ["linear.weight", "backbone.encoder.layer.1.output.dense.weight"], tmp_path / "d")
    with pytest.raises(CheckpointError, match="belongs to another base model"):
        apply_delta(make_tiny_bert_colbert(tmp_path / "b", hidden=16, dim=16), d, tmp_path / "out")
    with pytest.raises(CheckpointError, match="not a readable colxm delta"):
        apply_delta(tmp_path / "a", tmp_path / "nothing", tmp_path / "out2")


def test_delta_from_a_training_checkpoint(tmp_path):
    from tiny_models import make_tiny_bert_colbert

    from colxm.modeling.encoder import Encoder
    from colxm.train.data import Triple
    from colxm.train.delta import apply_delta, delta_from_checkpoint
    from colxm.train.trainer import TrainConfig, train_colbert

    base = make_tiny_bert_colbert(tmp_path / "base")
    enc = Encoder.from_pretrained(base)
    rows = [Triple("capital of france", "paris is the capital of france", "the river water")] * 4
    train_colbert(enc, rows, TrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=2,
                                         learning_rate=1e-2, trainable_layers=1, save_steps=2))
    d = delta_from_checkpoint(tmp_path / "run" / "checkpoint-2", tmp_path / "delta")
    rebuilt = Encoder.from_pretrained(apply_delta(base, d, tmp_path / "rebuilt"))
    torch.testing.assert_close(rebuilt.model.linear.weight, enc.model.linear.weight, atol=1e-3, rtol=1e-3)
    assert not torch.equal(rebuilt.model.linear.weight, Encoder.from_pretrained(base).model.linear.weight)
    with pytest.raises(CheckpointError, match="not a colxm training checkpoint"):
        delta_from_checkpoint(base, tmp_path / "d2")


def test_a_delta_carries_the_query_weight_head(tmp_path):
    from safetensors.torch import load_file
    from tiny_models import make_tiny_bert_colbert

    from colxm.modeling.encoder import Encoder
    from colxm.modeling.query_weights import STATE_PREFIX
    from colxm.train.delta import apply_delta, export_delta

    base = make_tiny_bert_colbert(tmp_path / "base")
    enc = Encoder.from_pretrained(base, query_weights=True)
    with torch.no_grad():
        enc.model.query_weights.score.weight.normal_(0, 2.0)
    names = ["query_weights.score.weight", "query_weights.score.bias"]
    d = export_delta(enc, names, tmp_path / "delta")
    assert sorted(load_file(str(d / "delta.safetensors"))) == [STATE_PREFIX + "score.bias",
                                                               STATE_PREFIX + "score.weight"]
    rebuilt = Encoder.from_pretrained(apply_delta(base, d, tmp_path / "rebuilt"))
    assert torch.equal(rebuilt.model.query_weights.score.weight,
                       enc.model.query_weights.score.weight.half().float())
    q = ["the capital of france is paris"]
    assert abs(rebuilt.encode_queries(q)[0] - enc.encode_queries(q)[0]).max() < 1e-2
    assert Encoder.from_pretrained(base).model.query_weights is None  # the base folder is untouched
