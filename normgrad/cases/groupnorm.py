"""GroupNorm, forward (assignment 01) and backward (assignment 02), on x of shape (N, C, H, W).

- `groupnorm_forward(x, gamma, beta, groups, eps=1e-5) -> (y, cache)`: each sample's C channels
  form `groups` consecutive groups of C // groups channels, each normalized over its channels and
  all of H, W; gamma, beta of shape (C,); cache = {x, mean, rstd, x_hat, gamma, eps, groups}, mean
  and rstd of shape (N, groups);
- `groupnorm_backward(dy, cache) -> (dx, dgamma, dbeta)`, with the cache of the forward pass (built
  here from the oracle, in x's dtype).

Judged against torch's `native_group_norm` and float64 autograd (`reference.groupnorm`). A group
spans several channels and gamma changes inside it: that is where GroupNorm's backward departs from
both LayerNorm's (one gamma per feature, but the group is the whole sample) and BatchNorm's (the
group is one channel, with one gamma). The inputs give every channel of a group its own offset, so
that statistics taken per channel are far from the group's.

Tolerances are exercise 01's and 02's: the dtype's rtol times the conditioning of the groups, with
floors at the natural scales (1 for y and x_hat, the direct path rstd * dy * gamma for dx, the
channel sums of |dy| for dgamma and dbeta).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .. import inputs, reference, tolerances
from . import Case, Mistake, Trial
from .judging import DIRECT_PATH, arrays_problems, mean_floor
from .second_edition import cache_problems

FORWARD_PAGE = "01-forward.html"
CHAIN_RULE = "02-chain-rule.html"


def sample(rng: np.random.Generator, shape, groups: int, kind: str = "normal", offset: float = 1e3) -> np.ndarray:
    """x of shape (N, C, H, W) whose groups have the statistics `kind` asks for (see `inputs.KINDS`),
    and whose channels inside a group are shifted from each other by about the group's spread."""
    n, c, *rest = shape
    per_group = (c // groups) * int(np.prod(rest, dtype=int))
    x = inputs.sample(rng, (n, groups, per_group), "layer", kind, offset)
    x = x.reshape(n, groups, c // groups, -1)
    x = x + x.std(axis=(2, 3), keepdims=True) * rng.standard_normal((n, groups, c // groups, 1))
    return x.reshape(shape)


def grouped(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, C, *) viewed as (N, groups, C // groups, rest): a group is one [n, g] slice."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, -1)


def tiled(per_group: np.ndarray, channels: int) -> np.ndarray:
    """N x groups statistics spread over the channels with np.tile, as (N, C, 1): channel k gets group
    k % groups's, where np.repeat gives it group k // (C // groups)'s, the right one."""
    n = per_group.shape[0]
    per_group = per_group.reshape(n, -1)
    return np.tile(per_group, (1, channels // per_group.shape[1]))[:, :, None]


def per_group(a: np.ndarray, groups: int, slip: str | None) -> np.ndarray:
    """A per-channel parameter (C,) as an answer that takes it for one per group spreads it over the channels:
    gamma[g] (the group's index read as a channel's), the group's first channel's, or the mean of the group's;
    as it is for any other slip."""
    cg = a.shape[0] // groups
    one = {"gamma-per-group": lambda: a[:groups], "gamma-of-first-channel": lambda: a[::cg],
           "gamma-averaged-per-group": lambda: a.reshape(groups, cg).mean(axis=1)}.get(slip)
    return a if one is None else np.repeat(one(), cg)


def _conditioning(x, groups: int, eps: float) -> float:
    return tolerances.conditioning(grouped(np.asarray(x, dtype=np.float64), groups), (2, 3), eps)


def forward_trial(shape, groups: int, kind: str = "normal", dtype=np.float64, eps: float | None = None,
                  offset: float = 1e3):
    def make(rng: np.random.Generator, device: str) -> Trial:
        x = sample(rng, shape, groups, kind, offset).astype(dtype)
        gamma, beta = (a.astype(dtype) for a in inputs.affine(rng, shape[1]))
        used_eps = 1e-5 if eps is None else eps
        ref = reference.groupnorm(x, gamma, beta, groups, used_eps)
        expected = (ref.y, {"x": x.astype(np.float64), "mean": ref.mean, "rstd": ref.rstd, "x_hat": ref.x_hat,
                            "gamma": gamma.astype(np.float64), "eps": used_eps, "groups": groups})
        kappa = _conditioning(x, groups, used_eps)
        judge = partial(cache_problems, dtype=np.dtype(dtype), rtol=tolerances.rtol(dtype, kappa),
                        floors={"y": 1.0, "mean": mean_floor(x), "rstd": 0.0, "x_hat": 1.0})
        return Trial(args=(x, gamma, beta, groups), kwargs={} if eps is None else {"eps": eps}, expected=expected,
                     judge=judge, arg_names=("x", "gamma", "beta", "groups"))

    return make


def forward_cache(x, gamma, groups: int, eps: float = 1e-5) -> dict:
    """The cache of `groupnorm_forward` from the oracle, in x's dtype (what the backward receives)."""
    ref = reference.groupnorm(x, gamma, np.zeros_like(gamma), groups, eps)
    return {"x": x.copy(), "mean": ref.mean.astype(x.dtype), "rstd": ref.rstd.astype(x.dtype),
            "x_hat": ref.x_hat.astype(x.dtype), "gamma": gamma.copy(), "eps": float(eps), "groups": groups}


def backward_trial(shape, groups: int, kind: str = "normal", dtype=np.float64, eps: float = 1e-5,
                   offset: float = 1e3):
    def make(rng: np.random.Generator, device: str) -> Trial:
        x = sample(rng, shape, groups, kind, offset).astype(dtype)
        gamma = inputs.affine(rng, shape[1])[0].astype(dtype)
        dy = inputs.upstream(rng, shape).astype(dtype)
        cache = forward_cache(x, gamma, groups, eps)
        ref = reference.groupnorm(x, gamma, np.zeros_like(gamma), groups, eps, dy=dy)
        rstd = np.repeat(cache["rstd"].astype(np.float64), shape[1] // groups, axis=1).reshape(shape[:2] + (1, 1))
        direct = float(np.max(np.abs(rstd * dy * gamma[:, None, None]), initial=0.0))
        channel_sum = float(np.max(np.abs(dy.astype(np.float64)).sum(axis=(0, 2, 3)), initial=0.0))
        judge = partial(arrays_problems, names=("dx", "dgamma", "dbeta"), dtypes=(np.dtype(dtype),) * 3,
                        rtol=tolerances.rtol(dtype, _conditioning(x, groups, eps)),
                        floors=(direct, channel_sum, channel_sum),
                        floor_names=(DIRECT_PATH,) + ("the largest sum of |dy| over a channel's values",) * 2)
        return Trial(args=(dy, cache), expected=(ref.dx, ref.dgamma, ref.dbeta), judge=judge, arg_names=("dy", "cache"))

    return make


def _cases(function: str, trial, points: dict[str, float]) -> list[Case]:
    c = partial(Case, function)
    p = points.__getitem__
    return [
        c("small", p("small"), False, "a 2 x 6 x 3 x 5 input in 3 groups of 2 channels", trial((2, 6, 3, 5), 3)),
        c("small-variance", p("small-variance"), False, "a 2 x 4 x 3 x 3 input in 2 groups, variance below eps",
          trial((2, 4, 3, 3), 2, "tiny-variance")),
        c("odd-shape", p("odd-shape"), True, "a 3 x 6 x 5 x 7 input in 2 groups of 3 channels", trial((3, 6, 5, 7), 2)),
        c("groups-of-one", p("groups-of-one"), True, "5 groups of one channel each (InstanceNorm)",
          trial((2, 5, 3, 4), 5)),
        c("groups-of-two", p("groups-of-two"), True, "3 groups of two channels each", trial((3, 6, 4, 3), 3)),
        c("one-group", p("one-group"), True, "a single group of all 6 channels (LayerNorm over C, H, W)",
          trial((2, 6, 3, 3), 1)),
        c("one-sample", p("one-sample"), True, "a single sample (N = 1)", trial((1, 6, 5, 3), 2)),
        c("one-pixel", p("one-pixel"), True, "H = W = 1: a group is its channels alone", trial((5, 6, 1, 1), 3)),
        c("tiny-variance", p("tiny-variance"), True, "groups whose variance is far below eps",
          trial((3, 6, 4, 5), 3, "tiny-variance")),
        c("large-offset", p("large-offset"), True, "groups with a mean of 1e3 to 2e3 and unit spread",
          trial((3, 6, 4, 5), 2, "large-offset")),
        c("constant", p("constant"), True, "groups whose values are all equal (zero variance)",
          trial((2, 6, 3, 3), 3, "constant")),
        c("eps", p("eps"), True, "eps = 1e-2", trial((2, 6, 3, 3), 2, "tiny-variance", eps=1e-2)),
        c("float32", p("float32"), True, "float32 inputs: results in float32", trial((4, 6, 5, 3), 2, dtype=np.float32)),
    ]


NAMES = ("small", "small-variance", "odd-shape", "groups-of-one", "groups-of-two", "one-group", "one-sample",
         "one-pixel", "tiny-variance", "large-offset", "constant", "eps", "float32")
FORWARD_POINTS = {**dict.fromkeys(NAMES, 1), "tiny-variance": 2, "large-offset": 2, "float32": 2}  # 16
BACKWARD_POINTS = {**dict.fromkeys(NAMES, 2), "tiny-variance": 3}  # 27
CASES = _cases("groupnorm_forward", forward_trial, FORWARD_POINTS) + \
    _cases("groupnorm_backward", backward_trial, BACKWARD_POINTS)


# --- Known mistakes, each written as the slip it is, in float64. -------------------------------

def _forward(x, gamma, beta, groups, eps=1e-5, slip: str | None = None):
    n, c = x.shape[:2]
    if slip == "interleaved-groups":  # channel k in group k % groups: (N, C//G, G, ...) read as (N, G, C//G, ...)
        xg = x.reshape(n, c // groups, groups, -1).transpose(0, 2, 1, 3)
        over = (2, 3)
    else:
        xg = grouped(x, groups)
        over = {"channel-statistics": (3,), "sample-statistics": (1, 2, 3)}.get(slip, (2, 3))
    mean = xg.mean(axis=over, keepdims=True)
    var = xg.var(axis=over, keepdims=True, ddof=1 if slip == "unbiased-variance" else 0)
    rstd = 1.0 / (np.sqrt(var) + eps) if slip == "eps-outside-sqrt" else 1.0 / np.sqrt(var + eps)
    x_hat = (xg - mean) * rstd
    if slip == "tiled-statistics":  # channel k given group k % groups's statistics (np.tile for np.repeat)
        x_hat = (x.reshape(n, c, -1) - tiled(mean, c)) * tiled(rstd, c)
    if slip == "interleaved-groups":
        x_hat = x_hat.transpose(0, 2, 1, 3)
    x_hat = x_hat.reshape(x.shape)
    g, b = per_group(gamma, groups, slip), per_group(beta, groups, slip)
    per_channel = (c,) + (1,) * (x.ndim - 2)
    y = g.reshape(per_channel) * x_hat + b.reshape(per_channel)
    mean, rstd = np.broadcast_to(mean, xg.shape), np.broadcast_to(rstd, xg.shape)
    cache = {"x": x, "mean": mean[:, :, 0, 0].copy(), "rstd": rstd[:, :, 0, 0].copy(), "x_hat": x_hat,
             "gamma": gamma, "eps": eps, "groups": groups}
    if slip in ("channel-statistics", "sample-statistics", "interleaved-groups"):
        cache["mean"] = cache["rstd"] = None  # not one per group: whatever shape they take, y tells the slip
    return y, cache


FORWARD_SLIPS = {  # name -> (what the answer matches, the anchor it links to)
    "channel-statistics": (
        "statistics of each channel alone (over H, W): that is InstanceNorm; a group spans C // groups channels",
        f"{FORWARD_PAGE}#groupnorm"),
    "sample-statistics": (
        "statistics over all of a sample's channels (one group): that is LayerNorm over (C, H, W)",
        f"{FORWARD_PAGE}#groupnorm"),
    "interleaved-groups": (
        "groups of every groups-th channel (channel k in group k % groups); a group is C // groups consecutive "
        "channels", f"{FORWARD_PAGE}#groupnorm"),
    "tiled-statistics": (
        "each group's mean and rstd spread over the channels with np.tile, so channel k got group k % groups's; "
        "a group is C // groups consecutive channels, so channel k belongs to group k // (C // groups): "
        "np.repeat(stat, C // groups, axis=1)", f"{FORWARD_PAGE}#groupnorm"),
    "gamma-per-group": (
        "gamma and beta indexed by group (gamma[g] for every channel of group g); there is one per channel",
        f"{FORWARD_PAGE}#groupnorm-gamma"),
    "gamma-of-first-channel": (
        "one gamma and one beta per group, those of its first channel (gamma[g * (C // groups)] for every channel of "
        "group g); there is one per channel, and they change from channel to channel inside a group",
        f"{FORWARD_PAGE}#groupnorm-gamma"),
    "gamma-averaged-per-group": (
        "one gamma and one beta per group, the mean of its channels'; there is one per channel, and they change from "
        "channel to channel inside a group", f"{FORWARD_PAGE}#groupnorm-gamma"),
    "unbiased-variance": (
        "the unbiased variance (dividing by n - 1); normalization layers use the biased one",
        f"{FORWARD_PAGE}#the-variance-is-the-biased-one"),
    "eps-outside-sqrt": ("1 / (sqrt(var) + eps): eps belongs inside the square root", f"{FORWARD_PAGE}#where-eps-sits"),
}


def _backward(dy, cache, slip: str | None = None):
    """dL/dx = rstd (g - mean(g) - x_hat mean(g x_hat)) over each group, g = dy * gamma, with a slip."""
    x, gamma, groups = cache["x"], cache["gamma"], cache["groups"]
    n, c = x.shape[:2]
    rstd = cache["rstd"][:, :, None, None]
    xg = grouped(x, groups)
    x_hat = (xg - cache["mean"][:, :, None, None]) * rstd
    if slip == "tiled-rstd":  # x_hat as cached, rstd spread over the channels with np.tile for np.repeat
        rstd = grouped(tiled(cache["rstd"], c), groups)
    scale = np.ones_like(gamma) if slip == "gamma-outside-sums" else per_group(gamma, groups, slip)
    g = grouped(dy * scale.reshape((c,) + (1,) * (x.ndim - 2)), groups)
    over = {"one-channel-sums": (3,), "whole-sample-sums": (1, 2, 3), "batch-sums": (0, 2, 3)}.get(slip, (2, 3))
    via_mean = 0.0 if slip == "no-mean-path" else -g.mean(axis=over, keepdims=True)
    via_var = 0.0 if slip == "no-variance-path" else -x_hat * (g * x_hat).mean(axis=over, keepdims=True)
    dx = rstd * (g + via_mean + via_var)
    if slip == "gamma-outside-sums":  # gamma taken out of the sums, as BatchNorm's formula can
        dx = grouped(gamma.reshape((c,) + (1,) * (x.ndim - 2)) * dx.reshape(x.shape), groups)
    x_hat = x_hat.reshape(x.shape)
    if slip == "parameter-sums-per-group":  # one dgamma and one dbeta per group, shape (groups,)
        return dx.reshape(x.shape), grouped(dy * x_hat, groups).sum(axis=(0, 2, 3)), \
            grouped(dy, groups).sum(axis=(0, 2, 3))
    axes = tuple(a for a in range(x.ndim) if a != 1)
    return dx.reshape(x.shape), (dy * x_hat).sum(axis=axes), dy.sum(axis=axes)


BACKWARD_SLIPS = {
    "one-channel-sums": (
        "dx with each group's sums over one channel only (over H, W): a group's mean and variance depend on all "
        "its C // groups channels", f"{FORWARD_PAGE}#groupnorm"),
    "whole-sample-sums": (
        "dx with the sums over all of a sample's channels, not over its group", f"{FORWARD_PAGE}#groupnorm"),
    "batch-sums": (
        "dx with each group's sums taken over the whole batch as well: a GroupNorm group is one sample's, and its "
        "statistics do not depend on the other samples", f"{FORWARD_PAGE}#groupnorm"),
    "gamma-outside-sums": (
        "gamma taken out of the group's sums, rstd * gamma * (dy - mean(dy) - x_hat mean(dy x_hat)): BatchNorm's "
        "formula can do that, its group has one gamma; inside a GroupNorm group gamma changes from channel to "
        "channel, so g = dy * gamma belongs inside the sums", f"{CHAIN_RULE}#three-paths"),
    "tiled-rstd": (
        "rstd spread over the channels with np.tile, so channel k got group k % groups's; a group is C // groups "
        "consecutive channels, so channel k belongs to group k // (C // groups): np.repeat(rstd, C // groups, axis=1)",
        f"{FORWARD_PAGE}#groupnorm"),
    "gamma-per-group": (
        "gamma indexed by group (gamma[g] for every channel of group g); there is one per channel",
        f"{FORWARD_PAGE}#groupnorm-gamma"),
    "gamma-of-first-channel": (
        "one gamma per group, its first channel's (gamma[g * (C // groups)] for every channel of group g); there is "
        "one per channel, and it changes from channel to channel inside a group", f"{FORWARD_PAGE}#groupnorm-gamma"),
    "gamma-averaged-per-group": (
        "one gamma per group, the mean of its channels'; there is one per channel, and it changes from channel to "
        "channel inside a group", f"{FORWARD_PAGE}#groupnorm-gamma"),
    "parameter-sums-per-group": (
        "dgamma and dbeta summed over each group, one per group; gamma and beta have one entry per channel, so "
        "each of their gradients sums over its own channel's values, across N, H and W", f"{FORWARD_PAGE}#groupnorm-gamma"),
    "no-mean-path": ("dL/dx without the path through the group's mean", f"{CHAIN_RULE}#slip-no-mean-path"),
    "no-variance-path": ("dL/dx without the path through the group's variance", f"{CHAIN_RULE}#slip-no-variance-path"),
}

MISTAKES = [
    *(Mistake("groupnorm_forward", name, message, section,
              lambda x, gamma, beta, groups, eps=1e-5, _slip=name: _forward(x, gamma, beta, groups, eps, _slip))
      for name, (message, section) in FORWARD_SLIPS.items()),
    *(Mistake("groupnorm_backward", name, message, section, lambda dy, cache, _slip=name: _backward(dy, cache, _slip))
      for name, (message, section) in BACKWARD_SLIPS.items()),
]
