"""Picking the student's solution code out of a submission, trusting only the course's notebooks.

A submission's metadata (nbgrader's grade_id, points, locked flags) is the
student's to edit, so it is never read. Instead the trusted source notebook
says which solution cells exist and which names each must define; in the
submission, the cell that defines those names at top level is that slot's
answer. Cells that are verbatim copies of the release's read-only cells (the
test cells among them) are never candidates, and nothing else of the
submission runs. Reordered, inserted or deleted cells do no harm.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from dataclasses import dataclass

import nbformat

from .course import Notebooks, nbgrader_meta, read

MAX_NOTEBOOK_BYTES = 4 << 20


class SubmissionError(ValueError):
    """The submission cannot be read as a notebook; the message says why, for the student."""


@dataclass(frozen=True)
class Slot:
    label: str  # the source notebook's grade_id for the cell
    names: tuple[str, ...]  # what the cell must define


@dataclass(frozen=True)
class Picked:
    label: str
    source: str


# CPython 3.11's ast.parse is not safe in two threads at once (it can fail with SystemError,
# "AST constructor recursion depth mismatch"), and the grader grades in threads.
_AST_LOCK = threading.Lock()


def defined_names(source: str) -> set[str]:
    """Functions and classes a cell defines at top level; by regex if it does not parse."""
    try:
        with _AST_LOCK:
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set(re.findall(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", source, re.M))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def slots(source_nb) -> list[Slot]:
    """The solution cells of the trusted source notebook and the names each defines."""
    found = []
    for cell in source_nb.cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type == "code" and meta.get("solution"):
            names = tuple(sorted(defined_names(cell.source)))
            found.append(Slot(meta.get("grade_id", f"cell-{len(found)}"), names))
    return found


def _normalized(source: str) -> str:
    return "\n".join(line.rstrip() for line in source.strip().splitlines())


def read_submission(path) -> nbformat.NotebookNode:
    """Parse a submitted notebook, refusing what is too large or not a notebook, with a reason."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_NOTEBOOK_BYTES + 1)
    except OSError as e:
        raise SubmissionError(f"cannot read the notebook: {e.strerror}") from None
    if len(raw) > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"the notebook is larger than {MAX_NOTEBOOK_BYTES >> 20} MiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SubmissionError(f"the file is not valid notebook JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise SubmissionError("the file is JSON but not a notebook (no list of cells)")
    try:
        nb = nbformat.reads(json.dumps(data), as_version=4)
    except Exception as e:  # nbformat raises several kinds for malformed notebooks
        raise SubmissionError(f"the file is not a readable notebook ({type(e).__name__}: {e})") from None
    for cell in nb.cells:
        if not isinstance(cell.get("source", ""), str) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise SubmissionError("the notebook has a malformed cell")
    return nb


def pick(submission, trusted: Notebooks) -> tuple[list[Picked], list[str]]:
    """The code to run for each slot, in the submission's order, and the problems found on the way."""
    locked = {_normalized(c.source) for c in read(trusted.release).cells
              if c.cell_type == "code" and not nbgrader_meta(c).get("solution")}
    candidates = [(i, c.source) for i, c in enumerate(submission.cells)
                  if c.cell_type == "code" and _normalized(c.source) not in locked]
    chosen: dict[int, Picked] = {}
    problems = []
    for slot in slots(read(trusted.source)):
        defining = [(i, src) for i, src in candidates if set(slot.names) & defined_names(src)]
        if not defining:
            problems.append(f"no cell defines {' or '.join(slot.names)}: was its cell deleted?")
            continue
        i, src = defining[-1]  # the last definition wins, as when the notebook runs top to bottom
        chosen.setdefault(i, Picked(slot.label, src))
    return [chosen[i] for i in sorted(chosen)], problems
