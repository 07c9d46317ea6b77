"""Exercise 01: the hidden tests reject each classic slip and name it, and accept correct variants.

Each submission is graded through the autograder, as a student's would be.
"""

import pytest

from autograder.cells import defined_names
from autograder.cli import main as autograder_main
from helpers import solved, submission, write
from normgrad.cases import load

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
def graded(tmp_path_factory):
    """Grade one batch holding every slip, every variant and the wrong axis, for both functions."""
    root = tmp_path_factory.mktemp("submitted")
    for function in FUNCTIONS:
        other = list(FUNCTIONS)  # the second part's functions stay the solution's (the base)
        for slip, knobs in {**SLIPS, **VARIANTS, "one-pass": ONE_PASS}.items():
            nb = submission("01-forward", {f: code(f, knobs if f == function else {}) for f in other},
                            base=solved("01-forward"))
            write(nb, root, f"{function}.{slip}", "01-forward")
        nb = submission("01-forward", {f: code(f, {}, axis=1 - FUNCTIONS[f] if f == function else None)
                                       for f in other}, base=solved("01-forward"))
        write(nb, root, f"{function}.wrong-axis", "01-forward")
    out = tmp_path_factory.mktemp("grades")
    assert autograder_main(["grade", str(root), "--out", str(out)]) == 0
    return out


def rows(out):
    import csv

    with open(out / "grades.csv") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("slip", [*SLIPS, "wrong-axis"])
def test_each_slip_is_rejected_and_named(graded, function, slip):
    row = rows(graded)[f"{function}.{slip}"]
    assert float(row["score"]) < float(row["max_score"])
    feedback = (graded / "feedback" / f"{function}.{slip}" / "01-forward" / "forward.txt").read_text()
    lines = [line for line in feedback.splitlines() if line.strip().startswith("FAIL")]
    assert lines and all(function in line for line in lines), "only the function with the slip may fail"
    assert load("01-forward").mistakes  # the catalogue the diagnosis comes from
    message = next(m.message for m in load("01-forward").mistakes if m.function == function and m.name == slip)
    assert message in feedback


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_correct_variants_score_full_marks(graded, function, variant):
    row = rows(graded)[f"{function}.{variant}"]
    assert row["score"] == row["max_score"], (graded / "feedback" / f"{function}.{variant}" / "01-forward" /
                                              "forward.txt").read_text()


@pytest.mark.parametrize("function", FUNCTIONS)
def test_one_pass_variance_fails_only_where_the_mean_dwarfs_the_spread(graded, function):
    feedback = (graded / "feedback" / f"{function}.one-pass" / "01-forward" / "forward.txt").read_text()
    failed = {line.split()[2].split("/")[1] for line in feedback.splitlines() if line.strip().startswith("FAIL")}
    assert "large-offset" in failed
    assert failed <= {"large-offset", "tiny-variance", "small-variance"}


def test_template_is_the_correct_answer_when_no_knob_is_turned():
    assert defined_names(code("layernorm_forward", {})) == {"layernorm_forward"}
