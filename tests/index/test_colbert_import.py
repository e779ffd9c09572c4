"""colbert-ai index import: the fixture was built and searched by colbert-ai 0.2.22 itself
(scripts/colbert_index/make_fixture.py); colxm must read it and rank exactly as colbert-ai did."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from colxm.errors import IndexFormatError
from colxm.index.colbert_import import read_colbert_index
from colxm.search import SearchParams, Searcher

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "colbert_index"


@pytest.fixture(scope="module")
def imported():
    codec, seg, info = read_colbert_index(FIX / "index")
    return codec, seg, info, json.loads((FIX / "expected.json").read_text()), np.load(FIX / "queries.npy")


def test_reads_codec_and_segment(imported):
    codec, seg, info, expected, _ = imported
    assert info["nbits"] == 2 and info["num_docs"] == 300 and info["dim"] == 32
    assert seg.num_docs == 300 and seg.num_tokens == info["num_tokens"] == int(seg.doclens.sum())
    # colbert-ai's own decompression of the first tokens, bit for bit through colxm's unpacking
    dec = codec.decompress(seg.codes[:64], seg.residuals[:64])
    np.testing.assert_allclose(dec, np.load(FIX / "decompressed.npy"), atol=1e-6)


@pytest.mark.parametrize("which", [0, 1])
def test_returns_colbert_ai_top10(imported, which):
    codec, seg, info, expected, Q = imported
    run = expected["settings"][which]
    st = run["setting"]
    s = Searcher(codec, [seg])
    # the wide setting makes colbert-ai score every document exactly: compare with both our modes
    modes = [SearchParams(ncells=st["ncells"], centroid_score_threshold=st["centroid_score_threshold"],
                          ndocs=st["ndocs"])]
    if which == 1:
        modes.append(SearchParams(exhaustive=True))
    for params in modes:
        for q, want in zip(Q, run["top10"]):
            hits = s.search(q, k=10, params=params)[0]
            assert [d for _, d, _ in hits] == want["pids"]
            np.testing.assert_allclose([sc for _, _, sc in hits], want["scores"], rtol=1e-4, atol=1e-4)


def test_damaged_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexFormatError, match="not a folder"):
        read_colbert_index(tmp_path / "nope")
    bad = tmp_path / "idx"
    shutil.copytree(FIX / "index", bad)
    (bad / "0.residuals.pt").write_bytes((bad / "0.residuals.pt").read_bytes()[:100])
    with pytest.raises(IndexFormatError, match="0.residuals.pt"):
        read_colbert_index(bad)
    shutil.rmtree(bad)
    shutil.copytree(FIX / "index", bad)
    (bad / "centroids.pt").unlink()
    with pytest.raises(IndexFormatError, match="centroids.pt is missing"):
        read_colbert_index(bad)
    (bad / "metadata.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="metadata.json"):
        read_colbert_index(bad)
