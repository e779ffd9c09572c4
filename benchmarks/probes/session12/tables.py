"""Markdown tables for benchmarks/README.md → Session 12: per set and per language, MRR@10.

usage: tables.py NEW.jsonl OLD_DEFAULT.jsonl   (quality.py rows: the query-weight model run with
--compare-plain, and the session-11 default model on the same seeded queries)
Dense on DDTP (not in NEW) is the all-query e5-mean figure of results/quality_models_gpu_384.json.
"""
import json
import sys
from collections import defaultdict

DENSE_DDTP_ALL_QUERIES = {"ddtp/en": 0.665, "ddtp/de": 0.611, "ddtp/fr": 0.633}
new = {json.loads(l)["set"]: json.loads(l)["systems"] for l in open(sys.argv[1]) if l.strip()}
old = {json.loads(l)["set"]: json.loads(l)["systems"] for l in open(sys.argv[2]) if l.strip()}
cols = [("bm25", lambda s: new[s]["bm25"]), ("e5 dense", lambda s: new[s]["dense"] if "dense" in new[s] else
                                              {"MRR@10": DENSE_DDTP_ALL_QUERIES[s]}),
        ("untrained (a)", lambda s: new[s]["colxm_exact_plain"]),
        ("session-11 default", lambda s: old[s]["colxm_exact"]),
        ("**query weights**", lambda s: new[s]["colxm_exact"]),
        ("untrained 2 bits", lambda s: new[s]["colxm_nbits2_plain"]),
        ("query weights 2 bits", lambda s: new[s]["colxm_nbits2"])]
sets = [s for s in new if s in old]
print("| set | " + " | ".join(c for c, _ in cols) + " |")
print("|---|" + "---|" * len(cols))
def cell(f, s):
    try:
        return f(s)["MRR@10"]
    except KeyError:  # not measured (the DDTP sets ran without an index)
        return None


table = {s: [cell(f, s) for _, f in cols] for s in sets}
for s in sets:
    print(f"| {s} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in table[s]) + " |")
means = [None if any(table[s][i] is None for s in sets) else sum(table[s][i] for s in sets) / len(sets)
         for i in range(len(cols))]
print(f"| **mean of {len(sets)}** | " + " | ".join("–" if m is None else f"{m:.4f}" for m in means) + " |")
print()
by_lang = defaultdict(list)
for s in sets:
    by_lang[s.split("/")[1]].append(s)
print("| language (sets) | " + " | ".join(c for c, _ in cols[:5]) + " | query weights beat (a), (b), (c)? |")
print("|---|" + "---|" * 6)
for lang, ss in by_lang.items():
    m = [sum(table[s][i] for s in ss) / len(ss) for i in range(5)]
    wins = m[4] > max(m[0], m[1], m[2])
    print(f"| {lang} ({len(ss)}) | " + " | ".join(f"{v:.4f}" for v in m) + f" | {'yes' if wins else 'no'} |")
