"""The grader's trusted side and its outputs, part by part, in-process (no sandbox).

Strings from a submission made safe, submissions read without following links
or blocking, the one rule for two notebooks, IPython lines and other honest
oddities graded, grades.csv merged without losing rows, the class summary,
the feedback's layout, and the static read's flags. The end-to-end batches
are in test_grader_batch.py.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import stat
import subprocess
import time
import warnings

import nbformat
import pytest

from autograder import flags, outputs, report, safe, summary
from autograder.cells import (MAX_CELL_CHARS, MAX_JSON_VALUES, MAX_NOTEBOOK_BYTES, SubmissionError, pick,
                              read_submission)
from autograder.course import book_url, notebooks, solved_release
from autograder.grading import CaseResult, Report
from autograder.pycode import without_ipython
from autograder.submissions import read_regular, scan
from helpers import solved, submission, write
from normgrad import cases as course_cases
from normgrad.cases import ASSIGNMENTS, load

BOOK = "https://example.org/book/"


# --- one helper makes every string safe -------------------------------------------------------

def test_text_escapes_lone_surrogates_controls_and_reordering_and_cuts_huge_messages():
    assert safe.text("ValueError: \udc80") == "ValueError: \\udc80"
    assert safe.text("a\x1b[31mred\x00\rb\u202etxt.exe\nnext\tcol") == "a\\x1b[31mred\\x00\\x0db\\u202etxt.exe\nnext\tcol"
    huge = safe.text("x" * 10_000_000)
    assert len(huge) < 21_000 and huge.endswith("(9980000 more characters)")
    assert safe.text(huge) == huge  # a second pass changes nothing
    assert safe.name("a\nb") == "a\\nb"
    for s in ("\udc80", "\ud800x", "\x00", "\x85", "x" * 10**6):
        safe.text(s).encode("utf-8")  # never raises


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1"])
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(cell):
    row = report.csv_row(Report(cell, cell, cell, 1.0))
    for column in ("student", "assignment", "notebook"):
        assert row[column] == "'" + safe.text(cell)


def test_a_report_full_of_unwritable_strings_is_written_everywhere(tmp_path):
    nasty = "raised \udc80 \x1b[2J" + "y" * 100_000
    r = Report("stu\udcffdent", "01-forward", "forward\udc80.ipynb", 24.0, notes=[nasty], flags=[nasty],
               picked={"layernorm_forward": "x = '\udc80'"})
    r.results = [CaseResult("layernorm_forward/x", "d", 24.0, 0.0, False, [nasty])]
    written = outputs.Outputs(tmp_path, BOOK).write(r)
    folder = tmp_path / "feedback" / "stu\\udcffdent" / "01-forward"
    for name in ("forward.html", "forward.txt", "results.json"):
        text = (folder / name).read_text(encoding="utf-8")
        assert "\\udc80" in text and "\x1b" not in text
    assert written.student == "stu\\udcffdent"
    [row] = list(csv.DictReader(io.StringIO((tmp_path / "grades.csv").read_text(encoding="utf-8"))))
    assert row["student"] == "stu\\udcffdent" and len(row["notes"]) < 21_000


# --- reading submissions ----------------------------------------------------------------------

def test_a_fifo_named_like_the_notebook_is_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "forward.ipynb")
    started = time.monotonic()
    with pytest.raises(SubmissionError, match="not a regular file"):
        read_regular(tmp_path / "forward.ipynb", 1000)
    assert time.monotonic() - started < 5


def test_links_are_not_followed_and_folders_that_are_links_are_skipped(tmp_path):
    root = tmp_path / "submitted"
    alice = write(solved("01-forward"), root, "alice", "01-forward")
    secret = tmp_path / "secret.txt"
    secret.write_text("2026-01-01 00:00:00 UTC root only")
    (alice.parent / "timestamp.txt").symlink_to(secret)
    mallory = root / "mallory" / "01-forward"
    mallory.mkdir(parents=True)
    (mallory / "forward.ipynb").symlink_to(alice)  # another student's notebook
    (root / "eve").symlink_to(root / "alice")  # a student folder that is a link
    (root / "trent").mkdir()
    (root / "trent" / "01-forward").symlink_to(alice.parent)  # an assignment folder that is a link
    warnings = []
    found = {s.student: s for s in scan(root, lambda a: "forward.ipynb", warnings.append)}
    assert set(found) == {"alice", "mallory"}
    assert any("eve" in w for w in warnings) and any("trent" in w for w in warnings)
    assert found["alice"].timestamp is None  # the link is not followed
    assert found["alice"].read_notebook(1 << 20).startswith(b"{")
    with pytest.raises(SubmissionError, match="symbolic link"):
        found["mallory"].read_notebook(1 << 20)


def test_a_notebook_hard_linked_into_another_students_folder_is_graded_and_both_are_told(tmp_path):
    root = tmp_path / "submitted"
    alice = write(solved("01-forward"), root, "alice", "01-forward")
    (root / "mallory" / "01-forward").mkdir(parents=True)
    os.link(alice, root / "mallory" / "01-forward" / alice.name)
    bob = write(solved("01-forward"), root, "bob", "01-forward")
    os.link(bob, tmp_path / "backup.ipynb")  # a second name outside the class is no one else's notebook
    warnings = []
    found = {s.student: s for s in scan(root, lambda a: "forward.ipynb", warnings.append)}
    assert found["mallory"].read_notebook(1 << 20) == alice.read_bytes()  # no link to refuse: it is a file
    assert found["alice"].same_file_as == ("mallory/01-forward",)
    assert found["mallory"].same_file_as == ("alice/01-forward",)
    assert found["bob"].same_file_as == () and found["bob"].warnings() == []
    assert "a hard link" in found["mallory"].warnings()[0] and "alice/01-forward" in found["mallory"].warnings()[0]
    assert warnings == ["one notebook file is handed in by alice/01-forward, mallory/01-forward (hard links): "
                        "each was graded"]


def test_a_notes_cell_in_the_csv_keeps_a_tracebacks_exception():
    """The table has one line per note: a traceback's first line alone said only that the cell raised."""
    error = ('cell \'rmsnorm_forward\' raised when it ran:\n  File "<cell rmsnorm_forward>", line 2, in <module>\n'
             "    _zeros = torch.zeros\nImportError: torch.zeros cannot be used in this exercise\n")
    row = report.csv_row(Report("alice", "01-forward", "forward.ipynb", 40.0, notes=[error, "one line"]))
    assert row["notes"] == ("cell 'rmsnorm_forward' raised when it ran: ImportError: torch.zeros cannot be used in "
                            "this exercise | one line")


def test_a_timestamp_that_is_not_a_regular_file_is_named_not_silently_dropped(tmp_path):
    """Else a late student escapes the penalty with a linked or FIFO timestamp.txt, and no one hears of it."""
    root = tmp_path / "submitted"
    for student in ("alice", "bob", "carol", "dan"):
        write(solved("01-forward"), root, student, "01-forward")
    (root / "alice" / "01-forward" / "timestamp.txt").write_text("2026-01-15 10:30:00.000000 UTC")
    os.mkfifo(root / "bob" / "01-forward" / "timestamp.txt")
    (root / "carol" / "01-forward" / "timestamp.txt").symlink_to(root / "alice" / "01-forward" / "timestamp.txt")
    warnings = []
    found = {s.student: s for s in scan(root, lambda a: "forward.ipynb", warnings.append)}
    assert [found[s].timestamp_kind for s in ("alice", "bob", "carol", "dan")] == [
        "a regular file", "a FIFO, not a regular file", "a symbolic link, not a regular file", None]
    assert found["alice"].warnings() == found["dan"].warnings() == []
    for student, kind in (("bob", "a FIFO"), ("carol", "a symbolic link")):
        assert found[student].timestamp is None
        assert found[student].warnings() == [f"timestamp.txt is {kind}, not a regular file: no submission time is "
                                             "known, so no late penalty was applied; the instructor is told"]
        assert any(f"{student}/01-forward/timestamp.txt is {kind}" in w for w in warnings)
    # looked at once: what the scan read is what is graded, whatever the file becomes afterwards
    stamp = root / "alice" / "01-forward" / "timestamp.txt"
    stamp.unlink()
    os.mkfifo(stamp)
    assert found["alice"].timestamp == "2026-01-15 10:30:00.000000 UTC"


def test_a_timestamp_that_holds_no_time_is_named_not_taken_for_an_early_one(tmp_path):
    """A red team's: text that is no time cancelled the late penalty without a word."""
    from autograder import submissions

    root = tmp_path / "submitted"
    fifo = tmp_path / "zone"  # dateutil opened a word it took for a time zone as a file: a FIFO hung the grader
    os.mkfifo(fifo)
    stamps = {"late": "2026-01-21 12:00:00.000000 UTC", "bom": "\ufeff2026-01-21 12:00:00.000000 UTC",
              "words": "submitted late, sorry", "year5": "20260-01-21 12:00:00 UTC", "empty": "",
              "zone": f"2026-01-21 12:00:00 {fifo}", "long": "2026-01-21 12:00:00 " + "A" * 180}
    for student, text in stamps.items():
        (write(solved("01-forward"), root, student, "01-forward").parent / "timestamp.txt").write_text(text)
    warnings = []
    found = {s.student: s for s in scan(root, lambda a: "forward.ipynb", warnings.append)}
    for student in ("late", "bom"):  # a byte-order mark is an editor's, not the student's time
        assert found[student].timestamp == stamps["late"] and found[student].warnings() == []
    for student in ("words", "year5", "empty", "zone", "long"):
        assert found[student].timestamp is None and found[student].timestamp_kind == submissions.NO_TIME
        assert found[student].warnings() == [f"timestamp.txt is {submissions.NO_TIME}: no submission time is "
                                             "known, so no late penalty was applied; the instructor is told"]
        assert any(f"{student}/01-forward/timestamp.txt is {submissions.NO_TIME}" in w for w in warnings)


def test_a_timestamp_of_junk_or_swapped_after_its_look_costs_nothing_but_its_time(tmp_path, monkeypatch):
    """A megabyte of binary junk is read as 200 characters at most; a file swapped for another kind between the
    look and the read (read_regular refuses it) is named unreadable, and the rest of the scan goes on."""
    from pathlib import PurePath

    from autograder import submissions

    root = tmp_path / "submitted"
    for student in ("alice", "bob"):
        write(solved("01-forward"), root, student, "01-forward")
        (root / student / "01-forward" / "timestamp.txt").write_bytes(os.urandom(1 << 20))
    found = {s.student: s for s in scan(root, lambda a: "forward.ipynb", lambda w: None)}
    assert found["alice"].timestamp_kind == submissions.NO_TIME and found["alice"].timestamp is None
    assert "no late penalty was applied" in found["alice"].warnings()[0]  # no time known: said, no crash

    def swapped(path, limit, root=None):
        if PurePath(path).name == "timestamp.txt" and PurePath(path).parts[0] == "bob":
            raise SubmissionError("timestamp.txt is not a regular file (a FIFO, a device or a folder): not read")
        return original(path, limit, root)

    original = submissions.read_regular
    monkeypatch.setattr(submissions, "read_regular", swapped)
    warnings = []
    found = {s.student: s for s in scan(root, lambda a: "forward.ipynb", warnings.append)}
    assert found["alice"].timestamp_kind == submissions.NO_TIME
    assert found["bob"].timestamp_kind.startswith("unreadable (timestamp.txt is not a regular file")
    assert found["bob"].timestamp is None and "no late penalty was applied" in found["bob"].warnings()[0]
    assert any("bob/01-forward/timestamp.txt is unreadable" in w for w in warnings)


def test_two_notebooks_one_rule_and_a_warning(tmp_path):
    root = tmp_path / "submitted"
    path = write(solved("01-forward"), root, "bob", "01-forward")
    (path.parent / "forward (1).ipynb").write_text("{}")
    os.utime(path, (1, 1))  # the assignment's name wins even when older
    [sub] = scan(root, lambda a: "forward.ipynb", print)
    assert sub.notebook == "forward.ipynb" and sub.others == ("forward (1).ipynb",)
    assert "'forward (1).ipynb'" in sub.warnings()[0]
    path.rename(path.parent / "forward (2).ipynb")  # no notebook of the assignment's name: the newest
    [sub] = scan(root, lambda a: "forward.ipynb", print)
    assert sub.notebook == "forward (1).ipynb"


def test_without_the_assignments_name_a_folder_a_link_or_a_resource_fork_is_not_preferred(tmp_path):
    root = tmp_path / "submitted"
    path = write(solved("01-forward"), root, "bob", "01-forward")
    path = path.rename(path.parent / "my_forward.ipynb")
    os.utime(path, (1, 1))  # older than everything beside it
    (path.parent / "zz.ipynb").mkdir()
    (path.parent / "zy.ipynb").symlink_to("/nonexistent")
    (path.parent / "._my_forward.ipynb").write_bytes(b"\x00\x05\x16\x07")  # what macOS leaves in a zip
    [sub] = scan(root, lambda a: "forward.ipynb", print)
    assert sub.notebook == "my_forward.ipynb"
    assert set(sub.others) == {"zz.ipynb", "zy.ipynb", "._my_forward.ipynb"}
    path.unlink()  # only a folder and a link left: one of them is picked, and reading it says why it is none
    (path.parent / "._my_forward.ipynb").unlink()
    [sub] = scan(root, lambda a: "forward.ipynb", print)
    with pytest.raises(SubmissionError):
        sub.read_notebook(1 << 20)


# --- honest work that used to score zero ------------------------------------------------------

def test_outputs_do_not_count_toward_the_size_limit():
    nb = solved("01-forward")
    plot = nbformat.v4.new_output("display_data", data={"image/png": "A" * (MAX_NOTEBOOK_BYTES + 1000)})
    next(c for c in nb.cells if c.cell_type == "code").outputs = [plot]
    data = nbformat.writes(nb).encode()
    assert len(data) > MAX_NOTEBOOK_BYTES
    picked, problems = pick(read_submission(data=data), notebooks("01-forward"))
    assert len(picked) == len(load("01-forward").functions) and not problems
    huge = nbformat.v4.new_code_cell("x = 1\n" + "#" * (MAX_NOTEBOOK_BYTES + 10))
    nb.cells.append(huge)
    with pytest.raises(SubmissionError, match="even without its outputs"):
        read_submission(data=nbformat.writes(nb).encode())


def test_a_code_cell_of_megabytes_is_not_read_and_the_others_are():
    nb = solved("01-forward")
    nb.cells.append(nbformat.v4.new_code_cell("x=1;" * (MAX_CELL_CHARS // 4 + 1)))  # parses in seconds, each time
    picked, problems = pick(read_submission(data=nbformat.writes(nb).encode()), notebooks("01-forward"))
    assert len(picked) == len(load("01-forward").functions)
    assert problems == [f"code cell {len(nb.cells)} holds {MAX_CELL_CHARS + 4} characters, more than the "
                        f"{MAX_CELL_CHARS >> 10} KiB a solution cell may hold: it was not read"]


def test_a_cell_without_a_source_is_a_malformed_notebook():
    nb = nbformat.writes(solved("01-forward"))
    raw = json.loads(nb)
    del raw["cells"][-1]["source"]
    with pytest.raises(SubmissionError, match="malformed cell"):
        read_submission(data=json.dumps(raw).encode())


def test_a_file_of_millions_of_tiny_values_is_not_parsed_and_one_of_commas_in_strings_is():
    """Parsed, 64 MiB of `{},` took 1.7 GB on the trusted side; a text output of the same size is a few strings."""
    raw = json.loads(nbformat.writes(solved("01-forward")))
    code = next(c for c in raw["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["a, [b], {c}: d\n" * 100_000] * 10}]
    text = json.dumps(raw)
    assert sum(map(text.count, ",:[{")) > 2 * MAX_JSON_VALUES  # twice the commas and brackets of the file below
    picked, problems = pick(read_submission(data=text.encode()), notebooks("01-forward"))
    assert len(picked) == len(load("01-forward").functions) and not problems
    code["outputs"] = [{"output_type": "display_data", "metadata": {}, "data": {"x": [{}] * (MAX_JSON_VALUES // 2)}}]
    start = time.perf_counter()
    with pytest.raises(SubmissionError, match="more than 2,000,000 JSON values"):
        read_submission(data=json.dumps(raw).encode())
    assert time.perf_counter() - start < 5  # counted, not parsed: a tenth of a second here


def test_cell_ids_missing_or_repeated_make_nbformat_print_nothing():
    """nbformat warns of them on the grader's terminal, once per run; the student's ids are never read."""
    raw = json.loads(nbformat.writes(solved("01-forward")))
    for cell in raw["cells"]:
        cell.pop("id", None)
    raw["cells"][1]["id"] = raw["cells"][2]["id"] = "twice"
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        picked, problems = pick(read_submission(data=json.dumps(raw).encode()), notebooks("01-forward"))
    assert len(picked) == len(load("01-forward").functions) and not problems
    assert [str(w.message) for w in heard] == []


def test_nbformat_3_notebooks_are_converted():
    v3 = nbformat.v3.new_notebook(worksheets=[nbformat.v3.new_worksheet(cells=[
        nbformat.v3.new_code_cell(input=c.source) for c in solved("01-forward").cells if c.cell_type == "code"])])
    nb = read_submission(data=nbformat.writes(v3, version=3).encode())
    picked, problems = pick(nb, notebooks("01-forward"))
    assert len(picked) == len(load("01-forward").functions) and not problems


def test_ipython_lines_are_neutralised_with_a_note():
    source = next(c.source for c in solved("01-forward").cells if "def layernorm_forward" in c.source)
    magic = "%matplotlib inline\n!ls -la\nfiles = !ls\n" + source.replace("    mu =", "    %time 1\n    mu =", 1)
    nb = submission("01-forward", {"layernorm_forward": magic}, base=solved("01-forward"))
    picked, problems = pick(nb, notebooks("01-forward"))
    code = next(p.source for p in picked if p.label == "layernorm_forward")
    assert "%" not in code.split("def")[0] and "    pass\n    mu =" in code and "!ls" not in code
    assert any("'%matplotlib inline'" in p and "'!ls -la'" in p for p in problems)
    assert without_ipython("%%time\nx = 1") == ("x = 1", ["%%time"])
    assert without_ipython("s = '''\n%not a magic\n'''") == ("s = '''\n%not a magic\n'''", [])
    assert without_ipython("def f(:\n%matplotlib inline") == ("def f(:\n%matplotlib inline", [])


def test_a_function_bound_by_assignment_is_its_answer():
    source = next(c.source for c in solved("01-forward").cells if "def layernorm_forward" in c.source)
    bound = source.replace("def layernorm_forward(", "def _impl(") + "\n\nlayernorm_forward = _impl\n"
    nb = submission("01-forward", {"layernorm_forward": bound}, base=solved("01-forward"))
    picked, problems = pick(nb, notebooks("01-forward"))
    assert not problems and any("layernorm_forward = _impl" in p.source for p in picked)


def test_an_internal_error_row_shows_what_the_notebook_was_worth(tmp_path, monkeypatch):
    from autograder import cli

    path = write(solved("01-forward"), tmp_path, "ann", "01-forward")
    [sub] = scan(tmp_path, lambda a: "forward.ipynb", print)
    monkeypatch.setattr(cli, "grade", lambda *a, **k: 1 / 0)
    result = cli._safe_grade(sub, None, None, None, seed=5)
    assert result.max_score == load("01-forward").max_score and result.score == 0 and "internal error" in result.notes[0]
    assert path.exists()


# --- grades.csv -------------------------------------------------------------------------------

def _row(student, score="1"):
    return {"student": student, "assignment": "01-forward", "notebook": "forward.ipynb", "score": score}


def _merge(out, worker):
    for i in range(15):
        outputs.merge_rows(out, [_row(f"w{worker}-s{i}")])


def test_merging_keeps_other_students_rows_and_two_graders_lose_nothing(tmp_path):
    outputs.merge_rows(tmp_path, [_row("alice", "24"), _row("bob", "3")])
    outputs.merge_rows(tmp_path, [_row("bob", "20")])
    rows = {r["student"]: r["score"] for r in outputs.read_rows(tmp_path / "grades.csv")}
    assert rows == {"alice": "24", "bob": "20"}
    workers = [multiprocessing.get_context("fork").Process(target=_merge, args=(tmp_path, w)) for w in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    rows = outputs.read_rows(tmp_path / "grades.csv")
    assert len(rows) == 2 + 3 * 15
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_spreadsheets_csv_keeps_its_names_and_an_instructors_column_and_a_regraded_student_their_cells(tmp_path):
    """grades.csv saved by a spreadsheet: a byte-order mark (which made every name blank on the next merge)
    and CRLF line ends; a column the instructor added (which the next merge dropped for the whole class)."""
    (tmp_path / "grades.csv").write_bytes(
        "student,assignment,notebook,score,TA comment\r\nalice,01-forward,forward.ipynb,24,checked\r\n"
        "bob,01-forward,forward.ipynb,3,asked for an extension\r\n".encode("utf-8-sig"))
    outputs.merge_rows(tmp_path, [_row("bob", "20"), _row("carol", "7")])
    header, table = outputs.read_table(tmp_path / "grades.csv")
    assert header[-1] == "TA comment"
    assert {r["student"]: (r["score"], r["TA comment"]) for r in table} == {
        "alice": ("24", "checked"), "bob": ("20", "asked for an extension"), "carol": ("7", "")}


HEAD = "student,assignment,notebook,score,TA\r\n"
REFUSED = {  # what a spreadsheet or a hand can make of grades.csv, that could not be written back as read
    "semicolons": ("student;assignment;notebook;score\r\nann;01-forward;forward.ipynb;24\r\n".encode(),
                   "no student and assignment columns"),
    "header-alone": (b"name;assignment;score;TA\r\n", "no student and assignment columns"),
    "windows-1252": ((HEAD + "zo\u00eb,01-forward,forward.ipynb,52,tr\u00e8s bien\r\n").encode("cp1252"), "not UTF-8"),
    "utf-16": ((HEAD + "ann,01-forward,forward.ipynb,52,ok\r\n").replace(",", "\t").encode("utf-16"), "UTF-16"),
    "column-twice": (b"student,assignment,score,comment,comment\nann,01-forward,52,one,two\n", "names a column twice"),
    "cells-unnamed": (b"student,assignment,score,\nann,01-forward,52,a TA's note\n", "cells under no column name"),
    "cells-past-header": (b"student,assignment,score\nann,01-forward,52,a TA's note\n", "cells under no column name"),
    "quote-left-open": ((HEAD + 'bob,01-forward,forward.ipynb,3,"see me\r\nann,01-forward,forward.ipynb,52,ok\r\n')
                        .encode(), "quote left open"),
    "row-twice": ((HEAD + "ann,01-forward,forward.ipynb,52,one\r\nann,01-forward,forward.ipynb,52,two\r\n").encode(),
                  "two rows for ann .01-forward."),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_a_csv_that_could_not_be_written_back_as_read_is_never_written_over(tmp_path, kind):
    """Each of these was merged into, losing cells, rows or characters, or writing a row twice."""
    content, why = REFUSED[kind]
    path = tmp_path / "grades.csv"
    path.write_bytes(content)
    with pytest.raises(outputs.GradesFileError, match=why):
        outputs.check_writable(tmp_path)
    with pytest.raises(outputs.GradesFileError):
        outputs.merge_rows(tmp_path, [_row("bob", "20")])
    assert path.read_bytes() == content


def test_what_a_spreadsheet_adds_and_takes_away_without_loss_is_read(tmp_path):
    """A trailing empty column, blank lines, short rows, a long comment and a formula's quote stripped:
    merged, nothing lost, and the stripped name still keys its row (it was written again under a new key)."""
    path = tmp_path / "grades.csv"
    path.write_text("student,assignment,notebook,score,TA,\r\n\r\n=cmd,01-forward,forward.ipynb,5,ok,\r\n"
                    f"ann,01-forward,forward.ipynb,52,{'x' * 200_000}\r\nbob,01-forward\r\n\r\n")
    outputs.merge_rows(tmp_path, [_row("'=cmd", "9")])
    header, table = outputs.read_table(path)
    assert header[-1] == "TA" and [r["student"] for r in table] == ["'=cmd", "ann", "bob"]
    assert [(r["score"], len(r["TA"])) for r in table] == [("9", 2), ("52", 200_000), ("", 0)]


def test_an_out_folder_that_takes_no_file_or_a_grades_csv_that_is_a_folder_stops_the_grader_first(tmp_path,
                                                                                                monkeypatch):
    (tmp_path / "grades.csv").mkdir()
    with pytest.raises(outputs.GradesFileError, match="not a regular file"):
        outputs.check_writable(tmp_path)
    (tmp_path / "grades.csv").rmdir()

    def refused(**kwargs):  # a read-only mount (root writes through a folder's modes, so it is mimicked)
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refused)
    with pytest.raises(outputs.GradesFileError, match="cannot write there .Read-only file system.; nothing graded"):
        outputs.check_writable(tmp_path)


def test_a_rewritten_file_keeps_the_mode_an_instructor_gave_it_and_a_read_only_one_stops_the_grader(tmp_path):
    path = tmp_path / "grades.csv"
    safe.write_atomic(path, "student,assignment\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    outputs.merge_rows(tmp_path, [_row("bob", "20")])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o444)  # as root too, whom os.access lets write it
    with pytest.raises(outputs.GradesFileError, match="is read-only"):
        outputs.check_writable(tmp_path)


# --- feedback ---------------------------------------------------------------------------------

def _diagnosed_report() -> Report:
    assignment = load("01-forward")
    mistake = next(m for m in assignment.mistakes if m.name == "gamma-forgotten")
    r = Report("bob", "01-forward", "forward.ipynb", assignment.max_score, seed=7)
    for case in assignment.cases:
        wrong = case.function == "layernorm_forward" and case.name != "tiny-variance"
        r.results.append(CaseResult(case.id, case.description, case.points, 0.0 if wrong else case.points,
                                    case.hidden, ["off"] if wrong else [], mistake if wrong else None))
    return r


def test_feedback_names_each_mistake_once_per_function_with_subtotals():
    r = _diagnosed_report()
    for page in (report.text(r, book_url=BOOK), report.feedback_html(r, BOOK),
                 report.function_output(r, "layernorm_forward", BOOK)):
        assert page.count("scale gamma is missing") == 1
        assert BOOK + "01-forward.html#scale-and-shift" in page and "file://" not in page
    text = report.text(r, book_url=BOOK)
    earned = report.fmt_points(sum(x.earned for x in r.results if x.function == "layernorm_forward"))
    assert f"  layernorm_forward: {earned}/12" in text and "  batchnorm_forward: 12/12" in text
    data = report.gradescope(r, BOOK)
    assert {t["mistake"] for t in data["tests"]} == {"gamma-forgotten", None}
    assert data["extra_data"]["seed"] == 7


def test_the_book_url_is_the_books_baseurl(tmp_path):
    assert book_url().startswith("https://") and book_url().endswith("/")
    assert report.default_book_url() == book_url() + "chapters/"  # where the book puts 01-forward.html
    config = tmp_path / "_config.yml"
    config.write_text("html:\n  baseurl: https://x.org/b\n")
    assert book_url(config) == "https://x.org/b/"
    config.write_text("title: t\n")
    with pytest.raises(ValueError, match="baseurl"):
        book_url(config)


def test_a_notebooks_own_tests_link_where_the_graders_feedback_links(monkeypatch):
    """normgrad cannot read the book's config once installed: its copy of the address is held to it."""
    monkeypatch.delenv("NORMGRAD_BOOK", raising=False)
    mistake = next(m for m in load("01-forward").mistakes if m.name == "gamma-forgotten")
    assert course_cases.BOOK == book_url()
    assert mistake.link == report.default_book_url() + mistake.section
    monkeypatch.setenv("NORMGRAD_BOOK", "http://localhost:8000")  # a mirror, as the set-up cell reads it
    assert mistake.link == "http://localhost:8000/chapters/01-forward.html#scale-and-shift"


def test_adjustments_change_the_score_and_say_why():
    r = _diagnosed_report()
    r.adjustments = [("late by 1 day: the late penalty", -5.0)]
    assert r.score == r.tests_score - 5 and "late by 1 day" in report.csv_row(r)["notes"]
    assert report.gradescope(r)["score"] == r.tests_score - 5


# --- the class summary ------------------------------------------------------------------------

def test_summary_counts_scores_pass_rates_and_mistakes(tmp_path):
    full = load("01-forward").max_score
    good = Report("alice", "01-forward", "forward.ipynb", full)
    good.results = [CaseResult(r.case_id, r.description, r.points, r.points, r.hidden)
                    for r in _diagnosed_report().results]
    for student, r in (("alice", good), ("bob", _diagnosed_report()), ("carl", _diagnosed_report())):
        r.student = student
        outputs.Outputs(tmp_path, BOOK).write(r)
    figures = summary.write(tmp_path)
    a = figures["01-forward"]
    low = _diagnosed_report().score
    assert sorted(a.scores) == [low, low, full] and a.max_score == full
    assert a.mistakes.most_common(1) == [("layernorm_forward: gamma-forgotten", 2)]
    counts = [0] * summary.BINS
    counts[int(low / full * summary.BINS)] += 2
    counts[-1] += 1
    assert [c for _, _, c in a.histogram()] == counts
    rows = list(csv.DictReader(io.StringIO((tmp_path / "summary.csv").read_text())))
    test = next(r for r in rows if r["kind"] == "test" and r["name"] == "layernorm_forward/tiny-variance")
    assert (test["count"], test["of"]) == ("3", "3")
    assert "gamma-forgotten" in (tmp_path / "summary.html").read_text()
    assert a.mixed() == "" and "Note:" not in (tmp_path / "summary.html").read_text()


def test_summary_says_where_its_results_are_out_of_different_maxima(tmp_path):
    """One student regraded with a private case (out of 54) in a class graded out of 52: the mean and the
    histogram mix the two, and the summary says so."""
    full = load("01-forward").max_score
    for student, extra in (("alice", []), ("bob", [CaseResult("layernorm_forward/private", "private", 2.0, 2.0, True)])):
        r = _diagnosed_report()
        r.student, r.max_score = student, full + sum(e.points for e in extra)
        r.results = r.results + extra
        outputs.Outputs(tmp_path, BOOK).write(r)
    a = summary.write(tmp_path)["01-forward"]
    assert a.maxima == {full, full + 2} and a.max_score == full + 2
    assert f"out of different maximum scores ({full:g}, {full + 2:g})" in a.mixed()
    assert "grade the whole class with the same private cases" in (tmp_path / "summary.html").read_text()


# --- the static read --------------------------------------------------------------------------

@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_the_course_solutions_raise_no_flag(assignment):
    picked, problems = pick(solved_release(assignment), notebooks(assignment))
    assert picked and not problems
    assert flags.read_submission(assignment, picked) == []


SUSPICIOUS = {
    "torch.ops": ('torch.ops', "04-code-mapping", "layernorm_backward",
                  "def layernorm_backward(dy, x, gamma, mean, rstd):\n    op = getattr(torch.ops, 'at' + 'en')\n"
                  "    return op.native_layer_norm_backward(dy, x, [x.shape[1]], mean, rstd, gamma, None, [1, 1, 1])"),
    "backward op name in a string": ('native_layer_norm_backward', "04-code-mapping", "layernorm_backward",
                                     "import torch\ndef layernorm_backward(dy, x, gamma, mean, rstd):\n"
                                     "    f = 'native_layer_norm_backward'\n    return f"),
    "autograd.grad": ('torch.autograd.grad', "04-code-mapping", "layernorm_backward",
                      "import torch\ndef layernorm_backward(dy, x, gamma, mean, rstd):\n"
                      "    return torch.autograd.grad(x, (x,), dy)"),
    "grad_fn": ('grad_fn', "04-code-mapping", "layernorm_backward",
                "import torch\n_y = torch.ones(1, requires_grad=True) * 2\n_bw = _y.grad_fn\n"
                "def layernorm_backward(dy, x, gamma, mean, rstd):\n    return _bw(dy)"),
    ".backward()": ('y.backward', "05-thnn", "batchnorm_backward_thnn",
                    "def batchnorm_backward_thnn(grad_out, x, weight, mean, invstd, train=True):\n"
                    "    y = x.sum()\n    y.backward()\n    return x.grad"),
    "gc.get_objects": ('gc.get_objects', "04-code-mapping", "layernorm_backward",
                       "import gc\ndef layernorm_backward(dy, x, gamma, mean, rstd):\n"
                       "    return [o for o in gc.get_objects() if callable(o)][0](dy)"),
    "importlib": ('importlib.import_module', "01-forward", "layernorm_forward",
                  "import importlib\ndef layernorm_forward(x, gamma, beta, eps=1e-5):\n"
                  "    t = importlib.import_module('to' + 'rch')\n    return t"),
    "__import__": ('__import__', "01-forward", "layernorm_forward",
                   "def layernorm_forward(x, gamma, beta, eps=1e-5):\n    t = __import__('to' + 'rch')\n    return t"),
    "torch in a NumPy exercise": ('imports torch', "01-forward", "layernorm_forward",
                                  "import torch\ndef layernorm_forward(x, gamma, beta, eps=1e-5):\n"
                                  "    return torch.nn.functional.layer_norm(torch.from_numpy(x), x.shape[1:])"),
    "getattr with an assembled name": ('computed name (getattr)', "01-forward", "layernorm_forward",
                                       "import numpy as np\ndef layernorm_forward(x, gamma, beta, eps=1e-5):\n"
                                       "    return getattr(np, 'me' + 'an')(x)"),
    "PyTorch's decompositions": ("PyTorch's own derivative formulas (torch._decomp", "04-code-mapping",
                                 "layernorm_backward",
                                 "import torch._decomp\ndef layernorm_backward(dy, x, gamma, mean, rstd):\n"
                                 "    return torch._decomp.decomposition_table"),
    # a fresh copy of PyTorch's Python backward formulas, run from its file, is not sealed
    "PyTorch's formulas run from their file": ("reads or runs a module's files (torch.__file__)", "04-code-mapping",
                                               "layernorm_backward",
                                               "import os, runpy, torch\n"
                                               "_f = os.path.join(os.path.dirname(torch.__file__), 'x.py')\n"
                                               "def layernorm_backward(dy, x, gamma, mean, rstd):\n"
                                               "    return runpy.run_path(_f)['f'](dy)"),
    "ctypes without importing it": ("reaches around the grader's guards (torch.ctypes)", "04-code-mapping",
                                    "layernorm_backward",
                                    "import torch\n_api = torch.ctypes.pythonapi\n"
                                    "def layernorm_backward(dy, x, gamma, mean, rstd):\n    return _api"),
    "TorchScript's autodiff": ("uses TorchScript", "04-code-mapping", "layernorm_backward",
                               "import torch\n_cu = torch.jit.CompilationUnit('def f(a):\\n    return a')\n"
                               "def layernorm_backward(dy, x, gamma, mean, rstd):\n"
                               "    return _cu.f(dy)"),
    "the engine from a class's __dict__": ("'_execution_engine'", "04-code-mapping", "layernorm_backward",
                                           "import torch\n"
                                           "_e = torch.autograd.Variable.__dict__['_execution_engine']\n"
                                           "def layernorm_backward(dy, x, gamma, mean, rstd):\n    return _e"),
    "getattr under another name": ("passes getattr around", "04-code-mapping", "layernorm_backward",
                                   "import torch\nga = getattr\n"
                                   "def layernorm_backward(dy, x, gamma, mean, rstd):\n"
                                   "    return ga(ga(torch, 'fu' + 'nc'), 'v' + 'jp')"),
    "too deep to read": ("too deeply nested or too large for the grader to read", "01-forward", "layernorm_forward",
                         "import numpy as np\n_pad = 0" + "+0" * 3000 + "\n"
                         "def layernorm_forward(x, gamma, beta, eps=1e-5):\n    return x"),
    "a course name rebound to a tensor": ("calls autograd's backward (LayerNormFunction.backward)",
                                          "04-code-mapping", "layernorm_backward",
                                          "def layernorm_backward(dy, x, gamma, mean, rstd):\n"
                                          "    LayerNormFunction = (x * dy).sum()\n"
                                          "    LayerNormFunction.backward()\n    return x.grad"),
    "06 without a kernel": ('no @triton.jit kernel', "06-triton", "layernorm_backward_triton",
                            "import torch\ndef layernorm_backward_triton(dy, x, gamma, mean, rstd):\n"
                            "    return dy * rstd[:, None], dy.sum(0), dy.sum(0)"),
    # launched once so that a launch is counted, while the answer is written by other means
    "06 with a kernel that writes nothing": ('no @triton.jit kernel that writes', "06-triton", "layernorm_backward_triton",
                                             "import torch, triton\n@triton.jit\ndef _k(p, n):\n    pass\n"
                                             "def layernorm_backward_triton(dy, x, gamma, mean, rstd):\n"
                                             "    _k[(1,)](dy, 1)\n    return dy * rstd[:, None], dy.sum(0), dy.sum(0)"),
}


@pytest.mark.parametrize("what", list(SUSPICIOUS))
def test_what_a_static_read_flags(what):
    needle, assignment, function, source = SUSPICIOUS[what]
    # 06: the other steps left as released, so no other cell defines a kernel
    nb = submission(assignment, {function: source}, base=None if what.startswith("06 ") else solved(assignment))
    picked, _ = pick(nb, notebooks(assignment))
    found = flags.read_submission(assignment, picked)
    assert any(needle in f for f in found), found


def test_the_exercises_own_names_raise_no_flag():
    """Lines an honest student pastes from the notebook: its own test call, a table of its functions."""
    assignment = "04-code-mapping"
    nb = solved(assignment)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "def rmsnorm_backward" in c.source)
    cell.source += ('\n\nif __name__ == "__main__":\n    run_tests("04-code-mapping", "layernorm_backward", '
                    'layernorm_backward)\nSOLUTIONS = {"rmsnorm_backward": rmsnorm_backward}\n'
                    "layernorm_function_backward = LayerNormFunction.backward\n")
    picked, problems = pick(nb, notebooks(assignment))
    assert not problems
    assert flags.read_submission(assignment, picked) == []


def test_a_write_removes_what_a_killed_writer_of_the_same_file_left(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".forward.txt.{dead}-abc.tmp"
    alive = tmp_path / f".forward.txt.{os.getpid()}-def.tmp"  # another grader, still writing
    stale.write_text("half")
    alive.write_text("busy")
    safe.write_atomic(tmp_path / "forward.txt", "whole")
    assert (tmp_path / "forward.txt").read_text() == "whole"
    assert not stale.exists() and alive.exists()


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
