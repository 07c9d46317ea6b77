"""python -m autograder: check one notebook, grade a class, generate the student release.

    python -m autograder check NOTEBOOK [--assignment ID]
    python -m autograder grade SUBMISSIONS --out DIR
    python -m autograder release [ID ...]

SUBMISSIONS is nbgrader's submitted layout: SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from normgrad.cases import ASSIGNMENTS

from . import release, report
from .grading import CaseResult, Report, grade


def infer_assignment(notebook: Path) -> str:
    """The assignment a notebook belongs to, from its folder or its file name."""
    if notebook.parent.name in ASSIGNMENTS:
        return notebook.parent.name
    for assignment in ASSIGNMENTS:
        source = release.notebooks(assignment).source
        if source.name == notebook.name:
            return assignment
    raise SystemExit(f"cannot tell which assignment {notebook} belongs to; pass --assignment "
                     f"(one of {', '.join(ASSIGNMENTS)})")


def cmd_check(args) -> int:
    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise SystemExit(f"no such notebook: {notebook}")
    assignment = args.assignment or infer_assignment(notebook)
    result = grade(notebook, assignment)
    print(report.text(result))
    return 0


def _safe_grade(path: Path, assignment: str, student: str) -> Report:
    """Grade, turning a grader bug into a zero with a note instead of a stopped batch."""
    try:
        return grade(path, assignment, student)
    except Exception:
        print(f"internal error while grading {path}:\n{traceback.format_exc()}", file=sys.stderr)
        result = Report(student, assignment, path.name, 0.0)
        result.notes.append("the grader failed on this notebook (an internal error); ask the instructor")
        return result


def submissions(root: Path):
    """(student, assignment, notebook path) for each notebook in nbgrader's submitted layout."""
    for student in sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in student.iterdir() if p.is_dir()):
            for notebook in sorted(folder.glob("*.ipynb")):
                yield student.name, folder.name, notebook


def cmd_grade(args) -> int:
    root, out = Path(args.submissions), Path(args.out)
    if not root.is_dir():
        raise SystemExit(f"no such folder: {root}")
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for student, assignment, notebook in submissions(root):
        if assignment not in ASSIGNMENTS:
            result = Report(student, assignment, notebook.name, 0.0)
            result.notes.append(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
            result.results.append(CaseResult("-", "not graded", 0.0, 0.0, False, [result.notes[0]]))
        else:
            result = _safe_grade(notebook, assignment, student)
        results.append(result)
        folder = out / "feedback" / student / assignment
        folder.mkdir(parents=True, exist_ok=True)
        (folder / (notebook.stem + ".html")).write_text(report.feedback_html(result))
        (folder / (notebook.stem + ".txt")).write_text(report.text(result) + "\n")
        print(f"{student:<20} {assignment:<24} {report.fmt_points(result.score):>6} / "
              f"{report.fmt_points(result.max_score):<6} {result.notes[0].splitlines()[0] if result.notes else ''}")
    report.write_csv(results, out / "grades.csv")
    print(f"graded {len(results)} notebook(s); wrote {out / 'grades.csv'} and {out / 'feedback'}/")
    return 0


def cmd_release(args) -> int:
    for assignment in args.assignments or list(ASSIGNMENTS):
        path = release.generate(assignment)
        print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="grade one notebook and print per-test results and a score")
    p.add_argument("notebook")
    p.add_argument("--assignment", choices=list(ASSIGNMENTS))
    p.set_defaults(run=cmd_check)
    p = sub.add_parser("grade", help="grade every notebook under SUBMISSIONS/<student>/<assignment>/")
    p.add_argument("submissions")
    p.add_argument("--out", required=True, help="folder for grades.csv and feedback/")
    p.set_defaults(run=cmd_grade)
    p = sub.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    p.add_argument("assignments", nargs="*", metavar="ID", help="assignment ids (default: all)")
    p.set_defaults(run=cmd_release)
    args = parser.parse_args(argv)
    return args.run(args)
