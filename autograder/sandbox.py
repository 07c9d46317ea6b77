"""Running the student's code in a separate, limited process.

The process gets a scratch directory of its own, an environment holding
nothing of the grader's, and limits on wall time, CPU time, file size, open
files and core dumps; it starts a new session so that everything it spawns is
killed with it.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The files the sandboxed process runs; nothing else of the course goes in.
PROGRAM = (HERE / "sandbox_main.py", HERE / "wire.py", HERE.parent / "normgrad" / "calling.py")


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 600.0  # the grader passes less: what the calls of the job may take, plus start-up
    cpu_seconds: int = 900
    file_bytes: int = 256 << 20
    open_files: int = 256
    output_bytes: int = 64 << 10  # of stdout and stderr kept for the report


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    isolation: str  # how the process was confined, for the report


def _set_limits(limits: Limits):
    def apply():
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _tail(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode("utf-8", "replace")


def run(scratch: Path, env_extra: dict[str, str] | None = None, limits: Limits = Limits()) -> Outcome:
    """Run the sandboxed program on scratch/job, writing to scratch/out; return how it went.

    `scratch` must already hold `job/` (job.json and inputs); this adds `bin/`,
    `out/`, `home/` and the captured output beside it.
    """
    bin_dir, out_dir, home = scratch / "bin", scratch / "out", scratch / "home"
    for d in (bin_dir, out_dir, home):
        d.mkdir()
    for f in PROGRAM:
        shutil.copy(f, bin_dir / f.name)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.update(env_extra or {})
    cmd = [sys.executable, "-I", str(bin_dir / "sandbox_main.py"), str(scratch / "job"), str(out_dir)]
    start = time.monotonic()
    with open(scratch / "stdout", "wb") as out, open(scratch / "stderr", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                preexec_fn=_set_limits(limits), start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:  # everything the program started dies with it
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return Outcome(proc.returncode, timed_out, time.monotonic() - start,
                   _tail(scratch / "stdout", limits.output_bytes), _tail(scratch / "stderr", limits.output_bytes),
                   "a separate process with resource limits (no bubblewrap)")
