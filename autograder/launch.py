"""The grader's own launcher: set a job's limits, then exec the sandbox.

    python -I -S launch.py SPEC_JSON COMMAND...

Runs as the grader's user, before any of the student's code exists in the
process, and uses only the standard library. In this order it joins the
job's control groups, marks the process as the first the kernel kills when
memory runs out, sets resource limits, drops to the sandbox user (when the
spec names one: the fallback without bubblewrap; under bubblewrap `setpriv`
does it inside), asks to be killed when the grader dies, installs the
spec's seccomp filter (the fallback's; bubblewrap installs its own), and
execs COMMAND.
Setting these here rather than in a `preexec_fn` keeps them out of the
grader's threads, where forking and then running Python is unsafe.
"""

import ctypes
import json
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2
KEYCTL_CLEAR, KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING = 7, -4, -5
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}


def clear_keyrings() -> None:
    """Empty this user's own keyrings, which the kernel keeps from one of its processes to the next."""
    number = SYS_KEYCTL.get(os.uname().machine)
    if number is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for keyring in (KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING):
        libc.syscall(number, KEYCTL_CLEAR, keyring)


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


def main() -> None:
    spec = json.loads(sys.argv[1])
    command = sys.argv[2:]
    for path in spec.get("cgroup_procs", []):
        with open(path, "w") as f:
            f.write(str(os.getpid()))
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    for name, value in spec.get("rlimits", {}).items():
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
    if spec.get("uid") is not None:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
        if os.getuid() != spec["uid"] or os.geteuid() != spec["uid"]:
            raise SystemExit("could not drop to the sandbox user")
    if spec.get("clear_keyrings"):  # `sandbox.clear_keyrings`: this run only empties the uid's keyrings
        clear_keyrings()
        return
    # After any change of user: the kernel clears the death signal when credentials change.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != spec["parent"]:  # the grader died before the signal was armed
        os._exit(1)
    if spec.get("seccomp"):
        install_filter(bytes.fromhex(spec["seccomp"]))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
