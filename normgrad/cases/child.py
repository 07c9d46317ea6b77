"""One notebook test in a child process, so that a crash or a hang fails that test and no more.

Triton's interpreter runs a kernel's loads and stores on raw addresses: one without a mask can
read or write past a tensor and kill the process. In a notebook that process is the student's
kernel, and everything in it would be lost without a word. `in_child` forks, runs the test in the
child, and sends its problems back through a pipe; the parent says how the child ended when it
did not end by itself. (On a GPU the tests run in the notebook's own process: CUDA cannot be
used across a fork.)

What the child writes to stderr waits in a file until it ends: a crash's last words (glibc's
"malloc(): unaligned tcache chunk detected", NumPy's overflow warnings on the garbage the kernel read)
are dropped, since the test's one line says what happened; a child that ends by itself has them
passed on, as if it had written them there.
"""

from __future__ import annotations

import faulthandler
import json
import os
import select
import signal
import sys
import tempfile
import time
from typing import Callable

HELD_AT_MOST = 1 << 20  # bytes of a child's stderr passed on
CRASH_HINT = ("under Triton's interpreter this is usually an out-of-bounds load or store: "
              "check the masks of your loads and stores")


def _one_thread() -> None:
    """A forked child has none of its parent's threads: PyTorch's pool, once its parent has started it
    (any sizeable operation does), would wait for them for ever. The child computes with one thread."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def in_child(test: Callable[[], list[str]], seconds: float) -> list[str]:
    """Run `test` (returning a list of problems) in a forked child, for at most `seconds` of wall time."""
    read_end, write_end = os.pipe()
    held = tempfile.TemporaryFile()  # the child's stderr, until it ends
    pid = os.fork()
    if pid == 0:  # the child: run, report, and leave without running the parent's exit handlers
        os.close(read_end)
        os.dup2(held.fileno(), 2)
        sys.stderr = open(2, "w", closefd=False)  # Python's warnings too, where sys.stderr is not fd 2 (Jupyter)
        faulthandler.disable()  # its report of a crash goes to the stderr it was given, not to fd 2
        code = 0
        try:
            _one_thread()
            problems = test()
        except BaseException as e:  # noqa: BLE001  (anything the test raised is its result)
            problems = [f"the test itself failed: {type(e).__name__}: {e}"]
        try:
            with os.fdopen(write_end, "w") as out:
                json.dump([str(p) for p in problems], out)
        except BaseException:  # noqa: BLE001
            code = 1
        try:
            sys.stderr.flush()
        finally:  # whatever happens, the child never returns into the notebook's code
            os._exit(code)
    os.close(write_end)
    with held:
        problems, ended_by_itself = _result(pid, read_end, seconds)
        if ended_by_itself:
            held.seek(0)
            sys.stderr.write(held.read(HELD_AT_MOST).decode(errors="replace"))
    return problems


def _result(pid: int, read_end: int, seconds: float) -> tuple[list[str], bool]:
    """(the child's problems from the pipe, or how it ended; whether it ended by itself)."""
    chunks, deadline = [], time.monotonic() + seconds
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return [f"took longer than {seconds:.0f} s and was stopped "
                        "(an endless loop, a lock never released?)"], False
            ready, _, _ = select.select([pipe], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(pipe.fileno(), 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return [f"crashed ({name}): {CRASH_HINT}"], False
    try:
        return list(json.loads(b"".join(chunks))), True
    except ValueError:
        return [f"ended without a result (exit status {os.WEXITSTATUS(status)})"], True
