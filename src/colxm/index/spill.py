"""Chunks parked on disk while a build reads its stream once to draw the k-means sample, then
replayed in order to be compressed with the trained codec.

Encoding is the expensive step, so the stream is never encoded twice; the price is a sequential
write and read of the token vectors (float32, so that the index holds exactly what compressing
them directly gives) and of the rows (JSON lines). Lives in the index's
``tmp/`` folder, which the next writer empties after a crash.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from colxm.index.pipeline import Chunk
from colxm.store import Record, dump_metadata


class ChunkSpill:
    """Append-only file of chunks (vectors + rows) in ``folder``; ``replay`` reads them back."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=False)
        self._vectors = open(self.folder / "vectors.f32", "wb")
        self._rows = open(self.folder / "rows.jsonl", "w", encoding="utf-8")
        self.num_chunks = 0

    def write(self, chunk: Chunk) -> None:
        lens = [len(v) for v in chunk.vecs]
        for v in chunk.vecs:
            self._vectors.write(np.ascontiguousarray(v, dtype=np.float32).tobytes())
        rows = [[rec.id, rec.text, rec.language, dump_metadata(rec), pno] for rec, pno in chunk.rows]
        self._rows.write(json.dumps({"lens": lens, "rows": rows}, ensure_ascii=False) + "\n")
        self.num_chunks += 1

    def replay(self, dim: int) -> Iterator[Chunk]:
        """The chunks in the order they were written."""
        self._vectors.close()
        self._rows.close()
        with open(self.folder / "rows.jsonl", encoding="utf-8") as rows_file, \
                open(self.folder / "vectors.f32", "rb") as vec_file:
            for line in rows_file:
                part = json.loads(line)
                lens = part["lens"]
                flat = np.fromfile(vec_file, dtype=np.float32, count=sum(lens) * dim)
                flat = flat.reshape(-1, dim)
                vecs = np.split(flat, np.cumsum(lens)[:-1]) if lens else []
                rows = [(Record(i, t, lang, json.loads(meta)), pno) for i, t, lang, meta, pno in part["rows"]]
                yield Chunk(rows, list(vecs))

    def remove(self) -> None:
        for f in (self._vectors, self._rows):
            f.close()
        shutil.rmtree(self.folder, ignore_errors=True)
