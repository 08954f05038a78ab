"""`kdkeras export` / `kdkeras bench`, and the `export/` scripts."""

import json
import os
import subprocess
import sys

import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")
pytest.importorskip("sklearn")

from kdkeras import cli  # noqa: E402
from kdkeras import datasets  # noqa: E402
from kdkeras.deploy import runners  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small model trained on digits (8x8x1), saved as .keras."""
    (x_train, y_train), _ = datasets.load("digits")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)
    path = str(tmp_path_factory.mktemp("cli") / "student.keras")
    model.save(path)
    return path


def _json_line(out):
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 1, out
    return json.loads(lines[0])


def _one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("kdkeras: error: ")
    return lines[0]


def test_export_prints_parity_json(model_file, tmp_path, capsys):
    status = cli.main(
        ["export", model_file, "--format", "onnx", "--out", str(tmp_path), "--data", "digits"]
    )
    out = capsys.readouterr().out
    assert status == 0
    summary = _json_line(out)
    assert summary["passed"] is True
    (artifact,) = summary["artifacts"]
    assert artifact["path"] == str(tmp_path / "student.onnx")
    assert artifact["max_abs_diff"] <= 1e-4 and artifact["agreement"] == 1.0
    assert set(artifact["batch_sizes"]) == {"1", "16"}
    assert artifact["data"] == "given"
    assert os.path.exists(tmp_path / "student.onnx.manifest.json")


def test_export_with_static_int8(model_file, tmp_path, capsys):
    status = cli.main(
        [
            "export",
            model_file,
            "--out",
            str(tmp_path),
            "--data",
            "digits",
            "--quantize",
            "static",
            "--min-agreement",
            "0.97",
        ]
    )
    summary = _json_line(capsys.readouterr().out)
    assert status == 0 and summary["passed"] is True
    float_art, int8_art = summary["artifacts"]
    assert int8_art["path"].endswith("student.int8.onnx")
    assert int8_art["gate"] == "agreement" and int8_art["agreement"] >= 0.97
    assert int8_art["quantization"]["mode"] == "static"
    assert int8_art["quantization"]["size_ratio"] == pytest.approx(
        os.path.getsize(int8_art["path"]) / os.path.getsize(float_art["path"])
    )


def test_failed_parity_exits_nonzero(model_file, tmp_path, capsys, monkeypatch):
    # A converter that drifts by 1e-2: the gate must fail, not warn.
    real_run = runners.OnnxRunner.run
    monkeypatch.setattr(
        runners.OnnxRunner,
        "run",
        lambda self, inputs: [o + 1e-2 for o in real_run(self, inputs)],
    )
    status = cli.main(["export", model_file, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert status == 1
    summary = _json_line(captured.out)
    assert summary["passed"] is False
    assert summary["failed_parity"]["max_abs_diff"] == pytest.approx(1e-2, rel=1e-3)
    assert "Parity check failed" in _one_error_line(captured.err)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["export", "{missing}", "--out", "{out}"],
            "Expected an existing model file. Received: model=",
        ),
        (["export", "{not_model}", "--out", "{out}"], "Expected a Keras model file (.keras)"),
        (
            ["export", "{model}", "--out", "{out}", "--data", "mnist-5k"],
            "Expected inputs shaped (batch, 8, 8, 1)",
        ),
        (["export", "{model}", "--out", "{out}", "--opset", "19"], "opset=19"),
        (
            ["export", "{model}", "--out", "{out}", "--quantize", "static"],
            "Expected --data NAME with --quantize",
        ),
        (["bench", "{missing}", "--data", "digits"], "Expected an existing model file"),
        (["bench", "{not_model_onnx}", "--data", "digits"], "Expected a loadable onnx model"),
        (["bench", "{model}", "--data", "mnist-5k"], "Expected inputs shaped (batch, 8, 8, 1)"),
    ],
)
def test_bad_input_is_one_line(model_file, tmp_path, capsys, argv, message):
    not_model = tmp_path / "notes.keras"
    not_model.write_text("not a model")
    not_model_onnx = tmp_path / "notes.onnx"
    not_model_onnx.write_text("not a model")
    fill = {
        "missing": str(tmp_path / "missing.keras"),
        "not_model": str(not_model),
        "not_model_onnx": str(not_model_onnx),
        "model": model_file,
        "out": str(tmp_path / "out"),
    }
    status = cli.main([a.format(**fill) for a in argv])
    assert status == 1
    assert message in _one_error_line(capsys.readouterr().err)


def test_bench_writes_json_and_report(model_file, tmp_path, capsys):
    assert cli.main(["export", model_file, "--out", str(tmp_path)]) == 0
    onnx_path = str(tmp_path / "student.onnx")
    status = cli.main(
        [
            "bench",
            onnx_path,
            model_file,
            "--data",
            "digits",
            "--calls",
            "3",
            "--repeats",
            "2",
            "--json",
            str(tmp_path / "b.json"),
            "--report",
            str(tmp_path / "report"),
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "student.onnx" in out and "student.keras" in out
    results = json.load(open(tmp_path / "b.json"))["results"]
    assert [r["kind"] for r in results] == ["onnx", "keras"]
    assert results[1]["agreement"] == 1.0
    assert results[0]["accuracy"] == pytest.approx(results[1]["accuracy"])
    report = open(tmp_path / "report" / "report.md").read()
    assert "kdkeras bench" in report and "--data digits" in report


def _run(args, **kwargs):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        **kwargs,
    )


@pytest.mark.subprocess
def test_command_line_exit_status(tmp_path):
    proc = _run(
        ["-m", "kdkeras.cli", "export", str(tmp_path / "none.keras"), "--out", str(tmp_path)]
    )
    assert proc.returncode == 1
    assert "kdkeras: error: Expected an existing model file" in proc.stderr


@pytest.mark.subprocess
@pytest.mark.parametrize("script", ["export/to_onnx.py", "export/int8.py"])
def test_export_scripts_smoke(script, tmp_path):
    proc = _run([script, "--smoke", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["passed"] is True


def test_static_int8_that_quantizes_nothing_says_so(tmp_path, capsys):
    # One convolution, one Dense: both are the first and the logits layer,
    # which static int8 keeps in float32 by default.
    keras.utils.set_random_seed(0)
    small = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    path = str(tmp_path / "small_cnn.keras")
    small.save(path)
    out = tmp_path / "out"
    status = cli.main(
        ["export", path, "--out", str(out), "--data", "digits", "--quantize", "static"]
    )
    captured = capsys.readouterr()
    assert status == 0
    q = _json_line(captured.out)["artifacts"][1]["quantization"]
    assert (q["quantized_ops"], q["quantizable_ops"]) == (0, 2)
    lines = [line for line in captured.err.splitlines() if "quantized 0 of" in line]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("kdkeras: warning: ")
    assert "small_cnn.int8.onnx" in lines[0] and "quantized 0 of 2 weight-bearing ops" in lines[0]
    assert f"{q['size_ratio']:.2f}x the float32 size" in lines[0]


def test_rtol_option_reaches_the_gate(model_file, tmp_path, capsys):
    status = cli.main(["export", model_file, "--out", str(tmp_path), "--rtol", "0.25"])
    (artifact,) = _json_line(capsys.readouterr().out)["artifacts"]
    assert status == 0
    assert artifact["rtol"] == 0.25 and artifact["atol"] == 1e-4
    assert artifact["max_rel_diff"] <= 1e-5
