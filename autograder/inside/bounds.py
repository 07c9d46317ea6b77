"""Triton's interpreter made as strict as the language: memory outside a kernel's tensors, and masked-off lanes.

Under the interpreter a kernel's pointers are plain addresses in this process. A load past the end of
a row (no mask, or `cols <= N` for `cols < N`) reads whatever lies there, often a neighbour's value or a
zero, and a test may pass by luck; a stray store corrupts the heap, and the process dies later,
somewhere else. And a masked load without `other=` gives its masked-off lanes zeros here, where the
language leaves them undefined: a kernel that sums them passes on the CPU for a reason the GPU never
promised (today's GPU back ends happen to zero them too; PyTorch's Inductor passes `other` anyway,
pytorch/pytorch#126535).

`install()` wraps the interpreter's loads, stores and atomics: a lane the mask lets through must lie in
one of the tensors the launch was given (a view's first to last element), or the kernel stops with
`OutOfBounds`, which names the tensor and how far off the lane was; and a masked load without `other`
reads NaN in its masked-off floating-point lanes, so that a sum over them shows (so does a block
pointer loaded with `boundary_check` and no `padding_option`, whose padding Triton also leaves
undefined). A correct kernel runs as before. The notebooks' tests, the grader's sandbox and the book's
chapter all run kernels so. (Whether `other` was given is read where `tl.load` is lowered, not from
the builder's argument: for a block of one element, or a scalar, the interpreter drops an `other`
whose value is zero before the builder sees it, since it reads a one-element tensor's truth from its
value.)

Two limits, chosen: a kernel may touch the elements of the views it was given, not the rest of their
storage (a halo read of `buf[1:9]` at index -1 stops: pass `buf`), and only the tensors its launch was
given (pointers loaded from memory, as a grouped GEMM's, stop). Neither is in the course's contracts.
And one not chosen: a lane that strays into another argument (the next row of x, or gamma lying just
past x) is inside a tensor; only its value shows, against the oracle, as the tests compare them.
"""

from __future__ import annotations

import numpy as np

MESSAGE = "outside every tensor the kernel was given"  # the start of every OutOfBounds message (cases match it)
_BFLOAT16_NAN = 0x7FC0  # the interpreter holds bfloat16 as its bits, in uint16
_launch: list | None = None  # (argument's name, first byte, end byte) of the running launch's tensors
_other_given = False  # whether the tl.load being lowered now was given `other`


class OutOfBounds(IndexError):
    """A kernel's load, store or atomic reached memory outside the tensors its launch was given."""


def install(interpreter) -> bool:
    """Make Triton's `interpreter` module strict (see the module's text); True if this call did."""
    builder, executor = interpreter.InterpreterBuilder, interpreter.GridExecutor
    # the class that lowers tl.load: Triton 3.7's interpreter uses one instance of it, 3.6's one per builtin
    semantic = getattr(interpreter, "TritonSemantic", None)
    if getattr(builder.create_masked_load, "strict", False) or not hasattr(executor, "_init_args_hst") or \
            not hasattr(semantic, "_load_legacy"):
        return False  # done, or an older Triton, whose launches or loads this does not know
    load, store = builder.create_masked_load, builder.create_masked_store
    rmw, cas = builder.create_atomic_rmw, builder.create_atomic_cas
    init_args, lower_load = executor._init_args_hst, semantic._load_legacy

    def init_args_hst(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        spans: list = []
        for name, arg in [*zip(self.arg_names, args_hst), *kwargs_hst.items()]:
            _note(str(name), arg, spans)
        global _launch
        _launch = spans
        return args_hst, kwargs_hst

    def load_legacy(self, ptr, mask, other, *rest, **options):  # tl.load of a pointer or a block of pointers
        global _other_given
        _other_given = other is not None
        try:
            return lower_load(self, ptr, mask, other, *rest, **options)
        finally:
            _other_given = False

    # The interpreter passes the options after the first three by position or by keyword (a descriptor's load)
    def create_masked_load(self, ptrs, mask, other, *rest, **options):
        _check("a load", ptrs, mask)
        if other is None and not _other_given and not np.all(mask.data):
            other = _poison(interpreter, ptrs)
        return load(self, ptrs, mask, other, *rest, **options)

    def create_masked_store(self, ptrs, value, mask, *rest, **options):
        _check("a store", ptrs, mask)
        return store(self, ptrs, value, mask, *rest, **options)

    def create_atomic_rmw(self, op, ptr, val, mask, *rest, **options):
        _check("an atomic operation", ptr, mask)
        return rmw(self, op, ptr, val, mask, *rest, **options)

    def create_atomic_cas(self, ptr, *rest, **options):
        _check("an atomic compare-and-swap", ptr, None)
        return cas(self, ptr, *rest, **options)

    for function in (create_masked_load, create_masked_store, create_atomic_rmw, create_atomic_cas):
        function.strict = True
        setattr(builder, function.__name__, function)
    executor._init_args_hst = init_args_hst
    load_legacy.strict = True
    semantic._load_legacy = load_legacy  # compiled kernels lower through it too: it only notes, then calls on
    return True


def _note(name: str, arg, spans: list) -> None:
    """Add the bytes each tensor in `arg` spans (a tuple's members, a descriptor's or a wrapper's base)."""
    if isinstance(arg, tuple):
        for i, member in enumerate(arg):
            _note(f"{name}[{i}]", member, spans)
        return
    while not hasattr(arg, "untyped_storage") and hasattr(arg, "base"):
        arg = arg.base
    if not hasattr(arg, "untyped_storage"):
        return
    start = arg.data_ptr()
    elements = 0 if arg.numel() == 0 else 1 + sum((n - 1) * s for n, s in zip(arg.shape, arg.stride()))
    spans.append((name, start, start + elements * arg.element_size()))


def _check(what: str, ptrs, mask) -> None:
    if _launch is None:  # every launch notes its tensors first: none noted is this module's state undone
        raise OutOfBounds(f"{what} {MESSAGE}: the tensors of this launch were not noted, the check was switched off")
    addresses = ptrs.data
    lanes = addresses.size
    if mask is not None:
        # as truth values: a scalar condition splatted to a block, `(row < M) & (cols < N)`, comes as int32 0s
        # and 1s from the interpreter, which would index lanes 0 and 1 (a correct kernel lost 4 to 9 points so)
        addresses = addresses[np.broadcast_to(np.asarray(mask.data, dtype=bool), addresses.shape)]
    if addresses.size == 0:
        return
    size = max(1, ptrs.get_element_ty().primitive_bitwidth // 8)
    inside = np.zeros(addresses.shape, dtype=bool)
    for _, start, end in _launch:
        inside |= (addresses >= start) & (addresses + size <= end)
    if not inside.all():
        raise OutOfBounds(_described(what, addresses[~inside], addresses.size, lanes, size))


def _described(what: str, outside, allowed: int, lanes: int, size: int) -> str:
    """How many lanes strayed, and where the first fell from the tensor it lies nearest (in its elements)."""
    first = int(outside[0])
    where, hint = "far from all of them", "check how its pointers are computed, and the strides"
    if _launch:
        name, start, end = min(_launch, key=lambda s: s[1] - first if first < s[1] else max(0, first + size - s[2]))
        before = first < start
        off = (start - first + size - 1) // size if before else (first + size - end + size - 1) // size
        if off < 1 << 20:
            side = "before the start" if before else "past the end"
            where = f"the first of them {off} element{'s' * (off > 1)} {side} of {name}, the tensor it lies nearest"
            hint = ("check the offsets (a negative one?) and the strides" if before else
                    "check the mask (`cols < N`, not `<=`) and the strides")
    of = f"of its {lanes} lanes" if allowed == lanes else f"of the {allowed} lanes its mask let through"
    return f"{what} {MESSAGE}: {outside.size} {of}, {where}; {hint}"


def _poison(interpreter, ptrs):
    """A masked load's masked-off lanes: NaN for a floating-point type, zero (as before) for others."""
    element = ptrs.get_element_ty()
    dtype = interpreter._get_np_dtype(element)
    if element.is_bf16():
        fill = _BFLOAT16_NAN
    elif np.issubdtype(dtype, np.floating):
        fill = np.nan
    else:
        fill = 0
    return interpreter.TensorHandle(np.full(ptrs.data.shape, fill, dtype=dtype), element)
