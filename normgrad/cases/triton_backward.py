"""Assignment 06-triton: `layernorm_backward_triton(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)`.

The student writes Triton kernels and the launcher that runs them. The trials
are exercise 04's (torch_trials.backward_trial): x and dy of shape (M, N) in
float32, float16 or bfloat16, N never a power of two and often more than one
block of 1024 columns, so masks and a loop over column chunks both matter.

Triton binds a kernel to the GPU or to its interpreter when `@triton.jit`
runs, so one process cannot do both: with a GPU present the cases run on CUDA,
compiled; without one, on CPU tensors under TRITON_INTERPRET=1 (the grader's
sandbox sets it then), where programs run one at a time and slowly, so the
CPU sizes are small and each call has a time limit (`seconds`): a lock that is
never released fails its test instead of hanging the grader.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch

from . import Case, Mistake
from .torch_trials import (backward_trial, chunk_width_slips, fitted_to_programs, layer_partials_members,
                           slipped_backward)

FUNCTION = "layernorm_backward_triton"
NUMERICS = "04-numerics.html"

# One device per process: see the module's docstring.
DEVICES = ("cuda",) if torch.cuda.is_available() else ("cpu",)

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def sized(cpu_shape, cuda_shape, dtype, **options):
    """A trial maker whose shape depends on the device: the interpreter cannot afford the GPU's sizes.

    The interpreter stores bfloat16 by dropping bits (NumPy has no bfloat16), not by rounding to
    nearest as a GPU does: its one rounding of each output may cost a whole unit in the last place.
    """
    makers = {"cpu": backward_trial("layer", cpu_shape, dtype, truncated=dtype == BF16, **options),
              "cuda": backward_trial("layer", cuda_shape, dtype, **options)}
    return lambda rng, device: makers[device](rng, device)


def trial(shape, dtype, **options):
    """`sized` with one shape for both devices."""
    return sized(shape, shape, dtype, **options)


INTERPRETER_NAN = (
    "under the interpreter (TRITON_INTERPRET=1), NaN in bfloat16 also comes from arithmetic on loaded values that "
    "were not converted first: NumPy has no bfloat16, so the interpreter's bfloat16 arithmetic is not the GPU's; "
    "convert every load to float32 (tl.load(...).to(tl.float32)), partial sums read back included, keep "
    "sums and partial sums in float32, and round only when storing the results")


UNWRITTEN = ("memory made by torch.empty reads as NaN in these tests until a program stores to it: check that "
             "the programs of your launch write every row and every column of each output. NaN as likely comes "
             "from a masked load without other=: Triton leaves its masked-off lanes undefined, and its "
             "interpreter, as the course runs it, reads them as NaN, so a sum over them is NaN; give other=0.0")


# Said where a cancelling case fails and no known mistake matches: 16-bit arithmetic in a kernel, which these cases
# catch (tests/test_06_added.py) and no float64 emulation names, for it rounds in the kernel's own order.
SIXTEEN_BIT_ARITHMETIC = (
    "no known mistake matches this answer; this case makes dx a small difference of large terms, so any value "
    "rounded to 16 bits before the end moves it by more than the tolerance. If the float32 cases pass, look for "
    "arithmetic on 16-bit values: a load used without .to(tl.float32), or g = dy * gamma formed before the "
    "conversion. Keep every product and sum in float32, and round only when storing")


def with_nan_hints(make):
    """The trial maker `make`, whose judge explains a non-finite answer: UNWRITTEN, and INTERPRETER_NAN for
    bfloat16 on the CPU. The judge stays a partial of its tolerance, which `diagnose` loosens."""
    def hinted(rng, device):
        trial = make(rng, device)
        hints = (UNWRITTEN, INTERPRETER_NAN) if device == "cpu" and trial.args[1].dtype == BF16 else (UNWRITTEN,)
        judge = trial.judge  # a partial of keywords alone (arrays_problems, value_problems)
        return replace(trial, judge=partial(_hinted, judge.func, hints, **judge.keywords))

    return hinted


def _hinted(judge, hints, returned, expected, **keywords):
    problems = judge(returned, expected, **keywords)
    if any("non-finite" in p for p in problems):
        problems = problems + list(hints)
    return problems


def kernels_do_the_work(make):
    """The trial maker `make`, whose call runs under the `kernels` protocol: torch may allocate, view and
    copy around the student's kernels, and refuses arithmetic (autograder.inside.calling.kernel_work)."""
    return lambda rng, device: replace(make(rng, device), protocol="kernels")


def kernel_case(function, name, points, hidden, description, make, seconds=20.0, hint=""):
    """A case of a Triton exercise (this one and its staged steps): run where the process's one device is, its
    answer computed by the student's kernels, a non-finite answer explained."""
    return Case(function, name, points, hidden, description, kernels_do_the_work(with_nan_hints(make)),
                devices=DEVICES, seconds=seconds, hint=hint)


_case = partial(kernel_case, FUNCTION)


CASES = [
    _case("float32", 2, False, "float32, 6 x 1000", trial((6, 1000), F32)),
    _case("bfloat16", 2, False, "bfloat16, 9 x 300", trial((9, 300), BF16)),
    # On a GPU these have thousands of rows: more than a program per multiprocessor can take one each, so
    # partial sums must really be accumulated (and, with locks, contended for).
    _case("float32-wide", 3, True, "float32, 67 x 1500 (4099 x 1500 on a GPU): more than one block of columns",
          sized((67, 1500), (4099, 1500), F32)),
    # dy near 8 and gamma near 1: dx is a small difference of terms near 8, held to its own size. Loads not
    # converted to float32 sit 18 to 31 tolerances out, g = dy * gamma in 16 bits 2.4 to 3.7, the solution at most
    # 0.72 over 30 seeds (tests/test_06_added.py). The rows keep dbeta, about 8 M, mid-binade: at 33 rows, just above
    # 256, where its one correct rounding cost 0.9 of the tolerance.
    _case("float16-cancelling", 3, True, "float16, 45 x 777 (3001 x 777 on a GPU), dy near 8 and gamma near 1: dx "
          "a small difference of large terms", sized((45, 777), (3001, 777), F16, dy_offset=8.0, cancelling=True),
          hint=SIXTEEN_BIT_ARITHMETIC),
    _case("bfloat16-wide", 3, True, "bfloat16, 45 x 2000 (3001 x 2000 on a GPU)",
          sized((45, 2000), (3001, 2000), BF16)),
    _case("one-row", 2, True, "a single row, float16, 1 x 1234", trial((1, 1234), F16)),
    _case("tiny-variance", 2, True, "float32 rows whose variance is far below eps",
          trial((17, 600), F32, kind="tiny-variance")),
    _case("large-offset", 2, True, "float32 rows with means of 1e3 to 2e3 and unit spread",
          trial((17, 600), F32, kind="large-offset")),
    _case("strided", 2, True, "float32 views, not contiguous: x transposed, dy's rows spaced apart",
          trial((20, 513), F32, contiguous=False)),
    # A bfloat16 running sum of positive terms stalls after a few hundred of them (the increments fall
    # below half a unit in the last place): dgamma and dbeta summed in 16 bits over ~800 rows per program
    # are off by a third, far outside the tolerance. 800 rows on the interpreter; on a GPU enough rows
    # that a program per multiprocessor still walks about a thousand.
    _case("tall-shifted", 3, True, "bfloat16, 800 x 24 (300000 x 24 on a GPU), dy shifted away from zero",
          sized((800, 24), (300_000, 24), BF16, dy_offset=2.0), seconds=90.0),
    # float16 keeps 11 bits: past 2048 each term of mean 1 rounds the running sum by up to 1, and past 4096
    # most of them round away (chapter 4b: off by more than ten u16 after 3000). dbeta sums 3000 rows
    # (30000 on a GPU, still below float16's largest value, 65504).
    _case("float16-tall", 2, True, "float16, 3000 x 24 (30000 x 24 on a GPU), dy of mean 1",
          sized((3000, 24), (30_000, 24), F16, dy_offset=1.0), seconds=90.0),
    # Means near 10 beside a spread of 0.5 to 2: statistics rounded to 16 bits, or arithmetic done in
    # them, shift every x_hat of a row; a kernel that reads float16 through bfloat16 loses 3 bits.
    _case("float16-large-offset", 2, True, "float16, 16 x 700 (1024 x 3000 on a GPU) with means of 10 to 20",
          sized((16, 700), (1024, 3000), F16, kind="large-offset", offset=10.0, dy_offset=3.0)),
]


# --- Known mistakes: the shared slips of the backward formula, in float64 (torch_trials). ----------

# A slip of the groups of rows that programs take (rows g, g + G, ...) shows differently for each number G of
# them, which the student's launcher chooses: the diagnosis fits G among the counts launches tend to use, powers
# of two and one, two or four programs per multiprocessor of the GPUs a course runs on: 108 on an A100, 114 on
# an H100 PCIe and 132 on an H100 SXM (the H100 white paper's comparison, nvidia2022h100 in references.bib), and
# 132 on the H200 this course ran on (chapters/data/bench-nvidia-h200-2026-11-30.json). The solution takes two.
PROGRAMS = tuple(sorted({*(1 << k for k in range(11)), *(k * sms for sms in (108, 114, 132) for k in (1, 2, 4))}))

HALF_SUMS = "partial sums of dgamma or dbeta kept in the 16-bit type (or accumulated in it): keep them in float32 " \
            "and round once, at the end"


def _mistake(slip, message, anchor):
    return Mistake(FUNCTION, slip, message, f"06-triton.html#{anchor}",
                   lambda dy, x, gamma, mean, rstd: slipped_backward(dy, x, gamma, mean, rstd, "layer", slip))


MISTAKES = [
    *(Mistake(FUNCTION, slip, message, "06-triton.html#masks-and-blocks", impl)
      for slip, message, impl in chunk_width_slips()),
    _mistake("gamma-forgotten", "dx computed from dy instead of dy * gamma", "the-math-of-one-row"),
    _mistake("no-mean-path", "dx without the path through the mean (the term c1)", "the-math-of-one-row"),
    _mistake("no-variance-path", "dx without the path through the variance (the term x_hat * c2)",
             "the-math-of-one-row"),
    _mistake("dgamma-from-x", "dgamma summed from dy * x instead of dy * x_hat", "the-math-of-one-row"),
    Mistake(FUNCTION, "half-statistics", "mean and rstd rounded to the 16-bit type (or the arithmetic done in it): "
            "load them, and x, dy and gamma, as float32", f"{NUMERICS}#half-precision",
            partial(slipped_backward, norm="layer", slip="half-statistics")),
    *(Mistake(FUNCTION, slip, HALF_SUMS, f"{NUMERICS}#half-precision", impl) for slip, impl in [
        ("half-sums", partial(slipped_backward, norm="layer", slip="half-sums")),
        *((s, fitted_to_programs(layer_partials_members(s), PROGRAMS))
          for s in ("half-partials", "half-partials-truncated"))]),
    *(Mistake(FUNCTION, slip, "float16 inputs converted to bfloat16 on their way in (8 significant bits where "
              "float16 has 11): convert loads to float32", f"{NUMERICS}#half-precision",
              partial(slipped_backward, norm="layer", slip=slip))
      for slip in ("through-bfloat16", "through-bfloat16-truncated")),  # on a GPU; under the interpreter
]

from .second_edition import extend; CASES, MISTAKES = extend("06-triton", CASES, MISTAKES)  # noqa: E402,E702

# The report and the feedback list the functions in the order of the exercise's steps (1, 2, 3), not in the
# order the editions added them; a case's inputs hang on its id, not on its place.
STEPS = ("layernorm_dx_triton", "layernorm_backward_triton", "rmsnorm_backward_triton")
CASES.sort(key=lambda case: STEPS.index(case.function))
