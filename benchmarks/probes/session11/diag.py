import sys, json, numpy as np, torch
sys.argv = ["proj.py", "--epochs", "0", "--sets", "ru"]
exec(open("/tmp/s11/proj.py").read().split("W = torch.nn.Parameter")[0])
W1 = torch.from_numpy(np.load("/tmp/s11/W_1e-3.npy")).float(); I = torch.eye(384)
ids = json.load(open(C / "xquad-r_ru.ids.json")); es = load_beir(Path("/work/shared/data/xquad-r/ru"))
qv, ql, qo = load("xquad-r_ru_q"); dv, dl, do = load("xquad-r_ru_d")
# real-token mask for queries: positions whose vector differs from [MASK] rows? use tokenizer instead
from colxm.modeling.encoder import Encoder
enc = Encoder.from_pretrained("/tmp/s11/base384")
qtexts = [es.queries[q] for q in ids["qids"]]
tq = enc.tokenize_queries(qtexts); real = (tq["input_ids"] != enc.colbert_tokenizer.mask_id).numpy()
D0, M = padded(dv, dl, do, np.arange(len(dl))); Q0, _ = padded(qv, ql, qo, np.arange(len(ql)))
def mrr(Wq, Wd, qmask=None):
    D = proj(D0, Wd); Q = proj(Q0, Wq)
    with torch.no_grad():
        sc = maxsim_scores(Q, D, M, None if qmask is None else torch.from_numpy(qmask))
    top = sc.topk(10, dim=1)
    run = {q: {ids["doc_ids"][j]: float(x) for x, j in zip(top.values[r], top.indices[r])} for r, q in enumerate(ids["qids"])}
    return round(evaluate_run(run, es.qrels, ("MRR@10",))["MRR@10"], 4)
print("base", mrr(I, I), "trained", mrr(W1, W1), "q-only", mrr(W1, I), "d-only", mrr(I, W1))
print("no-mask base", mrr(I, I, real), "no-mask trained", mrr(W1, W1, real))
print("mean real tokens", real.sum(1).mean())
