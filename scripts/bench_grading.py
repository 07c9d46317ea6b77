"""Grading throughput: this course's sandboxed grader beside stock `nbgrader autograde`, on one batch.

    python scripts/bench_grading.py [--n 40] [--jobs N] [--keep DIR]

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
"""

from __future__ import annotations

import argparse
import csv
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="submissions in the batch (default: 40)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="our grader's --jobs (default: cores)")
    parser.add_argument("--keep", metavar="DIR", help="build the courses in DIR and keep them")
    args = parser.parse_args(argv)

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

        start = time.perf_counter()
        done = must(subprocess.run([sys.executable, "-m", "autograder", "grade", str(ours / "submitted"),
                                    "--out", str(ours / "grades"), "--course-dir", str(ours), "--jobs", str(args.jobs)],
                                   cwd=ours, capture_output=True, text=True), "python -m autograder grade")
        our_seconds = time.perf_counter() - start

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
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
