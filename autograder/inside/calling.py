"""How a test case calls a student's code: the same in a notebook and in the sandbox.

This module imports nothing of the course's (only the standard library, and
torch when a call needs it): the sandbox imports it from a copy, and
`normgrad.calling` is this module for the notebooks.

A *protocol* names the way a case drives the student's object:

call               fn(*args, **kwargs); the value it returns is the result
autograd_function  y = cls.apply(*args[:-1]); y.backward(args[-1]); the result
                   is (y, x.grad, gamma.grad, beta.grad) for the first three args;
                   cls must be a torch.autograd.Function and y its own output
shards             data-parallel batch norm (exercise 05): args are (grad_out, x, weight,
                   mean, invstd, sizes); the batch is cut along dim 0 into shards of
                   `sizes`, the student's `shard_sums` runs on each, the sums are added
                   here, then fn = `shard_grad_in` runs on each shard with the totals and
                   the whole batch's count; the result is the tuple of the shards' grad_in

While the student's code runs, autograd is switched off and its entry points
raise: the exercises are about computing gradients by hand, so reverse mode
(`backward`, `autograd.grad`), forward mode (`torch.autograd.forward_ad`: the
JVP of a normalization with tangent dy*gamma is its VJP, as d x_hat/dx of a row
is symmetric) and torch.func's transforms are all locked. Under the
`autograd_function` protocol the engine itself runs (it is what calls the
student's `backward`), but a backward that asks autograd for help still meets
the same locked doors.

Two locks. In a notebook, `no_autograd` replaces the entry points for the
duration of a test and puts them back. In the sandbox, `seal` locks them for
the rest of the process, before the student's first cell: the functions
themselves are rewritten to refuse (so a reference captured earlier, or found
again through `gc.get_objects()`, refuses too), and PyTorch's backward
operators (`aten::*backward*`) are replaced in its dispatcher, however they
are reached (`torch.ops.aten...` by assembled names included), and so is
`aten::_make_dual`, the one way to give a tensor a forward-mode tangent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings

PROTOCOLS = ("call", "autograd_function", "shards")

NO_AUTOGRAD = ("autograd is switched off while your code is tested: compute the gradient by hand "
               "(reverse mode, forward mode (forward_ad, dual tensors) and torch.func's transforms are all locked)")


# Forward-mode AD: a dual level, a dual tensor, its tangent. d x_hat/dx of a row is symmetric, so the JVP
# with tangent dy*gamma is the gradient the exercises ask for by hand.
_FORWARD_AD = (("autograd.forward_ad", "make_dual"), ("autograd.forward_ad", "unpack_dual"),
               ("autograd.forward_ad", "enter_dual_level"))
# torch.func's differentiating transforms (vmap alone differentiates nothing, and stays)
_FUNC = tuple(("func", name) for name in ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian",
                                          "linearize"))
_DOORS = (("autograd", "grad"), ("autograd", "backward"), ("Tensor", "backward"),
          ("autograd.functional", "jacobian"), ("autograd.functional", "vjp")) + _FORWARD_AD + _FUNC
# Rewritten in the sandbox: every Python way into the autograd engine that the course's answers never need.
_SEALED_DOORS = _DOORS + (("autograd.functional", "jvp"), ("autograd.functional", "hessian"),
                          ("autograd.functional", "hvp"), ("autograd.functional", "vhp"),
                          ("autograd.graph", "_engine_run_backward"),
                          ("_functorch.predispatch", "_make_dual"), ("_functorch.predispatch", "_unpack_dual"),
                          ("_functorch.predispatch", "_enter_dual_level"))
# Operators that give a tensor a forward-mode tangent: refused in the dispatcher, however they are reached
# (torch._make_dual, torch._VF, torch.ops.aten), at every key their work is done
_DUAL_OPERATORS = ("_make_dual", "_make_dual_copy")
_DUAL_KEYS = ("Autograd", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional", "ADInplaceOrView")
_ENGINE = []  # the autograd engine as it was before any lock: the autograd_function protocol runs it


def _refuse(*args, **kwargs):
    raise RuntimeError(NO_AUTOGRAD)


def _owner(torch, path: str):
    owner = torch
    for part in path.split("."):
        owner = getattr(owner, part)
    return owner


def _keep_engine(torch) -> None:
    if not _ENGINE:
        _ENGINE.append(torch.autograd.Variable._execution_engine)


def lock_autograd():
    """Make torch's autograd entry points raise; returns what it replaced (for `no_autograd` to restore)."""
    torch = sys.modules.get("torch")
    if torch is None:  # NumPy exercises: nothing to lock
        return []
    _keep_engine(torch)
    saved = []
    for path, name in _DOORS:
        try:
            owner = _owner(torch, path)
            saved.append((owner, name, getattr(owner, name)))
        except AttributeError:  # a door this version of torch does not have
            continue
    for owner, name, _ in saved:
        setattr(owner, name, _refuse)
    return saved


@contextlib.contextmanager
def no_autograd():
    """Autograd locked and grad mode off for the duration (the notebook's test cells use this)."""
    torch = sys.modules.get("torch")
    saved = [] if _SEALED else lock_autograd()
    try:
        with (torch.no_grad() if torch is not None else contextlib.nullcontext()):
            yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


# --- the sandbox's lock, for good ---------------------------------------------------------------

_SEALED = []


def _refusing_code(free: int):
    """The code of a function that raises NO_AUTOGRAD, with `free` free variables (a closure's size must match)."""
    names = [f"_v{i}" for i in range(free)]
    source = ("def _outer():\n" + "".join(f"    {n} = None\n" for n in names) +
              "    def refused(*args, **kwargs):\n" + (f"        {', '.join(names)}\n" if names else "") +
              f"        raise RuntimeError({NO_AUTOGRAD!r})\n    return refused\n")
    space: dict = {}
    exec(source, space)
    return space["_outer"]().__code__


def seal() -> None:
    """Lock autograd in this process for good (the sandbox does, before the student's first cell)."""
    torch = sys.modules.get("torch")
    if torch is None or _SEALED:
        return
    _keep_engine(torch)
    for path, name in _SEALED_DOORS:
        try:
            function = getattr(_owner(torch, path), name)
        except AttributeError:  # a door this version of torch does not have
            continue
        function = getattr(function, "__func__", function)
        if hasattr(function, "__code__"):
            function.__code__ = _refusing_code(len(function.__code__.co_freevars))
    _block_backward_operators(torch)
    if hasattr(torch._C, "_enter_dual_level"):  # a forward-mode level; without _make_dual it holds nothing anyway
        torch._C._enter_dual_level = _refuse
    torch.autograd.Variable._execution_engine = _LockedEngine(_ENGINE[0])
    _SEALED.append(True)


class _LockedEngine:
    """Stands in for the autograd engine's Python handle: everything but running a backward pass."""

    def __init__(self, engine):
        object.__setattr__(self, "_queue_callback", engine.queue_callback)

    def run_backward(self, *args, **kwargs):
        raise RuntimeError(NO_AUTOGRAD)

    def queue_callback(self, callback):
        return self._queue_callback(callback)


def _block_backward_operators(torch) -> None:
    """Replace the CPU and CUDA kernels of every `aten::*backward*` operator with one that refuses, and
    every kernel of `aten::_make_dual` (forward mode's dual tensors), wherever its work is done.

    The registration lives as long as its library object; that object is kept alive here with no
    reference a Python program could find (it is not tracked by the garbage collector), so no code of
    the student's can take the registration back.
    """
    library = torch._C._dispatch_library("IMPL", "aten", "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
        for qualified in torch._C._dispatch_get_all_op_names():
            namespace, _, name = qualified.partition("::")
            if namespace != "aten":
                continue
            if "backward" in name:
                keys = ("CPU", "CUDA")
            elif name.partition(".")[0] in _DUAL_OPERATORS:  # forward mode's dual tensors
                keys = _DUAL_KEYS
            else:
                continue
            for key in keys:
                if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key):
                    library.impl(name, key, _refuse, False)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(library))


def _run_backward(torch, y, dy) -> None:
    engine = _ENGINE[0] if _ENGINE else torch.autograd.Variable._execution_engine
    engine.run_backward((y,), (dy,), False, False, (), True, True)


def fit_triton_interpreter(force: bool = False) -> bool:
    """Let Triton's interpreter read a kernel's integer arguments under NumPy 2.5 and later; True if it did.

    The interpreter holds a scalar argument as a one-element array. Before Triton 3.7 it reads one as
    an index with int() on that array, which NumPy 2.5 refuses ("only 0-dimensional arrays can be
    converted to Python scalars"), so every kernel whose loop runs to an argument (range(0, N, BLOCK))
    fails. Triton 3.7 squeezes the array first; this does the same for any Triton, where NumPy refuses
    (or when `force`d). Call it before the kernels run: after triton is imported, or once
    TRITON_INTERPRET=1 is set (then it loads the interpreter itself, as a notebook's set-up cell needs).
    """
    if not force:
        import numpy as np

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NumPy 1.25 to 2.4 warn, and convert
            try:
                int(np.ones(1))
                return False
            except TypeError:
                pass
    interpreter = sys.modules.get("triton.runtime.interpreter")
    if interpreter is None and os.environ.get("TRITON_INTERPRET") == "1":
        try:
            import triton.runtime.interpreter as interpreter
        except ImportError:  # no Triton here: nothing to fit
            return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "fitted", False):
        return False

    # Its arguments: (tensor, scope) in Triton 3.6 and 3.7; (tensor) or (tensor, builder) in older ones.
    def patch_lang_tensor(tensor, *rest):
        original(tensor, *rest)
        index = lambda self: int(self.handle.data.reshape(()))  # noqa: E731
        scope = rest[-1] if rest and hasattr(rest[-1], "set_attr") else None
        scope.set_attr(tensor, "__index__", index) if scope else setattr(tensor, "__index__", index)

    patch_lang_tensor.fitted = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True


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
            _run_backward(torch, y, dy)
        grads = tuple(leaf.grad if isinstance(leaf, torch.Tensor) else None for leaf in leaves[:3])
        return (y.detach(), *grads)
    if protocol == "shards":
        return _shards(target, *args, **kwargs)
    raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")


def _shards(shard_grad_in, grad_out, x, weight, mean, invstd, sizes):
    """Batch norm's backward split across shards as data-parallel training does it (SyncBatchNorm).

    `shard_sums` is found beside `shard_grad_in`, in the namespace its code was defined in (the
    notebook's, or the sandbox's). Only the two vectors of C each shard returns are combined, and
    they are combined here, by addition in their own dtype, as an all-reduce would.
    """
    shard_sums = getattr(shard_grad_in, "__globals__", {}).get("shard_sums")
    if not callable(shard_sums):
        raise NameError("shard_grad_in is tested together with shard_sums: define both")
    import torch

    count = x.numel() // x.shape[1]
    cut = list(zip(torch.split(grad_out, list(sizes)), torch.split(x, list(sizes))))
    with no_autograd():
        totals = None
        for g, xs in cut:
            sums = shard_sums(g, xs, mean)
            if not (isinstance(sums, tuple) and len(sums) == 2 and all(type(s) is torch.Tensor for s in sums)):
                raise TypeError("shard_sums should return a tuple of two tensors (sum_dy, sum_dy_xmu)")
            if any(tuple(s.shape) != (x.shape[1],) for s in sums):
                raise ValueError(f"shard_sums should return two tensors of shape ({x.shape[1]},)")
            totals = sums if totals is None else tuple(t + s for t, s in zip(totals, sums))
        return tuple(shard_grad_in(g, xs, weight, mean, invstd, totals[0], totals[1], count) for g, xs in cut)

