"""The figures the chapters draw, in one style.

Each function returns a matplotlib Figure; the chapter that calls it shows it.
"""

from __future__ import annotations

import sys

import matplotlib

# The book is built without a display. Inside a Jupyter kernel (a chapter at build time, a
# notebook) keep the kernel's inline backend, which turns each figure into an image on the
# page; forcing Agg there would leave only the figure's text repr. Elsewhere draw off-screen.
if "ipykernel" not in sys.modules:
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


def backward_timings_figure(elements, seconds: dict, title: str = "Batch-norm backward on this machine"):
    """Nanoseconds per element of each form of the backward pass, against the input's size (log-log).

    `elements` lists the inputs' sizes; `seconds` maps a form's name to its median times, one per size.
    """
    fig, ax = plt.subplots(figsize=(7, 3.8))
    palette = ["#c2571a", "#2a6fb0", "#3b8f3b", "#7a4ea3", "#9a9a9a"]
    for (name, times), color in zip(seconds.items(), palette):
        per_element = [1e9 * t / n for t, n in zip(times, elements)]
        ax.plot(elements, per_element, marker="o", color=color, label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("elements in x (N * C * H * W), float32")
    ax.set_ylabel("nanoseconds per element")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", color=COLORS["grid"], alpha=0.3, lw=0.6)
    ax.legend(fontsize=9, frameon=False)
    fig.tight_layout()
    return fig
