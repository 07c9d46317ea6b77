"""What a submission names is filed under one name per folder, and quoted text stays text.

`safe.distinct_names` gives each of a class's folders its own key (an
ordinary name is its own key; any other is escaped and gets a hash of its
bytes); `safe.csv_cell` never maps two values to one cell; `safe.markdown`
puts text into a notebook's Markdown so that it renders as that text, which
the autograded notebook's notes rely on (rendered here with nbconvert's
HTMLExporter, as `nbgrader generate_feedback` renders them).
"""

from __future__ import annotations

import os
import re

import pytest

from autograder import safe
from autograder.grading import Report
from autograder.submissions import scan

NOT_UTF8 = os.fsdecode(b"jos\xe9")
LONG = "x" * 200

COLLIDING = [  # pairs of folder names that `safe.name` shows alike
    (NOT_UTF8, "jos\\udce9"),  # not UTF-8, and named as that shows escaped
    (LONG + "a", LONG + "b"),  # differ past the cut
    ("a\nb", "a\\nb"),  # equal after escaping
    ("\u202e" * 85, "\\u202e" * 20),  # escapes longer than a file name may be
    ("alice", "alice\u200b"),  # a zero-width space
    ("alice", "alice "),  # a space at the end
    ("jos\u00e9", "jose\u0301"),  # composed and decomposed: one word on screen
]
# In the pairs above whose first name is plain, that student keeps their own name as their key
PLAIN_FIRST = {("alice", "alice\u200b"), ("alice", "alice "), ("jos\u00e9", "jose\u0301")}


@pytest.mark.parametrize("pair", COLLIDING)
def test_names_that_show_alike_get_keys_of_their_own_the_same_in_any_order(pair):
    keys = safe.distinct_names(pair)
    assert len(set(keys.values())) == 2
    assert safe.distinct_names(reversed(pair)) == keys
    if pair in PLAIN_FIRST:
        assert keys[pair[0]] == pair[0] and keys[pair[1]].startswith(safe.escaped(pair[1]) + "~")
    for raw, key in keys.items():
        assert safe.name(key) == key  # a second pass (Report.made_safe) keeps it
        assert len(key.encode()) < 200 and "/" not in key and key not in ("", ".", "..")


def test_ordinary_names_are_their_own_keys():
    names = ["alice", "café", "=SUM(1+1)", "dup", "O'Brien", "x" * 150]
    assert safe.distinct_names(names) == {n: n for n in names}


def test_a_name_made_to_look_like_anothers_key_gets_its_own_and_leaves_the_others_key_alone():
    forged = safe.key(NOT_UTF8)  # 'jos\\udce9~' and the hash of b'jos\xe9', as a plain name
    keys = safe.distinct_names([NOT_UTF8, forged, "jos\\udce9"])
    assert len(set(keys.values())) == 3
    assert keys["jos\\udce9"] == "jos\\udce9"
    # the student whose name is not UTF-8 keeps the key of every earlier run: the forged folder yields
    assert keys[NOT_UTF8] == safe.distinct_names([NOT_UTF8])[NOT_UTF8] == forged
    assert keys[forged].startswith(forged + "~")


def test_scan_files_each_folder_under_its_own_name(tmp_path):
    root = tmp_path / "submitted"
    for student in (os.fsencode(NOT_UTF8), b"jos\\udce9", b"alice"):
        folder = root / os.fsdecode(student) / "01-forward"
        folder.mkdir(parents=True)
        (folder / "forward.ipynb").write_text("{}")
    warned = []
    found = {s.folder[0]: s for s in scan(root, lambda a: "forward.ipynb", warned.append)}
    assert found["alice"].student == "alice" and found["jos\\udce9"].student == "jos\\udce9"
    assert found[NOT_UTF8].student == safe.key(NOT_UTF8) != "jos\\udce9"
    assert found[NOT_UTF8].warnings() == [f"the student folder's name, 'jos\\udce9' (escaped), is not plain text, "
                                          f"too long, or shown like another folder's: its results are filed as "
                                          f"'{safe.key(NOT_UTF8)}'"]
    assert found["alice"].warnings() == []
    assert any("filed as" in w for w in warned)


@pytest.mark.parametrize("values", [("=x", "'=x"), ("'x", "x"), ("+1", "'+1"), ("''=x", "'=x")])
def test_no_two_values_share_a_csv_cell(values):
    a, b = values
    assert safe.csv_cell(a) != safe.csv_cell(b)
    assert safe.csv_cell("=x") == "'=x" and safe.csv_cell("alice") == "alice"


HOSTILE = [
    "this folder holds more than one notebook: 'forward.ipynb' was graded, not "
    "'<img src=x onerror=alert(document.domain)>.ipynb'",
    "cell 'layernorm_forward': IPython command '%time <img src=x onerror=\"alert(1)\"> <script>alert(2)</script>' "
    "is not Python",
    "[click](javascript:alert(3)) ![x](http://example.org/x.png) <http://example.org> $\\href{javascript:x}{y}$ "
    "&lt;b&gt; `code` *em* __strong__",
]


def test_markdown_of_hostile_text_holds_no_tag_link_or_image():
    for s in HOSTILE:
        md = safe.markdown(s)
        assert "<" not in md and ">" not in md and "\n" not in md
        assert not re.search(r"(?<!\\)[\[\]()!`*_$]", md)  # every such character escaped


def autograded_with_notes(notes):
    from autograder.gradebook import autograded_notebook

    return autograded_notebook(Report("eve", "01-forward", "forward.ipynb", 52.0, notes=list(notes)))


def test_the_autograded_notebooks_notes_carry_no_raw_html():
    nb = autograded_with_notes(HOSTILE + ["", "a second line\n<script>alert(4)</script>"])
    notes = nb.cells[0]
    assert notes.cell_type == "markdown" and notes.source.startswith("**The grader's notes:**")
    assert "<" not in notes.source.split("\n", 1)[1]
    assert notes.source.count("\n- ") == len(HOSTILE) + 1  # the empty note left out, the other's first line kept


def test_nbconvert_renders_the_notes_as_text():
    nbconvert = pytest.importorskip("nbconvert")
    body, _ = nbconvert.HTMLExporter().from_notebook_node(autograded_with_notes(HOSTILE))
    assert "<img src=x" not in body and "<script>alert" not in body and 'href="javascript' not in body
    assert "<img" not in body.split("The grader")[1].split("</ul>")[0]
    assert "&lt;img src=x onerror=alert(document.domain)&gt;.ipynb" in body  # shown, as text
    assert "%time &lt;img src=x onerror=" in body
    assert "[click](javascript:alert(3))" in body
