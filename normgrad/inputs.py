"""Input generators for the chapters and the test cases.

Every generator takes a `numpy.random.Generator`, so a case is reproducible
from its seed and unpredictable without it. Upstream gradients are random,
never all ones: a check with dy = 1 cannot see a missing path (chapter 2).

A *group* is what one mean and one variance are computed over: a row for layer
norm (reduce over the last axis), a column for batch norm (reduce over axis 0,
or over every axis but 1 for (N, C, *) inputs).
"""

from __future__ import annotations

import numpy as np

KINDS = ("normal", "tiny-variance", "large-offset", "constant")
"""
normal         group means around 0, standard deviations between 0.5 and 2
tiny-variance  standard deviations between 1e-4 and 1e-3: var is 1e-8 to 1e-6,
               far below eps = 1e-5, so `var` and `var + eps` give different answers
large-offset   group means of size `offset` (default 1e3) with unit spread: the
               mean dominates, which breaks E[x^2] - E[x]^2
constant       every value of the group equal (a multiple of 1/8, so that its
               mean is exact in any summation order): var = 0, rstd = 1/sqrt(eps)
"""


def group_axes(shape: tuple[int, ...], norm: str) -> tuple[int, ...]:
    """The axes one mean and variance reduce over: 'layer' (last) or 'batch' (all but 1)."""
    if norm == "layer":
        return (len(shape) - 1,)
    if norm == "batch":
        return tuple(a for a in range(len(shape)) if a != 1)
    raise ValueError(f"norm must be 'layer' or 'batch', not {norm!r}")


def sample(rng: np.random.Generator, shape, norm: str = "layer", kind: str = "normal",
           offset: float = 1e3) -> np.ndarray:
    """A float64 array of `shape` whose groups have the statistics `kind` asks for."""
    shape = tuple(shape)
    axes = group_axes(shape, norm)
    stat_shape = tuple(1 if a in axes else n for a, n in enumerate(shape))
    if kind == "normal":
        mean = rng.normal(0.0, 1.0, stat_shape)
        std = rng.uniform(0.5, 2.0, stat_shape)
    elif kind == "tiny-variance":
        mean = rng.normal(0.0, 1.0, stat_shape)
        std = 10.0 ** rng.uniform(-4.0, -3.0, stat_shape)
    elif kind == "large-offset":
        mean = offset * rng.uniform(1.0, 2.0, stat_shape) * rng.choice([-1.0, 1.0], stat_shape)
        std = rng.uniform(0.5, 2.0, stat_shape)
    elif kind == "constant":
        mean = np.round(8 * rng.normal(0.0, 1.0, stat_shape)) / 8
        std = np.zeros(stat_shape)
    else:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return mean + std * rng.standard_normal(shape)


def affine(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """gamma and beta of length n: gamma far from 1 (and of both signs), beta far from 0."""
    gamma = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
    beta = rng.normal(0.0, 1.0, n)
    return gamma, beta


def upstream(rng: np.random.Generator, shape) -> np.ndarray:
    """A random upstream gradient dL/dy."""
    return rng.standard_normal(tuple(shape))
