"""How a test case calls a student's code: the same in a notebook and in the sandbox.

This module imports nothing of the course's (only the standard library, and
torch when a call needs it): the sandbox imports it from a copy, and
`normgrad.calling` is this module for the notebooks.

A *protocol* names the way a case drives the student's object:

call               fn(*args, **kwargs); the value it returns is the result
autograd_function  y = cls.apply(*args[:-1]); y.backward(args[-1]); the result
                   is (y, x.grad, gamma.grad, beta.grad) for the first three args;
                   cls must be a torch.autograd.Function and y its own output.
                   The backward step is done here, as the engine would do it for
                   the one node between y and the leaves (cls.backward called on
                   that node, grad mode off, each gradient checked and cast as
                   the engine checks it), so the engine itself never runs
saved_for_backward y = cls.apply(*args) as above, without a backward step; the result is
                   the bytes its node keeps for the backward besides the inputs'
                   own (`kept_bytes`)
kernels            as call, for a Triton exercise: while fn runs, torch may only allocate,
                   fill with a constant, view, copy and convert dtypes (`kernel_work`); the
                   arithmetic is the Triton kernels' (triton's own code, its launcher, is free)
shards             data-parallel batch norm (exercise 05): args are (grad_out, x, weight,
                   mean, invstd, sizes); the batch is cut along dim 0 into shards of
                   `sizes`, the student's `shard_sums` runs on each, the sums are added
                   here, then fn = `shard_grad_in` runs on each shard with the totals and
                   the whole batch's count; the result is the tuple of the shards' grad_in

While the student's code runs, autograd is switched off and its entry points
raise: the exercises are about computing gradients by hand, so reverse mode
(`backward`, `autograd.grad`), forward mode (`torch.autograd.forward_ad`: the
JVP of a normalization with tangent dy*gamma is its VJP, as d x_hat/dx of a row
is symmetric) and torch.func's transforms are all locked. The
`autograd_function` protocol needs no engine either: it calls the student's
`backward` itself, and a backward that asks autograd for help meets the same
locked doors.

Two locks. In a notebook, `no_autograd` replaces the entry points for the
duration of a test and puts them back. In the sandbox, `seal` locks them for
the rest of the process, before the student's first cell: the functions
themselves are rewritten to refuse (so a reference captured earlier, or found
again through `gc.get_objects()`, refuses too), and PyTorch's backward
operators (`aten::*backward*`) are replaced in its dispatcher, however they
are reached (`torch.ops.aten...` by assembled names included), and so is
`aten::_make_dual`, the one way to give a tensor a forward-mode tangent.

The engine's derivatives of elementary ops (mean, sub, div, sqrt, mul) call no
backward operator, so the seal also shuts what runs them, in the C types
themselves, for every object of those types however it is found: the engine's
`run_backward` (any `torch._C._ImperativeEngine`, the one torch keeps or a new
one), calling a graph's node (`y.grad_fn(dy)`: each of torch's C++ node
types), the distributed engine's `backward` and TorchScript's symbolic
`_jit_differentiate`. Below every door, the engine's C++ entry hands a run to
a compiled-autograd compiler when one is set: the seal (and `no_autograd`, for
its duration) sets one that refuses, which stops the C++ callers no Python
door guards (TorchScript's own `aten::grad` and `aten::backward`), and the
setter then keeps that one whatever it is asked. Nothing in the process keeps a way back:
no original engine is set aside, since nothing here needs one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings

if __package__:  # autograder.inside, or normgrad in the course's wheel
    from . import bounds
else:  # the sandbox runs its files as top-level modules
    import bounds

PROTOCOLS = ("call", "autograd_function", "saved_for_backward", "shards", "kernels")

NO_AUTOGRAD = ("autograd is switched off while your code is tested: compute the gradient by hand "
               "(reverse mode, forward mode (forward_ad, dual tensors) and torch.func's transforms are all locked)")


# Forward-mode AD: a dual level, a dual tensor, its tangent. d x_hat/dx of a row is symmetric, so the JVP
# with tangent dy*gamma is the gradient the exercises ask for by hand. unpack_dual stays: printing any
# tensor calls it, and with no level to enter and no dual to make, it only ever finds no tangent.
_FORWARD_AD = (("autograd.forward_ad", "make_dual"), ("autograd.forward_ad", "enter_dual_level"))
# torch.func's differentiating transforms (vmap alone differentiates nothing, and stays)
_FUNC = tuple(("func", name) for name in ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian",
                                          "linearize"))
_DOORS = (("autograd", "grad"), ("autograd", "backward"), ("Tensor", "backward"),
          ("autograd.functional", "jacobian"), ("autograd.functional", "vjp")) + _FORWARD_AD + _FUNC
# Rewritten in the sandbox: every Python way into the autograd engine that the course's answers never need.
_SEALED_DOORS = _DOORS + (("autograd.functional", "jvp"), ("autograd.functional", "hessian"),
                          ("autograd.functional", "hvp"), ("autograd.functional", "vhp"),
                          ("autograd.graph", "_engine_run_backward"),
                          ("_functorch.predispatch", "_make_dual"), ("_functorch.predispatch", "_enter_dual_level"))
# Operators that give a tensor a forward-mode tangent: refused in the dispatcher, however they are reached
# (torch._make_dual, torch._VF, torch.ops.aten), at every key their work is done
_DUAL_OPERATORS = ("_make_dual", "_make_dual_copy")
_DUAL_KEYS = ("Autograd", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional", "ADInplaceOrView")
# What runs autograd's reverse mode, refused in the C types themselves, whatever object it is reached through:
# the engine's handle (its type: a new `_ImperativeEngine()` runs the same engine) and a graph's nodes, whose
# derivatives of elementary ops call no backward operator (`y.grad_fn(dy)` walked by hand)
_ENGINE_METHODS = ("run_backward",)
# C functions that differentiate outside the engine: the distributed engine, TorchScript's symbolic autodiff;
# and the one that sets the engine's compiled-autograd compiler (seal() sets one that refuses, and keeps it)
_COMPILER_SETTER = ("_C._dynamo.compiled_autograd", "set_autograd_compiler")
_C_DOORS = (("_C._distributed_autograd", "backward"), ("_C", "_jit_differentiate"))


def _refuse(*args, **kwargs):
    raise RuntimeError(NO_AUTOGRAD)


def _owner(torch, path: str):
    owner = torch
    for part in path.split("."):
        owner = getattr(owner, part)
    return owner


def loaded_torch():
    """torch, where this process imported it; None in a NumPy exercise, whose `torch` is a stand-in without a
    file (the sandbox's `_NoTorch`). wire.py, which does not import this module, asks the same way."""
    torch = sys.modules.get("torch")
    return torch if getattr(torch, "__file__", None) else None


def lock_autograd():
    """Make torch's autograd entry points raise; returns what it replaced (for `no_autograd` to restore)."""
    torch = loaded_torch()
    if torch is None:  # NumPy exercises: nothing to lock
        return []
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
    torch = loaded_torch()
    saved = [] if _SEALED else lock_autograd()
    prior = None if _SEALED or torch is None else _hand_engine_to(torch, _refuse)
    try:
        with (torch.no_grad() if torch is not None else contextlib.nullcontext()):
            yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
        if prior is not None:
            _hand_engine_to(torch, *prior)


def _hand_engine_to(torch, compiler, dynamic: bool = False):
    """Have autograd's engine hand every run to `compiler` (None: run it itself); returns what it had before, as
    (compiler, dynamic), or None where this torch has no such hook.

    The engine's C++ `execute` gives a run to the compiled-autograd compiler when one is set, before it does any
    work, whoever called it: Python, or C++ that no Python door guards (TorchScript's own `aten::grad` and
    `aten::backward`, reached by `torch.jit.CompilationUnit` or `torch.ops.aten.grad`). A compiler that refuses
    refuses them all."""
    try:
        setter = _owner(torch, _COMPILER_SETTER[0])
        prior = getattr(setter, _COMPILER_SETTER[1])(compiler, dynamic)
    except (AttributeError, TypeError):  # a torch without the hook, or whose setter takes other arguments
        return None
    return tuple(prior) if isinstance(prior, tuple) else (prior, False)


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
    torch = loaded_torch()
    if torch is None or _SEALED:
        return
    for path, name in _SEALED_DOORS:
        try:
            function = getattr(_owner(torch, path), name)
        except AttributeError:  # a door this version of torch does not have
            continue
        function = getattr(function, "__func__", function)
        if hasattr(function, "__code__"):
            function.__code__ = _refusing_code(len(function.__code__.co_freevars))
    _block_backward_operators(torch)
    _seal_decompositions(torch)
    _genuine_code()  # torch's and triton's folders and code, before the student's code can change them
    if hasattr(torch._C, "_enter_dual_level"):  # a forward-mode level; without _make_dual it holds nothing anyway
        torch._C._enter_dual_level = _refuse
    _seal_engine(torch)
    _SEALED.append(True)


def _seal_engine(torch) -> None:
    """Refuse every way to run the engine's reverse mode, in the C types (see the module's docstring).

    The engine's handle stays where torch keeps it (`Variable._execution_engine`: `queue_callback` and
    the rest still work), but its type's `run_backward` refuses, for it and for any new handle; so does
    calling any of torch's C++ graph nodes. The original C functions are not Python objects: once the
    types' entries are replaced, nothing in the process can reach them again.
    """
    engine_type = type(torch.autograd.Variable._execution_engine)
    for name in _ENGINE_METHODS:
        _set_on_type(engine_type, name, _refuse)
    for node_type in _node_types(torch):
        _set_on_type(node_type, "__call__", _refuse)
    for door in _C_DOORS:
        _replace_everywhere(torch, door, _refuse)
    if _hand_engine_to(torch, _refuse) is not None:
        _replace_everywhere(torch, _COMPILER_SETTER, _compiler_kept)


def _replace_everywhere(torch, door: tuple[str, str], value) -> None:
    """Put `value` wherever a C function of torch's is held by name: its C module and every module that imported
    it. Nothing else refers to it, so nothing in the process can reach the original again."""
    path, name = door
    try:
        original = getattr(_owner(torch, path), name)
    except AttributeError:  # not built into this torch (no distributed, no TorchScript)
        return
    for module in list(sys.modules.values()):
        space = getattr(module, "__dict__", None)
        for key, value_there in list(space.items()) if isinstance(space, dict) else ():
            if value_there is original:
                space[key] = value


def _compiler_kept(*args, **kwargs):
    """The engine's compiler setter once sealed: the refusing compiler stays, whatever is asked. torch's own
    contexts that set one and put back the one before still run (aot_autograd's, around a compiled forward),
    and what they are told was there before is none."""
    return None, False


def _node_types(torch) -> list:
    """torch's C++ graph-node types: one per node (MulBackward0, AccumulateGrad, ...) in torch._C._functions,
    and "CppFunction", shared by the nodes without their own (TorchScript's differentiable graphs), which
    torch makes the first time it needs it: a scripted product, run until autodiff gives it a node of its own."""
    functions = getattr(torch._C, "_functions", None)
    types = [t for t in vars(functions).values() if isinstance(t, type) and "__call__" in vars(t)] if functions else []
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated: nothing for the student's output
            warnings.simplefilter("ignore")
            scripted = torch.jit.CompilationUnit("def f(a):\n    return a * a * a\n")
        a = torch.ones(1, requires_grad=True)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(4):
                node_type = type(scripted.f(a).grad_fn)
                if node_type not in types and "__call__" in vars(node_type):
                    types.append(node_type)
                    break
    except Exception:  # no TorchScript here, or a torch whose executor makes no such node: nothing to find
        pass
    return types


def _type_flags(cls) -> ctypes.c_ulong:
    """The C `tp_flags` of a type, found where it must lie and checked against `__flags__`."""
    word = ctypes.sizeof(ctypes.c_void_p)
    for index in [21] + list(range(64)):  # 21 words in, in every CPython from 3.8 to 3.13
        flags = ctypes.c_ulong.from_address(id(cls) + index * word)
        if flags.value == cls.__flags__:
            return flags
    raise RuntimeError(f"cannot find the flags of {cls!r}")


def _set_on_type(cls, name: str, value) -> None:
    """setattr on a C type that forbids it (Py_TPFLAGS_IMMUTABLETYPE), lifting the flag for the moment:
    the interpreter updates the type's C slot too (`__call__` -> tp_call) and clears its method cache."""
    immutable = 1 << 8
    flags = _type_flags(cls) if cls.__flags__ & immutable else None
    if flags is not None:
        flags.value &= ~immutable
    try:
        setattr(cls, name, value)
    finally:
        if flags is not None:
            flags.value |= immutable


# Where a backward operator's work may be done: its backends (a nested tensor's, MKL-DNN's, sparse and quantized
# layouts each have kernels of their own: native_layer_norm_backward at NestedTensorCPU runs torch's backward on
# nested rows), its composite kernels, meta, and the keys in front of them (functorch's batching, autograd's).
# A key not named here is not missed: every key the dispatcher lists for the operator is refused as well.
_BACKWARD_KEYS = ("CPU", "CUDA", "XPU", "MPS", "HPU", "Meta", "NestedTensorCPU", "NestedTensorCUDA", "NestedTensorHPU",
                  "MkldnnCPU", "SparseCPU", "SparseCUDA", "SparseMeta", "SparseCsrCPU", "SparseCsrCUDA",
                  "SparseCsrMeta", "QuantizedCPU", "QuantizedCUDA", "CompositeImplicitAutograd", "CompositeExplicitAutograd",
                  "CompositeExplicitAutogradNonFunctional", "FuncTorchBatched", "Batched", "Autograd")


def _kernel_keys(torch, qualified: str) -> list:
    """The dispatch keys with a kernel for an operator: those of _BACKWARD_KEYS and every one its dispatcher
    entry lists (`_dispatch_dump`: "CPU: registered at ...", "Autograd[alias]: ...", "Meta (inactive): ...")."""
    listed = [line.split(":")[0].split(" ")[0].replace("[alias]", "")
              for line in torch._C._dispatch_dump(qualified).splitlines()]
    keys = []
    for key in dict.fromkeys(_BACKWARD_KEYS + tuple(listed)):
        try:
            if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key):
                keys.append(key)
        except RuntimeError:  # no such key in this build of torch, or a line of the dump that names none
            continue
    return keys


def _block_backward_operators(torch) -> None:
    """Replace every kernel of every `aten::*backward*` operator, at each dispatch key that has one, with one
    that refuses, and every kernel of `aten::_make_dual` (forward mode's dual tensors), wherever its work is done.

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
                keys = _kernel_keys(torch, qualified)
            elif name.partition(".")[0] in _DUAL_OPERATORS:  # forward mode's dual tensors
                keys = _DUAL_KEYS
            else:
                continue
            for key in keys:
                if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key):
                    library.impl(name, key, _refuse, False)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(library))


# PyTorch's own Python implementations of backward operators (torch.export.default_decompositions() hands out
# native_layer_norm_backward's and native_batch_norm_backward's): its decomposition tables, the Python kernels
# of the operators (their meta kernels are the same functions) and the modules that define them.
_DECOMPOSITION_MODULES = ("torch._decomp", "torch._refs", "torch._prims")
# Forward mode's own decompositions (layer and batch norm's backward among them), which torch imports on forward
# mode's first use only: importing it would script them with TorchScript, whose compiled copies (cached by the
# function) outlive any rewrite of their code, and take a fifth of a second. Forward mode is sealed, so nothing of
# torch's needs it: seal() puts a module in its place whose every name refuses, and a fresh import finds that one.
_DECOMPOSITIONS_FOR_JVP = "torch._decomp.decompositions_for_jvp"


def _seal_decompositions(torch) -> None:
    """Make every Python implementation of a backward operator refuse, however it is reached: each function's
    code is replaced (as seal() does with the doors), the ones it wraps (`__wrapped__`) too, so every reference
    to it refuses. A function is one of them when a decomposition table or an operator's Python kernels hold it
    for an operator whose name says backward, or a module of _DECOMPOSITION_MODULES defines it under such a name
    (`backwards_not_supported`, the prims' decorator, is no backward: "backward" followed by "s" is not one)."""
    import functools
    import re
    import types

    class _Sealed(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):  # what the import system looks for
                raise AttributeError(name)
            raise RuntimeError(NO_AUTOGRAD)

    decomp = sys.modules.get("torch._decomp")
    if _DECOMPOSITIONS_FOR_JVP not in sys.modules:  # forward mode never ran here: the stand-in, before any import
        stand_in = _Sealed(_DECOMPOSITIONS_FOR_JVP)
        sys.modules[_DECOMPOSITIONS_FOR_JVP] = stand_in
        if decomp is not None:
            setattr(decomp, _DECOMPOSITIONS_FOR_JVP.rpartition(".")[2], stand_in)
    backward = re.compile(r"backward(?!s)")
    found = []
    tables = list(getattr(decomp, "global_decomposition_table", {}).values())
    jvp = sys.modules[_DECOMPOSITIONS_FOR_JVP]  # the real one only where forward mode ran before the seal
    tables.append({} if isinstance(jvp, _Sealed) else vars(jvp).get("decomposition_table_for_jvp", {}))
    for table in tables:
        found += [function for op, function in list(table.items()) if backward.search(str(op))]
    for name, packet in list(vars(torch.ops.aten).items()):  # the operators made so far: all with Python kernels
        if backward.search(name):
            for overload in list(vars(packet).values()):
                if isinstance(overload, torch._ops.OpOverload):
                    found += list(overload.py_kernels.values())
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith(_DECOMPOSITION_MODULES) and module is not None:
            found += [value for name, value in list(vars(module).items()) if backward.search(name)
                      and isinstance(value, types.FunctionType) and value.__module__ == module_name]
    codes, done = {}, set()
    while found:
        function = found.pop()
        if isinstance(function, functools.partial):
            found.append(function.func)
            continue
        if not isinstance(function, types.FunctionType) or id(function) in done:
            continue
        done.add(id(function))
        wrapped = getattr(function, "__wrapped__", None)  # read before the code is replaced
        if wrapped is not None:
            found.append(wrapped)
        free = len(function.__code__.co_freevars)
        if free not in codes:
            codes[free] = _refusing_code(free)
        function.__code__ = codes[free]


def _engine_checked(torch, grad, like, what: str):
    """A gradient checked against the tensor it belongs to, as the engine's validate_outputs does: a shape
    the tensor's broadcasts to is summed down to it, another dtype is cast, another device is an error."""
    if not isinstance(grad, torch.Tensor):
        raise TypeError(f"{what}: expected a tensor or None, got {type(grad).__name__}")
    if grad.shape != like.shape:
        try:
            grad = grad.sum_to_size(like.shape)
        except RuntimeError:
            raise RuntimeError(f"{what}: got shape {list(grad.shape)} but expected shape compatible with "
                               f"{list(like.shape)}") from None
    if grad.device != like.device:
        raise RuntimeError(f"{what}: expected device {like.device} but got {grad.device}")
    return grad.to(like.dtype)


def _run_backward(torch, y, dy, inputs: list, name: str) -> None:
    """y.backward(dy) where y is the output of a Function applied to `inputs`: its node is the only one between
    y and the leaves, so this calls the student's backward on it (as the engine does: the node is ctx), grad mode
    off, checks what it returns as the engine does, and accumulates each gradient into its leaf's .grad."""
    node = y.grad_fn
    dy = _engine_checked(torch, dy, y, "the gradient of the output")
    with torch.no_grad():
        grads = node.apply(dy)
    grads = grads if isinstance(grads, tuple) else (grads,)
    needs = tuple(node.needs_input_grad)
    if len(grads) < len(needs) or any(g is not None for g in grads[len(needs):]):
        raise RuntimeError(f"function {name}Backward returned an incorrect number of gradients "
                           f"(expected {len(needs)}, got {len(grads)})")
    if len(needs) == len(inputs):  # apply got the inputs as given: a gradient for a non-tensor is an error
        for i, (g, given) in enumerate(zip(grads, inputs)):
            if g is not None and not isinstance(given, torch.Tensor):
                raise RuntimeError(f"function {name}Backward returned a gradient different than None at "
                                   f"position {i + 1}, but the corresponding forward input was not a Variable")
    # The edges of the inputs that need a gradient, in order: each must end at a leaf's AccumulateGrad.
    edges = [fn for fn, _ in node.next_functions if fn is not None]
    wanted = [i for i, need in enumerate(needs) if need]
    for i, fn in zip(wanted, edges):
        leaf = getattr(fn, "variable", None) if type(fn).__name__ == "AccumulateGrad" else None
        if leaf is None:
            raise TypeError(f"{name}.apply should pass its tensors to {name}.forward as they are: the gradient "
                            f"of input {i} would flow on through {type(fn).__name__}")
        if grads[i] is None:
            continue
        g = _engine_checked(torch, grads[i], leaf, f"function {name}Backward returned an invalid gradient at "
                                                    f"index {i}")
        with torch.no_grad():
            g = torch.empty_like(leaf).copy_(g)  # the leaf's layout, as AccumulateGrad gives it
            leaf.grad = g if leaf.grad is None else leaf.grad + g


def fit_triton_interpreter(force: bool = False) -> bool:
    """Fit Triton's interpreter to the course, where it runs; True if this call changed it.

    - It is made as strict as the language (`bounds`): a load or store outside the kernel's tensors
      stops the kernel with a message that names the tensor, and a masked load without `other` reads
      NaN in its masked-off lanes.
    - It reads a kernel's integer arguments under NumPy 2.5 and later. The interpreter holds a scalar
      argument as a one-element array; before Triton 3.7 it reads one as an index with int() on that
      array, which NumPy 2.5 refuses ("only 0-dimensional arrays can be converted to Python scalars"),
      so every kernel whose loop runs to an argument (range(0, N, BLOCK)) fails. Triton 3.7 squeezes the
      array first; this does the same for any Triton, where NumPy refuses (or when `force`d).

    Call it before the kernels run: after triton is imported, or once TRITON_INTERPRET=1 is set (then it
    loads the interpreter itself, as a notebook's set-up cell needs).
    """
    interpreter = sys.modules.get("triton.runtime.interpreter")
    if interpreter is None and os.environ.get("TRITON_INTERPRET") == "1":
        try:
            import triton.runtime.interpreter as interpreter
        except ImportError:  # no Triton here: nothing to fit
            return False
    if interpreter is None:
        return False
    strict = bounds.install(interpreter)
    guarded = _guard_handles(interpreter)
    return _fit_index(interpreter, force) or strict or guarded


HANDLE = ("under Triton's interpreter a kernel's value holds its data as a NumPy array (`.handle`), which no "
          "compiled kernel can reach: a kernel computes with tl's operations, and a plain Python function it "
          "calls is no part of the language")


def _guard_handles(interpreter) -> bool:
    """Let only Triton's own code read a kernel value's `handle`, where the interpreter keeps its NumPy array;
    True if this call did. A red-team kernel handed its loaded blocks to a Python helper that did the whole
    backward in NumPy, under no compiler's eye (120/120 on the CPU; on a GPU it would not compile)."""
    core = interpreter.tl.core
    classes = [cls for cls in (getattr(core, "tensor", None), getattr(core, "tensor_descriptor_base", None))
               if isinstance(cls, type) and "handle" not in vars(cls)]
    triton_dir = _package_folders()[1]
    if not classes or triton_dir is None:
        return False
    here = os.path.abspath(__file__)  # _fit_index's __index__ reads a scalar argument's handle

    def read(self):
        caller = sys._getframe(1).f_code.co_filename
        if not caller.startswith(triton_dir) and caller != here:
            raise RuntimeError(HANDLE)
        return self.__dict__["handle"]

    def write(self, value):
        self.__dict__["handle"] = value

    for cls in classes:
        cls.handle = property(read, write)
    return True


def _fit_index(interpreter, force: bool) -> bool:
    if not force:
        import numpy as np

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NumPy 1.25 to 2.4 warn, and convert
            try:
                int(np.ones(1))
                return False
            except TypeError:
                pass
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


# --- Triton exercises: the kernels do the work ---------------------------------------------------

KERNEL_WORK = ("{what} while your function ran: in this exercise the arithmetic and the sums are done by "
               "your Triton kernels; around them, torch may only allocate (empty, zeros), view or reshape, "
               "make contiguous copies and convert dtypes")

# aten operators, by overload packet, that allocate, fill with a constant, view, or copy without arithmetic
# (dtype conversions included): what a launcher does around its kernels, and what Triton's interpreter
# does to hand tensors to them (new_empty, set_, copy_). Everything else is refused in the student's code.
KERNEL_CALL_OPS = frozenset({
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros",
    "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "fill_", "zero_", "scalar_tensor",
    "lift_fresh", "lift_fresh_copy", "view", "_unsafe_view", "_reshape_alias", "reshape", "as_strided", "alias",
    "detach", "t", "transpose", "permute", "expand", "squeeze", "unsqueeze", "select", "slice", "narrow",
    "split", "split_with_sizes", "unbind", "chunk", "view_as", "flatten", "unflatten", "movedim",
    "contiguous", "clone", "copy_", "_to_copy", "to", "set_", "resize_", "is_contiguous", "sym_size",
    "sym_stride", "sym_numel", "sym_storage_offset", "dim", "size", "stride", "storage_offset", "numel",
    "is_same_size", "record_stream",
})
# Tensor methods that hand a tensor's values to Python or NumPy, where no dispatch mode sees the arithmetic
# done with them. Triton's interpreter uses untyped_storage: allowed from triton's own code only. (data_ptr,
# an address, stays: launchers check alignment with it, as chapter 6's does; reading memory through it takes
# ctypes or NumPy's buffers, which the static read flags.)
# Allocations whose memory holds whatever it held: for the student's code they are filled with NaN (as torch's
# deterministic mode does), so that an entry no program wrote fails the same way on every run, and visibly.
UNINITIALIZED = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"})
DATA_EXITS = frozenset({"numpy", "tolist", "item", "untyped_storage", "storage", "_typed_storage", "__array__",
                        "__dlpack__", "__reduce_ex__", "__getstate__", "__deepcopy__"})
_PACKAGES = {}  # name -> folder of torch and triton as imported before the student's code (seal)
# id(code) -> (code, its globals, "torch" | "triton" | "own"): the code objects of torch's, triton's and this
# module's functions, and the code nested in them, as loaded before the student's code ran (_genuine_code).
# A frame is theirs only if it runs one of these very code objects on its own module's globals: a code
# object's co_filename is the student's to set (code.replace), and so is the globals a function runs on.
_GENUINE: dict = {}
# Triton's modules that call torch on a launch's tensors (its launcher, interpreter, autotuner, benchmark):
# imported before the snapshot, so that their code is in it.
_TRITON_MODULES = ("triton", "triton.language", "triton.runtime.jit", "triton.runtime.autotuner",
                   "triton.runtime.interpreter", "triton.testing")


def _package_folders() -> tuple[str, str]:
    for name in ("torch", "triton"):
        if _PACKAGES.get(name) is None:
            try:
                import importlib.util

                path = importlib.util.find_spec(name).origin  # without importing it
            except (ImportError, AttributeError, ValueError):
                path = None
            _PACKAGES[name] = os.path.dirname(os.path.abspath(path)) + os.sep if path else None
    return _PACKAGES["torch"], _PACKAGES["triton"]


def _genuine_code() -> dict:
    """The snapshot behind _GENUINE, taken once: by seal(), before the student's code runs (in a notebook,
    where nothing seals, at the first kernel_work). It imports Triton's launcher, interpreter and autotuner
    first, and walks every function in the process (a second or so)."""
    if _GENUINE:
        return _GENUINE
    torch_dir, triton_dir = _package_folders()
    if triton_dir:
        import importlib

        for name in _TRITON_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  (an older Triton without one of them; the interpreter's C part)
                pass
    import gc
    import types

    here = os.path.abspath(__file__)
    # a function's globals must be those of a module loaded from that package's folder (or this one's):
    # where the snapshot comes late (a notebook), a helper with a co_filename in triton's folder is not
    # triton's, and in the sandbox nothing of the student's exists yet
    homes = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and isinstance(getattr(module, "__dict__", None), dict):
            homes[id(module.__dict__)] = os.path.abspath(path)
    found = {}
    for obj in gc.get_objects():
        if type(obj) is not types.FunctionType:
            continue
        code = obj.__code__
        name = code.co_filename
        kind = ("torch" if torch_dir and name.startswith(torch_dir) else "triton" if triton_dir and
                name.startswith(triton_dir) else "own" if name == __file__ or name == here else None)
        home = homes.get(id(obj.__globals__), "")
        if kind is None or not home.startswith({"torch": torch_dir, "triton": triton_dir}.get(kind, here)):
            continue
        stack = [code]
        while stack:
            code = stack.pop()
            if id(code) not in found:
                found[id(code)] = (code, obj.__globals__, kind)
                stack.extend(c for c in code.co_consts if type(c) is types.CodeType)
    _GENUINE.update(found)
    _GENUINE[None] = None  # taken, even where nothing was found
    return _GENUINE


def _called_from_triton() -> bool:
    """Is the nearest caller outside torch's own Python code a part of triton (its launcher, interpreter,
    autotuner)? The student's code, and a function of the student's that triton calls back, are not; nor is
    a function whose code says it is triton's or torch's (co_filename), or triton's code run on the
    student's globals: the code object itself, and its module's globals, must be those loaded before."""
    genuine = _genuine_code()
    frame = sys._getframe(2)
    while frame is not None:
        entry = genuine.get(id(frame.f_code))
        if entry is None or entry[0] is not frame.f_code or entry[1] is not frame.f_globals:
            return False
        if entry[2] == "triton":
            return True
        frame = frame.f_back
    return False


def _triton_may(func) -> bool:
    """May triton's own code run the aten operator `func` on a launch's tensors? Its launcher, interpreter and
    autotuner allocate, copy and fill (KERNEL_CALL_OPS), and compute out of place on their own values (the
    benchmark's quantiles); an in-place or out= operator writing into a tensor (a pre-run hook that is
    torch.Tensor.sub_) is the student's arithmetic, whoever calls it."""
    if func.overloadpacket.__name__ in KERNEL_CALL_OPS:
        return True
    schema = getattr(func, "_schema", None)
    return schema is not None and not schema.is_mutable


def _op_problem(func, args, kwargs) -> str | None:
    """Why the aten operator `func` is no part of a launcher's work, or None when it is."""
    name = func.overloadpacket.__name__
    if name not in KERNEL_CALL_OPS:
        return f"torch computed {name} (aten::{func.name().split('::')[-1]})"
    torch = sys.modules["torch"]
    devices = {a.device for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)}
    target = kwargs.get("device")
    if target is not None:
        devices.add(torch.device(target))
    if len(devices) > 1 and name in ("copy_", "_to_copy", "to", "set_"):
        return f"torch moved data between devices ({', '.join(sorted(map(str, devices)))})"
    return None


def kernel_work():
    """A context in which torch refuses to compute for the student's code (see KERNEL_CALL_OPS, DATA_EXITS)."""
    # The modes call into torch._dynamo (lazily imported); its import fails once no_autograd has put one
    # refusing function in several of torch's places: import it first
    import torch._dynamo  # noqa: F401
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    _genuine_code()  # taken by seal() already in the grader's sandbox; here in a notebook

    class _NoDataExits(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in DATA_EXITS and not _called_from_triton():
                raise RuntimeError(KERNEL_WORK.format(what=f"a tensor's values were read out of torch ({name})"))
            return func(*args, **(kwargs or {}))

    class _NoArithmetic(TorchDispatchMode):
        @classmethod
        def _should_skip_dynamo(cls):  # else torch (2.11 on) wraps __torch_dispatch__ in a frame of dynamo's,
            return False  # imported after the snapshot: no caller would be found to be triton's

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            problem = _op_problem(func, args, kwargs)
            if problem and not (_triton_may(func) and _called_from_triton()):
                raise RuntimeError(KERNEL_WORK.format(what=problem))
            out = func(*args, **kwargs)
            if func.overloadpacket.__name__ in UNINITIALIZED and out.is_floating_point() \
                    and not _called_from_triton():
                out.fill_(float("nan"))
            return out

    stack = contextlib.ExitStack()
    stack.enter_context(_NoDataExits())
    stack.enter_context(_NoArithmetic())
    return stack


NO_THREADS = ("this exercise's answer starts no threads: torch's guard around your launchers (the kernels do the "
              "arithmetic) holds in the thread that calls them, not in one you start")


def _no_thread(*args, **kwargs):
    raise RuntimeError(NO_THREADS)


def refuse_threads() -> None:
    """Let no thread start in this process from now on (a Triton exercise's job does, before the student's code).

    kernel_work's modes are torch's per-thread state, so a thread started by the answer, or one waiting for its
    work, would compute in torch outside them. Both ways in are replaced: `_thread`'s functions, and the copy
    `threading` took at its import (what Thread.start, Timer and thread pools call).
    """
    import _thread
    import threading

    for module, name in ((_thread, "start_new_thread"), (_thread, "start_new"), (_thread, "start_joinable_thread"),
                         (threading, "_start_new_thread"), (threading, "_start_joinable_thread")):
        if hasattr(module, name):
            setattr(module, name, _no_thread)


def invoke(protocol: str, target, args: tuple, kwargs: dict, returning=None):
    """Drive `target` (a function or an autograd.Function class) the way `protocol` says. `returning`, if
    given, runs as the call returns, still inside its guard (the sandbox's intact.disarm)."""
    if protocol == "call":
        with no_autograd():
            return target(*args, **kwargs)
    if protocol == "kernels":
        with kernel_work(), no_autograd():
            returned = target(*args, **kwargs)
            if returning is not None:
                returning()
            return returned
    if protocol == "autograd_function":
        import torch

        *inputs, dy = args
        with no_autograd():
            y, leaves, name = _applied(torch, target, inputs, kwargs)
            _run_backward(torch, y, dy, leaves, name)
        grads = tuple(leaf.grad if isinstance(leaf, torch.Tensor) else None for leaf in leaves[:3])
        return (y.detach(), *grads)
    if protocol == "saved_for_backward":
        import torch

        with no_autograd():
            y, leaves, _ = _applied(torch, target, args, kwargs)
            return kept_bytes(torch, y.grad_fn, leaves)
    if protocol == "shards":
        return _shards(target, *args, **kwargs)
    raise ValueError(f"unknown protocol {protocol!r}; known: {PROTOCOLS}")


def _applied(torch, target, inputs, kwargs):
    """y = target.apply(*inputs) with grad mode on, each floating tensor input a fresh leaf that requires grad:
    (y, the leaves, target's name). y must be the output of target's own node."""
    name = getattr(target, "__name__", repr(target))
    if not (isinstance(target, type) and issubclass(target, torch.autograd.Function)):
        raise TypeError(f"{name} should be a subclass of torch.autograd.Function")
    leaves = [a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
              for a in inputs]
    with torch.enable_grad():
        y = target.apply(*leaves, **kwargs)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"{name}.apply should return a tensor, got {type(y).__name__}")
        # The gradient must come from the student's backward, not from autograd's own
        # derivatives of ops run outside a Function (an `apply` replaced by plain torch code).
        if not isinstance(y.grad_fn, target._backward_cls):
            source = type(y.grad_fn).__name__ if y.grad_fn is not None else "nowhere: it does not depend on x"
            raise TypeError(f"{name}.apply should return the output of {name}.forward, so that "
                            f"{name}.backward computes the gradient; its gradient would come from {source}")
    return y, leaves, name


KEPT_WALK = 100_000  # the most objects kept_bytes looks at on a ctx (a container holding itself ends too)


def kept_bytes(torch, node, inputs) -> int:
    """The memory a Function's node keeps from its forward for its backward, besides what its inputs hold:
    the bytes of every storage under the tensors it saved (`ctx.save_for_backward`) and those it set on ctx
    (an attribute, or anywhere in the tuples, lists, sets and dicts there), each storage once, the inputs' own
    left out (saving x, or a view of it, keeps nothing new). The output's storage counts: saving y keeps it
    alive."""
    found, seen, stack = list(node.saved_tensors), set(), list(vars(node).values())
    while stack and len(seen) < KEPT_WALK:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif type(value) is dict:
            stack.extend(value.values())
        elif type(value) in (tuple, list, set, frozenset):
            stack.extend(value)
    own = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
    kept = {}
    for t in found:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
    return int(sum(kept.values()))


def _shards(shard_grad_in, grad_out, x, weight, mean, invstd, sizes, sum_dy, sum_dy_xmu):
    """Batch norm's backward split across shards as data-parallel training does it (SyncBatchNorm).

    `shard_sums` is found beside `shard_grad_in`, in the namespace its code was defined in (the
    notebook's, or the sandbox's). Only the two vectors of C each shard returns are combined, and
    they are combined here, by addition in their own dtype, as an all-reduce would.

    Returns each shard's grad_in from those totals, the totals, and each shard's grad_in from the
    right totals (`sum_dy`, `sum_dy_xmu`): where the student's sums are wrong, the judge holds
    shard_grad_in to the right ones, so one wrong function does not cost the other its points. Where
    shard_sums raised, or returned what cannot be added, the totals are what went wrong, as text.
    """
    shard_sums = getattr(shard_grad_in, "__globals__", {}).get("shard_sums")
    if not callable(shard_sums):
        raise NameError("shard_grad_in is tested together with shard_sums: define both")
    import torch

    count = x.numel() // x.shape[1]
    cut = list(zip(torch.split(grad_out, list(sizes)), torch.split(x, list(sizes))))
    with no_autograd():
        try:
            totals = _added_sums(torch, shard_sums, cut, mean, x.shape[1])
        except Exception as error:  # shard_sums' own tests fail it; shard_grad_in is judged from the right sums
            totals = f"{type(error).__name__}: {error}"[:500]
        from_right = tuple(shard_grad_in(g, xs, weight, mean, invstd, sum_dy, sum_dy_xmu, count) for g, xs in cut)
        if isinstance(totals, str):
            return None, totals, from_right
        from_yours = tuple(shard_grad_in(g, xs, weight, mean, invstd, totals[0], totals[1], count) for g, xs in cut)
        return from_yours, totals, from_right


def _added_sums(torch, shard_sums, cut, mean, channels: int):
    """The two sums of every shard's `shard_sums`, added as an all-reduce would, in their own dtype."""
    totals = None
    for g, xs in cut:
        sums = shard_sums(g, xs, mean)
        if not (isinstance(sums, tuple) and len(sums) == 2 and all(type(s) is torch.Tensor for s in sums)):
            raise TypeError("shard_sums should return a tuple of two tensors (sum_dy, sum_dy_xmu)")
        if any(tuple(s.shape) != (channels,) for s in sums):
            raise ValueError(f"shard_sums should return two tensors of shape ({channels},)")
        if any(s.device != g.device for s in sums):  # else shard_grad_in, right or not, fails on mixed devices
            raise ValueError(f"shard_sums should return tensors on its inputs' device ({g.device}), "
                             f"not on {', '.join(sorted({str(s.device) for s in sums}))}")
        totals = sums if totals is None else tuple(t + s for t, s in zip(totals, sums))
    return totals

