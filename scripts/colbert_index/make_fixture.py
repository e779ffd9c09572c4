#!/usr/bin/env python3
"""Build the colbert-ai index fixture for tests/index/test_colbert_import.py, with colbert-ai itself.

Run in a throwaway venv with colbert-ai 0.2.22 (torch 2.13.0, faiss-cpu, transformers 4.57.6):
  flock /tmp/colxm-cpu.lock /tmp/peers/venv-colbert/bin/python scripts/colbert_index/make_fixture.py
It writes tests/fixtures/colbert_index/:
  index/            colbert-ai's index folder as colbert-ai wrote it (.pt tensors, .json), nbits=2
  queries.npy       float32 [nq, query_maxlen, dim]: the query embeddings colbert-ai searched with
  expected.json     colbert-ai's top-10 (pids, scores) per query for two search settings, plus
                    colbert-ai's own decompression of the first tokens (decompressed.npy)
The model is a tiny random HF_ColBERT (tests/tiny_models.py); its vectors mean nothing, which is fine:
the test checks that colxm reads the index and ranks exactly as colbert-ai does.
"""
import json
import os
import random
import shutil
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "colbert_index")
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main():
    import torch
    torch.set_num_threads(2)
    import colbert
    from colbert import Indexer, Searcher
    from colbert.infra import ColBERTConfig, Run, RunConfig
    from tiny_models import _WORDS, make_tiny_bert_colbert

    work = tempfile.mkdtemp(prefix="colbert-fixture-")
    ckpt = make_tiny_bert_colbert(os.path.join(work, "model"), dim=32, hidden=32, query_maxlen=16, doc_maxlen=32)
    rng = random.Random(0)
    topics = [rng.sample(_WORDS, 12) for _ in range(20)]
    docs = [" ".join(rng.choice(topics[i % 20]) for _ in range(rng.randint(6, 20))) for i in range(300)]
    queries = [" ".join(rng.choice(topics[j]) for _ in range(4)) for j in range(8)]

    cfg = ColBERTConfig(nbits=2, doc_maxlen=32, query_maxlen=16, dim=32, kmeans_niters=4, index_bsize=64,
                        avoid_fork_if_possible=True, root=work, experiment="fx")
    with Run().context(RunConfig(nranks=1, experiment="fx", root=work, avoid_fork_if_possible=True)):
        path = Indexer(checkpoint=str(ckpt), config=cfg, verbose=0).index(name="fx", collection=docs, overwrite=True)
    expected = {"colbert_ai": getattr(colbert, "__version__", "0.2.22"), "queries": queries, "settings": []}
    with Run().context(RunConfig(nranks=1, experiment="fx", root=work)):
        s = Searcher(index="fx", config=ColBERTConfig(root=work, experiment="fx"), verbose=0)
        Q = s.encode(queries).float()
        for setting in (dict(ncells=1, centroid_score_threshold=0.5, ndocs=256),
                        dict(ncells=16, centroid_score_threshold=-1.0, ndocs=4096)):
            s.config.configure(**setting)
            top = []
            for i in range(len(queries)):
                pids, _, scores = s.dense_search(Q[i:i + 1], k=10)
                top.append({"pids": [int(p) for p in pids], "scores": [float(x) for x in scores]})
            expected["settings"].append({"setting": setting, "top10": top})
        emb = s.ranker.embeddings
        n = 64
        dec = s.ranker.codec.decompress(type(emb)(emb.codes[:n], emb.residuals[:n])).float().numpy()
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    shutil.copytree(path, os.path.join(OUT, "index"))
    np.save(os.path.join(OUT, "queries.npy"), Q.numpy().astype(np.float32))
    np.save(os.path.join(OUT, "decompressed.npy"), dec.astype(np.float32))
    json.dump(expected, open(os.path.join(OUT, "expected.json"), "w"), indent=1)
    shutil.rmtree(work, ignore_errors=True)
    print("wrote", OUT, sorted(os.listdir(os.path.join(OUT, "index"))))


if __name__ == "__main__":
    main()
