"""Exercise 04, added in the second edition: `BatchNormFunction`, source 002's `MyBatchNorm` done right.

`BatchNormFunction.apply(x, weight, bias, eps)`: x of shape (N, C, *), training-mode statistics
over every dimension but 1 (biased variance), `weight` and `bias` of shape (C,) or both None.
The protocol "autograd_function" applies it, backpropagates a random dy through its output and
returns (y, x.grad, weight.grad, bias.grad); all are compared with float64 autograd through
torch's own batch norm (`reference.batchnorm`), and the gradients of absent parameters must be
absent.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .. import inputs, reference, tolerances
from . import Case, Mistake, Trial
from .judging import arrays_problems
from .torch_trials import (DEFAULT_EPS_SLIP, GRADIENT_COUNT_ERRORS, GRADIENT_COUNT_SECTION, natural_scales, rounded,
                           strided)

FUNCTION = "BatchNormFunction"
DEVICES = ("cpu", "cuda")
f64, f32, bf16, f16 = torch.float64, torch.float32, torch.bfloat16, torch.float16
NAMES = ("y", "dx", "dweight", "dbias")


def judge(returned, expected, *, dtype, rtol, device, floors):
    """(y, dx, dweight, dbias): dweight and dbias are None exactly when the layer has no affine transform."""
    if not isinstance(returned, (tuple, list)) or len(returned) != 4:
        return [f"the test should get back (y, x.grad, weight.grad, bias.grad), got {type(returned).__name__}"]
    if expected[2] is None:
        problems = [f"{name} should be None: the layer was built without weight and bias, got "
                    f"{type(value).__name__}" for name, value in zip(NAMES[2:], returned[2:]) if value is not None]
        return arrays_problems(returned[:2], expected[:2], NAMES[:2], (dtype,) * 2, rtol, device, floors[:2]) + problems
    missing = [f"{name} is None: your backward gave no gradient to a parameter that was passed"
               for name, value in zip(NAMES[2:], returned[2:]) if value is None]
    if missing:
        return missing + arrays_problems(returned[:2], expected[:2], NAMES[:2], (dtype,) * 2, rtol, device, floors[:2])
    return arrays_problems(returned, expected, NAMES, (dtype,) * 4, rtol, device, floors)


def trial(shape, dtype: torch.dtype = f64, affine: bool = True, kind: str = "normal", contiguous: bool = True,
          eps: float = 1e-5, offset: float = 1e3, dy_offset: float = 0.0):
    """A trial maker: apply(x, weight, bias, eps) on x of `shape` (N, C, *), then backward(dy)."""
    shape = tuple(shape)
    channels = shape[1]

    def make(rng: np.random.Generator, device: str) -> Trial:
        x = rounded(inputs.sample(rng, shape, "batch", kind, offset), dtype)
        weight, bias = inputs.affine(rng, channels)
        weight = np.abs(weight) if dy_offset else weight
        weight, bias = rounded(weight, dtype), rounded(bias, dtype)
        dy = rounded(dy_offset + inputs.upstream(rng, shape), dtype)
        if affine:
            ref = reference.batchnorm(x, weight, bias, eps, dy=dy)
            expected = (ref.y, ref.dx, ref.dgamma, ref.dbeta)
        else:
            ref = reference.batchnorm(x, torch.ones(channels), torch.zeros(channels), eps, dy=dy)
            expected = (ref.y, ref.dx, None, None)
        kappa = tolerances.conditioning(x.double().numpy(), inputs.group_axes(shape, "batch"), eps)
        _, dgamma_floor, _ = natural_scales(dy, "batch")
        check = partial(judge, dtype=dtype, rtol=tolerances.rtol(dtype, kappa), device=device,
                        floors=(0.0, 0.0, dgamma_floor, 0.0))
        w, b = (weight.to(device), bias.to(device)) if affine else (None, None)
        args = (strided(x, device, contiguous), w, b, eps, strided(dy, device, contiguous, spaced=True))
        return Trial(args=args, expected=expected, arg_names=("x", "weight", "bias", "eps", "dy"), judge=check,
                     protocol="autograd_function")

    return make


_c = partial(Case, FUNCTION, devices=DEVICES)
CASES = [
    _c("nchw", 2, False, "float64 images (4, 3, 5, 6) with weight and bias", trial((4, 3, 5, 6))),
    _c("no-affine", 2, False, "float32 (6, 4, 7) without weight and bias (both None)",
       trial((6, 4, 7), f32, affine=False)),
    _c("nc", 2, True, "float64 (37, 5)", trial((37, 5))),
    _c("ncdhw-no-affine", 2, True, "float64 volumes (3, 2, 4, 5, 3), no weight and bias",
       trial((3, 2, 4, 5, 3), affine=False)),
    _c("non-contiguous", 3, True, "float32 images (5, 3, 7, 9) as views (x transposed, dy's rows spaced apart)",
       trial((5, 3, 7, 9), f32, contiguous=False)),
    _c("tiny-variance", 3, True, "channels whose variance is far below eps", trial((9, 4, 3, 5), kind="tiny-variance")),
    _c("eps", 2, True, "eps = 1e-2 passed to apply", trial((8, 3, 5), kind="tiny-variance", eps=1e-2)),
    _c("large-offset", 2, True, "float32 channels with a mean of 1e3 to 2e3 and unit spread",
       trial((10, 3, 4, 5), f32, kind="large-offset")),
    _c("bfloat16", 2, True, "bfloat16 images (8, 6, 9, 11), means of 10 to 20",
       trial((8, 6, 9, 11), bf16, kind="large-offset", offset=10.0, dy_offset=3.0)),
    _c("float16-no-affine", 2, True, "float16 images (8, 5, 10, 9), no weight and bias",
       trial((8, 5, 10, 9), f16, affine=False)),
    _c("float16-long-sums", 2, True, "float16 (50, 2, 10, 12): sums of 6000 terms",
       trial((50, 2, 10, 12), f16, dy_offset=2.0), seconds=20.0),
]


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

def _slipped(x, weight, bias, eps, dy, slip):
    """Forward and hand-written backward in float64 with one slip: (y, dx, dweight, dbias)."""
    dims = inputs.group_axes(tuple(x.shape), "batch")
    if slip == "wrong-dimensions":
        if x.dim() == 2:
            raise ValueError("(N, C) is reduced right over dim 0")
        dims = (0,)
    m = int(np.prod([x.shape[d] for d in dims]))
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (m - 1 if slip == "unbiased-variance" else m)
    rstd = 1 / torch.sqrt(var + (1e-5 if slip == "default-eps" else eps))
    x_hat = (x - mean) * rstd
    across = (1, -1) + (1,) * (x.dim() - 2)
    w = (weight if weight is not None else torch.ones(x.shape[1], dtype=x.dtype)).reshape(across)
    y = w * x_hat + (bias.reshape(across) if bias is not None else 0.0)
    g = dy * w
    if slip == "diagonal-only":  # source 002's "simplified" backward: the Jacobian's diagonal, J_ii g_i
        dx = rstd * g * (1 - 1 / m - x_hat**2 / m)
    else:
        n = x.shape[0] if slip == "batch-size-count" else m  # the number the sums over a channel divide by
        dx = rstd * (g - g.sum(dim=dims, keepdim=True) / n - x_hat * (g * x_hat).sum(dim=dims, keepdim=True) / n)
    params = inputs.group_axes(tuple(x.shape), "batch")
    if weight is None:
        return y.numpy(), dx.numpy(), None, None
    return y.numpy(), dx.numpy(), (dy * x_hat).sum(dim=params).numpy(), dy.sum(dim=params).numpy()


MESSAGES = {
    "wrong-dimensions": ("statistics over dimension 0 only: for (N, C, H, W) a channel's values run over every "
                         "dimension but 1", "05-thnn.html#nchw"),
    "unbiased-variance": ("the unbiased variance (divided by n - 1) used and saved: training-mode batch norm "
                          "divides by n", "01-forward.html#the-variance-is-the-biased-one"),
    "default-eps": DEFAULT_EPS_SLIP,
    "diagonal-only": ("source 002's 'simplified' backward, which keeps only the Jacobian's diagonal, "
                      "rstd * g_i * (1 - 1/m - x_hat_i**2 / m): every x_j of a channel moves its mean and variance, "
                      "so dx_i sums over all of them", "02-chain-rule.html#slip-diagonal-only"),
    "batch-size-count": ("dx's sums over a channel divided by the batch size N: a channel's mean and variance run "
                         "over all N * H * W of its values, and so do the sums of its gradient", "05-thnn.html#nchw"),
}
NONE_GRADIENTS = (
    "backward mishandles the absent weight and bias: it must return one value per input of forward, "
    "None for each input that was None (and for eps)", GRADIENT_COUNT_SECTION)

MISTAKES = [Mistake(FUNCTION, name, message, section, partial(_slipped, slip=name))
            for name, (message, section) in MESSAGES.items()] + [
    # Shows as an error, not as a value: autograd refuses a gradient for an input that was None, and
    # a backward that returns fewer values than forward has inputs; `.to` on None raises.
    Mistake(FUNCTION, "none-gradients", *NONE_GRADIENTS, impl=None,
            raises=GRADIENT_COUNT_ERRORS + r"|'NoneType' object has no attribute|"
                                           r"unsupported operand type\(s\) for .*NoneType"),
]
