"""Cache token vectors (L2-normalised, identity projection), token ids and hidden-state norms of
the untrained 384-d model for XQuAD-R sets and for a subset of the mined DDTP triples.

usage: cache.py MODEL TRIPLES OUT [xquad-r/LANG ...] [trainN]
Queries keep only their own tokens (query expansion off); documents drop the skip-listed tokens.
"""
import json, random, sys, time
from pathlib import Path

import numpy as np
import torch

from colxm.evaluate.datasets import load_beir
from colxm.modeling.encoder import Encoder

torch.set_num_threads(2)
model, triples, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
enc = Encoder.from_pretrained(model)
enc.model.eval()
mask_id = enc.colbert_tokenizer.mask_id


@torch.inference_mode()
def save(name, texts, kind, batch=64):
    t0 = time.time()
    vecs, ids_out, norms, lens = [], [], [], []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    parts = [None] * len(texts)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        tok = (enc.tokenize_queries if kind == "query" else enc.tokenize_documents)([texts[i] for i in idx])
        ids, att = tok["input_ids"], tok["attention_mask"]
        H = enc.model.hidden(ids, att)
        keep = (ids != mask_id) & att.bool() if kind == "query" else enc.model.document_mask(ids) & att.bool()
        V = torch.nn.functional.normalize(enc.model.linear(H), dim=-1)
        for j, i in enumerate(idx):
            k = keep[j]
            parts[i] = (V[j][k].half().numpy(), ids[j][k].int().numpy(), H[j][k].norm(dim=-1).half().numpy())
    for v, i, n in parts:
        vecs.append(v); ids_out.append(i); norms.append(n); lens.append(v.shape[0])
    np.save(out / f"{name}.vec.npy", np.concatenate(vecs))
    np.save(out / f"{name}.ids.npy", np.concatenate(ids_out))
    np.save(out / f"{name}.norm.npy", np.concatenate(norms))
    np.save(out / f"{name}.len.npy", np.array(lens))
    print(name, len(texts), sum(lens), f"{time.time() - t0:.0f}s", flush=True)


out.mkdir(parents=True, exist_ok=True)
for w in sys.argv[4:]:
    if w.startswith("train"):
        n = int(w[5:])
        rows = [json.loads(l) for l in open(triples)]
        qs = list(dict.fromkeys(r["query"] for r in rows))
        random.Random(0).shuffle(qs)
        dev, tr = qs[:1000], qs[1000:1000 + n]
        first = {}
        for r in rows:
            first.setdefault(r["query"], r)
        trip = [(q, first[q]["positive"], first[q]["negative"]) for q in tr]
        passages = list(dict.fromkeys([p for _, p, _ in trip] + [x for _, _, x in trip]
                                      + [first[q]["positive"] for q in dev]))
        pid = {p: i for i, p in enumerate(passages)}
        json.dump({"train": [(i, pid[p], pid[x]) for i, (q, p, x) in enumerate(trip)],
                   "dev": [(i, pid[first[q]["positive"]]) for i, q in enumerate(dev)]},
                  open(out / "train_index.json", "w"))
        save("train_q", [t[0] for t in trip], "query")
        save("dev_q", dev, "query")
        save("train_p", passages, "document")
    else:
        es = load_beir(Path("/work/shared/data") / w)
        docs = list(es.corpus())
        qids = list(es.queries)
        tag = w.replace("/", "_")
        json.dump({"doc_ids": [d["id"] for d in docs], "qids": qids}, open(out / f"{tag}.ids.json", "w"))
        save(tag + "_d", [(d.get("title", "") + " " + d["text"]).strip() if d.get("title") else d["text"]
                          for d in docs], "document")
        save(tag + "_q", [es.queries[q] for q in qids], "query")
