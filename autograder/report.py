"""Writing grades down: the terminal, grades.csv, feedback pages and Gradescope's results.json.

Every message comes from the trusted side's checks, which say what was wrong
(type, dtype, shape, where the error is largest and by how much) without
printing an expected value. A known mistake is named, with a link to the
section of the book that explains it: links are `book_url` + the mistake's
section, so one flag points them at a published book or a local build.
"""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from .course import ROOT
from .grading import Report

CSV_COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "passed", "failed", "notes")
LOCAL_BOOK = ROOT / "_build" / "html"


def default_book_url() -> str:
    """The locally built book (`make book`), as a file:// URL ending in '/'."""
    return LOCAL_BOOK.as_uri() + "/"


def fmt_points(x: float) -> str:
    return f"{round(x, 6):g}"


def mistake_line(r, book_url: str) -> str:
    return f"this matches a known mistake: {r.mistake.message} (the book explains it: {book_url}{r.mistake.section})"


def text(report: Report, show_hidden_problems: bool = True, book_url: str = "") -> str:
    """One line per test, then what went wrong, then the score."""
    lines = [f"{report.assignment}  {report.notebook}" + (f"  ({report.student})" if report.student else "")]
    for note in report.notes:
        lines.append("  ! " + note.replace("\n", "\n    "))
    width = max((len(r.case_id) for r in report.results), default=0)
    for r in report.results:
        mark = "PASS" if r.passed else "FAIL"
        kind = "hidden " if r.hidden else "visible"
        lines.append(f"  {mark}  {kind}  {r.case_id:<{width}}  {fmt_points(r.earned)}/{fmt_points(r.points)}"
                     f"  {r.description}")
        if r.problems and (show_hidden_problems or not r.hidden):
            for p in r.problems:
                lines.append("          " + p.replace("\n", "\n          "))
        if r.mistake:
            lines.append("          " + mistake_line(r, book_url))
    lines.append(f"  score: {fmt_points(report.score)}/{fmt_points(report.max_score)}")
    return "\n".join(lines)


def csv_row(report: Report) -> dict:
    return {
        "student": report.student,
        "assignment": report.assignment,
        "notebook": report.notebook,
        "score": fmt_points(report.score),
        "max_score": fmt_points(report.max_score),
        "passed": sum(r.passed for r in report.results),
        "failed": sum(not r.passed for r in report.results),
        "notes": " | ".join(n.splitlines()[0] for n in report.notes),
    }


def write_csv(reports: list[Report], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for report in sorted(reports, key=lambda r: (r.student, r.assignment, r.notebook)):
            writer.writerow(csv_row(report))


def function_output(report: Report, function: str, book_url: str = "") -> str:
    """What the tests of one function found, as the text of a notebook cell's output."""
    lines = []
    for r in report.results:
        if r.function != function:
            continue
        lines.append(f"{'PASS' if r.passed else 'FAIL'}  {r.case_id}: {r.description}"
                     f"{' (hidden test)' if r.hidden else ''}  {fmt_points(r.earned)}/{fmt_points(r.points)}")
        lines += ["    " + p.replace("\n", "\n    ") for p in r.problems]
        if r.mistake:
            lines.append("    " + mistake_line(r, book_url))
    return "\n".join(lines) + "\n"


def gradescope(report: Report, book_url: str = "") -> dict:
    """Gradescope's autograder results (results.json): one test per case, hidden ones shown after publishing."""
    tests = []
    for r in report.results:
        output = "\n".join(r.problems)
        if r.mistake:
            output += ("\n" if output else "") + mistake_line(r, book_url)
        tests.append({"name": f"{r.case_id}: {r.description}", "score": r.earned, "max_score": r.points,
                      "status": "passed" if r.passed else "failed", "output": output,
                      "visibility": "after_published" if r.hidden else "visible"})
    return {"score": report.score, "execution_time": round(report.seconds, 2), "output": "\n".join(report.notes),
            "stdout_visibility": "hidden", "tests": tests}


def write_gradescope(report: Report, path: Path, book_url: str = "") -> None:
    Path(path).write_text(json.dumps(gradescope(report, book_url), indent=1) + "\n")


def feedback_html(report: Report, book_url: str = "") -> str:
    """A self-contained page a student can open: score, each test, what was wrong, what to read."""
    esc = html.escape
    rows = []
    for r in report.results:
        detail = "".join(f"<pre>{esc(p)}</pre>" for p in r.problems)
        if r.mistake:
            link = esc(book_url + r.mistake.section)
            detail += (f"<p class='mistake'>This matches a known mistake: {esc(r.mistake.message)}. "
                       f"<a href='{link}'>The book explains it.</a></p>")
        rows.append(f"<tr class='{'pass' if r.passed else 'fail'}'><td>{'PASS' if r.passed else 'FAIL'}</td>"
                    f"<td>{esc(r.case_id)}<br><small>{esc(r.description)}"
                    f"{' (hidden test)' if r.hidden else ''}</small>{detail}</td>"
                    f"<td>{fmt_points(r.earned)}/{fmt_points(r.points)}</td></tr>")
    notes = "".join(f"<pre class='note'>{esc(n)}</pre>" for n in report.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Feedback: {esc(report.assignment)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }} td {{ border-top: 1px solid #ccc; padding: .4rem; vertical-align: top; }}
tr.pass td:first-child {{ color: #176317; }} tr.fail td:first-child {{ color: #a11; font-weight: bold; }}
pre {{ white-space: pre-wrap; background: #f6f6f6; padding: .4rem; }} .mistake {{ background: #fff4d6; padding: .4rem; }}
</style></head><body>
<h1>{esc(report.assignment)}: {fmt_points(report.score)} / {fmt_points(report.max_score)}</h1>
<p>{esc(report.student)} &middot; {esc(report.notebook)}</p>
{notes}
<table>{''.join(rows)}</table>
</body></html>
"""
