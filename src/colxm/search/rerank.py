"""Exact MaxSim on decompressed token vectors: score(q, d) = sum_i max_j <q_i, d_j>."""
from __future__ import annotations

import numpy as np

from colxm.index.codec import ResidualCodec
from colxm.search.data import SegmentData, token_ranges


def segment_max(x: np.ndarray, seg_starts: np.ndarray) -> np.ndarray:
    """Row-wise max of ``x`` [ntok, m] over consecutive non-empty segments -> [nseg, m]."""
    return np.maximum.reduceat(x, seg_starts[:-1], axis=0)


def maxsim_docs(codec: ResidualCodec, seg: SegmentData, docs: np.ndarray, Q: np.ndarray,
                q_bounds: np.ndarray) -> np.ndarray:
    """Exact scores of ``docs`` (local indexes, all non-empty) for the stacked query tokens
    ``Q`` [sum Lq, dim]; query j owns rows q_bounds[j]:q_bounds[j+1]. Returns float32 [len(docs), nq]."""
    idx, seg_starts = token_ranges(seg.doc_offsets, docs)
    D = codec.decompress(seg.codes[idx], seg.residuals[idx])
    sims = D @ Q.T  # [ntok, sum Lq]
    per_doc = segment_max(sims, seg_starts)  # [ndocs, sum Lq]
    return np.add.reduceat(per_doc, q_bounds[:-1], axis=1) if len(q_bounds) > 2 else per_doc.sum(1, keepdims=True)
