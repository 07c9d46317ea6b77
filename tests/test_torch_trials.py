"""The shared PyTorch trials: correct code passes in every dtype and layout; slips do not."""

import numpy as np
import pytest
import torch

from normgrad.cases.torch_trials import backward_trial, stats_dtype


def by_hand(dy, x, gamma, mean, rstd, norm, half_sums=False):
    """dx, dgamma, dbeta as correct code computes them: float32 sums for 16-bit inputs.

    Each group is made a row of a 2-D view. With half_sums, every sum over a group
    is instead a running total kept in x's dtype, as a naive kernel would keep it.
    """
    acc = x.dtype if half_sums or x.dtype == torch.float64 else torch.float32
    if norm == "layer":
        rows, unrows, scale = (lambda t: t), (lambda t: t), gamma[None, :]
    else:  # (N, C, *): channel c's N * prod(*) values become row c
        rows = lambda t: t.transpose(0, 1).reshape(t.shape[1], -1)  # noqa: E731
        unrows = lambda t: t.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)  # noqa: E731
        scale = gamma[:, None]

    def row_sums(t):
        if not half_sums:
            return t.sum(dim=1, keepdim=True)
        running = torch.zeros_like(t[:, 0])
        for column in t.t():  # one addition at a time, each rounded to the dtype
            running = running + column
        return running[:, None]

    X, DY = rows(x).to(acc), rows(dy).to(acc)
    x_hat = (X - mean.to(acc)[:, None]) * rstd.to(acc)[:, None]
    g = DY * scale.to(acc)
    m = X.shape[1]
    dx = rstd.to(acc)[:, None] * (g - row_sums(g) / m - x_hat * row_sums(g * x_hat) / m)
    param_axis = 0 if norm == "layer" else 1
    return (unrows(dx).to(x.dtype), (DY * x_hat).sum(param_axis).to(gamma.dtype),
            DY.sum(param_axis).to(gamma.dtype))


def layer(*args, **kw):
    return by_hand(*args, norm="layer", **kw)


def batch(*args, **kw):
    return by_hand(*args, norm="batch", **kw)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("norm,shape,impl", [("layer", (37, 300), layer), ("batch", (6, 5, 3, 7), batch),
                                             ("batch", (50, 9), batch)])
def test_correct_code_passes(dtype, contiguous, norm, shape, impl):
    trial = backward_trial(norm, shape, dtype, contiguous=contiguous)(np.random.default_rng(7), "cpu")
    x = trial.args[1]
    assert x.is_contiguous() == contiguous
    assert trial.args[3].dtype == trial.args[4].dtype == stats_dtype(dtype)
    assert trial.judge(impl(*trial.args), trial.expected) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["large-offset", "tiny-variance"])
def test_ill_conditioned_inputs_stay_within_tolerance(dtype, kind):
    trial = backward_trial("layer", (19, 130), dtype, kind=kind, offset=100.0)(np.random.default_rng(3), "cpu")
    assert trial.judge(layer(*trial.args), trial.expected) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sums_carried_in_half_precision_are_caught(dtype):
    trial = backward_trial("layer", (4, 5000), dtype, dy_offset=2.0)(np.random.default_rng(5), "cpu")
    assert trial.judge(layer(*trial.args), trial.expected) == []
    problems = trial.judge(layer(*trial.args, half_sums=True), trial.expected)
    assert any(p.startswith("dx is wrong") for p in problems)


def test_wrong_dtype_is_named():
    trial = backward_trial("layer", (5, 7), torch.float32)(np.random.default_rng(1), "cpu")
    dx, dgamma, dbeta = layer(*trial.args)
    assert trial.judge((dx.double(), dgamma, dbeta), trial.expected) == \
        ["dx should have dtype torch.float32, got torch.float64"]
