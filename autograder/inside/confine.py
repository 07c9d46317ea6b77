"""Confining this process and all it starts: a seccomp filter, and Landlock's rules on files.

Standard library only: the launcher (launch.py) uses it before anything of
the student's exists, the job (__main__.py) once torch is imported and before
the student's first cell.
"""

import ctypes
import os
import stat
import sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def install_filter(program: bytes) -> None:
    """Install a classic-BPF seccomp filter (8 bytes an instruction) on this process and all it starts."""
    libc = ctypes.CDLL(None, use_errno=True)
    fprog = SockFprog(len(program) // 8, program)
    # no_new_privs first: an unprivileged process may install a filter only then, and no setuid program
    # the job execs can shed it
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0):
        raise SystemExit(f"could not install the seccomp filter: {os.strerror(ctypes.get_errno())}")


# Landlock (linux/landlock.h): one syscall number on every architecture
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR, FS_REFER = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 13
FS_TRUNCATE, FS_IOCTL_DEV, FS_RESOLVE_UNIX = 1 << 14, 1 << 15, 1 << 16
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV | FS_RESOLVE_UNIX
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


def landlock_abi() -> int:
    """The Landlock ABI this kernel offers (1 and up), or 0 where it has none or has it switched off."""
    return max(ctypes.CDLL(None, use_errno=True).syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0,
                                                         LANDLOCK_CREATE_RULESET_VERSION), 0)


def fs_rights(abi: int) -> int:
    """Every file-system right an ABI knows: 13 in ABI 1, then REFER (2), TRUNCATE (3), IOCTL_DEV (5) and
    RESOLVE_UNIX (9: connecting to a unix socket in the file system)."""
    return (1 << (13 + (abi >= 2) + (abi >= 3) + (abi >= 5) + (abi >= 9))) - 1


class RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def restrict(handled: int, rules: list, scoped: int = 0) -> None:
    """Confine this process and all it starts with Landlock: the rights in `handled` only beneath the paths of
    `rules`, [(path, rights), ...] (paths that do not exist are skipped), and no signal or unix socket beyond
    `scoped`. Rights not in `handled` stay as they were. Raises SystemExit where Landlock fails."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = RulesetAttr(handled, 0, scoped)
    size = ctypes.sizeof(RulesetAttr) if scoped else 8  # the fields an older kernel knows
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        raise SystemExit(f"could not make a Landlock ruleset: {os.strerror(ctypes.get_errno())}")
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        allowed = rights if stat.S_ISDIR(os.fstat(fd).st_mode) else rights & FILE_RIGHTS  # a file takes fewer
        rule = PathBeneathAttr(allowed & handled, fd)
        done = libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0)
        os.close(fd)
        if done != 0:
            raise SystemExit(f"could not add the Landlock rule for {path}: {os.strerror(ctypes.get_errno())}")
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0):
        raise SystemExit(f"could not apply the Landlock rules: {os.strerror(ctypes.get_errno())}")
    os.close(ruleset)


# Besides what a walk from / finds: what a process needs, for where a folder on the way cannot be listed
# (the fallback's own Landlock rules, a folder of mode 0711)
NEEDED = ("/usr", "/lib", "/lib64", "/bin", "/etc", "/proc", "/dev", "/sys", "/tmp", "/run", "/var")


def can_hide() -> bool:
    """Whether `hide` works on this kernel: from Landlock ABI 2. Under ABI 1 a confined process can move no
    file to another folder (EXDEV), and Triton's cache moves every file it writes into place."""
    return landlock_abi() >= 2


def hide(paths: list) -> bool:
    """Make `paths` (files, and everything beneath folders) unreadable and unrunnable for this process and
    all it starts, and leave every other file as it was; False where it cannot (`can_hide`).

    Landlock only allows, so the rule goes to everything else: walking down from / to each path, each
    entry beside the way gets its own rule (symbolic links none: a rule would follow one, and what it
    points to has its own). Where a folder on the way cannot be listed, what this process needs is kept
    by name: NEEDED, sys.path, its prefix, its working folder, its home and temporary folder, and the
    library path. A file opened through another path (a symbolic link, /proc) is checked where it lies,
    and no hard link to it can be made elsewhere.
    """
    if not can_hide():
        return False
    hidden = {os.path.realpath(p) for p in paths if os.path.exists(p)}
    if not hidden:
        return True
    allowed = []

    def allow(path: str) -> None:  # `path`, but what is hidden beneath it
        if path in hidden or any(path.startswith(h + "/") for h in hidden):
            return
        if not any(h.startswith(path.rstrip("/") + "/") for h in hidden):
            allowed.append(path)
            return
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:  # not listed: what is needed beneath it is kept by name
            entries = []
        for entry in entries:
            if not entry.is_symlink():
                allow(entry.path)

    environment = [os.environ.get(k, "") for k in ("HOME", "TMPDIR")]
    environment += os.environ.get("LD_LIBRARY_PATH", "").split(":")
    for path in ("/", *NEEDED, *sys.path, sys.prefix, sys.base_prefix, os.getcwd(), *environment):
        if path and os.path.exists(path):
            allow(os.path.realpath(path))
    # REFER: no hard link or move takes a hidden file elsewhere
    rights = FS_READ_FILE | FS_EXECUTE | FS_REFER
    restrict(rights, [(path, rights) for path in dict.fromkeys(allowed)])
    return True
