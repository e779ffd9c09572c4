"""The trainer on tiny models: loss goes down, frozen weights stay bit-identical, resume continues."""
import json

import pytest
import torch

from colxm.errors import InputError
from colxm.train import losses
from colxm.train.data import NwayTuple, Triple
from colxm.train.trainer import ColbertCollator, TrainConfig, apply_freezing, energy_estimate, train_colbert

TRIPLES = [
    Triple("gzip compress files", "gzip is a tool to compress files", "a music player that plays songs"),
    Triple("music player", "a music player that plays songs", "a web browser for internet pages"),
    Triple("draw vector graphics", "an editor to draw vector graphics", "a mail client to read email"),
    Triple("web browser", "a web browser for internet pages", "gzip is a tool to compress files"),
    Triple("email client", "a mail client to read email", "an editor to draw vector graphics"),
    Triple("raster image paint", "paint raster image program", "audio player for songs"),
    Triple("text document editor", "write text document with the editor", "bzip2 archive tool"),
    Triple("bzip2 archive", "bzip2 archive tool", "write text document with the editor"),
]


def dataset_loss(enc, rows, nway=2):
    """Mean ColBERT-XM loss over the data in eval mode (no dropout in the tiny models)."""
    batch = ColbertCollator(enc.tokenize_queries, enc.tokenize_documents)(rows)
    with torch.no_grad():
        Q = enc.model.forward_queries(batch["q_input_ids"], batch["q_attention_mask"])
        D, m = enc.model.forward_documents(batch["d_input_ids"], batch["d_attention_mask"])
        S = losses.maxsim_scores(Q, D, m)
        if "teacher_scores" in batch:
            return losses.distillation_loss(S, batch["teacher_scores"]).item()
        return losses.colbert_xm_loss(S, nway).item()


def cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "run"), max_steps=12, batch_size=4, learning_rate=2e-2,
                warmup_ratio=0.1, save_steps=100, logging_steps=2, tdp_watts=100.0, carbon_intensity=0.5)
    return TrainConfig(**{**base, **kw})


def test_few_steps_lower_the_loss_and_write_summary(tmp_path, tiny_encoder):
    before = dataset_loss(tiny_encoder, TRIPLES)
    summary = train_colbert(tiny_encoder, TRIPLES, cfg(tmp_path))
    after = dataset_loss(tiny_encoder, TRIPLES)
    assert after < 0.8 * before, (before, after)
    run = tmp_path / "run"
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["steps"] == summary["steps"] == 12
    assert len(on_disk["loss_curve"]) >= 5 and on_disk["loss_curve"][0][0] == 1
    assert (run / "loss.png").stat().st_size > 1000
    # energy = TDP x time, CO2 = energy x intensity
    assert on_disk["energy_kwh"] == pytest.approx(100.0 * on_disk["wall_time_s"] / 3.6e6, rel=1e-2)
    assert on_disk["co2_kg"] == pytest.approx(0.5 * on_disk["energy_kwh"])
    # the final model is written by the encoder's own save_pretrained
    assert str(run) in tiny_encoder.saved and (run / "model.safetensors").exists()


def test_distillation_run_lowers_kl(tmp_path, tiny_encoder):
    rows = [NwayTuple(t.query, [t.positive, t.negative, TRIPLES[(i + 3) % 8].positive], [4.0, 0.0, 1.0])
            for i, t in enumerate(TRIPLES)]
    before = dataset_loss(tiny_encoder, rows)
    train_colbert(tiny_encoder, rows, cfg(tmp_path))
    assert dataset_loss(tiny_encoder, rows) < 0.8 * before


def test_colbert_xm_recipe_keeps_embeddings_and_adapters_bit_identical(tmp_path, tiny_xmod_encoder):
    model = tiny_xmod_encoder.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_colbert(tiny_xmod_encoder, TRIPLES, cfg(tmp_path, max_steps=4, weight_decay=0.1))
    frozen = [n for n in before if "embeddings." in n or ".adapter_modules." in n]
    assert any("adapter_modules.de_DE" in n for n in frozen) and any("word_embeddings" in n for n in frozen)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, before[n]), n
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "linear.weight" in changed and any("attention.self.query" in n for n in changed)


def test_trainable_layers_limits_training_to_the_top(tiny_encoder):
    trainable, frozen = apply_freezing(tiny_encoder.model, trainable_layers=1)
    assert "linear.weight" in trainable
    assert all(".layer.1." in n or n == "linear.weight" for n in trainable)
    assert any(".layer.0." in n for n in frozen)


def test_freeze_query_weights_keeps_a_saved_head_out_of_training(tiny_encoder):
    from colxm.modeling.query_weights import QueryTokenWeights

    tiny_encoder.model.query_weights = QueryTokenWeights(tiny_encoder.model.backbone.config.hidden_size)
    head = {n for n, _ in tiny_encoder.model.named_parameters() if n.startswith("query_weights.")}
    assert len(head) == 2
    trainable, frozen = apply_freezing(tiny_encoder.model, freeze_query_weights=True)
    assert head <= set(frozen) and not head & set(trainable)
    trainable, _ = apply_freezing(tiny_encoder.model, freeze_projection=True)
    assert head <= set(trainable) and "linear.weight" not in trainable
    with pytest.raises(InputError, match="no parameter to train"):
        apply_freezing(tiny_encoder.model, trainable_layers=0, freeze_projection=True, freeze_query_weights=True)


def test_learned_temperature_gets_its_own_lr_without_a_head(tmp_path, tiny_encoder):
    from safetensors.torch import load_file

    from colxm.train.trainer import SCORE_SCALE_LR

    # at the backbone's LR (1e-7) the one log-scale scalar could not move past ~1e-6 in 8 steps
    train_colbert(tiny_encoder, TRIPLES, cfg(tmp_path, max_steps=8, learning_rate=1e-7, save_steps=8,
                                             learn_temperature=True))
    log_scale = float(load_file(str(tmp_path / "run" / "checkpoint-8" / "trainable.safetensors"))["score_scale.log_scale"])
    assert 1e-3 < abs(log_scale) <= 8 * SCORE_SCALE_LR


def test_resume_continues_from_the_saved_step(tmp_path, tiny_encoder):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):  # simulates an interruption right after checkpoint-3 is written
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                control.should_training_stop = True

    from colxm.train import trainer as tr

    orig = tr._make_hf_trainer
    tr._make_hf_trainer = lambda **kw: orig(**{**kw, "callbacks": [StopAt()]})
    try:
        first = train_colbert(tiny_encoder, TRIPLES, cfg(tmp_path, max_steps=5, save_steps=3, logging_steps=1))
    finally:
        tr._make_hf_trainer = orig
    assert first["steps"] == 3 and (tmp_path / "run" / "checkpoint-3" / "trainable.safetensors").exists()

    from train_doubles import TinyEncoder

    fresh = TinyEncoder("bert")  # a new process would start from the base model again
    second = train_colbert(fresh, TRIPLES, cfg(tmp_path, max_steps=5, save_steps=3, logging_steps=1))
    assert second["resumed_from"].endswith("checkpoint-3")
    assert second["steps"] == 5
    # the restored history (steps 1-3) continues with steps 4 and 5
    assert [s for s, _ in second["loss_curve"]] == [1, 2, 3, 4, 5]

    # interrupted + resumed == uninterrupted: same weights, data order and schedule restored
    straight = TinyEncoder("bert")
    train_colbert(straight, TRIPLES, cfg(tmp_path / "b", max_steps=5, save_steps=3, logging_steps=1))
    for (n, a), (_, b) in zip(fresh.model.named_parameters(), straight.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=n)


def test_config_and_input_errors(tmp_path, tiny_encoder):
    with pytest.raises(InputError, match="learning rates must be positive"):
        TrainConfig(output_dir="x", projection_lr=0.0)
    with pytest.raises(InputError, match="precision"):
        TrainConfig(output_dir="x", precision="fp8")
    with pytest.raises(InputError, match="fewer than one batch"):
        train_colbert(tiny_encoder, TRIPLES[:2], cfg(tmp_path))
    assert energy_estimate(3600, 1000, 0.2) == {"tdp_watts": 1000, "energy_kwh": 1.0,
                                               "carbon_intensity_kg_per_kwh": 0.2, "co2_kg": 0.2}


def test_real_encoder_trains_and_checkpoints_load_back(tmp_path):
    """Through the project's Encoder: HF_ColBERT checkpoints that Encoder.from_pretrained reloads."""
    Encoder = pytest.importorskip("colxm.modeling.encoder").Encoder
    from tiny_models import make_tiny_bert_colbert

    rows = [Triple(f"what is the capital of {a}", f"{c} is the capital city of {a}", f"the {b} river water")
            for a, c, b in [("france", "paris", "rome"), ("germany", "berlin", "paris"),
                            ("italy", "rome", "berlin"), ("france", "paris", "germany")]]
    enc = Encoder.from_pretrained(make_tiny_bert_colbert(tmp_path / "base"))
    base_emb = enc.model.backbone.embeddings.word_embeddings.weight.detach().clone()
    base_linear = enc.model.linear.weight.detach().clone()
    before = dataset_loss(enc, rows)
    summary = train_colbert(enc, rows, cfg(tmp_path, max_steps=6, save_steps=3, batch_size=2, learning_rate=5e-3))
    assert summary["steps"] == 6
    assert dataset_loss(enc, rows) < before
    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoint-3"):
        assert (folder / "artifact.metadata").exists() and (folder / "model.safetensors").exists()
    again = Encoder.from_pretrained(tmp_path / "run")
    assert torch.equal(again.model.linear.weight, enc.model.linear.weight)
    assert not torch.equal(again.model.linear.weight, base_linear)
    assert torch.equal(again.model.backbone.embeddings.word_embeddings.weight, base_emb)  # frozen
    q = ["what is the capital of italy"]
    assert again.encode_queries(q)[0] == pytest.approx(enc.encode_queries(q)[0], abs=1e-5)


def test_projection_learning_rate_is_separate(tmp_path, tiny_encoder):
    before = {n: p.detach().clone() for n, p in tiny_encoder.model.named_parameters()}
    train_colbert(tiny_encoder, TRIPLES, cfg(tmp_path, max_steps=3, learning_rate=1e-9, projection_lr=1e-2,
                                             warmup_ratio=0.0))
    moved = {n: (p - before[n]).abs().max().item() for n, p in tiny_encoder.model.named_parameters()}
    assert moved["linear.weight"] > 1e-3
    assert max(v for n, v in moved.items() if n != "linear.weight") < 1e-6


def test_time_budget_stops_with_a_checkpoint(tmp_path, tiny_encoder):
    summary = train_colbert(tiny_encoder, TRIPLES, cfg(tmp_path, max_steps=1000, save_steps=500, max_minutes=1e-9))
    assert summary["steps"] == 1  # stopped after the first step
    assert (tmp_path / "run" / "checkpoint-1" / "trainable.safetensors").exists()
