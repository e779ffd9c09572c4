"""The training sub-app (mounted by the main CLI): train both recipes, mine, add-language, errors."""
import json

import pytest
from typer.testing import CliRunner

from colxm.train.cli import app

pytest.importorskip("colxm.modeling.encoder")

PAIRS = [("what is the capital of france", "paris is the capital city of france"),
         ("what is the capital of germany", "berlin is the capital city of germany"),
         ("what is the capital of italy", "rome is the capital city of italy"),
         ("which river is in paris", "the river of paris has water"),
         ("music of the world", "world music is the music of people")]


@pytest.fixture
def setup(tmp_path):
    from tiny_models import make_tiny_bert_colbert

    f = tmp_path / "pairs.jsonl"
    f.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n" for q, p in PAIRS))
    return make_tiny_bert_colbert(tmp_path / "base"), f


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_colbert_from_pairs_mines_bm25_negatives(tmp_path, setup):
    base, pairs = setup
    r = run("train", pairs, "--model", base, "--out", tmp_path / "o", "--steps", 3, "--batch-size", 2,
            "--lr", 1e-3, "--negatives", 1)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["steps"] == 3 and "co2_kg" in summary
    mined = [json.loads(x) for x in (tmp_path / "o" / "train_data.jsonl").read_text().splitlines()]
    assert len(mined) == len(PAIRS) and all(m["negative"] != m["positive"] for m in mined)
    assert (tmp_path / "o" / "artifact.metadata").exists()


def test_train_distillation_with_colxm_teacher_and_dpr(tmp_path, setup):
    base, pairs = setup
    r = run("train", pairs, "--model", base, "--out", tmp_path / "kd", "--steps", 2, "--batch-size", 2,
            "--negatives", 2, "--teacher-colxm", base)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "kd" / "train_data.jsonl").read_text().splitlines()]
    assert all(len(x["passages"]) == 3 and len(x["scores"]) == 3 for x in rows)
    r = run("train", tmp_path / "kd" / "train_data.jsonl", "--model", base, "--out", tmp_path / "dpr",
            "--recipe", "dpr", "--pooling", "cls", "--steps", 2, "--batch-size", 2)
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "dpr" / "1_Pooling" / "config.json").read_text())["pooling_mode_cls_token"]


@pytest.mark.parametrize("cache", ["--cache-backbone", "--no-cache-backbone"])
def test_train_projection_only_from_the_cli(tmp_path, setup, cache):
    import torch
    from safetensors.torch import load_file

    base, pairs = setup
    r = run("train", pairs, "--model", base, "--out", tmp_path / "p", "--steps", 3, "--batch-size", 2,
            "--lr", 1e-2, "--trainable-layers", 0, cache)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["trainable_params"] == 16 * 32  # the projection only
    before, after = load_file(str(base / "model.safetensors")), load_file(str(tmp_path / "p" / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["linear.weight"]


@pytest.mark.parametrize("cache", ["--cache-backbone", "--no-cache-backbone"])
def test_train_query_weights_alone_from_the_cli(tmp_path, setup, cache):
    import torch
    from safetensors.torch import load_file

    base, pairs = setup
    r = run("train", pairs, "--model", base, "--out", tmp_path / "w", "--steps", 3, "--batch-size", 2,
            "--query-weights", "--query-weights-lr", 0.1, "--freeze-projection", "--trainable-layers", 0, cache)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["trainable_params"] == (32 + 1) + 1 + 1  # head: hidden + 1 inputs, a bias; the temperature
    before, after = load_file(str(base / "model.safetensors")), load_file(str(tmp_path / "w" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # backbone and projection unchanged
    assert sorted(set(after) - set(before)) == ["colxm_query_weights.score.bias", "colxm_query_weights.score.weight"]
    r = run("train", pairs, "--model", base, "--out", tmp_path / "d", "--recipe", "dpr", "--query-weights")
    assert r.exit_code == 1 and "--recipe colbert" in r.output


def test_train_query_expansion_switch_is_saved_with_the_model(tmp_path, setup):
    from colxm.modeling.encoder import Encoder

    base, pairs = setup
    assert Encoder.from_pretrained(base).encode_queries(["rome"])[0].shape[0] == 16  # padded to query_maxlen
    r = run("train", pairs, "--model", base, "--out", tmp_path / "n", "--steps", 2, "--batch-size", 2,
            "--no-query-expansion")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "n" / "artifact.metadata").read_text())["colxm_query_expansion"] is False
    trained = Encoder.from_pretrained(tmp_path / "n")
    assert trained.encode_queries(["rome"])[0].shape[0] == len(trained.query_tokens(["rome"])[0]) < 16
    r = run("train", pairs, "--model", base, "--out", tmp_path / "d", "--recipe", "dpr", "--no-query-expansion")
    assert r.exit_code == 1 and "--recipe colbert" in r.output


def test_mine_command(tmp_path, setup):
    base, pairs = setup
    r = run("mine", pairs, "--out", tmp_path / "t.jsonl", "--method", "model", "--model", base, "--negatives", 2)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(PAIRS)


def test_errors_are_one_line(tmp_path, setup):
    base, _ = setup
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n')
    r = run("train", bad, "--model", base, "--out", tmp_path / "o")
    assert r.exit_code == 1 and r.output.startswith("error: ") and "Traceback" not in r.output
    r = run("add-language", "lb", "--text", tmp_path / "none.txt", "--model", base, "--out", tmp_path / "x")
    assert r.exit_code == 1 and "no such text file" in r.output


def test_add_language_command(tmp_path):
    from tiny_models import make_tiny_xmod_colbert

    base = make_tiny_xmod_colbert(tmp_path / "xm", languages=("en_XX", "de_DE"))
    text = tmp_path / "lb.txt"
    text.write_text("D'Stad Lëtzebuerg ass d'Haaptstad vum Land.\n" * 8, encoding="utf-8")
    r = run("add-language", "lb", "--text", text, "--model", base, "--out", tmp_path / "xm2",
            "--steps", 2, "--batch-size", 4)
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "xm2" / "config.json").read_text())
    assert cfg["languages"] == ["en_XX", "de_DE", "lb"]
