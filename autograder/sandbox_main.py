"""The program that runs inside the sandbox, beside the student's code.

    python -I -S sandbox_main.py JOB_FD RESULTS_FD [SYS_PATH ...]

JOB_FD (read-only) holds the job as frames (see wire.py): `job.json`, which
lists the student's solution cells (their source, already picked out by the
trusted side) and the calls to make, and the inputs of each call under
`<call id>/`. Results go out on RESULTS_FD as frames, as soon as each is
known: `<id>/begun` before a cell or call starts, then `<id>/status.json`
(and a call's `returned/` and `args_after/`). So the calls that finished count
even if a later one hangs or ends the process, and the grader knows which
one did.

Nothing this process writes is believed: the trusted side reads the frames as
plain data and judges them against an oracle this process never sees.
"""

import json
import linecache
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# Only the folders the grader names (the standard library, numpy, torch, triton), and the
# copies of wire.py and calling.py beside this file: no site hooks, no .pth files run.
sys.path[:] = [HERE] + sys.argv[3:]

import calling  # noqa: E402
import wire  # noqa: E402

MAIN_PID = os.getpid()


def _short_traceback(exc: BaseException) -> str:
    """The traceback, keeping only frames of the student's cells."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell")]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines)[-4000:]


class CallTimeout(Exception):
    """A call ran past its time budget (its case's `seconds`, in CPU time)."""


def _ran_out_of_time(exc: BaseException) -> bool:
    """Was `exc` a CallTimeout, or caused by one? (Triton's interpreter wraps what a kernel raises.)"""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CallTimeout):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _alarm(signum, frame):
    raise CallTimeout("took longer than its time limit and was stopped (an endless loop, or a lock never released?)")


def _after_student_code(reap: bool) -> None:
    """Back from the student's code: a forked child ends here, and any process it left is killed."""
    if os.getpid() != MAIN_PID:
        os._exit(0)
    if not reap:
        return
    try:  # every process this user may signal, but this one: strays the student's code started
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


def main(job_fd: int, out_fd: int) -> None:
    job_files = wire.read_frames(job_fd)
    os.close(job_fd)
    job = json.loads(job_files["job.json"])

    def send(name, data):
        wire.write_frames(out_fd, [(name, data if isinstance(data, bytes) else json.dumps(data).encode())])

    if job.get("torch"):
        import torch  # noqa: F401  (imported before the student's code, so it can be locked)

        calling.lock_autograd()

    # CPU time, not wall time: a neighbour that hogs the machine does not make a call time out.
    signal.signal(signal.SIGPROF, _alarm)
    namespace = {"__name__": "__submission__"}
    for cell in job["cells"]:
        send(f"{cell['id']}/begun", b"")
        status = {"error": None}
        signal.setitimer(signal.ITIMER_PROF, float(job.get("cell_seconds", 60.0)))
        try:
            filename = f"<cell {cell['label']}>"
            # Triton's @jit reads a kernel's source back through linecache, as it does in a notebook.
            linecache.cache[filename] = (len(cell["source"]), None, cell["source"].splitlines(True), filename)
            exec(compile(cell["source"], filename, "exec"), namespace)
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: keep going
            status["error"] = _short_traceback(e)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            _after_student_code(job.get("reap", False))
        send(f"{cell['id']}/status.json", status)

    # Functions that ran out of time or memory once: an endless loop will not end the next time, and a
    # memory bomb would only churn the machine's memory again.
    exhausted = {}
    for call in job["calls"]:
        cid = call["id"]
        send(f"{cid}/begun", b"")
        status = {"error": None, "seconds": None}
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_PROF, float(call.get("seconds", 10.0)))
        files = {}
        try:
            if call["function"] in exhausted:
                raise RuntimeError(f"not run: an earlier test of {call['function']} {exhausted[call['function']]}")
            target = namespace.get(call["function"])
            if target is None:
                raise NameError(f"your code does not define {call['function']}")
            args, kwargs = wire.unpack(wire.subfolder(job_files, cid))
            returned = calling.invoke(call["protocol"], target, tuple(args), kwargs)
            if call.get("device", "cpu") != "cpu":
                sys.modules["torch"].cuda.synchronize()
            files.update({f"returned/{k}": v for k, v in wire.pack(returned).items()})
            files.update({f"args_after/{k}": v for k, v in wire.pack(list(args)).items()})
        except BaseException as e:
            status["error"] = _short_traceback(e)
            files = {}
            if _ran_out_of_time(e):
                exhausted[call["function"]] = "ran out of time"
            elif isinstance(e, MemoryError):
                exhausted[call["function"]] = "ran out of memory"
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            _after_student_code(job.get("reap", False))
        status["seconds"] = time.perf_counter() - start
        wire.write_frames(out_fd, [(f"{cid}/{name}", data) for name, data in files.items()])
        send(f"{cid}/status.json", status)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
