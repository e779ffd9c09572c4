"""Generated clustered token vectors for codec/search tests (no model needed)."""
import numpy as np


def clustered_docs(n_docs=300, dim=32, n_topics=40, doclen=(8, 24), seed=0, noise=0.35):
    """Documents whose tokens are noisy copies of a few topic directions, L2-normalised."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_topics, dim)).astype(np.float32)
    docs = []
    for _ in range(n_docs):
        m = int(rng.integers(doclen[0], doclen[1] + 1))
        t = rng.choice(n_topics, size=3, replace=False)
        base = topics[rng.choice(t, size=m)]
        v = base + noise * rng.standard_normal((m, dim)).astype(np.float32) * np.sqrt(1.0)
        docs.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    return docs, topics


def queries_from(docs, n=20, qlen=8, seed=1, noise=0.3):
    """Queries made from tokens of random documents plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        d = docs[int(rng.integers(len(docs)))]
        v = d[rng.integers(0, d.shape[0], size=qlen)] + noise * rng.standard_normal((qlen, d.shape[1]))
        out.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    return out


def exact_topk(Q, docs, k=10):
    """Brute-force MaxSim over raw float vectors: list of doc indexes, best first."""
    s = np.array([(Q @ d.T).max(1).sum() for d in docs])
    return list(np.argsort(-s, kind="stable")[:k])
