"""How a test case calls a student's code: the same in a notebook and in the sandbox.

This module imports nothing of the course's (only the standard library, and
torch when a call needs it), because the autograder copies it into the
sandbox where the student's code runs, and nothing else of the course is
visible there.

A *protocol* names the way a case drives the student's object:

call               fn(*args, **kwargs); the value it returns is the result
autograd_function  y = cls.apply(*args[:-1]); y.backward(args[-1]); the result
                   is (y, x.grad, gamma.grad, beta.grad) for the first three args;
                   cls must be a torch.autograd.Function and y its own output

While the student's code runs, autograd is switched off and its entry points
raise: the exercises are about computing gradients by hand. Under the
`autograd_function` protocol the engine itself runs (it is what calls the
student's `backward`), but a backward that asks autograd for help still meets
the same locked doors.
"""

from __future__ import annotations

import contextlib
import sys

PROTOCOLS = ("call", "autograd_function")

NO_AUTOGRAD = "autograd is switched off while your code is tested: compute the gradient by hand"


_DOORS = (("autograd", "grad"), ("autograd", "backward"), ("Tensor", "backward"),
          ("autograd.functional", "jacobian"), ("autograd.functional", "vjp"))
_ORIGINAL_BACKWARD = []  # torch.autograd.backward as it was before any lock


def _refuse(*args, **kwargs):
    raise RuntimeError(NO_AUTOGRAD)


def _owner(torch, path: str):
    owner = torch
    for part in path.split("."):
        owner = getattr(owner, part)
    return owner


def lock_autograd():
    """Make torch's autograd entry points raise, for good; returns what it replaced.

    The sandbox calls this before the student's cells run, so that even a name
    imported at the top of a cell (`from torch.autograd import grad`) is locked.
    """
    torch = sys.modules.get("torch")
    if torch is None:  # NumPy exercises: nothing to lock
        return []
    if not _ORIGINAL_BACKWARD:
        _ORIGINAL_BACKWARD.append(torch.autograd.backward)
    saved = [(owner, name, getattr(owner, name)) for owner, name in
             ((_owner(torch, path), name) for path, name in _DOORS)]
    for owner, name, _ in saved:
        setattr(owner, name, _refuse)
    return saved


@contextlib.contextmanager
def no_autograd():
    """Autograd locked and grad mode off for the duration (the notebook's test cells use this)."""
    torch = sys.modules.get("torch")
    saved = lock_autograd()
    try:
        with (torch.no_grad() if torch is not None else contextlib.nullcontext()):
            yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def invoke(protocol: str, target, args: tuple, kwargs: dict):
    """Drive `target` (a function or an autograd.Function class) the way `protocol` says."""
    if protocol == "call":
        with no_autograd():
            return target(*args, **kwargs)
    if protocol == "autograd_function":
        import torch

        *inputs, dy = args
        name = getattr(target, "__name__", repr(target))
        if not (isinstance(target, type) and issubclass(target, torch.autograd.Function)):
            raise TypeError(f"{name} should be a subclass of torch.autograd.Function")
        leaves = [a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                  for a in inputs]
        backward = _ORIGINAL_BACKWARD[0] if _ORIGINAL_BACKWARD else torch.autograd.backward
        with no_autograd(), torch.enable_grad():
            y = target.apply(*leaves, **kwargs)
            if not isinstance(y, torch.Tensor):
                raise TypeError(f"{name}.apply should return a tensor, got {type(y).__name__}")
            # The gradient must come from the student's backward, not from autograd's own
            # derivatives of ops run outside a Function (an `apply` replaced by plain torch code).
            if not isinstance(y.grad_fn, target._backward_cls):
                source = type(y.grad_fn).__name__ if y.grad_fn is not None else "nowhere: it does not depend on x"
                raise TypeError(f"{name}.apply should return the output of {name}.forward, so that "
                                f"{name}.backward computes the gradient; its gradient would come from {source}")
            backward([y], [dy])
        grads = tuple(leaf.grad if isinstance(leaf, torch.Tensor) else None for leaf in leaves[:3])
        return (y.detach(), *grads)
    raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")
