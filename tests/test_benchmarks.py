"""The benchmark scripts run end to end (`--smoke`) and print their ratios."""

import json

import pytest

pytestmark = pytest.mark.subprocess


def test_step_time_smoke_reports_every_ratio(tmp_path, run_python):
    out = tmp_path / "step_time.json"
    result = run_python(["benchmarks/step_time.py", "--smoke", "--json", str(out)])
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["ratios"]) == {
        "(c) / ((a) + (b))",
        "(d) / (a)",
        "(c) / (e)",
        "(g) / ((c) + (f))",
    }
    times = report["times"]
    short = {name[:3]: min(values) for name, values in times.items()}
    assert report["ratios"]["(c) / (e)"] == short["(c)"] / short["(e)"]
    # One round: the per-round ratio is the ratio of that round's epochs.
    first = {name[:3]: values[0] for name, values in times.items()}
    assert report["paired_ratios"]["(d) / (a)"] == pytest.approx(first["(d)"] / first["(a)"])
    assert all(value > 0 for value in short.values())


def test_peer_accuracy_smoke_trains_all_four(run_python):
    result = run_python(["benchmarks/peer_accuracy.py", "--smoke"])
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("| teacher |", "| scratch |", "| keras.distillation |", "| kdkeras |"):
        assert name in result.stdout


def test_accuracy_study_smoke_reports_fair_gains(tmp_path, run_python):
    result = run_python(["benchmarks/accuracy.py", "--smoke", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "accuracy.json").read_text())
    rows = {r["row"]: r for r in saved["results"]}
    assert "labels + aug" in rows and "KD + views, T=4" in rows
    fair = max(rows["labels"]["accuracy"], rows["labels + aug"]["accuracy"])
    gain = rows["KD + views, T=4"]["accuracy"] - fair
    assert f"{gain:+.4f}" in (tmp_path / "accuracy.md").read_text()


def test_accuracy_sweep_refuses_the_test_set(run_python):
    result = run_python(["benchmarks/accuracy.py", "--sweep", "T=2", "--smoke"])
    assert result.returncode != 0
    assert "--validate" in result.stderr


def test_accuracy_hungry_smoke_runs_patient_rows_with_an_ensemble_teacher(tmp_path, run_python):
    args = ["benchmarks/accuracy.py", "--smoke", "--hungry", "--patience", "2", "--teachers", "2"]
    args += ["--rows", "kd+views", "--patient-methods", "kd+views", "--out", str(tmp_path)]
    result = run_python(args)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "hungry.json").read_text())
    assert [r["row"] for r in saved["results"]] == [
        "labels + aug, 10% labels",
        "KD + views, no labels (all images)",
        "labels + aug, 10% labels (x2 epochs)",
        "KD + views, no labels (all images) (x2 epochs)",
    ]
    assert "ensemble of 2 teachers" in saved["title"]


def test_accuracy_refuses_an_empty_ensemble(run_python):
    result = run_python(["benchmarks/accuracy.py", "--smoke", "--teachers", "0"])
    assert result.returncode == 2
    assert "--teachers: expected 1 or more" in result.stderr
    assert "received 0" in result.stderr


def test_accuracy_refuses_patient_only_without_patient_hungry_rows(run_python):
    result = run_python(["benchmarks/accuracy.py", "--smoke", "--patient-only"])
    assert result.returncode == 2
    assert "--patient-only: expected with --hungry and --patience above 1" in result.stderr
    assert "received --hungry off, --patience 1" in result.stderr
