"""Probe: a learned weight per query token, w_i = softplus(a . v_i + c * log|h_i| + b) (starting at
w = 1, the untrained model), scoring sum_i w_i max_j <v_i, d_j>; optionally the 384x384 projection
too. Trained on cached DDTP triples (cache.py), then MRR@10 on 1,000 held-out English dev queries
and on XQuAD-R (all 1,190 queries per language).

usage: qweight.py [--lr 1e-3] [--epochs 1] [--proj-lr 0] [--hidden 0] ...
"""
import argparse, json, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colxm.evaluate.datasets import load_beir
from colxm.evaluate.metrics import evaluate_run
from colxm.train.losses import colbert_xm_loss, maxsim_scores

torch.set_num_threads(2); torch.manual_seed(0)
ap = argparse.ArgumentParser()
ap.add_argument("--cache", default="/tmp/s12/cache")
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--proj-lr", type=float, default=0.0)
ap.add_argument("--epochs", type=float, default=1)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--hidden", type=int, default=0, help="0: linear head; N: one hidden layer of N")
ap.add_argument("--no-norm-feature", action="store_true")
ap.add_argument("--sets", default="ru,zh,ar,hi,en,de,es")
ap.add_argument("--save", default=None)
ap.add_argument("--mean-one", action="store_true", help="scale each query's weights to mean 1")
ap.add_argument("--temp-lr", type=float, default=0.0, help="learn a loss temperature (log scale) at this lr")
ap.add_argument("--load", default=None, help="evaluate the query-weight head of this colxm model folder")
ap.add_argument("--eval-every", type=int, default=0)
a = ap.parse_args()
C = Path(a.cache)


def load(name):
    v = torch.from_numpy(np.load(C / f"{name}.vec.npy")).float()
    n = torch.from_numpy(np.load(C / f"{name}.norm.npy")).float()
    l = np.load(C / f"{name}.len.npy")
    return v, n, l, np.concatenate([[0], np.cumsum(l)])


def padded(t, idx):
    v, n, l, off = t
    L = int(l[idx].max())
    out = torch.zeros(len(idx), L, v.shape[1]); nm = torch.ones(len(idx), L); m = torch.zeros(len(idx), L, dtype=torch.bool)
    for r, i in enumerate(idx):
        out[r, :l[i]] = v[off[i]:off[i + 1]]; nm[r, :l[i]] = n[off[i]:off[i + 1]]; m[r, :l[i]] = True
    return out, nm, m


class Head(torch.nn.Module):
    def __init__(self, dim=384, hidden=0, norm_feature=True):
        super().__init__()
        self.norm_feature = norm_feature
        self.mean_one = False
        self.log_temp = torch.nn.Parameter(torch.zeros(()))
        fin = dim + 1
        if hidden:
            self.net = torch.nn.Sequential(torch.nn.Linear(fin, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
        else:
            self.net = torch.nn.Linear(fin, 1)
        last = self.net[-1] if hidden else self.net
        torch.nn.init.zeros_(last.weight); torch.nn.init.constant_(last.bias, float(np.log(np.e - 1)))
        self.W = torch.nn.Parameter(torch.eye(dim))

    def queries(self, V, norms, mask):
        Q = F.normalize(V @ self.W.T, dim=-1)
        feat = torch.cat([V, (norms.log() if self.norm_feature else torch.zeros_like(norms))[..., None]], -1)
        w = F.softplus(self.net(feat).squeeze(-1)) * mask
        if self.mean_one:
            w = w * mask.sum(1, keepdim=True) / w.sum(1, keepdim=True)
        return Q * w[..., None], w

    def docs(self, V):
        return F.normalize(V @ self.W.T, dim=-1)


@torch.inference_mode()
def topk(head, qt, dt, k=10):
    D, _, M = padded(dt, np.arange(len(dt[2]))); D = head.docs(D)
    vals, inds = [], []
    for s in range(0, len(qt[2]), 64):
        Q, n, m = padded(qt, np.arange(s, min(s + 64, len(qt[2]))))
        Qw, _ = head.queries(Q, n, m)
        sc = torch.cat([maxsim_scores(Qw, D[j:j + 64], M[j:j + 64]) for j in range(0, len(D), 64)], 1)
        r = sc.topk(min(k, len(D)), dim=1); vals.append(r.values); inds.append(r.indices)
    return torch.cat(vals).numpy(), torch.cat(inds).numpy()


def xquad(head, lang):
    tag = f"xquad-r_{lang}"; ids = json.load(open(C / f"{tag}.ids.json"))
    s, i = topk(head, load(tag + "_q"), load(tag + "_d"))
    run = {q: {ids["doc_ids"][j]: float(x) for x, j in zip(s[r], i[r])} for r, q in enumerate(ids["qids"])}
    return evaluate_run(run, load_beir(Path("/work/shared/data/xquad-r") / lang).qrels, ("MRR@10",))["MRR@10"]


tix = json.load(open(C / "train_index.json")); tq = load("train_q"); dq = load("dev_q"); tp = load("train_p")


def dev_mrr(head):
    pids = np.array([p for _, p in tix["dev"]])
    v, n, l, off = tp
    sub = (torch.cat([v[off[p]:off[p + 1]] for p in pids]), torch.cat([n[off[p]:off[p + 1]] for p in pids]), l[pids])
    sub = (*sub, np.concatenate([[0], np.cumsum(l[pids])]))
    _, i = topk(head, dq, sub)
    return float(np.mean([(1.0 / (list(i[r]).index(r) + 1)) if r in i[r] else 0.0 for r in range(len(pids))]))


def evaluate(head, tag):
    r = {"dev": round(dev_mrr(head), 4)}
    for lang in a.sets.split(","):
        if lang:
            r[lang] = round(xquad(head, lang), 4)
    print(tag, json.dumps(r), flush=True)
    return r


head = Head(hidden=a.hidden, norm_feature=not a.no_norm_feature)
head.mean_one = a.mean_one
if a.load:
    from safetensors.torch import load_file
    st = load_file(f"{a.load}/model.safetensors")
    with torch.no_grad():
        head.net.weight.copy_(st["colxm_query_weights.score.weight"]); head.net.bias.copy_(st["colxm_query_weights.score.bias"])
    head.mean_one = True
if a.epochs == 0:
    evaluate(head, "init"); sys.exit()
groups = [{"params": list(head.net.parameters()), "lr": a.lr}]
if a.proj_lr:
    groups.append({"params": [head.W], "lr": a.proj_lr})
if a.temp_lr:
    groups.append({"params": [head.log_temp], "lr": a.temp_lr})
else:
    head.W.requires_grad_(False)
opt = torch.optim.AdamW(groups, weight_decay=0.0)
train = np.array(tix["train"]); steps = int(a.epochs * len(train) / a.batch)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / (0.1 * steps), max(0.0, (steps - s) / (0.9 * steps))))
rng = np.random.default_rng(0)
order = np.concatenate([rng.permutation(len(train)) for _ in range(int(np.ceil(a.epochs)) + 1)])
t0 = time.time()
for step in range(steps):
    b = train[order[step * a.batch:(step + 1) * a.batch]]
    Q, n, m = padded(tq, b[:, 0]); D, _, M = padded(tp, b[:, 1:].reshape(-1))
    Qw, w = head.queries(Q, n, m)
    loss = colbert_xm_loss(maxsim_scores(Qw, head.docs(D), M) * head.log_temp.exp(), 2)
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if step % 50 == 0:
        ws = w[m]
        print(f"step {step}/{steps} loss {loss.item():.4f} w mean {ws.mean():.3f} min {ws.min():.3f} max {ws.max():.3f} T {head.log_temp.exp().item():.2f} {time.time() - t0:.0f}s", flush=True)
    if a.eval_every and step and step % a.eval_every == 0:
        evaluate(head, f"step{step}")
print(f"train {time.time() - t0:.0f}s")
if a.save:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, a.save)
evaluate(head, f"final lr={a.lr} proj_lr={a.proj_lr} ep={a.epochs} hidden={a.hidden}")
