"""Exact MaxSim on decompressed token vectors, or on the original ones where the index stores
them (full_vectors): score(q, d) = sum_i max_j <q_i, d_j>.

Codecs that score centroid + residual as they are (``codec.normalize`` False: those colxm
trains) are scored in integers: <q, c + r> = <q, c> + <q, r>, with the int8 centroid rows as
stored and the residual bytes widened straight to int8 bucket weights, two integer matmuls and
no float32 vectors at all (each matmul ~4x faster than float32 on these CPUs, the whole stage
~1.8x: benchmarks/exact_stage.py). The query is rounded to int8 per row (|error| <= its scale /
2: ~1e-3 on a similarity)."""
from __future__ import annotations

import numpy as np
import torch

from colxm.errors import IndexFormatError
from colxm.index.centroid_table import int8_rows
from colxm.index.codec import ResidualCodec
from colxm.search.data import SegmentData, token_ranges
from colxm.search.memory import scratch

BLOCK_TOKENS = 1 << 11  # tokens decompressed at once: bounds memory (1 MB of float32 at dim 128)
INT8_BLOCK_TOKENS = 1 << 12  # tokens scored at once in integers (int8 rows: the same memory)


def segment_max(x: np.ndarray, seg_starts: np.ndarray) -> np.ndarray:
    """Max of ``x`` [m, ntok] over consecutive non-empty column segments -> [m, nseg].
    (reduceat along the contiguous last axis is several times faster than along rows.)"""
    return np.maximum.reduceat(x, seg_starts[:-1], axis=1)


class Int8Query:
    """Query rows rounded to int8 with one scale per row, for :func:`int8_token_sims`."""

    def __init__(self, Q: np.ndarray):
        q8, scale = int8_rows(Q)
        self.q8, self.scale = torch.from_numpy(q8), torch.from_numpy(scale)

    def row_units(self, weight_scale: float) -> torch.Tensor:
        """float32 [rows]: what one unit of an unscaled row of :func:`int8_token_sims` is worth."""
        return self.scale * weight_scale


def int8_scoring(codec: ResidualCodec) -> bool:
    """Whether :func:`int8_token_sims` scores this codec's tokens (raw scoring, int8 centroids)."""
    return not codec.normalize and codec.centroid_dtype == "int8"


def int8_token_sims(codec: ResidualCodec, codes: np.ndarray, residuals: np.ndarray, query: Int8Query,
                    row_scaled: bool = True) -> np.ndarray:
    """Similarities [rows of the query, ntok] between query rows and centroid + residual of each
    token, not normalised, in integer arithmetic (module docstring): a view of this thread's
    scratch buffer, valid until its next call. ``row_scaled`` False leaves each row in units of
    :meth:`row_units` (a positive factor per row, which commutes with the max over tokens)."""
    n, dim = residuals.shape[0], codec.dim
    rows = query.q8.shape[0]
    lut, w_scale = codec.int8_weight_lut
    byte_idx = torch.from_numpy(scratch("residual_index32", (n * codec.packed_dim,), np.int32))
    byte_idx.copy_(torch.from_numpy(residuals).view(-1))
    r8 = torch.from_numpy(scratch("residual_int8", (n, dim), np.int8))
    torch.index_select(lut, 0, byte_idx, out=r8.view(lut.dtype).view(-1))
    ids = torch.from_numpy(np.asarray(codes, dtype=np.int64))
    c8 = torch.from_numpy(scratch("centroid_int8", (n, dim), np.int8))
    c_ratio = torch.from_numpy(scratch("centroid_scale", (n,), np.float32))
    try:
        codec.table.int8_rows_into(ids, c8, c_ratio)
    except (IndexError, RuntimeError):
        raise _bad_centroid_id(codec) from None
    c_ratio.div_(w_scale)  # centroid scales in units of the weights' scale
    on_c = torch.from_numpy(scratch("sims_centroid", (rows, n), np.int32))
    on_r = torch.from_numpy(scratch("sims_residual", (rows, n), np.int32))
    torch._int_mm(query.q8, c8.T, out=on_c)
    torch._int_mm(query.q8, r8.T, out=on_r)
    sims = torch.from_numpy(scratch("sims", (rows, n)))
    part = torch.from_numpy(scratch("sims_part", (rows, n)))
    # explicit conversions (mixed-dtype in-place ops allocate a copy) and no fused multiply-add,
    # whose vectorised body and scalar tail round differently: a token's score must not depend
    # on its position in the block
    sims.copy_(on_c)
    sims.mul_(c_ratio)
    part.copy_(on_r)
    sims.add_(part)
    if row_scaled:
        sims.mul_(query.row_units(w_scale)[:, None])
    return sims.numpy()


def _bad_centroid_id(codec: ResidualCodec) -> IndexFormatError:
    return IndexFormatError(f"a token's centroid id is out of range [0, {codec.num_centroids}); the index "
                            "is corrupted: run `colxm verify` on it")


def token_sims(codec: ResidualCodec, codes: np.ndarray, residuals: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Similarities [rows of Q, ntok] between query rows and decompressed tokens (normalised when
    ``codec.normalize``: cosine, as colbert-ai), in float32: a view of this thread's scratch
    buffer, valid until its next call.

    The decompressed vectors are normalised by scaling the (4x smaller) similarity matrix instead
    of the vectors themselves. The centroids are gathered from the codec's table in its stored
    precision with torch's index_select: ~3x numpy's take on these rows, and it releases the GIL
    for the threads of a batched search.
    """
    n = residuals.shape[0]
    D = codec.decompress_residuals(residuals, out=scratch("vectors", (n, codec.dim)),
                                   index_buffer=scratch("residual_index", (n, codec.packed_dim), np.intp))
    Dt = torch.from_numpy(D)
    codes_t = torch.from_numpy(np.asarray(codes, dtype=np.int64))
    try:
        codec.table.add_rows_(Dt, codes_t, scratch)
    except (IndexError, RuntimeError):
        raise _bad_centroid_id(codec) from None
    sims = _query_sims(Q, D)
    if codec.normalize:
        inv = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", D, D)), 1e-12)
        sims *= inv.astype(np.float32)[None, :]
    return sims


def full_token_sims(seg: SegmentData, docs: np.ndarray, lens: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Similarities [rows of Q, ntok] between query rows and the original (float16) vectors of
    ``docs`` (``lens`` tokens each, concatenated in order), read with positioned reads into this
    thread's scratch buffers, documents adjacent on disk in one read: never memory-mapped, so
    search RSS does not grow with the file. A view of scratch, valid until this thread's next call.

    Not normalised: these are the vectors that were indexed (unit length from the encoder, to
    float16's ~1e-3), and exact MaxSim is defined on them, also for embeddings given unnormalised.
    """
    n, dim = int(lens.sum()), Q.shape[1]
    raw = scratch("full_vectors", (n, dim), np.float16)
    starts = np.asarray(seg.doc_offsets[docs], dtype=np.int64)
    breaks = np.flatnonzero(starts[1:] != starts[:-1] + lens[:-1]) + 1
    pos = 0
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(docs)]):
        m = int(lens[a:b].sum())
        seg.vectors.read_into(int(starts[a]), raw[pos:pos + m])
        pos += m
    D = scratch("vectors", (n, dim))
    torch.from_numpy(D).copy_(torch.from_numpy(raw))  # ~20x numpy's float16 conversion (F16C)
    return _query_sims(Q, D)


def _query_sims(Q: np.ndarray, D: np.ndarray) -> np.ndarray:
    sims = scratch("sims", (Q.shape[0], D.shape[0]))
    torch.mm(torch.from_numpy(Q), torch.from_numpy(D).T, out=torch.from_numpy(sims))
    return sims


def maxsim_docs(codec: ResidualCodec, seg: SegmentData, docs: np.ndarray, Q: np.ndarray,
                q_bounds: np.ndarray, full: bool = False, integer: bool = True) -> np.ndarray:
    """Exact scores of ``docs`` (local indexes, all non-empty) for the stacked query tokens
    ``Q`` [sum Lq, dim]; query j owns rows q_bounds[j]:q_bounds[j+1]. Returns float32 [nq, len(docs)].
    ``full``: on the segment's original vectors instead of the decompressed ones. ``integer``: in
    integers where the codec allows (PLAID's exact stage); exhaustive search passes False, so that
    the reference has no approximation beyond the compression itself."""
    lens = np.asarray(seg.doc_offsets[docs + 1]) - np.asarray(seg.doc_offsets[docs])
    query = Int8Query(Q) if integer and not full and int8_scoring(codec) else None
    block = INT8_BLOCK_TOKENS if query is not None else BLOCK_TOKENS
    if lens.sum() > block and len(docs) > 1:
        cuts = np.searchsorted(np.cumsum(lens), np.arange(block, int(lens.sum()), block), "right")
        bounds = [b for b in np.unique(np.r_[0, cuts, len(docs)]) if 0 <= b <= len(docs)]
        return np.concatenate([_maxsim_block(codec, seg, docs[a:b], Q, q_bounds, full, query)
                               for a, b in zip(bounds[:-1], bounds[1:]) if b > a], axis=1)
    return _maxsim_block(codec, seg, docs, Q, q_bounds, full, query)


def _maxsim_block(codec, seg, docs, Q, q_bounds, full, query):
    idx, seg_starts = token_ranges(seg.doc_offsets, docs)
    if full:
        sims = full_token_sims(seg, docs, np.diff(seg_starts), Q)
    else:
        residuals = seg.residual_rows(idx, scratch("residuals", (idx.size, codec.packed_dim), np.uint8))
        codes = seg.token_codes(docs, idx, np.diff(seg_starts))
        if query is not None:
            sims = int8_token_sims(codec, codes, residuals, query, row_scaled=False)
            per_doc = segment_max(sims, seg_starts)
            per_doc *= query.row_units(codec.int8_weight_lut[1]).numpy()[:, None]
            return np.add.reduceat(per_doc, q_bounds[:-1], axis=0)
        sims = token_sims(codec, codes, residuals, Q)
    per_doc = segment_max(sims, seg_starts)  # [sum Lq, ndocs]
    return np.add.reduceat(per_doc, q_bounds[:-1], axis=0)
