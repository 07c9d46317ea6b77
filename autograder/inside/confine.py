"""Putting a seccomp filter on this process: the launcher's (launch.py) and the job's own (__main__.py).

Standard library only: the launcher runs it before anything of the student's
exists, the job once torch is imported and before the student's first cell.
"""

import ctypes
import os

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
