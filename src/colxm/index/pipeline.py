"""Streaming write pipeline shared by build, add/upsert and reindex:
records → passages → vectors (encoder or given embeddings) → codec → segment, in chunks.

Memory is bounded by one chunk of documents plus the k-means sample (a uniform random sample of
tokens over the whole stream, see ``sampling``); a build longer than that is parked on disk
while the codec is trained (``spill``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from colxm.errors import InputError
from colxm.store import Record

log = logging.getLogger(__name__)

_SAMPLE_FOR_STATS = 2048
_KEEP_IDS = 10


@dataclass
class WriteSummary:
    """What a build/add/upsert/delete did. Duplicate ids within one call keep the last copy;
    empty texts (and texts that yield no token vectors) are not indexed; both are counted here
    and their first ids listed."""

    documents: int = 0  # input documents seen
    indexed: int = 0  # documents now in the index from this call
    passages: int = 0  # rows (passages) written
    replaced: int = 0  # existing documents replaced (upsert)
    deleted: int = 0  # documents deleted (delete)
    not_found: int = 0  # ids given to delete that were not in the index
    duplicates: int = 0  # input documents dropped because a later one had the same id
    duplicate_ids: list[str] = field(default_factory=list)
    empty: int = 0
    empty_ids: list[str] = field(default_factory=list)
    generation: int = 0
    seconds: float = 0.0

    def note_empty(self, doc_id: str) -> None:
        self.empty += 1
        if len(self.empty_ids) < _KEEP_IDS:
            self.empty_ids.append(doc_id)

    def note_duplicate(self, doc_id: str) -> None:
        self.duplicates += 1
        if len(self.duplicate_ids) < _KEEP_IDS and doc_id not in self.duplicate_ids:
            self.duplicate_ids.append(doc_id)


@dataclass
class Chunk:
    rows: list[tuple[Record, int]]  # (row record with passage text, passage number)
    vecs: list[np.ndarray]  # one float32 [m, dim] per row

    @property
    def num_tokens(self) -> int:
        return sum(len(v) for v in self.vecs)


Encode = Callable[[list[str], list[str | None]], list[np.ndarray]]


def iter_chunks(
    items: Iterable[tuple[Record, np.ndarray | None]],
    encode: Encode | None,
    split: Callable[[str], list[str]] | None,
    chunk_documents: int,
    dim: int | None,
    summary: WriteSummary,
) -> Iterator[Chunk]:
    """Group documents into chunks of rows with their vectors (encoding text when no vectors)."""
    buf: list[tuple[Record, list[str], list[np.ndarray] | None]] = []
    for rec, vec in items:
        summary.documents += 1
        if vec is None:
            if encode is None:
                raise InputError("no encoder: pass encoder=... or embeddings for these documents")
            if not rec.text.strip():
                summary.note_empty(rec.id)
                continue
            passages = split(rec.text) if split else [rec.text]
            if not passages:
                summary.note_empty(rec.id)
                continue
            buf.append((rec, passages, None))
        else:
            v = np.asarray(vec, dtype=np.float32)
            if v.ndim != 2 or (dim is not None and v.shape[1] != dim):
                raise InputError(
                    f"embeddings of document {rec.id!r} have shape {v.shape}; expected [tokens, {dim}]"
                )
            if len(v) == 0:
                summary.note_empty(rec.id)
                continue
            buf.append((rec, [rec.text], [v]))
        if len(buf) >= chunk_documents:
            yield _make_chunk(buf, encode, summary)
            buf = []
    if buf:
        yield _make_chunk(buf, encode, summary)


def _make_chunk(buf, encode, summary) -> Chunk:
    texts = [p for rec, ps, vecs in buf if vecs is None for p in ps]
    langs = [rec.language for rec, ps, vecs in buf if vecs is None for _ in ps]
    encoded = iter(encode(texts, langs) if texts else [])
    rows, out = [], []
    for rec, passages, vecs in buf:
        vecs = vecs if vecs is not None else [next(encoded) for _ in passages]
        kept = [(p, np.asarray(v, dtype=np.float32)) for p, v in zip(passages, vecs) if len(v)]
        if not kept:
            summary.note_empty(rec.id)
            continue
        for pno, (text, v) in enumerate(kept):
            rows.append((Record(rec.id, text, rec.language, rec.metadata), pno))
            out.append(v)
    return Chunk(rows, out)


class FitStats:
    """How well a codec fits a stream of vectors: share of residual components beyond the
    trained range (the 99th percentile of |residual| on the held-out rows, see train_codec_on)
    and mean reconstruction error (1 - cosine), both on a subsample of every chunk."""

    def __init__(self, threshold: float, seed: int = 0):
        self.threshold = threshold
        self.vectors = 0
        self.outside = 0
        self.components = 0
        self.err_sum = 0.0
        self.cos_sum = 0.0  # cosine to the assigned centroid: what candidate generation sees
        self.measured = 0
        self._rng = np.random.default_rng(seed)

    def update(self, codec, vectors: np.ndarray, codes: np.ndarray, residuals: np.ndarray) -> None:
        self.vectors += len(vectors)
        if len(vectors) > _SAMPLE_FOR_STATS:
            pick = np.sort(self._rng.choice(len(vectors), _SAMPLE_FOR_STATS, replace=False))
            vectors, codes, residuals = vectors[pick], codes[pick], residuals[pick]
        cent = codec.centroids[codes]
        self.cos_sum += float(np.sum(vectors * cent))
        res = vectors - cent
        self.outside += int((np.abs(res) > self.threshold).sum())
        self.components += res.size
        recon = codec.decompress(codes, residuals, normalize=True)
        self.err_sum += float((1.0 - np.sum(vectors * recon, axis=1)).sum())
        self.measured += len(vectors)

    def to_dict(self) -> dict:
        return {
            "vectors": self.vectors,
            "outside": self.outside,
            "components": self.components,
            "error_sum": self.err_sum,
            "centroid_cos_sum": self.cos_sum,
            "measured": self.measured,
        }

    def merge_into(self, d: dict | None) -> dict:
        d = dict(d or {})
        for k, v in self.to_dict().items():
            d[k] = d.get(k, 0) + v
        return d


def fit_figures(d: dict | None) -> dict:
    """Readable ratios from accumulated FitStats counts."""
    d = d or {}
    comps, measured = d.get("components", 0), d.get("measured", 0)
    return {
        "vectors": int(d.get("vectors", 0)),
        "outside_share": (d.get("outside", 0) / comps) if comps else None,
        "mean_error": (d.get("error_sum", 0.0) / measured) if measured else None,
        "mean_centroid_cos": (d.get("centroid_cos_sum", 0.0) / measured) if measured else None,
    }


def train_codec_on(sample: np.ndarray, held_out: np.ndarray, nbits: int, num_centroids: int, seed: int):
    """Train the codec (k-means + quantile buckets) on ``sample``. ``held_out`` gives the drift
    baseline: the trained range (99th percentile of |residual|) and the fit figures of vectors the
    codec has not seen, which is what later additions are compared with. It must be whole rows
    none of whose tokens are in ``sample`` (``sampling.CodecSample``): tokens of sampled rows
    would be near-copies of training vectors and look too good. Empty (a tiny stream): the
    baseline is measured on up to 16k training vectors."""
    from colxm.index.codec import train_codec

    codec = train_codec(sample, nbits=nbits, num_centroids=min(num_centroids, len(sample)), seed=seed,
                        reorder_sample=True)
    held = held_out if len(held_out) else sample[:16384]
    codes, residuals = codec.compress(held)
    threshold = float(np.quantile(np.abs(held - codec.centroids[codes]), 0.99))
    baseline = FitStats(threshold, seed)
    baseline.update(codec, held, codes, residuals)
    return codec, threshold, baseline


def centroids_for(num_vectors: int) -> int:
    from colxm.index.codec import num_centroids_for

    return int(num_centroids_for(max(int(num_vectors), 1)))


_COMPRESS_ROWS = 4096  # bounds the [rows, K] score matrix of centroid assignment


def compress_chunk(codec, chunk: Chunk, stats: FitStats | None):
    """(codes, residuals, doclens, the chunk's vectors concatenated) of a chunk; updates the fit
    statistics."""
    vectors = np.concatenate(chunk.vecs).astype(np.float32, copy=False)
    # fast: nearest centroid through a faiss inverted file over the centroids once there are
    # thousands of them (ResidualCodec.assign: ~5x faster, the exact one for ~99.5% of vectors)
    parts = [codec.compress(vectors[a:a + _COMPRESS_ROWS], fast=True) for a in range(0, len(vectors), _COMPRESS_ROWS)]
    codes = np.concatenate([c for c, _ in parts])
    residuals = np.concatenate([r for _, r in parts])
    if stats is not None:
        stats.update(codec, vectors, codes, residuals)
    doclens = np.fromiter((len(v) for v in chunk.vecs), dtype=np.int32, count=len(chunk.vecs))
    return codes, residuals, doclens, vectors
