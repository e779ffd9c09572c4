"""Evaluation sets: a corpus, queries and relevance judgements, from a BEIR folder, separate
TSV/JSONL/TREC files, or an ir_datasets name (online only; ir_datasets is imported lazily)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from colxm.collections import load_collection, load_qrels, load_queries
from colxm.errors import InputError

IRDS_PREFIX = "irds:"


@dataclass
class EvalSet:
    """One evaluation set. ``corpus()`` streams the documents again on every call."""

    name: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus: Callable[[], Iterator[dict]] | None = field(default=None, repr=False)


def load_beir(folder: str | Path, split: str = "test") -> EvalSet:
    """A BEIR folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``. Only the queries
    that have judgements are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (expected a BEIR dataset folder)")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise InputError(f"{folder}: no qrels/{split}.tsv, so this is not a BEIR dataset folder")
    qrels = load_qrels(qrels_path)
    queries = {q: t for q, t in load_queries(folder / "queries.jsonl").items() if q in qrels}
    if not queries:
        raise InputError(f"{folder}: none of the judged queries is in queries.jsonl")
    return EvalSet(folder.name, queries, qrels, lambda: load_collection(folder, "beir"))


def _irds_load(name: str):
    try:
        import ir_datasets
    except ImportError:
        raise InputError(
            f"{name!r} is not a file or folder here; to use an ir_datasets name, pip install ir_datasets "
            "and be online (or pass local BEIR / TSV / TREC files)"
        ) from None
    try:
        return ir_datasets.load(name)
    except KeyError:
        raise InputError(f"ir_datasets has no dataset named {name!r}") from None


def load_irds(name: str) -> EvalSet:
    """An ir_datasets dataset by name (downloads on first use, so it needs the network)."""
    ds = _irds_load(name)
    try:
        qrels: dict[str, dict[str, int]] = {}
        for qrel in ds.qrels_iter():
            qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
        queries = {q.query_id: q.default_text() for q in ds.queries_iter() if q.query_id in qrels}
    except Exception as e:  # network or format errors surface as many types inside ir_datasets
        raise InputError(f"ir_datasets could not load {name!r} ({type(e).__name__}: {e}); are you online?") from None

    def corpus():
        for doc in ds.docs_iter():
            yield {"id": doc.doc_id, "text": doc.default_text()}

    return EvalSet(name, queries, qrels, corpus)


def load_eval_set(source: str | Path, *, queries: str | Path | None = None, qrels: str | Path | None = None,
                  split: str = "test") -> EvalSet:
    """Queries and qrels for evaluation.

    ``source`` is a BEIR folder, an ir_datasets name (``irds:NAME`` or a NAME that is not a path),
    or ``None`` when both ``queries`` and ``qrels`` files are given (TSV/JSONL queries, BEIR or TREC
    qrels). Explicit ``queries``/``qrels`` override the source's.
    """
    if source is None:
        if queries is None or qrels is None:
            raise InputError("give a dataset (BEIR folder or ir_datasets name) or both queries and qrels files")
        ev = EvalSet(Path(queries).stem, load_queries(queries), load_qrels(qrels))
    else:
        text = str(source)
        if text.startswith(IRDS_PREFIX):
            ev = load_irds(text[len(IRDS_PREFIX):])
        elif Path(text).exists():
            ev = load_beir(text, split)
        else:
            ev = load_irds(text)
        if queries is not None:
            ev.queries = load_queries(queries)
        if qrels is not None:
            ev.qrels = load_qrels(qrels)
    ev.queries = {q: t for q, t in ev.queries.items() if q in ev.qrels}
    if not ev.queries:
        raise InputError("no query has relevance judgements: do the query ids match the qrels?")
    return ev
