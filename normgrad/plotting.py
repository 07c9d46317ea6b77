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


def _node(ax, xy, label, color="#333333"):
    ax.annotate(label, xy, ha="center", va="center", fontsize=15, zorder=3,
                bbox=dict(boxstyle="circle,pad=0.35", fc="white", ec=color, lw=1.6))


def _edge(ax, start, end, rad=0.0, color="#8a8a8a", lw=1.2, style="-|>", ls="-", shrink=17):
    ax.annotate("", end, start, zorder=1,
                arrowprops=dict(arrowstyle=style, color=color, lw=lw, ls=ls, shrinkA=shrink, shrinkB=shrink,
                                connectionstyle=f"arc3,rad={rad}"))


def chain_rule_graph(contributions: dict[str, float] | None = None, total: float | None = None,
                     autograd: float | None = None, where: str = ""):
    """The forward graph of x_hat with the derivative on each edge, and dL/dx flowing back along three paths.

    Forward edges are grey, each labelled with its derivative; the backward
    paths are coloured: straight through x_hat (blue), through the mean
    (orange), through the variance (green). `contributions` maps 'direct',
    'mean' and 'var' to one entry's share of dL/dx, written where each path
    arrives at x; `total` is their sum and `autograd` float64 autograd's value.
    """
    import math

    pos = {"x": (0.0, 0.0), "mu": (4.0, 2.4), "var": (4.0, -2.4), "xhat": (8.0, 0.0), "y": (9.8, 0.0),
           "L": (11.4, 0.0)}
    centre = (4.0, 0.0)
    fig, ax = plt.subplots(figsize=(10.5, 6.2))
    grey = "#8a8a8a"

    def label(a, b, text, side=1.0, offset=0.3, t=0.5):
        """Write `text` along the edge a -> b, on the side away from (side=1) or toward (-1) the centre."""
        (x0, y0), (x1, y1) = pos[a], pos[b]
        mx, my = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        nx, ny = -(y1 - y0), x1 - x0
        norm = math.hypot(nx, ny)
        nx, ny = nx / norm, ny / norm
        if (mx + nx - centre[0]) ** 2 + (my + ny - centre[1]) ** 2 < (mx - centre[0]) ** 2 + (my - centre[1]) ** 2:
            nx, ny = -nx, -ny  # (nx, ny) now points away from the centre
        angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
        angle = angle - 180 if angle > 90 else angle + 180 if angle < -90 else angle
        ax.text(mx + side * offset * nx, my + side * offset * ny, text, rotation=angle, rotation_mode="anchor",
                ha="center", va="center", fontsize=9.5, color="#444444")

    for a, b in [("x", "xhat"), ("x", "mu"), ("x", "var"), ("mu", "xhat"), ("var", "xhat"), ("xhat", "y"),
                 ("y", "L")]:
        _edge(ax, pos[a], pos[b], color=grey)
    _edge(ax, pos["mu"], pos["var"], color=grey, ls=(0, (3, 3)))  # sigma^2 = mean((x - mu)^2) uses mu too
    label("x", "xhat", r"$\partial \hat{x}_j / \partial x_i = \mathrm{rstd}\;\delta_{ij}$", side=-1, t=0.74)
    label("x", "mu", r"$\partial \mu / \partial x_i = 1/D$")
    label("x", "var", r"$\partial \sigma^2 / \partial x_i = 2(x_i - \mu)/D$")
    label("mu", "xhat", r"$\partial \hat{x}_j / \partial \mu = -\mathrm{rstd}$")
    label("var", "xhat", r"$\partial \hat{x}_j / \partial \sigma^2 = -\frac{1}{2}(x_j - \mu)\,\mathrm{rstd}^3$")
    ax.text(4.18, -1.0, r"$\partial \sigma^2 / \partial \mu = -\frac{2}{D}\sum_k (x_k - \mu) = 0$", rotation=90,
            ha="left", va="center", fontsize=8.5, color="#777777")
    label("xhat", "y", r"$\gamma_j$")
    label("y", "L", r"$\partial L / \partial y$")
    # dL/dx flowing back, one coloured path each, outside the forward edges
    legs = {"direct": [("xhat", "x", 0.1)], "mean": [("xhat", "mu", 0.32), ("mu", "x", 0.32)],
            "var": [("xhat", "var", -0.32), ("var", "x", -0.32)]}
    for name, path in legs.items():
        for a, b, rad in path:
            _edge(ax, pos[a], pos[b], rad=rad, color=COLORS[name], lw=2.4, shrink=19)
    names = {"direct": r"direct, through $\hat{x}$", "mean": r"through the mean $\mu$",
             "var": r"through the variance $\sigma^2$"}
    spots = {"direct": (2.4, 0.72), "mean": (1.2, 2.9), "var": (1.2, -2.9)}
    for name, (tx, ty) in spots.items():
        text = names[name] + (f": {contributions[name]:+.4f}" if contributions is not None else "")
        ax.text(tx, ty, text, ha="center", va="center", fontsize=10.5, color=COLORS[name], fontweight="bold")
    for key, text in [("x", r"$x_i$"), ("mu", r"$\mu$"), ("var", r"$\sigma^2$"), ("xhat", r"$\hat{x}_j$"),
                      ("y", r"$y_j$"), ("L", r"$L$")]:
        _node(ax, pos[key], text)
    if total is not None:
        lines = f"{'sum of the three paths:':<25}{total:+.4f}"
        if autograd is not None:
            lines += f"\n{'float64 autograd:':<25}{autograd:+.4f}"
        ax.text(7.6, -2.6, lines, ha="left", va="center", fontsize=9.5, color="#222222", family="monospace")
    ax.set_title("dL/dx reaches x along three paths" + (f" ({where})" if where else ""), fontsize=11)
    ax.set_xlim(-0.8, 12.0)
    ax.set_ylim(-3.4, 3.4)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    return fig


def jacobian_parts_figure(parts: dict):
    """Heatmaps of matrices side by side (the parts of a Jacobian and their sum), on one shared colour scale."""
    import numpy as np

    fig, axes = plt.subplots(1, len(parts), figsize=(3.1 * len(parts) + 0.8, 3.4))
    limit = max(float(np.max(np.abs(m))) for m in parts.values())
    for ax, (title, m) in zip(np.atleast_1d(axes), parts.items()):
        image = ax.imshow(m, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("$j$", fontsize=9)
        ax.set_ylabel("$i$", fontsize=9)
        ax.tick_params(labelsize=7)
    fig.colorbar(image, ax=axes, shrink=0.85, label=r"$\partial \hat{x}_i / \partial x_j$")
    return fig


def finite_difference_figure(steps, errors: dict, lines: dict | None = None):
    """Relative error of central differences against the step h, one curve per dtype; `lines` marks sizes to compare."""
    fig, ax = plt.subplots(figsize=(6.6, 4.0))
    for (name, errs), color in zip(errors.items(), ("#2a6fb0", "#c2571a", "#3b8f3b")):
        ax.loglog(steps, errs, "o-", color=color, label=name, ms=4)
    for (label, value), style in zip((lines or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, color="#555555", ls=style, lw=1)
        ax.text(steps[0], value * 1.3, label, fontsize=8.5, color="#333333", va="bottom")
    ax.set_xlabel("step $h$")
    ax.set_ylabel("relative error of dL/dx")
    ax.invert_xaxis()
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="lower left")
    fig.tight_layout()
    return fig


def error_curves_figure(xs, curves: dict, lines: dict | None = None, xlabel: str = "", ylabel: str = "",
                        markers: dict | None = None):
    """Log-log curves of an error against a size (chapters 4 and 4b): `curves` maps a label to its
    errors at `xs`, `lines` marks tolerances as horizontal lines, `markers` labels single points."""
    fig, ax = plt.subplots(figsize=(6.8, 4.0))
    for (name, errs), color in zip(curves.items(), ("#2a6fb0", "#c2571a", "#3b8f3b", "#7a4fb0")):
        ax.loglog(xs, errs, "o-", color=color, label=name, ms=4)
    for (label, value), style in zip((lines or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, color="#555555", ls=style, lw=1)
        ax.text(xs[-1], value * 1.3, label, fontsize=8.5, color="#333333", va="bottom", ha="right")
    for label, (x, y) in (markers or {}).items():
        ax.annotate(label, (x, y), (8, -14), textcoords="offset points", fontsize=8.5, color="#333333",
                    arrowprops=dict(arrowstyle="-", color="#777777", lw=0.8))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9, loc="best")
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
