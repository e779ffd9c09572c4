"""The public Index: build, open, search, and crash-safe updates (add / delete / upsert,
batch, optimize, reindex, verify).

One writer at a time (``write.lock``), any number of readers that never lock. Every change is
one commit: new immutable files first, then an atomic replace of ``manifest.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from colxm.errors import IndexFormatError, InputError
from colxm.index import build as B
from colxm.index import fullvec
from colxm.index import merge as M
from colxm.index import writer as W
from colxm.index.lock import WriterLock
from colxm.index.manifest import IndexConfig, read_manifest
from colxm.index.pipeline import WriteSummary, fit_figures
from colxm.index.snapshot import Snapshot, open_snapshot
from colxm.store import Hit, iter_records

log = logging.getLogger(__name__)

ENCODER_LOADER = "colxm.modeling.encoder.Encoder.from_pretrained"


@dataclasses.dataclass
class ReindexReport:
    """What reindex() decided and why, with the drift figures it decided on."""

    done: bool
    reason: str
    drift: dict
    generation: int


class Index:
    """A colxm index folder. Create with ``Index.build``, load with ``Index.open``."""

    def __init__(self, path: Path, snapshot: Snapshot, encoder=None):
        self.path = path
        self._snap = snapshot
        self._encoder = encoder
        self._lock = WriterLock(path)
        self._work: W.Work | None = None
        self._batch_depth = 0
        self.last_summary: WriteSummary | None = None

    # ------------------------------------------------------------------ open / build
    @classmethod
    def open(cls, path: str | os.PathLike, encoder=None) -> "Index":
        """Open a committed index read-only (no lock); the encoder recorded in the manifest is
        loaded on the first text search when none is given."""
        path = Path(path)
        snap = open_snapshot(path)
        if encoder is not None:
            _check_encoder(encoder, snap.manifest.dim)
        return cls(path, snap, encoder)

    @classmethod
    def build(
        cls,
        path: str | os.PathLike,
        documents: Iterable[Any],
        encoder=None,
        nbits: int = 2,
        config: IndexConfig | None = None,
        languages: str | None = None,
        overwrite: bool = False,
        show_progress: bool | None = None,
        embeddings: Iterable[np.ndarray] | None = None,
    ) -> "Index":
        """Build an index from documents (dicts with "id" and "text", optional "language", other
        keys metadata; or (id, text) pairs), streaming in chunks. Either ``encoder`` encodes the
        texts, or ``embeddings`` gives each document's token vectors (float32 [m, dim]).
        Works in a temp folder next to ``path`` and renames it into place when complete; an
        existing index at ``path`` is only replaced with ``overwrite=True``, atomically.
        ``index.last_summary`` reports duplicates (the last copy is kept) and empty texts."""
        path = Path(path).absolute()
        config = config if config is not None else IndexConfig(nbits=nbits)
        if encoder is None and embeddings is None:
            raise InputError("Index.build needs an encoder (or precomputed embeddings)")
        B.check_build_target(path, overwrite)
        B.clean_stale_builds(path)

        def fill(tmp: Path) -> WriteSummary:
            items = _items(documents, embeddings, languages, show_progress, "indexing")
            return B.build_into(tmp, items, encoder, config, languages)

        index = cls._install_new(path, overwrite, encoder, fill)
        log.info("built %s: %s", path, index.last_summary)
        return index

    @classmethod
    def from_compressed(
        cls,
        path: str | os.PathLike,
        codec,
        codes: np.ndarray,
        residuals: np.ndarray,
        doclens: np.ndarray,
        documents: Iterable[Any],
        encoder=None,
        model_path: str | None = None,
        config: IndexConfig | None = None,
        overwrite: bool = False,
    ) -> "Index":
        """Write an index from already-compressed vectors (``import-colbert``): ``codec`` (a
        ResidualCodec), per-token ``codes``/``residuals``, per-row ``doclens`` and one document
        (dict or (id, text) pair) per row, in the same order. Nothing is re-encoded; the model
        that made the vectors is recorded from ``encoder`` or ``model_path`` when given."""
        path = Path(path).absolute()
        B.check_build_target(path, overwrite)
        model = B.model_reference(encoder) if encoder is not None else (
            {"name_or_path": str(model_path), "loader": ENCODER_LOADER} if model_path else None)

        def fill(tmp: Path) -> WriteSummary:
            summary = WriteSummary()
            B.import_into(tmp, codec, codes, residuals, doclens, iter_records(documents),
                          config or IndexConfig(nbits=int(codec.nbits)), model, summary)
            return summary

        return cls._install_new(path, overwrite, encoder, fill)

    @classmethod
    def _install_new(cls, path: Path, overwrite: bool, encoder, fill) -> "Index":
        """Write a whole index with ``fill(tmp)`` in a temp folder next to ``path``, rename it into
        place when complete (nothing half-written on failure), open it."""
        tmp = path.parent / f".{path.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        try:
            tmp.mkdir(parents=True)
            summary = fill(tmp)
            B.install_build(tmp, path, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        summary.seconds = time.perf_counter() - t0
        index = cls.open(path, encoder=encoder)
        index.last_summary = summary
        return index

    # ------------------------------------------------------------------ reading
    @property
    def generation(self) -> int:
        return self._snap.generation

    @property
    def config(self) -> IndexConfig:
        return self._snap.manifest.config

    @property
    def encoder(self):
        """The encoder given at open/build, else the one recorded in the manifest (loaded once)."""
        if self._encoder is None:
            model = self._snap.manifest.model
            if not model:
                raise InputError(
                    "this index was built from precomputed embeddings and records no model; "
                    "pass encoder=... to Index.open or use search_embeddings"
                )
            from colxm.modeling.encoder import Encoder

            self._encoder = Encoder.from_pretrained(model["name_or_path"])
            _check_encoder(self._encoder, self._snap.manifest.dim)
        return self._encoder

    def refresh(self) -> bool:
        """Pick up a newer commit (for long-lived readers). True when the state changed."""
        try:
            gen = read_manifest(self.path).generation
        except IndexFormatError:
            return False
        if gen == self._snap.generation:
            return False
        # the old snapshot closes when the last search using it lets go of it
        self._snap = open_snapshot(self.path, self._snap)
        return True

    def ids(self) -> list[str]:
        """External ids of the documents in the index (index order)."""
        return list(self._snap.id_map)

    def __len__(self) -> int:
        return len(self._snap.id_map)

    def __contains__(self, doc_id: object) -> bool:
        return str(doc_id) in self._snap.id_map

    def get(self, doc_id: str) -> list[Hit]:
        """The stored passages of one document (score 0), [] when absent."""
        snap = self._snap
        entry = snap.id_map.get(str(doc_id))
        if entry is None:
            return []
        si, rows = entry
        got = snap.segments[si].store.fetch(rows)
        return [Hit(d, 0.0, t, lang, meta, p) for d, p, t, lang, meta in (got[r] for r in rows)]

    def stats(self) -> dict[str, Any]:
        """Counts, segments, full-vector storage and codec drift figures of the current commit."""
        m = self._snap.manifest
        return {
            "generation": m.generation,
            "documents": len(self),
            "passages": self._snap.live_rows,
            "segments": len(m.segments),
            "deleted_rows": sum(s.num_deleted for s in m.segments),
            "tokens": sum(s.num_tokens for s in m.segments),
            "dim": m.dim,
            "nbits": m.nbits,
            "num_centroids": m.num_centroids,
            "model": (m.model or {}).get("name_or_path"),
            "full_vectors": m.config.full_vectors,
            "full_vectors_bytes": sum(s.files[fullvec.NAME]["size"] for s in m.segments if fullvec.NAME in s.files),
            "drift": {
                "build": fit_figures(m.drift.get("build")),
                "added": fit_figures(m.drift.get("added")),
            },
        }

    def search(
        self,
        queries: str | list[str],
        k: int = 10,
        languages=None,
        where: dict | None = None,
        params=None,
    ) -> list[list[Hit]]:
        """Ranked documents per query (document score = its best passage's MaxSim)."""
        qs = [queries] if isinstance(queries, str) else list(queries)
        if not qs or any(not isinstance(q, str) or not q.strip() for q in qs):
            raise InputError("queries must be non-empty strings")
        _check_k(k)
        Q = self.encoder.encode_queries(qs, languages=languages, show_progress=False)
        return self.search_embeddings(Q, k=k, where=where, params=params)

    def search_embeddings(self, Q, k: int = 10, where: dict | None = None, params=None) -> list[list[Hit]]:
        """Like search, from query token vectors (list of float32 [Lq, dim])."""
        _check_k(k)
        if where is not None and not isinstance(where, dict):
            raise InputError("where must be a dict of field -> value (or list of values)")
        # one snapshot for the whole call: the results reflect a single commit
        return self._snap.search([np.asarray(q, dtype=np.float32) for q in Q], k, where, params)

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def batch(self) -> Iterator["Index"]:
        """Group several add/delete/upsert calls into one commit (nothing is committed when the
        block raises)."""
        self._begin()
        self._batch_depth += 1
        try:
            yield self
        except BaseException:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self._rollback()
            raise
        self._batch_depth -= 1
        if self._batch_depth == 0:
            self._commit()

    def add(self, documents: Iterable[Any], embeddings=None, languages=None, show_progress=None) -> WriteSummary:
        """Add new documents (an id already in the index is an InputError: use upsert)."""
        return self._write(documents, embeddings, languages, show_progress, replace=False)

    def upsert(self, documents: Iterable[Any], embeddings=None, languages=None, show_progress=None) -> WriteSummary:
        """Add documents, replacing every passage of those whose id is already in the index."""
        return self._write(documents, embeddings, languages, show_progress, replace=True)

    def delete(self, ids: Iterable[str] | str) -> WriteSummary:
        """Delete documents (all their passages) by external id; unknown ids are counted."""
        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        with self._op() as (work, summary):
            for doc_id in dict.fromkeys(ids):
                if work.delete_id(doc_id):
                    summary.deleted += 1
                else:
                    summary.not_found += 1
        return summary

    def optimize(self) -> WriteSummary:
        """Merge all segments into one, dropping deleted rows (one commit)."""
        with self._op() as (work, summary):
            M.merge_segments(work, summary)
        return summary

    def reindex(self, force: bool = False, embeddings=None) -> ReindexReport:
        """Retrain the codec and recompress everything (one commit) when the drift figures say
        it is worth it, or when ``force``. Vectors: ``embeddings`` (a function from a list of
        (id, passage number) to token vectors) when given, else the stored originals of an index
        built with ``IndexConfig(full_vectors=True)``, else the stored texts re-encoded with the
        encoder, else (an index built from embeddings, no model) the decompressed codes, which
        costs quality (a second quantisation; see benchmarks/README.md)."""
        m = self._snap.manifest
        reason = M.reindex_reason(m)
        if not force and reason is None:
            return ReindexReport(False, "codec still fits the index (see drift)", self.stats()["drift"], m.generation)
        encode = None
        if embeddings is None and not m.config.full_vectors and (m.model or self._encoder is not None):
            encode = W.make_encode(self.encoder, None, m.config.encode_batch_size)
        with self._op() as (work, summary):
            M.retrain_all(work, summary, encode, embeddings)
        return ReindexReport(True, reason or "forced", self.stats()["drift"], self.generation)

    def verify(self) -> list[str]:
        """Check every file's checksum and the index invariants; [] when all is well."""
        from colxm.index.verify import verify

        return verify(self.path)

    def close(self) -> None:
        """Release the writer lock (if held) and the open files."""
        if self._work is not None:
            self._rollback()
        self._lock.release()
        self._snap.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r}, generation={self.generation}, documents={len(self)})"

    # ------------------------------------------------------------------ internals
    def _write(self, documents, embeddings, languages, show_progress, replace: bool) -> WriteSummary:
        items = list(_items(documents, embeddings, languages, show_progress, "adding"))
        encoder = self.encoder if embeddings is None else None
        with self._op() as (work, summary):
            W.add_items(work, items, encoder, languages, summary, replace=replace)
        return summary

    def _begin(self) -> None:
        if self._work is not None:
            return
        if not self._lock.held:
            self._lock.acquire()
            self.refresh()  # another writer may have committed before we took the lock
            W.collect_garbage(self.path, self._snap.manifest)
        self._work = W.Work(self.path, self._snap)

    @contextlib.contextmanager
    def _op(self):
        self._begin()
        assert self._work is not None
        summary = WriteSummary()
        t0 = time.perf_counter()
        try:
            yield self._work, summary
        except BaseException:
            if self._batch_depth == 0:
                self._rollback()
            raise
        if self._batch_depth == 0:
            self._commit()
        summary.generation = self._work.manifest.generation if self._work else self.generation
        summary.seconds = time.perf_counter() - t0
        self.last_summary = summary

    def _commit(self) -> None:
        work, self._work = self._work, None
        if work is None or not work.changed:
            if work is not None:
                work.discard()
            return
        work.commit()
        # the old snapshot is not closed: a search in another thread may still be using it
        self._snap = open_snapshot(self.path, self._snap)
        W.collect_garbage(self.path, self._snap.manifest)
        only = M.merge_candidates(self._snap.manifest)
        if only:
            work = W.Work(self.path, self._snap)
            try:
                M.merge_segments(work, WriteSummary(), only)
                work.commit()
            except Exception as e:  # noqa: BLE001 - the user's commit is done; merging can wait
                work.discard()
                log.warning("automatic segment merge failed (%s); run optimize() later", e)
                return
            self._snap = open_snapshot(self.path, self._snap)
            W.collect_garbage(self.path, self._snap.manifest)

    def _rollback(self) -> None:
        work, self._work = self._work, None
        if work is not None:
            work.discard()


def _items(documents, embeddings, languages, show_progress, desc):
    records = iter_records(documents)
    if isinstance(languages, str) and languages != "auto":
        records = (dataclasses.replace(r, language=r.language or languages) for r in records)
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    if show_progress:
        from tqdm.auto import tqdm

        records = tqdm(records, total=_len(documents), unit="doc", desc=desc)
    if embeddings is None:
        return ((r, None) for r in records)
    return _zip_strict(records, embeddings)


def _zip_strict(records, embeddings):
    emb = iter(embeddings)
    for r in records:
        try:
            yield r, next(emb)
        except StopIteration:
            raise InputError("fewer embeddings than documents") from None
    if next(emb, None) is not None:
        raise InputError("more embeddings than documents")


def _len(x) -> int | None:
    try:
        return len(x)
    except TypeError:
        return None


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, not {k!r}")


def _check_encoder(encoder, dim: int) -> None:
    if getattr(encoder, "dim", dim) != dim:
        raise InputError(f"the encoder produces {encoder.dim}-d vectors but the index holds {dim}-d ones")
