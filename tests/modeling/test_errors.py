"""Bad input and bad model folders end in a colxm exception that says what to do."""
import json
import logging
import shutil

import numpy as np
import pytest
import torch

from colxm.errors import CheckpointError, InputError, LanguageError
from colxm.modeling.encoder import Encoder


@pytest.fixture(scope="module")
def bert(tiny_bert):
    return Encoder.from_pretrained(tiny_bert)


@pytest.fixture(scope="module")
def xmod(tiny_xmod):
    return Encoder.from_pretrained(tiny_xmod)


@pytest.mark.parametrize("texts, needle", [
    ([""], "empty"), (["ok", "   \n"], "#1 is empty"), ([None], "NoneType"), ([42], "int"),
    (None, "None"), ("a single string", "single string"), (["bad \ud800 text"], "surrogate"),
    (5, "int"),
])
@pytest.mark.parametrize("what", ["encode_documents", "encode_queries", "document_tokens"])
def test_bad_texts(bert, texts, needle, what):
    with pytest.raises(InputError, match=needle):
        getattr(bert, what)(texts)


def test_bad_text_in_a_stream_names_its_position(bert):
    def gen():
        yield "fine text"
        yield "another"
        yield ""
    with pytest.raises(InputError, match="#2 is empty"):
        list(bert.iter_documents(gen()))


def test_unknown_language(xmod):
    with pytest.raises(LanguageError, match="no adapter for language 'xx'.*fallback_language"):
        xmod.encode_documents(["hello"], languages="xx")
    with pytest.raises(LanguageError, match="no adapter"):
        xmod.encode_queries(["hello", "hallo"], languages=["en", "tlh"])
    with pytest.raises(LanguageError, match="one per text"):
        xmod.encode_documents(["hello", "hallo"], languages=["en"])
    with pytest.raises(LanguageError):
        xmod.encode_documents(["hello"], languages=[None])
    with pytest.raises(LanguageError, match="no adapter"):
        Encoder.from_pretrained(xmod.name_or_path, language="xx")


def test_fallback_adapter_warns_and_uses_it(tiny_xmod, xmod, caplog):
    enc = Encoder.from_pretrained(tiny_xmod, fallback_language="en")
    with caplog.at_level(logging.WARNING, logger="colxm"):
        out = enc.encode_documents(["hello world"], languages="ja")
    assert "no adapter" in caplog.text and "en_XX" in caplog.text
    np.testing.assert_array_equal(out[0], xmod.encode_documents(["hello world"], languages="en_XX")[0])


class Evil:
    """Stands for arbitrary pickled code: weights_only loading must refuse it."""


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Encoder.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a local folder"):
        Encoder.from_pretrained("some-org/some-model-that-is-not-here")


@pytest.mark.parametrize("broken, needle", [
    ("no_config", "config.json is missing"),
    ("bad_config", "config.json is not valid JSON"),
    ("no_weights", "has no weights"),
    ("truncated_weights", "unreadable or truncated"),
    ("bad_metadata", "artifact.metadata is not valid JSON"),
    ("bad_metadata_value", "dim must be"),
    ("no_tokenizer", "tokenizer"),
    ("wrong_linear", "linear.weight"),
    ("missing_tensor", "lack"),
])
def test_broken_checkpoints(tiny_bert, tmp_path, broken, needle):
    d = _copy(tiny_bert, tmp_path / "m")
    if broken == "no_config":
        (d / "config.json").unlink()
    elif broken == "bad_config":
        (d / "config.json").write_text("{not json")
    elif broken == "no_weights":
        (d / "model.safetensors").unlink()
    elif broken == "truncated_weights":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif broken == "bad_metadata":
        (d / "artifact.metadata").write_text("{\"dim\": ")
    elif broken == "bad_metadata_value":
        meta = json.loads((d / "artifact.metadata").read_text())
        meta["dim"] = "sixteen"
        (d / "artifact.metadata").write_text(json.dumps(meta))
    elif broken == "no_tokenizer":
        for f in d.iterdir():
            if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
                f.unlink()
    elif broken in ("wrong_linear", "missing_tensor"):
        from safetensors.torch import load_file, save_file
        state = load_file(str(d / "model.safetensors"))
        if broken == "wrong_linear":
            state["linear.weight"] = torch.zeros(16, 7)
        else:
            del state["bert.encoder.layer.0.attention.self.query.weight"]
        save_file(state, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=needle):
        Encoder.from_pretrained(d)


def test_pytorch_bin_is_read_with_weights_only(tiny_bert, tmp_path, bert):
    from safetensors.torch import load_file
    d = _copy(tiny_bert, tmp_path / "m")
    state = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    torch.save(state, d / "pytorch_model.bin")
    enc = Encoder.from_pretrained(d)
    np.testing.assert_array_equal(enc.encode_documents(["paris"])[0], bert.encode_documents(["paris"])[0])
    # a pickle holding arbitrary objects is refused, not executed
    torch.save({"linear.weight": torch.zeros(2), "evil": Evil()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="could not be read safely"):
        Encoder.from_pretrained(d)
