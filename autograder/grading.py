"""Grading one submission: pick its code, run it in the sandbox, judge what comes back.

The score is computed here, on the trusted side, from plain data: the student's
process only ever sees the inputs of each call, generated from a seed drawn
for this run, and never the expected values.

When the student's process ends or hangs in the middle, `sandbox.run_job`
charges the cell or call that was running and runs what is left in a fresh
process: one function that kills its process costs only that function's points.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from normgrad import cases as course_cases

from . import flags as static_read
from . import safe, sandbox
from .inside import protocol, wire
from .cells import SubmissionError, pick, read_submission
from .course import notebooks
from .private import with_private

CELL_SECONDS = 60.0  # CPU time one solution cell may take to run (it only defines functions)
# Assignments answered by a Triton kernel: a call earns nothing unless a kernel of the student's ran in it.
KERNEL_ASSIGNMENTS = {"06-triton"}
NO_KERNEL = ("no Triton kernel of yours ran during this test: this exercise is answered by a @triton.jit "
             "kernel defined in your solution, not by torch operations")


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
    seed: int | None = None  # the seed of the hidden inputs: `--seed` replays this grade
    flags: list[str] = field(default_factory=list)  # what a static read of the code found, for the instructor
    adjustments: list[tuple[str, float]] = field(default_factory=list)  # (why, points): late penalty, hand grading

    @property
    def tests_score(self) -> float:
        return sum(r.earned for r in self.results)

    @property
    def score(self) -> float:
        return max(0.0, self.tests_score + sum(points for _, points in self.adjustments))

    def made_safe(self) -> "Report":
        """A copy whose every string from the submission or a file name is safe to write (see `safe`)."""
        results = [dataclasses.replace(r, problems=[safe.text(p) for p in r.problems]) for r in self.results]
        return dataclasses.replace(
            self, student=safe.name(self.student) if self.student else "", assignment=safe.name(self.assignment),
            notebook=safe.name(self.notebook), results=results, notes=[safe.text(n) for n in self.notes],
            flags=[safe.text(f) for f in self.flags], isolation=safe.text(self.isolation),
            picked={safe.name(k): safe.text(v, limit=len(v)) for k, v in self.picked.items()},
            adjustments=[(safe.text(w), p) for w, p in self.adjustments])

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


def new_seed() -> int:
    return secrets.randbits(63)


def not_graded(student: str, assignment_id: str, notebook: str, reason: str, private: str | None = None,
               seed: int | None = None) -> Report:
    """A report of a notebook that could not be graded: every case failed, for `reason`."""
    assignment = with_private(course_cases.load(assignment_id), private)
    public = {c.id for c in course_cases.load(assignment_id).cases}
    report = Report(student, assignment_id, notebook, assignment.max_score, seed=seed)
    report.notes.append(reason)
    report.results = [CaseResult(c.id, c.description, c.points, 0.0, c.hidden, [reason], private=c.id not in public)
                      for c in assignment.cases]
    return report.made_safe()


def grade(path: Path, assignment_id: str, student: str = "", seed: int | None = None,
          devices: set[str] | None = None, limits: sandbox.Limits = sandbox.Limits(),
          box: sandbox.Sandbox | None = None, private: str | None = None, data: bytes | None = None,
          notebook: str | None = None) -> Report:
    """Grade one notebook (the file at `path`, or its bytes `data`); never raises for anything the submission does.

    The same seed gives the same hidden inputs, hence the same grade for code that is deterministic.
    """
    started = time.monotonic()
    if limits.notebook_seconds is not None:
        limits = dataclasses.replace(limits, deadline=started + limits.notebook_seconds)
    seed = new_seed() if seed is None else seed
    notebook = notebook or Path(path).name
    try:
        submission = read_submission(path, data)
    except SubmissionError as e:
        return not_graded(student, assignment_id, notebook, str(e), private, seed)
    assignment = with_private(course_cases.load(assignment_id), private)
    private_ids = {c.id for c in assignment.cases} - {c.id for c in course_cases.load(assignment_id).cases}
    trusted = notebooks(assignment_id)
    report = Report(student, assignment_id, notebook, assignment.max_score, seed=seed)
    devices = course_cases.available_devices() if devices is None else devices
    box = box or default_sandbox()

    picked, problems = pick(submission, trusted)
    report.notes += problems
    report.picked = {p.label: p.source for p in picked}
    report.flags = static_read.read_submission(assignment_id, picked)

    # One call per case and device, under an opaque id: the ids say nothing about the case.
    calls = []
    for case in assignment.cases:
        for device in case.devices:
            if device in devices:
                trial = case.make(course_cases.case_rng(seed, case, device), device)
                calls.append(Call(f"c{len(calls):03d}", case, device, trial))
    cells = [(f"k{i}", p) for i, p in enumerate(picked)]

    verdicts, cell_errors, notes, report.isolation = _run(box, cells, calls, limits, devices,
                                                          assignment_id in KERNEL_ASSIGNMENTS)
    if any(v == sandbox.NOT_REACHED for v in verdicts.values()):
        notes.insert(0, f"grading stopped after {limits.notebook_seconds:g} s, all the time one notebook may take "
                        "here: the tests not run by then score nothing (is some of the code very slow?)")
    report.notes += notes + [f"cell {label!r}: {error}" if error.startswith("this cell") else
                             f"cell {label!r} raised when it ran:\n{error}" for label, error in cell_errors.items()]

    per_case: dict[str, list[str]] = {c.id: [] for c in assignment.cases}
    mistakes: dict[str, course_cases.Mistake] = {}
    wrong_values = set()  # the cases where a call returned a wrong value (not an error): their hint may apply
    for call in calls:
        problems, returned = _judge_call(verdicts[call.id], call.id, call.trial, assignment_id in KERNEL_ASSIGNMENTS)
        if problems and call.case.id not in mistakes:
            try:
                found = course_cases.diagnose(assignment, call.case.function, call.trial, returned) \
                    if returned is not None else course_cases.diagnose_error(assignment, call.case.function,
                                                                               "\n".join(problems))
            except Exception:  # a result too odd to compare with the known mistakes matches none of them
                found = None
            if found:
                mistakes[call.case.id] = found
        if problems and returned is not None:
            wrong_values.add(call.case.id)
        where = f"[{call.device}] " if len(call.case.devices) > 1 else ""
        per_case[call.case.id] += [where + p for p in problems]

    for case in assignment.cases:
        problems = per_case[case.id] + course_cases.hint(case, case.id in wrong_values, mistakes.get(case.id))
        report.results.append(CaseResult(case.id, case.description, case.points,
                                         0.0 if problems else case.points, case.hidden, problems,
                                         mistakes.get(case.id), case.id in private_ids))
    if not any(r.passed for r in report.results):  # nothing earned: a missing kernel is no news
        report.flags = [f for f in report.flags if f != static_read.NO_KERNEL]
    report.seconds = time.monotonic() - started
    return report.made_safe()


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


def _run(box: sandbox.Sandbox, cells, calls: list[Call], limits: sandbox.Limits, devices, count_kernels: bool):
    """The cells and calls as a sandbox job; returns (verdicts by call id, cell errors by label, notes, isolation)."""
    inputs = {}
    for call in calls:
        for name, data in wire.pack((list(call.trial.args), call.trial.kwargs)).items():
            inputs[f"{protocol.inputs(call.id)}/{name}"] = data
    job = protocol.Job(
        cells=tuple(protocol.Cell(kid, p.label, p.source) for kid, p in cells),
        calls=tuple(protocol.CallSpec(c.id, c.case.function, c.trial.protocol, c.device, c.case.seconds)
                    for c in calls),
        torch=any(_has_tensor(call.trial.args) for call in calls), cell_seconds=CELL_SECONDS,
        # kill(-1) reaches only the job's own processes under bubblewrap or a sandbox uid
        reap=box.mode == "bwrap" or box.root, count_kernels=count_kernels)
    # Without a GPU, Triton kernels run in its interpreter (one program at a time, on the CPU).
    env = {} if "cuda" in devices else {"TRITON_INTERPRET": "1"}
    result = sandbox.run_job(box, job, inputs, limits, gpu=any(c.device != "cpu" for c in calls), env_extra=env)
    return result.verdicts, result.cell_errors, result.notes, result.isolation


def _judge_call(verdict, ident: str, trial, needs_kernel: bool = False) -> tuple[list[str], object]:
    """The problems with one call, from the files the sandbox sent back for it (or why there are none)."""
    if isinstance(verdict, str):
        return [verdict], None
    try:
        status = wire.loads(verdict.get(protocol.status(ident), b"null"))
    except ValueError:
        status = None
    if not isinstance(status, dict):
        return ["the grader's process sent back an unreadable status for this test"], None
    error = status.get("error")
    if error:
        return course_cases.evaluate(trial, None, None, str(error)[:4000]), None
    if needs_kernel and not status.get("kernel_launches"):
        return [NO_KERNEL], None
    try:
        returned = wire.unpack(wire.subfolder(verdict, protocol.returned(ident)))
        args_after = wire.unpack(wire.subfolder(verdict, protocol.args_after(ident)))
    except wire.WireError as e:
        return [f"returned something that is not plain data: {e}"], None
    try:
        return course_cases.evaluate(trial, returned, args_after, None), returned
    except Exception as e:  # plain data, but of a shape the judge could not even compare
        return [f"returned something the tests could not compare ({type(e).__name__}: {str(e)[:200]})"], None
