"""One committed state of an index opened for reading: manifest, codec, memory-mapped segments.

A snapshot never changes; a reader picks up a later commit by opening a new snapshot
(``Index.refresh``). Opening retries when a commit lands in the middle of it (a file of the
generation it started reading may have been collected as garbage by then).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from colxm.errors import IndexFormatError, InputError
from colxm.index.manifest import Manifest, read_manifest
from colxm.index.segment import OpenSegment, open_segment
from colxm.store import Hit

log = logging.getLogger(__name__)

_OPEN_RETRIES = 50


def load_codec(root: Path, manifest: Manifest):
    from colxm.index.codec import ResidualCodec

    arrays = {}
    for name, rec in manifest.codec_files.items():
        path = root / rec["path"]
        if not path.is_file():
            raise IndexFormatError(f"codec file {rec['path']} is missing; the index is corrupted")
        if path.stat().st_size != rec["size"]:
            raise IndexFormatError(f"codec file {rec['path']} is truncated or altered")
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise IndexFormatError(f"codec file {rec['path']} is not a valid array ({e})") from None
    try:
        codec = ResidualCodec.from_arrays(arrays)
    except Exception as e:  # noqa: BLE001 - any failure here means a corrupted codec
        raise IndexFormatError(f"the index's codec cannot be loaded ({e})") from None
    if codec.table.shape != (manifest.num_centroids, manifest.dim):
        raise IndexFormatError(
            f"codec centroids have shape {codec.table.shape}, the manifest says "
            f"({manifest.num_centroids}, {manifest.dim})"
        )
    return codec


class Snapshot:
    def __init__(self, root: Path, manifest: Manifest, previous: "Snapshot | None" = None):
        """``previous``: the snapshot this one replaces; when the codec files are the same (path,
        size and sha256), its codec and centroid scorer are reused instead of loaded and built
        again (the scorer's coarse lists take ~0.5 s at 32,768 centroids)."""
        self.root = root
        self.manifest = manifest
        same_codec = previous is not None and previous.manifest.codec_files == manifest.codec_files
        self.codec = previous.codec if same_codec else load_codec(root, manifest)
        self._scorer = previous._searcher.scorer if same_codec and previous._searcher is not None else None
        self.segments: list[OpenSegment] = []
        try:
            for rec in manifest.segments:
                self.segments.append(
                    open_segment(root, rec, manifest.dim, manifest.nbits, manifest.num_centroids,
                                 full_vectors=manifest.config.full_vectors)
                )
        except BaseException:
            self.close()
            raise
        self._searcher = None
        self._id_map: dict[str, tuple[int, list[int]]] | None = None
        self._multi: bool | None = None
        self._live_rows: int | None = None
        self._filters: dict[str, list[np.ndarray]] = {}

    @property
    def generation(self) -> int:
        return self.manifest.generation

    def close(self) -> None:
        for seg in self.segments:
            seg.close()
        self.segments = []

    @property
    def searcher(self):
        if self._searcher is None:
            from colxm.search import SegmentData, Searcher

            data = [
                SegmentData(
                    codes=s.codes,
                    residuals=s.residuals,
                    doclens=s.doclens,
                    doc_offsets=s.doc_offsets,
                    ivf_offsets=s.ivf_offsets,
                    ivf_docs=s.ivf_docs,
                    live=s.live,
                    vectors=s.vectors,
                )
                for s in self.segments
            ]
            self._searcher = Searcher(self.codec, data, scorer=self._scorer)
        return self._searcher

    @property
    def id_map(self) -> dict[str, tuple[int, list[int]]]:
        """Live external id -> (segment index, its live rows), in index order."""
        if self._id_map is None:
            out: dict[str, tuple[int, list[int]]] = {}
            for si, seg in enumerate(self.segments):
                live = seg.live
                for row, doc_id in seg.store.id_rows():
                    if live[row]:
                        out.setdefault(doc_id, (si, []))[1].append(row)
            self._id_map = out
        return self._id_map

    @property
    def multi_passage(self) -> bool:
        """Whether any document has more than one passage (search then over-fetches)."""
        if self._multi is None:
            self._multi = any(
                seg.store._con.execute("SELECT 1 FROM docs WHERE passage > 0 LIMIT 1").fetchone()
                for seg in self.segments
            )
        return self._multi

    @property
    def live_rows(self) -> int:
        if self._live_rows is None:
            self._live_rows = int(sum(int(s.live.sum()) for s in self.segments))
        return self._live_rows

    def allowed(self, where: dict) -> list[np.ndarray]:
        """Per-segment masks of the live rows matching a metadata filter (cached per filter:
        a snapshot never changes)."""
        key = json.dumps(where, sort_keys=True, default=str)
        masks = self._filters.get(key)
        if masks is None:
            masks = [seg.store.filter_mask(where) & seg.live for seg in self.segments]
            if len(self._filters) >= 32:
                self._filters.pop(next(iter(self._filters)))
            self._filters[key] = masks
        return masks


    def search(self, Q: list[np.ndarray], k: int, where: dict | None, params) -> list[list["Hit"]]:
        """Documents ranked by their best passage. Over-fetches passages (4x k when documents
        have several) and doubles until k distinct documents are found or nothing is left."""
        for q in Q:
            if q.ndim != 2 or q.shape[1] != self.manifest.dim:
                raise InputError(f"query embeddings must be [Lq, {self.manifest.dim}], got {q.shape}")
        total = self.live_rows
        if total == 0:
            return [[] for _ in Q]
        allowed = None
        if where:
            allowed = self.allowed(where)
        kp = min(k * 4 if self.multi_passage else k, total)
        out: list[list[Hit] | None] = [None] * len(Q)
        todo = list(range(len(Q)))
        while todo:
            res = self.searcher.search([Q[i] for i in todo], k=kp, params=params, allowed=allowed)
            again = []
            for qi, hits in zip(todo, res):
                docs = self._aggregate(hits)
                if len(docs) >= k or len(hits) < kp or kp >= total:
                    out[qi] = docs[:k]
                else:
                    again.append(qi)
            todo, kp = again, min(kp * 2, total)
        return out  # type: ignore[return-value]

    def _aggregate(self, hits) -> list[Hit]:
        """Passage hits (segment, row, score), best first -> documents by best passage."""
        by_seg: dict[int, list[int]] = {}
        for si, row, _ in hits:
            by_seg.setdefault(int(si), []).append(int(row))
        rows = {si: self.segments[si].store.fetch(r) for si, r in by_seg.items()}
        out: dict[str, Hit] = {}
        for si, row, score in hits:
            doc_id, passage, text, lang, meta = rows[int(si)][int(row)]
            if doc_id not in out:
                out[doc_id] = Hit(doc_id, float(score), text, lang, meta, passage)
        return list(out.values())


def open_snapshot(root: Path, previous: Snapshot | None = None) -> Snapshot:
    """Open the current commit, retrying when a newer commit replaces it while we open
    (``previous``: the snapshot it replaces, see Snapshot)."""
    last: IndexFormatError | None = None
    for _ in range(_OPEN_RETRIES):
        manifest = read_manifest(root)
        try:
            return Snapshot(root, manifest, previous)
        except IndexFormatError as e:
            last = e
            try:
                now = read_manifest(root).generation
            except IndexFormatError:
                raise e from None
            if now == manifest.generation:
                raise
            log.debug("commit %d replaced by %d while opening; retrying", manifest.generation, now)
    raise last  # type: ignore[misc]
