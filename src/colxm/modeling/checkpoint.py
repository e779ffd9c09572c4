"""Read and write model folders: colbert-ai's HF_ColBERT layout (ColBERTv2, ColBERT-XM), PyLate /
sentence-transformers ColBERT folders, and plain Hugging Face encoders (fresh projection).

HF_ColBERT layout: ``config.json`` (the backbone's config, architectures ["HF_ColBERT"]), weights
with the backbone under its ``base_model_prefix`` (``bert.`` for BERT, ``roberta.`` for XLM-R and
XMOD) plus ``linear.weight`` [dim, hidden] without bias, tokenizer files, ``artifact.metadata``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from colxm.errors import CheckpointError
from colxm.modeling.config import METADATA_FILE, ColBERTConfig
from colxm.modeling.query_weights import STATE_PREFIX as QUERY_WEIGHTS_PREFIX
from colxm.modeling.tokenization import QUERY_EXPANSION_KEY

log = logging.getLogger(__name__)

HF_COLBERT_ARCH = "HF_ColBERT"


@dataclass
class LoadedCheckpoint:
    """Everything needed to build an Encoder, read from one folder."""

    backbone: torch.nn.Module  # a transformers PreTrainedModel (BertModel, XmodModel, ...)
    linear_weight: torch.Tensor | None  # [dim, hidden], None when the folder has no projection
    tokenizer: Any  # transformers fast tokenizer
    config: ColBERTConfig
    kind: str  # "hf_colbert" | "pylate" | "hf_encoder"
    path: Path
    query_weights: dict[str, torch.Tensor] | None = None  # colxm's query-token weight head, if saved


def resolve_path(name_or_path: str | Path) -> Path:
    """A local folder, or a Hugging Face hub id downloaded when the hub is reachable."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; give the model folder that contains config.json")
        return path
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise CheckpointError(f"model folder {path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name))
    except Exception as exc:  # offline, unknown repo, ...: all end the same way for the user
        raise CheckpointError(
            f"{name!r} is not a local folder and could not be downloaded from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}); download it elsewhere and pass the local folder"
        ) from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); restore it from the original model") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder: model.safetensors (single or sharded) or pytorch_model.bin.

    pytorch_model.bin is read with ``torch.load(weights_only=True)``: it never runs pickled code.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    binary = folder / "pytorch_model.bin"
    try:
        if single.exists():
            return load_file(str(single))
        if index.exists():
            shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
            if not shards:
                raise CheckpointError(f"{index} lists no weight files")
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                if not (folder / shard).exists():
                    raise CheckpointError(f"{folder / shard} (listed in {index.name}) is missing")
                out.update(load_file(str(folder / shard)))
            return out
        if binary.exists():
            try:
                state = torch.load(str(binary), map_location="cpu", weights_only=True)
            except Exception as exc:
                raise CheckpointError(
                    f"{binary} could not be read safely ({type(exc).__name__}: {exc}); "
                    "convert it to model.safetensors"
                ) from exc
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CheckpointError(f"{binary} does not hold a flat dict of tensors")
            return state
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"the weights in {folder} are unreadable or truncated ({type(exc).__name__}: {exc}); "
            "download the model again"
        ) from exc
    raise CheckpointError(
        f"{folder} has no weights: expected model.safetensors (or model.safetensors.index.json "
        "with its shards, or pytorch_model.bin)"
    )


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers 4.57.3+ warns about a "Mistral regex" for every local folder saved by a newer
    # transformers, whatever the tokenizer; the tokenizer is left unchanged, so the warning is noise.
    hf_log = hf_logging.get_logger("transformers.tokenization_utils_base")
    level = hf_log.level
    hf_log.setLevel(logging.ERROR)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
    except Exception as exc:
        raise CheckpointError(
            f"the tokenizer files in {folder} are missing or malformed ({type(exc).__name__}: {exc}); "
            "copy tokenizer.json / tokenizer_config.json from the original model"
        ) from exc
    finally:
        hf_log.setLevel(level)
    if not getattr(tok, "is_fast", False):
        raise CheckpointError(f"{folder}: a fast tokenizer (tokenizer.json) is required")
    return tok


def build_backbone(folder: Path, config_dict: dict[str, Any]) -> torch.nn.Module:
    """An un-initialised transformers base model for the config found in config.json."""
    from transformers import AutoConfig, AutoModel

    model_type = config_dict.get("model_type")
    if not model_type:
        raise CheckpointError(f"{folder / 'config.json'} has no model_type")
    try:
        cfg = AutoConfig.for_model(**config_dict)
    except Exception as exc:
        raise CheckpointError(f"{folder / 'config.json'} is not a usable model config ({exc})") from exc
    cfg.architectures = None
    try:
        return AutoModel.from_config(cfg)
    except Exception as exc:
        raise CheckpointError(f"model type {model_type!r} in {folder} is not supported ({exc})") from exc


def load_backbone_weights(backbone: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Load backbone tensors stored with or without the model's base_model_prefix."""
    prefix = getattr(backbone, "base_model_prefix", "") + "."
    own = backbone.state_dict()
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not sub:
        sub = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in sub and not k.endswith("position_ids")]
    # A checkpoint saved without the pooler (colbert-ai never uses it) leaves it at its init.
    missing_needed = [k for k in missing if not k.startswith("pooler.")]
    if missing_needed:
        raise CheckpointError(
            f"the weights in {folder} lack {len(missing_needed)} backbone tensors "
            f"(e.g. {prefix}{missing_needed[0]}); the file is truncated or belongs to another model"
        )
    for k, v in sub.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(
                f"{folder}: tensor {prefix}{k} has shape {tuple(v.shape)}, config.json implies "
                f"{tuple(own[k].shape)}; config.json and the weights do not belong together"
            )
    backbone.load_state_dict({k: v.float() for k, v in sub.items() if k in own}, strict=False)


def load_checkpoint(name_or_path: str | Path, *, marker_scheme: str | None = None) -> LoadedCheckpoint:
    """Read any supported model folder (see module docstring)."""
    folder = resolve_path(name_or_path)
    if (folder / "modules.json").exists():
        return _load_pylate(folder, marker_scheme)
    config_dict = _read_json(folder / "config.json")
    state = read_weights(folder)
    backbone = build_backbone(folder, config_dict)
    load_backbone_weights(backbone, state, folder)
    tokenizer = load_tokenizer(folder)
    linear = state.get("linear.weight")
    if (folder / METADATA_FILE).exists():
        # An undated XMOD checkpoint is taken to be ColBERT-XM, trained with colbert-ai <= 0.2.20.
        undated = "legacy" if config_dict.get("model_type") == "xmod" else "current"
        config = ColBERTConfig.load(folder, default_scheme=marker_scheme, undated_scheme=undated)
    else:
        config = ColBERTConfig(marker_scheme=marker_scheme or "current")
    if linear is not None:
        linear = linear.float()
        hidden = backbone.config.hidden_size
        if linear.dim() != 2 or linear.shape[1] != hidden:
            raise CheckpointError(
                f"linear.weight in {folder} has shape {tuple(linear.shape)}, expected [dim, {hidden}]"
            )
        if linear.shape[0] != config.dim:
            raise CheckpointError(
                f"linear.weight in {folder} projects to {linear.shape[0]} dimensions but "
                f"{METADATA_FILE} says dim={config.dim}"
            )
        kind = "hf_colbert"
    else:
        kind = "hf_encoder"
        log.warning("%s has no ColBERT projection (linear.weight): a fresh random one is used", folder)
    qw = {k: v for k, v in state.items() if k.startswith(QUERY_WEIGHTS_PREFIX)} or None
    return LoadedCheckpoint(backbone, linear, tokenizer, config, kind, folder, qw)


def _load_pylate(folder: Path, marker_scheme: str | None) -> LoadedCheckpoint:
    """A PyLate / sentence-transformers ColBERT folder: Transformer module + Dense projection."""
    modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    dense = [m for m in modules if str(m.get("type", "")).endswith("Dense")]
    if not dense:
        raise CheckpointError(f"{folder}/modules.json has no Dense module: not a ColBERT model")
    dense_dir = folder / dense[0].get("path", "1_Dense")
    dense_cfg = _read_json(dense_dir / "config.json")
    if dense_cfg.get("bias"):
        raise CheckpointError(f"{dense_dir}: a projection with bias is not supported")
    dense_state = read_weights(dense_dir)
    linear = dense_state.get("linear.weight")
    if linear is None:
        raise CheckpointError(f"{dense_dir} has no linear.weight")
    config_dict = _read_json(folder / "config.json")
    backbone = build_backbone(folder, config_dict)
    load_backbone_weights(backbone, read_weights(folder), folder)
    tokenizer = load_tokenizer(folder)
    st = {}
    if (folder / "config_sentence_transformers.json").exists():
        st = _read_json(folder / "config_sentence_transformers.json")
    config = ColBERTConfig(
        dim=int(linear.shape[0]),
        query_maxlen=int(st.get("query_length", 32)),
        doc_maxlen=int(st.get("document_length", 180)),
        attend_to_mask_tokens=bool(st.get("attend_to_expansion_tokens", False)),
        query_token_id=str(st.get("query_prefix", "[unused0]")).strip(),
        doc_token_id=str(st.get("document_prefix", "[unused1]")).strip(),
        marker_scheme=marker_scheme or "current",
        extra={"pylate_skiplist_words": st.get("skiplist_words")} if st.get("skiplist_words") else {},
    )
    if st.get("do_query_expansion") is False:  # PyLate's switch for the [MASK] query padding
        config.extra[QUERY_EXPANSION_KEY] = False
    return LoadedCheckpoint(backbone, linear.float(), tokenizer, config, "pylate", folder)


def save_checkpoint(folder: str | Path, backbone: torch.nn.Module, linear_weight: torch.Tensor,
                    tokenizer: Any, config: ColBERTConfig,
                    extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write an HF_ColBERT folder that colbert-ai (and colxm) load. ``extra_tensors``: colxm's own
    (the query-weight head), stored beside the backbone; colbert-ai does not read them."""
    from safetensors.torch import save_file

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    cfg = backbone.config.to_dict()
    cfg["architectures"] = [HF_COLBERT_ARCH]
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    prefix = backbone.base_model_prefix + "."
    tensors = {prefix + k: v.detach().to("cpu").contiguous()
               for k, v in backbone.state_dict().items() if not k.endswith("position_ids")}
    tensors["linear.weight"] = linear_weight.detach().to("cpu").contiguous()
    tensors.update(extra_tensors or {})
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out))
    config.save(out)
    return out
