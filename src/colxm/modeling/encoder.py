"""Encoder: text → L2-normalised token vectors, as colbert-ai's Checkpoint.queryFromText / docFromText.

Fast on a CPU because documents are sorted by length and padded per batch (colbert-ai pads every
batch to the longest document of the whole call), run under ``torch.inference_mode``, and the
punctuation filter is one table lookup instead of a per-token Python loop; the projection and
normalisation run only on the kept tokens.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from colxm.errors import InputError, LanguageError
from colxm.modeling.checkpoint import load_checkpoint, save_checkpoint
from colxm.modeling.config import ColBERTConfig
from colxm.modeling.languages import AUTO, LanguageRouter
from colxm.modeling.model import ColBERTModel
from colxm.modeling.query_weights import QueryTokenWeights
from colxm.modeling.tokenization import QUERY_EXPANSION_KEY, ColBERTTokenizer

log = logging.getLogger(__name__)


@dataclass
class EncoderOptions:
    """Run-time options (not saved with the model).

    language: used when a call passes ``languages=None``: "auto" (detect per text, the default for
        XMOD models) or one code for every text (the ColBERT-XM paper's behaviour, e.g. "en").
    fallback_language: adapter for languages the model lacks (with a warning); None raises.
    chunk_size: texts read from an iterator at a time (bounds memory on long streams).
    """

    batch_size: int = 32
    num_threads: int | None = None
    language: str | None = None
    fallback_language: str | None = None
    chunk_size: int = 2048


class Encoder:
    """A ColBERT model ready to encode queries and documents (see ``from_pretrained``)."""

    def __init__(self, model: ColBERTModel, tokenizer: ColBERTTokenizer, config: ColBERTConfig,
                 name_or_path: str, options: EncoderOptions | None = None):
        self.model = model.eval()
        self._tok = tokenizer
        self.config = config
        self.name_or_path = name_or_path
        self.options = options or EncoderOptions()
        self.router: LanguageRouter | None = None
        if model.is_xmod:
            self.router = LanguageRouter(model.backbone.config.languages, self.options.fallback_language)
            if self.options.language not in (None, AUTO):
                self.router.index(self.options.language)  # fail early on a bad code

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, *, marker_scheme: str | None = None,
                        dim: int = 128, seed: int = 0, batch_size: int = 32,
                        num_threads: int | None = None, language: str | None = None,
                        fallback_language: str | None = None, chunk_size: int = 2048,
                        query_expansion: bool | None = None, query_weights: bool | None = None,
                        **config_overrides) -> "Encoder":
        """Load an HF_ColBERT folder (colbert-ai / ColBERT-XM), a PyLate folder, or any Hugging Face
        encoder (then with a fresh random projection to ``dim``, seeded by ``seed``).

        ``marker_scheme`` ("legacy" / "current") overrides what the checkpoint was trained with;
        ``config_overrides`` set ColBERTConfig fields (query_maxlen, doc_maxlen, attend_to_mask_tokens, ...).
        ``query_expansion`` overrides whether the [MASK] padding of queries scores (saved with the model).
        ``query_weights``: None uses the learned query-token weights when the folder has them
        (:mod:`colxm.modeling.query_weights`); False scores plain ColBERT without them; True keeps
        them, or adds an untrained head (every weight 1, to be trained) when the folder has none.
        """
        ck = load_checkpoint(path_or_hub_id, marker_scheme=marker_scheme)
        config = ck.config
        if config_overrides:
            unknown = set(config_overrides) - set(ColBERTConfig.__dataclass_fields__)
            if unknown:
                raise InputError(f"unknown option(s) {sorted(unknown)} for Encoder.from_pretrained")
            config = ColBERTConfig(**{**config.__dict__, **config_overrides})
        if query_expansion is not None:
            config.extra[QUERY_EXPANSION_KEY] = bool(query_expansion)
        hidden = ck.backbone.config.hidden_size
        linear = torch.nn.Linear(hidden, ck.linear_weight.shape[0] if ck.linear_weight is not None else dim,
                                 bias=False)
        with torch.no_grad():
            if ck.linear_weight is not None:
                linear.weight.copy_(ck.linear_weight)
            else:
                config.dim = dim
                gen = torch.Generator().manual_seed(seed)
                std = getattr(ck.backbone.config, "initializer_range", 0.02)
                linear.weight.copy_(torch.randn(dim, hidden, generator=gen) * std)
        tok = ColBERTTokenizer(ck.tokenizer, config)
        head = None
        if query_weights is not False:
            head = QueryTokenWeights.from_state(ck.query_weights or {}, hidden)
            if head is None and query_weights:
                head = QueryTokenWeights(hidden)
        model = ColBERTModel(ck.backbone, linear, torch.from_numpy(tok.skip_table),
                             expansion_id=None if tok.query_expansion else tok.mask_id, query_weights=head)
        options = EncoderOptions(batch_size, num_threads, language, fallback_language, chunk_size)
        return cls(model, tok, config, str(path_or_hub_id), options)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a colbert-ai HF_ColBERT folder (loadable by colbert-ai and by ``from_pretrained``)."""
        head = self.model.query_weights
        return save_checkpoint(path, self.model.backbone, self.model.linear.weight, self._tok.tok, self.config,
                               extra_tensors=head.state_tensors() if head is not None else None)

    # ---- properties -----------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.model.dim

    @property
    def tokenizer(self):
        """The Hugging Face fast tokenizer."""
        return self._tok.tok

    @property
    def colbert_tokenizer(self) -> ColBERTTokenizer:
        return self._tok

    @property
    def languages(self) -> list[str]:
        """The XMOD adapters of this model ([] for models without language adapters)."""
        return list(self.router.adapters) if self.router else []

    # ---- tokenisation (also used by training) -------------------------------------------------------
    def tokenize_queries(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self._tok.tokenize_queries(_check_texts(texts))

    def tokenize_documents(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self._tok.tokenize_documents(_check_texts(texts))

    def lang_ids(self, texts: Sequence[str], languages=None) -> torch.Tensor | None:
        """Adapter index per text ([B] long) for XMOD models, None for others."""
        if self.router is None:
            _check_languages_shape(languages, len(texts))
            return None
        spec = languages if languages is not None else (self.options.language or AUTO)
        return torch.tensor(self.router.resolve(spec, texts), dtype=torch.long)

    def query_tokens(self, texts: Sequence[str], languages=None) -> list[list[str]]:
        """Token strings aligned 1:1 with the rows ``encode_queries`` returns."""
        ids = self.tokenize_queries(texts)["input_ids"]
        keep = self.model.query_mask(ids)
        return [self._tok.tokens(row[k].tolist()) for row, k in zip(ids, keep)]

    def document_tokens(self, texts: Sequence[str], languages=None) -> list[list[str]]:
        """Token strings aligned 1:1 with the rows ``encode_documents`` returns."""
        out = []
        for ids in self._tok.document_ids(_check_texts(texts)):
            out.append([t for i, t in zip(ids, self._tok.tokens(ids)) if not self._tok.skip_table[i]])
        return out

    # ---- encoding -------------------------------------------------------------------------------
    def encode_queries(self, texts: Sequence[str], languages=None, batch_size: int | None = None,
                       show_progress: bool | None = None) -> list[np.ndarray]:
        """float32 [query_maxlen, dim] per query, rows L2-normalised, or times each token's learned
        weight for models with query weights (with query expansion off, only the positions that
        score: the query's own tokens and markers)."""
        texts = _check_texts(texts)
        lang = self.lang_ids(texts, languages)
        bs = batch_size or self.options.batch_size
        out: list[np.ndarray] = []
        with self._threads(), torch.inference_mode():
            for start in _progress(range(0, len(texts), bs), show_progress, "queries", bs, len(texts)):
                idx = list(range(start, min(start + bs, len(texts))))
                if lang is not None:
                    idx.sort(key=lambda i: int(lang[i]))  # XMOD runs one adapter per run of equal ids
                enc = self._tok.tokenize_queries([texts[i] for i in idx])
                Q = self.model.forward_queries(enc["input_ids"], enc["attention_mask"],
                                               lang[idx] if lang is not None else None)
                Q = Q.float().numpy()
                keep = self.model.query_mask(enc["input_ids"]).numpy()
                batch = [None] * len(idx)
                for j, i in enumerate(idx):
                    batch[i - start] = Q[j] if keep[j].all() else Q[j][keep[j]]
                out.extend(batch)
        return out

    def encode_documents(self, texts: Iterable[str], languages=None, batch_size: int | None = None,
                         show_progress: bool | None = None) -> list[np.ndarray]:
        """float32 [m_i, dim] per document: its non-punctuation tokens, in order, L2-normalised."""
        return list(self.iter_documents(texts, languages, batch_size, show_progress))

    def iter_documents(self, texts: Iterable[str], languages=None, batch_size: int | None = None,
                       show_progress: bool | None = None) -> Iterator[np.ndarray]:
        """Like encode_documents, but yields one array per text; reads ``chunk_size`` texts at a time."""
        bs = batch_size or self.options.batch_size
        total = len(texts) if hasattr(texts, "__len__") else None
        lang_iter = None
        if isinstance(languages, (list, tuple)):
            if total is not None and len(languages) != total:
                raise LanguageError(f"got {len(languages)} languages for {total} texts; give one per text")
            lang_iter = iter(languages)
        it = _iter_texts(texts)
        bar = _bar(show_progress, "documents", total)
        offset = 0
        try:
            while True:
                chunk = list(itertools.islice(it, self.options.chunk_size))
                if not chunk:
                    break
                chunk = _check_texts(chunk, offset)
                spec = languages
                if lang_iter is not None:
                    spec = list(itertools.islice(lang_iter, len(chunk)))
                    if len(spec) != len(chunk):
                        raise LanguageError("fewer languages than texts; give one language per text")
                lang = self.lang_ids(chunk, spec)
                yield from self._encode_chunk(chunk, lang, bs, bar)
                offset += len(chunk)
        finally:
            if bar is not None:
                bar.close()

    def _encode_chunk(self, texts: list[str], lang, bs: int, bar) -> list[np.ndarray]:
        ids = self._tok.document_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        results: list[np.ndarray | None] = [None] * len(ids)
        with self._threads(), torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                if lang is not None:
                    idx = sorted(idx, key=lambda i: int(lang[i]))
                input_ids, mask = self._tok.pad([ids[i] for i in idx])
                H = self.model.hidden(input_ids, mask, lang[idx] if lang is not None else None)
                keep = self.model.document_mask(input_ids)
                V = F.normalize(self.model.linear(H[keep]), p=2, dim=1).float().numpy()
                bounds = np.cumsum(keep.sum(1).numpy())[:-1]
                for i, arr in zip(idx, np.split(V, bounds)):
                    results[i] = arr
                if bar is not None:
                    bar.update(len(idx))
        return results  # type: ignore[return-value]

    @contextlib.contextmanager
    def _threads(self):
        n = self.options.num_threads
        if not n:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(int(n))
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _iter_texts(texts) -> Iterator:
    if isinstance(texts, str):
        raise InputError("expected a list of texts, got a single string; wrap it in a list")
    if texts is None:
        raise InputError("expected a list of texts, got None")
    try:
        return iter(texts)
    except TypeError as exc:
        raise InputError(f"expected a list of texts, got {type(texts).__name__}") from exc


def _check_texts(texts, offset: int = 0) -> list[str]:
    texts = list(_iter_texts(texts))
    for i, t in enumerate(texts):
        n = i + offset
        if not isinstance(t, str):
            raise InputError(f"text #{n} is {type(t).__name__}, not a string; convert or drop it")
        if not t.strip():
            raise InputError(f"text #{n} is empty; drop it or give it some content")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"text #{n} contains invalid characters (lone surrogates at position {exc.start}); "
                "decode the input with errors='replace'"
            ) from exc
    return texts


def _check_languages_shape(languages, n: int) -> None:
    if isinstance(languages, (list, tuple)) and len(languages) != n:
        raise LanguageError(f"got {len(languages)} languages for {n} texts; give one per text")


def _bar(show_progress: bool | None, desc: str, total: int | None):
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    if not show_progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"encoding {desc}", unit=desc[:-1] if desc.endswith("s") else desc)


def _progress(iterable, show_progress, desc, step, total):
    bar = _bar(show_progress, desc, total)
    if bar is None:
        yield from iterable
        return
    try:
        for x in iterable:
            yield x
            bar.update(min(step, total - bar.n))
    finally:
        bar.close()
