"""RMSNorm: the forward pass (assignment 01) and the Jacobian of one row (assignment 03).

- `rmsnorm_forward(x, gamma, eps=1e-6) -> (y, cache)`: x of shape (N, D), gamma of shape (D,);
  rstd = 1 / sqrt(mean(x**2) + eps) over each row, y = gamma * x * rstd; no mean is subtracted and
  there is no beta; cache = {x, rstd (N,), gamma, eps};
- `rmsnorm_jacobian(x, eps=1e-6) -> J`: one row x of shape (D,); J[i, j] = d(x_i rstd) / d x_j.

Judged against torch's `rms_norm` and float64 autograd (`reference.rmsnorm`,
`reference.rmsnorm_jacobian`). Tolerances: the root mean square is a sum of squares, with no
cancellation, so the rows' conditioning does not enter: the dtype's rtol with y's natural scale (1)
as its floor, and rstd as the Jacobian's (its entries are rstd times terms of size at most 1).
A *tiny* row here is one whose mean square, not its variance, is below eps: that is where eps
matters for RMSNorm.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .. import inputs, reference, tolerances
from . import Case, Mistake, Trial
from .judging import value_problems
from .second_edition import cache_problems

FORWARD_PAGE = "01-forward.html"
CHAIN_RULE = "02-chain-rule.html"
EPS = 1e-6  # the default eps of rmsnorm_forward and rmsnorm_jacobian (COURSE_API.md)


def sample(rng: np.random.Generator, shape, kind: str = "normal", offset: float = 1e3) -> np.ndarray:
    """Rows of `shape` (last axis) as `inputs.sample` draws them, except 'tiny-variance': rows with a
    mean as large as their spread, scaled to a mean square of exactly 1e-9 to 1e-7, far below eps = 1e-6."""
    if kind != "tiny-variance":
        return inputs.sample(rng, shape, "layer", kind, offset)
    stat = tuple(shape[:-1]) + (1,)
    rows = rng.normal(0.0, 1.0, stat) + rng.standard_normal(tuple(shape))
    return rows * (10.0 ** rng.uniform(-4.5, -3.5, stat) / np.sqrt(np.mean(rows**2, axis=-1, keepdims=True)))


def forward_trial(shape, kind: str = "normal", dtype=np.float64, eps: float | None = None, offset: float = 1e3):
    def make(rng: np.random.Generator, device: str) -> Trial:
        x = sample(rng, shape, kind, offset).astype(dtype)
        gamma = inputs.affine(rng, shape[1])[0].astype(dtype)
        used_eps = EPS if eps is None else eps
        ref = reference.rmsnorm(x, gamma, used_eps)
        expected = (ref.y, {"x": x.astype(np.float64), "rstd": ref.rstd, "gamma": gamma.astype(np.float64),
                            "eps": used_eps})
        judge = partial(cache_problems, dtype=np.dtype(dtype), rtol=tolerances.rtol(dtype),
                        floors={"y": 1.0, "rstd": 0.0})
        return Trial(args=(x, gamma), kwargs={} if eps is None else {"eps": eps}, expected=expected, judge=judge,
                     arg_names=("x", "gamma"))

    return make


def jacobian_trial(d: int, kind: str = "normal", dtype=np.float64, eps: float | None = None, offset: float = 1e3):
    def make(rng: np.random.Generator, device: str) -> Trial:
        x = sample(rng, (d,), kind, offset).astype(dtype)
        used_eps = EPS if eps is None else eps
        rstd = 1.0 / np.sqrt(np.mean(x.astype(np.float64) ** 2) + used_eps)
        judge = partial(value_problems, name="J", dtype=np.dtype(dtype), rtol=tolerances.rtol(dtype), floor=rstd,
                        floor_name="rstd")
        return Trial(args=(x,), kwargs={} if eps is None else {"eps": eps},
                     expected=reference.rmsnorm_jacobian(x, used_eps), judge=judge, arg_names=("x",))

    return make


_f = partial(Case, "rmsnorm_forward")
_j = partial(Case, "rmsnorm_jacobian")

CASES = [  # rmsnorm_forward: 12 points; rmsnorm_jacobian: 24
    _f("small", 1, False, "a 4 x 6 input", forward_trial((4, 6))),
    _f("small-rms", 1, False, "a 3 x 5 input whose mean square is far below eps", forward_trial((3, 5), "tiny-variance")),
    _f("odd-shape", 1, True, "a 5 x 11 input", forward_trial((5, 11))),
    _f("tall", 1, True, "a 33 x 7 input", forward_trial((33, 7))),
    _f("wide", 1, True, "a 3 x 129 input", forward_trial((3, 129))),
    _f("one-sample", 1, True, "a single sample (N = 1)", forward_trial((1, 9))),
    _f("one-feature", 1, True, "a single feature (D = 1)", forward_trial((7, 1))),
    _f("tiny-rms", 1, True, "rows whose mean square is far below eps", forward_trial((6, 17), "tiny-variance")),
    _f("large-offset", 1, True, "rows with a mean of 1e3 to 2e3 and unit spread", forward_trial((9, 10), "large-offset")),
    _f("constant", 1, True, "rows whose values are all equal (some zero)", forward_trial((5, 7), "constant")),
    _f("eps", 1, True, "eps = 1e-2 passed as a keyword", forward_trial((7, 9), "tiny-variance", eps=1e-2)),
    _f("float32", 1, True, "a float32 input: results in float32", forward_trial((10, 13), dtype=np.float32)),
    _j("small", 2, False, "a row of 6 values", jacobian_trial(6)),
    _j("small-rms", 2, False, "a row of 5 values whose mean square is far below eps", jacobian_trial(5, "tiny-variance")),
    _j("odd-length", 2, True, "a row of 11 values", jacobian_trial(11)),
    _j("long", 2, True, "a row of 129 values", jacobian_trial(129)),
    _j("one-value", 2, True, "a row of one value (D = 1)", jacobian_trial(1)),
    _j("two-values", 2, True, "a row of two values (D = 2)", jacobian_trial(2)),
    _j("tiny-rms", 3, True, "a row whose mean square is far below eps", jacobian_trial(17, "tiny-variance")),
    _j("large-offset", 2, True, "a row with a mean of 1e3 to 2e3 and unit spread", jacobian_trial(10, "large-offset")),
    _j("constant", 2, True, "a row whose values are all equal", jacobian_trial(7, "constant")),
    _j("eps", 2, True, "eps = 1e-2 passed as a keyword", jacobian_trial(9, "tiny-variance", eps=1e-2)),
    _j("float32", 3, True, "a float32 row: J in float32", jacobian_trial(13, dtype=np.float32)),
]


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

def _forward(x, gamma, eps=EPS, slip: str | None = None):
    d = x.shape[1]
    centered = x - x.mean(axis=1, keepdims=True)
    square = (centered**2 if slip in ("mean-subtracted", "centered-statistic") else x**2).sum(axis=1, keepdims=True)
    square = square if slip == "sum-not-mean" else square / d
    if slip == "eps-outside-sqrt":
        rstd = 1.0 / (np.sqrt(square) + eps)
    elif slip == "no-square-root":
        rstd = 1.0 / (square + eps)
    else:
        rstd = 1.0 / np.sqrt(square + eps)
    y = (centered if slip == "mean-subtracted" else x) * rstd * (1.0 if slip == "gamma-forgotten" else gamma)
    return y, {"x": x, "rstd": rstd[:, 0], "gamma": gamma, "eps": eps}


FORWARD_SLIPS = {
    "mean-subtracted": (
        "LayerNorm without beta: the mean subtracted from x and from the statistic; RMSNorm subtracts no mean",
        f"{FORWARD_PAGE}#rmsnorm"),
    "centered-statistic": (
        "rstd from the variance (the mean subtracted inside the statistic): RMSNorm divides by the root mean square "
        "of x itself", f"{FORWARD_PAGE}#rmsnorm"),
    "sum-not-mean": ("1 / sqrt(sum(x**2) + eps): the root *mean* square divides the sum by D", f"{FORWARD_PAGE}#rmsnorm"),
    "no-square-root": ("1 / (mean(x**2) + eps): the square root is missing", f"{FORWARD_PAGE}#rmsnorm"),
    "eps-outside-sqrt": ("1 / (sqrt(mean(x**2)) + eps): eps belongs inside the square root",
                         f"{FORWARD_PAGE}#where-eps-sits"),
    "gamma-forgotten": ("y = x * rstd: the scale gamma is missing", f"{FORWARD_PAGE}#scale-and-shift"),
}


def _jacobian(x, eps=EPS, slip: str | None = None):
    d = x.shape[0]
    if slip == "layernorm-jacobian":
        if d == 1:  # x - mean(x) is 0, so this is 0, as is every answer that drops eps: it would name them all
            raise ValueError("LayerNorm's Jacobian of one value is 0, whatever the slip")
        centered = x - x.mean()
        rstd = 1.0 / np.sqrt(centered @ centered / d + eps)
        x_hat = centered * rstd
        return rstd * (np.eye(d) - 1.0 / d - np.outer(x_hat, x_hat) / d)
    total = x @ x
    mean_square = total if slip == "sum-not-mean" else total / d
    count = 1.0 if slip == "sum-not-mean" else d
    if slip == "eps-outside-sqrt":  # rstd computed wrong, then the right formula
        rstd = 1.0 / (np.sqrt(mean_square) + eps)
    else:
        rstd = 1.0 / np.sqrt(mean_square + eps)
    # d(x_i rstd)/dx_j = rstd delta_ij + x_i d rstd/dx_j, d rstd/dx_j = -rstd^3 x_j / D
    power = 2 if slip == "rstd-squared" else 3
    factor = {"sign-error": -1.0, "missing-factor-2": 0.5, "missing-half": 2.0, "diagonal-only": 0.0}.get(slip, 1.0)
    mean_term = rstd / d if slip == "mean-term-kept" else 0.0  # LayerNorm's -rstd / D, x left uncentred
    return rstd * np.eye(d) - mean_term - factor * rstd**power * np.outer(x, x) / count


JACOBIAN_SLIPS = {
    "layernorm-jacobian": (
        "LayerNorm's Jacobian, with the mean subtracted: RMSNorm's x_i rstd has no mean, so no -rstd / D term "
        "and x where LayerNorm has x - mu", f"{FORWARD_PAGE}#rmsnorm"),
    "diagonal-only": (
        "rstd times the identity: the part through the root mean square, -rstd^3 x_i x_j / D, is missing (in the "
        "backward pass, the missing x * mean(g x) term); every x_j moves every x_i rstd",
        f"{CHAIN_RULE}#slip-diagonal-only"),
    "eps-outside-sqrt": ("rstd = 1 / (sqrt(mean(x**2)) + eps) in the right formula: eps belongs inside the square root",
                         f"{FORWARD_PAGE}#where-eps-sits"),
    "sum-not-mean": ("the Jacobian of x / sqrt(sum(x**2) + eps): the mean square divides the sum by D",
                     f"{FORWARD_PAGE}#rmsnorm"),
    "rstd-squared": ("rstd**2 in place of rstd**3 in the part through the root mean square",
                     f"{CHAIN_RULE}#slip-rstd-squared"),
    "sign-error": ("the part through the root mean square with the wrong sign: a larger x_j makes rstd smaller",
                   f"{CHAIN_RULE}#slip-sign-error"),
    "missing-factor-2": ("the part through the root mean square at half its size: d mean(x**2) / d x_j = 2 x_j / D",
                         f"{CHAIN_RULE}#slip-missing-factor-2"),
    "missing-half": ("the part through the root mean square at twice its size: d rstd / d mean(x**2) = -rstd^3 / 2, "
                     "whose 1/2 cancels the 2 of d mean(x**2) / d x_j = 2 x_j / D",
                     f"{CHAIN_RULE}#slip-missing-factor-2"),
    "mean-term-kept": ("LayerNorm's -rstd / D term kept, with x uncentred: RMSNorm subtracts no mean, so no x_j "
                       "reaches x_i rstd through one", f"{FORWARD_PAGE}#rmsnorm"),
}

MISTAKES = [
    *(Mistake("rmsnorm_forward", name, message, section,
              lambda x, gamma, eps=EPS, _slip=name: _forward(x, gamma, eps, _slip))
      for name, (message, section) in FORWARD_SLIPS.items()),
    *(Mistake("rmsnorm_jacobian", name, message, section, lambda x, eps=EPS, _slip=name: _jacobian(x, eps, _slip))
      for name, (message, section) in JACOBIAN_SLIPS.items()),
]
