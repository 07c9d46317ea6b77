"""Finite differences in float64: the check that needs no derivation at all.

Central differences contract the upstream gradient with the change of the
output, one input entry at a time:

    dL/dx_k  ~  sum(dy * (f(x + h e_k) - f(x - h e_k))) / (2 h)

The truncation error is O(h^2) and the rounding error O(u / h), balanced near
h = u**(1/3). Measured in chapter 3 (LayerNorm's dx on a 4 x 10 batch, against
float64 autograd, relative to the largest entry): in float64 (u = 2**-53) the
default h = 1e-5 is near the best step and leaves a few 1e-11; in float32
(u = 2**-24) the best step is near h = 1e-2 and leaves a few 1e-5, and h = 1e-5
leaves a few 1e-2: too coarse to tell a right gradient from one that divides
by var instead of var + eps. Chapter 3 asserts these numbers at every build.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dy: np.ndarray,
                       h: float = 1e-5) -> np.ndarray:
    """dL/dx for L = sum(dy * f(x)), by central differences, in the dtype of `x`."""
    x = np.array(x, copy=True)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        saved = flat[k]
        flat[k] = saved + h
        plus = f(x)
        flat[k] = saved - h
        minus = f(x)
        flat[k] = saved
        gflat[k] = np.sum(dy * (plus - minus)) / (2 * h)
    return grad


def relative_error(a, b) -> float:
    """max|a - b| / max(max|a|, max|b|): the infinity-norm relative error of two arrays."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0))
    return float(np.max(np.abs(a - b), initial=0.0) / scale) if scale > 0 else 0.0
