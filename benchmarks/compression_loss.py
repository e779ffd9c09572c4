#!/usr/bin/env python3
"""Where does compressed late interaction lose quality on a larger set: the codec or PLAID?

For one evaluation set (default ddtp/de) and the same token vectors that benchmarks/quality.py
caches, this builds colxm indexes at nbits 1/2/4 and, on each SAME index, runs

  exhaustive   exact MaxSim over every document's decompressed vectors (no candidate generation):
               its gap to `exact` (uncompressed vectors) is the codec's loss
  plaid_k10    PLAID with SearchParams.for_k(10), k=10 (what `colxm search` does by default)
  plaid_k100   PLAID with SearchParams.for_k(100), k=100 (what benchmarks/quality.py measured)
  plaid_wide / plaid_widest   PLAID with more cells, no centroid pruning, more documents re-ranked
               (k=100): their gap to `exhaustive` is the candidate-generation loss

and, per codec variant, how the k-means sample was drawn:

  default      IndexConfig defaults: k-means on the first 2^17 vectors of the stream (first-N)
  shuffled     the same sample size, documents in a seeded random order (a random sample)
  full         kmeans_sample_vectors large enough for every vector (k-means then caps itself at
               max_points_per_centroid per centroid)
  cN           num_centroids=N (e.g. c4096) instead of the ColBERTv2 rule, default sample

Metrics MRR@10 / R@100 / nDCG@10 (ir-measures via colxm.evaluate; R@100 is left out for k=10
runs), mean overlap of each run's top 10 with `exhaustive`'s, and search milliseconds per query.
One JSON line per (variant, nbits), then a JSON summary as the LAST line.

usage: flock /tmp/colxm-cpu.lock python benchmarks/compression_loss.py [--data ../shared/data]
           [--set ddtp/de] [--nbits 1,2,4] [--variants default,shuffled,full] [--max-queries 500]
           [--params exhaustive,plaid_k10] [--out rows.jsonl]
       python benchmarks/compression_loss.py --table rows.jsonl   (markdown table of MRR@10)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import MEASURES, cached_token_vectors, exact_maxsim_scores, log, run_from_scores  # noqa: E402

from colxm.evaluate import evaluate_run, load_beir  # noqa: E402

DEPTH = 100


def param_sets():
    from colxm.search.searcher import SearchParams

    big = 1 << 20
    return {  # name: (k, params)
        "plaid_k10": (10, SearchParams.for_k(10)),
        "plaid_k100": (DEPTH, SearchParams.for_k(DEPTH)),
        "plaid_wide": (DEPTH, SearchParams(ncells=32, centroid_score_threshold=0.0, ndocs=big, nrerank=2048)),
        "plaid_widest": (DEPTH, SearchParams(ncells=64, centroid_score_threshold=-1.0, ndocs=big, nrerank=4096)),
        "exhaustive": (DEPTH, SearchParams(exhaustive=True)),
    }


def centroid_use(idx) -> dict | None:
    """How many centroids hold tokens, and how many tokens the fullest holds (reads the index's
    segment arrays through private attributes: a diagnostic, None if they have moved)."""
    try:
        seg = idx._snap.searcher.segments[0]
        counts = np.bincount(np.asarray(seg.codes), minlength=int(seg.ivf_offsets.shape[0]) - 1)
    except (AttributeError, IndexError, TypeError):
        return None
    return {"centroids_with_tokens": int((counts > 0).sum()), "max_tokens": int(counts.max()),
            "median_tokens": float(np.median(counts))}


def top10_overlap(run: dict, ref: dict) -> float:
    def top(r):
        return set(sorted(r, key=lambda d: -r[d])[:10])
    return float(np.mean([len(top(run[q]) & top(ref[q])) / max(1, len(top(ref[q]))) for q in ref]))


def markdown_table(rows: list[dict]) -> str:
    """MRR@10 per (variant, nbits) and search setting, with exact MaxSim alongside."""
    names = list(dict.fromkeys(n for r in rows for n in r["systems"]))
    lines = ["| variant | nbits | centroids | 1-cos | exact | " + " | ".join(names) + " |",
             "|" + "---|" * (5 + len(names))]
    for r in rows:
        err = (r.get("fit") or {}).get("mean_error")
        cells = []
        for n in names:
            m = r["systems"].get(n)
            cells.append("–" if m is None else
                         f"{m['MRR@10']:.3f} ({m['MRR@10'] - r['exact']['MRR@10']:+.3f}), {m['ms_per_query']:.0f} ms")
        lines.append(f"| {r['variant']} | {r['nbits']} | {r['num_centroids']} | "
                     f"{'–' if err is None else f'{err:.4f}'} | {r['exact']['MRR@10']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":  # compression_loss.py --table rows.jsonl
        print(markdown_table([json.loads(x) for x in Path(sys.argv[2]).read_text().splitlines() if x.strip()]))
        return
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=here.parent.parent / "shared" / "data")
    ap.add_argument("--set", default="ddtp/de")
    ap.add_argument("--nbits", default="1,2,4")
    ap.add_argument("--variants", default="default,shuffled,full")
    ap.add_argument("--params", default=None, help="comma-separated subset of the search settings (default: all)")
    ap.add_argument("--max-queries", type=int, default=500, help="seeded sample, as benchmarks/quality.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/colxm-bench/quality"))
    ap.add_argument("--tmp", type=Path, default=None, help="where temporary indexes are built")
    ap.add_argument("--out", type=Path, default=None, help="also append each (variant, nbits) JSON line here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig
    from colxm.modeling.default_model import default_model_path
    from colxm.modeling.encoder import Encoder

    model = str(default_model_path())
    cache = args.cache / Path(model).name / args.set.replace("/", "_")
    ev = load_beir(args.data / args.set)
    docs = list(ev.corpus())
    qids = sorted(ev.queries)
    if args.max_queries and len(qids) > args.max_queries:
        qids = sorted(random.Random(0).sample(qids, args.max_queries))  # the sample quality.py uses
    qrels = {q: ev.qrels[q] for q in qids}
    doc_ids = [d["id"] for d in docs]

    enc = None
    if not (cache / "doc_vectors.f16.npy").exists():
        log(f"{args.set}: no cached vectors under {cache}; encoding (long)")
    enc = Encoder.from_pretrained(model, num_threads=args.threads)
    D, doclens = cached_token_vectors(enc, docs, cache)
    qkey = hashlib.sha1("\n".join(qids).encode()).hexdigest()[:10]
    qpath = cache / f"queries_{qkey}.npy"
    if qpath.exists():
        Qarr = np.load(qpath)
    else:
        Qarr = np.stack(enc.encode_queries([ev.queries[q] for q in qids], show_progress=False))
        np.save(qpath, Qarr)
    Q = list(Qarr.astype(np.float32))
    log(f"{args.set}: {len(docs)} docs, {len(D)} token vectors, {len(Q)} queries of {Qarr.shape[1]} tokens")

    def measure(run, k):
        names = MEASURES if k >= DEPTH else tuple(m for m in MEASURES if not m.startswith("R@"))
        return {m: round(v, 4) for m, v in evaluate_run(run, qrels, names).items()}

    t0 = time.perf_counter()
    epath = cache / f"exact_run_{qkey}.json"  # exact MaxSim top 100 on the uncompressed vectors
    if epath.exists():
        exact_run = json.loads(epath.read_text())
    else:
        scores = np.concatenate([exact_maxsim_scores(Q[s:s + 32], D, doclens) for s in range(0, len(Q), 32)])
        exact_run = run_from_scores(qids, doc_ids, scores)
        epath.write_text(json.dumps(exact_run))
        del scores
    summary = {"set": args.set, "model": model, "documents": len(docs), "token_vectors": int(len(D)),
               "queries": len(qids), "exact": measure(exact_run, DEPTH),
               "exact_seconds": round(time.perf_counter() - t0, 1), "runs": []}
    log(f"exact: {summary['exact']}")

    offsets = np.concatenate([[0], np.cumsum(doclens)])
    settings = param_sets()
    if args.params:
        settings = {n: settings[n] for n in args.params.split(",")}
    for variant in [v for v in args.variants.split(",") if v]:
        order = list(range(len(docs)))
        cfg = {}
        if variant == "shuffled":
            random.Random(0).shuffle(order)
        elif variant == "full":
            cfg["kmeans_sample_vectors"] = int(len(D)) + 1
        elif variant.startswith("c") and variant[1:].isdigit():  # e.g. c4096: that many centroids
            cfg["num_centroids"] = int(variant[1:])
        elif variant != "default":
            raise SystemExit(f"unknown variant {variant!r}")
        for nbits in [int(x) for x in args.nbits.split(",") if x]:
            tmp = Path(tempfile.mkdtemp(prefix="colxm-closs-", dir=args.tmp))
            row = {"variant": variant, "nbits": nbits, "systems": {}}
            try:
                t0 = time.perf_counter()
                idx = Index.build(tmp / "index", [{"id": doc_ids[i], "text": docs[i]["text"]} for i in order],
                                  embeddings=(D[offsets[i]:offsets[i + 1]] for i in order),
                                  config=IndexConfig(nbits=nbits, **cfg), show_progress=False)
                row["build_seconds"] = round(time.perf_counter() - t0, 1)
                st = idx.stats()
                row["num_centroids"] = st.get("num_centroids")
                row["kmeans_sample_vectors"] = IndexConfig(**cfg).kmeans_sample_vectors
                row["fit"] = st["drift"]["build"]  # mean 1-cos of decompressed vs original, on a sample
                row["centroid_use"] = centroid_use(idx)
                runs = {}
                for name, (k, params) in sorted(settings.items(), key=lambda kv: kv[0] != "exhaustive"):
                    t0 = time.perf_counter()
                    hits = idx.search_embeddings(Q, k=k, params=params)
                    ms = (time.perf_counter() - t0) * 1000 / len(Q)
                    runs[name] = {q: {h.id: h.score for h in hs} for q, hs in zip(qids, hits)}
                    res = measure(runs[name], k)
                    res["top10_overlap_exhaustive"] = round(top10_overlap(runs[name], runs["exhaustive"]), 4) \
                        if "exhaustive" in runs else None
                    res["ms_per_query"] = round(ms, 1)
                    row["systems"][name] = res
                    log(f"{variant} nbits={nbits} {name}: {res}")
                idx.close()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            row.update(set=args.set, exact=summary["exact"])
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
            summary["runs"].append(row)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
