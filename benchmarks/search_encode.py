#!/usr/bin/env python3
"""Encode a BEIR corpus ONCE into cached token vectors for benchmarks/search.py and update.py.

Every engine in the search benchmark is fed these same vectors, so only index build and search are
timed. Encoder: colxm's own ``Encoder.from_pretrained(--model)`` (default: the trained default
model folder, dim 128), exactly as ``colxm index`` encodes: documents through ``iter_documents``
(non-punctuation tokens, doc_maxlen of the model), queries through ``encode_queries`` (query_maxlen
rows each, mask-token augmentation as the model config says).

Output (in --out): docs.<chunk>.npy float16 [T_c, dim] and doclens.<chunk>.npy int32 per chunk of
--chunk passages (written as they finish, so a partial run is usable and a rerun resumes),
queries.npy float32 [nq, query_maxlen, dim] (--n-queries sampled with seed 0), meta.json (model,
data, ids), and an empty file DONE when everything is written. Usage:
  nohup flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/search_encode.py \
      --data ../shared/data/ddtp/it --out /tmp/colxm-bench/emb-trained &
"""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

DEFAULT_MODEL = str(Path.home() / ".cache/colxm/models/e5-small-colbert-trained-2b17eaaee615")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data", default="/work/shared/data/ddtp/it")
    ap.add_argument("--out", default="/tmp/colxm-bench/emb-trained")
    ap.add_argument("--n-queries", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--bsize", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from colxm.modeling.encoder import Encoder

    torch.set_num_threads(args.threads)
    enc = Encoder.from_pretrained(args.model, num_threads=args.threads, batch_size=args.bsize)
    os.makedirs(args.out, exist_ok=True)
    done_flag = os.path.join(args.out, "DONE")
    if os.path.exists(done_flag):
        os.remove(done_flag)

    docs = [json.loads(line) for line in open(os.path.join(args.data, "corpus.jsonl"))]
    texts = [((d.get("title") or "") + " " + d["text"]).strip() for d in docs]
    queries = [json.loads(line) for line in open(os.path.join(args.data, "queries.jsonl"))]
    rng = np.random.default_rng(0)
    qsel = sorted(rng.choice(len(queries), size=min(args.n_queries, len(queries)), replace=False).tolist())
    qtexts = [queries[i]["text"] for i in qsel]
    meta = {"model": args.model, "model_name": os.path.basename(os.path.normpath(args.model)),
            "encoder": "colxm.modeling.encoder.Encoder", "data": args.data,
            "doc_maxlen": enc.config.doc_maxlen, "query_maxlen": enc.config.query_maxlen, "dim": enc.dim,
            "chunk": args.chunk, "n_docs_total": len(docs), "doc_ids": [d["_id"] for d in docs],
            "query_ids": [queries[i]["_id"] for i in qsel]}
    json.dump(meta, open(os.path.join(args.out, "meta.json"), "w"))

    t0 = time.perf_counter()
    qpath = os.path.join(args.out, "queries.npy")
    if not os.path.exists(qpath):
        Q = np.stack(enc.encode_queries(qtexts, batch_size=64)).astype(np.float32)
        np.save(qpath + ".tmp.npy", Q)
        os.replace(qpath + ".tmp.npy", qpath)
        print(f"{len(qtexts)} queries {Q.shape}: {time.perf_counter() - t0:.0f}s", flush=True)

    t0 = time.perf_counter()
    done = 0
    for c, a in enumerate(range(0, len(texts), args.chunk)):
        path = os.path.join(args.out, f"docs.{c:03d}.npy")
        if os.path.exists(path):
            continue
        vecs = list(enc.iter_documents(texts[a:a + args.chunk], show_progress=False))
        np.save(os.path.join(args.out, f"doclens.{c:03d}.npy"), np.array([len(v) for v in vecs], np.int32))
        np.save(path + ".tmp.npy", np.concatenate(vecs).astype(np.float16))
        os.replace(path + ".tmp.npy", path)
        done += len(vecs)
        el = time.perf_counter() - t0
        print(f"chunk {c}: {a + len(vecs)}/{len(texts)} docs, {el:.0f}s, {done / el:.1f} docs/s", flush=True)
    open(done_flag, "w").close()


if __name__ == "__main__":
    main()
