"""Where the course's trusted material lives, and how to read it.

The source notebooks in `solutions/` (with solutions and hidden tests) and the
student releases in `exercises/` come from the repository, never from a
submission; so do the test cases in `normgrad.cases`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .pycode import defined_names

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
NBGRADER_CONFIG = ROOT / "autograder" / "nbgrader_config.py"
BOOK_CONFIG = ROOT / "_config.yml"


def book_url(config: os.PathLike = BOOK_CONFIG) -> str:
    """Where the book is published, ending in '/': the `html: baseurl:` key of the book's _config.yml.

    The one setting for links into the book: the grader's feedback and the
    notebooks' setup cell both read it.
    """
    import yaml

    with open(config, encoding="utf-8") as f:
        url = ((yaml.safe_load(f) or {}).get("html") or {}).get("baseurl") or ""
    if not url:
        raise ValueError(f"{config} has no html: baseurl: (where the book is published); set it, "
                         "or pass --book-url")
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class Notebooks:
    """The trusted pair of notebooks of one assignment."""

    assignment: str
    source: Path  # solutions/<id>/<name>.ipynb
    release: Path  # exercises/<id>/<name>.ipynb

    @property
    def name(self) -> str:
        return self.source.name


def notebooks(assignment: str) -> Notebooks:
    """The source and release notebooks of an assignment (exactly one notebook each)."""
    found = sorted((SOLUTIONS / assignment).glob("*.ipynb"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one source notebook in solutions/{assignment}/, found {len(found)}")
    source = found[0]
    return Notebooks(assignment, source, EXERCISES / assignment / source.name)


def read(path: os.PathLike) -> nbformat.NotebookNode:
    return nbformat.read(os.fspath(path), as_version=4)


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def solved_release(assignment: str) -> nbformat.NotebookNode:
    """The release notebook with each solution cell replaced by the source's, solution markers dropped.

    A correct submission, as a student would hand it in (hidden tests stay out):
    the tests and the grading benchmarks start from it.
    """
    answers = {}
    for cell in read(notebooks(assignment).source).cells:
        if cell.cell_type == "code" and nbgrader_meta(cell).get("solution"):
            text = "\n".join(line for line in cell.source.splitlines()
                             if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
            answers.update(dict.fromkeys(defined_names(text), text))
    nb = read(notebooks(assignment).release)
    for cell in nb.cells:
        if cell.cell_type == "code":
            for name in defined_names(cell.source) & set(answers):
                cell.source = answers[name]
    return nb

