"""Exercise 03: the hidden tests reject each wrong d(sigma^2)/dx and each wrong Jacobian the chapters
name, and name it; they accept every correct way of writing them.

Each version is judged in this process against every case, visible and hidden, with the grader's own
`evaluate` and `diagnose` (the course's mutants are trusted code: no sandbox); a slip is judged in the
function it applies to. The sandboxed end-to-end path, a notebook graded by the autograder, is checked
in tests/test_exercises.py.
"""

import pytest

from autograder.cells import defined_names
from helpers import failures, judged
from normgrad.cases import load

ASSIGNMENT = "03-variance-derivative"
# case ids as `judged` gives them: the NumPy cases run on the CPU alone, so no " [device]" is appended
VISIBLE = {c.id for c in load(ASSIGNMENT).cases if not c.hidden}

VARIANCE = '''import numpy as np


def variance_grad(x):
    D = x.shape[{axis}]
    mu = x.mean(axis={axis}, keepdims=True)
    return {grad}
'''

JACOBIAN = '''import numpy as np


def layernorm_jacobian(x, eps=1e-5):
    D = x.shape[0]
    xc = x - x.mean()
    var = {var}
    rstd = {rstd}
    direct = rstd * np.eye(D, dtype=x.dtype)
    mean_part = -rstd / D * np.ones((D, D), dtype=x.dtype)
    var_part = {var_part}
    return {J}
'''

CORRECT = {"axis": "1", "grad": "2 * (x - mu) / D",
           "var": "np.mean(xc * xc)", "rstd": "1 / np.sqrt(var + eps)",
           # d x_hat_i / d sigma^2 = -(x_i - mu) rstd^3 / 2, times d sigma^2 / d x_j = 2 (x_j - mu) / D
           "var_part": "-np.outer(xc, xc) * rstd**3 / D", "J": "direct + mean_part + var_part"}

# mistake name -> the knobs that make it, in each function it applies to
SLIPS = {
    "variance_grad": {
        "mean-held-constant": {"grad": "2 * x / D"},
        "unbiased-variance": {"grad": "2 * (x - mu) / (D - 1)"},
        "missing-factor-2": {"grad": "(x - mu) / D"},
        "sign-error": {"grad": "-2 * (x - mu) / D"},
        "wrong-axis": {"axis": "0"},
    },
    "layernorm_jacobian": {
        "no-mean-path": {"J": "direct + var_part"},
        "no-variance-path": {"J": "direct + mean_part"},
        "diagonal-only": {"J": "np.diag(np.diag(direct + mean_part + var_part))"},
        "unbiased-variance": {"var": "np.var(x, ddof=1)", "var_part": "-np.outer(xc, xc) * rstd**3 / (D - 1)"},
        "var-without-eps": {"var_part": "-np.outer(xc, xc) * rstd / var / D"},
        "sign-error": {"var_part": "np.outer(xc, xc) * rstd**3 / D"},
        "missing-factor-2": {"var_part": "-np.outer(xc, xc) * rstd**3 / (2 * D)"},
        "rstd-squared": {"var_part": "-np.outer(xc, xc) * rstd**2 / D"},
        "eps-outside-sqrt": {"rstd": "1 / (np.sqrt(var) + eps)"},
    },
}

# Other correct ways to write them: each must score full marks.
VARIANTS = {
    # the Kronecker-delta form with its vanishing term (1/D) sum_k (x_k - mu) kept
    "kronecker-term-kept": {"grad": "2 / D * ((x - mu) - np.sum(x - mu, axis=1, keepdims=True) / D)"},
    # the expanded square, differentiated term by term: (1/D) (2 x - 2 (mu + mu) + 2 mu)
    "expanded-square": {"grad": "(2 * x - 2 * (mu + mu) + 2 * mu) / D"},
    # the variance part written with x_hat
    "x-hat-form": {"var_part": "-np.outer(xc * rstd, xc * rstd) * rstd / D"},
    # J built one row at a time as J^T e_j, by the compact backward formula (J is symmetric)
    "vector-products": {"J": "np.stack([rstd * (e - e.mean() - xc * rstd * np.mean(e * xc * rstd)) "
                             "for e in np.eye(D, dtype=x.dtype)])"},
}

EPS_IGNORED = {"rstd": "1 / np.sqrt(var + 1e-5)"}

# the deviations computed in place, in the caller's x: the function must leave its argument alone
IN_PLACE = {"grad": "2 * np.subtract(x, mu, out=x) / D"}


def code(function: str, knobs: dict) -> str:
    parts = {**CORRECT, **knobs}
    return (VARIANCE if function == "variance_grad" else JACOBIAN).format(**parts)


@pytest.fixture(scope="module")
def problems():
    """version -> case id -> its problems: each slip in its function; each variant, eps ignored, the
    argument written into and the template in both functions."""
    found = {f"{f}.{s}": judged(ASSIGNMENT, f, code(f, knobs))
             for f, slips in SLIPS.items() for s, knobs in slips.items()}
    for version, knobs in {**VARIANTS, "eps-ignored": EPS_IGNORED, "in-place": IN_PLACE, "correct": {}}.items():
        found[version] = {case: p for f in SLIPS for case, p in judged(ASSIGNMENT, f, code(f, knobs)).items()}
    return found


def failed(problems, version: str) -> dict[str, list[str]]:
    return failures(problems[version])


@pytest.mark.parametrize("function,slip", [(f, s) for f, slips in SLIPS.items() for s in slips])
def test_each_slip_is_rejected_and_named(problems, function, slip):
    fails = failed(problems, f"{function}.{slip}")
    assert fails, f"{function} with {slip} passed every test"
    assert set(fails) & VISIBLE, "a visible test should fail too"
    mistake = next(m for m in load(ASSIGNMENT).mistakes if m.function == function and m.name == slip)
    assert any(mistake.message in line for found in fails.values() for line in found), "the diagnosis does not name it"


@pytest.mark.parametrize("variant", [*VARIANTS, "correct"])
def test_correct_variants_score_full_marks(problems, variant):
    assert failed(problems, variant) == {}


def test_writing_into_the_argument_is_rejected_in_every_case(problems):
    fails = failed(problems, "in-place")
    assert set(fails) == {c.id for c in load(ASSIGNMENT).cases_of("variance_grad")}
    assert all(any("modified its argument x" in line for line in found) for found in fails.values())


def test_eps_ignored_fails_the_eps_test_only(problems):
    assert set(failed(problems, "eps-ignored")) == {"layernorm_jacobian/eps"}


def test_a_vanishing_part_is_caught_elsewhere(problems):
    """For one value (or a constant row) the variance part is zero and dropping it goes unseen; others see it."""
    found = problems["layernorm_jacobian.no-variance-path"]
    assert not found["layernorm_jacobian/one-value"] and not found["layernorm_jacobian/constant"]
    assert found["layernorm_jacobian/two-values"]


def test_template_is_the_correct_answer_when_no_knob_is_turned():
    assert defined_names(code("variance_grad", {})) == {"variance_grad"}
    assert defined_names(code("layernorm_jacobian", {})) == {"layernorm_jacobian"}
