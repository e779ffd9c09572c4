"""Post-hoc language addition for XMOD models (ColBERT-XM Fig. 1d).

A new adapter for the language is added to every XMOD layer, initialised as a copy of an existing
adapter, and trained alone with masked-language modelling on monolingual text; every other weight
of the model stays bit-identical. The language is appended to the backbone config's
``languages`` (XMOD routes by position in that list), so the saved model routes it like any other.

Retrieval checkpoints (HF_ColBERT) carry no MLM head. Training therefore uses a transient
RoBERTa-style head whose decoder is tied to the (frozen) word embeddings and whose small transform
is trained along with the adapter, then discarded: only the adapter is kept.
"""
from __future__ import annotations

import copy
import logging
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from colxm.errors import CheckpointError, InputError, LanguageError
from colxm.train.trainer import TrainConfig, run_training

log = logging.getLogger(__name__)

_CODE = re.compile(r"^[a-z]{2,3}(_[A-Za-z]{2,4})?$")


def xmod_backbone(model: nn.Module) -> nn.Module:
    """The XmodModel inside ``model`` (a CheckpointError when there is none)."""
    for m in model.modules():
        if getattr(getattr(m, "config", None), "model_type", None) == "xmod" and hasattr(m, "encoder"):
            return m
    raise CheckpointError("this model has no XMOD backbone: languages can only be added to XMOD (ColBERT-XM) models")


def add_language_adapter(backbone: nn.Module, lang: str, init_from: str | None = None) -> list[nn.Parameter]:
    """Add an adapter named ``lang`` to every layer, copied from ``init_from`` (default: the default
    language); register ``lang`` in ``config.languages``. Returns the new parameters."""
    langs = list(backbone.config.languages)
    if not isinstance(lang, str) or not _CODE.match(lang):
        raise LanguageError(f"language code {lang!r} is not like 'lb' or 'lb_LU' (ISO 639 code, optional region)")
    if lang in langs or any(code.split("_")[0].lower() == lang.split("_")[0].lower() for code in langs):
        raise LanguageError(f"the model already has an adapter for {lang!r} ({', '.join(langs)})")
    src = init_from or backbone.config.default_language or langs[0]
    if src not in langs:
        matches = [c for c in langs if c.split("_")[0].lower() == src.split("_")[0].lower()]
        if not matches:
            raise LanguageError(f"cannot initialise from {src!r}: the model's adapters are {', '.join(langs)}")
        src = matches[0]
    new_params: list[nn.Parameter] = []
    for layer in backbone.encoder.layer:
        modules = layer.output.adapter_modules
        modules[lang] = copy.deepcopy(modules[src])
        new_params.extend(modules[lang].parameters())
    backbone.config.languages = [*langs, lang]
    log.info("added adapter %s (initialised from %s) to %d layers", lang, src, len(backbone.encoder.layer))
    return new_params


class MLMHead(nn.Module):
    """RoBERTa's LM head (dense, GELU, LayerNorm, decoder tied to the word embeddings)."""

    def __init__(self, word_embeddings: nn.Embedding, eps: float = 1e-5):
        super().__init__()
        hidden = word_embeddings.weight.size(1)
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(word_embeddings.weight.size(0)))
        self._emb = [word_embeddings]  # a list: not registered as a submodule (not saved, not trained)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.norm(nn.functional.gelu(self.dense(h)))
        return x @ self._emb[0].weight.T + self.bias


class AdapterMLMModule(nn.Module):
    """Masked-language modelling through one language's adapters; logits only at masked positions."""

    accepts_loss_kwargs = False

    def __init__(self, backbone: nn.Module, lang_id: int):
        super().__init__()
        self.backbone = backbone
        self.lang_id = lang_id
        self.head = MLMHead(backbone.embeddings.word_embeddings, backbone.config.layer_norm_eps)

    def forward(self, input_ids, attention_mask, labels):
        lang_ids = torch.full((input_ids.size(0),), self.lang_id, dtype=torch.long, device=input_ids.device)
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, lang_ids=lang_ids)[0]
        picked = labels != -100
        logits = self.head(h[picked])
        return {"loss": nn.functional.cross_entropy(logits.float(), labels[picked])}


def read_text_lines(path: str | Path, min_chars: int = 20) -> list[str]:
    """Non-empty lines of a UTF-8 text file (lines shorter than ``min_chars`` are skipped)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such text file; give monolingual text, one passage a line")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    lines = [ln for ln in lines if len(ln) >= min_chars]
    if not lines:
        raise InputError(f"{p}: no line of at least {min_chars} characters to train on")
    return lines


def train_language_adapter(
    encoder,
    lang: str,
    texts: Sequence[str],
    cfg: TrainConfig,
    *,
    init_from: str | None = None,
    mlm_probability: float = 0.15,
    max_length: int = 128,
) -> dict:
    """Add ``lang`` to ``encoder``'s XMOD backbone and train only its adapters with MLM on ``texts``.

    The encoder is changed in place and saved (``encoder.save_pretrained``) to ``cfg.output_dir``.
    """
    from transformers import DataCollatorForLanguageModeling

    backbone = xmod_backbone(encoder.model)
    for p in encoder.model.parameters():
        p.requires_grad_(False)
    new = add_language_adapter(backbone, lang, init_from)
    for p in new:
        p.requires_grad_(True)
    module = AdapterMLMModule(backbone, lang_id=len(backbone.config.languages) - 1)
    tok = encoder.tokenizer
    if tok.mask_token is None:
        raise CheckpointError("the model's tokenizer has no mask token: masked-language modelling is impossible")
    enc = tok(list(texts), truncation=True, max_length=max_length)
    rows = [{"input_ids": ids} for ids in enc["input_ids"] if len(ids) > 2]
    collator = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=mlm_probability)
    encoder.model.train()
    try:
        summary = run_training(module, rows, collator, cfg, save_fn=lambda d: encoder.save_pretrained(d))
    finally:
        encoder.model.eval()
        for p in encoder.model.parameters():
            p.requires_grad_(True)
    summary["language"] = lang
    summary["adapter_params"] = sum(p.numel() for p in new)
    return summary


def add_language(model: str | Path, lang: str, text_file: str | Path, out: str | Path, *,
                 init_from: str | None = None, cfg: TrainConfig | None = None, **cfg_overrides) -> dict:
    """``colxm add-language``: load ``model``, add and train ``lang``'s adapter on ``text_file``,
    save the result to ``out`` (an HF_ColBERT folder whose config lists the new language)."""
    from colxm.modeling.encoder import Encoder

    texts = read_text_lines(text_file)
    cfg = cfg or TrainConfig(output_dir=str(out), **{"learning_rate": 1e-4, "max_steps": 200, **cfg_overrides})
    encoder = Encoder.from_pretrained(model)
    return train_language_adapter(encoder, lang, texts, cfg, init_from=init_from)
