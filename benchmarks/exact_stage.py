#!/usr/bin/env python3
"""Cost of the exact stage alone: MaxSim of one query against 512 random documents of an index,
scored as colbert-ai does (float32, decompressed vectors L2-normalised: imported indexes) and as
colxm's own codecs are scored (centroid + residual in integers). One torch thread, 50 document
sets, best of 3 passes. Prints one JSON object as its last line.

usage: exact_stage.py --index INDEX --queries QUERIES.npy   (queries [n, Lq, dim] float32)
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--docs", type=int, default=512)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from colxm.index.index import Index
    from colxm.search.rerank import maxsim_docs

    Qs = np.load(args.queries)
    searcher = Index.open(args.index)._snap.searcher
    seg, codec = searcher.segments[0], searcher.codec
    rng = np.random.default_rng(0)
    docsets = [np.sort(rng.choice(seg.num_docs, args.docs, replace=False)) for _ in range(50)]
    qb = np.array([0, Qs.shape[1]])
    out = {"docs": args.docs, "ms": {}}
    stored = codec.normalize
    for name, normalize in (("normalised_float32", True), ("raw_integer", False)):
        codec.normalize = normalize  # the same codes scored both ways
        for d in docsets[:5]:
            maxsim_docs(codec, seg, d, Qs[0], qb)
        passes = []
        for _ in range(3):
            t = time.perf_counter()
            for i, d in enumerate(docsets):
                maxsim_docs(codec, seg, d, Qs[i % len(Qs)], qb)
            passes.append((time.perf_counter() - t) / len(docsets) * 1e3)
        out["ms"][name] = min(passes)
    codec.normalize = stored
    print(json.dumps(out))


if __name__ == "__main__":
    main()
