"""Every exercise, whatever its chapter: the source notebook, its release, and their agreement
with the test cases of normgrad.cases and with the exercise API (COURSE_API.md)."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest
from nbclient import NotebookClient

from autograder import release
from autograder.cells import defined_names, slots
from autograder.course import EXERCISES, SOLUTIONS, nbgrader_meta, notebooks, read
from autograder.grading import grade
from normgrad.cases import ASSIGNMENTS, load

# The public contract: which functions each assignment asks for (COURSE_API.md).
CONTRACT = {
    "01-forward": {"layernorm_forward", "batchnorm_forward", "groupnorm_forward", "rmsnorm_forward"},
    "02-chain-rule": {"layernorm_backward_staged", "batchnorm_backward_staged", "layernorm_grad_paths",
                      "groupnorm_backward", "hide_path"},
    "03-variance-derivative": {"variance_grad", "layernorm_jacobian", "rmsnorm_jacobian"},
    "04-code-mapping": {"layernorm_backward", "batchnorm_backward", "LayerNormFunction",
                        "rmsnorm_backward", "BatchNormFunction", "expose_var_without_eps"},
    "05-thnn": {"batchnorm_backward_thnn", "shard_sums", "shard_grad_in"},
    "06-triton": {"layernorm_dx_triton", "layernorm_backward_triton", "rmsnorm_backward_triton"},
}

assignments = pytest.mark.parametrize("assignment", list(ASSIGNMENTS))


@assignments
def test_cases_cover_the_contract(assignment):
    cases = load(assignment)
    assert set(cases.functions) == CONTRACT[assignment]
    for function in cases.functions:
        assert cases.cases_of(function, hidden=False), f"{function} has no visible test"
        assert cases.cases_of(function, hidden=True), f"{function} has no hidden test"


@assignments
def test_each_function_has_its_own_solution_cell_and_a_test_cell_worth_its_cases(assignment):
    cases = load(assignment)
    source = read(notebooks(assignment).source)
    defined = [set(s.names) for s in slots(source)]
    for function in cases.functions:
        assert sum(function in names for names in defined) == 1, f"{function} needs one solution cell"
    tests = {nbgrader_meta(c)["grade_id"]: c for c in source.cells if nbgrader_meta(c).get("grade")}
    assert set(tests) == {f"test_{f}" for f in cases.functions}
    for function in cases.functions:
        cell = tests[f"test_{function}"]
        assert nbgrader_meta(cell)["points"] == cases.points_of(function)
        visible, _, hidden = cell.source.partition("### BEGIN HIDDEN TESTS")
        assert f'run_tests("{assignment}", "{function}", {function})' in visible
        assert f'run_tests("{assignment}", "{function}", {function}, hidden=True)' in hidden


@assignments
def test_source_notebook_runs_top_to_bottom(assignment):
    path = notebooks(assignment).source
    nb = read(path)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []


@assignments
def test_source_notebook_scores_full_marks_through_the_autograder(assignment):
    report = grade(notebooks(assignment).source, assignment)
    failed = {r.case_id: r.problems for r in report.results if not r.passed}
    assert failed == {} and report.notes == []
    assert report.score == report.max_score == load(assignment).max_score > 0


@assignments
def test_unmodified_release_scores_zero_and_says_why(assignment):
    report = grade(notebooks(assignment).release, assignment)
    assert report.score == 0 and report.max_score > 0
    assert all("NotImplementedError" in " ".join(r.problems) for r in report.results)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Every assignment's release as nbgrader generates it now, two nbgrader processes at a time."""
    out = tmp_path_factory.mktemp("release")
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(ASSIGNMENTS, pool.map(lambda a: release.generate(a, out / a), ASSIGNMENTS)))


@assignments
def test_release_is_exactly_what_nbgrader_generates(assignment, generated):
    fresh = generated[assignment]
    committed = notebooks(assignment).release
    assert json.loads(fresh.read_text()) == json.loads(committed.read_text()), \
        "exercises/ is stale: run `make release` and commit the result"


def test_release_holds_no_solution_code_and_no_hidden_tests():
    for path in EXERCISES.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore")
            for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "hidden=True"):
                assert marker not in text, f"{path} contains {marker!r}"
    for assignment in ASSIGNMENTS:
        release_text = notebooks(assignment).release.read_text()
        for line in solution_lines(assignment):
            assert line not in release_text, f"solution code in the release of {assignment}: {line!r}"


# Lines that say nothing of how a solution works: returning the names the contract gives, imports.
CONTRACT_LINE = re.compile(r"^(return [\w ,()]+|(from \S+ )?import [\w ,.]+( as \w+)?)$")


def solution_lines(assignment: str) -> set[str]:
    """The distinctive lines between BEGIN SOLUTION and END SOLUTION of an assignment's source."""
    lines = set()
    for cell in read(notebooks(assignment).source).cells:
        for region in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", cell.source, re.S):
            for line in region.splitlines():
                code = line.split("#")[0].strip()
                if len(code) >= 16 and not CONTRACT_LINE.match(code):
                    lines.add(code)
    return lines


def test_notebooks_are_committed_without_outputs():
    for path in [*SOLUTIONS.rglob("*.ipynb"), *EXERCISES.rglob("*.ipynb")]:
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path} has outputs"


@assignments
def test_solution_cells_define_what_the_contract_names(assignment):
    defined = set().union(*(defined_names(c.source) for c in read(notebooks(assignment).source).cells
                            if nbgrader_meta(c).get("solution")))
    assert CONTRACT[assignment] <= defined


@assignments
def test_no_known_mistake_writes_into_its_arguments(assignment):
    """`diagnose` hands every mistake the same float64 copy of a case's arguments (one conversion, not one a
    mistake: on a GPU, each was a copy of the whole input to the host), so none may write into it."""
    import copy
    import warnings

    import numpy as np

    from normgrad.cases import _float64, case_rng
    from normgrad.checks import unmodified_problems

    cases = load(assignment)
    ran = 0
    for case in cases.cases:
        mistakes = [m for m in cases.mistakes if m.function == case.function and m.impl is not None]
        if not mistakes:
            continue
        trial = case.make(case_rng(1, case, "cpu"), "cpu")
        args = _float64(trial.args)
        before = copy.deepcopy(args)
        for mistake in mistakes:
            fitted = {"returned": trial.expected} if getattr(mistake.impl, "fitted", False) else {}
            try:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a mistake may divide by zero, or by N - 1 = 0
                    mistake.impl(*args, **trial.kwargs, **fitted)
                ran += 1
            except Exception:  # a mistake that cannot apply to these inputs (diagnose skips it too)
                pass
            for name, b, a in zip(trial.arg_names, before, args):
                assert unmodified_problems(b, a, name) == [], (case.id, mistake.name)
    assert ran > 0
