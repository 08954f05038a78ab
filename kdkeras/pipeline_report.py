"""The summary table, `report.md` and `results.json` of `kdkeras.pipeline.distill`.

`summary(results, ...)` turns the benchmark results into the rows the
command prints (teacher, student, int8 student) and the headline ratios;
`write_report` writes `report.md` (the benchmark report of
`kdkeras.deploy.write_report` plus a distillation section and the training
curves) and `write_results` writes `results.json`: every figure, the exact
settings and the library versions.
"""

import json

import numpy as np

from kdkeras.utils.atomic import atomic_write_text
from kdkeras.utils.tables import format_table

__all__ = ["summary", "write_report", "write_results"]

_LABELS = {
    "teacher.onnx": "teacher",
    "student.onnx": "student",
    "student.int8.onnx": "student int8",
}


def summary(results, teacher_params, student_params):
    """`(rows, ratios)` from `kdkeras.deploy.benchmark` results of the three ONNX files.

    Rows: `model`, `file`, `params` (the Keras models' counts), `size KB`,
    `test accuracy` (`None` without labels), `teacher agreement`, `p50 ms`
    (batch 1), `batch-N /s`.
    """
    by = {r["name"]: r for r in results}
    rows = []
    for name, label in _LABELS.items():
        if name not in by:
            continue
        r = by[name]
        rows.append(
            {
                "model": label,
                "file": name,
                "params": int(teacher_params if label == "teacher" else student_params),
                "size KB": round(r["file_size_bytes"] / 1024, 1),
                "test accuracy": r["accuracy"],
                "teacher agreement": r["agreement"],
                "p50 ms": round(r["latency_ms"]["p50"], 4),
                f"batch-{r['batch_size']} /s": int(round(r["throughput_per_s"])),
            }
        )
    t, s = by["teacher.onnx"], by["student.onnx"]
    ratios = {
        "params_teacher_over_student": teacher_params / max(1, student_params),
        "size_teacher_over_student": t["file_size_bytes"] / s["file_size_bytes"],
        "p50_teacher_over_student": t["latency_ms"]["p50"] / s["latency_ms"]["p50"],
        "student_agreement": s["agreement"],
    }
    if "student.int8.onnx" in by:
        q = by["student.int8.onnx"]
        ratios["int8_size_over_float"] = q["file_size_bytes"] / s["file_size_bytes"]
        ratios["int8_agreement"] = q["agreement"]
    return rows, ratios


def write_report(result, results, manifests, ratios, command):
    """Writes `curves.png`, `bench.png` and `report.md`; returns the names of the files
    of this run (a `kdkeras.pipeline.DistillResult` in `result`)."""
    import os

    from kdkeras import deploy

    s = result.settings
    has_curves = any(any(v is not None for v in values) for values in result.history.values())
    if has_curves:
        curves = os.path.join(result.out_dir, "curves.png")
        deploy.plot_history(result.history, curves, title="Distillation")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items() if v)
    lines = [
        "## Distillation",
        "",
        format_table(result.rows),
        "",
        f"- teacher: `{s['teacher']}`; student: {s['student']}",
        f"- data: `{s['data']}`: {s['split']}" + ("" if s["labeled"] else " (no labels)"),
        f"- recipe: `{s['recipe']}` {json.dumps(s['recipe_settings'])}",
        f"- {s['epochs']} epochs, batch {s['batch_size']}, seed {s['seed']}; "
        f"int8: {s['quantize'] or 'none'}",
        "- stages: " + "; ".join(f"{k}: {v}" for k, v in result.stages.items()),
        f"- stage times (when they ran): {timings}",
    ]
    lines += [f"- note: {n}" for n in result.notes]
    if has_curves:
        lines += ["", "![training curves](curves.png)"]
    deploy.write_report(
        results,
        result.out_dir,
        title="kdkeras distill: teacher to deployed student",
        command=command,
        ratios=ratios,
        manifests=manifests,
        sections=["\n".join(lines)],
    )
    written = [r["name"] for r in results] + ["student.keras", "report.md", "bench.png"]
    return written + ["curves.png"] * has_curves + ["stages.json", "results.json"]


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_results(result, results, manifests, ratios, command):
    """Writes `results.json`: every figure, the exact settings, the library versions."""
    from kdkeras.deploy import manifest as manifest_lib

    payload = {
        "command": command,
        "seconds": result.seconds,
        "stage_seconds": result.stage_seconds,
        "settings": result.settings,
        "models": result.rows,
        "ratios": ratios,
        "stages": result.stages,
        "notes": result.notes,
        "history": result.history,
        "benchmark": results,
        "parity": {k: m.get("parity") for k, m in manifests.items()},
        "quantization": {k: m["quantization"] for k, m in manifests.items() if "quantization" in m},
        "paths": result.paths,
        "versions": manifest_lib.library_versions(),
    }
    text = json.dumps(_json_ready(payload), indent=2) + "\n"
    atomic_write_text(result.paths["results.json"], text)
