"""int8 quantization: defaults per model kind, the agreement gate, reports."""

import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
pytest.importorskip("sklearn")

from kdkeras import datasets  # noqa: E402
from kdkeras import deploy  # noqa: E402
from kdkeras.deploy import runners  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _train(model, x, y, epochs):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def cnn(digits, tmp_path_factory):
    """A trained CNN on 8x8 digits whose weights sit mostly in a Dense layer,
    so that int8 shrinks the file."""
    (x_train, y_train), (x_test, _) = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    _train(model, x_train, y_train, epochs=8)
    path = str(tmp_path_factory.mktemp("q") / "cnn.onnx")
    deploy.export(model, path, sample_inputs=x_test)
    return model, path


@pytest.fixture(scope="module")
def static_int8(cnn, digits):
    model, path = cnn
    (x_train, _), (x_test, y_test) = digits
    out = path.replace(".onnx", ".int8.onnx")
    manifest = deploy.quantize(
        model, path, out, calibration_data=x_train, eval_data=(x_test, y_test)
    )
    return out, manifest


def test_static_defaults_for_a_cnn(static_int8):
    _, manifest = static_int8
    q = manifest["quantization"]
    assert q["model_kind"] == "cnn" and q["mode"] == "static"
    assert q["per_channel"] is True and q["keep_logits_float"] is True
    assert q["reduce_range"] is (os.uname().machine in ("x86_64", "AMD64"))
    # The logits layer (a MatMul or Gemm) and the first convolution.
    assert len(q["nodes_excluded"]) >= 2
    assert q["keep_first_float"] is True
    assert q["calibration_samples"] == 256


def _float_weight(proto, node):
    producers = {o: n for n in proto.graph.node for o in n.output}
    inits = {t.name: t for t in proto.graph.initializer}
    weight = node.input[1]
    return (
        weight in inits
        and weight not in producers
        and inits[weight].data_type == onnx.TensorProto.FLOAT
    )


def test_first_conv_and_logits_stay_float(static_int8):
    path, manifest = static_int8
    proto = onnx.load(path)
    excluded = set(manifest["quantization"]["nodes_excluded"])
    kept = [n for n in proto.graph.node if n.name in excluded]
    assert {n.op_type for n in kept} >= {"Conv"}
    assert all(_float_weight(proto, n) for n in kept if n.op_type != "Add")
    # Every other Conv/MatMul/Gemm reads a dequantized int8 weight.
    others = [
        n
        for n in proto.graph.node
        if n.op_type in ("Conv", "MatMul", "Gemm") and n.name not in excluded
    ]
    assert others and not any(_float_weight(proto, n) for n in others)


def test_static_graph_is_qdq(static_int8):
    path, _ = static_int8
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("QuantizeLinear") >= 2 and "DequantizeLinear" in ops


def test_static_report_matches_independent_measurement(static_int8, cnn, digits):
    path, manifest = static_int8
    model, float_path = cnn
    (_, _), (x_test, y_test) = digits
    q = manifest["quantization"]
    int8 = runners.run_batched(runners.OnnxRunner(path), [x_test], 64)[0]
    ref = keras.ops.convert_to_numpy(model(x_test, training=False))
    agreement = float(np.mean(int8.argmax(-1) == ref.argmax(-1)))
    assert manifest["parity"]["gate"] == "agreement"
    assert manifest["parity"]["agreement"] == pytest.approx(agreement)
    assert agreement >= 0.99
    assert q["accuracy_int8"] == pytest.approx(np.mean(int8.argmax(-1) == y_test))
    assert q["accuracy_float32"] == pytest.approx(np.mean(ref.argmax(-1) == y_test))
    assert q["accuracy_change"] == pytest.approx(q["accuracy_int8"] - q["accuracy_float32"])
    assert q["size_ratio"] == pytest.approx(os.path.getsize(path) / os.path.getsize(float_path))
    assert q["size_ratio"] < 0.45
    for key in ("latency_ratio_batch1", "latency_ratio_batch64"):
        assert q[key] > 0


def test_dynamic_quantizes_matmul_only(cnn, digits, tmp_path):
    model, path = cnn
    (_, _), (x_test, y_test) = digits
    out = str(tmp_path / "dyn.onnx")
    manifest = deploy.quantize(
        model,
        path,
        out,
        mode="dynamic",
        eval_data=(x_test, y_test),
        min_agreement=0.97,
    )
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "ConvInteger" not in ops and "Conv" in ops
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert manifest["quantization"]["op_types"] == ["MatMul", "Gemm"]
    assert manifest["parity"]["agreement"] >= 0.97


def test_gate_fails_below_min_agreement(cnn, digits, tmp_path):
    _, path = cnn
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(1)
    other = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    other = _train(other, x_train[:50], y_train[:50], epochs=1)
    out = str(tmp_path / "bad.int8.onnx")
    with pytest.raises(deploy.ParityError, match="agreement") as info:
        deploy.quantize(other, path, out, calibration_data=x_train, eval_data=(x_test, y_test))
    assert info.value.report["agreement"] < 0.99
    assert info.value.report["passed"] is False


def test_needs_real_data(cnn, tmp_path):
    model, path = cnn
    with pytest.raises(ValueError, match="eval_data=None"):
        deploy.quantize(model, path, str(tmp_path / "x.onnx"))
    x = np.zeros((4, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="calibration_data=None"):
        deploy.quantize(model, path, str(tmp_path / "x.onnx"), eval_data=x)
    assert not os.path.exists(tmp_path / "x.onnx")


def test_default_settings_per_kind():
    assert deploy.default_settings("cnn")["mode"] == "static"
    transformer = deploy.default_settings("transformer")
    assert transformer["mode"] == "dynamic"
    assert transformer["op_types"] == ["MatMul", "Gemm"]
    with pytest.raises(ValueError, match="mode='int4'"):
        deploy.default_settings("cnn", "int4")


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((4,), dtype="int32")
    h = keras.layers.Embedding(10, 8)(tokens)
    h = keras.layers.LayerNormalization()(h + keras.layers.MultiHeadAttention(2, 4)(h, h))
    h = keras.layers.Dense(16, activation="gelu")(h[:, 0])
    model = keras.Model(tokens, keras.layers.Dense(3)(h))
    path = str(tmp_path_factory.mktemp("t") / "t.onnx")
    deploy.export(model, path, num_samples=4)
    return model, path


def test_model_kind_detection(cnn, transformer):
    assert deploy.model_kind(onnx.load(cnn[1])) == "cnn"
    assert deploy.model_kind(onnx.load(transformer[1])) == "transformer"


def test_transformer_defaults_to_dynamic_matmul(transformer, tmp_path):
    model, path = transformer
    tokens = np.random.default_rng(0).integers(0, 10, (64, 4)).astype("int32")
    out = str(tmp_path / "t.int8.onnx")
    manifest = deploy.quantize(model, path, out, eval_data=tokens, min_agreement=0.9)
    q = manifest["quantization"]
    assert q["mode"] == "dynamic" and q["accuracy_int8"] is None
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert manifest["parity"]["agreement"] >= 0.9


def test_litert_int8(cnn, digits, tmp_path):
    model, _ = cnn
    (x_train, _), (x_test, y_test) = digits
    float_path = str(tmp_path / "f.tflite")
    deploy.export(model, float_path, "tflite", sample_inputs=x_test)
    path = str(tmp_path / "q.tflite")
    manifest = deploy.quantize_tflite(
        model, path, calibration_data=x_train, eval_data=(x_test, y_test)
    )
    assert manifest["parity"]["agreement"] >= 0.99
    assert os.path.getsize(path) < 0.6 * os.path.getsize(float_path)


# Issue 10: quantization says how much it quantized.


def test_static_report_counts_quantized_ops(static_int8, cnn):
    path, manifest = static_int8
    q = manifest["quantization"]
    # Two convolutions and two Dense layers bear weights; the first
    # convolution and the logits layer stay float32.
    assert (q["quantized_ops"], q["quantizable_ops"]) == (2, 4)
    # Counted independently: weight-bearing nodes reading a float weight.
    proto = onnx.load(path)
    weighted = [n for n in proto.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert len(weighted) == 4
    assert sum(not _float_weight(proto, n) for n in weighted) == 2
    assert deploy.onnx_quantized_ops(onnx.load(cnn[1])) == (0, 4)


def test_dynamic_and_litert_reports_count_ops(cnn, transformer, digits, tmp_path):
    model, path = transformer
    tokens = np.random.default_rng(0).integers(0, 10, (32, 4)).astype("int32")
    q = deploy.quantize(
        model, path, str(tmp_path / "t.int8.onnx"), eval_data=tokens, min_agreement=0.0
    )["quantization"]
    # Four Dense projections in attention, one hidden Dense, the logits:
    # all MatMul with weights, all quantized (QK^T and AV bear none).
    assert q["quantized_ops"] == q["quantizable_ops"] == 6

    model, _ = cnn
    (x_train, _), (x_test, y_test) = digits
    q = deploy.quantize_tflite(
        model, str(tmp_path / "q.tflite"), calibration_data=x_train, eval_data=(x_test, y_test)
    )["quantization"]
    assert q["quantized_ops"] == q["quantizable_ops"] == 4


def test_static_int8_that_quantizes_nothing_warns(digits, tmp_path):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    small = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    float_path = str(tmp_path / "small_cnn.onnx")
    deploy.export(small, float_path, sample_inputs=x_test)
    out = str(tmp_path / "small_cnn.int8.onnx")
    with pytest.warns(UserWarning, match=r"quantized 0 of 2 weight-bearing ops \(2 excluded"):
        manifest = deploy.quantize(
            small, float_path, out, calibration_data=x_train, eval_data=(x_test, y_test)
        )
    q = manifest["quantization"]
    assert (q["quantized_ops"], q["quantizable_ops"]) == (0, 2)
    assert q["size_ratio"] > 0.95
    assert deploy.onnx_quantized_ops(onnx.load(out)) == (0, 2)
