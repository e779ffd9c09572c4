"""Post-hoc language addition: only the new adapter changes, routing uses it, errors are clear."""
import pytest
import torch

from colxm.errors import CheckpointError, InputError, LanguageError
from colxm.train.adapters import add_language_adapter, read_text_lines, train_language_adapter
from colxm.train.trainer import TrainConfig

TEXTS = [
    "the music player plays songs and audio files",
    "a web browser to read internet pages",
    "the editor to draw vector graphics and paint image",
    "gzip and bzip2 compress files to archive",
    "a mail client to read and write email",
    "the text document editor is a tool",
] * 4


def hidden(model, ids, lang_id):
    with torch.no_grad():
        return model.backbone(input_ids=ids, attention_mask=torch.ones_like(ids),
                              lang_ids=torch.full((len(ids),), lang_id))[0]


def test_adapter_only_training_leaves_everything_else_bit_identical(tmp_path, tiny_xmod_encoder):
    enc = tiny_xmod_encoder
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    ids = enc.tokenizer(["the music player plays songs"], return_tensors="pt")["input_ids"]
    cfg = TrainConfig(output_dir=str(tmp_path / "out"), max_steps=30, batch_size=8, learning_rate=3e-2,
                      weight_decay=0.1, save_steps=100, logging_steps=1)
    summary = train_language_adapter(enc, "fr_XX", TEXTS, cfg, init_from="de_DE", mlm_probability=0.4)
    backbone = enc.model.backbone
    assert backbone.config.languages == ["en_XX", "de_DE", "fr_XX"]
    after = enc.model.state_dict()
    new = [k for k in after if k not in before]
    assert new and all(".adapter_modules.fr_XX." in k for k in new)
    assert len(new) == 4 * len(backbone.encoder.layer)  # dense1/dense2 weight+bias per layer
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    # trained away from its initialisation (the de_DE adapter), so routing to it changes the output
    assert not torch.equal(after[new[0]], before[new[0].replace("fr_XX", "de_DE")])
    assert not torch.allclose(hidden(enc.model, ids, 2), hidden(enc.model, ids, 1))
    curve = [v for _, v in summary["loss_curve"]]
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.1  # the MLM loss goes down
    assert summary["adapter_params"] == sum(after[k].numel() for k in new)
    assert str(tmp_path / "out") in enc.saved


def test_new_adapter_starts_as_a_copy(tiny_xmod_encoder):
    model = tiny_xmod_encoder.model
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    add_language_adapter(model.backbone, "es", init_from="de")  # ISO codes resolve to de_DE
    assert model.backbone.config.languages[-1] == "es"
    torch.testing.assert_close(hidden(model, ids, 2), hidden(model, ids, 1))


@pytest.mark.parametrize("lang, init, msg", [("de", None, "already has an adapter"),
                                             ("en_GB", None, "already has an adapter"),
                                             ("Klingon!", None, "is not like"),
                                             ("fr", "zz", "cannot initialise from")])
def test_language_errors(tiny_xmod_encoder, lang, init, msg):
    with pytest.raises(LanguageError, match=msg):
        add_language_adapter(tiny_xmod_encoder.model.backbone, lang, init)


def test_non_xmod_model_and_bad_text(tmp_path, tiny_encoder):
    cfg = TrainConfig(output_dir=str(tmp_path / "o"), max_steps=1, batch_size=2)
    with pytest.raises(CheckpointError, match="no XMOD backbone"):
        train_language_adapter(tiny_encoder, "fr", TEXTS, cfg)
    with pytest.raises(InputError, match="no such text file"):
        read_text_lines(tmp_path / "missing.txt")
    (tmp_path / "short.txt").write_text("hi\n\nyo\n")
    with pytest.raises(InputError, match="no line of at least"):
        read_text_lines(tmp_path / "short.txt")


def test_add_language_end_to_end_with_the_real_encoder(tmp_path):
    """add_language on an HF_ColBERT XMOD folder: on disk, every tensor but the new adapter is
    bit-identical, and the reloaded Encoder routes the new language to its adapter."""
    pytest.importorskip("colxm.modeling.encoder")
    from safetensors.torch import load_file
    from tiny_models import make_tiny_xmod_colbert

    from colxm.modeling.encoder import Encoder
    from colxm.train.adapters import add_language

    base = make_tiny_xmod_colbert(tmp_path / "base", languages=("en_XX", "de_DE"))
    text = tmp_path / "lb.txt"
    text.write_text("\n".join(["Lëtzebuergesch ass eng westgermanesch Sprooch.",
                               "D'Stad Lëtzebuerg ass d'Haaptstad vum Land.",
                               "Mir wëlle bleiwe wat mir sinn, an der Stad an um Land."] * 4), encoding="utf-8")
    summary = add_language(base, "lb", text, tmp_path / "out", init_from="de",
                           max_steps=3, batch_size=4, learning_rate=1e-2, save_steps=100)
    assert summary["steps"] == 3 and summary["language"] == "lb"
    old, new = load_file(str(base / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    added = sorted(set(new) - set(old))
    assert added and all(".adapter_modules.lb." in k for k in added)
    for k, v in old.items():
        assert torch.equal(new[k], v), k
    enc = Encoder.from_pretrained(tmp_path / "out")
    assert enc.languages == ["en_XX", "de_DE", "lb"]
    q = ["Wat ass d'Haaptstad?"]
    lb, de = enc.encode_queries(q, languages="lb")[0], enc.encode_queries(q, languages="de")[0]
    assert lb.shape == de.shape and not torch.allclose(torch.from_numpy(lb), torch.from_numpy(de))
