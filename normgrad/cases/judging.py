"""Judges shared by the assignments: is a returned value the structure the contract promises,
with the right dtypes, shapes and devices, and close enough to the expected values?"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..checks import array_problems, closeness_problems

# dx's scale where the gradient nearly cancels (chapter 2's exercises), named in the messages as the notebooks do
DIRECT_PATH = "the direct path's size, max|rstd * dy * gamma|"


def arrays_problems(returned, expected: Sequence, names: Sequence[str], dtypes: Sequence,
                    rtol: float | Sequence[float], device: str | None = None,
                    floors: Sequence[float] | None = None, floor_names: Sequence[str] | None = None) -> list[str]:
    """`returned` must be a tuple of len(names) arrays (or tensors), each close to its expected one.

    Every entry is checked, so one answer reports all that is wrong with it. `rtol` is one
    tolerance for all, or one per entry (`tolerances.backward_rtols`). `floors`, one per
    entry, are the natural scales of results that cancellation can leave near zero (see
    `closeness_problems`), and `floor_names` what each is, as the exercise's text says.
    """
    what = "(" + ", ".join(names) + ")"
    if not isinstance(returned, (tuple, list)):
        return [f"should return a tuple {what}, got {type(returned).__name__}"]
    if len(returned) != len(names):
        return [f"should return {len(names)} values {what}, got {len(returned)}"]
    problems = []
    rtols = [rtol] * len(names) if np.isscalar(rtol) else list(rtol)
    floors, floor_names = floors or [0.0] * len(names), floor_names or ["its natural scale"] * len(names)
    for value, want, name, dtype, tol, floor, floor_name in zip(returned, expected, names, dtypes, rtols, floors,
                                                                floor_names):
        problems += array_problems(value, name, np.shape(want), dtype, device) or \
            closeness_problems(value, want, name, tol, floor, floor_name)
    return problems


def value_problems(returned, expected, name: str, dtype, rtol: float, device: str | None = None, floor: float = 0.0,
                   floor_name: str = "its natural scale") -> list[str]:
    """One array (or tensor): class, dtype, shape, device, finiteness, then closeness (with a floor: see
    `arrays_problems`)."""
    return array_problems(returned, name, np.shape(expected), dtype, device) or \
        closeness_problems(returned, expected, name, rtol, floor, floor_name)


def mean_floor(x) -> float:
    """The natural scale of a group mean's rounding: the largest |x|. Held to its own size, a correct mean of one
    row that nearly cancels (1.3e-3 in CI, which cost an honest notebook a point; 4e-4 to 8e-4 beside values up
    to 3 at 3 seeds in 4000, tests/test_01_forward.py) sat up to 2.1 tolerances from the float64 oracle."""
    return float(np.max(np.abs(np.asarray(x, dtype=np.float64)), initial=0.0))
