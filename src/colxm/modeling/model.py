"""ColBERTModel: backbone + linear projection + L2 normalisation (differentiable, for training too)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colxm.modeling.query_weights import QueryTokenWeights


def project_queries(linear: nn.Linear, H: torch.Tensor, keep: torch.Tensor | None = None,
                    weights: QueryTokenWeights | None = None) -> torch.Tensor:
    """Backbone output -> [B, Lq, dim] normalised query vectors, zero where ``keep`` is False,
    each scaled by its learned weight when the model has ``weights``."""
    Q = F.normalize(linear(H), p=2, dim=2)
    if weights is not None:
        return Q * weights(H, keep).unsqueeze(2).to(Q.dtype)
    return Q if keep is None else Q * keep.unsqueeze(2).to(Q.dtype)


def project_documents(linear: nn.Linear, H: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Backbone output -> [B, Ld, dim] normalised document vectors, zero where ``keep`` is False."""
    D = linear(H)
    return F.normalize(D * keep.unsqueeze(2).to(D.dtype), p=2, dim=2)


class ColBERTModel(nn.Module):
    """colbert-ai's ColBERT.query / ColBERT.doc as a plain nn.Module.

    ``skip_table``: bool [vocab] of ids whose document vectors are dropped (punctuation, padding).
    ``lang_ids`` ([B] long, adapter indexes) is used by XMOD backbones and ignored by others.
    ``expansion_id``: the id padding queries ([MASK]) when those positions must not score (query
    expansion off); None keeps every query position, as colbert-ai does.
    ``query_weights``: a learned weight per query token (:mod:`colxm.modeling.query_weights`), or
    None for plain ColBERT.
    """

    def __init__(self, backbone: nn.Module, linear: nn.Linear, skip_table: torch.Tensor,
                 expansion_id: int | None = None, query_weights: QueryTokenWeights | None = None):
        super().__init__()
        self.backbone = backbone
        self.linear = linear
        self.query_weights = query_weights
        self.register_buffer("skip_table", skip_table.bool(), persistent=False)
        self.expansion_id = expansion_id
        self.is_xmod = getattr(backbone.config, "model_type", "") == "xmod"

    @property
    def dim(self) -> int:
        return self.linear.out_features

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               lang_ids: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = {}
        if self.is_xmod:
            if lang_ids is None:
                lang_ids = self.default_lang_ids(input_ids.size(0), input_ids.device)
            kwargs["lang_ids"] = lang_ids
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)[0]

    def default_lang_ids(self, batch: int, device) -> torch.Tensor:
        cfg = self.backbone.config
        langs = list(cfg.languages)
        lang = cfg.default_language or langs[0]
        return torch.full((batch,), langs.index(lang), dtype=torch.long, device=device)

    def query_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, Lq] bool: the query positions that score (all of them with query expansion on)."""
        if self.expansion_id is None:
            return torch.ones_like(input_ids, dtype=torch.bool)
        return input_ids != self.expansion_id

    def forward_queries(self, input_ids, attention_mask, lang_ids=None) -> torch.Tensor:
        """[B, Lq, dim] query vectors: normalised (times each token's learned weight when the model
        has query weights); zero at positions that do not score (their MaxSim term is then 0),
        which only happens with query expansion off."""
        keep = None if self.expansion_id is None else self.query_mask(input_ids)
        return project_queries(self.linear, self.hidden(input_ids, attention_mask, lang_ids), keep,
                               self.query_weights)

    def document_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        return ~self.skip_table[input_ids]

    def forward_documents(self, input_ids, attention_mask, lang_ids=None):
        """([B, Ld, dim] normalised vectors, zero at dropped positions; keep mask [B, Ld] bool)."""
        mask = self.document_mask(input_ids)
        return project_documents(self.linear, self.hidden(input_ids, attention_mask, lang_ids), mask), mask

    def forward(self, input_ids, attention_mask, lang_ids=None):
        return self.forward_documents(input_ids, attention_mask, lang_ids)
