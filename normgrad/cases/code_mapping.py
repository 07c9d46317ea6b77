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
from .torch_trials import (DEFAULT_EPS_SLIP, GRADIENT_COUNT_ERRORS, GRADIENT_COUNT_SECTION, backward_trial,
                           by_device, computed_backward, natural_scales, rounded, sixteen_bit_type, slipped_backward,
                           strided)

DEVICES = ("cpu", "cuda")
f64, f32, bf16, f16 = torch.float64, torch.float32, torch.bfloat16, torch.float16


def function_trial(shape, dtype: torch.dtype = f64, kind: str = "normal", contiguous: bool = True,
                   eps: float = 1e-5, offset: float = 1e3, dy_offset: float = 0.0):
    """A trial maker for `LayerNormFunction`: apply(x, gamma, beta, eps), then backward(dy).

    The protocol "autograd_function" returns (y, x.grad, gamma.grad, beta.grad); all four are
    compared with float64 autograd through torch's own layer norm.
    """
    shape = tuple(shape)

    def make(rng: np.random.Generator, device: str) -> Trial:
        x = rounded(inputs.sample(rng, shape, "layer", kind, offset), dtype)
        gamma, beta = inputs.affine(rng, shape[1])
        gamma, beta = rounded(np.abs(gamma) if dy_offset else gamma, dtype), rounded(beta, dtype)
        dy = rounded(dy_offset + inputs.upstream(rng, shape), dtype)
        ref = reference.layernorm(x, gamma, beta, eps, dy=dy)
        kappa = tolerances.conditioning(x.double().numpy(), (1,), eps)
        _, dgamma_floor, _ = natural_scales(dy, "layer")
        rtols = (tolerances.output_rtol(dtype, kappa), *tolerances.backward_rtols(dtype, kappa))
        judge = partial(arrays_problems, names=("y", "dx", "dgamma", "dbeta"), dtypes=(dtype,) * 4,
                        rtol=rtols, device=device, floors=(0.0, 0.0, dgamma_floor, 0.0))
        args = (strided(x, device, contiguous), gamma.to(device), beta.to(device), eps,
                strided(dy, device, contiguous, spaced=True))
        return Trial(args=args, expected=(ref.y, ref.dx, ref.dgamma, ref.dbeta),
                     arg_names=("x", "gamma", "beta", "eps", "dy"), judge=judge, protocol="autograd_function")

    return make


def _backward_cases(function: str, norm: str) -> list[Case]:
    """The same ladder for both functions; shapes are (rows, features) for layer norm and
    (batch, channels) for batch norm, so `long` puts thousands of terms in every group's sum."""
    c = partial(Case, function, devices=DEVICES)
    m = partial(backward_trial, norm)

    def tall(dtype, cpu_rows, cuda_rows):
        """Column sums (dgamma, dbeta) of thousands of terms on the CPU and tens of thousands on a GPU:
        dy shifted to a mean of 1, so the sums grow with the rows, and stay below float16's 65504."""
        return by_device(m((cpu_rows, 24), dtype, dy_offset=1.0), m((cuda_rows, 24), dtype, dy_offset=1.0))

    def shape(groups, per_group):  # a group is a row of layer norm, a column of batch norm
        return (groups, per_group) if norm == "layer" else (per_group, groups)

    def size(groups, per_group):
        return "{} x {} input".format(*shape(groups, per_group))

    return [
        c("small", 1, False, f"float64, a {size(5, 12)}", m(shape(5, 12), f64)),
        c("float32", 1, False, "float32, results in float32", m(shape(7, 33), f32)),
        c("odd-shape", 1, True, f"float64, a {size(13, 37)}", m(shape(13, 37), f64)),
        c("few-values", 1, True, f"float64, a {size(9, 3)}: groups of only 3 values", m(shape(9, 3), f64)),
        c("non-contiguous", 1, True, "float32 views, not contiguous: x transposed, dy's rows spaced apart",
          m(shape(24, 70), f32, contiguous=False)),
        c("tiny-variance", 2, True, "groups whose variance is far below eps", m(shape(6, 17), f64, "tiny-variance")),
        c("constant", 1, True, "groups whose values are all equal (zero variance)", m(shape(5, 9), f64, "constant")),
        c("large-offset", 1, True, "float32 groups with a mean of 1e3 to 2e3 and unit spread",
          m(shape(9, 40), f32, "large-offset")),
        # Means of 10 to 20 beside a spread of 0.5 to 2, and an upstream gradient with a mean of 3:
        # rounding the mean to 16 bits shifts every x_hat of a group alike, and batch norm's
        # dgamma = sum(dy * x_hat) adds that shift up 3000 times (at least 4 times the tolerance
        # in 100 draws; layer norm's shifts cancel, and its error stays below half of it).
        c("bfloat16", 2, True, f"bfloat16, a {size(16, 3000)} with means of 10 to 20",
          m(shape(16, 3000), bf16, "large-offset", contiguous=False, offset=10.0, dy_offset=3.0)),
        c("float16", 2, True, f"float16, a {size(16, 3000)} with means of 10 to 20",
          m(shape(16, 3000), f16, "large-offset", offset=10.0, dy_offset=3.0)),
        c("bfloat16-long-sums", 2, True, f"bfloat16, a {size(4, 5000)}: sums of 5000 terms",
          m(shape(4, 5000), bf16, dy_offset=2.0), seconds=20.0),
        c("float16-long-sums", 2, True, f"float16, a {size(4, 5000)}: sums of 5000 terms",
          m(shape(4, 5000), f16, dy_offset=2.0), seconds=20.0),
        # A visible 16-bit case: means near 10 beside a spread of 0.5 to 2, dy shifted; statistics
        # rounded to 16 bits or arithmetic done in 16 bits fail it.
        c("float16-visible", 1, False, f"float16, a {size(12, 700)} with means of 10 to 20",
          m(shape(12, 700), f16, "large-offset", offset=10.0, dy_offset=3.0)),
        # Tall: every column sum over 3000 rows (30000 on a GPU) of dy of mean 1.
        c("float16-tall", 2, True, "float16, 3000 x 24 (30000 x 24 on a GPU), dy of mean 1: column sums of "
          "thousands of terms", tall(f16, 3000, 30_000), seconds=30.0),
        c("bfloat16-tall", 2, True, "bfloat16, 3000 x 24 (30000 x 24 on a GPU), dy of mean 1: column sums of "
          "thousands of terms", tall(bf16, 3000, 30_000), seconds=30.0),
    ]


KEPT_PER_ROW_AND_FEATURE = 4  # numbers of x's dtype forward may keep per row and per feature besides the inputs


def kept_problems(returned, expected, rows: int, features: int, itemsize: int) -> list[str]:
    """What LayerNormFunction's forward keeps for its backward (protocol "saved_for_backward": bytes besides
    the inputs') must be a few numbers a row and a feature (mean and rstd, gamma in another dtype), not x's
    size again: chapter 4 saves mean and rstd and rebuilds x_hat from them."""
    if type(returned) is not int:
        return [f"the bytes forward keeps should come back as an int, got {type(returned).__name__}"]
    allowed = KEPT_PER_ROW_AND_FEATURE * (rows + features) * itemsize
    if returned <= allowed:
        return []
    numbers = returned / itemsize
    return [f"forward keeps {returned} bytes for backward besides its inputs (the tensors it saves and sets on "
            f"ctx), {numbers / (rows * features):.2g} times a whole {rows} x {features} input in its dtype; "
            f"the backward needs two numbers a row, mean and rstd ({2 * rows * itemsize} bytes here), and "
            f"rebuilds x_hat from them, as chapter 4's RowNorm does"]


def saved_trial(shape):
    """A trial maker for what `LayerNormFunction.apply(x, gamma, beta, eps)` keeps for its backward, in
    float64: the judge is `kept_problems`."""
    def make(rng: np.random.Generator, device: str) -> Trial:
        x = rounded(inputs.sample(rng, shape, "layer", "normal", 1e3), f64)
        gamma, beta = (rounded(a, f64) for a in inputs.affine(rng, shape[1]))
        judge = partial(kept_problems, rows=shape[0], features=shape[1], itemsize=8)
        return Trial(args=(x.to(device), gamma.to(device), beta.to(device), 1e-5), expected=None,
                     arg_names=("x", "gamma", "beta", "eps"), judge=judge, protocol="saved_for_backward")

    return make


def _function_cases() -> list[Case]:
    c = partial(Case, "LayerNormFunction", devices=DEVICES)
    return [
        c("small", 1, False, "float64, a 6 x 10 input", function_trial((6, 10))),
        c("float32", 1, False, "float32, results in float32", function_trial((5, 24), f32)),
        c("odd-shape", 1, True, "float64, an 11 x 23 input", function_trial((11, 23))),
        c("non-contiguous", 1, True, "float32 views, not contiguous: x transposed, dy's rows spaced apart",
          function_trial((20, 45), f32, contiguous=False)),
        c("keeps-statistics", 1, False, "float64, 24 x 40: what forward keeps for backward, beside x",
          saved_trial((24, 40)), devices=("cpu",)),
        c("tiny-variance", 1, True, "rows whose variance is far below eps",
          function_trial((6, 17), kind="tiny-variance")),
        c("eps", 1, True, "eps = 1e-2 passed to apply", function_trial((7, 9), kind="tiny-variance", eps=1e-2)),
        # forward computes the statistics: E[x^2] - E[x]^2 in float32 fails here (chapter 4b)
        c("large-offset", 1, True, "float32 groups with a mean of 1e3 to 2e3 and unit spread",
          function_trial((9, 40), f32, "large-offset")),
        c("bfloat16", 1, True, "bfloat16 inputs", function_trial((12, 80), bf16)),
        c("float16", 1, True, "float16 inputs", function_trial((8, 70), f16)),
        # exercise 04's 16-bit case for layernorm_backward: the mean dwarfs the spread, dy is shifted
        c("bfloat16-large-offset", 2, True, "bfloat16, 16 x 3000 with means of 10 to 20",
          function_trial((16, 3000), bf16, "large-offset", offset=10.0, dy_offset=3.0)),
        c("float16-large-offset", 2, True, "float16, 16 x 3000 with means of 10 to 20",
          function_trial((16, 3000), f16, "large-offset", offset=10.0, dy_offset=3.0)),
    ]


CASES = _backward_cases("layernorm_backward", "layer") + _backward_cases("batchnorm_backward", "batch") + \
    _function_cases()


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

CHAPTER = "04-code-mapping.html"
NUMERICS = "04-numerics.html"
MESSAGES = {
    "var-without-eps": ("the third term divided by var where var + eps belongs; it matters once var is near eps",
                        f"{NUMERICS}#var-or-var-plus-eps"),
    "no-mean-path": ("the gradient without its path through the mean (the - mean(g) term)",
                     f"{CHAPTER}#slips-in-translation"),
    "no-variance-path": ("the gradient without its path through the variance (the - x_hat * mean(g * x_hat) term)",
                         f"{CHAPTER}#slips-in-translation"),
    "diagonal-only": ("only the diagonal of the Jacobian, g * rstd * (1 - 1/m - x_hat^2 / m): every entry of a "
                      "group moves the mean and variance that all the others use", f"{CHAPTER}#slips-in-translation"),
    "gamma-forgotten": ("dL/dx_hat taken as dy: the scale gamma is missing from dx", f"{CHAPTER}#slips-in-translation"),
    "gamma-outside-sums": ("gamma taken out of the sums, rstd * gamma * (dy - mean(dy) - x_hat * mean(dy * x_hat)): "
                           "batch norm's form, where a group has one gamma; along a layer norm's row gamma changes, "
                           "so g = dy * gamma belongs inside the sums", "02-chain-rule.html#three-paths"),
    "bessel": ("rstd recomputed from an unbiased variance (divided by m - 1, Bessel's correction, as torch.var does "
               "by default): the layer's variance divides by m, and the rstd passed in is that one",
               f"{CHAPTER}#slips-in-translation"),
    "half-arithmetic": ("every operation done in the 16-bit type, where the arithmetic belongs in float32 and only "
                        "the results are rounded to 16 bits", f"{NUMERICS}#half-precision"),
    "half-statistics": ("mean and rstd rounded to the 16-bit type before use, where they stay in float32: every "
                        "x_hat of a group moves by the same rounding error", f"{NUMERICS}#half-precision"),
    "half-sums": ("sums carried in the 16-bit type: long sums stall where float32 accumulation keeps every term",
                  f"{NUMERICS}#half-precision"),
}
BATCH_ONLY = {
    "count-from-wrong-axis": ("the means of dx divided by the number of channels, x.shape[1]: a channel's group "
                              "is its column, of x.shape[0] values", f"{CHAPTER}#batch-axes"),
    "reduced-over-dim-1": ("dx's two sums taken over dim=1, across the channels, as layer norm does: batch norm's "
                           "groups are the columns, so its sums run over dim=0", f"{CHAPTER}#batch-axes"),
}


def _float64_stats(x, eps, bessel: bool = False):
    """Layer norm's mean and rstd per row, in float64 (with Bessel's m - 1 when asked)."""
    mean = x.mean(dim=1)
    count = x.shape[1] - 1 if bessel else x.shape[1]
    return mean, 1 / torch.sqrt(((x - mean[:, None]) ** 2).sum(dim=1) / count + eps)


def _function_with(slip):
    def impl(x, gamma, beta, eps, dy):
        used = 1e-5 if slip == "default-eps" else eps
        mean, rstd = _float64_stats(x, used, bessel=slip == "bessel")
        y = (gamma * (x - mean[:, None]) * rstd[:, None] + beta).numpy()
        in_backward = None if slip in ("bessel", "default-eps") else slip
        return (y, *slipped_backward(dy, x, gamma, mean, rstd, "layer", in_backward, used))

    return impl


def _function_in_16_bits(x, gamma, beta, eps, dy):
    """LayerNormFunction with every operation in the inputs' 16-bit type, forward and backward, on the CPU."""
    half = sixteen_bit_type(x, dy)
    x, gamma, beta, dy = (t.to(half) for t in (x, gamma, beta, dy))
    mean = x.mean(dim=1)
    rstd = torch.rsqrt(((x - mean[:, None]) ** 2).mean(dim=1) + eps)
    y = gamma * ((x - mean[:, None]) * rstd[:, None]) + beta
    grads = computed_backward(dy, x, gamma, mean, rstd, "layer", "half-arithmetic")
    return tuple(t.double().numpy() for t in (y, *grads))


def _mistakes() -> list[Mistake]:
    found = []
    for function, norm in (("layernorm_backward", "layer"), ("batchnorm_backward", "batch")):
        messages = {**MESSAGES, **(BATCH_ONLY if norm == "batch" else {})}
        for slip, (message, section) in messages.items():
            impl = partial(slipped_backward, norm=norm, slip=slip)
            found.append(Mistake(function, slip, message, section, impl))
    for slip in ("var-without-eps", "no-mean-path", "no-variance-path", "diagonal-only", "gamma-forgotten",
                 "gamma-outside-sums", "bessel"):
        message, section = MESSAGES[slip]
        found.append(Mistake("LayerNormFunction", slip, message, section, _function_with(slip)))
    message, section = MESSAGES["half-arithmetic"]
    found.append(Mistake("LayerNormFunction", "half-arithmetic", message, section, _function_in_16_bits))
    found.append(Mistake("LayerNormFunction", "default-eps", *DEFAULT_EPS_SLIP, _function_with("default-eps")))
    # shows as autograd's error, not as a value
    found.append(Mistake("LayerNormFunction", "no-none-for-eps", "backward must return one value per input of "
                         "forward, in order: dx, dgamma, dbeta, and None for eps, which is not a tensor",
                         GRADIENT_COUNT_SECTION, impl=None, raises=GRADIENT_COUNT_ERRORS))
    return found


MISTAKES = _mistakes()

from .second_edition import extend; CASES, MISTAKES = extend("04-code-mapping", CASES, MISTAKES)  # noqa: E402,E702
