"""ColBERTv2 residual compression (nearest-centroid code + n-bit residual per dimension).

Written by hand because it is the core of the index format: byte-compatible with colbert-ai's
``ResidualCodec`` (same bucket cutoffs/weights from quantiles of held-out residuals, same bit order
inside a byte) so that colbert-ai indexes import unchanged. Decompression uses one lookup table
from a residual byte straight to its ``8 // nbits`` bucket weights.
"""
from __future__ import annotations

import numpy as np
import torch

from colxm.errors import IndexFormatError, InputError
from colxm.index.centroid_table import CentroidTable, from_int8_rows, int8_rows
from colxm.index.kmeans import KMeansConfig, num_centroids_for, train_centroids

NBITS = (1, 2, 4)
_ASSIGN_CELLS = 1 << 22  # vectors x centroids scored per matmul block (16 MB of fp32)
_FAST_ASSIGN_MIN = 4096  # centroids from which compress() may use the two-level (faiss IVF) search


def _reverse_bits(value: int, nbits: int) -> int:
    out = 0
    for i in range(nbits):
        out |= ((value >> i) & 1) << (nbits - 1 - i)
    return out


def byte_bucket_table(nbits: int) -> np.ndarray:
    """uint8 [256, 8 // nbits]: the bucket index of each dimension stored in a residual byte.

    colbert-ai writes bucket b of a dimension as its bits b>>0 & 1, b>>1 & 1, ... (least significant
    first) and np.packbits puts the first bit in the byte's most significant position, so the
    dimensions of a byte appear from the top down, each with its bits reversed.
    """
    per = 8 // nbits
    mask = (1 << nbits) - 1
    table = np.zeros((256, per), dtype=np.uint8)
    for byte in range(256):
        for p in range(per):
            field_ = (byte >> (8 - nbits * (p + 1))) & mask
            table[byte, p] = _reverse_bits(field_, nbits)
    return table


class ResidualCodec:
    """Centroids plus the n-bit residual quantiser. See the module docstring for the format.

    The centroids live in a :class:`CentroidTable` in their stored precision (``centroid_dtype``:
    "float16" as colbert-ai, for imported codecs, or "int8" with one float32 scale per row; train_codec
    rounds its centroids to int8 first, so residuals are computed against exactly the stored
    centroids and nothing is lost). ``centroids`` (float32) is derived on first use: compression
    needs it, search reads the table only.
    """

    def __init__(self, nbits: int, dim: int, centroids: np.ndarray | None, bucket_cutoffs, bucket_weights,
                 avg_residual: float, centroid_dtype: str = "float16", table: CentroidTable | None = None,
                 normalize: bool = True):
        """``centroids``: float32 [K, dim], rows L2-normalised; or None with ``table`` given.
        ``normalize``: search scores decompressed vectors L2-normalised, as colbert-ai does (kept
        for imported indexes, whose results must match colbert-ai's); False scores centroid +
        residual as they are, which codecs colxm trains use: on real 2-bit data that keeps more
        of the exact top 10 (benchmarks/README.md, Search, session 10)."""
        if nbits not in NBITS:
            raise InputError(f"nbits must be one of {NBITS}, got {nbits}")
        if dim <= 0 or dim % 8:
            raise InputError(f"dim {dim} must be a multiple of 8")
        self.nbits, self.dim = int(nbits), int(dim)
        self.table = table if table is not None else CentroidTable.from_float(centroids, centroid_dtype)
        self._centroids = None if centroids is None else np.ascontiguousarray(centroids, dtype=np.float32)
        self.bucket_cutoffs = np.asarray(bucket_cutoffs, dtype=np.float32).reshape(-1)
        self.bucket_weights = np.asarray(bucket_weights, dtype=np.float32).reshape(-1)
        nb = 1 << self.nbits
        if self.table.shape[1] != self.dim:
            raise IndexFormatError(f"centroids have shape {self.table.shape}, expected [K, {self.dim}]")
        if self.bucket_cutoffs.shape != (nb - 1,) or self.bucket_weights.shape != (nb,):
            raise IndexFormatError(
                f"bucket cutoffs/weights have shapes {self.bucket_cutoffs.shape}/{self.bucket_weights.shape}, "
                f"expected ({nb - 1},)/({nb},) for nbits={self.nbits}")
        self.avg_residual = float(np.float32(avg_residual))  # stored as float32, as colbert-ai
        self.normalize = bool(normalize)
        self._lut: np.ndarray | None = None
        self._lut8: tuple[torch.Tensor, float] | None = None
        self._ivf = None

    def __repr__(self) -> str:
        return (f"ResidualCodec(nbits={self.nbits}, dim={self.dim}, num_centroids={self.num_centroids}, "
                f"centroid_dtype={self.centroid_dtype!r})")

    @property
    def centroid_dtype(self) -> str:
        """How the table is stored: "int8" (rows with a scale each) or "float16"."""
        return self.table.kind

    @property
    def centroids(self) -> np.ndarray:
        """float32 [K, dim] (derived from the table once, then kept)."""
        if self._centroids is None:
            self._centroids = self.table.to_float32()
        return self._centroids

    # ---- properties -------------------------------------------------------------------------
    @property
    def num_centroids(self) -> int:
        return int(self.table.shape[0])

    @property
    def packed_dim(self) -> int:
        """Bytes of residual per vector."""
        return self.dim * self.nbits // 8

    @property
    def weight_lut(self) -> np.ndarray:
        """float32 [256, 8 // nbits]: residual byte -> the bucket weights of its dimensions."""
        if self._lut is None:
            self._lut = np.ascontiguousarray(self.bucket_weights[byte_bucket_table(self.nbits)])
        return self._lut

    @property
    def int8_weight_lut(self) -> tuple[torch.Tensor, float]:
        """(lut, scale): residual byte -> its ``8 // nbits`` bucket weights as int8 in units of
        ``scale`` (|error| <= scale / 2, ~2e-4 at 2 bits), packed into one integer per byte
        (int64 / int32 / int16 at 1 / 2 / 4 bits) so that one gather writes them all."""
        if self._lut8 is None:
            scale = float(np.abs(self.bucket_weights).max()) / 127 or 1.0
            w8 = np.clip(np.rint(self.bucket_weights / scale), -127, 127).astype(np.int8)
            packed = np.ascontiguousarray(w8[byte_bucket_table(self.nbits)])  # [256, 8 // nbits]
            unit = {1: np.int64, 2: np.int32, 4: np.int16}[self.nbits]
            self._lut8 = (torch.from_numpy(packed.view(unit).reshape(256).copy()), scale)
        return self._lut8

    def decompress_residuals(self, residuals: np.ndarray, out: np.ndarray | None = None,
                             index_buffer: np.ndarray | None = None) -> np.ndarray:
        """Reconstructed residuals float32 [n, dim] (no centroid, not normalised), written into
        ``out`` (C-contiguous float32 [n, dim]) when given. ``index_buffer``: an intp array
        [rows, packed dim] to widen the bytes into, ``rows`` at a time (numpy's take otherwise
        allocates one per call, 8 bytes per residual byte: search passes a small reusable one)."""
        n = residuals.shape[0]
        if out is None:
            out = np.empty((n, self.dim), dtype=np.float32)
        if index_buffer is None:
            return self._lookup(residuals, out)
        rows = index_buffer.shape[0]
        for a in range(0, n, rows):
            b = min(n, a + rows)
            idx = index_buffer[: b - a]
            np.copyto(idx, residuals[a:b])
            self._lookup(idx, out[a:b])
        return out

    def _lookup(self, residuals: np.ndarray, out: np.ndarray) -> np.ndarray:
        n, lut = residuals.shape[0], self.weight_lut
        # mode="clip": every byte is a valid row, and an unbuffered write into ``out``
        if lut.shape[1] in (2, 4):
            # one lookup per byte that copies all of its 2 or 4 weights at once (8 or 16 bytes)
            unit = np.complex64 if lut.shape[1] == 2 else np.complex128
            np.take(lut.view(unit).reshape(256), residuals, out=out.view(unit).reshape(residuals.shape), mode="clip")
        else:
            np.take(lut, residuals, axis=0, out=out.reshape(n, -1, lut.shape[1]), mode="clip")
        return out

    # ---- (de)serialisation ------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {
            "nbits": np.array(self.nbits, dtype=np.int64),
            "bucket_cutoffs": self.bucket_cutoffs,
            "bucket_weights": self.bucket_weights,
            "avg_residual": np.array(self.avg_residual, dtype=np.float32),
            "normalize": np.array(self.normalize, dtype=np.bool_),
        }
        out["centroids"] = self.table.values  # float16 as colbert-ai, or int8 rows plus their scales
        if self.table.scales is not None:
            out["centroid_scales"] = self.table.scales
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ResidualCodec":
        missing = {"nbits", "centroids", "bucket_cutoffs", "bucket_weights", "avg_residual"} - set(arrays)
        if missing:
            raise IndexFormatError(f"codec arrays are missing {sorted(missing)}; the index is incomplete")
        raw = np.asarray(arrays["centroids"])
        if raw.ndim != 2:
            raise IndexFormatError(f"centroids must be 2-D, got shape {raw.shape}")
        if raw.dtype == np.int8:
            table = CentroidTable(raw, np.asarray(arrays.get("centroid_scales", np.zeros(0)), dtype=np.float32))
        elif raw.dtype.kind == "f":
            half = raw.astype(np.float16)  # what colbert-ai stores, and what this codec holds
            if not np.array_equal(half.astype(raw.dtype), raw):
                raise IndexFormatError(f"{raw.dtype} centroids that float16 cannot hold exactly; "
                                       "expected float16 or int8 centroids")
            table = CentroidTable(half)
        else:
            raise IndexFormatError(f"centroids have dtype {raw.dtype}; expected float16/float32 or int8")
        return cls(nbits=int(np.asarray(arrays["nbits"])), dim=int(raw.shape[1]), centroids=None,
                   bucket_cutoffs=arrays["bucket_cutoffs"], bucket_weights=arrays["bucket_weights"],
                   avg_residual=float(np.asarray(arrays["avg_residual"]).reshape(-1)[0]), table=table,
                   normalize=bool(np.asarray(arrays.get("normalize", True)).reshape(-1)[0]))

    # ---- compression ------------------------------------------------------------------------
    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        v = np.asarray(vectors)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise InputError(f"expected vectors of shape [n, {self.dim}], got {v.shape}")
        return v

    def assign(self, vectors: np.ndarray, fast: bool = False) -> np.ndarray:
        """Nearest centroid (max inner product, as colbert-ai) of each vector -> int32 [n].

        fast=True (used for large builds when there are >= 4096 centroids) searches the centroids
        through a faiss inverted file over them (up to 128 lists, 16 probed): about 5x faster on a CPU and
        the exact nearest centroid for ~99.5% of vectors; the others get a centroid nearly as close,
        so their residual is quantised a little more coarsely. Search is unaffected either way.
        """
        v = self._check_vectors(vectors)
        if fast and self.num_centroids >= _FAST_ASSIGN_MIN:
            _, idx = self._centroid_ivf().search(np.ascontiguousarray(v, dtype=np.float32), 1)
            return idx[:, 0].astype(np.int32)
        c = torch.from_numpy(self.centroids)
        out = np.empty(v.shape[0], dtype=np.int32)
        step = max(64, _ASSIGN_CELLS // self.num_centroids)
        for a in range(0, v.shape[0], step):
            x = torch.from_numpy(np.ascontiguousarray(v[a:a + step], dtype=np.float32))
            out[a:a + x.shape[0]] = (x @ c.T).argmax(1).numpy()
        return out

    def _centroid_ivf(self):
        if self._ivf is None:
            import faiss

            quantizer = faiss.IndexFlatIP(self.dim)
            # 128 lists, fewer below 39 centroids per list (faiss warns that k-means lacks points)
            nlist = min(128, self.num_centroids // 39)
            ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.cp.seed = 0
            ivf.train(self.centroids)
            ivf.add(self.centroids)
            ivf.nprobe = 16
            self._ivf = ivf
        return self._ivf

    def quantize(self, residuals: np.ndarray) -> np.ndarray:
        """Bucket index of each residual value (torch.bucketize semantics) -> uint8 [n, dim]."""
        return np.searchsorted(self.bucket_cutoffs, residuals, side="left").astype(np.uint8)

    def pack(self, buckets: np.ndarray) -> np.ndarray:
        """uint8 [n, dim] bucket indexes -> uint8 [n, dim*nbits//8] in colbert-ai's byte layout."""
        n = buckets.shape[0]
        per = 8 // self.nbits
        rev = np.array([_reverse_bits(b, self.nbits) for b in range(1 << self.nbits)], dtype=np.uint8)
        b = rev[buckets].reshape(n, self.dim // per, per)
        out = np.zeros((n, self.dim // per), dtype=np.uint8)
        for p in range(per):
            out |= b[:, :, p] << np.uint8(8 - self.nbits * (p + 1))
        return out

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`pack` -> uint8 [n, dim] bucket indexes."""
        return byte_bucket_table(self.nbits)[packed].reshape(packed.shape[0], self.dim)

    def compress(self, vectors: np.ndarray, fast: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """vectors float32 [n, dim] -> (codes int32 [n], residuals uint8 [n, dim*nbits//8]).
        fast: see :meth:`assign`."""
        v = self._check_vectors(vectors)
        codes = np.empty(v.shape[0], dtype=np.int32)
        residuals = np.empty((v.shape[0], self.packed_dim), dtype=np.uint8)
        for a in range(0, v.shape[0], 1 << 15):
            x = np.asarray(v[a:a + (1 << 15)], dtype=np.float32)
            cod = self.assign(x, fast=fast)
            codes[a:a + len(x)] = cod
            residuals[a:a + len(x)] = self.pack(self.quantize(x - self.centroids[cod]))
        return codes, residuals

    def decompress(self, codes: np.ndarray, residuals: np.ndarray, out: np.ndarray | None = None,
                   normalize: bool | None = None) -> np.ndarray:
        """(codes [n], residuals uint8 [n, packed_dim]) -> float32 [n, dim]: centroid + residual,
        L2-normalised when ``normalize`` (default: as search scores them, ``self.normalize``;
        re-compression passes True, the best estimate of the unit vectors that were compressed)."""
        codes = np.asarray(codes)
        residuals = np.asarray(residuals)
        n = codes.shape[0]
        if residuals.shape != (n, self.packed_dim):
            raise InputError(f"residuals have shape {residuals.shape}, expected ({n}, {self.packed_dim})")
        v = self.decompress_residuals(residuals)
        self.table.add_rows_(torch.from_numpy(v), torch.from_numpy(codes.astype(np.int64)))
        if self.normalize if normalize is None else normalize:
            norms = np.sqrt(np.einsum("ij,ij->i", v, v))
            v /= np.maximum(norms, 1e-12)[:, None]
        if out is not None:
            out[...] = v
            return out
        return v


def compute_buckets(centroids: np.ndarray, heldout: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Bucket cutoffs, weights and average residual from held-out vectors, as colbert-ai computes them
    (quantiles of all residual values; cutoffs at i/2^nbits, weights at the bucket midpoints)."""
    tmp = ResidualCodec(nbits=nbits, dim=centroids.shape[1], centroids=centroids,
                        bucket_cutoffs=np.zeros((1 << nbits) - 1), bucket_weights=np.zeros(1 << nbits),
                        avg_residual=0.0)
    res = torch.from_numpy(np.asarray(heldout, np.float32) - centroids[tmp.assign(heldout)])
    avg_residual = float(res.abs().mean(0).mean())
    num = 1 << nbits
    q = torch.arange(0, num, dtype=torch.float32) * (1 / num)
    flat = res.float().reshape(-1)
    if flat.numel() > 16_000_000:  # torch.quantile's input limit
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:16_000_000]]
    cutoffs = torch.quantile(flat, q[1:])
    weights = torch.quantile(flat, q + 0.5 / num)
    return cutoffs.numpy(), weights.numpy(), avg_residual


def _held_rows_to_front(x: np.ndarray, held: np.ndarray) -> None:
    """Reorder the rows of ``x`` in place so that the rows ``held`` (sorted, distinct) come
    first; the rest keep no particular order. Moves only the held rows that are not already in
    front."""
    h = held.size
    come = held[held >= h]  # held rows outside the front
    free = np.setdiff1d(np.arange(h), held[held < h], assume_unique=True)  # front rows not held
    tmp = x[come].copy()
    x[come] = x[free]
    x[free] = tmp


def train_codec(sample: np.ndarray, nbits: int = 2, num_centroids: int | None = None, seed: int = 0,
                config: KMeansConfig | None = None, reorder_sample: bool = False) -> ResidualCodec:
    """k-means centroids on ``sample`` plus bucket cutoffs/weights from a held-out 5% (at most 50k
    vectors), as colbert-ai does. ``num_centroids`` defaults to :func:`num_centroids_for`.
    ``reorder_sample``: the held-out rows may be swapped to the front of ``sample`` itself (a
    float32 array the caller no longer needs), so that k-means trains on a view instead of a
    copy of the rest: a build's sample is up to 2^22 vectors, 2 GB at dim 128."""
    if nbits not in NBITS:
        raise InputError(f"nbits must be one of {NBITS}, got {nbits}")
    x = np.asarray(sample, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"train_codec needs a non-empty [n, dim] sample, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    h = int(min(0.05 * x.shape[0], 50_000))
    if h > 0:
        if not reorder_sample and np.may_share_memory(x, sample):  # views and memmaps too
            x = x.copy()
        _held_rows_to_front(x, np.sort(rng.choice(x.shape[0], h, replace=False)))
    train, heldout = (x[h:], x[:h]) if h > 0 else (x, x)
    k = num_centroids or num_centroids_for(x.shape[0])
    k = min(k, train.shape[0])
    cfg = config or KMeansConfig(seed=seed)
    # rounded to their stored form first (see ResidualCodec.centroid_dtype)
    q, scales = int8_rows(train_centroids(train, k, cfg))
    centroids = from_int8_rows(q, scales)
    cutoffs, weights, avg = compute_buckets(centroids, heldout, nbits)
    return ResidualCodec(nbits=nbits, dim=x.shape[1], centroids=centroids, bucket_cutoffs=cutoffs,
                         bucket_weights=weights, avg_residual=avg, table=CentroidTable(q, scales),
                         normalize=False)
