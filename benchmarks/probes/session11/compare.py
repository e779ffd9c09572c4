import json, sys
def load(p):
    return {r["set"]: r for r in map(json.loads, open(p)) if "set" in r}
old = load("/work/main/benchmarks/results/quality_nbits2_scoring_session10.jsonl")
q384 = load("/work/main/benchmarks/results/quality_384.jsonl")
new = load(sys.argv[1])
base = {k: load(v) for k, v in (a.split("=") for a in sys.argv[2:])}
sets = [s for s in old if s in new]
order = ["xquad-r/" + x for x in "en de es ru zh ar hi".split()] + ["manpages/" + x for x in "en de fr es".split()] + ["ddtp/" + x for x in "en de fr".split()]
cols = ["bm25", "dense"] + [f"{k} exact" for k in base] + ["default exp exact", "default noexp exact", "default exp 2b", "default noexp 2b"]
print("| set | " + " | ".join(cols) + " |"); print("|---" * (len(cols) + 1) + "|")
def g(r, s, sysname):
    try: return r[s]["systems"][sysname]["MRR@10"]
    except KeyError: return None
acc = {c: [] for c in cols}
for s in [x for x in order if x in new]:
    vals = [g(old, s, "bm25"), g(q384, s, "dense")] + [g(b, s, "colxm_exact") for b in base.values()] + \
        [g(old, s, "colxm_exact"), g(new, s, "colxm_exact"), g(old, s, "colxm_nbits2"), g(new, s, "colxm_nbits2")]
    for c, v in zip(cols, vals): acc[c].append(v)
    print(f"| {s} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in vals) + " |")
print("| mean | " + " | ".join(f"{sum(v)/len(v):.4f}" if v and None not in v else "–" for v in acc.values()) + " |")
