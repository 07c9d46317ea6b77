"""Tolerances that follow from the dtype, not from trial and error.

A result computed in a floating-point type with unit roundoff u, compared in
the infinity norm with the exact (float64) result, is off by a modest multiple
of u, plus what cancellation exposes:

    max|actual - expected|  <=  rtol * max|expected|,   rtol = (C + K * kappa) * u

- u is 2**-53 (float64), 2**-24 (float32), 2**-11 (float16), 2**-8 (bfloat16).
- C counts roundings along the reductions over a row or a column: 2**9, room
  for sums of tens of thousands of terms.
- kappa is how badly conditioned normalizing the input is: the largest value of
  |x| over sqrt(var + eps) in any group. Subtracting a mean of 1e3 from values
  spread by 1 loses three digits to cancellation in any correct program; for
  well-scaled inputs kappa is below 10.
- K counts the roundings of the one number that cancellation magnifies: the
  mean, whose error relative to the largest |x| is that of one sum. PyTorch's
  tree sums keep it under a unit, and a sum carried in
  order, term after term, grows it like the square root of the number of terms;
  chapter 4b measures both under one unit at 3000 terms. K = 2**5 leaves room
  for that, and no more: the one-pass variance E[x^2] - E[x]^2 is off by
  about u * kappa**2, and must fail wherever kappa is large.

16-bit inputs (float16, bfloat16) are computed in float32 and each output is
rounded once, when it is stored. So a correct 16-bit result is off by that one
rounding, u16 relative to the largest entry, plus float32's error: the
cancellation that kappa measures happens in float32, not in 16 bits.

    output_rtol(dtype, kappa)  =  u(dtype) + (C + K * kappa) * u32      (16-bit outputs)
                               =  (C + K * kappa) * u(dtype)            (float32, float64)

kappa belongs to each output: dbeta = sum(dy) never touches x, so its kappa is
1 (`backward_rtols`). A statistic rounded to 16 bits, a sum carried in 16 bits
or arithmetic done in 16 bits is off by u16 times kappa, or times the number of
terms, and fails; chapter 4b (chapters/04-numerics.md) measures both margins.

A case calls, per output, `output_rtol(dtype, kappa)` with kappa = `conditioning(x, axes, eps)`
for an output computed from x and 1 for one that is not (a sum of dy); a backward pass's three
come from `backward_rtols(dtype, kappa)`. `rtol(dtype, kappa)` is `output_rtol`. Code that
stores bfloat16 by dropping bits (Triton's interpreter) is judged with truncated=True.
"""

from __future__ import annotations

import numpy as np

UNIT_ROUNDOFF = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}

ROUNDINGS = 2.0**9  # C: roundings along the reductions, for the arithmetic type
CANCELLATION = 2.0**5  # K: roundings of the mean, which cancellation magnifies by kappa
HALF = ("float16", "bfloat16")


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


def arithmetic_dtype(dtype) -> str:
    """The type a correct program computes in for inputs of `dtype`: float32 for the 16-bit types."""
    name = dtype_name(dtype)
    return "float32" if name in HALF else name


def output_rtol(dtype, kappa: float = 1.0, truncated: bool = False) -> float:
    """The relative tolerance, in the infinity norm, of one output stored in `dtype`.

    The arithmetic type's roundings along the reductions and of the mean, (C + K * kappa) * u,
    and for a 16-bit output one more rounding, u16, when it is stored. `kappa` is this output's own
    conditioning (1 for a result that does not depend on x, such as dbeta = sum(dy)).
    `truncated`: the store drops bits instead of rounding to nearest, which costs up to a
    whole unit in the last place, 2 * u16 (Triton's interpreter stores bfloat16 so).
    """
    name = dtype_name(dtype)
    arithmetic = (ROUNDINGS + CANCELLATION * max(1.0, kappa)) * UNIT_ROUNDOFF[arithmetic_dtype(name)]
    return arithmetic + ((2.0 if truncated else 1.0) * UNIT_ROUNDOFF[name] if name in HALF else 0.0)


def backward_rtols(dtype, kappa: float = 1.0, truncated: bool = False) -> tuple[float, float, float]:
    """Tolerances of (dx, dgamma, dbeta) stored in `dtype`, kappa the input's conditioning.

    dx and dgamma go through x_hat, whose error is u32 * kappa; dbeta = sum(dy) does not.
    """
    return (output_rtol(dtype, kappa, truncated), output_rtol(dtype, kappa, truncated),
            output_rtol(dtype, 1.0, truncated))


def rtol(dtype, kappa: float = 1.0) -> float:
    """`output_rtol`: the tolerance of a result stored in `dtype` whose conditioning is kappa."""
    return output_rtol(dtype, kappa)
