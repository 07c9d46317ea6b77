"""A seccomp filter for the sandbox: no new namespaces, no mounts, no kernel keyrings, no sockets
but unix ones.

As root, bubblewrap cannot give the job `--disable-userns` (that needs a user
namespace of its own, and the sandbox's user must stay a real uid of the
host), so the sandbox user could otherwise create a user namespace and, in
it, mount a tmpfs of any size or make a network namespace. The kernel
keyrings outlive a job (a key added to the sandbox uid's keyring would be
read by the next job), and no answer needs them. Without bubblewrap the job
shares the machine's network: socket() is refused for every family but
AF_UNIX (socketpair, which reaches no one, stays allowed), and so is
io_uring, which can open sockets of its own. bubblewrap installs this
filter (`--seccomp FD`) just before it starts the job, and in the fallback
without bubblewrap the launcher does (launch.py); the program is classic BPF,
written out here for x86-64 and AArch64.

A CPU job also puts a second filter on itself once torch is imported, before
the student's first cell (`no_exec`): it refuses execve, so the answer cannot
start another Python, whose PyTorch the seal never locked. A GPU job keeps
exec: Triton runs ptxas and a C compiler when it builds a kernel. There,
what holds is that the compiled parts PyTorch has loaded cannot be read by
then, so nothing started can load it (confine.hide; CPU jobs too).
"""

from __future__ import annotations

import platform
import struct

EPERM, ENOSYS = 1, 38
_RET_ALLOW, _RET_KILL, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_NEW_NAMESPACES = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

AF_UNIX = 1

# (audit arch, syscall numbers refused with EPERM, clone, clone3, socket, (execve, execveat))
_ARCHES = {
    "x86_64": (0xC000003E, {"unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
                            "chroot": 161, "add_key": 248, "request_key": 249, "keyctl": 250, "open_tree": 428,
                            "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
                            "mount_setattr": 442, "io_uring_setup": 425}, 56, 435, 41, (59, 322)),
    "aarch64": (0xC00000B7, {"unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
                             "chroot": 51, "add_key": 217, "request_key": 218, "keyctl": 219, "open_tree": 428,
                             "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
                             "mount_setattr": 442, "io_uring_setup": 425}, 220, 435, 198, (221, 281)),
}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine's architecture, as bubblewrap reads it; None where it is not known."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    audit, refused, clone, clone3, socket, _ = arch
    ops = _prologue(audit)
    for number in sorted(refused.values()):
        ops += [_op(_JEQ, number, 0, 1), _op(_RET, _RET_ERRNO | EPERM)]
    # clone3 hides its flags in memory a filter cannot read: "not here", and the C library falls back to clone
    ops += [_op(_JEQ, clone3, 0, 1), _op(_RET, _RET_ERRNO | ENOSYS)]
    ops += [_op(_JEQ, socket, 0, 4), _op(_LD_ABS, 16), _op(_JEQ, AF_UNIX, 1, 0),  # its first argument: the family
            _op(_RET, _RET_ERRNO | EPERM), _op(_RET, _RET_ALLOW)]
    ops += [_op(_JEQ, clone, 0, 3), _op(_LD_ABS, 16), _op(_JSET, _NEW_NAMESPACES, 0, 1),
            _op(_RET, _RET_ERRNO | EPERM), _op(_RET, _RET_ALLOW)]
    return b"".join(ops)


def no_exec(machine: str | None = None) -> bytes | None:
    """The filter a CPU job puts on itself: execve and execveat refused; None where the architecture is not known."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        return None
    ops = _prologue(arch[0])
    for number in arch[-1]:
        ops += [_op(_JEQ, number, 0, 1), _op(_RET, _RET_ERRNO | EPERM)]
    return b"".join(ops + [_op(_RET, _RET_ALLOW)])


def _prologue(audit: int) -> list[bytes]:
    """Kill a call made through another ABI (its numbers mean other calls), refuse x32's; leave the number loaded."""
    ops = [_op(_LD_ABS, 4), _op(_JEQ, audit, 1, 0), _op(_RET, _RET_KILL), _op(_LD_ABS, 0)]
    if audit == 0xC000003E:  # the x32 ABI's numbers
        ops += [_op(_JGE, 0x40000000, 0, 1), _op(_RET, _RET_ERRNO | EPERM)]
    return ops
