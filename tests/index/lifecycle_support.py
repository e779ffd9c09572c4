"""Shared helpers for the index lifecycle tests (deterministic documents and vectors)."""
from __future__ import annotations

import hashlib

import numpy as np

DIM = 32


def vectors(key: str, dim: int = DIM) -> np.ndarray:
    """Deterministic unit token vectors [3..8, dim] for a key such as "doc7 v2"."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(int(rng.integers(3, 9)), dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def doc(doc_id: str, version: int = 0, **meta) -> dict:
    return {"id": doc_id, "text": f"{doc_id} v{version}", **meta}


def docs_and_vectors(ids, version: int = 0):
    ds = [doc(i, version) for i in ids]
    return ds, [vectors(d["text"]) for d in ds]


def exhaustive():
    from colxm.search import SearchParams

    return SearchParams(exhaustive=True)


def contents(index) -> dict[str, str]:
    """id -> concatenated passage texts of every live document."""
    return {i: " | ".join(h.text for h in index.get(i)) for i in index.ids()}


def stored_codes_match(index, expected: dict[str, np.ndarray]) -> list[str]:
    """Ids whose stored codes/residuals differ from the codec's compression of their expected
    vectors (one compress call for all of them)."""
    snap = index._snap
    ids = list(expected)
    if not ids:
        return []
    codes, residuals = snap.codec.compress(np.concatenate([expected[d] for d in ids]))
    bad, at = [], 0
    for d in ids:
        n = len(expected[d])
        si, rows = snap.id_map[d]
        seg = snap.segments[si]
        a, b = int(seg.doc_offsets[rows[0]]), int(seg.doc_offsets[rows[-1] + 1])
        if not (np.array_equal(np.asarray(seg.codes[a:b]), codes[at:at + n])
                and np.array_equal(np.asarray(seg.residuals[a:b]), residuals[at:at + n])):
            bad.append(d)
        at += n
    return bad
