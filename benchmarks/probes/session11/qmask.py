import json, random, numpy as np
from pathlib import Path
from colxm.modeling.encoder import Encoder
from colxm.evaluate.datasets import load_beir
enc = Encoder.from_pretrained("/tmp/s11/base384"); C = Path("/tmp/s11/cache")
def save(name, texts):
    ids = enc.tokenize_queries(texts)["input_ids"]; m = (ids != enc.colbert_tokenizer.mask_id).numpy()
    assert m.shape[1] == 32; np.save(C / f"{name}.qmask.npy", m)
rows = [json.loads(l) for l in open("/tmp/s10/triples2.jsonl")]
qs = list(dict.fromkeys(r["query"] for r in rows)); random.Random(0).shuffle(qs)
save("train_q", qs[1000:9000]); save("dev_q", qs[:1000])
for lang in "ru en zh ar hi de es".split():
    ids = json.load(open(C / f"xquad-r_{lang}.ids.json")); es = load_beir(Path("/work/shared/data/xquad-r") / lang)
    save(f"xquad-r_{lang}_q", [es.queries[q] for q in ids["qids"]])
# ict queries
import re
pos = {r["query"]: r["positive"] for r in rows}; rng = random.Random(1); qq = []
for q in qs[1000:9000]:
    s = [x for x in re.split(r"(?<=[.!?])\s+", pos[q]) if len(x.split()) >= 4]
    if len(s) < 2: continue
    i = rng.randrange(len(s)); qq.append(s[i])
save("ict_q", qq)
print("ok")
