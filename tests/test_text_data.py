"""The byte corpus of the language-model recipe and its model."""

import zlib

import numpy as np
import pytest

from kdkeras import datasets
from kdkeras import models


def test_python_sources_split_by_a_hash_of_each_path_and_skip_tests(tmp_path):
    files = {f"pkg/mod{i}.py": f"x = {i}\n".encode() for i in range(40)}
    files.update({"test/test_a.py": b"skip", "site-packages/b.py": b"skip", "c.txt": b"skip"})
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    corpus = datasets.python_sources(tmp_path)
    want = {"train": [], "validation": [], "test": []}
    for name in sorted(n for n in files if n.startswith("pkg/")):
        bucket = zlib.crc32(name.encode()) % 10
        split = "test" if bucket == 0 else "validation" if bucket == 1 else "train"
        want[split].append(files[name] + b"\n\n")
    for split, parts in want.items():
        assert bytes(corpus[split]) == b"".join(parts), split
        assert corpus["files"][split] == len(parts)
    assert b"skip" not in b"".join(bytes(corpus[s]) for s in want)


def test_byte_windows_are_consecutive_bytes_at_seeded_offsets():
    data = np.arange(200, dtype=np.uint8)
    windows = datasets.byte_windows(data, length=9, count=5, seed=3)
    assert windows.shape == (5, 9) and windows.dtype == np.int32
    assert np.all(np.diff(windows, axis=1) == 1)
    np.testing.assert_array_equal(windows, datasets.byte_windows(data, 9, 5, seed=3))
    with pytest.raises(ValueError, match="Received: 9 bytes"):
        datasets.byte_windows(data[:9], length=9, count=1)


def test_byte_lm_is_causal_and_takes_any_length():
    pytest.importorskip("keras_hub")
    model = models.byte_lm(width=8, blocks=1, heads=2, context=16)
    x = np.random.default_rng(0).integers(0, 256, (2, 12)).astype("int32")
    logits = np.asarray(model(x))
    assert logits.shape == (2, 12, 256)
    changed = x.copy()
    changed[:, 6:] = (changed[:, 6:] + 1) % 256
    np.testing.assert_array_equal(np.asarray(model(changed))[:, :6], logits[:, :6])
    np.testing.assert_allclose(np.asarray(model(x[:, :5])), logits[:, :5], atol=1e-5)
