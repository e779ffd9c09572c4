#!/usr/bin/env python3
"""How colxm's build and search costs grow with the collection, on the path a user takes:
synthetic clustered token vectors (dim 128, nbits 2) generated lazily, chunk by chunk, and fed to
``Index.build(path, documents, embeddings=<generator>)``; then ``Index.open`` and search.

Per size, build and search each run in a subprocess of their own (so each peak RSS is its own):
- build: seconds (generation time inside the generator reported apart: `stream_s` = reading the
  stream, sampling and spilling it; `after_stream_s` = k-means, compression, inverted lists, id
  store and commit), centroids, index bytes per vector (every file but docs.sqlite, reported
  apart), peak RSS (VmHWM);
- search: p50/p95 ms single query, ms/query batched with --threads workers, share of time per
  search stage, peak RSS vs the post-import baseline and the index size, and overlap@10 with the
  index's own exhaustive mode on a few queries (skipped when it would take over ~2 minutes).

  flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/scale.py --sizes 1000000,4000000,16000000
Progress on stderr, one JSON line per size, JSON summary as the last line of stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search import dir_size  # noqa: E402
from search_peers import current_rss_mb, rss_mb  # noqa: E402

DIM, DOCLEN, TOPICS, CHUNK_DOCS = 128, 100, 8192, 1000
EXHAUSTIVE_S_PER_QUERY_PER_M = 0.35  # measured on 2 cores
_topics = None


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def gen_chunk(seed: int, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """Docs of 40..160 tokens, each token a noisy copy of one of the doc's 4 topic directions."""
    global _topics
    if _topics is None:
        _topics = np.random.default_rng(12345).standard_normal((TOPICS, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    lens = rng.integers(40, 161, n_docs).astype(np.int32)
    doc_topics = rng.integers(0, TOPICS, (n_docs, 4))
    owner = np.repeat(np.arange(n_docs), lens)
    pick = doc_topics[owner, rng.integers(0, 4, owner.size)]
    v = _topics[pick] + 0.9 * rng.standard_normal((owner.size, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, lens


def make_query(v: np.ndarray, rng) -> np.ndarray:
    """32 noisy copies of a document's tokens."""
    q = v[rng.integers(0, len(v), 32)]
    q = q + 0.5 * rng.standard_normal(q.shape).astype(np.float32) / np.sqrt(DIM)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


class Collection:
    """Per-document vectors, generated one chunk at a time; times itself, keeps the queries
    (made from the raw vectors of random documents) and notes when the stream ran out."""

    def __init__(self, n_docs: int, n_queries: int):
        self.n_docs = n_docs
        self.query_docs = np.random.default_rng(7).integers(0, n_docs, n_queries)
        self.queries = [None] * n_queries
        self.gen_s, self.done_at = 0.0, None

    def __iter__(self):
        for c, start in enumerate(range(0, self.n_docs, CHUNK_DOCS)):
            t0 = time.perf_counter()
            v, lens = gen_chunk(c, min(CHUNK_DOCS, self.n_docs - start))
            off = np.r_[0, np.cumsum(lens)]
            for j in np.flatnonzero((self.query_docs >= start) & (self.query_docs < start + len(lens))):
                d = self.query_docs[j] - start
                self.queries[j] = make_query(v[off[d]:off[d + 1]], np.random.default_rng((7, int(j))))
            self.gen_s += time.perf_counter() - t0
            for d in range(len(lens)):
                yield v[off[d]:off[d + 1]]
        self.done_at = time.perf_counter()


def build(args) -> dict:
    """Index.build over the generated collection; queries saved next to the index."""
    import torch
    torch.set_num_threads(args.threads)
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig

    n_docs = args.size // DOCLEN
    coll = Collection(n_docs, args.queries)
    shutil.rmtree(args.index, ignore_errors=True)
    base = current_rss_mb()
    t0 = time.perf_counter()
    idx = Index.build(args.index, ((str(i), "") for i in range(n_docs)), embeddings=coll,
                      config=IndexConfig(nbits=2), show_progress=False)
    t1 = time.perf_counter()
    np.save(args.index + ".queries.npy", np.stack(coll.queries))
    st = idx.stats()
    return {"build_s": t1 - t0, "generation_s": coll.gen_s,
            "stream_s": coll.done_at - t0 - coll.gen_s, "after_stream_s": t1 - coll.done_at,
            "vectors": st["tokens"], "docs": st["documents"], "num_centroids": st["num_centroids"],
            "segments": st["segments"], "peak_rss_mb": rss_mb(), "baseline_rss_mb": base}


def search(args) -> dict:
    """Latency, stage shares and RSS of Index.open + the searcher; overlap with exhaustive."""
    import torch
    torch.set_num_threads(1)  # as benchmarks/search.py: one torch thread per query, `threads` batch workers
    from colxm.index.index import Index
    from colxm.search import SearchParams

    Q = np.load(args.index + ".queries.npy")
    base = current_rss_mb()
    t0 = time.perf_counter()
    s = Index.open(args.index)._snap.searcher  # the engine under Index.search, without the text join
    open_s = time.perf_counter() - t0
    s.threads = args.threads
    p = SearchParams.for_k(10)
    s.search(Q[0], k=10, params=p)
    s.stage_seconds.clear()
    lat, hits = [], []
    for q in Q:
        t0 = time.perf_counter()
        hits.append(s.search(q, k=10, params=p)[0])
        lat.append(time.perf_counter() - t0)
    stages = dict(s.stage_seconds)
    t0 = time.perf_counter()
    s.search(list(Q), k=10, params=p)
    batched = (time.perf_counter() - t0) * 1000 / len(Q)
    peak = rss_mb()
    lat, tot = np.array(lat) * 1000, sum(stages.values())
    return {"open_s": open_s, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "batched_ms_per_query": batched, "stage_share": {k: v / tot for k, v in stages.items()},
            "stage_ms_per_query": {k: 1000 * v / len(Q) for k, v in stages.items()},
            "params": p.__dict__, "peak_rss_mb": peak, "baseline_rss_mb": base,
            **vs_exhaustive(s, Q, hits, args)}


def vs_exhaustive(s, Q, hits, args) -> dict:
    """overlap@10 of the approximate hits with exhaustive exact MaxSim (after the RSS peak is read)."""
    import torch
    from colxm.search import SearchParams

    n = min(args.recall_queries, len(Q))
    est = EXHAUSTIVE_S_PER_QUERY_PER_M * n * args.size / 1e6
    if n == 0 or est > 120:
        return {"overlap@10_vs_exhaustive": None, "exhaustive_skipped_est_s": est}
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    exh = s.search(list(Q[:n]), k=10, params=SearchParams(exhaustive=True))
    ex_s = time.perf_counter() - t0
    ov = [len({h[:2] for h in a} & {h[:2] for h in e}) / 10 for a, e in zip(hits, exh)]
    return {"overlap@10_vs_exhaustive": float(np.mean(ov)), "exhaustive_queries": n,
            "exhaustive_s_per_query": ex_s / n}


def run_phase(phase: str, size: int, index: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), phase, "--size", str(size), "--index", index,
           "--queries", str(args.queries), "--threads", str(args.threads),
           "--recall-queries", str(args.recall_queries)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure(size: int, args) -> dict:
    index = os.path.join(args.work, f"n{size}")
    log(f"== {size:,} vectors: building {index}")
    b = run_phase("build", size, index, args)
    log(f"   build {b['build_s']:.1f}s (generation {b['generation_s']:.1f}s), K={b['num_centroids']}, "
        f"peak RSS {b['peak_rss_mb']:.0f} MB")
    index_bytes = dir_size(index)
    docs_bytes = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(index) for f in fs
                     if f == "docs.sqlite")
    srch = run_phase("search", size, index, args)
    log(f"   search p50 {srch['p50_ms']:.1f} ms, batched {srch['batched_ms_per_query']:.1f} ms/q, "
        f"overlap@10 vs exhaustive {srch['overlap@10_vs_exhaustive'] or 'skipped'}, peak RSS {srch['peak_rss_mb']:.0f} MB")
    index_mb = index_bytes / 2**20
    row = {"size": size, "build": b, "index_mb": index_mb, "bytes_per_vector": index_bytes / b["vectors"],
           "docs_sqlite_mb": docs_bytes / 2**20, "search": srch,
           "search_rss_minus_baseline_over_index": (srch["peak_rss_mb"] - srch["baseline_rss_mb"]) / index_mb}
    if not args.keep:
        shutil.rmtree(index, ignore_errors=True)
        os.remove(index + ".queries.npy")
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", nargs="?", default="all", choices=["all", "build", "search"])
    ap.add_argument("--sizes", default="1000000,4000000,16000000", help="token vectors per index")
    ap.add_argument("--work", default="/tmp/colxm-bench/scale")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--recall-queries", type=int, default=10, help="queries checked against exhaustive search")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the indexes (16M: ~0.6 GB)")
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase != "all":
        print(json.dumps((build if args.phase == "build" else search)(args)))
        return
    os.makedirs(args.work, exist_ok=True)
    rows = []
    for size in [int(x) for x in args.sizes.split(",")]:
        rows.append(measure(size, args))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
