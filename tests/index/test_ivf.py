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
