"""Grading throughput: this course's sandboxed grader beside stock `nbgrader autograde`, on one batch.

    python scripts/bench_grading.py [--n 40] [--jobs N] [--class-size 6] [--json FILE] [--keep DIR]

Builds a throwaway nbgrader course (source directory: the repository's
solutions/; a gradebook from `nbgrader generate_assignment`), puts N
submissions of 01-forward in its submitted/ folder (a quarter each: correct,
the release untouched, gamma forgotten in layernorm_forward, the unbiased
variance in batchnorm_forward), then grades the batch twice, each with a
fresh copy of the gradebook:

- stock:  nbgrader autograde 01-forward   (one kernel per notebook, one at a time)
- ours:   python -m autograder grade submitted --jobs N --gradebook ... --autograded ...
          (bubblewrap sandbox per submission, N at a time)

and prints seconds per submission for each (wall time of the whole command,
start-up included), and the scores both gave, which agree on this batch: it
holds no hostile submission, so stock nbgrader's grades are right here.

Then it grades a class of --class-size correct notebooks (the solved release)
of every assignment with this grader alone, and prints the seconds per
notebook of each. With --json it writes every figure, with the machine's cores
and load, to FILE; the instructors' page of the book draws
chapters/data/grading.json (`make bench-grading` writes it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402

from autograder.cells import defined_names  # noqa: E402
from autograder.course import notebooks, read, solved_release  # noqa: E402
from autograder.release import nbgrader  # noqa: E402
from normgrad.cases import ASSIGNMENTS, load  # noqa: E402

ASSIGNMENT = "01-forward"
SLIPS = {  # (function, text in the solution, replacement): one slip each
    "gamma-forgotten": ("layernorm_forward", "out = gamma * normalized + beta", "out = normalized + beta"),
    "unbiased-variance": ("batchnorm_forward", "(deviation ** 2).sum(axis=0) / n", "(deviation ** 2).sum(axis=0) / (n - 1)"),
}


def solved() -> nbformat.NotebookNode:
    return solved_release(ASSIGNMENT)


def slipped(kind: str) -> nbformat.NotebookNode:
    nb = solved()
    function, old, new = SLIPS[kind]
    for cell in nb.cells:
        if cell.cell_type == "code" and function in defined_names(cell.source):
            if old not in cell.source:
                raise SystemExit(f"the solution of {function} changed: {old!r} not found; update SLIPS")
            cell.source = cell.source.replace(old, new)
    return nb


def batch(n: int) -> list[tuple[str, nbformat.NotebookNode]]:
    kinds = ["correct", "release", "gamma-forgotten", "unbiased-variance"]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        nb = solved() if kind == "correct" else read(notebooks(ASSIGNMENT).release) if kind == "release" else slipped(kind)
        out.append((f"s{i:03d}-{kind}", nb))
    return out


def must(done: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def scores_from_gradebook(db: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        return {s.student_id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}


def grade_seconds(submitted: Path, out: Path, jobs: int, *extra: str) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds of `python -m autograder grade` on `submitted`, start-up included, run from out's folder."""
    start = time.perf_counter()
    done = must(subprocess.run([sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(out),
                                *extra, "--jobs", str(jobs)], cwd=out.parent, capture_output=True, text=True),
                "python -m autograder grade")
    return time.perf_counter() - start, done


def class_times(work: Path, size: int, jobs: int) -> dict[str, dict]:
    """Each assignment: `size` solved notebooks graded as one class, and the seconds it took."""
    times = {}
    for assignment in ASSIGNMENTS:
        course = work / "classes" / assignment
        for i in range(size):
            folder = course / "submitted" / f"s{i:03d}" / assignment
            folder.mkdir(parents=True)
            nbformat.write(solved_release(assignment), str(folder / notebooks(assignment).name))
        seconds, _ = grade_seconds(course / "submitted", course / "grades", jobs)
        with open(course / "grades" / "grades.csv") as f:
            full = all(float(r["score"]) == float(r["max_score"]) for r in csv.DictReader(f))
        if not full:
            raise SystemExit(f"a solved notebook of {assignment} lost points: see {course / 'grades'}")
        cases = load(assignment)
        times[assignment] = {"cases": len(cases.cases), "max_score": cases.max_score, "notebooks": size,
                             "seconds": round(seconds, 2)}
        print(f"class of {size} of {assignment:<24} ({len(cases.cases):>2} cases): {seconds:6.1f} s, "
              f"{seconds / size:5.2f} s per notebook", flush=True)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="submissions in the batch (default: 40)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="our grader's --jobs (default: cores)")
    parser.add_argument("--class-size", type=int, default=6,
                        help="correct notebooks of every assignment graded as a class (default: 6; 0 skips it)")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--keep", metavar="DIR", help="build the courses in DIR and keep them")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        template = work / "template"
        template.mkdir(parents=True)
        must(nbgrader("generate_assignment", ASSIGNMENT, "--force", course=template), "nbgrader generate_assignment")
        for student, nb in batch(args.n):
            folder = template / "submitted" / student / ASSIGNMENT
            folder.mkdir(parents=True)
            nbformat.write(nb, str(folder / notebooks(ASSIGNMENT).name))
            (folder / "timestamp.txt").write_text("2026-01-15 10:30:00.000000 UTC")
        stock, ours = work / "stock", work / "ours"
        for course in (stock, ours):
            shutil.copytree(template, course)

        start = time.perf_counter()
        must(nbgrader("autograde", ASSIGNMENT, course=stock), "nbgrader autograde")
        stock_seconds = time.perf_counter() - start

        our_seconds, done = grade_seconds(ours / "submitted", ours / "grades", args.jobs, "--course-dir", str(ours))

        stock_scores, our_scores = scores_from_gradebook(stock / "gradebook.db"), scores_from_gradebook(ours / "gradebook.db")
        with open(ours / "grades" / "grades.csv") as f:
            csv_scores = {r["student"]: float(r["score"]) for r in csv.DictReader(f)}
        by_kind: dict[str, set] = {}
        for student in our_scores:
            by_kind.setdefault(student.split("-", 1)[1], set()).add((stock_scores.get(student), our_scores[student]))
        sandbox = next((line for line in done.stderr.splitlines() if line.startswith("sandbox:")), "sandbox: ?")
        print(f"batch: {args.n} submissions of {ASSIGNMENT} on {os.cpu_count()} cores "
              f"(correct, untouched release, gamma forgotten, unbiased variance)")
        print(f"stock nbgrader autograde : {stock_seconds:7.1f} s in all, {stock_seconds / args.n:6.2f} s per submission")
        print(f"python -m autograder     : {our_seconds:7.1f} s in all, {our_seconds / args.n:6.2f} s per submission "
              f"(--jobs {args.jobs})")
        print(f"ratio (ours / stock)     : {our_seconds / stock_seconds:.2f}")
        print(f"scores (stock, ours) by kind: " + "; ".join(f"{kind} {sorted(pairs)}" for kind, pairs in by_kind.items())
              + "  (stock nbgrader scores a test cell all or nothing; ours gives each case its points)")
        print(f"our gradebook and grades.csv agree: {our_scores == csv_scores}")
        print(sandbox)
        classes = class_times(work, args.class_size, args.jobs) if args.class_size > 0 else {}
        if args.json:
            figures = {
                "date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "jobs": args.jobs,
                "load_average": {"before": [round(x, 2) for x in load_before],
                                 "after": [round(x, 2) for x in os.getloadavg()]},
                "sandbox": sandbox.removeprefix("sandbox: "),
                "batch": {"assignment": ASSIGNMENT, "submissions": args.n,
                          "stock_seconds_per_submission": round(stock_seconds / args.n, 3),
                          "our_seconds_per_submission": round(our_seconds / args.n, 3),
                          "scores_by_kind": {kind: sorted(map(list, pairs), key=str) for kind, pairs in by_kind.items()},
                          "gradebook_and_csv_agree": our_scores == csv_scores},
                "classes": classes,
            }
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
            print(f"wrote {args.json}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
