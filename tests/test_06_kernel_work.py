"""Exercise 06: a Triton function scores only when its kernels do the work.

A red-team answer once took full marks with all of the arithmetic in torch and a kernel that does
nothing (`tl.store(p, tl.load(p))`), launched once so that "a kernel of yours ran" held. The cases of
06 now call the student's functions under the `kernels` protocol (autograder.inside.calling.kernel_work):
around the kernels, torch may allocate, view, copy and convert dtypes, and refuses arithmetic, sums
and handing a tensor's values to Python or NumPy. Triton's own code (its launcher, its interpreter's
copies to and from the host, its autotuner) is free. These tests hold that line: the do-nothing-kernel
answers fail, each with the reason; the course's solution and chapter 6's launchers pass.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from autograder.course import notebooks
from autograder.inside import calling
from helpers import child_env, failures, judged, report, solved, submission, write
from normgrad import triton_layernorm
from normgrad.cases import load

ASSIGNMENT = "06-triton"

REFUSED = "while your function ran: in this exercise the arithmetic and the sums are done by your Triton kernels"

TOUCH = '''
import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def _touch(p):  # does nothing: it only makes "a kernel of yours ran" true
    tl.store(p, tl.load(p))


def _ln_grads(dy, x, gamma, mean, rstd):
    w = torch.float64 if x.dtype == torch.float64 else torch.float32
    X, G, g, m, r = x.to(w), dy.to(w), gamma.to(w), mean.to(w)[:, None], rstd.to(w)[:, None]
    xh = (X - m) * r
    gg = G * g
    dx = r * (gg - gg.mean(1, keepdim=True) - xh * (gg * xh).mean(1, keepdim=True))
    return dx.to(x.dtype), (G * xh).sum(0).to(gamma.dtype), G.sum(0).to(gamma.dtype)
'''

# The red team's answers (all arithmetic in torch, one do-nothing launch), and the same in NumPy.
DO_NOTHING = {
    "layernorm_dx_triton": TOUCH + '''
def layernorm_dx_triton(dy, x, gamma, mean, rstd):
    dx = _ln_grads(dy, x, gamma, mean, rstd)[0]
    _touch[(1,)](dx)
    return dx
''',
    "layernorm_backward_triton": TOUCH + '''
def layernorm_backward_triton(dy, x, gamma, mean, rstd):
    out = _ln_grads(dy, x, gamma, mean, rstd)
    _touch[(1,)](out[0])
    return out
''',
    "rmsnorm_backward_triton": TOUCH + '''
def rmsnorm_backward_triton(dy, x, gamma, rstd):
    w = torch.float64 if x.dtype == torch.float64 else torch.float32
    X, G, g, r = x.to(w), dy.to(w), gamma.to(w), rstd.to(w)[:, None]
    gg = G * g
    dx = (r * gg - r ** 3 * X * (gg * X).mean(1, keepdim=True)).to(x.dtype)
    _touch[(1,)](dx)
    return dx, (G * X * r).sum(0).to(gamma.dtype)
''',
}
THROUGH_NUMPY = {
    "numpy": "a = [t.float().numpy() for t in (dy, x, gamma, mean, rstd)]",
    "np.asarray": "a = [np.asarray(t.float()) for t in (dy, x, gamma, mean, rstd)]",
    "tolist": "a = [np.array(t.float().tolist()) for t in (dy, x, gamma, mean, rstd)]",
}
NUMPY_DX = TOUCH + '''
def layernorm_dx_triton(dy, x, gamma, mean, rstd):
    READ
    X, G, g, m, r = a[1], a[0], a[2], a[3][:, None], a[4][:, None]
    xh = (X - m) * r
    gg = G * g
    dx = torch.from_numpy(r * (gg - gg.mean(1, keepdims=True) - xh * (gg * xh).mean(1, keepdims=True))).to(x.dtype)
    _touch[(1,)](dx)
    return dx
'''


def _verdict(function, source):
    verdicts = judged(ASSIGNMENT, function, source, names={"float32"})
    return failures(verdicts), report(verdicts)


@pytest.mark.parametrize("function", DO_NOTHING)
def test_a_do_nothing_kernel_beside_torch_arithmetic_fails_and_says_why(function):
    failed, said = _verdict(function, DO_NOTHING[function])
    assert failed, f"torch's arithmetic passed as {function}'s kernels"
    assert "torch computed" in said and REFUSED in said, said


@pytest.mark.parametrize("way", THROUGH_NUMPY)
def test_arithmetic_in_numpy_beside_a_do_nothing_kernel_fails_and_says_why(way):
    failed, said = _verdict("layernorm_dx_triton", NUMPY_DX.replace("READ", THROUGH_NUMPY[way]))
    assert failed and "a tensor's values were read out of torch" in said and REFUSED in said, said


def test_the_second_reduction_in_torch_is_refused():
    """The contract puts dgamma's and dbeta's sums across programs in kernels: a partial sum finished by
    torch's sum is torch's arithmetic."""
    from test_06_triton import mutated

    source = mutated({"dgamma, dbeta = torch.empty_like(gamma), torch.empty_like(gamma)\n":
                      "dgamma, dbeta = (p.sum(0).to(gamma.dtype) for p in partial)\n",
                      "    _ln_bwd_columns[(triton.cdiv(N, 128),)](dgamma, dbeta, partial, groups, N, WIDTH=128, "
                      "DEPTH=8)\n": ""})
    failed, said = _verdict("layernorm_backward_triton", source)
    assert failed and "torch computed sum" in said, said


# A red team's second round: torch's arithmetic passed for triton's own. "Triton's code" was once whatever
# code object said it lived in triton's folder, and triton's own frames could run any torch operator.
SPOOFED_HELPER = TOUCH + '''
import os

# the helper's code says it lives in triton's folder (code.replace(co_filename=...))
_home = os.path.join(os.path.dirname(triton.__file__), "runtime", "helper.py")
_ln_grads.__code__ = _ln_grads.__code__.replace(co_filename=_home)


def layernorm_dx_triton(dy, x, gamma, mean, rstd):
    dx = _ln_grads(dy, x, gamma, mean, rstd)[0]
    _touch[(1,)](dx)
    return dx
'''
PRE_RUN_HOOKS = '''
import torch
import triton
import triton.language as tl


@triton.jit
def _sub(A, B):  # does nothing: its pre-run hook, torch's in-place subtraction, does the work
    pass


@triton.jit
def _mul(A, B):
    pass


@triton.jit
def _rowsum(S, D, I, T):
    pass


_sub.add_pre_run_hook(torch.Tensor.sub_)      # Triton's launcher calls each hook from its own code
_mul.add_pre_run_hook(torch.Tensor.mul_)
_rowsum.add_pre_run_hook(torch.Tensor.index_add_)


def layernorm_dx_triton(dy, x, gamma, mean, rstd):
    w = torch.float64 if x.dtype == torch.float64 else torch.float32
    M, N = x.shape
    g = (1,)
    xh = x.to(w).clone()
    rs = rstd.to(w).reshape(M, 1).clone()
    _sub[g](xh, mean.to(w).reshape(M, 1).clone())
    _mul[g](xh, rs)
    gg = dy.to(w).clone()
    _mul[g](gg, gamma.to(w).reshape(1, N).clone())
    s1 = torch.zeros(M, 1, dtype=w)
    _rowsum[g](s1, 1, torch.zeros(N, dtype=torch.long), gg)
    t = gg.clone()
    _mul[g](t, xh)
    s2 = torch.zeros(M, 1, dtype=w)
    _rowsum[g](s2, 1, torch.zeros(N, dtype=torch.long), t)
    _mul[g](s1, torch.full((1, 1), 1.0 / N, dtype=w))
    _mul[g](s2, torch.full((1, 1), 1.0 / N, dtype=w))
    _mul[g](xh, s2)
    dx = gg.clone()
    _sub[g](dx, s1)
    _sub[g](dx, xh)
    _mul[g](dx, rs)
    return dx.to(x.dtype)
'''


def test_a_helper_whose_code_claims_triton_s_folder_is_still_the_student_s():
    """Triton's own code is told by its code objects, as loaded before the student's code, not by the
    co_filename a code object claims."""
    failed, said = _verdict("layernorm_dx_triton", SPOOFED_HELPER)
    assert failed and "torch computed" in said and REFUSED in said, said


def test_torch_s_in_place_arithmetic_as_a_kernel_s_pre_run_hook_is_refused():
    """Triton's launcher calls a kernel's pre-run hooks from its own code: torch.Tensor.sub_ as a hook is
    still torch's arithmetic written into the student's tensors. From triton's code only the launcher's
    own work (allocate, copy, fill) and out-of-place operators (a benchmark's statistics) pass."""
    failed, said = _verdict("layernorm_dx_triton", PRE_RUN_HOOKS)
    if torch.cuda.is_available():  # compiled, triton 3.6's launcher passes hooks keywords of its own, which
        assert failed and "sub_() received an invalid combination" in said, said  # sub_ refuses (the H200)
        return
    assert failed and "torch computed sub_" in said and REFUSED in said, said


TRITONS_OWN = """
import sys, torch
from autograder.inside import calling
calling.seal()  # the snapshot of genuine code comes first, as in the sandbox; dynamo is imported later


def as_if_triton(x):  # stands in for code of triton's (its benchmark's quantiles, a launcher's bookkeeping)
    return (x + 1).sum()


def in_place(x):
    x.sub_(1)


for f in (as_if_triton, in_place):  # recorded as triton's code, on its own globals
    calling._GENUINE[id(f.__code__)] = (f.__code__, f.__globals__, "triton")
x = torch.ones(4)
assert calling.invoke("kernels", lambda: as_if_triton(x), (), {}).item() == 8  # triton's out-of-place work
for refused in (lambda: in_place(x), lambda: (x + 1).sum()):  # in place from triton; anything from the student
    try:
        calling.invoke("kernels", refused, (), {})
    except RuntimeError as e:
        assert "done by your Triton kernels" in str(e), e
    else:
        raise AssertionError("not refused")
print("done")
"""


def test_triton_s_own_code_may_compute_out_of_place_in_a_sealed_process():
    """Triton's code (a frame running a code object recorded at the seal, on its module's globals) may
    compute out of place under the guard, and nothing in place: in the sandbox too, where torch's dynamo
    is imported after the snapshot (it must not wrap the guard in a frame of its own)."""
    done = subprocess.run([sys.executable, "-c", TRITONS_OWN], capture_output=True, text=True, timeout=300,
                          env=child_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("done"), done.stdout


def test_a_launcher_that_converts_its_kernels_float32_output_passes():
    """Allocating, making contiguous and converting dtypes around a kernel is a launcher's work."""
    source = TOUCH + '''
@triton.jit
def _rows(DX, DY, X, W, MU, RS, N, B: tl.constexpr):
    r = tl.program_id(0)
    j = tl.arange(0, B)
    ok = j < N
    xh = (tl.load(X + r * N + j, mask=ok, other=0.0).to(tl.float32) - tl.load(MU + r)) * tl.load(RS + r)
    g = tl.load(DY + r * N + j, mask=ok, other=0.0).to(tl.float32) * tl.load(W + j, mask=ok, other=0.0)
    c1 = tl.sum(g, axis=0) / N
    c2 = tl.sum(g * xh, axis=0) / N
    tl.store(DX + r * N + j, tl.load(RS + r) * (g - c1 - xh * c2), mask=ok)


def layernorm_dx_triton(dy, x, gamma, mean, rstd):
    M, N = x.shape
    dx = torch.empty((M, N), dtype=torch.float32, device=x.device)
    _rows[(M,)](dx, dy.contiguous(), x.contiguous(), gamma.float(), mean.float(), rstd.float(), N,
                B=triton.next_power_of_2(N))
    return dx.to(x.dtype)
'''
    failed, said = _verdict("layernorm_dx_triton", source)
    assert not failed, said


@pytest.mark.parametrize("version", triton_layernorm.VERSIONS)
def test_every_launcher_of_chapter_6_works_under_the_guard(version):
    assignment = load(ASSIGNMENT)
    case = next(c for c in assignment.cases_of("layernorm_backward_triton") if c.name == "float32")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trial = case.make(np.random.default_rng(5), device)
    assert trial.protocol == "kernels"
    returned = calling.invoke(trial.protocol, triton_layernorm.VERSIONS[version], trial.args, trial.kwargs)
    assert trial.judge(returned, trial.expected) == []


def test_the_red_teams_notebook_scores_nothing_through_the_grader(tmp_path):
    """All three functions answered by torch and a do-nothing kernel: no points, each test says why."""
    nb = submission(ASSIGNMENT, dict(DO_NOTHING), base=solved(ASSIGNMENT))
    path = write(nb, tmp_path, "red-team", ASSIGNMENT)
    done = subprocess.run([sys.executable, "-m", "autograder", "check", str(path), "--assignment", ASSIGNMENT],
                          capture_output=True, text=True, timeout=600)
    said = done.stdout + done.stderr
    assert "score: 0/120" in said, said
    for function in DO_NOTHING:
        assert f"{function}: 0/" in said, said
    assert said.count(REFUSED) == len(load(ASSIGNMENT).cases), said


# A red team's third round: torch's arithmetic after the launcher returned, outside its guard, in code of the
# student's that the grader's own work ran (its packing of the result called numpy.save, which the answer had
# replaced): 120/120 and no flag. The sandbox now notes, before the first cell, what it runs between calls,
# and stops a notebook that changed any of it.
AFTER_THE_CALL = TOUCH + '''
import gc
import sys

import numpy


def _fill(dx, dy, x, gamma, mean, rstd):
    dx.copy_(_ln_grads(dy, x, gamma, mean, rstd)[0])


def layernorm_dx_triton(dy, x, gamma, mean, rstd):
    dx = torch.empty(tuple(x.shape), dtype=x.dtype, device=x.device)
    _touch[(1,)](torch.empty(1, device=x.device))  # compiled on a GPU, a kernel takes no CPU tensor
    HOOK
    return dx
'''
HOOKS = {
    # a library's function replaced when the cell runs
    "numpy.save": ("numpy.save", "_save = numpy.save\n"
                   "def _saving(*a, **k):\n    return _save(*a, **k)\nnumpy.save = _saving\n", "pass"),
    # a method of torch.Tensor replaced by the call, which the packing of its result would call
    "torch.Tensor.cpu": ("torch.Tensor.cpu", "", "_cpu = torch.Tensor.cpu\n"
                         "    def cpu(t, *a, **k):\n        torch.Tensor.cpu = _cpu\n"
                         "        _fill(dx, dy, x, gamma, mean, rstd)\n        return _cpu(t, *a, **k)\n"
                         "    torch.Tensor.cpu = cpu"),
    # Python's own hooks, which run code of their own accord
    "sys.settrace": ("sys.settrace", "", "def tracer(frame, event, arg):\n"
                     "        sys.settrace(None)\n        _fill(dx, dy, x, gamma, mean, rstd)\n"
                     "    sys.settrace(tracer)"),
    "gc.callbacks": ("gc.callbacks", "", "gc.callbacks.append(lambda *a: _fill(dx, dy, x, gamma, mean, rstd))"),
    # the guard itself, switched off through the sandbox's own module
    "kernel_work": ("calling.kernel_work", "import contextlib\nimport calling\n"
                    "calling.kernel_work = contextlib.nullcontext\n", "_fill(dx, dy, x, gamma, mean, rstd)"),
    # the interpreter's memory checks (bounds.py) taken off, on its class or on its one builder
    "bounds": ("triton.runtime.interpreter.InterpreterBuilder.create_masked_load",
               "from triton.runtime import interpreter\n_load = interpreter.InterpreterBuilder.create_masked_load\n"
               "interpreter.InterpreterBuilder.create_masked_load = lambda *a: _load(*a)\n", "pass"),
    "semantic": ("triton.runtime.interpreter.TritonSemantic._load_legacy",
                 "from triton.runtime import interpreter\n_lower = interpreter.TritonSemantic._load_legacy\n"
                 "interpreter.TritonSemantic._load_legacy = lambda *a: _lower(*a)\n", "pass"),
    "builder": ("triton.runtime.interpreter.interpreter_builder.create_masked_store",
                "from triton.runtime import interpreter\nb = interpreter.interpreter_builder\n"
                "b.create_masked_store = lambda *a: None\n", "pass"),
}


@pytest.fixture(scope="module")
def hooked_feedback(tmp_path_factory):
    """Each hook's notebook, graded as a class (several at a time): hook -> its feedback. The release's other
    functions raise at once, so only layernorm_dx_triton's cases run. Checked one at a time, each beside the
    solution's other functions, the eight took 204 s on the H200, past the 200 s the GPU check then gave all of its
    tests (gpu-results/run-3); on 2 cores without a GPU, 129 s, and as a class 33 s."""
    root = tmp_path_factory.mktemp("submitted")
    students = {hook: f"hook-{i}" for i, hook in enumerate(HOOKS)}
    for hook, (_, at_cell, in_call) in HOOKS.items():
        source = AFTER_THE_CALL.replace("HOOK", in_call).replace("def _fill", at_cell + "\n\ndef _fill")
        write(submission(ASSIGNMENT, {"layernorm_dx_triton": source}), root, students[hook], ASSIGNMENT)
    out = tmp_path_factory.mktemp("grades")
    done = subprocess.run([sys.executable, "-m", "autograder", "grade", str(root), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    page = notebooks(ASSIGNMENT).source.stem + ".txt"
    return {hook: (out / "feedback" / student / ASSIGNMENT / page).read_text()
            for hook, student in students.items()}


@pytest.mark.parametrize("hook", HOOKS)
def test_an_answer_that_changes_what_the_grader_runs_between_calls_scores_nothing(hooked_feedback, hook):
    what = HOOKS[hook][0]
    said = hooked_feedback[hook]
    assert "layernorm_dx_triton: 0/" in said, said
    changed = f"your code changed {what}, which the grader itself relies on to run and check your function's calls"
    # a trace function fires as the call returns, still under its guard, where torch refuses to compute
    assert changed in said or (hook == "sys.settrace" and "torch computed" in said and REFUSED in said), said


INTACT = '''
import signal, sys
sys.path.insert(0, "autograder/inside")
import numpy, torch
import intact

intact.take()
assert intact.changed() is None
signal.signal(signal.SIGALRM, lambda *a: None)  # a handler of the answer's: put back, and named
try:
    intact.disarm()
except intact.Tampered as e:
    print("disarm:", e.what, signal.getsignal(signal.SIGALRM) is signal.SIG_DFL)
assert intact.changed() is None
numpy.foo = 1  # a new name in a module: nothing the sandbox calls
assert intact.changed() is None
torch.Tensor.cpu = lambda t: t  # a new name in torch.Tensor shadows its C base's method
print("changed:", intact.changed())
del torch.Tensor.cpu
save, numpy.save = numpy.save, print
print("changed:", intact.changed())
numpy.save = save
assert intact.changed() is None
heard = []
sys.addaudithook(lambda event, args: heard.append(event))  # refused, silently, as Python refuses it
compile("1", "<x>", "eval")  # an audited event
print("audit hook heard:", heard)
'''


def test_intact_names_what_changed_puts_back_a_handler_and_refuses_an_audit_hook():
    done = subprocess.run([sys.executable, "-c", INTACT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["disarm: the handler of SIGALRM True", "changed: torch.Tensor.cpu",
                                        "changed: numpy.save",
                                        "audit hook heard: []"], done.stdout
