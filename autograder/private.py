"""Private test cases: an instructor's own Cases and Mistakes, kept outside the public repository.

The repository is public, hidden tests included, so an instructor who wants
tests no student has seen writes them in a Python file of their own, e.g.

    # ~/course-private/extra_cases.py
    from normgrad.cases import Case
    from normgrad.cases.forward import make_trial

    CASES = {
        "01-forward": [
            Case("layernorm_forward", "private-long-rows", 2, True, "rows of 1000 features",
                 make_trial("layer", (3, 1000))),
        ],
    }
    MISTAKES = {}   # the same shape: assignment id -> [Mistake, ...]

and passes it to the grader (`--private FILE`, or the environment variable
AUTOGRADER_PRIVATE). Private cases run exactly like the course's: inputs from
the run's secret seed, the same sandbox, the same judging. They must be
hidden, must test a function the assignment has, and must not reuse a
case's name. The file is read by the grader only; the sandbox never sees it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

from normgrad.cases import Assignment, Case, Mistake

ENV = "AUTOGRADER_PRIVATE"


class PrivateCasesError(ValueError):
    """The private cases file cannot be used; the message says why."""


@lru_cache(maxsize=None)
def load_file(path: str) -> tuple[dict, dict]:
    """(CASES, MISTAKES) of a private cases file, each a dict: assignment id -> list."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise PrivateCasesError(f"no private cases file at {file}")
    spec = importlib.util.spec_from_file_location(f"autograder_private_{abs(hash(str(file)))}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise PrivateCasesError(f"{file} failed to load: {type(e).__name__}: {e}") from None
    cases, mistakes = getattr(module, "CASES", {}), getattr(module, "MISTAKES", {})
    if not isinstance(cases, dict) or not isinstance(mistakes, dict):
        raise PrivateCasesError(f"{file}: CASES and MISTAKES must be dicts of assignment id -> list")
    return cases, mistakes


def resolve(path: str | None) -> str | None:
    """The private cases file to use: the one given, else $AUTOGRADER_PRIVATE, else none."""
    return path or os.environ.get(ENV) or None


def with_private(assignment: Assignment, path: str | None) -> Assignment:
    """The assignment with the private file's cases and mistakes for it added (checked)."""
    path = resolve(path)
    if path is None:
        return assignment
    cases, mistakes = load_file(path)
    extra_cases = list(cases.get(assignment.id, []))
    extra_mistakes = list(mistakes.get(assignment.id, []))
    known = {c.id for c in assignment.cases}
    for case in extra_cases:
        if not isinstance(case, Case):
            raise PrivateCasesError(f"{path}: CASES[{assignment.id!r}] holds {type(case).__name__}, not a Case")
        if case.function not in assignment.functions:
            raise PrivateCasesError(f"{path}: private case {case.id} tests {case.function}, which "
                                    f"{assignment.id} does not have ({', '.join(assignment.functions)})")
        if not case.hidden:
            raise PrivateCasesError(f"{path}: private case {case.id} must be hidden (hidden=True)")
        if case.id in known:
            raise PrivateCasesError(f"{path}: private case {case.id} reuses a case's name")
        if not isinstance(case.hint, str):  # said beside the problems of every student it fails
            raise PrivateCasesError(f"{path}: private case {case.id} has a hint that is not a string")
        known.add(case.id)
    for mistake in extra_mistakes:
        if not isinstance(mistake, Mistake) or mistake.function not in assignment.functions:
            raise PrivateCasesError(f"{path}: MISTAKES[{assignment.id!r}] must hold Mistakes of "
                                    f"{', '.join(assignment.functions)}")
    return dataclasses.replace(assignment, cases=assignment.cases + tuple(extra_cases),
                               mistakes=assignment.mistakes + tuple(extra_mistakes))
