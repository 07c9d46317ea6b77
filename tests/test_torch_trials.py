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


# --- statistics_trial: THNN's names, the train flag, running statistics (exercise 05) --------

from normgrad.cases.torch_trials import THNN_NAMES, input_dtype, slipped_backward, statistics_trial  # noqa: E402


def thnn_by_hand(grad_out, x, weight, mean, invstd, train=True):
    """THNN's formulas with float32 sums for 16-bit inputs, for (N, C, *)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    go, q = grad_out.to(acc), x.to(acc) - mean.to(acc).reshape(shape)
    s, w = invstd.to(acc).reshape(shape), weight.to(acc).reshape(shape)
    n = x.numel() // x.shape[1]
    total, dotp = go.sum(dims, keepdim=True), (go * q).sum(dims, keepdim=True)
    grad_in = (go - total / n - q * dotp * s * s / n) * s * w if train else go * s * w
    return grad_in.to(x.dtype), (dotp * s).flatten().to(weight.dtype), total.flatten().to(weight.dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(40, 3), (6, 5, 3, 7)])
def test_thnn_trials_accept_correct_code_in_both_modes(dtype, train, shape):
    make = statistics_trial("batch", shape, dtype, contiguous=False, running=not train, names=THNN_NAMES,
                            kwargs={"train": train})
    trial = make(np.random.default_rng(11), "cpu")
    assert trial.arg_names == THNN_NAMES[0] and trial.kwargs == {"train": train}
    assert trial.judge(thnn_by_hand(*trial.args, **trial.kwargs), trial.expected) == []


def test_evaluation_trials_refuse_the_training_formula_and_name_the_results_thnn_s_way():
    make = statistics_trial("batch", (8, 4, 3), torch.float64, running=True, names=THNN_NAMES,
                            extra_args=(False,), extra_names=("train",))
    trial = make(np.random.default_rng(2), "cpu")
    assert trial.args[5] is False and trial.arg_names[5] == "train"
    assert trial.judge(thnn_by_hand(*trial.args), trial.expected) == []
    problems = trial.judge(thnn_by_hand(*trial.args[:5], train=True), trial.expected)
    assert problems and problems[0].startswith("grad_in is wrong")


def test_running_statistics_differ_from_the_batch_s():
    trial = statistics_trial("batch", (30, 4), torch.float64, running=True)(np.random.default_rng(4), "cpu")
    x, mean, rstd = trial.args[1], trial.args[3], trial.args[4]
    assert not torch.allclose(mean, x.mean(0), rtol=1e-3)
    assert not torch.allclose(rstd, 1 / torch.sqrt(x.var(0, unbiased=False) + 1e-5), rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_the_dtype_under_test_is_recovered_from_float64_copies(dtype):
    trial = backward_trial("layer", (5, 40), dtype)(np.random.default_rng(9), "cpu")
    assert input_dtype(trial.args[1].double(), trial.args[0].double()) == dtype


def test_slipped_backward_without_a_slip_is_the_oracle():
    for norm, shape in [("layer", (6, 11)), ("batch", (9, 4)), ("batch", (3, 4, 5, 2))]:
        trial = backward_trial(norm, shape, torch.float64)(np.random.default_rng(8), "cpu")
        assert trial.judge(tuple(map(torch.from_numpy, slipped_backward(*trial.args, norm))), trial.expected) == []


def test_only_the_count_slip_hides_on_a_square_batch_norm_input():
    """Chapter 4's batch-axes section: N == C makes x.shape[1] the right count, but sums over dim 1
    stay wrong at any shape."""
    trial = backward_trial("batch", (8, 8), torch.float64)(np.random.default_rng(8), "cpu")
    with pytest.raises(ValueError, match="right by accident"):
        slipped_backward(*trial.args, "batch", "count-from-wrong-axis")
    summed_across = tuple(map(torch.from_numpy, slipped_backward(*trial.args, "batch", "reduced-over-dim-1")))
    assert trial.judge(summed_across, trial.expected) != []


def torch_running_total(t: torch.Tensor, dtype, terms_rounded: bool, truncate: bool, groups: int) -> torch.Tensor:
    """A running total over t's rows by its definition, in torch, one term at a time for each of `groups` programs
    (rows g, g + G, ...): the total rounded to `dtype` after each addition (by dropping bits, `truncate`d), the
    programs' totals then added exactly."""
    totals = []
    for g in range(min(groups, t.shape[0])):
        total = torch.zeros(t.shape[1:], dtype=dtype if terms_rounded else torch.float64)
        for term in t[g::groups]:
            if terms_rounded:  # 16-bit tensors added in torch's way
                total = total + term.to(dtype)
            else:
                total = total + term
                total = (total.float().view(torch.int32) & ~0xFFFF).view(torch.float32).double() if truncate \
                    else total.to(dtype).double()
        totals.append(total.double())
    return torch.stack(totals).sum(dim=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_running_totals_round_as_torch_does_for_every_number_of_programs_in_one_pass(dtype):
    """The diagnosis's running totals (a NumPy loop on float32 bits, every G in one pass) equal torch's, term by
    term: rounded to nearest through float32 with ties to even, or truncated; totals that stall included."""
    from normgrad.cases.torch_trials import running_total, running_totals

    rng = np.random.default_rng(3)
    t = torch.from_numpy(rng.standard_normal((600, 5)) + np.array([2.0, 0.0, -40.0, 1e-3, 0.5]))
    t[0, 0] = 1 + 2**-11 + 2**-40  # rounds to 1 through float32 (a tie there), up directly
    t[1, 1] = 2.0**-30
    programs = (1, 3, 32, 264, 1024)
    for terms_rounded, truncate in [(True, False), (False, False), (False, True)]:
        if truncate and dtype != torch.bfloat16:
            continue
        joint = running_totals(t, (0,), dtype, programs, terms_rounded, truncate)
        for g in programs:
            want = torch_running_total(t, dtype, terms_rounded, truncate, g)
            assert torch.equal(joint[g][0], want), (terms_rounded, truncate, g)
            assert torch.equal(running_total(t, (0,), dtype, terms_rounded, truncate, g)[0], want)
    one = running_totals(t, (0,), dtype, (1,), terms_rounded=False)[1][0, 0]
    # near 1200 a 16-bit total of terms near 2 drifts (float16: 2.3 off) or stalls (bfloat16: 198 off)
    assert abs(one - t[:, 0].sum()) > 1.0


def test_constant_groups_are_judged_against_the_natural_scale_of_dgamma():
    trial = backward_trial("batch", (6, 3), torch.float64, "constant")(np.random.default_rng(0), "cpu")
    dx, dgamma, dbeta = batch(*trial.args)
    assert trial.judge((dx, dgamma + 1e-15, dbeta), trial.expected) == []  # rounding noise of x_hat = 0
    assert trial.judge((dx, dgamma + 1e-3, dbeta), trial.expected) != []


# --- margins against the 16-bit tolerance: correct code well under, each named mistake well over ---

from normgrad.cases import load  # noqa: E402
from normgrad.cases.torch_trials import computed_backward, tolerance_ratios  # noqa: E402

# slip -> the 16-bit cases of exercise 04 built to catch it (means near 10 with dy shifted; tall columns)
CATCHES = {
    "half-statistics": ("bfloat16", "float16", "float16-visible"),
    "half-arithmetic": ("bfloat16", "float16", "float16-visible"),
    "half-sums": ("bfloat16-long-sums", "float16-long-sums", "bfloat16-tall", "float16-tall"),
    "through-bfloat16": ("float16", "float16-visible", "float16-tall"),
}
SIXTEEN_BIT = sorted({name for names in CATCHES.values() for name in names})


def margins(function: str, case_name: str, seeds=(0, 1)):
    """{slip: worst ratio over the seeds} for correct code (None) and for each slip meant for this case."""
    norm = "layer" if function == "layernorm_backward" else "batch"
    case = next(c for c in load("04-code-mapping").cases if c.function == function and c.name == case_name)
    found = {}
    for seed in seeds:
        trial = case.make(np.random.default_rng(seed), "cpu")
        for slip in [None] + [s for s, names in CATCHES.items() if case_name in names]:
            if slip == "through-bfloat16" and trial.args[1].dtype != torch.float16:
                continue
            worst = max(tolerance_ratios(trial, computed_backward(*trial.args, norm, slip)))
            found[slip] = max(found.get(slip, 0.0), worst) if slip is None else min(found.get(slip, np.inf), worst)
    return found


@pytest.mark.parametrize("function", ["layernorm_backward", "batchnorm_backward"])
@pytest.mark.parametrize("case_name", SIXTEEN_BIT)
def test_sixteen_bit_margins(function, case_name):
    found = margins(function, case_name)
    print(function, case_name, {k or "correct": round(v, 2) for k, v in found.items()})
    assert found.pop(None) < 1.0  # one rounding of each output, plus float32's: under the tolerance
    assert found and min(found.values()) > 3.0, found  # each mistake the case is built for: far over it
