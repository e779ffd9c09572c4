"""One immutable segment on disk: compressed token vectors, per-document lengths, inverted
lists and the segment's document store.

Layout of ``segments/<id>/``: codes.npy [T] (format 2, ``SegmentRecord.codes == "local"``: each
token's position among its document's sorted unique centroids, i.e. within the document's entries
of the inverted lists, uint8 when every document has at most 256 distinct centroids, else uint16;
format 1 segments hold global codes, uint16 when K <= 65536 centroids, else int32),
residuals.npy uint8 [T, dim*nbits/8], doclens.npy int32 [N], doc_offsets.npy int64 [N+1],
ivf_offsets.npy int64 [K+1], ivf_docs.npy [nnz] (uint16 when N <= 65536 rows, else int32),
docs.sqlite, and with ``IndexConfig.full_vectors`` vectors.npy float16 [T, dim] (``fullvec``).
A segment is written in a temp folder by SegmentWriter (streaming: chunks are appended to the
.npy files behind a reserved header, written once their length is known, so memory stays bounded
and each array is written once), made durable, then renamed into place before the manifest that
names it is committed.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from colxm.errors import IndexFormatError
from colxm.index import fullvec
from colxm.index.atomic import file_record, fsync_tree
from colxm.index.fullvec import FullVectors
from colxm.index.manifest import SegmentRecord
from colxm.store import Record, StoreReader, StoreWriter

ARRAYS = ("codes", "residuals", "doclens", "doc_offsets", "ivf_offsets", "ivf_docs")
STORE_FILE = "docs.sqlite"
_HEADER_BYTES = 128  # reserved in front of each streamed .npy for its header (a multiple of 64)


class SegmentWriter:
    """Streams compressed chunks into a new segment folder; ``finish`` writes the .npy files."""

    def __init__(self, folder: str | os.PathLike, dim: int, nbits: int, num_centroids: int,
                 full_vectors: bool = False):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=False)
        self.dim = dim
        self.packed = dim * nbits // 8
        self.num_centroids = num_centroids
        self.code_dtype = code_dtype(num_centroids)
        self._codes = _open_streamed(self.folder / "codes.global.npy")
        self._residuals = _open_streamed(self.folder / "residuals.npy")
        self._doclens = _open_streamed(self.folder / "doclens.npy")
        self._vectors = _open_streamed(self.folder / f"{fullvec.NAME}.npy") if full_vectors else None
        self.store = StoreWriter(self.folder / STORE_FILE)
        self.num_rows = 0
        self.num_tokens = 0

    def append(
        self,
        codes: np.ndarray,
        residuals: np.ndarray,
        doclens: np.ndarray,
        rows: Sequence[tuple[Record, int]] | None = None,
        raw_rows: Sequence[tuple] | None = None,
        vectors: np.ndarray | None = None,
    ) -> None:
        """Append rows: their tokens' codes/residuals (and original vectors when the segment
        keeps them), lengths and store rows (records or raw)."""
        doclens = np.asarray(doclens, dtype=np.int32)
        n = len(rows) if rows is not None else len(raw_rows or ())
        if n != len(doclens) or int(doclens.sum()) != len(codes) or len(codes) != len(residuals):
            raise ValueError("segment chunk is inconsistent (rows, doclens, codes, residuals)")
        if self._vectors is not None:
            if vectors is None or vectors.shape != (len(codes), self.dim):
                raise ValueError("a full-vectors segment needs one original vector per token")
            self._vectors.write(np.ascontiguousarray(vectors, dtype=fullvec.DTYPE).tobytes())
        self._codes.write(np.ascontiguousarray(codes, dtype=self.code_dtype).tobytes())
        self._residuals.write(np.ascontiguousarray(residuals, dtype=np.uint8).tobytes())
        self._doclens.write(doclens.tobytes())
        if rows is not None:
            self.store.add(rows)
        else:
            self.store.add_raw(raw_rows)
        self.num_rows += n
        self.num_tokens += len(codes)

    def finish(self) -> dict[str, int]:
        """Write the .npy arrays and inverted lists, fsync everything; returns counts."""
        from colxm.index.ivf import build_ivf, local_codes

        for f in self._raw_files():
            f.close()
        self.store.close()
        t, n = self.num_tokens, self.num_rows
        _write_header(self.folder / "codes.global.npy", self.code_dtype, (t,))
        _write_header(self.folder / "residuals.npy", np.uint8, (t, self.packed))
        _write_header(self.folder / "doclens.npy", np.int32, (n,))
        if self._vectors is not None:
            _write_header(self.folder / f"{fullvec.NAME}.npy", fullvec.DTYPE, (t, self.dim))
        doclens = np.load(self.folder / "doclens.npy")
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(doclens, out=offsets[1:])
        np.save(self.folder / "doc_offsets.npy", offsets)
        codes = np.load(self.folder / "codes.global.npy")
        ivf_offsets, ivf_docs = build_ivf(codes, doclens, self.num_centroids)
        np.save(self.folder / "codes.npy", local_codes(codes, doclens, self.num_centroids))
        del codes
        (self.folder / "codes.global.npy").unlink()
        np.save(self.folder / "ivf_offsets.npy", np.asarray(ivf_offsets, dtype=np.int64))
        np.save(self.folder / "ivf_docs.npy", np.asarray(ivf_docs, dtype=code_dtype(n)))
        fsync_tree(self.folder)
        return {"num_rows": n, "num_tokens": t, "codes": "local", "vectors": self._vectors is not None}

    def _raw_files(self) -> list:
        return [f for f in (self._codes, self._residuals, self._doclens, self._vectors) if f is not None]

    def abort(self) -> None:
        for f in self._raw_files():
            f.close()
        try:
            self.store.close()
        except Exception:  # noqa: BLE001 - best effort cleanup of a temp folder
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def code_dtype(count: int) -> type:
    """uint16 when every value fits (saves 2 bytes per token / posting), else int32."""
    return np.uint16 if count <= 1 << 16 else np.int32


def _open_streamed(path: Path):
    """A new .npy file with ``_HEADER_BYTES`` reserved for its header; the caller appends the raw
    little-endian array data, then calls :func:`_write_header`."""
    f = open(path, "wb")
    f.write(b"\0" * _HEADER_BYTES)
    return f


def _write_header(path: Path, dtype, shape: tuple[int, ...]) -> None:
    """Write the .npy (format 1.0) header of ``shape`` into the space :func:`_open_streamed`
    reserved, padded with spaces to exactly that size (numpy's own padding rule: a multiple of 64)."""
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (
        np.lib.format.dtype_to_descr(np.dtype(dtype)), tuple(int(x) for x in shape))
    room = _HEADER_BYTES - 10  # magic (6), version (2), header length (2)
    if len(text) + 1 > room:
        raise ValueError(f"npy header for shape {shape} does not fit in {_HEADER_BYTES} bytes")
    body = (text + " " * (room - len(text) - 1) + "\n").encode("latin1")
    with open(path, "r+b") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body)


def segment_record(root: Path, seg_id: str, generation: int, counts: dict[str, int]) -> SegmentRecord:
    """Manifest record of a finished segment already moved to ``root/segments/<seg_id>``."""
    folder = root / "segments" / seg_id
    names = (*ARRAYS, fullvec.NAME) if counts.get("vectors") else ARRAYS
    files = {name: file_record(folder / f"{name}.npy", root) for name in names}
    files["store"] = file_record(folder / STORE_FILE, root)
    return SegmentRecord(
        id=seg_id,
        num_rows=counts["num_rows"],
        num_tokens=counts["num_tokens"],
        files=files,
        generation=generation,
        codes=counts.get("codes", "global"),
    )


@dataclass
class OpenSegment:
    """A committed segment opened for reading: memory-mapped arrays, live mask, store."""

    record: SegmentRecord
    codes: np.ndarray  # global codes; for local-code segments a LocalCodes view (indexes the same)
    residuals: np.ndarray
    doclens: np.ndarray
    doc_offsets: np.ndarray
    ivf_offsets: np.ndarray
    ivf_docs: np.ndarray
    live: np.ndarray  # bool [N]
    store: StoreReader
    vectors: FullVectors | None = None  # the original vectors (IndexConfig.full_vectors)

    def close(self) -> None:
        self.store.close()
        if self.vectors is not None:
            self.vectors.close()


def _checked_path(root: Path, rec: dict, what: str) -> Path:
    """The file of a manifest record, after checking that it exists with the recorded size."""
    path = root / rec["path"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise IndexFormatError(f"{what}: file {rec['path']} is missing; the index is corrupted") from None
    if size != rec["size"]:
        raise IndexFormatError(
            f"{what}: file {rec['path']} has {size} bytes, the manifest says {rec['size']} "
            "(truncated or altered); run `colxm verify` on the index"
        )
    return path


def _load(root: Path, rec: dict, what: str) -> np.ndarray:
    path = _checked_path(root, rec, what)
    try:
        # a plain ndarray view of the map (the map stays alive as its base): indexing a np.memmap
        # runs Python code per result (__array_finalize__), which holds the GIL on every gather
        return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
    except (ValueError, OSError, EOFError) as e:
        raise IndexFormatError(f"{what}: file {rec['path']} is not a valid array ({e})") from None


def open_segment(root: Path, rec: SegmentRecord, dim: int, nbits: int, num_centroids: int,
                 full_vectors: bool = False) -> OpenSegment:
    """Memory-map one segment with cheap consistency checks (sizes and shapes, no checksums);
    with ``full_vectors`` (the index's config) also open its vectors.npy for positioned reads."""
    where = f"segment {rec.id}"
    missing = [n for n in required_files(full_vectors) if n not in rec.files]
    if missing:
        extra = (" (the index stores full vectors: IndexConfig.full_vectors)"
                 if fullvec.NAME in missing else "")
        raise IndexFormatError(f"{where}: the manifest lists no file for {missing}{extra}; "
                               "the index is corrupted")
    arr = {name: _load(root, rec.files[name], where) for name in ARRAYS}
    n, t = rec.num_rows, rec.num_tokens
    local = rec.codes == "local"
    expect = {
        "codes": ((t,), code_dtype(num_centroids)),
        "residuals": ((t, dim * nbits // 8), np.uint8),
        "doclens": ((n,), np.int32),
        "doc_offsets": ((n + 1,), np.int64),
        "ivf_offsets": ((num_centroids + 1,), np.int64),
    }
    if rec.codes not in ("local", "global"):
        raise IndexFormatError(f"{where}: unknown codes layout {rec.codes!r}; upgrade colxm")
    if local:
        expect["codes"] = ((t,), arr["codes"].dtype if arr["codes"].dtype in (np.uint8, np.uint16) else np.uint8)
    for name, (shape, dtype) in expect.items():
        a = arr[name]
        if a.shape != shape or a.dtype != dtype:
            raise IndexFormatError(
                f"{where}: {name} has shape {a.shape} {a.dtype}, expected {shape} {np.dtype(dtype)}"
            )
    if arr["ivf_docs"].ndim != 1 or arr["ivf_docs"].dtype != code_dtype(n):
        raise IndexFormatError(f"{where}: ivf_docs must be a 1-d {np.dtype(code_dtype(n))} array")
    live = np.ones(n, dtype=bool)
    if rec.tombstones:
        dead = np.asarray(_load(root, rec.tombstones, where))
        if dead.ndim != 1 or (len(dead) and (dead.min() < 0 or dead.max() >= n)):
            raise IndexFormatError(f"{where}: tombstones {rec.tombstones['path']} are out of range")
        live[dead] = False
    store_rec = rec.files["store"]
    path = root / store_rec["path"]
    if not path.is_file() or path.stat().st_size != store_rec["size"]:
        raise IndexFormatError(f"{where}: document store {store_rec['path']} is missing or truncated")
    store = StoreReader(path)
    if store.num_rows != n:
        store.close()
        raise IndexFormatError(f"{where}: document store has {store.num_rows} rows, segment has {n}")
    if local:
        from colxm.index.ivf import LocalCodes

        arr["codes"] = LocalCodes(arr["codes"], arr["doc_offsets"], arr["ivf_offsets"], arr["ivf_docs"])
    vectors = None
    if full_vectors:
        try:
            vectors = FullVectors(_checked_path(root, rec.files[fullvec.NAME], where), t, dim, where)
        except IndexFormatError:
            store.close()
            raise
    return OpenSegment(rec, live=live, store=store, vectors=vectors, **arr)


def required_files(full_vectors: bool) -> tuple[str, ...]:
    """Names every segment record of an index must list."""
    return (*ARRAYS, "store", *((fullvec.NAME,) if full_vectors else ()))


def live_token_mask(seg: OpenSegment, start: int, stop: int) -> np.ndarray:
    """Token-level mask of live rows in the row range [start, stop)."""
    return np.repeat(seg.live[start:stop], np.asarray(seg.doclens[start:stop]))
