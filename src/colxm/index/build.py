"""Creating an index folder: a complete first commit written in a temp folder next to the
target and moved into place (an existing index is swapped out atomically), from a stream of
documents (build) or from vectors compressed elsewhere (import)."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from colxm.errors import IndexFormatError, InputError
from colxm.index.atomic import exchange_dirs, fsync_dir, fsync_tree
from colxm.index.lock import WriterLock
from colxm.index.manifest import MANIFEST_NAME, IndexConfig, Manifest, read_manifest, write_manifest
from colxm.index.pipeline import WriteSummary, iter_chunks
from colxm.index.writer import SegmentsOut, Work, make_encode, make_split, trained_stream

_IMPORT_ROWS = 8192


def build_into(root: Path, items, encoder, config: IndexConfig, languages) -> WriteSummary:
    """Write a complete new index (generation 1) into the empty folder ``root``."""
    summary = WriteSummary()
    encode = make_encode(encoder, languages, config.encode_batch_size) if encoder is not None else None
    dim = int(encoder.dim) if encoder is not None else None
    chunks = iter_chunks(items, encode, make_split(encoder, config), config.chunk_documents, dim, summary)
    with trained_stream(chunks, config, root) as (codec, threshold, baseline, chunks):
        m = Manifest(generation=0, dim=int(codec.dim), nbits=config.nbits,
                     num_centroids=int(codec.num_centroids), codec_files={}, segments=[],
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
    if config.full_vectors:
        raise InputError("an imported index has no original vectors: full_vectors needs a build "
                         "from texts or embeddings")
    doclens = np.asarray(doclens, dtype=np.int64)
    offsets = np.zeros(len(doclens) + 1, dtype=np.int64)
    np.cumsum(doclens, out=offsets[1:])
    if offsets[-1] != len(codes) or len(codes) != len(residuals):
        raise InputError(f"doclens sum to {int(offsets[-1])}, but there are {len(codes)} codes and "
                         f"{len(residuals)} residual rows")
    m = Manifest(generation=0, dim=int(codec.dim), nbits=int(codec.nbits),
                 num_centroids=int(codec.num_centroids), codec_files={}, segments=[],
                 config=dataclasses.replace(config, nbits=int(codec.nbits)), model=model)
    work = Work(root, manifest=m, codec=codec)
    m = work.manifest  # Work keeps its own copy
    work.set_codec(codec, float("inf"))
    m.drift = {}  # no raw vectors: no drift baseline (reindex only when forced)
    recs = iter(records)

    def chunks():
        for a in range(0, len(doclens), _IMPORT_ROWS):
            b = min(len(doclens), a + _IMPORT_ROWS)
            rows = []
            for _ in range(a, b):
                try:
                    rows.append((next(recs), 0))
                except StopIteration:
                    raise InputError(f"fewer documents than the {len(doclens)} compressed rows") from None
            summary.documents += len(rows)
            t0, t1 = int(offsets[a]), int(offsets[b])
            yield np.asarray(codes[t0:t1]), np.asarray(residuals[t0:t1]), doclens[a:b], rows

    out = SegmentsOut(work)
    seen: set[str] = set()
    try:
        for c, r, d, rows in chunks():
            for rec, _ in rows:
                if rec.id in seen:
                    raise InputError(f"document id {rec.id!r} occurs twice in the imported index")
                seen.add(rec.id)
            out.append(c, r, d, rows=rows)
        if next(recs, None) is not None:
            raise InputError(f"more documents than the {len(doclens)} compressed rows")
        out.close()
    except BaseException:
        out.abort()
        raise
    summary.indexed = summary.passages = len(seen)
    summary.generation = work.commit()


def model_reference(encoder) -> dict | None:
    if encoder is None:
        return None
    name = str(getattr(encoder, "name_or_path", "") or "")
    if name and Path(name).exists():
        name = str(Path(name).resolve())
    return {"name_or_path": name, "loader": "colxm.modeling.encoder.Encoder.from_pretrained"}


def encoder_config(encoder) -> dict | None:
    cfg = getattr(encoder, "config", None)
    if cfg is None:
        return None
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else getattr(cfg, "to_dict", dict)()
    return json.loads(json.dumps(d, default=str))


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
