"""Exercise 02: the hidden tests reject each wrong backward pass the chapter names, and name it;
they accept every correct way of writing it. And the three-path oracle agrees with the closed forms.

Each version of each function is judged in this process against every case, visible and hidden, with
the grader's own `evaluate` and `diagnose` (the course's mutants are trusted code: no sandbox). The
sandboxed end-to-end path, a notebook graded by the autograder, is checked in tests/test_exercises.py.
"""

from itertools import permutations

import numpy as np
import pytest

from autograder.cells import defined_names
from helpers import failures, judged
from normgrad import inputs, reference, tolerances
from normgrad.cases import chain_rule, load

ASSIGNMENT = "02-chain-rule"
# case ids as `judged` gives them: the NumPy cases run on the CPU alone, so no " [device]" is appended
HIDDEN = {c.id for c in load(ASSIGNMENT).cases if c.hidden}
FUNCTIONS = {"layernorm_backward_staged": 1, "batchnorm_backward_staged": 0, "layernorm_grad_paths": 1}

# The staged backward as a student would write it; each knob is one line of it.
TEMPLATE = '''import numpy as np


def {name}(dy, cache):
    x, gamma, eps = cache["x"], cache["gamma"], cache["eps"]
    mean = np.expand_dims(cache["mean"], {axis})
    rstd = {rstd}
    m = x.shape[{over}]
    xc = x - mean
    dx_hat = {dx_hat}
    dvar = {dvar}
    dmean = {dmean}
    direct = dx_hat * rstd
    via_mean = {via_mean}
    via_var = {via_var}
    dx = {dx}
    dgamma = {dgamma}
    dbeta = {dbeta}
    return {returns}
'''

SUM = "np.sum({of}, axis={over}, keepdims=True)"
CORRECT = {
    "rstd": "np.expand_dims(cache['rstd'], {axis})",
    "dx_hat": "dy * gamma",
    "dvar": "-0.5 * " + SUM.format(of="dx_hat * xc", over="{over}") + " * rstd**3",
    "dmean": "-" + SUM.format(of="dx_hat", over="{over}") + " * rstd",
    "via_mean": "dmean / m * np.ones_like(x)",
    "via_var": "dvar * 2 * xc / m",
    "dx": "direct + via_mean + via_var",
    "dgamma": "np.sum(dy * cache['x_hat'], axis=0)",
    "dbeta": "np.sum(dy, axis=0)",
}

# mistake name -> the knobs that make it (the rest stays correct); "over" is the axis dx's sums run over
SLIPS = {
    "no-mean-path": {"via_mean": "np.zeros_like(x)"},
    "no-variance-path": {"via_var": "np.zeros_like(x)"},
    "diagonal-only": {"dvar": "-0.5 * dx_hat * xc * rstd**3", "dmean": "-dx_hat * rstd"},
    "unbiased-variance": {"via_var": "dvar * 2 * xc / (m - 1)"},
    # makemore's layer: rstd from the unbiased variance, and its gradient, in place of the cache's
    "bessel-forward": {"rstd": "1 / np.sqrt(np.var(x, axis={axis}, ddof=1, keepdims=True) + eps)",
                       "via_var": "dvar * 2 * xc / (m - 1)", "dgamma": "np.sum(dy * xc * rstd, axis=0)"},
    "var-without-eps": {"dvar": "-0.5 * " + SUM.format(of="dx_hat * xc", over="{over}")
                                + " * rstd / np.var(x, axis={over}, keepdims=True)"},
    "gamma-forgotten": {"dx_hat": "dy"},
    "sign-error": {"dvar": "0.5 * " + SUM.format(of="dx_hat * xc", over="{over}") + " * rstd**3"},
    "missing-factor-2": {"via_var": "dvar * xc / m"},
    "rstd-squared": {"dvar": "-0.5 * " + SUM.format(of="dx_hat * xc", over="{over}") + " * rstd**2"},
    "wrong-axis": {"over": "other"},
    "dgamma-from-x": {"dgamma": "np.sum(dy * x, axis=0)"},
    "dbeta-as-mean": {"dbeta": "np.mean(dy, axis=0)"},
    "dgamma-dbeta-swapped": {"dgamma": "np.sum(dy, axis=0)", "dbeta": "np.sum(dy * cache['x_hat'], axis=0)"},
}

# Wrong too, though not each in the catalogue: they must be rejected (the seed's snippet is named).
OTHER_WRONG = {
    "mean-path-sign": {"dmean": SUM.format(of="dx_hat", over="{over}") + " * rstd"},
    "every-sum-on-the-other-axis": {"over": "other", "dgamma": "np.sum(dy * cache['x_hat'], axis=1)",
                                    "dbeta": "np.sum(dy, axis=1)"},
    # the snippet of the source material: the variance term divided by var, not var + eps
    "seed-snippet": {"dx": "rstd * (dx_hat - np.mean(dx_hat, axis={over}, keepdims=True) - xc * "
                           "np.mean(dx_hat * xc, axis={over}, keepdims=True) / np.var(x, axis={over}, keepdims=True))"},
}

# dL/dx_hat computed in place, into the caller's dy: the function must leave its arguments alone.
IN_PLACE = {"dx_hat": "np.multiply(dy, gamma, out=dy)"}

# Right in every case but one: eps taken as 1e-5 instead of the cache's.
EPS_HARDCODED = {"rstd": "1 / np.sqrt(np.var(x, axis={axis}, keepdims=True) + 1e-5)"}

# Other correct ways to write it: each must score full marks.
VARIANTS = {
    # cs231n's dmean, with the variance's share dvar * sum(-2 (x - mu)) / m that is zero in exact arithmetic
    "vanishing-term-kept": {"dmean": "-" + SUM.format(of="dx_hat", over="{over}") + " * rstd + dvar * "
                                     + SUM.format(of="-2 * xc", over="{over}") + " / m"},
    # the compact form, with x_hat from the cache
    "one-line": {"dx": "rstd / m * (m * dx_hat - " + SUM.format(of="dx_hat", over="{over}") + " - cache['x_hat'] * "
                       + SUM.format(of="dx_hat * cache['x_hat']", over="{over}") + ")",
                 "via_mean": "-rstd * np.mean(dx_hat, axis={over}, keepdims=True) * np.ones_like(x)",
                 "via_var": "-rstd * cache['x_hat'] * np.mean(dx_hat * cache['x_hat'], axis={over}, keepdims=True)"},
}

# J^T g with the Jacobian of each group written out, part by part (one matrix per group).
JACOBIAN_PRODUCT = '''import numpy as np


def {name}(dy, cache):
    x_hat = np.moveaxis(cache["x_hat"], {axis}, -1)             # groups, m
    g = np.moveaxis(dy * cache["gamma"], {axis}, -1)            # groups, m
    r = cache["rstd"][:, None, None]                            # groups, 1, 1
    m = g.shape[-1]
    parts = (r * np.eye(m, dtype=g.dtype),                      # d x_hat_i / d x_j, direct
             -r / m * np.ones((m, m), dtype=g.dtype),           # through the mean
             -r / m * x_hat[:, :, None] * x_hat[:, None, :])    # through the variance
    paths = [np.moveaxis(np.einsum("ki,kij->kj", g, J), -1, {axis}) for J in parts]
    if "{name}" == "layernorm_grad_paths":
        return tuple(paths)
    return sum(paths), np.sum(dy * cache["x_hat"], axis=0), np.sum(dy, axis=0)
'''


def code(name: str, knobs: dict) -> str:
    axis = FUNCTIONS[name]
    over = 1 - axis if knobs.get("over") == "other" else axis
    parts = {k: v.format(axis=axis, over=over) for k, v in {**CORRECT, **knobs}.items() if k != "over"}
    returns = "direct, via_mean, via_var" if name == "layernorm_grad_paths" else "dx, dgamma, dbeta"
    return TEMPLATE.format(name=name, axis=axis, over=over, returns=returns, **parts)


ALL = {**SLIPS, **OTHER_WRONG, **VARIANTS, "eps-hardcoded": EPS_HARDCODED, "in-place": IN_PLACE, "correct": {}}


@pytest.fixture(scope="module")
def problems():
    """version -> case id -> its problems, for every slip, other wrong version and variant in all three functions."""
    found = {version: {} for version in [*ALL, "jacobian-product"]}
    for function, axis in FUNCTIONS.items():
        for version, knobs in ALL.items():
            found[version].update(judged(ASSIGNMENT, function, code(function, knobs)))
        jacobian_product = JACOBIAN_PRODUCT.format(name=function, axis=axis)
        found["jacobian-product"].update(judged(ASSIGNMENT, function, jacobian_product))
    return found


def failed(problems, version: str, function: str) -> dict[str, list[str]]:
    return {case: found for case, found in failures(problems[version]).items() if case.startswith(function + "/")}


def named(message: str, fails: dict[str, list[str]]) -> bool:
    return any(message in line for found in fails.values() for line in found)


def message(function: str, slip: str) -> str:
    return next(m.message for m in load(ASSIGNMENT).mistakes if m.function == function and m.name == slip)


CATALOGUE = [(f, s) for f in FUNCTIONS for s in SLIPS
             if not (f == "layernorm_grad_paths" and s in chain_rule.PARAMETER_SLIPS)]


@pytest.mark.parametrize("function,slip", CATALOGUE)
def test_each_slip_is_rejected_and_named(problems, function, slip):
    fails = failed(problems, slip, function)
    assert fails, f"{function} with {slip} passed every test"
    hidden = set(fails) & HIDDEN
    assert hidden and len(hidden) < len(fails), "the slip must fail visible tests and hidden tests"
    assert named(message(function, slip), fails), "the diagnosis does not name it"


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("wrong", OTHER_WRONG)
def test_other_wrong_versions_are_rejected(problems, function, wrong):
    fails = failed(problems, wrong, function)
    if function == "layernorm_grad_paths" and wrong == "seed-snippet":
        assert not fails  # the snippet changes dx only; the paths of this submission are correct
        return
    assert fails
    if wrong == "seed-snippet":
        assert named(message(function, "var-without-eps"), fails)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_writing_into_an_argument_is_rejected_in_every_case(problems, function):
    fails = failed(problems, "in-place", function)
    assert len(fails) == len(load(ASSIGNMENT).cases_of(function))
    assert all(any("modified its argument dy" in line for line in found) for found in fails.values())


@pytest.mark.parametrize("function", FUNCTIONS)
def test_eps_taken_from_anywhere_but_the_cache_fails_the_eps_test_only(problems, function):
    assert set(failed(problems, "eps-hardcoded", function)) == {f"{function}/eps"}


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("variant", [*VARIANTS, "correct", "jacobian-product"])
def test_correct_variants_score_full_marks(problems, function, variant):
    assert failed(problems, variant, function) == {}


@pytest.mark.parametrize("order", [order for order in permutations(chain_rule.PATHS) if order != chain_rule.PATHS])
def test_the_paths_in_another_order_fail_every_case_and_are_named(order):
    returns = "return direct, via_mean, via_var"
    source = code("layernorm_grad_paths", {}).replace(returns, "return " + ", ".join(order))
    fails = failures(judged(ASSIGNMENT, "layernorm_grad_paths", source))
    assert len(fails) == len(load(ASSIGNMENT).cases_of("layernorm_grad_paths"))
    name = "paths-as-" + "-".join(order)
    expected = next(m.message for m in load(ASSIGNMENT).mistakes if m.name == name)
    assert all(any(expected in line for line in found) for found in fails.values())


def test_a_vanishing_path_is_caught_elsewhere(problems):
    """Where a path is zero (groups of one value, constant groups) dropping it goes unseen; other cases see it."""
    found = problems["no-variance-path"]
    for function in FUNCTIONS:
        assert not found[f"{function}/constant"]
        assert found[f"{function}/odd-shape"]
    assert not found["layernorm_grad_paths/one-feature"] and not found["batchnorm_backward_staged/one-sample"]


def test_template_is_the_correct_answer_when_no_knob_is_turned():
    for function in FUNCTIONS:
        assert defined_names(code(function, {})) == {function}


# --- the three-path oracle against the closed forms ------------------------------------------

@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("kind", ["normal", "tiny-variance", "large-offset"])
def test_three_copy_oracle_matches_the_closed_forms_and_adds_up_to_dx(norm, kind):
    rng = np.random.default_rng(5)
    axis = chain_rule.AXES[norm]
    x = inputs.sample(rng, (7, 12), norm, kind)
    gamma, beta = inputs.affine(rng, 12)
    dy = inputs.upstream(rng, x.shape)
    direct, via_mean, via_var = reference.grad_paths(x, gamma, dy, norm=norm)
    cache = reference.forward_cache(x, gamma, norm=norm)
    rstd, x_hat, g = np.expand_dims(cache["rstd"], axis), cache["x_hat"], dy * gamma
    allowed = tolerances.rtol(np.float64, tolerances.conditioning(x, (axis,))) * np.abs(rstd * g).max()
    closed = (rstd * g, -rstd * g.mean(axis=axis, keepdims=True), -rstd * x_hat * (g * x_hat).mean(axis=axis, keepdims=True))
    for name, oracle, formula in zip(("direct", "via_mean", "via_var"), (direct, via_mean, via_var), closed):
        assert np.abs(oracle - formula).max() <= allowed, name
    full = (reference.layernorm if norm == "layer" else reference.batchnorm)(x, gamma, beta, dy=dy).dx
    assert np.abs(direct + via_mean + via_var - full).max() <= allowed
