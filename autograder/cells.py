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

import json
import re
from dataclasses import dataclass

import nbformat

from . import safe
from .course import Notebooks, nbgrader_meta, read
from .pycode import bound_names, defined_names, without_ipython
from .submissions import SubmissionError, read_regular

__all__ = ["MAX_CELL_CHARS", "MAX_JSON_VALUES", "MAX_NOTEBOOK_BYTES", "MAX_FILE_BYTES", "Picked", "Slot",
           "SubmissionError", "defined_names", "pick", "read_submission", "slots"]

MAX_NOTEBOOK_BYTES = 4 << 20  # the notebook without its outputs
MAX_FILE_BYTES = 64 << 20  # the file as handed in, plots and all
# Parsed JSON costs some 30 to 60 bytes of memory per value: 64 MiB of `{},` alone would take 1.7 GB on the
# trusted side. A notebook holds a few values per cell and output line; a file of more is not parsed.
MAX_JSON_VALUES = 2_000_000
# A solution cell is a few kilobytes. A larger one is not read: parsing megabytes of code takes the
# trusted side seconds a time, under a lock that every student's grading shares.
MAX_CELL_CHARS = 256 << 10


@dataclass(frozen=True)
class Slot:
    label: str  # the source notebook's grade_id for the cell
    names: tuple[str, ...]  # what the cell must define


@dataclass(frozen=True)
class Picked:
    label: str
    source: str


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


def read_submission(path=None, data: bytes | None = None) -> nbformat.NotebookNode:
    """Parse a submitted notebook (the file at `path`, or its bytes), refusing what is not a notebook, with a reason.

    Outputs (plots, printed text) are dropped before the size check: only the code
    is graded. nbformat 3 notebooks are converted to 4.
    """
    if data is None:
        data = read_regular(path, MAX_FILE_BYTES)
    if len(data) > MAX_FILE_BYTES:
        raise SubmissionError(f"the file is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        text = data.decode("utf-8-sig")  # an editor's byte-order mark, if any, is not the notebook's
    except UnicodeDecodeError as e:
        raise SubmissionError(f"the file is not valid notebook JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if _json_values(text) > MAX_JSON_VALUES:
        raise SubmissionError(f"the file holds more than {MAX_JSON_VALUES:,} JSON values (lists, objects, numbers, "
                              "strings): it was not read (clear its outputs and hand it in again)")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise SubmissionError(f"the file is not valid notebook JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(raw, dict) or not (isinstance(raw.get("cells"), list) or isinstance(raw.get("worksheets"), list)):
        raise SubmissionError("the file is JSON but not a notebook (no list of cells)")
    if "nbformat" in raw and (type(raw["nbformat"]) is not int or type(raw.get("nbformat_minor", 0)) is not int):
        raise SubmissionError(f"the notebook's version, nbformat {safe.text(repr(raw['nbformat']), 40)}, is not "
                              "a whole number, as Jupyter writes it")
    if raw.get("nbformat", 4) not in (3, 4):  # older versions convert to no cells at all; newer ones do not exist
        raise SubmissionError(f"the notebook's version, nbformat {raw['nbformat']}, is not one Jupyter writes (3 or 4): "
                              "open the notebook in Jupyter and save it again")
    with_ids = raw.get("nbformat") == 4 and raw.get("nbformat_minor", 0) >= 5
    for i, cell in enumerate(_raw_cells(raw)):
        if isinstance(cell, dict):
            for key in ("outputs", "attachments"):
                if key in cell:
                    cell[key] = [] if key == "outputs" else {}
            if with_ids:  # the student's ids are never read; a missing or repeated one would make nbformat warn
                cell["id"] = f"cell-{i}"
    stripped = json.dumps(raw)
    if len(stripped) > MAX_NOTEBOOK_BYTES:
        raise SubmissionError(f"the notebook is larger than {MAX_NOTEBOOK_BYTES >> 20} MiB even without its outputs")
    try:
        nb = nbformat.reads(stripped, as_version=4)
    except Exception as e:  # nbformat raises several kinds for malformed notebooks
        raise SubmissionError(f"the file is not a readable notebook ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(nb.get("cells"), list):
        raise SubmissionError("the file is JSON but not a notebook (no list of cells)")
    for cell in nb.cells:
        if not isinstance(cell.get("source"), str) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise SubmissionError("the notebook has a malformed cell (every cell needs a cell_type and a source)")
    return nb


_STRING = re.compile(r'"[^"]*"')


def _json_values(text: str) -> int:
    """An upper bound on the values in a JSON text: each follows a comma or a colon, or opens a container.

    Counting over the whole text is quick but counts the commas and brackets inside strings too; only a
    text over the limit by that count is counted again with its strings taken out (escapes first).
    """
    def count(t: str) -> int:
        return t.count(",") + t.count(":") + t.count("[") + t.count("{") + 1

    if count(text) <= MAX_JSON_VALUES:
        return count(text)
    return count(_STRING.sub("", text.replace("\\\\", "").replace('\\"', "")))


def _raw_cells(raw: dict) -> list:
    if isinstance(raw.get("cells"), list):
        return raw["cells"]
    return [c for w in raw["worksheets"] if isinstance(w, dict) and isinstance(w.get("cells"), list)
            for c in w["cells"]]


def pick(submission, trusted: Notebooks) -> tuple[list[Picked], list[str]]:
    """The code to run for each slot, in the submission's order, and the problems found on the way.

    A slot's answer is the last cell that defines its names (`def`, `class`); failing
    that, the last that binds one by assignment or import (`layernorm_forward = _impl`).
    IPython lines (`%matplotlib inline`, `!ls`) in a picked cell are replaced by `pass`, with a note.
    """
    locked = {_normalized(c.source) for c in read(trusted.release).cells
              if c.cell_type == "code" and not nbgrader_meta(c).get("solution")}
    candidates = []
    problems = []
    for i, cell in enumerate(submission.cells):
        if cell.cell_type != "code":
            continue
        if len(cell.source) > MAX_CELL_CHARS:
            problems.append(f"code cell {i + 1} holds {len(cell.source)} characters, more than the "
                            f"{MAX_CELL_CHARS >> 10} KiB a solution cell may hold: it was not read")
        elif _normalized(cell.source) not in locked:
            source, removed = without_ipython(cell.source)
            candidates.append((i, source, removed))
    chosen: dict[int, tuple[Picked, list[str]]] = {}
    for slot in slots(read(trusted.source)):
        wanted = set(slot.names)
        defining = ([c for c in candidates if wanted & defined_names(c[1])]
                    or [c for c in candidates if wanted & bound_names(c[1])])
        if not defining:
            problems.append(f"no cell defines {' or '.join(slot.names)}: was its cell deleted?")
            continue
        i, source, removed = defining[-1]  # the last definition wins, as when the notebook runs top to bottom
        chosen.setdefault(i, (Picked(slot.label, source), removed))
    for i in sorted(chosen):
        picked, removed = chosen[i]
        if removed:
            problems.append(f"cell {picked.label!r}: IPython command{'s' if len(removed) > 1 else ''} "
                            f"{', '.join(repr(r) for r in removed[:5])} {'are' if len(removed) > 1 else 'is'} "
                            "not Python; the grader ran the cell without "
                            f"{'them' if len(removed) > 1 else 'it'}")
    return [chosen[i][0] for i in sorted(chosen)], problems
