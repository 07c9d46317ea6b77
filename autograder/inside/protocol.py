"""The job and its frames: the one agreement between the grader and the program inside the sandbox.

The grader sends a `Job` (frame `JOB`, JSON) and each call's inputs (frames
under `inputs(call id)`); the program answers, in this order and nothing else:

    for each cell:  begun(cell id), status(cell id)
    for each call:  begun(call id), [returned(call id)/..., args_after(call id)/...], status(call id)

`Expected` checks that order on the trusted side, frame by frame: a frame the
job does not expect next (a forged `status.json`, a `begun` out of turn, a
second answer) ends the job as a protocol violation of the phase that was
running, and cannot restart its watchdog.

This module imports only the standard library: the sandbox imports it from a copy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

JOB = "job.json"


def begun(ident: str) -> str:
    return f"{ident}/begun"


def status(ident: str) -> str:
    return f"{ident}/status.json"


def returned(ident: str) -> str:
    """The folder of frames holding what a call returned."""
    return f"{ident}/returned"


def args_after(ident: str) -> str:
    """The folder of frames holding a call's arguments as they were after it."""
    return f"{ident}/args_after"


def inputs(ident: str) -> str:
    """The folder of frames holding a call's arguments (grader -> sandbox)."""
    return f"{ident}/inputs"


@dataclass(frozen=True)
class Cell:
    id: str
    label: str
    source: str


@dataclass(frozen=True)
class CallSpec:
    id: str
    function: str
    protocol: str
    device: str = "cpu"
    seconds: float = 10.0


@dataclass(frozen=True)
class Job:
    cells: tuple[Cell, ...]
    calls: tuple[CallSpec, ...]
    torch: bool = False  # import torch and lock autograd before the cells; otherwise torch cannot be imported
    cell_seconds: float = 60.0
    reap: bool = False  # kill(-1) after each cell and call reaches only the job's own processes
    count_kernels: bool = False  # report the launches of Triton kernels defined in the cells, per call
    seccomp: str = ""  # a filter (hex) the job puts on itself before the cells (a CPU job's refuses exec)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Job:
        data = json.loads(raw)
        return cls(**{**data, "cells": tuple(Cell(**c) for c in data["cells"]),
                      "calls": tuple(CallSpec(**c) for c in data["calls"])})

    def budgets(self) -> dict[str, float]:
        """Each cell and call id, in the order they run, with its CPU budget in seconds."""
        return {**{c.id: self.cell_seconds for c in self.cells}, **{c.id: c.seconds for c in self.calls}}


class ProtocolViolation(ValueError):
    """A frame the job did not expect next."""


class Expected:
    """The trusted side's view of where the job is: which phase runs, and which frames may come next."""

    def __init__(self, job: Job):
        self._order = [(c.id, False) for c in job.cells] + [(c.id, True) for c in job.calls]
        self._next = 0
        self.current: str | None = None  # the phase between its begun and its status
        self.done: list[str] = []

    def accept(self, name: str) -> str | None:
        """Check one frame's name; returns "begun" or "status" when it opens or closes a phase."""
        if self.current is None:
            if self._next < len(self._order) and name == begun(self._order[self._next][0]):
                self.current = self._order[self._next][0]
                return "begun"
            raise ProtocolViolation(f"frame {name[:80]!r} out of turn" + (
                f" (expected {begun(self._order[self._next][0])})" if self._next < len(self._order) else
                " (the job was over)"))
        ident, is_call = self._order[self._next]
        if name == status(ident):
            self.current = None
            self.done.append(ident)
            self._next += 1
            return "status"
        if is_call and (name.startswith(returned(ident) + "/") or name.startswith(args_after(ident) + "/")):
            return None
        raise ProtocolViolation(f"frame {name[:80]!r} out of turn (in {ident}, expected its results)")
