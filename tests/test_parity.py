"""The parity gate's two bounds: absolute (`atol`) and relative to the output scale (`rtol`)."""

import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from kdkeras import deploy  # noqa: E402
from kdkeras.deploy import runners  # noqa: E402

BATCH_SIZES = (1, 4)


def test_difference_figures_by_hand():
    ref = [
        np.array([[1.0, -4.0], [2.0, 0.5]], "float32"),
        np.zeros((2, 1), "float32"),
    ]
    out = [
        np.array([[1.5, -4.0], [2.0, 0.5]], "float32"),
        np.zeros((2, 1), "float32"),
    ]
    figures = deploy.difference_figures(ref, out)
    assert figures["max_abs_diff"] == pytest.approx(0.5)
    # 0.5 over the largest reference magnitude, 4 (not element-wise: the
    # 0.5 sits on an element of size 1).
    assert figures["max_rel_diff"] == pytest.approx(0.125)
    assert figures["agreement"] == 1.0
    # The second output is all zeros on both sides: relative difference 0.
    only_second = deploy.difference_figures(ref[1:], out[1:])
    assert only_second == {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "agreement": None}
    # A reference of zeros against anything else: infinitely far.
    assert deploy.difference_figures(ref[1:], [np.ones((2, 1), "float32")])[
        "max_rel_diff"
    ] == float("inf")
    # The two-figure form is unchanged.
    assert deploy.parity_figures(ref, out) == (pytest.approx(0.5), 1.0)


class _Offset:
    """A runner returning the reference plus a constant."""

    def __init__(self, reference, offset):
        self.reference, self.offset, self.start = reference, offset, 0

    def run(self, inputs):
        n = len(inputs[0])
        out = self.reference[self.start : self.start + n] + self.offset
        self.start = (self.start + n) % len(self.reference)
        return [out]


@pytest.mark.parametrize(
    "scale, offset, failed",
    [
        (1e3, 1e-3, []),  # 1e-6 of the scale: float32 noise at scale 1000 passes
        (1e3, 0.2, ["atol"]),  # above atol * scale (0.1), within rtol
        (1e-10, 1e-11, ["rtol"]),  # within atol, 10% of the scale
        (1.0, 1e-2, ["atol", "rtol"]),
        (1.0, 1e-6, []),
    ],
)
def test_check_parity_names_the_bound_that_failed(scale, offset, failed):
    x = [np.zeros((4, 3), "float32")]
    reference = [scale * np.linspace(-1, 1, 12, dtype="float64").reshape(4, 3)]
    figures = deploy.check_parity(
        None, _Offset(reference[0], offset), x, batch_sizes=(4,), reference=reference
    )
    assert figures["failed"] == failed
    assert figures["passed"] is (not failed)
    assert figures["max_abs_diff"] == pytest.approx(offset)
    assert figures["max_rel_diff"] == pytest.approx(offset / scale)
    assert figures["output_scale"] == pytest.approx(scale)
    assert (figures["atol"], figures["rtol"]) == (deploy.DEFAULT_ATOL, deploy.DEFAULT_RTOL)
    assert figures["atol_bound"] == pytest.approx(deploy.DEFAULT_ATOL * max(1.0, scale))


def _tiny_output_model(seed=0):
    """No classes (one output unit), outputs of ~1e-10 like a random-weight
    MobileNetV2 at 96x96."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="tanh")(inputs)
    x = keras.layers.Dense(1)(x)
    return keras.Model(inputs, keras.layers.Rescaling(1e-10)(x), name="tiny_outputs")


class _Zeros:
    """Wraps a real runner; returns zeros shaped like its outputs."""

    def __init__(self, runner):
        self.runner = runner
        self.input_names = getattr(runner, "input_names", None)
        self.output_names = getattr(runner, "output_names", None)

    def run(self, inputs):
        return [np.zeros_like(o) for o in self.runner.run(inputs)]


def test_gate_fails_an_all_zeros_artifact_of_a_tiny_output_model(tmp_path, monkeypatch):
    model = _tiny_output_model()
    x = np.random.default_rng(0).random((16, 8)).astype("float32")
    ref = keras.ops.convert_to_numpy(model(x))
    scale = float(np.max(np.abs(ref)))
    assert 1e-11 < scale < 1e-9

    honest = deploy.export(
        model, str(tmp_path / "tiny.onnx"), sample_inputs=x, batch_sizes=BATCH_SIZES
    )
    assert honest["parity"]["passed"] is True
    assert honest["parity"]["max_rel_diff"] <= 1e-5
    assert honest["parity"]["agreement"] is None  # one output unit: no classes

    real = runners.load_runner
    monkeypatch.setattr(runners, "load_runner", lambda path, **kw: _Zeros(real(path, **kw)))
    path = str(tmp_path / "zeros.onnx")
    with pytest.raises(
        deploy.ParityError, match=r"\[failed: rtol\].*max_rel_diff=1 \(rtol=0.001"
    ) as e:
        deploy.export(model, path, sample_inputs=x, batch_sizes=BATCH_SIZES)
    report = e.value.report
    assert report["failed"] == ["rtol"]
    # The absolute bound alone would have passed the zeros.
    assert report["max_abs_diff"] == pytest.approx(scale, rel=1e-5)
    assert report["max_abs_diff"] <= deploy.DEFAULT_ATOL
    assert report["max_rel_diff"] == pytest.approx(1.0)
    assert report["agreement"] is None
    with open(deploy.failed_path(path) + ".manifest.json") as f:
        parity = json.load(f)["parity"]
    assert parity["passed"] is False
    assert (parity["atol"], parity["rtol"]) == (1e-4, 1e-3)
    assert parity["max_abs_diff"] == pytest.approx(scale, rel=1e-5)
    assert parity["max_rel_diff"] == pytest.approx(1.0)
    assert not os.path.exists(path)


def test_rtol_is_a_keyword_of_export(tmp_path):
    model = _tiny_output_model(seed=1)
    manifest = deploy.export(model, str(tmp_path / "t.onnx"), rtol=0.5, batch_sizes=(2,))
    assert manifest["parity"]["rtol"] == 0.5
    assert manifest["parity"]["failed"] == []
