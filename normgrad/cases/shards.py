"""Exercise 05, added in the second edition: batch norm's backward split across shards.

Data-parallel training cuts a batch along dimension 0 into shards, one per device. THNN's
insight, that the backward needs only two sums per channel, is what lets the shards cooperate
(PyTorch's SyncBatchNorm: `batch_norm_backward_reduce`, then `batch_norm_backward_elemt`):

- `shard_sums(grad_out, x, mean) -> (sum_dy, sum_dy_xmu)`: one shard's per-channel sums, shape
  (C,), float32 for 16-bit inputs; `mean` is the whole batch's;
- the shards' sums are added (an all-reduce: two vectors of C cross between devices);
- `shard_grad_in(grad_out, x, weight, mean, invstd, sum_dy, sum_dy_xmu, count) -> grad_in`: one
  shard's gradient from the totals and `count`, the whole batch's number of values per channel.

Cases of `shard_sums` call it on one shard. Cases of `shard_grad_in` either call it on one shard
with sums computed here ("call"), or run the whole split under the protocol "shards"
(`calling._shards`): the batch is cut into uneven shards (one of a single sample), the student's
`shard_sums` runs on each, the sums are added, and each shard's `grad_in` must match the float64
oracle of the whole batch (`reference.batchnorm`). Where the student's sums are wrong, `grad_in` is
judged as computed from the right ones: a wrong `shard_sums` costs its own points, not these.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .. import inputs, reference, tolerances
from . import Case, Mistake, Trial
from .judging import arrays_problems, value_problems
from .torch_trials import rounded, stats_dtype, strided

DEVICES = ("cpu", "cuda")
f64, f32, bf16, f16 = torch.float64, torch.float32, torch.bfloat16, torch.float16
EPS = 1e-5


def _batch(rng, shape, dtype, kind, weighted, shift=0.0, offset=1e3, lean=0.0):
    """A whole batch: x, dy, weight (or None) rounded to dtype, and the float64 oracle.

    `shift` moves each sample as a whole by a normal draw of that spread (images of different
    brightness): the shards' own means then stray from the batch's, as they do in practice.
    `offset`: the size of the channels' means, for the kind "large-offset".
    `lean`: dy = lean * x_hat + noise, an upstream gradient that leans on the output (a loss that pulls
    y toward 0 has dy = y). Then grad_in is the small difference of large terms, and computing them in
    16 bits shows: off by 12x its tolerance or more where it was 1.1x at lean 0 (tests/test_04_06_added.py).
    """
    x = inputs.sample(rng, shape, "batch", kind, offset)
    if shift:
        x = x + shift * rng.standard_normal((shape[0],) + (1,) * (len(shape) - 1))
    x = rounded(x, dtype)
    dy = inputs.upstream(rng, shape)
    if lean:
        axes = inputs.group_axes(tuple(shape), "batch")
        x64 = x.double()
        dy = dy + lean * ((x64 - x64.mean(dim=axes, keepdim=True)) / x64.std(dim=axes, keepdim=True)).numpy()
    dy = rounded(dy, dtype)
    weight = rounded(inputs.affine(rng, shape[1])[0], dtype)
    ref = reference.batchnorm(x, weight if weighted else torch.ones(shape[1]), torch.zeros(shape[1]), EPS, dy=dy)
    kappa = tolerances.conditioning(x.double().numpy(), inputs.group_axes(tuple(shape), "batch"), EPS)
    return x, dy, (weight if weighted else None), ref, kappa


def _cut(sizes, n):
    assert sum(sizes) == n, (sizes, n)
    bounds = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _exact_sums(dy, x, mean, kappa, device):
    """The float64 sums (sum_dy, sum_dy_xmu) of dy and x (any rows of a batch), and the judge of a student's."""
    axes = inputs.group_axes(tuple(x.shape), "batch")
    across = (1, -1) + (1,) * (x.dim() - 2)
    g, centered = dy.double(), x.double() - mean.double().reshape(across)
    sums = (g.sum(dim=axes).numpy(), (g * centered).sum(dim=axes).numpy())
    terms = g[:, 0].numel()
    floors = (float(g.pow(2).mean().sqrt()) * terms**0.5, float((g * centered).pow(2).mean().sqrt()) * terms**0.5)
    out = stats_dtype(x.dtype)
    judge = partial(arrays_problems, names=("sum_dy", "sum_dy_xmu"), dtypes=(out, out),
                    rtol=tolerances.rtol(out, kappa), device=device, floors=floors)
    return sums, judge


def split_problems(returned, expected, sums, sums_judge, **judge) -> list[str]:
    """The protocol "shards" returns (grad_in from the student's added sums, those sums, grad_in from the right ones);
    where shard_sums raised, (None, what it raised, grad_in from the right sums).

    With right sums the split is judged as it ran. With wrong ones (shard_sums' own tests say how)
    each grad_in is judged as computed from the right sums, with a line saying so where it fails.
    """
    from_yours, totals, from_right = returned
    wrong_sums = [f"shard_sums raised {totals}"] if isinstance(totals, str) else sums_judge(totals, sums)
    if not wrong_sums:
        return arrays_problems(from_yours, expected, **judge)
    problems = arrays_problems(from_right, expected, **judge)
    return problems and [f"the sums of your shard_sums, added over the shards, are wrong ({wrong_sums[0]}), so "
                         "shard_grad_in was called with the right sums instead:"] + problems


def sums_trial(shape, dtype=f64, kind="normal", contiguous=True, part=(1, 4), offset=1e3):
    """shard_sums on rows part[0]:part[1] of a batch of `shape`, with the whole batch's mean."""
    shape = tuple(shape)

    def make(rng, device):
        x, dy, _, ref, kappa = _batch(rng, shape, dtype, kind, True, offset=offset)
        rows = slice(*part)
        mean = rounded(ref.mean, stats_dtype(dtype))
        expected, judge = _exact_sums(dy[rows], x[rows], mean, kappa, device)
        args = (strided(dy[rows], device, contiguous, spaced=True), strided(x[rows], device, contiguous), mean.to(device))
        return Trial(args=args, expected=expected, judge=judge, arg_names=("grad_out", "x", "mean"))

    return make


def grad_in_trial(shape, dtype=f64, kind="normal", contiguous=True, weighted=True, part=(1, 4)):
    """shard_grad_in on rows part[0]:part[1], given the whole batch's sums (computed here) and count."""
    shape = tuple(shape)

    def make(rng, device):
        x, dy, weight, ref, kappa = _batch(rng, shape, dtype, kind, weighted)
        rows = slice(*part)
        sd = stats_dtype(dtype)
        mean, invstd = rounded(ref.mean, sd), rounded(ref.rstd, sd)
        axes = inputs.group_axes(shape, "batch")
        across = (1, -1) + (1,) * (len(shape) - 2)
        g = dy.double()
        sum_dy = rounded(g.sum(dim=axes).numpy(), sd)
        sum_dy_xmu = rounded((g * (x.double() - mean.double().reshape(across))).sum(dim=axes).numpy(), sd)
        count = x.numel() // shape[1]
        judge = partial(value_problems, name="grad_in", dtype=dtype, rtol=tolerances.rtol(dtype, kappa),
                        device=device)
        args = (strided(dy[rows], device, contiguous, spaced=True), strided(x[rows], device, contiguous),
                None if weight is None else weight.to(device), mean.to(device), invstd.to(device),
                sum_dy.to(device), sum_dy_xmu.to(device), count)
        return Trial(args=args, expected=ref.dx[rows], judge=judge,
                     arg_names=("grad_out", "x", "weight", "mean", "invstd", "sum_dy", "sum_dy_xmu", "count"))

    return make


def split_trial(shape, sizes, dtype=f64, kind="normal", contiguous=True, weighted=True, shift=0.0, offset=1e3,
                lean=0.0):
    """The whole split under the protocol "shards": one grad_in per shard of `sizes` samples."""
    shape = tuple(shape)
    names = tuple(f"grad_in of shard {i} ({n} sample{'s' if n > 1 else ''})" for i, n in enumerate(sizes))

    def make(rng, device):
        x, dy, weight, ref, kappa = _batch(rng, shape, dtype, kind, weighted, shift, offset, lean)
        sd = stats_dtype(dtype)
        mean, invstd = rounded(ref.mean, sd), rounded(ref.rstd, sd)
        expected = tuple(ref.dx[rows] for rows in _cut(sizes, shape[0]))
        sums, sums_judge = _exact_sums(dy, x, mean, kappa, device)
        judge = partial(split_problems, sums=sums, sums_judge=sums_judge, names=names,
                        dtypes=(dtype,) * len(sizes), rtol=tolerances.rtol(dtype, kappa), device=device)
        args = (strided(dy, device, contiguous, spaced=True), strided(x, device, contiguous),
                None if weight is None else weight.to(device), mean.to(device), invstd.to(device), tuple(sizes),
                *(rounded(s, sd).to(device) for s in sums))
        return Trial(args=args, expected=expected, judge=judge, protocol="shards",
                     arg_names=("grad_out", "x", "weight", "mean", "invstd", "sizes", "sum_dy", "sum_dy_xmu"))

    return make


_sums = partial(Case, "shard_sums", devices=DEVICES)
_grad = partial(Case, "shard_grad_in", devices=DEVICES)
CASES = [
    _sums("nc", 1, False, "float64 (12, 5), rows 1 to 3 of the batch", sums_trial((12, 5))),
    _sums("nchw", 2, True, "float32 images (7, 3, 4, 5), rows 1 to 3", sums_trial((7, 3, 4, 5), f32)),
    _sums("one-sample", 1, True, "float64 (9, 4, 6), a shard of a single sample", sums_trial((9, 4, 6), part=(8, 9))),
    _sums("non-contiguous", 1, True, "float32 (10, 3, 8) as views (x transposed, dy's rows spaced apart)",
          sums_trial((10, 3, 8), f32, contiguous=False, part=(2, 7))),
    _sums("large-offset", 1, True, "float32 channels with means of 1e3 to 2e3", sums_trial((9, 3, 6), f32, "large-offset")),
    _sums("bfloat16", 1, True, "bfloat16 images (8, 4, 6, 7): float32 sums",
          sums_trial((8, 4, 6, 7), bf16, part=(0, 5))),
    # Channels' means near 10: a mean rounded to 16 bits, or products x - mean formed in 16 bits, are off by
    # 10x their tolerance or more (at means near 0 the latter passed on some seeds, 2x at worst)
    _sums("float16", 1, True, "float16 (40, 3, 50) with means of 10 to 20: float32 sums",
          sums_trial((40, 3, 50), f16, "large-offset", part=(3, 33), offset=10.0)),
    _grad("one-shard", 2, False, "float64 (12, 5): rows 1 to 3, the whole batch's sums given",
          grad_in_trial((12, 5))),
    _grad("split", 2, False, "float64 images (7, 3, 4, 5) cut into shards of 3, 1 and 3 samples",
          split_trial((7, 3, 4, 5), (3, 1, 3))),
    _grad("one-shard-no-weight", 1, True, "float32 (9, 4, 6), weight None",
          grad_in_trial((9, 4, 6), f32, weighted=False, part=(2, 8))),
    _grad("split-uneven", 2, True, "float64 (11, 4, 9) cut into 5, 1, 2 and 3 samples",
          split_trial((11, 4, 9), (5, 1, 2, 3))),
    _grad("split-nc", 1, True, "float64 (13, 6) cut into 1 and 12 samples", split_trial((13, 6), (1, 12))),
    _grad("split-no-weight", 1, True, "float32 images (6, 3, 5, 4) in shards of 2, 1, 3, weight None",
          split_trial((6, 3, 5, 4), (2, 1, 3), f32, weighted=False)),
    _grad("split-non-contiguous", 1, True, "float32 (8, 5, 7) as views (x transposed, dy's rows spaced apart), shards of 4, 1, 3",
          split_trial((8, 5, 7), (4, 1, 3), f32, contiguous=False)),
    _grad("split-tiny-variance", 2, True, "float64 channels whose variance is far below eps, shards of 3, 1, 5",
          split_trial((9, 4, 3, 5), (3, 1, 5), kind="tiny-variance")),
    _grad("split-large-offset", 1, True, "float32 channels with means of 1e3 to 2e3, shards of 6, 1, 3",
          split_trial((10, 3, 4, 5), (6, 1, 3), f32, "large-offset")),
    # Shards whose own means stray from the batch's. (In 16 bits, with every sample drawn alike, a shard's
    # own mean is too close to the batch's for its use to show: a tenth of the tolerance.)
    _grad("split-shifted", 2, True, "float32 images (10, 4, 6, 5) whose samples differ in mean, shards of 4, 1, 5",
          split_trial((10, 4, 6, 5), (4, 1, 5), f32, shift=2.0)),
    # dy leaning on x_hat: float32 arithmetic passes, 16-bit arithmetic does not (see _batch)
    _grad("split-bfloat16", 2, True, "bfloat16 images (12, 8, 9, 10), shards of 5, 1, 6, dy leaning on x_hat",
          split_trial((12, 8, 9, 10), (5, 1, 6), bf16, lean=8.0)),
    _grad("split-float16", 2, True, "float16 images (12, 8, 9, 10), shards of 7, 4, 1, dy leaning on x_hat",
          split_trial((12, 8, 9, 10), (7, 4, 1), f16, lean=8.0)),
]


# --- Known mistakes, in float64 (arguments are float64 CPU tensors; results NumPy arrays). -----

SUMS_SLIPS, GRAD_IN_SLIPS = ("averaged", "local-mean"), ("own-count", "local-mean", "count-times-spatial")
"""
own-count   shard_grad_in divides by its own shard's number of values, not by `count`
averaged    shard_sums returns each shard's means (divided by its own count), not its sums
local-mean  the shard's own mean used for x - mean, in shard_sums and shard_grad_in
count-times-spatial  shard_grad_in reads count as a number of samples and multiplies it by H * W
"""


def _local(slip, x, mean):
    axes = inputs.group_axes(tuple(x.shape), "batch")
    across = (1, -1) + (1,) * (x.dim() - 2)
    own = x.mean(dim=axes, keepdim=True) if slip == "local-mean" else mean.reshape(across)
    return axes, across, x - own, x[:, 0].numel()


def slipped_sums(grad_out, x, mean, slip=None):
    axes, _, centered, n = _local(slip, x, mean)
    sums = grad_out.sum(dim=axes), (grad_out * centered).sum(dim=axes)
    return tuple(s / n for s in sums) if slip == "averaged" else sums


def slipped_grad_in(grad_out, x, weight, mean, invstd, sum_dy, sum_dy_xmu, count, slip=None):
    axes, across, centered, n = _local(slip, x, mean)
    k = {"own-count": n, "count-times-spatial": count * x[0, 0].numel()}.get(slip, count)
    s = invstd.reshape(across)
    w = 1.0 if weight is None else weight.reshape(across)
    return (grad_out - sum_dy.reshape(across) / k - centered * s**2 * sum_dy_xmu.reshape(across) / k) * s * w


def slipped_split(grad_out, x, weight, mean, invstd, sizes, sum_dy, sum_dy_xmu, slip=None):
    """Each shard's grad_in with one slip, from the right sums: the split as the protocol "shards" judges it.

    (A slip's own sums, where it has wrong ones, are shard_sums' to answer for: `split_problems`.)
    """
    parts = [(grad_out[rows], x[rows]) for rows in _cut(sizes, x.shape[0])]
    count = x.numel() // x.shape[1]
    return tuple(slipped_grad_in(g, xs, weight, mean, invstd, sum_dy, sum_dy_xmu, count, slip).numpy()
                 for g, xs in parts)


def _sums_impl(slip):
    return lambda grad_out, x, mean: tuple(t.numpy() for t in slipped_sums(grad_out, x, mean, slip))


def _grad_impl(slip):
    def impl(*args):
        if isinstance(args[5], tuple):  # the protocol "shards": its sixth argument is the shards' sizes
            return slipped_split(*args, slip=slip)
        return slipped_grad_in(*args, slip=slip).numpy()

    return impl


CHAPTER = "05-thnn.html"
MESSAGES = {
    "own-count": ("each shard divided by its own number of values: the means in grad_in are the whole batch's, "
                  "so they divide by count", f"{CHAPTER}#what-crosses-between-devices"),
    "averaged": ("each shard's means where its sums belong: means of unequal shards do not add up to the "
                 "batch's, sums do", f"{CHAPTER}#what-crosses-between-devices"),
    "count-times-spatial": ("count multiplied by the values per sample (H * W): count is already the whole "
                            "batch's number of values per channel, N * H * W",
                            f"{CHAPTER}#what-crosses-between-devices"),
    "local-mean": ("x - mean taken with the shard's own mean: batch norm's statistics are the whole batch's, "
                   "and every shard must center on the same mean", f"{CHAPTER}#data-parallel"),
}
MISTAKES = [Mistake("shard_sums", slip, *MESSAGES[slip], _sums_impl(slip)) for slip in SUMS_SLIPS] + \
    [Mistake("shard_grad_in", slip, *MESSAGES[slip], _grad_impl(slip)) for slip in GRAD_IN_SLIPS]
