#!/usr/bin/env python3
"""How the exact stage should score compressed tokens: overlap@10 with exact MaxSim (on the
original vectors) when each query's true top 100 documents are re-ranked with their tokens
reconstructed in different ways from the same 2-bit codes.

Re-ranking the true top 100 stands in for exhaustive search over the compressed index (a
document outside them would have to gain a lot to enter the top 10): the "colbert-ai" row is
within 0.001 of the measured exhaustive overlap (benchmarks/README.md, Search, session 10).

Variants, all on the index's own centroids and nearest-centroid codes:
  colbert-ai        centroid + quantile-midpoint bucket weights, L2-normalised (colbert-ai's decompression)
  raw               the same, not normalised (what colxm's codecs now score)
  mean_weights      bucket weights = mean of the held-out residual values in each bucket, normalised
  mean_weights_raw  the same, not normalised
  per_dim_raw       cutoffs and midpoint weights per dimension, not normalised
  per_dim_mean      cutoffs per dimension, mean weights, normalised / _raw not normalised

usage:
  residual_scoring.py --data RUN/data --index INDEX [--queries 200] [--top100 CACHE.npy]
where RUN/data is benchmarks/search.py's prepared folder (docs.npy, doclens.npy, queries.npy,
exact_ids.npy). Prints one JSON object as its last line.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch


def exact_top100(docs: np.ndarray, offsets: np.ndarray, Q: np.ndarray, block_tokens: int = 1 << 14) -> np.ndarray:
    """Exhaustive MaxSim over the original vectors -> doc indexes [nq, 100], best first (blocks
    of whole documents, ~``block_tokens`` tokens each)."""
    nq, L, dim = Q.shape
    Qf = torch.from_numpy(np.ascontiguousarray(Q.reshape(nq * L, dim), dtype=np.float32))
    ndocs = len(offsets) - 1
    scores = torch.empty((nq, ndocs))
    cuts = np.unique(np.r_[np.searchsorted(offsets, np.arange(0, offsets[-1], block_tokens)), ndocs])
    for da, db in zip(cuts[:-1], cuts[1:]):
        ta, tb = int(offsets[da]), int(offsets[db])
        sims = (Qf @ torch.from_numpy(np.asarray(docs[ta:tb], np.float32)).T).view(nq, L, tb - ta)
        owner = torch.from_numpy(np.repeat(np.arange(db - da), np.diff(offsets[da:db + 1])))
        best = torch.full((nq, L, db - da), -1e9).scatter_reduce_(2, owner.expand(nq, L, -1), sims, "amax")
        scores[:, da:db] = best.sum(1)
    return torch.topk(scores, 100, dim=1).indices.numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--top100", help="cache of the exact top 100 (computed and saved when missing)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from colxm.index.index import Index

    docs = np.load(os.path.join(args.data, "docs.npy"), mmap_mode="r")
    doclens = np.load(os.path.join(args.data, "doclens.npy"))
    offsets = np.r_[0, np.cumsum(doclens)]
    Q = np.load(os.path.join(args.data, "queries.npy"))[: args.queries]
    exact = np.load(os.path.join(args.data, "exact_ids.npy"))[: args.queries]
    if args.top100 and os.path.exists(args.top100):
        top = np.load(args.top100)[: args.queries]
    else:
        top = exact_top100(docs, offsets, Q)
        if args.top100:
            np.save(args.top100, top)

    codec = Index.open(args.index)._snap.searcher.codec
    C = codec.centroids
    num = 1 << codec.nbits
    # per-dimension cutoffs and both kinds of weights from a seeded sample of 200k residuals
    rng = np.random.default_rng(0)
    sample = np.asarray(docs[np.sort(rng.choice(docs.shape[0], 200_000, replace=False))], np.float32)
    R = sample - C[codec.assign(sample)]
    levels = np.arange(num) / num
    cut_d = np.quantile(R, levels[1:], axis=0).T
    mid_d = np.quantile(R, levels + 0.5 / num, axis=0).T
    b = np.searchsorted(codec.bucket_cutoffs, R, side="left")
    mean_w = np.array([R[b == k].mean() for k in range(num)])
    bd = np.stack([np.searchsorted(cut_d[j], R[:, j], side="left") for j in range(R.shape[1])], 1)
    mean_d = np.array([[R[bd[:, j] == k, j].mean() for k in range(num)] for j in range(R.shape[1])])
    dims = np.arange(R.shape[1])[None, :]

    def unit(v):
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def variants(x):
        c = C[codec.assign(x)]
        r = x - c
        g = np.searchsorted(codec.bucket_cutoffs, r, side="left")
        gd = np.stack([np.searchsorted(cut_d[j], r[:, j], side="left") for j in range(x.shape[1])], 1)
        mid, mean = c + codec.bucket_weights[g], c + mean_w[g]
        pd_mid, pd_mean = c + mid_d[dims, gd], c + mean_d[dims, gd]
        return {"colbert-ai": unit(mid), "raw": mid, "mean_weights": unit(mean), "mean_weights_raw": mean,
                "per_dim_raw": pd_mid, "per_dim_mean": unit(pd_mean), "per_dim_mean_raw": pd_mean}

    hits: dict[str, int] = {}
    for i in range(len(Q)):
        cand = np.union1d(top[i], exact[i])  # exact_ids is the truth; a near-tie at rank 10 may differ
        vecs = np.concatenate([np.asarray(docs[offsets[d]:offsets[d + 1]], np.float32) for d in cand])
        starts = np.r_[0, np.cumsum(doclens[cand])][:-1]
        for name, v in variants(vecs).items():
            per_doc = np.maximum.reduceat(Q[i] @ v.T, starts, axis=1).sum(0)
            best = cand[np.argsort(-per_doc, kind="stable")[:10]]
            hits[name] = hits.get(name, 0) + len(set(best) & set(exact[i]))
    out = {"queries": len(Q), "nbits": codec.nbits, "num_centroids": codec.num_centroids,
           "bucket_weights": codec.bucket_weights.tolist(), "mean_weights": mean_w.tolist(),
           "overlap@10": {k: v / (10 * len(Q)) for k, v in hits.items()}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
