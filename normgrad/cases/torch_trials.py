"""Trials for the PyTorch and Triton backward functions, shared by exercises 04, 05 and 06.

`layernorm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)` has the
same contract in exercise 04 (PyTorch) and 06 (Triton), and batch norm's in 04
and 05; so the trials are built here, once:

- inputs are drawn in float64, rounded to the dtype under test, and the oracle
  runs on the rounded values, so that the expected gradient is exact for
  exactly the inputs the student's code receives;
- `mean` and `rstd` are float32 for half-precision inputs and of x's dtype
  otherwise (COURSE_API.md), rounded from the oracle's float64 values;
- tensors are placed on the device under test, optionally as non-contiguous
  views (a transposed copy, transposed back);
- the tolerance follows from the dtype and the input's conditioning.

The known slips of these functions are emulated here too, in float64 (`slipped_backward`, and
`computed_backward` in the dtypes code computes in), for the diagnosis to name a wrong answer by. Where
a slip's outcome hangs on a choice the student's code made (the chunk width a count was taken from, the
number of programs that kept partial sums), its impl is `fitted`: the choice is read off the answer.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .. import checks, inputs, reference, tolerances
from . import Trial
from .judging import arrays_problems

HALF = (torch.float16, torch.bfloat16)


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of mean and rstd for inputs of `dtype`."""
    return torch.float32 if dtype in HALF else dtype


def rounded(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `dtype` holding `a` rounded to it."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def strided(t: torch.Tensor, device: str, contiguous: bool, spaced: bool = False) -> torch.Tensor:
    """`t` on `device`; when not `contiguous`, a view with the same values and transposed strides, or when
    `spaced`, rows that sit apart in a wider buffer, its gaps NaN (a read past a row's end shows).

    A case's x is transposed and its dy spaced, so that code which takes dy's strides from x, or assumes
    either is contiguous, reads the wrong values."""
    t = t.to(device)
    if contiguous or t.dim() < 2:
        return t
    if spaced:
        wide = torch.full((*t.shape[:-1], t.shape[-1] + 3), float("nan"), dtype=t.dtype, device=t.device)
        wide[..., :t.shape[-1]] = t
        return wide[..., :t.shape[-1]]
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def backward_trial(norm: str, shape, dtype: torch.dtype = torch.float32, kind: str = "normal",
                   contiguous: bool = True, eps: float = 1e-5, offset: float = 1e3, dy_offset: float = 0.0,
                   truncated: bool = False, cancelling: bool = False):
    """A trial maker for f(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta).

    norm='layer': x of shape (M, N), statistics per row, shape (M,).
    norm='batch': x of shape (N, C, *), statistics per channel over every axis but 1, shape (C,).
    `dy_offset` shifts the upstream gradient away from zero mean (and makes gamma
    positive, so that dy * gamma keeps the shift): its sums then grow with the
    number of terms, and a sum carried in 16 bits stalls (in bfloat16, 256 + 1
    rounds back to 256), which is how a reduction in half precision shows. `truncated`: the code
    under test stores 16-bit results by dropping bits (`tolerances.output_rtol`). `cancelling`: see
    `statistics_trial`.
    """
    return statistics_trial(norm, shape, dtype, kind, contiguous, eps, offset, dy_offset, truncated=truncated,
                            cancelling=cancelling)


def by_device(cpu, cuda):
    """A trial maker that uses `cpu` on the CPU and `cuda` on a GPU: a GPU affords the sizes at which
    a mistake shows in full (sums of tens of thousands of terms), the CPU and the interpreter less."""
    return lambda rng, device: (cuda if device == "cuda" else cpu)(rng, device)


def natural_scales(dy: torch.Tensor, norm: str, direct: float = 0.0) -> tuple:
    """Tolerance floors for (dx, dgamma, dbeta): the scales their rounding errors come in.

    Any correct x_hat = (x - mean) * rstd carries an absolute error of about u * kappa, however
    small x_hat itself is, so dgamma = sum(dy * x_hat) carries one of about u * kappa times the
    spread of dy times the square root of the number of terms: that is its floor. It matters where
    x_hat is small, a constant group (x_hat is rounding noise) or a variance far below eps. dx's
    three terms are each of the size of its direct path rstd * gamma * dy, `direct` (its largest
    entry), and in a group of two they cancel to nearly nothing: that is dx's floor. dbeta needs none.
    """
    dy = dy.double()
    axes = (0,) if norm == "layer" else inputs.group_axes(tuple(dy.shape), norm)
    terms = int(np.prod([dy.shape[a] for a in axes]))
    return direct, float(dy.std()) * terms**0.5, 0.0


def direct_path(dy, gamma, rstd, norm: str) -> float:
    """The largest entry of dx's direct path rstd * gamma * dy, in float64 (rstd one per group)."""
    dy, gamma, rstd = (torch.as_tensor(t).double().cpu() for t in (dy, gamma, rstd))
    across = [1] * dy.dim()
    across[-1 if norm == "layer" else 1] = -1
    per_group = rstd.reshape(-1, *[1] * (dy.dim() - 1)) if norm == "layer" else rstd.reshape(across)
    return float((dy * gamma.reshape(across) * per_group).abs().max())


def tolerance_ratios(trial: Trial, returned) -> tuple[float, ...]:
    """For each output of a backward trial: its largest error over what the tolerance allows.

    Below 1 passes; the margin of a correct answer is how far below, a mistake's how far above.
    """
    rtols, floors = trial.judge.keywords["rtol"], trial.judge.keywords["floors"]
    ratios = []
    for value, want, rtol, floor in zip(returned, trial.expected, rtols, floors):
        want = np.asarray(want, dtype=np.float64)
        err = float(np.max(np.abs(value.detach().double().cpu().numpy() - want), initial=0.0))
        ratios.append(err / (rtol * max(float(np.max(np.abs(want), initial=0.0)), floor)))
    return tuple(ratios)


# --- The same trials under other names, and with running statistics (exercise 05). ----------

COURSE_NAMES = (("dy", "x", "gamma", "mean", "rstd"), ("dx", "dgamma", "dbeta"))
THNN_NAMES = (("grad_out", "x", "weight", "mean", "invstd"), ("grad_in", "grad_weight", "grad_bias"))


def running_statistics(rng: np.random.Generator, mean: np.ndarray, var: np.ndarray):
    """Running mean and variance near the batch's but not equal to them, as after some training.

    The mean moves by up to about a standard deviation and the variance by a factor
    0.5 to 2, so that the evaluation-mode gradient and the training-mode one differ
    plainly (a constant channel's running variance stays 0).
    """
    std = np.sqrt(var)
    return mean + std * rng.uniform(-1.0, 1.0, mean.shape), var * 2.0 ** rng.uniform(-1.0, 1.0, var.shape)


def cancelling_affine(rng: np.random.Generator, shape, channels: int, dy_offset: float, dtype):
    """gamma near 1 (spread 0.01) and dy near `dy_offset` (spread 0.1), rounded to `dtype`: g = dy * gamma is
    then nearly constant, and what a backward keeps of it is a small difference of large terms."""
    gamma = rounded(1.0 + 0.01 * rng.standard_normal(channels), dtype)
    dy = rounded(dy_offset + 0.1 * inputs.upstream(rng, shape), dtype)
    return gamma, dy


def statistics_trial(norm: str, shape, dtype: torch.dtype = torch.float32, kind: str = "normal",
                     contiguous: bool = True, eps: float = 1e-5, offset: float = 1e3, dy_offset: float = 0.0,
                     *, running: bool = False, names=COURSE_NAMES, extra_args: tuple = (),
                     extra_names: tuple = (), kwargs: dict | None = None, truncated: bool = False,
                     cancelling: bool = False):
    """`backward_trial`, with its argument and result names, the statistics and the call's tail chosen.

    cancelling=True: gamma and dy from `cancelling_affine`; dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
    is then a small difference of terms near dy_offset, which magnifies any 16-bit rounding of g, or of its
    sums, made before the end.

    running=True (batch norm only): the `mean` and `rstd` passed are running statistics
    (`running_statistics`), and the oracle is the evaluation-mode gradient, where they
    are constants. `extra_args` (named `extra_names`) follow the five tensors and
    `kwargs` go as keywords, e.g. exercise 05's train flag.
    """
    shape = tuple(shape)
    if running and norm != "batch":
        raise ValueError("running statistics belong to batch norm")
    channels = shape[-1] if norm == "layer" else shape[1]
    oracle = reference.layernorm if norm == "layer" else reference.batchnorm
    arg_names, result_names = names

    def make(rng: np.random.Generator, device: str) -> Trial:
        x = rounded(inputs.sample(rng, shape, norm, kind, offset), dtype)
        if cancelling:
            gamma, dy = cancelling_affine(rng, shape, channels, dy_offset, dtype)
        else:
            gamma = inputs.affine(rng, channels)[0]
            gamma = rounded(np.abs(gamma) if dy_offset else gamma, dtype)
            dy = rounded(dy_offset + inputs.upstream(rng, shape), dtype)
        ref = oracle(x, gamma, torch.zeros_like(gamma), eps, dy=dy)
        mean = rounded(ref.mean, stats_dtype(dtype))
        rstd = rounded(ref.rstd, stats_dtype(dtype))
        axes = inputs.group_axes(shape, norm)
        kappa = tolerances.conditioning(x.double().numpy(), axes, eps)
        if running:
            run_mean, run_var = running_statistics(rng, ref.mean, np.maximum(1 / ref.rstd**2 - eps, 0.0))
            mean = rounded(run_mean, stats_dtype(dtype))
            rstd = rounded(1 / np.sqrt(run_var + eps), stats_dtype(dtype))
            # The oracle sees exactly the statistics passed: var + eps = 1 / rstd^2 as rounded.
            ref = reference.batchnorm_eval(x, gamma, torch.zeros_like(gamma), mean, 1 / rstd.double()**2 - eps,
                                           eps, dy=dy)
            across = (1, -1) + (1,) * (len(shape) - 2)
            kappa = max(kappa, float((x.double().abs() * rstd.double().reshape(across)).max()))
        args = (strided(dy, device, contiguous, spaced=True), strided(x, device, contiguous), gamma.to(device),
                mean.to(device), rstd.to(device), *extra_args)
        # dx's floor is its direct path, for a group of two whose terms cancel to nearly nothing; a cancelling
        # trial's groups are long, and its dx is held to its own size, where a 16-bit rounding of g shows
        direct = 0.0 if cancelling else direct_path(dy, gamma, rstd, norm)
        judge = partial(arrays_problems, names=result_names, dtypes=(dtype, dtype, dtype),
                        rtol=tolerances.backward_rtols(dtype, kappa, truncated), device=device,
                        floors=natural_scales(dy, norm, direct))
        return Trial(args=args, expected=(ref.dx, ref.dgamma, ref.dbeta), arg_names=(*arg_names, *extra_names),
                     judge=judge, kwargs=dict(kwargs or {}))

    return make


# --- Known slips of the backward formula, in float64, for the diagnoses of 04, 05 and 06. ---

SLIPS = ("var-without-eps", "no-mean-path", "no-variance-path", "diagonal-only", "gamma-forgotten",
         "gamma-outside-sums", "half-statistics", "half-sums", "dgamma-from-x", "padded-count",
         "mean-by-chunk-width", "variance-by-chunk-width", "bessel",
         "count-from-wrong-axis",
         "reduced-over-dim-1", "half-arithmetic", "through-bfloat16", "through-bfloat16-truncated",
         "half-partials", "half-partials-truncated", "partials-overwritten")
"""
var-without-eps   the third term divided by var where var + eps belongs (source 000's snippet)
no-mean-path      dx without the term through the mean, - mean(g)
no-variance-path  dx without the term through the variance, - x_hat * mean(g * x_hat)
diagonal-only     only the Jacobian's diagonal kept: g * rstd * (1 - 1/m - x_hat^2/m) (source 002)
gamma-forgotten   g = dy where g = dy * gamma belongs
gamma-outside-sums  batch norm's form, rstd * gamma * (dy - mean(dy) - x_hat * mean(dy * x_hat)), for layer
                  norm, whose gamma changes along the group: right for batch norm (one gamma a group)
half-statistics   mean and rstd rounded to the inputs' 16-bit type before use
half-sums         every sum a running total kept in the inputs' 16-bit type
dgamma-from-x     dgamma summed from dy * x where dy * x_hat belongs
padded-count      the means over a group divided by its size rounded up to a power of two
                  (a Triton block's width) instead of by its size; with `width`, by that width
                  (the chunk a kernel's loop over a long row takes)
mean-by-chunk-width, variance-by-chunk-width   one of the two means so divided, mean(g) or
                  mean(g * x_hat), the other by the group's size
bessel            the variance recomputed with Bessel's correction (torch.var's default,
                  unbiased=True): rstd = 1 / sqrt(sum((x - mean)^2) / (m - 1) + eps) in place of
                  the rstd passed in, and the usual formula with it
count-from-wrong-axis  batch norm's m taken from the channel axis (x.shape[1] for (N, C)); the same
                  as no slip when N == C, so it is refused for square inputs
reduced-over-dim-1     batch norm's group sums taken over dim 1 (layer norm's axis), m = C:
                  x_hat and the parameters' sums are right, dx's two means are not, at any shape
half-arithmetic   every operation in the inputs' 16-bit type (statistics, products and all)
partials-overwritten  layer norm's dgamma and dbeta from the last `groups` rows only: each program's
                  partial row stored over instead of added to (rows r, r + G, ... per program)
through-bfloat16  float16 inputs rounded through bfloat16 on the way in, then float32 arithmetic
half-partials     dgamma's and dbeta's sums over the rows kept in a 16-bit buffer: each float32 term
                  added to it and the total stored back rounded (the Triton tutorial's partial sums in
                  x's dtype); with -truncated, stored by dropping bits, as the interpreter does for bfloat16
through-bfloat16-truncated  the same, with bfloat16 made by dropping bits, as Triton's interpreter
                  converts (NumPy has no bfloat16)
"""


def input_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The narrowest floating type that holds every value exactly: the type a trial's inputs were
    rounded to, recovered from the float64 copies a diagnosis works on. bfloat16 is tried first,
    since its values usually fit float16 too; random float16 values do not fit bfloat16."""
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        if all(torch.equal(t.to(dtype).to(t.dtype), t) for t in tensors):
            return dtype
    return torch.float64


def sixteen_bit_type(*tensors) -> torch.dtype:
    """The 16-bit type the inputs were rounded to; ValueError when they were not (16-bit slips only)."""
    dtype = input_dtype(*tensors)
    if dtype not in HALF:
        raise ValueError("a slip of 16-bit arithmetic needs 16-bit inputs")
    return dtype


def running_total(t: torch.Tensor, axes: tuple[int, ...], dtype: torch.dtype, terms_rounded: bool = True,
                  truncate: bool = False, groups: int = 1) -> torch.Tensor:
    """Sum over `axes` (kept, size 1) as a naive loop does it: one term at a time, the total rounded
    to `dtype` after each addition. Returns float64.

    terms_rounded=False: each term is added unrounded (a float32 term added to a 16-bit partial sum
    read from memory, the sum stored back); truncate: the total is stored by dropping bits, as
    Triton's interpreter stores bfloat16. `groups`: G programs each keep such a total of the terms
    g, g + G, ..., and the G totals are added up exactly (as a float32 second pass would)."""
    return running_totals(t, axes, dtype, (groups,), terms_rounded, truncate)[groups]


def running_totals(t: torch.Tensor, axes: tuple[int, ...], dtype: torch.dtype, programs=(1,),
                   terms_rounded: bool = True, truncate: bool = False) -> dict[int, torch.Tensor]:
    """`running_total` for each number of programs G in `programs` (G -> its total), in one pass over the terms:
    term i goes to program i % G of each G at once, so the pass takes as many steps as there are terms whatever
    the G. The loop is NumPy's, on float32 bits, rounding as torch does: a float64 total to float32 first, then
    to 16 bits, ties to even (torch's `.to`, one G and one term at a time, took 25 us a term; a GPU case's
    300000 rows were half a minute of diagnosis)."""
    rest = [a for a in range(t.dim()) if a not in axes]
    terms = t.permute(*axes, *rest)  # the reduced axes first, in index order
    rows = int(np.prod([t.shape[a] for a in axes]))
    # 16-bit terms add in float32, as torch adds two 16-bit tensors; unrounded ones in float64
    terms = (terms.to(dtype).float() if terms_rounded else terms.double()).reshape(rows, -1).numpy()
    counts = {g: max(1, min(g, rows)) for g in programs}
    distinct = sorted(set(counts.values()))
    sizes = np.array(distinct)
    offsets = np.cumsum([0, *distinct[:-1]])
    width = terms.shape[1]
    totals = np.zeros((int(sizes.sum()), width), dtype=np.float32)  # every program's 16-bit total
    if len(distinct) == 1:  # one G: its programs take G terms at a time, side by side (twice as quick)
        g = distinct[0]
        steps = np.concatenate([terms, np.zeros((-rows % g, width), terms.dtype)]).reshape(-1, g, width)
        sixteen_bits = _sixteen_bit_rounding(dtype, truncate, totals.shape)
        for step in steps:  # adding 0 (the padding) leaves a total as it is
            np.copyto(totals, totals + step, casting="unsafe")
            sixteen_bits(totals)
    else:
        sixteen_bits = _sixteen_bit_rounding(dtype, truncate, (len(distinct), width))
        for i, term in enumerate(terms):
            held = offsets + i % sizes  # the program of each G that takes term i
            total = (totals[held] + term).astype(np.float32)
            sixteen_bits(total)
            totals[held] = total
    shape = [1 if a in axes else n for a, n in enumerate(t.shape)]
    kept = {g: torch.from_numpy(totals[o:o + g]).double().sum(dim=0).reshape(shape) for g, o in zip(distinct, offsets)}
    return {g: kept[counts[g]] for g in programs}


def _sixteen_bit_rounding(dtype: torch.dtype, truncate: bool, shape: tuple[int, ...]):
    """A function that rounds a float32 array of `shape` in place to `dtype`'s values: bfloat16 by its upper
    16 bits, to nearest with ties to even (as torch does) or `truncate`d; float16 through NumPy's float16."""
    if dtype == torch.float16:
        return lambda f: np.copyto(f, f.astype(np.float16))
    if dtype != torch.bfloat16:
        raise ValueError(f"not a 16-bit type: {dtype}")
    kept, odd = np.uint32(0xFFFF0000), np.empty(shape, dtype=np.uint32)

    def to_bfloat16(f):
        u = f.view(np.uint32)
        if not truncate:  # add just under half a unit of bfloat16's last place, one more when the kept part is odd
            np.right_shift(u, 16, out=odd)
            np.bitwise_and(odd, 1, out=odd)
            np.add(odd, 0x7FFF, out=odd)
            u += odd
        u &= kept

    return to_bfloat16


def _answer_array(value, shape: tuple) -> np.ndarray:
    """One output of a student's answer as a float64 array of `shape`, for a fit to read; ValueError where it is
    not one (not an array, another shape, a value not finite): the answer then matches no member of the family."""
    try:
        answer = np.asarray(checks.as_float64(value), dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError("no answer to fit") from e
    if answer.shape != tuple(shape) or not np.isfinite(answer).all():
        raise ValueError("no answer to fit")
    return answer


def program_sums(terms_of, x, dy, programs, overwritten: bool, truncate: bool = False) -> dict[int, torch.Tensor]:
    """{G: the sums over the rows of `terms_of()` that G programs leave} under a slip of their partial sums:
    `overwritten`, each program's row stored over the last (`last_rows_sums`); otherwise each program's total kept
    in x's 16-bit type (`running_totals`), `truncate`d as the interpreter stores bfloat16. What cannot apply (not
    16-bit, no bfloat16 to truncate) is refused before the terms are computed."""
    if overwritten:
        return last_rows_sums(terms_of(), programs)
    half = sixteen_bit_type(x, dy)
    if truncate and half != torch.bfloat16:
        raise ValueError("only bfloat16 is stored by dropping bits")
    return running_totals(terms_of(), (0,), half, programs, terms_rounded=False, truncate=truncate)


def last_rows_sums(terms: torch.Tensor, programs) -> dict[int, torch.Tensor]:
    """G -> the sum over axis 0 of the last G rows of `terms`, for each G of `programs` below the row count:
    what G programs leave, rows g, g + G, ... each, when each stores its row over the last instead of adding."""
    rows = terms.shape[0]
    return {g: terms[-g:].sum(dim=0) for g in programs if g < rows}


def fitted_to_programs(members, programs):
    """A `fitted` impl (see `diagnose`) for a slip of the partial sums that G programs keep, G the student's
    launcher's choice. `members(*args, programs)` -> (the outputs before the parameters' gradients, {G: the
    parameters' gradients under the slip}) for the G of `programs` it applies to. Given the answer, the impl
    returns the member whose gradients the answer's sit nearest; without one, the first G's."""
    def impl(*args, returned=None):
        head, found = members(*args, programs if returned is not None else programs[:1])
        if not found:
            raise ValueError("the slip applies to none of these numbers of programs")
        g = next(iter(found)) if returned is None else _nearest_member(found, returned, len(head))
        return (*head, *found[g])

    impl.fitted = True
    return impl


def _nearest_member(found: dict, returned, skip: int) -> int:
    """The G whose gradients the answer's (`returned` past its first `skip` outputs) sit nearest, each output
    measured relative to the member's largest entry, as a judge measures an error; ValueError where the answer
    has none to read."""
    some = next(iter(found.values()))
    if not isinstance(returned, (tuple, list)) or len(returned) != skip + len(some):
        raise ValueError("no parameters' gradients to fit")
    answer = [_answer_array(r, np.shape(m)) for r, m in zip(returned[skip:], some)]

    def distance(member):
        return max(float(np.max(np.abs(a - m), initial=0.0)) / max(float(np.max(np.abs(m), initial=0.0)),
                                                                    np.finfo(np.float64).tiny)
                   for a, m in zip(answer, member))

    return min(found, key=lambda g: distance(found[g]))


# An autograd Function's forward that ignores the eps apply passes: LayerNormFunction's and BatchNormFunction's
DEFAULT_EPS_SLIP = ("eps = 1e-5 whatever eps apply was given: the eps passed to apply belongs inside the square root",
                    "01-forward.html#where-eps-sits")
# How autograd refuses a backward whose values do not match forward's inputs one for one: too few, or a
# tensor for an input that was not one (eps, a parameter passed as None). Chapter 4 says why.
GRADIENT_COUNT_ERRORS = r"gradient different than None at position|incorrect number of gradients"
GRADIENT_COUNT_SECTION = "04-code-mapping.html#term-by-term"
CHUNK_WIDTH_SLIPS = ("padded-count", "mean-by-chunk-width", "variance-by-chunk-width")
CHUNK_WIDTHS = (128, 256, 512, 1024, 2048, 4096)  # the chunks a kernel's loop over a long row takes
CHUNK_WIDTH_MESSAGES = {
    "padded-count": "the row sums divided by the block width (N rounded up to a power of two, or the width of the "
                    "chunks a long row is loaded in) instead of by N",
    "mean-by-chunk-width": "the sum of g = dy * gamma divided by the block or chunk width instead of by N (the "
                           "other sum by N): the mean(g) term is off",
    "variance-by-chunk-width": "the sum of g * x_hat divided by the block or chunk width instead of by N (the other "
                               "sum by N): the x_hat * mean(g * x_hat) term is off",
}


def chunk_width_slips(dx_only: bool = False):
    """(name, message, impl) of the count slips of a Triton kernel over layer norm's rows; `dx_only`: the impl
    returns dx alone. The width is the student's choice (N rounded up, or a chunk of CHUNK_WIDTHS below N), so
    each impl is `fitted` (see `diagnose`): given the answer, it returns the member of its family, the widths
    the answer's dx sits nearest; without one, N rounded up."""
    for slip, message in CHUNK_WIDTH_MESSAGES.items():
        def impl(dy, x, gamma, mean, rstd, returned=None, _slip=slip):
            width = None if returned is None else _fitted_width(_slip, dy, x, gamma, mean, rstd, returned, dx_only)
            found = slipped_backward(dy, x, gamma, mean, rstd, "layer", _slip, width=width)
            return found[0] if dx_only else found
        impl.fitted = True
        yield slip, message, impl


def _fitted_width(slip, dy, x, gamma, mean, rstd, returned, dx_only: bool) -> int | None:
    """The width of `slip` whose dx the answer's sits nearest: dx with the two row sums S1 = sum(g) and
    S2 = sum(g * x_hat) divided by c1 and c2 is the right dx plus a * rstd * S1 + b * rstd * x_hat * S2, with
    a = 1/N - 1/c1 and b = 1/N - 1/c2; a and b are fitted by least squares to the answer's error, and c1, c2
    taken to the nearest of N, N rounded up and the chunk widths below N. ValueError where the fit is not the
    slip's form (c1 = c2 for padded-count, c2 = N for mean-by-chunk-width, c1 = N for variance-by-chunk-width)."""
    if not dx_only:
        returned = returned[0] if isinstance(returned, (tuple, list)) and returned else None
    answer = _answer_array(returned, tuple(x.shape))
    n = x.shape[1]
    x_hat = ((x - mean[:, None]) * rstd[:, None]).numpy()
    g = (dy * gamma).numpy()
    r = rstd.numpy()[:, None]
    s1, s2 = g.sum(axis=1, keepdims=True), (g * x_hat).sum(axis=1, keepdims=True)
    right = r * (g - s1 / n - x_hat * s2 / n)
    u, v, error = np.broadcast_to(r * s1, x_hat.shape).ravel(), (r * x_hat * s2).ravel(), (answer - right).ravel()
    normal = np.array([[u @ u, u @ v], [u @ v, v @ v]])  # the least-squares fit's 2 x 2 normal equations
    (a, b), *_ = np.linalg.lstsq(normal, np.array([u @ error, v @ error]), rcond=None)
    padded = 1 << (n - 1).bit_length()
    counts = sorted({n, padded, *(w for w in CHUNK_WIDTHS if w < n)})

    def nearest(excess: float) -> int:  # excess = 1/N - 1/c
        inverse = 1 / n - excess
        return min(counts, key=lambda c: abs(1 / c - inverse))

    c1, c2 = nearest(a), nearest(b)
    form = {"padded-count": c1 == c2 != n, "mean-by-chunk-width": c1 != n == c2,
            "variance-by-chunk-width": c1 == n != c2}[slip]
    if not form:
        raise ValueError(f"the answer's counts ({c1}, {c2}) are not {slip}'s")
    width = c1 if slip != "variance-by-chunk-width" else c2
    return None if width == padded else width


def truncated_bfloat16(t: torch.Tensor) -> torch.Tensor:
    """`t` made bfloat16 by dropping the low 16 bits of its float32 form, as float64."""
    return (t.float().view(torch.int32) & ~0xFFFF).view(torch.float32).double()


def slipped_backward(dy, x, gamma, mean, rstd, norm: str, slip: str | None = None, eps: float = 1e-5,
                     groups: int = 1, width: int | None = None):
    """(dx, dgamma, dbeta) by the compact formula in float64, with one known slip (None: no slip).

    norm='layer': x (M, N), statistics per row; norm='batch': x (N, C, *), statistics per channel.
    Arguments are float64 CPU tensors; results are float64 NumPy arrays. `groups`: the programs
    (groups of rows) of 'partials-overwritten' and 'half-partials'; `width`: the chunk width the count
    slips divide by (None: the group's size rounded up to a power of two).
    """
    if slip is not None and slip not in SLIPS:
        raise ValueError(f"unknown slip {slip!r}")
    if slip == "partials-overwritten" and (norm != "layer" or groups >= x.shape[0]):
        raise ValueError("a slip of layer norm's row groups, with fewer programs than rows")
    axes = inputs.group_axes(tuple(x.shape), norm)
    param_axes = (0,) if norm == "layer" else axes
    across = [1 if a in axes else n for a, n in enumerate(x.shape)]  # mean, rstd broadcast
    along = [1 if a in param_axes else n for a, n in enumerate(x.shape)]  # gamma broadcast
    m = int(np.prod([x.shape[a] for a in axes]))
    if slip in ("count-from-wrong-axis", "reduced-over-dim-1"):
        if norm != "batch" or x.dim() != 2:
            raise ValueError("a slip of batch norm's 2-D (N, C) axes")
        if slip == "count-from-wrong-axis" and x.shape[0] == x.shape[1]:
            raise ValueError("the count from the wrong axis is right by accident when N == C")
        m = x.shape[1]
    counts = (m, m)  # what the sums of g and of g * x_hat are divided by
    if slip in CHUNK_WIDTH_SLIPS:
        if width is not None and width >= m:
            raise ValueError("a row no wider than a chunk is one block: the slip without a width")
        wrong = width or 1 << (m - 1).bit_length()
        if wrong == m:
            raise ValueError("a chunk as wide as the group divides by the right count")
        counts = (m if slip == "variance-by-chunk-width" else wrong, m if slip == "mean-by-chunk-width" else wrong)
    if slip == "half-arithmetic":  # done as code does it, on the CPU, in the inputs' 16-bit type
        half = sixteen_bit_type(x, dy)
        done = computed_backward(dy.to(half), x.to(half), gamma.to(half), mean.float(), rstd.float(), norm, slip)
        return tuple(t.double().numpy() for t in done)
    if slip in ("through-bfloat16", "through-bfloat16-truncated"):
        if input_dtype(x, dy) != torch.float16:
            raise ValueError("a slip of float16 inputs")
        through = truncated_bfloat16 if slip.endswith("truncated") else (lambda t: t.to(torch.bfloat16).double())
        dy, x, gamma = (through(t) for t in (dy, x, gamma))
    if slip == "bessel":
        if m < 2:
            raise ValueError("Bessel's correction needs two values")
        centered = x - mean.reshape(across)
        rstd = 1 / torch.sqrt((centered**2).sum(dim=axes, keepdim=True) / (m - 1) + eps)
    mean, rstd = mean.reshape(across), rstd.reshape(across)
    if slip == "half-statistics":
        half = sixteen_bit_type(x, dy)
        mean, rstd = mean.to(half).double(), rstd.to(half).double()
    if slip == "half-sums":
        half = sixteen_bit_type(x, dy)

        def total(t, over):
            return running_total(t, over, half)
    elif slip in ("half-partials", "half-partials-truncated"):
        half = sixteen_bit_type(x, dy)
        if slip.endswith("truncated") and half != torch.bfloat16:
            raise ValueError("only bfloat16 is stored by dropping bits")

        def total(t, over):
            if over != param_axes:  # the row sums of dx stay in float32
                return t.sum(dim=over, keepdim=True)
            return running_total(t, over, half, terms_rounded=False, truncate=slip.endswith("truncated"),
                                 groups=groups)
    else:
        def total(t, over):
            return t.sum(dim=over, keepdim=True)

    x_hat = (x - mean) * rstd
    g = dy if slip in ("gamma-forgotten", "gamma-outside-sums") else dy * gamma.reshape(along)
    reduce = (1,) if slip == "reduced-over-dim-1" else axes
    mean_g, mean_gx = total(g, reduce) / counts[0], total(g * x_hat, reduce) / counts[1]
    if slip == "var-without-eps":
        var = 1 / rstd**2 - eps
        centered = x - mean
        dx = rstd * (g - mean_g - centered * total(g * centered, axes) / m / var)
    elif slip == "no-mean-path":
        dx = rstd * (g - x_hat * mean_gx)
    elif slip == "no-variance-path":
        dx = rstd * (g - mean_g)
    elif slip == "diagonal-only":
        dx = g * rstd * (1 - 1 / m - x_hat**2 / m)
    else:
        dx = rstd * (g - mean_g - x_hat * mean_gx)
    if slip == "gamma-outside-sums":
        dx = dx * gamma.reshape(along)
    if slip == "partials-overwritten":  # each program's last row, rows r, r + G, ...: the last G rows
        dy, x_hat = dy[-groups:], x_hat[-groups:]
    dgamma = total(dy * (x if slip == "dgamma-from-x" else x_hat), param_axes).reshape(-1)
    dbeta = total(dy, param_axes).reshape(-1)
    return dx.numpy(), dgamma.numpy(), dbeta.numpy()


def layer_partials_members(slip: str):
    """`members` for `fitted_to_programs`: layer norm's dx, and {G: (dgamma, dbeta)} as `slipped_backward` gives
    them under `slip` with `groups` G ('partials-overwritten', 'half-partials', 'half-partials-truncated'),
    every G in one pass."""
    def members(dy, x, gamma, mean, rstd, programs):
        def terms():  # (M, 2, N): dgamma's terms beside dbeta's
            x_hat = (x - mean.reshape(-1, 1)) * rstd.reshape(-1, 1)
            return torch.stack([dy * x_hat, dy], dim=1)

        sums = program_sums(terms, x, dy, programs, slip == "partials-overwritten", slip.endswith("truncated"))
        dx = slipped_backward(dy, x, gamma, mean, rstd, "layer")[0] if sums else None
        return (dx,), {g: tuple(s.reshape(2, -1).numpy()) for g, s in sums.items()}

    return members


def computed_backward(dy, x, gamma, mean, rstd, norm: str, slip: str | None = None):
    """(dx, dgamma, dbeta) as a program computes them, in the dtypes of its arguments: float32
    arithmetic for 16-bit inputs, rounded once to x's dtype at the end (None: correct code), or with
    one of the 16-bit slips done the way code does it. Results are tensors of x's and gamma's dtypes.

    'half-statistics' rounds mean and rstd to x's dtype, 'half-sums' keeps each sum's running total
    in it, 'half-arithmetic' does every operation in it, 'through-bfloat16' rounds float16 inputs
    to bfloat16 on the way in. Chapter 4b and the tests measure each against the tolerance.
    """
    half = x.dtype in HALF
    work = x.dtype if slip == "half-arithmetic" or not half else torch.float32
    axes = inputs.group_axes(tuple(x.shape), norm)
    param_axes = (0,) if norm == "layer" else axes
    across = [1 if a in axes else n for a, n in enumerate(x.shape)]
    along = [1 if a in param_axes else n for a, n in enumerate(x.shape)]
    stats = x.dtype if slip in ("half-statistics", "half-arithmetic") else work
    if slip == "through-bfloat16":
        dy, x_in, gamma_in = (t.to(torch.bfloat16) for t in (dy, x, gamma))
    else:
        x_in, gamma_in = x, gamma
    d, v, w = dy.to(work), x_in.to(work), gamma_in.to(work).reshape(along)
    mu, r = mean.to(stats).to(work).reshape(across), rstd.to(stats).to(work).reshape(across)
    m = int(np.prod([x.shape[a] for a in axes]))

    def total(t, over):
        if slip == "half-sums":
            return running_total(t, over, x.dtype).to(work)
        return t.sum(dim=over, keepdim=True)

    x_hat = (v - mu) * r
    g = d * w
    dx = r * (g - total(g, axes) / m - x_hat * (total(g * x_hat, axes) / m))
    dgamma = total(d * x_hat, param_axes).reshape(-1)
    dbeta = total(d, param_axes).reshape(-1)
    return dx.to(x.dtype), dgamma.to(gamma.dtype), dbeta.to(gamma.dtype)
