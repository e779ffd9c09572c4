"""The write side of an index: a working copy of the manifest that add/delete/upsert/optimize/
reindex change, and the commit that makes those changes durable in one atomic step.

Files are written first (segments into ``tmp/`` then renamed to ``segments/<id>``, tombstones
as ``tombstones/<segment>.<generation>.npy``, codec arrays under ``codec/g<generation>``), the
manifest last. Until the manifest names them, new files are garbage that the next writer (who
holds the lock) deletes: a crash at any instant leaves the last commit intact.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from colxm.errors import InputError
from colxm.index.atomic import file_record, fsync_dir, save_npy
from colxm.index.manifest import MANIFEST_NAME, IndexConfig, Manifest, write_manifest
from colxm.index.pipeline import (
    Chunk,
    FitStats,
    WriteSummary,
    centroids_for,
    compress_chunk,
    iter_chunks,
    train_codec_on,
)
from colxm.index.segment import SegmentWriter, segment_record

log = logging.getLogger(__name__)


class Work:
    """Pending changes on top of one snapshot (or of an empty index while building)."""

    def __init__(self, root: Path, snap=None, manifest: Manifest | None = None, codec=None):
        self.root = root
        self.snap = snap
        self.manifest: Manifest = copy.deepcopy(snap.manifest if snap is not None else manifest)
        self.codec = snap.codec if snap is not None else codec
        self.dead: dict[str, set[int]] = {}  # segment id -> all its dead rows (touched ones)
        self.new_dirs: list[Path] = []
        self.changed = False
        self._base_live: dict[str, np.ndarray] = {}
        self.id_rows: dict[str, tuple[str, list[int]]] = {}
        if snap is not None:
            ids = [s.record.id for s in snap.segments]
            self._base_live = {s.record.id: s.live for s in snap.segments}
            self.id_rows = {d: (ids[si], rows) for d, (si, rows) in snap.id_map.items()}

    def _dead(self, seg_id: str) -> set[int]:
        if seg_id not in self.dead:
            base = self._base_live.get(seg_id)
            self.dead[seg_id] = set(np.flatnonzero(~base).tolist()) if base is not None else set()
        return self.dead[seg_id]

    def delete_id(self, doc_id: str) -> bool:
        entry = self.id_rows.pop(doc_id, None)
        if entry is None:
            return False
        self._dead(entry[0]).update(entry[1])
        self.changed = True
        return True

    def _next_segment_id(self) -> str:
        seg_id = f"seg-{self.manifest.next_segment:06d}"
        self.manifest.next_segment += 1
        return seg_id

    def write_segment(self, chunks: Iterable[Chunk], stats: FitStats | None, summary: WriteSummary,
                      replace: bool | None) -> list[str]:
        """Compress chunks into new segments (a new one every ``segment_max_tokens``). Within
        the stream a repeated id keeps its last copy; an id already in the index is replaced
        (replace=True) or refused (False)."""
        out = SegmentsOut(self)
        seen: dict[str, tuple[str, list[int]]] = {}
        written = dead = 0
        try:
            for chunk in chunks:
                codes, residuals, doclens, vectors = compress_chunk(self.codec, chunk, stats)
                placed = out.append(codes, residuals, doclens, rows=chunk.rows, vectors=vectors)
                for i, (rec, pno) in enumerate(chunk.rows):
                    seg_id, row = locate(placed, i)
                    if pno == 0:
                        if rec.id in seen:
                            sid, rows = seen[rec.id]
                            self._dead(sid).update(rows)
                            dead += len(rows)
                            summary.note_duplicate(rec.id)
                        elif replace is not None and rec.id in self.id_rows:
                            if not replace:
                                raise InputError(f"document {rec.id!r} is already in the index; use upsert")
                            self.delete_id(rec.id)
                            summary.replaced += 1
                        seen[rec.id] = (seg_id, [])
                    seen[rec.id][1].append(row)
                written += len(chunk.rows)
            made = out.close()
        except BaseException:
            out.abort()
            raise
        self.id_rows.update(seen)
        summary.indexed += len(seen)
        summary.passages += written - dead
        return made

    def set_codec(self, codec, threshold: float) -> None:
        """Write a new codec's arrays (durably) and point the working manifest at them."""
        m = self.manifest
        name = f"g{m.generation + 1:06d}"
        (self.root / "tmp").mkdir(exist_ok=True)
        tmpdir = self.root / "tmp" / f"codec-{name}"
        tmpdir.mkdir()
        for key, arr in codec.to_arrays().items():
            save_npy(tmpdir / f"{key}.npy", np.asarray(arr))
        fsync_dir(tmpdir)
        final = self.root / "codec" / name
        final.parent.mkdir(exist_ok=True)
        os.rename(tmpdir, final)
        fsync_dir(final.parent)
        self.new_dirs.append(final)
        m.codec_files = {p.stem: file_record(p, self.root) for p in sorted(final.glob("*.npy"))}
        m.dim, m.num_centroids = int(codec.dim), int(codec.num_centroids)
        m.drift = {"threshold": threshold}
        self.codec = codec
        self.changed = True

    def commit(self) -> int:
        """Write the tombstones of touched segments, then atomically replace the manifest."""
        m = self.manifest
        gen = m.generation + 1
        tdir = self.root / "tombstones"
        tdir.mkdir(exist_ok=True)
        keep = []
        for rec in m.segments:
            dead = self.dead.get(rec.id)
            if dead is not None and len(dead) >= rec.num_rows:
                continue  # every row deleted: drop the segment
            if dead is not None and (len(dead) != rec.num_deleted or rec.tombstones is None) and dead:
                path = tdir / f"{rec.id}.{gen}.npy"
                tmp = tdir / f".{rec.id}.{gen}.tmp"
                save_npy(tmp, np.array(sorted(dead), dtype=np.int32))
                os.replace(tmp, path)
                rec.tombstones = file_record(path, self.root)
                rec.num_deleted = len(dead)
            keep.append(rec)
        fsync_dir(tdir)
        m.segments = keep
        m.generation = gen
        fsync_dir(self.root)
        write_manifest(self.root, m)
        self.new_dirs = []
        return gen

    def discard(self) -> None:
        for d in self.new_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.new_dirs = []


def _passage(rows, raw_rows, j: int) -> int:
    return rows[j][1] if rows is not None else raw_rows[j][1]


def locate(placed: list[tuple[int, str, int]], i: int) -> tuple[str, int]:
    """(segment id, row there) of row ``i`` of an append, from SegmentsOut.append's answer."""
    for start, seg_id, base in reversed(placed):
        if start <= i:
            return seg_id, base + i - start
    raise IndexError(i)


class SegmentsOut:
    """Writes appended rows into new segments of at most ``config.segment_max_tokens`` tokens
    each (so finishing one, inverted lists included, takes bounded memory), moving each
    finished segment into ``segments/`` and into the working manifest."""

    def __init__(self, work: Work):
        self.work = work
        self.limit = work.manifest.config.segment_max_tokens
        self.writer: SegmentWriter | None = None
        self.seg_id = ""
        self.made: list[str] = []

    def _open(self) -> None:
        m = self.work.manifest
        self.seg_id = self.work._next_segment_id()
        (self.work.root / "tmp").mkdir(exist_ok=True)
        self.writer = SegmentWriter(self.work.root / "tmp" / self.seg_id, m.dim, m.nbits, m.num_centroids,
                                    full_vectors=m.config.full_vectors)

    def append(self, codes, residuals, doclens, rows=None, raw_rows=None, vectors=None) -> list[tuple[int, str, int]]:
        """Append rows, splitting them across segments at the token limit. Returns where they
        went: (index of the first row in this call, segment id, its row number there).
        ``vectors`` (the tokens' original vectors) are kept when the index stores them."""
        doclens = np.asarray(doclens)
        ends = np.cumsum(doclens)
        placed, i, t = [], 0, 0
        n = len(doclens)
        while i < n:
            if self.writer is None:
                self._open()
            room = self.limit - self.writer.num_tokens
            # rows i..j-1 fit (at least one row, so a huge document still makes progress)
            j = max(i + 1, int(np.searchsorted(ends, t + room, side="right")))
            j = min(j, n)
            while j < n and _passage(rows, raw_rows, j) != 0:
                j += 1  # never split one document's passages across segments
            t1 = int(ends[j - 1])
            placed.append((i, self.seg_id, self.writer.num_rows))
            self.writer.append(codes[t:t1], residuals[t:t1], doclens[i:j],
                               rows=None if rows is None else rows[i:j],
                               raw_rows=None if raw_rows is None else raw_rows[i:j],
                               vectors=None if vectors is None else vectors[t:t1])
            if self.writer.num_tokens >= self.limit:
                self._finish()
            i, t = j, t1
        return placed

    def _finish(self) -> None:
        w, self.writer = self.writer, None
        if w.num_rows == 0:
            w.abort()
            return
        counts = w.finish()
        final = self.work.root / "segments" / self.seg_id
        final.parent.mkdir(exist_ok=True)
        os.rename(w.folder, final)
        fsync_dir(final.parent)
        self.work.new_dirs.append(final)
        m = self.work.manifest
        m.segments.append(segment_record(self.work.root, self.seg_id, m.generation + 1, counts))
        self.made.append(self.seg_id)
        self.work.changed = True

    def close(self) -> list[str]:
        if self.writer is not None:
            self._finish()
        return self.made

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def make_encode(encoder, languages, batch_size: int):
    """Adapter from the pipeline's (texts, per-text languages) to the Encoder contract."""

    def encode(texts: list[str], langs: list[str | None]) -> list[np.ndarray]:
        if all(lang is None for lang in langs):
            arg = languages
        else:
            default = languages if isinstance(languages, str) else "auto"
            arg = [lang if lang is not None else default for lang in langs]
        return encoder.encode_documents(texts, languages=arg, batch_size=batch_size, show_progress=False)

    return encode


def make_split(encoder, config: IndexConfig):
    if not config.passage_max_tokens or encoder is None:
        return None
    from colxm.passages import split_passages

    return lambda text: split_passages(
        text, encoder.tokenizer, config.passage_max_tokens, config.passage_overlap
    )


_BUFFER_VECTORS = 1 << 18  # a stream longer than this is parked on disk until the codec exists


@contextlib.contextmanager
def trained_stream(chunks: Iterator[Chunk], config: IndexConfig, root: Path):
    """Read the whole chunk stream once, drawing a uniform random sample of its tokens and a few
    held-out rows (``sampling.CodecSample``), train the codec on it, and yield ``(codec,
    threshold, baseline, chunks)`` with the same chunks to compress. Short streams stay in
    memory; longer ones are parked in ``root/tmp`` (``spill.ChunkSpill``) and removed on exit. The number of centroids
    follows the stream's exact length (ColBERTv2's rule) unless the config fixes it."""
    from colxm.index.kmeans import KMeansConfig
    from colxm.index.sampling import CodecSample
    from colxm.index.spill import ChunkSpill

    sampler = CodecSample(config.kmeans_sample_vectors, config.seed)
    held: list[Chunk] = []
    held_vectors = total = 0
    dim = 0
    spill: ChunkSpill | None = None
    try:
        for ch in chunks:
            if not ch.rows:
                continue
            dim = ch.vecs[0].shape[1]
            sampler.offer(ch.vecs)
            total += ch.num_tokens
            if spill is None and held_vectors + ch.num_tokens <= min(_BUFFER_VECTORS, config.kmeans_sample_vectors):
                held.append(ch)
                held_vectors += ch.num_tokens
                continue
            if spill is None:
                spill = ChunkSpill(root / "tmp" / f"spill-{secrets.token_hex(6)}")
                for h in held:
                    spill.write(h)
                held = []
            spill.write(ch)
        if total == 0:
            raise InputError("no document has text to index (all empty?)")
        k = config.num_centroids or centroids_for(total)
        # k-means uses at most max_points_per_centroid points per centroid; train_codec holds
        # 5% of the sample out for the bucket cutoffs (so k-means gets them all, no subsample copy)
        wanted = max(1 << 16, int(KMeansConfig.max_points_per_centroid * k / 0.95))
        sample, held_out = sampler.split(min(config.kmeans_sample_vectors, wanted))
        del sampler
        k = max(1, min(k, len(sample)))
        codec, threshold, baseline = train_codec_on(sample, held_out, config.nbits, k, config.seed)
        del sample, held_out
        yield codec, threshold, baseline, (spill.replay(dim) if spill is not None else iter(held))
    finally:
        if spill is not None:
            spill.remove()


def add_items(work: Work, items: list, encoder, languages, summary: WriteSummary, replace: bool) -> None:
    m = work.manifest
    if not replace:
        present = [r.id for r, _ in items if r.id in work.id_rows]
        if present:
            raise InputError(
                f"{len(present)} document(s) already in the index (e.g. {present[:5]}); "
                "use upsert to replace them"
            )
    encode = make_encode(encoder, languages, m.config.encode_batch_size) if encoder is not None else None
    chunks = iter_chunks(items, encode, make_split(encoder, m.config), m.config.chunk_documents, m.dim, summary)
    stats = FitStats(m.drift.get("threshold", float("inf")), m.config.seed)
    if work.write_segment(chunks, stats, summary, replace=replace):
        m.drift["added"] = stats.merge_into(m.drift.get("added"))


def collect_garbage(root: Path, manifest: Manifest) -> None:
    """Delete files no commit refers to (left by crashed or superseded writers). Lock held."""
    refs = manifest.referenced_paths()
    ref_dirs = {str(Path(p).parent) for p in refs}
    for sub in ("segments", "codec"):
        folder = root / sub
        if folder.is_dir():
            for d in folder.iterdir():
                if d.relative_to(root).as_posix() not in ref_dirs:
                    _remove(d)
    tdir = root / "tombstones"
    if tdir.is_dir():
        for f in tdir.iterdir():
            if f.relative_to(root).as_posix() not in refs:
                _remove(f)
    if (root / "tmp").is_dir():
        for d in (root / "tmp").iterdir():
            _remove(d)
    for f in root.iterdir():
        if f.name.startswith(f".{MANIFEST_NAME}.tmp"):
            _remove(f)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
