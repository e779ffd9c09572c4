"""Train a 384x384 projection (identity init) on cached base token vectors; eval dev + xquad."""
import json, sys, time, argparse
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, "/work/main/src")
from colxm.train.losses import maxsim_scores, colbert_xm_loss
from colxm.evaluate.datasets import load_beir
from colxm.evaluate.metrics import evaluate_run
torch.set_num_threads(2); torch.manual_seed(0)
ap = argparse.ArgumentParser()
ap.add_argument("--cache", default="/tmp/s11/cache"); ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--epochs", type=float, default=1); ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--wd", type=float, default=0.0); ap.add_argument("--sets", default="ru,en,zh,ar,hi,de,es")
ap.add_argument("--init", default="eye"); ap.add_argument("--save", default=None); ap.add_argument("--reg", type=float, default=0.0)
ap.add_argument("--eval-every", type=int, default=0); ap.add_argument("--ict", type=float, default=0.0); ap.add_argument("--nomask", action="store_true"); ap.add_argument("--ddtp", type=float, default=1.0)
a = ap.parse_args()
C = Path(a.cache)
def load(name):
    v = torch.from_numpy(np.load(C / f"{name}.vec.npy")); l = np.load(C / f"{name}.len.npy")
    off = np.concatenate([[0], np.cumsum(l)]); return v, l, off
def qm(name, idx):
    return torch.from_numpy(np.load(C / f"{name}.qmask.npy")[idx]) if a.nomask else None
def padded(v, l, off, idx):
    L = int(l[idx].max()); out = torch.zeros(len(idx), L, v.shape[1]); m = torch.zeros(len(idx), L, dtype=torch.bool)
    for r, i in enumerate(idx):
        out[r, :l[i]] = v[off[i]:off[i+1]].float(); m[r, :l[i]] = True
    return out, m
def proj(x, W): return F.normalize(x @ W.T, dim=-1)
@torch.inference_mode()
def topk(W, qv, ql, qo, dv, dl, do, k=10, qname=None):
    D, M = padded(dv, dl, do, np.arange(len(dl))); D = proj(D, W)
    res = []
    for s in range(0, len(ql), 64):
        Q, _ = padded(qv, ql, qo, np.arange(s, min(s+64, len(ql)))); Q = proj(Q, W)
        mq = qm(qname, np.arange(s, min(s+64, len(ql)))) if qname else None
        sc = torch.cat([maxsim_scores(Q, D[j:j+64], M[j:j+64], mq) for j in range(0, len(dl), 64)], 1)
        res.append(sc.topk(min(k, len(dl)), dim=1))
    return torch.cat([r.values for r in res]).numpy(), torch.cat([r.indices for r in res]).numpy()
def xquad(W, lang):
    tag = f"xquad-r_{lang}"; ids = json.load(open(C / f"{tag}.ids.json"))
    s, i = topk(W, *load(tag + "_q"), *load(tag + "_d"), qname=tag + "_q")
    run = {q: {ids["doc_ids"][j]: float(x) for x, j in zip(s[r], i[r])} for r, q in enumerate(ids["qids"])}
    es = load_beir(Path("/work/shared/data/xquad-r") / lang)
    return evaluate_run(run, es.qrels, ("MRR@10",))["MRR@10"]
HAVE = (C / "train_p.len.npy").exists()
if HAVE:
    tix = json.load(open(C / "train_index.json")); tq = load("train_q"); dq = load("dev_q"); tp = load("train_p"); dev = tix["dev"]
def dev_mrr(W):
    pids = np.array([p for _, p in dev]); pv = tp[0]; sub = [tp[0][tp[2][p]:tp[2][p+1]] for p in pids]
    l = np.array([x.shape[0] for x in sub]); o = np.concatenate([[0], np.cumsum(l)])
    s, i = topk(W, *dq, torch.cat(sub), l, o, qname="dev_q")
    rr = [(1.0 / (list(i[r]).index(r) + 1)) if r in i[r] else 0.0 for r in range(len(dev))]
    return float(np.mean(rr))
def evaluate(W, tag):
    r = {"dev": round(dev_mrr(W), 4)} if HAVE else {}
    for lang in a.sets.split(","): r[lang] = round(xquad(W, lang), 4)
    print(tag, json.dumps(r), flush=True); return r
W = torch.nn.Parameter(torch.eye(384))
if a.init != "eye": W.data = torch.from_numpy(np.load(a.init)).float()
if a.epochs == 0: evaluate(W.detach(), "init"); sys.exit()
opt = torch.optim.AdamW([W], lr=a.lr, weight_decay=0.0)
train = np.array(tix["train"]); steps = int(a.epochs * len(train) / a.batch)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / (0.1 * steps), max(0.0, (steps - s) / (0.9 * steps))))
iq = load("ict_q") if a.ict else None; ip = load("ict_p") if a.ict else None
rng = np.random.default_rng(0); order = np.concatenate([rng.permutation(len(train)) for _ in range(int(np.ceil(a.epochs)) + 1)])
t0 = time.time(); I = torch.eye(384)
for step in range(steps):
    b = train[order[step * a.batch:(step + 1) * a.batch]]
    Q, _ = padded(*tq, b[:, 0]); pid = b[:, 1:].reshape(-1); D, M = padded(*tp, pid)
    scores = maxsim_scores(proj(Q, W), proj(D, W), M, qm("train_q", b[:, 0]))
    loss = colbert_xm_loss(scores, 2) + a.reg * ((W - I) ** 2).sum()
    if a.ict:
        j = rng.integers(0, len(iq[1]), a.batch); Qi, _ = padded(*iq, j); Di, Mi = padded(*ip, j)
        si = maxsim_scores(proj(Qi, W), proj(Di, W), Mi, qm("ict_q", j))
        loss = a.ddtp * loss + a.ict * F.cross_entropy(si, torch.arange(a.batch))
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if step % 50 == 0: print(f"step {step}/{steps} loss {loss.item():.4f} {time.time()-t0:.0f}s", flush=True)
    if a.eval_every and step and step % a.eval_every == 0: evaluate(W.detach(), f"step{step}")
print(f"train {time.time()-t0:.0f}s |W-I| {float((W.detach()-I).norm()):.3f}")
if a.save: np.save(a.save, W.detach().numpy())
evaluate(W.detach(), f"final lr={a.lr} ep={a.epochs} reg={a.reg}")
