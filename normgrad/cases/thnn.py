"""Assignment 05-thnn: batch norm's backward as THNN wrote it, for x of shape (N, C, *).

`batchnorm_backward_thnn(grad_out, x, weight, mean, invstd, train=True) -> (grad_in,
grad_weight, grad_bias)` reduces over every dimension but 1. With train=True, `mean` and
`invstd` are the batch's own statistics and the gradient is the training-mode one; with
train=False they are the running statistics (invstd = 1 / sqrt(running_var + eps)), constants
of the layer, and the gradient is the evaluation-mode one. `mean` and `invstd` are float32
for 16-bit inputs and of x's dtype otherwise; grad_in has x's dtype and device, grad_weight
and grad_bias weight's. The trials are the shared ones of `torch_trials`, under THNN's names.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .. import inputs
from . import Case, Mistake
from .torch_trials import SLIPS, THNN_NAMES, by_device, running_total, sixteen_bit_type, slipped_backward, statistics_trial

DEVICES = ("cpu", "cuda")
f64, f32, bf16, f16 = torch.float64, torch.float32, torch.bfloat16, torch.float16


def trial(shape, dtype=f64, kind="normal", contiguous=True, train=True, how="keyword", **options):
    """A trial maker; `how` passes the train flag as a keyword, positionally, or not at all (its default)."""
    if how == "default" and not train:
        raise ValueError("the default is train=True")
    passing = {"keyword": {"kwargs": {"train": train}}, "default": {},
               "positional": {"extra_args": (train,), "extra_names": ("train",)}}[how]
    return statistics_trial("batch", shape, dtype, kind, contiguous, running=not train, names=THNN_NAMES,
                            **passing, **options)


def _cases() -> list[Case]:
    c = partial(Case, "batchnorm_backward_thnn", devices=DEVICES)
    return [
        c("nchw", 1, False, "float64 images (4, 3, 5, 6), training mode", trial((4, 3, 5, 6), how="default")),
        c("eval", 1, False, "float32 (6, 4), evaluation mode (running statistics)", trial((6, 4), f32, train=False)),
        c("nc", 1, True, "float64 (37, 5), training mode", trial((37, 5), how="positional")),
        c("ncl", 1, True, "float32 sequences (9, 4, 13), training mode", trial((9, 4, 13), f32)),
        c("nchw-non-contiguous", 1, True, "float32 images (5, 3, 7, 9) as views (x transposed, dy's rows spaced apart)",
          trial((5, 3, 7, 9), f32, contiguous=False)),
        c("ncdhw", 1, True, "float64 volumes (3, 2, 4, 5, 3)", trial((3, 2, 4, 5, 3))),
        c("eval-nchw", 2, True, "float64 images (4, 3, 6, 5), evaluation mode", trial((4, 3, 6, 5), train=False)),
        c("eval-non-contiguous", 1, True, "float32 (6, 5, 7) as views (x transposed, dy's rows spaced apart), evaluation mode, train passed "
          "positionally", trial((6, 5, 7), f32, contiguous=False, train=False, how="positional")),
        c("tiny-variance", 2, True, "channels whose variance is far below eps",
          trial((9, 4, 3, 5), kind="tiny-variance")),
        c("constant", 1, True, "channels whose values are all equal (zero variance)",
          trial((6, 3, 4, 2), kind="constant")),
        c("large-offset", 1, True, "float32 channels with a mean of 1e3 to 2e3 and unit spread",
          trial((10, 3, 4, 5), f32, "large-offset")),
        # Means of 10 to 20 and an upstream gradient with a mean of 3: statistics rounded to 16
        # bits shift every x_hat of a channel alike, and grad_weight adds the shift up 3120 times
        # (at least 2.8 times the tolerance in 120 draws).
        c("bfloat16", 2, True, "bfloat16 images (20, 16, 12, 13) with means of 10 to 20",
          trial((20, 16, 12, 13), bf16, "large-offset", contiguous=False, offset=10.0, dy_offset=3.0)),
        c("float16", 2, True, "float16 images (20, 16, 12, 13) with means of 10 to 20",
          trial((20, 16, 12, 13), f16, "large-offset", offset=10.0, dy_offset=3.0)),
        c("bfloat16-eval", 1, True, "bfloat16 images (20, 16, 12, 13), evaluation mode",
          trial((20, 16, 12, 13), bf16, "large-offset", train=False, offset=10.0, dy_offset=3.0)),
        c("bfloat16-long-sums", 2, True, "bfloat16 images (50, 2, 10, 12): sums of 6000 terms",
          trial((50, 2, 10, 12), bf16, dy_offset=2.0), seconds=20.0),
        c("float16-long-sums", 2, True, "float16 images (50, 2, 10, 12): sums of 6000 terms",
          trial((50, 2, 10, 12), f16, dy_offset=2.0), seconds=20.0),
        # Tall and float16: grad_out of mean 1 summed over 3000 values a channel (30000 on a GPU), below 65504.
        c("float16-tall", 2, True, "float16 sequences (300, 8, 10) ((3000, 8, 10) on a GPU), grad_out of mean 1",
          by_device(trial((300, 8, 10), f16, dy_offset=1.0), trial((3000, 8, 10), f16, dy_offset=1.0)),
          seconds=30.0),
    ]


CASES = _cases()


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

CHAPTER = "05-thnn.html"
BOOK_04 = "04-code-mapping.html"
NUMERICS = "04-numerics.html"


def _thnn(grad_out, x, weight, mean, invstd, train=True, *, slip=None):
    """THNN's backward in float64 with one slip; arguments are float64 CPU tensors."""
    if slip in ("var-without-eps", "no-mean-path", "no-variance-path"):  # slips of the training formula
        if not train:
            raise ValueError("a slip of the training formula")
        return slipped_backward(grad_out, x, weight, mean, invstd, "batch", slip)
    if slip == "eval-with-training-formula":
        if train:
            raise ValueError("a slip of the evaluation mode")
        train = True
    dims = inputs.group_axes(tuple(x.shape), "batch")
    across = (1, -1) + (1,) * (x.dim() - 2)
    if slip == "bessel":
        if not train:
            raise ValueError("a slip of the training mode, which computes its statistics")
        n_all = int(np.prod([x.shape[d] for d in dims]))
        if n_all < 2:
            raise ValueError("Bessel's correction needs two values")
        centered = x - mean.reshape(across)
        invstd = (1 / torch.sqrt((centered**2).sum(dim=dims) / (n_all - 1) + 1e-5)).reshape(-1)
    if slip == "first-dim-only":
        if x.dim() == 2:
            raise ValueError("(N, C) is handled right by reducing over dim 0")
        dims = (0,)
    mean, invstd, w = mean.reshape(across), invstd.reshape(across), weight.reshape(across)
    if slip == "weight-forgotten":
        w = torch.ones_like(w)
    if slip == "half-statistics":
        half = sixteen_bit_type(x, grad_out)
        mean, invstd = mean.to(half).double(), invstd.to(half).double()

    def total(t):
        if slip == "half-sums":
            return running_total(t, dims, sixteen_bit_type(x, grad_out))
        return t.sum(dim=dims, keepdim=True)

    n = int(np.prod([x.shape[d] for d in dims]))
    if slip == "count-from-batch-axis":
        if x.dim() == 2:
            raise ValueError("for (N, C) the batch axis holds the whole count")
        n = x.shape[0]
    centered = x - mean
    sum_, dotp = total(grad_out), total(grad_out * centered)
    if train:
        grad_in = (grad_out - sum_ / n - centered * dotp * invstd**2 / n) * invstd * w
    else:
        grad_in = grad_out * invstd * w
    grad_weight = dotp if slip == "grad-weight-without-invstd" else dotp * invstd
    return grad_in.numpy(), grad_weight.squeeze(dims).numpy(), sum_.squeeze(dims).numpy()


MESSAGES = {
    "eval-with-training-formula": (
        "the training-mode formula applied in evaluation mode: there the running statistics are constants, "
        "so grad_in = grad_out * invstd * weight", f"{CHAPTER}#evaluation-mode"),
    "grad-weight-without-invstd": (
        "grad_weight = dotp without the factor invstd: dotp sums grad_out * (x - mean), "
        "and x_hat = (x - mean) * invstd",
        f"{CHAPTER}#sum-and-dotp"),
    "weight-forgotten": ("grad_in without the factor weight (w in THNN's formula)", f"{CHAPTER}#one-pass"),
    "first-dim-only": ("sums over dim 0 only: for (N, C, H, W) a channel's values run over every dim but 1",
                       f"{CHAPTER}#nchw"),
    "var-without-eps": ("the third term divided by var where var + eps belongs; it matters once var is near eps",
                        f"{NUMERICS}#var-or-var-plus-eps"),
    "no-mean-path": ("the gradient without its path through the mean (the - sum / n term)",
                     f"{BOOK_04}#slips-in-translation"),
    "no-variance-path": ("the gradient without its path through the variance (the - (x - mean) * k term)",
                         f"{BOOK_04}#slips-in-translation"),
    "half-statistics": ("mean and invstd rounded to the 16-bit type (or all the arithmetic done in it), where "
                        "they belong in float32", f"{NUMERICS}#half-precision"),
    "bessel": ("invstd recomputed from an unbiased variance (divided by n - 1, Bessel's correction, as torch.var "
               "does by default): batch norm's variance divides by n, and the invstd passed in is that one",
               f"{BOOK_04}#slips-in-translation"),
    "count-from-batch-axis": ("the means divided by the batch size N alone: a channel holds N * prod(*) values, "
                              "every one of them in its sums", f"{CHAPTER}#nchw"),
    "half-sums": ("sums carried in the 16-bit type, as THNN's accreal exists to prevent: long sums stall",
                  f"{CHAPTER}#sum-and-dotp"),
}
assert set(MESSAGES) - {"eval-with-training-formula", "grad-weight-without-invstd", "weight-forgotten",
                        "first-dim-only", "count-from-batch-axis"} <= set(SLIPS)

MISTAKES = [Mistake("batchnorm_backward_thnn", name, message, section, partial(_thnn, slip=name))
            for name, (message, section) in MESSAGES.items()]

from .second_edition import extend; CASES, MISTAKES = extend("05-thnn", CASES, MISTAKES)  # noqa: E402,E702
