"""One class graded end to end through the sandbox: nothing a student hands in stops or skews it.

A batch in nbgrader's layout where most students hand in something odd (a
lone surrogate in an exception, a folder name that is not UTF-8 and one
named as it shows when escaped, a name that is a spreadsheet formula, a
FIFO, links to another student's notebook and to a root-only file, a
linked student folder, two notebooks, plots over 4 MiB, IPython lines,
nbformat 3, a function bound by assignment, a suspicious
import). The run is first killed midway, then run again; then one student is
regraded with `--student` and a recorded seed, and the grade replayed with
`check --seed`.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from autograder.cells import MAX_NOTEBOOK_BYTES
from helpers import GAMMA_FORGOTTEN, solved, submission, write
from normgrad.cases import load

FULL = load("01-forward").max_score  # every function of exercise 01 right
F = f"{FULL:g}"

NOT_UTF8 = os.fsdecode(b"caf\xe9")
ESCAPED = "caf\\udce9"  # named as NOT_UTF8 shows when escaped: the two keep two rows and two feedback folders
NOT_UTF8_KEY = ESCAPED + "~" + hashlib.sha256(b"caf\xe9").hexdigest()[:8]  # the escape, and a hash of the bytes
SECRET = "2026-01-15 10:30:00 UTC root-only-canary"


def grader(*args, cwd, **kw):
    return subprocess.run([sys.executable, "-m", "autograder", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, errors="backslashreplace", **kw)


def honest_source(function="layernorm_forward") -> str:
    return next(c.source for c in solved("01-forward").cells if f"def {function}" in c.source)


def stage(root: Path, tmp: Path) -> None:
    honest = solved("01-forward")
    write(honest, root, "alice", "01-forward")
    raising = "def layernorm_forward(x, gamma, beta, eps=1e-5):\n    raise ValueError('\\udc80 \\x1b[2J\\x00 ' * 3)"
    write(submission("01-forward", {"layernorm_forward": raising}, base=honest), root, "surrogate", "01-forward")
    write(honest, root, NOT_UTF8, "01-forward")
    write(submission("01-forward", {"layernorm_forward": GAMMA_FORGOTTEN}, base=honest), root, ESCAPED, "01-forward")
    write(honest, root, "=SUM(1+1)", "01-forward")
    (root / "fifo" / "01-forward").mkdir(parents=True)
    os.mkfifo(root / "fifo" / "01-forward" / "forward.ipynb")
    (root / "mallory" / "01-forward").mkdir(parents=True)
    (root / "mallory" / "01-forward" / "forward.ipynb").symlink_to(root / "alice" / "01-forward" / "forward.ipynb")
    (root / "eve").symlink_to(root / "alice")
    tim = write(honest, root, "tim", "01-forward")
    secret = tmp / "root-only.txt"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    (tim.parent / "timestamp.txt").symlink_to(secret)
    dup = write(submission("01-forward", {"layernorm_forward": GAMMA_FORGOTTEN}, base=honest), root, "dup", "01-forward")
    write(honest, root, "dup", "01-forward").rename(dup.parent / "forward (1).ipynb")
    write(submission("01-forward", {"layernorm_forward": GAMMA_FORGOTTEN}, base=honest), root, "dup", "01-forward")
    os.utime(dup, (1, 1))  # older than the other: still the one graded
    plots = copy.deepcopy(honest)
    for cell in plots.cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "A" * (MAX_NOTEBOOK_BYTES // 2)})]
    write(plots, root, "plots", "01-forward")
    magic = "%matplotlib inline\n!ls\n" + honest_source()
    write(submission("01-forward", {"layernorm_forward": magic}, base=honest), root, "magic", "01-forward")
    v3 = nbformat.v3.new_notebook(worksheets=[nbformat.v3.new_worksheet(cells=[
        nbformat.v3.new_code_cell(input=c.source) for c in honest.cells if c.cell_type == "code"])])
    (root / "old" / "01-forward").mkdir(parents=True)
    (root / "old" / "01-forward" / "forward.ipynb").write_text(nbformat.writes(v3, version=3))
    bound = honest_source().replace("def layernorm_forward(", "def _impl(") + "\n\nlayernorm_forward = _impl\n"
    write(submission("01-forward", {"layernorm_forward": bound}, base=honest), root, "bound", "01-forward")
    flagged = "import gc\n" + honest_source()
    write(submission("01-forward", {"layernorm_forward": flagged}, base=honest), root, "flagged", "01-forward")


EXPECTED = {  # student (as in grades.csv) -> (score, what the feedback must say)
    "alice": (F, f"score: {F}/{F}"),
    "surrogate": (f"{FULL - 12:g}", "ValueError: \\udc80 \\x1b[2J\\x00"),
    NOT_UTF8_KEY: (F, f"its results are filed as '{NOT_UTF8_KEY}'"),
    ESCAPED: (f"{FULL - 11:g}", "scale gamma is missing"),
    "'=SUM(1+1)": (F, f"score: {F}/{F}"),
    "fifo": ("0", "forward.ipynb is not a regular file"),
    "mallory": ("0", "forward.ipynb is a symbolic link"),
    "tim": (F, f"score: {F}/{F}"),
    "dup": (f"{FULL - 11:g}", "'forward.ipynb' was graded, not 'forward (1).ipynb'"),
    "plots": (F, f"score: {F}/{F}"),
    "magic": (F, "'%matplotlib inline', '!ls' are not Python"),
    "old": (F, f"score: {F}/{F}"),
    "bound": (F, f"score: {F}/{F}"),
    "flagged": (F, "flagged for the instructor's review: cell 'layernorm_forward' line 1: imports gc"),
}


def rows(out: Path) -> dict[str, dict]:
    with open(out / "grades.csv", encoding="utf-8") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def folder_of(student: str) -> str:
    return student[1:] if student.startswith("'") else student


def agree(out: Path) -> None:
    """Every row of grades.csv says what its student's feedback says."""
    for student, row in rows(out).items():
        results = json.loads((out / "feedback" / folder_of(student) / "01-forward" / "results.json").read_text())
        assert float(row["score"]) == results["score"], student
        assert row["seed"] == str(results["extra_data"]["seed"]), student


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    root, out = tmp / "submitted", tmp / "grades"
    root.mkdir()
    stage(root, tmp)
    command = [sys.executable, "-m", "autograder", "grade", str(root), "--out", str(out), "--jobs", "1"]
    killed = subprocess.Popen(command, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and killed.poll() is None:
        if (out / "grades.csv").exists() and len(rows(out)) >= 3:
            break
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    after_kill = rows(out)
    agree(out)
    done = grader("grade", str(root), "--out", str(out), "--jobs", "2", "--autograded", str(tmp / "autograded"),
                  cwd=tmp)
    return tmp, out, after_kill, done


def test_a_killed_run_leaves_a_consistent_csv_and_a_rerun_finishes(batch):
    _, out, after_kill, done = batch
    assert 3 <= len(after_kill) < len(EXPECTED)
    assert done.returncode == 0, done.stderr
    assert set(rows(out)) == set(EXPECTED)
    agree(out)
    assert not [p for p in out.rglob("*.tmp")]


@pytest.mark.parametrize("student", list(EXPECTED))
def test_each_student_gets_what_their_work_earns_with_the_reason(batch, student):
    _, out, _, _ = batch
    score, said = EXPECTED[student]
    assert rows(out)[student]["score"] == score
    assert said in (out / "feedback" / folder_of(student) / "01-forward" / "forward.txt").read_text()


def test_links_and_folders_that_are_links_are_not_graded_as_the_students(batch):
    tmp, out, _, done = batch
    assert "eve" not in rows(out) and "a symbolic link, not a student's folder" in done.stderr
    assert not (tmp / "autograded" / "tim" / "01-forward" / "timestamp.txt").exists()
    assert (tmp / "autograded" / "tim" / "01-forward" / "forward.ipynb").exists()
    for path in out.rglob("*"):
        if path.is_file():
            assert "root-only-canary" not in path.read_text(errors="replace"), path


def test_flags_and_seeds_are_in_the_csv(batch):
    _, out, _, _ = batch
    grades = rows(out)
    assert "imports gc" in grades["flagged"]["flags"]
    assert all(not r["flags"] for s, r in grades.items() if s != "flagged")
    assert all(r["seed"].isdigit() for r in grades.values())


def test_the_class_summary(batch):
    _, out, _, done = batch
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    scores = [r for r in summary if r["kind"] == "score"]
    assert sum(int(r["count"]) for r in scores) == len(EXPECTED)
    assert any(r["kind"] == "mistake" and r["name"] == "layernorm_forward: gamma-forgotten" for r in summary)
    assert "Pass rate per test" in (out / "summary.html").read_text()
    assert f"01-forward: {len(EXPECTED)} graded in all, mean " in done.stdout  # nobody missing: no parenthesis


def test_regrading_one_student_keeps_the_others_and_replays_with_the_seed(batch, capsys):
    from autograder.cli import main
    from autograder.grading import grade
    from autograder.report import default_book_url, text

    tmp, out, _, _ = batch
    before = rows(out)
    seed = before["dup"]["seed"]
    with pytest.raises(SystemExit, match="--student=alice"):  # one student's folder given for the class's
        main(["grade", str(tmp / "submitted" / "alice"), "--out", str(out)])
    with pytest.raises(SystemExit, match="no notebook of nobody"):
        main(["grade", str(tmp / "submitted"), "--out", str(out), "--student", "nobody"])
    with pytest.raises(SystemExit) as refused:  # a name typed with a line break and a terminal escape: escaped
        main(["grade", str(tmp / "submitted"), "--out", str(out), "--student", "no\nbody\x1b[2J"])
    assert "no notebook of no\\nbody\\x1b[2J under " in str(refused.value), str(refused.value)
    assert rows(out) == before
    first = (out / "feedback" / "dup" / "01-forward" / "forward.txt").read_text()
    assert main(["grade", str(tmp / "submitted"), "--out", str(out), "--student", "dup", "--seed", seed]) == 0
    assert rows(out) == before  # the same seed: the same row, and the others untouched
    assert (out / "feedback" / "dup" / "01-forward" / "forward.txt").read_text() == first
    # the recorded seed replays the grade message for message; another seed moves the numbers
    notebook = tmp / "submitted" / "dup" / "01-forward" / "forward.ipynb"
    body = [line for line in first.splitlines()[1:] if "'forward (1).ipynb'" not in line]
    assert text(grade(notebook, "01-forward", seed=int(seed)), book_url=default_book_url()).splitlines()[1:] == body
    assert text(grade(notebook, "01-forward", seed=int(seed) + 1), book_url=default_book_url()).splitlines()[1:] != body


def test_folders_whose_names_show_alike_keep_their_own_rows_on_every_run(tmp_path):
    """A folder not in UTF-8 and one named as it shows escaped; two long names that differ past the cut.

    Each keeps its own row and feedback folder, the same ones on a rerun and whatever the order students
    finish in (--jobs 2, --jobs 1)."""
    honest = solved("01-forward")
    forgot = submission("01-forward", {"layernorm_forward": GAMMA_FORGOTTEN}, base=honest)
    root = tmp_path / "submitted"
    long = "x" * 200
    for student, nb in ((NOT_UTF8, honest), (ESCAPED, forgot), (long + "a", honest), (long + "b", forgot)):
        write(nb, root, student, "01-forward")
    runs = []
    for out, jobs in (("one", "2"), ("one", "2"), ("two", "1")):
        done = grader("grade", str(root), "--out", str(tmp_path / out), "--jobs", jobs, "--seed", "7", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        feedback = tmp_path / out / "feedback"
        runs.append(((tmp_path / out / "grades.csv").read_text(encoding="utf-8"),
                     sorted(str(p.relative_to(feedback)) for p in feedback.rglob("*") if p.is_file())))
        assert "NOTE: grades.csv keeps" not in done.stderr  # every row's student was found again, however named
    assert runs[0] == runs[1] == runs[2]
    grades = rows(tmp_path / "one")
    assert len(grades) == 4 and len({p.split(os.sep)[0] for p in runs[0][1]}) == 4
    by_folder = {raw: next(k for k, r in grades.items() if f"name, '{raw}' (escaped)" in r["notes"])
                 for raw in (ESCAPED, long + "a", long + "b")}
    assert by_folder[ESCAPED] == NOT_UTF8_KEY  # the note names the folder not in UTF-8 as it shows escaped
    assert [grades[s]["score"] for s in (NOT_UTF8_KEY, ESCAPED, by_folder[long + "a"], by_folder[long + "b"])] == \
        [F, f"{FULL - 11:g}"] * 2
    for student, row in grades.items():
        assert len(student.encode()) < 200
        results = json.loads((tmp_path / "one" / "feedback" / student / "01-forward" / "results.json").read_text())
        assert results["score"] == float(row["score"])


def test_a_row_whose_student_is_no_longer_found_is_kept_and_named(tmp_path):
    """A student renamed between two runs: the old row stays (nothing is deleted), and the run says so; a run
    of another assignment, or of one student, says nothing of it."""
    root = tmp_path / "submitted"
    for student in ("ann", "bob"):
        write(solved("01-forward"), root, student, "01-forward")
    out = tmp_path / "out"
    done = grader("grade", str(root), "--out", str(out), "--seed", "3", cwd=tmp_path)
    assert done.returncode == 0 and "01-forward: 2 graded in all, mean " in done.stdout  # nobody missing yet
    (root / "bob").rename(root / "robert")
    done = grader("grade", str(root), "--out", str(out), "--seed", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert set(rows(out)) == {"ann", "bob", "robert"}
    assert "NOTE: grades.csv keeps 1 row(s) of students with no notebook" in done.stderr
    assert done.stderr.rstrip().endswith("kept, as every row is: bob (01-forward)")
    # the summary still counts bob's kept results, and says that one of the three has no notebook this run
    assert "01-forward: 3 graded in all (1 of them with no notebook this run: see the NOTE below), mean " \
        in done.stdout
    done = grader("grade", str(root), "--out", str(out), "--seed", "3", "--student", "ann", cwd=tmp_path)
    assert done.returncode == 0 and "NOTE" not in done.stderr
    assert "01-forward: 3 graded in all, mean " in done.stdout  # a run of one student looks at no other row
    # a row written into grades.csv by hand, with a terminal escape and a line break in its name: named escaped
    with open(out / "grades.csv", "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow(["eve\x1b[2J\nFAKE: all graded", "01-forward", "forward.ipynb"])
    done = grader("grade", str(root), "--out", str(out), "--seed", "3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    note = next(line for line in done.stderr.splitlines() if line.startswith("NOTE"))
    assert "\x1b" not in done.stderr and "FAKE" not in done.stderr.replace(note, "")
    assert note.endswith("bob (01-forward), eve\\x1b[2J\\nFAKE: all graded (01-forward)")
    # eve has a row but no results.json, so she is not among the three the summary counts
    assert "01-forward: 3 graded in all (1 of them with no notebook this run: see the NOTE below)" in done.stdout


CLASS_SIZE = 6


def interrupt_a_class(tmp_path, how, command):
    """A class of solved notebooks graded one at a time by `command`, sent the signal `how` once its first row
    is written: (exit status, rows of grades.csv, the folder, stdout, stderr)."""
    root, out = tmp_path / "submitted", tmp_path / "out"
    for i in range(CLASS_SIZE):
        write(solved("01-forward"), root, f"student{i}", "01-forward")
    batch = subprocess.Popen(command + ["grade", str(root), "--out", str(out), "--jobs", "1"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = batch.stdout.readline()  # a row is printed once it is written
    assert first.startswith("student"), first
    batch.send_signal(how)
    said, complaints = batch.communicate(timeout=300)
    graded = rows(out)
    assert 1 <= len(graded) < CLASS_SIZE and all(row["score"] == F for row in graded.values())
    assert f"INTERRUPTED: {len(graded)} of {CLASS_SIZE} notebook(s) graded and written" in complaints
    assert "Traceback" not in complaints
    return batch.returncode, graded, out, said, complaints


@pytest.mark.parametrize("while_recording", [False, True])
def test_ctrl_c_grades_no_one_new_and_writes_who_was_being_graded(tmp_path, while_recording):
    """An instructor's Ctrl-C: the queued students are not started, the ones in the sandbox are finished and
    written, and the run says how far it got (it used to grade the whole class and then write nothing).
    `while_recording`: the Ctrl-C lands while a row is being recorded (its progress step made slow), whose
    record is then done again and was counted twice."""
    # Python's own Ctrl-C handler, whatever the test runner's process does with SIGINT
    slow = ("import autograder.cli as c, time; step = c.Progress.step; "
            "c.Progress.step = lambda self: (time.sleep(1.0), step(self)); ") if while_recording else ""
    run = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); " + slow +
           "runpy.run_module('autograder', run_name='__main__', alter_sys=True)")
    status, _, _, _, complaints = interrupt_a_class(tmp_path, signal.SIGINT, [sys.executable, "-c", run])
    assert status == 130, complaints


@pytest.mark.parametrize("how, word, status", [(signal.SIGINT, "interrupted", 130),
                                              (signal.SIGTERM, "terminated", 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_after_the_last_notebook_is_written_says_so_and_exits_as_the_others(tmp_path, how, word, status):
    """A Ctrl-C landing once every notebook was written (here while the summary is written) ended in a
    traceback and exit status -2, with no word of what was written; a SIGTERM there, silently with -15."""
    root, out = tmp_path / "submitted", tmp_path / "out"
    write(solved("01-forward"), root, "ann", "01-forward")
    slow = ("import autograder.summary as s, time; write = s.write; "
            "s.write = lambda out: (print('summary', flush=True), time.sleep(5), write(out))[2]; ")
    run = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); " + slow +
           "runpy.run_module('autograder', run_name='__main__', alter_sys=True)")
    batch = subprocess.Popen([sys.executable, "-c", run, "grade", str(root), "--out", str(out), "--jobs", "1"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert batch.stdout.readline().startswith("ann")  # its row is written
    assert batch.stdout.readline() == "summary\n"
    batch.send_signal(how)
    _, complaints = batch.communicate(timeout=120)
    assert batch.returncode == status and "Traceback" not in complaints, complaints
    assert f"{word} after every notebook was written: summary.html and summary.csv may be out of date" \
        in complaints
    assert "INTERRUPTED: 1 of 1 notebook(s) graded and written" in complaints
    assert set(rows(out)) == {"ann"}


SLEEPER = "import time\n\n\ndef layernorm_forward(x, gamma, beta, eps=1e-5):\n    time.sleep(600)\n"


@pytest.mark.parametrize("signals, status, said", [
    ((signal.SIGTERM,), 143, "terminated: grading no more notebooks, and writing none of the 2 being graded"),
    ((signal.SIGINT, signal.SIGINT), 130, "interrupted again: leaving the 2 being graded unwritten"),
])
def test_sigterm_or_a_second_ctrl_c_ends_the_run_in_seconds_while_answers_sleep(tmp_path, signals, status, said):
    """The in-flight notebooks' jobs are killed and no job starts after: the run ends at once, where it went
    on grading what was left of their notebooks (80 s for two answers that sleep, starting sandboxes all
    along, past Slurm's 30 s before its SIGKILL), and a second Ctrl-C printed two tracebacks."""
    root, out = tmp_path / "submitted", tmp_path / "out"
    for student in ("ann", "bob"):
        write(submission("01-forward", {"layernorm_forward": SLEEPER}, base=solved("01-forward")), root, student,
              "01-forward")
    run = "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); " \
          "runpy.run_module('autograder', run_name='__main__', alter_sys=True)"
    batch = subprocess.Popen([sys.executable, "-c", run, "grade", str(root), "--out", str(out), "--jobs", "2"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # both answers asleep in their sandboxes
    for signum in signals:
        batch.send_signal(signum)
        time.sleep(1)
    began = time.monotonic()
    _, complaints = batch.communicate(timeout=120)
    assert batch.returncode == status and time.monotonic() - began < 15, complaints
    assert said in complaints and "Traceback" not in complaints, complaints
    assert "INTERRUPTED: 0 of 2 notebook(s) graded and written" in complaints


@pytest.mark.parametrize("while_recording", [False, True])
def test_sigterm_grades_no_one_new_writes_no_one_half_graded_and_says_so(tmp_path, while_recording):
    """A batch system's time limit (Slurm sends SIGTERM to every process of the job, the sandboxes too): no
    new student is started, none being graded is written (its job may have been killed), the summary is
    brought up to date, and the run says how far it got. It used to die without a word, the summary stale.
    `while_recording`: the signal lands while the first row is being recorded, after it was written; that
    student was counted among the 2 "being graded" (CI, once). The signal then waits for the record to end, and
    the students whose grading ended meanwhile are among those being graded: their jobs too may have been killed."""
    slow = ("import autograder.cli as c, time; step = c.Progress.step; "
            "c.Progress.step = lambda self: (time.sleep(1.0), step(self)); ") if while_recording else ""
    run = slow + "import runpy; runpy.run_module('autograder', run_name='__main__', alter_sys=True)"
    status, graded, out, said, complaints = interrupt_a_class(tmp_path, signal.SIGTERM, [sys.executable, "-c", run])
    assert status == 143, complaints
    agree(out)
    # the next student's job has started, or is still queued (cancelled), as the signal lands after a row
    said_of = re.search(r"terminated: grading no more notebooks(, and writing none of the (\d+) being graded| \(none "
                        r"was being graded\))\n", complaints)
    assert said_of, complaints
    being = int(said_of.group(2) or 0)
    assert being <= 1 or while_recording and being <= CLASS_SIZE - len(graded), complaints
    assert f"01-forward: {len(graded)} graded in all" in said and (out / "summary.csv").exists()
