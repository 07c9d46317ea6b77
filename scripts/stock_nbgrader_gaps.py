"""What stock `nbgrader autograde` lets a submission do, shown on 01-forward, beside this course's grader.

    python scripts/stock_nbgrader_gaps.py [--json FILE] [--keep DIR]

Sets up a throwaway nbgrader course in nbgrader's standard layout (source/,
submitted/, autograded/, gradebook.db in one folder, as `nbgrader quickstart`
makes it), puts in one honest submission and a few that try tricks, grades
the batch with stock `nbgrader autograde` and with `python -m autograder
grade`, and prints each submission's score from both. With --json it writes
them to FILE: the instructors' page of the book draws its table from
chapters/data/stock-nbgrader.json (`make bench-grading` writes it); rerun it
after upgrading nbgrader.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import nbformat  # noqa: E402

from autograder.cells import defined_names  # noqa: E402
from autograder.course import notebooks  # noqa: E402
from normgrad.cases import load  # noqa: E402
from bench_grading import ASSIGNMENT, must, scores_from_gradebook, solved  # noqa: E402

WRONG = "\n\n_honest = layernorm_forward\n\ndef layernorm_forward(*args, **kwargs):\n" \
        "    y, cache = _honest(*args, **kwargs)\n    return y * 1.5 + 1, cache\n"

TRICKS = {
    "aa-honest": ("a correct submission", ""),
    "bb-stderr-warning": ("a correct submission whose layernorm_forward raises a warning (printed on stderr)",
                          "\n\n_quiet = layernorm_forward\n\ndef layernorm_forward(*args, **kwargs):\n"
                          "    import warnings\n    warnings.warn('a harmless warning')\n"
                          "    return _quiet(*args, **kwargs)\n"),
    "cc-rebind-run-tests": ("a wrong layernorm_forward, and `run_tests` rebound to a no-op",
                            WRONG + "\nrun_tests = lambda *args, **kwargs: None\n"),
    "dd-input-transformer": ("a wrong layernorm_forward, and an IPython input transformer that empties later cells",
                             WRONG + "\nget_ipython().input_transformers_cleanup.append(lambda lines: [])\n"),
    "ee-array-subclass": ("a wrong layernorm_forward returning an ndarray subclass whose subtraction gives zeros",
                          "\n\nimport numpy as _np\nclass _Zero(_np.ndarray):\n"
                          "    def __sub__(self, other): return _np.zeros(self.shape)\n"
                          "    __rsub__ = __sub__\n" + WRONG.replace("return y * 1.5 + 1, cache",
                                                                  "return (y * 1.5 + 1).view(_Zero), cache")),
    "ff-read-source": ("a correct submission that copies the source notebook (hidden tests) into its output",
                       "\n\nprint(open('../../../source/01-forward/forward.ipynb').read().count('BEGIN HIDDEN TESTS'),"
                       " 'hidden test blocks read from the source notebook')\n"),
    "gg-edited-test-cell": ("a wrong layernorm_forward, and its test cell replaced by print('ok')", WRONG),
    "hh-tampered-metadata": ("a wrong layernorm_forward, its test cell's points set to 1000 and grade_ids swapped",
                             WRONG),
    "zz-write-gradebook": ("a correct submission that sets every other student's scores to 0 in gradebook.db",
                           "\n\nimport sqlite3\n_db = sqlite3.connect('../../../gradebook.db')\n"
                           "_db.execute(\"UPDATE grade SET auto_score = 0 WHERE notebook_id IN (SELECT sn.id FROM "
                           "submitted_notebook sn JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
                           "WHERE sa.student_id != 'zz-write-gradebook')\")\n_db.commit()\n"),
}


def submission(student: str, extra: str) -> nbformat.NotebookNode:
    nb = solved()
    for cell in nb.cells:
        if cell.cell_type == "code" and "layernorm_forward" in defined_names(cell.source):
            cell.source += extra
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if student == "gg-edited-test-cell" and meta.get("grade_id") == "test_layernorm_forward":
            cell.source = "print('ok')"
        if student == "hh-tampered-metadata" and meta.get("grade"):
            meta["points"] = 1000
            swapped = {"test_layernorm_forward": "test_batchnorm_forward",
                       "test_batchnorm_forward": "test_layernorm_forward"}
            meta["grade_id"] = swapped.get(meta["grade_id"], meta["grade_id"])
    return nb


def nbgrader(*args, course: Path) -> subprocess.CompletedProcess:
    """nbgrader with its own default layout under `course` (source/, release/, submitted/, ...)."""
    import os

    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={course}",
           f"--db=sqlite:///{course / 'gradebook.db'}", "--ClearSolutions.code_stub=python=raise NotImplementedError()"]
    return subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="write the scores and what each submission does to FILE")
    parser.add_argument("--keep", metavar="DIR")
    args = parser.parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="stock-gaps-"))
    try:
        course = work / "course"
        (course / "source").mkdir(parents=True)
        shutil.copytree(notebooks(ASSIGNMENT).source.parent, course / "source" / ASSIGNMENT)
        (course / "nbgrader_config.py").write_text("c = get_config()\n")
        must(nbgrader("generate_assignment", ASSIGNMENT, "--force", course=course), "nbgrader generate_assignment")
        for student, (_, extra) in TRICKS.items():
            folder = course / "submitted" / student / ASSIGNMENT
            folder.mkdir(parents=True)
            nbformat.write(submission(student, extra), str(folder / notebooks(ASSIGNMENT).name))
        pristine = work / "gradebook-before.db"
        shutil.copy(course / "gradebook.db", pristine)

        # Everyone but the gradebook writer first, then the writer alone: its effect on the others shows apart.
        writer = "zz-write-gradebook"
        stock = nbgrader("autograde", ASSIGNMENT, "--CourseDirectory.student_id_exclude=" + writer, course=course)
        stock_scores = scores_from_gradebook(course / "gradebook.db")
        must(nbgrader("autograde", ASSIGNMENT, "--student", writer, course=course), "nbgrader autograde (writer)")
        after_writer = scores_from_gradebook(course / "gradebook.db")
        stock_scores[writer] = after_writer[writer]
        read_source = (course / "autograded" / "ff-read-source" / ASSIGNMENT / notebooks(ASSIGNMENT).name)
        leaked = "hidden test blocks read from the source notebook" in read_source.read_text() \
            if read_source.exists() else False

        shutil.copy(pristine, course / "gradebook.db")
        ours = subprocess.run([sys.executable, "-m", "autograder", "grade", str(course / "submitted"),
                               "--out", str(work / "ours"), "--gradebook", f"sqlite:///{course / 'gradebook.db'}"],
                              cwd=course, capture_output=True, text=True)
        must(ours, "python -m autograder grade")
        with open(work / "ours" / "grades.csv") as f:
            our_scores = {r["student"]: float(r["score"]) for r in csv.DictReader(f)}

        print(f"stock nbgrader autograde (exit status {stock.returncode}) and python -m autograder on {ASSIGNMENT} "
              f"({load(ASSIGNMENT).max_score:g} points; a correct layernorm_forward is worth "
              f"{load(ASSIGNMENT).points_of('layernorm_forward'):g}):")
        print(f"{'submission':<22} {'stock':>6} {'ours':>6}  what it does")
        for student, (what, _) in TRICKS.items():
            print(f"{student:<22} {stock_scores.get(student, float('nan')):6g} {our_scores[student]:6g}  {what}")
        print(f"the source notebook's hidden tests were read into a stock-graded notebook's output: {leaked}")
        print(f"after stock nbgrader graded {writer}, the others' scores in its gradebook: "
              + ", ".join(f"{s} {after_writer[s]:g}" for s in sorted(after_writer) if s != writer))
        figures = {"stock": stock_scores, "stock_after_writer": after_writer, "ours": our_scores,
                   "hidden_tests_read": leaked}
        print(json.dumps(figures))
        if args.json:
            import nbgrader as stock_nbgrader

            figures.update(date=time.strftime("%Y-%m-%d"), nbgrader=stock_nbgrader.__version__,
                           assignment=ASSIGNMENT, max_score=load(ASSIGNMENT).max_score,
                           layernorm_forward_points=load(ASSIGNMENT).points_of("layernorm_forward"),
                           writer=writer, what={student: what for student, (what, _) in TRICKS.items()})
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
            print(f"wrote {args.json}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
