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
import io
import json
from pathlib import Path

from . import safe
from .course import book_url as configured_book_url
from .grading import Report

CSV_COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "passed", "failed", "flags", "seed", "notes")
TEXT_COLUMNS = ("student", "assignment", "notebook", "flags", "notes")


def default_book_url() -> str:
    """Where the chapters of the published book are: `html: baseurl:` of _config.yml, then chapters/.

    A mistake's section ("01-forward.html#scale-and-shift") is relative to it.
    """
    return configured_book_url() + "chapters/"


def fmt_points(x: float) -> str:
    return f"{round(x, 6):g}"


def mistake_line(r, book_url: str) -> str:
    return f"this matches a known mistake: {r.mistake.message} (the book explains it: {book_url}{r.mistake.section})"


def results_by_function(report: Report) -> dict[str, list]:
    """function -> its case results, in the report's order."""
    out: dict[str, list] = {}
    for r in report.results:
        out.setdefault(r.function, []).append(r)
    return out


def diagnoses(results) -> list:
    """The results whose named mistakes differ, one per mistake (the first case that showed it)."""
    seen, out = set(), []
    for r in results:
        if r.mistake and r.mistake.name not in seen:
            seen.add(r.mistake.name)
            out.append(r)
    return out


def adjustment_lines(report: Report) -> list[str]:
    return [f"{why}: {'+' if points > 0 else ''}{fmt_points(points)}" for why, points in report.adjustments]


def text(report: Report, show_hidden_problems: bool = True, book_url: str = "") -> str:
    """The tests of each function under its subtotal, each named mistake once (under the first test that showed it)."""
    lines = [f"{report.assignment}  {report.notebook}" + (f"  ({report.student})" if report.student else "")]
    for note in report.notes:
        lines.append("  ! " + note.replace("\n", "\n    "))
    for flag in report.flags:
        lines.append("  ? flagged for the instructor's review: " + flag)
    width = max((len(r.case_id) for r in report.results), default=0)
    for function, results in results_by_function(report).items():
        earned, possible = sum(r.earned for r in results), sum(r.points for r in results)
        lines.append(f"  {function}: {fmt_points(earned)}/{fmt_points(possible)}")
        named = diagnoses(results)
        for r in results:
            mark = "PASS" if r.passed else "FAIL"
            kind = "hidden " if r.hidden else "visible"
            lines.append(f"  {mark}  {kind}  {r.case_id:<{width}}  {fmt_points(r.earned)}/{fmt_points(r.points)}"
                         f"  {r.description}")
            if r.problems and (show_hidden_problems or not r.hidden):
                for p in r.problems:
                    lines.append("          " + p.replace("\n", "\n          "))
            if any(r is d for d in named):
                lines.append("          " + mistake_line(r, book_url))
    for line in adjustment_lines(report):
        lines.append("  " + line)
    lines.append(f"  score: {fmt_points(report.score)}/{fmt_points(report.max_score)}")
    return "\n".join(lines)


def one_line(note: str) -> str:
    """A note for one line of a table: its first line, and, for a traceback, its last (the exception)."""
    lines = [line.strip() for line in note.splitlines() if line.strip()]
    return " ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else (lines[0] if lines else note)


def csv_row(report: Report) -> dict:
    notes = [one_line(n) for n in report.notes] + adjustment_lines(report)
    row = {
        "student": report.student,
        "assignment": report.assignment,
        "notebook": report.notebook,
        "score": fmt_points(report.score),
        "max_score": fmt_points(report.max_score),
        "passed": sum(r.passed for r in report.results),
        "failed": sum(not r.passed for r in report.results),
        "flags": " | ".join(report.flags),
        "seed": "" if report.seed is None else str(report.seed),
        "notes": " | ".join(notes),
    }
    return {k: safe.csv_cell(v) if k in TEXT_COLUMNS else v for k, v in row.items()}


def csv_text(rows: list[dict], added: list[str] = ()) -> str:
    """grades.csv from rows (dicts of CSV_COLUMNS, and of the columns an instructor `added`), sorted by student,
    assignment and notebook."""
    columns = list(CSV_COLUMNS) + [c for c in added if c not in CSV_COLUMNS]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: (r.get("student", ""), r.get("assignment", ""), r.get("notebook", ""))):
        writer.writerow({k: row.get(k, "") for k in columns})
    return out.getvalue()


def function_output(report: Report, function: str, book_url: str = "") -> str:
    """What the tests of one function found, as the text of a notebook cell's output."""
    results = results_by_function(report).get(function, [])
    named = diagnoses(results)
    lines = []
    for r in results:
        lines.append(f"{'PASS' if r.passed else 'FAIL'}  {r.case_id}: {r.description}"
                     f"{' (hidden test)' if r.hidden else ''}  {fmt_points(r.earned)}/{fmt_points(r.points)}")
        lines += ["    " + p.replace("\n", "\n    ") for p in r.problems]
        if any(r is d for d in named):
            lines.append("    " + mistake_line(r, book_url))
    if results:
        lines.append(f"{function}: {fmt_points(sum(r.earned for r in results))}/"
                     f"{fmt_points(sum(r.points for r in results))}")
    return "\n".join(lines) + "\n"


# Gradescope shows results as the plain text they are: a traceback's indentation kept, no HTML or Markdown of
# the student's rendered
PLAIN_TEXT = {"output_format": "text", "test_output_format": "text", "test_name_format": "text"}


def gradescope(report: Report, book_url: str = "") -> dict:
    """Gradescope's autograder results (results.json): one test per case, hidden ones shown after publishing.

    Each test also carries its named mistake (`mistake`, null when none), and
    `extra_data` the run's seed and flags, which Gradescope keeps but does not show.
    """
    tests = []
    for r in report.results:
        output = "\n".join(r.problems)
        if r.mistake:
            output += ("\n" if output else "") + mistake_line(r, book_url)
        tests.append({"name": f"{r.case_id}: {r.description}", "score": r.earned, "max_score": r.points,
                      "status": "passed" if r.passed else "failed", "output": output,
                      "visibility": "after_published" if r.hidden else "visible",
                      "mistake": r.mistake.name if r.mistake else None})
    return {"score": report.score, "execution_time": round(report.seconds, 2),
            "output": "\n".join(report.notes + adjustment_lines(report)),
            "stdout_visibility": "hidden", "tests": tests,
            **PLAIN_TEXT,
            "extra_data": {"seed": report.seed, "flags": report.flags, "notebook": report.notebook,
                           "adjustments": [{"why": w, "points": p} for w, p in report.adjustments]}}


def write_gradescope(report: Report, path: Path, book_url: str = "") -> None:
    write_results(path, gradescope(report, book_url))


def write_results(path: Path, results: dict) -> None:
    """A results.json, written whole (never half) and never through a link."""
    safe.write_atomic(path, json.dumps(results, indent=1) + "\n")


def feedback_html(report: Report, book_url: str = "") -> str:
    """A self-contained page a student can open: score, each function's tests and subtotal, what to read."""
    esc = html.escape
    rows = []
    for function, results in results_by_function(report).items():
        earned, possible = sum(r.earned for r in results), sum(r.points for r in results)
        rows.append(f"<tr class='function'><th colspan='2'>{esc(function)}</th>"
                    f"<th>{fmt_points(earned)}/{fmt_points(possible)}</th></tr>")
        named = diagnoses(results)
        for r in results:
            detail = "".join(f"<pre>{esc(p)}</pre>" for p in r.problems)
            if any(r is d for d in named):
                link = esc(book_url + r.mistake.section)
                detail += (f"<p class='mistake'>This matches a known mistake: {esc(r.mistake.message)}. "
                           f"<a href='{link}'>The book explains it.</a></p>")
            rows.append(f"<tr class='{'pass' if r.passed else 'fail'}'><td>{'PASS' if r.passed else 'FAIL'}</td>"
                        f"<td>{esc(r.case_id)}<br><small>{esc(r.description)}"
                        f"{' (hidden test)' if r.hidden else ''}</small>{detail}</td>"
                        f"<td>{fmt_points(r.earned)}/{fmt_points(r.points)}</td></tr>")
    notes = "".join(f"<pre class='note'>{esc(n)}</pre>" for n in report.notes)
    flags = "".join(f"<li>{esc(f)}</li>" for f in report.flags)
    if flags:
        flags = f"<div class='flags'><p>Flagged for the instructor's review (a static read of the code found):</p><ul>{flags}</ul></div>"
    adjustments = "".join(f"<p>{esc(line)}</p>" for line in adjustment_lines(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Feedback: {esc(report.assignment)}</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ border-top: 1px solid #ccc; padding: .4rem; vertical-align: top; }}
tr.function th {{ text-align: left; background: #eef; }}
tr.pass td:first-child {{ color: #176317; }} tr.fail td:first-child {{ color: #a11; font-weight: bold; }}
pre {{ white-space: pre-wrap; background: #f6f6f6; padding: .4rem; }} .mistake {{ background: #fff4d6; padding: .4rem; }}
.flags {{ background: #fde; padding: .4rem; }}
</style></head><body>
<h1>{esc(report.assignment)}: {fmt_points(report.score)} / {fmt_points(report.max_score)}</h1>
<p>{esc(report.student)} &middot; {esc(report.notebook)}</p>
{notes}{flags}{adjustments}
<table>{''.join(rows)}</table>
</body></html>
"""
