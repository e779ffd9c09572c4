"""Cache base384 token vectors (normalized, = h/|h|) for xquad sets and a training subset."""
import json, sys, time, random
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks")
from quality_models import colbert_vectors
from colxm.modeling.encoder import Encoder
from colxm.evaluate.datasets import load_beir
torch.set_num_threads(2)
model = sys.argv[1]; out = Path(sys.argv[2]); what = sys.argv[3:]
enc = Encoder.from_pretrained(model); enc.model.eval()
def save(name, texts, kind):
    t = time.time(); parts=[]; lens=[]
    for s in range(0, len(texts), 2048):
        V, M = colbert_vectors(enc, texts[s:s+2048], kind, batch_size=64)
        for v, m in zip(V, M):
            k = v[m]; parts.append(k.numpy()); lens.append(k.shape[0])
    np.save(out / f"{name}.vec.npy", np.concatenate(parts)); np.save(out / f"{name}.len.npy", np.array(lens))
    print(name, len(texts), sum(lens), f"{time.time()-t:.0f}s", flush=True)
out.mkdir(parents=True, exist_ok=True)
for w in what:
    if w.startswith("train"):
        n = int(w[5:])
        rows = [json.loads(l) for l in open("/tmp/s10/triples2.jsonl")]
        qs = list(dict.fromkeys(r["query"] for r in rows))
        random.Random(0).shuffle(qs)
        dev, tr = qs[:1000], qs[1000:1000+n]
        first = {}
        for r in rows: first.setdefault(r["query"], r)
        pos = {r["query"]: r["positive"] for r in rows}
        trip = [(q, first[q]["positive"], first[q]["negative"]) for q in tr]
        passages = list(dict.fromkeys([p for _, p, _ in trip] + [n_ for _, _, n_ in trip] + [pos[q] for q in dev]))
        pid = {p: i for i, p in enumerate(passages)}
        json.dump({"train": [(i, pid[p], pid[n_]) for i, (q, p, n_) in enumerate(trip)],
                   "dev": [(i, pid[pos[q]]) for i, q in enumerate(dev)]}, open(out / "train_index.json", "w"))
        save("train_q", [t[0] for t in trip], "query"); save("dev_q", dev, "query"); save("train_p", passages, "document")
    else:
        es = load_beir(Path("/work/shared/data") / w)
        docs = list(es.corpus()); qids = list(es.queries)
        tag = w.replace("/", "_")
        json.dump({"doc_ids": [d["id"] for d in docs], "qids": qids}, open(out / f"{tag}.ids.json", "w"))
        save(tag + "_d", [(d.get("title", "") + " " + d["text"]).strip() if d.get("title") else d["text"] for d in docs], "document")
        save(tag + "_q", [es.queries[q] for q in qids], "query")
