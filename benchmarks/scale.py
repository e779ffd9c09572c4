#!/usr/bin/env python3
"""How colxm's build and search costs grow with the collection: synthetic clustered token vectors
at 1M, 4M and 16M vectors (dim 128, nbits 2), generated and compressed in chunks straight into
.npy files (memory stays bounded), then searched memory-mapped.

Per size: build seconds by phase, index bytes per vector, search p50/p95 ms (single query, 2
threads), the share of search time per stage (centroid scoring, candidate lists, approximate
scoring, decompression + exact MaxSim), and the search process's peak RSS against the index size.

  flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/scale.py --sizes 1000000,4000000,16000000
JSON summary as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

DIM, DOCLEN, TOPICS = 128, 100, 8192


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def gen_chunk(seed: int, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Docs of 40..160 tokens, each token a noisy copy of one of the doc's 4 topic directions."""
    topics = np.random.default_rng(12345).standard_normal((TOPICS, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    lens = rng.integers(40, 161, n_docs).astype(np.int32)
    doc_topics = rng.integers(0, TOPICS, (n_docs, 4))
    owner = np.repeat(np.arange(n_docs), lens)
    pick = doc_topics[owner, rng.integers(0, 4, owner.size)]
    v = topics[pick] + 0.9 * rng.standard_normal((owner.size, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, lens


def build(size: int, out: str, chunk_docs: int = 10000) -> dict:
    from colxm.index.codec import train_codec
    from colxm.index.ivf import build_ivf
    from colxm.index.kmeans import num_centroids_for

    os.makedirs(out, exist_ok=True)
    n_docs = size // DOCLEN
    t0 = time.perf_counter()
    K = num_centroids_for(size)
    # training sample: 32 vectors per centroid from the same distribution (as the codec would sample)
    sample = np.concatenate([gen_chunk(10**6 + i, 3000)[0] for i in range(max(1, (32 * K) // 300000 + 1))])
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    codec = train_codec(sample, nbits=2, num_centroids=K, seed=0)
    t_train = time.perf_counter() - t0
    # residuals streamed to a raw file chunk by chunk, then wrapped as .npy (memory stays bounded)
    codes_parts, lens_parts = [], []
    res_path = os.path.join(out, "residuals.tmp")
    t_comp, t_gen2 = 0.0, 0.0
    with open(res_path, "wb") as fh:
        for c in range((n_docs + chunk_docs - 1) // chunk_docs):
            a = time.perf_counter()
            v, lens = gen_chunk(c, min(chunk_docs, n_docs - c * chunk_docs))
            b = time.perf_counter()
            codes, res = codec.compress(v, fast=True)
            t_comp += time.perf_counter() - b
            t_gen2 += b - a
            fh.write(res.tobytes())
            codes_parts.append(codes.astype(np.uint16 if K <= 65536 else np.int32))
            lens_parts.append(lens)
    codes = np.concatenate(codes_parts)
    lens = np.concatenate(lens_parts)
    T = codes.size
    res = np.lib.format.open_memmap(os.path.join(out, "residuals.npy"), "w+", np.uint8, (T, codec.packed_dim))
    res[:] = np.memmap(res_path, np.uint8, "r", shape=(T, codec.packed_dim))
    res.flush()
    del res
    os.remove(res_path)
    a = time.perf_counter()
    ivf_offsets, ivf_docs = build_ivf(codes, lens, K)
    t_ivf = time.perf_counter() - a
    if len(lens) <= 65536:
        ivf_docs = ivf_docs.astype(np.uint16)
    for name, arr in {**{f"codec_{k}": v for k, v in codec.to_arrays().items()}, "codes": codes, "doclens": lens,
                      "ivf_offsets": ivf_offsets, "ivf_docs": ivf_docs}.items():
        np.save(os.path.join(out, name + ".npy"), arr)
    return {"vectors": int(T), "docs": int(len(lens)), "num_centroids": K,
            "build_s": {"train": t_train, "compress": t_comp, "ivf": t_ivf, "total_excl_generation": t_train + t_comp + t_ivf},
            "generation_s": t_gen + t_gen2}


def search(index: str, n_queries: int, threads: int) -> dict:
    import torch
    torch.set_num_threads(1)  # as benchmarks/search.py: one torch thread per query, `threads` batch workers
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from search import current_rss_mb, open_colxm, rss_mb

    from colxm.search import SearchParams, Searcher

    base = current_rss_mb()
    t0 = time.perf_counter()
    codec, seg = open_colxm(index)
    t_open = time.perf_counter() - t0
    rng = np.random.default_rng(7)
    # queries: 32 noisy copies of tokens of random documents (decompressed, so no raw data needed)
    Qs = []
    for _ in range(n_queries):
        d = int(rng.integers(seg.num_docs))
        a, b = int(seg.doc_offsets[d]), int(seg.doc_offsets[d + 1])
        v = codec.decompress(seg.codes[a:b], seg.residuals[a:b])[rng.integers(0, b - a, 32)]
        v = v + 0.5 * rng.standard_normal(v.shape).astype(np.float32) / np.sqrt(DIM)
        Qs.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    s = Searcher(codec, [seg], threads=threads)
    p = SearchParams.for_k(10)
    s.search(Qs[0], k=10, params=p)
    s.stage_seconds.clear()
    lat = []
    for q in Qs:
        a = time.perf_counter()
        s.search(q, k=10, params=p)
        lat.append(time.perf_counter() - a)
    tot = sum(s.stage_seconds.values())
    lat = np.array(lat) * 1000
    return {"open_s": t_open, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "stage_share": {k: v / tot for k, v in s.stage_seconds.items()},
            "stage_ms_per_query": {k: 1000 * v / len(Qs) for k, v in s.stage_seconds.items()},
            "params": p.__dict__, "peak_rss_mb": rss_mb(),
            "baseline_rss_mb": base}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", nargs="?", default="all", choices=["all", "search"])
    ap.add_argument("--sizes", default="1000000,4000000,16000000")
    ap.add_argument("--work", default="/tmp/colxm-bench/scale")
    ap.add_argument("--index", default=None)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the indexes (16M: ~0.6 GB)")
    args = ap.parse_args()
    if args.phase == "search":
        print(json.dumps(search(args.index, args.queries, args.threads)))
        return
    import torch
    torch.set_num_threads(args.threads)
    rows = []
    for size in [int(x) for x in args.sizes.split(",")]:
        out = os.path.join(args.work, f"n{size}")
        b = build(size, out)
        size_bytes = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "search", "--index", out,
                            "--queries", str(args.queries), "--threads", str(args.threads)],
                           capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(p.stderr[-2000:])
        srch = json.loads(p.stdout.strip().splitlines()[-1])
        row = {"size": size, **b, "index_mb": size_bytes / 2**20, "bytes_per_vector": size_bytes / b["vectors"],
               "search": srch, "rss_over_index": srch["peak_rss_mb"] / (size_bytes / 2**20),
               "rss_minus_baseline_over_index": (srch["peak_rss_mb"] - srch["baseline_rss_mb"]) / (size_bytes / 2**20)}
        log(json.dumps({k: v for k, v in row.items()}))
        rows.append(row)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
