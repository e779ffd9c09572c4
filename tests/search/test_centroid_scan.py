"""Centroids held in their stored precision: exact rows, the int8 scan's top centroids against an
exact float32 ranking, and search that never builds a float32 table or loads faiss."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from colxm.index.centroid_table import CentroidTable, from_int8_rows, int8_rows
from colxm.search.candidates import CentroidScorer


def unit_rows(n, dim, seed, clusters=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    if clusters:  # near-duplicates: close scores, where the scan could slip
        x = rng.normal(size=(clusters, dim)).astype(np.float32)[rng.integers(0, clusters, n)] + 0.3 * x
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["int8", "float16"])
def test_rows_equal_the_float32_table(kind):
    c = unit_rows(300, 64, 0)
    if kind == "int8":
        q, s = int8_rows(c)
        table, ref = CentroidTable(q, s), from_int8_rows(q, s)
    else:
        table, ref = CentroidTable(c.astype(np.float16)), c.astype(np.float16).astype(np.float32)
    ids = torch.tensor([5, 0, 299, 5, 17])
    assert np.array_equal(table.rows(ids).numpy(), ref[ids.numpy()])  # bit for bit
    assert np.array_equal(table.to_float32(), ref)
    target = np.ones((5, 64), np.float32)
    table.add_rows_(torch.from_numpy(target), ids)
    assert np.array_equal(target, 1 + ref[ids.numpy()])  # bit for bit: decompression as before
    buffers = {}

    def alloc(name, shape, dtype):
        buffers[name] = np.empty(shape, dtype)
        return buffers[name]

    target = np.ones((5, 64), np.float32)
    table.add_rows_(torch.from_numpy(target), ids, alloc)  # into given buffers
    assert np.array_equal(target, 1 + ref[ids.numpy()])
    assert buffers and all(b.shape[0] == 5 for b in buffers.values())
    with pytest.raises((IndexError, RuntimeError)):
        table.rows(torch.tensor([300]))


@pytest.mark.parametrize("kind", ["int8", "float16"])
def test_full_scan_finds_the_best_centroids(kind):
    """nprobe 0 scans every centroid: the top m agree with an exact float32 ranking except where
    two scores are closer than the int8 error, and the values are within that error."""
    K, dim, m = 8192, 128, 17
    c = unit_rows(K, dim, 1, clusters=400)
    table = CentroidTable.from_float(c, kind)
    scorer = CentroidScorer(table)  # 8192 >= scan_min: the int8 scan
    assert K >= scorer.scan_min
    Q = unit_rows(96, dim, 2, clusters=20)
    vals, ids = scorer.best(Q, m)
    ref = Q @ table.to_float32().T
    np.testing.assert_allclose(vals, np.take_along_axis(ref, ids, 1), atol=0.01)
    assert np.all(np.diff(vals, axis=1) <= 0)  # best first
    kth = np.sort(ref, axis=1)[:, -m]  # the exact m-th best score of each token
    missed = ref >= (kth + 0.01)[:, None]  # clearly inside the exact top m ...
    found = np.zeros_like(missed)
    np.put_along_axis(found, ids, True, axis=1)
    assert not np.any(missed & ~found)  # ... and never missed
    same = np.mean([len(set(a) & set(b)) for a, b in zip(ids, np.argsort(-ref, axis=1)[:, :m])]) / m
    assert same > 0.95  # near-duplicate centroids (clusters) make close scores common here


def test_coarse_lists_cover_the_table_and_probing_narrows_the_scan():
    from colxm.search.centroid_scan import CentroidScan

    K, dim = 8192, 64
    table = CentroidTable.from_float(unit_rows(K, dim, 7, clusters=300), "int8")
    scan = CentroidScan(table)
    assert scan.num_lists == K // 64
    assert np.array_equal(np.sort(scan.perm.numpy()), np.arange(K))  # every centroid in one list
    assert scan.offsets[0] == 0 and scan.offsets[-1] == K and np.all(np.diff(scan.offsets) >= 0)
    again = CentroidScan(table)  # seeded: the same lists
    assert np.array_equal(again.perm.numpy(), scan.perm.numpy())
    Q = torch.from_numpy(unit_rows(32, dim, 8, clusters=10))
    pos = scan.positions(Q, 4)
    assert 0 < pos.size < K // 2
    assert scan.positions(Q, 0) is None and scan.positions(Q, scan.num_lists) is None
    vals, ids = scan.top(Q, 17, 4)
    allowed = set(scan.perm[torch.from_numpy(pos)].tolist())
    assert set(ids.reshape(-1).tolist()) <= allowed  # only centroids of probed lists
    # probing more lists finds the exact best more often; all of them equals the full scan
    ref = (Q.numpy() @ table.to_float32().T)
    best = np.argsort(-ref, axis=1)[:, :17]
    recall = [np.mean([len(set(a) & set(b)) / 17 for a, b in zip(scan.top(Q, 17, p)[1].numpy(), best)])
              for p in (2, 16, 0)]
    assert recall[0] <= recall[1] <= recall[2] and recall[2] > 0.97


def test_scan_pads_when_fewer_centroids_than_asked():
    table = CentroidTable.from_float(unit_rows(70, 16, 3), "int8")
    vals, ids = CentroidScorer(table, scan_min=0).best(unit_rows(4, 16, 4), 80)
    assert ids.shape == (4, 80) and np.all(ids[:, 70:] == -1) and np.all(vals[:, 70:] == np.float32(-1e4))
    assert all(len(set(r[:70])) == 70 for r in ids)


def test_all_scores_are_exact_in_blocks():
    table = CentroidTable.from_float(unit_rows(10_000, 32, 5), "float16")
    Q = unit_rows(7, 32, 6)
    np.testing.assert_allclose(CentroidScorer(table).all(Q), Q @ table.to_float32().T, rtol=1e-5, atol=1e-6)


SEARCH_ONLY = """
import json, sys
import numpy as np
from colxm.index.index import Index
from lifecycle_support import vectors
idx = Index.open(sys.argv[1])
hits = idx.search_embeddings([vectors("d7 v0")], k=3)
codec = idx._snap.codec
print(json.dumps({"top": hits[0][0].id, "faiss": "faiss" in sys.modules,
                  "float32_table": codec._centroids is not None}))
"""


def test_search_holds_no_float32_table_and_no_faiss(tmp_path):
    """A fresh process that only opens and searches (building uses faiss for k-means)."""
    support = str(Path(__file__).parents[1] / "index")
    sys.path.insert(0, support)
    from lifecycle_support import docs_and_vectors

    from colxm.index.index import Index
    from colxm.index.manifest import IndexConfig

    ds, vs = docs_and_vectors([f"d{i}" for i in range(60)])
    Index.build(tmp_path / "idx", ds, embeddings=vs, config=IndexConfig(chunk_documents=16)).close()
    out = subprocess.run([sys.executable, "-c", SEARCH_ONLY, str(tmp_path / "idx")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": support}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r == {"top": "d7", "faiss": False, "float32_table": False}
