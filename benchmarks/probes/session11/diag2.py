import sys, json, numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks")
from pathlib import Path
from quality_models import colbert_vectors
from colxm.modeling.encoder import Encoder
from colxm.train.losses import maxsim_scores
from colxm.evaluate.datasets import load_beir
from colxm.evaluate.metrics import evaluate_run
torch.set_num_threads(2)
models = {n: Encoder.from_pretrained(p) for n, p in [("base", "/tmp/s11/base384"), ("default", sys.argv[1])]}
for lang in sys.argv[2].split(","):
    es = load_beir(Path("/work/shared/data") / lang); docs = list(es.corpus()); qids = list(es.queries)
    dtexts = [d["text"] for d in docs]; qtexts = [es.queries[q] for q in qids]
    out = {}
    for name, enc in models.items():
        real = torch.from_numpy((enc.tokenize_queries(qtexts)["input_ids"] != enc.colbert_tokenizer.mask_id).numpy())
        D, M = colbert_vectors(enc, dtexts, "document", 64); Q, _ = colbert_vectors(enc, qtexts, "query", 64)
        D = D.float(); Q = Q.float()
        for tag, qm in [("mask", None), ("nomask", real)]:
            sc = torch.cat([maxsim_scores(Q[s:s+64], D, M, None if qm is None else qm[s:s+64]) for s in range(0, len(qids), 64)])
            top = sc.topk(10, dim=1)
            run = {q: {docs[j]["id"]: float(x) for x, j in zip(top.values[r], top.indices[r])} for r, q in enumerate(qids)}
            out[f"{name}_{tag}"] = round(evaluate_run(run, es.qrels, ("MRR@10",))["MRR@10"], 4)
    print(lang, json.dumps(out), flush=True)
