"""Gradescope's autograder: one bundle per assignment, grading with this course's grader and sandbox.

    python -m autograder.gradescope build [--out DIR] [ID ...]     # `make gradescope`
    python -m autograder.gradescope run --assignment ID [--root /autograder] [--book-url URL]

`build` writes DIR/<id>.zip (and the same files unpacked in DIR/<id>/), the
file to upload as a Gradescope programming assignment's autograder:

- `setup.sh`: run once by Gradescope, as root, when it builds the image:
  installs Python (3.11 or later), bubblewrap, and in /opt/normgrad-grader
  what grading needs (NumPy, PyTorch for the CPU, Triton, nbformat), pinned
  to the course's requirements.txt;
- `run_autograder`: run for each submission, in a container of its own:
  grades the notebook in /autograder/submission with `python -m autograder
  check` into /autograder/results/results.json;
- the grader (`autograder/`), the course's library (`normgrad/`) and the
  assignment's trusted notebooks (`solutions/<id>/`, with its hidden tests,
  and `exercises/<id>/`).

`run` is what run_autograder calls. It makes solutions/ readable by root only
(without bubblewrap the sandbox user could otherwise read the hidden tests),
picks the submitted notebook (a regular file; never a link; when several were
handed in, the output says which was graded), and always leaves a valid
results.json: one that says what went wrong when no notebook was found, the
grader failed or could not even start, or grading ran out of time.

Gradescope's overall timeout (10 minutes unless the assignment's settings
raise it, at most 40) kills a run without a results.json: a 0 and no test
shown. Each call's own limits allow far more than that in all (01-forward's 47
calls may take 15 minutes, and Gradescope gives a grader half a CPU by
default), so the grader gets a time limit for the whole notebook a minute
and a half short of that timeout: the tests run by then keep their points,
the others score nothing and say why. Build with `--timeout MINUTES` set to
the assignment's setting. Should the grader itself overrun, `run` stops it a
minute before the timeout and says so.
GRADESCOPE_ROOT (for --root) and NORMGRAD_PYTHON (the grader's Python) move
it all elsewhere, for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import traceback
import zipfile
from pathlib import Path

from normgrad.cases import ASSIGNMENTS

from . import report, safe
from .course import ROOT, notebooks

VENV = "/opt/normgrad-grader"
GRADESCOPE_TIMEOUT_MINUTES = 10  # Gradescope's default overall timeout for one submission
CHECK_MARGIN_S = 30  # of run's time, kept from the grader's: its start, the static read, the results' write
NOT_STARTED = "the autograder could not start; ask the course's staff to look at the autograder's output"
GRADER_PACKAGES = ("numpy", "torch", "triton", "nbformat")  # what `python -m autograder check` imports

SETUP_SH = f"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu 22.04 or 24.04).
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv bubblewrap
PYTHON=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then  # Ubuntu 22.04 has 3.10
    apt-get install -y --no-install-recommends software-properties-common
    add-apt-repository -y ppa:deadsnakes/ppa
    apt-get update
    apt-get install -y --no-install-recommends python3.12 python3.12-venv
    PYTHON=python3.12
fi
# Outside /autograder/source, and readable by all: without bubblewrap the sandbox user runs this Python.
$PYTHON -m venv {VENV}
{VENV}/bin/python -m pip install --quiet --upgrade pip
# PyTorch's CPU build (the CUDA one is gigabytes larger); the rest pinned to the course's requirements.txt
{VENV}/bin/python -m pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu \\
    -r requirements.txt -c constraints.txt
{VENV}/bin/python -c 'import numpy, torch, nbformat; print("grader environment ready: torch", torch.__version__)'
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission: it grades /autograder/submission into
# /autograder/results/results.json with the course's grader. GRADESCOPE_ROOT moves /autograder
# and NORMGRAD_PYTHON the grader's Python (both for tests).
ROOT="${{GRADESCOPE_ROOT:-/autograder}}"
RESULTS="$ROOT/results/results.json"
cd "$ROOT/source" && "${{NORMGRAD_PYTHON:-{venv}/bin/python}}" -m autograder.gradescope run --assignment {assignment} \\
    --root "$ROOT" --book-url {book_url} --time-limit {seconds}
status=$?
if [ ! -s "$RESULTS" ]; then  # the grader could not start (its Python, an import): say so
    echo "the autograder exited with status $status and wrote no results" >&2
    mkdir -p "$ROOT/results"
    printf '%s\\n' {not_started} > "$RESULTS"
fi
exit 0
"""


def requirement_pins() -> dict[str, str]:
    """name -> line of the course's requirements.txt."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            pins[line.split("==")[0].strip().lower().replace("_", "-")] = line.strip()
    return pins


def build(assignment: str, out: Path, timeout_minutes: float = GRADESCOPE_TIMEOUT_MINUTES) -> Path:
    """The bundle of one assignment: DIR/<id>/ and DIR/<id>.zip, for a Gradescope timeout of `timeout_minutes`.
    Returns the zip."""
    folder = out / assignment
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "autograder", folder / "autograder", ignore=skip)
    shutil.copytree(ROOT / "normgrad", folder / "normgrad", ignore=skip)
    (folder / "chapters").mkdir()
    for page in (ROOT / "chapters").glob("*.md"):  # the book's code, which the static read knows a copy of
        shutil.copyfile(page, folder / "chapters" / page.name)
    trusted = notebooks(assignment)
    for path in (trusted.source, trusted.release):
        target = folder / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    pins = requirement_pins()
    (folder / "requirements.txt").write_text("".join(pins[name] + "\n" for name in GRADER_PACKAGES))
    shutil.copyfile(ROOT / "requirements.txt", folder / "constraints.txt")
    (folder / "setup.sh").write_text(SETUP_SH)
    seconds = max(2 * CHECK_MARGIN_S, round(timeout_minutes * 60) - 60)  # a minute for the container and Python
    (folder / "run_autograder").write_text(RUN_AUTOGRADER.format(
        venv=VENV, assignment=shlex.quote(assignment), book_url=shlex.quote(report.default_book_url()),
        seconds=seconds, not_started=shlex.quote(json.dumps(failed_results(NOT_STARTED)))))
    for script in ("setup.sh", "run_autograder"):
        (folder / script).chmod(0o755)
    bundle = out / f"{assignment}.zip"
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | path.stat().st_mode & 0o777) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, path.read_bytes())
    return bundle


def submitted_notebook(submission: Path, name: str) -> tuple[Path | None, str]:
    """The notebook to grade in Gradescope's submission folder, or None and why there is none.

    The release's own name wins; otherwise the only notebook there is. Links are never followed:
    one pointing at the trusted solution would otherwise be graded.
    """
    found, other = [], []  # the notebooks, and what else was handed in (for the message when none is)
    for folder, dirs, files in os.walk(submission):  # os.walk does not descend into linked folders
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__MACOSX")))
        for f in sorted(files):
            path = Path(folder) / f
            if not f.startswith(".") and stat.S_ISREG(os.lstat(path).st_mode):
                (found if f.endswith(".ipynb") else other).append(path)
    def listed(paths) -> str:  # names as repr escapes them (a newline, an escape sequence), at most ten
        names = [repr(str(p.relative_to(submission))) for p in paths]
        return ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")

    named = [p for p in found if p.name == name]
    if len(named) == 1 or len(found) == 1:
        chosen = (named or found)[0]
        others = [p for p in found if p != chosen]
        return chosen, (f"graded {listed([chosen])}, the one named {name}; not graded: {listed(others)}"
                        if others else "")
    if not found and other:  # Forward.IPYNB, forward.ipynb.txt, a zip: say what came instead
        return None, (f"no notebook (a file whose name ends in .ipynb) was submitted, only {listed(other)}: "
                      f"upload your {name}")
    if not found:
        return None, f"no notebook was submitted: upload your {name}"
    if named:
        return None, f"{len(named)} notebooks named {name} were submitted ({listed(found)}): upload only one"
    return None, (f"{len(found)} notebooks were submitted ({listed(found)}) and none is named {name}: "
                  "upload that one alone")


def failed_results(message: str) -> dict:
    return {"score": 0.0, "output": message, "stdout_visibility": "hidden", **report.PLAIN_TEXT,
            "tests": [{"name": "submission", "score": 0.0, "max_score": 0.0, "status": "failed",
                       "output": message, "visibility": "visible"}]}


def run(assignment: str, root: Path, book_url: str, seconds: float | None = None) -> int:
    """Grade the submission in at most `seconds`; whatever goes wrong, a results.json that says so."""
    results = root / "results" / "results.json"
    try:
        return _run(assignment, root, book_url, seconds)
    except Exception:
        traceback.print_exc()
        report.write_results(results, failed_results(
            "the autograder failed before it could grade this submission (an internal error); ask the course's "
            "staff to look at the autograder's output"))
        return 0


def _run(assignment: str, root: Path, book_url: str, seconds: float | None) -> int:
    start = time.monotonic()
    source, submission, results = root / "source", root / "submission", root / "results" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    if os.geteuid() == 0:  # without bubblewrap, the sandbox user must not read the solution and hidden tests
        for folder, _, files in os.walk(source / "solutions"):
            for path in [folder, *(os.path.join(folder, f) for f in files)]:
                os.chmod(path, os.lstat(path).st_mode & 0o700)
    notebook, why = submitted_notebook(submission, notebooks(assignment).name)
    if notebook is None:
        report.write_results(results, failed_results(why))
        print(why)
        return 0
    cmd = [sys.executable, "-m", "autograder", "check", str(notebook), "--assignment", assignment,
           "--gradescope", str(results), "--book-url", book_url]
    if seconds is not None:  # the notebook's tests stop in time to be written; what ran keeps its points
        cmd += ["--time-limit", f"{max(1.0, seconds - CHECK_MARGIN_S - (time.monotonic() - start)):.0f}"]
    grader = subprocess.Popen(cmd, cwd=source, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        code = grader.wait(timeout=None if seconds is None else max(1.0, seconds - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:  # the grader overran its own limit: stop it rather than lose every word
        os.killpg(grader.pid, signal.SIGTERM)  # the grader and what it started in its session; then SIGKILL
        try:
            grader.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(grader.pid, signal.SIGKILL)
            grader.wait()
        report.write_results(results, failed_results(
            f"grading took longer than {seconds:g} seconds, all the time this autograder has, and was stopped: "
            "no test is scored; ask the course's staff to look at the autograder's output"))
        return 0
    if code != 0 or not results.is_file():
        message = ("the grader could not grade this submission (exit status "
                   f"{code}); ask the course's staff to look at the autograder's output")
        report.write_results(results, failed_results(message))
    elif why:  # several notebooks: say which was graded
        data = json.loads(results.read_text())
        data["output"] = safe.text(why) + ("\n\n" + data["output"] if data.get("output") else "")
        report.write_results(results, data)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.gradescope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write a Gradescope autograder bundle (.zip) per assignment")
    p.add_argument("assignments", nargs="*", metavar="ID", help="assignment ids (default: all)")
    p.add_argument("--out", default=str(ROOT / "_build" / "gradescope"), help="folder (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=GRADESCOPE_TIMEOUT_MINUTES, metavar="MINUTES",
                   help="the assignment's autograder timeout on Gradescope (default: %(default)s)")
    p = sub.add_parser("run", help="grade Gradescope's submission folder (what run_autograder does)")
    p.add_argument("--assignment", required=True, choices=list(ASSIGNMENTS))
    p.add_argument("--root", default=os.environ.get("GRADESCOPE_ROOT", "/autograder"),
                   help="Gradescope's folder, holding source/, submission/ and results/ (default: %(default)s)")
    p.add_argument("--book-url", default="", help="where the book's chapters are published, for feedback links")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="all the time this run has: the grader's tests stop short of it (default: no limit)")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.assignment, Path(args.root), args.book_url, args.time_limit)
    for assignment in args.assignments or list(ASSIGNMENTS):
        if assignment not in ASSIGNMENTS:
            raise SystemExit(f"unknown assignment {assignment!r}; known: {', '.join(ASSIGNMENTS)}")
        print(f"wrote {build(assignment, Path(args.out), args.timeout)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
