"""The k-means sample of a build: a uniform random sample of token vectors over the whole stream,
read once, in bounded memory, plus a few whole rows held out for the drift baseline.

Why not the head of the stream: collections are often sorted (by package, by date, by topic), and
a codec trained on the first vectors fits the rest badly. On ddtp/de (2 bits, exhaustive search)
head-of-stream training lost 0.038 MRR@10 against uncompressed vectors, a random sample of the
same size 0.025, a random sample of 32 vectors per centroid 0.007
(``benchmarks/results/compression_loss_ddtp_de_sample_variants.jsonl``).

Why tokens, not whole rows (passages): the tokens of one passage are correlated, so a sample of
whole passages covers the space worse, and it splits documents into sampled ones (reconstructed
well) and the rest (worse), a bias between documents that ranking pays for. On ddtp/de (16,384
centroids, 2 bits, exhaustive search, 582k sampled vectors; 0.7534 MRR@10 uncompressed) a sample
of whole passages reconstructed at cosine 0.938 and gave 0.725 MRR@10, a uniform sample of as many
single tokens 0.956 and 0.737.

Bottom-k sampling (hand-written; no library offers it for a stream of unknown length): every
token gets a uniform random key and the tokens with the smallest keys are kept. Any key-ordered
prefix of them is itself a uniform sample, so the size actually used can be chosen once the
stream's length is known. Keys are drawn per row and per token in stream order from two seeded
generators, so the sample depends on the seed and the stream, not on how it was cut into chunks.

Held out: rows whose own uniform key is below ``held_out_share`` are set aside whole (a small
bottom-k of rows by that key); none of their tokens enters the token sample, so the baseline is
measured on vectors the codec has not seen, not on near-copies of them. Candidates that end up
not held out (beyond its capacity) are offered to the token sample after all.
"""
from __future__ import annotations

import numpy as np

HELD_OUT_MAX = 16384  # vectors held out for the drift baseline, at most
MIN_FOR_HELD_OUT = 400  # a smaller sample trains on everything (the baseline then uses it too)
_SLACK = 1.5  # tokens held before a prune, as a multiple of capacity
_BLOCK = 1 << 14  # tokens moved at a time when pruning


class TokenReservoir:
    """Bottom-k sample of single tokens: the ``capacity`` tokens with the smallest keys.

    Memory: one buffer of ``1.5 x capacity`` float16 vectors (+ float64 keys), allocated at the
    first offer but only touched as it fills (a small stream stays small), plus one block while
    pruning (in place) and the caller's part of the stream. A stream of any length never makes it
    hold more. :meth:`sample` adds only its float32 result (2 GB for 2^22 tokens of dim 128).
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = int(capacity)
        self.limit = np.inf  # tokens with a key at or above this can no longer enter
        self.count = 0
        self._vecs: np.ndarray | None = None
        self._keys: np.ndarray | None = None

    def offer(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        """Consider tokens (float [n, dim]) with their keys (uniform in [0, 1), float64 [n])."""
        keep = keys < self.limit
        if not keep.all():
            vectors, keys = vectors[keep], keys[keep]
        if not len(keys):
            return
        if self._vecs is None:
            size = int(_SLACK * self.capacity) + 1
            self._vecs = np.empty((size, vectors.shape[1]), np.float16)
            self._keys = np.empty(size, np.float64)
        while len(keys):
            if self.count == len(self._keys):
                self._prune()
                keep = keys < self.limit
                vectors, keys = vectors[keep], keys[keep]
                continue
            take = min(len(self._keys) - self.count, len(keys))
            self._vecs[self.count:self.count + take] = vectors[:take]
            self._keys[self.count:self.count + take] = keys[:take]
            self.count += take
            vectors, keys = vectors[take:], keys[take:]

    def _prune(self) -> None:
        keys = self._keys[: self.count]
        self.limit = float(np.partition(keys, self.capacity)[self.capacity])
        kept = np.flatnonzero(keys < self.limit)  # ascending, so kept[i] >= i:
        for a in range(0, len(kept), _BLOCK):  # compacting block by block reads nothing overwritten
            part = kept[a:a + _BLOCK]
            self._vecs[a:a + len(part)] = self._vecs[part]
        self._keys[: len(kept)] = keys[kept]
        self.count = len(kept)

    def sample(self, max_vectors: int) -> np.ndarray:
        """float32 [n, dim]: the tokens with the smallest keys, in key order (a uniform sample),
        n = min(max_vectors, capacity, tokens held)."""
        if not self.count:
            raise ValueError("the reservoir is empty")
        n = max(1, min(int(max_vectors), self.capacity, self.count))
        keys = self._keys[: self.count]
        pick = np.argpartition(keys, n - 1)[:n] if n < self.count else np.arange(self.count)
        pick = pick[np.argsort(keys[pick], kind="stable")]
        out = np.empty((n, self._vecs.shape[1]), np.float32)
        for a in range(0, n, _BLOCK):  # converted a block at a time: no float16 copy of the whole sample
            out[a:a + _BLOCK] = self._vecs[pick[a:a + _BLOCK]]
        return out


class CodecSample:
    """What the codec trains on: a uniform sample of up to ``capacity`` tokens of a stream of
    rows, and whole rows held out from it (at most 5% of the sample and ``HELD_OUT_MAX``)."""

    def __init__(self, capacity: int, seed: int = 0, held_out_share: float = 0.05):
        self.tokens = TokenReservoir(capacity)
        self.held_capacity = min(HELD_OUT_MAX, int(capacity) // 20)
        row_seed, token_seed = np.random.SeedSequence(seed).spawn(2)
        self._row_rng = np.random.default_rng(row_seed)
        self._token_rng = np.random.default_rng(token_seed)
        self._held_limit = float(held_out_share)  # rows with a key below this are candidates
        self._held: list[tuple[float, np.ndarray, np.ndarray]] = []  # (row key, float16 row, token keys)
        self._held_n = 0
        self._final = False

    def offer(self, rows: list[np.ndarray]) -> None:
        """Consider each row (float [m, dim]) of the next part of the stream."""
        if self._final:
            raise ValueError("the sample was already split")
        if not rows:
            return
        lens = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        row_keys = self._row_rng.random(len(rows))
        token_keys = self._token_rng.random(int(lens.sum()))
        held = (row_keys < self._held_limit) & (lens > 0) & (lens <= self.held_capacity)
        if held.any():
            ends = np.cumsum(lens)
            for i in np.flatnonzero(held):
                keys = token_keys[ends[i] - lens[i]:ends[i]].copy()
                self._held.append((float(row_keys[i]), np.asarray(rows[i], dtype=np.float16), keys))
                self._held_n += int(lens[i])
        admit = np.repeat(~held, lens) & (token_keys < self.tokens.limit)
        if admit.any():
            self.tokens.offer(np.concatenate(rows)[admit], token_keys[admit])
        if self._held_n > 2 * self.held_capacity:
            self._prune_held(self.held_capacity)

    def _prune_held(self, budget: int) -> None:
        """Keep the held rows with the smallest keys, ``budget`` vectors at most; offer the
        others' tokens to the token sample."""
        self._held.sort(key=lambda h: h[0])
        lens = np.fromiter((len(h[1]) for h in self._held), dtype=np.int64, count=len(self._held))
        keep = int(np.searchsorted(np.cumsum(lens), budget, side="right"))
        out = self._held[keep:]
        if out:
            self._held_limit = min(self._held_limit, out[0][0])
            self._held = self._held[:keep]
            self._held_n = int(lens[:keep].sum())
            self.tokens.offer(np.concatenate([h[1] for h in out]), np.concatenate([h[2] for h in out]))

    def split(self, max_vectors: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, held_out), float32: up to ``max_vectors`` tokens in key order (any prefix of
        it is a uniform sample), and the held-out rows concatenated, none of which gave a token
        to ``train``. Nothing is held out from a sample under ``MIN_FOR_HELD_OUT`` vectors (the
        held rows then join the token sample). Call after the last offer."""
        if not self._final:
            n = min(int(max_vectors), self.tokens.capacity, self.tokens.count) + self._held_n
            self._prune_held(min(self.held_capacity, n // 20) if n >= MIN_FOR_HELD_OUT else 0)
            self._final = True
        train = self.tokens.sample(max_vectors)
        if not self._held:
            return train, np.zeros((0, train.shape[1]), np.float32)
        return train, np.concatenate([h[1] for h in self._held]).astype(np.float32)
