#!/usr/bin/env python3
"""k-means trade-off on real token vectors: training time against codebook quality.

For each variant (points per centroid, iterations, assignment), trains the codec as a build does
(``codec.train_codec``: k-means on a uniform token sample, buckets from 5% held out) and measures
on tokens of held-out documents (none of whose tokens are sampled): mean 1 - cos to the nearest
centroid and after 2-bit (``--nbits``) reconstruction. Retrieval quality of the chosen default is
then measured end to end by benchmarks/search.py. JSON summary as the last line.

  flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/kmeans_tradeoff.py \\
      --data /tmp/colxm-bench/run45k/data --variants 32,64,128
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="search.py's data dir (docs.npy float16, doclens.npy)")
    ap.add_argument("--variants", default="32,64,128",
                    help="comma list of PPC[:NITER[:ASSIGN[:EF]]] (points per centroid, k-means iterations, auto|hnsw|flat, HNSW efSearch)")
    ap.add_argument("--centroids", type=int, default=0, help="0: ColBERTv2's rule on the collection size")
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--eval-docs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--colbert-index", default=None,
                    help="also measure a colbert-ai index's codec on the same tokens (its k-means saw most "
                         "documents, these included: an optimistic reference)")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(2)
    from colxm.index.codec import train_codec
    from colxm.index.kmeans import KMeansConfig, num_centroids_for

    docs = np.load(os.path.join(args.data, "docs.npy"), mmap_mode="r")
    lens = np.load(os.path.join(args.data, "doclens.npy")).astype(np.int64)
    starts = np.r_[0, np.cumsum(lens)[:-1]]
    K = args.centroids or num_centroids_for(int(lens.sum()))
    rng = np.random.default_rng(args.seed)
    held = np.zeros(len(lens), dtype=bool)
    held[rng.choice(len(lens), args.eval_docs, replace=False)] = True
    token_held = np.repeat(held, lens)
    X_eval = np.concatenate([docs[s:s + n] for s, n in zip(starts[held], lens[held])]).astype(np.float32)
    X_eval /= np.linalg.norm(X_eval, axis=1, keepdims=True)
    pool = np.flatnonzero(~token_held)
    order = rng.permutation(pool.size)  # one uniform token order: smaller samples are prefixes
    log(f"K={K}, {pool.size} candidate tokens, {len(X_eval)} held-out tokens of {args.eval_docs} documents")

    def quality(codec):
        codes, res = codec.compress(X_eval)
        R = codec.decompress(codes, res)
        R /= np.linalg.norm(R, axis=1, keepdims=True)
        return {"centroid_1mcos": float(1 - (X_eval * codec.centroids[codes]).sum(1).mean()),
                "recon_1mcos": float(1 - (X_eval * R).sum(1).mean())}

    rows = []
    if args.colbert_index:
        from colxm.index.colbert_import import read_colbert_index
        rows.append({"variant": "colbert-ai", "index": args.colbert_index, **quality(read_colbert_index(args.colbert_index)[0])})
        log(json.dumps(rows[-1]))
    for v in args.variants.split(","):
        parts = v.split(":")
        ppc = int(parts[0])
        niter = int(parts[1]) if len(parts) > 1 else KMeansConfig.niter
        assign = parts[2] if len(parts) > 2 else "auto"
        ef = int(parts[3]) if len(parts) > 3 else KMeansConfig.hnsw_ef
        n = min(pool.size, int(ppc * K / 0.95))  # train_codec holds 5% out for the buckets
        sample = np.asarray(docs[np.sort(pool[order[:n]])], dtype=np.float32)
        t0 = time.perf_counter()
        codec = train_codec(sample, nbits=args.nbits, num_centroids=K, seed=args.seed,
                            config=KMeansConfig(niter=niter, max_points_per_centroid=ppc, seed=args.seed, assign=assign,
                                                hnsw_ef=ef))
        train_s = time.perf_counter() - t0
        del sample
        row = {"variant": v, "points_per_centroid": ppc, "niter": niter, "assign": assign, "hnsw_ef": ef, "sample": n,
               "train_s": train_s, **quality(codec)}
        rows.append(row)
        log(json.dumps(row))
    print(json.dumps({"data": args.data, "K": K, "nbits": args.nbits, "eval_tokens": len(X_eval), "rows": rows}))


if __name__ == "__main__":
    main()
