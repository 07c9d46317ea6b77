"""The grader's own launcher: set a job's limits, then exec the sandbox.

    python -I -S launch.py SPEC_JSON COMMAND...

Runs as the grader's user, before any of the student's code exists in the
process, and uses only the standard library. In this order it joins the
job's control groups, marks the process as the first the kernel kills when
memory runs out, sets resource limits, drops to the sandbox user (when the
spec names one: the fallback without bubblewrap; under bubblewrap `setpriv`
does it inside), asks to be killed when the grader dies, confines the
process with the spec's Landlock rules (the fallback's: which folders it
may read or write), installs the spec's seccomp filter (the fallback's;
bubblewrap installs its own), and execs COMMAND.
Setting these here rather than in a `preexec_fn` keeps them out of the
grader's threads, where forking and then running Python is unsafe.
"""

import ctypes
import json
import os
import resource
import signal
import sys

if __package__:  # imported by the grader, which reads the Landlock ABI
    from .inside.confine import (FS_EXECUTE, FS_READ_DIR, FS_READ_FILE, SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL,
                                 fs_rights, install_filter, landlock_abi, restrict)
else:  # run by path with -I: its own folder is not on sys.path
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "inside"))
    from confine import (FS_EXECUTE, FS_READ_DIR, FS_READ_FILE, SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL, fs_rights,
                         install_filter, landlock_abi, restrict)

PR_SET_PDEATHSIG = 1
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


def restrict_paths(rules: dict) -> None:
    """Confine this process and all it starts to `rules`: {"read": [...], "write": [...]} (paths that do not
    exist are skipped). Beneath a "read" path it may read and execute, beneath a "write" path do anything;
    elsewhere nothing, not even list a folder. Where the ABI has scopes (6 and up), it can neither signal
    a process nor reach an abstract unix socket outside its own domain; from ABI 9, nor connect to a unix
    socket in the file system but beneath a "write" path."""
    abi = landlock_abi()
    if abi < 1:
        raise SystemExit("this kernel has no Landlock")
    handled = fs_rights(abi)
    read = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
    restrict(handled, [(path, read) for path in rules.get("read", [])]
             + [(path, handled) for path in rules.get("write", [])],
             SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)  # scopes: ABI 6 and up


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
    if spec.get("landlock"):
        restrict_paths(spec["landlock"])
    if spec.get("seccomp"):
        install_filter(bytes.fromhex(spec["seccomp"]))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
