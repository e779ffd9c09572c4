"""DPR-XM: the single-vector counterpart of ColBERT-XM, for comparison.

One pooled vector per text (mean, max or CLS over the backbone's last layer), cosine similarity,
trained with in-batch negatives (every other passage of the batch, hard negatives included) under
the same freezing rule and Trainer as the ColBERT recipe. Saved as a sentence-transformers folder
(Transformer + Pooling + Normalize), so any sentence-transformers tool can load it too.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from colxm.errors import CheckpointError, InputError
from colxm.train import losses
from colxm.train.data import NwayTuple, Triple
from colxm.train.trainer import TrainConfig, apply_freezing, run_training

log = logging.getLogger(__name__)

DENSE_CONFIG = "colxm_dense.json"
POOLINGS = ("mean", "max", "cls")


@dataclass
class DenseConfig:
    pooling: str = "mean"
    max_length: int = 256
    temperature: float = 0.05
    # e.g. "query: " / "passage: " for e5 backbones; None: the ColBERT checkpoint's own prefixes
    # (colxm_query_prefix / colxm_doc_prefix) when loaded from one, else none
    query_prefix: str | None = None
    passage_prefix: str | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.temperature <= 0:
            raise InputError(f"temperature must be positive, got {self.temperature}")


def _chosen(given: str | None, inherited: str | None) -> str:
    return given if given is not None else (inherited or "")


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``[B, L, h]`` token states -> ``[B, h]``: mean / max over unmasked tokens, or the first token."""
    if how == "cls":
        return hidden[:, 0]
    m = mask.bool()[..., None]
    if how == "max":
        return hidden.masked_fill(~m, torch.finfo(hidden.dtype).min).max(dim=1).values
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


class DenseRetriever(nn.Module):
    """Backbone + pooling; ``embed`` gives un-normalised vectors (the loss normalises), ``encode``
    gives L2-normalised numpy vectors."""

    accepts_loss_kwargs = False

    def __init__(self, backbone: nn.Module, tokenizer, config: DenseConfig | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.config = config or DenseConfig()

    @classmethod
    def from_pretrained(cls, path: str | Path, config: DenseConfig | None = None) -> "DenseRetriever":
        """A folder written by ``save_pretrained``, an HF_ColBERT folder (its backbone), or any
        Hugging Face encoder folder."""
        path = Path(path)
        if (path / DENSE_CONFIG).exists():
            from transformers import AutoModel, AutoTokenizer

            saved = DenseConfig(**json.loads((path / DENSE_CONFIG).read_text()))
            try:
                backbone = AutoModel.from_pretrained(str(path), local_files_only=True)
                tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{path}: unreadable dense model ({e})") from e
            if config is not None:  # given settings win; prefixes left unset stay the saved ones
                saved = replace(config, query_prefix=_chosen(config.query_prefix, saved.query_prefix),
                                passage_prefix=_chosen(config.passage_prefix, saved.passage_prefix))
            return cls(backbone, tok, saved)
        from colxm.modeling.checkpoint import load_checkpoint
        from colxm.modeling.tokenization import DOC_PREFIX_KEY, QUERY_PREFIX_KEY

        ck = load_checkpoint(path)
        config, extra = config or DenseConfig(), ck.config.extra or {}
        config = replace(config, query_prefix=_chosen(config.query_prefix, extra.get(QUERY_PREFIX_KEY)),
                         passage_prefix=_chosen(config.passage_prefix, extra.get(DOC_PREFIX_KEY)))
        return cls(ck.backbone, ck.tokenizer, config)

    def tokenize(self, texts: Sequence[str], prefix: str = "") -> dict[str, torch.Tensor]:
        t = self.tokenizer([prefix + x for x in texts], padding=True, truncation=True,
                           max_length=self.config.max_length, return_tensors="pt")
        return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}

    def tokenize_queries(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenize(texts, self.config.query_prefix or "")

    def tokenize_documents(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenize(texts, self.config.passage_prefix or "")

    def embed(self, input_ids, attention_mask, lang_ids=None) -> torch.Tensor:
        kw = {"lang_ids": lang_ids} if lang_ids is not None else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kw)[0]
        return pool(hidden, attention_mask, self.config.pooling)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], kind: str = "query", batch_size: int = 32) -> np.ndarray:
        """L2-normalised ``[len(texts), hidden]`` float32 vectors."""
        was = self.training
        self.eval()
        tok = self.tokenize_queries if kind == "query" else self.tokenize_documents
        out = []
        for i in range(0, len(texts), batch_size):
            t = tok(texts[i:i + batch_size])
            out.append(nn.functional.normalize(self.embed(t["input_ids"], t["attention_mask"]), dim=-1).float())
        self.train(was)
        return torch.cat(out).numpy() if out else np.zeros((0, self.backbone.config.hidden_size), np.float32)

    def forward(self, q_input_ids, q_attention_mask, d_input_ids, d_attention_mask,
                q_lang_ids=None, d_lang_ids=None, teacher_scores=None):
        q = self.embed(q_input_ids, q_attention_mask, q_lang_ids)
        d = self.embed(d_input_ids, d_attention_mask, d_lang_ids)
        nway = d.size(0) // q.size(0)
        return {"loss": losses.dense_in_batch_loss(q.float(), d.float(), nway, self.config.temperature)}

    def save_pretrained(self, path: str | Path) -> Path:
        """A sentence-transformers folder plus ``colxm_dense.json``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(str(out), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out))
        c = self.config
        (out / DENSE_CONFIG).write_text(json.dumps(asdict(c), indent=2) + "\n")
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
        (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": c.max_length}) + "\n")
        (out / "1_Pooling").mkdir(exist_ok=True)
        (out / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": self.backbone.config.hidden_size,
            "pooling_mode_cls_token": c.pooling == "cls", "pooling_mode_mean_tokens": c.pooling == "mean",
            "pooling_mode_max_tokens": c.pooling == "max", "pooling_mode_mean_sqrt_len_tokens": False,
        }, indent=2) + "\n")
        (out / "2_Normalize").mkdir(exist_ok=True)
        (out / "config_sentence_transformers.json").write_text(json.dumps({
            "prompts": {"query": c.query_prefix or "", "document": c.passage_prefix or ""},
            "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2) + "\n")
        return out


class _DenseCollator:
    def __init__(self, model: DenseRetriever):
        self.model = model

    def __call__(self, batch: Sequence[Triple | NwayTuple]) -> dict[str, torch.Tensor]:
        docs = [p for ex in batch for p in ((ex.positive, ex.negative) if isinstance(ex, Triple) else ex.passages)]
        out = {f"q_{k}": v for k, v in self.model.tokenize_queries([ex.query for ex in batch]).items()}
        out.update({f"d_{k}": v for k, v in self.model.tokenize_documents(docs).items()})
        return out


def train_dense(model: DenseRetriever, examples: Sequence[Triple | NwayTuple], cfg: TrainConfig) -> dict:
    """DPR-XM fine-tuning (teacher scores, if any, are ignored: in-batch negatives only)."""
    if not examples:
        raise InputError("no training examples")
    if cfg.query_weights or cfg.learn_temperature:
        raise InputError("query-token weights and the learned temperature belong to late interaction: "
                         "DPR-XM has one vector per query; turn query_weights and learn_temperature off")
    apply_freezing(model.backbone, freeze_embeddings=cfg.freeze_embeddings,
                   freeze_adapters=cfg.freeze_adapters, trainable_layers=cfg.trainable_layers)
    model.train()
    try:
        return run_training(model, examples, _DenseCollator(model), cfg, save_fn=lambda d: model.save_pretrained(d))
    finally:
        model.eval()
