"""RMSNorm's backward, added in the second edition: `rmsnorm_backward` (exercise 04, PyTorch) and
`rmsnorm_backward_triton` (exercise 06) share these trials and slips.

`f(dy, x, gamma, rstd) -> (dx, dgamma)`: x and dy of shape (M, N), `rstd = 1 / sqrt(mean(x**2) +
eps)` per row (float32 for 16-bit inputs), gamma of shape (N,). With x_hat = x * rstd and
g = dy * gamma, dx = rstd * (g - x_hat * mean(g * x_hat)) and dgamma = sum over rows of dy * x_hat;
the oracle is torch's own `rms_norm` under float64 autograd (`reference.rmsnorm`), never this formula.

The tolerance: x_hat = x / rms(x) is bounded by sqrt(N) and no mean is subtracted, so nothing
cancels in the forward pass and kappa is 1 (the default of `tolerances.rtol`).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .. import inputs, reference, tolerances
from . import Mistake, Trial
from .judging import arrays_problems
from .torch_trials import (cancelling_affine, natural_scales, program_sums, rounded, running_total, sixteen_bit_type,
                           stats_dtype, strided)

EPS = 1e-6
NAMES = (("dy", "x", "gamma", "rstd"), ("dx", "dgamma"))


def trial(shape, dtype: torch.dtype = torch.float32, kind: str = "normal", contiguous: bool = True,
          offset: float = 1e3, dy_offset: float = 0.0, scale: float = 1.0, truncated: bool = False,
          cancelling: bool = False):
    """A trial maker for f(dy, x, gamma, rstd) -> (dx, dgamma).

    `dy_offset` shifts dy away from zero mean and makes gamma positive, and a positive mean of x
    (kind 'large-offset') makes every x_hat near +1: dgamma's column sums then grow with the number
    of rows, and a sum kept in 16 bits stalls. `scale` multiplies x: 1e-4 puts mean(x**2) far below
    eps, where rstd is eps's and not the input's. `truncated`: the code under test stores 16-bit
    results by dropping bits (Triton's interpreter; `tolerances.output_rtol`).

    `cancelling`: both results are small differences of large terms, which magnify a 16-bit rounding
    made before the end. Rows of values near +-offset, their signs alternating (x_hat near +-1), dy near
    `dy_offset` and gamma near 1: dx = rstd * (g - x_hat * mean(g * x_hat)) is a row's small departure
    from g, and dgamma = sum of dy * x_hat adds as many terms near -dy_offset as near +dy_offset. Without
    it, rstd, x_hat or dgamma's terms rounded to 16 bits cost about one more rounding: a 16-bit tolerance
    of one rounding fails rstd's slip on about half the draws and the other two on almost none (chapter 4b).
    """
    shape = tuple(shape)

    def make(rng: np.random.Generator, device: str) -> Trial:
        x = inputs.sample(rng, shape, "layer", kind, offset)
        if cancelling:
            signs = np.where(np.arange(shape[0]) % 2, -1.0, 1.0)[:, None]
            x = rounded(x * np.sign(x.mean(axis=1, keepdims=True)) * signs, dtype)
            gamma, dy = cancelling_affine(rng, shape, shape[1], dy_offset, dtype)
        else:
            x = rounded(np.abs(x) if dy_offset else x * scale, dtype)
            gamma = inputs.affine(rng, shape[1])[0]
            gamma = rounded(np.abs(gamma) if dy_offset else gamma, dtype)
            dy = rounded(dy_offset + inputs.upstream(rng, shape), dtype)
        ref = reference.rmsnorm(x, gamma, EPS, dy=dy)
        rstd = rounded(ref.rstd, stats_dtype(dtype))
        _, dgamma_floor, _ = natural_scales(dy, "layer")
        judge = partial(arrays_problems, names=NAMES[1], dtypes=(dtype, dtype), rtol=tolerances.output_rtol(dtype, 1.0, truncated),
                        device=device, floors=(0.0, dgamma_floor))
        args = (strided(dy, device, contiguous, spaced=True), strided(x, device, contiguous), gamma.to(device),
                rstd.to(device))
        return Trial(args=args, expected=(ref.dx, ref.dgamma), arg_names=NAMES[0], judge=judge)

    return make


def sized(cpu_shape, cuda_shape, dtype, **options):
    """A trial maker whose shape depends on the device (Triton's interpreter cannot afford a GPU's sizes)."""
    makers = {"cpu": trial(cpu_shape, dtype, **options), "cuda": trial(cuda_shape, dtype, **options)}
    return lambda rng, device: makers[device](rng, device)


# --- Known slips, in float64 (arguments are float64 CPU tensors; results NumPy arrays). ----------

SLIPS = ("mean-subtracted", "mean-term-kept", "no-projection", "half-dgamma", "half-rstd", "half-x-hat",
         "half-dgamma-terms", "partials-overwritten")
"""
mean-subtracted       layer norm's backward: x centered by its row mean, and the - mean(g) term
mean-term-kept        layer norm's - mean(g) term kept, x not centered (a layer-norm kernel with its
                      mean's load taken out)
no-projection         dx = rstd * g: the term - x_hat * mean(g * x_hat), through rstd, dropped
half-dgamma           dgamma a running sum over the rows kept in the inputs' 16-bit type (each
                      row's term added in float32, the total rounded back)
half-rstd             rstd rounded to the inputs' 16-bit type before it is used (`rstd.to(x.dtype)`)
half-x-hat            x_hat = x * rstd rounded to the 16-bit type, the rest in float32
half-dgamma-terms     dgamma's terms dy * x_hat, with x_hat, rounded to the 16-bit type, then summed
partials-overwritten  dgamma from the last `groups` rows only: each program's partial row
                      stored over instead of added to (rows r, r + G, ... per program)
"""


def slipped(dy, x, gamma, rstd, slip: str | None = None, groups: int = 1, truncate: bool = False):
    """(dx, dgamma) by the formula in float64, with one known slip (None: no slip).

    `truncate`: for 'half-dgamma' in bfloat16, each rounding toward zero, as Triton's interpreter
    stores a float32 into a bfloat16 tensor (a GPU and PyTorch round to nearest). `groups`: the programs
    (groups of rows r, r + G, ...) of 'half-dgamma' and 'partials-overwritten'.
    """
    sixteen = ("half-rstd", "half-x-hat", "half-dgamma", "half-dgamma-terms", "half-arithmetic")
    half = sixteen_bit_type(x, dy) if slip in sixteen else None
    if slip == "half-arithmetic":  # every operation in the inputs' 16-bit type, as PyTorch does it
        d, r = dy.to(half), rstd.reshape(-1, 1).to(half)
        x_hat = x.to(half) * r
        g = d * gamma.to(half)
        dx = r * (g - x_hat * (g * x_hat).mean(dim=1, keepdim=True))
        return dx.double().numpy(), (d * x_hat).sum(dim=0).double().numpy()
    rstd = rstd.reshape(-1, 1)
    if slip == "half-rstd":
        rstd = rstd.to(half).double()
    centered = x - x.mean(dim=1, keepdim=True) if slip == "mean-subtracted" else x
    x_hat = centered * rstd
    if slip == "half-x-hat":
        x_hat = x_hat.to(half).double()
    g = dy * gamma
    if slip in ("mean-subtracted", "mean-term-kept"):
        dx = rstd * (g - g.mean(dim=1, keepdim=True) - x_hat * (g * x_hat).mean(dim=1, keepdim=True))
    elif slip == "no-projection":
        dx = rstd * g
    else:
        dx = rstd * (g - x_hat * (g * x_hat).mean(dim=1, keepdim=True))
    if slip == "half-dgamma":  # each row's term added in float32 (float64 here), the total rounded to 16 bits
        if truncate and half != torch.bfloat16:
            raise ValueError("the interpreter truncates only to bfloat16")
        dgamma = running_total(dy * x_hat, (0,), half, terms_rounded=False, truncate=truncate, groups=groups)[0]
    elif slip == "half-dgamma-terms":
        dgamma = (dy * x_hat.to(half).double()).to(half).double().sum(dim=0)
    elif slip == "partials-overwritten":
        if groups >= x.shape[0]:
            raise ValueError("with a program per row, nothing is overwritten")
        dgamma = (dy * x_hat)[-groups:].sum(dim=0)
    else:
        dgamma = (dy * x_hat).sum(dim=0)
    return dx.numpy(), dgamma.numpy()


def partials_members(slip: str, truncate: bool = False):
    """`members` for `torch_trials.fitted_to_programs`: dx, and {G: (dgamma,)} as `slipped` gives them under
    `slip` with `groups` G ('half-dgamma', 'partials-overwritten'), every G in one pass."""
    def members(dy, x, gamma, rstd, programs):
        sums = program_sums(lambda: dy * (x * rstd.reshape(-1, 1)), x, dy, programs,
                            slip == "partials-overwritten", truncate)
        dx = slipped(dy, x, gamma, rstd)[0] if sums else None
        return (dx,), {g: (s.reshape(-1).numpy(),) for g, s in sums.items()}

    return members


MESSAGES = {
    "mean-subtracted": ("layer norm's backward: RMSNorm subtracts no mean, so x is not centered and there is no "
                        "- mean(g) term", "02-chain-rule.html#three-paths"),
    "mean-term-kept": ("layer norm's - mean(g) term kept in dx: RMSNorm subtracts no mean, so no path runs "
                       "through one", "02-chain-rule.html#three-paths"),
    "no-projection": ("dx = rstd * g: the term - x_hat * mean(g * x_hat), the path through rstd, is missing",
                      "02-chain-rule.html#slip-no-variance-path"),
    "half-dgamma": ("dgamma summed in the 16-bit type: a long sum stalls where float32 accumulation keeps every "
                    "term", "04-numerics.html#half-precision"),
    "half-rstd": ("rstd rounded to the 16-bit type before it is used (`rstd.to(x.dtype)`): it comes in float32; "
                  "keep it there, and round once, when dx and dgamma are stored", "04-numerics.html#half-precision"),
    "half-x-hat": ("x_hat rounded to the 16-bit type: compute it, and all that follows, in float32, and round "
                   "once, when dx and dgamma are stored", "04-numerics.html#half-precision"),
    "half-dgamma-terms": ("dgamma's terms dy * x_hat rounded to the 16-bit type before they are summed: multiply "
                          "and sum in float32", "04-numerics.html#half-precision"),
    "half-arithmetic": ("every operation done in the 16-bit type, where the arithmetic belongs in float32 and only "
                        "dx and dgamma are rounded to 16 bits, when they are stored", "04-numerics.html#half-precision"),
}


def mistakes(function: str, names=tuple(MESSAGES), messages: dict | None = None) -> list[Mistake]:
    messages = {**MESSAGES, **(messages or {})}
    return [Mistake(function, name, messages[name][0], messages[name][1], partial(slipped, slip=name))
            for name in names]


# --- Exercise 04: `rmsnorm_backward` in PyTorch, on every dtype and device. --------------------

FUNCTION = "rmsnorm_backward"
DEVICES = ("cpu", "cuda")
f64, f32, bf16, f16 = torch.float64, torch.float32, torch.bfloat16, torch.float16


def _cases():
    from . import Case

    c = partial(Case, FUNCTION, devices=DEVICES)
    return [
        c("small", 3, False, "float64, a 5 x 12 input", trial((5, 12), f64)),
        c("float32", 1, False, "float32, a 7 x 33 input", trial((7, 33), f32)),
        c("odd-shape", 2, True, "float64, a 13 x 37 input", trial((13, 37), f64)),
        c("non-contiguous", 2, True, "float32 views, 24 x 70: x transposed, dy's rows spaced apart",
          trial((24, 70), f32, contiguous=False)),
        c("tiny-rms", 3, True, "float64 rows whose mean square is far below eps", trial((6, 17), f64, scale=1e-4)),
        c("large-values", 2, True, "float32 rows with means of 1e3 to 2e3", trial((9, 40), f32, "large-offset")),
        # dy and x away from zero mean: a term a slip adds or drops (layer norm's mean(g)) is then of dx's own
        # size, where for a random dy it shrinks like 1 / sqrt(N) into bfloat16's tolerance.
        c("bfloat16", 2, True, "bfloat16, 16 x 300, dy and x away from zero mean",
          trial((16, 300), bf16, contiguous=False, dy_offset=1.0)),
        # dx and dgamma small differences of terms near 8: a 16-bit rounding before the end is magnified
        # (by 3.5 to 30 tolerances over 200 seeds), which it is not in a random input.
        c("float16-cancelling", 2, True, "float16, 18 x 300, rows near +-30 to 60 of alternating signs, dy near "
          "8: dx and dgamma small differences of large terms",
          trial((18, 300), f16, "large-offset", offset=30.0, dy_offset=8.0, cancelling=True)),
        # The same cancellation, visible: a 16-bit rounding before the end shows in the notebook, not only in
        # the grade.
        c("float16-visible", 1, False, "float16, 10 x 200, rows near +-30 to 60 of alternating signs, dy near 8",
          trial((10, 200), f16, "large-offset", offset=30.0, dy_offset=8.0, cancelling=True)),
        # 3000 rows of x_hat near 1 and dy near 2: dgamma's column sums reach about 6000, where a
        # bfloat16 or float16 running total has long stopped growing.
        c("bfloat16-tall", 2, True, "bfloat16, 3000 x 6, dy shifted away from zero: sums of 3000 rows",
          trial((3000, 6), bf16, dy_offset=2.0), seconds=20.0),
        c("float16-tall", 2, True, "float16, 3000 x 6, dy shifted away from zero: sums of 3000 rows",
          trial((3000, 6), f16, dy_offset=2.0), seconds=20.0),
    ]


CASES = _cases()
MISTAKES = mistakes(FUNCTION)
