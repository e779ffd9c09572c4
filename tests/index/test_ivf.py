import numpy as np
import pytest

from colxm.errors import InputError
from colxm.index.ivf import build_ivf


def test_ivf_lists_every_doc_of_every_centroid_once():
    rng = np.random.default_rng(0)
    doclens = rng.integers(0, 12, 200).astype(np.int32)
    codes = rng.integers(0, 37, doclens.sum()).astype(np.int32)
    offsets, docs = build_ivf(codes, doclens, 37)
    assert offsets.dtype == np.int64 and docs.dtype == np.int32 and offsets.shape == (38,)
    owner = np.repeat(np.arange(200), doclens)
    for c in range(37):
        expect = np.unique(owner[codes == c])
        np.testing.assert_array_equal(docs[offsets[c]:offsets[c + 1]], expect)
    assert offsets[-1] == docs.size


def test_ivf_rejects_bad_input():
    with pytest.raises(InputError):
        build_ivf(np.array([0, 1], np.int32), np.array([3], np.int32), 2)
    with pytest.raises(InputError):
        build_ivf(np.array([0, 5], np.int32), np.array([2], np.int32), 2)


def test_doc_codes_are_the_transposed_ivf():
    from colxm.index.ivf import build_doc_codes

    rng = np.random.default_rng(1)
    doclens = rng.integers(1, 12, 100).astype(np.int32)
    codes = rng.integers(0, 20, doclens.sum()).astype(np.int32)
    off, dc = build_doc_codes(codes, doclens, 20)
    assert dc.dtype == np.uint16 and off.shape == (101,)
    starts = np.r_[0, np.cumsum(doclens)]
    for d in range(100):
        np.testing.assert_array_equal(dc[off[d]:off[d + 1]], np.unique(codes[starts[d]:starts[d + 1]]))


def test_local_codes_round_trip_through_the_inverted_lists():
    from colxm.errors import IndexFormatError
    from colxm.index.ivf import LocalCodes, build_doc_codes, doc_codes_from_ivf, local_codes

    rng = np.random.default_rng(0)
    K = 300
    doclens = rng.integers(1, 60, 200).astype(np.int32)
    codes = rng.integers(0, K, int(doclens.sum())).astype(np.uint16)
    offsets, docs = build_ivf(codes, doclens, K)
    local = local_codes(codes, doclens, K)
    assert local.dtype == np.uint8 and int(local.max()) < 60
    doc_offsets = np.r_[0, np.cumsum(doclens)].astype(np.int64)
    view = LocalCodes(local, doc_offsets, offsets, docs)
    assert np.array_equal(np.asarray(view), codes) and len(view) == len(codes)
    assert np.array_equal(view[17:301], codes[17:301])
    idx = rng.integers(0, len(codes), 50)
    assert np.array_equal(view[idx], codes[idx])
    for got, want in zip(doc_codes_from_ivf(offsets, docs, len(doclens)), build_doc_codes(codes, doclens, K)):
        assert np.array_equal(got, want)
    # a document with more than 256 distinct codes needs uint16 local codes
    wide = np.arange(300, dtype=np.uint16)
    assert local_codes(wide, np.array([300], np.int32), K).dtype == np.uint16
    # a damaged inverted list (an entry moved to another document) is detected, not decoded wrongly
    bad = docs.copy()
    bad[offsets[codes[0]]] = (bad[offsets[codes[0]]] + 1) % len(doclens)
    with pytest.raises(IndexFormatError, match="inverted lists do not match"):
        np.asarray(LocalCodes(local, doc_offsets, offsets, bad))
