"""The index manifest: the commit point that names every file of one committed state.

``manifest.json`` is replaced atomically (write temp, fsync, rename, fsync folder); whatever it
names is complete and immutable, whatever it does not name is garbage a writer may delete.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colxm.errors import IndexFormatError, InputError
from colxm.index.atomic import write_json_atomic

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "colxm-index"
# 2: segments may store local codes (SegmentRecord.codes), int8 centroid tables
# 3: segments store the original vectors (IndexConfig.full_vectors); written only by such indexes,
#    so that an older colxm refuses them instead of merging their vectors away
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


@dataclass
class IndexConfig:
    """How an index is built and maintained (saved in the manifest)."""

    nbits: int = 2
    num_centroids: int | None = None  # None: ColBERTv2 rule on the (estimated) number of vectors
    # k-means trains on a uniform random sample of tokens drawn over the entire stream, of up to
    # 128 vectors per centroid and never more than this many (float16 while streaming, up to 1.5x
    # this many held between prunes: 2 bytes x dim each, 1.5 GB at dim 128; then float32 for
    # k-means, 2 GB). A collection of up to ~4M tokens is trained on whole, as colbert-ai nearly
    # does: its tokens are then reconstructed from centroids fitted to them (benchmarks/README.md)
    kmeans_sample_vectors: int = 1 << 22
    chunk_documents: int = 2048  # documents encoded and compressed per chunk while building
    encode_batch_size: int = 32
    passage_max_tokens: int | None = None  # split long documents into passages when set
    passage_overlap: int = 0
    seed: int = 0
    # a segment is closed at this many tokens: finishing one (inverted lists) needs ~40 bytes
    # per token, so this bounds the memory of building and merging
    segment_max_tokens: int = 1 << 23
    # after a commit that leaves more segments than this, the smallest are merged (own commit)
    max_segments: int = 32
    # reindex() retrains the codec when the vectors added since training are at least this share
    # of the index and their codec fit is measurably worse than at build time:
    reindex_min_added_share: float = 0.1
    reindex_outside_ratio: float = 2.0
    reindex_error_ratio: float = 1.5  # same-distribution additions measured 0.98-1.35x on ddtp/it
    # also store every token vector in float16 for an exact final re-scoring (search's
    # full_rerank); costs 2 x dim bytes per vector on disk, 8x the residuals at 2 bits
    full_vectors: bool = False

    def __post_init__(self) -> None:
        if self.nbits not in (1, 2, 4):
            raise InputError(f"nbits must be 1, 2 or 4, not {self.nbits!r}")
        if self.num_centroids is not None and self.num_centroids < 1:
            raise InputError("num_centroids must be a positive integer or None")
        if self.chunk_documents < 1 or self.kmeans_sample_vectors < 1:
            raise InputError("chunk_documents and kmeans_sample_vectors must be positive")
        if self.passage_max_tokens is not None and self.passage_max_tokens < 8:
            raise InputError("passage_max_tokens must be at least 8 (or None for no splitting)")
        if self.passage_overlap < 0:
            raise InputError("passage_overlap must be >= 0")
        if not isinstance(self.full_vectors, bool):
            raise InputError(f"full_vectors must be True or False, not {self.full_vectors!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IndexConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class SegmentRecord:
    """One immutable segment folder and the tombstone file of the current generation."""

    id: str
    num_rows: int  # passages (rows) in the segment, deleted or not
    num_tokens: int
    files: dict[str, dict[str, Any]]  # array/store name -> {"path", "size", "sha256"}
    tombstones: dict[str, Any] | None = None  # {"path", "size", "sha256"} of deleted local rows
    num_deleted: int = 0
    generation: int = 0  # generation that created the segment
    codes: str = "global"  # "local": codes.npy holds per-document local codes (format 2)


@dataclass
class Manifest:
    generation: int
    dim: int
    nbits: int
    num_centroids: int
    codec_files: dict[str, dict[str, Any]]
    segments: list[SegmentRecord]
    config: IndexConfig
    model: dict[str, Any] | None = None  # {"name_or_path", "loader"} to reload the encoder
    encoder_config: dict[str, Any] | None = None
    drift: dict[str, Any] = field(default_factory=dict)
    next_segment: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["format"] = FORMAT_NAME
        d["format_version"] = FORMAT_VERSION if self.config.full_vectors else 2
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "manifest") -> "Manifest":
        if d.get("format") != FORMAT_NAME:
            raise IndexFormatError(f"{where} is not a colxm index manifest")
        if d.get("format_version") not in READABLE_VERSIONS:
            raise IndexFormatError(
                f"{where} has format version {d.get('format_version')!r}; this colxm reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}: rebuild the index or upgrade colxm"
            )
        try:
            segments = [SegmentRecord(**s) for s in d["segments"]]
            return cls(
                generation=int(d["generation"]),
                dim=int(d["dim"]),
                nbits=int(d["nbits"]),
                num_centroids=int(d["num_centroids"]),
                codec_files=dict(d["codec_files"]),
                segments=segments,
                config=IndexConfig.from_dict(d["config"]),
                model=d.get("model"),
                encoder_config=d.get("encoder_config"),
                drift=dict(d.get("drift") or {}),
                next_segment=int(d.get("next_segment", 0)),
                created_at=float(d.get("created_at", 0.0)),
                updated_at=float(d.get("updated_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"{where} is malformed ({e}); the index is corrupted") from None

    def referenced_paths(self) -> set[str]:
        """Every path (relative to the index root) this commit refers to."""
        paths = {r["path"] for r in self.codec_files.values()}
        for s in self.segments:
            paths.update(r["path"] for r in s.files.values())
            if s.tombstones:
                paths.add(s.tombstones["path"])
        return paths


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """Read and validate ``<folder>/manifest.json``; IndexFormatError when it is not an index."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise IndexFormatError(f"{folder} does not exist or is not a folder; build an index first")
    if not path.is_file():
        raise IndexFormatError(
            f"{folder} is not a colxm index (no {MANIFEST_NAME}); build one with `colxm index`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{path} cannot be read ({e}); the index is corrupted") from None
    if not isinstance(data, dict):
        raise IndexFormatError(f"{path} is not a JSON object; the index is corrupted")
    return Manifest.from_json(data, where=str(path))


def write_manifest(folder: str | os.PathLike, manifest: Manifest) -> None:
    """The commit: atomically replace the manifest (every file it names must already be durable)."""
    manifest.updated_at = time.time()
    write_json_atomic(Path(folder) / MANIFEST_NAME, manifest.to_json())
