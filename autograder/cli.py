"""python -m autograder: check one notebook, grade a class, generate the student release.

    python -m autograder check NOTEBOOK [--assignment ID] [--gradescope results.json]
    python -m autograder grade SUBMISSIONS --out DIR [--jobs N] [--gradebook URL] [--autograded DIR]
    python -m autograder release [ID ...]

SUBMISSIONS is nbgrader's submitted layout: SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from normgrad.cases import ASSIGNMENTS

from . import release, report
from .grading import CaseResult, Report, default_sandbox, grade
from .private import PrivateCasesError, resolve, with_private
from .sandbox import Limits, SandboxError


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


def _sandbox(args):
    try:
        return default_sandbox(args.sandbox)
    except SandboxError as e:
        raise SystemExit(f"--sandbox {args.sandbox}: {e}") from None


def _check_private(args, assignments) -> str | None:
    path = resolve(args.private)
    if path is not None:
        from normgrad.cases import load

        try:
            for assignment in assignments:
                with_private(load(assignment), path)
        except PrivateCasesError as e:
            raise SystemExit(str(e)) from None
    return path


def cmd_check(args) -> int:
    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise SystemExit(f"no such notebook: {notebook}")
    assignment = args.assignment or infer_assignment(notebook)
    private = _check_private(args, [assignment])
    result = grade(notebook, assignment, box=_sandbox(args), private=private, limits=_limits(args))
    print(report.text(result, book_url=args.book_url))
    print(f"  sandbox: {result.isolation}")
    if args.gradescope:
        report.write_gradescope(result, Path(args.gradescope), args.book_url)
    return 0


def _limits(args) -> Limits:
    if args.memory_mb < 256:
        raise SystemExit("--memory-mb must be at least 256")
    return Limits(memory_bytes=args.memory_mb << 20)


def _safe_grade(path: Path, assignment: str, student: str, box, private, limits) -> Report:
    """Grade, turning a grader bug into a zero with a note instead of a stopped batch."""
    try:
        return grade(path, assignment, student, box=box, private=private, limits=limits)
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


class Progress:
    """A progress bar on stderr: on a terminal it redraws one line; elsewhere it prints every tenth."""

    def __init__(self, total: int, stream=sys.stderr, width: int = 30):
        self.total, self.stream, self.width = total, stream, width
        self.done, self.start, self.shown = 0, time.monotonic(), -1
        self.tty = hasattr(stream, "isatty") and stream.isatty()

    def step(self) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.start
        per = elapsed / self.done
        filled = self.width * self.done // max(self.total, 1)
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} graded, "
                f"{per:.2f} s each, {per * (self.total - self.done):.0f} s left")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
        elif self.done * 10 // max(self.total, 1) != self.shown or self.done == self.total:
            self.shown = self.done * 10 // max(self.total, 1)
            self.stream.write(line + "\n")
        self.stream.flush()


def cmd_grade(args) -> int:
    root, out = Path(args.submissions), Path(args.out)
    if not root.is_dir():
        raise SystemExit(f"no such folder: {root}")
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    course = Path(args.course_dir) if args.course_dir else None
    db = args.gradebook or (f"sqlite:///{(course / 'gradebook.db').resolve()}" if course else None)
    autograded = Path(args.autograded) if args.autograded else (course / "autograded" if course else None)
    found = list(submissions(root))
    known = sorted({a for _, a, _ in found if a in ASSIGNMENTS})
    private = _check_private(args, known)
    if db or autograded:
        from . import gradebook  # nbgrader's database layer: slow to import, needed only here
    if db:
        try:
            for assignment in known:
                gradebook.check(db, assignment)
        except gradebook.GradebookError as e:
            raise SystemExit(str(e)) from None
    box, limits = _sandbox(args), _limits(args)
    out.mkdir(parents=True, exist_ok=True)
    print(f"sandbox: {box.describe()}", file=sys.stderr)
    if box.mode != "bwrap":
        print("WARNING: the submissions run without bubblewrap; see the sandbox line above", file=sys.stderr)

    def work(item):
        student, assignment, notebook = item
        if assignment not in ASSIGNMENTS:
            result = Report(student, assignment, notebook.name, 0.0)
            result.notes.append(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
            result.results.append(CaseResult("-", "not graded", 0.0, 0.0, False, [result.notes[0]]))
            return item, result
        return item, _safe_grade(notebook, assignment, student, box, private, limits)

    results = []
    progress = Progress(len(found))
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in as_completed([pool.submit(work, item) for item in found]):
            (student, assignment, notebook), result = future.result()
            with lock:  # the gradebook and the files are written here only, one submission at a time
                results.append(result)
                folder = out / "feedback" / student / assignment
                folder.mkdir(parents=True, exist_ok=True)
                (folder / (notebook.stem + ".html")).write_text(report.feedback_html(result, args.book_url))
                (folder / (notebook.stem + ".txt")).write_text(report.text(result, book_url=args.book_url) + "\n")
                report.write_gradescope(result, folder / "results.json", args.book_url)
                if assignment in ASSIGNMENTS:
                    if db:
                        gradebook.record(db, result, notebook.parent)
                    if autograded:
                        gradebook.write_autograded(autograded, result, notebook.parent, args.book_url)
                print(f"{student:<20} {assignment:<24} {report.fmt_points(result.score):>6} / "
                      f"{report.fmt_points(result.max_score):<6} "
                      f"{result.notes[0].splitlines()[0] if result.notes else ''}", flush=True)
                progress.step()
    report.write_csv(results, out / "grades.csv")
    where = f"{out / 'grades.csv'}, {out / 'feedback'}/ (feedback pages and Gradescope results.json)"
    if db:
        where += f", the gradebook {db}"
    if autograded:
        where += f", {autograded}/"
    print(f"graded {len(results)} notebook(s); wrote {where}")
    return 0


def cmd_release(args) -> int:
    for assignment in args.assignments or list(ASSIGNMENTS):
        path = release.generate(assignment)
        print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--book-url", default=report.default_book_url(),
                       help="where the book lives, for the links in feedback (default: the local build, "
                            "_build/html/); e.g. https://example.org/normgrad/")
        p.add_argument("--private", metavar="FILE",
                       help="a Python file of private test cases kept outside the repository "
                            "(default: $AUTOGRADER_PRIVATE)")
        p.add_argument("--memory-mb", type=int, default=Limits.memory_bytes >> 20,
                       help="memory one submission may use, in MiB (default: %(default)s)")
        p.add_argument("--sandbox", choices=("auto", "bwrap", "fallback"), default="auto",
                       help="bwrap: require bubblewrap; fallback: run without it (less isolation); "
                            "auto (default): bubblewrap where it works")

    p = sub.add_parser("check", help="grade one notebook and print per-test results and a score")
    p.add_argument("notebook")
    p.add_argument("--assignment", choices=list(ASSIGNMENTS))
    p.add_argument("--gradescope", metavar="PATH", help="also write Gradescope's results.json to PATH")
    common(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("grade", help="grade every notebook under SUBMISSIONS/<student>/<assignment>/")
    p.add_argument("submissions")
    p.add_argument("--out", required=True, help="folder for grades.csv and feedback/")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="submissions graded at once (default: the number of cores)")
    p.add_argument("--gradebook", metavar="URL", help="nbgrader gradebook to update, e.g. sqlite:///course/gradebook.db")
    p.add_argument("--autograded", metavar="DIR",
                   help="write nbgrader's autograded/<student>/<assignment>/ notebooks here (for generate_feedback)")
    p.add_argument("--course-dir", metavar="ROOT",
                   help="an nbgrader course root: the gradebook defaults to ROOT/gradebook.db and "
                        "--autograded to ROOT/autograded")
    common(p)
    p.set_defaults(run=cmd_grade)

    p = sub.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    p.add_argument("assignments", nargs="*", metavar="ID", help="assignment ids (default: all)")
    p.set_defaults(run=cmd_release)
    args = parser.parse_args(argv)
    return args.run(args)
