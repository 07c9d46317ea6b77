"""Assignment 03-variance-derivative: d(sigma^2)/dx, and the full Jacobian of x_hat for one row.

- `variance_grad(x)`: x of shape (N, D); d(sigma_i^2)/d(x_ij) for every
  row's biased variance, shape (N, D);
- `layernorm_jacobian(x, eps=1e-5) -> J`: one row x of shape (D,); the (D, D)
  matrix J[i, j] = d x_hat_i / d x_j.

Both are judged against float64 autograd (`reference.variance_grad`,
`reference.layernorm_jacobian`). Tolerances: 2 (x_ij - mu_i) / D is a difference
of two terms of size up to (2 / D) max|x|, and rounding is relative to them, so
that is the floor of closeness (it matters for rows whose spread is tiny beside
their mean, and for constant rows, whose derivative is zero). The Jacobian's
entries are rstd times terms of size at most 1, so rstd is its floor, and the
relative tolerance carries the row's conditioning, as for x_hat itself.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .. import inputs, reference, tolerances
from . import Case, Mistake, Trial
from .judging import value_problems


def variance_trial(shape, kind: str = "normal", dtype=np.float64, offset: float = 1e3):
    def make(rng: np.random.Generator, device: str) -> Trial:
        x = inputs.sample(rng, shape, "layer", kind, offset).astype(dtype)
        floor = 2.0 / shape[1] * float(np.max(np.abs(x.astype(np.float64)), initial=0.0))
        judge = partial(value_problems, name="d(sigma^2)/dx", dtype=np.dtype(dtype), rtol=tolerances.rtol(dtype),
                        floor=floor, floor_name="(2 / D) max|x|")
        return Trial(args=(x,), expected=reference.variance_grad(x, axis=1), judge=judge, arg_names=("x",))

    return make


def jacobian_trial(d: int, kind: str = "normal", dtype=np.float64, eps: float | None = None, offset: float = 1e3):
    def make(rng: np.random.Generator, device: str) -> Trial:
        x = inputs.sample(rng, (d,), "layer", kind, offset).astype(dtype)
        used_eps = 1e-5 if eps is None else eps
        rstd = 1.0 / np.sqrt(x.astype(np.float64).var() + used_eps)
        kappa = tolerances.conditioning(x, (0,), used_eps)
        judge = partial(value_problems, name="J", dtype=np.dtype(dtype), rtol=tolerances.rtol(dtype, kappa), floor=rstd,
                        floor_name="rstd")
        return Trial(args=(x,), kwargs={} if eps is None else {"eps": eps},
                     expected=reference.layernorm_jacobian(x, used_eps), judge=judge, arg_names=("x",))

    return make


_v = partial(Case, "variance_grad")
_j = partial(Case, "layernorm_jacobian")

CASES = [
    _v("small", 1, False, "a 5 x 6 input", variance_trial((5, 6))),
    _v("offset", 1, False, "a 3 x 5 input whose rows have means of 1e3 to 2e3", variance_trial((3, 5), "large-offset")),
    _v("odd-shape", 1, True, "a 5 x 11 input", variance_trial((5, 11))),
    _v("wide", 1, True, "a 3 x 129 input", variance_trial((3, 129))),
    _v("one-sample", 1, True, "a single row (N = 1)", variance_trial((1, 9))),
    _v("one-feature", 1, True, "rows of one value (D = 1)", variance_trial((7, 1))),
    _v("two-features", 1, True, "rows of two values (D = 2)", variance_trial((7, 2))),
    _v("tiny-variance", 1, True, "rows whose spread is 1e-4 to 1e-3", variance_trial((6, 17), "tiny-variance")),
    _v("large-offset", 2, True, "rows with a mean of 1e3 to 2e3 and unit spread", variance_trial((9, 10), "large-offset")),
    _v("constant", 1, True, "rows whose values are all equal", variance_trial((5, 7), "constant")),
    _v("float32", 1, True, "a float32 input: the result in float32", variance_trial((10, 13), dtype=np.float32)),
    _j("small", 1, False, "a row of 6 values", jacobian_trial(6)),
    _j("small-variance", 1, False, "a row of 5 values whose variance is below eps", jacobian_trial(5, "tiny-variance")),
    _j("odd-length", 1, True, "a row of 11 values", jacobian_trial(11)),
    _j("long", 1, True, "a row of 129 values", jacobian_trial(129)),
    _j("one-value", 1, True, "a row of one value (D = 1)", jacobian_trial(1)),
    _j("two-values", 1, True, "a row of two values (D = 2)", jacobian_trial(2)),
    _j("tiny-variance", 2, True, "a row whose variance is far below eps", jacobian_trial(17, "tiny-variance")),
    _j("large-offset", 1, True, "a row with a mean of 1e3 to 2e3 and unit spread", jacobian_trial(10, "large-offset")),
    _j("constant", 1, True, "a row whose values are all equal", jacobian_trial(7, "constant")),
    _j("eps", 1, True, "eps = 1e-2 passed as a keyword", jacobian_trial(9, "tiny-variance", eps=1e-2)),
    _j("float32", 1, True, "a float32 row: J in float32", jacobian_trial(13, dtype=np.float32)),
]


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

CHAIN_RULE = "02-chain-rule.html"
PAGE = "03-variance-derivative.html"


def _variance_grad(x, slip: str | None = None) -> np.ndarray:
    axis = 0 if slip == "wrong-axis" else 1
    m = x.shape[axis]
    centered = x - x.mean(axis=axis, keepdims=True)
    if slip == "mean-held-constant":  # d/dx_j of (1/D) sum x_k^2 - mu^2, with mu taken as a constant
        return 2.0 * x / m
    factor = {"sign-error": -2.0, "missing-factor-2": 1.0}.get(slip, 2.0)
    return factor * centered / (m - 1 if slip == "unbiased-variance" else m)


VARIANCE_SLIPS = {
    "mean-held-constant": (
        "2 x / D, the derivative of the expanded square (1/D) sum x_k^2 - mu^2 with the mean held constant; "
        "the mean depends on x", f"{PAGE}#mean-held-constant"),
    "unbiased-variance": (
        "2 (x - mu) / (D - 1), the derivative of the unbiased variance; the layer's variance divides by D",
        f"{CHAIN_RULE}#slip-unbiased-variance"),
    "missing-factor-2": (
        "(x - mu) / D: the derivative of the square brings a factor 2", f"{CHAIN_RULE}#slip-missing-factor-2"),
    "sign-error": (
        "-2 (x - mu) / D: the sign is wrong (moving a value away from the mean increases the variance)",
        f"{CHAIN_RULE}#slip-sign-error"),
    "wrong-axis": (
        "the variance of each column (axis 0); each row's variance is over its D features (axis 1)",
        f"{CHAIN_RULE}#slip-wrong-axis"),
}


def _jacobian(x, eps: float = 1e-5, slip: str | None = None) -> np.ndarray:
    d = x.shape[0]
    centered = x - x.mean()
    var = centered @ centered / (d - 1 if slip == "unbiased-variance" else d)
    rstd = 1.0 / (np.sqrt(var) + eps) if slip == "eps-outside-sqrt" else 1.0 / np.sqrt(var + eps)
    direct = rstd * np.eye(d)
    through_mean = np.full((d, d), -rstd / d)
    # d x_hat_i / d sigma^2 times d sigma^2 / d x_j: -(x_i - mu) rstd^3 / 2 times 2 (x_j - mu) / D
    if slip == "rstd-squared":
        cube = rstd**2
    elif slip == "var-without-eps":
        cube = rstd / var
    else:
        cube = rstd**3
    factor = {"sign-error": -1.0, "missing-factor-2": 0.5}.get(slip, 1.0)
    count = d - 1 if slip == "unbiased-variance" else d
    through_var = -factor * cube * np.outer(centered, centered) / count
    if slip == "no-mean-path":
        through_mean = 0 * through_mean
    if slip == "no-variance-path":
        through_var = 0 * through_var
    J = direct + through_mean + through_var
    return np.diag(np.diag(J)) if slip == "diagonal-only" else J


JACOBIAN_SLIPS = {
    "no-mean-path": ("J without the part through the mean, -rstd / D in every entry", "slip-no-mean-path"),
    "no-variance-path": ("J without the part through the variance, -rstd x_hat_i x_hat_j / D",
                         "slip-no-variance-path"),
    "diagonal-only": ("only J's diagonal: every x_j moves every x_hat_i, through the mean and the variance",
                      "slip-diagonal-only"),
    "unbiased-variance": ("the Jacobian of a layer norm with the unbiased variance (divide by D - 1)",
                          "slip-unbiased-variance"),
    "var-without-eps": ("the variance part divided by var instead of var + eps", "slip-var-without-eps"),
    "sign-error": ("the variance part with the wrong sign", "slip-sign-error"),
    "missing-factor-2": ("the variance part without the factor 2 of d(sigma^2)/dx", "slip-missing-factor-2"),
    "rstd-squared": ("rstd**2 in place of rstd**3 in the variance part", "slip-rstd-squared"),
}

MISTAKES = [
    *(Mistake("variance_grad", name, message, section, lambda x, _slip=name: _variance_grad(x, _slip))
      for name, (message, section) in VARIANCE_SLIPS.items()),
    *(Mistake("layernorm_jacobian", name, message, f"{CHAIN_RULE}#{anchor}",
              lambda x, eps=1e-5, _slip=name: _jacobian(x, eps, _slip))
      for name, (message, anchor) in JACOBIAN_SLIPS.items()),
    Mistake("layernorm_jacobian", "eps-outside-sqrt",
            "rstd = 1 / (sqrt(var) + eps) in the right formula: eps belongs inside the square root",
            "01-forward.html#where-eps-sits", lambda x, eps=1e-5: _jacobian(x, eps, "eps-outside-sqrt")),
]

from .second_edition import extend  # noqa: E402  (the second edition's GroupNorm, RMSNorm and hide_path tasks)
CASES, MISTAKES = extend("03-variance-derivative", CASES, MISTAKES)
