"""Offline datasets: shapes, dtypes, a fixed stratified split, clear errors."""

import builtins

import numpy as np
import pytest

from kdkeras import datasets


@pytest.mark.parametrize(
    "name, shape, n_train, n_test",
    [("mnist-5k", (28, 28, 1), 4000, 1000), ("digits", (8, 8, 1), 1438, 359)],
)
def test_offline_datasets_have_fixed_stratified_splits(name, shape, n_train, n_test):
    (x_train, y_train), (x_test, y_test) = datasets.load(name)
    assert x_train.shape == (n_train, *shape) and x_test.shape == (n_test, *shape)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0 and x_train.max() > 0.9
    assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
    # Stratified: every class holds close to a fifth of its samples in test.
    counts_train, counts_test = np.bincount(y_train), np.bincount(y_test)
    np.testing.assert_allclose(counts_test / (counts_train + counts_test), 0.2, atol=0.01)
    # Fixed: the same split on every call, train and test disjoint.
    (x_again, y_again), _ = datasets.load(name)
    np.testing.assert_array_equal(x_again, x_train)
    np.testing.assert_array_equal(y_again, y_train)
    train_rows = {row.tobytes() for row in x_train.reshape(len(x_train), -1)}
    overlap = sum(row.tobytes() in train_rows for row in x_test.reshape(len(x_test), -1))
    assert overlap <= 2  # MNIST-5k holds a couple of duplicate images, no more
    # Classes are interleaved, so the first batch is not a single class.
    assert len(np.unique(y_train[:64])) == 10


def test_unknown_name_is_a_clear_error():
    with pytest.raises(
        ValueError,
        match=r"Expected one of \['mnist-5k', 'digits', 'mnist'\]. Received: name='cifar'",
    ):
        datasets.load("cifar")


def test_missing_extra_names_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("mlxtend"):
            raise ImportError("No module named 'mlxtend'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'kdkeras\[data\]'"):
        datasets.load("mnist-5k")
