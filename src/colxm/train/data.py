"""Training data: JSONL triples and n-way tuples, hard-negative mining, teacher scores.

On disk (one JSON object a line):
  pairs    {"query": str, "positive": str}                     (the shared ddtp/en-train layout)
  triples  {"query": str, "positive": str, "negative": str}
  n-way    {"query": str, "passages": [positive, neg1, ...], "scores": [teacher score per passage]}
"""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol, Sequence

import numpy as np

from colxm.collections import read_jsonl_records
from colxm.errors import CheckpointError, ColxmError, InputError

log = logging.getLogger(__name__)


@dataclass
class Triple:
    query: str
    positive: str
    negative: str


@dataclass
class NwayTuple:
    """A query, its positive first then negatives, and a teacher score for each passage."""

    query: str
    passages: list[str]
    scores: list[float]


@dataclass
class Mined:
    """A (query, positive) pair with its mined hard negatives, best-ranked first."""

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)

    def triples(self) -> list[Triple]:
        return [Triple(self.query, self.positive, n) for n in self.negatives]


# ---------------------------------------------------------------------------------------------- JSONL
def read_jsonl(path: str | Path, required: Sequence[str]) -> Iterator[dict]:
    """Yield the objects of a JSONL file, checking that each has the ``required`` string keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; give a JSONL file with keys {', '.join(required)}")
    for lineno, obj in read_jsonl_records(path):
        for key in required:
            if key not in obj:
                raise InputError(f"{path}, line {lineno}: missing key {key!r} (each line needs {', '.join(required)})")
        yield obj


def _text(obj: dict, key: str, path: Path | str, lineno: int) -> str:
    v = obj[key]
    if not isinstance(v, str) or not v.strip():
        raise InputError(f"{path}, line {lineno}: {key!r} must be a non-empty string")
    return v


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(query, positive) pairs from JSONL."""
    out = []
    for i, o in enumerate(read_jsonl(path, ("query", "positive")), 1):
        out.append((_text(o, "query", path, i), _text(o, "positive", path, i)))
    return out


def read_triples(path: str | Path) -> list[Triple]:
    out = []
    for i, o in enumerate(read_jsonl(path, ("query", "positive", "negative")), 1):
        out.append(Triple(*(_text(o, k, path, i) for k in ("query", "positive", "negative"))))
    return out


def read_nway(path: str | Path) -> list[NwayTuple]:
    out = []
    for i, o in enumerate(read_jsonl(path, ("query", "passages", "scores")), 1):
        ps, sc = o["passages"], o["scores"]
        if not isinstance(ps, list) or len(ps) < 2 or not all(isinstance(p, str) and p.strip() for p in ps):
            raise InputError(f"{path}: entry {i}: 'passages' must be a list of at least 2 non-empty strings")
        if not isinstance(sc, list) or len(sc) != len(ps) or not all(isinstance(s, (int, float)) for s in sc):
            raise InputError(f"{path}: entry {i}: 'scores' must be a list of {len(ps)} numbers, one per passage")
        out.append(NwayTuple(_text(o, "query", path, i), list(ps), [float(s) for s in sc]))
    if out and len({len(t.passages) for t in out}) != 1:
        raise InputError(f"{path}: every n-way tuple must have the same number of passages")
    return out


def write_jsonl(path: str | Path, rows: Iterable[Triple | NwayTuple | dict]) -> int:
    """Write dataclasses or dicts as JSONL; returns the number of lines."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r if isinstance(r, dict) else r.__dict__, ensure_ascii=False) + "\n")
            n += 1
    return n


# ------------------------------------------------------------------------------------ near-duplicates
_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def is_near_duplicate(a: str, b: str, threshold: float = 0.9) -> bool:
    """Same text up to case, punctuation and spacing, or word-set Jaccard similarity >= ``threshold``."""
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return " ".join(a.split()).lower() == " ".join(b.split()).lower()
    return len(wa & wb) / len(wa | wb) >= threshold


def _positives_by_query(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    by_q: dict[str, list[str]] = defaultdict(list)
    for q, p in pairs:
        by_q[q].append(p)
    return by_q


def _pick_negatives(
    ranked: Iterable[int], corpus: Sequence[str], positives: Sequence[str], n: int, threshold: float
) -> list[str]:
    chosen: list[str] = []
    for idx in ranked:
        text = corpus[idx]
        if text in positives or text in chosen:
            continue
        if any(is_near_duplicate(text, p, threshold) for p in positives):
            continue
        chosen.append(text)
        if len(chosen) == n:
            break
    return chosen


# ------------------------------------------------------------------------------------------ BM25 mining
_BM25_TOKENS = r"(?u)\b\w+\b"  # single-letter words count too (and any script's \w)

class BM25Miner:
    """Hard negatives from BM25 (bm25s) over a corpus of passage texts."""

    def __init__(self, corpus: Sequence[str], *, show_progress: bool = False):
        try:
            import bm25s
        except ImportError:  # pragma: no cover - exercised only without the extra
            raise ColxmError("BM25 mining needs bm25s: pip install 'colxm[eval]'") from None
        if not corpus:
            raise InputError("BM25 mining needs a non-empty corpus")
        self._bm25s = bm25s
        self.corpus = list(corpus)
        self.show_progress = show_progress
        # No stop-word list: the corpus may be in any language.
        tokens = bm25s.tokenize(self.corpus, token_pattern=_BM25_TOKENS, stopwords=None, return_ids=False,
                                show_progress=show_progress)
        self.retriever = bm25s.BM25()
        self.retriever.index(tokens, show_progress=show_progress)

    def rank(self, queries: Sequence[str], depth: int) -> np.ndarray:
        """Corpus indexes of the top ``depth`` passages per query, ``[len(queries), depth]``."""
        depth = min(depth, len(self.corpus))
        qt = self._bm25s.tokenize(list(queries), token_pattern=_BM25_TOKENS, stopwords=None, return_ids=False,
                                  show_progress=False)
        docs, _ = self.retriever.retrieve(qt, k=depth, show_progress=self.show_progress, n_threads=1)
        return np.asarray(docs)


def mine_bm25(
    pairs: Sequence[tuple[str, str]],
    corpus: Sequence[str] | None = None,
    *,
    n_negatives: int = 1,
    depth: int = 30,
    dedup_threshold: float = 0.9,
    show_progress: bool = False,
) -> list[Mined]:
    """BM25 hard negatives for each (query, positive) pair.

    ``corpus`` defaults to the set of all positives. Every known positive of the query (all pairs
    with the same query text) and near-duplicates of them (:func:`is_near_duplicate`) are excluded.
    Pairs for which fewer than ``n_negatives`` are found keep what was found.
    """
    corpus = list(dict.fromkeys(p for _, p in pairs)) if corpus is None else list(corpus)
    miner = BM25Miner(corpus, show_progress=show_progress)
    ranked = miner.rank([q for q, _ in pairs], depth)
    by_q = _positives_by_query(pairs)
    return [
        Mined(q, p, _pick_negatives(ranked[i], corpus, by_q[q], n_negatives, dedup_threshold))
        for i, (q, p) in enumerate(pairs)
    ]


# ----------------------------------------------------------------------------------------- model mining
def maxsim_rank(query: np.ndarray, doc_matrix: np.ndarray, doc_offsets: np.ndarray) -> np.ndarray:
    """Exact MaxSim of one query ``[Lq, dim]`` against packed documents.

    ``doc_matrix`` stacks every document's token vectors ``[T, dim]``; document ``i`` owns rows
    ``doc_offsets[i]:doc_offsets[i+1]``. Returns one score per document (``-inf`` for empty ones).
    """
    sim = query @ doc_matrix.T  # [Lq, T]
    lens = np.diff(doc_offsets)
    scores = np.full(len(lens), -np.inf, dtype=np.float32)
    nonempty = lens > 0
    if sim.shape[1]:
        per_doc = np.maximum.reduceat(sim, doc_offsets[:-1][nonempty], axis=1)  # [Lq, n_nonempty]
        scores[nonempty] = per_doc.sum(axis=0)
    return scores


def _pack(docs: Sequence[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(d) for d in docs])
    mat = np.concatenate(docs, axis=0) if offsets[-1] else np.zeros((0, dim), np.float32)
    return mat.astype(np.float32, copy=False), offsets


def mine_with_model(
    encoder,
    pairs: Sequence[tuple[str, str]],
    corpus: Sequence[str] | None = None,
    *,
    n_negatives: int = 1,
    depth: int = 30,
    candidates: np.ndarray | None = None,
    dedup_threshold: float = 0.9,
    batch_size: int = 32,
    show_progress: bool = False,
) -> list[Mined]:
    """Hard negatives ranked by a colxm encoder's exact MaxSim.

    With ``candidates`` (``[len(pairs), c]`` corpus indexes, e.g. ``BM25Miner.rank``) only those are
    re-scored, which keeps large corpora cheap; without, every corpus passage is scored.
    """
    corpus = list(dict.fromkeys(p for _, p in pairs)) if corpus is None else list(corpus)
    Qs = encoder.encode_queries([q for q, _ in pairs], batch_size=batch_size, show_progress=show_progress)
    by_q = _positives_by_query(pairs)
    if candidates is None:
        Ds = encoder.encode_documents(corpus, batch_size=batch_size, show_progress=show_progress)
        mat, offsets = _pack(Ds, encoder.dim)
        ranked = [np.argsort(-maxsim_rank(Q, mat, offsets), kind="stable")[:depth] for Q in Qs]
    else:
        cand = np.asarray(candidates)
        needed = np.unique(cand)
        Ds = encoder.encode_documents([corpus[i] for i in needed], batch_size=batch_size, show_progress=show_progress)
        where = {int(c): j for j, c in enumerate(needed)}
        ranked = []
        for Q, row in zip(Qs, cand):
            mat, offsets = _pack([Ds[where[int(c)]] for c in row], encoder.dim)
            ranked.append(row[np.argsort(-maxsim_rank(Q, mat, offsets), kind="stable")])
    return [
        Mined(q, p, _pick_negatives(ranked[i], corpus, by_q[q], n_negatives, dedup_threshold))
        for i, (q, p) in enumerate(pairs)
    ]


# --------------------------------------------------------------------------------------- teacher scores
class Teacher(Protocol):
    def score(self, query: str, passages: Sequence[str]) -> list[float]: ...


class CrossEncoderTeacher:
    """A sentence-transformers CrossEncoder loaded from a local folder (ColBERTv2's teacher role)."""

    def __init__(self, path: str | Path, batch_size: int = 32, device: str | None = None):
        if not Path(path).is_dir():
            raise CheckpointError(f"cross-encoder folder {path} not found; give a local model folder")
        try:
            from sentence_transformers import CrossEncoder
        except ImportError:
            raise ColxmError(
                "teacher scores from a cross-encoder need sentence-transformers: "
                "pip install sentence-transformers (or use --teacher-model with a colxm model instead)"
            ) from None
        self.batch_size = batch_size
        self.model = CrossEncoder(str(path), device=device, local_files_only=True)

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        s = self.model.predict([(query, p) for p in passages], batch_size=self.batch_size, show_progress_bar=False)
        return [float(x) for x in np.asarray(s).reshape(len(passages), -1)[:, 0]]


class ColxmTeacher:
    """The documented substitute when no cross-encoder is at hand: a (first-round) colxm model's
    exact MaxSim scores, as in ColBERTv2's second training round where a trained ColBERT re-scores."""

    def __init__(self, encoder, batch_size: int = 32):
        self.encoder = encoder
        self.batch_size = batch_size

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        (Q,) = self.encoder.encode_queries([query], batch_size=1)
        Ds = self.encoder.encode_documents(list(passages), batch_size=self.batch_size)
        mat, offsets = _pack(Ds, self.encoder.dim)
        return [float(x) for x in maxsim_rank(Q, mat, offsets)]


def build_nway(mined: Iterable[Mined], teacher: Teacher, nway: int) -> list[NwayTuple]:
    """Score (positive + first ``nway - 1`` negatives) with ``teacher``; rows short of negatives are dropped."""
    out = []
    dropped = 0
    for m in mined:
        if len(m.negatives) < nway - 1:
            dropped += 1
            continue
        passages = [m.positive, *m.negatives[: nway - 1]]
        out.append(NwayTuple(m.query, passages, teacher.score(m.query, passages)))
    if dropped:
        log.info("build_nway: dropped %d queries with fewer than %d negatives", dropped, nway - 1)
    return out
