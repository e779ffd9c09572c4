"""Full check of an index: every file's size and sha256 against the manifest, then the
invariants between the files. Reports every problem found, one line each."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np

from colxm.errors import IndexFormatError
from colxm.index.atomic import sha256_file
from colxm.index.manifest import Manifest, read_manifest
from colxm.index.segment import open_segment, required_files

_ALIGN_SAMPLE = 4096  # original vectors checked against their stored codes per segment
_ALIGN_MIN_SHARE = 0.9  # aligned: ~99.5% (fast assignment); misaligned: about chance


def verify(path: str | os.PathLike) -> list[str]:
    """Problems found in the index at ``path``; an empty list means it is intact."""
    root = Path(path)
    try:
        manifest = read_manifest(root)
    except IndexFormatError as e:
        return [str(e)]
    problems = _check_files(root, manifest)
    if problems:
        return problems  # invariants are meaningless on damaged files
    codec, problems = _check_codec(root, manifest)
    seen: dict[str, str] = {}
    for rec in manifest.segments:
        problems += _check_segment(root, manifest, rec, seen, codec)
    return problems


def _check_files(root: Path, m: Manifest) -> list[str]:
    problems = []
    records = [("codec", name, r) for name, r in m.codec_files.items()]
    for s in m.segments:
        seg_dir = root / "segments" / s.id
        if not seg_dir.is_dir():
            problems.append(f"segment {s.id}: folder segments/{s.id} is missing")
        for name in required_files(m.config.full_vectors):
            if name not in s.files:
                problems.append(f"segment {s.id}: the manifest lists no {name} file")
        records += [(f"segment {s.id}", name, r) for name, r in s.files.items()]
        if s.tombstones:
            records.append((f"segment {s.id}", "tombstones", s.tombstones))
    for owner, name, r in records:
        p = root / r["path"]
        if not p.is_file():
            problems.append(f"{owner}: {name} file {r['path']} is missing")
            continue
        size = p.stat().st_size
        if size != r["size"]:
            problems.append(f"{owner}: {name} file {r['path']} has {size} bytes, expected {r['size']} (truncated?)")
        elif sha256_file(p) != r["sha256"]:
            problems.append(f"{owner}: {name} file {r['path']} fails its checksum (corrupted bytes)")
    return problems


def _check_codec(root: Path, m: Manifest):
    """(the codec or None, problems)."""
    from colxm.index.snapshot import load_codec

    try:
        return load_codec(root, m), []
    except IndexFormatError as e:
        return None, [f"codec: {e}"]


def _check_segment(root: Path, m: Manifest, rec, seen: dict[str, str], codec) -> list[str]:
    where = f"segment {rec.id}"
    try:
        seg = open_segment(root, rec, m.dim, m.nbits, m.num_centroids, full_vectors=m.config.full_vectors)
    except (IndexFormatError, sqlite3.DatabaseError) as e:
        return [f"{where}: {e}"]
    problems = []
    try:
        doclens = np.asarray(seg.doclens, dtype=np.int64)
        n, t = len(doclens), len(seg.codes)
        if doclens.sum() != t:
            problems.append(f"{where}: doclens sum to {int(doclens.sum())} but there are {t} codes")
        if (doclens <= 0).any():
            problems.append(f"{where}: {int((doclens <= 0).sum())} rows have no token vectors")
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(doclens, out=offsets[1:])
        if not np.array_equal(offsets, np.asarray(seg.doc_offsets)):
            problems.append(f"{where}: doc_offsets do not match doclens")
        try:
            codes = np.asarray(seg.codes)  # local-code segments decode through their inverted lists
        except IndexFormatError as e:
            problems.append(f"{where}: {e}")
        else:
            if t and (int(codes.max()) >= m.num_centroids):
                problems.append(f"{where}: codes reach {int(codes.max())}, only {m.num_centroids} centroids")
            elif t == int(doclens.sum()):
                from colxm.index.ivf import build_ivf

                ivf_off, ivf_docs = build_ivf(codes, doclens, m.num_centroids)
                if not (np.array_equal(ivf_off, seg.ivf_offsets) and np.array_equal(ivf_docs, seg.ivf_docs)):
                    problems.append(f"{where}: inverted lists do not match the codes (IVF inconsistent)")
                if seg.vectors is not None and codec is not None:
                    problems += _check_vectors(codec, seg, codes, where)
        dead = int((~seg.live).sum())
        if dead != rec.num_deleted:
            problems.append(f"{where}: {dead} tombstoned rows, the manifest says {rec.num_deleted}")
        if rec.tombstones:
            tomb = np.load(root / rec.tombstones["path"], allow_pickle=False)
            if len(np.unique(tomb)) != len(tomb):
                problems.append(f"{where}: tombstones repeat rows")
        problems += _check_store(seg, where, seen, rec.id)
    finally:
        seg.close()
    return problems


def _check_vectors(codec, seg, codes: np.ndarray, where: str) -> list[str]:
    """Original vectors aligned with the codes: on a sample of tokens, the stored code is (almost
    always) the vector's nearest centroid."""
    t = len(codes)
    if t == 0:
        return []
    pick = np.unique(np.random.default_rng(0).integers(0, t, size=min(t, _ALIGN_SAMPLE)))
    runs = np.split(pick, np.flatnonzero(np.diff(pick) > 1) + 1)
    vecs = np.concatenate([seg.vectors.rows(int(r[0]), int(r[-1]) + 1) for r in runs]).astype(np.float32)
    share = float(np.mean(codec.assign(vecs) == codes[pick]))
    if share < _ALIGN_MIN_SHARE:
        return [f"{where}: original vectors do not match the codes (only {share:.0%} of {len(pick)} sampled "
                "vectors lie nearest their stored centroid): vectors.npy is misaligned or altered"]
    return []


def _check_store(seg, where: str, seen: dict[str, str], seg_id: str) -> list[str]:
    problems = []
    rows = seg.store._con.execute("SELECT row, doc_id, passage FROM docs ORDER BY row").fetchall()
    if [r for r, _, _ in rows] != list(range(len(seg.doclens))):
        problems.append(f"{where}: document store rows are not 0..{len(seg.doclens) - 1}")
        return problems
    passages: dict[str, list[int]] = {}
    for row, doc_id, passage in rows:
        if seg.live[row]:
            passages.setdefault(doc_id, []).append(passage)
    for doc_id, ps in passages.items():
        if doc_id in seen:
            problems.append(f"{where}: document {doc_id!r} is also live in segment {seen[doc_id]} (duplicate id)")
        seen[doc_id] = seg_id
        if sorted(ps) != list(range(len(ps))):
            problems.append(f"{where}: document {doc_id!r} has passages {sorted(ps)} (duplicated or missing)")
    return problems
