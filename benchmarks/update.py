#!/usr/bin/env python3
"""Incremental updates vs a full rebuild on ddtp/it (45,583 passages), on precomputed vectors.

Encoding is excluded on both sides: every index is fed the same cached e5-small ColBERT token
vectors (benchmarks/search_encode.py writes them to /tmp/colxm-bench/emb) through the
vectors-level API (Index.build / Index.add with ``embeddings=``). For each share p in +1%, +10%,
+50%: a base index of N/(1+p) documents (a seeded random subset) gets the other documents added
in one ``add`` commit; we time the add and compare it with a fresh full build of all N documents,
then compare search quality of the updated index with the fresh build: MRR@10 (ir-measures,
qrels of ddtp/it) and overlap@10 with exhaustive exact MaxSim on the uncompressed vectors.
Also timed: optimize() after the +50% add, and what reindex() decides from the drift figures
(it is then given the raw vectors, so it equals a fresh build). The noise floor of the quality
comparison is measured too: a second fresh build that differs only in its k-means seed (its
time is a second rebuild timing; add_over_rebuild uses the faster of the two).

  flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/update.py [--max-docs N]

Prints one line per step and a JSON summary as the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np


def load_vectors(emb: str, max_docs: int | None):
    meta = json.load(open(os.path.join(emb, "meta.json")))
    vecs, c = [], 0
    while os.path.exists(os.path.join(emb, f"docs.{c:03d}.npy")):
        flat = np.load(os.path.join(emb, f"docs.{c:03d}.npy")).astype(np.float32)
        lens = np.load(os.path.join(emb, f"doclens.{c:03d}.npy"))
        vecs += np.split(flat, np.cumsum(lens)[:-1])
        c += 1
        if max_docs and len(vecs) >= max_docs:
            break
    n = min(len(vecs), max_docs or len(vecs))
    queries = np.load(os.path.join(emb, "queries.npy")).astype(np.float32)
    return meta, vecs[:n], queries


def load_texts(data: str, ids: list[str]) -> dict[str, str]:
    want, out = set(ids), {}
    with open(os.path.join(data, "corpus.jsonl"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["_id"] in want:
                out[d["_id"]] = ((d.get("title") or "") + " " + d["text"]).strip()
    return out


def exact_top10(vecs: list[np.ndarray], queries: np.ndarray, block_docs: int = 128) -> np.ndarray:
    """Exhaustive exact MaxSim on the uncompressed vectors -> doc indexes [nq, 10]."""
    import torch

    Q = torch.from_numpy(queries.reshape(-1, queries.shape[-1]))
    nq, lq = queries.shape[:2]
    scores = np.empty((nq, len(vecs)), dtype=np.float32)
    for a in range(0, len(vecs), block_docs):
        part = vecs[a:a + block_docs]
        lens = torch.tensor([len(v) for v in part])
        S = Q @ torch.from_numpy(np.concatenate(part)).T  # [nq*lq, T]
        seg = torch.repeat_interleave(torch.arange(len(part)), lens)
        m = torch.full((S.shape[0], len(part)), -1e9).scatter_reduce(1, seg.expand(S.shape[0], -1), S, "amax")
        scores[:, a:a + len(part)] = m.view(nq, lq, len(part)).sum(1).numpy()
    return np.argsort(-scores, axis=1)[:, :10]


def evaluate(index, queries, qids, exact_ids, qrels) -> dict:
    import ir_measures
    from ir_measures import RR

    hits = index.search_embeddings(list(queries), k=10)
    run, overlaps = [], []
    for qid, hs, ex in zip(qids, hits, exact_ids):
        run += [ir_measures.ScoredDoc(qid, h.id, h.score) for h in hs]
        overlaps.append(len({h.id for h in hs} & set(ex)) / 10)
    mrr = ir_measures.calc_aggregate([RR @ 10], qrels, run)[RR @ 10]
    return {"mrr@10": round(float(mrr), 4), "overlap@10": round(float(np.mean(overlaps)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emb", default="/tmp/colxm-bench/emb")
    ap.add_argument("--data", default="/work/shared/data/ddtp/it")
    ap.add_argument("--max-docs", type=int, default=None)
    ap.add_argument("--shares", default="0.01,0.1,0.5")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig

    meta, vecs, queries = load_vectors(args.emb, args.max_docs)
    n = len(vecs)
    ids = meta["doc_ids"][:n]
    texts = load_texts(args.data, ids)
    docs = [{"id": i, "text": texts.get(i, "")} for i in ids]
    qids = meta["query_ids"]
    qrels = list(_read_qrels(os.path.join(args.data, "qrels", "test.tsv"), set(qids)))
    print(f"{n} documents, {sum(len(v) for v in vecs)} vectors, {len(qids)} queries", flush=True)
    t = time.perf_counter()
    exact = exact_top10(vecs, queries)
    exact_ids = [[ids[j] for j in row] for row in exact]
    print(f"exact top-10: {time.perf_counter() - t:.1f}s", flush=True)

    work = args.workdir or tempfile.mkdtemp(prefix="colxm-update-")
    cfg = IndexConfig(nbits=2)
    out = {"benchmark": "update", "documents": n, "vectors": int(sum(len(v) for v in vecs)),
           "queries": len(qids), "encoding": "excluded (cached vectors, embeddings= API)", "runs": []}

    t = time.perf_counter()
    fresh = Index.build(os.path.join(work, "fresh"), docs, embeddings=vecs, config=cfg, show_progress=False)
    full_s = time.perf_counter() - t
    fresh_q = evaluate(fresh, queries, qids, exact_ids, qrels)
    out["full_rebuild_s"] = round(full_s, 2)
    out["fresh"] = fresh_q
    print(f"full rebuild: {full_s:.1f}s {fresh_q}", flush=True)
    fresh.close()
    shutil.rmtree(os.path.join(work, "fresh"))
    # noise floor: the same fresh build with another k-means seed
    t = time.perf_counter()
    other = Index.build(os.path.join(work, "fresh1"), docs, embeddings=vecs, config=IndexConfig(nbits=2, seed=1),
                        show_progress=False)
    out["full_rebuild_seed1_s"] = round(time.perf_counter() - t, 2)
    full_s = min(full_s, out["full_rebuild_seed1_s"])  # the less disturbed of two rebuilds
    q1 = evaluate(other, queries, qids, exact_ids, qrels)
    out["fresh_seed1"] = q1
    out["seed_noise"] = {"d_mrr@10": round(q1["mrr@10"] - fresh_q["mrr@10"], 4),
                         "d_overlap@10": round(q1["overlap@10"] - fresh_q["overlap@10"], 4)}
    print(f"fresh build, k-means seed 1: {q1}", flush=True)
    other.close()
    shutil.rmtree(os.path.join(work, "fresh1"))

    rng = np.random.default_rng(0)
    perm = rng.permutation(n)
    for share in [float(s) for s in args.shares.split(",")]:
        n_add = int(round(n * share / (1 + share)))
        base, added = np.sort(perm[: n - n_add]), np.sort(perm[n - n_add:])
        path = os.path.join(work, f"p{share}")
        t = time.perf_counter()
        idx = Index.build(path, [docs[i] for i in base], embeddings=[vecs[i] for i in base], config=cfg, show_progress=False)
        base_s = time.perf_counter() - t
        t = time.perf_counter()
        s = idx.add([docs[i] for i in added], embeddings=[vecs[i] for i in added])
        add_s = time.perf_counter() - t
        assert s.indexed == n_add and len(idx) == n
        q = evaluate(idx, queries, qids, exact_ids, qrels)
        run = {"share": share, "base_docs": len(base), "added_docs": n_add, "base_build_s": round(base_s, 2),
               "add_s": round(add_s, 3), "add_over_rebuild": round(add_s / full_s, 4),
               "add_ms_per_doc": round(1000 * add_s / n_add, 3), "rebuild_ms_per_doc": round(1000 * full_s / n, 3),
               "add_us_per_vector": round(1e6 * add_s / sum(len(vecs[i]) for i in added), 2),
               **q, "d_mrr@10": round(q["mrr@10"] - fresh_q["mrr@10"], 4),
               "d_overlap@10": round(q["overlap@10"] - fresh_q["overlap@10"], 4),
               "drift": idx.stats()["drift"]}
        if share == max(float(x) for x in args.shares.split(",")):
            t = time.perf_counter()
            idx.optimize()
            run["optimize_s"] = round(time.perf_counter() - t, 2)
            run["after_optimize"] = evaluate(idx, queries, qids, exact_ids, qrels)
            t = time.perf_counter()
            by_id = {ids[i]: vecs[i] for i in range(n)}
            rep = idx.reindex(embeddings=lambda keys: [by_id[d] for d, _ in keys])
            run["reindex"] = {"done": rep.done, "reason": rep.reason, "s": round(time.perf_counter() - t, 2)}
            if rep.done:
                run["after_reindex"] = evaluate(idx, queries, qids, exact_ids, qrels)
            assert idx.verify() == []
        print(json.dumps(run), flush=True)
        out["runs"].append(run)
        idx.close()
        shutil.rmtree(path)
    out["max_abs_d_mrr@10"] = max(abs(r["d_mrr@10"]) for r in out["runs"])
    out["max_abs_d_overlap@10"] = max(abs(r["d_overlap@10"]) for r in out["runs"])
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


def _read_qrels(path: str, qids: set[str]):
    import ir_measures

    with open(path, encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            q, d, rel = line.rstrip("\n").split("\t")
            if q in qids:
                yield ir_measures.Qrel(q, d, int(rel))


if __name__ == "__main__":
    sys.exit(main())
