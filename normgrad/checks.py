"""Checks of a returned value, each answering with the problems it found.

A check returns a list of sentences (empty when all is well) rather than
raising, so that one test can report everything wrong with an answer at once.
Messages say what was expected and where the answer departs from it, without
printing the expected values themselves: the hidden tests must not hand out
the answers.
"""

from __future__ import annotations

import numpy as np


def _is_tensor(value) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch():
    try:
        import torch
    except ImportError:  # the NumPy exercises never need it
        return None
    return torch


def describe(value) -> str:
    """A short description of a value's type, dtype and shape, for messages."""
    if type(value) is np.ndarray:
        return f"ndarray of {value.dtype}, shape {value.shape}"
    if _is_tensor(value):
        return f"tensor of {value.dtype}, shape {tuple(value.shape)} on {value.device}"
    return type(value).__name__


def array_problems(value, name: str, shape: tuple, dtype, device: str | None = None) -> list[str]:
    """Is `value` exactly the array the contract promises: its class, dtype, shape, device, finite?

    `dtype` is a NumPy dtype for NumPy results or a torch dtype for tensors; a
    subclass of either is refused, since it can override arithmetic and comparisons.
    """
    shape = tuple(shape)
    torch = _torch()
    wants_tensor = torch is not None and isinstance(dtype, torch.dtype)
    if wants_tensor:
        if type(value) is not torch.Tensor:
            return [f"{name} should be a torch.Tensor, got {describe(value)}"]
        problems = []
        if value.dtype != dtype:
            problems.append(f"{name} should have dtype {dtype}, got {value.dtype}")
        if device is not None and not on_device(value, device):
            problems.append(f"{name} should be on {device} like its inputs, got {value.device}")
        if value.is_meta:  # a shape and a dtype, and no values to read
            return problems or [f"{name} is a tensor on the meta device, which holds no values"]
        got_shape = tuple(value.shape)
    else:
        if type(value) is not np.ndarray:
            return [f"{name} should be a numpy.ndarray, got {describe(value)}"]
        problems = []
        if value.dtype != np.dtype(dtype):
            problems.append(f"{name} should have dtype {np.dtype(dtype)}, got {value.dtype}")
        got_shape = value.shape
    if got_shape != shape:
        problems.append(f"{name} should have shape {shape}, got {got_shape}")
        return problems
    values = as_float64(value)
    bad = ~np.isfinite(values)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        problems.append(f"{name} has {int(bad.sum())} non-finite value(s) (NaN or inf), the first at index {where}")
    return problems


def on_device(value, device) -> bool:
    """Is the tensor on `device`? 'cuda' means any GPU: a tensor's device is always indexed ('cuda:0'),
    and torch.device('cuda') != torch.device('cuda:0'), so devices are compared by type, and by
    index only when `device` names one."""
    want, got = _torch().device(device), value.device
    return got.type == want.type and (want.index is None or got.index == want.index)


def as_float64(value) -> np.ndarray:
    """The values of an array or tensor as a float64 NumPy array on the CPU."""
    if _is_tensor(value):
        return value.detach().to(device="cpu", dtype=_torch().float64).numpy()
    return np.asarray(value, dtype=np.float64)


def closeness_problems(actual, expected: np.ndarray, name: str, rtol: float, floor: float = 0.0,
                       floor_name: str = "its natural scale") -> list[str]:
    """Is max|actual - expected| within rtol * max(max|expected|, floor)? Says where it is not, and against which.

    Both must already have the same shape; `expected` is the float64 oracle.
    `floor` is the quantity's natural scale, for results that are all rounding
    noise (x_hat of a group whose values are all equal is 0 up to roundoff);
    `floor_name` says what it is, as the exercise's text does, for the message.
    """
    actual = as_float64(actual)
    expected = np.asarray(expected, dtype=np.float64)
    err = np.abs(actual - expected)
    largest = float(np.max(np.abs(expected), initial=0.0))
    scale = max(largest, floor)
    allowed = rtol * scale if scale > 0 else rtol
    err = np.where(np.isnan(err), np.inf, err)  # a NaN is as wrong as it gets
    worst = float(np.max(err, initial=0.0))
    if not worst <= allowed:
        index = tuple(int(i) for i in np.unravel_index(np.argmax(err), err.shape)) if err.size else ()
        off = int(np.sum(err > allowed))
        return [
            f"{name} is wrong: the largest error is {worst:.3g} at index {index} "
            f"({worst / scale if scale else worst:.3g} relative to "
            f"{'its largest entry' if largest >= floor else f'{floor_name}, {floor:.3g}'}; "
            f"the tolerance is {rtol:.3g}); {off} of {err.size} entries are off"
        ]
    return []


def unmodified_problems(before, after, name: str) -> list[str]:
    """Did a function leave its argument as it found it? (Arrays compared bit for bit.)"""
    if _is_tensor(before) or isinstance(before, np.ndarray):
        # shape and dtype first: an argument resized to millions of entries is not copied to float64 to see it
        if not hasattr(after, "shape") or tuple(after.shape) != tuple(before.shape) \
                or str(getattr(after, "dtype", None)) != str(before.dtype):
            return [f"the function modified its argument {name}; it must leave its inputs unchanged"]
        b, a = as_float64(before), as_float64(after)
        if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True):
            return [f"the function modified its argument {name}; it must leave its inputs unchanged"]
        return []
    if isinstance(before, dict):
        problems = []
        for key, value in before.items():
            other = after.get(key) if isinstance(after, dict) else None
            problems += unmodified_problems(value, other, f"{name}[{key!r}]")
        return problems
    if isinstance(before, (list, tuple)):
        problems = []
        for i, value in enumerate(before):
            other = after[i] if isinstance(after, (list, tuple)) and i < len(after) else None
            problems += unmodified_problems(value, other, f"{name}[{i}]")
        return problems
    if before != after:
        return [f"the function modified its argument {name}; it must leave its inputs unchanged"]
    return []

