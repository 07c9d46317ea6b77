"""One notebook test in a child process, so that a crash or a hang fails that test and no more.

Triton's interpreter runs a kernel's loads and stores on raw addresses: one without a mask can
read or write past a tensor and kill the process. In a notebook that process is the student's
kernel, and everything in it would be lost without a word. `in_child` forks, runs the test in the
child, and sends its problems back through a pipe; the parent says how the child ended when it
did not end by itself. (On a GPU the tests run in the notebook's own process: CUDA cannot be
used across a fork.)
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from typing import Callable

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
    pid = os.fork()
    if pid == 0:  # the child: run, report, and leave without running the parent's exit handlers
        os.close(read_end)
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
        os._exit(code)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + seconds
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return [f"took longer than {seconds:.0f} s and was stopped (an endless loop, a lock never released?)"]
            ready, _, _ = select.select([pipe], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(pipe.fileno(), 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return [f"crashed ({name}): {CRASH_HINT}"]
    try:
        return list(json.loads(b"".join(chunks)))
    except ValueError:
        return [f"ended without a result (exit status {os.WEXITSTATUS(status)})"]
