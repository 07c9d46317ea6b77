"""Running the student's code in a separate, locked-down process.

Under bubblewrap (the default where it works) the process gets:

- its own user: the grader drops to a sandbox uid of its own for each job slot
  (64000 and up, by default) when it runs as root, so process limits and
  signals reach no one else; run as another user, a user namespace instead;
- its own pid, network (nothing but a loopback), IPC and UTS namespaces, and
  death with the grader (`--die-with-parent`);
- a file system of its own: read-only /usr, the Python interpreter and the
  folders of sys.path that hold numpy, torch and triton (never the
  repository: no solutions, no hidden tests, no normgrad with its cases), the
  files of the package `autograder.inside` (the program, its protocol, the
  wire, the calling protocol: the whole of the course that crosses the wall),
  and a small tmpfs for /tmp (its HOME, TMPDIR and every cache) that vanishes
  with the job; nothing of the grader's, the gradebook's, the instructor's or
  other submissions'; in a NumPy exercise, not even torch;
- a seccomp filter: no new namespaces, no mounts, no kernel keyrings, no
  sockets but unix ones (seccomp.py), and its uid's keyrings cleared after
  each job; in a CPU job, from the first cell on, no exec either (a Python
  started from the answer would import a PyTorch the seal never locked);
- no shared folder at all: the job's inputs come in on a file descriptor and
  the results go out on a pipe, as frames (wire.py);
- limits on CPU time, memory, processes, file size and open files (rlimits),
  and where the machine allows, a control group bounding the job's memory and
  processes as a whole (cgroup.py);
- a clean environment, and with a GPU, the GPU's device nodes and driver.

Without bubblewrap (or where it cannot run), the fallback is a process run as
the sandbox user with the same limits and seccomp filter and, where the kernel
has Landlock, rules that let it read only what bubblewrap would mount and write
only its own folder (and, from Landlock ABI 6, reach no process or abstract
unix socket outside the job; from ABI 9, no unix socket in the file system
outside its folder either). Before ABI 9 it can still connect to the unix
sockets in the file system that user may write, and without Landlock (or in a
GPU job) read whatever that user may read; the report says which one ran.

The grader watches each cell and call: the sandbox's own timers stop a call
after its CPU budget, and the grader stops a process whose current cell or
call has run past `wall_factor` times its budget plus `wall_grace`, counting
only time the process was running or sleeping, not time it waited for a CPU
(/proc/PID/schedstat), so that a busy machine does not turn a neighbour's
slowness into a failed test.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
import pwd
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import cgroup, launch, seccomp
from .cgroup import JobGroup
from .inside import confine, protocol, wire

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# What the sandboxed process runs: the files of one package, and nothing else of the course.
INSIDE = HERE / "inside"
LAUNCHER = HERE / "launch.py"
INSIDE_DIR = "/sandbox/inside"
UID_BASE = int(os.environ.get("AUTOGRADER_UID_BASE", "64000"))  # sandbox users: UID_BASE, UID_BASE + 1, ...
UID_COUNT = 512
# One fixed place, owned by root, for the locks on sandbox uids: every grader on the machine sees the
# same ones, whatever its TMPDIR.
UID_LOCKS = Path("/run/autograder-uids")
# A job's private folder: the grader's pid in its name, so that a later grader knows a dead one's leftovers.
PRIVATE_PREFIX = "autograder-"


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int = 900  # per process (RLIMIT_CPU); the calls' own budgets are far smaller
    memory_bytes: int = 4 << 30  # per process address space (CPU-only jobs), and the job's memory cgroup
    processes: int = 64  # processes and threads of the sandbox user (RLIMIT_NPROC), and of the job's pids cgroup
    file_bytes: int = 64 << 20  # the largest file it may write (RLIMIT_FSIZE)
    scratch_bytes: int = 256 << 20  # its writable /tmp (a tmpfs, under bubblewrap)
    open_files: int = 256
    output_bytes: int = 64 << 10  # of stdout and stderr kept for the report
    result_bytes: int = 256 << 20  # of results read back, beside room for the inputs' round trip (run_job)
    startup_seconds: float = 30.0  # to start Python and import numpy / torch
    wall_factor: float = 1.5  # a cell or call may run wall_factor x its CPU budget + wall_grace
    wall_grace: float = 5.0
    notebook_seconds: float | None = None  # one notebook's grading, all its runs together (Gradescope's timeout)
    deadline: float | None = None  # the time.monotonic() by which the job must end: grading.grade's, from the above


# Why a process was stopped when the job's deadline came, and what is said of each test it left
OUT_OF_TIME = "was still running when the time for grading the whole notebook ran out"
NOT_REACHED = "not run: the time for grading the whole notebook ran out before this test"


@dataclass
class Outcome:
    files: dict[str, bytes]  # the frames that came back, by name
    returncode: int | None
    stopped: str | None  # why the grader stopped the process, when it did
    culprit: str | None  # the cell or call that was running when the process ended early or was stopped
    seconds: float
    stdout: str
    stderr: str
    stream_error: str | None  # the results stream broke its rules (wire.FrameReader)
    isolation: str
    abandoned: str | None = None  # why the grader stopped reading before the streams ended, when it did


class SandboxError(RuntimeError):
    """The sandbox asked for cannot run on this machine."""


# --- what the sandbox sees --------------------------------------------------------------------

def _inside(path: str, folder) -> bool:
    folder = str(folder).rstrip("/") or "/"
    return path == folder or path.startswith(folder + "/") or folder == "/"


def python_paths() -> list[str]:
    """The folders of sys.path the sandbox needs: the interpreter's own (stdlib) and its site-packages.

    Never the current directory (the instructor's course folder, perhaps), never a folder of the
    repository's (tests/, scripts/, the root: normgrad with its cases), never one holding normgrad.
    """
    prefixes = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)]
    venv = os.path.realpath(sys.prefix)
    found = []
    for entry in sys.path:
        if not entry:
            continue  # the current directory
        path = os.path.realpath(entry)
        if not os.path.isdir(path) or path in found:
            continue
        if not (any(_inside(path, p) for p in prefixes) or os.path.basename(path) in ("site-packages", "dist-packages")):
            continue  # a script's folder, PYTHONPATH's extras, the current directory under `python -m`
        if _inside(path, ROOT) and not _inside(path, venv):
            continue
        if any(os.path.exists(os.path.join(path, name)) for name in ("normgrad", "autograder", "solutions")):
            continue
        found.append(path)
    return found


def _mount_plan() -> tuple[list[tuple[str, str]], list[str]]:
    """Read-only mounts (host folder, where it appears inside) for the interpreter and sys.path, and
    sys.path as the sandbox sees it. Folders inside the repository (a venv in it) appear under /sandbox/lib*,
    so that not even the repository's path exists inside; so do folders under /tmp, which the sandbox's
    own tmpfs covers."""
    system = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc")
    mounts: list[tuple[str, str]] = []
    for path in [os.path.realpath(sys.base_prefix), *python_paths()]:
        if any(_inside(path, s) for s in system) or any(_inside(path, host) for host, _ in mounts):
            continue
        # inside the repository, or under /tmp (where the sandbox's own tmpfs would hide it): moved
        mounts.append((path, f"/sandbox/lib{len(mounts)}" if _inside(path, ROOT) or _inside(path, "/tmp") else path))
    inside = []
    for path in python_paths():
        for host, there in mounts:
            if _inside(path, host):
                path = there + path[len(host):]
                break
        inside.append(path)
    return mounts, inside


def _gpu_args() -> tuple[list[str], dict[str, str]]:
    """bwrap arguments and environment that let CUDA run inside: device nodes, /sys, the driver's libraries."""
    args: list[str] = []
    for dev in sorted(Path("/dev").glob("nvidia*")):
        args += ["--dev-bind", str(dev), str(dev)]
    if Path("/sys").is_dir():
        args += ["--ro-bind", "/sys", "/sys"]
    env: dict[str, str] = {}
    lib_dirs = []
    for entry in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if entry and os.path.isdir(entry):
            lib_dirs.append(os.path.realpath(entry))
    libcuda = _loaded_library("libcuda.so")
    if libcuda:
        lib_dirs.append(os.path.dirname(libcuda))
        env["TRITON_LIBCUDA_PATH"] = os.path.dirname(libcuda)
    for d in dict.fromkeys(lib_dirs):
        if not any(_inside(d, s) for s in ("/usr", "/lib", "/lib64")):
            args += ["--ro-bind", d, d]
    if lib_dirs:
        env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(lib_dirs))
    return args, env


def _loaded_library(stem: str) -> str | None:
    """The path of a shared library this process has loaded (torch loads libcuda when it finds a GPU)."""
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1]
            if os.path.basename(path).startswith(stem):
                return path
    except OSError:
        pass
    return None


SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")
# What the fallback may open besides: the devices bubblewrap's --dev gives, and what torch reads of the CPU
FALLBACK_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
FALLBACK_READS = ("/proc/self", "/proc/cpuinfo", "/sys/devices/system/cpu", "/sys/devices/system/node")


def _system_args() -> list[str]:
    args = []
    for folder in SYSTEM_FOLDERS:
        path = Path(folder)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for etc in SYSTEM_FILES:
        if os.path.exists(etc):
            args += ["--ro-bind", etc, etc]
    return args


def fallback_rules(python: str, paths: list[str], own: list[str]) -> dict[str, list[str]]:
    """The Landlock rules of a fallback job: read what bubblewrap would mount (the system's libraries, the
    interpreter's prefix, sys.path), the CPU's description and its own /proc; write only `own` (its folders)
    and the harmless devices."""
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    return {"read": [*SYSTEM_FOLDERS, *SYSTEM_FILES, prefix, *paths, *FALLBACK_READS],
            "write": [*own, *FALLBACK_DEVICES]}


def _dirs_for(paths: list[str]) -> list[str]:
    """`--dir` (mode 0755) for each ancestor of the bind points, so the sandbox user can reach them."""
    args, made = [], set()
    for path in paths:
        parts = Path(path).parts[1:-1]
        for i in range(1, len(parts) + 1):
            d = "/" + "/".join(parts[:i])
            if d not in made and d not in ("/usr", "/tmp"):
                made.add(d)
                args += ["--perms", "0755", "--dir", d]
    return args


# --- users and slots ----------------------------------------------------------------------------

_slot_lock = threading.Lock()


def _uid_locks() -> Path:
    """UID_LOCKS, made if missing, refused unless it is root's own folder (not a link, no one else may write)."""
    with contextlib.suppress(FileExistsError):
        UID_LOCKS.mkdir(mode=0o700)
    st = os.lstat(UID_LOCKS)
    if not (os.path.isdir(UID_LOCKS) and not os.path.islink(UID_LOCKS) and st.st_uid == 0 and not st.st_mode & 0o022):
        raise SandboxError(f"{UID_LOCKS} must be a folder of root's that no one else may write")
    return UID_LOCKS


def lock_uid(uid: int) -> int | None:
    """Take the lock on sandbox uid `uid` (held until the returned descriptor is closed); None where a job,
    of this grader or another on the machine, holds it."""
    fd = os.open(_uid_locks() / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def sandbox_user():
    """A sandbox uid no other job (of this grader or another on the machine) is using: held while the job runs."""
    with _slot_lock:
        for uid in range(UID_BASE, UID_BASE + UID_COUNT):
            try:
                pwd.getpwuid(uid)
                continue  # a real account: not ours to use
            except KeyError:
                pass
            fd = lock_uid(uid)
            if fd is not None:
                break
        else:
            raise SandboxError(f"no free sandbox uid in {UID_BASE}..{UID_BASE + UID_COUNT - 1}")
    try:
        kill_user(uid)  # leftovers of a grader that was itself killed
        clear_keyrings(uid)
        yield uid
    finally:
        kill_user(uid)
        clear_keyrings(uid)
        os.close(fd)


def through_launcher(spec: dict, command: list[str]) -> list[str]:
    """The command line that runs `command` through the launcher (launch.py), set up as `spec` says."""
    spec = {"parent": os.getpid(), **spec}
    return [sys.executable, "-I", "-S", "-B", str(LAUNCHER), json.dumps(spec), *command]


def launched(spec: dict, command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """A short chore or probe run through the launcher with `spec`; its output captured."""
    return subprocess.run(through_launcher(spec, command), capture_output=True, text=True, timeout=timeout,
                          cwd="/", stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})


def clear_keyrings(uid: int) -> None:
    """Empty the kernel keyrings of a sandbox uid (they outlive its processes), as that uid (root only)."""
    if os.geteuid() != 0:
        return
    launched({"uid": uid, "gid": uid, "clear_keyrings": True}, [], timeout=60)


def sweep_leftovers() -> list[str]:
    """Remove what killed graders left: job control groups and private folders whose grader is gone."""
    removed = []
    for path in cgroup.leftover_groups():
        if not held_by_live_grader(path):
            cgroup.remove_group(Path(path))
            removed.append(path)
    for folder in {tempfile.gettempdir(), "/tmp"}:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.name.startswith(PRIVATE_PREFIX) and entry.is_dir(follow_symlinks=False) and \
                        not held_by_live_grader(entry.name):
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry.path)
    return removed


def held_by_live_grader(name: str) -> bool:
    """Does the grader whose pid is in `name` (autograder-PID-...) still run? True when it cannot be told."""
    found = re.search(r"autograder-(\d+)-", os.path.basename(name))
    if found is None:
        return True
    return os.path.exists(f"/proc/{found[1]}")


def processes_of(uid: int) -> list[int]:
    """Processes whose real or effective uid is `uid` (from /proc/PID/status, which a process cannot hide
    by making itself non-dumpable, as it can hide the owner of /proc/PID)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    line = next(l for l in f if l.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if uid in map(int, line.split()[1:3]):
                pids.append(int(entry))
    return pids


def kill_user(uid: int) -> None:
    """SIGKILL every process of a sandbox uid (root only), until none is left."""
    if os.geteuid() != 0:
        return
    for _ in range(100):
        pids = processes_of(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


# --- the machine's sandbox ------------------------------------------------------------------------

class Sandbox:
    """How this machine confines a job, found out once: `mode` is "bwrap" or "fallback"."""

    def __init__(self, prefer: str = "auto"):
        if prefer not in ("auto", "bwrap", "fallback"):
            raise ValueError(f"unknown sandbox {prefer!r}")
        self.root = os.geteuid() == 0
        self.bwrap = shutil.which("bwrap")
        self.options = _bwrap_options(self.bwrap) if self.bwrap else set()
        self.mode, self.reason = "fallback", "chosen" if prefer == "fallback" else "bubblewrap (bwrap) is not installed"
        if prefer != "fallback" and self.bwrap:
            problem = self._probe()
            if problem is None:
                self.mode, self.reason = "bwrap", ""
            else:
                self.reason = f"bubblewrap cannot run here: {problem}"
        if prefer == "bwrap" and self.mode != "bwrap":
            raise SandboxError(self.reason)
        if self.root:
            sweep_leftovers()
        probe = JobGroup(Limits.memory_bytes, Limits.processes)
        self.cgroups = list(probe.controllers)
        probe.remove()
        self.python, self.paths = os.path.realpath(sys.executable), python_paths()
        if self.mode == "fallback" and self.root:
            self.python, self.paths = self._fallback_python()
        self.fallback_filter, self.filter_problem = self._fallback_filter() if self.mode == "fallback" else (None, "")
        self.landlock, self.landlock_problem = self._fallback_landlock() if self.mode == "fallback" else (0, "")
        self.hides_torch = confine.can_hide()  # a job hides PyTorch's compiled parts (confine.hide)
        # Without root the fallback's jobs run as the grader's user: the grader adopts what they orphan,
        # to kill it (kill_leftovers).
        self.reaper = self.mode == "fallback" and not self.root and become_subreaper()

    def _fallback_filter(self) -> tuple[str | None, str]:
        """The seccomp filter the launcher installs in the fallback (hex), if it installs here; else why not."""
        bpf = seccomp.program()
        if bpf is None:
            return None, f"none is written for {os.uname().machine}"
        try:
            done = launched({"seccomp": bpf.hex()}, ["/bin/sh", "-c", "exit 0"], timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, str(e)
        if done.returncode != 0:
            return None, (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return bpf.hex(), ""

    def _fallback_landlock(self) -> tuple[int, str]:
        """The Landlock ABI the fallback confines jobs with (0: none), once the interpreter has been seen to
        import numpy and torch under its rules as a sandbox user; else 0 and why not."""
        abi = launch.landlock_abi()
        if abi < 1:
            return 0, "this kernel has none, or has it switched off"
        libraries = "numpy" + (", torch" if importlib.util.find_spec("torch") else "")
        code = f"import sys; sys.path[:] = {self.paths!r}; import {libraries}"  # the job's sys.path
        spec = {"landlock": fallback_rules(self.python, self.paths, [])}
        with contextlib.ExitStack() as stack:
            if self.root:
                uid = stack.enter_context(sandbox_user())
                spec.update(uid=uid, gid=uid)
            try:
                done = launched(spec, [self.python, "-I", "-S", "-c", code], timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                return 0, str(e)
        if done.returncode != 0:
            return 0, (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return abi, ""

    def _fallback_python(self) -> tuple[str, list[str]]:
        """An interpreter of this Python version that a sandbox user can run, and its sys.path with ours.

        Without bubblewrap nothing can be mounted for the sandbox user: it must be able to read the
        interpreter where it lies. The grader's own may live where it cannot (a pyenv under /root); the
        system's /usr/bin/python3.X of the same version, with the grader's site-packages, then serves.
        """
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        own_stdlib = {p for p in python_paths() if _inside(p, os.path.realpath(sys.base_prefix))}
        site = [p for p in python_paths() if p not in own_stdlib]
        tried = []
        for python in dict.fromkeys([os.path.realpath(sys.executable), f"/usr/bin/python{version}",
                                     f"/usr/local/bin/python{version}"]):
            if not os.path.exists(python):
                continue
            code = (f"import sys; sys.path[:] = [p for p in sys.path if p] + {site!r}; import numpy; "
                    f"print(repr(sys.path))")
            with sandbox_user() as uid:
                done = launched({"uid": uid, "gid": uid}, [python, "-I", "-S", "-c", code], timeout=120)
            if done.returncode == 0:
                return python, ast.literal_eval(done.stdout.strip().splitlines()[-1])
            tried.append(f"{python}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")
        raise SandboxError("without bubblewrap the sandbox user must run Python itself, and no interpreter of "
                           f"version {version} worked for it ({'; '.join(tried)}); install bubblewrap, or make "
                           "the grader's Python and its site-packages readable by others")

    def _namespace_args(self) -> list[str]:
        args = [self.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
                "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.root:  # a user namespace maps us; nested ones are refused where bwrap can (0.8 and later)
            args += ["--unshare-user"] + (["--disable-userns"] if "--disable-userns" in self.options else [])
        # As root, no user namespace (the sandbox uid is a real one): the seccomp filter refuses new ones.
        return args

    def _probe(self) -> str | None:
        cmd = [*self._namespace_args(), *_system_args(), "--proc", "/proc", "--dev", "/dev", "/bin/sh", "-c", "exit 0"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        return None if done.returncode == 0 else (done.stderr.strip() or f"exit status {done.returncode}")

    def describe(self, uid: int | None = None, group: JobGroup | None = None, gpu: bool = False,
                 memory_rlimit: bool = True) -> str:
        """One line for reports: what confined the job."""
        who = (f"uid {uid}" if uid is not None else f"a sandbox uid per job (from {UID_BASE})" if self.root
               else "a user namespace" if self.mode == "bwrap" else "the grader's own user")
        if self.mode == "bwrap":
            text = (f"bubblewrap: {who}, own pid/net/ipc namespaces, no network, read-only system and Python, "
                    f"no repository, a private tmpfs" + ("" if "--size" in self.options else " (of unbounded size: "
                                                         "this bubblewrap has no --size)"))
        else:
            landlock = self.landlock and not gpu  # a GPU job's devices and driver are not in its rules
            confined, can = ["resource limits"], []
            if self.fallback_filter:
                confined.append("a seccomp filter (no new namespaces, mounts, kernel keyrings or network sockets)")
            else:
                can.append("reach the network")
                confined.append(f"no seccomp filter ({self.filter_problem})")
            if landlock:
                scoped = (", and reaches no process or unix socket outside the job" if self.landlock >= 9 else
                          ", and reaches no process or abstract unix socket outside the job" if self.landlock >= 6
                          else "")
                confined.append(f"Landlock ABI {self.landlock} (it reads only the system's libraries and Python's, "
                                f"and writes only its own folder{scoped})")
            else:
                confined.append("no Landlock (" + ("a GPU job" if self.landlock else self.landlock_problem) + ")")
                can.insert(0, "read whatever that user may read on this machine (world-readable files, the "
                              "repository among them)")
            if self.fallback_filter and not (landlock and self.landlock >= 9):
                can.append("connect to the unix sockets in the file system that user may write"
                           if landlock and self.landlock >= 6 else "open the unix sockets that user may open")
            text = f"FALLBACK without bubblewrap ({self.reason}): {who}, {', '.join(confined)}"
            if can:
                text += "; the code can " + " and ".join(can)
        if not gpu and seccomp.no_exec() is not None:
            text += "; exec refused before the answer runs (it starts no other program)"
        if self.hides_torch:
            text += "; PyTorch's compiled parts unreadable before the answer runs (nothing it starts can load PyTorch)"
        elif gpu:
            text += ("; no Landlock ABI 2 (Linux 5.19): a Python the answer starts (exec stays for Triton) can import "
                     "PyTorch unlocked")
        limits = ["CPU time", "file size", "open files"]
        if memory_rlimit:
            limits.append("memory per process")
        if self.root:
            limits.append("processes")
        controllers = group.controllers if group is not None else self.cgroups
        if controllers:
            limits.append("a control group per job (" + ", ".join(controllers) + ")")
        text += "; limits: " + ", ".join(limits)
        return text + ("; GPU devices bound" if gpu and self.mode == "bwrap" else "")

    # --- one job ---

    def run(self, job: protocol.Job, inputs: dict[str, bytes], limits: Limits = Limits(), gpu: bool = False,
            env_extra: dict[str, str] | None = None) -> Outcome:
        """Run the program of `autograder.inside` on a job; `inputs` holds each call's frames (protocol.inputs)."""
        no_exec = None if gpu else seccomp.no_exec()  # a GPU job's Triton runs ptxas and a C compiler
        if no_exec is not None:
            job = dataclasses.replace(job, seccomp=no_exec.hex())
        job_files = {protocol.JOB: job.encode(), **inputs}
        with contextlib.ExitStack() as stack:
            uid = stack.enter_context(sandbox_user()) if self.root else None
            private = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-")))
            os.chmod(private, 0o711)  # the fallback's user must reach its home in here, nothing else
            group = JobGroup(limits.memory_bytes, limits.processes)
            stack.callback(group.remove)
            job_fd = _sealed_file(private / "job", b"".join(wire.frame(n, d) for n, d in job_files.items()))
            stack.callback(os.close, job_fd)
            results_r, results_w = os.pipe()
            stack.callback(_close_quietly, results_r)

            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                   "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "USER": "student", "LOGNAME": "student"}
            gpu_args, gpu_env = _gpu_args() if gpu and self.mode == "bwrap" else ([], {})
            env.update(gpu_env)
            env.update(env_extra or {})
            memory_rlimit = not gpu  # CUDA reserves huge address ranges: an address-space limit breaks it
            rlimits = {"CPU": limits.cpu_seconds, "FSIZE": limits.file_bytes, "NOFILE": limits.open_files,
                       "CORE": 0}
            if memory_rlimit:
                rlimits["AS"] = limits.memory_bytes
            if uid is not None:
                rlimits["NPROC"] = limits.processes
            python = self.python
            landlock = None

            if self.mode == "bwrap":
                home = "/tmp"
                mounts, paths = _mount_plan()
                inner = [python, "-I", "-S", "-B", INSIDE_DIR, str(job_fd), str(results_w), *paths]
                if uid is not None:
                    inner = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                             "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *inner]
                program = []
                for source in _inside_files():
                    program += ["--ro-bind", str(source), f"{INSIDE_DIR}/{source.name}"]
                # A NumPy exercise's job cannot import torch at all: its folders are empty there.
                hidden = [] if job.torch else [a for folder in _torch_folders(mounts)
                                               for a in ("--perms", "0555", "--tmpfs", folder)]
                filter_fd = None
                if (bpf := seccomp.program()) is not None:
                    filter_fd = _sealed_file(private / "seccomp", bpf)
                    stack.callback(os.close, filter_fd)
                cmd = [*self._namespace_args()[1:], *_system_args(),
                       *_dirs_for([there for _, there in mounts] + [INSIDE_DIR + "/x"]),
                       *[a for host, there in mounts for a in ("--ro-bind", host, there)], *program, *hidden,
                       "--proc", "/proc", "--dev", "/dev", *gpu_args,
                       *(["--size", str(limits.scratch_bytes)] if "--size" in self.options else []),
                       "--perms", "01777", "--tmpfs", "/tmp",
                       "--chdir", "/tmp", "--clearenv"]
                for k, v in {**env, **_scratch_env(home)}.items():
                    cmd += ["--setenv", k, v]
                # The options go in on a descriptor: the sandbox sees bubblewrap's command line as
                # `bwrap --args N COMMAND`, not the host's paths.
                if filter_fd is not None:
                    cmd += ["--seccomp", str(filter_fd)]
                args_fd = _sealed_file(private / "args", b"".join(a.encode() + b"\0" for a in cmd))
                stack.callback(os.close, args_fd)
                cmd = [self.bwrap, "--args", str(args_fd), *inner]
                extra_fds = (args_fd,) + ((filter_fd,) if filter_fd is not None else ())
                child_env, cwd, spec_uid = {}, "/", None
            else:
                home = private / "home"
                home.mkdir(mode=0o700)
                bin_dir = private / "inside"
                bin_dir.mkdir()
                for source in _inside_files():
                    shutil.copy(source, bin_dir / source.name)
                if uid is not None:
                    os.chown(home, uid, uid)
                cmd = [python, "-I", "-S", "-B", str(bin_dir), str(job_fd), str(results_w), *self.paths]
                extra_fds = ()
                child_env, cwd, spec_uid = {**env, **_scratch_env(str(home))}, str(home), uid
                if self.landlock and not gpu:
                    landlock = fallback_rules(python, [*self.paths, str(bin_dir)], [str(home)])
            launcher = through_launcher({"rlimits": rlimits, "cgroup_procs": group.procs_files, "uid": spec_uid,
                                         "gid": spec_uid, "seccomp": self.fallback_filter, "landlock": landlock},
                                        cmd)
            isolation = self.describe(uid, group, gpu, memory_rlimit)
            return _supervise(launcher, child_env, cwd, (job_fd, results_w, *extra_fds), results_r, results_w, job,
                              limits, isolation, uid if self.mode == "fallback" else None, self.mode == "bwrap")
        raise AssertionError("unreachable")


def _inside_files() -> list[Path]:
    return sorted(INSIDE.glob("*.py"))


def _torch_folders(mounts: list[tuple[str, str]]) -> list[str]:
    """Where torch, triton and their kin appear inside the sandbox (to hide them from a NumPy exercise)."""
    found = []
    for path in python_paths():
        for name in ("torch", "triton", "functorch", "torchgen"):
            if os.path.isdir(os.path.join(path, name)):
                there = path
                for host, inside in mounts:
                    if _inside(path, host):
                        there = inside + path[len(host):]
                        break
                found.append(f"{there}/{name}")
    return found


def _bwrap_options(bwrap: str) -> set[str]:
    """The options this bubblewrap knows (older ones lack --size, which bounds a tmpfs, and --disable-userns)."""
    try:
        text = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {word for word in text.split() if word.startswith("--")}


def _scratch_env(home: str) -> dict[str, str]:
    """Every cache a library may keep, in the job's own scratch: nothing survives into the next job."""
    return {"HOME": home, "TMPDIR": home, "XDG_CACHE_HOME": f"{home}/.cache", "XDG_CONFIG_HOME": f"{home}/.config",
            "TRITON_CACHE_DIR": f"{home}/.triton", "TRITON_HOME": home, "TORCHINDUCTOR_CACHE_DIR": f"{home}/.inductor",
            "CUDA_CACHE_PATH": f"{home}/.nv", "MPLCONFIGDIR": f"{home}/.mpl", "NUMBA_CACHE_DIR": f"{home}/.numba"}


def _sealed_file(path: Path, data: bytes) -> int:
    """`data` in a file only the grader can open by name; returns a read-only descriptor, inheritable."""
    with open(path, "wb") as f:
        f.write(data)
    fd = os.open(path, os.O_RDONLY)
    path.unlink()
    return fd


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _children(pid: int) -> list[int]:
    """The processes `pid` started, from any of its threads (each thread lists its own children)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found = []
    for tid in threads:
        with contextlib.suppress(OSError, ValueError):
            found += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return found


def _main_process(pid: int, bwrap: bool) -> int | None:
    """The host pid of the sandboxed Python: the launcher itself, or bubblewrap's grandchild."""
    if not bwrap:
        return pid
    for child in _children(pid):
        for grandchild in _children(child):
            return grandchild
    return None


def _runqueue_wait(pid: int | None) -> float:
    """Seconds the process has waited for a CPU (schedstat's second field); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int, limit: int = 2000) -> list[int]:
    """`pid` and its descendants, at most `limit` of them; just `pid` where there is no /proc."""
    found, todo = [], [pid]
    while todo and len(found) < limit:
        found.append(todo.pop())
        todo += _children(found[-1])
    return found


def _tree_cpu(pid: int) -> float:
    """CPU seconds used by a process and all its descendants (reaped ones included, through cutime)."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            total += sum(int(f) for f in fields[11:15]) / _TICK  # utime, stime, cutime, cstime
    return total


class _Tail:
    """The last `limit` bytes of a stream."""

    def __init__(self, limit: int):
        self.limit, self.data = limit, bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            del self.data[:-self.limit]

    def text(self) -> str:
        return bytes(self.data[-self.limit:]).decode("utf-8", "replace")


# Seconds the job's streams may stay open after its main process has ended; then what holds them (a process
# of the job that left its session, where no sandbox uid or pid namespace reaches it) is killed where it can
# be, and after as long again, abandoned.
LINGER = 2.0
ABANDONED = ("a process of the job kept its output open after the job ended; the grader stopped reading it and "
             "kept what had arrived")


# --- leftovers of a job run as the grader's own user (the fallback without root) ---------------------
#
# Such a job has no sandbox uid to kill and no pid namespace to die with: a process of it that leaves its
# session (setsid) escapes `killpg`. With the grader a child subreaper, each process of a job whose parent
# ends becomes the grader's child instead of init's, where the grader finds and kills it: a child of the
# grader's that is not a job it started and runs in another session than the grader's (the grader's own
# chores keep its session; every job starts in a session of its own, which its processes keep or leave).

_jobs_lock = threading.Lock()  # held from starting a job to noting its pid, and while leftovers are looked for
_jobs: set[int] = set()  # the pids of the jobs' main processes this grader started and has not yet waited for
_stopping = threading.Event()  # set by stop_all: no job starts from then on
_reaper = [False]  # is this grader a child subreaper (set in the fallback without root)?
PR_SET_CHILD_SUBREAPER = 36


class Stopped(RuntimeError):
    """The grader is stopping (stop_all): this job was not started."""


def stop_all() -> None:
    """Start no job from now on, and kill those running (the grader's SIGTERM, a second Ctrl-C): their results
    will not be written, and the grader ends once its threads see their jobs end, not after grading what is
    left of their notebooks (a SIGTERM once took 80 s to end so, starting sandboxes all along)."""
    _stopping.set()
    with _jobs_lock:
        running = list(_jobs)
    for pid in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def become_subreaper() -> bool:
    """Make this process adopt its descendants' orphans (Linux 3.4 and later); False where it cannot."""
    if not _reaper[0]:
        with contextlib.suppress(OSError, AttributeError):
            import ctypes
            _reaper[0] = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return _reaper[0]


def kill_leftovers() -> list[int]:
    """SIGKILL (and reap) the orphans of jobs the grader adopted as a subreaper; their pids."""
    if not _reaper[0]:
        return []
    own_session, killed = os.getsid(0), []
    with _jobs_lock:
        for pid in _children(os.getpid()):
            if pid in _jobs:
                continue
            try:
                session = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[3])
            except (OSError, ValueError, IndexError):
                continue
            if session == own_session:
                continue  # a chore of the grader's own (it never leaves the grader's session)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    for pid in killed:  # reap it: it is the grader's child now, and no one else waits for it
        for _ in range(100):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                break
            time.sleep(0.01)
    return killed


def _drain(selector: selectors.BaseSelector, seconds: float = 0.5, most: int = 64 << 20) -> None:
    """Read what the open streams already hold (for at most `seconds`, at most `most` bytes), then stop."""
    end = time.monotonic() + seconds
    for key in list(selector.get_map().values()):
        while time.monotonic() < end and most > 0:
            try:
                chunk = os.read(key.fd, 1 << 16)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            most -= len(chunk)
            key.data(chunk)


def _supervise(cmd, env, cwd, keep_fds, results_r, results_w, job: protocol.Job, limits: Limits, isolation: str,
               fallback_uid: int | None, bwrap: bool) -> Outcome:
    """Start the process, read its output and results as they come, stop it when a phase runs too long.

    Frames are accepted only in the order the job expects them (protocol.Expected): `begun` opens a
    phase and starts its watchdog, `status` closes it; any other frame stops the job, charged to the
    phase that was running (or the last one that ran, whose code may have left a thread behind).
    Once the main process has ended (or been stopped), its streams get LINGER seconds to end too; then
    what holds them is killed where it can be, and after LINGER more, they are abandoned (`Outcome.abandoned`):
    a process that escaped the job never keeps the grader waiting.
    """
    start = time.monotonic()
    # No preexec_fn: the grader has threads; the launcher sets the limits after the fork instead.
    with _jobs_lock:  # noted before any search for leftovers can mistake it for one
        if _stopping.is_set():
            os.close(results_w)  # as a started job's is, below
            raise Stopped("the grader is stopping: this job was not started")
        proc = subprocess.Popen(cmd, env=env or {"PATH": "/usr/bin:/bin"}, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=keep_fds,
                                start_new_session=True)
        _jobs.add(proc.pid)
    os.close(results_w)
    try:
        return _follow(proc, results_r, job, limits, isolation, fallback_uid, bwrap, start)
    finally:
        if proc.returncode is None:  # _follow failed
            _kill(proc, fallback_uid)
            proc.wait()
        with _jobs_lock:
            _jobs.discard(proc.pid)
        kill_leftovers()  # what its end orphaned


def _follow(proc, results_r, job, limits, isolation, fallback_uid, bwrap, start) -> Outcome:
    phases = job.budgets()
    expected = protocol.Expected(job)
    events: list[tuple[str, float]] = []  # (begun or status, when its header arrived)

    def check(name: str) -> None:
        event = expected.accept(name)
        if event is not None:
            events.append((event, time.monotonic()))

    reader = wire.FrameReader(max_bytes=limits.result_bytes, max_file_bytes=limits.result_bytes, check=check)
    out, err = _Tail(limits.output_bytes), _Tail(limits.output_bytes)
    selector = selectors.DefaultSelector()
    for stream, sink in ((proc.stdout, out.add), (proc.stderr, err.add)):
        os.set_blocking(stream.fileno(), False)
        selector.register(stream.fileno(), selectors.EVENT_READ, sink)
    os.set_blocking(results_r, False)
    selector.register(results_r, selectors.EVENT_READ, reader.feed)

    current, phase_start, wait_start, cpu_start, main_pid = None, start, 0.0, 0.0, None
    budget = limits.startup_seconds
    hard_stop = start + 4 * (limits.startup_seconds * 2 + sum(limits.wall_factor * s + limits.wall_grace
                                                             for s in phases.values()))
    stopped, abandoned, ended, killed = None, None, None, False
    open_streams = 3
    while open_streams:
        for key, _ in selector.select(timeout=0.1):
            try:
                chunk = os.read(key.fd, 1 << 16)
            except BlockingIOError:
                continue
            if chunk:
                key.data(chunk)
            else:
                selector.unregister(key.fd)
                open_streams -= 1
        # follow the phases: begun opens one, status closes it (protocol.Expected)
        if main_pid is None:
            main_pid = _main_process(proc.pid, bwrap)
        cpu_now = _tree_cpu(proc.pid)
        if events:  # the last change of phase counts (several may come in one read)
            current = expected.current
            budget = (limits.wall_factor * phases[current] + limits.wall_grace if current is not None
                      else limits.startup_seconds)
            phase_start, wait_start, cpu_start = events[-1][1], _runqueue_wait(main_pid), cpu_now
            events.clear()
        now = time.monotonic()
        # A phase is charged the time its process ran or slept (not the time it waited for a CPU while
        # others ran), or the CPU time of all its processes together (a fork bomb), whichever is more.
        charged = max(now - phase_start - (_runqueue_wait(main_pid) - wait_start), cpu_now - cpu_start)
        late = limits.deadline is not None and now > limits.deadline
        if stopped is None and ((ended is None and (charged > budget or now > hard_stop or late)) or reader.error):
            stopped = ("the results stream broke its rules: " + reader.error if reader.error else OUT_OF_TIME
                       if late else f"ran longer than {budget:.0f} s" + (f" in {current}" if current else ""))
            _kill(proc, fallback_uid)
            if reader.error:
                break
        # The main process has ended (or was stopped) and something still holds its streams open.
        if ended is None:
            if proc.poll() is not None:
                ended = now
                kill_leftovers()  # what the job orphaned, the grader adopted: its streams then end at once
        elif not killed and now - ended > LINGER:
            _kill(proc, fallback_uid)  # the job's session, its sandbox uid, the orphans the grader adopted
            killed = True
        elif now - ended > 2 * LINGER:
            _drain(selector)
            abandoned = ABANDONED
            break
    _kill(proc, fallback_uid)
    proc.wait()
    selector.close()
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    reader.close()
    culprit = expected.current
    if culprit is None and reader.error and expected.done:
        culprit = expected.done[-1]
    return Outcome(dict(reader.files), proc.returncode, stopped, culprit, time.monotonic() - start, out.text(),
                   err.text(), reader.error, isolation, abandoned)


def _kill(proc: subprocess.Popen, fallback_uid: int | None) -> None:
    """Kill the process, its session, and (in the fallback) everything its sandbox user runs."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    if fallback_uid is not None:
        kill_user(fallback_uid)
    kill_leftovers()


# --- a job to its end: retries around what stopped the process ---------------------------------------

@dataclass
class JobResult:
    verdicts: dict[str, dict[str, bytes] | str]  # call id -> its frames, or why there are none
    cell_errors: dict[str, str]  # cell label -> what went wrong
    notes: list[str]
    isolation: str


def run_job(box: Sandbox, job: protocol.Job, inputs: dict[str, bytes], limits: Limits = Limits(),
            gpu: bool = False, env_extra: dict[str, str] | None = None) -> JobResult:
    """Run the cells and calls, in as many fresh processes as the student's code makes necessary.

    When the process ends or hangs in the middle (os._exit, a crash, a blocked timer, a forged frame),
    the cell or call that was running is charged with it, the rest of that function's calls are not
    run, and a fresh process runs what is left: one function that kills its process costs only that
    function's points.
    """
    result = JobResult({}, {}, [], "")
    labels = {c.id: c.label for c in job.cells}
    # What comes back holds each call's arguments after it and what it returned: room for both, however large a
    # GPU's inputs are (06's come to 320 MiB), beside the fixed allowance. That is for every run together: frames
    # kept from one run count against the next (an answer that bloated its arguments, then ended its process,
    # once held the grader at 1.5 GB over the reruns of one notebook).
    budget = limits.result_bytes + 2 * sum(map(len, inputs.values()))
    while True:
        if limits.deadline is not None and time.monotonic() > limits.deadline:
            for c in job.calls:
                result.verdicts.setdefault(c.id, NOT_REACHED)
            return result
        pending = {c.id for c in job.calls}
        sent = {n: d for n, d in inputs.items() if n.split("/")[0] in pending}
        kept = sum(len(d) for frames in result.verdicts.values() if isinstance(frames, dict) for d in frames.values())
        room = budget - kept
        if kept and room < 2 * sum(map(len, sent.values())) + (1 << 20):  # less than an honest rerun needs
            for c in job.calls:
                result.verdicts[c.id] = (f"not run: the tests before it had sent back {budget >> 20} MiB of results, "
                                         "all that one notebook's tests may")
            return result
        outcome = box.run(job, sent, dataclasses.replace(limits, result_bytes=room), gpu, env_extra)
        result.isolation = outcome.isolation
        if outcome.abandoned and outcome.abandoned not in result.notes:
            result.notes.append(outcome.abandoned)
        got = outcome.files
        for cell in job.cells:
            status = _status(got, cell.id)
            if isinstance(status, dict) and status.get("error"):
                result.cell_errors[cell.label] = str(status["error"])
        for call in job.calls:
            if protocol.status(call.id) in got:
                result.verdicts[call.id] = {n: d for n, d in got.items() if n.startswith(call.id + "/")}
        why = _why_it_ended(outcome)
        culprit = outcome.culprit
        if outcome.stream_error and culprit in result.verdicts:  # its answer came with a forged frame
            del result.verdicts[culprit]
        calls = [c for c in job.calls if c.id not in result.verdicts]
        if not calls:
            return result
        if culprit in labels:  # a cell: run the rest without it
            result.cell_errors[labels[culprit]] = f"this cell {why}, so it was skipped"
            job = dataclasses.replace(job, cells=tuple(c for c in job.cells if c.id != culprit), calls=tuple(calls))
            continue
        if culprit is not None:  # a call: charge it, skip the rest of its function, run the others
            function = next(c.function for c in calls if c.id == culprit)
            result.verdicts[culprit] = f"this test {why}"
            for c in calls:
                if c.function == function and c.id != culprit:
                    result.verdicts[c.id] = (f"not run: an earlier test of {function} {why}, "
                                             "so its other tests were skipped")
            calls = [c for c in calls if c.id not in result.verdicts]
            if calls:
                job = dataclasses.replace(job, calls=tuple(calls))
                continue
            return result
        # It ended before any of the student's code ran, or between tests: nothing to retry safely.
        note = f"the grader's process {why} before your code's tests could finish"
        if not any(protocol.begun(c.id) in got for c in job.cells + job.calls):
            tail = "\n".join(outcome.stderr.strip().splitlines()[-8:])
            note += f"; it had not started your code{': ' + tail if tail else ''}"
        result.notes.append(note)
        for c in calls:
            result.verdicts[c.id] = "did not finish (the code was stopped: too slow, or it ended the process)"
        return result


def _why_it_ended(outcome: Outcome) -> str:
    if outcome.stream_error:
        return f"sent malformed results ({outcome.stream_error}) and was stopped"
    if outcome.stopped == OUT_OF_TIME:
        return OUT_OF_TIME
    if outcome.stopped:
        return "ran longer than its time limit and was stopped (an endless loop, a sleep, a lock never released?)"
    rc = outcome.returncode
    signum = -rc if rc is not None and rc < 0 else rc - 128 if rc is not None and rc > 128 else None
    if signum == signal.SIGKILL:
        return "was killed (out of memory, or too many processes?)"
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return f"crashed ({name})"
    return f"ended the grader's process (exit status {rc}: sys.exit, os._exit or a killed parent?)"


def _status(files: dict[str, bytes], ident: str):
    raw = files.get(protocol.status(ident))
    if raw is None:
        return None
    try:
        return wire.loads(raw)
    except ValueError:
        return {"error": "unreadable status"}
