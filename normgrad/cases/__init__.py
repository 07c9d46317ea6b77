"""Each exercise's test cases, defined once for the notebook and for the grader.

A `Case` makes one call of a student's function from a seed (the inputs), says
what the call must return (from the float64 oracle) and how to judge it, and
how many points it is worth. A `Mistake` is a known wrong implementation; when
a wrong answer matches one, the feedback names it and points to the section of
the book that explains it.

Two runners share them:

- `run_tests`, in the exercise notebook's test cells, calls the student's
  function in the student's own kernel and raises on failure (nbgrader's way);
- the autograder runs the student's code in a sandbox, brings the results back
  as plain arrays and judges them here, with `evaluate` and `diagnose`.

Each assignment is a module of this package with `CASES` and `MISTAKES`;
`ASSIGNMENTS` maps the ids of COURSE_API.md to them.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import secrets
import sys
import warnings
import zlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np

from .. import calling
from ..checks import as_float64, unmodified_problems

# Where the book is published: _config.yml's `html: baseurl:`, which a test holds this to. The installed
# library cannot read the book's config, and a notebook's own tests link into it.
BOOK = "https://normgrad-course.github.io/normgrad/"

ASSIGNMENTS = {
    "01-forward": "normgrad.cases.forward",
    "02-chain-rule": "normgrad.cases.chain_rule",
    "03-variance-derivative": "normgrad.cases.variance",
    "04-code-mapping": "normgrad.cases.code_mapping",
    "05-thnn": "normgrad.cases.thnn",
    "06-triton": "normgrad.cases.triton_backward",
}


@dataclass(frozen=True)
class Trial:
    """One call: its arguments, what it must return, and how to judge what it did return."""

    args: tuple
    expected: Any
    judge: Callable[[Any, Any], list[str]]  # (returned, expected) -> problems, [] when right
    arg_names: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)
    protocol: str = "call"


@dataclass(frozen=True)
class Case:
    function: str  # the name the student's code must define
    name: str  # short and unique within the function, e.g. "tiny-variance"
    points: float
    hidden: bool
    description: str  # what the case tries, in a few words, shown in reports
    make: Callable[[np.random.Generator, str], Trial]  # (rng, device) -> Trial
    devices: tuple[str, ...] = ("cpu",)  # where it runs; "cuda" only when a GPU is present
    seconds: float = 10.0  # the time one call may take in the grader's sandbox before it counts as a failure
    # What a wrong value here most often means, said where no known mistake matches it: a slip that no float64
    # emulation reproduces (16-bit arithmetic in a kernel rounds in an order torch cannot replay) is told so.
    hint: str = ""

    @property
    def id(self) -> str:
        return f"{self.function}/{self.name}"


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation of `function`, in float64, with what it teaches."""

    function: str
    name: str
    message: str  # completes "Your result matches ..."
    section: str  # the book page and anchor that explains it, e.g. "01-forward.html#slips"
    # None for a mistake that shows as an error, not as a wrong value. An impl whose attribute `fitted` is true
    # stands for a family of slips with a parameter the student chose (a chunk width, a number of programs):
    # `diagnose` passes it the answer as `returned=`, and it returns the member the answer sits nearest, judged
    # then as any other.
    impl: Callable | None
    raises: str | None = None  # a pattern of the error text it shows as (see `diagnose_error`)

    @property
    def link(self) -> str:
        """The section's address in the published book (or in NORMGRAD_BOOK's, as the notebooks' set-up cell
        reads it): a notebook opened on Colab or from a download cannot follow a link relative to the book."""
        return os.environ.get("NORMGRAD_BOOK", BOOK).rstrip("/") + "/chapters/" + self.section


@dataclass(frozen=True)
class Assignment:
    id: str
    cases: tuple[Case, ...]
    mistakes: tuple[Mistake, ...]

    @property
    def functions(self) -> list[str]:
        return list(dict.fromkeys(c.function for c in self.cases))

    def cases_of(self, function: str, hidden: bool | None = None) -> list[Case]:
        return [c for c in self.cases if c.function == function and (hidden is None or c.hidden == hidden)]

    def points_of(self, function: str) -> float:
        return sum(c.points for c in self.cases_of(function))

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.cases)


def load(assignment_id: str) -> Assignment:
    """The cases and mistakes of an assignment, by its id ("01-forward", ...)."""
    if assignment_id not in ASSIGNMENTS:
        raise KeyError(f"unknown assignment {assignment_id!r}; known: {', '.join(ASSIGNMENTS)}")
    module = importlib.import_module(ASSIGNMENTS[assignment_id])
    ids = [c.id for c in module.CASES]
    assert len(ids) == len(set(ids)), f"duplicate case ids in {assignment_id}"
    return Assignment(assignment_id, tuple(module.CASES), tuple(module.MISTAKES))


def case_rng(seed: int, case: Case, device: str) -> np.random.Generator:
    """The generator of one case's inputs: the run's seed mixed with the case and device."""
    salt = zlib.crc32(f"{case.id}@{device}".encode())
    return np.random.default_rng([seed, salt])


VISIBLE_SEED = 20251123  # the visible tests show the same inputs on every run


def available_devices() -> set[str]:
    devices = {"cpu"}
    try:
        import torch

        if torch.cuda.is_available():
            devices.add("cuda")
    except ImportError:
        pass
    return devices


def evaluate(trial: Trial, returned, args_after, error: str | None) -> list[str]:
    """Everything wrong with one call, from what it returned (or raised) and what it left behind."""
    if error is not None:
        return [f"raised an exception:\n{error.rstrip()}"]
    problems = trial.judge(returned, trial.expected)
    for name, before, after in zip(trial.arg_names, trial.args, args_after or [None] * len(trial.args)):
        problems += unmodified_problems(before, after, name)
    return problems


MATCH_TOLERANCES = (1, 2, 4)  # how many of the case's tolerances a wrong answer may sit from a mistake it matches
NEARER_BY = 8  # beyond one tolerance, it must sit this many times nearer the mistake than the right answer


def loosened(judge, factor: float):
    """`judge` with its tolerance (one, or one per output) multiplied by `factor`; as it is if it has none."""
    rtol = _rtol(judge)
    if rtol is None or factor == 1:
        return judge
    rtol = tuple(r * factor for r in rtol) if isinstance(rtol, (tuple, list)) else rtol * factor
    return partial(judge.func, *judge.args, **{**judge.keywords, "rtol": rtol})


def diagnose(assignment: Assignment, function: str, trial: Trial, returned) -> Mistake | None:
    """The known mistake whose output the wrong answer matches, if any: the one it sits nearest.

    A mistake is run in float64, and a student's copy of it makes its own roundings besides (in 16-bit
    arithmetic, at every step), so a match may allow a few tolerances, where the answer sits far
    nearer the mistake than the right answer. Two mistakes can lie close together (16-bit statistics
    and 16-bit arithmetic, at a large mean): the nearer one names the answer.
    """
    wrongs = []
    args = None  # one float64 copy for every mistake (none writes into its arguments: tests/test_exercises.py)
    for mistake in assignment.mistakes:
        if mistake.function != function or mistake.impl is None:
            continue
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a mistake may well divide by zero
                args = _float64(trial.args) if args is None else args
                fitted = {"returned": returned} if getattr(mistake.impl, "fitted", False) else {}
                wrongs.append((mistake, mistake.impl(*args, **trial.kwargs, **fitted)))
        except Exception:  # a mistake that cannot apply to these inputs matches nothing
            continue
    # A mistake whose output passes this case cannot be what failed it: on a group of one channel GroupNorm
    # is InstanceNorm, on constant rows y is beta whatever the statistics. Naming it there told a student
    # whose answer failed for another reason (a cache's shape, a modified input) of a slip they had not made.
    rtol = _smallest_rtol(trial.judge)
    wrongs = [(mistake, wrong) for mistake, wrong in wrongs if not _passes(wrong, trial.expected, rtol)]
    for factor in MATCH_TOLERANCES:
        judge = loosened(trial.judge, factor)
        if factor > 1 and not loosened(trial.judge, factor * NEARER_BY)(returned, trial.expected):
            return None  # about as near the right answer: no mistake explains it
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for mistake, wrong in wrongs:
                if not judge(returned, wrong):
                    return mistake
    return None


COINCIDE = 1e-9  # where a judge names no tolerance: outputs this near the right one are the same answer


def _rtol(judge):
    """A judge's tolerance, one or one per output; None for a judge that names none."""
    return getattr(judge, "keywords", {}).get("rtol")


def _smallest_rtol(judge) -> float:
    rtol = _rtol(judge)
    if rtol is None:
        return COINCIDE
    return min(rtol) if isinstance(rtol, (tuple, list)) else rtol


def _passes(wrong, expected, rtol: float) -> bool:
    """Is a mistake's output the right answer on this case, within `rtol` of each array's largest entry?
    The entries a mistake leaves None are not compared. It errs towards "no" (no floors, the smallest of a
    judge's tolerances), which keeps a mistake among the candidates, as before."""
    if wrong is None:
        return True
    if isinstance(expected, dict):  # a key the mistake lacks, or adds, is a difference; one it sets to None is not
        return (isinstance(wrong, dict) and set(wrong) == set(expected)
                and all(_passes(wrong[k], v, rtol) for k, v in expected.items()))
    if isinstance(expected, (tuple, list)):
        return (isinstance(wrong, (tuple, list)) and len(wrong) == len(expected)
                and all(_passes(w, e, rtol) for w, e in zip(wrong, expected)))
    if expected is None:
        return False
    try:
        w, e = as_float64(wrong), as_float64(expected)
    except (TypeError, ValueError):
        try:
            return bool(wrong == expected)
        except Exception:  # an array-like that compares element by element, or not at all
            return False
    if w.shape != e.shape:
        return False
    with np.errstate(all="ignore"):
        worst = float(np.max(np.abs(w - e), initial=0.0))
    return worst <= rtol * max(float(np.max(np.abs(e), initial=0.0)), np.finfo(np.float64).tiny)


def diagnose_error(assignment: Assignment, function: str, error: str) -> Mistake | None:
    """The known mistake that shows as this error (an exception's text, or how the process ended)."""
    for mistake in assignment.mistakes:
        if mistake.function == function and mistake.raises and re.search(mistake.raises, error):
            return mistake
    return None


def _float64(args):
    """Arguments as float64 on the CPU, for running a mistake as the oracle is run."""
    out = []
    for a in args:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            a = a.astype(np.float64)
        elif isinstance(a, dict):
            a = dict(zip(a, _float64(a.values())))
        elif type(a).__module__ == "torch" and hasattr(a, "is_floating_point") and a.is_floating_point():
            import torch

            a = a.detach().to("cpu", torch.float64)
        out.append(a)
    return out


class TestsFailed(AssertionError):
    """Raised by `run_tests` in a notebook: the message lists every failed case."""


def run_tests(assignment_id: str, function: str, target, hidden: bool = False, seed: int | None = None) -> None:
    """Run the cases of `function` against `target` in this process, print a line per case.

    Visible cases use fixed inputs, so a student sees the same failure on every
    run; hidden cases draw a fresh seed unless one is given. Raises TestsFailed
    (an AssertionError) listing what failed, which is how nbgrader scores a cell.
    """
    if seed is None:
        seed = secrets.randbits(63) if hidden else VISIBLE_SEED
    failures = []
    for case, device, where, problems in _judged(load(assignment_id), function, target, hidden, seed):
        print(f"{'PASS' if not problems else 'FAIL'}  {case.id}{where}: {case.description}")
        if problems:
            failures.append(f"{case.id}{where}:\n  " + "\n  ".join(problems))
    if failures:
        raise TestsFailed(f"{len(failures)} test(s) of {function} failed:\n" + "\n".join(failures))


def judge(assignment_id: str, function: str, target, seed: int = VISIBLE_SEED, isolated: bool = True,
          names: set[str] | None = None) -> dict[str, list[str]]:
    """Every case of `function`, visible and hidden, against `target` in this process, as `run_tests` runs
    them: "case id" (with " [device]" where a case has several) -> its problems, each known mistake named.

    The course's own tests judge wrong answers with it, without a sandbox: their code is trusted, and
    unless `isolated`, a Triton kernel is trusted not to crash the interpreter, so no test is forked off.
    `names` keeps only the cases of those names (a test that asks about some cases need not pay for all).
    """
    assignment = load(assignment_id)
    unknown = set(names or ()) - {c.name for c in assignment.cases_of(function)}
    if unknown:
        raise KeyError(f"{function} has no case named {', '.join(sorted(unknown))}")
    return {case.id + where: problems
            for case, device, where, problems in _judged(assignment, function, target, None, seed, isolated, names)}


def _judged(assignment: Assignment, function: str, target, hidden: bool | None, seed: int, isolated: bool = True,
            names: set[str] | None = None):
    """(case, device, " [device]" or "", problems) for each case of `function` on each device at hand."""
    devices = available_devices()
    if _interpreting_triton():
        calling.fit_triton_interpreter()  # an older Triton's interpreter beside a newer NumPy
    stopped = False  # a test ran out of time: an endless loop will not end the next time either (as the grader)
    for case in [c for c in assignment.cases_of(function, hidden=hidden) if names is None or c.name in names]:
        for device in [d for d in case.devices if d in devices]:
            where = f" [{device}]" if len(case.devices) > 1 else ""
            if stopped:
                yield case, device, where, [f"not run: an earlier test of {function} ran out of time"]
                continue
            if isolated and device == "cpu" and _interpreting_triton() and hasattr(os, "fork"):
                # A kernel that reads or writes out of bounds can crash Triton's interpreter: run
                # each test in a child process, so a crash fails that test and the notebook goes on.
                from .child import in_child

                problems = in_child(lambda: _check(assignment, function, case, device, seed, target),
                                    case.seconds * 3)
                stopped = bool(problems) and problems[0].startswith("took longer than")
                mistake = diagnose_error(assignment, function, problems[0]) if len(problems) == 1 else None
                if mistake:  # the child could not name what killed it
                    problems.append(f"this matches a known mistake: {mistake.message} (see {mistake.link})")
            else:
                problems = _check(assignment, function, case, device, seed, target)
            yield case, device, where, problems


def _interpreting_triton() -> bool:
    """Triton's interpreter may run a kernel here. (Forking each test costs time: only where a kernel can
    crash the process, never for the NumPy and PyTorch exercises, whatever the environment says.)"""
    return os.environ.get("TRITON_INTERPRET") == "1" and "triton" in sys.modules


def _check(assignment: Assignment, function: str, case: Case, device: str, seed: int, target) -> list[str]:
    """One case on one device in this process: what is wrong, with the known mistake it matches."""
    trial = case.make(case_rng(seed, case, device), device)
    args = copy.deepcopy(trial.args)
    error, returned = None, None
    try:
        returned = calling.invoke(trial.protocol, target, args, copy.deepcopy(trial.kwargs))
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    problems = evaluate(trial, returned, args, error)
    if problems:
        mistake = diagnose(assignment, function, trial, returned) if error is None else \
            diagnose_error(assignment, function, error)
        if mistake:
            problems.append(f"this matches a known mistake: {mistake.message} (see {mistake.link})")
        problems += hint(case, error is None, mistake)
    return problems


def hint(case: Case, wrong_value: bool, mistake: Mistake | None) -> list[str]:
    """The case's hint, said where a call returned a wrong value (not an error) that matches no known mistake:
    the one rule for a notebook's own check and for the grader."""
    return [case.hint] if case.hint and wrong_value and mistake is None else []
