"""SegmentData: the arrays of one immutable segment that search reads (plain or memory-mapped)."""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from colxm.errors import IndexFormatError, InputError
from colxm.index.codec import ResidualCodec
from colxm.index.fullvec import FullVectors
from colxm.index.ivf import LocalCodes, build_ivf, doc_codes_from_ivf
from colxm.search.memory import release_free_heap


@dataclass(eq=False)  # identity: searchers cache per-segment scratch arrays
class SegmentData:
    """One segment: token codes/residuals grouped by document, plus its inverted lists.

    ``codes`` may be any integer dtype (uint16 when there are at most 65,536 centroids keeps the
    index small) or a LocalCodes view (format-2 segments store local codes); ``ivf_docs`` likewise (uint16 when the segment has at most 65,536 documents).
    ``live`` marks documents that are not deleted (None = all live). ``vectors`` reads the
    original float16 token vectors of an index built with full_vectors (None = not stored).
    """

    codes: np.ndarray  # int [T]
    residuals: np.ndarray  # uint8 [T, dim*nbits//8]
    doclens: np.ndarray  # int32 [N]
    doc_offsets: np.ndarray  # int64 [N+1]
    ivf_offsets: np.ndarray  # int64 [K+1]
    ivf_docs: np.ndarray  # int [nnz]
    live: np.ndarray | None = None  # bool [N]
    # each document's unique codes (the IVF transposed): derived in memory by ensure_doc_codes(),
    # or given (ivf.build_doc_codes); approximate scoring reads these instead of every token's code
    doc_code_offsets: np.ndarray | None = None  # int64 [N+1]
    doc_codes: np.ndarray | None = None  # int [nnz]
    vectors: FullVectors | None = None  # float16 [T, dim] on disk, read by row ranges

    @property
    def num_docs(self) -> int:
        return int(self.doclens.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.codes.shape[0])

    def check(self, codec: ResidualCodec) -> None:
        """Raise IndexFormatError when the arrays do not fit each other or the codec."""
        n, t = self.num_docs, self.num_tokens
        problems = []
        if self.residuals.shape != (t, codec.packed_dim):
            problems.append(f"residuals shape {self.residuals.shape} != ({t}, {codec.packed_dim})")
        if self.doc_offsets.shape != (n + 1,):
            problems.append(f"doc_offsets length {self.doc_offsets.shape[0]} != {n + 1}")
        elif int(self.doc_offsets[-1]) != t or int(self.doc_offsets[0]) != 0:
            problems.append(f"doc_offsets end at {int(self.doc_offsets[-1])}, expected {t} tokens")
        if self.ivf_offsets.shape != (codec.num_centroids + 1,):
            problems.append(f"ivf_offsets length {self.ivf_offsets.shape[0]} != {codec.num_centroids + 1}")
        elif int(self.ivf_offsets[-1]) != self.ivf_docs.shape[0]:
            problems.append(f"ivf_offsets end at {int(self.ivf_offsets[-1])}, ivf_docs has {self.ivf_docs.shape[0]}")
        if self.doc_codes is not None and (self.doc_code_offsets is None or self.doc_code_offsets.shape != (n + 1,)
                                           or int(self.doc_code_offsets[-1]) != self.doc_codes.shape[0]):
            problems.append("doc_code_offsets do not match doc_codes")
        if self.live is not None and self.live.shape != (n,):
            problems.append(f"live mask length {self.live.shape[0]} != {n}")
        if problems:
            raise IndexFormatError("segment arrays are inconsistent (" + "; ".join(problems)
                                   + "); the index is corrupted: rebuild it")

    def ensure_doc_codes(self) -> None:
        """Derive doc_codes / doc_code_offsets from the inverted lists (once; ~0.1 s per million
        list entries), so they need not be stored on disk. Shared with a LocalCodes view."""
        if self.doc_codes is not None:
            return
        if isinstance(self.codes, LocalCodes):
            self.doc_code_offsets, self.doc_codes = self.codes.doc_codes
        else:
            self.doc_code_offsets, self.doc_codes = doc_codes_from_ivf(self.ivf_offsets, self.ivf_docs,
                                                                       self.num_docs)
        release_free_heap()  # the transposition's transients sit below the arrays it keeps

    def token_codes(self, docs: np.ndarray, idx: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Global codes of token indexes ``idx`` (the tokens of ``docs``, ``lens`` each, in order)."""
        if isinstance(self.codes, LocalCodes):
            self.ensure_doc_codes()  # derives them here, where the transients are given back
            return self.codes.for_docs(docs, idx, lens)
        return self.codes[idx]

    def residual_rows(self, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``residuals[idx]`` written into ``out`` (uint8 [len(idx), packed dim]) by torch's
        index_select: ~3x numpy's fancy indexing on these rows, and it releases the GIL."""
        t = _RESIDUAL_TENSORS.get(self)
        if t is None or t.data_ptr() != self.residuals.ctypes.data:
            with warnings.catch_warnings():  # a read-only map: nothing writes through this view
                warnings.simplefilter("ignore", UserWarning)
                t = _RESIDUAL_TENSORS[self] = torch.from_numpy(self.residuals)
        torch.index_select(t, 0, torch.from_numpy(np.asarray(idx, dtype=np.int64)), out=torch.from_numpy(out))
        return out

    @classmethod
    def from_compressed(cls, codes: np.ndarray, residuals: np.ndarray, doclens: np.ndarray,
                        num_centroids: int, live: np.ndarray | None = None) -> "SegmentData":
        """Build offsets and inverted lists for already-compressed tokens."""
        doclens = np.asarray(doclens, dtype=np.int32)
        offsets = np.zeros(doclens.shape[0] + 1, dtype=np.int64)
        np.cumsum(doclens, out=offsets[1:])
        ivf_offsets, ivf_docs = build_ivf(codes, doclens, num_centroids)
        return cls(codes=codes, residuals=residuals, doclens=doclens, doc_offsets=offsets,
                   ivf_offsets=ivf_offsets, ivf_docs=ivf_docs, live=live)

    @classmethod
    def from_vectors(cls, codec: ResidualCodec, docs: list[np.ndarray]) -> "SegmentData":
        """Compress a list of per-document token matrices [m_i, dim] into a segment (in memory)."""
        if not docs:
            raise InputError("a segment needs at least one document")
        doclens = np.array([d.shape[0] for d in docs], dtype=np.int32)
        codes, residuals = codec.compress(np.concatenate(docs).astype(np.float32, copy=False))
        return cls.from_compressed(codes, residuals, doclens, codec.num_centroids)


_RESIDUAL_TENSORS: "weakref.WeakKeyDictionary[SegmentData, torch.Tensor]" = weakref.WeakKeyDictionary()


def token_ranges(offsets: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token indexes of ``docs`` (concatenated, doc by doc) and each doc's start in that list."""
    starts = np.asarray(offsets[docs], dtype=np.int64)
    lens = np.asarray(offsets[docs + 1], dtype=np.int64) - starts
    seg_starts = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lens, out=seg_starts[1:])
    total = int(seg_starts[-1])
    # index = arange(total) + (doc start - its position in the concatenation), repeated per token
    idx = np.arange(total, dtype=np.int64)
    idx += np.repeat(starts - seg_starts[:-1], lens)
    return idx, seg_starts
