"""The autograder's parts on their own: the data wire, cell picking, the autograd lock."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from autograder.inside import wire
from autograder.cells import SubmissionError, defined_names, pick, read_submission
from autograder.course import notebooks
from helpers import child_env, solved, submission
from normgrad import calling
from normgrad.cases import load


# --- wire -----------------------------------------------------------------------------------

def test_wire_round_trip_keeps_structure_dtypes_and_strides(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    value = ([np.arange(6.0).reshape(2, 3), {"eps": 1e-5, "n": 3, "name": "x", "none": None}],
             torch.tensor([1.5, -2.0], dtype=torch.bfloat16), base.t(), base[:, 1::2], float("nan"), (True,))
    back = wire.unpack(wire.pack(value))
    assert isinstance(back, tuple) and isinstance(back[0], list)
    np.testing.assert_array_equal(back[0][0], value[0][0])
    assert back[0][1] == value[0][1]
    assert back[1].dtype == torch.bfloat16 and torch.equal(back[1], value[1])
    assert back[2].stride() == base.t().stride() and torch.equal(back[2], base.t())
    assert not back[3].is_contiguous() and torch.equal(back[3], base[:, 1::2])
    assert np.isnan(back[4]) and back[5] == (True,)


def test_wire_drops_array_subclasses_to_their_values(tmp_path):
    class Liar(np.ndarray):
        def __eq__(self, other):
            return True

    back = wire.unpack(wire.pack(np.ones(3).view(Liar)))
    assert type(back) is np.ndarray


class _Ran(list):  # a subclass's methods are the student's code: packing must not run them
    ran = []

    def __iter__(self):
        _Ran.ran.append("__iter__")
        return super().__iter__()


class _Lying(float):
    def __repr__(self):
        _Lying.ran = True
        return "0.5"


def test_wire_refuses_a_meta_tensor_with_a_reason():
    """It has a shape and a dtype and no values: reading them raised torch's bare NotImplementedError."""
    with pytest.raises(wire.WireError, match="meta device hold no values"):
        wire.pack((torch.ones(2), torch.zeros(3, device="meta")))


@pytest.mark.parametrize("make,plain", [(lambda: _Ran([1.0]), "list"), (lambda: _Lying(2.0), "float"),
                                        (lambda: {"k": _Ran()}, "list")], ids=["list", "float", "nested"])
def test_wire_refuses_subclasses_of_plain_types_without_running_them(make, plain):
    value = make()
    _Ran.ran.clear()
    _Lying.ran = False
    with pytest.raises(wire.WireError, match=f"cannot cross: return a plain {plain}"):
        wire.pack(value)
    assert _Ran.ran == [] and not _Lying.ran


@pytest.mark.parametrize("array", [np.arange(12.0).reshape(3, 4).T, np.array(3.5), np.ones((2, 0, 3), bool),
                                   np.arange(5, dtype=np.int16), np.zeros((1,) * 20, np.float16)])
def test_wire_writes_npy_that_numpy_and_its_own_reader_read_alike(array):
    import io

    data = wire.npy_bytes(np.array(array, order="C"))
    for back in (np.load(io.BytesIO(data), allow_pickle=False), wire.parse_npy(data)):
        assert back.dtype == array.dtype and back.shape == array.shape and np.array_equal(back, array)


@pytest.mark.parametrize("value", [object(), np.array([object()]), {1: 2}, lambda: 0])
def test_wire_refuses_what_is_not_plain_data(tmp_path, value):
    with pytest.raises(wire.WireError):
        wire.pack(value)


def test_wire_unpack_refuses_pickles_forged_manifests_and_oversized_arrays():
    import io

    pickled = io.BytesIO()
    np.save(pickled, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    plain = io.BytesIO()
    np.save(plain, np.zeros(1000))
    for files, kwargs in [
        ({"manifest.json": json.dumps({"t": "ndarray", "file": "a1.npy"}).encode(), "a1.npy": pickled.getvalue()}, {}),
        ({"manifest.json": json.dumps({"t": "ndarray", "file": "../../etc/passwd"}).encode()}, {}),
        ({"manifest.json": json.dumps({"t": "code", "v": "import os"}).encode()}, {}),
        ({"manifest.json": json.dumps({"t": "ndarray", "file": "a2.npy"}).encode(), "a2.npy": plain.getvalue()},
         {"max_bytes": 100}),
        ({"manifest.json": b"not json"}, {}),
        ({"manifest.json": b"[" * 100_000}, {}),  # deeper than the JSON parser recurses: RecursionError, no ValueError
    ]:
        with pytest.raises(wire.WireError):
            wire.unpack(files, **kwargs)


def test_wire_refuses_tensor_views_outside_their_storage():
    files = wire.pack(torch.zeros(4))
    manifest = json.loads(files["manifest.json"])
    manifest["shape"], manifest["stride"] = [4, 4], [4, 1]
    files["manifest.json"] = json.dumps(manifest).encode()
    with pytest.raises(wire.WireError):
        wire.unpack(files)


# --- picking the solution cells -------------------------------------------------------------

def test_defined_names_reads_top_level_definitions_even_in_broken_code():
    assert defined_names("import numpy as np\n\ndef f(x):\n    def inner(): pass\nclass G: pass") == {"f", "G"}
    assert defined_names("def f(x):\n    return (\n") == {"f"}


def test_pick_ignores_metadata_order_and_unchanged_test_cells():
    nb = solved("01-forward")
    for cell in nb.cells:  # a student who swaps grade_ids and points gains nothing
        if "nbgrader" in cell.metadata:
            cell.metadata["nbgrader"]["grade_id"] = "swapped"
            cell.metadata["nbgrader"]["points"] = 1000
    nb.cells.reverse()
    picked, problems = pick(nb, notebooks("01-forward"))
    assert problems == []
    assert sorted(p.label for p in picked) == sorted(load("01-forward").functions)
    assert all("run_tests" not in p.source for p in picked)


def test_pick_reports_a_deleted_cell_and_takes_the_last_definition():
    nb = submission("01-forward", {"layernorm_forward": "def layernorm_forward(x, gamma, beta, eps=1e-5):\n    return 1"})
    nb.cells = [c for c in nb.cells if "def batchnorm_forward" not in c.source]
    nb.cells.append(nb.cells[0].copy())
    nb.cells[-1].cell_type = "code"
    nb.cells[-1].source = "def layernorm_forward(x, gamma, beta, eps=1e-5):\n    return 2"
    nb.cells[-1].outputs, nb.cells[-1].execution_count = [], None
    picked, problems = pick(nb, notebooks("01-forward"))
    assert [p.source.endswith("return 2") for p in picked if p.label == "layernorm_forward"] == [True]
    assert "batchnorm_forward" not in [p.label for p in picked]
    assert any("batchnorm_forward" in p for p in problems)


@pytest.mark.parametrize("content,reason", [
    (b"{not json", "not valid notebook JSON"),
    (b'{"cells": 3}', "not a notebook"),
    (b"\xff\xfe", "not valid notebook JSON"),
    (b'{"cells": [], "metadata": {}, "nbformat": "4", "nbformat_minor": 5}', "nbformat '4', is not a whole number"),
    # nbformat 1 read as 4 drops every cell: it said "no cell defines ..." of every function
    (b'{"cells": [], "metadata": {}, "nbformat": 1, "nbformat_minor": 0}', r"nbformat 1, is not one Jupyter writes"),
    (b'{"cells": [], "metadata": {}, "nbformat": 5, "nbformat_minor": 0}', r"nbformat 5, is not one Jupyter writes"),
])
def test_unreadable_submissions_are_refused_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    with pytest.raises(SubmissionError, match=reason):
        read_submission(path)


def test_a_notebook_saved_with_a_byte_order_mark_is_read_as_without_it(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(notebooks("01-forward").release.read_bytes())
    plain = read_submission(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # what some editors write first (it scored 0)
    assert read_submission(path) == plain


# --- the autograd lock ----------------------------------------------------------------------

def test_autograd_is_locked_during_a_call_and_restored_after():
    def cheat(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (x**2).sum().backward()
        return x.grad

    with pytest.raises(RuntimeError, match="compute the gradient by hand"):
        calling.invoke("call", cheat, (torch.ones(3),), {})
    assert torch.equal(cheat(torch.ones(3)), 2 * torch.ones(3))


def test_autograd_function_protocol_runs_the_students_backward():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta):
            ctx.save_for_backward(x)
            return x * x * gamma + beta

        @staticmethod
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            return 2 * x * dy, None, dy

    x, gamma, beta, dy = torch.tensor([1.0, 2.0]), torch.tensor(3.0), torch.tensor([0.5, 0.25]), torch.tensor([1.0, -1.0])
    y, dx, dgamma, dbeta = calling.invoke("autograd_function", Square, (x, gamma, beta, dy), {})
    assert torch.equal(y, x * x * 3 + beta) and torch.equal(dx, 2 * x * dy) and dgamma is None
    assert torch.equal(dbeta, dy)


def test_autograd_function_protocol_refuses_gradients_it_did_not_compute():
    class Plain:  # not a Function: autograd would differentiate its ops
        @staticmethod
        def apply(x, gamma, beta):
            return x * gamma + beta

    class Sneaky(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta):
            return x * gamma + beta

        @staticmethod
        def backward(ctx, dy):
            return dy, None, None

        @staticmethod
        def apply(x, gamma, beta):  # the Function is bypassed: autograd's own Mul and Add would answer
            return x * gamma + beta

    args = (torch.tensor([1.0, 2.0]), torch.tensor(3.0), torch.tensor(0.5), torch.tensor([1.0, -1.0]))
    with pytest.raises(TypeError, match="subclass of torch.autograd.Function"):
        calling.invoke("autograd_function", Plain, args, {})
    with pytest.raises(TypeError, match="its gradient would come from AddBackward0"):
        calling.invoke("autograd_function", Sneaky, args, {})



def test_autograd_function_protocol_checks_gradients_as_the_engine_does():
    """The protocol calls the student's backward itself (no engine runs): what comes back is what y.backward(dy)
    would have left in the leaves' .grad: broadcast gradients summed down, other dtypes cast, errors alike."""
    def function(returns):
        class Scale(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, gamma, beta, eps):
                ctx.save_for_backward(x, gamma)
                return x * gamma + beta

            @staticmethod
            def backward(ctx, dy):
                x, gamma = ctx.saved_tensors
                return returns(x, gamma, dy)
        return Scale

    x, gamma, beta = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64), torch.randn(3)
    dy = torch.randn(4, 3, dtype=torch.float64)
    cases = {
        "plain": lambda x, g, dy: (dy * g, (dy * x).sum(0), dy.sum(0).float(), None),
        "broadcast": lambda x, g, dy: (dy * g, dy * x, dy, None),  # (4, 3) for (3,): summed down
        "cast": lambda x, g, dy: ((dy * g).float(), (dy * x).sum(0).float(), dy.sum(0), None),
        "too-few": lambda x, g, dy: (dy * g, None),
        "extra-none": lambda x, g, dy: (dy * g, None, None, None, None),
        "eps-grad": lambda x, g, dy: (dy * g, None, None, torch.ones(())),
        "bad-shape": lambda x, g, dy: (dy[:2] * g, None, None, None),
    }
    for name, returns in cases.items():
        cls = function(returns)
        leaves = [t.detach().requires_grad_(True) for t in (x, gamma, beta)]
        try:
            cls.apply(*leaves, 1e-5).backward(dy)
            by_engine = (None, *(leaf.grad for leaf in leaves))
        except RuntimeError as e:
            by_engine = e
        try:
            ours = calling.invoke("autograd_function", cls, (x, gamma, beta, 1e-5, dy), {})
        except RuntimeError as e:
            ours = e
        if isinstance(by_engine, RuntimeError):
            assert isinstance(ours, RuntimeError), (name, ours)
            continue
        assert not isinstance(ours, Exception), (name, ours)
        for a, b in zip(ours[1:], by_engine[1:]):
            assert (a is None) == (b is None), name
            if a is not None:
                assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name


# The start of every sealed-process script: the seal, a check that each way is refused by the lock (printing
# what is not: the test wants "done" alone), and a Function's own backward, which must still run.
SEALED = """
import gc, sys, warnings
import torch
from autograder.inside import calling
warnings.simplefilter("ignore")
calling.seal()
def all_refused(ways, excused=lambda name, e: False):
    for name, way in ways.items():
        try:
            got = way()
        except Exception as e:
            if "compute the gradient by hand" not in str(e) and not excused(name, e):
                print("refused, but not by the lock:", name, type(e).__name__, e)
            continue
        print("OPEN:", name, type(got))
class Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta):
        return 2 * x
    @staticmethod
    def backward(ctx, dy):
        return 2 * dy, None, None
def a_functions_backward_runs(x, dy):
    y, dx, _, _ = calling.invoke("autograd_function", Twice, (x, None, None, dy), {})
    assert torch.equal(dx, 2 * dy)
"""


def run_sealed(script: str) -> None:
    """Run `script` after SEALED in a child Python; it must print "done" and nothing else."""
    done = subprocess.run([sys.executable, "-c", SEALED + script], capture_output=True, text=True,
                          env=child_env(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "done", done.stdout


SEALED_ENGINE = """
x, dy = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
def graph():  # layer norm from ops whose derivatives call no backward operator
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        mu = leaf.mean(1, keepdim=True)
        return (leaf - mu) / torch.sqrt(((leaf - mu) ** 2).mean(1, keepdim=True) + 1e-5), leaf
def run(engine):
    y, leaf = graph()
    return engine.run_backward((y,), (dy,), False, False, (leaf,), True, False)
handle = torch.autograd.Variable._execution_engine
def by_gc():
    found = gc.get_objects()
    engines = [o for o in found if hasattr(type(o), "run_backward")] + [
        o.__self__ for o in found if type(o).__name__ in ("method", "builtin_function_or_method")
        and hasattr(type(getattr(o, "__self__", None)), "run_backward")]
    for engine in engines:
        try:
            return run(engine)
        except RuntimeError as e:
            if "compute the gradient by hand" not in str(e):
                return e
    raise RuntimeError("compute the gradient by hand: nothing found")
def scripted_node():  # TorchScript's differentiable graph: a node of torch's shared CppFunction type
    f = torch.jit.CompilationUnit("def f(a):\\n    return a * a * a\\n").f
    a = torch.ones(2, requires_grad=True)
    with torch.enable_grad():
        for _ in range(4):
            y = f(a)
    return y.grad_fn(torch.ones(2), None, None)
def distributed():
    import torch.distributed.autograd as dist_autograd
    dist_autograd._init(0)
    with dist_autograd.context() as context:
        y, leaf = graph()
        dist_autograd.backward(context, [(y * dy).sum()])
        return dist_autograd.get_gradients(context)
SCRIPTED_GRAD = '''
def g(x: Tensor, dy: Tensor):
    mu = x.mean(1, keepdim=True)
    y = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(1, keepdim=True) + 1e-5)
    return torch.autograd.grad([y], [x], torch.jit.annotate(List[Optional[Tensor]], [dy]))
def b(x: Tensor, dy: Tensor):
    mu = x.mean(1, keepdim=True)
    y = (x - mu) / torch.sqrt(((x - mu) ** 2).mean(1, keepdim=True) + 1e-5)
    y.backward(dy)
    return x.grad
'''
def scripted(name, unit=lambda source: torch.jit.CompilationUnit(source)):
    # TorchScript's own aten::grad and aten::backward run the engine from C++, past every Python door
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        return getattr(unit(SCRIPTED_GRAD), name)(leaf, dy)
def compiler_taken_back():  # the setter, however found, leaves the engine's refusing compiler in place
    for o in gc.get_objects():
        if type(o).__name__ == "builtin_function_or_method" and o.__name__ == "set_autograd_compiler":
            o(None, False)
    torch._C._dynamo.compiled_autograd.set_autograd_compiler(None, False)
    return scripted("g")
def aten_grad_op():  # the same operator from Python, by its name
    y, leaf = graph()
    with torch.enable_grad():
        return torch.ops.aten.grad([y], [leaf], [dy])
ways = {
    "TorchScript's autograd.grad": lambda: scripted("g"),
    "TorchScript's backward": lambda: scripted("b"),
    "TorchScript by a pickled name": lambda: scripted("g", __import__("pickle").loads(
        b"ctorch.jit\\nCompilationUnit\\n.")),
    "TorchScript's autograd.grad, the compiler set to none": compiler_taken_back,
    "aten::grad by name": aten_grad_op,
    "the handle": lambda: run(handle),
    "the bound method's __self__": lambda: run(handle.queue_callback.__self__),
    "a new engine": lambda: run(torch._C._ImperativeEngine()),
    "a new engine of the handle's type": lambda: run(type(handle)()),
    "anything gc finds": by_gc,
    "a graph node called": lambda: graph()[0].grad_fn(dy),
    "the leaf's AccumulateGrad called": lambda: graph()[0].grad_fn.next_functions[0][0](dy),
    "a scripted graph's node": scripted_node,
    "the distributed engine": distributed,
    "TorchScript's autodiff": lambda: torch._C._jit_differentiate(
        torch.jit.CompilationUnit("def g(a):\\n    return a * a\\n").g.graph),
}
all_refused(ways, excused=lambda name, e: isinstance(e, AttributeError))  # no such handle any more
assert not hasattr(calling, "_ENGINE") and not any(hasattr(type(v), "run_backward") and type(v).run_backward
                                                   is not calling._refuse for v in vars(calling).values())
# what stays: the engine's handle for torch's own use, and a Function's backward under the protocol
assert type(handle) is torch._C._ImperativeEngine and hasattr(handle, "queue_callback")
a_functions_backward_runs(x, dy)
print("done")
"""


def test_the_sandbox_seal_leaves_no_way_to_run_the_engine():
    """After `seal`, nothing runs autograd's reverse mode: not the engine however found (the locked handle's
    bound method, the sandbox's own module, gc, a new engine), not a graph's nodes called by hand, not the
    distributed engine nor TorchScript's autodiff, nor TorchScript's own grad and backward (which scored an
    attacker 80/118 in exercise 04 before the engine's compiler refused); a Function's backward still runs
    under the protocol."""
    run_sealed(SEALED_ENGINE)


def test_a_notebooks_lock_refuses_torchscripts_own_grad_and_gives_the_engine_back():
    """In a notebook, `no_autograd` refuses TorchScript's aten::grad for its duration (as the seal does for good),
    then leaves autograd as it found it."""
    import torch

    from normgrad.calling import no_autograd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated
        unit = torch.jit.CompilationUnit("def g(x: Tensor):\n    return torch.autograd.grad([(x * x).sum()], [x])\n")
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    with no_autograd(), torch.enable_grad(), pytest.raises(RuntimeError, match="compute the gradient by hand"):
        unit.g(x)
    assert unit.g(x)[0].tolist() == [2.0, 2.0, 2.0]
    assert torch.autograd.grad((x * x).sum(), x)[0].tolist() == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("source, needle", [
    ("import torch\ne = torch.autograd.Variable._execution_engine._queue_callback.__self__\n", "autograd's engine"),
    ("import torch\ne = torch.autograd.Variable._execution_engine._queue_callback.__self__\n", "__self__"),
    ("g = e.run_backward((y,), (d,), False, False, (x,), True, False)\n", "autograd's engine (e.run_backward)"),
    ("import torch\ne = torch._C._ImperativeEngine()\n", "torch._C"),
    ("import calling\ne = calling._ENGINE[0]\n", "imports the grader's own module calling"),
    ("from calling import _ENGINE\n", "imports the grader's own module calling"),
    ("import protocol, wire\n", "imports the grader's own module wire"),
    ("import bounds\nbounds._launch = None\n", "imports the grader's own module bounds"),
    ("from triton.runtime import interpreter\n", "imports Triton's interpreter"),
    ("import triton.runtime.interpreter as i\n", "imports Triton's interpreter"),
    ("import torch.distributed.autograd as da\n", "imports torch.distributed.autograd"),
])
def test_the_engine_and_the_sandbox_modules_are_flagged(source, needle):
    from autograder.flags import read_cell
    assert any(needle in what for _, what in read_cell(source)), read_cell(source)

# Forward-mode AD: d x_hat/dx of a row is symmetric, so the JVP with tangent dy*gamma is layer norm's dx.
def _ln_jvp_by_forward_ad(x, g):
    import torch.autograd.forward_ad as fad
    with fad.dual_level():
        xd = fad.make_dual(x, g)
        mu = xd.mean(1, keepdim=True)
        return fad.unpack_dual((xd - mu) * torch.rsqrt(((xd - mu) ** 2).mean(1, keepdim=True) + 1e-5)).tangent


def _ln(z):
    mu = z.mean(1, keepdim=True)
    return (z - mu) * torch.rsqrt(((z - mu) ** 2).mean(1, keepdim=True) + 1e-5)


def test_forward_mode_ad_and_torch_func_are_locked_during_a_call_and_restored_after():
    x, g = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
    cheats = {"forward_ad": lambda: _ln_jvp_by_forward_ad(x, g),
              "torch.func.jvp": lambda: torch.func.jvp(_ln, (x,), (g,))[1],
              "torch.func.jacfwd": lambda: torch.func.jacfwd(_ln)(x),
              "torch.func.linearize": lambda: torch.func.linearize(_ln, x)[1](g)}
    for name, cheat in cheats.items():
        with pytest.raises(RuntimeError, match="compute the gradient by hand"):
            calling.invoke("call", cheat, (), {})
    # printing a tensor (which asks forward mode for a tangent) still works in a test
    assert "tensor(" in calling.invoke("call", lambda: f"{x[0, :2]} {x!r}", (), {})
    # outside a test, where the notebook's lock is undone, forward mode gives layer norm's dx
    xr = x.detach().requires_grad_(True)
    _ln(xr).backward(g)
    torch.testing.assert_close(_ln_jvp_by_forward_ad(x, g), xr.grad)
    torch.testing.assert_close(torch.func.jvp(_ln, (x,), (g,))[1], xr.grad)


SEALED_FORWARD_MODE = """
import torch.autograd.forward_ad as fad
x, g = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
assert "tensor(" in calling.invoke("call", lambda: f"{x[0, :2]} {x!r}", (), {})  # printing asks for no tangent
def ln(z):
    mu = z.mean(1, keepdim=True)
    return (z - mu) * torch.rsqrt(((z - mu) ** 2).mean(1, keepdim=True) + 1e-5)
def by_forward_ad():
    with fad.dual_level():
        return fad.unpack_dual(ln(fad.make_dual(x, g))).tangent
def by_dual_operator(make):  # a level however found, then the operator that makes a dual tensor
    level = 0
    found = [o for o in __import__("gc").get_objects() if type(o).__name__ == "builtin_function_or_method"
             and o.__name__ == "_enter_dual_level"]
    for enter in (torch._C._enter_dual_level, *found):
        try:
            level = enter()
            break
        except Exception:
            continue
    return torch._unpack_dual(ln(make(x, g, level)), level)[1]
def by_predispatch():
    from torch._functorch import predispatch
    level = predispatch._enter_dual_level()
    return predispatch._unpack_dual(ln(predispatch._make_dual(x, g, level=level)), level=level)[1]
ways = {
    "forward_ad": by_forward_ad,
    "torch._make_dual": lambda: by_dual_operator(lambda a, b, l: torch._make_dual(a, b, level=l)),
    "torch.ops.aten": lambda: by_dual_operator(lambda a, b, l: getattr(torch.ops.aten, "_make_" + "dual")(a, b, l)),
    "torch._VF": lambda: by_dual_operator(lambda a, b, l: torch._VF._make_dual(a, b, level=l)),
    "_make_dual_copy": lambda: by_dual_operator(lambda a, b, l: torch._make_dual_copy(a, b, level=l)),
    "predispatch": by_predispatch,
    "torch.func.jvp": lambda: torch.func.jvp(ln, (x,), (g,))[1],
    "torch.func.jacfwd": lambda: torch.func.jacfwd(ln)(x),
    "torch.func.linearize": lambda: torch.func.linearize(ln, x)[1](g),
    "torch.func.vjp": lambda: torch.func.vjp(ln, x)[1](g)[0],
    "torch.func.jacrev": lambda: torch.func.jacrev(ln)(x),
    "torch.func.grad": lambda: torch.func.grad(lambda z: (ln(z) * g).sum())(x),
    "torch.func.hessian": lambda: torch.func.hessian(lambda z: ln(z).sum())(x),
}
all_refused(ways)
# what stays open: vmap (it differentiates nothing), and a Function's own backward run by the engine
assert torch.equal(torch.func.vmap(lambda r: r * 2)(x), x * 2)
a_functions_backward_runs(x, g)
print("done")
"""


def test_the_sandbox_seal_refuses_forward_mode_however_reached():
    """After `seal`, forward-mode AD (a JVP is layer norm's gradient) and torch.func's transforms refuse."""
    run_sealed(SEALED_FORWARD_MODE)


SEALED_BACKWARD_KERNELS = """
import torch.export
aten = torch.ops.aten
x, dy, g = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
mean, rstd = x.mean(1, keepdim=True), 1 / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
xb, gb, w = torch.randn(6, 3, 5), torch.randn(6, 3, 5), torch.randn(3)
mb, ib = xb.mean((0, 2)), 1 / torch.sqrt(xb.var((0, 2), unbiased=False) + 1e-5)
ln_args = (dy, x, [8], mean, rstd, g, g, [True, True, True])
bn_args = (gb, xb, w, None, None, mb, ib, True, 1e-5, [True, True, True])
def nested(t):
    return torch.nested.nested_tensor(list(t.unbind(0)))
def from_table(table, name):
    return next(fn for op, fn in table.items() if str(op) == "aten." + name + ".default")
def jvp_decomposition(name):
    import torch._decomp.decompositions_for_jvp as jvp
    return getattr(jvp, name)
ways = {  # torch's backward kernels at dispatch keys other than CPU's
    "layer norm at NestedTensorCPU": lambda: aten.native_layer_norm_backward(nested(dy), nested(x), *ln_args[2:]),
    "batch norm at MkldnnCPU": lambda: aten.native_batch_norm_backward(  # 2d images, every tensor MKL-DNN's
        gb[..., None].to_mkldnn(), xb[..., None].to_mkldnn(), w.to_mkldnn(), None, None, mb.to_mkldnn(),
        ib.to_mkldnn(), True, 1e-5, [True, True, True]),
    "rms norm (meta, python)": lambda: aten._fused_rms_norm_backward(dy, x, [8], rstd, g, [True, True]),
    "a python kernel": lambda: aten.native_layer_norm_backward.default.py_kernels[torch._C.DispatchKey.Meta](*ln_args),
    # PyTorch's Python decompositions of backward operators, however found
    "layer norm from torch.export": lambda: from_table(torch.export.default_decompositions(),
                                                       "native_layer_norm_backward")(*ln_args),
    "batch norm from torch.export": lambda: from_table(torch.export.default_decompositions(),
                                                       "native_batch_norm_backward")(*bn_args),
    "core aten table": lambda: from_table(torch._decomp.core_aten_decompositions(), "native_batch_norm_backward")(*bn_args),
    "global table": lambda: from_table(torch._decomp.decomposition_table, "native_layer_norm_backward")(*ln_args),
    "get_decompositions": lambda: torch._decomp.get_decompositions([aten.native_group_norm_backward])[
        aten.native_group_norm_backward.default](gb, xb, mb[None].expand(6, 3), ib[None].expand(6, 3), w, 6, 3, 5, 3,
                                                 [True, True, True]),
    "the module's function": lambda: torch._decomp.decompositions.native_layer_norm_backward(*ln_args),
    "rms norm's decomposition": lambda: torch._decomp.decompositions._fused_rms_norm_backward(dy, x, [8], rstd, g,
                                                                                               [True, True]),
    "forward mode's decomposition": lambda: jvp_decomposition("native_layer_norm_backward")(*ln_args),
    "scripted from its source": lambda: torch.jit.script(torch._decomp.decompositions.native_layer_norm_backward)(*ln_args),
}
# a decomposition scripted from its source: its code, rewritten, has no source to script
all_refused(ways, excused=lambda name, e: name == "scripted from its source" and "source" in str(e))
# what stays: the forward passes, on nested and MKL-DNN tensors too, plain and compiled
assert torch.allclose(torch.nn.functional.layer_norm(x, [8], g), (x - mean) * rstd * g)
assert torch.nn.functional.layer_norm(nested(x), [8], g, torch.zeros_like(g)).is_nested
x4 = xb[..., None]  # MKL-DNN's batch norm in training takes 2d images
assert torch.nn.functional.batch_norm(x4.to_mkldnn(), None, None, w, torch.zeros_like(w), training=True).is_mkldnn
with torch.no_grad():
    compiled = torch.compile(lambda a, b: torch.nn.functional.layer_norm(a, [8], b), backend="aot_eager")
    assert torch.allclose(compiled(x, g), torch.nn.functional.layer_norm(x, [8], g))
print("done")
"""


def test_the_sandbox_seal_refuses_backward_kernels_and_decompositions_however_reached():
    """After `seal`, torch's backward operators refuse at every dispatch key with a kernel (a nested tensor's,
    MKL-DNN's), and so does every Python decomposition of one (torch.export's table, forward mode's own)."""
    run_sealed(SEALED_BACKWARD_KERNELS)


@pytest.mark.parametrize("source, needle", [
    ("import torch.autograd.forward_ad as fad\n", "imports torch.autograd.forward_ad"),
    ("import torch.autograd.graph\n", "imports torch.autograd.graph"),
    ("from torch.autograd.forward_ad import make_dual, unpack_dual\n", "imports torch.autograd.forward_ad"),
    ("from torch.autograd import forward_ad\n", "imports forward_ad from torch.autograd"),
    ("import torch.func\n", "imports torch.func"),
    ("import torch.func as tf\n", "imports torch.func"),
    ("from torch.func import jvp\n", "imports torch.func"),
    ("from torch import func\n", "imports func from torch"),
    ("import torch\ny = torch._make_dual(x, t, level=0)\n", "forward-mode automatic differentiation (torch._make_dual)"),
    ("import torch\nwith torch.autograd.forward_ad.dual_level():\n    pass\n", "asks autograd for a gradient"),
])
def test_forward_mode_and_torch_func_are_flagged_in_every_import_form(source, needle):
    from autograder.flags import read_cell
    assert any(needle in what for _, what in read_cell(source)), read_cell(source)


@pytest.mark.parametrize("source, needle", [
    ("import subprocess\nsubprocess.run(['python3', '-c', code])\n", "imports subprocess, which starts other processes"),
    ("from multiprocessing import Pool\n", "imports multiprocessing"),
    ("import os\nos.system('python3 -c 1')\n", "starts another process (os.system)"),
    ("import os\nos.execv('/usr/bin/python3', [])\n", "starts another process (os.execv)"),
    ("import os\npid = os.fork()\n", "starts another process (os.fork)"),
    ("from torch.utils._python_dispatch import _disable_current_modes\n", "imports torch.utils._python_dispatch"),
    ("import torch.overrides\n", "imports torch.overrides"),
    ("import torch.utils.dlpack as d\na = np.from_dlpack(d.to_dlpack(x))\n", "reaches around the grader's guards"),
    ("import numpy as np\na = np.frombuffer(buf, dtype=np.float32)\n", "reaches around the grader's guards"),
    # a constant name in getattr is the attribute itself
    ("import sys\nsp = getattr(sys, 'modules')['subprocess']\n", "looks into the interpreter (sys.modules)"),
    ("with getattr(torch, '_C')._DisableTorchDispatch():\n    pass\n", "torch._C"),
    ("setattr(f, '__code__', f.__code__.replace(co_filename='x'))\n", "(.__code__)"),
    ("op = operator.attrgetter('ops.aten.x')(torch)\n", "looks up attributes by name (operator.attrgetter)"),
    ("kernel.add_pre_run_hook(torch.Tensor.sub_)\n", "reaches around the grader's guards"),
    ("table = torch.export.default_decompositions()\n", "PyTorch's own derivative formulas"),
    ("rows = torch.nested.nested_tensor(list(x))\n", "another tensor layout"),
    ("y = x.to_mkldnn()\n", "another tensor layout"),
    # finite differences on the library's forward (Richardson on F.batch_norm earned 16/22 unflagged)
    ("import torch.nn.functional as F\nup = F.batch_norm(x + h * e, None, None, w, b, training=True)\n",
     "the library's own normalization (F.batch_norm)"),
    ("from torch.nn.functional import layer_norm as ln\n", "imports layer_norm from torch.nn.functional"),
    ("norm = torch.nn.GroupNorm(3, 6)\n", "the library's own normalization (torch.nn.GroupNorm)"),
    ("y = getattr(torch, 'rms_norm')(x, [8])\n", "the library's own normalization (torch.rms_norm)"),
    ("y = torch._native_batch_norm_legit(x, w, b, True, 0.0, 1e-5)\n",  # 17/51 once, unflagged
     "the library's own normalization (torch._native_batch_norm_legit)"),
    ("n = nn.LazyInstanceNorm1d()\n", "the library's own normalization (nn.LazyInstanceNorm1d)"),
    # a complex step: f(x + ih).imag / h is the derivative of the answer's own forward (51/51 once, unflagged)
    ("z = fwd(torch.complex(u, 1e-30 * g)).imag / 1e-30\n", "complex numbers (torch.complex)"),
    ("z = fwd(u + 1e-30j * g)\n", "complex numbers (1e-30j)"),
    ("z = np.asarray(u, dtype='complex128')\n", "complex numbers ('complex128')"),
    # torch's guard around a Triton launcher holds per thread (120/120 once, unflagged; the job now refuses)
    ("import threading\n", "imports threading, which runs code in other threads"),
    ("from _thread import start_new_thread\n", "imports _thread"),
    # a five-point stencil in np.longdouble comes within 5.8e-15 of layer norm's dx, inside float64's tolerance;
    # sympy and mpmath come with torch
    ("X = x.astype(np.longdouble)\n", "extended precision (np.longdouble)"),
    ("import sympy as sp\n", "imports sympy: symbolic or extended-precision arithmetic"),
    ("from mpmath import diff\n", "imports mpmath"),
    ("from decimal import Decimal, getcontext\n", "imports decimal"),
    # a second red team's unflagged full marks: 1j as np.emath.sqrt(-1), a Transformer's LayerNorm, dual numbers
    ("J = np.emath.sqrt(-1.0)\nd = np.real(-J * f(x + 1e-30 * J))\n", "complex numbers (np.emath)"),
    ("J = np.emath.sqrt(-1.0)\nd = np.real(-J * f(x + 1e-30 * J))\n", "complex numbers (np.real)"),
    ("ln = torch.nn.TransformerEncoderLayer(n, 1, layer_norm_eps=eps).norm1\n",
     "the library's own normalization (torch.nn.TransformerEncoderLayer)"),
    ("class Dual:\n    def __mul__(s, o):\n        return Dual(s.v * o.v, s.t * o.v + s.v * o.t)\n",
     "defines arithmetic on a class of its own (Dual.__mul__)"),
    # a third red team's unflagged full marks: 06 at 120/120 with NumPy's arithmetic written into dx by ctypes
    # (sys.modules, np.frombuffer and from_address reached through class patterns, which look attributes up), and
    # 03 at 48/48 by a complex step whose 1j was (-1) ** 0.5 and whose imaginary part was read by a pattern
    ("import sys\nmatch sys:\n    case object(modules=m):\n        ct = m['ctypes']\n",
     "looks into the interpreter (sys.modules)"),
    ("match np:\n    case object(frombuffer=fb):\n        pass\n", "reaches around the grader's guards (np.frombuffer)"),
    ("match buf:\n    case object(from_address=fa):\n        pass\n", "reaches around the grader's guards"),
    ("match torch:\n    case object(ops=object(aten=a)):\n        pass\n", "PyTorch's operators directly (torch.ops)"),
    ("match xh:\n    case object(imag=part):\n        pass\n", "complex numbers (xh.imag)"),
    ("class A(np.ndarray):\n    __match_args__ = ('imag',)\n", "uses __match_args__"),
    ("I = (-1) ** 0.5\n", "complex numbers (a negative number to a fractional power"),
    ("I = (I - I.conjugate()) / 2\n", "complex numbers (I.conjugate)"),
    ("I = np.roots([1, 0, 1])[0]\n", "complex numbers (np.roots)"),
    ("class R:\n    __array_interface__ = {'data': (dx.data_ptr(), False), 'shape': (n,), 'typestr': '<f4'}\n",
     "an array over a raw address: __array_interface__"),
    ("r.__array_interface__ = spec\nview = np.asarray(r)\n", "reaches around the grader's guards (r.__array_interface__)"),
    ("R = type('R', (), {'__array_interface__': spec})\n", "an array over a raw address: __array_interface__"),
    # arithmetic hooks set on a class after it is made, and dtypes by their one-letter codes
    ("D.__mul__ = lambda s, o: D(s.v * o.v, s.t * o.v + s.v * o.t)\n", "arithmetic by its hook (D.__mul__)"),
    ("D = type('D', (), {'__mul__': mul})\n", "arithmetic by its hook ('__mul__')"),
    ("D = type('D', (), dict(__rmul__=mul))\n", "arithmetic by its hook (__rmul__=)"),
    ("X = x.astype(np.dtype('g'))\n", "extended precision ('g')"),
    ("X = x.astype('f16')\n", "extended precision ('f16')"),
    ("Z = np.zeros(3, dtype='G')\n", "complex numbers ('G')"),
    # a third red team's: the imaginary unit by a name, the parts by view_as_real, hooks named at run time, and
    # long double by its code
    ("m = -1.0\nI = m ** 0.5\n", "complex numbers (a negative number to a fractional power"),
    ("d = torch.view_as_real(f(X))[..., 1] / h\n", "complex numbers (torch.view_as_real)"),
    ("D = type('D', (), {f'__{k}__': v for k, v in ops.items()})\n", "makes a class whose names are built at run time"),
    ("L = np.dtype(np.typecodes['Float'][-1]).type\n", "extended precision (np.typecodes)"),
    # code kept out of the cell: a module written from a payload and imported, a callable unpickled by its name
    ("import base64, sys\nsys.path.insert(0, d)\n", "imports base64, which rebuilds code"),
    ("import base64, sys\nsys.path.insert(0, d)\n", "changes where Python imports from (sys.path)"),
    ("import pickle\nCU = pickle.loads(b'ctorch.jit\\nCompilationUnit\\n.')\n", "imports pickle, which rebuilds"),
])
def test_other_processes_and_reaching_around_the_guards_are_flagged(source, needle):
    """A Python started from the answer imports an unlocked PyTorch; the Triton exercise's guard
    (calling.kernel_work) can be switched off or its tensors read as raw memory."""
    from autograder.flags import read_cell
    assert any(needle in what for _, what in read_cell(source)), read_cell(source)


@pytest.mark.parametrize("source", [
    "import os\npath = os.path.join('a', 'b')\n",
    "total = getattr(x, 'sum')(1)\nsetattr(ctx, 'eps', eps)\n",
    "import torch\nimport triton\nimport triton.language as tl\nx = torch.empty(3)\n",
    "import torch\nfrom torch.autograd import Function\n",
    "import torch.autograd\nimport torch.autograd.function\nfrom torch.autograd.function import once_differentiable\n",
    "import torch\nclass F(torch.autograd.Function):\n    @staticmethod\n    def backward(ctx, dy):\n        return dy\n",
    "y = layernorm_forward(x, gamma, beta)\nnorm = x.norm(dim=1)\nz = torch.nn.functional.normalize(x)\n",
    "a = x.reshape(3, order='F')\nb = np.zeros(3, dtype='f8')\nD = type('D', (), {})\ny = x ** 0.5\n"
    "names = {'f16': torch.float16, 'g': gamma}\n",
    "match x.shape:\n    case (m, n):\n        pass\n    case _:\n        raise ValueError('x must be 2-D')\n",
])
def test_the_function_machinery_is_not_flagged(source):
    from autograder.flags import read_cell
    assert read_cell(source) == []


FITTED_INTERPRETER = """
import operator, os, sys
os.environ["TRITON_INTERPRET"] = "1"
import numpy as np, torch, triton, triton.language as tl
from triton.runtime import interpreter
from normgrad.calling import fit_triton_interpreter

class Strict(np.ndarray):  # NumPy 2.5's rule, whatever NumPy runs here: only a 0-d array converts to an int
    def __int__(self):
        if self.ndim:
            raise TypeError("only 0-dimensional arrays can be converted to Python scalars")
        return int(self.item())

assert fit_triton_interpreter(force=True) and not fit_triton_interpreter(force=True)
scope = interpreter._LangPatchScope()
class Tensor: pass
interpreter._patch_lang_tensor(Tensor, scope)
scalar = Tensor()
scalar.handle = type("Handle", (), {"data": np.array([37], np.int32).view(Strict)})()
assert operator.index(scalar) == 37
scope.restore()
assert not hasattr(Tensor, "__index__")

@triton.jit
def row_sums(X, S, N, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    acc = tl.zeros([BLOCK], tl.float32)
    for c in range(0, N, BLOCK):  # a loop to an argument: what the interpreter reads with __index__
        j = c + tl.arange(0, BLOCK)
        acc += tl.load(X + r * N + j, mask=j < N, other=0.0)
    tl.store(S + r, tl.sum(acc, axis=0))

x, s = torch.randn(3, 37), torch.empty(3)
row_sums[(3,)](x, s, 37, BLOCK=8)
torch.testing.assert_close(s, x.sum(1))
print("fitted")
"""


def test_the_triton_interpreter_is_fitted_to_read_indices_as_numpy_2_5_allows(root):
    """Triton 3.6's interpreter beside NumPy 2.5 failed every kernel with a loop to an argument (int() of a
    one-element array); the fit reads the index from a 0-d array, in the interpreter's own patch scope."""
    done = subprocess.run([sys.executable, "-c", FITTED_INTERPRETER], cwd=root, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "fitted", done.stderr[-3000:]


STRICT_INTERPRETER = """
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch, triton, triton.language as tl
from triton.runtime import interpreter
from normgrad.calling import bounds

@triton.jit
def row_sums(X, W, OUT, N, stride, BLOCK: tl.constexpr, LE: tl.constexpr, OTHER: tl.constexpr, SHIFT: tl.constexpr):
    r = tl.program_id(0)
    j = tl.arange(0, BLOCK) + SHIFT
    ok = j <= N if LE else j < N
    if OTHER:
        x = tl.load(X + r * stride + j, mask=ok, other=0.0).to(tl.float32)
    else:
        x = tl.load(X + r * stride + j, mask=ok).to(tl.float32)
    tl.store(OUT + r, tl.sum(x * tl.load(W + j, mask=j < N, other=0.0).to(tl.float32), axis=0))

@triton.jit
def scatter(OUT, N, BLOCK: tl.constexpr, ATOMIC: tl.constexpr):
    j = tl.arange(0, BLOCK)
    if ATOMIC:
        tl.atomic_add(OUT + j, 1.0, mask=j <= N)
    else:
        tl.store(OUT + j, 1.0, mask=j <= N)

@triton.jit
def copy_rows(X, Y, M, N, CHUNK: tl.constexpr, LE: tl.constexpr):  # a row's program, in chunks
    row = tl.program_id(0)
    for start in range(0, N, CHUNK):
        cols = start + tl.arange(0, CHUNK)
        mask = (row < M) & ((cols <= N) if LE else (cols < N))  # a scalar's condition and a block's: int32 here
        tl.store(Y + row * N + cols, tl.load(X + row * N + cols, mask=mask, other=0.0), mask=mask)

def run(kernel, *args, **meta):
    try:
        kernel[(args[0].shape[0] if kernel in (row_sums, copy_rows) else 1,)](*args, **meta)
        return "ran"
    except Exception as e:  # the interpreter wraps what stopped a kernel
        return str(e)

M, N = 5, 300
wide = torch.randn(M, 320)
x, w, out = wide[:, :N], torch.randn(N), torch.empty(M)
row = dict(BLOCK=512, LE=False, OTHER=True, SHIFT=0)
# as Triton ships its interpreter: a mask of <= reads past x's rows and the last row past x, unseen;
# a load without other sums zeros
print("before:", run(row_sums, x, w, out, N, 320, **dict(row, LE=True)),
      run(row_sums, x, w, out, N, 320, **dict(row, OTHER=False)), bool(out.isfinite().all()))
assert interpreter.InterpreterBuilder.create_masked_load is not None
from normgrad.calling import fit_triton_interpreter
assert fit_triton_interpreter() and not fit_triton_interpreter()
print("right:", run(row_sums, x, w, out, N, 320, **row), float((out - x @ w).abs().max()) < 1e-4)
print("<=:", run(row_sums, x, w, out, N, 320, **dict(row, LE=True)))
print("shifted:", run(row_sums, x, w, out, N, 320, **dict(row, SHIFT=-3)))
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    xs = x.to(dtype)
    print("no other:", dtype, run(row_sums, xs, w.to(dtype), out, N, xs.stride(0), **dict(row, OTHER=False)),
          int(out.isnan().sum()))
@triton.jit
def past_the_end(A, OUT, START, M, R: tl.constexpr, OTHER: tl.constexpr):  # a block of R rows from START
    rows = START + tl.arange(0, R)
    if OTHER:
        tl.store(OUT + tl.arange(0, R), tl.load(A + rows, mask=rows < M, other=0.0))
        tl.store(OUT + R, tl.load(A + START, mask=START < M, other=0.0))  # a scalar's load
    else:
        tl.store(OUT + tl.arange(0, R), tl.load(A + rows, mask=rows < M))
        tl.store(OUT + R, tl.load(A + START, mask=START < M))

# the interpreter drops an other=0.0 of one element (it reads a one-element tensor's truth from its value):
# given or not is read where tl.load is lowered
for rows in (1, 2):
    for other in (True, False):
        read = torch.full((rows + 1,), 7.0)
        run(past_the_end, torch.ones(5), read, 5, 5, R=rows, OTHER=other)
        print(f"past the end, {rows} row(s), other={other}:", read.tolist())
for width in (65, 100):  # 65: the last chunk's only lane is the last element
    a, b = torch.randn(3, width), torch.zeros(3, width)
    print(f"copy {width}:", run(copy_rows, a, b, 3, width, CHUNK=64, LE=False), torch.equal(a, b))
print("copy <=:", run(copy_rows, torch.randn(3, 100), torch.zeros(3, 100), 3, 100, CHUNK=64, LE=True))
o = torch.zeros(N)
print("store:", run(scatter, o, N, BLOCK=512, ATOMIC=False))
print("atomic:", run(scatter, o, N, BLOCK=512, ATOMIC=True))

@triton.jit
def unmasked(X, OUT, BLOCK: tl.constexpr):
    tl.store(OUT, tl.sum(tl.load(X + tl.arange(0, BLOCK)), axis=0))

print("unmasked:", run(unmasked, torch.randn(N), out, BLOCK=512))

from triton.tools.tensor_descriptor import TensorDescriptor

@triton.jit
def described(D, OUT, BLOCK: tl.constexpr):  # a descriptor's load passes its options by keyword
    tl.store(OUT + tl.arange(0, BLOCK), D.load([0]))

v, copied = torch.arange(16.0), torch.zeros(16)
print("descriptor:", run(described, TensorDescriptor.from_tensor(v, [16]), copied, BLOCK=16), torch.equal(v, copied))

@triton.jit
def block_sum(X, OUT, N, BLOCK: tl.constexpr, PADDING: tl.constexpr):  # a block pointer past the row's end
    block = tl.make_block_ptr(X, (N,), (1,), (0,), (BLOCK,), (0,))
    if PADDING:
        tl.store(OUT, tl.sum(tl.load(block, boundary_check=(0,), padding_option="zero"), axis=0))
    else:
        tl.store(OUT, tl.sum(tl.load(block, boundary_check=(0,)), axis=0))

for padding in (True, False):
    total = torch.zeros(1)
    print(f"block pointer, padding={padding}:", run(block_sum, torch.ones(5), total, 5, BLOCK=8, PADDING=padding),
          total.tolist())

def switched_off(meta):  # the grid is worked out after the launch noted its tensors
    bounds._launch = None
    return (M,)

try:
    row_sums[switched_off](x, w, out, N, 320, **row)
except Exception as e:
    print("switched off:", e)
"""


def test_the_strict_interpreter_stops_lanes_outside_the_launchs_tensors_and_poisons_masked_off_lanes(root):
    """bounds.py: what Triton's interpreter let through before it (a `<=` mask, a load without `other`), and what
    it stops after: loads, stores and atomics past a tensor's end or before its start, named; a view's extent
    (x: 5 rows of 300 in rows of 320) is its first to last element, not its storage; masked-off lanes NaN in
    float32, float16 and bfloat16, and with `other=0.0` zero even in a block of one element or a scalar's load,
    where the interpreter drops it before its builder (a correct kernel lost 6 points so); a mask of a scalar's
    condition and a block's read as truth values, not as the lanes' positions its int32 would index; a right
    kernel, and a descriptor's load, untouched; a launch whose noted tensors
    were taken away stops."""
    done = subprocess.run([sys.executable, "-c", STRICT_INTERPRETER], cwd=root, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout.splitlines()
    stopped = "OutOfBounds('{} outside every tensor the kernel was given: {} of the {} lanes its mask let through, " \
              "the first of them {}, the tensor it lies nearest; check the {}')"
    mask = "mask (`cols < N`, not `<=`) and the strides"
    assert said == [
        "before: ran ran True",
        "right: ran True",
        "<=: " + stopped.format("a load", 1, 301, "1 element past the end of X", mask),
        "shifted: " + stopped.format("a load", 3, 303, "3 elements before the start of X",
                                     "offsets (a negative one?) and the strides"),
        *[f"no other: torch.{t} ran 5" for t in ("float32", "float16", "bfloat16")],
        "past the end, 1 row(s), other=True: [0.0, 0.0]", "past the end, 1 row(s), other=False: [nan, nan]",
        "past the end, 2 row(s), other=True: [0.0, 0.0, 0.0]", "past the end, 2 row(s), other=False: [nan, nan, nan]",
        "copy 65: ran True", "copy 100: ran True",
        "copy <=: " + stopped.format("a load", 1, 37, "1 element past the end of X", mask),
        "store: " + stopped.format("a store", 1, 301, "1 element past the end of OUT", mask),
        "atomic: " + stopped.format("an atomic operation", 1, 301, "1 element past the end of OUT", mask),
        "unmasked: " + stopped.format("a load", 212, 512, "1 element past the end of X", mask).replace(
            "of the 512 lanes its mask let through", "of its 512 lanes"),
        "descriptor: ran True",
        "block pointer, padding=True: ran [5.0]", "block pointer, padding=False: ran [nan]",
        "switched off: OutOfBounds('a load outside every tensor the kernel was given: the tensors of this launch were "
        "not noted, the check was switched off')",
    ], done.stdout


HANDLES = """
import os
os.environ["TRITON_INTERPRET"] = "1"
import torch, triton, triton.language as tl
from autograder.inside import calling
calling.fit_triton_interpreter()

def doubled(t):  # plain Python a kernel calls: NumPy on the block it loaded
    t.handle.data[:] *= 2

@triton.jit
def twice(X, N, BLOCK: tl.constexpr, HELPER: tl.constexpr):
    j = tl.arange(0, BLOCK)
    x = tl.load(X + j, mask=j < N, other=0.0)
    if HELPER:
        doubled(x)
    else:
        x = x * 2
    tl.store(X + j, x, mask=j < N)

for helper in (False, True):
    x = torch.ones(5)
    try:
        twice[(1,)](x, 5, BLOCK=8, HELPER=helper)
        print(helper, x.tolist())
    except Exception as e:  # the interpreter wraps what stopped a kernel
        print(helper, type(e).__name__, calling.HANDLE in str(e), x.tolist())
"""


def test_under_the_interpreter_only_triton_reads_a_kernel_values_numpy_array(root):
    """A kernel value's `handle` holds its NumPy array under the interpreter: a red-team kernel handed its blocks
    to a Python helper that did the whole backward in NumPy (120/120 on the CPU, and no GPU would compile it).
    Only Triton's own code reads it now; a kernel computing with tl's operations runs as before."""
    done = subprocess.run([sys.executable, "-c", HANDLES], cwd=root, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["False [2.0, 2.0, 2.0, 2.0, 2.0]",
                                        "True InterpreterError True [1.0, 1.0, 1.0, 1.0, 1.0]"], done.stdout


# --- frames: the only way data crosses the sandbox wall ---------------------------------------

def test_frames_arrive_whole_in_any_chunking():
    files = {"job.json": b"{}", "c000/manifest.json": b'{"t": "py", "v": 1}', "c000/a1.npy": bytes(range(256)) * 10}
    stream = b"".join(wire.frame(n, d) for n, d in files.items())
    reader = wire.FrameReader()
    for i in range(0, len(stream), 7):
        reader.feed(stream[i:i + 7])
    reader.close()
    assert reader.error is None and reader.files == files


@pytest.mark.parametrize("stream,reason", [
    (b"../../grades.csv 2\n24", "bad frame name"),
    (b"/etc/passwd 1\nx", "bad frame name"),
    (b".hidden 1\nx", "bad frame name"),
    (b"a b c\n", "malformed"),
    (b"x" * 400, "malformed"),
    (b"big 999999999\n", "too large"),
    (b"a 1\nxa 1\ny", "sent twice"),
    (b"a -1\n", "bad frame name"),
])
def test_frames_refuse_bad_names_sizes_and_duplicates(stream, reason):
    reader = wire.FrameReader(max_file_bytes=1 << 20)
    reader.feed(stream)
    assert reader.error is not None and reason in reader.error
    reader.feed(wire.frame("later", b"ignored"))  # nothing is accepted after an error
    assert "later" not in reader.files


def test_frames_refuse_too_many_files_and_an_unfinished_one():
    reader = wire.FrameReader(max_files=3)
    for i in range(4):
        reader.feed(wire.frame(f"f{i}", b"x"))
    assert reader.error and len(reader.files) == 3
    reader = wire.FrameReader()
    reader.feed(b"name 10\nabc")
    reader.close()
    assert reader.error == "the stream ended inside a frame"


# --- what the sandbox is given -----------------------------------------------------------------

def test_the_sandbox_gets_no_folder_of_the_repository_or_the_current_directory(tmp_path, monkeypatch):
    from autograder.course import ROOT
    from autograder.sandbox import _mount_plan, python_paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    paths = python_paths()
    assert str(tmp_path) not in paths
    assert not any(p == str(ROOT) or p.startswith(str(ROOT / "tests")) for p in paths)
    mounts, inside = _mount_plan()
    assert not any(there.startswith(str(ROOT)) for _, there in mounts), "the repository's path would exist inside"
    assert any(p.startswith("/sandbox/lib") or "site-packages" in p for p in inside)


THREAD_STARTS_A_BURNER = """
import subprocess, sys, threading, time
def start_and_stay():  # a thread that ended would hand its children to the main thread
    subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(60)
threading.Thread(target=start_and_stay).start()
time.sleep(60)
"""


def test_the_cpu_charge_counts_a_process_started_from_a_thread():
    """A fork bomb is charged its CPU time; a child started from a thread is listed under that thread."""
    from autograder.sandbox import _tree_cpu

    proc = subprocess.Popen([sys.executable, "-c", THREAD_STARTS_A_BURNER], start_new_session=True)
    try:
        time.sleep(3.0)
        assert _tree_cpu(proc.pid) > 1.0, "the burner's CPU time was not charged"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- private cases ---------------------------------------------------------------------------

PRIVATE = '''
import numpy as np
from normgrad.cases import Case, Mistake
from normgrad.cases.forward import make_trial, _forward

CASES = {"01-forward": [
    Case("layernorm_forward", "private-long-rows", 3, True, "rows of 300 features", make_trial("layer", (3, 300)),
         hint="a private hint: said where no known mistake matches"),
]}
MISTAKES = {"01-forward": [
    Mistake("layernorm_forward", "halved", "the output halved (a private slip)", "01-forward.html#scale-and-shift",
            lambda x, gamma, beta, eps=1e-5: (lambda y, c: (y / 2, c))(*_forward(x, gamma, beta, eps, 1))),
]}
'''


def test_private_cases_add_points_and_name_private_mistakes(tmp_path):
    from autograder.grading import grade

    private = tmp_path / "extra.py"
    private.write_text(PRIVATE)
    report = grade(_forward_times(tmp_path, "/ 2"), "01-forward", private=str(private))
    assert report.max_score == load("01-forward").max_score + 3  # the private case's 3 points
    result = next(r for r in report.results if r.case_id == "layernorm_forward/private-long-rows")
    assert result.private and result.hidden and not result.passed
    assert result.mistake is not None and result.mistake.name == "halved"
    assert "a private hint" not in "\n".join(result.problems)  # the named mistake says it
    assert report.by_function()["layernorm_forward"] == (0.0, 15.0)


def test_a_case_hint_is_said_where_no_known_mistake_matches_a_wrong_value(tmp_path):
    from autograder.grading import grade

    private = tmp_path / "extra.py"
    private.write_text(PRIVATE)
    report = grade(_forward_times(tmp_path, "* 1.1"), "01-forward", private=str(private))
    result = next(r for r in report.results if r.case_id == "layernorm_forward/private-long-rows")
    assert not result.passed and result.mistake is None
    assert result.problems[-1] == "a private hint: said where no known mistake matches", result.problems


def _forward_times(tmp_path, scaled: str):
    """A submission of 01-forward whose y is the right one `scaled` ("/ 2", "* 1.1")."""
    import nbformat

    source = ("import numpy as np\n\ndef layernorm_forward(x, gamma, beta, eps=1e-5):\n"
              "    mean = x.mean(axis=1)\n    c = x - mean[:, None]\n"
              "    rstd = 1 / np.sqrt((c * c).mean(axis=1) + eps)\n    x_hat = c * rstd[:, None]\n"
              f"    return (gamma * x_hat + beta) {scaled}, {{'x': x, 'mean': mean, 'rstd': rstd, 'x_hat': x_hat,"
              " 'gamma': gamma, 'eps': eps}\n")
    path = tmp_path / "nb.ipynb"
    nbformat.write(submission("01-forward", {"layernorm_forward": source}, base=solved("01-forward")), str(path))
    return path


@pytest.mark.parametrize("edit,reason", [
    (lambda t: t.replace('3, True, "rows', '3, False, "rows'), "must be hidden"),
    (lambda t: t.replace('Case("layernorm_forward"', 'Case("layernorm_backward"'), "does not have"),
    (lambda t: t.replace('"private-long-rows"', '"small"'), "reuses a case's name"),
    (lambda t: t.replace('hint="a private hint: said where no known mistake matches"', "hint=3"), "not a string"),
    (lambda t: t + "\nCASES = []\n", "must be dicts"),
    (lambda t: t + "\nraise ImportError('no such module')\n", "failed to load"),
])
def test_private_cases_are_checked(tmp_path, edit, reason):
    from autograder.private import PrivateCasesError, with_private
    from normgrad.cases import load

    private = tmp_path / "extra.py"
    private.write_text(edit(PRIVATE))
    with pytest.raises(PrivateCasesError, match=reason):
        with_private(load("01-forward"), str(private))


@pytest.mark.parametrize("header", [
    "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",  # objects: pickles
    "{'descr': '<f8', 'fortran_order': False, 'shape': (1000,), }",  # more than the bytes hold
    "{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': (1,), }",
    "{'descr': '<f8', 'shape': (1,), 'fortran_order': False, 'x': 1}",
])
def test_npy_files_are_parsed_strictly(header):
    import io

    good = io.BytesIO()
    np.save(good, np.zeros(1))
    body = good.getvalue()[-8:]
    text = header.encode("latin-1").ljust(118) + b"\n"
    forged = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body
    with pytest.raises(wire.WireError):
        wire.parse_npy(forged)
    assert wire.parse_npy(good.getvalue()).tolist() == [0.0]
    with pytest.raises(wire.WireError, match="trailing"):
        wire.parse_npy(good.getvalue() + b"x")


# --- the book's own functions, copied ----------------------------------------------------------

class _Renamed(__import__("ast").NodeTransformer):
    """Every argument and assigned name of a function given another name: what a copy that hides looks like."""

    def visit_arg(self, node):
        node.arg = "my_" + node.arg
        return node

    def visit_Name(self, node):
        if node.id not in ("tl", "triton", "torch", "range", "min", "max"):
            node.id = "my_" + node.id
        return node


def test_the_books_own_functions_are_flagged_names_aside_and_no_solution_is():
    """Chapter 6's row-wise code answers step 1 of exercise 06 (`[0]` of its three gradients passes every test):
    pasted whole, or with every name of the kernel changed and its docstring and comments gone, its functions are
    named with the chapter they come from. A kernel with one statement of its own is not, nor is any function
    of the six solutions, nor the chapter's shortest functions, which anyone who derived them writes alike."""
    import ast

    import nbformat

    from autograder.copied import book_functions, copied, fingerprint
    from autograder.course import ROOT

    chapter_6 = (ROOT / "normgrad" / "triton_layernorm.py").read_text()
    paste = chapter_6 + "\n\ndef layernorm_dx_triton(dy, x, gamma, mean, rstd):\n" \
                        "    return layernorm_backward_rowwise(dy, x, gamma, mean, rstd)[0]\n"
    said = {name: shown for _, name, shown in copied(paste)}
    assert said["_dx_row_kernel"] == ("chapter 6", "_dx_row_kernel"), said
    assert said["layernorm_backward_rowwise"] == ("chapter 6", "layernorm_backward_rowwise"), said
    kernel = next(n for n in ast.parse(chapter_6).body if isinstance(n, ast.FunctionDef) and n.name == "_dx_row_kernel")
    kernel.body = [s for s in kernel.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    kernel.name = "my_kernel"
    hidden = ast.unparse(_Renamed().visit(kernel))
    assert "my_row" in hidden and '"""' not in hidden
    assert copied(hidden) == [(2, "my_kernel", ("chapter 6", "_dx_row_kernel"))]
    changed = hidden.replace("tl.program_id(0)", "tl.program_id(axis=0)")
    assert changed != hidden and copied(changed) == []
    for assignment in ("01-forward", "02-chain-rule", "03-variance-derivative", "04-code-mapping", "05-thnn",
                       "06-triton"):
        cells = nbformat.read(notebooks(assignment).source, 4).cells
        assert [h for c in cells if c.cell_type == "code" for h in copied(c.source)] == [], assignment
    assert len(book_functions()) >= 20  # chapter 6's kernels and launchers, and the longer functions of 1, 2, 4, 5
    formula = ast.parse("def f(x):\n    m = x.mean(1, keepdims=True)\n    return (x - m) / x.std(1, keepdims=True)\n")
    assert fingerprint(formula.body[0]) is None  # shorter than LEAST_NODES
    # hostile cells: one too deep for the parser, one it parses but too deep for ast.dump
    assert copied("_pad = 0" + "+0" * 3000 + "\n") == [] and copied("def f(x):\n    return x" + "+x" * 1500) == []
    assert copied("def f(x):\n    return x\x00\n") == [] and copied("%timeit f()\ndef (:\n") == []  # no Python


def test_a_submissions_copies_are_one_flag_that_names_each_and_where_it_is():
    """A paste of chapter 6's module is 22 of its functions: one line for the instructor, not 22. A copy under
    a name of its own says which of the book's functions it is."""
    from autograder.copied import flag_copies
    from autograder.course import ROOT
    from autograder.cells import Picked
    from autograder.flags import read_submission as flags_of

    chapter_6 = (ROOT / "normgrad" / "triton_layernorm.py").read_text()
    kernel = chapter_6[chapter_6.index("@triton.jit\ndef _dx_row_kernel"):chapter_6.index("@triton.jit\ndef _column_sums")]
    renamed = kernel.replace("_dx_row_kernel", "my_kernel")
    cells = [Picked(label="first", source=chapter_6), Picked(label="second", source=renamed)]
    flags = [f for f in flags_of("06-triton", cells) if "as the book shows" in f]
    assert len(flags) == 1, flags
    assert flags[0].startswith("defines 23 of chapter 6's functions as the book shows them (names aside): "
                               "`_dx_row_kernel` (cell 'first' line "), flags
    assert "`my_kernel` (cell 'second' line 2), which is chapter 6's `_dx_row_kernel`" in flags[0], flags
    assert flags[0].endswith(". The exercise asks for code of your own")
    assert flag_copies([]) == []
