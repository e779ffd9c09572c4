"""Maintenance commits: merging segments (optimize, automatic merges) and retraining the codec
(reindex) when the drift figures say the codec no longer fits what was added."""
from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np

from colxm.errors import InputError
from colxm.index.manifest import Manifest
from colxm.index.pipeline import Chunk, WriteSummary, centroids_for, fit_figures
from colxm.index.segment import live_token_mask
from colxm.index.writer import SegmentsOut, Work, locate, trained_stream
from colxm.store import Record

_MERGE_ROWS = 8192
_MERGE_TOKENS = 1 << 17  # per chunk: 32 MB of float16 originals at dim 128 (full_vectors)


def _live_chunks(work: Work, only: set[str] | None = None) -> Iterator[tuple]:
    """(codes, residuals, doclens, raw store rows, original vectors or None) of the live rows of
    the committed segments (those in ``only`` when given)."""
    current = {r.id for r in work.manifest.segments}
    for seg in work.snap.segments:
        if seg.record.id not in (current if only is None else only):
            continue
        offsets = np.asarray(seg.doc_offsets)
        for a, b in _row_blocks(offsets):
            live = seg.live[a:b]
            if not live.any():
                continue
            t0, t1 = int(offsets[a]), int(offsets[b])
            tok = live_token_mask(seg, a, b)
            rows = [r[1:] for r, ok in zip(seg.store.raw_rows(a, b), live) if ok]
            vectors = seg.vectors.rows(t0, t1)[tok] if seg.vectors is not None else None
            yield (np.asarray(seg.codes[t0:t1])[tok], np.asarray(seg.residuals[t0:t1])[tok],
                   np.asarray(seg.doclens[a:b])[live], rows, vectors)


def _row_blocks(offsets: np.ndarray) -> Iterator[tuple[int, int]]:
    """Row ranges of at most _MERGE_ROWS rows and _MERGE_TOKENS tokens (or one longer row)."""
    n, a = len(offsets) - 1, 0
    while a < n:
        fits = int(np.searchsorted(offsets, offsets[a] + _MERGE_TOKENS, "right")) - 1
        b = max(a + 1, min(n, a + _MERGE_ROWS, fits))
        yield a, b
        a = b


def _require_clean(work: Work, what: str) -> None:
    if work.changed:
        raise InputError(f"{what} cannot run inside a batch with pending changes; run it on its own")


def merge_segments(work: Work, summary: WriteSummary, only: set[str] | None = None) -> None:
    """Merge the committed segments (all, or those in ``only``) into one new segment without
    their deleted rows; codes, residuals (and original vectors) are copied, not recomputed."""
    _require_clean(work, "optimize")
    m = work.manifest
    chosen = [s for s in m.segments if only is None or s.id in only]
    if len(chosen) <= 1 and not any(s.num_deleted for s in chosen):
        return
    ids = {s.id for s in chosen}
    m.segments = [s for s in m.segments if s.id not in ids]  # the merged ones are appended
    out = SegmentsOut(work)
    moved: dict[str, tuple[str, list[int]]] = {}
    try:
        for codes, residuals, doclens, rows, vectors in _live_chunks(work, ids):
            placed = out.append(codes, residuals, doclens, raw_rows=rows, vectors=vectors)
            for i, r in enumerate(rows):
                seg_id, row = locate(placed, i)
                moved.setdefault(r[0], (seg_id, []))[1].append(row)
        out.close()
    except BaseException:
        out.abort()
        raise
    summary.deleted = sum(s.num_deleted for s in chosen)
    work.id_rows.update(moved)
    for sid in ids:
        work.dead.pop(sid, None)
    summary.indexed, summary.passages = len(moved), sum(len(r) for _, r in moved.values())
    work.changed = True


def merge_candidates(m: Manifest) -> set[str] | None:
    """Segments to merge after a commit when there are more than ``config.max_segments``: the
    smallest ones, so that each merge costs about as much as the segments it saves."""
    limit = m.config.max_segments
    if not limit or len(m.segments) <= limit:
        return None
    by_size = sorted(m.segments, key=lambda s: s.num_rows - s.num_deleted)
    return {s.id for s in by_size[: len(m.segments) - limit // 2 + 1]}


def retrain_all(work: Work, summary: WriteSummary, encode, embed=None) -> None:
    """Retrain the codec on the live vectors and recompress them. The vectors come from
    ``embed([(id, passage), ...])`` when given, else from the stored originals of a
    full-vectors index, else from re-encoding the stored texts with ``encode``, else from
    decompressing the stored codes (lossy: a second quantisation)."""
    _require_clean(work, "reindex")
    m, old = work.manifest, work.codec

    def chunks() -> Iterator[Chunk]:
        for codes, residuals, doclens, rows, originals in _live_chunks(work):
            recs = [(Record(d, t, lang, _meta(meta)), p) for d, p, t, lang, meta in rows]
            if embed is not None:
                vecs = embed([(r.id, p) for r, p in recs])
            elif originals is not None:
                vecs = np.split(originals, np.cumsum(doclens)[:-1])
            elif encode is not None:
                vecs = encode([r.text for r, _ in recs], [r.language for r, _ in recs])
            else:
                flat = old.decompress(codes, residuals, normalize=True)
                vecs = np.split(flat, np.cumsum(doclens)[:-1])
            yield Chunk(recs, [np.asarray(v, dtype=np.float32) for v in vecs])

    with trained_stream(chunks(), m.config, work.root) as (codec, threshold, baseline, stream):
        m.segments = []
        work.id_rows, work.dead = {}, {}
        work.set_codec(codec, threshold)
        work.write_segment(stream, None, summary, replace=None)
    m.drift["build"] = baseline.to_dict()


def _meta(s):
    return json.loads(s) if s else {}


def reindex_reason(m: Manifest) -> str | None:
    """Why the codec should be retrained now, or None when it still fits."""
    c = m.config
    build, added = fit_figures(m.drift.get("build")), fit_figures(m.drift.get("added"))
    total = sum(s.num_tokens - _dead_tokens_estimate(s) for s in m.segments) or 1
    share = added["vectors"] / total
    if share < c.reindex_min_added_share or added["outside_share"] is None or not build["mean_error"]:
        return None
    if c.num_centroids is None:  # the number of centroids follows the collection size
        wanted = centroids_for(total)
        if wanted >= 2 * m.num_centroids:
            return (f"the index has grown ({share:.0%} of its vectors were added after training): "
                    f"ColBERTv2's rule now gives {wanted} centroids, the codec has {m.num_centroids}")
    out_ratio = added["outside_share"] / max(build["outside_share"] or 1e-9, 1e-9)
    err_ratio = added["mean_error"] / build["mean_error"]
    if out_ratio >= c.reindex_outside_ratio or err_ratio >= c.reindex_error_ratio:
        return (f"{share:.0%} of the vectors were added after training; their residuals fall "
                f"outside the trained range {out_ratio:.1f}x as often and reconstruct with "
                f"{err_ratio:.2f}x the error")
    return None


def _dead_tokens_estimate(s) -> int:
    """Tokens of deleted rows, estimated from the segment's average row length."""
    return int(s.num_tokens * s.num_deleted / s.num_rows) if s.num_rows else 0
