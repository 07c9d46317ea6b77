"""Assignment 02's insight task: `hide_path(x, gamma, path) -> dy`.

x (N, D) and gamma (D,) are a LayerNorm's input and scale (eps = 1e-5); path is "mean" or
"variance". The answer is an upstream gradient, not a function: a dy of x's shape, every row's
largest |dy| between 0.5 and 1, on which a backward pass that leaves out that path returns the true
dx. A test that draws only such gradients cannot see the path's loss (chapter 2, "Why an upstream
gradient of all ones hides a missing path").

The student's code only returns an array; the judge runs, here on the trusted side, the slipped
backward (exercise 02's catalogued mistake `no-mean-path` or `no-variance-path`, in float64) and
the true one (float64 autograd) on that dy and compares them. Tolerance: the two differ by the
missing path alone, and a dy that hides it leaves that path at rounding level, relative to the size
of the direct path rstd * dy * gamma; the rounding is that of dy's dtype (a float32 dy can only hide a
path to float32's precision) and of x_hat, so the dtype's rtol times the rows' conditioning, with the
direct path as floor.

A known mistake here is described by what the wrong dy does instead (hides the other path, is zero,
is constant along each row), and the same judge says whether an answer does that.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .. import inputs, reference, tolerances
from ..checks import array_problems, as_float64, closeness_problems
from . import Case, Mistake, Trial
from .judging import DIRECT_PATH

EPS = 1e-5
PATHS = {"mean": "no-mean-path", "variance": "no-variance-path"}  # path -> exercise 02's slip that leaves it out
ROW_MAX = (0.5, 1.0)  # every row's largest |dy| lies in this range
VANISHING = 1e-6  # a dy no larger than this is "zero"


def missing_path(dy: np.ndarray, x: np.ndarray, gamma: np.ndarray, path: str) -> tuple[np.ndarray, float]:
    """dx of the backward without `path` minus the true dx, both in float64, for the upstream gradient dy;
    and the size of the direct path, max |rstd * dy * gamma|, the scale the difference is measured by."""
    from .chain_rule import staged  # imported here: chain_rule's last line imports this module

    cache = reference.forward_cache(x, gamma, EPS, "layer")
    parts = staged(dy, cache, axis=1, slip=PATHS[path])
    slipped = parts["direct"] + parts["via_mean"] + parts["via_var"]
    true = reference.layernorm(x, gamma, np.zeros_like(gamma), EPS, dy=dy).dx
    return slipped - true, float(np.max(np.abs(parts["direct"]), initial=0.0))


def judge(returned, expected: dict, *, x: np.ndarray, gamma: np.ndarray, dtype, rtol: float) -> list[str]:
    """Does the returned dy do what `expected` says: {"hides": path}, {"zero": True} or {"constant": True}?"""
    problems = array_problems(returned, "dy", x.shape, dtype)
    if problems:
        return problems
    dy = as_float64(returned)
    largest = np.abs(dy).max(axis=1, initial=0.0)
    if expected.get("zero"):
        return [] if largest.max(initial=0.0) <= VANISHING else ["dy is not zero"]
    if expected.get("constant"):
        spread = np.abs(dy - dy.mean(axis=1, keepdims=True)).max(initial=0.0)
        return [] if spread <= rtol * largest.max(initial=0.0) else ["dy is not constant along each row"]
    low, high = ROW_MAX
    outside = np.flatnonzero((largest < low) | (largest > high))
    if outside.size:
        i = int(outside[0])
        peak = _shown(largest[i], low, high)
        problems.append(f"every row's largest |dy| must be between {low} and {high}: row {i}'s is {peak} "
                        f"({outside.size} of {len(largest)} rows are outside)")
    path = expected["hides"]
    error, direct = missing_path(dy, x, expected.get("gamma", gamma), path)  # a mistake's own gamma: gamma-ignored
    if closeness_problems(error, np.zeros_like(error), "dx", rtol, direct):
        worst = float(np.max(np.abs(error)))
        problems.append(f"this dy does not hide the path through the {path}: on it, a backward pass without that "
                        f"path is off from the true dx by up to {worst:.3g} ({worst / max(direct, 1e-300):.3g} of "
                        f"{DIRECT_PATH}; the tolerance is {rtol:.3g})")
    return problems


def _shown(value: float, low: float, high: float) -> str:
    """A value outside [low, high] to as many digits as it takes not to look inside it (0.49999999999999994)."""
    short = f"{value:.3g}"
    return short if not low <= float(short) <= high else repr(float(value))


def trial(path: str, shape, kind: str = "normal", dtype=np.float64, offset: float = 1e3, constant_rows=False):
    """`constant_rows`: every other row's values all equal. Beside ordinary rows, since on a constant row
    x_hat is zero and any dy hides the variance's path: alone, they would give that point to any dy."""
    def make(rng: np.random.Generator, device: str) -> Trial:
        x = inputs.sample(rng, shape, "layer", kind, offset)
        if constant_rows:  # the "constant" kind's: their mean is exact, so x_hat is exactly zero there
            x[::2] = inputs.sample(rng, x[::2].shape, "layer", "constant")
        x = x.astype(dtype)
        gamma = inputs.affine(rng, shape[1])[0].astype(dtype)
        x64, gamma64 = x.astype(np.float64), gamma.astype(np.float64)
        kappa = tolerances.conditioning(x64, (1,), EPS)
        return Trial(args=(x, gamma, path), expected={"hides": path}, arg_names=("x", "gamma", "path"),
                     judge=partial(judge, x=x64, gamma=gamma64, dtype=np.dtype(dtype),
                                   rtol=tolerances.rtol(dtype, kappa)))

    return make


def _cases(path: str) -> list[Case]:
    c = partial(Case, "hide_path")
    t = partial(trial, path)
    the = f"the path through the {path}"
    return [  # 10 points per path
        c(f"{path}-small", 1, False, f"{the}, a 4 x 6 input", t((4, 6))),
        c(f"{path}-odd-shape", 1, True, f"{the}, a 5 x 11 input", t((5, 11))),
        c(f"{path}-wide", 1, True, f"{the}, a 3 x 129 input", t((3, 129))),
        c(f"{path}-one-sample", 1, True, f"{the}, a single sample (N = 1)", t((1, 9))),
        c(f"{path}-two-features", 1, True, f"{the}, rows of two values (D = 2)", t((7, 2))),
        c(f"{path}-tiny-variance", 1, True, f"{the}, rows whose variance is far below eps", t((6, 17), "tiny-variance")),
        c(f"{path}-large-offset", 1, True, f"{the}, rows with a mean of 1e3 to 2e3 and unit spread",
          t((9, 10), "large-offset")),
        c(f"{path}-constant", 1, True, f"{the}, every other row's values all equal", t((5, 7), constant_rows=True)),
        c(f"{path}-float32", 2, True, f"{the}, float32 inputs: dy in float32", t((10, 13), dtype=np.float32)),
    ]


CASES = _cases("mean") + _cases("variance")

OTHER = {"mean": "variance", "variance": "mean"}
SECTION = "02-chain-rule.html#all-ones"


MISTAKES = [
    Mistake("hide_path", "wrong-path", "a gradient that hides the other path, not the one asked for", SECTION,
            lambda x, gamma, path: {"hides": OTHER[path]}),
    Mistake("hide_path", "zero-gradient",
            "a zero gradient: it hides every path and so tells nothing; every row's largest |dy| must be between "
            f"{ROW_MAX[0]} and {ROW_MAX[1]}", SECTION, lambda x, gamma, path: {"zero": True}),
    Mistake("hide_path", "gamma-ignored",
            "a gradient that would hide the path if gamma were 1: the paths sum g = dy * gamma, not dy, so the "
            "condition you put on dy's rows belongs on g's",  # the condition itself is the task: not said here
            "02-chain-rule.html#three-paths",
            lambda x, gamma, path: {"hides": path, "gamma": np.ones_like(np.asarray(gamma, dtype=np.float64))}),
    Mistake("hide_path", "constant-rows",
            "a gradient constant along each row, like all ones: that is chapter 2's blind spot when gamma = 1, "
            "and this gamma is not 1", SECTION, lambda x, gamma, path: {"constant": True}),
]
