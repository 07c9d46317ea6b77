"""Red team: hostile and broken submissions against the trusted grader.

Each attack is a real submission in nbgrader's layout. They are graded in one
batch, the way an instructor grades a class (`python -m autograder grade
--jobs 2 --gradebook ... --private ...`), beside two honest controls, with a
gradebook holding an earlier student's grades, a private cases file, canary
files and a listening socket around them. Every attack is given the real
paths it would need (the repository, the gradebook, another student's
notebook, the instructor's private file), so a gap in the sandbox would show.

Probes (attacks that try to read, write, connect or escalate) define the
function honestly only if every attempt failed, and raise "LEAKED: ..."
otherwise: full marks means the sandbox held. Cheats pair a trick with a
wrong answer: they must score exactly what the honest parts earn.

After each, the test asserts the attack's own score and message, and that
the controls kept full marks, the gradebook changed only in graded students'
own rows (each equal to their own results), no process of a sandbox user is
left, and nothing was written outside the jobs' scratch space (a snapshot of
the repository and the course folder, canary files, the machine's temporary
folders). Every attack is bounded: processes by the process limit, memory by
`--memory-mb`, disk by the scratch tmpfs and the file-size limit, time by the
per-call limits.

It runs against 01-forward by default; set REDTEAM_ASSIGNMENT to another
assignment id to aim it elsewhere.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat
import numpy as np
import pytest

from autograder.cells import defined_names
from autograder.course import ROOT, notebooks
from autograder.cgroup import leftover_groups
from autograder.private import with_private
from autograder.sandbox import (UID_BASE, UID_COUNT, Sandbox, SandboxError, _inside_files, held_by_live_grader,
                                lock_uid, processes_of)
from helpers import fallback_sandbox, nbgrader_course, solved, write
from normgrad.cases import load

ASSIGNMENT = os.environ.get("REDTEAM_ASSIGNMENT", "01-forward")
INSIDE_FILES = tuple(p.name for p in _inside_files())
MEMORY_MB = 1536
pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("REDTEAM_AS_USER"),
                                reason="the red-team suite checks the root set-up (a sandbox uid per job)")


def target_function() -> str:
    """The first function of the assignment that its cases call plainly (fn(*args)): the attacks' target."""
    assignment = load(ASSIGNMENT)
    for function in assignment.functions:
        case = assignment.cases_of(function)[0]
        if case.make(np.random.default_rng(0), "cpu").protocol == "call":
            return function
    pytest.skip(f"{ASSIGNMENT} has no plainly called function to attack")


F = target_function()

# Helpers the attacks' code uses inside the sandbox: they work on NumPy arrays and torch tensors alike.
PRELUDE = '''
import numpy as _np
def _rt_map(v, fn):
    if isinstance(v, _np.ndarray) or (type(v).__module__.startswith("torch") and hasattr(v, "dtype")):
        return fn(v)
    if isinstance(v, tuple):
        return tuple(_rt_map(i, fn) for i in v)
    if isinstance(v, list):
        return [_rt_map(i, fn) for i in v]
    if isinstance(v, dict):
        return {k: _rt_map(i, fn) for k, i in v.items()}
    return v
def _rt_is_float(a):
    return (a.dtype.kind == "f") if isinstance(a, _np.ndarray) else a.is_floating_point()
def _rt_wrong(v):
    return _rt_map(v, lambda a: a * 1.5 + 1 if _rt_is_float(a) else a)
_rt_leaks = []
def _rt_try(what, fn):
    try:
        fn()
    except BaseException:
        return
    _rt_leaks.append(what)
'''


def wrapper(body: str) -> str:
    """Redefine F around the honest one (`_rt_honest`); `body` is the new function's body."""
    return f"_rt_honest = {F}\n\ndef {F}(*args, **kwargs):\n{textwrap.indent(textwrap.dedent(body).strip(), '    ')}\n"


D = textwrap.dedent


def esc(code: str) -> str:
    """Code to pass through with_code's str.format untouched."""
    return code.replace("{", "{{").replace("}", "}}")


WRONG = wrapper("return _rt_wrong(_rt_honest(*args, **kwargs))")
HONEST_UNLESS_LEAKED = wrapper("""
if _rt_leaks:
    raise RuntimeError("LEAKED: " + ", ".join(_rt_leaks))
return _rt_honest(*args, **kwargs)
""")


@dataclass
class Ctx:
    """What the attacks know: the real paths around the grader."""

    base: Path
    gradebook: Path
    control: Path
    private: Path
    canary: Path
    port: int
    unix_socket: Path
    grader_pid: int


@dataclass
class Attack:
    name: str
    build: Callable[[Ctx], object]  # -> a notebook, or bytes for the file as submitted
    expect: str  # "full", "lose_f" (only the target function's points lost) or "zero"
    says: str | None = None  # a phrase the feedback must contain


def with_code(code: str):
    """The honest submission with `code` appended to the target function's cell."""
    def build(ctx: Ctx):
        nb = solved(ASSIGNMENT)
        cell = next(c for c in nb.cells if c.cell_type == "code" and F in defined_names(c.source))
        cell.source = cell.source + "\n" + PRELUDE + "\n" + code.format(ctx=ctx) + "\n"
        return nb
    return build


def probe(attempts: str):
    """Attempts (each `_rt_try(what, fn)`) at definition time; F stays honest only if all of them failed."""
    return with_code(textwrap.dedent(attempts) + "\n" + esc(HONEST_UNLESS_LEAKED))


def cheat(trick: str):
    """A trick beside a wrong answer: the trick must not earn the points back."""
    return with_code(textwrap.dedent(trick) + "\n" + esc(WRONG))


def returning(transform: str):
    """F returns the honest result passed through `transform` (an expression of `r`)."""
    return with_code(esc(wrapper(f"r = _rt_honest(*args, **kwargs)\nreturn {transform}")))


def edited(fn):
    """The honest submission edited as a notebook by fn(nb, ctx)."""
    def build(ctx):
        nb = solved(ASSIGNMENT)
        return fn(nb, ctx) or nb
    return build


def _edit_tests_and_break_f(nb, ctx):
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            cell.source = "print('All tests passed!')"
    cell = next(c for c in nb.cells if c.cell_type == "code" and F in defined_names(c.source))
    cell.source += "\n" + PRELUDE + "\n" + WRONG


def _delete_f(nb, ctx):
    nb.cells = [c for c in nb.cells if not (c.cell_type == "code" and F in defined_names(c.source))]


def _reorder(nb, ctx):
    nb.cells.reverse()


def _tamper_metadata(nb, ctx):
    ids = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.get("metadata", {})]
    for cell, new_id in zip([c for c in nb.cells if "nbgrader" in c.get("metadata", {})], reversed(ids)):
        meta = cell.metadata["nbgrader"]
        meta["grade_id"], meta["points"] = new_id, 1000
        meta["solution"], meta["grade"], meta["locked"] = not meta.get("solution"), True, False
    cell = next(c for c in nb.cells if c.cell_type == "code" and F in defined_names(c.source))
    cell.source += "\n" + PRELUDE + "\n" + WRONG


def _code_outside_solution_cells(nb, ctx):
    nb.cells.insert(0, nbformat.v4.new_code_cell("import os\nos._exit(3)"))
    nb.cells.append(nbformat.v4.new_code_cell("raise SystemExit('graded!')"))


ATTACKS = [
    # --- cheats that try to pass the tests without the right answer
    Attack("patch-comparisons", cheat("""
        import numpy, numpy.testing
        numpy.allclose = lambda *a, **k: True
        numpy.isclose = lambda *a, **k: True
        numpy.array_equal = lambda *a, **k: True
        numpy.testing.assert_allclose = lambda *a, **k: None
        numpy.testing.assert_array_equal = lambda *a, **k: None
        """), "lose_f"),
    Attack("swap-sys-modules", cheat("""
        import sys, types
        fake = types.ModuleType("numpy.testing")
        fake.assert_allclose = lambda *a, **k: None
        sys.modules["numpy.testing"] = fake
        cases = types.ModuleType("normgrad.cases")
        cases.run_tests = lambda *a, **k: None
        sys.modules["normgrad"] = types.ModuleType("normgrad")
        sys.modules["normgrad.cases"] = cases
        sys.modules["wire"] = types.ModuleType("wire")
        """), "lose_f"),
    Attack("ipython-input-transformer", cheat("""
        try:
            get_ipython().input_transformers_cleanup.append(lambda lines: [])
        except NameError:
            pass
        """), "lose_f"),
    Attack("ipython-hooks", cheat("""
        import sys
        sys.excepthook = lambda *a: None
        sys.displayhook = lambda *a: None
        try:
            ip = get_ipython()
            ip.events.register("pre_run_cell", lambda *a: None)
            ip.set_custom_exc((BaseException,), lambda *a, **k: None)
        except NameError:
            pass
        """), "lose_f"),
    Attack("fake-output-and-result-files", cheat("""
        import os, sys, glob
        print("All tests passed!\\nscore: 24/24\\n", flush=True)
        print("PASS  hidden   everything", file=sys.stderr)
        for folder in [os.getcwd(), os.environ.get("HOME", "/tmp"), "/tmp", "../out", "/tmp/out",
                       *glob.glob("/tmp/grade-*/out"), *glob.glob("/tmp/autograder-*")]:
            for name in ("grades.csv", "results.json", "status.json", "cells.json"):
                try:
                    with open(os.path.join(folder, name), "w") as f:
                        f.write('{{"score": 24, "error": null}}')
                except OSError:
                    pass
        """), "lose_f"),
    Attack("forged-result-frames", cheat("""
        import os
        forged = b"../../grades.csv 2\\n24"
        for i in range(200):
            forged += b"c%03d/status.json 15\\n" % i + b'{{"error": null}}'
        for fd in range(3, 64):
            try:
                os.write(fd, forged)
            except OSError:
                pass
        """), "lose_f", "malformed results"),
    # a status nested deeper than the JSON parser recurses: a RecursionError, no ValueError, was once an internal
    # error (the grader's traceback, "ask the instructor") where a malformed result belongs
    Attack("status-nested-too-deep", cheat("""
        import os, sys
        body = b"[" * 100000
        os.write(int(sys.argv[2]), b"k0/status.json %d\\n" % len(body) + body)
        """), "lose_f", "malformed results"),
    Attack("lying-object", with_code(esc(wrapper("""
        class Liar:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __sub__(self, other): return 0
            __rsub__ = __sub__
            def __abs__(self): return 0
            def __len__(self): return 2
            def __getitem__(self, i): return self
            def __float__(self): return 0.0
        return Liar()
        """))), "lose_f", "cannot cross"),
    Attack("array-subclass-lies", with_code(D("""
        class _LiarArray(_np.ndarray):
            def __eq__(self, other): return _np.ones(self.shape, bool)
            def __sub__(self, other): return _np.zeros(self.shape)
            __rsub__ = __sub__
            def __array_ufunc__(self, ufunc, method, *inputs, **kw):
                return _np.zeros(self.shape)
        def _rt_liar(a):
            if isinstance(a, _np.ndarray):
                return a.view(_LiarArray)
            import torch
            class _LiarTensor(torch.Tensor):
                def __eq__(self, other): return torch.ones(self.shape, dtype=torch.bool)
                def __sub__(self, other): return torch.zeros(self.shape)
            return a.as_subclass(_LiarTensor)
        """) + esc(wrapper("return _rt_map(_rt_wrong(_rt_honest(*args, **kwargs)), _rt_liar)"))),
        "lose_f"),
    Attack("nan-and-inf", with_code(D("""
        def _rt_poke(a):
            if not _rt_is_float(a) or (a.size if isinstance(a, _np.ndarray) else a.numel()) == 0:
                return a
            a = a.copy() if isinstance(a, _np.ndarray) else a.contiguous().clone()
            a.reshape(-1)[0] = float("nan")
            a.reshape(-1)[-1] = float("inf")
            return a
        """) + esc(wrapper("return _rt_map(_rt_honest(*args, **kwargs), _rt_poke)"))), "lose_f", "non-finite"),
    Attack("shapes-that-broadcast", returning("_rt_map(r, lambda a: a[None])"), "lose_f", "should have shape"),
    Attack("wrong-dtype", with_code(D("""
        def _rt_other_dtype(a):
            if not _rt_is_float(a):
                return a
            if isinstance(a, _np.ndarray):
                return a.astype(_np.float32 if a.dtype == _np.float64 else _np.float64)
            import torch
            return a.to(torch.float32 if a.dtype == torch.float64 else torch.float64)
        """) + esc(wrapper("return _rt_map(_rt_honest(*args, **kwargs), _rt_other_dtype)"))),
        "lose_f", "should have dtype"),
    Attack("wrong-type-or-device", with_code(D("""
        def _rt_other_kind(a):
            if isinstance(a, _np.ndarray):  # a NumPy exercise cannot import torch: a list, then
                return a.tolist()
            import torch
            return a.to("cuda") if a.device.type == "cpu" and torch.cuda.is_available() else a.cpu().numpy()
        """) + esc(wrapper("return _rt_map(_rt_honest(*args, **kwargs), _rt_other_kind)"))),
        "lose_f", "should be a"),

    # --- probes: reading, writing, connecting, escalating (honest answers, unless something leaked)
    Attack("read-solutions-and-hidden-tests", probe(f"""
        import os, glob
        _rt_try("solutions/", lambda: open("{ROOT}/solutions/{ASSIGNMENT}/{notebooks(ASSIGNMENT).name}").read(1))
        _rt_try("normgrad/cases/", lambda: open(glob.glob("{ROOT}/normgrad/cases/*.py")[0]).read(1))
        _rt_try("the repository", lambda: os.listdir("{ROOT}")[0])
        _rt_try("import normgrad", lambda: __import__("normgrad.cases"))
        _rt_try("import autograder", lambda: __import__("autograder.grading"))
        _rt_try("the program's folder", lambda: [n for n in os.listdir(os.path.dirname(__import__("wire").__file__))
                                                if n not in {INSIDE_FILES}][0])
        """), "full"),
    Attack("read-gradebook-and-other-submissions", probe("""
        import os, glob
        _rt_try("gradebook", lambda: open("{ctx.gradebook}", "rb").read(1))
        _rt_try("another student's notebook", lambda: open("{ctx.control}").read(1))
        _rt_try("the submitted folder", lambda: os.listdir("{ctx.base}/submitted")[0])
        _rt_try("a notebook in /tmp", lambda: glob.glob("/tmp/**/*.ipynb", recursive=True)[0])
        _rt_try("a grader's folder mounted", lambda: [l for l in open("/proc/self/mountinfo")
                                                     if "{ctx.base}" in l or "pytest" in l][0])
        _rt_try("a grader's folder on sys.path", lambda: [p for p in __import__("sys").path
                                                          if "{ctx.base}" in p or "pytest" in p][0])
        """), "full"),
    Attack("read-instructor-files", probe("""
        import os
        _rt_try("private cases", lambda: open("{ctx.private}").read(1))
        _rt_try("canary", lambda: open("{ctx.canary}").read(1))
        _rt_try("/etc/shadow", lambda: open("/etc/shadow").read(1))
        _rt_try("/etc/passwd", lambda: open("/etc/passwd").read(1))
        _rt_try("/root", lambda: os.listdir("/root/..")[0] and open("/root/.bashrc").read(1))
        _rt_try("/home", lambda: os.listdir("/home")[0])
        """), "full"),
    Attack("write-gradebook", probe("""
        import sqlite3
        def _rt_sql():
            db = sqlite3.connect("file:{ctx.gradebook}?mode=rw", uri=True)
            db.execute("UPDATE grade SET auto_score = 0")
            db.commit()
        _rt_try("sqlite write", _rt_sql)
        _rt_try("gradebook append", lambda: open("{ctx.gradebook}", "ab").write(b"x"))
        """), "full"),
    Attack("write-other-students-and-repo", probe(f"""
        _rt_try("another student's notebook", lambda: open("{{ctx.control}}", "a"))
        _rt_try("their feedback folder", lambda: open("{{ctx.base}}/out/feedback/aaa-control/x", "w"))
        _rt_try("canary", lambda: open("{{ctx.canary}}", "a"))
        _rt_try("the repository", lambda: open("{ROOT}/normgrad/cases/__init__.py", "r+"))
        _rt_try("the venv", lambda: open(_np.__file__, "r+"))
        """), "full"),
    Attack("network", probe("""
        import socket
        _rt_try("tcp to the grader's machine", lambda: socket.create_connection(("127.0.0.1", {ctx.port}), timeout=2))
        _rt_try("tcp outside", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))
        _rt_try("dns", lambda: socket.getaddrinfo("example.com", 80))
        def _rt_unix():
            s = socket.socket(socket.AF_UNIX)
            s.connect("{ctx.unix_socket}")
        _rt_try("unix socket", _rt_unix)
        """), "full"),
    Attack("snoop-processes", probe("""
        import os
        def _rt_others():
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
            text = "".join(open(f"/proc/{{p}}/cmdline", "rb").read().decode(errors="replace") for p in pids
                           if os.path.exists(f"/proc/{{p}}/cmdline"))
            assert "pytest" in text or "autograder" in text or len(pids) > 10
        _rt_try("the grader's processes", _rt_others)
        _rt_try("the grader's environment", lambda: open("/proc/{ctx.grader_pid}/environ", "rb").read(1))
        """), "full"),
    Attack("import-torch-in-a-numpy-exercise", probe("""
        import importlib, sys
        def _rt_torch_grad():
            torch = importlib.import_module("to" + "rch")
            x = torch.ones(3, requires_grad=True)
            torch.autograd.grad((x * x).sum(), x)
        if "torch" not in sys.modules:  # a NumPy exercise: torch must not even import
            _rt_try("import torch by an assembled name", _rt_torch_grad)
        """), "full"),
    Attack("namespaces-mounts-keyrings", probe("""
        import ctypes, os
        _rt_libc = ctypes.CDLL(None, use_errno=True)
        if os.uname().machine == "x86_64":
            _rt_try("a user namespace", lambda: _rt_libc.unshare(0x10000000) == 0 or 1 / 0)
            _rt_try("a network namespace", lambda: _rt_libc.unshare(0x40000000) == 0 or 1 / 0)
            _rt_try("a key in the user keyring", lambda: _rt_libc.syscall(248, b"user", b"rt", b"x", 1, -4) >= 0 or 1 / 0)
        """), "full"),
    Attack("escalate", probe("""
        import os
        _rt_try("setuid 0", lambda: os.setuid(0))
        _rt_try("sysctl", lambda: open("/proc/sys/kernel/hostname", "w").write("x"))
        _rt_try("kernel log", lambda: open("/dev/kmsg").read(1))
        _rt_try("raw disk", lambda: open("/dev/vda", "rb").read(1))
        """), "full"),
    Attack("cache-poison", probe("""
        import os
        for folder in [os.environ.get("HOME"), os.environ.get("TMPDIR"), os.environ.get("TRITON_CACHE_DIR"),
                       os.environ.get("XDG_CACHE_HOME"), "/tmp", "/dev/shm", "/var/tmp", os.getcwd()]:
            try:
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, "rt-poison-{ctx.port}"), "w") as f:
                    f.write("poison")
            except (OSError, TypeError):
                pass
        for name in ("numpy.py", "sitecustomize.py", "wire.py"):
            try:
                with open(name, "w") as f:
                    f.write("raise SystemExit('poisoned')")
            except OSError:
                pass
        _rt_try("site-packages", lambda: open(os.path.join(os.path.dirname(_np.__file__), "rt-poison"), "w"))
        """), "full"),

    # --- ending, killing and hanging
    Attack("sys-exit", with_code(esc(wrapper("import sys\nsys.exit(0)"))), "lose_f", "SystemExit"),
    Attack("os-exit", with_code(esc(wrapper("import os\nos._exit(0)"))),
           "lose_f", "ended the grader's process"),
    Attack("kill-parent", with_code(wrapper("""
        import os, signal
        for target in (os.getppid(), 1, {ctx.grader_pid}):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        return _rt_honest(*args, **kwargs)
        """)), "full"),
    Attack("infinite-loop", with_code(wrapper("while True:\n    pass")), "lose_f", "time limit"),
    Attack("sleep-with-timers-blocked", with_code(wrapper("""
        import signal, time
        signal.signal(signal.SIGPROF, signal.SIG_IGN)
        signal.setitimer(signal.ITIMER_PROF, 0)
        time.sleep(3600)
        """)), "lose_f", "time limit"),
    Attack("memory-bomb", with_code(wrapper("""
        hog = []
        while True:
            hog.append(b"x" * (64 << 20))
        """)), "lose_f", "MemoryError"),
    Attack("fork-bomb", with_code(wrapper("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """)), "lose_f", "was stopped"),
    Attack("disk-filler", probe("""
        import os
        def _rt_fill():
            written = 0
            for i in range(64):
                try:
                    with open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"fill{{i}}"), "wb") as f:
                        for _ in range(128):
                            f.write(b"\\0" * (1 << 20))
                            written += 1 << 20
                except OSError:
                    pass
            assert written > (600 << 20), written   # a bound held: the scratch is far smaller
        _rt_try("filled more than 600 MiB", _rt_fill)
        """), "full"),
    Attack("huge-output", with_code(wrapper("""
        import sys
        sys.stdout.write("x" * (16 << 20))
        sys.stderr.write("y" * (16 << 20))
        return _rt_honest(*args, **kwargs)
        """)), "full"),

    # --- broken or tampered notebooks
    Attack("edited-test-cells", edited(_edit_tests_and_break_f), "lose_f"),
    Attack("deleted-cell", edited(_delete_f), "lose_f", f"no cell defines {F}"),
    Attack("reordered-cells", edited(_reorder), "full"),
    Attack("tampered-metadata", edited(_tamper_metadata), "lose_f"),
    Attack("code-outside-solution-cells", edited(_code_outside_solution_cells), "full"),
    Attack("invalid-json", lambda ctx: b'{"cells": [{"cell_type": "code", "source": "def ', "zero",
           "not valid notebook JSON"),
    Attack("stderr-and-warnings", with_code(wrapper("""
        import sys, warnings
        print("a line on stderr", file=sys.stderr)
        warnings.warn("a warning")
        _np.float64(1.0) / 0.0
        return _rt_honest(*args, **kwargs)
        """)), "full"),
]
assert len(ATTACKS) >= 25 and len({a.name for a in ATTACKS}) == len(ATTACKS)


# --- the batch -----------------------------------------------------------------------------------

SKIP_DIRS = {".git", ".venv", "_build", "__pycache__", ".pytest_cache"}


def snapshot(folder: Path, skip=()) -> dict[str, tuple]:
    """path -> (size, mtime, sha1) of every file under folder, but the skipped names."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and os.path.join(dirpath, d) not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if path in skip or not stat.S_ISREG(st.st_mode):  # links, sockets
                continue
            found[path] = (st.st_size, st.st_mtime_ns, hashlib.sha1(Path(path).read_bytes()).hexdigest())
    return found


def sandbox_leftovers() -> list[str]:
    """Processes of the sandbox users, and files they own in the machine's temporary folders.

    A uid another grader holds is that grader's job at work (`make test` runs two pytest workers), not a
    leftover: each uid is looked at while this test holds its lock, as a grader would, one at a time."""
    left, owned = [], defaultdict(list)
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        for entry in os.scandir(folder):
            with contextlib.suppress(FileNotFoundError):
                owned[entry.stat(follow_symlinks=False).st_uid].append(entry.path)
            if entry.name.startswith("rt-poison"):
                left.append(entry.path)
    root = os.geteuid() == 0  # only root's graders take sandbox uids, each under its lock
    for uid in range(UID_BASE, UID_BASE + UID_COUNT):
        fd = lock_uid(uid) if root else None
        if root and fd is None:
            continue  # a grader's job at work
        try:
            left += [f"process {pid} of uid {uid}" for pid in processes_of(uid)]
            left += [path for path in owned[uid] if os.path.lexists(path)]
        finally:
            if fd is not None:
                os.close(fd)
    return left + [g for g in leftover_groups() if not held_by_live_grader(g)]  # another grader's may be running


def gradebook_rows(db: Path) -> tuple[dict, dict]:
    """(definitions: table -> rows, grades: (student, cell) -> (auto, manual))."""
    con = sqlite3.connect(db)
    try:
        definitions = {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}")))  # noqa: S608 (fixed names)
                       for t in ("assignment", "notebook", "grade_cells", "solution_cells", "source_cell", "base_cell")}
        grades = {(student, cell): (auto, manual) for student, cell, auto, manual in con.execute(
            "SELECT sa.student_id, gc.name, g.auto_score, g.manual_score FROM grade g "
            "JOIN submitted_notebook sn ON g.notebook_id = sn.id "
            "JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
            "JOIN base_cell gc ON g.cell_id = gc.id")}
    finally:
        con.close()
    return definitions, grades


def run_grader(submitted: Path, out: Path, ctx: Ctx, *extra, python: str = sys.executable,
               env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [python, "-m", "autograder", "grade", str(submitted), "--out", str(out), "--jobs", "2",
           "--private", str(ctx.private), "--memory-mb", str(MEMORY_MB), *extra]
    return subprocess.run(cmd, cwd=ctx.base, capture_output=True, text=True, timeout=900, env=env)


def write_submission(built, submitted: Path, student: str) -> Path:
    if isinstance(built, bytes):
        path = write(solved(ASSIGNMENT), submitted, student, ASSIGNMENT)
        path.write_bytes(built)
        return path
    return write(built, submitted, student, ASSIGNMENT)


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """The grader's surroundings: a course with a gradebook holding an earlier student, canaries,
    a private cases file, and sockets listening on the grader's machine."""
    base = tmp_path_factory.mktemp("redteam")
    course = base / "course"
    db_url = nbgrader_course(course, [ASSIGNMENT])
    db = course / "gradebook.db"
    # An earlier student's grades, which no submission may change.
    from nbgrader.api import Gradebook
    with Gradebook(db_url) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nbgrader's own SQLAlchemy warnings
        gb.update_or_create_student("zz-canary-student")
        gb.update_or_create_submission(ASSIGNMENT, "zz-canary-student")
        for i, grade in enumerate(gb.find_submission_notebook(notebooks(ASSIGNMENT).source.stem, ASSIGNMENT,
                                                              "zz-canary-student").grades):
            grade.auto_score = 1.0 + i
        gb.db.commit()
    canaries = base / "canaries"
    canaries.mkdir(mode=0o777)
    os.chmod(canaries, 0o777)
    canary = canaries / "instructor-notes.txt"
    canary.write_text("canary: exam answers")
    os.chmod(canary, 0o666)
    private = base / "private" / "extra_cases.py"
    private.parent.mkdir()
    private.write_text(textwrap.dedent(f"""
        import dataclasses
        from normgrad.cases import load
        SECRET = "the private cases' canary"
        CASES = {{"{ASSIGNMENT}": [dataclasses.replace(c, name="private-" + c.name)
                                   for c in load("{ASSIGNMENT}").cases if c.hidden][:2]}}
        """))
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    unix_path = base / "grader.sock"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(unix_path))
    unix.listen(8)
    unix.setblocking(False)
    submitted = base / "submitted"
    ctx = Ctx(base, db, submitted / "aaa-control" / ASSIGNMENT / notebooks(ASSIGNMENT).name, private, canary,
              server.getsockname()[1], unix_path, os.getpid())
    yield ctx, course, db_url, server, unix
    server.close()
    unix.close()


@pytest.fixture(scope="module")
def world(setting):
    box = Sandbox()
    if box.mode != "bwrap":
        pytest.skip(f"the attacks are aimed at the bubblewrap sandbox, and {box.reason}")
    ctx, course, db_url, server, unix = setting
    base, db, private, submitted = ctx.base, ctx.gradebook, ctx.private, ctx.base / "submitted"
    write(solved(ASSIGNMENT), submitted, "aaa-control", ASSIGNMENT)
    write(solved(ASSIGNMENT), submitted, "zzz-control", ASSIGNMENT)
    for attack in ATTACKS:
        write_submission(attack.build(ctx), submitted, attack.name)

    # A later batch: does anything the first one wrote reach a fresh submission?
    later = base / "submitted-later"
    write(solved(ASSIGNMENT), later, "control-later", ASSIGNMENT)
    checker = with_code(D(f"""
        import os
        _rt_poison = [p for p in [os.path.join(d, "rt-poison-{{ctx.port}}") for d in
                      (os.environ.get("HOME"), os.environ.get("TMPDIR"), os.environ.get("TRITON_CACHE_DIR"),
                       os.environ.get("XDG_CACHE_HOME"), "/tmp", "/dev/shm", "/var/tmp", os.getcwd())
                      if d] + ["numpy.py", "sitecustomize.py", "wire.py"] if os.path.exists(p)]
        if _rt_poison:
            _rt_leaks.append("poison found: " + ", ".join(_rt_poison))
        """) + esc(HONEST_UNLESS_LEAKED))
    write(checker(ctx), later, "poison-checker", ASSIGNMENT)
    before_repo = snapshot(ROOT)
    out = base / "out"
    before_base = snapshot(base, skip={str(out), str(course / "autograded"), str(db)})
    before_db = gradebook_rows(db)
    done = run_grader(submitted, out, ctx, "--gradebook", db_url, "--autograded", str(course / "autograded"))
    assert done.returncode == 0, done.stdout + done.stderr

    out_later = base / "out-later"
    done_later = run_grader(later, out_later, ctx)
    assert done_later.returncode == 0, done_later.stdout + done_later.stderr

    try:
        connection = server.accept()
    except BlockingIOError:
        connection = None
    try:
        unix_connection = unix.accept()
    except BlockingIOError:
        unix_connection = None
    with open(out / "grades.csv") as f:
        grades = {r["student"]: r for r in csv.DictReader(f)}
    with open(out_later / "grades.csv") as f:
        grades.update({r["student"]: r for r in csv.DictReader(f)})
    return {
        "ctx": ctx, "out": out, "grades": grades, "stdout": done.stdout, "stderr": done.stderr,
        "repo_changed": _diff(before_repo, snapshot(ROOT)),
        "base_changed": _diff(before_base, snapshot(base, skip={str(out), str(out_later), str(course / "autograded"),
                                                                 str(db)})),
        "db_before": before_db, "db_after": gradebook_rows(db), "leftovers": sandbox_leftovers(),
        "connections": [c for c in (connection, unix_connection) if c is not None],
        "assignment": with_private(load(ASSIGNMENT), str(private)),
    }


def _diff(before: dict, after: dict) -> list[str]:
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def expected_score(world, expect: str) -> float:
    assignment = world["assignment"]
    return {"full": assignment.max_score, "lose_f": assignment.max_score - assignment.points_of(F),
            "zero": 0.0}[expect]


def feedback(world, student: str) -> str:
    return (world["out"] / "feedback" / student / ASSIGNMENT / f"{notebooks(ASSIGNMENT).source.stem}.txt").read_text()


def function_scores_from_results(path: Path) -> dict[str, float]:
    tests = json.loads(path.read_text())["tests"]
    scores: dict[str, float] = {}
    for t in tests:
        function = t["name"].split("/")[0]
        scores[function] = scores.get(function, 0.0) + t["score"]
    return scores


def assert_world_intact(world):
    """The controls' full marks, the gradebook, processes, and files outside the jobs' scratch."""
    full = world["assignment"].max_score
    for control in ("aaa-control", "zzz-control", "control-later"):
        assert float(world["grades"][control]["score"]) == full, world["grades"][control]
    assert world["repo_changed"] == [], "the repository changed"
    assert world["base_changed"] == [], "files outside the grader's outputs changed"
    assert world["leftovers"] == [], "a sandbox user left processes or files"
    assert world["connections"] == [], "a submission reached a socket of the grader's machine"
    definitions_before, grades_before = world["db_before"]
    definitions_after, grades_after = world["db_after"]
    assert definitions_after == definitions_before, "the gradebook's assignment definitions changed"
    canary = {k: v for k, v in grades_before.items() if k[0] == "zz-canary-student"}
    assert canary and all(grades_after[k] == v for k, v in canary.items()), "another student's grades changed"
    for (student, cell), (auto, manual) in grades_after.items():
        if student == "zz-canary-student":
            continue
        results = world["out"] / "feedback" / student / ASSIGNMENT / "results.json"
        own = function_scores_from_results(results)
        function = cell[len("test_"):]
        # the notebook's cell has the course's points; private cases scale what a function earned to them
        possible, top = world["assignment"].points_of(function), load(ASSIGNMENT).points_of(function)
        assert auto == pytest.approx(own[function] * top / possible), (student, cell)
        assert manual is None


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack(world, attack):
    row = world["grades"][attack.name]
    text = feedback(world, attack.name)
    assert float(row["score"]) == pytest.approx(expected_score(world, attack.expect)), text
    assert float(row["max_score"]) == world["assignment"].max_score
    if attack.says:
        assert attack.says in text, text
    assert "LEAKED" not in text
    assert_world_intact(world)


def test_poison_does_not_reach_a_later_submission(world):
    row = world["grades"]["poison-checker"]
    assert float(row["score"]) == world["assignment"].max_score, row
    assert_world_intact(world)


def test_private_cases_ran_and_stayed_private(world):
    text = feedback(world, "aaa-control")
    assert "private-" in text
    assert "the private cases' canary" not in text


def test_the_batch_says_how_it_was_sandboxed(world):
    assert "sandbox: bubblewrap" in world["stderr"]
    assert f"{len(ATTACKS) + 2}/{len(ATTACKS) + 2} graded" in world["stderr"]  # the progress bar's last line


# --- the fallback without bubblewrap -----------------------------------------------------------------

FALLBACK_ATTACKS = ["os-exit", "write-gradebook", "write-other-students-and-repo", "kill-parent", "fork-bomb",
                    "namespaces-mounts-keyrings", "network"]
# Contained in the fallback only where Landlock confines what a job may open: without it, each of these
# reads what it must not, or leaves files in the machine's temporary folders (cache-poison)
LANDLOCK_ATTACKS = ["read-solutions-and-hidden-tests", "read-gradebook-and-other-submissions",
                    "read-instructor-files", "snoop-processes", "cache-poison"]


@pytest.fixture(scope="module")
def fallback(setting, tmp_path_factory):
    base = tmp_path_factory.mktemp("fallback")
    submitted = base / "submitted"
    write(solved(ASSIGNMENT), submitted, "aaa-control", ASSIGNMENT)
    by_name = {a.name: a for a in ATTACKS}
    ctx = dataclasses.replace(setting[0], control=submitted / "aaa-control" / ASSIGNMENT / notebooks(ASSIGNMENT).name)
    with contextlib.ExitStack() as stack:
        try:  # in CI's clone (a folder of mode 0700), on this venv's files where the sandbox user can read them
            box, python, pythonpath = stack.enter_context(fallback_sandbox())
        except SandboxError:
            box, python, pythonpath = None, None, None
        refused = None
        if box is None or pythonpath is not None:  # the sandbox user cannot run the grader's own Python
            refused = run_grader(submitted, base / "refused", ctx, "--sandbox", "fallback")
        if box is None:
            return None, None, None, None, [], refused
        env = None if pythonpath is None else {**os.environ, "PYTHONPATH": pythonpath}
        attacks = FALLBACK_ATTACKS + (LANDLOCK_ATTACKS if box.landlock else [])
        for name in attacks:
            write_submission(by_name[name].build(ctx), submitted, name)
        before = gradebook_rows(ctx.gradebook)
        done = run_grader(submitted, base / "out", ctx, "--sandbox", "fallback", python=python, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        with open(base / "out" / "grades.csv") as f:
            grades = {r["student"]: r for r in csv.DictReader(f)}
        return done, grades, before == gradebook_rows(ctx.gradebook), sandbox_leftovers(), attacks, refused


def test_the_fallback_says_so_and_still_contains_the_attacks(setting, fallback):
    done, grades, gradebook_unchanged, leftovers, attacks, refused = fallback
    if refused is not None:  # no interpreter the sandbox user can run: the grader must refuse, and say why
        assert refused.returncode != 0 and "install bubblewrap" in refused.stderr, refused.stderr
    if done is None:
        pytest.skip("no Python the sandbox user can read, even with this one's site-packages linked for it")
    assert "FALLBACK without bubblewrap" in done.stderr and "WARNING" in done.stderr
    assert "a seccomp filter (no new namespaces" in done.stderr
    assert ("Landlock ABI" in done.stderr) == (attacks != FALLBACK_ATTACKS)
    scores = {"assignment": with_private(load(ASSIGNMENT), str(setting[0].private))}
    assert float(grades["aaa-control"]["score"]) == expected_score(scores, "full")
    by_name = {a.name: a for a in ATTACKS}
    for name in attacks:
        assert float(grades[name]["score"]) == expected_score(scores, by_name[name].expect), (name, grades[name])
    assert gradebook_unchanged and leftovers == []


# --- answers done by the library, in an exercise answered with torch ------------------------------------

LIBRARY = "04-code-mapping"
LIBRARY_F = "layernorm_backward"
# The gradients by autograd, from the graph of torch's own layer norm (eps recovered from the given rstd).
AUTOGRAD_PRELUDE = '''
import gc, torch
_rt_grad_at_cell_level = torch.autograd.grad
def _rt_graph(dy, x, gamma, mean, rstd):
    eps = float((1 / rstd.double() ** 2 - x.double().var(1, unbiased=False)).median())
    leaves = [t.detach().double().requires_grad_(True) for t in (x, gamma, torch.zeros_like(gamma))]
    with torch.enable_grad():
        y = torch.nn.functional.layer_norm(leaves[0], [x.shape[1]], leaves[1], leaves[2], max(eps, 0.0))
    return y, leaves, dy.double()
def _rt_is_grad(o):
    try:
        return getattr(o, "__name__", "") == "grad" and getattr(o, "__module__", "") == "torch.autograd"
    except Exception:
        return False
def _rt_cast(grads, x, gamma):
    return grads[0].to(x.dtype), grads[1].to(gamma.dtype), grads[2].to(gamma.dtype)
def _rt_elementary_graph(dy, x, gamma, rstd):  # layer norm from ops whose derivatives call no backward operator
    eps = max(float((1 / rstd.double() ** 2 - x.double().var(1, unbiased=False)).median()), 0.0)
    leaves = [t.detach().double().requires_grad_(True) for t in (x, gamma, torch.zeros_like(gamma))]
    with torch.enable_grad():
        mu = leaves[0].mean(1, keepdim=True)
        var = ((leaves[0] - mu) ** 2).mean(1, keepdim=True)
        y = (leaves[0] - mu) / torch.sqrt(var + eps) * leaves[1] + leaves[2]
    return y, leaves, dy.double()
def _rt_first_run(engines, y, leaves, d):  # the first engine that runs the backward pass
    refused = RuntimeError("no engine found")
    for engine in engines:
        try:
            return engine.run_backward((y,), (d,), True, False, tuple(leaves), True, False)
        except Exception as e:
            refused = e
    raise refused
def _rt_walk(y, leaves, d):  # reverse mode by hand: each node of the graph called on its gradient
    order, seen = [], set()
    def visit(fn):
        if fn is not None and fn not in seen:
            seen.add(fn)
            for after, _ in fn.next_functions:
                visit(after)
            order.append(fn)
    visit(y.grad_fn)
    grads, found = {y.grad_fn: d}, {}
    for fn in reversed(order):
        g = grads.pop(fn)
        if type(fn).__name__ == "AccumulateGrad":
            found[id(fn.variable)] = g
            continue
        outs = fn(g)
        for (after, _), o in zip(fn.next_functions, outs if isinstance(outs, tuple) else (outs,)):
            if after is not None and o is not None:
                o = o.sum_to_size(list(after._input_metadata[0].shape))  # as the engine checks each gradient
                grads[after] = grads[after] + o if after in grads else o
    return tuple(found[id(leaf)] for leaf in leaves)
def _rt_xhat(z, eps):
    mu = z.mean(dim=1, keepdim=True)
    return (z - mu) * torch.rsqrt(((z - mu) ** 2).mean(dim=1, keepdim=True) + eps)
def _rt_rest(dx, dy, x, gamma, mean, rstd):  # dgamma and dbeta are plain sums: only dx needs a derivative
    xhat = (x.double() - mean.double()[:, None]) * rstd.double()[:, None]
    return dx.to(x.dtype), (dy.double() * xhat).sum(0).to(gamma.dtype), dy.double().sum(0).to(gamma.dtype)
'''
LIBRARY_CHEATS = {
    "assembled-aten-op": '''
        ops = getattr(torch.ops, "at" + "en")
        backward = getattr(ops, "native_layer_norm_" + "backward")
        grads = backward(dy, x, [x.shape[1]], mean[:, None].to(x.dtype), rstd[:, None].to(x.dtype), gamma,
                         torch.zeros_like(gamma), [True, True, True])
        return grads[0], grads[1].to(gamma.dtype), grads[2].to(gamma.dtype)''',
    "grad-captured-at-cell-level": '''
        y, leaves, d = _rt_graph(dy, x, gamma, mean, rstd)
        return _rt_cast(_rt_grad_at_cell_level(y, leaves, d), x, gamma)''',
    "grad-fn-called": '''
        y, leaves, d = _rt_graph(dy, x, gamma, mean, rstd)
        return _rt_cast(y.grad_fn(d), x, gamma)''',
    "grad-found-through-gc": '''
        y, leaves, d = _rt_graph(dy, x, gamma, mean, rstd)
        refused = RuntimeError("no grad found")
        for fn in [o for o in gc.get_objects() if _rt_is_grad(o)]:
            try:
                got = fn(y, leaves, d)
            except Exception as e:
                refused = e
                continue
            if isinstance(got, tuple) and len(got) == 3:
                return _rt_cast(got, x, gamma)
        raise refused''',
    "engine-called-directly": '''
        y, leaves, d = _rt_graph(dy, x, gamma, mean, rstd)
        engine = torch.autograd.Variable._execution_engine
        return _rt_cast(engine.run_backward((y,), (d,), False, False, tuple(leaves), True, False), x, gamma)''',
    # Forward mode: d x_hat/dx of a row is symmetric, so the JVP with tangent dy * gamma is dx (a reviewer's
    # submission that earned layernorm_backward's full marks before the seal covered forward mode).
    "forward-mode-ad": '''
        import torch.autograd.forward_ad as fad
        _rt_eps = float((1 / rstd.double() ** 2 - x.double().var(1, unbiased=False)).median())
        with fad.dual_level():
            xd = fad.make_dual(x.double(), dy.double() * gamma.double())
            dx = fad.unpack_dual(_rt_xhat(xd, max(_rt_eps, 0.0))).tangent
        return _rt_rest(dx, dy, x, gamma, mean, rstd)''',
    "torch-func-jvp": '''
        _rt_eps = float((1 / rstd.double() ** 2 - x.double().var(1, unbiased=False)).median())
        dx = torch.func.jvp(lambda z: _rt_xhat(z, max(_rt_eps, 0.0)), (x.double(),), (dy.double() * gamma.double(),))[1]
        return _rt_rest(dx, dy, x, gamma, mean, rstd)''',
    "dual-tensor-by-operator": '''
        _rt_eps = float((1 / rstd.double() ** 2 - x.double().var(1, unbiased=False)).median())
        # a level from the builtin however found (gc finds the one the seal set aside), then the operator itself
        enters = [torch._C._enter_dual_level] + [o for o in gc.get_objects()
                                                 if type(o).__name__ == "builtin_function_or_method"
                                                 and o.__name__ == "_enter_dual_level"]
        level, refused = None, RuntimeError("no level")
        for enter in enters:
            try:
                level = enter()
                break
            except Exception as e:
                refused = e
        if level is None:
            raise refused
        xd = getattr(torch.ops.aten, "_make_" + "dual")(x.double(), dy.double() * gamma.double(), level)
        dx = torch._unpack_dual(_rt_xhat(xd, max(_rt_eps, 0.0)), level)[1]
        torch._C._exit_dual_level(level=level)
        return _rt_rest(dx, dy, x, gamma, mean, rstd)''',
    # The engine reached around its lock (a reviewer's full marks before the seal covered the engine's type): a
    # layer norm built from mean, sub, sqrt, div and mul, whose derivatives call no backward operator, then
    # run_backward on the handle's bound method's __self__, on the sandbox's own `calling._ENGINE`, on anything gc
    # finds with a run_backward (or a new engine of its type); or the graph's nodes called one by one, by hand.
    "engine-behind-the-lock": '''
        y, leaves, d = _rt_elementary_graph(dy, x, gamma, rstd)
        handle = torch.autograd.Variable._execution_engine
        engines = [getattr(getattr(handle, "_queue_callback", None), "__self__", None), handle,
                   torch._C._ImperativeEngine()]
        return _rt_cast(_rt_first_run([e for e in engines if e is not None], y, leaves, d), x, gamma)''',
    "engine-from-the-sandbox-module": '''
        import calling
        y, leaves, d = _rt_elementary_graph(dy, x, gamma, rstd)
        engines = list(getattr(calling, "_ENGINE", [])) + [v for v in vars(calling).values()
                                                           if hasattr(type(v), "run_backward")]
        return _rt_cast(_rt_first_run(engines + [torch.autograd.Variable._execution_engine], y, leaves, d), x, gamma)''',
    "engine-found-through-gc": '''
        y, leaves, d = _rt_elementary_graph(dy, x, gamma, rstd)
        found = gc.get_objects()
        engines = [o for o in found if hasattr(type(o), "run_backward")]
        engines += [o.__self__ for o in found if type(o).__name__ in ("method", "builtin_function_or_method")
                    and hasattr(type(getattr(o, "__self__", None)), "run_backward")]
        engines += [torch._C._ImperativeEngine(), torch.autograd.Variable._execution_engine]  # a new one, the handle
        return _rt_cast(_rt_first_run(engines, y, leaves, d), x, gamma)''',
    "graph-nodes-called-by-hand": '''
        y, leaves, d = _rt_elementary_graph(dy, x, gamma, rstd)
        return _rt_cast(_rt_walk(y, leaves, d), x, gamma)''',
    # torch's own backward kernel at a dispatch key other than CPU's: the rows as a nested tensor run
    # native_layer_norm_backward's NestedTensorCPU kernel (a reviewer's full marks when only CPU and CUDA were refused)
    "backward-kernel-at-the-nested-tensor-key": '''
        op = getattr(torch.ops.aten, "native_layer_norm_" + "backward")
        X, G, g = x.double().contiguous(), dy.double().contiguous(), gamma.double()
        nx, ng = (torch.nested.nested_tensor(list(t.unbind(0))) for t in (X, G))
        grads = op(ng, nx, [x.shape[1]], mean.double()[:, None], rstd.double()[:, None], g, g, [True, True, True])
        return _rt_cast((torch.stack(grads[0].unbind(0)), grads[1], grads[2]), x, gamma)''',
    # PyTorch's own Python formula for the backward, handed out by torch.export's decomposition table (a reviewer's
    # full marks before the seal rewrote the decompositions of backward operators); or forward mode's own ones
    "decomposition-from-the-export-table": '''
        import torch.export
        found = [fn for op, fn in torch.export.default_decompositions().items()
                 if "native_layer_norm_" + "backward.default" in str(op)]
        try:
            import torch._decomp.decompositions_for_jvp as jvp
            found.append(getattr(jvp, "native_layer_norm_" + "backward"))
        except Exception:
            pass
        refused = RuntimeError("no decomposition found")
        for fn in found:
            try:
                grads = fn(dy.double(), x.double(), [x.shape[1]], mean.double()[:, None], rstd.double()[:, None],
                           gamma.double(), gamma.double(), [True, True, True])
            except Exception as e:
                refused = e
                continue
            return _rt_cast(grads, x, gamma)
        raise refused''',
    # Another Python, started from the answer, imports a PyTorch the seal never locked (a reviewer's full marks
    # before a CPU job's exec was refused): the tensors go to it on stdin and the gradients come back on stdout
    "autograd-in-a-child-python": '''
        import io, os, subprocess, sys
        child = ("import io, sys, torch\\n"
                 "dy, x, g, mean, rstd = torch.load(io.BytesIO(sys.stdin.buffer.read()))\\n"
                 "eps = float((1 / rstd.double() ** 2 - x.double().var(1, unbiased=False)).median())\\n"
                 "X, G = x.double().requires_grad_(), g.double().requires_grad_()\\n"
                 "B = torch.zeros_like(G, requires_grad=True)\\n"
                 "torch.nn.functional.layer_norm(X, [x.shape[1]], G, B, max(eps, 0.0)).backward(dy.double())\\n"
                 "torch.save((X.grad, G.grad, B.grad), sys.stdout.buffer)\\n")
        sent = io.BytesIO()
        torch.save(tuple(t.detach() for t in (dy, x, gamma, mean, rstd)), sent)
        done = subprocess.run([sys.executable, "-c", child], input=sent.getvalue(), capture_output=True,
                              check=True, env={"PYTHONPATH": os.pathsep.join(sys.path), "HOME": "/tmp"})
        return _rt_cast(torch.load(io.BytesIO(done.stdout)), x, gamma)''',
}
# What the feedback says where autograd's lock is not what stopped the cheat
LIBRARY_REFUSALS = {"autograd-in-a-child-python": "Operation not permitted"}
LIBRARY_CONTROLS = {
    "honest": "",
    "honest-through-torch-compile": f'''
_rt_by_hand = {LIBRARY_F}
_rt_compiled = torch.compile(_rt_by_hand, backend="eager")
def {LIBRARY_F}(dy, x, gamma, mean, rstd):
    return _rt_compiled(dy, x, gamma, mean, rstd)
''',
}


@pytest.fixture(scope="module")
def library_batch(tmp_path_factory):
    if Sandbox().mode != "bwrap":
        pytest.skip("the attacks are aimed at the bubblewrap sandbox")
    base = tmp_path_factory.mktemp("library")
    submitted = base / "submitted"
    sources = {**LIBRARY_CONTROLS, **{name: f"def {LIBRARY_F}(dy, x, gamma, mean, rstd):\n" +
                                      textwrap.indent(textwrap.dedent(body).strip(), "    ")
                                      for name, body in LIBRARY_CHEATS.items()}}
    for name, code in sources.items():
        nb = solved(LIBRARY)
        cell = next(c for c in nb.cells if c.cell_type == "code" and LIBRARY_F in defined_names(c.source))
        cell.source += "\n" + AUTOGRAD_PRELUDE + "\n" + code + "\n"
        write(nb, submitted, name, LIBRARY)
    done = subprocess.run([sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(base / "out"),
                           "--jobs", "2"], cwd=base, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    with open(base / "out" / "grades.csv") as f:
        return {r["student"]: float(r["score"]) for r in csv.DictReader(f)}, base / "out"


@pytest.mark.parametrize("name", list(LIBRARY_CONTROLS))
def test_honest_answers_keep_full_marks_under_the_autograd_lock(library_batch, name):
    assert library_batch[0][name] == load(LIBRARY).max_score


@pytest.mark.parametrize("name", list(LIBRARY_CHEATS))
def test_backward_done_by_the_library_earns_nothing(library_batch, name):
    assignment = load(LIBRARY)
    assert library_batch[0][name] == assignment.max_score - assignment.points_of(LIBRARY_F)
    text = (library_batch[1] / "feedback" / name / LIBRARY / f"{notebooks(LIBRARY).source.stem}.txt").read_text()
    assert LIBRARY_REFUSALS.get(name, "autograd is switched off") in text
