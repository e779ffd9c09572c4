#!/usr/bin/env python3
"""Encode a BEIR corpus ONCE into cached token vectors for benchmarks/search.py.

Every engine in the search benchmark is fed these same vectors, so only index build and search are
timed. Backbone: multilingual e5-small (built offline by ../shared/tools/make_e5_small.py) plus a
fixed random orthonormal 384->128 projection (seed 0), rows L2-normalised; documents keep their
non-padding tokens (doc_maxlen 180, [CLS]/[SEP] included, as colbert-ai does), queries are padded
to query_maxlen 32 with <mask> tokens that are attended (ColBERT query augmentation).

Output (in --out): docs.<chunk>.npy float16 [T_c, 128] and doclens.<chunk>.npy int32 per chunk of
--chunk passages (written as they finish, so a partial run is usable), queries.npy float32
[nq, 32, 128], meta.json. Usage:
  flock /tmp/colxm-cpu.lock .venv/bin/python benchmarks/search_encode.py \
      --model /tmp/colxm-bench/e5-small --data ../shared/data/ddtp/it --out /tmp/colxm-bench/emb
"""
import argparse
import json
import os
import time

import numpy as np
import torch

DOC_MAXLEN, QUERY_MAXLEN, DIM = 180, 32, 128


def projection(hidden: int, dim: int = DIM, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, dim, generator=g))
    return q  # [hidden, dim], orthonormal columns


@torch.inference_mode()
def encode_batch(model, tok, proj, texts, maxlen, query=False):
    if query:
        enc = tok(texts, padding="max_length", truncation=True, max_length=maxlen, return_tensors="pt")
        ids = enc["input_ids"]
        pad = ids == tok.pad_token_id
        ids[pad] = tok.mask_token_id
        mask = torch.ones_like(ids)
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state @ proj
        return torch.nn.functional.normalize(out, dim=-1), None
    enc = tok(texts, padding="longest", truncation=True, max_length=maxlen, return_tensors="pt")
    out = model(**enc).last_hidden_state @ proj
    out = torch.nn.functional.normalize(out, dim=-1)
    m = enc["attention_mask"].bool()
    return out[m], m.sum(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="/tmp/colxm-bench/e5-small")
    ap.add_argument("--data", default="/work/shared/data/ddtp/it")
    ap.add_argument("--out", default="/tmp/colxm-bench/emb")
    ap.add_argument("--n-queries", type=int, default=200)
    ap.add_argument("--chunk", type=int, default=1000)
    ap.add_argument("--bsize", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
    model = AutoModel.from_pretrained(args.model, local_files_only=True).eval()
    proj = projection(model.config.hidden_size)
    os.makedirs(args.out, exist_ok=True)

    docs = [json.loads(line) for line in open(os.path.join(args.data, "corpus.jsonl"))]
    texts = [((d.get("title") or "") + " " + d["text"]).strip() for d in docs]
    queries = [json.loads(line) for line in open(os.path.join(args.data, "queries.jsonl"))]
    rng = np.random.default_rng(0)
    qsel = sorted(rng.choice(len(queries), size=min(args.n_queries, len(queries)), replace=False).tolist())
    qtexts = [queries[i]["text"] for i in qsel]
    qpath = os.path.join(args.out, "queries.npy")
    if not os.path.exists(qpath):
        Q = torch.cat([encode_batch(model, tok, proj, qtexts[a:a + 64], QUERY_MAXLEN, query=True)[0]
                       for a in range(0, len(qtexts), 64)])
        np.save(qpath, Q.numpy().astype(np.float32))
    meta = {"model": args.model, "data": args.data, "doc_maxlen": DOC_MAXLEN, "query_maxlen": QUERY_MAXLEN,
            "dim": DIM, "chunk": args.chunk, "n_docs_total": len(docs), "doc_ids": [d["_id"] for d in docs],
            "query_ids": [queries[i]["_id"] for i in qsel]}
    json.dump(meta, open(os.path.join(args.out, "meta.json"), "w"))

    t0 = time.perf_counter()
    done = 0
    for c, a in enumerate(range(0, len(texts), args.chunk)):
        path = os.path.join(args.out, f"docs.{c:03d}.npy")
        if os.path.exists(path):
            continue
        chunk = texts[a:a + args.chunk]
        order = np.argsort([len(t) for t in chunk])  # length-sorted batches pad less
        vecs = [None] * len(chunk)
        for b in range(0, len(chunk), args.bsize):
            idx = order[b:b + args.bsize]
            flat, lens = encode_batch(model, tok, proj, [chunk[i] for i in idx], DOC_MAXLEN)
            for i, part in zip(idx, torch.split(flat, lens.tolist())):
                vecs[i] = part.to(torch.float16).numpy()
        np.save(os.path.join(args.out, f"doclens.{c:03d}.npy"), np.array([len(v) for v in vecs], np.int32))
        np.save(path + ".tmp.npy", np.concatenate(vecs))
        os.replace(path + ".tmp.npy", path)
        done += len(chunk)
        el = time.perf_counter() - t0
        print(f"chunk {c}: {a + len(chunk)}/{len(texts)} docs, {el:.0f}s, {done / el:.1f} docs/s", flush=True)


if __name__ == "__main__":
    main()
