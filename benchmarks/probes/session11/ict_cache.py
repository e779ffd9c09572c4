import json, sys, re, random, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, "/work/main/benchmarks")
from quality_models import colbert_vectors
from colxm.modeling.encoder import Encoder
torch.set_num_threads(2)
enc = Encoder.from_pretrained("/tmp/s11/base384"); enc.model.eval(); out = Path("/tmp/s11/cache")
rows = [json.loads(l) for l in open("/tmp/s10/triples2.jsonl")]
qs = list(dict.fromkeys(r["query"] for r in rows)); random.Random(0).shuffle(qs)
pos = {r["query"]: r["positive"] for r in rows}
rng = random.Random(1); qq, pp = [], []
for q in qs[1000:9000]:
    s = [x for x in re.split(r"(?<=[.!?])\s+", pos[q]) if len(x.split()) >= 4]
    if len(s) < 2: continue
    i = rng.randrange(len(s)); qq.append(s[i]); pp.append(" ".join(s[:i] + s[i+1:]))
print(len(qq), flush=True)
def save(name, texts, kind):
    t = time.time(); parts=[]; lens=[]
    for st in range(0, len(texts), 2048):
        V, M = colbert_vectors(enc, texts[st:st+2048], kind, batch_size=64)
        for v, m in zip(V, M):
            k = v[m]; parts.append(k.numpy()); lens.append(k.shape[0])
    np.save(out / f"{name}.vec.npy", np.concatenate(parts)); np.save(out / f"{name}.len.npy", np.array(lens)); print(name, len(texts), time.time()-t, flush=True)
save("ict_q", qq, "query"); save("ict_p", pp, "document")
