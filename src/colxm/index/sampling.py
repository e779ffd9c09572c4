"""The k-means sample of a build: a uniform random sample of rows (passages) over the whole
stream, read once, in bounded memory.

Why not the head of the stream: collections are often sorted (by package, by date, by topic), and
a codec trained on the first vectors fits the rest badly. On ddtp/de (2 bits, exhaustive search)
head-of-stream training lost 0.038 MRR@10 against uncompressed vectors, a random sample of the
same size 0.025, a random sample of 32 vectors per centroid 0.007
(``benchmarks/results/compression_loss_ddtp_de_sample_variants.jsonl``).

Bottom-k sampling (hand-written: a dozen lines, no library offers it for variable-length rows):
every row gets a uniform random key and the rows with the smallest keys are kept, up to
``capacity`` vectors. Any key-ordered prefix of the kept rows is itself a uniform random sample,
so the size actually used can be chosen once the stream's length is known.
"""
from __future__ import annotations

import numpy as np


class RowReservoir:
    """Uniform random sample of whole rows of a stream, at most ``capacity`` vectors (float16)."""

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = int(capacity)
        self._rng = np.random.default_rng(seed)
        self._keys: list[float] = []
        self._rows: list[np.ndarray] = []
        self._held = 0
        self._limit = np.inf  # rows with a key at or above this can no longer enter

    def offer(self, rows: list[np.ndarray]) -> None:
        """Consider each row (float [m, dim]) of the next part of the stream."""
        keys = self._rng.random(len(rows))
        for key, row in zip(keys, rows):
            if key < self._limit and len(row):
                self._keys.append(float(key))
                self._rows.append(np.asarray(row[: self.capacity], dtype=np.float16))
                self._held += len(self._rows[-1])
        if self._held > self.capacity:
            self._prune()

    def _prune(self) -> None:
        order = np.argsort(np.asarray(self._keys), kind="stable")
        lens = np.fromiter((len(self._rows[i]) for i in order), dtype=np.int64, count=len(order))
        keep = max(1, int(np.searchsorted(np.cumsum(lens), self.capacity, side="right")))
        self._limit = self._keys[order[keep]]
        self._keys = [self._keys[i] for i in order[:keep]]
        self._rows = [self._rows[i] for i in order[:keep]]
        self._held = int(lens[:keep].sum())

    def sample(self, max_vectors: int) -> np.ndarray:
        """float32 [n, dim]: whole rows in key order (a uniform sample) up to ``max_vectors``
        vectors (at least one row). The last rows are the ones a held-out split should take."""
        if not self._rows:
            raise ValueError("the reservoir is empty")
        order = np.argsort(np.asarray(self._keys), kind="stable")
        picked, n = [], 0
        for i in order:
            row = self._rows[i]
            if picked and n + len(row) > max_vectors:
                break
            picked.append(row)
            n += len(row)
        return np.concatenate(picked).astype(np.float32)
