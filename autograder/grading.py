"""Grading one submission: pick its code, run it in the sandbox, judge what comes back.

The score is computed here, on the trusted side, from plain data: the student's
process only ever sees the inputs of each call, generated from a seed drawn
for this run, and never the expected values.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from normgrad import cases as course_cases

from . import sandbox, wire
from .cells import SubmissionError, pick, read_submission
from .course import notebooks


@dataclass
class CaseResult:
    case_id: str
    description: str
    points: float
    earned: float
    hidden: bool
    problems: list[str] = field(default_factory=list)
    mistake: course_cases.Mistake | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Report:
    """Everything known about one graded notebook: the score and why."""

    student: str
    assignment: str
    notebook: str
    max_score: float
    results: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # problems with the notebook as a whole
    isolation: str = ""

    @property
    def score(self) -> float:
        return sum(r.earned for r in self.results)


def grade(path: Path, assignment_id: str, student: str = "", seed: int | None = None,
          devices: set[str] | None = None, limits: sandbox.Limits = sandbox.Limits()) -> Report:
    """Grade one notebook; never raises for anything the submission does."""
    assignment = course_cases.load(assignment_id)
    trusted = notebooks(assignment_id)
    report = Report(student, assignment_id, Path(path).name, assignment.max_score)
    seed = secrets.randbits(63) if seed is None else seed
    devices = course_cases.available_devices() if devices is None else devices

    def fail_all(reason: str) -> Report:
        report.notes.append(reason)
        report.results = [CaseResult(c.id, c.description, c.points, 0.0, c.hidden, [reason]) for c in assignment.cases]
        return report

    try:
        submission = read_submission(path)
    except SubmissionError as e:
        return fail_all(str(e))
    picked, problems = pick(submission, trusted)
    report.notes += problems

    # One call per case and device, under an opaque id: the ids say nothing about the case.
    calls = []
    for case in assignment.cases:
        for device in case.devices:
            if device in devices:
                trial = case.make(course_cases.case_rng(seed, case, device), device)
                calls.append((f"c{len(calls):03d}", case, device, trial))

    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        scratch = Path(tmp)
        job = scratch / "job"
        job.mkdir()
        uses_torch = False
        for call_id, case, device, trial in calls:
            wire.dump((list(trial.args), trial.kwargs), str(job / call_id))
            uses_torch |= _has_tensor(trial.args)
        cell_seconds = 60.0
        manifest = {
            "torch": uses_torch,
            "cell_seconds": cell_seconds,
            "cells": [{"label": p.label, "source": p.source} for p in picked],
            "calls": [{"id": cid, "function": case.function, "protocol": trial.protocol, "device": device,
                       "seconds": case.seconds} for cid, case, device, trial in calls],
        }
        (job / "job.json").write_text(json.dumps(manifest))
        # Without a GPU, Triton kernels run in its interpreter (one program at a time, on the CPU).
        env = {} if "cuda" in devices else {"TRITON_INTERPRET": "1"}
        # The whole job may take what its cells and calls may take, and a start-up's worth more.
        budget = 30.0 + cell_seconds * len(picked) + sum(case.seconds for _, case, _, _ in calls)
        limits = dataclasses.replace(limits, wall_seconds=min(limits.wall_seconds, budget))
        outcome = sandbox.run(scratch, env, limits=limits)
        report.isolation = outcome.isolation
        if outcome.timed_out:
            report.notes.append(f"the notebook's code ran longer than {limits.wall_seconds:.0f} s and was stopped; "
                                "tests that had not finished score 0")
        report.notes += _cell_errors(scratch / "out")
        per_case: dict[str, list[str]] = {c.id: [] for c in assignment.cases}
        mistakes: dict[str, course_cases.Mistake] = {}
        for call_id, case, device, trial in calls:
            problems, returned = _judge_call(scratch / "out" / call_id, trial)
            if problems and case.id not in mistakes and returned is not None:
                found = course_cases.diagnose(assignment, case.function, trial, returned)
                if found:
                    mistakes[case.id] = found
            where = f"[{device}] " if len(case.devices) > 1 else ""
            per_case[case.id] += [where + p for p in problems]
        shutil.rmtree(scratch / "out", ignore_errors=True)

    for case in assignment.cases:
        problems = per_case[case.id]
        report.results.append(CaseResult(case.id, case.description, case.points,
                                         0.0 if problems else case.points, case.hidden, problems,
                                         mistakes.get(case.id)))
    return report


def _has_tensor(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return type(value).__module__.startswith("torch")


def _cell_errors(out: Path) -> list[str]:
    try:
        cells = wire_json(out / "cells.json")
    except ValueError:
        return ["the notebook's code stopped the grader's process before its cells had run"]
    return [f"cell {c.get('label')!r} raised when it ran:\n{c.get('error')}" for c in cells
            if isinstance(c, dict) and c.get("error")]


def wire_json(path: Path, limit: int = 1 << 20):
    """A small JSON file written by the sandbox, or ValueError."""
    if not path.is_file() or path.is_symlink() or path.stat().st_size > limit:
        raise ValueError(f"{path.name} missing or too large")
    return json.loads(path.read_text())


def _judge_call(here: Path, trial) -> tuple[list[str], object]:
    """The problems with one call, from what the sandbox left in its folder."""
    try:
        status = wire_json(here / "status.json")
    except ValueError:
        return ["did not finish (the code was stopped: too slow, or it ended the process)"], None
    error = status.get("error") if isinstance(status, dict) else "unreadable status"
    if error:
        return course_cases.evaluate(trial, None, None, str(error)), None
    try:
        returned = wire.load(str(here / "returned"))
        args_after = wire.load(str(here / "args_after"))
    except wire.WireError as e:
        return [f"returned something that is not plain data: {e}"], None
    return course_cases.evaluate(trial, returned, args_after, None), returned
