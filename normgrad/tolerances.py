"""Tolerances that follow from the dtype, not from trial and error.

A result computed in a floating-point type with unit roundoff u, compared in
the infinity norm with the exact (float64) result, is off by a modest multiple
of u times the problem's conditioning:

    max|actual - expected|  <=  rtol * max|expected|,   rtol = C(dtype) * u * kappa

- u is 2**-53 (float64), 2**-24 (float32), 2**-11 (float16), 2**-8 (bfloat16).
- C(dtype) counts roundings. For float32 and float64 the error builds up along
  the reductions over a row or a column, so C is 2**9: room for sums of tens of
  thousands of terms. For the 16-bit types the sums are carried in float32 and
  the one rounding that matters is the final cast of each output, so C is 4; a
  sum carried in 16 bits loses far more than that and is caught.
- kappa is how badly conditioned normalizing the input is: the largest value of
  |x| over sqrt(var + eps) in any group. Subtracting a mean of 1e3 from values
  spread by 1 loses three digits to cancellation in any correct program, so
  the tolerance grows with it; for well-scaled inputs kappa is below 10.

Chapter 4 shows the table these give and measures correct code against it.
"""

from __future__ import annotations

import numpy as np

UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}

ROUNDINGS = {"float64": 2.0**9, "float32": 2.0**9, "float16": 4.0, "bfloat16": 4.0}


def dtype_name(dtype) -> str:
    """'float32' for np.float32, np.dtype('float32'), torch.float32 or 'float32'."""
    name = str(dtype).removeprefix("torch.")
    if name not in UNIT_ROUNDOFF:
        name = np.dtype(dtype).name
    if name not in UNIT_ROUNDOFF:
        raise ValueError(f"no tolerance for dtype {dtype}")
    return name


def conditioning(x, axes, eps: float = 1e-5) -> float:
    """kappa: max over groups of max|x| / sqrt(var + eps), at least 1 (x as float64)."""
    x = np.asarray(x, dtype=np.float64)
    scale = np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return float(max(1.0, np.max(np.abs(x) / scale, initial=0.0)))


def rtol(dtype, kappa: float = 1.0) -> float:
    """The relative tolerance, in the infinity norm, for results computed in `dtype`."""
    name = dtype_name(dtype)
    return ROUNDINGS[name] * UNIT_ROUNDOFF[name] * max(1.0, kappa)
