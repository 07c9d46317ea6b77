"""Running an exercise anywhere and grading it anywhere.

- Gradescope: `make gradescope` bundles, graded as Gradescope runs them, in a folder laid out as its /autograder;
- the notebooks' set-up cell: first in every notebook, and in a fresh environment it installs the course's
  wheel from the book (served on localhost) and the visible tests run;
- the book: each chapter's launch and download buttons open its exercise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

import book
import setup_cell
from autograder import gradescope
from autograder.course import notebooks, read
from helpers import solved, submission
from normgrad.cases import ASSIGNMENTS, load

# layernorm_forward without gamma: a known mistake of exercise 01, which the feedback must name
GAMMA_FORGOTTEN = '''import numpy as np


def layernorm_forward(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=1)
    c = x - mean[:, None]
    rstd = 1 / np.sqrt((c * c).mean(axis=1) + eps)
    x_hat = c * rstd[:, None]
    return x_hat + beta, {"x": x, "mean": mean, "rstd": rstd, "x_hat": x_hat, "gamma": gamma, "eps": eps}
'''


# --- Gradescope --------------------------------------------------------------------------------------------

def test_make_gradescope_builds_the_bundles_with_the_module(root):
    dry = subprocess.run(["make", "-n", "gradescope"], cwd=root, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "-m autograder.gradescope build" in dry.stdout


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gradescope")
    done = subprocess.run([sys.executable, "-m", "autograder.gradescope", "build", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path_factory.getbasetemp())
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_a_bundle_per_assignment_holds_what_gradescope_runs(bundles):
    for assignment in ASSIGNMENTS:
        with zipfile.ZipFile(bundles / f"{assignment}.zip") as z:
            names = set(z.namelist())
            modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
            assert {"setup.sh", "run_autograder", "requirements.txt", "constraints.txt", "autograder/cli.py",
                    "normgrad/cases/__init__.py"} <= names
            assert notebooks(assignment).source.relative_to(notebooks(assignment).source.parents[2]).as_posix() in names
            assert all(modes[s] & 0o111 for s in ("setup.sh", "run_autograder")), "scripts must be executable"
            assert f"--assignment {assignment} " in z.read("run_autograder").decode()
            other = [n for n in names if n.startswith("solutions/") and not n.startswith(f"solutions/{assignment}/")]
            assert not other, f"the {assignment} bundle holds other assignments' solutions: {other}"
            assert not [n for n in names if "__pycache__" in n]
    setup = (bundles / "01-forward" / "setup.sh").read_text()
    pinned = (bundles / "01-forward" / "requirements.txt").read_text().split()
    assert [p.split("==")[0] for p in pinned] == list(gradescope.GRADER_PACKAGES) and all("==" in p for p in pinned)
    assert "-r requirements.txt -c constraints.txt" in setup and "bubblewrap" in setup
    syntax = subprocess.run(["bash", "-n", str(bundles / "01-forward" / "setup.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def gradescope_run(bundles: Path, tmp: Path, assignment: str, files: dict[str, nbformat.NotebookNode | str]) -> dict:
    """Lay out Gradescope's /autograder under tmp, put `files` in submission/, run run_autograder; results.json."""
    root = tmp / "autograder"
    with zipfile.ZipFile(bundles / f"{assignment}.zip") as z:
        z.extractall(root / "source")
    (root / "source" / "run_autograder").chmod(0o755)  # zipfile does not restore modes; Gradescope does
    (root / "submission").mkdir()
    (root / "results").mkdir()
    for name, content in files.items():
        path = root / "submission" / name
        if isinstance(content, str) and content.startswith("->"):
            path.symlink_to(content[2:].strip())
        else:
            nbformat.write(content, str(path))
    # a clean environment, as in Gradescope's container: nothing of the repository on the path
    env = {"PATH": os.environ["PATH"], "GRADESCOPE_ROOT": str(root), "NORMGRAD_PYTHON": sys.executable,
           "HOME": str(tmp)}
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert isinstance(results["score"], (int, float)) and isinstance(results.get("tests"), list)
    for test in results["tests"]:
        assert {"name", "score", "max_score", "output", "visibility"} <= set(test)
        assert test["visibility"] in ("visible", "hidden", "after_due_date", "after_published")
    return results


def test_run_autograder_gives_the_solution_full_marks(bundles, tmp_path):
    results = gradescope_run(bundles, tmp_path, "01-forward", {"forward.ipynb": solved("01-forward")})
    total = sum(c.points for c in load("01-forward").cases)
    assert results["score"] == total and len(results["tests"]) == len(load("01-forward").cases)
    assert all(t["score"] == t["max_score"] for t in results["tests"])


def test_run_autograder_names_a_known_mistake_with_a_link_to_the_published_book(bundles, tmp_path):
    wrong = submission("01-forward", {"layernorm_forward": GAMMA_FORGOTTEN}, base=solved("01-forward"))
    # a student's upload is named as their browser saved it
    results = gradescope_run(bundles, tmp_path, "01-forward", {"forward (1).ipynb": wrong})
    mistake = next(m for m in load("01-forward").mistakes
                   if m.function == "layernorm_forward" and m.name == "gamma-forgotten")
    failed = [t for t in results["tests"] if t["score"] < t["max_score"]]
    assert failed and all(t["name"].startswith("layernorm_forward/") for t in failed)
    assert all(mistake.message in t["output"] for t in failed)
    assert f"{gradescope.book_url()}{mistake.section}" in failed[0]["output"]
    assert results["score"] == sum(c.points for c in load("01-forward").cases) - sum(t["max_score"] for t in failed)


def test_run_autograder_never_grades_a_link_and_says_what_to_upload(bundles, tmp_path):
    # a link to the bundle's own solution would otherwise score full marks
    solution = tmp_path / "autograder" / "source" / "solutions" / "01-forward" / "forward.ipynb"
    results = gradescope_run(bundles, tmp_path, "01-forward", {"forward.ipynb": f"-> {solution}"})
    assert results["score"] == 0 and "no notebook was submitted" in results["output"]


def test_choosing_the_submitted_notebook(tmp_path):
    assert gradescope.submitted_notebook(tmp_path, "forward.ipynb")[0] is None
    for name in ("a.ipynb", "forward.ipynb"):
        (tmp_path / name).write_text("{}")
    assert gradescope.submitted_notebook(tmp_path, "forward.ipynb")[0] == tmp_path / "forward.ipynb"
    (tmp_path / "forward.ipynb").unlink()
    (tmp_path / "b.ipynb").write_text("{}")
    chosen, why = gradescope.submitted_notebook(tmp_path, "forward.ipynb")
    assert chosen is None and "2 notebooks" in why and "forward.ipynb" in why
