"""Writing a batch's results as each student finishes, so that a killed run loses nothing.

For each graded notebook, in this order: the gradebook (which may hand back
scores entered by hand and a late penalty), the feedback pages and
results.json, nbgrader's autograded notebook, and last its row of
`grades.csv`. Every file is written whole or not at all (a temporary file
renamed over the old one), and the CSV is merged under a lock held across
processes: its rows are keyed by student and assignment, a run replaces only
the rows of the students it graded, and two graders on one folder lose
nothing. A grader killed midway leaves a CSV of the students done so far,
each row matching its feedback.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from . import report as fmt
from . import safe
from .course import notebooks
from .grading import Report

LOCK = ".grades.lock"


def feedback_stem(report: Report) -> str:
    """The name of a student's feedback files: the assignment's notebook's, whichever notebook was graded."""
    try:
        return notebooks(report.assignment).source.stem
    except (FileNotFoundError, OSError):
        return "feedback"


def read_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def merge_rows(out: Path, rows: list[dict]) -> None:
    """Put rows into out/grades.csv, replacing those of the same student and assignment, atomically, under a lock."""
    path = out / "grades.csv"
    keys = {(r["student"], r["assignment"]) for r in rows}
    with safe.locked(out / LOCK):
        kept = [r for r in read_rows(path) if (r.get("student"), r.get("assignment")) not in keys]
        safe.write_atomic(path, fmt.csv_text(kept + rows))


def rows_without_notebook(out: Path, found: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (student, assignment) rows of out/grades.csv, for the assignments in `found`, of students this run
    found no notebook of: renamed, withdrawn, or filed under another name by an earlier grader. They are kept,
    as every row is; the caller says which they are, so that an instructor can delete them on purpose."""
    cells = {(safe.csv_cell(s), safe.csv_cell(a)) for s, a in found}
    assignments = {a for _, a in cells}
    return sorted((r.get("student", ""), r.get("assignment", "")) for r in read_rows(out / "grades.csv")
                  if r.get("assignment") in assignments and (r.get("student"), r.get("assignment")) not in cells)


@dataclass
class Outputs:
    """Where a batch's results go."""

    out: Path
    book_url: str
    db: str | None = None  # the nbgrader gradebook's URL
    autograded: Path | None = None
    penalties: object = None  # nbgrader's AssignLatePenalties (gradebook.late_penalties)

    def write(self, report: Report, timestamp: str | None = None, known: bool = True) -> Report:
        """Write one graded notebook's results everywhere; returns the report as written (adjusted by the gradebook)."""
        report = report.made_safe()
        if known and self.db:
            from . import gradebook

            report.adjustments = gradebook.record(self.db, report, timestamp, self.penalties)
            report = report.made_safe()
        folder = self.out / "feedback" / report.student / report.assignment
        stem = feedback_stem(report)
        safe.write_atomic(folder / f"{stem}.html", fmt.feedback_html(report, self.book_url))
        safe.write_atomic(folder / f"{stem}.txt", fmt.text(report, book_url=self.book_url) + "\n")
        fmt.write_gradescope(report, folder / "results.json", self.book_url)
        if known and self.autograded:
            from . import gradebook

            gradebook.write_autograded(self.autograded, report, timestamp, self.book_url)
        merge_rows(self.out, [fmt.csv_row(report)])
        return report
