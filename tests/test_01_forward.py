"""Exercise 01: the hidden tests reject each classic slip and name it, and accept correct variants.

Each version is judged in this process against every case, visible and hidden, with the grader's own
`evaluate` and `diagnose` (the course's mutants are trusted code: no sandbox). The sandboxed end-to-end
path, a notebook graded by the autograder, is checked in tests/test_exercises.py.
"""

import pytest

from autograder.cells import defined_names
from helpers import case_names, failures, judged
from normgrad.cases import load

ASSIGNMENT = "01-forward"

TEMPLATE = '''import numpy as np


def {name}(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis={axis})
    c = x - np.expand_dims(mean, {axis})
    var = {var}
    rstd = {rstd}
    x_hat = c * np.expand_dims(rstd, {axis})
    y = {y}
    return y, {{"x": x, "mean": mean, "rstd": rstd, "x_hat": x_hat, "gamma": gamma, "eps": eps}}
'''

CORRECT = {"var": "(c * c).mean(axis={axis})", "rstd": "1 / np.sqrt(var + eps)", "y": "gamma * x_hat + beta"}

# mistake name -> the one knob that makes it (the rest stays correct)
SLIPS = {
    "sqrt-sigma-plus-eps": {"rstd": "1 / np.sqrt(np.sqrt(var) + eps)"},
    "variance-without-square": {"var": "c.mean(axis={axis})"},
    "unbiased-variance": {"var": "x.var(axis={axis}, ddof=1)"},
    "eps-outside-sqrt": {"rstd": "1 / (np.sqrt(var) + eps)"},
    "gamma-forgotten": {"y": "x_hat + beta"},
    "beta-forgotten": {"y": "gamma * x_hat"},
}

# Other correct ways to write it: each must score full marks.
VARIANTS = {
    "numpy-var": {"var": "x.var(axis={axis})"},
    "rsqrt-by-power": {"rstd": "(var + eps) ** -0.5"},
}

# Right in exact arithmetic, wrong in floating point: var = E[x^2] - E[x]^2 cancels catastrophically
# when the mean dwarfs the spread (chapter 4): a large offset, or a tiny variance around a mean near 1.
# It must fail those tests and pass the well-scaled ones.
ONE_PASS = {"var": "(x * x).mean(axis={axis}) - mean * mean"}

FUNCTIONS = {"layernorm_forward": 1, "batchnorm_forward": 0}


def code(name: str, knobs: dict, axis: int | None = None) -> str:
    axis = FUNCTIONS[name] if axis is None else axis
    parts = {k: v.format(axis=axis) for k, v in {**CORRECT, **knobs}.items()}
    return TEMPLATE.format(name=name, axis=axis, **parts)


@pytest.fixture(scope="module")
def problems():
    """(function, version) -> case id -> its problems: every slip, every variant, one-pass and the wrong axis."""
    found = {}
    for function in FUNCTIONS:
        for version, knobs in {**SLIPS, **VARIANTS, "one-pass": ONE_PASS}.items():
            found[function, version] = judged(ASSIGNMENT, function, code(function, knobs))
        found[function, "wrong-axis"] = judged(ASSIGNMENT, function, code(function, {}, axis=1 - FUNCTIONS[function]))
    return found


def failed(problems, function: str, version: str) -> dict[str, list[str]]:
    return failures(problems[function, version])


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("slip", [*SLIPS, "wrong-axis"])
def test_each_slip_is_rejected_and_named(problems, function, slip):
    fails = failed(problems, function, slip)
    assert fails, f"{function} with {slip} passed every test"
    assert load(ASSIGNMENT).mistakes  # the catalogue the diagnosis comes from
    message = next(m.message for m in load(ASSIGNMENT).mistakes if m.function == function and m.name == slip)
    assert any(message in line for found in fails.values() for line in found), "the diagnosis does not name it"


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_correct_variants_score_full_marks(problems, function, variant):
    assert failed(problems, function, variant) == {}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_one_pass_variance_fails_only_where_the_mean_dwarfs_the_spread(problems, function):
    failed_names = case_names(failed(problems, function, "one-pass"))
    assert "large-offset" in failed_names
    assert failed_names <= {"large-offset", "tiny-variance", "small-variance"}


def test_template_is_the_correct_answer_when_no_knob_is_turned():
    assert defined_names(code("layernorm_forward", {})) == {"layernorm_forward"}


# Seeds of the one-sample case (a row of 9) whose mean nearly cancels: 4e-4 to 8e-4 beside values up to 3
NEAR_ZERO_MEANS = (503, 2401, 3741)


@pytest.mark.parametrize("seed", NEAR_ZERO_MEANS)
def test_a_mean_near_zero_is_held_to_its_rows_scale_and_a_float32_mean_still_fails(seed):
    """Held to its own size, a correct mean there sat up to 2.1 tolerances from the float64 oracle (an honest
    grade lost a point in CI; 3 seeds in 4000). Its rounding is a sum's, of the x's: the floor is max|x|.
    A mean summed in float32, a real slip, stays far outside."""
    import numpy as np

    from normgrad.cases import case_rng
    from normgrad.checks import closeness_problems

    case = next(c for c in load(ASSIGNMENT).cases if c.id == "layernorm_forward/one-sample")
    trial = case.make(case_rng(seed, case, "cpu"), "cpu")
    right, slipped = {}, {}
    exec(code("layernorm_forward", {}), right)
    exec(code("layernorm_forward", {}).replace("mean = x.mean(axis=1)",
                                                "mean = x.astype(np.float32).mean(axis=1).astype(x.dtype)"), slipped)
    rtol = trial.judge.keywords["rtol"]
    y, cache = right["layernorm_forward"](*trial.args)
    assert closeness_problems(cache["mean"], trial.expected[1]["mean"], "mean", rtol) != []  # the old floor, 0
    assert trial.judge((y, cache), trial.expected) == []
    assert any("cache['mean']" in p for p in trial.judge(slipped["layernorm_forward"](*trial.args), trial.expected))
