"""The architectures people use, through ONNX and LiteRT with the parity gate.

Every `keras.applications` family (and keras-hub's BERT, GPT-2 and ViT from
tiny configs, when keras-hub is installed), built exactly as
`benchmarks/zoo_export.py` builds them: random weights, smallest input.
Marked `zoo`: `make test-zoo` (32 cases; the MobileNetV2, BERT, GPT-2
and ViT cases took 5 min on a shared 2-core machine, the full set has not
been timed; `benchmarks/zoo_export.py`, which adds SavedModel and int8,
took about an hour). The script's
`--smoke` run is a fast test of the default suite.
"""

import functools
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from kdkeras import deploy  # noqa: E402
from kdkeras.deploy import signatures  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "zoo_export", os.path.join(ROOT, "benchmarks", "zoo_export.py")
)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

ROWS = list(zoo.APPLICATIONS) + list(zoo.HUB)
CASES = [(name, fmt) for name in ROWS for fmt in ("onnx", "tflite")]
EXTENSIONS = {"onnx": ".onnx", "tflite": ".tflite"}


@functools.lru_cache(maxsize=1)
def _model_and_inputs(name):
    if name in zoo.HUB and not zoo.hub_available():
        pytest.skip("keras-hub is not installed")
    model = zoo.build(name)
    return model, zoo.sample_inputs(model, 4)


@pytest.mark.zoo
@pytest.mark.parametrize("name, fmt", CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_zoo_model_passes_the_gate(name, fmt, tmp_path):
    model, x = _model_and_inputs(name)
    path = str(tmp_path / (name + EXTENSIONS[fmt]))
    manifest = deploy.export(model, path, sample_inputs=x, batch_sizes=(1, 4))
    parity = manifest["parity"]
    assert manifest["format"] == fmt
    assert parity["passed"] is True and parity["failed"] == []
    # A tenth of the default rtol: the default holds with margin.
    assert parity["max_rel_diff"] <= deploy.DEFAULT_RTOL / 10
    assert parity["output_scale"] > 0
    # Independently: the artifact's first output against the model's.
    got = deploy.load_runner(path).run([a[:2] for a in x])[0]
    want = keras.tree.flatten(model(signatures.pack_inputs(model, [a[:2] for a in x])))[0]
    want = keras.ops.convert_to_numpy(want)
    assert np.max(np.abs(got - want)) <= deploy.DEFAULT_RTOL * np.max(np.abs(want))


@pytest.mark.subprocess
def test_zoo_script_smoke(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "benchmarks/zoo_export.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    report = json.loads((tmp_path / "zoo.json").read_text())
    rows = {r["format"]: r for r in report["rows"]}
    assert set(rows) == {"onnx", "tflite", "saved_model", "onnx int8", "tflite int8"}
    for fmt in ("onnx", "tflite", "saved_model"):
        assert rows[fmt]["passed"] and rows[fmt]["max_rel_diff"] <= 1e-5
        assert rows[fmt]["size_bytes"] > 0 and rows[fmt]["latency_ms"] > 0
    # The first convolution and the logits stay float: 1 of 3 for ONNX.
    assert (rows["onnx int8"]["quantized_ops"], rows["onnx int8"]["quantizable_ops"]) == (1, 3)
    assert "| tiny_cnn | onnx | pass |" in (tmp_path / "zoo.md").read_text()
