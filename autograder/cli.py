"""python -m autograder: check one notebook, grade a class, generate the student release.

    python -m autograder check NOTEBOOK [--assignment ID] [--gradescope results.json] [--seed N]
    python -m autograder grade SUBMISSIONS --out DIR [--student NAME] [--jobs N] [--course-dir ROOT] [--seed N]
    python -m autograder release [ID ...]

SUBMISSIONS is nbgrader's submitted layout: SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from normgrad.cases import ASSIGNMENTS

from . import release, report, safe, summary
from .cells import MAX_FILE_BYTES
from .grading import CaseResult, Report, default_sandbox, grade, new_seed, not_graded
from .outputs import GradesFileError, Outputs, check_writable, rows_without_notebook
from .private import PrivateCasesError, resolve, with_private
from .sandbox import Limits, SandboxError, Stopped, stop_all
from .submissions import SubmissionError, Submission, scan


# The names copies get: Colab's "Copy of forward.ipynb", a browser's "forward (1).ipynb"
_COPY_NAME = re.compile(r"^(?:Copy of )*(?P<stem>.+?)(?: ?\(\d+\))?\.ipynb$")


def infer_assignment(notebook: Path) -> str:
    """The assignment a notebook belongs to, from its folder or its file name (or a copy's name): the
    notebook's own name (forward.ipynb) or the assignment's (01-forward.ipynb)."""
    if notebook.parent.name in ASSIGNMENTS:
        return notebook.parent.name
    match = _COPY_NAME.match(notebook.name)
    stem = match["stem"] if match else None
    for assignment in ASSIGNMENTS:
        source = release.notebooks(assignment).source
        if source.name in (notebook.name, f"{stem}.ipynb") or stem == assignment:
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


def _gradescope_path(args) -> Path | None:
    """Where --gradescope writes, refused before any grading unless its folder exists (none is made)."""
    if not args.gradescope:
        return None
    path = Path(args.gradescope)
    if path.is_dir():
        raise SystemExit(f"--gradescope {safe.name(path)} is a folder: give the path of the file to write")
    if not path.parent.is_dir():
        raise SystemExit(f"--gradescope {safe.name(path)}: there is no folder {safe.name(path.parent)} "
                         "(it is not made; make it first)")
    return path


def cmd_check(args) -> int:
    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise SystemExit(f"no such notebook: {notebook}")
    results = _gradescope_path(args)
    assignment = args.assignment or infer_assignment(notebook)
    private = _check_private(args, [assignment])
    result = grade(notebook, assignment, box=_sandbox(args), private=private, limits=_limits(args), seed=args.seed)
    print(report.text(result, book_url=args.book_url))
    print(f"  sandbox: {result.isolation}")
    print(f"  seed: {result.seed} (--seed {result.seed} replays this grade)")
    if results is not None:
        try:
            report.write_gradescope(result, results, args.book_url)
        except OSError as e:
            raise SystemExit(f"--gradescope {safe.name(results)}: cannot write it ({e.strerror or e})") from None
    return 0


def _limits(args) -> Limits:
    if args.memory_mb < 256:
        raise SystemExit("--memory-mb must be at least 256")
    if args.time_limit is not None and not args.time_limit > 0:
        raise SystemExit("--time-limit must be a positive number of seconds")
    return Limits(memory_bytes=args.memory_mb << 20, notebook_seconds=args.time_limit)


INTERNAL_ERROR = "the grader failed on this notebook (an internal error); ask the instructor"


def unknown_assignment(folder: str) -> str:
    """Why the notebook in a folder named as no assignment (a typo, another course's) is not graded: said in its
    row, its feedback and a warning. `folder` is the name its results are filed under (safe to print)."""
    close = difflib.get_close_matches(folder, ASSIGNMENTS, n=1)
    return (f"not graded: '{folder}' is not an assignment of this course"
            + (f" (did you mean {close[0]}?)" if close else "")
            + f"; a notebook goes in a folder named as its assignment, one of {', '.join(ASSIGNMENTS)}")


def _safe_grade(sub: Submission, box, private, limits, seed: int) -> Report:
    """Read and grade one submission, turning a grader bug into a note instead of a stopped batch."""
    student, assignment, name = sub.student, sub.assignment, sub.notebook_name
    if sub.folder[1] not in ASSIGNMENTS:
        result = Report(student, assignment, name, 0.0, seed=seed)
        result.notes.append(unknown_assignment(assignment))
        result.results.append(CaseResult("-", "not graded", 0.0, 0.0, False, [result.notes[0]]))
        return result
    try:
        data = sub.read_notebook(MAX_FILE_BYTES)
    except SubmissionError as e:
        result = not_graded(student, assignment, name, str(e), private, seed)
    else:
        try:
            result = grade(sub.path, assignment, student, box=box, private=private, limits=limits, seed=seed,
                           data=data, notebook=name)
        except Stopped as e:  # the run is ending (stop_all): this notebook's results are not written
            result = not_graded(student, assignment, name, str(e), private, seed)
        except Exception:
            print(f"internal error while grading {safe.name(sub.path)}:\n{safe.text(traceback.format_exc())}",
                  file=sys.stderr)
            result = not_graded(student, assignment, name, INTERNAL_ERROR, private, seed)
    result.notes[:0] = sub.warnings()
    return result


def _nbgrader_config(args, course: Path | None) -> Path | None:
    """The nbgrader_config.py whose late penalty applies: --nbgrader-config, else the course folder's, else the
    current folder's (where nbgrader itself reads one); None where there is none."""
    if args.nbgrader_config:
        path = Path(args.nbgrader_config)
        if not path.is_file():
            raise SystemExit(f"--nbgrader-config {safe.name(path)}: no such file; nothing graded, nothing written")
        return path
    for folder in ([course] if course else []) + [Path.cwd()]:
        if (folder / "nbgrader_config.py").is_file():
            return folder / "nbgrader_config.py"
    return None


def one_student_folder(root: Path) -> str | None:
    """An assignment folder with notebooks directly under root, which is then one student's folder, not the class's."""
    for assignment in ASSIGNMENTS:
        folder = root / assignment
        try:
            if folder.is_dir() and not folder.is_symlink() and any(n.endswith(".ipynb") for n in os.listdir(folder)):
                return assignment
        except OSError:
            continue
    return None


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
        said = f"{safe.name(root)}: {'not a folder' if root.exists() else 'no such folder'}"
        if root.exists() or root.suffix == ".ipynb":  # one notebook given, which `check` grades
            said += ("; grade takes a folder of submissions, SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb; "
                     f"to grade one notebook: python -m autograder check {shlex.quote(safe.escaped(str(root)))}")
        raise SystemExit(said)
    if args.jobs < 1:
        raise SystemExit("--jobs must be at least 1")
    if out.exists() and not out.is_dir():
        raise SystemExit(f"--out {safe.name(out)} is a file, not a folder: give a folder for grades.csv and feedback/")
    if out.is_symlink() and not out.exists():
        raise SystemExit(f"--out {safe.name(out)} is a link to nothing (or a loop of links): give a folder for "
                         "grades.csv and feedback/")
    inner = one_student_folder(root)
    if inner is not None:
        raise SystemExit(f"{root}/{safe.name(inner)}/ holds notebooks: {root} looks like one student's folder, not "
                         f"nbgrader's submitted/ (SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb). To grade one "
                         f"student: python -m autograder grade {shlex.quote(safe.escaped(str(root.parent)))} "
                         f"--student={shlex.quote(safe.name(root.name))} --out ...")
    course = Path(args.course_dir) if args.course_dir else None
    db = args.gradebook or (f"sqlite:///{(course / 'gradebook.db').resolve()}" if course else None)
    autograded = Path(args.autograded) if args.autograded else (course / "autograded" if course else None)

    def expected(assignment: str):
        return release.notebooks(assignment).name if assignment in ASSIGNMENTS else None

    def warn(message: str) -> None:
        print(f"WARNING: {message}", file=sys.stderr)

    found = scan(root, expected, warn)
    if args.student:
        wanted = set(args.student)
        found = [s for s in found if s.folder[0] in wanted or s.student in wanted]
        missing = wanted - {s.folder[0] for s in found} - {s.student for s in found}
        if missing:
            raise SystemExit(f"no notebook of {', '.join(safe.name(m) for m in sorted(missing))} under "
                             f"{safe.name(root)}/<student>/<assignment>/")
    if args.assignment:
        found = [s for s in found if s.folder[1] == args.assignment]
    if not found:
        raise SystemExit(f"no notebooks under {root} (expected {root}/<student>/<assignment>/<notebook>.ipynb); "
                         "nothing graded, nothing written")
    for s in found:  # its row says "not graded" too, but a row is easily missed in the table
        if s.folder[1] not in ASSIGNMENTS:
            warn(f"{s.student}/{s.assignment}: {unknown_assignment(s.assignment)}")
    known = sorted({s.folder[1] for s in found if s.folder[1] in ASSIGNMENTS})
    stamped = sum(s.timestamp_kind is not None for s in found)
    if stamped and not db:
        warn(f"{stamped} of the submissions have a timestamp.txt, but no gradebook was given (--course-dir or "
             "--gradebook): no due date is known, so no late penalty is applied")
    private = _check_private(args, known)
    penalties = None
    if db or autograded:
        from . import gradebook  # nbgrader's database layer: slow to import, needed only here
    if db:
        try:
            for assignment in known:
                gradebook.check(db, assignment)
        except gradebook.GradebookError as e:
            raise SystemExit(str(e)) from None
        config = _nbgrader_config(args, course)
        if stamped and config is None:
            warn(f"{stamped} of the submissions have a timestamp.txt, but no nbgrader_config.py was found "
                 "(--nbgrader-config, --course-dir's, or the current folder's): nbgrader's default late penalty "
                 "applies, which is none")
        penalties = gradebook.late_penalties(config)
    box, limits = _sandbox(args), _limits(args)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"--out {safe.name(out)}: cannot make this folder ({e.strerror or e})") from None
    try:  # before any grading, not after the class's last notebook
        check_writable(out)
    except GradesFileError as e:
        raise SystemExit(str(e)) from None
    print(f"sandbox: {box.describe()}", file=sys.stderr)
    if box.mode != "bwrap":
        print("WARNING: the submissions run without bubblewrap; see the sandbox line above", file=sys.stderr)
    outputs = Outputs(out, args.book_url, db, autograded, penalties)

    def work(sub: Submission):
        seed = args.seed if args.seed is not None else new_seed()
        try:
            return sub, _safe_grade(sub, box, private, limits, seed)
        except Exception:  # even the report of a failure failed: a bare row, and the class goes on
            print(f"internal error on {safe.name(sub.path)}:\n{safe.text(traceback.format_exc())}", file=sys.stderr)
            result = Report(sub.student, sub.assignment, sub.notebook_name, 0.0, notes=[INTERNAL_ERROR], seed=seed)
            return sub, result

    written, failed = set(), []  # the futures whose results are written
    progress = Progress(len(found))
    lock = threading.Lock()

    def record(future) -> None:
        """Write one notebook's results. A Ctrl-C or SIGTERM waits for the write (signals_held); one that lands
        before it makes the handler do the record again (each file is written whole, so again is harmless),
        counted once."""
        sub, result = future.result()
        # the gradebook and the files are written here only, one submission at a time
        with lock, signals_held(signal.SIGINT, signal.SIGTERM):
            if future in written:
                return
            try:
                result = outputs.write(result, sub.timestamp, known=sub.folder[1] in ASSIGNMENTS)
                written.add(future)
                first = report.one_line(result.notes[0])[:200] if result.notes else ""
                print(f"{result.student:<20} {result.assignment:<24} {report.fmt_points(result.score):>6} / "
                      f"{report.fmt_points(result.max_score):<6} {first}", flush=True)
            except GradesFileError as e:  # grades.csv changed under the run: said in a line, not a traceback
                failed.append(sub.student)
                print(f"could not write the results of {sub.student} ({sub.assignment}): {e}", file=sys.stderr)
            except Exception:  # this student's outputs only: the class goes on
                failed.append(sub.student)
                print(f"could not write the results of {sub.student} ({sub.assignment}):\n"
                      f"{safe.text(traceback.format_exc())}", file=sys.stderr)
            progress.step()

    pool = ThreadPoolExecutor(max_workers=args.jobs)
    futures = [pool.submit(work, sub) for sub in found]
    pending = set(futures)
    interrupted = terminated = False
    caller_sigterm = _on_sigterm(_terminate)
    try:
        for future in as_completed(futures):
            record(future)
            pending.discard(future)
    except Terminated:
        # SIGTERM (a batch system's time limit, which signals the sandboxes too): start no one new and write
        # nothing of the notebooks being graded, whose jobs may have been killed; the rows written are kept
        _on_sigterm(caller_sigterm)  # a second SIGTERM does what it did before the run
        interrupted = terminated = True
        # a future written just before the signal, not yet taken out of `pending`, is not being graded
        started = [f for f in pending if f not in written and not f.cancel()]
        being = f", and writing none of the {len(started)} being graded" if started else " (none was being graded)"
        print(f"\nterminated: grading no more notebooks{being}", file=sys.stderr, flush=True)
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()  # their jobs end now, and none starts: the run ends in seconds
    except KeyboardInterrupt:
        # Ctrl-C: start no one new, and write what is being graded now; a second Ctrl-C leaves that too
        interrupted = True
        # with the one whose record the Ctrl-C cut short, not one written before it and still in `pending`
        started = [f for f in pending if f not in written and not f.cancel()]
        being = f"; writing the {len(started)} being graded (Ctrl-C again to leave them)" if started else ""
        print(f"\ninterrupted: grading no more notebooks{being}", file=sys.stderr, flush=True)
        try:
            for future in as_completed(started):
                record(future)
        except KeyboardInterrupt:  # the second: those being graded are left unwritten, and the run ends as the first
            left = sum(f not in written for f in started)
            print(f"\ninterrupted again: leaving the {left} being graded unwritten", file=sys.stderr, flush=True)
            pool.shutdown(wait=False, cancel_futures=True)
            stop_all()
    try:  # a Ctrl-C or SIGTERM from here on lands after the last notebook was written (or left): said, not a
        # traceback or a silent end
        pool.shutdown(wait=not terminated)
        try:
            figures = summary.write(out)
        except OSError as e:  # the disk filled, or the folder was taken away, during the run
            print(f"ERROR: could not write {safe.name(out)}/summary.html and summary.csv ({e.strerror or e}); "
                  f"grades.csv and the feedback written so far are kept", file=sys.stderr)
            return 1
        where = (f"{out / 'grades.csv'}, {out / 'feedback'}/ (feedback pages and Gradescope results.json), "
                 f"{out / 'summary.html'} and summary.csv")
        if db:
            where += f", the gradebook {db}"
        if autograded:
            where += f", {autograded}/"
        print(f"graded {len(written)} notebook(s); wrote {where}")
        # the whole class was scanned: a row nobody was found for is worth a look (a --student run looks at no
        # other row)
        try:
            filed = {(safe.name(s.student), safe.name(s.assignment)) for s in found}
            absent = [] if args.student else rows_without_notebook(out, filed)
        except GradesFileError:  # grades.csv changed under the run; each student it stopped was named above
            absent = []
        named = set(absent)
        for assignment, a in figures.items():
            # the summary counts every student's results.json; say how many of them the NOTE below names
            gone = sum((safe.csv_cell(s), safe.csv_cell(assignment)) in named for s in a.students)
            mean = report.fmt_points(round(sum(a.scores) / len(a.scores), 2))
            print(f"  {assignment}: {len(a.scores)} graded in all"
                  + (f" ({gone} of them with no notebook this run: see the NOTE below)" if gone else "")
                  + f", mean {mean} / {report.fmt_points(a.max_score)}", flush=True)  # before the NOTE, on stderr
            if a.mixed():
                warn(f"{assignment}: {a.mixed()}")
        if absent:
            print(f"NOTE: grades.csv keeps {len(absent)} row(s) of students with no notebook under {safe.name(root)} "
                  "this run (renamed, withdrawn, or filed under another name by an earlier grader); kept, as "
                  "every row is: " + ", ".join(f"{safe.name(s)} ({safe.name(a)})" for s, a in absent[:20])
                  + (f" and {len(absent) - 20} more" if len(absent) > 20 else ""), file=sys.stderr)
    except (KeyboardInterrupt, Terminated) as stop:
        interrupted, terminated = True, terminated or isinstance(stop, Terminated)
        done = "every notebook was written" if len(written) == len(found) else "the grading ended"
        print(f"\n{'terminated' if isinstance(stop, Terminated) else 'interrupted'} after {done}: summary.html and "
              f"summary.csv may be out of date (the next grade run into {safe.name(out)} writes them again)",
              file=sys.stderr, flush=True)
    finally:
        _on_sigterm(caller_sigterm)
    if interrupted:
        print(f"INTERRUPTED: {len(written)} of {len(found)} notebook(s) graded and written, every earlier row kept; "
              "the same command grades the class again", file=sys.stderr)
    if failed:
        print(f"ERROR: the results of {len(failed)} notebook(s) could not be written: {', '.join(failed)}; "
              "see above, fix, and grade them again with --student", file=sys.stderr)
        return 1
    return (143 if terminated else 130) if interrupted else 0


@contextlib.contextmanager
def signals_held(*signums):
    """Hold these signals back while a block runs in the main thread, and deliver each one that came once it
    ends. A Ctrl-C inside nbgrader's database session (SQLAlchemy midway through a flush) left SQLite locked,
    and every later write of the run failed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in signums}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(came):
            signal.raise_signal(signum)


class Terminated(BaseException):
    """SIGTERM reached the grader (a BaseException, as KeyboardInterrupt is: no `except Exception` takes it)."""


def _terminate(signum, frame):
    raise Terminated()


def _on_sigterm(handler):
    """Make `handler` what SIGTERM does, in the main thread (only there can it be set: a caller in a thread
    keeps its own); returns what it did before, to be put back."""
    if threading.current_thread() is not threading.main_thread():
        return None
    before = signal.signal(signal.SIGTERM, handler)
    return signal.SIG_DFL if before is None else before


def cmd_release(args) -> int:
    for assignment in args.assignments or list(ASSIGNMENTS):
        path = release.generate(assignment)
        print(f"wrote {path}")
    return 0


MAX_SEED = 2**64 - 1


def seed_argument(text: str) -> int:
    """--seed: a whole number from 0 to MAX_SEED (the grader draws them below 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 2**64 - 1")
    return value


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a name this terminal cannot show is escaped, not fatal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--book-url", default=None,
                       help="where the book's chapter pages are published, for the links in feedback "
                            "(default: html: baseurl: of _config.yml, then chapters/)")
        p.add_argument("--seed", type=seed_argument, default=None,
                       help="the seed of the hidden inputs (default: a fresh one per notebook); a grade's seed is "
                            "in grades.csv and results.json, and the same seed replays that grade")
        p.add_argument("--private", metavar="FILE",
                       help="a Python file of private test cases kept outside the repository "
                            "(default: $AUTOGRADER_PRIVATE)")
        p.add_argument("--memory-mb", type=int, default=Limits.memory_bytes >> 20,
                       help="memory one submission may use, in MiB (default: %(default)s)")
        p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                       help="the most one notebook's grading may take, all its tests together; the tests not run "
                            "by then score nothing, and the feedback says so (default: none, each test has its own)")
        p.add_argument("--sandbox", choices=("auto", "bwrap", "fallback"), default="auto",
                       help="bwrap: require bubblewrap; fallback: run without it (less isolation); "
                            "auto (default): bubblewrap where it works")

    p = sub.add_parser("check", help="grade one notebook and print per-test results and a score")
    p.add_argument("notebook")
    p.add_argument("--assignment", choices=list(ASSIGNMENTS),
                   help="the assignment the notebook answers (default: from its folder or file name)")
    p.add_argument("--gradescope", metavar="PATH", help="also write Gradescope's results.json to PATH (its folder must exist)")
    common(p)
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("grade", help="grade every notebook under SUBMISSIONS/<student>/<assignment>/")
    p.add_argument("submissions")
    p.add_argument("--out", required=True, help="folder for grades.csv and feedback/ (made, with its parents, if missing)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="submissions graded at once (default: the number of cores)")
    p.add_argument("--gradebook", metavar="URL", help="nbgrader gradebook to update, e.g. sqlite:///course/gradebook.db")
    p.add_argument("--autograded", metavar="DIR",
                   help="write nbgrader's autograded/<student>/<assignment>/ notebooks here (for generate_feedback)")
    p.add_argument("--course-dir", metavar="ROOT",
                   help="an nbgrader course root: the gradebook defaults to ROOT/gradebook.db, "
                        "--autograded to ROOT/autograded and --nbgrader-config to ROOT/nbgrader_config.py")
    p.add_argument("--nbgrader-config", metavar="FILE",
                   help="the nbgrader_config.py whose late penalty (AssignLatePenalties) applies to late work "
                        "(default: that of --course-dir, else of the current folder, as nbgrader reads it)")
    p.add_argument("--student", action="append", metavar="NAME",
                   help="grade only this student (repeatable); the other rows of grades.csv stay as they are")
    p.add_argument("--assignment", choices=list(ASSIGNMENTS), help="grade only this assignment")
    common(p)
    p.set_defaults(run=cmd_grade)

    p = sub.add_parser("release", help="regenerate exercises/ from solutions/ with nbgrader")
    p.add_argument("assignments", nargs="*", metavar="ID", help="assignment ids (default: all)")
    p.set_defaults(run=cmd_release)
    args = parser.parse_args(argv)
    if getattr(args, "book_url", "x") is None:
        try:
            args.book_url = report.default_book_url()
        except (OSError, ValueError) as e:
            raise SystemExit(str(e)) from None
    if getattr(args, "book_url", None) and not args.book_url.endswith("/"):  # the folder of the chapter pages
        args.book_url += "/"
    return args.run(args)
