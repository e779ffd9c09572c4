"""Why a document matched: the MaxSim alignment of late interaction, token by token."""
from __future__ import annotations

import numpy as np

from colxm.errors import LanguageError

EXPANSION_TOKENS = ("[MASK]", "<mask>", "[PAD]", "<pad>")


def explain_hit(encoder, query: str, lang: str | None, hit) -> dict:
    """MaxSim alignment of one hit's best passage: for each query token, the document token it
    matched and their similarity (exact, uncompressed vectors; the hit's score is compressed
    unless the index stores full vectors)."""
    q = encoder.encode_queries([query], languages=lang, show_progress=False)[0]
    q_tokens = encoder.query_tokens([query], languages=lang)[0]
    doc_lang = hit.language if (hit.language and encoder.languages) else None
    try:
        d = encoder.encode_documents([hit.text], languages=doc_lang, show_progress=False)[0]
        d_tokens = encoder.document_tokens([hit.text], languages=doc_lang)[0]
    except LanguageError:  # the stored language has no adapter: let the model detect
        d = encoder.encode_documents([hit.text], show_progress=False)[0]
        d_tokens = encoder.document_tokens([hit.text])[0]
    if len(d) == 0:
        return {"exact_score": 0.0, "tokens": []}
    sims = q @ d.T
    best = sims.argmax(axis=1)
    rows = [{"query_token": qt, "document_token": d_tokens[int(j)], "similarity": float(sims[i, j])}
            for i, (qt, j) in enumerate(zip(q_tokens, best))]
    return {"exact_score": float(np.max(sims, axis=1).sum()), "tokens": rows}


def format_explanation(ex: dict, indent: str = "       ") -> str:
    """Text lines: query token → matched document token, similarity; the query-expansion (mask)
    tokens summed on one line; the exact MaxSim score."""
    expansion = [t for t in ex["tokens"] if t["query_token"] in EXPANSION_TOKENS]
    lines = [f"{indent}{t['query_token']:>16} → {t['document_token']:<16} {t['similarity']:.3f}"
             for t in ex["tokens"] if t["query_token"] not in EXPANSION_TOKENS]
    if expansion:
        lines.append(f"{indent}{'+' + str(len(expansion)) + ' expansion':>16}   {'':<16} "
                     f"{sum(t['similarity'] for t in expansion):.3f}")
    lines.append(f"{indent}exact MaxSim score {ex['exact_score']:.3f}")
    return "\n".join(lines)
