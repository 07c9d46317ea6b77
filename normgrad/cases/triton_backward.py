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

import torch

from . import Case, Mistake
from .torch_trials import backward_trial, slipped_backward

FUNCTION = "layernorm_backward_triton"

# One device per process: see the module's docstring.
DEVICES = ("cuda",) if torch.cuda.is_available() else ("cpu",)

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def sized(cpu_shape, cuda_shape, dtype, **options):
    """A trial maker whose shape depends on the device: the interpreter cannot afford the GPU's sizes."""
    makers = {"cpu": backward_trial("layer", cpu_shape, dtype, **options),
              "cuda": backward_trial("layer", cuda_shape, dtype, **options)}
    return lambda rng, device: makers[device](rng, device)


def _case(name, points, hidden, description, make, seconds=20.0):
    return Case(FUNCTION, name, points, hidden, description, make, devices=DEVICES, seconds=seconds)


CASES = [
    _case("float32", 1, False, "float32, 6 x 1000", backward_trial("layer", (6, 1000), F32)),
    _case("bfloat16", 1, False, "bfloat16, 9 x 300", backward_trial("layer", (9, 300), BF16)),
    # On a GPU these have thousands of rows: more than a program per multiprocessor can take one each, so
    # partial sums must really be accumulated (and, with locks, contended for).
    _case("float32-wide", 2, True, "float32, 67 x 1500 (4099 x 1500 on a GPU): more than one block of columns",
          sized((67, 1500), (4099, 1500), F32)),
    _case("float16", 2, True, "float16, 33 x 777 (2053 x 777 on a GPU)", sized((33, 777), (2053, 777), F16)),
    _case("bfloat16-wide", 2, True, "bfloat16, 45 x 2000 (3001 x 2000 on a GPU)",
          sized((45, 2000), (3001, 2000), BF16)),
    _case("one-row", 1, True, "a single row, float16, 1 x 1234", backward_trial("layer", (1, 1234), F16)),
    _case("tiny-variance", 1, True, "float32 rows whose variance is far below eps",
          backward_trial("layer", (17, 600), F32, kind="tiny-variance")),
    _case("large-offset", 1, True, "float32 rows with means near 1e3 and unit spread",
          backward_trial("layer", (17, 600), F32, kind="large-offset")),
    _case("strided", 1, True, "float32 inputs that are transposed views (not contiguous)",
          backward_trial("layer", (20, 513), F32, contiguous=False)),
    # A bfloat16 running sum of positive terms stalls after a few hundred of them (the increments fall
    # below half a unit in the last place): dgamma and dbeta summed in 16 bits over ~800 rows per program
    # are off by a third, far outside the tolerance. 800 rows on the interpreter; on a GPU enough rows
    # that a program per multiprocessor still walks about a thousand.
    _case("tall-shifted", 3, True, "bfloat16, 800 x 24 (300000 x 24 on a GPU), dy shifted away from zero",
          sized((800, 24), (300_000, 24), BF16, dy_offset=2.0), seconds=90.0),
]


# --- Known mistakes: the shared slips of the backward formula, in float64 (torch_trials). ----------

def _mistake(slip, message, anchor):
    return Mistake(FUNCTION, slip, message, f"06-triton.html#{anchor}",
                   lambda dy, x, gamma, mean, rstd: slipped_backward(dy, x, gamma, mean, rstd, "layer", slip))


MISTAKES = [
    _mistake("padded-count", "the row sums divided by the block width (N rounded up to a power of two) "
             "instead of by N", "masks-and-blocks"),
    _mistake("gamma-forgotten", "dx computed from dy instead of dy * gamma", "the-math-of-one-row"),
    _mistake("no-mean-path", "dx without the path through the mean (the term c1)", "the-math-of-one-row"),
    _mistake("no-variance-path", "dx without the path through the variance (the term x_hat * c2)",
             "the-math-of-one-row"),
    _mistake("dgamma-from-x", "dgamma summed from dy * x instead of dy * x_hat", "the-math-of-one-row"),
]

from .second_edition import extend; CASES, MISTAKES = extend("06-triton", CASES, MISTAKES)  # noqa: E402,E702
