"""Assignment 01-forward: `layernorm_forward` and `batchnorm_forward` in NumPy.

Both take x of shape (N, D), gamma and beta of shape (D,), and eps, and return
(y, cache) with cache = {x, mean, rstd, x_hat, gamma, eps}. Layer norm reduces
over the features (mean and rstd of shape (N,)), batch norm over the batch
(shape (D,)). Results have x's dtype.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .. import inputs, reference, tolerances
from ..checks import array_problems, closeness_problems, describe
from . import Case, Mistake, Trial
from .judging import mean_floor

CACHE_KEYS = ("x", "mean", "rstd", "x_hat", "gamma", "eps")


def judge(returned, expected, *, dtype, rtol) -> list[str]:
    """(y, cache) against the expected (y, cache): every entry that is wrong, named."""
    if not isinstance(returned, (tuple, list)) or len(returned) != 2:
        return [f"should return a pair (y, cache), got {describe(returned)}"]
    (y, cache), (want_y, want) = returned, expected
    # Natural scales: for groups whose x_hat is all rounding noise (zero variance), and for a mean near zero,
    # whose rounding is that of a sum of the x's (relative to them, not to itself)
    floors = {"y": 1.0, "mean": mean_floor(want["x"]), "rstd": 0.0, "x_hat": 1.0}
    problems = array_problems(y, "y", want_y.shape, dtype) or closeness_problems(y, want_y, "y", rtol, floors["y"])
    if not isinstance(cache, dict):
        return problems + [f"cache should be a dict, got {type(cache).__name__}"]
    missing = [k for k in CACHE_KEYS if k not in cache]
    if missing:
        return problems + [f"cache lacks the key(s) {', '.join(map(repr, missing))}"]
    for key in ("mean", "rstd", "x_hat"):
        name = f"cache[{key!r}]"
        problems += array_problems(cache[key], name, np.shape(want[key]), dtype) or \
            closeness_problems(cache[key], want[key], name, rtol, floors[key])
    for key in ("x", "gamma"):  # stored as given: exactly the input
        name = f"cache[{key!r}]"
        problems += array_problems(cache[key], name, np.shape(want[key]), dtype) or \
            closeness_problems(cache[key], want[key], name, 0.0)
    eps = cache["eps"]
    if isinstance(eps, np.ndarray) and eps.shape == ():
        eps = eps.item()
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps != want["eps"]:
        problems.append(f"cache['eps'] should be the eps the function was called with ({want['eps']})")
    return problems


def make_trial(norm: str, shape, kind: str = "normal", dtype=np.float64, eps: float | None = None,
               offset: float = 1e3):
    """A trial maker for `layernorm_forward` (norm='layer') or `batchnorm_forward` (norm='batch')."""

    def make(rng: np.random.Generator, device: str) -> Trial:
        x = inputs.sample(rng, shape, norm, kind, offset).astype(dtype)
        gamma, beta = (a.astype(dtype) for a in inputs.affine(rng, shape[1]))
        used_eps = 1e-5 if eps is None else eps
        oracle = reference.layernorm if norm == "layer" else reference.batchnorm
        ref = oracle(x, gamma, beta, used_eps)
        expected = (ref.y, {"x": x.astype(np.float64), "mean": ref.mean, "rstd": ref.rstd, "x_hat": ref.x_hat,
                            "gamma": gamma.astype(np.float64), "eps": used_eps})
        kappa = tolerances.conditioning(x, inputs.group_axes(x.shape, norm), used_eps)
        kwargs = {} if eps is None else {"eps": eps}
        return Trial(args=(x, gamma, beta), kwargs=kwargs, expected=expected, arg_names=("x", "gamma", "beta"),
                     judge=partial(judge, dtype=np.dtype(dtype), rtol=tolerances.rtol(dtype, kappa)))

    return make


def _cases(function: str, norm: str) -> list[Case]:
    c = partial(Case, function)
    m = partial(make_trial, norm)
    return [
        c("small", 1, False, "a 4 x 6 input", m((4, 6))),
        c("small-variance", 1, False, "a 3 x 5 input whose variance is below eps", m((3, 5), "tiny-variance")),
        c("odd-shape", 1, True, "a 5 x 11 input", m((5, 11))),
        c("tall", 1, True, "a 33 x 7 input", m((33, 7))),
        c("wide", 1, True, "a 3 x 129 input", m((3, 129))),
        c("one-sample", 1, True, "a single sample (N = 1)", m((1, 9))),
        c("tiny-variance", 2, True, "groups whose variance is far below eps", m((6, 17), "tiny-variance")),
        # A mean of 1e4 over a spread of 1: enough to break E[x^2] - E[x]^2 every time in float64.
        c("large-offset", 1, True, "groups with a mean of 1e4 to 2e4 and unit spread",
          m((9, 10), "large-offset", offset=1e4)),
        c("constant", 1, True, "groups whose values are all equal (zero variance)", m((5, 7), "constant")),
        c("eps", 1, True, "eps = 1e-2 passed as a keyword", m((7, 9), "tiny-variance", eps=1e-2)),
        c("float32", 1, True, "a float32 input: results in float32", m((10, 13), dtype=np.float32)),
    ]


CASES = _cases("layernorm_forward", "layer") + _cases("batchnorm_forward", "batch")


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

def _forward(x, gamma, beta, eps, axis, var_of=None, rstd_of=None, affine=None):
    """Normalization with a pluggable slip; the defaults are the correct formulas."""
    mean = x.mean(axis=axis)
    centered = x - np.expand_dims(mean, axis)
    var = (centered**2).mean(axis=axis) if var_of is None else var_of(x, centered, axis)
    rstd = 1.0 / np.sqrt(var + eps) if rstd_of is None else rstd_of(var, eps)
    x_hat = centered * np.expand_dims(rstd, axis)
    y = gamma * x_hat + beta if affine is None else affine(x_hat, gamma, beta)
    return y, {"x": x, "mean": mean, "rstd": rstd, "x_hat": x_hat, "gamma": gamma, "eps": eps}


SLIPS = {
    "sqrt-sigma-plus-eps": (
        "sqrt(sigma + eps) in place of sqrt(sigma^2 + eps): the standard deviation where the variance belongs",
        "01-forward.html#slips-in-the-source-material", {"rstd_of": lambda var, eps: 1.0 / np.sqrt(np.sqrt(var) + eps)}),
    "variance-without-square": (
        "the variance written without its square, mean(x - mu), which is zero",
        "01-forward.html#slips-in-the-source-material", {"var_of": lambda x, c, axis: c.mean(axis=axis)}),
    "unbiased-variance": (
        "the unbiased variance (dividing by n - 1); normalization layers use the biased one (divide by n)",
        "01-forward.html#the-variance-is-the-biased-one", {"var_of": lambda x, c, axis: x.var(axis=axis, ddof=1)}),
    "eps-outside-sqrt": (
        "1 / (sqrt(var) + eps): eps belongs inside the square root",
        "01-forward.html#where-eps-sits", {"rstd_of": lambda var, eps: 1.0 / (np.sqrt(var) + eps)}),
    "gamma-forgotten": (
        "y = x_hat + beta: the scale gamma is missing",
        "01-forward.html#scale-and-shift", {"affine": lambda x_hat, gamma, beta: x_hat + beta}),
    "beta-forgotten": (
        "y = gamma * x_hat: the shift beta is missing",
        "01-forward.html#scale-and-shift", {"affine": lambda x_hat, gamma, beta: gamma * x_hat}),
}


ONE_PASS = (
    "the one-pass variance E[x^2] - E[x]^2, whose two terms cancel catastrophically when the mean is large against "
    "the spread, leaving mostly their rounding error; subtract the mean first, mean((x - mu)^2)",
    "04-numerics.html#one-pass-variance")


def _numpy_one_pass(x, centered, axis):
    return (x * x).mean(axis=axis) - x.mean(axis=axis) ** 2


def one_pass_variance(axis: int):
    """E[x^2] - E[x]^2, as the answer computed it. Right in exact arithmetic, it is off by the rounding of E[x^2]
    (and of mu^2), magnified by kappa**2, and that rounding depends on the order the answer's sums added their terms
    in (NumPy's pairwise sums, einsum's, a loop's) and on its dtype: no one emulation is the answer's. So the impl is
    `fitted` (see `diagnose`): its member is the answer's own rstd, where the variance that rstd stands for is within
    what that rounding can do; NumPy's sums in float64 without an answer."""
    def impl(x, gamma, beta, eps=1e-5, returned=None):
        if returned is None:
            return _forward(x, gamma, beta, eps, axis, var_of=_numpy_one_pass)
        rstd, u = _answers_rstd(returned, x.shape[1 - axis])
        with np.errstate(all="ignore"):
            off = np.abs(1 / rstd**2 - (x.var(axis=axis) + eps))
        # A sum of m terms, in any order, is off by at most m u times the sum of their sizes: E[x^2] by (m + 1) u
        # E[x^2], mu^2 by (2m + 1) u E[x^2] through the mean's, and the subtraction, rstd's root and its division
        # by a few u more. Beyond that reach the answer's variance is wrong for another reason.
        if not np.all(off <= (3 * x.shape[axis] + 8) * u * ((x * x).mean(axis=axis) + eps)):
            raise ValueError("the answer's variance is off by more than the one-pass formula's rounding")
        return _forward(x, gamma, beta, eps, axis, rstd_of=lambda var, eps: rstd)

    impl.fitted = True
    return impl


def _answers_rstd(returned, groups: int) -> tuple[np.ndarray, float]:
    """An answer's cache['rstd'] in float64, and the unit roundoff of the dtype it was computed in; ValueError
    where it has none of the statistics' shape to read."""
    try:
        rstd = returned[1]["rstd"]
    except (TypeError, KeyError, IndexError) as e:
        raise ValueError("the answer has no cache['rstd']") from e
    if type(rstd) is not np.ndarray or rstd.dtype.kind != "f" or rstd.shape != (groups,):
        raise ValueError("the answer's cache['rstd'] is not an array of one float per group")
    return rstd.astype(np.float64), float(np.finfo(rstd.dtype).eps) / 2


def _mistakes(function: str, axis: int, other_axis: int) -> list[Mistake]:
    found = [Mistake(function, name, message, section,
                     lambda x, gamma, beta, eps=1e-5, _slip=slip: _forward(x, gamma, beta, eps, axis, **_slip))
             for name, (message, section, slip) in SLIPS.items()]
    found.append(Mistake(function, "wrong-axis",
                         f"statistics taken over axis {other_axis}; this normalization reduces over axis {axis}",
                         "01-forward.html#which-axis",
                         lambda x, gamma, beta, eps=1e-5: _forward(x, gamma, beta, eps, other_axis)))
    found.append(Mistake(function, "one-pass-variance", *ONE_PASS, one_pass_variance(axis)))
    return found


MISTAKES = _mistakes("layernorm_forward", 1, 0) + _mistakes("batchnorm_forward", 0, 1)

from .second_edition import extend  # noqa: E402  (the second edition's GroupNorm, RMSNorm and hide_path tasks)
CASES, MISTAKES = extend("01-forward", CASES, MISTAKES)
