"""What a submission names is filed under one name per folder.

`safe.distinct_names` gives each of a class's folders its own key (an
ordinary name is its own key; any other is escaped and gets a hash of its
bytes); `safe.csv_cell` never maps two values to one cell.
"""

from __future__ import annotations

import os

import pytest

from autograder import safe
from autograder.submissions import scan

NOT_UTF8 = os.fsdecode(b"jos\xe9")
LONG = "x" * 200

COLLIDING = [  # pairs of folder names that `safe.name` shows alike
    (NOT_UTF8, "jos\\udce9"),  # not UTF-8, and named as that shows escaped
    (LONG + "a", LONG + "b"),  # differ past the cut
    ("a\nb", "a\\nb"),  # equal after escaping
    ("\u202e" * 85, "\\u202e" * 20),  # escapes longer than a file name may be
]


@pytest.mark.parametrize("pair", COLLIDING)
def test_names_that_show_alike_get_keys_of_their_own_the_same_in_any_order(pair):
    keys = safe.distinct_names(pair)
    assert len(set(keys.values())) == 2
    assert safe.distinct_names(reversed(pair)) == keys
    for raw, key in keys.items():
        assert safe.name(key) == key  # a second pass (Report.made_safe) keeps it
        assert len(key.encode()) < 200 and "/" not in key and key not in ("", ".", "..")


def test_ordinary_names_are_their_own_keys():
    names = ["alice", "café", "=SUM(1+1)", "dup", "O'Brien", "x" * 150]
    assert safe.distinct_names(names) == {n: n for n in names}


def test_a_name_made_to_look_like_anothers_key_still_gets_its_own():
    forged = safe.key(NOT_UTF8)  # 'jos\\udce9~' and the hash of b'jos\xe9', as a plain name
    keys = safe.distinct_names([NOT_UTF8, forged, "jos\\udce9"])
    assert len(set(keys.values())) == 3
    assert keys["jos\\udce9"] == "jos\\udce9"


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
