"""The write side of an index: a working copy of the manifest that add/delete/upsert/optimize/
reindex change, and the commit that makes those changes durable in one atomic step.

Files are written first (segments into ``tmp/`` then renamed to ``segments/<id>``, tombstones
as ``tombstones/<segment>.<generation>.npy``, codec arrays under ``codec/g<generation>``), the
manifest last. Until the manifest names them, new files are garbage that the next writer (who
holds the lock) deletes: a crash at any instant leaves the last commit intact.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from colxm.errors import InputError
from colxm.index.atomic import exchange_dirs, file_record, fsync_dir, fsync_tree, save_npy
from colxm.index.lock import WriterLock
from colxm.index.manifest import MANIFEST_NAME, IndexConfig, Manifest, write_manifest
from colxm.index.pipeline import (
    Chunk,
    FitStats,
    WriteSummary,
    centroids_for,
    compress_chunk,
    fit_figures,
    iter_chunks,
    train_codec_on,
)
from colxm.index.segment import SegmentWriter, live_token_mask, segment_record
from colxm.store import Record

log = logging.getLogger(__name__)

_MERGE_ROWS = 8192


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
                      replace: bool | None) -> str | None:
        """Compress chunks into a new segment. Within the stream a repeated id keeps its last
        copy; an id already in the index is replaced (replace=True) or refused (False)."""
        m = self.manifest
        seg_id = self._next_segment_id()
        (self.root / "tmp").mkdir(exist_ok=True)
        tmpdir = self.root / "tmp" / seg_id
        writer = SegmentWriter(tmpdir, m.dim, m.nbits, m.num_centroids)
        seen: dict[str, list[int]] = {}
        dead_new: set[int] = set()
        try:
            for chunk in chunks:
                base = writer.num_rows
                for i, (rec, pno) in enumerate(chunk.rows):
                    if pno == 0:
                        if rec.id in seen:
                            dead_new.update(seen[rec.id])
                            summary.note_duplicate(rec.id)
                        elif replace is not None and rec.id in self.id_rows:
                            if not replace:
                                raise InputError(f"document {rec.id!r} is already in the index; use upsert")
                            self.delete_id(rec.id)
                            summary.replaced += 1
                        seen[rec.id] = []
                    seen[rec.id].append(base + i)
                codes, residuals, doclens = compress_chunk(self.codec, chunk, stats)
                writer.append(codes, residuals, doclens, rows=chunk.rows)
            if writer.num_rows == 0:
                writer.abort()
                return None
            counts = writer.finish()
            final = self.root / "segments" / seg_id
            final.parent.mkdir(exist_ok=True)
            os.rename(tmpdir, final)
            fsync_dir(final.parent)
        except BaseException:
            writer.abort()
            raise
        self.new_dirs.append(final)
        m.segments.append(segment_record(self.root, seg_id, m.generation + 1, counts))
        if dead_new:
            self.dead[seg_id] = dead_new
        for doc_id, rows in seen.items():
            self.id_rows[doc_id] = (seg_id, rows)
        summary.indexed += len(seen)
        summary.passages += counts["num_rows"] - len(dead_new)
        self.changed = True
        return seg_id

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
        m.dim, m.num_centroids = int(codec.dim), int(codec.centroids.shape[0])
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


def train_from_head(chunks: Iterator[Chunk], config: IndexConfig, total_docs: int | None,
                    total_vectors: int | None = None):
    """Buffer the first chunks until the k-means sample is full, train the codec on those
    vectors (first-N sampling), and return it with the full chunk stream (buffer first).
    The buffered vectors are copied once into the sample array and the chunks then view it, so
    the peak is one sample plus one chunk."""
    cap = config.kmeans_sample_vectors
    buf, seen, filled, docs, full = [], 0, 0, 0, False
    sample: np.ndarray | None = None
    for ch in chunks:
        if sample is None:
            sample = np.empty((cap, ch.vecs[0].shape[1]), dtype=np.float32)
        views = []
        for v in ch.vecs:
            seen += len(v)
            if not full and filled + len(v) <= cap:
                sample[filled:filled + len(v)] = v
                views.append(sample[filled:filled + len(v)])
                filled += len(v)
            elif filled == 0:  # a first document longer than the whole sample
                sample[:] = v[:cap]
                filled, full = cap, True
                views.append(v)
            else:
                full = True  # whole documents only; later vectors stay in their chunks
                views.append(v)
        ch.vecs = views
        buf.append(ch)
        docs += sum(1 for _, pno in ch.rows if pno == 0)
        if full or filled >= cap:
            break
    if sample is None or filled == 0:
        raise InputError("no document has text to index (all empty?)")
    sample = sample[:filled]
    tokens = seen
    if config.num_centroids:
        k = config.num_centroids
    else:
        est = total_vectors or tokens
        if total_vectors is None and total_docs and docs and total_docs > docs:
            est = int(tokens / docs * total_docs)  # estimate from the head's tokens per document
        k = centroids_for(est)
    k = max(1, min(k, len(sample)))
    codec, threshold, baseline = train_codec_on(sample, config.nbits, k, config.seed)
    return codec, threshold, baseline, itertools.chain(buf, chunks)


def build_into(root: Path, items, encoder, config: IndexConfig, languages, total_docs) -> WriteSummary:
    """Write a complete new index (generation 1) into the empty folder ``root``."""
    summary = WriteSummary()
    encode = make_encode(encoder, languages, config.encode_batch_size) if encoder is not None else None
    dim = int(encoder.dim) if encoder is not None else None
    chunks = iter_chunks(items, encode, make_split(encoder, config), config.chunk_documents, dim, summary)
    codec, threshold, baseline, chunks = train_from_head(chunks, config, total_docs)
    m = Manifest(generation=0, dim=int(codec.dim), nbits=config.nbits,
                 num_centroids=int(codec.centroids.shape[0]), codec_files={}, segments=[],
                 config=config, model=model_reference(encoder), encoder_config=encoder_config(encoder))
    work = Work(root, manifest=m, codec=codec)
    work.set_codec(codec, threshold)
    work.manifest.generation = 0  # set_codec named the folder g000001; this commit is generation 1
    work.write_segment(chunks, None, summary, replace=None)
    work.manifest.drift["build"] = baseline.to_dict()
    summary.generation = work.commit()
    return summary


def import_into(root: Path, codec, codes, residuals, doclens, records, config: IndexConfig,
                model: dict | None, summary: WriteSummary) -> None:
    """Write generation 1 of an index from vectors that are already compressed with ``codec``
    (e.g. a colbert-ai index): codes are copied as they are, nothing is re-encoded."""
    doclens = np.asarray(doclens, dtype=np.int64)
    offsets = np.zeros(len(doclens) + 1, dtype=np.int64)
    np.cumsum(doclens, out=offsets[1:])
    if offsets[-1] != len(codes) or len(codes) != len(residuals):
        raise InputError(f"doclens sum to {int(offsets[-1])}, but there are {len(codes)} codes and "
                         f"{len(residuals)} residual rows")
    m = Manifest(generation=0, dim=int(codec.dim), nbits=int(codec.nbits),
                 num_centroids=int(codec.centroids.shape[0]), codec_files={}, segments=[],
                 config=dataclasses.replace(config, nbits=int(codec.nbits)), model=model)
    work = Work(root, manifest=m, codec=codec)
    m = work.manifest  # Work keeps its own copy
    work.set_codec(codec, float("inf"))
    m.drift = {}  # no raw vectors: no drift baseline (reindex only when forced)
    recs = iter(records)

    def chunks():
        for a in range(0, len(doclens), _MERGE_ROWS):
            b = min(len(doclens), a + _MERGE_ROWS)
            rows = []
            for _ in range(a, b):
                try:
                    rows.append((next(recs), 0))
                except StopIteration:
                    raise InputError(f"fewer documents than the {len(doclens)} compressed rows") from None
            summary.documents += len(rows)
            t0, t1 = int(offsets[a]), int(offsets[b])
            yield np.asarray(codes[t0:t1]), np.asarray(residuals[t0:t1]), doclens[a:b], rows

    seg_id = work._next_segment_id()
    (root / "tmp").mkdir(exist_ok=True)
    writer = SegmentWriter(root / "tmp" / seg_id, m.dim, m.nbits, m.num_centroids)
    seen: set[str] = set()
    try:
        for c, r, d, rows in chunks():
            for rec, _ in rows:
                if rec.id in seen:
                    raise InputError(f"document id {rec.id!r} occurs twice in the imported index")
                seen.add(rec.id)
            writer.append(c, r, d, rows=rows)
        if next(recs, None) is not None:
            raise InputError(f"more documents than the {len(doclens)} compressed rows")
        counts = writer.finish()
        (root / "segments").mkdir(exist_ok=True)
        os.rename(root / "tmp" / seg_id, root / "segments" / seg_id)
        fsync_dir(root / "segments")
    except BaseException:
        writer.abort()
        raise
    m.segments.append(segment_record(root, seg_id, 1, counts))
    summary.indexed = summary.passages = counts["num_rows"]
    summary.generation = work.commit()


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
    if work.write_segment(chunks, stats, summary, replace=replace) is not None:
        m.drift["added"] = stats.merge_into(m.drift.get("added"))


def _live_chunks(work: Work, only: set[str] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list]]:
    """(codes, residuals, doclens, raw store rows) of the live rows of the committed segments
    (those in ``only`` when given)."""
    current = {r.id for r in work.manifest.segments}
    for seg in work.snap.segments:
        if seg.record.id not in current or (only is not None and seg.record.id not in only):
            continue
        n = len(seg.doclens)
        for a in range(0, n, _MERGE_ROWS):
            b = min(n, a + _MERGE_ROWS)
            live = seg.live[a:b]
            if not live.any():
                continue
            t0, t1 = int(seg.doc_offsets[a]), int(seg.doc_offsets[b])
            tok = live_token_mask(seg, a, b)
            rows = [r[1:] for r, ok in zip(seg.store.raw_rows(a, b), live) if ok]
            yield (np.asarray(seg.codes[t0:t1])[tok], np.asarray(seg.residuals[t0:t1])[tok],
                   np.asarray(seg.doclens[a:b])[live], rows)


def _require_clean(work: Work, what: str) -> None:
    if work.changed:
        raise InputError(f"{what} cannot run inside a batch with pending changes; run it on its own")


def merge_segments(work: Work, summary: WriteSummary, only: set[str] | None = None) -> None:
    """Merge the committed segments (all, or those in ``only``) into one new segment without
    their deleted rows; codes and residuals are copied, not recomputed."""
    _require_clean(work, "optimize")
    m = work.manifest
    chosen = [s for s in m.segments if only is None or s.id in only]
    if len(chosen) <= 1 and not any(s.num_deleted for s in chosen):
        return
    ids = {s.id for s in chosen}
    seg_id = work._next_segment_id()
    (work.root / "tmp").mkdir(exist_ok=True)
    tmpdir = work.root / "tmp" / seg_id
    writer = SegmentWriter(tmpdir, m.dim, m.nbits, m.num_centroids)
    moved: dict[str, list[int]] = {}
    try:
        for codes, residuals, doclens, rows in _live_chunks(work, ids):
            base = writer.num_rows
            writer.append(codes, residuals, doclens, raw_rows=rows)
            for i, r in enumerate(rows):
                moved.setdefault(r[0], []).append(base + i)
        counts = writer.finish() if writer.num_rows else None
        if counts is None:
            writer.abort()
        else:
            final = work.root / "segments" / seg_id
            final.parent.mkdir(exist_ok=True)
            os.rename(tmpdir, final)
            fsync_dir(final.parent)
            work.new_dirs.append(final)
    except BaseException:
        writer.abort()
        raise
    summary.deleted = sum(s.num_deleted for s in chosen)
    m.segments = [s for s in m.segments if s.id not in ids]
    if counts:
        m.segments.append(segment_record(work.root, seg_id, m.generation + 1, counts))
    for doc_id, rows in moved.items():
        work.id_rows[doc_id] = (seg_id, rows)
    for sid in ids:
        work.dead.pop(sid, None)
    summary.indexed, summary.passages = len(moved), (counts["num_rows"] if counts else 0)
    work.changed = True


def merge_candidates(m: Manifest) -> set[str] | None:
    """Segments to merge after a commit when there are more than ``config.max_segments``: the
    smallest ones, so that each merge costs about as much as the segments it saves."""
    limit = m.config.max_segments
    if not limit or len(m.segments) <= limit:
        return None
    by_size = sorted(m.segments, key=lambda s: s.num_rows - s.num_deleted)
    return {s.id for s in by_size[: len(m.segments) - limit // 2 + 1]}


def retrain_all(work: Work, summary: WriteSummary, encode, show_progress) -> None:
    """Retrain the codec on the live vectors (re-encoded text, or decompressed) and recompress."""
    _require_clean(work, "reindex")
    m, old = work.manifest, work.codec

    def chunks() -> Iterator[Chunk]:
        for codes, residuals, doclens, rows in _live_chunks(work):
            recs = [(Record(d, t, lang, _meta(meta)), p) for d, p, t, lang, meta in rows]
            if encode is not None:
                vecs = encode([r.text for r, _ in recs], [r.language for r, _ in recs])
            else:
                flat = old.decompress(codes, residuals)
                vecs = np.split(flat, np.cumsum(doclens)[:-1])
            yield Chunk(recs, [np.asarray(v, dtype=np.float32) for v in vecs])

    total = sum(s.num_tokens for s in m.segments)
    codec, threshold, baseline, stream = train_from_head(chunks(), m.config, None, total_vectors=total)
    m.segments = []
    work.id_rows, work.dead = {}, {}
    work.set_codec(codec, threshold)
    work.write_segment(stream, None, summary, replace=None)
    m.drift["build"] = baseline.to_dict()


def _meta(s):
    import json

    return json.loads(s) if s else {}


def reindex_reason(m: Manifest) -> str | None:
    """Why the codec should be retrained now, or None when it still fits."""
    c = m.config
    build, added = fit_figures(m.drift.get("build")), fit_figures(m.drift.get("added"))
    total = sum(s.num_tokens for s in m.segments) or 1
    share = added["vectors"] / total
    if share < c.reindex_min_added_share or added["outside_share"] is None or not build["mean_error"]:
        return None
    out_ratio = added["outside_share"] / max(build["outside_share"] or 1e-9, 1e-9)
    err_ratio = added["mean_error"] / build["mean_error"]
    if out_ratio >= c.reindex_outside_ratio or err_ratio >= c.reindex_error_ratio:
        return (f"{share:.0%} of the vectors were added after training; their residuals fall "
                f"outside the trained range {out_ratio:.1f}x as often and reconstruct with "
                f"{err_ratio:.2f}x the error")
    return None


def model_reference(encoder) -> dict | None:
    if encoder is None:
        return None
    name = str(getattr(encoder, "name_or_path", "") or "")
    if name and Path(name).exists():
        name = str(Path(name).resolve())
    return {"name_or_path": name, "loader": "colxm.modeling.encoder.Encoder.from_pretrained"}


def encoder_config(encoder) -> dict | None:
    import dataclasses
    import json

    cfg = getattr(encoder, "config", None)
    if cfg is None:
        return None
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else getattr(cfg, "to_dict", dict)()
    return json.loads(json.dumps(d, default=str))


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


def check_build_target(path: Path, overwrite: bool) -> None:
    if not path.exists():
        if not path.parent.is_dir():
            raise InputError(f"cannot build at {path}: folder {path.parent} does not exist")
        return
    if not path.is_dir():
        raise InputError(f"cannot build at {path}: it is a file")
    if (path / MANIFEST_NAME).exists():
        if not overwrite:
            raise InputError(f"{path} already holds an index; pass overwrite=True (--overwrite) to replace it")
        return
    if any(path.iterdir()):
        raise InputError(f"{path} is a non-empty folder that is not a colxm index; refusing to overwrite it")


def install_build(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move a complete build into place; an existing index is swapped out atomically."""
    fsync_tree(tmp)
    check_build_target(path, overwrite)
    if not path.exists() or not any(path.iterdir()):
        os.rename(tmp, path)  # replaces an empty folder too
        fsync_dir(path.parent)
        return
    lock = WriterLock(path)
    lock.acquire()  # never swap an index out from under its writer
    try:
        _continue_generations(tmp, path)
        if exchange_dirs(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old index
            return
        old = path.parent / f"{tmp.name}.old"
        os.rename(path, old)
        os.rename(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        lock.release()


def _continue_generations(tmp: Path, path: Path) -> None:
    """Number the new build's commit after the old index's last one, so that readers of the old
    index see a newer generation and refresh()."""
    from colxm.index.manifest import read_manifest
    from colxm.errors import IndexFormatError

    try:
        old_gen = read_manifest(path).generation
    except IndexFormatError:
        return
    m = read_manifest(tmp)
    if m.generation <= old_gen:
        m.generation = old_gen + 1
        write_manifest(tmp, m)


def clean_stale_builds(path: Path) -> None:
    """Remove temp build folders next to ``path`` left by builds whose process is gone."""
    if not path.parent.is_dir():
        return
    for d in path.parent.glob(f".{path.name}.building-*"):
        try:
            pid = int(d.name.rsplit(".building-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass
