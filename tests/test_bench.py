"""Benchmark, report and the whole compare pipeline, on tiny models."""

import json
import os

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from kdkeras import datasets  # noqa: E402
from kdkeras import deploy  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def _mlp(units, seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def _fit(model, x, y, epochs=5):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def pair(digits, tmp_path_factory):
    (x_train, y_train), (x_test, _) = digits
    folder = tmp_path_factory.mktemp("bench")
    big = _fit(_mlp(32, 0), x_train, y_train)
    small = _fit(_mlp(8, 1), x_train, y_train)
    paths = {}
    for name, model in (("big", big), ("small", small)):
        paths[name] = str(folder / f"{name}.onnx")
        deploy.export(model, paths[name], sample_inputs=x_test, num_samples=8)
    return big, small, paths, folder


@pytest.fixture(scope="module")
def results(pair, digits):
    _, small, paths, _ = pair
    (_, _), (x_test, y_test) = digits
    models = {"big": paths["big"], "small": paths["small"], "small-keras": small}
    return deploy.benchmark(
        models,
        x_test,
        y_test,
        batch_size=16,
        calls=5,
        repeats=2,
        warmup=1,
        threads=1,
    )


def test_results_hold_every_figure(results, pair, digits):
    big, small, paths, _ = pair
    (_, _), (x_test, y_test) = digits
    by = {r["name"]: r for r in results}
    assert [r["name"] for r in results] == ["big", "small", "small-keras"]
    for r in results:
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert r["throughput_per_s"] > 0 and r["batch_size"] == 16
        assert r["timed_calls"] == 10 and r["num_samples"] == len(x_test)
    assert by["big"]["file_size_bytes"] == os.path.getsize(paths["big"])
    assert by["small-keras"]["file_size_bytes"] is None
    # A Dense-only model keeps every parameter as one initializer each.
    assert by["big"]["params"] == big.count_params()
    assert by["small"]["params"] == small.count_params()
    expected = np.mean(keras.ops.convert_to_numpy(small(x_test)).argmax(-1) == y_test)
    assert by["small"]["accuracy"] == pytest.approx(expected)
    assert by["small-keras"]["accuracy"] == pytest.approx(expected)
    # Reference is the first model; the Keras and ONNX student agree fully.
    assert by["big"]["agreement"] == 1.0
    big_pred = keras.ops.convert_to_numpy(big(x_test)).argmax(-1)
    small_pred = keras.ops.convert_to_numpy(small(x_test)).argmax(-1)
    assert by["small"]["agreement"] == pytest.approx(np.mean(big_pred == small_pred))
    assert by["small"]["agreement"] < 1.0


def test_session_options_are_explicit(results):
    onnx_settings = results[0]["settings"]
    assert onnx_settings["graph_optimization_level"] == "ORT_ENABLE_ALL"
    assert onnx_settings["intra_op_num_threads"] == 1
    assert onnx_settings["inter_op_num_threads"] == 1
    assert results[2]["settings"]["call"] == "tf.function"


def test_keras_is_timed_without_predict(pair, digits):
    _, small, _, _ = pair
    (_, _), (x_test, y_test) = digits

    def forbidden(*args, **kwargs):
        raise AssertionError("model.predict must not be used")

    model = keras.models.clone_model(small)
    model.set_weights(small.get_weights())
    model.predict = forbidden
    out = deploy.benchmark([model], x_test[:32], y_test[:32], calls=2, repeats=1, warmup=1)
    assert out[0]["kind"] == "keras"


def test_data_that_does_not_fit(pair):
    _, _, paths, _ = pair
    bad = np.zeros((4, 28, 28, 1), "float32")
    with pytest.raises(
        ValueError, match=r"\(batch, 8, 8, 1\).*Received: data shape=\(4, 28, 28, 1\)"
    ):
        deploy.benchmark([paths["big"]], bad)


def test_unknown_reference(pair, digits):
    _, _, paths, _ = pair
    (_, _), (x_test, _) = digits
    with pytest.raises(ValueError, match="reference='nope'"):
        deploy.benchmark([paths["big"]], x_test, reference="nope")


def test_table_json_and_report(results, tmp_path):
    table = deploy.format_results(results)
    assert "small-keras" in table and "p50 ms" in table
    assert len(table.splitlines()) == 2 + len(results)
    path = deploy.write_json(results, tmp_path / "b.json", extra={"data": "digits"})
    assert json.loads(open(path).read())["data"] == "digits"
    assert deploy.load_results(path) == json.loads(json.dumps(results))
    written = deploy.write_report(results, tmp_path / "r", command="kdkeras bench x")
    text = open(written["report"]).read()
    assert "| small |" in text and "kdkeras bench x" in text
    assert "![accuracy vs latency](bench.png)" in text
    with open(written["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_compare_pipeline(digits, tmp_path):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    teacher = _fit(_mlp(256, 2), x_train, y_train)
    student = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    _fit(student, x_train, y_train, epochs=8)
    out = deploy.compare(
        teacher,
        student,
        x_test,
        y_test,
        tmp_path,
        calibration_data=x_train,
        calls=3,
        repeats=2,
        batch_size=16,
        threads=1,
        min_agreement=0.97,
        command="pytest",
    )
    names = [r["name"] for r in out["results"]]
    assert names == ["teacher.onnx", "student.onnx", "student.int8.onnx", "student (keras)"]
    for f in (
        "teacher.onnx",
        "student.onnx",
        "student.int8.onnx",
        "bench.json",
        "report.md",
        "bench.png",
        "student.onnx.manifest.json",
    ):
        assert os.path.exists(tmp_path / f), f
    # The exported student holds the student's weights only, no teacher.
    student_params = sum(
        int(np.prod(t.dims)) for t in onnx.load(tmp_path / "student.onnx").graph.initializer
    )
    assert student_params < student.count_params() + 64
    assert student_params < teacher.count_params() / 2
    by = {r["name"]: r for r in out["results"]}
    ratios = out["ratios"]
    assert ratios["onnx_vs_keras_p50"] == pytest.approx(
        by["student (keras)"]["latency_ms"]["p50"] / by["student.onnx"]["latency_ms"]["p50"]
    )
    assert ratios["int8_size_ratio"] == pytest.approx(
        os.path.getsize(tmp_path / "student.int8.onnx") / os.path.getsize(tmp_path / "student.onnx")
    )
    assert ratios["int8_agreement"] >= 0.97
    saved = json.load(open(tmp_path / "bench.json"))
    assert saved["ratios"] == pytest.approx(ratios)
    assert saved["parity"]["student.onnx"]["passed"] is True


def test_plot_names_never_overlap(tmp_path, monkeypatch):
    # student.onnx and student.int8.onnx: same accuracy, similar latency.
    import matplotlib.pyplot as plt

    results = [
        {"name": "teacher.onnx", "latency_ms": {"p50": 0.35}, "accuracy": 0.959},
        {"name": "student.onnx", "latency_ms": {"p50": 0.015}, "accuracy": 0.921},
        {"name": "student.int8.onnx", "latency_ms": {"p50": 0.013}, "accuracy": 0.922},
        {"name": "student (keras)", "latency_ms": {"p50": 0.43}, "accuracy": 0.921},
    ]
    for r, size in zip(results, (4_800_000, 815_000, 219_000, None)):
        r["file_size_bytes"] = size
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # kept open to measure
    deploy.report.plot(results, tmp_path / "b.png")
    (fig,) = figures
    (ax,) = fig.axes
    assert len(ax.texts) == 0  # no names beside the points
    texts = ax.get_legend().get_texts()
    assert [t.get_text() for t in texts] == [
        "teacher.onnx (4,688 KB)",
        "student.onnx (796 KB)",
        "student.int8.onnx (214 KB)",
        "student (keras)",
    ]
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    monkeypatch.undo()
    plt.close(fig)
    with open(tmp_path / "b.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
