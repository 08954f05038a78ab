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


# ------------------------------------------------------------ user data


def _png_folder(root, classes, n=10, size=12, channels=1, seed=0):
    """Writes `n` random PNG images per class (a sub-folder each, or `root` for None)."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root if name is None else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
            (folder / f"{i}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    return root


def test_npz_with_its_own_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, xt = rng.random((30, 4, 4, 1)), rng.random((10, 4, 4, 1))
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=np.arange(30) % 3, x_test=xt, y_test=np.arange(10) % 3)
    data = datasets.load_user_data(path, (4, 4, 1), num_classes=3)
    assert data.x_train.dtype == np.float32 and data.x_train.shape == (30, 4, 4, 1)
    np.testing.assert_array_equal(data.x_test, xt.astype("float32"))
    assert data.y_train.dtype == np.int64 and data.labeled
    assert data.split == "x_test and y_test of the file: 30 train / 10 test"


def test_npz_without_test_split_holds_out_a_fixed_stratified_fifth(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    # Whole-number float labels with a trailing axis are accepted as class indices.
    np.savez(path, x_train=rng.random((50, 6)), y_train=(np.arange(50) % 5)[:, None] * 1.0)
    data = datasets.load_user_data(path, (6,), num_classes=5)
    again = datasets.load_user_data(path, (6,), num_classes=5)
    assert (len(data.x_train), len(data.x_test)) == (40, 10)
    assert sorted(data.y_test) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    np.testing.assert_array_equal(data.x_test, again.x_test)
    assert "held out 20%" in data.split and "stratified" in data.split and "seed 0" in data.split


def test_npz_without_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.random.default_rng(0).random((20, 6)).astype("float32"))
    data = datasets.load_user_data(path, (None,), num_classes=5)
    assert not data.labeled and data.y_test is None
    assert (len(data.x_train), len(data.x_test)) == (16, 4)
    small = data.subset(3, 2)
    assert (len(small.x_train), len(small.x_test), small.y_train) == (3, 2, None)


def test_image_folder_resized_to_the_teacher_and_split(tmp_path):
    root = _png_folder(tmp_path / "images", ["cats", "dogs", "owls"], n=10, size=12)
    data = datasets.load_user_data(root, (8, 8, 1), num_classes=10)
    assert data.x_train.shape == (24, 8, 8, 1) and data.x_test.shape == (6, 8, 8, 1)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.class_names == ["cats", "dogs", "owls"]
    assert sorted(data.y_test) == [0, 0, 1, 1, 2, 2]
    assert "cats=0, dogs=1, owls=2" in data.split and "8x8" in data.split


def test_image_folder_without_sub_folders_is_unlabeled(tmp_path):
    root = _png_folder(tmp_path / "images", [None], n=10, channels=3)
    data = datasets.load_user_data(root, (8, 8, 3), image_scale=1.0)
    assert not data.labeled and data.x_train.shape == (8, 8, 8, 3)
    assert data.x_train.max() > 1.0  # image_scale=1: 0-255 pixels kept


@pytest.mark.parametrize(
    "arrays, match",
    [
        (
            {"x_train": np.zeros((4, 28, 28, 1))},
            r"x_train shaped \(samples, 8, 8, 1\) to fit the teacher's input\. "
            r"Received: x_train with shape=\(4, 28, 28, 1\)",
        ),
        ({"x_train": np.array([["a"] * 64] * 4)}, r"numeric inputs .*dtype=<U1"),
        (
            {"x_train": np.zeros((4, 8, 8, 1)), "y_train": np.array([0, 1, 12, 3])},
            r"labels in \[0, 10\) for the teacher's 10 classes\. Received: y_train\[2\]=12",
        ),
        (
            {"x_train": np.zeros((4, 8, 8, 1)), "y_train": np.array([0.5, 1, 2, 3])},
            r"integer class labels in y_train\. Received: y_train with dtype=float64",
        ),
        (
            {"x_train": np.full((4, 8, 8, 1), np.nan)},
            r"finite values in x_train.*4 sample\(s\) holding NaN or Inf, the first at index 0",
        ),
        (
            {"y_train": np.zeros(4)},
            r"an array x_train .*Received: data='.*' with arrays \['y_train'\]",
        ),
    ],
)
def test_bad_npz_is_one_clear_error(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        datasets.load_user_data(path, (8, 8, 1), num_classes=10)


def test_bad_paths_are_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"Received: data='.*nothing', which does not exist"):
        datasets.load_user_data(tmp_path / "nothing", (8, 8, 1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"one sub-folder per class.*which holds no image"):
        datasets.load_user_data(tmp_path / "empty", (8, 8, 1))
    (tmp_path / "f.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"Expected an \.npz file written by numpy\.savez"):
        datasets.load_user_data(tmp_path / "f.npz", (8, 8, 1))
    root = _png_folder(tmp_path / "images", ["a"], n=2)
    with pytest.raises(ValueError, match=r"teacher that takes images.*\(batch, 64\)"):
        datasets.load_user_data(root, (64,))


def test_image_folder_with_empty_class_folders_holds_no_image(tmp_path):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    (tmp_path / "images" / "dogs").mkdir()
    with pytest.raises(ValueError, match=r"one sub-folder per class.*which holds no image"):
        datasets.load_user_data(tmp_path / "images", (8, 8, 1))
