#!/usr/bin/env python3
"""Peer engines for benchmarks/search.py, run in the peers' own venvs (one subprocess per phase).

  <venv-colbert>/bin/python search_peers.py colbert build  --data D --index I --nbits 2
  <venv-colbert>/bin/python search_peers.py colbert search --data D --index I --settings JSON
  <venv-pylate>/bin/python  search_peers.py fastplaid build|search ...   (PYTHONPATH=/tmp/peers/fp17)

D holds the benchmark vectors written by search.py (docs.npy fp16 [T, dim], doclens.npy, queries.npy).
Each phase prints one JSON line last: build seconds (engine only, vectors already in memory), or per
setting the latencies (single query, batched), top-10 ids and the process's peak RSS.
colbert-ai's collection encoder is patched to return the stored vectors (as in
../shared/bench/peers/bench_colbert_ai.py); its checkpoint is a tiny random HF_ColBERT that is never
used to encode (colbert-ai needs one to start).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np


def rss_mb():
    """Peak RSS of this process (VmHWM). Not ru_maxrss: after fork+exec that also counts the parent's
    RSS at fork time (here the orchestrator holding every vector)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load(data, queries_only=False, n_queries=None):
    Q = np.load(os.path.join(data, "queries.npy"))[:n_queries]
    if queries_only:
        return None, None, Q
    return np.load(os.path.join(data, "docs.npy")), np.load(os.path.join(data, "doclens.npy")), Q


WARM_QUERIES = 20


def timed_queries(search_one, search_batch, Q, single=None, keep_batch=False):
    """Single-query latencies (p50/p95 over the first ``single`` queries, all by default; ids of
    each) after WARM_QUERIES untimed ones (the first queries: lazily built structures, first
    touches of memory), then ms per query of one batched call (its result kept under
    "batch_result" when ``keep_batch``). One copy for every engine: search.py imports it."""
    for q in Q[:WARM_QUERIES]:
        search_one(q)
    lat, ids = [], []
    for q in Q[:single]:
        t0 = time.perf_counter()
        ids.append([int(x) for x in search_one(q)])
        lat.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    batch = search_batch(Q)
    batched = (time.perf_counter() - t0) / len(Q)
    a = np.array(lat) * 1000
    out = {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
           "batched_ms_per_query": batched * 1000, "ids": ids}
    if keep_batch:
        out["batch_result"] = batch
    return out


# ---- colbert-ai ---------------------------------------------------------------------------------
def colbert_common(threads):
    import torch
    torch.set_num_threads(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return torch


def colbert_checkpoint(root, dim):
    path = os.path.join(root, "tiny-colbert")
    if not os.path.exists(os.path.join(path, "config.json")):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
        from tiny_models import make_tiny_bert_colbert
        make_tiny_bert_colbert(path, dim=dim, query_maxlen=32, doc_maxlen=180)
    return path


def colbert_build(args):
    torch = colbert_common(args.threads)
    from colbert import Indexer
    from colbert.indexing import collection_encoder as ce_mod
    from colbert.infra import ColBERTConfig, Run, RunConfig

    E, doclens, _ = load(args.data)
    offsets = np.zeros(len(doclens) + 1, dtype=np.int64)
    np.cumsum(doclens, out=offsets[1:])
    texts = [f"passage {i}" for i in range(len(doclens))]
    Et = torch.from_numpy(E)

    def cached_encode_passages(self, passages):
        ids = [int(p.split()[1]) for p in passages]
        embs = torch.cat([Et[offsets[i]:offsets[i + 1]] for i in ids]).to(torch.float32)
        return embs, [int(doclens[i]) for i in ids]

    ce_mod.CollectionEncoder.encode_passages = cached_encode_passages
    ckpt = colbert_checkpoint(args.root, E.shape[1])
    root, name = args.index, "bench"  # colbert-ai writes ROOT/bench/indexes/bench
    cfg = ColBERTConfig(nbits=args.nbits, doc_maxlen=180, query_maxlen=32, dim=E.shape[1], kmeans_niters=4,
                        index_bsize=64, avoid_fork_if_possible=True, root=root, experiment="bench")
    with Run().context(RunConfig(nranks=1, experiment="bench", root=root, avoid_fork_if_possible=True)):
        t0 = time.perf_counter()
        path = Indexer(checkpoint=ckpt, config=cfg, verbose=0).index(name=name, collection=texts, overwrite=True)
        build_s = time.perf_counter() - t0
    print(json.dumps({"build_s": build_s, "path": path, "peak_rss_mb": rss_mb()}))


def colbert_search(args):
    torch = colbert_common(args.threads)
    from colbert import Searcher
    from colbert.infra import ColBERTConfig, Run, RunConfig

    _, _, Q = load(args.data, queries_only=True, n_queries=args.queries)
    base = current_rss_mb()
    root, name = args.index, "bench"
    out = []
    with Run().context(RunConfig(nranks=1, experiment="bench", root=root)):
        s = Searcher(index=name, config=ColBERTConfig(root=root, experiment="bench"), verbose=0)
        Qt = torch.from_numpy(Q)
        for setting in json.loads(args.settings):
            s.config.configure(**setting)
            r = timed_queries(lambda q: s.dense_search(torch.from_numpy(q)[None], k=10)[0],
                              lambda Qb: [s.dense_search(Qt[i:i + 1], k=10) for i in range(len(Qb))], Q)
            r["setting"] = setting
            out.append(r)
    print(json.dumps({"search": out, "peak_rss_mb": rss_mb(), "baseline_rss_mb": base}))


# ---- fast-plaid ---------------------------------------------------------------------------------
def fastplaid_build(args):
    import torch
    torch.set_num_threads(args.threads)
    from fast_plaid import search

    E, doclens, _ = load(args.data)
    docs = [t.float() for t in torch.split(torch.from_numpy(E), doclens.tolist())]
    t0 = time.perf_counter()
    fp = search.FastPlaid(index=args.index, device="cpu")
    fp.create(documents_embeddings=docs, nbits=args.nbits)
    print(json.dumps({"build_s": time.perf_counter() - t0, "path": args.index, "peak_rss_mb": rss_mb()}))


def fastplaid_search(args):
    import torch
    torch.set_num_threads(args.threads)
    from fast_plaid import search

    _, _, Q = load(args.data, queries_only=True, n_queries=args.queries)
    base = current_rss_mb()
    fp = search.FastPlaid(index=args.index, device="cpu")
    Qt = torch.from_numpy(Q)
    out = []
    for setting in json.loads(args.settings):
        kw = dict(top_k=10, show_progress=False, **setting)
        r = timed_queries(lambda q: [x[0] for x in fp.search(torch.from_numpy(q)[None], **kw)[0]],
                          lambda Qb: fp.search(Qt, **kw), Q)
        r["setting"] = setting
        out.append(r)
    print(json.dumps({"search": out, "peak_rss_mb": rss_mb(), "baseline_rss_mb": base}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=["colbert", "fastplaid"])
    ap.add_argument("phase", choices=["build", "search"])
    ap.add_argument("--data", required=True)
    ap.add_argument("--index", required=True)
    ap.add_argument("--root", default="/tmp/colxm-bench")
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", default="[{}]")
    ap.add_argument("--queries", type=int, default=None)
    args = ap.parse_args()
    {"colbert": {"build": colbert_build, "search": colbert_search},
     "fastplaid": {"build": fastplaid_build, "search": fastplaid_search}}[args.engine][args.phase](args)


if __name__ == "__main__":
    main()
