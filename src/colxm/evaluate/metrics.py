"""Retrieval metrics, computed by ir-measures (a maintained wrapper over trec_eval), not by hand.

A run is ``{query id: {doc id: score}}``; qrels are ``{query id: {doc id: grade}}``. The mean is
taken over every judged query that was asked: a query with no results counts as 0, as it should
(trec_eval alone would leave it out and flatter the system).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from colxm.errors import ColxmError, InputError

# Our names (the ones people quote) -> ir-measures names.
MEASURES = {
    "MRR@10": "RR@10",
    "MRR@100": "RR@100",
    "R@10": "R@10",
    "R@100": "R@100",
    "R@1000": "R@1000",
    "nDCG@10": "nDCG@10",
    "Success@5": "Success@5",
}
DEFAULT_MEASURES = tuple(MEASURES)


def _ir_measures():
    try:
        import ir_measures
    except ImportError:
        raise ColxmError(
            "evaluation needs the ir-measures package: pip install 'colxm[eval]' (or pip install ir-measures)"
        ) from None
    return ir_measures


def evaluate_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                 measures: Sequence[str] = DEFAULT_MEASURES, *, per_query: bool = False):
    """Mean of each measure over the judged queries in ``qrels`` (missing or empty results = 0).

    Returns ``{measure: value}``; with ``per_query=True`` returns ``(means, {measure: {qid: value}})``.
    ``measures`` use our names (``MRR@10``, ``R@100``, ``nDCG@10``, ``Success@5``, ...) or any
    ir-measures name (``P@5``, ``AP``, ...).
    """
    irm = _ir_measures()
    if not qrels:
        raise InputError("no relevance judgements to evaluate against")
    parsed = {}
    for name in measures:
        try:
            parsed[name] = irm.parse_measure(MEASURES.get(name, name))
        except Exception as e:  # ir-measures raises several types for a bad name
            raise InputError(f"unknown measure {name!r} ({e})") from None
    qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items() if docs}
    run = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items() if str(q) in qrels}
    values: dict[str, dict[str, float]] = {name: {q: 0.0 for q in qrels} for name in parsed}
    by_measure = {m: name for name, m in parsed.items()}
    if run:
        for metric in irm.iter_calc(list(parsed.values()), qrels, run):
            if metric.query_id in qrels:
                values[by_measure[metric.measure]][metric.query_id] = float(metric.value)
    means = {name: sum(v.values()) / len(v) for name, v in values.items()}
    return (means, values) if per_query else means
