"""The figures the chapters draw, in one style.

Each function returns a matplotlib Figure; the chapter that calls it shows it.
"""

from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:
    # Scripts and tests run without a display. A notebook kernel (the book's build) keeps its inline
    # backend: with Agg there, the chapters' figures would never reach the page.
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

COLORS = {"layer": "#2a6fb0", "batch": "#c2571a", "grid": "#9a9a9a", "direct": "#2a6fb0",
          "mean": "#c2571a", "var": "#3b8f3b"}


def reduction_figure(n: int = 5, d: int = 8):
    """An N x D grid twice: layer norm's groups are rows, batch norm's are columns."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, norm in zip(axes, ("layer", "batch")):
        for i in range(n):
            for j in range(d):
                ax.add_patch(Rectangle((j, n - 1 - i), 1, 1, fill=False, edgecolor=COLORS["grid"], lw=0.8))
        color = COLORS[norm]
        if norm == "layer":  # one group: sample i = 1, all D features
            ax.add_patch(Rectangle((0, n - 2), d, 1, color=color, alpha=0.35))
            ax.annotate("one mean and variance\nper sample (row)", (d, n - 1.5), (d + 0.4, n - 1.5),
                        va="center", fontsize=9, color=color)
            title = "LayerNorm: reduce over the features (axis 1)"
        else:  # one group: feature j = 2, all N samples
            ax.add_patch(Rectangle((2, 0), 1, n, color=color, alpha=0.35))
            ax.annotate("one mean and variance\nper feature (column)", (3, -0.2), (3.4, -0.9),
                        fontsize=9, color=color)
            title = "BatchNorm: reduce over the batch (axis 0)"
        ax.set_title(title, fontsize=10, pad=12)
        ax.set_xlim(-0.2, d + 4.2)
        ax.set_ylim(-1.6, n + 0.2)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.text(d / 2, n + 0.05, f"D = {d} features", ha="center", va="bottom", fontsize=8)
        ax.text(-0.15, n / 2, f"N = {n} samples", ha="right", va="center", rotation=90, fontsize=8)
    fig.tight_layout()
    return fig


IMPL_STYLE = {"course": ("#2a6fb0", "o", "this course (v3, persistent)"),
              "torch": ("#c2571a", "s", "PyTorch native_layer_norm_backward"),
              "liger": ("#3b8f3b", "^", "Liger-Kernel layer_norm backward")}


def bandwidth_figure(results: dict):
    """One panel per dtype: each implementation's fraction of the measured copy bandwidth against N.

    `results` is a benchmark results file (normgrad.benchmark.read_results); solid lines are the
    larger M, dashed the smaller. A file marked "synthetic" says so across the figure.
    """
    dtypes = [d for d in ("bfloat16", "float16", "float32") if any(r["dtype"] == d for r in results["rows"])]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(4.2 * len(dtypes), 3.8), sharey=True, squeeze=False)
    rows_m = sorted({r["M"] for r in results["rows"]})
    columns = sorted({r["N"] for r in results["rows"]})
    for ax, dtype in zip(axes[0], dtypes):
        for impl, (color, marker, label) in IMPL_STYLE.items():
            for m in rows_m:
                points = sorted((r["N"], r["gb_per_s"] / results["copy_gb_per_s"]) for r in results["rows"]
                                if r["impl"] == impl and r["dtype"] == dtype and r["M"] == m)
                if points:
                    ax.plot(*zip(*points), color=color, marker=marker, markersize=3.5, lw=1.3,
                            ls="-" if m == rows_m[-1] else "--", label=f"{label}, M = {m}")
        ax.axhline(1.0, color=COLORS["grid"], lw=1, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_xticks(columns, [str(n) if n in (512, 1024, 2048, 4096, 8192, 16384) else "" for n in columns])
        ax.set_title(dtype, fontsize=10)
        ax.set_xlabel("N (columns)")
        ax.grid(alpha=0.25)
    axes[0][0].set_ylabel(f"fraction of copy bandwidth ({results['copy_gb_per_s']:.0f} GB/s)")
    axes[0][0].set_ylim(0, 1.1)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    title = f"LayerNorm backward, bytes moved 3 M N (element size) over time: {results['gpu']}, {results['date']}"
    if results.get("synthetic"):
        title = "SYNTHETIC TEST DATA, NOT A MEASUREMENT: " + title
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.16, 1, 0.95))
    return fig
