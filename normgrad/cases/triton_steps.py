"""Exercise 06, second edition: the Triton exercise in three graded steps.

1. `layernorm_dx_triton(dy, x, gamma, mean, rstd) -> dx`: one program per row, masks;
2. `layernorm_backward_triton` (triton_backward.py), which gains float64 cases here, as
   COURSE_API.md lists float64 for 04-06;
3. `rmsnorm_backward_triton(dy, x, gamma, rstd) -> (dx, dgamma)`.

As in triton_backward.py, one process runs the kernels either compiled on a GPU or in
Triton's interpreter, so the cases run on CUDA where a GPU is present (thousands of rows) and
on the CPU otherwise (small shapes, time limits). Step 1 takes the trials of exercise 04's
layer norm and keeps their `dx`; step 3 takes exercise 04's RMSNorm trials.

Mistakes that show as values are diagnosed by running them in float64 (`torch_trials`,
`rmsnorm_backward`); a load or store without a mask stops the interpreter (`calling.bounds`), or
crashes it where that check did not run, and is named from the test's error (`Mistake.raises`), in the
notebook's runner and in the grader.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import partial

import torch

from ..calling import bounds
from . import Mistake
from . import rmsnorm_backward as rms
from .judging import value_problems
from .torch_trials import (backward_trial, chunk_width_slips, fitted_to_programs, layer_partials_members,
                           slipped_backward)
from .triton_backward import DEVICES, PROGRAMS, SIXTEEN_BIT_ARITHMETIC, kernel_case

F64, F32, F16, BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16
DX, LN, RMS = "layernorm_dx_triton", "layernorm_backward_triton", "rmsnorm_backward_triton"
# Triton's interpreter stores bfloat16 by dropping bits, a whole unit in the last place (tolerances.output_rtol)
TRUNCATED = DEVICES == ("cpu",)


def dx_only(maker):
    """A layer-norm trial maker whose call returns dx alone, judged as the whole trial judges its dx."""
    def make(rng, device):
        trial = maker(rng, device)
        k = trial.judge.keywords  # arrays_problems with the trial's dtypes, tolerance and device
        rtol = k["rtol"][0] if isinstance(k["rtol"], (tuple, list)) else k["rtol"]  # one tolerance per output
        judge = partial(value_problems, name="dx", dtype=k["dtypes"][0], rtol=rtol, device=k["device"])
        return replace(trial, expected=trial.expected[0], judge=judge)

    return make


def ln_sized(cpu_shape, cuda_shape, dtype, **options):
    makers = {"cpu": backward_trial("layer", cpu_shape, dtype, **options),
              "cuda": backward_trial("layer", cuda_shape, dtype, **options)}
    return lambda rng, device: makers[device](rng, device)


_dx = partial(kernel_case, DX)
_ln = partial(kernel_case, LN)
_rms = partial(kernel_case, RMS)
CASES = [
    _dx("float32", 3, False, "float32, 5 x 300", dx_only(backward_trial("layer", (5, 300), F32))),
    _dx("bfloat16-two-chunks", 3, False, "bfloat16, 4 x 1100: more than one chunk of 1024 columns",
        dx_only(backward_trial("layer", (4, 1100), BF16, truncated=TRUNCATED))),
    _dx("float64", 3, True, "float64, 6 x 200: float64 arithmetic", dx_only(backward_trial("layer", (6, 200), F64))),
    # dy near 8 and gamma near 1: dx is a small difference of terms near 8, and any 16-bit rounding before the
    # end shows. Loads not converted to float32 land 16 to 31 tolerances out, g = dy * gamma formed in 16 bits
    # 14 to 21, the solution at most 0.79, over 30 seeds (tests/test_06_added.py); on a random dy both passed.
    _dx("float16-cancelling", 3, True, "float16, 7 x 777 (2053 x 777 on a GPU), dy near 8 and gamma near 1: dx a "
        "small difference of large terms",
        dx_only(ln_sized((7, 777), (2053, 777), F16, dy_offset=8.0, cancelling=True)), hint=SIXTEEN_BIT_ARITHMETIC),
    _dx("float32-wide", 4, True, "float32, 6 x 2100 (4099 x 2100 on a GPU): three chunks a row",
        dx_only(ln_sized((6, 2100), (4099, 2100), F32))),
    _dx("one-row", 3, True, "a single row, float16, 1 x 1234", dx_only(backward_trial("layer", (1, 1234), F16))),
    _dx("tiny-variance", 3, True, "float32 rows whose variance is far below eps",
        dx_only(backward_trial("layer", (9, 300), F32, kind="tiny-variance"))),
    _dx("large-offset", 3, True, "float32 rows with means of 1e3 to 2e3 and unit spread",
        dx_only(backward_trial("layer", (9, 300), F32, kind="large-offset"))),
    _dx("strided", 3, True, "float32 views, not contiguous: x transposed, dy's rows spaced apart",
        dx_only(backward_trial("layer", (10, 513), F32, contiguous=False))),
    _dx("bfloat16-tall-cancelling", 2, True, "bfloat16, 40 x 100 (20000 x 100 on a GPU), dy near 8 and gamma near "
        "1: dx a small difference of large terms",
        dx_only(ln_sized((40, 100), (20_000, 100), BF16, truncated=TRUNCATED, dy_offset=8.0, cancelling=True)),
        hint=SIXTEEN_BIT_ARITHMETIC),
    # Step 2 was written for float32 and the 16-bit types; the contract lists float64 too.
    _ln("float64", 2, True, "float64, 21 x 300 (2053 x 300 on a GPU): float64 arithmetic and sums",
        ln_sized((21, 300), (2053, 300), F64)),
    _rms("float32", 5, False, "float32, 6 x 1000", rms.trial((6, 1000), F32)),
    _rms("bfloat16", 5, False, "bfloat16, 9 x 300, dy and x away from zero mean",
         rms.trial((9, 300), BF16, dy_offset=1.0, truncated=TRUNCATED)),
    _rms("float64", 5, True, "float64, 5 x 300: float64 arithmetic and sums", rms.sized((5, 300), (2053, 300), F64)),
    # As exercise 04's: rows near +-30 to 60 of alternating signs, dy near 8, gamma near 1. g = dy * gamma formed
    # in 16 bits sits 3.9 to 8.0 tolerances out under the interpreter, the solution at most 0.80, over 30 seeds.
    _rms("float16-cancelling", 6, True, "float16, 33 x 777 (2053 x 777 on a GPU), rows near +-30 to 60 of "
         "alternating signs, dy near 8: dx a small difference of large terms",
         rms.sized((33, 777), (2053, 777), F16, kind="large-offset", offset=30.0, dy_offset=8.0, cancelling=True),
         hint=SIXTEEN_BIT_ARITHMETIC),
    _rms("float32-wide", 6, True, "float32, 20 x 1500 (4099 x 1500 on a GPU): more than one chunk",
         rms.sized((20, 1500), (4099, 1500), F32)),
    # dy and x away from zero mean: a term of dx that a slip drops or adds (layer norm's mean(g)) is then
    # of the size of dx itself, where for a random dy it shrinks like 1 / sqrt(N) into bfloat16's tolerance.
    _rms("bfloat16-wide", 6, True, "bfloat16, 25 x 2000 (3001 x 2000 on a GPU), dy and x away from zero mean",
         rms.sized((25, 2000), (3001, 2000), BF16, dy_offset=1.0, truncated=TRUNCATED)),
    _rms("one-row", 4, True, "a single row, float16, 1 x 1234, dy and x away from zero mean",
         rms.trial((1, 1234), F16, dy_offset=1.0)),
    _rms("tiny-rms", 5, True, "float32 rows whose mean square is far below eps", rms.trial((17, 600), F32, scale=1e-4)),
    _rms("large-values", 4, True, "float32 rows with means of 1e3 to 2e3", rms.trial((17, 600), F32, "large-offset")),
    _rms("strided", 4, True, "float32 views, not contiguous: x transposed, dy's rows spaced apart", rms.trial((20, 513), F32, contiguous=False)),
    # x_hat near 1 and dy near 2 over 400 rows: dgamma's column sums reach about 800, where a bfloat16
    # running total has stopped growing (from 512 up, adding 2 rounds back). On a GPU enough rows that a
    # group of rows still walks about a thousand.
    _rms("tall-shifted", 10, True, "bfloat16, 400 x 20 (300000 x 20 on a GPU), dy shifted away from zero",
         rms.sized((400, 20), (300_000, 20), BF16, dy_offset=2.0, truncated=TRUNCATED), seconds=60.0),
]


# --- Known mistakes -------------------------------------------------------------------------------

CHAPTER = "06-triton.html"
# Under the interpreter a lane outside the kernel's tensors stops the kernel (calling.bounds); a crash is
# what is left where that check did not run (a stray store can corrupt the heap: abort)
STRAY = rf"{re.escape(bounds.MESSAGE)}|crashed \(SIG(SEGV|BUS|ABRT)\)"
MISSING_MASK = ("a load or store without a mask, or with one that lets an index reach N (`<=` for `<`): it reached "
                "past the end of a tensor. Triton's interpreter, as the course runs it, stops there and names the "
                "tensor; on a GPU a stray load reads garbage or faults, and a stray store corrupts memory",
                f"{CHAPTER}#masks-and-blocks")
# Triton's interpreter has no 16-bit atomics; the contract wants the sums across programs in float32 anyway
HALF_ATOMICS = ("an atomic operation on a 16-bit tensor, which Triton's interpreter refuses ('Unsupported data "
                "type'): add dgamma's and dbeta's shares into a float32 buffer, as the contract keeps every sum in "
                "float32, and convert when storing the result", "04-numerics.html#half-precision")


def _dx_slip(slip):
    return lambda dy, x, gamma, mean, rstd: slipped_backward(dy, x, gamma, mean, rstd, "layer", slip)[0]


DX_SLIPS = {
    "no-mean-path": ("dx without the path through the mean (the term mean(g))", "the-math-of-one-row"),
    "no-variance-path": ("dx without the path through the variance (the term x_hat * mean(g * x_hat))",
                         "the-math-of-one-row"),
    "gamma-forgotten": ("dx computed from dy instead of dy * gamma", "the-math-of-one-row"),
    "gamma-outside-sums": ("gamma taken out of the row sums, rstd * gamma * (dy - mean(dy) - x_hat * "
                           "mean(dy * x_hat)): gamma changes along a row, so g = dy * gamma belongs inside the sums",
                           "the-math-of-one-row"),
}
HALF_PARTIALS = ("dgamma's partial sums kept in the 16-bit type: a running total stalls where float32 keeps "
                 "every row", "04-numerics.html#half-precision")
OVERWRITTEN = ("each program's partial rows stored over instead of added to: dgamma (and dbeta) hold only the "
               "last row each program took", f"{CHAPTER}#rung-2-a-lock-per-group")
# Which rows a program's last store came from depends on how the rows were split: the common split,
# rows g, g + G, ..., leaves the last G rows, G fitted among PROGRAMS (triton_backward.py).


MISTAKES = [
    *[Mistake(DX, slip, message, f"{CHAPTER}#masks-and-blocks", impl)
      for slip, message, impl in chunk_width_slips(dx_only=True)],
    *[Mistake(DX, slip, message, f"{CHAPTER}#{anchor}", _dx_slip(slip))
      for slip, (message, anchor) in DX_SLIPS.items()],
    *[Mistake(f, "missing-mask", *MISSING_MASK, impl=None, raises=STRAY) for f in (DX, RMS)],
    *[Mistake(f, "half-atomics", *HALF_ATOMICS, impl=None, raises=r"Unsupported data type") for f in (LN, RMS)],
    *rms.mistakes(RMS, ("mean-subtracted", "mean-term-kept", "no-projection")),
    # Rounded to nearest, and as Triton's interpreter stores a float32 into bfloat16: rounded toward zero.
    *[Mistake(RMS, "half-dgamma", *HALF_PARTIALS, fitted_to_programs(rms.partials_members("half-dgamma", t), PROGRAMS))
      for t in (False, True)],
    Mistake(RMS, "partials-overwritten", *OVERWRITTEN,
            fitted_to_programs(rms.partials_members("partials-overwritten"), PROGRAMS)),
    Mistake(LN, "partials-overwritten", *OVERWRITTEN,
            fitted_to_programs(layer_partials_members("partials-overwritten"), PROGRAMS)),
]
