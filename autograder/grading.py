"""Grading one submission: pick its code, run it in the sandbox, judge what comes back.

The score is computed here, on the trusted side, from plain data: the student's
process only ever sees the inputs of each call, generated from a seed drawn
for this run, and never the expected values.

When the student's process ends or hangs in the middle (os._exit, a crash, a
blocked timer), the cell or call that was running is charged with it, the
rest of that function's tests are not run, and a fresh process runs what is
left: one function that kills its process costs only that function's points.
"""

from __future__ import annotations

import json
import secrets
import signal
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from normgrad import cases as course_cases

from . import sandbox, wire
from .cells import SubmissionError, pick, read_submission
from .course import notebooks
from .private import with_private

CELL_SECONDS = 60.0  # CPU time one solution cell may take to run (it only defines functions)


@dataclass
class CaseResult:
    case_id: str
    description: str
    points: float
    earned: float
    hidden: bool
    problems: list[str] = field(default_factory=list)
    mistake: course_cases.Mistake | None = None
    private: bool = False

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def function(self) -> str:
        return self.case_id.split("/")[0]


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
    picked: dict[str, str] = field(default_factory=dict)  # solution cell label -> the code that ran
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(r.earned for r in self.results)

    def by_function(self) -> dict[str, tuple[float, float]]:
        """function -> (points earned, points possible)."""
        out: dict[str, tuple[float, float]] = {}
        for r in self.results:
            earned, possible = out.get(r.function, (0.0, 0.0))
            out[r.function] = (earned + r.earned, possible + r.points)
        return out


@lru_cache(maxsize=None)
def default_sandbox(prefer: str = "auto") -> sandbox.Sandbox:
    return sandbox.Sandbox(prefer)


def grade(path: Path, assignment_id: str, student: str = "", seed: int | None = None,
          devices: set[str] | None = None, limits: sandbox.Limits = sandbox.Limits(),
          box: sandbox.Sandbox | None = None, private: str | None = None) -> Report:
    """Grade one notebook; never raises for anything the submission does."""
    started = time.monotonic()
    assignment = with_private(course_cases.load(assignment_id), private)
    private_ids = {c.id for c in assignment.cases} - {c.id for c in course_cases.load(assignment_id).cases}
    trusted = notebooks(assignment_id)
    report = Report(student, assignment_id, Path(path).name, assignment.max_score)
    seed = secrets.randbits(63) if seed is None else seed
    devices = course_cases.available_devices() if devices is None else devices
    box = box or default_sandbox()

    def fail_all(reason: str) -> Report:
        report.notes.append(reason)
        report.results = [CaseResult(c.id, c.description, c.points, 0.0, c.hidden, [reason], private=c.id in private_ids)
                          for c in assignment.cases]
        return report

    try:
        submission = read_submission(path)
    except SubmissionError as e:
        return fail_all(str(e))
    picked, problems = pick(submission, trusted)
    report.notes += problems
    report.picked = {p.label: p.source for p in picked}

    # One call per case and device, under an opaque id: the ids say nothing about the case.
    calls = []
    for case in assignment.cases:
        for device in case.devices:
            if device in devices:
                trial = case.make(course_cases.case_rng(seed, case, device), device)
                calls.append(Call(f"c{len(calls):03d}", case, device, trial))
    cells = [(f"k{i}", p) for i, p in enumerate(picked)]

    verdicts, cell_errors, notes, report.isolation = _run(box, cells, calls, limits, devices)
    report.notes += notes + [f"cell {label!r}: {error}" if error.startswith("this cell") else
                             f"cell {label!r} raised when it ran:\n{error}" for label, error in cell_errors.items()]

    per_case: dict[str, list[str]] = {c.id: [] for c in assignment.cases}
    mistakes: dict[str, course_cases.Mistake] = {}
    for call in calls:
        problems, returned = _judge_call(verdicts[call.id], call.trial)
        if problems and call.case.id not in mistakes:
            try:
                found = course_cases.diagnose(assignment, call.case.function, call.trial, returned) \
                    if returned is not None else course_cases.diagnose_error(assignment, call.case.function,
                                                                               "\n".join(problems))
            except Exception:  # a result too odd to compare with the known mistakes matches none of them
                found = None
            if found:
                mistakes[call.case.id] = found
        where = f"[{call.device}] " if len(call.case.devices) > 1 else ""
        per_case[call.case.id] += [where + p for p in problems]

    for case in assignment.cases:
        problems = per_case[case.id]
        report.results.append(CaseResult(case.id, case.description, case.points,
                                         0.0 if problems else case.points, case.hidden, problems,
                                         mistakes.get(case.id), case.id in private_ids))
    report.seconds = time.monotonic() - started
    return report


@dataclass(frozen=True)
class Call:
    id: str
    case: course_cases.Case
    device: str
    trial: course_cases.Trial


def _has_tensor(value) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return type(value).__module__.startswith("torch")


def _run(box: sandbox.Sandbox, cells, calls: list[Call], limits: sandbox.Limits, devices):
    """Run the cells and calls, in as many fresh processes as the student's code makes necessary.

    Returns (verdicts: call id -> its files or an error message, cell errors by label, notes, isolation).
    """
    inputs = {}
    for call in calls:
        for name, data in wire.pack((list(call.trial.args), call.trial.kwargs)).items():
            inputs[f"{call.id}/{name}"] = data
    uses_torch = any(_has_tensor(call.trial.args) for call in calls)
    gpu = any(call.device != "cpu" for call in calls)
    # Without a GPU, Triton kernels run in its interpreter (one program at a time, on the CPU).
    env = {} if "cuda" in devices else {"TRITON_INTERPRET": "1"}

    verdicts: dict[str, dict | str] = {}
    cell_errors: dict[str, str] = {}
    notes: list[str] = []
    isolation = ""
    pending_cells, pending_calls = list(cells), list(calls)
    while True:
        job = {"torch": uses_torch, "cell_seconds": CELL_SECONDS,
               # kill(-1) reaches only the job's own processes under bubblewrap or a sandbox uid
               "reap": box.mode == "bwrap" or box.root,
               "cells": [{"id": kid, "label": p.label, "source": p.source} for kid, p in pending_cells],
               "calls": [{"id": c.id, "function": c.case.function, "protocol": c.trial.protocol,
                          "device": c.device, "seconds": c.case.seconds} for c in pending_calls]}
        files = {"job.json": json.dumps(job).encode()}
        files.update({n: d for n, d in inputs.items() if n.split("/")[0] in {c.id for c in pending_calls}})
        phases = {kid: CELL_SECONDS for kid, _ in pending_cells}
        phases.update({c.id: c.case.seconds for c in pending_calls})
        outcome = box.run(files, phases, limits, gpu=gpu, env_extra=env)
        isolation = outcome.isolation
        got = outcome.files

        for kid, p in pending_cells:
            status = _status(got, kid)
            if isinstance(status, dict) and status.get("error"):
                cell_errors[p.label] = str(status["error"])
        for c in pending_calls:
            if f"{c.id}/status.json" in got:
                verdicts[c.id] = wire.subfolder(got, c.id)
        pending_calls = [c for c in pending_calls if c.id not in verdicts]
        if not pending_calls:
            return verdicts, cell_errors, notes, isolation

        why = _why_it_ended(outcome)
        culprit = outcome.culprit
        if culprit is not None and culprit.startswith("k"):  # a cell: run the rest without it
            label = dict(pending_cells)[culprit].label
            cell_errors[label] = f"this cell {why}, so it was skipped"
            pending_cells = [(kid, p) for kid, p in pending_cells if kid != culprit]
            continue
        if culprit is not None:  # a call: charge it, skip the rest of its function, run the others
            first = next(c for c in pending_calls if c.id == culprit)
            verdicts[culprit] = f"this test {why}"
            for c in pending_calls:
                if c.case.function == first.case.function and c.id != culprit:
                    verdicts[c.id] = (f"not run: an earlier test of {first.case.function} {why}, "
                                      "so its other tests were skipped")
            pending_calls = [c for c in pending_calls if c.id not in verdicts]
            if pending_calls:
                continue
            return verdicts, cell_errors, notes, isolation
        # It ended before any of the student's code ran, or between tests: nothing to retry safely.
        note = f"the grader's process {why} before your code's tests could finish"
        if not any(n.endswith("/begun") for n in got):
            tail = "\n".join(outcome.stderr.strip().splitlines()[-8:])
            note += f"; it had not started your code{': ' + tail if tail else ''}"
        notes.append(note)
        for c in pending_calls:
            verdicts[c.id] = "did not finish (the code was stopped: too slow, or it ended the process)"
        return verdicts, cell_errors, notes, isolation


def _why_it_ended(outcome: sandbox.Outcome) -> str:
    if outcome.stream_error:
        return f"sent malformed results ({outcome.stream_error}) and was stopped"
    if outcome.stopped:
        return "ran longer than its time limit and was stopped (an endless loop, a sleep, a lock never released?)"
    rc = outcome.returncode
    signum = -rc if rc is not None and rc < 0 else rc - 128 if rc is not None and rc > 128 else None
    if signum == signal.SIGKILL:
        return "was killed (out of memory, or too many processes?)"
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"crashed ({name})"
    return f"ended the grader's process (exit status {rc}: sys.exit, os._exit or a killed parent?)"


def _status(files: dict[str, bytes], ident: str):
    raw = files.get(f"{ident}/status.json")
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"error": "unreadable status"}


def _judge_call(verdict, trial) -> tuple[list[str], object]:
    """The problems with one call, from the files the sandbox sent back for it (or why there are none)."""
    if isinstance(verdict, str):
        return [verdict], None
    try:
        status = json.loads(verdict.get("status.json", b"null"))
    except ValueError:
        status = None
    if not isinstance(status, dict):
        return ["the grader's process sent back an unreadable status for this test"], None
    error = status.get("error")
    if error:
        return course_cases.evaluate(trial, None, None, str(error)[:4000]), None
    try:
        returned = wire.unpack(wire.subfolder(verdict, "returned"))
        args_after = wire.unpack(wire.subfolder(verdict, "args_after"))
    except wire.WireError as e:
        return [f"returned something that is not plain data: {e}"], None
    try:
        return course_cases.evaluate(trial, returned, args_after, None), returned
    except Exception as e:  # plain data, but of a shape the judge could not even compare
        return [f"returned something the tests could not compare ({type(e).__name__}: {str(e)[:200]})"], None
