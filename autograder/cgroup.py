"""A control group per sandboxed job, where the machine lets the grader make one.

Resource limits (rlimits) bound each process; a control group bounds the job
as a whole: its memory (tmpfs pages included) and its number of processes,
and gives it a CPU share of its own, so that a job that starts many busy
processes cannot starve the jobs running beside it. The grader makes one
when it runs as root and the memory and pids controllers are mounted
writable (cgroup v1, or v2 with the controllers enabled for children of the
grader's own group); otherwise the job runs with rlimits alone, and the
report says so.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
_counter = itertools.count()


def _mounts() -> dict[str, tuple[Path, bool]]:
    """controller -> (mount point, is v2), from /proc/self/mountinfo."""
    found: dict[str, tuple[Path, bool]] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        mount, fstype, options = Path(fields[4]), rest[0], rest[2].split(",")
        if fstype == "cgroup":
            for c in CONTROLLERS:
                if c in options:
                    found.setdefault(c, (mount, False))
        elif fstype == "cgroup2":
            found.setdefault("", (mount, True))
    return found


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path ('' key for v2)."""
    paths = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, names, path = line.split(":", 2)
            for name in names.split(",") if names else [""]:
                paths[name] = path
    except (OSError, ValueError):
        pass
    return paths


class JobGroup:
    """The control group(s) of one job: created with limits, joined by the job, emptied and removed after."""

    def __init__(self, memory_bytes: int, processes: int):
        self.dirs: list[Path] = []
        self.controllers: list[str] = []
        if os.geteuid() != 0:
            return
        name = f"autograder-{os.getpid()}-{next(_counter)}"
        mounts, own = _mounts(), _own_paths()
        try:
            if all(c in mounts for c in ("memory", "pids")):  # cgroup v1: one hierarchy per controller
                for c in CONTROLLERS:
                    if c not in mounts:
                        continue
                    d = mounts[c][0] / own.get(c, "/").lstrip("/") / name
                    d.mkdir()
                    self.dirs.append(d)
                    self.controllers.append(c)
                self._write("memory", "memory.limit_in_bytes", memory_bytes)
                self._write("pids", "pids.max", processes)
            elif "" in mounts:  # cgroup v2: only if the grader's group already delegates the controllers
                parent = mounts[""][0] / own.get("", "/").lstrip("/")
                enabled = (parent / "cgroup.subtree_control").read_text().split()
                if not {"memory", "pids"} <= set(enabled):
                    return
                d = parent / name
                d.mkdir()
                self.dirs.append(d)
                self.controllers = [c for c in CONTROLLERS if c in enabled]
                (d / "memory.max").write_text(str(memory_bytes))
                (d / "memory.swap.max").exists() and (d / "memory.swap.max").write_text("0")
                (d / "pids.max").write_text(str(processes))
        except OSError:
            self.remove()
            self.dirs, self.controllers = [], []

    def _write(self, controller: str, file: str, value: int) -> None:
        d = self.dirs[self.controllers.index(controller)]
        (d / file).write_text(str(value))

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its pid into to join the group (the launcher does, before exec)."""
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found = set()
        for d in self.dirs:
            try:
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def kill_all(self) -> None:
        """SIGKILL every process in the group, until none is left (a few rounds at most)."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for d in self.dirs:
            _rmdir(d)


def _rmdir(d: Path) -> None:
    for _ in range(50):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # processes still exiting
            time.sleep(0.02)


def remove_group(path: Path) -> None:
    """Kill what is left in a job group of a grader that is gone, and remove the group."""
    group = JobGroup.__new__(JobGroup)
    group.dirs, group.controllers = [Path(path)], []
    group.remove()


def leftover_groups() -> list[str]:
    """Job groups of this machine's graders still present under this process's own groups (should be none)."""
    found = []
    mounts, own = _mounts(), _own_paths()
    for controller, (mount, v2) in mounts.items():
        folder = mount / own.get(controller, "/").lstrip("/")
        try:
            found += [str(p) for p in folder.glob("autograder-*")]
        except OSError:
            pass
    return sorted(set(found))
