#!/usr/bin/env python3
"""Zero-shot quality of several models on every shared evaluation set: exact late interaction
(ColBERT models: exhaustive MaxSim, no compression) and single-vector dense retrieval (cosine).

It is the model-comparison half of the quality benchmark (trained colxm vs untrained token
MaxSim vs mean-pooled dense vs DPR-XM); `quality.py` adds BM25 and the compressed index. Runs on
CUDA when there is a GPU (a lent machine: seconds per set), else on the CPU (slow for ddtp).
Metrics through colxm.evaluate (ir-measures). Prints one JSON object as its last line.

usage:
  quality_models.py --data ../shared/data --colbert NAME=MODEL_DIR ... --dense NAME=MODEL_DIR[:pooling] ...
      [--sets xquad-r/en,ddtp/de] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from colxm.evaluate.datasets import load_beir
from colxm.evaluate.metrics import evaluate_run

MEASURES = ("MRR@10", "R@100", "nDCG@10")
DEFAULT_SETS = ["xquad-r/" + x for x in ("en", "de", "es", "ru", "zh", "ar", "hi")] + \
    ["manpages/" + x for x in ("en", "de", "fr", "es")] + ["ddtp/" + x for x in ("en", "de", "fr")]
DEPTH = 100


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _length_sorted_batches(lengths: list[int], batch_size: int):
    order = np.argsort(lengths, kind="stable")[::-1]
    for i in range(0, len(order), batch_size):
        yield order[i:i + batch_size]


@torch.inference_mode()
def colbert_vectors(encoder, texts: list[str], kind: str, batch_size: int = 256):
    """Padded [n, L, dim] float16 on the device and a [n, L] bool mask (True = a kept token)."""
    tok = encoder.tokenize_queries if kind == "query" else encoder.tokenize_documents
    forward = encoder.model.forward_queries if kind == "query" else encoder.model.forward_documents
    dev = device()
    lengths = [len(t) for t in texts]
    parts = [None] * len(texts)
    for idx in _length_sorted_batches(lengths, batch_size):
        t = tok([texts[i] for i in idx])
        ids, att = t["input_ids"].to(dev), t["attention_mask"].to(dev)
        if kind == "query":
            vec, keep = forward(ids, att), torch.ones_like(ids, dtype=torch.bool)
        else:
            vec, keep = forward(ids, att)
        for j, i in enumerate(idx):
            parts[i] = (vec[j].half(), keep[j])
    L = max(v.shape[0] for v, _ in parts)
    dim = parts[0][0].shape[1]
    out = torch.zeros(len(texts), L, dim, dtype=torch.float16, device=dev)
    mask = torch.zeros(len(texts), L, dtype=torch.bool, device=dev)
    for i, (v, k) in enumerate(parts):
        out[i, :v.shape[0]] = v
        mask[i, :k.shape[0]] = k
    return out, mask


@torch.inference_mode()
def maxsim_topk(Q, D, dmask, k: int, q_batch: int | None = None, d_batch: int | None = None):
    """Exhaustive late interaction: sum over query tokens of the max over kept doc tokens."""
    n = D.shape[0]
    q_batch = q_batch or (64 if Q.is_cuda else 16)
    d_batch = d_batch or (4096 if Q.is_cuda else 256)
    scores_all, ids_all = [], []
    dtype = torch.float16 if Q.is_cuda else torch.float32
    for qs in range(0, Q.shape[0], q_batch):
        q = Q[qs:qs + q_batch].to(dtype)
        scores = torch.empty(q.shape[0], n, device=Q.device)
        for ds in range(0, n, d_batch):
            d = D[ds:ds + d_batch].to(dtype)
            sim = torch.einsum("qid,njd->qnij", q, d)
            sim = sim.masked_fill(~dmask[ds:ds + d_batch][None, :, None, :], -1e4)
            scores[:, ds:ds + d.shape[0]] = sim.max(-1).values.float().sum(-1)
        top = scores.topk(min(k, n), dim=1)
        scores_all.append(top.values.cpu())
        ids_all.append(top.indices.cpu())
    return torch.cat(scores_all).numpy(), torch.cat(ids_all).numpy()


@torch.inference_mode()
def dense_topk(model, queries: list[str], docs: list[str], k: int, batch_size: int = 256):
    def embed(texts, kind):
        tok = model.tokenize_queries if kind == "query" else model.tokenize_documents
        out = [None] * len(texts)
        for idx in _length_sorted_batches([len(t) for t in texts], batch_size):
            t = tok([texts[i] for i in idx])
            v = model.embed(t["input_ids"].to(device()), t["attention_mask"].to(device()))
            v = torch.nn.functional.normalize(v.float(), dim=-1)
            for j, i in enumerate(idx):
                out[i] = v[j]
        return torch.stack(out)

    q, d = embed(queries, "query"), embed(docs, "passage")
    top = (q @ d.T).topk(min(k, len(docs)), dim=1)
    return top.values.cpu().numpy(), top.indices.cpu().numpy()


def run_dict(qids, doc_ids, scores, idx) -> dict:
    return {q: {doc_ids[j]: float(s) for s, j in zip(scores[r], idx[r])} for r, q in enumerate(qids)}


def load_models(colbert_specs: list[str], dense_specs: list[str]):
    from colxm.modeling.encoder import Encoder
    from colxm.train.dense import DenseConfig, DenseRetriever

    models = {}
    for spec in colbert_specs:
        name, path = spec.split("=", 1)
        enc = Encoder.from_pretrained(path)
        enc.model.to(device()).eval()
        models[name] = ("colbert", enc)
    for spec in dense_specs:
        name, rest = spec.split("=", 1)
        path, _, pooling = rest.partition(":")
        # e5's own prefixes when the backbone is untrained e5 (that is how e5 is meant to be used)
        cfg = DenseConfig(pooling=pooling or "mean")
        if name.startswith("e5"):
            cfg = DenseConfig(pooling=pooling or "mean", query_prefix="query: ", passage_prefix="passage: ")
        model = DenseRetriever.from_pretrained(path, cfg)
        model.to(device()).eval()
        models[name] = ("dense", model)
    return models


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--colbert", action="append", default=[], help="NAME=MODEL_DIR (HF_ColBERT folder)")
    ap.add_argument("--dense", action="append", default=[], help="NAME=MODEL_DIR[:mean|max|cls]")
    ap.add_argument("--sets", default=",".join(DEFAULT_SETS))
    ap.add_argument("--max-docs", type=int, default=None, help="only the first N documents (smoke runs)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    models = load_models(args.colbert, args.dense)
    table: dict = {}
    t0 = time.perf_counter()
    for set_name in [s for s in args.sets.split(",") if s]:
        es = load_beir(Path(args.data) / set_name)
        docs = list(es.corpus())[: args.max_docs]
        doc_ids = [d["id"] for d in docs]
        doc_texts = [(d.get("title", "") + " " + d["text"]).strip() if d.get("title") else d["text"] for d in docs]
        qids = list(es.queries)
        qtexts = [es.queries[q] for q in qids]
        table[set_name] = {"docs": len(docs), "queries": len(qids)}
        for name, (kind, model) in models.items():
            t1 = time.perf_counter()
            if kind == "colbert":
                D, dmask = colbert_vectors(model, doc_texts, "document")
                Q, _ = colbert_vectors(model, qtexts, "query")
                scores, idx = maxsim_topk(Q, D, dmask, DEPTH)
                del D, dmask, Q
            else:
                scores, idx = dense_topk(model, qtexts, doc_texts, DEPTH)
            metrics = evaluate_run(run_dict(qids, doc_ids, scores, idx), es.qrels, MEASURES)
            table[set_name][name] = {k: round(v, 4) for k, v in metrics.items()}
            print(f"{set_name:14s} {name:22s} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                  + f"  ({time.perf_counter() - t1:.1f}s)", file=sys.stderr, flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if args.out:  # after every result, so that a run cut short still leaves what it measured
                Path(args.out).write_text(json.dumps({"sets": table}, indent=1) + "\n")
    names = list(models)
    summary = {name: {m: round(float(np.mean([table[s][name][m] for s in table])), 4) for m in MEASURES}
               for name in names}
    result = {"benchmark": "quality_models", "device": str(device()), "depth": DEPTH,
              "wall_s": round(time.perf_counter() - t0, 1), "sets": table, "mean_over_sets": summary}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
