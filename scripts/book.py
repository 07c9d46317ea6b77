"""Build the book: `python scripts/book.py [OUTDIR]` (default: the repository root, giving _build/html).

Every chapter's code runs; a failing cell, a warning printed by a chapter, a
broken reference or any other Sphinx warning fails the build (-W -n). The
Makefile's `book` target and the test suite both build through here.

The built book also publishes what a reader needs to run the exercises away
from this repository: each chapter's exercise notebook (exercises/<id>/, put
there by scripts/exercise_launch.py) and the course's library as a wheel,
`_static/normgrad-<version>-py3-none-any.whl`, which the notebooks' set-up cell
installs from the book's address (`html: baseurl:` in _config.yml).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PROJECT["version"]
WHEEL = f"_static/normgrad-{VERSION}-py3-none-any.whl"  # where the book publishes the wheel, from its root


def book_url() -> str:
    """The published book's address, ending in '/': `html: baseurl:` in _config.yml, its one home."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["baseurl"]
    return url.rstrip("/") + "/"


def build_wheel(dest: Path) -> Path:
    """Build the wheel of `normgrad` alone (the notebooks' library, not the grader) into `dest`."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT / "normgrad", Path(tmp) / "normgrad", ignore=shutil.ignore_patterns("__pycache__"))
        # normgrad.calling names the sandbox's calling module, which imports nothing of the course but its
        # neighbour bounds.py: the wheel, which holds no grader, carries those two files in its place.
        for name in ("calling.py", "bounds.py"):
            shutil.copyfile(ROOT / "autograder" / "inside" / name, Path(tmp) / "normgrad" / name)
        # TOML's basic strings read JSON's escapes, so json.dumps writes them
        fields = {key: PROJECT[key] for key in ("name", "version", "requires-python", "dependencies")}
        fields["description"] = "The course's library for its exercise notebooks: oracles, tolerances, checks, test cases."
        (Path(tmp) / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n[project]\n'
            + "".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items())
            + '\n[tool.setuptools]\npackages = ["normgrad", "normgrad.cases"]\n')
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(dest), tmp], check=True, cwd=tmp)
    wheel = dest / Path(WHEEL).name
    assert wheel.is_file(), f"pip wrote no {wheel.name} in {dest}"
    return wheel


def build(out: Path = ROOT, source: Path = ROOT, **run_options) -> subprocess.CompletedProcess:
    """Build the book at `source` into `out`/_build/html, with the course's wheel in its _static/."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jupyter_book), "build", "--all", "-W", "-n", "--keep-going", "--path-output", str(out), str(source)]
    # scripts/ on the path, so that _config.yml's local extension loads in a copy of it elsewhere too
    env = run_options.pop("env", None) or dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "scripts"), env.get("PYTHONPATH")]))
    done = subprocess.run(cmd, cwd=source, env=env, **run_options)
    if done.returncode == 0 and source == ROOT:
        build_wheel(out / "_build" / "html" / Path(WHEEL).parent)
    return done


if __name__ == "__main__":
    sys.exit(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT).returncode)
