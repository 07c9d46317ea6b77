"""Exercise 05: the hidden tests reject each slip chapter 5 names and name it, and accept correct
alternatives.

Each slip, breach and variant is judged in this process against every case of batchnorm_backward_thnn
(hidden ones too) with the grader's own `evaluate` and `diagnose`: the course's mutants are trusted code
and need no sandbox. The sandboxed end-to-end path, notebook to grade, is tested in tests/test_exercises.py.
"""

import numpy as np
import pytest

from helpers import case_names, failures, judged, report
from normgrad.cases import load

ASSIGNMENT = "05-thnn"
FUNCTION = "batchnorm_backward_thnn"

TEMPLATE = '''import torch


def batchnorm_backward_thnn(grad_out, x, weight, mean, invstd, train=True):
    work = {work}
    dims = {dims}
    shape = {shape}
    go, v = grad_out.to(work), x.to(work)
    mu, s, w = mean.to({stats}).reshape(shape), invstd.to({stats}).reshape(shape), {w}
    s = {s}
    n = 1
    for d in dims:
        n *= v.shape[d]
    n = {n}

    def total(t):
        {total}

    q = v - mu
    sum_ = total(go)
    dotp = total(go * q)
    if {train}:
        grad_in = {grad_in}
    else:
        grad_in = go * s * w
    grad_weight = {grad_weight}
    return {ret}
'''

CORRECT = {
    "work": "torch.float64 if x.dtype == torch.float64 else torch.float32",
    "dims": "[d for d in range(x.dim()) if d != 1]",
    "shape": "[1, -1] + [1] * (x.dim() - 2)",
    "stats": "work",
    "s": "s",
    "n": "n",
    "w": "weight.to(work).reshape(shape)",
    "total": "return t.sum(dim=dims, keepdim=True)",
    "train": "train",
    "grad_in": "(go - sum_ / n - q * dotp * s * s / n) * s * w",
    "grad_weight": "dotp * s",
    "ret": "grad_in.to(x.dtype), grad_weight.flatten().to(weight.dtype), sum_.flatten().to(weight.dtype)",
}

HALF_SUMS = ("acc = torch.zeros_like(t.sum(dim=dims, keepdim=True), dtype=x.dtype)\n"
             "        flat = t.movedim(1, -1).reshape(-1, t.shape[1])  # every term of a channel, in order\n"
             "        for row in flat:\n"
             "            acc = acc + row.to(x.dtype).reshape(acc.shape)\n"
             "        return acc.to(work)")

# mistake name (normgrad.cases.thnn.MISTAKES) -> the knobs that make it
SLIPS = {
    "eval-with-training-formula": {"train": "True"},
    "grad-weight-without-invstd": {"grad_weight": "dotp"},
    "weight-forgotten": {"w": "1.0"},
    "first-dim-only": {"dims": "[0]", "ret": "grad_in.to(x.dtype), grad_weight.squeeze(0).to(weight.dtype), "
                                             "sum_.squeeze(0).to(weight.dtype)"},
    "var-without-eps": {"grad_in": "(go - sum_ / n - q * dotp / n / (1 / s**2 - 1e-5)) * s * w"},
    "no-mean-path": {"grad_in": "(go - q * dotp * s * s / n) * s * w"},
    "half-statistics": {"work": "x.dtype", "stats": "x.dtype"},
    "half-sums": {"total": HALF_SUMS},
    # torch.var's default is unbiased: invstd recomputed so in training mode, in place of the one passed in
    "bessel": {"s": "1 / torch.sqrt(v.var(dim=dims, keepdim=True) + 1e-5) if train else s"},
    "count-from-batch-axis": {"n": "v.shape[0]"},
}

# Wrong in ways the contract checks directly: the message says it.
BREACHES = {
    # written for (N, C): mean and invstd as (1, C) rows, sums over dim 0; (N, C, *) does not broadcast
    "two-dims-only": ({"dims": "[0]", "shape": "[1, -1]"}, "raised an exception"),
    "float64-on-cpu": ({"ret": "grad_in.cpu().double(), grad_weight.flatten().cpu().double(), "
                               "sum_.flatten().cpu().double()"},
                       "should have dtype torch.float32, got torch.float64"),
    "uses-autograd": ({"grad_in": "torch.autograd.grad(torch.zeros(()), [])"}, "autograd is switched off"),
}

# Correct, written otherwise: each must score full marks.
VARIANTS = {
    "float64-and-back": {"work": "torch.float64"},
    # the staged form: dvar, then dmean, then dx, with gamma folded into dL/dx_hat
    "staged": {"grad_in": "(lambda g: (lambda dvar: (lambda dmean: g * s + dvar * 2 * q / n + dmean / n)("
                          "total(-g * s) + dvar * total(-2 * q) / n))(total(g * q * -0.5 * s**3)))(go * w)"},
}

# THNN's own structure: a loop over feature planes, each plane's sum and dotp computed once.
PER_PLANE = '''import torch


def batchnorm_backward_thnn(grad_out, x, weight, mean, invstd, train=True):
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad_in = torch.empty_like(x)
    grad_weight = torch.empty_like(weight)
    grad_bias = torch.empty_like(weight)
    for f in range(x.shape[1]):
        go, q = grad_out.select(1, f).to(work), x.select(1, f).to(work) - mean[f].to(work)
        s, w = invstd[f].to(work), weight[f].to(work)
        total, dotp = go.sum(), (go * q).sum()
        if train:
            k = dotp * s * s / go.numel()
            grad_in.select(1, f).copy_((go - total / go.numel() - q * k) * s * w)
        else:
            grad_in.select(1, f).copy_(go * s * w)
        grad_weight[f] = dotp * s
        grad_bias[f] = total
    return grad_in, grad_weight, grad_bias
'''

ITEMS = ([(f"slip:{k}", TEMPLATE.format(**{**CORRECT, **v}), k) for k, v in SLIPS.items()] +
         [(f"breach:{k}", TEMPLATE.format(**{**CORRECT, **v[0]}), v[1]) for k, v in BREACHES.items()] +
         [(f"variant:{k}", TEMPLATE.format(**{**CORRECT, **v}), None) for k, v in VARIANTS.items()] +
         [("variant:per-plane", PER_PLANE, None)])


@pytest.fixture(scope="module")
def results():
    """label -> {case id: its problems}: every item judged once."""
    return {label: judged(ASSIGNMENT, FUNCTION, source) for label, source, _ in ITEMS}


def failed_cases(results, label: str) -> tuple[set[str], str]:
    """The names of the cases an item fails ("eval", whatever the device), and a report of them."""
    return case_names(failures(results[label])), report(results[label])


@pytest.mark.parametrize("label,expected", [(label, e) for label, _, e in ITEMS], ids=[label for label, _, _ in ITEMS])
def test_each_item_is_judged_as_it_should_be(results, label, expected):
    failed, text = failed_cases(results, label)
    if label.startswith("variant:"):
        assert failed == set(), text
        return
    assert failed, f"{label} was not rejected"
    if label.startswith("slip:"):
        message = next(m.message for m in load(ASSIGNMENT).mistakes if m.name == expected)
        assert message in text, f"{label} was not named:\n{text}"
    else:
        assert expected in text, text


EVAL_CASES = {"eval", "eval-nchw", "eval-non-contiguous", "bfloat16-eval"}
SIXTEEN_BIT_CASES = {"bfloat16", "float16", "bfloat16-eval", "bfloat16-long-sums", "float16-long-sums",
                     "float16-tall"}


def test_training_formula_in_evaluation_mode_fails_the_evaluation_cases_only(results):
    # In bfloat16, with means ten times the spread, the slip is only about its tolerance off: not asserted.
    failed, text = failed_cases(results, "slip:eval-with-training-formula")
    assert EVAL_CASES - {"bfloat16-eval"} <= failed <= EVAL_CASES, text


def test_code_for_two_dims_fails_exactly_the_cases_with_more(results):
    mine = load(ASSIGNMENT).cases_of(FUNCTION)
    more = {c.name for c in mine if c.make(np.random.default_rng(0), "cpu").args[1].dim() > 2}
    assert more and len(more) < len(mine)
    for label in ("slip:first-dim-only", "breach:two-dims-only"):
        failed, text = failed_cases(results, label)
        assert failed == more, text


@pytest.mark.parametrize("label,wanted", [("slip:half-statistics", {"bfloat16", "float16"}),
                                          ("slip:half-sums", {"bfloat16-long-sums", "float16-long-sums",
                                                              "float16-tall"})])
def test_sixteen_bit_slips_fail_the_sixteen_bit_cases_in_both_types(results, label, wanted):
    failed, text = failed_cases(results, label)
    assert wanted <= failed <= SIXTEEN_BIT_CASES, text


def test_var_without_eps_fails_where_var_is_near_eps(results):
    failed, text = failed_cases(results, "slip:var-without-eps")
    assert {"tiny-variance", "constant"} <= failed and not failed & EVAL_CASES, text
