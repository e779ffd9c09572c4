"""Small shippable deltas: only the tensors a run trained (e.g. the top layers and the projection),
in fp16, plus the ColBERT settings; ``apply_delta`` rebuilds the full HF_ColBERT folder from the
base model offline.

Layout of a delta folder: ``delta.safetensors`` (tensor names as in an HF_ColBERT checkpoint:
``bert.encoder.layer.11...``, ``linear.weight``, ``colxm_query_weights.*``) and ``delta.json`` (``colbert_config``: the
artifact.metadata to write; ``base``: how to obtain the base model; free-form ``training`` notes).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch

from colxm.errors import CheckpointError
from colxm.modeling.query_weights import STATE_PREFIX as QUERY_WEIGHTS_PREFIX

DELTA_WEIGHTS = "delta.safetensors"
DELTA_META = "delta.json"
_HEAD = "query_weights."  # the model's query-token weight head (stored as QUERY_WEIGHTS_PREFIX...)


def _hf_name(model, name: str) -> str:
    if name.startswith("backbone."):
        return model.backbone.base_model_prefix + name[len("backbone"):]
    if name.startswith(_HEAD):
        return QUERY_WEIGHTS_PREFIX + name[len(_HEAD):]
    return name


def _local_name(prefix: str, name: str) -> str:
    """The inverse of :func:`_hf_name` (``prefix``: the backbone's base_model_prefix plus a dot)."""
    if name.startswith(prefix):
        return "backbone." + name[len(prefix):]
    if name.startswith(QUERY_WEIGHTS_PREFIX):
        return _HEAD + name[len(QUERY_WEIGHTS_PREFIX):]
    return name


def export_delta(encoder, names: Iterable[str], out: str | Path, *, base: dict | None = None,
                 training: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Write the named parameters of ``encoder.model`` (names as in ``encoder.model.named_parameters()``)."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(encoder.model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise CheckpointError(f"the model has no parameter {missing[0]!r}")
    tensors = {_hf_name(encoder.model, n): params[n].detach().to("cpu", dtype).contiguous() for n in names}
    save_file(tensors, str(out / DELTA_WEIGHTS), metadata={"format": "pt"})
    meta = {"colbert_config": encoder.config.to_metadata(), "base": base or {}, "training": training or {},
            "dtype": str(dtype).replace("torch.", ""), "num_tensors": len(tensors),
            "num_params": int(sum(t.numel() for t in tensors.values()))}
    (out / DELTA_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def delta_from_checkpoint(checkpoint: str | Path, out: str | Path, *, module_prefix: str = "net.",
                          base: dict | None = None, training: dict | None = None) -> Path:
    """The delta of a training checkpoint (``checkpoint-N`` or a run's output folder): the tensors
    listed in its ``trainable.safetensors``, taken from the HF_ColBERT model saved beside them."""
    from safetensors import safe_open

    from colxm.modeling.encoder import Encoder
    from colxm.train.trainer import TRAINABLE_FILE

    checkpoint = Path(checkpoint)
    path = checkpoint / TRAINABLE_FILE
    if not path.is_file():
        raise CheckpointError(f"{checkpoint} has no {TRAINABLE_FILE}: not a colxm training checkpoint")
    with safe_open(str(path), framework="pt") as f:
        names = [k[len(module_prefix):] if k.startswith(module_prefix) else k for k in f.keys()
                 if not k.startswith("score_scale.")]  # the loss's temperature is not part of the model
    return export_delta(Encoder.from_pretrained(checkpoint), names, out, base=base, training=training)


def apply_delta(base: str | Path, delta: str | Path, out: str | Path) -> Path:
    """Load the base model, overwrite the delta's tensors, write an HF_ColBERT folder to ``out``."""
    from safetensors.torch import load_file

    from colxm.modeling.config import ColBERTConfig
    from colxm.modeling.encoder import Encoder

    delta = Path(delta)
    try:
        meta = json.loads((delta / DELTA_META).read_text(encoding="utf-8"))
        tensors = load_file(str(delta / DELTA_WEIGHTS))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{delta}: not a readable colxm delta ({e})") from e
    config = ColBERTConfig.from_metadata(meta["colbert_config"])
    with_head = any(n.startswith(QUERY_WEIGHTS_PREFIX) for n in tensors)  # learned query-token weights
    enc = Encoder.from_pretrained(base, dim=config.dim, query_weights=True if with_head else None)
    model = enc.model
    prefix = model.backbone.base_model_prefix + "."
    with torch.no_grad():
        for name, t in tensors.items():
            local = _local_name(prefix, name)
            try:
                p = model.get_parameter(local)
            except AttributeError:
                raise CheckpointError(f"{delta}: tensor {name} does not exist in the base model {base}") from None
            if p.shape != t.shape:
                raise CheckpointError(f"{delta}: tensor {name} has shape {tuple(t.shape)}, the base model "
                                      f"{tuple(p.shape)}: the delta belongs to another base model")
            p.copy_(t.to(p.dtype))
    enc.config = config
    return enc.save_pretrained(out)
