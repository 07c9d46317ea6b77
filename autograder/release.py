"""Running nbgrader with the course's configuration, and generating the student release with it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .course import EXERCISES, NBGRADER_CONFIG, SOLUTIONS, notebooks


def nbgrader(*args: str, course: Path, release_dir: Path | None = None,
             timeout: float | None = 600) -> subprocess.CompletedProcess:
    """Run an nbgrader command on the course root `course`, with this course's configuration.

    The source directory is the repository's solutions/; the release directory is
    `release_dir` (default course/release); the gradebook is course/gradebook.db.
    nbgrader runs tools of its own (alembic) by name, so the venv's bin goes on PATH.
    """
    course = Path(course).resolve()
    release_dir = Path(release_dir).resolve() if release_dir is not None else course / "release"
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--NbGrader.config_file={NBGRADER_CONFIG}",
           f"--CourseDirectory.root={course}", f"--CourseDirectory.source_directory={SOLUTIONS}",
           f"--CourseDirectory.release_directory={release_dir}", f"--db=sqlite:///{course / 'gradebook.db'}"]
    return subprocess.run(cmd, cwd=course, env=env, capture_output=True, text=True, timeout=timeout)


def generate(assignment: str, release_dir: Path = EXERCISES) -> Path:
    """Run `nbgrader generate_assignment` into release_dir; returns the release notebook's path.

    The gradebook it writes along the way is a throwaway: an instructor's own
    gradebook is filled by their own nbgrader commands.
    """
    with tempfile.TemporaryDirectory() as tmp:
        done = nbgrader("generate_assignment", assignment, "--force", course=Path(tmp), release_dir=release_dir)
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{done.stdout}\n{done.stderr}")
    return Path(release_dir) / assignment / notebooks(assignment).name
