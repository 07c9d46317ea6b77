"""Writing a batch's results as each student finishes, so that a killed run loses nothing.

For each graded notebook, in this order: the gradebook (which may hand back
scores entered by hand and a late penalty), the feedback pages and
results.json, nbgrader's autograded notebook, and last its row of
`grades.csv`. Every file is written whole or not at all (a temporary file
renamed over the old one), and the CSV is merged under a lock held across
processes: its rows are keyed by student and assignment, a run replaces only
the rows of the students it graded, and two graders on one folder lose
nothing. The lock is held across all of one notebook's writes, so that two
graders of one student leave that student's row and feedback from the same
run. A grader killed midway leaves a CSV of the students done so far, each
row matching its feedback, but for the one being written at the kill, whose
feedback may be a run newer than its row (the rerun writes both).

grades.csv is the instructors' file as much as the grader's: one saved by a
spreadsheet (with a byte-order mark, CRLF line ends) is read as it is, the
columns an instructor added are kept (a regraded student keeps their cells),
and a file that could not be written back as it was read (not UTF-8, no
student and assignment columns, a column named twice, cells under no name,
two rows of one student and assignment) is never written over. The grader's
own columns are the grader's: a regraded student's score is this run's.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections import Counter
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


class GradesFileError(Exception):
    """grades.csv cannot be merged into without losing what it holds; the message says why and what to do."""


KEYS = ("student", "assignment")
MAX_CELL = 1 << 24  # csv's own limit, 128 KiB a cell, would stop at an instructor's long comment


def _refuse(path: Path, why: str) -> GradesFileError:
    return GradesFileError(f"{safe.name(path)} {why}: it is not merged into or written over; fix it, move it "
                           "aside, or grade into another --out")


def read_table(path: Path) -> tuple[list[str], list[dict]]:
    """grades.csv's header and rows ([] and [] when there is none yet), read strictly: whatever could not be
    written back as it was read raises GradesFileError, before anything is written. A spreadsheet's
    byte-order mark and CRLF are read as such; a row shorter than the header is padded, and a column with
    neither a name nor a value is dropped, which loses nothing."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as e:
        raise _refuse(path, f"cannot be read ({e.strerror or e})") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise _refuse(path, "is UTF-16 (a spreadsheet's \"Unicode text\"): save it as CSV, UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _refuse(path, f"is not UTF-8 (byte {e.start}; saved as Latin-1 or Windows-1252?): save it as CSV, "
                            "UTF-8") from None
    limit = csv.field_size_limit()
    try:
        csv.field_size_limit(MAX_CELL)
        table = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True) if row]
    except csv.Error as e:
        raise _refuse(path, f"cannot be read as a table ({safe.text(str(e))[:200]}; a quote left open?)") from None
    finally:
        csv.field_size_limit(limit)
    if not table:
        return [], []
    header, rows = table[0], table[1:]
    width = max(map(len, table))
    header = header + [""] * (width - len(header))
    rows = [row + [""] * (width - len(row)) for row in rows]
    if not all(k in header for k in KEYS):
        raise _refuse(path, f"has no {' and '.join(KEYS)} columns in its first line "
                            f"({safe.text(', '.join(header))[:200]})")
    unnamed = [i for i, name in enumerate(header) if not name.strip()]
    if any(row[i] for row in rows for i in unnamed):
        raise _refuse(path, f"has cells under no column name (column {unnamed[0] + 1}; or a quote left open)")
    named = [i for i in range(width) if i not in unnamed]
    header = [header[i] for i in named]
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise _refuse(path, f"names a column twice ({safe.text(', '.join(twice))[:200]})")
    rows = [{header[j]: row[i] for j, i in enumerate(named)} for row in rows]
    for row in rows:  # a formula's quote stripped by a spreadsheet: the cell as the grader writes it again
        for column in fmt.TEXT_COLUMNS:
            if row.get(column, "")[:1] in safe.FORMULA_STARTS:
                row[column] = "'" + row[column]
    again = sorted(k for k, n in Counter(_key(row) for row in rows).items() if n > 1)
    if again:
        raise _refuse(path, "has two rows for " + safe.text(", ".join(f"{s} ({a})" for s, a in again[:5]))[:200])
    return header, rows


def read_rows(path: Path) -> list[dict]:
    return read_table(path)[1]


def _key(row: dict) -> tuple:
    return tuple(row.get(k) for k in KEYS)


def merge_rows(out: Path, rows: list[dict]) -> None:
    """Put rows into out/grades.csv, replacing those of the same student and assignment, atomically, under a lock."""
    with safe.locked(out / LOCK):
        _merge_rows_locked(out, rows)


def _merge_rows_locked(out: Path, rows: list[dict]) -> None:
    path = out / "grades.csv"
    header, old = read_table(path)
    added = [c for c in header if c not in fmt.CSV_COLUMNS]  # an instructor's own columns, kept
    replaced = {_key(r): r for r in old}
    keys = {_key(r) for r in rows}
    rows = [{**{c: replaced.get(_key(r), {}).get(c, "") for c in added}, **r} for r in rows]
    kept = [r for r in old if _key(r) not in keys]
    safe.write_atomic(path, fmt.csv_text(kept + rows, added))


def check_writable(out: Path) -> None:
    """Before any grading: out/ takes new files, and its grades.csv (if any) can be read and replaced.
    Raises GradesFileError, with what to do."""
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise GradesFileError(f"--out {safe.name(out)}: cannot write there ({e.strerror or e}); "
                              "nothing graded") from None
    path = out / "grades.csv"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise GradesFileError(f"{safe.name(path)} is not a regular file: move it aside, or grade into another --out")
    # a file with no write bit is read-only to the instructor, whom root's access would not stop
    if path.exists() and (not os.access(path, os.R_OK | os.W_OK) or not path.stat().st_mode & 0o222):
        raise GradesFileError(f"{safe.name(path)} is read-only (or immutable): make it writable, or grade into "
                              "another --out; nothing graded")
    read_table(path)


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
        with safe.locked(self.out / LOCK):
            return self._write_locked(report, timestamp, known)

    def _write_locked(self, report: Report, timestamp: str | None, known: bool) -> Report:
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
        _merge_rows_locked(self.out, [fmt.csv_row(report)])
        return report
