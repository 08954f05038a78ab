"""Atomic file writes: a reader never sees a half-written artifact.

Everything is first written under a temporary name in the destination's own
folder (same file system, so the final `os.replace` is atomic) and renamed
only once complete. A failure removes the temporary file or folder and leaves
any previous artifact in place.
"""

import contextlib
import os
import shutil
import tempfile

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "discard",
    "publish",
    "remove_leftovers",
    "staging_path",
]


def _tmp_name(path, is_dir):
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(os.path.normpath(path))
    prefix = f".{base}.tmp-"
    if is_dir:
        return tempfile.mkdtemp(prefix=prefix, dir=folder)
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=folder)
    os.close(fd)
    return tmp


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_path(path, is_dir=False, suffix=""):
    """Yields a temporary path to write into; renames it to `path` on success.

    Args:
        path: the final file or folder name.
        is_dir: whether the artifact is a folder (a SavedModel, a report).
            The temporary path is then an existing empty folder. Defaults
            to `False`.
        suffix: appended to the temporary name, for writers that insist on a
            file extension (`model.save` wants `.keras`). Defaults to `""`.

    Yields:
        The temporary path (a `str`).

    Example:

    ```python
    with atomic_path("out/model.keras", suffix=".keras") as tmp:
        model.save(tmp)
    ```
    """
    path = os.fspath(path)
    tmp = _tmp_name(path, is_dir)
    if suffix:
        # Writers that check the extension get a name that ends with it.
        os.remove(tmp) if not is_dir else os.rmdir(tmp)
        tmp = tmp + suffix
        if is_dir:
            os.makedirs(tmp)
    elif not is_dir:
        # Some writers refuse to overwrite an existing file.
        os.remove(tmp)
    try:
        yield tmp
        if not is_dir and not os.path.exists(tmp):
            raise FileNotFoundError(
                f"Expected the writer to create the temporary file. Received: path={tmp!r}"
            )
        publish(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def publish(tmp, path):
    """Renames a finished file or folder `tmp` to `path`, replacing it.

    `tmp` must be in the same folder as `path` (same file system).
    """
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        # A folder cannot be replaced over a non-empty folder: move the old
        # one aside first, then remove it once the new one is in place.
        old = None
        if os.path.lexists(path):
            old = _tmp_name(path + ".old", is_dir=True)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            _remove(old)
    else:
        os.replace(tmp, path)


def staging_path(path, is_dir=False, suffix=""):
    """A fresh, unused name beside `path` to build an artifact under.

    Nothing exists at the returned name; write there (atomically), check the
    result, then `publish` it to `path`, or `discard` it.
    """
    tmp = _tmp_name(os.fspath(path) + ".staging", is_dir)
    _remove(tmp)
    return tmp + suffix


def discard(path):
    """Removes a file or folder if it exists."""
    _remove(path)


def remove_leftovers(folder):
    """Removes temporary files and folders left in `folder` by a killed writer.

    A process killed (SIGKILL, power loss) while writing leaves its hidden
    temporary name (`.<name>.tmp-<random>`) behind; the artifact itself is
    untouched. Call this only when no other process writes into `folder`.
    Returns the names removed.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return []
    removed = [n for n in os.listdir(folder) if n.startswith(".") and ".tmp-" in n]
    for name in removed:
        _remove(os.path.join(folder, name))
    return removed


def atomic_write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path, text, encoding="utf-8"):
    """Writes `text` (str) to `path` atomically."""
    atomic_write_bytes(path, text.encode(encoding))
