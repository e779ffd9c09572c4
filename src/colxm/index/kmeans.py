"""Centroid training: k-means on a sample of token vectors (faiss), seeded and reproducible."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from colxm.errors import InputError


@dataclass
class KMeansConfig:
    """k-means settings. Defaults were chosen by measurement (benchmarks/search.py,
    benchmarks/kmeans_tradeoff.py): a few iterations with HNSW assignment lose nothing against
    exact assignment (hnsw_ef 64 = 16); what matters is how much of the collection k-means sees,
    hence up to 128 points per centroid (colbert-ai: ~100)."""

    niter: int = 4
    max_points_per_centroid: int = 128
    seed: int = 0
    threads: int | None = None  # faiss OpenMP threads; None = faiss default
    # how each iteration finds the nearest centroid: "flat" (exact BLAS), "hnsw" (a faiss HNSW graph
    # over the centroids: cost grows with log K instead of K), "auto" = hnsw from 4096 centroids
    assign: str = "auto"
    hnsw_ef: int = 16  # HNSW search breadth when assign is hnsw: higher finds the nearest centroid more often


def num_centroids_for(num_vectors: int) -> int:
    """ColBERTv2's rule: the power of two at or below 16 * sqrt(num_vectors), at most num_vectors."""
    if num_vectors <= 0:
        raise InputError("cannot choose a number of centroids for an empty collection")
    k = int(2 ** math.floor(math.log2(16 * math.sqrt(num_vectors))))
    return max(1, min(k, num_vectors))


def train_centroids(sample: np.ndarray, num_centroids: int, config: KMeansConfig | None = None) -> np.ndarray:
    """Return L2-normalised centroids float32 [num_centroids, dim] from k-means on ``sample``.

    The sample is first reduced (seeded) to ``max_points_per_centroid * num_centroids`` rows.
    """
    import faiss

    config = config or KMeansConfig()
    x = np.ascontiguousarray(sample, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(f"k-means needs a non-empty [n, dim] sample, got shape {x.shape}")
    if num_centroids < 1 or num_centroids > x.shape[0]:
        raise InputError(f"num_centroids must be in 1..{x.shape[0]} (sample size), got {num_centroids}")
    rng = np.random.default_rng(config.seed)
    cap = config.max_points_per_centroid * num_centroids
    if x.shape[0] > cap:
        x = x[np.sort(rng.choice(x.shape[0], size=cap, replace=False))]
    if config.threads is not None:
        faiss.omp_set_num_threads(config.threads)
    if config.assign not in ("auto", "flat", "hnsw"):
        raise InputError(f"KMeansConfig.assign must be auto, flat or hnsw, got {config.assign!r}")
    cp = faiss.ClusteringParameters()
    cp.niter, cp.seed = config.niter, config.seed
    cp.max_points_per_centroid, cp.min_points_per_centroid = config.max_points_per_centroid, 1
    clus = faiss.Clustering(x.shape[1], num_centroids, cp)
    if config.assign == "hnsw" or (config.assign == "auto" and num_centroids >= 4096):
        index = faiss.IndexHNSWFlat(x.shape[1], 16)
        index.hnsw.efSearch = config.hnsw_ef
    else:
        index = faiss.IndexFlatL2(x.shape[1])
    clus.train(x, index)
    c = faiss.vector_to_array(clus.centroids).reshape(num_centroids, x.shape[1]).astype(np.float32)
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    return c / np.maximum(norms, 1e-12)
