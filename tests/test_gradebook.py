"""The grader's outputs as nbgrader and Gradescope read them.

A throwaway nbgrader course (its source directory is the repository's
solutions/, its gradebook made by `nbgrader generate_assignment`, a due date,
and a configuration whose late penalty is nbgrader's 'zero'), four
submissions in its `submitted/` folder (one late), one `python -m autograder
grade --course-dir` run, and then nbgrader's own `export` and
`generate_feedback` must report the scores the grader gave. A score entered by
hand afterwards reaches grades.csv and results.json when that student is
regraded. Two more students: one whose folder holds a second notebook named
as an HTML tag and whose cell has an IPython line full of tags (the notes
that quote them must reach nbgrader's feedback page as text), and a folder
not in UTF-8 beside one named as it shows escaped (two ids in the gradebook).
"""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import GAMMA_FORGOTTEN, nbgrader, nbgrader_course, solved, submission, write
from normgrad.cases import load


FULL = load("01-forward").max_score  # every function of exercise 01 right
BOB = FULL - 11  # layernorm_forward with gamma forgotten earns 1 of its 12 points
TAG = "<img src=x onerror=alert(document.domain)>"
NOT_UTF8, ESCAPED = os.fsdecode(b"jos\xe9"), "jos\\udce9"  # a folder not in UTF-8, and one named as it shows
NOT_UTF8_ID = ESCAPED + "~" + hashlib.sha256(b"jos\xe9").hexdigest()[:8]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    nbgrader_course(root, ["01-forward"])
    from nbgrader.api import Gradebook
    from nbgrader.utils import parse_utc

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        gb.update_or_create_assignment("01-forward", duedate=parse_utc("2026-01-20 00:00:00 UTC"))
    (root / "nbgrader_config.py").write_text("c = get_config()\nc.LateSubmissionPlugin.penalty_method = 'zero'\n")
    submitted = root / "submitted"
    alice = write(solved("01-forward"), submitted, "alice", "01-forward")
    (alice.parent / "timestamp.txt").write_text("2026-01-15 10:30:00.000000 UTC")
    dan = write(solved("01-forward"), submitted, "dan", "01-forward")
    (dan.parent / "timestamp.txt").write_text("2026-01-21 12:00:00.000000 UTC")
    write(submission("01-forward", {"layernorm_forward": GAMMA_FORGOTTEN}, base=solved("01-forward")), submitted, "bob",
          "01-forward")
    write(submission("01-forward"), submitted, "carol", "01-forward")
    source = next(c.source for c in solved("01-forward").cells if "def layernorm_forward" in c.source)
    erin = write(submission("01-forward", {"layernorm_forward": f"%time {TAG} <script>alert(1)</script>\n{source}"},
                            base=solved("01-forward")), submitted, "erin", "01-forward")
    (erin.parent / f"{TAG}.ipynb").write_text("{}")
    write(solved("01-forward"), submitted, NOT_UTF8, "01-forward")
    write(submission("01-forward"), submitted, ESCAPED, "01-forward")
    done = subprocess.run([sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(root / "grades"),
                           "--course-dir", str(root), "--jobs", "2", "--book-url", "https://example.org/book/"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(root / "grades" / "grades.csv") as f:
        ours = {r["student"]: r for r in csv.DictReader(f)}
    return root, ours, done


def test_our_grades(course):
    _, ours, done = course
    assert ours["alice"]["score"] == f"{FULL:g}" and ours["carol"]["score"] == "0"
    # gamma forgotten: every layernorm_forward test fails but the one whose groups are constant (x_hat = 0)
    assert ours["bob"]["score"] == f"{BOB:g}"
    assert ours["erin"]["score"] == f"{FULL:g}"
    assert ours[NOT_UTF8_ID]["score"] == f"{FULL:g}" and ours[ESCAPED]["score"] == "0"
    assert "7/7 graded" in done.stderr  # the progress bar


def test_late_work_gets_the_penalty_configured_in_nbgrader(course):
    root, ours, _ = course
    assert ours["dan"]["score"] == "0" and ours["dan"]["max_score"] == f"{FULL:g}"
    assert f"late by 1 day, 12:00:00: the late penalty (LateSubmissionPlugin): -{FULL:g}" in ours["dan"]["notes"]
    results = json.loads((root / "grades" / "feedback" / "dan" / "01-forward" / "results.json").read_text())
    assert results["score"] == 0 and sum(t["score"] for t in results["tests"]) == FULL
    assert "late by" in (root / "grades" / "feedback" / "dan" / "01-forward" / "forward.txt").read_text()


def test_nbgrader_export_reports_the_same_scores(course):
    root, ours, _ = course
    done = nbgrader("export", "--to", str(root / "export.csv"), course=root)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(root / "export.csv") as f:
        exported = {r["student_id"]: r for r in csv.DictReader(f)}
    for student, row in ours.items():
        assert float(exported[student]["score"]) == float(row["score"]), student
        assert float(exported[student]["max_score"]) == float(row["max_score"])
    assert exported["alice"]["timestamp"].startswith("2026-01-15 10:30:00")


def test_nbgrader_generate_feedback_shows_scores_and_the_diagnosis(course):
    root, _, _ = course
    done = nbgrader("generate_feedback", "01-forward", course=root)
    assert done.returncode == 0, done.stdout + done.stderr
    bob = (root / "feedback" / "bob" / "01-forward" / "forward.html").read_text()
    assert f"{BOB:.1f} / {FULL:.1f}" in bob
    message = next(m.message for m in load("01-forward").mistakes
                   if m.function == "layernorm_forward" and m.name == "gamma-forgotten")
    assert message in bob
    assert "https://example.org/book/01-forward.html#scale-and-shift" in bob
    alice = (root / "feedback" / "alice" / "01-forward" / "forward.html").read_text()
    assert f"{FULL:.1f} / {FULL:.1f}" in alice
    # the grader's notes quote a file name and an IPython line full of tags: shown as text, not run
    erin = (root / "feedback" / "erin" / "01-forward" / "forward.html").read_text()
    assert "<img src=x" not in erin and "<script>alert" not in erin
    assert "&lt;img src=x onerror=alert(document.domain)&gt;.ipynb" in erin
    assert f"{FULL:.1f} / {FULL:.1f}" in (root / "feedback" / NOT_UTF8_ID / "01-forward" / "forward.html").read_text()
    assert f"0.0 / {FULL:.1f}" in (root / "feedback" / ESCAPED / "01-forward" / "forward.html").read_text()


def test_the_gradebook_holds_each_test_cells_score(course):
    from nbgrader.api import Gradebook

    root, _, _ = course
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        scores = {g.name: g.score for g in gb.find_submission_notebook("forward", "01-forward", "bob").grades}
        assert scores == {"test_layernorm_forward": 1.0, "test_batchnorm_forward": 12.0,
                          **{f"test_{f}": load("01-forward").points_of(f) for f in ("groupnorm_forward", "rmsnorm_forward")}}
        assert gb.find_submission("01-forward", "carol").score == 0.0


def test_gradescope_results_json(course):
    root, _, _ = course
    results = json.loads((root / "grades" / "feedback" / "bob" / "01-forward" / "results.json").read_text())
    assert results["score"] == BOB
    assert len(results["tests"]) == len(load("01-forward").cases)
    for test in results["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output", "visibility"}
        assert test["visibility"] in ("visible", "after_published")
    failed = [t for t in results["tests"] if t["status"] == "failed"]
    assert len(failed) == 10 and all(t["name"].startswith("layernorm_forward/") for t in failed)
    assert all(t["score"] == 0 and "scale gamma is missing" in t["output"] for t in failed)


def test_a_gradebook_without_the_assignment_is_refused_with_a_fix(tmp_path):
    submitted = tmp_path / "submitted"
    write(solved("01-forward"), submitted, "alice", "01-forward")
    done = subprocess.run([sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(tmp_path / "out"),
                           "--gradebook", f"sqlite:///{tmp_path / 'empty.db'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "nbgrader generate_assignment 01-forward" in done.stderr


def test_a_score_entered_by_hand_reaches_grades_csv_and_results_json(course):
    from nbgrader.api import Gradebook

    root, ours, _ = course
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        cell = next(g for g in gb.find_submission_notebook("forward", "01-forward", "bob").grades
                    if g.name == "test_layernorm_forward")
        cell.manual_score = 9.0
        gb.db.commit()
    done = subprocess.run([sys.executable, "-m", "autograder", "grade", str(root / "submitted"), "--out",
                           str(root / "grades"), "--course-dir", str(root), "--student", "bob"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(root / "grades" / "grades.csv") as f:
        now = {r["student"]: r for r in csv.DictReader(f)}
    assert now["bob"]["score"] == f"{BOB + 8:g}"  # BOB from the tests, the layernorm_forward cell's 1 replaced by 9
    assert "a score entered by hand, 9, replaces the grader's 1" in now["bob"]["notes"]
    assert {s: r for s, r in now.items() if s != "bob"} == {s: r for s, r in ours.items() if s != "bob"}
    results = json.loads((root / "grades" / "feedback" / "bob" / "01-forward" / "results.json").read_text())
    assert results["score"] == BOB + 8


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_inside_a_gradebook_write_lands_once_the_write_is_done(tmp_path, signum, status):
    """A Ctrl-C (or a batch system's SIGTERM) that lands while a row goes into the gradebook. It used to leave
    the gradebook's session open, the database locked, and every write after it failing ('database is
    locked'), exit status 1: the notebooks being graded were lost. Now the write ends first, then the signal
    does what it does elsewhere, and the gradebook agrees with grades.csv."""
    nbgrader_course(tmp_path, ["01-forward"])
    submitted = tmp_path / "submitted"
    for student in ("ann", "bob", "cat"):
        write(solved("01-forward"), submitted, student, "01-forward")
    # The grader signals itself while it writes bob's row, as a query of nbgrader's returns from SQLite: where a
    # Ctrl-C from the terminal most often lands, the lasting part of a write.
    run = ("import runpy, signal, autograder.gradebook as g\n"
           "from sqlalchemy.engine.default import DefaultDialect\n"
           "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
           "armed, execute = [], DefaultDialect.do_execute\n"
           "def do_execute(self, cursor, statement, *rest):\n"
           "    execute(self, cursor, statement, *rest)\n"
           "    if armed and statement.lstrip().upper().startswith('SELECT'):\n"
           "        armed.clear()\n"
           f"        signal.raise_signal({int(signum)})\n"
           "DefaultDialect.do_execute = do_execute\n"
           "class Signalling(g.Gradebook):\n"
           "    found = 0\n"
           "    def find_submission(self, assignment, student):\n"
           "        if student == 'bob':\n"
           "            Signalling.found += 1\n"
           "            armed.extend([1] if Signalling.found == 2 else [])\n"
           "        return super().find_submission(assignment, student)\n"
           "g.Gradebook = Signalling\n"
           "runpy.run_module('autograder', run_name='__main__', alter_sys=True)\n")
    done = subprocess.run([sys.executable, "-c", run, "grade", str(submitted), "--out", str(tmp_path / "grades"),
                           "--course-dir", str(tmp_path), "--jobs", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == status and "could not write" not in done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    with open(tmp_path / "grades" / "grades.csv") as f:
        ours = {r["student"]: r for r in csv.DictReader(f)}
    assert {"ann", "bob"} <= set(ours) and all(r["score"] == f"{FULL:g}" for r in ours.values()), ours
    exported = nbgrader("export", "--to", str(tmp_path / "export.csv"), course=tmp_path)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    with open(tmp_path / "export.csv") as f:
        scores = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f) if r["student_id"] in ours}
    assert scores == {student: float(FULL) for student in ours}


def test_a_gradebook_named_by_url_takes_the_late_penalty_of_the_folder_it_is_run_from(tmp_path):
    """--gradebook without --course-dir, run from the course folder: the late penalty is that folder's
    nbgrader_config.py's, as nbgrader reads it. It was nbgrader's default (none), silently, and the regrade
    cleared the penalty already in the gradebook. Run from elsewhere, it says so; a --nbgrader-config that is
    not there stops the run."""
    url = nbgrader_course(tmp_path, ["01-forward"])
    from nbgrader.api import Gradebook
    from nbgrader.utils import parse_utc

    with Gradebook(url) as gb:
        gb.update_or_create_assignment("01-forward", duedate=parse_utc("2026-01-20 00:00:00 UTC"))
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\nc.LateSubmissionPlugin.penalty_method = 'zero'\n")
    dan = write(solved("01-forward"), tmp_path / "submitted", "dan", "01-forward")
    (dan.parent / "timestamp.txt").write_text("2026-01-21 12:00:00.000000 UTC")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def grade(cwd, *extra):
        done = subprocess.run([sys.executable, "-m", "autograder", "grade", str(tmp_path / "submitted"), "--out",
                               str(tmp_path / "grades"), "--gradebook", url, *extra],
                              cwd=cwd, capture_output=True, text=True, timeout=600)
        with open(tmp_path / "grades" / "grades.csv") as f:
            return done, next(csv.DictReader(f))["score"] if done.returncode == 0 else None

    done, score = grade(tmp_path)
    assert done.returncode == 0 and score == "0" and "WARNING" not in done.stderr, done.stderr
    done, score = grade(elsewhere)
    assert done.returncode == 0 and score == f"{FULL:g}", done.stderr
    assert "but no nbgrader_config.py was found" in done.stderr and "which is none" in done.stderr
    done, _ = grade(elsewhere, "--nbgrader-config", str(elsewhere / "nbgrader_config.py"))
    assert done.returncode == 1 and "nbgrader_config.py: no such file; nothing graded" in done.stderr, done.stderr
