"""Exercises 01-03, second part: GroupNorm, RMSNorm, hide_path and RMSNorm's Jacobian.

- every named mistake, written as a student would write it, fails visible and hidden tests and is
  named with its section; correct variants pass every test (judged in this process: the course's own
  code needs no sandbox, and tests/test_exercises.py grades each exercise through it);
- every mistake's margin: on each case it is either invisible (at roundoff, where the case cannot
  see it) or off by far more than the tolerance, and the correct solution sits far inside it;
- the book's own code, offered under the added names, scores nothing on the hidden tests;
- the added functions carry at least half of each assignment's points, as students.md says.
"""

from __future__ import annotations

import contextlib
import io
import signal
from pathlib import Path

import numpy as np
import pytest

from autograder.cells import defined_names
from autograder.course import nbgrader_meta, notebooks, read
from helpers import chapter_cells, failures, judged, times_tolerance
from normgrad import calling
from normgrad.cases import case_rng, evaluate, load, second_edition
from normgrad.cases import hide_path as hide_path_cases

ROOT = Path(__file__).resolve().parent.parent

# --- the mistakes as a student writes them: one template per function, one knob per line --------

TEMPLATES = {
    "groupnorm_forward": '''import numpy as np


def groupnorm_forward(x, gamma, beta, groups, eps=1e-5):
    n, c = x.shape[:2]
    xg = {view}
    mean = xg.mean(axis={over}, keepdims=True)
    var = {var}
    rstd = {rstd}
    x_hat = {x_hat}
    g, b = {affine}
    y = g[:, None, None] * x_hat + b[:, None, None]
    return y, {{"x": x, "mean": mean.reshape(n, -1), "rstd": rstd.reshape(n, -1), "x_hat": x_hat, "gamma": gamma,
               "eps": eps, "groups": groups}}
''',
    "rmsnorm_forward": '''import numpy as np


def rmsnorm_forward(x, gamma, eps=1e-6):
    xc = {xc}
    ms = {ms}
    rstd = {rstd}
    y = {y}
    return y, {{"x": x, "rstd": rstd[:, 0], "gamma": gamma, "eps": eps}}
''',
    "groupnorm_backward": '''import numpy as np


def groupnorm_backward(dy, cache):
    x, groups = cache["x"], cache["groups"]
    n, c = x.shape[:2]
    cg = c // groups
    g = (dy * ({gamma_in})[:, None, None]).reshape(n, groups, cg, -1)
    r = {r}
    xh = {xh}
    via_mean = {via_mean}
    via_var = {via_var}
    dx = ({outer})[:, None, None] * (r * (g + via_mean + via_var)).reshape(x.shape)
    return dx, {dgamma}, {dbeta}
''',
    "hide_path": '''import numpy as np


def hide_path(x, gamma, path):
    x64 = x.astype(np.float64)
    x_hat = (x64 - x64.mean(axis=1, keepdims=True)) / np.sqrt(x64.var(axis=1, keepdims=True) + 1e-5)
    if path == {mean}:
        g = {for_mean}
    else:
        g = {for_variance}
    dy = {dy}
    return {ret}
''',
    "rmsnorm_jacobian": '''import numpy as np


def rmsnorm_jacobian(x, eps=1e-6):
    d = x.shape[0]
    xc = {xc}
    ms = {ms}
    r = {r}
    return {J}
''',
}

# g orthogonal, row by row, to the ones (the mean's path) or to x_hat (the variance's)
ORTHOGONAL_TO_ONES = "np.resize([1.0, -1.0], x.shape[1]) - np.mean(np.resize([1.0, -1.0], x.shape[1])) + 0 * x64"
ORTHOGONAL_TO_X_HAT = ("1 - x_hat * np.sum(x_hat, axis=1, keepdims=True) / "
                       "np.maximum(np.sum(x_hat**2, axis=1, keepdims=True), 1e-300)")

CORRECT = {
    "groupnorm_forward": {"view": "x.reshape(n, groups, -1)", "over": "2",
                          "var": "((xg - mean) ** 2).mean(axis={over}, keepdims=True)", "rstd": "1 / np.sqrt(var + eps)",
                          "x_hat": "((xg - mean) * rstd).reshape(x.shape)", "affine": "gamma, beta"},
    "rmsnorm_forward": {"xc": "x", "ms": "np.mean(xc * xc, axis=1, keepdims=True)", "rstd": "1 / np.sqrt(ms + eps)",
                        "y": "gamma * xc * rstd"},
    "groupnorm_backward": {"gamma_in": "cache['gamma']", "outer": "np.ones(c, dtype=dy.dtype)", "over": "(2, 3)",
                           "r": "cache['rstd'][:, :, None, None]",
                           "xh": "cache['x_hat'].reshape(n, groups, cg, -1)",
                           "via_mean": "-g.mean(axis={over}, keepdims=True)",
                           "via_var": "-xh * (g * xh).mean(axis={over}, keepdims=True)",
                           "dgamma": "np.sum(dy * cache['x_hat'], axis=(0, 2, 3))", "dbeta": "np.sum(dy, axis=(0, 2, 3))"},
    "hide_path": {"mean": "'mean'", "for_mean": ORTHOGONAL_TO_ONES, "for_variance": ORTHOGONAL_TO_X_HAT,
                  "dy": "g / gamma",
                  "ret": "(dy / np.abs(dy).max(axis=1, keepdims=True)).astype(x.dtype)"},
    "rmsnorm_jacobian": {"xc": "x", "ms": "np.mean(xc * xc)", "r": "1 / np.sqrt(ms + eps)",
                         "J": "r * np.eye(d, dtype=x.dtype) - r**3 * np.outer(xc, xc) / d"},
}

SLIPS = {  # function -> mistake name -> the knobs that make it
    "groupnorm_forward": {
        "channel-statistics": {"view": "x.reshape(n, c, -1)"},
        "sample-statistics": {"view": "x.reshape(n, 1, -1)"},
        "interleaved-groups": {"view": "x.reshape(n, c // groups, groups, -1).transpose(0, 2, 1, 3)", "over": "(2, 3)",
            "x_hat": "((xg - mean) * rstd).transpose(0, 2, 1, 3).reshape(x.shape)"},
        "gamma-per-group": {"affine": "np.repeat(gamma[:groups], c // groups), np.repeat(beta[:groups], c // groups)"},
        "gamma-of-first-channel": {"affine": "np.repeat(gamma.reshape(groups, -1)[:, 0], c // groups), "
                                             "np.repeat(beta.reshape(groups, -1)[:, 0], c // groups)"},
        "gamma-averaged-per-group": {"affine": "np.repeat(gamma.reshape(groups, -1).mean(axis=1), c // groups), "
                                               "np.repeat(beta.reshape(groups, -1).mean(axis=1), c // groups)"},
        "unbiased-variance": {"var": "xg.var(axis={over}, keepdims=True, ddof=1)"},
        "eps-outside-sqrt": {"rstd": "1 / (np.sqrt(var) + eps)"},
        "tiled-statistics": {"x_hat": "((x.reshape(n, c, -1) - np.tile(mean.reshape(n, -1), (1, c // groups))"
                                      "[:, :, None]) * np.tile(rstd.reshape(n, -1), (1, c // groups))[:, :, None])"
                                      ".reshape(x.shape)"},
    },
    "rmsnorm_forward": {
        "mean-subtracted": {"xc": "x - x.mean(axis=1, keepdims=True)"},
        "centered-statistic": {"ms": "x.var(axis=1, keepdims=True)"},
        "sum-not-mean": {"ms": "np.sum(xc * xc, axis=1, keepdims=True)"},
        "no-square-root": {"rstd": "1 / (ms + eps)"},
        "eps-outside-sqrt": {"rstd": "1 / (np.sqrt(ms) + eps)"},
        "gamma-forgotten": {"y": "xc * rstd"},
    },
    "groupnorm_backward": {
        "one-channel-sums": {"over": "3"},
        "whole-sample-sums": {"over": "(1, 2, 3)"},
        "batch-sums": {"over": "(0, 2, 3)"},
        "tiled-rstd": {"r": "np.tile(cache['rstd'], (1, cg)).reshape(n, groups, cg, 1)"},
        "gamma-outside-sums": {"gamma_in": "np.ones(c, dtype=dy.dtype)", "outer": "cache['gamma']"},
        "gamma-per-group": {"gamma_in": "np.repeat(cache['gamma'][:groups], cg)"},
        "gamma-of-first-channel": {"gamma_in": "np.repeat(cache['gamma'].reshape(groups, cg)[:, 0], cg)"},
        "gamma-averaged-per-group": {"gamma_in": "np.repeat(cache['gamma'].reshape(groups, cg).mean(axis=1), cg)"},
        "parameter-sums-per-group": {"dgamma": "np.sum((dy * cache['x_hat']).reshape(n, groups, -1), axis=(0, 2))",
                                     "dbeta": "np.sum(dy.reshape(n, groups, -1), axis=(0, 2))"},
        "no-mean-path": {"via_mean": "0"},
        "no-variance-path": {"via_var": "0"},
    },
    "hide_path": {
        "wrong-path": {"mean": "'variance'"},
        "zero-gradient": {"ret": "np.zeros_like(x)"},
        "constant-rows": {"ret": "np.ones_like(x)"},
        "gamma-ignored": {"dy": "g"},  # g's condition put on dy
    },
    "rmsnorm_jacobian": {
        "layernorm-jacobian": {"xc": "x - x.mean()",
                               "J": "r * (np.eye(d, dtype=x.dtype) - 1 / d) - r**3 * np.outer(xc, xc) / d"},
        "diagonal-only": {"J": "r * np.eye(d, dtype=x.dtype)"},
        "eps-outside-sqrt": {"r": "1 / (np.sqrt(ms) + eps)"},
        "sum-not-mean": {"ms": "np.sum(xc * xc)", "J": "r * np.eye(d, dtype=x.dtype) - r**3 * np.outer(xc, xc)"},
        "rstd-squared": {"J": "r * np.eye(d, dtype=x.dtype) - r**2 * np.outer(xc, xc) / d"},
        "sign-error": {"J": "r * np.eye(d, dtype=x.dtype) + r**3 * np.outer(xc, xc) / d"},
        "missing-factor-2": {"J": "r * np.eye(d, dtype=x.dtype) - r**3 * np.outer(xc, xc) / (2 * d)"},
        "missing-half": {"J": "r * np.eye(d, dtype=x.dtype) - 2 * r**3 * np.outer(xc, xc) / d"},
        "mean-term-kept": {"J": "r * (np.eye(d, dtype=x.dtype) - 1 / d) - r**3 * np.outer(xc, xc) / d"},
    },
}

VARIANTS = {  # other correct ways to write it: full marks
    "groupnorm_forward": {"numpy-var": {"var": "xg.var(axis=2, keepdims=True)"}},
    "rmsnorm_forward": {"rsqrt-by-power": {"rstd": "(ms + eps) ** -0.5"}},
    "groupnorm_backward": {"x-hat-from-mean": {
        "xh": "(x.reshape(n, groups, cg, -1) - cache['mean'][:, :, None, None]) * r"}},
    # g constant hides the variance's path: x_hat sums to zero
    "hide_path": {"closed-form": {"for_variance": "1 + 0 * x64"}},
    "rmsnorm_jacobian": {"outer-of-x-hat": {"J": "r * (np.eye(d, dtype=x.dtype) - np.outer(xc * r, xc * r) / d)"}},
}

# Wrong, though not in the catalogue: g = x_hat hides the mean's path, but is zero on a constant row.
OTHER_WRONG = {"hide_path": {"x-hat-for-the-mean": {"for_mean": "x_hat"}}}

NUMPY_ADDED = {a: f for a, f in second_edition.FUNCTIONS.items() if a[:2] in ("01", "02", "03")}
FUNCTIONS = {f: a for a, functions in NUMPY_ADDED.items() for f in functions}


def code(function: str, knobs: dict) -> str:
    parts = {**CORRECT[function], **knobs}
    over = parts.pop("over", None)
    return TEMPLATES[function].format(over=over, **{k: v.replace("{over}", str(over)) for k, v in parts.items()})


def versions(function: str) -> dict[str, dict]:
    """Every way of writing `function` these tests judge, wrong or right: name -> knobs."""
    return {**SLIPS[function], **OTHER_WRONG.get(function, {}), **VARIANTS[function]}


@pytest.fixture(scope="module")
def verdicts() -> dict[tuple[str, str], dict[str, list[str]]]:
    """(function, version) -> case id -> its problems, every version judged once on every case."""
    return {(function, name): judged(assignment, function, code(function, knobs))
            for function, assignment in FUNCTIONS.items() for name, knobs in versions(function).items()}


HIDDEN = {case.id: case.hidden for assignment in NUMPY_ADDED for case in load(assignment).cases}


def failed(verdicts, function: str, name: str) -> dict[str, tuple[bool, str]]:
    """case id -> (hidden, its problems) of every failed case of `function` written as `name`."""
    return {case: (HIDDEN[case], "\n".join(problems))
            for case, problems in failures(verdicts[function, name]).items()}


def message(function: str, slip: str) -> str:
    return next(m.message for m in load(FUNCTIONS[function]).mistakes if m.function == function and m.name == slip)


def test_every_catalogued_mistake_has_a_student_version():
    for function, assignment in FUNCTIONS.items():
        assert set(SLIPS[function]) == {m.name for m in load(assignment).mistakes if m.function == function}


@pytest.mark.parametrize("function,slip", [(f, s) for f, slips in SLIPS.items() for s in slips])
def test_each_slip_is_rejected_and_named(verdicts, function, slip):
    fails = failed(verdicts, function, slip)
    hidden = [case for case, (is_hidden, _) in fails.items() if is_hidden]
    assert hidden and len(hidden) < len(fails), "the slip must fail visible tests and hidden tests"
    named = [case for case, (_, block) in fails.items() if message(function, slip) in block]
    assert named, f"no failed test names {slip}"
    page = next(m.link for m in load(FUNCTIONS[function]).mistakes if m.name == slip and m.function == function)
    assert f"{message(function, slip)} (see {page})" in fails[named[0]][1], "the diagnosis links to its section"


@pytest.mark.parametrize("function,variant", [(f, v) for f, variants in VARIANTS.items() for v in variants])
def test_correct_variants_score_full_marks(verdicts, function, variant):
    assert failed(verdicts, function, variant) == {}


def test_hide_path_a_dy_that_vanishes_on_constant_rows_fails_there_only(verdicts):
    """g = x_hat hides the mean's path of every row but a constant one, where it is zero (and dy, scaled by its
    row's largest entry, 0 / 0)."""
    fails = failed(verdicts, "hide_path", "x-hat-for-the-mean")
    assert set(fails) == {"hide_path/mean-constant"}
    assert "dy has 21 non-finite value(s)" in fails["hide_path/mean-constant"][1]  # 0 / 0 in the 3 constant rows


def test_templates_are_correct_when_no_knob_is_turned():
    for function in FUNCTIONS:
        assert defined_names(code(function, {})) == {function}


# --- margins: each mistake against the tolerance, beside the correct solution -------------------

def solution(function: str):
    """The source notebook's solution of `function`, defined here."""
    cell = next(c for c in read(notebooks(FUNCTIONS[function]).source).cells
                if nbgrader_meta(c).get("grade_id") == function)
    namespace: dict = {}
    exec(cell.source, namespace)
    return namespace[function]


def as_dtype(value, dtype):
    if isinstance(value, np.ndarray):
        return value.astype(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(as_dtype(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: as_dtype(v, dtype) if isinstance(v, np.ndarray) else v
                for k, v in value.items()}
    return value


CORRECT_AT_MOST = 0.2  # the correct solution uses at most this fraction of the tolerance (0.14 measured:
# groupnorm_forward in float64 on tiny variances, where the mean's rounding shows beside a small output)
SEEN_AT_LEAST = 100  # a mistake a case sees is off by at least this many tolerances (float32: 587 measured)
INVISIBLE_AT_MOST = CORRECT_AT_MOST  # ... and one it cannot see is at roundoff, like the correct solution (0.12:
# a GroupNorm mistake that is right on a float32 case, worked in float64 and rounded to float32 once)


def mistake_outputs(function: str, trial, correct):
    """mistake name -> what it returns on this trial, in the trial's dtype (hide_path: a concrete wrong dy)."""
    assignment = load(FUNCTIONS[function])
    dtype = trial.args[0].dtype
    if function == "hide_path":
        x, gamma, path = trial.args
        other = {"mean": "variance", "variance": "mean"}[path]
        return {"wrong-path": correct(x, gamma, other), "constant-rows": np.ones_like(x)}
    found = {}
    for m in assignment.mistakes:
        if m.function == function:
            with np.errstate(all="ignore"), contextlib.suppress(ValueError):  # one that names nothing here
                found[m.name] = as_dtype(m.impl(*[a.astype(np.float64) if isinstance(a, np.ndarray) else a
                                                  for a in trial.args], **trial.kwargs), dtype)
    return found


def memoized(function):
    """`function` of arrays and strings, remembering its results (the bisection asks the same question)."""
    seen = {}

    def remembered(*args):
        key = tuple(a.tobytes() + str(a.shape).encode() if isinstance(a, np.ndarray) else a for a in args)
        if key not in seen:
            seen[key] = function(*args)
        return seen[key]

    return remembered


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_mistake_is_far_outside_the_tolerance_and_the_solution_far_inside(function, capsys, monkeypatch):
    # hide_path's judge runs two backward passes on the dy: once per dy is enough
    monkeypatch.setattr(hide_path_cases, "missing_path", memoized(hide_path_cases.missing_path))
    assignment = load(FUNCTIONS[function])
    correct = solution(function)
    worst_correct, seen, invisible_worst = 0.0, {}, 0.0
    for seed in (1, 2):
        for case in assignment.cases_of(function):
            trial = case.make(case_rng(seed, case, "cpu"), "cpu")
            ratio = times_tolerance(trial, correct(*trial.args, **trial.kwargs), trial.expected)
            worst_correct = max(worst_correct, ratio)
            for name, wrong in mistake_outputs(function, trial, correct).items():
                ratio = times_tolerance(trial, wrong, trial.expected)
                if ratio > 1:
                    seen.setdefault(name, []).append(ratio)
                else:
                    invisible_worst = max(invisible_worst, ratio)
    with capsys.disabled():
        print(f"\n{function}: correct solution at most {worst_correct:.2g} x tolerance; mistakes, least seen "
              f"{min(min(r) for r in seen.values()):.2g} x tolerance; unseen ones at most {invisible_worst:.2g}")
    assert worst_correct <= CORRECT_AT_MOST
    assert invisible_worst <= INVISIBLE_AT_MOST
    expected_names = {"wrong-path", "constant-rows"} if function == "hide_path" else \
        {m.name for m in assignment.mistakes if m.function == function}
    assert set(seen) == expected_names
    for name, ratios in seen.items():
        assert min(ratios) >= SEEN_AT_LEAST, f"{name} is off by only {min(ratios):.3g} tolerances"


def test_hide_path_judge_rejects_the_zero_gradient_by_its_rows_not_its_tolerance():
    case = load("02-chain-rule").cases_of("hide_path")[0]
    trial = case.make(case_rng(1, case, "cpu"), "cpu")
    problems = trial.judge(np.zeros_like(trial.args[0]), trial.expected)
    assert problems and "largest |dy| must be between 0.5 and 1" in problems[0]
    assert not trial.judge(np.zeros_like(trial.args[0]), {"zero": True})


def test_hide_path_a_row_just_below_the_bound_is_shown_below_it():
    """0.5 / max |row| * row peaks at 0.49999999999999994, which 3 digits showed as 0.5: "between 0.5 and 1: 0.5"."""
    case = load("02-chain-rule").cases_of("hide_path")[0]
    trial = case.make(case_rng(1, case, "cpu"), "cpu")
    dy = np.random.default_rng(0).standard_normal(trial.args[0].shape)
    top = 0.8823814699152238
    dy[0] = np.full(dy.shape[1], top) * (0.5 / top)  # one row's largest |dy| a hair below 0.5
    dy[1:] /= np.abs(dy[1:]).max(axis=1, keepdims=True)
    assert np.abs(dy[0]).max() == 0.49999999999999994
    problems = trial.judge(dy, trial.expected)
    assert "row 0's is 0.49999999999999994 (1 of" in problems[0]


# --- the book holds no answer --------------------------------------------------------------------

CHAPTERS = {"01-forward": "01-forward.md", "02-chain-rule": "02-chain-rule.md",
            "03-variance-derivative": "03-variance-derivative.md"}


def chapter_functions(page: str) -> dict:
    """Every function a chapter's code cells define, after running them all in one namespace."""
    cells = chapter_cells(ROOT / "chapters" / page)
    namespace: dict = {"__name__": "chapter"}
    import matplotlib.pyplot as plt

    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        for source in cells:
            exec(compile(source, page, "exec"), namespace)
    plt.close("all")
    return {name: value for name, value in namespace.items()
            if callable(value) and getattr(value, "__module__", None) == "chapter" and not isinstance(value, type)}


def _timeout(signum, frame):
    raise TimeoutError("too slow")


@pytest.mark.parametrize("assignment", list(CHAPTERS))
def test_the_chapters_code_offered_under_the_added_names_scores_nothing(assignment):
    functions = chapter_functions(CHAPTERS[assignment])
    assert functions, "the chapter defines no function: the check would pass vacuously"
    cases = load(assignment)
    passed = []
    old = signal.signal(signal.SIGALRM, _timeout)
    try:
        for added in NUMPY_ADDED[assignment]:
            for name, candidate in functions.items():
                for case in cases.cases_of(added, hidden=True):
                    trial = case.make(case_rng(3, case, "cpu"), "cpu")
                    error, returned = None, None
                    signal.alarm(10)
                    try:
                        with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
                            returned = calling.invoke(trial.protocol, candidate, trial.args, trial.kwargs)
                    except Exception as e:  # noqa: BLE001 (a misfit raises; that is a failed test)
                        error = f"{type(e).__name__}: {e}"
                    finally:
                        signal.alarm(0)
                    try:
                        problems = evaluate(trial, returned, trial.args, error)
                    except Exception:  # noqa: BLE001 (a result too odd to judge is a failure too)
                        problems = ["unjudgeable"]
                    if not problems:
                        passed.append(f"{name} as {case.id}")
    finally:
        signal.signal(signal.SIGALRM, old)
    assert passed == []


# --- points -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("assignment", list(NUMPY_ADDED))
def test_added_functions_carry_at_least_half_of_the_points(assignment):
    cases = load(assignment)
    added = sum(cases.points_of(f) for f in NUMPY_ADDED[assignment])
    assert 2 * added >= cases.max_score


def test_a_mistake_whose_output_is_right_on_a_case_is_not_named_there():
    """With one channel a group GroupNorm is InstanceNorm, with one group it is LayerNorm over (C, H, W), and
    on constant inputs y is beta whatever the statistics: an answer that failed those cases for another
    reason (here a cache that keeps the statistics' last axis) was told it had made those slips."""
    from helpers import solution_source

    source = solution_source("01-forward", "groupnorm_forward")
    assert '"mean": mu[..., 0], "rstd": rs[..., 0]' in source
    source = source.replace('"mean": mu[..., 0], "rstd": rs[..., 0]', '"mean": mu, "rstd": rs')
    verdict = judged("01-forward", "groupnorm_forward", source)
    assert verdict and all(any("should have shape" in p for p in problems) for problems in verdict.values())
    named = {case: p for case, problems in verdict.items() for p in problems if "known mistake" in p}
    assert not named, named


def test_rmsnorm_jacobian_of_one_value_names_no_layernorm_slip():
    """At D = 1 LayerNorm's Jacobian (the mean subtracted) is 0, and so is every answer that drops eps: it was
    named for all of them, sending a student after a mean they never subtracted."""
    dropped_eps = code("rmsnorm_jacobian", {"r": "1 / np.sqrt(ms)"})
    fails = failed({("rmsnorm_jacobian", "eps"): judged("03-variance-derivative", "rmsnorm_jacobian", dropped_eps)},
                   "rmsnorm_jacobian", "eps")
    assert "rmsnorm_jacobian/one-value" in fails
    assert "known mistake" not in fails["rmsnorm_jacobian/one-value"][1], fails["rmsnorm_jacobian/one-value"][1]


def test_hide_paths_feedback_does_not_hand_over_a_paths_condition():
    """The task is finding which dy hides each path; a named mistake under one path's test used to state both
    conditions (rows of g summing to zero, or orthogonal to x_hat), the other path's 10 points for free."""
    for m in load("02-chain-rule").mistakes:
        if m.function == "hide_path":
            assert "sum to zero" not in m.message and "orthogonal" not in m.message, m.name


def test_hide_path_a_random_dy_fails_every_case_even_the_constant_rows():
    """On a row of equal values x_hat is zero and every dy hides the variance's path: the constant-row cases hold
    ordinary rows beside those, so that no case gives its point to a dy that hides nothing."""
    rng = np.random.default_rng(0)
    for case in load("02-chain-rule").cases_of("hide_path", hidden=True):
        trial = case.make(np.random.default_rng(1), "cpu")
        dy = rng.uniform(-1.0, 1.0, trial.args[0].shape)
        dy /= np.abs(dy).max(axis=1, keepdims=True)
        assert trial.judge(dy.astype(trial.args[0].dtype), trial.expected), case.name
