#!/usr/bin/env python3
"""Retrieval quality on every shared evaluation set, side by side:

  bm25          BM25 (bm25s, lower-cased word tokens, no stemming: language-neutral)
  dense         single-vector: plain multilingual-e5-small (no ColBERT training), mean-pooled,
                cosine (e5 convention: "query: " / "passage: " prefixes)
  colxm_exact   late interaction, exhaustive MaxSim on uncompressed token vectors
  colxm_nbitsB  late interaction through a colxm index (residual compression at B bits, PLAID search)
  *_plain       with --compare-plain: the same model without its learned query-token weights
                (same document vectors; plain ColBERT on the same backbone and projection)

Metrics MRR@10, R@100, nDCG@10 via colxm.evaluate (ir-measures). Token vectors are cached under
--cache so that a rerun (or another nbits) does not encode again. One JSON line per set, then a
JSON summary of all sets as the LAST line.

usage: flock /tmp/colxm-cpu.lock python benchmarks/quality.py [--data ../shared/data]
           [--sets xquad-r/en,manpages/de] [--model default] [--max-queries 2000] [--threads 2]
           [--out results.jsonl]
       python benchmarks/quality.py --table results.jsonl     (markdown table of a results file)
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

from colxm.evaluate import evaluate_run, load_beir

MEASURES = ("MRR@10", "R@100", "nDCG@10")
DEPTH = 100
SMALL_SETS = ["xquad-r/" + x for x in ("en", "de", "es", "ru", "zh", "ar", "hi")] + \
    ["manpages/" + x for x in ("en", "de", "fr", "es")]
BIG_SETS = ["ddtp/de", "ddtp/fr", "ddtp/en"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _overlap10(run: dict, exact: dict) -> float:
    """Mean share of each query's exact top 10 that ``run``'s top 10 keeps."""
    def top10(r):
        return set(sorted(r, key=lambda d: -r[d])[:10])
    return float(np.mean([len(top10(run[q]) & top10(exact[q])) / 10 for q in exact]))


def run_from_scores(qids, doc_ids, scores: np.ndarray, depth: int = DEPTH) -> dict:
    depth = min(depth, scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    return {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}


# ---------------------------------------------------------------------------- systems

def bm25_run(docs, queries) -> dict:
    import bm25s

    corpus_tokens = bm25s.tokenize([d["text"] for d in docs], stopwords=None, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    qids = list(queries)
    q_tokens = bm25s.tokenize([queries[q] for q in qids], stopwords=None, show_progress=False)
    k = min(DEPTH, len(docs))
    results, scores = retriever.retrieve(q_tokens, k=k, show_progress=False, n_threads=1)
    ids = [d["id"] for d in docs]
    return {q: {ids[int(j)]: float(s) for j, s in zip(results[i], scores[i]) if s > 0} for i, q in enumerate(qids)}


def dense_encode(backbone, tokenizer, texts, prefix: str, max_length: int, batch_size: int = 32) -> np.ndarray:
    import torch

    max_length = min(max_length, backbone.config.max_position_embeddings - 2)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), backbone.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = tokenizer([prefix + texts[i] for i in idx], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
            h = backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            v = (h * m).sum(1) / m.sum(1)
            out[idx] = torch.nn.functional.normalize(v, dim=-1).numpy()
    return out


def exact_maxsim_scores(Q: list[np.ndarray], D: np.ndarray, doclens: np.ndarray,
                        chunk_tokens: int = 1 << 16) -> np.ndarray:
    """[nq, ndocs] exact MaxSim: for each query token its best doc token, summed (numpy, chunked)."""
    nq = len(Q)
    Qm = np.concatenate(Q).astype(np.float32)  # [query tokens, dim]; queries may differ in length
    q_starts = np.concatenate([[0], np.cumsum([len(q) for q in Q])[:-1]])
    offsets = np.concatenate([[0], np.cumsum(doclens)])
    scores = np.zeros((nq, len(doclens)), dtype=np.float32)
    d0 = 0
    while d0 < len(doclens):  # chunk on document boundaries
        d1 = int(np.searchsorted(offsets, offsets[d0] + chunk_tokens, side="right")) - 1
        d1 = max(d1, d0 + 1)
        t0, t1 = offsets[d0], offsets[d1]
        sims = Qm @ D[t0:t1].T  # [nq*lq, T]
        starts = (offsets[d0:d1] - t0).astype(np.int64)
        best = np.maximum.reduceat(sims, starts, axis=1)  # [query tokens, d1-d0]
        scores[:, d0:d1] = np.add.reduceat(best, q_starts, axis=0)
        d0 = d1
    return scores


# ---------------------------------------------------------------------------- vectors (cached)

def cached_token_vectors(enc, docs, cache: Path):
    vec, lens = cache / "doc_vectors.f16.npy", cache / "doclens.npy"
    if vec.exists() and lens.exists():
        return np.load(vec).astype(np.float32), np.load(lens)
    cache.mkdir(parents=True, exist_ok=True)
    out = enc.encode_documents([d["text"] for d in docs], show_progress=False)
    doclens = np.array([len(v) for v in out], dtype=np.int64)
    D = np.concatenate(out).astype(np.float32)
    np.save(vec, D.astype(np.float16))
    np.save(lens, doclens)
    return D, doclens


def cached_array(path: Path, make) -> np.ndarray:
    if path.exists():
        return np.load(path)
    arr = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


def evaluate_set(name: str, data: Path, args, enc, dense_model, cache_root: Path) -> dict:
    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig

    t_set = time.perf_counter()
    ev = load_beir(data / name)
    docs = [d for d in ev.corpus()]
    qids = sorted(ev.queries)
    if args.max_queries and len(qids) > args.max_queries:
        qids = sorted(random.Random(0).sample(qids, args.max_queries))
    queries = {q: ev.queries[q] for q in qids}
    qrels = {q: ev.qrels[q] for q in qids}
    doc_ids = [d["id"] for d in docs]
    cache = cache_root / name.replace("/", "_")
    runs: dict[str, dict] = {}
    row = {"set": name, "model": cache_root.name, "documents": len(docs), "queries": len(qids), "queries_total": len(ev.queries),
           "systems": {}, "seconds": {}}

    def record(system, run, t0):
        row["systems"][system] = {m: round(v, 4) for m, v in evaluate_run(run, qrels, MEASURES).items()}
        runs[system] = run
        exact = "colxm_exact" + ("_plain" if system.endswith("_plain") else "")
        if system.startswith("colxm_nbits") and exact in runs:  # fidelity: top 10 kept from exact
            row.setdefault("overlap@10_vs_exact", {})[system] = round(_overlap10(run, runs[exact]), 4)
        row["seconds"][system] = round(time.perf_counter() - t0, 1)
        log(f"{name} {system}: {row['systems'][system]} ({row['seconds'][system]} s)")

    t0 = time.perf_counter()
    record("bm25", bm25_run(docs, queries), t0)
    if args.bm25_only:
        row["seconds"]["total"] = round(time.perf_counter() - t_set, 1)
        return row

    if dense_model is not None:
        t0 = time.perf_counter()
        backbone, tok = dense_model
        Dd = cached_array(cache_root.parent / "e5-dense" / name.replace("/", "_") / "docs.npy",
                          lambda: dense_encode(backbone, tok, [d["text"] for d in docs], "passage: ", args.doc_maxlen))
        qkey = hashlib.sha1("\n".join(qids).encode()).hexdigest()[:10]
        Qd = cached_array(cache_root.parent / "e5-dense" / name.replace("/", "_") / f"queries_{qkey}.npy",
                          lambda: dense_encode(backbone, tok, [queries[q] for q in qids], "query: ", 64))
        record("dense", run_from_scores(qids, doc_ids, Qd @ Dd.T), t0)

    t0 = time.perf_counter()
    D, doclens = cached_token_vectors(enc, docs, cache)
    log(f"{name}: {len(D)} document token vectors ({time.perf_counter() - t0:.0f} s)")
    Q = enc.encode_queries([queries[q] for q in qids], show_progress=False)
    # the same model without its learned query-token weights: every row back to unit length, which
    # is plain ColBERT on the same backbone and projection (bar (a) when those are untrained)
    variants = [("", Q)] + ([("_plain", [q / np.linalg.norm(q, axis=1, keepdims=True) for q in Q])]
                            if args.compare_plain else [])
    for suffix, Qv in variants:
        t0 = time.perf_counter()
        scores = np.concatenate([exact_maxsim_scores(Qv[s:s + 32], D, doclens) for s in range(0, len(Qv), 32)])
        record("colxm_exact" + suffix, run_from_scores(qids, doc_ids, scores), t0)

    offsets = np.concatenate([[0], np.cumsum(doclens)])
    for nbits in args.nbits:
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix="colxm-quality-", dir=args.tmp))
        try:
            idx = Index.build(tmp / "index", [{"id": d["id"], "text": d["text"]} for d in docs],
                              embeddings=(D[offsets[i]:offsets[i + 1]] for i in range(len(docs))),
                              config=IndexConfig(nbits=nbits), show_progress=False)
            for suffix, Qv in variants:
                t0 = time.perf_counter() if suffix else t0
                hits = idx.search_embeddings(Qv, k=min(DEPTH, len(docs)))
                record(f"colxm_nbits{nbits}{suffix}", {q: {h.id: h.score for h in hs} for q, hs in zip(qids, hits)}, t0)
            if args.compare_normalised:
                # the same index and codes scored as colbert-ai scores them (decompressed vectors
                # L2-normalised): a measurement switch on the opened codec, not a user setting
                t0 = time.perf_counter()
                codec = idx._snap.searcher.codec
                codec.normalize = not codec.normalize
                hits = idx.search_embeddings(Q, k=min(DEPTH, len(docs)))
                codec.normalize = not codec.normalize
                record(f"colxm_nbits{nbits}_{'normalised' if not codec.normalize else 'raw'}",
                       {q: {h.id: h.score for h in hs} for q, hs in zip(qids, hits)}, t0)
            idx.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    row["seconds"]["total"] = round(time.perf_counter() - t_set, 1)
    return row


def markdown_table(rows: list[dict]) -> str:
    """One line per set, MRR@10 / R@100 / nDCG@10 per system (for benchmarks/README.md)."""
    systems = list(dict.fromkeys(name for r in rows for name in r["systems"]))
    head = "| set | docs | queries | " + " | ".join(systems) + " |"
    lines = [head, "|" + "---|" * (3 + len(systems))]
    for r in rows:
        cells = []
        for name in systems:
            m = r["systems"].get(name)
            cells.append(" / ".join(f"{m[x]:.3f}" for x in MEASURES) if m else "–")
        lines.append(f"| {r['set']} | {r['documents']} | {r['queries']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":  # quality.py --table results.jsonl
        print(markdown_table([json.loads(x) for x in Path(sys.argv[2]).read_text().splitlines() if x.strip()]))
        return
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=here.parent.parent / "shared" / "data")
    ap.add_argument("--sets", default=",".join(SMALL_SETS + BIG_SETS),
                    help="comma-separated set names under --data (default: all evaluation sets)")
    ap.add_argument("--model", default="default", help="'default' or a ColBERT model folder")
    ap.add_argument("--nbits", default="1,2,4")
    ap.add_argument("--max-queries", type=int, default=2000, help="seeded sample of queries per set (0 = all)")
    ap.add_argument("--doc-maxlen", type=int, default=256, help="dense baseline passage length (tokens)")
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--compare-normalised", action="store_true",
                    help="also score each compressed index as colbert-ai does (decompressed vectors normalised)")
    ap.add_argument("--compare-plain", action="store_true",
                    help="also score the model without its learned query-token weights (same document vectors)")
    ap.add_argument("--bm25-only", action="store_true", help="only the BM25 column (no model, seconds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/colxm-bench/quality"))
    ap.add_argument("--tmp", type=Path, default=None, help="where temporary indexes are built")
    ap.add_argument("--out", type=Path, default=None, help="also append each set's JSON line to this file")
    args = ap.parse_args()
    args.nbits = [int(x) for x in args.nbits.split(",") if x]

    import torch

    torch.set_num_threads(args.threads)
    from colxm.modeling.encoder import Encoder

    model = args.model
    if args.bm25_only:
        model = "bm25"
    elif model == "default":
        from colxm.modeling.default_model import default_model_path

        model = str(default_model_path())
    enc = None if args.bm25_only else Encoder.from_pretrained(model, num_threads=args.threads)
    dense_model = None
    if not args.no_dense and not args.bm25_only:  # the plain e5-small backbone, whatever the ColBERT model's training
        from colxm.modeling.default_model import load_e5_backbone

        dense_model = load_e5_backbone()
    cache_root = args.cache / Path(model).name
    summary = {"model": model, "max_queries": args.max_queries, "depth": DEPTH, "sets": {}, "not_run": []}
    sets = [s for s in args.sets.split(",") if s]
    for name in sets:
        if not (args.data / name / "corpus.jsonl").exists():
            summary["not_run"].append(name)
            log(f"{name}: not found under {args.data}, skipped")
            continue
        row = evaluate_set(name, args.data, args, enc, dense_model, cache_root)
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
        summary["sets"][name] = row["systems"]
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
