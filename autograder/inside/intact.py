"""What the program beside the student's code runs between calls, held unchanged by the student's code.

A Triton exercise's calls run under a guard (`calling.kernel_work`: torch allocates and copies, and
computes nothing); between two calls, `__main__` runs outside it: it reads the next call's inputs, packs
the results, writes them out. Whatever it calls there that a submission could replace (`numpy.save`, a
method of `torch.Tensor`, `calling.kernel_work`, a trace function, a gc callback, a signal handler)
would run the submission's code outside those guards, where torch computes freely: a Triton exercise
answered by torch after its launcher returned. And Triton's interpreter (its classes and its one
builder) holds the memory checks of `bounds` during a call. So `take()`, before the first cell, notes
the functions, classes and modules of the modules that program uses, the names of torch.Tensor and of
the interpreter's classes, the builder's own attributes, those modules' entries in `sys.modules`, and
the hooks through which Python runs code of its own accord; `changed()`, after every cell and every
call, names the first that is no longer what it was, and `disarm()`, still under the guard when a call
returns, takes away the hooks it left. Adding a name to a module changes nothing
here: only a replaced or deleted one does. (The other exercises have no per-call guard to get around:
autograd is sealed for good, and NumPy answers may compute anything.)
"""

from __future__ import annotations

import gc
import signal
import sys
import types

MODULES = ("__main__", "bounds", "builtins", "calling", "confine", "contextlib", "gc", "intact", "io", "json",
           "json.decoder", "json.encoder", "math", "numpy", "os", "protocol", "re", "signal", "sys", "wire",
           "torch", "torch._C", "torch.cuda", "torch.overrides", "torch.utils._python_dispatch",
           "triton.runtime.interpreter")
# Classes whose every name counts: a name added to torch.Tensor shadows a method of its C base, and the
# interpreter's builder, launcher and semantic (which lowers tl.load) hold the checks of `bounds`.
CLASSES = (("torch", "Tensor"), ("triton.runtime.interpreter", "InterpreterBuilder"),
           ("triton.runtime.interpreter", "GridExecutor"), ("triton.runtime.interpreter", "TritonSemantic"))
# Objects the sandbox's work goes through, whose own attributes must not shadow their class's methods
INSTANCES = (("triton.runtime.interpreter", "interpreter_builder"),)
_MISSING = object()
_noted: list = []  # (what it is called, the mapping it lives in, key, the object it was)
_hooks: dict = {}  # what each hook was (see _current_hooks)
_handlers: dict = {}  # signal -> its handler
_classes: list = []  # (class, its name, the names in its own dict)
_instances: list = []  # (object, its name)


def take() -> None:
    """Note what must not change (once, before the student's first cell)."""
    modules = {name: sys.modules[name] for name in MODULES if name in sys.modules}
    for name, module in modules.items():
        _noted.append((f"sys.modules[{name!r}]", sys.modules, name, module))
        for key, value in list(vars(module).items()):
            if callable(value) or isinstance(value, types.ModuleType):
                _noted.append((f"{name}.{key}", vars(module), key, value))
    for module, name in CLASSES:
        cls = getattr(modules.get(module), name, None)
        if isinstance(cls, type):
            _classes.append((cls, f"{module}.{name}", frozenset(vars(cls))))
            for key, value in list(vars(cls).items()):
                _noted.append((f"{module}.{name}.{key}", vars(cls), key, value))
    for module, name in INSTANCES:
        obj = getattr(modules.get(module), name, None)
        if obj is not None:
            _noted.append((f"{module}.{name}", vars(modules[module]), name, obj))
            _instances.append((obj, f"{module}.{name}"))
    for number in signal.valid_signals():
        try:
            _handlers[signal.Signals(number)] = signal.getsignal(number)
        except (ValueError, OSError):  # a real-time signal without a name, or one Python cannot ask of
            continue
    _hooks.update(_current_hooks())
    sys.addaudithook(_no_audit_hooks)


def _current_hooks() -> dict:
    hooks = {"sys.settrace": sys.gettrace(), "sys.setprofile": sys.getprofile(),
             "gc.callbacks": tuple(gc.callbacks), "sys.meta_path": tuple(sys.meta_path),
             "sys.path_hooks": tuple(sys.path_hooks)}
    hooks.update({f"the handler of {sig.name}": signal.getsignal(sig) for sig in _handlers})
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "__file__", None):
        hooks["a torch function mode left on"] = torch._C._len_torch_function_stack()
        hooks["a torch dispatch mode left on"] = torch._C._len_torch_dispatch_stack()
    return hooks


def _same(value, before) -> bool:
    if type(value) is tuple and type(before) is tuple:  # by identity: an object of the student's may lie in ==
        return len(value) == len(before) and all(a is b for a, b in zip(value, before))
    return value is before or (type(value) is int and type(before) is int and value == before)


def changed() -> str | None:
    """The first thing noted by `take` that is not what it was, or None."""
    for what, mapping, key, value in _noted:
        if mapping.get(key, _MISSING) is not value:
            return what
    for cls, name, names in _classes:
        added = sorted(set(vars(cls)) - names)
        if added:
            return f"{name}.{added[0]}"
    for obj, name in _instances:
        shadowing = sorted(key for key in vars(obj) if callable(getattr(type(obj), key, None)))
        if shadowing:
            return f"{name}.{shadowing[0]}"
    for what, value in _current_hooks().items():
        if not _same(value, _hooks.get(what, _MISSING)):
            return what
    return None


class Tampered(RuntimeError):
    """The student's code changed what `take` noted; `what` names it."""

    def __init__(self, what: str):
        super().__init__(message(what))
        self.what = what


def disarm() -> None:
    """Put back the hooks through which Python would run the student's code of its own accord (a trace or
    profile function, a gc callback, a signal handler or timer), and raise Tampered if one was set. Called
    as a call returns, while its guard still holds: a hook that fires here cannot compute."""
    found = [what for what, hook in (("sys.settrace", sys.gettrace()), ("sys.setprofile", sys.getprofile())) if hook]
    sys.settrace(None)
    sys.setprofile(None)
    if not _same(tuple(gc.callbacks), _hooks["gc.callbacks"]):
        found.append("gc.callbacks")
        gc.callbacks[:] = _hooks["gc.callbacks"]
    for timer in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL):
        if signal.setitimer(timer, 0) != (0.0, 0.0):
            found.append("a signal timer")
    for sig, before in _handlers.items():
        if signal.getsignal(sig) is not before:
            found.append(f"the handler of {sig.name}")
            signal.signal(sig, before)
    if found:
        raise Tampered(found[0])


def _no_audit_hooks(event: str, args) -> None:
    # an audit hook would run the student's code on the events of this program's own work (an import);
    # Python drops a hook that a RuntimeError here refuses, without a word
    if event == "sys.addaudithook":
        raise RuntimeError("this grader does not let an answer add an audit hook")


def message(what: str) -> str:
    return (f"your code changed {what}, which the grader itself relies on to run and check your function's calls: "
            "nothing more of your notebook is run (an answer has no reason to change the libraries it uses)")
