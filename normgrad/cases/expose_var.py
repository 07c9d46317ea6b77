"""Exercise 04, added in the second edition: `expose_var_without_eps() -> (x, dy)`.

Source 000's snippet divides the third term of layer norm's dx by `var` where `var + eps`
belongs. The student returns an input on which that slip shows; the student's code only returns
tensors, and this module, on the trusted side, checks the bounds of COURSE_API.md, then runs the
snippet (`torch_trials.slipped_backward`, slip 'var-without-eps') and the truth (float64 autograd
through torch's own layer norm) on them: each row of x is one group, gamma is all ones, eps 1e-5.
The snippet's error is measured against the larger of the true dx's largest entry and the direct
path's, max|rstd * dy|, so that an input on which dx vanishes (dy constant along rows, or
a * x_hat + b) cannot pass by dividing roundoff by roundoff.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import reference
from . import Case, Trial
from .torch_trials import direct_path, slipped_backward

FUNCTION = "expose_var_without_eps"
EPS = 1e-5
NEEDED = 1e-2  # the relative error the snippet must show
BOUNDS = {"rows": (2, 64), "columns": (2, 256), "x": 1e3, "dy": 1.0}


def _errors(x: torch.Tensor, dy: torch.Tensor) -> tuple[float, float, float]:
    """(max|snippet's dx - true dx|, max|true dx|, max|rstd * dy|) in float64; the first inf where the snippet
    is not finite."""
    ones = torch.ones(x.shape[1], dtype=torch.float64)
    truth = reference.layernorm(x, ones, torch.zeros_like(ones), EPS, dy=dy)
    mean, rstd = torch.from_numpy(truth.mean), torch.from_numpy(truth.rstd)
    direct = direct_path(dy, ones, truth.rstd, "layer")
    with np.errstate(all="ignore"):
        slipped = slipped_backward(dy, x, ones, mean, rstd, "layer", "var-without-eps", EPS)[0]
        if not np.isfinite(slipped).all():
            return float("inf"), float(np.max(np.abs(truth.dx))), direct
        return float(np.max(np.abs(slipped - truth.dx))), float(np.max(np.abs(truth.dx))), direct


def snippet_error(x: torch.Tensor, dy: torch.Tensor) -> float:
    """max|snippet's dx - true dx| / max(max|true dx|, max|rstd * dy|), in float64 (inf where the snippet is not
    finite).

    The largest entry of the true dx alone is no scale: where dy makes dx vanish (dy constant along a row, or
    a * x_hat + b) the true dx and the snippet's are both roundoff, and their ratio anything. The direct path,
    rstd * dy (gamma is all ones), cannot vanish while dy does not, and is the size of dx wherever its three
    terms do not cancel, so it is the floor (as in hide_path): only an input on which the missing eps changes
    dx by the asked fraction of that scale exposes the snippet.
    """
    error, largest, direct = _errors(x, dy)
    if error == float("inf"):
        return error
    return error / max(largest, direct, np.finfo(np.float64).tiny)


def judge(returned, expected=None) -> list[str]:
    if not isinstance(returned, (tuple, list)) or len(returned) != 2:
        return ["should return a tuple (x, dy) of two tensors"]
    problems = []
    for name, t in zip(("x", "dy"), returned):
        if type(t) is not torch.Tensor:
            problems.append(f"{name} should be a torch.Tensor, got {type(t).__name__}")
        elif t.dtype != torch.float64 or t.dim() != 2:
            problems.append(f"{name} should be a 2-D float64 tensor, got {t.dtype} of shape {tuple(t.shape)}")
        elif not torch.isfinite(t).all():
            problems.append(f"{name} holds values that are not finite")
    if problems:
        return problems
    x, dy = (t.detach().to("cpu") for t in returned)
    (lo_m, hi_m), (lo_n, hi_n) = BOUNDS["rows"], BOUNDS["columns"]
    if x.shape != dy.shape:
        return [f"x and dy should have one shape, got {tuple(x.shape)} and {tuple(dy.shape)}"]
    m, n = x.shape
    if not (lo_m <= m <= hi_m and lo_n <= n <= hi_n):
        problems.append(f"the shape (M, N) should have {lo_m} <= M <= {hi_m} and {lo_n} <= N <= {hi_n}, "
                        f"got {tuple(x.shape)}")
    if x.abs().max() > BOUNDS["x"]:
        problems.append(f"every |x| should be at most {BOUNDS['x']:g}, got {float(x.abs().max()):.3g}")
    if dy.abs().max() > BOUNDS["dy"]:
        problems.append(f"every |dy| should be at most {BOUNDS['dy']:g}, got {float(dy.abs().max()):.3g}")
    if problems:
        return problems
    error = snippet_error(x, dy)
    if error == float("inf"):
        return ["the snippet's dx is not finite on this input (a row of equal values divides 0 by 0): that shows "
                "a division by zero, not where eps matters; find an input where it stays finite and is wrong"]
    if not error >= NEEDED:
        _, largest, direct = _errors(x, dy)
        if largest < NEEDED * direct:
            return [f"the true dx nearly vanishes on this input (its largest entry is {largest:.3g}, against "
                    f"{direct:.3g} for the direct path rstd * dy): dy there is (nearly) constant along a row, or "
                    f"a * x_hat + b, and what the snippet gets wrong is roundoff or nothing. Relative to the "
                    f"direct path's size the snippet is off by {error:.3g}; it should be off by at least "
                    f"{NEEDED:g}: find an input where eps itself changes dx"]
        return [f"the snippet is off by {error:.3g} relative to the larger of the true dx's largest entry and "
                f"the direct path's (rstd * dy) on this input; "
                f"it should be off by at least {NEEDED:g}"]
    return []


def _make(rng: np.random.Generator, device: str) -> Trial:
    return Trial(args=(), expected=None, judge=judge, arg_names=())


CASES = [
    Case(FUNCTION, "exposes", 2, False, "the snippet that divides by var is off by at least 1e-2 on (x, dy)", _make),
    # The graded run of the same check, in the grader's sandbox and judged on the trusted side.
    Case(FUNCTION, "exposes-graded", 12, True, "the same check, graded", _make),
]
MISTAKES = []
