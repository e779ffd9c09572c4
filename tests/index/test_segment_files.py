"""Streamed .npy files of a segment: the header written last, into the space reserved for it."""
import numpy as np
import pytest

from colxm.index.segment import _open_streamed, _write_header


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (0, 32)), (np.uint16, (7,)), (np.float16, (5, 4)),
                                         (np.int32, (3,))])
def test_streamed_npy_loads_like_a_saved_one(tmp_path, dtype, shape):
    a = np.arange(int(np.prod(shape))).astype(dtype).reshape(shape)
    path = tmp_path / "a.npy"
    with _open_streamed(path) as f:
        for part in np.array_split(a.reshape(-1), 3):  # appended in pieces, as chunks arrive
            f.write(part.tobytes())
    _write_header(path, dtype, shape)
    for loaded in (np.load(path), np.load(path, mmap_mode="r")):
        assert loaded.dtype == np.dtype(dtype) and loaded.shape == shape
        assert np.array_equal(loaded, a)
    assert path.stat().st_size == 128 + a.nbytes  # one copy of the data, behind its header


def test_header_that_does_not_fit_is_refused(tmp_path):
    path = tmp_path / "a.npy"
    _open_streamed(path).close()
    _write_header(path, np.uint8, (10**15, 10**15))  # long shapes still fit
    with pytest.raises(ValueError, match="does not fit"):
        _write_header(path, np.dtype([(f"field_with_a_long_name_{i}", "<f8") for i in range(4)]), (1,))
