#!/usr/bin/env python3
"""Choosing SearchParams.for_k's defaults for indexes that store their float16 originals
(IndexConfig.full_vectors): sweep settings at several k against the exact top k.

Truth: the index's own exhaustive mode, i.e. exact MaxSim over every document's float16
originals (cached as ``--truth``; its top 10 is also compared with search.py's exact top 10 over
the float32 vectors, to show the float16 rounding does not matter). Each setting: single-query
p50/p95 and batched ms/query (2 threads), overlap@k with the truth. JSON summary as the last line.

  flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/search_defaults.py \\
      --index /tmp/colxm-bench/peers45k-s6/colxm-full.nbits2 --data /tmp/colxm-bench/run45k/data
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from search import hit_ids, log
from search_peers import timed_queries

# per k: PLAID widths around session 5's colxm-full sweep (overlap@10 0.982 at ncells 16, 0.997 at
# ncells 32), with and without a narrower compressed exact stage, and full_rerank >= 2.5k
GRID = {
    10: [dict(ncells=16, centroid_score_threshold=0.3, ndocs=8192, nrerank=2048, full_rerank=256),
         dict(ncells=32, centroid_score_threshold=0.2, ndocs=8192, nrerank=1024, full_rerank=256),
         dict(ncells=32, centroid_score_threshold=0.2, ndocs=16384, nrerank=1024, full_rerank=256),
         dict(ncells=32, centroid_score_threshold=0.2, ndocs=16384, nrerank=2048, full_rerank=256),
         dict(ncells=32, centroid_score_threshold=0.2, ndocs=16384, nrerank=4096, full_rerank=256)],
    100: [dict(ncells=16, centroid_score_threshold=0.3, ndocs=8192, nrerank=2048, full_rerank=400),
          dict(ncells=32, centroid_score_threshold=0.2, ndocs=16384, nrerank=2048, full_rerank=512),
          dict(ncells=32, centroid_score_threshold=0.2, ndocs=16384, nrerank=4096, full_rerank=512),
          dict(ncells=32, centroid_score_threshold=0.2, ndocs=16384, nrerank=4096, full_rerank=1024)],
}


def overlap(ids, truth, k):
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, truth)]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True, help="a colxm index built with full_vectors")
    ap.add_argument("--data", required=True, help="search.py's data dir (queries.npy, exact_ids.npy)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ks", default="10,100")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--truth", default=None, help="cache of the exhaustive top max(k) (.npy)")
    ap.add_argument("--grid", default=None, help='JSON {"k": [settings...]} instead of the built-in grid')
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)  # as search.py: one torch thread per query, --threads queries at once
    from colxm.index.index import Index
    from colxm.search import SearchParams

    ks = [int(k) for k in args.ks.split(",")]
    grid = {int(k): v for k, v in json.loads(args.grid).items()} if args.grid else GRID
    Q = np.load(os.path.join(args.data, "queries.npy"))[: args.queries]
    snap = Index.open(args.index)._snap
    s = snap.searcher
    s.threads = args.threads
    if not s.full:
        raise SystemExit(f"{args.index} stores no original vectors: build it with --full-vectors")
    ids_of = hit_ids(snap)

    kmax = max(ks)
    truth_path = args.truth or f"{args.index}.exhaustive_top{kmax}.npy"
    if os.path.exists(truth_path):
        truth = np.load(truth_path)
    else:
        t0 = time.perf_counter()
        truth = np.array([ids_of(h) for h in s.search(Q, k=kmax, params=SearchParams(exhaustive=True))])
        np.save(truth_path, truth)
        log(f"exhaustive top {kmax} over the float16 originals: {time.perf_counter() - t0:.0f} s")
    out = {"index": args.index, "queries": len(Q), "truth": truth_path}
    f32 = os.path.join(args.data, "exact_ids.npy")
    if os.path.exists(f32):
        out["truth_top10_vs_float32_exact"] = overlap(truth, np.load(f32)[: len(Q)], 10)
        log(f"float16 truth vs float32 exact, overlap@10: {out['truth_top10_vs_float32_exact']:.4f}")
    rows = []
    for k in ks:
        for setting in grid.get(k, []):
            p = SearchParams(**setting)
            r = timed_queries(lambda q: ids_of(s.search(q, k=k, params=p)[0]),
                              lambda Qb: s.search(Qb, k=k, params=p), Q)
            row = {"k": k, "setting": setting, "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"],
                   "batched_ms_per_query": r["batched_ms_per_query"], "overlap@k": overlap(r["ids"], truth, k)}
            rows.append(row)
            log(f"k={k} {json.dumps(setting)}: p50 {row['p50_ms']:.1f} p95 {row['p95_ms']:.1f} "
                f"batched {row['batched_ms_per_query']:.1f} ms/q, overlap@{k} {row['overlap@k']:.4f}")
        # the defaults for_k(k, full=True) picks now, measured the same way
        p = SearchParams.for_k(k, full=True)
        r = timed_queries(lambda q: ids_of(s.search(q, k=k)[0]), lambda Qb: s.search(Qb, k=k), Q)
        rows.append({"k": k, "setting": "for_k default", "params": vars(p), "p50_ms": r["p50_ms"],
                     "p95_ms": r["p95_ms"], "batched_ms_per_query": r["batched_ms_per_query"],
                     "overlap@k": overlap(r["ids"], truth, k)})
        log(f"k={k} default {vars(p)}: p50 {r['p50_ms']:.1f} ms, overlap@{k} {rows[-1]['overlap@k']:.4f}")
    out["rows"] = rows
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
