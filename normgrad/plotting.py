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


NORM_GROUPS = {  # name -> (colour, what one group holds, in words)
    "BatchNorm": ("#c2571a", "one channel,\nall of N, H, W"),
    "LayerNorm": ("#2a6fb0", "one sample,\nall of C, H, W"),
    "GroupNorm": ("#3b8f3b", "one sample, C / G channels,\nall of H, W"),
    "RMSNorm": ("#7a4ea3", "LayerNorm's cells,\nroot mean square only"),
}


def norm_groups_figure(n: int = 4, c: int = 6, hw: int = 5, groups: int = 3):
    """One group of each normalization, highlighted in an (N, C, H*W) block of activations.

    After Figure 2 of Wu and He, "Group Normalization" (ECCV 2018), with RMSNorm added: the cells in
    colour share one set of statistics. For an (N, D) input read D for C and 1 for H*W.
    """
    import numpy as np

    fig = plt.figure(figsize=(12, 3.6))
    sample, channel = 1, 2  # the group shown: sample 1 for the per-sample norms, channel 2 for BatchNorm
    per_group = c // groups
    for k, (name, (color, words)) in enumerate(NORM_GROUPS.items()):
        ax = fig.add_subplot(1, len(NORM_GROUPS), k + 1, projection="3d")
        group = np.zeros((hw, c, n), dtype=bool)  # axes drawn left to right: H*W, C, N (up)
        if name == "BatchNorm":
            group[:, channel, :] = True
        elif name == "GroupNorm":
            first = (channel // per_group) * per_group
            group[:, first:first + per_group, n - 1 - sample] = True
        else:
            group[:, :, n - 1 - sample] = True
        ax.voxels(~group, facecolors=(1, 1, 1, 0.08), edgecolor=(0.6, 0.6, 0.6, 0.35), linewidth=0.3)
        ax.voxels(group, facecolors=color, edgecolor="#333333", linewidth=0.3, alpha=0.9)
        ax.set_xlabel("H, W", fontsize=8, labelpad=-10)
        ax.set_ylabel("C", fontsize=8, labelpad=-10)
        ax.set_zlabel("N", fontsize=8, labelpad=-10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_box_aspect((hw, c, n))
        ax.view_init(elev=22, azim=-58)
        ax.set_title(f"{name}: {words}", fontsize=9, color=color)
    fig.subplots_adjust(left=0.0, right=1.0, top=0.86, bottom=0.02, wspace=0.02)
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


# ---- The second edition's figures: the graph of a group of three, the Jacobian's geometry, Triton's rungs ----

def group_graph_figure():
    """The graph of one group of three, fanned out: forward (grey) and backward (coloured) side by side.

    Left: x1, x2, x3 feed the mean and the variance, and each x_i its own x_hat_i.
    Right: the same graph backwards: the gradients of x_hat_1..3 are gathered (summed) into
    dL/dmu and dL/dsigma^2, which are then spread (broadcast) to every x_i.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.6))
    xs = {k: (0.0, 3.0 - 1.5 * k) for k in range(3)}
    hats = {k: (6.0, 3.0 - 1.5 * k) for k in range(3)}
    mu, var = (3.0, 2.6), (3.0, -1.1)
    for ax, backward in zip(axes, (False, True)):
        def arrow(a, b, color, lw=1.3, rad=0.0):
            if backward:
                a, b = b, a
            _edge(ax, a, b, rad=rad, color=color, lw=lw, shrink=15)

        for k in range(3):
            arrow(xs[k], hats[k], COLORS["direct"] if backward else "#8a8a8a", lw=2.0 if backward else 1.2)
            arrow(xs[k], mu, COLORS["mean"] if backward else "#8a8a8a", lw=2.0 if backward else 1.2, rad=0.05)
            arrow(xs[k], var, COLORS["var"] if backward else "#8a8a8a", lw=2.0 if backward else 1.2, rad=-0.05)
            arrow(mu, hats[k], COLORS["mean"] if backward else "#8a8a8a", lw=2.0 if backward else 1.2, rad=0.05)
            arrow(var, hats[k], COLORS["var"] if backward else "#8a8a8a", lw=2.0 if backward else 1.2, rad=-0.05)
        for k in range(3):
            _node(ax, xs[k], f"$x_{k + 1}$")
            _node(ax, hats[k], rf"$\hat{{x}}_{k + 1}$")
        _node(ax, mu, r"$\mu$")
        _node(ax, var, r"$\sigma^2$")
        if backward:
            ax.set_title("backward: gather into $\\mu$ and $\\sigma^2$ (a sum), spread to every $x_i$",
                         fontsize=10.5)
            ax.text(4.6, 3.55, r"$\sum_j g_j\,\partial\hat{x}_j/\partial\mu$", color=COLORS["mean"], fontsize=10,
                    ha="center")
            ax.text(4.6, -2.35, r"$\sum_j g_j\,\partial\hat{x}_j/\partial\sigma^2$", color=COLORS["var"],
                    fontsize=10, ha="center")
            ax.text(6.55, 1.5, r"$g_j = \partial L/\partial \hat{x}_j$", fontsize=10, ha="left", va="center")
        else:
            ax.set_title("forward: $\\mu$ and $\\sigma^2$ are broadcast to every $\\hat{x}_j$", fontsize=10.5)
        ax.set_xlim(-0.8, 8.2)
        ax.set_ylim(-2.8, 4.0)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.tight_layout()
    return fig


def jacobian_geometry_figure(x_hat, g, rstd: float):
    """D = 3: the Jacobian of x_hat is rstd times a projection that removes the directions of 1 and x_hat.

    Draws the unit vectors along 1 and x_hat, the one direction left (their cross product), an
    upstream gradient g and J^T g = J g, which lies on that remaining line.
    """
    import numpy as np

    one = np.ones(3) / np.sqrt(3)
    u = x_hat / np.linalg.norm(x_hat)
    n = np.cross(one, u)
    D = 3
    J = rstd * (np.eye(D) - np.ones((D, D)) / D - np.outer(x_hat, x_hat) / D)
    jg = J @ g
    fig = plt.figure(figsize=(6.4, 5.4))
    ax = fig.add_subplot(projection="3d")
    origin = np.zeros(3)
    for vec, color, label in ((one, COLORS["mean"], r"$\mathbf{1}/\sqrt{3}$: removed (the mean path)"),
                              (u, COLORS["var"], r"$\hat{x}/\|\hat{x}\|$: removed (the variance path)"),
                              (g / np.linalg.norm(g), "#555555", r"$g$ (scaled to length 1)"),
                              (jg / np.linalg.norm(g) / rstd, COLORS["direct"],
                               r"$J g / (\mathrm{rstd}\,\|g\|)$: what is left")):
        ax.quiver(*origin, *vec, color=color, lw=2.2, arrow_length_ratio=0.12, label=label)
    t = np.linspace(-1.2, 1.2, 2)
    ax.plot(*(np.outer(t, n).T), color=COLORS["direct"], ls="--", lw=1, label="the one direction J keeps")
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_zlim(-1, 1)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_zlabel("$x_3$")
    ax.set_title("D = 3: J = rstd times a projection onto the line\northogonal to 1 and to $\\hat{x}$",
                 fontsize=10.5)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.02), ncol=1, frameon=False)
    fig.subplots_adjust(bottom=0.25)
    return fig


def triton_rungs_figure(m: int = 12, programs: int = 3, groups: int = 4):
    """Rows to programs, for the three rungs of chapter 6: colour = the program (or group) a row goes to."""
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 4.4))
    cmap = plt.get_cmap("tab20")
    n = 8
    titles = ["rung 1: program $i$ takes row $i$;\na second kernel sums the columns",
              f"rung 2: program $i$ takes row $i$ and\nadds into partial row $i$ mod {groups} (lock)",
              f"rung 3: {programs} programs, program $p$ takes\nrows $p, p+P, \\ldots$; one partial row each"]
    for r, (ax, title) in enumerate(zip(axes, titles)):
        for i in range(m):
            owner = i if r == 0 else i % groups if r == 1 else i % programs
            ax.add_patch(Rectangle((0, m - 1 - i), n, 1, color=cmap(owner % 20), alpha=0.55, ec="white"))
            ax.text(-0.3, m - 0.5 - i, f"{i}", ha="right", va="center", fontsize=7)
            label = (f"program {i}" if r == 0 else f"program {i} -> group {owner}" if r == 1 else
                     f"program {owner}")
            ax.text(n / 2, m - 0.5 - i, label, ha="center", va="center", fontsize=7)
        parts = m if r == 0 else groups if r == 1 else programs
        if r == 0:  # the column-sum kernel: programs own blocks of columns and walk down every row
            for c in range(0, n, 2):
                ax.add_patch(Rectangle((c, -2.2), 2, 1, fill=False, ec="#444444", lw=1))
                ax.text(c + 1, -1.7, f"cols {c}-{c + 1}", ha="center", va="center", fontsize=6.5)
            ax.text(n / 2, -0.6, r"column kernel: reads x and dy again", ha="center", fontsize=7.5)
        else:
            for k in range(parts):
                ax.add_patch(Rectangle((0, -1.9 - 1.05 * k / parts * 3), n, 0.9 * 3 / parts,
                                       color=cmap(k % 20), alpha=0.9, ec="white"))
            ax.text(n / 2, -0.6, f"{parts} float32 partial rows, summed by a second kernel", ha="center",
                    fontsize=7.5)
        ax.set_title(title, fontsize=9.5)
        ax.set_xlim(-1.2, n + 0.2)
        ax.set_ylim(-5.2, m + 0.2)
        ax.axis("off")
    fig.tight_layout()
    return fig


def two_stage_reduction_figure(programs: int = 4, n: int = 10):
    """dgamma in two stages: P partial rows (one per program), then a kernel that sums each column of them."""
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    cmap = plt.get_cmap("tab20")
    for p in range(programs):
        ax.add_patch(Rectangle((0, programs - 1 - p), n, 0.9, color=cmap(p), alpha=0.7, ec="white"))
        ax.text(-0.3, programs - 0.55 - p, f"program {p}'s partial row", ha="right", va="center", fontsize=8)
    for c in range(n):
        _edge(ax, (c + 0.5, -0.05), (c + 0.5, -1.45), color="#555555", lw=0.9, shrink=2)
    ax.add_patch(Rectangle((0, -2.4), n, 0.9, color="#555555", alpha=0.35, ec="white"))
    ax.text(n / 2, -1.95, r"$d\gamma_j = \sum_p \mathrm{partial}_{p,j}$ (stage 2: one sum per column)",
            ha="center", va="center", fontsize=9)
    ax.text(n + 0.3, programs / 2, "stage 1: each program\nsums its own rows'\n$dy \\odot \\hat{x}$ in registers,\n"
            "then writes once", ha="left", va="center", fontsize=8.5)
    ax.set_xlim(-4.5, n + 4.5)
    ax.set_ylim(-2.7, programs + 0.2)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    return fig


def diagonal_only_figure(errors: dict):
    """RMS error of the diagonal-only gradient against the group size m; `errors` maps (m, mean of dL/dy) to
    (largest-entry error, RMS error). A 1/sqrt(m) line for comparison."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.6, 4.0))
    for shift, color, label in ((0.0, COLORS["direct"], "zero-mean dL/dy"), (1.0, COLORS["mean"], "dL/dy of mean 1")):
        ms = sorted(m for m, s in errors if s == shift)
        ax.loglog(ms, [errors[m, shift][1] for m in ms], "o-", color=color, label=label, ms=4)
    ms = np.array(sorted({m for m, _ in errors}), dtype=float)
    ax.loglog(ms, 1 / np.sqrt(ms), ":", color=COLORS["grid"], label=r"$1/\sqrt{m}$")
    ax.set_xlabel("group size m (BatchNorm: the batch)")
    ax.set_ylabel("RMS error of the diagonal-only gradient")
    ax.set_title("Keeping only the Jacobian's diagonal", fontsize=10.5)
    ax.legend(fontsize=9)
    ax.grid(True, which="major", color="#dddddd", lw=0.6)
    fig.tight_layout()
    return fig
