"""Export, parity gate, manifest and the measured conversion traps."""

import hashlib
import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")

from kdkeras import deploy  # noqa: E402
from kdkeras.deploy import runners  # noqa: E402
from kdkeras.utils import atomic  # noqa: E402

BATCH_SIZES = (1, 5)


def _cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dropout(0.5),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ],
        name="cnn",
    )


def _with_moving_stats(model, seed=1):
    """Non-trivial BatchNorm statistics, so that inference != training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
    return model


class Subclassed(keras.Model):
    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = keras.layers.Dense(6, activation="relu")
        self.drop = keras.layers.Dropout(0.3)
        self.out = keras.layers.Dense(units)

    def call(self, x, training=False):
        return self.out(self.drop(self.hidden(x), training=training))


def _transformer(seed=0):
    """Embedding + MultiHeadAttention + LayerNorm + exact GELU."""
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(20, 8)(tokens)
    attn = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    x = keras.layers.LayerNormalization()(x + attn)
    x = keras.layers.Dense(8, activation=keras.activations.gelu)(x)  # exact
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, keras.layers.Dense(3)(x), name="tiny_transformer")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((12, 8, 8, 1)).astype("float32")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def cnn_onnx(folder, images):
    model = _with_moving_stats(_cnn())
    path = str(folder / "cnn.onnx")
    manifest = deploy.export(model, path, sample_inputs=images, batch_sizes=BATCH_SIZES)
    return model, path, manifest


@pytest.fixture(scope="module")
def transformer_onnx(folder):
    model = _transformer()
    path = str(folder / "transformer.onnx")
    manifest = deploy.export(model, path, batch_sizes=BATCH_SIZES, route="keras")
    return model, path, manifest


def _ort_outputs(path, inputs, batch_size):
    runner = runners.OnnxRunner(path, threads=1)
    return runners.run_batched(runner, inputs, batch_size)[0]


def _assert_parity(model, path, manifest, inputs):
    """Checks the gate's figures and recomputes them independently."""
    parity = manifest["parity"]
    assert parity["passed"] is True
    assert set(parity["batch_sizes"]) == {str(b) for b in BATCH_SIZES}
    assert parity["max_abs_diff"] <= 1e-4
    assert parity["agreement"] == 1.0
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    for bs in BATCH_SIZES:
        got = _ort_outputs(path, [inputs], bs)
        diff = float(np.max(np.abs(got - expected)))
        assert diff <= 1e-4
        assert diff == pytest.approx(parity["batch_sizes"][str(bs)]["max_abs_diff"], abs=1e-6)


def test_cnn_with_batchnorm_and_dropout(cnn_onnx, images):
    model, path, manifest = cnn_onnx
    _assert_parity(model, path, manifest, images)
    assert manifest["parity"]["data"] == "given"
    # Inference mode: Dropout off and BatchNorm on its moving statistics.
    training = keras.ops.convert_to_numpy(model(images, training=True))
    got = _ort_outputs(path, [images], 4)
    assert np.max(np.abs(training - got)) > 1e-2


def test_batch_dimension_is_dynamic(cnn_onnx):
    _, path, _ = cnn_onnx
    proto = onnx.load(path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [8, 8, 1]


def test_subclassed_model(folder, images):
    model = Subclassed()
    x = images.reshape(len(images), -1)
    model(x[:1])
    path = str(folder / "subclassed.onnx")
    manifest = deploy.export(model, path, sample_inputs=x, batch_sizes=BATCH_SIZES)
    _assert_parity(model, path, manifest, x)


def test_model_loaded_from_keras_file_needs_explicit_signature(folder, images):
    # Trap 2: Keras's own ONNX export refuses a freshly loaded model.
    # If this starts passing, Keras fixed it; kdkeras still passes a signature.
    keras_path = str(folder / "saved.keras")
    _with_moving_stats(_cnn(seed=3)).save(keras_path)
    loaded = keras.models.load_model(keras_path)
    with pytest.raises(ValueError, match="never called"):
        loaded.export(str(folder / "raw.onnx"), format="onnx", verbose=False)

    loaded = keras.models.load_model(keras_path)
    path = str(folder / "loaded.onnx")
    manifest = deploy.export(loaded, path, sample_inputs=images, batch_sizes=BATCH_SIZES)
    _assert_parity(loaded, path, manifest, images)


def test_transformer_with_exact_gelu(transformer_onnx):
    model, path, manifest = transformer_onnx
    tokens = np.random.default_rng(5).integers(0, 20, (10, 6)).astype("int32")
    _assert_parity(model, path, manifest, tokens)
    assert manifest["parity"]["data"] == "random"
    assert manifest["inputs"][0]["dtype"] == "int32"


def test_erfc_trap_reproduced_and_fixed(folder, transformer_onnx):
    # Trap 1: exact GELU -> TF `Erfc`, copied unconverted by tf2onnx;
    # `model.export` reports success but onnxruntime cannot load the file.
    import tensorflow as tf

    model, fixed_path, manifest = transformer_onnx
    raw = str(folder / "raw_gelu.onnx")
    model.export(
        raw,
        format="onnx",
        verbose=False,
        input_signature=[tf.TensorSpec((None, 6), tf.int32, name="tokens")],
    )
    assert "Erfc" in {n.op_type for n in onnx.load(raw).graph.node}
    with pytest.raises(Exception, match="Erfc"):
        ort.InferenceSession(raw, providers=["CPUExecutionProvider"])

    ops = {n.op_type for n in onnx.load(fixed_path).graph.node}
    assert "Erfc" not in ops and "Erf" in ops
    assert manifest["fixes"] == ["Erfc -> 1 - Erf (1 node(s))"]
    assert manifest["parity"]["max_abs_diff"] < 1e-5


def test_saved_model_route_also_fixes_erfc(folder):
    model = _transformer(seed=1)
    path = str(folder / "transformer_sm.onnx")
    manifest = deploy.export(model, path, batch_sizes=BATCH_SIZES, route="saved_model")
    assert manifest["route"] == "saved_model"
    assert manifest["fixes"] == ["Erfc -> 1 - Erf (1 node(s))"]
    assert manifest["parity"]["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("opset", [19, 21, 8])
def test_unsupported_opset_is_refused(folder, opset):
    # Trap 3: tf2onnx 1.17 fails on opsets above 18.
    with pytest.raises(ValueError, match=rf"between 9 and 18.*opset={opset}"):
        deploy.export(_cnn(), str(folder / "o.onnx"), opset=opset)
    assert not os.path.exists(folder / "o.onnx")


def test_opset_18_is_written(folder):
    path = str(folder / "opset18.onnx")
    manifest = deploy.export(_cnn(), path, opset=18, num_samples=4)
    assert manifest["opset"] == 18
    proto = onnx.load(path)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 18


@pytest.mark.parametrize(
    "format, name", [("tflite", "m.tflite"), ("saved_model", "sm"), ("keras", "m.keras")]
)
def test_other_formats_pass_parity(folder, images, format, name):
    model = _with_moving_stats(_cnn(seed=2))
    path = str(folder / name)
    manifest = deploy.export(model, path, format, sample_inputs=images, batch_sizes=BATCH_SIZES)
    assert manifest["format"] == format
    runner = runners.load_runner(path)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    for bs in BATCH_SIZES:
        got = runners.run_batched(runner, [images], bs)[0]
        assert np.max(np.abs(got - expected)) <= 1e-4
    assert manifest["parity"]["passed"] is True


def test_manifest_describes_the_artifact(cnn_onnx):
    _, path, manifest = cnn_onnx
    with open(path + ".manifest.json") as f:
        on_disk = json.load(f)
    with open(path, "rb") as f:
        data = f.read()
    assert on_disk["sha256"] == hashlib.sha256(data).hexdigest()
    assert on_disk["file_size_bytes"] == len(data)
    assert on_disk["format"] == "onnx" and on_disk["opset"] == deploy.DEFAULT_OPSET
    assert on_disk["inputs"][0]["shape"] == [None, 8, 8, 1]
    assert on_disk["outputs"][0]["shape"] == [None, 3]
    assert on_disk["outputs"][0]["dtype"] == "float32"
    assert on_disk["parity"]["onnx_checker"] == "passed"
    assert on_disk["parity"]["runtime_load"] == "passed"
    for lib in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"):
        assert on_disk["versions"][lib]


def test_gate_fails_when_the_artifact_differs(cnn_onnx, images):
    _, path, _ = cnn_onnx
    other = _with_moving_stats(_cnn(seed=7))
    with pytest.raises(deploy.ParityError, match="max_abs_diff") as info:
        deploy.gate(other, path, "onnx", images, batch_sizes=BATCH_SIZES)
    assert info.value.report["passed"] is False
    assert info.value.report["max_abs_diff"] > 1e-2
    with open(path + ".manifest.json") as f:
        assert json.load(f)["parity"]["passed"] is False


def test_check_parity_catches_argmax_disagreement():
    class Swapped:
        def run(self, inputs):
            return [ref[:, ::-1].copy() for ref in [logits[: len(inputs[0])]]]

    logits = np.array([[0.0, 1.0], [2.0, 0.5], [0.2, 0.1]], dtype="float32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    report = deploy.check_parity(
        model, Swapped(), [logits], batch_sizes=(3,), atol=10.0, min_agreement=0.99
    )
    assert report["agreement"] == 0.0 and report["passed"] is False
    ok = deploy.check_parity(model, runners.KerasRunner(model), [logits], batch_sizes=(1, 2))
    assert ok["passed"] and ok["max_abs_diff"] == 0.0


def test_nan_outputs_fail_the_gate():
    ref = [np.ones((2, 3), "float32")]
    diff, _ = deploy.parity_figures(ref, [np.full((2, 3), np.nan, "float32")])
    assert diff == float("inf")


def test_a_nan_never_hides_a_difference():
    ref = [np.array([[np.nan, 1.0], [0.0, 1.0]], "float32")]
    out = [np.array([[5.0, 100.0], [0.0, -50.0]], "float32")]
    diff, _ = deploy.parity_figures(ref, out)
    assert diff == float("inf")  # the NaN position differs (5.0 vs NaN)
    out_same_nan = [np.array([[np.nan, 100.0], [0.0, -50.0]], "float32")]
    diff, _ = deploy.parity_figures(ref, out_same_nan)
    assert diff == pytest.approx(99.0)
    assert deploy.parity_figures(ref, [ref[0].copy()])[0] == 0.0


def test_non_finite_reference_or_no_samples_fail_the_check():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    runner = runners.KerasRunner(model)
    with pytest.raises(deploy.ParityError, match="finite outputs from the Keras model"):
        deploy.check_parity(model, runner, [np.array([[np.nan, 1.0]], "float32")], batch_sizes=(1,))
    with pytest.raises(ValueError, match="at least one sample"):
        deploy.check_parity(model, runner, [np.zeros((0, 2), "float32")], batch_sizes=(1,))


def test_agreement_gate_refuses_outputs_without_classes():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    x = np.random.default_rng(0).random((4, 2)).astype("float32")
    with pytest.raises(deploy.ParityError, match="needs class outputs"):
        deploy.check_parity(
            model, runners.KerasRunner(model), [x], batch_sizes=(2,), gate="agreement"
        )


def test_a_failed_export_keeps_the_previous_artifact(tmp_path, images, monkeypatch):
    model = _with_moving_stats(_cnn())
    path = str(tmp_path / "model.tflite")
    first = deploy.export(model, path, "tflite", sample_inputs=images, batch_sizes=BATCH_SIZES)
    before = open(path, "rb").read()
    manifest_before = open(path + ".manifest.json").read()

    # The next export's artifact is wrong: its runtime adds 1 to every output.
    real = runners.load_runner

    def off_by_one(p, *args, **kwargs):
        runner = real(p, *args, **kwargs)
        run = runner.run
        runner.run = lambda inputs: [o + 1.0 for o in run(inputs)]
        return runner

    monkeypatch.setattr(runners, "load_runner", off_by_one)
    with pytest.raises(deploy.ParityError):
        deploy.export(
            _with_moving_stats(_cnn(seed=3)),
            path,
            "tflite",
            sample_inputs=images,
            batch_sizes=BATCH_SIZES,
        )
    assert open(path, "rb").read() == before
    assert open(path + ".manifest.json").read() == manifest_before
    failed = deploy.failed_path(path)
    assert failed.endswith("model.failed.tflite") and os.path.isfile(failed)
    with open(failed + ".manifest.json") as f:
        assert json.load(f)["parity"]["passed"] is False
    assert first["parity"]["passed"] is True
    leftovers = [n for n in os.listdir(tmp_path) if ".tmp-" in n or ".staging" in n]
    assert leftovers == []


def test_refuses_kdkeras_objects(folder):
    student = _cnn()

    class Wrapper(keras.Model):
        def __init__(self, student):
            super().__init__()
            self.student = student

        def call(self, x):
            return self.student(x)

    Wrapper.__module__ = "kdkeras.distiller"
    with pytest.raises(ValueError, match="Export its `student`"):
        deploy.export(Wrapper(student), str(folder / "w.onnx"))


def test_data_that_does_not_fit_is_refused(folder):
    bad = np.zeros((4, 9, 9, 1), "float32")
    with pytest.raises(ValueError, match=r"Expected inputs shaped \(batch, 8, 8, 1\)"):
        deploy.export(_cnn(), str(folder / "bad.onnx"), sample_inputs=bad)


def test_bad_format_is_refused(folder):
    with pytest.raises(ValueError, match="format='pb'"):
        deploy.export(_cnn(), str(folder / "m.pb"), format="pb")


def test_atomic_writes(tmp_path):
    target = tmp_path / "a.txt"
    atomic.atomic_write_text(target, "one")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "one"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]

    folder = tmp_path / "model_dir"
    for content in ("v1", "v2"):
        with atomic.atomic_path(folder, is_dir=True) as tmp:
            with open(os.path.join(tmp, "f"), "w") as f:
                f.write(content)
    assert (folder / "f").read_text() == "v2"
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "model_dir"]


# Issue 10: what the keras.applications zoo found (see benchmarks/zoo_export.py).


def _normalized_cnn(seed=0):
    """A Normalization layer with fixed statistics, as EfficientNet and ConvNeXt have."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.04, 0.05, 0.06])(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name="normalized_cnn")


def test_captured_constants_are_not_left_as_graph_inputs(folder):
    # Model.export's tf2onnx call makes the Normalization constants graph
    # inputs ("Required inputs [...normalization/Sub/y:0...] are missing");
    # auto falls back to the SavedModel route, which freezes them.
    model = _normalized_cnn()
    x = np.random.default_rng(0).random((8, 8, 8, 3)).astype("float32")
    with pytest.raises(deploy.ConversionError, match="captured constants became inputs"):
        deploy.export(model, str(folder / "norm_keras.onnx"), sample_inputs=x, route="keras")
    assert not os.path.exists(folder / "norm_keras.onnx")

    path = str(folder / "norm.onnx")
    manifest = deploy.export(model, path, sample_inputs=x, batch_sizes=BATCH_SIZES)
    assert manifest["route"] == "saved_model"
    assert "captured constants" in manifest["fallback_errors"][0]
    assert [i.name for i in onnx.load(path).graph.input] == [manifest["inputs"][0]["name"]]
    expected = keras.ops.convert_to_numpy(model(x))
    got = _ort_outputs(path, [x], 4)
    assert np.max(np.abs(got - expected)) / np.max(np.abs(expected)) <= 1e-5
    assert manifest["parity"]["max_rel_diff"] <= 1e-5


def test_grouped_convolution_is_inlined_and_converted(folder):
    # Keras wraps Conv2D(groups>1) (ConvNeXt's depthwise convolutions) in a
    # tf.function(jit_compile=True), which tf2onnx left as an unconverted
    # StatefulPartitionedCall.
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(4, 3, groups=4, padding="same"),
            keras.layers.Conv2D(8, 3, groups=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    x = np.random.default_rng(1).random((8, 8, 8, 4)).astype("float32")
    path = str(folder / "grouped.onnx")
    manifest = deploy.export(model, path, sample_inputs=x, batch_sizes=BATCH_SIZES, route="keras")
    convs = [n for n in onnx.load(path).graph.node if n.op_type == "Conv"]
    groups = sorted(next((a.i for a in n.attribute if a.name == "group"), 1) for n in convs)
    assert groups == [2, 4]
    assert manifest["parity"]["passed"] is True
    assert manifest["parity"]["max_rel_diff"] <= 1e-5
    # The SavedModel keeps the XLA call, which TF's CPU runtime needs.
    sm = deploy.export(model, str(folder / "grouped_sm"), sample_inputs=x, batch_sizes=(4,))
    assert sm["format"] == "saved_model" and sm["parity"]["max_abs_diff"] <= 1e-5


class Digamma(keras.layers.Layer):
    """A TensorFlow op neither tf2onnx 1.17 nor the LiteRT converter knows."""

    def call(self, x):
        import tensorflow as tf

        return tf.math.digamma(x)


def _digamma_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(4, activation="softplus")(inputs)
    x = Digamma(name="psi")(x + 1.0)
    return keras.Model(inputs, keras.layers.Dense(3)(x), name="digamma")


@pytest.mark.parametrize("format, name", [("onnx", "psi.onnx"), ("tflite", "psi.tflite")])
def test_unconvertible_op_names_op_layer_and_a_format_that_works(folder, format, name):
    model = _digamma_model()
    path = str(folder / name)
    with pytest.raises(deploy.ConversionError, match=r"\['Digamma'\].*format='saved_model'") as e:
        deploy.export(model, path, format, num_samples=4)
    assert e.value.ops == ["Digamma"]
    assert e.value.layers == ["psi"]
    assert "layers=['psi']" in str(e.value)
    assert e.value.alternatives == ["saved_model", "keras"]
    assert not os.path.exists(path)
    works = deploy.export(model, str(folder / f"psi_{format}_sm"), "saved_model", num_samples=4)
    assert works["parity"]["passed"] is True and works["parity"]["max_rel_diff"] <= 1e-6


@pytest.mark.parametrize(
    "name, format",
    [("m.onnx", "onnx"), ("m.tflite", "tflite"), ("m.keras", "keras"), ("sm", "saved_model")],
)
def test_format_is_inferred_from_the_extension(name, format):
    assert deploy.format_for_path(name) == format
    assert deploy.format_for_path(name, format) == format


def test_inferred_tflite_export(folder, images):
    model = _cnn(seed=4)
    path = str(folder / "inferred.tflite")
    manifest = deploy.export(model, path, sample_inputs=images, batch_sizes=BATCH_SIZES)
    assert manifest["format"] == "tflite"
    with open(path, "rb") as f:
        assert f.read(8)[4:8] == b"TFL3"  # a FlatBuffer, not an ONNX protobuf
    assert manifest["parity"]["passed"] is True


@pytest.mark.parametrize(
    "name, format",
    [("m.tflite", "onnx"), ("m.onnx", "tflite"), ("m.keras", "saved_model"), ("m.onnx", "keras")],
)
def test_extension_mismatch_is_refused_before_any_work(tmp_path, monkeypatch, name, format):
    from kdkeras.deploy import exporter

    def never(*args, **kwargs):
        raise AssertionError("work started")

    for name_ in ("check_plain_keras", "input_specs"):
        monkeypatch.setattr(exporter, name_, never)
    path = str(tmp_path / name)
    with pytest.raises(ValueError, match=rf"Received: path='.*{name}', format='{format}'"):
        deploy.export(_cnn(), path, format)
    assert os.listdir(tmp_path) == []


def _dict_input_model(seed=0):
    """Inputs given as a dict, like keras-hub's backbones (token_ids, padding_mask)."""
    keras.utils.set_random_seed(seed)
    inputs = {
        "token_ids": keras.Input((6,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((6,), dtype="int32", name="padding_mask"),
        "segment_ids": keras.Input((6,), dtype="int32", name="segment_ids"),
    }
    x = keras.layers.Embedding(20, 8)(inputs["token_ids"])
    x = x + keras.layers.Embedding(2, 8)(inputs["segment_ids"])
    mask = keras.ops.expand_dims(keras.ops.cast(inputs["padding_mask"], "float32"), -1)
    pooled = keras.ops.sum(x * mask, axis=1)
    return keras.Model(inputs, {"logits": keras.layers.Dense(3)(pooled), "sequence": x})


@pytest.mark.parametrize(
    "format, name", [("onnx", "d.onnx"), ("tflite", "d.tflite"), ("saved_model", "d_sm")]
)
def test_model_on_a_dict_of_inputs(folder, format, name):
    model = _dict_input_model()
    rng = np.random.default_rng(0)
    # model.inputs order: sorted keys (padding_mask, segment_ids, token_ids).
    assert [t.name for t in model.inputs] == ["padding_mask", "segment_ids", "token_ids"]
    x = [
        (rng.random((8, 6)) > 0.3).astype("int32"),
        rng.integers(0, 2, (8, 6)).astype("int32"),
        rng.integers(0, 20, (8, 6)).astype("int32"),
    ]
    manifest = deploy.export(
        model, str(folder / name), format, sample_inputs=x, batch_sizes=BATCH_SIZES
    )
    assert manifest["parity"]["passed"] is True
    assert manifest["parity"]["max_rel_diff"] <= 1e-5
    # Independently: the artifact on the same arrays, in the same order.
    got = runners.run_batched(runners.load_runner(str(folder / name)), x, 4)
    want = keras.tree.flatten(model(dict(zip(["padding_mask", "segment_ids", "token_ids"], x))))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, keras.ops.convert_to_numpy(w), atol=1e-5)
