"""Trials for the PyTorch and Triton backward functions, shared by exercises 04, 05 and 06.

`layernorm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)` has the
same contract in exercise 04 (PyTorch) and 06 (Triton), and batch norm's in 04
and 05; so the trials are built here, once:

- inputs are drawn in float64, rounded to the dtype under test, and the oracle
  runs on the rounded values, so that the expected gradient is exact for
  exactly the inputs the student's code receives;
- `mean` and `rstd` are float32 for half-precision inputs and of x's dtype
  otherwise (COURSE_API.md), rounded from the oracle's float64 values;
- tensors are placed on the device under test, optionally as non-contiguous
  views (a transposed copy, transposed back);
- the tolerance follows from the dtype and the input's conditioning.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .. import inputs, reference, tolerances
from . import Trial
from .judging import arrays_problems

HALF = (torch.float16, torch.bfloat16)


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of mean and rstd for inputs of `dtype`."""
    return torch.float32 if dtype in HALF else dtype


def rounded(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `dtype` holding `a` rounded to it."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def strided(t: torch.Tensor, device: str, contiguous: bool) -> torch.Tensor:
    """`t` on `device`; when not `contiguous`, a view with the same values and transposed strides."""
    t = t.to(device)
    if contiguous or t.dim() < 2:
        return t
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def backward_trial(norm: str, shape, dtype: torch.dtype = torch.float32, kind: str = "normal",
                   contiguous: bool = True, eps: float = 1e-5, offset: float = 1e3, dy_offset: float = 0.0):
    """A trial maker for f(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta).

    norm='layer': x of shape (M, N), statistics per row, shape (M,).
    norm='batch': x of shape (N, C, *), statistics per channel over every axis but 1, shape (C,).
    `dy_offset` shifts the upstream gradient away from zero mean (and makes gamma
    positive, so that dy * gamma keeps the shift): its sums then grow with the
    number of terms, and a sum carried in 16 bits stalls (in bfloat16, 256 + 1
    rounds back to 256), which is how a reduction in half precision shows.
    """
    shape = tuple(shape)
    channels = shape[-1] if norm == "layer" else shape[1]
    oracle = reference.layernorm if norm == "layer" else reference.batchnorm

    def make(rng: np.random.Generator, device: str) -> Trial:
        x = rounded(inputs.sample(rng, shape, norm, kind, offset), dtype)
        gamma = inputs.affine(rng, channels)[0]
        gamma = rounded(np.abs(gamma) if dy_offset else gamma, dtype)
        dy = rounded(dy_offset + inputs.upstream(rng, shape), dtype)
        ref = oracle(x, gamma, torch.zeros_like(gamma), eps, dy=dy)
        mean = rounded(ref.mean, stats_dtype(dtype))
        rstd = rounded(ref.rstd, stats_dtype(dtype))
        args = (strided(dy, device, contiguous), strided(x, device, contiguous), gamma.to(device),
                mean.to(device), rstd.to(device))
        kappa = tolerances.conditioning(x.double().numpy(), inputs.group_axes(shape, norm), eps)
        judge = partial(arrays_problems, names=("dx", "dgamma", "dbeta"), dtypes=(dtype, dtype, dtype),
                        rtol=tolerances.rtol(dtype, kappa), device=device)
        return Trial(args=args, expected=(ref.dx, ref.dgamma, ref.dbeta), arg_names=("dy", "x", "gamma", "mean", "rstd"),
                     judge=judge)

    return make
