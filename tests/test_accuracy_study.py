"""The results study's scoring (`benchmarks/accuracy.py`) against NumPy."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest

_PATH = pathlib.Path(__file__).parent.parent / "benchmarks" / "accuracy.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("accuracy_study", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logits_model(logits):
    """A model that returns fixed logits per sample index (the input)."""
    table = keras.ops.convert_to_tensor(logits)
    return lambda x, training=False: keras.ops.take(table, keras.ops.cast(x, "int32"), axis=0)


def test_ensemble_accuracy_averages_probabilities_not_logits(study):
    # Sample 0: the summed logits pick class 0 ([10, 9, -15]), the averaged
    # probabilities class 2 (B is sure of it; A splits 0.73 / 0.27).
    a = np.array([[10.0, 9.0, -20.0], [0.0, 0.0, 3.0], [0.0, 2.0, 0.0]], "float32")
    b = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 1.0], [2.5, 0.0, 0.0]], "float32")
    x = np.arange(3)
    y = np.array([2, 2, 1])
    softmax = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    expected = float(((softmax(a) + softmax(b)).argmax(-1) == y).mean())
    got = study.accuracy([_logits_model(a), _logits_model(b)], x, y)
    assert expected == pytest.approx(2 / 3)  # samples 0 and 1; summed logits get only 1
    assert float(((a + b).argmax(-1) == y).mean()) == pytest.approx(1 / 3)
    assert got == pytest.approx(expected)
    assert study.accuracy(_logits_model(a), x, y) == pytest.approx(2 / 3)
    assert study.accuracy(_logits_model(b), x, y) == pytest.approx(2 / 3)
