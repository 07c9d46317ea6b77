"""Writing grades down: the terminal, grades.csv and per-student feedback."""

from __future__ import annotations

import csv
import html
from pathlib import Path

from .grading import Report

CSV_COLUMNS = ("student", "assignment", "notebook", "score", "max_score", "passed", "failed", "notes")


def fmt_points(x: float) -> str:
    return f"{x:g}"


def text(report: Report, show_hidden_problems: bool = True) -> str:
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
            lines.append(f"          this matches a known mistake: {r.mistake.message}"
                         f" (the book explains it: {r.mistake.section})")
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
        for report in reports:
            writer.writerow(csv_row(report))


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
