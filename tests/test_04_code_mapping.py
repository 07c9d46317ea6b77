"""Exercise 04: the hidden tests reject each slip the chapter names and name it, and accept correct
alternatives.

Each slip, breach and variant is judged on its own, in this process, against every case (hidden ones
too) with the grader's own `evaluate` and `diagnose`: the course's mutants are trusted code and need
no sandbox. The sandboxed end-to-end path, notebook to grade, is tested in tests/test_exercises.py.
"""

import pytest

from helpers import case_names, failures, judged, report
from normgrad.cases import load

ASSIGNMENT = "04-code-mapping"

# One backward for both functions: `axis` is the axis the statistics reduce over (1 for layer
# norm's rows, 0 for batch norm's columns); the knobs below swap one piece each.
BACKWARD = '''import torch


def {name}(dy, x, gamma, mean, rstd):
    work = {work}
    d, v, w = dy.to(work), x.to(work), gamma.to(work)
    mu, r = mean.to({stats}).unsqueeze({axis}), rstd.to({stats}).unsqueeze({axis})
    r = {r}
    xc = v - mu
    xh = xc * r
    g = {g}
    m = {m}

    def total(t, dim):
        {total}

    s1 = total(g, {reduce}) / m
    s2 = total(g * xh, {reduce}) / m
    dx = {dx}
    dgamma = total(d * xh, {other})
    dbeta = total(d, {other})
    return {out}
'''

BACKWARD_CORRECT = {
    "work": "torch.float64 if x.dtype == torch.float64 else torch.float32",
    "stats": "work",
    "r": "r",
    "m": "v.shape[{axis}]",
    "reduce": "{axis}",
    "g": "d * w",
    "total": "return t.sum(dim=dim, keepdim=True)",
    "dx": "r * (g - s1 - xh * s2)",
    "out": "dx.to(x.dtype), dgamma.flatten().to(gamma.dtype), dbeta.flatten().to(gamma.dtype)",
}

# A naive loop's sum: one term at a time, the total kept in x's own dtype.
HALF_SUMS = ("acc = torch.zeros_like(t.select(dim, 0), dtype=x.dtype)\n"
             "        for i in range(t.shape[dim]):\n"
             "            acc = acc + t.select(dim, i).to(x.dtype)\n"
             "        return acc.unsqueeze(dim).to(work)")

# mistake name (normgrad.cases.code_mapping.MISTAKES) -> the knobs that make it
BACKWARD_SLIPS = {
    "var-without-eps": {"dx": "r * (g - s1 - xc * total(g * xc, {axis}) / m / (1 / r**2 - 1e-5))"},
    "no-mean-path": {"dx": "r * (g - xh * s2)"},
    "no-variance-path": {"dx": "r * (g - s1)"},
    "diagonal-only": {"dx": "g * r * (1 - 1 / m - xh**2 / m)"},
    "gamma-forgotten": {"g": "d"},
    "gamma-outside-sums": {"g": "d", "dx": "w * r * (g - s1 - xh * s2)"},  # gamma per column, both norms
    "half-statistics": {"stats": "x.dtype"},
    "half-arithmetic": {"work": "x.dtype", "stats": "x.dtype"},
    "half-sums": {"total": HALF_SUMS},
    # torch.var's default is the unbiased variance: rstd recomputed so, in place of the one passed in
    "bessel": {"r": "1 / torch.sqrt(v.var(dim={axis}, keepdim=True) + 1e-5)"},
}

# Batch norm's (N, C) axes mixed up: the count from the channels, or the sums across them too.
BATCH_SLIPS = {
    "count-from-wrong-axis": {"m": "v.shape[1]"},
    "reduced-over-dim-1": {"m": "v.shape[1]", "reduce": "1"},
}

# Wrong in ways the contract checks directly, with no catalogued mistake: the message says it.
BACKWARD_BREACHES = {
    "float64-on-cpu": ({"out": "dx.to('cpu', torch.float64), dgamma.flatten().to('cpu', torch.float64), "
                               "dbeta.flatten().to('cpu', torch.float64)"},
                       "should have dtype torch.float32, got torch.float64"),
    "uses-autograd": ({"dx": "torch.autograd.grad(torch.zeros(()), [])"}, "autograd is switched off"),
}

# Correct, written otherwise: each must score full marks.
BACKWARD_VARIANTS = {
    # the source's one-liner, with var + eps: x - mean over (var + eps) where x_hat * rstd stood
    "one-liner": {"dx": "r * (g - g.mean(dim={axis}, keepdim=True) - xc * (g * xc).mean(dim={axis}, keepdim=True) "
                        "/ (1 / r**2))"},
    # the staged form of the NumPy notes: dvar, then dmean, then dx
    "staged": {"dx": "(lambda dvar: (lambda dmean: g * r + dvar * 2 * xc / m + dmean / m)("
                     "total(-g * r, {axis}) + dvar * total(-2 * xc, {axis}) / m))("
                     "total(g * xc * -0.5 * r**3, {axis}))"},
    # the whole computation in float64, cast back at the end
    "float64-and-back": {"work": "torch.float64"},
    # THNN's one pass: sum and dot product once, then one expression per entry
    "thnn": {"dx": "(g - s1 - xc * (total(g * xc, {axis}) / m) * r * r) * r"},
}

FUNCTION = '''import torch


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        work = {work}
        v = x.to(work)
        mu = v.mean(dim=1, keepdim=True)
        r = 1 / torch.sqrt({var} + {eps})
        ctx.save_for_backward(x, gamma, mu, r)
        ctx.eps = eps{keep}
        return ({y}).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, gamma, mu, r = ctx.saved_tensors
        eps = ctx.eps
        d, v, w = dy.to(r.dtype), x.to(r.dtype), gamma.to(r.dtype)
        xc = v - mu
        xh = xc * r
        g = d * w
        m = v.shape[1]
        s1 = g.mean(dim=1, keepdim=True)
        s2 = (g * xh).mean(dim=1, keepdim=True)
        dx = {dx}
        return dx.to(x.dtype), (d * xh).sum(0).to(gamma.dtype), d.sum(0).to(gamma.dtype){eps_grad}
'''

FUNCTION_CORRECT = {"y": "(v - mu) * r * gamma.to(work) + beta.to(work)", "dx": "r * (g - s1 - xh * s2)",
                    "work": "torch.float64 if x.dtype == torch.float64 else torch.float32",
                    "var": "((v - mu) ** 2).mean(dim=1, keepdim=True)", "eps": "eps", "eps_grad": ", None", "keep": ""}

FUNCTION_SLIPS = {
    "var-without-eps": {"dx": "r * (g - s1 - xc * (g * xc).mean(dim=1, keepdim=True) / (1 / r**2 - eps))"},
    "no-variance-path": {"dx": "r * (g - s1)"},
    "diagonal-only": {"dx": "g * r * (1 - 1 / m - xh**2 / m)"},
    "gamma-outside-sums": {"dx": "w * r * (d - d.mean(dim=1, keepdim=True) - xh * (d * xh).mean(dim=1, keepdim=True))"},
    "bessel": {"var": "v.var(dim=1, keepdim=True)"},  # makemore's layer: the unbiased variance, forward and all
    "half-arithmetic": {"work": "x.dtype"},  # the whole layer in x's dtype, forward and backward
    "default-eps": {"eps": "1e-5"},  # the layer's usual eps, whatever apply was given
    "no-none-for-eps": {"eps_grad": ""},  # three gradients for four inputs
}
FUNCTION_BREACHES = {
    "forward-without-beta": ({"y": "(v - mu) * r * gamma.to(work)"}, "y is wrong"),
    "uses-autograd": ({"dx": "torch.autograd.grad(torch.zeros(()), [])"}, "autograd is switched off"),
    # x_hat kept for the backward, the cache of exercise 01, set on ctx: a second input's worth of memory
    "keeps-x-hat": ({"keep": "; ctx.cache = {'x_hat': (v - mu) * r}"}, "forward keeps 8064 bytes for backward"),
}
FUNCTION_VARIANTS = {"float64-and-back": {"dx": "(r * (g - s1 - xh * s2)).double()"}}

AXES = {"layernorm_backward": (1, 0), "batchnorm_backward": (0, 0)}  # (statistics axis, gamma axis)


def backward_code(name: str, knobs: dict) -> str:
    axis, other = AXES[name]
    parts = {k: v.replace("{axis}", str(axis)) for k, v in {**BACKWARD_CORRECT, **knobs}.items()}
    return BACKWARD.format(name=name, axis=axis, other=other, **parts)


def function_code(knobs: dict) -> str:
    return FUNCTION.format(**{**FUNCTION_CORRECT, **knobs})


def items(slips, breaches, variants, skip=()):
    """(label, knobs, expected) for every entry of one function: the mistake's name, a message, or None."""
    return ([(f"slip:{k}", v, k) for k, v in slips.items() if k not in skip] +
            [(f"breach:{k}", v[0], v[1]) for k, v in breaches.items()] +
            [(f"variant:{k}", v, None) for k, v in variants.items()])


ITEMS = {
    "layernorm_backward": items(BACKWARD_SLIPS, BACKWARD_BREACHES, BACKWARD_VARIANTS),
    # gamma outside the sums is batch norm's own form (one gamma a group): right there, wrong for layer norm
    "batchnorm_backward": items({**BACKWARD_SLIPS, **BATCH_SLIPS}, BACKWARD_BREACHES,
                                {**BACKWARD_VARIANTS, "gamma-outside-sums": BACKWARD_SLIPS["gamma-outside-sums"]},
                                skip=("gamma-outside-sums",)),
    "LayerNormFunction": items(FUNCTION_SLIPS, FUNCTION_BREACHES, FUNCTION_VARIANTS),
}


def code(function: str, knobs: dict) -> str:
    return function_code(knobs) if function == "LayerNormFunction" else backward_code(function, knobs)


@pytest.fixture(scope="module")
def results():
    """(function, label) -> {case id: its problems}: every item of every function, judged once."""
    return {(function, label): judged(ASSIGNMENT, function, code(function, knobs))
            for function in ITEMS for label, knobs, _ in ITEMS[function]}


def failed_items(results, function: str, label: str) -> tuple[dict[str, list[str]], str]:
    """The failed cases of one item (case id -> problems), and a report of them for assertion messages."""
    return failures(results[function, label]), report(results[function, label])


ALL = [(function, label, expected) for function in ITEMS for label, _, expected in ITEMS[function]]


@pytest.mark.parametrize("function,label,expected", ALL, ids=[f"{f}-{label}" for f, label, _ in ALL])
def test_each_item_is_judged_as_it_should_be(results, function, label, expected):
    failed, text = failed_items(results, function, label)
    if label.startswith("variant:"):
        assert failed == {}, text
        return
    assert failed, f"{label} of {function} was not rejected"
    if label.startswith("slip:"):
        message = next(m.message for m in load(ASSIGNMENT).mistakes if m.function == function and m.name == expected)
        assert message in text, f"{label} of {function} was not named:\n{text}"
    else:
        assert expected in text, text


def failed_cases(results, function: str, label: str) -> tuple[set[str], str]:
    """The names of the cases an item fails ("tiny-variance", whatever the device), and the report."""
    failed, text = failed_items(results, function, label)
    return case_names(failed), text


SIXTEEN_BIT_CASES = {"bfloat16", "float16", "bfloat16-long-sums", "float16-long-sums", "float16-visible",
                     "float16-tall", "bfloat16-tall"}
SIXTEEN_BIT_SLIPS = [(f, f"slip:{slip}") for f in ("layernorm_backward", "batchnorm_backward")
                     for slip in ("half-sums", "half-statistics", "half-arithmetic")]


@pytest.mark.parametrize("function,label", SIXTEEN_BIT_SLIPS)
def test_sixteen_bit_slips_fail_the_sixteen_bit_cases_in_both_types(results, function, label):
    names, text = failed_cases(results, function, label)
    assert names <= SIXTEEN_BIT_CASES, text
    if label == "slip:half-sums":  # long sums stall: rows of 5000, and for layer norm's columns, 3000 rows
        wanted = {"bfloat16-long-sums", "float16-long-sums"} if function == "batchnorm_backward" else \
            {"bfloat16-long-sums", "float16-long-sums", "bfloat16-tall", "float16-tall"}
    else:  # statistics rounded to 16 bits shift every x_hat of a group: means near 10 show it
        wanted = {"bfloat16", "float16", "float16-visible"}
    assert wanted <= names, text


def test_a_visible_case_is_sixteen_bit():
    visible = [c for c in load(ASSIGNMENT).cases if not c.hidden and c.function == "layernorm_backward"]
    assert any("float16" in c.name for c in visible)


def test_layer_norm_function_in_16_bits_fails_at_a_large_mean(results):
    names, text = failed_cases(results, "LayerNormFunction", "slip:half-arithmetic")
    assert {"bfloat16-large-offset", "float16-large-offset"} <= names, text


def test_keeping_x_hat_costs_only_the_case_that_measures_what_forward_keeps(results):
    names, text = failed_cases(results, "LayerNormFunction", "breach:keeps-x-hat")
    assert names == {"keeps-statistics"}, text
    assert "1.1 times a whole 24 x 40 input" in text  # x_hat, 7680 bytes, with mean and rstd, 384


def test_what_forward_keeps_counts_each_storage_once_and_the_inputs_none():
    import torch

    from autograder.inside.calling import invoke

    class Keeping(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps, keep):
            kept = keep(x)
            ctx.save_for_backward(*kept[:1])
            # the rest set on ctx deep in containers (one holding itself), views of the first: each storage once
            loop = [tuple(kept[1:])]
            loop.append(loop)
            ctx.also = {"deep": [{"in": loop}], "views": [kept[0][:1], kept[0].t()], "other": "x"}
            return x * gamma + beta

    x, gamma, beta = torch.ones(6, 5, dtype=torch.float64).t(), torch.ones(6), torch.zeros(6)
    kept = {"x and its views": lambda x: (x, x[1:], x.t()), "a copy of x": lambda x: (x.clone(), x),
            "x as float32, twice": lambda x: (x.float(), x.float()), "rows' numbers": lambda x: (x.sum(1), x.mean(1))}
    assert {name: invoke("saved_for_backward", Keeping, (x, gamma, beta, 1e-5, keep), {})
            for name, keep in kept.items()} == {"x and its views": 0, "a copy of x": 240,
                                                "x as float32, twice": 240, "rows' numbers": 80}


def test_a_gradient_for_eps_is_named_as_a_missing_one_is():
    wrong = judged(ASSIGNMENT, "LayerNormFunction", function_code({"eps_grad": ", torch.zeros(())"}))
    message = next(m.message for m in load(ASSIGNMENT).mistakes if m.name == "no-none-for-eps")
    backward_run = {case: problems for case, problems in wrong.items() if "keeps-statistics" not in case}
    assert backward_run and all(any(message in p for p in problems) for problems in backward_run.values()), \
        report(wrong)


@pytest.mark.parametrize("function", ["layernorm_backward", "batchnorm_backward"])
def test_var_without_eps_fails_where_var_is_near_eps(results, function):
    names, text = failed_cases(results, function, "slip:var-without-eps")
    assert {"tiny-variance", "constant"} <= names, text


def test_template_without_knobs_is_the_contract():
    assert "def layernorm_backward(dy, x, gamma, mean, rstd)" in backward_code("layernorm_backward", {})
    assert "class LayerNormFunction(torch.autograd.Function)" in function_code({})
