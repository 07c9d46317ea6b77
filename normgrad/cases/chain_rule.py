"""Assignment 02-chain-rule: the staged backward pass, and dL/dx split into the chain rule's three paths.

- `layernorm_backward_staged(dy, cache) -> (dx, dgamma, dbeta)`: statistics over axis 1;
- `batchnorm_backward_staged(dy, cache) -> (dx, dgamma, dbeta)`: statistics over axis 0;
- `layernorm_grad_paths(dy, cache) -> (direct, via_mean, via_var)`, each (N, D), adding up to dx.

`dy` and `x` have shape (N, D); the cache is exercise 01's dict (x, mean, rstd,
x_hat, gamma, eps), built here from the float64 oracle and rounded to the dtype
under test, never by the student's own forward pass. The three paths are judged
against autograd run on three separate copies of x (`reference.grad_paths`).

Tolerances: dx and each path are sums of terms as large as the direct path,
rstd * dy * gamma, and where those terms cancel (a group of two values, whose
dx is O(eps / var) of them, or a group of one, whose dx is zero) rounding is
still relative to the terms. So that scale is the floor of closeness; dgamma
and dbeta, sums over the batch of dy * x_hat and of dy, have the column sums of
|dy| as theirs (x_hat's natural scale is 1). The relative tolerance follows
from the dtype and the input's conditioning (`normgrad.tolerances`). It is
tight enough in float64 to tell var + eps from var in a group of variance 1.
"""

from __future__ import annotations

from functools import partial
from itertools import permutations

import numpy as np

from .. import inputs, reference, tolerances
from . import Case, Mistake, Trial
from .judging import DIRECT_PATH, arrays_problems

PAGE = "02-chain-rule.html"
NORMS = {"layernorm_backward_staged": "layer", "batchnorm_backward_staged": "batch", "layernorm_grad_paths": "layer"}
AXES = {"layer": 1, "batch": 0}  # the axis each normalization reduces over, for x of shape (N, D)
COLUMN_SUM = "the largest sum of |dy| over the batch"  # dgamma's and dbeta's scale, named in their messages


def make_trial(function: str, shape, kind: str = "normal", dtype=np.float64, eps: float = 1e-5,
               offset: float = 1e3):
    """A trial maker for one of the three functions: x, gamma and dy drawn, rounded to `dtype`, cache from the oracle."""
    norm = NORMS[function]
    axis = AXES[norm]

    def make(rng: np.random.Generator, device: str) -> Trial:
        x = inputs.sample(rng, shape, norm, kind, offset).astype(dtype)
        gamma = inputs.affine(rng, shape[1])[0].astype(dtype)
        dy = inputs.upstream(rng, shape).astype(dtype)
        cache = reference.forward_cache(x, gamma, eps, norm)
        direct_scale = float(np.max(np.abs(np.expand_dims(cache["rstd"], axis) * dy * gamma), initial=0.0))
        if function == "layernorm_grad_paths":
            expected = reference.grad_paths(x, gamma, dy, eps, norm)
            names, floors, floor_names = ("direct", "via_mean", "via_var"), (direct_scale,) * 3, (DIRECT_PATH,) * 3
        else:
            oracle = reference.layernorm if norm == "layer" else reference.batchnorm
            ref = oracle(x, gamma, np.zeros_like(gamma), eps, dy=dy)
            expected = (ref.dx, ref.dgamma, ref.dbeta)
            names = ("dx", "dgamma", "dbeta")
            # dgamma and dbeta are sums over the batch of dy times x_hat (whose natural scale is 1) and of dy
            column_sum = float(np.max(np.abs(dy.astype(np.float64)).sum(axis=0), initial=0.0))
            floors, floor_names = (direct_scale, column_sum, column_sum), (DIRECT_PATH, COLUMN_SUM, COLUMN_SUM)
        kappa = tolerances.conditioning(x, (axis,), eps)
        judge = partial(arrays_problems, names=names, dtypes=(np.dtype(dtype),) * 3,
                        rtol=tolerances.rtol(dtype, kappa), floors=floors, floor_names=floor_names)
        return Trial(args=(dy, cache), expected=expected, judge=judge, arg_names=("dy", "cache"))

    return make


def _cases(function: str) -> list[Case]:
    c = partial(Case, function)
    m = partial(make_trial, function)
    return [
        c("small", 1, False, "a 5 x 6 input", m((5, 6))),
        c("small-variance", 1, False, "a 3 x 5 input whose variance is below eps", m((3, 5), "tiny-variance")),
        c("odd-shape", 1, True, "a 5 x 11 input", m((5, 11))),
        c("tall", 1, True, "a 33 x 7 input", m((33, 7))),
        c("wide", 1, True, "a 3 x 129 input", m((3, 129))),
        c("one-sample", 1, True, "a single sample (N = 1)", m((1, 9))),
        c("two-samples", 1, True, "two samples (N = 2)", m((2, 9))),
        c("one-feature", 1, True, "a single feature (D = 1)", m((7, 1))),
        c("two-features", 1, True, "two features (D = 2)", m((7, 2))),
        c("tiny-variance", 2, True, "groups whose variance is far below eps", m((6, 17), "tiny-variance")),
        c("large-offset", 1, True, "groups with a mean of 1e3 to 2e3 and unit spread", m((9, 10), "large-offset")),
        c("constant", 1, True, "groups whose values are all equal (zero variance)", m((5, 7), "constant")),
        c("eps", 1, True, "a cache made with eps = 1e-2", m((7, 9), "tiny-variance", eps=1e-2)),
        c("float32", 1, True, "float32 inputs: results in float32", m((10, 13), dtype=np.float32)),
    ]


CASES = [case for function in NORMS for case in _cases(function)]


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

def staged(dy, cache, axis: int, slip: str | None = None) -> dict[str, np.ndarray]:
    """The staged backward over `axis`, optionally with one named slip: direct, via_mean, via_var, dgamma, dbeta.

    The paths are those of the staged code (dx_hat, dvar, dmean, dx): direct =
    dx_hat * rstd, via_mean = dmean / m, via_var = dvar * 2 (x - mean) / m.
    """
    x, gamma = cache["x"], cache["gamma"]
    mean, rstd = (np.expand_dims(cache[key], axis) for key in ("mean", "rstd"))
    over = 1 - axis if slip == "wrong-axis" else axis  # the axis dx's sums run over
    m = x.shape[over]
    if slip == "diagonal-only":  # every sum over j keeps only its j = i term
        def total(a):
            return a
    else:
        def total(a):
            return a.sum(axis=over, keepdims=True)
    centered = x - mean
    x_hat = cache["x_hat"]
    if slip == "bessel-forward":  # makemore's layer: its cache holds the unbiased variance's rstd
        rstd = 1 / np.sqrt((centered**2).sum(axis=axis, keepdims=True) / (x.shape[axis] - 1) + cache["eps"])
        x_hat = centered * rstd
    dx_hat = dy if slip == "gamma-forgotten" else dy * gamma
    if slip == "rstd-squared":
        cube = rstd**2
    elif slip == "var-without-eps":  # rstd^3 = rstd / (var + eps), with var in place of var + eps
        cube = rstd / (centered**2).mean(axis=axis, keepdims=True)
    else:
        cube = rstd**3
    dvar = (0.5 if slip == "sign-error" else -0.5) * total(dx_hat * centered) * cube
    dmean = -total(dx_hat) * rstd
    via_mean = np.zeros_like(x) if slip == "no-mean-path" else np.broadcast_to(dmean / m, x.shape).copy()
    factor = 1.0 if slip == "missing-factor-2" else 2.0
    count = m - 1 if slip in ("unbiased-variance", "bessel-forward") else m
    via_var = np.zeros_like(x) if slip == "no-variance-path" else dvar * factor * centered / count
    dgamma = (dy * (x if slip == "dgamma-from-x" else x_hat)).sum(axis=0)
    dbeta = dy.mean(axis=0) if slip == "dbeta-as-mean" else dy.sum(axis=0)
    if slip == "dgamma-dbeta-swapped":
        dgamma, dbeta = dbeta, dgamma
    return {"direct": dx_hat * rstd, "via_mean": via_mean, "via_var": via_var, "dgamma": dgamma, "dbeta": dbeta}


def _as_returned(function: str, parts: dict) -> tuple:
    if function == "layernorm_grad_paths":
        return parts["direct"], parts["via_mean"], parts["via_var"]
    return parts["direct"] + parts["via_mean"] + parts["via_var"], parts["dgamma"], parts["dbeta"]


SLIPS = {  # name -> (what the answer matches, the anchor on chapter 2's page)
    "no-mean-path": (
        "dL/dx without the path through the mean (every x_j moves the mean, which moves every x_hat_i)",
        "slip-no-mean-path"),
    "no-variance-path": (
        "dL/dx without the path through the variance", "slip-no-variance-path"),
    "diagonal-only": (
        "the diagonal-only gradient: only d x_hat_i / d x_i is kept and the sums over j are dropped "
        "(the 'simplified' formula of the source material)", "slip-diagonal-only"),
    "unbiased-variance": (
        "d(sigma^2)/dx of the unbiased variance, 2 (x - mu) / (m - 1); the layer's variance divides by m",
        "slip-unbiased-variance"),
    "bessel-forward": (
        "the layer of makemore's convention, whose variance is unbiased (divided by m - 1, Bessel's "
        "correction) in the forward pass and so in rstd, x_hat and the variance path; this layer's variance "
        "divides by m, and the cache's rstd is that one", "slip-unbiased-variance"),
    "var-without-eps": (
        "the variance path divided by var instead of var + eps (as in the snippet of the source material)",
        "slip-var-without-eps"),
    "gamma-forgotten": (
        "gamma forgotten: dL/dx_hat is dL/dy * gamma", "slip-gamma-forgotten"),
    "sign-error": (
        "the variance path with the wrong sign: d x_hat / d sigma^2 = -(x - mu) (sigma^2 + eps)^(-3/2) / 2 "
        "is negative", "slip-sign-error"),
    "missing-factor-2": (
        "d(sigma^2)/dx without its factor 2: it is 2 (x - mu) / m", "slip-missing-factor-2"),
    "rstd-squared": (
        "rstd**2 in place of rstd**3 in dvar: d x_hat / d sigma^2 carries (sigma^2 + eps)^(-3/2)",
        "slip-rstd-squared"),
    "wrong-axis": (
        "dx's sums taken over the other axis: layer norm sums over the features (axis 1), "
        "batch norm over the batch (axis 0)", "slip-wrong-axis"),
    "dgamma-from-x": (
        "dgamma = sum(dy * x): it is sum(dy * x_hat), with the normalized input", "slip-dgamma-from-x"),
    "dbeta-as-mean": (
        "dbeta = mean(dy) over the batch: it is the sum, sum(dy)", "slip-dbeta-as-mean"),
    "dgamma-dbeta-swapped": (
        "dgamma and dbeta, each right, returned in each other's place: the function returns (dx, dgamma, dbeta), "
        "dgamma = sum(dy * x_hat) and dbeta = sum(dy)", "slip-parameters-swapped"),
}

PARAMETER_SLIPS = ("dgamma-from-x", "dbeta-as-mean", "dgamma-dbeta-swapped")  # no bearing on the three paths


def _mistakes(function: str) -> list[Mistake]:
    axis = AXES[NORMS[function]]
    return [Mistake(function, name, message, f"{PAGE}#{anchor}",
                    lambda dy, cache, _slip=name: _as_returned(function, staged(dy, cache, axis, _slip)))
            for name, (message, anchor) in SLIPS.items()
            if not (function == "layernorm_grad_paths" and name in PARAMETER_SLIPS)]


PATHS = ("direct", "via_mean", "via_var")


def _paths_reordered(order: tuple[str, ...]) -> Mistake:
    """The three right paths returned in another order (the staged code finds dvar before dmean)."""
    return Mistake("layernorm_grad_paths", "paths-as-" + "-".join(order),
                   f"the three paths, each right, returned in the order ({', '.join(order)}): the function "
                   f"returns ({', '.join(PATHS)})", f"{PAGE}#slip-paths-order",
                   lambda dy, cache: tuple(staged(dy, cache, 1)[path] for path in order))


MISTAKES = [mistake for function in NORMS for mistake in _mistakes(function)] + \
    [_paths_reordered(order) for order in permutations(PATHS) if order != PATHS]

from .second_edition import extend  # noqa: E402  (the second edition's GroupNorm, RMSNorm and hide_path tasks)
CASES, MISTAKES = extend("02-chain-rule", CASES, MISTAKES)
