"""python -m autograder as its users run it: `check` for a reader, `grade` for an instructor."""

import csv
import subprocess
import sys

import nbformat
import pytest

from autograder.cli import infer_assignment
from helpers import GAMMA_FORGOTTEN, solved, submission, write
from normgrad.cases import load

FULL = load("01-forward").max_score  # every function of exercise 01 right


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "autograder", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_check_prints_each_test_and_full_marks_for_the_solution(root):
    done = run("check", "solutions/01-forward/forward.ipynb", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "PASS  hidden   layernorm_forward/tiny-variance" in done.stdout
    assert "FAIL" not in done.stdout
    assert f"score: {FULL:g}/{FULL:g}" in done.stdout


def test_check_explains_a_failure_on_the_release(root):
    done = run("check", "exercises/01-forward/forward.ipynb", cwd=root)
    assert done.returncode == 0
    assert "NotImplementedError" in done.stdout and f"score: 0/{FULL:g}" in done.stdout


@pytest.mark.parametrize("name", ["Copy of forward.ipynb", "forward (1).ipynb", "Copy of Copy of forward (2).ipynb",
                                  "forward(3).ipynb", "01-forward.ipynb", "Copy of 01-forward (1).ipynb"])
def test_a_copy_of_an_exercise_notebook_is_known_by_its_name(name, tmp_path):
    """Colab saves "Copy of forward.ipynb"; a browser downloads a second "forward (1).ipynb"."""
    assert infer_assignment(tmp_path / name) == "01-forward"
    with pytest.raises(SystemExit, match="--assignment"):
        infer_assignment(tmp_path / name.replace("forward", "backward"))


def test_check_refuses_a_notebook_of_no_known_assignment(root, tmp_path):
    stray = tmp_path / "mine.ipynb"
    stray.write_text("{}")
    done = run("check", str(stray), cwd=root)
    assert done.returncode != 0 and "--assignment" in done.stderr


def test_in_a_numpy_exercise_an_unused_import_of_torch_costs_nothing_and_a_use_costs_its_function(root, tmp_path):
    """torch, and sympy, which differentiates symbolically (it scored a red-team Jacobian full marks in 03)."""
    nb = solved("01-forward")
    cells = {name: next(c for c in nb.cells if c.cell_type == "code" and f"def {name}(" in c.source)
             for name in ("layernorm_forward", "rmsnorm_forward", "batchnorm_forward")}
    cells["layernorm_forward"].source = "import torch\n" + cells["layernorm_forward"].source
    cells["rmsnorm_forward"].source = "import torch\n_zeros = torch.zeros\n" + cells["rmsnorm_forward"].source
    cells["batchnorm_forward"].source = "import sympy\n_diff = sympy.diff\n" + cells["batchnorm_forward"].source
    path = tmp_path / "forward.ipynb"
    nbformat.write(nb, str(path))
    done = run("check", str(path), "--assignment", "01-forward", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "torch.zeros cannot be used in this exercise: it is answered with NumPy" in done.stdout
    assert "sympy.diff cannot be used in this exercise: it is answered with NumPy" in done.stdout
    lost = load("01-forward").points_of("rmsnorm_forward") + load("01-forward").points_of("batchnorm_forward")
    assert f"score: {FULL - lost:g}/{FULL:g}" in done.stdout


def test_grading_timestamped_work_without_a_gradebook_says_no_late_penalty_is_applied(tmp_path):
    folder = write(solved("01-forward"), tmp_path / "submitted", "alice", "01-forward").parent
    (folder / "timestamp.txt").write_text("2026-01-15 10:30:00.000000 UTC")
    done = run("grade", "submitted", "--out", "grades", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("WARNING: 1 of the submissions have a timestamp.txt, but no gradebook was given (--course-dir or "
            "--gradebook): no due date is known, so no late penalty is applied") in done.stderr


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """A class of submissions, most of them broken in some way, graded in one command."""
    root = tmp_path_factory.mktemp("submitted")
    write(solved("01-forward"), root, "alice", "01-forward")
    bad_json = write(solved("01-forward"), root, "bob", "01-forward")
    bad_json.write_text('{"cells": [ {"cell_type": "code", "source": "def layer')
    deleted = solved("01-forward")
    deleted.cells = [c for c in deleted.cells if "def batchnorm_forward" not in c.source]
    write(deleted, root, "carol", "01-forward")
    raising = "import numpy as np\n1 / 0\n\ndef layernorm_forward(x, g, b, eps=1e-5):\n    return x"
    write(submission("01-forward", {"layernorm_forward": raising}, base=solved("01-forward")), root, "dave", "01-forward")
    broken = "def layernorm_forward(x, g, b, eps=1e-5):\n    return (x"
    write(submission("01-forward", {"layernorm_forward": broken}, base=solved("01-forward")), root, "erin", "01-forward")
    (root / "frank" / "99-unknown").mkdir(parents=True)
    (root / "frank" / "99-unknown" / "forward.ipynb").write_text("{}")
    (root / "grace").mkdir()  # submitted nothing
    out = tmp_path_factory.mktemp("grades")
    done = run("grade", str(root), "--out", str(out), cwd=tmp_path_factory.getbasetemp())
    assert done.returncode == 0, done.stderr
    with open(out / "grades.csv") as f:
        grades = {(r["student"], r["assignment"]): r for r in csv.DictReader(f)}
    return done.stdout, grades, out


def test_grade_writes_the_csv_columns_and_a_table(batch):
    stdout, grades, out = batch
    assert {"student", "assignment", "score", "max_score"} <= set(next(iter(grades.values())))
    assert "alice" in stdout and f"{FULL:g} / {FULL:g}" in stdout
    assert (out / "feedback" / "alice" / "01-forward" / "forward.html").is_file()
    assert f"<h1>01-forward: {FULL:g} / {FULL:g}</h1>" in (out / "feedback" / "alice" / "01-forward" / "forward.html").read_text()


def test_the_honest_student_gets_full_marks_whatever_the_rest_did(batch):
    _, grades, _ = batch
    assert grades[("alice", "01-forward")]["score"] == f"{FULL:g}"


@pytest.mark.parametrize("student,score,note", [
    ("bob", "0", "not valid notebook JSON"),
    ("carol", f"{FULL - 12:g}", "no cell defines batchnorm_forward"),
    ("dave", f"{FULL - 12:g}", "ZeroDivisionError"),
    ("erin", f"{FULL - 12:g}", "SyntaxError"),
    ("frank", "0", "not graded: '99-unknown' is not an assignment of this course"),
])
def test_broken_submissions_score_what_they_earn_with_a_reason(batch, student, score, note):
    _, grades, out = batch
    [(key, row)] = [(k, r) for k, r in grades.items() if k[0] == student]
    assert row["score"] == score
    feedback = next((out / "feedback" / student).rglob("*.txt")).read_text()
    assert note in feedback


def test_a_student_with_no_notebook_is_not_in_the_grades(batch):
    _, grades, _ = batch
    assert not any(k[0] == "grace" for k in grades)


def test_an_endless_loop_fails_its_function_quickly_and_spares_the_other(tmp_path):
    from autograder.grading import grade

    loop = "def layernorm_forward(x, gamma, beta, eps=1e-5):\n    while True:\n        pass"
    path = write(submission("01-forward", {"layernorm_forward": loop}, base=solved("01-forward")),
                 tmp_path, "loopy", "01-forward")
    report = grade(path, "01-forward")
    assert report.score == FULL - 12
    failed = [r for r in report.results if not r.passed]
    assert {r.case_id.split("/")[0] for r in failed} == {"layernorm_forward"}
    assert "time limit" in " ".join(failed[0].problems)


def test_a_notebook_out_of_time_keeps_the_points_of_the_tests_that_ran(root, tmp_path):
    """Gradescope ends a run past its timeout with a 0 and no word: `--time-limit` stops the notebook's tests short
    of it. A batchnorm_forward that sleeps stays inside its own test's limit (a sleep uses no CPU), so without the
    notebook's limit it would hold the run for minutes; with it, layernorm_forward's 12 points stand."""
    import json
    import time

    sleepy = "import time\n\ndef batchnorm_forward(x, gamma, beta, eps=1e-5):\n    time.sleep(600)\n"
    path = write(submission("01-forward", {"batchnorm_forward": sleepy}, base=solved("01-forward")),
                 tmp_path, "sleepy", "01-forward")
    results, started = tmp_path / "results.json", time.monotonic()
    done = run("check", str(path), "--time-limit", "15", "--gradescope", str(results), cwd=root)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert f"score: 12/{FULL:g}" in done.stdout and took < 60, (took, done.stdout)
    assert "grading stopped after 15 s, all the time one notebook may take here" in done.stdout
    tests = {t["name"]: t for t in json.loads(results.read_text())["tests"]}
    said = {name.split(" ")[0].split("/")[0]: t["output"] for name, t in tests.items() if t["score"] == 0}
    assert set(said) == {"batchnorm_forward", "groupnorm_forward", "rmsnorm_forward"}, said
    assert "not run: the time for grading the whole notebook ran out before this test" in said["rmsnorm_forward"]
    assert "was still running when the time for grading the whole notebook ran out" in done.stdout
    for bad in ("0", "-3", "nan"):
        refused = run("check", str(path), "--time-limit", bad, cwd=root)
        assert refused.returncode != 0 and "--time-limit must be a positive number" in refused.stderr


def test_check_says_how_it_sandboxed_and_writes_gradescope_results(root, tmp_path):
    import json

    results = tmp_path / "results.json"
    done = run("check", "solutions/01-forward/forward.ipynb", "--gradescope", str(results), cwd=root)
    assert done.returncode == 0, done.stderr
    sandbox = next(line for line in done.stdout.splitlines() if line.strip().startswith("sandbox:"))
    assert "bubblewrap" in sandbox or "FALLBACK" in sandbox
    data = json.loads(results.read_text())
    assert data["score"] == FULL and sum(t["max_score"] for t in data["tests"]) == FULL
    

def test_a_run_that_finds_no_notebook_stops_and_keeps_the_class_grades(tmp_path):
    from autograder.cli import main

    out = tmp_path / "grades"
    out.mkdir()
    kept = "student,assignment,score\nalice,01-forward,24\n"
    (out / "grades.csv").write_text(kept)
    frank = tmp_path / "submitted" / "frank" / "01-forward"
    frank.mkdir(parents=True)
    write(solved("01-forward"), tmp_path / "submitted", "frank", "01-forward")
    with pytest.raises(SystemExit, match="one student's folder"):  # submitted/frank given for submitted/
        main(["grade", str(tmp_path / "submitted" / "frank"), "--out", str(out)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no notebooks"):
        main(["grade", str(tmp_path / "empty"), "--out", str(out)])
    assert (out / "grades.csv").read_text() == kept


def test_grade_given_one_notebook_says_grade_takes_a_folder_and_check_grades_a_notebook(root, tmp_path):
    """`grade forward.ipynb` said "no such folder", as if the notebook were not there."""
    notebook = write(solved("01-forward"), tmp_path, "alice", "01-forward")
    done = run("grade", str(notebook), "--out", str(tmp_path / "grades"), cwd=root)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "not a folder; grade takes a folder of submissions, SUBMISSIONS/<student>/<assignment>/" in done.stderr
    assert f"to grade one notebook: python -m autograder check {notebook}" in done.stderr
    assert not (tmp_path / "grades").exists()
    # a file named by someone else in a shared folder: its name is printed escaped, never as terminal codes
    hostile = tmp_path / "a\x1b[2Jb\nc.ipynb"
    hostile.write_text("{}")
    done = run("grade", str(hostile), "--out", str(tmp_path / "grades"), cwd=root)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "\x1b" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "not a folder; grade takes a folder of submissions" in done.stderr, done.stderr


def test_a_folder_named_as_no_assignment_is_named_on_stderr_and_its_row_says_not_graded(tmp_path):
    """A typo (06-trition) or another course's folder got a 0 / 0 row noted only "unknown assignment", and the run
    said nothing of it beside the table; the row is kept (the student's feedback says where the notebook goes)."""
    from normgrad.cases import ASSIGNMENTS

    root = tmp_path / "submitted"
    write(solved("01-forward"), root, "alice", "01-forward")
    for student, folder in (("alice", "06-trition"), ("bob\x1b[2J", "07-unknown")):
        (root / student / folder).mkdir(parents=True)
        (root / student / folder / "x.ipynb").write_text("{}")
    done = run("grade", "submitted", "--out", "grades", "--jobs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "grades" / "grades.csv", encoding="utf-8") as f:
        rows = {(r["student"][:3], r["assignment"]): r for r in csv.DictReader(f)}
    assert rows[("ali", "01-forward")]["score"] == f"{FULL:g}"  # the rest of the class is graded
    known = ", ".join(ASSIGNMENTS)
    assert rows[("ali", "06-trition")]["notes"] == (
        "not graded: '06-trition' is not an assignment of this course (did you mean 06-triton?); a notebook goes "
        f"in a folder named as its assignment, one of {known}")
    assert rows[("bob", "07-unknown")]["notes"].startswith("not graded: '07-unknown' is not an assignment")
    warnings = [line for line in done.stderr.splitlines() if "is not an assignment" in line]
    assert warnings[0].startswith("WARNING: alice/06-trition: not graded: '06-trition' is not an assignment")
    assert warnings[1].startswith("WARNING: bob\\x1b[2J~") and known in warnings[1]
    assert "\x1b" not in done.stderr


@pytest.mark.parametrize("seed,says", [("-1", "not between 0 and 2**64 - 1"), (str(2**64), "not between"),
                                       ("1e3", "not a whole number")])
def test_a_bad_seed_is_a_usage_error_not_a_traceback(root, seed, says, capsys):
    from autograder.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["check", str(root / "solutions/01-forward/forward.ipynb"), "--seed", seed])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --seed: " in err and says in err and "Traceback" not in err


def test_gradescope_results_go_only_into_a_folder_that_exists(root, tmp_path):
    from autograder.cli import main

    notebook = str(root / "solutions/01-forward/forward.ipynb")
    missing = tmp_path / "no" / "such" / "results.json"
    with pytest.raises(SystemExit, match=r"there is no folder .*no/such \(it is not made"):
        main(["check", notebook, "--gradescope", str(missing)])
    assert not (tmp_path / "no").exists()
    with pytest.raises(SystemExit, match="is a folder"):
        main(["check", notebook, "--gradescope", str(tmp_path)])


def test_grade_refuses_an_out_that_is_a_file_in_one_line(tmp_path):
    from autograder.cli import main

    (tmp_path / "submitted").mkdir()
    taken = tmp_path / "grades"
    taken.write_text("not a folder")
    with pytest.raises(SystemExit, match="is a file, not a folder") as stop:
        main(["grade", str(tmp_path / "submitted"), "--out", str(taken)])
    assert "\n" not in str(stop.value.code) and taken.read_text() == "not a folder"


@pytest.mark.parametrize("target", ["nowhere", "loop"])
def test_grade_refuses_an_out_that_links_to_nothing_in_one_line(tmp_path, target):
    from autograder.cli import main

    (tmp_path / "submitted").mkdir()
    link = tmp_path / "grades"
    link.symlink_to(tmp_path / target if target == "nowhere" else link)
    with pytest.raises(SystemExit, match="is a link to nothing") as stop:  # it said "cannot make this folder (File exists)"
        main(["grade", str(tmp_path / "submitted"), "--out", str(link)])
    assert "\n" not in str(stop.value.code)


def test_a_book_url_without_its_last_slash_still_links_into_the_chapter_pages(tmp_path):
    """--book-url names the folder of the chapter pages; given without the closing slash, the links in feedback
    joined the folder's name to the page's ('.../chapters01-forward.html')."""
    notebook = write(submission("01-forward", {"layernorm_forward": GAMMA_FORGOTTEN}, base=solved("01-forward")),
                     tmp_path, "ann", "01-forward")
    done = run("check", str(notebook), "--book-url", "https://example.org/normgrad/chapters", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "https://example.org/normgrad/chapters/01-forward.html#scale-and-shift" in done.stdout, done.stdout


def test_a_folder_with_nothing_to_grade_is_named_not_passed_over(tmp_path):
    """A notebook under another name (Forward.IPYNB, forward.ipynb.txt), one put in the student's folder itself,
    an empty folder: a whole-class run used to leave them out without a word."""
    root = tmp_path / "submitted"
    write(solved("01-forward"), root, "alice", "01-forward")
    (root / "hank" / "01-forward" / "sub").mkdir(parents=True)
    (root / "hank" / "01-forward" / "Forward.IPYNB").write_text("{}")
    (root / "ivy").mkdir()
    (root / "ivy" / "forward.ipynb").write_text("{}")
    (root / "jo" / "01-forward").mkdir(parents=True)
    (root / "kim").mkdir()
    # a name made to forge a line of the grader's output: shown escaped, on the warning's own line
    (root / "lee" / "01-forward").mkdir(parents=True)
    (root / "lee" / "01-forward" / "x\x1b[2J\nWARNING: all graded.txt").write_text("")
    done = run("grade", str(root), "--out", str(tmp_path / "grades"), "--jobs", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if line.startswith("WARNING: skipped")]
    assert warned == [
        f"WARNING: skipped {root}/hank/01-forward: no notebook (a file named *.ipynb) in it "
        "(found Forward.IPYNB, sub/)",
        f"WARNING: skipped {root}/ivy: no assignment folder in it (found forward.ipynb); a notebook goes in "
        "<student>/<assignment>/",
        f"WARNING: skipped {root}/jo/01-forward: no notebook (a file named *.ipynb) in it (it is empty)",
        f"WARNING: skipped {root}/kim: no assignment folder in it (it is empty); a notebook goes in "
        "<student>/<assignment>/",
        f"WARNING: skipped {root}/lee/01-forward: no notebook (a file named *.ipynb) in it "
        "(found x\\x1b[2J\\nWARNING: all graded.txt)"], done.stderr
    assert "\x1b" not in done.stderr and "\nWARNING: all graded" not in done.stderr
    with open(tmp_path / "grades" / "grades.csv") as f:
        assert [r["student"] for r in csv.DictReader(f)] == ["alice"]


@pytest.mark.parametrize("name", ["-rf", "with space", "o'neil"])
def test_the_command_suggested_for_one_students_folder_runs_in_a_shell(tmp_path, name):
    """Given submitted/<student> for submitted/, the grader stops with the command to use: quoted for a shell,
    and with --student=NAME, so that a name starting with '-' is not read as an option."""
    import shlex

    from autograder.cli import main

    write(solved("01-forward"), tmp_path / "sub mitted", name, "01-forward")
    with pytest.raises(SystemExit) as stopped:
        main(["grade", str(tmp_path / "sub mitted" / name), "--out", str(tmp_path / "grades")])
    suggested = shlex.split(str(stopped.value).split("To grade one student: ")[1])
    assert suggested[:6] == ["python", "-m", "autograder", "grade", str(tmp_path / "sub mitted"), f"--student={name}"]
    assert not (tmp_path / "grades").exists()
