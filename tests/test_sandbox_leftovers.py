"""A process that escapes its job never keeps the grader waiting.

The case that matters is the fallback run by an ordinary user: no sandbox uid to kill, no control group,
no pid namespace. A process of the job that leaves its session (setsid) escapes `killpg` and keeps the
job's stdout, stderr and results pipe open. The grader adopts such orphans (a child subreaper) and kills
them; where it cannot, it stops reading a little after the job's main process ended, keeps what arrived,
says so in a note, and goes on to the next job.

The grader runs here as `nobody` (setpriv), on the system's Python of this version in a small venv holding a copy of
this checkout's numpy (as the red-team review ran it), from a copy of the grader's package: nobody may not be able
to read the checkout (a clone in a folder of mode 0700).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"

# Run as nobody: grade a job whose cell leaves behind a setsid daemon holding every pipe, then a plain job.
SCRIPT = """
import json, os, sys, textwrap, time
sys.path.insert(0, {root!r})
from autograder import sandbox
from autograder.inside import protocol, wire

box = sandbox.Sandbox("fallback")
reaper = box.reaper
if {no_reaper!r}:  # as on a kernel without child subreapers: only the time bound is left
    sandbox._reaper[0] = reaper = False

DAEMON = '''
import os, time
_daemon = os.fork()
if _daemon == 0:
    os.setsid()  # out of the job's session and process group: killpg misses it
    time.sleep(100000)  # holds stdout, stderr and the results pipe; uses no CPU
def who(x):
    return _daemon
'''
HONEST = '''
def who(x):
    return x + 1
'''

def job(source):
    spec = protocol.CallSpec("c000", "who", "call", "cpu", 5.0)
    inputs = {{f"{{protocol.inputs(spec.id)}}/{{n}}": d for n, d in wire.pack(([1], {{}})).items()}}
    start = time.monotonic()
    result = sandbox.run_job(box, protocol.Job((protocol.Cell("k0", "cell", source),), (spec,)), inputs,
                             sandbox.Limits(memory_bytes=2 << 30))
    verdict = result.verdicts[spec.id]
    back = None
    if not isinstance(verdict, str):
        status = json.loads(verdict[protocol.status(spec.id)])
        back = wire.unpack(wire.subfolder(verdict, protocol.returned(spec.id))) if not status["error"] else status
    return {{"seconds": time.monotonic() - start, "back": back, "notes": result.notes,
             "verdict": verdict if isinstance(verdict, str) else None}}

first = job(DAEMON)
daemon = first["back"] if isinstance(first["back"], int) else None
alive = daemon is not None and os.path.exists(f"/proc/{{daemon}}") and \\
    open(f"/proc/{{daemon}}/stat").read().rpartition(")")[2].split()[0] != "Z"
second = job(HONEST)
if daemon is not None and alive:
    os.kill(daemon, 9)
print(json.dumps({{"reaper": reaper, "first": first, "daemon_alive_after": alive, "second": second}}))
"""


@pytest.fixture(scope="module")
def nobody_python():
    """A Python that `nobody` can run and that imports this checkout's numpy (skips where there is none)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv, to run the grader as nobody")
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"no {SYSTEM_PYTHON} for nobody to run")
    folder = Path(tempfile.mkdtemp(prefix="leftovers-"))  # under /tmp, which nobody may traverse
    folder.chmod(0o755)
    try:
        venv = folder / "venv"
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        site = next((venv / "lib").glob("python*/site-packages"))
        own = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(os.path.join(p, "numpy"))]
        if not own:
            pytest.skip("no site-packages with numpy")
        for name in ("numpy", "numpy.libs"):  # copied: the sandbox sees no folder of the repository's
            if os.path.isdir(os.path.join(own[0], name)):
                shutil.copytree(os.path.join(own[0], name), site / name, symlinks=True)
        shutil.copytree(ROOT / "autograder", folder / "code" / "autograder",
                        ignore=shutil.ignore_patterns("__pycache__"))
        python = str(venv / "bin" / "python")
        probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-c",
                                "import numpy"], capture_output=True, text=True, cwd="/")
        if probe.returncode != 0:
            pytest.skip(f"nobody cannot import numpy with {SYSTEM_PYTHON}: {probe.stderr.strip()[-200:]}")
        yield python, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("no_reaper", [False, True], ids=["subreaper", "time-bound"])
def test_a_setsid_daemon_neither_hangs_the_fallback_nor_costs_the_next_job(nobody_python, no_reaper):
    python, folder = nobody_python
    script = folder / f"run{int(no_reaper)}.py"
    script.write_text(textwrap.dedent(SCRIPT.format(root=str(folder / "code"), no_reaper=no_reaper)))
    start = time.monotonic()
    done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-I",
                           str(script)], capture_output=True, text=True, cwd="/", timeout=300,
                          env={"PATH": "/usr/bin:/bin", "TMPDIR": "/tmp", "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = got["first"], got["second"]
    assert isinstance(first["back"], int) and first["back"] > 0, first  # the call ran, and answered
    assert first["seconds"] < 60, f"the daemon held the job for {first['seconds']:.0f} s"
    assert got["reaper"] != no_reaper, "the grader could not become a child subreaper (Linux 3.4 and later)"
    if got["reaper"]:
        assert not got["daemon_alive_after"], "the grader adopted the daemon but did not kill it"
    else:
        assert any("kept its output open" in n for n in first["notes"]), first["notes"]
    assert second["back"] == 2 and not second["notes"], second  # the next job grades as ever
    assert time.monotonic() - start < 240
