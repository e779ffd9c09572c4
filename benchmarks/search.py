#!/usr/bin/env python3
"""Search benchmark: colxm vs colbert-ai (PLAID) vs fast-plaid on the SAME stored token vectors.

Prints per engine: build seconds (vectors already in memory, encoding excluded), index bytes per
vector (all files on disk, inverted lists included), peak RSS of the search process, and a
latency-quality curve (p50/p95 ms single query, ms/query batched, 2 threads) against overlap@10
with exhaustive exact MaxSim on the uncompressed vectors; colxm also against its own exhaustive
exact mode over the compressed index. JSON summary as the last line.

Vectors: benchmarks/search_encode.py (colxm's Encoder with the trained default model, dim 128), fed
to every engine as they are (session 1 centred its random-projection e5 vectors; the trained model's
vectors need no such fix). colxm's index is built through its public API, ``Index.build(...,
embeddings=...)``, exactly the path a user's build takes once the text is encoded; its text store
(docs.sqlite, ids only here) is not counted, as the peers store no text either. Engine
``colxm-full`` is the same build with ``IndexConfig(full_vectors=True)``: the float16 originals are
stored too (counted in its bytes per vector) and re-score each search's best documents.

  flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/search.py --emb /tmp/colxm-bench/emb-trained
Phases run as subprocesses so that each engine's search RSS is its own; every engine's index and
results are cached under --work (delete it to rebuild).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

from search_peers import current_rss_mb, rss_mb, timed_queries  # one copy: that script runs in the peers' venvs

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = "/tmp/peers"
COLBERT_PY = f"{PEERS}/venv-colbert/bin/python"
PYLATE_PY = f"{PEERS}/venv-pylate/bin/python"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def dir_size(path):
    """Bytes of every file of an index (colxm's text store docs.sqlite excluded: no peer stores text)."""
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs
               if not os.path.islink(os.path.join(r, f)) and f != "docs.sqlite")


# ---- data ----------------------------------------------------------------------------------------
def prepare(emb, chunks, data, n_queries, exact_from=None):
    """Write docs/doclens/queries.npy, the exact top-10 (exact_ids.npy) and info.json into data.
    ``exact_from``: benchmarks/update.py's --exact-cache file, the same truth for the same
    vectors and queries (checked by row and document counts), instead of computing it again."""
    if os.path.exists(os.path.join(data, "exact_ids.npy")):
        return
    os.makedirs(data, exist_ok=True)
    E = np.concatenate([np.load(os.path.join(emb, f"docs.{i:03d}.npy")) for i in range(chunks)])
    L = np.concatenate([np.load(os.path.join(emb, f"doclens.{i:03d}.npy")) for i in range(chunks)]).astype(np.int32)
    Q = np.load(os.path.join(emb, "queries.npy")).astype(np.float32)[:n_queries]
    np.save(os.path.join(data, "docs.npy"), E.astype(np.float16))
    np.save(os.path.join(data, "doclens.npy"), L)
    np.save(os.path.join(data, "queries.npy"), Q)
    info = {"n_docs": int(len(L)), "n_tokens": int(L.sum()), "n_queries": int(Q.shape[0])}
    if exact_from:
        top = np.load(exact_from)
        if top.shape[0] < len(Q) or top.max() >= len(L):
            raise SystemExit(f"{exact_from} does not match {emb} ({top.shape}, {len(L)} documents)")
        exact, info["exact_source"] = top[: len(Q)], exact_from
    else:
        exact, info["gap_10_11"], info["score_10"] = exact_top10(E, L, Q)
    np.save(os.path.join(data, "exact_ids.npy"), exact)
    info["emb_meta"] = {k: v for k, v in json.load(open(os.path.join(emb, "meta.json"))).items()
                        if not k.endswith("_ids")}
    json.dump(info, open(os.path.join(data, "info.json"), "w"))


def exact_top10(E, L, Q):
    """Exact MaxSim over the stored (fp16) vectors, docs padded with their last token: (top-10
    doc indexes, mean score gap between ranks 10 and 11, mean 10th score)."""
    import torch
    E16 = torch.from_numpy(E.astype(np.float16))
    off = np.zeros(len(L) + 1, np.int64)
    np.cumsum(L, out=off[1:])
    scores = torch.empty(Q.shape[0], len(L))
    for qa in range(0, Q.shape[0], 100):
        Qf = torch.from_numpy(Q[qa:qa + 100]).reshape(-1, Q.shape[-1])
        nq = Qf.shape[0] // Q.shape[1]
        for a in range(0, len(L), 256):
            b = min(len(L), a + 256)
            lens = torch.from_numpy(L[a:b].astype(np.int64))
            M = int(lens.max())
            idx = torch.from_numpy(off[a:b])[:, None] + torch.minimum(torch.arange(M)[None], lens[:, None] - 1)
            s = Qf @ E16[idx.reshape(-1)].float().T
            scores[qa:qa + nq, a:b] = s.view(nq, Q.shape[1], b - a, M).amax(-1).sum(1)
    top = scores.topk(11, dim=1)
    return (top.indices[:, :10].numpy(), (top.values[:, 9] - top.values[:, 10]).mean().item(),
            top.values[:, 9].mean().item())


def overlap(ids, exact, k=10):
    return float(np.mean([len(set(list(a)[:k]) & set(e[:k].tolist())) / k for a, e in zip(ids, exact)]))


# ---- colxm phases (run in this venv as subprocesses) -----------------------------------------------
def colxm_build(args):
    """colxm's own build path, as a user runs it: ``Index.build(path, documents, embeddings=...)``
    (k-means on a uniform random sample of passages, compression, inverted lists, the id store,
    fsync and the atomic rename). Ids are the documents' positions in the collection."""
    import shutil

    import torch
    torch.set_num_threads(args.threads)
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig

    E = np.load(os.path.join(args.data, "docs.npy"))
    L = np.load(os.path.join(args.data, "doclens.npy"))
    off = np.zeros(len(L) + 1, np.int64)
    np.cumsum(L, out=off[1:])
    if os.path.exists(args.index):
        shutil.rmtree(args.index)
    config = IndexConfig(nbits=args.nbits, num_centroids=args.centroids or None, full_vectors=args.full_vectors)
    t0 = time.perf_counter()
    idx = Index.build(args.index, [(str(i), "") for i in range(len(L))],
                      embeddings=(E[off[i]:off[i + 1]] for i in range(len(L))), config=config, show_progress=False)
    build_s = time.perf_counter() - t0
    print(json.dumps({"build_s": build_s, "num_centroids": idx.stats()["num_centroids"],
                      "segments": idx.stats()["segments"], "indexed": idx.last_summary.indexed,
                      "peak_rss_mb": rss_mb()}))


def hit_ids(snap):
    """Hits (segment, row, score) -> collection positions (the ids every engine is given).
    Filled row by row: a dict of every id would add ~8 MB of the harness's own to the search's
    peak RSS."""
    pos = []
    for seg in snap.segments:
        p = np.empty(seg.record.num_rows, dtype=np.int64)
        for r, doc_id in seg.store.id_rows():
            p[r] = int(doc_id)
        pos.append(p)
    return lambda hits: [int(pos[g][r]) for g, r, _ in hits]


def colxm_search(args):
    import torch
    # 2 threads of CPU: batches run 2 queries at a time, each with one torch thread; a single query
    # also uses one (its matmuls are small; two OpenMP threads stall whenever the machine is busy)
    torch.set_num_threads(1)
    from colxm.index.index import Index
    from colxm.search import SearchParams

    Q = np.load(os.path.join(args.data, "queries.npy"))[: args.queries]
    base = current_rss_mb()
    snap = Index.open(args.index)._snap
    s = snap.searcher  # the engine under Index.search, without the text-store join (peers return ids)
    s.threads = args.threads
    ids_of = hit_ids(snap)

    out = []
    for setting in json.loads(args.settings):
        p = SearchParams(**setting)
        # exhaustive: single-query latency on the first 10 queries only (it is the slow reference)
        r = timed_queries(lambda q: ids_of(s.search(q, k=10, params=p)[0]),
                          lambda Qb: s.search(Qb, k=10, params=p), Q, single=10 if p.exhaustive else None,
                          keep_batch=True)
        if p.exhaustive:  # every query's ids, from the timed batched run
            r["ids"] = [ids_of(hits) for hits in r.pop("batch_result")]
        r.pop("batch_result", None)
        r["setting"] = setting
        out.append(r)
    print(json.dumps({"search": out, "peak_rss_mb": rss_mb(), "baseline_rss_mb": base,
                      "end_rss_mb": rss_breakdown_mb(args.index)}))


def rss_breakdown_mb(index):
    """Resident MB now by kind of mapping: anonymous (allocations), pages of the index's
    memory-mapped files, other files (libraries). VmHWM counts all three."""
    out, kind = {"anon": 0.0, "index_files": 0.0, "other_files": 0.0}, "anon"
    root = os.path.realpath(index)
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split(None, 5)
            if head[0][0] in "0123456789abcdef" and "-" in head[0] and not head[0].endswith(":"):
                path = head[5].strip() if len(head) > 5 else ""
                kind = "index_files" if path.startswith(root) else ("other_files" if path.startswith("/") else "anon")
            elif head[0] == "Rss:":
                out[kind] += int(head[1]) / 1024
    return out


# ---- orchestration --------------------------------------------------------------------------------
def run_json(cmd, env=None, log_path=None):
    log("$", " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if log_path:
        with open(log_path, "w") as fh:
            fh.write(p.stdout + "\n---stderr---\n" + p.stderr)
    lines = [ln for ln in p.stdout.strip().splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{cmd[:4]} failed (rc {p.returncode}): {p.stderr[-3000:]}")
    return json.loads(lines[-1])


SETTINGS = {
    # session 10 (45k passages, 4.3M vectors, K=32768; raw integer scoring of the exact stage):
    # cheapest to widest, then the exhaustive reference (own exact MaxSim over the compressed index)
    "colxm": [dict(ncells=1, centroid_score_threshold=0.5, ndocs=128, nrerank=32, centroid_nprobe=8),
              dict(ncells=1, centroid_score_threshold=0.5, ndocs=256, nrerank=64, centroid_nprobe=8),
              dict(ncells=1, centroid_score_threshold=0.5, ndocs=256, nrerank=96, centroid_nprobe=16),
              dict(ncells=1, centroid_score_threshold=0.5, ndocs=256, nrerank=128, centroid_nprobe=16),
              dict(ncells=2, centroid_score_threshold=0.5, ndocs=1024, nrerank=192, centroid_nprobe=16),
              dict(ncells=4, centroid_score_threshold=0.4, ndocs=1024, nrerank=256, centroid_nprobe=32),
              dict(ncells=8, centroid_score_threshold=0.3, ndocs=4096, nrerank=512, centroid_nprobe=32),
              dict(ncells=16, centroid_score_threshold=0.3, ndocs=8192, nrerank=2048, centroid_nprobe=32),
              dict(exhaustive=True)],
    # the same index plus its float16 originals (IndexConfig.full_vectors): the cheap settings
    # re-score their whole exact stage with the originals (full_rerank = nrerank: no decompression),
    # the wide ones only its best documents; no exhaustive row: with the originals it is exact
    # MaxSim over the uncompressed vectors, i.e. the truth itself
    "colxm-full": [dict(ncells=1, centroid_score_threshold=0.5, ndocs=256, nrerank=64, full_rerank=64,
                        centroid_nprobe=16),
                   dict(ncells=4, centroid_score_threshold=0.4, ndocs=1024, nrerank=128, full_rerank=128,
                        centroid_nprobe=16),
                   dict(ncells=4, centroid_score_threshold=0.4, ndocs=1024, nrerank=256, full_rerank=256,
                        centroid_nprobe=16),
                   dict(ncells=8, centroid_score_threshold=0.3, ndocs=4096, nrerank=512, full_rerank=512,
                        centroid_nprobe=32),
                   dict(ncells=16, centroid_score_threshold=0.3, ndocs=8192, nrerank=2048, full_rerank=256,
                        centroid_nprobe=32),
                   dict(ncells=32, centroid_score_threshold=0.2, ndocs=16384, nrerank=4096, full_rerank=256,
                        centroid_nprobe=32)],
    # colbert-ai's own defaults for k=10, k<=100 and k>100, then one wider so that its curve
    # reaches its ceiling
    "colbert": [dict(ncells=1, centroid_score_threshold=0.5, ndocs=256),
                dict(ncells=2, centroid_score_threshold=0.45, ndocs=1024),
                dict(ncells=4, centroid_score_threshold=0.4, ndocs=4096),
                dict(ncells=8, centroid_score_threshold=0.3, ndocs=8192)],
    "fastplaid": [dict(n_ivf_probe=2, n_full_scores=256),
                  dict(n_ivf_probe=4, n_full_scores=1024),
                  dict(n_ivf_probe=8, n_full_scores=4096),
                  dict(n_ivf_probe=16, n_full_scores=8192)],
}


OURS = ("colxm", "colxm-full")


def engine_cmds(engine, args, phase, index, settings=None):
    me = os.path.abspath(__file__)
    common = ["--data", args.data, "--index", index, "--nbits", str(args.nbits), "--threads", str(args.threads),
              "--queries", str(args.queries)]
    extra = ["--settings", json.dumps(settings)] if settings is not None else []
    if engine in OURS:
        full = ["--full-vectors"] if engine == "colxm-full" else []
        return [sys.executable, me, f"colxm-{phase}", *common, "--centroids", str(args.centroids or 0),
                *full, *extra], None
    peers = os.path.join(HERE, "search_peers.py")
    if engine == "colbert":
        return [COLBERT_PY, peers, "colbert", phase, *common, *extra], None
    return [PYLATE_PY, peers, "fastplaid", phase, *common, *extra], {"PYTHONPATH": f"{PEERS}/fp17"}


def prewarm_page_cache(index):
    """Read every file of an index once, from this (orchestrating) process, so that each engine's
    search starts with its index in the OS page cache, as after any earlier use on a machine with
    the memory to spare. Reading does not map: the search process's RSS is not affected. (The
    peers load their whole index into memory when they open it; colxm maps or reads it.)"""
    buf = bytearray(1 << 24)
    for root, _, files in os.walk(index):
        for f in files:
            with open(os.path.join(root, f), "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass


def index_dir(engine, args):
    return os.path.join(args.work, f"{engine}.nbits{args.nbits}")


def bench_engine(engine, args, info, exact):
    index = index_dir(engine, args)
    res_path = os.path.join(args.work, f"{engine}.nbits{args.nbits}.json")
    if os.path.exists(res_path) and engine not in args.rerun and engine not in args.research:
        out = json.load(open(res_path))
        if args.rss_probe and "rss_probe" not in out:
            # re-measure search RSS as VmHWM with the engine's largest setting on 20 queries (results
            # written before the VmHWM fix counted the parent's RSS through ru_maxrss)
            probe = argparse.Namespace(**{**vars(args), "queries": 20})
            cmd, env = engine_cmds(engine, probe, "search", index, [SETTINGS[engine][-1]])
            r = run_json(cmd, env, res_path + ".rss.log")
            out["rss_probe"] = {"setting": SETTINGS[engine][-1], "queries": 20, "peak_rss_mb": r["peak_rss_mb"],
                                "baseline_rss_mb": r["baseline_rss_mb"]}
            out["search_peak_rss_mb"], out["search_baseline_rss_mb"] = r["peak_rss_mb"], r["baseline_rss_mb"]
            json.dump(out, open(res_path, "w"), indent=1)
        return out
    if engine in args.research and os.path.exists(res_path):
        build = json.load(open(res_path))["build"]  # same index, search code changed: search again
    else:
        cmd, env = engine_cmds(engine, args, "build", index)
        build = run_json(cmd, env, res_path + ".build.log")
    size = dir_size(index)
    settings = json.loads(args.settings) if (args.settings and engine in OURS) else SETTINGS[engine]
    cmd, env = engine_cmds(engine, args, "search", index, settings)
    prewarm_page_cache(index)
    search = run_json(cmd, env, res_path + ".search.log")
    own_exact = None
    for r in search["search"]:
        if r["setting"].get("exhaustive"):
            own_exact = np.array(r["ids"])
    curve = []
    for r in search["search"]:
        row = {"setting": r["setting"], "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"],
               "batched_ms_per_query": r["batched_ms_per_query"], "overlap@10": overlap(r["ids"], exact)}
        if own_exact is not None:
            row["overlap@10_vs_own_exhaustive"] = overlap(r["ids"], own_exact)
        curve.append(row)
    out = {"engine": engine, "nbits": args.nbits, "build_s": build["build_s"], "build": build,
           "index_bytes": size, "bytes_per_vector": size / info["n_tokens"],
           "search_peak_rss_mb": search["peak_rss_mb"], "search_baseline_rss_mb": search["baseline_rss_mb"],
           "search_end_rss_mb": search.get("end_rss_mb"),
           "index_mb": size / 2**20, "curve": curve, "loadavg": os.getloadavg()}
    if args.rss_per_setting and engine == "colxm":
        out["rss_per_setting"] = rss_per_setting(engine, args, index, settings, res_path)
    json.dump(out, open(res_path, "w"), indent=1)
    return out


def rss_per_setting(engine, args, index, settings, res_path):
    """Search peak RSS of each setting in a process of its own (the curve's process runs every
    setting in turn, so its peak is that of the costliest one plus what the others left behind:
    faiss's inverted file of the centroids, every setting's scratch buffers)."""
    rows = []
    for i, setting in enumerate(settings):
        cmd, env = engine_cmds(engine, args, "search", index, [setting])
        r = run_json(cmd, env, f"{res_path}.rss{i}.log")
        rows.append({"setting": setting, "peak_rss_mb": r["peak_rss_mb"], "baseline_rss_mb": r["baseline_rss_mb"],
                     "end_rss_mb": r.get("end_rss_mb")})
        log(f"   rss {json.dumps(setting)}: peak {r['peak_rss_mb']:.0f} MB, "
            f"{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f} MB above the baseline")
    return rows


def dominance(results, ours_engines=("colxm",)):
    """For each peer setting: our fastest p50 (over ``ours_engines``' curves) reaching at least the
    peer's overlap, and the ratio."""
    ours = [r for e in ours_engines if e in results for r in results[e]["curve"]
            if not r["setting"].get("exhaustive")]
    rows = []
    for eng, res in results.items():
        if eng in OURS:
            continue
        for r in res["curve"]:
            ok = [o["p50_ms"] for o in ours if o["overlap@10"] >= r["overlap@10"]]
            rows.append({"peer": eng, "setting": r["setting"], "peer_overlap": r["overlap@10"],
                         "peer_p50_ms": r["p50_ms"], "colxm_p50_ms": min(ok) if ok else None,
                         "ratio": (min(ok) / r["p50_ms"]) if ok else None})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", nargs="?", default="all", choices=["all", "colxm-build", "colxm-search"])
    ap.add_argument("--emb", default="/tmp/colxm-bench/emb-trained")
    ap.add_argument("--chunks", type=int, default=0, help="chunks of 1000 passages from search_encode.py (0: all)")
    ap.add_argument("--work", default="/tmp/colxm-bench/run")
    ap.add_argument("--data", default=None)
    ap.add_argument("--index", default=None)
    ap.add_argument("--engines", default="colxm,colbert,fastplaid")
    ap.add_argument("--rerun", default="", help="engines to rebuild even when cached")
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--full-vectors", action="store_true",
                    help="colxm-build: also store the float16 originals (engine colxm-full passes it)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--centroids", type=int, default=0)
    ap.add_argument("--settings", default=None)
    ap.add_argument("--queries", type=int, default=200, help="first N of the encoded queries")
    ap.add_argument("--rss-probe", action="store_true", help="re-measure cached engines' search RSS")
    ap.add_argument("--rss-per-setting", action="store_true",
                    help="colxm: also measure search RSS with each setting in a process of its own")
    ap.add_argument("--research", default="", help="engines to search again on their existing index")
    ap.add_argument("--exact-from", default=None, help="update.py's --exact-cache file (same vectors and queries)")
    args = ap.parse_args()
    if args.phase == "colxm-build":
        return colxm_build(args)
    if args.phase == "colxm-search":
        return colxm_search(args)
    args.data = args.data or os.path.join(args.work, "data")
    os.makedirs(args.work, exist_ok=True)
    args.chunks = args.chunks or len(glob.glob(os.path.join(args.emb, "docs.*.npy")))
    prepare(args.emb, args.chunks, args.data, args.queries, args.exact_from)
    info = json.load(open(os.path.join(args.data, "info.json")))
    exact = np.load(os.path.join(args.data, "exact_ids.npy"))[: args.queries]
    info["n_queries_used"] = int(len(exact))
    results = {}
    for engine in args.engines.split(","):
        results[engine] = bench_engine(engine, args, info, exact)
        r = results[engine]
        log(f"== {engine}: build {r['build_s']:.1f}s, {r['bytes_per_vector']:.2f} B/vector, "
            f"search peak RSS {r['search_peak_rss_mb']:.0f} MB (baseline {r['search_baseline_rss_mb']:.0f} MB), "
            f"index {r['index_mb']:.1f} MB")
        for c in r["curve"]:
            log(f"   {json.dumps(c['setting'])}: p50 {c['p50_ms']:.1f} p95 {c['p95_ms']:.1f} "
                f"batched {c['batched_ms_per_query']:.1f} ms/q, overlap@10 {c['overlap@10']:.3f}"
                + (f" (vs own exhaustive {c['overlap@10_vs_own_exhaustive']:.3f})"
                   if "overlap@10_vs_own_exhaustive" in c else ""))
    summary = {"data": info, "chunks": args.chunks, "results": results}
    if "colxm" in results and len(results) > 1:
        summary["dominance"] = dominance(results)
        for d in summary["dominance"]:
            log("  ", d)
        if "colxm-full" in results:
            summary["dominance_with_full_vectors"] = dominance(results, OURS)
        if "colbert" in results:
            summary["build_speedup_vs_colbert"] = results["colbert"]["build_s"] / results["colxm"]["build_s"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
