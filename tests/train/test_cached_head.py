"""Projection-only training over cached backbone outputs, through the real Encoder on a tiny model."""
import pytest
import torch
from safetensors.torch import load_file

from colxm.train import cached_head as ch
from colxm.train.data import NwayTuple, Triple
from colxm.train.trainer import ColbertCollator, ColbertLossModule, TrainConfig, train_colbert

ROWS = [Triple(f"what is the capital of {a}", f"{c} is the capital city of {a}!", f"the {b} river, water")
        for a, c, b in [("france", "paris", "rome"), ("germany", "berlin", "paris"),
                        ("italy", "rome", "berlin"), ("spain", "madrid", "germany")]]


@pytest.fixture(params=[True, False], ids=["expansion", "no-expansion"])
def encoder(tmp_path, request):
    import json

    from tiny_models import make_tiny_bert_colbert

    from colxm.modeling.encoder import Encoder

    folder = make_tiny_bert_colbert(tmp_path / "base")
    if not request.param:  # the [MASK] padding of queries does not score
        meta = json.loads((folder / "artifact.metadata").read_text())
        (folder / "artifact.metadata").write_text(json.dumps({**meta, "colxm_query_expansion": False}))
    return Encoder.from_pretrained(folder)


def caches(enc, rows):
    queries, passages, indexed = ch.index_examples(rows)
    q = ch.cache_texts(enc.model, enc.tokenize_queries, queries, documents=False, batch_size=3)
    p = ch.cache_texts(enc.model, enc.tokenize_documents, passages, documents=True, batch_size=3)
    return indexed, ch.CachedCollator(q, p)


def test_index_examples_keeps_each_text_once():
    queries, passages, rows = ch.index_examples(ROWS + [Triple(ROWS[0].query, ROWS[1].positive, ROWS[0].positive)])
    assert len(queries) == 4 and len(passages) == 8
    assert rows[4].query == rows[0].query and rows[4].passages == [rows[1].passages[0], rows[0].passages[0]]
    nway = ch.index_examples([NwayTuple("q", ["a", "b", "a"], [1.0, 0.0, 1.0])])[2]
    assert nway[0].passages == [0, 1, 0] and nway[0].scores == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("teacher", [False, True])
def test_cached_loss_equals_the_full_forward(encoder, teacher):
    rows = ROWS if not teacher else [NwayTuple(r.query, [r.positive, r.negative], [3.0, 1.0]) for r in ROWS]
    encoder.model.eval()
    full_batch = ColbertCollator(encoder.tokenize_queries, encoder.tokenize_documents)(rows)
    with torch.no_grad():
        full = ColbertLossModule(encoder.model, 2)(**full_batch)["loss"]
        indexed, collate = caches(encoder, rows)
        batch = collate(indexed)
        cached = ch.CachedHeadLossModule(encoder.model.linear, 2)(**batch)["loss"]
    # the cache holds the backbone's output in float16: equal up to that rounding
    assert cached.item() == pytest.approx(full.item(), rel=2e-3, abs=2e-3)
    # punctuation is not a document vector in either path
    assert int(batch["d_keep"].sum()) == int(encoder.model.document_mask(full_batch["d_input_ids"]).sum())


def test_projection_only_run_uses_the_cache_and_trains_only_the_projection(tmp_path, encoder, monkeypatch):
    calls = []
    hidden = encoder.model.hidden
    monkeypatch.setattr(encoder.model, "hidden", lambda ids, att, *a: calls.append(len(ids)) or hidden(ids, att))
    before = {n: p.detach().clone() for n, p in encoder.model.named_parameters()}
    rows = ROWS * 2  # repeated texts are encoded once
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=8, batch_size=2, learning_rate=5e-2,
                      trainable_layers=0, save_steps=4, logging_steps=1)
    summary = train_colbert(encoder, rows, cfg)
    assert sum(calls) == 4 + 8  # 4 distinct queries, 8 distinct passages, once each
    assert summary["trainable_params"] == encoder.model.linear.weight.numel()
    # the run's time (and energy) includes caching the backbone, not only the steps
    assert summary["prepare_time_s"] > 0 and summary["train_time_s"] > 0
    assert summary["wall_time_s"] == pytest.approx(summary["prepare_time_s"] + summary["train_time_s"], abs=2e-3)
    losses = [v for _, v in summary["loss_curve"]]
    assert min(losses[-3:]) < losses[0]
    for n, p in encoder.model.named_parameters():
        assert torch.equal(p, before[n]) == (n != "linear.weight"), n
    saved = load_file(str(tmp_path / "run" / "checkpoint-4" / "trainable.safetensors"))
    assert list(saved) == ["linear.weight"]


def test_projection_only_run_resumes_from_the_saved_step(tmp_path, encoder):
    from transformers import TrainerCallback

    from colxm.modeling.encoder import Encoder
    from colxm.train import trainer as tr

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                control.should_training_stop = True

    def run(enc, out, callbacks=None):
        cfg = TrainConfig(output_dir=str(out), max_steps=5, batch_size=2, learning_rate=5e-2,
                          trainable_layers=0, save_steps=3, logging_steps=1)
        orig = tr._make_hf_trainer
        if callbacks:
            tr._make_hf_trainer = lambda **kw: orig(**{**kw, "callbacks": callbacks})
        try:
            return train_colbert(enc, ROWS, cfg)
        finally:
            tr._make_hf_trainer = orig

    base = tmp_path / "base"
    assert run(encoder, tmp_path / "run", [StopAt()])["steps"] == 3
    resumed = Encoder.from_pretrained(base)
    second = run(resumed, tmp_path / "run")
    assert second["resumed_from"].endswith("checkpoint-3") and second["steps"] == 5
    straight = Encoder.from_pretrained(base)
    run(straight, tmp_path / "straight")
    torch.testing.assert_close(resumed.model.linear.weight, straight.model.linear.weight, rtol=1e-4, atol=1e-6)


def test_query_weights_alone_train_over_the_cache_and_save_with_the_model(tmp_path, encoder, monkeypatch):
    from colxm.modeling.encoder import Encoder

    calls = []
    hidden = encoder.model.hidden
    monkeypatch.setattr(encoder.model, "hidden", lambda ids, att, *a: calls.append(len(ids)) or hidden(ids, att))
    before = {n: p.detach().clone() for n, p in encoder.model.named_parameters()}
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=8, batch_size=2, learning_rate=1e-5,
                      query_weights=True, query_weights_lr=0.2, freeze_projection=True, trainable_layers=0,
                      save_steps=4, logging_steps=1)
    summary = train_colbert(encoder, ROWS * 2, cfg)
    head = encoder.model.query_weights
    assert sum(calls) == 4 + 8  # the backbone ran once per distinct text
    # the head, plus the loss's learned temperature (on by default with query weights)
    assert summary["trainable_params"] == sum(p.numel() for p in head.parameters()) + 1
    losses = [v for _, v in summary["loss_curve"]]
    assert min(losses[-3:]) < losses[0]
    for n, p in encoder.model.named_parameters():  # backbone and projection bit-identical
        if n in before:
            assert torch.equal(p, before[n]), n
    assert float(head.score.weight.abs().max()) > 0  # the head moved away from plain ColBERT
    saved = load_file(str(tmp_path / "run" / "checkpoint-4" / "trainable.safetensors"))
    assert sorted(saved) == ["query_weights.score.bias", "query_weights.score.weight", "score_scale.log_scale"]
    assert float(saved["score_scale.log_scale"]) != 0.0
    from colxm.train.delta import delta_from_checkpoint

    delta = load_file(str(delta_from_checkpoint(tmp_path / "run", tmp_path / "delta") / "delta.safetensors"))
    assert sorted(delta) == ["colxm_query_weights.score.bias", "colxm_query_weights.score.weight"]
    final = Encoder.from_pretrained(tmp_path / "run")
    torch.testing.assert_close(final.model.query_weights.score.weight, head.score.weight)
    q = ["what is the capital of france"]
    import numpy as np

    np.testing.assert_allclose(final.encode_queries(q)[0], encoder.encode_queries(q)[0], atol=1e-6)
