"""Markdown report and plot of benchmark results.

`write_report(results, out_dir)` writes `report.md` (the table, the
runtime settings, the parity figures, the command, and any extra sections)
and `bench.png` (accuracy against batch-1 latency, marker area proportional
to file size). `plot_history(history, path)` draws training curves from a
`keras.callbacks.History.history` dict. matplotlib is imported lazily (the
`plot` extra).
"""

import io
import json
import os

from kdkeras.deploy.bench import format_results
from kdkeras.utils.atomic import atomic_write_bytes
from kdkeras.utils.atomic import atomic_write_text

__all__ = [
    "PLOT_EXTRA_HINT",
    "load_results",
    "markdown",
    "plot",
    "plot_history",
    "write_report",
]

PLOT_EXTRA_HINT = "Install it with `pip install 'kdkeras[plot]'`."


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(f"Plots need the `matplotlib` package. {PLOT_EXTRA_HINT}") from e
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_png(fig, path):
    buf = io.BytesIO()
    # "tight" keeps the legend below the axes inside the image.
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return os.fspath(path)


def plot(results, path, title=None):
    """Writes a PNG: accuracy (or agreement) vs batch-1 p50 latency.

    Marker area is proportional to file size; each model has its own colour
    and its name (with the file size) in a legend below the axes, so that
    names never overlap. Returns `path`.
    """
    plt = _pyplot()

    use_acc = all(r.get("accuracy") is not None for r in results)
    metric = "accuracy" if use_acc else "agreement"
    sizes = [r.get("file_size_bytes") or 0 for r in results]
    biggest = max(sizes) or 1
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colors = plt.get_cmap("tab10")
    handles = []
    for i, (r, size) in enumerate(zip(results, sizes)):
        area = 40 + 1200 * size / biggest
        label = r["name"]
        if size:
            label += f" ({size / 1024:,.0f} KB)"
        x, y = r["latency_ms"]["p50"], r[metric]
        ax.scatter(x, y, s=area, alpha=0.6, color=colors(i % 10), edgecolors="k")
        # Names go in a legend below the axes, one row each, not beside the
        # points: models with the same accuracy and similar latency
        # (student.onnx and student.int8.onnx) printed their labels on top
        # of each other. Colour ties a marker to its row.
        handles.append(
            plt.Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                markersize=7,
                markerfacecolor=colors(i % 10),
                markeredgecolor="k",
                alpha=0.8,
                label=label,
            )
        )
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=1,
        fontsize=8,
        frameon=False,
    )
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.15)
    ax.set_xlabel("batch-1 latency p50 (ms, log scale)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs latency (marker area: file size)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    written = _save_png(fig, path)
    plt.close(fig)
    return written


def plot_history(history, path, title=None):
    """Writes a PNG of training curves: losses (left) and accuracy/agreement (right).

    Args:
        history: `{metric: [value per epoch]}` (`History.history`), with
            `val_`-prefixed entries drawn dashed, in their training curve's
            color.
        path: the PNG file.
        title: the figure title. Defaults to `"Training curves"`.

    Returns:
        `path`.
    """
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.6), dpi=120)
    shares = ("accuracy", "teacher_agreement")
    colors = {}  # a metric and its val_ twin share a color
    for key, values in history.items():
        base = key[4:] if key.startswith("val_") else key
        if base == "total_loss" or not values:
            continue  # equal to `loss`
        ax = right if base in shares else left if base.endswith("loss") else None
        points = [(e + 1, v) for e, v in enumerate(values) if v is not None]
        if ax is None or not points:
            continue
        color = colors.setdefault(base, f"C{len(colors) % 10}")
        style = "--" if key.startswith("val_") else "-"
        ax.plot(*zip(*points), style, color=color, marker="o", markersize=3, label=key)
    for ax, label in ((left, "loss"), (right, "share of samples")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title or "Training curves")
    fig.tight_layout()
    written = _save_png(fig, path)
    plt.close(fig)
    return written


def _settings_lines(results):
    lines = []
    for r in results:
        settings = ", ".join(f"{k}={v}" for k, v in r.get("settings", {}).items())
        lines.append(f"- `{r['name']}` ({r['kind']}): {settings}")
    return lines


def markdown(
    results,
    *,
    title="Benchmark",
    command=None,
    ratios=None,
    manifests=None,
    plot_name=None,
    sections=(),
):
    """The report as a Markdown string; `sections` (Markdown strings) follow the plot."""
    first = results[0] if results else {}
    parts = [f"# {title}", ""]
    if command:
        parts += ["Command:", "", "```", command, "```", ""]
    parts += [
        f"{first.get('num_samples', '?')} samples; batch-1 latency over "
        f"{first.get('timed_calls', '?')} interleaved calls per model; "
        f"throughput at batch {first.get('batch_size', '?')}; agreement is "
        f"argmax agreement with `{first.get('reference', '?')}`.",
        "",
        format_results(results, markdown=True),
        "",
    ]
    if plot_name:
        parts += [f"![accuracy vs latency]({plot_name})", ""]
    for section in sections:
        parts += [section.rstrip("\n"), ""]
    if ratios:
        parts += ["## Ratios", ""]
        parts += [f"- {k}: {v:.3f}" for k, v in ratios.items()]
        parts += [""]
    if manifests:
        parts += ["## Parity gate", ""]
        for name, m in manifests.items():
            p = m.get("parity", {})
            parts.append(
                f"- `{name}`: passed={p.get('passed')}, gate={p.get('gate')}, "
                f"max_abs_diff={p.get('max_abs_diff', float('nan')):.3g}, "
                f"agreement={p.get('agreement')}, batch sizes "
                f"{list(p.get('batch_sizes', {}))}, {p.get('num_samples')} "
                f"{p.get('data')} samples"
            )
            q = m.get("quantization")
            if q:
                keys = (
                    "mode",
                    "per_channel",
                    "reduce_range",
                    "nodes_excluded",
                    "size_ratio",
                    "accuracy_change",
                    "latency_ratio_batch1",
                )
                parts.append("  - int8: " + ", ".join(f"{k}={q[k]}" for k in keys if k in q))
        parts += [""]
    parts += ["## Runtime settings", ""] + _settings_lines(results) + [""]
    return "\n".join(parts)


def write_report(
    results,
    out_dir,
    *,
    title="Benchmark",
    command=None,
    ratios=None,
    manifests=None,
    plot_file="bench.png",
    sections=(),
):
    """Writes `report.md` and `bench.png` into `out_dir`.

    Args:
        results: the list from `kdkeras.deploy.benchmark`.
        out_dir: the folder (created).
        title: the report title. Defaults to `"Benchmark"`.
        command: the exact command that produced the numbers.
        ratios: a `dict` of named ratios to list.
        manifests: artifact manifests whose parity figures to list.
        plot_file: the PNG name, or `None` for no plot. Defaults to
            `"bench.png"`.
        sections: further Markdown sections (strings), placed after the
            plot. Defaults to none.

    Returns:
        `{"report": path, "plot": path or None}`.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    plot_path = None
    if plot_file:
        plot_path = plot(results, os.path.join(out_dir, plot_file), title=title)
    text = markdown(
        results,
        title=title,
        command=command,
        ratios=ratios,
        manifests=manifests,
        plot_name=plot_file,
        sections=sections,
    )
    report_path = os.path.join(out_dir, "report.md")
    atomic_write_text(report_path, text)
    return {"report": report_path, "plot": plot_path}


def load_results(path):
    """Reads the results list back from a `bench.json`."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)["results"]
