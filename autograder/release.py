"""Generating the student release (exercises/) from the source notebooks (solutions/) with nbgrader."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .course import EXERCISES, NBGRADER_CONFIG, ROOT, notebooks


def generate(assignment: str, release_dir: Path = EXERCISES) -> Path:
    """Run `nbgrader generate_assignment` into release_dir; returns the release notebook's path.

    The gradebook it writes along the way is a throwaway: an instructor's own
    gradebook is filled by their own nbgrader commands.
    """
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force",
               f"--NbGrader.config_file={NBGRADER_CONFIG}",
               f"--CourseDirectory.release_directory={Path(release_dir).resolve()}",
               f"--db=sqlite:///{tmp}/gradebook.db"]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{done.stdout}\n{done.stderr}")
    return Path(release_dir) / assignment / notebooks(assignment).name
