"""Assignment 04-code-mapping: the backward pass in PyTorch, on any device and in any dtype.

- `layernorm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)`: x of shape (M, N),
  statistics per row, shape (M,);
- `batchnorm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)`: x of shape (N, C),
  statistics per column, shape (C,);
- `LayerNormFunction`, a torch.autograd.Function called as `LayerNormFunction.apply(x, gamma,
  beta, eps)`: its forward output and the gradients its backward gives x, gamma and beta.

`mean` and `rstd` are float32 for 16-bit inputs and of x's dtype otherwise; results have the
dtype and device of x (dx, y) and gamma (dgamma, dbeta). Every case runs on the CPU and, where
a GPU is present, on CUDA; the trials come from `torch_trials`, shared with exercises 05 and 06.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .. import inputs, reference, tolerances
from . import Case, Mistake, Trial
from .judging import arrays_problems
from .torch_trials import backward_trial, natural_scales, rounded, slipped_backward, strided

DEVICES = ("cpu", "cuda")
f64, f32, bf16, f16 = torch.float64, torch.float32, torch.bfloat16, torch.float16


def function_trial(shape, dtype: torch.dtype = f64, kind: str = "normal", contiguous: bool = True,
                   eps: float = 1e-5):
    """A trial maker for `LayerNormFunction`: apply(x, gamma, beta, eps), then backward(dy).

    The protocol "autograd_function" returns (y, x.grad, gamma.grad, beta.grad); all four are
    compared with float64 autograd through torch's own layer norm.
    """
    shape = tuple(shape)

    def make(rng: np.random.Generator, device: str) -> Trial:
        x = rounded(inputs.sample(rng, shape, "layer", kind), dtype)
        gamma, beta = (rounded(a, dtype) for a in inputs.affine(rng, shape[1]))
        dy = rounded(inputs.upstream(rng, shape), dtype)
        ref = reference.layernorm(x, gamma, beta, eps, dy=dy)
        kappa = tolerances.conditioning(x.double().numpy(), (1,), eps)
        _, dgamma_floor, _ = natural_scales(dy, "layer")
        judge = partial(arrays_problems, names=("y", "dx", "dgamma", "dbeta"), dtypes=(dtype,) * 4,
                        rtol=tolerances.rtol(dtype, kappa), device=device, floors=(0.0, 0.0, dgamma_floor, 0.0))
        args = (strided(x, device, contiguous), gamma.to(device), beta.to(device), eps,
                strided(dy, device, contiguous))
        return Trial(args=args, expected=(ref.y, ref.dx, ref.dgamma, ref.dbeta),
                     arg_names=("x", "gamma", "beta", "eps", "dy"), judge=judge, protocol="autograd_function")

    return make


def _backward_cases(function: str, norm: str) -> list[Case]:
    """The same ladder for both functions; shapes are (rows, features) for layer norm and
    (batch, channels) for batch norm, so `long` puts thousands of terms in every group's sum."""
    c = partial(Case, function, devices=DEVICES)
    m = partial(backward_trial, norm)

    def shape(groups, per_group):  # a group is a row of layer norm, a column of batch norm
        return (groups, per_group) if norm == "layer" else (per_group, groups)

    def size(groups, per_group):
        return "{} x {} input".format(*shape(groups, per_group))

    return [
        c("small", 1, False, f"float64, a {size(5, 12)}", m(shape(5, 12), f64)),
        c("float32", 1, False, "float32, results in float32", m(shape(7, 33), f32)),
        c("odd-shape", 1, True, f"float64, a {size(13, 37)}", m(shape(13, 37), f64)),
        c("few-values", 1, True, f"float64, a {size(9, 3)}: groups of only 3 values", m(shape(9, 3), f64)),
        c("non-contiguous", 1, True, "float32 inputs that are transposed views",
          m(shape(24, 70), f32, contiguous=False)),
        c("tiny-variance", 2, True, "groups whose variance is far below eps", m(shape(6, 17), f64, "tiny-variance")),
        c("constant", 1, True, "groups whose values are all equal (zero variance)", m(shape(5, 9), f64, "constant")),
        c("large-offset", 1, True, "float32 groups with a mean near 1e3 and unit spread",
          m(shape(9, 40), f32, "large-offset")),
        # Means of 10 to 20 beside a spread of 0.5 to 2, and an upstream gradient with a mean of 3:
        # rounding the mean to 16 bits shifts every x_hat of a group alike, and batch norm's
        # dgamma = sum(dy * x_hat) adds that shift up 3000 times (at least 4 times the tolerance
        # in 100 draws; layer norm's shifts cancel, and its error stays below half of it).
        c("bfloat16", 2, True, f"bfloat16, a {size(16, 3000)} with means near 10",
          m(shape(16, 3000), bf16, "large-offset", contiguous=False, offset=10.0, dy_offset=3.0)),
        c("float16", 2, True, f"float16, a {size(16, 3000)} with means near 10",
          m(shape(16, 3000), f16, "large-offset", offset=10.0, dy_offset=3.0)),
        c("bfloat16-long-sums", 2, True, f"bfloat16, a {size(4, 5000)}: sums of 5000 terms",
          m(shape(4, 5000), bf16, dy_offset=2.0), seconds=20.0),
        c("float16-long-sums", 2, True, f"float16, a {size(4, 5000)}: sums of 5000 terms",
          m(shape(4, 5000), f16, dy_offset=2.0), seconds=20.0),
    ]


def _function_cases() -> list[Case]:
    c = partial(Case, "LayerNormFunction", devices=DEVICES)
    return [
        c("small", 1, False, "float64, a 6 x 10 input", function_trial((6, 10))),
        c("float32", 1, False, "float32, results in float32", function_trial((5, 24), f32)),
        c("odd-shape", 1, True, "float64, an 11 x 23 input", function_trial((11, 23))),
        c("non-contiguous", 1, True, "float32 inputs that are transposed views",
          function_trial((20, 45), f32, contiguous=False)),
        c("tiny-variance", 2, True, "rows whose variance is far below eps",
          function_trial((6, 17), kind="tiny-variance")),
        c("eps", 1, True, "eps = 1e-2 passed to apply", function_trial((7, 9), kind="tiny-variance", eps=1e-2)),
        c("bfloat16", 1, True, "bfloat16 inputs", function_trial((12, 80), bf16)),
        c("float16", 1, True, "float16 inputs", function_trial((8, 70), f16)),
    ]


CASES = _backward_cases("layernorm_backward", "layer") + _backward_cases("batchnorm_backward", "batch") + \
    _function_cases()


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

CHAPTER = "04-code-mapping.html"
MESSAGES = {
    "var-without-eps": ("the third term divided by var where var + eps belongs; it matters once var is near eps",
                        "var-or-var-plus-eps"),
    "no-mean-path": ("the gradient without its path through the mean (the - mean(g) term)", "slips-in-translation"),
    "no-variance-path": ("the gradient without its path through the variance (the - x_hat * mean(g * x_hat) term)",
                         "slips-in-translation"),
    "diagonal-only": ("only the diagonal of the Jacobian, g * rstd * (1 - 1/m - x_hat^2 / m): every entry of a "
                      "group moves the mean and variance that all the others use", "slips-in-translation"),
    "gamma-forgotten": ("dL/dx_hat taken as dy: the scale gamma is missing from dx", "slips-in-translation"),
    "half-statistics": ("the arithmetic done in the 16-bit type (mean and rstd rounded to it), where it belongs "
                        "in float32", "half-precision"),
    "half-sums": ("sums carried in the 16-bit type: long sums stall where float32 accumulation keeps every term",
                  "half-precision"),
}


def _float64_stats(x, eps):
    """Layer norm's mean and rstd per row, in float64."""
    mean = x.mean(dim=1)
    return mean, 1 / torch.sqrt(((x - mean[:, None]) ** 2).mean(dim=1) + eps)


def _function_with(slip):
    def impl(x, gamma, beta, eps, dy):
        mean, rstd = _float64_stats(x, eps)
        y = (gamma * (x - mean[:, None]) * rstd[:, None] + beta).numpy()
        return (y, *slipped_backward(dy, x, gamma, mean, rstd, "layer", slip, eps))

    return impl


def _mistakes() -> list[Mistake]:
    found = []
    for function, norm in (("layernorm_backward", "layer"), ("batchnorm_backward", "batch")):
        for slip, (message, anchor) in MESSAGES.items():
            impl = partial(slipped_backward, norm=norm, slip=slip)
            found.append(Mistake(function, slip, message, f"{CHAPTER}#{anchor}", impl))
    for slip in ("var-without-eps", "no-mean-path", "no-variance-path", "diagonal-only", "gamma-forgotten"):
        message, anchor = MESSAGES[slip]
        found.append(Mistake("LayerNormFunction", slip, message, f"{CHAPTER}#{anchor}", _function_with(slip)))
    return found


MISTAKES = _mistakes()

from .second_edition import extend; CASES, MISTAKES = extend("04-code-mapping", CASES, MISTAKES)  # noqa: E402,E702
