"""Helpers for the tests: building submissions from the release notebooks."""

from __future__ import annotations

import contextlib
import copy
import linecache
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import nbformat
import numpy as np

from autograder.cells import defined_names
from autograder.course import nbgrader_meta, notebooks, read, solved_release
from autograder.release import nbgrader  # noqa: F401  (the tests run nbgrader through it)
from normgrad.cases import VISIBLE_SEED, judge, loosened

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: this checkout first on PYTHONPATH, then what was there (on a GPU
    machine, the wheels that gpu-check carried and installed aside), then `extra`."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


@contextlib.contextmanager
def fallback_sandbox():
    """The fallback sandbox, and how a grader started from here gets the same: yields (box, python,
    pythonpath), where pythonpath is None if this Python serves; raises SandboxError, saying why, if none.

    Where the sandbox user can read neither this venv nor the Python it came from (a checkout in a folder
    of mode 0700, as CI's fresh clone is), the grader refuses the fallback. The wall does not depend on
    where site-packages lie: this Python's are then hard-linked (no copy) into a folder the sandbox user
    can read, and the system's Python of this version runs them, as it would for a grader whose own Python
    is unreadable; pythonpath gives a grader that Python starts this checkout and those site-packages.
    """
    from autograder import sandbox

    try:
        box, unreadable = sandbox.Sandbox("fallback"), ""
    except sandbox.SandboxError as e:
        box, unreadable = None, str(e)
    if box is not None:
        yield box, sys.executable, None
        return
    folder = Path(tempfile.mkdtemp(prefix="fallback-site-"))
    try:
        try:
            folder.chmod(0o755)
            own = sandbox.python_paths()
            links = {p: str(_link_tree(p, folder / str(i) / "site-packages")) for i, p in enumerate(own)
                     if os.path.basename(p) in ("site-packages", "dist-packages")}

            def moved(path: str) -> str:  # a folder inside a site-packages (setuptools' _vendor) moves with it
                source = next((s for s in links if path == s or path.startswith(s + os.sep)), None)
                return path if source is None else links[source] + path[len(source):]

            with mock.patch.object(sandbox, "python_paths", lambda: [moved(p) for p in own]):
                box = sandbox.Sandbox("fallback")  # only its construction looks for the interpreter
        except (OSError, sandbox.SandboxError) as e:  # hard links across file systems, no such Python
            raise sandbox.SandboxError(f"{unreadable}; and with its site-packages linked where it can read "
                                       f"them: {e}") from e
        yield box, box.python, os.pathsep.join([str(ROOT), *links.values()])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _link_tree(source: str, target: Path) -> Path:
    """`target`, a tree of hard links to the files under `source` (symbolic links copied as links)."""
    for dirpath, dirnames, filenames in os.walk(source):
        here = target / os.path.relpath(dirpath, source)
        here.mkdir(mode=0o755, parents=True, exist_ok=True)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                os.symlink(os.readlink(path), here / name)
            else:
                os.link(path, here / name)
    return target


def submission(assignment: str, answers: dict[str, str] | None = None, base=None) -> nbformat.NotebookNode:
    """The student release of `assignment` (or `base`), with the cell defining each named function replaced.

    `answers` maps a function (or class) name to the full source of its cell.
    """
    nb = copy.deepcopy(base if base is not None else read(notebooks(assignment).release))
    for name, source in (answers or {}).items():
        cells = [c for c in nb.cells if c.cell_type == "code" and name in defined_names(c.source)]
        assert cells, f"no cell of the {assignment} release defines {name}"
        cells[0].source = source
    return nb


def run_cell(source: str, name: str = "<cell>") -> dict:
    """A cell's code run in a fresh namespace, its lines kept where Triton's `@jit` and tracebacks look."""
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    namespace: dict = {"__name__": "__cell__"}
    exec(compile(source, name, "exec"), namespace)
    return namespace


def mutated(assignment: str, function: str, replacements: dict[str, str]) -> str:
    """The solution's cell of `function` with each of `replacements` made: a known mistake, as a student makes it."""
    source = solution_source(assignment, function)
    for old, new in replacements.items():
        assert old in source, f"the solution of {function} no longer contains {old!r}: update this mutant"
        source = source.replace(old, new)
    return source


def judged(assignment: str, function: str, source: str, seed: int = VISIBLE_SEED,
           isolated: bool = False, names: set[str] | None = None) -> dict[str, list[str]]:
    """Every case of `function` (hidden ones too) judged in this process against the code of one cell.

    For the course's own mutants and variants: trusted code, so no sandbox. "case id" -> its problems,
    with the known mistake named as the grader names it. One batch per exercise still goes through
    the sandbox (tests/test_exercises.py and the tests of the grader). `isolated`: each case of a Triton
    kernel in a child process, for a kernel that may crash the interpreter (as the notebook runs them).
    `names`: only the cases of those names.
    """
    target = run_cell(source, f"<{function}>")[function]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a mutant's NaN or division by zero: the sandbox kept those
        return judge(assignment, function, target, seed, isolated, names)


def failures(verdicts: dict[str, list[str]]) -> dict[str, list[str]]:
    """The failed cases of a `judged` verdict: case id -> its problems."""
    return {case: problems for case, problems in verdicts.items() if problems}


def case_names(case_ids) -> set[str]:
    """The cases' names alone, whatever the device: "layernorm_backward/float16-tall [cpu]" -> "float16-tall"."""
    return {case.split("/")[1].split(" [")[0] for case in case_ids}


def report(verdicts: dict[str, list[str]]) -> str:
    """The failed cases of a verdict as text: what assertion messages show and the named mistakes are found in."""
    return "\n".join(f"FAIL {case}:\n  " + "\n  ".join(problems) for case, problems in failures(verdicts).items())


def solution_source(assignment: str, function: str) -> str:
    """The source notebook's solution cell of `function`, markers removed: what mutants start from."""
    cell = next(c for c in read(notebooks(assignment).source).cells if nbgrader_meta(c).get("grade_id") == function)
    return "\n".join(line for line in cell.source.splitlines()
                     if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def solved(assignment: str) -> nbformat.NotebookNode:
    """The release notebook with every solution cell taken from the source notebook (hidden tests stay out)."""
    return solved_release(assignment)


def write(nb, root: Path, student: str, assignment: str) -> Path:
    """Save a notebook in nbgrader's submitted layout under root; returns its path."""
    folder = root / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / notebooks(assignment).name
    nbformat.write(nb, str(path))
    return path


def nbgrader_course(course: Path, assignments) -> str:
    """A throwaway nbgrader course root with the assignments generated into its gradebook; returns the db URL."""
    course.mkdir(parents=True, exist_ok=True)
    for assignment in assignments:
        done = nbgrader("generate_assignment", assignment, "--force", course=course)
        assert done.returncode == 0, done.stdout + done.stderr
    return f"sqlite:///{course / 'gradebook.db'}"


def verdicts(out: Path, student: str, assignment: str) -> dict[str, tuple[bool, bool, str]]:
    """case id -> (passed, hidden, the feedback lines of that case), read from a graded student's text feedback."""
    from normgrad.cases import load

    text = (out / "feedback" / student / assignment / (notebooks(assignment).source.stem + ".txt")).read_text()
    found, current = {}, None
    for line in text.splitlines():
        head = re.match(r"\s+(PASS|FAIL)\s+(visible|hidden)\s+(\S+)", line)
        if head:
            current = head.group(3)
            found[current] = (head.group(1) == "PASS", head.group(2) == "hidden", line)
        elif current and line.startswith("          "):
            passed, hidden, block = found[current]
            found[current] = (passed, hidden, block + "\n" + line)
    assert len(found) == len(load(assignment).cases), text
    return found


CHAPTER_6 = (ROOT / "normgrad" / "triton_layernorm.py").read_text()  # the ladder's code, as the book shows it


# layernorm_forward with gamma forgotten: a known mistake of exercise 01, which feedback must name
GAMMA_FORGOTTEN = '''import numpy as np


def layernorm_forward(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=1)
    c = x - mean[:, None]
    rstd = 1 / np.sqrt((c * c).mean(axis=1) + eps)
    x_hat = c * rstd[:, None]
    return x_hat + beta, {"x": x, "mean": mean, "rstd": rstd, "x_hat": x_hat, "gamma": gamma, "eps": eps}
'''


def chapter_cells(page) -> list[str]:
    """The sources of a chapter's code cells (a MyST page), without their option lines (`:tags: ...`)."""
    text = Path(page).read_text()
    return ["\n".join(line for line in cell.splitlines() if not line.startswith(":"))
            for cell in re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", text, re.S | re.M)]


def times_tolerance(trial, returned, expected=None) -> float:
    """The least multiple of the trial's tolerance that accepts `returned` (within 2**-20; inf: none does)."""
    expected = trial.expected if expected is None else expected

    def accepted(factor: float) -> bool:
        with np.errstate(all="ignore"):
            return not loosened(trial.judge, factor)(returned, expected)

    low, high = 1e-8, 1e24
    if accepted(low):
        return low
    if not accepted(high):
        return math.inf
    for _ in range(40):
        middle = math.sqrt(low * high)
        low, high = (low, middle) if accepted(middle) else (middle, high)
    return high


# --- the added functions' mistakes: their margins, and mutants named (test_04_06_added, test_06_added) ---

def as_returned(trial, wrong):
    """A float64 mistake's output in the dtypes the judge expects of a student's."""
    import torch

    keywords = trial.judge.keywords
    if "dtypes" in keywords:
        dtypes = keywords["dtypes"]
    else:
        dtypes = (keywords["dtype"],) * (len(wrong) if isinstance(wrong, tuple) else 1)
    if not isinstance(wrong, tuple):
        return torch.from_numpy(np.asarray(wrong)).to(dtypes[0])
    return tuple(None if w is None else torch.from_numpy(np.asarray(w)).to(d) for w, d in zip(wrong, dtypes))


def mistake_excess(assignment, function, mistake, case_name, seed):
    """How many of the case's tolerances the first mistake of that name is off by (> 1 fails)."""
    from normgrad.cases import _float64, case_rng, load

    cases = load(assignment)
    case = next(c for c in cases.cases_of(function) if c.name == case_name)
    known = [m for m in cases.mistakes if m.function == function and m.name == mistake]
    trial = case.make(case_rng(seed, case, "cpu"), "cpu")
    wrong = as_returned(trial, known[0].impl(*_float64(trial.args)))
    if trial.protocol == "shards":  # as the protocol returns it, the right sums (its last two arguments) added
        wrong = (wrong, trial.args[-2:], wrong)
    return times_tolerance(trial, wrong)


def correct_excess(assignment, function, case_name, seed, namespace, device="cpu"):
    """How many of the case's tolerances `namespace[function]` is off by (< 1 passes)."""
    from normgrad import calling
    from normgrad.cases import case_rng, load

    case = next(c for c in load(assignment).cases_of(function) if c.name == case_name)
    trial = case.make(case_rng(seed, case, device), device)
    returned = calling.invoke(trial.protocol, namespace[function], copy.deepcopy(trial.args), {})
    return times_tolerance(trial, returned)


def known_mistake(assignment: str, function: str, name: str):
    from normgrad.cases import load

    return next(m for m in load(assignment).mistakes if m.function == function and m.name == name)


def judged_answers(submissions: dict, beside: dict[str, str] | None = None, skip=()) -> dict:
    """(assignment, student, function) -> case id -> its problems, for submissions of the form
    assignment -> student -> function -> (the mistake it makes or None, a maker of its source). `beside`:
    function -> the function whose student cell runs before it (a protocol calls both)."""
    from normgrad import triton_layernorm  # noqa: F401  (without CUDA, Triton's interpreter, before any @jit)

    beside = beside or {}

    def source(answers, function):
        cells = [answers[beside[function]], answers[function]] if function in beside else [answers[function]]
        return "\n\n\n".join(make() for _, make in cells)

    return {(assignment, student, function): judged(assignment, function, source(answers, function))
            for assignment, students in submissions.items() for student, answers in students.items()
            for function in answers if (assignment, student, function) not in skip}


def named_mistakes(submissions: dict, skip=()) -> list[tuple[str, str, str, str]]:
    """(assignment, student, function, mistake) of every answer that makes a named mistake."""
    return [(a, s, f, m) for a, students in submissions.items() for s, answers in students.items()
            for f, (m, _) in answers.items() if m is not None and (a, s, f) not in skip]


def assert_rejected_and_named(verdict: dict, assignment: str, function: str, mistake: str, name_it: bool = True):
    """The answer fails a case, and (`name_it`) some failed case names the mistake with its section."""
    mine = {case: problems for case, problems in verdict.items() if problems}
    assert mine, f"{function} with {mistake} was not rejected"
    if name_it:
        known = known_mistake(assignment, function, mistake)
        diagnosis = f"{known.message} (see {known.link})"
        named = [case for case, problems in mine.items() if any(diagnosis in problem for problem in problems)]
        assert named, f"{mistake} was not named with its section:\n{mine}"


def assert_pastes_score_nothing(verdicts: dict, submissions: dict, assignment: str):
    """Each "pasted" answer (a chapter's code under an added name) fails every case of its function."""
    for function in submissions[assignment]["pasted"]:
        verdict = verdicts[assignment, "pasted", function]
        assert verdict, f"no test of {function} ran"
        assert not [case for case, problems in verdict.items() if not problems], verdict
