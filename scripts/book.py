"""Build the book: `python scripts/book.py [OUTDIR]` (default: the repository root, giving _build/html).

Every chapter's code runs; a failing cell, a warning printed by a chapter, a
broken reference or any other Sphinx warning fails the build (-W -n). The
Makefile's `book` target and the test suite both build through here.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path = ROOT, source: Path = ROOT, **run_options) -> subprocess.CompletedProcess:
    """Build the book at `source` into `out`/_build/html."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", "--all", "-W", "-n", "--keep-going", "--path-output", str(out), str(source)]
    return subprocess.run(cmd, cwd=source, **run_options)


if __name__ == "__main__":
    sys.exit(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT).returncode)
