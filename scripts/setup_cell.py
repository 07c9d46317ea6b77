"""The exercise notebooks' set-up cell, and the command that writes it into every source notebook.

    python scripts/setup_cell.py            # write (or rewrite) the cell in solutions/*/*.ipynb
    python scripts/setup_cell.py --check    # exit 1 and name the notebooks whose first cell is not it

Each notebook starts with this cell, locked (nbgrader's read-only cells), so
that it runs anywhere: it imports the course's library, and where the library
is missing (on Colab, Binder, a JupyterHub) installs it from the published
book's wheel, pinned to the book's version (pyproject.toml), from the book's
address (`html: baseurl:` in _config.yml; the environment variable
NORMGRAD_BOOK overrides it, for a mirror or a local build). Then it prints one
line of what it runs on (normgrad.environment). Writing is idempotent: a
notebook already holding the current cell is left byte for byte; an older
version of it is replaced in place. Regenerate the release afterwards
(`python -m autograder release`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

import book

ROOT = Path(__file__).resolve().parent.parent
CELL_ID = "normgrad-setup"  # the cell's id and nbgrader grade_id
# Colab opens these notebooks on a GPU runtime: it reads `accelerator` (and `colab.gpuType`) from a
# notebook's metadata, as keras-io's tutorials use it
GPU_ASSIGNMENTS = ("06-triton",)


def cell_source() -> str:
    return f'''# Set-up: the course's library, normgrad, which this notebook's tests use. Where it is missing (Colab,
# Binder, a JupyterHub), this installs it from the course's book, at the book's version, and says so.
import importlib, importlib.util, os, subprocess, sys

if importlib.util.find_spec("normgrad") is None:
    book = os.environ.get("NORMGRAD_BOOK", "{book.book_url()}")
    wheel = book.rstrip("/") + "/{book.WHEEL}"
    print("installing the course's library:", wheel)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", wheel], check=True)
    importlib.invalidate_caches()
from normgrad.environment import describe

print(describe("{book.VERSION}"))'''


def canonical_cell() -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(cell_source())
    cell.id = CELL_ID
    cell.metadata = {"nbgrader": {"grade": False, "grade_id": CELL_ID, "locked": True, "schema_version": 3,
                                  "solution": False, "task": False}}
    return cell


def is_canonical(cell) -> bool:
    """The same source and nbgrader settings as the canonical cell (what nbgrader's generation adds aside)."""
    want = canonical_cell()
    meta = {k: v for k, v in cell.get("metadata", {}).get("nbgrader", {}).items() if k not in ("checksum", "cell_type")}
    return cell.cell_type == "code" and cell.source == want.source and meta == want.metadata["nbgrader"]


def with_setup_cell(nb: nbformat.NotebookNode, assignment: str) -> nbformat.NotebookNode:
    """`nb` with the canonical cell first (an older one, wherever it is, is dropped) and Colab's runtime set."""
    nb.cells = [canonical_cell()] + [c for c in nb.cells if c.get("id") != CELL_ID and
                                     c.get("metadata", {}).get("nbgrader", {}).get("grade_id") != CELL_ID]
    if assignment in GPU_ASSIGNMENTS:
        nb.metadata["accelerator"] = "GPU"
        nb.metadata.setdefault("colab", {})["gpuType"] = "T4"
    return nb


def source_notebooks() -> list[tuple[str, Path]]:
    return [(p.parent.name, p) for p in sorted((ROOT / "solutions").glob("*/*.ipynb"))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say which notebooks lack the current cell")
    args = parser.parse_args(argv)
    stale = []
    for assignment, path in source_notebooks():
        before = path.read_text()
        nb = nbformat.reads(before, as_version=4)
        after = nbformat.writes(with_setup_cell(nb, assignment)) + "\n"
        if after != before:
            stale.append(path)
            if not args.check:
                path.write_text(after)
    verb = "lack the current set-up cell" if args.check else "updated"
    print(f"{len(stale)} notebook(s) {verb}" + "".join(f"\n  {p.relative_to(ROOT)}" for p in stale))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
