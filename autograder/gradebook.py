"""Recording grades in nbgrader's gradebook, so that nbgrader's own tools keep working.

After `python -m autograder grade ... --gradebook sqlite:///course/gradebook.db
--autograded course/autograded`, the gradebook holds what `nbgrader autograde`
would have written, with this grader's scores:

- the student (created if new) and their submission of the assignment, with
  the timestamp from the submission's `timestamp.txt` when there is one;
- for each of the notebook's test cells (`grade_id` = `test_<function>`), the
  auto score: the points of that function's cases that passed. (With private
  cases, which add points nbgrader's notebook does not know of, the cell's
  points times the fraction of the function's points earned.)

and, as `nbgrader autograde` does, it gives back what stands in the
gradebook beside the grader's scores, for grades.csv and results.json:

- a score a grader entered by hand (`manual_score`) replaces the auto score
  of its cell;
- a submission later than its assignment's due date gets the late penalty of
  the nbgrader configuration's `AssignLatePenalties.plugin_class` (by default
  `LateSubmissionPlugin`, whose `penalty_method` is 'none' or 'zero'),
  recorded as the notebook's `late_submission_penalty`, which `nbgrader
  export` subtracts.

`autograded/<student>/<assignment>/<notebook>.ipynb` is the student
release with the student's solution code in its solution cells and, under
each test cell, what its tests found. `nbgrader generate_feedback` turns that
into nbgrader's feedback page, and `nbgrader export` exports the scores.

Only the graded student's rows are written; the gradebook's assignment,
notebook and cell definitions come from `nbgrader generate_assignment`, and
are only read here.
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from datetime import timedelta
from pathlib import Path

import nbformat
from sqlalchemy.exc import SAWarning
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.utils import parse_utc

from .course import nbgrader_meta, notebooks, read
from .grading import Report
from .report import fmt_points, function_output, one_line
from .safe import markdown, write_atomic


class GradebookError(ValueError):
    """The gradebook cannot take these grades; the message says what to do."""


def check(url: str, assignment: str) -> None:
    """Raise GradebookError unless the gradebook knows the assignment and its notebook's grade cells."""
    name = notebooks(assignment).source.stem
    fix = f"run `nbgrader generate_assignment {assignment} --db {url}` (see the book's page for instructors)"
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file():
        raise GradebookError(f"there is no gradebook at {url[len('sqlite:///'):]}: {fix}")
    try:
        with Gradebook(url) as gb:
            gb.find_notebook(name, assignment)
    except MissingEntry:
        raise GradebookError(f"the gradebook {url} has no notebook {name!r} of assignment {assignment!r}: {fix}") from None
    except Exception as e:  # not a database, or not nbgrader's
        raise GradebookError(f"cannot open the gradebook {url}: {type(e).__name__}: {e}") from None


def cell_scores(report: Report, cells: dict[str, float]) -> dict[str, float]:
    """Score of each test cell (grade_id -> max points), from the report's cases."""
    scores = {}
    for function, (earned, possible) in report.by_function().items():
        cell = f"test_{function}"
        if cell in cells:
            top = cells[cell]
            scores[cell] = earned if abs(possible - top) < 1e-9 else (top * earned / possible if possible else 0.0)
    return scores


# The times nbgrader writes ("2026-01-21 12:00:00.000000 UTC") and the usual ISO spellings. Only these reach
# nbgrader's parser: for a word it takes as a time zone, dateutil opens a file of that name (a path, a FIFO).
TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
                       r"( ?(UTC|GMT|Z|[+-][0-9]{2}:?[0-9]{2}))?")


def parse_timestamp(text: str | None):
    """nbgrader's timestamp.txt as a datetime, or None when missing or unreadable (text from a submission)."""
    if not text or not TIMESTAMP.fullmatch(text.strip()):
        return None
    try:
        return parse_utc(text.strip())
    except Exception:  # noqa: BLE001  (a month 13, a day 32: no time, whatever the parser raises)
        return None


def late_penalties(config_file: os.PathLike | None = None):
    """nbgrader's AssignLatePenalties, configured from an nbgrader_config.py (the instructor's), its plugin made."""
    from nbgrader.preprocessors import AssignLatePenalties
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = Config()
    if config_file is not None and Path(config_file).is_file():
        config = PyFileConfigLoader(Path(config_file).name, str(Path(config_file).parent)).load_config()
    assigner = AssignLatePenalties(config=config)
    assigner.init_plugin()
    return assigner


def _late(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def record(url: str, report: Report, timestamp: str | None = None, penalties=None) -> list[tuple[str, float]]:
    """Write one graded submission's scores into the gradebook.

    Returns what the gradebook changes of the grader's score, as (why, points):
    scores entered by hand, and the late penalty (`penalties`: see late_penalties).
    """
    name = notebooks(report.assignment).source.stem
    when = parse_timestamp(timestamp)
    adjustments = []
    with Gradebook(url) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore", SAWarning)  # raised inside nbgrader's own session handling
        gb.update_or_create_student(report.student)
        if when is not None:
            gb.update_or_create_submission(report.assignment, report.student, timestamp=when)
        else:
            gb.update_or_create_submission(report.assignment, report.student)
        notebook = gb.find_submission_notebook(name, report.assignment, report.student)
        scores = cell_scores(report, {g.name: g.max_score for g in notebook.grades})
        for grade in notebook.grades:
            if grade.name in scores:
                grade.auto_score = scores[grade.name]
                # a grader's manual score stands, and is flagged for review (as nbgrader does)
                grade.needs_manual_grade = grade.manual_score is not None
                if grade.manual_score is not None and abs(grade.manual_score - scores[grade.name]) > 1e-9:
                    adjustments.append((f"{grade.name}: a score entered by hand, {fmt_points(grade.manual_score)}, "
                                        f"replaces the grader's {fmt_points(scores[grade.name])}",
                                        grade.manual_score - scores[grade.name]))
        gb.db.commit()
        notebook.late_submission_penalty = None
        submission = gb.find_submission(report.assignment, report.student)
        if penalties is not None and submission.total_seconds_late > 0:
            penalty = penalties.plugin_inst.late_submission_penalty(
                report.student, notebook.score, submission.total_seconds_late)
            if penalty is not None:
                penalty = min(max(float(penalty), 0.0), notebook.score)
                notebook.late_submission_penalty = penalty
                adjustments.append((f"late by {_late(submission.total_seconds_late)}: the late penalty "
                                    f"({type(penalties.plugin_inst).__name__})", -penalty))
        gb.db.commit()
    return adjustments


def autograded_notebook(report: Report, book_url: str = "") -> nbformat.NotebookNode:
    """The student release with the student's code in its solution cells and the tests' findings as outputs."""
    nb = copy.deepcopy(read(notebooks(report.assignment).release))
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        if meta.get("solution") and meta.get("grade_id") in report.picked:
            cell.source = report.picked[meta["grade_id"]]
        elif meta.get("grade") and str(meta.get("grade_id", "")).startswith("test_"):
            function = meta["grade_id"][len("test_"):]
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                   text=function_output(report, function, book_url))]
    # a note can quote the submission (a file name, an IPython line): Markdown that renders as text, no HTML
    notes = [markdown(one_line(n)) for n in report.notes if n.strip()]
    if notes:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(
            "**The grader's notes:**\n\n" + "\n".join(f"- {n}" for n in notes)))
    return nb


def write_autograded(folder: Path, report: Report, timestamp: str | None = None, book_url: str = "") -> Path:
    """Write autograded/<student>/<assignment>/<notebook>.ipynb (and the submission's timestamp.txt, if it parses)."""
    dest = Path(folder) / report.student / report.assignment
    path = dest / notebooks(report.assignment).name
    write_atomic(path, nbformat.writes(autograded_notebook(report, book_url)) + "\n")
    if parse_timestamp(timestamp) is not None:
        write_atomic(dest / "timestamp.txt", timestamp.strip() + "\n")
    return path
