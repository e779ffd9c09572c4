"""Rank the documents of an index for a set of queries (a run, for evaluate_run / write_trec_run)."""
from __future__ import annotations


def run_index(idx, queries: dict, k: int, languages=None, batch: int = 64) -> dict:
    """{qid: {doc id: score}} for every query (documents ranked by the index)."""
    run: dict = {}
    qids = list(queries)
    for start in range(0, len(qids), batch):
        chunk = qids[start:start + batch]
        results = idx.search([queries[q] for q in chunk], k=k, languages=languages)
        for qid, hits in zip(chunk, results):
            run[qid] = {h.id: float(h.score) for h in hits}
    return run
