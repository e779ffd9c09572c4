"""Query / document tokenisation exactly as colbert-ai does it (QueryTokenizer, DocTokenizer).

Two marker schemes:
  * ``current`` (colbert-ai >= 0.2.21): tokenise with max_length - 1, then insert the marker id
    after [CLS] / <s>.
  * ``legacy`` (colbert-ai <= 0.2.20): tokenise ". " + text with max_length, then overwrite
    position 1 with the marker id. With BERT "." is one piece so both schemes agree; with XLM-R
    ". " gives "▁" "." and the "." stays in the sequence (ColBERT-XM was trained that way).
Queries are padded to query_maxlen; the padding becomes the mask token (query augmentation) and
is attended to when ``attend_to_mask_tokens``.
"""
from __future__ import annotations

import string
from typing import Sequence

import numpy as np
import torch

from colxm.modeling.config import ColBERTConfig


# colxm extension of artifact.metadata: text put before every query / document before tokenising
# (backbones such as e5 were trained with "query: " / "passage: "); absent in colbert-ai checkpoints.
QUERY_PREFIX_KEY = "colxm_query_prefix"
DOC_PREFIX_KEY = "colxm_doc_prefix"
# colxm extension: false = score only a query's own tokens, not the [MASK] tokens that pad it to
# query_maxlen (colbert-ai's query augmentation, always on there; PyLate's do_query_expansion=False).
# Backbones never trained with augmentation (e5) retrieve better without it. Absent means true.
QUERY_EXPANSION_KEY = "colxm_query_expansion"


class ColBERTTokenizer:
    """Wraps a Hugging Face fast tokenizer with colbert-ai's marker and augmentation rules."""

    def __init__(self, tokenizer, config: ColBERTConfig):
        self.tok = tokenizer
        self.config = config
        self.query_marker_id = int(tokenizer.convert_tokens_to_ids(config.query_token_id))
        self.doc_marker_id = int(tokenizer.convert_tokens_to_ids(config.doc_token_id))
        self.pad_id = int(tokenizer.pad_token_id)
        mask_id = tokenizer.mask_token_id
        self.mask_id = int(mask_id if mask_id is not None else tokenizer.pad_token_id)
        self.skip_table = self._skip_table()

    def _prefixed(self, texts: Sequence[str], key: str) -> list[str]:
        """Texts with the model's text prefix (a colxm extension, e.g. e5's "query: "), if any."""
        prefix = self.config.extra.get(key, "")
        return [prefix + t for t in texts] if prefix else list(texts)

    @property
    def query_expansion(self) -> bool:
        """Whether the [MASK] tokens padding a query take part in scoring (colbert-ai: always)."""
        return bool(self.config.extra.get(QUERY_EXPANSION_KEY, True))

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def _skip_table(self) -> np.ndarray:
        """Bool [vocab] table: ids whose document vectors colbert-ai drops (punctuation, padding).

        colbert-ai's rule: for each character of string.punctuation, the first id of
        ``tokenizer.encode(symbol, add_special_tokens=False)`` (with XLM-R this is often "▁",
        which is therefore dropped too). PyLate folders list their words instead.
        """
        table = np.zeros(max(self.vocab_size, self.tok.vocab_size), dtype=bool)
        table[self.pad_id] = True
        if not self.config.mask_punctuation:
            return table
        words = self.config.extra.get("pylate_skiplist_words")
        if words:
            ids = [self.tok.convert_tokens_to_ids(w) for w in words]
        else:
            ids = [self.tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation]
        table[[i for i in ids if i is not None]] = True
        return table

    # ---- documents ------------------------------------------------------------------------------
    def document_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Unpadded ids per document: [CLS] [D] tokens... [SEP], truncated to doc_maxlen."""
        maxlen = self.config.doc_maxlen
        texts = self._prefixed(texts, DOC_PREFIX_KEY)
        if self.config.marker_scheme == "legacy":
            ids = self.tok([". " + t for t in texts], truncation="longest_first",
                           max_length=maxlen)["input_ids"]
            for x in ids:
                x[1] = self.doc_marker_id
            return ids
        ids = self.tok(list(texts), truncation="longest_first", max_length=maxlen - 1)["input_ids"]
        return [x[:1] + [self.doc_marker_id] + x[1:] for x in ids]

    def pad(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad (or left, if the tokenizer pads left) to the longest in the batch."""
        width = max(len(x) for x in ids)
        out = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        left = getattr(self.tok, "padding_side", "right") == "left"
        for i, x in enumerate(ids):
            if left:
                out[i, width - len(x):] = torch.tensor(x)
                mask[i, width - len(x):] = 1
            else:
                out[i, : len(x)] = torch.tensor(x)
                mask[i, : len(x)] = 1
        return out, mask

    def tokenize_documents(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids, mask = self.pad(self.document_ids(texts))
        return {"input_ids": ids, "attention_mask": mask}

    # ---- queries --------------------------------------------------------------------------------
    def tokenize_queries(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """[CLS] [Q] tokens... [SEP] [MASK]... padded to query_maxlen, as colbert-ai's tensorize."""
        maxlen = self.config.query_maxlen
        texts = self._prefixed(texts, QUERY_PREFIX_KEY)
        if self.config.marker_scheme == "legacy":
            obj = self.tok([". " + t for t in texts], padding="max_length", truncation=True,
                           return_tensors="pt", max_length=maxlen)
            ids, mask = obj["input_ids"], obj["attention_mask"]
            ids[:, 1] = self.query_marker_id
        else:
            obj = self.tok(list(texts), padding="max_length", truncation=True,
                           return_tensors="pt", max_length=maxlen - 1)
            ids = _insert_after_first(obj["input_ids"], self.query_marker_id)
            mask = _insert_after_first(obj["attention_mask"], 1)
        ids[ids == self.pad_id] = self.mask_id
        if self.config.attend_to_mask_tokens:
            mask[ids == self.mask_id] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return self.tok.convert_ids_to_tokens(list(ids))


def _insert_after_first(tensor: torch.Tensor, value: int) -> torch.Tensor:
    col = torch.full((tensor.size(0), 1), value, dtype=tensor.dtype)
    return torch.cat([tensor[:, :1], col, tensor[:, 1:]], dim=1)
